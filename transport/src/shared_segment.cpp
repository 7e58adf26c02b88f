#include "shared_segment.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <random>
#include <string>

#include "sluice/transport/log.hpp"

namespace sluice::transport::detail {

namespace {

constexpr uint64_t kOwnerBit = uint64_t{1} << 63;
constexpr uint32_t kMaxBlocks = 4096;
constexpr uint64_t kMaxSegmentBytes = uint64_t{16} << 30;

uint64_t round_up(uint64_t v, uint64_t to) { return (v + to - 1) / to * to; }

std::string os_error(const std::string& what) { return what + ": " + std::strerror(errno); }

}  // namespace

SegmentMap::~SegmentMap() {
  if (base != nullptr && munmap(base, mapped) != 0) {
    SLUICE_LOG_WARN("%s", os_error("munmap of a shared segment").c_str());
  }
}

void SegmentMap::place(uint32_t block_count, uint64_t block_size, uint64_t offset) {
  blocks = block_count;
  block_bytes = block_size;
  data = base + offset;
  masks = reinterpret_cast<std::atomic<uint64_t>*>(base + 64);
  generations = masks + block_count;
}

Result<std::shared_ptr<SegmentWriter>> SegmentWriter::create(size_t block_bytes, uint32_t blocks,
                                                             uint32_t owner_rank) {
  if (blocks == 0 || blocks > kMaxBlocks || block_bytes == 0) {
    return make_error("shared segment of " + std::to_string(blocks) + " blocks of " +
                      std::to_string(block_bytes) + " bytes: out of range");
  }
  block_bytes = round_up(block_bytes, 4096);
  const uint64_t data_offset = round_up(64 + uint64_t{blocks} * 2 * sizeof(uint64_t), 4096);
  const uint64_t total = data_offset + uint64_t{blocks} * block_bytes;
  if (total > kMaxSegmentBytes) return make_error("shared segment over 16 GiB");
  std::shared_ptr<SegmentWriter> w(new SegmentWriter());
  w->fd_ = memfd_create("sluice-broadcast", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (w->fd_ < 0) return make_error(os_error("memfd_create"));
  if (ftruncate(w->fd_, static_cast<off_t>(total)) != 0) return make_error(os_error("ftruncate"));
  // Its size is final: a receiver's mapping can never fault past a shrunk end (SIGBUS).
  if (fcntl(w->fd_, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
    return make_error(os_error("sealing the shared segment"));
  }
  void* p = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_SHARED, w->fd_, 0);
  if (p == MAP_FAILED) return make_error(os_error("mmap of the shared segment"));
  SegmentMap& m = w->map_;
  m.base = static_cast<uint8_t*>(p);
  m.mapped = total;
  m.place(blocks, block_bytes, data_offset);
  static_assert(std::atomic<uint64_t>::is_always_lock_free, "masks are shared between processes");
  for (uint32_t i = 0; i < blocks; ++i) {
    new (&m.masks[i]) std::atomic<uint64_t>(0);
    new (&m.generations[i]) std::atomic<uint64_t>(0);
  }
  std::random_device rd;
  w->nonce_ = (uint64_t{rd()} << 32) ^ rd();
  SegmentHeader h{kSegmentMagic, w->nonce_, owner_rank, blocks, block_bytes, data_offset};
  std::memcpy(m.base, &h, sizeof h);
  for (uint32_t i = blocks; i > 0; --i) w->free_.push_back(i - 1);
  return w;
}

SegmentWriter::~SegmentWriter() {
  if (fd_ >= 0) ::close(fd_);
}

std::shared_ptr<uint8_t> SegmentWriter::allocate(size_t bytes) {
  if (bytes > map_.block_bytes) return nullptr;
  uint32_t slot;
  {
    std::lock_guard lock(mu_);
    // Blocks whose readers are done go back first, latest last: the next frame reuses the most
    // recently used block, whose pages are warm in every cache on the way.
    size_t kept = 0;
    for (uint32_t b : busy_) {
      if (map_.masks[b].load(std::memory_order_acquire) == 0) {
        free_.push_back(b);
      } else {
        busy_[kept++] = b;
      }
    }
    busy_.resize(kept);
    if (free_.empty()) return nullptr;
    slot = free_.back();
    free_.pop_back();
    busy_.push_back(slot);
  }
  map_.masks[slot].store(kOwnerBit, std::memory_order_relaxed);
  // Seqlock order: the new generation is visible before any byte of the new payload (the
  // acquire half keeps the payload's writes after it).
  map_.generations[slot].fetch_add(1, std::memory_order_acq_rel);
  auto self = shared_from_this();
  return {map_.block(slot), [self, slot](uint8_t*) {
            self->map_.masks[slot].fetch_and(~kOwnerBit, std::memory_order_release);
          }};
}

bool SegmentWriter::contains(const uint8_t* p, size_t n, uint32_t* slot,
                             uint64_t* generation) const {
  if (p < map_.data || p >= map_.block(map_.blocks)) return false;
  const uint64_t off = static_cast<uint64_t>(p - map_.data);
  const uint64_t s = off / map_.block_bytes;
  if (n > map_.block_bytes * (s + 1) - off) return false;
  *slot = static_cast<uint32_t>(s);
  *generation = map_.generations[s].load(std::memory_order_relaxed);
  return true;
}

void SegmentWriter::add_reader(uint32_t slot, uint32_t bit) {
  map_.masks[slot].fetch_or(uint64_t{1} << bit, std::memory_order_relaxed);
}

void SegmentWriter::drop_reader(uint32_t bit) {
  for (uint32_t i = 0; i < map_.blocks; ++i) {
    map_.masks[i].fetch_and(~(uint64_t{1} << bit), std::memory_order_release);
  }
}

Result<std::unique_ptr<SegmentReader>> SegmentReader::open(uint32_t pid, int32_t fd, uint64_t bytes,
                                                           uint64_t nonce, uint32_t owner_rank) {
  if (bytes < 4096 || bytes > kMaxSegmentBytes) {
    return make_error("offered shared segment of " + std::to_string(bytes) +
                      " bytes: out of range");
  }
  const std::string path = "/proc/" + std::to_string(pid) + "/fd/" + std::to_string(fd);
  // What the path names is looked at before it is opened: only a plain file is (no FIFO or
  // device to block on or to disturb); then its size and seals are checked.
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return make_error(os_error("opening " + path));
  if (!S_ISREG(st.st_mode)) return make_error(path + " is not a plain file");
  int f = ::open(path.c_str(), O_RDWR | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (f < 0) return make_error(os_error("opening " + path));
  const int seals = fcntl(f, F_GET_SEALS);
  if (fstat(f, &st) != 0 || !S_ISREG(st.st_mode) || static_cast<uint64_t>(st.st_size) != bytes ||
      seals < 0 || (seals & F_SEAL_SHRINK) == 0) {
    ::close(f);
    return make_error(path + " is not the sealed " + std::to_string(bytes) +
                      "-byte segment offered");
  }
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, f, 0);
  ::close(f);
  if (p == MAP_FAILED) return make_error(os_error("mmap of " + path));
  std::unique_ptr<SegmentReader> r(new SegmentReader());
  r->map_.base = static_cast<uint8_t*>(p);
  r->map_.mapped = bytes;
  SegmentHeader h;
  std::memcpy(&h, r->map_.base, sizeof h);
  if (h.magic != kSegmentMagic || h.nonce != nonce || h.owner_rank != owner_rank) {
    return make_error(path + " is not the shared segment of rank " + std::to_string(owner_rank) +
                      " (magic, nonce or owner differ)");
  }
  // Every bound is checked without wrapping: blocks and block size are capped before they
  // multiply.
  if (h.blocks == 0 || h.blocks > kMaxBlocks || h.block_bytes == 0 ||
      h.block_bytes > kMaxSegmentBytes || h.data_offset < 64 + uint64_t{h.blocks} * 16 ||
      h.data_offset > bytes || uint64_t{h.blocks} * h.block_bytes > bytes - h.data_offset) {
    return make_error(path + ": segment geometry does not fit its " + std::to_string(bytes) +
                      " bytes");
  }
  r->map_.place(h.blocks, h.block_bytes, h.data_offset);
  return r;
}

Status SegmentReader::copy_block(uint32_t slot, uint64_t generation, uint64_t size,
                                 uint8_t* out) const {
  if (slot >= map_.blocks) {
    return make_error("names block " + std::to_string(slot) + " of a " +
                      std::to_string(map_.blocks) + "-block shared segment");
  }
  if (size > map_.block_bytes) {
    return make_error("names " + std::to_string(size) + " bytes of a " +
                      std::to_string(map_.block_bytes) + "-byte shared block");
  }
  auto reused = [&] {
    return make_error("names block " + std::to_string(slot) + " generation " +
                      std::to_string(generation) +
                      ", which its sender reused (it had given this member up)");
  };
  if (map_.generations[slot].load(std::memory_order_acquire) != generation) return reused();
  std::memcpy(out, map_.block(slot), size);
  // The release half keeps the copy's reads before this second look.
  if (map_.generations[slot].fetch_add(0, std::memory_order_acq_rel) != generation) {
    return reused();
  }
  return {};
}

void SegmentReader::done(uint32_t slot, uint32_t bit) const {
  if (slot >= map_.blocks || bit >= kMaxSegmentReaders) return;
  map_.masks[slot].fetch_and(~(uint64_t{1} << bit), std::memory_order_release);
}

}  // namespace sluice::transport::detail
