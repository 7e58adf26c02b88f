// The IR a flow records, and its dumps.
#include <gtest/gtest.h>

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
