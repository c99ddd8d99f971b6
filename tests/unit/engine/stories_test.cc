// Acceptance on a real trained model: converting ../shared/models'
// stories260K (llama2.c) to GGUF and generating greedily reproduces every
// reference case exactly (prompt ids, generated ids, text); the same through
// the `idlefleet` command, with an export and resume in between; penalties,
// logprobs and embeddings on the same model, across thread counts.
#include <gtest/gtest.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "engine/model.h"
#include "engine/model_tools.h"
#include "engine/session.h"
#include "engine/tokenizer.h"
#include "support/run_command.h"
#include "test_models.h"

namespace idlefleet::engine::stories_test {
namespace {

struct Case {
  std::string prompt, text;
  std::vector<int32_t> prompt_ids, generated_ids;
};

std::vector<Case> load_cases(const std::string& dir) {
  std::ifstream in(dir + "/stories260K.expected.json");
  const nlohmann::json j = nlohmann::json::parse(in);
  std::vector<Case> cases;
  for (const auto& c : j.at("cases")) {
    cases.push_back({c.at("prompt").get<std::string>(), c.at("text").get<std::string>(),
                     c.at("prompt_token_ids").get<std::vector<int32_t>>(),
                     c.at("generated_token_ids").get<std::vector<int32_t>>()});
  }
  return cases;
}

class Stories : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::shared_models_dir();
    REQUIRE_SHARED_MODELS(dir_);
    gguf_ = ::testing::TempDir() + "/stories260K.gguf";
    auto st = convert_llama2c(dir_ + "/stories260K.bin", dir_ + "/tok512.bin", gguf_);
    ASSERT_TRUE(st) << st.error().to_string();
    auto m = Model::load(gguf_);
    ASSERT_TRUE(m) << m.error().to_string();
    model_ = std::move(*m);
    cases_ = load_cases(dir_);
    ASSERT_EQ(cases_.size(), 3u);
  }

  // Greedy generation of up to `n` tokens with `threads` threads.
  std::vector<int32_t> generate(const std::vector<int32_t>& prompt, size_t n, int threads) {
    ThreadPool pool(threads);
    Context ctx(*model_, 0, &pool);
    Generator gen(*model_, ctx);
    EXPECT_TRUE(gen.start(prompt, SamplerParams{}, static_cast<int64_t>(n),
                          {model_->tokenizer().bos(), model_->tokenizer().eos()}));
    for (;;) {
      auto t = gen.next();
      EXPECT_TRUE(t);
      if (!t || *t < 0) break;
    }
    std::vector<int32_t> out = gen.state().produced_ids;
    // llama2.c stops at BOS without printing it.
    if (!out.empty() && out.back() == model_->tokenizer().bos()) out.pop_back();
    return out;
  }

  std::string dir_, gguf_;
  std::unique_ptr<Model> model_;
  std::vector<Case> cases_;
};

TEST_F(Stories, ReproducesEveryReferenceCaseExactly) {
  const Tokenizer& tok = model_->tokenizer();
  for (const Case& c : cases_) {
    EXPECT_EQ(tok.encode(c.prompt, true), c.prompt_ids) << "prompt '" << c.prompt << "'";
    const std::vector<int32_t> got = generate(c.prompt_ids, c.generated_ids.size(), 2);
    EXPECT_EQ(got, c.generated_ids) << "prompt '" << c.prompt << "'";
    Detokenizer detok(tok);
    std::string text;
    for (int32_t id : c.prompt_ids) text += detok.push(id);
    for (int32_t id : got) text += detok.push(id);
    text += detok.flush();
    EXPECT_EQ(text, c.text) << "prompt '" << c.prompt << "'";
  }
}

TEST_F(Stories, SameTokensForOneTwoAndFourThreads) {
  const Case& c = cases_[1];
  const auto one = generate(c.prompt_ids, c.generated_ids.size(), 1);
  EXPECT_EQ(generate(c.prompt_ids, c.generated_ids.size(), 2), one);
  EXPECT_EQ(generate(c.prompt_ids, c.generated_ids.size(), 4), one);
}

std::string run_command(const std::string& cmd, int* status) {
  std::string out;
  FILE* p = popen((cmd + " 2>/dev/null").c_str(), "r");
  if (p == nullptr) return out;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
  *status = pclose(p);
  return out;
}

TEST_F(Stories, CommandLineRunExportAndResumeGiveTheReferenceText) {
  const Case& c = cases_[1];
  const std::string bin = IDLEFLEET_BINARY;
  const std::string session = ::testing::TempDir() + "/stories.session.json";
  const size_t cut = 40;
  int status = -1;
  // Generate 40 tokens, export, then resume for the rest in another process
  // with another thread count: the text equals the uninterrupted reference.
  run_command(bin + " run -q -m " + gguf_ + " -p '" + c.prompt + "' -n " + std::to_string(cut) +
                  " -t 1 --export-session " + session,
              &status);
  ASSERT_EQ(status, 0);
  std::ifstream in(session);
  std::stringstream ss;
  ss << in.rdbuf();
  auto state = SessionState::from_json(ss.str());
  ASSERT_TRUE(state) << state.error().to_string();
  EXPECT_EQ(state->produced_ids.size(), cut);
  // Raise the budget in the exported file and resume.
  state->max_tokens = static_cast<int64_t>(c.generated_ids.size());
  {
    std::ofstream out(session);
    out << state->to_json();
  }
  const std::string resumed = run_command(bin + " run -q -m " + gguf_ + " -t 2 --resume " + session, &status);
  ASSERT_EQ(status, 0);
  EXPECT_EQ(resumed, c.text + "\n");
}

TEST_F(Stories, LogprobsAreTheSameForOneTwoAndFourThreads) {
  const Case& c = cases_[0];
  std::vector<std::vector<float>> first;
  for (int threads : {1, 2, 4}) {
    ThreadPool pool(threads);
    Context ctx(*model_, 0, &pool);
    Generator gen(*model_, ctx);
    ASSERT_TRUE(gen.enable_logprobs(kTopLogprobsMax));
    ASSERT_TRUE(gen.start(c.prompt_ids, SamplerParams{}, 30, {}));
    std::vector<std::vector<float>> rows;
    for (;;) {
      auto t = gen.next();
      ASSERT_TRUE(t);
      if (*t < 0) break;
      const TokenLogprobs* lp = gen.last_logprobs();
      ASSERT_NE(lp, nullptr);
      // Greedy without penalties takes the most likely token.
      ASSERT_EQ(lp->top.size(), static_cast<size_t>(kTopLogprobsMax));
      EXPECT_EQ(lp->chosen.id, lp->top[0].id);
      EXPECT_EQ(lp->chosen.logprob, lp->top[0].logprob);
      std::vector<float> row = {static_cast<float>(lp->chosen.id), lp->chosen.logprob};
      for (const TokenLogprob& x : lp->top) {
        row.push_back(static_cast<float>(x.id));
        row.push_back(x.logprob);
      }
      rows.push_back(std::move(row));
    }
    if (threads == 1) {
      first = rows;
    } else {
      EXPECT_EQ(rows, first) << threads << " threads";
    }
  }
}

TEST_F(Stories, CommandLinePenaltiesResumeAndEmbeddings) {
  const Case& c = cases_[2];
  const std::string bin = IDLEFLEET_BINARY;
  const std::string base = bin + " run -q -m " + gguf_;
  const std::string sampling = " --temp 0.8 --seed 11 --presence-penalty 0.7 --frequency-penalty 0.4";
  int status = -1;
  const std::string full = run_command(base + " -p '" + c.prompt + "' -n 60 -t 1" + sampling, &status);
  ASSERT_EQ(status, 0);
  const std::string plain = run_command(base + " -p '" + c.prompt + "' -n 60 -t 1 --temp 0.8 --seed 11", &status);
  ASSERT_EQ(status, 0);
  EXPECT_NE(full, plain) << "the penalties changed nothing";
  // Stop after 25 tokens, resume for 35 more with other threads: the same text.
  const std::string session = ::testing::TempDir() + "/stories.penalties.session.json";
  run_command(base + " -p '" + c.prompt + "' -n 25 -t 2 --export-session " + session + sampling, &status);
  ASSERT_EQ(status, 0);
  EXPECT_EQ(run_command(base + " -t 4 -n 35 --resume " + session, &status), full);
  EXPECT_EQ(status, 0);
  // Embeddings: the same bytes for 1, 2 and 4 threads.
  const std::string embed = bin + " embed -m " + gguf_ + " -p '" + c.prompt + "'";
  const std::string one = run_command(embed + " -t 1", &status);
  ASSERT_EQ(status, 0);
  const auto j = nlohmann::json::parse(one, nullptr, false);
  ASSERT_TRUE(j.is_object()) << one;
  EXPECT_EQ(j.at("embedding").size(), static_cast<size_t>(model_->config().dim));
  EXPECT_EQ(j.at("tokens").get<size_t>(), c.prompt_ids.size());
  EXPECT_EQ(run_command(embed + " -t 2", &status), one);
  EXPECT_EQ(run_command(embed + " -t 4", &status), one);
}

TEST_F(Stories, ResumeRefusesAnOversizedOrGarbageSessionFile) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::path(::testing::TempDir()) / ("resume_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const fs::path huge = dir / "huge.json", junk = dir / "junk.json";
  std::ofstream(huge) << "{";
  fs::resize_file(huge, kSessionJsonBytesMax + 1);  // sparse: nothing is written
  std::ofstream(junk) << R"({"prompt_ids":"not ids"})";
  for (const fs::path& file : {huge, junk}) {
    const idlefleet::testing::Ran r = idlefleet::testing::run_idlefleet("run -q -m " + gguf_ + " --resume " + file.string());
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_NE(r.output.find(file.string()), std::string::npos) << r.output;  // names the file
  }
  const idlefleet::testing::Ran r = idlefleet::testing::run_idlefleet("run -q -m " + gguf_ + " --resume " + huge.string());
  EXPECT_NE(r.output.find("more than " + std::to_string(kSessionJsonBytesMax) + " bytes"), std::string::npos)
      << r.output;
  fs::remove_all(dir);
}

TEST_F(Stories, CommandLineRejectsGarbageFlags) {
  const std::string bin = IDLEFLEET_BINARY;
  int status = 0;
  for (const char* flags : {"--temp -1", "--temp nan", "-n -5", "--threads 0", "--top-p 2", "--resume /nonexistent",
                            "-m /nonexistent.gguf", "--bogus"}) {
    run_command(bin + " run -q -m " + gguf_ + " " + flags, &status);
    EXPECT_NE(status, 0) << flags;
  }
}

}  // namespace
}  // namespace idlefleet::engine::stories_test
