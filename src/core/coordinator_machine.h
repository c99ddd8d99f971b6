// The coordinator's decision logic: every job and every vehicle, as one
// state machine.
//
//   handle(event, now) -> effects
//
// Events: a client submits or cancels a job, a vehicle sends a message, time
// passes, a job is restored from the store after a restart. Effects: send a
// message to a vehicle, relay new tokens to the job's client, end a job,
// persist a job, log (and count) a refusal. The shell (src/coordinator/) does
// the I/O; everything that decides is here, so the simulator and the
// deterministic simulation tests run exactly what production runs.
//
// Trust: a vehicle's messages are checked against what the coordinator
// knows. Only a vehicle that said hello is tracked; a message about an
// attempt must come from the vehicle that holds it and name the live
// attempt (anything else is stale and refused); chunks must continue the
// job's tokens without a gap and agree with any they repeat. Each refusal is
// an effect with a metric name, and never changes a job.
//
// Placement looks at most kPlacementCandidatesMax idle, eligible vehicles that can hold the job's model
// per job, taken in turn from a rotating cursor (the "power of k choices"):
// the best of a bounded sample is nearly as good as the best of all, and a
// placement costs the same in a fleet of ten or of a million.
//
// Embedding jobs (JobSpec::kind = kEmbed) go through the same life: placed
// (only on vehicles whose hello offers `embeddings`), started, and completed
// by one EmbeddingMessage, whose vector goes to the client in a
// JobEmbeddingEffect and is not kept (a finished job keeps no output but its
// tokens, and an embedding job has none). The vector must have the model's
// width (ModelInfo::embedding_dim), cover exactly the prompt and be unit
// length (or zero), as the engine makes it; anything else ends the attempt
// as failed and the job is placed again. An embed attempt that is
// preempted, lost or failed leaves nothing behind: the next one starts over.
//
// Verification (config.verification, core/verification.h): when a
// generation job ends done by its vehicle's own word, a draw seeded by the
// config and the job id (with a probability that adapts to the standing of
// the vehicles that produced it) decides whether to check it. A check is an
// internal job (id kCheckJobIdPrefix...) with the same spec, run from
// scratch, batch priority, on a vehicle of the same engine build that
// produced none of the original's tokens. Equal tokens: every vehicle
// involved gains standing. Different: a third run on yet another vehicle
// decides by majority; the vehicle whose attempt produced the first token
// that differs from the agreed output loses standing (attempts resumed
// after it inherited a wrong prefix and are not at fault), and below the
// threshold it is quarantined: placement skips it and the reason is kept.
// The original's JobEndedEffect says `verifying`; a JobVerifiedEffect
// follows with the agreed output. Check jobs emit no client effects
// (accepted, tokens, ended, persist): they are not stored, and a restart
// forgets them (their originals then settle unverified). Only jobs their
// vehicle completed are checked: one the coordinator stopped early (a stop
// string) has no whole output to compare.
//
// No I/O, no clock: `now` is an argument. Iteration is over ordered maps, so
// the same events give the same effects. Thread-safety: one thread at a time.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <variant>
#include <vector>

#include "common/result.h"
#include "core/job.h"
#include "core/protocol.h"
#include "core/scheduler.h"
#include "core/time.h"
#include "core/verification.h"

namespace idlefleet::core {

// The most unknown vehicles remembered as asked for a hello at once.
inline constexpr size_t kHelloAskedMax = 100'000;

inline constexpr size_t kPlacementCandidatesMax = 16;
// Idle vehicles a placement looks at, at most, to find its candidates.
inline constexpr size_t kPlacementScanMax = 64 * kPlacementCandidatesMax;
inline constexpr size_t kJobIdBytesMax = kIdBytesMax;
// An embedding's L2 norm may differ from 1 by this much (float rounding of
// a normalised vector is far smaller) before the vector is refused.
inline constexpr double kEmbeddingNormTolerance = 1e-3;
// An embedding's expected duration: its prompt's tokens at the decode rate
// (expected_ms_per_token) divided by this, as a batched prefill is faster.
inline constexpr int64_t kPrefillSpeedupMin = 4;

// What a client asked for, validated and tokenised by the API layer.
struct JobSpec {
  std::string model_id;
  std::vector<int32_t> prompt_ids;
  uint64_t max_tokens = 0;
  std::vector<int32_t> stop_ids;
  Sampling sampling;
  bool batch = false;  // low priority: placed after every interactive job
  // OpenAI's logprobs: the top candidates to report per token (0..
  // kTopLogprobsMax), or -1 for none. When set, every chunk of the job must
  // carry logprobs; a vehicle whose chunks do not loses the attempt.
  int32_t logprobs = -1;
  // kEmbed: the vector of prompt_ids; max_tokens must be 0, and stop_ids and
  // sampling are unused.
  WorkKind kind = WorkKind::kGenerate;
};

struct ModelInfo {
  std::string id;
  uint64_t bytes = 0;  // accelerator memory it needs
  uint64_t embedding_dim = 0;  // the width of its embeddings; 0: unknown, not checked
};

struct CoordinatorCoreConfig {
  JobLimits limits;
  DurationMs vehicle_timeout_ms = 15 * kSecondMs;  // silent this long: offline
  DurationMs queued_ms_max = 10 * kMinuteMs;       // interactive jobs fail if no vehicle takes them
  DurationMs queued_batch_ms_max = 24 * kHourMs;   // the batch completion window
  size_t queue_jobs_max = 10000;                   // live (unfinished) jobs
  size_t finished_jobs_kept_max = 10000;           // in memory; the store keeps all
  size_t vehicles_max = 1u << 22;
  DurationMs expected_ms_per_token = 20;           // for the expected duration of a job
  std::vector<ModelInfo> models;
  PlacementWeights weights;
  VerificationConfig verification;
  // TEST ONLY: a planted bug for the deterministic simulation tests
  // (sim/dst.h): a duplicated done message for a job that its attempt
  // already completed ends the job again (a second JobEndedEffect), so that
  // a shell settles it twice. Never set outside tests.
  bool test_reemit_done_on_duplicate = false;
};

// ---- Events ----------------------------------------------------------------

struct SubmitJobEvent {
  std::string job_id;
  JobSpec spec;
};
struct CancelJobEvent {
  std::string job_id;
};
// The coordinator ends a job as done before its vehicle does (a stop string
// appeared in the text): the vehicle is told to stop, the job keeps its
// tokens and ends with `finish_reason`.
struct StopJobEvent {
  std::string job_id;
  std::string finish_reason = "stop";
};
// vehicle_id is the one the transport vouches for (the subject it came on).
struct VehicleMessageEvent {
  std::string vehicle_id;
  Message message;
};
struct CoordinatorTick {};
// A job read back from the store after a restart.
struct RestoreJobEvent {
  Job job;
  JobSpec spec;
};

// A vehicle's standing read back from the store (before or after its hello).
struct RestoreStandingEvent {
  std::string vehicle_id;
  VehicleStanding standing;
};
// An operator lifts a vehicle's quarantine: its standing starts again at the
// initial one, and its next jobs are all checked.
struct LiftQuarantineEvent {
  std::string vehicle_id;
};

using CoordinatorEvent = std::variant<SubmitJobEvent, CancelJobEvent, StopJobEvent, VehicleMessageEvent,
                                      CoordinatorTick, RestoreJobEvent, RestoreStandingEvent, LiftQuarantineEvent>;

// ---- Effects ---------------------------------------------------------------

struct SendToVehicleEffect {
  std::string vehicle_id;
  Message message;
};
// A submitted job was accepted (queued) or refused (status says why).
struct JobAcceptedEffect {
  std::string job_id;
  Status status;
};
// New tokens of a job, in order and never repeated: relay them to the client.
// The machine keeps no logprobs: it passes on those of the new tokens only,
// so that each token's reach the client exactly once, whichever attempt (and
// vehicle) produced it.
struct JobTokensEffect {
  std::string job_id;
  uint64_t first_index = 0;
  std::vector<int32_t> ids;
  std::vector<TokenLogprobs> logprobs = {};  // one per id when the job asked for logprobs, else empty
};
// An embedding job's vector, just before its JobEndedEffect (done).
struct JobEmbeddingEffect {
  std::string job_id;
  uint64_t tokens = 0;
  std::vector<float> values;
};
struct JobEndedEffect {
  std::string job_id;
  JobState state = JobState::kDone;
  std::string finish_reason;
  // Done, and drawn for a check: its output is not final (and it should not
  // settle) until its JobVerifiedEffect.
  bool verifying = false;
};

enum class VerificationOutcome {
  kAgreed,      // the check agreed with the original (perhaps after a third run)
  kCorrected,   // the majority disagreed with the original: agreed_ids is the right output
  kUnresolved,  // the runs disagreed and no majority was reached: no output is trusted
  kUnverified,  // the check could not run in time: the original stands unchecked
};
const char* verification_outcome_name(VerificationOutcome o);

// The end of a job's verification.
struct JobVerifiedEffect {
  std::string job_id;
  VerificationOutcome outcome = VerificationOutcome::kAgreed;
  std::vector<int32_t> agreed_ids;              // the output to release (empty when unresolved)
  std::vector<uint32_t> attempts_at_fault;      // of the original job: earn nothing
  std::vector<std::string> vehicles_at_fault;   // any run's, original or check
  std::string detail;
};

// A vehicle's standing changed: persist it (and tell its owner when it was quarantined).
struct VehicleStandingEffect {
  std::string vehicle_id;
  VehicleStanding standing;
};
// The job changed: write its snapshot (job()) to the store.
struct PersistJobEffect {
  std::string job_id;
};
struct CoordinatorLogEffect {
  std::string what;  // metric label: "stale_message", "unknown_vehicle", "lease_expired", ...
  std::string text;
  bool refusal = false;  // a message refused (else an event worth a line: a preemption, a lost lease)
};

// A vehicle's receipt for an attempt of its own that has ended, consistent
// with what the coordinator saw of the attempt: the token counts, the times,
// and (for a generation) the SHA-256 of the output as of its end. The shell
// checked its signature before the event; the receipt store refuses a second
// receipt for the same attempt.
struct ReceiptAcceptedEffect {
  ReceiptMessage receipt;
};

using CoordinatorEffect = std::variant<SendToVehicleEffect, JobAcceptedEffect, JobTokensEffect, JobEndedEffect,
                                       PersistJobEffect, CoordinatorLogEffect, JobEmbeddingEffect,
                                       ReceiptAcceptedEffect, JobVerifiedEffect, VehicleStandingEffect>;

// What the coordinator knows of one vehicle.
struct VehicleView {
  std::string id;
  std::string instance;
  HelloMessage hello;
  std::optional<StateMessage> state;
  TimeMs last_heard = 0;
  bool online = false;
  std::string job_id;     // the attempt it holds, if any
  uint32_t attempt = 0;
  // It failed an attempt (perhaps refused it as busy with something we do
  // not know of): given no work until its next state report, which follows.
  bool state_due = false;
  uint32_t attempts_completed = 0;
  uint32_t attempts_lost = 0;  // lost, failed or forked
};

struct CoordinatorCounters {
  uint64_t jobs_submitted = 0;
  uint64_t jobs_refused = 0;
  uint64_t jobs_done = 0;
  uint64_t jobs_failed = 0;
  uint64_t jobs_cancelled = 0;
  uint64_t placements = 0;
  uint64_t preemptions = 0;       // attempts ended by the vehicle (driver back, policy)
  uint64_t attempts_lost = 0;     // lease expired or the vehicle restarted
  uint64_t tokens_relayed = 0;
  uint64_t messages_accepted = 0;
  uint64_t messages_rejected = 0;
  uint64_t checks_started = 0;     // check runs placed in the queue
  uint64_t checks_agreed = 0;      // verifications that upheld the original
  uint64_t checks_disputed = 0;    // verifications that found a fault
  uint64_t checks_unverified = 0;  // verifications that could not finish
  uint64_t quarantines = 0;
};

struct JobEntry {
  Job job;
  JobSpec spec;
  uint64_t sequence = 0;  // submission order
  TimeMs queued_since = 0;
  // Check runs only: the job they check, which round (1, 2), the vehicles
  // they may not run on, and the engine build they must run on.
  std::string check_of = {};
  uint32_t check_round = 0;
  std::set<std::string> excluded_vehicles = {};
  std::string engine_build = {};
};

// A job under verification.
struct Verification {
  std::vector<std::string> check_ids;  // its check runs, in order
  std::vector<int32_t> first_check_ids;  // the first check's output, once it disagreed
};

class CoordinatorMachine {
 public:
  explicit CoordinatorMachine(CoordinatorCoreConfig config);

  std::vector<CoordinatorEffect> handle(const CoordinatorEvent& event, TimeMs now);

  const CoordinatorCoreConfig& config() const { return config_; }
  const CoordinatorCounters& counters() const { return counters_; }
  const JobEntry* job(const std::string& id) const;
  const std::map<std::string, VehicleView>& vehicles() const { return vehicles_; }
  const std::map<std::string, JobEntry>& jobs() const { return jobs_; }
  // Every vehicle's standing (those heard from or restored).
  const std::map<std::string, VehicleStanding>& standings() const { return standings_; }
  const VehicleStanding* standing(const std::string& vehicle_id) const;
  // Jobs whose verification has not ended.
  size_t jobs_verifying() const { return verifying_.size(); }
  size_t queue_depth() const { return queue_.size(); }
  size_t jobs_live() const { return live_jobs_; }
  // Vehicles online, eligible and idle: what can take a job now.
  size_t vehicles_available() const { return idle_.size(); }
  // Vehicles online and eligible, idle or serving.
  size_t vehicles_eligible() const;

 private:
  using Effects = std::vector<CoordinatorEffect>;
  // Queue order: interactive before batch, then submission order.
  using QueueKey = std::pair<bool, uint64_t>;

  void submit(const SubmitJobEvent& e, TimeMs now, Effects* out);
  // Ends a live job: cancelled, or done with *done_reason when given (StopJobEvent).
  void cancel(const std::string& job_id, TimeMs now, Effects* out, const std::string* done_reason = nullptr);
  void on_vehicle(const VehicleMessageEvent& e, TimeMs now, Effects* out);
  void on_hello(const std::string& vid, const HelloMessage& m, TimeMs now, Effects* out);
  void on_state(VehicleView* v, const StateMessage& m, TimeMs now, Effects* out);
  // Completes an embed attempt with its vector; false when it was refused.
  bool on_embedding(VehicleView* v, const EmbeddingMessage& m, TimeMs now, Effects* out);
  void on_receipt(const std::string& vid, const ReceiptMessage& m, Effects* out);
  // Finds the job and checks that `vid` holds its live attempt `attempt`.
  JobEntry* attempt_of(const std::string& vid, const std::string& job_id, uint32_t attempt, const char* what,
                       Effects* out);
  void tick(TimeMs now, Effects* out);
  void place_queued(TimeMs now, Effects* out);
  void requeue(JobEntry* entry, TimeMs now);
  void release_vehicle(const std::string& vid, const std::string& job_id);
  // verifying: the job is done and drawn for a check (JobEndedEffect::verifying).
  void finish(JobEntry* entry, Effects* out, bool verifying = false);
  // After a vehicle's done: draws whether to check the job; true when a check was queued.
  bool maybe_check(JobEntry* entry, TimeMs now, Effects* out);
  // Queues check run `round` of `original`, on none of `excluded`.
  // False when its id is taken (a hash collision): the job goes unchecked.
  bool start_check(const JobEntry& original, uint32_t round, std::set<std::string> excluded, TimeMs now);
  // A check run ended (done, failed or cancelled): compare, decide, emit.
  void on_check_ended(const JobEntry& check, TimeMs now, Effects* out);
  void end_verification(const std::string& job_id, JobVerifiedEffect verdict, Effects* out);
  VehicleStanding& standing_of(const std::string& vehicle_id);
  void agree(const std::string& vehicle_id, Effects* out);
  void fault(const std::string& vehicle_id, const std::string& why, TimeMs now, Effects* out);
  // Drops the effects meant for clients and the store (tokens, ended,
  // persist, embedding) of check jobs, which have neither. (A client's
  // refused submission with a check id keeps its JobAcceptedEffect.)
  void drop_check_effects(Effects* out) const;
  void update_idle(const VehicleView& v);
  void reject(const char* what, std::string text, Effects* out);
  const ModelInfo* model(const std::string& id) const;

  CoordinatorCoreConfig config_;
  CoordinatorCounters counters_;
  std::map<std::string, VehicleView> vehicles_;
  // Unknown vehicles asked for a hello, and when (bounded by kHelloAskedMax).
  std::map<std::string, TimeMs> hello_asked_;
  std::map<std::string, JobEntry> jobs_;
  std::map<QueueKey, std::string> queue_;  // jobs waiting for a vehicle
  std::set<std::string> running_;          // jobs with a live attempt (leases to watch)
  std::set<std::string> idle_;             // vehicles online, eligible, idle
  std::deque<std::string> finished_;       // finished jobs kept in memory, oldest first
  std::map<std::string, VehicleStanding> standings_;  // bounded by vehicles_max
  std::map<std::string, Verification> verifying_;     // by original job id
  std::deque<std::string> checks_ended_;              // check runs finished in this event
  size_t live_jobs_ = 0;
  uint64_t next_sequence_ = 1;
  std::string cursor_;                     // placement's rotating start in idle_
  std::string sweep_cursor_;               // where the offline sweep resumes
  TimeMs sweep_at_ = -1;
};

}  // namespace idlefleet::core
