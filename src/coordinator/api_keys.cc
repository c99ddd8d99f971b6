#include "coordinator/api_keys.h"

#include <string_view>
#include <utility>
#include <vector>

namespace idlefleet::coordinator {

namespace {

std::string hash_key(const store::Sha256& h) { return std::string(reinterpret_cast<const char*>(h.data()), h.size()); }

Refusal unauthorized(std::string message, std::string code) {
  Refusal r;
  r.error.status = 401;
  r.error.type = "invalid_request_error";
  r.error.message = std::move(message);
  r.error.code = std::move(code);
  return r;
}

bool ascii_iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    char x = a[i], y = b[i];
    if (x >= 'A' && x <= 'Z') x = static_cast<char>(x - 'A' + 'a');
    if (y >= 'A' && y <= 'Z') y = static_cast<char>(y - 'A' + 'a');
    if (x != y) return false;
  }
  return true;
}

uint64_t saturating_add(uint64_t a, uint64_t b) { return a + b < a ? UINT64_MAX : a + b; }

void add_usage(store::KeyUsage& to, const store::KeyUsage& d) {
  to.requests = saturating_add(to.requests, d.requests);
  to.prompt_tokens = saturating_add(to.prompt_tokens, d.prompt_tokens);
  to.completion_tokens = saturating_add(to.completion_tokens, d.completion_tokens);
  to.spend_micros = saturating_add(to.spend_micros, d.spend_micros);
}

}  // namespace

uint64_t job_spend_micros(const Prices& prices, uint64_t prompt_tokens, uint64_t completion_tokens) {
  const unsigned __int128 total = static_cast<unsigned __int128>(prompt_tokens) * prices.prompt_micros_per_mtok +
                                  static_cast<unsigned __int128>(completion_tokens) * prices.completion_micros_per_mtok;
  const unsigned __int128 micros = (total + 999'999) / 1'000'000;
  return micros > UINT64_MAX ? UINT64_MAX : static_cast<uint64_t>(micros);
}

std::variant<std::string, Refusal> KeyGate::authenticate(const std::string* authorization) const {
  if (authorization == nullptr) {
    return unauthorized(
        "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer "
        "auth (i.e. Authorization: Bearer YOUR_KEY). Keys are made with `idlefleet admin keys create`.",
        "");
  }
  const std::string_view h = *authorization;
  const size_t sp = h.find(' ');
  std::string_view token = sp == std::string_view::npos ? std::string_view() : h.substr(sp + 1);
  while (!token.empty() && token.front() == ' ') token.remove_prefix(1);
  while (!token.empty() && (token.back() == ' ' || token.back() == '\t')) token.remove_suffix(1);
  if (sp == std::string_view::npos || !ascii_iequals(h.substr(0, sp), "bearer") || !store::secret_well_formed(token)) {
    return unauthorized(
        "Incorrect API key provided: the Authorization header must be 'Bearer sk-idf-' followed by 64 hex digits.",
        "invalid_api_key");
  }
  const std::string hash = hash_key(store::sha256(token));
  std::lock_guard<std::mutex> lock(mu_);
  auto it = id_by_hash_.find(hash);
  if (it == id_by_hash_.end()) {
    return unauthorized("Incorrect API key provided. Keys are made with `idlefleet admin keys create`.",
                        "invalid_api_key");
  }
  const store::ApiKey& key = by_id_.at(it->second);
  if (key.revoked()) {
    return unauthorized("The API key " + key.id + " has been revoked. Ask for a new key.", "invalid_api_key");
  }
  return key.id;
}

std::optional<Refusal> KeyGate::authorize(const std::string& key_id, std::string_view scope) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = by_id_.find(key_id);
  if (it == by_id_.end() || it->second.allows(scope)) return std::nullopt;
  Refusal r;
  r.error.status = 403;
  r.error.type = "invalid_request_error";
  r.error.code = "insufficient_permissions";
  r.error.message = "You have insufficient permissions for this operation: the API key " + key_id +
                    " may call " + it->second.scopes + ", not " + std::string(scope) +
                    ". Make a key with the scope: `idlefleet admin keys create --scopes ...`.";
  return r;
}

std::optional<Refusal> KeyGate::admit(const std::string& key_id, uint64_t prompt_tokens, core::TimeMs now) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = by_id_.find(key_id);
  // Revoked (or gone) since it was authenticated moments ago.
  if (it == by_id_.end() || it->second.revoked()) {
    return unauthorized("The API key " + key_id + " has been revoked. Ask for a new key.", "invalid_api_key");
  }
  store::ApiKey& key = it->second;
  if (key.spend_limit_micros > 0 && key.usage.spend_micros >= key.spend_limit_micros) {
    Refusal r;
    r.error.status = 429;
    r.error.type = "insufficient_quota";
    r.error.code = "insufficient_quota";
    r.error.message = "You exceeded your current quota: key " + key.id + " has spent " +
                      std::to_string(key.usage.spend_micros) + " of its limit of " +
                      std::to_string(key.spend_limit_micros) + " micro-units.";
    return r;
  }
  const core::RateDecision d = limiter_.admit(key.id, key.limits, prompt_tokens, now);
  if (!d.allowed) {
    const bool requests = d.refused_by == core::RateLimitKind::kRequests;
    Refusal r;
    r.error.status = 429;
    r.error.type = requests ? "requests" : "tokens";
    r.error.code = "rate_limit_exceeded";
    r.error.message = std::string("Rate limit reached for ") + key.id + " on " +
                      (requests ? "requests per min (RPM): Limit " + std::to_string(key.limits.requests_per_minute)
                                : "tokens per min (TPM): Limit " + std::to_string(key.limits.tokens_per_minute) +
                                      ", Requested " + std::to_string(prompt_tokens)) +
                      ". Please try again in " + std::to_string(d.retry_after_s) + "s.";
    r.retry_after_s = d.retry_after_s;
    return r;
  }
  key.usage.requests = saturating_add(key.usage.requests, 1);
  pending_[key.id].requests += 1;
  return std::nullopt;
}

void KeyGate::record_usage(const std::string& key_id, uint64_t prompt_tokens, uint64_t completion_tokens,
                           core::TimeMs now, const Prices* prices) {
  const store::KeyUsage d{0, prompt_tokens, completion_tokens,
                          job_spend_micros(prices != nullptr ? *prices : prices_, prompt_tokens, completion_tokens)};
  std::lock_guard<std::mutex> lock(mu_);
  auto it = by_id_.find(key_id);
  if (it == by_id_.end()) return;  // deleted from the file meanwhile: nobody to bill
  add_usage(it->second.usage, d);
  add_usage(pending_[key_id], d);
  limiter_.charge_tokens(key_id, it->second.limits, completion_tokens, now);
}

Status KeyGate::sync(store::KeyStore& store) {
  std::map<std::string, store::KeyUsage> taken;
  {
    std::lock_guard<std::mutex> lock(mu_);
    taken.swap(pending_);
  }
  if (!taken.empty()) {
    std::vector<store::UsageDelta> deltas;
    deltas.reserve(taken.size());
    for (const auto& [id, u] : taken) deltas.push_back({id, u});
    if (Status s = store.add_usage(deltas); !s) {
      std::lock_guard<std::mutex> lock(mu_);
      for (const auto& [id, u] : taken) add_usage(pending_[id], u);
      return s;
    }
  }
  auto version = store.data_version();
  if (!version) return Unexpected(version.error());
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (data_version_ && *data_version_ == *version) return {};
  }
  auto keys = store.list();
  if (!keys) return Unexpected(keys.error());
  std::lock_guard<std::mutex> lock(mu_);
  std::map<std::string, store::ApiKey> by_id;
  std::map<std::string, std::string> id_by_hash;
  for (store::ApiKey& k : *keys) {
    // The file holds what was written up to this sync; usage since then is pending.
    auto p = pending_.find(k.id);
    if (p != pending_.end()) add_usage(k.usage, p->second);
    id_by_hash[hash_key(k.secret_sha256)] = k.id;
    std::string id = k.id;
    by_id.emplace(std::move(id), std::move(k));
  }
  for (const auto& [id, k] : by_id_) {
    if (by_id.count(id) == 0) limiter_.forget(id);
  }
  by_id_.swap(by_id);
  id_by_hash_.swap(id_by_hash);
  data_version_ = *version;
  return {};
}

size_t KeyGate::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return by_id_.size();
}

}  // namespace idlefleet::coordinator
