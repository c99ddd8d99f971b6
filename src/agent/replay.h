// Replay: vehicle signals recorded as a JSONL file, played back as a signal
// source (a real car's day, a bug report, a scenario written by hand).
//
// Format, one event per line (UTF-8; lines end in "\n" or "\r\n"):
//   {"t": 1717225200000, "path": "Vehicle.Speed", "value": "12.5"}
//  - "t": when the value was observed, integer milliseconds since the Unix
//    epoch (UTC), within [0, core::kPlausibleTimeMsMax], non-decreasing from
//    line to line (equal times keep file order).
//  - "path": a VSS path that core::apply_signal reads; any other is an error.
//  - "value": the value as apply_signal's text ("12.5", "true", "126"), or a
//    JSON number (taken as written: 12.5 -> "12.5") or boolean (-> "true" /
//    "false"). It must be accepted by apply_signal (range, syntax), checked here
//    on a scratch VehicleSignals so that a bad file fails at load, not mid-run.
//  - Exactly these three keys, each once; nothing else on the line.
//  - Blank lines (spaces and tabs only) and lines whose first non-blank byte
//    is '#' are ignored; they still count as lines. One UTF-8 BOM at the start
//    of the file is skipped.
// Limits: kReplayLineBytesMax per line (without its line ending),
// kReplayLinesMax lines, kReplayFileBytesMax per file; no NUL bytes anywhere.
// Every error names the 1-based line number and the problem.
//
// Thread-safety: parse_replay, load_replay and format_replay_line are pure
// apart from load_replay's read of its file. A ReplaySource is a plain value
// with one owner.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "core/signals.h"
#include "core/time.h"

namespace idlefleet::agent {

inline constexpr size_t kReplayLineBytesMax = 4096;
inline constexpr size_t kReplayLinesMax = 10'000'000;
inline constexpr size_t kReplayFileBytesMax = size_t{1} << 30;  // 1 GiB

// One recorded signal update.
struct ReplayEvent {
  core::TimeMs t = 0;
  std::string path;   // VSS path
  std::string value;  // text for core::apply_signal

  bool operator==(const ReplayEvent&) const = default;
};

// Parses a whole replay file's text. Errors: kCorrupt for a line that is not
// the format (not JSON, wrong keys or types, NUL bytes, t decreasing),
// kOutOfRange for a limit or a t outside its range, and apply_signal's own
// code for a path or value it refuses. The message begins "line N: ".
Result<std::vector<ReplayEvent>> parse_replay(std::string_view text);

// Reads and parses a replay file. kNotFound or kIo if it cannot be read,
// kOutOfRange if larger than kReplayFileBytesMax (checked before reading);
// otherwise as parse_replay. The message begins with the path.
Result<std::vector<ReplayEvent>> load_replay(const std::string& path);

// One line of the format for the event, without the line ending, with the
// value as a JSON string; parse_replay gives the event back. For recording a
// run (e.g. a SimVehicle's take_updates()) as a replay file.
std::string format_replay_line(const ReplayEvent& event);

// Plays events back by time: the agent asks, at each tick of its clock, for
// what has happened up to now.
class ReplaySource {
 public:
  // REQUIRES: events sorted by t (as parse_replay returns them; DCHECKed).
  explicit ReplaySource(std::vector<ReplayEvent> events);

  // Events with t <= now not yet delivered, in order. An earlier `now` than
  // a previous call's delivers nothing.
  std::vector<ReplayEvent> take_until(core::TimeMs now);

  // Every event has been delivered.
  bool finished() const { return next_ == events_.size(); }

  // When the next undelivered event is due (nullopt when finished), so the
  // caller can sleep until then.
  std::optional<core::TimeMs> next_event_time() const;

 private:
  std::vector<ReplayEvent> events_;
  size_t next_ = 0;
};

}  // namespace idlefleet::agent
