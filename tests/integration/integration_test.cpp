// End to end: the seed's first example and a few-million-element stream, embedded and through
// sluice-run, over shm and tcp; a receiver killed mid-stream; bad layouts and environments.
#include <dirent.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "subprocess.hpp"

namespace sluice::test {
namespace {

class Transport : public ::testing::TestWithParam<std::string> {
 protected:
  std::string flag() const { return "--sluice-transport=" + GetParam(); }
};

std::vector<std::string> lines_with_prefix(const std::string& out, const std::string& prefix) {
  std::vector<std::string> keep;
  for (auto& l : split_lines(out)) {
    if (l.rfind(prefix, 0) == 0) keep.push_back(l.substr(prefix.size()));
  }
  return keep;
}

TEST_P(Transport, SeedExampleEmbeddedDeliversOneTwoThreeInOrder) {
  auto r = run_command({SEED_SEND_PATH, flag()});
  ASSERT_EQ(r.exit_code, 0) << r.describe();
  EXPECT_EQ(r.out, "1\n2\n3\n") << r.describe();
}

TEST_P(Transport, SeedExampleThroughLauncherDeliversOneTwoThreeInOrder) {
  auto r = run_command({SLUICE_RUN_PATH, "-n", "p1=1", "-n", "p2=1", "--", SEED_SEND_PATH, flag()});
  ASSERT_EQ(r.exit_code, 0) << r.describe();
  EXPECT_EQ(lines_with_prefix(r.out, "[p2/0] "), (std::vector<std::string>{"1", "2", "3"}))
      << r.describe();
  EXPECT_TRUE(lines_with_prefix(r.out, "[p1/0] ").empty()) << r.describe();
}

TEST_P(Transport, SeedExampleInSpinModeThroughLauncher) {
  auto r = run_command({SLUICE_RUN_PATH, "-n", "p1=1", "-n", "p2=1", "--", SEED_SEND_PATH, flag(),
                        "--sluice-progress=spin"});
  ASSERT_EQ(r.exit_code, 0) << r.describe();
  EXPECT_EQ(lines_with_prefix(r.out, "[p2/0] "), (std::vector<std::string>{"1", "2", "3"}))
      << r.describe();
}

TEST_P(Transport, LongTickInSpinModeDoesNotLoseTheMember) {
  // p2's first tick runs user code three times longer than the peer timeout.
  auto r = run_command({SLUICE_RUN_PATH, "-n", "p1=1", "-n", "p2=1", "--", STREAM_CHECK_PATH,
                        "--count", "200000", "--stall-ms", "1500", flag(), "--sluice-progress=spin",
                        "--sluice-peer-timeout-ms=500", "--sluice-heartbeat-ms=50"});
  ASSERT_EQ(r.exit_code, 0) << r.describe();
  EXPECT_NE(r.out.find("[p2/0] stream_check: OK count=200000"), std::string::npos) << r.describe();
}

TEST_P(Transport, MillionsOfElementsInSpinModeEmbedded) {
  auto r = run_command({STREAM_CHECK_PATH, "--count", "1000000", flag(), "--sluice-progress=spin"});
  ASSERT_EQ(r.exit_code, 0) << r.describe();
  EXPECT_NE(r.out.find("stream_check: OK count=1000000"), std::string::npos) << r.describe();
}

TEST_P(Transport, MillionsOfElementsArriveOnceAndInOrderEmbedded) {
  auto r = run_command({STREAM_CHECK_PATH, "--count", "3000000", flag()});
  ASSERT_EQ(r.exit_code, 0) << r.describe();
  EXPECT_NE(r.out.find("stream_check: OK count=3000000"), std::string::npos) << r.describe();
}

TEST_P(Transport, MillionsOfElementsArriveOnceAndInOrderThroughLauncher) {
  auto r = run_command({SLUICE_RUN_PATH, "-n", "p1=1", "-n", "p2=1", "--", STREAM_CHECK_PATH,
                        "--count", "3000000", flag()});
  ASSERT_EQ(r.exit_code, 0) << r.describe();
  EXPECT_NE(r.out.find("[p2/0] stream_check: OK count=3000000"), std::string::npos) << r.describe();
}

TEST_P(Transport, MegabyteElementsArriveIntactThroughLauncher) {
  auto r = run_command({SLUICE_RUN_PATH, "-n", "p1=1", "-n", "p2=1", "--", STREAM_CHECK_PATH,
                        "--count", "200", "--size", "1048576", flag()});
  ASSERT_EQ(r.exit_code, 0) << r.describe();
  EXPECT_NE(r.out.find("[p2/0] stream_check: OK count=200"), std::string::npos) << r.describe();
}

TEST_P(Transport, MegabyteZeroCopyBytesArriveIntactThroughLauncher) {
  for (const char* progress : {"adaptive", "spin"}) {
    auto r = run_command({SLUICE_RUN_PATH, "-n", "p1=1", "-n", "p2=1", "--", STREAM_CHECK_PATH,
                          "--count", "200", "--size", "1048576", "--shared", "1", flag(),
                          std::string("--sluice-progress=") + progress});
    ASSERT_EQ(r.exit_code, 0) << progress << ": " << r.describe();
    EXPECT_NE(r.out.find("[p2/0] stream_check: OK count=200"), std::string::npos)
        << progress << ": " << r.describe();
  }
}

TEST_P(Transport, TwoProcessesSendingToEachOtherBothFinish) {
  auto r = run_command({SLUICE_RUN_PATH, "-n", "p1=1", "-n", "p2=1", "--", ROUND_TRIP_PATH,
                        "--count", "100000", flag()});
  ASSERT_EQ(r.exit_code, 0) << r.describe();
  EXPECT_NE(r.out.find("[p1/0] round_trip: OK echo=100000 own=100000"), std::string::npos)
      << r.describe();
}

TEST_P(Transport, BothDirectionsFullAtOnceDoNotDeadlock) {
  // Elements of 1 MiB against a 256 KiB window: every frame is larger than the window, in both
  // directions at once, embedded and launched.
  std::vector<std::string> prog{ROUND_TRIP_PATH,        "--count", "60", "--size", "1048576",
                                "--sluice-window=256k", flag()};
  auto embedded = run_command(prog);
  ASSERT_EQ(embedded.exit_code, 0) << embedded.describe();
  EXPECT_NE(embedded.out.find("round_trip: OK echo=60 own=60"), std::string::npos)
      << embedded.describe();
  std::vector<std::string> launched{SLUICE_RUN_PATH, "-n", "p1=1", "-n", "p2=1", "--"};
  launched.insert(launched.end(), prog.begin(), prog.end());
  auto r = run_command(launched);
  ASSERT_EQ(r.exit_code, 0) << r.describe();
  EXPECT_NE(r.out.find("[p1/0] round_trip: OK echo=60 own=60"), std::string::npos) << r.describe();
}

TEST_P(Transport, SlowConsumerIsBoundedByTheWindowAndLosesNothing) {
  // A 64 KiB window against 16 MiB of data: the sender must wait for credit many times.
  auto r = run_command(
      {STREAM_CHECK_PATH, "--count", "2000000", "--sluice-window=64k", "--sluice-stats", flag()});
  ASSERT_EQ(r.exit_code, 0) << r.describe();
  EXPECT_NE(r.out.find("stream_check: OK count=2000000"), std::string::npos) << r.describe();
}

INSTANTIATE_TEST_SUITE_P(Transports, Transport, ::testing::Values("shm", "tcp"),
                         [](const auto& param_info) { return param_info.param; });

std::set<std::string> shm_entries() {
  std::set<std::string> out;
  if (DIR* d = opendir("/dev/shm")) {
    while (dirent* e = readdir(d)) {
      if (e->d_name[0] != '.') out.insert(e->d_name);
    }
    closedir(d);
  }
  return out;
}

// System V shared-memory segments that nobody has attached (shmid -> true). A segment left
// behind by a killed member would show up here; segments of live processes have attachments.
std::set<std::string> unattached_sysv_segments() {
  std::set<std::string> out;
  std::ifstream in("/proc/sysvipc/shm");
  std::string line;
  std::getline(in, line);  // header: key shmid perms size cpid lpid nattch ...
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string key, shmid, perms, size, cpid, lpid, nattch;
    if (fields >> key >> shmid >> perms >> size >> cpid >> lpid >> nattch && nattch == "0") {
      out.insert(shmid);
    }
  }
  return out;
}

// Nothing new may stay behind: every entry of `current()` missing from `before` must go away.
// UCX's posix transport names a /dev/shm segment for a moment while it sets it up, and tests of
// other jobs run alongside, so an entry counts as left over only if it is still there after a
// grace period (a watchdog, not a timing bar).
void expect_nothing_left(const std::set<std::string>& before,
                         const std::function<std::set<std::string>()>& current,
                         const std::string& what) {
  auto new_entries = [&] {
    std::vector<std::string> out;
    for (const auto& e : current()) {
      if (!before.count(e)) out.push_back(e);
    }
    return out;
  };
  wait_until([&] { return new_entries().empty(); }, 10000);
  for (const auto& e : new_entries()) ADD_FAILURE() << what << " left behind: " << e;
}

void expect_no_shm_leftovers(const std::set<std::string>& before) {
  expect_nothing_left(before, shm_entries, "/dev/shm entry");
}

// Kills p2 with SIGKILL mid-stream. Returns the launcher's result.
ProcessResult kill_receiver_mid_stream(const std::string& transport,
                                       const std::vector<std::string>& launcher_flags) {
  TempDir dir;
  std::vector<std::string> argv{SLUICE_RUN_PATH};
  argv.insert(argv.end(), launcher_flags.begin(), launcher_flags.end());
  std::vector<std::string> rest{"-n",
                                "p1=1",
                                "-n",
                                "p2=1",
                                "--",
                                STREAM_CHECK_PATH,
                                "--count",
                                "1000000000000",
                                "--ready-after",
                                "200000",
                                "--ready-file",
                                dir.file("ready"),
                                "--sluice-transport=" + transport,
                                "--sluice-peer-timeout-ms=1500"};
  argv.insert(argv.end(), rest.begin(), rest.end());
  SubprocessOptions opts;
  opts.timeout_ms = 60000;
  auto job = Subprocess::start(argv, opts);
  bool ready = wait_until([&] { return !read_file(dir.file("ready")).empty(); }, 30000);
  EXPECT_TRUE(ready) << "p2 never reported progress";
  pid_t victim = static_cast<pid_t>(std::stol("0" + read_file(dir.file("ready"))));
  if (ready && victim > 0) kill(victim, SIGKILL);
  return job.wait();
}

TEST_P(Transport, KilledReceiverEndsTheJobNamingIt) {
  auto before = shm_entries();
  auto sysv_before = unattached_sysv_segments();
  auto r = kill_receiver_mid_stream(GetParam(), {});
  expect_nothing_left(sysv_before, unattached_sysv_segments, "System V segment (shmid)");
  EXPECT_FALSE(r.timed_out) << r.describe();
  EXPECT_NE(r.exit_code, 0) << r.describe();
  EXPECT_NE(r.err.find("p2/0"), std::string::npos) << r.describe();
  EXPECT_NE(r.err.find("signal 9"), std::string::npos) << r.describe();
  expect_no_shm_leftovers(before);
}

TEST_P(Transport, KilledReceiverGivesTheSenderAClearErrorWhenTheJobContinues) {
  auto before = shm_entries();
  auto r = kill_receiver_mid_stream(GetParam(), {"--on-failure", "continue"});
  EXPECT_FALSE(r.timed_out) << r.describe();
  EXPECT_NE(r.exit_code, 0) << r.describe();
  // The sender notices by itself (launcher report or heartbeats), says so, and exits non-zero.
  EXPECT_NE(r.err.find("[p1/0] sluice[p1/0]: error: lost peer p2/0"), std::string::npos)
      << r.describe();
  EXPECT_NE(r.err.find("p2/0"), std::string::npos) << r.describe();
  expect_no_shm_leftovers(before);
}

TEST_P(Transport, SigtermDrainsTheJobCleanly) {
  TempDir dir;
  auto job = Subprocess::start({SLUICE_RUN_PATH, "-n", "p1=1", "-n", "p2=1", "--",
                                STREAM_CHECK_PATH, "--count", "1000000000000", "--ready-after",
                                "100000", "--ready-file", dir.file("ready"), flag()});
  ASSERT_TRUE(wait_until([&] { return !read_file(dir.file("ready")).empty(); }, 30000));
  job.send_signal(SIGTERM);  // the launcher forwards it to both members
  auto r = job.wait();
  EXPECT_FALSE(r.timed_out) << r.describe();
  EXPECT_EQ(r.exit_code, 128 + SIGTERM) << r.describe();
  // Both members drained and exited by themselves (no SIGKILL after the grace period), and
  // what p2 received is an in-order prefix of the stream.
  EXPECT_NE(r.out.find("[p2/0] stream_check: PREFIX count="), std::string::npos) << r.describe();
  EXPECT_NE(r.err.find("stopping sources and draining"), std::string::npos) << r.describe();
  EXPECT_EQ(r.err.find("signal 9"), std::string::npos) << r.describe();
}

TEST(Errors, LayoutMissingALocationIsAOneLineError) {
  auto r = run_command({SLUICE_RUN_PATH, "-n", "p1=1", "-n", "nope=1", "--", SEED_SEND_PATH});
  EXPECT_NE(r.exit_code, 0) << r.describe();
  EXPECT_NE(r.err.find("does not name location 'p2'"), std::string::npos) << r.describe();
  EXPECT_EQ(r.err.find("terminate called"), std::string::npos) << r.describe();
}

TEST(Errors, ProcessWithTwoMembersIsAnError) {
  auto r = run_command({SLUICE_RUN_PATH, "-n", "p1=2", "-n", "p2=1", "--", SEED_SEND_PATH});
  EXPECT_NE(r.exit_code, 0) << r.describe();
  EXPECT_NE(r.err.find("needs exactly 1 member"), std::string::npos) << r.describe();
}

TEST(Errors, MissingLauncherVariableIsAOneLineError) {
  SubprocessOptions opts;
  opts.set_env = {{"SLUICE_RENDEZVOUS", "127.0.0.1:9"}};
  opts.unset_env = {"SLUICE_TOKEN",    "SLUICE_LAYOUT", "SLUICE_RANK",
                    "SLUICE_LOCATION", "SLUICE_MEMBER", "SLUICE_JOB_ID"};
  auto r = run_command({SEED_SEND_PATH}, opts);
  EXPECT_EQ(r.exit_code, 2) << r.describe();
  EXPECT_NE(r.err.find("SLUICE_"), std::string::npos) << r.describe();
  EXPECT_EQ(split_lines(r.err).size(), 1u) << r.describe();
}

TEST(Errors, BadFlagValueIsAOneLineError) {
  auto r = run_command({SEED_SEND_PATH, "--sluice-transport", "carrier-pigeon"});
  EXPECT_EQ(r.exit_code, 2) << r.describe();
  EXPECT_NE(r.err.find("expected auto|shm|tcp|rdma"), std::string::npos) << r.describe();
  EXPECT_EQ(split_lines(r.err).size(), 1u) << r.describe();
}

TEST(Errors, RdmaWithoutADeviceIsAClearError) {
  DIR* d = opendir("/sys/class/infiniband");
  bool has_rdma = false;
  if (d != nullptr) {
    while (dirent* e = readdir(d)) has_rdma |= e->d_name[0] != '.';
    closedir(d);
  }
  if (has_rdma) GTEST_SKIP() << "this machine has an RDMA device";
  auto r = run_command({SEED_SEND_PATH, "--sluice-transport", "rdma"});
  EXPECT_EQ(r.exit_code, 2) << r.describe();
  EXPECT_NE(r.err.find("no RDMA device"), std::string::npos) << r.describe();
}

TEST(Errors, HelpListsTheFlagsAndExitsZero) {
  auto r = run_command({SEED_SEND_PATH, "--sluice-help"});
  EXPECT_EQ(r.exit_code, 0) << r.describe();
  EXPECT_NE(r.out.find("--sluice-transport"), std::string::npos) << r.describe();
}

TEST(Errors, DumpGraphPrintsTheFlowAndRunsNothing) {
  auto r = run_command({SEED_SEND_PATH, "--sluice-dump-graph=dot"});
  EXPECT_EQ(r.exit_code, 0) << r.describe();
  EXPECT_EQ(r.out.rfind("digraph sluice {", 0), 0u) << r.describe();
  EXPECT_EQ(r.out.find("\n1\n"), std::string::npos) << "the flow must not run: " << r.describe();
  auto bad = run_command({SEED_SEND_PATH, "--sluice-dump-graph=png"});
  EXPECT_EQ(bad.exit_code, 2) << bad.describe();
  EXPECT_NE(bad.err.find("expected text|dot|mermaid"), std::string::npos) << bad.describe();
}

TEST(Demo, HelloSendPrintsTheSum) {
  auto r = run_command({HELLO_SEND_PATH});
  ASSERT_EQ(r.exit_code, 0) << r.describe();
  EXPECT_NE(r.out.find("sum of squares 1..10 = 385"), std::string::npos) << r.describe();
}

// ---- clusters through the launcher ----

TEST_P(Transport, SeedClusterExamplesThroughLauncher) {
  auto r = run_command({SLUICE_RUN_PATH, "-n", "p1=1", "-n", "p2=1", "-n", "workers=4", "--",
                        CLUSTER_CHECK_PATH, "--mode", "seed", flag()});
  ASSERT_EQ(r.exit_code, 0) << r.describe();
  auto got = lines_with_prefix(r.out, "[p2/0] ");
  std::sort(got.begin(), got.end());
  std::vector<std::string> expect;
  for (int i = 0; i < 4; ++i) {
    std::string m = "MemberId<workers>(" + std::to_string(i) + ")";
    expect.push_back("broadcast (" + m + ", 123)");
    expect.push_back("demux (" + m + ", " + std::to_string(i) + ")");
    expect.push_back("round_robin " + std::to_string(i + 1));
    expect.push_back("send (" + m + ", 1)");
  }
  std::sort(expect.begin(), expect.end());
  EXPECT_EQ(got, expect) << r.describe();
}

TEST_P(Transport, SeedClusterToClusterExamplesThroughLauncher) {
  auto r = run_command({SLUICE_RUN_PATH, "-n", "p1=1", "-n", "p2=1", "-n", "source=4", "-n",
                        "destination=4", "--", CLUSTER_CHECK_PATH, "--mode", "seed-cc", flag()});
  ASSERT_EQ(r.exit_code, 0) << r.describe();
  auto got = lines_with_prefix(r.out, "[p2/0] ");
  auto members = lines_with_prefix(r.out, "[p1/0] ");
  got.insert(got.end(), members.begin(), members.end());
  std::sort(got.begin(), got.end());
  std::vector<std::string> expect;
  for (int d = 0; d < 4; ++d) {
    for (int s = 0; s < 4; ++s) {
      std::string dst = "MemberId<destination>(" + std::to_string(d) + ")";
      std::string src = "MemberId<source>(" + std::to_string(s) + ")";
      expect.push_back("broadcast (" + dst + ", (" + src + ", 123))");
      expect.push_back("demux (" + dst + ", (" + src + ", " + std::to_string(d) + "))");
    }
  }
  for (int i = 0; i < 17; ++i) expect.push_back("round_robin " + std::to_string(i));
  for (int m = 0; m < 4; ++m) {
    std::string id = "MemberId<source>(" + std::to_string(m) + ")";
    expect.push_back("members " + id + " Joined");
    expect.push_back("self_id " + id + " says " + std::to_string(m));
  }
  std::sort(expect.begin(), expect.end());
  EXPECT_EQ(got, expect) << r.describe();
}

// A leader streams 0..count-1 to 4 workers (broadcast or round_robin); worker 2 is SIGKILLed
// mid-stream; the job goes on without it.
ProcessResult kill_worker_mid_stream(const std::string& transport, const std::string& mode,
                                     const std::string& count, TempDir& dir) {
  SubprocessOptions opts;
  opts.timeout_ms = 120000;
  auto job = Subprocess::start({SLUICE_RUN_PATH,
                                "--on-failure",
                                "continue",
                                "-n",
                                "leader=1",
                                "-n",
                                "workers=4",
                                "--",
                                CLUSTER_CHECK_PATH,
                                "--mode",
                                mode,
                                "--count",
                                count,
                                "--victim",
                                "2",
                                "--ready-after",
                                "100000",
                                "--ready-file",
                                dir.file("ready"),
                                "--sluice-transport=" + transport,
                                "--sluice-peer-timeout-ms=1500",
                                "--sluice-stats-json",
                                dir.path()},
                               opts);
  bool ready = wait_until([&] { return !read_file(dir.file("ready")).empty(); }, 60000);
  EXPECT_TRUE(ready) << "worker 2 never reported progress";
  pid_t victim = static_cast<pid_t>(std::stol("0" + read_file(dir.file("ready"))));
  if (ready && victim > 0) kill(victim, SIGKILL);
  return job.wait();
}

// "elements" the leader's JSON stats say edge `dir` moved with `peer`.
long long leader_elements(const std::string& json, const std::string& peer) {
  std::string key = "\"dir\": \"tx\", \"peer\": \"" + peer + "\"";
  auto at = json.find(key);
  if (at == std::string::npos) return -1;
  auto e = json.find("\"elements\": ", at);
  return e == std::string::npos ? -1 : std::stoll(json.substr(e + 12));
}

TEST_P(Transport, KilledWorkerDuringBroadcastLeavesAndSurvivorsGetEverything) {
  auto before = shm_entries();
  TempDir dir;
  auto r = kill_worker_mid_stream(GetParam(), "broadcast", "5000000", dir);
  EXPECT_FALSE(r.timed_out) << r.describe();
  for (int k : {0, 1, 3}) {
    std::string line =
        "[workers/" + std::to_string(k) + "] worker " + std::to_string(k) + ": OK count=5000000";
    EXPECT_NE(r.out.find(line), std::string::npos) << line << "\n" << r.describe();
  }
  EXPECT_NE(r.out.find("[leader/0] leader: MemberId<workers>(2) Left"), std::string::npos)
      << r.describe();
  EXPECT_NE(r.err.find("workers/2"), std::string::npos) << r.describe();
  expect_no_shm_leftovers(before);
}

TEST_P(Transport, KilledWorkerDuringRoundRobinLeavesAndSurvivorsGetTheirShareInOrder) {
  auto before = shm_entries();
  TempDir dir;
  auto r = kill_worker_mid_stream(GetParam(), "rr", "5000000", dir);
  EXPECT_FALSE(r.timed_out) << r.describe();
  EXPECT_NE(r.out.find("[leader/0] leader: MemberId<workers>(2) Left"), std::string::npos)
      << r.describe();
  // Each survivor got, once and in increasing order, exactly what the leader sent it.
  std::string json = read_file(dir.file("stats-leader-0.json"));
  for (int k : {0, 1, 3}) {
    std::string w = "workers/" + std::to_string(k);
    long long sent = leader_elements(json, w);
    std::string line =
        "[" + w + "] worker " + std::to_string(k) + ": OK count=" + std::to_string(sent);
    EXPECT_GT(sent, 0) << json;
    EXPECT_NE(r.out.find(line), std::string::npos) << line << "\n" << r.describe() << json;
  }
  expect_no_shm_leftovers(before);
}

TEST_P(Transport, SlowWorkerUnderBroadcastKeepsTheLeaderBoundedAndLosesNothing) {
  // 20 M int64 (160 MB) broadcast flat out while worker 1 pauses 1 ms every 10000 elements: the
  // leader may not buffer the stream for it (its windows are a few MiB per member).
  SubprocessOptions slow_opts;
  slow_opts.timeout_ms = 180000;
  auto r = run_command(
      {SLUICE_RUN_PATH, "-n", "leader=1", "-n", "workers=4", "--", CLUSTER_CHECK_PATH, "--mode",
       "broadcast", "--count", "20000000", "--slow", "1", "--sleep-us", "1000", flag()},
      slow_opts);
  ASSERT_EQ(r.exit_code, 0) << r.describe();
  for (int k = 0; k < 4; ++k) {
    std::string line =
        "[workers/" + std::to_string(k) + "] worker " + std::to_string(k) + ": OK count=20000000";
    EXPECT_NE(r.out.find(line), std::string::npos) << line << "\n" << r.describe();
  }
  auto at = r.out.find("leader: peak_rss_kb=");
  ASSERT_NE(at, std::string::npos) << r.describe();
  long rss_kb = std::stol(r.out.substr(at + 20));
  EXPECT_LT(rss_kb, 128 * 1024) << "leader peak RSS " << rss_kb << " KiB\n" << r.describe();
}

// A leader streams 0, 1, 2, ... to 2 workers until a third one, started into the running job by
// `sluice-run --join`, has joined; then a tail more. Returns the job's and the join's results.
struct JoinRun {
  ProcessResult job;
  ProcessResult join;
  bool job_file_left = false;
};
// With `kill_first`, worker 1 is SIGKILLed before the join (the job tolerates it): the late
// member's table names it gone.
JoinRun join_mid_stream(const std::string& transport, const std::string& mode, TempDir& dir,
                        bool kill_first = false) {
  SubprocessOptions opts;
  opts.timeout_ms = 120000;
  const std::string job_file = dir.file("job");
  std::vector<std::string> argv = {SLUICE_RUN_PATH,
                                   "--job-file",
                                   job_file,
                                   "--timeout-s",
                                   "90",
                                   "-n",
                                   "leader=1",
                                   "-n",
                                   "workers=2",
                                   "--on-failure",
                                   "continue",
                                   "--",
                                   CLUSTER_CHECK_PATH,
                                   "--mode",
                                   mode,
                                   "--until-join",
                                   "2",
                                   "--tail",
                                   "200000",
                                   "--progress-file",
                                   dir.file("flowing"),
                                   "--sluice-transport=" + transport,
                                   "--sluice-peer-timeout-ms=5000"};
  if (kill_first) {
    for (const char* a : {"--victim", "1", "--ready-after", "100000", "--ready-file"}) {
      argv.push_back(a);
    }
    argv.push_back(dir.file("ready"));
  }
  auto job = Subprocess::start(argv, opts);
  // Joins mid-stream: once worker 0 has 100000 elements.
  bool flowing = wait_until([&] { return !read_file(dir.file("flowing")).empty(); }, 60000);
  EXPECT_TRUE(flowing) << "the stream never reached worker 0";
  if (kill_first) {
    bool ready = wait_until([&] { return !read_file(dir.file("ready")).empty(); }, 60000);
    EXPECT_TRUE(ready) << "worker 1 never reported progress";
    pid_t victim = static_cast<pid_t>(std::stol("0" + read_file(dir.file("ready"))));
    if (ready && victim > 0) kill(victim, SIGKILL);
  }
  JoinRun r;
  r.join = run_command({SLUICE_RUN_PATH, "--join", job_file, "--add", "workers"});
  r.job = job.wait();
  r.job_file_left = std::ifstream(job_file).good();
  return r;
}

// "worker K: first=F last=L sum=S" and "worker K: OK count=N" of each worker, by K.
struct WorkerReport {
  bool ok = false;
  long long count = -1, first = -1, last = -1, sum = -1;
};
std::map<int, WorkerReport> worker_reports(const std::string& out) {
  std::map<int, WorkerReport> reports;
  for (const auto& line : split_lines(out)) {
    int k = -1;
    long long a = 0, b = 0, c = 0;
    char ok[8] = {};
    auto at = line.find("] worker ");
    if (at == std::string::npos) continue;
    const char* text = line.c_str() + at + 2;
    if (std::sscanf(text, "worker %d: first=%lld last=%lld sum=%lld", &k, &a, &b, &c) == 4) {
      reports[k].first = a;
      reports[k].last = b;
      reports[k].sum = c;
    } else if (std::sscanf(text, "worker %d: %7s count=%lld", &k, ok, &a) == 3) {
      reports[k].ok = std::string(ok) == "OK";
      reports[k].count = a;
    }
  }
  return reports;
}

TEST_P(Transport, JoinedWorkerGetsTheBroadcastFromItsJoinOn) {
  auto before = shm_entries();
  TempDir dir;
  auto r = join_mid_stream(GetParam(), "broadcast", dir);
  ASSERT_EQ(r.job.exit_code, 0) << r.job.describe();
  EXPECT_EQ(r.join.exit_code, 0) << r.join.describe();
  EXPECT_NE(r.join.out.find("added workers/2 (rank 3, pid "), std::string::npos)
      << r.join.describe();
  // The leader saw the new member join after the first two.
  auto joined = lines_with_prefix(r.job.out, "[leader/0] leader: ");
  joined.erase(std::remove_if(joined.begin(), joined.end(),
                              [](const std::string& l) { return l.find("Joined") == l.npos; }),
               joined.end());
  EXPECT_EQ(joined,
            (std::vector<std::string>{"MemberId<workers>(0) Joined", "MemberId<workers>(1) Joined",
                                      "MemberId<workers>(2) Joined"}))
      << r.job.describe();
  auto w = worker_reports(r.job.out);
  ASSERT_EQ(w.size(), 3u) << r.job.describe();
  for (int k : {0, 1}) {  // everything, once and in order
    EXPECT_TRUE(w[k].ok) << r.job.describe();
    EXPECT_EQ(w[k].first, 0) << r.job.describe();
    EXPECT_EQ(w[k].count, w[k].last + 1) << r.job.describe();
    EXPECT_EQ(w[k].last, w[0].last) << r.job.describe();
  }
  // The late member: a contiguous suffix from the tick after its join to the very end.
  EXPECT_TRUE(w[2].ok) << r.job.describe();
  EXPECT_GT(w[2].first, 100000) << r.job.describe();  // it joined after worker 0 had that many
  EXPECT_GE(w[2].count, 200000) << r.job.describe();
  EXPECT_EQ(w[2].count, w[2].last - w[2].first + 1) << r.job.describe();
  EXPECT_EQ(w[2].last, w[0].last) << r.job.describe();
  EXPECT_FALSE(r.job_file_left) << "the job file outlived the job";
  expect_no_shm_leftovers(before);
}

TEST_P(Transport, JoinedWorkerIsDealtRoundRobinFromItsJoinOn) {
  auto before = shm_entries();
  TempDir dir;
  auto r = join_mid_stream(GetParam(), "rr", dir);
  ASSERT_EQ(r.job.exit_code, 0) << r.job.describe();
  EXPECT_EQ(r.join.exit_code, 0) << r.join.describe();
  auto w = worker_reports(r.job.out);
  ASSERT_EQ(w.size(), 3u) << r.job.describe();
  long long total = 0, sum = 0, last = -1;
  for (auto& [k, rep] : w) {
    EXPECT_TRUE(rep.ok) << "worker " << k << " got its share out of order\n" << r.job.describe();
    total += rep.count;
    sum += rep.sum;
    last = std::max(last, rep.last);
  }
  // Every element went to exactly one member, the late one included.
  EXPECT_GT(w[2].count, 0) << r.job.describe();
  EXPECT_GT(w[2].first, 100000) << r.job.describe();  // it joined after worker 0 had that many
  EXPECT_EQ(total, last + 1) << r.job.describe();
  EXPECT_EQ(sum, last * (last + 1) / 2) << r.job.describe();
  expect_no_shm_leftovers(before);
}

TEST_P(Transport, JoinAfterAMemberDiedLeavesItOutAndGetsTheRest) {
  auto before = shm_entries();
  TempDir dir;
  auto r = join_mid_stream(GetParam(), "broadcast", dir, /*kill_first=*/true);
  EXPECT_EQ(r.job.exit_code, 1) << r.job.describe();  // a member was killed
  EXPECT_EQ(r.join.exit_code, 0) << r.join.describe();
  auto events = lines_with_prefix(r.job.out, "[leader/0] leader: MemberId<workers>");
  EXPECT_NE(std::find(events.begin(), events.end(), "(1) Left"), events.end()) << r.job.describe();
  EXPECT_NE(std::find(events.begin(), events.end(), "(2) Joined"), events.end())
      << r.job.describe();
  auto w = worker_reports(r.job.out);
  EXPECT_TRUE(w[0].ok && w[0].first == 0 && w[0].count == w[0].last + 1) << r.job.describe();
  EXPECT_TRUE(w[2].ok) << r.job.describe();
  EXPECT_EQ(w[2].count, w[2].last - w[2].first + 1) << r.job.describe();
  EXPECT_EQ(w[2].last, w[0].last) << r.job.describe();
  // The late member knew workers/1 had ended: no complaint about it from workers/2.
  for (const auto& line : lines_with_prefix(r.job.err, "[workers/2] ")) {
    EXPECT_EQ(line.find("workers/1"), std::string::npos) << r.job.describe();
  }
  expect_no_shm_leftovers(before);
}

TEST(Join, AMemberThatDiesBeforeJoiningTakesItsRankAndTheNextOneJoins) {
  TempDir dir;
  const std::string job_file = dir.file("job");
  SubprocessOptions opts;
  opts.timeout_ms = 120000;
  auto job = Subprocess::start({SLUICE_RUN_PATH,
                                "--job-file",
                                job_file,
                                "--timeout-s",
                                "90",
                                "--on-failure",
                                "continue",
                                "-n",
                                "leader=1",
                                "-n",
                                "workers=2",
                                "--",
                                CLUSTER_CHECK_PATH,
                                "--mode",
                                "broadcast",
                                "--until-join",
                                "3",
                                "--tail",
                                "100000",
                                "--die-member",
                                "2",
                                "--sluice-peer-timeout-ms=5000"},
                               opts);
  ASSERT_TRUE(wait_until([&] { return !read_file(job_file).empty(); }, 60000));
  auto first = run_command({SLUICE_RUN_PATH, "--join", job_file, "--add", "workers"});
  EXPECT_EQ(first.exit_code, 0) << first.describe();
  auto second = run_command({SLUICE_RUN_PATH, "--join", job_file, "--add", "workers"});
  EXPECT_EQ(second.exit_code, 0) << second.describe();
  EXPECT_NE(second.out.find("added workers/3 (rank 4, pid "), std::string::npos)
      << second.describe();
  auto r = job.wait();
  EXPECT_EQ(r.exit_code, 1) << r.describe();  // workers/2 exited 3
  EXPECT_NE(r.err.find("late member workers/2 exited with status 3 before it registered"),
            std::string::npos)
      << r.describe();
  EXPECT_NE(r.out.find("[leader/0] leader: MemberId<workers>(3) Joined"), std::string::npos)
      << r.describe();
  EXPECT_EQ(r.out.find("MemberId<workers>(2) Joined"), std::string::npos) << r.describe();
  auto w = worker_reports(r.out);
  EXPECT_TRUE(w[3].ok && w[3].count > 0 && w[3].last == w[0].last) << r.describe();
}

TEST_P(Transport, ClusterBroadcastingToItselfThroughLauncher) {
  auto r = run_command({SLUICE_RUN_PATH, "-n", "p2=1", "-n", "workers=4", "--", CLUSTER_CHECK_PATH,
                        "--mode", "self", flag()});
  ASSERT_EQ(r.exit_code, 0) << r.describe();
  auto got = lines_with_prefix(r.out, "[p2/0] self ");
  std::sort(got.begin(), got.end());
  std::vector<std::string> expect;
  for (int d = 0; d < 4; ++d) {
    for (int s = 0; s < 4; ++s) {
      expect.push_back("MemberId<workers>(" + std::to_string(d) + ") got (MemberId<workers>(" +
                       std::to_string(s) + "), " + std::to_string(10 * s) + ")");
    }
  }
  EXPECT_EQ(got, expect) << r.describe();
}

TEST(Join, UnknownLocationIsRefusedAndTheJobGoesOn) {
  TempDir dir;
  const std::string job_file = dir.file("job");
  auto job = Subprocess::start({SLUICE_RUN_PATH, "--job-file", job_file, "--timeout-s", "60", "-n",
                                "leader=1", "-n", "workers=2", "--", CLUSTER_CHECK_PATH, "--mode",
                                "broadcast", "--until-join", "2", "--tail", "1000"});
  ASSERT_TRUE(wait_until([&] { return !read_file(job_file).empty(); }, 60000));
  auto bad = run_command({SLUICE_RUN_PATH, "--join", job_file, "--add", "nowhere"});
  EXPECT_EQ(bad.exit_code, 1) << bad.describe();
  EXPECT_NE(bad.err.find("'nowhere' is not a location of this job"), std::string::npos)
      << bad.describe();
  // The job still takes a good request, and ends normally with it.
  auto good = run_command({SLUICE_RUN_PATH, "--join", job_file, "--add", "workers"});
  EXPECT_EQ(good.exit_code, 0) << good.describe();
  auto r = job.wait();
  EXPECT_EQ(r.exit_code, 0) << r.describe();
}

TEST(Join, NoJobFileIsAClearError) {
  TempDir dir;
  auto r = run_command({SLUICE_RUN_PATH, "--join", dir.file("absent"), "--add", "workers"});
  EXPECT_EQ(r.exit_code, 1) << r.describe();
  EXPECT_NE(r.err.find("cannot open job file"), std::string::npos) << r.describe();
  auto usage = run_command({SLUICE_RUN_PATH, "--join", dir.file("absent")});
  EXPECT_EQ(usage.exit_code, 2) << usage.describe();
  EXPECT_NE(usage.err.find("--join needs at least one --add NAME"), std::string::npos)
      << usage.describe();
}
}  // namespace
}  // namespace sluice::test
