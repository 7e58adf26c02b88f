// Run options: every `--sluice-*` flag a sluice program accepts, parsed in one place and removed
// from argv so the program sees only its own arguments.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "sluice/transport/placement.hpp"
#include "sluice/transport/result.hpp"

namespace sluice::transport {

enum class TransportKind { kAuto, kShm, kTcp, kRdma };
enum class ProgressMode { kAdaptive, kSpin };

const char* to_string(TransportKind k);
const char* to_string(ProgressMode m);

struct TransportOptions {
  TransportKind kind = TransportKind::kAuto;
  ProgressMode progress = ProgressMode::kAdaptive;
  size_t window_bytes = 16u << 20;     // per (edge, destination) channel in flight
  size_t max_frame_bytes = 64u << 20;  // largest frame sent or accepted
  int heartbeat_ms = 200;              // idle heartbeat period per peer
  int peer_timeout_ms = 3000;          // silence after which a peer is lost
  int spin_us = 50;                    // adaptive mode: busy-poll this long before sleeping
  // The member's share of cores (see placement.hpp): the progress thread (keepalive thread in
  // spin mode) pins itself into it when it starts. Unset, or a share that does not bind: no
  // pinning. The runtime sets it; no flag does.
  std::optional<CpuShare> cpu_share;
};

struct RunOptions {
  TransportOptions transport;
  std::map<std::string, uint32_t> cluster_sizes;  // --sluice-cluster name=N (embedded)
  std::string layout;                             // --sluice-layout (mpirun/PMIx)
  std::string dump_graph;                         // --sluice-dump-graph: text|dot|mermaid
  uint32_t batch = 65536;                         // most elements a source yields per tick
  size_t tick_bytes = 1u << 20;     // aim of a tick's output per destination (adapts batch)
  BindMode bind = BindMode::kAuto;  // --sluice-bind; planned per member (placement.hpp)
  bool verbose = false;
  bool stats = false;
  std::string stats_json;  // a directory: each member writes stats-<location>-<member>.json there
  bool help = false;       // --sluice-help: print run_options_help() and exit
};

// Parses and removes every argv entry that starts with "--sluice-" (as "--sluice-x=v" or
// "--sluice-x v"). An unknown flag or a bad value is an error naming it.
Result<RunOptions> parse_run_options(int& argc, char** argv);

// The flag summary printed by --sluice-help.
const char* run_options_help();

}  // namespace sluice::transport
