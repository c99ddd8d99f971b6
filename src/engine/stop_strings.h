// Stop strings (the OpenAI API's `stop`): ending a generation when its text
// contains one of a few strings, without ever showing the string.
//
// A StopMatcher is fed the detokenised text of a generation piece by piece,
// in order. Each push() returns the text that is now safe to show and whether
// a stop string has matched. Text that could still turn out to be the start
// of a stop string is held back: exactly the longest suffix of the text so
// far that is a proper prefix of some stop string, nothing more. When a stop
// string completes, the output ends right before it and nothing further is
// released; flush() at the end of a generation without a match releases what
// was held.
//
// Which match counts: the one that completes first in the text (the moment a
// streaming generation would stop); among those completing at the same byte,
// the one that starts first. With that rule the total output is the same
// however the text is split into pieces.
//
// Ownership: a plain value. Thread-safety: one matcher per generation, not
// shared between threads.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace idlefleet::engine {

// The OpenAI API's limits: at most 4 stop strings of 1..64 bytes.
inline constexpr size_t kStopStringsMax = 4;
inline constexpr size_t kStopStringBytesMax = 64;

// What one push() releases.
struct StopStep {
  std::string text;      // safe to show now (possibly empty)
  bool stopped = false;  // a stop string matched; text ends right before it
};

class StopMatcher {
 public:
  // Errors (kInvalidArgument): more than kStopStringsMax strings, an empty
  // one, one over kStopStringBytesMax, or one that is not valid UTF-8 (so
  // that held-back text always splits at a character boundary). No strings
  // is fine: everything passes straight through.
  static Result<StopMatcher> create(std::vector<std::string> stops);

  // Feeds the next piece of text. After a match, returns nothing and stays
  // stopped.
  StopStep push(std::string_view piece);

  // Releases the held-back text at the end of a generation that did not
  // stop (empty after a match). The matcher is then empty.
  std::string flush();

  bool stopped() const { return stopped_; }
  // Bytes currently held back; always < kStopStringBytesMax.
  size_t held_bytes() const { return held_.size(); }

 private:
  explicit StopMatcher(std::vector<std::string> stops) : stops_(std::move(stops)) {}

  std::vector<std::string> stops_;
  std::string held_;
  bool stopped_ = false;
};

}  // namespace idlefleet::engine
