#include "sluice/transport/options.hpp"

#include <charconv>
#include <string_view>
#include <vector>

namespace sluice::transport {
namespace {

template <typename T>
Result<T> parse_number(std::string_view flag, std::string_view v, T lo, T hi) {
  T out{};
  uint64_t mult = 1;
  std::string_view digits = v;
  if (!digits.empty()) {
    switch (digits.back()) {
      case 'k':
      case 'K':
        mult = 1u << 10;
        digits.remove_suffix(1);
        break;
      case 'm':
      case 'M':
        mult = 1u << 20;
        digits.remove_suffix(1);
        break;
      case 'g':
      case 'G':
        mult = 1u << 30;
        digits.remove_suffix(1);
        break;
      default:
        break;
    }
  }
  auto [p, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), out);
  if (ec != std::errc() || p != digits.data() + digits.size() || digits.empty()) {
    return make_error(std::string(flag) + ": expected a number, got '" + std::string(v) + "'");
  }
  out = static_cast<T>(out * mult);
  if (out < lo || out > hi) {
    return make_error(std::string(flag) + ": " + std::string(v) + " is outside " +
                      std::to_string(lo) + ".." + std::to_string(hi));
  }
  return out;
}

Status apply(RunOptions& o, std::string_view name, std::string_view v) {
  auto bad = [&](const char* expected) {
    return make_error("--sluice-" + std::string(name) + ": expected " + expected + ", got '" +
                      std::string(v) + "'");
  };
  if (name == "transport") {
    if (v == "auto")
      o.transport.kind = TransportKind::kAuto;
    else if (v == "shm")
      o.transport.kind = TransportKind::kShm;
    else if (v == "tcp")
      o.transport.kind = TransportKind::kTcp;
    else if (v == "rdma")
      o.transport.kind = TransportKind::kRdma;
    else
      return bad("auto|shm|tcp|rdma");
  } else if (name == "progress") {
    if (v == "adaptive")
      o.transport.progress = ProgressMode::kAdaptive;
    else if (v == "spin")
      o.transport.progress = ProgressMode::kSpin;
    else
      return bad("adaptive|spin");
  } else if (name == "bind") {
    if (v == "none")
      o.bind = BindMode::kNone;
    else if (v == "core")
      o.bind = BindMode::kCore;
    else if (v == "numa")
      o.bind = BindMode::kNuma;
    else if (v == "auto")
      o.bind = BindMode::kAuto;
    else
      return bad("none|core|numa|auto");
  } else if (name == "window") {
    auto r = parse_number<size_t>("--sluice-window", v, 4096, size_t{1} << 34);
    if (!r) return std::move(r).take_error();
    o.transport.window_bytes = *r;
  } else if (name == "max-frame") {
    auto r = parse_number<size_t>("--sluice-max-frame", v, 4096, size_t{1} << 31);
    if (!r) return std::move(r).take_error();
    o.transport.max_frame_bytes = *r;
  } else if (name == "heartbeat-ms") {
    auto r = parse_number<int>("--sluice-heartbeat-ms", v, 10, 60000);
    if (!r) return std::move(r).take_error();
    o.transport.heartbeat_ms = *r;
  } else if (name == "peer-timeout-ms") {
    auto r = parse_number<int>("--sluice-peer-timeout-ms", v, 100, 3600000);
    if (!r) return std::move(r).take_error();
    o.transport.peer_timeout_ms = *r;
  } else if (name == "spin-us") {
    auto r = parse_number<int>("--sluice-spin-us", v, 0, 1000000);
    if (!r) return std::move(r).take_error();
    o.transport.spin_us = *r;
  } else if (name == "batch") {
    auto r = parse_number<uint32_t>("--sluice-batch", v, 1, 1u << 24);
    if (!r) return std::move(r).take_error();
    o.batch = *r;
  } else if (name == "tick-bytes") {
    auto r = parse_number<size_t>("--sluice-tick-bytes", v, 64, size_t{1} << 30);
    if (!r) return std::move(r).take_error();
    o.tick_bytes = *r;
  } else if (name == "cluster") {
    auto eq = v.find('=');
    if (eq == std::string_view::npos || eq == 0) return bad("NAME=COUNT");
    auto r = parse_number<uint32_t>("--sluice-cluster", v.substr(eq + 1), 1, 65535);
    if (!r) return std::move(r).take_error();
    o.cluster_sizes[std::string(v.substr(0, eq))] = *r;
  } else if (name == "layout") {
    o.layout = std::string(v);
  } else if (name == "dump-graph") {
    if (v != "text" && v != "dot" && v != "mermaid") return bad("text|dot|mermaid");
    o.dump_graph = std::string(v);
  } else if (name == "stats-json") {
    if (v.empty()) return make_error("--sluice-stats-json needs a directory");
    o.stats_json = std::string(v);
  } else {
    return make_error("unknown flag --sluice-" + std::string(name) + " (see --sluice-help)");
  }
  return {};
}

bool is_switch(std::string_view name) {
  return name == "verbose" || name == "stats" || name == "help";
}

}  // namespace

const char* to_string(TransportKind k) {
  switch (k) {
    case TransportKind::kAuto:
      return "auto";
    case TransportKind::kShm:
      return "shm";
    case TransportKind::kTcp:
      return "tcp";
    case TransportKind::kRdma:
      return "rdma";
  }
  return "?";
}

const char* to_string(ProgressMode m) { return m == ProgressMode::kSpin ? "spin" : "adaptive"; }

const char* run_options_help() {
  return "sluice options:\n"
         "  --sluice-transport auto|shm|tcp|rdma   UCX transports for network edges (auto)\n"
         "  --sluice-progress adaptive|spin        sleep when idle, or always busy-poll "
         "(adaptive)\n"
         "  --sluice-cluster NAME=N                cluster size when run embedded (4)\n"
         "  --sluice-layout NAME=N,...             layout when started by mpirun/srun\n"
         "  --sluice-window BYTES                  bytes in flight per channel (16M)\n"
         "  --sluice-max-frame BYTES               largest frame (64M)\n"
         "  --sluice-batch N                       most elements a source yields per tick (65536)\n"
         "  --sluice-tick-bytes BYTES              output per tick a source aims for (1M)\n"
         "  --sluice-heartbeat-ms MS               heartbeat period (200)\n"
         "  --sluice-peer-timeout-ms MS            silence before a peer is declared lost (3000)\n"
         "  --sluice-spin-us US                    busy-poll time before sleeping (50)\n"
         "  --sluice-bind none|core|numa|auto      pin each process's threads to its share of the\n"
         "                                         host: its own cores, its NUMA node, or "
         "nothing;\n"
         "                                         auto = core when processes <= cores (auto)\n"
         "  --sluice-dump-graph text|dot|mermaid   print the flow and exit\n"
         "  --sluice-verbose                       print placement, transports chosen, progress\n"
         "  --sluice-stats                         print per-peer and per-edge counters at exit\n"
         "  --sluice-stats-json DIR                write them to "
         "DIR/stats-<location>-<member>.json\n";
}

Result<RunOptions> parse_run_options(int& argc, char** argv) {
  RunOptions o;
  std::vector<char*> keep;
  keep.push_back(argv[0]);
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == "--") {  // everything after belongs to the program
      for (; i < argc; ++i) keep.push_back(argv[i]);
      break;
    }
    if (a.rfind("--sluice-", 0) != 0) {
      keep.push_back(argv[i]);
      continue;
    }
    std::string_view body = a.substr(9);
    std::string_view name = body;
    std::string_view value;
    bool has_value = false;
    if (auto eq = body.find('='); eq != std::string_view::npos) {
      name = body.substr(0, eq);
      value = body.substr(eq + 1);
      has_value = true;
    }
    if (is_switch(name)) {
      if (has_value) return make_error("--sluice-" + std::string(name) + " takes no value");
      if (name == "verbose") o.verbose = true;
      if (name == "stats") o.stats = true;
      if (name == "help") o.help = true;
      continue;
    }
    if (!has_value) {
      if (i + 1 >= argc) return make_error("--sluice-" + std::string(name) + " needs a value");
      value = argv[++i];
    }
    if (auto s = apply(o, name, value); !s) return std::move(s).take_error();
  }
  for (size_t i = 0; i < keep.size(); ++i) argv[i] = keep[i];
  argc = static_cast<int>(keep.size());
  argv[argc] = nullptr;
  return o;
}

}  // namespace sluice::transport
