// Frames on the wire. A data frame is one FlatBuffers `sluice.wire.DataFrame` (schema/frame.fbs)
// carrying a tick's encoded elements for one (edge, destination); a control frame is one
// `sluice.wire.Control`. Each travels as the data of a UCP active message whose 24-byte header
// (FrameHeader) states the kind, sender and exact length, so a frame cut anywhere — even inside its
// trailing padding, which the FlatBuffers verifier alone would accept — is rejected.
//
//   DataFrameBuilder b(/*edge=*/3, /*src=*/0, /*dst=*/1, /*seq=*/1, /*tick=*/7);
//   uint8_t* p = b.reserve_elements(/*count=*/2, /*bytes=*/16);   // encode in place
//   OwnedFrame f = b.finish();
//   auto view = decode_data_frame(f.bytes(), FrameCheck{.max_bytes = 1 << 20});
//
// Decoding never trusts its input: it checks the header, the length, runs the verifier and only
// then reads fields; every failure is an Error saying what was wrong.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "sluice/transport/buffer_pool.hpp"
#include "sluice/transport/result.hpp"

namespace sluice::transport {

inline constexpr uint32_t kFrameMagic = 0x534c4631;  // "SLF1"
enum class FrameKind : uint32_t { kData = 1, kControl = 2 };

// The UCP AM header that precedes every frame. Plain little-endian struct. `src` lets the
// receiver keep a peer's frames in arrival order before it can read them (rendezvous); it is
// checked against the frame's own src once the frame is verified.
//
// A *split* data frame (prefix > 0) carries its first `prefix` bytes in the AM header, right
// after this struct, and the rest as the AM payload, which is then one contiguous piece of
// memory (the element bytes a gather frame sends from elsewhere). UCX moves a contiguous payload
// by zero-copy rendezvous (over shm the receiver pulls it with one CMA copy), where a scattered
// one often goes by copy-through-FIFO fragments that cost the sender a copy per destination:
// broadcast frames go split (OwnedFrame::set_split). The last
// 0..7 bytes of a split frame (FlatBuffers padding after the elements) are not sent: the
// receiver zeroes them.
struct FrameHeader {
  uint32_t magic = kFrameMagic;
  FrameKind kind = FrameKind::kData;
  uint32_t src = 0;
  uint32_t prefix = 0;  // split frames: frame bytes in the AM header after this struct
  uint64_t length = 0;  // bytes of the whole FlatBuffers frame
};
static_assert(sizeof(FrameHeader) == 24);
inline constexpr uint32_t kMaxFramePrefix = 1024;  // a split frame's prefix is the frame's table
inline constexpr size_t kMaxSplitTail = 7;         // padding bytes a split frame leaves out

// A split data frame whose payload waits in a block of the sender's shared segment (see
// Node::share_broadcast_memory) travels as a header-only AM: FrameHeader, the prefix, then this.
// The receiver copies `size` bytes from the block (allocation `generation`) and restores the
// padding, exactly as for a split frame.
struct SharedFrameRef {
  uint32_t slot = 0;
  uint32_t reserved = 0;
  uint64_t generation = 0;
  uint64_t size = 0;
};
static_assert(sizeof(SharedFrameRef) == 24);

// Checks the AM header of a frame (its size must be the struct plus `prefix`).
Result<FrameHeader> decode_frame_header(std::span<const uint8_t> header);

// Part of a frame's element bytes that is never copied into the frame: the `size` bytes at
// `at` (inside the frame) are sent from `src` instead (a gather send), so a large payload goes
// straight from the user's memory to the wire. The receiver sees one contiguous frame.
struct FrameHole {
  const uint8_t* at;
  const uint8_t* src;
  size_t size;
};

// A finished frame: owns its bytes (a FlatBuffers buffer from the buffer pool), and for a gather
// frame its holes and whatever keeps their sources alive until the send completes.
class OwnedFrame {
 public:
  OwnedFrame() = default;
  OwnedFrame(PooledBuffer mem, const uint8_t* data, size_t size, FrameKind kind);
  // Holes must lie inside the element bytes, in increasing order, without overlap.
  void set_holes(std::vector<FrameHole> holes, std::shared_ptr<const void> keepalive) {
    holes_ = std::move(holes);
    keepalive_ = std::move(keepalive);
  }
  const std::vector<FrameHole>& holes() const { return holes_; }
  // May go split (see FrameHeader) when its one hole runs to its end. Worth it where several
  // destinations get the same payload (broadcast): each pulls it, the sender copies nothing per
  // destination. For one destination UCX's gather path is often faster on shm.
  void set_split(bool split) { split_ = split; }
  bool split() const { return split_; }
  // The frame as the receiver will see it (holes filled in); for tests and diagnostics.
  std::vector<uint8_t> gathered() const;
  std::span<const uint8_t> bytes() const { return {data_, size_}; }
  FrameKind kind() const { return kind_; }
  FrameHeader header(uint32_t src) const { return FrameHeader{kFrameMagic, kind_, src, 0, size_}; }
  bool empty() const { return size_ == 0; }

 private:
  PooledBuffer mem_;
  std::vector<FrameHole> holes_;
  std::shared_ptr<const void> keepalive_;
  bool split_ = false;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  FrameKind kind_ = FrameKind::kData;
};

// Builds one data frame; elements are encoded directly into the frame's memory.
// Not thread-safe; one builder per frame.
class DataFrameBuilder {
 public:
  DataFrameBuilder(uint32_t edge, uint32_t src, uint32_t dst, uint64_t seq, uint64_t tick);
  ~DataFrameBuilder();
  DataFrameBuilder(const DataFrameBuilder&) = delete;
  DataFrameBuilder& operator=(const DataFrameBuilder&) = delete;

  // Reserves `bytes` of element space (8-byte aligned) for `count` elements; call once.
  uint8_t* reserve_elements(uint32_t count, size_t bytes);
  OwnedFrame finish();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// What a receiver expects of a frame before it reads it.
struct FrameCheck {
  size_t max_bytes = 64u << 20;
  uint32_t self_rank = 0;
  uint32_t job_size = 1;
};

// A verified data frame; `elements` points into the checked buffer (read in place).
struct DataFrameView {
  uint32_t edge = 0;
  uint32_t src = 0;
  uint32_t dst = 0;
  uint64_t seq = 0;
  uint64_t tick = 0;
  uint32_t count = 0;
  std::span<const uint8_t> elements;
};

Result<DataFrameView> decode_data_frame(std::span<const uint8_t> frame, const FrameCheck& check);

// A split frame kept in two pieces: `prefix`, the frame's bytes up to its elements, and
// `elements`, the payload, held elsewhere (so it can become a batch without a copy); the view's
// elements are `elements`. The prefix is the receiver's own copy: while decoding, its last 4
// bytes (the element vector's length) are rewritten. An error, with the prefix as it came, when
// the frame is malformed or has another shape (its payload is only the end of its elements):
// decode it whole then.
Result<DataFrameView> decode_split_data_frame(std::span<uint8_t> prefix,
                                              std::span<const uint8_t> elements,
                                              const FrameCheck& check);

// Control messages (schema/control.fbs), decoded into one plain struct.
enum class ControlKind {
  kHello,
  kHeartbeat,
  kCredit,
  kClose,
  kCloseAck,
  kBye,
  kSharedOffer,
  kSharedAccept
};
struct ControlMsg {
  ControlKind kind = ControlKind::kHeartbeat;
  uint32_t src = 0;
  uint32_t dst = 0;
  uint32_t edge = 0;
  uint64_t value = 0;   // credit bytes, last_seq, heartbeat time, or a shared segment's bytes
  uint32_t pid = 0;     // hello, shared offer
  int32_t fd = -1;      // shared offer
  uint64_t nonce = 0;   // shared offer and accept
  uint32_t reader = 0;  // shared offer
  std::string job;      // hello
  std::string hostname;
};

OwnedFrame encode_control(const ControlMsg& msg);
Result<ControlMsg> decode_control(std::span<const uint8_t> frame, const FrameCheck& check);

}  // namespace sluice::transport
