// Codec micro-benchmarks: what encoding and decoding a batch costs next to a plain memcpy of the
// same bytes, in one binary so the ratios come from one run. Sweeps the batch / element size.
//
//   ./sluice_codec_bench --benchmark_min_time=0.2
//   scripts/bench_codec.sh     # medians of 3 at 64 KiB, as ratios to memcpy
//
// The edge codec (detail::make_edge_codec) is what the runtime calls at flush time: a batch of
// fixed-size elements is one memcpy; std::vector<uint8_t> elements are a length prefix plus a
// memcpy each; decode allocates one vector per element.
#include <benchmark/benchmark.h>

#include <iterator>

#include <sluice/flat.hpp>
#include <sluice/flow.hpp>

#include <cstring>
#include <memory>
#include <type_traits>
#include <vector>

#include "codec_bench_generated.h"

namespace {

template <typename T>
sluice::ir::AnyBatch make_batch(std::vector<T> items) {
  auto b = std::make_shared<sluice::ir::Batch<T>>();
  b->items.assign(std::make_move_iterator(items.begin()), std::make_move_iterator(items.end()));
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

// Sizes in payload bytes, shared by the element codecs below and BM_Memcpy.
void payload_sizes(benchmark::internal::Benchmark* b) {
  for (int64_t size : {64, 4096, 64 << 10, 1 << 20}) b->Arg(size);
}

// Codec<std::vector<int64_t>>: a length and one memcpy each way (decode allocates the vector).
std::vector<int64_t> int64_payload(size_t bytes) {
  std::vector<int64_t> v(bytes / sizeof(int64_t));
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<int64_t>(i);
  return v;
}

// Codec<Flat<Payload>>: a length, the buffer (a table around `bytes` of int64), padding.
sluice::Flat<bench::Payload> flat_payload(size_t bytes) {
  flatbuffers::FlatBufferBuilder fbb(bytes + 64);
  auto values = fbb.CreateVector(int64_payload(bytes));
  fbb.Finish(bench::CreatePayload(fbb, values));
  return sluice::Flat<bench::Payload>(std::move(fbb));
}

// Encoding one element `make(size)` that carries `size` payload bytes.
template <typename Make>
void BM_Encode(benchmark::State& state, Make make) {
  const auto size = static_cast<size_t>(state.range(0));
  const auto v = make(size);
  using C = sluice::Codec<std::remove_const_t<decltype(v)>>;
  std::vector<uint8_t> out(C::size(v));
  for (auto _ : state) {
    uint8_t* end = C::encode(v, out.data());
    benchmark::DoNotOptimize(end);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(size));
}

// Decoding it into a fresh element, as the runtime does for each one received. With `in_frame`
// the Reader has an owner, as for a received frame, so a decoder may point into it.
template <typename Make>
void BM_Decode(benchmark::State& state, Make make, bool in_frame) {
  const auto size = static_cast<size_t>(state.range(0));
  const auto v = make(size);
  using T = std::remove_const_t<decltype(v)>;
  auto wire = std::make_shared<std::vector<uint8_t>>(sluice::Codec<T>::size(v));
  sluice::Codec<T>::encode(v, wire->data());
  std::shared_ptr<const void> owner;
  if (in_frame) owner = wire;
  for (auto _ : state) {
    sluice::Reader in(*wire, owner);
    T out;
    bool ok = sluice::Codec<T>::decode(in, out);
    benchmark::DoNotOptimize(ok);
    benchmark::DoNotOptimize(&out);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(size));
}

BENCHMARK_CAPTURE(BM_Encode, VectorInt64, int64_payload)->Apply(payload_sizes);
BENCHMARK_CAPTURE(BM_Decode, VectorInt64, int64_payload, true)->Apply(payload_sizes);
BENCHMARK_CAPTURE(BM_Encode, Flat, flat_payload)->Apply(payload_sizes);
// No owner (bytes the receiver cannot keep): copy into aligned memory, then verify.
BENCHMARK_CAPTURE(BM_Decode, FlatCopy, flat_payload, false)->Apply(payload_sizes);
// A received frame: verify only; the table stays where it arrived (zero-copy).
BENCHMARK_CAPTURE(BM_Decode, FlatInPlace, flat_payload, true)->Apply(payload_sizes);

// The reference: memcpy of `size` payload bytes, the sizes the element codecs above sweep.
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
BENCHMARK(BM_Memcpy)->Arg(8)->Arg(512)->Apply(payload_sizes)->Arg(16 << 20);

}  // namespace

BENCHMARK_MAIN();
