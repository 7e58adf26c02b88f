// Google Benchmark: the operator chain source -> map -> filter -> fold over int64 in one location,
// run through run() like a user's flow, next to a hand-written loop doing the same work in the
// same binary (the limit for this machine). scripts/bench_operators.sh prints the ratio.
//
// BM_Chain/threads:N caps the TBB arena at N threads (tbb::global_control); with 2 threads large
// batches are split across both for map and filter (fold stays sequential: it is ordered).
#include <benchmark/benchmark.h>
#include <oneapi/tbb/global_control.h>

#include <cstdint>
#include <ranges>
#include <string>
#include <vector>

#include "sluice/sluice.hpp"

namespace {

constexpr int64_t kN = int64_t{1} << 25;  // elements per run: amortizes the run's start-up

inline int64_t map_fn(int64_t x) { return x * 3 + 1; }
inline bool filter_fn(int64_t x) { return x % 5 != 0; }

void BM_HandLoop(benchmark::State& state) {
  for (auto _ : state) {
    int64_t acc = 0;
    for (int64_t i = 0; i < kN; ++i) {
      int64_t x = map_fn(i);
      if (filter_fn(x)) acc += x;
    }
    benchmark::DoNotOptimize(acc);
  }
  state.SetItemsProcessed(state.iterations() * kN);
}
BENCHMARK(BM_HandLoop)->Unit(benchmark::kMillisecond)->UseRealTime();

int64_t run_chain(int64_t n, int threads) {
  tbb::global_control limit(tbb::global_control::max_allowed_parallelism,
                            static_cast<size_t>(threads));
  sluice::FlowBuilder flow;
  auto p = flow.process<struct P>("p");
  int64_t result = 0;
  p.source_iter(std::views::iota(int64_t{0}, n))
      .map([](int64_t x) { return map_fn(x); })
      .filter([](int64_t x) { return filter_fn(x); })
      .fold([] { return int64_t{0}; }, [](int64_t& acc, int64_t x) { acc += x; })
      .into_stream()
      .for_each([&](int64_t v) { result = v; });
  std::string prog = "operator_bench", b1 = "--sluice-batch", b2 = "65536", q = "--sluice-bind",
              q2 = "none";
  char* argv[] = {prog.data(), b1.data(), b2.data(), q.data(), q2.data(), nullptr};
  if (sluice::run(flow, 5, argv) != 0) return -1;
  return result;
}

void BM_Chain(benchmark::State& state) {
  const int threads = static_cast<int>(state.range(0));
  int64_t expect = 0;
  for (int64_t i = 0; i < kN; ++i) {
    if (filter_fn(map_fn(i))) expect += map_fn(i);
  }
  for (auto _ : state) {
    int64_t got = run_chain(kN, threads);
    if (got != expect) state.SkipWithError("the chain computed a wrong sum");
  }
  state.SetItemsProcessed(state.iterations() * kN);
}
BENCHMARK(BM_Chain)->ArgName("threads")->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();

// The fixed cost of a run (start-up and shutdown of an embedded member) on an empty source.
void BM_EmptyRun(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(run_chain(0, 1));
}
BENCHMARK(BM_EmptyRun)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
