// Departure prediction: when will a parked car leave?
//
// The scheduler places a job on a parked car only if the car will likely stay
// long enough, and the car must stop before its driver drives off. This module
// answers "given that this car arrived at `arrived` and is still parked at
// `now`, when will it leave?" with a conservative early quantile, a median and
// a late quantile.
//
// Two sources are blended:
//  - DeparturePrior: what people in general do, built at run time from the
//    Trondheim home-charging sessions (../shared/data, read by the caller and
//    handed in as text), or a small built-in parametric prior when the data is
//    absent. For each plug-in day type (weekday, weekend) and plug-in hour
//    (0..23) it holds the sorted connected durations of that bucket.
//  - DeparturePredictor: one vehicle's own recent stays (a bounded ring), which
//    for a regular commuter quickly outweighs the prior.
//
// No I/O: time comes in as TimeMs, text as std::string_view.
// Thread-safety: DeparturePrior is immutable after construction and may be
// shared by any number of threads; a DeparturePredictor is a plain value (one
// writer, or external synchronisation).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/random.h"
#include "common/result.h"
#include "core/time.h"

namespace idlefleet::core {

// ---- Limits (units last) ------------------------------------------------------

// The sessions file is about 0.6 MB; anything far larger is not that file.
inline constexpr size_t kSessionsCsvBytesMax = 16u << 20;
// A sessions line is about 90 bytes; longer lines are rejected (counted).
inline constexpr size_t kCsvLineBytesMax = 1024;
inline constexpr size_t kCsvFieldsMax = 64;
inline constexpr size_t kSessionsLinesMax = 200'000;
// Fewer accepted sessions than this is too little to build a prior from.
inline constexpr size_t kPriorSessionsMin = 50;
// More rejected data lines than this share of all data lines fails the file:
// it is probably not the sessions file, or it is badly damaged.
inline constexpr size_t kRejectedPercentMax = 10;
// How many reject reasons are kept, for people, in PriorStats.
inline constexpr size_t kRejectExamplesMax = 8;
// Longest connected time accepted as a session (two weeks); the data's
// longest is 255 h.
inline constexpr int32_t kConnectedMinutesMax = 14 * kMinutesPerDay;
// Each (day type, hour) bucket of the prior is widened to neighbouring hours
// until it holds at least this many sessions (night hours are sparse).
inline constexpr size_t kPooledSamplesMin = 50;
// Samples per bucket of the built-in prior.
inline constexpr size_t kBuiltinSamplesPerBucket = 64;

// A vehicle remembers its last kHistoryEventsMax stays, and uses those that
// began within kHistoryAgeMs before the stay being predicted.
inline constexpr size_t kHistoryEventsMax = 256;
inline constexpr DurationMs kHistoryAgeMs = 8 * kWeekMs;
// Own stays count as "the same situation" when they arrived within this many
// minutes of the same local time of day, in the same DayClass.
inline constexpr int kOwnWindowMinutes = 120;
// The prior weighs as much as this many own stays: own weight n / (n + k).
// One: a single own stay in the same situation already counts as much as the
// whole population, because one person's routine is far narrower than a
// crowd's (two Fridays are enough to learn a Friday).
inline constexpr double kPriorPseudoSamples = 1.0;
// The quantiles a Prediction reports.
inline constexpr double kEarliestQuantile = 0.10;
inline constexpr double kMedianQuantile = 0.50;
inline constexpr double kLatestQuantile = 0.90;
// When the car has already stayed longer than every stay either source has
// seen, nothing is known: it may leave at any moment (earliest = now), with
// these offsets from now for the median and the late quantile.
inline constexpr DurationMs kUnknownTailMedianMs = kHourMs;
inline constexpr DurationMs kUnknownTailLatestMs = 4 * kHourMs;

// ---- The prior ----------------------------------------------------------------

// What the sessions file says, for the calibration check and for people.
// Durations are the Duration_hours column (or End_plugout - Start_plugin where
// that column is absent or NA); quantiles interpolate linearly between order
// statistics (numpy's default). Hours are local wall-clock hours.
struct PriorStats {
  size_t sessions_accepted = 0;
  size_t weekend_sessions = 0;       // plug-in on Saturday or Sunday
  size_t data_lines = 0;             // non-empty lines after the header
  size_t lines_rejected = 0;
  std::vector<std::string> reject_examples;  // the first kRejectExamplesMax reasons
  double duration_hours_mean = 0;
  double duration_hours_p10 = 0;
  double duration_hours_p50 = 0;
  double duration_hours_p90 = 0;
  double share_longer_than_8h = 0;   // 0..1
  std::array<uint32_t, 24> plugin_hour_counts{};
  std::array<uint32_t, 24> plugout_hour_counts{};
  double plugin_share_15_to_21 = 0;  // plug-ins from 15:00 to 21:59, 0..1
  double plugout_share_6_to_9 = 0;   // plug-outs from 06:00 to 09:59, 0..1
  int plugin_peak_hour = 0;
  int plugout_peak_hour = 0;
};

class DeparturePrior {
 public:
  // Builds the prior from the text of
  // residential_apartment_ev_sessions_trondheim.csv. Format: one header line,
  // then one session per line; fields separated by ';'; decimal comma in
  // numbers; dates "dd.mm.yyyy hh:mm" in local time; lines end in "\n" or
  // "\r\n"; an optional UTF-8 BOM. Columns are found by header name:
  // Start_plugin is required, and End_plugout or Duration_hours (both in the
  // real file; Duration_hours wins for the duration, End_plugout gives the
  // plug-out hour). A malformed line (wrong field count, bad date or number,
  // "NA", negative or over-long duration, control bytes, over
  // kCsvLineBytesMax) is rejected and counted; the whole text fails only when
  // the header is wrong, a limit is exceeded, more than kRejectedPercentMax %
  // of data lines are rejected, or fewer than kPriorSessionsMin remain.
  static Result<DeparturePrior> from_trondheim_csv(std::string_view csv_text);

  // The fallback when the data is absent: a parametric prior, not data. With
  // the plug-in at the middle of the bucket's hour:
  //  - plug-in 15:00-04:59: 70% stay the night and leave the next morning
  //    (the same morning for 00-04h), uniformly 06:30-08:30 on weekdays and
  //    08:00-12:00 on weekends; 30% leave after 0.5-3 h (a top-up);
  //  - plug-in 05:00-14:59 on a weekday: 50% stay the working day and leave
  //    uniformly 16:00-18:00, 50% leave after 0.5-4 h;
  //  - plug-in 05:00-14:59 on a weekend: leave after 0.5-6 h.
  // Each bucket holds kBuiltinSamplesPerBucket evenly spaced quantiles.
  static DeparturePrior builtin();

  // The sorted connected durations (minutes) the prior uses for a plug-in on
  // this day type and local hour, pooled with neighbouring hours up to
  // kPooledSamplesMin. Never empty.
  // REQUIRES: 0 <= hour < 24.
  std::span<const int32_t> durations_minutes(bool weekend, int hour) const;

  // A connected duration drawn from the bucket, for simulators.
  // REQUIRES: 0 <= hour < 24.
  int32_t sample_duration_minutes(bool weekend, int hour, Rng& rng) const;

  // What the data said (all zero for the built-in prior, except that
  // sessions_accepted counts its synthetic samples).
  const PriorStats& stats() const { return stats_; }
  bool is_builtin() const { return builtin_; }

 private:
  DeparturePrior() = default;
  static int bucket_index(bool weekend, int hour) { return (weekend ? 24 : 0) + hour; }

  std::array<std::vector<int32_t>, 48> pooled_;  // [weekend * 24 + hour], sorted minutes
  PriorStats stats_;
  bool builtin_ = false;
};

// ---- One vehicle --------------------------------------------------------------

// Own stays are compared within a class of arrival day chosen by what the next
// morning is, since overnight departures are set by it: Monday-Thursday
// (weekday, then weekday), Friday (weekday, then weekend), Saturday (weekend,
// then weekend) and Sunday (weekend, then weekday).
enum class DayClass : uint8_t { kMondayToThursday = 0, kFriday, kSaturday, kSunday };
DayClass day_class(Weekday weekday);

struct Prediction {
  TimeMs earliest_likely = 0;  // kEarliestQuantile of departure, given parked at now; >= now
  TimeMs median = 0;           // kMedianQuantile; >= earliest_likely
  TimeMs latest_likely = 0;    // kLatestQuantile; >= median
  int own_samples = 0;         // own matching stays (before conditioning on now)
  int prior_samples = 0;       // stays in the prior's bucket (before conditioning)
  // How much of the blended distribution (after conditioning on now) comes
  // from the vehicle's own stays: 0 = the prior only, 1 = own history only.
  // The scheduler may read it as a confidence.
  double own_weight = 0;
};

// A vehicle's departure predictor: its own last stays and the blending rule.
//
// predict() builds the distribution of the connected duration D as a mixture
//   w0 * Own + (1 - w0) * Prior,  w0 = n / (n + kPriorPseudoSamples),
// where Own is the empirical distribution of the n own stays in the same
// DayClass that arrived within kOwnWindowMinutes of the same local time of day
// (and within kHistoryAgeMs before `arrived`), and Prior is the prior's bucket
// for the arrival's day type and hour. Own stays are anchored to their
// departure's clock time: a stay that arrived 40 min earlier in the day than
// this one counts as 40 min shorter, because commuters leave at a fixed time,
// not after a fixed duration (if that would end before this arrival, the
// stay's plain duration is used). The mixture is then conditioned on D > now -
// arrived: each part is truncated and the weights become
//   w = w0 * S_own / (w0 * S_own + (1 - w0) * S_prior)
// with S the share of each part's stays longer than the elapsed time. Because
// this is exact conditioning of one fixed distribution, a later `now` never
// gives an earlier prediction, and every quantile is after `now`.
class DeparturePredictor {
 public:
  // Records a finished stay (parked, or plugged in). Rejects departed <
  // arrived, stays over kConnectedMinutesMax (not recorded: a holiday says
  // nothing about the daily routine) and offsets outside the valid range.
  // Keeps the last kHistoryEventsMax stays.
  Status observe(TimeMs arrived, TimeMs departed, int utc_offset_minutes);

  // Predicts the departure of the stay that began at `arrived`, still parked
  // at `now` (a `now` before `arrived` is read as `arrived`: clocks disagree).
  // Fails only on an invalid utc_offset_minutes.
  Result<Prediction> predict(TimeMs arrived, TimeMs now, int utc_offset_minutes,
                             const DeparturePrior& prior) const;

  size_t history_size() const { return stays_.size(); }

 private:
  struct Stay {
    TimeMs arrived = 0;
    int32_t duration_minutes = 0;
    int16_t arrival_minute_of_day = 0;  // local
    DayClass day_class = DayClass::kMondayToThursday;
  };
  std::vector<Stay> stays_;  // a ring once full: next_ is the oldest
  size_t next_ = 0;
};

}  // namespace idlefleet::core
