// The Files and Batches APIs' shapes (OpenAI's), as pure functions: the file
// and batch objects, the validation of a batch's JSONL input, and the lines
// of its output and error files. The server (server.cc) stores them and runs
// the batch's requests as low-priority jobs.
//
// A batch input is JSONL, one request per line:
//   {"custom_id": "r1", "method": "POST", "url": "/v1/chat/completions", "body": {...}}
// A line that is not valid (not JSON, no custom_id, a custom_id used before,
// another method or url, a body the endpoint refuses) fails that line only:
// it goes to the error file with its reason, and the other lines run. The
// whole batch fails only when the file itself is unusable: empty, over
// kBatchLinesMax lines, or not one of the endpoints served.
//
// Output lines (output file: the requests that ran; error file: the rest):
//   {"id": "batch_req_...", "custom_id": "r1",
//    "response": {"status_code": 200, "request_id": "<job>", "body": {...completion...}}, "error": null}
//   {"id": "batch_req_...", "custom_id": "r2", "response": null,
//    "error": {"code": "invalid_request", "message": "..."}}
//
// Thread-safety: pure functions over values.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "coordinator/openai.h"

namespace idlefleet::coordinator {

inline constexpr size_t kBatchLinesMax = 50'000;        // OpenAI's limit per batch
inline constexpr size_t kCustomIdBytesMax = 512;
inline constexpr size_t kFileNameBytesMax = 255;
inline constexpr size_t kBatchMetadataPairsMax = 16;    // as OpenAI's metadata
inline constexpr size_t kBatchMetadataKeyBytesMax = 64;
inline constexpr size_t kBatchMetadataValueBytesMax = 512;
inline constexpr int64_t kBatchWindowSeconds = 24 * 3600;  // "24h", the only window

struct FileObject {
  std::string id;  // file-...
  std::string purpose;
  std::string filename;
  uint64_t bytes = 0;
  int64_t created_at = 0;  // seconds since the epoch
};
nlohmann::json file_json(const FileObject& f);

// The endpoints a batch may name.
bool batch_endpoint_served(std::string_view endpoint);

// A batch as the API shows it. Times are seconds since the epoch, 0 = null.
struct BatchObject {
  std::string id;  // batch_...
  std::string endpoint;
  std::string input_file_id;
  std::string completion_window = "24h";
  std::string status = "validating";  // validating, failed, in_progress, finalizing, completed,
                                      // expired, cancelling, cancelled
  std::string output_file_id, error_file_id;  // "" = null
  std::string failure;                        // why the batch failed (its errors object)
  int64_t created_at = 0, in_progress_at = 0, expires_at = 0, finalizing_at = 0, completed_at = 0, failed_at = 0,
          expired_at = 0, cancelling_at = 0, cancelled_at = 0;
  uint64_t total = 0, completed = 0, failed = 0;
  nlohmann::json metadata = nullptr;

  bool final() const { return status == "failed" || status == "completed" || status == "expired" || status == "cancelled"; }
};
nlohmann::json batch_json(const BatchObject& b);
// From batch_json()'s output (as stored). Errors name the field.
Result<BatchObject> batch_from_json(const nlohmann::json& j);

// POST /v1/batches: the body's fields, checked.
struct BatchCreate {
  std::string input_file_id;
  std::string endpoint;
  nlohmann::json metadata = nullptr;
};
std::variant<BatchCreate, ApiError> parse_batch_create(std::string_view body);

// One line of a batch's input.
struct BatchLine {
  uint64_t line = 0;                // 1-based
  std::string custom_id;            // "" when the line had none
  std::string body;                 // the request body (JSON text) when the line is valid
  std::optional<ApiError> error;    // why the line fails, if it does
};
// Splits and checks the input (see the file comment). `parse` checks a body
// as the endpoint would (parse_completion_request for the completion ones).
std::variant<std::vector<BatchLine>, ApiError> parse_batch_input(std::string_view content, std::string_view endpoint,
                                                                 const ApiLimits& limits);

// Output and error file lines (each ends with '\n').
std::string batch_output_line(const std::string& line_id, const std::string& custom_id, const std::string& request_id,
                              const std::string& response_body);
std::string batch_error_line(const std::string& line_id, const std::string& custom_id, const ApiError& error);

}  // namespace idlefleet::coordinator
