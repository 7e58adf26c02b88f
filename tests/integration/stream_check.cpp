// A Process->Process stream that checks itself: p1 sends 0..count-1 (int64, or byte vectors of
// --size bytes whose first 8 bytes hold the index); p2 verifies every element arrives once and in
// order and prints "stream_check: OK count=N" (exit 0), or what went wrong (exit 1).
// With --ready-after K --ready-file F, p2 writes its pid to F after K elements (for kill tests).
#include <unistd.h>

#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ranges>
#include <string>
#include <thread>

#include <sluice/sluice.hpp>

using namespace sluice;

int main(int argc, char** argv) {
  int64_t count = 1000;
  size_t size = 0;  // 0: int64 elements
  int64_t ready_after = -1;
  std::string ready_file;
  bool shared = false;  // sluice::Bytes elements (zero-copy) instead of std::vector
  int stall_ms = 0;     // p2 sleeps this long in its first for_each call (a long tick)
  // Our own flags; --sluice-* ones are left for run().
  for (int i = 1; i + 1 < argc; ++i) {
    std::string a = argv[i];
    if (a == "--count") count = std::strtoll(argv[i + 1], nullptr, 10);
    if (a == "--size") size = std::strtoull(argv[i + 1], nullptr, 10);
    if (a == "--ready-after") ready_after = std::strtoll(argv[i + 1], nullptr, 10);
    if (a == "--ready-file") ready_file = argv[i + 1];
    if (a == "--shared") shared = std::strcmp(argv[i + 1], "1") == 0;
    if (a == "--stall-ms") stall_ms = std::atoi(argv[i + 1]);
  }
  FlowBuilder flow;
  auto p1 = flow.process<struct P1>("p1");
  auto p2 = flow.process<struct P2>("p2");
  int64_t next = 0;
  bool ok = true;
  auto check = [&](int64_t v) {
    if (next == 0 && stall_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(stall_ms));
    if (ok && v != next) {
      std::printf("stream_check: FAIL expected %" PRId64 ", got %" PRId64 "\n", next, v);
      ok = false;
    }
    ++next;
    if (next == ready_after && !ready_file.empty()) {
      // Written whole, then renamed: a reader never sees a partial pid.
      std::string tmp = ready_file + ".tmp";
      if (FILE* f = std::fopen(tmp.c_str(), "w")) {
        std::fprintf(f, "%d\n", static_cast<int>(getpid()));
        std::fclose(f);
        std::rename(tmp.c_str(), ready_file.c_str());
      }
    }
  };
  auto source = p1.source_iter(std::views::iota(int64_t{0}, count));
  if (size != 0 && shared) {
    source
        .map([size](int64_t x) {
          std::vector<uint8_t> v(size, static_cast<uint8_t>(x));
          std::memcpy(v.data(), &x, sizeof x);
          return Bytes(std::move(v));
        })
        .send(p2)
        .for_each([&, size](const Bytes& v) {
          int64_t x = -1;
          if (v.size() == size) std::memcpy(&x, v.data(), sizeof x);
          if (v.size() != size || v[size - 1] != static_cast<uint8_t>(x)) x = -1;
          check(x);
        });
  } else if (size == 0) {
    source.map([](int64_t x) { return x; }).send(p2).for_each(check);
  } else {
    source
        .map([size](int64_t x) {
          std::vector<uint8_t> v(size, static_cast<uint8_t>(x));
          std::memcpy(v.data(), &x, sizeof x);
          return v;
        })
        .send(p2)
        .for_each([&, size](const std::vector<uint8_t>& v) {
          int64_t x = -1;
          if (v.size() == size) std::memcpy(&x, v.data(), sizeof x);
          if (v.size() != size || v.back() != static_cast<uint8_t>(x)) x = -1;
          check(x);
        });
  }
  int rc = run(flow, argc, argv);
  if (rc >= 128 && next > 0) {  // drained after a signal: what arrived must be an in-order prefix
    std::printf("stream_check: %s count=%" PRId64 "\n", ok ? "PREFIX" : "FAIL", next);
    return rc;
  }
  // Only the member that hosts p2 saw elements (embedded runs host both).
  if (next > 0 || count == 0) {
    if (ok && next == count) {
      std::printf("stream_check: OK count=%" PRId64 "\n", next);
    } else if (ok) {
      std::printf("stream_check: FAIL received %" PRId64 " of %" PRId64 "\n", next, count);
      ok = false;
    }
  }
  return rc != 0 ? rc : (ok ? 0 : 1);
}
