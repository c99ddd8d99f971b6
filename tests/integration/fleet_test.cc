// The live fleet with real processes: nats-server, `idlefleet coordinator`
// and `idlefleet agent --vehicles 8`. 64 concurrent streamed requests; during
// them the agent process is killed with SIGKILL and restarted, and two
// drivers come back to their cars. Every request must still complete, and
// every output must be byte-identical to `idlefleet run` with the same model,
// prompt, sampling settings and seed, and so must the logprobs of the three
// requests in four that ask for them (`idlefleet run --logprobs`), however
// many vehicles each one's tokens came from.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "core/protocol.h"
#include "support/http_client.h"
#include "support/process_util.h"
#include "support/sanitized.h"
#include "support/settlement_checks.h"
#include "transport/nats_client.h"
#include "transport/nats_server.h"
#include "transport/process.h"

namespace idlefleet::fleet_test {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const fs::path kShared = fs::path(IDLEFLEET_SOURCE_DIR) / ".." / "shared" / "models";

using testing::eventually;
using testing::run_capture;
using testing::shell_quote;

class Fleet : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(kShared / "stories260K.bin")) {
      if (std::getenv("CI") != nullptr) FAIL() << "../shared/models is missing in CI";
      GTEST_SKIP() << "*** ../shared/models/stories260K.bin is absent: the fleet test needs a model ***";
    }
    dir_ = fs::path(::testing::TempDir()) / ("fleet_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    model_ = (dir_ / "stories260K.gguf").string();
    const std::string convert = std::string(IDLEFLEET_BINARY) + " model convert-llama2c " +
                                shell_quote((kShared / "stories260K.bin").string()) + " --tokenizer " +
                                shell_quote((kShared / "tok512.bin").string()) + " -o " + shell_quote(model_) +
                                " 2>&1";
    run_capture(convert);
    ASSERT_TRUE(fs::exists(model_)) << convert;

    transport::NatsServerOptions n;
    n.log_path = (dir_ / "nats.log").string();
    auto nats = transport::NatsServer::start(n);
    ASSERT_TRUE(nats.has_value()) << nats.error().to_string();
    nats_ = std::move(*nats);

    auto port = transport::free_loopback_port();
    ASSERT_TRUE(port.has_value());
    http_port_ = *port;
    base_url_ = "http://127.0.0.1:" + std::to_string(http_port_);
    transport::ProcessOptions co;
    co.program = IDLEFLEET_BINARY;
    co.args = {"coordinator", "--nats", nats_->url(), "--http-port", std::to_string(http_port_), "--data-dir",
               (dir_ / "data").string(), "--model", "stories260K=" + model_, "--lease-ms", "2000"};
    co.stdout_path = co.stderr_path = (dir_ / "coordinator.log").string();
    auto coordinator = transport::Process::spawn(co);
    ASSERT_TRUE(coordinator.has_value()) << coordinator.error().to_string();
    coordinator_ = std::make_unique<transport::Process>(std::move(*coordinator));
    ASSERT_TRUE(transport::wait_for_tcp("127.0.0.1", http_port_, 20000)) << log("coordinator.log");
    start_agent();
  }

  void TearDown() override {
    if (agent_) agent_->stop();
    if (coordinator_) coordinator_->stop();
    if (nats_) nats_->stop();
    if (!HasFailure() && !dir_.empty()) fs::remove_all(dir_);
  }

  void start_agent() {
    transport::ProcessOptions a;
    a.program = IDLEFLEET_BINARY;
    // 20:00 on a compressed clock: cars are home and plugged in (a car not
    // yet seen charging does not serve on battery: core/agent_machine.h).
    a.args = {"agent", "--vehicles", "8", "--nats", nats_->url(), "--coordinator", base_url_, "--start", "20:00",
              "--cache-dir", (dir_ / "cache").string(), "--status-every", "1", "--target-soc", "50",
              "--plug-in-probability", "1",
              // Chunks of up to 100 ms (the most allowed): several tokens each
              // even in the sanitizer build on a loaded 2-core machine, where
              // eight vehicles share the cores and a token can take 20 ms.
              "--chunk-us", "100000"};
    a.stdout_path = a.stderr_path = (dir_ / ("agent" + std::to_string(++agent_starts_) + ".log")).string();
    auto agent = transport::Process::spawn(a);
    ASSERT_TRUE(agent.has_value()) << agent.error().to_string();
    agent_ = std::make_unique<transport::Process>(std::move(*agent));
  }

  json status() {
    auto r = testing::http_get(base_url_ + "/v1/status");
    if (r.status != 200) return json::object();
    json j = json::parse(r.body, nullptr, false);
    return j.is_discarded() ? json::object() : j;
  }

  std::string log(const std::string& name) {
    std::ifstream in(dir_ / name);
    std::ostringstream ss;
    ss << in.rdbuf();
    const std::string s = ss.str();
    return s.size() > 6000 ? s.substr(s.size() - 6000) : s;
  }

  fs::path dir_;
  std::string model_;
  std::unique_ptr<transport::NatsServer> nats_;
  std::unique_ptr<transport::Process> coordinator_, agent_;
  uint16_t http_port_ = 0;
  std::string base_url_;
  int agent_starts_ = 0;
};

struct Request {
  std::string prompt;
  uint64_t seed = 0;
  int max_tokens = 0;
  double temperature = 0.8;
  int logprobs = -1;  // alternatives per token; -1: no logprobs
};

struct Outcome {
  long status = 0;
  std::string id;  // the job's id (every event carries it)
  std::string text;
  std::string finish_reason;
  bool done_marker = false;
  std::string error;
  int64_t text_events = 0;        // events that carried text
  int64_t completion_tokens = 0;  // from the usage event
  // The logprobs of all events, concatenated (the legacy shape's arrays).
  json tokens = json::array(), token_logprobs = json::array(), top_logprobs = json::array(),
       text_offset = json::array();
};

TEST_F(Fleet, StreamsSurviveAKilledAgentAndReturningDriversWithIdenticalOutput) {
  // Eight vehicles online, and most of them able to work.
  ASSERT_TRUE(eventually([&] { return status().value("/vehicles/online"_json_pointer, 0) == 8; }, 30000))
      << status().dump() << log("agent1.log");
  ASSERT_TRUE(eventually([&] { return status().value("/vehicles/available"_json_pointer, 0) >= 6; }, 30000))
      << status().dump() << log("agent1.log");

  const char* prompts[] = {"Once upon a time", "The little dog", "Lily and Ben", "One day, a bird",
                           "The sun was", "Tom had a red ball", "In the park", "A big cat"};
  // The release build streams 64. Under the sanitizers every token (and the
  // single-node `idlefleet run` each output is compared with) is several
  // times slower, so it streams 24: still three for each of the eight cars,
  // so two drivers still return mid-stream and the agent is still killed with
  // at least three running, and every prompt, temperature and logprobs case
  // is still among them.
  const int n = testing::kSanitized ? 24 : 64;
  std::vector<Request> requests;
  for (int i = 0; i < n; ++i) {
    requests.push_back({prompts[i % 8], static_cast<uint64_t>(1000 + i), 300 + (i % 5) * 40, i % 4 == 0 ? 0.0 : 0.8,
                        i % 4 == 3 ? -1 : 2});
  }
  std::vector<Outcome> outcomes(requests.size());
  std::atomic<int> tokens_seen{0};
  std::vector<std::thread> clients;
  for (size_t i = 0; i < requests.size(); ++i) {
    clients.emplace_back([&, i] {
      const Request& q = requests[i];
      json body = {{"model", "stories260K"}, {"prompt", q.prompt},   {"max_tokens", q.max_tokens},
                   {"temperature", q.temperature}, {"seed", q.seed}, {"stream", true},
                   {"stream_options", {{"include_usage", true}}}};
      if (q.logprobs >= 0) body["logprobs"] = q.logprobs;
      testing::SseParser sse;
      Outcome& out = outcomes[i];
      auto r = testing::http_post_stream(
          base_url_ + "/v1/completions", body.dump(),
          [&](std::string_view piece) {
            sse.feed(piece);
            for (const std::string& e : sse.take_events()) {
              if (e == "[DONE]") {
                out.done_marker = true;
                continue;
              }
              const json j = json::parse(e, nullptr, false);
              if (j.is_discarded() || !j.contains("choices")) {
                out.error += e;
                continue;
              }
              if (out.id.empty() && j.contains("id") && j["id"].is_string()) out.id = j["id"].get<std::string>();
              if (j.contains("usage") && j["usage"].is_object()) {
                out.completion_tokens = j["usage"].value("completion_tokens", int64_t{0});
              }
              for (const auto& c : j["choices"]) {
                out.text += c.value("text", "");
                if (!c.value("text", "").empty()) out.text_events++;
                if (c.contains("logprobs") && c["logprobs"].is_object()) {
                  for (const json& t : c["logprobs"]["tokens"]) out.tokens.push_back(t);
                  for (const json& t : c["logprobs"]["token_logprobs"]) out.token_logprobs.push_back(t);
                  for (const json& t : c["logprobs"]["top_logprobs"]) out.top_logprobs.push_back(t);
                  for (const json& t : c["logprobs"]["text_offset"]) out.text_offset.push_back(t);
                }
                if (c.contains("finish_reason") && c["finish_reason"].is_string()) {
                  out.finish_reason = c["finish_reason"].get<std::string>();
                }
              }
              tokens_seen++;
            }
          },
          {"Content-Type: application/json"});
      out.status = r.status;
      if (!r.error.empty()) out.error += r.error;
    });
  }

  // A failed ASSERT below returns with the clients still streaming: join
  // them on the way out, so the failure is reported rather than std::terminate.
  struct JoinAll {
    std::vector<std::thread>& threads;
    ~JoinAll() {
      for (auto& t : threads) {
        if (t.joinable()) t.join();
      }
    }
  } join_all{clients};

  // Mid-stream: the drivers of two cars that are serving come back to them.
  ASSERT_TRUE(eventually([&] { return tokens_seen.load() > 100; }, 60000)) << status().dump();
  std::vector<std::string> serving;
  ASSERT_TRUE(eventually(
      [&] {
        serving.clear();
        auto r = testing::http_get(base_url_ + "/v1/vehicles");
        const json j = json::parse(r.body, nullptr, false);
        if (j.is_discarded() || !j.contains("data")) return false;
        for (const auto& v : j["data"]) {
          if (v.value("state", "") == "serving") serving.push_back(v.value("id", ""));
        }
        return serving.size() >= 2;
      },
      30000))
      << status().dump();
  auto control = transport::NatsClient::connect({.url = nats_->url(), .name = "fleet-test"});
  ASSERT_TRUE(control.has_value()) << control.error().to_string();
  for (size_t k = 0; k < 2; ++k) {
    ASSERT_TRUE((*control)->publish(core::sim_subject(serving[k]), R"({"action":"driver_returns"})").has_value());
  }
  ASSERT_TRUE((*control)->flush().has_value());
  ASSERT_TRUE(eventually([&] { return status().value("preemptions", 0) >= 2; }, 20000))
      << status().dump() << log("agent1.log");
  // ...and the agent process dies without a word, and comes back.
  ASSERT_TRUE(eventually([&] { return status().value("/jobs/running"_json_pointer, 0) >= 3; }, 30000))
      << status().dump();
  agent_->signal(SIGKILL);
  ASSERT_TRUE(agent_->wait(10000).has_value());
  start_agent();

  for (auto& t : clients) t.join();
  const json final_status = status();

  // Every request completed...
  for (size_t i = 0; i < requests.size(); ++i) {
    const Outcome& o = outcomes[i];
    ASSERT_EQ(o.status, 200) << "request " << i << ": " << o.error << "\n" << log("coordinator.log");
    ASSERT_TRUE(o.done_marker) << "request " << i << " ended without [DONE]: " << o.error;
    ASSERT_TRUE(o.finish_reason == "stop" || o.finish_reason == "length") << "request " << i << ": " << o.finish_reason;
  }
  // ...the agents sent tokens in chunks (--chunk-us), not one message each...
  int64_t events = 0, tokens = 0;
  for (const Outcome& o : outcomes) {
    events += o.text_events;
    tokens += o.completion_tokens;
  }
  EXPECT_LT(events * 2, tokens) << events << " text events for " << tokens << " tokens";
  // ...work really moved between vehicles...
  EXPECT_GE(final_status.value("preemptions", 0), 2) << final_status.dump();
  EXPECT_GE(final_status.value("attempts_lost", 0), 1) << final_status.dump();
  // ...and each output is exactly the local run's.
  for (size_t i = 0; i < requests.size(); ++i) {
    const Request& q = requests[i];
    char temp[32];
    std::snprintf(temp, sizeof temp, "%g", q.temperature);
    const fs::path err = dir_ / ("run" + std::to_string(i) + ".stderr");
    const std::string expected =
        run_capture(std::string(IDLEFLEET_BINARY) + " run -q --no-echo -t 1 -m " + shell_quote(model_) + " -p " +
                    shell_quote(q.prompt) + " -n " + std::to_string(q.max_tokens) + " --temp " + temp + " --seed " +
                    std::to_string(q.seed) + (q.logprobs >= 0 ? " --logprobs " + std::to_string(q.logprobs) : "") +
                    " 2>" + shell_quote(err.string()));
    const Outcome& o = outcomes[i];
    EXPECT_EQ(o.text + "\n", expected) << "request " << i << " (prompt '" << q.prompt << "', seed " << q.seed << ")";
    if (q.logprobs < 0) {
      EXPECT_TRUE(o.tokens.empty()) << "request " << i;
      continue;
    }
    // The local run's line per token (it also lists the end-of-sequence
    // token, which has no text and no entry in the API).
    std::vector<json> local;
    std::ifstream in(err);
    for (std::string line; std::getline(in, line);) {
      if (!line.empty() && line[0] == '{') local.push_back(json::parse(line));
    }
    const size_t n = o.tokens.size();
    ASSERT_EQ(o.token_logprobs.size(), n) << "request " << i;
    ASSERT_EQ(o.top_logprobs.size(), n) << "request " << i;
    ASSERT_EQ(o.text_offset.size(), n) << "request " << i;
    ASSERT_TRUE(local.size() == n || (local.size() == n + 1 && local.back()["token"] == ""))
        << "request " << i << ": " << n << " tokens with logprobs, " << local.size() << " in the local run";
    std::string joined;
    for (size_t k = 0; k < n; ++k) {
      EXPECT_EQ(o.text_offset[k].get<uint64_t>(), joined.size()) << "request " << i << " token " << k;
      joined += o.tokens[k].get<std::string>();
      EXPECT_EQ(o.tokens[k], local[k]["token"]) << "request " << i << " token " << k;
      EXPECT_EQ(o.token_logprobs[k].get<double>(), local[k]["logprob"].get<double>())
          << "request " << i << " token " << k;
      json alternatives = json::object();
      for (const json& alt : local[k]["top_logprobs"]) {
        if (!alternatives.contains(alt["token"].get<std::string>())) alternatives[alt["token"].get<std::string>()] = alt["logprob"];
      }
      EXPECT_EQ(o.top_logprobs[k], alternatives) << "request " << i << " token " << k;
    }
    EXPECT_EQ(joined, o.text) << "request " << i;
  }
  std::fprintf(stderr, "fleet: %s\n", final_status.dump().c_str());

  // The money (issue [money], acceptance A): each job settles once, from the
  // signed receipts of the attempts that produced it, and the books balance.
  // The coordinator stops first, so that every settlement is written.
  coordinator_->stop();
  std::vector<std::string> jobs;
  for (const Outcome& o : outcomes) jobs.push_back(o.id);
  const testing::SettlementSummary money = testing::expect_settled_once(dir_ / "data", jobs);
  EXPECT_GE(money.jobs_with_several_receipts, 2u) << "no job was signed for by more than one vehicle";
  EXPECT_GE(money.owners_paid.size(), 4u);
}

}  // namespace
}  // namespace idlefleet::fleet_test
