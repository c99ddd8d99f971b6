// The life of one inference job: states, attempts on vehicles, leases, and
// the tokens produced so far, which survive every preemption.
//
//   queued ──assign──> assigned ──start──> running ──complete──> done
//     ^                   │                  │
//     └──── preempted <───┴──(preempt / lease expired)
//   any live state ──cancel──> cancelled;  too many attempts ──> failed
//
// A job runs as a sequence of attempts, each on one vehicle under a lease
// that the vehicle renews with every chunk of tokens (or a heartbeat). When a
// driver returns, or a vehicle vanishes and its lease expires, the attempt
// ends and the job goes back to be placed again, keeping every token already
// produced: the next vehicle rebuilds its cache from prompt + produced tokens
// and continues, and the deterministic engine makes the result the same.
//
// Messages from vehicles can be late, duplicated or reordered: a message for
// an attempt that is no longer current is refused as stale; a chunk that
// repeats tokens already appended is accepted as a duplicate only if it
// agrees with them; a chunk that would leave a gap is refused. Nothing here
// trusts its input: every refusal is a Status naming the job and attempt.
//
// No I/O, no clock: `now` is an argument. Thread-safety: a value type.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>
#include <span>
#include <string>
#include <vector>

#include "common/result.h"
#include "core/time.h"

namespace idlefleet::core {

enum class JobState { kQueued, kAssigned, kRunning, kPreempted, kDone, kFailed, kCancelled };
const char* job_state_name(JobState s);
bool job_state_final(JobState s);

// How an attempt ended.
enum class AttemptEnd {
  kLive,       // still assigned or running
  kCompleted,  // the job finished on it
  kPreempted,  // the vehicle stopped (driver back, policy) and said so
  kLost,       // its lease expired: the vehicle vanished or went silent
  kCancelled,  // the client cancelled the job
  kFailed,     // the vehicle reported an error
};
const char* attempt_end_name(AttemptEnd e);

struct Attempt {
  uint32_t number = 0;          // 1, 2, ... within the job
  std::string vehicle_id;
  TimeMs assigned_at = 0;
  TimeMs started_at = 0;        // 0 until the vehicle starts
  TimeMs lease_expires_at = 0;
  TimeMs ended_at = 0;          // 0 while live
  AttemptEnd end = AttemptEnd::kLive;
  uint64_t tokens_at_start = 0;  // produced tokens the vehicle resumed from
  uint64_t tokens_appended = 0;  // tokens this attempt added
};

struct JobLimits {
  // Attempts that failed or were lost (the vehicle's error, an expired
  // lease): this many and the job fails. Preemptions do not count: a driver
  // coming home is nobody's fault, and the job keeps its tokens.
  uint32_t attempts_max = 8;
  uint32_t attempts_total_max = 256;          // every attempt, preempted ones included
  DurationMs lease_ms = 10 * kSecondMs;       // renewed by every chunk and heartbeat
  uint64_t tokens_max = 1u << 20;             // produced tokens per job
  size_t chunk_tokens_max = 4096;             // tokens in one chunk message
};

class Job {
 public:
  Job(std::string id, TimeMs created_at, uint64_t max_tokens, JobLimits limits = {});

  const std::string& id() const { return id_; }
  JobState state() const { return state_; }
  TimeMs created_at() const { return created_at_; }
  uint64_t max_tokens() const { return max_tokens_; }
  const std::vector<int32_t>& produced() const { return produced_; }
  const std::vector<Attempt>& attempts() const { return attempts_; }
  // The live attempt, or null.
  const Attempt* current() const;
  const std::string& finish_reason() const { return finish_reason_; }  // done: "stop"/"length"; failed: why

  // queued or preempted -> assigned to `vehicle_id`, lease starting now.
  // Fails the job (and returns an error) when the attempts are used up.
  Status assign(const std::string& vehicle_id, TimeMs now);
  // assigned -> running: the vehicle has accepted attempt `attempt`.
  Status start(uint32_t attempt, TimeMs now);
  // Tokens [first_index, first_index + ids.size()) from attempt `attempt`.
  // Renews the lease. Duplicates that agree are accepted and ignored.
  Status append(uint32_t attempt, uint64_t first_index, std::span<const int32_t> ids, TimeMs now);
  // Renews the lease of a live attempt.
  Status heartbeat(uint32_t attempt, TimeMs now);
  // running or assigned -> preempted (tokens kept): the vehicle stopped.
  Status preempt(uint32_t attempt, TimeMs now);
  // The vehicle reports an error: the attempt ends, the job is placed again.
  Status attempt_failed(uint32_t attempt, const std::string& why, TimeMs now);
  // running -> done, when the vehicle's count of produced tokens matches.
  Status complete(uint32_t attempt, uint64_t total_tokens, const std::string& finish_reason, TimeMs now);
  // The vehicle lost the attempt without saying so (it restarted): the
  // attempt ends as lost and the job goes back to be placed, tokens kept.
  Status lose(uint32_t attempt, TimeMs now);
  // Any live state -> failed with a reason (e.g. no vehicle took it in time).
  Status fail(const std::string& why, TimeMs now);
  // Any live state -> cancelled.
  Status cancel(TimeMs now);
  // Any live state -> done with `finish_reason`, when the coordinator itself
  // ends the generation (a client's stop string appeared in the text). A live
  // attempt ends as cancelled; the tokens produced so far are kept.
  Status stop_early(const std::string& finish_reason, TimeMs now);
  // Rebuilds a job from what the coordinator stored, after a restart. A live
  // attempt is ended as lost at `now` (its vehicle's later messages are then
  // stale), and an unfinished job goes back to be placed with its tokens.
  // Fails on a stored record that breaks the job's invariants.
  static Result<Job> restore(std::string id, TimeMs created_at, uint64_t max_tokens, JobLimits limits,
                             JobState state, std::vector<int32_t> produced, std::vector<Attempt> attempts,
                             std::string finish_reason, TimeMs now);

  // If the live attempt's lease has expired: it is lost and the job is
  // preempted. Returns true when that happened.
  bool expire_lease(TimeMs now);

 private:
  Status check_attempt(uint32_t attempt, const char* what) const;
  void end_attempt(AttemptEnd end, TimeMs now);

  std::string id_;
  TimeMs created_at_;
  uint64_t max_tokens_;
  JobLimits limits_;
  JobState state_ = JobState::kQueued;
  std::vector<int32_t> produced_;
  std::vector<Attempt> attempts_;
  std::string finish_reason_;
};

// "queued" -> JobState; nullopt for anything else.
std::optional<JobState> job_state_from_name(std::string_view name);

// Attempts as JSON (for the store) and back, validated.
std::string attempts_to_json(const std::vector<Attempt>& attempts);
Result<std::vector<Attempt>> attempts_from_json(std::string_view text);

}  // namespace idlefleet::core
