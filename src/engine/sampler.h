// Chooses the next token from a row of logits.
//
// The sampler is stateless: the only randomness is counter_random(seed,
// position) (common/random.h), so the token drawn at position p depends only
// on the logits, the history and (seed, p). A generation stopped at p and
// resumed in another process, on another machine, draws the same token.
//
// The pipeline, in llama.cpp's order:
//   repetition penalty (over the distinct ids among the last repeat_last_n of
//   the history, prompt included: a positive logit is divided by the penalty,
//   a negative one multiplied) -> OpenAI's frequency and presence penalties
//   (over the tokens this generation produced, the prompt excluded:
//   logit -= frequency_penalty * count + presence_penalty * (count > 0), the
//   subtrahend computed in float in that order, after the repetition penalty,
//   as llama.cpp does) -> greedy argmax when temperature <= 0, otherwise
//   temperature -> top_k -> softmax -> top_p -> min_p (relative to the most
//   probable candidate) -> renormalise -> one draw by inverse CDF.
// Candidates are ordered by logit descending, ties by id ascending; that order
// is total. Weights are fixed-point integers (2^52 for the top candidate), so
// every sum is exact: the token drawn is the one a walk over the sorted
// candidates would reach, however the search groups them.
// NaN logits count as -inf; when some logits are +inf the distribution is the
// limit one, uniform over them; when all are -inf the lowest id is chosen.
//
// Cost: O(V) for greedy; O(V log k) with top_k; otherwise O(V) expected (a
// quickselect for top_p and for the draw). At V = 32000 on one x86 core:
// about 0.02 ms greedy, 0.1 ms with top_k 40, 0.3-0.7 ms without top_k.
//
// Thread-safety: a Sampler is immutable; sample() may run concurrently. Each
// thread keeps one scratch buffer of 16 bytes per vocabulary entry, reused
// across calls, so that a warm call allocates nothing (except a sort of the
// penalised ids when a penalty is on: O(n log n) for n produced tokens with
// the frequency or presence penalty).
//
// Logprobs (compute_logprobs below) describe the model, not the sampler:
// they are the log-softmax of the raw logits, before any penalty, temperature
// or filter, as OpenAI reports them.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "common/result.h"

namespace idlefleet::engine {

// Limits on the parameters, beyond which validate() refuses them.
inline constexpr float kTemperatureMax = 100.0f;
inline constexpr float kRepeatPenaltyMax = 100.0f;
inline constexpr int32_t kRepeatLastNMax = 1 << 20;  // tokens
// OpenAI's range for presence_penalty and frequency_penalty: [-max, max].
inline constexpr float kPresencePenaltyMax = 2.0f;
inline constexpr float kFrequencyPenaltyMax = 2.0f;
// OpenAI's bound on top_logprobs.
inline constexpr int32_t kTopLogprobsMax = 20;

struct SamplerParams {
  float temperature = 0.0f;     // <= 0: greedy (argmax, lowest id on ties)
  int32_t top_k = 0;            // keep the k most likely; 0: off
  float top_p = 1.0f;           // keep the smallest prefix with this much mass; 1: off
  float min_p = 0.0f;           // drop candidates below min_p * the top probability; 0: off
  float repeat_penalty = 1.0f;  // 1: off
  int32_t repeat_last_n = 64;   // tokens of history the penalty looks at; 0: off
  // Subtracted once from the logit of every token produced at least once in
  // this generation (not the prompt); negative values encourage them. 0: off.
  float presence_penalty = 0.0f;
  // Subtracted per occurrence among the tokens produced in this generation.
  // 0: off.
  float frequency_penalty = 0.0f;
  uint64_t seed = 0;

  // kInvalidArgument naming the first bad field: NaN anywhere, temperature
  // outside [0, kTemperatureMax], top_k < 0, top_p outside (0, 1], min_p
  // outside [0, 1], repeat_penalty outside (0, kRepeatPenaltyMax],
  // repeat_last_n outside [0, kRepeatLastNMax], presence_penalty outside
  // [-kPresencePenaltyMax, kPresencePenaltyMax], frequency_penalty outside
  // [-kFrequencyPenaltyMax, kFrequencyPenaltyMax].
  Status validate() const;
};

class Sampler {
 public:
  // REQUIRES: params.validate() succeeded. (Out-of-range values that slip
  // through are read as "off", never as a crash.)
  explicit Sampler(SamplerParams params);

  // The token for `position` (the index the token will have in the
  // sequence). `history` is every token so far: its first `prompt_tokens`
  // are the prompt (the repetition penalty sees them, the frequency and
  // presence penalties do not), the rest were produced by this generation.
  // Ids outside the vocabulary are ignored. Returns an id in
  // [0, logits.size()).
  // REQUIRES: 0 < logits.size() <= INT32_MAX; prompt_tokens <=
  // history.size() (a larger value is read as history.size()).
  int32_t sample(std::span<const float> logits, std::span<const int32_t> history,
                 size_t prompt_tokens, uint64_t position) const;

  const SamplerParams& params() const { return params_; }

 private:
  SamplerParams params_;
};

// One token and its log-probability.
struct TokenLogprob {
  int32_t id = -1;
  float logprob = 0.0f;
};

// What OpenAI's `logprobs` / `top_logprobs` report for one position.
struct TokenLogprobs {
  TokenLogprob chosen;            // the token produced
  std::vector<TokenLogprob> top;  // min(top_n, vocabulary) most likely, see below
};

// The log-probabilities of the distribution the model gives for one position:
// logprob(i) = (logit_i - m) - log(sum_j e^(logit_j - m)), m the largest
// logit, of the RAW logits (before the repetition, frequency and presence
// penalties, temperature and filters: the model's own distribution, as
// OpenAI's logprobs are). Every step runs serially in id order in double with
// det_exp and det_log (common/det_math.h), and each result is rounded once to
// float, so the values are bitwise the same on every machine, thread count
// and after resume. Accuracy: within a float rounding (plus ~1e-11 relative)
// of the exact value.
// `top` holds the top_n best by logprob descending, ties by id ascending.
// NaN logits count as -inf. A token whose logit is -inf (or more than
// float's range below the top) has logprob -inf, which JSON cannot hold: the
// API must map it (to a large negative number, say). When some logits are +inf
// the distribution is uniform over them (-log(count) each, -inf for the
// rest); when none is above -inf it is uniform over the vocabulary.
// Cost: O(V) exponentials, plus for top_n > 0 a comparison per token and an
// insertion into a sorted list of top_n per token that enters it: 0.24 ms
// (top_n 0) to 0.31 ms (top_n 20) at V = 32000 on one x86 core
// (bench/sampler_bench), spent only when asked.
// REQUIRES: 0 < logits.size() <= INT32_MAX; 0 <= chosen < logits.size();
// 0 <= top_n <= kTopLogprobsMax (values outside are clamped).
void compute_logprobs(std::span<const float> logits, int32_t chosen, int32_t top_n,
                      TokenLogprobs* out);

}  // namespace idlefleet::engine
