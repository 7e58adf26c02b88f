#include "socket_util.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cassert>
#include <cerrno>
#include <charconv>
#include <climits>
#include <cstring>

#include "sluice/transport/log.hpp"

namespace sluice::transport::detail {
namespace {

// Waits until `fd` is ready for `events`; an expired deadline is an error naming `what`.
Status wait_ready(int fd, short events, const Deadline& deadline, const char* what) {
  for (;;) {
    pollfd p{fd, events, 0};
    const int n = ::poll(&p, 1, deadline.remaining_ms());
    if (n > 0) return {};
    if (n == 0) return make_error(std::string("timed out waiting for ") + what);
    if (errno != EINTR) return make_error(std::string("poll failed: ") + errno_text(errno));
  }
}

uint32_t load_le32(const uint8_t* p) {
  return uint32_t{p[0]} | uint32_t{p[1]} << 8 | uint32_t{p[2]} << 16 | uint32_t{p[3]} << 24;
}

void store_le32(uint8_t* p, uint32_t v) {
  p[0] = static_cast<uint8_t>(v);
  p[1] = static_cast<uint8_t>(v >> 8);
  p[2] = static_cast<uint8_t>(v >> 16);
  p[3] = static_cast<uint8_t>(v >> 24);
}

Status check_length(uint32_t length, size_t max_bytes) {
  if (length == 0 || length > max_bytes) {
    return make_error("expected a message length of 1.." + std::to_string(max_bytes) +
                      " bytes, got a length prefix of " + std::to_string(length));
  }
  return {};
}

}  // namespace

void UniqueFd::reset(int fd) {
  if (fd_ >= 0 && ::close(fd_) != 0) {
    // Linux frees the descriptor even when close reports an error; all that is left is to say so.
    SLUICE_LOG_WARN("close(%d) failed: %s", fd_, errno_text(errno).c_str());
  }
  fd_ = fd;
}

Deadline Deadline::after_ms(int timeout_ms) {
  if (timeout_ms < 0) return never();
  return Deadline(Clock::now() + std::chrono::milliseconds(timeout_ms));
}

bool Deadline::expired() const { return at_ && Clock::now() >= *at_; }

int Deadline::remaining_ms() const {
  if (!at_) return -1;
  const auto left = *at_ - Clock::now();
  if (left <= Clock::duration::zero()) return 0;
  const auto ms = std::chrono::ceil<std::chrono::milliseconds>(left).count();
  return ms > INT_MAX ? INT_MAX : static_cast<int>(ms);
}

std::string errno_text(int err) { return std::strerror(err); }

Result<HostPort> parse_host_port(std::string_view text) {
  const size_t colon = text.rfind(':');
  if (colon == std::string_view::npos || colon == 0) {
    return make_error("expected HOST:PORT, got '" + std::string(text) + "'");
  }
  const std::string_view port_text = text.substr(colon + 1);
  unsigned port = 0;
  const char* end = port_text.data() + port_text.size();
  const auto [ptr, ec] = std::from_chars(port_text.data(), end, port);
  if (port_text.empty() || ec != std::errc() || ptr != end || port < 1 || port > 65535) {
    return make_error("expected HOST:PORT with a port of 1..65535, got '" + std::string(text) +
                      "'");
  }
  return HostPort{std::string(text.substr(0, colon)), static_cast<uint16_t>(port)};
}

Status set_nonblocking(int fd) {
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
    return make_error("fcntl(O_NONBLOCK) failed: " + errno_text(errno));
  }
  return {};
}

Result<UniqueFd> connect_tcp(const std::string& host, uint16_t port, int timeout_ms) {
  const std::string where = host + ":" + std::to_string(port);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  if (::inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) {
    return make_error("expected an IPv4 address to connect to, got '" + host + "'");
  }
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd.valid()) return make_error("socket() failed: " + errno_text(errno));
  // Non-blocking, and it stays so: every reader and writer here waits with poll() and a deadline.
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    if (errno != EINPROGRESS) {
      return make_error("cannot connect to " + where + ": " + errno_text(errno));
    }
    const Deadline deadline = Deadline::after_ms(timeout_ms);
    if (Status s = wait_ready(fd.get(), POLLOUT, deadline, "the connection"); !s) {
      return make_error("cannot connect to " + where + ": " + s.error());
    }
    int err = 0;
    socklen_t len = sizeof err;
    if (::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
    if (err != 0) return make_error("cannot connect to " + where + ": " + errno_text(err));
  }
  const int one = 1;
  // Bootstrap messages are small request/response pairs; Nagle would only add latency.
  (void)::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

Result<Listener> listen_loopback() {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd.valid()) return make_error("socket() failed: " + errno_text(errno));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    return make_error("cannot bind 127.0.0.1:0: " + errno_text(errno));
  }
  if (::listen(fd.get(), SOMAXCONN) != 0) {
    return make_error("listen() failed: " + errno_text(errno));
  }
  socklen_t len = sizeof addr;
  if (::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    return make_error("getsockname() failed: " + errno_text(errno));
  }
  return Listener{std::move(fd), ntohs(addr.sin_port)};
}

Status write_all(int fd, std::span<const uint8_t> bytes, Deadline deadline) {
  size_t done = 0;
  bool is_socket = true;
  while (done < bytes.size()) {
    const uint8_t* p = bytes.data() + done;
    const size_t left = bytes.size() - done;
    const ssize_t n =
        is_socket ? ::send(fd, p, left, MSG_NOSIGNAL | MSG_DONTWAIT) : ::write(fd, p, left);
    if (n < 0 && errno == ENOTSOCK) {
      is_socket = false;
      continue;
    }
    if (n >= 0) {
      done += static_cast<size_t>(n);
      continue;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      if (Status s = wait_ready(fd, POLLOUT, deadline, "room to write"); !s) return s;
      continue;
    }
    return make_error("write failed after " + std::to_string(done) + " of " +
                      std::to_string(bytes.size()) + " bytes: " + errno_text(errno));
  }
  return {};
}

Status read_exact(int fd, std::span<uint8_t> out, Deadline deadline, const char* what) {
  size_t done = 0;
  while (done < out.size()) {
    // Waiting first keeps the deadline also on a blocking descriptor.
    if (Status s = wait_ready(fd, POLLIN, deadline, what); !s) {
      return make_error(s.error() + " (" + std::to_string(done) + " of " +
                        std::to_string(out.size()) + " bytes arrived)");
    }
    const ssize_t n = ::read(fd, out.data() + done, out.size() - done);
    if (n > 0) {
      done += static_cast<size_t>(n);
      continue;
    }
    if (n == 0) {
      return make_error(std::string("expected ") + std::to_string(out.size()) + " bytes of " +
                        what + ", got " + std::to_string(done) + " before the peer closed");
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      return make_error(std::string("reading ") + what + " failed: " + errno_text(errno));
    }
  }
  return {};
}

std::vector<uint8_t> frame_message(std::span<const uint8_t> payload) {
  assert(payload.size() <= kMaxMessageBytes);
  std::vector<uint8_t> out(kLengthPrefixBytes + payload.size());
  store_le32(out.data(), static_cast<uint32_t>(payload.size()));
  std::memcpy(out.data() + kLengthPrefixBytes, payload.data(), payload.size());
  return out;
}

Status send_message(int fd, std::span<const uint8_t> payload, Deadline deadline) {
  if (payload.empty() || payload.size() > kMaxMessageBytes) {
    return make_error("refusing to send a message of " + std::to_string(payload.size()) +
                      " bytes; expected 1.." + std::to_string(kMaxMessageBytes));
  }
  const std::vector<uint8_t> framed = frame_message(payload);
  return write_all(fd, framed, deadline);
}

Result<std::vector<uint8_t>> receive_message(int fd, Deadline deadline, size_t max_bytes) {
  uint8_t prefix[kLengthPrefixBytes];
  if (Status s = read_exact(fd, prefix, deadline, "a message length prefix"); !s) {
    return std::move(s).take_error();
  }
  const uint32_t length = load_le32(prefix);
  if (Status s = check_length(length, max_bytes); !s) return std::move(s).take_error();
  std::vector<uint8_t> payload(length);
  if (Status s = read_exact(fd, payload, deadline, "a message body"); !s) {
    return std::move(s).take_error();
  }
  return payload;
}

Result<std::optional<std::vector<uint8_t>>> take_message(std::vector<uint8_t>& buffer,
                                                         size_t max_bytes) {
  if (buffer.size() < kLengthPrefixBytes) return std::optional<std::vector<uint8_t>>();
  const uint32_t length = load_le32(buffer.data());
  if (Status s = check_length(length, max_bytes); !s) return std::move(s).take_error();
  if (buffer.size() - kLengthPrefixBytes < length) return std::optional<std::vector<uint8_t>>();
  const auto begin = buffer.begin() + kLengthPrefixBytes;
  std::vector<uint8_t> payload(begin, begin + length);
  buffer.erase(buffer.begin(), begin + length);
  return std::optional<std::vector<uint8_t>>(std::move(payload));
}

Result<bool> read_available(int fd, std::vector<uint8_t>& buffer, size_t limit) {
  uint8_t chunk[16384];
  while (buffer.size() < limit) {
    const size_t want = std::min(sizeof chunk, limit - buffer.size());
    const ssize_t n = ::read(fd, chunk, want);
    if (n > 0) {
      buffer.insert(buffer.end(), chunk, chunk + n);
      continue;
    }
    if (n == 0) return false;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return true;
    return make_error("read failed: " + errno_text(errno));
  }
  return true;
}

}  // namespace sluice::transport::detail
