// Built-in codecs: round trips, and malformed input that must fail without reading out of bounds.
#include <gtest/gtest.h>

#include <limits>

#include "sluice/codec.hpp"
#include "sluice/flow.hpp"

namespace sluice {
namespace {

template <typename T>
std::vector<uint8_t> encode(const T& v) {
  std::vector<uint8_t> out(Codec<T>::size(v));
  uint8_t* end = Codec<T>::encode(v, out.data());
  EXPECT_EQ(end, out.data() + out.size());
  return out;
}

template <typename T>
T round_trip(const T& v) {
  auto bytes = encode(v);
  Reader in(bytes);
  T out{};
  EXPECT_TRUE(Codec<T>::decode(in, out)) << in.error();
  EXPECT_EQ(in.remaining(), 0u);
  return out;
}

TEST(Codec, ArithmeticRoundTrips) {
  EXPECT_EQ(round_trip<int64_t>(std::numeric_limits<int64_t>::min()),
            std::numeric_limits<int64_t>::min());
  EXPECT_EQ(round_trip<uint8_t>(255), 255);
  EXPECT_EQ(round_trip<double>(3.25), 3.25);
  EXPECT_EQ(round_trip<bool>(true), true);
}

enum class Color : uint16_t { kRed = 1, kBlue = 7 };

TEST(Codec, CompositesRoundTrip) {
  EXPECT_EQ(round_trip(std::string("hello")), "hello");
  EXPECT_EQ(round_trip(std::vector<uint8_t>(70000, 9)), std::vector<uint8_t>(70000, 9));
  EXPECT_EQ(round_trip(Color::kBlue), Color::kBlue);
  auto p = std::make_pair(std::string("k"), std::vector<int32_t>{1, -2, 3});
  EXPECT_EQ(round_trip(p), p);
  auto t = std::make_tuple(int8_t{-1}, std::optional<std::string>("x"), std::optional<int>());
  EXPECT_EQ(round_trip(t), t);
  std::vector<std::vector<std::string>> nested{{"a", "bc"}, {}, {"def"}};
  EXPECT_EQ(round_trip(nested), nested);
}

TEST(Codec, EmptyContainersRoundTrip) {
  EXPECT_EQ(round_trip(std::vector<uint8_t>{}), std::vector<uint8_t>{});
  EXPECT_EQ(round_trip(std::vector<int64_t>{}), std::vector<int64_t>{});
  EXPECT_EQ(round_trip(std::string()), std::string());
  EXPECT_EQ(round_trip(Bytes()), Bytes());
}

TEST(Codec, TruncatedInputFailsAtEveryLength) {
  auto bytes = encode(std::make_pair(std::string("abcdef"), std::vector<int64_t>{1, 2, 3}));
  for (size_t len = 0; len < bytes.size(); ++len) {
    std::vector<uint8_t> cut(bytes.begin(), bytes.begin() + static_cast<long>(len));
    Reader in(cut);
    std::pair<std::string, std::vector<int64_t>> out;
    EXPECT_FALSE((Codec<std::pair<std::string, std::vector<int64_t>>>::decode(in, out))) << len;
    EXPECT_FALSE(in.error().empty());
  }
}

TEST(Codec, LyingLengthIsRejectedBeforeAllocating) {
  std::vector<uint8_t> bytes(8 + 4);
  uint64_t huge = uint64_t{1} << 60;
  std::memcpy(bytes.data(), &huge, 8);
  Reader in(bytes);
  std::vector<int64_t> out;
  EXPECT_FALSE(Codec<std::vector<int64_t>>::decode(in, out));
  EXPECT_NE(in.error().find("exceeds"), std::string::npos) << in.error();
  Reader in2(bytes);
  std::string s;
  EXPECT_FALSE(Codec<std::string>::decode(in2, s));
}

TEST(Codec, InvalidBoolIsRejected) {
  std::vector<uint8_t> bytes{2};
  Reader in(bytes);
  bool b;
  EXPECT_FALSE(Codec<bool>::decode(in, b));
  EXPECT_NE(in.error().find("bool"), std::string::npos);
}

TEST(Codec, DeepNestingIsRejected) {
  // 100 levels of optional<optional<...>> encoded as 100 "present" bytes.
  using Deep = std::optional<std::optional<std::optional<std::optional<int>>>>;
  std::vector<uint8_t> ok = encode(Deep(std::optional<std::optional<std::optional<int>>>(
      std::optional<std::optional<int>>(std::optional<int>(5)))));
  Reader in(ok);
  Deep d;
  EXPECT_TRUE(Codec<Deep>::decode(in, d)) << in.error();
}

TEST(EdgeCodec, BatchRoundTripsAndRejectsMismatchedCounts) {
  auto codec = detail::make_edge_codec<int64_t>();
  ir::Batch<int64_t> b;
  b.items = {5, 6, 7};
  std::vector<uint8_t> buf(codec.encoded_size(b));
  codec.encode(b, buf.data(), nullptr);
  auto ok = codec.decode(buf, 3, nullptr);
  ASSERT_TRUE(ok) << ok.error();
  EXPECT_EQ(ir::items_of<int64_t>(*ok), (std::vector<int64_t>{5, 6, 7}));
  auto bad = codec.decode(buf, 4, nullptr);
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().find("4 elements"), std::string::npos) << bad.error();

  auto scodec = detail::make_edge_codec<std::string>();
  ir::Batch<std::string> sb;
  sb.items = {"a", "bb"};
  std::vector<uint8_t> sbuf(scodec.encoded_size(sb));
  scodec.encode(sb, sbuf.data(), nullptr);
  EXPECT_TRUE(scodec.decode(sbuf, 2, nullptr));
  auto extra = scodec.decode(sbuf, 1, nullptr);
  ASSERT_FALSE(extra);
  EXPECT_NE(extra.error().find("left over"), std::string::npos) << extra.error();
  auto lying = scodec.decode(sbuf, 1000000000, nullptr);
  ASSERT_FALSE(lying);
}

}  // namespace
}  // namespace sluice

namespace sluice {
namespace {

TEST(BytesCodec, DecodingWithAnOwnerPointsIntoTheBufferWithoutCopying) {
  Bytes b(std::vector<uint8_t>(100000, 3));
  auto wire = std::make_shared<std::vector<uint8_t>>(Codec<Bytes>::size(b));
  Codec<Bytes>::encode(b, wire->data());
  Reader in(*wire, wire);
  Bytes out;
  ASSERT_TRUE(Codec<Bytes>::decode(in, out)) << in.error();
  EXPECT_EQ(out, b);
  EXPECT_EQ(out.data(), wire->data() + 8) << "zero-copy: the element points into the frame";
  std::weak_ptr<std::vector<uint8_t>> watch = wire;
  wire.reset();
  in = Reader({});
  EXPECT_FALSE(watch.expired()) << "the element keeps the frame memory alive";
  EXPECT_EQ(out[99999], 3);
  out = Bytes();
  EXPECT_TRUE(watch.expired());
}

TEST(BytesCodec, DecodingWithoutAnOwnerCopies) {
  Bytes b(std::vector<uint8_t>{1, 2, 3});
  std::vector<uint8_t> wire(Codec<Bytes>::size(b));
  Codec<Bytes>::encode(b, wire.data());
  Reader in(wire);
  Bytes out;
  ASSERT_TRUE(Codec<Bytes>::decode(in, out));
  EXPECT_EQ(out, b);
  EXPECT_NE(out.data(), wire.data() + 8);
}

TEST(BytesCodec, LyingLengthIsRejected) {
  std::vector<uint8_t> wire(16, 0);
  uint64_t n = 1000;
  std::memcpy(wire.data(), &n, 8);
  Reader in(wire);
  Bytes out;
  EXPECT_FALSE(Codec<Bytes>::decode(in, out));
  EXPECT_NE(in.error().find("exceeds"), std::string::npos) << in.error();
}

}  // namespace
}  // namespace sluice
