#include "agent/sim_vehicle.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

#include "common/check.h"
#include "common/random.h"

namespace idlefleet::agent {

namespace {

using core::DurationMs;
using core::TimeMs;

// What each draw of a local day decides: counter_random(seed, day * kSimDaySlots + slot).
enum DaySlot : uint64_t {
  kSlotDepartJitter = 0,
  kSlotReturnJitter,
  kSlotDriveOut,
  kSlotDriveBack,
  kSlotEnergyOut,
  kSlotEnergyBack,
  kSlotSpeedOut,
  kSlotSpeedBack,
  kSlotSpeedSeedOut,
  kSlotSpeedSeedBack,
  kSlotWeekendTrip,
  kSlotWeekendStart,
  kSlotWeekendStay,
  kSlotPlugIn,
  kSlotCount,
};
static_assert(kSlotCount <= kSimDaySlots, "a day's draws would overlap the next day's");

// Draws not tied to a planned day come from their own streams (seed mixed
// with a salt), keyed by the time they happen, so they too are independent of
// the step size and of each other.
constexpr uint64_t kStartSalt = 0x5354415254ULL;          // "START": plugged in at the start?
constexpr uint64_t kUnplannedSalt = 0x554e504c414eULL;    // "UNPLAN": driver_returns() trips

// A commute drive takes 15-45 min; a weekend drive 10-60 min; a weekend
// outing leaves between 09:00 and 14:00 and stays one to four hours.
constexpr int kCommuteDriveMinutesMin = 15;
constexpr int kCommuteDriveMinutesMax = 45;
constexpr int kWeekendDriveMinutesMin = 10;
constexpr int kWeekendDriveMinutesMax = 60;
constexpr int kWeekendStartMinuteMin = 9 * 60;
constexpr int kWeekendStartMinuteMax = 14 * 60;
constexpr int kWeekendStayMinutesMin = 60;
constexpr int kWeekendStayMinutesMax = 4 * 60;
// A trip draws 70-130% of trip_energy_kwh_mean.
constexpr double kTripEnergyShareMin = 0.7;
constexpr double kTripEnergyShareSpan = 0.6;
// A drive's typical speed is 30-90 km/h, and each minute varies 80-120% around it.
constexpr double kDriveSpeedKmhMin = 30.0;
constexpr double kDriveSpeedKmhSpan = 60.0;
constexpr double kMinuteSpeedShareMin = 0.8;
constexpr double kMinuteSpeedShareSpan = 0.4;
// The planned outing for a moment lies at most this many local days ahead
// (weekdays always have one).
constexpr int64_t kPlanSearchDays = 8;
// The charger power signal is the grid power averaged over this probe step.
constexpr DurationMs kChargerPowerProbeMs = core::kSecondMs;

int64_t floor_div(int64_t a, int64_t b) { return a / b - ((a % b != 0) && ((a < 0) != (b < 0))); }

// An integer uniform in [lo, hi] from u in [0, 1).
int uniform_int(double u, int lo, int hi) {
  const int span = hi - lo + 1;
  const int k = static_cast<int>(u * span);
  return lo + std::min(k, span - 1);
}

double unit_draw(uint64_t seed, uint64_t counter) { return to_unit_double(counter_random(seed, counter)); }

std::string format_double(double v) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

// v with `decimals` decimals, clamped into [lo, hi] first (a signal's range,
// so that extreme parameters cannot make a text apply_signal refuses), and
// without a "-0.0" that would look like a change from "0.0".
std::string fixed_text(double v, int decimals, double lo, double hi) {
  v = std::clamp(v, lo, hi);
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  if (buf[0] == '-') {
    bool all_zero = true;
    for (const char* c = buf + 1; *c != '\0'; ++c) all_zero = all_zero && (*c == '0' || *c == '.');
    if (all_zero) std::snprintf(buf, sizeof buf, "%.*f", decimals, 0.0);
  }
  return buf;
}

const char* bool_text(bool v) { return v ? "true" : "false"; }

Status check_range(const char* name, double v, double lo, double hi) {
  if (!std::isfinite(v) || v < lo || v > hi) {
    return Unexpected(std::isfinite(v) && v > hi ? ErrorCode::kOutOfRange : ErrorCode::kInvalidArgument,
                      std::string("sim.") + name + " must be a finite number in [" + format_double(lo) + ", " +
                          format_double(hi) + "], got " + format_double(v));
  }
  return {};
}

Status check_minute(const char* name, int minute) {
  if (minute < 0 || minute >= core::kMinutesPerDay) {
    return Unexpected(ErrorCode::kInvalidArgument, std::string("sim.") + name + " must be a minute of the day in [0, " +
                                                       std::to_string(core::kMinutesPerDay) + "), got " +
                                                       std::to_string(minute));
  }
  return {};
}

}  // namespace

Status SimVehicleParams::validate() const {
  if (utc_offset_minutes < core::kUtcOffsetMinutesMin || utc_offset_minutes > core::kUtcOffsetMinutesMax) {
    return Unexpected(ErrorCode::kInvalidArgument,
                      "sim.utc_offset_minutes must be in [" + std::to_string(core::kUtcOffsetMinutesMin) + ", " +
                          std::to_string(core::kUtcOffsetMinutesMax) + "], got " + std::to_string(utc_offset_minutes));
  }
  // The battery validates the home charger's power, as battery.charger_power_kw.
  core::BatteryParams effective = battery;
  effective.charger_power_kw = charger_power_kw;
  IF_RETURN_IF_ERROR(effective.validate());
  IF_RETURN_IF_ERROR(accelerator.validate());
  IF_RETURN_IF_ERROR(check_range("plug_in_probability", plug_in_probability, 0.0, 1.0));
  IF_RETURN_IF_ERROR(check_range("charge_limit_pct", charge_limit_pct, kSimChargeLimitPctMin, core::kSocPctMax));
  IF_RETURN_IF_ERROR(
      check_range("ambient_c", ambient_c, core::kAmbientTemperatureCMin, core::kAmbientTemperatureCMax));
  IF_RETURN_IF_ERROR(check_minute("weekday_departure_minute", weekday_departure_minute));
  IF_RETURN_IF_ERROR(check_minute("weekday_return_minute", weekday_return_minute));
  if (weekday_return_minute <= weekday_departure_minute) {
    return Unexpected(ErrorCode::kInvalidArgument,
                      "sim.weekday_return_minute (" + std::to_string(weekday_return_minute) +
                          ") must be after sim.weekday_departure_minute (" +
                          std::to_string(weekday_departure_minute) + ")");
  }
  IF_RETURN_IF_ERROR(check_range("weekend_trip_probability", weekend_trip_probability, 0.0, 1.0));
  IF_RETURN_IF_ERROR(check_range("trip_energy_kwh_mean", trip_energy_kwh_mean, 0.0, kSimTripEnergyKwhMax));
  IF_RETURN_IF_ERROR(check_range("initial_soc_pct", initial_soc_pct, core::kSocPctMin, core::kSocPctMax));
  return {};
}

SimVehicle::SimVehicle(SimVehicleParams params, TimeMs start)
    : params_(std::move(params)),
      now_(start),
      soc_pct_(params_.initial_soc_pct),
      temp_c_(params_.ambient_c),
      plan_resume_at_(start) {
  const Status valid = params_.validate();
  CHECK(valid.has_value());
  CHECK(start >= 0 && start <= core::kPlausibleTimeMsMax);
  battery_ = params_.battery;
  battery_.charger_power_kw = params_.charger_power_kw;
  accelerator_w_ = core::accelerator_power_w(params_.accelerator, utilization_);
  plugged_in_ = params_.home_charger &&
                params_.initially_plugged.value_or(
                    unit_draw(mix64(params_.seed ^ kStartSalt), static_cast<uint64_t>(start)) < params_.plug_in_probability);
  next_planned_ = find_planned(start, start);
  settle();
}

// ---- The plan ------------------------------------------------------------------

int64_t SimVehicle::local_day(TimeMs t) const {
  return floor_div(t + params_.utc_offset_minutes * core::kMinuteMs, core::kDayMs);
}

TimeMs SimVehicle::local_midnight(int64_t day) const {
  return day * core::kDayMs - params_.utc_offset_minutes * core::kMinuteMs;
}

double SimVehicle::day_draw(int64_t day, uint64_t slot) const {
  return unit_draw(params_.seed, static_cast<uint64_t>(day) * kSimDaySlots + slot);
}

SimVehicle::Leg SimVehicle::drive_leg(TimeMs start_at, TimeMs end_at, double energy_kwh, double speed_u,
                                      uint64_t speed_seed) const {
  DCHECK(end_at > start_at);
  Leg leg;
  leg.phase = Phase::kDriving;
  leg.start_at = start_at;
  leg.end_at = end_at;
  leg.drive_kw = energy_kwh / (static_cast<double>(end_at - start_at) / static_cast<double>(core::kHourMs));
  leg.speed_kmh = kDriveSpeedKmhMin + kDriveSpeedKmhSpan * speed_u;
  leg.speed_seed = speed_seed;
  return leg;
}

std::optional<SimVehicle::Outing> SimVehicle::planned_outing(int64_t day) const {
  const TimeMs midnight = local_midnight(day);
  const bool weekend = core::to_local(midnight, params_.utc_offset_minutes).weekend();
  auto draw = [&](uint64_t slot) { return day_draw(day, slot); };
  auto minutes = [](int m) { return static_cast<DurationMs>(m) * core::kMinuteMs; };

  TimeMs depart_at = 0;
  DurationMs out_ms = 0;
  DurationMs back_ms = 0;
  TimeMs leave_away_at = 0;
  const std::optional<SimOuting> given = params_.outings ? params_.outings(day) : std::nullopt;
  if (params_.outings) {
    if (!given) return std::nullopt;
    if (!(given->leave_home_minute >= 0 && given->arrive_away_minute > given->leave_home_minute &&
          given->leave_away_minute > given->arrive_away_minute &&
          given->arrive_home_minute > given->leave_away_minute &&
          given->arrive_home_minute < given->leave_home_minute + core::kMinutesPerDay)) {
      return std::nullopt;  // out of order: the car stays home (documented in the header)
    }
    depart_at = midnight + minutes(given->leave_home_minute);
    out_ms = minutes(given->arrive_away_minute - given->leave_home_minute);
    back_ms = minutes(given->arrive_home_minute - given->leave_away_minute);
    leave_away_at = midnight + minutes(given->leave_away_minute);
  } else if (!weekend) {
    const int jitter = kSimScheduleJitterMinutes;
    depart_at = midnight + minutes(params_.weekday_departure_minute +
                                   uniform_int(draw(kSlotDepartJitter), -jitter, jitter));
    const TimeMs home_at = midnight + minutes(params_.weekday_return_minute +
                                              uniform_int(draw(kSlotReturnJitter), -jitter, jitter));
    out_ms = minutes(uniform_int(draw(kSlotDriveOut), kCommuteDriveMinutesMin, kCommuteDriveMinutesMax));
    back_ms = minutes(uniform_int(draw(kSlotDriveBack), kCommuteDriveMinutesMin, kCommuteDriveMinutesMax));
    leave_away_at = home_at - back_ms;
  } else {
    // u < p: never with p = 0, always with p = 1.
    if (!(draw(kSlotWeekendTrip) < params_.weekend_trip_probability)) return std::nullopt;
    depart_at = midnight + minutes(uniform_int(draw(kSlotWeekendStart), kWeekendStartMinuteMin,
                                               kWeekendStartMinuteMax));
    out_ms = minutes(uniform_int(draw(kSlotDriveOut), kWeekendDriveMinutesMin, kWeekendDriveMinutesMax));
    back_ms = minutes(uniform_int(draw(kSlotDriveBack), kWeekendDriveMinutesMin, kWeekendDriveMinutesMax));
    const DurationMs stay_ms =
        minutes(uniform_int(draw(kSlotWeekendStay), kWeekendStayMinutesMin, kWeekendStayMinutesMax));
    leave_away_at = depart_at + out_ms + stay_ms;
  }
  const TimeMs arrive_away_at = depart_at + out_ms;
  // A short day (late departure, early return) still parks a while at the
  // destination, rather than making legs overlap.
  leave_away_at = std::max(leave_away_at, arrive_away_at + kSimAlightingMs + kSimAwayMsMin + kSimBoardingMs);
  const TimeMs home_at = leave_away_at + back_ms;

  auto energy = [&](uint64_t slot) {
    if (given) {
      const double kwh = slot == kSlotEnergyOut ? given->energy_out_kwh : given->energy_back_kwh;
      return std::isfinite(kwh) ? std::clamp(kwh, 0.0, kSimTripEnergyKwhMax) : 0.0;
    }
    return params_.trip_energy_kwh_mean * (kTripEnergyShareMin + kTripEnergyShareSpan * draw(slot));
  };
  auto speed_seed = [&](uint64_t slot) { return counter_random(params_.seed, static_cast<uint64_t>(day) * kSimDaySlots + slot); };

  Outing o;
  o.legs = {
      Leg{Phase::kBoarding, depart_at - kSimBoardingMs, depart_at},
      drive_leg(depart_at, arrive_away_at, energy(kSlotEnergyOut), draw(kSlotSpeedOut), speed_seed(kSlotSpeedSeedOut)),
      Leg{Phase::kAlighting, arrive_away_at, arrive_away_at + kSimAlightingMs},
      Leg{Phase::kParkedAway, arrive_away_at + kSimAlightingMs, leave_away_at - kSimBoardingMs},
      Leg{Phase::kBoarding, leave_away_at - kSimBoardingMs, leave_away_at},
      drive_leg(leave_away_at, home_at, energy(kSlotEnergyBack), draw(kSlotSpeedBack),
                speed_seed(kSlotSpeedSeedBack)),
      Leg{Phase::kAlighting, home_at, home_at + kSimAlightingMs},
  };
  o.plug_in_on_return = given ? given->plug_in_on_return : draw(kSlotPlugIn) < params_.plug_in_probability;
  return o;
}

std::optional<SimVehicle::Outing> SimVehicle::find_planned(TimeMs board_min, TimeMs depart_min) const {
  // Days are searched in order, and a day's outing boards after the previous
  // day's (the jitter is far below a day), so the first match is the earliest.
  // A day's outing may board shortly before its local midnight: start a day early.
  const int64_t first_day = local_day(std::max(board_min, depart_min - kSimBoardingMs)) - 1;
  for (int64_t day = first_day; day <= first_day + kPlanSearchDays; ++day) {
    std::optional<Outing> o = planned_outing(day);
    if (o && o->legs.front().start_at >= board_min && o->legs[1].start_at >= depart_min) return o;
  }
  return std::nullopt;
}

// ---- Time ----------------------------------------------------------------------

const SimVehicle::Leg* SimVehicle::current_leg() const {
  if (!outing_) return nullptr;
  DCHECK(leg_ < outing_->legs.size());
  return &outing_->legs[leg_];
}

// Applies every transition due at now_: legs that have ended, an outing that
// is over (the car is home; the cable goes in or not), an outing that begins
// (the cable comes out before the door opens).
void SimVehicle::settle() {
  for (;;) {
    if (outing_) {
      const std::vector<Leg>& legs = outing_->legs;
      while (leg_ < legs.size() && legs[leg_].end_at <= now_) ++leg_;
      if (leg_ < legs.size()) return;
      plugged_in_ = params_.home_charger &&
                    (outing_->plug_in_on_return || soc_pct_ < kSimAlwaysPlugInBelowSocPct);
      plan_resume_at_ = legs.back().end_at;
      outing_.reset();
      leg_ = 0;
      next_planned_ = find_planned(plan_resume_at_, plan_resume_at_);
      continue;
    }
    if (next_planned_ && next_planned_->legs.front().start_at <= now_) {
      outing_ = std::move(next_planned_);
      next_planned_.reset();
      leg_ = 0;
      plugged_in_ = false;
      continue;
    }
    return;
  }
}

TimeMs SimVehicle::next_event_at() const {
  if (outing_) return outing_->legs[leg_].end_at;
  if (next_planned_) return next_planned_->legs.front().start_at;
  return std::numeric_limits<TimeMs>::max();
}

// Physics from now_ to `to`, inside one leg (or at home), so every input is
// constant and the closed-form steps of energy.h apply exactly.
void SimVehicle::integrate(TimeMs to) {
  const DurationMs dt = to - now_;
  DCHECK(dt > 0);
  const Leg* leg = current_leg();
  const bool driving = leg != nullptr && leg->phase == Phase::kDriving;
  const double load_kw = accelerator_w_ / 1000.0 + (driving ? leg->drive_kw : 0.0);
  const bool plugged = plugged_in_ && !outing_;
  const double dc_kw = battery_.charger_power_kw * battery_.charge_efficiency;
  const double limit = params_.charge_limit_pct;

  if (plugged && load_kw <= dc_kw) {
    // The charger serves the load and charges up to the limit, then holds
    // there (the car stops charging; the charger still carries the load).
    if (soc_pct_ < limit) {
      const DurationMs to_limit = core::time_to_reach(battery_, soc_pct_, limit, load_kw);
      if (to_limit != core::kDurationUnreachable && dt >= to_limit) {
        soc_pct_ = limit;
      } else {
        soc_pct_ = std::min(limit, core::step_battery(battery_, core::BatteryState{soc_pct_}, true, load_kw, dt)
                                       .state.soc_pct);
      }
    }
  } else {
    soc_pct_ = core::step_battery(battery_, core::BatteryState{soc_pct_}, plugged, load_kw, dt).state.soc_pct;
  }
  temp_c_ = core::step_thermal(params_.accelerator, core::AcceleratorState{temp_c_}, accelerator_w_,
                               params_.ambient_c, dt)
                .temp_c;
  now_ = to;
}

void SimVehicle::advance(TimeMs now, double accelerator_utilization) {
  // As validate_utilization, without building its message on every step.
  DCHECK(accelerator_utilization >= 0.0 && accelerator_utilization <= 1.0);
  DCHECK(now <= core::kPlausibleTimeMsMax);
  now = std::min(now, core::kPlausibleTimeMsMax);
  if (now <= now_) return;
  const double utilization =
      std::isnan(accelerator_utilization) ? 1.0 : std::clamp(accelerator_utilization, 0.0, 1.0);
  if (utilization != utilization_) {
    utilization_ = utilization;
    accelerator_w_ = core::accelerator_power_w(params_.accelerator, utilization_);
  }
  // Bounded: every pass ends at an event or at `now`, strictly later than
  // before, and events are at least a leg apart.
  while (now_ < now) {
    const TimeMs to = std::min(now, next_event_at());
    CHECK(to > now_);
    integrate(to);
    settle();
  }
  signals_stale_ = true;
}

void SimVehicle::set_ambient_c(TimeMs now, double ambient_c) {
  DCHECK(ambient_c >= core::kAmbientTemperatureCMin && ambient_c <= core::kAmbientTemperatureCMax);
  advance(now, utilization_);
  params_.ambient_c = std::isnan(ambient_c)
                          ? params_.ambient_c
                          : std::clamp(ambient_c, core::kAmbientTemperatureCMin, core::kAmbientTemperatureCMax);
  signals_stale_ = true;
}

void SimVehicle::driver_returns(TimeMs now) {
  advance(now, utilization_);
  const Leg* leg = current_leg();
  if (leg == nullptr) {
    // At home: an unplanned round trip, starting now.
    const uint64_t stream = mix64(params_.seed ^ kUnplannedSalt);
    auto draw = [&](uint64_t slot) { return unit_draw(stream, static_cast<uint64_t>(now_) * kSimDaySlots + slot); };
    const TimeMs depart_at = now_ + kSimBoardingMs;
    const TimeMs home_at = depart_at + kSimUnplannedDriveMs;
    const double energy_kwh = params_.trip_energy_kwh_mean * kSimUnplannedTripEnergyShare *
                              (kTripEnergyShareMin + kTripEnergyShareSpan * draw(kSlotEnergyOut));
    Outing o;
    o.legs = {
        Leg{Phase::kBoarding, now_, depart_at},
        drive_leg(depart_at, home_at, energy_kwh, draw(kSlotSpeedOut),
                  counter_random(stream, static_cast<uint64_t>(now_) * kSimDaySlots + kSlotSpeedSeedOut)),
        Leg{Phase::kAlighting, home_at, home_at + kSimAlightingMs},
    };
    o.plug_in_on_return = draw(kSlotPlugIn) < params_.plug_in_probability;
    outing_ = std::move(o);
    leg_ = 0;
    plugged_in_ = false;
  } else if (leg->phase == Phase::kParkedAway) {
    // Away: the drive home starts now; the rest of the outing moves earlier.
    std::vector<Leg>& legs = outing_->legs;
    const DurationMs early = legs[leg_].end_at - now_;
    legs[leg_].end_at = now_;
    for (size_t i = leg_ + 1; i < legs.size(); ++i) {
      legs[i].start_at -= early;
      legs[i].end_at -= early;
    }
  }
  settle();
  signals_stale_ = true;
}

// ---- Questions -----------------------------------------------------------------

std::optional<TimeMs> SimVehicle::next_planned_departure(TimeMs now) const {
  TimeMs board_min = plan_resume_at_;
  if (outing_) {
    const std::vector<Leg>& legs = outing_->legs;
    for (size_t i = leg_; i < legs.size(); ++i) {
      if (legs[i].phase == Phase::kDriving && legs[i].start_at >= now) return legs[i].start_at;
    }
    board_min = std::max(board_min, legs.back().end_at);
  }
  const std::optional<Outing> o = find_planned(board_min, now);
  if (!o) return std::nullopt;
  return o->legs[1].start_at;
}

std::vector<int> SimVehicle::declared_departures_minute_of_week() const {
  std::vector<int> out;
  for (int weekday = static_cast<int>(core::Weekday::kMonday); weekday <= static_cast<int>(core::Weekday::kFriday);
       ++weekday) {
    out.push_back(weekday * core::kMinutesPerDay + params_.weekday_departure_minute);
  }
  return out;
}

// ---- Signals -------------------------------------------------------------------

void SimVehicle::refresh_signals() const {
  const Leg* leg = current_leg();
  const Phase phase = leg != nullptr ? leg->phase : Phase::kHome;
  const DurationMs in_leg = leg != nullptr ? now_ - leg->start_at : 0;

  double speed_kmh = 0.0;
  if (phase == Phase::kDriving) {
    const uint64_t minute = static_cast<uint64_t>(in_leg / core::kMinuteMs);
    speed_kmh = leg->speed_kmh * (kMinuteSpeedShareMin + kMinuteSpeedShareSpan * unit_draw(leg->speed_seed, minute));
  }
  const bool seat = phase == Phase::kBoarding || phase == Phase::kDriving ||
                    (phase == Phase::kAlighting && in_leg < kSimAlightingSeatEmptyMs);
  const bool door = (phase == Phase::kBoarding && in_leg < kSimBoardingDoorOpenMs) ||
                    (phase == Phase::kAlighting && in_leg >= kSimAlightingDoorOpensMs);
  const double load_kw = accelerator_w_ / 1000.0;
  const bool plugged = plugged_in_ && !outing_;
  const bool charging = plugged && soc_pct_ < params_.charge_limit_pct &&
                        load_kw < battery_.charger_power_kw * battery_.charge_efficiency;
  double charger_kw = 0.0;
  if (charging) {
    // Grid power at the inlet now: (load + what the battery accepts) / efficiency,
    // which the battery model lowers inside the taper.
    const core::BatteryStep probe =
        core::step_battery(battery_, core::BatteryState{soc_pct_}, true, load_kw, kChargerPowerProbeMs);
    charger_kw = probe.grid_energy_kwh * static_cast<double>(core::kHourMs) / static_cast<double>(kChargerPowerProbeMs);
  }

  using core::SignalId;
  auto set = [&](SignalId id, std::string text) { texts_[static_cast<int>(id)] = std::move(text); };
  set(SignalId::kSpeed, fixed_text(speed_kmh, 1, 0.0, core::kSpeedKmhAbsMax));
  set(SignalId::kGear, std::to_string(phase == Phase::kDriving ? core::kGearDrive : core::kGearPark));
  set(SignalId::kSoc, fixed_text(soc_pct_, 1, core::kSocPctMin, core::kSocPctMax));
  set(SignalId::kIsCharging, bool_text(charging));
  set(SignalId::kChargerConnected, bool_text(plugged));
  set(SignalId::kChargerPower, fixed_text(charger_kw, 2, core::kChargerPowerKwMin, core::kChargerPowerKwMax));
  set(SignalId::kDriverSeatOccupied, bool_text(seat));
  set(SignalId::kDriverDoorOpen, bool_text(door));
  set(SignalId::kAmbientTemperature,
      fixed_text(params_.ambient_c, 1, core::kAmbientTemperatureCMin, core::kAmbientTemperatureCMax));
  set(SignalId::kAcceleratorTemperature,
      fixed_text(temp_c_, 1, core::kAcceleratorTemperatureCMin, core::kAcceleratorTemperatureCMax));

  // Through the one parser every feed uses, so signals() is exactly what an
  // agent applying take_updates() holds.
  signals_ = core::VehicleSignals{};
  for (const core::SignalSpec& spec : core::signal_specs()) {
    // A simulated car has no power meter: its agent meters its power model
    // (the rule for simulated vehicles; real ones report a reading).
    if (spec.id == SignalId::kAcceleratorPower) continue;
    const Status applied =
        core::apply_signal(&signals_, spec.vss_path, texts_[static_cast<int>(spec.id)], now_);
    CHECK(applied.has_value());
  }
  signals_stale_ = false;
}

const core::VehicleSignals& SimVehicle::signals() const {
  if (signals_stale_) refresh_signals();
  return signals_;
}

std::vector<std::pair<std::string, std::string>> SimVehicle::take_updates() {
  if (signals_stale_) refresh_signals();
  std::vector<std::pair<std::string, std::string>> updates;
  for (const core::SignalSpec& spec : core::signal_specs()) {
    const int i = static_cast<int>(spec.id);
    if (texts_[i] == sent_texts_[i]) continue;
    updates.emplace_back(std::string(spec.vss_path), texts_[i]);
    sent_texts_[i] = texts_[i];
  }
  return updates;
}

}  // namespace idlefleet::agent
