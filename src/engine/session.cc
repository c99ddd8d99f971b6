#include "engine/session.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <nlohmann/json.hpp>

namespace idlefleet::engine {

namespace {

using json = nlohmann::json;

Result<std::vector<int32_t>> read_ids(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end()) return std::vector<int32_t>{};
  if (!it->is_array()) return Unexpected(ErrorCode::kCorrupt, std::string("session: '") + key + "' must be an array");
  if (it->size() > kSessionIdsMax) {
    return Unexpected(ErrorCode::kOutOfRange, std::string("session: '") + key + "' holds too many ids");
  }
  std::vector<int32_t> out;
  out.reserve(it->size());
  for (const json& v : *it) {
    if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > INT32_MAX) {
      return Unexpected(ErrorCode::kCorrupt, std::string("session: '") + key + "' must hold token ids (integers >= 0)");
    }
    out.push_back(static_cast<int32_t>(v.get<int64_t>()));
  }
  return out;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

std::string SessionState::to_json() const {
  json j;
  j["version"] = 1;
  j["model"] = model;
  j["prompt_ids"] = prompt_ids;
  j["produced_ids"] = produced_ids;
  j["max_tokens"] = max_tokens;
  j["stop_ids"] = stop_ids;
  j["sampler"] = {{"temperature", sampler.temperature}, {"top_k", sampler.top_k},
                  {"top_p", sampler.top_p},             {"min_p", sampler.min_p},
                  {"repeat_penalty", sampler.repeat_penalty},
                  {"repeat_last_n", sampler.repeat_last_n},
                  {"presence_penalty", sampler.presence_penalty},
                  {"frequency_penalty", sampler.frequency_penalty}, {"seed", sampler.seed}};
  return j.dump();
}

Result<SessionState> SessionState::from_json(std::string_view text) {
  if (text.size() > kSessionJsonBytesMax) {
    return Unexpected(ErrorCode::kOutOfRange, "session: larger than " + std::to_string(kSessionJsonBytesMax) + " bytes");
  }
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return Unexpected(ErrorCode::kCorrupt, "session: not a JSON object");
  if (!j.contains("version") || !j["version"].is_number_integer() || j["version"].get<int64_t>() != 1) {
    return Unexpected(ErrorCode::kUnsupported, "session: unknown version (expected 1)");
  }
  SessionState s;
  if (j.contains("model")) {
    if (!j["model"].is_string()) return Unexpected(ErrorCode::kCorrupt, "session: 'model' must be a string");
    s.model = j["model"].get<std::string>();
  }
  auto prompt = read_ids(j, "prompt_ids");
  if (!prompt) return Unexpected(prompt.error());
  auto produced = read_ids(j, "produced_ids");
  if (!produced) return Unexpected(produced.error());
  auto stops = read_ids(j, "stop_ids");
  if (!stops) return Unexpected(stops.error());
  s.prompt_ids = std::move(*prompt);
  s.produced_ids = std::move(*produced);
  s.stop_ids = std::move(*stops);
  if (s.prompt_ids.empty()) return Unexpected(ErrorCode::kCorrupt, "session: 'prompt_ids' is empty");
  if (j.contains("max_tokens")) {
    if (!j["max_tokens"].is_number_integer() || j["max_tokens"].get<int64_t>() < 0) {
      return Unexpected(ErrorCode::kCorrupt, "session: 'max_tokens' must be an integer >= 0");
    }
    s.max_tokens = j["max_tokens"].get<int64_t>();
  }
  if (j.contains("sampler")) {
    const json& p = j["sampler"];
    if (!p.is_object()) return Unexpected(ErrorCode::kCorrupt, "session: 'sampler' must be an object");
    auto num = [&](const char* key, auto* dst) -> Status {
      if (!p.contains(key)) return {};
      using T = std::remove_pointer_t<decltype(dst)>;
      if constexpr (std::is_floating_point_v<T>) {
        if (!p[key].is_number()) return Unexpected(ErrorCode::kCorrupt, std::string("session: sampler.") + key + " must be a number");
        const double v = p[key].get<double>();
        if (!(std::fabs(v) <= 1e30)) {  // also NaN; narrowing a huge double to float is undefined
          return Unexpected(ErrorCode::kOutOfRange, std::string("session: sampler.") + key + " is out of range");
        }
        *dst = static_cast<T>(v);
      } else {
        if (!p[key].is_number_integer()) return Unexpected(ErrorCode::kCorrupt, std::string("session: sampler.") + key + " must be an integer");
        if constexpr (std::is_unsigned_v<T>) {
          if (!p[key].is_number_unsigned()) return Unexpected(ErrorCode::kCorrupt, std::string("session: sampler.") + key + " must be >= 0");
          *dst = p[key].get<T>();
        } else {
          const int64_t v = p[key].get<int64_t>();
          if (v < INT32_MIN || v > INT32_MAX) return Unexpected(ErrorCode::kOutOfRange, std::string("session: sampler.") + key + " is out of range");
          *dst = static_cast<T>(v);
        }
      }
      return {};
    };
    IF_RETURN_IF_ERROR(num("temperature", &s.sampler.temperature));
    IF_RETURN_IF_ERROR(num("top_k", &s.sampler.top_k));
    IF_RETURN_IF_ERROR(num("top_p", &s.sampler.top_p));
    IF_RETURN_IF_ERROR(num("min_p", &s.sampler.min_p));
    IF_RETURN_IF_ERROR(num("repeat_penalty", &s.sampler.repeat_penalty));
    IF_RETURN_IF_ERROR(num("repeat_last_n", &s.sampler.repeat_last_n));
    IF_RETURN_IF_ERROR(num("presence_penalty", &s.sampler.presence_penalty));
    IF_RETURN_IF_ERROR(num("frequency_penalty", &s.sampler.frequency_penalty));
    IF_RETURN_IF_ERROR(num("seed", &s.sampler.seed));
  }
  if (auto v = s.sampler.validate(); !v) return Unexpected(v.error().code, "session: " + v.error().message);
  return s;
}

Generator::Generator(const Model& model, Context& ctx) : model_(model), ctx_(ctx) {}

Status Generator::start(std::vector<int32_t> prompt_ids, const SamplerParams& sampler, int64_t max_tokens,
                        std::vector<int32_t> stop_ids) {
  SessionState s;
  s.model = model_.name();
  s.prompt_ids = std::move(prompt_ids);
  s.sampler = sampler;
  s.max_tokens = max_tokens;
  s.stop_ids = std::move(stop_ids);
  return resume(s);
}

Status Generator::resume(const SessionState& state) {
  if (state.prompt_ids.empty()) return Unexpected(ErrorCode::kInvalidArgument, "the prompt has no tokens");
  if (auto v = state.sampler.validate(); !v) return v;
  if (state.max_tokens < 0) return Unexpected(ErrorCode::kInvalidArgument, "max_tokens must be >= 0");
  if (!state.model.empty() && state.model != model_.name()) {
    return Unexpected(ErrorCode::kInvalidArgument,
                      "the session was made with model '" + state.model + "', not '" + model_.name() + "'");
  }
  const int64_t vocab = model_.config().vocab_size;
  for (const auto* ids : {&state.prompt_ids, &state.produced_ids, &state.stop_ids}) {
    for (int32_t id : *ids) {
      if (id < 0 || id >= vocab) {
        return Unexpected(ErrorCode::kInvalidArgument, "token id " + std::to_string(id) +
                                                           " is outside the vocabulary of " + std::to_string(vocab));
      }
    }
  }
  if (state.position() > ctx_.capacity()) {
    return Unexpected(ErrorCode::kOutOfRange, "the session holds " + std::to_string(state.position()) +
                                                  " tokens but the context holds " + std::to_string(ctx_.capacity()));
  }
  state_ = state;
  state_.model = model_.name();
  history_ = state_.prompt_ids;
  history_.insert(history_.end(), state_.produced_ids.begin(), state_.produced_ids.end());
  pending_ = history_;
  ctx_.rewind(0);
  stop_ = StopReason::kNone;
  logprobs_valid_ = false;
  first_ = true;
  prefill_seconds_ = decode_seconds_ = 0.0;
  prefill_tokens_ = 0;
  if (!state_.produced_ids.empty() &&
      std::find(state_.stop_ids.begin(), state_.stop_ids.end(), state_.produced_ids.back()) != state_.stop_ids.end()) {
    stop_ = StopReason::kStopToken;
  }
  return {};
}

Status Generator::enable_logprobs(int32_t top_n) {
  if (top_n < 0 || top_n > kTopLogprobsMax) {
    return Unexpected(ErrorCode::kInvalidArgument, std::string("top_logprobs must be in [0, ")
                                                       .append(std::to_string(kTopLogprobsMax))
                                                       .append("], got ")
                                                       .append(std::to_string(top_n)));
  }
  logprobs_top_n_ = top_n;
  return {};
}

Result<int32_t> Generator::next() {
  logprobs_valid_ = false;
  if (stop_ != StopReason::kNone) return -1;
  if (state_.max_tokens > 0 && static_cast<int64_t>(state_.produced_ids.size()) >= state_.max_tokens) {
    stop_ = StopReason::kMaxTokens;
    return -1;
  }
  if (ctx_.position() + static_cast<int64_t>(pending_.size()) > ctx_.capacity() ||
      static_cast<int64_t>(history_.size()) >= ctx_.capacity()) {
    stop_ = StopReason::kContextFull;
    return -1;
  }
  const auto t0 = std::chrono::steady_clock::now();
  auto logits = ctx_.eval(pending_);
  if (!logits) return Unexpected(logits.error());
  if (first_) {
    prefill_seconds_ += seconds_since(t0);
    prefill_tokens_ = static_cast<int64_t>(pending_.size());
    first_ = false;
  } else {
    decode_seconds_ += seconds_since(t0);
  }
  logits_ = *logits;
  const Sampler sampler(state_.sampler);
  const int32_t token = sampler.sample(logits_, history_, state_.prompt_ids.size(),
                                      static_cast<uint64_t>(history_.size()));
  if (logprobs_top_n_ >= 0) {
    compute_logprobs(logits_, token, logprobs_top_n_, &logprobs_);
    logprobs_valid_ = true;
  }
  history_.push_back(token);
  state_.produced_ids.push_back(token);
  pending_.assign(1, token);
  if (std::find(state_.stop_ids.begin(), state_.stop_ids.end(), token) != state_.stop_ids.end()) {
    stop_ = StopReason::kStopToken;
  }
  return token;
}

}  // namespace idlefleet::engine
