// A process-wide cache of large byte buffers, by power-of-two size class. Frames of similar size
// come and go every tick; reusing their memory spares the page faults (and kernel zeroing) of a
// fresh allocation each time, which otherwise dominate large-frame throughput. Buffers under
// 4 KiB come straight from operator new. Thread-safe; the cache keeps at most 256 MiB.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

namespace sluice::transport {

struct PoolDeleter {
  uint8_t size_class = 0;  // 0: plain operator new[]
  void operator()(uint8_t* p) const;
};
using PooledBuffer = std::unique_ptr<uint8_t[], PoolDeleter>;

// At least `bytes` bytes, 64-byte aligned.
PooledBuffer pool_allocate(size_t bytes);

// The capacity a request for `bytes` gets (what pool_allocate really provides).
size_t pool_capacity(size_t bytes);

// The deleter for a buffer that pool_allocate(bytes) returned and its owner released, when
// only its requested size is known (e.g. FlatBuffers hands back raw memory with its size).
PoolDeleter pool_deleter_for(size_t bytes);

}  // namespace sluice::transport
