// Compiles: the legal versions of every case in this folder (proves the harness itself works).
#include "common.hpp"

void build() {
  FlowBuilder flow;
  auto s = ordered_stream(flow);
  auto tick = s.location().tick();
  s.first();
  s.enumerate();
  s.for_each([](int) {});
  s.collect_vec();
  s.cross_product(s);
  s.fold([] { return 0; }, [](int& a, int x) { a += x; });
  s.weaken_ordering().assume_ordering<TotalOrder>(nondet("test")).for_each([](int) {});
  s.batch(tick, nondet("test")).all_ticks();
}
