#include "core/protocol.h"

#include <algorithm>
#include <cstring>
#include <initializer_list>
#include <string_view>

#include <cfloat>
#include <cmath>
#include <nlohmann/json.hpp>

namespace idlefleet::core {

namespace {

using json = nlohmann::json;

// Field access with validation; the first error is kept and reported.
class Reader {
 public:
  Reader(const json& j, const char* type) : j_(j), type_(type) {}

  const Status& status() const { return status_; }

  std::string string(const char* key, size_t max_bytes, bool required = true) {
    const json* v = field(key, required);
    if (v == nullptr) return {};
    if (!v->is_string()) return fail(key, "must be a string");
    const auto& s = v->get_ref<const std::string&>();
    if (s.size() > max_bytes) return fail(key, "is longer than " + std::to_string(max_bytes) + " bytes");
    if (required && s.empty()) return fail(key, "must not be empty");
    return s;
  }

  uint64_t uint(const char* key, uint64_t max, bool required = true) {
    const json* v = field(key, required);
    if (v == nullptr) return 0;
    if (!v->is_number_unsigned() && !(v->is_number_integer() && v->get<int64_t>() >= 0)) {
      fail(key, "must be an integer >= 0");
      return 0;
    }
    const uint64_t x = v->get<uint64_t>();
    if (x > max) {
      fail(key, "is larger than " + std::to_string(max));
      return 0;
    }
    return x;
  }

  int64_t integer(const char* key, int64_t min, int64_t max, bool required = true) {
    const json* v = field(key, required);
    if (v == nullptr) return 0;
    if (!v->is_number_integer()) {
      fail(key, "must be an integer");
      return 0;
    }
    if (v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) {
      fail(key, "is out of range");
      return 0;
    }
    const int64_t x = v->get<int64_t>();
    if (x < min || x > max) {
      fail(key, "must be in [" + std::to_string(min) + ", " + std::to_string(max) + "]");
      return 0;
    }
    return x;
  }

  double number(const char* key, double min, double max, bool required = true, double fallback = 0.0) {
    const json* v = field(key, required);
    if (v == nullptr) return fallback;
    if (!v->is_number()) {
      fail(key, "must be a number");
      return fallback;
    }
    const double x = v->get<double>();
    if (!(x >= min && x <= max)) {
      fail(key, "must be a finite number in [" + std::to_string(min) + ", " + std::to_string(max) + "]");
      return fallback;
    }
    return x;
  }

  bool boolean(const char* key, bool required = true) {
    const json* v = field(key, required);
    if (v == nullptr) return false;
    if (!v->is_boolean()) {
      fail(key, "must be true or false");
      return false;
    }
    return v->get<bool>();
  }

  std::vector<int32_t> ids(const char* key, size_t max_count, bool required = true) {
    std::vector<int32_t> out;
    const json* v = field(key, required);
    if (v == nullptr) return out;
    if (!v->is_array()) {
      fail(key, "must be an array of token ids");
      return out;
    }
    if (v->size() > max_count) {
      fail(key, "holds more than " + std::to_string(max_count) + " ids");
      return out;
    }
    out.reserve(v->size());
    for (const json& e : *v) {
      if (!e.is_number_integer() || e.get<int64_t>() < 0 || e.get<int64_t>() > kTokenIdMax) {
        fail(key, "must hold token ids in [0, " + std::to_string(kTokenIdMax) + "]");
        return {};
      }
      out.push_back(static_cast<int32_t>(e.get<int64_t>()));
    }
    return out;
  }

  // 1..max_count finite numbers, each within float's range.
  std::vector<float> floats(const char* key, size_t max_count) {
    std::vector<float> out;
    const json* v = field(key, true);
    if (v == nullptr) return out;
    if (!v->is_array() || v->empty()) {
      fail(key, "must be a non-empty array of numbers");
      return out;
    }
    if (v->size() > max_count) {
      fail(key, "holds more than " + std::to_string(max_count) + " values");
      return out;
    }
    out.reserve(v->size());
    for (const json& e : *v) {
      const double x = e.is_number() ? e.get<double>() : NAN;
      if (!std::isfinite(x) || std::fabs(x) > FLT_MAX) {
        fail(key, "must hold finite numbers within float's range");
        return {};
      }
      out.push_back(static_cast<float>(x));
    }
    return out;
  }

  std::vector<std::string> strings(const char* key, size_t max_count, size_t max_bytes) {
    std::vector<std::string> out;
    const json* v = field(key, false);
    if (v == nullptr) return out;
    if (!v->is_array()) {
      fail(key, "must be an array of strings");
      return out;
    }
    if (v->size() > max_count) {
      fail(key, "holds more than " + std::to_string(max_count) + " strings");
      return out;
    }
    for (const json& e : *v) {
      if (!e.is_string() || e.get_ref<const std::string&>().size() > max_bytes) {
        fail(key, "must hold strings of at most " + std::to_string(max_bytes) + " bytes");
        return {};
      }
      out.push_back(e.get<std::string>());
    }
    return out;
  }

  // One entry per chunk id (`count` of them): [{"logprob": x, "top": [[id, x], ...]}, ...],
  // every x a number in [kLogprobMin, 0], at most kTopLogprobsMax pairs in a
  // top list, each id a token id.
  std::vector<TokenLogprobs> logprobs(const char* key, size_t count) {
    std::vector<TokenLogprobs> out;
    const json* v = field(key, false);
    if (v == nullptr) return out;
    if (!v->is_array() || v->size() != count) {
      fail(key, "must be an array with one entry per id (" + std::to_string(count) + ")");
      return out;
    }
    auto logprob = [](const json& x, float* f) {
      if (!x.is_number()) return false;
      const double d = x.get<double>();
      if (!(d >= static_cast<double>(kLogprobMin) && d <= 0.0)) return false;
      *f = static_cast<float>(d);
      return true;
    };
    const std::string bad_entry = std::string("must hold {\"logprob\": x, \"top\": [[id, x], ...]} with x in [")
                                      .append(std::to_string(static_cast<int>(kLogprobMin)))
                                      .append(", 0], at most ")
                                      .append(std::to_string(kTopLogprobsMax))
                                      .append(" pairs and ids in [0, ")
                                      .append(std::to_string(kTokenIdMax))
                                      .append("]");
    out.reserve(v->size());
    for (const json& e : *v) {
      TokenLogprobs t;
      auto lp = e.is_object() ? e.find("logprob") : e.end();
      auto top = e.is_object() ? e.find("top") : e.end();
      if (!e.is_object() || lp == e.end() || !logprob(*lp, &t.logprob) ||
          (top != e.end() && (!top->is_array() || top->size() > static_cast<size_t>(kTopLogprobsMax)))) {
        fail(key, bad_entry);
        return {};
      }
      if (top != e.end()) {
        t.top.reserve(top->size());
        for (const json& pair : *top) {
          TopLogprob c;
          if (!pair.is_array() || pair.size() != 2 || !pair[0].is_number_integer() || pair[0].get<int64_t>() < 0 ||
              pair[0].get<int64_t>() > kTokenIdMax || !logprob(pair[1], &c.logprob)) {
            fail(key, bad_entry);
            return {};
          }
          c.id = static_cast<int32_t>(pair[0].get<int64_t>());
          t.top.push_back(c);
        }
      }
      out.push_back(std::move(t));
    }
    return out;
  }

  const json* object(const char* key) {
    const json* v = field(key, false);
    if (v != nullptr && !v->is_object()) {
      fail(key, "must be an object");
      return nullptr;
    }
    return v;
  }

 private:
  const json* field(const char* key, bool required) {
    if (!status_) return nullptr;
    auto it = j_.find(key);
    if (it == j_.end() || it->is_null()) {
      if (required) fail(key, "is missing");
      return nullptr;
    }
    return &*it;
  }

  std::string fail(const char* key, const std::string& what) {
    if (status_) {
      status_ = Unexpected(ErrorCode::kCorrupt, std::string("message '") + type_ + "': field '" + key + "' " + what);
    }
    return {};
  }

  const json& j_;
  const char* type_;
  Status status_;
};

// ---- The owner's policy as JSON (protocol.h) ----
//
// Strict where messages are lenient: an unknown key is refused, because an
// agent that skipped a limit it did not know would not enforce it.

const char* tariff_kind_name(Tariff::Kind k) { return k == Tariff::Kind::kTimeOfUse ? "time_of_use" : "flat"; }

json tariff_entries_json(const std::vector<TariffEntry>& entries) {
  json list = json::array();
  for (const TariffEntry& e : entries) {
    list.push_back({{"start_minute_of_day", e.start_minute_of_day}, {"price_micros_per_kwh", e.price_micros_per_kwh}});
  }
  return list;
}

json policy_json(const OwnerPolicy& p) {
  json windows = json::array();
  for (const WeeklyWindow& w : p.allowed_windows) {
    windows.push_back({{"start_minute_of_week", w.start_minute_of_week}, {"end_minute_of_week", w.end_minute_of_week}});
  }
  json tariff = {{"kind", tariff_kind_name(p.tariff.kind)}};
  if (p.tariff.kind == Tariff::Kind::kFlat) {
    tariff["flat_micros_per_kwh"] = p.tariff.flat_micros_per_kwh;
  } else {
    tariff["weekday"] = tariff_entries_json(p.tariff.weekday);
    tariff["weekend"] = tariff_entries_json(p.tariff.weekend);
  }
  return {{"opted_in", p.opted_in},
          {"soc_floor_pct", p.soc_floor_pct},
          {"target_soc_pct", p.target_soc_pct},
          {"departures_minute_of_week", p.departures_minute_of_week},
          {"departure_margin_ms", p.departure_margin_ms},
          {"accelerator_temp_limit_c", p.accelerator_temp_limit_c},
          {"allowed_windows", std::move(windows)},
          {"price_cap_micros_per_kwh",
           p.price_cap_micros_per_kwh ? json(*p.price_cap_micros_per_kwh) : json(nullptr)},
          {"tariff", std::move(tariff)},
          {"wear_budget_hours_per_month", p.wear_budget_hours_per_month}};
}

Unexpected policy_error(ErrorCode code, const std::string& field, const std::string& what) {
  return Unexpected(code, "policy field '" + field + "' " + what);
}

// Every key of `obj` is one of `known`.
Status known_keys(const json& obj, std::initializer_list<std::string_view> known, const std::string& prefix) {
  for (auto it = obj.begin(); it != obj.end(); ++it) {
    if (std::find(known.begin(), known.end(), it.key()) == known.end()) {
      return policy_error(ErrorCode::kInvalidArgument, prefix + it.key().substr(0, 64), "is unknown");
    }
  }
  return {};
}

Result<double> policy_number(const json& v, const std::string& field) {
  if (!v.is_number()) return policy_error(ErrorCode::kInvalidArgument, field, "must be a number");
  const double d = v.get<double>();
  if (!std::isfinite(d)) return policy_error(ErrorCode::kInvalidArgument, field, "must be a finite number");
  return d;
}

Result<int64_t> policy_integer(const json& v, const std::string& field, int64_t min, int64_t max) {
  if (!v.is_number_integer()) return policy_error(ErrorCode::kInvalidArgument, field, "must be an integer");
  if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(max)) {
    return policy_error(ErrorCode::kOutOfRange, field,
                        "must be in [" + std::to_string(min) + ", " + std::to_string(max) + "]");
  }
  const int64_t x = v.get<int64_t>();
  if (x < min || x > max) {
    return policy_error(ErrorCode::kOutOfRange, field,
                        "must be in [" + std::to_string(min) + ", " + std::to_string(max) + "]");
  }
  return x;
}

Status policy_array(const json& v, const std::string& field, size_t max_count) {
  if (!v.is_array()) return policy_error(ErrorCode::kInvalidArgument, field, "must be an array");
  if (v.size() > max_count) {
    return policy_error(ErrorCode::kOutOfRange, field, "holds more than " + std::to_string(max_count) + " entries");
  }
  return {};
}

Result<std::vector<TariffEntry>> tariff_entries(const json& v, const std::string& field) {
  IF_RETURN_IF_ERROR(policy_array(v, field, kTariffEntriesPerDayMax));
  std::vector<TariffEntry> out;
  for (size_t i = 0; i < v.size(); ++i) {
    const std::string at = field + "[" + std::to_string(i) + "]";
    const json& e = v[i];
    if (!e.is_object()) return policy_error(ErrorCode::kInvalidArgument, at, "must be an object");
    IF_RETURN_IF_ERROR(known_keys(e, {"start_minute_of_day", "price_micros_per_kwh"}, at + "."));
    if (!e.contains("start_minute_of_day") || !e.contains("price_micros_per_kwh")) {
      return policy_error(ErrorCode::kInvalidArgument, at, "needs start_minute_of_day and price_micros_per_kwh");
    }
    auto start = policy_integer(e["start_minute_of_day"], at + ".start_minute_of_day", 0, kMinutesPerDay - 1);
    if (!start) return Unexpected(start.error());
    auto price = policy_integer(e["price_micros_per_kwh"], at + ".price_micros_per_kwh", -kPriceMicrosPerKwhAbsMax,
                                kPriceMicrosPerKwhAbsMax);
    if (!price) return Unexpected(price.error());
    out.push_back({static_cast<int>(*start), *price});
  }
  return out;
}

Result<Tariff> tariff_of(const json& v) {
  if (!v.is_object()) return policy_error(ErrorCode::kInvalidArgument, "tariff", "must be an object");
  IF_RETURN_IF_ERROR(known_keys(v, {"kind", "flat_micros_per_kwh", "weekday", "weekend"}, "tariff."));
  auto kind = v.find("kind");
  if (kind == v.end() || !kind->is_string() ||
      (kind->get_ref<const std::string&>() != "flat" && kind->get_ref<const std::string&>() != "time_of_use")) {
    return policy_error(ErrorCode::kInvalidArgument, "tariff.kind", "must be \"flat\" or \"time_of_use\"");
  }
  Tariff t;
  if (kind->get_ref<const std::string&>() == "flat") {
    if (v.contains("weekday") || v.contains("weekend")) {
      return policy_error(ErrorCode::kInvalidArgument, "tariff", "of kind flat has no weekday or weekend");
    }
    if (auto f = v.find("flat_micros_per_kwh"); f != v.end()) {
      auto price = policy_integer(*f, "tariff.flat_micros_per_kwh", -kPriceMicrosPerKwhAbsMax, kPriceMicrosPerKwhAbsMax);
      if (!price) return Unexpected(price.error());
      t = Tariff::flat(*price);
    }
    return t;
  }
  if (v.contains("flat_micros_per_kwh")) {
    return policy_error(ErrorCode::kInvalidArgument, "tariff", "of kind time_of_use has no flat_micros_per_kwh");
  }
  if (!v.contains("weekday") || !v.contains("weekend")) {
    return policy_error(ErrorCode::kInvalidArgument, "tariff", "of kind time_of_use needs weekday and weekend");
  }
  auto weekday = tariff_entries(v["weekday"], "tariff.weekday");
  if (!weekday) return Unexpected(weekday.error());
  auto weekend = tariff_entries(v["weekend"], "tariff.weekend");
  if (!weekend) return Unexpected(weekend.error());
  return Tariff::time_of_use(std::move(*weekday), std::move(*weekend));
}

Result<OwnerPolicy> policy_of(const json& j) {
  if (!j.is_object()) return Unexpected(ErrorCode::kCorrupt, "the policy must be a JSON object");
  IF_RETURN_IF_ERROR(known_keys(j,
                                {"opted_in", "soc_floor_pct", "target_soc_pct", "departures_minute_of_week",
                                 "departure_margin_ms", "accelerator_temp_limit_c", "allowed_windows",
                                 "price_cap_micros_per_kwh", "tariff", "wear_budget_hours_per_month"},
                                ""));
  OwnerPolicy p;
  auto number = [&](const char* key, double* out) -> Status {
    auto it = j.find(key);
    if (it == j.end()) return {};
    auto d = policy_number(*it, key);
    if (!d) return Unexpected(d.error());
    *out = *d;
    return {};
  };
  if (auto it = j.find("opted_in"); it != j.end()) {
    if (!it->is_boolean()) return policy_error(ErrorCode::kInvalidArgument, "opted_in", "must be true or false");
    p.opted_in = it->get<bool>();
  }
  IF_RETURN_IF_ERROR(number("soc_floor_pct", &p.soc_floor_pct));
  IF_RETURN_IF_ERROR(number("target_soc_pct", &p.target_soc_pct));
  IF_RETURN_IF_ERROR(number("accelerator_temp_limit_c", &p.accelerator_temp_limit_c));
  IF_RETURN_IF_ERROR(number("wear_budget_hours_per_month", &p.wear_budget_hours_per_month));
  if (auto it = j.find("departures_minute_of_week"); it != j.end()) {
    IF_RETURN_IF_ERROR(policy_array(*it, "departures_minute_of_week", kDeparturesMax));
    for (size_t i = 0; i < it->size(); ++i) {
      auto m = policy_integer((*it)[i], "departures_minute_of_week[" + std::to_string(i) + "]", 0, kMinutesPerWeek - 1);
      if (!m) return Unexpected(m.error());
      p.departures_minute_of_week.push_back(static_cast<int>(*m));
    }
  }
  if (auto it = j.find("departure_margin_ms"); it != j.end()) {
    auto ms = policy_integer(*it, "departure_margin_ms", 0, kDepartureMarginMsMax);
    if (!ms) return Unexpected(ms.error());
    p.departure_margin_ms = *ms;
  }
  if (auto it = j.find("allowed_windows"); it != j.end()) {
    IF_RETURN_IF_ERROR(policy_array(*it, "allowed_windows", kAllowedWindowsMax));
    p.allowed_windows.clear();
    for (size_t i = 0; i < it->size(); ++i) {
      const std::string at = "allowed_windows[" + std::to_string(i) + "]";
      const json& w = (*it)[i];
      if (!w.is_object()) return policy_error(ErrorCode::kInvalidArgument, at, "must be an object");
      IF_RETURN_IF_ERROR(known_keys(w, {"start_minute_of_week", "end_minute_of_week"}, at + "."));
      if (!w.contains("start_minute_of_week") || !w.contains("end_minute_of_week")) {
        return policy_error(ErrorCode::kInvalidArgument, at, "needs start_minute_of_week and end_minute_of_week");
      }
      auto start = policy_integer(w["start_minute_of_week"], at + ".start_minute_of_week", 0, kMinutesPerWeek);
      if (!start) return Unexpected(start.error());
      auto end = policy_integer(w["end_minute_of_week"], at + ".end_minute_of_week", 0, kMinutesPerWeek);
      if (!end) return Unexpected(end.error());
      p.allowed_windows.push_back({static_cast<int>(*start), static_cast<int>(*end)});
    }
  }
  if (auto it = j.find("price_cap_micros_per_kwh"); it != j.end() && !it->is_null()) {
    auto cap = policy_integer(*it, "price_cap_micros_per_kwh", -kPriceMicrosPerKwhAbsMax, kPriceMicrosPerKwhAbsMax);
    if (!cap) return Unexpected(cap.error());
    p.price_cap_micros_per_kwh = *cap;
  }
  if (auto it = j.find("tariff"); it != j.end()) {
    auto t = tariff_of(*it);
    if (!t) return Unexpected(t.error());
    p.tariff = std::move(*t);
  }
  if (auto st = p.validate(); !st) return Unexpected(st.error().code, "policy: " + st.error().message);
  return p;
}

// Every field of a receipt but its signature.
json receipt_fields(const ReceiptMessage& m) {
  return {{"vehicle_id", m.vehicle_id},
          {"job_id", m.job_id},
          {"attempt", m.attempt},
          {"model_id", m.model_id},
          {"model_sha256", m.model_sha256},
          {"outcome", m.outcome},
          {"input_tokens", m.input_tokens},
          {"output_tokens", m.output_tokens},
          {"output_sha256", m.output_sha256},
          {"energy_mwh", m.energy_mwh},
          {"accelerator_ms", m.accelerator_ms},
          {"wear_micro_hours", m.wear_micro_hours},
          {"started_at", m.started_at},
          {"ended_at", m.ended_at}};
}

struct Encoder {
  json operator()(const HelloMessage& m) const {
    json j = {{"vehicle_id", m.vehicle_id}, {"models_cached", m.models_cached}, {"memory_bytes", m.memory_bytes},
              {"tokens_per_second", m.tokens_per_second}, {"instance", m.instance}, {"embeddings", m.embeddings}};
    if (!m.public_key.empty()) j["public_key"] = m.public_key;
    if (!m.engine_build.empty()) j["engine_build"] = m.engine_build;
    if (m.utc_offset_minutes != 0) j["utc_offset_minutes"] = m.utc_offset_minutes;
    if (m.power_w > 0.0) j["power_w"] = m.power_w;
    return j;
  }
  json operator()(const StateMessage& m) const {
    return {{"vehicle_id", m.vehicle_id}, {"state", m.state}, {"eligible", m.eligible}, {"reasons", m.reasons},
            {"soc_pct", m.soc_pct}, {"accelerator_temp_c", m.accelerator_temp_c},
            {"departure_earliest", m.departure_earliest}, {"sent_at", m.sent_at}, {"job_id", m.job_id},
            {"attempt", m.attempt}, {"power_w", m.power_w}};
  }
  json operator()(const AssignMessage& m) const {
    const Sampling& s = m.sampling;
    json j = {{"job_id", m.job_id},           {"attempt", m.attempt},
            {"model_id", m.model_id},       {"prompt_ids", m.prompt_ids},
            {"produced_ids", m.produced_ids}, {"max_tokens", m.max_tokens},
            {"stop_ids", m.stop_ids},       {"lease_expires_at", m.lease_expires_at},
            {"kind", work_kind_name(m.kind)},
            {"sampling",
             {{"temperature", s.temperature}, {"top_k", s.top_k}, {"top_p", s.top_p}, {"min_p", s.min_p},
              {"repeat_penalty", s.repeat_penalty}, {"repeat_last_n", s.repeat_last_n},
              {"presence_penalty", s.presence_penalty}, {"frequency_penalty", s.frequency_penalty},
              {"seed", s.seed}}}};
    if (m.logprobs >= 0) j["logprobs"] = m.logprobs;
    return j;
  }
  json operator()(const CancelMessage& m) const { return {{"job_id", m.job_id}, {"attempt", m.attempt}}; }
  json operator()(const StartedMessage& m) const { return {{"job_id", m.job_id}, {"attempt", m.attempt}}; }
  json operator()(const ChunkMessage& m) const {
    json j = {{"job_id", m.job_id}, {"attempt", m.attempt}, {"first_index", m.first_index}, {"ids", m.ids}};
    if (!m.logprobs.empty()) {
      // A float widened to double prints as the shortest text that reads
      // back as that double, hence as the same float: bitwise on arrival.
      json list = json::array();
      for (const TokenLogprobs& t : m.logprobs) {
        json top = json::array();
        for (const TopLogprob& c : t.top) top.push_back(json::array({c.id, static_cast<double>(c.logprob)}));
        list.push_back({{"logprob", static_cast<double>(t.logprob)}, {"top", std::move(top)}});
      }
      j["logprobs"] = std::move(list);
    }
    return j;
  }
  json operator()(const DoneMessage& m) const {
    return {{"job_id", m.job_id}, {"attempt", m.attempt}, {"total_tokens", m.total_tokens},
            {"finish_reason", m.finish_reason}};
  }
  json operator()(const PreemptedMessage& m) const {
    return {{"job_id", m.job_id}, {"attempt", m.attempt}, {"total_tokens", m.total_tokens}, {"reason", m.reason}};
  }
  json operator()(const FailedMessage& m) const {
    return {{"job_id", m.job_id}, {"attempt", m.attempt}, {"error", m.error}};
  }
  json operator()(const EmbeddingMessage& m) const {
    return {{"job_id", m.job_id}, {"attempt", m.attempt}, {"tokens", m.tokens}, {"values", m.values}};
  }
  json operator()(const HelloPleaseMessage&) const { return json::object(); }
  json operator()(const PolicyMessage& m) const { return {{"vehicle_id", m.vehicle_id}, {"policy", policy_json(m.policy)}}; }
  json operator()(const ReceiptMessage& m) const {
    json j = receipt_fields(m);
    j["signature"] = m.signature;
    return j;
  }
};

struct TypeName {
  const char* operator()(const HelloMessage&) const { return "hello"; }
  const char* operator()(const StateMessage&) const { return "state"; }
  const char* operator()(const AssignMessage&) const { return "assign"; }
  const char* operator()(const CancelMessage&) const { return "cancel"; }
  const char* operator()(const StartedMessage&) const { return "started"; }
  const char* operator()(const ChunkMessage&) const { return "chunk"; }
  const char* operator()(const DoneMessage&) const { return "done"; }
  const char* operator()(const PreemptedMessage&) const { return "preempted"; }
  const char* operator()(const FailedMessage&) const { return "failed"; }
  const char* operator()(const EmbeddingMessage&) const { return "embedding"; }
  const char* operator()(const HelloPleaseMessage&) const { return "hello_please"; }
  const char* operator()(const ReceiptMessage&) const { return "receipt"; }
  const char* operator()(const PolicyMessage&) const { return "policy"; }
};

constexpr uint64_t kAttemptMax = 1u << 20;
constexpr int64_t kTimeMax = int64_t{1} << 52;  // ms: far beyond any real date

template <class M>
Result<Message> finish(Reader& r, M m) {
  if (!r.status()) return Unexpected(r.status().error());
  return Message(std::move(m));
}

}  // namespace

std::string receipt_signing_bytes(const ReceiptMessage& r) {
  // nlohmann::json objects keep their keys sorted, and dump() with no indent
  // writes no spaces: the same receipt always gives the same bytes.
  return "idlefleet-receipt-v1\n" + receipt_fields(r).dump(-1, ' ', false, json::error_handler_t::replace);
}

void hash_output_ids(Sha256Hasher* hasher, std::span<const int32_t> ids) {
  for (int32_t id : ids) {
    const auto u = static_cast<uint32_t>(id);
    const uint8_t le[4] = {static_cast<uint8_t>(u), static_cast<uint8_t>(u >> 8), static_cast<uint8_t>(u >> 16),
                           static_cast<uint8_t>(u >> 24)};
    hasher->update(std::span<const uint8_t>(le, 4));
  }
}

Sha256Digest embedding_output_sha256(std::span<const float> values) {
  Sha256Hasher h;
  for (float v : values) {
    int32_t bits = 0;
    std::memcpy(&bits, &v, 4);
    hash_output_ids(&h, std::span<const int32_t>(&bits, 1));
  }
  return h.finish();
}

std::string encode_policy(const OwnerPolicy& policy) { return policy_json(policy).dump(); }

Result<OwnerPolicy> decode_policy(std::string_view text) {
  if (text.size() > kPolicyBytesMax) {
    return Unexpected(ErrorCode::kOutOfRange, "a policy of " + std::to_string(text.size()) + " bytes exceeds " +
                                                  std::to_string(kPolicyBytesMax));
  }
  const json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Unexpected(ErrorCode::kCorrupt, "the policy is not valid JSON");
  return policy_of(j);
}

std::string up_subject(std::string_view vehicle_id) { return "idlefleet.v1.up." + std::string(vehicle_id); }
std::string down_subject(std::string_view vehicle_id) { return "idlefleet.v1.down." + std::string(vehicle_id); }
std::string vss_subject(std::string_view vehicle_id) { return "idlefleet.v1.vss." + std::string(vehicle_id); }
std::string sim_subject(std::string_view vehicle_id) { return "idlefleet.v1.sim." + std::string(vehicle_id); }

std::string_view vehicle_of_up_subject(std::string_view subject) {
  constexpr std::string_view kPrefix = "idlefleet.v1.up.";
  if (subject.substr(0, kPrefix.size()) != kPrefix) return {};
  const std::string_view id = subject.substr(kPrefix.size());
  return valid_vehicle_id(id) ? id : std::string_view{};
}

bool valid_vehicle_id(std::string_view id) {
  if (id.empty() || id.size() > kIdBytesMax) return false;
  for (char c : id) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

const char* work_kind_name(WorkKind k) { return k == WorkKind::kEmbed ? "embed" : "generate"; }

const char* message_type(const Message& m) { return std::visit(TypeName{}, m); }

std::string encode_message(const Message& m) {
  json j = std::visit(Encoder{}, m);
  j["v"] = kProtocolVersion;
  j["type"] = message_type(m);
  return j.dump();
}

Result<Message> decode_message(std::string_view text) {
  if (text.size() > kMessageBytesMax) {
    return Unexpected(ErrorCode::kOutOfRange,
                      "message of " + std::to_string(text.size()) + " bytes exceeds " + std::to_string(kMessageBytesMax));
  }
  const json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Unexpected(ErrorCode::kCorrupt, "message is not valid JSON");
  if (!j.is_object()) return Unexpected(ErrorCode::kCorrupt, "message is not a JSON object");
  auto v = j.find("v");
  if (v == j.end() || !v->is_number_integer()) return Unexpected(ErrorCode::kCorrupt, "message has no version 'v'");
  if (v->get<int64_t>() != kProtocolVersion) {
    return Unexpected(ErrorCode::kUnsupported, "message version " + v->dump() + " is not supported (expected " +
                                                   std::to_string(kProtocolVersion) + ")");
  }
  auto t = j.find("type");
  if (t == j.end() || !t->is_string()) return Unexpected(ErrorCode::kCorrupt, "message has no 'type'");
  const std::string type = t->get<std::string>();
  Reader r(j, type.size() <= 32 ? type.c_str() : "?");

  if (type == "hello") {
    HelloMessage m;
    m.vehicle_id = r.string("vehicle_id", kIdBytesMax);
    m.models_cached = r.strings("models_cached", kModelsMax, kIdBytesMax);
    m.memory_bytes = r.uint("memory_bytes", uint64_t{1} << 50);
    m.tokens_per_second = r.number("tokens_per_second", 0.0, 1e9, false);
    m.instance = r.string("instance", kIdBytesMax, false);
    m.embeddings = r.boolean("embeddings", false);
    m.public_key = r.string("public_key", 64, false);
    if (r.status() && !m.public_key.empty() &&
        (m.public_key.size() != 64 || m.public_key.find_first_not_of("0123456789abcdef") != std::string::npos)) {
      return Unexpected(ErrorCode::kCorrupt, "message 'hello': field 'public_key' must be 64 lower-case hex digits");
    }
    m.engine_build = r.string("engine_build", kEngineBuildBytesMax, false);
    constexpr std::string_view kBuildChars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._+-";
    if (r.status() && m.engine_build.find_first_not_of(kBuildChars) != std::string::npos) {
      return Unexpected(ErrorCode::kCorrupt, "message 'hello': field 'engine_build' must be of [A-Za-z0-9._+-]");
    }
    m.utc_offset_minutes = static_cast<int32_t>(
        r.integer("utc_offset_minutes", kUtcOffsetMinutesMin, kUtcOffsetMinutesMax, false));
    m.power_w = r.number("power_w", 0.0, 1e6, false);
    return finish(r, std::move(m));
  }
  if (type == "state") {
    StateMessage m;
    m.vehicle_id = r.string("vehicle_id", kIdBytesMax);
    m.state = r.string("state", 32);
    m.eligible = r.boolean("eligible");
    m.reasons = r.strings("reasons", kReasonsMax, kTextBytesMax);
    m.soc_pct = r.number("soc_pct", 0.0, 100.0);
    m.accelerator_temp_c = r.number("accelerator_temp_c", -100.0, 300.0, false);
    m.departure_earliest = r.integer("departure_earliest", 0, kTimeMax, false);
    m.sent_at = r.integer("sent_at", 0, kTimeMax);
    m.job_id = r.string("job_id", kIdBytesMax, false);
    m.attempt = static_cast<uint32_t>(r.uint("attempt", kAttemptMax, false));
    m.power_w = r.number("power_w", 0.0, 1e6, false);
    return finish(r, std::move(m));
  }
  if (type == "assign") {
    AssignMessage m;
    m.job_id = r.string("job_id", kIdBytesMax);
    m.attempt = static_cast<uint32_t>(r.uint("attempt", kAttemptMax));
    m.model_id = r.string("model_id", kIdBytesMax);
    m.prompt_ids = r.ids("prompt_ids", kTokenIdsMax);
    m.produced_ids = r.ids("produced_ids", kTokenIdsMax, false);
    m.max_tokens = r.uint("max_tokens", kTokenIdsMax);
    m.stop_ids = r.ids("stop_ids", 64, false);
    m.lease_expires_at = r.integer("lease_expires_at", 0, kTimeMax);
    if (j.contains("logprobs") && !j["logprobs"].is_null()) {
      m.logprobs = static_cast<int32_t>(r.integer("logprobs", -1, kTopLogprobsMax, false));
    }
    const std::string kind = r.string("kind", 16, false);
    if (r.status() && !kind.empty() && kind != "generate" && kind != "embed") {
      return Unexpected(ErrorCode::kCorrupt, "message 'assign': field 'kind' must be \"generate\" or \"embed\"");
    }
    m.kind = kind == "embed" ? WorkKind::kEmbed : WorkKind::kGenerate;
    if (r.status() && m.kind == WorkKind::kEmbed && !m.produced_ids.empty()) {
      return Unexpected(ErrorCode::kCorrupt, "message 'assign': an embed assignment has no 'produced_ids'");
    }
    if (const json* s = r.object("sampling")) {
      Reader sr(*s, "assign.sampling");
      m.sampling.temperature = sr.number("temperature", 0.0, 100.0, false, 0.0);
      m.sampling.top_k = static_cast<int32_t>(sr.integer("top_k", 0, 1 << 20, false));
      m.sampling.top_p = sr.number("top_p", 0.0, 1.0, false, 1.0);
      m.sampling.min_p = sr.number("min_p", 0.0, 1.0, false, 0.0);
      m.sampling.repeat_penalty = sr.number("repeat_penalty", 1e-6, 100.0, false, 1.0);
      m.sampling.repeat_last_n = static_cast<int32_t>(sr.integer("repeat_last_n", 0, 1 << 20, false));
      if (s->find("repeat_last_n") == s->end()) m.sampling.repeat_last_n = 64;
      m.sampling.presence_penalty = sr.number("presence_penalty", -2.0, 2.0, false, 0.0);
      m.sampling.frequency_penalty = sr.number("frequency_penalty", -2.0, 2.0, false, 0.0);
      m.sampling.seed = sr.uint("seed", UINT64_MAX, false);
      if (!sr.status()) return Unexpected(sr.status().error());
    }
    if (r.status() && m.prompt_ids.empty()) return Unexpected(ErrorCode::kCorrupt, "message 'assign': field 'prompt_ids' is empty");
    if (r.status() && m.prompt_ids.size() + m.produced_ids.size() > kTokenIdsMax) {
      return Unexpected(ErrorCode::kOutOfRange, "message 'assign': prompt and produced ids exceed " + std::to_string(kTokenIdsMax));
    }
    return finish(r, std::move(m));
  }
  if (type == "hello_please") return finish(r, HelloPleaseMessage{});
  if (type == "policy") {
    PolicyMessage m;
    m.vehicle_id = r.string("vehicle_id", kIdBytesMax);
    const json* p = r.object("policy");
    if (!r.status()) return Unexpected(r.status().error());
    if (p == nullptr) return Unexpected(ErrorCode::kCorrupt, "message 'policy': field 'policy' is missing");
    auto policy = policy_of(*p);
    if (!policy) return Unexpected(policy.error().code, "message 'policy': " + policy.error().message);
    m.policy = std::move(*policy);
    return finish(r, std::move(m));
  }
  if (type == "receipt") {
    ReceiptMessage m;
    m.vehicle_id = r.string("vehicle_id", kIdBytesMax);
    m.job_id = r.string("job_id", kIdBytesMax);
    m.attempt = static_cast<uint32_t>(r.uint("attempt", kAttemptMax));
    m.model_id = r.string("model_id", kIdBytesMax);
    m.model_sha256 = r.string("model_sha256", 64, false);
    m.outcome = r.string("outcome", kOutcomeBytesMax);
    m.input_tokens = r.uint("input_tokens", kTokenIdsMax);
    m.output_tokens = r.uint("output_tokens", kTokenIdsMax);
    m.output_sha256 = r.string("output_sha256", 64);
    m.energy_mwh = r.uint("energy_mwh", kReceiptEnergyMwhMax);
    m.accelerator_ms = r.uint("accelerator_ms", kReceiptAcceleratorMsMax);
    m.wear_micro_hours = r.uint("wear_micro_hours", kReceiptWearMicroHoursMax);
    m.started_at = r.integer("started_at", 0, kTimeMax);
    m.ended_at = r.integer("ended_at", 0, kTimeMax);
    m.signature = r.string("signature", 128, false);
    if (!r.status()) return Unexpected(r.status().error());
    auto hex_of = [](const std::string& s, size_t n) {
      return s.size() == n && std::all_of(s.begin(), s.end(), [](char c) {
               return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
             });
    };
    if (!m.model_sha256.empty() && !hex_of(m.model_sha256, 64)) {
      return Unexpected(ErrorCode::kCorrupt, "message 'receipt': field 'model_sha256' must be 64 lower-case hex digits");
    }
    if (!hex_of(m.output_sha256, 64)) {
      return Unexpected(ErrorCode::kCorrupt, "message 'receipt': field 'output_sha256' must be 64 lower-case hex digits");
    }
    if (!m.signature.empty() && !hex_of(m.signature, 128)) {
      return Unexpected(ErrorCode::kCorrupt, "message 'receipt': field 'signature' must be 128 lower-case hex digits");
    }
    if (m.outcome != "done" && m.outcome != "preempted" && m.outcome != "failed" && m.outcome != "cancelled" &&
        m.outcome != "embedding") {
      return Unexpected(ErrorCode::kCorrupt,
                        "message 'receipt': field 'outcome' must be done, preempted, failed, cancelled or embedding");
    }
    if (m.ended_at < m.started_at) {
      return Unexpected(ErrorCode::kCorrupt, "message 'receipt': 'ended_at' is before 'started_at'");
    }
    return finish(r, std::move(m));
  }
  if (type == "cancel" || type == "started") {
    const std::string job_id = r.string("job_id", kIdBytesMax);
    const auto attempt = static_cast<uint32_t>(r.uint("attempt", kAttemptMax));
    if (type == "cancel") return finish(r, CancelMessage{job_id, attempt});
    return finish(r, StartedMessage{job_id, attempt});
  }
  if (type == "chunk") {
    ChunkMessage m;
    m.job_id = r.string("job_id", kIdBytesMax);
    m.attempt = static_cast<uint32_t>(r.uint("attempt", kAttemptMax));
    m.first_index = r.uint("first_index", kTokenIdsMax);
    m.ids = r.ids("ids", kChunkTokensMax);
    m.logprobs = r.logprobs("logprobs", m.ids.size());
    if (r.status() && !m.logprobs.empty() && m.ids.size() > kChunkLogprobTokensMax) {
      return Unexpected(ErrorCode::kCorrupt, std::string("message 'chunk': field 'ids' holds more than ")
                                                 .append(std::to_string(kChunkLogprobTokensMax))
                                                 .append(" ids with logprobs"));
    }
    return finish(r, std::move(m));
  }
  if (type == "done") {
    DoneMessage m;
    m.job_id = r.string("job_id", kIdBytesMax);
    m.attempt = static_cast<uint32_t>(r.uint("attempt", kAttemptMax));
    m.total_tokens = r.uint("total_tokens", kTokenIdsMax);
    m.finish_reason = r.string("finish_reason", 16);
    if (r.status() && m.finish_reason != "stop" && m.finish_reason != "length") {
      return Unexpected(ErrorCode::kCorrupt, "message 'done': field 'finish_reason' must be \"stop\" or \"length\"");
    }
    return finish(r, std::move(m));
  }
  if (type == "preempted") {
    PreemptedMessage m;
    m.job_id = r.string("job_id", kIdBytesMax);
    m.attempt = static_cast<uint32_t>(r.uint("attempt", kAttemptMax));
    m.total_tokens = r.uint("total_tokens", kTokenIdsMax);
    m.reason = r.string("reason", kTextBytesMax, false);
    return finish(r, std::move(m));
  }
  if (type == "failed") {
    FailedMessage m;
    m.job_id = r.string("job_id", kIdBytesMax);
    m.attempt = static_cast<uint32_t>(r.uint("attempt", kAttemptMax));
    m.error = r.string("error", kTextBytesMax);
    return finish(r, std::move(m));
  }
  if (type == "embedding") {
    EmbeddingMessage m;
    m.job_id = r.string("job_id", kIdBytesMax);
    m.attempt = static_cast<uint32_t>(r.uint("attempt", kAttemptMax));
    m.tokens = r.uint("tokens", kTokenIdsMax);
    m.values = r.floats("values", kEmbeddingValuesMax);
    return finish(r, std::move(m));
  }
  return Unexpected(ErrorCode::kUnsupported,
                    "message type '" + (type.size() <= 32 ? type : type.substr(0, 32) + "...") + "' is unknown");
}

}  // namespace idlefleet::core
