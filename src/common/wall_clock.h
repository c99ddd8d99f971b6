// The wall clock, for the shells only: the core takes time as an input
// (docs/architecture.md, "Layers"), and the agent, the coordinator and the
// command read it here and pass it in.
//
// Thread-safety: reads the system clock; safe from any thread.
#pragma once

#include <chrono>
#include <cstdint>

namespace idlefleet {

// Milliseconds since 1970-01-01T00:00:00Z (core::TimeMs).
inline int64_t wall_clock_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace idlefleet
