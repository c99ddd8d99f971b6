#include "sim/summary.h"

#include <algorithm>

namespace idlefleet::sim {

double nameplate_kw_per_vehicle(const Scenario& scenario) {
  double share = 0.0;
  double kw = 0.0;
  for (const ScenarioComputer& c : scenario.computers) {
    share += c.share;
    kw += c.share * c.power_kw;
  }
  return share > 0.0 ? kw / share : 0.0;
}

SimSummary summarize(const Scenario& scenario, const FleetScaleResult& r) {
  SimSummary s;
  s.scenario = scenario.name;
  s.fidelity = r.fidelity;
  s.jobs_placed = r.jobs_placed;
  s.vehicles = r.vehicles;
  s.days = r.days;
  s.seed = r.seed;
  s.bin_minutes = r.bin_minutes;
  s.interactive_wait_modelled = r.fidelity == "detailed";

  const double bin_seconds = 60.0 * r.bin_minutes;
  double sum_available = 0.0;
  double sum_used = 0.0;
  double wait_weighted = 0.0;
  for (const FleetBin& b : r.bins) {
    s.tokens_interactive += b.interactive_tps * bin_seconds;
    s.tokens_batch += b.batch_tps * bin_seconds;
    s.interactive_tokens_asked += b.interactive_demand_tps * bin_seconds;
    s.interactive_tokens_unmet += b.interactive_unmet_tps * bin_seconds;
    s.energy_kwh += b.energy_kwh;
    s.energy_cost += b.energy_cost;
    s.battery_kwh += b.battery_kwh;
    s.wear_hours += b.wear_hours;
    s.preemptions += b.preemptions;
    s.work_redone_tokens += b.work_redone_tokens;
    s.compute_available_gw_peak = std::max(s.compute_available_gw_peak, b.compute_available_gw);
    s.compute_used_gw_peak = std::max(s.compute_used_gw_peak, b.compute_used_gw);
    sum_available += b.compute_available_gw;
    sum_used += b.compute_used_gw;
    s.interactive_jobs_started += b.interactive_jobs_started;
    wait_weighted += static_cast<double>(b.interactive_jobs_started) * b.interactive_wait_ms_mean;
    s.interactive_wait_ms_p95_max = std::max(s.interactive_wait_ms_p95_max, b.interactive_wait_ms_p95);
  }
  const double bins = std::max<double>(1.0, static_cast<double>(r.bins.size()));
  s.compute_available_gw_mean = sum_available / bins;
  s.compute_used_gw_mean = sum_used / bins;
  if (s.interactive_jobs_started > 0) {
    s.interactive_wait_ms_mean = wait_weighted / static_cast<double>(s.interactive_jobs_started);
  }

  s.nameplate_kw_per_vehicle = nameplate_kw_per_vehicle(scenario);
  const double vehicles = static_cast<double>(std::max<uint64_t>(1, r.vehicles));
  const double days = static_cast<double>(std::max(1, r.days));
  s.nameplate_gw = vehicles * s.nameplate_kw_per_vehicle / 1e6;
  if (s.nameplate_gw > 0.0) {
    s.capacity_factor = s.compute_available_gw_mean / s.nameplate_gw;
    s.used_factor = s.compute_used_gw_mean / s.nameplate_gw;
  }
  s.tokens_per_vehicle_day = (s.tokens_interactive + s.tokens_batch) / vehicles / days;
  const double month = kSummaryMonthDays / days;
  if (scenario.fleet.battery_kwh > 0.0) {
    s.battery_cycles_per_vehicle_month = s.battery_kwh / (vehicles * scenario.fleet.battery_kwh) * month;
  }
  s.chip_hours_per_vehicle_month = s.wear_hours / vehicles * month;

  s.earnings_month_p10 = r.earnings_month_p10;
  s.earnings_month_p50 = r.earnings_month_p50;
  s.earnings_month_p90 = r.earnings_month_p90;
  s.earnings_month_mean = r.earnings_month_mean;
  return s;
}

}  // namespace idlefleet::sim
