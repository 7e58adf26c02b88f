// The seed's networking examples (../shared/seed/networking.rs.txt) with clusters of 4, run
// embedded over each transport: every result a doc example asserts, here as expected output.
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <mutex>
#include <ranges>
#include <string>
#include <utility>
#include <vector>

#include "sluice/sluice.hpp"

namespace sluice {
namespace {

struct P1 {};
struct P2 {};
struct Workers {};
struct Source {};
struct Destination {};

class Networking : public ::testing::TestWithParam<std::string> {
 protected:
  int run_flow(const FlowBuilder& flow, std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"networking",       "--sluice-transport", GetParam(),
                                     "--sluice-cluster", "workers=4",          "--sluice-cluster",
                                     "source=4",         "--sluice-cluster",   "destination=4"};
    args.insert(args.end(), extra.begin(), extra.end());
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    return run(flow, static_cast<int>(args.size()), argv.data());
  }
  // Collects what p2 receives, as text, from any thread.
  void add(std::string s) {
    std::lock_guard<std::mutex> lock(mu_);
    got_.push_back(std::move(s));
  }
  std::vector<std::string> results() {
    std::lock_guard<std::mutex> lock(mu_);
    auto v = got_;
    std::sort(v.begin(), v.end());
    return v;
  }

 private:
  std::mutex mu_;
  std::vector<std::string> got_;
};
INSTANTIATE_TEST_SUITE_P(Transports, Networking, ::testing::Values("shm", "tcp"));

template <typename Tag, typename T>
std::string show(const std::pair<MemberId<Tag>, T>& e) {
  if constexpr (std::is_arithmetic_v<T>) {
    return "(" + to_string(e.first) + ", " + std::to_string(e.second) + ")";
  } else {
    return "(" + to_string(e.first) + ", " + show(e.second) + ")";
  }
}

TEST_P(Networking, BroadcastFromAProcessReachesEveryMember) {
  FlowBuilder flow;
  auto p1 = flow.process<P1>("p1");
  auto p2 = flow.process<P2>("p2");
  auto workers = flow.cluster<Workers>("workers");
  p1.source_iter(std::vector<int>{123})
      .broadcast(workers, nondet("assuming stable membership"))
      .send(p2)
      .entries()
      .assume_ordering<TotalOrder>(nondet("sorted below"))
      .for_each([&](const auto& e) { add(show(e)); });
  ASSERT_EQ(run_flow(flow), 0);
  EXPECT_EQ(results(), (std::vector<std::string>{
                           "(MemberId<workers>(0), 123)", "(MemberId<workers>(1), 123)",
                           "(MemberId<workers>(2), 123)", "(MemberId<workers>(3), 123)"}));
}

TEST_P(Networking, DemuxFromAProcessSendsEachElementToTheMemberItNames) {
  FlowBuilder flow;
  auto p1 = flow.process<P1>("p1");
  auto p2 = flow.process<P2>("p2");
  auto workers = flow.cluster<Workers>("workers");
  p1.source_iter(std::vector<uint32_t>{0, 1, 2, 3})
      .map([](uint32_t x) { return std::pair(MemberId<Workers>::from_raw(x), x); })
      .demux(workers)
      .send(p2)
      .entries()
      .assume_ordering<TotalOrder>(nondet("sorted below"))
      .for_each([&](const auto& e) { add(show(e)); });
  ASSERT_EQ(run_flow(flow), 0);
  EXPECT_EQ(results(),
            (std::vector<std::string>{"(MemberId<workers>(0), 0)", "(MemberId<workers>(1), 1)",
                                      "(MemberId<workers>(2), 2)", "(MemberId<workers>(3), 3)"}));
}

TEST_P(Networking, RoundRobinFromAProcessGivesEachMemberOneElement) {
  FlowBuilder flow;
  auto p1 = flow.process<P1>("p1");
  auto p2 = flow.process<P2>("p2");
  auto workers = flow.cluster<Workers>("workers");
  std::mutex mu;
  std::vector<std::pair<uint32_t, int>> got;
  p1.source_iter(std::vector<int>{1, 2, 3, 4})
      .round_robin(workers, nondet("assuming stable membership"))
      .send(p2)
      .entries()
      .assume_ordering<TotalOrder>(nondet("sorted below"))
      .for_each([&](const std::pair<MemberId<Workers>, int>& e) {
        std::lock_guard<std::mutex> lock(mu);
        got.emplace_back(e.first.raw(), e.second);
      });
  ASSERT_EQ(run_flow(flow), 0);
  std::vector<int> values;
  std::vector<uint32_t> members;
  for (auto [m, v] : got) {
    members.push_back(m);
    values.push_back(v);
  }
  std::sort(values.begin(), values.end());
  std::sort(members.begin(), members.end());
  EXPECT_EQ(values, (std::vector<int>{1, 2, 3, 4}));
  EXPECT_EQ(members, (std::vector<uint32_t>{0, 1, 2, 3}));  // one element each
}

TEST_P(Networking, SendFromAClusterIsKeyedBySender) {
  FlowBuilder flow;
  auto p2 = flow.process<P2>("p2");
  auto workers = flow.cluster<Workers>("workers");
  auto received = workers.source_iter(std::vector<int>{1}).send(p2);
  received.entries()
      .assume_ordering<TotalOrder>(nondet("sorted below"))
      .for_each([&](const auto& e) { add(show(e)); });
  std::mutex mu;
  std::vector<int> values;
  received.values().assume_ordering<TotalOrder>(nondet("sorted below")).for_each([&](int v) {
    std::lock_guard<std::mutex> lock(mu);
    values.push_back(v);
  });
  ASSERT_EQ(run_flow(flow), 0);
  EXPECT_EQ(results(),
            (std::vector<std::string>{"(MemberId<workers>(0), 1)", "(MemberId<workers>(1), 1)",
                                      "(MemberId<workers>(2), 1)", "(MemberId<workers>(3), 1)"}));
  EXPECT_EQ(values, (std::vector<int>{1, 1, 1, 1}));
}

// What p2 prints for a Cluster->Cluster example: "(MemberId<to>(d), (MemberId<from>(s), v))" for
// every receiver d and sender s of clusters of 4, sorted as results() sorts; v = value(d, s).
std::vector<std::string> sixteen(const std::string& to, const std::string& from,
                                 const std::function<int(int d, int s)>& value) {
  std::vector<std::string> expect;
  for (int d = 0; d < 4; ++d) {
    for (int s = 0; s < 4; ++s) {
      expect.push_back("(MemberId<" + to + ">(" + std::to_string(d) + "), (MemberId<" + from +
                       ">(" + std::to_string(s) + "), " + std::to_string(value(d, s)) + "))");
    }
  }
  return expect;
}

TEST_P(Networking, BroadcastBetweenClustersGivesSixteenResults) {
  FlowBuilder flow;
  auto p2 = flow.process<P2>("p2");
  auto source = flow.cluster<Source>("source");
  auto destination = flow.cluster<Destination>("destination");
  source.source_iter(std::vector<int>{123})
      .broadcast(destination, nondet("assuming stable membership"))
      .entries()
      .send(p2)
      .entries()
      .assume_ordering<TotalOrder>(nondet("sorted below"))
      .for_each([&](const auto& e) { add(show(e)); });
  ASSERT_EQ(run_flow(flow), 0);
  EXPECT_EQ(results(), sixteen("destination", "source", [](int, int) { return 123; }));
}

TEST_P(Networking, ClusterBroadcastingToItselfReachesEveryMemberItselfIncluded) {
  // Each member broadcasts its own id to its own cluster (gossip); every member gets all four,
  // its own through memory, the others' over the transport.
  FlowBuilder flow;
  auto p2 = flow.process<P2>("p2");
  auto workers = flow.cluster<Workers>("workers");
  workers.source_iter(std::vector<int>{0})
      .map([workers](int) { return static_cast<int>(workers.self_id().raw()) * 10; })
      .broadcast(workers, nondet("assuming stable membership"))
      .entries()
      .send(p2)
      .entries()
      .assume_ordering<TotalOrder>(nondet("sorted below"))
      .for_each([&](const auto& e) { add(show(e)); });
  ASSERT_EQ(run_flow(flow), 0);
  EXPECT_EQ(results(), sixteen("workers", "workers", [](int, int s) { return s * 10; }));
}

TEST_P(Networking, RoundRobinFromAClusterToItselfDealsEveryElementOnce) {
  // Each member deals 0..7 (offset by its id) round-robin over its own cluster.
  FlowBuilder flow;
  auto p2 = flow.process<P2>("p2");
  auto workers = flow.cluster<Workers>("workers");
  workers.source_iter(std::views::iota(0, 8))
      .map([workers](int x) { return static_cast<int>(workers.self_id().raw()) * 100 + x; })
      .round_robin(workers, nondet("assuming stable membership"))
      .values()
      .send(p2)
      .values()
      .assume_ordering<TotalOrder>(nondet("sorted below"))
      .for_each([&](int v) { add(std::to_string(v)); });
  ASSERT_EQ(run_flow(flow), 0);
  std::vector<std::string> expect;
  for (int m = 0; m < 4; ++m) {
    for (int x = 0; x < 8; ++x) expect.push_back(std::to_string(m * 100 + x));
  }
  std::sort(expect.begin(), expect.end());
  EXPECT_EQ(results(), expect);
}

TEST_P(Networking, DemuxBetweenClustersGivesSixteenResults) {
  FlowBuilder flow;
  auto p2 = flow.process<P2>("p2");
  auto source = flow.cluster<Source>("source");
  auto destination = flow.cluster<Destination>("destination");
  source.source_iter(std::vector<uint32_t>{0, 1, 2, 3})
      .map([](uint32_t x) { return std::pair(MemberId<Destination>::from_raw(x), x); })
      .demux(destination)
      .entries()
      .send(p2)
      .entries()
      .assume_ordering<TotalOrder>(nondet("sorted below"))
      .for_each([&](const auto& e) { add(show(e)); });
  ASSERT_EQ(run_flow(flow), 0);
  EXPECT_EQ(results(), sixteen("destination", "source", [](int d, int) { return d; }));
}

TEST_P(Networking, RoundRobinThroughTwoClustersDeliversEveryElementOnce) {
  FlowBuilder flow;
  auto p1 = flow.process<P1>("p1");
  auto p2 = flow.process<P2>("p2");
  auto source = flow.cluster<Source>("source");
  auto destination = flow.cluster<Destination>("destination");
  std::mutex mu;
  std::vector<int> values;
  p1.source_iter(std::views::iota(0, 17))
      .round_robin(source, nondet("stable membership"))
      .round_robin(destination, nondet("stable membership"))
      .values()
      .send(p2)
      .values()
      .assume_ordering<TotalOrder>(nondet("sorted below"))
      .for_each([&](int v) {
        std::lock_guard<std::mutex> lock(mu);
        values.push_back(v);
      });
  ASSERT_EQ(run_flow(flow), 0);
  std::sort(values.begin(), values.end());
  std::vector<int> expect(17);
  for (int i = 0; i < 17; ++i) expect[static_cast<size_t>(i)] = i;
  EXPECT_EQ(values, expect);
}

TEST_P(Networking, ClusterMembersAllJoinAtStart) {
  FlowBuilder flow;
  auto p1 = flow.process<P1>("p1");
  auto workers = flow.cluster<Workers>("workers");
  p1.source_cluster_members(workers)
      .entries()
      .assume_ordering<TotalOrder>(nondet("sorted below"))
      .for_each([&](const std::pair<MemberId<Workers>, MembershipEvent>& e) {
        add("(" + to_string(e.first) + ", " + to_string(e.second) + ")");
      });
  ASSERT_EQ(run_flow(flow), 0);
  EXPECT_EQ(results(), (std::vector<std::string>{
                           "(MemberId<workers>(0), Joined)", "(MemberId<workers>(1), Joined)",
                           "(MemberId<workers>(2), Joined)", "(MemberId<workers>(3), Joined)"}));
}

// Channels downstream of deferred values and of top-level cycles still close, so jobs end.
TEST_P(Networking, ASendAfterDeferTickEndsTheJob) {
  FlowBuilder flow;
  auto p1 = flow.process<P1>("p1");
  auto p2 = flow.process<P2>("p2");
  auto tick = p1.tick();
  auto b = p1.source_iter(std::vector<int>{1, 2, 3, 4}).batch(tick, nondet("one per tick"));
  b.cross_singleton(b.first().defer_tick())
      .all_ticks()
      .send(p2)
      .for_each([&](const std::pair<int, int>& e) {
        add(std::to_string(e.first) + "," + std::to_string(e.second));
      });
  ASSERT_EQ(run_flow(flow, {"--sluice-batch", "1"}), 0);
  EXPECT_EQ(results(), (std::vector<std::string>{"2,1", "3,2", "4,3"}));
}

TEST_P(Networking, ASendAfterATopLevelCycleEndsTheJob) {
  FlowBuilder flow;
  auto p1 = flow.process<P1>("p1");
  auto p2 = flow.process<P2>("p2");
  auto [complete_loop, loop] = p1.forward_ref<Stream<int, Process<P1>, Unbounded, NoOrder>>();
  auto all = p1.source_iter(std::vector<int>{3}).interleave(loop);
  complete_loop.complete(all.map([](int x) { return x - 1; }).filter([](int x) { return x > 0; }));
  all.send(p2).assume_ordering<TotalOrder>(nondet("sorted below")).for_each([&](int x) {
    add(std::to_string(x));
  });
  ASSERT_EQ(run_flow(flow), 0);
  EXPECT_EQ(results(), (std::vector<std::string>{"1", "2", "3"}));
}

}  // namespace
}  // namespace sluice
