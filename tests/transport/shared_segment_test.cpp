// The shared broadcast segment on its own: blocks, reader bits, generations, and a receiver's
// mapping of it (this process maps its own segment through /proc, as a peer on the host would).
#include "shared_segment.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <numeric>
#include <vector>

namespace sluice::transport::detail {
namespace {

constexpr size_t kBlock = 64 * 1024;
constexpr uint32_t kOwner = 3;

std::shared_ptr<SegmentWriter> make_writer(uint32_t blocks) {
  auto w = SegmentWriter::create(kBlock, blocks, kOwner);
  EXPECT_TRUE(w) << w.error();
  return w ? *w : nullptr;
}

std::unique_ptr<SegmentReader> open_reader(const SegmentWriter& w) {
  auto r = SegmentReader::open(static_cast<uint32_t>(getpid()), w.fd(), w.mapped_bytes(), w.nonce(),
                               kOwner);
  EXPECT_TRUE(r) << r.error();
  return r ? std::move(*r) : nullptr;
}

TEST(SharedSegment, ABlockIsFreeOnlyOnceItsOwnerAndEveryReaderAreDone) {
  auto w = make_writer(2);
  ASSERT_TRUE(w);
  auto a = w->allocate(kBlock);
  auto b = w->allocate(100);
  ASSERT_TRUE(a && b);
  EXPECT_FALSE(w->allocate(1)) << "both blocks are held";
  EXPECT_FALSE(w->allocate(kBlock + 1)) << "larger than a block";
  uint32_t slot = 0;
  uint64_t generation = 0;
  ASSERT_TRUE(w->contains(a.get() + 10, 100, &slot, &generation));
  EXPECT_FALSE(w->contains(a.get() + 10, kBlock, &slot, &generation)) << "runs past its block";
  w->add_reader(slot, 5);
  a.reset();  // the owner is done, reader 5 is not
  EXPECT_FALSE(w->allocate(1));
  w->drop_reader(5);  // reader 5 is gone: the block is free again
  auto c = w->allocate(1);
  ASSERT_TRUE(c);
  EXPECT_NE(c.get(), b.get());
}

TEST(SharedSegment, AReaderCopiesABlockAndReleasesIt) {
  auto w = make_writer(1);
  ASSERT_TRUE(w);
  auto r = open_reader(*w);
  ASSERT_TRUE(r);
  auto a = w->allocate(1000);
  ASSERT_TRUE(a);
  std::iota(a.get(), a.get() + 1000, uint8_t{7});
  uint32_t slot = 0;
  uint64_t generation = 0;
  ASSERT_TRUE(w->contains(a.get(), 1000, &slot, &generation));
  w->add_reader(slot, 0);
  std::vector<uint8_t> out(1000);
  ASSERT_TRUE(r->copy_block(slot, generation, out.size(), out.data()));
  EXPECT_EQ(std::memcmp(out.data(), a.get(), out.size()), 0);
  r->done(slot, 0);
  a.reset();
  EXPECT_TRUE(w->allocate(1)) << "the reader's done() released the only block";
}

TEST(SharedSegment, ACopyOfAReusedBlockIsRefused) {
  auto w = make_writer(1);
  ASSERT_TRUE(w);
  auto r = open_reader(*w);
  ASSERT_TRUE(r);
  uint32_t slot = 0;
  uint64_t first = 0, second = 0;
  {
    auto a = w->allocate(64);
    ASSERT_TRUE(w->contains(a.get(), 64, &slot, &first));
  }
  auto b = w->allocate(64);  // the same block, allocated again
  ASSERT_TRUE(w->contains(b.get(), 64, &slot, &second));
  EXPECT_NE(first, second);
  std::vector<uint8_t> out(64);
  auto stale = r->copy_block(slot, first, 64, out.data());
  ASSERT_FALSE(stale);
  EXPECT_NE(stale.error().find("reused"), std::string::npos) << stale.error();
  EXPECT_TRUE(r->copy_block(slot, second, 64, out.data()));
}

TEST(SharedSegment, OutOfRangeBlocksAndSizesAreNamed) {
  auto w = make_writer(2);
  ASSERT_TRUE(w);
  auto r = open_reader(*w);
  ASSERT_TRUE(r);
  std::vector<uint8_t> out(kBlock + 8);
  auto slot = r->copy_block(2, 0, 8, out.data());
  ASSERT_FALSE(slot);
  EXPECT_NE(slot.error().find("block 2 of a 2-block"), std::string::npos) << slot.error();
  auto size = r->copy_block(0, 0, kBlock + 8, out.data());
  ASSERT_FALSE(size);
  EXPECT_NE(size.error().find("-byte shared block"), std::string::npos) << size.error();
}

TEST(SharedSegment, AnOfferThatDoesNotMatchTheSegmentIsRefused) {
  auto w = make_writer(1);
  ASSERT_TRUE(w);
  const auto pid = static_cast<uint32_t>(getpid());
  auto nonce = SegmentReader::open(pid, w->fd(), w->mapped_bytes(), w->nonce() + 1, kOwner);
  ASSERT_FALSE(nonce);
  EXPECT_NE(nonce.error().find("nonce"), std::string::npos) << nonce.error();
  auto owner = SegmentReader::open(pid, w->fd(), w->mapped_bytes(), w->nonce(), kOwner + 1);
  EXPECT_FALSE(owner);
  auto size = SegmentReader::open(pid, w->fd(), w->mapped_bytes() + 4096, w->nonce(), kOwner);
  ASSERT_FALSE(size);
  EXPECT_NE(size.error().find("is not the"), std::string::npos) << size.error();
  auto fd = SegmentReader::open(pid, 1 << 20, w->mapped_bytes(), w->nonce(), kOwner);
  ASSERT_FALSE(fd);
  EXPECT_NE(fd.error().find("opening /proc/"), std::string::npos) << fd.error();
  EXPECT_FALSE(SegmentReader::open(pid, w->fd(), 16, w->nonce(), kOwner));
}

}  // namespace
}  // namespace sluice::transport::detail
