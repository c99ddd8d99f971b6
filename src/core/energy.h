// Energy, heat and wear of a parked vehicle that runs inference: the traction
// battery and its charger, the accelerator's power draw and temperature, and
// the wear the accelerator accumulates (hours weighted by an Arrhenius factor
// of temperature). The simulated vehicle, the owner's policy (is the target
// SoC still reachable by departure? is the chip cool enough?) and the agent's
// metering for receipts all use these models.
//
// Units: energy in kWh, battery and charger power in kW, accelerator power in
// W, temperature in degrees Celsius, state of charge in percent (0..100),
// time as core::TimeMs / DurationMs (milliseconds). Every model is solved in
// closed form over a step with constant inputs (no sub-stepping), using only
// det_exp / det_log, so a simulation gives bitwise the same results on every
// machine, and one long step agrees with many short ones up to rounding.
//
// Parameters are plain structs with defaults from published figures
// (../shared/data/README.md; each default names its source, and where no
// figure is published, says that it is our assumption). Call validate() on
// parameters that come from configuration or a message before using them;
// the step functions REQUIRE valid parameters and inputs (DCHECKed).
//
// Thread-safety: pure functions over values; no shared state.
#pragma once

#include <cstdint>
#include <limits>

#include "common/result.h"
#include "core/signals.h"
#include "core/time.h"

namespace idlefleet::core {

// ---------------------------------------------------------------------------
// Battery and charger
// ---------------------------------------------------------------------------

// Limits on battery parameters (validate() rejects values outside them).
// SoC and charger power share their limits with the signals (signals.h).
// The model accepts packs up to trucks' size; the policy (policy.h) bounds
// the cars it serves by kBatteryCapacityKwhMax.
inline constexpr double kBatteryPackKwhMax = 2000.0;      // above any car or truck pack
inline constexpr double kLoadKwMax = 1000.0;              // loads on the vehicle's DC bus

// The traction battery and the charger it is plugged into.
//
// Power flow model: the onboard charger turns AC from the wall into DC with
// `charge_efficiency` (all losses between the meter and the cells, lumped);
// the accelerator and the vehicle's idle consumers hang on the DC side. So
// when plugged in, the charger's DC output (charger_power_kw x efficiency)
// serves the load first and charges the battery with the rest; a load larger
// than that output discharges the battery by the difference. Discharge to the
// DC bus is taken as lossless (its losses are a few percent and the owner pays
// for them when recharging, through charge_efficiency).
//
// Taper (constant-voltage phase): above taper_start_soc_pct the power the
// battery accepts falls linearly, from the charger's full DC output at
// taper_start_soc_pct to taper_end_fraction of it at 100%.
struct BatteryParams {
  // 60 kWh: within the 57.5-75 kWh of a Model 3 / Model Y class car (data README).
  double capacity_kwh = 60.0;
  // Grid (wall meter) to battery. 0.9 is our assumption: measured AC (Level 2)
  // charging efficiency is typically 85-95%; the data README gives no figure.
  double charge_efficiency = 0.9;
  // AC power available at the wall. 7.4 kW: a home Level 2 charger, 7.2-7.7 kW
  // at 240 V / 30-32 A (data README). See kHomeLevel1ChargerKw.
  double charger_power_kw = 7.4;
  // 80%: a common figure for where DC fast charging tapers. For a 7 kW AC
  // charger real taper starts later (often above 90%), so this default is
  // conservative: the policy sees targets above 80% as slower to reach.
  double taper_start_soc_pct = 80.0;
  // Battery acceptance at 100% as a fraction of the charger's full output
  // ("~10% at 100%"). Must be > 0 so that 100% is reached in finite time.
  double taper_end_fraction = 0.1;

  // Every field finite and in range; the error names the field.
  Status validate() const;
};

// A home Level 1 (120 V) charger: 1.4-1.9 kW (data README); 1.65 kW, the middle.
inline constexpr double kHomeLevel1ChargerKw = 1.65;

struct BatteryState {
  double soc_pct = 50.0;  // state of charge, 0..100
};

// The outcome of one battery step.
struct BatteryStep {
  BatteryState state;
  double grid_energy_kwh = 0.0;     // drawn at the wall meter (0 when unplugged)
  double load_energy_kwh = 0.0;     // delivered to the load
  double load_shortfall_kwh = 0.0;  // asked for but not delivered (battery empty)
  double battery_energy_kwh = 0.0;  // change of stored energy: + charged, - discharged
};

// Advances the battery by dt with constant inputs, solved exactly (piecewise:
// constant power below the taper, exponential approach inside it, stop at 0%
// or 100%). Conservation: grid_energy_kwh x charge_efficiency ==
// battery_energy_kwh + load_energy_kwh while plugged in and not discharging;
// otherwise grid x efficiency + discharged == load delivered.
// REQUIRES: params.validate() ok; load_kw finite in [0, kLoadKwMax]; dt >= 0.
// A state outside [0, 100] (e.g. from a faulty signal) is clamped first.
BatteryStep step_battery(const BatteryParams& params, BatteryState state, bool plugged_in,
                         double load_kw, DurationMs dt);

// The time, while plugged in and serving a constant load_kw, for the SoC to
// rise from soc_from to soc_to: 0 if soc_to <= soc_from, and
// kDurationUnreachable if it never gets there (the load takes all of the
// charger's output, soc_to above 100, or an argument is not finite). Rounded
// up to the millisecond, so stepping for the returned time reaches soc_to.
// REQUIRES: params.validate() ok.
inline constexpr DurationMs kDurationUnreachable = std::numeric_limits<DurationMs>::max();
DurationMs time_to_reach(const BatteryParams& params, double soc_from, double soc_to, double load_kw);

// Energy at the wall meter that a DC-side load of load_kw for dt costs:
// load x dt / charge_efficiency (taken from the grid now, or later to refill
// the battery). What an owner is paid back for a job's energy.
// REQUIRES: params.validate() ok; load_kw >= 0; dt >= 0.
double grid_energy_for_load_kwh(const BatteryParams& params, double load_kw, DurationMs dt);

// ---------------------------------------------------------------------------
// Accelerator power and heat
// ---------------------------------------------------------------------------

inline constexpr double kAcceleratorPowerWMax = 10000.0;
inline constexpr double kThermalResistanceCPerWMax = 100.0;
inline constexpr DurationMs kThermalTimeConstantMsMax = kDayMs;
inline constexpr double kTemperatureCMin = -60.0;   // colder than any parked car
inline constexpr double kTemperatureCMax = 200.0;   // hotter than any silicon survives

// The vehicle's AI computer as a power draw and a first-order thermal RC
// model: the chip sits thermal_resistance_c_per_w above ambient (the cabin or
// the coolant loop) per watt at steady state, and approaches that steady state
// with time constant thermal_time_constant_ms.
// Power is linear in utilization: idle_w + (max_w - idle_w) x utilization.
struct AcceleratorParams {
  double idle_w = 15.0;
  double max_w = 60.0;
  double thermal_resistance_c_per_w = 0.6;
  DurationMs thermal_time_constant_ms = 3 * kMinuteMs;
  // The policy stops work at or above this temperature (the hardware's own
  // throttling starts higher; see the presets).
  double throttle_temp_c = 85.0;

  // Every field finite and in range, max_w >= idle_w; the error names the field.
  Status validate() const;
};

// Presets. Power figures are from the data README; idle draw, thermal
// resistance, time constant and throttle temperature are not published for
// these boards and are our assumptions, chosen so that full load in a 25 C
// garage settles near 50-65 C (liquid- or fan-cooled modules), with a few
// minutes' time constant (a heat sink or cold plate of a few hundred grams of
// aluminium), and the policy's limit 85 C, below the ~95-105 C where the
// silicon throttles itself.
//
// Tesla HW3 (FSD computer): ~72-80 W for the board under load (data README);
// max_w 80. Idle 20 W assumed. Liquid-cooled on the car's coolant loop:
// 0.4 C/W (80 W -> +32 C), tau 2 min.
AcceleratorParams hw3_like();
// NVIDIA Jetson AGX Orin / DRIVE Orin: 15-60 W power modes (data README);
// idle_w 15 (the lowest mode), max_w 60. 0.6 C/W (60 W -> +36 C), tau 3 min.
AcceleratorParams orin_like();
// NVIDIA Jetson Thor: 40-130 W (data README); idle_w 40, max_w 130.
// 0.3 C/W (130 W -> +39 C), tau 4 min.
AcceleratorParams thor_like();

// OK if utilization is finite and in [0, 1]; an error naming it otherwise.
Status validate_utilization(double utilization);

// Electrical power in W at a utilization in [0, 1].
// REQUIRES: params.validate() ok; validate_utilization(utilization) ok. (Out
// of range values are clamped, and NaN is taken as full load, the safe side
// for heat and energy.)
double accelerator_power_w(const AcceleratorParams& params, double utilization);

struct AcceleratorState {
  double temp_c = 25.0;  // chip temperature
};

// The temperature the chip settles at: ambient_c + power_w x R.
double steady_state_temp_c(const AcceleratorParams& params, double power_w, double ambient_c);

// The highest constant power that keeps the chip below throttle_temp_c at
// steady state in this ambient (0 if even that ambient is too hot).
double max_sustained_power_w(const AcceleratorParams& params, double ambient_c);

// Advances the chip temperature by dt with constant power and ambient:
// T' = (ambient + P R - T) / tau, solved exactly:
// T(dt) = T_ss + (T - T_ss) exp(-dt / tau).
// REQUIRES: params.validate() ok; power_w finite >= 0; ambient_c finite; dt >= 0.
AcceleratorState step_thermal(const AcceleratorParams& params, AcceleratorState state, double power_w,
                              double ambient_c, DurationMs dt);

// ---------------------------------------------------------------------------
// Wear
// ---------------------------------------------------------------------------

// Boltzmann's constant in eV/K (CODATA 2018, exact by definition of the SI).
inline constexpr double kBoltzmannEvPerK = 8.617333262e-5;
inline constexpr double kZeroCelsiusK = 273.15;
inline constexpr double kActivationEnergyEvMax = 3.0;

// Wear accounting for owners: a "weighted accelerator-hour" is one hour of
// work at the reference temperature. Silicon ages by thermally activated
// mechanisms (electromigration, dielectric breakdown, BTI) whose rate follows
// Arrhenius: rate ∝ exp(-Ea / kT). An hour at temperature T therefore counts
// as AF(T) = exp((Ea/k)(1/T_ref - 1/T)) weighted hours: an hour at 60 C counts
// 1, at 70 C about 2, at 50 C about 0.5. The owner's wear budget and the wear
// allowance on statements are in these hours.
struct WearParams {
  // 0.7 eV: the value the data README gives (with which 60 -> 70 C roughly
  // doubles the wear rate); JEDEC JEP122 lists 0.3-0.9 eV by mechanism, 0.7
  // being the usual default for a whole chip.
  double activation_energy_ev = 0.7;
  // 60 C: a chip working hard in a warm garage (see the accelerator presets);
  // an hour here is one weighted hour.
  double reference_temp_c = 60.0;

  // Ea finite in (0, kActivationEnergyEvMax]; T_ref finite within
  // [kTemperatureCMin, kTemperatureCMax]. The error names the field.
  Status validate() const;
};

// AF(T) = exp((Ea / k)(1 / T_ref - 1 / T)), T in kelvin: 1 at the reference,
// > 1 hotter, < 1 cooler. Strictly increasing in temp_c.
// REQUIRES: params.validate() ok; temp_c finite within [kTemperatureCMin, kTemperatureCMax].
double arrhenius_factor(const WearParams& params, double temp_c);

// Weighted accelerator-hours for `busy` at temp_c: hours(busy) x AF(temp_c).
// REQUIRES: as arrhenius_factor; busy >= 0.
double wear_hours(const WearParams& params, double temp_c, DurationMs busy);

// ---------------------------------------------------------------------------
// Metering
// ---------------------------------------------------------------------------

// What a job (or a vehicle's day) has cost, accumulated step by step for
// receipts and statements. busy_ms is an integer so that sums are exact
// however many steps are added.
struct Meter {
  double energy_kwh = 0.0;  // at the wall meter (see grid_energy_for_load_kwh)
  DurationMs busy_ms = 0;   // accelerator time spent on the work
  double wear_hours = 0.0;  // weighted accelerator-hours
};

// Adds one step: energy_kwh, busy, and its wear, with the Arrhenius factor
// averaged over the step's start and end temperatures (trapezoid rule; exact
// when the temperature is constant, and within a fraction of a percent for
// steps shorter than the thermal time constant).
// REQUIRES: meter != nullptr; energy_kwh finite >= 0; busy >= 0; wear params
// valid; temperatures as for arrhenius_factor.
void meter_add(Meter* meter, const WearParams& wear, double energy_kwh, DurationMs busy,
               double temp_start_c, double temp_end_c);

}  // namespace idlefleet::core
