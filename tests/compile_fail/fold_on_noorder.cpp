#include "common.hpp"
void build() {
  FlowBuilder flow;
  ordered_stream(flow).weaken_ordering().fold([] { return 0; }, [](int& a, int x) { a += x; });
}
