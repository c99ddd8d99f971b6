// How the fleet's answer moves with the owners' and the scenario's knobs: the
// fleet-scale simulation rerun on copies of a scenario, one knob changed at a
// time (the home-charging share, every policy's SoC floor, every policy's
// departure margin, demand), on a smaller fleet and a shorter run so that the
// whole table costs seconds (issue #6, Deliver 4; docs/simulator.md, "The
// report"). Each row gives the capacity factor (mean available GW per GW of
// nameplate), the used factor, and the tokens delivered per vehicle-day.
//
// Determinism: each run is run_fleet_scale with one thread, runs are spread
// over `threads` workers and collected in a fixed order, so the rows are the
// same for any thread count.
//
// Thread-safety: run_sensitivity runs its own worker threads and calls
// `progress` from the calling thread only.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"
#include "sim/scenario.h"

namespace idlefleet::sim {

inline constexpr uint64_t kSensitivityVehiclesDefault = 20'000;
inline constexpr int kSensitivityDaysDefault = 7;

struct SensitivityOptions {
  // The smaller fleet: min(this, the scenario's fleet.vehicles), [1, 1e9].
  uint64_t vehicles_max = kSensitivityVehiclesDefault;
  // Days per run; default min(the scenario's days, 7). [1, kScenarioDaysMax].
  std::optional<int> days;
  std::optional<uint64_t> seed;  // overrides scenario.seed (use the main run's)
  // The fleet size the demand is for (the main run's vehicles; default the
  // scenario's fleet.vehicles). Demand is fleet-wide, so each smaller run gets
  // it scaled by its vehicles over these: the same demand per vehicle as the
  // main run, else a fifth of the fleet would face all of its demand.
  std::optional<uint64_t> demand_vehicles;
  int threads = 1;               // [1, kFleetThreadsMax]: runs at once
  int bin_minutes = 15;          // as FleetScaleOptions
  // Called from the calling thread with the fraction of runs done (0..1].
  std::function<void(double)> progress;
};

// One run of the table.
struct SensitivityRow {
  std::string knob;     // "fleet.home_charging_share", "policies.soc_floor_pct",
                        // "policies.departure_margin_minutes", "demand"
  std::string value;    // as set: "0.3", "10", "120", "x2"; the scenario's own: "scenario (0.6)"
  bool base = false;    // the scenario unchanged (the same run in every knob's rows)
  uint64_t vehicles = 0;
  int days = 0;
  double capacity_factor = 0.0;        // mean available GW / nameplate GW
  double used_factor = 0.0;            // mean used GW / nameplate GW
  double tokens_per_vehicle_day = 0.0; // interactive + batch output tokens delivered
};

// The knobs in order, each as low, base, high: fleet.home_charging_share 0.3,
// base, 0.9; every policy's soc_floor_pct 10, base, 50 (a target below the
// floor is raised to it); every policy's departure_margin_minutes 0, base,
// 120; demand (interactive peak and batch) x0.5, base, x2. 12 rows from 9
// runs, each with the demand scaled to its fleet (demand_vehicles). A copy that Scenario::validate refuses is an error naming the knob
// and value (nothing is skipped).
Result<std::vector<SensitivityRow>> run_sensitivity(const Scenario& scenario, const SensitivityOptions& options);

}  // namespace idlefleet::sim
