// Waiting for Ctrl-C (SIGINT) or SIGTERM in the long-running commands
// (coordinator, agent, demo), with a periodic callback for status lines.
//
// block_shutdown_signals() must run before any thread starts, so that the
// signals are delivered only to the thread that waits for them.
//
// Thread-safety: call from the main thread.
#pragma once

#include <functional>

namespace idlefleet::cli {

void block_shutdown_signals();

// Returns the signal number once SIGINT or SIGTERM arrives, or 0 when
// `every` returns false. Calls `every` about every period_ms.
int wait_for_shutdown(int period_ms, const std::function<bool()>& every);

}  // namespace idlefleet::cli
