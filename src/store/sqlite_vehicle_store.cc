#include "store/sqlite_vehicle_store.h"

#include <sqlite3.h>

#include "store/sqlite_db.h"

namespace idlefleet::store {
namespace {

// Migration N (1-based) is kMigrations[N - 1]; shipped entries never change.
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

using vehicle_rows::digest;

Result<VehicleRecord> read_vehicle(const Statement& st) {
  VehicleRecord v;
  v.vehicle_id = st.column_text(0);
  v.public_key = st.column_text(1);
  v.owner_id = st.column_text(2);
  v.pinned_at = st.column_int(3);
  IF_RETURN_IF_ERROR(vehicle_rows::check_vehicle_row(v));
  return v;
}

}  // namespace

SqliteVehicleStore::~SqliteVehicleStore() { sqlite3_close_v2(db_); }

Unexpected SqliteVehicleStore::error(int rc, const std::string& what) const {
  return sqlite_error(db_, rc, label(), what);
}

Result<std::unique_ptr<SqliteVehicleStore>> SqliteVehicleStore::open(const std::string& path) {
  sqlite3* db = nullptr;
  const std::string label = "vehicle store '" + path + "'";
  IF_RETURN_IF_ERROR(open_database(path, kMigrations, label, &db));
  std::unique_ptr<SqliteVehicleStore> store(new SqliteVehicleStore(path, db));
  IF_RETURN_IF_ERROR(sqlite_exec(db, "PRAGMA synchronous = FULL", label, "setting pragmas"));
  return store;
}

Result<std::vector<VehicleRecord>> SqliteVehicleStore::vehicles() {
  Statement st(db_, "SELECT vehicle_id, public_key, owner_id, pinned_at FROM vehicles ORDER BY vehicle_id");
  if (st.prepared() != SQLITE_OK) return error(st.prepared(), "listing vehicles");
  std::vector<VehicleRecord> out;
  for (;;) {
    const int rc = st.step();
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) return error(rc, "listing vehicles");
    IF_RETURN_IF_ERROR(vehicle_rows::check_rows(out.size() + 1, kVehiclesMax, "vehicles"));
    auto v = read_vehicle(st);
    if (!v) return Unexpected(v.error());
    out.push_back(std::move(*v));
  }
  return out;
}

Result<std::optional<VehicleRecord>> SqliteVehicleStore::vehicle(const std::string& vehicle_id) {
  if (!core::valid_vehicle_id(vehicle_id)) return std::optional<VehicleRecord>();  // no row has such an id
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

Status SqliteVehicleStore::put_vehicle(const VehicleRecord& v) {
  IF_RETURN_IF_ERROR(vehicle_rows::check_vehicle(v));
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

Result<std::optional<StoredPolicy>> SqliteVehicleStore::policy(const std::string& vehicle_id) {
  if (!core::valid_vehicle_id(vehicle_id)) return std::optional<StoredPolicy>();  // no row has such an id
  Statement st(db_, "SELECT policy_json, updated_at FROM vehicle_policies WHERE vehicle_id = ?1");
  if (st.prepared() != SQLITE_OK) return error(st.prepared(), "reading a policy");
  st.text(1, vehicle_id);
  const int rc = st.step();
  if (rc == SQLITE_DONE) return std::optional<StoredPolicy>();
  if (rc != SQLITE_ROW) return error(rc, "reading a policy");
  auto p = vehicle_rows::policy_row(vehicle_id, st.column_text(0), st.column_int(1));
  if (!p) return Unexpected(p.error());
  return std::optional<StoredPolicy>(std::move(*p));
}

Status SqliteVehicleStore::put_policy(const std::string& vehicle_id, const core::OwnerPolicy& policy,
                                      core::TimeMs now) {
  IF_RETURN_IF_ERROR(vehicle_rows::check_policy(vehicle_id, policy));
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

Result<bool> SqliteVehicleStore::put_receipt(const core::ReceiptMessage& r, const std::string& owner_id,
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

Result<std::vector<StoredReceipt>> SqliteVehicleStore::receipts_for_job(const std::string& job_id) {
  Statement st(db_,
               "SELECT receipt_json, owner_id, accepted_at, attempt FROM receipts WHERE job_id = ?1 ORDER BY attempt");
  if (st.prepared() != SQLITE_OK) return error(st.prepared(), "reading receipts");
  st.text(1, job_id);
  std::vector<StoredReceipt> out;
  for (;;) {
    const int rc = st.step();
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) return error(rc, "reading receipts");
    auto r = vehicle_rows::receipt_row(job_id, out.size(), st.column_text(0), st.column_int(3), st.column_text(1),
                                       st.column_int(2));
    if (!r) return Unexpected(r.error());
    out.push_back(std::move(*r));
  }
  return out;
}

Result<std::vector<VehicleStore::ReceiptKey>> SqliteVehicleStore::receipt_keys() {
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
    auto key = vehicle_rows::receipt_key_row(st.column_text(0), st.column_int(1), st.column_int(2) != 0);
    if (!key) return Unexpected(key.error());
    out.push_back(std::move(*key));
  }
  return out;
}

Result<std::pair<Owner, std::string>> SqliteVehicleStore::create_owner(const std::string& name, core::TimeMs now) {
  IF_RETURN_IF_ERROR(vehicle_rows::check_new_owner(name, 0));
  Statement count(db_, "SELECT COUNT(*) FROM owners");
  if (count.prepared() != SQLITE_OK || count.step() != SQLITE_ROW) return error(SQLITE_ERROR, "counting owners");
  IF_RETURN_IF_ERROR(vehicle_rows::check_new_owner(name, static_cast<uint64_t>(count.column_int(0))));
  auto [o, token] = vehicle_rows::new_owner(name, now);
  Statement st(db_, "INSERT INTO owners (id, name, token_sha256, created_at) VALUES (?1, ?2, ?3, ?4)");
  if (st.prepared() != SQLITE_OK) return error(st.prepared(), "creating an owner");
  st.text(1, o.id);
  st.text(2, o.name);
  st.blob(3, digest(token));
  st.integer(4, now);
  const int rc = st.step();
  if (rc != SQLITE_DONE) return error(rc, "creating an owner");
  return std::make_pair(std::move(o), std::move(token));
}

Result<std::vector<Owner>> SqliteVehicleStore::owners() {
  Statement st(db_, "SELECT id, name, created_at FROM owners ORDER BY created_at, id");
  if (st.prepared() != SQLITE_OK) return error(st.prepared(), "listing owners");
  std::vector<Owner> out;
  for (;;) {
    const int rc = st.step();
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) return error(rc, "listing owners");
    IF_RETURN_IF_ERROR(vehicle_rows::check_rows(out.size() + 1, kOwnersMax, "owners"));
    Owner o{st.column_text(0), st.column_text(1), st.column_int(2)};
    IF_RETURN_IF_ERROR(vehicle_rows::check_owner_row(o));
    out.push_back(std::move(o));
  }
  return out;
}

Result<std::optional<Owner>> SqliteVehicleStore::owner_by_token(std::string_view token) {
  if (!vehicle_rows::owner_token_well_formed(token)) return std::optional<Owner>();
  Statement st(db_, "SELECT id, name, created_at FROM owners WHERE token_sha256 = ?1");
  if (st.prepared() != SQLITE_OK) return error(st.prepared(), "finding an owner");
  st.blob(1, digest(token));
  const int rc = st.step();
  if (rc == SQLITE_DONE) return std::optional<Owner>();
  if (rc != SQLITE_ROW) return error(rc, "finding an owner");
  Owner o{st.column_text(0), st.column_text(1), st.column_int(2)};
  IF_RETURN_IF_ERROR(vehicle_rows::check_owner_row(o));
  return std::optional<Owner>(std::move(o));
}

Result<std::string> SqliteVehicleStore::create_code(const std::string& owner_id, core::TimeMs now) {
  Statement open_codes(db_,
                       "SELECT COUNT(*) FROM enrolment_codes WHERE owner_id = ?1 AND used_by = '' AND expires_at > ?2");
  if (open_codes.prepared() != SQLITE_OK) return error(open_codes.prepared(), "counting codes");
  open_codes.text(1, owner_id);
  open_codes.integer(2, now);
  if (open_codes.step() != SQLITE_ROW) return error(SQLITE_ERROR, "counting codes");
  IF_RETURN_IF_ERROR(vehicle_rows::check_open_codes(owner_id, static_cast<uint64_t>(open_codes.column_int(0))));
  const std::string code = vehicle_rows::new_code();
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

Result<VehicleRecord> SqliteVehicleStore::enrol(std::string_view code, const std::string& vehicle_id,
                                                const std::string& public_key, core::TimeMs now) {
  IF_RETURN_IF_ERROR(vehicle_rows::check_enrolment(vehicle_id, public_key));
  IF_RETURN_IF_ERROR(sqlite_exec(db_, "BEGIN IMMEDIATE", label(), "starting an enrolment"));
  auto body = [&]() -> Result<VehicleRecord> {
    Statement find(db_, "SELECT owner_id, expires_at, used_by FROM enrolment_codes WHERE code_sha256 = ?1");
    if (find.prepared() != SQLITE_OK) return error(find.prepared(), "finding a code");
    find.blob(1, digest(code));
    int rc = find.step();
    if (rc == SQLITE_DONE) return Unexpected(ErrorCode::kNotFound, "no such enrolment code");
    if (rc != SQLITE_ROW) return error(rc, "finding a code");
    const vehicle_rows::CodeRow found{find.column_text(0), find.column_int(1), find.column_text(2)};
    auto existing = vehicle(vehicle_id);
    if (!existing) return Unexpected(existing.error());
    auto decided = vehicle_rows::enrolment(found, *existing, vehicle_id, public_key, now);
    if (!decided) return Unexpected(decided.error());
    const VehicleRecord& v = *decided;
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
  IF_RETURN_IF_ERROR(sqlite_exec(db_, "COMMIT", label(), "committing an enrolment"));
  return result;
}

Result<std::vector<VehicleRecord>> SqliteVehicleStore::vehicles_of(const std::string& owner_id) {
  Statement st(db_,
               "SELECT vehicle_id, public_key, owner_id, pinned_at FROM vehicles WHERE owner_id = ?1 "
               "ORDER BY vehicle_id");
  if (st.prepared() != SQLITE_OK) return error(st.prepared(), "listing an owner's vehicles");
  st.text(1, owner_id);
  std::vector<VehicleRecord> out;
  for (;;) {
    const int rc = st.step();
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) return error(rc, "listing an owner's vehicles");
    IF_RETURN_IF_ERROR(vehicle_rows::check_rows(out.size() + 1, kVehiclesMax, "vehicles"));
    auto v = read_vehicle(st);
    if (!v) return Unexpected(v.error());
    out.push_back(std::move(*v));
  }
  return out;
}

Status SqliteVehicleStore::put_standing(const std::string& vehicle_id, const core::VehicleStanding& s,
                                        core::TimeMs now) {
  IF_RETURN_IF_ERROR(vehicle_rows::check_standing(vehicle_id, s));
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

Result<std::vector<std::pair<std::string, core::VehicleStanding>>> SqliteVehicleStore::standings() {
  Statement st(db_,
               "SELECT vehicle_id, standing, checks_agreed, checks_faulted, agreed_since_fault, quarantined, "
               "quarantine_reason, quarantined_at FROM standings ORDER BY vehicle_id");
  if (st.prepared() != SQLITE_OK) return error(st.prepared(), "listing standings");
  std::vector<std::pair<std::string, core::VehicleStanding>> out;
  for (;;) {
    const int rc = st.step();
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) return error(rc, "listing standings");
    IF_RETURN_IF_ERROR(vehicle_rows::check_rows(out.size() + 1, kVehiclesMax, "standings"));
    std::string id = st.column_text(0);
    auto s = vehicle_rows::standing_row(id, st.column_int(1), st.column_int(2), st.column_int(3), st.column_int(4),
                                        st.column_int(5), st.column_text(6), st.column_int(7));
    if (!s) return Unexpected(s.error());
    out.emplace_back(std::move(id), std::move(*s));
  }
  return out;
}

}  // namespace idlefleet::store
