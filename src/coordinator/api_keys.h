// KeyGate: who may use the client API, how much, and what they have used.
//
// The coordinator's HTTP threads ask it about every client API request
// (authenticate(), then admit() for completions); the loop thread reports
// usage when a job ends (record_usage()) and, every kKeysSyncMs, calls
// sync(), which writes the usage gathered since the last call to the key
// store in one transaction and reloads the keys when another process (the
// `idlefleet admin keys` command) has changed the file. So a key created or
// revoked while the coordinator runs takes effect within kKeysSyncMs, and no
// HTTP thread ever touches the disk.
//
// Errors, in OpenAI's shapes (status, type, code):
//   no Authorization header             401 invalid_request_error, code null
//   not "Bearer sk-idf-<64 hex>"        401 invalid_request_error, invalid_api_key
//   a key nobody issued                 401 invalid_request_error, invalid_api_key
//   a revoked key                       401 invalid_request_error, invalid_api_key,
//                                       the message says it was revoked
//   over requests per minute            429 type "requests", rate_limit_exceeded, Retry-After
//   over tokens per minute              429 type "tokens", rate_limit_exceeded, Retry-After
//   a route outside the key's scopes    403 invalid_request_error, insufficient_permissions
//   spend at or over the spend limit    429 insufficient_quota, insufficient_quota, no
//                                       Retry-After (waiting does not help; OpenAI
//                                       answers an exhausted quota the same way)
// 401s carry `WWW-Authenticate: Bearer` (RFC 6750). Messages never echo the
// secret a client sent.
//
// Limits: requests and tokens per minute are core/rate_limit.h's buckets
// (prompt tokens at admission, completion tokens when the job ends). The
// spend limit is checked at admission against the spend so far, so the
// request that crosses it still completes. Spend per job is
// ceil((prompt x prompt price + completion x completion price) / 1e6), prices
// in micro-units per million tokens (config [pricing]). Only jobs that finish
// done are charged tokens and spend; every admitted request counts as one,
// a replayed Idempotency-Key included (admission comes before the replay).
//
// When auth is not required the gate is not consulted at all: an
// Authorization header is ignored (clients often send a placeholder key),
// and nobody is limited.
//
// Thread-safety: every method may be called from any thread (one mutex);
// sync() and load() take the store, which belongs to the caller's thread.
#pragma once

#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <variant>

#include "common/result.h"
#include "coordinator/openai.h"
#include "core/rate_limit.h"
#include "store/key_store.h"

namespace idlefleet::coordinator {

inline constexpr int64_t kKeysSyncMs = 250;

// A refusal: the error to send and, for rate limits, Retry-After seconds.
struct Refusal {
  ApiError error;
  int64_t retry_after_s = 0;  // 0: no Retry-After header
};

struct Prices {
  uint64_t prompt_micros_per_mtok = 0;
  uint64_t completion_micros_per_mtok = 0;
};

// The micro-units a job costs (rounded up).
uint64_t job_spend_micros(const Prices& prices, uint64_t prompt_tokens, uint64_t completion_tokens);

class KeyGate {
 public:
  explicit KeyGate(Prices prices) : prices_(prices) {}

  // The key id for an Authorization header (nullptr: none sent), or the 401.
  std::variant<std::string, Refusal> authenticate(const std::string* authorization) const;

  // nullopt if the key may call routes of `scope` (store::kScopes), else the
  // 403 (code insufficient_permissions). A key unknown here passes: only
  // authenticate() says who is known.
  std::optional<Refusal> authorize(const std::string& key_id, std::string_view scope) const;

  // Admits one completion request of `prompt_tokens` for an authenticated
  // key: spend limit, then both rate limits. Counts the request when admitted.
  std::optional<Refusal> admit(const std::string& key_id, uint64_t prompt_tokens, core::TimeMs now);

  // A job of this key finished done: its tokens and spend, at `prices` (the
  // model's, [pricing.models]) or, when null, the gate's.
  void record_usage(const std::string& key_id, uint64_t prompt_tokens, uint64_t completion_tokens,
                    core::TimeMs now, const Prices* prices = nullptr);

  // Writes the usage gathered since the last call, then reloads the keys if
  // another connection changed the file (always, the first time). On a
  // failed write the usage is kept for the next call.
  Status sync(store::KeyStore& store);

  // Keys loaded (for tests and logs).
  size_t size() const;

 private:
  Prices prices_;
  mutable std::mutex mu_;
  std::map<std::string, store::ApiKey> by_id_;      // usage includes pending_
  std::map<std::string, std::string> id_by_hash_;   // secret_sha256 bytes -> id
  std::map<std::string, store::KeyUsage> pending_;  // not yet written
  core::RateLimiter limiter_;
  std::optional<int64_t> data_version_;
};

}  // namespace idlefleet::coordinator
