// Codec micro-benchmarks: what encoding and decoding a batch costs next to a plain memcpy of the
// same bytes, in one binary so the ratios come from one run. Sweeps the batch / element size.
//
//   ./sluice_codec_bench --benchmark_min_time=0.2
//
// The edge codec (detail::make_edge_codec) is what the runtime calls at flush time: a batch of
// fixed-size elements is one memcpy; std::vector<uint8_t> elements are a length prefix plus a
// memcpy each; decode allocates one vector per element.
#include <benchmark/benchmark.h>

#include <sluice/flow.hpp>

#include <cstring>
#include <memory>
#include <vector>

namespace {

template <typename T>
sluice::ir::AnyBatch make_batch(std::vector<T> items) {
  auto b = std::make_shared<sluice::ir::Batch<T>>();
  b->items = std::move(items);
  return b;
}

// Codec<int64_t>, a whole batch, as the runtime encodes it into a frame.
void BM_Int64BatchEncode(benchmark::State& state) {
  const auto n = static_cast<size_t>(state.range(0));
  std::vector<int64_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<int64_t>(i);
  auto batch = make_batch(std::move(v));
  auto codec = sluice::detail::make_edge_codec<int64_t>();
  std::vector<uint8_t> out(codec.encoded_size(*batch));
  for (auto _ : state) {
    uint8_t* end = codec.encode(*batch, out.data(), nullptr);
    benchmark::DoNotOptimize(end);
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(n));
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(n * sizeof(int64_t)));
}
BENCHMARK(BM_Int64BatchEncode)->Arg(1)->Arg(64)->Arg(4096)->Arg(65536);

void BM_Int64BatchDecode(benchmark::State& state) {
  const auto n = static_cast<size_t>(state.range(0));
  std::vector<int64_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<int64_t>(i);
  auto batch = make_batch(std::move(v));
  auto codec = sluice::detail::make_edge_codec<int64_t>();
  std::vector<uint8_t> wire(codec.encoded_size(*batch));
  codec.encode(*batch, wire.data(), nullptr);
  for (auto _ : state) {
    auto r = codec.decode(wire, static_cast<uint32_t>(n), nullptr);
    benchmark::DoNotOptimize(r);
  }
  state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(n));
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(n * sizeof(int64_t)));
}
BENCHMARK(BM_Int64BatchDecode)->Arg(1)->Arg(64)->Arg(4096)->Arg(65536);

// Codec<std::vector<uint8_t>>: a batch of 16 elements of `size` bytes (a 1 MiB tick at 64 KiB).
void BM_BytesBatchEncode(benchmark::State& state) {
  const auto size = static_cast<size_t>(state.range(0));
  const size_t n = 16;
  auto batch = make_batch(std::vector<std::vector<uint8_t>>(n, std::vector<uint8_t>(size, 7)));
  auto codec = sluice::detail::make_edge_codec<std::vector<uint8_t>>();
  std::vector<uint8_t> out(codec.encoded_size(*batch));
  for (auto _ : state) {
    uint8_t* end = codec.encode(*batch, out.data(), nullptr);
    benchmark::DoNotOptimize(end);
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(n));
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(n * size));
}
BENCHMARK(BM_BytesBatchEncode)->Arg(64)->Arg(4096)->Arg(64 << 10)->Arg(1 << 20);

void BM_BytesBatchDecode(benchmark::State& state) {
  const auto size = static_cast<size_t>(state.range(0));
  const size_t n = 16;
  auto batch = make_batch(std::vector<std::vector<uint8_t>>(n, std::vector<uint8_t>(size, 7)));
  auto codec = sluice::detail::make_edge_codec<std::vector<uint8_t>>();
  std::vector<uint8_t> wire(codec.encoded_size(*batch));
  codec.encode(*batch, wire.data(), nullptr);
  for (auto _ : state) {
    auto r = codec.decode(wire, static_cast<uint32_t>(n), nullptr);
    benchmark::DoNotOptimize(r);
  }
  state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(n));
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(n * size));
}
BENCHMARK(BM_BytesBatchDecode)->Arg(64)->Arg(4096)->Arg(64 << 10)->Arg(1 << 20);

// One Codec<std::vector<uint8_t>> element on its own (no batch machinery).
void BM_BytesElementEncode(benchmark::State& state) {
  const auto size = static_cast<size_t>(state.range(0));
  std::vector<uint8_t> v(size, 7);
  std::vector<uint8_t> out(sluice::Codec<std::vector<uint8_t>>::size(v));
  for (auto _ : state) {
    uint8_t* end = sluice::Codec<std::vector<uint8_t>>::encode(v, out.data());
    benchmark::DoNotOptimize(end);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(size));
}
BENCHMARK(BM_BytesElementEncode)->Arg(64 << 10);

// The reference: memcpy of the same payload bytes (16 x size, like the batch benchmarks).
void BM_Memcpy(benchmark::State& state) {
  const auto size = static_cast<size_t>(state.range(0));
  std::vector<uint8_t> src(size, 7), dst(size);
  for (auto _ : state) {
    std::memcpy(dst.data(), src.data(), size);
    benchmark::DoNotOptimize(dst.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(size));
}
BENCHMARK(BM_Memcpy)->Arg(8)->Arg(512)->Arg(64 << 10)->Arg(1 << 20)->Arg(16 << 20);

}  // namespace

BENCHMARK_MAIN();
