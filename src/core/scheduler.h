// Placement: which vehicle should run a job.
//
// A pure function of its inputs: the job's needs and a snapshot of the
// candidate vehicles (as the coordinator knows them), so the simulator and
// the deterministic tests run exactly the placement the coordinator does.
//
// Hard constraints (a vehicle that fails one is never chosen): eligible by
// its owner's policy, idle (no job of its own), the model fits in its free
// accelerator memory, and its predicted departure leaves room for the job
// (earliest likely departure after now + the job's expected duration +
// a safety margin), unless no vehicle can promise that, in which case the
// one expected to stay longest is allowed (the job survives preemption).
// Among the rest, a score prefers, in this order of weight: the model
// already cached (no download), enough parked time, cheap energy, a cool
// chip, wear budget left, a good record (completed versus lost
// attempts) and a high verification standing. Ties go to the smallest vehicle id, so the choice never
// depends on input order.
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "core/time.h"

namespace idlefleet::core {

struct PlacementRequest {
  std::string model_id;
  uint64_t model_bytes = 0;              // accelerator memory the model needs
  DurationMs expected_duration_ms = 0;   // the job's expected running time
  DurationMs departure_margin_ms = 5 * kMinuteMs;
  bool batch = false;                    // batch work weighs energy price more
};

struct VehicleCandidate {
  std::string vehicle_id;
  bool eligible = false;
  bool busy = false;
  uint64_t memory_free_bytes = 0;
  bool model_cached = false;
  TimeMs departure_earliest = 0;         // the predictor's conservative departure time
  int64_t energy_price_micros_per_kwh = 0;
  double accelerator_temp_c = 0.0;
  double accelerator_temp_limit_c = 85.0;
  double wear_budget_left_fraction = 1.0;  // 0..1 of this month's budget
  uint32_t attempts_completed = 0;
  uint32_t attempts_lost = 0;
  double standing = 0.5;  // 0..1: its verification standing (core/verification.h)
};

struct Placement {
  std::string vehicle_id;
  double score = 0.0;
  bool covers_job = false;  // the predicted parked time covers the job
};

// Weights of the score's terms (documented defaults; the simulator varies them).
struct PlacementWeights {
  double cached = 4.0;          // per cached model (a download is minutes)
  double covers_job = 3.0;      // predicted to stay for the whole job
  double energy = 2.0;          // 1 at the cheapest candidate, 0 at the dearest
  double energy_batch = 4.0;    // the same for batch work
  double cool = 1.0;            // 1 at ambient-cool, 0 at the temperature limit
  double wear = 1.0;            // budget fraction left
  double record = 2.0;          // share of attempts completed (1 with no history)
  double standing = 2.0;        // per unit of verification standing (0..1)
};

// The best vehicle for the request, or nothing when none meets the hard
// constraints. `now` is when the job would start.
std::optional<Placement> place(const PlacementRequest& request, std::span<const VehicleCandidate> candidates,
                               TimeMs now, const PlacementWeights& weights = {});

// Every candidate's verdict, best first, with the reason a rejected one
// was rejected (for the dashboard and for tests).
struct PlacementVerdict {
  std::string vehicle_id;
  bool acceptable = false;
  std::string reason;  // why not, when not acceptable
  double score = 0.0;
};
std::vector<PlacementVerdict> explain_placement(const PlacementRequest& request,
                                                std::span<const VehicleCandidate> candidates, TimeMs now,
                                                const PlacementWeights& weights = {});

}  // namespace idlefleet::core
