// Cluster programs the integration tests run under sluice-run (one process per member).
//
//   --mode seed        p1=1 p2=1 workers=4: the seed's Process<->Cluster examples in one flow;
//                      p2 prints one line per element it receives ("broadcast (MemberId<...>(i),
//                      123)")
//   --mode broadcast   leader=1 workers=4: the leader broadcasts 0..count-1 (int64); each worker
//                      checks it gets them once and in order and prints
//                      "worker K: OK count=N" (or what went wrong); the leader prints membership
//                      events ("leader: MemberId<workers>(K) Left")
//   --mode rr          the same with round_robin: each worker checks its elements increase
//   --mode self        p2=1 workers=4: each worker broadcasts its id * 10 to its own cluster; p2
//                      prints "self MemberId<workers>(R) got (MemberId<workers>(S), 10*S)"
//   --victim K --ready-after E --ready-file F: worker K writes its pid to F after E elements
//   --sleep-us U --slow K: worker K sleeps U microseconds every 10000 elements (a slow consumer);
//                      the leader prints its peak resident memory at the end
//                      ("leader: peak_rss_kb=")
//   --until-join K --tail T  (broadcast, rr) instead of --count: the leader streams 0, 1, 2, ...
//                      until it sees member K of workers join (sluice-run --join), then T more;
//                      workers print "first=F last=L sum=S" too, and a late member's stream may
//                      start anywhere (it joined mid-stream) but must then be contiguous
//                      (broadcast) or increasing (rr)
//   --progress-file F  worker 0 writes F once it has received 100000 elements (and goes on)
//   --die-member K     worker K exits 3 at once, before it joins the job
#include <unistd.h>

#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <ranges>
#include <string>
#include <thread>

#include <sluice/sluice.hpp>

using namespace sluice;

namespace {

struct P1 {};
struct P2 {};
struct Leader {};
struct Workers {};

long peak_rss_kb() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::atol(line.c_str() + 6);
  }
  return -1;
}

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  std::string mode = "seed", ready_file, progress_file;
  int64_t count = 1000, ready_after = -1;
  uint32_t victim = UINT32_MAX, slow = UINT32_MAX, until_join = UINT32_MAX;
  int64_t tail = 0;
  int sleep_us = 0;
  for (int i = 1; i + 1 < argc; ++i) {
    std::string a = argv[i];
    if (a == "--mode") mode = argv[i + 1];
    if (a == "--count") count = std::strtoll(argv[i + 1], nullptr, 10);
    if (a == "--victim") victim = static_cast<uint32_t>(std::atoi(argv[i + 1]));
    if (a == "--ready-after") ready_after = std::strtoll(argv[i + 1], nullptr, 10);
    if (a == "--ready-file") ready_file = argv[i + 1];
    if (a == "--slow") slow = static_cast<uint32_t>(std::atoi(argv[i + 1]));
    if (a == "--sleep-us") sleep_us = std::atoi(argv[i + 1]);
    if (a == "--until-join") until_join = static_cast<uint32_t>(std::atoi(argv[i + 1]));
    if (a == "--tail") tail = std::strtoll(argv[i + 1], nullptr, 10);
    if (a == "--progress-file") progress_file = argv[i + 1];
    if (a == "--die-member") {
      const char* loc = std::getenv("SLUICE_LOCATION");
      const char* mem = std::getenv("SLUICE_MEMBER");
      if (loc != nullptr && mem != nullptr && std::string(loc) == "workers" &&
          std::string(mem) == argv[i + 1]) {
        return 3;
      }
    }
  }
  FlowBuilder flow;
  if (mode == "seed") {
    auto p1 = flow.process<P1>("p1");
    auto p2 = flow.process<P2>("p2");
    auto workers = flow.cluster<Workers>("workers");
    auto show = [](const char* tag) {
      return [tag](const std::pair<MemberId<Workers>, int>& e) {
        std::printf("%s (%s, %d)\n", tag, to_string(e.first).c_str(), e.second);
      };
    };
    p1.source_iter(std::vector<int>{123})
        .broadcast(workers, nondet("stable membership"))
        .send(p2)
        .entries()
        .assume_ordering<TotalOrder>(nondet("printed in arrival order"))
        .for_each(show("broadcast"));
    p1.source_iter(std::vector<int>{0, 1, 2, 3})
        .map([](int x) {
          return std::pair(MemberId<Workers>::from_raw(static_cast<uint32_t>(x)), x);
        })
        .demux(workers)
        .send(p2)
        .entries()
        .assume_ordering<TotalOrder>(nondet("printed in arrival order"))
        .for_each(show("demux"));
    p1.source_iter(std::vector<int>{1, 2, 3, 4})
        .round_robin(workers, nondet("stable membership"))
        .send(p2)
        .values()
        .assume_ordering<TotalOrder>(nondet("printed in arrival order"))
        .for_each([](int v) { std::printf("round_robin %d\n", v); });
    workers.source_iter(std::vector<int>{1})
        .send(p2)
        .entries()
        .assume_ordering<TotalOrder>(nondet("printed in arrival order"))
        .for_each(show("send"));
    return run(flow, argc, argv);
  }

  if (mode == "seed-cc") {  // p1=1 p2=1 source=4 destination=4: the Cluster->Cluster examples
    struct Src {};
    struct Dst {};
    auto p1 = flow.process<P1>("p1");
    auto p2 = flow.process<P2>("p2");
    auto source = flow.cluster<Src>("source");
    auto destination = flow.cluster<Dst>("destination");
    auto show = [](const char* tag) {
      return [tag](const std::pair<MemberId<Dst>, std::pair<MemberId<Src>, int>>& e) {
        std::printf("%s (%s, (%s, %d))\n", tag, to_string(e.first).c_str(),
                    to_string(e.second.first).c_str(), e.second.second);
      };
    };
    source.source_iter(std::vector<int>{123})
        .broadcast(destination, nondet("stable membership"))
        .entries()
        .send(p2)
        .entries()
        .assume_ordering<TotalOrder>(nondet("printed in arrival order"))
        .for_each(show("broadcast"));
    source.source_iter(std::vector<int>{0, 1, 2, 3})
        .map([](int x) { return std::pair(MemberId<Dst>::from_raw(static_cast<uint32_t>(x)), x); })
        .demux(destination)
        .entries()
        .send(p2)
        .entries()
        .assume_ordering<TotalOrder>(nondet("printed in arrival order"))
        .for_each(show("demux"));
    p1.source_iter(std::views::iota(0, 17))
        .round_robin(source, nondet("stable membership"))
        .round_robin(destination, nondet("stable membership"))
        .values()
        .send(p2)
        .values()
        .assume_ordering<TotalOrder>(nondet("printed in arrival order"))
        .for_each([](int v) { std::printf("round_robin %d\n", v); });
    p1.source_cluster_members(source)
        .entries()
        .assume_ordering<TotalOrder>(nondet("printed as they come"))
        .for_each([](const std::pair<MemberId<Src>, MembershipEvent>& e) {
          std::printf("members %s %s\n", to_string(e.first).c_str(), to_string(e.second));
        });
    source.source_iter(std::vector<int>{0})
        .map([source](int) { return static_cast<int>(source.self_id().raw()); })
        .send(p2)
        .entries()
        .assume_ordering<TotalOrder>(nondet("printed in arrival order"))
        .for_each([](const std::pair<MemberId<Src>, int>& e) {
          std::printf("self_id %s says %d\n", to_string(e.first).c_str(), e.second);
        });
    return run(flow, argc, argv);
  }

  if (mode == "self") {  // p2=1 workers=4: each worker broadcasts its id * 10 to its own cluster
    auto p2 = flow.process<P2>("p2");
    auto workers = flow.cluster<Workers>("workers");
    workers.source_iter(std::vector<int>{0})
        .map([workers](int) { return static_cast<int>(workers.self_id().raw()) * 10; })
        .broadcast(workers, nondet("stable membership"))
        .entries()
        .send(p2)
        .entries()
        .assume_ordering<TotalOrder>(nondet("printed in arrival order"))
        .for_each([](const std::pair<MemberId<Workers>, std::pair<MemberId<Workers>, int>>& e) {
          std::printf("self %s got (%s, %d)\n", to_string(e.first).c_str(),
                      to_string(e.second.first).c_str(), e.second.second);
        });
    return run(flow, argc, argv);
  }

  auto leader = flow.process<Leader>("leader");
  auto workers = flow.cluster<Workers>("workers");
  // --until-join: the stream ends `tail` elements after the leader saw member `until_join` join.
  static int64_t latest = 0, stop_at = INT64_MAX;
  leader.source_cluster_members(workers)
      .entries()
      .assume_ordering<TotalOrder>(nondet("printed as they come"))
      .for_each([until_join, tail](const std::pair<MemberId<Workers>, MembershipEvent>& e) {
        std::printf("leader: %s %s\n", to_string(e.first).c_str(), to_string(e.second));
        if (e.first.raw() == until_join && e.second == MembershipEvent::Joined) {
          stop_at = latest + tail;
        }
      });
  auto on_workers = [&] {
    if (until_join != UINT32_MAX) {
      auto numbers =
          leader.source_iter(std::views::iota(int64_t{0}) | std::views::take_while([](int64_t x) {
                               latest = x;
                               return x < stop_at;
                             }));
      return mode == "rr" ? numbers.round_robin(workers, nondet("test: membership changes"))
                          : numbers.broadcast(workers, nondet("test: membership changes"));
    }
    auto numbers = leader.source_iter(std::views::iota(int64_t{0}, count));
    return mode == "rr" ? numbers.round_robin(workers, nondet("test: membership changes"))
                        : numbers.broadcast(workers, nondet("test: membership changes"));
  }();
  // One process per member: plain globals are this member's state.
  static int64_t seen = 0, last = -1, first = -1, sum = 0;
  static const bool late = std::getenv("SLUICE_JOINED") != nullptr;
  static bool ok = true;
  static std::string problem;
  static uint32_t me = UINT32_MAX;
  on_workers.for_each([&](int64_t x) {
    me = workers.self_id().raw();
    // A late member's stream starts wherever the leader was when it joined.
    bool in_order = mode == "rr" ? x > last : (x == last + 1 || (late && seen == 0));
    if (seen == 0) first = x;
    sum += x;
    if (!in_order && ok) {
      ok = false;
      problem = "got " + std::to_string(x) + " after " + std::to_string(last);
    }
    last = x;
    ++seen;
    if (me == 0 && seen == 100000 && !progress_file.empty()) {
      std::ofstream(progress_file + ".tmp") << seen << "\n";
      std::rename((progress_file + ".tmp").c_str(), progress_file.c_str());
    }
    if (me == victim && seen == ready_after && !ready_file.empty()) {
      std::ofstream(ready_file + ".tmp") << getpid() << "\n";
      std::rename((ready_file + ".tmp").c_str(), ready_file.c_str());
      std::this_thread::sleep_for(std::chrono::seconds(30));  // waits to be killed
    }
    // A slow consumer: a pause every 10000 elements.
    if (me == slow && sleep_us > 0 && seen % 10000 == 0) {
      std::this_thread::sleep_for(std::chrono::microseconds(sleep_us));
    }
  });
  int rc = run(flow, argc, argv);
  const char* loc = std::getenv("SLUICE_LOCATION");
  if (loc != nullptr && std::string(loc) == "workers") {
    const char* m = std::getenv("SLUICE_MEMBER");
    std::printf("worker %s: %s count=%" PRId64 "%s\n", m ? m : "?", ok ? "OK" : "BAD", seen,
                ok ? "" : (" (" + problem + ")").c_str());
    if (until_join != UINT32_MAX) {
      std::printf("worker %s: first=%" PRId64 " last=%" PRId64 " sum=%" PRId64 "\n", m ? m : "?",
                  first, last, sum);
    }
  } else {
    std::printf("leader: peak_rss_kb=%ld exit=%d\n", peak_rss_kb(), rc);
  }
  return rc;
}
