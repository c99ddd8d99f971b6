#include "store/pg_key_store.h"

#include <array>
#include <utility>

namespace idlefleet::store {
namespace {

// Migration N (1-based) is kMigrations[N - 1], recorded as store "keys" in
// idlefleet_schema. Shipped entries never change. The one migration is
// SQLite's two together, and key_changes (data_version()).
constexpr const char* kMigrations[] = {
    R"sql(
CREATE TABLE api_keys (
  id TEXT COLLATE "C" PRIMARY KEY NOT NULL,
  name BYTEA NOT NULL,
  secret_sha256 BYTEA NOT NULL UNIQUE,
  created_at BIGINT NOT NULL,
  revoked_at BIGINT NOT NULL,
  requests_per_minute BIGINT NOT NULL,
  tokens_per_minute BIGINT NOT NULL,
  spend_limit_micros BIGINT NOT NULL,
  requests BIGINT NOT NULL,
  prompt_tokens BIGINT NOT NULL,
  completion_tokens BIGINT NOT NULL,
  spend_micros BIGINT NOT NULL,
  scopes TEXT COLLATE "C" NOT NULL DEFAULT '*'
);
CREATE TABLE idempotency (
  scope BYTEA NOT NULL,
  idem_key BYTEA NOT NULL,
  request_sha256 BYTEA NOT NULL,
  status BIGINT NOT NULL,
  body BYTEA NOT NULL,
  created_at BIGINT NOT NULL,
  PRIMARY KEY (scope, idem_key)
);
CREATE INDEX idempotency_by_created ON idempotency (created_at);
CREATE TABLE key_changes (
  one BOOLEAN PRIMARY KEY NOT NULL DEFAULT true CHECK (one),
  version BIGINT NOT NULL
);
INSERT INTO key_changes (one, version) VALUES (true, 0);
)sql",
};
static_assert(std::size(kMigrations) == kPgKeysSchemaVersion, "one migration per schema version");

using key_rows::kKeyColumns;
constexpr std::array kKeyTypes = {PgType::kText, PgType::kBytea, PgType::kBytea, PgType::kInt8, PgType::kInt8,
                                  PgType::kInt8, PgType::kInt8,  PgType::kInt8,  PgType::kInt8, PgType::kInt8,
                                  PgType::kInt8, PgType::kInt8,  PgType::kText};

std::string key_sql(const std::string& rest) {
  return std::string("SELECT ") + kKeyColumns + " FROM api_keys " + rest;
}

Status read_key(const PgResult& r, int row, ApiKey& k) {
  k.id = r.text(row, 0);
  k.name = r.text(row, 1);
  std::array<int64_t, 9> v{};
  for (int i = 0; i < 9; ++i) v[static_cast<size_t>(i)] = r.integer(row, 3 + i);
  k.scopes = r.text(row, 12);
  return key_rows::check_key_row(k, r.bytes(row, 2), v);
}

}  // namespace

Result<std::unique_ptr<PgKeyStore>> PgKeyStore::open(const std::string& url) {
  auto db = PgConnection::connect(url, "key store");
  if (!db) return Unexpected(db.error());
  IF_RETURN_IF_ERROR((*db)->migrate("keys", kMigrations));
  return std::unique_ptr<PgKeyStore>(new PgKeyStore(std::move(*db), redact_postgres_url(url)));
}

Status PgKeyStore::change_keys(const std::string& what, const std::function<Result<bool>()>& change) {
  IF_RETURN_IF_ERROR(db_->begin("starting " + what));
  auto run = [&]() -> Result<bool> {
    auto bumped = db_->exec("UPDATE key_changes SET version = version + 1", what);
    if (!bumped) return Unexpected(bumped.error());
    if (bumped->affected() != 1) {
      return Unexpected(ErrorCode::kCorrupt, db_->label() + ": key_changes does not hold its one row");
    }
    return change();
  };
  auto changed = run();
  if (!changed || !*changed) {
    db_->rollback();
    if (!changed) return Unexpected(changed.error());
    return {};
  }
  Status committed = db_->commit("committing " + what);
  if (!committed) {
    db_->rollback();
    return committed;
  }
  ++own_changes_;
  return {};
}

Result<CreatedKey> PgKeyStore::create(const NewKey& request, core::TimeMs now) {
  auto made = key_rows::new_key(request, now);
  if (!made) return Unexpected(made.error());
  const ApiKey& k = made->key;
  IF_RETURN_IF_ERROR(change_keys("a create", [&]() -> Result<bool> {
    // Counted after key_changes is held: no other create can pass the limit meanwhile.
    constexpr std::array kTypes = {PgType::kInt8};
    auto count = db_->query("SELECT COUNT(*) FROM api_keys", PgParams(), kTypes, "counting keys");
    if (!count) return Unexpected(count.error());
    IF_RETURN_IF_ERROR(key_rows::check_key_count(static_cast<uint64_t>(count->integer(0, 0)), db_->label()));
    const std::string_view hash(reinterpret_cast<const char*>(k.secret_sha256.data()), k.secret_sha256.size());
    PgParams p;
    p.text(k.id).bytes(k.name).bytes(hash).int8(now);
    p.int8(static_cast<int64_t>(k.limits.requests_per_minute)).int8(static_cast<int64_t>(k.limits.tokens_per_minute));
    p.int8(static_cast<int64_t>(k.spend_limit_micros)).text(k.scopes);
    auto r = db_->exec(std::string("INSERT INTO api_keys (") + kKeyColumns +
                           ") VALUES ($1, $2, $3, $4, 0, $5, $6, $7, 0, 0, 0, 0, $8)",
                       p, "writing a new key");
    if (!r) return Unexpected(r.error());
    return true;
  }));
  return made;
}

Result<std::vector<ApiKey>> PgKeyStore::read_keys(const std::string& sql, const PgParams& params,
                                                  const std::string& what) {
  auto r = db_->query(sql, params, kKeyTypes, what);
  if (!r) return Unexpected(r.error());
  if (static_cast<size_t>(r->rows()) > kKeysMax) {
    return Unexpected(ErrorCode::kCorrupt, db_->label() + ": more than " + std::to_string(kKeysMax) + " keys");
  }
  std::vector<ApiKey> out(static_cast<size_t>(r->rows()));
  for (int row = 0; row < r->rows(); ++row) {
    if (Status s = read_key(*r, row, out[static_cast<size_t>(row)]); !s) {
      return Unexpected(ErrorCode::kCorrupt, db_->label() + ": " + s.error().message);
    }
  }
  return out;
}

Result<std::vector<ApiKey>> PgKeyStore::list() {
  // One more than the limit tells "too many" from "exactly the limit".
  static const std::string sql = key_sql("ORDER BY created_at, id LIMIT $1");
  return read_keys(sql, PgParams().int8(static_cast<int64_t>(kKeysMax) + 1), "reading keys");
}

Result<std::optional<ApiKey>> PgKeyStore::get(std::string_view id) {
  if (!key_id_well_formed(id)) return std::optional<ApiKey>();  // no row has such an id
  static const std::string sql = key_sql("WHERE id = $1");
  auto rows = read_keys(sql, PgParams().text(id), "reading a key");
  if (!rows) return Unexpected(rows.error());
  if (rows->empty()) return std::optional<ApiKey>();
  return std::optional<ApiKey>(std::move(rows->front()));
}

Result<ApiKey> PgKeyStore::revoke(std::string_view id, core::TimeMs now) {
  if (key_id_well_formed(id)) {
    IF_RETURN_IF_ERROR(change_keys("a revoke", [&]() -> Result<bool> {
      auto r = db_->exec("UPDATE api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at = 0",
                         PgParams().text(id).int8(now > 0 ? now : 1), "revoking a key");  // 0 means active
      if (!r) return Unexpected(r.error());
      return r->affected() > 0;
    }));
  }
  auto key = get(id);
  if (!key) return Unexpected(key.error());
  if (!key->has_value()) return Unexpected(ErrorCode::kNotFound, "no key '" + std::string(id.substr(0, 64)) + "'");
  return std::move(**key);
}

Status PgKeyStore::add_usage(std::span<const UsageDelta> deltas) {
  if (deltas.empty()) return {};
  return change_keys("a usage update", [&]() -> Result<bool> {
    bool changed = false;
    for (const UsageDelta& d : deltas) {
      // No row has an id of another shape (and the TEXT column would refuse some).
      if (!key_id_well_formed(d.key_id)) continue;
      PgParams p;
      p.text(d.key_id).int8(key_rows::usage_increment(d.add.requests));
      p.int8(key_rows::usage_increment(d.add.prompt_tokens)).int8(key_rows::usage_increment(d.add.completion_tokens));
      p.int8(key_rows::usage_increment(d.add.spend_micros));
      auto r = db_->exec(
          "UPDATE api_keys SET requests = requests + $2, prompt_tokens = prompt_tokens + $3, "
          "completion_tokens = completion_tokens + $4, spend_micros = spend_micros + $5 WHERE id = $1",
          p, "updating usage of '" + d.key_id + "'");
      if (!r) return Unexpected(r.error());
      changed = changed || r->affected() > 0;
    }
    return changed;
  });
}

Result<int64_t> PgKeyStore::data_version() {
  constexpr std::array kTypes = {PgType::kInt8};
  auto r = db_->query("SELECT version FROM key_changes", PgParams(), kTypes, "reading data_version");
  if (!r) return Unexpected(r.error());
  if (r->rows() != 1) return Unexpected(ErrorCode::kCorrupt, db_->label() + ": key_changes does not hold its one row");
  return r->integer(0, 0) - own_changes_;
}

Result<std::optional<StoredResponse>> PgKeyStore::get_response(std::string_view scope, std::string_view idem_key) {
  constexpr std::array kTypes = {PgType::kBytea, PgType::kInt8, PgType::kBytea, PgType::kInt8};
  auto r = db_->query(
      "SELECT request_sha256, status, body, created_at FROM idempotency WHERE scope = $1 AND idem_key = $2",
      PgParams().bytes(scope).bytes(idem_key), kTypes, "reading an idempotent response");
  if (!r) return Unexpected(r.error());
  if (r->rows() == 0) return std::optional<StoredResponse>();
  auto response = key_rows::response_row(r->bytes(0, 0), r->integer(0, 1), r->text(0, 2), r->integer(0, 3),
                                         db_->label());
  if (!response) return Unexpected(response.error());
  return std::optional<StoredResponse>(std::move(*response));
}

Status PgKeyStore::put_response(std::string_view scope, std::string_view idem_key, const StoredResponse& response) {
  IF_RETURN_IF_ERROR(key_rows::check_response(scope, idem_key, response));
  const std::string_view hash(reinterpret_cast<const char*>(response.request_sha256.data()),
                              response.request_sha256.size());
  PgParams p;
  p.bytes(scope).bytes(idem_key).bytes(hash).int8(response.status).bytes(response.body).int8(response.created_at);
  auto r = db_->exec(
      "INSERT INTO idempotency (scope, idem_key, request_sha256, status, body, created_at) "
      "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (scope, idem_key) DO UPDATE SET "
      "request_sha256 = excluded.request_sha256, status = excluded.status, body = excluded.body, "
      "created_at = excluded.created_at",
      p, "storing an idempotent response");
  if (!r) return Unexpected(r.error());
  return {};
}

Result<uint64_t> PgKeyStore::prune_responses(core::TimeMs before) {
  auto old = db_->exec("DELETE FROM idempotency WHERE created_at < $1", PgParams().int8(before),
                       "pruning old responses");
  if (!old) return Unexpected(old.error());
  auto excess = db_->exec(
      "DELETE FROM idempotency WHERE (scope, idem_key) IN (SELECT scope, idem_key FROM idempotency "
      "ORDER BY created_at DESC, scope DESC, idem_key DESC OFFSET $1)",
      PgParams().int8(static_cast<int64_t>(kIdempotencyEntriesMax)), "pruning excess responses");
  if (!excess) return Unexpected(excess.error());
  return static_cast<uint64_t>(old->affected() + excess->affected());
}

}  // namespace idlefleet::store
