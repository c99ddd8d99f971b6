// Rate limits per API key: bursts, refill, retry-after, token debt, and
// properties over seeded random sequences of requests (every run replays from
// its seed; a failure prints it).
#include "core/rate_limit.h"

#include <gtest/gtest.h>

#include <deque>

#include "common/random.h"

namespace idlefleet::core::rate_limit_test {
namespace {

constexpr TimeMs kT0 = 1'700'000'000'000;

bool same(const KeyBuckets& a, const KeyBuckets& b) {
  auto eq = [](const TokenBucket& x, const TokenBucket& y) {
    return x.level == y.level && x.updated_at == y.updated_at && x.started == y.started;
  };
  return eq(a.requests, b.requests) && eq(a.tokens, b.tokens);
}

TEST(RateLimit, NoLimitsAdmitsEverything) {
  KeyBuckets k;
  for (int i = 0; i < 10000; ++i) EXPECT_TRUE(admit(k, {}, 1'000'000, kT0).allowed);
}

TEST(RateLimit, AFullBucketGivesABurstThenRetryAfterThenRefill) {
  KeyBuckets k;
  const RateLimits l{.requests_per_minute = 3, .tokens_per_minute = 0};
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(admit(k, l, 0, kT0).allowed) << i;
  RateDecision d = admit(k, l, 0, kT0);
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.refused_by, RateLimitKind::kRequests);
  EXPECT_EQ(d.retry_after_s, 20);  // 3 a minute: one every 20 s
  EXPECT_FALSE(admit(k, l, 0, kT0 + 19'999).allowed);
  EXPECT_EQ(admit(k, l, 0, kT0 + 19'999).retry_after_s, 1);  // 1 ms rounds up to a second
  EXPECT_TRUE(admit(k, l, 0, kT0 + 20'000).allowed);
  EXPECT_FALSE(admit(k, l, 0, kT0 + 20'000).allowed);
  // A long pause refills to the capacity, not beyond.
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(admit(k, l, 0, kT0 + 3'600'000).allowed) << i;
  EXPECT_FALSE(admit(k, l, 0, kT0 + 3'600'000).allowed);
}

TEST(RateLimit, ARefusalChangesNothing) {
  KeyBuckets k;
  const RateLimits l{.requests_per_minute = 1, .tokens_per_minute = 100};
  ASSERT_TRUE(admit(k, l, 10, kT0).allowed);
  const KeyBuckets before = k;
  EXPECT_FALSE(admit(k, l, 10, kT0).allowed);
  EXPECT_TRUE(same(k, before));
  // Refused by tokens with requests to spare: the request is not taken either.
  KeyBuckets t;
  const RateLimits lt{.requests_per_minute = 100, .tokens_per_minute = 100};
  ASSERT_TRUE(admit(t, lt, 100, kT0).allowed);
  const KeyBuckets t_before = t;
  const RateDecision d = admit(t, lt, 50, kT0 + 1000);
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.refused_by, RateLimitKind::kTokens);
  EXPECT_EQ(d.retry_after_s, 29);  // 50 tokens at 100 a minute: 30 s, 1 s of it already passed
  EXPECT_TRUE(same(t, t_before));
}

TEST(RateLimit, CompletionTokensChargedAfterTheFactPutTheKeyInDebt) {
  KeyBuckets k;
  const RateLimits l{.requests_per_minute = 0, .tokens_per_minute = 600};  // 10 a second
  ASSERT_TRUE(admit(k, l, 100, kT0).allowed);
  charge_tokens(k, l, 1100, kT0);  // the bucket is now 600 in debt
  RateDecision d = admit(k, l, 1, kT0);
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.retry_after_s, 61);  // 601 tokens at 10 a second
  EXPECT_TRUE(admit(k, l, 1, kT0 + 60'100).allowed);
  // A prompt longer than a minute's budget runs on a full bucket.
  KeyBuckets big;
  EXPECT_TRUE(admit(big, l, 5000, kT0).allowed);
  EXPECT_FALSE(admit(big, l, 1, kT0 + 60'000).allowed);
  // Debt is bounded: a huge charge costs at most kDebtMinutesMax minutes.
  KeyBuckets huge;
  charge_tokens(huge, l, uint64_t{1} << 40, kT0);
  EXPECT_EQ(huge.tokens.level, -int64_t{600} * kMinuteMs * kDebtMinutesMax);
  EXPECT_TRUE(admit(huge, l, 600, kT0 + (kDebtMinutesMax + 1) * kMinuteMs).allowed);
}

TEST(RateLimit, AClockThatStepsBackRefillsNothing) {
  KeyBuckets k;
  const RateLimits l{.requests_per_minute = 2, .tokens_per_minute = 0};
  ASSERT_TRUE(admit(k, l, 0, kT0).allowed);
  ASSERT_TRUE(admit(k, l, 0, kT0).allowed);
  EXPECT_FALSE(admit(k, l, 0, kT0 - 3'600'000).allowed);
  EXPECT_FALSE(admit(k, l, 0, kT0 + 29'999).allowed);
  EXPECT_TRUE(admit(k, l, 0, kT0 + 30'000).allowed);
}

TEST(RateLimit, LimitsBeyondTheMaximumAreClampedNotOverflowed) {
  KeyBuckets k;
  const RateLimits l{.requests_per_minute = UINT64_MAX, .tokens_per_minute = UINT64_MAX};
  // The first huge prompt runs on a full bucket and leaves it at the deepest debt.
  ASSERT_TRUE(admit(k, l, UINT64_MAX, kT0).allowed);
  const int64_t floor = -static_cast<int64_t>(kRateLimitPerMinuteMax) * kMinuteMs * kDebtMinutesMax;
  EXPECT_EQ(k.tokens.level, floor);
  const RateDecision d = admit(k, l, UINT64_MAX, kT0 + 1);
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.refused_by, RateLimitKind::kTokens);
  EXPECT_EQ(d.retry_after_s, (kDebtMinutesMax + 1) * 60);
  charge_tokens(k, l, UINT64_MAX, kT0 + 1000);
  EXPECT_EQ(k.tokens.level, floor);
  EXPECT_TRUE(admit(k, l, 1, kT0 + (kDebtMinutesMax + 2) * kMinuteMs).allowed);
}

TEST(RateLimiter, KeysHaveTheirOwnBuckets) {
  RateLimiter r;
  const RateLimits l{.requests_per_minute = 1, .tokens_per_minute = 0};
  EXPECT_TRUE(r.admit("key_a", l, 0, kT0).allowed);
  EXPECT_FALSE(r.admit("key_a", l, 0, kT0).allowed);
  EXPECT_TRUE(r.admit("key_b", l, 0, kT0).allowed);
  r.forget("key_a");
  EXPECT_EQ(r.size(), 1u);
  EXPECT_TRUE(r.admit("key_a", l, 0, kT0).allowed);  // a forgotten key starts full
}

// Random limits and random traffic (bursts, pauses, completion charges), from
// a seed. Checked on every step:
//  - a refusal changes nothing, and its retry-after is exact in whole
//    seconds: the same request is still refused a second earlier (unless that
//    is now) and allowed at retry-after;
//  - the tokens bucket stays within [-kDebtMinutesMax minutes, 1 minute];
//  - in every window of W ms, at most rpm + rpm x W / 60000 requests pass
//    (the burst plus the refill).
TEST(RateLimitProperty, RandomTrafficRespectsTheLimitsAndRetryAfterIsExact) {
  for (uint64_t seed = 1; seed <= 300; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    Rng rng(seed);
    const RateLimits l{.requests_per_minute = rng.below(4) == 0 ? 0 : 1 + rng.below(120),
                       .tokens_per_minute = rng.below(4) == 0 ? 0 : 1 + rng.below(5000)};
    KeyBuckets k;
    TimeMs now = kT0;
    std::deque<TimeMs> admitted;  // every admission time
    for (int step = 0; step < 2000; ++step) {
      switch (rng.below(4)) {
        case 0: now += static_cast<TimeMs>(rng.below(100)); break;
        case 1: now += static_cast<TimeMs>(rng.below(5000)); break;
        case 2: now += static_cast<TimeMs>(rng.below(90'000)); break;
        default: break;  // a burst at the same instant
      }
      const uint64_t prompt = rng.below(3) == 0 ? rng.below(8000) : rng.below(200);
      const KeyBuckets before = k;
      const RateDecision d = admit(k, l, prompt, now);
      if (!d.allowed) {
        ASSERT_TRUE(same(k, before));
        ASSERT_GE(d.retry_after_s, 1);
        KeyBuckets later = k;
        ASSERT_TRUE(admit(later, l, prompt, now + d.retry_after_s * 1000).allowed)
            << "retry_after " << d.retry_after_s << " was too short";
        if (d.retry_after_s > 1) {
          KeyBuckets earlier = k;
          ASSERT_FALSE(admit(earlier, l, prompt, now + (d.retry_after_s - 1) * 1000).allowed)
              << "retry_after " << d.retry_after_s << " was too long";
        }
      } else {
        admitted.push_back(now);
        if (l.tokens_per_minute > 0 && rng.below(2) == 0) charge_tokens(k, l, rng.below(3000), now);
      }
      if (l.tokens_per_minute > 0 && k.tokens.started) {
        const int64_t cap = static_cast<int64_t>(l.tokens_per_minute) * kMinuteMs;
        ASSERT_LE(k.tokens.level, cap);
        ASSERT_GE(k.tokens.level, -cap * kDebtMinutesMax);
      }
    }
    if (l.requests_per_minute == 0) continue;
    // Every window that starts at an admission.
    const auto rpm = static_cast<int64_t>(l.requests_per_minute);
    for (size_t i = 0; i < admitted.size(); ++i) {
      for (size_t j = i; j < admitted.size(); ++j) {
        const int64_t w = admitted[j] - admitted[i];
        if (w > 3 * kMinuteMs) break;
        const auto count = static_cast<int64_t>(j - i + 1);
        ASSERT_LE(count * kMinuteMs, rpm * kMinuteMs + rpm * w) << "window of " << w << " ms from " << i;
      }
    }
  }
}

// Two keys sharing a limiter never affect each other: the same traffic on a
// key alone and interleaved with another key's gets the same decisions.
TEST(RateLimitProperty, KeysAreIndependent) {
  for (uint64_t seed = 1; seed <= 100; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    Rng rng(seed);
    const RateLimits l{.requests_per_minute = 1 + rng.below(30), .tokens_per_minute = 1 + rng.below(2000)};
    RateLimiter alone, shared;
    TimeMs now = kT0;
    for (int step = 0; step < 1000; ++step) {
      now += static_cast<TimeMs>(rng.below(4000));
      const uint64_t prompt = rng.below(300);
      if (rng.below(2) == 0) (void)shared.admit("other", l, rng.below(300), now);
      const RateDecision a = alone.admit("k", l, prompt, now);
      const RateDecision b = shared.admit("k", l, prompt, now);
      ASSERT_EQ(a.allowed, b.allowed);
      ASSERT_EQ(a.retry_after_s, b.retry_after_s);
    }
  }
}

}  // namespace
}  // namespace idlefleet::core::rate_limit_test
