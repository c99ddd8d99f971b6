// Battery and charger, accelerator power and heat, Arrhenius wear, metering.
#include "core/energy.h"

#include "common/random.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

namespace idlefleet::core::energy_test {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

BatteryParams battery_60kwh_l2() {
  BatteryParams p;
  p.capacity_kwh = 60.0;
  p.charge_efficiency = 0.9;
  p.charger_power_kw = 7.4;
  p.taper_start_soc_pct = 80.0;
  return p;
}

double hours_of(DurationMs d) { return static_cast<double>(d) / static_cast<double>(kHourMs); }

bool same_bits(double a, double b) { return std::memcmp(&a, &b, sizeof a) == 0; }

// --- Battery ---------------------------------------------------------------

TEST(Battery, DefaultsAndPresetsAreValid) {
  EXPECT_TRUE(BatteryParams{}.validate());
  EXPECT_TRUE(battery_60kwh_l2().validate());
  BatteryParams l1;
  l1.charger_power_kw = kHomeLevel1ChargerKw;
  EXPECT_TRUE(l1.validate());
}

TEST(Battery, ChargingTwentyToEightyOnLevel2TakesAboutFiveAndAHalfHours) {
  const BatteryParams p = battery_60kwh_l2();
  // Below the taper: 60 kWh x 60% / (7.4 kW x 0.9) = 36 / 6.66 = 5.4054 h.
  const double expected_h = 60.0 * 0.60 / (7.4 * 0.9);
  EXPECT_NEAR(expected_h, 5.405, 0.001);
  const DurationMs t = time_to_reach(p, 20.0, 80.0, 0.0);
  EXPECT_NEAR(hours_of(t), expected_h, 1e-6);

  // time_to_reach rounds up to the millisecond: at 11.1 %/h that is < 4e-6 %.
  const BatteryStep s = step_battery(p, BatteryState{20.0}, true, 0.0, t);
  EXPECT_GE(s.state.soc_pct, 80.0);
  EXPECT_NEAR(s.state.soc_pct, 80.0, 4e-6);
  EXPECT_NEAR(s.battery_energy_kwh, 36.0, 4e-6);
  EXPECT_NEAR(s.grid_energy_kwh, 40.0, 4e-6);  // 36 / 0.9
  EXPECT_EQ(s.load_shortfall_kwh, 0.0);

  // Stepping in one-minute steps gives the same answer.
  BatteryState st{20.0};
  for (DurationMs done = 0; done < t; done += kMinuteMs) {
    st = step_battery(p, st, true, 0.0, std::min(kMinuteMs, t - done)).state;
  }
  EXPECT_NEAR(st.soc_pct, s.state.soc_pct, 1e-9);
}

TEST(Battery, TaperSlowsTheLastTwentyPercent) {
  const BatteryParams p = battery_60kwh_l2();
  const double flat_h = hours_of(time_to_reach(p, 60.0, 80.0, 0.0));
  const double taper_h = hours_of(time_to_reach(p, 80.0, 100.0, 0.0));
  EXPECT_NEAR(flat_h, 12.0 / 6.66, 1e-6);
  EXPECT_GT(taper_h, 2.0 * flat_h);
  // The closed form: dsoc/dt = k (zero - soc), zero = 80 + 20 / 0.9,
  // k = 100 x 6.66 / (60 x (zero - 80)); from 80 to 100 takes ln(10) / k.
  const double zero = 80.0 + 20.0 / 0.9;
  const double k = 100.0 * 6.66 / (60.0 * (zero - 80.0));
  EXPECT_NEAR(taper_h, std::log(10.0) / k, 1e-6);

  // Power falls linearly: at 90% the battery takes about 55% of the full 6.66 kW.
  const BatteryStep at90 = step_battery(p, BatteryState{90.0}, true, 0.0, kSecondMs);
  const double kw = at90.battery_energy_kwh / hours_of(kSecondMs);
  EXPECT_NEAR(kw, 6.66 * 0.55, 0.01);
  // At 100% charging stops and the charger draws nothing without a load.
  const BatteryStep full = step_battery(p, BatteryState{100.0}, true, 0.0, kHourMs);
  EXPECT_EQ(full.state.soc_pct, 100.0);
  EXPECT_EQ(full.grid_energy_kwh, 0.0);

  // No taper at all when it starts at 100%.
  BatteryParams flat = p;
  flat.taper_start_soc_pct = 100.0;
  EXPECT_NEAR(hours_of(time_to_reach(flat, 80.0, 100.0, 0.0)), flat_h, 1e-6);
}

TEST(Battery, LoadIsServedFromTheChargerFirst) {
  const BatteryParams p = battery_60kwh_l2();
  // 1.66 kW load: 5 kW of the 6.66 kW DC output is left for the battery.
  const BatteryStep s = step_battery(p, BatteryState{40.0}, true, 1.66, kHourMs);
  EXPECT_NEAR(s.battery_energy_kwh, 5.0, 1e-9);
  EXPECT_NEAR(s.load_energy_kwh, 1.66, 1e-12);
  EXPECT_NEAR(s.grid_energy_kwh, 7.4, 1e-9);
  EXPECT_NEAR(time_to_reach(p, 40.0, 50.0, 1.66), static_cast<DurationMs>(1.2 * kHourMs), 1);
}

TEST(Battery, LoadLargerThanTheChargerDischarges) {
  BatteryParams p = battery_60kwh_l2();
  p.charger_power_kw = kHomeLevel1ChargerKw;  // 1.485 kW DC
  const double load_kw = 2.085;               // 0.6 kW more than the charger gives
  const BatteryStep s = step_battery(p, BatteryState{50.0}, true, load_kw, kHourMs);
  EXPECT_NEAR(s.battery_energy_kwh, -0.6, 1e-9);
  EXPECT_NEAR(s.state.soc_pct, 49.0, 1e-9);
  EXPECT_NEAR(s.grid_energy_kwh, kHomeLevel1ChargerKw, 1e-12);
  EXPECT_NEAR(s.load_energy_kwh, load_kw, 1e-12);
  EXPECT_EQ(time_to_reach(p, 50.0, 60.0, load_kw), kDurationUnreachable);
  // A load that takes exactly all of the charger's output.
  EXPECT_EQ(time_to_reach(p, 50.0, 60.0, p.charger_power_kw * p.charge_efficiency), kDurationUnreachable);
}

TEST(Battery, UnpluggedDischargesAndStopsAtEmpty) {
  const BatteryParams p = battery_60kwh_l2();
  const BatteryStep s = step_battery(p, BatteryState{50.0}, false, 3.0, kHourMs);
  EXPECT_NEAR(s.state.soc_pct, 45.0, 1e-9);
  EXPECT_EQ(s.grid_energy_kwh, 0.0);
  EXPECT_NEAR(s.battery_energy_kwh, -3.0, 1e-12);

  // 1% = 0.6 kWh left, 3 kW load for an hour: 12 minutes served, then empty.
  const BatteryStep e = step_battery(p, BatteryState{1.0}, false, 3.0, kHourMs);
  EXPECT_EQ(e.state.soc_pct, 0.0);
  EXPECT_NEAR(e.load_energy_kwh, 0.6, 1e-12);
  EXPECT_NEAR(e.load_shortfall_kwh, 2.4, 1e-12);
  EXPECT_NEAR(e.battery_energy_kwh, -0.6, 1e-12);

  // Plugged into a small charger and empty: the load gets the charger's output only.
  BatteryParams l1 = p;
  l1.charger_power_kw = kHomeLevel1ChargerKw;
  const BatteryStep z = step_battery(l1, BatteryState{0.0}, true, 3.0, kHourMs);
  EXPECT_EQ(z.state.soc_pct, 0.0);
  EXPECT_NEAR(z.load_energy_kwh, kHomeLevel1ChargerKw * 0.9, 1e-12);
  EXPECT_NEAR(z.load_shortfall_kwh, 3.0 - kHomeLevel1ChargerKw * 0.9, 1e-12);
}

TEST(Battery, SocStaysInRangeAndEnergyIsConserved) {
  const BatteryParams base = battery_60kwh_l2();
  Rng rng(42);
  for (int i = 0; i < 20000; ++i) {
    BatteryParams p = base;
    p.charger_power_kw = 1.0 + 10.0 * rng.uniform();
    p.taper_start_soc_pct = 100.0 * rng.uniform();
    BatteryState st{110.0 * rng.uniform() - 5.0};  // some outside [0, 100]: clamped
    const double soc0 = std::clamp(st.soc_pct, 0.0, 100.0);
    const bool plugged = rng.below(4) != 0;
    const double load_kw = 12.0 * rng.uniform();
    const DurationMs dt = static_cast<DurationMs>(rng.below(static_cast<uint64_t>(20 * kHourMs)));
    const BatteryStep s = step_battery(p, st, plugged, load_kw, dt);
    ASSERT_GE(s.state.soc_pct, 0.0);
    ASSERT_LE(s.state.soc_pct, 100.0);
    ASSERT_NEAR(s.battery_energy_kwh, (s.state.soc_pct - soc0) * p.capacity_kwh / 100.0, 1e-9);
    // grid x efficiency + what the battery gave == what the battery took + what the load got.
    const double in = s.grid_energy_kwh * p.charge_efficiency;
    ASSERT_NEAR(in, s.battery_energy_kwh + s.load_energy_kwh, 1e-9) << i;
    ASSERT_NEAR(s.load_energy_kwh + s.load_shortfall_kwh, load_kw * hours_of(dt), 1e-9);
    ASSERT_GE(s.grid_energy_kwh, 0.0);
    ASSERT_LE(s.grid_energy_kwh, p.charger_power_kw * hours_of(dt) + 1e-9);
    if (!plugged) {
      ASSERT_EQ(s.grid_energy_kwh, 0.0);
    }
  }
}

TEST(Battery, TimeToReachAgreesWithStepping) {
  Rng rng(7);
  for (int i = 0; i < 2000; ++i) {
    BatteryParams p = battery_60kwh_l2();
    p.charger_power_kw = 1.4 + 6.3 * rng.uniform();
    p.taper_start_soc_pct = 50.0 + 50.0 * rng.uniform();
    const double from = 100.0 * rng.uniform();
    const double to = from + (100.0 - from) * rng.uniform();
    const double load_kw = 0.5 * p.charger_power_kw * rng.uniform();
    const DurationMs t = time_to_reach(p, from, to, load_kw);
    ASSERT_NE(t, kDurationUnreachable);
    const double got = step_battery(p, BatteryState{from}, true, load_kw, t).state.soc_pct;
    ASSERT_GE(got, to - 1e-9) << i;
    ASSERT_NEAR(got, to, 1e-4) << i;
    if (t > 0) {
      const double before = step_battery(p, BatteryState{from}, true, load_kw, t - 1).state.soc_pct;
      ASSERT_LT(before, to + 1e-9) << i;
    }
    // Charging through many irregular steps lands at the same SoC as one step.
    BatteryState st{from};
    DurationMs done = 0;
    while (done < t) {
      const DurationMs d = std::min<DurationMs>(t - done, 1 + rng.below(30 * kMinuteMs));
      st = step_battery(p, st, true, load_kw, d).state;
      done += d;
    }
    ASSERT_NEAR(st.soc_pct, got, 1e-9) << i;
  }
}

TEST(Battery, TimeToReachEdges) {
  const BatteryParams p = battery_60kwh_l2();
  EXPECT_EQ(time_to_reach(p, 80.0, 80.0, 0.0), 0);
  EXPECT_EQ(time_to_reach(p, 80.0, 50.0, 0.0), 0);
  EXPECT_EQ(time_to_reach(p, 80.0, 100.5, 0.0), kDurationUnreachable);
  EXPECT_EQ(time_to_reach(p, kNaN, 50.0, 0.0), kDurationUnreachable);
  EXPECT_EQ(time_to_reach(p, 10.0, kNaN, 0.0), kDurationUnreachable);
  EXPECT_EQ(time_to_reach(p, 10.0, 50.0, kInf), kDurationUnreachable);
  EXPECT_NE(time_to_reach(p, 0.0, 100.0, 0.0), kDurationUnreachable);
}

TEST(Battery, ValidationNamesTheField) {
  const auto fails = [](BatteryParams p, const char* field) {
    const Status s = p.validate();
    ASSERT_FALSE(s) << field;
    EXPECT_NE(s.error().message.find(field), std::string::npos) << s.error().message;
  };
  for (double bad : {kNaN, kInf, -1.0, 0.0, 1e9}) {
    BatteryParams p;
    p.capacity_kwh = bad;
    fails(p, "capacity_kwh");
    p = {};
    p.charger_power_kw = bad;
    fails(p, "charger_power_kw");
    p = {};
    p.charge_efficiency = bad;
    fails(p, "charge_efficiency");
    p = {};
    p.taper_end_fraction = bad;
    fails(p, "taper_end_fraction");
  }
  for (double bad : {kNaN, -0.1, 100.1}) {
    BatteryParams p;
    p.taper_start_soc_pct = bad;
    fails(p, "taper_start_soc_pct");
  }
  BatteryParams big;
  big.capacity_kwh = kBatteryPackKwhMax * 2;
  EXPECT_EQ(big.validate().error().code, ErrorCode::kOutOfRange);
  BatteryParams nan;
  nan.capacity_kwh = kNaN;
  EXPECT_EQ(nan.validate().error().code, ErrorCode::kInvalidArgument);
  EXPECT_NE(nan.validate().error().message.find("nan"), std::string::npos);
}

// --- Accelerator -----------------------------------------------------------

TEST(Accelerator, PresetsAreValidAndMatchThePublishedPower) {
  for (const AcceleratorParams& a : {AcceleratorParams{}, hw3_like(), orin_like(), thor_like()}) {
    EXPECT_TRUE(a.validate());
    // Full load in a 25 C garage stays well below the policy's limit.
    EXPECT_LT(steady_state_temp_c(a, a.max_w, 25.0), a.throttle_temp_c - 15.0);
  }
  EXPECT_EQ(hw3_like().max_w, 80.0);
  EXPECT_EQ(orin_like().idle_w, 15.0);
  EXPECT_EQ(orin_like().max_w, 60.0);
  EXPECT_EQ(thor_like().idle_w, 40.0);
  EXPECT_EQ(thor_like().max_w, 130.0);
}

TEST(Accelerator, PowerIsLinearInUtilization) {
  const AcceleratorParams a = thor_like();
  EXPECT_EQ(accelerator_power_w(a, 0.0), 40.0);
  EXPECT_EQ(accelerator_power_w(a, 1.0), 130.0);
  EXPECT_DOUBLE_EQ(accelerator_power_w(a, 0.5), 85.0);
  EXPECT_TRUE(validate_utilization(0.0));
  EXPECT_TRUE(validate_utilization(1.0));
  for (double bad : {kNaN, kInf, -0.01, 1.01}) {
    const Status s = validate_utilization(bad);
    ASSERT_FALSE(s);
    EXPECT_NE(s.error().message.find("utilization"), std::string::npos);
  }
}

TEST(Accelerator, ConvergesToAmbientPlusPowerTimesResistance) {
  const AcceleratorParams a = orin_like();
  AcceleratorState st{20.0};
  for (int i = 0; i < 600; ++i) st = step_thermal(a, st, 60.0, 25.0, 10 * kSecondMs);  // 100 min = 33 tau
  EXPECT_NEAR(st.temp_c, 25.0 + 60.0 * 0.6, 1e-9);
  EXPECT_DOUBLE_EQ(steady_state_temp_c(a, 60.0, 25.0), 61.0);
  // And cools back to ambient when off.
  st = step_thermal(a, st, 0.0, 25.0, 40 * a.thermal_time_constant_ms);
  EXPECT_NEAR(st.temp_c, 25.0, 1e-9);
}

TEST(Accelerator, SixtyThreePercentAfterOneTimeConstant) {
  const AcceleratorParams a = hw3_like();
  const double t0 = 30.0;
  const double t_ss = steady_state_temp_c(a, 80.0, 30.0);  // 62 C
  const AcceleratorState st = step_thermal(a, AcceleratorState{t0}, 80.0, 30.0, a.thermal_time_constant_ms);
  EXPECT_NEAR((st.temp_c - t0) / (t_ss - t0), 1.0 - std::exp(-1.0), 1e-12);
  EXPECT_NEAR((st.temp_c - t0) / (t_ss - t0), 0.632, 0.001);
  EXPECT_EQ(step_thermal(a, AcceleratorState{t0}, 80.0, 30.0, 0).temp_c, t0);
}

TEST(Accelerator, OneExactStepEqualsManySmallOnes) {
  const AcceleratorParams a = thor_like();
  const DurationMs total = 17 * kMinuteMs + 123;
  const AcceleratorState one = step_thermal(a, AcceleratorState{22.0}, 100.0, 28.0, total);
  AcceleratorState many{22.0};
  for (DurationMs done = 0; done < total;) {
    const DurationMs d = std::min<DurationMs>(total - done, 250);
    many = step_thermal(a, many, 100.0, 28.0, d);
    done += d;
  }
  EXPECT_NEAR(one.temp_c, many.temp_c, 1e-9);
}

TEST(Accelerator, MaxSustainedPower) {
  const AcceleratorParams a = orin_like();  // 85 C limit, 0.6 C/W
  EXPECT_DOUBLE_EQ(max_sustained_power_w(a, 25.0), 100.0);
  EXPECT_EQ(max_sustained_power_w(a, 90.0), 0.0);
}

TEST(Accelerator, ValidationNamesTheField) {
  const auto fails = [](AcceleratorParams a, const char* field) {
    const Status s = a.validate();
    ASSERT_FALSE(s) << field;
    EXPECT_NE(s.error().message.find(field), std::string::npos) << s.error().message;
  };
  for (double bad : {kNaN, kInf, -1.0, 1e9}) {
    AcceleratorParams a;
    a.idle_w = bad;
    fails(a, "idle_w");
    a = {};
    a.max_w = bad;
    fails(a, "max_w");
    a = {};
    a.thermal_resistance_c_per_w = bad;
    fails(a, "thermal_resistance_c_per_w");
  }
  for (double bad : {kNaN, kInf, -100.0, 1e9}) {
    AcceleratorParams a;
    a.throttle_temp_c = bad;
    fails(a, "throttle_temp_c");
  }
  AcceleratorParams a;
  a.max_w = 0.0;
  fails(a, "max_w");
  a = {};
  a.thermal_resistance_c_per_w = 0.0;
  fails(a, "thermal_resistance_c_per_w");
  a = {};
  a.idle_w = 70.0;  // above max_w 60
  fails(a, "max_w");
  for (DurationMs bad : {DurationMs{0}, DurationMs{-1}, kThermalTimeConstantMsMax + 1}) {
    a = {};
    a.thermal_time_constant_ms = bad;
    fails(a, "thermal_time_constant_ms");
  }
}

// --- Wear ------------------------------------------------------------------

TEST(Wear, ArrheniusFactorIsOneAtTheReferenceAndAboutTwoPerTenDegrees) {
  const WearParams w;
  EXPECT_EQ(w.activation_energy_ev, 0.7);
  EXPECT_EQ(w.reference_temp_c, 60.0);
  EXPECT_TRUE(w.validate());
  EXPECT_DOUBLE_EQ(arrhenius_factor(w, 60.0), 1.0);
  // (0.7 / 8.617333262e-5) (1/333.15 - 1/343.15) = 0.7105..., e^0.7105 = 2.035.
  const double expected = std::exp((0.7 / 8.617333262e-5) * (1.0 / 333.15 - 1.0 / 343.15));
  const double af70 = arrhenius_factor(w, 70.0);
  EXPECT_NEAR(af70, expected, 1e-12 * expected);
  EXPECT_NEAR(af70, 2.035, 0.001);
  EXPECT_NEAR(arrhenius_factor(w, 50.0), 1.0 / 2.10, 0.01);  // cooler counts less
  // Monotonic over the whole range.
  double prev = 0.0;
  for (double t = kTemperatureCMin; t <= kTemperatureCMax; t += 0.5) {
    const double f = arrhenius_factor(w, t);
    ASSERT_GT(f, prev) << t;
    ASSERT_TRUE(std::isfinite(f));
    prev = f;
  }
  // A lower activation energy weighs temperature less.
  WearParams soft;
  soft.activation_energy_ev = 0.3;
  EXPECT_LT(arrhenius_factor(soft, 70.0), af70);
  EXPECT_GT(arrhenius_factor(soft, 70.0), 1.0);
}

TEST(Wear, WeightedHours) {
  const WearParams w;
  EXPECT_DOUBLE_EQ(wear_hours(w, 60.0, 90 * kMinuteMs), 1.5);
  EXPECT_NEAR(wear_hours(w, 70.0, kHourMs), arrhenius_factor(w, 70.0), 1e-15);
  EXPECT_EQ(wear_hours(w, 70.0, 0), 0.0);
}

TEST(Wear, ValidationNamesTheField) {
  for (double bad : {kNaN, kInf, -0.7, 0.0, 5.0}) {
    WearParams w;
    w.activation_energy_ev = bad;
    const Status s = w.validate();
    ASSERT_FALSE(s);
    EXPECT_NE(s.error().message.find("activation_energy_ev"), std::string::npos);
  }
  for (double bad : {kNaN, -kInf, -300.0, 500.0}) {
    WearParams w;
    w.reference_temp_c = bad;
    const Status s = w.validate();
    ASSERT_FALSE(s);
    EXPECT_NE(s.error().message.find("reference_temp_c"), std::string::npos);
  }
}

// --- Metering --------------------------------------------------------------

TEST(Meter, AccumulatesEnergyBusyTimeAndWear) {
  const WearParams w;
  Meter m;
  meter_add(&m, w, 0.5, kHourMs, 60.0, 60.0);
  meter_add(&m, w, 0.25, 30 * kMinuteMs, 70.0, 70.0);
  meter_add(&m, w, 0.0, 0, 90.0, 90.0);  // nothing busy, no wear
  EXPECT_DOUBLE_EQ(m.energy_kwh, 0.75);
  EXPECT_EQ(m.busy_ms, 90 * kMinuteMs);
  EXPECT_NEAR(m.wear_hours, 1.0 + 0.5 * arrhenius_factor(w, 70.0), 1e-12);

  // A warming step averages the factors at its ends.
  Meter warm;
  meter_add(&warm, w, 0.0, kHourMs, 60.0, 70.0);
  EXPECT_NEAR(warm.wear_hours, 0.5 * (1.0 + arrhenius_factor(w, 70.0)), 1e-12);
}

TEST(Meter, WearOverAThermalTransientFromShortStepsIsClose) {
  // Short steps (a tenth of tau) integrate the transient within 0.1% of a
  // fine reference.
  const AcceleratorParams a = orin_like();
  const WearParams w;
  const auto run = [&](DurationMs step) {
    Meter m;
    AcceleratorState st{25.0};
    for (DurationMs done = 0; done < 30 * kMinuteMs; done += step) {  // 30 min: a multiple of both steps
      const AcceleratorState next = step_thermal(a, st, 60.0, 35.0, step);
      meter_add(&m, w, 0.0, step, st.temp_c, next.temp_c);
      st = next;
    }
    return m.wear_hours;
  };
  const double fine = run(kSecondMs);
  EXPECT_NEAR(run(a.thermal_time_constant_ms / 10), fine, 1e-3 * fine);
}

// --- Determinism -----------------------------------------------------------

TEST(Energy, SameInputsGiveBitIdenticalOutputs) {
  const BatteryParams p = battery_60kwh_l2();
  const AcceleratorParams a = thor_like();
  const WearParams w;
  for (int rep = 0; rep < 2; ++rep) {
    Rng r1(99), r2(99);
    for (int i = 0; i < 1000; ++i) {
      const double soc = 100.0 * r1.uniform();
      const double load = 8.0 * r1.uniform();
      const DurationMs dt = static_cast<DurationMs>(r1.below(10 * kHourMs));
      const double temp = 100.0 * r1.uniform();
      const BatteryStep x = step_battery(p, BatteryState{soc}, true, load, dt);
      const double soc2 = 100.0 * r2.uniform();
      const double load2 = 8.0 * r2.uniform();
      const DurationMs dt2 = static_cast<DurationMs>(r2.below(10 * kHourMs));
      const double temp2 = 100.0 * r2.uniform();
      const BatteryStep y = step_battery(p, BatteryState{soc2}, true, load2, dt2);
      ASSERT_TRUE(same_bits(x.state.soc_pct, y.state.soc_pct));
      ASSERT_TRUE(same_bits(x.grid_energy_kwh, y.grid_energy_kwh));
      ASSERT_TRUE(same_bits(x.load_energy_kwh, y.load_energy_kwh));
      ASSERT_EQ(time_to_reach(p, soc, 100.0, load), time_to_reach(p, soc, 100.0, load));
      ASSERT_TRUE(same_bits(step_thermal(a, AcceleratorState{temp}, 90.0, 25.0, dt).temp_c,
                            step_thermal(a, AcceleratorState{temp2}, 90.0, 25.0, dt2).temp_c));
      ASSERT_TRUE(same_bits(arrhenius_factor(w, temp), arrhenius_factor(w, temp2)));
    }
  }
}

}  // namespace
}  // namespace idlefleet::core::energy_test
