#include "core/time.h"

#include <gtest/gtest.h>

namespace idlefleet::core {
namespace {

TEST(CoreTime, EpochIsThursdayMidnightUtc) {
  const LocalTime lt = to_local(0, 0);
  EXPECT_EQ(lt.weekday, Weekday::kThursday);
  EXPECT_EQ(lt.minute_of_day, 0);
}

TEST(CoreTime, OffsetsAndNegativeTimes) {
  // 2026-11-27T10:00:00Z is a Friday; in Oslo (UTC+1) 11:00.
  const TimeMs t = 1795773600000;
  EXPECT_EQ(to_local(t, 0).weekday, Weekday::kFriday);
  EXPECT_EQ(to_local(t, 0).minute_of_day, 600);
  EXPECT_EQ(to_local(t, 60).minute_of_day, 660);
  EXPECT_EQ(to_local(t, -11 * 60).weekday, Weekday::kThursday);
  EXPECT_EQ(to_local(t, -11 * 60).minute_of_day, 23 * 60);
  // One minute before the epoch: Wednesday 23:59.
  const LocalTime before = to_local(-kMinuteMs, 0);
  EXPECT_EQ(before.weekday, Weekday::kWednesday);
  EXPECT_EQ(before.minute_of_day, 1439);
  EXPECT_TRUE(to_local(t + kDayMs, 0).weekend());
}

TEST(CoreTime, NextLocalMinuteOfWeek) {
  const TimeMs t = 1795773600000;  // Friday 10:00 UTC
  const int monday_7am = 7 * 60;
  const TimeMs next = next_local_minute_of_week(t, 0, monday_7am);
  EXPECT_EQ(to_local(next, 0).weekday, Weekday::kMonday);
  EXPECT_EQ(to_local(next, 0).minute_of_day, 7 * 60);
  EXPECT_GT(next, t);
  EXPECT_LT(next - t, kWeekMs);
  // The same minute: now, if exactly at its start; next week otherwise.
  const int friday_10 = 4 * kMinutesPerDay + 600;
  EXPECT_EQ(next_local_minute_of_week(t, 0, friday_10), t);
  EXPECT_EQ(next_local_minute_of_week(t + 1, 0, friday_10), t + kWeekMs);
}

}  // namespace
}  // namespace idlefleet::core
