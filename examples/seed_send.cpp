// The seed's first doc example: p1 sends 1, 2, 3 to p2; p2 sees exactly 1, 2, 3 in order.
//
//   ./seed_send                                   # embedded
//   sluice-run -n p1=1 -n p2=1 -- ./seed_send     # one process per location
#include <cstdio>
#include <vector>

#include <sluice/sluice.hpp>

using namespace sluice;

int main(int argc, char** argv) {
  FlowBuilder flow;
  auto p1 = flow.process<struct P1>("p1");
  auto p2 = flow.process<struct P2>("p2");
  auto numbers = p1.source_iter(std::vector<int>{1, 2, 3});
  auto on_p2 = numbers.send(p2);
  on_p2.for_each([](int x) { std::printf("%d\n", x); });
  return run(flow, argc, argv);
}
