// Bytes: an immutable, cheaply copyable byte buffer — the element type for bulk payloads.
//
//   Bytes b(std::vector<uint8_t>(1 << 20, 7));   // owns the vector
//   auto copy = b;                                // shares it, no copy of the data
//
// Received over a network edge, a large Bytes points straight into the frame it arrived in (the
// frame's memory lives as long as any Bytes that refers to it), so a 1 MiB element costs no copy
// at the receiver. Small ones, which arrive in UCX's own descriptors, are copied.
#pragma once

#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <vector>

namespace sluice {

class Bytes {
 public:
  Bytes() = default;
  explicit Bytes(std::vector<uint8_t> v) {
    auto owned = std::make_shared<const std::vector<uint8_t>>(std::move(v));
    data_ = owned->data();
    size_ = owned->size();
    owner_ = std::move(owned);
  }
  // Refers to `size` bytes at `data`, kept alive by `owner`.
  Bytes(std::shared_ptr<const void> owner, const uint8_t* data, size_t size)
      : owner_(std::move(owner)), data_(data), size_(size) {}
  static Bytes copy_of(std::span<const uint8_t> s) {
    return Bytes(std::vector<uint8_t>(s.begin(), s.end()));
  }

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  std::span<const uint8_t> span() const { return {data_, size_}; }
  uint8_t operator[](size_t i) const { return data_[i]; }
  friend bool operator==(const Bytes& a, const Bytes& b) {
    return a.size_ == b.size_ && (a.size_ == 0 || std::memcmp(a.data_, b.data_, a.size_) == 0);
  }

 private:
  std::shared_ptr<const void> owner_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace sluice
