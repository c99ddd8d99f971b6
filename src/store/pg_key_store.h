// PgKeyStore: the KeyStore (store/key_store.h) in PostgreSQL, for
// coordinators that share one database. Same behaviour, limits and errors as
// the SQLite store; the schema, with the types that differ, and how
// data_version() is kept (the key_changes counter) are in store/key_store.h.
//
// Thread-safety: none (store/key_store.h): one connection, one thread at a
// time.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "store/key_store.h"
#include "store/pg_db.h"

namespace idlefleet::store {

// The schema this build writes (migrations recorded as store "keys").
inline constexpr int kPgKeysSchemaVersion = 1;

class PgKeyStore final : public KeyStore {
 public:
  // Connects to `url` (postgresql://...) and migrates the key tables.
  static Result<std::unique_ptr<PgKeyStore>> open(const std::string& url);

  Result<CreatedKey> create(const NewKey& request, core::TimeMs now) override;
  Result<std::vector<ApiKey>> list() override;
  Result<std::optional<ApiKey>> get(std::string_view id) override;
  Result<ApiKey> revoke(std::string_view id, core::TimeMs now) override;
  Status add_usage(std::span<const UsageDelta> deltas) override;
  // key_changes.version less this store's own increments.
  Result<int64_t> data_version() override;
  Result<std::optional<StoredResponse>> get_response(std::string_view scope, std::string_view idem_key) override;
  Status put_response(std::string_view scope, std::string_view idem_key, const StoredResponse& response) override;
  Result<uint64_t> prune_responses(core::TimeMs before) override;
  const std::string& location() const override { return location_; }

 private:
  PgKeyStore(std::unique_ptr<PgConnection> db, std::string location)
      : db_(std::move(db)), location_(std::move(location)) {}
  Result<std::vector<ApiKey>> read_keys(const std::string& sql, const PgParams& params, const std::string& what);
  // Runs `change` in a transaction that first increments key_changes (which
  // also makes key writers wait for each other). `change` returns whether it
  // changed anything: if so the transaction commits and counts as this
  // store's own increment, else it rolls back, the increment with it.
  Status change_keys(const std::string& what, const std::function<Result<bool>()>& change);

  std::unique_ptr<PgConnection> db_;
  std::string location_;  // the URL without its password
  // key_changes increments this store committed (data_version() subtracts them).
  int64_t own_changes_ = 0;
};

}  // namespace idlefleet::store
