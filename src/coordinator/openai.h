// The OpenAI-compatible request and response shapes of the client API's
// core: POST /v1/completions, POST /v1/chat/completions (streamed with
// server-sent events, and not), POST /v1/embeddings, GET /v1/models, and
// OpenAI's error object.
//
// Pure functions of their inputs (the server does the I/O), so every shape
// is tested and the request parser is fuzzed. Parsing trusts nothing: the
// body is bounded, every field is checked for type and range, and an error
// names the parameter, as OpenAI's do ({"error": {"message", "type",
// "param", "code"}}). Parameters we do not implement yet (n > 1, tools,
// echo, suffix) are refused with a clear message rather than silently
// ignored; unknown extra fields are ignored, as clients send them freely.
//
// Logprobs: a chat request's `logprobs: true` with `top_logprobs` 0..20, or a
// completion request's `logprobs` 0..5 (the number of alternatives), become
// CompletionRequest::logprobs; responses then carry each token's text (its
// bytes, which may be part of a UTF-8 character, shown as text), log-
// probability and alternatives, in OpenAI's chat or legacy shape. -inf is
// shown as -9999, as OpenAI does.
//
// Chat prompts: the server renders messages with the model's own template
// (GGUF tokenizer.chat_template, engine/chat_template.h) when it has one;
// otherwise with the fallback in render_chat_prompt(), whose result the
// parser leaves in `prompt`.
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "core/protocol.h"
#include "engine/chat_template.h"
#include "engine/tokenizer.h"

namespace idlefleet::coordinator {

inline constexpr size_t kChatMessagesMax = 256;
inline constexpr size_t kPromptBytesMax = 1u << 20;
inline constexpr size_t kEmbeddingInputsMax = 2048;  // OpenAI's own limit

struct ApiError {
  int status = 400;
  std::string type = "invalid_request_error";
  std::string message;
  std::string param;  // "" = null
  std::string code;   // "" = null
};

// {"error": {...}}
std::string error_body(const ApiError& e);

struct ChatMessage {
  std::string role;  // system, user, assistant (developer is read as system)
  std::string content;
};

struct CompletionRequest {
  bool chat = false;
  std::string model;
  std::string prompt;                 // completions: as given; chat: rendered
  std::vector<ChatMessage> messages;  // chat only
  std::optional<uint64_t> max_tokens;
  core::Sampling sampling;
  bool seed_given = false;
  bool stream = false;
  bool include_usage = false;         // stream_options.include_usage
  std::vector<std::string> stop;      // up to engine::kStopStringsMax, checked
  // Alternatives to report per token with its logprob (chat: top_logprobs,
  // 0..kChatTopLogprobsMax; completions: logprobs, 0..kCompletionLogprobsMax);
  // -1: no logprobs.
  int32_t logprobs = -1;
  // An extension (vLLM's name): the end-of-sequence token does not end the
  // generation, which runs to max_tokens (or a stop string). For load tests
  // and the simulator's live check, which need outputs of a known length.
  bool ignore_eos = false;
};

// OpenAI's bounds: chat's top_logprobs and the legacy completions' logprobs.
inline constexpr int32_t kChatTopLogprobsMax = 20;
inline constexpr int32_t kCompletionLogprobsMax = 5;

// One token in a response's logprobs: its bytes and its log-probability.
struct TokenLogprob {
  std::string token;  // the token's bytes (engine::Tokenizer::token_bytes)
  float logprob = 0.0f;
};
// The logprobs of one generated token, for the response.
struct LogprobsEntry {
  TokenLogprob chosen;
  std::vector<TokenLogprob> top;  // most likely first
  uint64_t text_offset = 0;       // completions: byte offset of the token in the generated text
};

// The JSON number shown for a logprob: -9999 for -inf (or below), else the
// shortest decimal that reads back as the same float.
double api_logprob(float logprob);

struct ApiLimits {
  uint64_t max_tokens_limit = 4096;
  size_t body_bytes_max = 1u << 20;
};

// Parses a /v1/completions (chat = false) or /v1/chat/completions body.
std::variant<CompletionRequest, ApiError> parse_completion_request(std::string_view body, bool chat,
                                                                   const ApiLimits& limits);

// The fallback chat template: each message's content in order, system
// messages first as given, separated by blank lines; a base model simply
// continues the text. Deterministic, so the same messages give the same prompt.
std::string render_chat_prompt(const std::vector<ChatMessage>& messages);

// The prompt's token ids, as `idlefleet run` would have them: a completion's
// prompt encoded with BOS when the model adds one; a chat's messages rendered
// by the model's template (`tmpl`, when it has one: its control texts become
// control tokens, and a message that contains one is refused, so that no
// client can forge a turn) or else by the fallback in req.prompt. An empty
// prompt is BOS alone.
std::variant<std::vector<int32_t>, ApiError> prompt_token_ids(const engine::Tokenizer& tok,
                                                              const engine::ChatTemplate* tmpl,
                                                              const CompletionRequest& req);

struct Usage {
  uint64_t prompt_tokens = 0;
  uint64_t completion_tokens = 0;
};

struct ResponseMeta {
  std::string id;       // cmpl-... / chatcmpl-...
  int64_t created = 0;  // seconds since the epoch
  std::string model;
  std::string system_fingerprint;
};

// A whole (non-streamed) response. `logprobs`: null when the request did not
// ask for them (the choice's logprobs is then null), else every token's.
std::string completion_response(const ResponseMeta& meta, bool chat, const std::string& text,
                                const std::string& finish_reason, const Usage& usage,
                                const std::vector<LogprobsEntry>* logprobs = nullptr);

// One server-sent event ("data: {...}\n\n"). A chat stream's first event
// carries the role; `finish_reason` is set on the last content event only.
// `logprobs`: those of the tokens whose text this event carries (null: the
// choice's logprobs is null).
std::string completion_chunk_event(const ResponseMeta& meta, bool chat, const std::string& text,
                                   const std::optional<std::string>& finish_reason, bool first,
                                   const std::vector<LogprobsEntry>* logprobs = nullptr);
// The usage event (stream_options.include_usage): empty choices, usage set.
std::string usage_event(const ResponseMeta& meta, bool chat, const Usage& usage);
inline constexpr std::string_view kDoneEvent = "data: [DONE]\n\n";

// ---- POST /v1/embeddings ------------------------------------------------------
//
// {model, input, encoding_format?, dimensions?, user?}. `input` is a string,
// an array of strings, an array of token ids (one input), or an array of
// arrays of token ids: 1..kEmbeddingInputsMax inputs, none empty (a text of
// at most kPromptBytesMax bytes; ids in [0, core::kTokenIdMax], which the
// server checks against the model's vocabulary, with its context length).
// encoding_format is "float" (default) or "base64"; `dimensions`, an integer
// >= 1, is checked by the server against the model's width (we do not
// shorten vectors); `user` must be a string and is otherwise ignored.

// One input: a text, or token ids taken as given (no BOS added).
struct EmbeddingInput {
  std::string text;
  std::vector<int32_t> ids;
  bool tokens = false;  // ids, not text
};

struct EmbeddingRequest {
  std::string model;
  std::vector<EmbeddingInput> inputs;
  bool base64 = false;  // encoding_format "base64"
  std::optional<uint64_t> dimensions;
  std::string user;
};

std::variant<EmbeddingRequest, ApiError> parse_embedding_request(std::string_view body, const ApiLimits& limits);

// {"object":"list","data":[{"object":"embedding","index":i,"embedding":...}],
//  "model":...,"usage":{"prompt_tokens":N,"total_tokens":N}}, vectors[i]
// being input i's. Floats are written as `idlefleet embed` writes them (the
// shortest text that reads back as the same float); base64 is
// embedding_base64() of each vector.
std::string embedding_response(const std::string& model, const std::vector<std::vector<float>>& vectors, bool base64,
                               uint64_t prompt_tokens);
// The float32 values, little-endian, 4 bytes each, in base64 (RFC 4648,
// standard alphabet, padded): OpenAI's encoding_format "base64".
std::string embedding_base64(std::span<const float> values);

// GET /v1/models and /v1/models/{id}.
struct ModelCard {
  std::string id;
  int64_t created = 0;
};
std::string models_list_body(const std::vector<ModelCard>& models);
std::string model_body(const ModelCard& model);

}  // namespace idlefleet::coordinator
