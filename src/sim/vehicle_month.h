// One typical vehicle over a month, in virtual time, with the project's own
// code: the simulated car (agent/sim_vehicle.h: commute, home charging,
// battery and chip physics), the agent's state machine (core/agent_machine.h:
// the owner's policy, departures, wear budget, metering and receipts) and the
// ledger's settlement (core/ledger.h: revenue share, energy at the owner's
// tariff, wear allowance). Only the engine and the coordinator are stood in
// for: there is always work (a batch backlog: the assumption the result
// rests on), a job is assigned the moment the car is eligible, and the engine
// produces tokens at a stated rate. A preempted job finishes elsewhere, and
// this car is paid for its part as settlement splits a job between vehicles.
//
// This answers what an owner would ask before opting in: how many hours the
// car works, the energy it uses and what that costs, the wear on its chip,
// and what it earns (docs/earnings.md shows a run; `idlefleet sim month`).
//
// Determinism: everything follows from the parameters (seed included); no
// clock, no I/O.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "agent/sim_vehicle.h"
#include "common/result.h"
#include "core/policy.h"
#include "core/time.h"

namespace idlefleet::sim {

inline constexpr int kMonthDaysMax = 366;
inline constexpr core::DurationMs kMonthStepMsMin = core::kSecondMs;
inline constexpr core::DurationMs kMonthStepMsMax = 10 * core::kMinuteMs;
inline constexpr double kMonthTokensPerSecondMax = 100000.0;
inline constexpr uint64_t kMonthJobTokensMax = 1u << 20;
inline constexpr uint64_t kMonthPriceMicrosPerMtokMax = 1000ull * 1000 * 1000;  // 1000 a million tokens

struct VehicleMonthParams {
  core::TimeMs start_ms = 1793491200000;  // 2026-11-01T00:00:00Z
  int days = 30;
  // The car and its owner (seed, schedule, charger, accelerator, time zone).
  agent::SimVehicleParams vehicle;
  // The owner's limits (opted in); the tariff is what energy costs and is refunded at.
  core::OwnerPolicy policy;
  // The work: output tokens per second while generating, prompt tokens per
  // second of prefill, and the size of a typical job.
  double tokens_per_second = 30.0;
  double prefill_tokens_per_second = 1000.0;
  uint64_t prompt_tokens = 500;
  uint64_t completion_tokens = 500;
  // What clients pay per million tokens, and how it is shared (the
  // coordinator's [pricing] and [ledger]).
  uint64_t input_price_micros_per_mtok = 200'000;
  uint64_t output_price_micros_per_mtok = 600'000;
  uint64_t owner_share_ppm = 600'000;
  uint64_t wear_micros_per_accelerator_hour = 50'000;
  core::DurationMs step_ms = 30 * core::kSecondMs;

  Status validate() const;
};

// One local day (or the whole month) of the car.
struct MonthTotals {
  double hours_driving = 0.0;
  double hours_parked = 0.0;   // parked or charging, serving included
  double hours_plugged = 0.0;
  double hours_eligible = 0.0; // eligible or serving
  double hours_serving = 0.0;
  uint64_t jobs_done = 0;
  uint64_t attempts_preempted = 0;
  uint64_t tokens_in = 0;
  uint64_t tokens_out = 0;
  double energy_kwh = 0.0;          // the accelerator's, metered on the receipts
  int64_t energy_cost_micros = 0;   // that energy at the owner's tariff
  double wear_hours = 0.0;          // temperature-weighted accelerator-hours
  int64_t revenue_share_micros = 0; // ledger postings to the owner, by kind
  int64_t energy_refund_micros = 0;
  int64_t wear_allowance_micros = 0;
  int64_t client_paid_micros = 0;   // what clients paid for this car's part

  // What the owner is paid, and what is left after the electricity bill.
  int64_t paid_micros() const { return revenue_share_micros + energy_refund_micros + wear_allowance_micros; }
  int64_t net_micros() const { return paid_micros() - energy_cost_micros; }
};

struct VehicleMonthResult {
  MonthTotals total;
  std::vector<MonthTotals> days;  // by local day, from the start
  uint64_t trips = 0;             // drives (gear out of P)
  double soc_min_pct = 100.0;     // the lowest SoC seen
  double wear_budget_hours = 0.0;
};

// kInvalidArgument / kOutOfRange naming the parameter for bad parameters.
Result<VehicleMonthResult> simulate_vehicle_month(const VehicleMonthParams& params);

}  // namespace idlefleet::sim
