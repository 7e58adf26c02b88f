// Bootstrap: how the members of a job learn each other's UCX worker addresses.
//
// Two kinds exist: in-process (every member lives in this process; the embedded default) and the
// launcher's (`sluice-run` hosts a token-protected rendezvous on loopback; see
// schema/bootstrap.fbs). The environment variables below are the launcher's contract with each
// member process it starts.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "sluice/transport/layout.hpp"
#include "sluice/transport/result.hpp"

namespace sluice::transport {

// Set by sluice-run for every member process.
inline constexpr const char* kEnvRendezvous = "SLUICE_RENDEZVOUS";  // "127.0.0.1:PORT"
inline constexpr const char* kEnvToken = "SLUICE_TOKEN";            // 32 hex digits
inline constexpr const char* kEnvLayout = "SLUICE_LAYOUT";          // "p1=1,p2=1"
inline constexpr const char* kEnvLocation = "SLUICE_LOCATION";      // this member's location
inline constexpr const char* kEnvMember = "SLUICE_MEMBER";          // index within the location
inline constexpr const char* kEnvRank = "SLUICE_RANK";              // global rank in the layout
inline constexpr const char* kEnvJobId = "SLUICE_JOB_ID";           // unique per job
// Set to 1 for a member added to a running job (`sluice-run --join`): its member id and rank lie
// past the layout's, which stays the job's starting shape.
inline constexpr const char* kEnvJoined = "SLUICE_JOINED";

struct PeerInfo {
  uint32_t rank = 0;
  std::string location;
  uint32_t member = 0;
  uint32_t pid = 0;
  std::string hostname;
  std::vector<uint8_t> address;  // the UCX worker address
  bool gone = false;  // ended before this member joined: no endpoint, nothing expected from it
};

// The launcher environment of one member process, read and checked from the environment.
struct LauncherEnv {
  std::string rendezvous_host;
  uint16_t rendezvous_port = 0;
  std::string token;
  std::string job_id;
  Layout layout;
  uint32_t rank = 0;
  std::string location;
  uint32_t member = 0;
  bool joined = false;  // added to a running job: rank >= layout.size()

  // True when SLUICE_RENDEZVOUS is set (the process was started by sluice-run).
  static bool present();
  // Reads every variable above; a missing or malformed one is an error naming it.
  static Result<LauncherEnv> from_environment();
};

// A member's live connection to the launcher's rendezvous. Owned by the process's runtime; all
// calls from one thread.
class LauncherSession {
 public:
  ~LauncherSession();
  LauncherSession(const LauncherSession&) = delete;
  LauncherSession& operator=(const LauncherSession&) = delete;

  // Connects, registers `self` (whose address is this process's worker address) and waits up to
  // `timeout_ms` for the table of every rank (for a late member: every rank up to its own). Errors
  // name the variable, the peer or the message. The rank, location and member registered are
  // `env`'s; pid and hostname are filled in when `self` leaves them empty. A Reject from the
  // launcher is an error carrying its reason.
  static Result<std::unique_ptr<LauncherSession>> connect(const LauncherEnv& env, PeerInfo self,
                                                          int timeout_ms);

  // Indexed by rank; grows as members join (see poll()).
  const std::vector<PeerInfo>& peers() const { return peers_; }
  const std::string& job_id() const { return job_id_; }

  // The socket stays open for the job; it becomes readable when the launcher reports a member
  // that exited or joined (or closes). `poll` reads what is pending without blocking; once the
  // launcher has closed the connection (after the reports that came before it) every call is an
  // error. A joined member always comes before any exit of it.
  int fd() const { return fd_; }
  struct Exit {
    uint32_t rank;
    int status;
    int signal;
  };
  struct Events {
    std::vector<PeerInfo> joined;  // in rank order, each the next rank after peers() had
    std::vector<Exit> exits;
  };
  Result<Events> poll();

 private:
  LauncherSession() = default;
  int fd_ = -1;
  std::vector<PeerInfo> peers_;
  std::string job_id_;
  Layout layout_;                 // the job's starting shape: where joined members may be
  std::vector<uint8_t> pending_;  // bytes of a message not yet complete
  bool closed_ = false;
  std::string broken_;  // a bad report after good ones: the error the next poll() returns
};

}  // namespace sluice::transport
