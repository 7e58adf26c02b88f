// Typed operator bodies behind the collections of sluice/flow.hpp: each is an ir::Op built from
// a lambda that keeps the operator's state. Internal: users never name these.
//
// When state is kept: an operator inside a Tick starts afresh each tick; a top-level one keeps
// its state for the whole run. A top-level singleton shows its current value in every tick once
// it has one: an Unbounded one from its first tick (a running value), a Bounded one from the
// tick its input is done (the final value).
#pragma once

#include <algorithm>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "sluice/ir.hpp"

namespace sluice::detail {

using ir::AnyBatch;
using ir::Batch;
using ir::Chunks;
using ir::Port;
using ir::TickContext;
using ir::Vec;

// How a singleton-producing operator emits, from where it lives.
enum class Emit {
  kPerTick,  // inside a Tick: this tick's value, every tick
  kRunning,  // top level, Unbounded: the value so far, every tick
  kFinal,    // top level, Bounded: the final value, every tick from the one its input is done
};

template <typename F>
class LambdaOp final : public ir::Op {
 public:
  explicit LambdaOp(F f) : f_(std::move(f)) {}
  void run(std::span<const Port> in, Chunks& out, const TickContext& ctx) override {
    f_(in, out, ctx);
  }

 private:
  F f_;
};

template <typename F>
std::unique_ptr<ir::Op> make_op(F f) {
  return std::make_unique<LambdaOp<F>>(std::move(f));
}

template <typename T>
const Vec<T>& items(const AnyBatch& b) {
  return static_cast<const Batch<T>&>(*b).items;
}

template <typename T>
AnyBatch batch_of(Vec<T> v) {
  return std::make_shared<Batch<T>>(std::move(v));
}
template <typename T>
AnyBatch batch_of(std::initializer_list<T> v) {
  return std::make_shared<Batch<T>>(Vec<T>(v));
}
// A one-element batch (a singleton's value).
template <typename T>
AnyBatch one(T v) {
  Vec<T> items;
  items.push_back(std::move(v));
  return std::make_shared<Batch<T>>(std::move(items));
}

// Calls fn on every element of a tick's chunks, in order.
template <typename T, typename Fn>
void each(const Chunks& cs, Fn&& fn) {
  for (const auto& c : cs) {
    for (const auto& x : items<T>(c)) fn(x);
  }
}

template <typename T>
size_t count_of(const Chunks& cs) {
  size_t n = 0;
  for (const auto& c : cs) n += c->size();
  return n;
}

// The first element of a singleton/optional edge this tick, if any.
template <typename T>
const T* value_of(const Chunks& cs) {
  for (const auto& c : cs) {
    if (c->size() != 0) return &items<T>(c).front();
  }
  return nullptr;
}

// Hash for keys: std::hash, extended to pairs and tuples.
template <typename T>
struct Hash {
  size_t operator()(const T& v) const { return std::hash<T>{}(v); }
};
inline size_t hash_mix(size_t h, size_t v) {
  return h ^ (v + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2));
}
template <typename A, typename B>
struct Hash<std::pair<A, B>> {
  size_t operator()(const std::pair<A, B>& p) const {
    return hash_mix(Hash<A>{}(p.first), Hash<B>{}(p.second));
  }
};
template <typename... Ts>
struct Hash<std::tuple<Ts...>> {
  size_t operator()(const std::tuple<Ts...>& t) const {
    return std::apply(
        [](const auto&... e) {
          size_t h = 0;
          ((h = hash_mix(h, Hash<std::decay_t<decltype(e)>>{}(e))), ...);
          return h;
        },
        t);
  }
};

// Element-wise work is split across the arena's threads when a tick brings many elements and the
// function can be called concurrently (it is const-callable, like a Rust `Fn`).
inline constexpr size_t kParallelMin = size_t{1} << 15;
// Pieces of work (and the chunks sources yield) stay this small so a piece's input and output
// stay in cache and come from the allocator's free lists rather than fresh pages.
inline constexpr size_t kPiece = size_t{1} << 13;

// Runs fn(first, last, out) over each chunk (large chunks in pieces), keeping order: the output
// has one chunk per non-empty piece.
template <typename U, typename T, typename Fn>
void per_chunk(const Chunks& in, Chunks& out, const TickContext& ctx, bool parallel_ok, Fn&& fn) {
  struct Piece {
    const T* first;
    const T* last;
  };
  std::vector<Piece> pieces;
  size_t total = 0;
  for (const auto& c : in) {
    const auto& xs = items<T>(c);
    total += xs.size();
    for (size_t lo = 0; lo < xs.size(); lo += kPiece) {
      pieces.push_back({xs.data() + lo, xs.data() + std::min(xs.size(), lo + kPiece)});
    }
  }
  std::vector<std::shared_ptr<Batch<U>>> parts(pieces.size());
  auto one = [&](size_t k) {
    parts[k] = std::make_shared<Batch<U>>();
    fn(pieces[k].first, pieces[k].last, parts[k]->items);
  };
  if (parallel_ok && ctx.parallel != nullptr && total >= kParallelMin &&
      ctx.parallel->concurrency() > 1) {
    ctx.parallel->run(pieces.size(), one);
  } else {
    for (size_t k = 0; k < pieces.size(); ++k) one(k);
  }
  for (auto& p : parts) {
    if (!p->items.empty()) out.push_back(std::move(p));
  }
}

// acc = comb(acc, x) or comb(acc, x) in place, whichever the combiner is.
template <typename A, typename T, typename C>
void combine(C& comb, A& acc, const T& x) {
  if constexpr (std::is_void_v<std::invoke_result_t<C&, A&, const T&>>) {
    std::invoke(comb, acc, x);
  } else {
    acc = std::invoke(comb, std::move(acc), x);
  }
}

// A top-level value kept across ticks and shown to consumers as a one-element batch. Copy on
// write: consumers may still hold last tick's batch (e.g. a network send not yet flushed).
template <typename A>
class Cell {
 public:
  bool has() const { return b_ != nullptr; }
  void set(A v) {
    Vec<A> items;
    items.push_back(std::move(v));
    b_ = std::make_shared<Batch<A>>(std::move(items));
  }
  A& get() {
    if (b_.use_count() > 1) b_ = std::make_shared<Batch<A>>(*b_);
    return b_->items.front();
  }
  void emit(Chunks& out) const {
    if (b_) out.push_back(b_);
  }

 private:
  std::shared_ptr<Batch<A>> b_;
};

// A top-level keyed singleton (key -> value), shown as a batch of pairs in first-seen key order.
template <typename K, typename V>
class KeyedCell {
 public:
  // The value of `k`, made with init() the first time.
  template <typename Init>
  V& at(const K& k, Init& init) {
    auto it = index_.find(k);
    auto& items = mut();
    if (it == index_.end()) {
      index_.emplace(k, items.size());
      items.emplace_back(k, init());
      return items.back().second;
    }
    return items[it->second].second;
  }
  // Sets `k` to `v` unless present; returns the value slot and whether it was new.
  std::pair<V*, bool> try_put(const K& k, const V& v) {
    auto it = index_.find(k);
    auto& items = mut();
    if (it == index_.end()) {
      index_.emplace(k, items.size());
      items.emplace_back(k, v);
      return {&items.back().second, true};
    }
    return {&items[it->second].second, false};
  }
  void emit(Chunks& out) const {
    if (b_) out.push_back(b_);
  }
  void clear() {
    b_.reset();
    index_.clear();
  }

 private:
  Vec<std::pair<K, V>>& mut() {
    if (!b_) {
      b_ = std::make_shared<Batch<std::pair<K, V>>>();
    } else if (b_.use_count() > 1) {
      b_ = std::make_shared<Batch<std::pair<K, V>>>(*b_);
    }
    return b_->items;
  }
  std::shared_ptr<Batch<std::pair<K, V>>> b_;
  std::unordered_map<K, size_t, Hash<K>> index_;
};

// Whether a singleton made by an operator with emission `e` shows this tick.
inline bool shows(Emit e, bool input_done) { return e != Emit::kFinal || input_done; }

}  // namespace sluice::detail
