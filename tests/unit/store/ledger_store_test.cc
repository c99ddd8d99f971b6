// LedgerStore: posting exactly once (a retry is a no-op, other content under
// a taken id is refused), balances that sum to zero after many random
// transactions, clients' credit limits, statements as JSON and CSV, payout
// batches that are made once, verify() catching each kind of broken
// invariant that a person with the sqlite3 shell or psql could cause, and
// refusals for files that are not ours or newer than this build. The same
// tests run against SQLite and PostgreSQL (a private server started for the
// test: tests/support/postgres_server.h).
#include "store/ledger_store.h"

#include <gtest/gtest.h>
#include <sqlite3.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <thread>

#include <nlohmann/json.hpp>

#include "common/random.h"
#include "support/postgres_server.h"
#include "transport/process.h"

namespace idlefleet::store::ledger_store_test {
namespace {

namespace fs = std::filesystem;
using core::Posting;
using core::SettlementAttempt;
using core::SettlementInput;
using core::Transaction;

constexpr core::TimeMs kDec15 = 1'765'756'800'000;  // 2025-12-15T00:00:00Z
constexpr core::TimeMs kJan1 = 1'767'225'600'000;   // 2026-01-01T00:00:00Z
constexpr core::TimeMs kJan2 = 1'767'312'000'000;
constexpr core::TimeMs kFeb1 = 1'769'904'000'000;
constexpr core::TimeMs kMar1 = 1'772'323'200'000;

// A settlement of `job` for client key_1: price = tokens (1 micro a token),
// pool = half of it split by output tokens, plus energy of 1 micro per mWh.
Transaction settle(const std::string& job, core::TimeMs at, uint64_t tokens,
                   std::vector<std::pair<std::string, uint64_t>> owners_tokens, std::string client = "client:key_1") {
  SettlementInput in;
  in.job_id = job;
  in.client_account = std::move(client);
  in.model_id = "m";
  in.completion_tokens = tokens;
  in.output_price_micros_per_million_tokens = 1'000'000;
  in.owner_share_ppm = 500'000;
  in.settled_at_ms = at;
  for (const auto& [owner, t] : owners_tokens) {
    in.attempts.push_back(SettlementAttempt{"rcpt-" + job + "-" + owner, owner, "car-" + owner, t, t, 0, 1'000'000});
  }
  auto txn = core::settle_job(in);
  EXPECT_TRUE(txn) << txn.error().to_string();
  return *txn;
}

using testing::Backend;

class LedgerFixture : public testing::StoreFixture {
 protected:
  void start(Backend backend) { StoreFixture::start(backend, std::string(kLedgerFileName)); }

  std::unique_ptr<LedgerStore> open_ok(const std::string& where = "") {
    auto store = LedgerStore::open(where.empty() ? location() : where);
    EXPECT_TRUE(store) << store.error().to_string();
    return store ? std::move(*store) : nullptr;
  }

  // A store of the test's own (":memory:" for SQLite, the test's database for PostgreSQL).
  std::unique_ptr<LedgerStore> open_scratch() {
    return open_ok(postgres_backend() ? url_ : ":memory:");
  }

  // SQL on a separate connection, as a person with the sqlite3 shell or psql
  // would: true if it ran. In PostgreSQL the foreign key from postings to
  // transactions is switched off for it (session_replication_role), as
  // SQLite's shell leaves foreign keys off, so that damage can be made.
  bool raw_exec(const std::string& sql) {
    if (postgres_backend()) {
      auto r = testing::postgres().query(database_, "SET session_replication_role = replica; " + sql);
      return static_cast<bool>(r);
    }
    sqlite3* db = nullptr;
    EXPECT_EQ(sqlite3_open(db_path().c_str(), &db), SQLITE_OK);
    const int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr);
    sqlite3_close(db);
    return rc == SQLITE_OK;
  }
  void damage(const std::string& sql) { ASSERT_TRUE(raw_exec(sql)) << sql; }

  // A ledger with one of everything: a deposit, two settlements (one
  // refunded), a credit limit and January's payouts.
  void populate(LedgerStore& s) {
    ASSERT_TRUE(s.post(*core::build_deposit("bank-1", "client:key_1", 5'000'000, kDec15)));
    ASSERT_TRUE(s.post(settle("j1", kJan2, 1'000'000, {{"alice", 3}, {"bob", 1}})));
    const Transaction j2 = settle("j2", kJan2 + 1, 10'000, {{"alice", 1}});
    ASSERT_TRUE(s.post(j2));
    ASSERT_TRUE(s.post(*core::build_refund(j2, kJan2 + 2)));
    ASSERT_TRUE(s.set_credit_limit("client:key_1", 1'000'000));
    auto batch = s.payout_batch("2026-01", 0, kFeb1);
    ASSERT_TRUE(batch) << batch.error().to_string();
    ASSERT_EQ(batch->payouts.size(), 2u);
    auto ok = s.verify();
    ASSERT_TRUE(ok) << ok.error().to_string();
  }

  // verify() on a reopened file fails with kCorrupt and a message containing `want`.
  void expect_broken(const std::string& want, const VerifyOptions& options = {}) {
    auto store = open_ok();
    ASSERT_NE(store, nullptr);
    auto v = store->verify(options);
    ASSERT_FALSE(v) << "verify passed; wanted: " << want;
    EXPECT_EQ(v.error().code, ErrorCode::kCorrupt) << v.error().to_string();
    EXPECT_NE(v.error().message.find(want), std::string::npos) << v.error().message;
  }

};

// What is particular to SQLite.
class LedgerStoreTest : public LedgerFixture {
 protected:
  void SetUp() override { start(Backend::kSqlite); }
};

// What is particular to PostgreSQL.
class PgLedgerStoreTest : public LedgerFixture {
 protected:
  void SetUp() override { start(Backend::kPostgres); }
};

// The same tests against both.
class LedgerContract : public LedgerFixture, public ::testing::WithParamInterface<Backend> {
 protected:
  void SetUp() override { start(GetParam()); }
};

TEST_P(LedgerContract, PostIsExactlyOnce) {
  auto store = open_ok();
  const Transaction s1 = settle("j1", kJan2, 1000, {{"alice", 2}, {"bob", 1}});
  auto posted = store->post(s1);
  ASSERT_TRUE(posted) << posted.error().to_string();
  EXPECT_TRUE(*posted);
  // A retry: nothing new, and no error.
  posted = store->post(s1);
  ASSERT_TRUE(posted);
  EXPECT_FALSE(*posted);
  // A retry built later carries a later time: still the same money; the first time stands.
  Transaction later = s1;
  later.created_at_ms += 5000;
  posted = store->post(later);
  ASSERT_TRUE(posted);
  EXPECT_FALSE(*posted);
  EXPECT_EQ(**store->transaction("settle:j1"), s1);
  // The same job settled differently: refused, and nothing changes.
  const Transaction other = settle("j1", kJan2, 2000, {{"alice", 2}, {"bob", 1}});
  posted = store->post(other);
  ASSERT_FALSE(posted);
  EXPECT_EQ(posted.error().code, ErrorCode::kAlreadyExists);
  EXPECT_EQ(**store->transaction("settle:j1"), s1);
  EXPECT_EQ(*store->balance("client:key_1"), -1000);
  // Invalid transactions never reach the file.
  Transaction broken = settle("j2", kJan2, 1000, {{"alice", 1}});
  broken.postings[0].amount_micros -= 1;
  EXPECT_EQ(store->post(broken).error().code, ErrorCode::kInvalidArgument);
  EXPECT_FALSE(*store->transaction("settle:j2"));
  // A job's transactions: its settlement, then its refund.
  const Transaction refund = *core::build_refund(s1, kJan2 + 10);
  EXPECT_TRUE(*store->post(refund));
  auto job = store->transactions_for_job("j1");
  ASSERT_TRUE(job);
  ASSERT_EQ(job->size(), 2u);
  EXPECT_EQ((*job)[0], s1);
  EXPECT_EQ((*job)[1], refund);
  EXPECT_TRUE(store->transactions_for_job("nobody")->empty());
  EXPECT_EQ(store->transactions_for_job("not an id").error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(*store->balance("client:key_1"), 0);
  EXPECT_EQ(store->balance("bank").error().code, ErrorCode::kInvalidArgument);
  ASSERT_TRUE(store->verify());
}

TEST_F(LedgerStoreTest, ItIsAWalFile) {
  auto store = open_ok();
  ASSERT_TRUE(store->post(*core::build_deposit("d1", "client:key_1", 1, kJan1)));
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(db_path().c_str(), &db), SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, nullptr), SQLITE_OK);
  ASSERT_EQ(sqlite3_step(st), SQLITE_ROW);
  EXPECT_STREQ(reinterpret_cast<const char*>(sqlite3_column_text(st, 0)), "wal");
  sqlite3_finalize(st);
  sqlite3_close(db);
}

TEST_P(LedgerContract, BalancesSumToZeroAfterManyRandomTransactions) {
  auto store = open_scratch();
  Rng rng(5);
  std::map<std::string, int64_t> expected;
  auto apply = [&](const Transaction& t) {
    for (const Posting& p : t.postings) expected[p.account] += p.amount_micros;
  };
  const char* owners[] = {"alice", "bob", "carol", "dave"};
  std::vector<Transaction> settlements;
  for (int i = 0; i < 300; ++i) {
    const std::string client = "client:key_" + std::to_string(rng.below(5));
    const core::TimeMs at = kJan1 + static_cast<core::TimeMs>(rng.below(uint64_t{59} * core::kDayMs));
    Transaction t;
    const uint64_t what = rng.below(10);
    if (what < 2) {
      t = *core::build_deposit("d" + std::to_string(i), client, 1 + static_cast<int64_t>(rng.below(10'000'000)), at);
    } else if (what < 3 && !settlements.empty()) {
      auto refund = core::build_refund(settlements[rng.below(settlements.size())], at);
      if (!refund) continue;
      t = *refund;
    } else {
      SettlementInput in;
      in.job_id = "job-" + std::to_string(i);
      in.client_account = client;
      in.model_id = "m";
      in.prompt_tokens = rng.below(5000);
      in.completion_tokens = rng.below(2000);
      in.input_price_micros_per_million_tokens = rng.below(3'000'000);
      in.output_price_micros_per_million_tokens = rng.below(9'000'000);
      in.owner_share_ppm = rng.below(core::kSharePpmMax + 1);
      in.wear_micros_per_accelerator_hour = rng.below(200'000);
      in.settled_at_ms = at;
      const uint64_t attempts = 1 + rng.below(4);
      for (uint64_t a = 0; a < attempts; ++a) {
        in.attempts.push_back(SettlementAttempt{"r-" + std::to_string(i) + "-" + std::to_string(a),
                                                owners[rng.below(4)], "car", rng.below(3) == 0 ? 0 : rng.below(800),
                                                rng.below(50'000), rng.below(600'000),
                                                static_cast<int64_t>(rng.below(400'000))});
      }
      auto s = core::settle_job(in);
      if (!s) continue;  // every amount zero
      t = *s;
      settlements.push_back(t);
    }
    auto posted = store->post(t);
    ASSERT_TRUE(posted) << posted.error().to_string();
    if (*posted) apply(t);
  }
  auto batch = store->payout_batch("2026-01", 1000, kFeb1);
  ASSERT_TRUE(batch) << batch.error().to_string();
  for (const Payout& p : batch->payouts) {
    expected["owner:" + p.owner_id] -= p.amount_micros;
    expected["external:payouts"] += p.amount_micros;
  }
  auto all = store->balances();
  ASSERT_TRUE(all) << all.error().to_string();
  int64_t total = 0;
  for (const AccountBalance& b : *all) {
    total += b.balance_micros;
    EXPECT_EQ(b.balance_micros, expected[b.account]) << b.account;
    EXPECT_EQ(*store->balance(b.account), b.balance_micros);
  }
  EXPECT_EQ(total, 0);
  EXPECT_GT(all->size(), 8u);
  auto summary = store->verify();
  ASSERT_TRUE(summary) << summary.error().to_string();
  EXPECT_EQ(summary->total_micros, 0);
  EXPECT_EQ(summary->accounts, all->size());
}

TEST_P(LedgerContract, CreditLimits) {
  auto store = open_ok();
  EXPECT_TRUE(*store->can_spend("client:key_1", 0));
  EXPECT_FALSE(*store->can_spend("client:key_1", 1));
  ASSERT_TRUE(store->post(*core::build_deposit("d1", "client:key_1", 10'000'000, kJan1)));
  EXPECT_TRUE(*store->can_spend("client:key_1", 10'000'000));
  EXPECT_FALSE(*store->can_spend("client:key_1", 10'000'001));
  ASSERT_TRUE(store->set_credit_limit("client:key_1", 5'000'000));
  EXPECT_EQ(*store->credit_limit("client:key_1"), 5'000'000);
  EXPECT_TRUE(*store->can_spend("client:key_1", 15'000'000));
  EXPECT_FALSE(*store->can_spend("client:key_1", 15'000'001));
  // Spending below zero, within the limit, then the limit lowered: nothing more.
  ASSERT_TRUE(store->post(settle("j1", kJan2, 12'000'000, {{"alice", 1}})));
  EXPECT_EQ(*store->balance("client:key_1"), -2'000'000);
  EXPECT_TRUE(*store->can_spend("client:key_1", 3'000'000));
  ASSERT_TRUE(store->set_credit_limit("client:key_1", 1'000'000));
  EXPECT_FALSE(*store->can_spend("client:key_1", 0));
  // A client with a limit and no postings is listed too.
  ASSERT_TRUE(store->set_credit_limit("client:anonymous", 7));
  auto all = store->balances();
  ASSERT_TRUE(all);
  EXPECT_EQ(all->front(), (AccountBalance{"client:anonymous", 0, 7}));
  EXPECT_EQ(store->set_credit_limit("owner:alice", 1).error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(store->set_credit_limit("client:key_1", -1).error().code, ErrorCode::kOutOfRange);
  EXPECT_EQ(store->set_credit_limit("client:key_1", kCreditLimitMicrosMax + 1).error().code, ErrorCode::kOutOfRange);
  EXPECT_EQ(store->can_spend("client:key_1", -1).error().code, ErrorCode::kOutOfRange);
  EXPECT_EQ(store->can_spend("platform:revenue", 1).error().code, ErrorCode::kInvalidArgument);
  EXPECT_TRUE(store->verify());
}

TEST_P(LedgerContract, StatementsAsJsonAndCsv) {
  auto store = open_ok();
  ASSERT_TRUE(store->post(settle("dec", kDec15, 100, {{"alice", 1}})));                   // before: the opening balance
  ASSERT_TRUE(store->post(settle("j1", kJan2 + 3'600'000, 1000, {{"alice", 3}, {"bob", 1}})));
  ASSERT_TRUE(store->post(settle("feb", kFeb1, 100, {{"alice", 1}})));                     // after: not in January
  auto s = store->statement("alice", 2026, 1);
  ASSERT_TRUE(s) << s.error().to_string();
  // December: share 50 + energy 1 (1 mWh at 1000 per kWh, rounded up).
  EXPECT_EQ(s->opening_balance_micros, 51);
  // January: pool 500 split 3:1 = 375, energy 3.
  ASSERT_EQ(s->entries.size(), 2u);
  EXPECT_EQ(s->net_micros, 378);
  EXPECT_EQ(s->closing_balance_micros, 429);
  EXPECT_EQ(s->receipts, 1u);
  EXPECT_EQ(s->jobs, 1u);
  EXPECT_EQ(statement_csv(*s),
            "date,transaction,job,receipt,kind,amount\n"
            "2026-01-02T01:00:00Z,settle:j1,j1,rcpt-j1-alice,revenue_share,0.000375\n"
            "2026-01-02T01:00:00Z,settle:j1,j1,rcpt-j1-alice,energy,0.000003\n"
            "total,,,,energy,0.000003\n"
            "total,,,,revenue_share,0.000375\n"
            "total,,,,net,0.000378\n");
  const auto json = nlohmann::json::parse(statement_json(*s));
  EXPECT_EQ(json["owner"], "alice");
  EXPECT_EQ(json["month"], "2026-01");
  EXPECT_EQ(json["opening_balance"], "0.000051");
  EXPECT_EQ(json["closing_balance_micros"], 429);
  EXPECT_EQ(json["totals"]["revenue_share"]["amount_micros"], 375);
  EXPECT_EQ(json["entries"].size(), 2u);
  EXPECT_EQ(json["entries"][0]["receipt"], "rcpt-j1-alice");
  EXPECT_EQ(json["entries"][0]["date"], "2026-01-02T01:00:00Z");
  // An owner with nothing that month: an empty statement, not an error.
  auto none = store->statement("zoe", 2026, 1);
  ASSERT_TRUE(none);
  EXPECT_TRUE(none->entries.empty());
  EXPECT_EQ(statement_csv(*none), "date,transaction,job,receipt,kind,amount\ntotal,,,,net,0.000000\n");
  EXPECT_EQ(store->statement("bad id", 2026, 1).error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(store->statement("alice", 2026, 13).error().code, ErrorCode::kInvalidArgument);
}

TEST_P(LedgerContract, PayoutsAreMadeOncePerMonth) {
  auto store = open_ok();
  ASSERT_TRUE(store->post(settle("j1", kJan2, 4'000'000, {{"alice", 3}, {"bob", 1}})));
  ASSERT_TRUE(store->post(settle("j2", kJan2, 10, {{"carol", 1}})));
  // January is not over until February 1st.
  EXPECT_EQ(store->payout_batch("2026-01", 0, kFeb1 - 1).error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(store->payout_batch("2026-1", 0, kFeb1).error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(store->payout_batch("2026-01", -1, kFeb1).error().code, ErrorCode::kInvalidArgument);
  // alice 1.5 + energy 0.000003, bob 0.5 + 0.000001; carol 0.000006 is under the least payout.
  auto batch = store->payout_batch("2026-01", 1'000, kFeb1 + 5);
  ASSERT_TRUE(batch) << batch.error().to_string();
  EXPECT_TRUE(batch->posted_now);
  const std::string csv = payout_csv(*batch);
  EXPECT_EQ(csv,
            "owner,amount,batch_id,transaction_id\n"
            "alice,1.500003,payout:2026-01,payout:2026-01:alice\n"
            "bob,0.500001,payout:2026-01,payout:2026-01:bob\n");
  EXPECT_EQ(*store->balance("owner:alice"), 0);
  EXPECT_EQ(*store->balance("external:payouts"), 2'000'004);
  EXPECT_EQ((**store->transaction("payout:2026-01:alice")).created_at_ms, kFeb1);
  // A late January settlement, then the batch again: nothing new, the same CSV.
  ASSERT_TRUE(store->post(settle("late", kFeb1 - 1, 2'000, {{"alice", 1}})));
  auto again = store->payout_batch("2026-01", 0, kMar1);
  ASSERT_TRUE(again) << again.error().to_string();
  EXPECT_FALSE(again->posted_now);
  EXPECT_EQ(again->min_amount_micros, 1'000);
  EXPECT_EQ(payout_csv(*again), csv);
  // February pays what came late and what was under the least payout before.
  auto feb = store->payout_batch("2026-02", 0, kMar1);
  ASSERT_TRUE(feb);
  EXPECT_EQ(payout_csv(*feb),
            "owner,amount,batch_id,transaction_id\n"
            "alice,0.001001,payout:2026-02,payout:2026-02:alice\n"
            "carol,0.000006,payout:2026-02,payout:2026-02:carol\n");
  // January's payout is in February's statement.
  auto statement = store->statement("alice", 2026, 2);
  ASSERT_TRUE(statement);
  EXPECT_EQ(statement->totals_micros_by_kind.at("payout"), -1'500'003);
  // An empty month is a batch too: made once.
  auto empty = store->payout_batch("2025-06", 0, kMar1);
  ASSERT_TRUE(empty);
  EXPECT_TRUE(empty->payouts.empty());
  EXPECT_TRUE(empty->posted_now);
  EXPECT_FALSE(store->payout_batch("2025-06", 0, kMar1)->posted_now);
  auto v = store->verify();
  ASSERT_TRUE(v) << v.error().to_string();
}

TEST_P(LedgerContract, VerifyPassesAndSummarises) {
  auto store = open_ok();
  populate(*store);
  auto v = store->verify({std::vector<std::string>{"j1", "j2", "j1"},
                          std::unordered_set<std::string>{"rcpt-j1-alice", "rcpt-j1-bob", "rcpt-j2-alice"}});
  ASSERT_TRUE(v) << v.error().to_string();
  EXPECT_EQ(v->transactions, 6u);  // a deposit, 2 settlements, a refund, 2 payouts
  // 2 + (2 charge + 4 for each of 2 owners) + (2 charge + 4 for one owner) + 2 + 2 * 2.
  EXPECT_EQ(v->postings, 24u);
  // client:key_1, owner:alice, owner:bob, platform:revenue, platform:energy,
  // external:deposits, external:payouts (no wear was paid).
  EXPECT_EQ(v->accounts, 7u);
  EXPECT_EQ(v->total_micros, 0);
}

TEST_P(LedgerContract, VerifyFindsUnbalancedTransactions) {
  populate(*open_ok());
  damage("UPDATE postings SET amount = amount + 1 WHERE txn_id = 'settle:j1' AND seq = 0");
  expect_broken("'settle:j1': postings sum to 1 micros, not zero");
}

TEST_P(LedgerContract, VerifyFindsOwnersPaidWithoutAReceipt) {
  populate(*open_ok());
  damage("UPDATE postings SET receipt_id = '' WHERE txn_id = 'settle:j1' AND account = 'owner:bob'");
  expect_broken("pays owner 'bob' without a receipt");
}

TEST_P(LedgerContract, VerifyFindsMissingAndOrphanPostings) {
  populate(*open_ok());
  damage("DELETE FROM postings WHERE txn_id = 'settle:j1' AND seq = 0");
  expect_broken("'settle:j1': posting seq 1 where 0 belongs");
  damage("DELETE FROM postings WHERE txn_id = 'settle:j1'");
  expect_broken("'settle:j1': has no postings");
  damage("DELETE FROM transactions WHERE id = 'settle:j1'");
  damage("INSERT INTO postings VALUES ('settle:ghost', 0, 'client:key_1', 5, 'charge', '')");
  expect_broken("posting of 'settle:ghost' belongs to no transaction");
  damage("UPDATE postings SET txn_id = 'zzz' WHERE txn_id = 'settle:ghost'");
  expect_broken("posting of 'zzz' belongs to no transaction");
}

TEST_P(LedgerContract, VerifyAndReadsNameDamagedRows) {
  populate(*open_ok());
  damage("UPDATE transactions SET kind = 'gift' WHERE id = 'settle:j2'");
  expect_broken("transaction 'settle:j2': column kind is not a transaction kind");
  {
    auto store = open_ok();
    auto t = store->transaction("settle:j2");
    ASSERT_FALSE(t);
    EXPECT_EQ(t.error().code, ErrorCode::kCorrupt);
    EXPECT_EQ(store->transactions_for_job("j2").error().code, ErrorCode::kCorrupt);
  }
  damage("UPDATE transactions SET kind = 'settlement' WHERE id = 'settle:j2'");
  damage("UPDATE postings SET account = 'bank' WHERE txn_id = 'settle:j2' AND seq = 0");
  expect_broken("posting of 'settle:j2' seq 0: column account is not an account");
  damage("UPDATE postings SET account = 'client:key_1', amount = 0 WHERE txn_id = 'settle:j2' AND seq = 0");
  expect_broken("posting of 'settle:j2' seq 0: column amount");
  damage("UPDATE postings SET amount = -10000 WHERE txn_id = 'settle:j2' AND seq = 0");
  damage("UPDATE transactions SET created_at = -5 WHERE id = 'settle:j2'");
  expect_broken("transaction 'settle:j2': column created_at is not a time");
  damage("UPDATE transactions SET created_at = 1 WHERE id = 'settle:j2'");
  ASSERT_TRUE(open_ok()->verify());
  damage("UPDATE accounts SET credit_limit_micros = -1");
  expect_broken("accounts row 'client:key_1': column credit_limit_micros is out of range");
  EXPECT_EQ(open_ok()->balances().error().code, ErrorCode::kCorrupt);
  EXPECT_EQ(open_ok()->can_spend("client:key_1", 0).error().code, ErrorCode::kCorrupt);
}

TEST_P(LedgerContract, DamagedAmountsNeverOverflow) {
  populate(*open_ok());
  // Sums past int64 only damage can make: kCorrupt, not a wrapped balance.
  damage("INSERT INTO transactions VALUES ('deposit:x', 'deposit', '', 5)");
  damage("INSERT INTO postings VALUES ('deposit:x', 0, 'client:key_9', 9000000000000000000, 'deposit', '')");
  damage("INSERT INTO postings VALUES ('deposit:x', 1, 'client:key_9', 9000000000000000000, 'deposit', '')");
  auto store = open_ok();
  EXPECT_EQ(store->balance("client:key_9").error().code, ErrorCode::kCorrupt);
  EXPECT_EQ(store->balances().error().code, ErrorCode::kCorrupt);
  EXPECT_EQ(store->postings_for_account("client:key_9", 0, kMar1).error().code, ErrorCode::kCorrupt);
  expect_broken("posting of 'deposit:x' seq 0: column amount");
}

TEST_P(LedgerContract, VerifyChecksRefundsAgainstSettlements) {
  populate(*open_ok());
  damage("UPDATE postings SET amount = amount + 1 WHERE txn_id = 'refund:j2' AND seq = 0");
  damage("UPDATE postings SET amount = amount - 1 WHERE txn_id = 'refund:j2' AND seq = 1");
  expect_broken("the refund of job 'j2' returns 0.010001 to 'client:key_1', its settlement charged 0.010000");
  damage("DELETE FROM postings WHERE txn_id = 'settle:j2'");
  damage("DELETE FROM transactions WHERE id = 'settle:j2'");
  expect_broken("job 'j2' has a refund but no settlement");
}

TEST_P(LedgerContract, VerifyChecksFinishedJobsAndReceipts) {
  populate(*open_ok());
  expect_broken("finished job 'j3' has no settlement", {std::vector<std::string>{"j1", "j2", "j3"}, std::nullopt});
  expect_broken("job 'j2' is settled but did not finish", {std::vector<std::string>{"j1"}, std::nullopt});
  expect_broken("on receipt 'rcpt-j1-bob', which is not a verified receipt",
                {std::nullopt, std::unordered_set<std::string>{"rcpt-j1-alice", "rcpt-j2-alice"}});
}

TEST_P(LedgerContract, VerifyChecksPayoutBatches) {
  populate(*open_ok());
  damage("DELETE FROM postings WHERE txn_id = 'payout:2026-01:bob'");
  damage("DELETE FROM transactions WHERE id = 'payout:2026-01:bob'");
  expect_broken("payout batch 2026-01 records 2 payouts, the ledger holds 1");
  damage("DELETE FROM payout_batches");
  expect_broken("payouts for 2026-01 exist without their batch");
}

TEST_P(LedgerContract, TheUniqueJobIndexesHold) {
  populate(*open_ok());
  // A second settlement of j1 under another id (only a hand edit can try).
  EXPECT_FALSE(raw_exec("INSERT INTO transactions VALUES ('settle:j1b', 'settlement', 'j1', 5)"));
  EXPECT_FALSE(raw_exec("INSERT INTO transactions VALUES ('refund:j2b', 'refund', 'j2', 5)"));
}

TEST_F(LedgerStoreTest, FilesThatAreNotOursAreRefused) {
  {
    std::ofstream junk(db_path());
    junk << "this is not a database, it is a shopping list: eggs, milk, more eggs, and a great deal of flour\n";
  }
  auto notdb = LedgerStore::open(db_path());
  ASSERT_FALSE(notdb);
  EXPECT_EQ(notdb.error().code, ErrorCode::kCorrupt);
  fs::remove(db_path());
  { auto fresh = open_ok(); }
  damage("INSERT INTO schema_version (version) VALUES (2)");
  auto newer = LedgerStore::open(db_path());
  ASSERT_FALSE(newer);
  EXPECT_EQ(newer.error().code, ErrorCode::kUnsupported);
}

TEST_F(PgLedgerStoreTest, AFutureSchemaIsRefusedAndAServerAwayIsAnIoError) {
  { auto fresh = open_ok(); }
  damage("INSERT INTO idlefleet_schema (store, version) VALUES ('ledger', " + std::to_string(kLedgerSchemaVersion + 1) +
         ")");
  auto newer = LedgerStore::open(location());
  ASSERT_FALSE(newer);
  EXPECT_EQ(newer.error().code, ErrorCode::kUnsupported) << newer.error().to_string();
  auto port = transport::free_loopback_port();
  ASSERT_TRUE(port);
  auto away = LedgerStore::open("postgresql://idlefleet:pw@127.0.0.1:" + std::to_string(*port) + "/x");
  ASSERT_FALSE(away);
  EXPECT_EQ(away.error().code, ErrorCode::kIo) << away.error().to_string();
  EXPECT_EQ(away.error().message.find(":pw@"), std::string::npos) << away.error().to_string();
}

// Coordinators sharing one PostgreSQL ledger: the same settlement posted by
// several at once is written once, and the others see a retry, as one
// process would; a payout batch is made once.
TEST_F(PgLedgerStoreTest, ReplicasPostingTheSameMoneyWriteItOnce) {
  constexpr int kReplicas = 4;
  constexpr int kJobs = 30;
  std::vector<std::unique_ptr<LedgerStore>> replicas;
  for (int i = 0; i < kReplicas; ++i) replicas.push_back(open_ok());
  std::vector<Transaction> settlements;
  for (int j = 0; j < kJobs; ++j) {
    settlements.push_back(settle("job" + std::to_string(j), kJan2 + j, 1000 + j, {{"alice", 2}, {"bob", 1}}));
  }
  std::vector<int> wrote(kReplicas, 0), errors(kReplicas, 0);
  std::vector<std::thread> threads;
  for (int i = 0; i < kReplicas; ++i) {
    threads.emplace_back([&, i] {
      for (const Transaction& t : settlements) {
        auto posted = replicas[static_cast<size_t>(i)]->post(t);
        if (!posted) {
          ++errors[static_cast<size_t>(i)];
        } else if (*posted) {
          ++wrote[static_cast<size_t>(i)];
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  int total = 0;
  for (int i = 0; i < kReplicas; ++i) {
    EXPECT_EQ(errors[static_cast<size_t>(i)], 0) << "replica " << i;
    total += wrote[static_cast<size_t>(i)];
  }
  EXPECT_EQ(total, kJobs);
  int64_t charged = 0;
  for (const Transaction& t : settlements) {
    for (const Posting& p : t.postings) {
      if (p.account == "client:key_1") charged += p.amount_micros;
    }
  }
  EXPECT_EQ(*replicas[0]->balance("client:key_1"), charged);
  std::vector<Result<PayoutBatch>> batches(kReplicas, Unexpected(ErrorCode::kInternal, "not run"));
  threads.clear();
  for (int i = 0; i < kReplicas; ++i) {
    threads.emplace_back([&, i] { batches[static_cast<size_t>(i)] = replicas[static_cast<size_t>(i)]->payout_batch("2026-01", 0, kFeb1); });
  }
  for (auto& t : threads) t.join();
  int posted_now = 0;
  for (auto& b : batches) {
    ASSERT_TRUE(b) << b.error().to_string();
    posted_now += b->posted_now ? 1 : 0;
    EXPECT_EQ(b->payouts.size(), 2u);
  }
  EXPECT_EQ(posted_now, 1);
  auto verified = replicas[kReplicas - 1]->verify();
  ASSERT_TRUE(verified) << verified.error().to_string();
  EXPECT_EQ(verified->total_micros, 0);
}

INSTANTIATE_TEST_SUITE_P(Backends, LedgerContract, ::testing::Values(Backend::kSqlite, Backend::kPostgres),
                         testing::backend_name);

}  // namespace
}  // namespace idlefleet::store::ledger_store_test
