// Owners and enrolment, end to end with real processes: an owner's one-time
// code enrols a vehicle (its key made on the vehicle); with enrolment
// required, a vehicle that was not enrolled is refused; each owner sees only
// their own vehicles; a client API key cannot call owner routes; and the
// work an enrolled car does is paid to its owner.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "store/ledger_store.h"
#include "support/http_client.h"
#include "support/process_util.h"
#include "transport/nats_server.h"
#include "transport/process.h"

namespace idlefleet {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using testing::eventually;
using testing::run_capture;
using testing::shell_quote;

const fs::path kShared = fs::path(IDLEFLEET_SOURCE_DIR) / ".." / "shared" / "models";

class Owners : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(kShared / "stories260K.bin")) {
      if (std::getenv("CI") != nullptr) FAIL() << "../shared/models is missing in CI";
      GTEST_SKIP() << "*** ../shared/models/stories260K.bin is absent: the owners test needs a model ***";
    }
    dir_ = fs::path(::testing::TempDir()) / ("owners_" + std::to_string(::getpid()));
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
    auto port = transport::free_loopback_port();
    ASSERT_TRUE(port.has_value());
    base_url_ = "http://127.0.0.1:" + std::to_string(*port);
    std::ofstream(dir_ / "coordinator.toml") << "data_dir = \"" << (dir_ / "data").string() << "\"\n"
                                             << "[vehicles]\nenrolment = \"required\"\n"
                                             << "[pricing]\nprompt_micros_per_mtok = 1000000\n"
                                             << "completion_micros_per_mtok = 1000000\n";
    transport::ProcessOptions co;
    co.program = IDLEFLEET_BINARY;
    co.args = {"coordinator", "--config", (dir_ / "coordinator.toml").string(), "--nats", nats_->url(),
               "--http-port", std::to_string(*port), "--model", "stories260K=" + model_};
    co.stdout_path = co.stderr_path = (dir_ / "coordinator.log").string();
    auto coordinator = transport::Process::spawn(co);
    ASSERT_TRUE(coordinator.has_value()) << coordinator.error().to_string();
    coordinator_ = std::make_unique<transport::Process>(std::move(*coordinator));
    ASSERT_TRUE(transport::wait_for_tcp("127.0.0.1", *port, 20000));
  }

  void TearDown() override {
    if (agent_) agent_->stop();
    if (coordinator_) coordinator_->stop();
    if (nats_) nats_->stop();
    if (!HasFailure() && !dir_.empty()) fs::remove_all(dir_);
  }

  std::string cli(const std::string& args) {
    return run_capture(std::string(IDLEFLEET_BINARY) + " " + args + " 2>&1; echo rc=$?");
  }
  // id and token of a new owner.
  std::pair<std::string, std::string> make_owner(const std::string& name) {
    const std::string out = cli("admin owners create --name " + name + " --data-dir " + shell_quote((dir_ / "data").string()));
    std::string id, token;
    std::istringstream in(out);
    for (std::string line; std::getline(in, line);) {
      if (line.rfind("id: ", 0) == 0) id = line.substr(4);
      if (line.rfind("token: ", 0) == 0) token = line.substr(7);
    }
    EXPECT_FALSE(token.empty()) << out;
    return {id, token};
  }
  std::string new_code(const std::string& token) {
    auto r = testing::http_post(base_url_ + "/v1/owner/enrolment_codes", "", {"Authorization: Bearer " + token});
    EXPECT_EQ(r.status, 200) << r.body;
    return json::parse(r.body, nullptr, false).value("code", "");
  }
  std::string enrol(const std::string& vehicle, const std::string& code) {
    return cli("agent enroll --coordinator " + base_url_ + " --code " + shell_quote(code) + " --vehicle-id " + vehicle +
               " --cache-dir " + shell_quote((dir_ / "cache").string()));
  }
  json get(const std::string& path, const std::string& token) {
    auto r = testing::http_get(base_url_ + path, {"Authorization: Bearer " + token});
    last_status_ = r.status;
    return json::parse(r.body, nullptr, false);
  }
  json status() { return json::parse(testing::http_get(base_url_ + "/v1/status").body, nullptr, false); }

  fs::path dir_;
  std::string model_, base_url_;
  long last_status_ = 0;
  std::unique_ptr<transport::NatsServer> nats_;
  std::unique_ptr<transport::Process> coordinator_, agent_;
};

TEST_F(Owners, EnrolledVehiclesWorkForTheirOwnersAndNobodyElse) {
  const auto [alice, alice_token] = make_owner("alice");
  const auto [bob, bob_token] = make_owner("bob");
  const std::string code = new_code(alice_token);
  ASSERT_EQ(code.rfind("enr-", 0), 0u) << code;

  // A code enrols one vehicle, once.
  std::string out = enrol("car-01", code);
  ASSERT_NE(out.find("rc=0"), std::string::npos) << out;
  EXPECT_NE(out.find(alice), std::string::npos) << out;
  EXPECT_TRUE(fs::exists(dir_ / "cache" / "keys" / "car-01.key"));
  out = enrol("car-02", code);
  EXPECT_NE(out.find("already used"), std::string::npos) << out;
  EXPECT_EQ(out.find("rc=0"), std::string::npos) << out;
  out = enrol("car-02", "enr-00000000000000000000000000000000");
  EXPECT_NE(out.find("no such enrolment code"), std::string::npos) << out;
  // Bob cannot take Alice's car.
  out = enrol("car-01", new_code(bob_token));
  EXPECT_NE(out.find("another owner"), std::string::npos) << out;

  // Garbage at the enrolment route is a 400, never a crash.
  for (const std::string& body : {std::string(""), std::string("[]"), std::string("{\"code\":5}"),
                                  std::string("{\"code\":\"x\",\"vehicle_id\":\"car 9\",\"public_key\":\"ab\"}"),
                                  std::string(R"({"code":")") + std::string(300, 'c') + R"(","vehicle_id":"a","public_key":"b"})",
                                  std::string("\xff\xfe{")}) {
    auto r = testing::http_post(base_url_ + "/v1/vehicles/enroll", body, {"Content-Type: application/json"});
    EXPECT_TRUE(r.status == 400 || r.status == 404) << r.status << " for " << body.substr(0, 40) << ": " << r.body;
  }
  EXPECT_EQ(testing::http_get(base_url_ + "/v1/vehicles/enroll").status, 405);

  // Two cars start; only the enrolled one is let in.
  transport::ProcessOptions a;
  a.program = IDLEFLEET_BINARY;
  a.args = {"agent", "--vehicles", "2", "--nats", nats_->url(), "--coordinator", base_url_, "--start", "20:00",
            "--cache-dir", (dir_ / "cache").string(), "--target-soc", "50"};
  a.stdout_path = a.stderr_path = (dir_ / "agent.log").string();
  auto agent = transport::Process::spawn(a);
  ASSERT_TRUE(agent.has_value());
  agent_ = std::make_unique<transport::Process>(std::move(*agent));
  ASSERT_TRUE(eventually([&] { return status().value("/vehicles/available"_json_pointer, 0) == 1; }, 30000))
      << status().dump();
  EXPECT_EQ(status().value("/vehicles/known"_json_pointer, 0), 1) << status().dump();
  const std::string metrics = testing::http_get(base_url_ + "/metrics").body;
  EXPECT_NE(metrics.find("reason=\"not_enrolled\""), std::string::npos);

  // Each owner sees their own vehicles only.
  json mine = get("/v1/owner/vehicles", alice_token);
  ASSERT_EQ(last_status_, 200) << mine.dump();
  ASSERT_EQ(mine["data"].size(), 1u) << mine.dump();
  EXPECT_EQ(mine["data"][0]["id"], "car-01");
  EXPECT_TRUE(mine["data"][0]["online"].get<bool>());
  // And its verification standing (never checked here: the initial one, not quarantined).
  EXPECT_EQ(mine["data"][0]["verification"].value("standing", -1), 500) << mine.dump();
  EXPECT_FALSE(mine["data"][0]["verification"].value("quarantined", true)) << mine.dump();
  EXPECT_EQ(get("/v1/owner/vehicles", bob_token)["data"].size(), 0u);
  get("/v1/owner/vehicles", "ow-idf-" + std::string(64, '0'));
  EXPECT_EQ(last_status_, 401);
  EXPECT_EQ(testing::http_get(base_url_ + "/v1/owner/vehicles").status, 401);
  // A client API key cannot call owner routes.
  get("/v1/owner/vehicles", "sk-idf-" + std::string(64, 'a'));
  EXPECT_EQ(last_status_, 403);

  // Work done by Alice's car is paid to Alice.
  auto r = testing::http_post(base_url_ + "/v1/completions",
                              R"({"model":"stories260K","prompt":"Once upon a time","max_tokens":64,"seed":1})",
                              {"Content-Type: application/json"});
  ASSERT_EQ(r.status, 200) << r.body;
  const std::string job = json::parse(r.body).value("id", "");
  // The car's receipt follows its last message; the job settles once it is in.
  ASSERT_TRUE(eventually(
      [&] {
        return testing::http_get(base_url_ + "/metrics").body.find("idlefleet_events_total{event=\"settled\"} 1") !=
               std::string::npos;
      },
      20000))
      << testing::http_get(base_url_ + "/metrics").body;
  coordinator_->stop();
  auto ledger = store::LedgerStore::open((dir_ / "data" / store::kLedgerFileName).string());
  ASSERT_TRUE(ledger.has_value());
  auto txs = (*ledger)->transactions_for_job(job);
  ASSERT_TRUE(txs.has_value());
  ASSERT_EQ(txs->size(), 1u);
  bool alice_paid = false;
  for (const auto& p : txs->front().postings) alice_paid |= p.account == "owner:" + alice && p.amount_micros > 0;
  std::string postings;
  for (const auto& p : txs->front().postings) postings += p.account + " " + std::to_string(p.amount_micros) + " " + p.kind + "; ";
  EXPECT_TRUE(alice_paid) << "no posting to owner:" << alice << ": " << postings;
}

}  // namespace
}  // namespace idlefleet
