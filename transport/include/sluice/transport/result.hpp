// Result<T>: the outcome of a call that can fail at a boundary (network bytes, configuration,
// OS calls). A failure carries one message that says what was expected and what arrived.
//
//   Result<int> parse_port(std::string_view s);
//   auto r = parse_port("80x");
//   if (!r) std::fprintf(stderr, "%s\n", r.error().c_str());
//
// Bugs are asserts, not Results; back-pressure and would-block are ordinary return values.
#pragma once

#include <cassert>
#include <string>
#include <utility>
#include <variant>

namespace sluice {

struct Error {
  std::string message;
};

inline Error make_error(std::string message) { return Error{std::move(message)}; }

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}  // NOLINT: implicit by design
  Result(Error e) : v_(std::in_place_index<1>, std::move(e)) {}      // NOLINT: implicit by design

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & {
    assert(ok());
    return std::get<0>(v_);
  }
  const T& value() const& {
    assert(ok());
    return std::get<0>(v_);
  }
  T&& value() && {
    assert(ok());
    return std::get<0>(std::move(v_));
  }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }

  const std::string& error() const {
    assert(!ok());
    return std::get<1>(v_).message;
  }
  Error take_error() && { return std::get<1>(std::move(v_)); }

 private:
  std::variant<T, Error> v_;
};

// Result<void>: success or an error message.
template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error e) : error_(std::move(e.message)), failed_(true) {}  // NOLINT: implicit by design

  bool ok() const { return !failed_; }
  explicit operator bool() const { return ok(); }
  const std::string& error() const {
    assert(failed_);
    return error_;
  }
  Error take_error() && { return Error{std::move(error_)}; }

 private:
  std::string error_;
  bool failed_ = false;
};

using Status = Result<void>;

}  // namespace sluice
