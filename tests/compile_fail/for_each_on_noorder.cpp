#include "common.hpp"
void build() {
  FlowBuilder flow;
  ordered_stream(flow).weaken_ordering().for_each([](int) {});
}
