// The official OpenAI Node client (npm's `openai`, the exact version pinned in
// tests/node/package-lock.json) against the live fleet: nats-server,
// `idlefleet coordinator` and `idlefleet agent --vehicles 3` as real
// processes. Issue 4, acceptance A: the client works unchanged.
//
// The checks themselves are in tests/node/openai_compat.mjs (node:test); this
// file starts the fleet, installs the package with `npm ci` when
// tests/node/node_modules does not already hold exactly the locked versions,
// runs `node --test` with OPENAI_BASE_URL and OPENAI_API_KEY naming the
// coordinator, and fails with the script's output when it fails.
//
// Node and npm come from scripts/bootstrap; without them the test fails
// (never skips) and says so. Without ../shared it skips as the other fleet
// tests do, and fails in CI.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "support/http_client.h"
#include "support/node_tests.h"
#include "support/process_util.h"
#include "transport/nats_server.h"
#include "transport/process.h"

namespace idlefleet::openai_node_test {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const fs::path kShared = fs::path(IDLEFLEET_SOURCE_DIR) / ".." / "shared" / "models";
const fs::path kNodeDir = fs::path(IDLEFLEET_SOURCE_DIR) / "tests" / "node";

// The script itself takes seconds on the tiny model.
constexpr int64_t kNodeTestMsMax = 90'000;
constexpr int64_t kFleetReadyMsMax = 30'000;

using testing::eventually;
using testing::log_tail;
using testing::read_text_file;
using testing::run_capture;
using testing::shell_quote;

class OpenAiNode : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(kShared / "stories260K.bin")) {
      if (std::getenv("CI") != nullptr) FAIL() << "../shared/models is missing in CI";
      GTEST_SKIP() << "*** ../shared/models/stories260K.bin is absent: the OpenAI client test needs a model ***";
    }
    for (const char* tool : {"node", "npm"}) {
      ASSERT_TRUE(transport::find_program(tool).has_value())
          << tool << " is not on PATH: scripts/bootstrap installs Node.js and npm";
    }
    dir_ = fs::path(::testing::TempDir()) / ("openai_node_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    model_ = (dir_ / "stories260K.gguf").string();
    const std::string convert = std::string(IDLEFLEET_BINARY) + " model convert-llama2c " +
                                shell_quote((kShared / "stories260K.bin").string()) + " --tokenizer " +
                                shell_quote((kShared / "tok512.bin").string()) + " -o " + shell_quote(model_) +
                                " 2>&1";
    const std::string converted = run_capture(convert);
    ASSERT_TRUE(fs::exists(model_)) << convert << "\n" << converted;

    transport::NatsServerOptions n;
    n.log_path = (dir_ / "nats.log").string();
    auto nats = transport::NatsServer::start(n);
    ASSERT_TRUE(nats.has_value()) << nats.error().to_string();
    nats_ = std::move(*nats);

    auto port = transport::free_loopback_port();
    ASSERT_TRUE(port.has_value());
    base_url_ = "http://127.0.0.1:" + std::to_string(*port);
    transport::ProcessOptions co;
    co.program = IDLEFLEET_BINARY;
    co.args = {"coordinator", "--nats", nats_->url(), "--http-port", std::to_string(*port), "--data-dir",
               (dir_ / "data").string(), "--model", "stories260K=" + model_};
    co.stdout_path = co.stderr_path = (dir_ / "coordinator.log").string();
    auto coordinator = transport::Process::spawn(co);
    ASSERT_TRUE(coordinator.has_value()) << coordinator.error().to_string();
    coordinator_ = std::make_unique<transport::Process>(std::move(*coordinator));
    ASSERT_TRUE(transport::wait_for_tcp("127.0.0.1", *port, 20000)) << log("coordinator.log");

    transport::ProcessOptions a;
    a.program = IDLEFLEET_BINARY;
    // 20:00 on the simulated clock: the cars are home, most plugged in.
    a.args = {"agent", "--vehicles", "3", "--nats", nats_->url(), "--coordinator", base_url_, "--start", "20:00",
              "--cache-dir", (dir_ / "cache").string(), "--target-soc", "50"};
    a.stdout_path = a.stderr_path = (dir_ / "agent.log").string();
    auto agent = transport::Process::spawn(a);
    ASSERT_TRUE(agent.has_value()) << agent.error().to_string();
    agent_ = std::make_unique<transport::Process>(std::move(*agent));
  }

  void TearDown() override {
    if (agent_) agent_->stop();
    if (coordinator_) coordinator_->stop();
    if (nats_) nats_->stop();
    if (!HasFailure() && !dir_.empty()) fs::remove_all(dir_);
  }

  json status() {
    auto r = testing::http_get(base_url_ + "/v1/status");
    if (r.status != 200) return json::object();
    json j = json::parse(r.body, nullptr, false);
    return j.is_discarded() ? json::object() : j;
  }

  std::string log(const std::string& name) { return log_tail(read_text_file(dir_ / name)); }

  fs::path dir_;
  std::string model_;
  std::unique_ptr<transport::NatsServer> nats_;
  std::unique_ptr<transport::Process> coordinator_, agent_;
  std::string base_url_;
};

TEST_F(OpenAiNode, OfficialClientWorksUnchanged) {
  // The package, installed once per checkout (and again when the lock changes).
  const std::string installed = testing::npm_ci_if_needed(kNodeDir, dir_ / "npm.log");
  ASSERT_EQ(installed, "");

  // Three vehicles online, and at least one able to take work.
  ASSERT_TRUE(eventually([&] { return status().value("/vehicles/online"_json_pointer, 0) == 3; }, kFleetReadyMsMax))
      << status().dump() << log("agent.log");
  ASSERT_TRUE(eventually([&] { return status().value("/vehicles/available"_json_pointer, 0) >= 1; }, kFleetReadyMsMax))
      << status().dump() << log("agent.log");

  EXPECT_EQ(testing::run_node_tests(kNodeDir / "openai_compat.mjs",
                                     {"OPENAI_BASE_URL=" + base_url_ + "/v1", "OPENAI_API_KEY=sk-idlefleet-test",
                                      "IDLEFLEET_MODEL=stories260K", "NO_COLOR=1"},
                                     dir_ / "node.log", kNodeTestMsMax),
            "")
      << "--- coordinator.log ---\n"
      << log("coordinator.log");
  std::fprintf(stderr, "%s", log("node.log").c_str());
}

}  // namespace
}  // namespace idlefleet::openai_node_test
