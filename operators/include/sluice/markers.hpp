// Guarantees carried in a collection's type, as in Hydro, and NonDet: the token every
// nondeterministic operator takes, so that each place a program accepts nondeterminism says why.
//
//   auto b = s.batch(tick, nondet("a tick takes whatever has arrived"));
#pragma once

#include <string_view>

namespace sluice {

// Boundedness: a Bounded collection is finite and known to be complete at some point (inside a
// tick: the tick's batch; at the top level: a finite source). Unbounded ones grow forever.
struct Unbounded {};
struct Bounded {};
// Ordering: TotalOrder streams deliver in a deterministic order; NoOrder ones do not.
struct TotalOrder {};
struct NoOrder {};
// Retries: ExactlyOnce streams carry each element once; AtLeastOnce ones may repeat some.
struct ExactlyOnce {};
struct AtLeastOnce {};

// Proof that the caller accepts a nondeterministic result, with the reason. Made only by
// nondet("why").
class NonDet {
 public:
  std::string_view reason() const { return reason_; }

 private:
  friend constexpr NonDet nondet(std::string_view why);
  constexpr explicit NonDet(std::string_view why) : reason_(why) {}
  std::string_view reason_;
};

constexpr NonDet nondet(std::string_view why) { return NonDet(why); }

}  // namespace sluice
