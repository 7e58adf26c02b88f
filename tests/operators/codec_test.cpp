// Built-in codecs: round trips, and malformed input that must fail without reading out of bounds.
#include <gtest/gtest.h>

#include <array>
#include <limits>
#include <numeric>
#include <string_view>

#include "codec_test_generated.h"
#include "sluice/codec.hpp"
#include "sluice/flat.hpp"
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

TEST(Codec, NestedOptionalsDecode) {
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
  EXPECT_EQ(ir::items_of<int64_t>(*ok), (ir::Vec<int64_t>{5, 6, 7}));
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

// MemberId, trivially copyable structs, nested combinations, lying lengths, deep nesting.
namespace sluice {
namespace {

struct Worker {};
using WorkerId = MemberId<Worker>;

struct Vec3 {
  float x, y, z;
  int32_t id;
  friend bool operator==(const Vec3&, const Vec3&) = default;
};

// Every proper prefix of `v`'s encoding fails with an error (the codecs are self-delimiting).
// Each cut lives in a vector of exactly its size, so ASan sees any read past it.
template <typename T>
void expect_every_truncation_fails(const T& v) {
  auto bytes = encode(v);
  for (size_t len = 0; len < bytes.size(); ++len) {
    std::vector<uint8_t> cut(bytes.begin(), bytes.begin() + static_cast<long>(len));
    Reader in(cut);
    T out{};
    EXPECT_FALSE(Codec<T>::decode(in, out)) << typeid(T).name() << " cut at " << len;
    EXPECT_FALSE(in.error().empty());
  }
}

TEST(MemberIdCodec, IsFourBulkCopyableBytes) {
  static_assert(BulkCopyable<WorkerId>);
  static_assert(Codec<WorkerId>::kFixedSize == 4);
  auto id = WorkerId::from_raw(0xA1B2C3D4);
  auto bytes = encode(id);
  ASSERT_EQ(bytes.size(), 4u);
  uint32_t raw;
  std::memcpy(&raw, bytes.data(), 4);
  EXPECT_EQ(raw, 0xA1B2C3D4u);
  EXPECT_EQ(round_trip(id), id);
  std::vector<WorkerId> ids{WorkerId::from_raw(0), WorkerId::from_raw(7), WorkerId::from_raw(9)};
  EXPECT_EQ(round_trip(ids), ids);
  EXPECT_EQ(encode(ids).size(), 8u + 3 * 4);
}

TEST(StructCodec, TriviallyCopyableStructsTravelAsTheirBytes) {
  static_assert(BulkCopyable<Vec3>);
  static_assert(Codec<Vec3>::kFixedSize == sizeof(Vec3));
  Vec3 v{1.5f, -2.0f, 3.25f, 42};
  EXPECT_EQ(round_trip(v), v);
  std::vector<Vec3> many(1000, v);
  many[999].id = 7;
  EXPECT_EQ(round_trip(many), many);
  EXPECT_EQ(encode(many).size(), 8 + many.size() * sizeof(Vec3));
  std::array<int16_t, 3> arr{1, -2, 3};
  EXPECT_EQ(round_trip(arr), arr);
}

TEST(Codec, BulkVectorsDecodeFromMisalignedBytes) {
  std::vector<int64_t> v{1, -2, 3, std::numeric_limits<int64_t>::max()};
  auto bytes = encode(v);
  std::vector<uint8_t> shifted(1 + bytes.size());
  std::copy(bytes.begin(), bytes.end(), shifted.begin() + 1);
  Reader in(std::span<const uint8_t>(shifted).subspan(1));
  std::vector<int64_t> out;
  ASSERT_TRUE(Codec<std::vector<int64_t>>::decode(in, out)) << in.error();
  EXPECT_EQ(out, v);
}

TEST(StructCodec, StandardTypesKeepTheirOwnCodecs) {
  // libstdc++'s optional<int> is trivially copyable, but is sent as a flag + value.
  EXPECT_EQ(Codec<std::optional<int>>::size(std::nullopt), 1u);
  EXPECT_EQ(Codec<std::optional<int>>::size(5), 5u);
  static_assert(!FixedSizeCodec<std::optional<int>>);
  EXPECT_EQ((Codec<std::pair<int8_t, int32_t>>::size({1, 2})), 5u);
  EXPECT_EQ((Codec<std::tuple<int8_t, int8_t>>::size({1, 2})), 2u);
  // Views would send the sender's pointers: no codec at all.
  static_assert(!Encodable<std::string_view>);
  static_assert(!Encodable<std::span<const int>>);
  static_assert(!Encodable<int*>);
}

struct Flagged {
  bool on;
  int32_t level;
};

}  // namespace

// A full specialization wins over the struct codec: here it validates the bool.
template <>
struct Codec<Flagged> {
  static size_t size(const Flagged&) { return 5; }
  static uint8_t* encode(const Flagged& f, uint8_t* out) {
    return Codec<int32_t>::encode(f.level, Codec<bool>::encode(f.on, out));
  }
  static bool decode(Reader& in, Flagged& f) {
    return Codec<bool>::decode(in, f.on) && Codec<int32_t>::decode(in, f.level);
  }
};

namespace {

enum class Level : uint8_t { kLow = 0, kHigh = 1 };

}  // namespace

// A fixed-size codec that checks its values: without kBulkCopy it is called per element.
template <>
struct Codec<Level> {
  static constexpr size_t kFixedSize = 1;
  static size_t size(Level) { return 1; }
  static uint8_t* encode(Level l, uint8_t* out) {
    *out = static_cast<uint8_t>(l);
    return out + 1;
  }
  static bool decode(Reader& in, Level& l) {
    uint8_t b;
    if (!Codec<uint8_t>::decode(in, b)) return false;
    if (b > 1) return in.fail("level " + std::to_string(b) + ", expected 0 or 1");
    l = static_cast<Level>(b);
    return true;
  }
};

namespace {

TEST(StructCodec, AUserFixedSizeCodecIsCalledPerElementUnlessItOptsIntoBulkCopy) {
  static_assert(FixedSizeCodec<Level> && !BulkCopyable<Level>);
  static_assert(BulkCopyable<Color> && BulkCopyable<Vec3> && !BulkCopyable<bool>);
  auto bytes = encode(std::vector<Level>{Level::kHigh, Level::kLow});
  bytes.back() = 9;
  Reader in(bytes);
  std::vector<Level> out;
  EXPECT_FALSE(Codec<std::vector<Level>>::decode(in, out));
  EXPECT_NE(in.error().find("level 9"), std::string::npos) << in.error();
}

TEST(StructCodec, AFullSpecializationWinsOverTheBytes) {
  static_assert(!FixedSizeCodec<Flagged>);
  auto bytes = encode(Flagged{true, -3});
  ASSERT_EQ(bytes.size(), 5u);
  bytes[0] = 2;
  Reader in(bytes);
  Flagged f{};
  EXPECT_FALSE(Codec<Flagged>::decode(in, f));
  EXPECT_NE(in.error().find("bool"), std::string::npos) << in.error();
}

TEST(Codec, NestedCombinationsRoundTrip) {
  using Entry = std::optional<std::pair<std::string, WorkerId>>;
  std::vector<Entry> v{Entry({"alpha", WorkerId::from_raw(1)}), std::nullopt,
                       Entry({"", WorkerId::from_raw(77)})};
  EXPECT_EQ(round_trip(v), v);
  using Mixed = std::tuple<Vec3, std::vector<std::string>, std::optional<std::vector<WorkerId>>,
                           std::vector<std::optional<Vec3>>, bool, Color>;
  Mixed m{Vec3{1, 2, 3, 4},
          {"a", "", "ccc"},
          std::vector<WorkerId>{WorkerId::from_raw(3)},
          {std::nullopt, Vec3{5, 6, 7, 8}},
          true,
          Color::kRed};
  EXPECT_EQ(round_trip(m), m);
  std::pair<std::vector<std::vector<int64_t>>, std::optional<std::string>> p{{{1, 2}, {}, {3}},
                                                                             std::nullopt};
  EXPECT_EQ(round_trip(p), p);
}

TEST(Codec, EveryCodecFailsOnEveryTruncation) {
  expect_every_truncation_fails(int64_t{-5});
  expect_every_truncation_fails(3.5);
  expect_every_truncation_fails(Color::kBlue);
  expect_every_truncation_fails(WorkerId::from_raw(3));
  expect_every_truncation_fails(Vec3{1, 2, 3, 4});
  expect_every_truncation_fails(std::string("truncate me"));
  expect_every_truncation_fails(std::string());
  expect_every_truncation_fails(std::vector<int64_t>{1, 2, 3});
  expect_every_truncation_fails(std::vector<Vec3>(3, Vec3{1, 2, 3, 4}));
  expect_every_truncation_fails(std::vector<std::string>{"a", "bc"});
  expect_every_truncation_fails(std::optional<int32_t>(9));
  expect_every_truncation_fails(std::make_pair(WorkerId::from_raw(1), std::string("x")));
  expect_every_truncation_fails(std::make_tuple(int8_t{1}, std::string("yz"), Vec3{}));
  expect_every_truncation_fails(Bytes(std::vector<uint8_t>{1, 2, 3}));
  expect_every_truncation_fails(std::vector<std::optional<std::pair<std::string, WorkerId>>>{
      std::pair<std::string, WorkerId>{"k", WorkerId::from_raw(2)}, std::nullopt});
}

// A length field of `len` followed by 16 bytes: no codec may believe it.
template <typename T>
void expect_lying_length_rejected(uint64_t len) {
  std::vector<uint8_t> bytes(8 + 16, 1);
  std::memcpy(bytes.data(), &len, 8);
  Reader in(bytes);
  T out{};
  EXPECT_FALSE(Codec<T>::decode(in, out)) << typeid(T).name() << " length " << len;
  EXPECT_NE(in.error().find("exceeds"), std::string::npos) << in.error();
}

TEST(Codec, LyingLengthsAreRejectedBeforeAllocating) {
  // Each is checked against the 16 bytes that remain before anything is reserved.
  for (uint64_t len : {uint64_t{17}, uint64_t{1} << 32, uint64_t{1} << 60, uint64_t{1} << 63,
                       std::numeric_limits<uint64_t>::max()}) {
    expect_lying_length_rejected<std::string>(len);
    expect_lying_length_rejected<Bytes>(len);
    expect_lying_length_rejected<std::vector<uint8_t>>(len);
    expect_lying_length_rejected<std::vector<int64_t>>(len);
    expect_lying_length_rejected<std::vector<Vec3>>(len);
    expect_lying_length_rejected<std::vector<WorkerId>>(len);
    expect_lying_length_rejected<std::vector<std::string>>(len);
    expect_lying_length_rejected<std::vector<std::optional<int>>>(len);
    expect_lying_length_rejected<Flat<test::Blob>>(len);
  }
  // 3 int64s claimed, 16 bytes present: the element size counts, not just the byte count.
  expect_lying_length_rejected<std::vector<int64_t>>(3);
}

// A recursive user type: each level enters and leaves the Reader's nesting guard.
struct Nest {
  int32_t value = 0;
  std::vector<Nest> children;
};

Nest chain(int depth) {
  Nest n{depth, {}};
  for (int i = depth - 1; i >= 0; --i) n = Nest{i, {std::move(n)}};
  return n;
}

int depth_of(const Nest& n) { return n.children.empty() ? 1 : 1 + depth_of(n.children[0]); }

}  // namespace

template <>
struct Codec<Nest> {
  static size_t size(const Nest& n) { return 4 + Codec<std::vector<Nest>>::size(n.children); }
  static uint8_t* encode(const Nest& n, uint8_t* out) {
    return Codec<std::vector<Nest>>::encode(n.children, Codec<int32_t>::encode(n.value, out));
  }
  static bool decode(Reader& in, Nest& n) {
    if (!in.enter()) return false;
    if (!Codec<int32_t>::decode(in, n.value) || !Codec<std::vector<Nest>>::decode(in, n.children))
      return false;
    in.leave();
    return true;
  }
};

namespace {

TEST(Codec, RecursiveUserTypeWithinTheCapDecodes) {
  // Each level counts twice: Nest itself and its vector of children.
  Nest n = round_trip(chain(20));
  EXPECT_EQ(depth_of(n), 21);
}

TEST(Codec, RecursiveUserTypeNestedPastTheCapIsRejected) {
  auto bytes = encode(chain(1000));
  Reader in(bytes);
  Nest out;
  EXPECT_FALSE(Codec<Nest>::decode(in, out));
  EXPECT_NE(in.error().find("nesting deeper than 64"), std::string::npos) << in.error();
}

}  // namespace
}  // namespace sluice

// Flat<Table>: FlatBuffers tables read in place.
namespace sluice {
namespace {

using test::Blob;

Flat<Blob> make_blob(uint32_t id, const std::string& name, size_t data_bytes) {
  flatbuffers::FlatBufferBuilder fbb;
  std::vector<uint8_t> data(data_bytes);
  std::iota(data.begin(), data.end(), uint8_t{0});
  auto d = fbb.CreateVector(data);  // first, so it ends the buffer
  auto n = fbb.CreateString(name);
  auto v = fbb.CreateVector(std::vector<int64_t>{1, -2, 3});
  fbb.Finish(test::CreateBlob(fbb, id, n, d, v));
  return Flat<Blob>(std::move(fbb));
}

// A Blob without 8-byte fields: FlatBuffers aligns it to 4 only, so the codec must pad it.
Flat<Blob> blob_needing_padding() {
  for (size_t n = 1;; ++n) {
    flatbuffers::FlatBufferBuilder fbb;
    auto d = fbb.CreateVector(std::vector<uint8_t>(n, 5));
    fbb.Finish(test::CreateBlob(fbb, 1, 0, d));
    if (fbb.GetSize() % 8 != 0) return Flat<Blob>(std::move(fbb));
  }
}

// Reads every field, so ASan sees any read the verifier let through out of bounds.
uint64_t touch(const Blob& b) {
  uint64_t sum = b.id();
  if (b.name() != nullptr) sum += b.name()->str().size();
  if (b.data() != nullptr)
    for (uint8_t x : *b.data()) sum += x;
  if (b.values() != nullptr)
    for (int64_t x : *b.values()) sum += static_cast<uint64_t>(x);
  return sum;
}

TEST(FlatCodec, RoundTripReadsTheTableInPlace) {
  Flat<Blob> f = make_blob(7, "seven", 13);
  ASSERT_TRUE(f);
  EXPECT_EQ(f->id(), 7u);
  auto copy = f;  // shares the buffer
  EXPECT_EQ(copy.bytes().data(), f.bytes().data());
  Flat<Blob> back = round_trip(f);
  ASSERT_TRUE(back);
  EXPECT_EQ(back->id(), 7u);
  EXPECT_EQ(back->name()->str(), "seven");
  ASSERT_EQ(back->data()->size(), 13u);
  EXPECT_EQ(back->data()->Get(12), 12);
  EXPECT_EQ(back->values()->Get(1), -2);
  Flat<Blob> odd = blob_needing_padding();
  EXPECT_EQ(encode(odd).size(), 8 + odd.size() + 4) << "padded: the next element stays aligned";
  EXPECT_EQ(round_trip(odd)->data()->Get(0), 5);
  EXPECT_TRUE(
      std::equal(back.bytes().begin(), back.bytes().end(), f.bytes().begin(), f.bytes().end()));
}

TEST(FlatCodec, EmptyFlatTravelsAsEmpty) {
  Flat<Blob> none;
  EXPECT_EQ(none.get(), nullptr);
  EXPECT_EQ(encode(none).size(), 8u);
  EXPECT_FALSE(round_trip(none));
}

TEST(FlatCodec, NestedInContainersRoundTrips) {
  std::vector<std::optional<std::pair<std::string, Flat<Blob>>>> v{
      std::pair<std::string, Flat<Blob>>{"a", make_blob(1, "one", 3)}, std::nullopt,
      std::pair<std::string, Flat<Blob>>{"bb", make_blob(2, "two", 1000)}};
  auto back = round_trip(v);
  ASSERT_EQ(back.size(), 3u);
  EXPECT_EQ(back[0]->second->name()->str(), "one");
  EXPECT_FALSE(back[1]);
  EXPECT_EQ(back[2]->second->data()->size(), 1000u);
  expect_every_truncation_fails(v);
}

TEST(FlatCodec, DecodingWithAnOwnerPointsIntoTheFrame) {
  Flat<Blob> f = make_blob(3, "zero-copy", 100000);
  auto wire = std::make_shared<std::vector<uint8_t>>(Codec<Flat<Blob>>::size(f));
  Codec<Flat<Blob>>::encode(f, wire->data());
  Reader in(*wire, wire);
  Flat<Blob> out;
  ASSERT_TRUE(Codec<Flat<Blob>>::decode(in, out)) << in.error();
  EXPECT_EQ(out.bytes().data(), wire->data() + 8);
  std::weak_ptr<std::vector<uint8_t>> watch = wire;
  wire.reset();
  in = Reader({});
  EXPECT_FALSE(watch.expired()) << "the element keeps the frame memory alive";
  EXPECT_EQ(out->data()->Get(99999), static_cast<uint8_t>(99999));
  out = Flat<Blob>();
  EXPECT_TRUE(watch.expired());
}

TEST(FlatCodec, MisalignedInputIsCopiedToAlignedMemory) {
  Flat<Blob> f = make_blob(4, "odd", 5);
  auto wire = std::make_shared<std::vector<uint8_t>>(1 + Codec<Flat<Blob>>::size(f));
  Codec<Flat<Blob>>::encode(f, wire->data() + 1);
  Reader in(std::span<const uint8_t>(*wire).subspan(1), wire);
  Flat<Blob> out;
  ASSERT_TRUE(Codec<Flat<Blob>>::decode(in, out)) << in.error();
  EXPECT_EQ(reinterpret_cast<uintptr_t>(out.bytes().data()) % 8, 0u);
  EXPECT_NE(out.bytes().data(), wire->data() + 9);
  EXPECT_EQ(out->name()->str(), "odd");
}

TEST(FlatCodec, BatchElementsStayAlignedAndPointIntoTheFrame) {
  auto codec = detail::make_edge_codec<Flat<Blob>>();
  ir::Batch<Flat<Blob>> b;
  b.items = {make_blob(1, "a", 1), make_blob(2, "bcd", 30), Flat<Blob>(), make_blob(3, "", 7)};
  auto wire = std::make_shared<std::vector<uint8_t>>(codec.encoded_size(b));
  codec.encode(b, wire->data(), nullptr);
  auto r = codec.decode(*wire, 4, wire);
  ASSERT_TRUE(r) << r.error();
  const auto& items = ir::items_of<Flat<Blob>>(*r);
  ASSERT_EQ(items.size(), 4u);
  for (const auto& e : items) {
    if (!e) continue;
    EXPECT_GE(e.bytes().data(), wire->data());
    EXPECT_LT(e.bytes().data(), wire->data() + wire->size()) << "zero-copy";
  }
  EXPECT_EQ(items[1]->name()->str(), "bcd");
  EXPECT_FALSE(items[2]);
  EXPECT_EQ(items[3]->id(), 3u);
}

struct RecordingSink final : ZeroCopySink {
  struct Hole {
    uint8_t* at;
    const uint8_t* src;
    size_t n;
  };
  std::vector<Hole> holes;
  void add(uint8_t* at, const uint8_t* src, size_t n) override { holes.push_back({at, src, n}); }
};

TEST(FlatCodec, LargeBuffersAreGatheredFromTheirOwnMemory) {
  Flat<Blob> big = make_blob(9, "big", 64 << 10);
  Flat<Blob> small = make_blob(8, "small", 10);
  std::vector<uint8_t> wire(Codec<Flat<Blob>>::size(big) + Codec<Flat<Blob>>::size(small));
  RecordingSink sink;
  uint8_t* p = Codec<Flat<Blob>>::encode_gather(big, wire.data(), sink);
  p = Codec<Flat<Blob>>::encode_gather(small, p, sink);
  EXPECT_EQ(p, wire.data() + wire.size());
  ASSERT_EQ(sink.holes.size(), 1u) << "only the large buffer leaves the frame";
  EXPECT_EQ(sink.holes[0].at, wire.data() + 8);
  EXPECT_EQ(sink.holes[0].src, big.bytes().data());
  std::memcpy(sink.holes[0].at, sink.holes[0].src, sink.holes[0].n);  // what the wire delivers
  Reader in(wire);
  Flat<Blob> a, b;
  ASSERT_TRUE(Codec<Flat<Blob>>::decode(in, a) && Codec<Flat<Blob>>::decode(in, b)) << in.error();
  EXPECT_EQ(a->data()->size(), 64u << 10);
  EXPECT_EQ(b->name()->str(), "small");
  EXPECT_EQ(in.remaining(), 0u);
}

TEST(FlatCodec, FromBytesVerifiesAndCopies) {
  Flat<Blob> f = make_blob(5, "five", 9);
  auto ok = Flat<Blob>::from_bytes(f.bytes());
  ASSERT_TRUE(ok) << ok.error();
  EXPECT_NE(ok->bytes().data(), f.bytes().data());
  EXPECT_EQ((*ok)->name()->str(), "five");
  auto too_short = Flat<Blob>::from_bytes(f.bytes().first(4));
  ASSERT_FALSE(too_short);
  EXPECT_NE(too_short.error().find("at least 12 bytes, got 4"), std::string::npos)
      << too_short.error();
  std::vector<uint8_t> garbage(64, 0xFF);
  auto bad = Flat<Blob>::from_bytes(garbage);
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().find("verifier rejected a 64-byte"), std::string::npos) << bad.error();
}

TEST(FlatCodec, TruncatedAtEveryLengthFails) {
  expect_every_truncation_fails(make_blob(1, "cut", 21));
  expect_every_truncation_fails(blob_needing_padding());
}

// The buffer of `f` with `edit` applied, decoded through the codec: must fail with `what`.
template <typename Edit>
void expect_corrupt_buffer_rejected(const Flat<Blob>& f, Edit edit, const std::string& what) {
  std::vector<uint8_t> buf(f.bytes().begin(), f.bytes().end());
  edit(buf);
  Flat<Blob> corrupt;
  std::vector<uint8_t> wire(8);  // length, buffer, padding: the codec's format by hand
  uint64_t n = buf.size();
  std::memcpy(wire.data(), &n, 8);
  wire.insert(wire.end(), buf.begin(), buf.end());
  wire.resize(8 + n + detail::flat_padding(n), 0);
  Reader in(wire);
  EXPECT_FALSE(Codec<Flat<Blob>>::decode(in, corrupt)) << what;
  EXPECT_NE(in.error().find("verifier rejected"), std::string::npos) << what << ": " << in.error();
}

TEST(FlatCodec, BadOffsetsAreRejected) {
  Flat<Blob> f = make_blob(6, "offsets", 40);
  auto put32 = [](std::vector<uint8_t>& b, size_t at, uint32_t v) { std::memcpy(&b[at], &v, 4); };
  auto root_off = [](const std::vector<uint8_t>& b) {
    uint32_t v;
    std::memcpy(&v, b.data(), 4);
    return size_t{v};
  };
  expect_corrupt_buffer_rejected(
      f, [&](auto& b) { put32(b, 0, static_cast<uint32_t>(b.size()) + 64); }, "root past the end");
  expect_corrupt_buffer_rejected(
      f, [&](auto& b) { put32(b, 0, 0); }, "root points at itself");
  expect_corrupt_buffer_rejected(
      f, [&](auto& b) { put32(b, 0, 0x80000000u); }, "root negative");
  expect_corrupt_buffer_rejected(
      f, [&](auto& b) { put32(b, 0, 2); }, "root misaligned");
  expect_corrupt_buffer_rejected(
      f, [&](auto& b) { put32(b, root_off(b), 0x7FFFFFF0u); }, "vtable far before the buffer");
  expect_corrupt_buffer_rejected(
      f, [&](auto& b) { put32(b, root_off(b), 0x90000000u); }, "vtable far past the buffer");
  // The [ubyte] vector was built first, so it ends the buffer: cutting the tail cuts it.
  expect_corrupt_buffer_rejected(
      f, [&](auto& b) { b.resize(b.size() - 8); }, "wrong size");
}

TEST(FlatCodec, EveryFlippedByteIsAnErrorOrSafeToRead) {
  Flat<Blob> f = make_blob(11, "flip", 24);
  for (size_t i = 0; i < f.size(); ++i) {
    for (uint8_t mask : {uint8_t{0x01}, uint8_t{0x80}, uint8_t{0xFF}}) {
      std::vector<uint8_t> buf(f.bytes().begin(), f.bytes().end());
      buf[i] ^= mask;
      auto r = Flat<Blob>::from_bytes(buf);
      if (r) {
        touch(**r);  // verified: every read must stay inside the buffer
      } else {
        EXPECT_FALSE(r.error().empty());
      }
    }
  }
}

TEST(FlatCodec, WrongLengthFieldsAreRejected) {
  Flat<Blob> f = make_blob(12, "len", 16);
  auto wire = encode(f);
  uint64_t n = f.size();
  for (uint64_t bad : {n + 8 + 1, n + 1024, uint64_t{1} << 40}) {
    auto w = wire;
    std::memcpy(w.data(), &bad, 8);
    Reader in(w);
    Flat<Blob> out;
    EXPECT_FALSE(Codec<Flat<Blob>>::decode(in, out)) << bad;
    EXPECT_NE(in.error().find("exceeds"), std::string::npos) << in.error();
  }
  {  // a length with padding that the input does not hold
    std::vector<uint8_t> w(8 + 13, 0);
    uint64_t len = 13;
    std::memcpy(w.data(), &len, 8);
    Reader in(w);
    Flat<Blob> out;
    EXPECT_FALSE(Codec<Flat<Blob>>::decode(in, out));
    EXPECT_NE(in.error().find("cut in its padding"), std::string::npos) << in.error();
  }
  {  // padding must be zero
    Flat<Blob> odd = blob_needing_padding();
    auto w = encode(odd);
    ASSERT_NE(odd.size() % 8, 0u);
    w.back() = 1;
    Reader in(w);
    Flat<Blob> out;
    EXPECT_FALSE(Codec<Flat<Blob>>::decode(in, out));
    EXPECT_NE(in.error().find("padding is not zero"), std::string::npos) << in.error();
  }
}

Flat<test::Tree> tree_chain(int depth) {
  flatbuffers::FlatBufferBuilder fbb;
  auto t = test::CreateTree(fbb, 0);
  for (int i = 1; i < depth; ++i) t = test::CreateTree(fbb, i, fbb.CreateVector(&t, 1));
  fbb.Finish(t);
  return Flat<test::Tree>(std::move(fbb));
}

TEST(FlatCodec, TablesNestedPastTheVerifierDepthAreRejected) {
  auto shallow = Flat<test::Tree>::from_bytes(tree_chain(30).bytes());
  ASSERT_TRUE(shallow) << shallow.error();
  EXPECT_EQ((*shallow)->value(), 29);
  auto deep = Flat<test::Tree>::from_bytes(tree_chain(200).bytes());
  ASSERT_FALSE(deep);
  EXPECT_NE(deep.error().find("verifier rejected"), std::string::npos) << deep.error();
}

}  // namespace
}  // namespace sluice
