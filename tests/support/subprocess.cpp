#include "subprocess.hpp"

#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>

extern char** environ;

namespace sluice::test {
namespace {

long long now_ms() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<long long>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

void close_fd(int& fd) {
  if (fd >= 0) ::close(fd);
  fd = -1;
}

// Reads what is there now; closes the descriptor at end of file.
void drain(int& fd, std::string& into) {
  char buf[8192];
  while (fd >= 0) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n > 0) {
      into.append(buf, static_cast<size_t>(n));
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      return;
    } else {
      close_fd(fd);
    }
  }
}

}  // namespace

std::string ProcessResult::describe() const {
  std::ostringstream s;
  if (timed_out) {
    s << "timed out (watchdog killed the process group)";
  } else if (term_signal != 0) {
    s << "killed by signal " << term_signal;
  } else {
    s << "exit " << exit_code;
  }
  s << "\n--- stdout ---\n" << out << "--- stderr ---\n" << err;
  return s.str();
}

Subprocess Subprocess::start(const std::vector<std::string>& argv,
                             const SubprocessOptions& options) {
  Subprocess p;
  p.deadline_ms_ = now_ms() + options.timeout_ms;

  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string entry(*e);
    const std::string name = entry.substr(0, entry.find('='));
    const bool replaced = std::any_of(options.set_env.begin(), options.set_env.end(),
                                      [&](const auto& kv) { return kv.first == name; }) ||
                          std::find(options.unset_env.begin(), options.unset_env.end(), name) !=
                              options.unset_env.end();
    if (!replaced) env.push_back(entry);
  }
  for (const auto& [k, v] : options.set_env) env.push_back(k + "=" + v);
  std::vector<char*> envp;
  for (std::string& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::vector<std::string> args = argv;
  std::vector<char*> argvp;
  for (std::string& a : args) argvp.push_back(a.data());
  argvp.push_back(nullptr);

  int out_pipe[2];
  int err_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC) != 0) {
    p.start_error_ = std::string("pipe: ") + std::strerror(errno);
    return p;
  }
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) {
    p.start_error_ = std::string("pipe: ") + std::strerror(errno);
    ::close(out_pipe[0]);
    ::close(out_pipe[1]);
    return p;
  }

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, out_pipe[1], 1);
  posix_spawn_file_actions_adddup2(&actions, err_pipe[1], 2);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  // Its own group, so the watchdog can kill it and whatever it started in one call.
  posix_spawnattr_setpgroup(&attr, 0);
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&attr, &none);
  sigset_t defaults;
  sigemptyset(&defaults);
  for (int sig : {SIGPIPE, SIGINT, SIGTERM, SIGCHLD, SIGHUP}) sigaddset(&defaults, sig);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  posix_spawnattr_setflags(
      &attr,
      static_cast<short>(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF));
  pid_t pid = -1;
  const int rc = ::posix_spawnp(&pid, argvp[0], &actions, &attr, argvp.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  ::close(out_pipe[1]);
  ::close(err_pipe[1]);
  if (rc != 0) {
    p.start_error_ = "cannot start '" + argv[0] + "': " + std::strerror(rc);
    ::close(out_pipe[0]);
    ::close(err_pipe[0]);
    return p;
  }
  ::fcntl(out_pipe[0], F_SETFL, O_NONBLOCK);
  ::fcntl(err_pipe[0], F_SETFL, O_NONBLOCK);
  p.pid_ = pid;
  p.out_fd_ = out_pipe[0];
  p.err_fd_ = err_pipe[0];
  return p;
}

Subprocess::Subprocess(Subprocess&& other) noexcept
    : pid_(std::exchange(other.pid_, -1)),
      out_fd_(std::exchange(other.out_fd_, -1)),
      err_fd_(std::exchange(other.err_fd_, -1)),
      deadline_ms_(other.deadline_ms_),
      start_error_(std::move(other.start_error_)),
      waited_(std::exchange(other.waited_, true)) {}

Subprocess::~Subprocess() {
  if (!waited_ && pid_ > 0) {
    ::kill(-pid_, SIGKILL);
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
  }
  close_fd(out_fd_);
  close_fd(err_fd_);
}

void Subprocess::send_signal(int sig) const {
  if (pid_ > 0 && !waited_) ::kill(pid_, sig);
}

ProcessResult Subprocess::wait() {
  ProcessResult r;
  waited_ = true;
  if (pid_ <= 0) {
    r.exit_code = 127;
    r.err = start_error_;
    return r;
  }
  bool reaped = false;
  int status = 0;
  for (;;) {
    if (!reaped) {
      const pid_t got = ::waitpid(pid_, &status, WNOHANG);
      reaped = got == pid_;
    }
    if (reaped && out_fd_ < 0 && err_fd_ < 0) break;
    const long long left = deadline_ms_ - now_ms();
    if (left <= 0) {
      r.timed_out = true;
      ::kill(-pid_, SIGKILL);
      if (!reaped) {
        while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
        }
        reaped = true;
      }
      drain(out_fd_, r.out);
      drain(err_fd_, r.err);
      break;
    }
    pollfd fds[2] = {{out_fd_, POLLIN, 0}, {err_fd_, POLLIN, 0}};
    // The pipes wake us for output; the short cap notices the exit of a program whose
    // descendants still hold the pipes.
    ::poll(fds, 2, static_cast<int>(std::min<long long>(left, 20)));
    drain(out_fd_, r.out);
    drain(err_fd_, r.err);
  }
  close_fd(out_fd_);
  close_fd(err_fd_);
  if (WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) r.term_signal = WTERMSIG(status);
  return r;
}

ProcessResult run_command(const std::vector<std::string>& argv, const SubprocessOptions& options) {
  return Subprocess::start(argv, options).wait();
}

bool wait_until(const std::function<bool()>& condition, int timeout_ms) {
  const long long deadline = now_ms() + timeout_ms;
  for (;;) {
    if (condition()) return true;
    if (now_ms() >= deadline) return false;
    ::poll(nullptr, 0, 5);
  }
}

TempDir::TempDir() {
  const char* base = std::getenv("TMPDIR");
  std::string pattern =
      std::string(base != nullptr && *base != '\0' ? base : "/tmp") + "/sluice-test-XXXXXX";
  if (::mkdtemp(pattern.data()) != nullptr) path_ = pattern;
}

TempDir::~TempDir() {
  if (path_.empty()) return;
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return {};
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

bool process_exists(pid_t pid) { return pid > 0 && (::kill(pid, 0) == 0 || errno == EPERM); }

}  // namespace sluice::test
