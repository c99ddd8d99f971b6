#include "coordinator/server.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "common/check.h"
#include "common/log_limiter.h"
#include "coordinator/api_keys.h"
#include "coordinator/openai.h"
#include "core/coordinator_machine.h"
#include "engine/chat_template.h"
#include "engine/gguf.h"
#include "engine/model.h"
#include "engine/stop_strings.h"
#include "engine/tokenizer.h"
#include "store/job_store.h"
#include "store/key_store.h"
#include "transport/download.h"
#include "transport/http_server.h"
#include "transport/metrics.h"
#include "transport/nats_client.h"
#include "transport/random_id.h"

namespace idlefleet::coordinator {

namespace fs = std::filesystem;
using nlohmann::json;
using transport::HttpExchange;
using transport::HttpHeader;
using transport::HttpRequest;
using transport::HttpResponse;

namespace {

core::TimeMs wall_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}


const char* kFingerprint = "fp_idlefleet_0.1.0";

HttpResponse json_response(int status, std::string body) {
  HttpResponse r;
  r.status = status;
  r.body = std::move(body);
  return r;
}

HttpResponse error_response(const ApiError& e, int retry_after_s = 0) {
  HttpResponse r = json_response(e.status, error_body(e));
  if (retry_after_s > 0) r.headers.push_back({"Retry-After", std::to_string(retry_after_s)});
  return r;
}

// A refusal from the key gate: 401s say how to authenticate (RFC 6750).
HttpResponse refusal_response(const Refusal& r) {
  HttpResponse resp = error_response(r.error, static_cast<int>(r.retry_after_s));
  if (r.error.status == 401) resp.headers.push_back({"WWW-Authenticate", "Bearer realm=\"idlefleet\""});
  return resp;
}

// The client API: what needs a key when auth is required. The operator's and
// the vehicles' routes (/healthz, /metrics, /v1/status, /v1/vehicles,
// /v1/catalog) do not.
bool client_api_route(const std::string& p) {
  return p == "/v1/models" || p.rfind("/v1/models/", 0) == 0 || p == "/v1/completions" || p == "/v1/chat/completions" ||
         p == "/v1/embeddings";
}

// The peer's address without its port: "127.0.0.1:5555" -> "127.0.0.1", "[::1]:5" -> "[::1]".
std::string peer_address(const std::string& remote) {
  const size_t colon = remote.rfind(':');
  return colon == std::string::npos ? remote : remote.substr(0, colon);
}

// An Idempotency-Key: 1..kIdempotencyKeyBytesMax bytes of printable ASCII.
bool idempotency_key_valid(const std::string& k) {
  if (k.empty() || k.size() > store::kIdempotencyKeyBytesMax) return false;
  for (char c : k) {
    if (c < 0x20 || c > 0x7e) return false;
  }
  return true;
}

ApiError api_error(int status, std::string type, std::string message, std::string code = "") {
  ApiError e;
  e.status = status;
  e.type = std::move(type);
  e.message = std::move(message);
  e.code = std::move(code);
  return e;
}

std::string sampling_json(const core::Sampling& s) {
  return json{{"temperature", s.temperature}, {"top_k", s.top_k},
              {"top_p", s.top_p},             {"min_p", s.min_p},
              {"repeat_penalty", s.repeat_penalty}, {"repeat_last_n", s.repeat_last_n},
              {"presence_penalty", s.presence_penalty}, {"frequency_penalty", s.frequency_penalty},
              {"seed", s.seed}}
      .dump();
}

Result<core::Sampling> sampling_from_json(const std::string& text) {
  const json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return Unexpected(ErrorCode::kCorrupt, "sampling: not a JSON object");
  core::Sampling s;
  try {
    s.temperature = j.at("temperature").get<double>();
    s.top_k = j.at("top_k").get<int32_t>();
    s.top_p = j.at("top_p").get<double>();
    s.min_p = j.at("min_p").get<double>();
    s.repeat_penalty = j.at("repeat_penalty").get<double>();
    s.repeat_last_n = j.at("repeat_last_n").get<int32_t>();
    s.seed = j.at("seed").get<uint64_t>();
    // Absent in jobs stored before the penalties existed.
    s.presence_penalty = j.value("presence_penalty", 0.0);
    s.frequency_penalty = j.value("frequency_penalty", 0.0);
  } catch (const json::exception& e) {
    return Unexpected(ErrorCode::kCorrupt, std::string("sampling: ") + e.what());
  }
  return s;
}

// A model the catalog serves: its file, digest and tokenizer (no weights).
struct ServedModel {
  std::string id;
  std::string path;
  std::string sha256;
  uint64_t bytes = 0;
  int64_t created = 0;
  uint64_t context_length = 0;
  uint64_t embedding_dim = 0;  // <arch>.embedding_length: the width of its embeddings
  std::unique_ptr<engine::GgufFile> file;
  std::unique_ptr<engine::Tokenizer> tokenizer;
  std::optional<engine::ChatTemplate> chat_template;  // tokenizer.chat_template, when usable
};

// One client waiting on a job: what it asked for and what it has been sent.
struct ClientStream {
  std::shared_ptr<HttpExchange> exchange;
  CompletionRequest request;
  ResponseMeta meta;
  const ServedModel* model = nullptr;
  std::unique_ptr<engine::Detokenizer> detok;
  std::optional<engine::StopMatcher> stop;  // the request's stop strings
  std::string text;
  uint64_t prompt_tokens = 0;
  uint64_t completion_tokens = 0;
  bool started = false;
  std::string key_id;  // "" when auth is not required
  // Idempotency-Key (non-streamed requests only); idem_key "" when none.
  std::string idem_scope;
  std::string idem_key;
  store::Sha256 body_sha256{};
};

// One client waiting on POST /v1/embeddings. Each input is its own job
// (kind embed, id "<id>-<index>"), so that the inputs are computed on as many
// vehicles in parallel, each message stays small, and a preemption redoes one
// input, not all. The response is assembled in input order once every job is
// done; the first job that fails or is refused ends the request with an
// error and cancels the rest.
struct EmbeddingClient {
  std::shared_ptr<HttpExchange> exchange;
  std::string id;  // "emb-<hex>"
  std::string model;
  bool base64 = false;
  std::vector<core::JobSpec> specs;  // one per input, until submitted
  std::vector<std::string> job_ids;  // those submitted
  std::vector<std::vector<float>> vectors;
  size_t done = 0;
  uint64_t prompt_tokens = 0;
  std::string key_id;  // "" when auth is not required
  bool answered = false;
};

}  // namespace

struct CoordinatorServer::Impl {
  ServerOptions options;
  CoordinatorConfig& config = options.config;
  std::vector<std::unique_ptr<ServedModel>> models;
  std::unique_ptr<store::JobStore> store;
  std::unique_ptr<store::KeyStore> key_store;  // loop thread (and start/stop)
  std::unique_ptr<KeyGate> gate;
  std::unique_ptr<core::CoordinatorMachine> machine;
  std::vector<std::string> stop_jobs;  // jobs to end as done: a stop string appeared (apply())
  std::unique_ptr<transport::NatsClient> nats;
  std::unique_ptr<transport::HttpServer> http;
  transport::MetricsRegistry metrics;

  // Inbox: events for the machine, and new clients with their job.
  struct Item {
    core::CoordinatorEvent event;
    std::unique_ptr<ClientStream> client;  // with a SubmitJobEvent
    // Instead of `event`: submit this embedding request's jobs. (Initialised
    // so that the Item{event, client} of other inputs stays complete.)
    std::shared_ptr<EmbeddingClient> embedding = nullptr;
  };
  std::mutex mu;
  std::condition_variable cv;
  std::deque<Item> inbox;
  std::atomic<bool> stopping{false};
  std::thread loop_thread;

  // Loop-thread state.
  std::map<std::string, std::unique_ptr<ClientStream>> clients;
  // Embedding requests by their id, and each live job's request and input index.
  std::map<std::string, std::shared_ptr<EmbeddingClient>> embedding_clients;
  std::map<std::string, std::pair<std::shared_ptr<EmbeddingClient>, size_t>> embedding_jobs;
  std::vector<std::string> cancel_jobs;  // jobs to cancel after the effects at hand (apply())
  std::set<std::string> dirty;
  std::map<std::string, std::string> request_json;  // job id -> the request as accepted (until persisted final)
  // Idempotency keys of requests still running: scope + '\n' + key -> body hash.
  std::map<std::string, store::Sha256> idem_in_flight;
  core::TimeMs keys_synced_at = 0;
  core::TimeMs responses_pruned_at = 0;
  uint64_t tokens_last = 0;
  core::TimeMs rate_at = 0;
  double tokens_per_second = 0.0;

  // Published by the loop for HTTP threads.
  mutable std::mutex snapshot_mu;
  std::string status;
  std::string vehicles_doc = "{\"data\":[]}";
  core::TimeMs vehicles_doc_at = 0;

  transport::Counter* rejected_inbox_full = nullptr;
  std::mutex log_mu;
  LogLimiter log_limiter;

  const ServedModel* find_model(const std::string& id) const {
    for (const auto& m : models) {
      if (m->id == id) return m.get();
    }
    return nullptr;
  }

  void log(const std::string& line) const { std::fprintf(stderr, "coordinator: %s\n", line.c_str()); }

  // ---- Start ----------------------------------------------------------------

  Status load_models() {
    for (const ModelEntry& e : config.models) {
      auto m = std::make_unique<ServedModel>();
      m->id = e.id;
      m->path = e.path;
      auto file = engine::GgufFile::open(e.path);
      if (!file) return Unexpected(file.error().code, "model '" + e.id + "': " + file.error().message);
      auto tok = engine::Tokenizer::from_gguf(**file);
      if (!tok) return Unexpected(tok.error().code, "model '" + e.id + "': " + tok.error().message);
      auto digest = transport::sha256_file(e.path);
      if (!digest) return Unexpected(digest.error());
      m->sha256 = *digest;
      m->bytes = (*file)->file_bytes();
      std::error_code ec;
      const auto mtime = fs::last_write_time(e.path, ec);
      m->created = ec ? 0
                      : std::chrono::duration_cast<std::chrono::seconds>(
                            std::chrono::file_clock::to_sys(mtime).time_since_epoch())
                            .count();
      for (const auto& kv : (*file)->metadata()) {
        if (kv.key.size() > 15 && kv.key.substr(kv.key.size() - 15) == ".context_length") {
          auto v = (*file)->get_uint(kv.key);
          if (v) m->context_length = *v;
        }
        if (kv.key.size() > 17 && kv.key.substr(kv.key.size() - 17) == ".embedding_length") {
          auto v = (*file)->get_uint(kv.key);
          if (v) m->embedding_dim = *v;
        }
      }
      if (auto source = (*file)->get_string("tokenizer.chat_template")) {
        auto parsed = engine::ChatTemplate::parse(*source);
        if (parsed) {
          m->chat_template = std::move(*parsed);
        } else {
          log("model '" + e.id + "': its chat template is not usable (" + parsed.error().message +
              "); its chats use the fallback rendering");
        }
      }
      m->tokenizer = std::make_unique<engine::Tokenizer>(std::move(*tok));
      m->file = std::move(*file);
      models.push_back(std::move(m));
    }
    return {};
  }

  Status restore_jobs(core::TimeMs now) {
    auto stored = store->load_unfinished();
    if (!stored) return Unexpected(stored.error());
    core::JobLimits limits = machine->config().limits;
    size_t restored = 0;
    for (const store::StoredJob& s : *stored) {
      auto state = core::job_state_from_name(s.state);
      auto attempts = core::attempts_from_json(s.attempts_json);
      auto sampling = sampling_from_json(s.sampling_json);
      if (!state || !attempts || !sampling || find_model(s.model_id) == nullptr) {
        log("job " + s.id + " cannot be restored (corrupt record or model no longer served); left in the store");
        continue;
      }
      auto job = core::Job::restore(s.id, s.created_at, s.max_tokens, limits, *state, s.produced, *attempts,
                                    s.finish_reason, now);
      if (!job) {
        log("job " + s.id + ": " + job.error().message);
        continue;
      }
      core::JobSpec spec;
      spec.model_id = s.model_id;
      spec.prompt_ids = s.prompt_ids;
      spec.max_tokens = s.max_tokens;
      spec.stop_ids = s.stop_ids;
      spec.sampling = *sampling;
      spec.batch = s.batch;
      request_json[s.id] = s.request_json;
      if (s.kind == "embedding") {
        // Its vector was for a client who is gone with the old process, and
        // vectors are not stored: nobody could read the result. It ends as
        // failed, in the store too.
        spec.kind = core::WorkKind::kEmbed;
        CHECK(job->fail("the coordinator restarted; the embedding's client is gone", now).has_value());
        dirty.insert(s.id);
      }
      apply(machine->handle(core::RestoreJobEvent{std::move(*job), std::move(spec)}, now), now);
      ++restored;
    }
    if (restored > 0) log("restored " + std::to_string(restored) + " unfinished jobs from the store");
    return {};
  }

  Status start() {
    IF_RETURN_IF_ERROR(config.validate());
    IF_RETURN_IF_ERROR(load_models());
    std::error_code ec;
    fs::create_directories(config.data_dir, ec);
    auto st = store::JobStore::open((fs::path(config.data_dir) / "jobs.sqlite3").string());
    if (!st) return Unexpected(st.error());
    store = std::move(*st);
    auto ks = store::KeyStore::open((fs::path(config.data_dir) / "keys.db").string());
    if (!ks) return Unexpected(ks.error());
    key_store = std::move(*ks);
    gate = std::make_unique<KeyGate>(Prices{config.prompt_micros_per_mtok, config.completion_micros_per_mtok});
    IF_RETURN_IF_ERROR(gate->sync(*key_store));

    core::CoordinatorCoreConfig core_config;
    core_config.limits.lease_ms = config.lease_ms;
    core_config.limits.attempts_max = config.attempts_max;
    core_config.limits.tokens_max = config.max_tokens_limit;
    core_config.vehicle_timeout_ms = config.vehicle_timeout_ms;
    core_config.queue_jobs_max = config.queue_jobs_max;
    for (const auto& m : models) core_config.models.push_back({m->id, m->bytes, m->embedding_dim});
    machine = std::make_unique<core::CoordinatorMachine>(core_config);
    rejected_inbox_full = &metrics.counter("idlefleet_inbox_full_total", "Events dropped because the inbox was full");
    IF_RETURN_IF_ERROR(restore_jobs(wall_ms()));
    publish_status(wall_ms());

    transport::NatsOptions n;
    n.url = config.nats_url;
    n.name = "idlefleet-coordinator";
    auto client = transport::NatsClient::connect(n);
    if (!client) return Unexpected(client.error().code, "NATS at " + config.nats_url + ": " + client.error().message);
    nats = std::move(*client);
    auto sub = nats->subscribe(core::kUpSubjectWildcard,
                               [this](std::string_view subject, std::string_view data) { on_nats(subject, data); });
    if (!sub) return Unexpected(sub.error());
    IF_RETURN_IF_ERROR(nats->flush());

    loop_thread = std::thread([this] { loop(); });

    transport::HttpServerOptions h;
    h.host = config.http_host;
    h.port = config.http_port;
    h.threads = config.http_threads;
    h.body_bytes_max = config.request_bytes_max;
    auto server = transport::HttpServer::start(h, [this](const HttpRequest& r, std::shared_ptr<HttpExchange> x) {
      route(r, std::move(x));
    });
    if (!server) {
      stop();
      return Unexpected(server.error().code, "HTTP on " + config.http_host + ":" + std::to_string(config.http_port) +
                                                 ": " + server.error().message);
    }
    http = std::move(*server);
    return {};
  }

  void stop() {
    if (http) http->stop();
    if (!stopping.exchange(true)) {
      cv.notify_all();
      if (loop_thread.joinable()) loop_thread.join();
    }
    nats.reset();
    flush_dirty(wall_ms());
    if (gate && key_store) {
      if (auto st = gate->sync(*key_store); !st) log("key store: " + st.error().to_string());
    }
  }

  // ---- Inputs (any thread) -----------------------------------------------------

  bool post(Item item) {
    {
      std::lock_guard<std::mutex> lock(mu);
      if (inbox.size() >= kInboxEventsMax) {
        rejected_inbox_full->inc();
        return false;
      }
      inbox.push_back(std::move(item));
    }
    cv.notify_one();
    return true;
  }

  void on_nats(std::string_view subject, std::string_view data) {
    const std::string_view vid = core::vehicle_of_up_subject(subject);
    if (vid.empty()) {
      count_refusal("bad_subject", "message on subject '" + std::string(subject.substr(0, 200)) + "'");
      return;
    }
    auto m = core::decode_message(data);
    if (!m) {
      count_refusal("malformed_message", "from vehicle " + std::string(vid) + ": " + m.error().to_string());
      return;
    }
    post(Item{core::VehicleMessageEvent{std::string(vid), std::move(*m)}, nullptr});
  }

  // Every refusal is counted and logged; a flood of one kind is logged at a
  // bounded rate (LogLimiter), with the count of lines it held back.
  void count_refusal(const std::string& what, const std::string& text) {
    metrics.counter("idlefleet_messages_rejected_total", "Vehicle messages refused, by reason", {{"reason", what}}).inc();
    log_limited(what, "refused (" + what + "): " + text);
  }

  void count_event(const std::string& what, const std::string& text) {
    metrics.counter("idlefleet_events_total", "Noteworthy fleet events, by kind", {{"event", what}}).inc();
    if (options.verbose) log_limited(what, text);
  }

  void log_limited(const std::string& key, const std::string& line) {
    uint64_t dropped = 0;
    {
      std::lock_guard<std::mutex> lock(log_mu);
      if (!log_limiter.allow(key, wall_ms(), &dropped)) return;
    }
    log(line + (dropped > 0 ? " (and " + std::to_string(dropped) + " more like it not logged)" : ""));
  }

  void route(const HttpRequest& r, std::shared_ptr<HttpExchange> x) {
    const std::string& p = r.path;
    if (r.method == "GET" && p == "/healthz") {
      HttpResponse resp;
      resp.content_type = "text/plain";
      resp.body = "ok\n";
      return x->respond(resp);
    }
    if (r.method == "GET" && p == "/metrics") {
      HttpResponse resp;
      resp.content_type = "text/plain; version=0.0.4";
      resp.body = metrics.render();
      return x->respond(resp);
    }
    if (r.method == "GET" && p == "/v1/status") {
      std::lock_guard<std::mutex> lock(snapshot_mu);
      return x->respond(json_response(200, status));
    }
    if (r.method == "GET" && p == "/v1/vehicles") {
      std::lock_guard<std::mutex> lock(snapshot_mu);
      return x->respond(json_response(200, vehicles_doc));
    }
    std::string key_id;
    if (config.auth_required && client_api_route(p)) {
      auto who = gate->authenticate(r.header("authorization"));
      if (auto* refusal = std::get_if<Refusal>(&who)) return x->respond(refusal_response(*refusal));
      key_id = std::move(std::get<std::string>(who));
    }
    if (r.method == "GET" && p == "/v1/models") {
      std::vector<ModelCard> cards;
      for (const auto& m : models) cards.push_back({m->id, m->created});
      return x->respond(json_response(200, models_list_body(cards)));
    }
    if (r.method == "GET" && p.rfind("/v1/models/", 0) == 0) {
      const ServedModel* m = find_model(p.substr(11));
      if (m == nullptr) {
        return x->respond(error_response(api_error(404, "invalid_request_error",
                                                   "The model '" + p.substr(11, 128) + "' does not exist",
                                                   "model_not_found")));
      }
      return x->respond(json_response(200, model_body({m->id, m->created})));
    }
    if (r.method == "GET" && p == "/v1/catalog") return x->respond(json_response(200, catalog_json()));
    if (r.method == "GET" && p.rfind("/v1/catalog/", 0) == 0 && p.size() > 17 &&
        p.substr(p.size() - 5) == "/file") {
      return serve_model_file(p.substr(12, p.size() - 17), x);
    }
    if (r.method == "POST" && (p == "/v1/completions" || p == "/v1/chat/completions")) {
      return submit(r, p == "/v1/chat/completions", key_id, std::move(x));
    }
    if (r.method == "POST" && p == "/v1/embeddings") return submit_embeddings(r, key_id, std::move(x));
    if (p == "/v1/completions" || p == "/v1/chat/completions" || p == "/v1/models" || p == "/v1/catalog" ||
        p == "/v1/embeddings") {
      return x->respond(error_response(api_error(405, "invalid_request_error", "method " + r.method.substr(0, 16) +
                                                                                  " not allowed on " + p)));
    }
    x->respond(error_response(api_error(404, "invalid_request_error", "no route for " + r.method.substr(0, 16) + " " +
                                                                          p.substr(0, 200))));
  }

  std::string catalog_json() const {
    json list = json::array();
    for (const auto& m : models) {
      list.push_back({{"id", m->id}, {"sha256", m->sha256}, {"bytes", m->bytes},
                      {"url", "/v1/catalog/" + m->id + "/file"}});
    }
    return json{{"models", list}}.dump();
  }

  void serve_model_file(const std::string& id, const std::shared_ptr<HttpExchange>& x) {
    const ServedModel* m = find_model(id);
    if (m == nullptr) {
      return x->respond(error_response(api_error(404, "invalid_request_error", "no model '" + id.substr(0, 128) + "'",
                                                 "model_not_found")));
    }
    if (m->bytes > kCatalogFileBytesMax) {
      return x->respond(error_response(api_error(
          413, "invalid_request_error", "model files over " + std::to_string(kCatalogFileBytesMax) +
                                            " bytes are not served by the catalog; give vehicles a download URL")));
    }
    std::ifstream in(m->path, std::ios::binary);
    std::ostringstream ss;
    ss << in.rdbuf();
    HttpResponse resp;
    resp.content_type = "application/octet-stream";
    resp.body = ss.str();
    x->respond(std::move(resp));
  }

  // The prompt's token ids: a completion's prompt as `idlefleet run` encodes
  // it; a chat's messages through the model's own template when it has one
  // (its control texts become control tokens; a message may not contain
  // them), else the fallback rendering the parser left in req.prompt.
  static std::variant<std::vector<int32_t>, ApiError> prompt_tokens(const ServedModel& model,
                                                                    const CompletionRequest& req) {
    const engine::Tokenizer& tok = *model.tokenizer;
    std::vector<int32_t> ids;
    if (req.chat && model.chat_template) {
      engine::ChatTemplateInputs in;
      for (const ChatMessage& m : req.messages) {
        if (const int32_t id = tok.find_control_text(m.content); id >= 0) {
          ApiError e = api_error(400, "invalid_request_error",
                                 "a message contains the model's control token '" + tok.piece(id) + "'");
          e.param = "messages";
          return e;
        }
        in.messages.push_back({m.role, m.content});
      }
      in.add_generation_prompt = true;
      in.bos_token = tok.piece(tok.bos());
      in.eos_token = tok.piece(tok.eos());
      auto text = model.chat_template->render(in);
      if (!text) {
        ApiError e = api_error(400, "invalid_request_error", "the model's chat template refused the messages: " +
                                                                 text.error().message);
        e.param = "messages";
        return e;
      }
      ids = tok.encode_with_controls(*text, tok.add_bos());
    } else {
      ids = tok.encode(req.prompt, tok.add_bos());
    }
    if (ids.empty()) ids.push_back(tok.bos());
    return ids;
  }

  void submit(const HttpRequest& r, bool chat, const std::string& key_id, std::shared_ptr<HttpExchange> x) {
    ApiLimits limits;
    limits.max_tokens_limit = config.max_tokens_limit;
    limits.body_bytes_max = config.request_bytes_max;
    auto parsed = parse_completion_request(r.body, chat, limits);
    if (auto* e = std::get_if<ApiError>(&parsed)) return x->respond(error_response(*e));
    CompletionRequest& req = std::get<CompletionRequest>(parsed);
    const ServedModel* model = find_model(req.model);
    if (model == nullptr) {
      ApiError e = api_error(404, "invalid_request_error", "The model '" + req.model + "' does not exist",
                             "model_not_found");
      e.param = "model";
      return x->respond(error_response(e));
    }
    // As `idlefleet run` does: BOS when the model adds one, BOS alone for an
    // empty prompt, and stop at end of sequence or a new beginning.
    const engine::Tokenizer& tok = *model->tokenizer;
    auto prompt_ids = prompt_tokens(*model, req);
    if (auto* e = std::get_if<ApiError>(&prompt_ids)) return x->respond(error_response(*e));
    std::vector<int32_t> ids = std::move(std::get<std::vector<int32_t>>(prompt_ids));
    const uint64_t max_tokens = req.max_tokens.value_or(config.max_tokens_default);
    if (model->context_length > 0 && ids.size() + max_tokens > model->context_length) {
      ApiError e = api_error(400, "invalid_request_error",
                             "This model's maximum context length is " + std::to_string(model->context_length) +
                                 " tokens; the prompt has " + std::to_string(ids.size()) + " and " +
                                 std::to_string(max_tokens) + " more were requested",
                             "context_length_exceeded");
      e.param = chat ? "messages" : "prompt";
      return x->respond(error_response(e));
    }
    const std::string* idem = r.header("idempotency-key");
    if (idem != nullptr && !idempotency_key_valid(*idem)) {
      ApiError e = api_error(400, "invalid_request_error",
                             "The Idempotency-Key header must be 1 to " +
                                 std::to_string(store::kIdempotencyKeyBytesMax) + " bytes of printable ASCII");
      return x->respond(error_response(e));
    }
    if (!key_id.empty()) {
      if (auto refusal = gate->admit(key_id, ids.size(), wall_ms())) return x->respond(refusal_response(*refusal));
    }
    if (!req.seed_given) req.sampling.seed = transport::random_u64();

    auto client = std::make_unique<ClientStream>();
    client->exchange = x;
    client->model = model;
    client->meta.id = (chat ? "chatcmpl-" : "cmpl-") + transport::random_hex(12);
    client->meta.created = wall_ms() / 1000;
    client->meta.model = model->id;
    client->meta.system_fingerprint = kFingerprint;
    client->detok = std::make_unique<engine::Detokenizer>(tok);
    if (!req.stop.empty()) client->stop = std::move(*engine::StopMatcher::create(req.stop));  // checked by the parser
    for (int32_t id : ids) (void)client->detok->push(id);  // the prompt primes the detokenizer, as in a local run
    client->prompt_tokens = ids.size();
    client->key_id = key_id;
    // Streams are not replayed (a stored stream would be a different
    // response), so their Idempotency-Key is ignored.
    if (idem != nullptr && !req.stream) {
      client->idem_scope = key_id.empty() ? "client:" + peer_address(r.remote) : key_id;
      client->idem_key = *idem;
      client->body_sha256 = store::sha256(r.body);
    }

    core::JobSpec spec;
    spec.model_id = model->id;
    spec.prompt_ids = std::move(ids);
    spec.max_tokens = max_tokens;
    spec.stop_ids = {tok.eos(), tok.bos()};
    spec.sampling = req.sampling;
    client->request = std::move(req);
    const std::string job_id = client->meta.id;
    if (!post(Item{core::SubmitJobEvent{job_id, std::move(spec)}, std::move(client)})) {
      x->respond(error_response(api_error(503, "server_error", "the coordinator is overloaded; retry shortly"), 1));
    }
  }

  // POST /v1/embeddings (HTTP thread): validated and tokenised here, one job
  // per input submitted by the loop (submit_embedding_jobs). Texts are
  // encoded as `idlefleet embed` encodes them (BOS when the model adds one);
  // token ids are taken as given. Each input must fit the positions an
  // agent's context holds: the model's context length, at most
  // engine::kDefaultContextLength (agent/fleet.cc makes its contexts so).
  // The Idempotency-Key header is not honoured here.
  void submit_embeddings(const HttpRequest& r, const std::string& key_id, std::shared_ptr<HttpExchange> x) {
    ApiLimits limits;
    limits.body_bytes_max = config.request_bytes_max;
    auto parsed = parse_embedding_request(r.body, limits);
    if (auto* e = std::get_if<ApiError>(&parsed)) return x->respond(error_response(*e));
    EmbeddingRequest& req = std::get<EmbeddingRequest>(parsed);
    const ServedModel* model = find_model(req.model);
    if (model == nullptr) {
      ApiError e = api_error(404, "invalid_request_error", "The model '" + req.model + "' does not exist",
                             "model_not_found");
      e.param = "model";
      return x->respond(error_response(e));
    }
    if (req.dimensions && *req.dimensions != model->embedding_dim) {
      ApiError e = api_error(400, "invalid_request_error",
                             "This model's embeddings have " + std::to_string(model->embedding_dim) +
                                 " dimensions; 'dimensions' may only be that (they are not shortened)");
      e.param = "dimensions";
      return x->respond(error_response(e));
    }
    const engine::Tokenizer& tok = *model->tokenizer;
    const uint64_t positions = std::min<uint64_t>(
        model->context_length > 0 ? model->context_length : static_cast<uint64_t>(engine::kDefaultContextLength),
        static_cast<uint64_t>(engine::kDefaultContextLength));
    auto client = std::make_shared<EmbeddingClient>();
    client->specs.reserve(req.inputs.size());
    for (size_t i = 0; i < req.inputs.size(); ++i) {
      EmbeddingInput& in = req.inputs[i];
      const std::string where = req.inputs.size() == 1 ? std::string("input") : "input[" + std::to_string(i) + "]";
      std::vector<int32_t> ids;
      if (in.tokens) {
        for (int32_t id : in.ids) {
          if (id >= tok.vocab_size()) {
            ApiError e = api_error(400, "invalid_request_error",
                                   where + " holds token id " + std::to_string(id) + ", outside the model's " +
                                       std::to_string(tok.vocab_size()) + "-token vocabulary");
            e.param = "input";
            return x->respond(error_response(e));
          }
        }
        ids = std::move(in.ids);
      } else {
        ids = tok.encode(in.text, tok.add_bos());
        if (ids.empty()) ids.push_back(tok.bos());
      }
      if (ids.size() > positions) {
        ApiError e = api_error(400, "invalid_request_error",
                               where + " has " + std::to_string(ids.size()) + " tokens; this model embeds at most " +
                                   std::to_string(positions) + " tokens per input",
                               "context_length_exceeded");
        e.param = "input";
        return x->respond(error_response(e));
      }
      client->prompt_tokens += ids.size();
      core::JobSpec spec;
      spec.model_id = model->id;
      spec.prompt_ids = std::move(ids);
      spec.max_tokens = 0;
      spec.kind = core::WorkKind::kEmbed;
      client->specs.push_back(std::move(spec));
    }
    if (!key_id.empty()) {
      if (auto refusal = gate->admit(key_id, client->prompt_tokens, wall_ms())) {
        return x->respond(refusal_response(*refusal));
      }
    }
    client->exchange = x;
    client->id = "emb-" + transport::random_hex(12);
    client->model = model->id;
    client->base64 = req.base64;
    client->vectors.resize(client->specs.size());
    client->key_id = key_id;
    Item item;
    item.embedding = std::move(client);
    if (!post(std::move(item))) {
      x->respond(error_response(api_error(503, "server_error", "the coordinator is overloaded; retry shortly"), 1));
    }
  }

  // ---- The loop thread ------------------------------------------------------------

  // An embedding request's jobs, one per input, submitted in input order; a
  // refusal stops the submitting (and answers the client: on_accepted).
  void submit_embedding_jobs(std::shared_ptr<EmbeddingClient> c, core::TimeMs now) {
    embedding_clients[c->id] = c;
    std::vector<core::JobSpec> specs = std::move(c->specs);
    c->specs.clear();
    for (size_t i = 0; i < specs.size() && !c->answered; ++i) {
      const std::string job_id = std::string(c->id).append("-").append(std::to_string(i));
      c->job_ids.push_back(job_id);
      embedding_jobs[job_id] = {c, i};
      request_json[job_id] = json{{"embedding", true}, {"model", c->model}, {"index", i}}.dump();
      apply(machine->handle(core::SubmitJobEvent{job_id, std::move(specs[i])}, now), now);
    }
    forget_embedding_client_if_settled(*c);
  }

  // Ends an embedding request that has not been answered: answers `err` and
  // cancels its jobs still live.
  void fail_embedding(EmbeddingClient& c, const ApiError& err, int retry_after_s) {
    if (c.answered) return;
    c.answered = true;
    c.exchange->respond(error_response(err, retry_after_s));
    for (const std::string& id : c.job_ids) {
      if (embedding_jobs.count(id) != 0) cancel_jobs.push_back(id);
    }
  }

  // Drops the request once it is answered and none of its jobs is live.
  void forget_embedding_client_if_settled(const EmbeddingClient& c) {
    if (!c.answered || !c.specs.empty()) return;
    for (const std::string& id : c.job_ids) {
      if (embedding_jobs.count(id) != 0) return;
    }
    embedding_clients.erase(c.id);
  }

  // JobAcceptedEffect for an embedding job: a refusal ends its request.
  void on_embedding_accepted(const core::JobAcceptedEffect& e) {
    auto it = embedding_jobs.find(e.job_id);
    const std::shared_ptr<EmbeddingClient> c = it->second.first;
    if (e.status) return;
    embedding_jobs.erase(it);
    request_json.erase(e.job_id);
    const Error& err = e.status.error();
    if (err.code == ErrorCode::kOutOfRange && err.message.find("queue is full") != std::string::npos) {
      fail_embedding(*c, api_error(429, "rate_limit_exceeded", err.message, "queue_full"), 5);
    } else {
      fail_embedding(*c, api_error(400, "invalid_request_error", err.message), 0);
    }
    forget_embedding_client_if_settled(*c);
  }

  void on_embedding(const core::JobEmbeddingEffect& e) {
    auto it = embedding_jobs.find(e.job_id);
    if (it == embedding_jobs.end()) return;
    it->second.first->vectors[it->second.second] = e.values;
  }

  // JobEndedEffect for an embedding job: the response goes when all are done.
  void on_embedding_ended(const core::JobEndedEffect& e) {
    auto it = embedding_jobs.find(e.job_id);
    const std::shared_ptr<EmbeddingClient> c = it->second.first;
    embedding_jobs.erase(it);
    if (e.state != core::JobState::kDone) {
      fail_embedding(*c, api_error(503, "server_error", "the embedding job " + std::string(core::job_state_name(e.state)) +
                                                           ": " + e.finish_reason),
                     5);
    } else if (!c->answered && ++c->done == c->vectors.size()) {
      c->answered = true;
      if (!c->key_id.empty()) gate->record_usage(c->key_id, c->prompt_tokens, 0, wall_ms());
      c->exchange->respond(json_response(200, embedding_response(c->model, c->vectors, c->base64, c->prompt_tokens)));
      c->vectors.clear();
    }
    forget_embedding_client_if_settled(*c);
  }

  // Embedding clients that went away: their jobs are cancelled.
  void drop_gone_embedding_clients() {
    std::vector<std::shared_ptr<EmbeddingClient>> gone;
    for (const auto& [id, c] : embedding_clients) {
      if (!c->answered && c->exchange->closed()) gone.push_back(c);
    }
    for (const auto& c : gone) {
      c->answered = true;
      for (const std::string& id : c->job_ids) {
        if (embedding_jobs.count(id) != 0) cancel_jobs.push_back(id);
      }
    }
  }

  void loop() {
    const int64_t tick_ms = config.tick_ms;
    core::TimeMs next_tick = wall_ms();
    std::deque<Item> items;
    while (!stopping.load()) {
      {
        std::unique_lock<std::mutex> lock(mu);
        cv.wait_for(lock, std::chrono::milliseconds(std::max<int64_t>(1, next_tick - wall_ms())),
                    [&] { return !inbox.empty() || stopping.load(); });
        items.swap(inbox);
      }
      for (Item& item : items) {
        const core::TimeMs now = wall_ms();
        if (item.embedding) {
          submit_embedding_jobs(std::move(item.embedding), now);
          continue;
        }
        if (item.client) {
          const std::string id = std::get<core::SubmitJobEvent>(item.event).job_id;
          request_json[id] = json{{"chat", item.client->request.chat},
                                  {"model", item.client->request.model},
                                  {"stream", item.client->request.stream}}
                                 .dump();
          if (!item.client->idem_key.empty() && !begin_idempotent(*item.client, now)) {
            request_json.erase(id);
            continue;  // answered from the store, or refused
          }
          clients[id] = std::move(item.client);
        }
        apply(machine->handle(item.event, now), now);
      }
      items.clear();
      const core::TimeMs now = wall_ms();
      if (now >= next_tick) {
        // Clients that went away: their jobs are cancelled (the vehicle stops).
        std::vector<std::string> gone;
        for (const auto& [id, c] : clients) {
          if (c->exchange->closed()) gone.push_back(id);
        }
        for (const std::string& id : gone) apply(machine->handle(core::CancelJobEvent{id}, now), now);
        drop_gone_embedding_clients();
        apply(machine->handle(core::CoordinatorTick{}, now), now);
        flush_dirty(now);
        sync_keys(now);
        publish_status(now);
        next_tick = now + tick_ms;
      }
    }
  }

  void apply(std::vector<core::CoordinatorEffect> effects, core::TimeMs now) {
    for (auto& effect : effects) {
      if (auto* send = std::get_if<core::SendToVehicleEffect>(&effect)) {
        auto st = nats->publish(core::down_subject(send->vehicle_id), core::encode_message(send->message));
        if (!st) log("publish to " + send->vehicle_id + " failed: " + st.error().to_string());
        if (options.verbose && std::holds_alternative<core::AssignMessage>(send->message)) {
          const auto& a = std::get<core::AssignMessage>(send->message);
          log("job " + a.job_id + " attempt " + std::to_string(a.attempt) + " -> " + send->vehicle_id + " (" +
              std::to_string(a.produced_ids.size()) + " tokens already produced)");
        }
      } else if (auto* acc = std::get_if<core::JobAcceptedEffect>(&effect)) {
        if (embedding_jobs.count(acc->job_id) != 0) {
          on_embedding_accepted(*acc);
        } else {
          on_accepted(*acc);
        }
      } else if (auto* emb = std::get_if<core::JobEmbeddingEffect>(&effect)) {
        on_embedding(*emb);
      } else if (auto* tokens = std::get_if<core::JobTokensEffect>(&effect)) {
        on_tokens(*tokens);
      } else if (auto* ended = std::get_if<core::JobEndedEffect>(&effect)) {
        if (embedding_jobs.count(ended->job_id) != 0) {
          on_embedding_ended(*ended);
        } else {
          on_ended(*ended);
        }
      } else if (auto* persist = std::get_if<core::PersistJobEffect>(&effect)) {
        dirty.insert(persist->job_id);
      } else if (auto* l = std::get_if<core::CoordinatorLogEffect>(&effect)) {
        if (l->refusal) {
          count_refusal(l->what, l->text);
        } else {
          count_event(l->what, l->text);
        }
      }
    }
    // Jobs whose stop string appeared end now (after the effects above, so
    // that nothing they emitted is lost); their own effects come back here.
    while (!stop_jobs.empty()) {
      const std::string id = std::move(stop_jobs.back());
      stop_jobs.pop_back();
      apply(machine->handle(core::StopJobEvent{id, "stop"}, now), now);
    }
    // Jobs of embedding requests that ended early (a sibling failed, the
    // client went away).
    while (!cancel_jobs.empty()) {
      const std::string id = std::move(cancel_jobs.back());
      cancel_jobs.pop_back();
      apply(machine->handle(core::CancelJobEvent{id}, now), now);
    }
  }

  void on_accepted(const core::JobAcceptedEffect& e) {
    auto it = clients.find(e.job_id);
    if (it == clients.end()) return;
    ClientStream& c = *it->second;
    if (!e.status) {
      const Error& err = e.status.error();
      ApiError api;
      int retry_after = 0;
      if (err.code == ErrorCode::kNotFound) {
        api = api_error(404, "invalid_request_error", err.message, "model_not_found");
      } else if (err.code == ErrorCode::kOutOfRange && err.message.find("queue is full") != std::string::npos) {
        api = api_error(429, "rate_limit_exceeded", err.message, "queue_full");
        retry_after = 5;
      } else {
        api = api_error(400, "invalid_request_error", err.message);
      }
      c.exchange->respond(error_response(api, retry_after));
      end_idempotent(c, nullptr);
      clients.erase(it);
      request_json.erase(e.job_id);
      return;
    }
    if (c.request.stream) {
      c.exchange->stream_begin(200, {});
      if (c.request.chat) c.exchange->stream_write(completion_chunk_event(c.meta, true, "", std::nullopt, true));
      c.started = true;
    }
  }

  void on_tokens(const core::JobTokensEffect& e) {
    auto it = clients.find(e.job_id);
    if (it == clients.end()) return;
    ClientStream& c = *it->second;
    std::string piece;
    for (int32_t id : e.ids) piece += c.detok->push(id);
    c.completion_tokens += e.ids.size();
    if (c.stop) {
      if (c.stop->stopped()) return;  // tokens that were on their way when the stop string appeared
      engine::StopStep step = c.stop->push(piece);
      piece = std::move(step.text);
      if (step.stopped) stop_jobs.push_back(e.job_id);
    }
    if (c.request.stream) {
      if (!piece.empty()) c.exchange->stream_write(completion_chunk_event(c.meta, c.request.chat, piece, std::nullopt, false));
    } else {
      c.text += piece;
    }
  }

  void on_ended(const core::JobEndedEffect& e) {
    auto it = clients.find(e.job_id);
    if (it == clients.end()) return;
    ClientStream& c = *it->second;
    std::string tail = c.detok->flush();
    if (c.stop) tail = c.stop->stopped() ? std::string() : c.stop->push(tail).text + c.stop->flush();
    const Usage usage{c.prompt_tokens, c.completion_tokens};
    if (e.state == core::JobState::kDone && !c.key_id.empty()) {
      gate->record_usage(c.key_id, c.prompt_tokens, c.completion_tokens, wall_ms());
    }
    if (e.state == core::JobState::kDone) {
      if (c.request.stream) {
        c.exchange->stream_write(completion_chunk_event(c.meta, c.request.chat, tail, e.finish_reason, false));
        if (c.request.include_usage) c.exchange->stream_write(usage_event(c.meta, c.request.chat, usage));
        c.exchange->stream_write(std::string(kDoneEvent));
        c.exchange->stream_end();
      } else {
        std::string body = completion_response(c.meta, c.request.chat, c.text + tail, e.finish_reason, usage);
        // Stored before it is sent, so that a retry the moment it arrives is a replay.
        end_idempotent(c, &body);
        c.exchange->respond(json_response(200, std::move(body)));
      }
    } else {
      const ApiError err = api_error(503, "server_error",
                                     "the job " + std::string(core::job_state_name(e.state)) + ": " + e.finish_reason);
      if (c.request.stream) {
        c.exchange->stream_write("data: " + error_body(err) + "\n\n");
        c.exchange->stream_end();
      } else {
        c.exchange->respond(error_response(err, 5));
      }
    }
    end_idempotent(c, nullptr);
    clients.erase(it);
  }

  // ---- Keys and idempotency (loop thread) -------------------------------------------

  // A request with an Idempotency-Key, before it becomes a job. Returns true
  // to run it; false when it was answered: the stored response of the same
  // request, or 409 for a key in use by a running request or by a different
  // body. Stored responses older than kIdempotencyWindowMs do not count.
  bool begin_idempotent(ClientStream& c, core::TimeMs now) {
    const std::string slot = std::string(c.idem_scope).append("\n").append(c.idem_key);
    auto conflict = [&](const std::string& message) {
      ApiError e = api_error(409, "invalid_request_error", message, "idempotency_key_conflict");
      c.exchange->respond(error_response(e));
      return false;
    };
    if (idem_in_flight.count(slot) != 0) {
      return conflict("A request with this Idempotency-Key is still in progress; retry when it has finished");
    }
    auto stored = key_store->get_response(c.idem_scope, c.idem_key);
    if (!stored) {
      log("key store: " + stored.error().to_string() + "; the request runs without its Idempotency-Key");
      c.idem_key.clear();
      return true;
    }
    if (stored->has_value() && (*stored)->created_at >= now - kIdempotencyWindowMs) {
      if ((*stored)->request_sha256 != c.body_sha256) {
        return conflict("This Idempotency-Key was already used with a different request body");
      }
      HttpResponse resp = json_response((*stored)->status, std::move((*stored)->body));
      resp.headers.push_back({"Idempotent-Replayed", "true"});
      c.exchange->respond(std::move(resp));
      count_event("idempotent_replay", "replayed the response for an Idempotency-Key");
      return false;
    }
    idem_in_flight[slot] = c.body_sha256;
    return true;
  }

  // The request ended: a 200 body (nullptr for anything else) is stored
  // for replays; failures are not, so that a retry runs again.
  void end_idempotent(ClientStream& c, const std::string* body) {
    if (c.idem_key.empty()) return;
    idem_in_flight.erase(std::string(c.idem_scope).append("\n").append(c.idem_key));
    if (body == nullptr) return;
    if (body->size() > store::kIdempotencyResponseBytesMax) return;  // too large to keep: a retry runs again
    store::StoredResponse r;
    r.request_sha256 = c.body_sha256;
    r.status = 200;
    r.body = *body;
    r.created_at = wall_ms();
    if (auto st = key_store->put_response(c.idem_scope, c.idem_key, r); !st) log("key store: " + st.error().to_string());
  }

  // Usage out and key changes in, every kKeysSyncMs; old stored responses
  // pruned every minute.
  void sync_keys(core::TimeMs now) {
    if (now - keys_synced_at >= kKeysSyncMs) {
      keys_synced_at = now;
      if (auto st = gate->sync(*key_store); !st) log_limited("key_store", "key store: " + st.error().to_string());
    }
    if (now - responses_pruned_at >= core::kMinuteMs) {
      responses_pruned_at = now;
      auto pruned = key_store->prune_responses(now - kIdempotencyWindowMs);
      if (!pruned) log_limited("key_store", "key store: " + pruned.error().to_string());
    }
  }

  void flush_dirty(core::TimeMs now) {
    if (dirty.empty() || machine == nullptr || store == nullptr) return;
    std::vector<store::StoredJob> rows;
    for (const std::string& id : dirty) {
      const core::JobEntry* e = machine->job(id);
      if (e == nullptr) continue;
      store::StoredJob s;
      s.id = id;
      auto rj = request_json.find(id);
      const json request = rj == request_json.end() ? json::object() : json::parse(rj->second, nullptr, false);
      s.kind = e->spec.kind == core::WorkKind::kEmbed                        ? "embedding"
               : request.is_object() && request.value("chat", false) ? "chat"
                                                                      : "completion";
      s.model_id = e->spec.model_id;
      s.request_json = rj == request_json.end() ? "{}" : rj->second;
      s.prompt_ids = e->spec.prompt_ids;
      s.max_tokens = e->spec.max_tokens;
      s.stop_ids = e->spec.stop_ids;
      s.sampling_json = sampling_json(e->spec.sampling);
      s.batch = e->spec.batch;
      s.state = core::job_state_name(e->job.state());
      s.produced = e->job.produced();
      s.finish_reason = e->job.finish_reason();
      s.attempts_json = core::attempts_to_json(e->job.attempts());
      s.created_at = e->job.created_at();
      s.updated_at = now;
      rows.push_back(std::move(s));
      if (core::job_state_final(e->job.state())) request_json.erase(id);
    }
    dirty.clear();
    if (auto st = store->put(rows); !st) log("store: " + st.error().to_string());
  }

  void publish_status(core::TimeMs now) {
    const core::CoordinatorCounters& k = machine->counters();
    std::map<std::string, int> by_state;
    for (const char* s : {"driving", "parked", "charging", "eligible", "serving", "preempting", "offline"}) by_state[s] = 0;
    double kw = 0.0;
    size_t online = 0;
    for (const auto& [id, v] : machine->vehicles()) {
      if (!v.online || !v.state) {
        ++by_state["offline"];
        continue;
      }
      ++online;
      by_state[v.state->state]++;
      kw += v.state->power_w / 1000.0;
    }
    size_t running = 0;
    for (const auto& [id, e] : machine->jobs()) running += e.job.current() != nullptr ? 1 : 0;
    if (rate_at == 0) rate_at = now;
    if (now - rate_at >= 1000) {
      const double instant = static_cast<double>(k.tokens_relayed - tokens_last) * 1000.0 / static_cast<double>(now - rate_at);
      tokens_per_second = tokens_per_second == 0.0 ? instant : 0.7 * tokens_per_second + 0.3 * instant;
      tokens_last = k.tokens_relayed;
      rate_at = now;
    }
    const json doc = {
        {"vehicles", {{"known", machine->vehicles().size()}, {"online", online}, {"by_state", by_state},
                      {"available", machine->vehicles_available()}}},
        {"jobs", {{"queued", machine->queue_depth()}, {"running", running}, {"live", machine->jobs_live()},
                  {"submitted", k.jobs_submitted}, {"done", k.jobs_done}, {"failed", k.jobs_failed},
                  {"cancelled", k.jobs_cancelled}, {"refused", k.jobs_refused}}},
        {"tokens", {{"relayed", k.tokens_relayed}, {"per_second", tokens_per_second}}},
        {"kw_in_use", kw},
        {"preemptions", k.preemptions},
        {"attempts_lost", k.attempts_lost},
        {"messages", {{"accepted", k.messages_accepted}, {"rejected", k.messages_rejected}}}};
    // The vehicles, at most every 200 ms and kVehiclesListedMax of them: a
    // view for people and tests, not a feed.
    std::string vdoc;
    if (now - vehicles_doc_at >= 200) {
      json list = json::array();
      for (const auto& [id, v] : machine->vehicles()) {
        if (list.size() >= kVehiclesListedMax) break;
        json reasons = json::array();
        if (v.state) {
          for (const std::string& r : v.state->reasons) reasons.push_back(r);
        }
        list.push_back({{"id", id},
                        {"online", v.online},
                        {"state", v.online && v.state ? v.state->state : "offline"},
                        {"eligible", v.online && v.state && v.state->eligible},
                        {"reasons", reasons},
                        {"soc_pct", v.state ? v.state->soc_pct : 0.0},
                        {"accelerator_temp_c", v.state ? v.state->accelerator_temp_c : 0.0},
                        {"job_id", v.job_id},
                        {"attempts_completed", v.attempts_completed},
                        {"attempts_lost", v.attempts_lost},
                        {"models_cached", v.hello.models_cached}});
      }
      vdoc = json{{"object", "list"}, {"data", list}}.dump(-1, ' ', false, json::error_handler_t::replace);
      vehicles_doc_at = now;
    }
    {
      std::lock_guard<std::mutex> lock(snapshot_mu);
      status = doc.dump();
      if (!vdoc.empty()) vehicles_doc = std::move(vdoc);
    }
    for (const auto& [s, n] : by_state) {
      metrics.gauge("idlefleet_vehicles", "Vehicles by state", {{"state", s}}).set(n);
    }
    metrics.gauge("idlefleet_jobs_queued", "Jobs waiting for a vehicle").set(static_cast<double>(machine->queue_depth()));
    metrics.gauge("idlefleet_jobs_running", "Jobs with a live attempt").set(static_cast<double>(running));
    metrics.gauge("idlefleet_power_kw", "Accelerator power in use across the fleet").set(kw);
    metrics.gauge("idlefleet_tokens_per_second", "Tokens relayed per second (smoothed)").set(tokens_per_second);
    auto set_counter = [&](const char* name, const char* help, uint64_t value) {
      transport::Counter& c = metrics.counter(name, help);
      if (value > c.value()) c.inc(value - c.value());
    };
    set_counter("idlefleet_jobs_submitted_total", "Jobs accepted", k.jobs_submitted);
    set_counter("idlefleet_jobs_done_total", "Jobs finished", k.jobs_done);
    set_counter("idlefleet_jobs_failed_total", "Jobs failed", k.jobs_failed);
    set_counter("idlefleet_jobs_cancelled_total", "Jobs cancelled", k.jobs_cancelled);
    set_counter("idlefleet_placements_total", "Attempts placed on vehicles", k.placements);
    set_counter("idlefleet_preemptions_total", "Attempts stopped by their vehicle", k.preemptions);
    set_counter("idlefleet_attempts_lost_total", "Attempts lost (lease expired, vehicle restarted)", k.attempts_lost);
    set_counter("idlefleet_tokens_total", "Tokens relayed to clients", k.tokens_relayed);
  }
};

CoordinatorServer::CoordinatorServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

CoordinatorServer::~CoordinatorServer() { stop(); }

Result<std::unique_ptr<CoordinatorServer>> CoordinatorServer::start(ServerOptions options) {
  auto impl = std::make_unique<Impl>();
  impl->options = std::move(options);
  IF_RETURN_IF_ERROR(impl->start());
  return std::unique_ptr<CoordinatorServer>(new CoordinatorServer(std::move(impl)));
}

void CoordinatorServer::stop() {
  if (impl_) impl_->stop();
}

uint16_t CoordinatorServer::http_port() const { return impl_->http ? impl_->http->port() : 0; }

std::string CoordinatorServer::status_json() const {
  std::lock_guard<std::mutex> lock(impl_->snapshot_mu);
  return impl_->status;
}

}  // namespace idlefleet::coordinator
