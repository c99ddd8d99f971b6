// Generation sessions that can stop in one process and resume in another.
//
// A SessionState is everything a generation is: the prompt's token ids, the
// ids produced so far, the sampler settings with the seed, the token budget
// and the stop tokens. The KV cache is not part of it: a process that resumes
// rebuilds the cache by evaluating prompt + produced in batches, and because
// the engine's per-token arithmetic is the same in a batch as alone
// (kernels.h), and the sampler's draw at position p depends only on
// (seed, p), the continuation is bit-for-bit the uninterrupted run's.
//
// Serialised as JSON (version 1):
//   {"version":1, "model":"<name>", "prompt_ids":[...], "produced_ids":[...],
//    "max_tokens":N, "stop_ids":[...],
//    "sampler":{"temperature":..,"top_k":..,"top_p":..,"min_p":..,
//               "repeat_penalty":..,"repeat_last_n":..,"presence_penalty":..,
//               "frequency_penalty":..,"seed":..}}
// Every sampler field is optional on reading (its default when absent), so
// sessions written before a field existed still load.
//
// Logprobs are an output, not part of the generation: they do not change the
// tokens and are not serialised. A Generator computes them only after
// enable_logprobs(), and from the raw logits of each position, so that they
// too are bitwise the same after resume (see compute_logprobs in sampler.h).
//
// Thread-safety: a Generator is used by one thread at a time.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "engine/model.h"
#include "engine/sampler.h"

namespace idlefleet::engine {

// Bound on a serialised session (bytes) and on the ids it may hold.
inline constexpr size_t kSessionJsonBytesMax = 16u << 20;
inline constexpr size_t kSessionIdsMax = static_cast<size_t>(kModelContextMax);

struct SessionState {
  std::string model;                  // the model's general.name, checked on resume
  std::vector<int32_t> prompt_ids;    // BOS included when the model adds one
  std::vector<int32_t> produced_ids;  // sampled so far
  SamplerParams sampler;
  int64_t max_tokens = 0;             // budget of produced tokens; 0: up to the context
  std::vector<int32_t> stop_ids;      // generation ends after producing one of these

  int64_t position() const { return static_cast<int64_t>(prompt_ids.size() + produced_ids.size()); }
  std::string to_json() const;
  // Validates sizes, types and sampler settings; never trusts the input.
  static Result<SessionState> from_json(std::string_view text);
};

enum class StopReason { kNone, kStopToken, kMaxTokens, kContextFull };

class Generator {
 public:
  // REQUIRES: ctx belongs to model and outlives the generator.
  Generator(const Model& model, Context& ctx);

  // Begins a generation (the context is reset). Errors: empty prompt, bad
  // sampler settings, ids out of range, prompt longer than the context.
  Status start(std::vector<int32_t> prompt_ids, const SamplerParams& sampler, int64_t max_tokens,
               std::vector<int32_t> stop_ids);
  // Continues an exported generation.
  Status resume(const SessionState& state);

  // Produces the next token, or StopReason via stop_reason() when done (the
  // returned token is then -1). Errors come from the engine.
  Result<int32_t> next();

  // From the next next() on, computes each produced token's logprob and the
  // top_n most likely tokens' (OpenAI's logprobs with top_logprobs = top_n).
  // Stays on across start() and resume() until disable_logprobs().
  // Errors: top_n outside [0, kTopLogprobsMax].
  Status enable_logprobs(int32_t top_n);
  void disable_logprobs() { logprobs_top_n_ = -1; }
  // The logprobs of the token the last next() produced; null when logprobs
  // are off, or when that next() produced no token. Valid until the next
  // call of a non-const member.
  const TokenLogprobs* last_logprobs() const { return logprobs_valid_ ? &logprobs_ : nullptr; }

  StopReason stop_reason() const { return stop_; }
  const SessionState& state() const { return state_; }

  // Seconds spent evaluating the prompt (first next()) and the rest.
  double prefill_seconds() const { return prefill_seconds_; }
  double decode_seconds() const { return decode_seconds_; }
  int64_t prefill_tokens() const { return prefill_tokens_; }

 private:
  const Model& model_;
  Context& ctx_;
  SessionState state_;
  std::vector<int32_t> history_;  // prompt + produced
  std::vector<int32_t> pending_;  // evaluated before the next sample
  std::span<const float> logits_;
  StopReason stop_ = StopReason::kNone;
  bool first_ = true;
  double prefill_seconds_ = 0.0, decode_seconds_ = 0.0;
  int64_t prefill_tokens_ = 0;
  int32_t logprobs_top_n_ = -1;  // -1: off
  TokenLogprobs logprobs_;
  bool logprobs_valid_ = false;
};

}  // namespace idlefleet::engine
