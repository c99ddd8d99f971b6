#include "sim/sensitivity.h"

#include <algorithm>
#include <cstdio>
#include <future>

#include "sim/fleet_scale.h"
#include "sim/summary.h"

namespace idlefleet::sim {

namespace {

struct Variant {
  std::string knob;
  std::string value;
  bool base = false;
  Scenario scenario;
};

std::string number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

// The scenario's own values of a per-policy knob, distinct, in order: "30/40/50"
// (those of opted-in owners: the others' limits never bind; all where none is).
std::string policy_values(const Scenario& s, double (*get)(const ScenarioPolicy&)) {
  const bool any_opted_in =
      std::any_of(s.policies.begin(), s.policies.end(), [](const ScenarioPolicy& p) { return p.policy.opted_in; });
  std::vector<double> seen;
  std::string out;
  for (const ScenarioPolicy& p : s.policies) {
    if (any_opted_in && !p.policy.opted_in) continue;
    const double v = get(p);
    if (std::find(seen.begin(), seen.end(), v) != seen.end()) continue;
    seen.push_back(v);
    if (!out.empty()) out += "/";
    out += number(v);
  }
  return out;
}

double floor_of(const ScenarioPolicy& p) { return p.policy.soc_floor_pct; }
double margin_of(const ScenarioPolicy& p) {
  return static_cast<double>(p.policy.departure_margin_ms) / static_cast<double>(core::kMinuteMs);
}

}  // namespace

Result<std::vector<SensitivityRow>> run_sensitivity(const Scenario& scenario, const SensitivityOptions& options) {
  if (options.vehicles_max < 1 || options.vehicles_max > kScenarioVehiclesMax) {
    return Unexpected(ErrorCode::kOutOfRange, "sensitivity vehicles " + std::to_string(options.vehicles_max) +
                                                  " is outside [1, " + std::to_string(kScenarioVehiclesMax) + "]");
  }
  if (options.days && (*options.days < 1 || *options.days > kScenarioDaysMax)) {
    return Unexpected(ErrorCode::kOutOfRange, "sensitivity days " + std::to_string(*options.days) +
                                                  " is outside [1, " + std::to_string(kScenarioDaysMax) + "]");
  }
  if (options.threads < 1 || options.threads > kFleetThreadsMax) {
    return Unexpected(ErrorCode::kOutOfRange, "sensitivity threads " + std::to_string(options.threads) +
                                                  " is outside [1, " + std::to_string(kFleetThreadsMax) + "]");
  }
  if (options.demand_vehicles && (*options.demand_vehicles < 1 || *options.demand_vehicles > kScenarioVehiclesMax)) {
    return Unexpected(ErrorCode::kOutOfRange, "sensitivity demand_vehicles " + std::to_string(*options.demand_vehicles) +
                                                  " is outside [1, " + std::to_string(kScenarioVehiclesMax) + "]");
  }
  if (auto st = scenario.validate(); !st) return Unexpected(st.error());
  const uint64_t vehicles = std::min(options.vehicles_max, scenario.fleet.vehicles);

  // The base: the scenario with its demand scaled to the smaller fleet.
  Scenario base = scenario;
  const double demand_scale =
      static_cast<double>(vehicles) / static_cast<double>(options.demand_vehicles.value_or(scenario.fleet.vehicles));
  base.demand.interactive_peak_tokens_per_second *= demand_scale;
  base.demand.batch_tokens_per_day *= demand_scale;

  // The runs: the base first, then each knob's low and high.
  std::vector<Variant> runs;
  runs.push_back(Variant{"", "", true, base});
  auto add = [&](std::string knob, std::string value, auto change) {
    Variant v{std::move(knob), std::move(value), false, base};
    change(v.scenario);
    runs.push_back(std::move(v));
  };
  for (const double share : {0.3, 0.9}) {
    add("fleet.home_charging_share", number(share), [share](Scenario& s) { s.fleet.home_charging_share = share; });
  }
  for (const double floor : {10.0, 50.0}) {
    add("policies.soc_floor_pct", number(floor), [floor](Scenario& s) {
      for (ScenarioPolicy& p : s.policies) {
        p.policy.soc_floor_pct = floor;
        p.policy.target_soc_pct = std::max(p.policy.target_soc_pct, floor);
      }
    });
  }
  for (const int margin : {0, 120}) {
    add("policies.departure_margin_minutes", std::to_string(margin), [margin](Scenario& s) {
      for (ScenarioPolicy& p : s.policies) p.policy.departure_margin_ms = margin * core::kMinuteMs;
    });
  }
  for (const double factor : {0.5, 2.0}) {
    add("demand", "x" + number(factor), [factor](Scenario& s) {
      s.demand.interactive_peak_tokens_per_second *= factor;
      s.demand.batch_tokens_per_day *= factor;
    });
  }
  for (const Variant& v : runs) {
    if (auto st = v.scenario.validate(); !st) {
      return Unexpected(st.error().code, "sensitivity " + (v.base ? std::string("base") : v.knob + " = " + v.value) + ": " +
                                             st.error().message);
    }
  }

  FleetScaleOptions o;
  o.vehicles = vehicles;
  o.days = options.days.value_or(std::min(scenario.days, kSensitivityDaysDefault));
  o.seed = options.seed;
  o.threads = 1;
  o.bin_minutes = options.bin_minutes;

  // Runs in batches of `threads`, collected in order: the same rows for any
  // thread count.
  std::vector<SimSummary> summaries(runs.size());
  const size_t batch = static_cast<size_t>(options.threads);
  for (size_t first = 0; first < runs.size(); first += batch) {
    const size_t last = std::min(runs.size(), first + batch);
    std::vector<std::future<Result<FleetScaleResult>>> futures;
    for (size_t k = first; k < last; ++k) {
      futures.push_back(std::async(std::launch::async, [&runs, &o, k] { return run_fleet_scale(runs[k].scenario, o); }));
    }
    std::optional<Error> failed;
    for (size_t k = first; k < last; ++k) {
      auto r = futures[k - first].get();
      if (!r) {
        if (!failed) {
          failed = Error{r.error().code, "sensitivity " + (runs[k].base ? std::string("base") : runs[k].knob + " = " + runs[k].value) +
                                             ": " + r.error().message};
        }
        continue;
      }
      summaries[k] = summarize(runs[k].scenario, *r);
    }
    if (failed) return Unexpected(*failed);
    if (options.progress) options.progress(static_cast<double>(last) / static_cast<double>(runs.size()));
  }

  auto row = [&](size_t k, std::string knob, std::string value, bool base) {
    SensitivityRow r;
    r.knob = std::move(knob);
    r.value = std::move(value);
    r.base = base;
    r.vehicles = summaries[k].vehicles;
    r.days = summaries[k].days;
    r.capacity_factor = summaries[k].capacity_factor;
    r.used_factor = summaries[k].used_factor;
    r.tokens_per_vehicle_day = summaries[k].tokens_per_vehicle_day;
    return r;
  };
  const std::string base_values[4] = {
      "scenario (" + number(scenario.fleet.home_charging_share) + ")",
      "scenario (" + policy_values(scenario, floor_of) + ")",
      "scenario (" + policy_values(scenario, margin_of) + ")",
      "scenario (x1)",
  };
  std::vector<SensitivityRow> rows;
  for (size_t knob = 0; knob < 4; ++knob) {
    const size_t low = 1 + 2 * knob;
    rows.push_back(row(low, runs[low].knob, runs[low].value, false));
    rows.push_back(row(0, runs[low].knob, base_values[knob], true));
    rows.push_back(row(low + 1, runs[low + 1].knob, runs[low + 1].value, false));
  }
  return rows;
}

}  // namespace idlefleet::sim
