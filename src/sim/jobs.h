// The detailed fidelity's work: single jobs, each placed by the real
// scheduler (core::place) on a bounded sample of a shard's idle, eligible
// vehicles, as the coordinator places them (issue #6, Deliver 3;
// docs/simulator.md, "Fidelities").
//
// A ShardJobs belongs to one shard of the simulation (sim/fleet_scale.cc
// owns the vehicles: where they are, their batteries and their owners'
// policies). Each bin the shard tells it which vehicles may work and until
// when (JobCar); ShardJobs generates the shard's share of the demand as jobs
// (interactive requests arriving as a Poisson process at the scenario's
// hourly rate, the batch backlog added at each local midnight), queues them
// (interactive before batch, then submission order, as the coordinator),
// places each on the best of up to core's kPlacementCandidatesMax idle
// vehicles that can hold its model (a rotating cursor, as the coordinator),
// runs it for its real duration on that vehicle's computer, and cuts it when
// the vehicle stops being available (its driver leaving, the owner's margin
// before a departure, the policy at the next bin): the job goes back to the
// queue keeping the tokens it produced, which are prefilled again elsewhere
// (work redone). A car that does not hold a model downloads it first
// (fleet.network's per-vehicle speed), then keeps it.
//
// Determinism: a pure function of the scenario, the seed and the shard (its
// draws come from counter_random keyed by the seed and the shard's first
// vehicle), so the output does not depend on the thread count.
//
// Thread-safety: one ShardJobs per thread; the scenario is read only.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "core/time.h"
#include "sim/scenario.h"

namespace idlefleet::sim {

// A vehicle of the shard as the scheduler sees it in one bin.
struct JobCar {
  uint32_t computer = 0;
  bool available = false;         // eligible at the bin's start
  core::TimeMs stop = 0;          // available until then (at most the bin's end)
  bool driver_leaves = false;     // `stop` is its driver leaving (else the policy's margin or the bin's end)
  core::TimeMs departure_earliest = 0;  // the next declared departure (far away when none)
  int64_t price_micros_per_kwh = 0;
  double accelerator_temp_limit_c = 85.0;  // the owner's
  double wear_budget_left_fraction = 1.0;
};

// What a vehicle did in the bin.
struct CarWork {
  core::DurationMs busy_ms = 0;
  double interactive_tokens = 0.0;  // output tokens produced
  double batch_tokens = 0.0;
};

// The shard's bin totals.
struct JobBinStats {
  double interactive_tokens = 0.0;
  double batch_tokens = 0.0;
  double interactive_dropped_tokens = 0.0;  // output of requests that waited past the timeout
  double preemptions = 0.0;                 // attempts cut by the vehicle
  double work_redone_tokens = 0.0;          // prompt + produced tokens prefilled again
  uint64_t interactive_started = 0;         // first placements of interactive jobs
  double interactive_wait_ms_sum = 0.0;
  double batch_backlog_tokens = 0.0;        // batch output waiting at the bin's end
  uint64_t jobs_completed = 0;
  // Interactive waits by bucket (kWaitBuckets, log-spaced), for percentiles
  // across shards.
  std::vector<uint32_t> wait_histogram;
};

inline constexpr size_t kWaitBuckets = 64;
// The wait a bucket starts at, ms: 0, then doubling from 1 ms in quarter steps.
double wait_bucket_start_ms(size_t bucket);
size_t wait_bucket(double wait_ms);

class ShardJobs {
 public:
  // `shard_share`: the shard's vehicles over the fleet's (its share of the
  // demand). `first_index`: the shard's first vehicle, for ids and draws.
  ShardJobs(const Scenario& scenario, uint64_t seed, uint64_t first_index, size_t cars, double shard_share);
  ~ShardJobs();
  ShardJobs(const ShardJobs&) = delete;
  ShardJobs& operator=(const ShardJobs&) = delete;

  // The batch backlog grows by the shard's share of a day's batch tokens.
  void add_batch_day();

  // Runs [t, t_end): `cars` is the shard's vehicles (index = position);
  // `work` gets what each did (same size). `interactive_tps` is the shard's
  // interactive output tokens/s asked for in this bin.
  JobBinStats serve_bin(core::TimeMs t, core::TimeMs t_end, double interactive_tps, std::span<const JobCar> cars,
                        std::span<CarWork> work);

  uint64_t jobs_placed() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace idlefleet::sim
