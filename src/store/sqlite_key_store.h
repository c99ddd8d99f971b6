// SqliteKeyStore: the KeyStore (store/key_store.h) in one SQLite file, WAL
// journal, synchronous=FULL. The default, for a coordinator on one machine.
//
// Thread-safety: none (store/key_store.h); the connection is opened without
// SQLite's own mutex.
#pragma once

#include <memory>
#include <string>

#include "store/key_store.h"

struct sqlite3;
struct sqlite3_stmt;

namespace idlefleet::store {

class SqliteKeyStore final : public KeyStore {
 public:
  // As KeyStore::open for a path (or ":memory:").
  static Result<std::unique_ptr<SqliteKeyStore>> open(const std::string& path);
  ~SqliteKeyStore() override;

  Result<CreatedKey> create(const NewKey& request, core::TimeMs now) override;
  Result<std::vector<ApiKey>> list() override;
  Result<std::optional<ApiKey>> get(std::string_view id) override;
  Result<ApiKey> revoke(std::string_view id, core::TimeMs now) override;
  Status add_usage(std::span<const UsageDelta> deltas) override;
  // SQLite's PRAGMA data_version.
  Result<int64_t> data_version() override;
  Result<std::optional<StoredResponse>> get_response(std::string_view scope, std::string_view idem_key) override;
  Status put_response(std::string_view scope, std::string_view idem_key, const StoredResponse& response) override;
  Result<uint64_t> prune_responses(core::TimeMs before) override;
  const std::string& location() const override { return path_; }

 private:
  SqliteKeyStore(std::string path, sqlite3* db);
  Status exec(const char* sql, const char* what);
  Unexpected sqlite_error(int rc, const std::string& what) const;
  Result<std::vector<ApiKey>> read_keys(sqlite3_stmt* stmt);
  std::string label() const { return "key store '" + path_ + "'"; }

  std::string path_;
  sqlite3* db_ = nullptr;
};

}  // namespace idlefleet::store
