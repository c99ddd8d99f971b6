// Verification of untrusted vehicles: the pure pieces the coordinator
// machine uses to decide which finished jobs to re-run, who was wrong when
// outputs differ, and each vehicle's standing.
//
// The engine is deterministic: the same model, prompt, sampling and seed
// give the same tokens on any vehicle of the same engine build, also when a
// generation is resumed from produced tokens. So a job's output can be
// checked by running it again, from scratch, on another vehicle and
// comparing tokens; a disagreement is settled by a third run (majority).
//
// Standing is an integer in [0, kStandingMax] (per mille). It rises with
// each agreement and falls with each fault; below a threshold the vehicle
// is quarantined (given no work) until an operator lifts it. How often a
// vehicle's jobs are checked adapts: always for its first checks and after
// a fault, then falling with its run of agreements to a floor.
//
// No I/O, no clock, no global randomness: the draw for a job is a hash of
// the configured seed and the job's id. Thread-safety: pure functions and
// value types.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "core/job.h"
#include "core/time.h"

namespace idlefleet::core {

inline constexpr int32_t kStandingMax = 1000;
// Check jobs are internal: their ids start with this, which client job ids may not.
inline constexpr std::string_view kCheckJobIdPrefix = "verify-";
// A vehicle's quarantine reason, for its owner, is cut to this.
inline constexpr size_t kQuarantineReasonBytesMax = 512;

struct VerificationConfig {
  bool enabled = false;
  uint64_t seed = 0;                 // mixed with the job id for each draw
  double sample_floor = 0.05;        // the least probability of a check (vehicles in good standing)
  uint32_t warmup_checks = 5;        // agreements in a row before the probability falls below 1
  int32_t standing_initial = 500;    // a vehicle never checked
  int32_t standing_agree = 10;       // gained per agreement
  int32_t standing_fault = 200;      // lost per fault
  int32_t quarantine_below = 300;    // standing below this: quarantined
  DurationMs check_wait_ms_max = 30 * kMinuteMs;  // a check run not done by then ends unverified
  size_t checks_live_max = 1000;     // jobs under verification at once (more: not sampled)

  bool operator==(const VerificationConfig&) const = default;
};

// Validates the ranges above; the config loader calls it.
Status validate_verification(const VerificationConfig& c);

// What the coordinator knows of one vehicle's honesty (persisted by the shell).
struct VehicleStanding {
  int32_t standing = 500;
  uint32_t checks_agreed = 0;       // checks in which its tokens agreed
  uint32_t checks_faulted = 0;      // checks in which it produced the first wrong token
  uint32_t agreed_since_fault = 0;  // agreements since its last fault (or ever)
  bool quarantined = false;
  std::string quarantine_reason;    // for its owner, at most kQuarantineReasonBytesMax
  TimeMs quarantined_at = 0;
};

VehicleStanding initial_standing(const VerificationConfig& c);

// The probability that a job this vehicle worked on is checked: 1 while it
// has fewer than warmup_checks agreements since its last fault or its
// standing is below the initial one, then warmup_checks / agreed_since_fault,
// never below sample_floor.
double check_probability(const VehicleStanding& s, const VerificationConfig& c);

// The deterministic draw: true with probability p for this (seed, job id).
bool draw_check(uint64_t seed, std::string_view job_id, double p);

// The id of check run `round` (1 or 2) of a job.
std::string check_job_id(uint64_t seed, std::string_view job_id, uint32_t round);

// The first index where two outputs differ (the shorter's length when one
// is a prefix of the other), or nullopt when they are equal.
std::optional<uint64_t> first_difference(std::span<const int32_t> a, std::span<const int32_t> b);

// Which attempt of a job produced token `index` of its output: the attempt
// whose appended tokens cover it, or, when `index` is the output's length
// (the job ended too early), the attempt that completed it. Null if none.
const Attempt* attempt_at(const std::vector<Attempt>& attempts, uint64_t index);

// The vehicles whose attempts appended tokens, in attempt order, once each.
std::vector<std::string> producers(const std::vector<Attempt>& attempts);

// Records an agreement.
void record_agreement(VehicleStanding* s, const VerificationConfig& c);
// Records a fault; quarantines the vehicle (with `reason`) when its standing
// falls below the threshold. Returns true when it was quarantined just now.
bool record_fault(VehicleStanding* s, const VerificationConfig& c, std::string_view reason, TimeMs now);

}  // namespace idlefleet::core
