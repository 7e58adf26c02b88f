#include "launcher.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <csignal>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string_view>

#include "bootstrap_wire.hpp"
#include "sluice/transport/bootstrap.hpp"
#include "socket_util.hpp"

extern char** environ;

namespace sluice::transport::launcher {
namespace {

using detail::Clock;
using detail::Deadline;
using detail::UniqueFd;

// A line longer than this is cut and written as several lines, so a member that never writes a
// newline cannot make the launcher's memory grow.
constexpr size_t kMaxLineBytes = 64 * 1024;
// A connection that has not sent its Register by then is rejected; members register right after
// they start, so only a stray or stuck client ever hits this.
constexpr auto kRegisterTimeout = std::chrono::seconds(30);
// Connections not yet registered beyond this many (per job, on top of one per rank) are refused
// at once: a flood of stray clients must not exhaust the launcher's descriptors.
constexpr size_t kMaxExtraConnections = 64;
// A member that stops reading its connection is dropped once this much is queued for it.
constexpr size_t kMaxQueuedBytes = 2 * detail::kMaxMessageBytes;
// The first line of a job file (--job-file), naming its format.
constexpr const char* kJobFileMagic = "sluice-job 1";

Result<int> parse_int_option(std::string_view name, std::string_view text, int min, int max) {
  int v = 0;
  const char* end = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(text.data(), end, v);
  if (text.empty() || ec != std::errc() || ptr != end || v < min || v > max) {
    return make_error(std::string(name) + " expects an integer in " + std::to_string(min) + ".." +
                      std::to_string(max) + ", got '" + std::string(text) + "'");
  }
  return v;
}

std::string describe_wait_status(int wait_status) {
  if (WIFEXITED(wait_status)) {
    return "exited with status " + std::to_string(WEXITSTATUS(wait_status));
  }
  if (WIFSIGNALED(wait_status)) {
    const int sig = WTERMSIG(wait_status);
    const char* name = ::strsignal(sig);  // single-threaded: the static buffer is safe here
    std::string text = "was killed by signal " + std::to_string(sig) + " (" +
                       (name != nullptr ? name : "unknown") + ")";
    if (WCOREDUMP(wait_status)) text += ", core dumped";
    return text;
  }
  return "ended with wait status " + std::to_string(wait_status);
}

bool wait_status_failed(int wait_status) {
  return !(WIFEXITED(wait_status) && WEXITSTATUS(wait_status) == 0);
}

const char* signal_name(int sig) {
  switch (sig) {
    case SIGINT:
      return "SIGINT";
    case SIGTERM:
      return "SIGTERM";
    case SIGKILL:
      return "SIGKILL";
    default:
      return "a signal";
  }
}

Result<std::string> random_hex(size_t bytes) {
  UniqueFd fd(::open("/dev/urandom", O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return make_error("cannot open /dev/urandom: " + detail::errno_text(errno));
  std::vector<uint8_t> raw(bytes);
  if (Status s = detail::read_exact(fd.get(), raw, Deadline::after_ms(5000), "/dev/urandom"); !s) {
    return std::move(s).take_error();
  }
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  for (uint8_t b : raw) {
    out += kHex[b >> 4];
    out += kHex[b & 15];
  }
  return out;
}

bool is_launcher_variable(const char* entry) {
  for (const char* name : {kEnvRendezvous, kEnvToken, kEnvLayout, kEnvLocation, kEnvMember,
                           kEnvRank, kEnvJobId, kEnvJoined}) {
    const size_t n = std::strlen(name);
    if (std::strncmp(entry, name, n) == 0 && entry[n] == '=') return true;
  }
  return false;
}

// One of a member's output pipes, read by the launcher and written out line by line.
struct OutputPipe {
  UniqueFd fd;          // read end, non-blocking; invalid once at end of file
  int target = 1;       // the launcher's descriptor the lines go to
  std::string partial;  // the start of a line whose newline has not arrived
};

struct Member {
  MemberRef ref;
  uint32_t rank = 0;
  std::string prefix;  // "[name/member] ", or empty with --no-prefix
  pid_t pid = -1;
  bool running = false;  // started and not yet reaped
  bool exec_failed = false;
  bool late = false;          // added to the running job (--join)
  uint64_t signals_sent = 0;  // bit N: the launcher sent it signal N
  OutputPipe out;
  OutputPipe err;
};

// One rendezvous connection. Unregistered until a valid Register arrives; rejected connections
// drain their Reject and then close.
struct Connection {
  UniqueFd fd;
  std::vector<uint8_t> in;
  std::vector<uint8_t> out;
  size_t out_sent = 0;
  std::optional<uint32_t> rank;
  bool join_client = false;  // sent AddMember: a `sluice-run --join`, not a member
  uint64_t id = 0;           // unique in the job (a freed Connection's address is reused)
  Clock::time_point register_by;
  bool close_after_flush = false;
  bool dead = false;
};

// Everything parsed from the options and prepared before the first fork, so that the child does
// no allocation between fork and exec.
struct ChildSetup {
  pid_t parent = -1;
  int stdin_fd = -1;
  int out_fd = -1;
  int err_fd = -1;
  int exec_status_fd = -1;
  const sigset_t* mask = nullptr;
  const struct sigaction* sigpipe_action = nullptr;
  char* const* argv = nullptr;
  char* const* envp = nullptr;
};

// Runs in the forked child. Only async-signal-safe calls, except execvpe's PATH search, which is
// safe here because the launcher has a single thread.
[[noreturn]] void exec_child(const ChildSetup& s) {
  // Its own process group, so the launcher's signals reach the member and whatever it starts,
  // and a terminal's Ctrl-C reaches only the launcher, which forwards it once.
  ::setpgid(0, 0);
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  // The launcher may have died before prctl took effect; then nothing would kill this child.
  if (::getppid() != s.parent) ::_exit(kExitCannotStart);
  if (::dup2(s.stdin_fd, 0) < 0 || ::dup2(s.out_fd, 1) < 0 || ::dup2(s.err_fd, 2) < 0) {
    const int err = errno;
    (void)!::write(s.exec_status_fd, &err, sizeof err);
    ::_exit(kExitCannotStart);
  }
  ::sigaction(SIGPIPE, s.sigpipe_action, nullptr);
  ::sigprocmask(SIG_SETMASK, s.mask, nullptr);
  ::execvpe(s.argv[0], s.argv, s.envp);
  const int err = errno;
  (void)!::write(s.exec_status_fd, &err, sizeof err);
  ::_exit(kExitCannotStart);
}

// One run of a job. Single-threaded; owns every child, pipe and socket of the job.
class Job {
 public:
  explicit Job(const LaunchOptions& options) : options_(options) {}
  ~Job();
  Job(const Job&) = delete;
  Job& operator=(const Job&) = delete;

  int run();

 private:
  Status setup();
  Status write_job_file();
  void start_members();
  Member& add_member(MemberRef ref);
  Status start_member(Member& m);

  void handle_signals();
  void reap_children();
  void on_member_exit(Member& m, int wait_status);
  void end_job(int exit_code, int sig);
  void signal_running(int sig);
  void signal_member(Member& m, int sig);
  static bool signalled(const Member& m, int sig);  // the launcher sent it `sig`
  void kill_and_reap_all();
  void check_deadlines();
  int poll_timeout_ms() const;

  void pump(Member& m, OutputPipe& p, bool until_empty);
  void write_lines(const Member& m, OutputPipe& p, std::string_view data);
  void emit(int target, std::string_view text);
  void say(const std::string& line) { emit(2, "sluice-run: " + line + "\n"); }

  void accept_connections();
  void on_connection_readable(Connection& c);
  void handle_message(Connection& c, std::span<const uint8_t> bytes);
  void handle_register(Connection& c, const wire::Register& r);
  void handle_add_member(Connection& c, const wire::AddMember& a);
  void start_next_join();
  void late_member_registered(Connection& c, uint32_t rank);
  void announce_unjoined(const Member& m);
  void reject(Connection& c, const std::string& who, const std::string& reason);
  void queue(Connection& c, std::span<const uint8_t> framed);
  void flush(Connection& c);
  void send_tables();
  void notify_exit(const Member& m, int wait_status);
  // To every registered member's connection (but `except`'s).
  void send_to_members(std::span<const uint8_t> framed, std::optional<uint32_t> except = {});
  bool token_matches(std::string_view got) const;

  const LaunchOptions& options_;
  std::deque<Member> members_;     // indexed by rank; grows with late members (stable addresses)
  std::vector<std::string> args_;  // PROGRAM ARGS, and argv_ pointing into them
  std::vector<char*> argv_;
  std::vector<std::string> base_env_;            // the environment every member gets
  std::map<std::string, uint32_t> next_member_;  // per location: the next fresh member id
  // Late members start one at a time: each registers (and is announced) before the next starts,
  // so every member learns of every other in rank order.
  struct JoinRequest {
    uint64_t client;  // Connection::id; it may have gone away by then
    std::string location;
  };
  uint64_t next_connection_id_ = 1;
  std::deque<JoinRequest> join_queue_;
  std::optional<uint32_t> joining_;  // the late member started and not yet registered
  Clock::time_point joining_by_;     // when it must have registered
  bool job_file_written_ = false;
  std::string token_;
  std::string job_id_;
  UniqueFd signal_fd_;
  UniqueFd dev_null_;
  detail::Listener listener_;
  sigset_t old_mask_{};
  struct sigaction old_sigpipe_ {};
  bool signals_blocked_ = false;

  std::vector<std::unique_ptr<Connection>> connections_;
  std::vector<PeerInfo> peers_;  // indexed by rank, filled as members register
  std::vector<bool> registered_;
  uint32_t registered_count_ = 0;
  bool tabled_ = false;                            // the address table went out
  std::optional<std::string> rendezvous_dead_;     // why the table can never be complete
  std::vector<std::vector<uint8_t>> early_exits_;  // framed MemberExited held until the table

  size_t running_ = 0;
  bool ending_ = false;
  int signals_received_ = 0;
  std::optional<int> exit_code_;  // the first reason the job ended decides the exit code
  std::optional<Clock::time_point> kill_at_;
  std::optional<Clock::time_point> job_deadline_;
  std::vector<std::string> failures_;  // "name/member (pid N) exited with status S"
  bool stdout_broken_ = false;
  bool stderr_broken_ = false;
};

Job::~Job() {
  // run() reaps every child before it returns; this only matters if setup failed half way.
  if (signals_blocked_) ::sigprocmask(SIG_SETMASK, &old_mask_, nullptr);
  if (job_file_written_) ::unlink(options_.job_file.c_str());
}

Status Job::setup() {
  // Keep 0, 1 and 2 occupied, so no pipe of ours lands there and is then lost to a dup2.
  for (int fd = 0; fd <= 2; ++fd) {
    if (::fcntl(fd, F_GETFD) < 0 && errno == EBADF) {
      const int opened = ::open("/dev/null", O_RDWR);
      if (opened != fd) {
        return make_error("cannot reopen standard descriptor " + std::to_string(fd));
      }
    }
  }
  dev_null_ = UniqueFd(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  if (!dev_null_.valid()) return make_error("cannot open /dev/null: " + detail::errno_text(errno));

  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGCHLD);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGTERM);
  if (::sigprocmask(SIG_BLOCK, &mask, &old_mask_) != 0) {
    return make_error("sigprocmask failed: " + detail::errno_text(errno));
  }
  signals_blocked_ = true;
  signal_fd_ = UniqueFd(::signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC));
  if (!signal_fd_.valid()) return make_error("signalfd failed: " + detail::errno_text(errno));
  // A closed stdout must surface as EPIPE on our write, not kill the launcher and orphan the job.
  struct sigaction ignore {};
  ignore.sa_handler = SIG_IGN;
  sigemptyset(&ignore.sa_mask);
  ::sigaction(SIGPIPE, &ignore, &old_sigpipe_);

  auto token = random_hex(16);
  if (!token) return std::move(token).take_error();
  token_ = std::move(*token);
  auto job = random_hex(8);
  if (!job) return std::move(job).take_error();
  job_id_ = std::move(*job);

  auto listener = detail::listen_loopback();
  if (!listener) return make_error("cannot open the rendezvous socket: " + listener.error());
  listener_ = std::move(*listener);

  for (uint32_t rank = 0; rank < options_.layout.size(); ++rank) {
    add_member(options_.layout.member_of(rank));
  }
  for (const auto& loc : options_.layout.locations()) next_member_[loc.name] = loc.count;
  if (options_.timeout_s > 0) {
    job_deadline_ = Clock::now() + std::chrono::seconds(options_.timeout_s);
  }

  for (char** e = environ; *e != nullptr; ++e) {
    if (!is_launcher_variable(*e)) base_env_.emplace_back(*e);
  }
  base_env_.push_back(std::string(kEnvRendezvous) + "=127.0.0.1:" + std::to_string(listener_.port));
  base_env_.push_back(std::string(kEnvToken) + "=" + token_);
  base_env_.push_back(std::string(kEnvLayout) + "=" + options_.layout.to_string());
  base_env_.push_back(std::string(kEnvJobId) + "=" + job_id_);
  args_ = options_.command;
  for (std::string& a : args_) argv_.push_back(a.data());
  argv_.push_back(nullptr);
  if (!options_.job_file.empty()) return write_job_file();
  return {};
}

// The job file: what `sluice-run --join` needs to reach this job. Written whole under a temporary
// name and renamed, so a reader never sees half of it; readable by this user only (it holds the
// token).
Status Job::write_job_file() {
  const std::string tmp = options_.job_file + ".tmp";
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!fd.valid()) {
    return make_error("--job-file: cannot create '" + tmp + "': " + detail::errno_text(errno));
  }
  const std::string text = std::string(kJobFileMagic) +
                           "\nrendezvous 127.0.0.1:" + std::to_string(listener_.port) + "\ntoken " +
                           token_ + "\njob " + job_id_ + "\n";
  const auto bytes = std::span(reinterpret_cast<const uint8_t*>(text.data()), text.size());
  if (Status s = detail::write_all(fd.get(), bytes, Deadline::after_ms(5000)); !s) {
    ::unlink(tmp.c_str());
    return make_error("--job-file: writing '" + tmp + "': " + s.error());
  }
  fd.reset();
  if (::rename(tmp.c_str(), options_.job_file.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    return make_error("--job-file: cannot rename '" + tmp + "' to '" + options_.job_file +
                      "': " + detail::errno_text(err));
  }
  job_file_written_ = true;
  return {};
}

// The next rank: a member to start, with no address registered yet.
Member& Job::add_member(MemberRef ref) {
  Member& m = members_.emplace_back();
  m.rank = static_cast<uint32_t>(members_.size() - 1);
  m.ref = std::move(ref);
  if (options_.prefix) m.prefix = "[" + m.ref.to_string() + "] ";
  m.out.target = 1;
  m.err.target = 2;
  peers_.emplace_back();
  registered_.push_back(false);
  return m;
}

void Job::start_members() {
  for (Member& m : members_) {
    if (Status s = start_member(m); !s) {
      say("cannot start member " + m.ref.to_string() + ": " + s.error() + "; ending the job");
      end_job(kExitMemberFailed, SIGTERM);
      return;
    }
    if (m.exec_failed) {
      end_job(kExitCannotStart, SIGTERM);
      return;
    }
  }
}

Status Job::start_member(Member& m) {
  std::vector<std::string> env_strings = base_env_;
  env_strings.push_back(std::string(kEnvLocation) + "=" + m.ref.location);
  env_strings.push_back(std::string(kEnvMember) + "=" + std::to_string(m.ref.member));
  env_strings.push_back(std::string(kEnvRank) + "=" + std::to_string(m.rank));
  if (m.late) env_strings.push_back(std::string(kEnvJoined) + "=1");
  std::vector<char*> envp;
  envp.reserve(env_strings.size() + 1);
  for (std::string& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);

  int out_pipe[2];
  int err_pipe[2];
  int exec_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC) != 0) return make_error("pipe: " + detail::errno_text(errno));
  UniqueFd out_r(out_pipe[0]), out_w(out_pipe[1]);
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) return make_error("pipe: " + detail::errno_text(errno));
  UniqueFd err_r(err_pipe[0]), err_w(err_pipe[1]);
  if (::pipe2(exec_pipe, O_CLOEXEC) != 0) return make_error("pipe: " + detail::errno_text(errno));
  UniqueFd exec_r(exec_pipe[0]), exec_w(exec_pipe[1]);
  if (Status s = detail::set_nonblocking(out_r.get()); !s) return s;
  if (Status s = detail::set_nonblocking(err_r.get()); !s) return s;

  ChildSetup setup;
  setup.parent = ::getpid();
  setup.stdin_fd = dev_null_.get();
  setup.out_fd = out_w.get();
  setup.err_fd = err_w.get();
  setup.exec_status_fd = exec_w.get();
  setup.mask = &old_mask_;
  setup.sigpipe_action = &old_sigpipe_;
  setup.argv = argv_.data();
  setup.envp = envp.data();

  const pid_t pid = ::fork();
  if (pid < 0) return make_error("fork: " + detail::errno_text(errno));
  if (pid == 0) exec_child(setup);

  // Also here, so that the group exists before the launcher can signal it. Once the child has
  // exec'd this fails (EACCES), but by then the child has done it itself.
  ::setpgid(pid, pid);
  m.pid = pid;
  m.running = true;
  ++running_;
  out_w.reset();
  err_w.reset();
  exec_w.reset();
  m.out.fd = std::move(out_r);
  m.err.fd = std::move(err_r);

  // The exec pipe closes on a successful exec; otherwise the child sends errno first.
  int child_errno = 0;
  ssize_t n;
  do {
    n = ::read(exec_r.get(), &child_errno, sizeof child_errno);
  } while (n < 0 && errno == EINTR);
  if (n == static_cast<ssize_t>(sizeof child_errno)) {
    m.exec_failed = true;
    say("cannot start member " + m.ref.to_string() + ": '" + options_.command[0] +
        "': " + detail::errno_text(child_errno) + (m.late ? "" : "; ending the job"));
  }
  return {};
}

int Job::run() {
  if (Status s = setup(); !s) {
    say(s.error());
    return kExitMemberFailed;
  }
  start_members();

  std::vector<pollfd> fds;
  enum class Kind { kSignal, kListener, kPipe, kConnection };
  struct Source {
    Kind kind;
    Member* member;
    OutputPipe* pipe;
    Connection* connection;
  };
  std::vector<Source> sources;

  while (running_ > 0) {
    fds.clear();
    sources.clear();
    fds.push_back({signal_fd_.get(), POLLIN, 0});
    sources.push_back({Kind::kSignal, nullptr, nullptr, nullptr});
    fds.push_back({listener_.fd.get(), POLLIN, 0});
    sources.push_back({Kind::kListener, nullptr, nullptr, nullptr});
    for (Member& m : members_) {
      for (OutputPipe* p : {&m.out, &m.err}) {
        if (!p->fd.valid()) continue;
        fds.push_back({p->fd.get(), POLLIN, 0});
        sources.push_back({Kind::kPipe, &m, p, nullptr});
      }
    }
    for (auto& c : connections_) {
      short events = c->close_after_flush ? 0 : POLLIN;
      if (c->out_sent < c->out.size()) events |= POLLOUT;
      fds.push_back({c->fd.get(), events, 0});
      sources.push_back({Kind::kConnection, nullptr, nullptr, c.get()});
    }

    const int n = ::poll(fds.data(), fds.size(), poll_timeout_ms());
    if (n < 0 && errno != EINTR) {
      say("poll failed: " + detail::errno_text(errno) + "; killing the job");
      kill_and_reap_all();
      break;
    }
    for (size_t i = 0; n > 0 && i < fds.size(); ++i) {
      const short ev = fds[i].revents;
      if (ev == 0) continue;
      const Source& s = sources[i];
      switch (s.kind) {
        case Kind::kSignal:
          handle_signals();
          break;
        case Kind::kListener:
          accept_connections();
          break;
        case Kind::kPipe:
          // May already be closed by a reap earlier in this round.
          if (s.pipe->fd.valid()) pump(*s.member, *s.pipe, false);
          break;
        case Kind::kConnection:
          if (s.connection->dead) break;
          if (ev & POLLOUT) flush(*s.connection);
          if (!s.connection->dead && (ev & (POLLIN | POLLHUP | POLLERR))) {
            on_connection_readable(*s.connection);
          }
          break;
      }
    }
    check_deadlines();
    std::erase_if(connections_, [](const std::unique_ptr<Connection>& c) { return c->dead; });
  }

  // Every member is gone: what they wrote is in the pipes already. Descendants of a member that
  // still hold a pipe open do not keep the job alive.
  for (Member& m : members_) {
    for (OutputPipe* p : {&m.out, &m.err}) {
      if (p->fd.valid()) pump(m, *p, true);
      if (!p->partial.empty()) {
        emit(p->target, m.prefix + p->partial + "\n");
        p->partial.clear();
      }
      p->fd.reset();
    }
  }
  connections_.clear();
  if (job_file_written_) {  // nobody can join a job that has ended
    ::unlink(options_.job_file.c_str());
    job_file_written_ = false;
  }

  if (!failures_.empty() && options_.on_failure == OnFailure::kContinue && !ending_) {
    std::string list;
    for (const std::string& f : failures_) list += (list.empty() ? "" : "; ") + f;
    say(std::to_string(failures_.size()) + " of " + std::to_string(members_.size()) +
        " members failed: " + list);
    return kExitMemberFailed;
  }
  return exit_code_.value_or(failures_.empty() ? 0 : kExitMemberFailed);
}

void Job::handle_signals() {
  signalfd_siginfo info;
  for (;;) {
    const ssize_t n = ::read(signal_fd_.get(), &info, sizeof info);
    if (n != static_cast<ssize_t>(sizeof info)) break;  // EAGAIN: nothing more pending
    const int sig = static_cast<int>(info.ssi_signo);
    if (sig == SIGCHLD) {
      reap_children();
      continue;
    }
    ++signals_received_;
    if (signals_received_ == 1) {
      say(std::string("received ") + signal_name(sig) + "; forwarding it to " +
          std::to_string(running_) + " running members");
      const bool was_ending = ending_;
      end_job(128 + sig, sig);
      if (was_ending) signal_running(sig);  // forward it even if the job was ending already
    } else {
      say(std::string("received ") + signal_name(sig) + " again; killing " +
          std::to_string(running_) + " running members");
      signal_running(SIGKILL);
      kill_at_.reset();
    }
  }
  // SIGCHLD coalesces and may have been consumed with a batch; reaping is cheap and idempotent.
  reap_children();
}

void Job::reap_children() {
  for (;;) {
    int wait_status = 0;
    const pid_t pid = ::waitpid(-1, &wait_status, WNOHANG);
    if (pid <= 0) return;  // 0: none ready; -1/ECHILD: none left
    for (Member& m : members_) {
      if (m.running && m.pid == pid) {
        m.running = false;
        --running_;
        on_member_exit(m, wait_status);
        break;
      }
    }
  }
}

void Job::on_member_exit(Member& m, int wait_status) {
  // Its last words come before the launcher's verdict on it.
  for (OutputPipe* p : {&m.out, &m.err}) {
    if (p->fd.valid()) pump(m, *p, true);
  }
  const std::string who = "member " + m.ref.to_string() + " (pid " + std::to_string(m.pid) + ")";
  if (m.exec_failed) return;  // already reported; the job is ending

  if (joining_ == m.rank) {
    say("late member " + m.ref.to_string() + " " + describe_wait_status(wait_status) +
        " before it registered");
    joining_.reset();
    announce_unjoined(m);
    start_next_join();
  }
  if (!registered_[m.rank] && !tabled_ && !rendezvous_dead_) {
    // The table needs every rank; without this one it can never be sent. Tell those waiting.
    rendezvous_dead_ = "member " + m.ref.to_string() + " " + describe_wait_status(wait_status) +
                       " before it registered, so the address table cannot be completed";
    for (auto& c : connections_) {
      if (c->rank && !c->dead) reject(*c, "", *rendezvous_dead_);
    }
  }
  notify_exit(m, wait_status);

  if (ending_ && WIFSIGNALED(wait_status) && !signalled(m, WTERMSIG(wait_status))) {
    // Killed by something else while the job was ending (often what ended it: its peers
    // failed because it died, and one of them was reaped first). Name it.
    failures_.push_back(m.ref.to_string() + " (pid " + std::to_string(m.pid) + ") " +
                        describe_wait_status(wait_status));
    say(who + " " + describe_wait_status(wait_status));
    return;
  }
  if (!wait_status_failed(wait_status) || ending_) return;
  failures_.push_back(m.ref.to_string() + " (pid " + std::to_string(m.pid) + ") " +
                      describe_wait_status(wait_status));
  if (options_.on_failure == OnFailure::kAbort) {
    say(who + " " + describe_wait_status(wait_status) + "; ending the job");
    end_job(kExitMemberFailed, SIGTERM);
  } else {
    say(who + " " + describe_wait_status(wait_status) + "; the job continues");
  }
}

void Job::end_job(int exit_code, int sig) {
  if (!exit_code_) exit_code_ = exit_code;
  if (ending_) return;
  ending_ = true;
  for (const JoinRequest& req : join_queue_) {  // those waiting for a member get an answer
    for (auto& c : connections_) {
      if (c->id == req.client && !c->dead) reject(*c, "", "the job is ending");
    }
  }
  join_queue_.clear();
  signal_running(sig);
  if (sig != SIGKILL) kill_at_ = Clock::now() + std::chrono::milliseconds(options_.grace_ms);
}

void Job::signal_running(int sig) {
  for (Member& m : members_) {
    if (m.running) signal_member(m, sig);
  }
}

void Job::signal_member(Member& m, int sig) {
  // The group reaches what the member started too. A member that left its group (setsid)
  // is still reached itself. Its pid cannot be reused before we reap it.
  if (::kill(-m.pid, sig) != 0) ::kill(m.pid, sig);
  if (sig > 0 && sig < 64) m.signals_sent |= uint64_t{1} << sig;
}

bool Job::signalled(const Member& m, int sig) {
  return sig > 0 && sig < 64 && (m.signals_sent & (uint64_t{1} << sig)) != 0;
}

// The last resort when the event loop itself fails: nothing may outlive the launcher.
void Job::kill_and_reap_all() {
  if (!exit_code_) exit_code_ = kExitMemberFailed;
  ending_ = true;
  signal_running(SIGKILL);
  for (Member& m : members_) {
    if (!m.running) continue;
    int wait_status = 0;
    while (::waitpid(m.pid, &wait_status, 0) < 0 && errno == EINTR) {
    }
    m.running = false;
    --running_;
  }
}

void Job::check_deadlines() {
  const auto now = Clock::now();
  if (kill_at_ && now >= *kill_at_) {
    kill_at_.reset();
    if (running_ > 0) {
      say(std::to_string(running_) + " members still running after --grace-ms " +
          std::to_string(options_.grace_ms) + "; killing them");
      signal_running(SIGKILL);
    }
  }
  if (joining_ && now >= joining_by_ && members_[*joining_].running &&
      !signalled(members_[*joining_], SIGTERM)) {
    // It never registered: end it; its exit frees the queue (announced as gone).
    Member& m = members_[*joining_];
    say("late member " + m.ref.to_string() + " did not register within " +
        std::to_string(std::chrono::seconds(kRegisterTimeout).count()) + " s; stopping it");
    signal_member(m, SIGTERM);
  }
  if (job_deadline_ && now >= *job_deadline_ && !ending_) {
    job_deadline_.reset();
    say("the job ran past --timeout-s " + std::to_string(options_.timeout_s) + "; ending it");
    end_job(kExitTimeout, SIGTERM);
  }
  for (auto& c : connections_) {
    if (!c->rank && !c->join_client && !c->close_after_flush && !c->dead && now >= c->register_by) {
      reject(*c, "",
             "no Register message within " +
                 std::to_string(std::chrono::seconds(kRegisterTimeout).count()) + " s");
    }
  }
}

int Job::poll_timeout_ms() const {
  std::optional<Clock::time_point> next = kill_at_;
  auto consider = [&next](Clock::time_point t) {
    if (!next || t < *next) next = t;
  };
  if (job_deadline_ && !ending_) consider(*job_deadline_);
  if (joining_ && !signalled(members_[*joining_], SIGTERM)) consider(joining_by_);
  for (const auto& c : connections_) {
    if (!c->rank && !c->join_client && !c->close_after_flush) consider(c->register_by);
  }
  if (!next) return -1;
  const auto left = *next - Clock::now();
  if (left <= Clock::duration::zero()) return 0;
  return static_cast<int>(std::chrono::ceil<std::chrono::milliseconds>(left).count());
}

void Job::pump(Member& m, OutputPipe& p, bool until_empty) {
  char buf[65536];
  // Draining stops after what a full pipe holds (1 MiB at most on Linux): a descendant of an
  // exited member that keeps writing must not keep the launcher here forever.
  size_t budget = size_t{1} << 20;
  for (;;) {
    const ssize_t n = ::read(p.fd.get(), buf, sizeof buf);
    if (n > 0) {
      write_lines(m, p, std::string_view(buf, static_cast<size_t>(n)));
      budget -= std::min(budget, static_cast<size_t>(n));
      if (!until_empty || budget == 0) return;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    // End of file (or an error, which ends the stream the same way): the partial last line too.
    if (!p.partial.empty()) {
      emit(p.target, m.prefix + p.partial + "\n");
      p.partial.clear();
    }
    p.fd.reset();
    return;
  }
}

void Job::write_lines(const Member& m, OutputPipe& p, std::string_view data) {
  // Whole lines only, each with its prefix, in one write: lines of different members interleave
  // but never mix.
  std::string out;
  size_t start = 0;
  for (;;) {
    const size_t nl = data.find('\n', start);
    if (nl == std::string_view::npos) break;
    out += m.prefix;
    out += p.partial;
    out.append(data.substr(start, nl + 1 - start));
    p.partial.clear();
    start = nl + 1;
  }
  p.partial.append(data.substr(start));
  if (p.partial.size() >= kMaxLineBytes) {
    out += m.prefix + p.partial + "\n";
    p.partial.clear();
  }
  if (!out.empty()) emit(p.target, out);
}

void Job::emit(int target, std::string_view text) {
  bool& broken = target == 1 ? stdout_broken_ : stderr_broken_;
  if (broken) return;
  const auto bytes = std::span(reinterpret_cast<const uint8_t*>(text.data()), text.size());
  // Blocking on a slow reader is the back-pressure a terminal or pipe gives us; the members then
  // block on their own pipes as they would without a launcher.
  if (!detail::write_all(target, bytes, Deadline::never())) broken = true;
}

void Job::accept_connections() {
  for (;;) {
    const int fd = ::accept4(listener_.fd.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        say("accept on the rendezvous socket failed: " + detail::errno_text(errno));
      }
      return;
    }
    UniqueFd owned(fd);
    if (connections_.size() >= members_.size() + kMaxExtraConnections) {
      say("refused a rendezvous connection: too many open connections");
      continue;  // closes it
    }
    auto c = std::make_unique<Connection>();
    c->id = next_connection_id_++;
    c->fd = std::move(owned);
    c->register_by = Clock::now() + kRegisterTimeout;
    connections_.push_back(std::move(c));
  }
}

void Job::on_connection_readable(Connection& c) {
  auto open = detail::read_available(c.fd.get(), c.in,
                                     detail::kMaxMessageBytes + detail::kLengthPrefixBytes);
  if (!open) {
    c.dead = true;
    return;
  }
  if (c.rank) {
    c.in.clear();  // nothing more is expected from a registered member; ignore what comes
  } else {
    // A member sends one Register; a join client one AddMember per member it asks for.
    while (!c.close_after_flush && !c.dead && !c.rank) {
      auto message = detail::take_message(c.in);
      if (!message) {
        reject(c, "", "malformed message: " + message.error());
      } else if (message->has_value()) {
        handle_message(c, **message);
        continue;
      }
      break;
    }
  }
  if (!*open) c.dead = true;  // a Reject still queued has no one left to read it
}

void Job::handle_message(Connection& c, std::span<const uint8_t> bytes) {
  auto msg = detail::verify_bootstrap(bytes);
  if (!msg) {
    reject(c, "", "malformed message: " + msg.error());
    return;
  }
  if (const wire::Register* r = (*msg)->body_as_Register(); r != nullptr && !c.join_client) {
    handle_register(c, *r);
  } else if (const wire::AddMember* a = (*msg)->body_as_AddMember()) {
    handle_add_member(c, *a);
  } else {
    reject(c, "",
           std::string(c.join_client ? "expected an AddMember message, got "
                                     : "expected a Register message, got ") +
               detail::body_name((*msg)->body_type()) +
               (c.join_client ? "" : " (or AddMember, from sluice-run --join)"));
  }
}

void Job::handle_register(Connection& c, const wire::Register& r) {
  PeerInfo info = detail::peer_from_register(r);
  const std::string who = "claims rank " + std::to_string(info.rank) + ", " + info.location + "/" +
                          std::to_string(info.member) + ", pid " + std::to_string(info.pid);
  // Checked first, so that a client without the token learns nothing about the job.
  if (!token_matches(detail::wire_string(r.token()))) {
    reject(c, who, "the token does not match this job's");
    return;
  }
  if (rendezvous_dead_) {
    reject(c, who, *rendezvous_dead_);
    return;
  }
  const Layout& layout = options_.layout;
  if (info.rank >= layout.size() && joining_ != info.rank) {
    reject(c, who,
           "rank " + std::to_string(info.rank) + " is not in layout '" + layout.to_string() +
               "' (" + std::to_string(layout.size()) + " ranks) nor a member being added");
    return;
  }
  const MemberRef want = members_[info.rank].ref;
  if (info.location != want.location || info.member != want.member) {
    reject(c, who,
           "rank " + std::to_string(info.rank) + " is " + want.to_string() + " in layout '" +
               layout.to_string() + "', not " + info.location + "/" + std::to_string(info.member));
    return;
  }
  if (registered_[info.rank]) {
    reject(
        c, who,
        "rank " + std::to_string(info.rank) + " (" + want.to_string() + ") has already registered");
    return;
  }
  c.rank = info.rank;
  registered_[info.rank] = true;
  ++registered_count_;
  peers_[info.rank] = std::move(info);
  if (*c.rank >= layout.size()) {
    late_member_registered(c, *c.rank);
  } else if (registered_count_ == layout.size()) {
    send_tables();
  }
}

void Job::handle_add_member(Connection& c, const wire::AddMember& a) {
  const std::string location = detail::wire_string(a.location());
  const std::string who = "asks to add a member to '" + location + "'";
  if (!token_matches(detail::wire_string(a.token()))) {
    reject(c, who, "the token does not match this job's");
    return;
  }
  c.join_client = true;
  if (!options_.layout.count_of(location)) {
    reject(c, who,
           "'" + location + "' is not a location of this job (layout '" +
               options_.layout.to_string() + "')");
    return;
  }
  if (ending_ || rendezvous_dead_) {
    reject(c, who, rendezvous_dead_ ? *rendezvous_dead_ : std::string("the job is ending"));
    return;
  }
  join_queue_.push_back({c.id, location});
  start_next_join();
}

// Starts the next queued late member, once the job's table is out and the previous late member
// registered (or died trying).
void Job::start_next_join() {
  while (tabled_ && !joining_ && !ending_ && !join_queue_.empty()) {
    JoinRequest req = join_queue_.front();
    join_queue_.pop_front();
    auto client = std::find_if(connections_.begin(), connections_.end(),
                               [&](const auto& c) { return c->id == req.client; });
    Connection* reply_to =
        client != connections_.end() && !(*client)->dead ? client->get() : nullptr;
    Member& m = add_member(MemberRef{req.location, next_member_[req.location]++});
    m.late = true;
    Status started = start_member(m);
    if (!started || m.exec_failed) {
      const std::string why =
          !started ? started.error() : std::string("'") + options_.command[0] + "' did not start";
      say("cannot add member " + m.ref.to_string() + ": " + why);
      if (reply_to != nullptr)
        reject(*reply_to, "", "cannot start " + m.ref.to_string() + ": " + why);
      announce_unjoined(m);
      continue;
    }
    joining_ = m.rank;
    joining_by_ = Clock::now() + kRegisterTimeout;
    say("added member " + m.ref.to_string() + " (rank " + std::to_string(m.rank) + ", pid " +
        std::to_string(m.pid) + ") to the running job");
    if (reply_to != nullptr) {
      queue(*reply_to, detail::frame_message(detail::encode_member_added(
                           m.rank, m.ref, static_cast<uint32_t>(m.pid))));
    }
  }
}

// A late member that never registered still took its rank: the others learn it is gone, so the
// next one's rank follows on.
void Job::announce_unjoined(const Member& m) {
  PeerInfo gone;
  gone.rank = m.rank;
  gone.location = m.ref.location;
  gone.member = m.ref.member;
  gone.gone = true;
  send_to_members(detail::frame_message(detail::encode_member_joined(gone)));
}

// A late member registered: it gets the table of every rank up to its own (those that ended
// marked gone), and every other running member learns of it.
void Job::late_member_registered(Connection& c, uint32_t rank) {
  joining_.reset();
  std::vector<PeerInfo> table(peers_.begin(), peers_.begin() + rank + 1);
  for (uint32_t r = 0; r < rank; ++r) {
    if (!registered_[r] || !members_[r].running) {
      table[r].gone = true;
      table[r].rank = r;
      table[r].location = members_[r].ref.location;
      table[r].member = members_[r].ref.member;
      table[r].address.clear();
    }
  }
  queue(c, detail::frame_message(detail::encode_address_table(job_id_, table)));
  send_to_members(detail::frame_message(detail::encode_member_joined(peers_[rank])), rank);
  start_next_join();
}

void Job::reject(Connection& c, const std::string& who, const std::string& reason) {
  say("rejected a rendezvous connection" + (who.empty() ? std::string() : " (" + who + ")") + ": " +
      reason);
  c.close_after_flush = true;
  c.in.clear();
  queue(c, detail::frame_message(detail::encode_reject(reason)));
  flush(c);
}

void Job::queue(Connection& c, std::span<const uint8_t> framed) {
  if (c.dead) return;
  if (c.out.size() - c.out_sent + framed.size() > kMaxQueuedBytes) {
    say("dropped the rendezvous connection of rank " + std::to_string(c.rank.value_or(0)) +
        ": it stopped reading");
    c.dead = true;
    return;
  }
  c.out.insert(c.out.end(), framed.begin(), framed.end());
  flush(c);
}

void Job::flush(Connection& c) {
  while (c.out_sent < c.out.size()) {
    const ssize_t n = ::send(c.fd.get(), c.out.data() + c.out_sent, c.out.size() - c.out_sent,
                             MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      c.out_sent += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    c.dead = true;  // the peer went away; its exit, if it is a member, is reported by waitpid
    return;
  }
  c.out.clear();
  c.out_sent = 0;
  if (c.close_after_flush) c.dead = true;
}

void Job::send_tables() {
  const std::vector<uint8_t> payload = detail::encode_address_table(job_id_, peers_);
  if (payload.size() > detail::kMaxMessageBytes) {
    say("the address table is " + std::to_string(payload.size()) + " bytes, above the limit of " +
        std::to_string(detail::kMaxMessageBytes) + "; ending the job");
    end_job(kExitMemberFailed, SIGTERM);
    return;
  }
  const std::vector<uint8_t> framed = detail::frame_message(payload);
  tabled_ = true;
  for (auto& c : connections_) {
    if (!c->rank || c->dead) continue;
    queue(*c, framed);
    for (const auto& e : early_exits_) queue(*c, e);
  }
  early_exits_.clear();
  start_next_join();  // members asked for before the job was whole
}

void Job::notify_exit(const Member& m, int wait_status) {
  int32_t status = 0;
  int32_t sig = 0;
  if (WIFEXITED(wait_status)) status = WEXITSTATUS(wait_status);
  if (WIFSIGNALED(wait_status)) sig = WTERMSIG(wait_status);
  const std::vector<uint8_t> framed =
      detail::frame_message(detail::encode_member_exited(m.rank, status, sig));
  if (!tabled_) {
    if (!rendezvous_dead_) early_exits_.push_back(framed);
    return;
  }
  if (!registered_[m.rank]) return;  // a late member nobody was told of
  send_to_members(framed, m.rank);
}

void Job::send_to_members(std::span<const uint8_t> framed, std::optional<uint32_t> except) {
  for (auto& c : connections_) {
    if (c->rank && c->rank != except && !c->dead && !c->close_after_flush) queue(*c, framed);
  }
}

bool Job::token_matches(std::string_view got) const {
  // Constant time in the token's contents: a wrong guess learns nothing from how long it took.
  size_t diff = got.size() ^ token_.size();
  for (size_t i = 0; i < token_.size(); ++i) {
    const char g = i < got.size() ? got[i] : '\0';
    diff |= static_cast<size_t>(static_cast<uint8_t>(g) ^ static_cast<uint8_t>(token_[i]));
  }
  return diff == 0;
}

}  // namespace

const char* usage_text() {
  return "usage: sluice-run [options] -n NAME=COUNT [-n NAME=COUNT ...] [--] PROGRAM [ARGS...]\n"
         "       sluice-run --join JOBFILE --add NAME [--add NAME ...]\n"
         "\n"
         "Starts COUNT processes of PROGRAM for each location NAME on this host (ranks in the\n"
         "order of the -n flags), prefixes their output lines with [NAME/MEMBER], and hosts the\n"
         "rendezvous through which they exchange addresses.\n"
         "\n"
         "options:\n"
         "  -n NAME=COUNT          a location and its member count (repeatable, in rank order)\n"
         "  --on-failure MODE      abort (default): a member that fails ends the job;\n"
         "                         continue: the others keep running and are told of the exit\n"
         "  --grace-ms N           time between SIGTERM and SIGKILL when ending the job\n"
         "                         (default 3000)\n"
         "  --timeout-s N          end the job with an error after N seconds (default 0: none)\n"
         "  --no-prefix            write member output without the [NAME/MEMBER] prefix\n"
         "  --job-file PATH        write PATH (mode 0600, removed at the end) so that\n"
         "                         'sluice-run --join PATH' can add members while it runs\n"
         "  -h, --help             show this help\n"
         "\n"
         "--join JOBFILE --add NAME starts one more member of location NAME in the running job\n"
         "that wrote JOBFILE (a fresh member id, the next rank; the job's launcher starts and\n"
         "supervises it), prints 'added NAME/M (rank R, pid P) to job J' and exits.\n"
         "\n"
         "exit status: 0 when every member exited 0; 1 when a member failed; 2 for bad usage;\n"
         "124 when --timeout-s ran out; 127 when PROGRAM cannot be started; 128+N when\n"
         "sluice-run received signal N.\n";
}

Result<ParsedArguments> parse_arguments(std::span<const std::string> args) {
  ParsedArguments parsed;
  LaunchOptions& o = parsed.options;
  std::string layout_text;
  size_t i = 0;
  for (; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "--") {
      ++i;
      break;
    }
    if (arg.empty() || arg[0] != '-') break;  // PROGRAM starts here, as with mpirun
    if (arg == "-h" || arg == "--help") {
      parsed.help = true;
      return parsed;
    }
    std::string name = arg;
    std::optional<std::string> inline_value;
    if (const size_t eq = arg.find('='); arg.starts_with("--") && eq != std::string::npos) {
      name = arg.substr(0, eq);
      inline_value = arg.substr(eq + 1);
    }
    auto value = [&](const char* expected) -> Result<std::string> {
      if (inline_value) return *inline_value;
      if (i + 1 >= args.size()) {
        return make_error(name + " expects " + expected + ", got nothing");
      }
      return args[++i];
    };
    if (name == "--no-prefix" && !inline_value) {
      o.prefix = false;
    } else if (name == "-n") {
      auto v = value("NAME=COUNT");
      if (!v) return std::move(v).take_error();
      if (auto one = Layout::parse(*v); !one) return make_error("-n: " + one.error());
      layout_text += (layout_text.empty() ? "" : ",") + *v;
    } else if (name == "--on-failure") {
      auto v = value("abort or continue");
      if (!v) return std::move(v).take_error();
      if (*v == "abort") {
        o.on_failure = OnFailure::kAbort;
      } else if (*v == "continue") {
        o.on_failure = OnFailure::kContinue;
      } else {
        return make_error("--on-failure expects abort or continue, got '" + *v + "'");
      }
    } else if (name == "--grace-ms") {
      auto v = value("a number of milliseconds");
      if (!v) return std::move(v).take_error();
      auto n = parse_int_option(name, *v, 0, 3600 * 1000);
      if (!n) return std::move(n).take_error();
      o.grace_ms = *n;
    } else if (name == "--job-file") {
      auto v = value("a file path");
      if (!v) return std::move(v).take_error();
      if (v->empty()) return make_error("--job-file expects a file path, got ''");
      o.job_file = *v;
    } else if (name == "--join") {
      auto v = value("a job file written by --job-file");
      if (!v) return std::move(v).take_error();
      if (!parsed.join) parsed.join.emplace();
      parsed.join->job_file = *v;
    } else if (name == "--add") {
      auto v = value("a location NAME");
      if (!v) return std::move(v).take_error();
      if (auto one = Layout::parse(*v + "=1"); !one) return make_error("--add: " + one.error());
      if (!parsed.join) parsed.join.emplace();
      parsed.join->locations.push_back(*v);
    } else if (name == "--timeout-s") {
      auto v = value("a number of seconds");
      if (!v) return std::move(v).take_error();
      auto n = parse_int_option(name, *v, 0, 365 * 24 * 3600);
      if (!n) return std::move(n).take_error();
      o.timeout_s = *n;
    } else {
      return make_error("unknown option '" + arg + "'");
    }
  }
  if (parsed.join) {
    if (parsed.join->job_file.empty()) return make_error("--add needs --join JOBFILE");
    if (parsed.join->locations.empty()) {
      return make_error("--join needs at least one --add NAME (the location to grow)");
    }
    const LaunchOptions defaults;
    if (!layout_text.empty() || i < args.size() || !o.job_file.empty() ||
        o.on_failure != defaults.on_failure || o.grace_ms != defaults.grace_ms ||
        o.prefix != defaults.prefix) {
      return make_error("--join starts members in a running job: it takes only --add and " +
                        std::string("--timeout-s (the job's own flags decide the rest), no -n, ") +
                        "--job-file, --on-failure, --grace-ms, --no-prefix or program");
    }
    if (o.timeout_s > 0) parsed.join->timeout_ms = o.timeout_s * 1000;
    return parsed;
  }
  if (layout_text.empty()) return make_error("expected at least one -n NAME=COUNT");
  auto layout = Layout::parse(layout_text);
  if (!layout) return make_error("-n: " + layout.error());
  o.layout = std::move(*layout);
  if (i >= args.size()) return make_error("expected a program to run after '--'");
  o.command.assign(args.begin() + static_cast<std::ptrdiff_t>(i), args.end());
  return parsed;
}

int run_job(const LaunchOptions& options) {
  Job job(options);
  return job.run();
}

namespace {

struct JobFile {
  std::string host;
  uint16_t port = 0;
  std::string token;
  std::string job;
};

Result<JobFile> read_job_file(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) {
    return make_error("cannot open job file '" + path + "': " + detail::errno_text(errno) +
                      " (is the job running with --job-file " + path + "?)");
  }
  std::string text;
  char buf[1024];
  for (;;) {
    const ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return make_error("reading job file '" + path + "': " + detail::errno_text(errno));
    if (n == 0) break;
    text.append(buf, static_cast<size_t>(n));
    if (text.size() > 4096) return make_error("job file '" + path + "' is too large");
  }
  JobFile out;
  std::string rendezvous;
  size_t at = 0;
  bool magic = false;
  while (at < text.size()) {
    size_t nl = text.find('\n', at);
    if (nl == std::string::npos) nl = text.size();
    const std::string line = text.substr(at, nl - at);
    at = nl + 1;
    if (line == kJobFileMagic) {
      magic = true;
    } else if (line.starts_with("rendezvous ")) {
      rendezvous = line.substr(11);
    } else if (line.starts_with("token ")) {
      out.token = line.substr(6);
    } else if (line.starts_with("job ")) {
      out.job = line.substr(4);
    }
  }
  if (!magic || rendezvous.empty() || out.token.empty()) {
    return make_error("'" + path + "' is not a sluice-run job file (expected '" + kJobFileMagic +
                      "' and rendezvous/token lines)");
  }
  auto hp = detail::parse_host_port(rendezvous);
  if (!hp) return make_error("job file '" + path + "': rendezvous: " + hp.error());
  out.host = hp->host;
  out.port = hp->port;
  return out;
}

}  // namespace

int run_join(const JoinOptions& options) {
  auto say = [](const std::string& line) {
    std::fprintf(stderr, "sluice-run: %s\n", line.c_str());
  };
  auto file = read_job_file(options.job_file);
  if (!file) {
    say(file.error());
    return kExitMemberFailed;
  }
  const Deadline deadline = Deadline::after_ms(options.timeout_ms);
  const std::string where = file->host + ":" + std::to_string(file->port);
  auto fd = detail::connect_tcp(file->host, file->port, deadline.remaining_ms());
  if (!fd) {
    say("cannot reach job " + file->job + " at " + where + ": " + fd.error());
    return kExitMemberFailed;
  }
  for (const std::string& location : options.locations) {
    const auto request = detail::encode_add_member(file->token, location);
    if (Status s = detail::send_message(fd->get(), request, deadline); !s) {
      say("cannot ask job " + file->job + " at " + where + " for a member: " + s.error());
      return kExitMemberFailed;
    }
    auto bytes = detail::receive_message(fd->get(), deadline);
    if (!bytes) {
      say("no answer from job " + file->job + " at " + where + ": " + bytes.error());
      return kExitMemberFailed;
    }
    auto msg = detail::verify_bootstrap(*bytes);
    if (!msg) {
      say("from job " + file->job + ": " + msg.error());
      return kExitMemberFailed;
    }
    if (const wire::Reject* r = (*msg)->body_as_Reject()) {
      say("job " + file->job + " refused a member of '" + location +
          "': " + detail::wire_string(r->reason()));
      return kExitMemberFailed;
    }
    const wire::MemberAdded* added = (*msg)->body_as_MemberAdded();
    if (added == nullptr) {
      say("expected MemberAdded from job " + file->job + ", got " +
          detail::body_name((*msg)->body_type()));
      return kExitMemberFailed;
    }
    std::printf("added %s/%u (rank %u, pid %u) to job %s\n",
                detail::wire_string(added->location()).c_str(), added->member(), added->rank(),
                added->pid(), file->job.c_str());
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace sluice::transport::launcher
