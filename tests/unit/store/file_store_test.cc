// The Files and Batches store: files, batches and their lines round trip and
// survive reopening, bounds are checked, and damaged rows are reported; run
// against both implementations (SQLite, and PostgreSQL on a private server:
// tests/support/postgres_server.h). Then what is particular to each.
#include "store/file_store.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "store/pg_file_store.h"
#include "support/postgres_server.h"

namespace idlefleet::store::file_store_test {
namespace {

namespace fs = std::filesystem;

using testing::Backend;
using namespace std::string_literals;

class FileStoreFixture : public testing::StoreFixture {
 protected:
  void start(Backend backend) { StoreFixture::start(backend, "files.sqlite3"); }
  std::unique_ptr<FileStore> open_ok() {
    auto s = FileStore::open(location());
    EXPECT_TRUE(s) << s.error().to_string();
    return s ? std::move(*s) : nullptr;
  }
};

// What is particular to the SQLite store.
class FileStoreTest : public FileStoreFixture {
 protected:
  void SetUp() override { start(Backend::kSqlite); }
};

// What is particular to the PostgreSQL store.
class PgFileStoreTest : public FileStoreFixture {
 protected:
  void SetUp() override { start(Backend::kPostgres); }
};

// The contract: the same tests against both.
class FileStoreContract : public FileStoreFixture, public ::testing::WithParamInterface<Backend> {
 protected:
  void SetUp() override { start(GetParam()); }
};

TEST_P(FileStoreContract, FilesRoundTrip) {
  auto s = open_ok();
  ASSERT_TRUE(s);
  const std::string content("line 1\nline\0 2\n", 15);
  ASSERT_TRUE(s->put_file({"file-1", "batch", "in.jsonl", content.size(), 100, ""}, content));
  ASSERT_TRUE(s->put_file({"file-2", "batch_output", "out.jsonl", 0, 200, ""}, ""));
  auto again = s->put_file({"file-1", "batch", "again", 1, 300, ""}, "x");  // ids are unique
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, ErrorCode::kAlreadyExists) << again.error().to_string();
  auto wrong_size = s->put_file({"file-3", "batch", "x", 5, 300, ""}, "x");  // size must be the content's
  ASSERT_FALSE(wrong_size);
  EXPECT_EQ(wrong_size.error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(s->put_file({"", "batch", "x", 1, 300, ""}, "x").error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(s->put_file({std::string(kStoredIdBytesMax + 1, 'f'), "batch", "x", 1, 300, ""}, "x").error().code,
            ErrorCode::kOutOfRange);
  auto f = s->get_file("file-1");
  ASSERT_TRUE(f && *f);
  EXPECT_EQ(**f, (StoredFile{"file-1", "batch", "in.jsonl", content.size(), 100, ""}));
  EXPECT_EQ(*s->file_content("file-1"), std::optional<std::string>(content));
  EXPECT_EQ(*s->file_content("file-2"), std::optional<std::string>(""));
  EXPECT_FALSE(*s->get_file("nope"));
  EXPECT_FALSE(*s->file_content("nope"));
  ASSERT_TRUE(s->put_file({"file-k", "batch", "k.jsonl", 1, 150, "key_1"}, "k"));
  EXPECT_EQ((*s->get_file("file-k"))->owner, "key_1");
  auto theirs = s->list_files("key_1", "", 10);
  ASSERT_TRUE(theirs) << theirs.error().to_string();
  ASSERT_EQ(theirs->size(), 1u);  // each owner sees only its own
  EXPECT_EQ((*theirs)[0].id, "file-k");
  auto all = s->list_files("", "", 10);
  ASSERT_TRUE(all);
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[0].id, "file-2");  // newest first
  EXPECT_EQ(s->list_files("", "batch", 10)->size(), 1u);
  EXPECT_EQ(s->list_files("", "", 1)->size(), 1u);
  EXPECT_EQ(s->list_files("", "", kListFilesMax + 1).error().code, ErrorCode::kOutOfRange);
  EXPECT_TRUE(*s->delete_file("file-1"));
  EXPECT_FALSE(*s->delete_file("file-1"));
  EXPECT_FALSE(*s->file_content("file-1"));
}

// Ids, names, owners, JSON and lines are kept as the bytes given: NUL and
// bytes that are not UTF-8 too; ids sort bytewise.
TEST_P(FileStoreContract, EveryTextKeepsAnyBytes) {
  auto s = open_ok();
  const std::string id = "file-\xff\0"s, owner = "key_\0\xfe"s, name = "na\xefve \0.jsonl"s;
  ASSERT_TRUE(s->put_file({id, "batch\xc3", name, 3, 5, owner}, "a\0b"s));
  ASSERT_TRUE(s->put_file({"file-A", "batch\xc3", name, 1, 5, owner}, "b"));
  auto got = s->get_file(id);
  ASSERT_TRUE(got && got->has_value()) << (got ? "absent" : got.error().to_string());
  EXPECT_EQ(**got, (StoredFile{id, "batch\xc3", name, 3, 5, owner}));
  EXPECT_EQ(**s->file_content(id), "a\0b"s);
  auto listed = s->list_files(owner, "batch\xc3", 10);
  ASSERT_TRUE(listed) << listed.error().to_string();
  ASSERT_EQ(listed->size(), 2u);
  EXPECT_EQ((*listed)[0].id, id);  // same created_at: id descending, 0xff after 'A'
  EXPECT_TRUE(s->list_files("key_", "", 10)->empty());

  const std::string batch = "batch-\xff"s;
  const std::vector<StoredBatchLine> lines = {{batch, 1, "failed", "c\0\xff"s, "job\xfe", "{\"\0\"}"s, "\xff\n"}};
  ASSERT_TRUE(s->put_batch({batch, "in_\xffprogress", 7, "{\"x\":\"\xe9\"}", owner}, lines));
  auto b = s->get_batch(batch);
  ASSERT_TRUE(b && b->has_value()) << (b ? "absent" : b.error().to_string());
  EXPECT_EQ(**b, (StoredBatch{batch, "in_\xffprogress", 7, "{\"x\":\"\xe9\"}", owner}));
  auto unfinished = s->load_unfinished_batches();
  ASSERT_TRUE(unfinished) << unfinished.error().to_string();
  ASSERT_EQ(unfinished->size(), 1u);
  auto read = s->batch_lines(batch);
  ASSERT_TRUE(read) << read.error().to_string();
  EXPECT_EQ(*read, lines);
  EXPECT_EQ(s->list_batches(owner, 10, 0)->size(), 1u);
}

TEST_P(FileStoreContract, BatchesAndLinesSurviveReopening) {
  {
    auto s = open_ok();
    ASSERT_TRUE(s);
    std::vector<StoredBatchLine> lines = {{"batch_1", 1, "pending", "a", "", "{}", ""},
                                          {"batch_1", 2, "failed", "b", "", "", "{\"error\":1}\n"}};
    ASSERT_TRUE(s->put_batch({"batch_1", "in_progress", 10, "{\"id\":\"batch_1\"}", ""}, lines));
    ASSERT_TRUE(s->put_batch({"batch_2", "completed", 20, "{\"id\":\"batch_2\"}", ""}, {}));
    ASSERT_TRUE(s->put_batch({"batch_k", "completed", 30, "{}", "key_1"}, {}));
    // An update of one line and the batch.
    std::vector<StoredBatchLine> update = {{"batch_1", 1, "running", "a", "cmpl-1", "{}", ""}};
    ASSERT_TRUE(s->put_batch({"batch_1", "in_progress", 10, "{\"id\":\"batch_1\",\"v\":2}", ""}, update));
    // Refused: a line of another batch, an unknown state, line 0; nothing of them is written.
    std::vector<StoredBatchLine> bad = {{"batch_x", 1, "pending", "", "", "", ""}};
    EXPECT_FALSE(s->put_batch({"batch_1", "in_progress", 10, "{}", ""}, bad));
    bad = {{"batch_1", 1, "sleeping", "", "", "", ""}};
    EXPECT_FALSE(s->put_batch({"batch_1", "in_progress", 10, "{}", ""}, bad));
    bad = {{"batch_3", 3, "pending", "", "", "", ""}, {"batch_3", 0, "pending", "", "", "", ""}};
    EXPECT_EQ(s->put_batch({"batch_3", "in_progress", 10, "{}", ""}, bad).error().code,
              ErrorCode::kInvalidArgument);
    EXPECT_EQ(s->put_batch({"", "in_progress", 10, "{}", ""}, {}).error().code, ErrorCode::kInvalidArgument);
  }
  auto s = open_ok();
  ASSERT_TRUE(s);
  auto unfinished = s->load_unfinished_batches();
  ASSERT_TRUE(unfinished) << unfinished.error().to_string();
  ASSERT_EQ(unfinished->size(), 1u);
  EXPECT_EQ((*unfinished)[0].object_json, "{\"id\":\"batch_1\",\"v\":2}");
  auto lines = s->batch_lines("batch_1");
  ASSERT_TRUE(lines) << lines.error().to_string();
  ASSERT_EQ(lines->size(), 2u);
  EXPECT_EQ((*lines)[0].state, "running");
  EXPECT_EQ((*lines)[0].job_id, "cmpl-1");
  EXPECT_EQ((*lines)[1].result, "{\"error\":1}\n");
  EXPECT_TRUE(s->batch_lines("batch_3")->empty());
  auto listed = s->list_batches("", 10, 0);
  ASSERT_TRUE(listed) << listed.error().to_string();
  ASSERT_EQ(listed->size(), 2u);
  EXPECT_EQ((*listed)[0].id, "batch_2");
  EXPECT_EQ(s->list_batches("", 10, 20)->size(), 1u);
  EXPECT_EQ(s->list_batches("", 1, 0)->size(), 1u);
  EXPECT_EQ(s->list_batches("", kListFilesMax + 1, 0).error().code, ErrorCode::kOutOfRange);
  auto theirs = s->list_batches("key_1", 10, 0);
  ASSERT_EQ(theirs->size(), 1u);
  EXPECT_EQ((*theirs)[0].id, "batch_k");
  EXPECT_EQ((*s->get_batch("batch_k"))->owner, "key_1");
  EXPECT_TRUE((*s->get_batch("batch_2")).has_value());
  EXPECT_FALSE((*s->get_batch("batch_3")).has_value());
}

TEST_P(FileStoreContract, DamagedRowsAreErrors) {
  {
    auto ok = open_ok();
    ASSERT_TRUE(ok);
    ASSERT_TRUE(ok->put_batch({"batch_1", "in_progress", 1, "{}", ""},
                              std::vector<StoredBatchLine>{{"batch_1", 1, "pending", "a", "", "{}", ""}}));
    ASSERT_TRUE(ok->put_file({"file-1", "batch", "in.jsonl", 2, 1, ""}, "ab"));
    ASSERT_TRUE(ok->put_file({"file-2", "batch", "in.jsonl", 2, 1, ""}, "ab"));
  }
  raw_sql("UPDATE batch_lines SET state = 'zzz'");
  raw_sql("UPDATE files SET bytes = -1 WHERE id = 'file-1'");
  raw_sql("UPDATE files SET bytes = 3 WHERE id = 'file-2'");
  auto again = open_ok();
  ASSERT_TRUE(again);
  auto lines = again->batch_lines("batch_1");
  ASSERT_FALSE(lines);
  EXPECT_EQ(lines.error().code, ErrorCode::kCorrupt);
  EXPECT_NE(lines.error().message.find("zzz"), std::string::npos);
  auto file = again->get_file("file-1");
  ASSERT_FALSE(file);
  EXPECT_EQ(file.error().code, ErrorCode::kCorrupt);
  EXPECT_NE(file.error().message.find("file-1"), std::string::npos);
  auto content = again->file_content("file-2");
  ASSERT_FALSE(content);
  EXPECT_EQ(content.error().code, ErrorCode::kCorrupt);
  EXPECT_NE(content.error().message.find("file-2"), std::string::npos);
}

TEST_F(FileStoreTest, AFileThatIsNotSqliteIsCorrupt) {
  {
    std::ofstream(db_path()) << "this is not a database, just text that is long enough to be read as a header......";
  }
  auto s = FileStore::open(db_path());
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code, ErrorCode::kCorrupt) << s.error().to_string();
  EXPECT_NE(s.error().message.find(db_path()), std::string::npos) << s.error().to_string();
}

TEST_F(FileStoreTest, InMemoryStoreForTests) {
  auto s = FileStore::open(":memory:");
  ASSERT_TRUE(s) << s.error().to_string();
  ASSERT_TRUE((*s)->put_file({"file-1", "batch", "in.jsonl", 1, 1, ""}, "x"));
  EXPECT_EQ((*s)->location(), ":memory:");
}

TEST_F(PgFileStoreTest, AFutureSchemaVersionIsUnsupported) {
  { ASSERT_TRUE(open_ok()); }
  raw_sql("INSERT INTO idlefleet_schema (store, version) VALUES ('files', " +
          std::to_string(kPgFilesSchemaVersion + 1) + ")");
  auto store = FileStore::open(location());
  ASSERT_FALSE(store);
  EXPECT_EQ(store.error().code, ErrorCode::kUnsupported) << store.error().to_string();
  EXPECT_NE(store.error().message.find("schema version " + std::to_string(kPgFilesSchemaVersion + 1)),
            std::string::npos)
      << store.error().to_string();
}

// A table altered by hand is reported, not misread.
TEST_F(PgFileStoreTest, AColumnOfAnotherTypeIsCorrupt) {
  auto s = open_ok();
  ASSERT_TRUE(s->put_batch({"batch_1", "in_progress", 1, "{}", ""},
                           std::vector<StoredBatchLine>{{"batch_1", 1, "pending", "a", "", "{}", ""}}));
  ASSERT_TRUE(s->batch_lines("batch_1"));
  raw_sql("ALTER TABLE batch_lines ALTER COLUMN line TYPE integer");
  auto lines = s->batch_lines("batch_1");
  ASSERT_FALSE(lines);
  EXPECT_EQ(lines.error().code, ErrorCode::kCorrupt) << lines.error().to_string();
  EXPECT_NE(lines.error().message.find("line"), std::string::npos) << lines.error().to_string();
  raw_sql("ALTER TABLE batches ALTER COLUMN object_json TYPE text USING encode(object_json, 'escape')");
  auto batch = s->get_batch("batch_1");
  ASSERT_FALSE(batch);
  EXPECT_EQ(batch.error().code, ErrorCode::kCorrupt) << batch.error().to_string();
  EXPECT_NE(batch.error().message.find("object_json"), std::string::npos) << batch.error().to_string();
}

INSTANTIATE_TEST_SUITE_P(Backends, FileStoreContract, ::testing::Values(Backend::kSqlite, Backend::kPostgres),
                         testing::backend_name);

}  // namespace
}  // namespace idlefleet::store::file_store_test
