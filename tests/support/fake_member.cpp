// A member for the launcher tests: registers a fake address through the real LauncherSession,
// prints the address table it gets, and optionally plays a bad client first, dies on cue, or
// waits for the launcher to report exits.
//
//   sluice-run -n a=1 -n b=2 -- fake_member [--bad-client KIND] [--die-rank R --die-how HOW]
//                                           [--wait-exits N] [--timeout-ms T]
//
// Output (stdout): "table job=J size=N", then "peer R LOC/M pid=P addr=A" per rank, then
// "exited rank=R status=S signal=G" per reported exit. Bad-client results go to stdout as
// "bad-client KIND: ...". Errors go to stderr with exit status 1.
#include <poll.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "bootstrap_wire.hpp"
#include "sluice/transport/bootstrap.hpp"
#include "socket_util.hpp"

namespace {

using namespace sluice;
using namespace sluice::transport;

struct Args {
  std::string bad_client;  // token, garbage, oversize, rank, silent-close
  long die_rank = -1;
  std::string die_how = "status:5";
  int wait_exits = 0;
  int timeout_ms = 20000;
};

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "fake_member: %s\n", what.c_str());
  std::exit(1);
}

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) fail(arg + " expects a value");
      return argv[++i];
    };
    if (arg == "--bad-client") {
      a.bad_client = next();
    } else if (arg == "--die-rank") {
      a.die_rank = std::stol(next());
    } else if (arg == "--die-how") {
      a.die_how = next();
    } else if (arg == "--wait-exits") {
      a.wait_exits = std::stoi(next());
    } else if (arg == "--timeout-ms") {
      a.timeout_ms = std::stoi(next());
    } else {
      fail("unknown argument '" + arg + "'");
    }
  }
  return a;
}

// Sends `payload` (already framed or not, as the kind needs) on a fresh connection and reports
// what the launcher answers.
void raw_client(const LauncherEnv& env, const std::string& kind, int timeout_ms) {
  auto fd = detail::connect_tcp(env.rendezvous_host, env.rendezvous_port, timeout_ms);
  if (!fd) fail("bad client cannot connect: " + fd.error());
  const auto deadline = detail::Deadline::after_ms(timeout_ms);
  Status sent;
  if (kind == "garbage") {
    const std::vector<uint8_t> junk = {'n', 'o', 't', ' ', 'a', ' ', 'f', 'l', 'a', 't',
                                       'b', 'u', 'f', 'f', 'e', 'r', 0,   1,   2,   3};
    sent = detail::send_message(fd->get(), junk, deadline);
  } else if (kind == "oversize") {
    const std::vector<uint8_t> prefix = {0xff, 0xff, 0xff, 0x7f};
    sent = detail::write_all(fd->get(), prefix, deadline);
  } else if (kind == "rank") {
    PeerInfo self{99, env.location, env.member, static_cast<uint32_t>(::getpid()), "h", {1}};
    sent = detail::send_message(fd->get(), detail::encode_register(env.token, self), deadline);
  } else if (kind == "not-register") {
    sent = detail::send_message(fd->get(), detail::encode_member_exited(0, 0, 0), deadline);
  } else {
    fail("unknown --bad-client '" + kind + "'");
  }
  if (!sent) fail("bad client cannot send: " + sent.error());
  auto reply = detail::receive_message(fd->get(), deadline);
  if (!reply) {
    std::printf("bad-client %s: no reply: %s\n", kind.c_str(), reply.error().c_str());
    return;
  }
  auto msg = detail::verify_bootstrap(*reply);
  if (!msg) fail("bad client got a malformed reply: " + msg.error());
  if (const auto* reject = (*msg)->body_as_Reject()) {
    std::printf("bad-client %s: rejected: %s\n", kind.c_str(),
                detail::wire_string(reject->reason()).c_str());
  } else {
    std::printf("bad-client %s: accepted?! got %s\n", kind.c_str(),
                detail::body_name((*msg)->body_type()));
  }
}

void die(const std::string& how) {
  std::fflush(stdout);
  const size_t colon = how.find(':');
  const std::string kind = how.substr(0, colon);
  const int value = colon == std::string::npos ? 1 : std::stoi(how.substr(colon + 1));
  if (kind == "signal") {
    std::raise(value);
    if (value == SIGKILL || value == SIGTERM) ::pause();
  }
  std::_Exit(value);
}

}  // namespace

int main(int argc, char** argv) {
  const Args args = parse(argc, argv);
  auto env = LauncherEnv::from_environment();
  if (!env) fail(env.error());

  if (!args.bad_client.empty() && env->rank == 0) {
    if (args.bad_client == "token") {
      LauncherEnv wrong = *env;
      wrong.token[0] = wrong.token[0] == '0' ? '1' : '0';
      auto s = LauncherSession::connect(wrong, PeerInfo{}, args.timeout_ms);
      if (s) fail("a session with a wrong token was accepted");
      std::printf("bad-client token: %s\n", s.error().c_str());
    } else {
      raw_client(*env, args.bad_client, args.timeout_ms);
    }
  }

  PeerInfo self;
  const std::string fake = "addr-" + std::to_string(env->rank);
  self.address.assign(fake.begin(), fake.end());
  auto session = LauncherSession::connect(*env, self, args.timeout_ms);
  if (!session) fail(session.error());

  const auto& peers = (*session)->peers();
  std::printf("table job=%s size=%zu\n", (*session)->job_id().c_str(), peers.size());
  for (const PeerInfo& p : peers) {
    std::printf("peer %u %s/%u pid=%u addr=%s\n", p.rank, p.location.c_str(), p.member, p.pid,
                std::string(p.address.begin(), p.address.end()).c_str());
  }
  std::fflush(stdout);

  if (static_cast<long>(env->rank) == args.die_rank) die(args.die_how);

  int seen = 0;
  const auto deadline = detail::Deadline::after_ms(args.timeout_ms);
  while (seen < args.wait_exits) {
    pollfd p{(*session)->fd(), POLLIN, 0};
    const int n = ::poll(&p, 1, deadline.remaining_ms());
    if (n == 0) fail("timed out waiting for MemberExited");
    if (n < 0) continue;
    auto events = (*session)->poll();
    if (!events) fail(events.error());
    for (const auto& j : events->joined) {
      std::printf("joined rank=%u %s/%u\n", j.rank, j.location.c_str(), j.member);
    }
    for (const auto& e : events->exits) {
      std::printf("exited rank=%u status=%d signal=%d\n", e.rank, e.status, e.signal);
      ++seen;
    }
    std::fflush(stdout);
  }
  return 0;
}
