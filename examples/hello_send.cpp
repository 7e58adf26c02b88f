// The demo the README runs first: a producer squares 1..10 and sends them to a consumer, which
// prints each value and, at the end of the stream, a sum. Runs embedded by default; the same
// binary runs one process per location under `sluice-run -n producer=1 -n consumer=1 -- ...`.
#include <cinttypes>
#include <cstdio>
#include <ranges>

#include <sluice/sluice.hpp>

using namespace sluice;

int main(int argc, char** argv) {
  // Under sluice-run stdout is a pipe, which C buffers in blocks: ask for whole lines, so each
  // line reaches the launcher (and its [member] prefix) when it is printed.
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  FlowBuilder flow;
  auto producer = flow.process<struct Producer>("producer");
  auto consumer = flow.process<struct Consumer>("consumer");

  int64_t sum = 0;
  int64_t seen = 0;
  producer.source_iter(std::views::iota(int64_t{1}, int64_t{11}))
      .map([](int64_t x) { return x * x; })
      .send(consumer)
      .for_each([&](int64_t x) {
        sum += x;
        std::printf("consumer got %" PRId64 "\n", x);
        if (++seen == 10) std::printf("sum of squares 1..10 = %" PRId64 "\n", sum);
      });
  return run(flow, argc, argv);
}
