// Conformance: each local operator's semantics on small inputs with expected outputs, run
// embedded through run() exactly as a user runs a flow. Tick behaviour is pinned with
// --sluice-batch 1 (a source yields one element per tick, so tick t holds element t); results that
// must not depend on batching are checked with a large batch as well.
#include <gtest/gtest.h>

#include <algorithm>
#include <csignal>
#include <map>
#include <mutex>
#include <numeric>
#include <ranges>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "sluice/sluice.hpp"

namespace sluice {
namespace {

struct P {};
struct W {};

int run_flow(const FlowBuilder& flow, const std::string& batch = "1",
             std::vector<std::string> extra = {}) {
  std::vector<std::string> args = {"conformance", "--sluice-batch", batch};
  args.insert(args.end(), extra.begin(), extra.end());
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  return run(flow, static_cast<int>(args.size()), argv.data());
}

std::vector<int> one_to(int n) {
  std::vector<int> v(static_cast<size_t>(n));
  std::iota(v.begin(), v.end(), 1);
  return v;
}

template <typename T>
std::vector<T> sorted(std::vector<T> v) {
  std::sort(v.begin(), v.end());
  return v;
}

class EveryBatch : public ::testing::TestWithParam<std::string> {};
INSTANTIATE_TEST_SUITE_P(Batch, EveryBatch, ::testing::Values("1", "3", "65536"));

// ---- element-wise operators ----

TEST_P(EveryBatch, MapFilterForEachKeepOrder) {
  FlowBuilder flow;
  auto p = flow.process<P>("p");
  std::vector<int> out;
  p.source_iter(one_to(10))
      .map([](int x) { return x * 3; })
      .filter([](int x) { return x % 2 == 0; })
      .for_each([&](int x) { out.push_back(x); });
  ASSERT_EQ(run_flow(flow, GetParam()), 0);
  EXPECT_EQ(out, (std::vector<int>{6, 12, 18, 24, 30}));
}

TEST_P(EveryBatch, FilterMapFlatMapAndInspect) {
  FlowBuilder flow;
  auto p = flow.process<P>("p");
  std::vector<int> seen;
  std::vector<std::string> out;
  p.source_iter(one_to(4))
      .inspect([&](int x) { seen.push_back(x); })
      .flat_map([](int x) { return std::vector<int>(static_cast<size_t>(x), x); })
      .filter_map([](int x) -> std::optional<std::string> {
        if (x % 2 == 1) return std::nullopt;
        return std::to_string(x);
      })
      .for_each([&](const std::string& s) { out.push_back(s); });
  ASSERT_EQ(run_flow(flow, GetParam()), 0);
  EXPECT_EQ(seen, one_to(4));
  EXPECT_EQ(out, (std::vector<std::string>{"2", "2", "4", "4", "4", "4"}));
}

TEST_P(EveryBatch, EnumerateUniqueAndFirstAtTheTopLevel) {
  FlowBuilder flow;
  auto p = flow.process<P>("p");
  std::vector<std::pair<size_t, int>> en;
  std::vector<int> uq, first;
  auto s = p.source_iter(std::vector<int>{5, 3, 5, 1, 3, 7});
  s.enumerate().for_each([&](const std::pair<size_t, int>& e) { en.push_back(e); });
  s.unique().for_each([&](int x) { uq.push_back(x); });
  s.first().into_stream().for_each([&](int x) { first.push_back(x); });
  ASSERT_EQ(run_flow(flow, GetParam()), 0);
  EXPECT_EQ(en,
            (std::vector<std::pair<size_t, int>>{{0, 5}, {1, 3}, {2, 5}, {3, 1}, {4, 3}, {5, 7}}));
  EXPECT_EQ(uq, (std::vector<int>{5, 3, 1, 7}));
  EXPECT_EQ(first, (std::vector<int>{5}));
}

TEST_P(EveryBatch, FoldReduceCountCollectGiveFinalValuesOfABoundedStream) {
  FlowBuilder flow;
  auto p = flow.process<P>("p");
  std::vector<int> sum, max;
  std::vector<size_t> count;
  std::vector<std::vector<int>> all;
  auto s = p.source_iter(one_to(10));
  s.fold([] { return 0; }, [](int& acc, int x) { acc += x; }).into_stream().for_each([&](int x) {
    sum.push_back(x);
  });
  s.reduce([](int a, int b) { return std::max(a, b); }).into_stream().for_each([&](int x) {
    max.push_back(x);
  });
  s.count().into_stream().for_each([&](size_t n) { count.push_back(n); });
  s.collect_vec().into_stream().for_each([&](const std::vector<int>& v) { all.push_back(v); });
  ASSERT_EQ(run_flow(flow, GetParam()), 0);
  EXPECT_EQ(sum, (std::vector<int>{55}));
  EXPECT_EQ(max, (std::vector<int>{10}));
  EXPECT_EQ(count, (std::vector<size_t>{10}));
  EXPECT_EQ(all, (std::vector<std::vector<int>>{one_to(10)}));
}

TEST_P(EveryBatch, ReduceOfAnEmptyStreamHasNoValue) {
  FlowBuilder flow;
  auto p = flow.process<P>("p");
  std::vector<int> out;
  p.source_iter(std::vector<int>{})
      .reduce([](int a, int b) { return a + b; })
      .into_stream()
      .for_each([&](int x) { out.push_back(x); });
  std::vector<int> zero;
  p.source_iter(std::vector<int>{})
      .fold([] { return 0; }, [](int a, int b) { return a + b; })
      .into_stream()
      .for_each([&](int x) { zero.push_back(x); });
  ASSERT_EQ(run_flow(flow, GetParam()), 0);
  EXPECT_TRUE(out.empty());
  EXPECT_EQ(zero, (std::vector<int>{0}));
}

// ---- ticks ----

TEST(Ticks, FoldInsideATickResetsEveryTick) {
  FlowBuilder flow;
  auto p = flow.process<P>("p");
  auto tick = p.tick();
  std::vector<int> per_tick;
  p.source_iter(one_to(5))
      .batch(tick, nondet("one element per tick with --sluice-batch 1"))
      .fold([] { return 0; }, [](int& a, int x) { a += x; })
      .all_ticks()
      .for_each([&](int x) { per_tick.push_back(x); });
  ASSERT_EQ(run_flow(flow, "1"), 0);
  EXPECT_EQ(per_tick, (std::vector<int>{1, 2, 3, 4, 5}));
}

TEST_P(EveryBatch, TickBatchesPartitionTheStream) {
  FlowBuilder flow;
  auto p = flow.process<P>("p");
  auto tick = p.tick();
  std::vector<int> sums;
  std::vector<int> all;
  auto b = p.source_iter(one_to(100)).batch(tick, nondet("any batching"));
  b.fold([] { return 0; }, [](int& a, int x) { a += x; }).all_ticks().for_each([&](int x) {
    sums.push_back(x);
  });
  b.all_ticks().for_each([&](int x) { all.push_back(x); });
  ASSERT_EQ(run_flow(flow, GetParam()), 0);
  EXPECT_EQ(all, one_to(100));
  EXPECT_EQ(std::accumulate(sums.begin(), sums.end(), 0), 5050);
}

TEST(Ticks, FoldAtTheTopLevelPersistsAndSnapshotShowsTheRunningValue) {
  FlowBuilder flow;
  auto p = flow.process<P>("p");
  auto tick = p.tick();
  std::vector<int> running;
  p.source_iter(one_to(5))
      .batch(tick, nondet("one per tick"))
      .all_ticks()  // an Unbounded top-level stream
      .fold([] { return 0; }, [](int& a, int x) { a += x; })
      .snapshot(tick, nondet("the value as of each tick"))
      .all_ticks()
      .for_each([&](int x) { running.push_back(x); });
  ASSERT_EQ(run_flow(flow, "1"), 0);
  // Tick 1..5 each bring one element; one more tick runs when the source is seen done.
  ASSERT_GE(running.size(), 5u);
  EXPECT_EQ(std::vector<int>(running.begin(), running.begin() + 5),
            (std::vector<int>{1, 3, 6, 10, 15}));
  for (size_t i = 5; i < running.size(); ++i) EXPECT_EQ(running[i], 15);
}

TEST(Ticks, CountEnumerateAndUniqueInsideATickRestartEachTick) {
  FlowBuilder flow;
  auto p = flow.process<P>("p");
  auto tick = p.tick();
  std::vector<size_t> counts;
  std::vector<std::pair<size_t, int>> en;
  std::vector<int> uq;
  auto b = p.source_iter(std::vector<int>{7, 7, 8}).batch(tick, nondet("one per tick"));
  b.count().all_ticks().for_each([&](size_t n) { counts.push_back(n); });
  b.enumerate().all_ticks().for_each([&](const std::pair<size_t, int>& e) { en.push_back(e); });
  b.unique().all_ticks().for_each([&](int x) { uq.push_back(x); });
  ASSERT_EQ(run_flow(flow, "1"), 0);
  EXPECT_EQ(counts, (std::vector<size_t>{1, 1, 1}));
  EXPECT_EQ(en, (std::vector<std::pair<size_t, int>>{{0, 7}, {0, 7}, {0, 8}}));
  EXPECT_EQ(uq, (std::vector<int>{7, 7, 8}));
}

TEST(Ticks, DeferTickDeliversInTheNextTick) {
  FlowBuilder flow;
  auto p = flow.process<P>("p");
  auto tick = p.tick();
  std::vector<std::pair<int, int>> pairs;
  auto b = p.source_iter(one_to(4)).batch(tick, nondet("one per tick"));
  // Each tick pairs its element with the previous tick's.
  b.cross_singleton(b.first().defer_tick()).all_ticks().for_each([&](const std::pair<int, int>& e) {
    pairs.push_back(e);
  });
  ASSERT_EQ(run_flow(flow, "1"), 0);
  EXPECT_EQ(pairs, (std::vector<std::pair<int, int>>{{2, 1}, {3, 2}, {4, 3}}));
}

TEST(Ticks, ACycleThroughDeferTickCarriesStateAcrossTicks) {
  FlowBuilder flow;
  auto p = flow.process<P>("p");
  auto tick = p.tick();
  auto [complete_prev, prev] = tick.forward_ref<Optional<int, Tick<Process<P>>, Bounded>>();
  auto total = p.source_iter(one_to(5))
                   .batch(tick, nondet("one per tick"))
                   .fold([] { return 0; }, [](int& a, int x) { a += x; })
                   .zip(prev.unwrap_or(0))
                   .map([](const std::pair<int, int>& e) { return e.first + e.second; });
  complete_prev.complete(total.defer_tick());
  std::vector<int> out;
  total.all_ticks().for_each([&](int x) { out.push_back(x); });
  ASSERT_EQ(run_flow(flow, "1"), 0);
  ASSERT_GE(out.size(), 5u);
  EXPECT_EQ(std::vector<int>(out.begin(), out.begin() + 5), (std::vector<int>{1, 3, 6, 10, 15}));
}

TEST_P(EveryBatch, ATopLevelCycleFeedsElementsBackUntilTheyDrain) {
  FlowBuilder flow;
  auto p = flow.process<P>("p");
  auto [complete_loop, loop] = p.forward_ref<Stream<int, Process<P>, Unbounded, NoOrder>>();
  // Each element comes back one smaller until it reaches 0.
  auto all = p.source_iter(std::vector<int>{3, 5}).interleave(loop);
  complete_loop.complete(all.map([](int x) { return x - 1; }).filter([](int x) { return x > 0; }));
  std::vector<int> out;
  all.assume_ordering<TotalOrder>(nondet("sorted below")).for_each([&](int x) {
    out.push_back(x);
  });
  ASSERT_EQ(run_flow(flow, GetParam()), 0);
  EXPECT_EQ(sorted(out), (std::vector<int>{1, 1, 2, 2, 3, 3, 4, 5}));
}

TEST(Ticks, ACycleInsideATickWithoutDeferTickIsRejected) {
  FlowBuilder flow;
  auto p = flow.process<P>("p");
  auto tick = p.tick();
  auto [complete_loop, loop] = tick.forward_ref<Stream<int, Tick<Process<P>>, Bounded>>();
  auto b = p.source_iter(one_to(3)).batch(tick, nondet("test")).chain(loop);
  complete_loop.complete(b.map([](int x) { return x; }));
  b.all_ticks().for_each([](int) {});
  testing::internal::CaptureStderr();
  EXPECT_EQ(run_flow(flow), 2);
  std::string err = testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("cycle inside a tick"), std::string::npos) << err;
  EXPECT_NE(err.find("defer_tick"), std::string::npos) << err;
}

TEST(Ticks, AForwardRefNeverCompletedIsRejected) {
  FlowBuilder flow;
  auto p = flow.process<P>("p");
  auto [complete_loop, loop] = p.forward_ref<Stream<int, Process<P>>>();
  loop.for_each([](int) {});
  (void)complete_loop;
  testing::internal::CaptureStderr();
  EXPECT_EQ(run_flow(flow), 2);
  std::string err = testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("never completed"), std::string::npos) << err;
}

TEST(Ticks, UnwrapOrOfATopLevelBoundedOptionalWaitsForTheFinalValue) {
  FlowBuilder flow;
  auto p = flow.process<P>("p");
  std::vector<int> sum, first;
  p.source_iter(one_to(4))
      .reduce([](int a, int b) { return a + b; })
      .unwrap_or(0)
      .into_stream()
      .for_each([&](int x) { sum.push_back(x); });
  p.source_iter(one_to(4))
      .filter([](int x) { return x > 2; })
      .first()
      .unwrap_or(-1)
      .into_stream()
      .for_each([&](int x) { first.push_back(x); });
  ASSERT_EQ(run_flow(flow, "1"), 0);
  EXPECT_EQ(sum, (std::vector<int>{10}));
  EXPECT_EQ(first, (std::vector<int>{3}));
}

TEST_P(EveryBatch, ATopLevelCycleEndsSoABoundedFoldAfterItGetsItsFinalValue) {
  FlowBuilder flow;
  auto p = flow.process<P>("p");
  auto [complete_loop, loop] = p.forward_ref<Stream<int, Process<P>, Bounded, NoOrder>>();
  auto all = p.source_iter(std::vector<int>{3, 5}).interleave(loop);
  complete_loop.complete(all.map([](int x) { return x - 1; }).filter([](int x) { return x > 0; }));
  std::vector<int> sums;
  all.fold_commutative([] { return 0; }, [](int& a, int x) { a += x; })
      .into_stream()
      .for_each([&](int x) { sums.push_back(x); });
  ASSERT_EQ(run_flow(flow, GetParam()), 0);
  EXPECT_EQ(sums, (std::vector<int>{3 + 2 + 1 + 5 + 4 + 3 + 2 + 1}));
}

// ---- pairs of collections ----

TEST_P(EveryBatch, CrossProductJoinAndAntiJoinAtTheTopLevel) {
  FlowBuilder flow;
  auto p = flow.process<P>("p");
  std::vector<std::pair<int, char>> cross;
  std::vector<std::pair<int, std::pair<std::string, int>>> joined;
  std::vector<std::pair<int, std::string>> anti;
  auto nums = p.source_iter(std::vector<int>{1, 2});
  auto chars = p.source_iter(std::vector<char>{'a', 'b', 'c'});
  nums.cross_product(chars)
      .assume_ordering<TotalOrder>(nondet("sorted below"))
      .for_each([&](const std::pair<int, char>& e) { cross.push_back(e); });
  auto names = p.source_iter(
      std::vector<std::pair<int, std::string>>{{1, "one"}, {2, "two"}, {3, "three"}, {1, "uno"}});
  auto ages = p.source_iter(std::vector<std::pair<int, int>>{{1, 10}, {3, 30}, {4, 40}});
  names.join(ages).assume_ordering<TotalOrder>(nondet("sorted below")).for_each([&](const auto& e) {
    joined.push_back(e);
  });
  names.anti_join(p.source_iter(std::vector<int>{1, 4})).for_each([&](const auto& e) {
    anti.push_back(e);
  });
  ASSERT_EQ(run_flow(flow, GetParam()), 0);
  EXPECT_EQ(sorted(cross), (std::vector<std::pair<int, char>>{
                               {1, 'a'}, {1, 'b'}, {1, 'c'}, {2, 'a'}, {2, 'b'}, {2, 'c'}}));
  EXPECT_EQ(sorted(joined), (std::vector<std::pair<int, std::pair<std::string, int>>>{
                                {1, {"one", 10}}, {1, {"uno", 10}}, {3, {"three", 30}}}));
  EXPECT_EQ(anti, (std::vector<std::pair<int, std::string>>{{2, "two"}, {3, "three"}}));
}

TEST(Ticks, CrossProductAndJoinInsideATickSeeOnlyTheTick) {
  FlowBuilder flow;
  auto p = flow.process<P>("p");
  auto tick = p.tick();
  std::vector<std::pair<int, int>> cross;
  std::vector<std::pair<int, std::pair<int, int>>> joined;
  auto a = p.source_iter(std::vector<int>{1, 2}).batch(tick, nondet("one per tick"));
  auto b = p.source_iter(std::vector<int>{10, 20}).batch(tick, nondet("one per tick"));
  a.cross_product(b)
      .all_ticks()
      .assume_ordering<TotalOrder>(nondet("one pair per tick"))
      .for_each([&](const auto& e) { cross.push_back(e); });
  auto ka = a.map([](int x) { return std::pair(x % 2, x); });
  auto kb = b.map([](int x) { return std::pair(x / 10 % 2, x); });
  ka.join(kb)
      .all_ticks()
      .assume_ordering<TotalOrder>(nondet("one per tick"))
      .for_each([&](const auto& e) { joined.push_back(e); });
  ASSERT_EQ(run_flow(flow, "1"), 0);
  // Tick 1 holds (1, 10), tick 2 holds (2, 20): no pair spans two ticks.
  EXPECT_EQ(cross, (std::vector<std::pair<int, int>>{{1, 10}, {2, 20}}));
  EXPECT_EQ(joined, (std::vector<std::pair<int, std::pair<int, int>>>{{1, {1, 10}}, {0, {2, 20}}}));
}

TEST_P(EveryBatch, CrossSingletonPairsEveryElementWithTheFinalValue) {
  FlowBuilder flow;
  auto p = flow.process<P>("p");
  std::vector<std::pair<int, int>> out;
  auto total = p.source_iter(one_to(4)).fold([] { return 0; }, [](int& a, int x) { a += x; });
  p.source_iter(std::vector<int>{7, 8}).cross_singleton(total).for_each([&](const auto& e) {
    out.push_back(e);
  });
  ASSERT_EQ(run_flow(flow, GetParam()), 0);
  EXPECT_EQ(out, (std::vector<std::pair<int, int>>{{7, 10}, {8, 10}}));
}

TEST_P(EveryBatch, ChainKeepsTheFirstStreamFirst) {
  FlowBuilder flow;
  auto p = flow.process<P>("p");
  std::vector<int> out;
  p.source_iter(one_to(5)).chain(p.source_iter(std::vector<int>{100, 200})).for_each([&](int x) {
    out.push_back(x);
  });
  ASSERT_EQ(run_flow(flow, GetParam()), 0);
  EXPECT_EQ(out, (std::vector<int>{1, 2, 3, 4, 5, 100, 200}));
}

// ---- keyed collections ----

TEST_P(EveryBatch, KeyedFoldReduceCountPerKey) {
  FlowBuilder flow;
  auto p = flow.process<P>("p");
  std::map<std::string, int> sums, maxes;
  std::map<std::string, size_t> counts;
  std::vector<std::string> keys;
  auto kv = p.source_iter(std::vector<std::pair<std::string, int>>{
                              {"a", 1}, {"b", 5}, {"a", 3}, {"c", 2}, {"b", 1}})
                .into_keyed();
  kv.fold([] { return 0; }, [](int& a, int x) { a += x; })
      .entries()
      .assume_ordering<TotalOrder>(nondet("into a map"))
      .for_each([&](const auto& e) { sums[e.first] = e.second; });
  kv.reduce([](int a, int b) { return std::max(a, b); })
      .entries()
      .assume_ordering<TotalOrder>(nondet("map"))
      .for_each([&](const auto& e) { maxes[e.first] = e.second; });
  kv.count().entries().assume_ordering<TotalOrder>(nondet("map")).for_each([&](const auto& e) {
    counts[e.first] = e.second;
  });
  kv.count()
      .keys()
      .assume_ordering<TotalOrder>(nondet("sorted"))
      .for_each([&](const std::string& k) { keys.push_back(k); });
  ASSERT_EQ(run_flow(flow, GetParam()), 0);
  EXPECT_EQ(sums, (std::map<std::string, int>{{"a", 4}, {"b", 6}, {"c", 2}}));
  EXPECT_EQ(maxes, (std::map<std::string, int>{{"a", 3}, {"b", 5}, {"c", 2}}));
  EXPECT_EQ(counts, (std::map<std::string, size_t>{{"a", 2}, {"b", 2}, {"c", 1}}));
  EXPECT_EQ(sorted(keys), (std::vector<std::string>{"a", "b", "c"}));
}

TEST(Ticks, KeyedStreamMapFilterValuesAndSnapshotOfAKeyedSingleton) {
  FlowBuilder flow;
  auto p = flow.process<P>("p");
  auto tick = p.tick();
  std::vector<int> vals;
  std::vector<std::vector<std::pair<int, int>>> snaps;
  auto kv = p.source_iter(std::vector<std::pair<int, int>>{{1, 1}, {2, 2}, {1, 3}})
                .batch(tick, nondet("one per tick"))
                .all_ticks()
                .into_keyed();
  kv.map([](int v) { return v * 10; })
      .filter([](int v) { return v > 10; })
      .values()
      .assume_ordering<TotalOrder>(nondet("sorted"))
      .for_each([&](int v) { vals.push_back(v); });
  kv.fold([] { return 0; }, [](int& a, int v) { a += v; })
      .snapshot(tick, nondet("as of each tick"))
      .entries()
      .all_ticks()
      .assume_ordering<TotalOrder>(nondet("grouped per tick below"))
      .for_each([&](const std::pair<int, int>& e) {
        if (e.first == 1) snaps.emplace_back();
        if (snaps.empty()) snaps.emplace_back();
        snaps.back().push_back(e);
      });
  ASSERT_EQ(run_flow(flow, "1"), 0);
  EXPECT_EQ(sorted(vals), (std::vector<int>{20, 30}));
  ASSERT_GE(snaps.size(), 3u);
  EXPECT_EQ(snaps[0], (std::vector<std::pair<int, int>>{{1, 1}}));
  EXPECT_EQ(snaps[1], (std::vector<std::pair<int, int>>{{1, 1}, {2, 2}}));
  EXPECT_EQ(snaps[2], (std::vector<std::pair<int, int>>{{1, 4}, {2, 2}}));
}

// ---- clusters, member ids, timers, parallelism ----

TEST(Cluster, EveryMemberRunsTheFlowAndKnowsItsOwnId) {
  FlowBuilder flow;
  auto workers = flow.cluster<W>("workers");
  std::mutex mu;
  std::vector<std::string> ids;
  workers.source_iter(std::vector<int>{1})
      .map([workers](int) { return workers.self_id(); })
      .for_each([&](MemberId<W> id) {
        std::lock_guard<std::mutex> lock(mu);
        ids.push_back(to_string(id));
      });
  ASSERT_EQ(run_flow(flow, "1", {"--sluice-cluster", "workers=4"}), 0);
  EXPECT_EQ(sorted(ids),
            (std::vector<std::string>{"MemberId<workers>(0)", "MemberId<workers>(1)",
                                      "MemberId<workers>(2)", "MemberId<workers>(3)"}));
}

TEST(MemberIds, CompareHashAndPrint) {
  auto a = MemberId<W>::from_raw(2);
  auto b = MemberId<W>::from_raw(3);
  EXPECT_EQ(a.raw(), 2u);
  EXPECT_LT(a, b);
  EXPECT_EQ(a, MemberId<W>::from_raw(2));
  std::set<MemberId<W>> s{b, a, a};
  EXPECT_EQ(s.size(), 2u);
  EXPECT_EQ(std::hash<MemberId<W>>{}(a), std::hash<MemberId<W>>{}(MemberId<W>::from_raw(2)));
}

TEST(Sources, AnIntervalTicksUntilASignalDrainsTheJob) {
  FlowBuilder flow;
  auto p = flow.process<P>("p");
  int seen = 0;
  p.source_interval(std::chrono::milliseconds(1), nondet("timer"))
      .for_each([&](std::chrono::steady_clock::time_point) {
        if (++seen == 3) std::raise(SIGINT);
      });
  EXPECT_EQ(run_flow(flow, "65536"), 128 + SIGINT);
  EXPECT_GE(seen, 3);
}

TEST(Parallel, LargeBatchesGiveTheSameResultsAsSmallOnes) {
  auto once = [](const std::string& batch) {
    FlowBuilder flow;
    auto p = flow.process<P>("p");
    int64_t sum = 0;
    int64_t n = 0;
    int64_t last = -1;
    bool ordered = true;
    p.source_iter(std::views::iota(int64_t{0}, int64_t{1} << 20))
        .map([](int64_t x) { return x * 7; })
        .filter([](int64_t x) { return x % 3 != 0; })
        .for_each([&](int64_t x) {
          ordered = ordered && x > last;
          last = x;
          sum += x;
          ++n;
        });
    EXPECT_EQ(run_flow(flow, batch), 0);
    EXPECT_TRUE(ordered);
    return std::pair(sum, n);
  };
  EXPECT_EQ(once("1048576"), once("1000"));
}

}  // namespace
}  // namespace sluice
