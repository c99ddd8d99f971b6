// PgVehicleStore: the VehicleStore (store/vehicle_store.h) in PostgreSQL, for
// coordinators that share one database. Same behaviour, limits and errors as
// the SQLite store; the schema, with the types that differ, is in
// store/vehicle_store.h. enrol() locks the code's and the vehicle's rows
// (SELECT ... FOR UPDATE) where SQLite takes its database-wide write lock, so
// that two enrolments with one code cannot both succeed.
//
// Thread-safety: none (store/vehicle_store.h): one connection, one thread at a
// time.
#pragma once

#include <memory>
#include <string>

#include "store/pg_db.h"
#include "store/vehicle_store.h"

namespace idlefleet::store {

// The schema this build writes (migrations recorded as store "vehicles").
inline constexpr int kPgVehiclesSchemaVersion = 1;

class PgVehicleStore final : public VehicleStore {
 public:
  // Connects to `url` (postgresql://...) and migrates the vehicle tables.
  static Result<std::unique_ptr<PgVehicleStore>> open(const std::string& url);

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
  const std::string& location() const override { return location_; }

 private:
  PgVehicleStore(std::unique_ptr<PgConnection> db, std::string location)
      : db_(std::move(db)), location_(std::move(location)) {}
  Result<std::vector<VehicleRecord>> read_vehicles(const std::string& sql, const PgParams& params,
                                                   const std::string& what);
  Result<VehicleRecord> enrol_in_transaction(std::string_view code, const std::string& vehicle_id,
                                             const std::string& public_key, core::TimeMs now);

  std::unique_ptr<PgConnection> db_;
  std::string location_;  // the URL without its password
};

}  // namespace idlefleet::store
