// Chooses the next token from a row of logits.
//
// The sampler is stateless: the only randomness is counter_random(seed,
// position) (common/random.h), so the token drawn at position p depends only
// on the logits, the history and (seed, p). A generation stopped at p and
// resumed in another process, on another machine, draws the same token.
//
// The pipeline, in llama.cpp's order:
//   repetition penalty (over the distinct ids among the last repeat_last_n of
//   the history: a positive logit is divided by the penalty, a negative one
//   multiplied) -> greedy argmax when temperature <= 0, otherwise
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
// penalised ids when the penalty is on).
#pragma once

#include <cstdint>
#include <span>

#include "common/result.h"

namespace idlefleet::engine {

// Limits on the parameters, beyond which validate() refuses them.
inline constexpr float kTemperatureMax = 100.0f;
inline constexpr float kRepeatPenaltyMax = 100.0f;
inline constexpr int32_t kRepeatLastNMax = 1 << 20;  // tokens

struct SamplerParams {
  float temperature = 0.0f;     // <= 0: greedy (argmax, lowest id on ties)
  int32_t top_k = 0;            // keep the k most likely; 0: off
  float top_p = 1.0f;           // keep the smallest prefix with this much mass; 1: off
  float min_p = 0.0f;           // drop candidates below min_p * the top probability; 0: off
  float repeat_penalty = 1.0f;  // 1: off
  int32_t repeat_last_n = 64;   // tokens of history the penalty looks at; 0: off
  uint64_t seed = 0;

  // kInvalidArgument naming the first bad field: NaN anywhere, temperature
  // outside [0, kTemperatureMax], top_k < 0, top_p outside (0, 1], min_p
  // outside [0, 1], repeat_penalty outside (0, kRepeatPenaltyMax],
  // repeat_last_n outside [0, kRepeatLastNMax].
  Status validate() const;
};

class Sampler {
 public:
  // REQUIRES: params.validate() succeeded. (Out-of-range values that slip
  // through are read as "off", never as a crash.)
  explicit Sampler(SamplerParams params);

  // The token for `position` (the index the token will have in the
  // sequence). `history` is every token so far, prompt included; ids outside
  // the vocabulary are ignored. Returns an id in [0, logits.size()).
  // REQUIRES: 0 < logits.size() <= INT32_MAX.
  int32_t sample(std::span<const float> logits, std::span<const int32_t> history,
                 uint64_t position) const;

  const SamplerParams& params() const { return params_; }

 private:
  SamplerParams params_;
};

}  // namespace idlefleet::engine
