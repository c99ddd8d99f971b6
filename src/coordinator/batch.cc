#include "coordinator/batch.h"

#include <unordered_set>

namespace idlefleet::coordinator {

using nlohmann::json;

namespace {

ApiError bad(std::string param, std::string message, std::string code = "") {
  ApiError e;
  e.status = 400;
  e.param = std::move(param);
  e.message = std::move(message);
  e.code = std::move(code);
  return e;
}

json null_or(const std::string& s) { return s.empty() ? json(nullptr) : json(s); }
json time_or_null(int64_t t) { return t == 0 ? json(nullptr) : json(t); }

// An excerpt of client text for a message, cut to a bound.
std::string excerpt(std::string_view s) { return std::string(s.substr(0, 64)); }

}  // namespace

json file_json(const FileObject& f) {
  return {{"id", f.id},           {"object", "file"},        {"bytes", f.bytes},
          {"created_at", f.created_at}, {"filename", f.filename}, {"purpose", f.purpose},
          {"status", "processed"}, {"status_details", nullptr}};
}

bool batch_endpoint_served(std::string_view endpoint) {
  return endpoint == "/v1/chat/completions" || endpoint == "/v1/completions" || endpoint == "/v1/embeddings";
}

json batch_json(const BatchObject& b) {
  json errors = nullptr;
  if (!b.failure.empty()) {
    errors = {{"object", "list"},
              {"data", json::array({{{"code", "invalid_file"}, {"message", b.failure}, {"param", nullptr},
                                     {"line", nullptr}}})}};
  }
  return {{"id", b.id},
          {"object", "batch"},
          {"endpoint", b.endpoint},
          {"errors", errors},
          {"input_file_id", b.input_file_id},
          {"completion_window", b.completion_window},
          {"status", b.status},
          {"output_file_id", null_or(b.output_file_id)},
          {"error_file_id", null_or(b.error_file_id)},
          {"created_at", b.created_at},
          {"in_progress_at", time_or_null(b.in_progress_at)},
          {"expires_at", time_or_null(b.expires_at)},
          {"finalizing_at", time_or_null(b.finalizing_at)},
          {"completed_at", time_or_null(b.completed_at)},
          {"failed_at", time_or_null(b.failed_at)},
          {"expired_at", time_or_null(b.expired_at)},
          {"cancelling_at", time_or_null(b.cancelling_at)},
          {"cancelled_at", time_or_null(b.cancelled_at)},
          {"request_counts", {{"total", b.total}, {"completed", b.completed}, {"failed", b.failed}}},
          {"metadata", b.metadata}};
}

Result<BatchObject> batch_from_json(const json& j) {
  BatchObject b;
  try {
    b.id = j.at("id").get<std::string>();
    b.endpoint = j.at("endpoint").get<std::string>();
    b.input_file_id = j.at("input_file_id").get<std::string>();
    b.completion_window = j.at("completion_window").get<std::string>();
    b.status = j.at("status").get<std::string>();
    auto text = [&](const char* key) { return j.at(key).is_null() ? std::string() : j.at(key).get<std::string>(); };
    auto time = [&](const char* key) { return j.at(key).is_null() ? int64_t{0} : j.at(key).get<int64_t>(); };
    b.output_file_id = text("output_file_id");
    b.error_file_id = text("error_file_id");
    if (j.at("errors").is_object()) b.failure = j.at("errors").at("data").at(0).at("message").get<std::string>();
    b.created_at = j.at("created_at").get<int64_t>();
    b.in_progress_at = time("in_progress_at");
    b.expires_at = time("expires_at");
    b.finalizing_at = time("finalizing_at");
    b.completed_at = time("completed_at");
    b.failed_at = time("failed_at");
    b.expired_at = time("expired_at");
    b.cancelling_at = time("cancelling_at");
    b.cancelled_at = time("cancelled_at");
    const json& c = j.at("request_counts");
    b.total = c.at("total").get<uint64_t>();
    b.completed = c.at("completed").get<uint64_t>();
    b.failed = c.at("failed").get<uint64_t>();
    b.metadata = j.at("metadata");
  } catch (const json::exception& e) {
    return Unexpected(ErrorCode::kCorrupt, std::string("stored batch: ") + e.what());
  }
  return b;
}

std::variant<BatchCreate, ApiError> parse_batch_create(std::string_view body) {
  const json j = json::parse(body, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return bad("", "The body must be a JSON object");
  BatchCreate c;
  if (!j.contains("input_file_id") || !j["input_file_id"].is_string() || j["input_file_id"].get<std::string>().empty()) {
    return bad("input_file_id", "'input_file_id' must be a file id");
  }
  c.input_file_id = j["input_file_id"].get<std::string>();
  if (c.input_file_id.size() > 128) return bad("input_file_id", "'input_file_id' is too long");
  if (!j.contains("endpoint") || !j["endpoint"].is_string()) return bad("endpoint", "'endpoint' must be a string");
  c.endpoint = j["endpoint"].get<std::string>();
  if (!batch_endpoint_served(c.endpoint)) {
    return bad("endpoint", "'endpoint' must be /v1/chat/completions, /v1/completions or /v1/embeddings, not '" +
                               excerpt(c.endpoint) + "'");
  }
  if (!j.contains("completion_window") || !j["completion_window"].is_string() ||
      j["completion_window"].get<std::string>() != "24h") {
    return bad("completion_window", "'completion_window' must be \"24h\"");
  }
  if (j.contains("metadata") && !j["metadata"].is_null()) {
    const json& m = j["metadata"];
    if (!m.is_object() || m.size() > kBatchMetadataPairsMax) {
      return bad("metadata", "'metadata' must be an object of at most 16 string values");
    }
    for (const auto& [k, v] : m.items()) {
      if (k.size() > kBatchMetadataKeyBytesMax || !v.is_string() ||
          v.get<std::string>().size() > kBatchMetadataValueBytesMax) {
        return bad("metadata", "'metadata' keys are at most 64 bytes and values strings of at most 512");
      }
    }
    c.metadata = m;
  }
  return c;
}

std::variant<std::vector<BatchLine>, ApiError> parse_batch_input(std::string_view content, std::string_view endpoint,
                                                                 const ApiLimits& limits) {
  std::vector<BatchLine> lines;
  std::unordered_set<std::string> seen;
  const bool chat = endpoint == "/v1/chat/completions";
  uint64_t number = 0;
  size_t at = 0;
  while (at < content.size()) {
    size_t end = content.find('\n', at);
    if (end == std::string_view::npos) end = content.size();
    std::string_view text = content.substr(at, end - at);
    at = end + 1;
    ++number;
    if (!text.empty() && text.back() == '\r') text.remove_suffix(1);
    if (text.find_first_not_of(" \t") == std::string_view::npos) continue;  // blank lines are not requests
    if (lines.size() == kBatchLinesMax) {
      return bad("input_file_id", "the input file has more than " + std::to_string(kBatchLinesMax) + " requests",
                 "invalid_file");
    }
    BatchLine line;
    line.line = number;
    auto fail = [&](std::string message) {
      line.error = bad("", "line " + std::to_string(number) + ": " + std::move(message), "invalid_request");
      lines.push_back(std::move(line));
    };
    const json j = json::parse(text, nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
      fail("not a JSON object");
      continue;
    }
    if (j.contains("custom_id") && j["custom_id"].is_string()) line.custom_id = j["custom_id"].get<std::string>();
    if (line.custom_id.empty() || line.custom_id.size() > kCustomIdBytesMax) {
      line.custom_id.clear();
      fail("'custom_id' must be a string of 1 to " + std::to_string(kCustomIdBytesMax) + " bytes");
      continue;
    }
    if (!seen.insert(line.custom_id).second) {
      fail("the custom_id '" + excerpt(line.custom_id) + "' was used by an earlier line");
      continue;
    }
    if (!j.contains("method") || j["method"] != "POST") {
      fail("'method' must be \"POST\"");
      continue;
    }
    if (!j.contains("url") || j["url"] != endpoint) {
      fail("'url' must be the batch's endpoint, " + std::string(endpoint));
      continue;
    }
    if (!j.contains("body") || !j["body"].is_object()) {
      fail("'body' must be a JSON object");
      continue;
    }
    json body = j["body"];
    if (body.contains("stream") && body["stream"] == true) {
      fail("'stream' cannot be true in a batch");
      continue;
    }
    line.body = body.dump();
    if (endpoint == "/v1/embeddings") {
      if (auto parsed = parse_embedding_request(line.body, limits); std::holds_alternative<ApiError>(parsed)) {
        line.error = std::get<ApiError>(parsed);
        line.error->message = "line " + std::to_string(number) + ": " + line.error->message;
        line.body.clear();
      }
      lines.push_back(std::move(line));
      continue;
    }
    auto parsed = parse_completion_request(line.body, chat, limits);
    if (auto* r = std::get_if<CompletionRequest>(&parsed); r != nullptr && r->logprobs >= 0) {
      // A result is rebuilt from the job's stored tokens, and logprobs are
      // not stored: refused rather than silently left out.
      ApiError e;
      e.param = "logprobs";
      e.message = "logprobs are not supported in batches yet";
      parsed = e;
    }
    if (auto* e = std::get_if<ApiError>(&parsed)) {
      line.error = *e;
      line.error->message = "line " + std::to_string(number) + ": " + e->message;
      line.body.clear();
    }
    lines.push_back(std::move(line));
  }
  if (lines.empty()) return bad("input_file_id", "the input file has no requests", "invalid_file");
  return lines;
}

std::string batch_output_line(const std::string& line_id, const std::string& custom_id, const std::string& request_id,
                              const std::string& response_body) {
  json body = json::parse(response_body, nullptr, false);
  if (body.is_discarded()) body = nullptr;
  const json line = {{"id", line_id},
                     {"custom_id", custom_id},
                     {"response", {{"status_code", 200}, {"request_id", request_id}, {"body", body}}},
                     {"error", nullptr}};
  return line.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
}

std::string batch_error_line(const std::string& line_id, const std::string& custom_id, const ApiError& error) {
  const json line = {{"id", line_id},
                     {"custom_id", custom_id.empty() ? json(nullptr) : json(custom_id)},
                     {"response", nullptr},
                     {"error", {{"code", error.code.empty() ? std::string("invalid_request") : error.code},
                                {"message", error.message}}}};
  return line.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
}

}  // namespace idlefleet::coordinator
