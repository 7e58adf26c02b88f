// sluice-run: the mpirun-style launcher (private to the sluice-run executable).
//
// `run_job` starts one process per member of a layout on this host, hosts the token-protected
// rendezvous they register their addresses with (schema/bootstrap.fbs), prefixes their output
// lines, forwards SIGINT/SIGTERM, and ends the job when a member fails (or, with
// `--on-failure continue`, reports the failure to the survivors). It is single-threaded: one
// poll() loop over the members' pipes, the rendezvous sockets and a signalfd.
#pragma once

#include <optional>
#include <span>
#include <string>
#include <vector>

#include "sluice/transport/layout.hpp"
#include "sluice/transport/result.hpp"

namespace sluice::transport::launcher {

// Exit codes of sluice-run besides 0 (every member exited 0) and 128+N (ended by signal N).
inline constexpr int kExitMemberFailed = 1;   // a member exited non-zero or was killed
inline constexpr int kExitUsage = 2;          // bad command line
inline constexpr int kExitTimeout = 124;      // --timeout-s ran out (as timeout(1))
inline constexpr int kExitCannotStart = 127;  // PROGRAM could not be executed (as the shells)

enum class OnFailure { kAbort, kContinue };

struct LaunchOptions {
  Layout layout;  // from the -n flags, ranks in their order (the job's starting shape)
  // Where to write the job file that lets `sluice-run --join` add members to the running job
  // (rendezvous address, token; mode 0600; removed when the job ends). Empty: none, and the job
  // cannot grow.
  std::string job_file;
  OnFailure on_failure = OnFailure::kAbort;
  int grace_ms = 3000;               // between SIGTERM and SIGKILL when ending the job
  int timeout_s = 0;                 // 0: none
  bool prefix = true;                // "[name/member] " before every output line
  std::vector<std::string> command;  // PROGRAM ARGS...
};

// `sluice-run --join FILE --add NAME [--add NAME ...]`: asks the job FILE describes to start one
// more member of each NAME (in order).
struct JoinOptions {
  std::string job_file;
  std::vector<std::string> locations;
  int timeout_ms = 30000;
};

struct ParsedArguments {
  bool help = false;  // -h/--help: print usage_text() and exit 0
  LaunchOptions options;
  std::optional<JoinOptions> join;  // set: a join request instead of a job
};

// Parses the arguments after argv[0]. An error is one line naming the bad argument.
Result<ParsedArguments> parse_arguments(std::span<const std::string> args);

const char* usage_text();

// Runs the job to its end and returns sluice-run's exit code. Diagnostics go to stderr.
int run_job(const LaunchOptions& options);

// Asks a running job to start members (`--join`); prints one line per member started. Returns 0,
// or 1 when the job cannot be reached or refused a member (the reason on stderr).
int run_join(const JoinOptions& options);

}  // namespace sluice::transport::launcher
