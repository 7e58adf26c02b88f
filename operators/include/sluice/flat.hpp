// Flat<Table>: a FlatBuffers table as a stream element, read in place and never unpacked.
//
//   flatbuffers::FlatBufferBuilder fbb;   // table Reading { sensor: uint32; samples: [float]; }
//   auto v = fbb.CreateVector(samples);
//   fbb.Finish(CreateReading(fbb, /*sensor=*/7, v));
//   Flat<Reading> r(std::move(fbb));      // takes the builder's buffer, no copy
//   uint32_t s = r->sensor();              // read in place (examples/custom_codec.cpp)
//   Result<Flat<Reading>> back = Flat<Reading>::from_bytes(r.bytes());   // copies, verifies
//   if (!back) std::fprintf(stderr, "%s\n", back.error().c_str());
//
// Ownership: a Flat shares its immutable buffer; copies are cheap (one reference count) and may
// be read from any thread. A Flat decoded from a network frame points into that frame and keeps
// it alive. The buffer is always 8-byte aligned in memory (FlatBuffers' largest scalar), copied
// there when it arrives misaligned; structs with force_align above 8 are not supported.
//
// Errors: bytes from elsewhere (from_bytes, view, decoding) are checked with the FlatBuffers
// Verifier for Table before anything is read; a failure is a Result error that says what was
// wrong. A buffer from a local builder is trusted and not verified. A default-constructed Flat
// is empty (get() is null); it travels as an empty Flat.
//
// Wire format (Codec<Flat<Table>>): a u64 length n, the n bytes of the buffer, then zero bytes up
// to the next multiple of 8, so the element after it stays 8-aligned as frames keep elements.
// On a network edge a buffer of 16 KiB or more is sent from the Flat's own memory (gathered by
// the transport), not copied into the frame.
#pragma once

#include <flatbuffers/flatbuffers.h>

#include <cassert>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <typeinfo>
#include <utility>

#include "sluice/codec.hpp"
#include "sluice/transport/result.hpp"

namespace sluice {

namespace detail {

// FlatBuffers' largest scalar: a buffer aligned to this may be read in place.
inline constexpr size_t kFlatAlign = 8;
// The smallest buffer the verifier accepts: root offset, vtable offset, two vtable fields.
inline constexpr size_t kFlatMinSize = sizeof(flatbuffers::uoffset_t) +
                                       sizeof(flatbuffers::soffset_t) +
                                       2 * sizeof(flatbuffers::voffset_t);

inline bool flat_aligned(const uint8_t* p) {
  return reinterpret_cast<uintptr_t>(p) % kFlatAlign == 0;
}
inline size_t flat_padding(size_t n) { return (kFlatAlign - n % kFlatAlign) % kFlatAlign; }

// `bytes` copied into fresh 8-aligned memory (not zero-filled first).
inline std::shared_ptr<const uint64_t[]> flat_aligned_copy(std::span<const uint8_t> bytes) {
  std::shared_ptr<uint64_t[]> words(new uint64_t[(bytes.size() + 7) / 8]);
  if (!bytes.empty()) std::memcpy(words.get(), bytes.data(), bytes.size());
  return words;
}

template <typename Table>
std::string flat_name() {
  if constexpr (requires { Table::GetFullyQualifiedName(); }) {
    return Table::GetFullyQualifiedName();  // flatc --gen-name-strings
  } else {
    return typeid(Table).name();
  }
}

// Runs the FlatBuffers verifier for root type Table over `n` bytes at 8-aligned `p`.
template <typename Table>
Status verify_flat(const uint8_t* p, size_t n) {
  assert(flat_aligned(p));
  if (n < kFlatMinSize) {
    return make_error("a FlatBuffers " + flat_name<Table>() + " needs at least " +
                      std::to_string(kFlatMinSize) + " bytes, got " + std::to_string(n));
  }
  if (n >= FLATBUFFERS_MAX_BUFFER_SIZE) {
    return make_error("a FlatBuffers " + flat_name<Table>() + " of " + std::to_string(n) +
                      " bytes exceeds FlatBuffers' 2 GiB limit");
  }
  flatbuffers::Verifier::Options opts;  // depth 64, a million tables, alignment checked
  flatbuffers::Verifier v(p, n, opts);
  if (!v.VerifyBuffer<Table>(nullptr)) {
    return make_error("FlatBuffers verifier rejected a " + std::to_string(n) + "-byte " +
                      flat_name<Table>() +
                      ": an offset, length or alignment points outside the buffer, or it nests "
                      "deeper than 64 levels");
  }
  return {};
}

}  // namespace detail

template <typename Table>
class Flat {
 public:
  Flat() = default;
  // Takes the finished buffer of `fbb` (no copy when it is 8-aligned, as the default allocator's
  // is); `fbb` is left cleared and reusable.
  explicit Flat(flatbuffers::FlatBufferBuilder&& fbb) : Flat(fbb.Release()) {}
  explicit Flat(flatbuffers::DetachedBuffer&& buf) {
    auto owned = std::make_shared<flatbuffers::DetachedBuffer>(std::move(buf));
    const uint8_t* p = owned->data();
    const size_t n = owned->size();
    if (n == 0) return;
    if (detail::flat_aligned(p)) {
      set(std::move(owned), p, n);
    } else {
      auto copy = detail::flat_aligned_copy({p, n});
      set(copy, reinterpret_cast<const uint8_t*>(copy.get()), n);
    }
  }

  // Copies `bytes` into aligned memory and verifies them.
  static Result<Flat> from_bytes(std::span<const uint8_t> bytes) {
    auto copy = detail::flat_aligned_copy(bytes);
    const auto* p = reinterpret_cast<const uint8_t*>(copy.get());
    Status ok = detail::verify_flat<Table>(p, bytes.size());
    if (!ok) return std::move(ok).take_error();
    Flat f;
    f.set(std::move(copy), p, bytes.size());
    return f;
  }
  // Verifies `bytes` and refers to them in place, kept alive by `owner`; copies (as from_bytes)
  // when they are not 8-aligned.
  static Result<Flat> view(std::shared_ptr<const void> owner, std::span<const uint8_t> bytes) {
    if (!detail::flat_aligned(bytes.data())) return from_bytes(bytes);
    Status ok = detail::verify_flat<Table>(bytes.data(), bytes.size());
    if (!ok) return std::move(ok).take_error();
    Flat f;
    f.set(std::move(owner), bytes.data(), bytes.size());
    return f;
  }

  // The root table; null when empty.
  const Table* get() const { return root_; }
  const Table* operator->() const {
    assert(root_ != nullptr);
    return root_;
  }
  const Table& operator*() const {
    assert(root_ != nullptr);
    return *root_;
  }
  // The whole FlatBuffers buffer.
  std::span<const uint8_t> bytes() const { return {data_, size_}; }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  explicit operator bool() const { return !empty(); }

 private:
  void set(std::shared_ptr<const void> owner, const uint8_t* data, size_t size) {
    owner_ = std::move(owner);
    data_ = data;
    size_ = size;
    root_ = flatbuffers::GetRoot<Table>(data);
  }

  std::shared_ptr<const void> owner_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  const Table* root_ = nullptr;
};

template <typename Table>
struct Codec<Flat<Table>> {
  static size_t size(const Flat<Table>& f) { return 8 + f.size() + detail::flat_padding(f.size()); }
  static uint8_t* encode(const Flat<Table>& f, uint8_t* out) {
    out = detail::put_len(f.size(), out);
    if (!f.empty()) std::memcpy(out, f.bytes().data(), f.size());
    return pad(out + f.size(), f.size());
  }
  // Buffers this large are sent from the Flat's own memory rather than copied into the frame.
  static constexpr size_t kZeroCopyMin = Codec<Bytes>::kZeroCopyMin;
  static uint8_t* encode_gather(const Flat<Table>& f, uint8_t* out, ZeroCopySink& sink) {
    if (f.size() < kZeroCopyMin) return encode(f, out);
    out = detail::put_len(f.size(), out);
    sink.add(out, f.bytes().data(), f.size());
    return pad(out + f.size(), f.size());
  }
  static bool decode(Reader& in, Flat<Table>& f) {
    uint64_t n;
    if (!detail::get_len(in, n, 1, "flat buffer")) return false;
    const size_t padding = detail::flat_padding(n);
    if (padding > in.remaining() - n) {
      return in.fail("flat buffer of " + std::to_string(n) +
                     " bytes is cut in its padding: " + std::to_string(in.remaining() - n) +
                     " of " + std::to_string(padding) + " padding bytes remain");
    }
    const uint8_t* p = in.take(n);
    const uint8_t* pad_bytes = in.take(padding);
    for (size_t i = 0; i < padding; ++i) {
      if (pad_bytes[i] != 0) return in.fail("flat buffer padding is not zero");
    }
    if (n == 0) {
      f = Flat<Table>();
      return true;
    }
    auto r = in.owner() ? Flat<Table>::view(in.owner(), {p, n}) : Flat<Table>::from_bytes({p, n});
    if (!r) return in.fail(r.error());
    f = std::move(r).value();
    return true;
  }

 private:
  static uint8_t* pad(uint8_t* out, size_t n) {
    const size_t padding = detail::flat_padding(n);
    if (padding != 0) std::memset(out, 0, padding);
    return out + padding;
  }
};

}  // namespace sluice
