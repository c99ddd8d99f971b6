#include "agent/fleet.h"

#include <pthread.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <cmath>
#include <cstdio>
#include <functional>
#include <limits>
#include <optional>

#include <nlohmann/json.hpp>

#include "agent/policy_file.h"
#include "common/identity.h"
#include "common/nkey.h"
#include "common/check.h"
#include "common/crypto.h"
#include "common/log_limiter.h"
#include "common/wall_clock.h"
#include "engine/kernels.h"
#include "engine/session.h"
#include "engine/thread_pool.h"
#include "transport/random_id.h"

namespace idlefleet::agent {

namespace {

// The engine's version in HelloMessage::engine_build: raise it with any
// change that can change a token (kernels, sampler, tokenizer, model code).
constexpr const char* kEngineVersion = "idlefleet-0.1.0";

int64_t steady_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}


engine::SamplerParams to_sampler(const core::Sampling& s) {
  engine::SamplerParams p;
  p.temperature = static_cast<float>(s.temperature);
  p.top_k = s.top_k;
  p.top_p = static_cast<float>(s.top_p);
  p.min_p = static_cast<float>(s.min_p);
  p.repeat_penalty = static_cast<float>(s.repeat_penalty);
  p.repeat_last_n = s.repeat_last_n;
  p.presence_penalty = static_cast<float>(s.presence_penalty);
  p.frequency_penalty = static_cast<float>(s.frequency_penalty);
  p.seed = s.seed;
  return p;
}

static_assert(engine::kTopLogprobsMax == core::kTopLogprobsMax);

// An engine logprob as the protocol carries it: -inf (and anything below)
// as kLogprobMin, since JSON has no infinity.
float wire_logprob(float x) { return x >= core::kLogprobMin ? x : core::kLogprobMin; }

core::TokenLogprobs to_wire(const engine::TokenLogprobs& t) {
  core::TokenLogprobs w;
  w.logprob = wire_logprob(t.chosen.logprob);
  w.top.reserve(t.top.size());
  for (const engine::TokenLogprob& c : t.top) w.top.push_back({c.id, wire_logprob(c.logprob)});
  return w;
}

// A connection that fails while the agent sets it up: libnats reports the
// closed connection, not the server's reason, and the usual reason is a
// server with per-vehicle permissions that has no user for this key.
template <class V>
Unexpected nats_setup_error(const V& v, const Error& e) {
  return Unexpected(e.code, "vehicle " + v.id + " (NATS user " + nkey_user_public(v.key.public_key) + "): " +
                                e.message +
                                ". If the server has per-vehicle permissions, it has no user for this key: enrol the "
                                "vehicle (idlefleet agent enroll) and reload nats-server's authorisation");
}

}  // namespace

Status FleetOptions::validate() const {
  auto bad = [](std::string what) -> Status { return Unexpected(ErrorCode::kInvalidArgument, std::move(what)); };
  if (vehicles < 1 || vehicles > kFleetVehiclesMax) {
    return bad("vehicles must be 1 to " + std::to_string(kFleetVehiclesMax));
  }
  if (!core::valid_vehicle_id(id_prefix) || id_prefix.size() > 64) {
    return bad("vehicle id prefix must be 1 to 64 of [A-Za-z0-9_-]");
  }
  if (source == SignalSourceKind::kReplay && replay_path.empty()) return bad("a replay source needs a file");
  if (source != SignalSourceKind::kSimulated && vehicles != 1) {
    return bad("replay and NATS signal sources feed one vehicle: use --vehicles 1");
  }
  if (!(time_scale >= 1.0 && time_scale <= 100000.0)) return bad("time scale must be 1 to 100000");
  if (!(plug_in_probability >= 0.0 && plug_in_probability <= 1.0)) return bad("plug-in probability must be 0 to 1");
  if (tick_ms < 1 || tick_ms > 1000) return bad("tick must be 1 to 1000 ms");
  if (chunk_us < 0 || chunk_us > kChunkUsMax) {
    return bad("the token chunk interval must be 0 to " + std::to_string(kChunkUsMax) + " us");
  }
  if (heartbeat_ms < 100 || heartbeat_ms > 60000) return bad("heartbeat must be 100 to 60000 ms");
  if (nats_connections < 0 || nats_connections > std::min(vehicles, kFleetConnectionsMax)) {
    return bad("NATS connections must be 0 (one per vehicle) to " + std::to_string(std::min(vehicles, kFleetConnectionsMax)));
  }
  if (!(fake_tokens_per_second > 0.0 && fake_tokens_per_second <= kPacedTokensPerSecondMax)) {
    return bad("fake tokens per second must be above 0 and at most " + std::to_string(kPacedTokensPerSecondMax));
  }
  if (fake_engine && test_tamper_outputs) return bad("the fake engine and tampered outputs do not go together");
  if (cache_bytes_max == 0) return bad("the model cache needs some room");
  if (auto st = policy.validate(); !st) return bad("owner policy: " + st.error().message);
  if (!sim_cars.empty()) {
    if (source != SignalSourceKind::kSimulated) return bad("simulated cars need the simulated signal source");
    if (sim_cars.size() != static_cast<size_t>(vehicles)) {
      return bad("simulated cars: " + std::to_string(sim_cars.size()) + " given for " + std::to_string(vehicles) +
                 " vehicles");
    }
    for (size_t i = 0; i < sim_cars.size(); ++i) {
      const FleetSimCar& c = sim_cars[i];
      const std::string which = "simulated car " + std::to_string(i + 1) + ": ";
      if (auto st = c.car.validate(); !st) return bad(which + st.error().message);
      if (c.car.utc_offset_minutes != utc_offset_minutes) return bad(which + "its time zone differs from the fleet's");
      if (auto st = c.policy.validate(); !st) return bad(which + "owner policy: " + st.error().message);
      if (!(c.paced_tokens_per_second >= 0.0 && c.paced_tokens_per_second <= kPacedTokensPerSecondMax)) {
        return bad(which + "paced tokens per second must be 0 to " + std::to_string(kPacedTokensPerSecondMax));
      }
      if (!(c.prefill_speedup >= 1.0 && c.prefill_speedup <= kPrefillSpeedupMax)) {
        return bad(which + "prefill speedup must be 1 to " + std::to_string(kPrefillSpeedupMax));
      }
    }
  }
  return {};
}

// Pacing (FleetSimCar) sleeps at most this long between checks of the stop flag.
constexpr int64_t kPacedSleepNsMax = 2'000'000;

// An attempt's tokens on their way to the loop thread. Tokens wait here for
// at most about chunk_us (see FleetOptions), so that a small model's hundreds
// of tokens a second travel as a few dozen messages; flush() before the
// attempt's last event sends whatever waits.
class TokenRelay {
 public:
  TokenRelay(std::function<void(core::AgentEvent)> post, const core::AssignMessage& a, int64_t chunk_ns,
             size_t chunk_tokens_max)
      : post_(std::move(post)), held_{a.job_id, a.attempt, a.produced_ids.size(), {}}, chunk_ns_(chunk_ns),
        chunk_tokens_max_(chunk_tokens_max) {}

  void add(int32_t id, std::optional<core::TokenLogprobs> logprobs) {
    held_.ids.push_back(id);
    if (logprobs) held_.logprobs.push_back(std::move(*logprobs));
    if (steady_ns() - last_sent_ns_ >= chunk_ns_ || held_.ids.size() >= chunk_tokens_max_) flush();
  }

  void flush() {
    if (held_.ids.empty()) return;
    const uint64_t next_index = held_.first_index + held_.ids.size();
    post_(held_);
    held_.ids.clear();
    held_.logprobs.clear();
    held_.first_index = next_index;
    last_sent_ns_ = steady_ns();
  }

 private:
  std::function<void(core::AgentEvent)> post_;
  core::EngineTokensEvent held_;
  int64_t chunk_ns_;
  size_t chunk_tokens_max_;
  int64_t last_sent_ns_ = std::numeric_limits<int64_t>::min() / 2;
};

// Paced tokens (FleetSimCar, the fake engine): the attempt's k-th new token
// is not made before (prefill + k / tokens per second) simulated seconds
// after it began; the wait is cut into short sleeps so that a stop still
// takes about a token.
class Pacer {
 public:
  // tokens_per_second 0: no pacing. `context` tokens (prompt and any resumed)
  // take context x token time / prefill_speedup before the first new one.
  Pacer(double tokens_per_second, double time_scale, double prefill_speedup, size_t context)
      : token_ns_(tokens_per_second > 0.0 ? 1e9 / (tokens_per_second * time_scale) : 0.0),
        prefill_ns_(static_cast<double>(context) * token_ns_ / prefill_speedup), origin_ns_(steady_ns()) {}

  // Waits until the next token is due, or `stop` is set.
  void wait(const std::atomic<bool>& stop) {
    if (token_ns_ <= 0.0) return;
    const int64_t due_ns = origin_ns_ + static_cast<int64_t>(prefill_ns_ + static_cast<double>(made_ + 1) * token_ns_);
    for (int64_t now_ns = steady_ns(); now_ns < due_ns && !stop.load(std::memory_order_acquire); now_ns = steady_ns()) {
      std::this_thread::sleep_for(std::chrono::nanoseconds(std::min<int64_t>(due_ns - now_ns, kPacedSleepNsMax)));
    }
    ++made_;
  }

 private:
  double token_ns_;
  double prefill_ns_;
  int64_t origin_ns_;
  uint64_t made_ = 0;
};

// The fake engine's token at `position` of `job_id`: the same in every run
// and on every vehicle, so that a resumed attempt continues the same text.
// Ids 259..511: merged pieces in any llama vocabulary of 512 or more (3..258
// are the byte tokens, which would make the text invalid UTF-8).
int32_t fake_token(std::string_view job_id, uint64_t position) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (char c : job_id) h = (h ^ static_cast<unsigned char>(c)) * 0x100000001b3ull;
  h ^= position * 0x9e3779b97f4a7c15ull;
  h ^= h >> 29;
  h *= 0xbf58476d1ce4e5b9ull;
  h ^= h >> 32;
  return 259 + static_cast<int32_t>(h % 253);
}

struct Fleet::Vehicle {
  std::string id;
  std::unique_ptr<core::AgentMachine> machine;
  std::unique_ptr<SimVehicle> sim;
  std::unique_ptr<ReplaySource> replay;
  core::VehicleSignals signals;
  transport::NatsClient* nats = nullptr;  // one of Fleet::connections_
  std::thread engine;
  std::shared_ptr<std::atomic<bool>> stop;
  std::atomic<int64_t> stop_origin_ns{0};  // when the event that stopped the engine reached us
  // The engine's state, kept between attempts (used only by the one engine
  // thread a vehicle has at a time): making a context allocates and faults in
  // its whole KV cache, tens of ms on a real model, which would otherwise
  // delay every attempt's first token.
  std::shared_ptr<const engine::Model> engine_model;
  std::unique_ptr<engine::ThreadPool> engine_pool;
  std::unique_ptr<engine::Context> engine_ctx;
  Ed25519Keypair key;          // signs the vehicle's receipts (common/identity.h)
  double paced_tokens_per_second = 0.0;  // FleetSimCar
  double prefill_speedup = 1.0;
  std::string policy_path;     // the owner's policy from the coordinator (agent/policy_file.h)
  std::string policy_saved;    // what that file holds (encode_policy), "" if none: loop thread
  VehicleStatus status;        // guarded by Fleet::mu_
};

Fleet::Fleet(FleetOptions options)
    : options_(std::move(options)),
      prior_(core::DeparturePrior::builtin()),
      cache_(options_.cache_dir, options_.cache_bytes_max) {}

Fleet::~Fleet() { stop(); }

Result<std::unique_ptr<Fleet>> Fleet::start(FleetOptions options) {
  IF_RETURN_IF_ERROR(options.validate());
  std::unique_ptr<Fleet> fleet(new Fleet(std::move(options)));
  IF_RETURN_IF_ERROR(fleet->init());
  return fleet;
}

core::TimeMs Fleet::sim_now() const {
  const double elapsed_ms = static_cast<double>(steady_ns() - steady_start_ns_) / 1e6;
  return sim_start_ + static_cast<core::TimeMs>(elapsed_ms * options_.time_scale);
}

core::TimeMs Fleet::to_wall(core::TimeMs sim) const {
  return wall_start_ + static_cast<core::TimeMs>(static_cast<double>(sim - sim_start_) / options_.time_scale);
}

Result<CatalogEntry> Fleet::catalog_entry(const std::string& model_id) {
  std::lock_guard<std::mutex> lock(catalog_mu_);
  for (int pass = 0; pass < 2; ++pass) {
    for (const CatalogEntry& e : catalog_) {
      if (e.id == model_id) return e;
    }
    if (pass == 0) {  // a model we have not heard of: the catalog may have grown
      auto fresh = fetch_catalog(options_.coordinator_url);
      if (!fresh) return Unexpected(fresh.error());
      catalog_ = std::move(*fresh);
    }
  }
  return Unexpected(ErrorCode::kNotFound, "model '" + model_id + "' is not in the coordinator's catalog");
}

std::vector<std::string> Fleet::cached_model_ids() {
  const std::vector<std::string> digests = cache_.cached();
  std::vector<std::string> ids;
  std::lock_guard<std::mutex> lock(catalog_mu_);
  for (const CatalogEntry& e : catalog_) {
    if (std::binary_search(digests.begin(), digests.end(), e.sha256)) ids.push_back(e.id);
  }
  return ids;
}

Status Fleet::init() {
  steady_start_ns_ = steady_ns();
  wall_start_ = wall_clock_ms();
  sim_start_ = options_.sim_start != 0 ? options_.sim_start : wall_start_;
  if (options_.instance.empty()) options_.instance = transport::random_hex(8);
  {
    // Not fatal: the coordinator may start after us; asked again on demand.
    auto catalog = fetch_catalog(options_.coordinator_url);
    if (catalog) catalog_ = std::move(*catalog);
  }
  const std::vector<std::string> cached = cached_model_ids();
  std::vector<ReplayEvent> replay_events;
  if (options_.source == SignalSourceKind::kReplay) {
    auto events = load_replay(options_.replay_path);
    if (!events) return Unexpected(events.error());
    replay_events = std::move(*events);
    // The replay's clock: its first event happens at the start.
    if (!replay_events.empty() && options_.sim_start == 0) sim_start_ = replay_events.front().t;
  }
  const int width = options_.vehicles >= 1000 ? 5 : (options_.vehicles >= 100 ? 3 : 2);
  const auto vehicles_total = static_cast<size_t>(options_.vehicles);
  for (int i = 0; i < options_.vehicles; ++i) {
    auto v = std::make_unique<Vehicle>();
    char suffix[16];
    std::snprintf(suffix, sizeof suffix, "%0*d", width, i + 1);
    v->id = options_.id_prefix + "-" + suffix;

    const std::string key_dir =
        options_.key_dir.empty() ? (std::filesystem::path(options_.cache_dir) / "keys").string() : options_.key_dir;
    if (options_.fake_engine) {
      // A load generator's vehicles: keys from the seed, never on disk.
      const Sha256Digest d = sha256_of("idlefleet-load-key:" + std::to_string(options_.seed) + ":" + v->id);
      Ed25519SecretKey secret{};
      std::copy(d.begin(), d.end(), secret.begin());
      v->key = Ed25519Keypair::from_secret(secret);
    } else {
      auto key = load_or_create_key((std::filesystem::path(key_dir) / (v->id + ".key")).string());
      if (!key) return Unexpected(key.error());
      v->key = *key;
    }

    core::AgentConfig c;
    c.vehicle_id = v->id;
    c.public_key = to_hex(v->key.public_key);
    // What makes outputs bit-for-bit comparable: the engine's version and
    // the kernel set this CPU runs (verification re-runs only on the same).
    c.engine_build = std::string(kEngineVersion) + "+" + engine::best_kernels().name;
    c.instance = options_.instance + "-" + std::to_string(i);
    // The owner's policy, as the coordinator last sent it, wins over the
    // flags: it is what the owner set last (docs/operations.md).
    v->policy_path = policy_file_path(key_dir, v->id);
    auto stored = load_policy_file(v->policy_path);
    if (!stored) return Unexpected(stored.error().code, "vehicle " + v->id + ": " + stored.error().message);
    c.policy = stored->value_or(options_.sim_cars.empty() ? options_.policy : options_.sim_cars[i].policy);
    if (*stored) v->policy_saved = core::encode_policy(**stored);
    c.utc_offset_minutes = options_.utc_offset_minutes;
    c.models_cached = cached;
    if (options_.fake_engine) {
      std::lock_guard<std::mutex> lock(catalog_mu_);
      c.models_cached.clear();
      for (const CatalogEntry& e : catalog_) c.models_cached.push_back(e.id);
    }
    c.embeddings = !options_.fake_engine;  // engine_main runs kind "embed"; the fake engine does not
    const double scale = options_.time_scale;
    c.heartbeat_ms = static_cast<core::DurationMs>(static_cast<double>(options_.heartbeat_ms) * scale);
    c.hello_ms = static_cast<core::DurationMs>(10000.0 * scale);
    // A live feed is fresh if heard within 50 ticks (simulated time), at least
    // the policy's default and never beyond its limit.
    c.signal_age_ms_max = std::clamp<core::DurationMs>(
        static_cast<core::DurationMs>(50.0 * static_cast<double>(options_.tick_ms) * scale),
        core::kSignalAgeMsMaxDefault, core::kSignalAgeMsMaxLimit);
    c.prior = &prior_;
    if (options_.source == SignalSourceKind::kSimulated) {
      SimVehicleParams p;
      if (options_.sim_cars.empty()) {
        p.seed = options_.seed * 1000003u + static_cast<uint64_t>(i);
        p.utc_offset_minutes = options_.utc_offset_minutes;
        p.plug_in_probability = options_.plug_in_probability;
      } else {
        p = options_.sim_cars[i].car;
        v->paced_tokens_per_second = options_.sim_cars[i].paced_tokens_per_second;
        v->prefill_speedup = options_.sim_cars[i].prefill_speedup;
      }
      if (options_.fake_engine) {
        v->paced_tokens_per_second = options_.fake_tokens_per_second;
        v->prefill_speedup = 50.0;
      }
      IF_RETURN_IF_ERROR(p.validate());
      v->sim = std::make_unique<SimVehicle>(p, sim_start_);
      c.battery_capacity_kwh = p.battery.capacity_kwh;
      c.charge_power_kw = p.charger_power_kw * p.battery.charge_efficiency;
      c.inference_power_kw = p.accelerator.max_w / 1000.0;
      if (c.policy.departures_minute_of_week.empty() && options_.sim_cars.empty()) {
        c.policy.departures_minute_of_week = v->sim->declared_departures_minute_of_week();
      }
    } else if (options_.source == SignalSourceKind::kReplay) {
      v->replay = std::make_unique<ReplaySource>(replay_events);
    }
    if (auto st = c.policy.validate(); !st) return Unexpected(st.error());
    v->machine = std::make_unique<core::AgentMachine>(std::move(c));
    v->status.id = v->id;

    const size_t index = vehicles_.size();
    const bool shared = options_.nats_connections > 0;
    if (!shared || connections_.size() < static_cast<size_t>(options_.nats_connections)) {
      transport::NatsOptions n;
      n.url = options_.nats_url;
      n.name = shared ? "idlefleet-agent " + options_.id_prefix + " shared " + std::to_string(connections_.size() + 1)
                      : "idlefleet-agent " + v->id;
      // A vehicle's identity is also its NATS user (common/nkey.h): a server
      // with per-vehicle permissions knows it by this key; one without
      // authorisation ignores it. A shared connection is nobody's.
      if (!shared) n.nkey_identity = v->key;
      // Thousands of subscriptions on one connection: no thread each.
      n.global_message_delivery = shared;
      auto client = transport::NatsClient::connect(n);
      if (!client) return Unexpected(client.error().code, "vehicle " + v->id + ": " + client.error().message);
      // Vehicle i rides connection i mod N (N = the connections, or the
      // vehicles when each has its own): all of them hear of a reconnect.
      const size_t conn = connections_.size();
      const size_t stride = shared ? static_cast<size_t>(options_.nats_connections) : vehicles_total;
      connections_.push_back(std::move(*client));
      connections_.back()->set_connection_callbacks(nullptr, [this, conn, stride, vehicles_total] {
        for (size_t rider = conn; rider < vehicles_total; rider += stride) {
          InboxItem item;
          item.index = rider;
          item.event = core::ConnectedEvent{};
          post(std::move(item));
        }
      });
    }
    v->nats = connections_[index % connections_.size()].get();
    {
      // Queued before anything the coordinator may send once we subscribe:
      // a new instance says hello before it acts on any message (an
      // assignment meant for the instance before it, say). The loop starts,
      // and the hello goes out, only once every subscription is in place.
      InboxItem item;
      item.index = index;
      item.event = core::ConnectedEvent{};
      post(std::move(item));
    }
    auto sub = v->nats->subscribe(core::down_subject(v->id), [this, index](std::string_view, std::string_view data) {
      auto m = core::decode_message(data);
      if (!m) return refuse("malformed_message", m.error().to_string());
      InboxItem item;
      item.index = index;
      item.event = core::CoordinatorMessageEvent{std::move(*m)};
      post(std::move(item));
    });
    if (!sub) return nats_setup_error(*v, sub.error());
    if (options_.source == SignalSourceKind::kNats) {
      auto s = v->nats->subscribe(core::vss_subject(v->id),
                                  [this, index](std::string_view, std::string_view data) { on_vss(index, data); });
      if (!s) return nats_setup_error(*v, s.error());
    }
    if (options_.sim_control && v->sim) {
      auto s = v->nats->subscribe(core::sim_subject(v->id),
                                  [this, index](std::string_view, std::string_view data) { on_sim(index, data); });
      if (!s) return nats_setup_error(*v, s.error());
    }
    vehicles_.push_back(std::move(v));
  }
  for (size_t c = 0; c < connections_.size(); ++c) {
    if (auto st = connections_[c]->flush(); !st) return nats_setup_error(*vehicles_[c], st.error());
  }
  loop_thread_ = std::thread([this] { loop(); });
  return {};
}

void Fleet::stop() {
  if (stopping_.exchange(true)) return;
  cv_.notify_all();
  if (loop_thread_.joinable()) loop_thread_.join();
  for (auto& v : vehicles_) {
    if (v->stop) v->stop->store(true);
  }
  for (auto& v : vehicles_) {
    if (v->engine.joinable()) v->engine.join();
  }
  for (auto& v : vehicles_) v->nats = nullptr;
  connections_.clear();
}

void Fleet::post_event_of(size_t index, core::AgentEvent event) {
  InboxItem item;
  item.index = index;
  item.event = std::move(event);
  post(std::move(item));
}

void Fleet::post(InboxItem item) {
  item.received_ns = steady_ns();
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (inbox_.size() >= kInboxEventsMax) return;  // only under a flood; the heartbeat repairs what is lost
    inbox_.push_back(std::move(item));
  }
  cv_.notify_one();
}

void Fleet::refuse(const char* what, const std::string& text) {
  refused_messages_.fetch_add(1);
  uint64_t dropped = 0;
  bool log_it;
  {
    std::lock_guard<std::mutex> lock(mu_);
    log_it = nats_log_limiter_.allow(what, steady_ns() / 1'000'000, &dropped);
  }
  if (log_it) {
    std::fprintf(stderr, "agent: refused (%s): %s%s\n", what, text.c_str(),
                 dropped > 0 ? (" (and " + std::to_string(dropped) + " more not logged)").c_str() : "");
  }
}

void Fleet::on_vss(size_t index, std::string_view data) {
  if (data.size() > kVssMessageBytesMax) return refuse("bad_vss", "a VSS message over " + std::to_string(kVssMessageBytesMax) + " bytes");
  const nlohmann::json j = nlohmann::json::parse(data, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return refuse("bad_vss", "a VSS message that is not a JSON object");
  auto one = [&](const nlohmann::json& u) {
    if (!u.is_object() || !u.contains("path") || !u["path"].is_string() || !u.contains("value")) {
      return refuse("bad_vss", "a VSS update without a string 'path' and a 'value'");
    }
    const auto& value = u["value"];
    std::string text;
    if (value.is_string()) text = value.get<std::string>();
    else if (value.is_boolean()) text = value.get<bool>() ? "true" : "false";
    else if (value.is_number()) text = value.dump();
    else return refuse("bad_vss", "a VSS value that is not a string, number or boolean");
    InboxItem item;
    item.index = index;
    item.kind = InboxItem::Kind::kSignal;
    item.path = u["path"].get<std::string>();
    item.value = std::move(text);
    post(std::move(item));
  };
  if (j.contains("updates") && j["updates"].is_array()) {
    size_t n = 0;
    for (const auto& u : j["updates"]) {
      if (++n > core::kSignalCount * 4) break;
      one(u);
    }
  } else {
    one(j);
  }
}

void Fleet::on_sim(size_t index, std::string_view data) {
  const nlohmann::json j = data.size() > kSimCommandBytesMax ? nlohmann::json(nlohmann::json::value_t::discarded)
                                                            : nlohmann::json::parse(data, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("action") || j["action"] != "driver_returns") {
    return refuse("bad_sim_command", "expected {\"action\": \"driver_returns\"}");
  }
  InboxItem item;
  item.index = index;
  item.kind = InboxItem::Kind::kDriverReturns;
  post(std::move(item));
}

void Fleet::driver_returns(size_t index) {
  CHECK(index < vehicles_.size());
  InboxItem item;
  item.index = index;
  item.kind = InboxItem::Kind::kDriverReturns;
  post(std::move(item));
}

std::vector<VehicleStatus> Fleet::status() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<VehicleStatus> out;
  for (const auto& v : vehicles_) out.push_back(v->status);
  return out;
}

std::vector<double> Fleet::preemption_latencies_ms() const {
  std::lock_guard<std::mutex> lock(mu_);
  return latencies_ms_;
}

// ---- The loop thread ---------------------------------------------------------

void Fleet::handle(size_t index, const core::AgentEvent& event) {
  Vehicle& v = *vehicles_[index];
  const auto* from_coordinator = std::get_if<core::CoordinatorMessageEvent>(&event);
  const auto* policy = from_coordinator ? std::get_if<core::PolicyMessage>(&from_coordinator->message) : nullptr;
  if (policy != nullptr && policy->vehicle_id == v.id && policy->policy.validate()) {
    // Kept before it is in force, so that a restart finds it; a policy the
    // file already holds (every hello brings it again) is not written again.
    // The machine decides on it as a PolicyEvent.
    const std::string text = core::encode_policy(policy->policy);
    if (text != v.policy_saved) {
      if (auto st = save_policy_file(v.policy_path, policy->policy); !st) {
        std::fprintf(stderr, "agent: vehicle %s: %s (the policy is in force until the agent restarts)\n",
                     v.id.c_str(), st.error().to_string().c_str());
      } else {
        v.policy_saved = text;
      }
    }
    core::PolicyEvent e{policy->policy};
    // A simulated car's owner declares the simulated schedule, as at start.
    if (e.policy.departures_minute_of_week.empty() && v.sim) {
      e.policy.departures_minute_of_week = v.sim->declared_departures_minute_of_week();
    }
    return handle(index, e);
  }
  run_effects(index, v.machine->handle(event, sim_now()));
  const core::AgentMachine& m = *v.machine;
  std::lock_guard<std::mutex> lock(mu_);
  v.status.state = core::vehicle_state_name(m.state());
  v.status.eligible = m.decision().eligible;
  v.status.reasons = core::format_reasons(m.decision());
  v.status.soc_pct = m.signals().soc_pct.value_or(0.0);
  v.status.accelerator_temp_c = m.signals().accelerator_temperature_c.value_or(0.0);
  v.status.counters = m.counters();
}

void Fleet::run_effects(size_t index, std::vector<core::AgentEffect> effects) {
  Vehicle& v = *vehicles_[index];
  for (auto& effect : effects) {
    if (auto* send = std::get_if<core::SendEffect>(&effect)) {
      if (auto* s = std::get_if<core::StateMessage>(&send->message)) {
        s->sent_at = to_wall(s->sent_at);
        if (s->departure_earliest != 0) s->departure_earliest = to_wall(s->departure_earliest);
        std::lock_guard<std::mutex> lock(mu_);
        v.status.job_id = s->job_id;
      }
      if (auto* r = std::get_if<core::ReceiptMessage>(&send->message)) {
        r->started_at = to_wall(r->started_at);
        r->ended_at = std::max(to_wall(r->ended_at), r->started_at);
        {
          std::lock_guard<std::mutex> lock(catalog_mu_);
          for (const CatalogEntry& e : catalog_) {
            if (e.id == r->model_id) r->model_sha256 = e.sha256;
          }
        }
        r->signature = to_hex(ed25519_sign(v.key.secret_key, core::receipt_signing_bytes(*r)));
      }
      if (auto st = v.nats->publish(core::up_subject(v.id), core::encode_message(send->message));
          !st && options_.verbose) {
        std::fprintf(stderr, "agent %s: publish failed: %s\n", v.id.c_str(), st.error().to_string().c_str());
      }
    } else if (auto* start = std::get_if<core::StartEngineEffect>(&effect)) {
      start_engine(index, start->assign);
    } else if (std::holds_alternative<core::StopEngineEffect>(effect)) {
      if (v.stop) {
        v.stop_origin_ns = origin_ns_;
        v.stop->store(true);
      }
    } else if (auto* log = std::get_if<core::AgentLogEffect>(&effect)) {
      // Refusals always get a line (at a bounded rate); preemptions with -v.
      uint64_t dropped = 0;
      const bool refusal = log->what.rfind("rejected", 0) == 0;
      if ((refusal || options_.verbose) && log_limiter_.allow(log->what, steady_ns() / 1'000'000, &dropped)) {
        std::fprintf(stderr, "agent %s: %s: %s%s\n", v.id.c_str(), log->what.c_str(), log->text.c_str(),
                     dropped > 0 ? (" (and " + std::to_string(dropped) + " more not logged)").c_str() : "");
      }
    }
  }
}

void Fleet::start_engine(size_t index, const core::AssignMessage& assign) {
  Vehicle& v = *vehicles_[index];
  // The machine starts an attempt only when the previous one has reported
  // its end, which the engine thread does as its last act.
  if (v.engine.joinable()) v.engine.join();
  v.stop = std::make_shared<std::atomic<bool>>(false);
  v.engine = std::thread([this, index, assign, stop = v.stop] { engine_main(index, assign, stop); });
}

void Fleet::engine_main(size_t index, core::AssignMessage a, std::shared_ptr<std::atomic<bool>> stop) {
  Vehicle& v = *vehicles_[index];
  // Inference is batch work: the threads that relay tokens, read signals and
  // stop the engine must get a core the moment they wake, even when the
  // engine keeps every core busy. SCHED_BATCH and a higher nice value (for
  // this thread only) need no privileges.
  sched_param no_priority{};
  (void)pthread_setschedparam(pthread_self(), SCHED_BATCH, &no_priority);
  (void)setpriority(PRIO_PROCESS, static_cast<id_t>(::syscall(SYS_gettid)), kEngineNice);
  auto post_event = [this, index](core::AgentEvent e) { post_event_of(index, std::move(e)); };
  auto fail = [&](const std::string& why) { post_event(core::EngineFailedEvent{a.job_id, a.attempt, why}); };
  if (options_.fake_engine) return fake_attempt(index, a, *stop);
  auto entry = catalog_entry(a.model_id);
  if (!entry) return fail(entry.error().to_string());
  const bool was_cached = cache_.has(entry->sha256);
  auto path = cache_.ensure(*entry);
  if (!path) return fail(path.error().to_string());
  if (!was_cached) post_event(core::CachedModelsEvent{cached_model_ids()});
  auto model = models_.get(*path);
  if (!model) return fail(model.error().to_string());
  const engine::Model& m = **model;

  if (v.engine_model != *model || v.engine_ctx == nullptr) {
    v.engine_ctx.reset();
    v.engine_pool = std::make_unique<engine::ThreadPool>(1);  // vehicles run side by side; one thread each
    v.engine_ctx = std::make_unique<engine::Context>(m, 0, v.engine_pool.get());
    v.engine_model = *model;
  }
  if (a.kind == core::WorkKind::kEmbed) return embed_attempt(index, a, *stop);
  engine::Generator gen(m, *v.engine_ctx);  // resume() starts the context afresh
  engine::SessionState state;
  state.model = m.name();
  state.prompt_ids = a.prompt_ids;
  state.produced_ids = a.produced_ids;
  state.sampler = to_sampler(a.sampling);
  state.max_tokens = static_cast<int64_t>(a.max_tokens);
  state.stop_ids = a.stop_ids;
  if (auto st = gen.resume(state); !st) return fail(st.error().to_string());
  // Computed for the tokens this attempt produces; the ones it resumed from
  // had theirs sent by the attempt that produced them.
  const bool logprobs = a.logprobs >= 0;
  if (logprobs) {
    if (auto st = gen.enable_logprobs(a.logprobs); !st) return fail(st.error().to_string());
  }
  const size_t chunk_tokens_max = logprobs ? core::kChunkLogprobTokensMax : core::kChunkTokensMax;
  TokenRelay relay(post_event, a, options_.chunk_us * 1000, chunk_tokens_max);
  const bool paced = v.paced_tokens_per_second > 0.0;
  Pacer pacer(v.paced_tokens_per_second, options_.time_scale, v.prefill_speedup,
              a.prompt_ids.size() + a.produced_ids.size());
  for (;;) {
    if (paced && gen.state().produced_ids.size() < a.max_tokens) pacer.wait(*stop);
    if (stop->load(std::memory_order_acquire)) {
      relay.flush();
      record_stop_latency(v);
      post_event(core::EngineStoppedEvent{a.job_id, a.attempt, gen.state().produced_ids.size()});
      return;
    }
    auto token = gen.next();
    if (!token) {
      relay.flush();
      return fail(token.error().to_string());
    }
    const uint64_t total = gen.state().produced_ids.size();
    if (*token < 0) {
      relay.flush();
      const char* reason = gen.stop_reason() == engine::StopReason::kStopToken ? "stop" : "length";
      post_event(core::EngineFinishedEvent{a.job_id, a.attempt, total, reason});
      return;
    }
    // TEST ONLY (FleetOptions::test_tamper_outputs): report the attempt's
    // first new token altered, still a valid id; the engine itself goes on
    // from the true one, as a cheat that saves nothing but lies would.
    const bool tamper = options_.test_tamper_outputs && total == a.produced_ids.size() + 1;
    std::optional<core::TokenLogprobs> lp;
    if (logprobs) {
      const engine::TokenLogprobs* last = gen.last_logprobs();
      CHECK(last != nullptr && last->chosen.id == *token);
      lp = to_wire(*last);
    }
    relay.add(tamper ? (*token >= 4 ? *token - 1 : *token + 1) : *token, std::move(lp));
  }
}

void Fleet::record_stop_latency(const Vehicle& v) {
  const double ms = static_cast<double>(steady_ns() - v.stop_origin_ns.load()) / 1e6;
  std::lock_guard<std::mutex> lock(mu_);
  latencies_ms_.push_back(ms);
}

// The fake engine (FleetOptions::fake_engine): the real attempt's events and
// pacing, with tokens from fake_token() instead of a model. It never stops
// early (no stop tokens): an attempt ends at max_tokens, "length".
void Fleet::fake_attempt(size_t index, const core::AssignMessage& a, const std::atomic<bool>& stop) {
  Vehicle& v = *vehicles_[index];
  auto post_event = [this, index](core::AgentEvent e) { post_event_of(index, std::move(e)); };
  if (a.kind == core::WorkKind::kEmbed) {  // not offered (hello), so only a confused coordinator asks
    post_event(core::EngineFailedEvent{a.job_id, a.attempt, "the fake engine makes no embeddings"});
    return;
  }
  TokenRelay relay(post_event, a, options_.chunk_us * 1000, core::kChunkTokensMax);
  Pacer pacer(v.paced_tokens_per_second, options_.time_scale, v.prefill_speedup,
              a.prompt_ids.size() + a.produced_ids.size());
  for (uint64_t position = a.produced_ids.size(); position < a.max_tokens; ++position) {
    pacer.wait(stop);
    if (stop.load(std::memory_order_acquire)) {
      relay.flush();
      record_stop_latency(v);
      post_event(core::EngineStoppedEvent{a.job_id, a.attempt, position});
      return;
    }
    relay.add(fake_token(a.job_id, position), std::nullopt);
  }
  relay.flush();
  post_event(core::EngineFinishedEvent{a.job_id, a.attempt, std::max<uint64_t>(a.max_tokens, a.produced_ids.size()),
                                       "length"});
}

// An embed attempt is one call into the engine (a batched prefill of the
// prompt, bounded by the context): unlike a generation it has no token
// boundary at which to stop, so a stop asked for while it runs takes effect
// when it returns, and a vector finished by then is still reported (the
// machine decides, as for a generation that finished first). The context is
// rewound before and after (embed_sequence), so the next generation on it
// starts as in a fresh one.
void Fleet::embed_attempt(size_t index, const core::AssignMessage& a, const std::atomic<bool>& stop) {
  Vehicle& v = *vehicles_[index];
  auto post_event = [this, index](core::AgentEvent e) { post_event_of(index, std::move(e)); };
  if (stop.load(std::memory_order_acquire)) {
    post_event(core::EngineStoppedEvent{a.job_id, a.attempt, 0});
    return;
  }
  auto values = v.engine_ctx->embed_sequence(a.prompt_ids);
  if (stop.load(std::memory_order_acquire)) record_stop_latency(v);
  if (!values) {
    post_event(core::EngineFailedEvent{a.job_id, a.attempt, values.error().to_string()});
    return;
  }
  post_event(core::EngineEmbeddingEvent{a.job_id, a.attempt, a.prompt_ids.size(), std::move(*values)});
}

void Fleet::advance_sources(core::TimeMs now) {
  origin_ns_ = steady_ns();  // a simulated or replayed signal arrives when it is read
  for (size_t i = 0; i < vehicles_.size(); ++i) {
    Vehicle& v = *vehicles_[i];
    bool changed = false;
    if (v.sim) {
      v.sim->advance(now, v.machine->serving() ? 1.0 : 0.0);
      for (const auto& [path, value] : v.sim->take_updates()) {
        changed |= core::apply_signal(&v.signals, path, value, now).has_value();
      }
      v.signals.heard_at = now;  // the simulated car is a live feed
      changed = true;
    } else if (v.replay) {
      for (const ReplayEvent& e : v.replay->take_until(now)) {
        changed |= core::apply_signal(&v.signals, e.path, e.value, e.t).has_value();
      }
    }
    if (changed) handle(i, core::SignalsEvent{v.signals});
    handle(i, core::AgentTick{});
  }
}

// Tokens of one attempt that queued up while the loop was busy travel as one
// chunk: one message instead of many when the engine outruns the relay, and
// no delay when it does not. Only runs of tokens with nothing else of that
// vehicle between them are merged, so each vehicle's events keep their order.
void Fleet::coalesce_tokens(std::deque<InboxItem>* items) {
  if (items->size() < 2) return;
  std::deque<InboxItem> out;
  std::vector<int64_t> last(vehicles_.size(), -1);  // index in `out` of each vehicle's latest item
  for (InboxItem& item : *items) {
    auto* tokens = item.kind == InboxItem::Kind::kEvent ? std::get_if<core::EngineTokensEvent>(&item.event) : nullptr;
    const int64_t at = last[item.index];
    if (tokens != nullptr && at >= 0) {
      auto* prev = out[static_cast<size_t>(at)].kind == InboxItem::Kind::kEvent
                       ? std::get_if<core::EngineTokensEvent>(&out[static_cast<size_t>(at)].event)
                       : nullptr;
      const bool logprobs = tokens->logprobs.size() > 0;
      if (prev != nullptr && prev->job_id == tokens->job_id && prev->attempt == tokens->attempt &&
          prev->first_index + prev->ids.size() == tokens->first_index && (prev->logprobs.size() > 0) == logprobs &&
          prev->ids.size() + tokens->ids.size() <= (logprobs ? core::kChunkLogprobTokensMax : core::kChunkTokensMax)) {
        prev->ids.insert(prev->ids.end(), tokens->ids.begin(), tokens->ids.end());
        prev->logprobs.insert(prev->logprobs.end(), std::make_move_iterator(tokens->logprobs.begin()),
                              std::make_move_iterator(tokens->logprobs.end()));
        continue;
      }
    }
    last[item.index] = static_cast<int64_t>(out.size());
    out.push_back(std::move(item));
  }
  items->swap(out);
}

void Fleet::loop() {
  const int64_t tick_ns = options_.tick_ms * 1'000'000;
  int64_t next_tick = steady_ns();
  std::deque<InboxItem> items;
  while (!stopping_.load()) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      const auto deadline = std::chrono::steady_clock::time_point(std::chrono::nanoseconds(next_tick));
      cv_.wait_until(lock, deadline, [&] { return !inbox_.empty() || stopping_.load(); });
      items.swap(inbox_);
    }
    coalesce_tokens(&items);
    for (InboxItem& item : items) {
      Vehicle& v = *vehicles_[item.index];
      origin_ns_ = item.received_ns;
      switch (item.kind) {
        case InboxItem::Kind::kEvent:
          handle(item.index, item.event);
          break;
        case InboxItem::Kind::kSignal: {
          const core::TimeMs now = sim_now();
          auto st = core::apply_signal(&v.signals, item.path, item.value, now);
          if (!st) {
            refuse("bad_signal", v.id + ": " + st.error().to_string());
            break;
          }
          handle(item.index, core::SignalsEvent{v.signals});
          break;
        }
        case InboxItem::Kind::kDriverReturns:
          if (v.sim) {
            v.sim->driver_returns(sim_now());
            advance_sources(sim_now());
          }
          break;
      }
    }
    items.clear();
    const int64_t t = steady_ns();
    if (t >= next_tick) {
      advance_sources(sim_now());
      next_tick += tick_ns;
      if (next_tick < t) next_tick = t + tick_ns;  // fell behind: do not try to catch up
    }
  }
}

}  // namespace idlefleet::agent
