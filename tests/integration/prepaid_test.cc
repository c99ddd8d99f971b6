// Prepaid balances ([ledger] prepaid = true) against the live fleet:
// nats-server, `idlefleet coordinator` and one simulated car (`idlefleet
// agent`) as real processes, money moved with `idlefleet ledger deposit` and
// `idlefleet ledger credit-limit` while the coordinator runs, balances read
// from ledger.sqlite3.
//
// With prepaid on and a price per token: a key with no money gets 429
// insufficient_quota (no Retry-After) on completions, chat completions,
// embeddings and batch creation; after a deposit it is served; once its
// settlements have spent the deposit it is refused again; a credit limit lets
// it go below zero down to the limit; a batch already running finishes though
// it spends more than the client had, and the next batch is refused. Without
// keys the client is client:anonymous. With prepaid off nobody is refused.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>

#include <nlohmann/json.hpp>

#include "support/http_client.h"
#include "support/process_util.h"
#include "support/shared_model.h"
#include "store/ledger_store.h"
#include "transport/nats_server.h"
#include "transport/process.h"

namespace idlefleet::prepaid_test {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using testing::eventually;
using testing::run_capture;
using testing::shell_quote;


// One micro-unit per token, prompt or completion: a small completion
// (a 5-token prompt, 8 tokens out) costs at most 13 micros.
constexpr int64_t kRequestMicrosMax = 64;
const std::string kCompletion = R"({"model":"stories260K","prompt":"Once upon a time","max_tokens":8,"temperature":0})";
const std::string kChat =
    R"({"model":"stories260K","messages":[{"role":"user","content":"Once upon a time"}],"max_tokens":8,"temperature":0})";
const std::string kEmbedding = R"({"model":"stories260K","input":"Once upon a time"})";

std::string read_file(const fs::path& path) {
  std::ifstream in(path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct Key {
  std::string id;
  std::string secret;
};

// nats-server, a coordinator with `config` and one car, in `dir`.
class Fleet {
 public:
  ~Fleet() {
    if (agent_) agent_->stop();
    if (coordinator_) coordinator_->stop();
    if (nats_) nats_->stop();
  }

  // "" when the fleet runs, else why not.
  std::string start(const fs::path& dir, const std::string& model, const std::string& config) {
    dir_ = dir;
    transport::NatsServerOptions n;
    n.log_path = (dir_ / "nats.log").string();
    auto nats = transport::NatsServer::start(n);
    if (!nats) return nats.error().to_string();
    nats_ = std::move(*nats);
    auto port = transport::free_loopback_port();
    if (!port) return "no free port";
    base_url = "http://127.0.0.1:" + std::to_string(*port);
    std::ofstream(dir_ / "coordinator.toml") << "data_dir = \"" << (dir_ / "data").string() << "\"\n" << config;
    transport::ProcessOptions co;
    co.program = IDLEFLEET_BINARY;
    co.args = {"coordinator", "--config", (dir_ / "coordinator.toml").string(), "--nats", nats_->url(),
               "--http-port", std::to_string(*port), "--model", "stories260K=" + model};
    co.stdout_path = co.stderr_path = (dir_ / "coordinator.log").string();
    auto coordinator = transport::Process::spawn(co);
    if (!coordinator) return coordinator.error().to_string();
    coordinator_ = std::make_unique<transport::Process>(std::move(*coordinator));
    if (!transport::wait_for_tcp("127.0.0.1", *port, 20000)) return "the coordinator did not start\n" + log();
    transport::ProcessOptions a;
    a.program = IDLEFLEET_BINARY;
    a.args = {"agent", "--vehicles", "1", "--nats", nats_->url(), "--coordinator", base_url, "--start", "20:00",
              "--cache-dir", (dir_ / "cache").string(), "--target-soc", "50"};
    a.stdout_path = a.stderr_path = (dir_ / "agent.log").string();
    auto agent = transport::Process::spawn(a);
    if (!agent) return agent.error().to_string();
    agent_ = std::make_unique<transport::Process>(std::move(*agent));
    const bool ready = eventually(
        [&] {
          const json s = json::parse(testing::http_get(base_url + "/v1/status").body, nullptr, false);
          return !s.is_discarded() && s.value("/vehicles/available"_json_pointer, 0) >= 1;
        },
        30000);
    return ready ? "" : "the car did not become available\n" + log();
  }

  std::string log() const {
    const std::string s = read_file(dir_ / "coordinator.log");
    return s.size() > 4000 ? s.substr(s.size() - 4000) : s;
  }

  std::string data_dir() const { return (dir_ / "data").string(); }

  // `idlefleet <args> --data-dir <data>`: its output, stderr included.
  std::string cli(const std::string& args) const {
    return run_capture(std::string(IDLEFLEET_BINARY) + " " + args + " --data-dir " + shell_quote(data_dir()) +
                       " 2>&1");
  }

  Key create_key(const std::string& name) const {
    const std::string out = cli("admin keys create --name " + name);
    Key k;
    std::istringstream in(out);
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind("id: ", 0) == 0) k.id = line.substr(4);
      if (line.rfind("secret: ", 0) == 0) k.secret = line.substr(8);
    }
    return k;
  }

  // The account's balance in ledger.sqlite3, read as another process would.
  int64_t balance(const std::string& account) const {
    auto ledger = store::LedgerStore::open((dir_ / "data" / store::kLedgerFileName).string());
    if (!ledger) {
      ADD_FAILURE() << ledger.error().to_string();
      return 0;
    }
    auto b = (*ledger)->balance(account);
    if (!b) ADD_FAILURE() << b.error().to_string();
    return b ? *b : 0;
  }

  // Waits (20 s at most) until the job has its settlement.
  bool settled(const std::string& job_id) const {
    return eventually(
        [&] {
          auto ledger = store::LedgerStore::open((dir_ / "data" / store::kLedgerFileName).string());
          if (!ledger) return false;
          auto txs = (*ledger)->transactions_for_job(job_id);
          return txs && !txs->empty();
        },
        20000, 50);
  }

  std::string base_url;

 private:
  fs::path dir_;
  std::unique_ptr<transport::NatsServer> nats_;
  std::unique_ptr<transport::Process> coordinator_;
  std::unique_ptr<transport::Process> agent_;
};

std::vector<std::string> headers(const Key* k) {
  std::vector<std::string> h = {"Content-Type: application/json"};
  if (k != nullptr) h.push_back("Authorization: Bearer " + k->secret);
  return h;
}

// OpenAI's answer to a spent balance: 429, insufficient_quota twice, no Retry-After.
void expect_insufficient_quota(const testing::HttpResult& r, const std::string& what) {
  ASSERT_EQ(r.status, 429) << what << ": " << r.body << r.error;
  const json j = json::parse(r.body, nullptr, false);
  ASSERT_TRUE(!j.is_discarded() && j.contains("error")) << what << ": " << r.body;
  const json& e = j["error"];
  EXPECT_EQ(e.value("type", ""), "insufficient_quota") << what << ": " << r.body;
  EXPECT_EQ(e.value("code", ""), "insufficient_quota") << what << ": " << r.body;
  const std::string message = e.value("message", "");
  EXPECT_NE(message.find("spent"), std::string::npos) << what << ": " << message;
  EXPECT_NE(message.find("idlefleet ledger deposit"), std::string::npos) << what << ": " << message;
  EXPECT_EQ(r.header("retry-after"), nullptr) << what << ": waiting does not help";
}

// Base of the fixtures: the model, converted once per suite.
class PrepaidBase : public ::testing::Test {
 protected:
  static std::string setup(const std::string& name, const std::string& config) {
    dir_ = fs::path(::testing::TempDir()) / (name + "_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    const std::string model = (dir_ / "stories260K.gguf").string();
    if (!testing::convert_shared_model(model)) return "model conversion failed";
    fleet_ = new Fleet;
    return fleet_->start(dir_, model, config);
  }

  static void TearDownTestSuite() {
    delete fleet_;
    fleet_ = nullptr;
    if (!failed_ && !dir_.empty()) fs::remove_all(dir_);
    dir_.clear();
    setup_error_.clear();
    failed_ = false;
  }

  void SetUp() override {
    IDLEFLEET_REQUIRE_SHARED_MODEL("the prepaid test");
    ASSERT_TRUE(setup_error_.empty()) << setup_error_;
  }

  void TearDown() override {
    if (HasFailure()) failed_ = true;
  }

  static testing::HttpResult post(const std::string& path, const std::string& body, const Key* k) {
    return testing::http_post(fleet_->base_url + path, body, headers(k));
  }

  // POST /v1/files, as clients do (multipart/form-data).
  static testing::HttpResult upload(const std::string& content, const Key* k) {
    const std::string b = "----idlefleet-test-boundary";
    const std::string body = "--" + b + "\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--" + b +
                             "\r\nContent-Disposition: form-data; name=\"file\"; filename=\"input.jsonl\"\r\n"
                             "Content-Type: application/jsonl\r\n\r\n" +
                             content + "\r\n--" + b + "--\r\n";
    std::vector<std::string> h = {"Content-Type: multipart/form-data; boundary=" + b};
    if (k != nullptr) h.push_back("Authorization: Bearer " + k->secret);
    return testing::http_post(fleet_->base_url + "/v1/files", body, h);
  }

  // A batch of `lines` small completions: the response to its creation.
  static testing::HttpResult create_batch(int lines, const Key* k) {
    std::string input;
    for (int i = 0; i < lines; ++i) {
      input += json{{"custom_id", "c-" + std::to_string(i)}, {"method", "POST"}, {"url", "/v1/completions"},
                    {"body", json::parse(kCompletion)}}
                   .dump() +
               "\n";
    }
    auto f = upload(input, k);
    EXPECT_EQ(f.status, 200) << f.body;
    const std::string file_id = json::parse(f.body, nullptr, false).value("id", "");
    return post("/v1/batches",
                json{{"input_file_id", file_id}, {"endpoint", "/v1/completions"}, {"completion_window", "24h"}}.dump(),
                k);
  }

  static json wait_batch_final(const std::string& id, const Key* k) {
    json b;
    const bool done = eventually(
        [&] {
          auto r = testing::http_request("GET", fleet_->base_url + "/v1/batches/" + id, "", headers(k));
          b = json::parse(r.body, nullptr, false);
          const std::string s = b.is_discarded() ? "" : b.value("status", "");
          return s == "completed" || s == "cancelled" || s == "failed" || s == "expired";
        },
        60000, 50);
    EXPECT_TRUE(done) << b.dump() << fleet_->log();
    return b;
  }

  // Sends small completions, each after the previous one settled, until one
  // is refused (at most `max` sent): how many were served, and the account's
  // balance before the last one served.
  struct Spending {
    int served = 0;
    int64_t balance_before_last_served = 0;
  };
  static Spending spend_until_refused(const Key* k, const std::string& account, int max) {
    Spending s;
    for (int i = 0; i < max; ++i) {
      const int64_t before = fleet_->balance(account);
      auto r = post("/v1/completions", kCompletion, k);
      if (r.status == 429) {
        expect_insufficient_quota(r, "after " + std::to_string(s.served) + " served");
        return s;
      }
      EXPECT_EQ(r.status, 200) << r.body << fleet_->log();
      if (r.status != 200) return s;
      ++s.served;
      s.balance_before_last_served = before;
      const std::string job = json::parse(r.body).value("id", "");
      EXPECT_TRUE(fleet_->settled(job)) << job << " never settled\n" << fleet_->log();
    }
    ADD_FAILURE() << "never refused after " << max << " requests";
    return s;
  }

  static std::string account_of(const Key& k) { return "client:" + k.id; }

  static fs::path dir_;
  static Fleet* fleet_;
  static std::string setup_error_;
  static bool failed_;
};

fs::path PrepaidBase::dir_;
Fleet* PrepaidBase::fleet_ = nullptr;
std::string PrepaidBase::setup_error_;
bool PrepaidBase::failed_ = false;

const std::string kPrices = "[pricing]\nprompt_micros_per_mtok = 1000000\ncompletion_micros_per_mtok = 1000000\n";

// Keys required, prepaid on, one micro per token.
class Prepaid : public PrepaidBase {
 protected:
  static void SetUpTestSuite() {
    if (!testing::shared_model_present()) return;
    setup_error_ = setup("prepaid", "[auth]\nrequired = true\n" + kPrices + "[ledger]\nprepaid = true\n");
  }
};

TEST_F(Prepaid, AKeyWithoutMoneyIsRefusedOnEveryEndpointUntilItsDeposit) {
  const Key k = fleet_->create_key("broke");
  ASSERT_FALSE(k.secret.empty());
  // A key created while the coordinator runs is known within kKeysSyncMs.
  ASSERT_TRUE(eventually([&] { return testing::http_get(fleet_->base_url + "/v1/models", headers(&k)).status == 200; },
                         5000));
  expect_insufficient_quota(post("/v1/completions", kCompletion, &k), "completions");
  expect_insufficient_quota(post("/v1/chat/completions", kChat, &k), "chat completions");
  expect_insufficient_quota(post("/v1/embeddings", kEmbedding, &k), "embeddings");
  expect_insufficient_quota(create_batch(1, &k), "batch creation");
  // Refused before any work was queued: nothing settled, nothing charged.
  EXPECT_EQ(fleet_->balance(account_of(k)), 0);
  // Routes that cost nothing stay open.
  EXPECT_EQ(testing::http_get(fleet_->base_url + "/v1/models", headers(&k)).status, 200);

  const std::string out = fleet_->cli("ledger deposit --client " + k.id + " --amount 1");
  ASSERT_NE(fleet_->balance(account_of(k)), 0) << out;
  // The coordinator believes what it read for at most a second.
  testing::HttpResult r;
  ASSERT_TRUE(eventually([&] { return (r = post("/v1/completions", kCompletion, &k)).status == 200; }, 5000))
      << r.status << " " << r.body;
  EXPECT_EQ(post("/v1/chat/completions", kChat, &k).status, 200);
  EXPECT_EQ(post("/v1/embeddings", kEmbedding, &k).status, 200);
  auto b = create_batch(1, &k);
  ASSERT_EQ(b.status, 200) << b.body;
  EXPECT_EQ(wait_batch_final(json::parse(b.body).value("id", ""), &k).value("status", ""), "completed");
}

TEST_F(Prepaid, SettlementsThatSpendTheDepositBringTheRefusalBack) {
  const Key k = fleet_->create_key("small-deposit");
  ASSERT_FALSE(k.secret.empty());
  const std::string out = fleet_->cli("ledger deposit --client " + k.id + " --amount 0.00003");
  ASSERT_EQ(fleet_->balance(account_of(k)), 30) << out;
  ASSERT_TRUE(eventually([&] { return testing::http_get(fleet_->base_url + "/v1/models", headers(&k)).status == 200; },
                         5000));
  const Spending s = spend_until_refused(&k, account_of(k), 32);
  EXPECT_GE(s.served, 2) << "30 micros buy more than one small completion";
  EXPECT_GT(s.balance_before_last_served, 0) << "only a client with money left is served";
  const int64_t after = fleet_->balance(account_of(k));
  EXPECT_LE(after, 0);
  EXPECT_GT(after, -kRequestMicrosMax) << "the request that crosses zero completes; none after it";
  // Refused on every endpoint now, and a retry does not help.
  expect_insufficient_quota(post("/v1/chat/completions", kChat, &k), "chat completions, spent");
  expect_insufficient_quota(post("/v1/embeddings", kEmbedding, &k), "embeddings, spent");
  expect_insufficient_quota(post("/v1/completions", kCompletion, &k), "completions, spent, again");
  EXPECT_EQ(fleet_->balance(account_of(k)), after);
}

TEST_F(Prepaid, ACreditLimitLetsTheBalanceGoBelowZeroDownToTheLimit) {
  const Key k = fleet_->create_key("on-credit");
  ASSERT_FALSE(k.secret.empty());
  const std::string out = fleet_->cli("ledger credit-limit --client " + k.id + " --amount 0.00003");
  ASSERT_TRUE(eventually([&] { return testing::http_get(fleet_->base_url + "/v1/models", headers(&k)).status == 200; },
                         5000));
  const Spending s = spend_until_refused(&k, account_of(k), 32);
  EXPECT_GE(s.served, 2) << out;
  EXPECT_LT(s.balance_before_last_served, 0) << "a request was served while the balance was below zero";
  EXPECT_GT(s.balance_before_last_served, -30) << "never below the limit";
  const int64_t after = fleet_->balance(account_of(k));
  EXPECT_LE(after, -30);
  EXPECT_GT(after, -30 - kRequestMicrosMax);
}

TEST_F(Prepaid, ABatchRunningGoesOnPastZeroAndTheNextBatchIsRefused) {
  const Key k = fleet_->create_key("batcher");
  ASSERT_FALSE(k.secret.empty());
  const std::string out = fleet_->cli("ledger deposit --client " + k.id + " --amount 0.00001");
  ASSERT_EQ(fleet_->balance(account_of(k)), 10) << out;
  ASSERT_TRUE(eventually([&] { return testing::http_get(fleet_->base_url + "/v1/models", headers(&k)).status == 200; },
                         5000));
  // Six lines cost more than 10 micros; every one of them runs.
  auto r = create_batch(6, &k);
  ASSERT_EQ(r.status, 200) << r.body;
  const json b = wait_batch_final(json::parse(r.body).value("id", ""), &k);
  EXPECT_EQ(b.value("status", ""), "completed") << b.dump();
  EXPECT_EQ(b["request_counts"]["completed"], 6) << b.dump();
  ASSERT_TRUE(eventually([&] { return fleet_->balance(account_of(k)) < 0; }, 20000)) << fleet_->log();
  expect_insufficient_quota(create_batch(1, &k), "a new batch, spent");
}

TEST(PrepaidConfig, GarbageForLedgerPrepaidStopsTheCoordinator) {
  const fs::path dir = fs::path(::testing::TempDir()) / ("prepaid_config_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  for (const char* value : {"\"yes\"", "1", "[true]", "{}"}) {
    const fs::path config = dir / "bad.toml";
    std::ofstream(config) << "[ledger]\nprepaid = " << value << "\n";
    const std::string out = run_capture("timeout 20 " + std::string(IDLEFLEET_BINARY) + " coordinator --config " +
                                        shell_quote(config.string()) + " --http-port 0 2>&1; echo \"exit=$?\"");
    EXPECT_NE(out.find("ledger.prepaid"), std::string::npos) << value << ": " << out;
    EXPECT_EQ(out.find("exit=0"), std::string::npos) << value << ": " << out;
    EXPECT_EQ(out.find("exit=124"), std::string::npos) << value << ": it ran with a bad config";
  }
  fs::remove_all(dir);
}

// Without keys every client is client:anonymous; prices on completions only,
// so embeddings are free and never refused.
class PrepaidAnonymous : public PrepaidBase {
 protected:
  static void SetUpTestSuite() {
    if (!testing::shared_model_present()) return;
    setup_error_ = setup("prepaid_anonymous",
                         "[pricing]\ncompletion_micros_per_mtok = 1000000\n[ledger]\nprepaid = true\n");
  }
};

TEST_F(PrepaidAnonymous, TheAnonymousAccountPaysAndFreeWorkIsNeverRefused) {
  expect_insufficient_quota(post("/v1/completions", kCompletion, nullptr), "anonymous completions");
  expect_insufficient_quota(post("/v1/chat/completions", kChat, nullptr), "anonymous chat");
  EXPECT_EQ(post("/v1/embeddings", kEmbedding, nullptr).status, 200) << "embeddings cost nothing here";
  const std::string out = fleet_->cli("ledger deposit --client anonymous --amount 0.00001");
  ASSERT_EQ(fleet_->balance("client:anonymous"), 10) << out;
  testing::HttpResult r;
  ASSERT_TRUE(eventually([&] { return (r = post("/v1/completions", kCompletion, nullptr)).status == 200; }, 5000))
      << r.status << " " << r.body;
}

// Prepaid off (the default): a client with no money, going below zero, is
// served as before.
class PrepaidOff : public PrepaidBase {
 protected:
  static void SetUpTestSuite() {
    if (!testing::shared_model_present()) return;
    setup_error_ = setup("prepaid_off", "[auth]\nrequired = true\n" + kPrices);
  }
};

TEST_F(PrepaidOff, NobodyIsRefused) {
  const Key k = fleet_->create_key("no-money");
  ASSERT_FALSE(k.secret.empty());
  ASSERT_TRUE(eventually([&] { return testing::http_get(fleet_->base_url + "/v1/models", headers(&k)).status == 200; },
                         5000));
  for (int i = 0; i < 3; ++i) {
    auto r = post("/v1/completions", kCompletion, &k);
    ASSERT_EQ(r.status, 200) << r.body;
    ASSERT_TRUE(fleet_->settled(json::parse(r.body).value("id", ""))) << fleet_->log();
  }
  EXPECT_LT(fleet_->balance(account_of(k)), 0);
  EXPECT_EQ(post("/v1/chat/completions", kChat, &k).status, 200);
  EXPECT_EQ(post("/v1/embeddings", kEmbedding, &k).status, 200);
  auto b = create_batch(1, &k);
  EXPECT_EQ(b.status, 200) << b.body;
}

}  // namespace
}  // namespace idlefleet::prepaid_test
