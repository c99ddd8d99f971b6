#include "coordinator/openai.h"

#include <bit>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include <nlohmann/json.hpp>

#include "engine/stop_strings.h"

namespace idlefleet::coordinator {

using nlohmann::json;

namespace {

// OpenAI shows a logprob of -inf as this.
constexpr double kLogprobShownMin = -9999.0;

ApiError bad(std::string param, std::string message) {
  ApiError e;
  e.status = 400;
  e.param = std::move(param);
  e.message = std::move(message);
  return e;
}

bool present(const json& j, const char* key) { return j.contains(key) && !j[key].is_null(); }

// A number in [min, max] or an error naming it.
std::optional<ApiError> read_number(const json& j, const char* key, double min, double max, double* out) {
  if (!present(j, key)) return std::nullopt;
  if (!j[key].is_number()) return bad(key, std::string("'") + key + "' must be a number");
  const double v = j[key].get<double>();
  if (!std::isfinite(v) || v < min || v > max) {
    return bad(key, std::string("'") + key + "' must be between " + json(min).dump() + " and " + json(max).dump());
  }
  *out = v;
  return std::nullopt;
}

std::optional<ApiError> refuse_unsupported(const json& j, bool chat) {
  if (present(j, "n") && !(j["n"].is_number_integer() && j["n"].get<int64_t>() == 1)) {
    return bad("n", "only n = 1 is supported");
  }
  for (const char* key : {"tools", "functions", "tool_choice", "suffix", "best_of", "logit_bias",
                          "response_format"}) {
    if (present(j, key)) return bad(key, std::string("'") + key + "' is not supported yet");
  }
  if (!chat && present(j, "echo") && !(j["echo"].is_boolean() && !j["echo"].get<bool>())) {
    return bad("echo", "'echo' is not supported yet");
  }
  return std::nullopt;
}

// Chat: logprobs (true/false) and top_logprobs 0..kChatTopLogprobsMax, which
// needs logprobs true. Completions: logprobs 0..kCompletionLogprobsMax (false
// reads as off, as clients send it); top_logprobs is chat's only.
std::optional<ApiError> read_logprobs(const json& j, bool chat, int32_t* out) {
  *out = -1;
  auto integer_in = [&](const char* key, int64_t max) {
    const json& v = j[key];
    return v.is_number_integer() && v.get<int64_t>() >= 0 && v.get<int64_t>() <= max;
  };
  if (chat) {
    bool wanted = false;
    if (present(j, "logprobs")) {
      if (!j["logprobs"].is_boolean()) return bad("logprobs", "'logprobs' must be true or false");
      wanted = j["logprobs"].get<bool>();
    }
    if (present(j, "top_logprobs")) {
      if (!integer_in("top_logprobs", kChatTopLogprobsMax)) {
        return bad("top_logprobs", std::string("'top_logprobs' must be an integer from 0 to ")
                                       .append(std::to_string(kChatTopLogprobsMax)));
      }
      if (!wanted) return bad("top_logprobs", "'top_logprobs' requires 'logprobs': true");
      *out = static_cast<int32_t>(j["top_logprobs"].get<int64_t>());
    } else if (wanted) {
      *out = 0;
    }
    return std::nullopt;
  }
  if (present(j, "top_logprobs")) {
    return bad("top_logprobs", "'top_logprobs' is for chat completions; completions take 'logprobs': N");
  }
  if (present(j, "logprobs") && !(j["logprobs"].is_boolean() && !j["logprobs"].get<bool>())) {
    if (!integer_in("logprobs", kCompletionLogprobsMax)) {
      return bad("logprobs", std::string("'logprobs' must be an integer from 0 to ")
                                 .append(std::to_string(kCompletionLogprobsMax)));
    }
    *out = static_cast<int32_t>(j["logprobs"].get<int64_t>());
  }
  return std::nullopt;
}

}  // namespace

double api_logprob(float logprob) {
  if (!(logprob > kLogprobShownMin)) return kLogprobShownMin;
  char text[32];
  const auto [end, ec] = std::to_chars(text, text + sizeof text - 1, logprob);
  if (ec != std::errc()) return static_cast<double>(logprob);
  *end = '\0';
  const double shortest = std::strtod(text, nullptr);
  // Read as a double, the shortest float text must still name the same
  // float; if rounding twice ever moved it, the exact value is shown.
  return static_cast<float>(shortest) == logprob ? shortest : static_cast<double>(logprob);
}

std::variant<std::vector<int32_t>, ApiError> prompt_token_ids(const engine::Tokenizer& tok,
                                                              const engine::ChatTemplate* tmpl,
                                                              const CompletionRequest& req) {
  std::vector<int32_t> ids;
  if (req.chat && tmpl != nullptr) {
    engine::ChatTemplateInputs in;
    for (const ChatMessage& m : req.messages) {
      if (const int32_t id = tok.find_control_text(m.content); id >= 0) {
        return bad("messages", "a message contains the model's control token '" + tok.piece(id) + "'");
      }
      in.messages.push_back({m.role, m.content});
    }
    in.add_generation_prompt = true;
    in.bos_token = tok.piece(tok.bos());
    in.eos_token = tok.piece(tok.eos());
    auto text = tmpl->render(in);
    if (!text) return bad("messages", "the model's chat template refused the messages: " + text.error().message);
    ids = tok.encode_with_controls(*text, tok.add_bos());
  } else {
    ids = tok.encode(req.prompt, tok.add_bos());
  }
  if (ids.empty()) ids.push_back(tok.bos());
  return ids;
}

std::string error_body(const ApiError& e) {
  json err = {{"message", e.message},
              {"type", e.type},
              {"param", e.param.empty() ? json(nullptr) : json(e.param)},
              {"code", e.code.empty() ? json(nullptr) : json(e.code)}};
  // Messages quote client input cut to a bound, which may end inside a UTF-8
  // character (or hold raw bytes from a request path): replace, never throw.
  return json{{"error", err}}.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string render_chat_prompt(const std::vector<ChatMessage>& messages) {
  std::string out;
  auto add = [&](const std::string& content) {
    if (content.empty()) return;
    if (!out.empty()) out += "\n\n";
    out += content;
  };
  for (const ChatMessage& m : messages) {
    if (m.role == "system") add(m.content);
  }
  for (const ChatMessage& m : messages) {
    if (m.role != "system") add(m.content);
  }
  return out;
}

std::variant<CompletionRequest, ApiError> parse_completion_request(std::string_view body, bool chat,
                                                                   const ApiLimits& limits) {
  if (body.size() > limits.body_bytes_max) {
    ApiError e = bad("", "request body larger than " + std::to_string(limits.body_bytes_max) + " bytes");
    e.status = 413;
    return e;
  }
  const json j = json::parse(body, nullptr, false);
  if (j.is_discarded()) return bad("", "the request body is not valid JSON");
  if (!j.is_object()) return bad("", "the request body must be a JSON object");
  if (auto e = refuse_unsupported(j, chat)) return *e;

  CompletionRequest r;
  r.chat = chat;
  if (!present(j, "model") || !j["model"].is_string() || j["model"].get_ref<const std::string&>().empty()) {
    return bad("model", "'model' is required");
  }
  r.model = j["model"].get<std::string>();
  if (r.model.size() > core::kIdBytesMax) return bad("model", "'model' is too long");

  if (chat) {
    if (!present(j, "messages") || !j["messages"].is_array() || j["messages"].empty()) {
      return bad("messages", "'messages' must be a non-empty array");
    }
    if (j["messages"].size() > kChatMessagesMax) {
      return bad("messages", "at most " + std::to_string(kChatMessagesMax) + " messages");
    }
    size_t total = 0;
    for (size_t i = 0; i < j["messages"].size(); ++i) {
      const json& m = j["messages"][i];
      const std::string where = "messages[" + std::to_string(i) + "]";
      if (!m.is_object() || !m.contains("role") || !m["role"].is_string()) {
        return bad(where + ".role", where + " needs a 'role'");
      }
      ChatMessage cm;
      cm.role = m["role"].get<std::string>();
      if (cm.role == "developer") cm.role = "system";
      if (cm.role != "system" && cm.role != "user" && cm.role != "assistant") {
        return bad(where + ".role", "role '" + cm.role.substr(0, 32) + "' is not supported");
      }
      if (!present(m, "content")) return bad(where + ".content", where + " needs 'content'");
      if (m["content"].is_string()) {
        cm.content = m["content"].get<std::string>();
      } else if (m["content"].is_array()) {
        // Content parts: text parts only.
        for (const json& part : m["content"]) {
          if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") ||
              !part["text"].is_string()) {
            return bad(where + ".content", "only text content parts are supported");
          }
          cm.content += part["text"].get<std::string>();
        }
      } else {
        return bad(where + ".content", where + ".content must be a string or text parts");
      }
      total += cm.content.size();
      if (total > kPromptBytesMax) return bad("messages", "messages longer than " + std::to_string(kPromptBytesMax) + " bytes");
      r.messages.push_back(std::move(cm));
    }
    r.prompt = render_chat_prompt(r.messages);
  } else {
    if (!present(j, "prompt")) return bad("prompt", "'prompt' is required");
    const json& p = j["prompt"];
    if (p.is_string()) {
      r.prompt = p.get<std::string>();
    } else if (p.is_array() && p.size() == 1 && p[0].is_string()) {
      r.prompt = p[0].get<std::string>();
    } else {
      return bad("prompt", "'prompt' must be a string (one prompt per request)");
    }
    if (r.prompt.size() > kPromptBytesMax) return bad("prompt", "'prompt' longer than " + std::to_string(kPromptBytesMax) + " bytes");
  }

  for (const char* key : {"max_tokens", "max_completion_tokens"}) {
    if (!present(j, key)) continue;
    if (!j[key].is_number_integer() || j[key].get<int64_t>() < 1 ||
        static_cast<uint64_t>(j[key].get<int64_t>()) > limits.max_tokens_limit) {
      return bad(key, std::string("'") + key + "' must be an integer from 1 to " + std::to_string(limits.max_tokens_limit));
    }
    r.max_tokens = static_cast<uint64_t>(j[key].get<int64_t>());
  }
  // OpenAI's defaults: temperature 1, top_p 1.
  r.sampling.temperature = 1.0;
  if (auto e = read_number(j, "temperature", 0.0, 2.0, &r.sampling.temperature)) return *e;
  if (auto e = read_number(j, "top_p", 0.0, 1.0, &r.sampling.top_p)) return *e;
  if (present(j, "top_p") && r.sampling.top_p <= 0.0) return bad("top_p", "'top_p' must be above 0");
  r.sampling.repeat_penalty = 1.0;
  r.sampling.repeat_last_n = 64;
  if (present(j, "stop")) {
    const json& s = j["stop"];
    if (s.is_string()) {
      r.stop.push_back(s.get<std::string>());
    } else if (s.is_array() && s.size() <= engine::kStopStringsMax) {
      for (const json& one : s) {
        if (!one.is_string()) return bad("stop", "'stop' must be a string or an array of up to 4 strings");
        r.stop.push_back(one.get<std::string>());
      }
    } else {
      return bad("stop", "'stop' must be a string or an array of up to 4 strings");
    }
    if (auto m = engine::StopMatcher::create(r.stop); !m) return bad("stop", m.error().message);
  }
  if (auto e = read_number(j, "presence_penalty", -2.0, 2.0, &r.sampling.presence_penalty)) return *e;
  if (auto e = read_number(j, "frequency_penalty", -2.0, 2.0, &r.sampling.frequency_penalty)) return *e;
  if (present(j, "seed")) {
    if (!j["seed"].is_number_integer()) return bad("seed", "'seed' must be an integer");
    r.sampling.seed = j["seed"].is_number_unsigned() ? j["seed"].get<uint64_t>()
                                                     : static_cast<uint64_t>(j["seed"].get<int64_t>());
    r.seed_given = true;
  }
  if (auto e = read_logprobs(j, chat, &r.logprobs)) return *e;
  if (present(j, "ignore_eos")) {
    if (!j["ignore_eos"].is_boolean()) return bad("ignore_eos", "'ignore_eos' must be true or false");
    r.ignore_eos = j["ignore_eos"].get<bool>();
  }
  if (present(j, "stream")) {
    if (!j["stream"].is_boolean()) return bad("stream", "'stream' must be true or false");
    r.stream = j["stream"].get<bool>();
  }
  if (present(j, "stream_options")) {
    const json& so = j["stream_options"];
    if (!so.is_object()) return bad("stream_options", "'stream_options' must be an object");
    if (!r.stream) return bad("stream_options", "'stream_options' is only allowed with 'stream': true");
    if (present(so, "include_usage")) {
      if (!so["include_usage"].is_boolean()) return bad("stream_options.include_usage", "must be true or false");
      r.include_usage = so["include_usage"].get<bool>();
    }
  }
  return r;
}

namespace {

json base(const ResponseMeta& meta, const char* object) {
  return {{"id", meta.id},
          {"object", object},
          {"created", meta.created},
          {"model", meta.model},
          {"system_fingerprint", meta.system_fingerprint}};
}

json usage_json(const Usage& u) {
  return {{"prompt_tokens", u.prompt_tokens},
          {"completion_tokens", u.completion_tokens},
          {"total_tokens", u.prompt_tokens + u.completion_tokens}};
}

json token_bytes_json(const std::string& token) {
  json bytes = json::array();
  for (unsigned char b : token) bytes.push_back(static_cast<int>(b));
  return bytes;
}

// A choice's logprobs: chat's {"content": [...], "refusal": null}, or the
// legacy {"tokens", "token_logprobs", "top_logprobs", "text_offset"}.
json logprobs_json(bool chat, const std::vector<LogprobsEntry>* entries) {
  if (entries == nullptr) return nullptr;
  if (chat) {
    json content = json::array();
    for (const LogprobsEntry& e : *entries) {
      json top = json::array();
      for (const TokenLogprob& t : e.top) {
        top.push_back({{"token", t.token}, {"logprob", api_logprob(t.logprob)}, {"bytes", token_bytes_json(t.token)}});
      }
      content.push_back({{"token", e.chosen.token},
                         {"logprob", api_logprob(e.chosen.logprob)},
                         {"bytes", token_bytes_json(e.chosen.token)},
                         {"top_logprobs", std::move(top)}});
    }
    return {{"content", std::move(content)}, {"refusal", nullptr}};
  }
  json tokens = json::array(), token_logprobs = json::array(), top_logprobs = json::array(), offsets = json::array();
  for (const LogprobsEntry& e : *entries) {
    tokens.push_back(e.chosen.token);
    token_logprobs.push_back(api_logprob(e.chosen.logprob));
    // Alternatives with the same text (control tokens, say) keep the likelier.
    json top = json::object();
    for (const TokenLogprob& t : e.top) {
      if (!top.contains(t.token)) top[t.token] = api_logprob(t.logprob);
    }
    top_logprobs.push_back(std::move(top));
    offsets.push_back(e.text_offset);
  }
  return {{"tokens", std::move(tokens)},
          {"token_logprobs", std::move(token_logprobs)},
          {"top_logprobs", std::move(top_logprobs)},
          {"text_offset", std::move(offsets)}};
}

}  // namespace

std::string completion_response(const ResponseMeta& meta, bool chat, const std::string& text,
                                const std::string& finish_reason, const Usage& usage,
                                const std::vector<LogprobsEntry>* logprobs) {
  json j = base(meta, chat ? "chat.completion" : "text_completion");
  json choice = {{"index", 0}, {"logprobs", logprobs_json(chat, logprobs)}, {"finish_reason", finish_reason}};
  if (chat) {
    choice["message"] = {{"role", "assistant"}, {"content", text}, {"refusal", nullptr}};
  } else {
    choice["text"] = text;
  }
  j["choices"] = json::array({choice});
  j["usage"] = usage_json(usage);
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string completion_chunk_event(const ResponseMeta& meta, bool chat, const std::string& text,
                                   const std::optional<std::string>& finish_reason, bool first,
                                   const std::vector<LogprobsEntry>* logprobs) {
  json j = base(meta, chat ? "chat.completion.chunk" : "text_completion");
  json choice = {{"index", 0}, {"logprobs", logprobs_json(chat, logprobs)},
                 {"finish_reason", finish_reason ? json(*finish_reason) : json(nullptr)}};
  if (chat) {
    json delta = json::object();
    if (first) delta["role"] = "assistant";
    if (!text.empty() || (!finish_reason && !first)) delta["content"] = text;
    if (first && text.empty() && !finish_reason) delta["content"] = "";
    choice["delta"] = delta;
  } else {
    choice["text"] = text;
  }
  j["choices"] = json::array({choice});
  return "data: " + j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n\n";
}

std::string usage_event(const ResponseMeta& meta, bool chat, const Usage& usage) {
  json j = base(meta, chat ? "chat.completion.chunk" : "text_completion");
  j["choices"] = json::array();
  j["usage"] = usage_json(usage);
  return "data: " + j.dump() + "\n\n";
}

// ---- Embeddings ------------------------------------------------------------------

namespace {

// Token ids for one input, or an error naming it.
std::optional<ApiError> read_token_ids(const json& a, const std::string& where, std::vector<int32_t>* out) {
  if (a.empty()) return bad("input", where + " is an empty array of token ids");
  if (a.size() > core::kTokenIdsMax) {
    return bad("input", where + " holds more than " + std::to_string(core::kTokenIdsMax) + " token ids");
  }
  out->reserve(a.size());
  for (const json& e : a) {
    if (!e.is_number_integer() || e.get<int64_t>() < 0 || e.get<int64_t>() > core::kTokenIdMax ||
        (e.is_number_unsigned() && e.get<uint64_t>() > static_cast<uint64_t>(core::kTokenIdMax))) {
      return bad("input", where + " must hold token ids: integers from 0 to " + std::to_string(core::kTokenIdMax));
    }
    out->push_back(static_cast<int32_t>(e.get<int64_t>()));
  }
  return std::nullopt;
}

std::optional<ApiError> read_text(const json& s, const std::string& where, std::string* out) {
  const std::string& t = s.get_ref<const std::string&>();
  if (t.empty()) return bad("input", where + " is an empty string");
  if (t.size() > kPromptBytesMax) {
    return bad("input", where + " is longer than " + std::to_string(kPromptBytesMax) + " bytes");
  }
  *out = t;
  return std::nullopt;
}

}  // namespace

std::variant<EmbeddingRequest, ApiError> parse_embedding_request(std::string_view body, const ApiLimits& limits) {
  if (body.size() > limits.body_bytes_max) {
    ApiError e = bad("", "request body larger than " + std::to_string(limits.body_bytes_max) + " bytes");
    e.status = 413;
    return e;
  }
  const json j = json::parse(body, nullptr, false);
  if (j.is_discarded()) return bad("", "the request body is not valid JSON");
  if (!j.is_object()) return bad("", "the request body must be a JSON object");

  EmbeddingRequest r;
  if (!present(j, "model") || !j["model"].is_string() || j["model"].get_ref<const std::string&>().empty()) {
    return bad("model", "'model' is required");
  }
  r.model = j["model"].get<std::string>();
  if (r.model.size() > core::kIdBytesMax) return bad("model", "'model' is too long");

  if (!present(j, "input")) return bad("input", "'input' is required");
  const json& in = j["input"];
  const char* kShapes = "'input' must be a string, an array of strings, an array of token ids or an array of arrays "
                        "of token ids";
  if (in.is_string()) {
    EmbeddingInput one;
    if (auto e = read_text(in, "input", &one.text)) return *e;
    r.inputs.push_back(std::move(one));
  } else if (in.is_array()) {
    if (in.empty()) return bad("input", "'input' must not be an empty array");
    if (in[0].is_number()) {
      // One input given as token ids.
      EmbeddingInput one;
      one.tokens = true;
      if (auto e = read_token_ids(in, "input", &one.ids)) return *e;
      r.inputs.push_back(std::move(one));
    } else {
      if (in.size() > kEmbeddingInputsMax) {
        return bad("input", "'input' holds " + std::to_string(in.size()) + " inputs; at most " +
                                std::to_string(kEmbeddingInputsMax) + " are allowed");
      }
      const bool texts = in[0].is_string();
      r.inputs.reserve(in.size());
      for (size_t i = 0; i < in.size(); ++i) {
        const std::string where = "input[" + std::to_string(i) + "]";
        EmbeddingInput one;
        if (texts && in[i].is_string()) {
          if (auto e = read_text(in[i], where, &one.text)) return *e;
        } else if (!texts && in[i].is_array()) {
          one.tokens = true;
          if (auto e = read_token_ids(in[i], where, &one.ids)) return *e;
        } else {
          return bad("input", std::string(kShapes) + " (" + where + " differs)");
        }
        r.inputs.push_back(std::move(one));
      }
    }
  } else {
    return bad("input", kShapes);
  }

  if (present(j, "encoding_format")) {
    const json& f = j["encoding_format"];
    if (!f.is_string() || (f != "float" && f != "base64")) {
      return bad("encoding_format", "'encoding_format' must be \"float\" or \"base64\"");
    }
    r.base64 = f == "base64";
  }
  if (present(j, "dimensions")) {
    const json& d = j["dimensions"];
    if (!d.is_number_integer() || d.get<int64_t>() < 1) return bad("dimensions", "'dimensions' must be an integer >= 1");
    r.dimensions = d.get<uint64_t>();
  }
  if (present(j, "user")) {
    if (!j["user"].is_string()) return bad("user", "'user' must be a string");
    r.user = j["user"].get<std::string>();
  }
  return r;
}

std::string embedding_base64(std::span<const float> values) {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string bytes(values.size() * 4, '\0');
  for (size_t i = 0; i < values.size(); ++i) {
    const uint32_t u = std::bit_cast<uint32_t>(values[i]);
    for (size_t b = 0; b < 4; ++b) bytes[i * 4 + b] = static_cast<char>((u >> (8 * b)) & 0xff);
  }
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  for (size_t i = 0; i < bytes.size(); i += 3) {
    const size_t n = std::min<size_t>(3, bytes.size() - i);
    uint32_t group = 0;
    for (size_t k = 0; k < 3; ++k) {
      group = (group << 8) | (k < n ? static_cast<unsigned char>(bytes[i + k]) : 0u);
    }
    for (size_t k = 0; k < 4; ++k) {
      out.push_back(k <= n ? kAlphabet[(group >> (18 - 6 * k)) & 0x3f] : '=');
    }
  }
  return out;
}

std::string embedding_response(const std::string& model, const std::vector<std::vector<float>>& vectors, bool base64,
                               uint64_t prompt_tokens) {
  std::string out = std::string("{\"object\":\"list\",\"data\":[");
  char buf[32];
  for (size_t i = 0; i < vectors.size(); ++i) {
    if (i > 0) out.push_back(',');
    out.append("{\"object\":\"embedding\",\"index\":").append(std::to_string(i)).append(",\"embedding\":");
    if (base64) {
      out.append("\"").append(embedding_base64(vectors[i])).append("\"");
    } else {
      out.push_back('[');
      for (size_t k = 0; k < vectors[i].size(); ++k) {
        if (k > 0) out.push_back(',');
        // As `idlefleet embed`: the shortest text that reads back as this float.
        const auto r = std::to_chars(buf, buf + sizeof buf, vectors[i][k]);
        out.append(buf, r.ptr);
      }
      out.push_back(']');
    }
    out.push_back('}');
  }
  out.append("],\"model\":").append(json(model).dump(-1, ' ', false, json::error_handler_t::replace));
  out.append(",\"usage\":{\"prompt_tokens\":").append(std::to_string(prompt_tokens));
  out.append(",\"total_tokens\":").append(std::to_string(prompt_tokens)).append("}}");
  return out;
}

std::string model_body(const ModelCard& m) {
  return json{{"id", m.id}, {"object", "model"}, {"created", m.created}, {"owned_by", "idlefleet"}}.dump();
}

std::string models_list_body(const std::vector<ModelCard>& models) {
  json data = json::array();
  for (const ModelCard& m : models) data.push_back(json::parse(model_body(m)));
  return json{{"object", "list"}, {"data", data}}.dump();
}

}  // namespace idlefleet::coordinator
