// Placement (`--sluice-bind`): which cores each process on a host may use, read from the hwloc
// topology, and pinning threads inside that share.
//
//   auto share = plan_share(BindMode::kCore, /*local_index=*/1, /*local_count=*/2);
//   if (!share) return std::move(share).take_error();
//   if (auto s = bind_current_thread(*share); !s) SLUICE_LOG_WARN("%s", s.error().c_str());
//   SLUICE_LOG_INFO("%s", share->describe().c_str());  // "core 1 (PU 1), numa 0"
//
// The processes of a host do not talk to each other: each one splits the same set the same way
// and takes the part its local index names, so their shares are disjoint (`numa` shares a node
// when there are more processes than nodes). The set split is what the process may run on when
// the topology is first loaded (cgroup limits and any binding it was started with, e.g. by
// mpirun or taskset), so a process that was already confined only splits what it was given.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "sluice/transport/result.hpp"

struct hwloc_topology;  // <hwloc.h> stays out of this header

namespace sluice::transport {

// kAuto is kCore when every process of the host can have a core of its own, else kNone.
enum class BindMode { kNone, kCore, kNuma, kAuto };

const char* to_string(BindMode m);

// Owns one hwloc topology (hwloc_topology_t). Move-only; the destructor releases it. Read-only
// after creation, so any thread may use a const Topology (hwloc allows concurrent reads).
class Topology {
 public:
  // This machine as this process sees it.
  static Result<Topology> load();
  // A made-up machine in hwloc's synthetic syntax ("numa:2 core:4 pu:2"), for planning tests;
  // nothing can be bound with it.
  static Result<Topology> synthetic(const std::string& description);

  Topology(Topology&& o) noexcept;
  Topology& operator=(Topology&& o) noexcept;
  Topology(const Topology&) = delete;
  Topology& operator=(const Topology&) = delete;
  ~Topology();

  hwloc_topology* get() const { return topo_; }
  // The PUs (OS indices, ascending) this process may run on: the shares are cut from these.
  const std::vector<unsigned>& allowed_pus() const { return allowed_; }
  unsigned numa_node_count() const;

 private:
  explicit Topology(hwloc_topology* t) : topo_(t) {}
  hwloc_topology* topo_ = nullptr;
  std::vector<unsigned> allowed_;
};

// This machine's topology, loaded on the first call and kept until the process exits (threads
// bind with it until the very end). Thread-safe; a failed load fails every call the same way.
Result<const Topology*> machine_topology();

// One process's share of the host: the PUs its threads may run on and where that is.
struct CpuShare {
  BindMode mode = BindMode::kNone;   // as planned: kNone, kCore or kNuma, never kAuto
  std::vector<unsigned> pus;         // OS indices (as taskset and /proc name them), ascending
  std::vector<unsigned> cores;       // hwloc logical indices (core OS ids repeat per package)
  std::vector<unsigned> numa_nodes;  // OS indices of the NUMA nodes local to these PUs

  // False for kNone: nothing is pinned and `pus` is the whole allowed set.
  bool binds() const { return mode != BindMode::kNone; }
  // Every PU of `pus` (OS indices) is in this share.
  bool contains(const std::vector<unsigned>& other_pus) const;
  // "cores 2-3 (PU 2-3), numa 0"
  std::string describe() const;
  bool operator==(const CpuShare&) const = default;
};

// The share of process `local_index` of the `local_count` processes on this host.
// kCore: the allowed cores cut into `local_count` contiguous blocks (an error when there are
// fewer cores than processes); kNuma: NUMA node `local_index % nodes`; kNone: everything.
// An index outside 0..local_count-1 is an error.
Result<CpuShare> plan_share(const Topology& topo, BindMode mode, uint32_t local_index,
                            uint32_t local_count);
// The same on machine_topology().
Result<CpuShare> plan_share(BindMode mode, uint32_t local_index, uint32_t local_count);

// Pins the calling thread to the share's PUs (hwloc_set_cpubind, this thread only). A share that
// does not bind (kNone) leaves the thread as it is.
Status bind_current_thread(const CpuShare& share);
// Pins the calling thread to these PUs (OS indices), e.g. to restore an earlier binding.
Status bind_current_thread_to(const std::vector<unsigned>& pus);
// The PUs (OS indices, ascending) the calling thread is bound to now (hwloc_get_cpubind).
Result<std::vector<unsigned>> current_thread_binding();

// Deprecated: the old `--sluice-bind core` (the calling thread to core `rank % cores`, with
// sched_setaffinity). Kept until the runtime plans shares with plan_share(); do not use it in
// new code.
Status bind_to_core(uint32_t rank);

}  // namespace sluice::transport
