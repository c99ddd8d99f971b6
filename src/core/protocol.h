// Messages between the coordinator and the vehicles, and their JSON form.
//
// Every message is one JSON object {"v": 1, "type": "...", ...}. Parsing
// trusts nothing: the text is bounded (kMessageBytesMax), every field is
// checked for presence, type and range, every string and array for length,
// and unknown types or versions are refused with an error that names the
// field. Unknown extra fields are ignored, so a newer peer can add optional
// fields without breaking an older one; anything else is a new version.
//
//   vehicle -> coordinator            coordinator -> vehicle
//   hello      (who, what it can run)  assign    (a job attempt to run)
//   state      (state, eligibility)    cancel    (stop an attempt)
//   started    (attempt accepted)      hello_please (say hello again)
//   chunk      (produced token ids)    policy    (the owner's policy)
//   done       (attempt finished)
//   embedding  (an embed attempt's vector: finished)
//   preempted  (attempt stopped: driver back, policy)
//   failed     (attempt could not run)
//
// Token ids travel as ids: the text is derived, and ids are what makes a
// resumed generation continue exactly.
//
// Logprobs (OpenAI's logprobs / top_logprobs): an assign may ask for them
// ("logprobs": top-N, 0..kTopLogprobsMax; absent: off), and then each chunk
// carries, beside its ids, one entry per id (see TokenLogprobs below). They
// are computed by the engine for the tokens it produces (never for tokens an
// earlier attempt produced and this one only re-evaluated), from the raw
// logits, so they are bitwise the same whichever vehicle produced a token.
//
// Work kinds: an assign is a generation (kind "generate", also when the
// field is absent, as from coordinators that predate kinds) or an embedding
// (kind "embed": one vector for the prompt ids, no tokens produced). An embed
// attempt is answered by started and then one embedding message (or
// preempted / failed, as any attempt); it has no partial state, so a stopped
// one is simply placed again. Only vehicles whose hello says `embeddings`
// get embed assignments: an agent that predates them would generate instead.
//
// Thread-safety: values and pure functions.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "common/crypto.h"
#include "common/result.h"
#include "core/policy.h"
#include "core/time.h"

namespace idlefleet::core {

inline constexpr int kProtocolVersion = 1;
inline constexpr size_t kMessageBytesMax = 4u << 20;     // one message
inline constexpr size_t kIdBytesMax = 128;               // vehicle, job and model ids
inline constexpr size_t kEngineBuildBytesMax = 64;       // HelloMessage::engine_build
inline constexpr size_t kTextBytesMax = 4096;            // reasons and error texts
inline constexpr size_t kTokenIdsMax = 1u << 18;         // prompt + produced in one assign
inline constexpr size_t kChunkTokensMax = 4096;          // tokens in one chunk
inline constexpr size_t kModelsMax = 64;                 // cached models in a hello
inline constexpr size_t kReasonsMax = 32;                // eligibility reasons in a state
inline constexpr int32_t kTokenIdMax = (1 << 24) - 1;    // vocabularies are far smaller
// OpenAI's bound on top_logprobs (engine::kTopLogprobsMax).
inline constexpr int32_t kTopLogprobsMax = 20;
// Tokens in a chunk that carries logprobs: up to 21 numbers and 20 ids each,
// about 1 KB a token at worst, so that a chunk stays far below NATS's default
// 1 MiB payload limit (and kMessageBytesMax).
inline constexpr size_t kChunkLogprobTokensMax = 256;
// What a logprob of -inf travels (and is shown to clients) as: JSON has no
// infinity, and OpenAI uses this value. Lower finite values are clamped to it.
inline constexpr float kLogprobMin = -9999.0f;
// Values in one embedding: engine::kModelDimMax, the widest model we load.
// At most ~25 bytes each as JSON, so the largest message stays far below
// kMessageBytesMax.
inline constexpr size_t kEmbeddingValuesMax = size_t{1} << 16;

// What an assignment asks the vehicle to compute.
enum class WorkKind { kGenerate, kEmbed };
// "generate" / "embed", as on the wire.
const char* work_kind_name(WorkKind k);

// The sampler settings of a job, as the engine's SamplerParams.
struct Sampling {
  double temperature = 0.0;
  int32_t top_k = 0;
  double top_p = 1.0;
  double min_p = 0.0;
  double repeat_penalty = 1.0;
  int32_t repeat_last_n = 64;
  double presence_penalty = 0.0;   // OpenAI's, over the tokens produced (-2..2; 0: off)
  double frequency_penalty = 0.0;  // OpenAI's, over the tokens produced (-2..2; 0: off)
  uint64_t seed = 0;
};

// One candidate token and its log-probability (in [kLogprobMin, 0]).
struct TopLogprob {
  int32_t id = 0;
  float logprob = 0.0f;

  bool operator==(const TopLogprob&) const = default;
};

// The logprobs of one produced token: its own (the token is the id at the
// same index of the chunk), and the top-N candidates, most likely first
// (engine::compute_logprobs's order), at most kTopLogprobsMax of them.
struct TokenLogprobs {
  float logprob = 0.0f;
  std::vector<TopLogprob> top;

  bool operator==(const TokenLogprobs&) const = default;
};

struct HelloMessage {
  std::string vehicle_id;
  std::vector<std::string> models_cached;
  uint64_t memory_bytes = 0;         // accelerator memory for models
  double tokens_per_second = 0.0;    // measured on the reference model, for scheduling
  // Changes every time the agent starts: a new instance has no attempts, so
  // the coordinator ends the old instance's live attempt at once instead of
  // waiting for its lease. Optional ("" from agents that do not send it).
  std::string instance;
  // Runs kind "embed" assignments (optional: false from agents that predate
  // them, which would generate instead).
  bool embeddings = false;
  // The vehicle's Ed25519 public key, 64 hex digits, which signs its
  // receipts (optional: "" from a vehicle without one, whose receipts are
  // refused).
  std::string public_key = {};
  // What makes its output bit-for-bit reproducible elsewhere: the engine's
  // version and the kernel set it chose at run time (e.g. "0.1.0+avx2").
  // Verification re-runs a job only on a vehicle with the same build
  // (optional: "" from agents that predate it; such vehicles are matched
  // only with each other). 1..kEngineBuildBytesMax of [A-Za-z0-9._+-].
  std::string engine_build = {};
  // The owner's time zone, minutes from UTC (optional: 0 from agents that
  // predate it): settlement prices an attempt at the owner's time-of-use
  // tariff in local time.
  int32_t utc_offset_minutes = 0;
  // The accelerator's draw while serving, in W (optional: 0 from agents that
  // predate it; at most 1 MW): the dashboard's "compute online" counts a
  // vehicle that can work at this draw before it has served anything.
  double power_w = 0.0;
};

struct StateMessage {
  std::string vehicle_id;
  std::string state;                 // a VehicleState name: driving, parked, ...
  bool eligible = false;
  std::vector<std::string> reasons;  // why not eligible, for owners
  double soc_pct = 0.0;
  double accelerator_temp_c = 0.0;
  TimeMs departure_earliest = 0;
  TimeMs sent_at = 0;
  // The attempt the vehicle is serving, if any (optional): renews its lease
  // while no chunk flows (a long prefill), and tells the coordinator which
  // attempt the vehicle believes it holds.
  std::string job_id;
  uint32_t attempt = 0;
  double power_w = 0.0;  // the accelerator's draw now (optional), for the fleet's kW in use
};

struct AssignMessage {
  std::string job_id;
  uint32_t attempt = 0;
  std::string model_id;
  std::vector<int32_t> prompt_ids;
  std::vector<int32_t> produced_ids;  // tokens earlier attempts produced: resume from them
  uint64_t max_tokens = 0;
  std::vector<int32_t> stop_ids;
  Sampling sampling;
  TimeMs lease_expires_at = 0;
  // Report logprobs with this many top candidates per token (0..kTopLogprobsMax);
  // -1 (absent on the wire): no logprobs.
  int32_t logprobs = -1;
  // kEmbed: the vector of prompt_ids is wanted (produced_ids empty,
  // max_tokens and sampling unused). Optional on the wire: absent = kGenerate.
  WorkKind kind = WorkKind::kGenerate;
};

struct CancelMessage {
  std::string job_id;
  uint32_t attempt = 0;
};

struct StartedMessage {
  std::string job_id;
  uint32_t attempt = 0;
};

struct ChunkMessage {
  std::string job_id;
  uint32_t attempt = 0;
  uint64_t first_index = 0;  // index of ids[0] among the job's produced tokens
  std::vector<int32_t> ids;
  // Empty (absent on the wire) when the assign did not ask for logprobs;
  // else one entry per id, and ids holds at most kChunkLogprobTokensMax.
  std::vector<TokenLogprobs> logprobs = {};
};

struct DoneMessage {
  std::string job_id;
  uint32_t attempt = 0;
  uint64_t total_tokens = 0;
  std::string finish_reason;  // "stop" or "length"
};

struct PreemptedMessage {
  std::string job_id;
  uint32_t attempt = 0;
  uint64_t total_tokens = 0;  // tokens sent before stopping
  std::string reason;
};

struct FailedMessage {
  std::string job_id;
  uint32_t attempt = 0;
  std::string error;
};

// The result of an embed attempt, which it completes: the engine's vector
// for the assignment's prompt_ids (engine::Context::embed_sequence). Each
// value is a finite float; as JSON, a float widened to double and written
// with enough digits to read back bitwise.
struct EmbeddingMessage {
  std::string job_id;
  uint32_t attempt = 0;
  uint64_t tokens = 0;        // positions evaluated: the prompt's length
  std::vector<float> values;  // 1..kEmbeddingValuesMax
};

// Vehicle -> coordinator, after every attempt that ran (done, preempted,
// failed, cancelled, or an embedding): what the vehicle metered, signed with
// its enrolled Ed25519 key. The ledger pays an owner only against a verified
// receipt, and verification compares output_sha256 between vehicles.
//
// Signed bytes (receipt_signing_bytes): "idlefleet-receipt-v1\n" then the
// receipt as JSON without "signature", "type" and "v", keys sorted, no
// spaces: a fixed text for a fixed receipt.
struct ReceiptMessage {
  std::string vehicle_id;
  std::string job_id;
  uint32_t attempt = 0;
  std::string model_id;
  std::string model_sha256;   // 64 hex digits, or "" when the vehicle does not know it
  std::string outcome;        // done, preempted, failed, cancelled, embedding
  uint64_t input_tokens = 0;  // positions prefilled: the prompt and the tokens produced before
  uint64_t output_tokens = 0; // tokens this attempt produced
  // SHA-256, hex, of the job's whole output as of the attempt's end: the
  // produced ids as little-endian int32 (generation), or the vector's floats
  // as little-endian IEEE-754 binary32 (embedding).
  std::string output_sha256;
  uint64_t energy_mwh = 0;      // at the accelerator, milliwatt-hours
  uint64_t accelerator_ms = 0;  // busy time
  uint64_t wear_micro_hours = 0;  // weighted accelerator-hours x 1e6 (core/energy.h)
  int64_t started_at = 0;       // ms since the epoch
  int64_t ended_at = 0;
  std::string signature;        // Ed25519, 128 hex digits; "" when unsigned

  bool operator==(const ReceiptMessage&) const = default;
};
inline constexpr size_t kOutcomeBytesMax = 16;
inline constexpr uint64_t kReceiptEnergyMwhMax = uint64_t{1} << 40;
inline constexpr uint64_t kReceiptAcceleratorMsMax = uint64_t{1} << 40;
inline constexpr uint64_t kReceiptWearMicroHoursMax = uint64_t{1} << 50;

// The bytes a receipt's signature covers (see ReceiptMessage).
std::string receipt_signing_bytes(const ReceiptMessage& r);

// ReceiptMessage::output_sha256's input: ids as little-endian int32, and an
// embedding's values as little-endian binary32.
void hash_output_ids(Sha256Hasher* hasher, std::span<const int32_t> ids);
Sha256Digest embedding_output_sha256(std::span<const float> values);

// Coordinator -> vehicle: "say hello again". A coordinator that hears from
// a vehicle it does not know (it restarted, or the hello was lost) asks for
// a hello and a state at once instead of waiting for the periodic hello.
struct HelloPleaseMessage {
  bool operator==(const HelloPleaseMessage&) const = default;
};
// The least time between two hello_please for one vehicle, and between two
// hellos a vehicle sends because it was asked.
inline constexpr int64_t kHelloPleaseGapMs = 1000;

// Coordinator -> vehicle: the policy the vehicle's owner set through the
// owner API. Sent on every hello of the vehicle (so a restarted agent has it
// at once) and whenever the owner changes it. The agent enforces it from then
// on in place of the policy it was started with, and keeps it on disk
// (agent/fleet.h). Unlike other messages, the policy object refuses unknown
// fields: an agent that ignored a limit it does not know would not enforce
// what the owner set (see decode_policy).
struct PolicyMessage {
  std::string vehicle_id;
  OwnerPolicy policy;
};

// The policy as a JSON object, the one form the protocol, the owner API and
// the agent's file share:
//   {"opted_in": bool, "soc_floor_pct": number, "target_soc_pct": number,
//    "departures_minute_of_week": [int...], "departure_margin_ms": int,
//    "accelerator_temp_limit_c": number,
//    "allowed_windows": [{"start_minute_of_week": int, "end_minute_of_week": int}...],
//    "price_cap_micros_per_kwh": int or null,
//    "tariff": {"kind": "flat", "flat_micros_per_kwh": int} or
//              {"kind": "time_of_use", "weekday": [{"start_minute_of_day": int,
//               "price_micros_per_kwh": int}...], "weekend": [...]},
//    "wear_budget_hours_per_month": number}
// Units are in the names (core/policy.h has each field's meaning and range).
inline constexpr size_t kPolicyBytesMax = 64u << 10;  // the largest valid policy is ~10 KB
std::string encode_policy(const OwnerPolicy& policy);
// Parses and validates (OwnerPolicy::validate) a policy object. A field that
// is absent takes OwnerPolicy's default; an unknown field, a wrong type, or
// a value out of range is an error naming the field (kCorrupt, kOutOfRange,
// kInvalidArgument).
Result<OwnerPolicy> decode_policy(std::string_view text);

using Message = std::variant<HelloMessage, StateMessage, AssignMessage, CancelMessage, StartedMessage, ChunkMessage,
                             DoneMessage, PreemptedMessage, FailedMessage, EmbeddingMessage, HelloPleaseMessage,
                             ReceiptMessage, PolicyMessage>;

// NATS subjects. A vehicle publishes on its own "up" subject and listens on
// its own "down" subject, so per-vehicle credentials can allow exactly those.
inline constexpr const char* kUpSubjectWildcard = "idlefleet.v1.up.*";
std::string up_subject(std::string_view vehicle_id);
std::string down_subject(std::string_view vehicle_id);
// VSS signals from a vehicle gateway, and commands to simulated vehicles.
std::string vss_subject(std::string_view vehicle_id);
std::string sim_subject(std::string_view vehicle_id);
// The vehicle id in an "up" subject, or "" if it is not one.
std::string_view vehicle_of_up_subject(std::string_view subject);
// A vehicle id is 1..kIdBytesMax of [A-Za-z0-9_-]: one NATS subject token.
bool valid_vehicle_id(std::string_view id);

// The "type" field of a message.
const char* message_type(const Message& m);

// One line of JSON.
std::string encode_message(const Message& m);
// Validates everything; errors name the field (kCorrupt, kOutOfRange,
// kUnsupported for an unknown type or version).
Result<Message> decode_message(std::string_view text);

}  // namespace idlefleet::core
