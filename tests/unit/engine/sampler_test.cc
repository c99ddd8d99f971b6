// Sampler: greedy ties, each filter (temperature, top_k, top_p, min_p), the
// repetition, presence and frequency penalties, NaN and infinite logits, parameter validation, the
// statelessness that lets a generation resume anywhere, frequencies against
// probabilities; logprobs against a double-precision reference.
#include "engine/sampler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "common/random.h"

namespace idlefleet::engine::sampler_test {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

SamplerParams sampling(float temperature = 1.0f) {
  SamplerParams p;
  p.temperature = temperature;
  p.seed = 1234;
  return p;
}

// Logits whose softmax (at temperature 1) is `probabilities`.
std::vector<float> logits_for(const std::vector<double>& probabilities) {
  std::vector<float> logits;
  for (double p : probabilities) logits.push_back(static_cast<float>(std::log(p)));
  return logits;
}

// How often each id comes up over `draws` positions.
// `history` is all produced unless prompt_tokens says otherwise.
std::vector<int> histogram(const Sampler& s, const std::vector<float>& logits, int draws,
                           std::vector<int32_t> history = {}, size_t prompt_tokens = 0) {
  std::vector<int> counts(logits.size(), 0);
  for (int position = 0; position < draws; ++position) {
    const int32_t id = s.sample(logits, history, prompt_tokens, position);
    EXPECT_TRUE(id >= 0 && static_cast<size_t>(id) < logits.size());
    ++counts[id];
  }
  return counts;
}

std::set<int32_t> seen(const std::vector<int>& counts) {
  std::set<int32_t> ids;
  for (size_t i = 0; i < counts.size(); ++i) {
    if (counts[i] > 0) ids.insert(static_cast<int32_t>(i));
  }
  return ids;
}

TEST(Sampler, GreedyTakesLowestIdOnTies) {
  const Sampler s(SamplerParams{});
  EXPECT_EQ(s.sample(std::vector<float>{1, 3, 3, 2}, {}, 0, 0), 1);
  EXPECT_EQ(s.sample(std::vector<float>{5, 5, 5}, {}, 0, 9), 0);
  EXPECT_EQ(s.sample(std::vector<float>{-2, -1}, {}, 0, 0), 1);
  EXPECT_EQ(s.sample(std::vector<float>{0.5f}, {}, 0, 0), 0);
  // Neither the seed nor the position matter.
  SamplerParams other;
  other.seed = 99;
  for (uint64_t position = 0; position < 100; ++position) {
    EXPECT_EQ(Sampler(other).sample(std::vector<float>{1, 3, 3, 2}, {}, 0, position), 1);
  }
}

TEST(Sampler, SameSeedAndPositionSameToken) {
  std::vector<float> logits(1000);
  Rng rng(3);
  for (float& l : logits) l = rng.uniform_float() * 4;
  SamplerParams p = sampling(0.9f);
  p.top_p = 0.95f;
  const Sampler a(p);
  const Sampler b(p);
  std::vector<int32_t> forward;
  for (uint64_t position = 0; position < 200; ++position) {
    forward.push_back(a.sample(logits, {}, 0, position));
  }
  // Another sampler, positions visited backwards: no hidden state.
  for (uint64_t position = 200; position-- > 0;) {
    EXPECT_EQ(b.sample(logits, {}, 0, position), forward[position]) << position;
  }
  // Draws vary across positions and across seeds.
  EXPECT_GT(std::set<int32_t>(forward.begin(), forward.end()).size(), 50u);
  p.seed = 4321;
  const Sampler c(p);
  int same = 0;
  for (uint64_t position = 0; position < 200; ++position) {
    same += c.sample(logits, {}, 0, position) == forward[position];
  }
  EXPECT_LT(same, 20);
}

TEST(Sampler, FrequenciesMatchProbabilities) {
  const std::vector<double> probabilities = {0.5, 0.3, 0.15, 0.05};
  const std::vector<float> logits = logits_for(probabilities);
  constexpr int kDraws = 10000;
  const auto check = [&](const SamplerParams& p, const std::vector<double>& expected) {
    const std::vector<int> counts = histogram(Sampler(p), logits, kDraws);
    for (size_t i = 0; i < expected.size(); ++i) {
      const double frequency = static_cast<double>(counts[i]) / kDraws;
      const double sigma = std::sqrt(expected[i] * (1 - expected[i]) / kDraws);
      EXPECT_NEAR(frequency, expected[i], 4 * sigma + 1e-12) << "id " << i;
    }
  };
  check(sampling(), probabilities);
  // top_k 3 and top_p 0.9 keep the first three, renormalised.
  const std::vector<double> three = {0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0};
  SamplerParams top_k = sampling();
  top_k.top_k = 3;
  check(top_k, three);
  SamplerParams top_p = sampling();
  top_p.top_p = 0.9f;
  check(top_p, three);
  // min_p 0.2: 0.15 / 0.5 = 0.3 stays, 0.05 / 0.5 = 0.1 goes.
  SamplerParams min_p = sampling();
  min_p.min_p = 0.2f;
  check(min_p, three);
  // Temperature 2: probabilities proportional to sqrt(p).
  std::vector<double> flat;
  double total = 0;
  for (double p : probabilities) total += std::sqrt(p);
  for (double p : probabilities) flat.push_back(std::sqrt(p) / total);
  check(sampling(2.0f), flat);
}

TEST(Sampler, ChiSquareOnALargerVocabulary) {
  constexpr int kVocab = 50;
  constexpr int kDraws = 20000;
  std::vector<float> logits(kVocab);
  Rng rng(5);
  for (float& l : logits) l = rng.uniform_float() * 3;
  const float temperature = 0.7f;
  std::vector<double> expected(kVocab);
  double total = 0;
  for (int i = 0; i < kVocab; ++i) total += expected[i] = std::exp(logits[i] / temperature);
  SamplerParams p = sampling(temperature);
  p.seed = 77;
  const std::vector<int> counts = histogram(Sampler(p), logits, kDraws);
  double chi2 = 0;
  for (int i = 0; i < kVocab; ++i) {
    const double e = expected[i] / total * kDraws;
    chi2 += (counts[i] - e) * (counts[i] - e) / e;
  }
  // 49 degrees of freedom: mean 49, standard deviation ~9.9.
  EXPECT_LT(chi2, 49 + 5 * 9.9) << "chi-square " << chi2;
}

TEST(Sampler, TopKKeepsTheKBest) {
  const std::vector<float> logits = {0.1f, 2.0f, 1.0f, 1.0f, 3.0f, -1.0f};
  SamplerParams p = sampling(5.0f);  // flat enough that all would appear
  EXPECT_EQ(seen(histogram(Sampler(p), logits, 2000)).size(), 6u);
  p.top_k = 3;
  // 4 and 1, then the tie between 2 and 3 goes to the lower id.
  EXPECT_EQ(seen(histogram(Sampler(p), logits, 2000)), (std::set<int32_t>{1, 2, 4}));
  p.top_k = 1;
  EXPECT_EQ(seen(histogram(Sampler(p), logits, 500)), (std::set<int32_t>{4}));
  p.top_k = 100;  // more than the vocabulary: off
  EXPECT_EQ(seen(histogram(Sampler(p), logits, 2000)).size(), 6u);
}

TEST(Sampler, TopPKeepsTheSmallestSufficientPrefix) {
  const std::vector<float> logits = logits_for({0.05, 0.5, 0.15, 0.3});
  SamplerParams p = sampling();
  p.top_p = 0.7f;  // 0.5 < 0.7 <= 0.8
  EXPECT_EQ(seen(histogram(Sampler(p), logits, 2000)), (std::set<int32_t>{1, 3}));
  p.top_p = 0.45f;
  EXPECT_EQ(seen(histogram(Sampler(p), logits, 500)), (std::set<int32_t>{1}));
  p.top_p = 0.9f;
  EXPECT_EQ(seen(histogram(Sampler(p), logits, 2000)), (std::set<int32_t>{1, 2, 3}));
}

TEST(Sampler, MinPIsRelativeToTheTopProbability) {
  const std::vector<float> logits = logits_for({0.05, 0.5, 0.15, 0.3});
  SamplerParams p = sampling();
  p.min_p = 0.5f;  // keeps p >= 0.25
  EXPECT_EQ(seen(histogram(Sampler(p), logits, 2000)), (std::set<int32_t>{1, 3}));
  p.min_p = 1.0f;
  EXPECT_EQ(seen(histogram(Sampler(p), logits, 500)), (std::set<int32_t>{1}));
  // With top_p: the stricter of the two.
  p.min_p = 0.2f;  // would keep {1, 3, 2}
  p.top_p = 0.7f;  // keeps {1, 3}
  EXPECT_EQ(seen(histogram(Sampler(p), logits, 2000)), (std::set<int32_t>{1, 3}));
}

TEST(Sampler, TemperatureExtremes) {
  const std::vector<float> logits = {1.0f, 1.5f, 0.5f};
  EXPECT_EQ(seen(histogram(Sampler(sampling(0.001f)), logits, 500)), (std::set<int32_t>{1}));
  const std::vector<int> counts = histogram(Sampler(sampling(kTemperatureMax)), logits, 9000);
  for (int c : counts) EXPECT_NEAR(c, 3000, 200);
  // A tiny temperature with huge logits neither overflows nor picks wrongly.
  const std::vector<float> huge = {3e38f, -3e38f, 3.1e38f};
  EXPECT_EQ(seen(histogram(Sampler(sampling(1e-3f)), huge, 100)), (std::set<int32_t>{2}));
}

TEST(Sampler, RepetitionPenalty) {
  SamplerParams p;
  p.repeat_penalty = 1.2f;
  const Sampler s(p);
  // 2.0 / 1.2 = 1.67 > 1.5 once; applied twice it would be 1.39 < 1.5.
  const std::vector<float> logits = {2.0f, 1.5f};
  EXPECT_EQ(s.sample(logits, std::vector<int32_t>{}, 0, 0), 0);
  EXPECT_EQ(s.sample(logits, std::vector<int32_t>{0, 0, 0, 0}, 0, 0), 0);
  const std::vector<float> close = {2.0f, 1.9f};
  EXPECT_EQ(s.sample(close, std::vector<int32_t>{0}, 0, 0), 1);
  // Negative logits are multiplied: -1 * 1.2 = -1.2 < -1.1.
  EXPECT_EQ(s.sample(std::vector<float>{-1.0f, -1.1f}, std::vector<int32_t>{0}, 0, 0), 1);
  // Only the last repeat_last_n tokens count; ids outside the vocabulary are
  // ignored.
  SamplerParams window = p;
  window.repeat_last_n = 2;
  const Sampler w(window);
  EXPECT_EQ(w.sample(close, std::vector<int32_t>{0, 1, 1}, 0, 0), 0);
  EXPECT_EQ(w.sample(close, std::vector<int32_t>{1, 0, -3, 7}, 0, 0), 0);
  EXPECT_EQ(w.sample(close, std::vector<int32_t>{1, 2, 0}, 0, 0), 1);
  window.repeat_last_n = 0;
  EXPECT_EQ(Sampler(window).sample(close, std::vector<int32_t>{0}, 0, 0), 0);
  // It applies when sampling too: token 0 loses most of its mass.
  SamplerParams sampled = sampling();
  sampled.repeat_penalty = 4.0f;
  const std::vector<int> counts =
      histogram(Sampler(sampled), std::vector<float>{2.0f, 1.0f}, 2000, {0});
  // 2 / 4 = 0.5 against 1: p(1) = 1 / (1 + e^-0.5) = 0.62.
  EXPECT_NEAR(counts[1], 0.62 * 2000, 100);
}

TEST(Sampler, NaNAndInfiniteLogits) {
  const Sampler greedy(SamplerParams{});
  const Sampler sampled(sampling());
  const std::vector<float> some_nan = {kNaN, 1.0f, kNaN, 0.5f};
  EXPECT_EQ(greedy.sample(some_nan, {}, 0, 0), 1);
  EXPECT_EQ(seen(histogram(sampled, some_nan, 1000)), (std::set<int32_t>{1, 3}));
  const std::vector<float> all_nan = {kNaN, kNaN, kNaN};
  EXPECT_EQ(greedy.sample(all_nan, {}, 0, 0), 0);
  EXPECT_EQ(seen(histogram(sampled, all_nan, 100)), (std::set<int32_t>{0}));
  const std::vector<float> all_negative_infinity = {-kInf, -kInf};
  EXPECT_EQ(greedy.sample(all_negative_infinity, {}, 0, 0), 0);
  EXPECT_EQ(seen(histogram(sampled, all_negative_infinity, 100)), (std::set<int32_t>{0}));
  const std::vector<float> positive_infinity = {1.0f, kInf, 0.0f, kInf, kNaN};
  EXPECT_EQ(greedy.sample(positive_infinity, {}, 0, 0), 1);
  const std::vector<int> counts = histogram(sampled, positive_infinity, 2000);
  EXPECT_EQ(seen(counts), (std::set<int32_t>{1, 3}));
  EXPECT_NEAR(counts[1], 1000, 150);
  // Penalties on infinities keep them infinite.
  SamplerParams penalised = sampling();
  penalised.repeat_penalty = 2.0f;
  EXPECT_EQ(seen(histogram(Sampler(penalised), positive_infinity, 500, {1, 4})),
            (std::set<int32_t>{1, 3}));
}

TEST(Sampler, NeverReturnsAnImpossibleToken) {
  Rng rng(17);
  for (int round = 0; round < 300; ++round) {
    const size_t vocab = 1 + rng.below(300);
    std::vector<float> logits(vocab);
    for (float& l : logits) {
      const uint64_t kind = rng.below(10);
      l = kind == 0 ? kNaN : kind == 1 ? -kInf : (rng.uniform_float() - 0.5f) * 20;
    }
    SamplerParams p;
    p.temperature = rng.uniform_float() * 3;
    p.top_k = static_cast<int32_t>(rng.below(5));
    p.top_p = 1.0f - rng.uniform_float() * 0.99f;
    p.min_p = rng.uniform_float() * 0.5f;
    p.repeat_penalty = 0.5f + rng.uniform_float();
    p.presence_penalty = (rng.uniform_float() - 0.5f) * 4;
    p.frequency_penalty = (rng.uniform_float() - 0.5f) * 4;
    p.seed = rng.next();
    ASSERT_TRUE(p.validate()) << p.validate().error().to_string();
    std::vector<int32_t> history(rng.below(100));
    for (int32_t& id : history) id = static_cast<int32_t>(rng.below(vocab + 10)) - 5;
    const size_t prompt_tokens = rng.below(history.size() + 1);
    bool any_finite = false;
    for (float l : logits) any_finite |= std::isfinite(l);
    for (uint64_t position = 0; position < 20; ++position) {
      const int32_t id = Sampler(p).sample(logits, history, prompt_tokens, position);
      ASSERT_TRUE(id >= 0 && static_cast<size_t>(id) < vocab);
      if (any_finite) {
        ASSERT_TRUE(std::isfinite(logits[id])) << "round " << round;
      }
    }
  }
}

// The pipeline written plainly: full sort, linear walks. The weights are
// computed as sampler.cc does (single-precision exponential, fixed point with
// the top weight 2^52, 0 below e^-38) so that the search, not the
// arithmetic, is what is compared.
int32_t reference_sample(const SamplerParams& p, const std::vector<float>& raw,
                         const std::vector<int32_t>& history, size_t prompt_tokens,
                         uint64_t position) {
  std::vector<float> v = raw;
  if (p.repeat_penalty != 1.0f && p.repeat_last_n > 0) {
    std::set<int32_t> recent;
    for (size_t i = history.size() > static_cast<size_t>(p.repeat_last_n)
                        ? history.size() - p.repeat_last_n
                        : 0;
         i < history.size(); ++i) {
      if (history[i] >= 0 && static_cast<size_t>(history[i]) < v.size()) recent.insert(history[i]);
    }
    for (int32_t id : recent)
      v[id] = v[id] > 0 ? v[id] / p.repeat_penalty : v[id] * p.repeat_penalty;
  }
  std::map<int32_t, int> produced;
  for (size_t i = prompt_tokens; i < history.size(); ++i) {
    if (history[i] >= 0 && static_cast<size_t>(history[i]) < v.size()) ++produced[history[i]];
  }
  for (const auto& [id, count] : produced) {
    v[id] -= p.frequency_penalty * static_cast<float>(count) + p.presence_penalty * 1.0f;
  }
  for (float& x : v) {
    if (std::isnan(x)) x = -kInf;
  }
  size_t best = 0;
  for (size_t i = 0; i < v.size(); ++i) {
    if (v[i] > v[best]) best = i;
  }
  const float top = v[best];
  if (p.temperature <= 0 || top == -kInf) return static_cast<int32_t>(best);
  struct C {
    float logit;
    int32_t id;
    uint64_t weight;
  };
  std::vector<C> c;
  for (size_t i = 0; i < v.size(); ++i) {
    if (top == kInf ? v[i] == kInf : v[i] >= top - 38.0f * p.temperature) {
      c.push_back({v[i], static_cast<int32_t>(i), 0});
    }
  }
  std::sort(c.begin(), c.end(), [](const C& a, const C& b) {
    return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
  });
  if (p.top_k > 0 && static_cast<size_t>(p.top_k) < v.size() && c.size() > size_t(p.top_k)) {
    c.resize(p.top_k);
  }
  unsigned __int128 total = 0;
  for (C& x : c) {
    const float w = top == kInf ? 1.0f : std::exp((x.logit - top) * (1.0f / p.temperature));
    x.weight = static_cast<uint64_t>(static_cast<int64_t>(w * 0x1p52 + 0.5));
    total += x.weight;
  }
  std::vector<C> kept;
  for (const C& x : c) {
    if (x.weight != 0 && static_cast<double>(x.weight) >= p.min_p * 0x1p52) kept.push_back(x);
  }
  if (p.top_p < 1.0f) {
    unsigned __int128 cumulative = 0;
    for (size_t i = 0; i < kept.size(); ++i) {
      cumulative += kept[i].weight;
      if (static_cast<double>(cumulative) >= p.top_p * static_cast<double>(total)) {
        kept.resize(i + 1);
        break;
      }
    }
  }
  unsigned __int128 kept_total = 0;
  for (const C& x : kept) kept_total += x.weight;
  const double u = to_unit_double(counter_random(p.seed, position));
  // floor(u * kept_total), u having 53 bits.
  const uint64_t r53 = static_cast<uint64_t>(std::ldexp(u, 53));
  const unsigned __int128 target =
      ((kept_total >> 64) * r53 << 11) +
      ((static_cast<uint64_t>(kept_total) * static_cast<unsigned __int128>(r53)) >> 53);
  unsigned __int128 cumulative = 0;
  for (const C& x : kept) {
    cumulative += x.weight;
    if (cumulative > target) return x.id;
  }
  ADD_FAILURE() << "the walk ran past the total";
  return -1;
}

TEST(Sampler, MatchesAPlainSortedWalk) {
  Rng rng(29);
  for (int round = 0; round < 400; ++round) {
    const size_t vocab = 1 + rng.below(round < 300 ? 400 : 6000);
    std::vector<float> logits(vocab);
    const uint64_t shape = rng.below(4);
    for (float& l : logits) {
      switch (shape) {
        case 0:
          l = (rng.uniform_float() - 0.5f) * 4;
          break;  // flat
        case 1:
          l = (rng.uniform_float() - 0.5f) * 40;
          break;  // spread
        case 2:
          l = static_cast<float>(rng.below(6));
          break;  // many ties
        default:
          l = rng.below(50) == 0 ? 20 : (rng.uniform_float() * 10);  // peaked
      }
      if (rng.below(40) == 0) l = rng.below(2) ? kNaN : -kInf;
    }
    SamplerParams p;
    p.temperature = rng.below(8) == 0 ? 0.0f : 0.05f + rng.uniform_float() * 3;
    p.top_k = rng.below(3) == 0 ? static_cast<int32_t>(rng.below(vocab + 5)) : 0;
    p.top_p = rng.below(2) == 0 ? 1.0f : 0.05f + rng.uniform_float() * 0.95f;
    p.min_p = rng.below(3) == 0 ? rng.uniform_float() * 0.3f : 0.0f;
    p.repeat_penalty = rng.below(2) == 0 ? 1.0f : 0.5f + rng.uniform_float() * 2;
    p.repeat_last_n = static_cast<int32_t>(rng.below(80));
    p.presence_penalty = rng.below(2) == 0 ? 0.0f : (rng.uniform_float() - 0.5f) * 4;
    p.frequency_penalty = rng.below(2) == 0 ? 0.0f : (rng.uniform_float() - 0.5f) * 4;
    p.seed = rng.next();
    ASSERT_TRUE(p.validate());
    std::vector<int32_t> history(rng.below(120));
    for (int32_t& id : history) id = static_cast<int32_t>(rng.below(vocab + 4)) - 2;
    const size_t prompt_tokens = rng.below(history.size() + 3);
    const Sampler s(p);
    for (uint64_t position = 0; position < 8; ++position) {
      ASSERT_EQ(s.sample(logits, history, prompt_tokens, position),
                reference_sample(p, logits, history, prompt_tokens, position))
          << "round " << round << " position " << position;
    }
  }
}

TEST(Sampler, PresenceAndFrequencyPenaltiesCountOnlyProducedTokens) {
  const std::vector<float> logits = {2.0f, 1.5f, 1.0f};
  SamplerParams presence;
  presence.presence_penalty = 0.6f;
  const Sampler p(presence);
  // The prompt does not count, however often a token appears in it.
  EXPECT_EQ(p.sample(logits, std::vector<int32_t>{0, 0, 0}, 3, 0), 0);
  // A prompt_tokens past the end means the whole history is prompt.
  EXPECT_EQ(p.sample(logits, std::vector<int32_t>{0, 0, 0}, 99, 0), 0);
  // Produced once: 2.0 - 0.6 = 1.4 < 1.5. More occurrences change nothing.
  EXPECT_EQ(p.sample(logits, std::vector<int32_t>{2, 0}, 1, 0), 1);
  EXPECT_EQ(p.sample(logits, std::vector<int32_t>{0, 0, 0, 0}, 0, 0), 1);
  // Ids outside the vocabulary are ignored.
  EXPECT_EQ(p.sample(logits, std::vector<int32_t>{-1, 3, 7}, 0, 0), 0);

  SamplerParams frequency;
  frequency.frequency_penalty = 0.3f;
  const Sampler f(frequency);
  // 2.0 - 0.3 = 1.7 > 1.5 once; 2.0 - 0.6 = 1.4 < 1.5 twice.
  EXPECT_EQ(f.sample(logits, std::vector<int32_t>{0}, 0, 0), 0);
  EXPECT_EQ(f.sample(logits, std::vector<int32_t>{0, 0}, 0, 0), 1);
  // Two in the prompt and one produced count as one.
  EXPECT_EQ(f.sample(logits, std::vector<int32_t>{0, 0, 0}, 2, 0), 0);

  // Negative values encourage: 1.0 + 1.0 = 2.0 ties with id 0 (lowest id
  // wins); 1.0 + 1.5 = 2.5 wins.
  SamplerParams encourage;
  encourage.presence_penalty = -1.0f;
  EXPECT_EQ(Sampler(encourage).sample(logits, std::vector<int32_t>{2}, 0, 0), 0);
  encourage.presence_penalty = -1.5f;
  EXPECT_EQ(Sampler(encourage).sample(logits, std::vector<int32_t>{2}, 0, 0), 2);
  // Both: 2.0 - (0.25 * 2 + 0.25) = 1.25 < 1.5.
  SamplerParams both;
  both.presence_penalty = 0.25f;
  both.frequency_penalty = 0.25f;
  EXPECT_EQ(Sampler(both).sample(logits, std::vector<int32_t>{0, 0}, 0, 0), 1);
  EXPECT_EQ(Sampler(both).sample(logits, std::vector<int32_t>{0}, 0, 0), 0);  // 1.5: tie, id 0

  // After the repetition penalty: 3.0 / 2 - 1 = 0.5 < 0.8, where the other
  // order would give (3.0 - 1) / 2 = 1.0 > 0.8.
  SamplerParams ordered;
  ordered.repeat_penalty = 2.0f;
  ordered.presence_penalty = 1.0f;
  EXPECT_EQ(Sampler(ordered).sample(std::vector<float>{3.0f, 0.8f}, std::vector<int32_t>{0}, 0, 0), 1);

  // When sampling: p(0) falls from 1 / (1 + e^-1) = 0.73 to 0.5 after
  // 2.0 - 1.0 = 1.0 against 1.0.
  SamplerParams sampled = sampling();
  sampled.frequency_penalty = 0.5f;
  const std::vector<float> two = {2.0f, 1.0f};
  EXPECT_NEAR(histogram(Sampler(sampled), two, 4000, {0, 0}, 0)[0], 2000, 130);
  EXPECT_NEAR(histogram(Sampler(sampled), two, 4000, {0, 0}, 2)[0], 0.731 * 4000, 130);
}

TEST(Sampler, PenaltiesKeepDrawsIndependentOfEarlierCalls) {
  // The same (logits, history, prompt_tokens, seed, position) gives the same
  // token from any sampler, in any order of calls.
  std::vector<float> logits(500);
  Rng rng(41);
  for (float& l : logits) l = rng.uniform_float() * 5;
  std::vector<int32_t> history(300);
  for (int32_t& id : history) id = static_cast<int32_t>(rng.below(500));
  SamplerParams p = sampling(0.8f);
  p.presence_penalty = 0.7f;
  p.frequency_penalty = -0.4f;
  p.repeat_penalty = 1.1f;
  std::vector<int32_t> forward;
  for (uint64_t position = 0; position < 100; ++position) {
    forward.push_back(Sampler(p).sample(logits, history, 120, position));
  }
  const Sampler again(p);
  for (uint64_t position = 100; position-- > 0;) {
    EXPECT_EQ(again.sample(logits, history, 120, position), forward[position]);
  }
}

// log-softmax in double with the C library, sorted plainly.
std::vector<double> reference_logprobs(const std::vector<float>& logits) {
  double top = -kInf;
  for (float l : logits) {
    if (!std::isnan(l)) top = std::max(top, static_cast<double>(l));
  }
  long double sum = 0;
  for (float l : logits) {
    if (std::isfinite(l)) sum += std::exp(static_cast<long double>(l) - top);
  }
  const double log_sum = static_cast<double>(std::log(sum));
  std::vector<double> out;
  for (float l : logits) out.push_back(std::isfinite(l) ? (l - top) - log_sum : -kInf);
  return out;
}

TEST(Logprobs, AgreeWithADoublePrecisionReference) {
  // Tolerance: one float rounding of the result (2^-23 relative, 2^-24 being
  // round to nearest's bound) plus 1e-9 absolute for det_exp / det_log.
  const auto tolerance = [](double reference) { return std::fabs(reference) * 0x1p-23 + 1e-9; };
  Rng rng(53);
  for (int round = 0; round < 200; ++round) {
    const size_t vocab = 1 + rng.below(round < 150 ? 300 : 32000);
    std::vector<float> logits(vocab);
    const uint64_t shape = rng.below(3);
    for (float& l : logits) {
      l = shape == 0   ? (rng.uniform_float() - 0.5f) * 4
          : shape == 1 ? (rng.uniform_float() - 0.5f) * 200
                       : rng.uniform_float() * 10 + (rng.below(100) == 0 ? 30 : 0);
      if (rng.below(50) == 0) l = rng.below(2) ? kNaN : -kInf;
    }
    bool any_finite = false;
    for (float l : logits) any_finite |= std::isfinite(l);
    if (!any_finite) continue;  // the uniform case, tested below
    const std::vector<double> want = reference_logprobs(logits);
    const int32_t top_n = static_cast<int32_t>(rng.below(kTopLogprobsMax + 1));
    const int32_t chosen = static_cast<int32_t>(rng.below(vocab));
    TokenLogprobs got;
    compute_logprobs(logits, chosen, top_n, &got);
    const auto near = [&](float value, int32_t id) {
      const double w = want[static_cast<size_t>(id)];
      if (std::isinf(w)) return value == -kInf;
      return std::fabs(value - w) <= tolerance(w);
    };
    EXPECT_EQ(got.chosen.id, chosen);
    EXPECT_TRUE(near(got.chosen.logprob, chosen))
        << "round " << round << ": " << got.chosen.logprob << " vs " << want[chosen];
    // The top list: as many as asked, each value right, ordered by logprob
    // descending then id ascending, and nothing better left out (to within
    // the tolerance: distinct logits may round to one float logprob, and
    // then the engine orders them by id).
    ASSERT_EQ(got.top.size(), std::min<size_t>(vocab, top_n));
    std::set<int32_t> listed;
    for (size_t i = 0; i < got.top.size(); ++i) {
      const TokenLogprob& t = got.top[i];
      ASSERT_TRUE(t.id >= 0 && static_cast<size_t>(t.id) < vocab);
      EXPECT_TRUE(listed.insert(t.id).second) << "id " << t.id << " twice";
      EXPECT_TRUE(near(t.logprob, t.id)) << "round " << round << " rank " << i;
      if (i > 0) {
        const TokenLogprob& u = got.top[i - 1];
        EXPECT_TRUE(u.logprob > t.logprob || (u.logprob == t.logprob && u.id < t.id))
            << "round " << round << " rank " << i;
      }
    }
    if (!got.top.empty()) {
      const double last = want[static_cast<size_t>(got.top.back().id)];
      for (size_t i = 0; i < vocab; ++i) {
        if (listed.count(static_cast<int32_t>(i)) == 0) {
          EXPECT_LE(want[i], last + 2 * tolerance(last)) << "round " << round << ": id " << i << " left out";
        }
      }
    }
  }
}

TEST(Logprobs, TiesGoToTheLowestIdAndProbabilitiesSumToOne) {
  const std::vector<float> logits = {1.0f, 3.0f, 3.0f, 2.0f, 3.0f, -1.0f};
  TokenLogprobs got;
  compute_logprobs(logits, 5, 4, &got);
  ASSERT_EQ(got.top.size(), 4u);
  EXPECT_EQ(got.top[0].id, 1);
  EXPECT_EQ(got.top[1].id, 2);
  EXPECT_EQ(got.top[2].id, 4);
  EXPECT_EQ(got.top[3].id, 3);
  EXPECT_EQ(got.top[0].logprob, got.top[1].logprob);
  EXPECT_EQ(got.top[1].logprob, got.top[2].logprob);
  EXPECT_EQ(got.chosen.id, 5);
  double total = 0;
  for (size_t i = 0; i < logits.size(); ++i) {
    compute_logprobs(logits, static_cast<int32_t>(i), 0, &got);
    EXPECT_TRUE(got.top.empty());
    total += std::exp(static_cast<double>(got.chosen.logprob));
  }
  EXPECT_NEAR(total, 1.0, 1e-6);
  // More than the vocabulary: all of it; more than the limit: the limit.
  compute_logprobs(logits, 0, 100, &got);
  EXPECT_EQ(got.top.size(), logits.size());
  std::vector<float> many(100, 0.0f);
  compute_logprobs(many, 0, 100, &got);
  ASSERT_EQ(got.top.size(), static_cast<size_t>(kTopLogprobsMax));
  for (int32_t i = 0; i < kTopLogprobsMax; ++i) EXPECT_EQ(got.top[i].id, i);
  EXPECT_NEAR(got.chosen.logprob, -std::log(100.0), 1e-6);
}

TEST(Logprobs, NaNAndInfiniteLogits) {
  TokenLogprobs got;
  // NaN counts as -inf.
  compute_logprobs(std::vector<float>{kNaN, 0.0f, 0.0f}, 0, 3, &got);
  EXPECT_EQ(got.chosen.logprob, -kInf);
  EXPECT_NEAR(got.top[0].logprob, -std::log(2.0), 1e-7);
  EXPECT_EQ(got.top[0].id, 1);
  EXPECT_EQ(got.top[2].id, 0);
  // Some +inf: uniform over them.
  compute_logprobs(std::vector<float>{1.0f, kInf, kNaN, kInf, -kInf}, 3, 2, &got);
  EXPECT_NEAR(got.chosen.logprob, -std::log(2.0), 1e-7);
  EXPECT_EQ(got.top[0].id, 1);
  EXPECT_EQ(got.top[1].id, 3);
  compute_logprobs(std::vector<float>{1.0f, kInf}, 0, 0, &got);
  EXPECT_EQ(got.chosen.logprob, -kInf);
  // Nothing above -inf: uniform over the vocabulary.
  compute_logprobs(std::vector<float>{-kInf, kNaN, -kInf, -kInf}, 2, 1, &got);
  EXPECT_NEAR(got.chosen.logprob, -std::log(4.0), 1e-7);
  EXPECT_EQ(got.top[0].id, 0);
  // Logits at float's extremes neither overflow nor turn into NaN.
  compute_logprobs(std::vector<float>{3e38f, -3e38f, 0.0f}, 1, 3, &got);
  EXPECT_EQ(got.chosen.logprob, -kInf);
  EXPECT_EQ(got.top[0].logprob, 0.0f);
  EXPECT_NEAR(got.top[1].logprob, -3e38f, 1e32f);
}

TEST(SamplerParams, Validation) {
  EXPECT_TRUE(SamplerParams{}.validate());
  const auto error = [](auto change) {
    SamplerParams p;
    change(p);
    const Status status = p.validate();
    EXPECT_FALSE(status);
    if (status) return std::string();
    EXPECT_EQ(status.error().code, ErrorCode::kInvalidArgument);
    return status.error().message;
  };
  EXPECT_NE(error([](SamplerParams& p) { p.temperature = kNaN; }).find("temperature"),
            std::string::npos);
  EXPECT_NE(error([](SamplerParams& p) { p.temperature = -0.1f; }).find("temperature"),
            std::string::npos);
  EXPECT_NE(error([](SamplerParams& p) { p.temperature = 101.0f; }).find("temperature"),
            std::string::npos);
  EXPECT_NE(error([](SamplerParams& p) { p.temperature = kInf; }).find("temperature"),
            std::string::npos);
  EXPECT_NE(error([](SamplerParams& p) { p.top_k = -1; }).find("top_k"), std::string::npos);
  EXPECT_NE(error([](SamplerParams& p) { p.top_p = 0.0f; }).find("top_p"), std::string::npos);
  EXPECT_NE(error([](SamplerParams& p) { p.top_p = 1.01f; }).find("top_p"), std::string::npos);
  EXPECT_NE(error([](SamplerParams& p) { p.top_p = kNaN; }).find("top_p"), std::string::npos);
  EXPECT_NE(error([](SamplerParams& p) { p.min_p = -0.01f; }).find("min_p"), std::string::npos);
  EXPECT_NE(error([](SamplerParams& p) { p.min_p = 1.5f; }).find("min_p"), std::string::npos);
  EXPECT_NE(error([](SamplerParams& p) { p.min_p = kNaN; }).find("min_p"), std::string::npos);
  EXPECT_NE(error([](SamplerParams& p) { p.repeat_penalty = 0.0f; }).find("repeat_penalty"),
            std::string::npos);
  EXPECT_NE(error([](SamplerParams& p) { p.repeat_penalty = kNaN; }).find("repeat_penalty"),
            std::string::npos);
  EXPECT_NE(error([](SamplerParams& p) { p.repeat_penalty = kInf; }).find("repeat_penalty"),
            std::string::npos);
  EXPECT_NE(error([](SamplerParams& p) { p.repeat_last_n = -1; }).find("repeat_last_n"),
            std::string::npos);
  for (float bad : {2.01f, -2.01f, kNaN, kInf, -kInf}) {
    EXPECT_NE(error([&](SamplerParams& p) { p.presence_penalty = bad; }).find("presence_penalty"),
              std::string::npos);
    EXPECT_NE(error([&](SamplerParams& p) { p.frequency_penalty = bad; }).find("frequency_penalty"),
              std::string::npos);
  }
  // The edges that are allowed.
  SamplerParams edges;
  edges.temperature = kTemperatureMax;
  edges.top_p = 1.0f;
  edges.min_p = 1.0f;
  edges.repeat_penalty = kRepeatPenaltyMax;
  edges.repeat_last_n = 0;
  edges.top_k = 1 << 30;
  edges.presence_penalty = -kPresencePenaltyMax;
  edges.frequency_penalty = kFrequencyPenaltyMax;
  EXPECT_TRUE(edges.validate());
  edges.presence_penalty = kPresencePenaltyMax;
  edges.frequency_penalty = -kFrequencyPenaltyMax;
  EXPECT_TRUE(edges.validate());
}


}  // namespace
}  // namespace idlefleet::engine::sampler_test
