// The owner's policy on the vehicle: absent until the coordinator sends one,
// read back exactly as written, and a damaged, foreign or oversized file is
// an error naming the file (the agent then refuses to start).
#include "agent/policy_file.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "core/protocol.h"

namespace idlefleet::agent::policy_file_test {
namespace {

namespace fs = std::filesystem;

class PolicyFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("idlefleet-policy-file-" + std::to_string(::getpid()));
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

TEST_F(PolicyFileTest, AbsentThenReadBackAsWritten) {
  const std::string path = policy_file_path((dir_ / "keys").string(), "car-01");
  EXPECT_EQ(fs::path(path).filename(), "car-01.policy.json");
  auto none = load_policy_file(path);
  ASSERT_TRUE(none) << none.error().to_string();
  EXPECT_FALSE(none->has_value());

  core::OwnerPolicy p;
  p.opted_in = true;
  p.soc_floor_pct = 61.5;
  p.allowed_windows = {{60, 600}};
  ASSERT_TRUE(save_policy_file(path, p));
  p.soc_floor_pct = 62.5;  // replaced whole
  ASSERT_TRUE(save_policy_file(path, p));
  EXPECT_FALSE(fs::exists(path + ".new"));
  auto back = load_policy_file(path);
  ASSERT_TRUE(back && back->has_value()) << (back ? "absent" : back.error().to_string());
  EXPECT_EQ(core::encode_policy(**back), core::encode_policy(p));
}

TEST_F(PolicyFileTest, GarbageIsAnErrorNamingTheFile) {
  fs::create_directories(dir_);
  const std::string path = (dir_ / "car-01.policy.json").string();
  for (const std::string& text : {std::string(""), std::string("not json"), std::string("[1]"),
                                  std::string(R"({"soc_floor_pct":140})"), std::string(R"({"opted_in":true,"x":1})"),
                                  std::string(core::kPolicyBytesMax + 1, ' ')}) {
    std::ofstream(path, std::ios::trunc) << text;
    auto r = load_policy_file(path);
    ASSERT_FALSE(r) << text.substr(0, 40);
    EXPECT_NE(r.error().message.find(path), std::string::npos) << r.error().message;
  }
  fs::remove(path);
  fs::create_directories(path);  // a directory where the file should be
  EXPECT_FALSE(load_policy_file(path));
}

}  // namespace
}  // namespace idlefleet::agent::policy_file_test
