// LogLimiter: every refusal gets a log line, but a flood of one kind does not
// drown the log. Per key, at most kLinesPerWindow lines per window; the rest
// are counted and reported with the next line that is let through.
//
// Time is an argument (milliseconds, any monotonic clock), so it is testable.
// Thread-safety: not thread-safe; one per thread, or guard it.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>

namespace idlefleet {

class LogLimiter {
 public:
  static constexpr int kLinesPerWindow = 5;
  static constexpr int64_t kWindowMs = 10'000;
  static constexpr size_t kKeysMax = 1024;  // distinct keys tracked; beyond it all share one

  // Whether to log now. When true, *suppressed (if given) is how many lines
  // of this key were dropped since the last one logged.
  bool allow(std::string_view key, int64_t now_ms, uint64_t* suppressed = nullptr) {
    auto it = keys_.find(key);
    if (it == keys_.end()) {
      if (keys_.size() >= kKeysMax) key = "(other)";
      it = keys_.emplace(std::string(key), State{}).first;
    }
    State& s = it->second;
    if (now_ms - s.window_start_ms >= kWindowMs) {
      s.window_start_ms = now_ms;
      s.lines = 0;
    }
    if (s.lines < kLinesPerWindow) {
      ++s.lines;
      if (suppressed != nullptr) *suppressed = s.dropped;
      s.dropped = 0;
      return true;
    }
    ++s.dropped;
    return false;
  }

 private:
  struct State {
    int64_t window_start_ms = INT64_MIN / 2;
    int lines = 0;
    uint64_t dropped = 0;
  };
  std::map<std::string, State, std::less<>> keys_;
};

}  // namespace idlefleet
