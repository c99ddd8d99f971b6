// Waiting until a steady-clock deadline, for the poll loops in transport/.
//
// Thread-safety: a pure function of the clock.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>

namespace idlefleet::transport {

// Milliseconds left until `deadline`, never negative. Rounded up, so that a
// wait of this many milliseconds never ends early.
inline int64_t ms_until(std::chrono::steady_clock::time_point deadline) {
  auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
  return std::max<int64_t>(0, left);
}

}  // namespace idlefleet::transport
