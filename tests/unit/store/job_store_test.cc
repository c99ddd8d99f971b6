// JobStore: round trips, upserts, reopening, recovery order, limits and
// damaged rows, run against both implementations (SQLite, and PostgreSQL on a
// private server started for the test: tests/support/postgres_server.h); then
// what is particular to each (files that are not SQLite, WAL; URLs, servers
// that cannot be reached or restart).
#include "store/job_store.h"

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <limits>
#include <thread>

#include "common/random.h"
#include "store/pg_db.h"
#include "store/pg_job_store.h"
#include "transport/process.h"
#include "support/postgres_server.h"

namespace idlefleet::store::job_store_test {
namespace {

namespace fs = std::filesystem;

using testing::Backend;
using testing::postgres;

class JobStoreFixture : public testing::StoreFixture {
 protected:
  void start(Backend backend) { StoreFixture::start(backend, "jobs.db"); }

  std::unique_ptr<JobStore> open_ok() {
    auto store = JobStore::open(location());
    EXPECT_TRUE(store) << store.error().to_string();
    return store ? std::move(*store) : nullptr;
  }
};

// What is particular to the SQLite store.
class JobStoreTest : public JobStoreFixture {
 protected:
  void SetUp() override { start(Backend::kSqlite); }
};

// What is particular to the PostgreSQL store.
class PgJobStoreTest : public JobStoreFixture {
 protected:
  void SetUp() override { start(Backend::kPostgres); }
};

// The contract: the same tests against both.
class JobStoreContract : public JobStoreFixture, public ::testing::WithParamInterface<Backend> {
 protected:
  void SetUp() override { start(GetParam()); }
};

StoredJob make_job(std::string id, core::TimeMs created_at, std::string state = "queued") {
  StoredJob j;
  j.id = std::move(id);
  j.kind = "completion";
  j.model_id = "stories15M";
  j.request_json = R"({"prompt":"Once upon a time","max_tokens":16})";
  j.prompt_ids = {1, 9038, 2501, 263, 931};
  j.max_tokens = 16;
  j.sampling_json = R"({"temperature":0})";
  j.state = std::move(state);
  j.created_at = created_at;
  j.updated_at = created_at;
  return j;
}

std::vector<std::string> ids_of(const std::vector<StoredJob>& jobs) {
  std::vector<std::string> out;
  for (const auto& j : jobs) out.push_back(j.id);
  return out;
}

TEST_P(JobStoreContract, RoundTripsEveryField) {
  auto store = open_ok();
  ASSERT_TRUE(store);
  StoredJob j;
  j.id = "chatcmpl-0123456789ab";
  j.kind = "chat";
  j.model_id = "llama-7b";
  j.request_json = std::string(R"({"messages":[{"role":"user","content":"hi\u0000"}]})") + '\0' + "tail";
  j.prompt_ids = {0, -1, 1, std::numeric_limits<int32_t>::min(), std::numeric_limits<int32_t>::max(), 0x01020304};
  j.max_tokens = kMaxTokensMax;
  j.stop_ids = {2, 13};
  j.sampling_json = R"({"temperature":0.7,"seed":42})";
  j.batch = true;
  j.state = "running";
  j.produced = {5, 6, 7, -7};
  j.finish_reason = "failed: \xff\xfe not UTF-8";  // any bytes, in both stores
  j.attempts_json = R"([{"number":1,"vehicle":"car-a"}])";
  j.created_at = -5;  // before the epoch: only an integer to the store
  j.updated_at = std::numeric_limits<int64_t>::max();
  ASSERT_TRUE(store->put(std::span(&j, 1)));

  auto got = store->get(j.id);
  ASSERT_TRUE(got) << got.error().to_string();
  ASSERT_TRUE(got->has_value());
  EXPECT_EQ(**got, j);

  // Empty everything that may be empty: arrays come back empty, not missing.
  StoredJob e = make_job("empty", 1);
  e.model_id.clear();
  e.request_json.clear();
  e.prompt_ids.clear();
  e.sampling_json.clear();
  e.attempts_json.clear();
  ASSERT_TRUE(store->put(std::span(&e, 1)));
  auto got_e = store->get("empty");
  ASSERT_TRUE(got_e && got_e->has_value());
  EXPECT_EQ(**got_e, e);
  if (postgres_backend()) {
    EXPECT_EQ(raw_sql("SELECT pg_typeof(prompt_ids)::text FROM jobs WHERE id = 'empty'"), "bytea");
    EXPECT_EQ(raw_sql("SELECT length(prompt_ids) FROM jobs WHERE id = 'empty'"), "0");
  } else {
    EXPECT_EQ(raw_sql("SELECT typeof(prompt_ids) FROM jobs WHERE id = 'empty'"), "blob");
  }

  // An embedding job: no tokens to produce, no sampling to keep.
  StoredJob emb = make_job("emb-1-0", 2);
  emb.kind = "embedding";
  emb.max_tokens = 0;
  ASSERT_TRUE(store->put(std::span(&emb, 1)));
  auto got_emb = store->get("emb-1-0");
  ASSERT_TRUE(got_emb && got_emb->has_value());
  EXPECT_EQ(**got_emb, emb);

  auto missing = store->get("nope");
  ASSERT_TRUE(missing);
  EXPECT_FALSE(missing->has_value());
}

TEST_P(JobStoreContract, TokensAreLittleEndianInt32Blobs) {
  auto store = open_ok();
  StoredJob j = make_job("le", 1);
  j.prompt_ids = {0x01020304, -2};
  ASSERT_TRUE(store->put(std::span(&j, 1)));
  if (postgres_backend()) {
    EXPECT_EQ(raw_sql("SELECT upper(encode(prompt_ids, 'hex')) FROM jobs WHERE id = 'le'"), "04030201FEFFFFFF");
  } else {
    EXPECT_EQ(raw_sql("SELECT hex(prompt_ids) FROM jobs WHERE id = 'le'"), "04030201FEFFFFFF");
  }
}

TEST_P(JobStoreContract, PutUpsertsById) {
  auto store = open_ok();
  StoredJob j = make_job("a", 10);
  ASSERT_TRUE(store->put(std::span(&j, 1)));
  j.state = "done";
  j.produced = {1, 2, 3};
  j.finish_reason = "stop";
  j.updated_at = 20;
  ASSERT_TRUE(store->put(std::span(&j, 1)));
  auto got = store->get("a");
  ASSERT_TRUE(got && got->has_value());
  EXPECT_EQ(**got, j);
  EXPECT_EQ(raw_sql("SELECT COUNT(*) FROM jobs"), "1");

  // Within one batch the later entry for an id wins.
  std::vector<StoredJob> batch = {make_job("b", 1, "queued"), make_job("b", 1, "running")};
  ASSERT_TRUE(store->put(batch));
  EXPECT_EQ((*store->get("b"))->state, "running");
}

TEST_P(JobStoreContract, ReopenKeepsData) {
  {
    auto store = open_ok();
    std::vector<StoredJob> jobs = {make_job("x", 1), make_job("y", 2, "done")};
    ASSERT_TRUE(store->put(jobs));
  }
  auto store = open_ok();
  ASSERT_TRUE(store);
  auto x = store->get("x");
  ASSERT_TRUE(x && x->has_value());
  EXPECT_EQ(**x, make_job("x", 1));
  auto counts = store->count_by_state();
  ASSERT_TRUE(counts);
  EXPECT_EQ(counts->at("queued"), 1u);
  EXPECT_EQ(counts->at("done"), 1u);
  EXPECT_EQ(counts->at("running"), 0u);  // every state present
  EXPECT_EQ(counts->size(), 7u);
  if (postgres_backend()) {
    EXPECT_EQ(raw_sql("SELECT MAX(version) FROM idlefleet_schema WHERE store = 'jobs'"),
              std::to_string(kPgJobsSchemaVersion));
  } else {
    EXPECT_EQ(raw_sql("SELECT MAX(version) FROM schema_version"), std::to_string(kSchemaVersion));
  }
}

TEST_P(JobStoreContract, LoadUnfinishedFiltersAndOrders) {
  auto store = open_ok();
  std::vector<StoredJob> jobs = {
      make_job("late", 30, "queued"),   make_job("done", 5, "done"),     make_job("b", 10, "running"),
      make_job("a", 10, "preempted"),   make_job("failed", 1, "failed"), make_job("gone", 2, "cancelled"),
      make_job("first", 0, "assigned"),
  };
  ASSERT_TRUE(store->put(jobs));
  auto unfinished = store->load_unfinished();
  ASSERT_TRUE(unfinished) << unfinished.error().to_string();
  EXPECT_EQ(ids_of(*unfinished), (std::vector<std::string>{"first", "a", "b", "late"}));

  // A job that finishes drops out.
  jobs[0].state = "done";
  ASSERT_TRUE(store->put(std::span(jobs.data(), 1)));
  unfinished = store->load_unfinished();
  ASSERT_TRUE(unfinished);
  EXPECT_EQ(ids_of(*unfinished), (std::vector<std::string>{"first", "a", "b"}));

  // The recovery query can run from its partial index, not a table scan
  // (PostgreSQL prefers a scan of a table this small unless told otherwise).
  const std::string query =
      "SELECT id FROM jobs WHERE state NOT IN ('done', 'failed', 'cancelled') ORDER BY created_at, id";
  const std::string plan = postgres_backend() ? raw_sql("SET enable_seqscan = off; EXPLAIN " + query)
                                              : raw_sql("EXPLAIN QUERY PLAN " + query, 3);
  EXPECT_NE(plan.find("jobs_unfinished"), std::string::npos) << plan;
}

TEST_P(JobStoreContract, ListRecentIsNewestFirstAndBounded) {
  auto store = open_ok();
  std::vector<StoredJob> jobs = {make_job("j1", 1), make_job("j3", 3, "done"), make_job("j2", 2),
                                 make_job("j3b", 3)};
  ASSERT_TRUE(store->put(jobs));
  auto recent = store->list_recent(3);
  ASSERT_TRUE(recent);
  EXPECT_EQ(ids_of(*recent), (std::vector<std::string>{"j3b", "j3", "j2"}));
  auto none = store->list_recent(0);
  ASSERT_TRUE(none);
  EXPECT_TRUE(none->empty());
  auto too_many = store->list_recent(kListRecentJobsMax + 1);
  ASSERT_FALSE(too_many);
  EXPECT_EQ(too_many.error().code, ErrorCode::kOutOfRange);
}

TEST_P(JobStoreContract, TenThousandJobsInOnePut) {
  auto store = open_ok();
  std::vector<StoredJob> jobs;
  Rng rng(7);
  for (int i = 0; i < 10000; ++i) {
    StoredJob j = make_job("job-" + std::to_string(i), i, i % 3 == 0 ? "done" : "queued");
    j.produced.resize(rng.below(64));
    for (auto& t : j.produced) t = static_cast<int32_t>(rng.next());
    jobs.push_back(std::move(j));
  }
  const auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE(store->put(jobs));
  const auto put_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start).count();
  // One transaction: well under a second here; the bound leaves room for sanitizers and slow disks.
  EXPECT_LT(put_ms, 10000);
  auto unfinished = store->load_unfinished();
  ASSERT_TRUE(unfinished);
  EXPECT_EQ(unfinished->size(), 6666u);
  auto j4 = store->get("job-4");
  ASSERT_TRUE(j4 && j4->has_value());
  EXPECT_EQ(**j4, jobs[4]);
  auto counts = store->count_by_state();
  ASSERT_TRUE(counts);
  EXPECT_EQ(counts->at("done"), 3334u);
  std::printf("put of 10000 jobs: %lld ms\n", static_cast<long long>(put_ms));
}

TEST_P(JobStoreContract, LimitsAreCheckedAndABadBatchWritesNothing) {
  auto store = open_ok();
  auto refused = [&](StoredJob bad, ErrorCode code, const std::string& field) {
    std::vector<StoredJob> batch = {make_job("good", 1), std::move(bad)};
    auto s = store->put(batch);
    ASSERT_FALSE(s) << field;
    EXPECT_EQ(s.error().code, code) << s.error().to_string();
    EXPECT_NE(s.error().message.find(field), std::string::npos) << s.error().to_string();
    auto good = store->get("good");
    ASSERT_TRUE(good);
    EXPECT_FALSE(good->has_value()) << "a refused batch left a job behind";
  };
  StoredJob j = make_job(std::string(kIdBytesMax + 1, 'x'), 1);
  refused(j, ErrorCode::kOutOfRange, "id");
  j = make_job("big-request", 1);
  j.request_json.assign(kRequestJsonBytesMax + 1, ' ');
  refused(j, ErrorCode::kOutOfRange, "request_json");
  j = make_job("long", 1);
  j.produced.resize(kTokensMax + 1);
  refused(j, ErrorCode::kOutOfRange, "produced");
  j = make_job("weird-state", 1, "paused");
  refused(j, ErrorCode::kInvalidArgument, "state");
  j = make_job("weird-kind", 1);
  j.kind = "image";
  refused(j, ErrorCode::kInvalidArgument, "kind");
  refused(make_job("", 1), ErrorCode::kInvalidArgument, "empty id");
  refused(make_job("job\xe2\x9c\x93", 1), ErrorCode::kInvalidArgument, "printable ASCII");
  refused(make_job("job 1", 1), ErrorCode::kInvalidArgument, "printable ASCII");
  refused(make_job(std::string("job\0", 4), 1), ErrorCode::kInvalidArgument, "printable ASCII");

  // At the limits exactly: accepted.
  j = make_job(std::string(kIdBytesMax, 'y'), 1);
  j.request_json.assign(kRequestJsonBytesMax, ' ');
  j.produced.resize(kTokensMax);
  ASSERT_TRUE(store->put(std::span(&j, 1)));
  auto got = store->get(j.id);
  ASSERT_TRUE(got && got->has_value());
  EXPECT_EQ((*got)->produced.size(), kTokensMax);
}

TEST_F(JobStoreTest, RandomBytesAreAClearError) {
  {
    std::ofstream f(db_path(), std::ios::binary);
    Rng rng(1);
    for (int i = 0; i < 8192; ++i) f.put(static_cast<char>(rng.next()));
  }
  const auto before = fs::file_size(db_path());
  auto store = JobStore::open(db_path());
  ASSERT_FALSE(store);
  EXPECT_EQ(store.error().code, ErrorCode::kCorrupt) << store.error().to_string();
  EXPECT_NE(store.error().message.find(db_path()), std::string::npos) << store.error().to_string();
  EXPECT_EQ(fs::file_size(db_path()), before) << "the store must not write over a file it does not understand";
}

TEST_F(JobStoreTest, AnUnopenablePathIsAnIoError) {
  auto store = JobStore::open((dir_ / "no-such-dir" / "jobs.db").string());
  ASSERT_FALSE(store);
  EXPECT_EQ(store.error().code, ErrorCode::kIo) << store.error().to_string();
  EXPECT_NE(store.error().message.find("no-such-dir"), std::string::npos);
}

TEST_F(JobStoreTest, AFutureSchemaVersionIsUnsupported) {
  { ASSERT_TRUE(open_ok()); }
  raw_sql("INSERT INTO schema_version (version) VALUES (" + std::to_string(kSchemaVersion + 1) + ")");
  auto store = JobStore::open(db_path());
  ASSERT_FALSE(store);
  EXPECT_EQ(store.error().code, ErrorCode::kUnsupported) << store.error().to_string();
  EXPECT_NE(store.error().message.find("schema version " + std::to_string(kSchemaVersion + 1)), std::string::npos) << store.error().to_string();
}

TEST_F(JobStoreTest, WalModeIsOn) {
  auto store = open_ok();
  ASSERT_TRUE(store);
  EXPECT_EQ(raw_sql("PRAGMA journal_mode"), "wal");
}

TEST_P(JobStoreContract, ADamagedTokenArrayIsCorruptNamingTheJob) {
  auto store = open_ok();
  std::vector<StoredJob> jobs = {make_job("fine", 1), make_job("broken", 2)};
  ASSERT_TRUE(store->put(jobs));
  raw_sql(postgres_backend() ? "UPDATE jobs SET produced = '\\x010203'::bytea WHERE id = 'broken'"
                             : "UPDATE jobs SET produced = x'010203' WHERE id = 'broken'");
  auto got = store->get("broken");
  ASSERT_FALSE(got);
  EXPECT_EQ(got.error().code, ErrorCode::kCorrupt);
  EXPECT_NE(got.error().message.find("'broken'"), std::string::npos) << got.error().to_string();
  EXPECT_NE(got.error().message.find("produced"), std::string::npos) << got.error().to_string();
  auto all = store->load_unfinished();
  ASSERT_FALSE(all);
  EXPECT_EQ(all.error().code, ErrorCode::kCorrupt);
  // The other job still reads, and the store keeps working after the error.
  auto fine = store->get("fine");
  ASSERT_TRUE(fine && fine->has_value());
  raw_sql("UPDATE jobs SET state = 'paused' WHERE id = 'fine'");
  auto counts = store->count_by_state();
  ASSERT_FALSE(counts);
  EXPECT_EQ(counts.error().code, ErrorCode::kCorrupt);
}

TEST_F(JobStoreTest, InMemoryStoreForTests) {
  auto store = JobStore::open(":memory:");
  ASSERT_TRUE(store) << store.error().to_string();
  StoredJob j = make_job("m", 1);
  ASSERT_TRUE((*store)->put(std::span(&j, 1)));
  auto got = (*store)->get("m");
  ASSERT_TRUE(got && got->has_value());
}

TEST_F(PgJobStoreTest, AFutureSchemaVersionIsUnsupported) {
  { ASSERT_TRUE(open_ok()); }
  raw_sql("INSERT INTO idlefleet_schema (store, version) VALUES ('jobs', " +
          std::to_string(kPgJobsSchemaVersion + 1) + ")");
  auto store = JobStore::open(location());
  ASSERT_FALSE(store);
  EXPECT_EQ(store.error().code, ErrorCode::kUnsupported) << store.error().to_string();
  EXPECT_NE(store.error().message.find("schema version " + std::to_string(kPgJobsSchemaVersion + 1)),
            std::string::npos)
      << store.error().to_string();
}

TEST_F(PgJobStoreTest, AnUnreachableServerIsAnIoErrorThatHidesThePassword) {
  auto port = transport::free_loopback_port();
  ASSERT_TRUE(port);
  const std::string url = "postgresql://someone:s3cret@127.0.0.1:" + std::to_string(*port) + "/jobs?connect_timeout=2";
  auto store = JobStore::open(url);
  ASSERT_FALSE(store);
  EXPECT_EQ(store.error().code, ErrorCode::kIo) << store.error().to_string();
  EXPECT_NE(store.error().message.find("someone:***@127.0.0.1"), std::string::npos) << store.error().to_string();
  EXPECT_EQ(store.error().message.find("s3cret"), std::string::npos) << store.error().to_string();
  EXPECT_EQ(redact_postgres_url("postgres://h/db?user=u&password=pw&sslmode=disable"),
            "postgres://h/db?user=u&password=***&sslmode=disable");
}

TEST_F(PgJobStoreTest, AMalformedUrlIsInvalid) {
  for (const std::string url : {"postgresql://h/db?nosuchoption=1", "postgresql://[::1/db", "postgresql://h/db?x"}) {
    auto store = JobStore::open(url);
    ASSERT_FALSE(store) << url;
    EXPECT_EQ(store.error().code, ErrorCode::kInvalidArgument) << url << ": " << store.error().to_string();
  }
  auto huge = JobStore::open("postgresql://h/" + std::string(kStoreLocationBytesMax, 'd'));
  ASSERT_FALSE(huge);
  EXPECT_EQ(huge.error().code, ErrorCode::kInvalidArgument);
}

// A server that restarts, or is killed and started again, costs the store at
// most the call in flight: the next ones reconnect, and committed jobs are there.
TEST_F(PgJobStoreTest, ReconnectsAfterTheServerRestartsOrIsKilled) {
  auto store = open_ok();
  ASSERT_TRUE(store);
  std::vector<StoredJob> jobs = {make_job("before", 1)};
  ASSERT_TRUE(store->put(jobs));
  for (bool killed : {false, true}) {
    if (killed) {
      postgres().kill();
      ASSERT_TRUE(postgres().restart());
    } else {
      ASSERT_TRUE(postgres().restart());
    }
    int failures = 0;
    Status put;
    for (int attempt = 0; attempt < 3 && !(put = store->put(jobs)); ++attempt) {
      ++failures;
      EXPECT_EQ(put.error().code, ErrorCode::kIo) << put.error().to_string();
    }
    ASSERT_TRUE(put) << put.error().to_string();
    EXPECT_LE(failures, 1) << (killed ? "after a kill" : "after a restart");
    jobs.push_back(make_job(killed ? "after-kill" : "after-restart", 2));
    ASSERT_TRUE(store->put(jobs));
  }
  auto unfinished = store->load_unfinished();
  ASSERT_TRUE(unfinished) << unfinished.error().to_string();
  EXPECT_EQ(ids_of(*unfinished), (std::vector<std::string>{"before", "after-kill", "after-restart"}));
}

// Replicas that start together migrate the database once between them.
TEST_F(PgJobStoreTest, StoresOpeningTogetherMigrateOnce) {
  constexpr int kStores = 6;
  std::vector<Result<std::unique_ptr<JobStore>>> opened;
  opened.reserve(kStores);
  for (int i = 0; i < kStores; ++i) opened.emplace_back(Unexpected(ErrorCode::kInternal, "not run"));
  std::vector<std::thread> threads;
  for (int i = 0; i < kStores; ++i) {
    threads.emplace_back([&, i] { opened[static_cast<size_t>(i)] = JobStore::open(location()); });
  }
  for (auto& t : threads) t.join();
  for (auto& o : opened) ASSERT_TRUE(o) << o.error().to_string();
  EXPECT_EQ(raw_sql("SELECT COUNT(*) FROM idlefleet_schema WHERE store = 'jobs'"),
            std::to_string(kPgJobsSchemaVersion));
  StoredJob j = make_job("shared", 1);
  ASSERT_TRUE((*opened[0])->put(std::span(&j, 1)));
  auto got = (*opened[kStores - 1])->get("shared");
  ASSERT_TRUE(got && got->has_value());
  EXPECT_EQ(**got, j);
}

// A table altered by hand is reported, not misread.
TEST_F(PgJobStoreTest, AColumnOfAnotherTypeIsCorrupt) {
  auto store = open_ok();
  StoredJob j = make_job("typed", 1);
  ASSERT_TRUE(store->put(std::span(&j, 1)));
  raw_sql("ALTER TABLE jobs ALTER COLUMN max_tokens TYPE integer");
  auto got = store->get("typed");
  ASSERT_FALSE(got);
  EXPECT_EQ(got.error().code, ErrorCode::kCorrupt) << got.error().to_string();
  EXPECT_NE(got.error().message.find("max_tokens"), std::string::npos) << got.error().to_string();
}

// A put is pipelined in groups of kPgPipelineGroupMax rows: a row the server
// refuses deep inside a later group fails the put, leaves nothing of it
// behind, and the connection goes on working.
TEST_F(PgJobStoreTest, ARowRefusedInsideAPipelinedPutLeavesNothing) {
  auto store = open_ok();
  raw_sql("ALTER TABLE jobs ADD CONSTRAINT test_refuses_one CHECK (id <> 'job-1300')");
  std::vector<StoredJob> jobs;
  for (int i = 0; i < 2000; ++i) jobs.push_back(make_job("job-" + std::to_string(i), i));
  static_assert(kPgPipelineGroupMax < 1300, "the refused row must lie beyond the first group");
  auto put = store->put(jobs);
  ASSERT_FALSE(put);
  EXPECT_NE(put.error().message.find("test_refuses_one"), std::string::npos) << put.error().to_string();
  EXPECT_EQ(raw_sql("SELECT COUNT(*) FROM jobs"), "0");
  jobs.erase(jobs.begin() + 1300);
  ASSERT_TRUE(store->put(jobs));
  auto counts = store->count_by_state();
  ASSERT_TRUE(counts) << counts.error().to_string();
  EXPECT_EQ(counts->at("queued"), 1999u);
}

INSTANTIATE_TEST_SUITE_P(Backends, JobStoreContract, ::testing::Values(Backend::kSqlite, Backend::kPostgres),
                         testing::backend_name);

}  // namespace
}  // namespace idlefleet::store::job_store_test
