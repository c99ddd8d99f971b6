// The vehicle agent's decision logic: one vehicle, as a state machine.
//
//   handle(event, now) -> effects
//
// Events are what the agent's shell observes (new signals, a message from the
// coordinator, the engine's progress, a timer tick); effects are what the
// shell must do (send a message, start or stop the engine). The machine owns
// every decision: whether the car may work (the owner's policy, re-checked on
// every event, because the car is the final authority over itself), whether
// to accept an assignment, when to stop, what to report. The shell owns none.
//
//   driving ─park─> parked/charging ─policy ok─> eligible ─assign─> serving
//      ^                                             ^                  │
//      └──────────── driver back ───────────── preempting <── policy fails
//
// Preemption is immediate: the event that makes the car ineligible (a door,
// the gear, the charger, a hot chip) returns StopEngine in the same call, and
// the shell's engine stops at its next token boundary. Tokens the engine
// produced before it stopped are still reported: they are correct, and the
// next vehicle continues after them.
//
// An embed assignment (AssignMessage::kind) runs the same way, except that
// its engine reports one EngineEmbeddingEvent, sent on as an
// EmbeddingMessage, instead of tokens and a finish.
//
// Metering: while an attempt runs, every event first meters the time since
// the last one: busy time, energy (the accelerator's draw, from the
// Vehicle.Idlefleet.Accelerator.Power signal when the vehicle has reported
// one since the attempt began, else AgentConfig::inference_power_kw, times
// the time) and Arrhenius-weighted
// wear (core/energy.h) at the chip's temperature. When the attempt ends, a
// ReceiptMessage with those figures, the token counts and the SHA-256 of the
// job's output so far is sent (unsigned: the shell signs it, and fills in
// the model's hash, before it goes out), and the wear counts against the
// owner's wear budget for the local calendar month (from zero each month).
//
// No I/O, no clock: `now` is an argument. Thread-safety: one thread at a time.
#pragma once

#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "common/crypto.h"
#include "core/departure.h"
#include "core/energy.h"
#include "core/policy.h"
#include "core/protocol.h"
#include "core/signals.h"
#include "core/time.h"

namespace idlefleet::core {

struct AgentConfig {
  std::string vehicle_id;
  std::string instance;                 // unique per agent start (HelloMessage::instance)
  OwnerPolicy policy;
  int utc_offset_minutes = 0;
  double battery_capacity_kwh = 60.0;
  double charge_power_kw = 7.0;         // net into the battery when plugged in
  double inference_power_kw = 0.4;      // the accelerator's draw while serving
  uint64_t memory_bytes = 8ull << 30;   // for models
  double tokens_per_second = 0.0;
  std::vector<std::string> models_cached;
  // The shell runs kind "embed" assignments (HelloMessage::embeddings).
  bool embeddings = false;
  // The vehicle's Ed25519 public key, hex (HelloMessage::public_key).
  std::string public_key;
  // The engine's version and kernel set (HelloMessage::engine_build).
  std::string engine_build;
  WearParams wear;
  DurationMs heartbeat_ms = 2 * kSecondMs;   // a state report at least this often
  DurationMs hello_ms = 10 * kSecondMs;      // hello again, so a restarted coordinator relearns us
  DurationMs signal_age_ms_max = kSignalAgeMsMaxDefault;
  const DeparturePrior* prior = nullptr;     // not owned; null: declared departures only
  // The trip reserve (EligibilityInputs::trip_reserve_pct): the SoC kept, on
  // battery, beyond the target for the driving the car will do before it
  // next charges. Charge spent on battery is not replaced until then, so
  // every departure before that charge pays for it, not only the next one.
  // Learned from the car's own history; the reserve is the largest of:
  //  - the driving between charges: the car's recent "unplugged stretches"
  //    (from a charge to the next charge that adds at least
  //    kChargeSeenSocPct), each the SoC its drives used together; the most
  //    of the last kStretchesRemembered (a car that charges every night: one
  //    day's driving; every third day: three days');
  //  - the driving of the current, still open stretch so far (a stretch
  //    longer than any seen before is one to reserve for);
  //  - the most its recent drives used within any kTripReserveWindowMs (a
  //    day: the drive home, an evening round trip and the next morning's),
  //    once it has kTripsForReserve drives; before that, this default;
  //  - this default again, until the car has completed a stretch (it has
  //    not been seen to charge twice: how far it drives between charges is
  //    not known yet).
  // Until the car has been seen to charge at all (the agent started on
  // battery, or on a charger that adds nothing, e.g. at the car's limit),
  // the reserve is all of the battery (kSocPctMax): when charge spent now
  // would be replaced is unknown, so none is spent on battery. (A car that
  // starts the week unplugged and serves at once on a guessed 10 points
  // can leave a departure days later short, where not serving hits it.)
  // Parking and serving are not driving: a stretch counts only what its
  // drives used (SoC as the gear left P minus SoC as it parked again; a
  // drive that gained charge counts as none). A charge is SoC rising by
  // kChargeSeenSocPct above the lowest value seen since the car parked with
  // the charger connected (or charging): a home charger, or a detour via a
  // fast charger. Stretches without a drive are not remembered; the stretch
  // before the first charge seen (its start is unknown) counts toward the
  // most, but not as completed.
  double trip_reserve_pct_default = 10.0;
};

inline constexpr size_t kTripsForReserve = 3;
inline constexpr size_t kTripsRemembered = 64;
inline constexpr DurationMs kTripReserveWindowMs = 24 * kHourMs;
inline constexpr size_t kStretchesRemembered = 8;
inline constexpr double kChargeSeenSocPct = 0.5;

// ---- Events ----------------------------------------------------------------

// The latest value of every signal (the shell applies updates with apply_signal).
struct SignalsEvent {
  VehicleSignals signals;
};
// Time passes: re-check the policy and send a heartbeat when due.
struct AgentTick {};
// Connected (or reconnected) to the fabric: introduce ourselves.
struct ConnectedEvent {};
// A message from the coordinator (assign, cancel, hello_please, policy;
// others are refused).
struct CoordinatorMessageEvent {
  Message message;
};
// The engine produced tokens [first_index, first_index + ids.size()).
struct EngineTokensEvent {
  std::string job_id;
  uint32_t attempt = 0;
  uint64_t first_index = 0;
  std::vector<int32_t> ids;
  // When the assign asked for logprobs: one entry per id (the shell keeps a
  // chunk to kChunkLogprobTokensMax ids then); else empty.
  std::vector<TokenLogprobs> logprobs = {};
};
// The engine finished the job: a stop token or the token budget.
struct EngineFinishedEvent {
  std::string job_id;
  uint32_t attempt = 0;
  uint64_t total_tokens = 0;
  std::string finish_reason;
};
// An embed attempt's engine computed the prompt's vector: the attempt is
// complete (it has nothing to report before this).
struct EngineEmbeddingEvent {
  std::string job_id;
  uint32_t attempt = 0;
  uint64_t tokens = 0;
  std::vector<float> values;
};
// The engine stopped because we asked it to (StopEngineEffect).
struct EngineStoppedEvent {
  std::string job_id;
  uint32_t attempt = 0;
  uint64_t total_tokens = 0;
};
// The engine could not run the job (model missing, bad input).
struct EngineFailedEvent {
  std::string job_id;
  uint32_t attempt = 0;
  std::string error;
};
// The owner changed the policy (takes effect at once, even mid-job). The
// coordinator's PolicyMessage has the same effect: the policy last received,
// from either, is the one in force.
struct PolicyEvent {
  OwnerPolicy policy;
};
// Metered wear for this month's budget (weighted accelerator-hours added).
struct WearEvent {
  double wear_hours = 0.0;
};

// The models on the vehicle changed (a download finished, an eviction).
struct CachedModelsEvent {
  std::vector<std::string> models;
};

using AgentEvent = std::variant<SignalsEvent, AgentTick, ConnectedEvent, CoordinatorMessageEvent, EngineTokensEvent,
                                EngineFinishedEvent, EngineStoppedEvent, EngineFailedEvent, PolicyEvent, WearEvent,
                                CachedModelsEvent, EngineEmbeddingEvent>;

// ---- Effects ---------------------------------------------------------------

struct SendEffect {
  Message message;
};
// Run this attempt: resume a generation from prompt + produced ids, or
// compute the prompt's embedding (assign.kind).
struct StartEngineEffect {
  AssignMessage assign;
};
// Stop the running attempt at the next token boundary, then report EngineStoppedEvent.
struct StopEngineEffect {
  std::string job_id;
  uint32_t attempt = 0;
  std::string reason;
};
// Something refused or noteworthy, for the log and a metric named by `what`.
struct AgentLogEffect {
  std::string what;  // metric label: "rejected_message", "preempted", ...
  std::string text;
};

using AgentEffect = std::variant<SendEffect, StartEngineEffect, StopEngineEffect, AgentLogEffect>;

struct AgentCounters {
  uint64_t attempts_started = 0;
  uint64_t attempts_finished = 0;
  uint64_t attempts_preempted = 0;
  uint64_t attempts_refused = 0;   // assignments refused (busy, not eligible)
  uint64_t messages_rejected = 0;  // unknown type, wrong vehicle, stale attempt
};

class AgentMachine {
 public:
  // REQUIRES: config.policy valid, config.vehicle_id non-empty.
  explicit AgentMachine(AgentConfig config);

  std::vector<AgentEffect> handle(const AgentEvent& event, TimeMs now);

  // driving / parked / charging / eligible / serving / preempting.
  VehicleState state() const;
  const EligibilityDecision& decision() const { return decision_; }
  bool serving() const { return attempt_.has_value(); }
  const AgentCounters& counters() const { return counters_; }
  const AgentConfig& config() const { return config_; }
  const VehicleSignals& signals() const { return signals_; }
  // The SoC kept for undeclared driving on battery (see AgentConfig).
  double trip_reserve_pct() const;
  // The driving (SoC) of the remembered stretches between charges, oldest
  // first, and of the open one; for tests and diagnostics.
  std::vector<double> stretches_driven_pct() const;
  double stretch_open_driven_pct() const { return stretch_open_.driven_pct; }
  // The predictor's earliest likely departure for the current stay, if parked.
  std::optional<TimeMs> departure_earliest() const { return departure_earliest_; }

 private:
  struct Current {
    std::string job_id;
    uint32_t attempt = 0;
    uint64_t tokens_at_start = 0;
    bool stopping = false;
    bool cancelled = false;
    std::string stop_reason;
    // Metering (see the file comment).
    std::string model_id;
    TimeMs started_at = 0;
    TimeMs metered_at = 0;
    double temp_c_at = 0.0;     // the chip's temperature at metered_at
    Meter meter;
    uint64_t input_tokens = 0;
    uint64_t output_tokens = 0;
    Sha256Hasher output;        // the job's produced ids so far
  };

  void evaluate(TimeMs now, std::vector<AgentEffect>* out);
  void track_stay(TimeMs now);
  void on_message(const Message& m, TimeMs now, std::vector<AgentEffect>* out);
  // A PolicyEvent or a coordinator's PolicyMessage: validated, then in force
  // (an invalid one is logged and the policy in force kept).
  void apply_policy(const OwnerPolicy& policy, TimeMs now, std::vector<AgentEffect>* out);
  bool is_current(const std::string& job_id, uint32_t attempt) const;
  void send_state(TimeMs now, std::vector<AgentEffect>* out);
  void send_hello(TimeMs now, std::vector<AgentEffect>* out);
  void reject(const std::string& text, std::vector<AgentEffect>* out);
  void meter_to(TimeMs now);
  double chip_temp_c() const;
  // Ends the current attempt's metering and sends its receipt; the output
  // digest is the hasher's unless `output_sha256` is given.
  void send_receipt(const std::string& outcome, TimeMs now, std::vector<AgentEffect>* out,
                    const std::optional<Sha256Digest>& output_sha256 = std::nullopt);

  AgentConfig config_;
  VehicleSignals signals_;
  // Wear counted against the owner's budget in the local calendar month
  // wear_month_ (local_month_index); a new month starts from zero.
  double wear_used_hours_ = 0.0;
  std::optional<int64_t> wear_month_;
  void roll_wear_month(TimeMs now);
  DeparturePredictor predictor_;
  std::optional<TimeMs> parked_since_;
  std::optional<double> soc_at_leaving_;    // SoC when the current drive began
  struct Drive {
    TimeMs ended = 0;
    double used_pct = 0.0;
  };
  std::deque<Drive> drives_;                // the last kTripsRemembered, oldest first
  double trip_reserve_pct_ = 0.0;           // from drives_, once there are kTripsForReserve
  // Unplugged stretches (see AgentConfig::trip_reserve_pct_default).
  struct Stretch {
    double driven_pct = 0.0;                // SoC its drives used, together
    bool complete = false;                  // began at a charge seen (else: when the agent started)
  };
  std::deque<Stretch> stretches_;           // the last kStretchesRemembered, oldest first
  Stretch stretch_open_;                    // since the last charge seen (or the start)
  size_t stretch_open_drives_ = 0;
  std::optional<double> plugged_soc_low_;   // lowest SoC since parked with the charger connected
  // A charge was seen: the open stretch ends (remembered if it had a drive).
  void charge_seen();
  std::optional<TimeMs> departure_earliest_;
  EligibilityDecision decision_;
  std::optional<Current> attempt_;
  TimeMs last_state_sent_ = -1;
  TimeMs last_hello_sent_ = -1;
  VehicleState last_state_reported_ = VehicleState::kDriving;
  bool last_eligible_reported_ = false;
  AgentCounters counters_;
};

}  // namespace idlefleet::core
