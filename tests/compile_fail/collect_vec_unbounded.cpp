#include "common.hpp"
void build() {
  FlowBuilder flow;
  auto s = ordered_stream(flow);
  s.batch(s.location().tick(), nondet("test")).all_ticks().collect_vec();
}
