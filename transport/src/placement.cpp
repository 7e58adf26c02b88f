#include "sluice/transport/placement.hpp"

#include <sched.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace sluice::transport {

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
