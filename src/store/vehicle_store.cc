#include "store/vehicle_store.h"

#include <sqlite3.h>

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
};

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

}  // namespace idlefleet::store
