// CHECK and DCHECK: assertions on our own invariants (never on external input,
// which is validated and answered with an Error).
//
// CHECK is always on: use it where a breach would corrupt state or money.
// DCHECK compiles away in release builds (NDEBUG).
#pragma once

#include <cstdio>
#include <cstdlib>

namespace idlefleet::detail {
[[noreturn]] inline void check_failed(const char* expr, const char* file, int line) {
  std::fprintf(stderr, "CHECK failed: %s at %s:%d\n", expr, file, line);
  std::abort();
}
}  // namespace idlefleet::detail

#define CHECK(cond) \
  ((cond) ? (void)0 : ::idlefleet::detail::check_failed(#cond, __FILE__, __LINE__))

#ifdef NDEBUG
#define DCHECK(cond) ((void)0)
#else
#define DCHECK(cond) CHECK(cond)
#endif
