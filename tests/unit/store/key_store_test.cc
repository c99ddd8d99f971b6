// KeyStore: keys round trip without their secrets, only hashes reach the
// database, revocation, usage increments beside another writer and
// data_version, stored idempotent responses and their bounds, and refusals
// for rows a person damaged; run against both implementations (SQLite, and
// PostgreSQL on a private server: tests/support/postgres_server.h). Then what
// is particular to each (files that are not ours, an old file's migration;
// schema versions and column types).
#include "store/key_store.h"

#include <gtest/gtest.h>
#include <sqlite3.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "store/pg_key_store.h"
#include "support/postgres_server.h"

namespace idlefleet::store::key_store_test {
namespace {

namespace fs = std::filesystem;

constexpr core::TimeMs kT0 = 1'700'000'000'000;

using testing::Backend;
using namespace std::string_literals;

class KeyStoreFixture : public testing::StoreFixture {
 protected:
  void start(Backend backend) { StoreFixture::start(backend, "keys.db"); }

  std::unique_ptr<KeyStore> open_ok() {
    auto store = KeyStore::open(location());
    EXPECT_TRUE(store) << store.error().to_string();
    return store ? std::move(*store) : nullptr;
  }

  // One statement on a separate connection, as a person with the sqlite3 shell or psql.
  void raw_exec(const std::string& sql) { raw_sql(sql); }
  // `sqlite` or `pg`, whichever is this test's dialect (a BLOB literal).
  void damage(const std::string& sqlite, const std::string& pg) { raw_sql(postgres_backend() ? pg : sqlite); }

  std::string file_bytes() const {
    std::string all;
    for (const char* suffix : {"", "-wal", "-shm"}) {
      std::ifstream in(db_path() + suffix, std::ios::binary);
      std::ostringstream ss;
      ss << in.rdbuf();
      all += ss.str();
    }
    return all;
  }
};

// What is particular to the SQLite store.
class KeyStoreTest : public KeyStoreFixture {
 protected:
  void SetUp() override { start(Backend::kSqlite); }
};

// What is particular to the PostgreSQL store.
class PgKeyStoreTest : public KeyStoreFixture {
 protected:
  void SetUp() override { start(Backend::kPostgres); }
};

// The contract: the same tests against both.
class KeyStoreContract : public KeyStoreFixture, public ::testing::WithParamInterface<Backend> {
 protected:
  void SetUp() override { start(GetParam()); }
};

NewKey new_key(std::string name, uint64_t rpm = 0, uint64_t tpm = 0, uint64_t spend = 0) {
  NewKey k;
  k.name = std::move(name);
  k.limits = {rpm, tpm};
  k.spend_limit_micros = spend;
  return k;
}

TEST_P(KeyStoreContract, CreateListGetRevokeRoundTrip) {
  auto store = open_ok();
  ASSERT_NE(store, nullptr);
  auto a = store->create(new_key("ci bot", 60, 10000, 5'000'000), kT0);
  ASSERT_TRUE(a) << a.error().to_string();
  auto b = store->create(new_key("notebook"), kT0 + 1);
  ASSERT_TRUE(b) << b.error().to_string();
  EXPECT_TRUE(secret_well_formed(a->secret)) << a->secret;
  EXPECT_TRUE(key_id_well_formed(a->key.id)) << a->key.id;
  EXPECT_NE(a->secret, b->secret);
  EXPECT_NE(a->key.id, b->key.id);
  EXPECT_EQ(a->key.secret_sha256, sha256(a->secret));

  auto list = store->list();
  ASSERT_TRUE(list) << list.error().to_string();
  ASSERT_EQ(list->size(), 2u);
  EXPECT_EQ((*list)[0], a->key);
  EXPECT_EQ((*list)[1], b->key);
  EXPECT_EQ((*list)[0].limits.requests_per_minute, 60u);
  EXPECT_EQ((*list)[0].limits.tokens_per_minute, 10000u);
  EXPECT_EQ((*list)[0].spend_limit_micros, 5'000'000u);

  auto revoked = store->revoke(a->key.id, kT0 + 100);
  ASSERT_TRUE(revoked) << revoked.error().to_string();
  EXPECT_EQ(revoked->revoked_at, kT0 + 100);
  // A second revoke keeps the first time.
  revoked = store->revoke(a->key.id, kT0 + 200);
  ASSERT_TRUE(revoked);
  EXPECT_EQ(revoked->revoked_at, kT0 + 100);
  auto missing = store->revoke("key_000000000000000000000000", kT0);
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, ErrorCode::kNotFound);

  // Reopened, everything is there.
  store.reset();
  store = open_ok();
  auto got = store->get(a->key.id);
  ASSERT_TRUE(got && got->has_value());
  EXPECT_TRUE((*got)->revoked());
  EXPECT_EQ((*got)->name, "ci bot");
  got = store->get("key_nope");
  ASSERT_TRUE(got);
  EXPECT_FALSE(got->has_value());
}

TEST_F(KeyStoreTest, OnlyTheHashOfASecretReachesTheFile) {
  auto store = open_ok();
  auto k = store->create(new_key("x"), kT0);
  ASSERT_TRUE(k);
  const std::string secret_hex = k->secret.substr(kSecretPrefix.size());
  const std::string bytes = file_bytes();
  EXPECT_EQ(bytes.find(k->secret), std::string::npos);
  EXPECT_EQ(bytes.find(secret_hex), std::string::npos);
  EXPECT_EQ(bytes.find(secret_hex.substr(0, 16)), std::string::npos);
  const Sha256 h = sha256(k->secret);
  EXPECT_NE(bytes.find(std::string(reinterpret_cast<const char*>(h.data()), h.size())), std::string::npos);
  // Every column of the row, as text: no secret.
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(db_path().c_str(), &db), SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db, "SELECT * FROM api_keys", -1, &st, nullptr), SQLITE_OK);
  ASSERT_EQ(sqlite3_step(st), SQLITE_ROW);
  for (int c = 0; c < sqlite3_column_count(st); ++c) {
    const auto* p = static_cast<const char*>(sqlite3_column_blob(st, c));
    const std::string v(p != nullptr ? p : "", static_cast<size_t>(sqlite3_column_bytes(st, c)));
    EXPECT_EQ(v.find(secret_hex.substr(0, 16)), std::string::npos) << sqlite3_column_name(st, c);
  }
  sqlite3_finalize(st);
  sqlite3_close(db);
}

TEST_P(KeyStoreContract, BadKeysAreRefused) {
  auto store = open_ok();
  EXPECT_EQ(store->create(new_key(""), kT0).error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(store->create(new_key("tab\there"), kT0).error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(store->create(new_key(std::string(kKeyNameBytesMax + 1, 'n')), kT0).error().code,
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(store->create(new_key("x", core::kRateLimitPerMinuteMax + 1), kT0).error().code, ErrorCode::kOutOfRange);
  EXPECT_EQ(store->create(new_key("x", 0, 0, kSpendLimitMicrosMax + 1), kT0).error().code, ErrorCode::kOutOfRange);
  auto list = store->list();
  ASSERT_TRUE(list);
  EXPECT_TRUE(list->empty());
  EXPECT_FALSE(secret_well_formed("sk-idf-"));
  EXPECT_FALSE(secret_well_formed("sk-idf-" + std::string(64, 'G')));
  EXPECT_FALSE(secret_well_formed("sk-xxx-" + std::string(64, 'a')));
  EXPECT_TRUE(secret_well_formed("sk-idf-" + std::string(64, 'a')));
}

TEST_P(KeyStoreContract, ScopesAreNormalizedStoredAndChecked) {
  EXPECT_EQ(*normalize_scopes("*"), "*");
  EXPECT_EQ(*normalize_scopes("batches, files,models,files"), "models,files,batches");
  for (const char* bad : {"", ",", "models,", "chat", "models;files", "* ,models", "MODELS"}) {
    auto n = normalize_scopes(bad);
    ASSERT_FALSE(n) << bad;
    EXPECT_EQ(n.error().code, ErrorCode::kInvalidArgument) << bad;
    EXPECT_NE(n.error().message.find("completions"), std::string::npos) << n.error().message;
  }
  EXPECT_FALSE(normalize_scopes(std::string(kScopesBytesMax + 1, 'm')));

  auto store = open_ok();
  NewKey k = new_key("reader");
  k.scopes = "files , models";
  auto made = store->create(k, kT0);
  ASSERT_TRUE(made) << made.error().to_string();
  EXPECT_EQ(made->key.scopes, "models,files");
  auto all = store->create(new_key("everything"), kT0);
  ASSERT_TRUE(all);
  EXPECT_EQ(all->key.scopes, "*");
  k.scopes = "root";
  EXPECT_EQ(store->create(k, kT0).error().code, ErrorCode::kInvalidArgument);

  auto got = store->get(made->key.id);
  ASSERT_TRUE(got && *got);
  EXPECT_EQ((*got)->scopes, "models,files");
  EXPECT_TRUE((*got)->allows("models"));
  EXPECT_TRUE((*got)->allows("files"));
  EXPECT_FALSE((*got)->allows("completions"));
  EXPECT_FALSE((*got)->allows("model"));
  // "*" is every scope but admin, which must be named.
  for (std::string_view scope : kScopes) EXPECT_EQ(all->key.allows(scope), scope != kScopeAdmin) << scope;
  k.scopes = "models,admin";
  auto admin = store->create(k, kT0);
  ASSERT_TRUE(admin) << admin.error().to_string();
  EXPECT_EQ(admin->key.scopes, "models,admin");
  EXPECT_TRUE(admin->key.allows("admin"));
  EXPECT_FALSE(admin->key.allows("files"));

  store.reset();
  raw_exec("UPDATE api_keys SET scopes = 'models,root'");
  store = open_ok();
  auto list = store->list();
  ASSERT_FALSE(list);
  EXPECT_EQ(list.error().code, ErrorCode::kCorrupt);
}

TEST_F(KeyStoreTest, AVersionOneFileGainsScopesThatAllowEverything) {
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(db_path().c_str(), &db), SQLITE_OK);
    sqlite3_close(db);
  }
  // The schema as migration 1 left it, with a key in it.
  raw_exec(
      "CREATE TABLE schema_version (version INTEGER PRIMARY KEY NOT NULL);"
      "INSERT INTO schema_version VALUES (1);"
      "CREATE TABLE api_keys (id TEXT PRIMARY KEY NOT NULL, name TEXT NOT NULL, secret_sha256 BLOB NOT NULL UNIQUE,"
      " created_at INTEGER NOT NULL, revoked_at INTEGER NOT NULL, requests_per_minute INTEGER NOT NULL,"
      " tokens_per_minute INTEGER NOT NULL, spend_limit_micros INTEGER NOT NULL, requests INTEGER NOT NULL,"
      " prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL, spend_micros INTEGER NOT NULL) STRICT;"
      "CREATE TABLE idempotency (scope TEXT NOT NULL, idem_key TEXT NOT NULL, request_sha256 BLOB NOT NULL,"
      " status INTEGER NOT NULL, body TEXT NOT NULL, created_at INTEGER NOT NULL, PRIMARY KEY (scope, idem_key)) STRICT;"
      "INSERT INTO api_keys VALUES ('key_0123456789abcdef01234567', 'old', zeroblob(32), 1, 0, 0, 0, 0, 3, 4, 5, 6);");
  auto store = open_ok();
  ASSERT_NE(store, nullptr);
  auto got = store->get("key_0123456789abcdef01234567");
  ASSERT_TRUE(got && *got) << (got ? "absent" : got.error().to_string());
  EXPECT_EQ((*got)->scopes, "*");
  EXPECT_EQ((*got)->usage.requests, 3u);
}

TEST_P(KeyStoreContract, UsageAddsUpAndNeverUndoesARevokeFromAnotherProcess) {
  auto store = open_ok();
  auto k = store->create(new_key("x", 0, 0, 1000), kT0);
  ASSERT_TRUE(k);
  const UsageDelta d1[] = {{k->key.id, {1, 10, 20, 3}}, {"key_gone0000000000000000000", {5, 5, 5, 5}}};
  ASSERT_TRUE(store->add_usage(d1));
  auto before = store->data_version();
  ASSERT_TRUE(before);
  // The CLI revokes through its own connection.
  {
    auto cli = KeyStore::open(location());
    ASSERT_TRUE(cli);
    ASSERT_TRUE((*cli)->revoke(k->key.id, kT0 + 5));
  }
  auto after = store->data_version();
  ASSERT_TRUE(after);
  EXPECT_NE(*before, *after) << "data_version must change when another connection commits";
  const UsageDelta d2[] = {{k->key.id, {2, 1, 1, 7}}};
  ASSERT_TRUE(store->add_usage(d2));
  auto got = store->get(k->key.id);
  ASSERT_TRUE(got && got->has_value());
  EXPECT_EQ((*got)->usage, (KeyUsage{3, 11, 21, 10}));
  EXPECT_EQ((*got)->revoked_at, kT0 + 5);
  auto same = store->data_version();
  ASSERT_TRUE(same);
  EXPECT_EQ(*same, *after) << "our own commits do not change data_version";
}

TEST_P(KeyStoreContract, IdempotentResponsesAreStoredBoundedAndPruned) {
  auto store = open_ok();
  StoredResponse r;
  r.request_sha256 = sha256("{\"prompt\":\"x\"}");
  r.status = 200;
  r.body = R"({"id":"cmpl-1"})";
  r.created_at = kT0;
  ASSERT_TRUE(store->put_response("key_a", "req-1", r));
  auto got = store->get_response("key_a", "req-1");
  ASSERT_TRUE(got && got->has_value());
  EXPECT_EQ((*got)->body, r.body);
  EXPECT_EQ((*got)->status, 200);
  EXPECT_EQ((*got)->request_sha256, r.request_sha256);
  // Scopes are separate.
  got = store->get_response("key_b", "req-1");
  ASSERT_TRUE(got);
  EXPECT_FALSE(got->has_value());
  // Bounds.
  EXPECT_FALSE(store->put_response("key_a", std::string(kIdempotencyKeyBytesMax + 1, 'k'), r));
  EXPECT_FALSE(store->put_response("key_a", "", r));
  StoredResponse big = r;
  big.body.assign(kIdempotencyResponseBytesMax + 1, 'b');
  EXPECT_FALSE(store->put_response("key_a", "big", big));
  // Pruning by age, then by count.
  StoredResponse old = r;
  old.created_at = kT0 - 1;
  ASSERT_TRUE(store->put_response("key_a", "old", old));
  auto n = store->prune_responses(kT0);
  ASSERT_TRUE(n) << n.error().to_string();
  EXPECT_EQ(*n, 1u);
  EXPECT_FALSE(store->get_response("key_a", "old")->has_value());
  EXPECT_TRUE(store->get_response("key_a", "req-1")->has_value());
  for (size_t i = 0; i < kIdempotencyEntriesMax + 5; ++i) {
    StoredResponse e = r;
    e.created_at = kT0 + 1 + static_cast<core::TimeMs>(i);
    ASSERT_TRUE(store->put_response("key_c", "k" + std::to_string(i), e));
  }
  n = store->prune_responses(kT0);
  ASSERT_TRUE(n);
  EXPECT_EQ(*n, 6u);  // req-1 (the oldest) and k0..k4
  EXPECT_FALSE(store->get_response("key_a", "req-1")->has_value());
  EXPECT_FALSE(store->get_response("key_c", "k4")->has_value());
  EXPECT_TRUE(store->get_response("key_c", "k5")->has_value());
}

TEST_F(KeyStoreTest, FilesThatAreNotOursAreRefused) {
  std::ofstream(db_path(), std::ios::binary) << std::string(8192, '\x5a');
  auto junk = KeyStore::open(db_path());
  ASSERT_FALSE(junk);
  EXPECT_EQ(junk.error().code, ErrorCode::kCorrupt) << junk.error().to_string();
  EXPECT_NE(junk.error().message.find("keys.db"), std::string::npos);
  fs::remove(db_path());
  {
    auto store = open_ok();
    ASSERT_NE(store, nullptr);
  }
  raw_exec("INSERT INTO schema_version (version) VALUES (99)");
  auto newer = KeyStore::open(db_path());
  ASSERT_FALSE(newer);
  EXPECT_EQ(newer.error().code, ErrorCode::kUnsupported);
}

TEST_P(KeyStoreContract, DamagedRowsGiveCorruptNamingTheKey) {
  const std::pair<const char*, const char*> damage_sql[] = {
      {"UPDATE api_keys SET secret_sha256 = x'0102'", "UPDATE api_keys SET secret_sha256 = '\\x0102'::bytea"},
      {"UPDATE api_keys SET requests = -5", "UPDATE api_keys SET requests = -5"},
      {"UPDATE api_keys SET requests_per_minute = 2000000000", "UPDATE api_keys SET requests_per_minute = 2000000000"},
      {"UPDATE api_keys SET name = ''", "UPDATE api_keys SET name = ''"},
      {"UPDATE api_keys SET id = 'not-a-key'", "UPDATE api_keys SET id = 'not-a-key'"},
  };
  { ASSERT_TRUE(open_ok()); }
  for (const auto& [sqlite, pg] : damage_sql) {
    SCOPED_TRACE(sqlite);
    raw_exec("DELETE FROM api_keys");
    std::string id;
    {
      auto store = open_ok();
      auto k = store->create(new_key("victim"), kT0);
      ASSERT_TRUE(k);
      id = k->key.id;
    }
    damage(sqlite, pg);
    auto store = open_ok();
    auto list = store->list();
    ASSERT_FALSE(list);
    EXPECT_EQ(list.error().code, ErrorCode::kCorrupt) << list.error().to_string();
    EXPECT_NE(list.error().message.find(std::string(sqlite).find("SET id") != std::string::npos ? "not-a-key" : id),
              std::string::npos)
        << list.error().to_string();
  }
  // A damaged stored response.
  auto store = open_ok();
  StoredResponse r;
  r.status = 200;
  r.body = "{}";
  ASSERT_TRUE(store->put_response("s", "k", r));
  raw_exec("UPDATE idempotency SET status = 7");
  auto got = store->get_response("s", "k");
  ASSERT_FALSE(got);
  EXPECT_EQ(got.error().code, ErrorCode::kCorrupt);
}

// data_version(), with two stores open on one database as the coordinator and
// `idlefleet admin keys` are: each sees the other's changes to the keys, never
// its own.
TEST_P(KeyStoreContract, DataVersionChangesWithAnotherConnectionsChangesOnly) {
  auto coordinator = open_ok();
  auto cli = open_ok();
  ASSERT_TRUE(coordinator && cli);
  auto version = [](KeyStore& s) {
    auto v = s.data_version();
    EXPECT_TRUE(v) << v.error().to_string();
    return v ? *v : -1;
  };
  const int64_t v0 = version(*coordinator);
  auto mine = coordinator->create(new_key("coordinator's own"), kT0);
  ASSERT_TRUE(mine);
  const UsageDelta d[] = {{mine->key.id, {1, 2, 3, 4}}};
  ASSERT_TRUE(coordinator->add_usage(d));
  ASSERT_TRUE(coordinator->revoke(mine->key.id, kT0 + 1));
  EXPECT_EQ(version(*coordinator), v0) << "the store's own commits";

  const int64_t c0 = version(*cli);
  auto made = cli->create(new_key("from the CLI"), kT0 + 2);
  ASSERT_TRUE(made);
  const int64_t v1 = version(*coordinator);
  EXPECT_NE(v1, v0) << "a key created by another connection";
  EXPECT_EQ(version(*cli), c0);
  EXPECT_EQ(version(*coordinator), v1) << "no change since";
  ASSERT_TRUE(cli->revoke(made->key.id, kT0 + 3));
  const int64_t v2 = version(*coordinator);
  EXPECT_NE(v2, v1) << "a revoke by another connection";
  const UsageDelta u[] = {{made->key.id, {1, 0, 0, 0}}};
  ASSERT_TRUE(cli->add_usage(u));
  EXPECT_NE(version(*coordinator), v2) << "usage written by another connection";
  EXPECT_EQ(version(*cli), c0) << "the CLI's own commits";
  auto seen = coordinator->get(made->key.id);
  ASSERT_TRUE(seen && seen->has_value());
  EXPECT_EQ((*seen)->usage.requests, 1u);
  EXPECT_EQ((*seen)->revoked_at, kT0 + 3);
}

// A key's name, and the scope, key and body of a stored response, are kept
// as the bytes given: NUL and bytes that are not UTF-8 too.
TEST_P(KeyStoreContract, NamesAndResponsesKeepAnyBytes) {
  auto store = open_ok();
  const std::string name = "caf\xe9 \xff\xfe bot";
  auto k = store->create(new_key(name), kT0);
  ASSERT_TRUE(k) << k.error().to_string();
  StoredResponse r;
  r.request_sha256 = sha256("body");
  r.status = 201;
  r.body = "{\"x\":\"\0\xff\"}"s;
  r.created_at = kT0;
  const std::string scope = "key_\0\xff"s, idem = "idem \xc3\x28 \0"s;
  ASSERT_TRUE(store->put_response(scope, idem, r));
  store.reset();
  store = open_ok();
  auto got = store->get(k->key.id);
  ASSERT_TRUE(got && got->has_value());
  EXPECT_EQ((*got)->name, name);
  auto response = store->get_response(scope, idem);
  ASSERT_TRUE(response && response->has_value()) << (response ? "absent" : response.error().to_string());
  EXPECT_EQ((*response)->body, r.body);
  EXPECT_EQ((*response)->status, 201);
  EXPECT_FALSE(store->get_response("key_", idem)->has_value());
  // Ids no key can have are simply not there.
  for (const std::string& id : {"key_nope"s, "key_\0"s, "key_\xff"s, ""s}) {
    auto absent = store->get(id);
    ASSERT_TRUE(absent) << absent.error().to_string();
    EXPECT_FALSE(absent->has_value());
    auto revoked = store->revoke(id, kT0);
    ASSERT_FALSE(revoked);
    EXPECT_EQ(revoked.error().code, ErrorCode::kNotFound);
  }
  const UsageDelta d[] = {{"key_\xff"s, {1, 1, 1, 1}}, {k->key.id, {1, 0, 0, 0}}};
  ASSERT_TRUE(store->add_usage(d));
  EXPECT_EQ((*store->get(k->key.id))->usage.requests, 1u);
}

TEST_F(PgKeyStoreTest, OnlyTheHashOfASecretReachesTheDatabase) {
  auto store = open_ok();
  auto k = store->create(new_key("x"), kT0);
  ASSERT_TRUE(k);
  const std::string secret_hex = k->secret.substr(kSecretPrefix.size());
  // Every column of every row, as text (bytea as hex).
  const std::string rows = raw_sql("SELECT row_to_json(k)::text FROM api_keys k");
  EXPECT_EQ(rows.find(secret_hex.substr(0, 16)), std::string::npos) << rows;
  const Sha256 h = sha256(k->secret);
  static const char kDigits[] = "0123456789abcdef";
  std::string hash_hex;
  for (uint8_t b : h) {
    hash_hex += kDigits[b >> 4];
    hash_hex += kDigits[b & 15];
  }
  EXPECT_NE(rows.find(hash_hex), std::string::npos) << rows;
}

TEST_F(PgKeyStoreTest, AFutureSchemaVersionIsUnsupported) {
  { ASSERT_TRUE(open_ok()); }
  raw_exec("INSERT INTO idlefleet_schema (store, version) VALUES ('keys', " +
           std::to_string(kPgKeysSchemaVersion + 1) + ")");
  auto store = KeyStore::open(location());
  ASSERT_FALSE(store);
  EXPECT_EQ(store.error().code, ErrorCode::kUnsupported) << store.error().to_string();
  EXPECT_NE(store.error().message.find("schema version " + std::to_string(kPgKeysSchemaVersion + 1)),
            std::string::npos)
      << store.error().to_string();
}

// A table altered by hand is reported, not misread; so is a key_changes
// without its row.
TEST_F(PgKeyStoreTest, AColumnOfAnotherTypeIsCorrupt) {
  auto store = open_ok();
  auto k = store->create(new_key("typed"), kT0);
  ASSERT_TRUE(k);
  raw_exec("ALTER TABLE api_keys ALTER COLUMN requests TYPE integer");
  auto list = store->list();
  ASSERT_FALSE(list);
  EXPECT_EQ(list.error().code, ErrorCode::kCorrupt) << list.error().to_string();
  EXPECT_NE(list.error().message.find("requests"), std::string::npos) << list.error().to_string();
  raw_exec("DELETE FROM key_changes");
  auto version = store->data_version();
  ASSERT_FALSE(version);
  EXPECT_EQ(version.error().code, ErrorCode::kCorrupt) << version.error().to_string();
  auto made = store->create(new_key("another"), kT0);
  ASSERT_FALSE(made);
  EXPECT_EQ(made.error().code, ErrorCode::kCorrupt) << made.error().to_string();
}

INSTANTIATE_TEST_SUITE_P(Backends, KeyStoreContract, ::testing::Values(Backend::kSqlite, Backend::kPostgres),
                         testing::backend_name);

}  // namespace
}  // namespace idlefleet::store::key_store_test
