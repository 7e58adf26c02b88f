// Encoding and checked decoding of the launcher's rendezvous messages (schema/bootstrap.fbs),
// shared by sluice-run and the members' LauncherSession. Private to transport/.
//
// Header-only so that both the library and the launcher executable use one copy of the rules
// without another source file in the library's build list.
#pragma once

#include <algorithm>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "sluice/transport/bootstrap.hpp"
#include "sluice/transport/result.hpp"
#include "sluice/wire/bootstrap_generated.h"

namespace sluice::transport::detail {

inline std::string wire_string(const flatbuffers::String* s) {
  return s == nullptr ? std::string() : s->str();
}

inline std::vector<uint8_t> wire_bytes(const flatbuffers::Vector<uint8_t>* v) {
  return v == nullptr ? std::vector<uint8_t>() : std::vector<uint8_t>(v->begin(), v->end());
}

inline std::vector<uint8_t> finish_message(flatbuffers::FlatBufferBuilder& fbb,
                                           wire::BootstrapBody type,
                                           flatbuffers::Offset<void> body) {
  wire::FinishBootstrapMessageBuffer(fbb, wire::CreateBootstrapMessage(fbb, type, body));
  return std::vector<uint8_t>(fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize());
}

inline std::vector<uint8_t> encode_register(std::string_view token, const PeerInfo& self) {
  flatbuffers::FlatBufferBuilder fbb(256 + self.address.size());
  const auto body = wire::CreateRegister(
      fbb, fbb.CreateString(token.data(), token.size()), self.rank, fbb.CreateString(self.location),
      self.member, self.pid, fbb.CreateString(self.hostname), fbb.CreateVector(self.address));
  return finish_message(fbb, wire::BootstrapBody::Register, body.Union());
}

inline flatbuffers::Offset<wire::Peer> encode_peer(flatbuffers::FlatBufferBuilder& fbb,
                                                   const PeerInfo& p) {
  return wire::CreatePeer(fbb, p.rank, fbb.CreateString(p.location), p.member, p.pid,
                          fbb.CreateString(p.hostname), fbb.CreateVector(p.address), p.gone);
}

inline PeerInfo peer_from_wire(const wire::Peer& p) {
  return PeerInfo{p.rank(), wire_string(p.location()), p.member(),
                  p.pid(),  wire_string(p.hostname()), wire_bytes(p.worker_address()),
                  p.gone()};
}

inline std::vector<uint8_t> encode_address_table(std::string_view job,
                                                 const std::vector<PeerInfo>& peers) {
  flatbuffers::FlatBufferBuilder fbb(1024);
  std::vector<flatbuffers::Offset<wire::Peer>> offsets;
  offsets.reserve(peers.size());
  for (const PeerInfo& p : peers) offsets.push_back(encode_peer(fbb, p));
  const auto body = wire::CreateAddressTable(fbb, fbb.CreateString(job.data(), job.size()),
                                             fbb.CreateVector(offsets));
  return finish_message(fbb, wire::BootstrapBody::AddressTable, body.Union());
}

inline std::vector<uint8_t> encode_member_exited(uint32_t rank, int32_t status, int32_t signal) {
  flatbuffers::FlatBufferBuilder fbb(64);
  const auto body = wire::CreateMemberExited(fbb, rank, status, signal);
  return finish_message(fbb, wire::BootstrapBody::MemberExited, body.Union());
}

inline std::vector<uint8_t> encode_add_member(std::string_view token, std::string_view location) {
  flatbuffers::FlatBufferBuilder fbb(128);
  const auto body = wire::CreateAddMember(fbb, fbb.CreateString(token.data(), token.size()),
                                          fbb.CreateString(location.data(), location.size()));
  return finish_message(fbb, wire::BootstrapBody::AddMember, body.Union());
}

inline std::vector<uint8_t> encode_member_added(uint32_t rank, const MemberRef& ref, uint32_t pid) {
  flatbuffers::FlatBufferBuilder fbb(128);
  const auto body =
      wire::CreateMemberAdded(fbb, rank, fbb.CreateString(ref.location), ref.member, pid);
  return finish_message(fbb, wire::BootstrapBody::MemberAdded, body.Union());
}

inline std::vector<uint8_t> encode_member_joined(const PeerInfo& peer) {
  flatbuffers::FlatBufferBuilder fbb(256 + peer.address.size());
  const auto body = wire::CreateMemberJoined(fbb, encode_peer(fbb, peer));
  return finish_message(fbb, wire::BootstrapBody::MemberJoined, body.Union());
}

inline std::vector<uint8_t> encode_reject(std::string_view reason) {
  flatbuffers::FlatBufferBuilder fbb(64 + reason.size());
  const auto body = wire::CreateReject(fbb, fbb.CreateString(reason.data(), reason.size()));
  return finish_message(fbb, wire::BootstrapBody::Reject, body.Union());
}

inline const char* body_name(wire::BootstrapBody type) {
  const char* name = wire::EnumNameBootstrapBody(type);
  return name[0] == '\0' ? "an unknown message type" : name;
}

// Runs the verifier over one received message (its length already checked by the framing) and
// returns its root, which points into `bytes`. A message without a body is malformed too.
inline Result<const wire::BootstrapMessage*> verify_bootstrap(std::span<const uint8_t> bytes) {
  flatbuffers::Verifier verifier(bytes.data(), bytes.size());
  if (!wire::VerifyBootstrapMessageBuffer(verifier)) {
    return make_error("expected a bootstrap message (FlatBuffers, identifier 'SLBS'), got " +
                      std::to_string(bytes.size()) + " bytes that fail verification");
  }
  const wire::BootstrapMessage* msg = wire::GetBootstrapMessage(bytes.data());
  if (msg->body() == nullptr || msg->body_type() == wire::BootstrapBody::NONE) {
    return make_error("expected a bootstrap message with a body, got one without");
  }
  return msg;
}

inline PeerInfo peer_from_register(const wire::Register& r) {
  return PeerInfo{r.rank(), wire_string(r.location()), r.member(),
                  r.pid(),  wire_string(r.hostname()), wire_bytes(r.worker_address()),
                  false};
}

// Decodes an address table and checks it against the job this member belongs to: its id, one
// peer per rank in rank order, each where the layout puts it. A member of the starting layout
// gets exactly the layout's ranks; a late member (`self_rank` past the layout) gets every rank up
// to its own, the ones past the layout naming locations of it.
inline Result<std::vector<PeerInfo>> decode_address_table(const wire::AddressTable& table,
                                                          const std::string& job_id,
                                                          const Layout& layout,
                                                          uint32_t self_rank) {
  const std::string job = wire_string(table.job());
  if (job != job_id) {
    return make_error("expected an address table for job '" + job_id + "', got one for job '" +
                      job + "'");
  }
  const auto* peers = table.peers();
  const uint32_t n = peers == nullptr ? 0 : peers->size();
  const uint32_t want_n = std::max(layout.size(), self_rank + 1);
  if (n != want_n) {
    return make_error(
        "expected an address table of " + std::to_string(want_n) + " peers (layout '" +
        layout.to_string() + "'" +
        (self_rank >= layout.size() ? ", up to rank " + std::to_string(self_rank) : std::string()) +
        "), got " + std::to_string(n));
  }
  std::vector<PeerInfo> out;
  out.reserve(n);
  for (uint32_t i = 0; i < n; ++i) {
    PeerInfo info = peer_from_wire(*peers->Get(i));
    if (i < layout.size()) {
      const MemberRef want = layout.member_of(i);
      if (info.rank != i || info.location != want.location || info.member != want.member) {
        return make_error("expected entry " + std::to_string(i) +
                          " of the address table to be rank " + std::to_string(i) + " (" +
                          want.to_string() + "), got rank " + std::to_string(info.rank) + " (" +
                          info.location + "/" + std::to_string(info.member) + ")");
      }
    } else if (info.rank != i || !layout.count_of(info.location)) {
      return make_error("expected entry " + std::to_string(i) +
                        " of the address table to be rank " + std::to_string(i) +
                        " of a location in layout '" + layout.to_string() + "', got rank " +
                        std::to_string(info.rank) + " (" + info.location + "/" +
                        std::to_string(info.member) + ")");
    }
    out.push_back(std::move(info));
  }
  return out;
}

}  // namespace sluice::transport::detail
