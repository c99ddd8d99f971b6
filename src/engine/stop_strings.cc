#include "engine/stop_strings.h"

#include <algorithm>

namespace idlefleet::engine {
namespace {

// Whether `s` is well-formed UTF-8 (no overlongs, surrogates or values past
// U+10FFFF).
bool valid_utf8(std::string_view s) {
  size_t k = 0;
  while (k < s.size()) {
    const auto b = static_cast<uint8_t>(s[k]);
    size_t len = 0;
    uint32_t cp = 0;
    if (b < 0x80) {
      ++k;
      continue;
    } else if (b >= 0xC2 && b <= 0xDF) {
      len = 2;
      cp = b & 0x1F;
    } else if (b >= 0xE0 && b <= 0xEF) {
      len = 3;
      cp = b & 0x0F;
    } else if (b >= 0xF0 && b <= 0xF4) {
      len = 4;
      cp = b & 0x07;
    } else {
      return false;
    }
    if (k + len > s.size()) return false;
    for (size_t c = 1; c < len; ++c) {
      const auto cb = static_cast<uint8_t>(s[k + c]);
      if ((cb & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cb & 0x3F);
    }
    if ((len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
        (len == 4 && (cp < 0x10000 || cp > 0x10FFFF))) {
      return false;
    }
    k += len;
  }
  return true;
}

}  // namespace

Result<StopMatcher> StopMatcher::create(std::vector<std::string> stops) {
  if (stops.size() > kStopStringsMax) {
    return Unexpected(ErrorCode::kInvalidArgument,
                      std::string("at most ")
                          .append(std::to_string(kStopStringsMax))
                          .append(" stop strings, not ")
                          .append(std::to_string(stops.size())));
  }
  for (size_t k = 0; k < stops.size(); ++k) {
    const std::string& s = stops[k];
    if (s.empty() || s.size() > kStopStringBytesMax) {
      return Unexpected(ErrorCode::kInvalidArgument,
                        std::string("stop string ")
                            .append(std::to_string(k))
                            .append(" has ")
                            .append(std::to_string(s.size()))
                            .append(" bytes; each must have 1 to ")
                            .append(std::to_string(kStopStringBytesMax)));
    }
    if (!valid_utf8(s)) {
      return Unexpected(ErrorCode::kInvalidArgument,
                        std::string("stop string ").append(std::to_string(k)).append(" is not valid UTF-8"));
    }
  }
  return StopMatcher(std::move(stops));
}

StopStep StopMatcher::push(std::string_view piece) {
  StopStep step;
  if (stopped_) return step;
  std::string text = std::move(held_);
  held_.clear();
  text.append(piece);

  // The match that ends first, and among those the one that starts first.
  // A stop's first occurrence is also where it ends first. Nothing before
  // text (already released) can be part of a match: it was released only
  // because no stop string could start there.
  size_t best_end = std::string::npos;
  size_t best_start = std::string::npos;
  for (const std::string& stop : stops_) {
    const size_t at = text.find(stop);
    if (at == std::string::npos) continue;
    const size_t end = at + stop.size();
    if (end < best_end || (end == best_end && at < best_start)) {
      best_end = end;
      best_start = at;
    }
  }
  if (best_start != std::string::npos) {
    text.resize(best_start);
    step.text = std::move(text);
    step.stopped = true;
    stopped_ = true;
    return step;
  }

  // Hold back the longest suffix that is a proper prefix of a stop string.
  size_t hold = 0;
  for (const std::string& stop : stops_) {
    const size_t longest = std::min(stop.size() - 1, text.size());
    for (size_t len = longest; len > hold; --len) {
      if (std::string_view(text).substr(text.size() - len) == std::string_view(stop).substr(0, len)) {
        hold = len;
        break;
      }
    }
  }
  held_ = text.substr(text.size() - hold);
  text.resize(text.size() - hold);
  step.text = std::move(text);
  return step;
}

std::string StopMatcher::flush() {
  std::string out = std::move(held_);
  held_.clear();
  if (stopped_) out.clear();
  return out;
}

}  // namespace idlefleet::engine
