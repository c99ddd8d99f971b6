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
#include <set>
#include <string>

#include "core/ledger.h"
#include "core/protocol.h"
#include "store/job_store.h"
#include "store/ledger_store.h"
#include "store/vehicle_store.h"
#include "support/process_util.h"
#include "transport/nats_server.h"
#include "transport/process.h"

namespace idlefleet {
namespace {

namespace fs = std::filesystem;
using testing::run_capture;
using testing::shell_quote;

const fs::path kShared = fs::path(IDLEFLEET_SOURCE_DIR) / ".." / "shared" / "models";

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
    if (!fs::exists(kShared / "stories260K.bin")) {
      if (std::getenv("CI") != nullptr) FAIL() << "../shared/models is missing in CI";
      GTEST_SKIP() << "*** ../shared/models/stories260K.bin is absent: the settlement test needs a model ***";
    }
    dir_ = fs::path(::testing::TempDir()) / ("settlement_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "data");
    model_ = (dir_ / "stories260K.gguf").string();
    run_capture(std::string(IDLEFLEET_BINARY) + " model convert-llama2c " +
                shell_quote((kShared / "stories260K.bin").string()) + " --tokenizer " +
                shell_quote((kShared / "tok512.bin").string()) + " -o " + shell_quote(model_) + " 2>&1");
    ASSERT_TRUE(fs::exists(model_));
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
  void run_coordinator(int n) {
    auto port = transport::free_loopback_port();
    ASSERT_TRUE(port.has_value());
    std::ofstream(dir_ / "coordinator.toml") << "data_dir = \"" << (dir_ / "data").string() << "\"\n"
                                             << "[pricing]\nprompt_micros_per_mtok = 1000000\n"
                                             << "completion_micros_per_mtok = 2000000\n";
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

  fs::path dir_;
  std::string model_;
  std::unique_ptr<transport::NatsServer> nats_;
};

TEST_F(Settlement, AJobThatEndedBeforeACrashIsSettledOnceAtTheNextStart) {
  {
    // What the crashed coordinator left: the job done in the job store, the
    // receipts of its two attempts (on two cars) stored, no settlement.
    auto jobs = store::JobStore::open((dir_ / "data" / "jobs.sqlite3").string());
    ASSERT_TRUE(jobs.has_value()) << jobs.error().to_string();
    store::StoredJob j;
    j.id = "cmpl-crashed";
    j.kind = "completion";
    j.model_id = "stories260K";
    j.request_json = R"({"chat":false,"model":"stories260K","stream":false,"key":""})";
    j.prompt_ids = {1, 2, 3, 4};
    j.max_tokens = 10;
    j.sampling_json = "{}";
    j.state = "done";
    j.produced = {5, 6, 7, 8, 9, 10};
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
    ASSERT_TRUE(*(*vehicles)->put_receipt(receipt("car-01", "cmpl-crashed", 1, 2), "", 1));
    ASSERT_TRUE(*(*vehicles)->put_receipt(receipt("car-02", "cmpl-crashed", 2, 4), "", 2));
  }
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

}  // namespace
}  // namespace idlefleet
