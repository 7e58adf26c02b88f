// Test support: run a program with an argv, capture its stdout and stderr separately, and never
// hang: a watchdog kills the program's whole process group when its timeout runs out.
//
//   auto r = sluice::test::run_command({"sh", "-c", "echo hi; exit 3"});
//   EXPECT_EQ(r.exit_code, 3);
//   EXPECT_EQ(r.out, "hi\n");
//
// For a program the test must act on while it runs (send it a signal once it is ready), start a
// Subprocess, wait for a condition with wait_until, then call wait(). Single-threaded: use one
// Subprocess from one thread.
#pragma once

#include <sys/types.h>

#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace sluice::test {

struct SubprocessOptions {
  std::vector<std::pair<std::string, std::string>> set_env;  // added to (or replacing in) ours
  std::vector<std::string> unset_env;
  int timeout_ms = 60000;  // the watchdog, counted from start
};

struct ProcessResult {
  int exit_code = -1;      // the exit status when the program exited, else -1
  int term_signal = 0;     // the signal that killed it, else 0
  bool timed_out = false;  // the watchdog fired (the group was killed with SIGKILL)
  std::string out;
  std::string err;
  // "exit 3" / "signal 9" / "timed out", with the captured output, for assertion messages.
  std::string describe() const;
};

class Subprocess {
 public:
  // Starts `argv` (argv[0] looked up in PATH) in its own process group, stdin from /dev/null.
  // A failure to start shows as exit code 127 with the reason on `err`.
  static Subprocess start(const std::vector<std::string>& argv,
                          const SubprocessOptions& options = {});

  Subprocess(Subprocess&& other) noexcept;
  Subprocess& operator=(Subprocess&&) = delete;
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;
  ~Subprocess();  // kills the group and reaps it if wait() was not called

  pid_t pid() const { return pid_; }
  // Sends `sig` to the program itself (not its group).
  void send_signal(int sig) const;
  // Collects the output until the program has exited and closed both pipes, or until the
  // watchdog fires. Call once.
  ProcessResult wait();

 private:
  Subprocess() = default;
  pid_t pid_ = -1;
  int out_fd_ = -1;
  int err_fd_ = -1;
  long long deadline_ms_ = 0;  // on CLOCK_MONOTONIC
  std::string start_error_;
  bool waited_ = false;
};

ProcessResult run_command(const std::vector<std::string>& argv,
                          const SubprocessOptions& options = {});

// Polls `condition` (every few milliseconds) until it holds or `timeout_ms` passes; returns
// whether it held. For waiting on files and processes where no descriptor can be waited on.
bool wait_until(const std::function<bool()>& condition, int timeout_ms);

// A fresh directory under $TMPDIR (or /tmp), removed with its files on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// The whole file, or an empty string when it cannot be read.
std::string read_file(const std::string& path);

// The lines of `text` (without their newlines).
std::vector<std::string> split_lines(const std::string& text);

// True while `pid` names a process that exists (a zombie counts).
bool process_exists(pid_t pid);

}  // namespace sluice::test
