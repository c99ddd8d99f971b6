#include "core/verification.h"

#include <algorithm>
#include <cstdio>

#include "common/check.h"
#include "common/random.h"

namespace idlefleet::core {
namespace {

// FNV-1a over the bytes: a stable 64-bit name for a job id.
uint64_t fnv1a(std::string_view s) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : s) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return h;
}

}  // namespace

Status validate_verification(const VerificationConfig& c) {
  auto bad = [](std::string why) -> Status { return Unexpected(ErrorCode::kInvalidArgument, std::move(why)); };
  if (!(c.sample_floor >= 0.0 && c.sample_floor <= 1.0)) return bad("sample_floor must be in [0, 1]");
  if (c.warmup_checks > 1000) return bad("warmup_checks must be at most 1000");
  if (c.standing_initial < 0 || c.standing_initial > kStandingMax) return bad("standing_initial must be in [0, 1000]");
  if (c.standing_agree < 0 || c.standing_agree > kStandingMax) return bad("standing_agree must be in [0, 1000]");
  if (c.standing_fault < 1 || c.standing_fault > kStandingMax) return bad("standing_fault must be in [1, 1000]");
  if (c.quarantine_below < 0 || c.quarantine_below > kStandingMax) return bad("quarantine_below must be in [0, 1000]");
  if (c.quarantine_below > c.standing_initial) {
    return bad("quarantine_below must not exceed standing_initial (a new vehicle would be quarantined)");
  }
  if (c.check_wait_ms_max < kSecondMs || c.check_wait_ms_max > 7 * 24 * kHourMs) {
    return bad("check_wait_ms_max must be 1 s to 7 days");
  }
  if (c.checks_live_max < 1 || c.checks_live_max > 1'000'000) return bad("checks_live_max must be 1 to 1000000");
  return {};
}

VehicleStanding initial_standing(const VerificationConfig& c) {
  VehicleStanding s;
  s.standing = c.standing_initial;
  return s;
}

double check_probability(const VehicleStanding& s, const VerificationConfig& c) {
  if (s.agreed_since_fault < c.warmup_checks || s.standing < c.standing_initial) return 1.0;
  if (s.agreed_since_fault == 0) return 1.0;
  const double p = static_cast<double>(c.warmup_checks) / static_cast<double>(s.agreed_since_fault);
  return std::clamp(p, c.sample_floor, 1.0);
}

bool draw_check(uint64_t seed, std::string_view job_id, double p) {
  if (p >= 1.0) return true;
  if (p <= 0.0) return false;
  return to_unit_double(counter_random(seed, fnv1a(job_id))) < p;
}

std::string check_job_id(uint64_t seed, std::string_view job_id, uint32_t round) {
  DCHECK(round >= 1);
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx",
                static_cast<unsigned long long>(counter_random(seed ^ 0x5eedc4ec4ULL, fnv1a(job_id))));
  return std::string(kCheckJobIdPrefix) + hex + "-" + std::to_string(round);
}

std::optional<uint64_t> first_difference(std::span<const int32_t> a, std::span<const int32_t> b) {
  const size_t n = std::min(a.size(), b.size());
  for (size_t i = 0; i < n; ++i) {
    if (a[i] != b[i]) return i;
  }
  if (a.size() == b.size()) return std::nullopt;
  return n;
}

const Attempt* attempt_at(const std::vector<Attempt>& attempts, uint64_t index) {
  for (const Attempt& a : attempts) {
    if (a.tokens_appended > 0 && a.tokens_at_start <= index && index < a.tokens_at_start + a.tokens_appended) return &a;
  }
  for (auto it = attempts.rbegin(); it != attempts.rend(); ++it) {
    if (it->end == AttemptEnd::kCompleted) return &*it;
  }
  return nullptr;
}

std::vector<std::string> producers(const std::vector<Attempt>& attempts) {
  std::vector<std::string> out;
  for (const Attempt& a : attempts) {
    if (a.tokens_appended == 0 && a.end != AttemptEnd::kCompleted) continue;
    if (std::find(out.begin(), out.end(), a.vehicle_id) == out.end()) out.push_back(a.vehicle_id);
  }
  return out;
}

void record_agreement(VehicleStanding* s, const VerificationConfig& c) {
  s->standing = std::min(kStandingMax, s->standing + c.standing_agree);
  ++s->checks_agreed;
  ++s->agreed_since_fault;
}

bool record_fault(VehicleStanding* s, const VerificationConfig& c, std::string_view reason, TimeMs now) {
  s->standing = std::max(0, s->standing - c.standing_fault);
  ++s->checks_faulted;
  s->agreed_since_fault = 0;
  if (s->quarantined || s->standing >= c.quarantine_below) return false;
  s->quarantined = true;
  s->quarantine_reason = std::string(reason.substr(0, kQuarantineReasonBytesMax));
  s->quarantined_at = now;
  return true;
}

}  // namespace idlefleet::core
