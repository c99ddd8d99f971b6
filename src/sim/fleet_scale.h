// The fleet-scale fidelity of the simulator: up to a billion vehicles, each
// with its own computer, charger, battery, tariff, owner policy and daily
// schedule, with demand and work as flows per shard instead of single jobs
// (issue #6, Deliver 3; docs/simulator.md, "Fidelities").
//
// No per-vehicle state outlives its shard: a vehicle's attributes and each of
// its local days are re-derived from counter_random(seed, ...) keyed by the
// vehicle's index and the day, so a vehicle is the same whatever the shard
// size, the thread count or the days before it. A shard (kFleetShardVehicles
// vehicles) is simulated bin by bin: at each bin's start every vehicle is
// advanced to that instant in closed form (drives, arrivals, plugging in,
// charging), the eligible ones (the owner's policy, by fleet_eligible: the
// same rules as core::decide_eligibility) offer their computer's tokens/s,
// and the shard serves min(its demand, that capacity); the serving vehicles
// draw their computer's power from the battery (or the charger), and a
// vehicle whose driver leaves while it serves is a preemption.
//
// Determinism: shards are independent and summed in shard order, so the
// output is bitwise identical for any thread count. No clock, no I/O (the
// calibration data is embedded below, not read).
//
// Thread-safety: run_fleet_scale runs its own worker threads and calls
// `progress` from the calling thread only; the other functions are pure.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "common/result.h"
#include "core/policy.h"
#include "core/time.h"
#include "sim/scenario.h"

namespace idlefleet::sim {

inline constexpr uint64_t kFleetShardVehicles = 65536;
inline constexpr uint64_t kFleetShardVehiclesMax = 1 << 20;
inline constexpr int kFleetThreadsMax = 256;
inline constexpr int kFleetBinMinutesMin = 1;
inline constexpr int kFleetBinMinutesMax = 60;
// Bins a run may produce (the time series is held in memory): a year of minutes.
inline constexpr uint64_t kFleetBinsMax = 366ull * 1440;

// Calibration: the share of home plug-ins and plug-outs starting in each local
// hour (0 first), from 6,878 home charging sessions in Trondheim apartment
// garages, Dec 2018 - Jan 2020 (Sorensen et al., Data in Brief 36 (2021)
// 107105, doi:10.1016/j.dib.2021.107105, CC BY 4.0), as computed in
// ../shared/data/derived_hourly_plugin_plugout_share_trondheim.csv (columns
// plugin_share and plugout_share). A unit test checks these against the CSV.
inline constexpr std::array<double, 24> kTrondheimPluginShareByHour = {
    0.0148, 0.0058, 0.0036, 0.0025, 0.0010, 0.0013, 0.0028, 0.0115, 0.0118, 0.0096, 0.0169, 0.0252,
    0.0294, 0.0427, 0.0593, 0.1144, 0.1404, 0.0884, 0.0849, 0.0983, 0.0848, 0.0673, 0.0544, 0.0289};
inline constexpr std::array<double, 24> kTrondheimPlugoutShareByHour = {
    0.0066, 0.0042, 0.0016, 0.0012, 0.0020, 0.0026, 0.0650, 0.1790, 0.0662, 0.0475, 0.0501, 0.0541,
    0.0422, 0.0389, 0.0421, 0.0459, 0.0530, 0.0779, 0.0627, 0.0451, 0.0371, 0.0358, 0.0238, 0.0153};

// How work is simulated (docs/simulator.md, "Fidelities"): as flows per
// shard (fleet scale, up to a billion vehicles), or as single jobs placed by
// core::place (detailed, sim/jobs.h; up to a million vehicles).
enum class Fidelity : uint8_t { kFleetScale, kDetailed };
inline constexpr uint64_t kDetailedVehiclesMax = 1'000'000;

struct FleetScaleOptions {
  Fidelity fidelity = Fidelity::kFleetScale;
  std::optional<uint64_t> vehicles;  // overrides scenario.fleet.vehicles
  std::optional<int> days;           // overrides scenario.days
  std::optional<uint64_t> seed;      // overrides scenario.seed
  int threads = 1;                   // [1, kFleetThreadsMax]
  int bin_minutes = 15;              // [1, 60], dividing a day
  // Vehicles per shard, [1, kFleetShardVehiclesMax]: demand is split over
  // shards by their vehicles, so the shard size is part of the model (tests
  // use small shards to have many).
  uint64_t shard_vehicles = kFleetShardVehicles;
  // Called from the calling thread with the fraction done (0..1], every
  // quarter second while shards run and after each batch of them; may be empty.
  std::function<void(double)> progress;
};

// One bin of the time series, fleet-wide. Vehicle counts are taken at the
// bin's start; flows are means over the bin. docs/simulator.md documents each.
struct FleetBin {
  core::TimeMs start_ms = 0;
  uint64_t vehicles_driving = 0;    // boarding to arriving: on the road
  uint64_t vehicles_parked = 0;     // parked and not plugged in (home or away)
  uint64_t vehicles_plugged = 0;    // parked at home with the cable in (charging or full)
  uint64_t vehicles_eligible = 0;   // of parked + plugged: the owner's policy says yes
  double vehicles_serving = 0.0;    // vehicle-equivalents working through the bin
  double compute_available_gw = 0.0;  // the eligible vehicles' computers at full power
  double compute_used_gw = 0.0;
  double interactive_demand_tps = 0.0;  // output tokens/s asked for
  double interactive_tps = 0.0;         // delivered
  double batch_tps = 0.0;
  double interactive_unmet_tps = 0.0;   // asked for and not served in the bin (dropped)
  double batch_backlog_tokens = 0.0;    // left waiting at the bin's end
  double preemptions = 0.0;             // expected jobs cut by a driver leaving
  double work_redone_tokens = 0.0;      // their output tokens, generated again elsewhere
  double energy_kwh = 0.0;              // drawn by the serving computers
  double energy_cost = 0.0;             // that energy at each owner's tariff, currency units
  double battery_kwh = 0.0;             // the part of energy_kwh the batteries gave (the charger gave the rest)
  double wear_hours = 0.0;              // accelerator-hours weighted by chip temperature (core::wear_hours)
  // Interactive jobs placed in the bin: their mean and 95th-percentile wait
  // in the queue (the detailed fidelity; 0 at fleet scale, where demand is a
  // flow and has no queue).
  uint64_t interactive_jobs_started = 0;
  double interactive_wait_ms_mean = 0.0;
  double interactive_wait_ms_p95 = 0.0;
};

// Earnings histogram buckets: one currency unit each, the last one for a month
// of kEarningsHistogramUnits or more.
inline constexpr size_t kEarningsHistogramUnits = 1000;

struct FleetScaleResult {
  std::string fidelity = "fleet-scale";  // or "detailed" (sim/detailed.h)
  uint64_t vehicles = 0;
  uint64_t jobs_placed = 0;  // the detailed fidelity's placements (attempts), 0 at fleet scale
  int days = 0;
  uint64_t seed = 0;
  int bin_minutes = 0;
  std::vector<FleetBin> bins;
  // What owners are paid (revenue share, energy refund, wear allowance) minus
  // their electricity for the serving, per vehicle, scaled to a 30-day month;
  // percentiles over all vehicles (opted out included, at 0), from a
  // histogram with 1-cent buckets up to 1,000 a month.
  double earnings_month_p10 = 0.0;
  double earnings_month_p50 = 0.0;
  double earnings_month_p90 = 0.0;
  double earnings_month_mean = 0.0;
  // Vehicles by monthly earnings: [k] counts those in [k, k+1) currency units
  // (kEarningsHistogramUnits + 1 entries; the last counts k and above).
  std::vector<uint64_t> earnings_month_histogram;
};

// kInvalidArgument / kOutOfRange naming the option or scenario field.
// The scenario must be valid (Scenario::validate); the fields this fidelity
// relies on are checked again here.
Result<FleetScaleResult> run_fleet_scale(const Scenario& scenario, const FleetScaleOptions& options);

// The time series as CSV, one row per bin, header first (docs/simulator.md).
Status write_timeseries_csv(const FleetScaleResult& result, std::ostream& out);

// ---- One vehicle, exposed for tests (and for the detailed fidelity) ---------

// A vehicle's fixed draws.
struct FleetVehicle {
  uint32_t computer = 0;         // index into scenario.computers
  uint32_t tariff = 0;           // scenario.tariffs
  uint32_t policy = 0;           // scenario.policies
  bool home_charger = false;
  double charger_kw = 0.0;       // AC at the wall; 0 without a home charger
  double battery_kwh = 0.0;
  int departure_minute = 0;      // habitual weekday departure, local minute of day
  int return_minute = 0;         // habitual weekday return home
  double initial_soc_pct = 0.0;
};

// REQUIRES: the scenario's class lists non-empty (run_fleet_scale checks).
FleetVehicle fleet_vehicle(const Scenario& scenario, uint64_t seed, uint64_t index);

// One local day of a vehicle, as this fidelity drives it: when it leaves
// home, arrives at its destination, leaves it and is home again (local
// minutes of that day), the energy of each way, and the draw that decides
// whether its driver plugs in on arrival (plugs in when plug_u <
// fleet.plug_in_probability, or below 30% SoC, with a home charger). No
// outing when leave_home < 0. Exposed so that the live fleet can drive the
// very same cars (`idlefleet sim live`, agent::SimVehicleParams::outings).
struct FleetDayPlan {
  int leave_home = -1;
  int arrive_away = 0;
  int leave_away = 0;
  int arrive_home = 0;
  double energy_out_kwh = 0.0;
  double energy_back_kwh = 0.0;
  double plug_u = 1.0;
};

// Vehicle `index`'s plan for the local day `local_day` (days since
// 1970-01-01 in the fleet's time zone), from the same draws as a run with `seed`.
FleetDayPlan fleet_day_plan(const Scenario& scenario, const FleetVehicle& vehicle, uint64_t seed, uint64_t index,
                            int64_t local_day);

// Whether vehicle `index` is plugged in when a run with `seed` starts (if
// its plan puts it at home then).
bool fleet_initially_plugged(const Scenario& scenario, const FleetVehicle& vehicle, uint64_t seed, uint64_t index);

// The state a decision needs, besides the vehicle and the instant.
struct FleetVehicleState {
  bool parked = true;        // gear in P, nobody aboard
  bool plugged = false;
  double soc_pct = 50.0;
  double wear_used_hours = 0.0;  // this local calendar month
};

// The next departure the vehicle's owner has declared (the habitual weekday
// departure Monday to Friday when the policy declares_departures, else the
// policy's own list), at or after `now`.
std::optional<core::TimeMs> fleet_next_departure(const Scenario& scenario, const FleetVehicle& vehicle,
                                                 core::TimeMs now);

// What core::decide_eligibility would be given for this vehicle: every signal
// fresh (chip at ambient temperature: temperature is not modelled at fleet
// scale), the owner's policy with the vehicle's tariff and declared
// departures, the charger's power into the battery, the computer's power.
core::EligibilityInputs fleet_eligibility_inputs(const Scenario& scenario, const FleetVehicle& vehicle,
                                                 const FleetVehicleState& state, core::TimeMs now);

// Allowed hours and price cap for each (policy, tariff) pair, by local
// minute of the week: built once per run.
class FleetPolicyTables {
 public:
  explicit FleetPolicyTables(const Scenario& scenario);
  bool allowed(uint32_t policy, uint32_t tariff, int minute_of_week) const {
    const size_t bit = (static_cast<size_t>(policy) * tariffs_ + tariff) * core::kMinutesPerWeek + minute_of_week;
    return (bits_[bit >> 6] >> (bit & 63)) & 1;
  }

 private:
  size_t tariffs_;
  std::vector<uint64_t> bits_;
};

// The fast equivalent of decide_eligibility(fleet_eligibility_inputs(...), now).eligible,
// given the next declared departure (fleet_next_departure).
bool fleet_eligible(const Scenario& scenario, const FleetPolicyTables& tables, const FleetVehicle& vehicle,
                    const FleetVehicleState& state, std::optional<core::TimeMs> next_departure, core::TimeMs now);

}  // namespace idlefleet::sim
