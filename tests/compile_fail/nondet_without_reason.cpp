#include "common.hpp"
void build() {
  FlowBuilder flow;
  auto s = ordered_stream(flow);
  s.weaken_ordering().assume_ordering<TotalOrder>(NonDet{});
}
