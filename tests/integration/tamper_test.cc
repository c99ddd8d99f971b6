// Verification on a live fleet (issue 5, point 6 and acceptance D): four
// honest simulated vehicles and one whose agent runs with the test-only
// --test-tamper-outputs switch (it reports altered tokens and signs receipts
// for them, so only re-execution can catch it) serve interactive requests;
// then a second tamperer joins and a batch runs. Each tamperer is
// quarantined within 50 of its jobs, no honest vehicle is quarantined or
// loses standing, every batch output line equals a single-node run (the
// agreed output where the line was disputed), every interactive request the
// tamperer answered wrongly is refunded, and `idlefleet ledger verify` passes.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "core/ledger.h"
#include "engine/model.h"
#include "engine/session.h"
#include "engine/thread_pool.h"
#include "engine/tokenizer.h"
#include "store/ledger_store.h"
#include "support/http_client.h"
#include "support/process_util.h"
#include "support/shared_model.h"
#include "transport/nats_server.h"
#include "transport/process.h"

namespace idlefleet::tamper_test {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using testing::eventually;
using testing::run_capture;
using testing::shell_quote;

const char* const kPrompts[] = {"Once upon a time", "The little dog", "Lily and Ben", "One day, a bird",
                                "The sun was",      "Tom had a red ball", "In the park", "A cat"};

struct Request {
  std::string prompt;
  int max_tokens = 0;
  uint64_t seed = 0;
};

// What a single node produces with the same settings (temperature 0.8).
std::string local_text(const engine::Model& m, const Request& r) {
  engine::ThreadPool pool(1);
  engine::Context ctx(m, 0, &pool);
  engine::Generator gen(m, ctx);
  const engine::Tokenizer& tok = m.tokenizer();
  std::vector<int32_t> ids = tok.encode(r.prompt, tok.add_bos());
  engine::SamplerParams sp;
  sp.temperature = 0.8f;
  sp.seed = r.seed;
  engine::Detokenizer detok(tok);
  for (int32_t id : ids) (void)detok.push(id);
  EXPECT_TRUE(gen.start(ids, sp, r.max_tokens, {tok.eos(), tok.bos()}).has_value());
  std::string text;
  for (;;) {
    auto next = gen.next();
    if (!next || *next < 0) break;
    text += detok.push(*next);
  }
  return text + detok.flush();
}

json body_of(const Request& r) {
  return {{"model", "stories260K"}, {"prompt", r.prompt}, {"max_tokens", r.max_tokens}, {"temperature", 0.8},
          {"seed", r.seed}};
}

class Tamper : public ::testing::Test {
 protected:
  void SetUp() override {
    IDLEFLEET_REQUIRE_SHARED_MODEL("the tamper test");
    dir_ = fs::path(::testing::TempDir()) / ("tamper_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "data");
    model_ = (dir_ / "stories260K.gguf").string();
    ASSERT_TRUE(testing::convert_shared_model(model_));
    transport::NatsServerOptions n;
    n.log_path = (dir_ / "nats.log").string();
    auto nats = transport::NatsServer::start(n);
    ASSERT_TRUE(nats.has_value()) << nats.error().to_string();
    nats_ = std::move(*nats);
    auto port = transport::free_loopback_port();
    ASSERT_TRUE(port.has_value());
    http_port_ = *port;
    base_url_ = "http://127.0.0.1:" + std::to_string(http_port_);
    std::ofstream(dir_ / "coordinator.toml") << "data_dir = \"" << (dir_ / "data").string() << "\"\n"
                                             << "[pricing]\nprompt_micros_per_mtok = 1000000\n"
                                             << "completion_micros_per_mtok = 2000000\n"
                                             << "[verification]\nenabled = true\nseed = 7\n";
    transport::ProcessOptions co;
    co.program = IDLEFLEET_BINARY;
    co.args = {"coordinator", "--config", (dir_ / "coordinator.toml").string(), "--nats", nats_->url(),
               "--http-port", std::to_string(http_port_), "--model", "stories260K=" + model_, "--lease-ms", "5000"};
    co.stdout_path = co.stderr_path = (dir_ / "coordinator.log").string();
    auto coordinator = transport::Process::spawn(co);
    ASSERT_TRUE(coordinator.has_value()) << coordinator.error().to_string();
    coordinator_ = std::make_unique<transport::Process>(std::move(*coordinator));
    ASSERT_TRUE(transport::wait_for_tcp("127.0.0.1", http_port_, 20000)) << log("coordinator.log");
    honest_ = start_agent("honest", 4, false);
    ASSERT_TRUE(eventually([&] { return status().value("/vehicles/available"_json_pointer, 0) >= 4; }, 30000))
        << status().dump() << log("honest.log");
    // The tamperer joins last, with every vehicle idle: the first interactive
    // requests reach it too.
    cheat_ = start_agent("cheat", 1, true);
    ASSERT_TRUE(eventually([&] { return status().value("/vehicles/available"_json_pointer, 0) >= 5; }, 30000))
        << status().dump() << log("cheat.log");
  }

  void TearDown() override {
    if (rogue_) rogue_->stop();
    if (cheat_) cheat_->stop();
    if (honest_) honest_->stop();
    if (coordinator_) coordinator_->stop();
    if (nats_) nats_->stop();
    if (!HasFailure() && !dir_.empty()) fs::remove_all(dir_);
  }

  std::unique_ptr<transport::Process> start_agent(const std::string& prefix, int vehicles, bool tamper) {
    transport::ProcessOptions a;
    a.program = IDLEFLEET_BINARY;
    a.args = {"agent", "--vehicles", std::to_string(vehicles), "--id-prefix", prefix, "--nats", nats_->url(),
              "--coordinator", base_url_, "--start", "20:00", "--cache-dir", (dir_ / ("cache-" + prefix)).string(),
              "--status-every", "1", "--target-soc", "50",
              // Every car plugged in: a car not yet seen charging does not
              // serve on battery (core/agent_machine.h), and this test needs
              // all of them from the start.
              "--plug-in-probability", "1"};
    if (tamper) {
      a.args.push_back("--test-tamper-outputs");
      a.env_extra = {"IDLEFLEET_TESTING=1"};
    }
    a.stdout_path = a.stderr_path = (dir_ / (prefix + ".log")).string();
    auto agent = transport::Process::spawn(a);
    EXPECT_TRUE(agent.has_value()) << agent.error().to_string();
    return agent ? std::make_unique<transport::Process>(std::move(*agent)) : nullptr;
  }

  json status() { return get_json("/v1/status"); }
  json get_json(const std::string& path) {
    auto r = testing::http_get(base_url_ + path);
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

  std::string create_batch(const std::vector<Request>& lines) {
    std::string input;
    for (size_t i = 0; i < lines.size(); ++i) {
      input += json{{"custom_id", "req-" + std::to_string(i)}, {"method", "POST"}, {"url", "/v1/completions"},
                    {"body", body_of(lines[i])}}
                   .dump() +
               "\n";
    }
    const std::string b = "----idlefleet-test-boundary";
    const std::string body = "--" + b + "\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--" + b +
                             "\r\nContent-Disposition: form-data; name=\"file\"; filename=\"input.jsonl\"\r\n"
                             "Content-Type: application/jsonl\r\n\r\n" +
                             input + "\r\n--" + b + "--\r\n";
    auto f = testing::http_post(base_url_ + "/v1/files", body, {"Content-Type: multipart/form-data; boundary=" + b});
    EXPECT_EQ(f.status, 200) << f.body;
    auto r = testing::http_post(base_url_ + "/v1/batches",
                                json{{"input_file_id", json::parse(f.body).value("id", "")},
                                     {"endpoint", "/v1/completions"},
                                     {"completion_window", "24h"}}
                                    .dump(),
                                {"Content-Type: application/json"});
    EXPECT_EQ(r.status, 200) << r.body;
    return json::parse(r.body, nullptr, false).value("id", "");
  }

  fs::path dir_;
  std::string model_;
  std::unique_ptr<transport::NatsServer> nats_;
  std::unique_ptr<transport::Process> coordinator_, honest_, cheat_, rogue_;
  uint16_t http_port_ = 0;
  std::string base_url_;
};

TEST_F(Tamper, TheTamperingVehicleIsCaughtAndQuarantinedAndClientsGetTheAgreedOutputOrARefund) {
  // The switch that makes a vehicle lie is refused outside tests.
  const std::string refused = run_capture("env -u IDLEFLEET_TESTING " + std::string(IDLEFLEET_BINARY) +
                                          " agent --test-tamper-outputs --nats nats://127.0.0.1:1 2>&1; echo rc=$?");
  EXPECT_NE(refused.find("needs IDLEFLEET_TESTING=1"), std::string::npos) << refused;
  EXPECT_EQ(refused.find("rc=0"), std::string::npos) << refused;

  // Interactive requests first, eight at a time (more than the honest
  // vehicles), so that the tamperer serves some.
  std::vector<Request> interactive;
  for (int i = 0; i < 24; ++i) interactive.push_back({kPrompts[i % 8], 12 + (i % 3) * 4, 100u + i});
  struct Answer {
    std::string job_id, text;
  };
  std::vector<Answer> answers(interactive.size());
  std::vector<std::thread> clients;
  for (int t = 0; t < 8; ++t) {
    clients.emplace_back([&, t] {
      for (size_t i = t; i < interactive.size(); i += 8) {
        auto r = testing::http_post(base_url_ + "/v1/completions", body_of(interactive[i]).dump(),
                                    {"Content-Type: application/json"});
        const json j = json::parse(r.body, nullptr, false);
        EXPECT_EQ(r.status, 200) << r.body;
        if (r.status != 200 || j.is_discarded()) continue;
        answers[i] = {j.value("id", ""), j["choices"][0].value("text", "")};
      }
    });
  }
  for (auto& c : clients) c.join();
  // Every check of them has ended before a second tamperer joins: two that
  // alter outputs alike would agree with each other (see docs/architecture.md).
  ASSERT_TRUE(eventually(
      [&] {
        const json st = status();
        return st.value("/verification/quarantines"_json_pointer, 0) == 1 &&
               st.value("/verification/verifying"_json_pointer, -1) == 0;
      },
      60000))
      << status().dump();
  const int64_t disputed_interactive = status().value("/verification/disputed"_json_pointer, 0);

  // A second tamperer, new (so in good standing), joins for the batch: its
  // lines are disputed and must come out as the agreed output.
  rogue_ = start_agent("rogue", 1, true);
  ASSERT_TRUE(eventually([&] { return status().value("/vehicles/available"_json_pointer, 0) >= 5; }, 30000))
      << status().dump() << log("rogue.log");
  std::vector<Request> lines;
  for (int i = 0; i < 150; ++i) lines.push_back({kPrompts[i % 8], 8 + (i % 4) * 4, 5000u + i});
  const std::string batch = create_batch(lines);
  ASSERT_FALSE(batch.empty());
  json b;
  ASSERT_TRUE(eventually(
      [&] {
        b = get_json("/v1/batches/" + batch);
        return b.value("status", "") == "completed";
      },
      240000))
      << b.dump() << status().dump() << log("coordinator.log");
  // Every verification has ended (and its settlement is due).
  ASSERT_TRUE(eventually([&] { return status().value("/verification/verifying"_json_pointer, -1) == 0; }, 60000))
      << status().dump();
  const json st = status();
  EXPECT_GE(disputed_interactive, 2) << st.dump();
  EXPECT_GE(st.value("/verification/disputed"_json_pointer, 0), disputed_interactive + 2) << st.dump();
  EXPECT_EQ(st.value("/verification/quarantines"_json_pointer, 0), 2) << st.dump();

  // The tamperers are quarantined, each within 50 of its jobs; nobody else
  // is, and no honest vehicle lost standing.
  const json vehicles = get_json("/v1/vehicles");
  ASSERT_EQ(vehicles["data"].size(), 6u) << vehicles.dump();
  for (const json& v : vehicles["data"]) {
    const std::string id = v.value("id", "");
    const json& ver = v["verification"];
    ASSERT_TRUE(ver.is_object()) << v.dump();
    if (id == "cheat-01" || id == "rogue-01") {
      std::printf("tamperer %s: %d jobs, %d checks agreed, %d faulted, quarantined: %s\n",
                  id.c_str(), v.value("attempts_completed", 0) + v.value("attempts_lost", 0),
                  ver.value("checks_agreed", 0), ver.value("checks_faulted", 0),
                  ver.value("quarantine_reason", "").c_str());
      EXPECT_TRUE(ver.value("quarantined", false)) << v.dump();
      EXPECT_NE(ver.value("quarantine_reason", "").find("differed at token"), std::string::npos) << v.dump();
      EXPECT_LE(v.value("attempts_completed", 0) + v.value("attempts_lost", 0), 50) << v.dump();
      EXPECT_GE(ver.value("checks_faulted", 0), 2) << v.dump();
    } else {
      EXPECT_FALSE(ver.value("quarantined", true)) << v.dump();
      EXPECT_EQ(ver.value("checks_faulted", -1), 0) << v.dump();
      EXPECT_GE(ver.value("standing", 0), 500) << v.dump();
      EXPECT_GT(ver.value("checks_agreed", 0), 0) << v.dump();
    }
  }

  // Every batch line is the agreed output: that of a single node.
  auto model = engine::Model::load(model_);
  ASSERT_TRUE(model.has_value()) << model.error().to_string();
  auto out = testing::http_get(base_url_ + "/v1/files/" + b.value("output_file_id", "") + "/content");
  ASSERT_EQ(out.status, 200);
  std::istringstream in(out.body);
  size_t n = 0;
  for (std::string line; std::getline(in, line); ++n) {
    const json o = json::parse(line, nullptr, false);
    ASSERT_TRUE(o.is_object()) << line;
    const std::string cid = o.value("custom_id", "");
    const size_t i = std::stoul(cid.substr(4));
    ASSERT_LT(i, lines.size());
    EXPECT_EQ(o["response"]["body"]["choices"][0].value("text", ""), local_text(**model, lines[i])) << cid;
  }
  EXPECT_EQ(n, lines.size());

  // Stop the coordinator (pending settlements post at stop), then look at the money.
  coordinator_->stop();
  coordinator_.reset();
  auto ledger = store::LedgerStore::open((dir_ / "data" / store::kLedgerFileName).string());
  ASSERT_TRUE(ledger.has_value()) << ledger.error().to_string();
  size_t wrong = 0;
  for (size_t i = 0; i < interactive.size(); ++i) {
    ASSERT_FALSE(answers[i].job_id.empty()) << i;
    auto txs = (*ledger)->transactions_for_job(answers[i].job_id);
    ASSERT_TRUE(txs.has_value());
    bool refunded = false;
    for (const core::Transaction& tx : *txs) refunded = refunded || tx.kind == core::kTransactionRefund;
    if (answers[i].text != local_text(**model, interactive[i])) {
      // The tamperer answered: the check caught it, and the client got its money back.
      ++wrong;
      EXPECT_TRUE(refunded) << answers[i].job_id;
    } else {
      EXPECT_FALSE(refunded) << answers[i].job_id;
    }
  }
  std::printf("verification: %s; %zu of %zu interactive answers were the tamperer's, each refunded\n",
              st["verification"].dump().c_str(), wrong, interactive.size());
  EXPECT_GE(wrong, 1u) << "the tamperer served no interactive request: the refund path went untested";
  ledger->reset();
  const std::string verify = run_capture(std::string(IDLEFLEET_BINARY) + " ledger verify --data-dir " +
                                         shell_quote((dir_ / "data").string()) + " 2>&1; echo rc=$?");
  EXPECT_NE(verify.find("rc=0"), std::string::npos) << verify;
  EXPECT_NE(verify.find("finished jobs and"), std::string::npos) << verify;
}

}  // namespace
}  // namespace idlefleet::tamper_test
