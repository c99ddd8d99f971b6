#include "sim/scenario.h"

#include <toml++/toml.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <exception>
#include <functional>
#include <initializer_list>
#include <map>
#include <utility>

#include "common/text_file.h"
#include "common/toml_names.h"

namespace idlefleet::sim {

namespace {

// Limits on numbers that the header states as ranges.
constexpr double kShareSumTolerance = 1e-6;
constexpr double kMemoryGibMax = 1024.0;
constexpr double kTokensPerSecondMax = 1e6;
constexpr double kPowerKwMax = 10.0;
constexpr double kPrefillSpeedupMax = 1e4;
constexpr uint64_t kJobTokensMax = 1'000'000;
constexpr double kTripEnergyKwhMax = 100.0;
constexpr double kAmbientCMin = -50.0;
constexpr double kAmbientCMax = 60.0;
constexpr double kInteractivePeakTokensPerSecondMax = 1e13;  // 1e5 tokens/s for each of 1e8 cars
constexpr double kBatchTokensPerDayMax = 1e18;
constexpr core::DurationMs kInteractiveTimeoutMsMin = core::kSecondMs;
constexpr core::DurationMs kInteractiveTimeoutMsMax = core::kHourMs;
constexpr double kPerVehicleMbpsMax = 1e5;
constexpr double kTotalGbpsMax = 1e7;
constexpr uint64_t kPriceMicrosPerMtokMax = 1'000'000'000'000;  // a million units per million tokens
constexpr uint64_t kOwnerSharePpmMax = 1'000'000;
constexpr uint64_t kWearMicrosPerHourMax = 1'000'000'000'000;
constexpr int kHoursPerDay = 24;
constexpr int64_t kMinutesPerDay = core::kMinutesPerDay;

// Shortest text that reads back as the same double ("0.3", "-70"); whole
// numbers below 1e15 without an exponent ("1000000", not "1e+06").
std::string num(double v) {
  if (std::isfinite(v) && v == std::trunc(v) && std::fabs(v) < 1e15) return std::to_string(static_cast<int64_t>(v));
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}

// A computed value to 6 significant digits: a sum of shares "1.3", not
// "1.2999999999999998".
std::string approx(double v) {
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::general, 6);
  return std::string(buf, r.ptr);
}

std::string at(std::string_view list, size_t i) { return std::string(list) + "[" + std::to_string(i) + "]"; }

Unexpected bad(ErrorCode code, std::string_view key, const std::string& what) {
  return Unexpected(code, std::string(key) + ": " + what);
}

// A number in [lo, hi], or (lo, hi] when lo_open: finite, in range.
Status check_range(std::string_view key, double v, double lo, double hi, bool lo_open = false) {
  if (!std::isfinite(v)) return bad(ErrorCode::kInvalidArgument, key, num(v) + " is not a finite number");
  if (v < lo || v > hi || (lo_open && v == lo)) {
    return bad(ErrorCode::kOutOfRange, key,
               num(v) + " is not in " + (lo_open ? "(" : "[") + num(lo) + ", " + num(hi) + "]");
  }
  return {};
}

Status check_uint(std::string_view key, uint64_t v, uint64_t lo, uint64_t hi) {
  if (v < lo || v > hi) {
    return bad(ErrorCode::kOutOfRange, key,
               std::to_string(v) + " is not in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  }
  return {};
}

Status check_share(std::string_view key, double v) {
  if (!std::isfinite(v)) return bad(ErrorCode::kInvalidArgument, key, num(v) + " is not a finite number");
  if (v > 1.0) return bad(ErrorCode::kOutOfRange, key, num(v) + " is above 1 (a share)");
  if (v < 0.0) return bad(ErrorCode::kOutOfRange, key, num(v) + " is below 0 (a share)");
  return {};
}

// A class list: 1..kScenarioClassesMax entries whose shares sum to 1.
template <class T>
Status check_shares(std::string_view list, const std::vector<T>& entries, std::string_view field,
                    double T::*share, size_t max) {
  if (entries.empty()) {
    return bad(ErrorCode::kInvalidArgument, list, "at least one [[" + std::string(list) + "]] entry is needed");
  }
  if (entries.size() > max) {
    return bad(ErrorCode::kOutOfRange, list,
               std::to_string(entries.size()) + " entries, more than " + std::to_string(max));
  }
  double sum = 0.0;
  for (size_t i = 0; i < entries.size(); ++i) {
    IF_RETURN_IF_ERROR(check_share(at(list, i) + "." + std::string(field), entries[i].*share));
    sum += entries[i].*share;
  }
  if (std::fabs(sum - 1.0) > kShareSumTolerance) {
    return bad(ErrorCode::kInvalidArgument, list,
               "the " + std::string(field) + "s sum to " + approx(sum) + ", they must sum to 1");
  }
  return {};
}

// Text shown in reports: present, bounded, no control characters; names are
// also [A-Za-z0-9._-]+ so that they fit file names and CSV columns.
Status check_text(std::string_view key, std::string_view v, size_t bytes_max, bool name) {
  if (v.empty()) return bad(ErrorCode::kInvalidArgument, key, "is empty");
  if (v.size() > bytes_max) {
    return bad(ErrorCode::kOutOfRange, key,
               std::to_string(v.size()) + " bytes, more than " + std::to_string(bytes_max));
  }
  for (char c : v) {
    const auto u = static_cast<unsigned char>(c);
    if (name) {
      const bool ok = (u >= 'a' && u <= 'z') || (u >= 'A' && u <= 'Z') || (u >= '0' && u <= '9') || u == '.' ||
                      u == '_' || u == '-';
      if (!ok) return bad(ErrorCode::kInvalidArgument, key, "'" + std::string(v) + "' must be [A-Za-z0-9._-]+");
    } else if (u < 0x20 || u == 0x7f) {
      return bad(ErrorCode::kInvalidArgument, key, "contains a control character");
    }
  }
  return {};
}

// Names unique within a list.
template <class T>
Status check_names(std::string_view list, const std::vector<T>& entries) {
  for (size_t i = 0; i < entries.size(); ++i) {
    const std::string key = at(list, i) + ".name";
    IF_RETURN_IF_ERROR(check_text(key, entries[i].name, kScenarioNameBytesMax, true));
    for (size_t j = 0; j < i; ++j) {
      if (entries[j].name == entries[i].name) {
        return bad(ErrorCode::kInvalidArgument, key,
                   "'" + entries[i].name + "' repeats " + at(list, j) + ".name (names are unique)");
      }
    }
  }
  return {};
}

std::string hhmm(int minute_of_day) {
  std::string out(5, '0');
  out[0] = static_cast<char>('0' + minute_of_day / 600);
  out[1] = static_cast<char>('0' + minute_of_day / 60 % 10);
  out[2] = ':';
  out[3] = static_cast<char>('0' + minute_of_day % 60 / 10);
  out[4] = static_cast<char>('0' + minute_of_day % 10);
  return out;
}

Status check_schedule(const std::string& key, const std::vector<core::TariffEntry>& entries) {
  if (entries.empty()) return bad(ErrorCode::kInvalidArgument, key, "has no entries");
  if (entries.size() > core::kTariffEntriesPerDayMax) {
    return bad(ErrorCode::kOutOfRange, key,
               std::to_string(entries.size()) + " entries, more than " + std::to_string(core::kTariffEntriesPerDayMax));
  }
  for (size_t i = 0; i < entries.size(); ++i) {
    const std::string entry = at(key, i);
    const int start = entries[i].start_minute_of_day;
    if (start < 0 || start >= kMinutesPerDay) {
      return bad(ErrorCode::kOutOfRange, entry + ".start", "minute " + std::to_string(start) + " is not in a day");
    }
    if (i == 0 && start != 0) {
      return bad(ErrorCode::kInvalidArgument, entry + ".start",
                 hhmm(start) + ": the first entry starts at \"00:00\" so that every minute has a price");
    }
    if (i > 0 && start <= entries[i - 1].start_minute_of_day) {
      return bad(ErrorCode::kInvalidArgument, entry + ".start",
                 hhmm(start) + " does not follow " + hhmm(entries[i - 1].start_minute_of_day) +
                     " (starts increase through the day)");
    }
    const int64_t price = entries[i].price_micros_per_kwh;
    if (price < -core::kPriceMicrosPerKwhAbsMax || price > core::kPriceMicrosPerKwhAbsMax) {
      return bad(ErrorCode::kOutOfRange, entry + ".micros_per_kwh",
                 std::to_string(price) + " is beyond +-" + std::to_string(core::kPriceMicrosPerKwhAbsMax));
    }
  }
  return {};
}

Status check_policy(const std::string& key, const ScenarioPolicy& p) {
  const core::OwnerPolicy& o = p.policy;
  IF_RETURN_IF_ERROR(check_range(key + ".soc_floor_pct", o.soc_floor_pct, core::kPolicyPctMin, core::kPolicyPctMax));
  IF_RETURN_IF_ERROR(check_range(key + ".target_soc_pct", o.target_soc_pct, core::kPolicyPctMin, core::kPolicyPctMax));
  if (o.soc_floor_pct > o.target_soc_pct) {
    return bad(ErrorCode::kInvalidArgument, key + ".soc_floor_pct",
               num(o.soc_floor_pct) + " is above target_soc_pct " + num(o.target_soc_pct));
  }
  if (o.departure_margin_ms < 0 || o.departure_margin_ms > core::kDepartureMarginMsMax ||
      o.departure_margin_ms % core::kMinuteMs != 0) {
    return bad(ErrorCode::kOutOfRange, key + ".departure_margin_minutes",
               std::to_string(o.departure_margin_ms / core::kMinuteMs) + " is not in [0, " +
                   std::to_string(core::kDepartureMarginMsMax / core::kMinuteMs) + "]");
  }
  IF_RETURN_IF_ERROR(check_range(key + ".accelerator_temp_limit_c", o.accelerator_temp_limit_c,
                                 core::kAcceleratorTempLimitCMin, core::kAcceleratorTempLimitCMax));
  if (o.price_cap_micros_per_kwh &&
      (*o.price_cap_micros_per_kwh < -core::kPriceMicrosPerKwhAbsMax ||
       *o.price_cap_micros_per_kwh > core::kPriceMicrosPerKwhAbsMax)) {
    return bad(ErrorCode::kOutOfRange, key + ".price_cap_micros_per_kwh",
               std::to_string(*o.price_cap_micros_per_kwh) + " is beyond +-" +
                   std::to_string(core::kPriceMicrosPerKwhAbsMax));
  }
  IF_RETURN_IF_ERROR(
      check_range(key + ".wear_budget_hours_per_month", o.wear_budget_hours_per_month, 0.0, core::kWearBudgetHoursMax));
  // The rest (windows, departures, the tariff) is the core's to judge.
  if (Status st = o.validate(); !st) return bad(st.error().code, key, st.error().message);
  return {};
}

}  // namespace

Status Scenario::validate() const {
  IF_RETURN_IF_ERROR(check_text("name", name, kScenarioNameBytesMax, true));
  if (!description.empty()) IF_RETURN_IF_ERROR(check_text("description", description, kScenarioTextBytesMax, false));
  if (days < 1 || days > kScenarioDaysMax) {
    return bad(ErrorCode::kOutOfRange, "days",
               std::to_string(days) + " is not in [1, " + std::to_string(kScenarioDaysMax) + "]");
  }
  const core::TimeMs start_min = core::days_from_civil(kScenarioStartYearMin, 1, 1) * core::kDayMs;
  const core::TimeMs start_max = core::days_from_civil(kScenarioStartYearMax + 1, 1, 1) * core::kDayMs;
  if (start_ms < start_min - core::kDayMs || start_ms >= start_max + core::kDayMs) {
    return bad(ErrorCode::kOutOfRange, "start",
               "is not in [" + std::to_string(kScenarioStartYearMin) + ", " + std::to_string(kScenarioStartYearMax) +
                   "]");
  }

  IF_RETURN_IF_ERROR(check_uint("fleet.vehicles", fleet.vehicles, 1, kScenarioVehiclesMax));
  IF_RETURN_IF_ERROR(check_range("fleet.battery_kwh", fleet.battery_kwh, 0.0, core::kBatteryCapacityKwhMax, true));
  IF_RETURN_IF_ERROR(check_share("fleet.home_charging_share", fleet.home_charging_share));
  IF_RETURN_IF_ERROR(check_share("fleet.plug_in_probability", fleet.plug_in_probability));
  IF_RETURN_IF_ERROR(check_range("fleet.trip_energy_kwh", fleet.trip_energy_kwh, 0.0, kTripEnergyKwhMax, true));
  IF_RETURN_IF_ERROR(check_range("fleet.ambient_c", fleet.ambient_c, kAmbientCMin, kAmbientCMax));
  if (fleet.utc_offset_minutes < core::kUtcOffsetMinutesMin || fleet.utc_offset_minutes > core::kUtcOffsetMinutesMax) {
    return bad(ErrorCode::kOutOfRange, "fleet.utc_offset_minutes",
               std::to_string(fleet.utc_offset_minutes) + " is not in [" + std::to_string(core::kUtcOffsetMinutesMin) +
                   ", " + std::to_string(core::kUtcOffsetMinutesMax) + "]");
  }

  IF_RETURN_IF_ERROR(check_shares("models", models, "demand_share", &ScenarioModel::demand_share, kScenarioModelsMax));
  IF_RETURN_IF_ERROR(check_names("models", models));
  for (size_t i = 0; i < models.size(); ++i) {
    const std::string key = at("models", i);
    const ScenarioModel& m = models[i];
    IF_RETURN_IF_ERROR(check_range(key + ".memory_gib", m.memory_gib, 0.0, kMemoryGibMax, true));
    IF_RETURN_IF_ERROR(check_range(key + ".download_gib", m.download_gib, 0.0, kMemoryGibMax, true));
    IF_RETURN_IF_ERROR(check_uint(key + ".prompt_tokens", m.prompt_tokens, 1, kJobTokensMax));
    IF_RETURN_IF_ERROR(check_uint(key + ".completion_tokens", m.completion_tokens, 1, kJobTokensMax));
  }

  IF_RETURN_IF_ERROR(check_shares("computers", computers, "share", &ScenarioComputer::share, kScenarioClassesMax));
  IF_RETURN_IF_ERROR(check_names("computers", computers));
  for (size_t i = 0; i < computers.size(); ++i) {
    const std::string key = at("computers", i);
    const ScenarioComputer& c = computers[i];
    IF_RETURN_IF_ERROR(check_range(key + ".power_kw", c.power_kw, 0.0, kPowerKwMax, true));
    IF_RETURN_IF_ERROR(check_range(key + ".memory_gib", c.memory_gib, 0.0, kMemoryGibMax, true));
    IF_RETURN_IF_ERROR(check_range(key + ".prefill_speedup", c.prefill_speedup, 1.0, kPrefillSpeedupMax));
    if (c.tokens_per_second.empty()) {
      return bad(ErrorCode::kInvalidArgument, key + ".tokens_per_second",
                 "is empty: the class would serve no model");
    }
    if (c.tokens_per_second.size() > kScenarioModelsMax) {
      return bad(ErrorCode::kOutOfRange, key + ".tokens_per_second",
                 std::to_string(c.tokens_per_second.size()) + " entries, more than " +
                     std::to_string(kScenarioModelsMax));
    }
    for (size_t j = 0; j < c.tokens_per_second.size(); ++j) {
      // Not a structured binding: clang 14 (the fuzz build) cannot capture one in a lambda.
      const std::string& model = c.tokens_per_second[j].first;
      const double rate = c.tokens_per_second[j].second;
      const std::string rate_key = key + ".tokens_per_second." + model;
      IF_RETURN_IF_ERROR(check_text(key + ".tokens_per_second", model, kScenarioNameBytesMax, true));
      const bool known =
          std::any_of(models.begin(), models.end(), [&](const ScenarioModel& m) { return m.name == model; });
      if (!known) {
        return bad(ErrorCode::kNotFound, rate_key, "no [[models]] entry is named '" + model + "'");
      }
      for (size_t k = 0; k < j; ++k) {
        if (c.tokens_per_second[k].first == model) {
          return bad(ErrorCode::kInvalidArgument, rate_key, "'" + model + "' is listed twice");
        }
      }
      IF_RETURN_IF_ERROR(check_range(rate_key, rate, 0.0, kTokensPerSecondMax, true));
    }
  }

  // Cars that charge at home need chargers to draw from.
  if (fleet.home_charging_share > 0.0 || !chargers.empty()) {
    IF_RETURN_IF_ERROR(check_shares("chargers", chargers, "share", &ScenarioCharger::share, kScenarioClassesMax));
  }
  for (size_t i = 0; i < chargers.size(); ++i) {
    IF_RETURN_IF_ERROR(
        check_range(at("chargers", i) + ".power_kw", chargers[i].power_kw, 0.0, core::kChargePowerKwMax, true));
  }

  IF_RETURN_IF_ERROR(check_shares("tariffs", tariffs, "share", &ScenarioTariff::share, kScenarioClassesMax));
  IF_RETURN_IF_ERROR(check_names("tariffs", tariffs));
  for (size_t i = 0; i < tariffs.size(); ++i) {
    const std::string key = at("tariffs", i);
    const core::Tariff& t = tariffs[i].tariff;
    if (t.kind == core::Tariff::Kind::kFlat) {
      if (t.flat_micros_per_kwh < -core::kPriceMicrosPerKwhAbsMax ||
          t.flat_micros_per_kwh > core::kPriceMicrosPerKwhAbsMax) {
        return bad(ErrorCode::kOutOfRange, key + ".micros_per_kwh",
                   std::to_string(t.flat_micros_per_kwh) + " is beyond +-" +
                       std::to_string(core::kPriceMicrosPerKwhAbsMax));
      }
    } else {
      IF_RETURN_IF_ERROR(check_schedule(key + ".weekday", t.weekday));
      IF_RETURN_IF_ERROR(check_schedule(key + ".weekend", t.weekend));
    }
    if (Status st = t.validate(); !st) return bad(st.error().code, key, st.error().message);
  }

  IF_RETURN_IF_ERROR(check_shares("policies", policies, "share", &ScenarioPolicy::share, kScenarioClassesMax));
  IF_RETURN_IF_ERROR(check_names("policies", policies));
  for (size_t i = 0; i < policies.size(); ++i) IF_RETURN_IF_ERROR(check_policy(at("policies", i), policies[i]));

  IF_RETURN_IF_ERROR(check_range("demand.interactive_peak_tokens_per_second", demand.interactive_peak_tokens_per_second,
                                 0.0, kInteractivePeakTokensPerSecondMax));
  if (demand.interactive_hourly.size() != kHoursPerDay) {
    return bad(ErrorCode::kInvalidArgument, "demand.interactive_hourly",
               std::to_string(demand.interactive_hourly.size()) + " values, one for each of the 24 hours is needed");
  }
  double peak = 0.0;
  for (size_t h = 0; h < demand.interactive_hourly.size(); ++h) {
    IF_RETURN_IF_ERROR(check_range(at("demand.interactive_hourly", h), demand.interactive_hourly[h], 0.0, 1.0));
    peak = std::max(peak, demand.interactive_hourly[h]);
  }
  if (peak != 1.0) {
    return bad(ErrorCode::kInvalidArgument, "demand.interactive_hourly",
               "the largest multiplier is " + num(peak) + ", it must be 1 (the peak hour)");
  }
  IF_RETURN_IF_ERROR(check_range("demand.batch_tokens_per_day", demand.batch_tokens_per_day, 0.0, kBatchTokensPerDayMax));
  if (demand.interactive_timeout_ms < kInteractiveTimeoutMsMin ||
      demand.interactive_timeout_ms > kInteractiveTimeoutMsMax) {
    return bad(ErrorCode::kOutOfRange, "demand.interactive_timeout_ms",
               std::to_string(demand.interactive_timeout_ms) + " is not in [" +
                   std::to_string(kInteractiveTimeoutMsMin) + ", " + std::to_string(kInteractiveTimeoutMsMax) + "]");
  }

  IF_RETURN_IF_ERROR(check_range("network.per_vehicle_mbps", network.per_vehicle_mbps, 0.0, kPerVehicleMbpsMax, true));
  IF_RETURN_IF_ERROR(check_range("network.total_gbps", network.total_gbps, 0.0, kTotalGbpsMax, true));
  IF_RETURN_IF_ERROR(check_share("network.cached_share_at_start", network.cached_share_at_start));

  IF_RETURN_IF_ERROR(check_uint("pricing.input_micros_per_mtok", pricing.input_micros_per_mtok, 0, kPriceMicrosPerMtokMax));
  IF_RETURN_IF_ERROR(
      check_uint("pricing.output_micros_per_mtok", pricing.output_micros_per_mtok, 0, kPriceMicrosPerMtokMax));
  IF_RETURN_IF_ERROR(check_uint("pricing.owner_share_ppm", pricing.owner_share_ppm, 0, kOwnerSharePpmMax));
  IF_RETURN_IF_ERROR(check_uint("pricing.wear_micros_per_accelerator_hour", pricing.wear_micros_per_accelerator_hour,
                                0, kWearMicrosPerHourMax));
  return {};
}

namespace {

std::string join(std::string_view prefix, std::string_view key) {
  return prefix.empty() ? std::string(key) : std::string(prefix) + "." + std::string(key);
}

// "HH:MM" (00:00 .. 23:59; "24:00" too where `end_of_day`): minutes of the day.
std::optional<int> parse_hhmm(std::string_view s, bool end_of_day) {
  if (s.size() != 5 || s[2] != ':') return std::nullopt;
  for (size_t i : {0, 1, 3, 4}) {
    if (s[i] < '0' || s[i] > '9') return std::nullopt;
  }
  const int h = (s[0] - '0') * 10 + (s[1] - '0');
  const int m = (s[3] - '0') * 10 + (s[4] - '0');
  if (m > 59) return std::nullopt;
  if (h == 24 && m == 0 && end_of_day) return kHoursPerDay * 60;
  if (h > 23) return std::nullopt;
  return h * 60 + m;
}

// "YYYY-MM-DD", a real calendar day: days since 1970-01-01.
std::optional<int64_t> parse_date(std::string_view s) {
  if (s.size() != 10 || s[4] != '-' || s[7] != '-') return std::nullopt;
  for (size_t i = 0; i < s.size(); ++i) {
    if (i != 4 && i != 7 && (s[i] < '0' || s[i] > '9')) return std::nullopt;
  }
  auto digits = [&](size_t from, size_t n) {
    int v = 0;
    for (size_t i = from; i < from + n; ++i) v = v * 10 + (s[i] - '0');
    return v;
  };
  const int64_t year = digits(0, 4);
  const int month = digits(5, 2);
  const int day = digits(8, 2);
  if (year < kScenarioStartYearMin || year > kScenarioStartYearMax || month < 1 || month > 12 || day < 1 || day > 31) {
    return std::nullopt;
  }
  const int64_t days = core::days_from_civil(year, month, day);
  const core::CivilDate back = core::civil_from_days(days);
  if (back.year != year || back.month != month || back.day != day) return std::nullopt;  // 2026-02-30
  return days;
}

// Daily windows [start, end) in minutes of the day, end > start or crossing
// midnight, repeated on every day: sorted, merged weekly windows.
std::vector<core::WeeklyWindow> weekly_windows(const std::vector<std::pair<int, int>>& daily) {
  std::vector<core::WeeklyWindow> pieces;
  for (int day = 0; day < 7; ++day) {
    const int base = day * core::kMinutesPerDay;
    for (const auto& [start, end] : daily) {
      if (end > start) {
        pieces.push_back({base + start, base + end});
      } else {  // across midnight: to the end of this day, then the next day's start
        pieces.push_back({base + start, base + core::kMinutesPerDay});
        const int next = (day + 1) % 7 * core::kMinutesPerDay;
        if (end > 0) pieces.push_back({next, next + end});
      }
    }
  }
  std::sort(pieces.begin(), pieces.end(), [](const core::WeeklyWindow& a, const core::WeeklyWindow& b) {
    return a.start_minute_of_week < b.start_minute_of_week;
  });
  std::vector<core::WeeklyWindow> merged;
  for (const core::WeeklyWindow& w : pieces) {
    if (!merged.empty() && w.start_minute_of_week <= merged.back().end_minute_of_week) {
      merged.back().end_minute_of_week = std::max(merged.back().end_minute_of_week, w.end_minute_of_week);
    } else {
      merged.push_back(w);
    }
  }
  return merged;
}

// Reads a parsed document into a Scenario. Each read checks the node's type
// (and what cannot be held otherwise: a negative count, a bad "HH:MM") and
// records the line of every key it reads; validate() then checks ranges and
// the lists against each other, and its error is given the line of the key
// it names.
class Reader {
 public:
  explicit Reader(std::string_view source) : source_(source) {}

  Unexpected fail(ErrorCode code, int line, const std::string& message) const {
    std::string out(source_);
    if (line > 0) out += ":" + std::to_string(line);
    return Unexpected(code, out + ": " + message);
  }

  // A validate() error "key.path: what" with the line of key.path, or of the
  // nearest enclosing key read from the file.
  Unexpected locate(const Error& e) const {
    const size_t colon = e.message.find(": ");
    std::string key = colon == std::string::npos ? std::string() : e.message.substr(0, colon);
    while (!key.empty()) {
      if (auto it = lines_.find(key); it != lines_.end()) return fail(e.code, it->second, e.message);
      const size_t cut = key.find_last_of(".[");
      key = cut == std::string::npos ? std::string() : key.substr(0, cut);
    }
    return fail(e.code, 0, e.message);
  }

  Status read(const toml::table& root, Scenario& s) {
    IF_RETURN_IF_ERROR(only_keys(root, "", {"name", "description", "seed", "days", "start", "fleet", "models",
                                            "computers", "chargers", "tariffs", "policies", "demand", "network",
                                            "pricing"}));
    if (root.get("name") == nullptr) return fail(ErrorCode::kInvalidArgument, 0, "name: missing (every scenario is named)");
    IF_RETURN_IF_ERROR(text(root, "", "name", s.name));
    IF_RETURN_IF_ERROR(text(root, "", "description", s.description));
    IF_RETURN_IF_ERROR(uint(root, "", "seed", s.seed));
    IF_RETURN_IF_ERROR(small_int(root, "", "days", 1, kScenarioDaysMax, s.days));
    std::string start = "2026-11-01";
    IF_RETURN_IF_ERROR(text(root, "", "start", start));
    const std::optional<int64_t> start_days = parse_date(start);
    if (!start_days) {
      return fail(ErrorCode::kInvalidArgument, line_of("start"),
                  "start: '" + start + "' is not a date \"YYYY-MM-DD\" in [" + std::to_string(kScenarioStartYearMin) +
                      ", " + std::to_string(kScenarioStartYearMax) + "]");
    }

    {
      const toml::table* t = nullptr;
      IF_RETURN_IF_ERROR(table(root, "", "fleet", t));
      if (t != nullptr) {
        ScenarioFleet& f = s.fleet;
        IF_RETURN_IF_ERROR(only_keys(*t, "fleet", {"vehicles", "battery_kwh", "home_charging_share",
                                                    "plug_in_probability", "trip_energy_kwh", "ambient_c",
                                                    "utc_offset_minutes"}));
        IF_RETURN_IF_ERROR(uint(*t, "fleet", "vehicles", f.vehicles));
        IF_RETURN_IF_ERROR(number(*t, "fleet", "battery_kwh", f.battery_kwh));
        IF_RETURN_IF_ERROR(number(*t, "fleet", "home_charging_share", f.home_charging_share));
        IF_RETURN_IF_ERROR(number(*t, "fleet", "plug_in_probability", f.plug_in_probability));
        IF_RETURN_IF_ERROR(number(*t, "fleet", "trip_energy_kwh", f.trip_energy_kwh));
        IF_RETURN_IF_ERROR(number(*t, "fleet", "ambient_c", f.ambient_c));
        IF_RETURN_IF_ERROR(small_int(*t, "fleet", "utc_offset_minutes", core::kUtcOffsetMinutesMin,
                                     core::kUtcOffsetMinutesMax, f.utc_offset_minutes));
      }
    }
    s.start_ms = *start_days * core::kDayMs - static_cast<int64_t>(s.fleet.utc_offset_minutes) * core::kMinuteMs;

    IF_RETURN_IF_ERROR(list(root, "models", kScenarioModelsMax, [&](const toml::table& t, const std::string& key) -> Status {
      ScenarioModel m;
      IF_RETURN_IF_ERROR(only_keys(t, key, {"name", "memory_gib", "download_gib", "demand_share", "prompt_tokens",
                                             "completion_tokens"}));
      IF_RETURN_IF_ERROR(required(t, key, "name"));
      IF_RETURN_IF_ERROR(text(t, key, "name", m.name));
      IF_RETURN_IF_ERROR(number(t, key, "memory_gib", m.memory_gib));
      IF_RETURN_IF_ERROR(number(t, key, "download_gib", m.download_gib));
      IF_RETURN_IF_ERROR(number(t, key, "demand_share", m.demand_share));
      IF_RETURN_IF_ERROR(uint(t, key, "prompt_tokens", m.prompt_tokens));
      IF_RETURN_IF_ERROR(uint(t, key, "completion_tokens", m.completion_tokens));
      s.models.push_back(std::move(m));
      return {};
    }));

    IF_RETURN_IF_ERROR(list(root, "computers", kScenarioClassesMax, [&](const toml::table& t, const std::string& key) -> Status {
      ScenarioComputer c;
      IF_RETURN_IF_ERROR(only_keys(t, key, {"name", "share", "power_kw", "memory_gib", "tokens_per_second",
                                             "prefill_speedup"}));
      IF_RETURN_IF_ERROR(required(t, key, "name"));
      IF_RETURN_IF_ERROR(required(t, key, "tokens_per_second"));
      IF_RETURN_IF_ERROR(text(t, key, "name", c.name));
      IF_RETURN_IF_ERROR(number(t, key, "share", c.share));
      IF_RETURN_IF_ERROR(number(t, key, "power_kw", c.power_kw));
      IF_RETURN_IF_ERROR(number(t, key, "memory_gib", c.memory_gib));
      IF_RETURN_IF_ERROR(number(t, key, "prefill_speedup", c.prefill_speedup));
      const toml::table* rates = nullptr;
      IF_RETURN_IF_ERROR(table(t, key, "tokens_per_second", rates));
      const std::string rates_key = join(key, "tokens_per_second");
      if (rates->size() > kScenarioModelsMax) {
        return fail(ErrorCode::kOutOfRange, line_of(rates_key),
                    rates_key + ": " + std::to_string(rates->size()) + " entries, more than " +
                        std::to_string(kScenarioModelsMax));
      }
      // In file order, so that errors name the first offender.
      std::vector<std::pair<const toml::key*, const toml::node*>> entries;
      for (const auto& [k, v] : *rates) entries.emplace_back(&k, &v);
      std::sort(entries.begin(), entries.end(),
                [](const auto& a, const auto& b) { return a.first->source().begin < b.first->source().begin; });
      for (const auto& [k, v] : entries) {
        const std::string model(k->str());
        double rate = 0.0;
        IF_RETURN_IF_ERROR(number(*rates, rates_key, model, rate));
        c.tokens_per_second.emplace_back(model, rate);
      }
      s.computers.push_back(std::move(c));
      return {};
    }));

    IF_RETURN_IF_ERROR(list(root, "chargers", kScenarioClassesMax, [&](const toml::table& t, const std::string& key) -> Status {
      ScenarioCharger c;
      IF_RETURN_IF_ERROR(only_keys(t, key, {"power_kw", "share"}));
      IF_RETURN_IF_ERROR(required(t, key, "power_kw"));
      IF_RETURN_IF_ERROR(number(t, key, "power_kw", c.power_kw));
      IF_RETURN_IF_ERROR(number(t, key, "share", c.share));
      s.chargers.push_back(c);
      return {};
    }));

    IF_RETURN_IF_ERROR(list(root, "tariffs", kScenarioClassesMax, [&](const toml::table& t, const std::string& key) -> Status {
      ScenarioTariff tariff;
      IF_RETURN_IF_ERROR(only_keys(t, key, {"name", "share", "micros_per_kwh", "weekday", "weekend"}));
      IF_RETURN_IF_ERROR(required(t, key, "name"));
      IF_RETURN_IF_ERROR(text(t, key, "name", tariff.name));
      IF_RETURN_IF_ERROR(number(t, key, "share", tariff.share));
      const bool flat = t.get("micros_per_kwh") != nullptr;
      const bool tou = t.get("weekday") != nullptr || t.get("weekend") != nullptr;
      if (flat == tou) {
        return fail(ErrorCode::kInvalidArgument, line_of(key),
                    key + ": give either micros_per_kwh (a flat tariff) or weekday (and weekend) schedules "
                          "(time of use), not " + (flat ? "both" : "neither"));
      }
      if (flat) {
        int64_t price = 0;
        IF_RETURN_IF_ERROR(integer(t, key, "micros_per_kwh", price));
        tariff.tariff = core::Tariff::flat(price);
      } else {
        IF_RETURN_IF_ERROR(required(t, key, "weekday"));
        std::vector<core::TariffEntry> weekday;
        IF_RETURN_IF_ERROR(schedule(t, key, "weekday", weekday));
        std::vector<core::TariffEntry> weekend = weekday;  // the same every day unless given
        if (t.get("weekend") != nullptr) {
          weekend.clear();
          IF_RETURN_IF_ERROR(schedule(t, key, "weekend", weekend));
        }
        tariff.tariff = core::Tariff::time_of_use(std::move(weekday), std::move(weekend));
      }
      s.tariffs.push_back(std::move(tariff));
      return {};
    }));

    IF_RETURN_IF_ERROR(list(root, "policies", kScenarioClassesMax, [&](const toml::table& t, const std::string& key) -> Status {
      ScenarioPolicy p;
      core::OwnerPolicy& o = p.policy;
      IF_RETURN_IF_ERROR(only_keys(t, key, {"name", "share", "opted_in", "soc_floor_pct", "target_soc_pct",
                                             "departure_margin_minutes", "accelerator_temp_limit_c",
                                             "price_cap_micros_per_kwh", "allowed_hours",
                                             "wear_budget_hours_per_month", "declares_departures"}));
      IF_RETURN_IF_ERROR(required(t, key, "name"));
      IF_RETURN_IF_ERROR(text(t, key, "name", p.name));
      IF_RETURN_IF_ERROR(number(t, key, "share", p.share));
      IF_RETURN_IF_ERROR(boolean(t, key, "opted_in", o.opted_in));
      IF_RETURN_IF_ERROR(number(t, key, "soc_floor_pct", o.soc_floor_pct));
      IF_RETURN_IF_ERROR(number(t, key, "target_soc_pct", o.target_soc_pct));
      int margin_minutes = static_cast<int>(o.departure_margin_ms / core::kMinuteMs);
      IF_RETURN_IF_ERROR(small_int(t, key, "departure_margin_minutes", 0,
                                   static_cast<int>(core::kDepartureMarginMsMax / core::kMinuteMs), margin_minutes));
      o.departure_margin_ms = margin_minutes * core::kMinuteMs;
      IF_RETURN_IF_ERROR(number(t, key, "accelerator_temp_limit_c", o.accelerator_temp_limit_c));
      if (t.get("price_cap_micros_per_kwh") != nullptr) {
        int64_t cap = 0;
        IF_RETURN_IF_ERROR(integer(t, key, "price_cap_micros_per_kwh", cap));
        o.price_cap_micros_per_kwh = cap;
      }
      IF_RETURN_IF_ERROR(allowed_hours(t, key, o.allowed_windows));
      IF_RETURN_IF_ERROR(number(t, key, "wear_budget_hours_per_month", o.wear_budget_hours_per_month));
      IF_RETURN_IF_ERROR(boolean(t, key, "declares_departures", p.declares_departures));
      s.policies.push_back(std::move(p));
      return {};
    }));

    {
      const toml::table* t = nullptr;
      IF_RETURN_IF_ERROR(table(root, "", "demand", t));
      if (t != nullptr) {
        ScenarioDemand& d = s.demand;
        IF_RETURN_IF_ERROR(only_keys(*t, "demand", {"interactive_peak_tokens_per_second", "interactive_hourly",
                                                     "batch_tokens_per_day", "interactive_timeout_ms"}));
        IF_RETURN_IF_ERROR(
            number(*t, "demand", "interactive_peak_tokens_per_second", d.interactive_peak_tokens_per_second));
        IF_RETURN_IF_ERROR(hourly(*t, d.interactive_hourly));
        IF_RETURN_IF_ERROR(number(*t, "demand", "batch_tokens_per_day", d.batch_tokens_per_day));
        IF_RETURN_IF_ERROR(integer(*t, "demand", "interactive_timeout_ms", d.interactive_timeout_ms));
      }
    }
    {
      const toml::table* t = nullptr;
      IF_RETURN_IF_ERROR(table(root, "", "network", t));
      if (t != nullptr) {
        ScenarioNetwork& n = s.network;
        IF_RETURN_IF_ERROR(only_keys(*t, "network", {"per_vehicle_mbps", "total_gbps", "cached_share_at_start"}));
        IF_RETURN_IF_ERROR(number(*t, "network", "per_vehicle_mbps", n.per_vehicle_mbps));
        IF_RETURN_IF_ERROR(number(*t, "network", "total_gbps", n.total_gbps));
        IF_RETURN_IF_ERROR(number(*t, "network", "cached_share_at_start", n.cached_share_at_start));
      }
    }
    {
      const toml::table* t = nullptr;
      IF_RETURN_IF_ERROR(table(root, "", "pricing", t));
      if (t != nullptr) {
        ScenarioPricing& p = s.pricing;
        IF_RETURN_IF_ERROR(only_keys(*t, "pricing", {"input_micros_per_mtok", "output_micros_per_mtok",
                                                      "owner_share_ppm", "wear_micros_per_accelerator_hour"}));
        IF_RETURN_IF_ERROR(uint(*t, "pricing", "input_micros_per_mtok", p.input_micros_per_mtok));
        IF_RETURN_IF_ERROR(uint(*t, "pricing", "output_micros_per_mtok", p.output_micros_per_mtok));
        IF_RETURN_IF_ERROR(uint(*t, "pricing", "owner_share_ppm", p.owner_share_ppm));
        IF_RETURN_IF_ERROR(
            uint(*t, "pricing", "wear_micros_per_accelerator_hour", p.wear_micros_per_accelerator_hour));
      }
    }
    return {};
  }

 private:
  int line_of(const std::string& key) const {
    const auto it = lines_.find(key);
    return it == lines_.end() ? 0 : it->second;
  }

  void note(const std::string& key, const toml::node& n) { lines_[key] = static_cast<int>(n.source().begin.line); }

  // Unknown keys are errors (they are usually typos), the first in the file first.
  Status only_keys(const toml::table& t, std::string_view prefix, std::initializer_list<std::string_view> allowed) {
    const toml::key* first = nullptr;
    for (const auto& [k, v] : t) {
      const bool known = std::find(allowed.begin(), allowed.end(), k.str()) != allowed.end();
      if (!known && (first == nullptr || k.source().begin < first->source().begin)) first = &k;
    }
    if (first == nullptr) return {};
    std::string known_keys;
    for (std::string_view a : allowed) known_keys += (known_keys.empty() ? "" : ", ") + std::string(a);
    return fail(ErrorCode::kInvalidArgument, static_cast<int>(first->source().begin.line),
                join(prefix, first->str()) + ": unknown key (known here: " + known_keys + ")");
  }

  Status wrong_type(const std::string& key, const toml::node& n, const std::string& wanted) {
    return fail(ErrorCode::kInvalidArgument, static_cast<int>(n.source().begin.line),
                key + ": must be " + wanted + ", not " + toml_type_name(n.type()));
  }

  Status required(const toml::table& t, const std::string& prefix, std::string_view key) {
    if (t.get(key) != nullptr) return {};
    return fail(ErrorCode::kInvalidArgument, static_cast<int>(t.source().begin.line),
                join(prefix, key) + ": missing (the entry needs one)");
  }

  Status table(const toml::table& parent, std::string_view prefix, std::string_view key, const toml::table*& out) {
    const toml::node* n = parent.get(key);
    if (n == nullptr) return {};
    const std::string name = join(prefix, key);
    out = n->as_table();
    if (out == nullptr) return wrong_type(name, *n, "a table");
    note(name, *n);
    return {};
  }

  Status text(const toml::table& t, std::string_view prefix, std::string_view key, std::string& out) {
    const toml::node* n = t.get(key);
    if (n == nullptr) return {};
    const std::string name = join(prefix, key);
    const auto* s = n->as_string();
    if (s == nullptr) return wrong_type(name, *n, "a string");
    note(name, *n);
    out = s->get();
    return {};
  }

  Status boolean(const toml::table& t, std::string_view prefix, std::string_view key, bool& out) {
    const toml::node* n = t.get(key);
    if (n == nullptr) return {};
    const std::string name = join(prefix, key);
    const auto* b = n->as_boolean();
    if (b == nullptr) return wrong_type(name, *n, "a boolean (true or false)");
    note(name, *n);
    out = b->get();
    return {};
  }

  // A float, or an integer where a float is meant ("7" for 7.0).
  Status number(const toml::table& t, std::string_view prefix, std::string_view key, double& out) {
    const toml::node* n = t.get(key);
    if (n == nullptr) return {};
    const std::string name = join(prefix, key);
    note(name, *n);
    if (const auto* f = n->as_floating_point()) {
      out = f->get();
    } else if (const auto* i = n->as_integer()) {
      out = static_cast<double>(i->get());
    } else {
      return wrong_type(name, *n, "a number");
    }
    return {};
  }

  Status integer(const toml::table& t, std::string_view prefix, std::string_view key, int64_t& out) {
    const toml::node* n = t.get(key);
    if (n == nullptr) return {};
    const std::string name = join(prefix, key);
    const auto* i = n->as_integer();
    if (i == nullptr) return wrong_type(name, *n, "an integer");
    note(name, *n);
    out = i->get();
    return {};
  }

  // A count: an integer that must not be negative (validate() checks the range).
  Status uint(const toml::table& t, std::string_view prefix, std::string_view key, uint64_t& out) {
    int64_t v = 0;
    const toml::node* n = t.get(key);
    if (n == nullptr) return {};
    IF_RETURN_IF_ERROR(integer(t, prefix, key, v));
    if (v < 0) {
      return fail(ErrorCode::kOutOfRange, static_cast<int>(n->source().begin.line),
                  join(prefix, key) + ": " + std::to_string(v) + " is negative");
    }
    out = static_cast<uint64_t>(v);
    return {};
  }

  // An integer held as int: checked here, where it could otherwise wrap.
  Status small_int(const toml::table& t, std::string_view prefix, std::string_view key, int lo, int hi, int& out) {
    int64_t v = 0;
    const toml::node* n = t.get(key);
    if (n == nullptr) return {};
    IF_RETURN_IF_ERROR(integer(t, prefix, key, v));
    if (v < lo || v > hi) {
      return fail(ErrorCode::kOutOfRange, static_cast<int>(n->source().begin.line),
                  join(prefix, key) + ": " + std::to_string(v) + " is not in [" + std::to_string(lo) + ", " +
                      std::to_string(hi) + "]");
    }
    out = static_cast<int>(v);
    return {};
  }

  // [[key]]: an array of at most `max` tables, each read by `each`.
  Status list(const toml::table& root, std::string_view key, size_t max,
              const std::function<Status(const toml::table&, const std::string&)>& each) {
    const toml::node* n = root.get(key);
    if (n == nullptr) return {};
    const std::string name(key);
    const toml::array* arr = n->as_array();
    if (arr == nullptr) return wrong_type(name, *n, "an array of tables ([[" + name + "]])");
    if (arr->empty()) return fail(ErrorCode::kInvalidArgument, static_cast<int>(n->source().begin.line),
                                  name + ": is empty, at least one entry is needed");
    note(name, *arr->get(0));
    if (arr->size() > max) {
      return fail(ErrorCode::kOutOfRange, static_cast<int>(arr->get(arr->size() - 1)->source().begin.line),
                  name + ": " + std::to_string(arr->size()) + " entries, more than " + std::to_string(max));
    }
    for (size_t i = 0; i < arr->size(); ++i) {
      const toml::node& el = *arr->get(i);
      const std::string entry = at(name, i);
      const toml::table* t = el.as_table();
      if (t == nullptr) return wrong_type(entry, el, "a table");
      note(entry, el);
      IF_RETURN_IF_ERROR(each(*t, entry));
    }
    return {};
  }

  // weekday = [{ start = "HH:MM", micros_per_kwh = N }, ...]
  Status schedule(const toml::table& t, const std::string& prefix, std::string_view key,
                  std::vector<core::TariffEntry>& out) {
    const toml::node* n = t.get(key);
    const std::string name = join(prefix, key);
    const toml::array* arr = n->as_array();
    if (arr == nullptr) return wrong_type(name, *n, "an array of { start = \"HH:MM\", micros_per_kwh = N }");
    note(name, *n);
    if (arr->size() > core::kTariffEntriesPerDayMax) {
      return fail(ErrorCode::kOutOfRange, static_cast<int>(n->source().begin.line),
                  name + ": " + std::to_string(arr->size()) + " entries, more than " +
                      std::to_string(core::kTariffEntriesPerDayMax));
    }
    for (size_t i = 0; i < arr->size(); ++i) {
      const toml::node& el = *arr->get(i);
      const std::string entry = at(name, i);
      const toml::table* e = el.as_table();
      if (e == nullptr) return wrong_type(entry, el, "a table { start = \"HH:MM\", micros_per_kwh = N }");
      note(entry, el);
      IF_RETURN_IF_ERROR(only_keys(*e, entry, {"start", "micros_per_kwh"}));
      IF_RETURN_IF_ERROR(required(*e, entry, "start"));
      IF_RETURN_IF_ERROR(required(*e, entry, "micros_per_kwh"));
      std::string start;
      IF_RETURN_IF_ERROR(text(*e, entry, "start", start));
      const std::optional<int> minute = parse_hhmm(start, false);
      if (!minute) {
        return fail(ErrorCode::kInvalidArgument, line_of(entry + ".start"),
                    entry + ".start: '" + start + "' is not a time \"HH:MM\" (00:00 to 23:59)");
      }
      core::TariffEntry te;
      te.start_minute_of_day = *minute;
      IF_RETURN_IF_ERROR(integer(*e, entry, "micros_per_kwh", te.price_micros_per_kwh));
      out.push_back(te);
    }
    return {};
  }

  // allowed_hours = ["22:00-07:00", ...]: absent, the whole week; empty, never.
  Status allowed_hours(const toml::table& t, const std::string& prefix, std::vector<core::WeeklyWindow>& out) {
    const toml::node* n = t.get("allowed_hours");
    if (n == nullptr) return {};
    const std::string name = join(prefix, "allowed_hours");
    const toml::array* arr = n->as_array();
    if (arr == nullptr) return wrong_type(name, *n, "an array of \"HH:MM-HH:MM\" strings");
    note(name, *n);
    if (arr->size() > kScenarioAllowedHoursMax) {
      return fail(ErrorCode::kOutOfRange, static_cast<int>(n->source().begin.line),
                  name + ": " + std::to_string(arr->size()) + " windows, more than " +
                      std::to_string(kScenarioAllowedHoursMax));
    }
    std::vector<std::pair<int, int>> daily;
    for (size_t i = 0; i < arr->size(); ++i) {
      const toml::node& el = *arr->get(i);
      const std::string entry = at(name, i);
      const auto* s = el.as_string();
      if (s == nullptr) return wrong_type(entry, el, "a string \"HH:MM-HH:MM\"");
      const std::string_view v = s->get();
      const std::optional<int> from = v.size() == 11 && v[5] == '-' ? parse_hhmm(v.substr(0, 5), false) : std::nullopt;
      const std::optional<int> to = v.size() == 11 && v[5] == '-' ? parse_hhmm(v.substr(6, 5), true) : std::nullopt;
      if (!from || !to || *from == *to) {
        return fail(ErrorCode::kInvalidArgument, static_cast<int>(el.source().begin.line),
                    entry + ": '" + std::string(v) +
                        "' is not a daily window \"HH:MM-HH:MM\" (start 00:00 to 23:59, end 00:00 to 24:00, "
                        "not equal; an end before the start crosses midnight)");
      }
      daily.emplace_back(*from, *to == kHoursPerDay * 60 ? core::kMinutesPerDay : *to);
    }
    out = weekly_windows(daily);
    return {};
  }

  // interactive_hourly = [24 numbers]
  Status hourly(const toml::table& t, std::vector<double>& out) {
    const toml::node* n = t.get("interactive_hourly");
    if (n == nullptr) return {};
    const std::string name = "demand.interactive_hourly";
    const toml::array* arr = n->as_array();
    if (arr == nullptr) return wrong_type(name, *n, "an array of 24 numbers");
    note(name, *n);
    if (arr->size() != kHoursPerDay) {
      return fail(ErrorCode::kInvalidArgument, static_cast<int>(n->source().begin.line),
                  name + ": " + std::to_string(arr->size()) + " values, one for each of the 24 hours is needed");
    }
    out.assign(kHoursPerDay, 0.0);
    for (size_t h = 0; h < arr->size(); ++h) {
      const toml::node& el = *arr->get(h);
      const std::string entry = at(name, h);
      note(entry, el);
      if (const auto* f = el.as_floating_point()) {
        out[h] = f->get();
      } else if (const auto* i = el.as_integer()) {
        out[h] = static_cast<double>(i->get());
      } else {
        return wrong_type(entry, el, "a number");
      }
    }
    return {};
  }

  std::string_view source_;
  std::map<std::string, int> lines_;  // key path -> line, for validate()'s errors
};

}  // namespace

Result<Scenario> parse_scenario(std::string_view text, std::string_view source) {
  Reader reader(source);
  if (text.size() > kScenarioFileBytesMax) {
    return reader.fail(ErrorCode::kOutOfRange, 0,
                       "the scenario is " + std::to_string(text.size()) + " bytes, more than " +
                           std::to_string(kScenarioFileBytesMax));
  }
  // toml++ reports through exceptions; none leaves this function.
  try {
    const toml::table root = toml::parse(text, source);
    Scenario scenario;
    IF_RETURN_IF_ERROR(reader.read(root, scenario));
    if (Status st = scenario.validate(); !st) return reader.locate(st.error());
    return scenario;
  } catch (const toml::parse_error& e) {
    const auto& where = e.source().begin;
    return reader.fail(ErrorCode::kCorrupt, static_cast<int>(where.line),
                       "not valid TOML (column " + std::to_string(where.column) + "): " + std::string(e.description()));
  } catch (const std::exception& e) {
    return reader.fail(ErrorCode::kInternal, 0, std::string("reading the scenario: ") + e.what());
  }
}

Result<Scenario> load_scenario(const std::string& path) {
  auto text = read_text_file(path, kScenarioFileBytesMax, "scenario file");
  if (!text) return Unexpected(text.error());
  return parse_scenario(*text, path);
}

}  // namespace idlefleet::sim
