// `idlefleet ledger` as an operator runs it: verify's exit codes (0 with a
// summary, 1 naming the first broken invariant), deposits and credit limits,
// statements and payout files, and exit 2 for every malformed flag.
// Settlements are posted through the store, as the coordinator will.
#include <gtest/gtest.h>
#include <sqlite3.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/ledger.h"
#include "store/ledger_store.h"
#include "support/run_command.h"

namespace {

namespace fs = std::filesystem;
using namespace idlefleet;

constexpr core::TimeMs kJan2 = 1'767'312'000'000;  // 2026-01-02T00:00:00Z

using idlefleet::testing::Ran;
using idlefleet::testing::run_idlefleet;

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class LedgerCli : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::path(::testing::TempDir()) / ("ledger_cli_" + std::to_string(::getpid()) + "_" + info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    data_ = "--data-dir '" + (dir_ / "data").string() + "'";
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string ledger_file() const { return (dir_ / "data" / std::string(store::kLedgerFileName)).string(); }

  // A settlement of job `job` for client key_1: alice made 3 tokens, bob 1.
  void settle(const std::string& job, core::TimeMs at) {
    fs::create_directories(dir_ / "data");
    auto ledger = store::LedgerStore::open(ledger_file());
    ASSERT_TRUE(ledger) << ledger.error().to_string();
    core::SettlementInput in;
    in.job_id = job;
    in.client_account = "client:key_1";
    in.model_id = "m";
    in.completion_tokens = 1'000'000;
    in.output_price_micros_per_million_tokens = 2'000'000;  // price 2 units
    in.owner_share_ppm = 500'000;
    in.settled_at_ms = at;
    in.attempts = {{"r-" + job + "-a", "alice", "car-a", 3, 1'000, 0, 250'000},
                   {"r-" + job + "-b", "bob", "car-b", 1, 1'000, 0, 250'000}};
    auto txn = core::settle_job(in);
    ASSERT_TRUE(txn) << txn.error().to_string();
    auto posted = (*ledger)->post(*txn);
    ASSERT_TRUE(posted) << posted.error().to_string();
  }

  void raw_exec(const std::string& sql) {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(ledger_file().c_str(), &db), SQLITE_OK);
    char* err = nullptr;
    EXPECT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err), SQLITE_OK) << (err ? err : "");
    sqlite3_free(err);
    sqlite3_close(db);
  }

  fs::path dir_;
  std::string data_;
};

TEST_F(LedgerCli, VerifyExitsZeroForAGoodLedgerAndOneForABrokenOne) {
  Ran r = run_idlefleet("ledger verify " + data_);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("error: no ledger at"), std::string::npos) << r.output;

  r = run_idlefleet("ledger deposit --client key_1 --amount 12.50 --ref bank-7 " + data_);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("deposited 12.500000 to client:key_1 (deposit:bank-7); balance 12.500000"),
            std::string::npos)
      << r.output;
  settle("j1", kJan2);
  r = run_idlefleet("ledger verify " + data_);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  // A deposit (2 postings) and a settlement (2 charge, 4 per owner).
  EXPECT_NE(r.output.find("ledger ok: 2 transactions, 12 postings, 6 accounts, total 0.000000"), std::string::npos)
      << r.output;

  // --config finds the same directory through data_dir.
  const fs::path toml = dir_ / "c.toml";
  std::ofstream(toml) << "data_dir = \"" << (dir_ / "data").string() << "\"\n";
  r = run_idlefleet("ledger verify -c '" + toml.string() + "'");
  EXPECT_EQ(r.exit_code, 0) << r.output;

  raw_exec("UPDATE postings SET receipt_id = '' WHERE txn_id = 'settle:j1' AND account = 'owner:bob'");
  r = run_idlefleet("ledger verify " + data_);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("error: ledger broken: "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("pays owner 'bob' without a receipt"), std::string::npos) << r.output;

  raw_exec("UPDATE postings SET receipt_id = 'r-j1-b' WHERE txn_id = 'settle:j1' AND account = 'owner:bob'");
  raw_exec("UPDATE postings SET amount = amount - 1 WHERE txn_id = 'settle:j1' AND seq = 1");
  r = run_idlefleet("ledger verify " + data_);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("postings sum to -1 micros, not zero"), std::string::npos) << r.output;

  // A file that is not a ledger: exit 1, naming it.
  fs::remove_all(dir_ / "data");
  fs::create_directories(dir_ / "data");
  std::ofstream(ledger_file()) << std::string(4096, 'j');
  r = run_idlefleet("ledger verify " + data_);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("ledger.sqlite3"), std::string::npos) << r.output;
}

TEST_F(LedgerCli, StatementsPayoutsBalancesAndCreditLimits) {
  settle("j1", kJan2);
  settle("j2", kJan2 + 1000);
  Ran r = run_idlefleet("ledger statement --owner alice --month 2026-01 --format csv " + data_);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  // Per job: 0.75 of the 1-unit pool, 250 micros of energy (1 Wh at 0.25 per kWh).
  EXPECT_NE(r.output.find("date,transaction,job,receipt,kind,amount\n"
                          "2026-01-02T00:00:00Z,settle:j1,j1,r-j1-a,revenue_share,0.750000\n"),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("total,,,,net,1.500500\n"), std::string::npos) << r.output;
  const fs::path json_file = dir_ / "alice.json";
  r = run_idlefleet("ledger statement --owner owner:alice --month 2026-01 -o '" + json_file.string() + "' " + data_);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto statement = nlohmann::json::parse(read_file(json_file));
  EXPECT_EQ(statement["closing_balance"], "1.500500");
  EXPECT_EQ(statement["jobs"], 2);

  const fs::path csv = dir_ / "payouts.csv";
  r = run_idlefleet("ledger payouts --month 2026-01 --min 0.6 -o '" + csv.string() + "' " + data_);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("posted 1 payouts"), std::string::npos) << r.output;
  const std::string first = read_file(csv);
  EXPECT_EQ(first,
            "owner,amount,batch_id,transaction_id\n"
            "alice,1.500500,payout:2026-01,payout:2026-01:alice\n");
  r = run_idlefleet("ledger payouts --month 2026-01 " + data_);  // again, without --min: the same batch
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find(first), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("already paid"), std::string::npos) << r.output;
  r = run_idlefleet("ledger payouts --month 2999-01 " + data_);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("is not over"), std::string::npos) << r.output;

  r = run_idlefleet("ledger credit-limit --client key_1 --amount 10 " + data_);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = run_idlefleet("ledger balances --json " + data_);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto balances = nlohmann::json::parse(r.output);
  int64_t total = 0;
  for (const auto& b : balances) {
    total += b["balance_micros"].get<int64_t>();
    if (b["account"] == "client:key_1") {
      EXPECT_EQ(b["balance"], "-4.000000");
      EXPECT_EQ(b["credit_limit_micros"], 10'000'000);
    }
    if (b["account"] == "owner:alice") {
      EXPECT_EQ(b["balance_micros"], 0);
    }
  }
  EXPECT_EQ(total, 0);
  r = run_idlefleet("ledger balances " + data_);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("external:payouts"), std::string::npos) << r.output;
  EXPECT_EQ(run_idlefleet("ledger verify " + data_).exit_code, 0);
}

TEST_F(LedgerCli, MalformedFlagsExitTwo) {
  for (const std::string& args : std::vector<std::string>{
           "ledger", "ledger frobnicate", "ledger verify --data-dir a --config b",
           "ledger statement --month 2026-01 " + data_, "ledger statement --owner alice " + data_,
           "ledger statement --owner 'a b' --month 2026-01 " + data_,
           "ledger statement --owner alice --month 2026-13 " + data_,
           "ledger statement --owner alice --month 26-01 " + data_,
           "ledger statement --owner alice --month 2026-01 --format xml " + data_, "ledger payouts " + data_,
           "ledger payouts --month 2026-01 --min -1 " + data_, "ledger payouts --month 2026-01 --min 1.0000001 " + data_,
           "ledger deposit --client key_1 " + data_, "ledger deposit --amount 5 " + data_,
           "ledger deposit --client key_1 --amount 0 " + data_, "ledger deposit --client key_1 --amount ten " + data_,
           "ledger deposit --client key_1 --amount 1.2345678 " + data_,
           "ledger deposit --client key_1 --amount 99999999999 " + data_,
           "ledger deposit --client 'a b' --amount 1 " + data_,
           "ledger deposit --client owner:alice --amount 1 " + data_,
           "ledger deposit --client key_1 --amount 1 --ref ':x' " + data_,
           "ledger credit-limit --client key_1 --amount -5 " + data_, "ledger credit-limit --amount 5 " + data_}) {
    const Ran r = run_idlefleet(args, dir_.string());
    EXPECT_EQ(r.exit_code, 2) << args << ": " << r.output;
  }
  EXPECT_FALSE(fs::exists(dir_ / "data")) << "a refused command made the data directory";
  // A deposit under a reference already used for another amount: a runtime error.
  ASSERT_EQ(run_idlefleet("ledger deposit --client key_1 --amount 1 --ref r1 " + data_).exit_code, 0);
  const Ran r = run_idlefleet("ledger deposit --client key_1 --amount 2 --ref r1 " + data_);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("already exists with other content"), std::string::npos) << r.output;
}

}  // namespace
