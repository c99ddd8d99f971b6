// OpenAI's logprobs through the live fleet: nats-server, `idlefleet
// coordinator` and `idlefleet agent --vehicles 2`. A chat with logprobs and
// top_logprobs 3, whole and streamed, and a legacy completion with logprobs 2,
// must return one entry per generated token whose texts concatenate to the
// response's text and whose values are exactly those of `idlefleet run
// --logprobs` with the same model, prompt, sampling and seed. (Logprobs
// through preemptions and a killed agent: fleet_test.cc.)
#include <gtest/gtest.h>
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

namespace idlefleet::logprobs_test {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const fs::path kShared = fs::path(IDLEFLEET_SOURCE_DIR) / ".." / "shared" / "models";

using testing::eventually;
using testing::run_capture;
using testing::shell_quote;

// What `idlefleet run --logprobs` printed: the text and a line per token.
struct LocalRun {
  std::string text;
  std::vector<json> tokens;  // {"id", "token", "logprob", "top_logprobs": [{"id", "token", "logprob"}]}
};

class Logprobs : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(kShared / "stories260K.bin")) {
      if (std::getenv("CI") != nullptr) FAIL() << "../shared/models is missing in CI";
      GTEST_SKIP() << "*** ../shared/models/stories260K.bin is absent: the logprobs test needs a model ***";
    }
    dir_ = fs::path(::testing::TempDir()) / ("logprobs_" + std::to_string(::getpid()));
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
    a.args = {"agent", "--vehicles", "2", "--nats", nats_->url(), "--coordinator", base_url_, "--start", "20:00",
              "--cache-dir", (dir_ / "cache").string(), "--target-soc", "50"};
    a.stdout_path = a.stderr_path = (dir_ / "agent.log").string();
    auto agent = transport::Process::spawn(a);
    ASSERT_TRUE(agent.has_value()) << agent.error().to_string();
    agent_ = std::make_unique<transport::Process>(std::move(*agent));
    ASSERT_TRUE(eventually(
        [&] {
          auto r = testing::http_get(base_url_ + "/v1/status");
          const json j = json::parse(r.body, nullptr, false);
          return !j.is_discarded() && j.value("/vehicles/available"_json_pointer, 0) >= 1;
        },
        30000))
        << log("agent.log");
  }

  void TearDown() override {
    if (agent_) agent_->stop();
    if (coordinator_) coordinator_->stop();
    if (nats_) nats_->stop();
    if (!HasFailure() && !dir_.empty()) fs::remove_all(dir_);
  }

  std::string log(const std::string& name) {
    std::ifstream in(dir_ / name);
    std::ostringstream ss;
    ss << in.rdbuf();
    const std::string s = ss.str();
    return s.size() > 6000 ? s.substr(s.size() - 6000) : s;
  }

  LocalRun local(const std::string& prompt, int max_tokens, double temperature, uint64_t seed, int top) {
    const fs::path err = dir_ / "run.stderr";
    char temp[32];
    std::snprintf(temp, sizeof temp, "%g", temperature);
    LocalRun out;
    out.text = run_capture(std::string(IDLEFLEET_BINARY) + " run -q --no-echo -t 1 -m " + shell_quote(model_) +
                           " -p " + shell_quote(prompt) + " -n " + std::to_string(max_tokens) + " --temp " + temp +
                           " --seed " + std::to_string(seed) + " --logprobs " + std::to_string(top) + " 2>" +
                           shell_quote(err.string()));
    if (!out.text.empty() && out.text.back() == '\n') out.text.pop_back();
    std::ifstream in(err);
    for (std::string line; std::getline(in, line);) {
      if (line.empty() || line[0] != '{') continue;  // the speed line
      out.tokens.push_back(json::parse(line));
    }
    return out;
  }

  fs::path dir_;
  std::string model_;
  std::unique_ptr<transport::NatsServer> nats_;
  std::unique_ptr<transport::Process> coordinator_, agent_;
  std::string base_url_;
};

// The API's entries against the local run's: the same tokens, the same
// values to the bit (both print the float the engine computed the same way),
// and the same alternatives. The local run also lists the end-of-sequence
// token, which has no text and no entry in the API.
void expect_same_logprobs(const json& content, const LocalRun& local, int top) {
  ASSERT_GE(local.tokens.size(), content.size());
  ASSERT_LE(local.tokens.size(), content.size() + 1);
  if (local.tokens.size() > content.size()) {
    EXPECT_EQ(local.tokens.back()["token"], "");
  }
  for (size_t i = 0; i < content.size(); ++i) {
    const json& got = content[i];
    const json& want = local.tokens[i];
    EXPECT_EQ(got["token"], want["token"]) << i;
    EXPECT_EQ(got["logprob"].get<double>(), want["logprob"].get<double>()) << i;
    const std::string token = got["token"].get<std::string>();
    std::vector<int> bytes(token.begin(), token.end());
    for (int& b : bytes) b &= 0xff;
    EXPECT_EQ(got["bytes"], json(bytes)) << i;
    ASSERT_EQ(got["top_logprobs"].size(), static_cast<size_t>(top)) << i;
    ASSERT_EQ(want["top_logprobs"].size(), static_cast<size_t>(top)) << i;
    for (int k = 0; k < top; ++k) {
      EXPECT_EQ(got["top_logprobs"][k]["token"], want["top_logprobs"][k]["token"]) << i << "." << k;
      EXPECT_EQ(got["top_logprobs"][k]["logprob"].get<double>(), want["top_logprobs"][k]["logprob"].get<double>())
          << i << "." << k;
    }
  }
}

std::string joined_tokens(const json& content) {
  std::string text;
  for (const json& t : content) text += t["token"].get<std::string>();
  return text;
}

TEST_F(Logprobs, AChatReturnsTheEnginesLogprobsForEveryToken) {
  const std::string prompt = "Once upon a time";
  const LocalRun want = local(prompt, 80, 0.8, 7, 3);
  ASSERT_FALSE(want.tokens.empty());
  const json body = {{"model", "stories260K"},
                     {"messages", json::array({{{"role", "user"}, {"content", prompt}}})},
                     {"max_tokens", 80},
                     {"temperature", 0.8},
                     {"seed", 7},
                     {"logprobs", true},
                     {"top_logprobs", 3}};

  auto r = testing::http_post(base_url_ + "/v1/chat/completions", body.dump(), {"Content-Type: application/json"});
  ASSERT_EQ(r.status, 200) << r.body << log("coordinator.log");
  const json j = json::parse(r.body);
  const json& choice = j["choices"][0];
  const std::string text = choice["message"]["content"].get<std::string>();
  EXPECT_EQ(text, want.text);
  ASSERT_TRUE(choice["logprobs"].is_object()) << r.body;
  EXPECT_TRUE(choice["logprobs"]["refusal"].is_null());
  const json& content = choice["logprobs"]["content"];
  EXPECT_GE(content.size(), 20u) << r.body;
  EXPECT_EQ(joined_tokens(content), text);
  expect_same_logprobs(content, want, 3);

  // Streamed: each chunk carries its tokens' entries; together, the same.
  json streamed = json::array();
  std::string streamed_text;
  testing::SseParser sse;
  json stream_body = body;
  stream_body["stream"] = true;
  auto s = testing::http_post_stream(
      base_url_ + "/v1/chat/completions", stream_body.dump(),
      [&](std::string_view piece) {
        sse.feed(piece);
        for (const std::string& e : sse.take_events()) {
          if (e == "[DONE]") continue;
          const json c = json::parse(e, nullptr, false);
          ASSERT_FALSE(c.is_discarded()) << e;
          for (const json& ch : c["choices"]) {
            const std::string delta = ch["delta"].value("content", "");
            streamed_text += delta;
            if (ch["logprobs"].is_null()) {
              EXPECT_TRUE(delta.empty()) << e;
              continue;
            }
            const json& part = ch["logprobs"]["content"];
            EXPECT_EQ(joined_tokens(part), delta) << e;
            for (const json& t : part) streamed.push_back(t);
          }
        }
      },
      {"Content-Type: application/json"});
  ASSERT_EQ(s.status, 200) << s.error;
  EXPECT_EQ(streamed_text, text);
  EXPECT_EQ(streamed, content);
}

TEST_F(Logprobs, AStopStringEndsTheLogprobsWithTheText) {
  const std::string prompt = "Lily and Ben";
  const LocalRun full = local(prompt, 80, 0.8, 11, 1);
  ASSERT_GT(full.text.size(), 40u);
  const std::string stop = full.text.substr(30, 4);
  const std::string text = full.text.substr(0, full.text.find(stop));
  const json body = {{"model", "stories260K"},
                     {"messages", json::array({{{"role", "user"}, {"content", prompt}}})},
                     {"max_tokens", 80},
                     {"temperature", 0.8},
                     {"seed", 11},
                     {"stop", stop},
                     {"logprobs", true},
                     {"top_logprobs", 1}};
  auto r = testing::http_post(base_url_ + "/v1/chat/completions", body.dump(), {"Content-Type: application/json"});
  ASSERT_EQ(r.status, 200) << r.body << log("coordinator.log");
  const json j = json::parse(r.body);
  EXPECT_EQ(j["choices"][0]["message"]["content"], text);
  // The tokens whose text starts before the stop string, and no others: the
  // last may run into it.
  const json& content = j["choices"][0]["logprobs"]["content"];
  ASSERT_FALSE(content.empty());
  const std::string joined = joined_tokens(content);
  EXPECT_EQ(joined.substr(0, text.size()), text);
  EXPECT_LT(joined.size() - content.back()["token"].get<std::string>().size(), text.size());
  for (size_t i = 0; i < content.size(); ++i) {
    EXPECT_EQ(content[i]["logprob"].get<double>(), full.tokens[i]["logprob"].get<double>()) << i;
  }
}

TEST_F(Logprobs, ACompletionReturnsTheLegacyShape) {
  const std::string prompt = "The little dog";
  const LocalRun want = local(prompt, 60, 0.0, 3, 2);
  const json body = {{"model", "stories260K"}, {"prompt", prompt}, {"max_tokens", 60},
                     {"temperature", 0.0},    {"seed", 3},        {"logprobs", 2}};
  auto r = testing::http_post(base_url_ + "/v1/completions", body.dump(), {"Content-Type: application/json"});
  ASSERT_EQ(r.status, 200) << r.body << log("coordinator.log");
  const json j = json::parse(r.body);
  const json& choice = j["choices"][0];
  const std::string text = choice["text"].get<std::string>();
  EXPECT_EQ(text, want.text);
  const json& lp = choice["logprobs"];
  ASSERT_TRUE(lp.is_object()) << r.body;
  const size_t n = lp["tokens"].size();
  EXPECT_GE(n, 20u) << r.body;
  ASSERT_EQ(lp["token_logprobs"].size(), n);
  ASSERT_EQ(lp["top_logprobs"].size(), n);
  ASSERT_EQ(lp["text_offset"].size(), n);
  ASSERT_GE(want.tokens.size(), n);
  ASSERT_LE(want.tokens.size(), n + 1);
  std::string joined;
  for (size_t i = 0; i < n; ++i) {
    EXPECT_EQ(lp["text_offset"][i].get<uint64_t>(), joined.size()) << i;
    joined += lp["tokens"][i].get<std::string>();
    EXPECT_EQ(lp["tokens"][i], want.tokens[i]["token"]) << i;
    EXPECT_EQ(lp["token_logprobs"][i].get<double>(), want.tokens[i]["logprob"].get<double>()) << i;
    // Greedy: the token chosen is the likeliest.
    EXPECT_EQ(want.tokens[i]["top_logprobs"][0]["id"], want.tokens[i]["id"]) << i;
    for (const json& alt : want.tokens[i]["top_logprobs"]) {
      const std::string token = alt["token"].get<std::string>();
      ASSERT_TRUE(lp["top_logprobs"][i].contains(token)) << i << " " << token;
    }
    EXPECT_EQ(lp["top_logprobs"][i][lp["tokens"][i].get<std::string>()].get<double>(),
              lp["token_logprobs"][i].get<double>())
        << i;
  }
  EXPECT_EQ(joined, text);
}

// `ignore_eos` (the vLLM extension the simulator's live check uses): the
// end of the story does not end the generation, which runs to max_tokens;
// up to that end the text is the same.
TEST_F(Logprobs, IgnoreEosRunsPastTheEndOfTheStoryToMaxTokens) {
  auto ask = [&](bool ignore_eos) {
    const json body = {{"model", "stories260K"}, {"prompt", "The little dog"}, {"max_tokens", 400},
                       {"temperature", 0.0},     {"seed", 3},                  {"ignore_eos", ignore_eos}};
    auto r = testing::http_post(base_url_ + "/v1/completions", body.dump(), {"Content-Type: application/json"});
    EXPECT_EQ(r.status, 200) << r.body << log("coordinator.log");
    return json::parse(r.body, nullptr, false);
  };
  const json ends = ask(false);
  const json runs_on = ask(true);
  ASSERT_TRUE(ends.is_object() && runs_on.is_object());
  EXPECT_EQ(ends["choices"][0]["finish_reason"], "stop");
  EXPECT_LT(ends["usage"]["completion_tokens"].get<int>(), 400);
  EXPECT_EQ(runs_on["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(runs_on["usage"]["completion_tokens"].get<int>(), 400);
  const std::string story = ends["choices"][0]["text"].get<std::string>();
  EXPECT_EQ(runs_on["choices"][0]["text"].get<std::string>().substr(0, story.size()), story);
  EXPECT_GT(runs_on["choices"][0]["text"].get<std::string>().size(), story.size());
}

}  // namespace
}  // namespace idlefleet::logprobs_test
