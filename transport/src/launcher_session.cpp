// The member's side of the sluice-run rendezvous: read the launcher's environment, register this
// process's worker address, receive the address table, then watch for members that exit.
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <climits>
#include <cstdlib>

#include "bootstrap_wire.hpp"
#include "sluice/transport/bootstrap.hpp"
#include "socket_util.hpp"

namespace sluice::transport {
namespace {

constexpr size_t kTokenHexDigits = 32;

Result<std::string> require_env(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr) {
    return make_error(std::string(name) +
                      " is not set (this process was not started by sluice-run?)");
  }
  if (*value == '\0') {
    return make_error(std::string(name) + " is set but empty (this process was not started by " +
                      "sluice-run?)");
  }
  return std::string(value);
}

Result<uint32_t> parse_env_u32(const char* name, const std::string& text, const char* expected) {
  uint32_t v = 0;
  const char* end = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(text.data(), end, v);
  if (ec != std::errc() || ptr != end) {
    return make_error(std::string(name) + " is '" + text + "'; expected " + expected);
  }
  return v;
}

bool is_hex(const std::string& s) {
  for (char c : s) {
    const bool hex = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
    if (!hex) return false;
  }
  return true;
}

}  // namespace

bool LauncherEnv::present() { return std::getenv(kEnvRendezvous) != nullptr; }

Result<LauncherEnv> LauncherEnv::from_environment() {
  // Read in a fixed order so that a process with no launcher variables at all gets the message
  // about the first one, which says what is probably wrong.
  auto rendezvous = require_env(kEnvRendezvous);
  if (!rendezvous) return std::move(rendezvous).take_error();
  auto token = require_env(kEnvToken);
  if (!token) return std::move(token).take_error();
  auto layout_text = require_env(kEnvLayout);
  if (!layout_text) return std::move(layout_text).take_error();
  auto location = require_env(kEnvLocation);
  if (!location) return std::move(location).take_error();
  auto member_text = require_env(kEnvMember);
  if (!member_text) return std::move(member_text).take_error();
  auto rank_text = require_env(kEnvRank);
  if (!rank_text) return std::move(rank_text).take_error();
  auto job_id = require_env(kEnvJobId);
  if (!job_id) return std::move(job_id).take_error();

  LauncherEnv env;
  auto hp = detail::parse_host_port(*rendezvous);
  if (!hp) return make_error(std::string(kEnvRendezvous) + ": " + hp.error());
  env.rendezvous_host = std::move(hp->host);
  env.rendezvous_port = hp->port;

  if (token->size() != kTokenHexDigits || !is_hex(*token)) {
    return make_error(std::string(kEnvToken) + " is malformed; expected " +
                      std::to_string(kTokenHexDigits) + " hex digits, got " +
                      std::to_string(token->size()) + " characters");
  }
  env.token = std::move(*token);
  env.job_id = std::move(*job_id);

  auto layout = Layout::parse(*layout_text);
  if (!layout) return make_error(std::string(kEnvLayout) + ": " + layout.error());
  env.layout = std::move(*layout);

  auto member = parse_env_u32(kEnvMember, *member_text, "a member index");
  if (!member) return std::move(member).take_error();
  auto rank = parse_env_u32(kEnvRank, *rank_text, "a rank");
  if (!rank) return std::move(rank).take_error();
  env.location = std::move(*location);
  env.member = *member;
  env.rank = *rank;
  if (const char* joined = std::getenv(kEnvJoined); joined != nullptr) {
    if (std::string(joined) != "1") {
      return make_error(std::string(kEnvJoined) + " is '" + joined + "'; expected 1 or unset");
    }
    env.joined = true;
  }

  const std::optional<uint32_t> count = env.layout.count_of(env.location);
  if (!count) {
    return make_error(std::string(kEnvLocation) + " is '" + env.location +
                      "', which is not a location of " + kEnvLayout + " '" +
                      env.layout.to_string() + "'");
  }
  if (env.joined) {
    // A late member: past the layout, which stays the job's starting shape.
    if (env.member < *count || env.rank < env.layout.size()) {
      return make_error(std::string(kEnvJoined) + " is set but " + env.location + "/" +
                        std::to_string(env.member) + " (rank " + std::to_string(env.rank) +
                        ") lies inside " + kEnvLayout + " '" + env.layout.to_string() +
                        "'; a joined member's id and rank come after the layout's");
    }
    return env;
  }
  if (env.member >= *count) {
    return make_error(std::string(kEnvMember) + " is " + std::to_string(env.member) +
                      "; expected below " + std::to_string(*count) + " (the size of '" +
                      env.location + "' in " + kEnvLayout + " '" + env.layout.to_string() + "')");
  }
  const uint32_t expected_rank = *env.layout.rank_of(env.location, env.member);
  if (env.rank != expected_rank) {
    return make_error(std::string(kEnvRank) + " is " + std::to_string(env.rank) + "; expected " +
                      std::to_string(expected_rank) + " for " + env.location + "/" +
                      std::to_string(env.member) + " in " + kEnvLayout + " '" +
                      env.layout.to_string() + "'");
  }
  return env;
}

LauncherSession::~LauncherSession() {
  if (fd_ >= 0) ::close(fd_);
}

Result<std::unique_ptr<LauncherSession>> LauncherSession::connect(const LauncherEnv& env,
                                                                  PeerInfo self, int timeout_ms) {
  // The environment is the authority on who this process is; the caller brings the address.
  self.rank = env.rank;
  self.location = env.location;
  self.member = env.member;
  if (self.pid == 0) self.pid = static_cast<uint32_t>(::getpid());
  if (self.hostname.empty()) {
    char host[HOST_NAME_MAX + 1] = {};
    if (::gethostname(host, sizeof host - 1) == 0) self.hostname = host;
  }

  const std::string where = env.rendezvous_host + ":" + std::to_string(env.rendezvous_port);
  const detail::Deadline deadline = detail::Deadline::after_ms(timeout_ms);
  auto fd = detail::connect_tcp(env.rendezvous_host, env.rendezvous_port, deadline.remaining_ms());
  if (!fd) {
    return make_error("cannot reach the launcher's rendezvous (" + std::string(kEnvRendezvous) +
                      "=" + where + "): " + fd.error());
  }
  const std::vector<uint8_t> reg = detail::encode_register(env.token, self);
  if (Status s = detail::send_message(fd->get(), reg, deadline); !s) {
    return make_error("cannot register with the launcher at " + where + ": " + s.error());
  }
  auto bytes = detail::receive_message(fd->get(), deadline);
  if (!bytes) {
    return make_error("no address table from the launcher at " + where + " (are all " +
                      std::to_string(env.layout.size()) + " members of '" + env.layout.to_string() +
                      "' running?): " + bytes.error());
  }
  auto msg = detail::verify_bootstrap(*bytes);
  if (!msg) return make_error("from the launcher at " + where + ": " + msg.error());
  if (const wire::Reject* reject = (*msg)->body_as_Reject()) {
    return make_error("the launcher at " + where + " rejected this member (" + self.location + "/" +
                      std::to_string(self.member) + "): " + detail::wire_string(reject->reason()));
  }
  const wire::AddressTable* table = (*msg)->body_as_AddressTable();
  if (table == nullptr) {
    return make_error("expected an AddressTable from the launcher at " + where + ", got " +
                      detail::body_name((*msg)->body_type()));
  }
  auto peers = detail::decode_address_table(*table, env.job_id, env.layout, env.rank);
  if (!peers) return make_error("from the launcher at " + where + ": " + peers.error());

  std::unique_ptr<LauncherSession> session(new LauncherSession());
  session->fd_ = fd->release();
  session->peers_ = std::move(*peers);
  session->job_id_ = env.job_id;
  session->layout_ = env.layout;
  return session;
}

Result<LauncherSession::Events> LauncherSession::poll() {
  Events events;
  if (!broken_.empty()) return make_error(broken_);
  if (closed_) return make_error("the launcher closed the rendezvous connection");
  auto open =
      detail::read_available(fd_, pending_, detail::kMaxMessageBytes + detail::kLengthPrefixBytes);
  if (!open) return make_error("reading from the launcher: " + open.error());
  for (;;) {
    auto next = detail::take_message(pending_);
    if (!next) return make_error("from the launcher: " + next.error());
    if (!next->has_value()) break;
    auto msg = detail::verify_bootstrap(**next);
    if (!msg) return make_error("from the launcher: " + msg.error());
    if (const wire::Reject* reject = (*msg)->body_as_Reject()) {
      return make_error("the launcher ended this member's session: " +
                        detail::wire_string(reject->reason()));
    }
    if (const wire::MemberJoined* joined = (*msg)->body_as_MemberJoined()) {
      if (joined->peer() == nullptr) return make_error("MemberJoined without a peer");
      PeerInfo p = detail::peer_from_wire(*joined->peer());
      // A gone one is a late member that ended before it registered: it only takes its rank.
      const auto count = layout_.count_of(p.location);
      const bool known = std::any_of(peers_.begin(), peers_.end(), [&](const PeerInfo& q) {
        return q.location == p.location && q.member == p.member;
      });
      if (p.rank != peers_.size() || !count || p.member < *count || known ||
          (p.address.empty() != p.gone)) {
        std::string error = "expected MemberJoined for rank " + std::to_string(peers_.size()) +
                            ", a new member of a location of '" + layout_.to_string() +
                            "' with an address, got rank " + std::to_string(p.rank) + " (" +
                            p.location + "/" + std::to_string(p.member) + ")";
        // What came before it in this batch is reported now; the error on the next call.
        if (!events.joined.empty() || !events.exits.empty()) {
          broken_ = std::move(error);
          return events;
        }
        return make_error(error);
      }
      peers_.push_back(p);
      events.joined.push_back(std::move(p));
      continue;
    }
    const wire::MemberExited* exited = (*msg)->body_as_MemberExited();
    if (exited == nullptr) {
      return make_error(
          std::string("expected MemberExited or MemberJoined from the launcher, got ") +
          detail::body_name((*msg)->body_type()));
    }
    if (exited->rank() >= peers_.size()) {
      return make_error("expected MemberExited for a rank below " + std::to_string(peers_.size()) +
                        ", got rank " + std::to_string(exited->rank()));
    }
    events.exits.push_back(Exit{exited->rank(), exited->status(), exited->signal()});
  }
  if (!*open) {
    // Report what arrived before the close first; the next call reports the close.
    closed_ = true;
    if (events.exits.empty() && events.joined.empty()) {
      return make_error("the launcher closed the rendezvous connection");
    }
  }
  return events;
}

}  // namespace sluice::transport
