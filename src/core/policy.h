// The owner's policy and the eligibility decision: may this car work now?
//
// An owner sets limits (SoC floor and target, departures, allowed hours, a
// price cap, a temperature limit, a wear budget, opt-in); decide_eligibility
// applies them to the vehicle's signals at a given instant and answers yes or
// no with every reason that fails, each phrased for the owner, so a dashboard
// can say why a car is or is not working. The agent calls it before and during
// every job (the car is the final authority over itself); the simulator calls
// it for millions of simulated vehicles, so it is pure and allocation-light.
//
// Rules where the design leaves room (see decide_eligibility for the full list):
//  - SoC floor: a hard limit, plugged in or not: eligible only while
//    SoC > floor. Being plugged in does not waive the floor; it only lets the
//    charger pay for the inference draw in the target check.
//  - Target SoC: with p_net_kw = (plugged in ? charge_power_kw : 0) - inference_power_kw
//    and h the hours from now until (next departure - margin), eligible only if
//      soc_pct + 100 * p_net_kw * h / battery_capacity_kwh >= target_soc_pct,
//    i.e. serving for the whole time left must still leave the target at the
//    deadline. On battery p_net is negative, so serving may only spend charge
//    above what the owner needs; there h runs to the departure itself, not
//    the deadline: the car keeps drawing its own standby power through the
//    margin, and the target is wanted when it leaves (inference_power_kw,
//    which includes keeping the car awake, bounds that draw); and on battery
//    the projection must also keep trip_reserve_pct above the target, for
//    undeclared driving before the departure. With no departure known, no
//    target check (the floor still protects the battery).
//  - Inside the margin before a departure, not eligible at all.
//  - Unknown signals are never assumed: a missing or stale value is a reason.
//
// Thread-safety: plain values and pure functions; no shared state.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"
#include "core/signals.h"
#include "core/time.h"

namespace idlefleet::core {

// Limits on an owner's policy, so a policy from an app or a config file is
// bounded like any other input.
inline constexpr size_t kDeparturesMax = 64;            // several a day, every day
inline constexpr size_t kAllowedWindowsMax = 64;
inline constexpr size_t kTariffEntriesPerDayMax = 48;   // half-hourly prices
inline constexpr double kPolicyPctMin = 0.0;
inline constexpr double kPolicyPctMax = 100.0;
inline constexpr DurationMs kDepartureMarginMsMax = kDayMs;
inline constexpr double kAcceleratorTempLimitCMin = 0.0;
inline constexpr double kAcceleratorTempLimitCMax = 125.0;  // silicon's own ceiling
// 1000 currency units per kWh, in micro-units: no real tariff comes near.
inline constexpr int64_t kPriceMicrosPerKwhAbsMax = 1'000'000'000;
inline constexpr double kWearBudgetHoursMax = 10'000.0;  // weighted hours exceed wall hours when hot

// Limits on the vehicle facts that come with a decision.
inline constexpr double kBatteryCapacityKwhMax = 500.0;
inline constexpr double kChargePowerKwMax = 1000.0;
inline constexpr double kInferencePowerKwMax = 10.0;
inline constexpr double kWearUsedHoursMax = 100'000.0;
inline constexpr DurationMs kSignalAgeMsMaxDefault = 2 * kMinuteMs;
inline constexpr DurationMs kSignalAgeMsMaxLimit = kHourMs;

// A window of allowed local time, [start, end) in minutes of the week
// (Monday 00:00 = 0, kMinutesPerWeek = 10080). A window across Sunday
// midnight is written as two windows, which keeps the list sortable.
struct WeeklyWindow {
  int start_minute_of_week = 0;
  int end_minute_of_week = kMinutesPerWeek;
};

// From this local minute of the day on, this price applies (until the next entry).
struct TariffEntry {
  int start_minute_of_day = 0;
  int64_t price_micros_per_kwh = 0;  // micro-units of the owner's currency; may be negative (dynamic tariffs)
};

// What the owner pays for electricity at home, local time.
struct Tariff {
  enum class Kind : int { kFlat = 0, kTimeOfUse };
  Kind kind = Kind::kFlat;
  int64_t flat_micros_per_kwh = 0;
  // Time-of-use: strictly increasing start minutes, the first at 0 so that
  // every minute has a price; 1..kTariffEntriesPerDayMax entries each.
  std::vector<TariffEntry> weekday;  // Monday to Friday
  std::vector<TariffEntry> weekend;  // Saturday and Sunday

  static Tariff flat(int64_t micros_per_kwh);
  static Tariff time_of_use(std::vector<TariffEntry> weekday, std::vector<TariffEntry> weekend);

  Status validate() const;
};

// The price in force at a local time, micro-units per kWh.
// REQUIRES: tariff.validate() succeeded.
int64_t price_at(const Tariff& tariff, LocalTime local);

// An owner's limits for one vehicle. The defaults are what an owner gets by
// opting in and changing nothing.
struct OwnerPolicy {
  // Off until the owner says yes: opting in is an act, never a default.
  bool opted_in = false;
  // Never serve at or below this SoC: the car keeps this much for surprises.
  double soc_floor_pct = 30.0;
  // The SoC the owner wants at every departure (what most makers recommend
  // for daily charging).
  double target_soc_pct = 80.0;
  // Declared weekly departures, local minute of week, strictly increasing.
  std::vector<int> departures_minute_of_week;
  // Stop this long before a departure, so the car is idle and cool.
  DurationMs departure_margin_ms = 30 * kMinuteMs;
  // Stop at or above this accelerator temperature (below the ~95-105 °C at
  // which automotive AI computers throttle).
  double accelerator_temp_limit_c = 85.0;
  // Local hours when work is allowed; default: the whole week. Empty: never.
  // Sorted by start, non-overlapping, each start < end.
  std::vector<WeeklyWindow> allowed_windows = {WeeklyWindow{}};
  // Do not work while electricity costs more than this; no cap by default.
  std::optional<int64_t> price_cap_micros_per_kwh;
  // The owner's home tariff (flat 0 until they enter it).
  Tariff tariff;
  // Accelerator-hours per calendar month, weighted by temperature (energy.h).
  double wear_budget_hours_per_month = 300.0;

  Status validate() const;
};

// The next declared departure at or after now, or nullopt if none declared.
// REQUIRES: policy valid, utc_offset_minutes in range.
std::optional<TimeMs> next_declared_departure(const OwnerPolicy& policy, TimeMs now, int utc_offset_minutes);

// Everything a decision needs besides the instant.
struct EligibilityInputs {
  VehicleSignals signals;
  OwnerPolicy policy;
  int utc_offset_minutes = 0;  // the owner's local time zone now
  double battery_capacity_kwh = 60.0;
  // Net power into the battery when plugged in (after charger losses and the
  // car's own loads, before ours).
  double charge_power_kw = 7.0;
  // The accelerator's draw while serving, including keeping the car awake.
  double inference_power_kw = 0.4;
  double wear_used_hours = 0.0;  // this calendar month, weighted
  // On battery, charge kept beyond the target for driving the owner did not
  // declare before the next declared departure (the drive home from work):
  // energy spent on battery is not replaced until the car charges, so without
  // it serving at work could leave tomorrow's commute short. The agent sets it
  // from the car's own recent drives (AgentMachine).
  double trip_reserve_pct = 0.0;
  // From a predictor; the earlier of this and the next declared departure
  // counts. A departure before `now` is ignored (it has passed).
  std::optional<TimeMs> next_departure;
  // Signals older than this (since signals.heard_at) are stale.
  DurationMs signal_age_ms_max = kSignalAgeMsMaxDefault;

  // Checks the policy, the signals and every number here.
  Status validate() const;
};

// Why a car may not work. Numbers are stable: they appear in reports.
enum class ReasonCode : int {
  kInvalidInputs = 1,      // the policy, signals or vehicle facts are invalid; nothing else is judged
  kOptedOut = 2,
  kSignalsMissing = 3,     // a signal the decision needs has not arrived
  kSignalsStale = 4,       // the feed has not been heard from recently (or never)
  kNotParked = 5,          // moving, or gear not in P
  kOccupied = 6,           // driver's seat occupied
  kDoorOpen = 7,           // driver's door open
  kSocAtOrBelowFloor = 8,
  kTargetUnreachable = 9,  // serving would leave less than the target at the next departure
  kDepartureSoon = 10,     // inside the margin before the next departure
  kAcceleratorTooHot = 11,
  kOutsideAllowedHours = 12,
  kPriceAboveCap = 13,
  kWearBudgetUsed = 14,
};

// "opted_out", "soc_at_or_below_floor", ...: for metrics and logs.
const char* reason_code_name(ReasonCode code);

struct EligibilityReason {
  ReasonCode code;
  std::string text;  // for the owner: "battery 28% is at or below your floor of 30%"
};

struct EligibilityDecision {
  bool eligible = false;
  std::vector<EligibilityReason> reasons;  // empty exactly when eligible, in ReasonCode order

  bool has(ReasonCode code) const;
};

// Decides whether the car may work at `now`, listing every failing reason.
// Invalid inputs give only kInvalidInputs (its text is the validation error).
// Missing or stale signals give kSignalsMissing / kSignalsStale, and the
// checks that need those signals are skipped (not reported twice); checks
// that do not need them (opt-in, hours, price, wear) are still reported.
EligibilityDecision decide_eligibility(const EligibilityInputs& inputs, TimeMs now);

// One line for an owner: "eligible", or the reasons joined by "; ".
std::string format_reasons(const EligibilityDecision& decision);
std::string format_reasons(const std::vector<EligibilityReason>& reasons);

}  // namespace idlefleet::core
