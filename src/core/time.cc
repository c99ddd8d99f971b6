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

int64_t days_from_civil(int64_t y, int m, int d) {
  y -= m <= 2 ? 1 : 0;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const int64_t yoe = y - era * 400;
  const int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  const int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

CivilDate civil_from_days(int64_t z) {
  z += 719468;
  const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const int64_t doe = z - era * 146097;
  const int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const int64_t mp = (5 * doy + 2) / 153;
  const int d = static_cast<int>(doy - (153 * mp + 2) / 5 + 1);
  const int m = static_cast<int>(mp < 10 ? mp + 3 : mp - 9);
  return {yoe + era * 400 + (m <= 2 ? 1 : 0), m, d};
}

int64_t local_month_index(TimeMs t, int utc_offset_minutes) {
  DCHECK(utc_offset_minutes >= kUtcOffsetMinutesMin && utc_offset_minutes <= kUtcOffsetMinutesMax);
  const int64_t local_minutes = floor_div(t, kMinuteMs) + utc_offset_minutes;
  const CivilDate c = civil_from_days(floor_div(local_minutes, kMinutesPerDay));
  return c.year * 12 + (c.month - 1);
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
