// Core binding for `--sluice-bind core`: the calling thread (and the threads it starts later)
// runs on core `rank % cores`. hwloc-based placement with shares per local rank replaces this
// when the placement work lands; the flag stays the same.
#pragma once

#include <cstdint>

#include "sluice/transport/result.hpp"

namespace sluice::transport {

Status bind_to_core(uint32_t rank);

}  // namespace sluice::transport
