// libFuzzer target for the signal replay reader: whatever a replay file
// holds must parse or be refused with an error naming its line, never crash.
// What parses must format and parse back to the same events, and a
// ReplaySource must deliver every event, in order, exactly once.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "agent/replay.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace idlefleet::agent;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto events = parse_replay(text);
  if (!events) {
    if (events.error().message.rfind("line ", 0) != 0) std::abort();
    return 0;
  }
  std::string again;
  for (const ReplayEvent& e : *events) again += format_replay_line(e) + "\n";
  auto back = parse_replay(again);
  if (!back || *back != *events) std::abort();

  ReplaySource source(*events);
  size_t delivered = 0;
  for (const ReplayEvent& e : *events) {
    for (const ReplayEvent& got : source.take_until(e.t)) {
      if (delivered >= events->size() || got != (*events)[delivered]) std::abort();
      ++delivered;
    }
  }
  if (delivered != events->size() || !source.finished()) std::abort();
  return 0;
}
