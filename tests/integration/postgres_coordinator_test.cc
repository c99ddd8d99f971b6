// A coordinator whose stores are all in PostgreSQL (`database = "postgresql://..."`,
// issue #9 deliverable 1): an API key made with `idlefleet admin --database`
// before it starts admits requests; real vehicles serve them; the coordinator
// is killed (SIGKILL) and a new one on the same database settles, serves and
// knows the same keys and vehicles; `idlefleet ledger verify --database`
// checks every finished job and receipt; and nothing was written to SQLite.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "support/http_client.h"
#include "support/postgres_server.h"
#include "support/process_util.h"
#include "support/shared_model.h"
#include "transport/nats_server.h"
#include "transport/process.h"

namespace idlefleet::postgres_coordinator_test {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using testing::eventually;
using testing::run_capture;
using testing::shell_quote;

class PostgresCoordinator : public ::testing::Test {
 protected:
  void SetUp() override {
    IDLEFLEET_REQUIRE_SHARED_MODEL("the PostgreSQL coordinator test");
    dir_ = fs::path(::testing::TempDir()) / ("pg_coordinator_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "data");
    model_ = (dir_ / "stories260K.gguf").string();
    ASSERT_TRUE(testing::convert_shared_model(model_));
    url_ = testing::fresh_postgres_database("fleet", &database_);
    transport::NatsServerOptions n;
    n.log_path = (dir_ / "nats.log").string();
    auto nats = transport::NatsServer::start(n);
    ASSERT_TRUE(nats.has_value()) << nats.error().to_string();
    nats_ = std::move(*nats);
    std::ofstream(dir_ / "coordinator.toml") << "data_dir = \"" << (dir_ / "data").string() << "\"\n"
                                             << "database = \"" << url_ << "\"\n"
                                             << "[auth]\nrequired = true\n"
                                             << "[pricing]\nprompt_micros_per_mtok = 1000000\n"
                                             << "completion_micros_per_mtok = 2000000\n";
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

  void start_coordinator(int n) {
    auto port = transport::free_loopback_port();
    ASSERT_TRUE(port.has_value());
    base_url_ = "http://127.0.0.1:" + std::to_string(*port);
    transport::ProcessOptions co;
    co.program = IDLEFLEET_BINARY;
    co.args = {"coordinator", "--config", (dir_ / "coordinator.toml").string(), "--nats", nats_->url(),
               "--http-port", std::to_string(*port), "--model", "stories260K=" + model_};
    co.stdout_path = co.stderr_path = (dir_ / ("coordinator" + std::to_string(n) + ".log")).string();
    auto c = transport::Process::spawn(co);
    ASSERT_TRUE(c.has_value()) << c.error().to_string();
    coordinator_.emplace(std::move(*c));
    ASSERT_TRUE(transport::wait_for_tcp("127.0.0.1", *port, 20000)) << log("coordinator" + std::to_string(n) + ".log");
  }

  void start_agent() {
    transport::ProcessOptions a;
    a.program = IDLEFLEET_BINARY;
    a.args = {"agent", "--vehicles", "3", "--nats", nats_->url(), "--coordinator", base_url_, "--start", "20:00",
              "--cache-dir", (dir_ / "cache").string(), "--target-soc", "50"};
    a.stdout_path = a.stderr_path = (dir_ / "agent.log").string();
    auto agent = transport::Process::spawn(a);
    ASSERT_TRUE(agent.has_value()) << agent.error().to_string();
    agent_.emplace(std::move(*agent));
  }

  // A completion with the key; returns its text ("" and a test failure otherwise).
  std::string complete(const std::string& prompt, int seed) {
    const json body = {{"model", "stories260K"}, {"prompt", prompt}, {"max_tokens", 24}, {"seed", seed}};
    testing::HttpResult r;
    // The first request may come before a car is free (503 no_capacity): retried.
    eventually(
        [&] {
          r = testing::http_post(base_url_ + "/v1/completions", body.dump(), {"Authorization: Bearer " + secret_});
          return r.status != 503;
        },
        30000, 200);
    EXPECT_EQ(r.status, 200) << r.body << "\n" << log("agent.log");
    const json j = json::parse(r.body, nullptr, false);
    if (!j.is_object() || !j.contains("choices")) return "";
    return j["choices"][0].value("text", "");
  }

  std::string log(const std::string& name) {
    std::ifstream in(dir_ / name);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }

  fs::path dir_;
  std::string model_, url_, database_, base_url_, secret_;
  std::unique_ptr<transport::NatsServer> nats_;
  std::optional<transport::Process> coordinator_, agent_;
};

TEST_F(PostgresCoordinator, EveryStoreLivesInTheDatabaseAndSurvivesAKilledCoordinator) {
  // A key made before the coordinator exists, straight into the database.
  const std::string made = cli("admin keys create --name pg --database " + shell_quote(url_));
  ASSERT_NE(made.find("rc=0"), std::string::npos) << made;
  const size_t at = made.find("secret: ");
  ASSERT_NE(at, std::string::npos) << made;
  secret_ = made.substr(at + 8, made.find('\n', at) - at - 8);

  start_coordinator(1);
  start_agent();
  std::vector<std::string> first;
  for (int i = 0; i < 3; ++i) first.push_back(complete("Once upon a time", 100 + i));
  for (const std::string& t : first) EXPECT_FALSE(t.empty());
  // A wrong key is refused: the coordinator reads the keys from PostgreSQL.
  const auto refused = testing::http_post(base_url_ + "/v1/completions",
                                          R"({"model":"stories260K","prompt":"x","max_tokens":2})",
                                          {"Authorization: Bearer sk-not-a-key"});
  EXPECT_EQ(refused.status, 401) << refused.body;

  // Killed as a crash would; the next one starts from the database alone.
  coordinator_->signal(SIGKILL);
  coordinator_->wait(10000);
  coordinator_.reset();
  agent_->stop();
  agent_.reset();
  start_coordinator(2);
  start_agent();
  // The same seed gives the same text on the new coordinator's fleet.
  EXPECT_EQ(complete("Once upon a time", 100), first[0]);
  EXPECT_FALSE(complete("The little dog", 7).empty());

  // Every job is in the database, done; nothing is in SQLite files.
  // (A job's last state is written with the next tick's flush.)
  EXPECT_TRUE(eventually(
      [&] {
        auto n = testing::postgres().query(database_, "SELECT COUNT(*) FROM jobs WHERE state = 'done'");
        return n && *n == "5";
      },
      10000, 50));
  auto vehicles = testing::postgres().query(database_, "SELECT COUNT(*) FROM vehicles");
  ASSERT_TRUE(vehicles);
  EXPECT_EQ(*vehicles, "3");
  for (const auto& e : fs::recursive_directory_iterator(dir_ / "data")) {
    const std::string name = e.path().filename().string();
    EXPECT_TRUE(name.find(".sqlite3") == std::string::npos && name.find(".db") == std::string::npos)
        << "a SQLite file was written: " << e.path();
  }

  // Settled once each (some at the next start), and verified against the
  // jobs and receipts in the same database.
  ASSERT_TRUE(eventually(
      [&] {
        auto n = testing::postgres().query(database_, "SELECT COUNT(*) FROM transactions WHERE kind = 'settlement'");
        return n && *n == "5";
      },
      20000, 100))
      << log("coordinator2.log");
  const std::string verify = cli("ledger verify --database " + shell_quote(url_));
  EXPECT_NE(verify.find("rc=0"), std::string::npos) << verify;
  EXPECT_NE(verify.find("5 finished jobs"), std::string::npos) << verify;
}

}  // namespace
}  // namespace idlefleet::postgres_coordinator_test
