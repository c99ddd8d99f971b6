// The Files and Batches store.
#include "store/file_store.h"

#include <gtest/gtest.h>
#include <sqlite3.h>

#include <filesystem>
#include <fstream>

namespace idlefleet::store::file_store_test {
namespace {

namespace fs = std::filesystem;

class FileStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("file_store_test_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path() const { return (dir_ / "files.sqlite3").string(); }
  fs::path dir_;
};

TEST_F(FileStoreTest, FilesRoundTrip) {
  auto s = FileStore::open(path());
  ASSERT_TRUE(s) << s.error().to_string();
  const std::string content("line 1\nline\0 2\n", 15);
  ASSERT_TRUE((*s)->put_file({"file-1", "batch", "in.jsonl", content.size(), 100, ""}, content));
  ASSERT_TRUE((*s)->put_file({"file-2", "batch_output", "out.jsonl", 0, 200, ""}, ""));
  EXPECT_FALSE((*s)->put_file({"file-1", "batch", "again", 1, 300, ""}, "x"));  // ids are unique
  EXPECT_FALSE((*s)->put_file({"file-3", "batch", "x", 5, 300, ""}, "x"));      // size must be the content's
  auto f = (*s)->get_file("file-1");
  ASSERT_TRUE(f && *f);
  EXPECT_EQ(**f, (StoredFile{"file-1", "batch", "in.jsonl", content.size(), 100, ""}));
  EXPECT_EQ(*(*s)->file_content("file-1"), std::optional<std::string>(content));
  EXPECT_EQ(*(*s)->file_content("file-2"), std::optional<std::string>(""));
  EXPECT_FALSE(*(*s)->get_file("nope"));
  ASSERT_TRUE((*s)->put_file({"file-k", "batch", "k.jsonl", 1, 150, "key_1"}, "k"));
  EXPECT_EQ((*(*s)->get_file("file-k"))->owner, "key_1");
  auto theirs = (*s)->list_files("key_1", "", 10);
  ASSERT_EQ(theirs->size(), 1u);  // each owner sees only its own
  EXPECT_EQ((*theirs)[0].id, "file-k");
  auto all = (*s)->list_files("", "", 10);
  ASSERT_TRUE(all);
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[0].id, "file-2");  // newest first
  EXPECT_EQ((*s)->list_files("", "batch", 10)->size(), 1u);
  EXPECT_TRUE(*(*s)->delete_file("file-1"));
  EXPECT_FALSE(*(*s)->delete_file("file-1"));
  EXPECT_FALSE(*(*s)->file_content("file-1"));
}

TEST_F(FileStoreTest, BatchesAndLinesSurviveReopening) {
  {
    auto s = FileStore::open(path());
    ASSERT_TRUE(s);
    std::vector<StoredBatchLine> lines = {{"batch_1", 1, "pending", "a", "", "{}", ""},
                                          {"batch_1", 2, "failed", "b", "", "", "{\"error\":1}\n"}};
    ASSERT_TRUE((*s)->put_batch({"batch_1", "in_progress", 10, "{\"id\":\"batch_1\"}", ""}, lines));
    ASSERT_TRUE((*s)->put_batch({"batch_2", "completed", 20, "{\"id\":\"batch_2\"}", ""}, {}));
    ASSERT_TRUE((*s)->put_batch({"batch_k", "completed", 30, "{}", "key_1"}, {}));
    // An update of one line and the batch.
    std::vector<StoredBatchLine> update = {{"batch_1", 1, "running", "a", "cmpl-1", "{}", ""}};
    ASSERT_TRUE((*s)->put_batch({"batch_1", "in_progress", 10, "{\"id\":\"batch_1\",\"v\":2}", ""}, update));
    // Refused: a line of another batch, an unknown state.
    std::vector<StoredBatchLine> bad = {{"batch_x", 1, "pending", "", "", "", ""}};
    EXPECT_FALSE((*s)->put_batch({"batch_1", "in_progress", 10, "{}", ""}, bad));
    bad = {{"batch_1", 1, "sleeping", "", "", "", ""}};
    EXPECT_FALSE((*s)->put_batch({"batch_1", "in_progress", 10, "{}", ""}, bad));
  }
  auto s = FileStore::open(path());
  ASSERT_TRUE(s);
  auto unfinished = (*s)->load_unfinished_batches();
  ASSERT_TRUE(unfinished);
  ASSERT_EQ(unfinished->size(), 1u);
  EXPECT_EQ((*unfinished)[0].object_json, "{\"id\":\"batch_1\",\"v\":2}");
  auto lines = (*s)->batch_lines("batch_1");
  ASSERT_TRUE(lines);
  ASSERT_EQ(lines->size(), 2u);
  EXPECT_EQ((*lines)[0].state, "running");
  EXPECT_EQ((*lines)[0].job_id, "cmpl-1");
  EXPECT_EQ((*lines)[1].result, "{\"error\":1}\n");
  auto listed = (*s)->list_batches("", 10, 0);
  ASSERT_EQ(listed->size(), 2u);
  EXPECT_EQ((*listed)[0].id, "batch_2");
  EXPECT_EQ((*s)->list_batches("", 10, 20)->size(), 1u);
  auto theirs = (*s)->list_batches("key_1", 10, 0);
  ASSERT_EQ(theirs->size(), 1u);
  EXPECT_EQ((*theirs)[0].id, "batch_k");
  EXPECT_EQ((*(*s)->get_batch("batch_k"))->owner, "key_1");
  EXPECT_TRUE((*(*s)->get_batch("batch_2")).has_value());
  EXPECT_FALSE((*(*s)->get_batch("batch_3")).has_value());
}

TEST_F(FileStoreTest, DamagedFilesAndRowsAreErrors) {
  {
    std::ofstream(path()) << "this is not a database, just text that is long enough to be read as a header......";
  }
  auto s = FileStore::open(path());
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code, ErrorCode::kCorrupt) << s.error().to_string();
  fs::remove(path());
  {
    auto ok = FileStore::open(path());
    ASSERT_TRUE(ok);
    ASSERT_TRUE((*ok)->put_batch({"batch_1", "in_progress", 1, "{}", ""},
                                 std::vector<StoredBatchLine>{{"batch_1", 1, "pending", "a", "", "{}", ""}}));
  }
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path().c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "UPDATE batch_lines SET state = 'zzz'; UPDATE files SET bytes = -1", nullptr, nullptr,
                         nullptr),
            SQLITE_OK);
  sqlite3_close(db);
  auto again = FileStore::open(path());
  ASSERT_TRUE(again);
  auto lines = (*again)->batch_lines("batch_1");
  ASSERT_FALSE(lines);
  EXPECT_EQ(lines.error().code, ErrorCode::kCorrupt);
  EXPECT_NE(lines.error().message.find("zzz"), std::string::npos);
}

}  // namespace
}  // namespace idlefleet::store::file_store_test
