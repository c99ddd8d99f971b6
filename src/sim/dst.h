// Deterministic simulation testing (DST): the coordinator's and the agents'
// own state machines (core::CoordinatorMachine, core::AgentMachine), fed by
// simulated cars (agent::SimVehicle) and simulated engines, on a simulated
// network and clock with faults drawn from one seed; every invariant checked
// after every step. FoundationDB's and TigerBeetle's way: the same seed gives
// the same run, step for step, so any failure replays from its seed alone.
//
// The world: one coordinator (crashes and restarts, rebuilt from a simulated
// store that holds exactly what PersistJobEffect and VehicleStandingEffect
// asked to be written, as src/coordinator/server.cc restores); N vehicles,
// each a SimVehicle parked in the evening feeding its AgentMachine as the
// agent shell (src/agent/fleet.cc) does, with an engine whose tokens are a
// pure function of (sampling seed, prompt, index), so the single-vehicle
// result of every job is known; clients that submit and cancel jobs. Every
// message travels as bytes (core::encode_message / decode_message) with
// per-message delay, loss, duplication, reordering and partitions. Vehicle
// chaos: drivers returning, agents restarting (a new instance), chips heated
// (agent::SimVehicle::set_ambient_c).
//
// The invariants (docs/dst.md): every accepted job ends exactly once, and by
// the end of the quiet period every one has; the tokens relayed to a job's
// client are, in order without gaps or repeats, its single-vehicle result; no
// engine runs while its agent's decision is ineligible for longer than
// kDstStopBoundMs; every done job settles once (core::settle_job) into a
// ledger whose every transaction balances (core::validate); a serving car's
// SoC never falls below its owner's floor by more than kDstSocTolerancePct.
//
// No wall clock, no threads, no I/O: one event queue ordered by (time,
// sequence). Thread-safety: run_dst is a pure function of its options.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"
#include "core/time.h"

namespace idlefleet::sim {

// An engine keeps running at most this long after its agent's decision turned
// ineligible (the agent stops it in the same call; it stops at its next token
// boundary; the bound allows a simulated token and a step of slack).
inline constexpr core::DurationMs kDstStopBoundMs = 1 * core::kSecondMs;
// A serving car's SoC may be this far below its owner's floor (the accelerator
// draws between two signal updates; the policy re-checks on each).
inline constexpr double kDstSocTolerancePct = 0.5;
// Bounds of DstOptions (validate()).
inline constexpr size_t kDstVehiclesMax = 64;
inline constexpr size_t kDstJobsMax = 1000;
inline constexpr core::DurationMs kDstDurationMsMax = 24 * core::kHourMs;
// The trace tail kept for a violation's report.
inline constexpr size_t kDstTraceTailLines = 24;

// Fault rates; each probability in [0, 1], each rate per simulated hour >= 0.
struct DstFaults {
  double message_loss = 0.0;         // per message
  double message_duplicate = 0.0;    // per message
  // Per message: it may overtake those sent before it on its link (else a
  // link delivers in order, as one NATS connection does).
  double message_reorder = 0.0;
  core::DurationMs delay_ms_max = 0; // uniform extra delay per message
  double partitions_per_hour = 0.0;  // a vehicle cut off for 1..60 s
  double coordinator_crashes_per_hour = 0.0;
  double driver_returns_per_hour = 0.0;   // per vehicle
  double agent_restarts_per_hour = 0.0;   // per vehicle
  double chip_heats_per_hour = 0.0;       // per vehicle: the garage turns hot
};

struct DstOptions {
  uint64_t seed = 1;
  size_t vehicles = 3;
  size_t jobs = 12;
  // Faults are injected for this long; then a quiet period (no faults, the
  // coordinator up, partitions healed) by whose end every job must have ended.
  core::DurationMs duration_ms = 4 * core::kMinuteMs;
  core::DurationMs quiet_ms = 4 * core::kMinuteMs;
  // nullopt: drawn from the seed (some seeds calm, some stormy).
  std::optional<DstFaults> faults;
  // TEST ONLY: switches on CoordinatorCoreConfig::test_reemit_done_on_duplicate
  // (a planted double settlement) to show that the ledger invariant sees it.
  bool test_plant_double_settlement = false;

  Status validate() const;
};

struct DstViolation {
  std::string invariant;  // "job_ends_once", "tokens", "stop_bound", "ledger", "soc_floor", "all_jobs_end", "protocol"
  std::string detail;
  uint64_t step = 0;
  core::TimeMs at_ms = 0;  // simulated, since the run's start
};

struct DstResult {
  std::optional<DstViolation> violation;  // the first; nullopt: ok
  uint64_t steps = 0;
  std::map<std::string, uint64_t> faults;  // injected, by kind
  uint64_t jobs_accepted = 0;
  uint64_t jobs_done = 0;
  uint64_t jobs_failed = 0;
  uint64_t jobs_cancelled = 0;
  uint64_t settlements = 0;
  // Done jobs none of whose receipts arrived (lost, or the coordinator
  // restarted): the shell charges the client only, and owners get nothing.
  uint64_t settlements_without_receipts = 0;
  // Messages the coordinator refused, by metric label (stale_message, ...).
  std::map<std::string, uint64_t> refusals;
  std::map<std::string, std::string> refusal_first;  // by label: the first refusal's text
  // A digest of the whole trace: two runs of one seed must agree.
  uint64_t trace_hash = 0;
  std::vector<std::string> trace_tail;  // the last kDstTraceTailLines lines

  bool ok() const { return !violation.has_value(); }
};

// The fault rates a seed draws (DstOptions::faults unset).
DstFaults dst_faults_for_seed(uint64_t seed);

// REQUIRES: options.validate() ok.
DstResult run_dst(const DstOptions& options);

}  // namespace idlefleet::sim
