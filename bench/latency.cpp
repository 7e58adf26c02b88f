// sluice_latency: one int64 element there and back, at the transport level (transport::Node).
//
//   ./sluice_latency --iters 100000 --sluice-progress spin                  # embedded: 2 threads
//   sluice-run -n p0=1 -n p1=1 -- ./sluice_latency --iters 100000
//       --sluice-transport shm --sluice-progress spin --sluice-bind core   # two processes
//
// Rank 0 sends a data frame holding one int64 on edge 0; rank 1 takes it and sends the same value
// back on edge 1; rank 0 takes the echo and starts the next round. Each round trip is timed on
// rank 0; after `--warmup` untimed rounds, `--iters` timed ones give
//
//   RESULT one_way_us=<mean RTT/2> median_us=<median RTT/2> p99_us=<p99 RTT/2> iters=N ...
//
// Waiting uses the Node's activity protocol: read activity(), look for a frame, and only then
// wait_activity(seen, ...), so nothing that arrives in between is missed. Under sluice-run any
// two location names work; ranks 0 and 1 of the layout are the two ends.
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "sluice/transport/bootstrap.hpp"
#include "sluice/transport/node.hpp"
#include "sluice/transport/options.hpp"
#include "sluice/transport/placement.hpp"

namespace {

using sluice::transport::Node;
using sluice::transport::RxFrame;
using sluice::transport::SendStatus;
using Clock = std::chrono::steady_clock;

constexpr uint32_t kPing = 0;  // edge 0: rank 0 -> rank 1
constexpr uint32_t kPong = 1;  // edge 1: rank 1 -> rank 0
constexpr auto kWaitSlice = std::chrono::milliseconds(100);
constexpr auto kGiveUp = std::chrono::seconds(10);  // a lost peer shows up well before this

struct Options {
  int64_t iters = 100'000;
  int64_t warmup = 10'000;
  double max_seconds = 0;  // > 0: stop the timed rounds early once this much time has passed
};

bool parse(int argc, char** argv, Options& o) {
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--max-seconds" && i + 1 < argc) {
      char* end = nullptr;
      o.max_seconds = std::strtod(argv[++i], &end);
      if (*end != '\0' || !(o.max_seconds >= 0)) {
        std::fprintf(stderr, "sluice_latency: --max-seconds: expected a number >= 0, got '%s'\n",
                     argv[i]);
        return false;
      }
    } else if ((a == "--iters" || a == "--warmup") && i + 1 < argc) {
      char* end = nullptr;
      long long n = std::strtoll(argv[++i], &end, 10);
      if (*end != '\0' || n < 0 || (a == "--iters" && n < 1)) {
        std::fprintf(stderr, "sluice_latency: %s: expected a %s integer, got '%s'\n", a.c_str(),
                     a == "--iters" ? "positive" : "non-negative", argv[i]);
        return false;
      }
      (a == "--iters" ? o.iters : o.warmup) = n;
    } else {
      std::fprintf(stderr,
                   "sluice_latency: unknown argument '%s'\nusage: %s [--iters N] [--warmup W] "
                   "[--max-seconds S] "
                   "[--sluice-transport shm|tcp|auto] [--sluice-progress spin|adaptive] ...\n",
                   a.c_str(), argv[0]);
      return false;
    }
  }
  return true;
}

void bind_to_core(uint32_t rank) {
  if (auto s = sluice::transport::bind_to_core(rank); !s) {
    std::fprintf(stderr, "sluice_latency: %s\n", s.error().c_str());
  }
}

// Takes one frame of `edge`, waiting for it. Returns false when the input ended or the wait
// gave up (a lost peer ends the input; kGiveUp only guards against a hang).
bool take_one(Node& node, uint32_t edge, std::vector<RxFrame>& rx) {
  auto give_up = Clock::now() + kGiveUp;
  for (;;) {
    uint64_t seen = node.activity();
    if (node.take(edge, rx, 1) > 0) return true;
    if (node.input_finished(edge)) return false;
    if (!node.wait_activity(seen, kWaitSlice) && Clock::now() > give_up) return false;
  }
}

bool send_value(Node& node, uint32_t edge, uint32_t dst, uint64_t tick, int64_t v) {
  return node.send_data(edge, dst, tick, 1, sizeof v,
                        [v](uint8_t* p) { std::memcpy(p, &v, sizeof v); }) == SendStatus::kOk;
}

int64_t value_of(const RxFrame& f) {
  int64_t v = -1;
  if (f.count() == 1 && f.elements().size() == sizeof v) {
    std::memcpy(&v, f.elements().data(), sizeof v);
  }
  return v;
}

// Closes our output and serves the input until both directions are finished.
void finish(Node& node, uint32_t out_edge, uint32_t dst, uint32_t in_edge) {
  node.close_output(out_edge, dst);
  std::vector<RxFrame> rx;
  auto give_up = Clock::now() + kGiveUp;
  while (Clock::now() < give_up) {
    uint64_t seen = node.activity();
    rx.clear();
    node.take(in_edge, rx, 64);
    if (rx.empty() && node.input_finished(in_edge) && node.outputs_drained()) return;
    if (rx.empty()) node.wait_activity(seen, kWaitSlice);
  }
  std::fprintf(stderr, "sluice_latency: rank %u: channels did not drain within %llds\n",
               node.rank(), static_cast<long long>(kGiveUp.count()));
}

// Rank 0: timed round trips. Returns the process exit code.
int run_pinger(Node& node, const Options& o, const char* mode) {
  std::vector<double> rtt_us;
  rtt_us.reserve(static_cast<size_t>(o.iters));
  std::vector<RxFrame> rx;
  const int64_t total = o.warmup + o.iters;
  // A slow configuration (e.g. spin mode with more spinning threads than cores) can take
  // milliseconds per round; --max-seconds bounds the timed part and the result says how many
  // rounds it got.
  // The warmup gets at most a quarter of that budget.
  auto budget = [&](double fraction) {
    return o.max_seconds > 0
               ? Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                    std::chrono::duration<double>(o.max_seconds * fraction))
               : Clock::time_point::max();
  };
  Clock::time_point stop_at = budget(0.25);
  int64_t first_timed = o.warmup;
  for (int64_t i = 0; i < total; ++i) {
    if (i < first_timed && Clock::now() >= stop_at) first_timed = i;  // warmup budget spent
    if (i == first_timed) stop_at = budget(1.0);
    if (i > first_timed && Clock::now() >= stop_at) break;
    auto t0 = Clock::now();
    if (!send_value(node, kPing, 1, static_cast<uint64_t>(i), i)) {
      std::fprintf(stderr, "sluice_latency: send %" PRId64 " failed (peer lost)\n", i);
      return 1;
    }
    rx.clear();
    if (!take_one(node, kPong, rx)) {
      std::fprintf(stderr, "sluice_latency: no echo for round %" PRId64 "\n", i);
      return 1;
    }
    auto t1 = Clock::now();
    if (value_of(rx.front()) != i) {
      std::fprintf(stderr, "sluice_latency: round %" PRId64 ": echo carried %" PRId64 "\n", i,
                   value_of(rx.front()));
      return 1;
    }
    rx.clear();  // releases the receive descriptor (as a real consumer would) before the next
    if (i >= first_timed)
      rtt_us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
  }
  finish(node, kPing, 1, kPong);

  std::vector<double> s = rtt_us;
  std::sort(s.begin(), s.end());
  double sum = 0;
  for (double x : s) sum += x;
  auto pct = [&](double p) {
    size_t k = static_cast<size_t>(p * static_cast<double>(s.size() - 1) + 0.5);
    return s[std::min(k, s.size() - 1)];
  };
  double mean = sum / static_cast<double>(s.size());
  std::printf(
      "RESULT one_way_us=%.4f median_us=%.4f p99_us=%.4f min_us=%.4f iters=%zu "
      "transport_progress=%s rtt_mean_us=%.4f\n",
      mean / 2, pct(0.5) / 2, pct(0.99) / 2, s.front() / 2, s.size(), mode, mean);
  std::fflush(stdout);
  return 0;
}

// Rank 1: echoes every frame of edge 0 back on edge 1 until edge 0 closes.
int run_ponger(Node& node) {
  std::vector<RxFrame> rx;
  uint64_t tick = 0;
  for (;;) {
    rx.clear();
    if (!take_one(node, kPing, rx)) break;
    if (!send_value(node, kPong, 0, tick++, value_of(rx.front()))) return 1;
  }
  rx.clear();
  if (node.peer_lost(0)) {
    std::fprintf(stderr, "sluice_latency: rank 1: lost rank 0\n");
    return 1;
  }
  finish(node, kPong, 0, kPing);
  return 0;
}

void declare(Node& node) {
  if (node.rank() == 0) {
    node.declare_output(kPing, 1);
    node.expect_input(kPong, 1);
  } else {
    node.expect_input(kPing, 0);
    node.declare_output(kPong, 0);
  }
}

int run_member(const sluice::transport::RunOptions& ro, const Options& o, std::string& mode) {
  auto env = sluice::transport::LauncherEnv::from_environment();
  if (!env) {
    std::fprintf(stderr, "sluice_latency: %s\n", env.error().c_str());
    return 2;
  }
  if (env->layout.size() != 2) {
    std::fprintf(stderr,
                 "sluice_latency: needs a job of exactly 2 members, the layout '%s' has %u\n",
                 env->layout.to_string().c_str(), env->layout.size());
    return 2;
  }
  if (ro.bind == sluice::transport::BindMode::kCore) bind_to_core(env->rank);
  auto node = Node::create(ro.transport, env->rank, 2, env->job_id,
                           env->location + "/" + std::to_string(env->member));
  if (!node) {
    std::fprintf(stderr, "sluice_latency: %s\n", node.error().c_str());
    return 2;
  }
  declare(**node);
  sluice::transport::PeerInfo self;
  self.rank = env->rank;
  self.location = env->location;
  self.member = env->member;
  self.address = (*node)->worker_address();
  auto session = sluice::transport::LauncherSession::connect(*env, self, 60000);
  if (!session) {
    std::fprintf(stderr, "sluice_latency: %s\n", session.error().c_str());
    return 2;
  }
  if (auto s = (*node)->connect((*session)->peers()); !s) {
    std::fprintf(stderr, "sluice_latency: %s\n", s.error().c_str());
    return 2;
  }
  mode += "/launcher";
  int rc = env->rank == 0 ? run_pinger(**node, o, mode.c_str()) : run_ponger(**node);
  (*node)->shutdown();
  return rc;
}

// Both members as threads of this process. With --sluice-bind core each member's thread binds
// itself to its core before creating its Node, so its progress thread inherits that core.
int run_embedded(const sluice::transport::RunOptions& ro, const Options& o, std::string& mode) {
  mode += "/embedded";
  std::unique_ptr<Node> nodes[2];
  std::vector<sluice::transport::PeerInfo> peers(2);
  int rc[2] = {0, 0};
  bool created[2] = {false, false};
  // Two phases: create (per thread, so affinity is inherited), exchange addresses, connect + run.
  std::atomic<int> phase{0};
  auto member = [&](uint32_t r) {
    if (ro.bind == sluice::transport::BindMode::kCore) bind_to_core(r);
    auto n = Node::create(ro.transport, r, 2, "embedded-latency", r == 0 ? "p0/0" : "p1/0");
    if (!n) {
      std::fprintf(stderr, "sluice_latency: %s\n", n.error().c_str());
      rc[r] = 2;
    } else {
      nodes[r] = std::move(*n);
      declare(*nodes[r]);
      peers[r].rank = r;
      peers[r].location = r == 0 ? "p0" : "p1";
      peers[r].address = nodes[r]->worker_address();
      created[r] = true;
    }
    phase.fetch_add(1);
    while (phase.load() < 3) std::this_thread::yield();  // main thread publishes the table
    if (!created[0] || !created[1]) return;
    if (auto s = nodes[r]->connect(peers); !s) {
      std::fprintf(stderr, "sluice_latency: %s\n", s.error().c_str());
      rc[r] = 2;
      return;
    }
    rc[r] = r == 0 ? run_pinger(*nodes[r], o, mode.c_str()) : run_ponger(*nodes[r]);
  };
  std::thread t0(member, 0u), t1(member, 1u);
  while (phase.load() < 2) std::this_thread::yield();
  phase.store(3);
  t0.join();
  t1.join();
  for (auto& n : nodes) {
    if (n) n->shutdown();
  }
  return std::max(rc[0], rc[1]);
}

}  // namespace

int main(int argc, char** argv) {
  auto ro = sluice::transport::parse_run_options(argc, argv);
  if (!ro) {
    std::fprintf(stderr, "sluice_latency: %s\n", ro.error().c_str());
    return 2;
  }
  Options o;
  if (!parse(argc, argv, o)) return 2;
  std::string mode = std::string(sluice::transport::to_string(ro->transport.kind)) + "/" +
                     sluice::transport::to_string(ro->transport.progress);
  if (sluice::transport::LauncherEnv::present()) return run_member(*ro, o, mode);
  return run_embedded(*ro, o, mode);
}
