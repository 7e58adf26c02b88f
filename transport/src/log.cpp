#include "sluice/transport/log.hpp"

#include <atomic>
#include <cstdio>
#include <mutex>

namespace sluice {
namespace {
std::atomic<int> g_level{static_cast<int>(LogLevel::kWarn)};
std::mutex g_mu;
std::string g_member;  // guarded by g_mu
}  // namespace

void set_log_level(LogLevel level) { g_level.store(static_cast<int>(level)); }
LogLevel log_level() { return static_cast<LogLevel>(g_level.load(std::memory_order_relaxed)); }
void set_log_member(std::string member) {
  std::lock_guard lock(g_mu);
  g_member = std::move(member);
}

void log(LogLevel level, const char* fmt, ...) {
  if (static_cast<int>(level) > g_level.load(std::memory_order_relaxed)) return;
  char buf[2048];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  static const char* const kNames[] = {"error", "warning", "info", "debug"};
  std::lock_guard lock(g_mu);
  if (g_member.empty()) {
    std::fprintf(stderr, "sluice: %s: %s\n", kNames[static_cast<int>(level)], buf);
  } else {
    std::fprintf(stderr, "sluice[%s]: %s: %s\n", g_member.c_str(), kNames[static_cast<int>(level)],
                 buf);
  }
}

}  // namespace sluice
