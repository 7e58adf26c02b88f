#include "sluice/transport/layout.hpp"

#include <algorithm>
#include <cassert>
#include <charconv>
#include <unordered_set>

namespace sluice::transport {
namespace {

constexpr uint32_t kMaxCount = 65535;

bool is_name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '.' || c == '-';
}

std::string quoted(std::string_view s) { return "'" + std::string(s) + "'"; }

}  // namespace

Layout::Layout(std::vector<LocationSpec> locations) : locations_(std::move(locations)) {
  first_.reserve(locations_.size());
  for (const LocationSpec& spec : locations_) {
    first_.push_back(total_);
    total_ += spec.count;
  }
}

Result<Layout> Layout::parse(std::string_view text) {
  if (text.empty()) {
    return make_error("expected a layout like 'leader=1,workers=4', got an empty string");
  }
  std::vector<LocationSpec> specs;
  std::unordered_set<std::string_view> seen;
  size_t pos = 0;
  while (pos <= text.size()) {
    const size_t comma = std::min(text.find(',', pos), text.size());
    const std::string_view item = text.substr(pos, comma - pos);
    const size_t eq = item.find('=');
    if (eq == std::string_view::npos) {
      return make_error("expected NAME=COUNT in layout " + quoted(text) + ", got " + quoted(item));
    }
    const std::string_view name = item.substr(0, eq);
    const std::string_view count_text = item.substr(eq + 1);
    if (name.empty()) {
      return make_error("expected a location name before '=' in layout " + quoted(text) + ", got " +
                        quoted(item));
    }
    for (char c : name) {
      if (!is_name_char(c)) {
        return make_error("expected a location name of [A-Za-z0-9_.-] in layout " + quoted(text) +
                          ", got " + quoted(name));
      }
    }
    uint32_t count = 0;
    const char* end = count_text.data() + count_text.size();
    const auto [ptr, ec] = std::from_chars(count_text.data(), end, count);
    if (count_text.empty() || ec != std::errc() || ptr != end || count < 1 || count > kMaxCount) {
      return make_error("expected a member count of 1.." + std::to_string(kMaxCount) + " for " +
                        quoted(name) + " in layout " + quoted(text) + ", got " +
                        quoted(count_text));
    }
    if (!seen.insert(name).second) {
      return make_error("expected each location once in layout " + quoted(text) + ", got " +
                        quoted(name) + " twice");
    }
    specs.push_back(LocationSpec{std::string(name), count});
    pos = comma + 1;
  }
  return Layout(std::move(specs));
}

std::optional<uint32_t> Layout::rank_of(std::string_view location, uint32_t member) const {
  for (size_t i = 0; i < locations_.size(); ++i) {
    if (locations_[i].name == location) {
      if (member >= locations_[i].count) return std::nullopt;
      return first_[i] + member;
    }
  }
  return std::nullopt;
}

std::optional<uint32_t> Layout::first_rank(std::string_view location) const {
  for (size_t i = 0; i < locations_.size(); ++i) {
    if (locations_[i].name == location) return first_[i];
  }
  return std::nullopt;
}

std::optional<uint32_t> Layout::count_of(std::string_view location) const {
  for (const LocationSpec& spec : locations_) {
    if (spec.name == location) return spec.count;
  }
  return std::nullopt;
}

MemberRef Layout::member_of(uint32_t rank) const {
  assert(rank < total_);
  // Locations are few; a linear scan over `first_` beats a search in clarity and speed here.
  size_t i = locations_.size() - 1;
  while (first_[i] > rank) --i;
  return MemberRef{locations_[i].name, rank - first_[i]};
}

std::string Layout::to_string() const {
  std::string out;
  for (const LocationSpec& spec : locations_) {
    if (!out.empty()) out += ',';
    out += spec.name;
    out += '=';
    out += std::to_string(spec.count);
  }
  return out;
}

}  // namespace sluice::transport
