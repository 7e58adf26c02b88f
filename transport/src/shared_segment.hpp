// A member's broadcast memory, shared with the members on its host. The owner encodes a
// broadcast payload once into a block of the segment; each receiver that mapped the segment copies
// the block out in user space when the frame's small active message names it. This replaces a
// kernel copy per receiver (UCX's rendezvous over shm pulls each payload with CMA, which pins the
// sender's pages for every receiver) with one memcpy per receiver and none at the sender.
//
//   auto w = SegmentWriter::create(/*block_bytes=*/4 << 20, /*blocks=*/16, /*owner_rank=*/0);
//   auto b = (*w)->allocate(n);              // runtime thread: {data, slot}; owner bit set
//   (*w)->add_reader(b->slot, bit);          // before the frame that names the block is sent
//   // receiver: SegmentReader::open(pid, fd, ...)->block(slot, n) ... ->done(slot, bit)
//   b.reset();                               // the owner's reference (any thread)
//
// The segment is a memfd (no name in /dev/shm: nothing is left behind, however the job ends),
// sealed at its size; receivers open it through /proc/<owner pid>/fd/<fd>, which needs the same
// rights as the CMA it replaces, and check the seals, a random nonce and the owner's rank before
// they trust the mapping. The copy out of a block races with nothing in a well-behaved job (the
// block is the reader's until it clears its bit); the generation check makes a copy that did
// race (a reader wrongly given up) fail instead of delivering bytes of another payload.
//
// Layout: Header | one atomic reader mask per block | one generation per block | blocks. A block
// is free when its mask is 0: bit 63 is the owner's reference (the encoded payload is still in
// use by the sender's frames), bits 0..62 are receivers that were sent the block and have not
// copied it yet. Masks are only ever changed with atomic operations, from any process. Each
// allocation bumps the block's generation before the block is written, and a frame names the
// generation it meant: a receiver that the owner wrongly gave up for lost (and whose block it
// reused) sees the generation move under its copy and rejects the frame instead of delivering
// someone else's bytes.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include "sluice/transport/result.hpp"

namespace sluice::transport::detail {

inline constexpr uint64_t kSegmentMagic = 0x534c5553'48415231;  // "SLUSHAR1"
inline constexpr uint32_t kMaxSegmentReaders = 63;              // bit 63 is the owner's

struct SegmentHeader {
  uint64_t magic;
  uint64_t nonce;
  uint32_t owner_rank;
  uint32_t blocks;
  uint64_t block_bytes;
  uint64_t data_offset;  // where block 0 starts (64-aligned)
};

// A mapping of a segment and its geometry (the owner's, or a receiver's copy of it).
struct SegmentMap {
  SegmentMap() = default;
  SegmentMap(const SegmentMap&) = delete;
  SegmentMap& operator=(const SegmentMap&) = delete;
  ~SegmentMap();  // unmaps
  // Points the masks, generations and blocks into the mapping.
  void place(uint32_t block_count, uint64_t block_size, uint64_t offset);
  uint8_t* block(uint32_t slot) const { return data + uint64_t{slot} * block_bytes; }

  uint8_t* base = nullptr;
  size_t mapped = 0;
  uint32_t blocks = 0;
  uint64_t block_bytes = 0;
  uint8_t* data = nullptr;
  std::atomic<uint64_t>* masks = nullptr;
  std::atomic<uint64_t>* generations = nullptr;
};

// The owner's side. allocate() and its handle's release are the only calls from the runtime
// thread; add_reader/drop_reader/contains from the progress thread (or any thread: they touch
// shared state through atomics or immutable geometry only). Shared: a block's handle keeps the
// writer (its mapping) alive. Destruction unmaps and closes; the memory lives on while receivers
// still map it.
class SegmentWriter : public std::enable_shared_from_this<SegmentWriter> {
 public:
  static Result<std::shared_ptr<SegmentWriter>> create(size_t block_bytes, uint32_t blocks,
                                                       uint32_t owner_rank);
  ~SegmentWriter();
  SegmentWriter(const SegmentWriter&) = delete;
  SegmentWriter& operator=(const SegmentWriter&) = delete;

  int fd() const { return fd_; }
  uint64_t nonce() const { return nonce_; }
  size_t block_bytes() const { return map_.block_bytes; }
  size_t mapped_bytes() const { return map_.mapped; }

  // A free block of at least `bytes`, or null when none is free or `bytes` is over the block
  // size (the caller sends another way). The block stays reserved until the returned pointer
  // and every reader bit added to it are gone.
  std::shared_ptr<uint8_t> allocate(size_t bytes);
  // The block that [p, p + n) lies in, if it lies entirely in one block of this segment, and
  // that block's generation (the allocation a live handle holds).
  bool contains(const uint8_t* p, size_t n, uint32_t* slot, uint64_t* generation) const;
  void add_reader(uint32_t slot, uint32_t bit);
  // A receiver is gone: it will never copy what it was sent.
  void drop_reader(uint32_t bit);

 private:
  SegmentWriter() = default;
  int fd_ = -1;
  uint64_t nonce_ = 0;
  SegmentMap map_;
  std::mutex mu_;               // allocate() may be called from more than one thread
  std::vector<uint32_t> free_;  // blocks known free, the most recently used last
  std::vector<uint32_t> busy_;  // handed out, oldest first; free again once their mask reads 0
};

// A receiver's mapping of one peer's segment. Progress thread only.
class SegmentReader {
 public:
  // Maps /proc/<pid>/fd/<fd> and checks it is the segment the offer described.
  static Result<std::unique_ptr<SegmentReader>> open(uint32_t pid, int32_t fd, uint64_t bytes,
                                                     uint64_t nonce, uint32_t owner_rank);
  SegmentReader(const SegmentReader&) = delete;
  SegmentReader& operator=(const SegmentReader&) = delete;

  // Copies the first `size` bytes of block `slot`, allocation `generation`, to `out`; an error
  // names what was out of range, or that the block was reused under the copy. The geometry was
  // copied at open(): nothing the owner writes later can move these bounds.
  Status copy_block(uint32_t slot, uint64_t generation, uint64_t size, uint8_t* out) const;
  // This receiver copied block `slot`: clears its bit.
  void done(uint32_t slot, uint32_t bit) const;

 private:
  SegmentReader() = default;
  SegmentMap map_;
};

}  // namespace sluice::transport::detail
