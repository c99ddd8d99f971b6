// The totals of a simulation run, for summary.json, the printed lines and the
// HTML report (sim/report.h): sums and means over the time series of a
// FleetScaleResult (either fidelity), and the figures that need the scenario
// as well: the fleet's nameplate power, the capacity factor, battery cycles and
// chip-hours per vehicle-month (docs/simulator.md, "summary.json").
//
// Thread-safety: a pure function of its arguments.
#pragma once

#include <cstdint>
#include <string>

#include "sim/fleet_scale.h"
#include "sim/scenario.h"

namespace idlefleet::sim {

// Months are 30 days wherever the simulator scales a run to a month.
inline constexpr double kSummaryMonthDays = 30.0;

struct SimSummary {
  std::string scenario;
  std::string fidelity;
  uint64_t jobs_placed = 0;  // the detailed fidelity's placements (0 at fleet scale)
  uint64_t vehicles = 0;
  int days = 0;
  uint64_t seed = 0;
  int bin_minutes = 0;

  double compute_available_gw_mean = 0.0;
  double compute_available_gw_peak = 0.0;
  double compute_used_gw_mean = 0.0;
  double compute_used_gw_peak = 0.0;
  // Every vehicle's computer at full power: vehicles x the share-weighted
  // mean of the computer classes' power_kw.
  double nameplate_kw_per_vehicle = 0.0;
  double nameplate_gw = 0.0;
  // Mean available GW / nameplate GW (0 for a zero nameplate, which a valid
  // scenario cannot have); the used GW the same way.
  double capacity_factor = 0.0;
  double used_factor = 0.0;

  double tokens_interactive = 0.0;        // output tokens delivered over the run
  double tokens_batch = 0.0;
  double interactive_tokens_asked = 0.0;
  double interactive_tokens_unmet = 0.0;
  double tokens_per_vehicle_day = 0.0;    // (interactive + batch) / vehicles / days
  double preemptions = 0.0;
  double work_redone_tokens = 0.0;
  double energy_kwh = 0.0;
  double energy_cost = 0.0;               // currency units
  double battery_kwh = 0.0;               // the part of energy_kwh the batteries gave
  double wear_hours = 0.0;                // temperature-weighted accelerator-hours, fleet-wide

  // Per vehicle, scaled to a 30-day month: battery equivalent full cycles from
  // serving (battery_kwh / (vehicles x fleet.battery_kwh)), and weighted
  // chip-hours (wear_hours / vehicles).
  double battery_cycles_per_vehicle_month = 0.0;
  double chip_hours_per_vehicle_month = 0.0;

  // Interactive queue wait: modelled by the detailed fidelity only (at fleet
  // scale demand is a flow and these stay 0 with wait_modelled false). The
  // mean is weighted by the jobs started in each bin; the p95 is the largest
  // of the bins' p95.
  bool interactive_wait_modelled = false;
  uint64_t interactive_jobs_started = 0;
  double interactive_wait_ms_mean = 0.0;
  double interactive_wait_ms_p95_max = 0.0;

  double earnings_month_p10 = 0.0;
  double earnings_month_p50 = 0.0;
  double earnings_month_p90 = 0.0;
  double earnings_month_mean = 0.0;
};

// The fleet's nameplate per vehicle: the share-weighted mean of the computer
// classes' power_kw (kW).
double nameplate_kw_per_vehicle(const Scenario& scenario);

// REQUIRES: `result` came from a run of `scenario` (its vehicles, days and bins).
SimSummary summarize(const Scenario& scenario, const FleetScaleResult& result);

}  // namespace idlefleet::sim
