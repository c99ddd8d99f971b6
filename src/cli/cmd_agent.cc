// `idlefleet agent`: one vehicle, or many simulated ones, serving the fleet.
#include <curl/curl.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string_view>
#include <filesystem>
#include <map>

#include <nlohmann/json.hpp>

#include "agent/fleet.h"
#include "common/identity.h"
#include "common/nkey.h"
#include "cli/agent_flags.h"
#include "cli/commands.h"
#include "common/crypto.h"
#include "common/wall_clock.h"
#include "core/protocol.h"
#include "cli/shutdown.h"

namespace idlefleet::cli {

agent::FleetOptions fleet_options(const AgentFlags& f) {
  agent::FleetOptions o;
  o.nats_url = f.nats_url;
  o.coordinator_url = f.coordinator_url;
  o.vehicles = f.vehicles;
  o.id_prefix = f.id_prefix;
  o.seed = f.seed;
  o.cache_dir = f.cache_dir;
  o.key_dir = f.key_dir;
  o.cache_bytes_max = f.cache_mb * (uint64_t{1} << 20);
  o.utc_offset_minutes = f.utc_offset_minutes;
  o.verbose = f.verbose;
  o.chunk_us = f.chunk_us;
  o.nats_connections = f.nats_connections;
  o.fake_engine = f.fake_engine;
  o.fake_tokens_per_second = f.fake_tokens_per_second;
  o.tick_ms = f.tick_ms;
  o.heartbeat_ms = f.heartbeat_ms;
  if (f.test_tamper_outputs) {
    // A switch that makes a vehicle lie must never be turned on by mistake.
    const char* testing = std::getenv("IDLEFLEET_TESTING");
    if (testing == nullptr || std::string_view(testing) != "1") {
      throw CommandError{"--test-tamper-outputs is for tests only: it needs IDLEFLEET_TESTING=1 in the environment"};
    }
    o.test_tamper_outputs = true;
  }
  if (!f.replay.empty() && f.vss_nats) throw CommandError{"--replay and --vss-nats are two signal sources: pick one"};
  if (!f.replay.empty()) {
    o.source = agent::SignalSourceKind::kReplay;
    o.replay_path = f.replay;
  } else if (f.vss_nats) {
    o.source = agent::SignalSourceKind::kNats;
  }
  if (f.day_minutes > 0) o.time_scale = 1440.0 / f.day_minutes;
  if (f.time_scale > 0) o.time_scale = f.time_scale;
  if (!f.start.empty()) {
    int h = -1, m = -1;
    char tail = 0;
    if (std::sscanf(f.start.c_str(), "%d:%d%c", &h, &m, &tail) != 2 || h < 0 || h > 23 || m < 0 || m > 59) {
      throw CommandError{"--start takes HH:MM (local time of day), got '" + f.start + "'"};
    }
    const core::TimeMs local_now = wall_clock_ms() + int64_t{f.utc_offset_minutes} * core::kMinuteMs;
    const core::TimeMs local_midnight = local_now - local_now % core::kDayMs;
    o.sim_start = local_midnight + (int64_t{h} * 60 + m) * core::kMinuteMs - int64_t{f.utc_offset_minutes} * core::kMinuteMs;
  }
  // Simulated cars are lent by running this command; a real car's owner opts in explicitly.
  o.policy.opted_in = f.opt_in || o.source == agent::SignalSourceKind::kSimulated;
  o.plug_in_probability = f.plug_in_probability;
  o.policy.soc_floor_pct = f.soc_floor_pct;
  o.policy.target_soc_pct = f.target_soc_pct;
  o.policy.accelerator_temp_limit_c = f.temp_limit_c;
  if (auto st = o.validate(); !st) throw CommandError{st.error().message};
  return o;
}

std::string fleet_summary(const std::vector<agent::VehicleStatus>& vehicles) {
  std::map<std::string, int> by_state;
  for (const auto& v : vehicles) by_state[v.state.empty() ? "starting" : v.state]++;
  std::string out;
  for (const auto& [s, n] : by_state) out += (out.empty() ? "" : ", ") + std::to_string(n) + " " + s;
  return out;
}

namespace {

void run_agent(const AgentFlags& f) {
  const agent::FleetOptions o = fleet_options(f);
  block_shutdown_signals();
  auto fleet = agent::Fleet::start(o);
  if (!fleet) throw CommandError{fleet.error().message};
  std::fprintf(stderr, "agent: %d vehicle%s (%s-...), NATS %s, catalog %s, clock x%g\n", o.vehicles,
               o.vehicles == 1 ? "" : "s", o.id_prefix.c_str(), o.nats_url.c_str(), o.coordinator_url.c_str(),
               o.time_scale);
  if (o.fake_engine) {
    std::fprintf(stderr,
                 "agent: LOAD GENERATOR: fake engine (no model; %g tokens/s a vehicle), %d shared NATS "
                 "connection%s, tick %lld ms. Its outputs are not a model's.\n",
                 o.fake_tokens_per_second, o.nats_connections, o.nats_connections == 1 ? "" : "s",
                 static_cast<long long>(o.tick_ms));
  }
  int seconds = 0;
  const int sig = wait_for_shutdown(1000, [&] {
    if (f.status_every_s > 0 && ++seconds % f.status_every_s == 0) {
      std::fprintf(stderr, "agent: %s\n", fleet_summary((*fleet)->status()).c_str());
    }
    return true;
  });
  std::fprintf(stderr, "agent: signal %d, stopping\n", sig);
  (*fleet)->stop();
}

}  // namespace

void add_agent_flags(CLI::App* cmd, AgentFlags* f) {
  cmd->add_option("--nats", f->nats_url, "NATS server URL")->capture_default_str();
  cmd->add_option("--coordinator", f->coordinator_url, "Coordinator base URL (model catalog)")->capture_default_str();
  cmd->add_option("--vehicles", f->vehicles, "Simulated vehicles in this process")
      ->check(CLI::Range(1, agent::kFleetVehiclesMax))->capture_default_str();
  cmd->add_option("--id-prefix", f->id_prefix, "Vehicle ids are PREFIX-01, PREFIX-02, ...")->capture_default_str();
  cmd->add_option("--seed", f->seed, "Seed of the simulated vehicles' lives")->capture_default_str();
  cmd->add_option("--plug-in-probability", f->plug_in_probability,
                  "Simulated cars: how often a driver arriving home plugs in (also at the start)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--day-minutes", f->day_minutes, "Compress the simulated clock: one day in this many minutes")
      ->check(CLI::Range(0.01, 1440.0));
  cmd->add_option("--time-scale", f->time_scale, "Simulated seconds per real second (overrides --day-minutes)")
      ->check(CLI::Range(1.0, 100000.0));
  cmd->add_option("--start", f->start, "Simulated clock starts today at this local time, HH:MM (default: now)");
  cmd->add_option("--utc-offset-minutes", f->utc_offset_minutes, "The owners' time zone")
      ->check(CLI::Range(-14 * 60, 14 * 60));
  cmd->add_option("--replay", f->replay, "Feed one vehicle from a JSONL signal replay file");
  cmd->add_flag("--vss-nats", f->vss_nats, "Feed one vehicle from VSS updates on NATS (idlefleet.v1.vss.<id>)");
  cmd->add_flag("--opt-in", f->opt_in, "The owner lends the car (always on for simulated vehicles)");
  cmd->add_option("--soc-floor", f->soc_floor_pct, "Never serve at or below this SoC (%)")
      ->check(CLI::Range(0.0, 100.0))->capture_default_str();
  cmd->add_option("--target-soc", f->target_soc_pct, "SoC wanted at every declared departure (%)")
      ->check(CLI::Range(0.0, 100.0))->capture_default_str();
  cmd->add_option("--temp-limit", f->temp_limit_c, "Stop at this accelerator temperature (C)")
      ->check(CLI::Range(0.0, 150.0))->capture_default_str();
  cmd->add_option("--cache-dir", f->cache_dir, "Model cache directory")->capture_default_str();
  cmd->add_option("--key-dir", f->key_dir,
                  "Where each vehicle's signing key lives (<id>.key, mode 0600, made on first start; "
                  "default <cache-dir>/keys), and the owner's policy from the coordinator (<id>.policy.json), "
                  "which replaces the policy flags once received");
  cmd->add_option("--cache-mb", f->cache_mb, "Model cache size cap (MiB)")
      ->check(CLI::Range(uint64_t{1}, uint64_t{1} << 24))->capture_default_str();
  cmd->add_option("--chunk-us", f->chunk_us,
                  "A token made within this many microseconds of the last one sent waits to travel with the next "
                  "(0: one message per token)")
      ->check(CLI::Range(int64_t{0}, agent::kChunkUsMax))->capture_default_str();
  cmd->add_flag("-v,--verbose", f->verbose, "Log every refusal and preemption");
}

namespace {

struct EnrolFlags {
  std::string coordinator_url = "http://127.0.0.1:8080";
  std::string code;
  std::string vehicle_id;
  std::string cache_dir = "idlefleet-cache";
  std::string key_dir;
};

size_t collect(char* p, size_t size, size_t n, void* out) {
  auto* body = static_cast<std::string*>(out);
  if (body->size() + size * n > (1u << 20)) return 0;  // a coordinator's answer is small
  body->append(p, size * n);
  return size * n;
}

// `idlefleet agent enroll`: makes (or reads) the vehicle's key, sends its
// public half with the owner's one-time code, and prints the owner it now
// belongs to. The secret half never leaves the vehicle.
void enrol(const EnrolFlags& f) {
  const std::string key_dir =
      f.key_dir.empty() ? (std::filesystem::path(f.cache_dir) / "keys").string() : f.key_dir;
  const std::string key_path = (std::filesystem::path(key_dir) / (f.vehicle_id + ".key")).string();
  auto key = load_or_create_key(key_path);
  if (!key) throw CommandError{key.error().message};
  const std::string body = nlohmann::json{{"code", f.code}, {"vehicle_id", f.vehicle_id},
                                          {"public_key", to_hex(key->public_key)}}
                               .dump();
  CURL* curl = curl_easy_init();
  if (curl == nullptr) throw CommandError{"cannot start libcurl"};
  std::string answer;
  curl_slist* headers = curl_slist_append(nullptr, "Content-Type: application/json");
  const std::string url = f.coordinator_url + "/v1/vehicles/enroll";
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 30000L);
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body.c_str());
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, collect);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &answer);
  const CURLcode rc = curl_easy_perform(curl);
  long status = 0;
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
  curl_slist_free_all(headers);
  curl_easy_cleanup(curl);
  if (rc != CURLE_OK) throw CommandError{"cannot reach " + url + ": " + curl_easy_strerror(rc)};
  const nlohmann::json j = nlohmann::json::parse(answer, nullptr, false);
  if (status != 200) {
    std::string why = answer.substr(0, 512);
    if (j.is_object() && j.contains("error") && j["error"].is_object()) why = j["error"].value("message", why);
    throw CommandError{"enrolment refused (HTTP " + std::to_string(status) + "): " + why};
  }
  std::printf("enrolled %s to owner %s (key %s)\n", f.vehicle_id.c_str(),
              j.is_object() ? j.value("owner_id", "?").c_str() : "?", key_path.c_str());
  // The key is the vehicle's NATS user too: `idlefleet agent` presents it
  // with the same --key-dir (or --cache-dir).
  std::printf("NATS user %s\n", nkey_user_public(key->public_key).c_str());
}

}  // namespace

void add_agent(CLI::App& app) {
  auto f = std::make_shared<AgentFlags>();
  CLI::App* cmd = app.add_subcommand("agent", "Run a vehicle agent (or many simulated vehicles)");
  add_agent_flags(cmd, f.get());
  cmd->add_option("--status-every", f->status_every_s, "Print the vehicles' states every N seconds (0: never)")
      ->check(CLI::Range(0, 3600))->capture_default_str();
  cmd->add_option("--nats-connections", f->nats_connections,
                  "Share this many NATS connections among the vehicles (0: one each, as real cars). For load "
                  "generation; needs a server without per-vehicle authorisation")
      ->check(CLI::Range(0, agent::kFleetConnectionsMax))->capture_default_str();
  cmd->add_flag("--fake-engine", f->fake_engine,
                "LOAD GENERATION: load no model; make stand-in tokens at --fake-tokens-per-second (a coordinator's "
                "capacity, bench/replica_load.sh)");
  cmd->add_option("--fake-tokens-per-second", f->fake_tokens_per_second,
                  "Tokens a second each fake engine makes (simulated time)")
      ->check(CLI::Range(0.001, agent::kPacedTokensPerSecondMax))->capture_default_str();
  cmd->add_option("--heartbeat-ms", f->heartbeat_ms,
                  "A vehicle reports its state at least this often (wall ms; and at once on any change)")
      ->check(CLI::Range(int64_t{100}, int64_t{60000}))->capture_default_str();
  cmd->add_option("--tick-ms", f->tick_ms, "How often the simulated cars and the agents' timers advance (wall ms)")
      ->check(CLI::Range(int64_t{1}, int64_t{1000}))->capture_default_str();
  cmd->add_flag("--test-tamper-outputs", f->test_tamper_outputs,
                "TEST ONLY (needs IDLEFLEET_TESTING=1): report altered tokens, to test verification");

  auto e = std::make_shared<EnrolFlags>();
  CLI::App* enroll = cmd->add_subcommand("enroll", "Enrol this vehicle with an owner's one-time code");
  enroll->add_option("--coordinator", e->coordinator_url, "Coordinator base URL")->capture_default_str();
  enroll->add_option("--code", e->code, "The owner's one-time enrolment code (enr-...)")->required();
  enroll->add_option("--vehicle-id", e->vehicle_id, "This vehicle's id")
      ->required()
      ->check(CLI::Validator(
          [](std::string& v) -> std::string {
            return core::valid_vehicle_id(v) ? "" : "a vehicle id is 1-128 of A-Z a-z 0-9 _ -";
          },
          "ID"));
  enroll->add_option("--cache-dir", e->cache_dir, "The agent's cache directory")->capture_default_str();
  enroll->add_option("--key-dir", e->key_dir, "Where the key lives (default <cache-dir>/keys, as for the agent)");
  enroll->callback([e] { enrol(*e); });
  cmd->callback([f, enroll] {
    if (enroll->parsed()) return;  // `agent enroll` ran instead
    run_agent(*f);
  });
}

}  // namespace idlefleet::cli
