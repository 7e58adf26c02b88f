// Codec<T>: how a value becomes bytes on a network edge and back. Built in here: arithmetic
// types and enums (fixed size, bulk-copied), MemberId (4 bytes), trivially copyable structs (their
// bytes; see below), std::string, std::vector, std::pair, std::tuple, std::optional, and their
// nestings; FlatBuffers tables travel as Flat<Table> (sluice/flat.hpp), Bytes as length + bytes.
// The concept `Encodable<T>` is "T has a Codec". A user type gets a codec by specializing Codec:
//
//   struct Point { int32_t x, y; std::string label; };
//   template <> struct sluice::Codec<Point> {
//     static size_t size(const Point& p) { return 8 + Codec<std::string>::size(p.label); }
//     static uint8_t* encode(const Point& p, uint8_t* out) {
//       out = Codec<int32_t>::encode(p.x, out);
//       out = Codec<int32_t>::encode(p.y, out);
//       return Codec<std::string>::encode(p.label, out);
//     }
//     static bool decode(Reader& in, Point& p) {
//       return Codec<int32_t>::decode(in, p.x) && Codec<int32_t>::decode(in, p.y) &&
//              Codec<std::string>::decode(in, p.label);
//     }
//   };
//
// A recursive type calls in.enter() before decoding its children and in.leave() after, so input
// nested deeper than 64 levels fails instead of exhausting the stack.
//
// Trivially copyable structs (any class type with std::is_trivially_copyable_v, unless
// kBytewiseCodec<T> is set to false) are sent as their sizeof(T) bytes, padding included, and a
// run of them is copied with one memcpy. Both sides must agree on the layout (same compiler and
// ABI). The bytes are not checked: a pointer member is meaningless in another process, and a bool
// or enum member may arrive with a value outside its range. Specialize Codec<T> when that matters
// (a full specialization wins over this rule). A partial specialization for a template of yours
// whose instances are trivially copyable must also set
// `template <class U> inline constexpr bool sluice::kBytewiseCodec<Yours<U>> = false;`.
//
// Decoding never trusts its input: every read is bounds-checked by Reader, lengths are checked
// against the bytes that remain before anything is allocated, and nesting depth is capped.
#pragma once

#include <concepts>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "sluice/bytes.hpp"
#include "sluice/member_id.hpp"

namespace sluice {

// A bounds-checked cursor over received bytes. Not thread-safe.
class Reader {
 public:
  // `owner`, when set, keeps `bytes` alive: decoders may point into them instead of copying.
  explicit Reader(std::span<const uint8_t> bytes, std::shared_ptr<const void> owner = nullptr)
      : p_(bytes.data()), end_(p_ + bytes.size()), owner_(std::move(owner)) {}
  const std::shared_ptr<const void>& owner() const { return owner_; }
  size_t remaining() const { return static_cast<size_t>(end_ - p_); }
  bool read(void* dst, size_t n) {
    if (n > remaining())
      return fail("needed " + std::to_string(n) + " bytes, " + std::to_string(remaining()) +
                  " remain");
    if (n != 0) std::memcpy(dst, p_, n);
    p_ += n;
    return true;
  }
  const uint8_t* take(size_t n) {
    if (n > remaining()) {
      fail("needed " + std::to_string(n) + " bytes, " + std::to_string(remaining()) + " remain");
      return nullptr;
    }
    const uint8_t* at = p_;
    p_ += n;
    return at;
  }
  bool fail(std::string why) {
    if (error_.empty()) error_ = std::move(why);
    p_ = end_;
    return false;
  }
  const std::string& error() const { return error_; }
  // Nesting guard for recursive types.
  bool enter() { return ++depth_ <= kMaxDepth || fail("nesting deeper than 64 levels"); }
  void leave() { --depth_; }

 private:
  static constexpr int kMaxDepth = 64;
  const uint8_t* p_;
  const uint8_t* end_;
  std::shared_ptr<const void> owner_;
  int depth_ = 0;
  std::string error_;
};

template <typename T, typename Enable = void>
struct Codec;  // no codec for T: specialize sluice::Codec<T> (see above)

// Where an encoder may leave a large payload out of the frame: the `n` bytes at `at` (already
// reserved in the frame) are sent from `src` directly. Only the network edge provides one.
class ZeroCopySink {
 public:
  virtual ~ZeroCopySink() = default;
  virtual void add(uint8_t* at, const uint8_t* src, size_t n) = 0;
};

// The Codec concept: T has a Codec specialization with size, encode and decode.
template <typename T>
concept Encodable = requires(const T& v, uint8_t* out, Reader& in, T& dst) {
  { Codec<T>::size(v) } -> std::convertible_to<size_t>;
  { Codec<T>::encode(v, out) } -> std::same_as<uint8_t*>;
  { Codec<T>::decode(in, dst) } -> std::same_as<bool>;
};

// Fixed-size codecs let a batch be encoded and decoded with one memcpy.
template <typename T>
concept FixedSizeCodec = Encodable<T> && requires {
  Codec<T>::kFixedSize;
};

// Fixed-size values whose bytes are their encoding: a run of them is copied with one memcpy,
// skipping the codec's own encode/decode. A codec says so with `kBulkCopy = true` (the built-in
// ones for arithmetic types but bool, enums, MemberId and trivially copyable structs do); a user
// codec that checks or transforms values leaves it out and is called per element.
template <typename T>
concept BulkCopyable = FixedSizeCodec<T> && std::is_trivially_copyable_v<T> && requires {
  requires Codec<T>::kBulkCopy;
  requires Codec<T>::kFixedSize == sizeof(T);
};

template <typename T>
struct Codec<T, std::enable_if_t<std::is_arithmetic_v<T> || std::is_enum_v<T>>> {
  static constexpr size_t kFixedSize = sizeof(T);
  static constexpr bool kBulkCopy = !std::is_same_v<T, bool>;  // bool checks each byte is 0 or 1
  static size_t size(const T&) { return sizeof(T); }
  static uint8_t* encode(const T& v, uint8_t* out) {
    std::memcpy(out, &v, sizeof(T));
    return out + sizeof(T);
  }
  static bool decode(Reader& in, T& v) {
    if constexpr (std::is_same_v<T, bool>) {
      uint8_t b;
      if (!in.read(&b, 1)) return false;
      if (b > 1) return in.fail("bool byte is " + std::to_string(b) + ", expected 0 or 1");
      v = b != 0;
      return true;
    } else {
      return in.read(&v, sizeof(T));
    }
  }
};

// Whether a trivially copyable class type is sent as its bytes. False for the standard types
// that have a codec of their own (std::optional<int> is trivially copyable in libstdc++) and for
// views, whose bytes are a pointer into the sender's memory.
template <typename T>
inline constexpr bool kBytewiseCodec = (std::is_class_v<T> && std::is_trivially_copyable_v<T>);
template <typename T>
inline constexpr bool kBytewiseCodec<std::optional<T>> = false;
template <typename A, typename B>
inline constexpr bool kBytewiseCodec<std::pair<A, B>> = false;
template <typename... Ts>
inline constexpr bool kBytewiseCodec<std::tuple<Ts...>> = false;
template <typename Tag>
inline constexpr bool kBytewiseCodec<MemberId<Tag>> = false;
template <typename C, typename Tr>
inline constexpr bool kBytewiseCodec<std::basic_string_view<C, Tr>> = false;
template <typename T, size_t N>
inline constexpr bool kBytewiseCodec<std::span<T, N>> = false;
template <typename T>
inline constexpr bool kBytewiseCodec<std::reference_wrapper<T>> = false;

// Trivially copyable structs: their bytes (see the top of this file for what that does not check).
template <typename T>
struct Codec<T, std::enable_if_t<kBytewiseCodec<T>>> {
  static constexpr size_t kFixedSize = sizeof(T);
  static constexpr bool kBulkCopy = true;
  static size_t size(const T&) { return sizeof(T); }
  static uint8_t* encode(const T& v, uint8_t* out) {
    std::memcpy(out, &v, sizeof(T));
    return out + sizeof(T);
  }
  static bool decode(Reader& in, T& v) { return in.read(&v, sizeof(T)); }
};

// MemberId: its raw id, 4 bytes. Not checked against the job here: the codec does not know it.
template <typename Tag>
struct Codec<MemberId<Tag>> {
  static_assert(sizeof(MemberId<Tag>) == sizeof(uint32_t), "bulk copies rely on this");
  static constexpr size_t kFixedSize = sizeof(uint32_t);
  static constexpr bool kBulkCopy = true;
  static size_t size(const MemberId<Tag>&) { return kFixedSize; }
  static uint8_t* encode(const MemberId<Tag>& id, uint8_t* out) {
    return Codec<uint32_t>::encode(id.raw(), out);
  }
  static bool decode(Reader& in, MemberId<Tag>& id) {
    uint32_t raw;
    if (!Codec<uint32_t>::decode(in, raw)) return false;
    id = MemberId<Tag>::from_raw(raw);
    return true;
  }
};

namespace detail {
inline uint8_t* put_len(uint64_t n, uint8_t* out) { return Codec<uint64_t>::encode(n, out); }
inline bool get_len(Reader& in, uint64_t& n, size_t min_elem_bytes, const char* what) {
  if (!Codec<uint64_t>::decode(in, n)) return false;
  if (min_elem_bytes > 0 && n > in.remaining() / min_elem_bytes) {
    return in.fail(std::string(what) + " length " + std::to_string(n) + " exceeds the " +
                   std::to_string(in.remaining()) + " bytes that remain");
  }
  return true;
}
}  // namespace detail

template <>
struct Codec<std::string> {
  static size_t size(const std::string& s) { return 8 + s.size(); }
  static uint8_t* encode(const std::string& s, uint8_t* out) {
    out = detail::put_len(s.size(), out);
    if (!s.empty()) std::memcpy(out, s.data(), s.size());
    return out + s.size();
  }
  static bool decode(Reader& in, std::string& s) {
    uint64_t n;
    if (!detail::get_len(in, n, 1, "string")) return false;
    const uint8_t* p = in.take(n);
    if (p == nullptr) return false;
    s.assign(reinterpret_cast<const char*>(p), n);
    return true;
  }
};

template <Encodable T>
struct Codec<std::vector<T>> {
  static size_t size(const std::vector<T>& v) {
    if constexpr (FixedSizeCodec<T>) {
      return 8 + v.size() * Codec<T>::kFixedSize;
    } else {
      size_t n = 8;
      for (const auto& e : v) n += Codec<T>::size(e);
      return n;
    }
  }
  static uint8_t* encode(const std::vector<T>& v, uint8_t* out) {
    out = detail::put_len(v.size(), out);
    if constexpr (BulkCopyable<T>) {
      if (!v.empty()) std::memcpy(out, v.data(), v.size() * sizeof(T));  // data() may be null
      return out + v.size() * sizeof(T);
    } else {
      for (const auto& e : v) out = Codec<T>::encode(e, out);
      return out;
    }
  }
  static bool decode(Reader& in, std::vector<T>& v) {
    uint64_t n;
    constexpr size_t kMin = [] {
      if constexpr (FixedSizeCodec<T>)
        return Codec<T>::kFixedSize;
      else
        return size_t{1};
    }();
    if (!detail::get_len(in, n, kMin, "vector")) return false;
    if constexpr (BulkCopyable<T>) {
      const uint8_t* p = in.take(n * sizeof(T));  // get_len checked n * sizeof(T) <= remaining
      if (p == nullptr) return false;
      if (reinterpret_cast<uintptr_t>(p) % alignof(T) == 0) {
        // Frames keep elements 8-aligned: one copy, without zero-filling first.
        v.assign(reinterpret_cast<const T*>(p), reinterpret_cast<const T*>(p) + n);
      } else {
        v.resize(n);
        if (n != 0) std::memcpy(v.data(), p, n * sizeof(T));
      }
      return true;
    } else {
      if (!in.enter()) return false;
      v.clear();
      v.reserve(n);
      for (uint64_t i = 0; i < n; ++i) {
        T e{};
        if (!Codec<T>::decode(in, e)) return false;
        v.push_back(std::move(e));
      }
      in.leave();
      return true;
    }
  }
};

// Bytes: length + bytes. Decoding points into the received frame when the Reader has an owner
// (zero-copy), and copies otherwise.
template <>
struct Codec<Bytes> {
  static size_t size(const Bytes& b) { return 8 + b.size(); }
  static uint8_t* encode(const Bytes& b, uint8_t* out) {
    out = detail::put_len(b.size(), out);
    if (b.size() != 0) std::memcpy(out, b.data(), b.size());
    return out + b.size();
  }
  // Payloads this large are sent from the Bytes' own memory rather than copied into the frame.
  static constexpr size_t kZeroCopyMin = 16 * 1024;
  static uint8_t* encode_gather(const Bytes& b, uint8_t* out, ZeroCopySink& sink) {
    if (b.size() < kZeroCopyMin) return encode(b, out);
    out = detail::put_len(b.size(), out);
    sink.add(out, b.data(), b.size());
    return out + b.size();
  }
  static bool decode(Reader& in, Bytes& b) {
    uint64_t n;
    if (!detail::get_len(in, n, 1, "bytes")) return false;
    const uint8_t* p = in.take(n);
    if (p == nullptr) return false;
    b = in.owner() ? Bytes(in.owner(), p, n) : Bytes::copy_of({p, n});
    return true;
  }
};

template <Encodable A, Encodable B>
struct Codec<std::pair<A, B>> {
  static size_t size(const std::pair<A, B>& p) {
    return Codec<A>::size(p.first) + Codec<B>::size(p.second);
  }
  static uint8_t* encode(const std::pair<A, B>& p, uint8_t* out) {
    return Codec<B>::encode(p.second, Codec<A>::encode(p.first, out));
  }
  static bool decode(Reader& in, std::pair<A, B>& p) {
    return Codec<A>::decode(in, p.first) && Codec<B>::decode(in, p.second);
  }
};

template <Encodable... Ts>
struct Codec<std::tuple<Ts...>> {
  static size_t size(const std::tuple<Ts...>& t) {
    return std::apply(
        [](const auto&... e) {
          return (size_t{0} + ... + Codec<std::decay_t<decltype(e)>>::size(e));
        },
        t);
  }
  static uint8_t* encode(const std::tuple<Ts...>& t, uint8_t* out) {
    std::apply(
        [&](const auto&... e) { ((out = Codec<std::decay_t<decltype(e)>>::encode(e, out)), ...); },
        t);
    return out;
  }
  static bool decode(Reader& in, std::tuple<Ts...>& t) {
    return std::apply(
        [&](auto&... e) { return (Codec<std::decay_t<decltype(e)>>::decode(in, e) && ...); }, t);
  }
};

template <Encodable T>
struct Codec<std::optional<T>> {
  static size_t size(const std::optional<T>& o) { return 1 + (o ? Codec<T>::size(*o) : 0); }
  static uint8_t* encode(const std::optional<T>& o, uint8_t* out) {
    *out++ = o ? 1 : 0;
    return o ? Codec<T>::encode(*o, out) : out;
  }
  static bool decode(Reader& in, std::optional<T>& o) {
    bool has;
    if (!Codec<bool>::decode(in, has)) return false;
    if (!has) {
      o.reset();
      return true;
    }
    if (!in.enter()) return false;
    T v{};
    if (!Codec<T>::decode(in, v)) return false;
    in.leave();
    o = std::move(v);
    return true;
  }
};

}  // namespace sluice
