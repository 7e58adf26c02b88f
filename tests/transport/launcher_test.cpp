// Tests of sluice-run (run as a real process, with shell programs and fake_member as members),
// of the member side of its rendezvous (LauncherEnv, LauncherSession) and of the framing under it.
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "bootstrap_wire.hpp"
#include "sluice/transport/bootstrap.hpp"
#include "socket_util.hpp"
#include "subprocess.hpp"

#ifndef SLUICE_RUN_PATH
#error "SLUICE_RUN_PATH must name the sluice-run executable"
#endif
#ifndef FAKE_MEMBER_PATH
#error "FAKE_MEMBER_PATH must name the fake_member executable"
#endif

namespace sluice::transport {
namespace {

using test::process_exists;
using test::ProcessResult;
using test::split_lines;
using test::Subprocess;
using test::SubprocessOptions;
using test::TempDir;
using test::wait_until;

constexpr int kWaitMs = 30000;

std::vector<std::string> launcher_argv(std::vector<std::string> args) {
  args.insert(args.begin(), SLUICE_RUN_PATH);
  return args;
}

ProcessResult run_launcher(std::vector<std::string> args, SubprocessOptions options = {}) {
  return test::run_command(launcher_argv(std::move(args)), options);
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

std::vector<std::string> sorted_lines(const std::string& text) {
  std::vector<std::string> lines = split_lines(text);
  std::sort(lines.begin(), lines.end());
  return lines;
}

// The lines of `text` that start with `prefix`, without it, in order.
std::vector<std::string> lines_of(const std::string& text, const std::string& prefix) {
  std::vector<std::string> out;
  for (const std::string& line : split_lines(text)) {
    if (line.starts_with(prefix)) out.push_back(line.substr(prefix.size()));
  }
  return out;
}

pid_t read_pid(const std::string& path) {
  const std::string text = test::read_file(path);
  return text.empty() ? -1 : static_cast<pid_t>(std::stol(text));
}

// A member script fragment: record this shell's pid in $D/pid.$SLUICE_RANK, atomically, so a
// reader never sees half a number.
constexpr const char* kWritePid =
    "echo $$ > \"$D/pid.$SLUICE_RANK.tmp\" && mv \"$D/pid.$SLUICE_RANK.tmp\" "
    "\"$D/pid.$SLUICE_RANK\"; ";
// Waits until every rank listed in $WAIT has written its pid file.
constexpr const char* kWaitPids =
    "for r in $WAIT; do while [ ! -s \"$D/pid.$r\" ]; do sleep 0.01; done; done; ";

SubprocessOptions with_dir(const TempDir& dir, const std::string& wait_for = "") {
  SubprocessOptions o;
  o.set_env = {{"D", dir.path()}, {"WAIT", wait_for}};
  return o;
}

// ---- Command line -------------------------------------------------------------------------

class LauncherBadUsage : public ::testing::TestWithParam<std::vector<std::string>> {};

TEST_P(LauncherBadUsage, ExitsTwoWithOneLine) {
  const ProcessResult r = run_launcher(GetParam());

  EXPECT_EQ(r.exit_code, 2) << r.describe();
  const auto lines = split_lines(r.err);
  ASSERT_EQ(lines.size(), 1u) << r.describe();
  EXPECT_TRUE(lines[0].starts_with("sluice-run: ")) << lines[0];
  EXPECT_TRUE(contains(lines[0], "sluice-run --help")) << lines[0];
  EXPECT_EQ(r.out, "");
}

INSTANTIATE_TEST_SUITE_P(
    Launcher, LauncherBadUsage,
    ::testing::Values(std::vector<std::string>{}, std::vector<std::string>{"-n"},
                      std::vector<std::string>{"-n", "p1", "--", "true"},
                      std::vector<std::string>{"-n", "p1=0", "--", "true"},
                      std::vector<std::string>{"-n", "p1=1"},
                      std::vector<std::string>{"-n", "p1=1", "--"},
                      std::vector<std::string>{"--", "true"},
                      std::vector<std::string>{"--bogus", "-n", "p1=1", "--", "true"},
                      std::vector<std::string>{"--on-failure", "maybe", "-n", "p1=1", "--", "true"},
                      std::vector<std::string>{"--grace-ms", "soon", "-n", "p1=1", "--", "true"},
                      std::vector<std::string>{"--timeout-s=-1", "-n", "p1=1", "--", "true"},
                      std::vector<std::string>{"-n", "a=1", "-n", "a=2", "--", "true"}));

TEST(Launcher, HelpPrintsUsageAndExitsZero) {
  const ProcessResult r = run_launcher({"--help"});

  EXPECT_EQ(r.exit_code, 0) << r.describe();
  EXPECT_TRUE(r.out.starts_with("usage: sluice-run")) << r.out;
}

// ---- Output and environment ---------------------------------------------------------------

TEST(Launcher, PrefixesEveryLineWithItsMember) {
  const ProcessResult r =
      run_launcher({"-n", "p1=1", "-n", "p2=2", "--", "sh", "-c",
                    "echo \"out $SLUICE_RANK\"; echo \"err $SLUICE_RANK\" >&2; printf 'tail'"});

  ASSERT_EQ(r.exit_code, 0) << r.describe();
  EXPECT_EQ(sorted_lines(r.out),
            (std::vector<std::string>{"[p1/0] out 0", "[p1/0] tail", "[p2/0] out 1", "[p2/0] tail",
                                      "[p2/1] out 2", "[p2/1] tail"}));
  EXPECT_EQ(sorted_lines(r.err),
            (std::vector<std::string>{"[p1/0] err 0", "[p2/0] err 1", "[p2/1] err 2"}));
  EXPECT_TRUE(r.out.ends_with("\n"));  // the partial last line is completed
}

TEST(Launcher, KeepsTheOrderOfOneMembersLines) {
  const ProcessResult r =
      run_launcher({"-n", "p=1", "--", "sh", "-c", "for i in 1 2 3 4 5; do echo $i; done"});

  ASSERT_EQ(r.exit_code, 0) << r.describe();
  EXPECT_EQ(r.out, "[p/0] 1\n[p/0] 2\n[p/0] 3\n[p/0] 4\n[p/0] 5\n");
}

TEST(Launcher, NoPrefixWritesLinesAsTheyAre) {
  const ProcessResult r = run_launcher({"--no-prefix", "-n", "p=2", "--", "echo", "plain"});

  ASSERT_EQ(r.exit_code, 0) << r.describe();
  EXPECT_EQ(r.out, "plain\nplain\n");
}

TEST(Launcher, PassesTheJobEnvironmentToEachMember) {
  SubprocessOptions o;
  // A stale launcher variable in sluice-run's own environment must not reach the members.
  o.set_env = {{"SLUICE_TOKEN", "stale"}, {"SLUICE_TEST_INHERITED", "kept"}};
  const ProcessResult r = run_launcher(
      {"-n", "p1=1", "-n", "p2=2", "--", "sh", "-c",
       "echo $SLUICE_RANK $SLUICE_LOCATION $SLUICE_MEMBER $SLUICE_LAYOUT $SLUICE_RENDEZVOUS "
       "$SLUICE_TOKEN $SLUICE_JOB_ID $SLUICE_TEST_INHERITED"},
      o);

  ASSERT_EQ(r.exit_code, 0) << r.describe();
  std::map<std::string, std::vector<std::string>> fields;  // by prefix
  for (const std::string& line : split_lines(r.out)) {
    std::istringstream in(line);
    std::string prefix;
    in >> prefix;
    for (std::string f; in >> f;) fields[prefix].push_back(f);
  }
  ASSERT_EQ(fields.size(), 3u) << r.out;
  const std::vector<std::pair<std::string, std::vector<std::string>>> want = {
      {"[p1/0]", {"0", "p1", "0"}}, {"[p2/0]", {"1", "p2", "0"}}, {"[p2/1]", {"2", "p2", "1"}}};
  for (const auto& [prefix, head] : want) {
    const auto& f = fields[prefix];
    ASSERT_EQ(f.size(), 8u) << prefix << ": " << r.out;
    EXPECT_EQ(f[0], head[0]) << prefix;
    EXPECT_EQ(f[1], head[1]) << prefix;
    EXPECT_EQ(f[2], head[2]) << prefix;
    EXPECT_EQ(f[3], "p1=1,p2=2") << prefix;
    EXPECT_TRUE(f[4].starts_with("127.0.0.1:")) << f[4];
    EXPECT_EQ(f[5].size(), 32u) << f[5];
    EXPECT_EQ(f[5].find_first_not_of("0123456789abcdef"), std::string::npos) << f[5];
    EXPECT_EQ(f[7], "kept");
    // One job: one rendezvous, token and job id shared by every member.
    EXPECT_EQ(f[4], fields["[p1/0]"][4]);
    EXPECT_EQ(f[5], fields["[p1/0]"][5]);
    EXPECT_EQ(f[6], fields["[p1/0]"][6]);
  }
}

TEST(Launcher, DescendantStillWritingDoesNotKeepTheJobAlive) {
  TempDir dir;
  // The member exits at once, leaving behind a child that holds its stdout and never stops.
  const ProcessResult r =
      run_launcher({"-n", "p=1", "--", "sh", "-c",
                    "(while :; do echo spam; done) & echo $! > \"$D/bg\"; echo done"},
                   with_dir(dir));

  EXPECT_FALSE(r.timed_out);
  EXPECT_EQ(r.exit_code, 0) << r.describe();
  EXPECT_TRUE(contains(r.out, "[p/0] done\n"));
  const pid_t writer = read_pid(dir.file("bg"));
  ASSERT_GT(writer, 0);
  // With the launcher gone its next write fails (SIGPIPE); make sure of it either way.
  kill(writer, SIGKILL);
}

// ---- Failures -----------------------------------------------------------------------------

TEST(Launcher, MemberExitingWithStatusThreeEndsTheJob) {
  TempDir dir;
  const ProcessResult r =
      run_launcher({"-n", "p1=1", "-n", "p2=1", "--", "sh", "-c",
                    std::string("if [ \"$SLUICE_RANK\" = 1 ]; then ") + kWaitPids + "exit 3; fi; " +
                        kWritePid + "exec sleep 600"},
                   with_dir(dir, "0"));

  EXPECT_EQ(r.exit_code, 1) << r.describe();
  EXPECT_TRUE(contains(r.err, "sluice-run: member p2/0 (pid ")) << r.err;
  EXPECT_TRUE(contains(r.err, ") exited with status 3; ending the job\n")) << r.err;
  const pid_t survivor = read_pid(dir.file("pid.0"));
  ASSERT_GT(survivor, 0);
  EXPECT_FALSE(process_exists(survivor)) << "p1/0 (pid " << survivor << ") outlived the job";
}

TEST(Launcher, MemberKilledBySignalIsNamedAndTheOthersAreTerminated) {
  TempDir dir;
  const ProcessResult r =
      run_launcher({"-n", "p1=2", "-n", "p2=1", "--", "sh", "-c",
                    std::string(kWritePid) + "if [ \"$SLUICE_RANK\" = 2 ]; then " + kWaitPids +
                        "kill -9 $$; fi; exec sleep 600"},
                   with_dir(dir, "0 1"));

  EXPECT_EQ(r.exit_code, 1) << r.describe();
  const pid_t killed = read_pid(dir.file("pid.2"));
  EXPECT_TRUE(contains(r.err, "sluice-run: member p2/0 (pid " + std::to_string(killed) +
                                  ") was killed by signal 9 (Killed); ending the job\n"))
      << r.err;
  for (const char* name : {"pid.0", "pid.1"}) {
    const pid_t pid = read_pid(dir.file(name));
    ASSERT_GT(pid, 0) << name;
    EXPECT_FALSE(process_exists(pid)) << name << " (pid " << pid << ") outlived the job";
  }
}

TEST(Launcher, MemberIgnoringSigtermIsKilledAfterTheGrace) {
  TempDir dir;
  const ProcessResult r =
      run_launcher({"--grace-ms", "100", "-n", "p1=1", "-n", "p2=1", "--", "sh", "-c",
                    std::string("if [ \"$SLUICE_RANK\" = 1 ]; then ") + kWaitPids + "exit 3; fi; " +
                        "trap '' TERM; " + kWritePid + "exec sleep 600"},
                   with_dir(dir, "0"));

  EXPECT_EQ(r.exit_code, 1) << r.describe();
  EXPECT_TRUE(contains(r.err, "still running after --grace-ms 100; killing them")) << r.err;
  const pid_t stubborn = read_pid(dir.file("pid.0"));
  ASSERT_GT(stubborn, 0);
  EXPECT_FALSE(process_exists(stubborn));
}

TEST(Launcher, ProgramThatCannotStartEndsTheJob) {
  const ProcessResult r = run_launcher({"-n", "p=2", "--", "/nonexistent/sluice-program"});

  EXPECT_EQ(r.exit_code, 127) << r.describe();
  EXPECT_TRUE(contains(r.err,
                       "cannot start member p/0: '/nonexistent/sluice-program': No such "
                       "file or directory"))
      << r.err;
}

TEST(Launcher, TimeoutEndsTheJobWithAnError) {
  const ProcessResult r = run_launcher({"--timeout-s", "1", "-n", "p=2", "--", "sleep", "600"});

  EXPECT_EQ(r.exit_code, 124) << r.describe();
  EXPECT_TRUE(contains(r.err, "the job ran past --timeout-s 1; ending it")) << r.err;
}

TEST(Launcher, AllMembersExitingZeroExitsZero) {
  const ProcessResult r = run_launcher({"-n", "a=1", "-n", "b=3", "--", "true"});

  EXPECT_EQ(r.exit_code, 0) << r.describe();
  EXPECT_EQ(r.err, "");
}

// ---- Signals ------------------------------------------------------------------------------

TEST(Launcher, SigtermEndsEveryMember) {
  TempDir dir;
  Subprocess launcher = Subprocess::start(
      launcher_argv({"-n", "p=3", "--", "sh", "-c", std::string(kWritePid) + "exec sleep 600"}),
      with_dir(dir));
  ASSERT_TRUE(wait_until(
      [&] {
        return read_pid(dir.file("pid.0")) > 0 && read_pid(dir.file("pid.1")) > 0 &&
               read_pid(dir.file("pid.2")) > 0;
      },
      kWaitMs));

  launcher.send_signal(SIGTERM);
  const ProcessResult r = launcher.wait();

  EXPECT_EQ(r.exit_code, 128 + SIGTERM) << r.describe();
  EXPECT_TRUE(contains(r.err, "received SIGTERM; forwarding it to 3 running members")) << r.err;
  for (const char* name : {"pid.0", "pid.1", "pid.2"}) {
    const pid_t pid = read_pid(dir.file(name));
    EXPECT_FALSE(process_exists(pid)) << name << " (pid " << pid << ") outlived the job";
  }
}

TEST(Launcher, SecondSigintKillsAtOnce) {
  TempDir dir;
  // The members survive SIGINT (noting it in a file) and ignore SIGTERM, and the grace is long:
  // only the second SIGINT's SIGKILL can end this job in time. The shell waits with the `wait`
  // builtin, which a trapped signal interrupts at once; a foreground sleep would hold the trap
  // back until the sleep ends, and a SIGINT that hits the sleep before its exec is lost.
  Subprocess launcher = Subprocess::start(
      launcher_argv({"--grace-ms", "600000", "-n", "p=2", "--", "sh", "-c",
                     std::string("trap 'touch \"$D/int.$SLUICE_RANK\"' INT; trap '' TERM; ") +
                         kWritePid + "while :; do sleep 600 & wait $!; done"}),
      with_dir(dir));
  ASSERT_TRUE(wait_until(
      [&] { return read_pid(dir.file("pid.0")) > 0 && read_pid(dir.file("pid.1")) > 0; }, kWaitMs));

  launcher.send_signal(SIGINT);
  // The member noted the first SIGINT, so the launcher has handled it: the next one is second.
  ASSERT_TRUE(wait_until([&] { return access(dir.file("int.0").c_str(), F_OK) == 0; }, kWaitMs));
  launcher.send_signal(SIGINT);
  const ProcessResult r = launcher.wait();

  EXPECT_FALSE(r.timed_out) << r.describe();
  EXPECT_EQ(r.exit_code, 128 + SIGINT) << r.describe();
  EXPECT_TRUE(contains(r.err, "received SIGINT again; killing")) << r.err;
  EXPECT_FALSE(process_exists(read_pid(dir.file("pid.0"))));
  EXPECT_FALSE(process_exists(read_pid(dir.file("pid.1"))));
}

TEST(Launcher, KilledLauncherLeavesNoOrphans) {
  // Orphans are re-parented to this test process, so it can see (and reap) them.
  ASSERT_EQ(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
  TempDir dir;
  Subprocess launcher = Subprocess::start(
      launcher_argv({"-n", "p=2", "--", "sh", "-c", std::string(kWritePid) + "exec sleep 600"}),
      with_dir(dir));
  ASSERT_TRUE(wait_until(
      [&] { return read_pid(dir.file("pid.0")) > 0 && read_pid(dir.file("pid.1")) > 0; }, kWaitMs));

  launcher.send_signal(SIGKILL);
  const ProcessResult r = launcher.wait();

  EXPECT_EQ(r.term_signal, SIGKILL) << r.describe();
  for (const char* name : {"pid.0", "pid.1"}) {
    const pid_t pid = read_pid(dir.file(name));
    int status = 0;
    // Each member must die of its parent-death signal and land here to be reaped.
    EXPECT_TRUE(wait_until([&] { return waitpid(pid, &status, WNOHANG) == pid; }, kWaitMs))
        << name << " (pid " << pid << ") outlived the launcher";
    EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << name;
  }
  prctl(PR_SET_CHILD_SUBREAPER, 0);
}

// ---- Rendezvous ---------------------------------------------------------------------------

// Checks that every member printed the same table of `size` peers in rank order.
void expect_tables(const ProcessResult& r, const std::vector<std::string>& members) {
  std::vector<std::string> first;
  for (size_t rank = 0; rank < members.size(); ++rank) {
    std::vector<std::string> lines = lines_of(r.out, "[" + members[rank] + "] ");
    std::erase_if(lines, [](const std::string& l) {
      return !l.starts_with("table") && !l.starts_with("peer");
    });
    ASSERT_EQ(lines.size(), members.size() + 1) << members[rank] << "\n" << r.out;
    EXPECT_TRUE(lines[0].starts_with("table job=")) << lines[0];
    EXPECT_TRUE(lines[0].ends_with(" size=" + std::to_string(members.size()))) << lines[0];
    for (size_t i = 0; i < members.size(); ++i) {
      const std::string want = "peer " + std::to_string(i) + " " + members[i] + " pid=";
      EXPECT_TRUE(lines[i + 1].starts_with(want)) << lines[i + 1];
      EXPECT_TRUE(lines[i + 1].ends_with(" addr=addr-" + std::to_string(i))) << lines[i + 1];
    }
    if (rank == 0) {
      first = lines;
    } else {
      EXPECT_EQ(lines, first) << "members disagree on the table";
    }
  }
}

TEST(Launcher, RendezvousGivesEveryMemberTheTableInRankOrder) {
  const ProcessResult r = run_launcher({"-n", "a=1", "-n", "b=2", "--", FAKE_MEMBER_PATH});

  ASSERT_EQ(r.exit_code, 0) << r.describe();
  expect_tables(r, {"a/0", "b/0", "b/1"});
}

struct BadClient {
  const char* kind;
  const char* reason;
};

class LauncherBadClient : public ::testing::TestWithParam<BadClient> {};

TEST_P(LauncherBadClient, IsRejectedAndTheJobCompletes) {
  const ProcessResult r = run_launcher(
      {"-n", "a=1", "-n", "b=2", "--", FAKE_MEMBER_PATH, "--bad-client", GetParam().kind});

  ASSERT_EQ(r.exit_code, 0) << r.describe();
  const std::string answer = "[a/0] bad-client " + std::string(GetParam().kind) + ": ";
  EXPECT_TRUE(contains(r.out, answer)) << r.out;
  EXPECT_TRUE(contains(r.out, GetParam().reason)) << r.out;
  EXPECT_TRUE(contains(r.err, "sluice-run: rejected a rendezvous connection")) << r.err;
  EXPECT_TRUE(contains(r.err, GetParam().reason)) << r.err;
  expect_tables(r, {"a/0", "b/0", "b/1"});
}

INSTANTIATE_TEST_SUITE_P(
    Launcher, LauncherBadClient,
    ::testing::Values(BadClient{"token", "the token does not match this job's"},
                      BadClient{"garbage", "malformed message: expected a bootstrap message"},
                      BadClient{"oversize",
                                "expected a message length of 1..16777216 bytes, got a length "
                                "prefix of 2147483647"},
                      BadClient{"rank", "rank 99 is not in layout 'a=1,b=2' (3 ranks)"},
                      BadClient{"not-register", "expected a Register message, got MemberExited"}),
    [](const auto& param_info) {
      std::string name = param_info.param.kind;
      std::erase(name, '-');
      return name;
    });

TEST(Launcher, ContinueModeKeepsSurvivorsAndReportsTheExit) {
  const ProcessResult r =
      run_launcher({"--on-failure", "continue", "-n", "a=1", "-n", "b=2", "--", FAKE_MEMBER_PATH,
                    "--die-rank", "2", "--die-how", "status:5", "--wait-exits", "1"});

  EXPECT_EQ(r.exit_code, 1) << r.describe();
  EXPECT_TRUE(contains(r.out, "[a/0] exited rank=2 status=5 signal=0\n")) << r.out;
  EXPECT_TRUE(contains(r.out, "[b/0] exited rank=2 status=5 signal=0\n")) << r.out;
  EXPECT_TRUE(contains(r.err, ") exited with status 5; the job continues\n")) << r.err;
  EXPECT_TRUE(contains(r.err, "sluice-run: 1 of 3 members failed: b/1 (pid ")) << r.err;
}

TEST(Launcher, ContinueModeReportsAKillBySignal) {
  const ProcessResult r =
      run_launcher({"--on-failure=continue", "-n", "a=1", "-n", "b=2", "--", FAKE_MEMBER_PATH,
                    "--die-rank", "1", "--die-how", "signal:9", "--wait-exits", "1"});

  EXPECT_EQ(r.exit_code, 1) << r.describe();
  EXPECT_TRUE(contains(r.out, "[a/0] exited rank=1 status=0 signal=9\n")) << r.out;
  EXPECT_TRUE(contains(r.out, "[b/1] exited rank=1 status=0 signal=9\n")) << r.out;
  EXPECT_TRUE(contains(r.err, "sluice-run: member b/0 (pid ")) << r.err;
  EXPECT_TRUE(contains(r.err, ") was killed by signal 9 (Killed); the job continues\n")) << r.err;
  EXPECT_TRUE(contains(r.err, "members failed: b/0 (pid ")) << r.err;
}

TEST(Launcher, MemberLeavingBeforeRegisteringFailsTheRendezvousClearly) {
  const ProcessResult r = run_launcher(
      {"-n", "a=1", "-n", "b=1", "--", "sh", "-c",
       std::string("if [ \"$SLUICE_RANK\" = 1 ]; then exit 0; fi; exec ") + FAKE_MEMBER_PATH});

  EXPECT_EQ(r.exit_code, 1) << r.describe();
  EXPECT_TRUE(contains(r.err, "[a/0] fake_member: ")) << r.err;
  EXPECT_TRUE(contains(r.err, "member b/0 exited with status 0 before it registered")) << r.err;
}

// ---- The member's side --------------------------------------------------------------------

// Sets the launcher variables for one test and restores the environment after it.
class LauncherEnvTest : public ::testing::Test {
 protected:
  static constexpr const char* kNames[] = {kEnvRendezvous, kEnvToken, kEnvLayout, kEnvLocation,
                                           kEnvMember,     kEnvRank,  kEnvJobId};
  void SetUp() override {
    for (const char* n : kNames) {
      const char* v = std::getenv(n);
      saved_.emplace_back(n, v ? std::optional<std::string>(v) : std::nullopt);
    }
    set(kEnvRendezvous, "127.0.0.1:4242");
    set(kEnvToken, "0123456789abcdef0123456789ABCDEF");
    set(kEnvLayout, "p1=1,p2=2");
    set(kEnvLocation, "p2");
    set(kEnvMember, "1");
    set(kEnvRank, "2");
    set(kEnvJobId, "job-7");
  }
  void TearDown() override {
    for (const auto& [n, v] : saved_) {
      if (v) {
        setenv(n.c_str(), v->c_str(), 1);
      } else {
        unsetenv(n.c_str());
      }
    }
  }
  static void set(const char* name, const char* value) { setenv(name, value, 1); }

 private:
  std::vector<std::pair<std::string, std::optional<std::string>>> saved_;
};

TEST_F(LauncherEnvTest, ReadsEveryVariable) {
  auto env = LauncherEnv::from_environment();

  ASSERT_TRUE(env) << env.error();
  EXPECT_TRUE(LauncherEnv::present());
  EXPECT_EQ(env->rendezvous_host, "127.0.0.1");
  EXPECT_EQ(env->rendezvous_port, 4242);
  EXPECT_EQ(env->token, "0123456789abcdef0123456789ABCDEF");
  EXPECT_EQ(env->job_id, "job-7");
  EXPECT_EQ(env->layout.to_string(), "p1=1,p2=2");
  EXPECT_EQ(env->location, "p2");
  EXPECT_EQ(env->member, 1u);
  EXPECT_EQ(env->rank, 2u);
}

TEST_F(LauncherEnvTest, NoVariablesAtAllSaysNotStartedBySluiceRun) {
  for (const char* n : kNames) unsetenv(n);

  auto env = LauncherEnv::from_environment();

  EXPECT_FALSE(LauncherEnv::present());
  ASSERT_FALSE(env);
  EXPECT_EQ(env.error(),
            "SLUICE_RENDEZVOUS is not set (this process was not started by sluice-run?)");
}

TEST_F(LauncherEnvTest, MissingRankIsNamed) {
  unsetenv(kEnvRank);

  auto env = LauncherEnv::from_environment();

  ASSERT_FALSE(env);
  EXPECT_EQ(env.error(), "SLUICE_RANK is not set (this process was not started by sluice-run?)");
}

struct BadVariable {
  const char* name;
  const char* value;
  const char* message_part;
};

class LauncherEnvRejects : public LauncherEnvTest,
                           public ::testing::WithParamInterface<BadVariable> {};

TEST_P(LauncherEnvRejects, WithAOneLineErrorNamingTheVariable) {
  set(GetParam().name, GetParam().value);

  auto env = LauncherEnv::from_environment();

  ASSERT_FALSE(env) << GetParam().name << "=" << GetParam().value;
  EXPECT_TRUE(env.error().starts_with(GetParam().name)) << env.error();
  EXPECT_TRUE(contains(env.error(), GetParam().message_part)) << env.error();
  EXPECT_EQ(env.error().find('\n'), std::string::npos);
}

INSTANTIATE_TEST_SUITE_P(
    LauncherEnv, LauncherEnvRejects,
    ::testing::Values(BadVariable{kEnvRendezvous, "127.0.0.1", "HOST:PORT"},
                      BadVariable{kEnvRendezvous, "127.0.0.1:0", "1..65535"},
                      BadVariable{kEnvRendezvous, "127.0.0.1:99999", "1..65535"},
                      BadVariable{kEnvToken, "abc", "32 hex digits"},
                      BadVariable{kEnvToken, "0123456789abcdef0123456789abcdeg", "hex digits"},
                      BadVariable{kEnvLayout, "p1=1,p2=0", "1..65535"},
                      BadVariable{kEnvLocation, "p3", "not a location"},
                      BadVariable{kEnvMember, "x", "member index"},
                      BadVariable{kEnvMember, "2", "expected below 2"},
                      BadVariable{kEnvRank, "-1", "'-1'"},
                      BadVariable{kEnvRank, "1", "expected 2 for p2/1"},
                      BadVariable{kEnvJobId, "", "is set but empty"}));

// A one-shot fake launcher on loopback, on its own thread: accepts one connection, reads one
// message, answers with the bytes of `reply` (framed by the caller) and closes.
class FakeRendezvous {
 public:
  explicit FakeRendezvous(std::vector<uint8_t> reply) : reply_(std::move(reply)) {
    auto l = detail::listen_loopback();
    EXPECT_TRUE(l) << l.error();
    listener_ = std::move(*l);
    thread_ = std::thread([this] { serve(); });
  }
  ~FakeRendezvous() { thread_.join(); }
  uint16_t port() const { return listener_.port; }

 private:
  void serve() {
    pollfd p{listener_.fd.get(), POLLIN, 0};
    if (poll(&p, 1, kWaitMs) != 1) return;
    detail::UniqueFd c(accept4(listener_.fd.get(), nullptr, nullptr, SOCK_CLOEXEC));
    auto reg = detail::receive_message(c.get(), detail::Deadline::after_ms(kWaitMs));
    if (!reg) return;
    (void)detail::write_all(c.get(), reply_, detail::Deadline::after_ms(kWaitMs));
  }
  std::vector<uint8_t> reply_;
  detail::Listener listener_;
  std::thread thread_;
};

LauncherEnv test_env(uint16_t port) {
  LauncherEnv env;
  env.rendezvous_host = "127.0.0.1";
  env.rendezvous_port = port;
  env.token = std::string(32, 'a');
  env.job_id = "job-1";
  env.layout = Layout::parse("p1=1,p2=1").value();
  env.rank = 1;
  env.location = "p2";
  env.member = 0;
  return env;
}

std::vector<PeerInfo> good_peers() {
  return {PeerInfo{0, "p1", 0, 10, "h", {1, 2}}, PeerInfo{1, "p2", 0, 11, "h", {3}}};
}

TEST(LauncherSession, ReceivesTheTableAndKeepsItsIdentity) {
  FakeRendezvous fake(detail::frame_message(detail::encode_address_table("job-1", good_peers())));

  auto s = LauncherSession::connect(test_env(fake.port()), PeerInfo{}, kWaitMs);

  ASSERT_TRUE(s) << s.error();
  ASSERT_EQ((*s)->peers().size(), 2u);
  EXPECT_EQ((*s)->peers()[0].address, (std::vector<uint8_t>{1, 2}));
  EXPECT_EQ((*s)->peers()[1].pid, 11u);
  EXPECT_EQ((*s)->job_id(), "job-1");
}

TEST(LauncherSession, RejectIsAnErrorWithItsReason) {
  FakeRendezvous fake(detail::frame_message(detail::encode_reject("go away")));

  auto s = LauncherSession::connect(test_env(fake.port()), PeerInfo{}, kWaitMs);

  ASSERT_FALSE(s);
  EXPECT_TRUE(contains(s.error(), "rejected this member (p2/0): go away")) << s.error();
}

TEST(LauncherSession, TableOfAnotherJobIsAnError) {
  FakeRendezvous fake(detail::frame_message(detail::encode_address_table("job-2", good_peers())));

  auto s = LauncherSession::connect(test_env(fake.port()), PeerInfo{}, kWaitMs);

  ASSERT_FALSE(s);
  EXPECT_TRUE(contains(s.error(),
                       "expected an address table for job 'job-1', got one for job "
                       "'job-2'"))
      << s.error();
}

TEST(LauncherSession, TableOutOfRankOrderIsAnError) {
  std::vector<PeerInfo> peers = good_peers();
  std::swap(peers[0], peers[1]);
  FakeRendezvous fake(detail::frame_message(detail::encode_address_table("job-1", peers)));

  auto s = LauncherSession::connect(test_env(fake.port()), PeerInfo{}, kWaitMs);

  ASSERT_FALSE(s);
  EXPECT_TRUE(contains(s.error(), "expected entry 0 of the address table to be rank 0 (p1/0)"))
      << s.error();
}

TEST(LauncherSession, MalformedReplyIsAnError) {
  const std::vector<uint8_t> junk(40, 0x5a);
  FakeRendezvous fake(detail::frame_message(junk));

  auto s = LauncherSession::connect(test_env(fake.port()), PeerInfo{}, kWaitMs);

  ASSERT_FALSE(s);
  EXPECT_TRUE(contains(s.error(), "fail verification")) << s.error();
}

TEST(LauncherSession, NoLauncherListeningIsAnErrorNamingTheVariable) {
  uint16_t port = 0;
  {
    auto l = detail::listen_loopback();  // a port nobody listens on once this closes
    ASSERT_TRUE(l) << l.error();
    port = l->port;
  }
  auto s = LauncherSession::connect(test_env(port), PeerInfo{}, kWaitMs);

  ASSERT_FALSE(s);
  EXPECT_TRUE(contains(s.error(), "SLUICE_RENDEZVOUS=127.0.0.1:" + std::to_string(port)))
      << s.error();
}

// ---- Framing ------------------------------------------------------------------------------

class Framing : public ::testing::Test {
 protected:
  void SetUp() override {
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    a_ = detail::UniqueFd(sv[0]);
    b_ = detail::UniqueFd(sv[1]);
  }
  void write_raw(const std::vector<uint8_t>& bytes) {
    ASSERT_TRUE(detail::write_all(a_.get(), bytes, detail::Deadline::after_ms(kWaitMs)));
  }
  detail::UniqueFd a_;
  detail::UniqueFd b_;
};

TEST_F(Framing, RoundTripsAMessage) {
  const std::vector<uint8_t> payload = {1, 2, 3, 4, 5};
  ASSERT_TRUE(detail::send_message(a_.get(), payload, detail::Deadline::after_ms(kWaitMs)));

  auto got = detail::receive_message(b_.get(), detail::Deadline::after_ms(kWaitMs));

  ASSERT_TRUE(got) << got.error();
  EXPECT_EQ(*got, payload);
}

TEST_F(Framing, OversizeLengthIsRejectedBeforeReading) {
  write_raw({0x01, 0x00, 0x00, 0x01});  // 16 MiB + 1

  auto got = detail::receive_message(b_.get(), detail::Deadline::after_ms(kWaitMs));

  ASSERT_FALSE(got);
  EXPECT_EQ(got.error(),
            "expected a message length of 1..16777216 bytes, got a length prefix of 16777217");
}

TEST_F(Framing, ZeroLengthIsRejected) {
  write_raw({0, 0, 0, 0});

  auto got = detail::receive_message(b_.get(), detail::Deadline::after_ms(kWaitMs));

  ASSERT_FALSE(got);
  EXPECT_TRUE(contains(got.error(), "got a length prefix of 0")) << got.error();
}

TEST_F(Framing, TruncatedMessageSaysHowMuchArrived) {
  write_raw({10, 0, 0, 0, 'a', 'b', 'c'});
  a_.reset();

  auto got = detail::receive_message(b_.get(), detail::Deadline::after_ms(kWaitMs));

  ASSERT_FALSE(got);
  EXPECT_EQ(got.error(), "expected 10 bytes of a message body, got 3 before the peer closed");
}

TEST_F(Framing, DeadlineEndsAWaitForAMessage) {
  write_raw({10, 0, 0});

  auto got = detail::receive_message(b_.get(), detail::Deadline::after_ms(0));

  ASSERT_FALSE(got);
  EXPECT_TRUE(contains(got.error(), "timed out")) << got.error();
}

TEST(FramingBuffer, TakesOnlyWholeMessages) {
  std::vector<uint8_t> buffer = {3, 0, 0, 0, 'x', 'y'};

  auto none = detail::take_message(buffer);
  ASSERT_TRUE(none) << none.error();
  EXPECT_FALSE(none->has_value());

  buffer.push_back('z');
  buffer.push_back(1);  // the start of the next prefix stays behind
  auto one = detail::take_message(buffer);
  ASSERT_TRUE(one) << one.error();
  ASSERT_TRUE(one->has_value());
  EXPECT_EQ(**one, (std::vector<uint8_t>{'x', 'y', 'z'}));
  EXPECT_EQ(buffer, (std::vector<uint8_t>{1}));
}

TEST(BootstrapWire, VerifierRejectsACutMessage) {
  std::vector<uint8_t> bytes = detail::encode_reject("a reason long enough to cut");
  bytes.resize(bytes.size() - 8);

  auto msg = detail::verify_bootstrap(bytes);

  ASSERT_FALSE(msg);
  EXPECT_TRUE(contains(msg.error(), "fail verification")) << msg.error();
}

TEST(BootstrapWire, RegisterRoundTrips) {
  const PeerInfo self{3, "workers", 2, 99, "host", {7, 8, 9}};
  const std::vector<uint8_t> bytes = detail::encode_register(std::string(32, 'f'), self);

  auto msg = detail::verify_bootstrap(bytes);

  ASSERT_TRUE(msg) << msg.error();
  const wire::Register* r = (*msg)->body_as_Register();
  ASSERT_NE(r, nullptr);
  const PeerInfo back = detail::peer_from_register(*r);
  EXPECT_EQ(back.rank, 3u);
  EXPECT_EQ(back.location, "workers");
  EXPECT_EQ(back.member, 2u);
  EXPECT_EQ(back.pid, 99u);
  EXPECT_EQ(back.address, self.address);
}

}  // namespace
}  // namespace sluice::transport
