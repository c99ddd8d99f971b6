// The OpenAI request parser and response shapes, as pure functions: every
// parameter of the wrong type or out of range is refused with a 400 naming
// it, parameters we do not implement are refused rather than ignored, an
// oversized body is a 413, and every response carries exactly OpenAI's
// documented fields (https://platform.openai.com/docs/api-reference: the
// completion, chat completion, chat completion chunk, model and error
// objects). Error bodies must be valid JSON whatever the input held.
#include "coordinator/openai.h"

#include "engine/model_format.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <set>
#include <string>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

namespace idlefleet::coordinator::openai_test {
namespace {

using nlohmann::json;

ApiLimits limits() {
  ApiLimits l;
  l.max_tokens_limit = 4096;
  l.body_bytes_max = 1u << 20;
  return l;
}

std::variant<CompletionRequest, ApiError> parse(const json& body, bool chat, const ApiLimits& l = limits()) {
  return parse_completion_request(body.dump(), chat, l);
}

json completion(json extra) {
  json j = {{"model", "stories260K"}, {"prompt", "Once upon a time"}};
  for (auto& [k, v] : extra.items()) j[k] = v;
  return j;
}

json chat(json extra) {
  json j = {{"model", "stories260K"}, {"messages", json::array({{{"role", "user"}, {"content", "Hi"}}})}};
  for (auto& [k, v] : extra.items()) j[k] = v;
  return j;
}

std::set<std::string> keys(const json& j) {
  std::set<std::string> out;
  for (auto& [k, v] : j.items()) out.insert(k);
  return out;
}

// Checks that `r` is an error of `status` naming `param`, and that its body
// is OpenAI's error object.
void expect_error(const std::variant<CompletionRequest, ApiError>& r, int status, const std::string& param,
                  const std::string& what) {
  const ApiError* e = std::get_if<ApiError>(&r);
  ASSERT_NE(e, nullptr) << what << ": accepted";
  EXPECT_EQ(e->status, status) << what << ": " << e->message;
  EXPECT_EQ(e->param, param) << what << ": " << e->message;
  EXPECT_EQ(e->type, "invalid_request_error") << what;
  EXPECT_FALSE(e->message.empty()) << what;
  const json body = json::parse(error_body(*e), nullptr, false);
  ASSERT_FALSE(body.is_discarded()) << what;
  ASSERT_EQ(keys(body), (std::set<std::string>{"error"})) << what;
  EXPECT_EQ(keys(body["error"]), (std::set<std::string>{"message", "type", "param", "code"})) << what;
  if (param.empty()) {
    EXPECT_TRUE(body["error"]["param"].is_null()) << what;
  } else {
    EXPECT_EQ(body["error"]["param"], param) << what;
  }
}

CompletionRequest accepted(const std::variant<CompletionRequest, ApiError>& r) {
  if (const ApiError* e = std::get_if<ApiError>(&r)) ADD_FAILURE() << "refused: " << e->message;
  const CompletionRequest* c = std::get_if<CompletionRequest>(&r);
  return c != nullptr ? *c : CompletionRequest{};
}

TEST(OpenAiRequest, AMinimalCompletionTakesOpenAisDefaults) {
  const CompletionRequest r = accepted(parse(completion({}), false));
  EXPECT_FALSE(r.chat);
  EXPECT_EQ(r.model, "stories260K");
  EXPECT_EQ(r.prompt, "Once upon a time");
  EXPECT_FALSE(r.max_tokens.has_value());
  EXPECT_EQ(r.sampling.temperature, 1.0);
  EXPECT_EQ(r.sampling.top_p, 1.0);
  EXPECT_FALSE(r.seed_given);
  EXPECT_FALSE(r.stream);
  EXPECT_FALSE(r.include_usage);
}

TEST(OpenAiRequest, EveryParameterIsRead) {
  const CompletionRequest r = accepted(parse(completion({{"max_tokens", 77},
                                                          {"temperature", 0.5},
                                                          {"top_p", 0.9},
                                                          {"seed", 12345},
                                                          {"stream", true},
                                                          {"stream_options", {{"include_usage", true}}},
                                                          {"n", 1},
                                                          {"logprobs", nullptr},
                                                          {"echo", false},
                                                          {"presence_penalty", 0},
                                                          {"frequency_penalty", 0.0},
                                                          {"user", "someone"},
                                                          {"ignore_eos", true},
                                                          {"an_unknown_field", {1, 2, 3}}}),
                                              false));
  EXPECT_EQ(r.max_tokens, 77u);
  EXPECT_TRUE(r.ignore_eos);
  EXPECT_FALSE(accepted(parse(completion({}), false)).ignore_eos);
  EXPECT_FALSE(accepted(parse(chat({{"ignore_eos", false}}), true)).ignore_eos);
  EXPECT_EQ(r.sampling.presence_penalty, 0.0);
  EXPECT_EQ(r.sampling.frequency_penalty, 0.0);
  EXPECT_EQ(r.sampling.temperature, 0.5);
  EXPECT_EQ(r.sampling.top_p, 0.9);
  EXPECT_EQ(r.sampling.seed, 12345u);
  EXPECT_TRUE(r.seed_given);
  EXPECT_TRUE(r.stream);
  EXPECT_TRUE(r.include_usage);

  // max_completion_tokens is the chat API's newer name.
  EXPECT_EQ(accepted(parse(chat({{"max_completion_tokens", 9}}), true)).max_tokens, 9u);
  // A one-element prompt array is one prompt; seeds take the whole 64 bits.
  EXPECT_EQ(accepted(parse(completion({{"prompt", {"only"}}}), false)).prompt, "only");
  EXPECT_EQ(accepted(parse(completion({{"seed", UINT64_MAX}}), false)).sampling.seed, UINT64_MAX);
  EXPECT_EQ(accepted(parse(completion({{"seed", -1}}), false)).sampling.seed, UINT64_MAX);
  // An empty prompt is allowed (the model starts from BOS).
  EXPECT_EQ(accepted(parse(completion({{"prompt", ""}}), false)).prompt, "");
}

TEST(OpenAiRequest, ChatMessagesAreRenderedSystemFirst) {
  const json messages = json::array({{{"role", "user"}, {"content", "Tell me a story."}},
                                     {{"role", "developer"}, {"content", "Be brief."}},
                                     {{"role", "assistant"}, {"content", ""}},
                                     {{"role", "user"},
                                      {"content", json::array({{{"type", "text"}, {"text", "About "}},
                                                               {{"type", "text"}, {"text", "a cat."}}})}}});
  const CompletionRequest r = accepted(parse(chat({{"messages", messages}}), true));
  EXPECT_TRUE(r.chat);
  ASSERT_EQ(r.messages.size(), 4u);
  EXPECT_EQ(r.messages[1].role, "system");  // developer is read as system
  EXPECT_EQ(r.messages[3].content, "About a cat.");
  EXPECT_EQ(r.prompt, "Be brief.\n\nTell me a story.\n\nAbout a cat.");
  EXPECT_EQ(r.prompt, render_chat_prompt(r.messages));
}

TEST(OpenAiRequest, BodiesThatAreNotARequestObjectAreRefused) {
  for (const char* body : {"", "{", "not json", "[]", "42", "\"a string\"", "null", "true", "{\"model\":}",
                           "{\"model\":\"m\",\"prompt\":\"\xff\xfe\"}"}) {
    expect_error(parse_completion_request(body, false, limits()), 400, "", std::string("body '") + body + "'");
    expect_error(parse_completion_request(body, true, limits()), 400, "", std::string("chat body '") + body + "'");
  }
}

TEST(OpenAiRequest, AnOversizedBodyIs413) {
  ApiLimits l = limits();
  l.body_bytes_max = 64;
  const std::string body = completion({{"prompt", std::string(100, 'a')}}).dump();
  expect_error(parse_completion_request(body, false, l), 413, "", "oversized body");
  expect_error(parse_completion_request(body, true, l), 413, "", "oversized chat body");
}

TEST(OpenAiRequest, EveryParameterOfTheWrongTypeOrRangeIsRefusedByName) {
  struct Case {
    const char* param;
    json value;
  };
  const std::vector<Case> common = {
      {"model", nullptr},          {"model", 3},
      {"model", ""},               {"model", json::array({"stories260K"})},
      {"model", std::string(129, 'm')},
      {"max_tokens", "10"},        {"max_tokens", 0},
      {"max_tokens", -5},          {"max_tokens", 1.5},
      {"max_tokens", 4097},        {"max_tokens", UINT64_MAX},
      {"max_tokens", true},        {"max_completion_tokens", "3"},
      {"max_completion_tokens", 0},
      {"temperature", "hot"},      {"temperature", -0.1},
      {"temperature", 2.01},       {"temperature", true},
      {"top_p", "all"},            {"top_p", 0},
      {"top_p", 1.5},              {"top_p", -1},
      {"seed", "42"},              {"seed", 4.2},
      {"seed", false},             {"stream", "true"},
      {"stream", 1},               {"stream_options", "usage"},
      {"stream_options", json::array()},
      {"ignore_eos", "yes"},       {"ignore_eos", 1},
  };
  for (const Case& c : common) {
    json body = completion({});
    body[c.param] = c.value;
    if (c.value.is_null()) body.erase(c.param);  // "model": missing
    expect_error(parse(body, false), 400, c.param, std::string("completion ") + c.param + "=" + c.value.dump());
    json chat_body = chat({});
    chat_body[c.param] = c.value;
    if (c.value.is_null()) chat_body.erase(c.param);
    expect_error(parse(chat_body, true), 400, c.param, std::string("chat ") + c.param + "=" + c.value.dump());
  }
  // stream_options needs stream: true; include_usage is a boolean.
  expect_error(parse(completion({{"stream_options", {{"include_usage", true}}}}), false), 400, "stream_options",
               "stream_options without stream");
  expect_error(parse(completion({{"stream", true}, {"stream_options", {{"include_usage", "yes"}}}}), false), 400,
               "stream_options.include_usage", "include_usage of the wrong type");
}

TEST(OpenAiRequest, PromptsAndMessagesOfTheWrongShapeAreRefused) {
  for (const json& prompt : {json(nullptr), json(7), json::array(), json::array({"a", "b"}), json::array({1, 2}),
                             json::object(), json(true)}) {
    json body = completion({});
    body["prompt"] = prompt;
    expect_error(parse(body, false), 400, "prompt", "prompt " + prompt.dump());
  }
  json missing = completion({});
  missing.erase("prompt");
  expect_error(parse(missing, false), 400, "prompt", "no prompt");

  for (const json& messages : {json(nullptr), json("hello"), json::array(), json::object(), json(1)}) {
    json body = chat({});
    body["messages"] = messages;
    expect_error(parse(body, true), 400, "messages", "messages " + messages.dump());
  }
  struct Case {
    json message;
    const char* param;
  };
  const std::vector<Case> bad = {
      {json("hi"), "messages[0].role"},
      {{{"content", "hi"}}, "messages[0].role"},
      {{{"role", 1}, {"content", "hi"}}, "messages[0].role"},
      {{{"role", "tool"}, {"content", "hi"}}, "messages[0].role"},
      {{{"role", "function"}, {"content", "hi"}}, "messages[0].role"},
      {{{"role", "user"}}, "messages[0].content"},
      {{{"role", "user"}, {"content", nullptr}}, "messages[0].content"},
      {{{"role", "user"}, {"content", 5}}, "messages[0].content"},
      {{{"role", "user"}, {"content", json::object()}}, "messages[0].content"},
      {{{"role", "user"}, {"content", json::array({"text"})}}, "messages[0].content"},
      {{{"role", "user"}, {"content", json::array({{{"type", "image_url"}, {"image_url", "x"}}})}}, "messages[0].content"},
      {{{"role", "user"}, {"content", json::array({{{"type", "text"}, {"text", 3}}})}}, "messages[0].content"},
  };
  for (const Case& c : bad) {
    expect_error(parse(chat({{"messages", json::array({c.message})}}), true), 400, c.param, c.message.dump());
  }
  // The second message is named by its index.
  expect_error(parse(chat({{"messages", json::array({{{"role", "user"}, {"content", "a"}}, {{"role", "user"}}})}}), true),
               400, "messages[1].content", "second message without content");
  // Too many messages, and too many bytes in all.
  json many = json::array();
  for (size_t i = 0; i <= kChatMessagesMax; ++i) many.push_back({{"role", "user"}, {"content", "x"}});
  expect_error(parse(chat({{"messages", many}}), true), 400, "messages", "too many messages");
  ApiLimits big = limits();
  big.body_bytes_max = 4u << 20;
  const std::string half(kPromptBytesMax / 2 + 1, 'a');
  expect_error(parse(chat({{"messages", json::array({{{"role", "user"}, {"content", half}},
                                                     {{"role", "user"}, {"content", half}}})}}),
                     true, big),
               400, "messages", "messages too long");
  expect_error(parse(completion({{"prompt", std::string(kPromptBytesMax + 1, 'a')}}), false, big), 400, "prompt",
               "prompt too long");
}

TEST(OpenAiRequest, UnimplementedParametersAreRefusedNotIgnored) {
  struct Case {
    const char* param;
    json value;
    bool completion_only = false;
  };
  const std::vector<Case> cases = {
      {"n", 2},
      {"n", 0},
      {"n", "1"},
      {"stop", 5},
      {"stop", ""},
      {"stop", json::array({"a", "b", "c", "d", "e"})},
      {"stop", json::array({"a", 1})},
      {"stop", std::string(65, 'x')},
      {"tools", json::array({{{"type", "function"}}})},
      {"functions", json::array()},
      {"tool_choice", "auto"},
      {"suffix", "end"},
      {"best_of", 2},
      {"logit_bias", {{"50256", -100}}},
      {"response_format", {{"type", "json_object"}}},
      {"presence_penalty", 2.5},
      {"frequency_penalty", -2.01},
      {"presence_penalty", "0"},
      {"echo", true, true},
  };
  for (const Case& c : cases) {
    json body = completion({});
    body[c.param] = c.value;
    expect_error(parse(body, false), 400, c.param, std::string("completion ") + c.param + "=" + c.value.dump());
    if (c.completion_only) continue;
    json chat_body = chat({});
    chat_body[c.param] = c.value;
    expect_error(parse(chat_body, true), 400, c.param, std::string("chat ") + c.param + "=" + c.value.dump());
  }
  // Stop strings: one, or up to four.
  EXPECT_EQ(accepted(parse(completion({{"stop", "\n"}}), false)).stop, std::vector<std::string>{"\n"});
  EXPECT_EQ(accepted(parse(chat({{"stop", json::array({"The end", "x"})}}), true)).stop,
            (std::vector<std::string>{"The end", "x"}));
  // Penalties within OpenAI's range are taken.
  const auto penalised = accepted(parse(completion({{"presence_penalty", 0.5}, {"frequency_penalty", -2}}), false));
  EXPECT_EQ(penalised.sampling.presence_penalty, 0.5);
  EXPECT_EQ(penalised.sampling.frequency_penalty, -2.0);
  // The ones that mean "off" are accepted.
  accepted(parse(completion({{"n", 1}, {"logprobs", false}, {"echo", false}, {"stop", nullptr}}), false));
}

TEST(OpenAiRequest, LogprobsAreReadAndCheckedAsOpenAiDefinesThem) {
  // Chat: logprobs true/false, top_logprobs 0..20 only with logprobs true.
  EXPECT_EQ(accepted(parse(chat({}), true)).logprobs, -1);
  EXPECT_EQ(accepted(parse(chat({{"logprobs", false}}), true)).logprobs, -1);
  EXPECT_EQ(accepted(parse(chat({{"logprobs", true}}), true)).logprobs, 0);
  EXPECT_EQ(accepted(parse(chat({{"logprobs", true}, {"top_logprobs", 0}}), true)).logprobs, 0);
  EXPECT_EQ(accepted(parse(chat({{"logprobs", true}, {"top_logprobs", 3}}), true)).logprobs, 3);
  EXPECT_EQ(accepted(parse(chat({{"logprobs", true}, {"top_logprobs", 20}}), true)).logprobs, 20);
  EXPECT_EQ(accepted(parse(chat({{"logprobs", true}, {"top_logprobs", nullptr}}), true)).logprobs, 0);
  expect_error(parse(chat({{"logprobs", 3}}), true), 400, "logprobs", "chat logprobs=3");
  expect_error(parse(chat({{"logprobs", "true"}}), true), 400, "logprobs", "chat logprobs='true'");
  expect_error(parse(chat({{"top_logprobs", 2}}), true), 400, "top_logprobs", "top_logprobs without logprobs");
  expect_error(parse(chat({{"logprobs", false}, {"top_logprobs", 2}}), true), 400, "top_logprobs",
               "top_logprobs with logprobs false");
  for (const json& bad : {json(21), json(-1), json(2.5), json("2"), json(true)}) {
    expect_error(parse(chat({{"logprobs", true}, {"top_logprobs", bad}}), true), 400, "top_logprobs",
                 "top_logprobs=" + bad.dump());
  }
  // Completions: logprobs 0..5 is the number of alternatives; false is off.
  EXPECT_EQ(accepted(parse(completion({}), false)).logprobs, -1);
  EXPECT_EQ(accepted(parse(completion({{"logprobs", nullptr}}), false)).logprobs, -1);
  EXPECT_EQ(accepted(parse(completion({{"logprobs", false}}), false)).logprobs, -1);
  EXPECT_EQ(accepted(parse(completion({{"logprobs", 0}}), false)).logprobs, 0);
  EXPECT_EQ(accepted(parse(completion({{"logprobs", 5}}), false)).logprobs, 5);
  for (const json& bad : {json(6), json(-1), json(true), json(1.5), json("2")}) {
    expect_error(parse(completion({{"logprobs", bad}}), false), 400, "logprobs", "completion logprobs=" + bad.dump());
  }
  expect_error(parse(completion({{"logprobs", 2}, {"top_logprobs", 2}}), false), 400, "top_logprobs",
               "completion top_logprobs");
}

// Any text a client sends may end up in an error message (cut to a bound);
// the body must still be valid JSON, never an exception (which the server
// would turn into a 500).
TEST(OpenAiRequest, ErrorBodiesAreValidJsonWhateverTheInput) {
  // A role whose 32-byte excerpt ends inside a multi-byte character.
  const std::string role = std::string(31, 'r') + "\xc3\xa9";
  auto r = parse(chat({{"messages", json::array({{{"role", role}, {"content", "hi"}}})}}), true);
  const ApiError* e = std::get_if<ApiError>(&r);
  ASSERT_NE(e, nullptr);
  std::string body;
  ASSERT_NO_THROW(body = error_body(*e));
  EXPECT_FALSE(json::parse(body, nullptr, false).is_discarded()) << body;

  ApiError raw;
  raw.message = "no route for GET /\xff\xfe";
  raw.param = "\x80";
  raw.code = "x";
  ASSERT_NO_THROW(body = error_body(raw));
  const json j = json::parse(body, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << body;
  EXPECT_EQ(j["error"]["code"], "x");
  EXPECT_EQ(j["error"]["type"], "invalid_request_error");
}

// ---- Responses ---------------------------------------------------------------

ResponseMeta meta(bool chat) {
  ResponseMeta m;
  m.id = chat ? "chatcmpl-0123456789ab" : "cmpl-0123456789ab";
  m.created = 1795773600;
  m.model = "stories260K";
  m.system_fingerprint = "fp_test";
  return m;
}

json event_json(const std::string& event) {
  EXPECT_EQ(event.rfind("data: ", 0), 0u) << event;
  EXPECT_GE(event.size(), 8u);
  EXPECT_EQ(event.substr(event.size() - 2), "\n\n") << event;
  const json j = json::parse(event.substr(6, event.size() - 8), nullptr, false);
  EXPECT_FALSE(j.is_discarded()) << event;
  return j;
}

const std::set<std::string> kTopKeys = {"id", "object", "created", "model", "system_fingerprint", "choices"};

TEST(OpenAiResponse, ACompletionHasOpenAisFields) {
  const json j = json::parse(completion_response(meta(false), false, "Once upon", "length", {4, 2}));
  std::set<std::string> want = kTopKeys;
  want.insert("usage");
  EXPECT_EQ(keys(j), want);
  EXPECT_EQ(j["id"], "cmpl-0123456789ab");
  EXPECT_EQ(j["object"], "text_completion");
  EXPECT_EQ(j["created"], 1795773600);
  EXPECT_EQ(j["model"], "stories260K");
  EXPECT_EQ(j["system_fingerprint"], "fp_test");
  ASSERT_EQ(j["choices"].size(), 1u);
  const json& c = j["choices"][0];
  EXPECT_EQ(keys(c), (std::set<std::string>{"text", "index", "logprobs", "finish_reason"}));
  EXPECT_EQ(c["text"], "Once upon");
  EXPECT_EQ(c["index"], 0);
  EXPECT_TRUE(c["logprobs"].is_null());
  EXPECT_EQ(c["finish_reason"], "length");
  EXPECT_EQ(j["usage"], json({{"prompt_tokens", 4}, {"completion_tokens", 2}, {"total_tokens", 6}}));
}

TEST(OpenAiResponse, AChatCompletionHasOpenAisFields) {
  const json j = json::parse(completion_response(meta(true), true, "Hello!", "stop", {3, 5}));
  std::set<std::string> want = kTopKeys;
  want.insert("usage");
  EXPECT_EQ(keys(j), want);
  EXPECT_EQ(j["object"], "chat.completion");
  ASSERT_EQ(j["choices"].size(), 1u);
  const json& c = j["choices"][0];
  EXPECT_EQ(keys(c), (std::set<std::string>{"index", "message", "logprobs", "finish_reason"}));
  EXPECT_EQ(c["message"], json({{"role", "assistant"}, {"content", "Hello!"}, {"refusal", nullptr}}));
  EXPECT_EQ(c["finish_reason"], "stop");
  EXPECT_EQ(j["usage"]["total_tokens"], 8);
}

TEST(OpenAiResponse, GeneratedTextThatIsNotUtf8StillMakesValidJson) {
  // A byte-fallback tokenizer can emit half a character at the end.
  const std::string text = "ok \xe2\x82";
  EXPECT_FALSE(json::parse(completion_response(meta(false), false, text, "length", {1, 1}), nullptr, false).is_discarded());
  EXPECT_FALSE(event_json(completion_chunk_event(meta(true), true, text, std::nullopt, false)).is_discarded());
}

TEST(OpenAiResponse, ChatChunksCarryTheRoleFirstAndTheFinishReasonLast) {
  const json first = event_json(completion_chunk_event(meta(true), true, "", std::nullopt, true));
  EXPECT_EQ(keys(first), kTopKeys);
  EXPECT_EQ(first["object"], "chat.completion.chunk");
  ASSERT_EQ(first["choices"].size(), 1u);
  EXPECT_EQ(keys(first["choices"][0]), (std::set<std::string>{"index", "delta", "logprobs", "finish_reason"}));
  EXPECT_EQ(first["choices"][0]["delta"], json({{"role", "assistant"}, {"content", ""}}));
  EXPECT_TRUE(first["choices"][0]["finish_reason"].is_null());

  const json middle = event_json(completion_chunk_event(meta(true), true, " cat", std::nullopt, false));
  EXPECT_EQ(middle["choices"][0]["delta"], json({{"content", " cat"}}));
  EXPECT_TRUE(middle["choices"][0]["finish_reason"].is_null());

  const json last = event_json(completion_chunk_event(meta(true), true, "", std::string("stop"), false));
  EXPECT_EQ(last["choices"][0]["delta"], json::object());
  EXPECT_EQ(last["choices"][0]["finish_reason"], "stop");

  const json tail = event_json(completion_chunk_event(meta(true), true, ".", std::string("length"), false));
  EXPECT_EQ(tail["choices"][0]["delta"], json({{"content", "."}}));
  EXPECT_EQ(tail["choices"][0]["finish_reason"], "length");
}

TEST(OpenAiResponse, CompletionChunksCarryText) {
  const json j = event_json(completion_chunk_event(meta(false), false, " upon", std::nullopt, false));
  EXPECT_EQ(keys(j), kTopKeys);
  EXPECT_EQ(j["object"], "text_completion");
  EXPECT_EQ(keys(j["choices"][0]), (std::set<std::string>{"text", "index", "logprobs", "finish_reason"}));
  EXPECT_EQ(j["choices"][0]["text"], " upon");
  const json last = event_json(completion_chunk_event(meta(false), false, "", std::string("stop"), false));
  EXPECT_EQ(last["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(last["choices"][0]["text"], "");
}

TEST(OpenAiResponse, TheUsageEventHasNoChoices) {
  for (bool is_chat : {false, true}) {
    const json j = event_json(usage_event(meta(is_chat), is_chat, {7, 9}));
    std::set<std::string> want = kTopKeys;
    want.insert("usage");
    EXPECT_EQ(keys(j), want);
    EXPECT_EQ(j["object"], is_chat ? "chat.completion.chunk" : "text_completion");
    EXPECT_EQ(j["choices"], json::array());
    EXPECT_EQ(j["usage"], json({{"prompt_tokens", 7}, {"completion_tokens", 9}, {"total_tokens", 16}}));
  }
  EXPECT_EQ(kDoneEvent, "data: [DONE]\n\n");
}

std::vector<LogprobsEntry> sample_logprobs() {
  std::vector<LogprobsEntry> entries(2);
  entries[0].chosen = {"Once", -0.25f};
  entries[0].top = {{"Once", -0.25f}, {"One", -1.5f}};
  entries[0].text_offset = 0;
  entries[1].chosen = {"\xe2\x82", -std::numeric_limits<float>::infinity()};
  entries[1].top = {{"\xe2\x82", -1e30f}, {"", -3.0f}, {"", -4.0f}};
  entries[1].text_offset = 4;
  return entries;
}

TEST(OpenAiResponse, ChatLogprobsHaveOpenAisShape) {
  const auto entries = sample_logprobs();
  const json j = json::parse(completion_response(meta(true), true, "Once\xe2\x82", "stop", {3, 2}, &entries));
  const json& lp = j["choices"][0]["logprobs"];
  EXPECT_EQ(keys(lp), (std::set<std::string>{"content", "refusal"}));
  EXPECT_TRUE(lp["refusal"].is_null());
  ASSERT_EQ(lp["content"].size(), 2u);
  const json& first = lp["content"][0];
  EXPECT_EQ(keys(first), (std::set<std::string>{"token", "logprob", "bytes", "top_logprobs"}));
  EXPECT_EQ(first["token"], "Once");
  EXPECT_EQ(first["logprob"], -0.25);
  EXPECT_EQ(first["bytes"], json({79, 110, 99, 101}));
  ASSERT_EQ(first["top_logprobs"].size(), 2u);
  EXPECT_EQ(first["top_logprobs"][1], json({{"token", "One"}, {"logprob", -1.5}, {"bytes", {79, 110, 101}}}));
  // Half a character: the text is replaced, the bytes are exact; -inf and
  // what float cannot tell from it are -9999.
  const json& second = lp["content"][1];
  EXPECT_EQ(second["bytes"], json({0xe2, 0x82}));
  EXPECT_EQ(second["logprob"], -9999.0);
  EXPECT_EQ(second["top_logprobs"][0]["logprob"], -9999.0);
  // Without logprobs asked, null as before; a streamed chunk carries its tokens'.
  EXPECT_TRUE(json::parse(completion_response(meta(true), true, "x", "stop", {1, 1}))["choices"][0]["logprobs"].is_null());
  const std::vector<LogprobsEntry> one(entries.begin(), entries.begin() + 1);
  const json chunk = event_json(completion_chunk_event(meta(true), true, "Once", std::nullopt, false, &one));
  EXPECT_EQ(chunk["choices"][0]["logprobs"]["content"].size(), 1u);
  EXPECT_EQ(chunk["choices"][0]["logprobs"]["content"][0]["token"], "Once");
}

TEST(OpenAiResponse, CompletionLogprobsHaveTheLegacyShape) {
  const auto entries = sample_logprobs();
  const json j = json::parse(completion_response(meta(false), false, "Once\xe2\x82", "length", {3, 2}, &entries));
  const json& lp = j["choices"][0]["logprobs"];
  EXPECT_EQ(keys(lp), (std::set<std::string>{"tokens", "token_logprobs", "top_logprobs", "text_offset"}));
  EXPECT_EQ(lp["tokens"][0], "Once");
  EXPECT_EQ(lp["token_logprobs"], json({-0.25, -9999.0}));
  EXPECT_EQ(lp["top_logprobs"][0], json({{"Once", -0.25}, {"One", -1.5}}));
  // Alternatives with the same text keep the likelier.
  EXPECT_EQ(lp["top_logprobs"][1][""], -3.0);
  EXPECT_EQ(lp["text_offset"], json({0, 4}));
  const json chunk = event_json(completion_chunk_event(meta(false), false, "Once", std::nullopt, false, &entries));
  EXPECT_EQ(chunk["choices"][0]["logprobs"]["tokens"].size(), 2u);
}

TEST(OpenAiResponse, LogprobsAreShownShortAndReadBackExactly) {
  EXPECT_EQ(json(api_logprob(-0.1f)).dump(), "-0.1");
  EXPECT_EQ(api_logprob(-std::numeric_limits<float>::infinity()), -9999.0);
  EXPECT_EQ(api_logprob(std::numeric_limits<float>::quiet_NaN()), -9999.0);
  EXPECT_EQ(api_logprob(-1e20f), -9999.0);
  uint32_t bits = 0x3f800000u;
  for (int i = 0; i < 200000; ++i) {
    bits = bits * 1664525u + 1013904223u;
    float f;
    const uint32_t negative = bits | 0x80000000u;
    std::memcpy(&f, &negative, sizeof f);
    if (!std::isfinite(f) || f <= -9999.0f) continue;
    const double shown = api_logprob(f);
    ASSERT_EQ(static_cast<float>(json::parse(json(shown).dump()).get<double>()), f) << shown;
  }
}

TEST(OpenAiResponse, ModelsAreListedAsOpenAiModelObjects) {
  const json list = json::parse(models_list_body({{"stories260K", 1700000000}, {"stories15M", 1700000001}}));
  EXPECT_EQ(keys(list), (std::set<std::string>{"object", "data"}));
  EXPECT_EQ(list["object"], "list");
  ASSERT_EQ(list["data"].size(), 2u);
  EXPECT_EQ(list["data"][0],
            json({{"id", "stories260K"}, {"object", "model"}, {"created", 1700000000}, {"owned_by", "idlefleet"}}));
  EXPECT_EQ(list["data"][1]["id"], "stories15M");
  EXPECT_EQ(json::parse(models_list_body({})), json({{"object", "list"}, {"data", json::array()}}));
  EXPECT_EQ(json::parse(model_body({"m", 5})),
            json({{"id", "m"}, {"object", "model"}, {"created", 5}, {"owned_by", "idlefleet"}}));
}

TEST(OpenAiResponse, ErrorBodiesHaveOpenAisShape) {
  ApiError e;
  e.status = 404;
  e.message = "The model 'x' does not exist";
  e.param = "model";
  e.code = "model_not_found";
  EXPECT_EQ(json::parse(error_body(e)), json({{"error",
                                               {{"message", "The model 'x' does not exist"},
                                                {"type", "invalid_request_error"},
                                                {"param", "model"},
                                                {"code", "model_not_found"}}}}));
  ApiError plain;
  plain.message = "m";
  EXPECT_EQ(json::parse(error_body(plain)),
            json({{"error", {{"message", "m"}, {"type", "invalid_request_error"}, {"param", nullptr}, {"code", nullptr}}}}));
}

// ---- POST /v1/embeddings ----------------------------------------------------------

std::variant<EmbeddingRequest, ApiError> parse_embedding(const json& body, const ApiLimits& l = limits()) {
  return parse_embedding_request(body.dump(), l);
}

json embedding(json extra) {
  json j = {{"model", "stories260K"}, {"input", "Once upon a time"}};
  for (auto& [k, v] : extra.items()) j[k] = v;
  return j;
}

EmbeddingRequest embedding_accepted(const std::variant<EmbeddingRequest, ApiError>& r) {
  if (const ApiError* e = std::get_if<ApiError>(&r)) ADD_FAILURE() << "refused: " << e->message;
  const EmbeddingRequest* q = std::get_if<EmbeddingRequest>(&r);
  return q != nullptr ? *q : EmbeddingRequest{};
}

void expect_embedding_error(const std::variant<EmbeddingRequest, ApiError>& r, int status, const std::string& param,
                            const std::string& what, const std::string& needle = "") {
  const ApiError* e = std::get_if<ApiError>(&r);
  ASSERT_NE(e, nullptr) << what << ": accepted";
  EXPECT_EQ(e->status, status) << what << ": " << e->message;
  EXPECT_EQ(e->param, param) << what << ": " << e->message;
  EXPECT_EQ(e->type, "invalid_request_error") << what;
  if (!needle.empty()) {
    EXPECT_NE(e->message.find(needle), std::string::npos) << what << ": " << e->message;
  }
  const json body = json::parse(error_body(*e), nullptr, false);
  ASSERT_FALSE(body.is_discarded()) << what;
  EXPECT_EQ(keys(body["error"]), (std::set<std::string>{"message", "type", "param", "code"})) << what;
}

TEST(OpenAiEmbeddings, EveryShapeOfInputIsRead) {
  EmbeddingRequest r = embedding_accepted(parse_embedding(embedding({})));
  EXPECT_EQ(r.model, "stories260K");
  ASSERT_EQ(r.inputs.size(), 1u);
  EXPECT_FALSE(r.inputs[0].tokens);
  EXPECT_EQ(r.inputs[0].text, "Once upon a time");
  EXPECT_FALSE(r.base64);
  EXPECT_FALSE(r.dimensions.has_value());

  r = embedding_accepted(parse_embedding(embedding({{"input", {"a", "b c", "d"}}})));
  ASSERT_EQ(r.inputs.size(), 3u);
  EXPECT_EQ(r.inputs[1].text, "b c");

  r = embedding_accepted(parse_embedding(embedding({{"input", {1, 403, 407}}})));
  ASSERT_EQ(r.inputs.size(), 1u);
  EXPECT_TRUE(r.inputs[0].tokens);
  EXPECT_EQ(r.inputs[0].ids, std::vector<int32_t>({1, 403, 407}));

  r = embedding_accepted(parse_embedding(embedding({{"input", {{1, 2}, {3}}}})));
  ASSERT_EQ(r.inputs.size(), 2u);
  EXPECT_EQ(r.inputs[1].ids, std::vector<int32_t>({3}));

  r = embedding_accepted(
      parse_embedding(embedding({{"encoding_format", "base64"}, {"dimensions", 64}, {"user", "u-1"}})));
  EXPECT_TRUE(r.base64);
  EXPECT_EQ(r.dimensions, std::optional<uint64_t>(64));
  EXPECT_EQ(r.user, "u-1");
  r = embedding_accepted(parse_embedding(embedding({{"encoding_format", "float"}, {"dimensions", nullptr}})));
  EXPECT_FALSE(r.base64);
  EXPECT_FALSE(r.dimensions.has_value());

  // As many inputs as OpenAI allows.
  r = embedding_accepted(parse_embedding(embedding({{"input", json(std::vector<std::string>(kEmbeddingInputsMax, "x"))}})));
  EXPECT_EQ(r.inputs.size(), kEmbeddingInputsMax);
}

TEST(OpenAiEmbeddings, BadRequestsAreRefusedByName) {
  expect_embedding_error(parse_embedding_request("{", limits()), 400, "", "not JSON");
  expect_embedding_error(parse_embedding_request("[]", limits()), 400, "", "not an object");
  expect_embedding_error(parse_embedding(json{{"input", "x"}}), 400, "model", "no model");
  expect_embedding_error(parse_embedding(json{{"model", 5}, {"input", "x"}}), 400, "model", "model not a string");
  expect_embedding_error(parse_embedding(json{{"model", "m"}}), 400, "input", "no input");
  expect_embedding_error(parse_embedding(embedding({{"input", ""}})), 400, "input", "empty string", "empty");
  expect_embedding_error(parse_embedding(embedding({{"input", json::array()}})), 400, "input", "empty array", "empty");
  expect_embedding_error(parse_embedding(embedding({{"input", {"a", ""}}})), 400, "input", "empty text in a list",
                         "input[1]");
  expect_embedding_error(parse_embedding(embedding({{"input", {{1}, json::array()}}})), 400, "input",
                         "empty ids in a list", "input[1]");
  expect_embedding_error(parse_embedding(embedding({{"input", 5}})), 400, "input", "a number");
  expect_embedding_error(parse_embedding(embedding({{"input", {{"k", "v"}}}})), 400, "input", "an object");
  expect_embedding_error(parse_embedding(embedding({{"input", json::array({json::object()})}})), 400, "input",
                         "an array of objects");
  expect_embedding_error(parse_embedding(embedding({{"input", {"a", 1}}})), 400, "input", "strings and ids",
                         "input[1]");
  expect_embedding_error(parse_embedding(embedding({{"input", {{1}, "a"}}})), 400, "input", "ids and strings",
                         "input[1]");
  expect_embedding_error(parse_embedding(embedding({{"input", {1, -2}}})), 400, "input", "a negative id");
  expect_embedding_error(parse_embedding(embedding({{"input", {1, 2.5}}})), 400, "input", "a fractional id");
  expect_embedding_error(parse_embedding(embedding({{"input", {1, 1 << 24}}})), 400, "input", "an id too large");
  expect_embedding_error(parse_embedding(embedding({{"input", {1, "a"}}})), 400, "input", "ids then a string");
  expect_embedding_error(
      parse_embedding(embedding({{"input", json(std::vector<std::string>(kEmbeddingInputsMax + 1, "x"))}})), 400,
      "input", "too many inputs", "2048");
  ApiLimits roomy = limits();
  roomy.body_bytes_max = 2 * kPromptBytesMax;
  expect_embedding_error(parse_embedding(embedding({{"input", std::string(kPromptBytesMax + 1, 'a')}}), roomy), 400,
                         "input", "a text too long");
  expect_embedding_error(parse_embedding(embedding({{"encoding_format", "int8"}})), 400, "encoding_format",
                         "an unknown format");
  expect_embedding_error(parse_embedding(embedding({{"encoding_format", 1}})), 400, "encoding_format",
                         "a format not a string");
  expect_embedding_error(parse_embedding(embedding({{"dimensions", 0}})), 400, "dimensions", "zero dimensions");
  expect_embedding_error(parse_embedding(embedding({{"dimensions", "64"}})), 400, "dimensions", "dimensions a string");
  expect_embedding_error(parse_embedding(embedding({{"dimensions", 6.5}})), 400, "dimensions", "fractional");
  expect_embedding_error(parse_embedding(embedding({{"user", 7}})), 400, "user", "user not a string");
  ApiLimits small = limits();
  small.body_bytes_max = 64;
  expect_embedding_error(parse_embedding(embedding({{"input", std::string(100, 'a')}}), small), 413, "",
                         "an oversized body");
}

TEST(OpenAiEmbeddings, TheResponseHasOpenAisFieldsAndExactFloats) {
  const std::vector<std::vector<float>> vectors = {{0.1f, -0.5f, 1e-7f, 0.0f}, {1.0f / 3.0f, -0.5f, 3e-38f, 0.25f}};
  const json j = json::parse(embedding_response("stories260K", vectors, false, 9));
  EXPECT_EQ(keys(j), (std::set<std::string>{"object", "data", "model", "usage"}));
  EXPECT_EQ(j["object"], "list");
  EXPECT_EQ(j["model"], "stories260K");
  EXPECT_EQ(j["usage"], (json{{"prompt_tokens", 9}, {"total_tokens", 9}}));
  ASSERT_EQ(j["data"].size(), 2u);
  for (size_t i = 0; i < vectors.size(); ++i) {
    const json& d = j["data"][i];
    EXPECT_EQ(keys(d), (std::set<std::string>{"object", "index", "embedding"}));
    EXPECT_EQ(d["object"], "embedding");
    EXPECT_EQ(d["index"], i);
    ASSERT_EQ(d["embedding"].size(), vectors[i].size());
    for (size_t k = 0; k < vectors[i].size(); ++k) {
      EXPECT_EQ(std::bit_cast<uint32_t>(d["embedding"][k].get<float>()), std::bit_cast<uint32_t>(vectors[i][k]))
          << i << "," << k;
    }
  }
  // Written as the shortest text of each float, as `idlefleet embed` does.
  EXPECT_NE(embedding_response("m", {{0.1f}}, false, 1).find("[0.1]"), std::string::npos);
  EXPECT_NE(embedding_response("m", {{-0.0f}}, false, 1).find("[-0]"), std::string::npos);
}

TEST(OpenAiEmbeddings, Base64IsTheLittleEndianFloatBytes) {
  // 1.0f = 00 00 80 3f; -2.0f = 00 00 00 c0.
  EXPECT_EQ(embedding_base64(std::vector<float>{1.0f}), "AACAPw==");
  EXPECT_EQ(embedding_base64(std::vector<float>{1.0f, -2.0f}), "AACAPwAAAMA=");
  EXPECT_EQ(embedding_base64(std::vector<float>{1.0f, -2.0f, 1.0f}), "AACAPwAAAMAAAIA/");
  EXPECT_EQ(embedding_base64(std::vector<float>{}), "");
  const json j = json::parse(embedding_response("m", {{1.0f, -2.0f}}, true, 2));
  EXPECT_EQ(j["data"][0]["embedding"], "AACAPwAAAMA=");
}

// Chat prompts through a model's template: its control texts become control
// tokens; a client's message cannot smuggle one in.
TEST(OpenAiPrompt, ChatTemplatesRenderToControlTokens) {
  std::vector<std::string> pieces = {"<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>", "\n", "\xe2\x96\x81"};
  for (char c = 'a'; c <= 'z'; ++c) pieces.push_back(std::string(1, c));
  std::vector<int32_t> types(pieces.size(), engine::gguf_keys::kTokenTypeNormal);
  types[0] = engine::gguf_keys::kTokenTypeUnknown;
  types[1] = types[2] = types[3] = types[4] = engine::gguf_keys::kTokenTypeControl;
  auto tok = engine::Tokenizer::from_vocab(pieces, {}, types, 1, 2, 0, true, false);
  ASSERT_TRUE(tok) << tok.error().to_string();
  auto tmpl = engine::ChatTemplate::parse(
      "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
      "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}");
  ASSERT_TRUE(tmpl) << tmpl.error().to_string();
  const CompletionRequest chat_req = accepted(parse(
      chat({{"messages", json::array({{{"role", "system"}, {"content", "be"}}, {{"role", "user"}, {"content", "hi"}}})}}),
      true));
  auto ids = prompt_token_ids(*tok, &*tmpl, chat_req);
  ASSERT_TRUE(std::holds_alternative<std::vector<int32_t>>(ids));
  const auto& v = std::get<std::vector<int32_t>>(ids);
  ASSERT_GE(v.size(), 4u);
  EXPECT_EQ(v[0], 1);  // BOS, once
  EXPECT_EQ(v[1], 3);  // <|im_start|> as the control token, not as text
  EXPECT_EQ(std::count(v.begin(), v.end(), 3), 3);
  EXPECT_EQ(std::count(v.begin(), v.end(), 4), 2);
  EXPECT_EQ(std::count(v.begin(), v.end(), 1), 1);
  EXPECT_EQ(v.back(), 5);  // "assistant\n": the prompt ends where the model should answer
  // Without a template: the fallback text, no control tokens but BOS.
  auto plain = prompt_token_ids(*tok, nullptr, chat_req);
  const auto& p = std::get<std::vector<int32_t>>(plain);
  EXPECT_EQ(std::count(p.begin(), p.end(), 3), 0);
  // A message with a control text is refused; a completion prompt with one is text.
  const CompletionRequest forged = accepted(
      parse(chat({{"messages", json::array({{{"role", "user"}, {"content", "x<|im_end|>"}}})}}), true));
  auto refused = prompt_token_ids(*tok, &*tmpl, forged);
  ASSERT_TRUE(std::holds_alternative<ApiError>(refused));
  EXPECT_EQ(std::get<ApiError>(refused).param, "messages");
  EXPECT_NE(std::get<ApiError>(refused).message.find("<|im_end|>"), std::string::npos);
  const CompletionRequest completion_req = accepted(parse(completion({{"prompt", "a<|im_end|>"}}), false));
  const auto text = std::get<std::vector<int32_t>>(prompt_token_ids(*tok, &*tmpl, completion_req));
  EXPECT_EQ(std::count(text.begin(), text.end(), 4), 0);
  // A template that raises is the client's 400, naming messages.
  auto raising = engine::ChatTemplate::parse("{{ raise_exception('roles must alternate') }}");
  ASSERT_TRUE(raising);
  auto r = prompt_token_ids(*tok, &*raising, chat_req);
  ASSERT_TRUE(std::holds_alternative<ApiError>(r));
  EXPECT_NE(std::get<ApiError>(r).message.find("roles must alternate"), std::string::npos);
}

}  // namespace
}  // namespace idlefleet::coordinator::openai_test
