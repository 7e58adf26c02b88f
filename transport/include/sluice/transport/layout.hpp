// Layout: which locations a job has and how many members each, in rank order.
// "leader=1,workers=4" gives ranks 0 (leader/0) and 1..4 (workers/0..3). Every process of a job
// parses the same string and so agrees on ranks without talking.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "sluice/transport/result.hpp"

namespace sluice::transport {

struct LocationSpec {
  std::string name;
  uint32_t count = 0;
};

struct MemberRef {
  std::string location;
  uint32_t member = 0;
  std::string to_string() const { return location + "/" + std::to_string(member); }
};

class Layout {
 public:
  Layout() = default;
  explicit Layout(std::vector<LocationSpec> locations);

  // Parses "name=count[,name=count...]"; names are [A-Za-z0-9_.-]+, counts 1..65535, no repeats.
  static Result<Layout> parse(std::string_view text);

  const std::vector<LocationSpec>& locations() const { return locations_; }
  uint32_t size() const { return total_; }  // number of ranks
  std::optional<uint32_t> rank_of(std::string_view location, uint32_t member) const;
  std::optional<uint32_t> first_rank(std::string_view location) const;
  std::optional<uint32_t> count_of(std::string_view location) const;
  MemberRef member_of(uint32_t rank) const;  // rank < size()
  std::string to_string() const;             // the parseable form

 private:
  std::vector<LocationSpec> locations_;
  std::vector<uint32_t> first_;
  uint32_t total_ = 0;
};

}  // namespace sluice::transport
