// Helpers for tests that drive real processes: waiting on a condition with a
// deadline (never a fixed sleep in the logic), running a command and
// capturing its output, and quoting for the shell.
//
// Thread-safety: free functions, safe from any thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <thread>

namespace idlefleet::testing {

int64_t steady_now_ms();

// Polls `cond` every poll_ms until it holds or timeout_ms passes; returns
// its last answer.
template <class F>
bool eventually(F cond, int64_t timeout_ms, int64_t poll_ms = 10) {
  const int64_t deadline = steady_now_ms() + timeout_ms;
  while (steady_now_ms() < deadline) {
    if (cond()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(poll_ms));
  }
  return cond();
}

// Runs `command` with /bin/sh and returns what it wrote to stdout.
std::string run_capture(const std::string& command);

// 'text' for /bin/sh, with embedded single quotes escaped.
std::string shell_quote(const std::string& text);

}  // namespace idlefleet::testing
