#include "store/file_store.h"

#include <algorithm>
#include <array>
#include <utility>

#include "store/open.h"
#include "store/pg_db.h"
#include "store/pg_file_store.h"
#include "store/sqlite_file_store.h"

namespace idlefleet::store {

Result<std::unique_ptr<FileStore>> FileStore::open(const std::string& location) {
  return open_store_at<FileStore, PgFileStore, SqliteFileStore>(location);
}

namespace file_rows {
namespace {

// Both stores filter unfinished batches with this clause.
constexpr const char* kUnfinishedWhere = "status NOT IN ('failed', 'completed', 'expired', 'cancelled')";
constexpr std::array<std::string_view, 5> kLineStates = {"pending", "running", "done", "failed", "cancelled"};
constexpr size_t kFilenameBytesMax = 1024;

bool known_line_state(std::string_view state) {
  return std::find(kLineStates.begin(), kLineStates.end(), state) != kLineStates.end();
}

Status check_size(std::string_view what, size_t size, size_t max) {
  if (size > max) {
    return Unexpected(ErrorCode::kOutOfRange,
                      std::string(what) + " is " + std::to_string(size) + " bytes, over " + std::to_string(max));
  }
  return {};
}

}  // namespace

const char* unfinished_where() { return kUnfinishedWhere; }

Status check_file(const StoredFile& f, std::string_view content) {
  IF_RETURN_IF_ERROR(check_size("a file id", f.id.size(), kStoredIdBytesMax));
  IF_RETURN_IF_ERROR(check_size("a file's purpose", f.purpose.size(), kStoredIdBytesMax));
  IF_RETURN_IF_ERROR(check_size("a file name", f.filename.size(), kFilenameBytesMax));
  IF_RETURN_IF_ERROR(check_size("file " + f.id, content.size(), kStoredFileBytesMax));
  if (f.id.empty() || f.bytes != content.size()) {
    return Unexpected(ErrorCode::kInvalidArgument, "file '" + f.id + "': empty id or a size that is not its content's");
  }
  IF_RETURN_IF_ERROR(check_size("a file's owner", f.owner.size(), kStoredIdBytesMax));
  return {};
}

Status check_file_row(StoredFile& f, int64_t bytes, const std::string& label) {
  if (bytes < 0 || static_cast<uint64_t>(bytes) > kStoredFileBytesMax || f.id.empty()) {
    return Unexpected(ErrorCode::kCorrupt, label + ": file '" + f.id + "' has a bad size or id");
  }
  f.bytes = static_cast<uint64_t>(bytes);
  return {};
}

Status check_content(const std::string& id, size_t content_bytes, int64_t bytes, const std::string& label) {
  if (static_cast<int64_t>(content_bytes) == bytes) return {};
  return Unexpected(ErrorCode::kCorrupt, label + ": file '" + id + "' is not the size recorded");
}

Status check_list_limit(size_t limit, const char* what) {
  if (limit <= kListFilesMax) return {};
  return Unexpected(ErrorCode::kOutOfRange, std::string("at most 10000 ") + what + " are listed at once");
}

Status check_batch(const StoredBatch& b, std::span<const StoredBatchLine> lines) {
  IF_RETURN_IF_ERROR(check_size("a batch id", b.id.size(), kStoredIdBytesMax));
  IF_RETURN_IF_ERROR(check_size("batch " + b.id, b.object_json.size(), kStoredTextBytesMax));
  IF_RETURN_IF_ERROR(check_size("a batch's owner", b.owner.size(), kStoredIdBytesMax));
  if (b.id.empty()) return Unexpected(ErrorCode::kInvalidArgument, "a batch needs an id");
  for (const StoredBatchLine& l : lines) {
    if (l.batch_id != b.id || l.line == 0) {
      return Unexpected(ErrorCode::kInvalidArgument, "batch " + b.id + ": a line of another batch, or line 0");
    }
    if (!known_line_state(l.state)) {
      return Unexpected(ErrorCode::kInvalidArgument, "batch " + b.id + ": unknown line state '" + l.state + "'");
    }
    IF_RETURN_IF_ERROR(check_size("a custom_id", l.custom_id.size(), kStoredIdBytesMax * 8));
    IF_RETURN_IF_ERROR(check_size("a job id", l.job_id.size(), kStoredIdBytesMax));
    IF_RETURN_IF_ERROR(check_size("a batch line's body", l.body.size(), kStoredTextBytesMax));
    IF_RETURN_IF_ERROR(check_size("a batch line's result", l.result.size(), kStoredTextBytesMax));
  }
  return {};
}

Status check_batch_row(const StoredBatch& b, const std::string& label) {
  if (b.id.empty()) return Unexpected(ErrorCode::kCorrupt, label + ": a batch without an id");
  return {};
}

Status check_line_row(StoredBatchLine& l, int64_t number, const std::string& label) {
  if (number < 1 || !known_line_state(l.state)) {
    return Unexpected(ErrorCode::kCorrupt, label + ": batch " + l.batch_id + " has a bad line " +
                                               std::to_string(number) + " (state '" + l.state.substr(0, 32) + "')");
  }
  l.line = static_cast<uint64_t>(number);
  return {};
}

}  // namespace file_rows
}  // namespace idlefleet::store
