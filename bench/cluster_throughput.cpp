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
  // One process per member under sluice-run: these are this member's.
  static int64_t seen = 0, last = -1, errors = 0;
  static std::chrono::steady_clock::time_point first_at, last_at;
  const bool bcast = pattern == "broadcast";
  on_workers.for_each([bcast, count](int64_t x) {
    if (seen == 0) first_at = std::chrono::steady_clock::now();
    if (bcast ? x != last + 1 : x <= last) ++errors;
    last = x;
    ++seen;
    // A member's last element is among the stream's last few (round_robin deals them out).
    if (x >= count - 64) last_at = std::chrono::steady_clock::now();
  });
  int rc = sluice::run(flow, argc, argv);
  const char* loc = std::getenv("SLUICE_LOCATION");
  if (loc != nullptr && std::string(loc) == "workers" && rc == 0) {
    double s = std::chrono::duration<double>(last_at - first_at).count();
    std::printf("RESULT pattern=%s member=%s count=%" PRId64 " seconds=%.6f elements_per_s=%.6g\n",
                pattern.c_str(), std::getenv("SLUICE_MEMBER"), seen, s,
                s > 0 ? static_cast<double>(seen) / s : 0.0);
    if (errors != 0 || (bcast && seen != count)) {
      std::fprintf(stderr, "worker: %" PRId64 " elements out of order or missing\n", errors);
      return 1;
    }
  }
  return rc;
}
