// fleet_bench: the figures of acceptance point C, from the coordinator's
// decision logic alone up to the whole fleet path.
//
//   build/release/bin/fleet_bench [--quick] [--capacity-only | --live-only] [--model PATH]
//                                 [--runs N] [--vehicles N] [--placements N] [--fleet-vehicles N]
//                                 [--streams N] [--preemptions N] [--requests N] [--chunk-us N]
//
// 1. Coordinator capacity on one core: core::CoordinatorMachine driven on
//    this thread with a fake engine and no I/O, because its decisions are what
//    one core must keep up with (the shell's threads only parse and post).
//    (a) state updates/s from --vehicles vehicles that said hello, and the
//    cost of one lease tick over all of them; (b) placements/s, each a whole
//    job cycle (submit, assign, started, one chunk, done) with kInFlightJobs
//    jobs running and a lease tick every kTickMs of wall time, with where the
//    time goes. Each twice: with decoded message objects, and with the JSON
//    codec the real coordinator runs (decode_message of every vehicle
//    message, encode_message of every message to a vehicle). Medians of --runs.
// The live fleet: a real nats-server, an in-process CoordinatorServer serving
// stories260K (converted from ../shared/models into a temporary directory
// unless --model names a GGUF) and --fleet-vehicles in-process agent::Fleets
// with the VSS-over-NATS signal source (one vehicle each: that source feeds
// one), every vehicle parked, plugged in and opted in, the model in its cache.
// 4. (first, on the quiet fleet) What the fleet path adds to a local run:
//    time to first token and time per token of streamed requests through
//    HTTP + coordinator + NATS + agent, against engine::Generator in this
//    process on the same model, prompt, sampling and seed (one thread, as an
//    agent runs an attempt), alternated, one at a time; with the CPU each
//    token costs, and where the first token's time goes.
// 2. Preemption latency: --streams clients stream requests of up to the
//    context; a few tokens into an attempt (as the vehicle's chunks pass on
//    NATS), the vehicle's driver's door opens (a VSS update on
//    idlefleet.v1.vss.<id>), and closes again once the vehicle reports the
//    attempt preempted. Two figures: the agent's own
//    (Fleet::preemption_latencies_ms: its stop decision to the engine
//    stopped), and ours (the door-open published to the vehicle's
//    "preempted" report received: the engine has stopped by then).
// 3. The gap a client sees in each preempted request's SSE stream: from the
//    last token of the stopped attempt to the first token of the next one.
//
// Every figure is client-side or in-process wall time on this machine, which
// runs everything (nats-server, coordinator, agents, clients) on its cores,
// so print the load average beside them.
#include <curl/curl.h>
#include <nats/nats.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "agent/fleet.h"
#include "agent/model_cache.h"
#include "coordinator/server.h"
#include "core/coordinator_machine.h"
#include "core/protocol.h"
#include "engine/model.h"
#include "engine/model_tools.h"
#include "engine/session.h"
#include "engine/thread_pool.h"
#include "engine/tokenizer.h"
#include "transport/nats_client.h"
#include "transport/nats_server.h"

namespace {

namespace fs = std::filesystem;
using namespace idlefleet;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

// Targets of acceptance point C.
constexpr double kStateUpdatesPerSecondTarget = 100'000;
constexpr double kPlacementsPerSecondTarget = 20'000;
constexpr double kPreemptionP99MsTarget = 50;
constexpr double kResumeGapMsTarget = 1000;
constexpr double kFirstTokenAddedMsTarget = 2;
constexpr double kPerTokenAddedPctTarget = 3;

// The capacity benchmark's job cycle.
constexpr size_t kInFlightJobs = 1000;     // jobs running at once while placing
constexpr size_t kChunkTokens = 8;         // tokens each fake vehicle reports before done
constexpr size_t kPromptTokens = 24;
constexpr core::DurationMs kTickMs = 50;   // the coordinator's default tick_ms
const char* const kModelId = "stories260K";

// The live fleet.
constexpr int64_t kVehiclesOnlineWaitMs = 30'000;
constexpr int64_t kKeepaliveMs = 10'000;   // fresh VSS feed (signal_age_ms_max is 2 min)
constexpr long kRequestTimeoutMs = 120'000;
constexpr size_t kWarmupRoundsMax = 6;
constexpr int64_t kPreemptionPhaseMsMax = 120'000;
const char* const kDoorPath = "Vehicle.Cabin.Door.Row1.DriverSide.IsOpen";
const char* const kPrompts[] = {"Once upon a time", "The little dog", "Lily and Ben", "One day, a bird",
                                "The sun was", "Tom had a red ball", "In the park", "A big cat"};

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
}
core::TimeMs wall_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}
double ms_between(int64_t a_ns, int64_t b_ns) { return static_cast<double>(b_ns - a_ns) / 1e6; }

double median(std::vector<double> v) {
  if (v.empty()) return NAN;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}
// Nearest rank: the smallest sample with at least q of the samples at or below it.
double percentile(std::vector<double> v, double q) {
  if (v.empty()) return NAN;
  std::sort(v.begin(), v.end());
  const size_t rank = static_cast<size_t>(std::ceil(q * static_cast<double>(v.size())));
  return v[std::clamp<size_t>(rank, 1, v.size()) - 1];
}
double maximum(const std::vector<double>& v) { return v.empty() ? NAN : *std::max_element(v.begin(), v.end()); }

const char* verdict(bool met) { return met ? "met" : "MISSED"; }

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "fleet_bench: %s\n", what.c_str());
  std::exit(1);
}

// ---- Machine information -------------------------------------------------------

std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      const size_t colon = line.find(':');
      if (colon != std::string::npos) return line.substr(colon + 2);
    }
  }
  return "unknown CPU";
}

std::string load_average() {
  std::ifstream in("/proc/loadavg");
  std::string a, b, c;
  in >> a >> b >> c;
  return a + " " + b + " " + c;
}

// CPU time used so far, in ns: by this process (every thread), or by every
// thread of another process (from /proc/<pid>/task/*/schedstat).
int64_t process_cpu_ns() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}
int64_t thread_cpu_ns() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}
int64_t other_process_cpu_ns(int pid) {
  int64_t total = 0;
  std::error_code ec;
  for (const auto& task : fs::directory_iterator(fs::path("/proc") / std::to_string(pid) / "task", ec)) {
    std::ifstream in(task.path() / "schedstat");
    int64_t on_cpu_ns = 0;
    if (in >> on_cpu_ns) total += on_cpu_ns;
  }
  return total;
}

std::string utc_date() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", &tm);
  return buf;
}

// ---- 1. Coordinator capacity -------------------------------------------------------

std::string fake_vehicle_id(size_t i) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "car-%06zu", i + 1);
  return buf;
}

core::HelloMessage fake_hello(const std::string& id, size_t i) {
  core::HelloMessage h;
  h.vehicle_id = id;
  h.models_cached = {kModelId, "stories15M"};
  h.memory_bytes = uint64_t{8} << 30;
  h.tokens_per_second = 40.0 + static_cast<double>(i % 20);
  h.instance = "a1b2c3d4e5f60718-" + std::to_string(i);
  return h;
}

// A vehicle's heartbeat as an agent sends it: eligible and idle, or parked
// and refusing work with the owner's reason.
core::StateMessage fake_state(const std::string& id, size_t i, bool eligible, core::TimeMs now) {
  core::StateMessage s;
  s.vehicle_id = id;
  s.state = eligible ? "eligible" : "charging";
  s.eligible = eligible;
  if (!eligible) s.reasons = {"battery 28% is at or below your floor of 30%"};
  s.soc_pct = eligible ? 60.0 + static_cast<double>(i % 40) : 28.0;
  s.accelerator_temp_c = 30.0 + static_cast<double>(i % 25);
  s.departure_earliest = now + 8 * core::kHourMs + static_cast<core::TimeMs>(i % 600) * core::kMinuteMs;
  s.sent_at = now;
  return s;
}

core::CoordinatorCoreConfig capacity_config() {
  core::CoordinatorCoreConfig c;
  c.models = {{kModelId, 1'100'000}, {"stories15M", 60'000'000}};
  c.queue_jobs_max = 100'000;
  return c;
}

// A machine that knows `n` vehicles, each having said hello and reported
// itself eligible.
std::unique_ptr<core::CoordinatorMachine> machine_with_vehicles(const std::vector<std::string>& ids, core::TimeMs now) {
  auto m = std::make_unique<core::CoordinatorMachine>(capacity_config());
  for (size_t i = 0; i < ids.size(); ++i) {
    (void)m->handle(core::VehicleMessageEvent{ids[i], fake_hello(ids[i], i)}, now);
    (void)m->handle(core::VehicleMessageEvent{ids[i], fake_state(ids[i], i, true, now)}, now);
  }
  if (m->vehicles_available() != ids.size()) die("capacity setup: not every fake vehicle is available");
  return m;
}

struct StateRates {
  double machine = 0, codec = 0;  // updates/s
  double tick_ms = 0;             // one tick over every vehicle
};

// One run: `rounds` state updates from every vehicle as decoded messages,
// then `json_rounds` as JSON text. Each round one vehicle in ten refuses work
// (a different tenth each round), so a fifth of the updates move a vehicle in
// or out of the idle set; the rest are heartbeats.
StateRates bench_state_updates(const std::vector<std::string>& ids, int rounds, int json_rounds) {
  StateRates r;
  const size_t n = ids.size();
  const core::TimeMs t0 = wall_ms();
  std::vector<core::CoordinatorEvent> events[2];
  std::vector<std::string> texts[2], subjects(n);
  for (int v = 0; v < 2; ++v) {
    events[v].reserve(n);
    texts[v].reserve(n);
    for (size_t i = 0; i < n; ++i) {
      core::StateMessage s = fake_state(ids[i], i, i % 10 != static_cast<size_t>(v), t0);
      texts[v].push_back(core::encode_message(s));
      events[v].push_back(core::VehicleMessageEvent{ids[i], std::move(s)});
    }
  }
  for (size_t i = 0; i < n; ++i) subjects[i] = core::up_subject(ids[i]);

  {  // Decoded messages: the machine alone.
    auto m = machine_with_vehicles(ids, t0);
    const uint64_t before = m->counters().messages_accepted;
    const auto start = Clock::now();
    core::TimeMs now = wall_ms();
    for (int round = 0; round < rounds; ++round) {
      const auto& evs = events[round % 2];
      for (size_t i = 0; i < n; ++i) {
        if ((i & 255) == 0) now = wall_ms();
        (void)m->handle(evs[i], now);
      }
    }
    const double s = std::chrono::duration<double>(Clock::now() - start).count();
    if (m->counters().messages_accepted - before != n * static_cast<size_t>(rounds)) die("state updates refused");
    r.machine = static_cast<double>(n) * rounds / s;
    // A lease tick walks every vehicle (offline check) and every running job;
    // ticks kTickMs apart on the machine's clock, as the shell sends them.
    std::vector<double> ticks;
    const core::TimeMs tick0 = wall_ms();
    for (int k = 0; k < 11; ++k) {
      const auto a = Clock::now();
      (void)m->handle(core::CoordinatorTick{}, tick0 + k * kTickMs);
      ticks.push_back(std::chrono::duration<double, std::milli>(Clock::now() - a).count());
    }
    r.tick_ms = median(ticks);
  }
  {  // As the coordinator receives them: subject and JSON text.
    auto m = machine_with_vehicles(ids, t0);
    const uint64_t before = m->counters().messages_accepted;
    const auto start = Clock::now();
    core::TimeMs now = wall_ms();
    for (int round = 0; round < json_rounds; ++round) {
      const auto& txt = texts[round % 2];
      for (size_t i = 0; i < n; ++i) {
        if ((i & 255) == 0) now = wall_ms();
        const std::string_view vid = core::vehicle_of_up_subject(subjects[i]);
        auto msg = core::decode_message(txt[i]);
        if (!msg) die("decode: " + msg.error().to_string());
        (void)m->handle(core::VehicleMessageEvent{std::string(vid), std::move(*msg)}, now);
      }
    }
    const double s = std::chrono::duration<double>(Clock::now() - start).count();
    if (m->counters().messages_accepted - before != n * static_cast<size_t>(json_rounds)) die("state updates refused");
    r.codec = static_cast<double>(n) * json_rounds / s;
  }
  return r;
}

// Where a run's time went, per placement.
struct PlacementRun {
  double rate = 0;                                // placements/s
  double submit_us = 0, vehicle_us = 0, tick_us = 0;  // submit + place; started, chunk, done; lease ticks
};

// One run: a job cycle per job id, or as many as fit in seconds_max, on a
// fresh machine with every vehicle idle. codec: the coordinator's side of the
// wire too (encode each assign, decode each started / chunk / done); the fake
// vehicle's own encoding is timed separately and left out.
PlacementRun bench_placements(const std::vector<std::string>& ids, const std::vector<std::string>& job_ids, bool codec,
                              double seconds_max) {
  auto m = machine_with_vehicles(ids, wall_ms());
  core::JobSpec spec;
  spec.model_id = kModelId;
  for (size_t i = 0; i < kPromptTokens; ++i) spec.prompt_ids.push_back(static_cast<int32_t>(1 + (i * 37) % 500));
  spec.max_tokens = 256;
  spec.stop_ids = {2, 1};
  spec.sampling.temperature = 0.8;
  spec.sampling.seed = 42;
  std::vector<int32_t> chunk_ids;
  for (size_t i = 0; i < kChunkTokens; ++i) chunk_ids.push_back(static_cast<int32_t>(100 + i));

  int64_t vehicle_side_ns = 0, submit_ns = 0, vehicle_ns = 0, tick_ns = 0;
  core::TimeMs now = wall_ms();
  auto vehicle_says = [&](const std::string& vid, core::Message msg) {
    if (!codec) {
      const int64_t a = now_ns();
      (void)m->handle(core::VehicleMessageEvent{vid, std::move(msg)}, now);
      vehicle_ns += now_ns() - a;
      return;
    }
    const int64_t a = now_ns();
    const std::string text = core::encode_message(msg);
    const int64_t b = now_ns();
    vehicle_side_ns += b - a;
    auto decoded = core::decode_message(text);
    if (!decoded) die("decode: " + decoded.error().to_string());
    (void)m->handle(core::VehicleMessageEvent{vid, std::move(*decoded)}, now);
    vehicle_ns += now_ns() - b;
  };
  struct Running {
    std::string vehicle_id, job_id;
    uint32_t attempt = 0;
  };
  std::deque<Running> running;
  size_t encoded_bytes = 0;
  core::TimeMs last_tick = now;
  const uint64_t before = m->counters().placements;
  const int64_t start = now_ns();
  const int64_t budget_ns = static_cast<int64_t>(seconds_max * 1e9);
  size_t attempted = 0;
  for (size_t j = 0; j < job_ids.size(); ++j, ++attempted) {
    if ((j & 63) == 0) {
      if (now_ns() - start > budget_ns) break;
      now = wall_ms();
      if (now - last_tick >= kTickMs) {
        const int64_t a = now_ns();
        (void)m->handle(core::CoordinatorTick{}, now);
        tick_ns += now_ns() - a;
        last_tick = now;
      }
    }
    const int64_t a = now_ns();
    auto effects = m->handle(core::SubmitJobEvent{job_ids[j], spec}, now);
    const core::AssignMessage* assign = nullptr;
    const std::string* vid = nullptr;
    for (const auto& e : effects) {
      if (const auto* send = std::get_if<core::SendToVehicleEffect>(&e)) {
        if (codec) encoded_bytes += core::encode_message(send->message).size();
        if (const auto* a = std::get_if<core::AssignMessage>(&send->message)) assign = a, vid = &send->vehicle_id;
      }
    }
    submit_ns += now_ns() - a;
    if (assign == nullptr) die("job " + job_ids[j] + " was not placed");
    running.push_back({*vid, assign->job_id, assign->attempt});
    vehicle_says(*vid, core::StartedMessage{assign->job_id, assign->attempt});
    if (running.size() > kInFlightJobs) {
      const Running r = std::move(running.front());
      running.pop_front();
      vehicle_says(r.vehicle_id, core::ChunkMessage{r.job_id, r.attempt, 0, chunk_ids});
      vehicle_says(r.vehicle_id, core::DoneMessage{r.job_id, r.attempt, kChunkTokens, "length"});
    }
  }
  const double s = static_cast<double>(now_ns() - start - vehicle_side_ns) / 1e9;
  const uint64_t placed = m->counters().placements - before;
  if (placed != attempted) die("placements: " + std::to_string(placed) + " of " + std::to_string(attempted));
  if (codec && encoded_bytes == 0) die("nothing encoded");
  const double per = 1e-3 / static_cast<double>(placed);  // ns in all -> us per placement
  return {static_cast<double>(placed) / s, static_cast<double>(submit_ns) * per, static_cast<double>(vehicle_ns) * per,
          static_cast<double>(tick_ns) * per};
}

void bench_capacity(size_t vehicles, size_t placements, double seconds_max, int runs) {
  std::printf("\n== 1. Coordinator capacity, one core (core::CoordinatorMachine on this thread, fake engine, no I/O)\n");
  std::vector<std::string> ids;
  for (size_t i = 0; i < vehicles; ++i) ids.push_back(fake_vehicle_id(i));
  std::vector<std::string> job_ids;
  for (size_t j = 0; j < placements; ++j) {
    char buf[48];
    std::snprintf(buf, sizeof buf, "cmpl-%012zx%012zx", j * 2654435761u % 0xffffffffffff, j);
    job_ids.push_back(buf);
  }
  const int rounds = 3, json_rounds = 1;
  std::vector<double> machine, codec, tick;
  for (int r = 0; r < runs; ++r) {
    const StateRates s = bench_state_updates(ids, rounds, json_rounds);
    machine.push_back(s.machine);
    codec.push_back(s.codec);
    tick.push_back(s.tick_ms);
  }
  const double state_m = median(machine), state_c = median(codec), tick_ms = median(tick);
  const double tick_share = tick_ms / static_cast<double>(kTickMs);
  std::printf("(a) state updates, %zu vehicles said hello, %d x %zu decoded and %d x %zu JSON updates per run, median "
              "of %d runs\n",
              vehicles, rounds, vehicles, json_rounds, vehicles, runs);
  std::printf("    decoded StateMessage objects (machine only):    %10.0f updates/s  (min %.0f, max %.0f)\n", state_m,
              *std::min_element(machine.begin(), machine.end()), *std::max_element(machine.begin(), machine.end()));
  std::printf("    JSON text, decode_message() + machine:          %10.0f updates/s  (min %.0f, max %.0f)\n", state_c,
              *std::min_element(codec.begin(), codec.end()), *std::max_element(codec.begin(), codec.end()));
  std::printf("    lease tick over %zu vehicles: %.2f ms, every %lld ms = %.1f%% of the core; with it: %.0f updates/s "
              "(JSON)\n",
              vehicles, tick_ms, static_cast<long long>(kTickMs), 100.0 * tick_share, state_c * (1.0 - tick_share));
  std::printf("    target >= %.0f/s: %s (decoded), %s (JSON, ticks included)\n", kStateUpdatesPerSecondTarget,
              verdict(state_m >= kStateUpdatesPerSecondTarget),
              verdict(state_c * (1.0 - tick_share) >= kStateUpdatesPerSecondTarget));
  std::fflush(stdout);

  std::vector<double> pm, pc, submit_m, vehicle_m, tick_m, submit_c, vehicle_c, tick_c;
  for (int r = 0; r < runs; ++r) {
    const PlacementRun a = bench_placements(ids, job_ids, false, seconds_max);
    const PlacementRun b = bench_placements(ids, job_ids, true, seconds_max);
    pm.push_back(a.rate);
    submit_m.push_back(a.submit_us);
    vehicle_m.push_back(a.vehicle_us);
    tick_m.push_back(a.tick_us);
    pc.push_back(b.rate);
    submit_c.push_back(b.submit_us);
    vehicle_c.push_back(b.vehicle_us);
    tick_c.push_back(b.tick_us);
  }
  const double place_m = median(pm), place_c = median(pc);
  std::printf("(b) placements, %zu idle vehicles, up to %zu jobs or %.1f s per run, %zu running at once, median of %d "
              "runs;\n"
              "    each placement is a whole cycle: submit, assign, started, chunk of %zu tokens, done; lease tick "
              "every %lld ms\n",
              vehicles, placements, seconds_max, kInFlightJobs, runs, kChunkTokens, static_cast<long long>(kTickMs));
  std::printf("    decoded message objects (machine only):         %10.0f placements/s  (min %.0f, max %.0f)\n", place_m,
              *std::min_element(pm.begin(), pm.end()), *std::max_element(pm.begin(), pm.end()));
  std::printf("    JSON: decode vehicle messages, encode assigns:  %10.0f placements/s  (min %.0f, max %.0f)\n", place_c,
              *std::min_element(pc.begin(), pc.end()), *std::max_element(pc.begin(), pc.end()));
  std::printf("    per placement, decoded / JSON: submit + placement %.1f / %.1f us, started + chunk + done "
              "%.1f / %.1f us, lease ticks %.1f / %.1f us\n",
              median(submit_m), median(submit_c), median(vehicle_m), median(vehicle_c), median(tick_m), median(tick_c));
  std::printf("    target >= %.0f/s: %s (decoded), %s (JSON)\n", kPlacementsPerSecondTarget,
              verdict(place_m >= kPlacementsPerSecondTarget), verdict(place_c >= kPlacementsPerSecondTarget));
  std::fflush(stdout);
}

// ---- The live fleet: HTTP client ------------------------------------------------------

void init_curl() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

// One streamed completion as the client saw it.
struct StreamResult {
  long status = 0;
  std::string error;
  std::string job_id;  // the response id, which is the coordinator's job id
  std::string text;
  std::string finish_reason;
  int64_t sent_ns = 0;                 // just before the request went out
  std::vector<int64_t> token_ns;       // arrival of each token event (finish_reason null)
  std::string first_text;              // the text of the first token event
  int64_t completion_tokens = -1;      // from the usage event
  bool done_marker = false;
};

struct StreamTransfer {
  StreamResult* result;
  std::string pending;
};

void take_event(StreamResult* r, std::string_view data, int64_t t) {
  if (data == "[DONE]") {
    r->done_marker = true;
    return;
  }
  const json j = json::parse(data, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    r->error += std::string(data.substr(0, 200));
    return;
  }
  if (j.contains("error")) {
    r->error += j["error"].dump();
    return;
  }
  if (r->job_id.empty() && j.contains("id") && j["id"].is_string()) r->job_id = j["id"].get<std::string>();
  if (j.contains("usage") && j["usage"].is_object()) {
    r->completion_tokens = j["usage"].value("completion_tokens", int64_t{-1});
  }
  if (!j.contains("choices") || !j["choices"].is_array()) return;
  for (const auto& c : j["choices"]) {
    r->text += c.value("text", "");
    if (c.contains("finish_reason") && c["finish_reason"].is_string()) {
      r->finish_reason = c["finish_reason"].get<std::string>();
    } else {
      if (r->token_ns.empty()) r->first_text = c.value("text", "");
      r->token_ns.push_back(t);
    }
  }
}

size_t on_stream_data(char* data, size_t size, size_t count, void* user) {
  const int64_t t = now_ns();
  auto* x = static_cast<StreamTransfer*>(user);
  x->pending.append(data, size * count);
  for (;;) {
    const size_t end = x->pending.find("\n\n");
    if (end == std::string::npos) break;
    const std::string event = x->pending.substr(0, end);
    x->pending.erase(0, end + 2);
    std::string payload;
    std::istringstream lines(event);
    std::string line;
    while (std::getline(lines, line)) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.rfind("data:", 0) == 0) {
        std::string_view v(line);
        v.remove_prefix(5);
        if (!v.empty() && v.front() == ' ') v.remove_prefix(1);
        if (!payload.empty()) payload += '\n';
        payload += v;
      }
    }
    if (!payload.empty()) take_event(x->result, payload, t);
  }
  return size * count;
}

StreamResult stream_completion(const std::string& base_url, const std::string& prompt, int64_t max_tokens,
                               uint64_t seed) {
  init_curl();
  StreamResult r;
  const json body = {{"model", kModelId},  {"prompt", prompt}, {"max_tokens", max_tokens},
                     {"temperature", 0.8}, {"seed", seed},     {"stream", true},
                     {"stream_options", {{"include_usage", true}}}};
  const std::string text = body.dump();
  const std::string url = base_url + "/v1/completions";
  CURL* curl = curl_easy_init();
  if (curl == nullptr) {
    r.error = "curl_easy_init failed";
    return r;
  }
  curl_slist* headers = curl_slist_append(nullptr, "Content-Type: application/json");
  StreamTransfer transfer{&r, {}};
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_NOPROXY, "*");
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, kRequestTimeoutMs);
  curl_easy_setopt(curl, CURLOPT_TCP_NODELAY, 1L);
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(curl, CURLOPT_POSTFIELDS, text.c_str());
  curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, static_cast<long>(text.size()));
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_stream_data);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &transfer);
  r.sent_ns = now_ns();
  const CURLcode rc = curl_easy_perform(curl);
  if (rc != CURLE_OK) r.error += curl_easy_strerror(rc);
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &r.status);
  curl_slist_free_all(headers);
  curl_easy_cleanup(curl);
  return r;
}

// ---- The live fleet: what the vehicles say ---------------------------------------------

std::string vss_update(const char* path, const std::string& value) {
  return std::string("{\"path\":\"") + path + "\",\"value\":" + value + "}";
}

// A parked car, plugged in and charging, nobody in it: eligible under an
// opted-in owner's default policy.
std::string parked_car_vss() {
  const std::pair<const char*, const char*> values[] = {
      {"Vehicle.Speed", "0"},
      {"Vehicle.Powertrain.Transmission.CurrentGear", "126"},
      {"Vehicle.Powertrain.TractionBattery.StateOfCharge.Current", "85"},
      {"Vehicle.Powertrain.TractionBattery.Charging.IsCharging", "true"},
      {"Vehicle.Powertrain.TractionBattery.Charging.IsChargingCableConnected", "true"},
      {"Vehicle.Powertrain.TractionBattery.Charging.Power", "7.4"},
      {"Vehicle.Cabin.Seat.Row1.DriverSide.IsOccupied", "false"},
      {kDoorPath, "false"},
      {"Vehicle.Exterior.AirTemperature", "18"},
      {"Vehicle.Idlefleet.Accelerator.Temperature", "40"},
  };
  std::string out = "{\"updates\":[";
  for (size_t i = 0; i < std::size(values); ++i) {
    if (i > 0) out += ',';
    out += vss_update(values[i].first, values[i].second);
  }
  return out + "]}";
}

// The job, attempt and token count of a chunk message, read without a full
// decode: the observer sees every token of every stream, on the same cores
// as the fleet it measures. Relies on encode_message's compact output.
bool peek_chunk(std::string_view text, std::string* job_id, uint32_t* attempt, size_t* tokens) {
  if (text.find("\"type\":\"chunk\"") == std::string_view::npos) return false;
  auto value_after = [&](std::string_view key) -> std::string_view {
    const size_t at = text.find(key);
    if (at == std::string_view::npos) return {};
    return text.substr(at + key.size());
  };
  const std::string_view job = value_after("\"job_id\":\"");
  const std::string_view att = value_after("\"attempt\":");
  const std::string_view ids = value_after("\"ids\":[");
  if (job.empty() || att.empty() || ids.empty()) return false;
  *job_id = std::string(job.substr(0, job.find('"')));
  *attempt = static_cast<uint32_t>(std::strtoul(std::string(att.substr(0, 12)).c_str(), nullptr, 10));
  const std::string_view list = ids.substr(0, ids.find(']'));
  *tokens = list.empty() ? 0 : static_cast<size_t>(std::count(list.begin(), list.end(), ',')) + 1;
  return true;
}

// One preemption this benchmark caused.
struct Preemption {
  std::string job_id, vehicle_id;
  uint32_t attempt = 0;
  int64_t signal_ns = 0;     // just before the door-open update was published
  int64_t preempted_ns = 0;  // the vehicle's "preempted" report arrived (0: it finished first)
  uint64_t total_tokens = 0; // tokens of the job when the engine stopped
  int64_t next_started_ns = 0;  // the next attempt's "started" arrived
};

// Watches every vehicle's messages (idlefleet.v1.up.*) and, while armed,
// opens the door of a vehicle a few tokens into its attempt.
class Observer {
 public:
  explicit Observer(transport::NatsClient* nats) : nats_(nats) {}

  void arm(size_t preemptions) {
    std::lock_guard<std::mutex> lock(mu_);
    wanted_ = preemptions;
    armed_ = true;
  }
  void disarm() {
    std::lock_guard<std::mutex> lock(mu_);
    armed_ = false;
  }
  size_t preempted() const {
    std::lock_guard<std::mutex> lock(mu_);
    return preempted_;
  }
  std::vector<Preemption> preemptions() const {
    std::lock_guard<std::mutex> lock(mu_);
    return records_;
  }
  size_t other_preemptions() const {
    std::lock_guard<std::mutex> lock(mu_);
    return other_preempted_;
  }
  // What was seen of a job's first attempt on NATS (times 0: not seen).
  struct Seen {
    int64_t assign_ns = 0, started_ns = 0, first_chunk_ns = 0, last_chunk_ns = 0;
    size_t tokens = 0;
  };
  Seen first_attempt(const std::string& job_id) const {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = attempts_.find({job_id, 1});
    if (it == attempts_.end()) return {};
    const Attempt& a = it->second;
    return {a.assign_ns, a.started_ns, a.first_chunk_ns, a.last_chunk_ns, a.tokens};
  }

  // The coordinator's messages to vehicles (idlefleet.v1.down.*): when each assign passed.
  void on_down(std::string_view data) {
    const int64_t t = now_ns();
    if (data.find("\"type\":\"assign\"") == std::string_view::npos) return;
    auto m = core::decode_message(data);
    if (!m) return;
    if (const auto* a = std::get_if<core::AssignMessage>(&*m)) {
      std::lock_guard<std::mutex> lock(mu_);
      attempts_[{a->job_id, a->attempt}].assign_ns = t;
    }
  }

  void on_message(std::string_view subject, std::string_view data) {
    const int64_t t = now_ns();
    const std::string vid(core::vehicle_of_up_subject(subject));
    if (vid.empty() || data.find("\"type\":\"state\"") != std::string_view::npos) return;
    std::string job_id;
    uint32_t attempt = 0;
    size_t tokens = 0;
    if (peek_chunk(data, &job_id, &attempt, &tokens)) {
      std::lock_guard<std::mutex> lock(mu_);
      Attempt& a = attempts_[{job_id, attempt}];
      if (a.first_chunk_ns == 0) a.first_chunk_ns = t;
      a.last_chunk_ns = t;
      a.tokens += tokens;
      // Vary how far into an attempt the door opens: 6 to 35 tokens.
      const size_t threshold = 6 + (triggered_ * 7) % 30;
      if (armed_ && !a.triggered && preempted_ + pending_ < wanted_ && a.tokens >= threshold) {
        a.triggered = true;
        ++triggered_;
        ++pending_;
        Preemption p;
        p.job_id = job_id;
        p.vehicle_id = vid;
        p.attempt = attempt;
        p.signal_ns = now_ns();
        records_.push_back(p);
        (void)nats_->publish(core::vss_subject(vid), vss_update(kDoorPath, "true"));
      }
      return;
    }
    auto m = core::decode_message(data);
    if (!m) return;
    std::lock_guard<std::mutex> lock(mu_);
    if (const auto* s = std::get_if<core::StartedMessage>(&*m)) {
      attempts_[{s->job_id, s->attempt}].started_ns = t;
      for (Preemption& p : records_) {
        if (p.job_id == s->job_id && p.attempt + 1 == s->attempt && p.next_started_ns == 0) p.next_started_ns = t;
      }
    } else if (const auto* p = std::get_if<core::PreemptedMessage>(&*m)) {
      Preemption* rec = find(p->job_id, p->attempt);
      if (rec == nullptr) {
        ++other_preempted_;
        return;
      }
      rec->preempted_ns = t;
      rec->total_tokens = p->total_tokens;
      ++preempted_;
      --pending_;
      // Safe at once: the coordinator has placed the job elsewhere before this
      // vehicle's next state report (sent after "preempted") says it is eligible.
      (void)nats_->publish(core::vss_subject(vid), vss_update(kDoorPath, "false"));
    } else if (const auto* d = std::get_if<core::DoneMessage>(&*m)) {
      if (find(d->job_id, d->attempt) != nullptr) {  // finished before the door opened it
        --pending_;
        (void)nats_->publish(core::vss_subject(vid), vss_update(kDoorPath, "false"));
      }
    } else if (const auto* f = std::get_if<core::FailedMessage>(&*m)) {
      if (find(f->job_id, f->attempt) != nullptr) {
        --pending_;
        (void)nats_->publish(core::vss_subject(vid), vss_update(kDoorPath, "false"));
      }
    }
  }

 private:
  struct Attempt {
    int64_t assign_ns = 0, started_ns = 0, first_chunk_ns = 0, last_chunk_ns = 0;
    size_t tokens = 0;
    bool triggered = false;
  };
  Preemption* find(const std::string& job_id, uint32_t attempt) {
    for (Preemption& p : records_) {
      if (p.job_id == job_id && p.attempt == attempt) return &p;
    }
    return nullptr;
  }

  transport::NatsClient* nats_;
  mutable std::mutex mu_;
  std::map<std::pair<std::string, uint32_t>, Attempt> attempts_;
  std::vector<Preemption> records_;
  bool armed_ = false;
  size_t wanted_ = 0, triggered_ = 0, preempted_ = 0, other_preempted_ = 0;
  size_t pending_ = 0;  // doors opened whose attempt has not ended yet
};

// ---- A NATS hop --------------------------------------------------------------------------

// One-way latency of one NATS hop (publish on one connection, a synchronous
// subscriber on another), with libnats' default write buffering or with
// natsOptions_SetSendAsap. With the default a publish waits for the
// connection's flusher thread, which gives more publishes up to 1 ms to
// accumulate before it writes; transport::NatsClient sets send-asap
// (NatsClientOptions::send_asap), which is why.
std::vector<double> nats_hop_ms(const std::string& url, bool send_asap, int samples) {
  std::vector<double> out;
  natsOptions* opts = nullptr;
  natsConnection *pub = nullptr, *sub = nullptr;
  natsSubscription* subscription = nullptr;
  const char* subject = "fleet-bench.hop";
  if (natsOptions_Create(&opts) != NATS_OK || natsOptions_SetURL(opts, url.c_str()) != NATS_OK ||
      natsOptions_SetSendAsap(opts, send_asap) != NATS_OK || natsConnection_Connect(&pub, opts) != NATS_OK ||
      natsConnection_ConnectTo(&sub, url.c_str()) != NATS_OK ||
      natsConnection_SubscribeSync(&subscription, sub, subject) != NATS_OK || natsConnection_Flush(sub) != NATS_OK) {
    die("NATS hop: cannot connect to " + url);
  }
  for (int i = 0; i < samples; ++i) {
    natsMsg* msg = nullptr;
    const int64_t t0 = now_ns();
    if (natsConnection_PublishString(pub, subject, "x") != NATS_OK ||
        natsSubscription_NextMsg(&msg, subscription, 1000) != NATS_OK) {
      die("NATS hop: no message");
    }
    out.push_back(ms_between(t0, now_ns()));
    natsMsg_Destroy(msg);
  }
  natsSubscription_Destroy(subscription);
  natsConnection_Destroy(sub);
  natsConnection_Destroy(pub);
  natsOptions_Destroy(opts);
  return out;
}

// ---- The live fleet ----------------------------------------------------------------------

struct LiveOptions {
  std::string model_path;
  std::string dir;
  int vehicles = 6;
  int streams = 2;
  size_t preemptions = 120;
  int requests = 10;  // for the local comparison
  int64_t chunk_us = agent::FleetOptions{}.chunk_us;
};

std::optional<json> status_of(const coordinator::CoordinatorServer& server) {
  const json j = json::parse(server.status_json(), nullptr, false);
  if (j.is_discarded() || !j.is_object()) return std::nullopt;
  return j;
}

template <class F>
bool eventually(F cond, int64_t timeout_ms) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  while (Clock::now() < deadline) {
    if (cond()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return cond();
}

void print_distribution(const char* what, const std::vector<double>& v, const char* unit) {
  std::printf("    %-58s n=%-4zu p50 %8.2f %s  p99 %8.2f %s  max %8.2f %s\n", what, v.size(), percentile(v, 0.5), unit,
              percentile(v, 0.99), unit, maximum(v), unit);
}

void bench_live(const LiveOptions& o) {
  std::printf("\n== Live fleet: nats-server + in-process CoordinatorServer + %d in-process agent::Fleets "
              "(VSS over NATS, 1 vehicle each), model %s\n",
              o.vehicles, o.model_path.c_str());
  transport::NatsServerOptions n;
  n.log_path = (fs::path(o.dir) / "nats.log").string();
  auto nats = transport::NatsServer::start(n);
  if (!nats) die("nats-server: " + nats.error().to_string());

  {
    const int samples = 200;
    const std::vector<double> buffered = nats_hop_ms((*nats)->url(), false, samples);
    const std::vector<double> asap = nats_hop_ms((*nats)->url(), true, samples);
    std::printf("    one NATS hop (publish -> subscriber, %d each): libnats default p50 %.3f "
                "ms p99 %.3f ms; with natsOptions_SetSendAsap (as transport::NatsClient) p50 %.3f ms p99 %.3f ms\n",
                samples, percentile(buffered, 0.5), percentile(buffered, 0.99), percentile(asap, 0.5),
                percentile(asap, 0.99));
  }

  coordinator::ServerOptions so;
  so.config.nats_url = (*nats)->url();
  so.config.http_port = 0;
  so.config.data_dir = (fs::path(o.dir) / "data").string();
  so.config.models = {{kModelId, o.model_path}};
  auto server = coordinator::CoordinatorServer::start(so);
  if (!server) die("coordinator: " + server.error().to_string());
  const std::string base_url = "http://127.0.0.1:" + std::to_string((*server)->http_port());

  // Every vehicle finds the model in its cache, as parked cars that served it before do.
  const std::string cache_dir = (fs::path(o.dir) / "cache").string();
  {
    auto catalog = agent::fetch_catalog(base_url);
    if (!catalog || catalog->empty()) die("catalog: " + (catalog ? std::string("empty") : catalog.error().to_string()));
    agent::ModelCache cache(cache_dir, uint64_t{1} << 30);
    if (auto p = cache.ensure(catalog->front()); !p) die("model cache: " + p.error().to_string());
  }

  auto model = engine::Model::load(o.model_path);
  if (!model) die("model: " + model.error().to_string());
  const engine::Model& m = **model;
  const engine::Tokenizer& tok = m.tokenizer();
  const int64_t context = std::min<int64_t>(m.config().context_length, engine::kDefaultContextLength);

  auto control = transport::NatsClient::connect({.url = (*nats)->url(), .name = "fleet-bench"});
  if (!control) die("NATS: " + control.error().to_string());
  Observer observer(control->get());

  std::vector<std::unique_ptr<agent::Fleet>> fleets;
  std::vector<std::string> vehicle_ids;
  for (int k = 0; k < o.vehicles; ++k) {
    agent::FleetOptions f;
    f.nats_url = (*nats)->url();
    f.coordinator_url = base_url;
    f.vehicles = 1;
    char prefix[16];
    std::snprintf(prefix, sizeof prefix, "car%02d", k + 1);
    f.id_prefix = prefix;
    f.source = agent::SignalSourceKind::kNats;
    f.policy.opted_in = true;
    f.cache_dir = cache_dir;
    f.sim_control = false;
    f.chunk_us = o.chunk_us;
    auto fleet = agent::Fleet::start(f);
    if (!fleet) die("agent: " + fleet.error().to_string());
    vehicle_ids.push_back(std::string(prefix) + "-01");
    fleets.push_back(std::move(*fleet));
  }
  const std::string parked = parked_car_vss();
  for (const std::string& id : vehicle_ids) (void)(*control)->publish(core::vss_subject(id), parked);
  (void)(*control)->flush();
  if (!eventually(
          [&] {
            auto s = status_of(**server);
            return s && s->value("/vehicles/available"_json_pointer, 0) == o.vehicles;
          },
          kVehiclesOnlineWaitMs)) {
    die("vehicles did not come online: " + (*server)->status_json());
  }
  // The VSS feed stays fresh while the benchmark runs.
  std::atomic<bool> stopping{false};
  std::thread keepalive([&] {
    int64_t next = now_ns() + kKeepaliveMs * 1'000'000;
    while (!stopping.load()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      if (now_ns() < next) continue;
      for (const std::string& id : vehicle_ids) {
        (void)(*control)->publish(core::vss_subject(id), vss_update("Vehicle.Exterior.AirTemperature", "18"));
      }
      next += kKeepaliveMs * 1'000'000;
    }
  });

  auto prompt_ids = [&](const std::string& prompt) {
    std::vector<int32_t> ids = tok.encode(prompt, tok.add_bos());
    if (ids.empty()) ids.push_back(tok.bos());
    return ids;
  };

  // Warm-up: every vehicle runs an attempt once (its agent loads the model,
  // its first engine thread starts), as a fleet that has been serving would.
  for (size_t round = 0; round < kWarmupRoundsMax; ++round) {
    bool all = true;
    for (const auto& f : fleets) all &= f->status().front().counters.attempts_started > 0;
    if (all) break;
    std::vector<std::thread> ts;
    for (int k = 0; k < o.vehicles; ++k) {
      ts.emplace_back([&, k] { (void)stream_completion(base_url, kPrompts[k % 8], 48, 7 + k); });
    }
    for (auto& t : ts) t.join();
  }

  // ---- 4. What the fleet path adds over a local run (quiet fleet, one request at a time).
  // The headline requests run without the benchmark's own NATS observer (it
  // would add two thread wake-ups per token on these cores); a few more run
  // with it, for where the first token's time goes.
  auto observe = [&] {
    auto up = (*control)->subscribe(core::kUpSubjectWildcard,
                                    [&](std::string_view s, std::string_view d) { observer.on_message(s, d); });
    if (!up) die("subscribe: " + up.error().to_string());
    auto down = (*control)->subscribe("idlefleet.v1.down.*",
                                      [&](std::string_view, std::string_view d) { observer.on_down(d); });
    if (!down) die("subscribe: " + down.error().to_string());
    if (auto st = (*control)->flush(); !st) die("flush: " + st.error().to_string());
    return std::pair<uint64_t, uint64_t>(*up, *down);
  };
  std::pair<uint64_t, uint64_t> subscriptions;
  {
    const int64_t max_tokens = 256;
    const int diagnosed = std::min(o.requests, 4);
    engine::ThreadPool pool(1);  // as an agent runs an attempt
    std::vector<double> local_ttft, fleet_ttft, local_tok, fleet_tok, ttft_added, tok_added_pct;
    std::vector<double> to_assign, assign_to_started, started_to_chunk, chunk_to_client, nats_tok;
    std::vector<double> events_per_request, tokens_per_request;
    int64_t local_cpu_ns = 0, fleet_cpu_ns = 0, nats_cpu_ns = 0, local_tokens = 0, fleet_tokens = 0;
    int identical = 0, compared = 0;
    for (int r = 0; r < o.requests + diagnosed; ++r) {
      const bool headline = r < o.requests;
      if (r == o.requests) subscriptions = observe();
      const std::string prompt = kPrompts[r % 8];
      const uint64_t seed = 1000 + static_cast<uint64_t>(r);
      // Local: a loaded model and a context, as `idlefleet run` has before its first token.
      engine::Context ctx(m, 0, &pool);
      engine::Generator gen(m, ctx);
      engine::SamplerParams sp;
      sp.temperature = 0.8f;
      sp.seed = seed;
      std::vector<int64_t> times;
      std::vector<std::string> pieces;  // each token's text
      engine::Detokenizer detok(tok);
      std::vector<int32_t> ids = prompt_ids(prompt);
      for (int32_t id : ids) (void)detok.push(id);
      std::string local_text;
      const int64_t cpu0 = thread_cpu_ns();
      const int64_t t0 = now_ns();
      if (auto st = gen.start(ids, sp, max_tokens, {tok.eos(), tok.bos()}); !st) die(st.error().to_string());
      for (;;) {
        auto next = gen.next();
        if (!next) die(next.error().to_string());
        if (*next < 0) break;
        times.push_back(now_ns());
        pieces.push_back(detok.push(*next));
        local_text += pieces.back();
      }
      local_text += detok.flush();
      const int64_t local_cpu = thread_cpu_ns() - cpu0;
      // The stop token is produced but has no text, so no event carries it to a client.
      if (gen.stop_reason() == engine::StopReason::kStopToken && !times.empty()) times.pop_back();
      const int64_t fleet_cpu0 = process_cpu_ns(), nats_cpu0 = other_process_cpu_ns((*nats)->pid());
      const StreamResult f = stream_completion(base_url, prompt, max_tokens, seed);
      const int64_t fleet_cpu = process_cpu_ns() - fleet_cpu0;
      const int64_t nats_cpu = other_process_cpu_ns((*nats)->pid()) - nats_cpu0;
      if (f.status != 200 || !f.done_marker || f.token_ns.size() < 2 || times.size() < 2) {
        std::printf("    request %d: status %ld, %zu tokens, error '%s' (skipped)\n", r, f.status, f.token_ns.size(),
                    f.error.c_str());
        continue;
      }
      if (headline) {
        ++compared;
        identical += f.text == local_text ? 1 : 0;
        const double lt = ms_between(t0, times.front());
        const double ft = ms_between(f.sent_ns, f.token_ns.front());
        // Time per output token after the first event, over the same tokens
        // on both sides. The agent sends a token made within --chunk-us of
        // its last message with the next ones, so an event may carry several
        // tokens; the first carries the first token alone, unless its text
        // was held back by the detokeniser.
        size_t k = 0;  // tokens in the first event
        for (std::string got; k < pieces.size() && got.size() < f.first_text.size();) got += pieces[k++];
        k = std::max<size_t>(k, 1);
        if (k + 1 >= times.size()) continue;
        const double span = static_cast<double>(times.size() - k);
        const double lp = ms_between(times[k - 1], times.back()) / span;
        const double fp = ms_between(f.token_ns.front(), f.token_ns.back()) / span;
        events_per_request.push_back(static_cast<double>(f.token_ns.size()));
        tokens_per_request.push_back(static_cast<double>(times.size()));
        local_ttft.push_back(lt);
        fleet_ttft.push_back(ft);
        local_tok.push_back(lp);
        fleet_tok.push_back(fp);
        ttft_added.push_back(ft - lt);
        tok_added_pct.push_back(100.0 * (fp / lp - 1.0));
        local_cpu_ns += local_cpu;
        local_tokens += static_cast<int64_t>(gen.state().produced_ids.size());
        fleet_cpu_ns += fleet_cpu;
        nats_cpu_ns += nats_cpu;
        fleet_tokens += std::max<int64_t>(f.completion_tokens, 0);
        continue;
      }
      const Observer::Seen seen = observer.first_attempt(f.job_id);
      if (seen.assign_ns != 0 && seen.started_ns != 0 && seen.first_chunk_ns != 0) {
        to_assign.push_back(ms_between(f.sent_ns, seen.assign_ns));
        assign_to_started.push_back(ms_between(seen.assign_ns, seen.started_ns));
        started_to_chunk.push_back(ms_between(seen.started_ns, seen.first_chunk_ns));
        chunk_to_client.push_back(ms_between(seen.first_chunk_ns, f.token_ns.front()));
      }
      if (seen.tokens > 1) {
        nats_tok.push_back(ms_between(seen.first_chunk_ns, seen.last_chunk_ns) / static_cast<double>(seen.tokens - 1));
      }
    }
    std::printf("\n== 4. Latency the fleet path adds over a local run (%d requests, one at a time, %lld tokens max, "
                "temperature 0.8, local and fleet alternated, agents' --chunk-us %lld; medians)\n",
                compared, static_cast<long long>(max_tokens), static_cast<long long>(o.chunk_us));
    std::printf("    local engine::Generator, 1 thread, model loaded + context made:  first token %7.3f ms, "
                "per token %7.4f ms\n",
                median(local_ttft), median(local_tok));
    std::printf("    fleet: HTTP -> coordinator -> NATS -> agent -> NATS -> SSE:      first token %7.3f ms, "
                "per token %7.4f ms\n",
                median(fleet_ttft), median(fleet_tok));
    std::printf("    added (median of per-request differences): first token %+.3f ms (target < %.0f ms: %s), "
                "per token %+.2f%% (target < %.0f%%: %s)\n",
                median(ttft_added), kFirstTokenAddedMsTarget, verdict(median(ttft_added) < kFirstTokenAddedMsTarget),
                median(tok_added_pct), kPerTokenAddedPctTarget,
                verdict(median(tok_added_pct) < kPerTokenAddedPctTarget));
    if (local_tokens > 0 && fleet_tokens > 0) {
      const double local_us = static_cast<double>(local_cpu_ns) / 1e3 / static_cast<double>(local_tokens);
      const double fleet_us = static_cast<double>(fleet_cpu_ns) / 1e3 / static_cast<double>(fleet_tokens);
      const double nats_us = static_cast<double>(nats_cpu_ns) / 1e3 / static_cast<double>(fleet_tokens);
      std::printf("    CPU per token: local engine %.1f us; fleet %.1f us in this process (engine, agent, coordinator, "
                  "client) + %.1f us in nats-server: the relay costs %.1f us of CPU per token, on %u cores\n",
                  local_us, fleet_us, nats_us, fleet_us + nats_us - local_us, std::thread::hardware_concurrency());
    }
    std::printf("    outputs identical to the local run: %d of %d; a request's %.0f tokens (median) reached the client "
                "in %.0f events\n",
                identical, compared, median(tokens_per_request), median(events_per_request));
    if (!to_assign.empty()) {
      std::printf("    where the first token goes (%zu more requests, watched on NATS; medians): request sent -> "
                  "assign %.3f ms (HTTP, coordinator, 1 hop); assign -> 'started' %.3f ms (agent, 1 hop); 'started' "
                  "-> first chunk %.3f ms (engine start, prefill, first token); first chunk -> client %.3f ms "
                  "(coordinator, SSE)\n",
                  to_assign.size(), median(to_assign), median(assign_to_started), median(started_to_chunk),
                  median(chunk_to_client));
      std::printf("    per token as the agent's chunks pass on NATS: %.4f ms\n", median(nats_tok));
    }
    std::fflush(stdout);
  }

  // ---- 2 and 3. Preemptions under load.
  // The agents' own figures count from here (warm-up and section 4 cancel nothing, but be exact).
  std::vector<size_t> agent_counts_before;
  for (const auto& f : fleets) agent_counts_before.push_back(f->preemption_latencies_ms().size());
  std::mutex results_mu;
  std::vector<StreamResult> results;
  std::atomic<bool> clients_stop{false};
  std::atomic<uint64_t> request_counter{0};
  observer.arm(o.preemptions);
  const int64_t phase_start = now_ns();
  std::vector<std::thread> clients;
  for (int c = 0; c < o.streams; ++c) {
    clients.emplace_back([&] {
      while (!clients_stop.load()) {
        const uint64_t k = request_counter++;
        const std::string prompt = kPrompts[k % 8];
        const int64_t max_tokens = context - static_cast<int64_t>(prompt_ids(prompt).size());
        StreamResult r = stream_completion(base_url, prompt, max_tokens, 5000 + k);
        std::lock_guard<std::mutex> lock(results_mu);
        results.push_back(std::move(r));
      }
    });
  }
  const bool enough = eventually([&] { return observer.preempted() >= o.preemptions; }, kPreemptionPhaseMsMax);
  observer.disarm();
  clients_stop.store(true);
  for (auto& t : clients) t.join();
  const double phase_s = static_cast<double>(now_ns() - phase_start) / 1e9;

  std::vector<double> agent_phase;  // every fleet's list only grows
  for (size_t k = 0; k < fleets.size(); ++k) {
    const std::vector<double> v = fleets[k]->preemption_latencies_ms();
    agent_phase.insert(agent_phase.end(), v.begin() + static_cast<std::ptrdiff_t>(agent_counts_before[k]), v.end());
  }
  std::vector<double> own_ms, gap_ms, resume_ms, replace_ms, restart_ms, resume_tokens;
  size_t finished_first = 0, gaps_by_index = 0, gaps_by_time = 0;
  std::map<std::string, const StreamResult*> by_job;
  size_t failed_requests = 0;
  for (const StreamResult& r : results) {
    if (r.status != 200 || !r.done_marker || !r.error.empty()) ++failed_requests;
    if (!r.job_id.empty()) by_job[r.job_id] = &r;
  }
  for (const Preemption& p : observer.preemptions()) {
    if (p.preempted_ns == 0) {
      ++finished_first;
      continue;
    }
    own_ms.push_back(ms_between(p.signal_ns, p.preempted_ns));
    resume_tokens.push_back(static_cast<double>(p.total_tokens));
    auto it = by_job.find(p.job_id);
    if (it == by_job.end()) continue;
    const StreamResult& r = *it->second;
    const auto& t = r.token_ns;
    // One token event per token (checked against the usage count; a final stop
    // token has no text and so no event): the gap is between the stopped
    // attempt's last token and the next attempt's first.
    const int64_t events = static_cast<int64_t>(t.size());
    const bool one_to_one =
        r.completion_tokens == events || (r.finish_reason == "stop" && r.completion_tokens == events + 1);
    if (one_to_one && p.total_tokens >= 1 && p.total_tokens < t.size()) {
      gap_ms.push_back(ms_between(t[p.total_tokens - 1], t[p.total_tokens]));
      resume_ms.push_back(ms_between(p.signal_ns, t[p.total_tokens]));
      if (p.next_started_ns != 0) {
        replace_ms.push_back(ms_between(p.preempted_ns, p.next_started_ns));
        restart_ms.push_back(ms_between(p.next_started_ns, t[p.total_tokens]));
      }
      ++gaps_by_index;
    } else if (p.next_started_ns != 0) {
      auto b = std::upper_bound(t.begin(), t.end(), p.next_started_ns);
      if (b != t.end() && b != t.begin()) {
        gap_ms.push_back(ms_between(*(b - 1), *b));
        resume_ms.push_back(ms_between(p.signal_ns, *b));
        replace_ms.push_back(ms_between(p.preempted_ns, p.next_started_ns));
        restart_ms.push_back(ms_between(p.next_started_ns, *b));
        ++gaps_by_time;
      }
    }
  }
  const auto st = status_of(**server);
  std::printf("\n== 2. Preemption latency (%zu preemptions in %.1f s, %d concurrent streams of up to ~%lld tokens, "
              "%zu requests, %zu failed)\n",
              own_ms.size(), phase_s, o.streams, static_cast<long long>(context), results.size(), failed_requests);
  print_distribution("agent (Fleet::preemption_latencies_ms): stop decided -> engine stopped", agent_phase, "ms");
  print_distribution("signal published -> vehicle's 'preempted' report received", own_ms, "ms");
  std::printf("    (ours includes two NATS publishes, the door-open and the report, each buffered up to 1 ms by "
              "libnats, and the agent's wait in its inbox, which the agent's figure leaves out)\n");
  std::printf("    target p99 < %.0f ms: %s (agent figure), %s (from the signal, report hop included)\n",
              kPreemptionP99MsTarget, verdict(percentile(agent_phase, 0.99) < kPreemptionP99MsTarget),
              verdict(percentile(own_ms, 0.99) < kPreemptionP99MsTarget));
  if (finished_first > 0 || !enough || observer.other_preemptions() > 0) {
    std::printf("    (%zu doors opened after the attempt had already finished; %zu other preemptions; %s)\n",
                finished_first, observer.other_preemptions(),
                enough ? "target count reached" : "stopped at the phase's time limit");
  }
  std::printf("\n== 3. Time until a preempted request streams again from another vehicle (client side, SSE)\n");
  print_distribution("gap: last token before -> first token after the preemption", gap_ms, "ms");
  print_distribution("door-open signal -> first token from the next vehicle", resume_ms, "ms");
  print_distribution("  of which 'preempted' report -> next vehicle's 'started'", replace_ms, "ms");
  print_distribution("  of which 'started' -> its first token at the client", restart_ms, "ms");
  std::printf("    (the next vehicle rebuilds the KV cache from the prompt and the tokens produced so far: p50 %.0f, "
              "max %.0f produced tokens at a preemption)\n",
              percentile(resume_tokens, 0.5), maximum(resume_tokens));
  std::printf("    target < %.0f ms: %s (p99 of the gap)   [%zu gaps by token index, %zu by time]\n", kResumeGapMsTarget,
              verdict(percentile(gap_ms, 0.99) < kResumeGapMsTarget), gaps_by_index, gaps_by_time);
  if (st) {
    std::printf("    coordinator: %llu preemptions, %llu attempts lost, %llu jobs done, %llu failed\n",
                static_cast<unsigned long long>(st->value("preemptions", 0ull)),
                static_cast<unsigned long long>(st->value("attempts_lost", 0ull)),
                static_cast<unsigned long long>(st->value("/jobs/done"_json_pointer, 0ull)),
                static_cast<unsigned long long>(st->value("/jobs/failed"_json_pointer, 0ull)));
  }
  std::fflush(stdout);

  stopping.store(true);
  keepalive.join();
  for (auto& f : fleets) f->stop();
  fleets.clear();
  (*control)->unsubscribe(subscriptions.first);
  (*control)->unsubscribe(subscriptions.second);
  control->reset();
  (*server)->stop();
  (*nats)->stop();
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false, capacity = true, live_fleet = true;
  std::string model_path;
  int runs = -1, fleet_vehicles = 6, streams = 2, requests = -1;
  long long vehicles = 100'000, placements = -1, preemptions = -1;
  int64_t chunk_us = agent::FleetOptions{}.chunk_us;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) die(a + " needs a value");
      return argv[++i];
    };
    if (a == "--quick") quick = true;
    else if (a == "--capacity-only") live_fleet = false;
    else if (a == "--live-only") capacity = false;
    else if (a == "--model") model_path = value();
    else if (a == "--runs") runs = std::stoi(value());
    else if (a == "--vehicles") vehicles = std::stoll(value());
    else if (a == "--placements") placements = std::stoll(value());
    else if (a == "--fleet-vehicles") fleet_vehicles = std::stoi(value());
    else if (a == "--streams") streams = std::stoi(value());
    else if (a == "--preemptions") preemptions = std::stoll(value());
    else if (a == "--requests") requests = std::stoi(value());
    else if (a == "--chunk-us") chunk_us = std::stoll(value());
    else {
      std::fprintf(stderr,
                   "usage: fleet_bench [--quick] [--capacity-only | --live-only] [--model PATH] [--runs N]\n"
                   "                   [--vehicles N] [--placements N] [--fleet-vehicles N] [--streams N]\n"
                   "                   [--preemptions N] [--requests N] [--chunk-us N]\n");
      return 2;
    }
  }
  if (runs < 0) runs = quick ? 2 : 5;
  if (placements < 0) placements = quick ? 40'000 : 100'000;
  if (preemptions < 0) preemptions = quick ? 30 : 200;
  if (requests < 0) requests = quick ? 4 : 16;
  if (runs < 1 || vehicles < static_cast<long long>(kInFlightJobs) * 2 || vehicles > (1 << 22) || placements < 1 ||
      fleet_vehicles < 2 || fleet_vehicles > 64 || streams < 1 || streams >= fleet_vehicles || preemptions < 1 ||
      requests < 1 || chunk_us < 0 || chunk_us > agent::kChunkUsMax) {
    die("--runs, --placements, --preemptions and --requests must be positive, --vehicles 2000..4194304, "
        "--fleet-vehicles 2..64 and above --streams, --chunk-us 0..100000");
  }

  std::printf("fleet_bench: %s, %u cores, %s, load average %s%s\n", cpu_model().c_str(),
              std::thread::hardware_concurrency(), utc_date().c_str(), load_average().c_str(),
              quick ? " (--quick)" : "");
  if (capacity) bench_capacity(static_cast<size_t>(vehicles), static_cast<size_t>(placements), quick ? 1.0 : 2.0, runs);
  if (!live_fleet) return 0;

  LiveOptions live;
  live.vehicles = fleet_vehicles;
  live.streams = streams;
  live.preemptions = static_cast<size_t>(preemptions);
  live.requests = requests;
  live.chunk_us = chunk_us;
  live.dir = (fs::temp_directory_path() / ("fleet_bench_" + std::to_string(::getpid()))).string();
  fs::remove_all(live.dir);
  fs::create_directories(live.dir);
  if (model_path.empty()) {
    const fs::path shared = fs::path(IDLEFLEET_SOURCE_DIR) / ".." / "shared" / "models";
    model_path = (fs::path(live.dir) / "stories260K.gguf").string();
    if (auto st = engine::convert_llama2c((shared / "stories260K.bin").string(), (shared / "tok512.bin").string(),
                                          model_path);
        !st) {
      die("converting " + (shared / "stories260K.bin").string() + ": " + st.error().to_string() +
          " (or give --model PATH)");
    }
  }
  live.model_path = model_path;
  bench_live(live);
  std::printf("\nload average at the end: %s\n", load_average().c_str());
  fs::remove_all(live.dir);
  return 0;
}
