#include "store/pg_vehicle_store.h"

#include <array>
#include <utility>

namespace idlefleet::store {
namespace {

// Migration N (1-based) is kMigrations[N - 1], recorded as store "vehicles"
// in idlefleet_schema. Shipped entries never change. The one migration is
// SQLite's four together.
constexpr const char* kMigrations[] = {
    R"sql(
CREATE TABLE vehicles (
  vehicle_id TEXT COLLATE "C" PRIMARY KEY NOT NULL,
  public_key TEXT COLLATE "C" NOT NULL,
  owner_id BYTEA NOT NULL,
  pinned_at BIGINT NOT NULL
);
CREATE INDEX vehicles_by_owner ON vehicles (owner_id, vehicle_id);
CREATE TABLE receipts (
  job_id BYTEA NOT NULL,
  attempt BIGINT NOT NULL,
  vehicle_id BYTEA NOT NULL,
  owner_id BYTEA NOT NULL,
  receipt_json BYTEA NOT NULL,
  accepted_at BIGINT NOT NULL,
  PRIMARY KEY (job_id, attempt)
);
CREATE INDEX receipts_by_vehicle ON receipts (vehicle_id, accepted_at);
CREATE TABLE owners (
  id TEXT COLLATE "C" PRIMARY KEY NOT NULL,
  name BYTEA NOT NULL,
  token_sha256 BYTEA NOT NULL UNIQUE,
  created_at BIGINT NOT NULL
);
CREATE TABLE enrolment_codes (
  code_sha256 BYTEA PRIMARY KEY NOT NULL,
  owner_id BYTEA NOT NULL,
  created_at BIGINT NOT NULL,
  expires_at BIGINT NOT NULL,
  used_by TEXT COLLATE "C" NOT NULL,
  used_at BIGINT NOT NULL
);
CREATE TABLE vehicle_policies (
  vehicle_id TEXT COLLATE "C" PRIMARY KEY NOT NULL,
  policy_json BYTEA NOT NULL,
  updated_at BIGINT NOT NULL
);
CREATE TABLE standings (
  vehicle_id TEXT COLLATE "C" PRIMARY KEY NOT NULL,
  standing BIGINT NOT NULL,
  checks_agreed BIGINT NOT NULL,
  checks_faulted BIGINT NOT NULL,
  agreed_since_fault BIGINT NOT NULL,
  quarantined BOOLEAN NOT NULL,
  quarantine_reason BYTEA NOT NULL,
  quarantined_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL
);
)sql",
};
static_assert(std::size(kMigrations) == kPgVehiclesSchemaVersion, "one migration per schema version");

using vehicle_rows::digest;

constexpr const char* kVehicleColumns = "vehicle_id, public_key, owner_id, pinned_at";
constexpr std::array kVehicleTypes = {PgType::kText, PgType::kText, PgType::kBytea, PgType::kInt8};
constexpr std::array kOwnerTypes = {PgType::kText, PgType::kBytea, PgType::kInt8};
constexpr std::array kCountTypes = {PgType::kInt8};

std::string vehicle_sql(const std::string& rest) {
  return std::string("SELECT ") + kVehicleColumns + " FROM vehicles " + rest;
}

Result<VehicleRecord> read_vehicle(const PgResult& r, int row) {
  VehicleRecord v{r.text(row, 0), r.text(row, 1), r.text(row, 2), r.integer(row, 3)};
  IF_RETURN_IF_ERROR(vehicle_rows::check_vehicle_row(v));
  return v;
}

Result<Owner> read_owner(const PgResult& r, int row) {
  Owner o{r.text(row, 0), r.text(row, 1), r.integer(row, 2)};
  IF_RETURN_IF_ERROR(vehicle_rows::check_owner_row(o));
  return o;
}

}  // namespace

Result<std::unique_ptr<PgVehicleStore>> PgVehicleStore::open(const std::string& url) {
  auto db = PgConnection::connect(url, "vehicle store");
  if (!db) return Unexpected(db.error());
  IF_RETURN_IF_ERROR((*db)->migrate("vehicles", kMigrations));
  return std::unique_ptr<PgVehicleStore>(new PgVehicleStore(std::move(*db), redact_postgres_url(url)));
}

Result<std::vector<VehicleRecord>> PgVehicleStore::read_vehicles(const std::string& sql, const PgParams& params,
                                                                 const std::string& what) {
  auto r = db_->query(sql, params, kVehicleTypes, what);
  if (!r) return Unexpected(r.error());
  IF_RETURN_IF_ERROR(vehicle_rows::check_rows(static_cast<size_t>(r->rows()), kVehiclesMax, "vehicles"));
  std::vector<VehicleRecord> out;
  out.reserve(static_cast<size_t>(r->rows()));
  for (int row = 0; row < r->rows(); ++row) {
    auto v = read_vehicle(*r, row);
    if (!v) return Unexpected(v.error());
    out.push_back(std::move(*v));
  }
  return out;
}

Result<std::vector<VehicleRecord>> PgVehicleStore::vehicles() {
  // One more than the limit tells "too many" from "exactly the limit".
  static const std::string sql = vehicle_sql("ORDER BY vehicle_id LIMIT $1");
  return read_vehicles(sql, PgParams().int8(static_cast<int64_t>(kVehiclesMax) + 1), "listing vehicles");
}

Result<std::optional<VehicleRecord>> PgVehicleStore::vehicle(const std::string& vehicle_id) {
  if (!core::valid_vehicle_id(vehicle_id)) return std::optional<VehicleRecord>();  // no row has such an id
  static const std::string sql = vehicle_sql("WHERE vehicle_id = $1");
  auto rows = read_vehicles(sql, PgParams().text(vehicle_id), "reading a vehicle");
  if (!rows) return Unexpected(rows.error());
  if (rows->empty()) return std::optional<VehicleRecord>();
  return std::optional<VehicleRecord>(std::move(rows->front()));
}

Status PgVehicleStore::put_vehicle(const VehicleRecord& v) {
  IF_RETURN_IF_ERROR(vehicle_rows::check_vehicle(v));
  // Twice at most: another connection may pin the vehicle between the read and the insert.
  for (int attempt = 0; attempt < 2; ++attempt) {
    auto existing = vehicle(v.vehicle_id);
    if (!existing) return Unexpected(existing.error());
    if (*existing) {
      if ((*existing)->public_key == v.public_key) return {};
      return Unexpected(ErrorCode::kAlreadyExists, "vehicle " + v.vehicle_id + " is pinned to another key");
    }
    auto r = db_->exec(std::string("INSERT INTO vehicles (") + kVehicleColumns +
                           ") VALUES ($1, $2, $3, $4) ON CONFLICT (vehicle_id) DO NOTHING",
                       PgParams().text(v.vehicle_id).text(v.public_key).bytes(v.owner_id).int8(v.pinned_at),
                       "pinning a vehicle");
    if (!r) return Unexpected(r.error());
    if (r->affected() == 1) return {};
  }
  return Unexpected(ErrorCode::kAlreadyExists, "vehicle " + v.vehicle_id + " is pinned to another key");
}

Result<std::optional<StoredPolicy>> PgVehicleStore::policy(const std::string& vehicle_id) {
  if (!core::valid_vehicle_id(vehicle_id)) return std::optional<StoredPolicy>();  // no row has such an id
  constexpr std::array kTypes = {PgType::kBytea, PgType::kInt8};
  auto r = db_->query("SELECT policy_json, updated_at FROM vehicle_policies WHERE vehicle_id = $1",
                      PgParams().text(vehicle_id), kTypes, "reading a policy");
  if (!r) return Unexpected(r.error());
  if (r->rows() == 0) return std::optional<StoredPolicy>();
  auto p = vehicle_rows::policy_row(vehicle_id, r->bytes(0, 0), r->integer(0, 1));
  if (!p) return Unexpected(p.error());
  return std::optional<StoredPolicy>(std::move(*p));
}

Status PgVehicleStore::put_policy(const std::string& vehicle_id, const core::OwnerPolicy& policy,
                                  core::TimeMs now) {
  IF_RETURN_IF_ERROR(vehicle_rows::check_policy(vehicle_id, policy));
  auto r = db_->exec(
      "INSERT INTO vehicle_policies (vehicle_id, policy_json, updated_at) VALUES ($1, $2, $3) "
      "ON CONFLICT (vehicle_id) DO UPDATE SET policy_json = excluded.policy_json, updated_at = excluded.updated_at",
      PgParams().text(vehicle_id).bytes(core::encode_policy(policy)).int8(now), "storing a policy");
  if (!r) return Unexpected(r.error());
  return {};
}

Result<bool> PgVehicleStore::put_receipt(const core::ReceiptMessage& r, const std::string& owner_id,
                                         core::TimeMs accepted_at) {
  PgParams p;
  p.bytes(r.job_id).int8(r.attempt).bytes(r.vehicle_id).bytes(owner_id).bytes(core::encode_message(r));
  p.int8(accepted_at);
  auto res = db_->exec(
      "INSERT INTO receipts (job_id, attempt, vehicle_id, owner_id, receipt_json, accepted_at) "
      "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (job_id, attempt) DO NOTHING",
      p, "storing a receipt");
  if (!res) return Unexpected(res.error());
  return res->affected() == 1;
}

Result<std::vector<StoredReceipt>> PgVehicleStore::receipts_for_job(const std::string& job_id) {
  constexpr std::array kTypes = {PgType::kBytea, PgType::kBytea, PgType::kInt8, PgType::kInt8};
  auto r = db_->query(
      "SELECT receipt_json, owner_id, accepted_at, attempt FROM receipts WHERE job_id = $1 ORDER BY attempt LIMIT $2",
      PgParams().bytes(job_id).int8(static_cast<int64_t>(kReceiptsPerJobMax) + 1), kTypes, "reading receipts");
  if (!r) return Unexpected(r.error());
  std::vector<StoredReceipt> out;
  for (int row = 0; row < r->rows(); ++row) {
    auto receipt = vehicle_rows::receipt_row(job_id, out.size(), r->bytes(row, 0), r->integer(row, 3),
                                             r->text(row, 1), r->integer(row, 2));
    if (!receipt) return Unexpected(receipt.error());
    out.push_back(std::move(*receipt));
  }
  return out;
}

Result<std::vector<VehicleStore::ReceiptKey>> PgVehicleStore::receipt_keys() {
  // Metered: energy_mwh or wear_micro_hours above 0, with SQLite's meaning
  // of json_extract(...) > 0: a number compares as a number, true as 1, a
  // string, object or array is more than any number, null and absent are not.
  // receipt_json is JSON of ours, so UTF-8 (convert_from holds) with no
  // escapes but \u0000-\u001f; PostgreSQL refuses to parse \u0000, which a
  // string may hold, so it is made \u0020 first (in any string: never in the
  // numbers read here).
  constexpr std::array kTypes = {PgType::kBytea, PgType::kInt8, PgType::kBool};
  auto r = db_->query(
      "SELECT job_id, attempt, (SELECT COALESCE(bool_or(CASE json_typeof(v) WHEN 'number' THEN v::text::numeric > 0 "
      "WHEN 'boolean' THEN v::text = 'true' WHEN 'null' THEN false ELSE true END), false) "
      "FROM (VALUES (j -> 'energy_mwh'), (j -> 'wear_micro_hours')) AS field (v) WHERE v IS NOT NULL) "
      "FROM receipts, LATERAL (SELECT replace(convert_from(receipt_json, 'UTF8'), '\\u0000', '\\u0020')::json AS j) "
      "AS parsed "
      "ORDER BY job_id, attempt LIMIT $1",
      PgParams().int8(static_cast<int64_t>(kReceiptKeysMax) + 1), kTypes, "listing receipts");
  if (!r) return Unexpected(r.error());
  if (static_cast<size_t>(r->rows()) > kReceiptKeysMax) {
    return Unexpected(ErrorCode::kOutOfRange, "more than kReceiptKeysMax receipts");
  }
  std::vector<ReceiptKey> out;
  out.reserve(static_cast<size_t>(r->rows()));
  for (int row = 0; row < r->rows(); ++row) {
    auto key = vehicle_rows::receipt_key_row(r->text(row, 0), r->integer(row, 1), r->integer(row, 2) != 0);
    if (!key) return Unexpected(key.error());
    out.push_back(std::move(*key));
  }
  return out;
}

Result<std::pair<Owner, std::string>> PgVehicleStore::create_owner(const std::string& name, core::TimeMs now) {
  IF_RETURN_IF_ERROR(vehicle_rows::check_new_owner(name, 0));
  auto count = db_->query("SELECT COUNT(*) FROM owners", PgParams(), kCountTypes, "counting owners");
  if (!count) return Unexpected(count.error());
  IF_RETURN_IF_ERROR(vehicle_rows::check_new_owner(name, static_cast<uint64_t>(count->integer(0, 0))));
  auto [o, token] = vehicle_rows::new_owner(name, now);
  auto r = db_->exec("INSERT INTO owners (id, name, token_sha256, created_at) VALUES ($1, $2, $3, $4)",
                     PgParams().text(o.id).bytes(o.name).bytes(digest(token)).int8(now), "creating an owner");
  if (!r) return Unexpected(r.error());
  return std::make_pair(std::move(o), std::move(token));
}

Result<std::vector<Owner>> PgVehicleStore::owners() {
  auto r = db_->query("SELECT id, name, created_at FROM owners ORDER BY created_at, id LIMIT $1",
                      PgParams().int8(static_cast<int64_t>(kOwnersMax) + 1), kOwnerTypes, "listing owners");
  if (!r) return Unexpected(r.error());
  IF_RETURN_IF_ERROR(vehicle_rows::check_rows(static_cast<size_t>(r->rows()), kOwnersMax, "owners"));
  std::vector<Owner> out;
  for (int row = 0; row < r->rows(); ++row) {
    auto o = read_owner(*r, row);
    if (!o) return Unexpected(o.error());
    out.push_back(std::move(*o));
  }
  return out;
}

Result<std::optional<Owner>> PgVehicleStore::owner_by_token(std::string_view token) {
  if (!vehicle_rows::owner_token_well_formed(token)) return std::optional<Owner>();
  auto r = db_->query("SELECT id, name, created_at FROM owners WHERE token_sha256 = $1",
                      PgParams().bytes(digest(token)), kOwnerTypes, "finding an owner");
  if (!r) return Unexpected(r.error());
  if (r->rows() == 0) return std::optional<Owner>();
  auto o = read_owner(*r, 0);
  if (!o) return Unexpected(o.error());
  return std::optional<Owner>(std::move(*o));
}

Result<std::string> PgVehicleStore::create_code(const std::string& owner_id, core::TimeMs now) {
  auto open_codes = db_->query(
      "SELECT COUNT(*) FROM enrolment_codes WHERE owner_id = $1 AND used_by = '' AND expires_at > $2",
      PgParams().bytes(owner_id).int8(now), kCountTypes, "counting codes");
  if (!open_codes) return Unexpected(open_codes.error());
  IF_RETURN_IF_ERROR(vehicle_rows::check_open_codes(owner_id, static_cast<uint64_t>(open_codes->integer(0, 0))));
  const std::string code = vehicle_rows::new_code();
  auto r = db_->exec(
      "INSERT INTO enrolment_codes (code_sha256, owner_id, created_at, expires_at, used_by, used_at) "
      "VALUES ($1, $2, $3, $4, '', 0)",
      PgParams().bytes(digest(code)).bytes(owner_id).int8(now).int8(now + kEnrolmentCodeTtlMs), "creating a code");
  if (!r) return Unexpected(r.error());
  return code;
}

Result<VehicleRecord> PgVehicleStore::enrol(std::string_view code, const std::string& vehicle_id,
                                            const std::string& public_key, core::TimeMs now) {
  IF_RETURN_IF_ERROR(vehicle_rows::check_enrolment(vehicle_id, public_key));
  IF_RETURN_IF_ERROR(db_->begin("starting an enrolment"));
  auto result = enrol_in_transaction(code, vehicle_id, public_key, now);
  Status committed = result ? db_->commit("committing an enrolment") : Status();
  if (!result || !committed) db_->rollback();
  if (!committed) return Unexpected(committed.error());
  return result;
}

Result<VehicleRecord> PgVehicleStore::enrol_in_transaction(std::string_view code, const std::string& vehicle_id,
                                                           const std::string& public_key, core::TimeMs now) {
  // The code's row stays locked to the end: a second enrolment with it waits,
  // then reads it used.
  constexpr std::array kTypes = {PgType::kBytea, PgType::kInt8, PgType::kText};
  auto find = db_->query(
      "SELECT owner_id, expires_at, used_by FROM enrolment_codes WHERE code_sha256 = $1 FOR UPDATE",
      PgParams().bytes(digest(code)), kTypes, "finding a code");
  if (!find) return Unexpected(find.error());
  if (find->rows() == 0) return Unexpected(ErrorCode::kNotFound, "no such enrolment code");
  const vehicle_rows::CodeRow found{find->text(0, 0), find->integer(0, 1), find->text(0, 2)};
  static const std::string lock_sql = vehicle_sql("WHERE vehicle_id = $1 FOR UPDATE");
  auto existing = read_vehicles(lock_sql, PgParams().text(vehicle_id), "reading a vehicle");
  if (!existing) return Unexpected(existing.error());
  std::optional<VehicleRecord> current;
  if (!existing->empty()) current = std::move(existing->front());
  auto decided = vehicle_rows::enrolment(found, current, vehicle_id, public_key, now);
  if (!decided) return Unexpected(decided.error());
  const VehicleRecord& v = *decided;
  // The WHERE holds the decision against a vehicle pinned since the read
  // (a row that did not exist could not be locked).
  auto put = db_->exec(std::string("INSERT INTO vehicles (") + kVehicleColumns +
                           ") VALUES ($1, $2, $3, $4) ON CONFLICT (vehicle_id) DO UPDATE SET owner_id = "
                           "excluded.owner_id WHERE vehicles.public_key = excluded.public_key AND "
                           "(vehicles.owner_id = ''::bytea OR vehicles.owner_id = excluded.owner_id)",
                       PgParams().text(v.vehicle_id).text(v.public_key).bytes(v.owner_id).int8(v.pinned_at),
                       "enrolling a vehicle");
  if (!put) return Unexpected(put.error());
  if (put->affected() != 1) {
    return Unexpected(ErrorCode::kAlreadyExists,
                      "vehicle " + vehicle_id + " is pinned to another key or enrolled to another owner");
  }
  auto use = db_->exec("UPDATE enrolment_codes SET used_by = $1, used_at = $2 WHERE code_sha256 = $3",
                       PgParams().text(vehicle_id).int8(now).bytes(digest(code)), "using a code");
  if (!use) return Unexpected(use.error());
  return v;
}

Result<std::vector<VehicleRecord>> PgVehicleStore::vehicles_of(const std::string& owner_id) {
  static const std::string sql = vehicle_sql("WHERE owner_id = $1 ORDER BY vehicle_id LIMIT $2");
  return read_vehicles(sql, PgParams().bytes(owner_id).int8(static_cast<int64_t>(kVehiclesMax) + 1),
                       "listing an owner's vehicles");
}

Status PgVehicleStore::put_standing(const std::string& vehicle_id, const core::VehicleStanding& s,
                                    core::TimeMs now) {
  IF_RETURN_IF_ERROR(vehicle_rows::check_standing(vehicle_id, s));
  PgParams p;
  p.text(vehicle_id).int8(s.standing).int8(s.checks_agreed).int8(s.checks_faulted).int8(s.agreed_since_fault);
  p.boolean(s.quarantined).bytes(s.quarantine_reason).int8(s.quarantined_at).int8(now);
  auto r = db_->exec(
      "INSERT INTO standings (vehicle_id, standing, checks_agreed, checks_faulted, agreed_since_fault, "
      "quarantined, quarantine_reason, quarantined_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) "
      "ON CONFLICT (vehicle_id) DO UPDATE SET standing = $2, checks_agreed = $3, checks_faulted = $4, "
      "agreed_since_fault = $5, quarantined = $6, quarantine_reason = $7, quarantined_at = $8, updated_at = $9",
      p, "writing a standing");
  if (!r) return Unexpected(r.error());
  return {};
}

Result<std::vector<std::pair<std::string, core::VehicleStanding>>> PgVehicleStore::standings() {
  constexpr std::array kTypes = {PgType::kText, PgType::kInt8, PgType::kInt8,  PgType::kInt8,
                                 PgType::kInt8, PgType::kBool, PgType::kBytea, PgType::kInt8};
  auto r = db_->query(
      "SELECT vehicle_id, standing, checks_agreed, checks_faulted, agreed_since_fault, quarantined, "
      "quarantine_reason, quarantined_at FROM standings ORDER BY vehicle_id LIMIT $1",
      PgParams().int8(static_cast<int64_t>(kVehiclesMax) + 1), kTypes, "listing standings");
  if (!r) return Unexpected(r.error());
  IF_RETURN_IF_ERROR(vehicle_rows::check_rows(static_cast<size_t>(r->rows()), kVehiclesMax, "standings"));
  std::vector<std::pair<std::string, core::VehicleStanding>> out;
  for (int row = 0; row < r->rows(); ++row) {
    std::string id = r->text(row, 0);
    auto s = vehicle_rows::standing_row(id, r->integer(row, 1), r->integer(row, 2), r->integer(row, 3),
                                        r->integer(row, 4), r->integer(row, 5), r->text(row, 6), r->integer(row, 7));
    if (!s) return Unexpected(s.error());
    out.emplace_back(std::move(id), std::move(*s));
  }
  return out;
}

}  // namespace idlefleet::store
