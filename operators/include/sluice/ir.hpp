// The untyped IR under the typed API: locations, and nodes whose bodies work on type-erased
// batches. It uses neither UCX nor TBB, so it can be built and inspected with no threads and no
// network; the runtime lowers it (operators/src/runtime.cpp).
//
// Every process builds the same flow in the same order, so node and edge ids agree across the
// job without any exchange (SPMD).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "sluice/codec.hpp"
#include "sluice/transport/result.hpp"

namespace sluice::ir {

// A batch of elements of one type; shared read-only between the nodes that consume it.
struct BatchBase {
  virtual ~BatchBase() = default;
  virtual size_t size() const = 0;
};
template <typename T>
struct Batch final : BatchBase {
  std::vector<T> items;
  size_t size() const override { return items.size(); }
};
using AnyBatch = std::shared_ptr<const BatchBase>;

template <typename T>
const std::vector<T>& items_of(const AnyBatch& b) {
  return static_cast<const Batch<T>&>(*b).items;
}

// A source's per-member cursor: yields up to `max` elements per call until exhausted.
class SourceCursor {
 public:
  virtual ~SourceCursor() = default;
  virtual AnyBatch next(size_t max) = 0;
  virtual bool exhausted() const = 0;
};

// How an edge's elements become bytes and back (built from Codec<T>).
struct EdgeCodec {
  std::function<size_t(const BatchBase&)> encoded_size;
  // `sink`, when set, may take large payloads out of the copy (see ZeroCopySink).
  std::function<uint8_t*(const BatchBase&, uint8_t*, ZeroCopySink*)> encode;
  // `owner`, when set, keeps the bytes alive so decoded values may point into them.
  std::function<Result<AnyBatch>(std::span<const uint8_t>, uint32_t count,
                                 const std::shared_ptr<const void>& owner)>
      decode;
  std::string type_name;
};

enum class LocationKind { kProcess, kCluster };
struct Location {
  uint32_t id = 0;
  std::string name;
  LocationKind kind = LocationKind::kProcess;
};

enum class NodeKind { kSource, kTransform, kSink, kNetwork };

using TransformFn = std::function<AnyBatch(const AnyBatch&)>;
using SinkFn = std::function<void(const AnyBatch&)>;

struct Node {
  uint32_t id = 0;
  NodeKind kind = NodeKind::kSource;
  std::string op;         // "source_iter", "map", "send", ... (for dumps and errors)
  uint32_t location = 0;  // where the node runs; for kNetwork, the sending side
  std::vector<uint32_t> inputs;
  // Factories: each member instance gets its own body, so per-member state stays separate.
  std::function<std::unique_ptr<SourceCursor>()> make_source;
  std::function<TransformFn()> make_transform;
  std::function<SinkFn()> make_sink;
  // kNetwork only.
  uint32_t to_location = 0;
  uint32_t edge = 0;
  EdgeCodec codec;
};

class Graph {
 public:
  uint32_t add_location(std::string name, LocationKind kind);
  uint32_t add_node(Node n);  // assigns id (and edge id for kNetwork)
  const std::vector<Location>& locations() const { return locations_; }
  const std::vector<Node>& nodes() const { return nodes_; }
  const Location& location(uint32_t id) const { return locations_.at(id); }
  std::string dump() const;  // one line per node, for --sluice-verbose and tests
  // The flow as a Graphviz digraph or a Mermaid flowchart: one cluster/subgraph per location,
  // network edges drawn between them (--sluice-dump-graph dot|mermaid).
  std::string dump_dot() const;
  std::string dump_mermaid() const;

 private:
  std::vector<Location> locations_;
  std::vector<Node> nodes_;
  uint32_t next_edge_ = 0;
};

}  // namespace sluice::ir
