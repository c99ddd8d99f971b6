// Result<T>: a value or an Error, the return type of every fallible call.
//
// It mirrors the part of std::expected that the project uses. We keep our own
// because the fuzz targets are built with clang 14, whose concepts support is
// too old for libstdc++ 12's <expected>. Errors carry a code from a small
// numbered catalogue and a message that names what is wrong, for people.
//
// Thread-safety: plain values; no shared state.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <variant>

namespace idlefleet {

// The error catalogue. Numbers are stable: they appear in logs and exit codes.
enum class ErrorCode : int {
  kInvalidArgument = 1,  // a caller's argument or flag is wrong
  kNotFound = 2,         // a file, key or tensor does not exist
  kIo = 3,               // the operating system refused a read, write or map
  kCorrupt = 4,          // a file or message breaks its format
  kUnsupported = 5,      // well-formed but not something we implement
  kOutOfRange = 6,       // a value exceeds a named limit
  kInternal = 7,         // a bug of ours, reported instead of crashing
  kAlreadyExists = 8,    // an id already names something else (a ledger transaction)
};

const char* error_code_name(ErrorCode code);

struct Error {
  ErrorCode code = ErrorCode::kInternal;
  std::string message;

  // "corrupt: tensor 'x' extends past the end of the file"
  std::string to_string() const;
};

// Wraps an Error so that `return Unexpected(...)` converts to any Result<T>.
struct Unexpected {
  Error error;
  Unexpected(ErrorCode code, std::string message) : error{code, std::move(message)} {}
  explicit Unexpected(Error e) : error(std::move(e)) {}
};

template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}  // NOLINT: implicit by design
  Result(Unexpected u) : v_(std::in_place_index<1>, std::move(u.error)) {}  // NOLINT

  bool has_value() const { return v_.index() == 0; }
  explicit operator bool() const { return has_value(); }

  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  const Error& error() const { return std::get<1>(v_); }

 private:
  std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Unexpected u) : error_(std::move(u.error)), ok_(false) {}  // NOLINT

  bool has_value() const { return ok_; }
  explicit operator bool() const { return ok_; }
  const Error& error() const { return error_; }

 private:
  Error error_;
  bool ok_ = true;
};

using Status = Result<void>;

}  // namespace idlefleet

// Propagates an error from an expression returning Result<void>.
#define IF_RETURN_IF_ERROR(expr)                                  \
  do {                                                            \
    auto if_status_ = (expr);                                     \
    if (!if_status_) return ::idlefleet::Unexpected(if_status_.error()); \
  } while (0)
