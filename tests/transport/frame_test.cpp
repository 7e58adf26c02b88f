// Frame encoding and the checks every received frame goes through before it is read.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "sluice/transport/frame.hpp"
#include "sluice/wire/control_generated.h"

namespace sluice::transport {
namespace {

// An 8-aligned copy of some bytes, as a receive buffer would be.
struct Aligned {
  explicit Aligned(std::span<const uint8_t> b) : mem((b.size() + 7) / 8 + 1), size(b.size()) {
    if (!b.empty()) std::memcpy(mem.data(), b.data(), b.size());
  }
  std::span<const uint8_t> bytes() const {
    return {reinterpret_cast<const uint8_t*>(mem.data()), size};
  }
  std::span<uint8_t> mut() { return {reinterpret_cast<uint8_t*>(mem.data()), size}; }
  std::vector<uint64_t> mem;
  size_t size;
};

OwnedFrame make_frame(uint32_t count, const std::vector<uint8_t>& payload, uint32_t dst = 1) {
  DataFrameBuilder b(/*edge=*/7, /*src=*/0, dst, /*seq=*/3, /*tick=*/9);
  uint8_t* p = b.reserve_elements(count, payload.size());
  if (!payload.empty()) std::memcpy(p, payload.data(), payload.size());
  return b.finish();
}

const FrameCheck kCheck{/*max_bytes=*/1 << 20, /*self_rank=*/1, /*job_size=*/2};

TEST(Frame, ValidFrameRoundTrips) {
  std::vector<uint8_t> payload(64);
  for (size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<uint8_t>(i);
  OwnedFrame f = make_frame(8, payload);
  Aligned a(f.bytes());
  auto v = decode_data_frame(a.bytes(), kCheck);
  ASSERT_TRUE(v) << v.error();
  EXPECT_EQ(v->edge, 7u);
  EXPECT_EQ(v->src, 0u);
  EXPECT_EQ(v->dst, 1u);
  EXPECT_EQ(v->seq, 3u);
  EXPECT_EQ(v->tick, 9u);
  EXPECT_EQ(v->count, 8u);
  ASSERT_EQ(v->elements.size(), payload.size());
  EXPECT_EQ(0, std::memcmp(v->elements.data(), payload.data(), payload.size()));
  EXPECT_EQ(reinterpret_cast<uintptr_t>(v->elements.data()) % 8, 0u) << "elements are 8-aligned";
}

TEST(Frame, SplitFrameDecodesFromItsPrefixWithTheElementsElsewhere) {
  std::vector<uint8_t> payload(1000);  // leaves padding after the elements
  for (size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<uint8_t>(i * 3);
  OwnedFrame f = make_frame(1000, payload);
  // Where the elements start: the frame's prefix is everything before.
  size_t at = 0;
  while (at + payload.size() <= f.bytes().size() &&
         std::memcmp(f.bytes().data() + at, payload.data(), payload.size()) != 0) {
    ++at;
  }
  ASSERT_LE(at + payload.size(), f.bytes().size());
  Aligned head(f.bytes().first(at));
  std::vector<uint8_t> elements = payload;
  auto v = decode_split_data_frame(head.mut(), elements, kCheck);
  ASSERT_TRUE(v) << v.error();
  EXPECT_EQ(v->edge, 7u);
  EXPECT_EQ(v->seq, 3u);
  EXPECT_EQ(v->count, 1000u);
  EXPECT_EQ(v->elements.data(), elements.data()) << "the elements are the payload, not a copy";
  EXPECT_EQ(v->elements.size(), elements.size());

  // A payload of another length than the element vector announces: refused, prefix untouched.
  Aligned again(f.bytes().first(at));
  std::vector<uint8_t> shorter(payload.begin(), payload.end() - 8);
  auto bad = decode_split_data_frame(again.mut(), shorter, kCheck);
  EXPECT_FALSE(bad);
  EXPECT_EQ(0, std::memcmp(again.bytes().data(), f.bytes().data(), at));
  // A prefix that ends inside the elements (a payload that is only their tail): refused, the
  // prefix as it came, for the caller to decode the frame whole.
  Aligned inside(f.bytes().first(at + 16));
  std::vector<uint8_t> tail(payload.begin() + 16, payload.end());
  auto other = decode_split_data_frame(inside.mut(), tail, kCheck);
  EXPECT_FALSE(other);
  EXPECT_EQ(0, std::memcmp(inside.bytes().data(), f.bytes().data(), at + 16));
  // Not a frame at all.
  std::vector<uint8_t> junk(64, 0x5a);
  Aligned garbage(junk);
  EXPECT_FALSE(decode_split_data_frame(garbage.mut(), elements, kCheck));
}

TEST(Frame, EmptyFrameRoundTrips) {
  OwnedFrame f = make_frame(0, {});
  Aligned a(f.bytes());
  auto v = decode_data_frame(a.bytes(), kCheck);
  ASSERT_TRUE(v) << v.error();
  EXPECT_EQ(v->count, 0u);
  EXPECT_TRUE(v->elements.empty());
}

TEST(Frame, TruncatedFrameIsRejectedAtEveryLength) {
  OwnedFrame f = make_frame(4, std::vector<uint8_t>(32, 0xab));
  for (size_t len = 0; len < f.bytes().size(); ++len) {
    Aligned a(f.bytes().first(len));
    auto v = decode_data_frame(a.bytes(), kCheck);
    // A cut inside trailing padding can still verify; the transport's header length catches
    // that case (see FrameHeader tests). Anything the verifier accepts must be self-consistent.
    if (v) {
      EXPECT_LE(v->elements.size(), len);
    } else {
      EXPECT_FALSE(v.error().empty());
    }
  }
  Aligned tiny(f.bytes().first(4));
  auto v = decode_data_frame(tiny.bytes(), kCheck);
  ASSERT_FALSE(v);
  EXPECT_NE(v.error().find("too short"), std::string::npos) << v.error();
}

TEST(Frame, FrameCutBeforeItsElementsEndFailsVerification) {
  OwnedFrame f = make_frame(4, std::vector<uint8_t>(4096, 1));
  Aligned a(f.bytes().first(f.bytes().size() / 2));
  auto v = decode_data_frame(a.bytes(), kCheck);
  ASSERT_FALSE(v);
  EXPECT_NE(v.error().find("verification"), std::string::npos) << v.error();
}

TEST(Frame, OversizedFrameIsRejected) {
  OwnedFrame f = make_frame(1, std::vector<uint8_t>(4096, 1));
  Aligned a(f.bytes());
  FrameCheck small = kCheck;
  small.max_bytes = 1024;
  auto v = decode_data_frame(a.bytes(), small);
  ASSERT_FALSE(v);
  EXPECT_NE(v.error().find("too large"), std::string::npos) << v.error();
}

TEST(Frame, GarbageIsRejected) {
  std::vector<uint8_t> junk(256);
  for (size_t i = 0; i < junk.size(); ++i) junk[i] = static_cast<uint8_t>(i * 37 + 11);
  Aligned a(junk);
  auto v = decode_data_frame(a.bytes(), kCheck);
  ASSERT_FALSE(v);
  EXPECT_NE(v.error().find("identifier"), std::string::npos) << v.error();
}

TEST(Frame, CorruptedOffsetsFailVerification) {
  OwnedFrame f = make_frame(2, std::vector<uint8_t>(16, 5));
  Aligned a(f.bytes());
  // Point the root table offset far past the end, keeping the identifier.
  uint32_t bogus = 0x7fff0000;
  std::memcpy(a.mut().data(), &bogus, 4);
  auto v = decode_data_frame(a.bytes(), kCheck);
  ASSERT_FALSE(v);
  EXPECT_NE(v.error().find("verification"), std::string::npos) << v.error();
}

TEST(Frame, FrameForAnotherRankIsRejected) {
  OwnedFrame f = make_frame(1, std::vector<uint8_t>(8, 0), /*dst=*/0);
  Aligned a(f.bytes());
  auto v = decode_data_frame(a.bytes(), kCheck);
  ASSERT_FALSE(v);
  EXPECT_NE(v.error().find("addressed to rank 0"), std::string::npos) << v.error();
}

TEST(Frame, SourceOutsideTheJobIsRejected) {
  DataFrameBuilder b(1, /*src=*/5, 1, 1, 1);
  b.reserve_elements(0, 0);
  OwnedFrame f = b.finish();
  Aligned a(f.bytes());
  auto v = decode_data_frame(a.bytes(), kCheck);
  ASSERT_FALSE(v);
  EXPECT_NE(v.error().find("outside the job"), std::string::npos) << v.error();
}

TEST(Frame, ControlFrameIsNotADataFrame) {
  ControlMsg m;
  m.kind = ControlKind::kCredit;
  m.src = 0;
  m.dst = 1;
  m.edge = 3;
  m.value = 4096;
  OwnedFrame f = encode_control(m);
  Aligned a(f.bytes());
  auto v = decode_data_frame(a.bytes(), kCheck);
  ASSERT_FALSE(v) << "a control frame must not pass as data";
  auto c = decode_control(a.bytes(), kCheck);
  ASSERT_TRUE(c) << c.error();
  EXPECT_EQ(c->kind, ControlKind::kCredit);
  EXPECT_EQ(c->edge, 3u);
  EXPECT_EQ(c->value, 4096u);
}

TEST(Frame, EveryControlKindRoundTrips) {
  for (auto kind : {ControlKind::kHello, ControlKind::kHeartbeat, ControlKind::kCredit,
                    ControlKind::kClose, ControlKind::kCloseAck, ControlKind::kBye,
                    ControlKind::kSharedOffer, ControlKind::kSharedAccept}) {
    ControlMsg m;
    m.kind = kind;
    m.src = 0;
    m.dst = 1;
    m.edge = 2;
    m.value = 77;
    m.job = "job-x";
    m.pid = 1234;
    m.fd = 9;
    m.nonce = 0x1234567890abcdefULL;
    m.reader = 5;
    OwnedFrame f = encode_control(m);
    Aligned a(f.bytes());
    auto c = decode_control(a.bytes(), kCheck);
    ASSERT_TRUE(c) << c.error();
    EXPECT_EQ(c->kind, kind);
    if (kind == ControlKind::kHello) {
      EXPECT_EQ(c->job, "job-x");
      EXPECT_EQ(c->pid, 1234u);
    }
    if (kind == ControlKind::kSharedOffer) {
      EXPECT_EQ(c->pid, 1234u);
      EXPECT_EQ(c->fd, 9);
      EXPECT_EQ(c->value, 77u);
      EXPECT_EQ(c->reader, 5u);
    }
    if (kind == ControlKind::kSharedOffer || kind == ControlKind::kSharedAccept) {
      EXPECT_EQ(c->nonce, 0x1234567890abcdefULL);
    }
  }
}

TEST(Frame, ControlFrameWithATypeButNoBodyIsRejected) {
  for (auto type :
       {wire::ControlBody::Hello, wire::ControlBody::Heartbeat, wire::ControlBody::Credit,
        wire::ControlBody::Close, wire::ControlBody::CloseAck, wire::ControlBody::SharedOffer,
        wire::ControlBody::SharedAccept}) {
    flatbuffers::FlatBufferBuilder fbb;
    fbb.Finish(wire::CreateControl(fbb, /*src=*/0, /*dst=*/1, type, /*body=*/0),
               wire::ControlIdentifier());
    Aligned a({fbb.GetBufferPointer(), fbb.GetSize()});
    auto c = decode_control(a.bytes(), kCheck);
    ASSERT_FALSE(c) << "body type " << static_cast<int>(type);
    EXPECT_NE(c.error().find("has no body"), std::string::npos) << c.error();
  }
}

TEST(FrameHeader, WrongMagicIsRejected) {
  FrameHeader h;
  h.magic = 0xdeadbeef;
  auto r = decode_frame_header({reinterpret_cast<const uint8_t*>(&h), sizeof h});
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().find("magic"), std::string::npos) << r.error();
}

TEST(FrameHeader, WrongSizeIsRejected) {
  uint8_t junk[5] = {};
  auto r = decode_frame_header({junk, sizeof junk});
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().find("expected 24"), std::string::npos) << r.error();
}

TEST(FrameHeader, UnknownKindIsRejected) {
  FrameHeader h;
  h.kind = static_cast<FrameKind>(9);
  auto r = decode_frame_header({reinterpret_cast<const uint8_t*>(&h), sizeof h});
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().find("kind 9"), std::string::npos) << r.error();
}

// A split data frame: the header is the struct plus the prefix it announces.
std::vector<uint8_t> split_header(FrameHeader h, size_t prefix_bytes) {
  std::vector<uint8_t> out(sizeof h + prefix_bytes, 0);
  std::memcpy(out.data(), &h, sizeof h);
  return out;
}

TEST(FrameHeader, SplitHeaderCarriesItsPrefix) {
  FrameHeader h;
  h.prefix = 40;
  h.length = 4096;
  auto bytes = split_header(h, 40);
  auto r = decode_frame_header(bytes);
  ASSERT_TRUE(r) << r.error();
  EXPECT_EQ(r->prefix, 40u);
  EXPECT_EQ(r->length, 4096u);
}

TEST(FrameHeader, SplitHeaderShorterThanItsPrefixIsRejected) {
  FrameHeader h;
  h.prefix = 40;
  h.length = 4096;
  auto bytes = split_header(h, 16);
  auto r = decode_frame_header(bytes);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().find("plus the 40-byte prefix it announces"), std::string::npos) << r.error();
}

TEST(FrameHeader, PrefixLongerThanTheFrameOrTheLimitIsRejected) {
  FrameHeader h;
  h.prefix = 64;
  h.length = 32;
  auto r = decode_frame_header(split_header(h, 64));
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().find("64-byte prefix of a 32-byte frame"), std::string::npos) << r.error();
  h.prefix = kMaxFramePrefix + 8;
  h.length = 1 << 20;
  r = decode_frame_header(split_header(h, h.prefix));
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().find("limit"), std::string::npos) << r.error();
}

TEST(FrameHeader, SplitControlFrameIsRejected) {
  FrameHeader h;
  h.kind = FrameKind::kControl;
  h.prefix = 8;
  h.length = 64;
  auto r = decode_frame_header(split_header(h, 8));
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().find("only data frames are split"), std::string::npos) << r.error();
}

}  // namespace
}  // namespace sluice::transport
