#include "core/time.h"

#include <gtest/gtest.h>

namespace idlefleet::core::time_test {
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
TEST(Calendar, DaysAndDatesRoundTripAcrossLeapYearsAndBeforeTheEpoch) {
  EXPECT_EQ(days_from_civil(1970, 1, 1), 0);
  EXPECT_EQ(days_from_civil(2000, 3, 1), 11017);
  EXPECT_EQ(days_from_civil(1969, 12, 31), -1);
  for (int64_t d = -800000; d <= 800000; d += 37) {
    const CivilDate c = civil_from_days(d);
    ASSERT_GE(c.month, 1);
    ASSERT_LE(c.month, 12);
    ASSERT_GE(c.day, 1);
    ASSERT_LE(c.day, 31);
    ASSERT_EQ(days_from_civil(c.year, c.month, c.day), d);
  }
  const CivilDate leap = civil_from_days(days_from_civil(2028, 2, 29));
  EXPECT_EQ(leap.year, 2028);
  EXPECT_EQ(leap.month, 2);
  EXPECT_EQ(leap.day, 29);
  // The local month: 23:30 UTC on 30 April is May in UTC+01:00.
  const TimeMs t = days_from_civil(2026, 4, 30) * kDayMs + 23 * kHourMs + 30 * kMinuteMs;
  EXPECT_EQ(local_month_index(t, 0), 2026 * 12 + 3);
  EXPECT_EQ(local_month_index(t, 60), 2026 * 12 + 4);
  EXPECT_EQ(local_month_index(days_from_civil(2026, 1, 1) * kDayMs, -60), 2025 * 12 + 11);
}

}  // namespace idlefleet::core::time_test
