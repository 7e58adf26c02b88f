// Placement: shares planned from the hwloc topology, threads pinned into them (arena threads and
// the Node's progress thread), each binding read back with hwloc. Written for any machine: a
// test that needs more cores or NUMA nodes than this one has skips.
#include <gtest/gtest.h>
#include <hwloc.h>
#include <sys/types.h>

#include <oneapi/tbb/blocked_range.h>
#include <oneapi/tbb/parallel_for.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "placement.hpp"
#include "sluice/transport/buffer_pool.hpp"
#include "sluice/transport/node.hpp"
#include "sluice/transport/placement.hpp"

namespace sluice {
namespace {

using transport::BindMode;
using transport::CpuShare;

const transport::Topology& machine() {
  auto t = transport::machine_topology();
  EXPECT_TRUE(t) << t.error();
  return **t;
}

size_t machine_cores() {
  auto s = transport::plan_share(BindMode::kNone, 0, 1);
  EXPECT_TRUE(s) << s.error();
  return s ? s->cores.size() : 0;
}

bool disjoint(const std::vector<unsigned>& a, const std::vector<unsigned>& b) {
  return std::none_of(a.begin(), a.end(),
                      [&](unsigned x) { return std::binary_search(b.begin(), b.end(), x); });
}

bool inside(const std::vector<unsigned>& part, const std::vector<unsigned>& whole) {
  return std::includes(whole.begin(), whole.end(), part.begin(), part.end());
}

// The binding of thread `tid` of this process, read with hwloc.
std::vector<unsigned> binding_of(pid_t tid) {
  std::vector<unsigned> out;
  hwloc_bitmap_t set = hwloc_bitmap_alloc();
  if (hwloc_get_proc_cpubind(machine().get(), tid, set, HWLOC_CPUBIND_THREAD) == 0) {
    for (int i = hwloc_bitmap_first(set); i >= 0; i = hwloc_bitmap_next(set, i)) {
      out.push_back(static_cast<unsigned>(i));
    }
  }
  hwloc_bitmap_free(set);
  return out;
}

std::set<pid_t> thread_ids() {
  std::set<pid_t> out;
  for (const auto& e : std::filesystem::directory_iterator("/proc/self/task")) {
    out.insert(static_cast<pid_t>(std::stoi(e.path().filename().string())));
  }
  return out;
}

// A share strictly smaller than the machine (the second of two), or none on a one-core machine.
std::optional<CpuShare> second_of_two() {
  if (machine_cores() < 2) return std::nullopt;
  auto s = transport::plan_share(BindMode::kCore, 1, 2);
  EXPECT_TRUE(s) << s.error();
  if (!s) return std::nullopt;
  return *s;
}

// ---- planning --------------------------------------------------------------------------------

TEST(Placement, CoreSharesOfTwoProcessesAreDisjointAndInsideTheAllowedSet) {
  if (machine_cores() < 2) GTEST_SKIP() << "needs two cores";
  const auto& allowed = machine().allowed_pus();

  auto a = transport::plan_share(BindMode::kCore, 0, 2);
  auto b = transport::plan_share(BindMode::kCore, 1, 2);

  ASSERT_TRUE(a) << a.error();
  ASSERT_TRUE(b) << b.error();
  EXPECT_TRUE(a->binds());
  EXPECT_FALSE(a->pus.empty());
  EXPECT_FALSE(b->pus.empty());
  EXPECT_TRUE(disjoint(a->pus, b->pus)) << a->describe() << " / " << b->describe();
  EXPECT_TRUE(disjoint(a->cores, b->cores));
  EXPECT_TRUE(inside(a->pus, allowed));
  EXPECT_TRUE(inside(b->pus, allowed));
  EXPECT_FALSE(a->numa_nodes.empty());
}

TEST(Placement, AutoPinsCoresWhenEveryProcessGetsOneAndNothingBeyond) {
  size_t cores = machine_cores();
  ASSERT_GE(cores, 1u);

  auto fits = transport::plan_share(BindMode::kAuto, 0, static_cast<uint32_t>(cores));
  auto crowded = transport::plan_share(BindMode::kAuto, 0, static_cast<uint32_t>(cores + 1));

  ASSERT_TRUE(fits) << fits.error();
  ASSERT_TRUE(crowded) << crowded.error();
  EXPECT_EQ(fits->mode, BindMode::kCore);
  EXPECT_EQ(fits->cores.size(), 1u);
  EXPECT_EQ(crowded->mode, BindMode::kNone);
  EXPECT_FALSE(crowded->binds());
  EXPECT_EQ(crowded->pus, machine().allowed_pus());
}

TEST(Placement, CoreWithMoreProcessesThanCoresIsAnError) {
  uint32_t too_many = static_cast<uint32_t>(machine_cores() + 1);

  auto s = transport::plan_share(BindMode::kCore, 0, too_many);

  ASSERT_FALSE(s);
  EXPECT_NE(s.error().find("cores available"), std::string::npos) << s.error();
}

TEST(Placement, ALocalIndexOutsideTheProcessCountIsAnError) {
  EXPECT_FALSE(transport::plan_share(BindMode::kCore, 2, 2));
  EXPECT_FALSE(transport::plan_share(BindMode::kNone, 0, 0));
}

TEST(Placement, CoresOfAMachineAreSplitIntoContiguousBlocksCoveringAll) {
  auto topo = transport::Topology::synthetic("numa:2 core:4 pu:2");  // 8 cores, 16 PUs
  ASSERT_TRUE(topo) << topo.error();

  std::vector<CpuShare> shares;
  for (uint32_t i = 0; i < 3; ++i) {
    auto s = transport::plan_share(*topo, BindMode::kCore, i, 3);
    ASSERT_TRUE(s) << s.error();
    shares.push_back(*s);
  }

  std::vector<unsigned> all;
  for (size_t i = 0; i < shares.size(); ++i) {
    EXPECT_GE(shares[i].cores.size(), 2u);
    EXPECT_LE(shares[i].cores.size(), 3u);
    EXPECT_EQ(shares[i].pus.size(), 2 * shares[i].cores.size()) << "both PUs of each core";
    for (size_t j = 0; j < i; ++j) EXPECT_TRUE(disjoint(shares[i].pus, shares[j].pus));
    all.insert(all.end(), shares[i].pus.begin(), shares[i].pus.end());
  }
  std::sort(all.begin(), all.end());
  EXPECT_EQ(all, topo->allowed_pus());
  EXPECT_EQ(shares[0].describe(), "cores 0-1 (PU 0-3), numa 0");
  EXPECT_EQ(shares[1].numa_nodes, (std::vector<unsigned>{0, 1})) << "cores 2-4 span both nodes";
}

TEST(Placement, NumaGivesEachProcessANodeRoundRobin) {
  auto topo = transport::Topology::synthetic("numa:2 core:4 pu:2");
  ASSERT_TRUE(topo) << topo.error();

  auto first = transport::plan_share(*topo, BindMode::kNuma, 0, 3);
  auto second = transport::plan_share(*topo, BindMode::kNuma, 1, 3);
  auto third = transport::plan_share(*topo, BindMode::kNuma, 2, 3);

  ASSERT_TRUE(first && second && third);
  EXPECT_EQ(first->numa_nodes, std::vector<unsigned>{0});
  EXPECT_EQ(second->numa_nodes, std::vector<unsigned>{1});
  EXPECT_EQ(first->pus.size(), 8u);
  EXPECT_TRUE(disjoint(first->pus, second->pus));
  EXPECT_EQ(third->pus, first->pus) << "a third process shares node 0";
}

TEST(Placement, NumaOnAOneNodeMachineIsSharedByEveryone) {
  auto topo = transport::Topology::synthetic("core:4 pu:1");
  ASSERT_TRUE(topo) << topo.error();

  auto a = transport::plan_share(*topo, BindMode::kNuma, 0, 2);
  auto b = transport::plan_share(*topo, BindMode::kNuma, 1, 2);

  ASSERT_TRUE(a && b);
  EXPECT_EQ(a->pus, topo->allowed_pus());
  EXPECT_EQ(b->pus, topo->allowed_pus());
}

TEST(Placement, AMalformedSyntheticTopologyIsRejected) {
  auto topo = transport::Topology::synthetic("cores everywhere");

  ASSERT_FALSE(topo);
  EXPECT_NE(topo.error().find("cores everywhere"), std::string::npos);
}

// ---- binding ---------------------------------------------------------------------------------

TEST(Placement, ABoundThreadReadsBackItsShare) {
  auto share = second_of_two();
  if (!share) GTEST_SKIP() << "needs two cores to make a share";
  std::vector<unsigned> seen;
  std::string error;

  std::thread t([&] {
    if (auto s = transport::bind_current_thread(*share); !s) error = s.error();
    if (auto b = transport::current_thread_binding()) seen = *b;
  });
  t.join();

  EXPECT_EQ(error, "");
  EXPECT_EQ(seen, share->pus);
}

TEST(Placement, AShareThatDoesNotBindLeavesTheThreadAsItIs) {
  auto none = transport::plan_share(BindMode::kNone, 0, 1);
  ASSERT_TRUE(none) << none.error();
  std::vector<unsigned> before, after;

  std::thread t([&] {
    (void)transport::bind_current_thread_to({machine().allowed_pus().front()});
    before = transport::current_thread_binding().value();
    EXPECT_TRUE(transport::bind_current_thread(*none));
    after = transport::current_thread_binding().value();
  });
  t.join();

  EXPECT_EQ(after, before);
}

// ---- the member's arena ----------------------------------------------------------------------

class ArenaPlacement : public ::testing::TestWithParam<uint32_t> {};  // local process count

// Each chunk waits until every arena thread holds one, so all of them take part; each records
// the binding it reads back.
TEST_P(ArenaPlacement, EveryArenaThreadRunsInsideTheShare) {
  const uint32_t count = GetParam();
  if (machine_cores() < count) GTEST_SKIP() << "needs " << count << " cores";
  auto p = detail::MemberPlacement::create(BindMode::kCore, count - 1, count);
  ASSERT_TRUE(p) << p.error();
  auto& placement = **p;
  const int n = placement.concurrency();
  std::mutex mu;
  std::map<std::thread::id, std::vector<unsigned>> bindings;  // guarded by mu
  std::atomic<int> arrived{0};

  placement.execute([&] {
    tbb::parallel_for(
        tbb::blocked_range<int>(0, n, 1),
        [&](const tbb::blocked_range<int>&) {
          auto b = transport::current_thread_binding();
          {
            std::lock_guard lock(mu);
            if (bindings.emplace(std::this_thread::get_id(), b ? *b : std::vector<unsigned>{})
                    .second) {
              arrived.fetch_add(1);
            }
          }
          // A watchdog, not a bar: workers that never come fail the count below.
          auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
          while (arrived.load() < n && std::chrono::steady_clock::now() < deadline) {
            std::this_thread::yield();
          }
        },
        tbb::simple_partitioner());
  });

  EXPECT_TRUE(placement.binds());
  EXPECT_EQ(bindings.size(), static_cast<size_t>(n)) << placement.describe();
  for (const auto& [id, pus] : bindings) {
    EXPECT_FALSE(pus.empty());
    EXPECT_TRUE(placement.share().contains(pus)) << placement.describe();
  }
}

INSTANTIATE_TEST_SUITE_P(LocalCounts, ArenaPlacement, ::testing::Values(1u, 2u, 4u));

TEST(MemberPlacement, ExecuteRestoresTheCallersBinding) {
  auto share = second_of_two();
  if (!share) GTEST_SKIP() << "needs two cores to make a share";
  auto p = detail::MemberPlacement::create(BindMode::kCore, 1, 2);
  ASSERT_TRUE(p) << p.error();
  std::vector<unsigned> before, during, after;

  std::thread t([&] {
    before = transport::current_thread_binding().value();
    (*p)->execute([&] { during = transport::current_thread_binding().value(); });
    after = transport::current_thread_binding().value();
  });
  t.join();

  EXPECT_EQ(during, share->pus);
  EXPECT_EQ(after, before);
}

TEST(MemberPlacement, NonePinsNothing) {
  auto p = detail::MemberPlacement::create(BindMode::kNone, 0, 1);
  ASSERT_TRUE(p) << p.error();
  std::vector<unsigned> before, during;

  std::thread t([&] {
    (void)transport::bind_current_thread_to({machine().allowed_pus().back()});
    before = transport::current_thread_binding().value();
    (*p)->execute([&] { during = transport::current_thread_binding().value(); });
  });
  t.join();

  EXPECT_FALSE((*p)->binds());
  EXPECT_EQ((*p)->concurrency(), static_cast<int>(machine().allowed_pus().size()));
  EXPECT_EQ(during, before);
  EXPECT_NE((*p)->describe().find("not pinned"), std::string::npos) << (*p)->describe();
}

TEST(MemberPlacement, DescribeSaysWhatAutoChoseAndWhy) {
  uint32_t crowd = static_cast<uint32_t>(machine_cores() + 1);

  auto p = detail::MemberPlacement::create(BindMode::kAuto, 0, crowd);

  ASSERT_TRUE(p) << p.error();
  std::string line = (*p)->describe();
  EXPECT_NE(line.find("bind none (auto: " + std::to_string(crowd) + " processes"),
            std::string::npos)
      << line;
}

TEST(MemberPlacement, DescribeNamesTheLocalRankAndTheModeAutoChose) {
  if (machine_cores() < 2) GTEST_SKIP() << "needs two cores";

  auto p = detail::MemberPlacement::create(BindMode::kAuto, 1, 2);

  ASSERT_TRUE(p) << p.error();
  EXPECT_EQ((*p)->describe().rfind("placement: local 1/2, bind core (auto): ", 0), 0u)
      << (*p)->describe();
}

// ---- the transport's threads -----------------------------------------------------------------

class ProgressPlacement : public ::testing::TestWithParam<transport::ProgressMode> {};

// The thread connect() starts (progress, or keepalive in spin mode) pins itself at its start;
// the test finds it as the thread that appeared and waits (bounded) for its binding.
TEST_P(ProgressPlacement, TheNodesOwnThreadRunsInsideTheShare) {
  auto share = second_of_two();
  if (!share) GTEST_SKIP() << "needs two cores to make a share";
  transport::TransportOptions opts;
  opts.kind = transport::TransportKind::kShm;
  opts.progress = GetParam();
  opts.cpu_share = share;
  auto node = transport::Node::create(opts, 0, 1, "placement-test", "m/0");
  ASSERT_TRUE(node) << node.error();
  transport::PeerInfo self;
  self.location = "m";
  self.address = (*node)->worker_address();
  std::set<pid_t> before = thread_ids();

  ASSERT_TRUE((*node)->connect({self}));

  std::vector<pid_t> started;
  for (pid_t tid : thread_ids()) {
    if (before.count(tid) == 0) started.push_back(tid);
  }
  ASSERT_FALSE(started.empty()) << "connect() started no thread";
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);  // watchdog
  auto all_inside = [&] {
    return std::all_of(started.begin(), started.end(), [&](pid_t tid) {
      auto pus = binding_of(tid);
      return !pus.empty() && share->contains(pus);
    });
  };
  while (!all_inside() && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
  for (pid_t tid : started) {
    EXPECT_TRUE(share->contains(binding_of(tid)))
        << "thread " << tid << " vs " << share->describe();
  }
  (*node)->shutdown();
}

INSTANTIATE_TEST_SUITE_P(Modes, ProgressPlacement,
                         ::testing::Values(transport::ProgressMode::kAdaptive,
                                           transport::ProgressMode::kSpin),
                         [](const auto& mode) {
                           return std::string(transport::to_string(mode.param));
                         });

// ---- receive buffers -------------------------------------------------------------------------

TEST(BufferPool, FreshBuffersLandOnTheAllocatingThreadsNumaNode) {
  if (machine().numa_node_count() < 2) GTEST_SKIP() << "one NUMA node: nothing to choose";
  auto far = transport::plan_share(BindMode::kNuma, 1, 2);
  ASSERT_TRUE(far) << far.error();
  ASSERT_EQ(far->numa_nodes.size(), 1u);
  std::vector<unsigned> where;

  std::thread t([&] {
    ASSERT_TRUE(transport::bind_current_thread(*far));
    // A size class nothing else in this test allocates, so the buffer is fresh.
    auto buf = transport::pool_allocate(size_t{24} << 20);
    std::memset(buf.get(), 1, size_t{24} << 20);
    hwloc_bitmap_t nodes = hwloc_bitmap_alloc();
    if (hwloc_get_area_memlocation(machine().get(), buf.get(), size_t{24} << 20, nodes,
                                   HWLOC_MEMBIND_BYNODESET) == 0) {
      for (int i = hwloc_bitmap_first(nodes); i >= 0; i = hwloc_bitmap_next(nodes, i)) {
        where.push_back(static_cast<unsigned>(i));
      }
    }
    hwloc_bitmap_free(nodes);
  });
  t.join();

  EXPECT_EQ(where, far->numa_nodes);
}

}  // namespace
}  // namespace sluice
