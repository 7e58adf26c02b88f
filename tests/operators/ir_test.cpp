// The IR a flow records, and its dumps.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "sluice/flow.hpp"

namespace sluice {
namespace {

FlowBuilder seed_flow() {
  FlowBuilder flow;
  auto p1 = flow.process<struct P1>("p1");
  auto p2 = flow.process<struct P2>("p2");
  p1.source_iter(std::vector<int>{1, 2, 3})
      .map([](int x) { return x + 1; })
      .send(p2)
      .for_each([](int) {});
  return flow;
}

TEST(Ir, BuildingAFlowRecordsNodesInOrderWithEdgeIds) {
  auto flow = seed_flow();
  const auto& nodes = flow.graph().nodes();
  ASSERT_EQ(nodes.size(), 4u);
  EXPECT_EQ(nodes[0].op, "source_iter");
  EXPECT_EQ(nodes[1].op, "map");
  EXPECT_EQ(nodes[2].op, "send");
  EXPECT_EQ(nodes[2].edge, 0u);
  EXPECT_EQ(nodes[2].location, 0u);
  EXPECT_EQ(nodes[2].to_location, 1u);
  EXPECT_EQ(nodes[3].op, "for_each");
  EXPECT_EQ(nodes[3].location, 1u);
  EXPECT_EQ(nodes[3].inputs, (std::vector<uint32_t>{2}));
}

TEST(Ir, TextDumpListsEveryNode) {
  auto text = seed_flow().graph().dump();
  EXPECT_NE(text.find("n2 send @p1 -> @p2 (edge 0"), std::string::npos) << text;
  EXPECT_NE(text.find("n3 for_each @p2 <- n2"), std::string::npos) << text;
}

TEST(Ir, DotDumpHasALocationClusterAndEveryEdge) {
  auto dot = seed_flow().graph().dump_dot();
  EXPECT_EQ(dot.rfind("digraph sluice {", 0), 0u) << dot;
  EXPECT_NE(dot.find("label=\"p2\""), std::string::npos) << dot;
  EXPECT_NE(dot.find("n1 -> n2;"), std::string::npos) << dot;
  EXPECT_NE(dot.find("n2 -> n3;"), std::string::npos) << dot;
  EXPECT_NE(dot.find("send (edge 0)"), std::string::npos) << dot;
}

TEST(Ir, MermaidDumpHasASubgraphPerLocationAndEveryEdge) {
  auto mm = seed_flow().graph().dump_mermaid();
  EXPECT_EQ(mm.rfind("flowchart LR", 0), 0u) << mm;
  EXPECT_NE(mm.find("subgraph L1[\"p2\"]"), std::string::npos) << mm;
  EXPECT_NE(mm.find("n0 --> n1"), std::string::npos) << mm;
  EXPECT_NE(mm.find("n2 --> n3"), std::string::npos) << mm;
}

}  // namespace
}  // namespace sluice

namespace sluice::ir {
namespace {

// A received frame's elements (a pool buffer holding just them) become a batch as they are.
TEST(BatchMemory, APoolBufferOfExactlyTheElementsIsAdoptedWithoutACopy) {
  constexpr size_t kCount = 100000;
  auto mem = transport::pool_allocate(kCount * sizeof(int64_t));
  for (size_t i = 0; i < kCount; ++i) {
    int64_t v = static_cast<int64_t>(i) * 7;
    std::memcpy(mem.get() + i * sizeof v, &v, sizeof v);
  }
  const uint8_t* raw = mem.get();
  Vec<int64_t> items;
  ASSERT_TRUE(adopt_into(items, mem, kCount));
  EXPECT_FALSE(mem) << "the batch owns it now";
  EXPECT_EQ(reinterpret_cast<const uint8_t*>(items.data()), raw);
  ASSERT_EQ(items.size(), kCount);
  for (size_t i = 0; i < kCount; ++i) ASSERT_EQ(items[i], static_cast<int64_t>(i) * 7) << i;
  items.push_back(1);  // grows like any batch: the adopted buffer goes back to the pool
  EXPECT_EQ(items.back(), 1);
}

TEST(BatchMemory, BuffersTheAllocatorWouldNotHaveDrawnAreNotAdopted) {
  // Too small for the pool, or of another size class: left to the caller, who copies.
  auto small = transport::pool_allocate(10 * sizeof(int64_t));
  Vec<int64_t> a;
  EXPECT_FALSE(adopt_into(a, small, 10));
  EXPECT_TRUE(small);
  auto big = transport::pool_allocate(size_t{1} << 22);
  Vec<int64_t> b;
  EXPECT_FALSE(adopt_into(b, big, 3000));
  EXPECT_TRUE(big);
  EXPECT_TRUE(a.empty() && b.empty());
  // Nothing is left pending for a later allocation on this thread.
  Vec<int64_t> c(3000);
  EXPECT_NE(reinterpret_cast<uint8_t*>(c.data()), big.get());
}

}  // namespace
}  // namespace sluice::ir

namespace sluice::ir {
namespace {

struct WithDefault {
  int64_t v = 7;  // default initialization writes this: adopting would overwrite the bytes
};

TEST(BatchMemory, ATypeWhoseDefaultInitializationWritesIsNotAdopted) {
  constexpr size_t kCount = 4096;
  auto mem = transport::pool_allocate(kCount * sizeof(WithDefault));
  std::memset(mem.get(), 0x22, kCount * sizeof(WithDefault));
  Vec<WithDefault> v;
  EXPECT_FALSE(adopt_into(v, mem, kCount));
  EXPECT_TRUE(mem) << "left to the caller, who copies";
}

}  // namespace
}  // namespace sluice::ir
