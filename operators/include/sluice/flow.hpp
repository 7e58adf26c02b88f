// The typed user API: a FlowBuilder declares locations and the live collections on them.
//
//   FlowBuilder flow;
//   auto p1 = flow.process<struct P1>("p1");
//   auto p2 = flow.process<struct P2>("p2");
//   p1.source_iter(std::vector<int>{1, 2, 3}).send(p2).for_each([](int x) { std::printf("%d\n", x);
//   }); return run(flow, argc, argv);
//
// Collections carry their guarantees in the type, as in Hydro:
//   Stream<T, L, B, O, R>          an ordered (O) sequence, Bounded or Unbounded (B), with exactly-
//                                  or at-least-once delivery (R)
//   KeyedStream<K, V, L, B, O, R>  a stream per key (O is the order within a key)
//   Singleton<T, L, B>             one value (that may change over time when Unbounded)
//   Optional<T, L, B>              zero or one value
//   KeyedSingleton<K, V, L, B>     one value per key
// L is a location: Process<Tag>, Cluster<Tag> (every member runs the same code), or Tick<L> (the
// collection lives inside one tick of L: a batch that is complete at the end of the tick).
// An operator that needs a stronger guarantee than its input has does not compile, and says
// why; nondeterministic operators take a NonDet made by nondet("why").
//
// Building a flow only records IR (sluice/ir.hpp); nothing runs until run(). Collections are
// cheap handles; using one twice fans its batches out to both consumers. Element types that
// cross a network edge need a Codec (sluice/codec.hpp). Functions given to map, filter,
// filter_map and flat_map may be called concurrently on parts of a large batch when they are
// const-callable (like a Rust `Fn`): keep side effects in inspect, for_each and fold. Not
// thread-safe: build a flow from one thread.
#pragma once

#include <chrono>
#include <concepts>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <optional>
#include <ranges>
#include <string>
#include <type_traits>
#include <typeinfo>
#include <utility>
#include <vector>

#include "sluice/codec.hpp"
#include "sluice/detail/ops.hpp"
#include "sluice/ir.hpp"
#include "sluice/markers.hpp"
#include "sluice/member_id.hpp"

namespace sluice {

// A change in a cluster's membership (source_cluster_members).
enum class MembershipEvent : uint8_t { Joined, Left };
inline const char* to_string(MembershipEvent e) {
  return e == MembershipEvent::Joined ? "Joined" : "Left";
}

class FlowBuilder;
template <typename Tag>
class Process;
template <typename Tag>
class Cluster;
template <typename L>
class Tick;
template <typename T, typename L, typename B = Unbounded, typename O = TotalOrder,
          typename R = ExactlyOnce>
class Stream;
template <typename T, typename L, typename B, typename O, typename R, typename Chain>
class FusedStream;
template <typename K, typename V, typename L, typename B = Unbounded, typename O = TotalOrder,
          typename R = ExactlyOnce>
class KeyedStream;
template <typename T, typename L, typename B = Unbounded>
class Singleton;
template <typename T, typename L, typename B = Unbounded>
class Optional;
template <typename K, typename V, typename L, typename B = Unbounded>
class KeyedSingleton;
template <typename C>
class ForwardRef;

namespace detail {

struct FlowState {
  ir::Graph graph;
};

template <typename L>
struct TickTraits {
  static constexpr bool kIsTick = false;
  using Outer = L;
};
template <typename L>
struct TickTraits<Tick<L>> {
  static constexpr bool kIsTick = true;
  using Outer = L;
};
template <typename L>
inline constexpr bool kIsTick = TickTraits<L>::kIsTick;
template <typename L>
using OuterOf = typename TickTraits<L>::Outer;

template <typename L, typename B>
constexpr Emit emit_for() {
  if constexpr (kIsTick<L>) {
    return Emit::kPerTick;
  } else if constexpr (std::is_same_v<B, Bounded>) {
    return Emit::kFinal;
  } else {
    return Emit::kRunning;
  }
}

template <typename T>
struct PairTraits {
  static constexpr bool kIsPair = false;
};
template <typename A, typename B>
struct PairTraits<std::pair<A, B>> {
  static constexpr bool kIsPair = true;
  using First = A;
  using Second = B;
};

// The member whose operators the calling thread is running (set by the runtime).
struct CurrentMember {
  uint32_t location = UINT32_MAX;
  uint32_t member = 0;
};
const CurrentMember& current_member();
void set_current_member(CurrentMember m);

template <typename R>
struct IsIntegerIota : std::false_type {};
template <typename W>
struct IsIntegerIota<std::ranges::iota_view<W, W>> : std::is_integral<W> {};

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
    if constexpr (std::ranges::sized_range<const R> && std::ranges::random_access_range<const R>) {
      // One bulk copy (vectorized for plain ranges and iota views).
      auto n = static_cast<size_t>(end_ - it_);
      auto k = static_cast<std::ranges::range_difference_t<const R>>(std::min(max, n));
      if constexpr (IsIntegerIota<R>::value) {
        b->items.resize(static_cast<size_t>(k));
        T* o = b->items.data();
        const T first = *it_;
        // Blocks of 8 with a constant inner count let the compiler emit vector stores at -O2.
        decltype(k) i = 0;
        for (; i + 8 <= k; i += 8) {
          const T base = static_cast<T>(first + static_cast<T>(i));
          for (int l = 0; l < 8; ++l) o[i + l] = static_cast<T>(base + static_cast<T>(l));
        }
        for (; i < k; ++i) o[i] = static_cast<T>(first + static_cast<T>(i));
      } else if constexpr (std::is_trivially_copyable_v<T> && std::is_default_constructible_v<T>) {
        b->items.resize(static_cast<size_t>(k));
        T* o = b->items.data();
        for (decltype(k) i = 0; i < k; ++i) o[i] = it_[i];
      } else {
        b->items.reserve(static_cast<size_t>(k));
        for (decltype(k) i = 0; i < k; ++i) b->items.push_back(it_[i]);
      }
      it_ += k;
    } else {
      b->items.reserve(std::min<size_t>(max, 1u << 16));
      for (size_t i = 0; i < max && it_ != end_; ++i, ++it_) b->items.push_back(*it_);
    }
    return b;
  }
  bool exhausted() const override { return it_ == end_; }

 private:
  std::shared_ptr<const R> range_;
  decltype(std::ranges::begin(std::declval<const R&>())) it_;
  decltype(std::ranges::end(std::declval<const R&>())) end_;
};

template <typename Tag>
class MembershipCursor final : public ir::SourceCursor {
 public:
  explicit MembershipCursor(ir::MembershipFeed* feed) : feed_(feed) {}
  ir::AnyBatch next(size_t) override {
    events_.clear();
    feed_->poll(events_);
    auto b = std::make_shared<ir::Batch<std::pair<MemberId<Tag>, MembershipEvent>>>();
    for (auto [member, joined] : events_) {
      b->items.emplace_back(MemberId<Tag>::from_raw(member),
                            joined ? MembershipEvent::Joined : MembershipEvent::Left);
    }
    return b;
  }
  bool exhausted() const override { return false; }

 private:
  ir::MembershipFeed* feed_;
  std::vector<std::pair<uint32_t, bool>> events_;
};

// One element per elapsed period (a burst catches up after a slow tick), forever.
class IntervalCursor final : public ir::SourceCursor {
 public:
  using Clock = std::chrono::steady_clock;
  explicit IntervalCursor(Clock::duration period) : period_(period), due_(Clock::now() + period) {}
  ir::AnyBatch next(size_t max) override {
    auto b = std::make_shared<ir::Batch<Clock::time_point>>();
    auto now = Clock::now();
    while (due_ <= now && b->items.size() < max) {
      b->items.push_back(now);
      due_ += period_;
    }
    return b;
  }
  bool exhausted() const override { return false; }
  std::optional<Clock::time_point> wake_at() const override { return due_; }

 private:
  Clock::duration period_;
  Clock::time_point due_;
};

// A frame of `count` bulk-copyable elements must carry exactly their bytes.
template <typename T>
Status check_bulk_size(size_t bytes, uint32_t count) {
  if (bytes != size_t{count} * sizeof(T)) {
    return make_error("frame of " + std::to_string(count) + " elements of " +
                      std::to_string(sizeof(T)) + " bytes carries " + std::to_string(bytes) +
                      " bytes");
  }
  return {};
}

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
  if constexpr (BulkCopyable<T>) {
    c.raw = [](const ir::BatchBase& b) {
      const auto& items = static_cast<const ir::Batch<T>&>(b).items;
      return std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(items.data()),
                                      items.size() * sizeof(T));
    };
    c.adopt = [](transport::PooledBuffer mem, size_t bytes,
                 uint32_t count) -> Result<ir::AnyBatch> {
      if (auto s = check_bulk_size<T>(bytes, count); !s) return std::move(s).take_error();
      auto b = std::make_shared<ir::Batch<T>>();
      if (!ir::adopt_into(b->items, mem, count)) {
        const T* first = reinterpret_cast<const T*>(mem.get());
        b->items.assign(first, first + count);
      }
      return ir::AnyBatch(std::move(b));
    };
  }
  c.decode = [](std::span<const uint8_t> bytes, uint32_t count,
                const std::shared_ptr<const void>& owner) -> Result<ir::AnyBatch> {
    auto b = std::make_shared<ir::Batch<T>>();
    if constexpr (BulkCopyable<T>) {
      if (auto s = check_bulk_size<T>(bytes.size(), count); !s) return std::move(s).take_error();
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

// Records an operator node and returns the collection C that reads it. `make` returns the
// operator's body: a mutable lambda (std::span<const Port>, Chunks& out, const TickContext&).
template <typename C, bool kEffect = false, bool kPure = false, typename Loc, typename Make>
C add_op(const std::shared_ptr<FlowState>& flow, const Loc& loc, const char* op,
         std::vector<uint32_t> inputs, Make make) {
  ir::Node n;
  n.kind = ir::NodeKind::kOp;
  n.op = op;
  n.sink = kEffect;
  n.pure = kPure;
  n.location = loc.id();
  n.inputs = std::move(inputs);
  n.tick_scoped = kIsTick<Loc>;
  n.make_op = [make]() { return detail::make_op(make()); };
  uint32_t id = flow->graph.add_node(std::move(n));
  return C(flow, loc, id);
}

// A node that passes its input through unchanged (a change of type or location only).
template <typename C, typename Loc>
C add_pass(const std::shared_ptr<FlowState>& flow, const Loc& loc, const char* op, uint32_t input) {
  return add_op<C, false, true>(flow, loc, op, {input}, [] {
    return [](std::span<const Port> in, Chunks& out, const TickContext&) {
      out.insert(out.end(), in[0].chunks->begin(), in[0].chunks->end());
    };
  });
}

template <typename C, typename Loc>
C add_defer(const std::shared_ptr<FlowState>& flow, const Loc& loc, uint32_t input) {
  static_assert(kIsTick<Loc>, "defer_tick works inside a tick: batch() or snapshot() first");
  ir::Node n;
  n.kind = ir::NodeKind::kDefer;
  n.op = "defer_tick";
  n.location = loc.id();
  n.inputs = {input};
  n.tick_scoped = true;
  uint32_t id = flow->graph.add_node(std::move(n));
  return C(flow, loc, id);
}

// map's inner loop: writes in place for trivial result types, so the compiler can vectorize it.
template <typename U, typename T, typename F>
void map_range(const T* a, const T* b, ir::Vec<U>& out, F& f) {
  if constexpr (std::is_trivially_copyable_v<U> && std::is_default_constructible_v<U>) {
    out.resize(static_cast<size_t>(b - a));
    U* o = out.data();
    for (; a != b; ++a, ++o) *o = std::invoke(f, *a);
  } else {
    out.reserve(static_cast<size_t>(b - a));
    for (; a != b; ++a) out.push_back(std::invoke(f, *a));
  }
}

// filter's inner loop: branch-free for trivial element types.
template <typename T, typename P>
void filter_range(const T* a, const T* b, ir::Vec<T>& out, P& pred) {
  if constexpr (std::is_trivially_copyable_v<T> && std::is_default_constructible_v<T>) {
    out.resize(static_cast<size_t>(b - a));
    T* o = out.data();
    size_t m = 0;
    for (; a != b; ++a) {
      o[m] = *a;
      m += std::invoke(pred, *a) ? 1 : 0;
    }
    out.resize(m);
  } else {
    for (; a != b; ++a) {
      if (std::invoke(pred, *a)) out.push_back(*a);
    }
  }
}

// Fused element-wise kernels: each calls emit(y) for every output of one input element, so a
// chain of map/filter/filter_map/flat_map compiles into one loop.
struct IdK {
  template <typename X, typename E>
  void operator()(const X& x, E&& emit) const {
    emit(x);
  }
};
template <typename K, typename F>
struct MapK {
  K k;
  F f;
  template <typename X, typename E>
  void operator()(const X& x, E&& emit) const {
    k(x, [&](const auto& y) { emit(std::invoke(f, y)); });
  }
};
template <typename K, typename F>
struct FilterK {
  K k;
  F f;
  template <typename X, typename E>
  void operator()(const X& x, E&& emit) const {
    k(x, [&](const auto& y) {
      if (std::invoke(f, y)) emit(y);
    });
  }
};
template <typename K, typename F>
struct FilterMapK {
  K k;
  F f;
  template <typename X, typename E>
  void operator()(const X& x, E&& emit) const {
    k(x, [&](const auto& y) {
      auto r = std::invoke(f, y);
      if (r) emit(*r);
    });
  }
};
template <typename K, typename F>
struct FlatMapK {
  K k;
  F f;
  template <typename X, typename E>
  void operator()(const X& x, E&& emit) const {
    k(x, [&](const auto& y) {
      for (auto&& z : std::invoke(f, y)) emit(z);
    });
  }
};

// A chain of fused functions applied to the elements of IR node `input` (of type InT).
template <typename InT, typename K, bool kExp>
struct Chain {
  using In = InT;
  using Kernel = K;
  static constexpr bool kExpands = kExp;  // may emit more than one output per input (flat_map)
  uint32_t input;
  K kernel;
  std::string ops;  // e.g. "map+filter", for dumps
  template <typename K2, bool kExp2>
  Chain<InT, K2, kExp2> then(K2 k2, const char* op) const {
    return {input, std::move(k2), ops.empty() ? std::string(op) : ops + "+" + op};
  }
};

// Runs a chain over [a, b) into `out` (in place, without growth checks, when it cannot expand).
template <typename U, bool kExp, typename K, typename In>
void run_chain(const K& k, const In* a, const In* b, ir::Vec<U>& out) {
  if constexpr (!kExp && std::is_trivially_copyable_v<U> && std::is_default_constructible_v<U>) {
    out.resize(static_cast<size_t>(b - a));
    U* d = out.data();
    size_t m = 0;
    for (; a != b; ++a) k(*a, [&](const U& y) { d[m++] = y; });
    out.resize(m);
  } else {
    if constexpr (!kExp) out.reserve(static_cast<size_t>(b - a));
    for (; a != b; ++a) k(*a, [&](const U& y) { out.push_back(y); });
  }
}

template <typename L>
struct ClusterTraits {
  static constexpr bool kIsCluster = false;
};
template <typename Tag>
struct ClusterTraits<Cluster<Tag>> {
  static constexpr bool kIsCluster = true;
};
template <typename L>
inline constexpr bool kIsCluster = ClusterTraits<L>::kIsCluster;

// Network edges: how a receiver keyed by sender tags elements, how demux splits a batch by
// destination member, and how round_robin deals a batch out.
template <typename SrcTag, typename T>
void add_tag(ir::EdgeCodec& c) {
  c.tag = [](const ir::AnyBatch& b, uint32_t member) -> ir::AnyBatch {
    using P = std::pair<MemberId<SrcTag>, T>;
    const auto& xs = items<T>(b);
    auto out = std::make_shared<ir::Batch<P>>();
    out->items.reserve(xs.size());
    for (const auto& x : xs) out->items.emplace_back(MemberId<SrcTag>::from_raw(member), x);
    return out;
  };
}
// `get(e)` gives an element's destination member and what is sent to it.
template <typename E, typename U, typename Get>
void add_split(ir::EdgeCodec& c, Get get) {
  c.split = [get](const ir::BatchBase& b, std::vector<ir::AnyBatch>& per_member) {
    const auto& xs = static_cast<const ir::Batch<E>&>(b).items;
    std::vector<std::shared_ptr<ir::Batch<U>>> parts(per_member.size());
    for (const auto& e : xs) {
      auto [member, payload] = get(e);
      if (member >= parts.size()) continue;  // not a member: the runtime counts it as dropped
      if (!parts[member]) parts[member] = std::make_shared<ir::Batch<U>>();
      parts[member]->items.push_back(std::move(payload));
    }
    for (size_t m = 0; m < parts.size(); ++m) {
      if (parts[m]) per_member[m] = std::move(parts[m]);
    }
  };
}
template <typename T>
void add_stride(ir::EdgeCodec& c) {
  c.stride = [](const ir::BatchBase& b, size_t first, size_t stride) -> ir::AnyBatch {
    const auto& xs = static_cast<const ir::Batch<T>&>(b).items;
    auto out = std::make_shared<ir::Batch<T>>();
    out->items.reserve(xs.size() / stride + 1);
    for (size_t i = first; i < xs.size(); i += stride) out->items.push_back(xs[i]);
    return out;
  };
  if constexpr (BulkCopyable<T>) {
    c.strided_size = [](const ir::BatchBase& b, size_t first, size_t stride) {
      const size_t n = b.size();
      return n > first ? (n - first + stride - 1) / stride * sizeof(T) : 0;
    };
    c.encode_strided = [](const ir::BatchBase& b, size_t first, size_t stride, uint8_t* out) {
      const auto& xs = static_cast<const ir::Batch<T>&>(b).items;
      for (size_t i = first; i < xs.size(); i += stride) {
        std::memcpy(out, &xs[i], sizeof(T));
        out += sizeof(T);
      }
      return out;
    };
  }
}

// Records a network node from a collection at `from` to location `to`.
template <typename Out, typename From, typename To>
Out add_network(const std::shared_ptr<FlowState>& flow, const From& from, uint32_t input,
                const To& to, const char* op, ir::Route route, ir::EdgeCodec codec) {
  static_assert(!kIsTick<From>, "network operators work on top-level streams: all_ticks() first");
  ir::Node n;
  n.kind = ir::NodeKind::kNetwork;
  n.op = op;
  n.location = from.id();
  n.to_location = to.id();
  n.inputs = {input};
  n.route = route;
  n.codec = std::move(codec);
  uint32_t id = flow->graph.add_node(std::move(n));
  return Out(flow, to, id);
}

// The result of a network operator: from a Process a Stream at the destination; from a Cluster
// a KeyedStream keyed by the sending member.
template <typename From, typename T, typename To, typename O, typename R>
struct NetOut {
  using type = Stream<T, To, Unbounded, O, R>;
};
template <typename SrcTag, typename T, typename To, typename O, typename R>
struct NetOut<Cluster<SrcTag>, T, To, O, R> {
  using type = KeyedStream<MemberId<SrcTag>, T, To, Unbounded, O, R>;
};

template <typename Out, typename Wire, typename From, typename To>
ir::EdgeCodec net_codec() {
  ir::EdgeCodec c = make_edge_codec<Wire>();
  if constexpr (kIsCluster<From>) add_tag<typename From::tag, Wire>(c);
  return c;
}

// Base of every collection handle: the flow, the location and the IR node it reads.
template <typename L>
class Handle {
 public:
  Handle(std::shared_ptr<FlowState> flow, L loc, uint32_t node)
      : flow_(std::move(flow)), loc_(std::move(loc)), node_(node) {}
  const L& location() const { return loc_; }
  uint32_t node_id() const { return node_; }
  const std::shared_ptr<FlowState>& flow_state() const { return flow_; }

 protected:
  void check_tick(uint32_t tick_location) const;
  std::shared_ptr<FlowState> flow_;
  L loc_;
  uint32_t node_;
};

template <typename L>
void Handle<L>::check_tick(uint32_t tick_location) const {
  if (tick_location != loc_.id()) {
    // Misuse while building; reported by run() (Graph::check) before anything starts.
    flow_->graph.add_error("batch/snapshot into a tick of " +
                           flow_->graph.location(tick_location).name + " from a collection at " +
                           flow_->graph.location(loc_.id()).name +
                           ": use a tick of the collection's own location");
  }
}

template <typename C>
constexpr bool kIsSingletonLike = false;
template <typename T, typename L, typename B>
constexpr bool kIsSingletonLike<Singleton<T, L, B>> = true;
template <typename C>
constexpr bool kIsValueLike = kIsSingletonLike<C>;
template <typename T, typename L, typename B>
constexpr bool kIsValueLike<Optional<T, L, B>> = true;

template <typename X>
using KeyOf = typename PairTraits<X>::First;
template <typename X>
using ValOf = typename PairTraits<X>::Second;

}  // namespace detail

// ------------------------------------------------------------------------------------------------
// Stream<T, L, B, O, R>
// ------------------------------------------------------------------------------------------------
template <typename T, typename L, typename B, typename O, typename R>
class Stream : public detail::Handle<L> {
  using Base = detail::Handle<L>;
  using Base::flow_;
  using Base::loc_;
  using Base::node_;
  template <typename U, typename O2 = O, typename R2 = R, typename B2 = B>
  using Same = Stream<U, L, B2, O2, R2>;
  static constexpr detail::Emit kEmit = detail::emit_for<L, B>();
  static constexpr bool kTotal = std::is_same_v<O, TotalOrder>;
  static constexpr bool kOnce = std::is_same_v<R, ExactlyOnce>;

 public:
  using value_type = T;
  using location_type = L;
  using Base::Base;

  // Applies `f` to each element.
  template <typename F>
  requires std::invocable<F&, const T&>
  auto map(F f) const { return map_via(identity_chain(), std::move(f)); }

  // Keeps the elements for which `pred` is true.
  template <typename F>
  requires std::predicate<F&, const T&>
  auto filter(F pred) const { return filter_via(identity_chain(), std::move(pred)); }

  // Maps each element to an optional and keeps the values that are present.
  template <typename F>
  requires std::invocable<F&, const T&>
  auto filter_map(F f) const { return filter_map_via(identity_chain(), std::move(f)); }

  // Maps each element to a range and emits its elements, in order.
  template <typename F>
  requires std::invocable<F&, const T&>
  auto flat_map(F f) const { return flat_map_via(identity_chain(), std::move(f)); }

  // Calls `f` on each element, in order, and passes the stream on unchanged.
  template <typename F>
  requires std::invocable<F&, const T&> Same<T> inspect(F f)
  const {
    // An effect: it runs even when nothing reads its output.
    return detail::add_op<Same<T>, true>(flow_, loc_, "inspect", {node_}, [f] {
      return [f](std::span<const ir::Port> in, ir::Chunks& out, const ir::TickContext&) mutable {
        detail::each<T>(*in[0].chunks, [&](const T& x) { std::invoke(f, x); });
        out.insert(out.end(), in[0].chunks->begin(), in[0].chunks->end());
      };
    });
  }

  // Runs `f` on each element, in order. Needs a totally ordered, exactly-once stream.
  template <typename F>
  requires std::invocable<F&, const T&>
  void for_each(F f) const { for_each_via(identity_chain(), std::move(f)); }

  // Folds the stream into one value: init() to start, then comb(acc&, x) (or acc = comb(acc, x))
  // for each element in order. Inside a tick: the fold of the tick's batch, every tick. At the top
  // level: a running value (Unbounded) or the final one (Bounded).
  template <typename I, typename C>
  auto fold(I init, C comb) const {
    require_fold();
    return fold_via(identity_chain(), "fold", std::move(init), std::move(comb));
  }

  // fold for combiners whose result does not depend on the order of elements.
  template <typename I, typename C>
  auto fold_commutative(I init, C comb) const {
    require_fold_commutative();
    return fold_via(identity_chain(), "fold_commutative", std::move(init), std::move(comb));
  }

  // Combines the elements pairwise in order: empty until the first element arrives.
  template <typename C>
  auto reduce(C comb) const {
    static_assert(kTotal,
                  "reduce needs a TotalOrder stream: use reduce_commutative, or "
                  "assume_ordering(nondet(...))");
    static_assert(kOnce, "reduce needs an ExactlyOnce stream: a retried element would count twice");
    return reduce_impl("reduce", std::move(comb));
  }
  template <typename C>
  auto reduce_commutative(C comb) const {
    static_assert(kOnce, "reduce_commutative needs an ExactlyOnce stream");
    return reduce_impl("reduce_commutative", std::move(comb));
  }

  // The number of elements (inside a tick: of the tick's batch).
  Singleton<size_t, L, B> count() const {
    static_assert(kOnce, "count needs an ExactlyOnce stream: a retried element would count twice");
    return detail::add_op<Singleton<size_t, L, B>>(flow_, loc_, "count", {node_}, [] {
      return [n = size_t{0}, cell = detail::Cell<size_t>{}](
                 std::span<const ir::Port> in, ir::Chunks& out, const ir::TickContext&) mutable {
        size_t add = detail::count_of<T>(*in[0].chunks);
        if constexpr (kEmit == detail::Emit::kPerTick) {
          out.push_back(detail::one(add));
        } else {
          n += add;
          if (!cell.has() || add != 0) cell.set(n);
          if (detail::shows(kEmit, in[0].done)) cell.emit(out);
        }
      };
    });
  }

  // Pairs each element with its index in the stream (inside a tick: in the tick's batch).
  auto enumerate() const {
    static_assert(kTotal, "enumerate needs a TotalOrder stream: indices would be arbitrary");
    static_assert(kOnce, "enumerate needs an ExactlyOnce stream: a retry would take a new index");
    using P = std::pair<size_t, T>;
    return detail::add_op<Same<P>>(flow_, loc_, "enumerate", {node_}, [] {
      return [next = size_t{0}](std::span<const ir::Port> in, ir::Chunks& out,
                                const ir::TickContext&) mutable {
        if constexpr (kEmit == detail::Emit::kPerTick) next = 0;
        ir::Vec<P> v;
        v.reserve(detail::count_of<T>(*in[0].chunks));
        detail::each<T>(*in[0].chunks, [&](const T& x) { v.emplace_back(next++, x); });
        if (!v.empty()) out.push_back(detail::batch_of(std::move(v)));
      };
    });
  }

  // Drops elements seen before (inside a tick: before in the same tick). The result is
  // ExactlyOnce even when the input retries.
  auto unique() const {
    return detail::add_op<Same<T, O, ExactlyOnce>>(flow_, loc_, "unique", {node_}, [] {
      return [seen = std::unordered_set<T, detail::Hash<T>>{}](
                 std::span<const ir::Port> in, ir::Chunks& out, const ir::TickContext&) mutable {
        if constexpr (kEmit == detail::Emit::kPerTick) seen.clear();
        ir::Vec<T> v;
        detail::each<T>(*in[0].chunks, [&](const T& x) {
          if (seen.insert(x).second) v.push_back(x);
        });
        if (!v.empty()) out.push_back(detail::batch_of(std::move(v)));
      };
    });
  }

  // The first element (inside a tick: of the tick's batch).
  Optional<T, L, B> first() const {
    static_assert(kTotal,
                  "first needs a TotalOrder stream: on a NoOrder stream 'first' is arbitrary");
    static_assert(kOnce, "first needs an ExactlyOnce stream");
    return detail::add_op<Optional<T, L, B>>(flow_, loc_, "first", {node_}, [] {
      return [cell = detail::Cell<T>{}](std::span<const ir::Port> in, ir::Chunks& out,
                                        const ir::TickContext&) mutable {
        const T* v = detail::value_of<T>(*in[0].chunks);
        if constexpr (kEmit == detail::Emit::kPerTick) {
          if (v != nullptr) out.push_back(detail::one(*v));
        } else {
          if (!cell.has() && v != nullptr) cell.set(*v);
          cell.emit(out);  // the first element never changes once known
        }
      };
    });
  }

  // All elements in one vector: inside a tick, the tick's batch; at the top level (Bounded only),
  // the whole stream once it is complete.
  Singleton<std::vector<T>, L, B> collect_vec() const {
    static_assert(std::is_same_v<B, Bounded>,
                  "collect_vec needs a Bounded stream: an Unbounded one never completes (batch it "
                  "into a tick first)");
    static_assert(kTotal,
                  "collect_vec needs a TotalOrder stream: the vector's order would be arbitrary");
    static_assert(kOnce,
                  "collect_vec needs an ExactlyOnce stream: a retried element would appear twice");
    using V = std::vector<T>;
    return detail::add_op<Singleton<V, L, B>>(flow_, loc_, "collect_vec", {node_}, [] {
      return [cell = detail::Cell<V>{}](std::span<const ir::Port> in, ir::Chunks& out,
                                        const ir::TickContext&) mutable {
        if constexpr (kEmit == detail::Emit::kPerTick) {
          V v;
          detail::each<T>(*in[0].chunks, [&](const T& x) { v.push_back(x); });
          out.push_back(detail::one(std::move(v)));
        } else {
          if (!cell.has()) cell.set(V{});
          if (!in[0].chunks->empty()) {
            V& v = cell.get();
            detail::each<T>(*in[0].chunks, [&](const T& x) { v.push_back(x); });
          }
          if (in[0].done) cell.emit(out);
        }
      };
    });
  }

  // Every pair (a, b) of an element of this stream and one of `other`.
  template <typename U, typename O2>
  Stream<std::pair<T, U>, L, B, NoOrder, R> cross_product(
      const Stream<U, L, B, O2, R>& other) const {
    using P = std::pair<T, U>;
    return detail::add_op<Stream<P, L, B, NoOrder, R>>(
        flow_, loc_, "cross_product", {node_, other.node_id()}, [] {
          return
              [ls = std::vector<T>{}, rs = std::vector<U>{}](
                  std::span<const ir::Port> in, ir::Chunks& out, const ir::TickContext&) mutable {
                std::vector<T> nl;
                std::vector<U> nr;
                detail::each<T>(*in[0].chunks, [&](const T& x) { nl.push_back(x); });
                detail::each<U>(*in[1].chunks, [&](const U& y) { nr.push_back(y); });
                ir::Vec<P> v;
                if constexpr (kEmit == detail::Emit::kPerTick) {
                  for (const auto& a : nl)
                    for (const auto& b : nr) v.emplace_back(a, b);
                } else {
                  // New pairs only: new x (old + new), old x new.
                  for (const auto& a : nl) {
                    for (const auto& b : rs) v.emplace_back(a, b);
                    for (const auto& b : nr) v.emplace_back(a, b);
                  }
                  for (const auto& a : ls)
                    for (const auto& b : nr) v.emplace_back(a, b);
                  ls.insert(ls.end(), nl.begin(), nl.end());
                  rs.insert(rs.end(), nr.begin(), nr.end());
                }
                if (!v.empty()) out.push_back(detail::batch_of(std::move(v)));
              };
        });
  }

  // Pairs each element with the value of a singleton (or optional: no value, no output). At the
  // top level the singleton must be Bounded: elements wait until its final value is known.
  template <typename S>
  requires detail::kIsValueLike<S>
  auto cross_singleton(const S& other) const {
    using U = typename S::value_type;
    static_assert(std::is_same_v<typename S::location_type, L>,
                  "cross_singleton needs both collections at the same location (and tick)");
    static_assert(detail::kIsTick<L> || std::is_same_v<typename S::bound_type, Bounded>,
                  "cross_singleton at the top level needs a Bounded singleton: snapshot both into "
                  "a tick to pair with a changing value");
    using P = std::pair<T, U>;
    return detail::add_op<Same<P>>(flow_, loc_, "cross_singleton", {node_, other.node_id()}, [] {
      return [held = std::vector<T>{}](std::span<const ir::Port> in, ir::Chunks& out,
                                       const ir::TickContext&) mutable {
        const U* s = detail::value_of<U>(*in[1].chunks);
        ir::Vec<P> v;
        if constexpr (kEmit != detail::Emit::kPerTick) {
          if (s == nullptr) {  // not known yet: hold the elements
            detail::each<T>(*in[0].chunks, [&](const T& x) { held.push_back(x); });
            return;
          }
          for (auto& x : held) v.emplace_back(std::move(x), *s);
          held.clear();
        }
        if (s != nullptr) {
          detail::each<T>(*in[0].chunks, [&](const T& x) { v.emplace_back(x, *s); });
        }
        if (!v.empty()) out.push_back(detail::batch_of(std::move(v)));
      };
    });
  }

  // Joins a stream of (key, v1) with one of (key, v2) on the key: (key, (v1, v2)).
  template <typename V2, typename O2, typename TT = T>
  auto join(const Stream<std::pair<detail::KeyOf<TT>, V2>, L, B, O2, R>& other) const {
    using K = detail::KeyOf<TT>;
    using V1 = detail::ValOf<TT>;
    using P = std::pair<K, std::pair<V1, V2>>;
    using Map1 = std::unordered_multimap<K, V1, detail::Hash<K>>;
    using Map2 = std::unordered_multimap<K, V2, detail::Hash<K>>;
    return detail::add_op<Stream<P, L, B, NoOrder, R>>(
        flow_, loc_, "join", {node_, other.node_id()}, [] {
          return [m1 = Map1{}, m2 = Map2{}](std::span<const ir::Port> in, ir::Chunks& out,
                                            const ir::TickContext&) mutable {
            if constexpr (kEmit == detail::Emit::kPerTick) {
              m1.clear();
              m2.clear();
            }
            ir::Vec<P> v;
            // Symmetric hash join: each new left meets every right so far, then each new right
            // meets every left so far (including this tick's).
            detail::each<T>(*in[0].chunks, [&](const T& x) {
              auto [lo, hi] = m2.equal_range(x.first);
              for (auto it = lo; it != hi; ++it)
                v.emplace_back(x.first, std::pair(x.second, it->second));
              m1.emplace(x.first, x.second);
            });
            detail::each<std::pair<K, V2>>(*in[1].chunks, [&](const std::pair<K, V2>& y) {
              auto [lo, hi] = m1.equal_range(y.first);
              for (auto it = lo; it != hi; ++it)
                v.emplace_back(y.first, std::pair(it->second, y.second));
              m2.emplace(y.first, y.second);
            });
            if (!v.empty()) out.push_back(detail::batch_of(std::move(v)));
          };
        });
  }

  // Keeps the (key, value) elements whose key is not in `keys`. At the top level `keys` must be
  // Bounded: elements wait until it is complete.
  template <typename B2, typename O2, typename R2, typename TT = T>
  auto anti_join(const Stream<detail::KeyOf<TT>, L, B2, O2, R2>& keys) const {
    using K = detail::KeyOf<TT>;
    static_assert(
        detail::kIsTick<L> || std::is_same_v<B2, Bounded>,
        "anti_join at the top level needs a Bounded key stream: otherwise no element could "
        "ever be known to pass");
    return detail::add_op<Same<T>>(flow_, loc_, "anti_join", {node_, keys.node_id()}, [] {
      return [neg = std::unordered_set<K, detail::Hash<K>>{}, held = std::vector<T>{}](
                 std::span<const ir::Port> in, ir::Chunks& out, const ir::TickContext&) mutable {
        if constexpr (kEmit == detail::Emit::kPerTick) neg.clear();
        detail::each<K>(*in[1].chunks, [&](const K& k) { neg.insert(k); });
        ir::Vec<T> v;
        if constexpr (kEmit != detail::Emit::kPerTick) {
          if (!in[1].done) {
            detail::each<T>(*in[0].chunks, [&](const T& x) { held.push_back(x); });
            return;
          }
          for (auto& x : held) {
            if (!neg.count(x.first)) v.push_back(std::move(x));
          }
          held.clear();
        }
        detail::each<T>(*in[0].chunks, [&](const T& x) {
          if (!neg.count(x.first)) v.push_back(x);
        });
        if (!v.empty()) out.push_back(detail::batch_of(std::move(v)));
      };
    });
  }

  // This stream, then `other` (both Bounded): order is kept. At the top level `other`'s elements
  // wait until this stream is complete.
  Stream chain(const Stream& other) const {
    static_assert(std::is_same_v<B, Bounded>,
                  "chain needs Bounded streams (the first must end); use interleave for Unbounded");
    return detail::add_op<Stream>(flow_, loc_, "chain", {node_, other.node_id()}, [] {
      return [held = ir::Chunks{}](std::span<const ir::Port> in, ir::Chunks& out,
                                   const ir::TickContext&) mutable {
        out.insert(out.end(), in[0].chunks->begin(), in[0].chunks->end());
        if constexpr (kEmit != detail::Emit::kPerTick) {
          if (!in[0].done) {
            held.insert(held.end(), in[1].chunks->begin(), in[1].chunks->end());
            return;
          }
          out.insert(out.end(), held.begin(), held.end());
          held.clear();
        }
        out.insert(out.end(), in[1].chunks->begin(), in[1].chunks->end());
      };
    });
  }

  // Both streams merged as elements arrive: the order between them is arbitrary. Bounded only
  // when both are.
  template <typename B2, typename O2,
            typename B3 = std::conditional_t<std::is_same_v<B, B2>, B, Unbounded>>
  Stream<T, L, B3, NoOrder, R> interleave(const Stream<T, L, B2, O2, R>& other) const {
    return detail::add_op<Stream<T, L, B3, NoOrder, R>>(
        flow_, loc_, "interleave", {node_, other.node_id()}, [] {
          return [](std::span<const ir::Port> in, ir::Chunks& out, const ir::TickContext&) {
            out.insert(out.end(), in[0].chunks->begin(), in[0].chunks->end());
            out.insert(out.end(), in[1].chunks->begin(), in[1].chunks->end());
          };
        });
  }

  // (key, value) elements as a stream per key.
  template <typename TT = T>
  auto into_keyed() const {
    static_assert(detail::PairTraits<TT>::kIsPair,
                  "into_keyed needs a stream of (key, value) pairs");
    using K = detail::KeyOf<TT>;
    using V = detail::ValOf<TT>;
    return detail::add_pass<KeyedStream<K, V, L, B, O, R>>(flow_, loc_, "into_keyed", node_);
  }

  // ---- ticks ----
  // The elements that arrived by each tick of `tick`, as that tick's (Bounded) batch.
  Stream<T, Tick<L>, Bounded, O, R> batch(const Tick<L>& tick, NonDet) const {
    static_assert(!detail::kIsTick<L>, "batch takes a top-level stream into a tick");
    this->check_tick(tick.id());
    return detail::add_pass<Stream<T, Tick<L>, Bounded, O, R>>(flow_, tick, "batch", node_);
  }
  // Every tick's batch, concatenated, back at the top level.
  auto all_ticks() const {
    static_assert(detail::kIsTick<L>, "all_ticks takes a stream out of a tick");
    using Out = detail::OuterOf<L>;
    return detail::add_pass<Stream<T, Out, Unbounded, O, R>>(flow_, loc_.outer(), "all_ticks",
                                                             node_);
  }
  // This tick's batch, delivered in the next tick (lazily: it waits for the next tick, it does
  // not start one).
  Stream defer_tick() const { return detail::add_defer<Stream>(flow_, loc_, node_); }

  // ---- guarantees ----
  template <typename O2>
  Stream<T, L, B, O2, R> assume_ordering(NonDet) const {
    return detail::add_pass<Stream<T, L, B, O2, R>>(flow_, loc_, "assume_ordering", node_);
  }
  template <typename O2 = NoOrder>
  Stream<T, L, B, O2, R> weaken_ordering() const {
    static_assert(std::is_same_v<O2, NoOrder> || std::is_same_v<O2, O>,
                  "weaken_ordering can only drop ordering: use assume_ordering(nondet) to add it");
    return detail::add_pass<Stream<T, L, B, O2, R>>(flow_, loc_, "weaken_ordering", node_);
  }
  template <typename R2>
  Stream<T, L, B, O, R2> assume_retries(NonDet) const {
    return detail::add_pass<Stream<T, L, B, O, R2>>(flow_, loc_, "assume_retries", node_);
  }
  template <typename R2 = AtLeastOnce>
  Stream<T, L, B, O, R2> weaker_retries() const {
    static_assert(std::is_same_v<R2, AtLeastOnce> || std::is_same_v<R2, R>,
                  "weaker_retries can only weaken: use assume_retries(nondet) to strengthen");
    return detail::add_pass<Stream<T, L, B, O, R2>>(flow_, loc_, "weaker_retries", node_);
  }

  // ---- network ----
  // To a process: one ordered channel per sender. Process -> Process gives a Stream (a prefix of
  // what was sent, in order); Cluster -> Process a KeyedStream keyed by the sending member.
  template <typename Tag2>
  auto send(const Process<Tag2>& to) const requires Encodable<T> {
    using Out = typename detail::NetOut<L, T, Process<Tag2>, O, R>::type;
    return detail::add_network<Out>(flow_, loc_, node_, to, "send", ir::Route::kOne,
                                    detail::net_codec<Out, T, L, Process<Tag2>>());
  }

  // Every element to every member of `to` present in the tick's membership (each element is
  // encoded once; the same bytes go to every member).
  template <typename Tag2>
  auto broadcast(const Cluster<Tag2>& to, NonDet) const requires Encodable<T> {
    using Out = typename detail::NetOut<L, T, Cluster<Tag2>, O, R>::type;
    return detail::add_network<Out>(flow_, loc_, node_, to, "broadcast", ir::Route::kBroadcast,
                                    detail::net_codec<Out, T, L, Cluster<Tag2>>());
  }

  // (member, value) elements: each value to the member it names. Elements for a member that is
  // not (or no longer) in the cluster are dropped and counted.
  template <typename Tag2, typename TT = T>
  auto demux(const Cluster<Tag2>& to) const {
    static_assert(
        detail::PairTraits<TT>::kIsPair && std::is_same_v<detail::KeyOf<TT>, MemberId<Tag2>>,
        "demux needs a stream of (MemberId<destination>, value) pairs");
    using U = detail::ValOf<TT>;
    using Out = typename detail::NetOut<L, U, Cluster<Tag2>, O, R>::type;
    auto codec = detail::net_codec<Out, U, L, Cluster<Tag2>>();
    detail::add_split<T, U>(codec, [](const T& e) { return std::pair(e.first.raw(), e.second); });
    return detail::add_network<Out>(flow_, loc_, node_, to, "demux", ir::Route::kDemux,
                                    std::move(codec));
  }

  // Element i of the stream to members[i % n] of the tick's membership (n members present).
  template <typename Tag2>
  auto round_robin(const Cluster<Tag2>& to, NonDet) const requires Encodable<T> {
    static_assert(
        kTotal,
        "round_robin needs a TotalOrder stream: element i goes to member i % n, so i must "
        "be well defined");
    static_assert(kOnce, "round_robin needs an ExactlyOnce stream: a retry would take a new turn");
    using Out = typename detail::NetOut<L, T, Cluster<Tag2>, O, R>::type;
    auto codec = detail::net_codec<Out, T, L, Cluster<Tag2>>();
    detail::add_stride<T>(codec);
    return detail::add_network<Out>(flow_, loc_, node_, to, "round_robin", ir::Route::kRoundRobin,
                                    std::move(codec));
  }

 protected:
  detail::Chain<T, detail::IdK, false> identity_chain() const { return {node_, {}, ""}; }

  static void require_fold() {
    static_assert(kTotal,
                  "fold needs a TotalOrder stream (the result could depend on arrival order): use "
                  "fold_commutative, or assume_ordering(nondet(...))");
    static_assert(kOnce, "fold needs an ExactlyOnce stream: a retried element would count twice");
  }
  static void require_fold_commutative() {
    static_assert(kOnce,
                  "fold_commutative needs an ExactlyOnce stream: a retried element would count "
                  "twice");
  }

  // Element-wise operators fuse: a stream made by map/filter/filter_map/flat_map remembers the
  // chain of functions from the last materialized stream (`ch`), so the next element-wise
  // operator, fold or for_each runs the whole chain per element in one loop instead of one pass
  // per operator. Only const-callable functions fuse (a mutable one keeps its state in one node).
  template <typename Ch, typename F>
  auto map_via(const Ch& ch, F f) const {
    using U = std::decay_t<std::invoke_result_t<F&, const T&>>;
    if constexpr (std::is_invocable_v<const F&, const T&>) {
      using K2 = detail::MapK<typename Ch::Kernel, F>;
      return make_fused<U>(ch.template then<K2, Ch::kExpands>(K2{ch.kernel, std::move(f)}, "map"));
    } else {
      return detail::add_op<Same<U>>(flow_, loc_, "map", {node_}, [f] {
        return
            [f](std::span<const ir::Port> in, ir::Chunks& out, const ir::TickContext& ctx) mutable {
              detail::per_chunk<U, T>(
                  *in[0].chunks, out, ctx, false,
                  [&f](const T* a, const T* b, ir::Vec<U>& o) { detail::map_range(a, b, o, f); });
            };
      });
    }
  }
  template <typename Ch, typename F>
  auto filter_via(const Ch& ch, F pred) const {
    if constexpr (std::is_invocable_v<const F&, const T&>) {
      using K2 = detail::FilterK<typename Ch::Kernel, F>;
      return make_fused<T>(
          ch.template then<K2, Ch::kExpands>(K2{ch.kernel, std::move(pred)}, "filter"));
    } else {
      return detail::add_op<Same<T>>(flow_, loc_, "filter", {node_}, [pred] {
        return [pred](std::span<const ir::Port> in, ir::Chunks& out,
                      const ir::TickContext& ctx) mutable {
          detail::per_chunk<T, T>(*in[0].chunks, out, ctx, false,
                                  [&pred](const T* a, const T* b, ir::Vec<T>& o) {
                                    detail::filter_range(a, b, o, pred);
                                  });
        };
      });
    }
  }
  template <typename Ch, typename F>
  auto filter_map_via(const Ch& ch, F f) const {
    using U = typename std::decay_t<std::invoke_result_t<F&, const T&>>::value_type;
    if constexpr (std::is_invocable_v<const F&, const T&>) {
      using K2 = detail::FilterMapK<typename Ch::Kernel, F>;
      return make_fused<U>(
          ch.template then<K2, Ch::kExpands>(K2{ch.kernel, std::move(f)}, "filter_map"));
    } else {
      return detail::add_op<Same<U>>(flow_, loc_, "filter_map", {node_}, [f] {
        return
            [f](std::span<const ir::Port> in, ir::Chunks& out, const ir::TickContext& ctx) mutable {
              detail::per_chunk<U, T>(*in[0].chunks, out, ctx, false,
                                      [&f](const T* a, const T* b, ir::Vec<U>& o) {
                                        for (; a != b; ++a) {
                                          auto r = std::invoke(f, *a);
                                          if (r) o.push_back(std::move(*r));
                                        }
                                      });
            };
      });
    }
  }
  template <typename Ch, typename F>
  auto flat_map_via(const Ch& ch, F f) const {
    using Rg = std::decay_t<std::invoke_result_t<F&, const T&>>;
    using U = std::decay_t<std::ranges::range_value_t<Rg>>;
    if constexpr (std::is_invocable_v<const F&, const T&>) {
      using K2 = detail::FlatMapK<typename Ch::Kernel, F>;
      return make_fused<U>(ch.template then<K2, true>(K2{ch.kernel, std::move(f)}, "flat_map"));
    } else {
      return detail::add_op<Same<U>>(flow_, loc_, "flat_map", {node_}, [f] {
        return
            [f](std::span<const ir::Port> in, ir::Chunks& out, const ir::TickContext& ctx) mutable {
              detail::per_chunk<U, T>(*in[0].chunks, out, ctx, false,
                                      [&f](const T* a, const T* b, ir::Vec<U>& o) {
                                        for (; a != b; ++a) {
                                          for (auto&& y : std::invoke(f, *a)) o.push_back(y);
                                        }
                                      });
            };
      });
    }
  }

  // A node that runs a chain over its input and materializes the result, and the handle to it.
  template <typename U, typename Ch>
  auto make_fused(const Ch& ch) const {
    using In = typename Ch::In;
    constexpr bool kExp = Ch::kExpands;
    auto s = detail::add_op<Same<U>, false, true>(
        flow_, loc_, ch.ops.c_str(), {ch.input}, [k = ch.kernel] {
          return [k](std::span<const ir::Port> in, ir::Chunks& out, const ir::TickContext& ctx) {
            detail::per_chunk<U, In>(*in[0].chunks, out, ctx, true,
                                     [&k](const In* a, const In* b, ir::Vec<U>& o) {
                                       detail::run_chain<U, kExp>(k, a, b, o);
                                     });
          };
        });
    return FusedStream<U, L, B, O, R, Ch>(std::move(s), ch);
  }

  template <typename Ch, typename F>
  void for_each_via(const Ch& ch, F f) const {
    static_assert(kTotal,
                  "for_each needs a TotalOrder stream: call assume_ordering(nondet(...)) first");
    static_assert(kOnce,
                  "for_each needs an ExactlyOnce stream: retries would run f more than once");
    using In = typename Ch::In;
    ir::Node n;
    n.kind = ir::NodeKind::kOp;
    n.op = ch.ops.empty() ? std::string("for_each") : ch.ops + "+for_each";
    n.location = loc_.id();
    n.inputs = {ch.input};
    n.sink = true;
    n.tick_scoped = detail::kIsTick<L>;
    n.make_op = [f, k = ch.kernel]() {
      return detail::make_op(
          [f, k](std::span<const ir::Port> in, ir::Chunks&, const ir::TickContext&) mutable {
            detail::each<In>(*in[0].chunks,
                             [&](const In& x) { k(x, [&](const T& y) { std::invoke(f, y); }); });
          });
    };
    flow_->graph.add_node(std::move(n));
  }

  template <typename Ch, typename I, typename C>
  auto fold_via(const Ch& ch, const char* op, I init, C comb) const {
    using A = std::decay_t<std::invoke_result_t<I&>>;
    using In = typename Ch::In;
    std::string name = ch.ops.empty() ? std::string(op) : ch.ops + "+" + op;
    return detail::add_op<Singleton<A, L, B>>(
        flow_, loc_, name.c_str(), {ch.input}, [init, comb, k = ch.kernel] {
          return
              [init, comb, k, cell = detail::Cell<A>{}](
                  std::span<const ir::Port> in, ir::Chunks& out, const ir::TickContext&) mutable {
                auto fold_into = [&](A& acc) {
                  detail::each<In>(*in[0].chunks, [&](const In& x) {
                    k(x, [&](const T& y) { detail::combine(comb, acc, y); });
                  });
                };
                if constexpr (kEmit == detail::Emit::kPerTick) {
                  A acc = std::invoke(init);
                  fold_into(acc);
                  out.push_back(detail::one(std::move(acc)));
                } else {
                  if (!cell.has()) cell.set(std::invoke(init));
                  if (!in[0].chunks->empty()) {
                    // A local accumulator: the compiler keeps it in a register across the loop.
                    A& cur = cell.get();
                    A acc = std::move(cur);
                    fold_into(acc);
                    cur = std::move(acc);
                  }
                  if (detail::shows(kEmit, in[0].done)) cell.emit(out);
                }
              };
        });
  }

 private:
  template <typename C>
  Optional<T, L, B> reduce_impl(const char* op, C comb) const {
    return detail::add_op<Optional<T, L, B>>(flow_, loc_, op, {node_}, [comb] {
      return [comb, cell = detail::Cell<T>{}](std::span<const ir::Port> in, ir::Chunks& out,
                                              const ir::TickContext&) mutable {
        if constexpr (kEmit == detail::Emit::kPerTick) {
          std::optional<T> acc;
          detail::each<T>(*in[0].chunks, [&](const T& x) {
            if (acc) {
              detail::combine(comb, *acc, x);
            } else {
              acc = x;
            }
          });
          if (acc) out.push_back(detail::one(std::move(*acc)));
        } else {
          detail::each<T>(*in[0].chunks, [&](const T& x) {
            if (cell.has()) {
              detail::combine(comb, cell.get(), x);
            } else {
              cell.set(x);
            }
          });
          if (detail::shows(kEmit, in[0].done)) cell.emit(out);
        }
      };
    });
  }
};

// A Stream made by map/filter/filter_map/flat_map: the same stream, which also remembers the
// chain of functions that made it, so the next element-wise operator, fold or for_each fuses
// with it (one loop per element instead of a pass per operator). Converts to its Stream type.
template <typename T, typename L, typename B, typename O, typename R, typename Ch>
class FusedStream : public Stream<T, L, B, O, R> {
  using Base = Stream<T, L, B, O, R>;

 public:
  FusedStream(Base s, Ch ch) : Base(std::move(s)), ch_(std::move(ch)) {}

  template <typename F>
  requires std::invocable<F&, const T&>
  auto map(F f) const { return this->map_via(ch_, std::move(f)); }
  template <typename F>
  requires std::predicate<F&, const T&>
  auto filter(F pred) const { return this->filter_via(ch_, std::move(pred)); }
  template <typename F>
  requires std::invocable<F&, const T&>
  auto filter_map(F f) const { return this->filter_map_via(ch_, std::move(f)); }
  template <typename F>
  requires std::invocable<F&, const T&>
  auto flat_map(F f) const { return this->flat_map_via(ch_, std::move(f)); }
  template <typename F>
  requires std::invocable<F&, const T&>
  void for_each(F f) const { this->for_each_via(ch_, std::move(f)); }
  template <typename I, typename C>
  auto fold(I init, C comb) const {
    Base::require_fold();
    return this->fold_via(ch_, "fold", std::move(init), std::move(comb));
  }
  template <typename I, typename C>
  auto fold_commutative(I init, C comb) const {
    Base::require_fold_commutative();
    return this->fold_via(ch_, "fold_commutative", std::move(init), std::move(comb));
  }

 private:
  Ch ch_;
};

// ------------------------------------------------------------------------------------------------
// Singleton<T, L, B> and Optional<T, L, B>
// ------------------------------------------------------------------------------------------------
namespace detail {

// What Singleton and Optional share: both carry at most one value per tick.
template <typename T, typename L, typename B, template <typename, typename, typename> class Self>
class ValueHandle : public Handle<L> {
 protected:
  using Handle<L>::flow_;
  using Handle<L>::loc_;
  using Handle<L>::node_;
  static constexpr Emit kEmit = emit_for<L, B>();

 public:
  using value_type = T;
  using location_type = L;
  using bound_type = B;
  using Handle<L>::Handle;

  // Keeps the value when `pred` holds.
  template <typename F>
  requires std::predicate<F&, const T&> Optional<T, L, B> filter(F pred)
  const {
    return add_op<Optional<T, L, B>>(flow_, loc_, "filter", {node_}, [pred] {
      return [pred](std::span<const Port> in, Chunks& out, const TickContext&) mutable {
        const T* v = value_of<T>(*in[0].chunks);
        if (v != nullptr && std::invoke(pred, *v))
          out.insert(out.end(), in[0].chunks->begin(), in[0].chunks->end());
      };
    });
  }

  // The value as a one-element stream: inside a tick, every tick; at the top level (Bounded
  // only), once.
  Stream<T, L, Bounded, TotalOrder, ExactlyOnce> into_stream() const {
    static_assert(std::is_same_v<B, Bounded>,
                  "into_stream needs a Bounded singleton: an Unbounded one changes over time "
                  "(snapshot it into a tick first)");
    return add_op<Stream<T, L, Bounded, TotalOrder, ExactlyOnce>>(
        flow_, loc_, "into_stream", {node_}, [] {
          return [sent = false](std::span<const Port> in, Chunks& out, const TickContext&) mutable {
            const T* v = value_of<T>(*in[0].chunks);
            if (v == nullptr) return;
            if constexpr (kEmit != Emit::kPerTick) {
              if (sent) return;
              sent = true;
            }
            out.push_back(one(*v));
          };
        });
  }

  // The value as of each tick of `tick`.
  Self<T, Tick<L>, Bounded> snapshot(const Tick<L>& tick, NonDet) const {
    static_assert(!kIsTick<L>, "snapshot takes a top-level value into a tick");
    this->check_tick(tick.id());
    return add_pass<Self<T, Tick<L>, Bounded>>(flow_, tick, "snapshot", node_);
  }

  // Each tick's value, as a top-level stream.
  auto all_ticks() const {
    static_assert(kIsTick<L>, "all_ticks takes a value out of a tick");
    return add_pass<Stream<T, OuterOf<L>, Unbounded, TotalOrder, ExactlyOnce>>(flow_, loc_.outer(),
                                                                               "all_ticks", node_);
  }

  // Last tick's value (nothing in the first tick).
  Optional<T, L, Bounded> defer_tick() const {
    return add_defer<Optional<T, L, Bounded>>(flow_, loc_, node_);
  }

  // Applies `f` to the value (of the same kind: a Singleton stays one).
  template <typename F>
  requires std::invocable<F&, const T&>
  auto map(F f) const {
    using U = std::decay_t<std::invoke_result_t<F&, const T&>>;
    return map_value<Self<U, L, B>>("map", std::move(f));
  }

  // Both values as a pair: a Singleton when both are, else an Optional.
  template <template <typename, typename, typename> class Other, typename U>
  requires kIsValueLike<Other<U, L, B>>
  auto zip(const Other<U, L, B>& other) const {
    using P = std::pair<T, U>;
    if constexpr (kIsSingletonLike<Self<T, L, B>> && kIsSingletonLike<Other<U, L, B>>) {
      return zip_value<Singleton<P, L, B>, U>(other.node_id());
    } else {
      return zip_value<Optional<P, L, B>, U>(other.node_id());
    }
  }

 protected:
  template <typename C, typename F>
  C map_value(const char* op, F f) const {
    return add_op<C>(flow_, loc_, op, {node_}, [f] {
      return [f](std::span<const Port> in, Chunks& out, const TickContext&) mutable {
        const T* v = value_of<T>(*in[0].chunks);
        if (v != nullptr) out.push_back(one(std::invoke(f, *v)));
      };
    });
  }
  template <typename C, typename U>
  C zip_value(uint32_t other) const {
    using P = std::pair<T, U>;
    return add_op<C>(flow_, loc_, "zip", {node_, other}, [] {
      return [](std::span<const Port> in, Chunks& out, const TickContext&) {
        const T* a = value_of<T>(*in[0].chunks);
        const U* b = value_of<U>(*in[1].chunks);
        if (a != nullptr && b != nullptr) out.push_back(one(P(*a, *b)));
      };
    });
  }
};

}  // namespace detail

template <typename T, typename L, typename B>
class Singleton : public detail::ValueHandle<T, L, B, Singleton> {
  using Base = detail::ValueHandle<T, L, B, Singleton>;

 public:
  using Base::Base;
};

template <typename T, typename L, typename B>
class Optional : public detail::ValueHandle<T, L, B, Optional> {
  using Base = detail::ValueHandle<T, L, B, Optional>;

 public:
  using Base::Base;
  // The value, or `fallback` when there is none (this tick).
  Singleton<T, L, B> unwrap_or(T fallback) const {
    return detail::add_op<Singleton<T, L, B>>(
        this->flow_, this->loc_, "unwrap_or", {this->node_}, [fallback] {
          return [fallback](std::span<const ir::Port> in, ir::Chunks& out, const ir::TickContext&) {
            const T* v = detail::value_of<T>(*in[0].chunks);
            // A top-level Bounded optional is absent until its input is done: no fallback yet.
            if (v == nullptr && !in[0].done && detail::emit_for<L, B>() == detail::Emit::kFinal) {
              return;
            }
            out.push_back(detail::one(v != nullptr ? *v : fallback));
          };
        });
  }
};

// ------------------------------------------------------------------------------------------------
// KeyedStream<K, V, L, B, O, R> and KeyedSingleton<K, V, L, B>  (elements are (key, value) pairs)
// ------------------------------------------------------------------------------------------------
template <typename K, typename V, typename L, typename B, typename O, typename R>
class KeyedStream : public detail::Handle<L> {
  using Base = detail::Handle<L>;
  using Base::flow_;
  using Base::loc_;
  using Base::node_;
  using P = std::pair<K, V>;
  static constexpr detail::Emit kEmit = detail::emit_for<L, B>();

 public:
  using key_type = K;
  using value_type = V;
  using location_type = L;
  using Base::Base;

  // All (key, value) pairs; the order across keys is arbitrary.
  Stream<P, L, B, NoOrder, R> entries() const {
    return detail::add_pass<Stream<P, L, B, NoOrder, R>>(flow_, loc_, "entries", node_);
  }
  // All values; the order across keys is arbitrary.
  Stream<V, L, B, NoOrder, R> values() const {
    return detail::add_op<Stream<V, L, B, NoOrder, R>>(flow_, loc_, "values", {node_}, [] {
      return [](std::span<const ir::Port> in, ir::Chunks& out, const ir::TickContext&) {
        ir::Vec<V> v;
        detail::each<P>(*in[0].chunks, [&](const P& e) { v.push_back(e.second); });
        if (!v.empty()) out.push_back(detail::batch_of(std::move(v)));
      };
    });
  }
  // Applies `f` to each value.
  template <typename F>
  requires std::invocable<F&, const V&>
  auto map(F f) const {
    using U = std::decay_t<std::invoke_result_t<F&, const V&>>;
    return detail::add_op<KeyedStream<K, U, L, B, O, R>>(flow_, loc_, "map", {node_}, [f] {
      return [f](std::span<const ir::Port> in, ir::Chunks& out, const ir::TickContext&) mutable {
        ir::Vec<std::pair<K, U>> v;
        detail::each<P>(*in[0].chunks,
                        [&](const P& e) { v.emplace_back(e.first, std::invoke(f, e.second)); });
        if (!v.empty()) out.push_back(detail::batch_of(std::move(v)));
      };
    });
  }
  // Keeps the values for which `pred` holds.
  template <typename F>
  requires std::predicate<F&, const V&> KeyedStream filter(F pred)
  const {
    return detail::add_op<KeyedStream>(flow_, loc_, "filter", {node_}, [pred] {
      return [pred](std::span<const ir::Port> in, ir::Chunks& out, const ir::TickContext&) mutable {
        ir::Vec<P> v;
        detail::each<P>(*in[0].chunks, [&](const P& e) {
          if (std::invoke(pred, e.second)) v.push_back(e);
        });
        if (!v.empty()) out.push_back(detail::batch_of(std::move(v)));
      };
    });
  }
  // Folds each key's values, in order: one value per key.
  template <typename I, typename C>
  auto fold(I init, C comb) const {
    static_assert(std::is_same_v<O, TotalOrder>,
                  "fold needs each key's values in TotalOrder: use fold_commutative");
    static_assert(std::is_same_v<R, ExactlyOnce>, "fold needs an ExactlyOnce keyed stream");
    return fold_impl("fold", std::move(init), std::move(comb));
  }
  template <typename I, typename C>
  auto fold_commutative(I init, C comb) const {
    static_assert(std::is_same_v<R, ExactlyOnce>,
                  "fold_commutative needs an ExactlyOnce keyed stream");
    return fold_impl("fold_commutative", std::move(init), std::move(comb));
  }
  // Combines each key's values pairwise, in order.
  template <typename C>
  KeyedSingleton<K, V, L, B> reduce(C comb) const {
    static_assert(std::is_same_v<O, TotalOrder>,
                  "reduce needs each key's values in TotalOrder: assume_ordering(nondet) first");
    static_assert(std::is_same_v<R, ExactlyOnce>, "reduce needs an ExactlyOnce keyed stream");
    return detail::add_op<KeyedSingleton<K, V, L, B>>(flow_, loc_, "reduce", {node_}, [comb] {
      return [comb, cell = detail::KeyedCell<K, V>{}](std::span<const ir::Port> in, ir::Chunks& out,
                                                      const ir::TickContext&) mutable {
        if constexpr (kEmit == detail::Emit::kPerTick) cell.clear();
        detail::each<P>(*in[0].chunks, [&](const P& e) {
          auto [slot, fresh] = cell.try_put(e.first, e.second);
          if (!fresh) detail::combine(comb, *slot, e.second);
        });
        if (detail::shows(kEmit, in[0].done)) cell.emit(out);
      };
    });
  }
  // The number of values per key.
  KeyedSingleton<K, size_t, L, B> count() const {
    return fold_commutative([] { return size_t{0}; }, [](size_t& n, const V&) { ++n; });
  }

  // KeyedStream<MemberId<C>, V>: each value to the member its key names. KeyedStream<(MemberId<C>,
  // K), V>: each (K, V) to the member named in its key.
  template <typename Tag2>
  auto demux(const Cluster<Tag2>& to) const {
    if constexpr (std::is_same_v<K, MemberId<Tag2>>) {
      using Out = typename detail::NetOut<L, V, Cluster<Tag2>, O, R>::type;
      auto codec = detail::net_codec<Out, V, L, Cluster<Tag2>>();
      detail::add_split<P, V>(codec, [](const P& e) { return std::pair(e.first.raw(), e.second); });
      return detail::add_network<Out>(flow_, loc_, node_, to, "demux", ir::Route::kDemux,
                                      std::move(codec));
    } else {
      static_assert(
          detail::PairTraits<K>::kIsPair && std::is_same_v<detail::KeyOf<K>, MemberId<Tag2>>,
          "demux needs keys that are MemberId<destination> or (MemberId<destination>, K)");
      using K2 = detail::ValOf<K>;
      using W = std::pair<K2, V>;
      using Out = KeyedStream<K2, V, Cluster<Tag2>, Unbounded, O, R>;
      static_assert(!detail::kIsCluster<L>,
                    "a keyed demux from a cluster would need keys of keys; use entries() first");
      auto codec = detail::net_codec<Out, W, L, Cluster<Tag2>>();
      detail::add_split<P, W>(codec, [](const P& e) {
        return std::pair(e.first.first.raw(), W(e.first.second, e.second));
      });
      return detail::add_network<Out>(flow_, loc_, node_, to, "demux", ir::Route::kDemux,
                                      std::move(codec));
    }
  }

  KeyedStream<K, V, Tick<L>, Bounded, O, R> batch(const Tick<L>& tick, NonDet) const {
    static_assert(!detail::kIsTick<L>, "batch takes a top-level stream into a tick");
    this->check_tick(tick.id());
    return detail::add_pass<KeyedStream<K, V, Tick<L>, Bounded, O, R>>(flow_, tick, "batch", node_);
  }
  auto all_ticks() const {
    static_assert(detail::kIsTick<L>, "all_ticks takes a stream out of a tick");
    return detail::add_pass<KeyedStream<K, V, detail::OuterOf<L>, Unbounded, O, R>>(
        flow_, loc_.outer(), "all_ticks", node_);
  }
  KeyedStream defer_tick() const { return detail::add_defer<KeyedStream>(flow_, loc_, node_); }
  template <typename O2>
  KeyedStream<K, V, L, B, O2, R> assume_ordering(NonDet) const {
    return detail::add_pass<KeyedStream<K, V, L, B, O2, R>>(flow_, loc_, "assume_ordering", node_);
  }
  template <typename O2 = NoOrder>
  KeyedStream<K, V, L, B, O2, R> weaken_ordering() const {
    static_assert(std::is_same_v<O2, NoOrder> || std::is_same_v<O2, O>,
                  "weaken_ordering can only drop ordering");
    return detail::add_pass<KeyedStream<K, V, L, B, O2, R>>(flow_, loc_, "weaken_ordering", node_);
  }
  template <typename R2 = AtLeastOnce>
  KeyedStream<K, V, L, B, O, R2> weaker_retries() const {
    static_assert(std::is_same_v<R2, AtLeastOnce> || std::is_same_v<R2, R>,
                  "weaker_retries can only weaken");
    return detail::add_pass<KeyedStream<K, V, L, B, O, R2>>(flow_, loc_, "weaker_retries", node_);
  }

 private:
  template <typename I, typename C>
  auto fold_impl(const char* op, I init, C comb) const {
    using A = std::decay_t<std::invoke_result_t<I&>>;
    return detail::add_op<KeyedSingleton<K, A, L, B>>(flow_, loc_, op, {node_}, [init, comb] {
      return [init, comb, cell = detail::KeyedCell<K, A>{}](
                 std::span<const ir::Port> in, ir::Chunks& out, const ir::TickContext&) mutable {
        if constexpr (kEmit == detail::Emit::kPerTick) cell.clear();
        detail::each<P>(*in[0].chunks, [&](const P& e) {
          detail::combine(comb, cell.at(e.first, init), e.second);
        });
        if (detail::shows(kEmit, in[0].done)) cell.emit(out);
      };
    });
  }
};

template <typename K, typename V, typename L, typename B>
class KeyedSingleton : public detail::Handle<L> {
  using Base = detail::Handle<L>;
  using Base::flow_;
  using Base::loc_;
  using Base::node_;
  using P = std::pair<K, V>;
  static constexpr detail::Emit kEmit = detail::emit_for<L, B>();

  // A stream made once from the (Bounded) keyed value: every tick inside a tick, once at the top.
  template <typename U, typename F>
  Stream<U, L, B, NoOrder, ExactlyOnce> project(const char* op, F f) const {
    static_assert(std::is_same_v<B, Bounded>,
                  "keys/values/entries need a Bounded keyed singleton: snapshot an Unbounded one "
                  "into a tick first");
    return detail::add_op<Stream<U, L, B, NoOrder, ExactlyOnce>>(flow_, loc_, op, {node_}, [f] {
      return [f, sent = false](std::span<const ir::Port> in, ir::Chunks& out,
                               const ir::TickContext&) mutable {
        if (in[0].chunks->empty()) return;
        if constexpr (kEmit != detail::Emit::kPerTick) {
          if (sent) return;
          sent = true;
        }
        ir::Vec<U> v;
        detail::each<P>(*in[0].chunks, [&](const P& e) { v.push_back(f(e)); });
        if (!v.empty()) out.push_back(detail::batch_of(std::move(v)));
      };
    });
  }

 public:
  using key_type = K;
  using value_type = V;
  using location_type = L;
  using Base::Base;

  Stream<K, L, B, NoOrder, ExactlyOnce> keys() const {
    return project<K>("keys", [](const P& e) { return e.first; });
  }
  Stream<V, L, B, NoOrder, ExactlyOnce> values() const {
    return project<V>("values", [](const P& e) { return e.second; });
  }
  Stream<P, L, B, NoOrder, ExactlyOnce> entries() const {
    return project<P>("entries", [](const P& e) { return e; });
  }
  // Applies `f` to each key's value.
  template <typename F>
  requires std::invocable<F&, const V&>
  auto map(F f) const {
    using U = std::decay_t<std::invoke_result_t<F&, const V&>>;
    return detail::add_op<KeyedSingleton<K, U, L, B>>(flow_, loc_, "map", {node_}, [f] {
      return [f](std::span<const ir::Port> in, ir::Chunks& out, const ir::TickContext&) mutable {
        if (in[0].chunks->empty()) return;
        ir::Vec<std::pair<K, U>> v;
        detail::each<P>(*in[0].chunks,
                        [&](const P& e) { v.emplace_back(e.first, std::invoke(f, e.second)); });
        out.push_back(detail::batch_of(std::move(v)));
      };
    });
  }
  KeyedSingleton<K, V, Tick<L>, Bounded> snapshot(const Tick<L>& tick, NonDet) const {
    static_assert(!detail::kIsTick<L>, "snapshot takes a top-level value into a tick");
    this->check_tick(tick.id());
    return detail::add_pass<KeyedSingleton<K, V, Tick<L>, Bounded>>(flow_, tick, "snapshot", node_);
  }
};

// ------------------------------------------------------------------------------------------------
// Locations
// ------------------------------------------------------------------------------------------------

// The handle forward_ref returns: complete it once with the collection the reference stands for.
template <typename C>
class ForwardRef {
 public:
  ForwardRef(std::shared_ptr<detail::FlowState> flow, uint32_t node)
      : flow_(std::move(flow)), node_(node) {}
  // The reference now reads `c` (in the same tick; at the top level a cycle delivers in the
  // next tick).
  void complete(const C& c) const {
    // A mistake (completing twice) is recorded in the graph and reported by run().
    static_cast<void>(flow_->graph.complete_forward(node_, c.node_id()));
  }
  // The reference reads `c` one tick later (a tick-level cycle).
  void complete_next_tick(const C& c) const {
    static_assert(detail::kIsTick<typename C::location_type>,
                  "complete_next_tick is for collections inside a tick");
    static_assert(!detail::kIsSingletonLike<C>,
                  "a Singleton has no value in the first tick: forward_ref an Optional and "
                  "unwrap_or() it");
    C deferred = detail::add_defer<C>(flow_, c.location(), c.node_id());
    complete(deferred);
  }

 private:
  std::shared_ptr<detail::FlowState> flow_;
  uint32_t node_;
};

namespace detail {

template <typename C, typename Loc>
std::pair<ForwardRef<C>, C> forward_ref(const std::shared_ptr<FlowState>& flow, const Loc& loc) {
  static_assert(std::is_same_v<typename C::location_type, Loc>,
                "forward_ref<C>: C must live at the location (or tick) forward_ref is called on");
  ir::Node n;
  n.kind = ir::NodeKind::kForward;
  n.op = "forward_ref";
  n.location = loc.id();
  n.tick_scoped = kIsTick<Loc>;
  uint32_t id = flow->graph.add_node(std::move(n));
  return {ForwardRef<C>(flow, id), C(flow, loc, id)};
}

// What Process and Cluster share.
template <typename Self>
class Place {
 public:
  uint32_t id() const { return loc_; }
  const std::string& name() const { return flow_->graph.location(loc_).name; }

  // A stream of the elements of `range`, in order. The range is copied (or moved) into the flow
  // and iterated lazily, a batch per tick, so views such as std::views::iota cost no memory. On
  // a cluster every member iterates its own copy.
  template <std::ranges::input_range Rg>
  auto source_iter(Rg range) const {
    using T = std::ranges::range_value_t<Rg>;
    auto shared = std::make_shared<const Rg>(std::move(range));
    ir::Node n;
    n.kind = ir::NodeKind::kSource;
    n.op = "source_iter";
    n.location = loc_;
    n.make_source = [shared]() -> std::unique_ptr<ir::SourceCursor> {
      return std::make_unique<RangeCursor<Rg>>(shared);
    };
    uint32_t id = flow_->graph.add_node(std::move(n));
    return Stream<T, Self, Bounded, TotalOrder, ExactlyOnce>(flow_, self(), id);
  }

  // The current time, once per `period`, forever (a job with one ends on SIGINT/SIGTERM). When a
  // tick runs late, the missed elements come in a burst.
  template <typename Rep, typename Per>
  Stream<std::chrono::steady_clock::time_point, Self, Unbounded, TotalOrder, ExactlyOnce>
  source_interval(std::chrono::duration<Rep, Per> period, NonDet) const {
    auto d = std::chrono::duration_cast<std::chrono::steady_clock::duration>(period);
    ir::Node n;
    n.kind = ir::NodeKind::kSource;
    n.op = "source_interval";
    n.location = loc_;
    n.make_source = [d]() -> std::unique_ptr<ir::SourceCursor> {
      return std::make_unique<IntervalCursor>(d);
    };
    uint32_t id = flow_->graph.add_node(std::move(n));
    return Stream<std::chrono::steady_clock::time_point, Self, Unbounded, TotalOrder, ExactlyOnce>(
        flow_, self(), id);
  }

  // Membership of `cluster` as seen here: (member, Joined) for each member present at start and
  // each that joins later, (member, Left) when one leaves or dies. It never ends, but it does not
  // keep a job alive either.
  template <typename Tag2>
  KeyedStream<MemberId<Tag2>, MembershipEvent, Self, Unbounded, TotalOrder, ExactlyOnce>
  source_cluster_members(const Cluster<Tag2>& cluster) const {
    ir::Node n;
    n.kind = ir::NodeKind::kSource;
    n.op = "source_cluster_members";
    n.location = loc_;
    n.members_of = cluster.id();
    n.make_membership = [](ir::MembershipFeed* feed) -> std::unique_ptr<ir::SourceCursor> {
      return std::make_unique<MembershipCursor<Tag2>>(feed);
    };
    uint32_t id = flow_->graph.add_node(std::move(n));
    return {flow_, self(), id};
  }

  // A clock for this location: collections batched into it are processed a tick at a time.
  Tick<Self> tick() const { return Tick<Self>(self()); }

  // A collection to use now and define later (cycles): returns the handle and the collection.
  template <typename C>
  std::pair<ForwardRef<C>, C> forward_ref() const {
    return detail::forward_ref<C>(flow_, self());
  }

 protected:
  Place(std::shared_ptr<FlowState> flow, uint32_t loc) : flow_(std::move(flow)), loc_(loc) {}
  const Self& self() const { return static_cast<const Self&>(*this); }

 public:
  const std::shared_ptr<FlowState>& flow_state() const { return flow_; }  // internal

 protected:
  std::shared_ptr<FlowState> flow_;
  uint32_t loc_;
};

}  // namespace detail

// A location with exactly one member. `Tag` distinguishes locations in the type system.
template <typename Tag>
class Process : public detail::Place<Process<Tag>> {
 public:
  using tag = Tag;

 private:
  friend class FlowBuilder;
  Process(std::shared_ptr<detail::FlowState> flow, uint32_t loc)
      : detail::Place<Process<Tag>>(std::move(flow), loc) {}
};

// A location with many members running the same code (the count comes from the run: embedded
// --sluice-cluster name=N, or the launcher's layout).
template <typename Tag>
class Cluster : public detail::Place<Cluster<Tag>> {
 public:
  using tag = Tag;
  // The id of the member running the calling code. Call it inside an operator's function (the
  // value differs per member); calling it elsewhere is a bug and aborts with a message.
  MemberId<Tag> self_id() const {
    const auto& m = detail::current_member();
    if (m.location != this->loc_) {
      std::fprintf(stderr,
                   "sluice: %s.self_id() called outside an operator running on that cluster\n",
                   this->name().c_str());
      std::abort();
    }
    return MemberId<Tag>::from_raw(m.member);
  }

 private:
  friend class FlowBuilder;
  Cluster(std::shared_ptr<detail::FlowState> flow, uint32_t loc)
      : detail::Place<Cluster<Tag>>(std::move(flow), loc) {}
};

// A tick of location L: collections inside it are one tick's batch, complete when the tick ends.
// Every tick of a location advances together, once per runtime tick.
template <typename L>
class Tick {
 public:
  explicit Tick(L outer) : outer_(std::move(outer)) {}
  uint32_t id() const { return outer_.id(); }
  const L& outer() const { return outer_; }
  // A collection inside this tick defined later: complete() it in the same tick (no cycle) or
  // complete_next_tick() it (a cycle through ticks).
  template <typename C>
  std::pair<ForwardRef<C>, C> forward_ref() const {
    return detail::forward_ref<C>(outer_.flow_state(), *this);
  }

 private:
  L outer_;
};

// Declares the locations and collections of a program. Build it the same way in every process.
// Locations and streams refer to the builder's graph: use them while the builder lives.
class FlowBuilder {
 public:
  FlowBuilder() : state_(std::make_shared<detail::FlowState>()) {}
  FlowBuilder(const FlowBuilder&) = delete;
  FlowBuilder& operator=(const FlowBuilder&) = delete;
  FlowBuilder(FlowBuilder&&) = default;
  FlowBuilder& operator=(FlowBuilder&& o) noexcept {
    if (this != &o) {
      drop_graph();
      state_ = std::move(o.state_);
    }
    return *this;
  }
  ~FlowBuilder() { drop_graph(); }

  template <typename Tag>
  Process<Tag> process(std::string name) {
    detail::LocationName<Tag>::value = name;
    return Process<Tag>(state_,
                        state_->graph.add_location(std::move(name), ir::LocationKind::kProcess));
  }

  template <typename Tag>
  Cluster<Tag> cluster(std::string name) {
    detail::LocationName<Tag>::value = name;
    return Cluster<Tag>(state_,
                        state_->graph.add_location(std::move(name), ir::LocationKind::kCluster));
  }

  const ir::Graph& graph() const { return state_->graph; }

 private:
  // An operator's function may hold a location (to call a cluster's self_id()), and a location
  // shares the builder's state, which holds the function: a cycle. Dropping the graph when the
  // builder goes breaks it, or the whole program would outlive the builder.
  void drop_graph() {
    if (state_) state_->graph = ir::Graph{};
  }

  std::shared_ptr<detail::FlowState> state_;
};

}  // namespace sluice
