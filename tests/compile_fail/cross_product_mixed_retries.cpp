#include "common.hpp"
void build() {
  FlowBuilder flow;
  auto s = ordered_stream(flow);
  s.cross_product(s.weaker_retries());  // ExactlyOnce x AtLeastOnce: no ExactlyOnce result
}
