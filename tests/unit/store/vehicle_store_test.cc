// VehicleStore: a key is pinned once and never replaced, a receipt is stored
// once per (job, attempt) (a replay is refused, across reopening too), and
// damaged rows are reported, not trusted.
#include "store/vehicle_store.h"

#include <gtest/gtest.h>
#include <sqlite3.h>
#include <unistd.h>

#include <filesystem>

namespace idlefleet::store::vehicle_store_test {
namespace {

namespace fs = std::filesystem;

class VehicleStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("idlefleet-vehicle-store-" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path() const { return (dir_ / "vehicles.sqlite3").string(); }
  std::unique_ptr<VehicleStore> open_ok() {
    auto s = VehicleStore::open(path());
    EXPECT_TRUE(s) << s.error().to_string();
    return s ? std::move(*s) : nullptr;
  }
  fs::path dir_;
};

core::ReceiptMessage receipt(const std::string& job, uint32_t attempt) {
  core::ReceiptMessage r;
  r.vehicle_id = "car-01";
  r.job_id = job;
  r.attempt = attempt;
  r.model_id = "m";
  r.outcome = "done";
  r.output_sha256 = std::string(64, '1');
  r.energy_mwh = 7;
  r.signature = std::string(128, 'a');
  return r;
}

TEST_F(VehicleStoreTest, AKeyIsPinnedOnceAndNeverReplaced) {
  auto s = open_ok();
  const VehicleRecord v{"car-01", std::string(64, 'a'), "", 5};
  ASSERT_TRUE(s->put_vehicle(v));
  ASSERT_TRUE(s->put_vehicle(v));  // the same key again: fine
  VehicleRecord other = v;
  other.public_key = std::string(64, 'b');
  auto st = s->put_vehicle(other);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, ErrorCode::kAlreadyExists);
  for (const VehicleRecord& bad : {VehicleRecord{"car 01", std::string(64, 'a'), "", 0},
                                   VehicleRecord{"car-02", "short", "", 0},
                                   VehicleRecord{"car-02", std::string(64, 'A'), "", 0}}) {
    EXPECT_EQ(s->put_vehicle(bad).error().code, ErrorCode::kInvalidArgument) << bad.vehicle_id << " " << bad.public_key;
  }
  s.reset();
  s = open_ok();
  auto all = s->vehicles();
  ASSERT_TRUE(all);
  ASSERT_EQ(all->size(), 1u);
  EXPECT_EQ(all->front(), v);
  EXPECT_FALSE(*s->vehicle("car-02"));
}

TEST_F(VehicleStoreTest, AReceiptIsStoredOnceAndAReplayIsRefused) {
  auto s = open_ok();
  auto first = s->put_receipt(receipt("j1", 1), "alice", 10);
  ASSERT_TRUE(first);
  EXPECT_TRUE(*first);
  core::ReceiptMessage forged = receipt("j1", 1);
  forged.energy_mwh = 9999;
  EXPECT_FALSE(*s->put_receipt(forged, "alice", 11));
  ASSERT_TRUE(*s->put_receipt(receipt("j1", 2), "bob", 12));
  s.reset();
  s = open_ok();
  EXPECT_FALSE(*s->put_receipt(receipt("j1", 2), "bob", 13));
  auto got = s->receipts_for_job("j1");
  ASSERT_TRUE(got) << got.error().to_string();
  ASSERT_EQ(got->size(), 2u);
  EXPECT_EQ((*got)[0].receipt, receipt("j1", 1));
  EXPECT_EQ((*got)[0].owner_id, "alice");
  EXPECT_EQ((*got)[1].accepted_at, 12);
  EXPECT_TRUE(s->receipts_for_job("j2")->empty());
}

TEST_F(VehicleStoreTest, DamagedRowsAreReported) {
  {
    auto s = open_ok();
    ASSERT_TRUE(s->put_vehicle({"car-01", std::string(64, 'a'), "", 5}));
    ASSERT_TRUE(*s->put_receipt(receipt("j1", 1), "", 10));
  }
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path().c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db,
                         "UPDATE vehicles SET public_key = 'zz'; UPDATE receipts SET receipt_json = '{\"type\":1}'",
                         nullptr, nullptr, nullptr),
            SQLITE_OK);
  sqlite3_close(db);
  auto s = open_ok();
  auto v = s->vehicles();
  ASSERT_FALSE(v);
  EXPECT_EQ(v.error().code, ErrorCode::kCorrupt);
  auto r = s->receipts_for_job("j1");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kCorrupt);
}

// An owner's policy: none until set, replaced by the next, kept across
// reopening, and a damaged row is reported.
TEST_F(VehicleStoreTest, APolicyIsStoredReplacedAndCheckedWhenRead) {
  {
    auto s = open_ok();
    auto none = s->policy("car-01");
    ASSERT_TRUE(none) << none.error().to_string();
    EXPECT_FALSE(none->has_value());
    core::OwnerPolicy p;
    p.opted_in = true;
    p.soc_floor_pct = 55.0;
    ASSERT_TRUE(s->put_policy("car-01", p, 100));
    p.soc_floor_pct = 45.0;
    p.price_cap_micros_per_kwh = 300'000;
    ASSERT_TRUE(s->put_policy("car-01", p, 200));
    core::OwnerPolicy bad;
    bad.soc_floor_pct = 101.0;
    auto refused = s->put_policy("car-01", bad, 300);
    ASSERT_FALSE(refused);
    EXPECT_NE(refused.error().message.find("soc_floor_pct"), std::string::npos);
    EXPECT_FALSE(s->put_policy("car 01", p, 300));
  }
  {
    auto s = open_ok();
    auto got = s->policy("car-01");
    ASSERT_TRUE(got && got->has_value());
    EXPECT_EQ((*got)->updated_at, 200);
    EXPECT_EQ((*got)->policy.soc_floor_pct, 45.0);
    EXPECT_EQ((*got)->policy.price_cap_micros_per_kwh, 300'000);
    EXPECT_TRUE((*got)->policy.opted_in);
  }
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path().c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "UPDATE vehicle_policies SET policy_json = '{\"soc_floor_pct\":\"low\"}'", nullptr,
                         nullptr, nullptr),
            SQLITE_OK);
  sqlite3_close(db);
  auto s = open_ok();
  auto damaged = s->policy("car-01");
  ASSERT_FALSE(damaged);
  EXPECT_EQ(damaged.error().code, ErrorCode::kCorrupt);
}

TEST_F(VehicleStoreTest, StandingsPersistAndDamagedOnesAreReported) {
  core::VehicleStanding q;
  q.standing = 100;
  q.checks_agreed = 3;
  q.checks_faulted = 2;
  q.quarantined = true;
  q.quarantine_reason = "its output for job j differed at token 5";
  q.quarantined_at = 77;
  {
    auto s = open_ok();
    core::VehicleStanding good;
    good.standing = 510;
    good.checks_agreed = 1;
    good.agreed_since_fault = 1;
    ASSERT_TRUE(s->put_standing("car-01", good, 5));
    ASSERT_TRUE(s->put_standing("car-02", good, 5));
    ASSERT_TRUE(s->put_standing("car-02", q, 6));  // replaced
    // Garbage is refused before it is written.
    core::VehicleStanding bad = q;
    bad.standing = 1001;
    EXPECT_FALSE(s->put_standing("car-03", bad, 7));
    bad = q;
    bad.quarantine_reason = std::string(core::kQuarantineReasonBytesMax + 1, 'x');
    EXPECT_FALSE(s->put_standing("car-03", bad, 7));
    EXPECT_FALSE(s->put_standing("car 03", q, 7));
  }
  auto s = open_ok();  // across reopening
  auto all = s->standings();
  ASSERT_TRUE(all) << all.error().to_string();
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[0].first, "car-01");
  EXPECT_EQ((*all)[0].second.standing, 510);
  EXPECT_FALSE((*all)[0].second.quarantined);
  EXPECT_EQ((*all)[1].first, "car-02");
  EXPECT_TRUE((*all)[1].second.quarantined);
  EXPECT_EQ((*all)[1].second.quarantine_reason, q.quarantine_reason);
  EXPECT_EQ((*all)[1].second.quarantined_at, 77);
  EXPECT_EQ((*all)[1].second.checks_faulted, 2u);
  s.reset();
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path().c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "UPDATE standings SET standing = 5000 WHERE vehicle_id = 'car-02'", nullptr, nullptr,
                         nullptr),
            SQLITE_OK);
  sqlite3_close(db);
  auto damaged = open_ok()->standings();
  ASSERT_FALSE(damaged);
  EXPECT_EQ(damaged.error().code, ErrorCode::kCorrupt);
  EXPECT_NE(damaged.error().message.find("car-02"), std::string::npos);
}

}  // namespace
}  // namespace idlefleet::store::vehicle_store_test
