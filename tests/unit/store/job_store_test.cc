// JobStore: round trips, upserts, reopening, recovery order, limits, and the
// refusals for files that are not ours (random bytes, a newer schema, a
// damaged token array).
#include "store/job_store.h"

#include <gtest/gtest.h>
#include <sqlite3.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <limits>

#include "common/random.h"

namespace idlefleet::store::job_store_test {
namespace {

namespace fs = std::filesystem;

// A fresh directory per test, removed afterwards.
class JobStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() /
           ("idlefleet-job-store-" + std::to_string(::getpid()) + "-" + info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string db_path() const { return (dir_ / "jobs.db").string(); }

  std::unique_ptr<JobStore> open_ok() {
    auto store = JobStore::open(db_path());
    EXPECT_TRUE(store) << store.error().to_string();
    return store ? std::move(*store) : nullptr;
  }

  // Runs one statement on a separate raw connection, as a person with the
  // sqlite3 shell would, and returns `column` of the first row.
  std::string raw_sql(const std::string& sql, int column = 0) {
    sqlite3* db = nullptr;
    EXPECT_EQ(sqlite3_open(db_path().c_str(), &db), SQLITE_OK);
    sqlite3_stmt* st = nullptr;
    std::string out;
    EXPECT_EQ(sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr), SQLITE_OK) << sqlite3_errmsg(db);
    const int rc = sqlite3_step(st);
    EXPECT_TRUE(rc == SQLITE_ROW || rc == SQLITE_DONE) << sqlite3_errmsg(db);
    if (rc == SQLITE_ROW && sqlite3_column_text(st, column) != nullptr) {
      out = reinterpret_cast<const char*>(sqlite3_column_text(st, column));
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return out;
  }

  fs::path dir_;
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

TEST_F(JobStoreTest, RoundTripsEveryField) {
  auto store = open_ok();
  ASSERT_TRUE(store);
  StoredJob j;
  j.id = "job-\xe2\x9c\x93-1";
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
  j.finish_reason = "";
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
  EXPECT_EQ(raw_sql("SELECT typeof(prompt_ids) FROM jobs WHERE id = 'empty'"), "blob");

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

TEST_F(JobStoreTest, TokensAreLittleEndianInt32Blobs) {
  auto store = open_ok();
  StoredJob j = make_job("le", 1);
  j.prompt_ids = {0x01020304, -2};
  ASSERT_TRUE(store->put(std::span(&j, 1)));
  EXPECT_EQ(raw_sql("SELECT hex(prompt_ids) FROM jobs WHERE id = 'le'"), "04030201FEFFFFFF");
}

TEST_F(JobStoreTest, PutUpsertsById) {
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

TEST_F(JobStoreTest, ReopenKeepsData) {
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
  EXPECT_EQ(raw_sql("SELECT MAX(version) FROM schema_version"), std::to_string(kSchemaVersion));
}

TEST_F(JobStoreTest, LoadUnfinishedFiltersAndOrders) {
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

  // The recovery query runs from its partial index, not a table scan.
  const std::string plan = raw_sql(
      "EXPLAIN QUERY PLAN SELECT id FROM jobs WHERE state NOT IN ('done', 'failed', 'cancelled') "
      "ORDER BY created_at, id", 3);
  EXPECT_NE(plan.find("jobs_unfinished"), std::string::npos) << plan;
}

TEST_F(JobStoreTest, ListRecentIsNewestFirstAndBounded) {
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

TEST_F(JobStoreTest, TenThousandJobsInOnePut) {
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

TEST_F(JobStoreTest, LimitsAreCheckedAndABadBatchWritesNothing) {
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

TEST_F(JobStoreTest, ADamagedTokenArrayIsCorruptNamingTheJob) {
  auto store = open_ok();
  std::vector<StoredJob> jobs = {make_job("fine", 1), make_job("broken", 2)};
  ASSERT_TRUE(store->put(jobs));
  raw_sql("UPDATE jobs SET produced = x'010203' WHERE id = 'broken'");
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

}  // namespace
}  // namespace idlefleet::store::job_store_test
