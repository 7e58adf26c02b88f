// The untyped IR under the typed API: locations, and nodes whose bodies work on type-erased
// batches. It uses neither UCX nor TBB, so it can be built and inspected with no threads and no
// network; the runtime lowers it (operators/src/runtime.cpp).
//
// Execution model: a location runs in ticks. In each tick every node runs once, in dependency
// order, on what its inputs brought in that tick (a list of batches, `Chunks`), and learns for
// each input whether it is done (will bring nothing after this tick). State an operator keeps
// between ticks is top-level (`'static` in Hydro); operators inside a Tick keep none.
//
// Every process builds the same flow in the same order, so node and edge ids agree across the
// job without any exchange (SPMD).
#pragma once

#include <cassert>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "sluice/codec.hpp"
#include "sluice/transport/buffer_pool.hpp"
#include "sluice/transport/result.hpp"

namespace sluice::ir {

// The allocator of batch storage. Two things matter at millions of elements per second:
// operators fill batches they have just sized, so growing a vector of plain values must not
// zero-fill it first (a pass over memory about to be overwritten); and a tick's chunks are freed
// and allocated again every tick, so large ones come from the transport's buffer pool instead of
// fresh pages (whose page faults and kernel zeroing would cost more than the work).
namespace detail {
// A pool buffer the next allocation of exactly `bytes` on this thread takes (see adopt_into).
struct Adoption {
  uint8_t* memory = nullptr;
  size_t bytes = 0;
};
inline thread_local Adoption t_adoption;
}  // namespace detail

template <typename T>
struct BatchAllocator {
  using value_type = T;
  BatchAllocator() = default;
  template <typename U>
  BatchAllocator(const BatchAllocator<U>&) {}  // NOLINT(google-explicit-constructor): rebind
  static constexpr size_t kPooledMin = 16 * 1024;
  T* allocate(size_t n) {
    size_t bytes = n * sizeof(T);
    if (detail::t_adoption.memory != nullptr && detail::t_adoption.bytes == bytes) {
      return reinterpret_cast<T*>(std::exchange(detail::t_adoption.memory, nullptr));
    }
    if (bytes >= kPooledMin && alignof(T) <= 64) {
      return reinterpret_cast<T*>(transport::pool_allocate(bytes).release());
    }
    return std::allocator<T>{}.allocate(n);
  }
  void deallocate(T* p, size_t n) {
    size_t bytes = n * sizeof(T);
    if (bytes >= kPooledMin && alignof(T) <= 64) {
      transport::pool_deleter_for(bytes)(reinterpret_cast<uint8_t*>(p));
      return;
    }
    std::allocator<T>{}.deallocate(p, n);
  }
  template <typename U, typename... Args>
  void construct(U* p, Args&&... args) {
    if constexpr (sizeof...(Args) == 0) {
      ::new (static_cast<void*>(p)) U;
    } else {
      ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
    }
  }
  friend bool operator==(const BatchAllocator&, const BatchAllocator&) { return true; }
};
template <typename T>
using Vec = std::vector<T, BatchAllocator<T>>;

// Makes `v` own `count` elements already in `mem` (from pool_allocate(count * sizeof(T)), e.g.
// a received frame's elements): no copy, no zero-fill. Only for types whose default
// initialization writes nothing (a default member initializer would overwrite the bytes), and
// where the allocator would itself have drawn that buffer from the pool, so freeing it goes back
// there; false (mem untouched) otherwise.
template <typename T>
bool adopt_into(Vec<T>& v, transport::PooledBuffer& mem, size_t count) {
  if constexpr (!std::is_trivially_default_constructible_v<T>) return false;
  const size_t bytes = count * sizeof(T);
  if (!mem || count == 0 || bytes < BatchAllocator<T>::kPooledMin || alignof(T) > 64 ||
      mem.get_deleter().size_class != transport::pool_deleter_for(bytes).size_class) {
    return false;
  }
  Vec<T> out;
  detail::t_adoption = {mem.release(), bytes};
  out.reserve(count);  // takes the adopted buffer
  assert(detail::t_adoption.memory == nullptr);
  out.resize(count);  // default-initializes: the bytes stay
  v = std::move(out);
  return true;
}

// A batch of elements of one type; shared read-only between the nodes that consume it.
struct BatchBase {
  virtual ~BatchBase() = default;
  virtual size_t size() const = 0;
};
template <typename T>
struct Batch final : BatchBase {
  Batch() = default;
  explicit Batch(Vec<T> v) : items(std::move(v)) {}
  Vec<T> items;
  size_t size() const override { return items.size(); }
};
using AnyBatch = std::shared_ptr<const BatchBase>;
// What one edge carries in one tick, in order.
using Chunks = std::vector<AnyBatch>;

template <typename T>
const Vec<T>& items_of(const AnyBatch& b) {
  return static_cast<const Batch<T>&>(*b).items;
}

// A source's per-member cursor: yields up to `max` elements per call until exhausted.
class SourceCursor {
 public:
  virtual ~SourceCursor() = default;
  virtual AnyBatch next(size_t max) = 0;
  virtual bool exhausted() const = 0;
  // When an unbounded source (a timer) next has something: the runtime sleeps until then.
  virtual std::optional<std::chrono::steady_clock::time_point> wake_at() const { return {}; }
};

// Data parallelism offered to operators by the runtime (its TBB arena), without naming TBB here.
class Parallel {
 public:
  virtual ~Parallel() = default;
  virtual int concurrency() const = 0;
  // Runs task(0) .. task(n-1), possibly at the same time, and returns when all are done.
  virtual void run(size_t n, const std::function<void(size_t)>& task) const = 0;
};

struct TickContext {
  uint64_t tick = 0;
  const Parallel* parallel = nullptr;  // null: run everything on the calling thread
};

// One input of an operator in one tick.
struct Port {
  const Chunks* chunks = nullptr;
  bool done = false;  // nothing arrives on this input after this tick
};

// An operator body: one instance per member, called once per tick (never concurrently).
class Op {
 public:
  virtual ~Op() = default;
  virtual void run(std::span<const Port> in, Chunks& out, const TickContext& ctx) = 0;
};

// What the runtime tells a membership source (source_cluster_members): which members of the
// cluster joined (true) or left (false) since it last asked.
class MembershipFeed {
 public:
  virtual ~MembershipFeed() = default;
  virtual void poll(std::vector<std::pair<uint32_t, bool>>& events) = 0;
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
  // Bulk-copyable element types: a batch's encoding is its own memory (no encode needed), and a
  // buffer that holds just `count` encoded elements may become a batch as it is (adopt_into).
  std::function<std::span<const uint8_t>(const BatchBase&)> raw;
  std::function<Result<AnyBatch>(transport::PooledBuffer, size_t bytes, uint32_t count)> adopt;
  // Receivers keyed by sender: turns a decoded batch of T into (MemberId<Src>, T) pairs.
  std::function<AnyBatch(const AnyBatch&, uint32_t src_member)> tag;
  // demux: splits a batch of (MemberId<Dst>, T) into a batch of T per member (index = member).
  std::function<void(const BatchBase&, std::vector<AnyBatch>& per_member)> split;
  // round_robin: the elements first, first + stride, first + 2 * stride, ... of a batch.
  std::function<AnyBatch(const BatchBase&, size_t first, size_t stride)> stride;
  // Bulk-copyable types: those elements' encoding (size, and written straight into a frame), so
  // a member's share of a batch needs no batch of its own.
  std::function<size_t(const BatchBase&, size_t first, size_t stride)> strided_size;
  std::function<uint8_t*(const BatchBase&, size_t first, size_t stride, uint8_t* out)>
      encode_strided;
};

// Where a network edge sends each element.
enum class Route {
  kOne,         // to the only member of the destination (a Process)
  kBroadcast,   // to every member present in the tick's membership (encoded once)
  kDemux,       // to the member each element names
  kRoundRobin,  // element i of the stream to members[i % n] of the tick's membership
};

enum class LocationKind { kProcess, kCluster };
struct Location {
  uint32_t id = 0;
  std::string name;
  LocationKind kind = LocationKind::kProcess;
};

enum class NodeKind {
  kSource,   // make_source; no inputs
  kOp,       // make_op over `inputs`, in the same tick
  kNetwork,  // send side at `location`, receive side at `to_location`
  kDefer,    // defer_tick: what its input brought in tick t comes out in tick t+1 (lazily: it
             // does not start a tick by itself, as Hydro's defer_tick)
  kForward,  // forward_ref: `inputs` set when completed; a top-level one on a cycle delivers in
             // the next tick (eagerly), a tick-level one must not be on a cycle
};

struct Node {
  uint32_t id = 0;
  NodeKind kind = NodeKind::kSource;
  std::string op;         // "source_iter", "map", "send", ... (for dumps and errors)
  uint32_t location = 0;  // where the node runs; for kNetwork, the sending side
  std::vector<uint32_t> inputs;
  bool sink = false;  // kOp with an effect (for_each, inspect): runs even if nothing reads it
  // kOp that runs no stateful user code (pass-throughs, fused chains of const-callable
  // functions): it may run at the same time as other nodes. The others of a member run one at a
  // time, as a location runs in Hydro, so user state shared by two operators needs no lock.
  bool pure = false;
  bool tick_scoped = false;  // lives inside a Tick (kForward: decides how a cycle is cut)
  // Factories: each member instance gets its own body, so per-member state stays separate.
  std::function<std::unique_ptr<SourceCursor>()> make_source;
  std::function<std::unique_ptr<Op>()> make_op;
  // kSource of cluster membership (source_cluster_members): the cluster, and the cursor factory
  // that reads the runtime's feed.
  uint32_t members_of = UINT32_MAX;
  std::function<std::unique_ptr<SourceCursor>(MembershipFeed*)> make_membership;
  // kNetwork only.
  uint32_t to_location = 0;
  uint32_t edge = 0;
  Route route = Route::kOne;
  EdgeCodec codec;
};

// How one location runs its nodes in a tick.
struct Schedule {
  std::vector<uint32_t> order;  // kOp / kForward (same tick) / network sends, dependencies first
  std::vector<uint32_t> back_edges;  // top-level kForward nodes that cut a cycle
};

class Graph {
 public:
  uint32_t add_location(std::string name, LocationKind kind);
  uint32_t add_node(Node n);  // assigns id (and edge id for kNetwork)
  // Completes a forward reference; an error if `forward` is not one or was completed already.
  Status complete_forward(uint32_t forward, uint32_t input);
  // Records a mistake made while building (the typed API cannot fail there); check() reports it.
  void add_error(std::string error) { errors_.push_back(std::move(error)); }
  // Everything a flow must satisfy before it runs: forward references completed, no cycle
  // inside a tick that does not pass through defer_tick. The message names the nodes.
  Status check() const;
  // The order in which `location`'s nodes run in a tick (call after check()).
  Result<Schedule> schedule(uint32_t location) const;
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
  std::vector<std::string> errors_;  // misuse found while building (reported by check())
  uint32_t next_edge_ = 0;
};

}  // namespace sluice::ir
