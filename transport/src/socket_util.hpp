// Small POSIX helpers for the launcher's rendezvous (private to transport/).
//
// Every descriptor made here is O_CLOEXEC, so nothing leaks into the processes the launcher
// starts. Sockets are written with MSG_NOSIGNAL: a peer that went away is an error, not SIGPIPE.
// The framing is a 4-byte little-endian length followed by that many bytes; lengths are capped
// before anything is allocated.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "sluice/transport/result.hpp"

namespace sluice::transport::detail {

// The most one framed message may carry; a larger length prefix is rejected before reading on.
inline constexpr size_t kMaxMessageBytes = size_t{16} << 20;
inline constexpr size_t kLengthPrefixBytes = 4;

// One owner of a file descriptor; closes it on destruction. Move-only.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  ~UniqueFd() { reset(); }
  UniqueFd(UniqueFd&& other) noexcept : fd_(other.release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) reset(other.release());
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int release() {
    const int fd = fd_;
    fd_ = -1;
    return fd;
  }
  void reset(int fd = -1);

 private:
  int fd_ = -1;
};

using Clock = std::chrono::steady_clock;

// A point in time after which a blocking helper gives up. `Deadline::after_ms(-1)` never expires.
class Deadline {
 public:
  static Deadline after_ms(int timeout_ms);
  static Deadline never() { return Deadline(std::nullopt); }
  bool expired() const;
  // Milliseconds left, rounded up, for poll(); -1 when there is no deadline.
  int remaining_ms() const;

 private:
  explicit Deadline(std::optional<Clock::time_point> at) : at_(at) {}
  std::optional<Clock::time_point> at_;
};

struct HostPort {
  std::string host;
  uint16_t port = 0;
};

// Parses "HOST:PORT" with PORT in 1..65535.
Result<HostPort> parse_host_port(std::string_view text);

// Connects a TCP socket to an IPv4 `host` ("127.0.0.1"), giving up after `timeout_ms`. The socket
// is non-blocking and O_CLOEXEC; the helpers below wait on it with deadlines.
Result<UniqueFd> connect_tcp(const std::string& host, uint16_t port, int timeout_ms);

struct Listener {
  UniqueFd fd;
  uint16_t port = 0;
};

// Listens on 127.0.0.1 on a port the kernel picks. The socket is non-blocking.
Result<Listener> listen_loopback();

Status set_nonblocking(int fd);

// Writes every byte to a socket or pipe, waiting for room (also on a non-blocking descriptor)
// until `deadline`.
Status write_all(int fd, std::span<const uint8_t> bytes, Deadline deadline);

// Reads exactly `out.size()` bytes, waiting until `deadline`. A peer that closes first is an
// error saying how many of how many bytes arrived; `what` names the thing being read.
Status read_exact(int fd, std::span<uint8_t> out, Deadline deadline, const char* what);

// Sends one framed message.
Status send_message(int fd, std::span<const uint8_t> payload, Deadline deadline);

// Receives one framed message of 1..max_bytes bytes.
Result<std::vector<uint8_t>> receive_message(int fd, Deadline deadline,
                                             size_t max_bytes = kMaxMessageBytes);

// Prepends the length prefix to `payload`.
std::vector<uint8_t> frame_message(std::span<const uint8_t> payload);

// For non-blocking readers that collect bytes in a buffer: removes one complete framed message
// from the front of `buffer` and returns it; nullopt when more bytes are needed. A length of 0 or
// above `max_bytes` is an error (the stream cannot be resynchronised after it).
Result<std::optional<std::vector<uint8_t>>> take_message(std::vector<uint8_t>& buffer,
                                                         size_t max_bytes = kMaxMessageBytes);

// Reads whatever a non-blocking descriptor has now and appends it to `buffer`, up to `limit`
// bytes in the buffer. Returns false once the peer closed its end.
Result<bool> read_available(int fd, std::vector<uint8_t>& buffer, size_t limit);

// "strerror(errno)" as a std::string, for messages.
std::string errno_text(int err);

}  // namespace sluice::transport::detail
