#include "store/vehicle_store.h"

#include <sqlite3.h>

#include "common/crypto.h"
#include "store/sqlite_db.h"

namespace idlefleet::store {
namespace {

constexpr const char* kMigrations[] = {
    R"sql(
CREATE TABLE vehicles (
  vehicle_id TEXT PRIMARY KEY NOT NULL,
  public_key TEXT NOT NULL,
  owner_id TEXT NOT NULL,
  pinned_at INTEGER NOT NULL
) STRICT;
CREATE TABLE receipts (
  job_id TEXT NOT NULL,
  attempt INTEGER NOT NULL,
  vehicle_id TEXT NOT NULL,
  owner_id TEXT NOT NULL,
  receipt_json TEXT NOT NULL,
  accepted_at INTEGER NOT NULL,
  PRIMARY KEY (job_id, attempt)
) STRICT;
CREATE INDEX receipts_by_vehicle ON receipts(vehicle_id, accepted_at);
)sql",
    R"sql(
CREATE TABLE owners (
  id TEXT PRIMARY KEY NOT NULL,
  name TEXT NOT NULL,
  token_sha256 BLOB NOT NULL UNIQUE,
  created_at INTEGER NOT NULL
) STRICT;
CREATE TABLE enrolment_codes (
  code_sha256 BLOB PRIMARY KEY NOT NULL,
  owner_id TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL,
  used_by TEXT NOT NULL,
  used_at INTEGER NOT NULL
) STRICT;
CREATE INDEX vehicles_by_owner ON vehicles(owner_id, vehicle_id);
)sql",
    R"sql(
CREATE TABLE vehicle_policies (
  vehicle_id TEXT PRIMARY KEY NOT NULL,
  policy_json TEXT NOT NULL,
  updated_at INTEGER NOT NULL
) STRICT;
)sql",
    R"sql(
CREATE TABLE standings (
  vehicle_id TEXT PRIMARY KEY NOT NULL,
  standing INTEGER NOT NULL,
  checks_agreed INTEGER NOT NULL,
  checks_faulted INTEGER NOT NULL,
  agreed_since_fault INTEGER NOT NULL,
  quarantined INTEGER NOT NULL,
  quarantine_reason TEXT NOT NULL,
  quarantined_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
) STRICT;
)sql",
};

std::string digest(std::string_view secret) {
  const Sha256Digest d = sha256_of(secret);
  return std::string(reinterpret_cast<const char*>(d.data()), d.size());
}

bool hex64(const std::string& s) {
  return s.size() == 64 && s.find_first_not_of("0123456789abcdef") == std::string::npos;
}

Result<VehicleRecord> read_vehicle(const Statement& st) {
  VehicleRecord v;
  v.vehicle_id = st.column_text(0);
  v.public_key = st.column_text(1);
  v.owner_id = st.column_text(2);
  v.pinned_at = st.column_int(3);
  if (!core::valid_vehicle_id(v.vehicle_id) || !hex64(v.public_key) || v.owner_id.size() > core::kIdBytesMax) {
    return Unexpected(ErrorCode::kCorrupt, "vehicle row '" + v.vehicle_id.substr(0, 64) + "' is damaged");
  }
  return v;
}

}  // namespace

VehicleStore::~VehicleStore() { sqlite3_close_v2(db_); }

Unexpected VehicleStore::error(int rc, const std::string& what) const {
  return sqlite_error(db_, rc, "vehicle store '" + path_ + "'", what);
}

Result<std::unique_ptr<VehicleStore>> VehicleStore::open(const std::string& path) {
  sqlite3* db = nullptr;
  const std::string label = "vehicle store '" + path + "'";
  IF_RETURN_IF_ERROR(open_database(path, kMigrations, label, &db));
  std::unique_ptr<VehicleStore> store(new VehicleStore(path, db));
  IF_RETURN_IF_ERROR(sqlite_exec(db, "PRAGMA synchronous = FULL", label, "setting pragmas"));
  return store;
}

Result<std::vector<VehicleRecord>> VehicleStore::vehicles() {
  Statement st(db_, "SELECT vehicle_id, public_key, owner_id, pinned_at FROM vehicles ORDER BY vehicle_id");
  if (st.prepared() != SQLITE_OK) return error(st.prepared(), "listing vehicles");
  std::vector<VehicleRecord> out;
  for (;;) {
    const int rc = st.step();
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) return error(rc, "listing vehicles");
    if (out.size() >= kVehiclesMax) return Unexpected(ErrorCode::kCorrupt, "more than kVehiclesMax vehicles");
    auto v = read_vehicle(st);
    if (!v) return Unexpected(v.error());
    out.push_back(std::move(*v));
  }
  return out;
}

Result<std::optional<VehicleRecord>> VehicleStore::vehicle(const std::string& vehicle_id) {
  Statement st(db_, "SELECT vehicle_id, public_key, owner_id, pinned_at FROM vehicles WHERE vehicle_id = ?1");
  if (st.prepared() != SQLITE_OK) return error(st.prepared(), "reading a vehicle");
  st.text(1, vehicle_id);
  const int rc = st.step();
  if (rc == SQLITE_DONE) return std::optional<VehicleRecord>();
  if (rc != SQLITE_ROW) return error(rc, "reading a vehicle");
  auto v = read_vehicle(st);
  if (!v) return Unexpected(v.error());
  return std::optional<VehicleRecord>(std::move(*v));
}

Status VehicleStore::put_vehicle(const VehicleRecord& v) {
  if (!core::valid_vehicle_id(v.vehicle_id)) return Unexpected(ErrorCode::kInvalidArgument, "bad vehicle id");
  if (!hex64(v.public_key)) {
    return Unexpected(ErrorCode::kInvalidArgument, "a public key is 64 lower-case hex digits");
  }
  if (v.owner_id.size() > core::kIdBytesMax) return Unexpected(ErrorCode::kInvalidArgument, "owner id too long");
  auto existing = vehicle(v.vehicle_id);
  if (!existing) return Unexpected(existing.error());
  if (*existing) {
    if ((*existing)->public_key == v.public_key) return {};
    return Unexpected(ErrorCode::kAlreadyExists, "vehicle " + v.vehicle_id + " is pinned to another key");
  }
  Statement st(db_, "INSERT INTO vehicles (vehicle_id, public_key, owner_id, pinned_at) VALUES (?1, ?2, ?3, ?4)");
  if (st.prepared() != SQLITE_OK) return error(st.prepared(), "pinning a vehicle");
  st.text(1, v.vehicle_id);
  st.text(2, v.public_key);
  st.text(3, v.owner_id);
  st.integer(4, v.pinned_at);
  const int rc = st.step();
  if (rc != SQLITE_DONE) return error(rc, "pinning a vehicle");
  return {};
}

Result<std::optional<StoredPolicy>> VehicleStore::policy(const std::string& vehicle_id) {
  Statement st(db_, "SELECT policy_json, updated_at FROM vehicle_policies WHERE vehicle_id = ?1");
  if (st.prepared() != SQLITE_OK) return error(st.prepared(), "reading a policy");
  st.text(1, vehicle_id);
  const int rc = st.step();
  if (rc == SQLITE_DONE) return std::optional<StoredPolicy>();
  if (rc != SQLITE_ROW) return error(rc, "reading a policy");
  auto p = core::decode_policy(st.column_text(0));
  if (!p) {
    return Unexpected(ErrorCode::kCorrupt,
                      "the policy row of vehicle '" + vehicle_id.substr(0, 64) + "' is damaged: " + p.error().message);
  }
  return std::optional<StoredPolicy>(StoredPolicy{std::move(*p), st.column_int(1)});
}

Status VehicleStore::put_policy(const std::string& vehicle_id, const core::OwnerPolicy& policy, core::TimeMs now) {
  if (!core::valid_vehicle_id(vehicle_id)) return Unexpected(ErrorCode::kInvalidArgument, "bad vehicle id");
  if (auto st = policy.validate(); !st) return Unexpected(st.error());
  Statement st(db_,
               "INSERT INTO vehicle_policies (vehicle_id, policy_json, updated_at) VALUES (?1, ?2, ?3) "
               "ON CONFLICT (vehicle_id) DO UPDATE SET policy_json = excluded.policy_json, "
               "updated_at = excluded.updated_at");
  if (st.prepared() != SQLITE_OK) return error(st.prepared(), "storing a policy");
  st.text(1, vehicle_id);
  st.text(2, core::encode_policy(policy));
  st.integer(3, now);
  const int rc = st.step();
  if (rc != SQLITE_DONE) return error(rc, "storing a policy");
  return {};
}

Result<bool> VehicleStore::put_receipt(const core::ReceiptMessage& r, const std::string& owner_id,
                                       core::TimeMs accepted_at) {
  Statement st(db_,
               "INSERT OR IGNORE INTO receipts (job_id, attempt, vehicle_id, owner_id, receipt_json, accepted_at) "
               "VALUES (?1, ?2, ?3, ?4, ?5, ?6)");
  if (st.prepared() != SQLITE_OK) return error(st.prepared(), "storing a receipt");
  st.text(1, r.job_id);
  st.integer(2, r.attempt);
  st.text(3, r.vehicle_id);
  st.text(4, owner_id);
  st.text(5, core::encode_message(r));
  st.integer(6, accepted_at);
  const int rc = st.step();
  if (rc != SQLITE_DONE) return error(rc, "storing a receipt");
  return sqlite3_changes(db_) == 1;
}

Result<std::vector<StoredReceipt>> VehicleStore::receipts_for_job(const std::string& job_id) {
  Statement st(db_,
               "SELECT receipt_json, owner_id, accepted_at, attempt FROM receipts WHERE job_id = ?1 ORDER BY attempt");
  if (st.prepared() != SQLITE_OK) return error(st.prepared(), "reading receipts");
  st.text(1, job_id);
  std::vector<StoredReceipt> out;
  for (;;) {
    const int rc = st.step();
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) return error(rc, "reading receipts");
    if (out.size() >= kReceiptsPerJobMax) return Unexpected(ErrorCode::kCorrupt, "too many receipts for " + job_id);
    auto m = core::decode_message(st.column_text(0));
    const auto* r = m ? std::get_if<core::ReceiptMessage>(&*m) : nullptr;
    if (r == nullptr || r->job_id != job_id || static_cast<int64_t>(r->attempt) != st.column_int(3)) {
      return Unexpected(ErrorCode::kCorrupt, "receipt row for job " + job_id.substr(0, 64) + " attempt " +
                                                 std::to_string(st.column_int(3)) + " is damaged");
    }
    out.push_back({*r, st.column_text(1), st.column_int(2)});
  }
  return out;
}

Result<std::vector<VehicleStore::ReceiptKey>> VehicleStore::receipt_keys() {
  Statement st(db_,
               "SELECT job_id, attempt, "
               "json_extract(receipt_json, '$.energy_mwh') > 0 OR json_extract(receipt_json, '$.wear_micro_hours') > 0 "
               "FROM receipts ORDER BY job_id, attempt");
  if (st.prepared() != SQLITE_OK) return error(st.prepared(), "listing receipts");
  std::vector<ReceiptKey> out;
  for (;;) {
    const int rc = st.step();
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) return error(rc, "listing receipts");
    if (out.size() >= kReceiptKeysMax) return Unexpected(ErrorCode::kOutOfRange, "more than kReceiptKeysMax receipts");
    const int64_t attempt = st.column_int(1);
    if (attempt < 1 || attempt > UINT32_MAX) return Unexpected(ErrorCode::kCorrupt, "a receipt row's attempt is damaged");
    out.push_back({st.column_text(0), static_cast<uint32_t>(attempt), st.column_int(2) != 0});
  }
  return out;
}

Result<std::pair<Owner, std::string>> VehicleStore::create_owner(const std::string& name, core::TimeMs now) {
  if (name.empty() || name.size() > kOwnerNameBytesMax) {
    return Unexpected(ErrorCode::kInvalidArgument, "an owner's name is 1 to 128 bytes");
  }
  for (char c : name) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      return Unexpected(ErrorCode::kInvalidArgument, "an owner's name must not contain control characters");
    }
  }
  Statement count(db_, "SELECT COUNT(*) FROM owners");
  if (count.prepared() != SQLITE_OK || count.step() != SQLITE_ROW) return error(SQLITE_ERROR, "counting owners");
  if (static_cast<size_t>(count.column_int(0)) >= kOwnersMax) {
    return Unexpected(ErrorCode::kOutOfRange, "there are already kOwnersMax owners");
  }
  Owner o{"own_" + random_hex(8), name, now};
  const std::string token = std::string(kOwnerTokenPrefix) + random_hex(32);
  Statement st(db_, "INSERT INTO owners (id, name, token_sha256, created_at) VALUES (?1, ?2, ?3, ?4)");
  if (st.prepared() != SQLITE_OK) return error(st.prepared(), "creating an owner");
  st.text(1, o.id);
  st.text(2, o.name);
  st.blob(3, digest(token));
  st.integer(4, now);
  const int rc = st.step();
  if (rc != SQLITE_DONE) return error(rc, "creating an owner");
  return std::make_pair(o, token);
}

Result<std::vector<Owner>> VehicleStore::owners() {
  Statement st(db_, "SELECT id, name, created_at FROM owners ORDER BY created_at, id");
  if (st.prepared() != SQLITE_OK) return error(st.prepared(), "listing owners");
  std::vector<Owner> out;
  for (;;) {
    const int rc = st.step();
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) return error(rc, "listing owners");
    if (out.size() >= kOwnersMax) return Unexpected(ErrorCode::kCorrupt, "more than kOwnersMax owners");
    out.push_back({st.column_text(0), st.column_text(1), st.column_int(2)});
  }
  return out;
}

Result<std::optional<Owner>> VehicleStore::owner_by_token(std::string_view token) {
  if (token.size() != kOwnerTokenPrefix.size() + 64 || token.substr(0, kOwnerTokenPrefix.size()) != kOwnerTokenPrefix) {
    return std::optional<Owner>();
  }
  Statement st(db_, "SELECT id, name, created_at FROM owners WHERE token_sha256 = ?1");
  if (st.prepared() != SQLITE_OK) return error(st.prepared(), "finding an owner");
  st.blob(1, digest(token));
  const int rc = st.step();
  if (rc == SQLITE_DONE) return std::optional<Owner>();
  if (rc != SQLITE_ROW) return error(rc, "finding an owner");
  return std::optional<Owner>(Owner{st.column_text(0), st.column_text(1), st.column_int(2)});
}

Result<std::string> VehicleStore::create_code(const std::string& owner_id, core::TimeMs now) {
  Statement open_codes(db_, "SELECT COUNT(*) FROM enrolment_codes WHERE owner_id = ?1 AND used_by = '' AND expires_at > ?2");
  if (open_codes.prepared() != SQLITE_OK) return error(open_codes.prepared(), "counting codes");
  open_codes.text(1, owner_id);
  open_codes.integer(2, now);
  if (open_codes.step() != SQLITE_ROW) return error(SQLITE_ERROR, "counting codes");
  if (static_cast<size_t>(open_codes.column_int(0)) >= kOpenCodesPerOwnerMax) {
    return Unexpected(ErrorCode::kOutOfRange, "owner " + owner_id + " already has " +
                                                  std::to_string(kOpenCodesPerOwnerMax) + " unused enrolment codes");
  }
  const std::string code = std::string(kEnrolmentCodePrefix) + random_hex(16);
  Statement st(db_,
               "INSERT INTO enrolment_codes (code_sha256, owner_id, created_at, expires_at, used_by, used_at) "
               "VALUES (?1, ?2, ?3, ?4, '', 0)");
  if (st.prepared() != SQLITE_OK) return error(st.prepared(), "creating a code");
  st.blob(1, digest(code));
  st.text(2, owner_id);
  st.integer(3, now);
  st.integer(4, now + kEnrolmentCodeTtlMs);
  const int rc = st.step();
  if (rc != SQLITE_DONE) return error(rc, "creating a code");
  return code;
}

Result<VehicleRecord> VehicleStore::enrol(std::string_view code, const std::string& vehicle_id,
                                          const std::string& public_key, core::TimeMs now) {
  if (!core::valid_vehicle_id(vehicle_id)) return Unexpected(ErrorCode::kInvalidArgument, "bad vehicle id");
  if (!hex64(public_key)) return Unexpected(ErrorCode::kInvalidArgument, "a public key is 64 lower-case hex digits");
  const std::string label = "vehicle store '" + path_ + "'";
  IF_RETURN_IF_ERROR(sqlite_exec(db_, "BEGIN IMMEDIATE", label, "starting an enrolment"));
  auto body = [&]() -> Result<VehicleRecord> {
    Statement find(db_, "SELECT owner_id, expires_at, used_by FROM enrolment_codes WHERE code_sha256 = ?1");
    if (find.prepared() != SQLITE_OK) return error(find.prepared(), "finding a code");
    find.blob(1, digest(code));
    int rc = find.step();
    if (rc == SQLITE_DONE) return Unexpected(ErrorCode::kNotFound, "no such enrolment code");
    if (rc != SQLITE_ROW) return error(rc, "finding a code");
    const std::string owner = find.column_text(0);
    const int64_t expires_at = find.column_int(1);
    const std::string used_by = find.column_text(2);
    if (!used_by.empty()) {
      return Unexpected(ErrorCode::kAlreadyExists, "the enrolment code was already used (by " + used_by + ")");
    }
    if (now >= expires_at) return Unexpected(ErrorCode::kOutOfRange, "the enrolment code expired; ask for a new one");
    auto existing = vehicle(vehicle_id);
    if (!existing) return Unexpected(existing.error());
    VehicleRecord v{vehicle_id, public_key, owner, now};
    if (*existing) {
      if ((*existing)->public_key != public_key) {
        return Unexpected(ErrorCode::kAlreadyExists, "vehicle " + vehicle_id + " is pinned to another key");
      }
      if (!(*existing)->owner_id.empty() && (*existing)->owner_id != owner) {
        return Unexpected(ErrorCode::kAlreadyExists, "vehicle " + vehicle_id + " is enrolled to another owner");
      }
      v.pinned_at = (*existing)->pinned_at;
    }
    Statement put(db_,
                  "INSERT INTO vehicles (vehicle_id, public_key, owner_id, pinned_at) VALUES (?1, ?2, ?3, ?4) "
                  "ON CONFLICT (vehicle_id) DO UPDATE SET owner_id = excluded.owner_id");
    if (put.prepared() != SQLITE_OK) return error(put.prepared(), "enrolling a vehicle");
    put.text(1, v.vehicle_id);
    put.text(2, v.public_key);
    put.text(3, v.owner_id);
    put.integer(4, v.pinned_at);
    if ((rc = put.step()) != SQLITE_DONE) return error(rc, "enrolling a vehicle");
    Statement use(db_, "UPDATE enrolment_codes SET used_by = ?1, used_at = ?2 WHERE code_sha256 = ?3");
    if (use.prepared() != SQLITE_OK) return error(use.prepared(), "using a code");
    use.text(1, vehicle_id);
    use.integer(2, now);
    use.blob(3, digest(code));
    if ((rc = use.step()) != SQLITE_DONE) return error(rc, "using a code");
    return v;
  };
  auto result = body();
  if (!result) {
    sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    return result;
  }
  IF_RETURN_IF_ERROR(sqlite_exec(db_, "COMMIT", label, "committing an enrolment"));
  return result;
}

Result<std::vector<VehicleRecord>> VehicleStore::vehicles_of(const std::string& owner_id) {
  Statement st(db_,
               "SELECT vehicle_id, public_key, owner_id, pinned_at FROM vehicles WHERE owner_id = ?1 ORDER BY vehicle_id");
  if (st.prepared() != SQLITE_OK) return error(st.prepared(), "listing an owner's vehicles");
  st.text(1, owner_id);
  std::vector<VehicleRecord> out;
  for (;;) {
    const int rc = st.step();
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) return error(rc, "listing an owner's vehicles");
    if (out.size() >= kVehiclesMax) return Unexpected(ErrorCode::kCorrupt, "more than kVehiclesMax vehicles");
    auto v = read_vehicle(st);
    if (!v) return Unexpected(v.error());
    out.push_back(std::move(*v));
  }
  return out;
}

Status VehicleStore::put_standing(const std::string& vehicle_id, const core::VehicleStanding& s, core::TimeMs now) {
  if (!core::valid_vehicle_id(vehicle_id)) return Unexpected(ErrorCode::kInvalidArgument, "bad vehicle id");
  if (s.standing < 0 || s.standing > core::kStandingMax ||
      s.quarantine_reason.size() > core::kQuarantineReasonBytesMax) {
    return Unexpected(ErrorCode::kInvalidArgument, "standing of vehicle " + vehicle_id + " out of range");
  }
  Statement st(db_,
               "INSERT INTO standings (vehicle_id, standing, checks_agreed, checks_faulted, agreed_since_fault, "
               "quarantined, quarantine_reason, quarantined_at, updated_at) "
               "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) "
               "ON CONFLICT (vehicle_id) DO UPDATE SET standing = ?2, checks_agreed = ?3, checks_faulted = ?4, "
               "agreed_since_fault = ?5, quarantined = ?6, quarantine_reason = ?7, quarantined_at = ?8, "
               "updated_at = ?9");
  if (st.prepared() != SQLITE_OK) return error(st.prepared(), "writing a standing");
  st.text(1, vehicle_id);
  st.integer(2, s.standing);
  st.integer(3, s.checks_agreed);
  st.integer(4, s.checks_faulted);
  st.integer(5, s.agreed_since_fault);
  st.integer(6, s.quarantined ? 1 : 0);
  st.text(7, s.quarantine_reason);
  st.integer(8, s.quarantined_at);
  st.integer(9, now);
  const int rc = st.step();
  if (rc != SQLITE_DONE) return error(rc, "writing a standing");
  return {};
}

Result<std::vector<std::pair<std::string, core::VehicleStanding>>> VehicleStore::standings() {
  Statement st(db_,
               "SELECT vehicle_id, standing, checks_agreed, checks_faulted, agreed_since_fault, quarantined, "
               "quarantine_reason, quarantined_at FROM standings ORDER BY vehicle_id");
  if (st.prepared() != SQLITE_OK) return error(st.prepared(), "listing standings");
  std::vector<std::pair<std::string, core::VehicleStanding>> out;
  for (;;) {
    const int rc = st.step();
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) return error(rc, "listing standings");
    if (out.size() >= kVehiclesMax) return Unexpected(ErrorCode::kCorrupt, "more than kVehiclesMax standings");
    std::string id = st.column_text(0);
    core::VehicleStanding s;
    const int64_t standing = st.column_int(1);
    const int64_t agreed = st.column_int(2);
    const int64_t faulted = st.column_int(3);
    const int64_t since = st.column_int(4);
    const int64_t quarantined = st.column_int(5);
    s.quarantine_reason = st.column_text(6);
    s.quarantined_at = st.column_int(7);
    constexpr int64_t kCountMax = UINT32_MAX;
    if (!core::valid_vehicle_id(id) || standing < 0 || standing > core::kStandingMax || agreed < 0 ||
        agreed > kCountMax || faulted < 0 || faulted > kCountMax || since < 0 || since > kCountMax ||
        (quarantined != 0 && quarantined != 1) || s.quarantine_reason.size() > core::kQuarantineReasonBytesMax) {
      return Unexpected(ErrorCode::kCorrupt, "standing row '" + id.substr(0, 64) + "' is damaged");
    }
    s.standing = static_cast<int32_t>(standing);
    s.checks_agreed = static_cast<uint32_t>(agreed);
    s.checks_faulted = static_cast<uint32_t>(faulted);
    s.agreed_since_fault = static_cast<uint32_t>(since);
    s.quarantined = quarantined == 1;
    out.emplace_back(std::move(id), std::move(s));
  }
  return out;
}

}  // namespace idlefleet::store
