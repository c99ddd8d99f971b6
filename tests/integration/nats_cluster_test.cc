// The fleet on a 3-server NATS cluster on loopback (issue #9, deliverable 3):
// the coordinator connects to one server, the vehicles of two agents to the
// other two, so every message crosses a route. Requests are served; then the
// coordinator's server is killed (SIGKILL) and the same requests sent at
// once: the coordinator fails over to a server it learnt from the cluster,
// and every request completes with the text the same seed gave before.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "support/http_client.h"
#include "support/process_util.h"
#include "support/shared_model.h"
#include "transport/nats_server.h"
#include "transport/process.h"

namespace idlefleet::nats_cluster_test {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using testing::eventually;

constexpr int kServers = 3;
constexpr int kRequests = 8;

class NatsCluster : public ::testing::Test {
 protected:
  void SetUp() override {
    IDLEFLEET_REQUIRE_SHARED_MODEL("the NATS cluster test");
    dir_ = fs::path(::testing::TempDir()) / ("nats_cluster_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    model_ = (dir_ / "stories260K.gguf").string();
    ASSERT_TRUE(testing::convert_shared_model(model_));
    std::vector<uint16_t> routes;
    for (int i = 0; i < kServers; ++i) {
      auto port = transport::free_loopback_port();
      ASSERT_TRUE(port.has_value());
      routes.push_back(*port);
    }
    for (int i = 0; i < kServers; ++i) {
      transport::NatsServerOptions n;
      n.log_path = (dir_ / ("nats" + std::to_string(i) + ".log")).string();
      n.cluster_port = routes[static_cast<size_t>(i)];
      for (int j = 0; j < kServers; ++j) {
        if (j != i) n.cluster_routes.push_back(routes[static_cast<size_t>(j)]);
      }
      auto server = transport::NatsServer::start(n);
      ASSERT_TRUE(server.has_value()) << server.error().to_string();
      servers_.push_back(std::move(*server));
    }
    // The cluster is formed when each server has routes to the other two.
    ASSERT_TRUE(eventually(
        [&] {
          for (int i = 0; i < kServers; ++i) {
            std::ifstream in(dir_ / ("nats" + std::to_string(i) + ".log"));
            std::stringstream s;
            s << in.rdbuf();
            const std::string text = s.str();
            size_t routes_up = 0;
            for (size_t at = text.find("Route connection created"); at != std::string::npos;
                 at = text.find("Route connection created", at + 1)) {
              ++routes_up;
            }
            if (routes_up < kServers - 1) return false;
          }
          return true;
        },
        20000, 50))
        << "the cluster did not form";

    auto port = transport::free_loopback_port();
    ASSERT_TRUE(port.has_value());
    base_url_ = "http://127.0.0.1:" + std::to_string(*port);
    transport::ProcessOptions co;
    co.program = IDLEFLEET_BINARY;
    co.args = {"coordinator", "--nats", servers_[0]->url(), "--http-port", std::to_string(*port), "--data-dir",
               (dir_ / "data").string(), "--model", "stories260K=" + model_};
    co.stdout_path = co.stderr_path = (dir_ / "coordinator.log").string();
    auto c = transport::Process::spawn(co);
    ASSERT_TRUE(c.has_value()) << c.error().to_string();
    coordinator_.emplace(std::move(*c));
    ASSERT_TRUE(transport::wait_for_tcp("127.0.0.1", *port, 20000));
    for (int i = 1; i < kServers; ++i) {
      transport::ProcessOptions a;
      a.program = IDLEFLEET_BINARY;
      a.args = {"agent", "--vehicles", "3", "--id-prefix", "on" + std::to_string(i), "--nats", servers_[i]->url(),
                "--coordinator", base_url_, "--start", "20:00", "--cache-dir", (dir_ / "cache").string(),
                "--target-soc", "50"};
      a.stdout_path = a.stderr_path = (dir_ / ("agent" + std::to_string(i) + ".log")).string();
      auto agent = transport::Process::spawn(a);
      ASSERT_TRUE(agent.has_value()) << agent.error().to_string();
      agents_.push_back(std::move(*agent));
    }
  }

  void TearDown() override {
    for (auto& a : agents_) a.stop();
    if (coordinator_) coordinator_->stop();
    for (auto& s : servers_) s->stop();
    if (!HasFailure() && !dir_.empty()) fs::remove_all(dir_);
  }

  // The text of a completion (retrying while no car is free yet).
  std::string complete(int seed) {
    const json body = {{"model", "stories260K"}, {"prompt", "Once upon a time"}, {"max_tokens", 48}, {"seed", seed}};
    testing::HttpResult r;
    eventually(
        [&] {
          r = testing::http_post(base_url_ + "/v1/completions", body.dump());
          return r.status != 503;
        },
        60000, 200);
    EXPECT_EQ(r.status, 200) << r.body;
    const json j = json::parse(r.body, nullptr, false);
    if (!j.is_object() || !j.contains("choices")) return "";
    return j["choices"][0].value("text", "");
  }

  std::vector<std::string> complete_all(int first_seed) {
    std::vector<std::string> texts(kRequests);
    std::vector<std::thread> threads;
    for (int i = 0; i < kRequests; ++i) {
      threads.emplace_back([&, i] { texts[static_cast<size_t>(i)] = complete(first_seed + i); });
    }
    for (auto& t : threads) t.join();
    return texts;
  }

  fs::path dir_;
  std::string model_, base_url_;
  std::vector<std::unique_ptr<transport::NatsServer>> servers_;
  std::optional<transport::Process> coordinator_;
  std::vector<transport::Process> agents_;
};

TEST_F(NatsCluster, ServesAcrossRoutesAndSurvivesTheLossOfTheCoordinatorsServer) {
  const std::vector<std::string> before = complete_all(500);
  for (const std::string& t : before) EXPECT_FALSE(t.empty());

  // The coordinator's server dies; the same requests come at once, while the
  // coordinator is still finding another server (publishes wait in libnats's
  // reconnect buffer meanwhile).
  servers_[0]->kill();
  const std::vector<std::string> after = complete_all(500);
  EXPECT_EQ(after, before);
  // The vehicles stay known and workable through the failover.
  const json st = json::parse(testing::http_get(base_url_ + "/v1/status").body, nullptr, false);
  EXPECT_EQ(st.value("/vehicles/online"_json_pointer, 0), 6) << st.dump();
  EXPECT_EQ(st.value("/jobs/failed"_json_pointer, -1), 0) << st.dump();
}

}  // namespace
}  // namespace idlefleet::nats_cluster_test
