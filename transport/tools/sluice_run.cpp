// sluice-run: start a sluice job on this host, one process per member of its layout.
//
//   sluice-run -n leader=1 -n workers=4 -- ./app ARGS
//   sluice-run --join JOBFILE --add workers      (one more member into a running job)
//
// See launcher.hpp for what it does and `sluice-run --help` for the options and exit codes.
#include <cstdio>
#include <string>
#include <vector>

#include "launcher.hpp"

int main(int argc, char** argv) {
  namespace launcher = sluice::transport::launcher;
  const std::vector<std::string> args(argv + 1, argv + argc);
  auto parsed = launcher::parse_arguments(args);
  if (!parsed) {
    std::fprintf(stderr, "sluice-run: %s (try 'sluice-run --help')\n", parsed.error().c_str());
    return launcher::kExitUsage;
  }
  if (parsed->help) {
    std::fputs(launcher::usage_text(), stdout);
    return 0;
  }
  if (parsed->join) return launcher::run_join(*parsed->join);
  return launcher::run_job(parsed->options);
}
