// API keys against the live fleet: nats-server, `idlefleet coordinator` with
// [auth] required = true and a price per token, and one simulated car
// (`idlefleet agent`), as real processes. Keys are made and revoked with
// `idlefleet admin keys` while the coordinator runs.
//
// Each refusal gets its status and OpenAI's error object: no key (401, code
// null), a malformed header or an unknown key (401 invalid_api_key), a key
// revoked through the CLI (401 saying so, within a second), over requests or
// tokens per minute (429 rate_limit_exceeded with Retry-After), over the spend
// limit (429 insufficient_quota). Usage reaches keys.db. An Idempotency-Key
// replays the stored response without running a job, and the same key with
// another body gets 409.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "support/http_client.h"
#include "support/process_util.h"
#include "transport/nats_server.h"
#include "transport/process.h"

namespace idlefleet::api_keys_test {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using testing::eventually;
using testing::run_capture;
using testing::shell_quote;

const fs::path kShared = fs::path(IDLEFLEET_SOURCE_DIR) / ".." / "shared" / "models";

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

class ApiKeys : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!fs::exists(kShared / "stories260K.bin")) return;
    dir_ = fs::path(::testing::TempDir()) / ("api_keys_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    model_ = (dir_ / "stories260K.gguf").string();
    run_capture(std::string(IDLEFLEET_BINARY) + " model convert-llama2c " +
                shell_quote((kShared / "stories260K.bin").string()) + " --tokenizer " +
                shell_quote((kShared / "tok512.bin").string()) + " -o " + shell_quote(model_) + " 2>&1");
    if (!fs::exists(model_)) return setup_failed("model conversion failed");

    // Keys made before the coordinator starts.
    plain_ = create_key("--name plain");
    rpm_ = create_key("--name two-a-minute --rpm 2");
    tpm_ = create_key("--name fifty-tokens --tpm 50");
    spend_ = create_key("--name ten-micros --spend-limit 0.00001");
    if (plain_.secret.empty() || rpm_.secret.empty() || tpm_.secret.empty() || spend_.secret.empty()) {
      return setup_failed("admin keys create failed");
    }

    transport::NatsServerOptions n;
    n.log_path = (dir_ / "nats.log").string();
    auto nats = transport::NatsServer::start(n);
    if (!nats) return setup_failed(nats.error().to_string());
    nats_ = nats->release();

    auto port = transport::free_loopback_port();
    if (!port) return setup_failed("no free port");
    base_url_ = "http://127.0.0.1:" + std::to_string(*port);
    // One micro-unit per token, prompt or completion.
    std::ofstream(dir_ / "coordinator.toml") << "data_dir = \"" << (dir_ / "data").string() << "\"\n"
                                             << "[auth]\nrequired = true\n"
                                             << "[pricing]\nprompt_micros_per_mtok = 1000000\n"
                                             << "completion_micros_per_mtok = 1000000\n";
    transport::ProcessOptions co;
    co.program = IDLEFLEET_BINARY;
    co.args = {"coordinator", "--config", (dir_ / "coordinator.toml").string(), "--nats", nats_->url(),
               "--http-port", std::to_string(*port), "--model", "stories260K=" + model_};
    co.stdout_path = co.stderr_path = (dir_ / "coordinator.log").string();
    auto coordinator = transport::Process::spawn(co);
    if (!coordinator) return setup_failed(coordinator.error().to_string());
    coordinator_ = new transport::Process(std::move(*coordinator));
    if (!transport::wait_for_tcp("127.0.0.1", *port, 20000)) return setup_failed("the coordinator did not start");

    transport::ProcessOptions a;
    a.program = IDLEFLEET_BINARY;
    a.args = {"agent", "--vehicles", "1", "--nats", nats_->url(), "--coordinator", base_url_, "--start", "20:00",
              "--cache-dir", (dir_ / "cache").string(), "--target-soc", "50"};
    a.stdout_path = a.stderr_path = (dir_ / "agent.log").string();
    auto agent = transport::Process::spawn(a);
    if (!agent) return setup_failed(agent.error().to_string());
    agent_ = new transport::Process(std::move(*agent));
  }

  static void TearDownTestSuite() {
    if (agent_ != nullptr) agent_->stop();
    if (coordinator_ != nullptr) coordinator_->stop();
    if (nats_ != nullptr) nats_->stop();
    delete agent_;
    delete coordinator_;
    delete nats_;
    agent_ = nullptr;
    coordinator_ = nullptr;
    nats_ = nullptr;
    if (!failed_ && !dir_.empty()) fs::remove_all(dir_);
  }

  static void setup_failed(std::string why) { setup_error_ = std::move(why); }

  void SetUp() override {
    if (!fs::exists(kShared / "stories260K.bin")) {
      if (std::getenv("CI") != nullptr) FAIL() << "../shared/models is missing in CI";
      GTEST_SKIP() << "*** ../shared/models/stories260K.bin is absent: the API keys test needs a model ***";
    }
    ASSERT_TRUE(setup_error_.empty()) << setup_error_ << "\n" << log();
  }

  void TearDown() override {
    if (HasFailure()) failed_ = true;
  }

  static std::string admin(const std::string& args) {
    return run_capture(std::string(IDLEFLEET_BINARY) + " admin keys " + args + " --data-dir " +
                       shell_quote((dir_ / "data").string()) + " 2>/dev/null");
  }

  static Key create_key(const std::string& flags) {
    const std::string out = admin("create " + flags);
    Key k;
    std::istringstream in(out);
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind("id: ", 0) == 0) k.id = line.substr(4);
      if (line.rfind("secret: ", 0) == 0) k.secret = line.substr(8);
    }
    return k;
  }

  static json key_record(const std::string& id) {
    const json all = json::parse(admin("list --json"), nullptr, false);
    if (all.is_array()) {
      for (const json& k : all) {
        if (k.value("id", "") == id) return k;
      }
    }
    return json::object();
  }

  static std::string log() {
    const std::string s = read_file(dir_ / "coordinator.log");
    return s.size() > 4000 ? s.substr(s.size() - 4000) : s;
  }

  static std::vector<std::string> bearer(const Key& k, std::vector<std::string> more = {}) {
    more.push_back("Authorization: Bearer " + k.secret);
    more.push_back("Content-Type: application/json");
    return more;
  }

  static testing::HttpResult complete(const Key& k, const std::string& body, std::vector<std::string> more = {}) {
    return testing::http_post(base_url_ + "/v1/completions", body, bearer(k, std::move(more)));
  }

  static json status() {
    auto r = testing::http_get(base_url_ + "/v1/status");
    const json j = json::parse(r.body, nullptr, false);
    return j.is_discarded() ? json::object() : j;
  }

  // Waits until the car can take work, so that completions complete.
  static bool fleet_ready() {
    return eventually([] { return status().value("/vehicles/available"_json_pointer, 0) >= 1; }, 30000);
  }

  static fs::path dir_;
  static std::string model_;
  static transport::NatsServer* nats_;
  static transport::Process* coordinator_;
  static transport::Process* agent_;
  static std::string base_url_;
  static std::string setup_error_;
  static bool failed_;
  static Key plain_, rpm_, tpm_, spend_;
};

fs::path ApiKeys::dir_;
std::string ApiKeys::model_;
transport::NatsServer* ApiKeys::nats_ = nullptr;
transport::Process* ApiKeys::coordinator_ = nullptr;
transport::Process* ApiKeys::agent_ = nullptr;
std::string ApiKeys::base_url_;
std::string ApiKeys::setup_error_;
bool ApiKeys::failed_ = false;
Key ApiKeys::plain_, ApiKeys::rpm_, ApiKeys::tpm_, ApiKeys::spend_;

const std::string kSmall = R"({"model":"stories260K","prompt":"Once upon a time","max_tokens":8,"temperature":0})";

// The error object's fields, checked against what is expected ("" = null).
void expect_error(const testing::HttpResult& r, long status, const std::string& type, const std::string& code,
                  const std::string& what) {
  ASSERT_EQ(r.status, status) << what << ": " << r.body << r.error;
  const json j = json::parse(r.body, nullptr, false);
  ASSERT_TRUE(!j.is_discarded() && j.contains("error")) << what << ": " << r.body;
  const json& e = j["error"];
  for (const char* key : {"message", "type", "param", "code"}) EXPECT_TRUE(e.contains(key)) << what << ": " << key;
  EXPECT_FALSE(e.value("message", "").empty()) << what;
  EXPECT_EQ(e["type"], type) << what << ": " << e.dump();
  if (code.empty()) {
    EXPECT_TRUE(e["code"].is_null()) << what << ": " << e.dump();
  } else {
    EXPECT_EQ(e["code"], code) << what << ": " << e.dump();
  }
}

TEST_F(ApiKeys, RequestsWithoutAGoodKeyGet401) {
  const std::string url = base_url_ + "/v1/completions";
  const std::string json_type = "Content-Type: application/json";
  auto r = testing::http_post(url, kSmall, {json_type});
  expect_error(r, 401, "invalid_request_error", "", "no key");
  ASSERT_NE(r.header("www-authenticate"), nullptr);
  EXPECT_EQ(r.header("www-authenticate")->rfind("Bearer", 0), 0u);

  const std::string well_formed_unknown = "sk-idf-" + std::string(64, 'a');
  struct Case {
    std::string what, header;
  };
  for (const Case& c : std::vector<Case>{
           {"basic auth", "Authorization: Basic dXNlcjpwYXNz"},
           {"bearer without a key", "Authorization: Bearer"},
           {"bearer with a short key", "Authorization: Bearer sk-idf-1234"},
           {"another vendor's key", "Authorization: Bearer sk-proj-" + std::string(64, 'b')},
           {"upper-case hex", "Authorization: Bearer sk-idf-" + std::string(64, 'A')},
           {"unknown key", "Authorization: Bearer " + well_formed_unknown},
       }) {
    r = testing::http_post(url, kSmall, {json_type, c.header});
    expect_error(r, 401, "invalid_request_error", "invalid_api_key", c.what);
    // The secret a client sent is never echoed.
    EXPECT_EQ(r.body.find(well_formed_unknown.substr(7, 20)), std::string::npos) << c.what;
  }
  // The scheme is case-insensitive (RFC 7235).
  r = testing::http_get(base_url_ + "/v1/models", {"Authorization: bearer " + plain_.secret});
  EXPECT_EQ(r.status, 200) << r.body;

  // Model listing is client API too; the operator's and vehicles' routes are not.
  expect_error(testing::http_get(base_url_ + "/v1/models"), 401, "invalid_request_error", "", "models, no key");
  expect_error(testing::http_get(base_url_ + "/v1/models/stories260K"), 401, "invalid_request_error", "",
               "model card, no key");
  expect_error(testing::http_post(base_url_ + "/v1/chat/completions", "{}", {json_type}), 401,
               "invalid_request_error", "", "chat, no key");
  for (const char* open : {"/healthz", "/metrics", "/v1/status", "/v1/vehicles", "/v1/catalog"}) {
    EXPECT_EQ(testing::http_get(base_url_ + open).status, 200) << open;
  }
}

TEST_F(ApiKeys, AGoodKeyCompletesAndItsUsageReachesTheStore) {
  ASSERT_TRUE(fleet_ready()) << status().dump() << log();
  auto r = complete(plain_, kSmall);
  ASSERT_EQ(r.status, 200) << r.body << log();
  const json j = json::parse(r.body);
  const uint64_t prompt = j["usage"]["prompt_tokens"], completion = j["usage"]["completion_tokens"];
  EXPECT_GT(completion, 0u);
  ASSERT_TRUE(eventually([&] { return key_record(plain_.id).value("/usage/completion_tokens"_json_pointer, 0) > 0; },
                         5000))
      << key_record(plain_.id).dump();
  const json k = key_record(plain_.id);
  EXPECT_GE(k["usage"]["requests"].get<uint64_t>(), 1u);
  EXPECT_GE(k["usage"]["prompt_tokens"].get<uint64_t>(), prompt);
  EXPECT_GE(k["usage"]["completion_tokens"].get<uint64_t>(), completion);
  EXPECT_GE(k["usage"]["spend_micros"].get<uint64_t>(), prompt + completion);  // one micro-unit per token
  // list never shows a secret or its hash.
  const std::string listing = admin("list") + admin("list --json");
  EXPECT_EQ(listing.find(plain_.secret.substr(7, 16)), std::string::npos);
  EXPECT_EQ(listing.find("sha256"), std::string::npos);
}

TEST_F(ApiKeys, AKeyMadeAndRevokedWhileRunningTakesEffectWithinASecond) {
  const Key k = create_key("--name short-lived");
  ASSERT_FALSE(k.secret.empty());
  ASSERT_TRUE(eventually([&] { return testing::http_get(base_url_ + "/v1/models", bearer(k)).status == 200; }, 1500))
      << "a key made while the coordinator runs must work within a second";
  const std::string out = admin("revoke " + k.id);
  ASSERT_NE(out.find("revoked " + k.id), std::string::npos) << out;
  const int64_t revoked_at = testing::steady_now_ms();
  ASSERT_TRUE(eventually([&] { return testing::http_get(base_url_ + "/v1/models", bearer(k)).status == 401; }, 3000));
  EXPECT_LE(testing::steady_now_ms() - revoked_at, 1000) << "the revoke took more than a second";
  auto r = complete(k, kSmall);
  expect_error(r, 401, "invalid_request_error", "invalid_api_key", "revoked");
  EXPECT_NE(r.body.find("revoked"), std::string::npos) << r.body;
}

TEST_F(ApiKeys, OverTheRequestRateGets429WithRetryAfter) {
  ASSERT_TRUE(fleet_ready()) << status().dump() << log();
  ASSERT_EQ(complete(rpm_, kSmall).status, 200);
  ASSERT_EQ(complete(rpm_, kSmall).status, 200);
  auto r = complete(rpm_, kSmall);
  expect_error(r, 429, "requests", "rate_limit_exceeded", "third request in a minute");
  ASSERT_NE(r.header("retry-after"), nullptr) << r.body;
  const int retry = std::atoi(r.header("retry-after")->c_str());
  EXPECT_GE(retry, 1);
  EXPECT_LE(retry, 30);  // two a minute: one every 30 s
  // Another key is not affected.
  EXPECT_EQ(complete(plain_, kSmall).status, 200);
}

TEST_F(ApiKeys, OverTheTokenRateGets429WithRetryAfter) {
  ASSERT_TRUE(fleet_ready()) << status().dump() << log();
  std::string prompt;
  for (int i = 0; i < 20; ++i) prompt += "Once upon a time there was a cat. ";
  const std::string body = json{{"model", "stories260K"}, {"prompt", prompt}, {"max_tokens", 4}, {"temperature", 0}}.dump();
  auto r = complete(tpm_, body);
  ASSERT_EQ(r.status, 200) << r.body;  // longer than a minute's budget, but the bucket was full
  r = complete(tpm_, kSmall);
  expect_error(r, 429, "tokens", "rate_limit_exceeded", "tokens over the minute's budget");
  ASSERT_NE(r.header("retry-after"), nullptr) << r.body;
  EXPECT_GE(std::atoi(r.header("retry-after")->c_str()), 2);
}

TEST_F(ApiKeys, OverTheSpendLimitGets429InsufficientQuota) {
  ASSERT_TRUE(fleet_ready()) << status().dump() << log();
  // Ten micro-units at one per token: the first request crosses the limit.
  auto r = complete(spend_, R"({"model":"stories260K","prompt":"Once upon a time","max_tokens":20,"temperature":0})");
  ASSERT_EQ(r.status, 200) << r.body;
  r = complete(spend_, kSmall);
  expect_error(r, 429, "insufficient_quota", "insufficient_quota", "spend limit");
  EXPECT_EQ(r.header("retry-after"), nullptr) << "waiting does not help an exhausted quota";
}

TEST_F(ApiKeys, IdempotencyKeyReplaysTheStoredResponseAndRefusesAnotherBody) {
  ASSERT_TRUE(fleet_ready()) << status().dump() << log();
  const std::string body = R"({"model":"stories260K","prompt":"The little dog","max_tokens":12,"temperature":0.9})";
  // /v1/status is published every tick (50 ms): read the job count once it
  // shows the first request's job, and again a few ticks after the replay.
  auto submitted_now = [&] { return status().value("/jobs/submitted"_json_pointer, uint64_t{0}); };
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // the earlier tests' jobs reach the status
  const uint64_t before = submitted_now();
  auto first = complete(plain_, body, {"Idempotency-Key: order-42"});
  ASSERT_EQ(first.status, 200) << first.body << log();
  EXPECT_EQ(first.header("idempotent-replayed"), nullptr);
  ASSERT_TRUE(eventually([&] { return submitted_now() == before + 1; }, 5000)) << status().dump();
  const uint64_t submitted = before + 1;

  auto again = complete(plain_, body, {"Idempotency-Key: order-42"});
  ASSERT_EQ(again.status, 200) << again.body;
  EXPECT_EQ(again.body, first.body) << "the replay must be the stored response, id and text included";
  ASSERT_NE(again.header("idempotent-replayed"), nullptr);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // six status ticks
  EXPECT_EQ(submitted_now(), submitted) << "a replay ran a job";

  auto other = complete(plain_, kSmall, {"Idempotency-Key: order-42"});
  expect_error(other, 409, "invalid_request_error", "idempotency_key_conflict", "same key, another body");

  // Keys are per API key: another key's order-42 is a new request.
  const Key other_key = create_key("--name other-client");
  ASSERT_TRUE(eventually(
      [&] { return testing::http_get(base_url_ + "/v1/models", bearer(other_key)).status == 200; }, 3000));
  auto elsewhere = complete(other_key, body, {"Idempotency-Key: order-42"});
  EXPECT_EQ(elsewhere.status, 200) << elsewhere.body;
  EXPECT_EQ(elsewhere.header("idempotent-replayed"), nullptr);

  auto too_long = complete(plain_, body, {"Idempotency-Key: " + std::string(256, 'k')});
  expect_error(too_long, 400, "invalid_request_error", "", "a 256-byte Idempotency-Key");
}

// Files and batches belong to the key that made them: another key sees none
// of them (404, as for ids that never existed) and cannot cancel them.
TEST_F(ApiKeys, FilesAndBatchesAreTheirOwnersOnly) {
  const Key other = create_key("--name other");
  ASSERT_FALSE(other.secret.empty());
  // The coordinator reads new keys within a second.
  ASSERT_TRUE(eventually([&] { return testing::http_get(base_url_ + "/v1/files", bearer(other)).status == 200; }, 5000));
  const std::string b = "----owner-test";
  const std::string line =
      R"({"custom_id":"a","method":"POST","url":"/v1/completions","body":{"model":"stories260K","prompt":"x","max_tokens":4}})";
  const std::string body = "--" + b + "\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--" + b +
                           "\r\nContent-Disposition: form-data; name=\"file\"; filename=\"in.jsonl\"\r\n\r\n" + line +
                           "\n\r\n--" + b + "--\r\n";
  auto up = testing::http_post(base_url_ + "/v1/files", body,
                               {"Authorization: Bearer " + plain_.secret, "Content-Type: multipart/form-data; boundary=" + b});
  ASSERT_EQ(up.status, 200) << up.body;
  const std::string file_id = json::parse(up.body).value("id", "");
  // Without a key: 401, as for every client route.
  EXPECT_EQ(testing::http_get(base_url_ + "/v1/files/" + file_id).status, 401);
  // The owner reads it; the other key does not see it.
  EXPECT_EQ(testing::http_get(base_url_ + "/v1/files/" + file_id, bearer(plain_)).status, 200);
  EXPECT_EQ(testing::http_get(base_url_ + "/v1/files/" + file_id, bearer(other)).status, 404);
  EXPECT_EQ(testing::http_get(base_url_ + "/v1/files/" + file_id + "/content", bearer(other)).status, 404);
  EXPECT_EQ(json::parse(testing::http_get(base_url_ + "/v1/files", bearer(other)).body)["data"].size(), 0u);
  // Nor can it build a batch on it.
  const std::string create =
      json{{"input_file_id", file_id}, {"endpoint", "/v1/completions"}, {"completion_window", "24h"}}.dump();
  EXPECT_EQ(testing::http_post(base_url_ + "/v1/batches", create, bearer(other)).status, 404);
  auto made = testing::http_post(base_url_ + "/v1/batches", create, bearer(plain_));
  ASSERT_EQ(made.status, 200) << made.body;
  const std::string batch_id = json::parse(made.body).value("id", "");
  EXPECT_EQ(testing::http_get(base_url_ + "/v1/batches/" + batch_id, bearer(other)).status, 404);
  EXPECT_EQ(testing::http_post(base_url_ + "/v1/batches/" + batch_id + "/cancel", "", bearer(other)).status, 404);
  EXPECT_EQ(json::parse(testing::http_get(base_url_ + "/v1/batches", bearer(other)).body)["data"].size(), 0u);
  EXPECT_EQ(testing::http_get(base_url_ + "/v1/batches/" + batch_id, bearer(plain_)).status, 200);
  // The other key cannot delete it; the owner can.
  const std::string del = "DELETE /v1/files/" + file_id + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n";
  const uint16_t port = static_cast<uint16_t>(std::stoi(base_url_.substr(base_url_.rfind(':') + 1)));
  EXPECT_NE(testing::raw_exchange(port, del + "Authorization: Bearer " + other.secret + "\r\n\r\n").find(" 404 "),
            std::string::npos);
  EXPECT_NE(testing::raw_exchange(port, del + "Authorization: Bearer " + plain_.secret + "\r\n\r\n").find(" 200 "),
            std::string::npos);
}

TEST_F(ApiKeys, AKeyCallsOnlyItsScopesAndOtherCallsGet403) {
  const Key files_only = create_key("--name uploader --scopes files,batches");
  const Key models_only = create_key("--name lister --scopes models");
  ASSERT_FALSE(files_only.secret.empty());
  ASSERT_FALSE(models_only.secret.empty());
  EXPECT_EQ(key_record(files_only.id).value("scopes", ""), "files,batches");
  ASSERT_TRUE(
      eventually([&] { return testing::http_get(base_url_ + "/v1/models", bearer(models_only)).status == 200; }, 5000));
  expect_error(complete(models_only, kSmall), 403, "invalid_request_error", "insufficient_permissions", "completion");
  expect_error(testing::http_post(base_url_ + "/v1/embeddings", R"({"model":"stories260K","input":"x"})",
                                  bearer(models_only)),
               403, "invalid_request_error", "insufficient_permissions", "embeddings");
  expect_error(testing::http_get(base_url_ + "/v1/files", bearer(models_only)), 403, "invalid_request_error",
               "insufficient_permissions", "files");
  expect_error(testing::http_get(base_url_ + "/v1/models", bearer(files_only)), 403, "invalid_request_error",
               "insufficient_permissions", "models");
  // A batch needs its endpoint's scope too: files and batches alone may not
  // run completions.
  const std::string b = "----scope-test";
  const std::string line =
      R"({"custom_id":"a","method":"POST","url":"/v1/completions","body":{"model":"stories260K","prompt":"x","max_tokens":4}})";
  const std::string body = "--" + b + "\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--" + b +
                           "\r\nContent-Disposition: form-data; name=\"file\"; filename=\"in.jsonl\"\r\n\r\n" + line +
                           "\n\r\n--" + b + "--\r\n";
  auto up = testing::http_post(base_url_ + "/v1/files", body,
                               {"Authorization: Bearer " + files_only.secret,
                                "Content-Type: multipart/form-data; boundary=" + b});
  ASSERT_EQ(up.status, 200) << up.body;
  const std::string create = json{{"input_file_id", json::parse(up.body).value("id", "")},
                                  {"endpoint", "/v1/completions"},
                                  {"completion_window", "24h"}}
                                 .dump();
  expect_error(testing::http_post(base_url_ + "/v1/batches", create, bearer(files_only)), 403, "invalid_request_error",
               "insufficient_permissions", "batch of completions");
  // Bad scopes are a usage error of the command.
  EXPECT_NE(run_capture(std::string(IDLEFLEET_BINARY) + " admin keys create --data-dir " +
                        shell_quote((dir_ / "data").string()) + " --name x --scopes root 2>&1; echo rc=$?")
                .find("rc=2"),
            std::string::npos);
}

TEST_F(ApiKeys, ABatchsTokensCountAsItsKeysUsage) {
  const Key k = create_key("--name batcher");
  ASSERT_FALSE(k.secret.empty());
  ASSERT_TRUE(eventually([&] { return testing::http_get(base_url_ + "/v1/files", bearer(k)).status == 200; }, 5000));
  const std::string b = "----usage-test";
  std::string lines;
  for (int i = 0; i < 3; ++i) {
    lines += json{{"custom_id", "u" + std::to_string(i)},
                  {"method", "POST"},
                  {"url", "/v1/completions"},
                  {"body", {{"model", "stories260K"}, {"prompt", "Once"}, {"max_tokens", 6}, {"seed", i}}}}
                 .dump() +
             "\n";
  }
  const std::string body = "--" + b + "\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--" + b +
                           "\r\nContent-Disposition: form-data; name=\"file\"; filename=\"in.jsonl\"\r\n\r\n" + lines +
                           "\r\n--" + b + "--\r\n";
  auto up = testing::http_post(base_url_ + "/v1/files", body,
                               {"Authorization: Bearer " + k.secret, "Content-Type: multipart/form-data; boundary=" + b});
  ASSERT_EQ(up.status, 200) << up.body;
  const std::string create = json{{"input_file_id", json::parse(up.body).value("id", "")},
                                  {"endpoint", "/v1/completions"},
                                  {"completion_window", "24h"}}
                                 .dump();
  auto made = testing::http_post(base_url_ + "/v1/batches", create, bearer(k));
  ASSERT_EQ(made.status, 200) << made.body;
  const std::string id = json::parse(made.body).value("id", "");
  json batch;
  ASSERT_TRUE(eventually(
      [&] {
        batch = json::parse(testing::http_get(base_url_ + "/v1/batches/" + id, bearer(k)).body, nullptr, false);
        return batch.is_object() && batch.value("status", "") == "completed";
      },
      60000))
      << batch.dump();
  auto out = testing::http_get(base_url_ + "/v1/files/" + batch.value("output_file_id", "") + "/content", bearer(k));
  ASSERT_EQ(out.status, 200);
  uint64_t prompt = 0, completion = 0;
  std::istringstream in(out.body);
  for (std::string l; std::getline(in, l);) {
    const json usage = json::parse(l)["response"]["body"]["usage"];
    prompt += usage.value("prompt_tokens", 0u);
    completion += usage.value("completion_tokens", 0u);
  }
  ASSERT_GT(completion, 0u);
  // Usage reaches the store within the sync interval. The batch's create
  // counts as a request; its tokens and spend are its lines'.
  json usage;
  ASSERT_TRUE(eventually(
      [&] {
        usage = key_record(k.id)["usage"];
        return usage.value("completion_tokens", 0u) == completion;
      },
      5000))
      << usage.dump();
  EXPECT_EQ(usage.value("prompt_tokens", 0u), prompt);
  EXPECT_EQ(usage.value("spend_micros", 0u), prompt + completion);  // one micro-unit per token
}

}  // namespace
}  // namespace idlefleet::api_keys_test
