#include "common.hpp"
void build() {
  FlowBuilder flow;
  auto s = ordered_stream(flow);
  s.batch(s.location().tick());
}
