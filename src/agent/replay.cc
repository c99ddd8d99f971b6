#include "agent/replay.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>

#include "common/check.h"

namespace idlefleet::agent {

namespace {

using json = nlohmann::json;

// A file is untrusted: messages quote at most this much of it, with anything
// unprintable replaced, so they stay one readable line.
constexpr size_t kQuotedBytesMax = 48;
constexpr size_t kJsonReasonBytesMax = 160;
// load_replay reads in pieces of this size.
constexpr size_t kReadChunkBytes = size_t{1} << 20;

std::string printable(std::string_view text, size_t bytes_max) {
  std::string out;
  const size_t n = std::min(text.size(), bytes_max);
  for (size_t i = 0; i < n; ++i) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    out += (c >= 0x20 && c < 0x7f) ? static_cast<char>(c) : '?';
  }
  if (n < text.size()) out += "...";
  return out;
}

// Appended, not "'" + ...: g++ 12 warns falsely (-Wrestrict) on that form.
std::string quote_text(std::string_view text) {
  std::string out = "'";
  out += printable(text, kQuotedBytesMax);
  out += "'";
  return out;
}

std::string line_prefix(size_t line) { return "line " + std::to_string(line) + ": "; }

// Which of the three keys a value belongs to.
enum class Key : int { kNone = -1, kT = 0, kPath = 1, kValue = 2 };
constexpr const char* kKeyNames[] = {"t", "path", "value"};

// Receives one line's JSON as SAX events and keeps the three fields. The
// first problem stops the parse (a handler returning false) and is kept, so
// a line is never read further than its first error.
class LineHandler {
 public:
  std::optional<core::TimeMs> t;
  std::optional<std::string> path;
  std::optional<std::string> value;
  std::string problem;  // empty while all is well
  ErrorCode code = ErrorCode::kCorrupt;

  bool null() { return scalar_kind("null"); }
  bool boolean(bool v) {
    if (!in_object("a boolean")) return false;
    if (key_ == Key::kValue) return set_value(v ? "true" : "false");
    return wrong_type("a boolean");
  }
  bool number_integer(json::number_integer_t v) {
    if (!in_object("a number")) return false;
    if (key_ == Key::kT) {
      t = v;
      return true;
    }
    if (key_ == Key::kValue) return set_value(std::to_string(v));
    return wrong_type("a number");
  }
  bool number_unsigned(json::number_unsigned_t v) {
    if (!in_object("a number")) return false;
    if (key_ == Key::kT) {
      if (v > static_cast<uint64_t>(core::kPlausibleTimeMsMax)) {
        return fail(ErrorCode::kOutOfRange, "t " + std::to_string(v) + " is outside [0, " +
                                                std::to_string(core::kPlausibleTimeMsMax) + "] ms");
      }
      t = static_cast<core::TimeMs>(v);
      return true;
    }
    if (key_ == Key::kValue) return set_value(std::to_string(v));
    return wrong_type("a number");
  }
  // `raw` is the number as written in the file.
  bool number_float(json::number_float_t, const std::string& raw) {
    if (!in_object("a number")) return false;
    if (key_ == Key::kT) {
      // An integer too long for 64 bits arrives here too: say which it is.
      const bool integer = raw.find_first_not_of("-0123456789") == std::string::npos;
      if (integer) return fail(ErrorCode::kOutOfRange, "t " + quote_text(raw) + " is out of range");
      return fail(ErrorCode::kCorrupt, "t must be an integer number of milliseconds, got " + quote_text(raw));
    }
    if (key_ == Key::kValue) return set_value(raw);
    return wrong_type("a number");
  }
  bool string(json::string_t& v) {
    if (!in_object("a string")) return false;
    if (key_ == Key::kPath) {
      path = std::move(v);
      return true;
    }
    if (key_ == Key::kValue) return set_value(std::move(v));
    return wrong_type("a string");
  }
  bool binary(json::binary_t&) { return scalar_kind("binary data"); }
  bool start_object(std::size_t) {
    if (depth_ > 0) return wrong_type("an object");
    depth_ = 1;
    return true;
  }
  bool key(json::string_t& k) {
    key_ = Key::kNone;
    for (int i = 0; i < 3; ++i) {
      if (k == kKeyNames[i]) key_ = static_cast<Key>(i);
    }
    if (key_ == Key::kNone) {
      return fail(ErrorCode::kCorrupt, "unknown key " + quote_text(k) + " (expected t, path and value)");
    }
    if (seen_[static_cast<int>(key_)]) {
      return fail(ErrorCode::kCorrupt, std::string("duplicate key '") + kKeyNames[static_cast<int>(key_)] + "'");
    }
    seen_[static_cast<int>(key_)] = true;
    return true;
  }
  bool end_object() {
    depth_ = 0;
    return true;
  }
  bool start_array(std::size_t) {
    if (depth_ == 0) return fail(ErrorCode::kCorrupt, "the line is a JSON array, not an object");
    return wrong_type("an array");
  }
  bool end_array() { return true; }
  bool parse_error(std::size_t position, const std::string&, const nlohmann::detail::exception& ex) {
    // what() reads "[json.exception.parse_error.101] parse error at line 1,
    // column 5: syntax error while parsing value - ...": keep the reason.
    std::string_view reason = ex.what();
    if (const size_t id_end = reason.find("] "); id_end != std::string_view::npos) reason.remove_prefix(id_end + 2);
    if (reason.starts_with("parse error")) {
      if (const size_t colon = reason.find(": "); colon != std::string_view::npos) reason.remove_prefix(colon + 2);
    }
    // 406: a number beyond double's range (1e400); any other is a syntax error.
    constexpr int kNumberOverflowId = 406;
    if (ex.id == kNumberOverflowId) {
      return fail(ErrorCode::kOutOfRange, "a number is out of range at byte " + std::to_string(position) + ": " +
                                              printable(reason, kJsonReasonBytesMax));
    }
    return fail(ErrorCode::kCorrupt, "not valid JSON at byte " + std::to_string(position) + ": " +
                                         printable(reason, kJsonReasonBytesMax));
  }

 private:
  bool fail(ErrorCode c, std::string message) {
    if (problem.empty()) {
      code = c;
      problem = std::move(message);
    }
    return false;
  }
  bool in_object(const char* kind) {
    if (depth_ > 0) return true;
    return fail(ErrorCode::kCorrupt, std::string("the line is ") + kind + ", not a JSON object");
  }
  bool scalar_kind(const char* kind) {
    if (!in_object(kind)) return false;
    return wrong_type(kind);
  }
  bool wrong_type(const char* kind) {
    switch (key_) {
      case Key::kT: return fail(ErrorCode::kCorrupt, std::string("t must be an integer number of milliseconds, not ") + kind);
      case Key::kPath: return fail(ErrorCode::kCorrupt, std::string("path must be a string, not ") + kind);
      case Key::kValue:
        return fail(ErrorCode::kCorrupt, std::string("value must be a string, number or boolean, not ") + kind);
      case Key::kNone: break;
    }
    return fail(ErrorCode::kCorrupt, std::string("unexpected ") + kind);
  }
  bool set_value(std::string v) {
    value = std::move(v);
    return true;
  }

  int depth_ = 0;
  Key key_ = Key::kNone;
  bool seen_[3] = {false, false, false};
};

Unexpected line_error(size_t line, ErrorCode code, const std::string& message) {
  return Unexpected(code, line_prefix(line) + message);
}

bool blank(char c) { return c == ' ' || c == '\t'; }

}  // namespace

Result<std::vector<ReplayEvent>> parse_replay(std::string_view text) {
  if (text.size() > kReplayFileBytesMax) {
    return Unexpected(ErrorCode::kOutOfRange, "replay of " + std::to_string(text.size()) +
                                                  " bytes exceeds kReplayFileBytesMax (" +
                                                  std::to_string(kReplayFileBytesMax) + ")");
  }
  constexpr std::string_view kBom = "\xEF\xBB\xBF";
  if (text.substr(0, kBom.size()) == kBom) text.remove_prefix(kBom.size());

  std::vector<ReplayEvent> events;
  core::VehicleSignals scratch;  // validates values; its contents are never used
  size_t line_no = 0;
  size_t previous_line = 0;
  size_t pos = 0;
  // Bounded: every pass consumes at least one byte (a line and its "\n").
  while (pos < text.size()) {
    ++line_no;
    if (line_no > kReplayLinesMax) {
      return line_error(line_no, ErrorCode::kOutOfRange,
                        "more than kReplayLinesMax (" + std::to_string(kReplayLinesMax) + ") lines");
    }
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(pos, end - pos);
    pos = end + 1;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.size() > kReplayLineBytesMax) {
      return line_error(line_no, ErrorCode::kOutOfRange,
                        std::to_string(line.size()) + " bytes exceeds kReplayLineBytesMax (" +
                            std::to_string(kReplayLineBytesMax) + ")");
    }
    if (const size_t nul = line.find('\0'); nul != std::string_view::npos) {
      return line_error(line_no, ErrorCode::kCorrupt, "NUL byte at byte " + std::to_string(nul));
    }
    const size_t first = std::find_if_not(line.begin(), line.end(), blank) - line.begin();
    if (first == line.size() || line[first] == '#') continue;

    LineHandler handler;
    const bool parsed = json::sax_parse(line.begin(), line.end(), &handler, json::input_format_t::json,
                                        /*strict=*/true, /*ignore_comments=*/false);
    if (!parsed || !handler.problem.empty()) {
      return line_error(line_no, handler.code,
                        handler.problem.empty() ? std::string("not valid JSON") : handler.problem);
    }
    for (int i = 0; i < 3; ++i) {
      const bool present = i == 0 ? handler.t.has_value() : i == 1 ? handler.path.has_value() : handler.value.has_value();
      if (!present) {
        return line_error(line_no, ErrorCode::kCorrupt, std::string("missing key '") + kKeyNames[i] + "'");
      }
    }
    const core::TimeMs t = *handler.t;
    if (t < 0 || t > core::kPlausibleTimeMsMax) {
      return line_error(line_no, ErrorCode::kOutOfRange,
                        "t " + std::to_string(t) + " is outside [0, " + std::to_string(core::kPlausibleTimeMsMax) +
                            "] ms");
    }
    if (!events.empty() && t < events.back().t) {
      return line_error(line_no, ErrorCode::kCorrupt,
                        "t " + std::to_string(t) + " is before t " + std::to_string(events.back().t) +
                            " of line " + std::to_string(previous_line) + " (times must not decrease)");
    }
    const Status applied = core::apply_signal(&scratch, *handler.path, *handler.value);
    if (!applied) return line_error(line_no, applied.error().code, applied.error().message);
    events.push_back(ReplayEvent{t, std::move(*handler.path), std::move(*handler.value)});
    previous_line = line_no;
  }
  return events;
}

Result<std::vector<ReplayEvent>> load_replay(const std::string& path) {
  struct Closer {
    void operator()(std::FILE* f) const { std::fclose(f); }
  };
  std::unique_ptr<std::FILE, Closer> file(std::fopen(path.c_str(), "rb"));
  if (!file) {
    const int err = errno;
    return Unexpected(err == ENOENT ? ErrorCode::kNotFound : ErrorCode::kIo,
                      path + ": cannot open: " + std::strerror(err));
  }
  struct stat st {};
  if (::fstat(::fileno(file.get()), &st) == 0 && S_ISREG(st.st_mode) &&
      static_cast<uint64_t>(st.st_size) > kReplayFileBytesMax) {
    return Unexpected(ErrorCode::kOutOfRange, path + ": " + std::to_string(st.st_size) +
                                                  " bytes exceeds kReplayFileBytesMax (" +
                                                  std::to_string(kReplayFileBytesMax) + ")");
  }
  // Read at most one byte past the limit, so a pipe or a growing file is
  // refused too. Bounded by kReplayFileBytesMax / kReadChunkBytes + 2 passes.
  std::string text;
  for (;;) {
    const size_t old = text.size();
    const size_t want = std::min(kReadChunkBytes, kReplayFileBytesMax + 1 - old);
    text.resize(old + want);
    const size_t got = std::fread(text.data() + old, 1, want, file.get());
    text.resize(old + got);
    if (got < want) break;
    if (text.size() > kReplayFileBytesMax) {
      return Unexpected(ErrorCode::kOutOfRange, path + ": more than kReplayFileBytesMax (" +
                                                    std::to_string(kReplayFileBytesMax) + ") bytes");
    }
  }
  if (std::ferror(file.get())) {
    return Unexpected(ErrorCode::kIo, path + ": read failed: " + std::strerror(errno));
  }
  Result<std::vector<ReplayEvent>> events = parse_replay(text);
  if (!events) return Unexpected(events.error().code, path + ": " + events.error().message);
  return events;
}

std::string format_replay_line(const ReplayEvent& event) {
  auto escaped = [](std::string_view s) {
    std::string out;
    for (const char ch : s) {
      const unsigned char c = static_cast<unsigned char>(ch);
      if (c == '"' || c == '\\') {
        out += '\\';
        out += ch;
      } else if (c < 0x20) {
        char buf[8];
        std::snprintf(buf, sizeof buf, "\\u%04x", c);
        out += buf;
      } else {
        out += ch;
      }
    }
    return out;
  };
  return "{\"t\":" + std::to_string(event.t) + ",\"path\":\"" + escaped(event.path) + "\",\"value\":\"" +
         escaped(event.value) + "\"}";
}

// ---- ReplaySource --------------------------------------------------------------

ReplaySource::ReplaySource(std::vector<ReplayEvent> events) : events_(std::move(events)) {
  DCHECK(std::is_sorted(events_.begin(), events_.end(),
                        [](const ReplayEvent& a, const ReplayEvent& b) { return a.t < b.t; }));
}

std::vector<ReplayEvent> ReplaySource::take_until(core::TimeMs now) {
  std::vector<ReplayEvent> out;
  while (next_ < events_.size() && events_[next_].t <= now) {
    out.push_back(std::move(events_[next_]));  // delivered once: the source no longer needs it
    ++next_;
  }
  return out;
}

std::optional<core::TimeMs> ReplaySource::next_event_time() const {
  if (finished()) return std::nullopt;
  return events_[next_].t;
}

}  // namespace idlefleet::agent
