#include "store/vehicle_store.h"

#include <utility>

#include "common/crypto.h"
#include "store/open.h"
#include "store/pg_db.h"
#include "store/pg_vehicle_store.h"
#include "store/sqlite_vehicle_store.h"

namespace idlefleet::store {

Result<std::unique_ptr<VehicleStore>> VehicleStore::open(const std::string& location) {
  return open_store_at<VehicleStore, PgVehicleStore, SqliteVehicleStore>(location);
}

namespace vehicle_rows {

bool public_key_well_formed(std::string_view key) {
  return key.size() == 64 && key.find_first_not_of("0123456789abcdef") == std::string_view::npos;
}

std::string digest(std::string_view secret) {
  const Sha256Digest d = sha256_of(secret);
  return std::string(reinterpret_cast<const char*>(d.data()), d.size());
}

Status check_vehicle(const VehicleRecord& v) {
  IF_RETURN_IF_ERROR(check_enrolment(v.vehicle_id, v.public_key));
  if (v.owner_id.size() > core::kIdBytesMax) return Unexpected(ErrorCode::kInvalidArgument, "owner id too long");
  return {};
}

Status check_enrolment(const std::string& vehicle_id, const std::string& public_key) {
  if (!core::valid_vehicle_id(vehicle_id)) return Unexpected(ErrorCode::kInvalidArgument, "bad vehicle id");
  if (!public_key_well_formed(public_key)) {
    return Unexpected(ErrorCode::kInvalidArgument, "a public key is 64 lower-case hex digits");
  }
  return {};
}

Status check_vehicle_row(const VehicleRecord& v) {
  if (!core::valid_vehicle_id(v.vehicle_id) || !public_key_well_formed(v.public_key) ||
      v.owner_id.size() > core::kIdBytesMax) {
    return Unexpected(ErrorCode::kCorrupt, "vehicle row '" + v.vehicle_id.substr(0, 64) + "' is damaged");
  }
  return {};
}

Status check_rows(size_t rows, size_t max, const char* what) {
  if (rows <= max) return {};
  return Unexpected(ErrorCode::kCorrupt, "more than " + std::to_string(max) + " " + what);
}

Status check_policy(const std::string& vehicle_id, const core::OwnerPolicy& policy) {
  if (!core::valid_vehicle_id(vehicle_id)) return Unexpected(ErrorCode::kInvalidArgument, "bad vehicle id");
  if (auto st = policy.validate(); !st) return Unexpected(st.error());
  return {};
}

Result<StoredPolicy> policy_row(const std::string& vehicle_id, std::string_view policy_json,
                                core::TimeMs updated_at) {
  auto p = core::decode_policy(policy_json);
  if (!p) {
    return Unexpected(ErrorCode::kCorrupt,
                      "the policy row of vehicle '" + vehicle_id.substr(0, 64) + "' is damaged: " + p.error().message);
  }
  return StoredPolicy{std::move(*p), updated_at};
}

Result<StoredReceipt> receipt_row(const std::string& job_id, size_t receipts, std::string_view receipt_json,
                                  int64_t attempt, std::string owner_id, core::TimeMs accepted_at) {
  if (receipts >= kReceiptsPerJobMax) return Unexpected(ErrorCode::kCorrupt, "too many receipts for " + job_id);
  auto m = core::decode_message(receipt_json);
  const auto* r = m ? std::get_if<core::ReceiptMessage>(&*m) : nullptr;
  if (r == nullptr || r->job_id != job_id || static_cast<int64_t>(r->attempt) != attempt) {
    return Unexpected(ErrorCode::kCorrupt, "receipt row for job " + job_id.substr(0, 64) + " attempt " +
                                               std::to_string(attempt) + " is damaged");
  }
  return StoredReceipt{*r, std::move(owner_id), accepted_at};
}

Result<VehicleStore::ReceiptKey> receipt_key_row(std::string job_id, int64_t attempt, bool metered) {
  if (attempt < 1 || attempt > UINT32_MAX) return Unexpected(ErrorCode::kCorrupt, "a receipt row's attempt is damaged");
  return VehicleStore::ReceiptKey{std::move(job_id), static_cast<uint32_t>(attempt), metered};
}

Status check_new_owner(const std::string& name, uint64_t owners) {
  if (name.empty() || name.size() > kOwnerNameBytesMax) {
    return Unexpected(ErrorCode::kInvalidArgument, "an owner's name is 1 to 128 bytes");
  }
  for (char c : name) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      return Unexpected(ErrorCode::kInvalidArgument, "an owner's name must not contain control characters");
    }
  }
  if (owners >= kOwnersMax) return Unexpected(ErrorCode::kOutOfRange, "there are already kOwnersMax owners");
  return {};
}

std::pair<Owner, std::string> new_owner(const std::string& name, core::TimeMs now) {
  Owner o{"own_" + random_hex(8), name, now};
  return {std::move(o), std::string(kOwnerTokenPrefix) + random_hex(32)};
}

Status check_owner_row(const Owner& o) {
  if (o.id.empty() || o.id.size() > core::kIdBytesMax || o.name.size() > kOwnerNameBytesMax) {
    return Unexpected(ErrorCode::kCorrupt, "owner row '" + o.id.substr(0, 64) + "' is damaged");
  }
  return {};
}

bool owner_token_well_formed(std::string_view token) {
  return token.size() == kOwnerTokenPrefix.size() + 64 &&
         token.substr(0, kOwnerTokenPrefix.size()) == kOwnerTokenPrefix;
}

Status check_open_codes(const std::string& owner_id, uint64_t open_codes) {
  if (open_codes < kOpenCodesPerOwnerMax) return {};
  return Unexpected(ErrorCode::kOutOfRange, "owner " + owner_id + " already has " +
                                                std::to_string(kOpenCodesPerOwnerMax) + " unused enrolment codes");
}

std::string new_code() { return std::string(kEnrolmentCodePrefix) + random_hex(16); }

Result<VehicleRecord> enrolment(const CodeRow& code, const std::optional<VehicleRecord>& existing,
                                const std::string& vehicle_id, const std::string& public_key, core::TimeMs now) {
  if (!code.used_by.empty()) {
    return Unexpected(ErrorCode::kAlreadyExists, "the enrolment code was already used (by " + code.used_by + ")");
  }
  if (now >= code.expires_at) {
    return Unexpected(ErrorCode::kOutOfRange, "the enrolment code expired; ask for a new one");
  }
  VehicleRecord v{vehicle_id, public_key, code.owner_id, now};
  if (existing) {
    if (existing->public_key != public_key) {
      return Unexpected(ErrorCode::kAlreadyExists, "vehicle " + vehicle_id + " is pinned to another key");
    }
    if (!existing->owner_id.empty() && existing->owner_id != code.owner_id) {
      return Unexpected(ErrorCode::kAlreadyExists, "vehicle " + vehicle_id + " is enrolled to another owner");
    }
    v.pinned_at = existing->pinned_at;
  }
  return v;
}

Status check_standing(const std::string& vehicle_id, const core::VehicleStanding& s) {
  if (!core::valid_vehicle_id(vehicle_id)) return Unexpected(ErrorCode::kInvalidArgument, "bad vehicle id");
  if (s.standing < 0 || s.standing > core::kStandingMax ||
      s.quarantine_reason.size() > core::kQuarantineReasonBytesMax) {
    return Unexpected(ErrorCode::kInvalidArgument, "standing of vehicle " + vehicle_id + " out of range");
  }
  return {};
}

Result<core::VehicleStanding> standing_row(const std::string& vehicle_id, int64_t standing, int64_t agreed,
                                           int64_t faulted, int64_t since, int64_t quarantined,
                                           std::string quarantine_reason, core::TimeMs quarantined_at) {
  constexpr int64_t kCountMax = UINT32_MAX;
  if (!core::valid_vehicle_id(vehicle_id) || standing < 0 || standing > core::kStandingMax || agreed < 0 ||
      agreed > kCountMax || faulted < 0 || faulted > kCountMax || since < 0 || since > kCountMax ||
      (quarantined != 0 && quarantined != 1) || quarantine_reason.size() > core::kQuarantineReasonBytesMax) {
    return Unexpected(ErrorCode::kCorrupt, "standing row '" + vehicle_id.substr(0, 64) + "' is damaged");
  }
  core::VehicleStanding s;
  s.standing = static_cast<int32_t>(standing);
  s.checks_agreed = static_cast<uint32_t>(agreed);
  s.checks_faulted = static_cast<uint32_t>(faulted);
  s.agreed_since_fault = static_cast<uint32_t>(since);
  s.quarantined = quarantined == 1;
  s.quarantine_reason = std::move(quarantine_reason);
  s.quarantined_at = quarantined_at;
  return s;
}

}  // namespace vehicle_rows
}  // namespace idlefleet::store
