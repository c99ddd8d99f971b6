#include "core/policy.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <utility>

#include "common/check.h"

namespace idlefleet::core {

namespace {

// Owners read 28% or 28.5%, never 28.4999999.
std::string num(double v) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.1f", v);
  std::string out = buf;
  if (out.size() > 2 && out.compare(out.size() - 2, 2, ".0") == 0) out.resize(out.size() - 2);
  if (out == "-0") out = "0";
  return out;
}

// Micro-units as a decimal amount with at least two decimals: 350000 -> "0.35".
std::string money(int64_t micros) {
  const bool negative = micros < 0;
  // |micros| <= kPriceMicrosPerKwhAbsMax, so negation cannot overflow.
  const int64_t abs_micros = negative ? -micros : micros;
  char buf[48];
  std::snprintf(buf, sizeof buf, "%s%lld.%06lld", negative ? "-" : "", static_cast<long long>(abs_micros / 1'000'000),
                static_cast<long long>(abs_micros % 1'000'000));
  std::string out = buf;
  while (out.back() == '0' && out[out.size() - 3] != '.') out.pop_back();
  return out;
}

const char* weekday_short(Weekday d) {
  static constexpr const char* kNames[] = {"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"};
  return kNames[static_cast<int>(d)];
}

// "Mon 07:30"
std::string local_text(LocalTime t) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%s %02d:%02d", weekday_short(t.weekday), t.minute_of_day / 60,
                t.minute_of_day % 60);
  return buf;
}

std::string duration_text(DurationMs ms) {
  if (ms % kHourMs == 0 && ms >= kHourMs) return std::to_string(ms / kHourMs) + " h";
  if (ms >= kMinuteMs) return std::to_string(ms / kMinuteMs) + " min";
  return std::to_string(ms / kSecondMs) + " s";
}

Status check_number(const char* field, double v, double min, double max) {
  if (!std::isfinite(v)) {
    return Unexpected(ErrorCode::kInvalidArgument, std::string(field) + " is not a finite number");
  }
  if (v < min || v > max) {
    return Unexpected(ErrorCode::kOutOfRange,
                      std::string(field) + " " + num(v) + " is outside [" + num(min) + ", " + num(max) + "]");
  }
  return {};
}

Status check_price(const char* field, int64_t micros) {
  if (micros < -kPriceMicrosPerKwhAbsMax || micros > kPriceMicrosPerKwhAbsMax) {
    return Unexpected(ErrorCode::kOutOfRange, std::string(field) + " " + std::to_string(micros) +
                                                  " micro-units/kWh exceeds kPriceMicrosPerKwhAbsMax");
  }
  return {};
}

Status check_schedule(const char* name, const std::vector<TariffEntry>& entries) {
  if (entries.empty()) {
    return Unexpected(ErrorCode::kInvalidArgument, std::string("tariff.") + name + " has no entries");
  }
  if (entries.size() > kTariffEntriesPerDayMax) {
    return Unexpected(ErrorCode::kOutOfRange, std::string("tariff.") + name + " has " +
                                                  std::to_string(entries.size()) + " entries, over " +
                                                  std::to_string(kTariffEntriesPerDayMax));
  }
  if (entries[0].start_minute_of_day != 0) {
    return Unexpected(ErrorCode::kInvalidArgument,
                      std::string("tariff.") + name + " must start at minute 0 so that every minute has a price");
  }
  for (size_t i = 0; i < entries.size(); ++i) {
    const std::string field = std::string("tariff.") + name + "[" + std::to_string(i) + "]";
    const int start = entries[i].start_minute_of_day;
    if (start < 0 || start >= kMinutesPerDay) {
      return Unexpected(ErrorCode::kOutOfRange,
                        field + ".start_minute_of_day " + std::to_string(start) + " is outside [0, 1440)");
    }
    if (i > 0 && start <= entries[i - 1].start_minute_of_day) {
      return Unexpected(ErrorCode::kInvalidArgument,
                        field + ".start_minute_of_day " + std::to_string(start) +
                            " does not follow the previous entry's (entries must be sorted and distinct)");
    }
    IF_RETURN_IF_ERROR(check_price((field + ".price_micros_per_kwh").c_str(), entries[i].price_micros_per_kwh));
  }
  return {};
}

int64_t schedule_price(const std::vector<TariffEntry>& entries, int minute_of_day) {
  int64_t price = entries.front().price_micros_per_kwh;
  for (const TariffEntry& e : entries) {
    if (e.start_minute_of_day > minute_of_day) break;
    price = e.price_micros_per_kwh;
  }
  return price;
}

bool within_windows(const std::vector<WeeklyWindow>& windows, int minute_of_week) {
  for (const WeeklyWindow& w : windows) {
    if (minute_of_week >= w.start_minute_of_week && minute_of_week < w.end_minute_of_week) return true;
  }
  return false;
}

// The signals without which the decision cannot be made. Charging state,
// charger power and ambient temperature inform models, not this decision.
constexpr SignalId kRequiredSignals[] = {
    SignalId::kSpeed,          SignalId::kGear,           SignalId::kSoc,
    SignalId::kChargerConnected, SignalId::kDriverSeatOccupied, SignalId::kDriverDoorOpen,
    SignalId::kAcceleratorTemperature,
};

}  // namespace

Tariff Tariff::flat(int64_t micros_per_kwh) {
  Tariff t;
  t.kind = Kind::kFlat;
  t.flat_micros_per_kwh = micros_per_kwh;
  return t;
}

Tariff Tariff::time_of_use(std::vector<TariffEntry> weekday_entries, std::vector<TariffEntry> weekend_entries) {
  Tariff t;
  t.kind = Kind::kTimeOfUse;
  t.weekday = std::move(weekday_entries);
  t.weekend = std::move(weekend_entries);
  return t;
}

Status Tariff::validate() const {
  switch (kind) {
    case Kind::kFlat: return check_price("tariff.flat_micros_per_kwh", flat_micros_per_kwh);
    case Kind::kTimeOfUse:
      IF_RETURN_IF_ERROR(check_schedule("weekday", weekday));
      return check_schedule("weekend", weekend);
  }
  return Unexpected(ErrorCode::kInvalidArgument,
                    "tariff.kind " + std::to_string(static_cast<int>(kind)) + " is neither flat nor time-of-use");
}

int64_t price_at(const Tariff& tariff, LocalTime local) {
  if (tariff.kind == Tariff::Kind::kFlat) return tariff.flat_micros_per_kwh;
  const std::vector<TariffEntry>& entries = local.weekend() ? tariff.weekend : tariff.weekday;
  DCHECK(!entries.empty());
  return schedule_price(entries, local.minute_of_day);
}

Status OwnerPolicy::validate() const {
  IF_RETURN_IF_ERROR(check_number("soc_floor_pct", soc_floor_pct, kPolicyPctMin, kPolicyPctMax));
  IF_RETURN_IF_ERROR(check_number("target_soc_pct", target_soc_pct, kPolicyPctMin, kPolicyPctMax));
  if (soc_floor_pct > target_soc_pct) {
    return Unexpected(ErrorCode::kInvalidArgument, "soc_floor_pct " + num(soc_floor_pct) +
                                                       " is above target_soc_pct " + num(target_soc_pct));
  }
  if (departures_minute_of_week.size() > kDeparturesMax) {
    return Unexpected(ErrorCode::kOutOfRange, "departures_minute_of_week has " +
                                                  std::to_string(departures_minute_of_week.size()) +
                                                  " entries, over kDeparturesMax (" + std::to_string(kDeparturesMax) +
                                                  ")");
  }
  for (size_t i = 0; i < departures_minute_of_week.size(); ++i) {
    const int m = departures_minute_of_week[i];
    const std::string field = "departures_minute_of_week[" + std::to_string(i) + "]";
    if (m < 0 || m >= kMinutesPerWeek) {
      return Unexpected(ErrorCode::kOutOfRange, field + " " + std::to_string(m) + " is outside [0, 10080)");
    }
    if (i > 0 && m <= departures_minute_of_week[i - 1]) {
      return Unexpected(ErrorCode::kInvalidArgument,
                        field + " " + std::to_string(m) + " does not follow the previous (must be sorted, distinct)");
    }
  }
  if (departure_margin_ms < 0 || departure_margin_ms > kDepartureMarginMsMax) {
    return Unexpected(ErrorCode::kOutOfRange, "departure_margin_ms " + std::to_string(departure_margin_ms) +
                                                  " is outside [0, kDepartureMarginMsMax]");
  }
  IF_RETURN_IF_ERROR(check_number("accelerator_temp_limit_c", accelerator_temp_limit_c, kAcceleratorTempLimitCMin,
                                  kAcceleratorTempLimitCMax));
  if (allowed_windows.size() > kAllowedWindowsMax) {
    return Unexpected(ErrorCode::kOutOfRange, "allowed_windows has " + std::to_string(allowed_windows.size()) +
                                                  " entries, over kAllowedWindowsMax (" +
                                                  std::to_string(kAllowedWindowsMax) + ")");
  }
  for (size_t i = 0; i < allowed_windows.size(); ++i) {
    const WeeklyWindow& w = allowed_windows[i];
    const std::string field = "allowed_windows[" + std::to_string(i) + "]";
    if (w.start_minute_of_week < 0 || w.end_minute_of_week > kMinutesPerWeek ||
        w.start_minute_of_week >= w.end_minute_of_week) {
      return Unexpected(ErrorCode::kOutOfRange, field + " [" + std::to_string(w.start_minute_of_week) + ", " +
                                                    std::to_string(w.end_minute_of_week) +
                                                    ") is empty or outside [0, 10080]");
    }
    if (i > 0 && w.start_minute_of_week < allowed_windows[i - 1].end_minute_of_week) {
      return Unexpected(ErrorCode::kInvalidArgument,
                        field + " overlaps or precedes the previous window (must be sorted, non-overlapping)");
    }
  }
  if (price_cap_micros_per_kwh) IF_RETURN_IF_ERROR(check_price("price_cap_micros_per_kwh", *price_cap_micros_per_kwh));
  IF_RETURN_IF_ERROR(tariff.validate());
  IF_RETURN_IF_ERROR(
      check_number("wear_budget_hours_per_month", wear_budget_hours_per_month, 0.0, kWearBudgetHoursMax));
  return {};
}

std::optional<TimeMs> next_declared_departure(const OwnerPolicy& policy, TimeMs now, int utc_offset_minutes) {
  std::optional<TimeMs> best;
  for (int m : policy.departures_minute_of_week) {
    const TimeMs t = next_local_minute_of_week(now, utc_offset_minutes, m);
    if (!best || t < *best) best = t;
  }
  return best;
}

Status EligibilityInputs::validate() const {
  IF_RETURN_IF_ERROR(policy.validate());
  IF_RETURN_IF_ERROR(validate_signals(signals));
  if (utc_offset_minutes < kUtcOffsetMinutesMin || utc_offset_minutes > kUtcOffsetMinutesMax) {
    return Unexpected(ErrorCode::kOutOfRange,
                      "utc_offset_minutes " + std::to_string(utc_offset_minutes) + " is outside [-720, 840]");
  }
  // A zero capacity would divide by zero in the target check.
  IF_RETURN_IF_ERROR(check_number("battery_capacity_kwh", battery_capacity_kwh, 0.0, kBatteryCapacityKwhMax));
  if (battery_capacity_kwh <= 0.0) {
    return Unexpected(ErrorCode::kOutOfRange, "battery_capacity_kwh must be above 0");
  }
  IF_RETURN_IF_ERROR(check_number("charge_power_kw", charge_power_kw, 0.0, kChargePowerKwMax));
  IF_RETURN_IF_ERROR(check_number("inference_power_kw", inference_power_kw, 0.0, kInferencePowerKwMax));
  IF_RETURN_IF_ERROR(check_number("wear_used_hours", wear_used_hours, 0.0, kWearUsedHoursMax));
  IF_RETURN_IF_ERROR(check_number("trip_reserve_pct", trip_reserve_pct, 0.0, kSocPctMax));
  if (next_departure && (*next_departure < 0 || *next_departure > kPlausibleTimeMsMax)) {
    return Unexpected(ErrorCode::kOutOfRange, "next_departure " + std::to_string(*next_departure) +
                                                  " ms is outside [0, kPlausibleTimeMsMax]");
  }
  if (signal_age_ms_max < 0 || signal_age_ms_max > kSignalAgeMsMaxLimit) {
    return Unexpected(ErrorCode::kOutOfRange, "signal_age_ms_max " + std::to_string(signal_age_ms_max) +
                                                  " is outside [0, kSignalAgeMsMaxLimit]");
  }
  return {};
}

const char* reason_code_name(ReasonCode code) {
  switch (code) {
    case ReasonCode::kInvalidInputs: return "invalid_inputs";
    case ReasonCode::kOptedOut: return "opted_out";
    case ReasonCode::kSignalsMissing: return "signals_missing";
    case ReasonCode::kSignalsStale: return "signals_stale";
    case ReasonCode::kNotParked: return "not_parked";
    case ReasonCode::kOccupied: return "occupied";
    case ReasonCode::kDoorOpen: return "door_open";
    case ReasonCode::kSocAtOrBelowFloor: return "soc_at_or_below_floor";
    case ReasonCode::kTargetUnreachable: return "target_unreachable";
    case ReasonCode::kDepartureSoon: return "departure_soon";
    case ReasonCode::kAcceleratorTooHot: return "accelerator_too_hot";
    case ReasonCode::kOutsideAllowedHours: return "outside_allowed_hours";
    case ReasonCode::kPriceAboveCap: return "price_above_cap";
    case ReasonCode::kWearBudgetUsed: return "wear_budget_used";
  }
  return "unknown";
}

bool EligibilityDecision::has(ReasonCode code) const {
  for (const EligibilityReason& r : reasons) {
    if (r.code == code) return true;
  }
  return false;
}

EligibilityDecision decide_eligibility(const EligibilityInputs& in, TimeMs now) {
  EligibilityDecision d;
  auto add = [&d](ReasonCode code, std::string text) { d.reasons.push_back({code, std::move(text)}); };

  if (now < 0 || now > kPlausibleTimeMsMax) {
    add(ReasonCode::kInvalidInputs, "the decision time " + std::to_string(now) + " ms is implausible");
    return d;
  }
  if (const Status st = in.validate(); !st) {
    add(ReasonCode::kInvalidInputs, "settings are invalid: " + st.error().message);
    return d;
  }
  const OwnerPolicy& p = in.policy;
  const VehicleSignals& s = in.signals;
  const LocalTime local = to_local(now, in.utc_offset_minutes);

  if (!p.opted_in) add(ReasonCode::kOptedOut, "you have not opted in to earning with this car");

  // Age in either direction: a feed clock far ahead of ours is as untrustworthy as one far behind.
  const bool fresh = s.heard_at && std::llabs(now - *s.heard_at) <= in.signal_age_ms_max;
  bool signals_usable = fresh;
  if (fresh) {
    std::string missing;
    for (SignalId id : kRequiredSignals) {
      if (signal_known(s, id)) continue;
      if (!missing.empty()) missing += ", ";
      missing += signal_spec(id).owner_name;
    }
    if (!missing.empty()) add(ReasonCode::kSignalsMissing, "waiting for the car to report: " + missing);
  } else {
    std::string text = "the car has not reported yet";
    if (s.heard_at && *s.heard_at > now) {
      text = "the car's last report is dated " + duration_text(*s.heard_at - now) + " in the future";
    } else if (s.heard_at) {
      text = "the car has not reported for " + duration_text(now - *s.heard_at) + " (limit " +
             duration_text(in.signal_age_ms_max) + ")";
    }
    add(ReasonCode::kSignalsStale, std::move(text));
  }
  // Known values from a fresh feed only; a stale feed's values describe the past.
  auto known = [&](const auto& field) { return signals_usable && field.has_value(); };

  if (known(s.gear) && known(s.speed_kmh) && (*s.gear != kGearPark || *s.speed_kmh != 0.0)) {
    std::string text = "the car is ";
    if (*s.speed_kmh != 0.0) {
      text += "moving (" + num(*s.speed_kmh) + " km/h)";
      if (*s.gear != kGearPark) text += " in gear " + gear_name(*s.gear);
    } else {
      text += "not in park (gear " + gear_name(*s.gear) + ")";
    }
    add(ReasonCode::kNotParked, text);
  }
  if (known(s.driver_seat_occupied) && *s.driver_seat_occupied) {
    add(ReasonCode::kOccupied, "someone is in the driver's seat");
  }
  if (known(s.driver_door_open) && *s.driver_door_open) add(ReasonCode::kDoorOpen, "the driver's door is open");
  if (known(s.soc_pct) && *s.soc_pct <= p.soc_floor_pct) {
    add(ReasonCode::kSocAtOrBelowFloor,
        "battery " + num(*s.soc_pct) + "% is at or below your floor of " + num(p.soc_floor_pct) + "%");
  }

  // The departure that matters is the earliest known one still ahead.
  std::optional<TimeMs> departure = next_declared_departure(p, now, in.utc_offset_minutes);
  if (in.next_departure && *in.next_departure >= now && (!departure || *in.next_departure < *departure)) {
    departure = in.next_departure;
  }
  if (departure) {
    const TimeMs deadline = *departure - p.departure_margin_ms;
    const std::string when = local_text(to_local(*departure, in.utc_offset_minutes));
    if (now >= deadline) {
      add(ReasonCode::kDepartureSoon, "your next departure (" + when + ") is within the " +
                                          duration_text(p.departure_margin_ms) + " margin");
    } else if (known(s.soc_pct) && known(s.charger_connected)) {
      // Serving all the way to the deadline must still leave the target (see policy.h);
      // on battery, the drain counts up to the departure (standby through the margin).
      const double net_kw = (*s.charger_connected ? in.charge_power_kw : 0.0) - in.inference_power_kw;
      const TimeMs horizon = net_kw < 0.0 ? *departure : deadline;
      const double hours = static_cast<double>(horizon - now) / static_cast<double>(kHourMs);
      const double soc_projected_pct = *s.soc_pct + 100.0 * net_kw * hours / in.battery_capacity_kwh;
      const double reserve_pct = net_kw < 0.0 ? in.trip_reserve_pct : 0.0;
      if (soc_projected_pct < p.target_soc_pct + reserve_pct) {
        add(ReasonCode::kTargetUnreachable,
            "working now would leave " + num(soc_projected_pct < 0 ? 0 : soc_projected_pct) +
                "% by your departure (" + when + "), below your target of " + num(p.target_soc_pct) + "%" +
                (reserve_pct > 0.0 ? " plus " + num(reserve_pct) + "% kept for driving before then" : ""));
      }
    }
  }

  if (known(s.accelerator_temperature_c) && *s.accelerator_temperature_c >= p.accelerator_temp_limit_c) {
    add(ReasonCode::kAcceleratorTooHot, "the AI computer is at " + num(*s.accelerator_temperature_c) +
                                            " °C, at or above your limit of " + num(p.accelerator_temp_limit_c) +
                                            " °C");
  }
  if (!within_windows(p.allowed_windows, local.minute_of_week())) {
    add(ReasonCode::kOutsideAllowedHours, "it is outside your allowed hours (now " + local_text(local) + ")");
  }
  if (p.price_cap_micros_per_kwh) {
    const int64_t price = price_at(p.tariff, local);
    if (price > *p.price_cap_micros_per_kwh) {
      add(ReasonCode::kPriceAboveCap, "electricity costs " + money(price) + " per kWh now, above your cap of " +
                                          money(*p.price_cap_micros_per_kwh));
    }
  }
  if (in.wear_used_hours >= p.wear_budget_hours_per_month) {
    add(ReasonCode::kWearBudgetUsed, "this month's wear budget of " + num(p.wear_budget_hours_per_month) +
                                         " accelerator-hours is used up (" + num(in.wear_used_hours) + " h)");
  }

  d.eligible = d.reasons.empty();
  return d;
}

std::string format_reasons(const std::vector<EligibilityReason>& reasons) {
  if (reasons.empty()) return "eligible";
  std::string out;
  for (const EligibilityReason& r : reasons) {
    if (!out.empty()) out += "; ";
    out += r.text;
  }
  return out;
}

std::string format_reasons(const EligibilityDecision& decision) { return format_reasons(decision.reasons); }

}  // namespace idlefleet::core
