#include "core/rate_limit.h"

#include <algorithm>

#include "common/check.h"

namespace idlefleet::core {

namespace {

int64_t capacity(uint64_t per_minute) { return static_cast<int64_t>(per_minute) * kMinuteMs; }

uint64_t clamp_limit(uint64_t per_minute) { return std::min(per_minute, kRateLimitPerMinuteMax); }

int64_t seconds_up(int64_t ms) { return std::max<int64_t>(1, (ms + 999) / 1000); }

}  // namespace

void refill(TokenBucket& b, uint64_t per_minute, TimeMs now) {
  DCHECK(per_minute > 0 && per_minute <= kRateLimitPerMinuteMax);
  const int64_t cap = capacity(per_minute);
  if (!b.started) {
    b.started = true;
    b.level = cap;
    b.updated_at = now;
    return;
  }
  if (now > b.updated_at) {
    // A full refill from the deepest debt takes (1 + kDebtMinutesMax) minutes;
    // more elapsed time adds nothing, and clamping keeps the product in range.
    const int64_t elapsed = std::min<int64_t>(now - b.updated_at, (1 + kDebtMinutesMax) * kMinuteMs);
    b.level += elapsed * static_cast<int64_t>(per_minute);
    b.updated_at = now;
  }
  b.level = std::min(b.level, cap);
}

int64_t wait_ms(const TokenBucket& b, uint64_t per_minute, uint64_t units) {
  DCHECK(per_minute > 0 && units <= per_minute);
  const int64_t need = static_cast<int64_t>(units) * kMinuteMs;
  if (b.level >= need) return 0;
  const auto rate = static_cast<int64_t>(per_minute);
  return (need - b.level + rate - 1) / rate;
}

RateDecision admit(KeyBuckets& k, const RateLimits& limits, uint64_t prompt_tokens, TimeMs now) {
  const uint64_t rpm = clamp_limit(limits.requests_per_minute);
  const uint64_t tpm = clamp_limit(limits.tokens_per_minute);
  // Decided on copies, kept only when admitted: a refusal changes nothing.
  KeyBuckets next = k;
  int64_t requests_wait = 0, tokens_wait = 0;
  if (rpm > 0) {
    refill(next.requests, rpm, now);
    requests_wait = wait_ms(next.requests, rpm, 1);
  }
  if (tpm > 0) {
    refill(next.tokens, tpm, now);
    tokens_wait = wait_ms(next.tokens, tpm, std::min(prompt_tokens, tpm));
  }
  if (requests_wait > 0 || tokens_wait > 0) {
    RateDecision d;
    d.allowed = false;
    d.refused_by = requests_wait >= tokens_wait ? RateLimitKind::kRequests : RateLimitKind::kTokens;
    d.retry_after_s = seconds_up(std::max(requests_wait, tokens_wait));
    return d;
  }
  if (rpm > 0) next.requests.level -= kMinuteMs;
  if (tpm > 0) {
    // The whole prompt is taken, even beyond what was needed to admit it.
    next.tokens.level -= static_cast<int64_t>(std::min(prompt_tokens, tpm * (1 + kDebtMinutesMax))) * kMinuteMs;
    next.tokens.level = std::max(next.tokens.level, -capacity(tpm) * kDebtMinutesMax);
  }
  k = next;
  return {};
}

void charge_tokens(KeyBuckets& k, const RateLimits& limits, uint64_t tokens, TimeMs now) {
  const uint64_t tpm = clamp_limit(limits.tokens_per_minute);
  if (tpm == 0 || tokens == 0) return;
  refill(k.tokens, tpm, now);
  const uint64_t taken = std::min(tokens, tpm * (1 + kDebtMinutesMax));
  k.tokens.level -= static_cast<int64_t>(taken) * kMinuteMs;
  k.tokens.level = std::max(k.tokens.level, -capacity(tpm) * kDebtMinutesMax);
}

}  // namespace idlefleet::core
