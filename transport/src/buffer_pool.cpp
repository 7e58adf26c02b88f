#include "sluice/transport/buffer_pool.hpp"

#include <hwloc.h>

#include <bit>
#include <fstream>
#include <mutex>
#include <new>
#include <string>
#include <vector>

#include "sluice/transport/placement.hpp"

namespace sluice::transport {
namespace {

constexpr size_t kMinPooled = 4096;
constexpr int kMinShift = 12;        // 4 KiB
constexpr int kMaxShift = 31;        // 2 GiB
constexpr int kMinPlacedShift = 16;  // 64 KiB: smaller buffers are not NUMA-placed
constexpr size_t kMaxCached = size_t{256} << 20;
constexpr std::align_val_t kAlign{64};

// NUMA: on a machine with several NUMA nodes, a fresh buffer of 64 KiB or more is placed on the
// node of the thread that allocates it (hwloc_alloc_membind, preferred rather than strict, so a
// full node falls back to another). Receive buffers are allocated by the progress thread, which
// placement pins next to the member's arena, so the frames land where they are read. One node:
// plain operator new, and hwloc is never even loaded. Reused buffers keep their node; the process's
// threads share one placement, so that stays local.

// Whether this machine has one NUMA node, asked cheaply (no topology load); unsure: false.
bool single_numa_node() {
  std::ifstream in("/sys/devices/system/node/online");  // e.g. "0", "0-1", "0,2"
  std::string nodes;
  if (!(in >> nodes)) return false;
  return nodes.find_first_of(",-") == std::string::npos;
}

// The topology to place buffers with, or null when there is nothing to choose between.
const Topology* numa_topology() {
  if (single_numa_node()) return nullptr;
  auto topo = machine_topology();
  if (!topo || (*topo)->numa_node_count() < 2) return nullptr;
  return *topo;
}

// Page-aligned memory on the calling thread's NUMA node (or anywhere when that fails).
void* numa_local_alloc(const Topology& topo, size_t size) {
  hwloc_topology_t t = topo.get();
  void* p = nullptr;
  hwloc_bitmap_t where = hwloc_bitmap_alloc();
  hwloc_bitmap_t nodes = hwloc_bitmap_alloc();
  if (where != nullptr && nodes != nullptr &&
      hwloc_get_last_cpu_location(t, where, HWLOC_CPUBIND_THREAD) == 0) {
    hwloc_cpuset_to_nodeset(t, where, nodes);
    p = hwloc_alloc_membind(t, size, nodes, HWLOC_MEMBIND_BIND, HWLOC_MEMBIND_BYNODESET);
  }
  hwloc_bitmap_free(where);  // accepts null
  hwloc_bitmap_free(nodes);
  if (p == nullptr) p = hwloc_alloc(t, size);  // freed by hwloc_free like the bound kind
  if (p == nullptr) throw std::bad_alloc();
  return p;
}

struct Pool {
  std::mutex mu;
  std::vector<uint8_t*> free[kMaxShift + 1];     // guarded by mu
  size_t cached = 0;                             // guarded by mu
  const Topology* const numa = numa_topology();  // fixed for the process: how buffers are made

  // By size class, so a buffer goes back the way it came. Small ones stay with operator new:
  // each placed buffer is a mapping of its own, and locality pays off for large frames.
  bool placed(int shift) const { return numa != nullptr && shift >= kMinPlacedShift; }
  uint8_t* fresh(int shift) const {
    size_t size = size_t{1} << shift;
    if (placed(shift)) return static_cast<uint8_t*>(numa_local_alloc(*numa, size));
    return static_cast<uint8_t*>(::operator new[](size, kAlign));
  }
  void release(uint8_t* b, int shift) const {
    if (placed(shift)) {
      hwloc_free(numa->get(), b, size_t{1} << shift);
    } else {
      ::operator delete[](b, kAlign);
    }
  }
};

Pool& pool() {
  static Pool* p = new Pool();  // never destroyed: buffers may be returned during exit
  return *p;
}

int shift_for(size_t bytes) {
  return std::max(kMinShift, static_cast<int>(std::bit_width(bytes - 1)));
}

}  // namespace

PoolDeleter pool_deleter_for(size_t capacity) {
  if (capacity < kMinPooled) return PoolDeleter{0};
  return PoolDeleter{static_cast<uint8_t>(shift_for(capacity))};
}

size_t pool_capacity(size_t bytes) {
  if (bytes < kMinPooled) return bytes;
  return size_t{1} << shift_for(bytes);
}

PooledBuffer pool_allocate(size_t bytes) {
  if (bytes < kMinPooled) return PooledBuffer(new uint8_t[bytes == 0 ? 1 : bytes], PoolDeleter{0});
  int shift = shift_for(bytes);
  if (shift > kMaxShift) throw std::bad_alloc();
  Pool& p = pool();
  {
    std::lock_guard lock(p.mu);
    auto& list = p.free[shift];
    if (!list.empty()) {
      uint8_t* b = list.back();
      list.pop_back();
      p.cached -= size_t{1} << shift;
      return PooledBuffer(b, PoolDeleter{static_cast<uint8_t>(shift)});
    }
  }
  return PooledBuffer(p.fresh(shift), PoolDeleter{static_cast<uint8_t>(shift)});
}

void PoolDeleter::operator()(uint8_t* b) const {
  if (b == nullptr) return;
  if (size_class == 0) {
    delete[] b;
    return;
  }
  size_t size = size_t{1} << size_class;
  Pool& p = pool();
  {
    std::lock_guard lock(p.mu);
    if (p.cached + size <= kMaxCached) {
      p.free[size_class].push_back(b);
      p.cached += size;
      return;
    }
  }
  p.release(b, size_class);
}

}  // namespace sluice::transport
