#include "store/job_store.h"

#include <array>
#include <bit>
#include <cstring>
#include <utility>

#include "common/check.h"
#include "core/job.h"
#include "store/open.h"
#include "store/pg_db.h"
#include "store/pg_job_store.h"
#include "store/sqlite_job_store.h"

namespace idlefleet::store {

Result<std::unique_ptr<JobStore>> JobStore::open(const std::string& location) {
  return open_store_at<JobStore, PgJobStore, SqliteJobStore>(location);
}

namespace job_rows {
namespace {

constexpr core::JobState kAllStates[] = {
    core::JobState::kQueued, core::JobState::kAssigned, core::JobState::kRunning, core::JobState::kPreempted,
    core::JobState::kDone,   core::JobState::kFailed,   core::JobState::kCancelled,
};

const std::array<std::string_view, std::size(kAllStates)>& names() {
  static const auto table = [] {
    std::array<std::string_view, std::size(kAllStates)> out{};
    for (size_t i = 0; i < out.size(); ++i) out[i] = core::job_state_name(kAllStates[i]);
    return out;
  }();
  return table;
}

// Both stores filter unfinished jobs with this clause (and SQLite's partial
// index repeats it textually, which it needs to use the index).
constexpr const char* kUnfinishedWhere = "state NOT IN ('done', 'failed', 'cancelled')";

bool known_kind(std::string_view kind) { return kind == "completion" || kind == "chat" || kind == "embedding"; }

Status check_bytes(const StoredJob& job, const char* field, size_t bytes, size_t max) {
  if (bytes <= max) return {};
  return Unexpected(ErrorCode::kOutOfRange, "job '" + job.id.substr(0, kIdBytesMax) + "': " + field + " is " +
                                                std::to_string(bytes) + " bytes, more than " + std::to_string(max));
}

Status check_tokens(const StoredJob& job, const char* field, size_t count) {
  if (count <= kTokensMax) return {};
  return Unexpected(ErrorCode::kOutOfRange, "job '" + job.id + "': " + field + " has " + std::to_string(count) +
                                                " tokens, more than " + std::to_string(kTokensMax));
}

}  // namespace

std::span<const std::string_view> state_names() { return names(); }

const char* unfinished_where() { return kUnfinishedWhere; }

void check_final_states_match_core() {
  for (core::JobState s : kAllStates) {
    const std::string quoted = std::string("'") + core::job_state_name(s) + "'";
    CHECK(core::job_state_final(s) == (std::strstr(kUnfinishedWhere, quoted.c_str()) != nullptr));
  }
}

bool known_state(std::string_view name) {
  for (std::string_view s : names()) {
    if (name == s) return true;
  }
  return false;
}

Status validate(const StoredJob& job) {
  if (job.id.empty()) return Unexpected(ErrorCode::kInvalidArgument, "job with an empty id");
  IF_RETURN_IF_ERROR(check_bytes(job, "id", job.id.size(), kIdBytesMax));
  for (char c : job.id) {
    if (c < 0x21 || c > 0x7e) {
      return Unexpected(ErrorCode::kInvalidArgument,
                        "job id '" + job.id + "' has a byte that is not printable ASCII (0x21-0x7e)");
    }
  }
  IF_RETURN_IF_ERROR(check_bytes(job, "kind", job.kind.size(), kKindBytesMax));
  if (!known_kind(job.kind)) {
    return Unexpected(ErrorCode::kInvalidArgument, "job '" + job.id + "': unknown kind '" + job.kind + "'");
  }
  IF_RETURN_IF_ERROR(check_bytes(job, "model_id", job.model_id.size(), kModelIdBytesMax));
  IF_RETURN_IF_ERROR(check_bytes(job, "request_json", job.request_json.size(), kRequestJsonBytesMax));
  IF_RETURN_IF_ERROR(check_bytes(job, "sampling_json", job.sampling_json.size(), kSamplingJsonBytesMax));
  IF_RETURN_IF_ERROR(check_bytes(job, "attempts_json", job.attempts_json.size(), kAttemptsJsonBytesMax));
  IF_RETURN_IF_ERROR(check_bytes(job, "finish_reason", job.finish_reason.size(), kFinishReasonBytesMax));
  IF_RETURN_IF_ERROR(check_tokens(job, "prompt_ids", job.prompt_ids.size()));
  IF_RETURN_IF_ERROR(check_tokens(job, "stop_ids", job.stop_ids.size()));
  IF_RETURN_IF_ERROR(check_tokens(job, "produced", job.produced.size()));
  if (job.max_tokens > kMaxTokensMax) {
    return Unexpected(ErrorCode::kOutOfRange, "job '" + job.id + "': max_tokens " + std::to_string(job.max_tokens) +
                                                  " is more than " + std::to_string(kMaxTokensMax));
  }
  if (!known_state(job.state)) {
    return Unexpected(ErrorCode::kInvalidArgument, "job '" + job.id + "': unknown state '" + job.state + "'");
  }
  return {};
}

Status check_put_count(size_t count, const std::string& label) {
  if (count <= kPutJobsMax) return {};
  return Unexpected(ErrorCode::kOutOfRange, label + ": put of " + std::to_string(count) + " jobs, more than " +
                                                std::to_string(kPutJobsMax));
}

Status check_list_limit(size_t limit, const char* call, const std::string& label) {
  if (limit <= kListRecentJobsMax) return {};
  return Unexpected(ErrorCode::kOutOfRange, label + ": " + call + " limit " + std::to_string(limit) +
                                                " is more than " + std::to_string(kListRecentJobsMax));
}

std::string encode_tokens(std::span<const int32_t> ids) {
  std::string out(ids.size() * 4, '\0');
  if constexpr (std::endian::native == std::endian::little) {
    if (!ids.empty()) std::memcpy(out.data(), ids.data(), out.size());
  } else {
    for (size_t i = 0; i < ids.size(); ++i) {
      const auto u = static_cast<uint32_t>(ids[i]);
      for (int b = 0; b < 4; ++b) out[i * 4 + b] = static_cast<char>((u >> (8 * b)) & 0xff);
    }
  }
  return out;
}

Status decode_tokens(const StoredJob& job, const char* column, std::string_view bytes, std::vector<int32_t>& out) {
  const size_t n = bytes.size();
  auto corrupt = [&](const std::string& why) {
    return Unexpected(ErrorCode::kCorrupt, "job '" + job.id + "': column " + column + " " + why);
  };
  if (n % 4 != 0) return corrupt("is " + std::to_string(n) + " bytes, not a multiple of 4");
  if (n / 4 > kTokensMax) return corrupt("holds " + std::to_string(n / 4) + " tokens, more than the limit");
  out.resize(n / 4);
  if constexpr (std::endian::native == std::endian::little) {
    if (n != 0) std::memcpy(out.data(), bytes.data(), n);
  } else {
    for (size_t i = 0; i < out.size(); ++i) {
      uint32_t u = 0;
      for (int b = 0; b < 4; ++b) u |= static_cast<uint32_t>(static_cast<unsigned char>(bytes[i * 4 + b])) << (8 * b);
      out[i] = static_cast<int32_t>(u);
    }
  }
  return {};
}

Status finish_read(StoredJob& job, int64_t max_tokens, int64_t batch) {
  auto corrupt = [&](const char* column, const std::string& why) {
    return Unexpected(ErrorCode::kCorrupt, "job '" + job.id + "': column " + column + " " + why);
  };
  if (max_tokens < 0 || static_cast<uint64_t>(max_tokens) > kMaxTokensMax) {
    return corrupt("max_tokens", "is " + std::to_string(max_tokens) + ", out of range");
  }
  if (batch != 0 && batch != 1) return corrupt("batch", "is " + std::to_string(batch) + ", not 0 or 1");
  if (!known_state(job.state)) return corrupt("state", "is '" + job.state + "', not a job state");
  job.max_tokens = static_cast<uint64_t>(max_tokens);
  job.batch = batch == 1;
  return {};
}

std::map<std::string, uint64_t> zero_counts() {
  std::map<std::string, uint64_t> counts;
  for (std::string_view s : names()) counts[std::string(s)] = 0;
  return counts;
}

}  // namespace job_rows
}  // namespace idlefleet::store
