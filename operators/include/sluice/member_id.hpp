// MemberId<Tag>: the id of one member of the location tagged `Tag` (a Cluster, or a Process whose
// only member is 0). Ids are dense at start (0..n-1) and never reused: a member that joins a
// running job gets a fresh one.
//
//   auto id = MemberId<Worker>::from_raw(2);
//   assert(id.raw() == 2);
//   std::string s = to_string(id);   // "MemberId<workers>(2)" once flow.cluster<Worker>("workers")
//
// A plain value: trivially copyable, compares, hashes (std::hash), prints. Thread-safe to use;
// the location name used for printing is set when the flow declares the location.
#pragma once

#include <compare>
#include <cstdint>
#include <functional>
#include <ostream>
#include <string>
#include <typeinfo>

namespace sluice {

namespace detail {
// The name a flow gave the location tagged `Tag` (printing only).
template <typename Tag>
struct LocationName {
  static inline std::string value;
};
}  // namespace detail

template <typename Tag>
class MemberId {
 public:
  using tag = Tag;
  constexpr MemberId() = default;
  static constexpr MemberId from_raw(uint32_t raw) { return MemberId(raw); }
  constexpr uint32_t raw() const { return raw_; }
  friend constexpr auto operator<=>(const MemberId&, const MemberId&) = default;
  friend constexpr bool operator==(const MemberId&, const MemberId&) = default;

 private:
  constexpr explicit MemberId(uint32_t raw) : raw_(raw) {}
  uint32_t raw_ = 0;
};

template <typename Tag>
std::string to_string(const MemberId<Tag>& id) {
  const std::string& name = detail::LocationName<Tag>::value;
  return "MemberId<" + (name.empty() ? std::string(typeid(Tag).name()) : name) + ">(" +
         std::to_string(id.raw()) + ")";
}

template <typename Tag>
std::ostream& operator<<(std::ostream& os, const MemberId<Tag>& id) {
  return os << to_string(id);
}

}  // namespace sluice

template <typename Tag>
struct std::hash<sluice::MemberId<Tag>> {
  size_t operator()(const sluice::MemberId<Tag>& id) const noexcept {
    return std::hash<uint32_t>{}(id.raw());
  }
};
