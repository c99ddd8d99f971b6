// SimVehicle: a whole car in virtual time, the agent's built-in signal source
// for demos, tests and the many-vehicles-in-one-process mode.
//
// It drives a daily routine (a weekday commute, sometimes a weekend outing),
// parks at home and plugs in (or forgets to), charges with the battery model's
// taper, and heats its AI computer by the utilization the agent reports. It
// emits its state as VSS signal updates, the same (path, text) pairs a real
// gateway sends, so the agent cannot tell it from a car: it has to predict
// departures from what it sees, exactly as on the road.
//
// Determinism: everything follows from the seed and the times passed in. Each
// local day's plan is drawn from counter_random(seed, day_index * kSimDaySlots +
// slot), so any day is the same whatever happened before it and however the
// caller steps; physics is solved in closed form between events (energy.h), so
// stepping a week in 1 s steps or 1 h steps gives the same departures and the
// same state of charge up to rounding. No I/O, no wall clock.
//
// Thread-safety: a plain value with one owner. Not safe for concurrent use,
// not even of const members (signals() fills a cache).
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/result.h"
#include "core/signals.h"
#include "core/time.h"

#include "core/energy.h"

namespace idlefleet::agent {

// ---- Limits and fixed behaviour (units last) ---------------------------------

// The driver opens the door and sits down this long before the gear leaves P.
inline constexpr core::DurationMs kSimBoardingMs = core::kMinuteMs;
// ... and the door is open for the first part of it.
inline constexpr core::DurationMs kSimBoardingDoorOpenMs = 20 * core::kSecondMs;
// After arriving (gear P, speed 0) the driver sits this long, opens the door
// at kSimAlightingDoorOpensMs, leaves the seat at kSimAlightingSeatEmptyMs and
// closes the door at the end; the cable goes in at the end, at home.
inline constexpr core::DurationMs kSimAlightingMs = core::kMinuteMs;
inline constexpr core::DurationMs kSimAlightingDoorOpensMs = 40 * core::kSecondMs;
inline constexpr core::DurationMs kSimAlightingSeatEmptyMs = 50 * core::kSecondMs;
// Each day's departure and return vary uniformly by up to this, in whole minutes.
inline constexpr int kSimScheduleJitterMinutes = 30;
// Parked away (at work, on an outing) at least this long, whatever the params.
inline constexpr core::DurationMs kSimAwayMsMin = 10 * core::kMinuteMs;
// driver_returns(): one drive out and back, with this share of a one-way trip's energy.
inline constexpr core::DurationMs kSimUnplannedDriveMs = 20 * core::kMinuteMs;
inline constexpr double kSimUnplannedTripEnergyShare = 0.5;
// A driver who arrives home below this SoC always plugs in (people do not let
// a car run flat to save a plug-in; keeps long simulations plausible).
inline constexpr double kSimAlwaysPlugInBelowSocPct = 30.0;
// Params bounds (validate()).
inline constexpr double kSimTripEnergyKwhMax = 100.0;
inline constexpr double kSimChargeLimitPctMin = 50.0;
// Draws per local day from counter_random (see the slots in sim_vehicle.cc).
inline constexpr uint64_t kSimDaySlots = 16;

// One day's outing given from outside the car's own routine (see
// SimVehicleParams::outings): local minutes of that day, each after the one
// before (arrive_home may pass midnight by under a day); each way's energy;
// whether the driver plugs in on coming home (always below
// kSimAlwaysPlugInBelowSocPct, as for the routine's outings).
struct SimOuting {
  int leave_home_minute = 0;   // the gear leaves P
  int arrive_away_minute = 0;
  int leave_away_minute = 0;
  int arrive_home_minute = 0;
  double energy_out_kwh = 0.0;
  double energy_back_kwh = 0.0;
  bool plug_in_on_return = true;
};

// Who the car and its owner are. Defaults: a commuter with a 60 kWh car, a
// 7.4 kW home charger and an Orin-class computer.
struct SimVehicleParams {
  uint64_t seed = 1;
  int utc_offset_minutes = 0;
  core::BatteryParams battery;  // battery.charger_power_kw is replaced by charger_power_kw below
  core::AcceleratorParams accelerator = core::orin_like();
  bool home_charger = true;
  double charger_power_kw = 7.4;  // AC at the wall of the home charger
  // Arriving home, how often the driver plugs in (always below kSimAlwaysPlugInBelowSocPct).
  double plug_in_probability = 0.8;
  // The car stops charging here (the charge limit owners set in the car's app;
  // 90%: a common daily setting, above the taper start so the taper shows).
  double charge_limit_pct = 90.0;
  double ambient_c = 18.0;  // outside and garage, constant
  // Typical schedule, local time. Weekdays (Mon-Fri): the gear leaves P around
  // weekday_departure_minute and the car is home again around
  // weekday_return_minute, each +-kSimScheduleJitterMinutes. Weekends: with
  // weekend_trip_probability an outing leaving between 09:00 and 14:00 for
  // one to four hours.
  int weekday_departure_minute = 7 * 60 + 30;
  int weekday_return_minute = 17 * 60 + 45;
  double weekend_trip_probability = 0.6;
  // Per one-way trip; each trip draws 70-130% of it.
  double trip_energy_kwh_mean = 6.0;
  double initial_soc_pct = 70.0;
  // When set, each local day's outing (days since 1970-01-01 in the car's
  // time zone; nullopt: the car stays home that day) comes from here instead
  // of the routine above: the live fleet drives the simulator's own cars this
  // way (`idlefleet sim live`). Must be deterministic (the car may ask for a
  // day more than once). An outing whose times are out of order is ignored
  // (the car stays home that day).
  std::function<std::optional<SimOuting>(int64_t local_day)> outings;
  // Plugged in at the start; nullopt: drawn with plug_in_probability.
  std::optional<bool> initially_plugged;

  // Every field finite and in range, departure before return; the error names the field.
  Status validate() const;
};

class SimVehicle {
 public:
  // The car starts parked at home at `start` (plugged in with
  // plug_in_probability), with the chip at ambient temperature. Planned
  // outings that would have begun before `start` are skipped.
  // REQUIRES: params.validate() ok; start within [0, core::kPlausibleTimeMsMax].
  explicit SimVehicle(SimVehicleParams params, core::TimeMs start);

  // Advances physics to `now` (monotonic; an earlier or equal time changes
  // nothing) with the accelerator drawing accelerator_utilization (0..1) since
  // the last call: battery (charging or discharging, the accelerator's draw
  // included), chip temperature, driving and parking per the schedule.
  // Events inside the interval (departures, arrivals, reaching the charge
  // limit) are handled at their exact times, whatever the step.
  // REQUIRES: accelerator_utilization in [0, 1] (DCHECKed; outside it is
  // clamped and NaN taken as full load); now <= core::kPlausibleTimeMsMax.
  void advance(core::TimeMs now, double accelerator_utilization);

  // Current signals: every signal known, heard_at = the time of the last
  // advance; the values are those of take_updates() (rounded as sent).
  const core::VehicleSignals& signals() const;

  // Signal updates since the last call, as (VSS path, value text) for
  // core::apply_signal, only for values whose text changed (everything on the
  // first call), in SignalId order.
  std::vector<std::pair<std::string, std::string>> take_updates();

  // The driver comes back now, unplanned (advancing to `now` first, at the
  // last utilization; an earlier `now` means the time of the last advance).
  // Parked at home: the door opens, the seat is occupied, the gear leaves P
  // after kSimBoardingMs, a kSimUnplannedDriveMs drive, and the car is home
  // again (plugged in or not, as after any trip). Parked away: the drive home
  // starts now. Already boarding, driving or arriving: nothing changes. A
  // planned outing that would have begun before the unplanned trip ends is
  // skipped.
  void driver_returns(core::TimeMs now);

  // The outside (and garage) temperature becomes `ambient_c` from `now` on
  // (advancing to `now` first, at the last utilization): a heat wave, a hot
  // garage; the chip's temperature then follows it. For fault injection
  // (sim/dst.h). REQUIRES: ambient_c within [core::kAmbientTemperatureCMin,
  // core::kAmbientTemperatureCMax] (clamped, DCHECKed).
  void set_ambient_c(core::TimeMs now, double ambient_c);

  // When the gear will next leave P per the car's own plan (the unplanned
  // trip included once it has begun), at or after `now`. For tests: the agent
  // does not get to see this; it predicts.
  std::optional<core::TimeMs> next_planned_departure(core::TimeMs now) const;

  // The departures an owner would declare for this routine: the weekday
  // departure minute on Monday to Friday, local minute of week, strictly
  // increasing (for core::OwnerPolicy::departures_minute_of_week).
  std::vector<int> declared_departures_minute_of_week() const;

  double accelerator_temp_c() const { return temp_c_; }
  double soc_pct() const { return soc_pct_; }
  bool plugged_in() const { return plugged_in_; }
  core::TimeMs now() const { return now_; }
  const SimVehicleParams& params() const { return params_; }

 private:
  enum class Phase : int { kHome = 0, kBoarding, kDriving, kAlighting, kParkedAway };

  // One stretch of an outing, [start_at, end_at).
  struct Leg {
    Phase phase = Phase::kHome;
    core::TimeMs start_at = 0;
    core::TimeMs end_at = 0;
    double drive_kw = 0.0;        // kDriving: the trip's energy spread over the drive
    double speed_kmh = 0.0;       // kDriving: typical speed; varies by the minute around it
    uint64_t speed_seed = 0;      // kDriving: keys the per-minute variation
  };

  // A round trip from home: boarding, driving, alighting (and, with a stop,
  // parked away, boarding, driving, alighting), ending parked at home.
  struct Outing {
    std::vector<Leg> legs;
    bool plug_in_on_return = false;  // the driver's draw, before the low-SoC rule
  };

  int64_t local_day(core::TimeMs t) const;
  core::TimeMs local_midnight(int64_t day) const;
  double day_draw(int64_t day, uint64_t slot) const;
  Leg drive_leg(core::TimeMs start_at, core::TimeMs end_at, double energy_kwh, double speed_u,
                uint64_t speed_seed) const;
  std::optional<Outing> planned_outing(int64_t day) const;
  // The first planned outing that boards at or after board_min and leaves at or after depart_min.
  std::optional<Outing> find_planned(core::TimeMs board_min, core::TimeMs depart_min) const;

  void settle();
  core::TimeMs next_event_at() const;
  void integrate(core::TimeMs to);
  const Leg* current_leg() const;
  void refresh_signals() const;

  SimVehicleParams params_;
  core::BatteryParams battery_;  // params_.battery with the home charger's power
  core::TimeMs now_;
  double utilization_ = 0.0;  // of the last advanced interval
  double accelerator_w_ = 0.0;  // its power draw (computed once: DCHECKed validation is not free)
  double soc_pct_;
  double temp_c_;
  bool plugged_in_ = false;
  std::optional<Outing> outing_;       // in progress
  size_t leg_ = 0;                     // index into outing_->legs
  std::optional<Outing> next_planned_; // the next one to begin, cached
  core::TimeMs plan_resume_at_;        // planned outings boarding earlier are skipped

  // signals() and take_updates() are derived lazily from the state above.
  mutable bool signals_stale_ = true;
  mutable core::VehicleSignals signals_;
  mutable std::array<std::string, core::kSignalCount> texts_;
  std::array<std::string, core::kSignalCount> sent_texts_;
};

}  // namespace idlefleet::agent
