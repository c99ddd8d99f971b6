#include "core/job.h"

#include <algorithm>
#include <utility>

#include "common/check.h"

#include <nlohmann/json.hpp>

namespace idlefleet::core {

const char* job_state_name(JobState s) {
  switch (s) {
    case JobState::kQueued: return "queued";
    case JobState::kAssigned: return "assigned";
    case JobState::kRunning: return "running";
    case JobState::kPreempted: return "preempted";
    case JobState::kDone: return "done";
    case JobState::kFailed: return "failed";
    case JobState::kCancelled: return "cancelled";
  }
  return "unknown";
}

bool job_state_final(JobState s) {
  return s == JobState::kDone || s == JobState::kFailed || s == JobState::kCancelled;
}

const char* attempt_end_name(AttemptEnd e) {
  switch (e) {
    case AttemptEnd::kLive: return "live";
    case AttemptEnd::kCompleted: return "completed";
    case AttemptEnd::kPreempted: return "preempted";
    case AttemptEnd::kLost: return "lost";
    case AttemptEnd::kCancelled: return "cancelled";
    case AttemptEnd::kFailed: return "failed";
  }
  return "unknown";
}

Job::Job(std::string id, TimeMs created_at, uint64_t max_tokens, JobLimits limits)
    : id_(std::move(id)), created_at_(created_at), max_tokens_(std::min(max_tokens, limits.tokens_max)), limits_(limits) {}

const Attempt* Job::current() const {
  if (attempts_.empty() || attempts_.back().end != AttemptEnd::kLive) return nullptr;
  return &attempts_.back();
}

Status Job::check_attempt(uint32_t attempt, const char* what) const {
  const Attempt* live = current();
  if (live == nullptr || live->number != attempt) {
    return Unexpected(ErrorCode::kInvalidArgument,
                      std::string("job ") + id_ + ": stale " + what + " for attempt " + std::to_string(attempt) +
                          (live ? " (current attempt " + std::to_string(live->number) + ")" : " (no live attempt)"));
  }
  return {};
}

void Job::end_attempt(AttemptEnd end, TimeMs now) {
  CHECK(!attempts_.empty() && attempts_.back().end == AttemptEnd::kLive);
  attempts_.back().end = end;
  attempts_.back().ended_at = now;
}

Status Job::assign(const std::string& vehicle_id, TimeMs now) {
  if (state_ != JobState::kQueued && state_ != JobState::kPreempted) {
    return Unexpected(ErrorCode::kInvalidArgument,
                      "job " + id_ + ": cannot assign while " + job_state_name(state_));
  }
  if (vehicle_id.empty()) return Unexpected(ErrorCode::kInvalidArgument, "job " + id_ + ": empty vehicle id");
  const auto unlucky = std::count_if(attempts_.begin(), attempts_.end(), [](const Attempt& a) {
    return a.end == AttemptEnd::kFailed || a.end == AttemptEnd::kLost;
  });
  if (static_cast<uint32_t>(unlucky) >= limits_.attempts_max || attempts_.size() >= limits_.attempts_total_max) {
    state_ = JobState::kFailed;
    finish_reason_ = "no vehicle finished it: " + std::to_string(unlucky) + " attempts failed or were lost, " +
                     std::to_string(attempts_.size()) + " attempts in all";
    return Unexpected(ErrorCode::kOutOfRange, "job " + id_ + ": " + finish_reason_);
  }
  Attempt a;
  a.number = static_cast<uint32_t>(attempts_.size() + 1);
  a.vehicle_id = vehicle_id;
  a.assigned_at = now;
  a.lease_expires_at = now + limits_.lease_ms;
  a.tokens_at_start = produced_.size();
  attempts_.push_back(std::move(a));
  state_ = JobState::kAssigned;
  return {};
}

Status Job::start(uint32_t attempt, TimeMs now) {
  IF_RETURN_IF_ERROR(check_attempt(attempt, "start"));
  if (state_ != JobState::kAssigned) {
    return Unexpected(ErrorCode::kInvalidArgument, "job " + id_ + ": start while " + job_state_name(state_));
  }
  attempts_.back().started_at = now;
  attempts_.back().lease_expires_at = now + limits_.lease_ms;
  state_ = JobState::kRunning;
  return {};
}

Status Job::append(uint32_t attempt, uint64_t first_index, std::span<const int32_t> ids, TimeMs now) {
  IF_RETURN_IF_ERROR(check_attempt(attempt, "tokens"));
  if (state_ != JobState::kRunning) {
    return Unexpected(ErrorCode::kInvalidArgument, "job " + id_ + ": tokens while " + job_state_name(state_));
  }
  if (ids.size() > limits_.chunk_tokens_max) {
    return Unexpected(ErrorCode::kOutOfRange, "job " + id_ + ": chunk of " + std::to_string(ids.size()) +
                                                  " tokens exceeds " + std::to_string(limits_.chunk_tokens_max));
  }
  const uint64_t have = produced_.size();
  if (first_index > have) {
    return Unexpected(ErrorCode::kInvalidArgument, "job " + id_ + ": chunk starts at token " +
                                                       std::to_string(first_index) + " but only " +
                                                       std::to_string(have) + " are known (a gap: reordered or lost)");
  }
  // The part that overlaps what we have must agree: a duplicate, not a fork.
  const uint64_t overlap = std::min<uint64_t>(have - first_index, ids.size());
  for (uint64_t i = 0; i < overlap; ++i) {
    if (produced_[first_index + i] != ids[i]) {
      return Unexpected(ErrorCode::kCorrupt, "job " + id_ + ": token " + std::to_string(first_index + i) +
                                                 " differs from the one already produced");
    }
  }
  const uint64_t fresh = ids.size() - overlap;
  if (have + fresh > max_tokens_) {
    return Unexpected(ErrorCode::kOutOfRange, "job " + id_ + ": more tokens than its budget of " +
                                                  std::to_string(max_tokens_));
  }
  produced_.insert(produced_.end(), ids.begin() + static_cast<std::ptrdiff_t>(overlap), ids.end());
  attempts_.back().tokens_appended += fresh;
  attempts_.back().lease_expires_at = now + limits_.lease_ms;
  return {};
}

Status Job::heartbeat(uint32_t attempt, TimeMs now) {
  IF_RETURN_IF_ERROR(check_attempt(attempt, "heartbeat"));
  attempts_.back().lease_expires_at = now + limits_.lease_ms;
  return {};
}

Status Job::preempt(uint32_t attempt, TimeMs now) {
  IF_RETURN_IF_ERROR(check_attempt(attempt, "preemption"));
  end_attempt(AttemptEnd::kPreempted, now);
  state_ = JobState::kPreempted;
  return {};
}

Status Job::attempt_failed(uint32_t attempt, const std::string& why, TimeMs now) {
  IF_RETURN_IF_ERROR(check_attempt(attempt, "failure"));
  end_attempt(AttemptEnd::kFailed, now);
  finish_reason_ = why;
  state_ = JobState::kPreempted;
  return {};
}

Status Job::complete(uint32_t attempt, uint64_t total_tokens, const std::string& finish_reason, TimeMs now) {
  IF_RETURN_IF_ERROR(check_attempt(attempt, "completion"));
  if (state_ != JobState::kRunning) {
    return Unexpected(ErrorCode::kInvalidArgument, "job " + id_ + ": completion while " + job_state_name(state_));
  }
  if (total_tokens != produced_.size()) {
    return Unexpected(ErrorCode::kInvalidArgument,
                      "job " + id_ + ": completion claims " + std::to_string(total_tokens) + " tokens but " +
                          std::to_string(produced_.size()) + " arrived (chunks missing)");
  }
  end_attempt(AttemptEnd::kCompleted, now);
  finish_reason_ = finish_reason;
  state_ = JobState::kDone;
  return {};
}

Status Job::lose(uint32_t attempt, TimeMs now) {
  IF_RETURN_IF_ERROR(check_attempt(attempt, "loss"));
  end_attempt(AttemptEnd::kLost, now);
  state_ = JobState::kPreempted;
  return {};
}

Status Job::fail(const std::string& why, TimeMs now) {
  if (job_state_final(state_)) {
    return Unexpected(ErrorCode::kInvalidArgument, "job " + id_ + ": already " + job_state_name(state_));
  }
  if (current() != nullptr) end_attempt(AttemptEnd::kFailed, now);
  state_ = JobState::kFailed;
  finish_reason_ = why;
  return {};
}

Status Job::cancel(TimeMs now) {
  if (job_state_final(state_)) {
    return Unexpected(ErrorCode::kInvalidArgument, "job " + id_ + ": already " + job_state_name(state_));
  }
  if (current() != nullptr) end_attempt(AttemptEnd::kCancelled, now);
  state_ = JobState::kCancelled;
  finish_reason_ = "cancelled";
  return {};
}

Status Job::stop_early(const std::string& finish_reason, TimeMs now) {
  if (job_state_final(state_)) {
    return Unexpected(ErrorCode::kInvalidArgument, "job " + id_ + ": already " + job_state_name(state_));
  }
  if (current() != nullptr) end_attempt(AttemptEnd::kCancelled, now);
  state_ = JobState::kDone;
  finish_reason_ = finish_reason;
  return {};
}

Result<Job> Job::restore(std::string id, TimeMs created_at, uint64_t max_tokens, JobLimits limits, JobState state,
                         std::vector<int32_t> produced, std::vector<Attempt> attempts, std::string finish_reason,
                         TimeMs now) {
  Job job(std::move(id), created_at, max_tokens, limits);
  if (produced.size() > job.max_tokens_) {
    return Unexpected(ErrorCode::kCorrupt, "job " + job.id_ + ": stored with more tokens than its budget");
  }
  uint64_t appended = 0;
  for (size_t i = 0; i < attempts.size(); ++i) {
    if (attempts[i].number != i + 1 || (attempts[i].end == AttemptEnd::kLive && i + 1 != attempts.size())) {
      return Unexpected(ErrorCode::kCorrupt, "job " + job.id_ + ": stored attempts are out of order");
    }
    appended += attempts[i].tokens_appended;
  }
  if (appended != produced.size()) {
    return Unexpected(ErrorCode::kCorrupt, "job " + job.id_ + ": stored attempts account for " +
                                               std::to_string(appended) + " tokens, not " +
                                               std::to_string(produced.size()));
  }
  job.produced_ = std::move(produced);
  job.attempts_ = std::move(attempts);
  job.finish_reason_ = std::move(finish_reason);
  job.state_ = state;
  if (job.current() != nullptr) {
    if (job_state_final(state)) {
      return Unexpected(ErrorCode::kCorrupt, "job " + job.id_ + ": stored final with a live attempt");
    }
    job.end_attempt(AttemptEnd::kLost, now);
  }
  if (state == JobState::kAssigned || state == JobState::kRunning) job.state_ = JobState::kPreempted;
  return job;
}

bool Job::expire_lease(TimeMs now) {
  const Attempt* live = current();
  if (live == nullptr || now < live->lease_expires_at) return false;
  end_attempt(AttemptEnd::kLost, now);
  state_ = JobState::kPreempted;
  return true;
}

std::optional<JobState> job_state_from_name(std::string_view name) {
  for (JobState s : {JobState::kQueued, JobState::kAssigned, JobState::kRunning, JobState::kPreempted, JobState::kDone,
                     JobState::kFailed, JobState::kCancelled}) {
    if (name == job_state_name(s)) return s;
  }
  return std::nullopt;
}

namespace {
constexpr size_t kAttemptsJsonBytesMax = 1u << 20;
}  // namespace

std::string attempts_to_json(const std::vector<Attempt>& attempts) {
  nlohmann::json out = nlohmann::json::array();
  for (const Attempt& a : attempts) {
    out.push_back({{"number", a.number},
                   {"vehicle_id", a.vehicle_id},
                   {"assigned_at", a.assigned_at},
                   {"started_at", a.started_at},
                   {"lease_expires_at", a.lease_expires_at},
                   {"ended_at", a.ended_at},
                   {"end", attempt_end_name(a.end)},
                   {"tokens_at_start", a.tokens_at_start},
                   {"tokens_appended", a.tokens_appended}});
  }
  return out.dump();
}

Result<std::vector<Attempt>> attempts_from_json(std::string_view text) {
  if (text.size() > kAttemptsJsonBytesMax) return Unexpected(ErrorCode::kOutOfRange, "attempts: too long");
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_array()) return Unexpected(ErrorCode::kCorrupt, "attempts: not a JSON array");
  std::vector<Attempt> out;
  try {
    for (const auto& e : j) {
      Attempt a;
      a.number = e.at("number").get<uint32_t>();
      a.vehicle_id = e.at("vehicle_id").get<std::string>();
      a.assigned_at = e.at("assigned_at").get<TimeMs>();
      a.started_at = e.at("started_at").get<TimeMs>();
      a.lease_expires_at = e.at("lease_expires_at").get<TimeMs>();
      a.ended_at = e.at("ended_at").get<TimeMs>();
      const std::string end = e.at("end").get<std::string>();
      bool known = false;
      for (AttemptEnd x : {AttemptEnd::kLive, AttemptEnd::kCompleted, AttemptEnd::kPreempted, AttemptEnd::kLost,
                           AttemptEnd::kCancelled, AttemptEnd::kFailed}) {
        if (end == attempt_end_name(x)) {
          a.end = x;
          known = true;
        }
      }
      if (!known) return Unexpected(ErrorCode::kCorrupt, "attempts: unknown end '" + end + "'");
      a.tokens_at_start = e.at("tokens_at_start").get<uint64_t>();
      a.tokens_appended = e.at("tokens_appended").get<uint64_t>();
      out.push_back(std::move(a));
    }
  } catch (const nlohmann::json::exception& e) {
    return Unexpected(ErrorCode::kCorrupt, std::string("attempts: ") + e.what());
  }
  return out;
}

}  // namespace idlefleet::core
