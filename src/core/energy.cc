#include "core/energy.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>

#include "common/check.h"
#include "common/det_math.h"

namespace idlefleet::core {

namespace {

constexpr double kMsPerHour = static_cast<double>(kHourMs);

double hours(DurationMs dt) { return static_cast<double>(dt) / kMsPerHour; }

std::string format_double(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

// `name` must be finite and within [lo, hi] (or (lo, hi] when lo_open).
// Non-finite or below the range is an invalid argument; above the named
// maximum is out of range.
Status check_range(const char* name, double v, double lo, double hi, bool lo_open, const char* unit) {
  const std::string range = std::string(lo_open ? "(" : "[") + format_double(lo) + ", " + format_double(hi) +
                            "]" + (unit[0] ? " " : "") + unit;
  if (!std::isfinite(v)) {
    return Unexpected(ErrorCode::kInvalidArgument,
                      std::string(name) + " must be a finite number in " + range + ", got " + format_double(v));
  }
  if (v < lo || (lo_open && v == lo)) {
    return Unexpected(ErrorCode::kInvalidArgument,
                      std::string(name) + " must be in " + range + ", got " + format_double(v));
  }
  if (v > hi) {
    return Unexpected(ErrorCode::kOutOfRange,
                      std::string(name) + " must be in " + range + ", got " + format_double(v));
  }
  return {};
}

double clamp_soc(double soc) {
  if (!(soc >= kSocPctMin)) return kSocPctMin;  // also NaN: the pessimistic side
  return std::min(soc, kSocPctMax);
}

// The taper as a line in SoC. Above `start` the battery accepts
// dc_kw x (zero - soc) / (zero - start), which is the full output at `start`
// and taper_end_fraction of it at 100; `zero` (> 100) is where the line
// would reach 0. `enabled` is false when there is no taper region.
struct Taper {
  bool enabled = false;
  double start = kSocPctMax;
  double zero = kSocPctMax;
  double rate_per_h = 0.0;  // k in dsoc/dt = k (zero - soc), per hour
};

Taper make_taper(const BatteryParams& p, double dc_kw) {
  Taper t;
  const double width = kSocPctMax - p.taper_start_soc_pct;
  const double drop = 1.0 - p.taper_end_fraction;
  if (!(width > 0.0) || !(drop > 0.0) || !(dc_kw > 0.0)) return t;
  t.enabled = true;
  t.start = p.taper_start_soc_pct;
  t.zero = t.start + width / drop;
  t.rate_per_h = 100.0 * dc_kw / (p.capacity_kwh * (t.zero - t.start));
  return t;
}

// The SoC above which the taper, not the charger's spare output `avail_kw`,
// limits charging (100 if never).
double taper_switch_soc(const Taper& t, double dc_kw, double avail_kw) {
  if (!t.enabled) return kSocPctMax;
  const double s = t.zero - (avail_kw / dc_kw) * (t.zero - t.start);
  return std::min(std::max(s, t.start), kSocPctMax);
}

}  // namespace

// ---------------------------------------------------------------------------
// Battery
// ---------------------------------------------------------------------------

Status BatteryParams::validate() const {
  IF_RETURN_IF_ERROR(check_range("battery.capacity_kwh", capacity_kwh, 0.0, kBatteryPackKwhMax, true, "kWh"));
  IF_RETURN_IF_ERROR(check_range("battery.charge_efficiency", charge_efficiency, 0.0, 1.0, true, ""));
  IF_RETURN_IF_ERROR(check_range("battery.charger_power_kw", charger_power_kw, 0.0, kChargerPowerKwMax, true, "kW"));
  IF_RETURN_IF_ERROR(
      check_range("battery.taper_start_soc_pct", taper_start_soc_pct, kSocPctMin, kSocPctMax, false, "%"));
  IF_RETURN_IF_ERROR(check_range("battery.taper_end_fraction", taper_end_fraction, 0.0, 1.0, true, ""));
  return {};
}

BatteryStep step_battery(const BatteryParams& p, BatteryState state, bool plugged_in, double load_kw,
                         DurationMs dt) {
  DCHECK(p.validate().has_value());
  DCHECK(std::isfinite(load_kw) && load_kw >= 0.0 && load_kw <= kLoadKwMax);
  DCHECK(dt >= 0);
  load_kw = std::isfinite(load_kw) ? std::clamp(load_kw, 0.0, kLoadKwMax) : 0.0;
  dt = std::max<DurationMs>(dt, 0);

  const double soc0 = clamp_soc(state.soc_pct);
  const double t_h = hours(dt);
  const double kwh_per_pct = p.capacity_kwh / 100.0;
  const double dc_kw = plugged_in ? p.charger_power_kw * p.charge_efficiency : 0.0;

  BatteryStep out;
  double soc = soc0;
  if (plugged_in && load_kw <= dc_kw) {
    // The charger serves the whole load; its spare output charges the battery.
    const double avail_kw = dc_kw - load_kw;
    double left_h = t_h;
    if (avail_kw > 0.0) {
      const Taper taper = make_taper(p, dc_kw);
      const double switch_soc = taper_switch_soc(taper, dc_kw, avail_kw);
      if (soc < switch_soc) {  // constant power up to where the taper bites (or 100%)
        const double rate_pct_per_h = avail_kw / kwh_per_pct;
        const double to_switch_h = (switch_soc - soc) / rate_pct_per_h;
        if (left_h <= to_switch_h) {
          soc += rate_pct_per_h * left_h;
          left_h = 0.0;
        } else {
          soc = switch_soc;
          left_h -= to_switch_h;
        }
      }
      if (left_h > 0.0 && taper.enabled && soc < kSocPctMax) {  // exponential approach
        soc = taper.zero - (taper.zero - soc) * det_exp(-taper.rate_per_h * left_h);
      }
      soc = std::min(soc, kSocPctMax);
    }
    out.load_energy_kwh = load_kw * t_h;
    out.battery_energy_kwh = (soc - soc0) * kwh_per_pct;
    out.grid_energy_kwh = (out.load_energy_kwh + out.battery_energy_kwh) / p.charge_efficiency;
  } else {
    // The battery supplies what the charger (if any) does not, until empty.
    const double net_kw = load_kw - dc_kw;  // > 0 here, or 0 with no load unplugged
    const double stored_kwh = soc0 * kwh_per_pct;
    double delivered_kwh = load_kw * t_h;
    double drawn_kwh = net_kw * t_h;
    if (drawn_kwh >= stored_kwh) {
      const double empty_h = net_kw > 0.0 ? stored_kwh / net_kw : t_h;
      delivered_kwh = load_kw * empty_h + dc_kw * (t_h - empty_h);
      drawn_kwh = stored_kwh;
      soc = kSocPctMin;
    } else {
      soc = soc0 - drawn_kwh / kwh_per_pct;
      soc = clamp_soc(soc);
    }
    out.load_energy_kwh = delivered_kwh;
    out.load_shortfall_kwh = std::max(0.0, load_kw * t_h - delivered_kwh);
    out.battery_energy_kwh = -drawn_kwh;
    out.grid_energy_kwh = plugged_in ? p.charger_power_kw * t_h : 0.0;
  }
  out.state.soc_pct = soc;
  DCHECK(soc >= kSocPctMin && soc <= kSocPctMax);
  return out;
}

DurationMs time_to_reach(const BatteryParams& p, double soc_from, double soc_to, double load_kw) {
  DCHECK(p.validate().has_value());
  if (!std::isfinite(soc_from) || !std::isfinite(soc_to) || !std::isfinite(load_kw)) return kDurationUnreachable;
  soc_from = clamp_soc(soc_from);
  if (soc_to <= soc_from) return 0;
  if (soc_to > kSocPctMax) return kDurationUnreachable;
  const double dc_kw = p.charger_power_kw * p.charge_efficiency;
  const double avail_kw = dc_kw - std::max(load_kw, 0.0);
  if (!(avail_kw > 0.0)) return kDurationUnreachable;

  const Taper taper = make_taper(p, dc_kw);
  const double switch_soc = taper_switch_soc(taper, dc_kw, avail_kw);
  const double kwh_per_pct = p.capacity_kwh / 100.0;
  double total_h = 0.0;
  double soc = soc_from;
  if (soc < switch_soc) {
    const double until = std::min(soc_to, switch_soc);
    total_h += (until - soc) * kwh_per_pct / avail_kw;
    soc = until;
  }
  if (soc < soc_to) {  // inside the taper: soc(t) = zero - (zero - soc) e^(-k t)
    DCHECK(taper.enabled);
    total_h += det_log((taper.zero - soc) / (taper.zero - soc_to)) / taper.rate_per_h;
  }
  const double ms = std::ceil(total_h * kMsPerHour);
  if (!(ms < 9.0e18)) return kDurationUnreachable;
  return static_cast<DurationMs>(ms);
}

double grid_energy_for_load_kwh(const BatteryParams& p, double load_kw, DurationMs dt) {
  DCHECK(p.validate().has_value());
  DCHECK(load_kw >= 0.0 && dt >= 0);
  return load_kw * hours(dt) / p.charge_efficiency;
}

// ---------------------------------------------------------------------------
// Accelerator
// ---------------------------------------------------------------------------

Status AcceleratorParams::validate() const {
  IF_RETURN_IF_ERROR(check_range("accelerator.idle_w", idle_w, 0.0, kAcceleratorPowerWMax, false, "W"));
  IF_RETURN_IF_ERROR(check_range("accelerator.max_w", max_w, 0.0, kAcceleratorPowerWMax, true, "W"));
  if (max_w < idle_w) {
    return Unexpected(ErrorCode::kInvalidArgument, "accelerator.max_w (" + format_double(max_w) +
                                                       " W) must be at least accelerator.idle_w (" +
                                                       format_double(idle_w) + " W)");
  }
  IF_RETURN_IF_ERROR(check_range("accelerator.thermal_resistance_c_per_w", thermal_resistance_c_per_w, 0.0,
                                 kThermalResistanceCPerWMax, true, "C/W"));
  if (thermal_time_constant_ms <= 0 || thermal_time_constant_ms > kThermalTimeConstantMsMax) {
    return Unexpected(thermal_time_constant_ms <= 0 ? ErrorCode::kInvalidArgument : ErrorCode::kOutOfRange,
                      "accelerator.thermal_time_constant_ms must be in (0, " +
                          std::to_string(kThermalTimeConstantMsMax) + "] ms, got " +
                          std::to_string(thermal_time_constant_ms));
  }
  IF_RETURN_IF_ERROR(check_range("accelerator.throttle_temp_c", throttle_temp_c, kTemperatureCMin,
                                 kTemperatureCMax, false, "C"));
  return {};
}

AcceleratorParams hw3_like() {
  AcceleratorParams a;
  a.idle_w = 20.0;
  a.max_w = 80.0;
  a.thermal_resistance_c_per_w = 0.4;
  a.thermal_time_constant_ms = 2 * kMinuteMs;
  a.throttle_temp_c = 85.0;
  return a;
}

AcceleratorParams orin_like() {
  AcceleratorParams a;
  a.idle_w = 15.0;
  a.max_w = 60.0;
  a.thermal_resistance_c_per_w = 0.6;
  a.thermal_time_constant_ms = 3 * kMinuteMs;
  a.throttle_temp_c = 85.0;
  return a;
}

AcceleratorParams thor_like() {
  AcceleratorParams a;
  a.idle_w = 40.0;
  a.max_w = 130.0;
  a.thermal_resistance_c_per_w = 0.3;
  a.thermal_time_constant_ms = 4 * kMinuteMs;
  a.throttle_temp_c = 85.0;
  return a;
}

Status validate_utilization(double utilization) {
  return check_range("utilization", utilization, 0.0, 1.0, false, "");
}

double accelerator_power_w(const AcceleratorParams& p, double utilization) {
  DCHECK(p.validate().has_value());
  DCHECK(validate_utilization(utilization).has_value());
  const double u = std::isnan(utilization) ? 1.0 : std::clamp(utilization, 0.0, 1.0);
  return p.idle_w + (p.max_w - p.idle_w) * u;
}

double steady_state_temp_c(const AcceleratorParams& p, double power_w, double ambient_c) {
  return ambient_c + power_w * p.thermal_resistance_c_per_w;
}

double max_sustained_power_w(const AcceleratorParams& p, double ambient_c) {
  const double w = (p.throttle_temp_c - ambient_c) / p.thermal_resistance_c_per_w;
  return w > 0.0 ? w : 0.0;
}

AcceleratorState step_thermal(const AcceleratorParams& p, AcceleratorState state, double power_w,
                              double ambient_c, DurationMs dt) {
  DCHECK(p.validate().has_value());
  DCHECK(std::isfinite(power_w) && power_w >= 0.0);
  DCHECK(std::isfinite(ambient_c) && std::isfinite(state.temp_c));
  DCHECK(dt >= 0);
  if (dt <= 0) return state;
  const double t_ss = steady_state_temp_c(p, power_w, ambient_c);
  const double decay =
      det_exp(-static_cast<double>(dt) / static_cast<double>(p.thermal_time_constant_ms));
  return AcceleratorState{t_ss + (state.temp_c - t_ss) * decay};
}

// ---------------------------------------------------------------------------
// Wear
// ---------------------------------------------------------------------------

Status WearParams::validate() const {
  IF_RETURN_IF_ERROR(check_range("wear.activation_energy_ev", activation_energy_ev, 0.0, kActivationEnergyEvMax,
                                 true, "eV"));
  IF_RETURN_IF_ERROR(
      check_range("wear.reference_temp_c", reference_temp_c, kTemperatureCMin, kTemperatureCMax, false, "C"));
  return {};
}

double arrhenius_factor(const WearParams& p, double temp_c) {
  DCHECK(p.validate().has_value());
  DCHECK(std::isfinite(temp_c) && temp_c >= kTemperatureCMin && temp_c <= kTemperatureCMax);
  const double t_ref_k = p.reference_temp_c + kZeroCelsiusK;
  const double t_k = temp_c + kZeroCelsiusK;
  return det_exp((p.activation_energy_ev / kBoltzmannEvPerK) * (1.0 / t_ref_k - 1.0 / t_k));
}

double wear_hours(const WearParams& p, double temp_c, DurationMs busy) {
  DCHECK(busy >= 0);
  return hours(busy) * arrhenius_factor(p, temp_c);
}

// ---------------------------------------------------------------------------
// Metering
// ---------------------------------------------------------------------------

void meter_add(Meter* meter, const WearParams& wear, double energy_kwh, DurationMs busy, double temp_start_c,
               double temp_end_c) {
  CHECK(meter != nullptr);
  DCHECK(std::isfinite(energy_kwh) && energy_kwh >= 0.0);
  DCHECK(busy >= 0);
  meter->energy_kwh += energy_kwh;
  meter->busy_ms += busy;
  if (busy > 0) {
    const double factor = temp_start_c == temp_end_c
                              ? arrhenius_factor(wear, temp_start_c)
                              : 0.5 * (arrhenius_factor(wear, temp_start_c) + arrhenius_factor(wear, temp_end_c));
    meter->wear_hours += hours(busy) * factor;
  }
}

}  // namespace idlefleet::core
