// SqliteVehicleStore: the VehicleStore (store/vehicle_store.h) in one SQLite
// file, WAL journal, synchronous=FULL. The default, for a coordinator on one
// machine.
//
// Thread-safety: none (store/vehicle_store.h); the connection is opened
// without SQLite's own mutex.
#pragma once

#include <memory>
#include <string>

#include "store/vehicle_store.h"

struct sqlite3;

namespace idlefleet::store {

class SqliteVehicleStore final : public VehicleStore {
 public:
  // As VehicleStore::open for a path (or ":memory:").
  static Result<std::unique_ptr<SqliteVehicleStore>> open(const std::string& path);
  ~SqliteVehicleStore() override;

  Result<std::vector<VehicleRecord>> vehicles() override;
  Result<std::optional<VehicleRecord>> vehicle(const std::string& vehicle_id) override;
  Status put_vehicle(const VehicleRecord& v) override;
  Result<std::optional<StoredPolicy>> policy(const std::string& vehicle_id) override;
  Status put_policy(const std::string& vehicle_id, const core::OwnerPolicy& policy, core::TimeMs now) override;
  Result<bool> put_receipt(const core::ReceiptMessage& r, const std::string& owner_id,
                           core::TimeMs accepted_at) override;
  Result<std::vector<StoredReceipt>> receipts_for_job(const std::string& job_id) override;
  Result<std::vector<ReceiptKey>> receipt_keys() override;
  Result<std::pair<Owner, std::string>> create_owner(const std::string& name, core::TimeMs now) override;
  Result<std::vector<Owner>> owners() override;
  Result<std::optional<Owner>> owner_by_token(std::string_view token) override;
  Result<std::string> create_code(const std::string& owner_id, core::TimeMs now) override;
  Result<VehicleRecord> enrol(std::string_view code, const std::string& vehicle_id, const std::string& public_key,
                              core::TimeMs now) override;
  Status put_standing(const std::string& vehicle_id, const core::VehicleStanding& s, core::TimeMs now) override;
  Result<std::vector<std::pair<std::string, core::VehicleStanding>>> standings() override;
  Result<std::vector<VehicleRecord>> vehicles_of(const std::string& owner_id) override;
  const std::string& location() const override { return path_; }

 private:
  SqliteVehicleStore(std::string path, sqlite3* db) : path_(std::move(path)), db_(db) {}
  Unexpected error(int rc, const std::string& what) const;
  std::string label() const { return "vehicle store '" + path_ + "'"; }

  std::string path_;
  sqlite3* db_ = nullptr;
};

}  // namespace idlefleet::store
