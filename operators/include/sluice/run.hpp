// run(): executes a flow. Embedded (every location in this process, the default) or as one member
// of a job started by sluice-run (decided from the environment). Returns the process exit code:
// 0 on success, 2 for a usage/layout error (one line on stderr), 1 when the job could not
// complete (e.g. a peer was lost while a channel was open), 128+N when signal N (SIGINT or
// SIGTERM) made it drain: sources stopped, everything they had produced was delivered, and
// every channel ended cleanly. A second signal ends the process at once.
#pragma once

#include "sluice/flow.hpp"

namespace sluice {

int run(const FlowBuilder& flow, int argc, char** argv);

}  // namespace sluice
