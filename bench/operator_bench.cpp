// Google Benchmark: the operator chain source -> map -> filter -> fold over int64 in one location,
// run through run() like a user's flow, next to a hand-written loop doing the same work in the
// same binary (the limit for this machine). scripts/bench_operators.sh prints the ratio.
//
// BM_Chain/threads:N caps the TBB arena at N threads (tbb::global_control). The chain fuses into
// one ordered loop (fold is sequential), so a second thread cannot help it; BM_HeavyMap shows
// what data parallelism gives when a materialized map is the work.
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
BENCHMARK(BM_Chain)
    ->ArgName("threads")
    ->Arg(1)
    ->Arg(2)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// Data parallelism: a map heavy enough to matter, whose output is materialized (count reads the
// mapped stream, so the map runs as its own node, split across the arena's threads).
int64_t heavy(int64_t x) {
  uint64_t v = static_cast<uint64_t>(x) | 1;
  for (int i = 0; i < 64; ++i) v = v * 6364136223846793005ULL + 1442695040888963407ULL;
  return static_cast<int64_t>(v >> 1);
}

void BM_HeavyMap(benchmark::State& state) {
  const int threads = static_cast<int>(state.range(0));
  constexpr int64_t kHeavyN = int64_t{1} << 22;
  for (auto _ : state) {
    tbb::global_control limit(tbb::global_control::max_allowed_parallelism,
                              static_cast<size_t>(threads));
    sluice::FlowBuilder flow;
    auto p = flow.process<struct P>("p");
    size_t n = 0;
    p.source_iter(std::views::iota(int64_t{0}, kHeavyN))
        .map([](int64_t x) { return heavy(x); })
        .count()
        .into_stream()
        .for_each([&](size_t c) { n = c; });
    std::string prog = "operator_bench", b1 = "--sluice-batch", b2 = "65536", q = "--sluice-bind",
                q2 = "none";
    char* argv[] = {prog.data(), b1.data(), b2.data(), q.data(), q2.data(), nullptr};
    if (sluice::run(flow, 5, argv) != 0 || n != static_cast<size_t>(kHeavyN)) {
      state.SkipWithError("the heavy map run failed");
    }
  }
  state.SetItemsProcessed(state.iterations() * kHeavyN);
}
BENCHMARK(BM_HeavyMap)
    ->ArgName("threads")
    ->Arg(1)
    ->Arg(2)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// The fixed cost of a run (start-up and shutdown of an embedded member) on an empty source.
void BM_EmptyRun(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(run_chain(0, 1));
}
BENCHMARK(BM_EmptyRun)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
