// sluice_cluster_throughput: a leader streams int64 0..N-1 to a cluster of workers.
//
//   sluice-run -n leader=1 -n workers=4 -- ./sluice_cluster_throughput --pattern broadcast
//       --count 20000000 --sluice-transport shm
//
// --pattern broadcast: every worker gets every element; round_robin: element i to worker i % n.
// Each worker checks what it gets (broadcast: 0, 1, 2, ... exactly; round_robin: increasing) and
// times its stream from its first element to its last, then prints
//
//   RESULT pattern=broadcast member=K count=C seconds=S elements_per_s=E
//
// and exits 1 on a missing, repeated or out-of-order element. scripts/bench_cluster.sh runs it
// next to the Process->Process stream and Open MPI in the same run.
#include <sluice/sluice.hpp>

#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <ranges>
#include <string>

namespace {
struct Leader {};
struct Workers {};

// What this worker observes. Touched only by its sink (a serial TBB node).
struct Checker {
  int64_t seen = 0, last = -1, errors = 0, count = 0;
  std::chrono::steady_clock::time_point first_at, last_at;
  void mark(bool at_end) {
    if (seen == 0) first_at = std::chrono::steady_clock::now();
    if (at_end) last_at = std::chrono::steady_clock::now();
  }
};
Checker g_check;
}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  std::string pattern = "broadcast";
  int64_t count = 20'000'000;
  for (int i = 1; i + 1 < argc; ++i) {
    std::string a = argv[i];
    if (a == "--pattern") pattern = argv[i + 1];
    if (a == "--count") count = std::strtoll(argv[i + 1], nullptr, 10);
  }
  if (pattern != "broadcast" && pattern != "round_robin") {
    std::fprintf(stderr, "--pattern broadcast|round_robin\n");
    return 2;
  }
  sluice::FlowBuilder flow;
  auto leader = flow.process<Leader>("leader");
  auto workers = flow.cluster<Workers>("workers");
  auto numbers = leader.source_iter(std::views::iota(int64_t{0}, count));
  auto on_workers = pattern == "broadcast"
                        ? numbers.broadcast(workers, sluice::nondet("stable membership"))
                        : numbers.round_robin(workers, sluice::nondet("stable membership"));
  // One process per member under sluice-run: these are this member's. Broadcast checks each
  // element exactly as sluice_throughput's P->P receiver does (value == index, the clock read
  // only at the first and the last element), so the two rates compare the transports, not the
  // checks.
  g_check.count = count;
  if (pattern == "broadcast") {
    on_workers.for_each([](const int64_t& x) {
      Checker& c = g_check;
      c.mark(c.seen + 1 == c.count);
      if (x != c.seen) ++c.errors;
      ++c.seen;
    });
  } else {
    on_workers.for_each([](const int64_t& x) {
      Checker& c = g_check;
      // A member's last element is among the stream's last few (round_robin deals them out).
      c.mark(x >= c.count - 64);
      if (x <= c.last) ++c.errors;
      c.last = x;
      ++c.seen;
    });
  }
  int rc = sluice::run(flow, argc, argv);
  const char* loc = std::getenv("SLUICE_LOCATION");
  if (loc != nullptr && std::string(loc) == "workers" && rc == 0) {
    const Checker& c = g_check;
    double s = std::chrono::duration<double>(c.last_at - c.first_at).count();
    std::printf("RESULT pattern=%s member=%s count=%" PRId64 " seconds=%.6f elements_per_s=%.6g\n",
                pattern.c_str(), std::getenv("SLUICE_MEMBER"), c.seen, s,
                s > 0 ? static_cast<double>(c.seen) / s : 0.0);
    if (c.errors != 0 || (pattern == "broadcast" && c.seen != count)) {
      std::fprintf(stderr, "worker: %" PRId64 " elements out of order or missing\n", c.errors);
      return 1;
    }
  }
  return rc;
}
