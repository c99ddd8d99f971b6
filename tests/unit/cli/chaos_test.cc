// `idlefleet chaos` (issue 8, deliverable 3): a small run on real processes
// (nats-server, the coordinator, three agent processes) with kills of both
// kinds and a nats-server restart must end with every job done once, every
// answer the single-vehicle one and the ledger verified; and the command
// refuses settings it cannot honour. The full run (500 jobs, 20 kills) is
// documented in docs/operations.md.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "support/process_util.h"
#include "support/sanitized.h"
#include "support/shared_model.h"

namespace idlefleet::chaos_test {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using testing::run_capture;
using testing::shell_quote;

class Chaos : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(::testing::TempDir()) / ("chaos_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    if (!HasFailure()) fs::remove_all(dir_);
  }
  std::string chaos(const std::string& args) {
    return run_capture(std::string(IDLEFLEET_BINARY) + " chaos --out " + shell_quote((dir_ / "out").string()) + " " +
                       args + " 2>&1; echo rc=$?");
  }
  fs::path dir_;
};

TEST_F(Chaos, JobsSurviveKillsOfAgentsAndTheCoordinatorAndANatsRestart) {
  IDLEFLEET_REQUIRE_SHARED_MODEL("the chaos run");
  ASSERT_TRUE(testing::convert_shared_model(dir_ / "stories260K.gguf"));
  // The sanitizer build is several times slower: fewer, shorter jobs.
  const std::string jobs = testing::kSanitized ? "30" : "80";
  const std::string tokens = testing::kSanitized ? "60" : "200";
  const std::string out = chaos("-m " + shell_quote((dir_ / "stories260K.gguf").string()) + " --jobs " + jobs +
                                " --interactive 10 --kills 6 --coordinator-kills 2 --nats-restarts 1 --batch-size 10 "
                                "--max-tokens " + tokens + " --window-s 20 --seed 7 --timeout-s 600");
  ASSERT_NE(out.find("rc=0"), std::string::npos) << out;
  std::ifstream in(dir_ / "out" / "chaos.json");
  std::stringstream ss;
  ss << in.rdbuf();
  const json r = json::parse(ss.str(), nullptr, false);
  ASSERT_TRUE(r.is_object()) << ss.str();
  EXPECT_TRUE(r.value("ok", false));
  EXPECT_EQ(r["kills"].value("agents", 0) + r["kills"].value("coordinator", 0), 6) << r.dump();
  EXPECT_EQ(r["kills"].value("coordinator", 0), 2) << r.dump();
  EXPECT_EQ(r.value("nats_restarts", 0), 1);
  const uint64_t n = std::stoull(jobs);
  EXPECT_GE(r.value("stored_jobs", 0ull), n - r.value("interrupted_streams", 0ull));
  EXPECT_LE(r.value("stored_jobs", 0ull), n);
  EXPECT_EQ(r.value("answered", 0ull) + r.value("interrupted_streams", 0ull), n);
  EXPECT_EQ(r.value("identical_to_single_vehicle", 0ull), r.value("answered", 0ull));
  EXPECT_NE(r.value("ledger_verify", std::string()).find("ledger ok"), std::string::npos) << r.dump();
}

TEST_F(Chaos, RefusesSettingsItCannotHonour) {
  std::string out = chaos("--jobs 10 --interactive 11");
  EXPECT_NE(out.find("rc=1"), std::string::npos) << out;
  EXPECT_NE(out.find("--interactive must not exceed --jobs"), std::string::npos) << out;
  out = chaos("--kills 2 --coordinator-kills 3");
  EXPECT_NE(out.find("rc=1"), std::string::npos) << out;
  EXPECT_NE(out.find("--coordinator-kills must not exceed --kills"), std::string::npos) << out;
  for (const char* bad : {"--jobs 0", "--jobs -5", "--jobs 99999999", "--agents 0", "--agents 17",
                          "--max-tokens 100000", "--window-s 1", "--kills x", "--vehicles-per-agent 33"}) {
    out = chaos(bad);
    EXPECT_NE(out.find("rc=2"), std::string::npos) << bad << ": " << out;
  }
  out = run_capture(std::string(IDLEFLEET_BINARY) + " chaos --jobs 5 2>&1; echo rc=$?");
  EXPECT_NE(out.find("rc=2"), std::string::npos) << "--out is required: " << out;
}

}  // namespace
}  // namespace idlefleet::chaos_test
