// Word count with keyed operators, and a running total per tick: the local half of a Hydro
// program. Prints each word's count (sorted), then how many words each tick saw.
//
//   ./word_count                      # embedded
//   ./word_count --sluice-batch 1     # one line per tick: see the ticks
#include <cstdio>
#include <map>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <sluice/sluice.hpp>

using namespace sluice;

int main(int argc, char** argv) {
  FlowBuilder flow;
  auto p = flow.process<struct Counter>("counter");
  auto lines = p.source_iter(
      std::vector<std::string>{"the quick brown fox", "jumps over the lazy dog", "the dog sleeps"});

  auto words = lines.flat_map([](const std::string& line) {
    std::vector<std::string> out;
    std::istringstream in(line);
    for (std::string w; in >> w;) out.push_back(w);
    return out;
  });

  // Per word: (word, 1) pairs into a keyed stream, counted per key. The stream is Bounded, so
  // the counts are final once the lines are done; entries() has no order across keys.
  std::map<std::string, size_t> counts;
  words.map([](const std::string& w) { return std::pair(w, size_t{1}); })
      .into_keyed()
      .fold([] { return size_t{0}; }, [](size_t& n, size_t one) { n += one; })
      .entries()
      .assume_ordering<TotalOrder>(nondet("collected into a sorted map"))
      .for_each([&](const std::pair<std::string, size_t>& e) { counts[e.first] = e.second; });

  // Inside a tick: how many words this tick's batch of lines held.
  auto tick = p.tick();
  std::vector<size_t> per_tick;
  words.batch(tick, nondet("a tick takes whatever lines have arrived"))
      .count()
      .all_ticks()
      .for_each([&](size_t n) { per_tick.push_back(n); });

  int rc = run(flow, argc, argv);
  for (const auto& [w, n] : counts) std::printf("%-8s %zu\n", w.c_str(), n);
  std::printf("words per tick:");
  for (size_t n : per_tick) std::printf(" %zu", n);
  std::printf("\n");
  return rc;
}
