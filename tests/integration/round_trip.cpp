// Two processes that send to each other: p1's numbers go to p2, come back times ten, and p2 also
// streams its own numbers to p1 at the same time. p1 checks both streams arrive whole and in
// order and prints "round_trip: OK echo=N own=N". With a small --sluice-window and large
// elements (--size) both directions push back on each other at once.
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ranges>
#include <string>
#include <vector>

#include <sluice/sluice.hpp>

using namespace sluice;

int main(int argc, char** argv) {
  int64_t count = 1000;
  size_t size = 0;  // 0: int64 elements; else each element carries `size` bytes of payload
  for (int i = 1; i + 1 < argc; ++i) {
    std::string a = argv[i];
    if (a == "--count") count = std::strtoll(argv[i + 1], nullptr, 10);
    if (a == "--size") size = std::strtoull(argv[i + 1], nullptr, 10);
  }
  using Item = std::pair<int64_t, std::vector<uint8_t>>;
  auto make = [size](int64_t x) {
    return Item{x, std::vector<uint8_t>(size, static_cast<uint8_t>(x))};
  };
  FlowBuilder flow;
  auto p1 = flow.process<struct P1>("p1");
  auto p2 = flow.process<struct P2>("p2");

  int64_t echo_next = 0, own_next = 0;
  bool ok = true;
  auto expect = [&](const char* what, int64_t& next, int64_t got, const std::vector<uint8_t>& v) {
    if (ok &&
        (got != next || v.size() != size || (size > 0 && v.back() != static_cast<uint8_t>(next)))) {
      std::printf("round_trip: FAIL %s expected %" PRId64 ", got %" PRId64 "\n", what, next, got);
      ok = false;
    }
    ++next;
  };
  p1.source_iter(std::views::iota(int64_t{0}, count))
      .map(make)
      .send(p2)
      .map([](const Item& it) {
        return Item{it.first * 10, it.second};
      })
      .send(p1)
      .for_each([&](const Item& it) {
        std::vector<uint8_t> v = it.second;
        int64_t want = echo_next * 10;
        if (ok && it.first != want) {
          std::printf("round_trip: FAIL echo expected %" PRId64 ", got %" PRId64 "\n", want,
                      it.first);
          ok = false;
        }
        int64_t idx = it.first / 10;
        int64_t n = echo_next;
        expect("echo", n, idx, v);
        ++echo_next;
      });
  p2.source_iter(std::views::iota(int64_t{0}, count))
      .map(make)
      .send(p1)
      .for_each([&](const Item& it) { expect("own", own_next, it.first, it.second); });
  int rc = run(flow, argc, argv);
  if (echo_next > 0 || own_next > 0) {
    if (ok && echo_next == count && own_next == count) {
      std::printf("round_trip: OK echo=%" PRId64 " own=%" PRId64 "\n", echo_next, own_next);
    } else if (ok) {
      std::printf("round_trip: FAIL echo=%" PRId64 " own=%" PRId64 " of %" PRId64 "\n", echo_next,
                  own_next, count);
      ok = false;
    }
  }
  return rc != 0 ? rc : (ok ? 0 : 1);
}
