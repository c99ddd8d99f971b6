// Per-API-key rate limits as token buckets: requests per minute and tokens
// per minute. Pure logic: time comes in as an argument and nothing here reads
// a clock, so the tests replay any sequence from a seed.
//
// A bucket holds up to `per_minute` units and refills continuously at
// `per_minute` units per 60 s. Levels are integers in 1/60000 of a unit (a
// unit-millisecond), so a refill of `elapsed_ms` adds exactly
// `elapsed_ms * per_minute` and no rounding ever drifts.
//
// Tokens: a request's completion tokens are unknown when it is admitted. Its
// prompt tokens are taken at admission, and its completion tokens are charged
// when the job ends (charge_tokens()), which may leave the bucket in debt, down
// to kDebtMinutesMax minutes of refill; a key in debt waits until the refill
// has paid it back. A request needs min(prompt tokens, per_minute) in the
// bucket, so that one prompt longer than a minute's budget still runs on a full
// bucket (and leaves it in debt) rather than never.
//
// A refusal changes nothing: neither bucket is touched unless both allow.
// Its retry-after is the whole seconds, at least 1, after which the same
// request would be allowed if nothing else happened meanwhile.
//
// A limit of 0 means "no limit" for that bucket.
//
// Thread-safety: values; RateLimiter is for one thread at a time (its owner
// locks it).
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "core/time.h"

namespace idlefleet::core {

// The most any limit may be: 1e9 per minute keeps every level within int64
// (1e9 x 60000 x (1 + kDebtMinutesMax) < 2^63).
inline constexpr uint64_t kRateLimitPerMinuteMax = 1'000'000'000;
// How far charges after the fact may push the tokens bucket below zero, in
// minutes of refill.
inline constexpr int64_t kDebtMinutesMax = 60;

struct RateLimits {
  uint64_t requests_per_minute = 0;  // 0: unlimited
  uint64_t tokens_per_minute = 0;    // 0: unlimited

  bool operator==(const RateLimits&) const = default;
};

// One bucket. `level` is in unit-milliseconds (units x kMinuteMs).
struct TokenBucket {
  int64_t level = 0;
  TimeMs updated_at = 0;
  bool started = false;  // a new bucket starts full at its first use
};

// Brings the bucket to `now` for a limit of `per_minute` (> 0): refills, and
// caps at the capacity. A `now` earlier than the last update (a clock step
// back) refills nothing.
void refill(TokenBucket& b, uint64_t per_minute, TimeMs now);

// Milliseconds until the bucket holds `units` (0 if it does now).
// REQUIRES: refilled to now; per_minute > 0; units <= per_minute.
int64_t wait_ms(const TokenBucket& b, uint64_t per_minute, uint64_t units);

// Which limit refused a request.
enum class RateLimitKind { kNone, kRequests, kTokens };

struct RateDecision {
  bool allowed = true;
  RateLimitKind refused_by = RateLimitKind::kNone;
  int64_t retry_after_s = 0;  // >= 1 when refused
};

// Both buckets of one key.
struct KeyBuckets {
  TokenBucket requests;
  TokenBucket tokens;
};

// Admits one request that brings `prompt_tokens` now, taking one request and
// the prompt tokens if both buckets allow, nothing otherwise.
RateDecision admit(KeyBuckets& k, const RateLimits& limits, uint64_t prompt_tokens, TimeMs now);

// Takes `tokens` from the tokens bucket after the fact (completion tokens),
// going into debt if need be (at most kDebtMinutesMax minutes' worth).
void charge_tokens(KeyBuckets& k, const RateLimits& limits, uint64_t tokens, TimeMs now);

// The buckets of every key, by key id. Bounded by the caller's number of keys
// (forget() drops a key that is gone).
class RateLimiter {
 public:
  RateDecision admit(const std::string& key_id, const RateLimits& limits, uint64_t prompt_tokens, TimeMs now) {
    return core::admit(keys_[key_id], limits, prompt_tokens, now);
  }
  void charge_tokens(const std::string& key_id, const RateLimits& limits, uint64_t tokens, TimeMs now) {
    core::charge_tokens(keys_[key_id], limits, tokens, now);
  }
  void forget(const std::string& key_id) { keys_.erase(key_id); }
  size_t size() const { return keys_.size(); }

 private:
  std::map<std::string, KeyBuckets> keys_;
};

}  // namespace idlefleet::core
