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
#include <functional>
#include <future>
#include <set>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "common/check.h"
#include "common/crypto.h"
#include "common/identity.h"
#include "common/nkey.h"
#include "common/wall_clock.h"
#include "core/ledger.h"
#include "common/log_limiter.h"
#include "common/money.h"
#include "coordinator/api_keys.h"
#include "coordinator/dashboard.h"
#include "coordinator/openai.h"
#include "core/coordinator_machine.h"
#include "engine/chat_template.h"
#include "engine/gguf.h"
#include "engine/model.h"
#include "engine/stop_strings.h"
#include "coordinator/batch.h"
#include "coordinator/multipart.h"
#include "coordinator/nats_auth.h"
#include "store/file_store.h"
#include "engine/tokenizer.h"
#include "store/job_store.h"
#include "store/key_store.h"
#include "store/ledger_store.h"
#include "store/vehicle_store.h"
#include "transport/download.h"
#include "transport/http_server.h"
#include "transport/metrics.h"
#include "transport/nats_client.h"
#include "transport/query.h"
#include "transport/random_id.h"

namespace idlefleet::coordinator {

namespace fs = std::filesystem;
using nlohmann::json;
using transport::HttpExchange;
using transport::HttpHeader;
using transport::HttpRequest;
using transport::HttpResponse;

namespace {

// Connecting to a nats-server that must first load the coordinator's user.
constexpr int kNatsReloadConnectTries = 20;
constexpr int64_t kNatsReloadConnectGapMs = 100;

// Prepaid balances (ledger.prepaid): how long a client's funds read from the
// ledger are believed (deposits come from the CLI, another process), and how
// many clients' funds are held at once.
constexpr int64_t kPrepaidFundsCacheMs = 1000;
constexpr size_t kPrepaidFundsCacheEntriesMax = 10'000;


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

// The client API: what needs a key when auth is required, and the scope a
// key needs for it (store::kScopes); "" for the operator's and the vehicles'
// routes (/healthz, /metrics, /v1/status, /v1/vehicles, /v1/catalog).
std::string_view client_api_scope(const std::string& p) {
  if (p == "/v1/models" || p.rfind("/v1/models/", 0) == 0) return "models";
  if (p == "/v1/completions" || p == "/v1/chat/completions") return "completions";
  if (p == "/v1/embeddings") return "embeddings";
  if (p == "/v1/files" || p.rfind("/v1/files/", 0) == 0) return "files";
  if (p == "/v1/batches" || p.rfind("/v1/batches/", 0) == 0) return "batches";
  return "";
}

// The scope a batch's lines need: that of its endpoint.
std::string_view batch_endpoint_scope(const std::string& endpoint) {
  return endpoint == "/v1/embeddings" ? "embeddings" : "completions";
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

// An Idempotency-Key as the coordinator tracks it: whose (the API key's id,
// or "client:" and the peer's address with keys off), the key, and the hash
// of the request it was first used with.
struct IdemSlot {
  std::string scope;
  std::string key;
  store::Sha256 request_sha256{};

  std::string name() const { return std::string(scope).append("\n").append(key); }
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
  // Idempotency-Key (non-streamed requests only); idem.key "" when none.
  IdemSlot idem;
  // Logprobs (request.logprobs >= 0). A token's entry waits in
  // logprobs_pending until text from it is released to the client (the stop
  // matcher may hold text back), its text_offset being where its text starts
  // among the bytes detokenised so far; one a stop string cut off is dropped.
  // The stop tokens (end and beginning of sequence) have no text and no entry.
  std::deque<LogprobsEntry> logprobs_pending;
  std::vector<LogprobsEntry> logprobs;  // non-streamed: the response's
  uint64_t text_in_bytes = 0;           // detokenised
  uint64_t text_out_bytes = 0;          // released to the client
};

LogprobsEntry logprobs_entry(const engine::Tokenizer& tok, int32_t id, const core::TokenLogprobs& lp,
                             uint64_t text_offset) {
  LogprobsEntry e;
  e.chosen = {std::string(tok.token_bytes(id)), lp.logprob};
  e.top.reserve(lp.top.size());
  for (const core::TopLogprob& t : lp.top) e.top.push_back({std::string(tok.token_bytes(t.id)), t.logprob});
  e.text_offset = text_offset;
  return e;
}

// The pending entries whose text has (partly) been released; all of them
// when `all` (the generation ended without a stop string).
std::vector<LogprobsEntry> release_logprobs(ClientStream& c, bool all) {
  std::vector<LogprobsEntry> out;
  while (!c.logprobs_pending.empty() && (all || c.logprobs_pending.front().text_offset < c.text_out_bytes)) {
    out.push_back(std::move(c.logprobs_pending.front()));
    c.logprobs_pending.pop_front();
  }
  return out;
}

// The exchange of a request with an Idempotency-Key: passes everything to
// the client's exchange and tells `on_end` how it ended (the reply if it was
// a whole 200, else nullptr) once, when it replies, starts a stream, or is
// dropped without a reply.
class ReplyTap : public HttpExchange {
 public:
  ReplyTap(std::shared_ptr<HttpExchange> inner, std::function<void(const HttpResponse*)> on_end)
      : inner_(std::move(inner)), on_end_(std::move(on_end)) {}
  ~ReplyTap() override { end(nullptr); }
  void respond(HttpResponse response) override {
    end(response.status == 200 ? &response : nullptr);
    inner_->respond(std::move(response));
  }
  void stream_begin(int status, std::vector<HttpHeader> headers) override {
    end(nullptr);
    inner_->stream_begin(status, std::move(headers));
  }
  bool stream_write(std::string data) override { return inner_->stream_write(std::move(data)); }
  void stream_end() override { inner_->stream_end(); }
  bool closed() const override { return inner_->closed(); }

 private:
  void end(const HttpResponse* reply) {
    if (on_end_) std::exchange(on_end_, nullptr)(reply);
  }
  std::shared_ptr<HttpExchange> inner_;
  std::function<void(const HttpResponse*)> on_end_;
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

// The exchange of a request the coordinator makes itself (a line of an
// embeddings batch): the reply goes to `on_reply`, on the thread that sends
// it. Never closed; a stream is refused as a 500 reply.
class InProcessExchange : public HttpExchange {
 public:
  explicit InProcessExchange(std::function<void(HttpResponse)> on_reply) : on_reply_(std::move(on_reply)) {}
  void respond(HttpResponse response) override {
    if (on_reply_) std::exchange(on_reply_, nullptr)(std::move(response));
  }
  void stream_begin(int, std::vector<HttpHeader>) override {
    respond(error_response(api_error(500, "server_error", "a batch line cannot stream")));
  }
  bool stream_write(std::string) override { return false; }
  void stream_end() override {}
  bool closed() const override { return false; }

 private:
  std::function<void(HttpResponse)> on_reply_;
};

// One line of a running batch (loop thread).
struct BatchLineRun {
  uint64_t line = 0;
  std::string custom_id;
  std::string body;    // the request body, for lines not yet run
  std::string state;   // pending, running, done, failed, cancelled (store::StoredBatchLine)
  std::string job_id;
  std::string result;  // the output or error file line
  std::shared_ptr<EmbeddingClient> embedding;  // a running line of an embeddings batch
};

struct BatchRun {
  BatchObject obj;
  std::vector<BatchLineRun> lines;
  size_t next = 0;              // lines before this are not pending
  size_t in_flight = 0;
  std::set<size_t> changed;     // lines to write
  bool dirty = false;           // obj to write
  std::string ending;           // "" while running; else the final status wanted: cancelled, expired
  std::string owner;            // the API key that made it ("" with keys off)
};

}  // namespace

struct CoordinatorServer::Impl {
  ServerOptions options;
  CoordinatorConfig& config = options.config;
  std::vector<std::unique_ptr<ServedModel>> models;
  std::unique_ptr<store::JobStore> store;
  std::unique_ptr<store::KeyStore> key_store;  // loop thread (and start/stop)
  // Vehicles' pinned keys and accepted receipts (loop thread), and the keys
  // by vehicle id for checking signatures.
  std::unique_ptr<store::VehicleStore> vehicle_store;
  std::map<std::string, Ed25519PublicKey> vehicle_keys;
  std::map<std::string, std::string> vehicle_owners;  // "" until enrolled
  // The coordinator's own Ed25519 key (<data_dir>/keys/coordinator.key): its
  // NATS user on a server with per-vehicle permissions.
  Ed25519Keypair identity;
  // The ledger (loop thread), and the jobs that finished done waiting for
  // the receipts of their attempts before they settle.
  std::unique_ptr<store::LedgerStore> ledger;
  struct PendingSettlement {
    std::string client_account;
    std::string model_id;
    bool embed = false;
    uint64_t prompt_tokens = 0;
    uint64_t completion_tokens = 0;
    size_t receipts_expected = 0;  // attempts that ended without being lost
    core::TimeMs ended_at = 0;
    // Verification (core/verification.h): attempts whose vehicle produced a
    // wrong token earn nothing, and a disputed interactive job is refunded.
    std::set<uint32_t> attempts_unpaid;
    bool refund = false;
  };
  std::map<std::string, PendingSettlement> to_settle;
  std::map<std::string, size_t> receipts_accepted;  // by job, for those in to_settle or verifying
  // Jobs done but under verification: they settle (and a batch line is
  // written) on their JobVerifiedEffect, with the client account they had
  // when they ended (an interactive client's entry is gone by then).
  // Bounded by the machine's checks_live_max.
  std::map<std::string, std::string> verifying;
  // Prepaid balances (loop thread): each client account's balance and credit
  // limit as last read from the ledger, and when. Read again after
  // kPrepaidFundsCacheMs, and after each settlement of the account.
  struct Funds {
    int64_t balance_micros = 0;
    int64_t credit_limit_micros = 0;
    core::TimeMs read_at = 0;
  };
  std::map<std::string, Funds> funds;
  std::unique_ptr<KeyGate> gate;
  std::unique_ptr<core::CoordinatorMachine> machine;
  std::vector<std::string> stop_jobs;  // jobs to end as done: a stop string appeared (apply())

  // Files and batches. The file store belongs to its own thread (files_thread),
  // so that uploads and output files never hold up the loop; the loop runs
  // the batches' requests (batch_runs) and hands it what to write.
  std::unique_ptr<store::FileStore> files;
  std::thread files_thread;
  std::mutex files_mu;
  std::condition_variable files_cv;
  std::deque<std::function<void(store::FileStore&)>> files_queue;
  bool files_stopping = false;
  std::map<std::string, BatchRun> batch_runs;                        // loop thread: batches still running
  std::map<std::string, std::pair<std::string, size_t>> batch_jobs;  // loop thread: job id -> (batch, line index)
  size_t batch_in_flight = 0;                                        // loop thread
  std::unique_ptr<transport::NatsClient> nats;
  std::unique_ptr<transport::HttpServer> http;
  transport::MetricsRegistry metrics;

  // Inbox: events for the machine, and new clients with their job.
  struct Item {
    core::CoordinatorEvent event;
    std::unique_ptr<ClientStream> client;  // with a SubmitJobEvent
    std::function<void(core::TimeMs)> task;  // run on the loop thread instead of an event
  };
  std::mutex mu;
  std::condition_variable cv;
  std::deque<Item> inbox;
  std::atomic<bool> stopping{false};
  // Online vehicles that are eligible or serving, as of the last status
  // (published every tick): with none, interactive requests get 503 at once.
  std::atomic<size_t> workable_vehicles{0};
  std::thread loop_thread;

  // Loop-thread state.
  std::map<std::string, std::unique_ptr<ClientStream>> clients;
  // Embedding requests by their id, and each live job's request and input index.
  std::map<std::string, std::shared_ptr<EmbeddingClient>> embedding_clients;
  std::map<std::string, std::pair<std::shared_ptr<EmbeddingClient>, size_t>> embedding_jobs;
  std::vector<std::string> cancel_jobs;  // jobs to cancel after the effects at hand (apply())
  std::set<std::string> dirty;
  transport::Counter* vehicle_messages = nullptr;  // set before the subscription that counts
  std::map<std::string, store::StoredJob> unwritten;  // rows of a failed put, by job id
  std::map<std::string, std::string> request_json;  // job id -> the request as accepted (until persisted final)
  // Idempotency keys of requests still running: scope + '\n' + key -> body hash.
  std::map<std::string, store::Sha256> idem_in_flight;
  core::TimeMs keys_synced_at = 0;
  core::TimeMs responses_pruned_at = 0;
  uint64_t tokens_last = 0;
  core::TimeMs rate_at = 0;
  double tokens_per_second = 0.0;

  // The dashboard (loop thread): time-dependent figures, each vehicle's draw
  // at full load as last seen, the open event streams, and when the last
  // snapshot went out. The slots bound the streams (HTTP threads take them).
  DashboardStats dashboard_stats;
  std::map<std::string, double> full_load_w;
  std::vector<std::shared_ptr<HttpExchange>> dashboard_streams;
  StreamSlots dashboard_slots{kDashboardStreamsMax};
  core::TimeMs dashboard_at = 0;

  // Published by the loop for HTTP threads.
  mutable std::mutex snapshot_mu;
  std::string status;
  std::string vehicles_doc;  // loop thread: GET /v1/vehicles (vehicles_route)
  core::TimeMs vehicles_doc_at = 0;
  core::TimeMs status_at = 0;  // loop thread: the last publish_status()

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
    auto st = store::JobStore::open(store_location(config, "jobs.sqlite3"));
    if (!st) return Unexpected(st.error());
    store = std::move(*st);
    auto ks = store::KeyStore::open(store_location(config, "keys.db"));
    if (!ks) return Unexpected(ks.error());
    key_store = std::move(*ks);
    gate = std::make_unique<KeyGate>(Prices{config.prompt_micros_per_mtok, config.completion_micros_per_mtok});
    IF_RETURN_IF_ERROR(gate->sync(*key_store));
    auto vs = store::VehicleStore::open(store_location(config, "vehicles.sqlite3"));
    if (!vs) return Unexpected(vs.error());
    vehicle_store = std::move(*vs);
    auto pinned = vehicle_store->vehicles();
    if (!pinned) return Unexpected(pinned.error());
    for (const store::VehicleRecord& v : *pinned) {
      vehicle_keys[v.vehicle_id] = *from_hex<32>(v.public_key);
      vehicle_owners[v.vehicle_id] = v.owner_id;
    }
    auto ls = store::LedgerStore::open(store_location(config, store::kLedgerFileName));
    if (!ls) return Unexpected(ls.error());
    ledger = std::move(*ls);

    core::CoordinatorCoreConfig core_config;
    core_config.limits.lease_ms = config.lease_ms;
    core_config.limits.attempts_max = config.attempts_max;
    core_config.limits.tokens_max = config.max_tokens_limit;
    core_config.vehicle_timeout_ms = config.vehicle_timeout_ms;
    core_config.queue_jobs_max = config.queue_jobs_max;
    core_config.verification = config.verification;
    for (const auto& m : models) core_config.models.push_back({m->id, m->bytes, m->embedding_dim});
    machine = std::make_unique<core::CoordinatorMachine>(core_config);
    {
      // Standings and quarantines outlive restarts.
      auto standings = vehicle_store->standings();
      if (!standings) return Unexpected(standings.error());
      for (auto& [id, s] : *standings) {
        (void)machine->handle(core::RestoreStandingEvent{id, std::move(s)}, wall_clock_ms());
      }
    }
    rejected_inbox_full = &metrics.counter("idlefleet_inbox_full_total", "Events dropped because the inbox was full");
    IF_RETURN_IF_ERROR(restore_jobs(wall_clock_ms()));
    auto fstore = store::FileStore::open(store_location(config, "files.sqlite3"));
    if (!fstore) return Unexpected(fstore.error());
    files = std::move(*fstore);
    IF_RETURN_IF_ERROR(restore_batches(wall_clock_ms()));
    settle_sweep();
    publish_status(wall_clock_ms());

    auto key = load_or_create_key(coordinator_key_path(config.data_dir));
    if (!key) return Unexpected(key.error());
    identity = *key;
    if (!config.nats_authorization_file.empty()) {
      // A file that cannot be written stops the start: the operator asked
      // for it, and vehicles enrolled since the last run could not connect.
      auto written = write_nats_authorization(config.nats_authorization_file, identity.public_key, *vehicle_store);
      if (!written) {
        return Unexpected(written.error().code, "nats.authorization_file: " + written.error().message);
      }
      log("wrote the NATS authorisation for " + std::to_string(*written) + " vehicles to " +
          config.nats_authorization_file);
    }

    // Connected first, reloaded after: nats-server re-checks every client when
    // it reloads its authorisation, and one still in its handshake then has no
    // user yet and is closed. The coordinator's user is the same in every file.
    transport::NatsOptions n;
    n.url = config.nats_url;
    n.name = "idlefleet-coordinator";
    n.nkey_identity = identity;
    auto client = transport::NatsClient::connect(n);
    if (!client && !config.nats_server_pid_file.empty()) {
      // A nats-server that has not loaded a file naming this coordinator yet
      // (the first start): have it load the one just written, and try again.
      reload_nats();
      for (int i = 0; i < kNatsReloadConnectTries && !client; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(kNatsReloadConnectGapMs));
        client = transport::NatsClient::connect(n);
      }
    }
    if (!client) return Unexpected(client.error().code, "NATS at " + config.nats_url + ": " + client.error().message);
    nats = std::move(*client);
    vehicle_messages = &metrics.counter("idlefleet_vehicle_messages_total",
                                        "Messages from vehicles received (hello, state, tokens, ...), valid or not");
    auto sub = nats->subscribe(core::kUpSubjectWildcard,
                               [this](std::string_view subject, std::string_view data) { on_nats(subject, data); });
    if (!sub) return Unexpected(sub.error());
    IF_RETURN_IF_ERROR(nats->flush());
    if (!config.nats_authorization_file.empty()) reload_nats();  // vehicles enrolled since the last start

    // Threads last: an error above returns with none to join.
    files_thread = std::thread([this] { files_loop(); });
    loop_thread = std::thread([this] { loop(); });

    transport::HttpServerOptions h;
    h.host = config.http_host;
    h.port = config.http_port;
    h.threads = config.http_threads;
    // File uploads may be larger than any other request, and only they.
    const size_t upload_max = config.file_bytes_max + (64u << 10);  // the multipart framing
    h.body_bytes_max = std::max(config.request_bytes_max, upload_max);
    h.body_bytes_max_for = [request_max = config.request_bytes_max, upload_max](std::string_view method,
                                                                                 std::string_view path) {
      return method == "POST" && path == "/v1/files" ? upload_max : request_max;
    };
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
    {
      std::lock_guard<std::mutex> lock(files_mu);
      files_stopping = true;
    }
    files_cv.notify_all();
    if (files_thread.joinable()) files_thread.join();  // after the loop: it writes what the loop handed it
    // The dashboard's streams end (the HTTP server, stopped above, has
    // closed their connections already; this releases their slots).
    for (const auto& x : dashboard_streams) {
      x->stream_end();
      dashboard_slots.release();
    }
    dashboard_streams.clear();
    nats.reset();
    flush_dirty(wall_clock_ms());
    // Jobs still waiting for receipts settle now with those that came.
    if (ledger && vehicle_store) {
      for (const auto& [job, p] : to_settle) settle(job, p, wall_clock_ms());
      to_settle.clear();
    }
    if (gate && key_store) {
      if (auto st = gate->sync(*key_store); !st) log("key store: " + st.error().to_string());
    }
  }

  // ---- Inputs (any thread) -----------------------------------------------------

  // Queues an item for the loop thread; false when the inbox is full,
  // unless `always` (for the ends of work already admitted, which must not
  // be lost: they are bounded by the work in flight).
  bool post(Item item, bool always = false) {
    {
      std::lock_guard<std::mutex> lock(mu);
      if (!always && inbox.size() >= kInboxEventsMax) {
        rejected_inbox_full->inc();
        return false;
      }
      inbox.push_back(std::move(item));
    }
    cv.notify_one();
    return true;
  }

  void on_nats(std::string_view subject, std::string_view data) {
    vehicle_messages->inc();
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
    post(Item{core::VehicleMessageEvent{std::string(vid), std::move(*m)}, nullptr, {}});
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
      if (!log_limiter.allow(key, wall_clock_ms(), &dropped)) return;
    }
    log(line + (dropped > 0 ? " (and " + std::to_string(dropped) + " more like it not logged)" : ""));
  }

  void route(const HttpRequest& r, std::shared_ptr<HttpExchange> x) {
    const std::string& p = r.path;
    if (is_dashboard_path(p)) return x->respond(dashboard_response(r));
    if (p == "/v1/dashboard/events") return dashboard_events(r, std::move(x));
    if (r.method == "GET" && p == "/healthz") {
      HttpResponse resp;
      resp.content_type = "text/plain";
      resp.body = "ok\n";
      return x->respond(resp);
    }
    if (r.method == "GET" && p == "/metrics") {
      auto respond = [this, x] {
        HttpResponse resp;
        resp.content_type = "text/plain; version=0.0.4";
        resp.body = metrics.render();
        x->respond(resp);
      };
      // An overloaded coordinator still answers, from the last status.
      if (!with_fresh_status(respond)) respond();
      return;
    }
    if (r.method == "GET" && p == "/v1/status") {
      auto respond = [this, x] {
        std::lock_guard<std::mutex> lock(snapshot_mu);
        x->respond(json_response(200, status));
      };
      if (!with_fresh_status(respond)) respond();
      return;
    }
    if (r.method == "GET" && p == "/v1/vehicles") return vehicles_route(x);
    if (p == "/v1/vehicles/enroll") return enrol_route(r, x);
    if (p.rfind("/v1/owner/", 0) == 0) return owner_route(r, x);
    std::string key_id;
    if (const std::string_view scope = client_api_scope(p); config.auth_required && !scope.empty()) {
      auto who = gate->authenticate(r.header("authorization"));
      if (auto* refusal = std::get_if<Refusal>(&who)) return x->respond(refusal_response(*refusal));
      key_id = std::move(std::get<std::string>(who));
      if (auto refusal = gate->authorize(key_id, scope)) return x->respond(refusal_response(*refusal));
    }
    const std::string* idem = r.header("idempotency-key");
    if (idem != nullptr && r.method == "POST" && !client_api_scope(p).empty() && p != "/v1/completions" &&
        p != "/v1/chat/completions") {
      if (!idempotency_key_valid(*idem)) return x->respond(error_response(bad_idempotency_key()));
      return run_idempotent(r, x, key_id, *idem);
    }
    dispatch(r, std::move(x), key_id);
  }

  // GET /v1/dashboard/events (any thread): the operator's snapshot as
  // server-sent events, at once and then every kDashboardSnapshotMs, until
  // the client goes or the server stops. With auth required it needs a key
  // with the admin scope. At most kDashboardStreamsMax at once (503 beyond).
  void dashboard_events(const HttpRequest& r, std::shared_ptr<HttpExchange> x) {
    if (r.method != "GET") {
      HttpResponse resp = error_response(api_error(405, "invalid_request_error",
                                                   "method " + r.method.substr(0, 16) + " not allowed on " + r.path));
      resp.headers.push_back({"Allow", "GET"});
      return x->respond(std::move(resp));
    }
    if (config.auth_required) {
      auto who = gate->authenticate(r.header("authorization"));
      if (auto* refusal = std::get_if<Refusal>(&who)) return x->respond(refusal_response(*refusal));
      if (auto refusal = gate->authorize(std::get<std::string>(who), store::kScopeAdmin)) {
        return x->respond(refusal_response(*refusal));
      }
    }
    if (!dashboard_slots.try_acquire()) {
      return x->respond(error_response(
          api_error(503, "server_error",
                    std::to_string(kDashboardStreamsMax) + " dashboard streams are open already; retry later",
                    "too_many_streams"),
          5));
    }
    Item item;
    item.task = [this, x](core::TimeMs now) {
      std::vector<HttpHeader> headers = dashboard_security_headers();
      headers.push_back({"Content-Type", "text/event-stream"});
      x->stream_begin(200, std::move(headers));
      const FleetNow fleet = gather_fleet(*machine, served_model_ids(), tokens_per_second, &full_load_w);
      if (!x->stream_write(sse_event("snapshot", dashboard_stats.snapshot_json(fleet, now)))) {
        dashboard_slots.release();
        return;
      }
      dashboard_streams.push_back(x);
    };
    if (!post(std::move(item))) {
      dashboard_slots.release();
      x->respond(error_response(api_error(503, "server_error", "the coordinator is overloaded; retry shortly"), 1));
    }
  }

  std::vector<std::string> served_model_ids() const {
    std::vector<std::string> served;
    served.reserve(models.size());
    for (const auto& m : models) served.push_back(m->id);
    return served;
  }

  // Every kDashboardSnapshotMs (loop thread): a history sample and, when
  // anyone watches, a snapshot sent to every stream; streams whose client
  // went away (or stopped reading) are dropped. A new stream gets its first
  // snapshot when it opens (dashboard_events).
  void publish_dashboard(core::TimeMs now) {
    if (dashboard_at != 0 && now - dashboard_at < kDashboardSnapshotMs) return;
    dashboard_at = now;
    const FleetNow fleet = gather_fleet(*machine, served_model_ids(), tokens_per_second, &full_load_w);
    dashboard_stats.sample(fleet, now);
    if (!dashboard_streams.empty()) {
      const std::string event = sse_event("snapshot", dashboard_stats.snapshot_json(fleet, now));
      std::erase_if(dashboard_streams, [&](const std::shared_ptr<HttpExchange>& x) {
        if (!x->closed() && x->stream_write(event)) return false;
        dashboard_slots.release();
        return true;
      });
    }
    metrics.gauge("idlefleet_dashboard_streams", "Open dashboard event streams (GET /v1/dashboard/events)")
        .set(static_cast<double>(dashboard_streams.size()));
  }

  // Runs `then` on the loop thread once the status and the gauges are at most
  // a tick old, for the readers of /v1/status and /metrics (between readers,
  // publish_status runs every kStatusMs). False if the inbox refused it.
  bool with_fresh_status(std::function<void()> then) {
    Item item;
    item.task = [this, then = std::move(then)](core::TimeMs now) {
      if (now - status_at >= config.tick_ms) {
        publish_status(now);
        status_at = now;
      }
      then();
    };
    return post(std::move(item));
  }

  // GET /v1/vehicles: the list is built on the loop thread when asked for,
  // and at most every kVehiclesDocMs (readers in between share it), rather
  // than on every tick: with a hundred thousand vehicles, building it five
  // times a second cost the coordinator most of its time
  // (bench/replica_load.sh, 2026-11-29).
  void vehicles_route(const std::shared_ptr<HttpExchange>& x) {
    Item item;
    item.task = [this, x](core::TimeMs now) {
      if (vehicles_doc_at == 0 || now - vehicles_doc_at >= kVehiclesDocMs) {
        json list = json::array();
        for (const auto& [id, v] : machine->vehicles()) {
          if (list.size() >= kVehiclesListedMax) break;
          list.push_back(vehicle_json(v));
        }
        vehicles_doc = json{{"object", "list"}, {"data", list}}.dump(-1, ' ', false, json::error_handler_t::replace);
        vehicles_doc_at = now;
      }
      x->respond(json_response(200, vehicles_doc));
    };
    if (!post(std::move(item))) {
      x->respond(error_response(api_error(503, "server_error", "the coordinator is overloaded; retry shortly"), 1));
    }
  }

  static ApiError bad_idempotency_key() {
    return api_error(400, "invalid_request_error",
                     "The Idempotency-Key header must be 1 to " + std::to_string(store::kIdempotencyKeyBytesMax) +
                         " bytes of printable ASCII");
  }

  // The routes after authentication; any thread.
  void dispatch(const HttpRequest& r, std::shared_ptr<HttpExchange> x, const std::string& key_id) {
    const std::string& p = r.path;
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
    // Files and batches belong to the key that made them ("" with keys off).
    if (p == "/v1/files" || p.rfind("/v1/files/", 0) == 0) return file_route(r, x, key_id);
    if (p == "/v1/batches" || p.rfind("/v1/batches/", 0) == 0) return batch_route(r, x, key_id);
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

  static std::variant<std::vector<int32_t>, ApiError> prompt_tokens(const ServedModel& model,
                                                                    const CompletionRequest& req) {
    return prompt_token_ids(*model.tokenizer, model.chat_template ? &*model.chat_template : nullptr, req);
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
    if (idem != nullptr && !idempotency_key_valid(*idem)) return x->respond(error_response(bad_idempotency_key()));
    if (!key_id.empty()) {
      if (auto refusal = gate->admit(key_id, ids.size(), wall_clock_ms())) {
        return x->respond(refusal_response(*refusal));
      }
    }
    if (!req.seed_given) req.sampling.seed = transport::random_u64();
    if (workable_vehicles.load() == 0) {
      // Queueing would only make the client wait for a timeout; batches
      // (which may wait) are the way to leave work for later.
      return x->respond(error_response(
          api_error(503, "server_error",
                    "no vehicle can take the work now (none is parked, eligible and online); retry later or "
                    "submit it as a batch",
                    "no_capacity"),
          10));
    }

    auto client = std::make_unique<ClientStream>();
    client->exchange = x;
    client->model = model;
    client->meta.id = (chat ? "chatcmpl-" : "cmpl-") + transport::random_hex(12);
    client->meta.created = wall_clock_ms() / 1000;
    client->meta.model = model->id;
    client->meta.system_fingerprint = kFingerprint;
    client->detok = std::make_unique<engine::Detokenizer>(tok);
    if (!req.stop.empty()) client->stop = std::move(*engine::StopMatcher::create(req.stop));  // checked by the parser
    for (int32_t id : ids) (void)client->detok->push(id);  // the prompt primes the detokenizer, as in a local run
    client->prompt_tokens = ids.size();
    client->key_id = key_id;
    // Streams are not replayed (a stored stream would be a different
    // response), so their Idempotency-Key is ignored.
    if (idem != nullptr && !req.stream) client->idem = idem_slot(r, *idem, key_id);

    core::JobSpec spec;
    spec.model_id = model->id;
    spec.prompt_ids = std::move(ids);
    spec.max_tokens = max_tokens;
    if (!req.ignore_eos) spec.stop_ids = {tok.eos(), tok.bos()};
    spec.sampling = req.sampling;
    spec.logprobs = req.logprobs;
    client->request = std::move(req);
    const std::string job_id = client->meta.id;
    if (!post(Item{core::SubmitJobEvent{job_id, std::move(spec)}, std::move(client), {}})) {
      x->respond(error_response(api_error(503, "server_error", "the coordinator is overloaded; retry shortly"), 1));
    }
  }

  // POST /v1/embeddings (HTTP thread): validated and tokenised here, one job
  // per input submitted by the loop (submit_embedding_jobs). Texts are
  // encoded as `idlefleet embed` encodes them (BOS when the model adds one);
  // token ids are taken as given. Each input must fit the positions an
  // agent's context holds: the model's context length, at most
  // engine::kDefaultContextLength (agent/fleet.cc makes its contexts so).
  void submit_embeddings(const HttpRequest& r, const std::string& key_id, std::shared_ptr<HttpExchange> x) {
    auto prepared = prepare_embeddings(r.body, false);
    if (auto* e = std::get_if<ApiError>(&prepared)) return x->respond(error_response(*e));
    std::shared_ptr<EmbeddingClient> client = std::move(std::get<std::shared_ptr<EmbeddingClient>>(prepared));
    if (!key_id.empty()) {
      if (auto refusal = gate->admit(key_id, client->prompt_tokens, wall_clock_ms())) {
        return x->respond(refusal_response(*refusal));
      }
    }
    if (workable_vehicles.load() == 0) {
      // As submit(): queueing would only make the client wait for a timeout.
      return x->respond(error_response(
          api_error(503, "server_error",
                    "no vehicle can take the work now (none is parked, eligible and online); retry later",
                    "no_capacity"),
          10));
    }
    client->exchange = x;
    client->key_id = key_id;
    Item item;
    item.task = [this, client](core::TimeMs now) {
      if (auto refusal = prepaid_refusal(client->key_id, /*completion=*/false, now, &client->model)) {
        return client->exchange->respond(std::move(*refusal));
      }
      submit_embedding_jobs(client, now);
    };
    if (!post(std::move(item))) {
      x->respond(error_response(api_error(503, "server_error", "the coordinator is overloaded; retry shortly"), 1));
    }
  }

  // An embedding request body checked and tokenised: the client, without its
  // exchange and key, or the error to answer. Its jobs are batch work when
  // `batch` (a line of an embeddings batch).
  std::variant<std::shared_ptr<EmbeddingClient>, ApiError> prepare_embeddings(const std::string& body, bool batch) const {
    ApiLimits limits;
    limits.body_bytes_max = config.request_bytes_max;
    auto parsed = parse_embedding_request(body, limits);
    if (auto* e = std::get_if<ApiError>(&parsed)) return *e;
    EmbeddingRequest& req = std::get<EmbeddingRequest>(parsed);
    const ServedModel* model = find_model(req.model);
    if (model == nullptr) {
      ApiError e = api_error(404, "invalid_request_error", "The model '" + req.model + "' does not exist",
                             "model_not_found");
      e.param = "model";
      return e;
    }
    if (req.dimensions && *req.dimensions != model->embedding_dim) {
      ApiError e = api_error(400, "invalid_request_error",
                             "This model's embeddings have " + std::to_string(model->embedding_dim) +
                                 " dimensions; 'dimensions' may only be that (they are not shortened)");
      e.param = "dimensions";
      return e;
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
            return e;
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
        return e;
      }
      client->prompt_tokens += ids.size();
      core::JobSpec spec;
      spec.model_id = model->id;
      spec.prompt_ids = std::move(ids);
      spec.max_tokens = 0;
      spec.kind = core::WorkKind::kEmbed;
      spec.batch = batch;
      client->specs.push_back(std::move(spec));
    }
    client->id = "emb-" + transport::random_hex(12);
    client->model = model->id;
    client->base64 = req.base64;
    client->vectors.resize(client->specs.size());
    return client;
  }

  // ---- Files and batches ------------------------------------------------------------
  //
  // HTTP threads parse and check; the files thread reads and writes the file
  // store; the loop thread runs each batch's lines as low-priority jobs (at
  // most config.batch_jobs_in_flight at once over all batches: interactive
  // requests are placed first and never wait behind a batch) and hands the
  // files thread what to write. A line's state is written before its job is
  // submitted and again when it ends, so that after a restart every line is
  // run once: a running line whose job was restored waits for it; one whose
  // job ended takes its result from the job store.

  void on_files(std::function<void(store::FileStore&)> work) {
    {
      std::lock_guard<std::mutex> lock(files_mu);
      files_queue.push_back(std::move(work));
    }
    files_cv.notify_one();
  }

  void files_loop() {
    for (;;) {
      std::function<void(store::FileStore&)> work;
      {
        std::unique_lock<std::mutex> lock(files_mu);
        files_cv.wait(lock, [&] { return files_stopping || !files_queue.empty(); });
        if (files_queue.empty()) return;  // stopping, and nothing left to write
        work = std::move(files_queue.front());
        files_queue.pop_front();
      }
      work(*files);
    }
  }

  static HttpResponse store_error(const Error& e) {
    return error_response(api_error(500, "server_error", "the file store failed: " + e.message));
  }

  static std::string path_tail(const std::string& path, size_t prefix) { return path.substr(prefix, 128); }

  void upload_file(const HttpRequest& r, const std::shared_ptr<HttpExchange>& x, const std::string& owner) {
    const std::string* type = r.header("content-type");
    auto parts = parse_multipart(type == nullptr ? "" : *type, r.body);
    if (!parts) return x->respond(error_response(api_error(400, "invalid_request_error", parts.error().message)));
    std::string purpose;
    const FormPart* file = nullptr;
    for (const FormPart& part : *parts) {
      if (part.name == "purpose") purpose = std::string(part.data.substr(0, 64));
      if (part.name == "file") file = &part;
    }
    if (purpose != "batch") {
      ApiError e = api_error(400, "invalid_request_error",
                             "'purpose' must be \"batch\" (the only purpose served), not '" + purpose + "'");
      e.param = "purpose";
      return x->respond(error_response(e));
    }
    if (file == nullptr || file->filename.empty()) {
      ApiError e = api_error(400, "invalid_request_error", "a 'file' part with a filename is required");
      e.param = "file";
      return x->respond(error_response(e));
    }
    if (file->data.size() > config.file_bytes_max) {
      return x->respond(error_response(api_error(413, "invalid_request_error",
                                                 "files are at most " + std::to_string(config.file_bytes_max) +
                                                     " bytes")));
    }
    store::StoredFile f;
    f.id = "file-" + transport::random_hex(12);
    f.purpose = purpose;
    f.filename = file->filename.substr(0, kFileNameBytesMax);
    f.bytes = file->data.size();
    f.created_at = wall_clock_ms() / 1000;
    f.owner = owner;
    on_files([x, f, content = std::string(file->data)](store::FileStore& fs) {
      if (auto st = fs.put_file(f, content); !st) return x->respond(store_error(st.error()));
      x->respond(json_response(200, file_json({f.id, f.purpose, f.filename, f.bytes, f.created_at}).dump()));
    });
  }

  void file_route(const HttpRequest& r, const std::shared_ptr<HttpExchange>& x, const std::string& owner) {
    const std::string& p = r.path;
    if (p == "/v1/files") {
      if (r.method == "POST") return upload_file(r, x, owner);
      if (r.method != "GET") return method_not_allowed(r, x);
      std::string purpose;
      const auto pairs = query_pairs(r.query, x);
      if (!pairs) return;
      for (const auto& [k, v] : *pairs) {
        if (k == "purpose") purpose = v.substr(0, 64);
      }
      return on_files([x, purpose, owner](store::FileStore& fs) {
        auto list = fs.list_files(owner, purpose, store::kListFilesMax);
        if (!list) return x->respond(store_error(list.error()));
        json data = json::array();
        for (const auto& f : *list) data.push_back(file_json({f.id, f.purpose, f.filename, f.bytes, f.created_at}));
        x->respond(json_response(200, json{{"object", "list"}, {"data", data}, {"has_more", false}}.dump()));
      });
    }
    const bool content = p.size() > 8 && p.ends_with("/content");
    const std::string id = content ? p.substr(10, p.size() - 18) : p.substr(10);
    if (id.empty() || id.size() > store::kStoredIdBytesMax || id.find('/') != std::string::npos) {
      return x->respond(error_response(api_error(404, "invalid_request_error", "no route for " + p.substr(0, 200))));
    }
    auto missing = [id] {
      return error_response(api_error(404, "invalid_request_error", "No such File object: " + id.substr(0, 128)));
    };
    // Another key's file is as missing as one that never was.
    auto owned = [id, owner](store::FileStore& fs) -> Result<bool> {
      auto f = fs.get_file(id);
      if (!f) return Unexpected(f.error());
      return f->has_value() && (*f)->owner == owner;
    };
    if (content && r.method == "GET") {
      return on_files([x, id, missing, owned](store::FileStore& fs) {
        auto mine = owned(fs);
        if (!mine) return x->respond(store_error(mine.error()));
        if (!*mine) return x->respond(missing());
        auto bytes = fs.file_content(id);
        if (!bytes) return x->respond(store_error(bytes.error()));
        if (!*bytes) return x->respond(missing());
        HttpResponse resp;
        resp.content_type = "application/octet-stream";
        resp.body = std::move(**bytes);
        x->respond(std::move(resp));
      });
    }
    if (!content && r.method == "GET") {
      return on_files([x, id, missing, owner](store::FileStore& fs) {
        auto f = fs.get_file(id);
        if (!f) return x->respond(store_error(f.error()));
        if (!*f || (*f)->owner != owner) return x->respond(missing());
        const auto& g = **f;
        x->respond(json_response(200, file_json({g.id, g.purpose, g.filename, g.bytes, g.created_at}).dump()));
      });
    }
    if (!content && r.method == "DELETE") {
      return on_files([x, id, missing, owned](store::FileStore& fs) {
        auto mine = owned(fs);
        if (!mine) return x->respond(store_error(mine.error()));
        if (!*mine) return x->respond(missing());
        auto gone = fs.delete_file(id);
        if (!gone) return x->respond(store_error(gone.error()));
        if (!*gone) return x->respond(missing());
        x->respond(json_response(200, json{{"id", id}, {"object", "file"}, {"deleted", true}}.dump()));
      });
    }
    method_not_allowed(r, x);
  }

  static void method_not_allowed(const HttpRequest& r, const std::shared_ptr<HttpExchange>& x) {
    x->respond(error_response(api_error(405, "invalid_request_error",
                                        "method " + r.method.substr(0, 16) + " not allowed on " + r.path.substr(0, 200))));
  }

  // The query's pairs, or nullopt after answering 400 (a bad escape, too many).
  static std::optional<std::vector<std::pair<std::string, std::string>>> query_pairs(
      const std::string& query, const std::shared_ptr<HttpExchange>& x) {
    auto pairs = transport::parse_query(query);
    if (!pairs) {
      x->respond(error_response(api_error(400, "invalid_request_error", "malformed query string: " + pairs.error().message)));
      return std::nullopt;
    }
    return std::move(*pairs);
  }

  void batch_route(const HttpRequest& r, const std::shared_ptr<HttpExchange>& x, const std::string& owner) {
    const std::string& p = r.path;
    if (p == "/v1/batches") {
      if (r.method == "POST") return create_batch(r, x, owner);
      if (r.method != "GET") return method_not_allowed(r, x);
      size_t limit = 20;
      std::string after;
      const auto pairs = query_pairs(r.query, x);
      if (!pairs) return;
      for (const auto& [k, v] : *pairs) {
        if (k == "limit") {
          char* end = nullptr;
          const long n = std::strtol(v.c_str(), &end, 10);
          if (v.empty() || *end != '\0' || n < 1 || n > 100) {
            ApiError e = api_error(400, "invalid_request_error", "'limit' must be an integer from 1 to 100");
            e.param = "limit";
            return x->respond(error_response(e));
          }
          limit = static_cast<size_t>(n);
        }
        if (k == "after") after = v.substr(0, 128);
      }
      return on_files([x, limit, after, owner](store::FileStore& fs) {
        auto all = fs.list_batches(owner, store::kListFilesMax, 0);
        if (!all) return x->respond(store_error(all.error()));
        json data = json::array();
        bool skipping = !after.empty(), more = false;
        for (const auto& b : *all) {
          if (skipping) {
            skipping = b.id != after;
            continue;
          }
          if (data.size() == limit) {
            more = true;
            break;
          }
          data.push_back(json::parse(b.object_json, nullptr, false));
        }
        json page = {{"object", "list"}, {"data", data}, {"has_more", more}};
        page["first_id"] = data.empty() ? json(nullptr) : data.front().value("id", json(nullptr));
        page["last_id"] = data.empty() ? json(nullptr) : data.back().value("id", json(nullptr));
        x->respond(json_response(200, page.dump()));
      });
    }
    const bool cancel = p.ends_with("/cancel");
    const std::string id = cancel ? p.substr(12, p.size() - 19) : p.substr(12);
    if (id.empty() || id.size() > store::kStoredIdBytesMax || id.find('/') != std::string::npos) {
      return x->respond(error_response(api_error(404, "invalid_request_error", "no route for " + p.substr(0, 200))));
    }
    if (cancel && r.method == "POST") {
      Item item;
      item.task = [this, x, id, owner](core::TimeMs now) { cancel_batch(id, owner, x, now); };
      if (!post(std::move(item))) x->respond(error_response(api_error(503, "server_error", "overloaded"), 1));
      return;
    }
    if (!cancel && r.method == "GET") {
      return on_files([x, id, owner](store::FileStore& fs) {
        auto b = fs.get_batch(id);
        if (!b) return x->respond(store_error(b.error()));
        if (!*b || (*b)->owner != owner) {
          return x->respond(error_response(api_error(404, "invalid_request_error", "No such Batch object: " + id)));
        }
        x->respond(json_response(200, (*b)->object_json));
      });
    }
    method_not_allowed(r, x);
  }

  void create_batch(const HttpRequest& r, const std::shared_ptr<HttpExchange>& x, const std::string& owner) {
    auto parsed = parse_batch_create(r.body);
    if (auto* e = std::get_if<ApiError>(&parsed)) return x->respond(error_response(*e));
    BatchCreate c = std::get<BatchCreate>(std::move(parsed));
    // A key over its spend limit (or request rate) starts no batch; the
    // lines' tokens and spend are recorded as they finish.
    if (!owner.empty()) {
      if (auto refusal = gate->authorize(owner, batch_endpoint_scope(c.endpoint))) {
        return x->respond(refusal_response(*refusal));
      }
      if (auto refusal = gate->admit(owner, 0, wall_clock_ms())) return x->respond(refusal_response(*refusal));
    }
    // A client whose prepaid money is spent starts no batch (the loop thread
    // reads the ledger); a batch already running goes on to its end.
    if (prepaid_applies(c.endpoint != "/v1/embeddings", nullptr)) {
      Item item;
      item.task = [this, c, x, owner](core::TimeMs now) {
        if (auto refusal = prepaid_refusal(owner, c.endpoint != "/v1/embeddings", now)) {
          return x->respond(std::move(*refusal));
        }
        store_batch(c, x, owner);
      };
      if (!post(std::move(item))) {
        x->respond(error_response(api_error(503, "server_error", "the coordinator is overloaded; retry shortly"), 1));
      }
      return;
    }
    store_batch(std::move(c), x, owner);
  }

  // create_batch() after its checks: the input file read and the batch stored
  // (files thread), then run by the loop thread. Any thread.
  void store_batch(BatchCreate c, const std::shared_ptr<HttpExchange>& x, const std::string& owner) {
    ApiLimits limits;
    limits.max_tokens_limit = config.max_tokens_limit;
    limits.body_bytes_max = config.request_bytes_max;
    on_files([this, x, c, limits, owner](store::FileStore& fs) {
      auto file = fs.get_file(c.input_file_id);
      if (!file) return x->respond(store_error(file.error()));
      if (!*file || (*file)->purpose != "batch" || (*file)->owner != owner) {
        ApiError e = api_error(404, "invalid_request_error",
                               "No such File object with purpose 'batch': " + c.input_file_id);
        e.param = "input_file_id";
        return x->respond(error_response(e));
      }
      auto content = fs.file_content(c.input_file_id);
      if (!content || !*content) return x->respond(store_error(content ? Error{ErrorCode::kNotFound, "gone"} : content.error()));
      const core::TimeMs now = wall_clock_ms();
      BatchRun run;
      run.obj.id = "batch_" + transport::random_hex(12);
      run.obj.endpoint = c.endpoint;
      run.obj.input_file_id = c.input_file_id;
      run.obj.created_at = now / 1000;
      run.obj.metadata = c.metadata;
      run.owner = owner;
      auto lines = parse_batch_input(**content, c.endpoint, limits);
      if (auto* e = std::get_if<ApiError>(&lines)) {
        run.obj.status = "failed";
        run.obj.failed_at = now / 1000;
        run.obj.failure = e->message;
      } else {
        run.obj.status = "in_progress";
        run.obj.in_progress_at = now / 1000;
        run.obj.expires_at = now / 1000 + kBatchWindowSeconds;
        for (BatchLine& l : std::get<std::vector<BatchLine>>(lines)) {
          BatchLineRun line;
          line.line = l.line;
          line.custom_id = l.custom_id;
          if (l.error) {
            line.state = "failed";
            line.result = batch_error_line("batch_req_" + transport::random_hex(12), l.custom_id, *l.error);
            ++run.obj.failed;
          } else {
            line.state = "pending";
            line.body = std::move(l.body);
          }
          run.lines.push_back(std::move(line));
        }
        run.obj.total = run.lines.size();
      }
      std::vector<store::StoredBatchLine> rows;
      for (const BatchLineRun& l : run.lines) rows.push_back(stored_line(run.obj.id, l));
      const std::string object = batch_json(run.obj).dump();
      if (auto st = fs.put_batch({run.obj.id, run.obj.status, run.obj.created_at, object, owner}, rows); !st) {
        return x->respond(store_error(st.error()));
      }
      if (run.obj.status != "in_progress") return x->respond(json_response(200, object));
      // The reply goes out once the loop thread runs the batch, so a cancel sent
      // right after the create finds it there.
      Item item;
      item.task = [this, x, object, run = std::make_shared<BatchRun>(std::move(run))](core::TimeMs t) mutable {
        const std::string id = run->obj.id;
        batch_runs.emplace(id, std::move(*run));
        x->respond(json_response(200, object));
        pump_batches(t);
      };
      // If the inbox is full the batch is stored and starts after the next restart.
      if (!post(std::move(item))) x->respond(json_response(200, object));
    });
  }

  static store::StoredBatchLine stored_line(const std::string& batch_id, const BatchLineRun& l) {
    return {batch_id, l.line, l.state, l.custom_id, l.job_id, l.body, l.result};
  }

  // Loop thread: places pending lines while there is room.
  void pump_batches(core::TimeMs now) {
    for (auto& [id, run] : batch_runs) {
      while (run.ending.empty() && batch_in_flight < config.batch_jobs_in_flight && run.next < run.lines.size()) {
        BatchLineRun& line = run.lines[run.next];
        if (line.state == "pending") submit_line(run, run.next, now);
        ++run.next;
      }
      maybe_finish_batch(run, now);
    }
    std::erase_if(batch_runs, [](const auto& kv) { return kv.second.obj.final(); });
  }

  void fail_line(BatchRun& run, size_t index, const ApiError& e) {
    BatchLineRun& line = run.lines[index];
    line.state = "failed";
    line.body.clear();
    line.result = batch_error_line("batch_req_" + transport::random_hex(12), line.custom_id, e);
    ++run.obj.failed;
    run.changed.insert(index);
    run.dirty = true;
  }

  void submit_line(BatchRun& run, size_t index, core::TimeMs now) {
    BatchLineRun& line = run.lines[index];
    if (run.obj.endpoint == "/v1/embeddings") return submit_embedding_line(run, index, now);
    const bool chat = run.obj.endpoint == "/v1/chat/completions";
    ApiLimits limits;
    limits.max_tokens_limit = config.max_tokens_limit;
    limits.body_bytes_max = config.request_bytes_max;
    auto parsed = parse_completion_request(line.body, chat, limits);
    if (auto* e = std::get_if<ApiError>(&parsed)) return fail_line(run, index, *e);
    CompletionRequest& req = std::get<CompletionRequest>(parsed);
    const ServedModel* model = find_model(req.model);
    if (model == nullptr) {
      return fail_line(run, index, api_error(404, "invalid_request_error",
                                             "The model '" + req.model.substr(0, 128) + "' does not exist",
                                             "model_not_found"));
    }
    auto ids = prompt_tokens(*model, req);
    if (auto* e = std::get_if<ApiError>(&ids)) return fail_line(run, index, *e);
    core::JobSpec spec;
    spec.model_id = model->id;
    spec.prompt_ids = std::move(std::get<std::vector<int32_t>>(ids));
    spec.max_tokens = req.max_tokens.value_or(config.max_tokens_default);
    if (model->context_length > 0 && spec.prompt_ids.size() + spec.max_tokens > model->context_length) {
      return fail_line(run, index, api_error(400, "invalid_request_error",
                                             "This model's maximum context length is " +
                                                 std::to_string(model->context_length) + " tokens",
                                             "context_length_exceeded"));
    }
    if (!req.seed_given) req.sampling.seed = transport::random_u64();
    if (!req.ignore_eos) spec.stop_ids = {model->tokenizer->eos(), model->tokenizer->bos()};
    spec.sampling = req.sampling;
    spec.batch = true;
    const std::string job_id = (chat ? "chatcmpl-" : "cmpl-") + transport::random_hex(12);
    request_json[job_id] = json{{"chat", chat},          {"model", model->id}, {"stream", false},
                                {"batch", run.obj.id},   {"line", line.line}, {"stop", req.stop},
                                {"key", run.owner}}
                               .dump();
    line.state = "running";
    line.job_id = job_id;
    run.changed.insert(index);
    ++run.in_flight;
    ++batch_in_flight;
    batch_jobs[job_id] = {run.obj.id, index};
    apply(machine->handle(core::SubmitJobEvent{job_id, std::move(spec)}, now), now);
  }

  // A line of an embeddings batch runs as an embedding request would (one
  // job per input, batch priority); its reply ends the line (on_line_reply).
  void submit_embedding_line(BatchRun& run, size_t index, core::TimeMs now) {
    BatchLineRun& line = run.lines[index];
    auto prepared = prepare_embeddings(line.body, true);
    if (auto* e = std::get_if<ApiError>(&prepared)) return fail_line(run, index, *e);
    std::shared_ptr<EmbeddingClient> c = std::move(std::get<std::shared_ptr<EmbeddingClient>>(prepared));
    c->key_id = run.owner;
    c->exchange = std::make_shared<InProcessExchange>(
        [this, batch_id = run.obj.id, index, id = c->id](HttpResponse reply) {
          on_line_reply(batch_id, index, id, std::move(reply));
        });
    line.state = "running";
    line.job_id = c->id;
    line.embedding = c;
    run.changed.insert(index);
    ++run.in_flight;
    ++batch_in_flight;
    submit_embedding_jobs(c, now);  // may reply at once (a refusal)
  }

  // Loop thread: the reply to a line of an embeddings batch.
  void on_line_reply(const std::string& batch_id, size_t index, const std::string& request_id, HttpResponse reply) {
    auto rit = batch_runs.find(batch_id);
    if (rit == batch_runs.end()) return;
    BatchRun& run = rit->second;
    BatchLineRun& line = run.lines[index];
    if (line.state != "running" || line.job_id != request_id) return;
    CHECK(run.in_flight > 0 && batch_in_flight > 0);
    --run.in_flight;
    --batch_in_flight;
    line.embedding.reset();
    if (reply.status == 200) {
      line.state = "done";
      line.result = batch_output_line("batch_req_" + transport::random_hex(12), line.custom_id, request_id, reply.body);
      line.body.clear();
      ++run.obj.completed;
    } else if (run.ending == "cancelled") {
      line.state = "cancelled";
    } else {
      const json err = json::parse(reply.body, nullptr, false);
      const json* e = err.is_object() && err.contains("error") && err["error"].is_object() ? &err["error"] : nullptr;
      std::string code = run.ending == "expired" ? "batch_expired" : "request_failed";
      std::string message = code;
      if (e != nullptr && e->contains("message") && (*e)["message"].is_string()) message = (*e)["message"];
      if (e != nullptr && e->contains("code") && (*e)["code"].is_string() && run.ending.empty()) code = (*e)["code"];
      return fail_line(run, index, api_error(reply.status, "server_error", message, code));
    }
    run.changed.insert(index);
    run.dirty = true;
  }

  // The response body of a finished batch job, from its tokens.
  std::string batch_result_body(const std::string& job_id, const std::string& request, const std::string& model_id,
                                const std::vector<int32_t>& prompt_ids, const std::vector<int32_t>& produced,
                                const std::string& finish_reason, core::TimeMs now) const {
    const json req = json::parse(request, nullptr, false);
    const bool chat = req.is_object() && req.value("chat", false);
    const ServedModel* model = find_model(model_id);
    std::string text;
    if (model != nullptr) {
      engine::Detokenizer detok(*model->tokenizer);
      for (int32_t id : prompt_ids) (void)detok.push(id);
      for (int32_t id : produced) text += detok.push(id);
      text += detok.flush();
    }
    std::string reason = finish_reason;
    if (req.is_object() && req.contains("stop") && req["stop"].is_array() && !req["stop"].empty()) {
      auto matcher = engine::StopMatcher::create(req["stop"].get<std::vector<std::string>>());
      if (matcher) {
        engine::StopStep step = matcher->push(text);
        text = step.text + (step.stopped ? std::string() : matcher->flush());
        if (step.stopped) reason = "stop";
      }
    }
    ResponseMeta meta;
    meta.id = job_id;
    meta.created = now / 1000;
    meta.model = model_id;
    meta.system_fingerprint = kFingerprint;
    return completion_response(meta, chat, text, reason, Usage{prompt_ids.size(), produced.size()});
  }

  // Loop thread: a batch job was refused or ended.
  // `output`: the tokens to write when done (verification's agreed output); null: the job's own.
  void on_batch_job(const std::string& job_id, std::optional<core::JobState> state, const std::string& why,
                    core::TimeMs now, const std::vector<int32_t>* output = nullptr) {
    auto it = batch_jobs.find(job_id);
    if (it == batch_jobs.end()) return;
    const auto [batch_id, index] = it->second;
    batch_jobs.erase(it);
    auto rit = batch_runs.find(batch_id);
    if (rit == batch_runs.end()) return;
    BatchRun& run = rit->second;
    BatchLineRun& line = run.lines[index];
    CHECK(run.in_flight > 0 && batch_in_flight > 0);
    --run.in_flight;
    --batch_in_flight;
    const std::string request = request_json.count(job_id) ? request_json[job_id] : "{}";
    if (state == core::JobState::kDone) {
      const core::JobEntry* e = machine->job(job_id);
      CHECK(e != nullptr);
      const std::vector<int32_t>& tokens = output != nullptr ? *output : e->job.produced();
      const std::string body = batch_result_body(job_id, request, e->spec.model_id, e->spec.prompt_ids, tokens,
                                                 e->job.finish_reason(), now);
      line.state = "done";
      line.result = batch_output_line("batch_req_" + transport::random_hex(12), line.custom_id, job_id, body);
      line.body.clear();
      ++run.obj.completed;
      if (!run.owner.empty() && gate) {
        const Prices prices = prices_of(e->spec.model_id);
        gate->record_usage(run.owner, e->spec.prompt_ids.size(), tokens.size(), wall_clock_ms(), &prices);
      }
    } else if (state == core::JobState::kCancelled && run.ending == "cancelled") {
      line.state = "cancelled";
    } else {
      const std::string code = run.ending == "expired" ? "batch_expired" : "request_failed";
      fail_line(run, index, api_error(500, "server_error", why.empty() ? code : why, code));
    }
    run.changed.insert(index);
    run.dirty = true;
    (void)now;  // the loop places the next lines (pump_batches) once this event is done
  }

  // Loop thread: writes what changed, and ends a batch whose lines are all final.
  void maybe_finish_batch(BatchRun& run, core::TimeMs now) {
    bool open = run.in_flight > 0;
    if (run.ending.empty()) {
      for (size_t i = run.next; i < run.lines.size() && !open; ++i) open = run.lines[i].state == "pending";
    }
    if (!open && !run.obj.final()) {
      const int64_t t = now / 1000;
      run.obj.finalizing_at = t;
      if (run.ending == "cancelled") {
        run.obj.status = "cancelled";
        run.obj.cancelled_at = t;
      } else if (run.ending == "expired") {
        run.obj.status = "expired";
        run.obj.expired_at = t;
      } else {
        run.obj.status = "completed";
        run.obj.completed_at = t;
      }
      std::string output, errors;
      for (const BatchLineRun& l : run.lines) {
        if (l.state == "done") output += l.result;
        if (l.state == "failed") errors += l.result;
      }
      if (!output.empty()) run.obj.output_file_id = "file-" + transport::random_hex(12);
      if (!errors.empty()) run.obj.error_file_id = "file-" + transport::random_hex(12);
      write_batch(run, std::move(output), std::move(errors));
      return;
    }
    if (run.dirty || !run.changed.empty()) write_batch(run, "", "");
  }

  void write_batch(BatchRun& run, std::string output, std::string errors) {
    std::vector<store::StoredBatchLine> rows;
    for (size_t i : run.changed) rows.push_back(stored_line(run.obj.id, run.lines[i]));
    run.changed.clear();
    run.dirty = false;
    const BatchObject obj = run.obj;
    on_files([this, obj, owner = run.owner, rows = std::move(rows), output = std::move(output),
              errors = std::move(errors)](store::FileStore& fs) {
      const int64_t t = obj.finalizing_at;
      if (!obj.output_file_id.empty()) {
        const store::StoredFile f{obj.output_file_id, "batch_output", obj.id + "_output.jsonl", output.size(), t,
                                  owner};
        if (auto st = fs.put_file(f, output); !st) log("batch " + obj.id + ": " + st.error().to_string());
      }
      if (!obj.error_file_id.empty()) {
        const store::StoredFile f{obj.error_file_id, "batch_output", obj.id + "_error.jsonl", errors.size(), t,
                                  owner};
        if (auto st = fs.put_file(f, errors); !st) log("batch " + obj.id + ": " + st.error().to_string());
      }
      if (auto st = fs.put_batch({obj.id, obj.status, obj.created_at, batch_json(obj).dump(), owner}, rows); !st) {
        log("batch " + obj.id + ": " + st.error().to_string());
      }
    });
  }

  // Loop thread: POST /v1/batches/{id}/cancel.
  void cancel_batch(const std::string& id, const std::string& owner, const std::shared_ptr<HttpExchange>& x,
                    core::TimeMs now) {
    auto it = batch_runs.find(id);
    if (it == batch_runs.end() || it->second.owner != owner) {
      // Not running: finished, or unknown (or another key's).
      return on_files([x, id, owner](store::FileStore& fs) {
        auto b = fs.get_batch(id);
        if (!b) return x->respond(store_error(b.error()));
        if (!*b || (*b)->owner != owner) {
          return x->respond(error_response(api_error(404, "invalid_request_error", "No such Batch object: " + id)));
        }
        x->respond(error_response(api_error(409, "invalid_request_error",
                                            "the batch is " + (*b)->status + "; only a running batch can be cancelled")));
      });
    }
    BatchRun& run = it->second;
    end_batch(run, "cancelled", now);
    x->respond(json_response(200, batch_json(run.obj).dump()));
    pump_batches(now);
  }

  // Loop thread: stops placing a batch's lines; what runs is cancelled.
  void end_batch(BatchRun& run, const std::string& why, core::TimeMs now) {
    if (!run.ending.empty()) return;
    run.ending = why;
    if (why == "cancelled") {
      run.obj.status = "cancelling";
      run.obj.cancelling_at = now / 1000;
    }
    for (size_t i = 0; i < run.lines.size(); ++i) {
      if (run.lines[i].state != "pending") continue;
      if (why == "expired") {
        fail_line(run, i, api_error(500, "server_error", "the batch expired before this request ran", "batch_expired"));
      } else {
        run.lines[i].state = "cancelled";
        run.changed.insert(i);
      }
    }
    run.dirty = true;
    std::vector<std::string> running;
    for (const auto& [job, where] : batch_jobs) {
      if (where.first == run.obj.id) running.push_back(job);
    }
    for (const std::string& job : running) apply(machine->handle(core::CancelJobEvent{job}, now), now);
    // Running lines of an embeddings batch: answered (on_line_reply ends
    // the line) and their jobs cancelled.
    const ApiError stopped = why == "expired" ? api_error(500, "server_error", "the batch expired", "batch_expired")
                                              : api_error(499, "server_error", "the batch was cancelled");
    for (size_t i = 0; i < run.lines.size(); ++i) {
      if (std::shared_ptr<EmbeddingClient> c = run.lines[i].embedding) fail_embedding(*c, stopped, 0);
    }
    apply({}, now);  // the cancellations fail_embedding queued
  }

  // Loop thread, every tick: expiry, then placing and writing.
  void tick_batches(core::TimeMs now) {
    for (auto& [id, run] : batch_runs) {
      if (run.ending.empty() && run.obj.expires_at > 0 && now / 1000 >= run.obj.expires_at) end_batch(run, "expired", now);
    }
    pump_batches(now);
  }

  // start(): batches that were running when the coordinator stopped.
  Status restore_batches(core::TimeMs now) {
    auto unfinished = files->load_unfinished_batches();
    if (!unfinished) return Unexpected(unfinished.error());
    for (const store::StoredBatch& sb : *unfinished) {
      auto obj = batch_from_json(json::parse(sb.object_json, nullptr, false));
      auto rows = files->batch_lines(sb.id);
      if (!obj || !rows) {
        log("batch " + sb.id + " cannot be restored (corrupt record); left in the store");
        continue;
      }
      BatchRun run;
      run.obj = std::move(*obj);
      run.owner = sb.owner;
      for (const store::StoredBatchLine& row : *rows) {
        run.lines.push_back({row.line, row.custom_id, row.body, row.state, row.job_id, row.result, nullptr});
      }
      for (size_t i = 0; i < run.lines.size(); ++i) {
        BatchLineRun& line = run.lines[i];
        if (line.state != "running") continue;
        const core::JobEntry* e = machine->job(line.job_id);
        if (e != nullptr && !core::job_state_final(e->job.state())) {
          batch_jobs[line.job_id] = {run.obj.id, i};
          ++run.in_flight;
          ++batch_in_flight;
          continue;
        }
        auto stored = store->get(line.job_id);
        if (stored && *stored && (*stored)->state == "done") {
          const auto& s = **stored;
          line.state = "done";
          line.result = batch_output_line(
              "batch_req_" + transport::random_hex(12), line.custom_id, s.id,
              batch_result_body(s.id, s.request_json, s.model_id, s.prompt_ids, s.produced, s.finish_reason, now));
          line.body.clear();
          ++run.obj.completed;
        } else if (stored && *stored) {
          fail_line(run, i, api_error(500, "server_error", "the request " + (*stored)->state, "request_failed"));
        } else {
          line.state = "pending";  // its job never reached the store: run it now
          line.job_id.clear();
        }
        run.changed.insert(i);
      }
      if (run.obj.status == "cancelling") run.ending = "cancelled";
      if (run.obj.status == "validating") {
        run.obj.status = "failed";
        run.obj.failed_at = now / 1000;
        run.obj.failure = "the coordinator stopped while the batch was being validated";
      }
      run.dirty = true;
      batch_runs.emplace(run.obj.id, std::move(run));
    }
    if (!batch_runs.empty()) log("restored " + std::to_string(batch_runs.size()) + " unfinished batches");
    return {};
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
      request_json[job_id] =
          json{{"embedding", true}, {"model", c->model}, {"index", i}, {"key", c->key_id}}.dump();
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
      if (!c->key_id.empty()) {
        const Prices prices = prices_of(c->model);
        gate->record_usage(c->key_id, c->prompt_tokens, 0, wall_clock_ms(), &prices);
      }
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
    core::TimeMs next_tick = wall_clock_ms();
    std::deque<Item> items;
    while (!stopping.load()) {
      {
        std::unique_lock<std::mutex> lock(mu);
        cv.wait_for(lock, std::chrono::milliseconds(std::max<int64_t>(1, next_tick - wall_clock_ms())),
                    [&] { return !inbox.empty() || stopping.load(); });
        items.swap(inbox);
      }
      bool accepted = false;  // a client's job was accepted in this drain
      for (Item& item : items) {
        const core::TimeMs now = wall_clock_ms();
        if (item.task) {
          item.task(now);
          continue;
        }
        if (item.client) {
          const std::string id = std::get<core::SubmitJobEvent>(item.event).job_id;
          request_json[id] = json{{"chat", item.client->request.chat},
                                  {"model", item.client->request.model},
                                  {"stream", item.client->request.stream},
                                  {"key", item.client->key_id}}
                                 .dump();
          if (!item.client->idem.key.empty() &&
              !begin_idempotent(item.client->idem, item.client->exchange, now)) {
            request_json.erase(id);
            continue;  // answered from the store, or refused
          }
          if (auto refusal = prepaid_refusal(item.client->key_id, /*completion=*/true, now,
                                             &item.client->request.model)) {
            item.client->exchange->respond(std::move(*refusal));
            end_idempotent(item.client->idem, nullptr);
            request_json.erase(id);
            continue;
          }
          clients[id] = std::move(item.client);
          accepted = true;
        }
        const auto* from_vehicle = std::get_if<core::VehicleMessageEvent>(&item.event);
        if (from_vehicle != nullptr && !trust_vehicle(*from_vehicle, now)) continue;
        apply(machine->handle(item.event, now), now);
        if (from_vehicle != nullptr) {
          // Every hello gets the owner's policy, so an agent that restarted has it at once.
          const auto* hello = std::get_if<core::HelloMessage>(&from_vehicle->message);
          if (hello != nullptr && hello->vehicle_id == from_vehicle->vehicle_id) send_policy(hello->vehicle_id);
        }
      }
      // A client's job is in the store before its stream can name it (the
      // first event goes out with the first chunk, a later drain): a
      // coordinator killed now restores it rather than losing it. Found by
      // `idlefleet chaos --seed 2`.
      if (accepted) flush_dirty(wall_clock_ms());
      items.clear();
      const core::TimeMs now = wall_clock_ms();
      if (!batch_runs.empty()) pump_batches(now);
      if (now >= next_tick) {
        tick_batches(now);
        // Clients that went away: their jobs are cancelled (the vehicle stops).
        std::vector<std::string> gone;
        for (const auto& [id, c] : clients) {
          if (c->exchange->closed()) gone.push_back(id);
        }
        for (const std::string& id : gone) apply(machine->handle(core::CancelJobEvent{id}, now), now);
        drop_gone_embedding_clients();
        apply(machine->handle(core::CoordinatorTick{}, now), now);
        flush_dirty(now);
        settle_due(now);
        sync_keys(now);
        // The status walks every vehicle and job: a few times a second is
        // plenty for people and gauges, and every tick cost a fleet of a
        // hundred thousand most of a core (bench/replica_load.sh).
        if (now - status_at >= kStatusMs) {
          publish_status(now);
          status_at = now;
        } else if (const size_t idle = machine->vehicles_available(); idle > workable_vehicles.load()) {
          // Between statuses, a car that became free opens the door to
          // clients at once (the count of idle cars costs nothing; the
          // status sets the exact number of workable ones).
          workable_vehicles.store(idle);
        }
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
        if (ended->verifying) {
          verifying[ended->job_id] = client_account_of(ended->job_id);
        } else if (ended->state == core::JobState::kDone) {
          await_settlement(ended->job_id, now);
        }
        if (ended->state == core::JobState::kDone) {
          auto job = machine->jobs().find(ended->job_id);
          if (job != machine->jobs().end()) dashboard_stats.job_done(now - job->second.job.created_at());
        }
        if (embedding_jobs.count(ended->job_id) != 0) {
          on_embedding_ended(*ended);
        } else {
          on_ended(*ended);
        }
      } else if (auto* receipt = std::get_if<core::ReceiptAcceptedEffect>(&effect)) {
        on_receipt_accepted(*receipt, now);
      } else if (auto* verified = std::get_if<core::JobVerifiedEffect>(&effect)) {
        on_verified(*verified, now);
      } else if (auto* standing = std::get_if<core::VehicleStandingEffect>(&effect)) {
        if (auto st = vehicle_store->put_standing(standing->vehicle_id, standing->standing, now); !st) {
          log("vehicle store: " + st.error().to_string());
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
    if (it == clients.end()) {
      if (!e.status) on_batch_job(e.job_id, std::nullopt, e.status.error().message, wall_clock_ms());
      return;
    }
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
      end_idempotent(c.idem, nullptr);
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
    const engine::Tokenizer& tok = *c.model->tokenizer;
    // The machine sends logprobs with every token of a job that asked for them.
    const bool logprobs = c.request.logprobs >= 0 && e.logprobs.size() == e.ids.size();
    std::string piece;
    for (size_t i = 0; i < e.ids.size(); ++i) {
      const int32_t id = e.ids[i];
      if (logprobs && id != tok.eos() && id != tok.bos()) {
        c.logprobs_pending.push_back(logprobs_entry(tok, id, e.logprobs[i], c.text_in_bytes));
      }
      const std::string text = c.detok->push(id);
      c.text_in_bytes += text.size();
      piece += text;
    }
    c.completion_tokens += e.ids.size();
    if (c.stop) {
      if (c.stop->stopped()) return;  // tokens that were on their way when the stop string appeared
      engine::StopStep step = c.stop->push(piece);
      piece = std::move(step.text);
      if (step.stopped) stop_jobs.push_back(e.job_id);
    }
    c.text_out_bytes += piece.size();
    std::vector<LogprobsEntry> ready = release_logprobs(c, false);
    if (c.request.stream) {
      if (!piece.empty() || !ready.empty()) {
        c.exchange->stream_write(completion_chunk_event(c.meta, c.request.chat, piece, std::nullopt, false,
                                                        c.request.logprobs >= 0 ? &ready : nullptr));
      }
    } else {
      c.text += piece;
      for (LogprobsEntry& entry : ready) c.logprobs.push_back(std::move(entry));
    }
  }

  void on_ended(const core::JobEndedEffect& e) {
    auto it = clients.find(e.job_id);
    if (it == clients.end()) {
      // A batch line whose job is checked waits for the agreed output (on_verified).
      if (!e.verifying) on_batch_job(e.job_id, e.state, e.finish_reason, wall_clock_ms());
      return;
    }
    ClientStream& c = *it->second;
    std::string tail = c.detok->flush();
    if (c.stop) tail = c.stop->stopped() ? std::string() : c.stop->push(tail).text + c.stop->flush();
    c.text_out_bytes += tail.size();
    std::vector<LogprobsEntry> ready = release_logprobs(c, !c.stop || !c.stop->stopped());
    const std::vector<LogprobsEntry>* tail_logprobs = c.request.logprobs >= 0 && !ready.empty() ? &ready : nullptr;
    if (!c.request.stream) c.logprobs.insert(c.logprobs.end(), ready.begin(), ready.end());
    const Usage usage{c.prompt_tokens, c.completion_tokens};
    if (e.state == core::JobState::kDone && !c.key_id.empty()) {
      const Prices prices = prices_of(c.model != nullptr ? c.model->id : c.request.model);
      gate->record_usage(c.key_id, c.prompt_tokens, c.completion_tokens, wall_clock_ms(), &prices);
    }
    if (e.state == core::JobState::kDone) {
      if (c.request.stream) {
        c.exchange->stream_write(
            completion_chunk_event(c.meta, c.request.chat, tail, e.finish_reason, false, tail_logprobs));
        if (c.request.include_usage) c.exchange->stream_write(usage_event(c.meta, c.request.chat, usage));
        c.exchange->stream_write(std::string(kDoneEvent));
        c.exchange->stream_end();
      } else {
        std::string body = completion_response(c.meta, c.request.chat, c.text + tail, e.finish_reason, usage,
                                               c.request.logprobs >= 0 ? &c.logprobs : nullptr);
        // Stored before it is sent, so that a retry the moment it arrives is a replay.
        end_idempotent(c.idem, &body);
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
    end_idempotent(c.idem, nullptr);
    clients.erase(it);
  }

  // A vehicle's verification standing (core/verification.h), as the owner API shows it.
  void add_verification(json* entry, const std::string& vehicle_id) const {
    const core::VehicleStanding* s = machine->standing(vehicle_id);
    if (s == nullptr) return;
    (*entry)["verification"] = {{"standing", s->standing},
                                {"checks_agreed", s->checks_agreed},
                                {"checks_faulted", s->checks_faulted},
                                {"quarantined", s->quarantined},
                                {"quarantine_reason", s->quarantine_reason},
                                {"quarantined_at", s->quarantined_at}};
  }

  // A vehicle as /v1/vehicles and the owner API show it.
  json vehicle_json(const core::VehicleView& v) const {
    json reasons = json::array();
    if (v.state) {
      for (const std::string& r : v.state->reasons) reasons.push_back(r);
    }
    json j = {{"id", v.id},
              {"online", v.online},
              {"state", v.online && v.state ? v.state->state : "offline"},
              {"eligible", v.online && v.state && v.state->eligible},
              {"reasons", reasons},
              {"soc_pct", v.state ? v.state->soc_pct : 0.0},
              {"accelerator_temp_c", v.state ? v.state->accelerator_temp_c : 0.0},
              {"job_id", v.job_id},
              {"attempts_completed", v.attempts_completed},
              {"attempts_lost", v.attempts_lost},
              {"models_cached", v.hello.models_cached}};
    add_verification(&j, v.id);
    return j;
  }

  // ---- Owners and enrolment ---------------------------------------------------------
  //
  // POST /v1/vehicles/enroll {code, vehicle_id, public_key} (the one-time code
  // is the credential); /v1/owner/... with `Authorization: Bearer ow-idf-...`.
  // The vehicle store belongs to the loop thread: these run there.

  static HttpResponse enrol_error(const Error& e) {
    switch (e.code) {
      case ErrorCode::kNotFound: return error_response(api_error(404, "invalid_request_error", e.message, "code_unknown"));
      case ErrorCode::kAlreadyExists: return error_response(api_error(409, "invalid_request_error", e.message, "conflict"));
      case ErrorCode::kOutOfRange: return error_response(api_error(400, "invalid_request_error", e.message, "code_expired"));
      case ErrorCode::kInvalidArgument: return error_response(api_error(400, "invalid_request_error", e.message));
      default: return error_response(api_error(500, "server_error", "the vehicle store failed: " + e.message));
    }
  }

  void enrol_route(const HttpRequest& r, const std::shared_ptr<HttpExchange>& x) {
    if (r.method != "POST") return method_not_allowed(r, x);
    const json j = json::parse(r.body, nullptr, false);
    auto field = [&](const char* k) {
      return j.is_object() && j.contains(k) && j[k].is_string() ? j[k].get<std::string>() : std::string();
    };
    const std::string code = field("code"), vid = field("vehicle_id"), key = field("public_key");
    if (code.empty() || code.size() > 128 || vid.empty() || key.empty()) {
      return x->respond(error_response(api_error(
          400, "invalid_request_error", "the body must be {\"code\", \"vehicle_id\", \"public_key\"}, all strings")));
    }
    Item item;
    item.task = [this, x, code, vid, key](core::TimeMs now) {
      auto v = vehicle_store->enrol(code, vid, key, wall_clock_ms());
      if (!v) return x->respond(enrol_error(v.error()));
      vehicle_keys[v->vehicle_id] = *from_hex<32>(v->public_key);
      vehicle_owners[v->vehicle_id] = v->owner_id;
      count_event("enrolled", "vehicle " + v->vehicle_id + " enrolled to " + v->owner_id);
      (void)now;
      const Ed25519PublicKey vehicle_key = *from_hex<32>(v->public_key);
      update_nats_authorization();
      x->respond(json_response(200, json{{"vehicle_id", v->vehicle_id},
                                         {"owner_id", v->owner_id},
                                         {"pinned_at", v->pinned_at},
                                         {"nats_user", nkey_user_public(vehicle_key)}}
                                        .dump()));
    };
    if (!post(std::move(item))) x->respond(error_response(api_error(503, "server_error", "overloaded"), 1));
  }

  // Rewrites [nats] authorization_file with every enrolled vehicle and has
  // nats-server reload it (loop thread). A failure is logged and counted,
  // not returned: the enrolment itself stands, and the next one (or a
  // restart) writes the file again.
  void update_nats_authorization() {
    if (config.nats_authorization_file.empty()) return;
    auto written = write_nats_authorization(config.nats_authorization_file, identity.public_key, *vehicle_store);
    if (!written) {
      metrics.counter("idlefleet_nats_authorization_failures_total",
                      "Failed rewrites of nats.authorization_file or reloads of nats-server").inc();
      log("cannot write nats.authorization_file: " + written.error().message);
      return;
    }
    reload_nats();
  }

  void reload_nats() {
    if (config.nats_server_pid_file.empty()) return;
    if (auto st = signal_nats_reload(config.nats_server_pid_file); !st) {
      metrics.counter("idlefleet_nats_authorization_failures_total",
                      "Failed rewrites of nats.authorization_file or reloads of nats-server").inc();
      log("cannot make nats-server reload its authorisation: " + st.error().message);
    }
  }

  void owner_route(const HttpRequest& r, const std::shared_ptr<HttpExchange>& x) {
    const std::string* auth = r.header("authorization");
    std::string token;
    if (auth != nullptr && auth->size() > 7 && (auth->rfind("Bearer ", 0) == 0 || auth->rfind("bearer ", 0) == 0)) {
      token = auth->substr(7);
    }
    if (token.rfind("sk-idf-", 0) == 0) {
      return x->respond(error_response(api_error(
          403, "invalid_request_error",
          "this is a client API key; owner routes need an owner token (idlefleet admin owners create)",
          "insufficient_permissions")));
    }
    if (token.rfind(store::kOwnerTokenPrefix, 0) != 0) {
      HttpResponse resp = error_response(api_error(401, "invalid_request_error",
                                                   "owner routes need `Authorization: Bearer ow-idf-...`",
                                                   "invalid_api_key"));
      resp.headers.push_back({"WWW-Authenticate", "Bearer"});
      return x->respond(std::move(resp));
    }
    Item item;
    item.task = [this, x, token, method = r.method, path = r.path, query = r.query, body = r.body](core::TimeMs now) {
      (void)now;  // owner routes use the wall clock (wall_ms) as the store does
      auto owner = vehicle_store->owner_by_token(token);
      if (!owner) return x->respond(enrol_error(owner.error()));
      if (!*owner) {
        return x->respond(error_response(api_error(401, "invalid_request_error", "unknown owner token",
                                                   "invalid_api_key")));
      }
      const store::Owner& o = **owner;
      if (method == "POST" && path == "/v1/owner/enrolment_codes") {
        auto code = vehicle_store->create_code(o.id, wall_clock_ms());
        if (!code) return x->respond(enrol_error(code.error()));
        return x->respond(json_response(200, json{{"code", *code},
                                                  {"owner_id", o.id},
                                                  {"expires_at", (wall_clock_ms() + store::kEnrolmentCodeTtlMs) / 1000}}
                                                 .dump()));
      }
      if (method == "GET" && path == "/v1/owner/vehicles") {
        auto mine = vehicle_store->vehicles_of(o.id);
        if (!mine) return x->respond(enrol_error(mine.error()));
        json list = json::array();
        for (const store::VehicleRecord& v : *mine) {
          auto it = machine->vehicles().find(v.vehicle_id);
          json entry = it == machine->vehicles().end()
                           ? json{{"id", v.vehicle_id}, {"online", false}, {"state", "offline"}}
                           : vehicle_json(it->second);
          if (it == machine->vehicles().end()) add_verification(&entry, v.vehicle_id);
          entry["enrolled_at"] = v.pinned_at;
          list.push_back(std::move(entry));
        }
        return x->respond(json_response(200, json{{"object", "list"}, {"owner_id", o.id}, {"data", list}}.dump(
                                                     -1, ' ', false, json::error_handler_t::replace)));
      }
      if (path == "/v1/owner/statements") {
        if (method != "GET") return x->respond(owner_method_not_allowed(method, path));
        return owner_statement(o, query, x);
      }
      constexpr std::string_view kVehicles = "/v1/owner/vehicles/";
      if (path.rfind(kVehicles, 0) == 0) {
        std::string id = path.substr(kVehicles.size());
        const bool policy_route = id.ends_with("/policy");
        if (policy_route) id.resize(id.size() - 7);
        // Another owner's vehicle is as absent as one that never was.
        auto record = core::valid_vehicle_id(id) ? vehicle_store->vehicle(id)
                                                 : Result<std::optional<store::VehicleRecord>>(std::optional<store::VehicleRecord>());
        if (!record) return x->respond(enrol_error(record.error()));
        if (!*record || (*record)->owner_id != o.id) {
          return x->respond(error_response(api_error(
              404, "invalid_request_error", "you have no vehicle '" + id.substr(0, 128) + "'", "vehicle_not_found")));
        }
        if (!policy_route) {
          if (method != "GET") return x->respond(owner_method_not_allowed(method, path));
          return owner_vehicle(**record, x);
        }
        if (method == "GET") return owner_policy(id, x);
        if (method == "PUT") return put_owner_policy(id, body, x);
        return x->respond(owner_method_not_allowed(method, path));
      }
      x->respond(error_response(api_error(404, "invalid_request_error", "no route for " + method + " " + path)));
    };
    if (!post(std::move(item))) x->respond(error_response(api_error(503, "server_error", "overloaded"), 1));
  }

  static HttpResponse owner_method_not_allowed(const std::string& method, const std::string& path) {
    return error_response(api_error(405, "invalid_request_error",
                                    "method " + method.substr(0, 16) + " not allowed on " + path.substr(0, 200)));
  }

  // The owner's policy of a vehicle as JSON, or null when the owner has set none.
  json stored_policy_json(const std::string& vehicle_id, json* updated_at) {
    auto p = vehicle_store->policy(vehicle_id);
    if (!p) {
      log("vehicle store: " + p.error().to_string());
      return nullptr;
    }
    if (!*p) return nullptr;
    *updated_at = (*p)->updated_at;
    return json::parse(core::encode_policy((*p)->policy));
  }

  // GET /v1/owner/vehicles/{id}: live state, eligibility reasons, policy.
  void owner_vehicle(const store::VehicleRecord& v, const std::shared_ptr<HttpExchange>& x) {
    auto it = machine->vehicles().find(v.vehicle_id);
    json entry = it == machine->vehicles().end()
                     ? json{{"id", v.vehicle_id}, {"online", false}, {"state", "offline"}, {"eligible", false},
                            {"reasons", json::array()}}
                     : vehicle_json(it->second);
    entry["enrolled_at"] = v.pinned_at;
    json updated_at = nullptr;
    entry["policy"] = stored_policy_json(v.vehicle_id, &updated_at);
    entry["policy_updated_at"] = updated_at;
    x->respond(json_response(200, entry.dump(-1, ' ', false, json::error_handler_t::replace)));
  }

  // GET /v1/owner/vehicles/{id}/policy
  void owner_policy(const std::string& vehicle_id, const std::shared_ptr<HttpExchange>& x) {
    json updated_at = nullptr;
    json policy = stored_policy_json(vehicle_id, &updated_at);
    x->respond(json_response(
        200, json{{"vehicle_id", vehicle_id}, {"policy", policy}, {"updated_at", updated_at}}.dump()));
  }

  // PUT /v1/owner/vehicles/{id}/policy: the whole policy (absent fields take
  // their defaults). Stored, then sent to the vehicle at once; every hello
  // brings it again.
  void put_owner_policy(const std::string& vehicle_id, const std::string& body, const std::shared_ptr<HttpExchange>& x) {
    auto policy = core::decode_policy(body);
    if (!policy) {
      ApiError e = api_error(400, "invalid_request_error", policy.error().message, "invalid_policy");
      e.param = policy_param(policy.error().message);
      return x->respond(error_response(e));
    }
    if (auto st = vehicle_store->put_policy(vehicle_id, *policy, wall_clock_ms()); !st) {
      return x->respond(enrol_error(st.error()));
    }
    count_event("policy_set", "the owner set the policy of vehicle " + vehicle_id);
    send_policy(vehicle_id);
    owner_policy(vehicle_id, x);
  }

  // The field a policy error names: "policy field 'tariff.kind' ..." or
  // "policy: soc_floor_pct 150 is outside ..."; "" when it names none.
  static std::string policy_param(const std::string& message) {
    constexpr std::string_view kField = "policy field '";
    if (message.rfind(kField, 0) == 0) {
      const size_t end = message.find('\'', kField.size());
      if (end != std::string::npos) return message.substr(kField.size(), end - kField.size());
    }
    constexpr std::string_view kPolicy = "policy: ";
    if (message.rfind(kPolicy, 0) == 0) {
      const size_t end = message.find(' ', kPolicy.size());
      return message.substr(kPolicy.size(), end == std::string::npos ? std::string::npos : end - kPolicy.size());
    }
    return {};
  }

  // The owner's policy of a vehicle to the vehicle, if the owner set one.
  void send_policy(const std::string& vehicle_id) {
    auto p = vehicle_store->policy(vehicle_id);
    if (!p) return log("vehicle store: " + p.error().to_string());
    if (!*p) return;
    auto st = nats->publish(core::down_subject(vehicle_id),
                            core::encode_message(core::PolicyMessage{vehicle_id, (*p)->policy}));
    if (!st) log("publish to " + vehicle_id + " failed: " + st.error().to_string());
  }

  // GET /v1/owner/statements?month=YYYY-MM&format=json|csv: the ledger's
  // statement of the caller's month, as `idlefleet ledger statement` prints it.
  void owner_statement(const store::Owner& o, const std::string& query, const std::shared_ptr<HttpExchange>& x) {
    auto bad = [&](const std::string& param, const std::string& message) {
      ApiError e = api_error(400, "invalid_request_error", message);
      e.param = param;
      x->respond(error_response(e));
    };
    std::string month_text, format = "json";
    bool have_month = false;
    const auto pairs = query_pairs(query, x);
    if (!pairs) return;
    for (const auto& [k, v] : *pairs) {
      if (k == "month") {
        month_text = v;
        have_month = true;
      } else if (k == "format") {
        format = v;
      } else {
        return bad(k.substr(0, 64), "unknown parameter '" + k.substr(0, 64) + "' (month, format)");
      }
    }
    if (!have_month) return bad("month", "'month' is required (YYYY-MM, UTC)");
    auto month = core::parse_month(month_text);
    if (!month) return bad("month", month.error().message);
    if (format != "json" && format != "csv") return bad("format", "'format' must be json or csv");
    auto s = ledger->statement(o.id, month->year, month->month);
    if (!s) {
      return x->respond(error_response(api_error(500, "server_error", "the ledger failed: " + s.error().message)));
    }
    HttpResponse resp = json_response(200, format == "csv" ? store::statement_csv(*s) : store::statement_json(*s));
    if (format == "csv") resp.content_type = "text/csv; charset=utf-8";
    x->respond(std::move(resp));
  }

  // ---- Vehicle keys and receipts (loop thread) ----------------------------------------

  // A hello pins the vehicle's public key the first time it shows one; a
  // hello with another key, and a receipt whose signature does not verify
  // against the pinned key, are refused before the machine sees them.
  // Returns false to drop the message.
  bool trust_vehicle(const core::VehicleMessageEvent& e, core::TimeMs now) {
    if (const auto* h = std::get_if<core::HelloMessage>(&e.message)) {
      if (config.enrolment_required && h->public_key.empty()) {
        count_refusal("not_enrolled", "hello without a key from vehicle " + e.vehicle_id);
        return false;
      }
      if (h->public_key.empty() || h->vehicle_id != e.vehicle_id) return true;  // the machine judges the rest
      auto it = vehicle_keys.find(e.vehicle_id);
      const std::string known = it == vehicle_keys.end() ? std::string() : to_hex(it->second);
      if (known == h->public_key) {
        if (config.enrolment_required && vehicle_owners[e.vehicle_id].empty()) {
          count_refusal("not_enrolled", "hello from vehicle " + e.vehicle_id +
                                            ", whose key is pinned but which is not enrolled to an owner");
          return false;
        }
        return true;
      }
      if (!known.empty()) {
        count_refusal("key_mismatch", "hello from vehicle " + e.vehicle_id +
                                          " with a key other than the one pinned for it; its receipts stay refused "
                                          "until the old key is removed");
        return false;
      }
      if (config.enrolment_required) {
        count_refusal("not_enrolled", "hello from vehicle " + e.vehicle_id +
                                          ", which is not enrolled (idlefleet agent enroll with an owner's code)");
        return false;
      }
      store::VehicleRecord v{e.vehicle_id, h->public_key, "", wall_clock_ms()};
      if (auto st = vehicle_store->put_vehicle(v); !st) {
        log("vehicle store: " + st.error().to_string());
        return false;
      }
      vehicle_keys[e.vehicle_id] = *from_hex<32>(h->public_key);
      (void)now;
      return true;
    }
    if (const auto* r = std::get_if<core::ReceiptMessage>(&e.message)) {
      auto it = vehicle_keys.find(e.vehicle_id);
      if (it == vehicle_keys.end()) {
        count_refusal("unsigned_receipt", "receipt from vehicle " + e.vehicle_id + ", which has no pinned key");
        return false;
      }
      auto sig = from_hex<64>(r->signature);
      if (!sig || !ed25519_verify(it->second, core::receipt_signing_bytes(*r), *sig)) {
        count_refusal(r->signature.empty() ? "unsigned_receipt" : "forged_receipt",
                      "receipt from vehicle " + e.vehicle_id + " for job " + r->job_id + " attempt " +
                          std::to_string(r->attempt) + ": the signature does not verify");
        return false;
      }
    }
    return true;
  }

  // A receipt the machine found consistent: stored once; a second copy of
  // it is a replay.
  void on_receipt_accepted(const core::ReceiptAcceptedEffect& e, core::TimeMs now) {
    auto owner = vehicle_owners.find(e.receipt.vehicle_id);
    auto stored = vehicle_store->put_receipt(e.receipt, owner == vehicle_owners.end() ? "" : owner->second, now);
    if (!stored) return log("vehicle store: " + stored.error().to_string());
    if (!*stored) {
      count_refusal("replayed_receipt", "a second receipt for job " + e.receipt.job_id + " attempt " +
                                            std::to_string(e.receipt.attempt) + " from vehicle " +
                                            e.receipt.vehicle_id);
      return;
    }
    count_event("receipt", "receipt accepted");
    if (to_settle.count(e.receipt.job_id) != 0 || verifying.count(e.receipt.job_id) != 0) {
      ++receipts_accepted[e.receipt.job_id];
    }
  }

  // ---- Settlement (loop thread) ---------------------------------------------------
  //
  // A job that finished done settles once every attempt that ended without
  // being lost has sent its receipt (each comes right after the attempt's
  // last message), or kSettleGraceMs after it finished, with the receipts
  // that came: an attempt without a verified receipt earns its owner
  // nothing. The transaction's id is settle:<job>, so a second posting of
  // the same settlement is a no-op (store/ledger_store.h).

  // The client account a job's spend goes to: its API key, or anonymous.
  std::string client_account_of(const std::string& job_id) const {
    std::string key;
    if (auto c = clients.find(job_id); c != clients.end()) key = c->second->key_id;
    if (auto b = batch_jobs.find(job_id); b != batch_jobs.end()) {
      if (auto r = batch_runs.find(b->second.first); r != batch_runs.end()) key = r->second.owner;
    }
    if (auto e = embedding_jobs.find(job_id); e != embedding_jobs.end()) key = e->second.first->key_id;
    if (key.empty()) {
      if (auto r = request_json.find(job_id); r != request_json.end()) key = key_of_request(r->second);
    }
    return client_account_for(key);
  }

  static std::string key_of_request(const std::string& request) {
    const json j = json::parse(request, nullptr, false);
    return j.is_object() && j.contains("key") && j["key"].is_string() ? j["key"].get<std::string>() : std::string();
  }

  // Prepaid balances (config ledger.prepaid): whether work of this kind is
  // checked at all. Only priced work is: with both prices 0 nothing is
  // charged, and an embedding pays prompt tokens only.
  // `model_id` null: work whose model is not known yet (a batch's lines),
  // priced if any model's prices are.
  bool prepaid_applies(bool completion, const std::string* model_id) const {
    if (!config.prepaid) return false;
    auto priced = [completion](const CoordinatorConfig::ModelPrices& p) {
      return p.prompt_micros_per_mtok > 0 || (completion && p.completion_micros_per_mtok > 0);
    };
    if (model_id != nullptr) return priced(config.prices_of(*model_id));
    if (priced({config.prompt_micros_per_mtok, config.completion_micros_per_mtok})) return true;
    return std::any_of(config.model_prices.begin(), config.model_prices.end(),
                       [&](const auto& kv) { return priced(kv.second); });
  }

  // Loop thread: nullopt if the client of API key `key_id` ("" with keys off:
  // client:anonymous) may have new work (completion or embedding), else the
  // answer to send: 429 insufficient_quota when its balance plus credit
  // limit is zero or less, 503 when the ledger cannot be read. The funds of
  // an account are read at most every kPrepaidFundsCacheMs, and again after
  // each of its settlements (settle()).
  std::optional<HttpResponse> prepaid_refusal(const std::string& key_id, bool completion, core::TimeMs now,
                                              const std::string* model_id = nullptr) {
    if (!prepaid_applies(completion, model_id)) return std::nullopt;
    const std::string account = client_account_for(key_id);
    auto it = funds.find(account);
    if (it == funds.end() || now - it->second.read_at >= kPrepaidFundsCacheMs || now < it->second.read_at) {
      auto unreadable = [&](const Error& e) {
        log_limited("ledger_read", "prepaid check of " + account + ": " + e.to_string());
        return error_response(
            api_error(503, "server_error", "the ledger cannot be read now, so no priced work starts; retry shortly"),
            5);
      };
      auto balance = ledger->balance(account);
      if (!balance) return unreadable(balance.error());
      auto limit = ledger->credit_limit(account);
      if (!limit) return unreadable(limit.error());
      if (funds.size() >= kPrepaidFundsCacheEntriesMax) {
        std::erase_if(funds, [now](const auto& kv) { return now - kv.second.read_at >= kPrepaidFundsCacheMs; });
        if (funds.size() >= kPrepaidFundsCacheEntriesMax) funds.clear();
      }
      it = funds.insert_or_assign(account, Funds{*balance, *limit, now}).first;
    }
    const Funds& f = it->second;
    // balance + limit > 0, written so that it cannot overflow (0 <= limit <= kCreditLimitMicrosMax).
    if (f.balance_micros > -f.credit_limit_micros) return std::nullopt;
    const std::string id = account.substr(account.find(':') + 1);
    return error_response(api_error(
        429, "insufficient_quota",
        "You exceeded your current quota: the prepaid balance of " + account + " is spent (balance " +
            format_money_fixed(f.balance_micros) + ", credit limit " + format_money_fixed(f.credit_limit_micros) +
            "). Ask the operator to add funds (idlefleet ledger deposit --client " + id +
            " --amount <amount>), then retry; retrying before that does not help.",
        "insufficient_quota"));
  }

  static std::string client_account_for(const std::string& key) {
    auto account = core::client_account(key.empty() ? core::kAnonymousClientId : std::string_view(key));
    return account ? *account : std::string("client:") + std::string(core::kAnonymousClientId);
  }

  void await_settlement(const std::string& job_id, core::TimeMs now) {
    const core::JobEntry* e = machine->job(job_id);
    if (e == nullptr) return;
    PendingSettlement p;
    p.client_account = client_account_of(job_id);
    p.model_id = e->spec.model_id;
    p.embed = e->spec.kind == core::WorkKind::kEmbed;
    p.prompt_tokens = e->spec.prompt_ids.size();
    p.completion_tokens = e->job.produced().size();
    for (const core::Attempt& a : e->job.attempts()) p.receipts_expected += a.end != core::AttemptEnd::kLost;
    p.ended_at = now;
    to_settle[job_id] = std::move(p);
  }

  // Loop thread: a job's verification ended (core/verification.h). Its batch
  // line is written now, with the agreed output (or as failed when the runs
  // found none). It settles with the attempts at fault unpaid (all of them
  // when no output was agreed); a disputed interactive job, whose client
  // already has the wrong text, and a batch line with no agreed output are
  // refunded in full (the platform bears it: owners keep what honest
  // attempts earned). A job whose verification began before a restart
  // settles unverified (settle_sweep).
  void on_verified(const core::JobVerifiedEffect& v, core::TimeMs now) {
    auto vit = verifying.find(v.job_id);
    if (vit == verifying.end()) return;
    const std::string client_account = vit->second;
    verifying.erase(vit);
    const bool batch = batch_jobs.count(v.job_id) != 0;
    const bool unresolved = v.outcome == core::VerificationOutcome::kUnresolved;
    const bool disputed = unresolved || v.outcome == core::VerificationOutcome::kCorrected;
    count_event(disputed ? "job_disputed" : "job_verified", "job " + v.job_id + " " +
                                                                core::verification_outcome_name(v.outcome) + ": " +
                                                                v.detail);
    if (batch) {
      if (unresolved) {
        on_batch_job(v.job_id, core::JobState::kFailed, "verification: " + v.detail, now);
      } else {
        on_batch_job(v.job_id, core::JobState::kDone, "", now, &v.agreed_ids);
      }
    }
    await_settlement(v.job_id, now);
    auto it = to_settle.find(v.job_id);
    if (it == to_settle.end()) return;
    PendingSettlement& p = it->second;
    p.client_account = client_account;
    p.attempts_unpaid.insert(v.attempts_at_fault.begin(), v.attempts_at_fault.end());
    if (unresolved) {
      if (const core::JobEntry* e = machine->job(v.job_id)) {
        for (const core::Attempt& a : e->job.attempts()) p.attempts_unpaid.insert(a.number);
      }
    } else {
      p.completion_tokens = v.agreed_ids.size();
    }
    p.refund = unresolved || (disputed && !batch);
  }

  // start(): jobs that finished done in the last kSettleSweepWindowMs but
  // have no settlement (the coordinator stopped between a job's end and its
  // settlement) settle now, from the receipts that were stored.
  void settle_sweep() {
    const core::TimeMs now = wall_clock_ms();
    auto done = store->done_since(now - kSettleSweepWindowMs, store::kListRecentJobsMax);
    if (!done) return log("settlement sweep: " + done.error().to_string());
    size_t settled = 0;
    for (const store::StoredJob& j : *done) {
      auto existing = ledger->transactions_for_job(j.id);
      if (!existing) return log("settlement sweep: " + existing.error().to_string());
      if (!existing->empty()) continue;
      PendingSettlement p;
      p.client_account = client_account_for(key_of_request(j.request_json));
      p.model_id = j.model_id;
      p.embed = j.kind == "embedding";
      p.prompt_tokens = j.prompt_ids.size();
      p.completion_tokens = j.produced.size();
      p.ended_at = j.updated_at;
      settled += settle(j.id, p, now);
    }
    if (settled > 0) log("settlement sweep: " + std::to_string(settled) + " finished jobs had no settlement; settled now");
  }

  void settle_due(core::TimeMs now) {
    std::vector<std::string> ready;
    for (const auto& [job, p] : to_settle) {
      auto r = receipts_accepted.find(job);
      const size_t got = r == receipts_accepted.end() ? 0 : r->second;
      if (got >= p.receipts_expected || now - p.ended_at >= kSettleGraceMs) ready.push_back(job);
    }
    for (const std::string& job : ready) {
      settle(job, to_settle[job], now);
      to_settle.erase(job);
      receipts_accepted.erase(job);
    }
  }

  // Returns true if a settlement was posted now.
  bool settle(const std::string& job_id, const PendingSettlement& p, core::TimeMs now) {
    auto receipts = vehicle_store->receipts_for_job(job_id);
    if (!receipts) {
      log("settlement of " + job_id + ": " + receipts.error().to_string());
      return false;
    }
    core::SettlementInput in;
    in.job_id = job_id;
    in.client_account = p.client_account;
    in.model_id = p.model_id;
    in.prompt_tokens = p.prompt_tokens;
    in.completion_tokens = p.completion_tokens;
    const CoordinatorConfig::ModelPrices prices = config.prices_of(p.model_id);
    in.input_price_micros_per_million_tokens = prices.prompt_micros_per_mtok;
    in.output_price_micros_per_million_tokens = prices.completion_micros_per_mtok;
    in.owner_share_ppm = config.owner_share_ppm;
    in.wear_micros_per_accelerator_hour = config.wear_micros_per_accelerator_hour;
    in.split_by = p.embed ? core::ShareSplit::kAcceleratorMs : core::ShareSplit::kOutputTokens;
    in.settled_at_ms = p.ended_at;
    for (const store::StoredReceipt& sr : *receipts) {
      const core::ReceiptMessage& r = sr.receipt;
      if (p.attempts_unpaid.count(r.attempt) != 0) continue;  // its vehicle's output was wrong
      core::SettlementAttempt a;
      a.receipt_id = core::receipt_id(r.job_id, r.attempt);
      // Until vehicles are enrolled to owners, a vehicle is its own owner.
      a.owner_id = sr.owner_id.empty() ? r.vehicle_id : sr.owner_id;
      a.vehicle_id = r.vehicle_id;
      a.output_tokens = r.output_tokens;
      a.energy_mwh = r.energy_mwh;
      // Wear is paid by weighted accelerator time (1 weighted micro-hour
      // is 3.6 ms): a hot chip ages faster, so its hours count more.
      a.accelerator_ms = r.wear_micro_hours * 36 / 10;
      a.tariff_micros_per_kwh = owner_tariff_micros_per_kwh(r);
      in.attempts.push_back(std::move(a));
    }
    // Work too short to meter on a free job owes nobody anything.
    const bool metered = std::any_of(in.attempts.begin(), in.attempts.end(), [](const core::SettlementAttempt& a) {
      return a.energy_mwh > 0 || a.accelerator_ms > 0;
    });
    Result<core::Transaction> tx = in.attempts.empty() || !metered ? charge_only(in) : core::settle_job(in);
    if (!tx) {
      // Nothing to post: a free job with no verified work.
      if (tx.error().code != ErrorCode::kNotFound) log("settlement of " + job_id + ": " + tx.error().to_string());
      return false;
    }
    auto posted = ledger->post(*tx);
    if (!posted) {
      log("settlement of " + job_id + ": " + posted.error().to_string());
      return false;
    }
    count_event("settled", "job " + job_id + " settled");
    funds.erase(p.client_account);  // its balance moved: read it again at its next request
    if (p.refund && *posted) {
      // The whole price back to the client; owners keep what they earned.
      auto refund = core::build_refund(*tx, p.ended_at);
      if (!refund) {
        log("refund of " + job_id + ": " + refund.error().to_string());
      } else if (auto done = ledger->post(*refund); !done) {
        log("refund of " + job_id + ": " + done.error().to_string());
      } else {
        count_event("refunded", "job " + job_id + " refunded after verification");
      }
    }
    (void)now;
    return *posted;
  }

  // A model's prices as the key gate counts spend.
  Prices prices_of(const std::string& model_id) const {
    const CoordinatorConfig::ModelPrices p = config.prices_of(model_id);
    return Prices{p.prompt_micros_per_mtok, p.completion_micros_per_mtok};
  }

  // The price per kWh an attempt's energy is refunded at: the tariff its
  // owner entered in the vehicle's policy (owner API), time-weighted over the
  // attempt in the owner's local time (the vehicle's hello says its zone),
  // else [ledger] energy_tariff_micros_per_kwh. A negative price (a dynamic
  // tariff paying for consumption) refunds nothing.
  int64_t owner_tariff_micros_per_kwh(const core::ReceiptMessage& r) {
    const auto fallback = static_cast<int64_t>(config.energy_tariff_micros_per_kwh);
    auto stored = vehicle_store->policy(r.vehicle_id);
    if (!stored || !*stored) return fallback;
    const core::Tariff& t = (*stored)->policy.tariff;
    if (t.kind == core::Tariff::Kind::kFlat && t.flat_micros_per_kwh == 0) return fallback;  // never entered
    int offset = 0;
    const auto& vehicles = machine->vehicles();
    if (auto v = vehicles.find(r.vehicle_id); v != vehicles.end()) offset = v->second.hello.utc_offset_minutes;
    auto span = core::tariff_for_span(t, r.started_at, r.ended_at, offset, r.energy_mwh);
    if (!span) {
      log("settlement: the tariff of vehicle " + r.vehicle_id + " cannot price its attempt (" +
          span.error().message + "); the default tariff is used");
      return fallback;
    }
    return std::max<int64_t>(0, span->micros_per_kwh);
  }

  // A settlement without owner postings (no attempt has a verified
  // receipt): the client pays the platform. kNotFound when the price is 0.
  static Result<core::Transaction> charge_only(const core::SettlementInput& in) {
    auto price = core::job_price_micros(in.prompt_tokens, in.completion_tokens,
                                        in.input_price_micros_per_million_tokens,
                                        in.output_price_micros_per_million_tokens);
    if (!price) return Unexpected(price.error());
    if (*price == 0) return Unexpected(ErrorCode::kNotFound, "nothing to settle");
    core::Transaction tx;
    tx.id = "settle:" + in.job_id;
    tx.kind = std::string(core::kTransactionSettlement);
    tx.job_id = in.job_id;
    tx.created_at_ms = in.settled_at_ms;
    tx.postings.push_back({in.client_account, -*price, std::string(core::kPostingCharge), ""});
    tx.postings.push_back({std::string(core::kPlatformRevenueAccount), *price, std::string(core::kPostingCharge), ""});
    IF_RETURN_IF_ERROR(core::validate(tx));
    return tx;
  }

  // ---- Keys and idempotency (loop thread) -------------------------------------------

  // A request with an Idempotency-Key, before it runs. Returns true to run
  // it; false when it was answered: the stored response of the same request,
  // or 409 for a key in use by a running request or by a different request.
  // Stored responses older than kIdempotencyWindowMs do not count. When the
  // store cannot be read the request runs untracked (slot.key cleared).
  bool begin_idempotent(IdemSlot& slot, const std::shared_ptr<HttpExchange>& x, core::TimeMs now) {
    auto conflict = [&](const std::string& message) {
      ApiError e = api_error(409, "invalid_request_error", message, "idempotency_key_conflict");
      x->respond(error_response(e));
      return false;
    };
    if (idem_in_flight.count(slot.name()) != 0) {
      return conflict("A request with this Idempotency-Key is still in progress; retry when it has finished");
    }
    auto stored = key_store->get_response(slot.scope, slot.key);
    if (!stored) {
      log("key store: " + stored.error().to_string() + "; the request runs without its Idempotency-Key");
      slot.key.clear();
      return true;
    }
    if (stored->has_value() && (*stored)->created_at >= now - kIdempotencyWindowMs) {
      if ((*stored)->request_sha256 != slot.request_sha256) {
        return conflict("This Idempotency-Key was already used with a different request");
      }
      HttpResponse resp = json_response((*stored)->status, std::move((*stored)->body));
      resp.headers.push_back({"Idempotent-Replayed", "true"});
      x->respond(std::move(resp));
      count_event("idempotent_replay", "replayed the response for an Idempotency-Key");
      return false;
    }
    idem_in_flight[slot.name()] = slot.request_sha256;
    return true;
  }

  // The request ended: a 200 body (nullptr for anything else) is stored
  // for replays; failures are not, so that a retry runs again.
  void end_idempotent(const IdemSlot& slot, const std::string* body) {
    if (slot.key.empty()) return;
    idem_in_flight.erase(slot.name());
    if (body == nullptr) return;
    if (body->size() > store::kIdempotencyResponseBytesMax) return;  // too large to keep: a retry runs again
    store::StoredResponse r;
    r.request_sha256 = slot.request_sha256;
    r.status = 200;
    r.body = *body;
    r.created_at = wall_clock_ms();
    if (auto st = key_store->put_response(slot.scope, slot.key, r); !st) log("key store: " + st.error().to_string());
  }

  // The slot of a request's Idempotency-Key: the request is its method,
  // path and body, so that one key used on two routes is a conflict.
  static IdemSlot idem_slot(const HttpRequest& r, const std::string& key, const std::string& key_id) {
    IdemSlot slot;
    slot.scope = key_id.empty() ? "client:" + peer_address(r.remote) : key_id;
    slot.key = key;
    const store::Sha256 body = store::sha256(r.body);
    slot.request_sha256 = store::sha256(std::string(r.method)
                                            .append(" ")
                                            .append(r.path)
                                            .append("\n")
                                            .append(reinterpret_cast<const char*>(body.data()), body.size()));
    return slot;
  }

  // A POST other than a completion with an Idempotency-Key (embeddings,
  // files, batches, a batch's cancel): the loop thread checks the key, then
  // the request runs on the files thread (dispatch()) with an exchange that
  // hands a 200 reply back to the loop thread to be stored.
  void run_idempotent(const HttpRequest& r, const std::shared_ptr<HttpExchange>& x, const std::string& key_id,
                      const std::string& idem) {
    auto request = std::make_shared<const HttpRequest>(r);
    Item item;
    item.task = [this, request, x, key_id, slot = idem_slot(r, idem, key_id)](core::TimeMs now) mutable {
      if (!begin_idempotent(slot, x, now)) return;
      auto tapped = std::make_shared<ReplyTap>(x, [this, slot](const HttpResponse* reply) {
        Item done;
        done.task = [this, slot, body = reply == nullptr ? std::optional<std::string>() : reply->body](core::TimeMs) {
          end_idempotent(slot, body ? &*body : nullptr);
        };
        post(std::move(done), /*always=*/true);
      });
      on_files([this, request, tapped, key_id](store::FileStore&) { dispatch(*request, tapped, key_id); });
    };
    if (!post(std::move(item))) {
      x->respond(error_response(api_error(503, "server_error", "the coordinator is overloaded; retry shortly"), 1));
    }
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

  // Writes the jobs that changed. Rows whose write failed (a database
  // that went away) are kept and written again with the next flush, newer
  // rows replacing older ones of the same job.
  void flush_dirty(core::TimeMs now) {
    if ((dirty.empty() && unwritten.empty()) || machine == nullptr || store == nullptr) return;
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
    if (!unwritten.empty()) {
      for (store::StoredJob& row : rows) unwritten[row.id] = std::move(row);
      rows.clear();
      for (auto& [id, row] : unwritten) rows.push_back(std::move(row));
      unwritten.clear();
    }
    if (auto st = store->put(rows); !st) {
      log_limited("job_store", "store: " + st.error().to_string() + " (" + std::to_string(rows.size()) +
                                   " jobs kept for the next write)");
      for (store::StoredJob& row : rows) unwritten[row.id] = std::move(row);
    }
  }

  void publish_status(core::TimeMs now) {
    const core::CoordinatorCounters& k = machine->counters();
    std::map<std::string, int> by_state;
    for (const char* s : {"driving", "parked", "charging", "eligible", "serving", "preempting", "offline"}) by_state[s] = 0;
    double kw = 0.0;
    size_t online = 0, workable = 0;
    for (const auto& [id, v] : machine->vehicles()) {
      if (!v.online || !v.state) {
        ++by_state["offline"];
        continue;
      }
      ++online;
      if (v.state->eligible || v.state->state == "serving") ++workable;
      by_state[v.state->state]++;
      kw += v.state->power_w / 1000.0;
    }
    workable_vehicles.store(workable);
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
        {"verification", {{"verifying", machine->jobs_verifying()}, {"checks_started", k.checks_started},
                          {"agreed", k.checks_agreed}, {"disputed", k.checks_disputed},
                          {"unverified", k.checks_unverified}, {"quarantines", k.quarantines}}},
        {"tokens", {{"relayed", k.tokens_relayed}, {"per_second", tokens_per_second}}},
        {"kw_in_use", kw},
        {"preemptions", k.preemptions},
        {"attempts_lost", k.attempts_lost},
        {"messages", {{"accepted", k.messages_accepted}, {"rejected", k.messages_rejected}}}};
    {
      std::lock_guard<std::mutex> lock(snapshot_mu);
      status = doc.dump();
    }
    for (const auto& [s, n] : by_state) {
      metrics.gauge("idlefleet_vehicles", "Vehicles by state", {{"state", s}}).set(n);
    }
    publish_dashboard(now);
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
  // At most a tick old, as GET /v1/status; the last one if the loop does not
  // answer within kStatusWaitMs (overloaded, or stopped).
  auto done = std::make_shared<std::promise<void>>();
  std::future<void> answered = done->get_future();
  if (impl_->with_fresh_status([done] { done->set_value(); })) {
    answered.wait_for(std::chrono::milliseconds(kStatusWaitMs));
  }
  std::lock_guard<std::mutex> lock(impl_->snapshot_mu);
  return impl_->status;
}

}  // namespace idlefleet::coordinator
