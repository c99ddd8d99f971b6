// libFuzzer target for the OpenAI request parsers: whatever a client POSTs to
// /v1/completions, /v1/chat/completions or /v1/embeddings (and any query string) must parse or be refused with an
// error whose body is valid JSON, never crash or throw. What parses must
// hold every bound the parser promises, and the responses built from it
// (whose text may be any bytes) must be valid JSON too.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "coordinator/openai.h"
#include "transport/query.h"

namespace {

using namespace idlefleet::coordinator;
using nlohmann::json;

void require(bool ok) {
  if (!ok) std::abort();
}

bool valid_json(const std::string& text) { return !json::parse(text, nullptr, false).is_discarded(); }

bool valid_event(const std::string& event) {
  return event.rfind("data: ", 0) == 0 && event.size() >= 8 && event.substr(event.size() - 2) == "\n\n" &&
         valid_json(event.substr(6, event.size() - 8));
}

void check(std::string_view body, bool chat, const ApiLimits& limits) {
  auto r = parse_completion_request(body, chat, limits);
  if (const ApiError* e = std::get_if<ApiError>(&r)) {
    require(e->status == 400 || e->status == 413);
    require(e->status != 413 || body.size() > limits.body_bytes_max);
    require(!e->message.empty());
    require(valid_json(error_body(*e)));
    return;
  }
  const CompletionRequest& c = std::get<CompletionRequest>(r);
  require(c.chat == chat);
  require(!c.model.empty() && c.model.size() <= idlefleet::core::kIdBytesMax);
  require(!c.max_tokens || (*c.max_tokens >= 1 && *c.max_tokens <= limits.max_tokens_limit));
  require(c.sampling.temperature >= 0.0 && c.sampling.temperature <= 2.0);
  require(c.sampling.top_p > 0.0 && c.sampling.top_p <= 1.0);
  require(!c.include_usage || c.stream);
  if (chat) {
    require(!c.messages.empty() && c.messages.size() <= kChatMessagesMax);
    for (const ChatMessage& m : c.messages) require(m.role == "system" || m.role == "user" || m.role == "assistant");
    require(c.prompt == render_chat_prompt(c.messages));
  } else {
    require(c.messages.empty());
    require(c.prompt.size() <= kPromptBytesMax);
  }
  // The prompt stands in for generated text, which may be any bytes.
  ResponseMeta meta{"cmpl-fuzz", 1, c.model, "fp"};
  require(valid_json(completion_response(meta, chat, c.prompt, "stop", {1, 2})));
  require(valid_event(completion_chunk_event(meta, chat, c.prompt, std::nullopt, true)));
  require(valid_event(completion_chunk_event(meta, chat, c.prompt, std::string("length"), false)));
  require(valid_event(usage_event(meta, chat, {1, 2})));
}

void check_embedding(std::string_view body, const ApiLimits& limits) {
  auto r = parse_embedding_request(body, limits);
  if (const ApiError* e = std::get_if<ApiError>(&r)) {
    require(e->status == 400 || e->status == 413);
    require(!e->message.empty());
    require(valid_json(error_body(*e)));
    return;
  }
  const EmbeddingRequest& q = std::get<EmbeddingRequest>(r);
  require(!q.model.empty() && q.model.size() <= idlefleet::core::kIdBytesMax);
  require(!q.inputs.empty() && q.inputs.size() <= kEmbeddingInputsMax);
  for (const EmbeddingInput& in : q.inputs) {
    require(in.tokens ? (!in.ids.empty() && in.text.empty()) : (!in.text.empty() && in.ids.empty()));
    require(in.text.size() <= kPromptBytesMax);
    for (int32_t id : in.ids) require(id >= 0 && id <= idlefleet::core::kTokenIdMax);
  }
  require(!q.dimensions || *q.dimensions >= 1);
  // Any finite floats make a valid response.
  std::vector<std::vector<float>> vectors(q.inputs.size(), std::vector<float>{0.5f, -1e-30f, 3.4e38f});
  require(valid_json(embedding_response(q.model, vectors, q.base64, 7)));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  ApiLimits limits;
  limits.max_tokens_limit = 4096;
  limits.body_bytes_max = 1u << 16;
  check(body, false, limits);
  check(body, true, limits);
  check_embedding(body, limits);
  // The same bytes as a query string: pairs within the bound, or a clear error.
  auto query = idlefleet::transport::parse_query(body, 16);
  require(query ? query->size() <= 16 : !query.error().message.empty());
  return 0;
}
