// A flood of one kind of refusal is limited; other kinds still get through.
#include "common/log_limiter.h"

#include <gtest/gtest.h>

namespace idlefleet::log_limiter_test {
namespace {

TEST(LogLimiter, LimitsAFloodPerKeyAndCountsWhatItDropped) {
  LogLimiter l;
  int allowed = 0;
  for (int i = 0; i < 100; ++i) allowed += l.allow("stale_message", 1000 + i) ? 1 : 0;
  EXPECT_EQ(allowed, LogLimiter::kLinesPerWindow);
  EXPECT_TRUE(l.allow("malformed_message", 1100));  // another key is not held back
  uint64_t dropped = 0;
  EXPECT_TRUE(l.allow("stale_message", 1000 + LogLimiter::kWindowMs, &dropped));
  EXPECT_EQ(dropped, 100u - LogLimiter::kLinesPerWindow);
}

TEST(LogLimiter, BoundsTheKeysItTracks) {
  LogLimiter l;
  for (size_t i = 0; i < LogLimiter::kKeysMax * 3; ++i) l.allow("key" + std::to_string(i), 0);
  // Still answers, and unknown keys now share one budget.
  int allowed = 0;
  for (int i = 0; i < 50; ++i) allowed += l.allow("fresh" + std::to_string(i), 1) ? 1 : 0;
  EXPECT_LE(allowed, LogLimiter::kLinesPerWindow);
}

}  // namespace
}  // namespace idlefleet::log_limiter_test
