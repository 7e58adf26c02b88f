#include "sluice/transport/layout.hpp"

#include <gtest/gtest.h>

namespace sluice::transport {
namespace {

TEST(Layout, ParsesLocationsInRankOrder) {
  auto layout = Layout::parse("leader=1,workers=4");
  ASSERT_TRUE(layout) << layout.error();

  ASSERT_EQ(layout->locations().size(), 2u);
  EXPECT_EQ(layout->locations()[0].name, "leader");
  EXPECT_EQ(layout->locations()[0].count, 1u);
  EXPECT_EQ(layout->locations()[1].name, "workers");
  EXPECT_EQ(layout->locations()[1].count, 4u);
  EXPECT_EQ(layout->size(), 5u);
}

TEST(Layout, MapsRanksToMembersAndBack) {
  auto layout = Layout::parse("leader=1,workers=4,ext=2");
  ASSERT_TRUE(layout) << layout.error();

  for (uint32_t rank = 0; rank < layout->size(); ++rank) {
    const MemberRef m = layout->member_of(rank);
    EXPECT_EQ(layout->rank_of(m.location, m.member), rank) << m.to_string();
  }
  EXPECT_EQ(layout->member_of(0).to_string(), "leader/0");
  EXPECT_EQ(layout->member_of(1).to_string(), "workers/0");
  EXPECT_EQ(layout->member_of(4).to_string(), "workers/3");
  EXPECT_EQ(layout->member_of(5).to_string(), "ext/0");
  EXPECT_EQ(layout->member_of(6).to_string(), "ext/1");
}

TEST(Layout, AnswersQueriesAboutLocations) {
  auto layout = Layout::parse("p1=1,p2=3");
  ASSERT_TRUE(layout) << layout.error();

  EXPECT_EQ(layout->first_rank("p2"), 1u);
  EXPECT_EQ(layout->count_of("p2"), 3u);
  EXPECT_EQ(layout->rank_of("p2", 2), 3u);
  EXPECT_EQ(layout->rank_of("p2", 3), std::nullopt);
  EXPECT_EQ(layout->rank_of("nope", 0), std::nullopt);
  EXPECT_EQ(layout->first_rank("nope"), std::nullopt);
  EXPECT_EQ(layout->count_of("nope"), std::nullopt);
}

TEST(Layout, ToStringRoundTrips) {
  const std::string text = "a.b-c_1=2,Z=65535";
  auto layout = Layout::parse(text);
  ASSERT_TRUE(layout) << layout.error();

  EXPECT_EQ(layout->to_string(), text);
  auto again = Layout::parse(layout->to_string());
  ASSERT_TRUE(again) << again.error();
  EXPECT_EQ(again->size(), layout->size());
}

TEST(Layout, ConstructsFromSpecs) {
  const Layout layout({{"p1", 1}, {"p2", 2}});

  EXPECT_EQ(layout.size(), 3u);
  EXPECT_EQ(layout.to_string(), "p1=1,p2=2");
  EXPECT_EQ(layout.member_of(2).to_string(), "p2/1");
}

TEST(Layout, DefaultIsEmpty) {
  const Layout layout;

  EXPECT_EQ(layout.size(), 0u);
  EXPECT_EQ(layout.to_string(), "");
}

struct BadLayout {
  const char* text;
  const char* message_part;
};

class LayoutRejects : public ::testing::TestWithParam<BadLayout> {};

TEST_P(LayoutRejects, WithAMessageSayingWhatArrived) {
  auto layout = Layout::parse(GetParam().text);

  ASSERT_FALSE(layout) << GetParam().text;
  EXPECT_NE(layout.error().find(GetParam().message_part), std::string::npos) << layout.error();
}

INSTANTIATE_TEST_SUITE_P(
    Layout, LayoutRejects,
    ::testing::Values(BadLayout{"", "empty"}, BadLayout{"p1", "NAME=COUNT"},
                      BadLayout{"=3", "location name"}, BadLayout{"p 1=1", "'p 1'"},
                      BadLayout{"p1=0", "1..65535"}, BadLayout{"p1=65536", "'65536'"},
                      BadLayout{"p1=-1", "'-1'"}, BadLayout{"p1=1x", "'1x'"},
                      BadLayout{"p1=", "''"}, BadLayout{"p1=1,", "''"},
                      BadLayout{"p1=1,,p2=1", "''"}, BadLayout{"p1=1,p1=2", "twice"},
                      BadLayout{"p1=99999999999", "'99999999999'"}));

}  // namespace
}  // namespace sluice::transport
