#include "sluice/transport/frame.hpp"

#include <cstring>
#include <optional>

#include "sluice/wire/control_generated.h"
#include "sluice/wire/frame_generated.h"

namespace sluice::transport {
namespace {

// FlatBuffers builders draw from the buffer pool, so a tick's large frame reuses the memory of
// an earlier one instead of faulting in fresh pages.
class PoolAllocator final : public flatbuffers::Allocator {
 public:
  uint8_t* allocate(size_t size) override { return pool_allocate(size).release(); }
  void deallocate(uint8_t* p, size_t size) override { PooledBuffer(p, pool_deleter_for(size)); }
};

PoolAllocator g_pool_allocator;  // stateless

OwnedFrame own(flatbuffers::FlatBufferBuilder& fbb, FrameKind kind) {
  size_t size = 0;
  size_t offset = 0;
  uint8_t* raw = fbb.ReleaseRaw(size, offset);
  // ReleaseRaw reports the allocation's size; the buffer occupies its tail from `offset`.
  return OwnedFrame(PooledBuffer(raw, pool_deleter_for(size)), raw + offset, size - offset, kind);
}

// The verifier reads scalars in place; FlatBuffers aligns them within the buffer, so the buffer
// itself must start 8-aligned. UCX descriptors normally are; callers copy when not.
flatbuffers::Verifier make_verifier(std::span<const uint8_t> frame) {
  flatbuffers::Verifier::Options opts;
  opts.max_depth = 8;
  opts.max_tables = 16;
  opts.check_alignment = true;
  return flatbuffers::Verifier(frame.data(), frame.size(), opts);
}

std::string rank_range_error(const char* what, uint32_t got, uint32_t size) {
  return std::string(what) + " rank " + std::to_string(got) + " is outside the job (size " +
         std::to_string(size) + ")";
}

Status check_size(std::span<const uint8_t> frame, const FrameCheck& check, const char* what) {
  if (frame.size() < 8) {
    return make_error(std::string(what) + " frame too short: " + std::to_string(frame.size()) +
                      " bytes, expected at least 8");
  }
  if (frame.size() > check.max_bytes) {
    return make_error(std::string(what) + " frame too large: " + std::to_string(frame.size()) +
                      " bytes, limit " + std::to_string(check.max_bytes));
  }
  if (reinterpret_cast<uintptr_t>(frame.data()) % 8 != 0) {
    return make_error(std::string(what) + " frame is not 8-byte aligned in memory");
  }
  return {};
}

}  // namespace

Result<FrameHeader> decode_frame_header(std::span<const uint8_t> header) {
  if (header.size() < sizeof(FrameHeader)) {
    return make_error("frame header has " + std::to_string(header.size()) + " bytes, expected " +
                      std::to_string(sizeof(FrameHeader)));
  }
  FrameHeader h;
  std::memcpy(&h, header.data(), sizeof h);
  if (header.size() != sizeof(FrameHeader) + h.prefix) {
    return make_error("frame header has " + std::to_string(header.size()) + " bytes, expected " +
                      std::to_string(sizeof(FrameHeader)) + " plus the " +
                      std::to_string(h.prefix) + "-byte prefix it announces");
  }
  if (h.prefix > kMaxFramePrefix || h.prefix > h.length) {
    return make_error("frame header announces a " + std::to_string(h.prefix) +
                      "-byte prefix of a " + std::to_string(h.length) + "-byte frame (limit " +
                      std::to_string(kMaxFramePrefix) + ")");
  }
  if (h.magic != kFrameMagic) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "frame header magic 0x%08x, expected 0x%08x", h.magic,
                  kFrameMagic);
    return make_error(buf);
  }
  if (h.kind != FrameKind::kData && h.kind != FrameKind::kControl) {
    return make_error("frame header kind " + std::to_string(static_cast<uint32_t>(h.kind)) +
                      " is neither data (1) nor control (2)");
  }
  if (h.kind == FrameKind::kControl && h.prefix != 0) {
    return make_error("control frame header announces a prefix (only data frames are split)");
  }
  return h;
}

OwnedFrame::OwnedFrame(PooledBuffer mem, const uint8_t* data, size_t size, FrameKind kind)
    : mem_(std::move(mem)), data_(data), size_(size), kind_(kind) {}

std::vector<uint8_t> OwnedFrame::gathered() const {
  std::vector<uint8_t> out(data_, data_ + size_);
  for (const auto& h : holes_) {
    std::memcpy(out.data() + (h.at - data_), h.src, h.size);
  }
  return out;
}

struct DataFrameBuilder::Impl {
  std::optional<flatbuffers::FlatBufferBuilder> fbb;  // sized once the element bytes are known
  uint32_t edge, src, dst;
  uint64_t seq, tick;
  uint32_t count = 0;
  flatbuffers::uoffset_t elements = 0;
  bool reserved = false;
};

DataFrameBuilder::DataFrameBuilder(uint32_t edge, uint32_t src, uint32_t dst, uint64_t seq,
                                   uint64_t tick)
    : impl_(new Impl{std::nullopt, edge, src, dst, seq, tick}) {}
DataFrameBuilder::~DataFrameBuilder() = default;

uint8_t* DataFrameBuilder::reserve_elements(uint32_t count, size_t bytes) {
  assert(!impl_->reserved);
  impl_->reserved = true;
  impl_->count = count;
  // Size the builder once so it never reallocates (and copies the elements) while we finish.
  impl_->fbb.emplace(bytes + 256, &g_pool_allocator);
  impl_->fbb->ForceVectorAlignment(bytes, 1, 8);
  uint8_t* p = nullptr;
  impl_->elements = impl_->fbb->CreateUninitializedVector(bytes, 1, &p);
  return p;
}

OwnedFrame DataFrameBuilder::finish() {
  auto& b = *impl_;
  if (!b.reserved) reserve_elements(0, 0);
  wire::DataFrameBuilder f(*b.fbb);
  f.add_seq(b.seq);
  f.add_tick(b.tick);
  f.add_elements(flatbuffers::Offset<flatbuffers::Vector<uint8_t>>(b.elements));
  f.add_edge(b.edge);
  f.add_src(b.src);
  f.add_dst(b.dst);
  f.add_count(b.count);
  b.fbb->Finish(f.Finish(), wire::DataFrameIdentifier());
  return own(*b.fbb, FrameKind::kData);
}

namespace {

// Verifies a data frame's buffer and reads its fields; `elements` is what its vector says (the
// callers check it against the count).
Result<DataFrameView> decode_data_table(std::span<const uint8_t> frame, const FrameCheck& check) {
  if (auto s = check_size(frame, check, "data"); !s) return std::move(s).take_error();
  if (!flatbuffers::BufferHasIdentifier(frame.data(), wire::DataFrameIdentifier())) {
    return make_error("data frame lacks the SLDF identifier (not a sluice data frame)");
  }
  auto v = make_verifier(frame);
  if (!wire::VerifyDataFrameBuffer(v)) {
    return make_error("data frame of " + std::to_string(frame.size()) +
                      " bytes failed FlatBuffers verification (truncated or corrupt)");
  }
  const wire::DataFrame* f = wire::GetDataFrame(frame.data());
  DataFrameView out;
  out.edge = f->edge();
  out.src = f->src();
  out.dst = f->dst();
  out.seq = f->seq();
  out.tick = f->tick();
  out.count = f->count();
  if (out.src >= check.job_size)
    return make_error(rank_range_error("data frame source", out.src, check.job_size));
  if (out.dst != check.self_rank) {
    return make_error("data frame addressed to rank " + std::to_string(out.dst) +
                      " arrived at rank " + std::to_string(check.self_rank));
  }
  if (out.seq == 0) return make_error("data frame has sequence number 0 (they start at 1)");
  if (const auto* e = f->elements()) out.elements = {e->data(), e->size()};
  return out;
}

Result<DataFrameView> check_elements(DataFrameView v) {
  if (v.count > 0 && v.elements.empty()) {
    return make_error("data frame claims " + std::to_string(v.count) +
                      " elements but carries no element bytes");
  }
  return v;
}

}  // namespace

Result<DataFrameView> decode_data_frame(std::span<const uint8_t> frame, const FrameCheck& check) {
  auto v = decode_data_table(frame, check);
  if (!v) return v;
  return check_elements(*v);
}

Result<DataFrameView> decode_split_data_frame(std::span<uint8_t> prefix,
                                              std::span<const uint8_t> elements,
                                              const FrameCheck& check) {
  // If the prefix ends where the element vector's data starts, its last 4 bytes are the vector's
  // length. Verified with that length set to 0, the table cannot point past the prefix; the
  // payload then becomes the elements, whatever their size the transport delivered.
  const size_t p = prefix.size();
  if (p < 16 || p % 8 != 0) {
    return make_error("split data frame has a " + std::to_string(p) +
                      "-byte prefix, not a multiple of 8 of at least 16");
  }
  uint8_t* length_at = prefix.data() + p - 4;
  const auto claimed = flatbuffers::ReadScalar<uint32_t>(length_at);
  if (claimed != elements.size()) {
    return make_error("split data frame's prefix does not end with its element vector's length");
  }
  flatbuffers::WriteScalar<uint32_t>(length_at, 0);
  auto v = decode_data_table(prefix, check);
  if (!v || v->elements.data() != prefix.data() + p) {
    flatbuffers::WriteScalar<uint32_t>(length_at, claimed);  // as it came
    return v ? make_error("split data frame's elements do not start where its prefix ends") : v;
  }
  v->elements = elements;
  auto out = check_elements(*v);
  if (!out) flatbuffers::WriteScalar<uint32_t>(length_at, claimed);  // as it came
  return out;
}

OwnedFrame encode_control(const ControlMsg& msg) {
  flatbuffers::FlatBufferBuilder fbb(128, &g_pool_allocator);
  flatbuffers::Offset<void> body;
  wire::ControlBody type = wire::ControlBody::NONE;
  switch (msg.kind) {
    case ControlKind::kHello:
      body = wire::CreateHelloDirect(fbb, msg.job.c_str(), msg.src, msg.pid, msg.hostname.c_str())
                 .Union();
      type = wire::ControlBody::Hello;
      break;
    case ControlKind::kHeartbeat:
      body = wire::CreateHeartbeat(fbb, msg.value).Union();
      type = wire::ControlBody::Heartbeat;
      break;
    case ControlKind::kCredit:
      body = wire::CreateCredit(fbb, msg.edge, msg.value).Union();
      type = wire::ControlBody::Credit;
      break;
    case ControlKind::kClose:
      body = wire::CreateClose(fbb, msg.edge, msg.value).Union();
      type = wire::ControlBody::Close;
      break;
    case ControlKind::kCloseAck:
      body = wire::CreateCloseAck(fbb, msg.edge, msg.value).Union();
      type = wire::ControlBody::CloseAck;
      break;
    case ControlKind::kBye:
      body = wire::CreateBye(fbb).Union();
      type = wire::ControlBody::Bye;
      break;
    case ControlKind::kSharedOffer:
      body =
          wire::CreateSharedOffer(fbb, msg.pid, msg.fd, msg.value, msg.nonce, msg.reader).Union();
      type = wire::ControlBody::SharedOffer;
      break;
    case ControlKind::kSharedAccept:
      body = wire::CreateSharedAccept(fbb, msg.nonce).Union();
      type = wire::ControlBody::SharedAccept;
      break;
  }
  fbb.Finish(wire::CreateControl(fbb, msg.src, msg.dst, type, body), wire::ControlIdentifier());
  return own(fbb, FrameKind::kControl);
}

Result<ControlMsg> decode_control(std::span<const uint8_t> frame, const FrameCheck& check) {
  if (auto s = check_size(frame, check, "control"); !s) return std::move(s).take_error();
  if (!flatbuffers::BufferHasIdentifier(frame.data(), wire::ControlIdentifier())) {
    return make_error("control frame lacks the SLCT identifier (not a sluice control frame)");
  }
  auto v = make_verifier(frame);
  if (!wire::VerifyControlBuffer(v)) {
    return make_error("control frame of " + std::to_string(frame.size()) +
                      " bytes failed FlatBuffers verification (truncated or corrupt)");
  }
  const wire::Control* c = wire::GetControl(frame.data());
  ControlMsg m;
  m.src = c->src();
  m.dst = c->dst();
  if (m.src >= check.job_size)
    return make_error(rank_range_error("control frame source", m.src, check.job_size));
  if (m.dst != check.self_rank) {
    return make_error("control frame addressed to rank " + std::to_string(m.dst) +
                      " arrived at rank " + std::to_string(check.self_rank));
  }
  // The verifier accepts a union whose body is absent; every case checks before reading.
  auto missing = [&](const char* what) {
    return make_error(std::string("control frame of type ") + what + " has no body");
  };
  switch (c->body_type()) {
    case wire::ControlBody::Hello: {
      const auto* h = c->body_as_Hello();
      if (h == nullptr) return missing("Hello");
      m.kind = ControlKind::kHello;
      m.job = h->job() ? h->job()->str() : "";
      m.pid = h->pid();
      m.hostname = h->hostname() ? h->hostname()->str() : "";
      if (h->rank() != m.src) {
        return make_error("hello claims rank " + std::to_string(h->rank()) +
                          " but came from rank " + std::to_string(m.src));
      }
      break;
    }
    case wire::ControlBody::Heartbeat: {
      const auto* b = c->body_as_Heartbeat();
      if (b == nullptr) return missing("Heartbeat");
      m.kind = ControlKind::kHeartbeat;
      m.value = b->sent_ns();
      break;
    }
    case wire::ControlBody::Credit: {
      const auto* b = c->body_as_Credit();
      if (b == nullptr) return missing("Credit");
      m.kind = ControlKind::kCredit;
      m.edge = b->edge();
      m.value = b->bytes();
      break;
    }
    case wire::ControlBody::Close: {
      const auto* b = c->body_as_Close();
      if (b == nullptr) return missing("Close");
      m.kind = ControlKind::kClose;
      m.edge = b->edge();
      m.value = b->last_seq();
      break;
    }
    case wire::ControlBody::CloseAck: {
      const auto* b = c->body_as_CloseAck();
      if (b == nullptr) return missing("CloseAck");
      m.kind = ControlKind::kCloseAck;
      m.edge = b->edge();
      m.value = b->last_seq();
      break;
    }
    case wire::ControlBody::Bye:
      m.kind = ControlKind::kBye;
      break;
    case wire::ControlBody::SharedOffer: {
      const auto* b = c->body_as_SharedOffer();
      if (b == nullptr) return missing("SharedOffer");
      m.kind = ControlKind::kSharedOffer;
      m.pid = b->pid();
      m.fd = b->fd();
      m.value = b->bytes();
      m.nonce = b->nonce();
      m.reader = b->reader();
      break;
    }
    case wire::ControlBody::SharedAccept: {
      const auto* b = c->body_as_SharedAccept();
      if (b == nullptr) return missing("SharedAccept");
      m.kind = ControlKind::kSharedAccept;
      m.nonce = b->nonce();
      break;
    }
    default:
      return make_error("control frame has unknown body type " +
                        std::to_string(static_cast<int>(c->body_type())));
  }
  return m;
}

}  // namespace sluice::transport
