// POST /v1/embeddings with real processes: nats-server, `idlefleet
// coordinator` and `idlefleet agent --vehicles 4`. The vectors are computed
// on the vehicles (one job per input) and must be exactly what `idlefleet
// embed` prints for the same model and text: the same floats, written the
// same way, and, as base64, the same bytes. Inputs the model cannot take,
// and requests of the wrong shape, are 400s naming the parameter. An
// embedding still unfinished when the coordinator restarts ends as failed
// in the store (its client is gone with the old process).
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <bit>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "store/job_store.h"
#include "support/http_client.h"
#include "support/process_util.h"
#include "transport/nats_server.h"
#include "transport/process.h"

namespace idlefleet::embeddings_test {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const fs::path kShared = fs::path(IDLEFLEET_SOURCE_DIR) / ".." / "shared" / "models";

using testing::eventually;
using testing::run_capture;
using testing::shell_quote;

// The text of each vector in `body`: what follows each "embedding":[ up to
// its ], in order. Compared as text, two vectors written by the same
// shortest-float formatting are equal exactly when their floats are.
std::vector<std::string> embedding_texts(const std::string& body) {
  std::vector<std::string> out;
  const std::string key = "\"embedding\":[";
  for (size_t at = body.find(key); at != std::string::npos; at = body.find(key, at)) {
    at += key.size();
    const size_t end = body.find(']', at);
    if (end == std::string::npos) break;
    out.push_back(body.substr(at, end - at));
  }
  return out;
}

std::vector<float> parse_floats(const std::string& text) {
  std::vector<float> out;
  const char* p = text.data();
  const char* end = text.data() + text.size();
  while (p < end) {
    float x = 0;
    auto r = std::from_chars(p, end, x);
    if (r.ec != std::errc()) return {};
    out.push_back(x);
    p = r.ptr;
    if (p < end && *p == ',') ++p;
  }
  return out;
}

std::vector<float> from_base64(const std::string& text) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  std::string bytes;
  uint32_t acc = 0;
  int bits = 0;
  for (char c : text) {
    if (c == '=') break;
    const int v = value(c);
    if (v < 0) return {};
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      bytes.push_back(static_cast<char>((acc >> bits) & 0xff));
    }
  }
  if (bytes.size() % 4 != 0) return {};
  std::vector<float> out(bytes.size() / 4);
  for (size_t i = 0; i < out.size(); ++i) {
    uint32_t u = 0;
    for (int b = 0; b < 4; ++b) u |= static_cast<uint32_t>(static_cast<unsigned char>(bytes[i * 4 + b])) << (8 * b);
    out[i] = std::bit_cast<float>(u);
  }
  return out;
}

class Embeddings : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(kShared / "stories260K.bin")) {
      if (std::getenv("CI") != nullptr) FAIL() << "../shared/models is missing in CI";
      GTEST_SKIP() << "*** ../shared/models/stories260K.bin is absent: the embeddings test needs a model ***";
    }
    dir_ = fs::path(::testing::TempDir()) / ("embeddings_" + std::to_string(::getpid()));
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
    start_coordinator();
  }

  void TearDown() override {
    if (agent_) agent_->stop();
    if (coordinator_) coordinator_->stop();
    if (nats_) nats_->stop();
    if (!HasFailure() && !dir_.empty()) fs::remove_all(dir_);
  }

  void start_coordinator() {
    transport::ProcessOptions co;
    co.program = IDLEFLEET_BINARY;
    co.args = {"coordinator", "--nats", nats_->url(), "--http-port", std::to_string(http_port_), "--data-dir",
               (dir_ / "data").string(), "--model", "stories260K=" + model_, "--lease-ms", "2000"};
    co.stdout_path = co.stderr_path = (dir_ / ("coordinator" + std::to_string(++coordinator_starts_) + ".log")).string();
    auto coordinator = transport::Process::spawn(co);
    ASSERT_TRUE(coordinator.has_value()) << coordinator.error().to_string();
    coordinator_ = std::make_unique<transport::Process>(std::move(*coordinator));
    ASSERT_TRUE(transport::wait_for_tcp("127.0.0.1", http_port_, 20000)) << log("coordinator1.log");
  }

  // Four simulated cars, at home in the evening on a compressed clock, and
  // waits until at least two can work.
  void start_agent() {
    transport::ProcessOptions a;
    a.program = IDLEFLEET_BINARY;
    a.args = {"agent", "--vehicles", "4", "--nats", nats_->url(), "--coordinator", base_url_, "--start", "20:00",
              "--cache-dir", (dir_ / "cache").string(), "--status-every", "1", "--target-soc", "50"};
    a.stdout_path = a.stderr_path = (dir_ / "agent.log").string();
    auto agent = transport::Process::spawn(a);
    ASSERT_TRUE(agent.has_value()) << agent.error().to_string();
    agent_ = std::make_unique<transport::Process>(std::move(*agent));
    ASSERT_TRUE(eventually([&] { return status().value("/vehicles/available"_json_pointer, 0) >= 2; }, 30000))
        << status().dump() << log("agent.log");
  }

  json status() {
    auto r = testing::http_get(base_url_ + "/v1/status");
    if (r.status != 200) return json::object();
    json j = json::parse(r.body, nullptr, false);
    return j.is_discarded() ? json::object() : j;
  }

  testing::HttpResult post(const json& body) {
    return testing::http_post(base_url_ + "/v1/embeddings", body.dump(), {"Content-Type: application/json"});
  }

  // `idlefleet embed`'s output for `text`.
  json local_embedding(const std::string& text) {
    const std::string out = run_capture(std::string(IDLEFLEET_BINARY) + " embed -t 1 -m " + shell_quote(model_) +
                                        " -p " + shell_quote(text) + " 2>/dev/null");
    json j = json::parse(out, nullptr, false);
    return j.is_discarded() ? json::object() : j;
  }
  std::string local_embedding_text(const std::string& text) {
    const std::string out = run_capture(std::string(IDLEFLEET_BINARY) + " embed -t 1 -m " + shell_quote(model_) +
                                        " -p " + shell_quote(text) + " 2>/dev/null");
    auto texts = embedding_texts(out);
    return texts.size() == 1 ? texts[0] : "(no embedding in: " + out + ")";
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
  int coordinator_starts_ = 0;
};

TEST_F(Embeddings, VehiclesComputeExactlyWhatTheLocalCommandPrints) {
  start_agent();
  const std::vector<std::string> texts = {"Once upon a time", "The little dog ran to the park.", "Lily and Ben"};
  auto r = post({{"model", "stories260K"}, {"input", texts}});
  ASSERT_EQ(r.status, 200) << r.body << log("coordinator1.log") << log("agent.log");
  const json j = json::parse(r.body);
  EXPECT_EQ(j["object"], "list");
  EXPECT_EQ(j["model"], "stories260K");
  ASSERT_EQ(j["data"].size(), texts.size());
  const std::vector<std::string> got = embedding_texts(r.body);
  ASSERT_EQ(got.size(), texts.size()) << r.body;
  int64_t tokens = 0;
  std::vector<std::vector<float>> expected;
  for (size_t i = 0; i < texts.size(); ++i) {
    EXPECT_EQ(j["data"][i]["object"], "embedding");
    EXPECT_EQ(j["data"][i]["index"], i);
    EXPECT_EQ(j["data"][i]["embedding"].size(), 64u);  // stories260K's width
    const std::string local = local_embedding_text(texts[i]);
    EXPECT_EQ(got[i], local) << "input " << i << " ('" << texts[i] << "')";
    expected.push_back(parse_floats(local));
    tokens += local_embedding(texts[i]).value("tokens", int64_t{0});
  }
  EXPECT_NE(got[0], got[1]);
  // One job per input, each done on a vehicle.
  EXPECT_EQ(status().value("/jobs/done"_json_pointer, 0), 3) << status().dump();
  EXPECT_GE(status().value("/vehicles/known"_json_pointer, 0), 4) << status().dump();
  EXPECT_EQ(j["usage"]["prompt_tokens"], tokens);
  EXPECT_EQ(j["usage"]["total_tokens"], tokens);

  // base64: the same floats, as little-endian bytes.
  r = post({{"model", "stories260K"}, {"input", texts}, {"encoding_format", "base64"}, {"dimensions", 64}});
  ASSERT_EQ(r.status, 200) << r.body;
  const json b = json::parse(r.body);
  ASSERT_EQ(b["data"].size(), texts.size());
  for (size_t i = 0; i < texts.size(); ++i) {
    ASSERT_TRUE(b["data"][i]["embedding"].is_string()) << r.body;
    const std::vector<float> decoded = from_base64(b["data"][i]["embedding"].get<std::string>());
    ASSERT_EQ(decoded.size(), expected[i].size()) << "input " << i;
    for (size_t k = 0; k < decoded.size(); ++k) {
      ASSERT_EQ(std::bit_cast<uint32_t>(decoded[k]), std::bit_cast<uint32_t>(expected[i][k])) << i << "," << k;
    }
  }

  // Token ids are taken as given: the reference ids of a prompt (BOS
  // included) give that prompt's vector.
  std::ifstream ref_file(kShared / "stories260K.expected.json");
  const json ref = json::parse(ref_file, nullptr, false);
  ASSERT_FALSE(ref.is_discarded());
  for (const json& c : ref["cases"]) {
    const std::string prompt = c["prompt"].get<std::string>();
    if (prompt.empty()) continue;  // an empty text is refused, as by OpenAI
    r = post({{"model", "stories260K"}, {"input", c["prompt_token_ids"]}});
    ASSERT_EQ(r.status, 200) << r.body;
    const auto ids_texts = embedding_texts(r.body);
    ASSERT_EQ(ids_texts.size(), 1u);
    EXPECT_EQ(ids_texts[0], local_embedding_text(prompt)) << prompt;
    EXPECT_EQ(json::parse(r.body)["usage"]["prompt_tokens"], c["prompt_token_ids"].size());
  }
  // ...also several inputs of ids at once, each its own.
  r = post({{"model", "stories260K"}, {"input", {{1, 403, 407, 261, 378}, {1, 2, 3}}}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(embedding_texts(r.body).size(), 2u);
}

TEST_F(Embeddings, BadRequestsAre400sNamingTheParameter) {
  // Refused before any vehicle is involved: no agent runs.
  struct Case {
    const char* what;
    json body;
    const char* param;
    const char* code;  // "" = null
  };
  std::string long_text;
  for (int i = 0; i < 600; ++i) long_text += "once upon a time ";
  const std::vector<Case> cases = {
      {"a text longer than the context", {{"model", "stories260K"}, {"input", long_text}}, "input",
       "context_length_exceeded"},
      {"one of several too long", {{"model", "stories260K"}, {"input", {"a cat", long_text}}}, "input",
       "context_length_exceeded"},
      {"ids longer than the context",
       {{"model", "stories260K"}, {"input", std::vector<int>(513, 5)}}, "input", "context_length_exceeded"},
      {"an empty array", {{"model", "stories260K"}, {"input", json::array()}}, "input", ""},
      {"an empty string", {{"model", "stories260K"}, {"input", ""}}, "input", ""},
      {"a number", {{"model", "stories260K"}, {"input", 42}}, "input", ""},
      {"mixed types", {{"model", "stories260K"}, {"input", {"a", 1}}}, "input", ""},
      {"an object", {{"model", "stories260K"}, {"input", {{"text", "a"}}}}, "input", ""},
      {"an id outside the vocabulary", {{"model", "stories260K"}, {"input", {1, 512}}}, "input", ""},
      {"too many inputs", {{"model", "stories260K"}, {"input", std::vector<std::string>(2049, "a")}}, "input", ""},
      {"dimensions that differ", {{"model", "stories260K"}, {"input", "a"}, {"dimensions", 32}}, "dimensions", ""},
      {"dimensions not a number", {{"model", "stories260K"}, {"input", "a"}, {"dimensions", "64"}}, "dimensions", ""},
      {"an unknown encoding", {{"model", "stories260K"}, {"input", "a"}, {"encoding_format", "int8"}},
       "encoding_format", ""},
      {"no model", {{"input", "a"}}, "model", ""},
  };
  for (const Case& c : cases) {
    auto r = post(c.body);
    EXPECT_EQ(r.status, 400) << c.what << ": " << r.body;
    const json j = json::parse(r.body, nullptr, false);
    ASSERT_FALSE(j.is_discarded()) << c.what << ": " << r.body;
    ASSERT_TRUE(j.contains("error")) << c.what << ": " << r.body;
    EXPECT_EQ(j["error"]["type"], "invalid_request_error") << c.what;
    EXPECT_EQ(j["error"]["param"], c.param) << c.what << ": " << r.body;
    if (*c.code != '\0') {
      EXPECT_EQ(j["error"]["code"], c.code) << c.what << ": " << r.body;
    }
  }
  // The message names the input that is too long.
  auto r = post({{"model", "stories260K"}, {"input", {"a cat", long_text}}});
  EXPECT_NE(r.body.find("input[1]"), std::string::npos) << r.body;
  r = post({{"model", "nope"}, {"input", "a"}});
  EXPECT_EQ(r.status, 404) << r.body;
  r = testing::http_get(base_url_ + "/v1/embeddings");
  EXPECT_EQ(r.status, 405) << r.body;
  // A good request, but no vehicle can work: 503 at once, as for completions.
  r = post({{"model", "stories260K"}, {"input", "a"}});
  EXPECT_EQ(r.status, 503) << r.body;
  EXPECT_NE(r.body.find("no_capacity"), std::string::npos) << r.body;
  EXPECT_NE(r.header("retry-after"), nullptr);
  EXPECT_EQ(status().value("/jobs/submitted"_json_pointer, -1), 0) << status().dump();
}

TEST_F(Embeddings, AnUnfinishedEmbeddingEndsAsFailedWhenTheCoordinatorRestarts) {
  // The vehicles' process dies without a word: the coordinator still counts
  // them as online (until their timeout), takes the request and assigns its
  // job to cars that will never answer. It stays unfinished, in the store too.
  start_agent();
  agent_->signal(SIGKILL);
  ASSERT_TRUE(agent_->wait(10000).has_value());
  std::thread client([&] { (void)post({{"model", "stories260K"}, {"input", "Once upon a time"}}); });
  const std::string db = (dir_ / "data" / "jobs.sqlite3").string();
  std::string id;
  ASSERT_TRUE(eventually(
      [&] {
        auto store = store::JobStore::open(db);
        if (!store) return false;
        auto unfinished = (*store)->load_unfinished();
        if (!unfinished) return false;
        for (const store::StoredJob& s : *unfinished) {
          if (s.kind == "embedding") id = s.id;
        }
        return !id.empty();
      },
      20000))
      << log("coordinator1.log");
  coordinator_->stop();
  client.join();
  start_coordinator();
  ASSERT_TRUE(eventually(
      [&] {
        auto store = store::JobStore::open(db);
        if (!store) return false;
        auto job = (*store)->get(id);
        return job && job->has_value() && (*job)->state == "failed";
      },
      20000))
      << log("coordinator2.log");
  auto store = store::JobStore::open(db);
  ASSERT_TRUE(store.has_value());
  auto job = (*store)->get(id);
  ASSERT_TRUE(job && job->has_value());
  EXPECT_EQ((*job)->kind, "embedding");
  EXPECT_NE((*job)->finish_reason.find("restarted"), std::string::npos) << (*job)->finish_reason;
  // The restarted coordinator serves embeddings as before.
  start_agent();
  auto r = post({{"model", "stories260K"}, {"input", "Once upon a time"}});
  ASSERT_EQ(r.status, 200) << r.body << log("coordinator2.log");
  EXPECT_EQ(embedding_texts(r.body).at(0), local_embedding_text("Once upon a time"));
}

}  // namespace
}  // namespace idlefleet::embeddings_test
