#include "core/time.h"

#include "common/check.h"

namespace idlefleet::core {

namespace {
// 1970-01-01 was a Thursday: Monday-first index 3.
constexpr int64_t kEpochWeekday = 3;

int64_t floor_div(int64_t a, int64_t b) { return a / b - ((a % b != 0) && ((a < 0) != (b < 0))); }
}  // namespace

LocalTime to_local(TimeMs t, int utc_offset_minutes) {
  DCHECK(utc_offset_minutes >= kUtcOffsetMinutesMin && utc_offset_minutes <= kUtcOffsetMinutesMax);
  const int64_t local_minutes = floor_div(t, kMinuteMs) + utc_offset_minutes;
  const int64_t day = floor_div(local_minutes, kMinutesPerDay);
  LocalTime lt;
  lt.minute_of_day = static_cast<int>(local_minutes - day * kMinutesPerDay);
  lt.weekday = static_cast<Weekday>(static_cast<int>(((day + kEpochWeekday) % 7 + 7) % 7));
  return lt;
}

TimeMs next_local_minute_of_week(TimeMs t, int utc_offset_minutes, int minute_of_week) {
  DCHECK(minute_of_week >= 0 && minute_of_week < kMinutesPerWeek);
  const TimeMs minute_start = floor_div(t, kMinuteMs) * kMinuteMs;
  const int now_mow = to_local(minute_start, utc_offset_minutes).minute_of_week();
  int ahead = minute_of_week - now_mow;
  if (ahead < 0) ahead += kMinutesPerWeek;
  TimeMs result = minute_start + ahead * kMinuteMs;
  if (result < t) result += kWeekMs;  // t was inside that very minute, past its start
  return result;
}

}  // namespace idlefleet::core
