#include "engine/sampler.h"

#include "common/det_math.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>
#include <span>
#include <string>
#include <vector>

#include "common/check.h"
#include "common/random.h"

namespace idlefleet::engine {
namespace {

using u128 = unsigned __int128;

constexpr float kNegativeInfinity = -std::numeric_limits<float>::infinity();
constexpr float kPositiveInfinity = std::numeric_limits<float>::infinity();

// Weights are fixed-point integers, the top candidate's being 2^52: sums are
// then exact, so a search may add candidates up in any order (as the
// partitioning below does) and still find the token a sorted walk would.
// Candidates below 2^-52 of the top one round to 0 and cannot be drawn; with
// a 53-bit uniform draw they practically never could.
constexpr double kWeightOne = 0x1p52;
// The first search step looks at this many of the best candidates only,
// because the draw usually lands among them.
constexpr size_t kProbeCandidates = 64;
// Ranges this small are sorted and walked instead of split further.
constexpr size_t kWalkCandidatesMax = 32;
// Logits more than this many temperatures below the top one get weight 0
// without computing it: e^-38 * 2^52 < 0.2 rounds to 0.
constexpr float kWeightZeroExponent = 38.0f;

Unexpected invalid(const char* field, const std::string& rule, double value) {
  return Unexpected(ErrorCode::kInvalidArgument, std::string("sampler: ") + field + " must be " +
                                                     rule + ", got " + std::to_string(value));
}

// A candidate as one integer whose ascending order is the candidate order:
// the logit's bits mapped so that larger logits come first (high 32 bits),
// then the id (low 32 bits). Integer comparisons keep the partitioning cheap.
uint64_t candidate_key(float logit, int32_t id) {
  const uint32_t bits = std::bit_cast<uint32_t>(logit + 0.0f);  // -0 as +0
  const uint32_t ascending = (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
  return (static_cast<uint64_t>(~ascending) << 32) | static_cast<uint32_t>(id);
}

float key_logit(uint64_t key) {
  const uint32_t ascending = ~static_cast<uint32_t>(key >> 32);
  const uint32_t bits = (ascending & 0x80000000u) ? (ascending & 0x7FFFFFFFu) : ~ascending;
  return std::bit_cast<float>(bits);
}

int32_t key_id(uint64_t key) { return static_cast<int32_t>(static_cast<uint32_t>(key)); }

struct Candidate {
  uint64_t key;
  uint64_t weight;  // fixed point, see kWeightOne
  bool operator<(const Candidate& other) const { return key < other.key; }
};

// llama.cpp's rule: shrink a positive logit, push a negative one further down.
float penalize(float logit, float penalty) {
  return logit > 0.0f ? logit / penalty : logit * penalty;
}

// A logit that some penalty changed.
struct Adjusted {
  int32_t id;
  float logit;
};

// The ids a penalty applies to, ascending, each once, with its logit after
// the repetition penalty (ids among the last repeat_last_n of the history)
// and then the frequency and presence penalties (ids among the produced
// tokens, history[prompt_tokens, end)). Ids outside the vocabulary are
// ignored. Empty when every penalty is off.
std::vector<Adjusted> penalize_history(const SamplerParams& p, std::span<const float> logits,
                                       std::span<const int32_t> history, size_t prompt_tokens) {
  const size_t vocab = logits.size();
  const auto in_vocab = [&](int32_t id) { return id >= 0 && static_cast<size_t>(id) < vocab; };
  // Distinct ids in the repetition window, ascending.
  std::vector<int32_t> repeated;
  const float penalty = p.repeat_penalty;
  if (penalty > 0.0f && penalty != 1.0f && p.repeat_last_n > 0 && !history.empty()) {
    const size_t last_n = std::min(history.size(), static_cast<size_t>(p.repeat_last_n));
    repeated.reserve(last_n);
    for (int32_t id : history.last(last_n)) {
      if (in_vocab(id)) repeated.push_back(id);
    }
    std::sort(repeated.begin(), repeated.end());
    repeated.erase(std::unique(repeated.begin(), repeated.end()), repeated.end());
  }
  // Produced ids, ascending, with repeats (a run's length is the count).
  std::vector<int32_t> produced;
  const bool counting = p.frequency_penalty != 0.0f || p.presence_penalty != 0.0f;
  if (counting && prompt_tokens < history.size()) {
    produced.reserve(history.size() - prompt_tokens);
    for (int32_t id : history.subspan(prompt_tokens)) {
      if (in_vocab(id)) produced.push_back(id);
    }
    std::sort(produced.begin(), produced.end());
  }
  // Merge the two ascending lists.
  std::vector<Adjusted> out;
  out.reserve(repeated.size() + produced.size());
  size_t r = 0, q = 0;
  while (r < repeated.size() || q < produced.size()) {
    const int32_t id = q == produced.size() || (r < repeated.size() && repeated[r] < produced[q])
                           ? repeated[r]
                           : produced[q];
    float logit = logits[static_cast<size_t>(id)];
    if (r < repeated.size() && repeated[r] == id) {
      logit = penalize(logit, penalty);
      ++r;
    }
    size_t count = 0;
    while (q < produced.size() && produced[q] == id) {
      ++count;
      ++q;
    }
    if (count > 0) {
      // count <= 2^20 (the context bound) is exact in float.
      logit -= p.frequency_penalty * static_cast<float>(count) + p.presence_penalty;
    }
    out.push_back({id, logit});
  }
  return out;
}

// Folds logits[begin, end) into the running first maximum (*best_logit at
// *best). NaN never compares greater, so it never wins. Eight independent
// lanes, because a single compare-and-select chain is latency-bound (~3x
// slower at a 32000-token vocabulary); merging the lanes by (value, lowest
// index) gives exactly the sequential answer.
void first_maximum(std::span<const float> logits, size_t begin, size_t end, float* best_logit,
                   size_t* best) {
  constexpr size_t kLanes = 8;
  float lane_logit[kLanes];
  size_t lane_index[kLanes];
  for (size_t l = 0; l < kLanes; ++l) {
    lane_logit[l] = kNegativeInfinity;
    lane_index[l] = 0;
  }
  size_t i = begin;
  for (; i + kLanes <= end; i += kLanes) {
    for (size_t l = 0; l < kLanes; ++l) {
      if (logits[i + l] > lane_logit[l]) {
        lane_logit[l] = logits[i + l];
        lane_index[l] = i + l;
      }
    }
  }
  for (; i < end; ++i) {
    if (logits[i] > lane_logit[0]) {
      lane_logit[0] = logits[i];
      lane_index[0] = i;
    }
  }
  // Among lanes the lowest index wins ties; against the running maximum,
  // whose index is lower than any here, only a greater value wins.
  float range_logit = kNegativeInfinity;
  size_t range_index = std::numeric_limits<size_t>::max();
  for (size_t l = 0; l < kLanes; ++l) {
    if (lane_logit[l] > range_logit ||
        (lane_logit[l] == range_logit && lane_index[l] < range_index)) {
      range_logit = lane_logit[l];
      range_index = lane_index[l];
    }
  }
  if (range_logit > *best_logit) {
    *best_logit = range_logit;
    *best = range_index;
  }
}

// floor(u * total) exactly, for u = r53 / 2^53 (to_unit_double's value):
// total is split at 2^64 so that no product overflows. Totals stay below
// 2^84 (2^32 candidates of at most 2^52 each).
u128 scale_by_unit(uint64_t r53, u128 total) {
  const u128 high = (total >> 64) * r53;                                   // < 2^73
  const u128 low = static_cast<u128>(static_cast<uint64_t>(total)) * r53;  // < 2^117
  return (high << 11) + (low >> 53);
}

// The first position i of `c` whose cumulative weight (through i, in
// candidate order) satisfies `reached`, a predicate monotone in the weight;
// the last position if none does. On return c[0, i] hold the first i + 1
// candidates in candidate order, as a set.
// REQUIRES: `c` holds, as a set, the first c.size() > 0 candidates, and is
// sorted when `sorted`.
// Expected O(c.size()): a quickselect that halves the range, after a first
// probe of the best kProbeCandidates, where the answer usually is.
template <class Reached>
size_t find_first(std::span<Candidate> c, bool sorted, Reached reached) {
  size_t begin = 0;
  size_t end = c.size();
  u128 before = 0;  // weight of c[0, begin)
  if (!sorted) {
    size_t split_at = kProbeCandidates;
    while (end - begin > kWalkCandidatesMax) {
      const size_t mid = begin + std::min(split_at, (end - begin) / 2);
      split_at = std::numeric_limits<size_t>::max();
      std::nth_element(c.begin() + begin, c.begin() + mid, c.begin() + end);
      u128 left = 0;
      for (size_t i = begin; i < mid; ++i) left += c[i].weight;
      if (reached(before + left)) {
        end = mid;
      } else {
        before += left;
        begin = mid;
      }
    }
    std::sort(c.begin() + begin, c.begin() + end);
  }
  for (size_t i = begin; i < end; ++i) {
    before += c[i].weight;
    if (reached(before)) return i;
  }
  return end - 1;
}

}  // namespace

Status SamplerParams::validate() const {
  // Comparisons are written so that NaN fails them.
  if (!(temperature >= 0.0f && temperature <= kTemperatureMax)) {
    return invalid("temperature", "in [0, " + std::to_string(kTemperatureMax) + "]", temperature);
  }
  if (top_k < 0) return invalid("top_k", ">= 0 (0: off)", top_k);
  if (!(top_p > 0.0f && top_p <= 1.0f)) return invalid("top_p", "in (0, 1]", top_p);
  if (!(min_p >= 0.0f && min_p <= 1.0f)) return invalid("min_p", "in [0, 1]", min_p);
  if (!(repeat_penalty > 0.0f && repeat_penalty <= kRepeatPenaltyMax)) {
    return invalid("repeat_penalty", "in (0, " + std::to_string(kRepeatPenaltyMax) + "]",
                   repeat_penalty);
  }
  if (repeat_last_n < 0 || repeat_last_n > kRepeatLastNMax) {
    return invalid("repeat_last_n", "in [0, " + std::to_string(kRepeatLastNMax) + "]",
                   repeat_last_n);
  }
  if (!(presence_penalty >= -kPresencePenaltyMax && presence_penalty <= kPresencePenaltyMax)) {
    return invalid("presence_penalty", "in [-2, 2]", presence_penalty);
  }
  if (!(frequency_penalty >= -kFrequencyPenaltyMax && frequency_penalty <= kFrequencyPenaltyMax)) {
    return invalid("frequency_penalty", "in [-2, 2]", frequency_penalty);
  }
  return {};
}

Sampler::Sampler(SamplerParams params) : params_(params) { DCHECK(params_.validate()); }

int32_t Sampler::sample(std::span<const float> logits, std::span<const int32_t> history,
                        size_t prompt_tokens, uint64_t position) const {
  DCHECK(!logits.empty());
  DCHECK(logits.size() <= static_cast<size_t>(std::numeric_limits<int32_t>::max()));
  if (logits.empty()) return 0;
  const size_t vocab = logits.size();

  // The distinct ids some penalty applies to, sorted, with their penalised
  // logits, so that the passes below visit the logits in order without
  // copying them.
  const std::vector<Adjusted> adjusted = penalize_history(params_, logits, history, prompt_tokens);
  // Calls visit(i, logit) for every id in order, with the penalties applied
  // (once per distinct id). NaN stays NaN here; every use below compares in
  // a way that NaN fails, which treats it as -inf.
  const auto for_each_logit = [&](auto&& visit) {
    size_t from = 0;
    for (const Adjusted& a : adjusted) {
      for (size_t i = from; i < static_cast<size_t>(a.id); ++i) visit(i, logits[i]);
      visit(static_cast<size_t>(a.id), a.logit);
      from = static_cast<size_t>(a.id) + 1;
    }
    for (size_t i = from; i < vocab; ++i) visit(i, logits[i]);
  };

  // The maximum; the first one is the lowest id on ties. When every logit is
  // -inf or NaN nothing compares greater and id 0 stands.
  size_t best = 0;
  float best_logit = kNegativeInfinity;
  size_t from = 0;
  for (const Adjusted& a : adjusted) {
    first_maximum(logits, from, static_cast<size_t>(a.id), &best_logit, &best);
    if (a.logit > best_logit) {
      best_logit = a.logit;
      best = static_cast<size_t>(a.id);
    }
    from = static_cast<size_t>(a.id) + 1;
  }
  first_maximum(logits, from, vocab, &best_logit, &best);
  // A temperature so small that its inverse overflows is greedy too.
  const float temperature = params_.temperature;
  const float inverse_temperature = 1.0f / temperature;
  if (!(temperature > 0.0f) || !(inverse_temperature < kPositiveInfinity) ||
      best_logit == kNegativeInfinity) {
    return static_cast<int32_t>(best);
  }

  // One buffer per thread, reused, so that a call allocates nothing once warm.
  thread_local std::vector<Candidate> scratch;
  if (scratch.size() < vocab) scratch.resize(vocab);
  size_t count = 0;

  // Softmax weights relative to the top candidate (exactly 1). Temperature
  // scales the difference to the maximum, never a raw logit, so that a small
  // temperature cannot overflow. Single precision is enough for a weight
  // (its error, 2^-24 relative, is far below sampling noise) and halves the
  // cost of the exponentials.
  const float min_weight = params_.min_p > 0.0f ? std::min(params_.min_p, 1.0f) : 0.0f;
  u128 total = 0;  // before min_p, which top_p measures against
  const auto weigh = [&](float logit) -> uint64_t {
    if (best_logit == kPositiveInfinity) return static_cast<uint64_t>(kWeightOne);
    const float weight = det_expf((logit - best_logit) * inverse_temperature);
    // Through int64 (the value is at most 2^52): x86 converts that directly.
    return static_cast<uint64_t>(static_cast<int64_t>(weight * kWeightOne + 0.5));
  };
  // min_p before top_p is safe: each keeps a prefix of the candidate order,
  // so the result is the shorter prefix either way, given that top_p
  // measures against the total before min_p. Zero weights cannot be drawn.
  const auto keep = [&](uint64_t fixed) {
    return fixed != 0 && static_cast<double>(fixed) >= min_weight * kWeightOne;
  };

  // Below this logit a weight rounds to 0 (e^-38 * 2^52 < 0.2), so the
  // exponential is skipped; the margin covers the rounding of the cutoff.
  const float zero_below = best_logit == kPositiveInfinity
                               ? kPositiveInfinity
                               : best_logit - kWeightZeroExponent * temperature;
  bool sorted = false;
  const bool top_k = params_.top_k > 0 && static_cast<size_t>(params_.top_k) < vocab;
  if (!top_k) {
    // Everything in one pass: candidates, weights, total.
    for_each_logit([&](size_t i, float logit) {
      if (!(logit >= zero_below)) return;  // also NaN and, with +inf, the finite ones
      const uint64_t fixed = weigh(logit);
      total += fixed;
      if (keep(fixed)) scratch[count++] = {candidate_key(logit, static_cast<int32_t>(i)), fixed};
    });
  } else {
    // The k best first, then weights for them only.
    for_each_logit([&](size_t i, float logit) {
      if (!(logit >= zero_below)) return;
      scratch[count++] = {candidate_key(logit, static_cast<int32_t>(i)), 0};
    });
    const size_t k = std::min(count, static_cast<size_t>(params_.top_k));
    std::partial_sort(scratch.begin(), scratch.begin() + k, scratch.begin() + count);
    count = 0;
    for (size_t i = 0; i < k; ++i) {
      const uint64_t fixed = weigh(key_logit(scratch[i].key));
      total += fixed;
      if (keep(fixed)) scratch[count++] = {scratch[i].key, fixed};
    }
    sorted = true;
  }
  DCHECK(count > 0);  // the top candidate has weight 2^52
  std::span<Candidate> candidates(scratch.data(), count);

  if (params_.top_p < 1.0f) {
    const double needed = params_.top_p * static_cast<double>(total);
    const size_t last = find_first(candidates, sorted, [&](u128 cumulative) {
      return static_cast<double>(cumulative) >= needed;
    });
    candidates = candidates.first(last + 1);
  }
  u128 kept_total = 0;
  for (const Candidate& c : candidates) kept_total += c.weight;

  const uint64_t r53 = counter_random(params_.seed, position) >> 11;  // to_unit_double's bits
  const u128 target = scale_by_unit(r53, kept_total);                 // < kept_total
  const size_t chosen =
      find_first(candidates, sorted, [&](u128 cumulative) { return cumulative > target; });
  return key_id(candidates[chosen].key);
}

void compute_logprobs(std::span<const float> logits, int32_t chosen, int32_t top_n,
                      TokenLogprobs* out) {
  DCHECK(!logits.empty());
  DCHECK(logits.size() <= static_cast<size_t>(std::numeric_limits<int32_t>::max()));
  DCHECK(chosen >= 0 && static_cast<size_t>(chosen) < logits.size());
  const size_t vocab = logits.size();
  top_n = std::clamp(top_n, 0, kTopLogprobsMax);
  const size_t keep = std::min(vocab, static_cast<size_t>(top_n));

  // The largest logit (NaN never compares greater) and, for the degenerate
  // cases, how many logits are +inf or above -inf.
  float top = kNegativeInfinity;
  size_t infinite = 0;
  for (float logit : logits) {
    if (logit > top) top = logit;
    infinite += logit == kPositiveInfinity;
  }
  // logprob(i) as a function of the logit, in double, rounded once.
  double log_sum = 0.0;
  double uniform = 0.0;  // the logprob of every token in a degenerate case
  if (top == kNegativeInfinity) {
    uniform = -det_log(static_cast<double>(vocab));
  } else if (top == kPositiveInfinity) {
    uniform = -det_log(static_cast<double>(infinite));
  } else {
    // Serially, in id order: the sum (at least 1, from the maximum) is the
    // same whatever the machine or thread count.
    double sum = 0.0;
    for (float logit : logits) {
      if (logit >= -std::numeric_limits<float>::max()) {  // finite (NaN and -inf fail)
        sum += det_exp(static_cast<double>(logit) - static_cast<double>(top));
      }
    }
    log_sum = det_log(sum);
  }
  const auto logprob = [&](float logit) -> float {
    if (top == kNegativeInfinity) return static_cast<float>(uniform);
    if (top == kPositiveInfinity) {
      return logit == kPositiveInfinity ? static_cast<float>(uniform) : kNegativeInfinity;
    }
    if (!(logit >= -std::numeric_limits<float>::max())) return kNegativeInfinity;
    const double value = (static_cast<double>(logit) - static_cast<double>(top)) - log_sum;
    // Below float's range (a logit ~3.4e38 under the top): -inf, since
    // narrowing it would be undefined.
    if (value < -static_cast<double>(std::numeric_limits<float>::max())) return kNegativeInfinity;
    return static_cast<float>(value);
  };

  out->chosen = {chosen, logprob(logits[static_cast<size_t>(chosen)])};
  out->top.clear();
  if (keep == 0) return;
  // The best `keep` by (logprob descending, id ascending), kept sorted in a
  // small array: an insertion per token that beats the current last.
  const auto better = [](const TokenLogprob& a, const TokenLogprob& b) {
    return a.logprob > b.logprob || (a.logprob == b.logprob && a.id < b.id);
  };
  out->top.reserve(keep);
  for (size_t i = 0; i < vocab; ++i) {
    const TokenLogprob candidate{static_cast<int32_t>(i), logprob(logits[i])};
    if (out->top.size() == keep) {
      if (!better(candidate, out->top.back())) continue;
      out->top.pop_back();
    }
    // Ids arrive ascending, so an equal logprob goes after the ones there.
    auto at = std::upper_bound(out->top.begin(), out->top.end(), candidate, better);
    out->top.insert(at, candidate);
  }
}

}  // namespace idlefleet::engine
