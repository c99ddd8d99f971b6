// VehicleStore: a key is pinned once and never replaced, a receipt is stored
// once per (job, attempt) (a replay is refused, across reopening too),
// owners, enrolment codes and enrolment, policies and standings, and damaged
// rows are reported, not trusted; run against both implementations (SQLite,
// and PostgreSQL on a private server: tests/support/postgres_server.h). Then
// what is particular to each.
#include "store/vehicle_store.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <thread>
#include <tuple>

#include "common/random.h"
#include "store/job_store.h"
#include "store/pg_vehicle_store.h"
#include "support/postgres_server.h"

namespace idlefleet::store::vehicle_store_test {
namespace {

namespace fs = std::filesystem;

using testing::Backend;
using namespace std::string_literals;

class VehicleStoreFixture : public testing::StoreFixture {
 protected:
  void start(Backend backend) { StoreFixture::start(backend, "vehicles.sqlite3"); }
  std::unique_ptr<VehicleStore> open_ok() {
    auto s = VehicleStore::open(location());
    EXPECT_TRUE(s) << s.error().to_string();
    return s ? std::move(*s) : nullptr;
  }
  // `sqlite` or `pg`, whichever is this test's dialect (a BLOB literal, a cast).
  void damage(const std::string& sqlite, const std::string& pg) { raw_sql(postgres_backend() ? pg : sqlite); }
};

// What is particular to the SQLite store.
class VehicleStoreTest : public VehicleStoreFixture {
 protected:
  void SetUp() override { start(Backend::kSqlite); }
};

// What is particular to the PostgreSQL store.
class PgVehicleStoreTest : public VehicleStoreFixture {
 protected:
  void SetUp() override { start(Backend::kPostgres); }
};

// The contract: the same tests against both.
class VehicleStoreContract : public VehicleStoreFixture, public ::testing::WithParamInterface<Backend> {
 protected:
  void SetUp() override { start(GetParam()); }
};

constexpr core::TimeMs kT0 = 1'700'000'000'000;

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

TEST_P(VehicleStoreContract, AKeyIsPinnedOnceAndNeverReplaced) {
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
                                   VehicleRecord{"car-02", std::string(64, 'A'), "", 0},
                                   VehicleRecord{"car-02", std::string(64, 'a'), std::string(129, 'o'), 0}}) {
    EXPECT_EQ(s->put_vehicle(bad).error().code, ErrorCode::kInvalidArgument) << bad.vehicle_id << " " << bad.public_key;
  }
  s.reset();
  s = open_ok();
  auto all = s->vehicles();
  ASSERT_TRUE(all);
  ASSERT_EQ(all->size(), 1u);
  EXPECT_EQ(all->front(), v);
  EXPECT_FALSE(*s->vehicle("car-02"));
  // An id no vehicle can have is simply not there.
  for (const std::string& id : {"car 01"s, ""s, "car\0"s, "car-\xff"s}) {
    auto got = s->vehicle(id);
    ASSERT_TRUE(got) << got.error().to_string();
    EXPECT_FALSE(got->has_value());
    auto policy = s->policy(id);
    ASSERT_TRUE(policy) << policy.error().to_string();
    EXPECT_FALSE(policy->has_value());
  }
}

TEST_P(VehicleStoreContract, AReceiptIsStoredOnceAndAReplayIsRefused) {
  auto s = open_ok();
  auto first = s->put_receipt(receipt("j1", 1), "alice", 10);
  ASSERT_TRUE(first) << first.error().to_string();
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

// receipt_keys(): every receipt, by job then attempt, and whether it metered
// energy or wear (what `idlefleet ledger verify` expects to find paid).
TEST_P(VehicleStoreContract, ReceiptKeysTellWhichReceiptsMetered) {
  auto s = open_ok();
  core::ReceiptMessage energy = receipt("job-b", 2);
  core::ReceiptMessage nothing = receipt("job-b", 1);
  nothing.energy_mwh = 0;
  core::ReceiptMessage wear = receipt("job-a", 3);
  wear.energy_mwh = 0;
  wear.wear_micro_hours = 5;
  core::ReceiptMessage big = receipt("job-B", 1);  // upper case sorts first, bytewise
  big.energy_mwh = core::kReceiptEnergyMwhMax;
  for (const auto* r : {&energy, &nothing, &wear, &big}) ASSERT_TRUE(*s->put_receipt(*r, "", 1));
  auto keys = s->receipt_keys();
  ASSERT_TRUE(keys) << keys.error().to_string();
  ASSERT_EQ(keys->size(), 4u);
  const std::vector<std::tuple<std::string, uint32_t, bool>> want = {
      {"job-B", 1, true}, {"job-a", 3, true}, {"job-b", 1, false}, {"job-b", 2, true}};
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ((*keys)[i].job_id, std::get<0>(want[i])) << i;
    EXPECT_EQ((*keys)[i].attempt, std::get<1>(want[i])) << i;
    EXPECT_EQ((*keys)[i].metered, std::get<2>(want[i])) << i;
  }
}

// Owners' names, owner ids, a receipt's job and vehicle and a quarantine
// reason are kept as the bytes given: NUL and bytes that are not UTF-8 too.
TEST_P(VehicleStoreContract, FreeFormFieldsKeepAnyBytes) {
  auto s = open_ok();
  const std::string name = "K\xe5ri \xff\xfe owner";
  auto owner = s->create_owner(name, kT0);
  ASSERT_TRUE(owner) << owner.error().to_string();
  const std::string odd_owner = "own\0\xff"s;
  ASSERT_TRUE(s->put_vehicle({"car-01", std::string(64, 'a'), odd_owner, 5}));
  auto mine = s->vehicles_of(odd_owner);
  ASSERT_TRUE(mine) << mine.error().to_string();
  ASSERT_EQ(mine->size(), 1u);
  EXPECT_EQ(mine->front().owner_id, odd_owner);

  core::ReceiptMessage r = receipt("job\0-1"s, 1);
  r.vehicle_id = "car\0"s;
  ASSERT_TRUE(*s->put_receipt(r, odd_owner, 1));
  EXPECT_FALSE(*s->put_receipt(r, odd_owner, 2));
  auto got = s->receipts_for_job(r.job_id);
  ASSERT_TRUE(got) << got.error().to_string();
  ASSERT_EQ(got->size(), 1u);
  EXPECT_EQ((*got)[0].receipt, r);
  EXPECT_EQ((*got)[0].owner_id, odd_owner);
  EXPECT_TRUE(s->receipts_for_job("job")->empty());
  auto keys = s->receipt_keys();
  ASSERT_TRUE(keys) << keys.error().to_string();
  ASSERT_EQ(keys->size(), 1u);
  EXPECT_EQ(keys->front().job_id, r.job_id);

  core::VehicleStanding q;
  q.standing = 10;
  q.quarantined = true;
  q.quarantine_reason = "token \0 differed: \xff"s;
  ASSERT_TRUE(s->put_standing("car-01", q, 1));
  s.reset();
  s = open_ok();
  auto owners = s->owners();
  ASSERT_TRUE(owners) << owners.error().to_string();
  ASSERT_EQ(owners->size(), 1u);
  EXPECT_EQ(owners->front().name, name);
  auto standings = s->standings();
  ASSERT_TRUE(standings) << standings.error().to_string();
  ASSERT_EQ(standings->size(), 1u);
  EXPECT_EQ(standings->front().second.quarantine_reason, q.quarantine_reason);
}

TEST_P(VehicleStoreContract, OwnersCodesAndEnrolment) {
  auto s = open_ok();
  for (const std::string& bad : {std::string(), std::string(kOwnerNameBytesMax + 1, 'n'), std::string("tab\there")}) {
    auto refused = s->create_owner(bad, kT0);
    ASSERT_FALSE(refused);
    EXPECT_EQ(refused.error().code, ErrorCode::kInvalidArgument);
  }
  auto alice = s->create_owner("Alice", kT0);
  auto bob = s->create_owner("Bob", kT0 + 1);
  ASSERT_TRUE(alice && bob);
  EXPECT_TRUE(alice->second.starts_with(kOwnerTokenPrefix));
  EXPECT_NE(alice->first.id, bob->first.id);
  auto owners = s->owners();
  ASSERT_TRUE(owners);
  ASSERT_EQ(owners->size(), 2u);
  EXPECT_EQ((*owners)[0].name, "Alice");
  EXPECT_EQ((*owners)[1].created_at, kT0 + 1);
  auto found = s->owner_by_token(bob->second);
  ASSERT_TRUE(found && found->has_value());
  EXPECT_EQ((*found)->id, bob->first.id);
  EXPECT_FALSE(s->owner_by_token(std::string(kOwnerTokenPrefix) + std::string(64, '0'))->has_value());
  EXPECT_FALSE(s->owner_by_token("nonsense")->has_value());

  auto code = s->create_code(alice->first.id, kT0);
  ASSERT_TRUE(code) << code.error().to_string();
  EXPECT_TRUE(code->starts_with(kEnrolmentCodePrefix));
  const std::string key(64, 'c');
  auto bad_key = s->enrol(*code, "car-01", "short", kT0);
  ASSERT_FALSE(bad_key);
  EXPECT_EQ(bad_key.error().code, ErrorCode::kInvalidArgument);
  auto unknown = s->enrol("enr-00000000000000000000000000000000", "car-01", key, kT0);
  ASSERT_FALSE(unknown);
  EXPECT_EQ(unknown.error().code, ErrorCode::kNotFound);
  // A vehicle pinned before it was enrolled keeps its pinned_at.
  ASSERT_TRUE(s->put_vehicle({"car-01", key, "", kT0 - 50}));
  auto enrolled = s->enrol(*code, "car-01", key, kT0 + 10);
  ASSERT_TRUE(enrolled) << enrolled.error().to_string();
  EXPECT_EQ(*enrolled, (VehicleRecord{"car-01", key, alice->first.id, kT0 - 50}));
  EXPECT_EQ(**s->vehicle("car-01"), *enrolled);
  // A code is used once.
  auto again = s->enrol(*code, "car-02", std::string(64, 'd'), kT0 + 11);
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, ErrorCode::kAlreadyExists);
  EXPECT_NE(again.error().message.find("car-01"), std::string::npos) << again.error().message;
  // Another owner's code cannot take the vehicle; nor can the same owner's with another key.
  auto bobs = s->create_code(bob->first.id, kT0);
  ASSERT_TRUE(bobs);
  auto taken = s->enrol(*bobs, "car-01", key, kT0 + 12);
  ASSERT_FALSE(taken);
  EXPECT_EQ(taken.error().code, ErrorCode::kAlreadyExists);
  auto second = s->create_code(alice->first.id, kT0);
  ASSERT_TRUE(second);
  auto other_key = s->enrol(*second, "car-01", std::string(64, 'e'), kT0 + 12);
  ASSERT_FALSE(other_key);
  EXPECT_EQ(other_key.error().code, ErrorCode::kAlreadyExists);
  // Enrolling again to the same owner with the same key is fine, and a new vehicle is pinned at enrolment.
  ASSERT_TRUE(s->enrol(*second, "car-01", key, kT0 + 13));
  auto third = s->create_code(alice->first.id, kT0);
  ASSERT_TRUE(third);
  auto fresh = s->enrol(*third, "car-03", std::string(64, 'f'), kT0 + 14);
  ASSERT_TRUE(fresh) << fresh.error().to_string();
  EXPECT_EQ(fresh->pinned_at, kT0 + 14);
  // Expired.
  auto late = s->create_code(bob->first.id, kT0);
  ASSERT_TRUE(late);
  auto expired = s->enrol(*late, "car-04", std::string(64, 'a'), kT0 + kEnrolmentCodeTtlMs);
  ASSERT_FALSE(expired);
  EXPECT_EQ(expired.error().code, ErrorCode::kOutOfRange);
  EXPECT_FALSE(*s->vehicle("car-04"));

  auto alices = s->vehicles_of(alice->first.id);
  ASSERT_TRUE(alices);
  ASSERT_EQ(alices->size(), 2u);
  EXPECT_EQ((*alices)[0].vehicle_id, "car-01");
  EXPECT_EQ((*alices)[1].vehicle_id, "car-03");
  EXPECT_TRUE(s->vehicles_of(bob->first.id)->empty());
}

TEST_P(VehicleStoreContract, OpenCodesPerOwnerAreBounded) {
  auto s = open_ok();
  auto owner = s->create_owner("Many", kT0);
  ASSERT_TRUE(owner);
  for (size_t i = 0; i < kOpenCodesPerOwnerMax; ++i) ASSERT_TRUE(s->create_code(owner->first.id, kT0)) << i;
  auto refused = s->create_code(owner->first.id, kT0);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, ErrorCode::kOutOfRange);
  // Codes that expired no longer count.
  EXPECT_TRUE(s->create_code(owner->first.id, kT0 + kEnrolmentCodeTtlMs));
  EXPECT_TRUE(s->create_code("someone-else", kT0));
}

TEST_P(VehicleStoreContract, DamagedRowsAreReported) {
  {
    auto s = open_ok();
    ASSERT_TRUE(s->put_vehicle({"car-01", std::string(64, 'a'), "", 5}));
    ASSERT_TRUE(*s->put_receipt(receipt("j1", 1), "", 10));
    ASSERT_TRUE(*s->put_receipt(receipt("j2", 1), "", 10));
  }
  damage("UPDATE vehicles SET public_key = 'zz'; UPDATE receipts SET receipt_json = '{\"type\":1}' WHERE job_id = 'j1'",
         "UPDATE vehicles SET public_key = 'zz'; "
         "UPDATE receipts SET receipt_json = convert_to('{\"type\":1}', 'UTF8') WHERE job_id = 'j1'");
  // A receipt filed under another attempt than its own.
  raw_sql("UPDATE receipts SET attempt = 5 WHERE job_id = 'j2'");
  auto s = open_ok();
  auto v = s->vehicles();
  ASSERT_FALSE(v);
  EXPECT_EQ(v.error().code, ErrorCode::kCorrupt);
  EXPECT_NE(v.error().message.find("car-01"), std::string::npos) << v.error().message;
  auto r = s->receipts_for_job("j1");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kCorrupt);
  EXPECT_NE(r.error().message.find("j1"), std::string::npos) << r.error().message;
  r = s->receipts_for_job("j2");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kCorrupt);
  EXPECT_NE(r.error().message.find("attempt 5"), std::string::npos) << r.error().message;
}

// An owner's policy: none until set, replaced by the next, kept across
// reopening, and a damaged row is reported.
TEST_P(VehicleStoreContract, APolicyIsStoredReplacedAndCheckedWhenRead) {
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
  damage("UPDATE vehicle_policies SET policy_json = '{\"soc_floor_pct\":\"low\"}'",
         "UPDATE vehicle_policies SET policy_json = convert_to('{\"soc_floor_pct\":\"low\"}', 'UTF8')");
  auto s = open_ok();
  auto damaged = s->policy("car-01");
  ASSERT_FALSE(damaged);
  EXPECT_EQ(damaged.error().code, ErrorCode::kCorrupt);
  EXPECT_NE(damaged.error().message.find("car-01"), std::string::npos);
}

TEST_P(VehicleStoreContract, StandingsPersistAndDamagedOnesAreReported) {
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
  raw_sql("UPDATE standings SET standing = 5000 WHERE vehicle_id = 'car-02'");
  auto damaged = open_ok()->standings();
  ASSERT_FALSE(damaged);
  EXPECT_EQ(damaged.error().code, ErrorCode::kCorrupt);
  EXPECT_NE(damaged.error().message.find("car-02"), std::string::npos);
}

TEST_F(VehicleStoreTest, RandomBytesAreAClearError) {
  {
    std::ofstream f(db_path(), std::ios::binary);
    Rng rng(1);
    for (int i = 0; i < 8192; ++i) f.put(static_cast<char>(rng.next()));
  }
  auto store = VehicleStore::open(db_path());
  ASSERT_FALSE(store);
  EXPECT_EQ(store.error().code, ErrorCode::kCorrupt) << store.error().to_string();
  EXPECT_NE(store.error().message.find(db_path()), std::string::npos) << store.error().to_string();
}

TEST_F(VehicleStoreTest, AFutureSchemaVersionIsUnsupported) {
  { ASSERT_TRUE(open_ok()); }
  raw_sql("INSERT INTO schema_version (version) VALUES (99)");
  auto store = VehicleStore::open(db_path());
  ASSERT_FALSE(store);
  EXPECT_EQ(store.error().code, ErrorCode::kUnsupported) << store.error().to_string();
}

TEST_F(VehicleStoreTest, InMemoryStoreForTests) {
  auto store = VehicleStore::open(":memory:");
  ASSERT_TRUE(store) << store.error().to_string();
  ASSERT_TRUE((*store)->put_vehicle({"car-01", std::string(64, 'a'), "", 5}));
  EXPECT_EQ((*store)->location(), ":memory:");
}

TEST_F(PgVehicleStoreTest, AFutureSchemaVersionIsUnsupported) {
  { ASSERT_TRUE(open_ok()); }
  raw_sql("INSERT INTO idlefleet_schema (store, version) VALUES ('vehicles', " +
          std::to_string(kPgVehiclesSchemaVersion + 1) + ")");
  auto store = VehicleStore::open(location());
  ASSERT_FALSE(store);
  EXPECT_EQ(store.error().code, ErrorCode::kUnsupported) << store.error().to_string();
  EXPECT_NE(store.error().message.find("schema version " + std::to_string(kPgVehiclesSchemaVersion + 1)),
            std::string::npos)
      << store.error().to_string();
}

// A table altered by hand is reported, not misread.
TEST_F(PgVehicleStoreTest, AColumnOfAnotherTypeIsCorrupt) {
  auto s = open_ok();
  ASSERT_TRUE(s->put_vehicle({"car-01", std::string(64, 'a'), "", 5}));
  raw_sql("ALTER TABLE vehicles ALTER COLUMN pinned_at TYPE integer");
  auto got = s->vehicle("car-01");
  ASSERT_FALSE(got);
  EXPECT_EQ(got.error().code, ErrorCode::kCorrupt) << got.error().to_string();
  EXPECT_NE(got.error().message.find("pinned_at"), std::string::npos) << got.error().to_string();
  raw_sql("ALTER TABLE vehicles ALTER COLUMN pinned_at TYPE bigint; ALTER TABLE vehicles ALTER COLUMN owner_id "
          "DROP NOT NULL; UPDATE vehicles SET owner_id = NULL");
  auto null = s->vehicles();
  ASSERT_FALSE(null);
  EXPECT_EQ(null.error().code, ErrorCode::kCorrupt) << null.error().to_string();
  EXPECT_NE(null.error().message.find("owner_id"), std::string::npos) << null.error().to_string();
}

// Coordinators sharing one database: one code enrols one vehicle, however
// many enrolments race for it; and the stores keep their migrations apart.
TEST_F(PgVehicleStoreTest, ACodeIsUsedOnceByRacingEnrolments) {
  auto s = open_ok();
  auto owner = s->create_owner("Racer", kT0);
  ASSERT_TRUE(owner);
  auto code = s->create_code(owner->first.id, kT0);
  ASSERT_TRUE(code);
  constexpr int kStores = 6;
  std::vector<std::unique_ptr<VehicleStore>> stores;
  for (int i = 0; i < kStores; ++i) stores.push_back(open_ok());
  std::vector<Result<VehicleRecord>> results(kStores, Unexpected(ErrorCode::kInternal, "not run"));
  std::vector<std::thread> threads;
  for (int i = 0; i < kStores; ++i) {
    threads.emplace_back([&, i] {
      results[static_cast<size_t>(i)] = stores[static_cast<size_t>(i)]->enrol(
          *code, "car-" + std::to_string(i), std::string(64, 'a'), kT0 + 1);
    });
  }
  for (auto& t : threads) t.join();
  int enrolled = 0;
  for (const auto& r : results) {
    if (r) {
      ++enrolled;
    } else {
      EXPECT_EQ(r.error().code, ErrorCode::kAlreadyExists) << r.error().to_string();
    }
  }
  EXPECT_EQ(enrolled, 1);
  EXPECT_EQ(s->vehicles_of(owner->first.id)->size(), 1u);

  auto jobs = JobStore::open(location());
  ASSERT_TRUE(jobs) << jobs.error().to_string();
  EXPECT_EQ(raw_sql("SELECT store || ' ' || version FROM idlefleet_schema ORDER BY store, version"),
            "jobs 1\nvehicles 1");
}

INSTANTIATE_TEST_SUITE_P(Backends, VehicleStoreContract, ::testing::Values(Backend::kSqlite, Backend::kPostgres),
                         testing::backend_name);

}  // namespace
}  // namespace idlefleet::store::vehicle_store_test
