#include "sluice/transport/placement.hpp"

#include <hwloc.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <new>
#include <string>
#include <utility>

namespace sluice::transport {
namespace {

// One owner per hwloc bitmap.
struct BitmapFree {
  void operator()(hwloc_bitmap_s* b) const { hwloc_bitmap_free(b); }
};
using Bitmap = std::unique_ptr<hwloc_bitmap_s, BitmapFree>;

Bitmap new_bitmap() {
  Bitmap b(hwloc_bitmap_alloc());
  if (!b) throw std::bad_alloc();  // like any other allocation
  return b;
}

Bitmap bitmap_of(const std::vector<unsigned>& ids) {
  Bitmap b = new_bitmap();
  for (unsigned id : ids) hwloc_bitmap_set(b.get(), id);
  return b;
}

std::vector<unsigned> ids_of(hwloc_const_bitmap_t b) {
  std::vector<unsigned> out;
  for (int id = hwloc_bitmap_first(b); id >= 0; id = hwloc_bitmap_next(b, id)) {
    out.push_back(static_cast<unsigned>(id));
  }
  return out;
}

// "0-3,8,10-11"
std::string list_text(const std::vector<unsigned>& ids) {
  std::string out;
  for (size_t i = 0; i < ids.size();) {
    size_t j = i;
    while (j + 1 < ids.size() && ids[j + 1] == ids[j] + 1) ++j;
    if (!out.empty()) out += ',';
    out += std::to_string(ids[i]);
    if (j > i) out += "-" + std::to_string(ids[j]);
    i = j + 1;
  }
  return out;
}

std::string errno_text() { return std::strerror(errno); }

// The cores that have an allowed PU, in logical order (neighbours share a package and a NUMA
// node). A topology without Core objects counts each PU as a core.
std::vector<hwloc_obj_t> allowed_cores(hwloc_topology_t t, hwloc_const_cpuset_t allowed) {
  std::vector<hwloc_obj_t> out;
  for (hwloc_obj_type_t type : {HWLOC_OBJ_CORE, HWLOC_OBJ_PU}) {
    for (hwloc_obj_t o = hwloc_get_next_obj_by_type(t, type, nullptr); o != nullptr;
         o = hwloc_get_next_obj_by_type(t, type, o)) {
      if (hwloc_bitmap_intersects(o->cpuset, allowed)) out.push_back(o);
    }
    if (!out.empty()) break;
  }
  return out;
}

// The NUMA nodes that have allowed PUs, one per distinct set of PUs (a node of extra memory
// beside DRAM, e.g. HBM, has the same PUs and would split nothing).
std::vector<hwloc_obj_t> allowed_numa_nodes(hwloc_topology_t t, hwloc_const_cpuset_t allowed) {
  std::vector<hwloc_obj_t> out;
  for (hwloc_obj_t o = hwloc_get_next_obj_by_type(t, HWLOC_OBJ_NUMANODE, nullptr); o != nullptr;
       o = hwloc_get_next_obj_by_type(t, HWLOC_OBJ_NUMANODE, o)) {
    if (o->cpuset == nullptr || !hwloc_bitmap_intersects(o->cpuset, allowed)) continue;
    bool seen = std::any_of(out.begin(), out.end(), [&](hwloc_obj_t p) {
      return hwloc_bitmap_isequal(p->cpuset, o->cpuset) != 0;
    });
    if (!seen) out.push_back(o);
  }
  return out;
}

CpuShare share_of(hwloc_topology_t t, BindMode mode, hwloc_const_cpuset_t set) {
  CpuShare s;
  s.mode = mode;
  s.pus = ids_of(set);
  for (hwloc_obj_t core : allowed_cores(t, set)) s.cores.push_back(core->logical_index);
  Bitmap nodes = new_bitmap();
  hwloc_cpuset_to_nodeset(t, set, nodes.get());
  s.numa_nodes = ids_of(nodes.get());
  return s;
}

}  // namespace

const char* to_string(BindMode m) {
  switch (m) {
    case BindMode::kNone:
      return "none";
    case BindMode::kCore:
      return "core";
    case BindMode::kNuma:
      return "numa";
    case BindMode::kAuto:
      return "auto";
  }
  return "?";
}

// ---- Topology --------------------------------------------------------------------------------

Topology::Topology(Topology&& o) noexcept
    : topo_(std::exchange(o.topo_, nullptr)), allowed_(std::move(o.allowed_)) {}

Topology& Topology::operator=(Topology&& o) noexcept {
  if (this != &o) {
    if (topo_ != nullptr) hwloc_topology_destroy(topo_);
    topo_ = std::exchange(o.topo_, nullptr);
    allowed_ = std::move(o.allowed_);
  }
  return *this;
}

Topology::~Topology() {
  if (topo_ != nullptr) hwloc_topology_destroy(topo_);  // returns nothing: cannot fail
}

Result<Topology> Topology::load() {
  hwloc_topology_t t = nullptr;
  if (hwloc_topology_init(&t) != 0) {
    return make_error("hwloc: cannot start reading the topology: " + errno_text());
  }
  Topology topo(t);
  // Placement needs cores, PUs and NUMA nodes only; skipping caches makes the load cheaper.
  hwloc_topology_set_cache_types_filter(t, HWLOC_TYPE_FILTER_KEEP_NONE);
  hwloc_topology_set_icache_types_filter(t, HWLOC_TYPE_FILTER_KEEP_NONE);
  if (hwloc_topology_load(t) != 0) {
    return make_error("hwloc: cannot read this machine's topology: " + errno_text());
  }
  // Where the process may run now: cgroup limits, and a binding it was started with (all of
  // its threads together). Planning splits this, never more.
  Bitmap allowed = new_bitmap();
  hwloc_bitmap_copy(allowed.get(), hwloc_topology_get_allowed_cpuset(t));
  Bitmap bound = new_bitmap();
  if (hwloc_get_cpubind(t, bound.get(), HWLOC_CPUBIND_PROCESS) == 0 &&
      hwloc_bitmap_intersects(bound.get(), allowed.get())) {
    hwloc_bitmap_and(allowed.get(), allowed.get(), bound.get());
  }
  topo.allowed_ = ids_of(allowed.get());
  if (topo.allowed_.empty()) return make_error("hwloc: this process may run on no PU at all");
  return topo;
}

Result<Topology> Topology::synthetic(const std::string& description) {
  hwloc_topology_t t = nullptr;
  if (hwloc_topology_init(&t) != 0) {
    return make_error("hwloc: cannot start a topology: " + errno_text());
  }
  Topology topo(t);
  if (hwloc_topology_set_synthetic(t, description.c_str()) != 0) {
    return make_error("hwloc: expected a synthetic topology like \"numa:2 core:4 pu:2\", got '" +
                      description + "'");
  }
  if (hwloc_topology_load(t) != 0) {
    return make_error("hwloc: cannot build the synthetic topology '" + description +
                      "': " + errno_text());
  }
  topo.allowed_ = ids_of(hwloc_topology_get_allowed_cpuset(t));
  return topo;
}

unsigned Topology::numa_node_count() const {
  int n = hwloc_get_nbobjs_by_type(topo_, HWLOC_OBJ_NUMANODE);
  return n > 0 ? static_cast<unsigned>(n) : 1u;
}

Result<const Topology*> machine_topology() {
  // Never destroyed: TBB workers and progress threads may still bind while the process exits.
  static const Result<Topology>* const loaded = new Result<Topology>(Topology::load());
  if (!loaded->ok()) return make_error(loaded->error());
  return &loaded->value();
}

// ---- shares ----------------------------------------------------------------------------------

bool CpuShare::contains(const std::vector<unsigned>& other_pus) const {
  return std::all_of(other_pus.begin(), other_pus.end(),
                     [&](unsigned pu) { return std::binary_search(pus.begin(), pus.end(), pu); });
}

std::string CpuShare::describe() const {
  std::string out = cores.size() == 1 ? "core " : "cores ";
  out += list_text(cores) + " (PU " + list_text(pus) + ")";
  out += numa_nodes.size() == 1 ? ", numa " : ", numa nodes ";
  out += numa_nodes.empty() ? "?" : list_text(numa_nodes);
  return out;
}

Result<CpuShare> plan_share(const Topology& topo, BindMode mode, uint32_t local_index,
                            uint32_t local_count) {
  if (local_count == 0 || local_index >= local_count) {
    return make_error("placement: expected a local index below the local process count, got " +
                      std::to_string(local_index) + " of " + std::to_string(local_count));
  }
  hwloc_topology_t t = topo.get();
  Bitmap allowed = bitmap_of(topo.allowed_pus());
  std::vector<hwloc_obj_t> cores = allowed_cores(t, allowed.get());
  if (mode == BindMode::kAuto)
    mode = local_count <= cores.size() ? BindMode::kCore : BindMode::kNone;

  Bitmap set = new_bitmap();
  switch (mode) {
    case BindMode::kAuto:  // resolved above
    case BindMode::kNone:
      hwloc_bitmap_copy(set.get(), allowed.get());
      break;
    case BindMode::kCore: {
      if (local_count > cores.size()) {
        return make_error("--sluice-bind core: " + std::to_string(local_count) +
                          " processes on this host but only " + std::to_string(cores.size()) +
                          " cores available to them; use --sluice-bind auto or none");
      }
      // Contiguous blocks, sizes differing by at most one.
      size_t n = cores.size();
      size_t first = size_t{local_index} * n / local_count;
      size_t last = (size_t{local_index} + 1) * n / local_count;
      for (size_t i = first; i < last; ++i) hwloc_bitmap_or(set.get(), set.get(), cores[i]->cpuset);
      hwloc_bitmap_and(set.get(), set.get(), allowed.get());
      break;
    }
    case BindMode::kNuma: {
      std::vector<hwloc_obj_t> nodes = allowed_numa_nodes(t, allowed.get());
      if (nodes.empty()) {  // no NUMA information: one node that everyone shares
        hwloc_bitmap_copy(set.get(), allowed.get());
      } else {
        hwloc_bitmap_and(set.get(), nodes[local_index % nodes.size()]->cpuset, allowed.get());
      }
      break;
    }
  }
  return share_of(t, mode, set.get());
}

Result<CpuShare> plan_share(BindMode mode, uint32_t local_index, uint32_t local_count) {
  auto topo = machine_topology();
  if (!topo) return std::move(topo).take_error();
  return plan_share(**topo, mode, local_index, local_count);
}

// ---- binding ---------------------------------------------------------------------------------

Status bind_current_thread(const CpuShare& share) {
  if (!share.binds()) return {};
  return bind_current_thread_to(share.pus);
}

Status bind_current_thread_to(const std::vector<unsigned>& pus) {
  if (pus.empty()) return make_error("placement: cannot bind a thread to an empty set of PUs");
  auto topo = machine_topology();
  if (!topo) return std::move(topo).take_error();
  Bitmap set = bitmap_of(pus);
  if (hwloc_set_cpubind((*topo)->get(), set.get(), HWLOC_CPUBIND_THREAD) != 0) {
    return make_error("binding a thread to PU " + list_text(pus) + " failed: " + errno_text());
  }
  return {};
}

Result<std::vector<unsigned>> current_thread_binding() {
  auto topo = machine_topology();
  if (!topo) return std::move(topo).take_error();
  Bitmap set = new_bitmap();
  if (hwloc_get_cpubind((*topo)->get(), set.get(), HWLOC_CPUBIND_THREAD) != 0) {
    return make_error("reading this thread's binding failed: " + errno_text());
  }
  return ids_of(set.get());
}

Status bind_to_core(uint32_t rank) {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  if (n <= 0) return make_error("cannot count the online cores");
  uint32_t core = rank % static_cast<uint32_t>(n);
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(static_cast<int>(core), &set);
  if (sched_setaffinity(0, sizeof set, &set) != 0) {
    return make_error("binding rank " + std::to_string(rank) + " to core " + std::to_string(core) +
                      " failed: " + std::strerror(errno));
  }
  return {};
}

}  // namespace sluice::transport
