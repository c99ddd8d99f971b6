// SimVehicle: determinism, the daily routine, the driver's comings and
// goings, charging and heat, and that everything it says is a valid signal.
#include "agent/sim_vehicle.h"

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "core/policy.h"
#include "support/sanitized.h"

namespace idlefleet::agent::sim_vehicle_test {
namespace {

using core::kDayMs;
using core::kHourMs;
using core::kMinuteMs;
using core::kSecondMs;
using core::kWeekMs;
using core::TimeMs;
using core::VehicleState;

// 2024-06-03 00:00 UTC, a Monday.
constexpr TimeMs kMonday = 1'717'372'800'000;

bool driving(const SimVehicle& car) { return core::physical_state(car.signals()) == VehicleState::kDriving; }

// Times at which the gear was first seen out of P, stepping from `from` to
// `to` by `step` with utilization util(interval start).
std::vector<TimeMs> departures(SimVehicle* car, TimeMs from, TimeMs to, core::DurationMs step,
                               const std::function<double(TimeMs)>& util = [](TimeMs) { return 0.0; }) {
  std::vector<TimeMs> out;
  bool was_driving = driving(*car);
  for (TimeMs t = from + step; t <= to; t += step) {
    car->advance(t, util(t - step));
    const bool now_driving = driving(*car);
    if (now_driving && !was_driving) out.push_back(t);
    was_driving = now_driving;
  }
  return out;
}

int local_minute_of_day(TimeMs t, int offset) { return core::to_local(t, offset).minute_of_day; }

TEST(SimVehicle, SameSeedSameTrajectoryOtherSeedsDiffer) {
  auto run = [](uint64_t seed) {
    SimVehicleParams p;
    p.seed = seed;
    SimVehicle car(p, kMonday);
    std::vector<std::string> log;
    for (TimeMs t = kMonday; t <= kMonday + 3 * kDayMs; t += kMinuteMs) {
      car.advance(t, (t / kHourMs) % 3 == 0 ? 0.8 : 0.0);
      for (const auto& [path, value] : car.take_updates()) log.push_back(std::to_string(t) + " " + path + "=" + value);
    }
    return log;
  };
  const std::vector<std::string> a = run(7);
  EXPECT_GT(a.size(), 100u);
  EXPECT_EQ(a, run(7));
  EXPECT_NE(a, run(8));
}

TEST(SimVehicle, WeekdaysCommuteWeekendsVary) {
  for (const int offset : {0, 120, -300}) {
    SimVehicleParams p;
    p.seed = 11;
    p.utc_offset_minutes = offset;
    SimVehicle car(p, kMonday);
    const std::vector<TimeMs> deps = departures(&car, kMonday, kMonday + 4 * kWeekMs, kMinuteMs);
    // Group by local day.
    std::map<int64_t, std::vector<TimeMs>> by_day;
    for (const TimeMs t : deps) by_day[(t + offset * kMinuteMs) / kDayMs].push_back(t);
    int weekend_days_out = 0;
    // Whole local days only: skip the first and the last.
    for (int64_t day = (kMonday + offset * kMinuteMs) / kDayMs + 1; day < (kMonday + 4 * kWeekMs) / kDayMs - 1;
         ++day) {
      const TimeMs midnight = day * kDayMs - offset * kMinuteMs;
      const std::vector<TimeMs>& d = by_day[day];
      if (!core::to_local(midnight, offset).weekend()) {
        // Out in the morning around 07:30, back from work in the afternoon.
        ASSERT_EQ(d.size(), 2u) << "offset " << offset << " day " << day;
        EXPECT_GE(local_minute_of_day(d[0], offset), p.weekday_departure_minute - kSimScheduleJitterMinutes);
        EXPECT_LE(local_minute_of_day(d[0], offset), p.weekday_departure_minute + kSimScheduleJitterMinutes);
        EXPECT_GE(local_minute_of_day(d[1], offset), 15 * 60);
        EXPECT_LE(local_minute_of_day(d[1], offset), p.weekday_return_minute + kSimScheduleJitterMinutes);
      } else {
        ASSERT_TRUE(d.empty() || d.size() == 2u);
        if (!d.empty()) {
          ++weekend_days_out;
          EXPECT_GE(local_minute_of_day(d[0], offset), 9 * 60);
          EXPECT_LE(local_minute_of_day(d[0], offset), 14 * 60);
        }
      }
    }
    // 8 weekend days at p = 0.6: some out, some not (seed 11; a fixed outcome).
    EXPECT_GT(weekend_days_out, 0);
    EXPECT_LT(weekend_days_out, 8);
  }
}

TEST(SimVehicle, WeekendTripProbabilityIsObeyed) {
  for (const double probability : {0.0, 1.0}) {
    SimVehicleParams p;
    p.weekend_trip_probability = probability;
    SimVehicle car(p, kMonday);
    int weekend = 0;
    for (const TimeMs t : departures(&car, kMonday, kMonday + 3 * kWeekMs, kMinuteMs)) {
      weekend += core::to_local(t, 0).weekend() ? 1 : 0;
    }
    EXPECT_EQ(weekend, probability == 0.0 ? 0 : 3 * 2 * 2) << probability;
  }
}

TEST(SimVehicle, ParkedAndChargedAtNight) {
  SimVehicleParams p;
  p.seed = 3;
  p.plug_in_probability = 1.0;
  p.initial_soc_pct = 40.0;
  SimVehicle car(p, kMonday);
  for (TimeMs day = kMonday; day < kMonday + 3 * kWeekMs; day += kDayMs) {
    for (TimeMs t = day + 2 * kHourMs; t <= day + 5 * kHourMs; t += 10 * kMinuteMs) {
      car.advance(t, 0.3);
      const core::VehicleSignals& s = car.signals();
      ASSERT_NE(core::physical_state(s), VehicleState::kDriving) << t;
      EXPECT_EQ(*s.gear, core::kGearPark);
      EXPECT_EQ(*s.speed_kmh, 0.0);
      EXPECT_FALSE(*s.driver_seat_occupied);
      EXPECT_FALSE(*s.driver_door_open);
      EXPECT_TRUE(*s.charger_connected);
    }
    // By 05:00 every night the car has reached its charge limit and stopped.
    EXPECT_NEAR(car.soc_pct(), p.charge_limit_pct, 1e-9) << day;
    EXPECT_FALSE(*car.signals().is_charging);
    EXPECT_EQ(*car.signals().charger_power_kw, 0.0);
  }
}

TEST(SimVehicle, ForgetfulDriverLeavesSomeNightsUnplugged) {
  SimVehicleParams p;
  p.seed = 5;
  p.plug_in_probability = 0.5;
  SimVehicle car(p, kMonday);
  int plugged = 0;
  int nights = 0;
  for (TimeMs night = kMonday + 3 * kHourMs; night < kMonday + 4 * kWeekMs; night += kDayMs) {
    car.advance(night, 0.0);
    ++nights;
    plugged += car.plugged_in() ? 1 : 0;
    EXPECT_EQ(*car.signals().charger_connected, car.plugged_in());
  }
  EXPECT_GT(plugged, 0);
  EXPECT_LT(plugged, nights);
}

// set_ambient_c: a hot garage heats the chip toward the new ambient, and the
// same steps without it do not; the change takes effect from its time on.
TEST(SimVehicle, AmbientChangeHeatsTheChip) {
  SimVehicleParams p;
  p.ambient_c = 15.0;
  SimVehicle hot(p, kMonday);
  SimVehicle cool(p, kMonday);
  const TimeMs t0 = kMonday + 2 * kHourMs;
  hot.advance(t0, 0.0);
  cool.advance(t0, 0.0);
  EXPECT_DOUBLE_EQ(hot.accelerator_temp_c(), cool.accelerator_temp_c());
  hot.set_ambient_c(t0, 60.0);
  EXPECT_DOUBLE_EQ(hot.accelerator_temp_c(), cool.accelerator_temp_c());  // not yet: no time has passed
  hot.advance(t0 + kHourMs, 0.0);
  cool.advance(t0 + kHourMs, 0.0);
  // An idle chip sits a few degrees above its ambient: the 45 C apart, nearly all of it.
  EXPECT_GT(hot.accelerator_temp_c(), cool.accelerator_temp_c() + 40.0);
  EXPECT_LT(cool.accelerator_temp_c(), 30.0);
  EXPECT_NEAR(*hot.signals().ambient_temperature_c, 60.0, 0.1);
}

TEST(SimVehicle, DriverReturnsFromHome) {
  SimVehicleParams p;
  p.plug_in_probability = 1.0;
  SimVehicle car(p, kMonday);
  const TimeMs t0 = kMonday + 2 * kHourMs + 17 * kSecondMs;  // a quiet night
  car.advance(t0 - kSecondMs, 0.5);
  ASSERT_TRUE(car.plugged_in());
  car.driver_returns(t0);
  const core::VehicleSignals& s = car.signals();
  EXPECT_TRUE(*s.driver_door_open);
  EXPECT_TRUE(*s.driver_seat_occupied);
  EXPECT_FALSE(*s.charger_connected);  // the cable came out first
  EXPECT_EQ(car.next_planned_departure(t0), t0 + kSimBoardingMs);
  TimeMs driving_at = -1;
  for (TimeMs t = t0 + kSecondMs; t <= t0 + 2 * kMinuteMs; t += kSecondMs) {
    car.advance(t, 0.0);
    if (driving(car)) {
      driving_at = t;
      break;
    }
  }
  ASSERT_NE(driving_at, -1);
  EXPECT_LE(driving_at - t0, kMinuteMs);
  EXPECT_GT(*car.signals().speed_kmh, 0.0);
  EXPECT_EQ(*car.signals().gear, core::kGearDrive);
  EXPECT_FALSE(*car.signals().driver_door_open);

  // Home again: parked, seat empty, door closed, plugged in (p = 1).
  car.advance(t0 + kSimBoardingMs + kSimUnplannedDriveMs + 30 * kSecondMs, 0.0);
  EXPECT_EQ(core::physical_state(car.signals()) == VehicleState::kDriving, false);
  EXPECT_TRUE(*car.signals().driver_seat_occupied);  // still getting out
  car.advance(t0 + kSimBoardingMs + kSimUnplannedDriveMs + kSimAlightingMs, 0.0);
  EXPECT_NE(core::physical_state(car.signals()), VehicleState::kDriving);
  EXPECT_FALSE(*car.signals().driver_seat_occupied);
  EXPECT_FALSE(*car.signals().driver_door_open);
  EXPECT_TRUE(*car.signals().charger_connected);
  // And the morning commute still happens.
  const std::vector<TimeMs> later = departures(&car, car.now(), kMonday + 12 * kHourMs, kMinuteMs);
  ASSERT_EQ(later.size(), 1u);
  EXPECT_NEAR(local_minute_of_day(later[0], 0), p.weekday_departure_minute, kSimScheduleJitterMinutes);
}

TEST(SimVehicle, DriverReturnsFromWorkEarly) {
  SimVehicleParams p;
  SimVehicle planned(p, kMonday);
  SimVehicle early(p, kMonday);
  const TimeMs noon = kMonday + 12 * kHourMs;
  planned.advance(noon, 0.0);
  early.advance(noon, 0.0);
  ASSERT_FALSE(driving(early));
  ASSERT_FALSE(*early.signals().driver_seat_occupied);  // parked at work
  const std::optional<TimeMs> planned_leave = early.next_planned_departure(noon);
  ASSERT_TRUE(planned_leave.has_value());
  EXPECT_GE(local_minute_of_day(*planned_leave, 0), 15 * 60);
  early.driver_returns(noon);
  EXPECT_EQ(early.next_planned_departure(noon), noon + kSimBoardingMs);
  const std::vector<TimeMs> deps = departures(&early, noon, noon + 2 * kMinuteMs, kSecondMs);
  ASSERT_EQ(deps.size(), 1u);
  EXPECT_LE(deps[0] - noon, kMinuteMs + kSecondMs);
  // Home by 13:00 at the latest; no more driving until the next morning.
  early.advance(kMonday + 13 * kHourMs, 0.0);
  EXPECT_FALSE(driving(early));
  EXPECT_TRUE(departures(&early, early.now(), kMonday + kDayMs + 6 * kHourMs, kMinuteMs).empty());
  // The planned twin is still at work until its afternoon departure.
  EXPECT_EQ(departures(&planned, noon, *planned_leave, kMinuteMs), std::vector<TimeMs>{*planned_leave});
}

TEST(SimVehicle, DriverReturnsWhileDrivingChangesNothing) {
  SimVehicleParams p;
  SimVehicle a(p, kMonday);
  SimVehicle b(p, kMonday);
  const std::optional<TimeMs> leave = a.next_planned_departure(kMonday);
  ASSERT_TRUE(leave.has_value());
  a.advance(*leave + 5 * kMinuteMs, 0.0);
  b.advance(*leave + 5 * kMinuteMs, 0.0);
  ASSERT_TRUE(driving(a));
  a.driver_returns(*leave + 5 * kMinuteMs);
  a.advance(kMonday + kDayMs, 0.0);
  b.advance(kMonday + kDayMs, 0.0);
  EXPECT_EQ(a.soc_pct(), b.soc_pct());
  EXPECT_EQ(a.take_updates(), b.take_updates());
}

// Every update is a valid signal, and applying them rebuilds signals() exactly.
TEST(SimVehicle, EveryUpdateIsAcceptedByApplySignal) {
  SimVehicleParams p;
  p.seed = 21;
  p.accelerator = core::thor_like();
  SimVehicle car(p, kMonday + 123);
  core::VehicleSignals mirror;
  int updates = 0;
  std::set<std::string> paths;
  for (TimeMs t = kMonday + 123; t <= kMonday + kWeekMs; t += 37 * kSecondMs) {
    car.advance(t, static_cast<double>((t / (7 * kMinuteMs)) % 5) / 4.0);
    for (const auto& [path, value] : car.take_updates()) {
      const Status st = core::apply_signal(&mirror, path, value, t);
      ASSERT_TRUE(st) << path << "=" << value << ": " << st.error().to_string();
      ++updates;
      paths.insert(path);
    }
    const core::VehicleSignals& s = car.signals();
    ASSERT_TRUE(core::validate_signals(s));
    for (int i = 0; i < core::kSignalCount; ++i) {
      const auto id = static_cast<core::SignalId>(i);
      ASSERT_EQ(core::signal_known(s, id), id != core::SignalId::kAcceleratorPower) << i;
    }
    ASSERT_EQ(s.heard_at, t);
    ASSERT_EQ(mirror.speed_kmh, s.speed_kmh);
    ASSERT_EQ(mirror.gear, s.gear);
    ASSERT_EQ(mirror.soc_pct, s.soc_pct);
    ASSERT_EQ(mirror.is_charging, s.is_charging);
    ASSERT_EQ(mirror.charger_connected, s.charger_connected);
    ASSERT_EQ(mirror.charger_power_kw, s.charger_power_kw);
    ASSERT_EQ(mirror.driver_seat_occupied, s.driver_seat_occupied);
    ASSERT_EQ(mirror.driver_door_open, s.driver_door_open);
    ASSERT_EQ(mirror.ambient_temperature_c, s.ambient_temperature_c);
    ASSERT_EQ(mirror.accelerator_temperature_c, s.accelerator_temperature_c);
  }
  EXPECT_EQ(paths.size(), static_cast<size_t>(core::kSignalCount - 1));  // all but the power reading
  EXPECT_GT(updates, 1000);
  // Nothing changed, nothing sent.
  EXPECT_TRUE(car.take_updates().empty());
}

TEST(SimVehicle, UtilizationHeatsTheChip) {
  SimVehicleParams p;
  SimVehicle cold(p, kMonday);
  SimVehicle hot(p, kMonday);
  cold.advance(kMonday + 30 * kMinuteMs, 0.0);
  hot.advance(kMonday + 30 * kMinuteMs, 1.0);
  // Orin-like: 15 W idle, 60 W full, 0.6 C/W: +9 C and +36 C over ambient.
  EXPECT_NEAR(cold.accelerator_temp_c(), p.ambient_c + 15 * 0.6, 0.01);
  EXPECT_NEAR(hot.accelerator_temp_c(), p.ambient_c + 60 * 0.6, 0.01);
  EXPECT_NEAR(*hot.signals().accelerator_temperature_c, p.ambient_c + 60 * 0.6, 0.051);
  // And it cools back down.
  hot.advance(kMonday + 90 * kMinuteMs, 0.0);
  EXPECT_NEAR(hot.accelerator_temp_c(), p.ambient_c + 15 * 0.6, 0.01);
}

TEST(SimVehicle, UtilizationDrainsTheBatteryOrSlowsCharging) {
  const core::DurationMs night = 6 * kHourMs;
  {
    SimVehicleParams p;
    p.home_charger = false;
    SimVehicle cold(p, kMonday);
    SimVehicle hot(p, kMonday);
    cold.advance(kMonday + night, 0.0);
    hot.advance(kMonday + night, 1.0);
    EXPECT_FALSE(hot.plugged_in());
    // 15 W vs 60 W for 6 h from a 60 kWh pack: 0.15% vs 0.6%.
    EXPECT_NEAR(p.initial_soc_pct - cold.soc_pct(), 0.015 * 6 / 60 * 100, 1e-6);
    EXPECT_NEAR(p.initial_soc_pct - hot.soc_pct(), 0.060 * 6 / 60 * 100, 1e-6);
  }
  {
    SimVehicleParams p;
    p.plug_in_probability = 1.0;
    p.initial_soc_pct = 20.0;
    SimVehicle cold(p, kMonday);
    SimVehicle hot(p, kMonday);
    EXPECT_TRUE(*cold.signals().is_charging);
    cold.advance(kMonday + kHourMs, 0.0);
    hot.advance(kMonday + kHourMs, 1.0);
    // The charger serves the load first: 45 W more load, 45 Wh less in the battery.
    EXPECT_NEAR(cold.soc_pct() - hot.soc_pct(), 0.045 / 60 * 100, 1e-6);
    EXPECT_NEAR(cold.soc_pct() - p.initial_soc_pct, (7.4 * 0.9 - 0.015) / 60 * 100, 1e-6);
  }
}

TEST(SimVehicle, ChargerPowerShowsTheTaper) {
  SimVehicleParams p;
  p.plug_in_probability = 1.0;
  p.charge_limit_pct = 100.0;
  for (const double soc : {50.0, 85.0, 95.0}) {
    p.initial_soc_pct = soc;
    SimVehicle car(p, kMonday);
    const core::VehicleSignals& s = car.signals();
    ASSERT_TRUE(*s.is_charging);
    if (soc < p.battery.taper_start_soc_pct) {
      EXPECT_NEAR(*s.charger_power_kw, p.charger_power_kw, 0.006);
    } else {
      EXPECT_LT(*s.charger_power_kw, p.charger_power_kw * 0.9);
      EXPECT_GT(*s.charger_power_kw, p.charger_power_kw * p.battery.taper_end_fraction);
    }
  }
  SimVehicleParams unplugged = p;
  unplugged.home_charger = false;
  SimVehicle car(unplugged, kMonday);
  EXPECT_FALSE(*car.signals().is_charging);
  EXPECT_FALSE(*car.signals().charger_connected);
  EXPECT_EQ(*car.signals().charger_power_kw, 0.0);
}

TEST(SimVehicle, StepSizeDoesNotMatter) {
  auto util = [](TimeMs t) { return (t / kHourMs) % 4 == 0 ? 1.0 : 0.25; };
  SimVehicleParams p;
  p.seed = 99;
  p.plug_in_probability = 0.7;
  // The release build compares a week of one-second steps. Under the
  // sanitizers each step is many times slower, so it compares two days
  // (Monday and Tuesday): still several departures, charging and serving.
  const TimeMs end = kMonday + (testing::kSanitized ? 2 * kDayMs : kWeekMs);
  const size_t departures_min = testing::kSanitized ? 3 : 10;
  SimVehicle fine(p, kMonday);
  SimVehicle coarse(p, kMonday);
  const std::vector<TimeMs> fine_deps = departures(&fine, kMonday, end, kSecondMs, util);
  const std::vector<TimeMs> coarse_deps = departures(&coarse, kMonday, end, kMinuteMs, util);
  EXPECT_GE(fine_deps.size(), departures_min);
  EXPECT_EQ(fine_deps, coarse_deps);
  EXPECT_NEAR(fine.soc_pct(), coarse.soc_pct(), 1.0);
  EXPECT_NEAR(fine.soc_pct(), coarse.soc_pct(), 1e-6);  // in fact closed form: rounding only
  EXPECT_NEAR(fine.accelerator_temp_c(), coarse.accelerator_temp_c(), 1e-6);

  // One hour steps too: the same state of charge at the end.
  SimVehicle hourly(p, kMonday);
  for (TimeMs t = kMonday + kHourMs; t <= end; t += kHourMs) hourly.advance(t, util(t - kHourMs));
  EXPECT_NEAR(hourly.soc_pct(), fine.soc_pct(), 1e-6);
}

TEST(SimVehicle, NextPlannedDepartureIsWhenTheGearLeavesPark) {
  SimVehicleParams p;
  p.seed = 4;
  SimVehicle car(p, kMonday);
  std::vector<TimeMs> predicted;
  for (TimeMs t = kMonday; t < kMonday + kWeekMs; t += kMinuteMs) {
    car.advance(t, 0.0);
    const std::optional<TimeMs> next = car.next_planned_departure(t);
    ASSERT_TRUE(next.has_value());
    ASSERT_GE(*next, t);
    if (predicted.empty() || predicted.back() != *next) predicted.push_back(*next);
  }
  SimVehicle observer(p, kMonday);
  std::vector<TimeMs> observed = departures(&observer, kMonday, kMonday + kWeekMs, kMinuteMs);
  ASSERT_FALSE(observed.empty());
  // The last prediction lies beyond the week.
  ASSERT_EQ(predicted.size(), observed.size() + 1);
  predicted.pop_back();
  EXPECT_EQ(predicted, observed);
}

// Outings given from outside (the simulator's own days, `idlefleet sim
// live`): the gear leaves P and the car is home again at exactly the given
// minutes, each way spends the given energy, the cable goes in as the outing
// says; a day with none stays home; an outing out of order is ignored.
TEST(SimVehicle, GivenOutingsReplaceTheRoutine) {
  SimVehicleParams p;
  p.seed = 6;
  p.initially_plugged = false;
  p.initial_soc_pct = 60.0;
  p.battery.capacity_kwh = 50.0;
  const int64_t monday = kMonday / kDayMs;
  p.outings = [monday](int64_t day) -> std::optional<SimOuting> {
    if (day == monday) return SimOuting{8 * 60 + 7, 8 * 60 + 40, 17 * 60, 17 * 60 + 25, 5.0, 2.5, true};
    if (day == monday + 1) return SimOuting{9 * 60, 8 * 60, 10 * 60, 11 * 60, 1.0, 1.0, true};  // out of order
    if (day == monday + 2) return SimOuting{6 * 60, 6 * 60 + 20, 7 * 60, 7 * 60 + 30, 1.0, 1.0, false};
    return std::nullopt;
  };
  SimVehicle car(p, kMonday);
  EXPECT_FALSE(car.plugged_in());
  SimVehicle observer = car;
  const std::vector<TimeMs> seen = departures(&observer, kMonday, kMonday + 4 * kDayMs, kMinuteMs);
  EXPECT_EQ(seen, (std::vector<TimeMs>{kMonday + (8 * 60 + 7) * kMinuteMs, kMonday + 17 * 60 * kMinuteMs,
                                       kMonday + 2 * kDayMs + 6 * 60 * kMinuteMs,
                                       kMonday + 2 * kDayMs + 7 * 60 * kMinuteMs}));

  car.advance(kMonday + 8 * kHourMs, 0.0);
  const double before = car.soc_pct();
  car.advance(kMonday + 9 * kHourMs, 0.0);
  EXPECT_NEAR(before - car.soc_pct(), 100.0 * 5.0 / 50.0, 0.5);  // the way out, and a little standby
  EXPECT_FALSE(driving(car));
  car.advance(kMonday + 17 * kHourMs + 10 * kMinuteMs, 0.0);
  EXPECT_TRUE(driving(car));
  car.advance(kMonday + 17 * kHourMs + 30 * kMinuteMs, 0.0);
  EXPECT_FALSE(driving(car));
  EXPECT_TRUE(car.plugged_in());
  car.advance(kMonday + 2 * kDayMs + 8 * kHourMs, 0.0);
  EXPECT_FALSE(car.plugged_in());  // Wednesday's outing says the driver forgets
}

TEST(SimVehicle, BatteryNeverBelowEmpty) {
  SimVehicleParams p;
  p.battery.capacity_kwh = 8.0;
  p.initial_soc_pct = 10.0;
  p.home_charger = false;
  p.trip_energy_kwh_mean = 20.0;
  SimVehicle car(p, kMonday);
  for (TimeMs t = kMonday; t <= kMonday + 2 * kDayMs; t += 5 * kMinuteMs) {
    car.advance(t, 1.0);
    ASSERT_GE(car.soc_pct(), 0.0);
    ASSERT_TRUE(core::validate_signals(car.signals()));
  }
  EXPECT_EQ(car.soc_pct(), 0.0);
  EXPECT_EQ(*car.signals().soc_pct, 0.0);
}

TEST(SimVehicle, TimeNeverGoesBack) {
  SimVehicle car(SimVehicleParams{}, kMonday);
  car.advance(kMonday + kHourMs, 1.0);
  const double soc = car.soc_pct();
  const double temp = car.accelerator_temp_c();
  car.advance(kMonday, 0.0);
  car.advance(kMonday + kHourMs, 0.0);
  EXPECT_EQ(car.now(), kMonday + kHourMs);
  EXPECT_EQ(car.soc_pct(), soc);
  EXPECT_EQ(car.accelerator_temp_c(), temp);
  EXPECT_EQ(car.signals().heard_at, kMonday + kHourMs);
}

TEST(SimVehicle, FirstUpdatesCarryEverySignal) {
  SimVehicle car(SimVehicleParams{}, kMonday);
  const auto first = car.take_updates();
  // Every signal but the accelerator's power: a simulated car has no power
  // meter (its agent meters its power model).
  ASSERT_EQ(first.size(), static_cast<size_t>(core::kSignalCount - 1));
  for (int i = 0; i < core::kSignalCount - 1; ++i) {
    EXPECT_EQ(first[i].first, core::signal_specs()[i].vss_path);
  }
  EXPECT_TRUE(car.take_updates().empty());
  car.advance(kMonday + kSecondMs, 0.0);
  EXPECT_TRUE(car.take_updates().empty());  // nothing visible changes in a second at rest
}

TEST(SimVehicle, DeclaredDeparturesFitThePolicyAndTheNightIsEligible) {
  SimVehicleParams p;
  p.plug_in_probability = 1.0;
  p.utc_offset_minutes = 60;
  SimVehicle car(p, kMonday);
  const std::vector<int> declared = car.declared_departures_minute_of_week();
  EXPECT_EQ(declared, (std::vector<int>{450, 1890, 3330, 4770, 6210}));

  core::EligibilityInputs in;
  in.policy.opted_in = true;
  in.policy.departures_minute_of_week = declared;
  in.utc_offset_minutes = p.utc_offset_minutes;
  in.battery_capacity_kwh = p.battery.capacity_kwh;
  in.charge_power_kw = p.charger_power_kw * p.battery.charge_efficiency;
  in.inference_power_kw = p.accelerator.max_w / 1000.0;
  ASSERT_TRUE(in.policy.validate());

  const TimeMs night = kMonday + 2 * kHourMs;  // 03:00 local
  car.advance(night, 1.0);
  in.signals = car.signals();
  const core::EligibilityDecision ok = core::decide_eligibility(in, night);
  EXPECT_TRUE(ok.eligible) << core::format_reasons(ok);

  car.driver_returns(night + kMinuteMs);
  in.signals = car.signals();
  const core::EligibilityDecision no = core::decide_eligibility(in, night + kMinuteMs);
  EXPECT_FALSE(no.eligible);
  EXPECT_TRUE(no.has(core::ReasonCode::kOccupied));
  EXPECT_TRUE(no.has(core::ReasonCode::kDoorOpen));
}

TEST(SimVehicle, ParamsAreValidated) {
  EXPECT_TRUE(SimVehicleParams{}.validate());
  auto error_of = [](const std::function<void(SimVehicleParams&)>& change) {
    SimVehicleParams p;
    change(p);
    const Status st = p.validate();
    return st ? std::string() : st.error().message;
  };
  EXPECT_NE(error_of([](auto& p) { p.plug_in_probability = 1.5; }).find("plug_in_probability"), std::string::npos);
  EXPECT_NE(error_of([](auto& p) { p.weekend_trip_probability = std::nan(""); }).find("weekend_trip_probability"),
            std::string::npos);
  EXPECT_NE(error_of([](auto& p) { p.weekday_return_minute = 7 * 60; }).find("weekday_return_minute"),
            std::string::npos);
  EXPECT_NE(error_of([](auto& p) { p.weekday_departure_minute = 24 * 60; }).find("weekday_departure_minute"),
            std::string::npos);
  EXPECT_NE(error_of([](auto& p) { p.charge_limit_pct = 20.0; }).find("charge_limit_pct"), std::string::npos);
  EXPECT_NE(error_of([](auto& p) { p.charger_power_kw = 0.0; }).find("charger_power_kw"), std::string::npos);
  EXPECT_NE(error_of([](auto& p) { p.utc_offset_minutes = 15 * 60; }).find("utc_offset_minutes"), std::string::npos);
  EXPECT_NE(error_of([](auto& p) { p.battery.capacity_kwh = -1.0; }).find("capacity_kwh"), std::string::npos);
  EXPECT_NE(error_of([](auto& p) { p.accelerator.max_w = 1.0; }).find("max_w"), std::string::npos);
  EXPECT_NE(error_of([](auto& p) { p.trip_energy_kwh_mean = 1000.0; }).find("trip_energy_kwh_mean"),
            std::string::npos);
  EXPECT_NE(error_of([](auto& p) { p.ambient_c = 99.0; }).find("ambient_c"), std::string::npos);
}

}  // namespace
}  // namespace idlefleet::agent::sim_vehicle_test
