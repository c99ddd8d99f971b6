#include "cli/shutdown.h"

#include <signal.h>

#include <cerrno>
#include <ctime>

namespace idlefleet::cli {

namespace {
sigset_t shutdown_set() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  return set;
}
}  // namespace

void block_shutdown_signals() {
  const sigset_t set = shutdown_set();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);  // a client that hangs up is an error on its socket, not a death
}

int wait_for_shutdown(int period_ms, const std::function<bool()>& every) {
  const sigset_t set = shutdown_set();
  for (;;) {
    timespec ts{period_ms / 1000, static_cast<long>(period_ms % 1000) * 1'000'000L};
    const int sig = sigtimedwait(&set, nullptr, &ts);
    if (sig == SIGINT || sig == SIGTERM) return sig;
    if (sig < 0 && errno != EAGAIN && errno != EINTR) return 0;
    if (every && !every()) return 0;
  }
}

}  // namespace idlefleet::cli
