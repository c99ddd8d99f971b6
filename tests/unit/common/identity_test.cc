// A vehicle's key file: made once with mode 0600, read back the same, and
// refused when others may read it or it is not a key.
#include "common/identity.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

namespace idlefleet::identity_test {
namespace {

namespace fs = std::filesystem;

class IdentityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("idlefleet-identity-" + std::to_string(::getpid()));
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

TEST_F(IdentityTest, MadeOnceWithMode0600AndReadBackTheSame) {
  const std::string path = (dir_ / "keys" / "car-01.key").string();
  auto made = load_or_create_key(path);
  ASSERT_TRUE(made) << made.error().to_string();
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_EQ(::stat((dir_ / "keys").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  auto again = load_or_create_key(path);
  ASSERT_TRUE(again) << again.error().to_string();
  EXPECT_EQ(again->public_key, made->public_key);
  EXPECT_EQ(again->secret_key, made->secret_key);
  EXPECT_FALSE(fs::exists(path + ".new"));
}

TEST_F(IdentityTest, AFileOthersMayReadOrThatIsNotAKeyIsRefused) {
  const std::string path = (dir_ / "car-02.key").string();
  ASSERT_TRUE(load_or_create_key(path));
  ASSERT_EQ(::chmod(path.c_str(), 0644), 0);
  auto open = load_or_create_key(path);
  ASSERT_FALSE(open);
  EXPECT_EQ(open.error().code, ErrorCode::kInvalidArgument);
  EXPECT_NE(open.error().message.find("chmod 600"), std::string::npos) << open.error().message;
  for (const std::string& junk : {std::string("hello\n"), std::string(128, 'z'), std::string(200, 'a'),
                                  std::string(64, 'a') + std::string(64, 'b')}) {
    fs::remove(path);
    { std::ofstream(path) << junk; }
    ASSERT_EQ(::chmod(path.c_str(), 0600), 0);
    auto r = load_or_create_key(path);
    ASSERT_FALSE(r) << junk;
    EXPECT_EQ(r.error().code, ErrorCode::kCorrupt) << junk;
  }
}

}  // namespace
}  // namespace idlefleet::identity_test
