#include "sluice/transport/buffer_pool.hpp"

#include <bit>
#include <mutex>
#include <new>
#include <vector>

namespace sluice::transport {
namespace {

constexpr size_t kMinPooled = 4096;
constexpr int kMinShift = 12;  // 4 KiB
constexpr int kMaxShift = 31;  // 2 GiB
constexpr size_t kMaxCached = size_t{256} << 20;
constexpr std::align_val_t kAlign{64};

struct Pool {
  std::mutex mu;
  std::vector<uint8_t*> free[kMaxShift + 1];  // guarded by mu
  size_t cached = 0;                          // guarded by mu
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
  auto* b = static_cast<uint8_t*>(::operator new[](size_t{1} << shift, kAlign));
  return PooledBuffer(b, PoolDeleter{static_cast<uint8_t>(shift)});
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
  ::operator delete[](b, kAlign);
}

}  // namespace sluice::transport
