// Logging: one line per event on stderr, prefixed "sluice: " and the member ("[p2/0]") when known.
// Thread-safe; an error is logged once, where it is decided.
#pragma once

#include <cstdarg>
#include <string>

namespace sluice {

enum class LogLevel { kError = 0, kWarn = 1, kInfo = 2, kDebug = 3 };

void set_log_level(LogLevel level);
LogLevel log_level();
void set_log_member(std::string member);  // e.g. "p2/0"; empty for none

[[gnu::format(printf, 2, 3)]] void log(LogLevel level, const char* fmt, ...);

#define SLUICE_LOG_ERROR(...) ::sluice::log(::sluice::LogLevel::kError, __VA_ARGS__)
#define SLUICE_LOG_WARN(...) ::sluice::log(::sluice::LogLevel::kWarn, __VA_ARGS__)
#define SLUICE_LOG_INFO(...)                                 \
  do {                                                       \
    if (::sluice::log_level() >= ::sluice::LogLevel::kInfo)  \
      ::sluice::log(::sluice::LogLevel::kInfo, __VA_ARGS__); \
  } while (0)
#define SLUICE_LOG_DEBUG(...)                                 \
  do {                                                        \
    if (::sluice::log_level() >= ::sluice::LogLevel::kDebug)  \
      ::sluice::log(::sluice::LogLevel::kDebug, __VA_ARGS__); \
  } while (0)

}  // namespace sluice
