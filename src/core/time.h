// Time in the core: plain integers, given as inputs, never read from a clock.
//
// The core never asks what time it is: every decision takes `now` as an
// argument (TimeMs, milliseconds since the Unix epoch, UTC), so simulations and
// tests run the real logic on a simulated clock. Owners think in local wall
// time (allowed hours, tariffs, departures), so a vehicle carries its UTC
// offset and these helpers turn a TimeMs into local day-of-week and minute.
//
// Thread-safety: pure functions and values.
#pragma once

#include <cstdint>

namespace idlefleet::core {

using TimeMs = int64_t;     // milliseconds since 1970-01-01T00:00:00Z
using DurationMs = int64_t;

inline constexpr DurationMs kSecondMs = 1000;
inline constexpr DurationMs kMinuteMs = 60 * kSecondMs;
inline constexpr DurationMs kHourMs = 60 * kMinuteMs;
inline constexpr DurationMs kDayMs = 24 * kHourMs;
inline constexpr DurationMs kWeekMs = 7 * kDayMs;
inline constexpr int kMinutesPerDay = 24 * 60;
inline constexpr int kMinutesPerWeek = 7 * kMinutesPerDay;
// Local offsets from UTC span -12:00 to +14:00.
inline constexpr int kUtcOffsetMinutesMin = -12 * 60;
inline constexpr int kUtcOffsetMinutesMax = 14 * 60;

// Days of the week, Monday first (ISO 8601).
enum class Weekday : int { kMonday = 0, kTuesday, kWednesday, kThursday, kFriday, kSaturday, kSunday };

// A local wall-clock position within the week.
struct LocalTime {
  Weekday weekday = Weekday::kMonday;
  int minute_of_day = 0;   // 0 .. 1439
  int minute_of_week() const { return static_cast<int>(weekday) * kMinutesPerDay + minute_of_day; }
  bool weekend() const { return weekday == Weekday::kSaturday || weekday == Weekday::kSunday; }
};

// REQUIRES: utc_offset_minutes within [kUtcOffsetMinutesMin, kUtcOffsetMinutesMax].
LocalTime to_local(TimeMs t, int utc_offset_minutes);

// The proleptic Gregorian calendar: days since 1970-01-01 of a date, and back
// (H. Hinnant's algorithms). month 1..12, day 1..31.
struct CivilDate {
  int64_t year = 1970;
  int month = 1;
  int day = 1;
};
int64_t days_from_civil(int64_t year, int month, int day);
CivilDate civil_from_days(int64_t days);

// The local calendar month of `t`, as year * 12 + (month - 1): what a monthly
// budget counts within. REQUIRES: the offset within range.
int64_t local_month_index(TimeMs t, int utc_offset_minutes);

// The first instant at or after `t` whose local minute of week is
// `minute_of_week` (0 .. kMinutesPerWeek - 1).
TimeMs next_local_minute_of_week(TimeMs t, int utc_offset_minutes, int minute_of_week);

}  // namespace idlefleet::core
