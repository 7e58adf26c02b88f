// The typed user API: a FlowBuilder declares locations and the streams between them.
//
//   FlowBuilder flow;
//   auto p1 = flow.process<struct P1>("p1");
//   auto p2 = flow.process<struct P2>("p2");
//   p1.source_iter(std::vector<int>{1, 2, 3}).send(p2).for_each([](int x) { std::printf("%d\n", x);
//   }); return run(flow, argc, argv);
//
// Building a flow only records IR (sluice/ir.hpp); nothing runs until run(). Streams are cheap
// handles; using one twice fans its batches out to both consumers. Element types that cross a
// network edge need a Codec (sluice/codec.hpp). Not thread-safe: build a flow from one thread.
#pragma once

#include <functional>
#include <memory>
#include <ranges>
#include <string>
#include <type_traits>
#include <typeinfo>
#include <utility>
#include <vector>

#include "sluice/codec.hpp"
#include "sluice/ir.hpp"

namespace sluice {

// Guarantees carried in the type, as in Hydro.
struct Unbounded {};
struct Bounded {};
struct TotalOrder {};
struct NoOrder {};
struct ExactlyOnce {};
struct AtLeastOnce {};

class FlowBuilder;
template <typename Tag>
class Process;
template <typename T, typename L, typename B = Unbounded, typename O = TotalOrder,
          typename R = ExactlyOnce>
class Stream;

namespace detail {

struct FlowState {
  ir::Graph graph;
};

template <typename R>
class RangeCursor final : public ir::SourceCursor {
 public:
  using T = std::ranges::range_value_t<R>;
  explicit RangeCursor(std::shared_ptr<const R> range)
      : range_(std::move(range)),
        it_(std::ranges::begin(*range_)),
        end_(std::ranges::end(*range_)) {}
  ir::AnyBatch next(size_t max) override {
    auto b = std::make_shared<ir::Batch<T>>();
    b->items.reserve(std::min<size_t>(max, 1u << 16));
    for (size_t i = 0; i < max && it_ != end_; ++i, ++it_) b->items.push_back(*it_);
    return b;
  }
  bool exhausted() const override { return it_ == end_; }

 private:
  std::shared_ptr<const R> range_;
  decltype(std::ranges::begin(std::declval<const R&>())) it_;
  decltype(std::ranges::end(std::declval<const R&>())) end_;
};

template <Encodable T>
ir::EdgeCodec make_edge_codec() {
  ir::EdgeCodec c;
  c.type_name = typeid(T).name();
  c.encoded_size = [](const ir::BatchBase& b) {
    const auto& items = static_cast<const ir::Batch<T>&>(b).items;
    if constexpr (FixedSizeCodec<T>) {
      return items.size() * Codec<T>::kFixedSize;
    } else {
      size_t n = 0;
      for (const auto& e : items) n += Codec<T>::size(e);
      return n;
    }
  };
  c.encode = [](const ir::BatchBase& b, uint8_t* out, ZeroCopySink* sink) {
    const auto& items = static_cast<const ir::Batch<T>&>(b).items;
    if constexpr (BulkCopyable<T>) {
      (void)sink;
      if (!items.empty()) std::memcpy(out, items.data(), items.size() * sizeof(T));
      return out + items.size() * sizeof(T);
    } else if constexpr (requires(const T& v, ZeroCopySink& s) {
                           Codec<T>::encode_gather(v, out, s);
                         }) {
      if (sink != nullptr) {
        for (const auto& e : items) out = Codec<T>::encode_gather(e, out, *sink);
      } else {
        for (const auto& e : items) out = Codec<T>::encode(e, out);
      }
      return out;
    } else {
      (void)sink;
      for (const auto& e : items) out = Codec<T>::encode(e, out);
      return out;
    }
  };
  c.decode = [](std::span<const uint8_t> bytes, uint32_t count,
                const std::shared_ptr<const void>& owner) -> Result<ir::AnyBatch> {
    auto b = std::make_shared<ir::Batch<T>>();
    if constexpr (BulkCopyable<T>) {
      if (bytes.size() != size_t{count} * sizeof(T)) {
        return make_error("frame of " + std::to_string(count) + " elements of " +
                          std::to_string(sizeof(T)) + " bytes carries " +
                          std::to_string(bytes.size()) + " bytes");
      }
      if (reinterpret_cast<uintptr_t>(bytes.data()) % alignof(T) == 0) {
        // Frames keep elements 8-aligned: copy once, without zero-filling first.
        const T* first = reinterpret_cast<const T*>(bytes.data());
        b->items.assign(first, first + count);
      } else {
        b->items.resize(count);
        if (count != 0) std::memcpy(b->items.data(), bytes.data(), bytes.size());
      }
    } else {
      Reader in(bytes, owner);
      // A lying count must not make us allocate: reserve at most about the frame's own size;
      // past that, only elements that really decode (each takes bytes) grow the batch.
      b->items.reserve(std::min<size_t>(count, bytes.size() / sizeof(T) + 1));
      for (uint32_t i = 0; i < count; ++i) {
        T v{};
        if (!Codec<T>::decode(in, v)) {
          return make_error("element " + std::to_string(i) + " of " + std::to_string(count) + ": " +
                            in.error());
        }
        b->items.push_back(std::move(v));
      }
      if (in.remaining() != 0) {
        return make_error(std::to_string(in.remaining()) + " bytes left over after " +
                          std::to_string(count) + " elements");
      }
    }
    return ir::AnyBatch(std::move(b));
  };
  return c;
}

}  // namespace detail

template <typename T, typename L, typename B, typename O, typename R>
class Stream {
 public:
  using value_type = T;
  using location_type = L;

  Stream(std::shared_ptr<detail::FlowState> flow, L loc, uint32_t node)
      : flow_(std::move(flow)), loc_(std::move(loc)), node_(node) {}

  const L& location() const { return loc_; }
  uint32_t node_id() const { return node_; }

  // Applies `f` to each element.
  template <typename F>
  requires std::invocable<F&, const T&>
  auto map(F f) const {
    using U = std::decay_t<std::invoke_result_t<F&, const T&>>;
    return add<U>("map", [f]() -> ir::TransformFn {
      return [f](const ir::AnyBatch& in) mutable -> ir::AnyBatch {
        const auto& xs = ir::items_of<T>(in);
        auto out = std::make_shared<ir::Batch<U>>();
        out->items.reserve(xs.size());
        for (const auto& x : xs) out->items.push_back(std::invoke(f, x));
        return out;
      };
    });
  }

  // Keeps the elements for which `pred` is true.
  template <typename F>
  requires std::predicate<F&, const T&> Stream<T, L, B, O, R> filter(F pred)
  const {
    return add<T>("filter", [pred]() -> ir::TransformFn {
      return [pred](const ir::AnyBatch& in) mutable -> ir::AnyBatch {
        const auto& xs = ir::items_of<T>(in);
        auto out = std::make_shared<ir::Batch<T>>();
        for (const auto& x : xs) {
          if (std::invoke(pred, x)) out->items.push_back(x);
        }
        return out;
      };
    });
  }

  // Runs `f` on each element, in order. Needs a totally ordered, exactly-once stream.
  template <typename F>
  requires std::invocable<F&, const T&>
  void for_each(F f) const {
    static_assert(std::is_same_v<O, TotalOrder>,
                  "for_each needs a TotalOrder stream: call assume_ordering(nondet(...)) first");
    static_assert(std::is_same_v<R, ExactlyOnce>,
                  "for_each needs an ExactlyOnce stream: retries would run f more than once");
    ir::Node n;
    n.kind = ir::NodeKind::kSink;
    n.op = "for_each";
    n.location = loc_.id();
    n.inputs = {node_};
    n.make_sink = [f]() -> ir::SinkFn {
      return [f](const ir::AnyBatch& in) mutable {
        for (const auto& x : ir::items_of<T>(in)) std::invoke(f, x);
      };
    };
    flow_->graph.add_node(std::move(n));
  }

  // Process -> Process: one ordered channel. The receiver sees a prefix of what was sent; after
  // a failure nothing more arrives. Ordering and retries are kept.
  template <typename Tag2>
  Stream<T, Process<Tag2>, Unbounded, O, R> send(
      const Process<Tag2>& to) const requires Encodable<T> {
    ir::Node n;
    n.kind = ir::NodeKind::kNetwork;
    n.op = "send";
    n.location = loc_.id();
    n.to_location = to.id();
    n.inputs = {node_};
    n.codec = detail::make_edge_codec<T>();
    uint32_t id = flow_->graph.add_node(std::move(n));
    return Stream<T, Process<Tag2>, Unbounded, O, R>(flow_, to, id);
  }

 private:
  template <typename U>
  Stream<U, L, B, O, R> add(const char* op, std::function<ir::TransformFn()> make) const {
    ir::Node n;
    n.kind = ir::NodeKind::kTransform;
    n.op = op;
    n.location = loc_.id();
    n.inputs = {node_};
    n.make_transform = std::move(make);
    uint32_t id = flow_->graph.add_node(std::move(n));
    return Stream<U, L, B, O, R>(flow_, loc_, id);
  }

  std::shared_ptr<detail::FlowState> flow_;
  L loc_;
  uint32_t node_;
};

// A location with exactly one member. `Tag` distinguishes locations in the type system.
template <typename Tag>
class Process {
 public:
  using tag = Tag;
  uint32_t id() const { return loc_; }
  const std::string& name() const { return flow_->graph.location(loc_).name; }

  // A stream of the elements of `range`, in order. The range is copied (or moved) into the flow
  // and iterated lazily, a batch per tick, so views such as std::views::iota cost no memory.
  template <std::ranges::input_range Rg>
  auto source_iter(Rg range) const {
    using T = std::ranges::range_value_t<Rg>;
    auto shared = std::make_shared<const Rg>(std::move(range));
    ir::Node n;
    n.kind = ir::NodeKind::kSource;
    n.op = "source_iter";
    n.location = loc_;
    n.make_source = [shared]() -> std::unique_ptr<ir::SourceCursor> {
      return std::make_unique<detail::RangeCursor<Rg>>(shared);
    };
    uint32_t id = flow_->graph.add_node(std::move(n));
    return Stream<T, Process<Tag>, Bounded, TotalOrder, ExactlyOnce>(flow_, *this, id);
  }

 private:
  friend class FlowBuilder;
  Process(std::shared_ptr<detail::FlowState> flow, uint32_t loc)
      : flow_(std::move(flow)), loc_(loc) {}
  std::shared_ptr<detail::FlowState> flow_;
  uint32_t loc_;
};

// Declares the locations and streams of a program. Build it the same way in every process.
class FlowBuilder {
 public:
  FlowBuilder() : state_(std::make_shared<detail::FlowState>()) {}

  template <typename Tag>
  Process<Tag> process(std::string name) {
    return Process<Tag>(state_,
                        state_->graph.add_location(std::move(name), ir::LocationKind::kProcess));
  }

  const ir::Graph& graph() const { return state_->graph; }

 private:
  std::shared_ptr<detail::FlowState> state_;
};

}  // namespace sluice
