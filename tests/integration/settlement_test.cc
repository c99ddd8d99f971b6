// Settlement after a crash: a job that finished done, with its receipts
// stored, but whose settlement was never posted (the coordinator stopped
// between the two), is settled by the next coordinator at start, once; a
// third start posts nothing more, and the ledger verifies.
#include <gtest/gtest.h>
#include <sqlite3.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>

#include "core/ledger.h"
#include "core/policy.h"
#include "core/protocol.h"
#include "store/job_store.h"
#include "store/ledger_store.h"
#include "store/vehicle_store.h"
#include "support/process_util.h"
#include "support/shared_model.h"
#include "transport/nats_server.h"
#include "transport/process.h"

namespace idlefleet::settlement_test {
namespace {

namespace fs = std::filesystem;
using testing::run_capture;
using testing::shell_quote;


core::ReceiptMessage receipt(const std::string& vehicle, const std::string& job, uint32_t attempt, uint64_t tokens) {
  core::ReceiptMessage r;
  r.vehicle_id = vehicle;
  r.job_id = job;
  r.attempt = attempt;
  r.model_id = "stories260K";
  r.outcome = attempt == 1 ? "preempted" : "done";
  r.output_tokens = tokens;
  r.output_sha256 = std::string(64, '0');
  r.energy_mwh = 1000 * tokens;
  r.accelerator_ms = 100 * tokens;
  r.wear_micro_hours = 30 * tokens;
  r.started_at = 1795773600000;
  r.ended_at = 1795773601000;
  return r;
}

class Settlement : public ::testing::Test {
 protected:
  void SetUp() override {
    IDLEFLEET_REQUIRE_SHARED_MODEL("the settlement test");
    dir_ = fs::path(::testing::TempDir()) / ("settlement_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "data");
    model_ = (dir_ / "stories260K.gguf").string();
    ASSERT_TRUE(testing::convert_shared_model(model_));
    transport::NatsServerOptions n;
    n.log_path = (dir_ / "nats.log").string();
    auto nats = transport::NatsServer::start(n);
    ASSERT_TRUE(nats.has_value()) << nats.error().to_string();
    nats_ = std::move(*nats);
  }
  void TearDown() override {
    if (nats_) nats_->stop();
    if (!HasFailure() && !dir_.empty()) fs::remove_all(dir_);
  }

  // Starts a coordinator on the data directory, waits for it to serve, stops it.
  void run_coordinator(int n, const std::string& pricing = "[pricing]\nprompt_micros_per_mtok = 1000000\n"
                                                          "completion_micros_per_mtok = 2000000\n") {
    auto port = transport::free_loopback_port();
    ASSERT_TRUE(port.has_value());
    std::ofstream(dir_ / "coordinator.toml") << "data_dir = \"" << (dir_ / "data").string() << "\"\n" << pricing;
    transport::ProcessOptions co;
    co.program = IDLEFLEET_BINARY;
    co.args = {"coordinator", "--config", (dir_ / "coordinator.toml").string(), "--nats", nats_->url(),
               "--http-port", std::to_string(*port), "--model", "stories260K=" + model_};
    co.stdout_path = co.stderr_path = (dir_ / ("coordinator" + std::to_string(n) + ".log")).string();
    auto c = transport::Process::spawn(co);
    ASSERT_TRUE(c.has_value()) << c.error().to_string();
    ASSERT_TRUE(transport::wait_for_tcp("127.0.0.1", *port, 20000));
    c->stop();
  }

  // What a crashed coordinator left: `job` done in the job store with the
  // receipts of its attempts (attempt k on cars[k-1], tokens[k-1] tokens
  // each), and no settlement.
  void leave_done_job(const std::string& job, const std::vector<std::string>& cars,
                      const std::vector<uint64_t>& tokens) {
    auto jobs = store::JobStore::open((dir_ / "data" / "jobs.sqlite3").string());
    ASSERT_TRUE(jobs.has_value()) << jobs.error().to_string();
    store::StoredJob j;
    j.id = job;
    j.kind = "completion";
    j.model_id = "stories260K";
    j.request_json = R"({"chat":false,"model":"stories260K","stream":false,"key":""})";
    j.prompt_ids = {1, 2, 3, 4};
    uint64_t total = 0;
    for (uint64_t t : tokens) total += t;
    j.max_tokens = total;
    j.sampling_json = "{}";
    j.state = "done";
    for (uint64_t i = 0; i < total; ++i) j.produced.push_back(static_cast<int32_t>(5 + i));
    j.finish_reason = "length";
    j.attempts_json = "[]";
    j.created_at = 1795773600000;
    j.updated_at = std::chrono::duration_cast<std::chrono::milliseconds>(
                       std::chrono::system_clock::now().time_since_epoch())
                       .count() -
                   60000;
    ASSERT_TRUE((*jobs)->put(std::span<const store::StoredJob>(&j, 1)));
    auto vehicles = store::VehicleStore::open((dir_ / "data" / "vehicles.sqlite3").string());
    ASSERT_TRUE(vehicles.has_value());
    for (size_t k = 0; k < cars.size(); ++k) {
      core::ReceiptMessage r = receipt(cars[k], job, static_cast<uint32_t>(k + 1), tokens[k]);
      r.outcome = k + 1 == cars.size() ? "done" : "preempted";
      ASSERT_TRUE(*(*vehicles)->put_receipt(r, "", static_cast<core::TimeMs>(k + 1)));
    }
  }

  fs::path dir_;
  std::string model_;
  std::unique_ptr<transport::NatsServer> nats_;
};

TEST_F(Settlement, AJobThatEndedBeforeACrashIsSettledOnceAtTheNextStart) {
  // The job done in the job store, the receipts of its two attempts (on two
  // cars) stored, no settlement.
  leave_done_job("cmpl-crashed", {"car-01", "car-02"}, {2, 4});
  run_coordinator(1);
  run_coordinator(2);  // a second start finds it settled and posts nothing

  auto ledger = store::LedgerStore::open((dir_ / "data" / store::kLedgerFileName).string());
  ASSERT_TRUE(ledger.has_value()) << ledger.error().to_string();
  auto txs = (*ledger)->transactions_for_job("cmpl-crashed");
  ASSERT_TRUE(txs.has_value());
  ASSERT_EQ(txs->size(), 1u);
  const core::Transaction& tx = txs->front();
  // 4 prompt tokens at 1 unit per million and 6 completion tokens at 2.
  int64_t charged = 0;
  std::set<std::string> owners;
  for (const core::Posting& p : tx.postings) {
    if (p.account == "client:anonymous") charged -= p.amount_micros;
    if (p.account.rfind("owner:", 0) == 0) owners.insert(p.account);
  }
  EXPECT_EQ(charged, 16);
  EXPECT_EQ(owners, (std::set<std::string>{"owner:car-01", "owner:car-02"}));
  std::ifstream log(dir_ / "coordinator1.log");
  const std::string text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("1 finished jobs had no settlement"), std::string::npos) << text;
  const std::string verify = run_capture(std::string(IDLEFLEET_BINARY) + " ledger verify --data-dir " +
                                         shell_quote((dir_ / "data").string()) + " 2>&1; echo rc=$?");
  EXPECT_NE(verify.find("rc=0"), std::string::npos) << verify;
  EXPECT_NE(verify.find("1 finished jobs and 2 receipts checked"), std::string::npos) << verify;

  // A settlement lost from the ledger is what verify is for.
  ledger->reset();
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open((dir_ / "data" / store::kLedgerFileName).c_str(), &db), SQLITE_OK);
  EXPECT_EQ(sqlite3_exec(db, "DELETE FROM postings; DELETE FROM transactions;", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(db);
  const std::string broken = run_capture(std::string(IDLEFLEET_BINARY) + " ledger verify --data-dir " +
                                         shell_quote((dir_ / "data").string()) + " 2>&1; echo rc=$?");
  EXPECT_NE(broken.find("rc=1"), std::string::npos) << broken;
  EXPECT_NE(broken.find("cmpl-crashed"), std::string::npos) << broken;
}

// Issue [money], acceptance A: a job resumed across three vehicles pays each
// its metered share: the revenue share split by the tokens each produced,
// the energy each metered at its own owner's tariff (flat, time-of-use, or
// the coordinator's default when the owner entered none), and the wear each
// metered. Each owner's statement is the sum of what their receipts earned.
TEST_F(Settlement, AJobResumedAcrossThreeVehiclesPaysEachItsMeteredShareAtItsOwnersTariff) {
  leave_done_job("cmpl-three", {"car-01", "car-02", "car-03"}, {3, 4, 5});
  {
    auto vehicles = store::VehicleStore::open((dir_ / "data" / "vehicles.sqlite3").string());
    ASSERT_TRUE(vehicles.has_value());
    core::OwnerPolicy flat;
    flat.opted_in = true;
    flat.tariff = core::Tariff::flat(400'000);
    ASSERT_TRUE((*vehicles)->put_policy("car-01", flat, 1));
    core::OwnerPolicy tou;
    tou.opted_in = true;
    tou.tariff = core::Tariff::time_of_use({{0, 100'000}, {7 * 60, 300'000}}, {{0, 100'000}});
    ASSERT_TRUE((*vehicles)->put_policy("car-02", tou, 1));
    core::OwnerPolicy none;  // car-03's owner entered no tariff
    none.opted_in = true;
    ASSERT_TRUE((*vehicles)->put_policy("car-03", none, 1));
  }
  // 4 prompt tokens at 100 a million and 12 completion tokens at 500 (the
  // model's own prices, not [pricing]'s): 6,400 micro-units; 60% (3,840) to
  // owners, 3:4:5 by tokens.
  run_coordinator(1,
                  "[pricing]\nprompt_micros_per_mtok = 1000000\ncompletion_micros_per_mtok = 2000000\n"
                  "[pricing.models.stories260K]\nprompt_micros_per_mtok = 100000000\n"
                  "completion_micros_per_mtok = 500000000\n");

  auto ledger = store::LedgerStore::open((dir_ / "data" / store::kLedgerFileName).string());
  ASSERT_TRUE(ledger.has_value()) << ledger.error().to_string();
  auto txs = (*ledger)->transactions_for_job("cmpl-three");
  ASSERT_TRUE(txs.has_value());
  ASSERT_EQ(txs->size(), 1u);
  std::map<std::string, std::map<std::string, int64_t>> paid;  // owner -> kind -> amount
  for (const core::Posting& p : txs->front().postings) {
    if (p.account.rfind("owner:", 0) == 0) paid[p.account.substr(6)][p.kind] += p.amount_micros;
  }
  struct Expected {
    std::string owner;
    int64_t share, energy, wear;
  };
  // Energy: ceil(mWh x price / 1e6): 3,000 mWh at 0.40 (flat); 4,000 at 0.30
  // (time-of-use, 10:00 UTC is the day rate); 5,000 at 0.25 ([ledger]'s
  // default). Wear: ceil(weighted ms x 0.05 / 3.6e6): 324, 432, 540 ms.
  const std::vector<Expected> expected = {
      {"car-01", 960, 1200, 5}, {"car-02", 1280, 1200, 6}, {"car-03", 1600, 1250, 8}};
  const int64_t settled_at = txs->front().created_at_ms;
  const auto month = core::civil_from_days(settled_at / core::kDayMs);
  for (const Expected& e : expected) {
    SCOPED_TRACE(e.owner);
    EXPECT_EQ(paid[e.owner]["revenue_share"], e.share);
    EXPECT_EQ(paid[e.owner]["energy"], e.energy);
    EXPECT_EQ(paid[e.owner]["wear"], e.wear);
    auto st = (*ledger)->statement(e.owner, static_cast<int>(month.year), month.month);
    ASSERT_TRUE(st.has_value()) << st.error().to_string();
    EXPECT_EQ(st->receipts, 1u);
    EXPECT_EQ(st->jobs, 1u);
    EXPECT_EQ(st->totals_micros_by_kind["revenue_share"], e.share);
    EXPECT_EQ(st->totals_micros_by_kind["energy"], e.energy);
    EXPECT_EQ(st->totals_micros_by_kind["wear"], e.wear);
    EXPECT_EQ(st->net_micros, e.share + e.energy + e.wear);
  }
  const std::string verify = run_capture(std::string(IDLEFLEET_BINARY) + " ledger verify --data-dir " +
                                         shell_quote((dir_ / "data").string()) + " 2>&1; echo rc=$?");
  EXPECT_NE(verify.find("rc=0"), std::string::npos) << verify;
  EXPECT_NE(verify.find("1 finished jobs and 3 receipts checked"), std::string::npos) << verify;
}

}  // namespace
}  // namespace idlefleet::settlement_test
