// The agent process: one vehicle, or (for tests and demos) many simulated
// vehicles, each with its own identity, NATS connection, state machine
// (core::AgentMachine) and engine slot, sharing loaded model weights.
//
// The shell turns I/O into events and effects into I/O; it decides nothing:
//   - signal sources: a built-in simulated vehicle (SimVehicle, on a clock
//     that may run faster than real time), a JSONL replay file, or VSS
//     updates published on NATS by a vehicle gateway (idlefleet.v1.vss.<id>,
//     JSON {"path": "...", "value": ...} or {"updates": [...]});
//   - messages from the coordinator on idlefleet.v1.down.<id>; a `policy`
//     message is written to the vehicle's policy file before the machine
//     gets it as a PolicyEvent;
//   - the engine: an attempt runs on its own thread, which checks a stop flag
//     before every token, so a preemption takes at most one token's time
//     after the machine decides;
//   - a timer: every tick_ms the sources advance and the machines tick.
//
// Clocks: the machines, the policy and the simulated cars run on simulated
// time (sim_start + elapsed x time_scale). Times sent to the coordinator are
// converted back to wall-clock time, because leases and placement run on the
// coordinator's clock.
//
// Thread-safety: start() and stop() from one thread; status() and
// driver_returns() from any thread.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "agent/model_cache.h"
#include "agent/replay.h"
#include "agent/sim_vehicle.h"
#include "common/log_limiter.h"
#include "common/result.h"
#include "core/agent_machine.h"
#include "transport/nats_client.h"

namespace idlefleet::agent {

inline constexpr int kFleetVehiclesMax = 100'000;
inline constexpr size_t kVssMessageBytesMax = 64u << 10;
inline constexpr size_t kSimCommandBytesMax = 1024;
inline constexpr int kEngineNice = 5;  // engine threads yield to the control path (fleet.cc)
inline constexpr size_t kInboxEventsMax = 1u << 20;
inline constexpr int64_t kChunkUsMax = 1'000'000;  // FleetOptions::chunk_us: a second (at scale, 250 ms: docs/operations.md)
inline constexpr int kFleetConnectionsMax = 1024;  // FleetOptions::nats_connections

enum class SignalSourceKind { kSimulated, kReplay, kNats };

// Bounds of FleetSimCar::paced_tokens_per_second and prefill_speedup.
inline constexpr double kPacedTokensPerSecondMax = 1e6;
inline constexpr double kPrefillSpeedupMax = 1e4;

// A simulated car given whole, instead of the defaults FleetOptions draws:
// the car, its owner's policy, and how fast its computer works. The live
// fleet drives the simulator's own cars this way (`idlefleet sim live`).
struct FleetSimCar {
  SimVehicleParams car;
  // The owner's policy until the owner sets one through the coordinator, as
  // it is (an empty departure list stays empty: nothing declared).
  core::OwnerPolicy policy;
  // Simulated decode tokens per second; the engine waits so that it makes
  // none faster (in simulated time). 0: as fast as the engine runs.
  double paced_tokens_per_second = 0.0;
  // With pacing, the prompt (and any tokens being resumed) takes
  // tokens / (paced_tokens_per_second x prefill_speedup) simulated seconds
  // before the first new token. [1, kPrefillSpeedupMax].
  double prefill_speedup = 1.0;
};

struct FleetOptions {
  std::string nats_url = "nats://127.0.0.1:4222";
  std::string coordinator_url = "http://127.0.0.1:8080";  // the model catalog
  int vehicles = 1;
  std::string id_prefix = "car";          // vehicles are <prefix>-01, <prefix>-02, ...
  SignalSourceKind source = SignalSourceKind::kSimulated;
  std::string replay_path;                // for kReplay
  uint64_t seed = 1;
  // Simulated cars: how often a driver arriving home plugs in (and whether
  // the car starts plugged in), 0..1 (SimVehicleParams::plug_in_probability).
  double plug_in_probability = 0.8;
  double time_scale = 1.0;                // simulated seconds per wall second (1 .. 100000)
  core::TimeMs sim_start = 0;             // 0: the wall clock at start
  int utc_offset_minutes = 0;
  // Every vehicle's owner policy until its owner sets one through the
  // coordinator: that one (kept in <key_dir>/<id>.policy.json,
  // agent/policy_file.h) wins, at start too.
  core::OwnerPolicy policy;
  std::string cache_dir = "idlefleet-cache";
  // Each vehicle's Ed25519 key, <key_dir>/<vehicle id>.key, made on first
  // start (common/identity.h). "": <cache_dir>/keys. It signs receipts and
  // is the vehicle's NATS user (an NKey) on a server with permissions.
  std::string key_dir;
  uint64_t cache_bytes_max = uint64_t{16} << 30;
  int64_t tick_ms = 10;                   // wall
  int64_t heartbeat_ms = 2000;            // wall
  // Tokens go to the coordinator as they come, except that a token made less
  // than chunk_us after the last chunk was sent waits to travel with the next
  // ones (and none waits past the attempt's end). 0: one message per token.
  // A token waits at most about twice this; on a model that makes a token
  // every few milliseconds nothing waits at all.
  int64_t chunk_us = 5000;
  // Simulated cars given whole: empty, or exactly `vehicles` entries (the
  // seed, plug-in probability and policy above then do not apply to them).
  std::vector<FleetSimCar> sim_cars;
  bool sim_control = true;                // accept idlefleet.v1.sim.<id> commands (simulated cars only)
  // NATS connections: 0 gives each vehicle its own, as a real car has; N
  // shares N connections among the vehicles, round-robin (a load generator:
  // a hundred thousand vehicles in one process). A shared connection carries
  // no vehicle's identity, so it needs a server without per-vehicle
  // authorisation. 0 .. min(vehicles, kFleetConnectionsMax).
  int nats_connections = 0;
  // LOAD GENERATION ONLY (bench/replica_load.sh): no model is loaded or
  // downloaded. An attempt makes tokens from a hash of (job, position) at
  // fake_tokens_per_second (simulated), every catalog model counts as cached,
  // and each vehicle's key is derived from the seed in memory rather than
  // kept on disk. Everything else (policy, signals, protocol, receipts) is
  // the real agent's, so the coordinator sees a real fleet's traffic.
  bool fake_engine = false;
  double fake_tokens_per_second = 20.0;  // (0, kPacedTokensPerSecondMax]
  std::string instance;                   // "" = random per start
  // TEST ONLY: every vehicle reports the first token of each generation
  // attempt altered (and signs receipts for what it reported), as a cheat
  // would, so that only re-execution can catch it. For the verification
  // tests (docs/operations.md); `idlefleet agent` refuses it unless
  // IDLEFLEET_TESTING=1.
  bool test_tamper_outputs = false;
  bool verbose = false;                   // log every refusal and preemption to stderr

  Status validate() const;
};

struct VehicleStatus {
  std::string id;
  std::string state;
  bool eligible = false;
  std::string reasons;
  double soc_pct = 0.0;
  double accelerator_temp_c = 0.0;
  std::string job_id;
  core::AgentCounters counters;
};

class Fleet {
 public:
  static Result<std::unique_ptr<Fleet>> start(FleetOptions options);
  ~Fleet();
  void stop();

  std::vector<VehicleStatus> status() const;
  // The simulated driver of vehicle `index` comes back now.
  void driver_returns(size_t index);
  // Preemption latencies so far: from the signal reaching the agent to the
  // engine having stopped, in ms.
  std::vector<double> preemption_latencies_ms() const;
  size_t size() const { return vehicles_.size(); }
  // Messages from the fabric that were not valid protocol messages.
  uint64_t refused_messages() const { return refused_messages_.load(); }
  // The simulated clock now.
  core::TimeMs sim_now() const;

 private:
  struct Vehicle;
  // What the loop thread processes, in arrival order.
  struct InboxItem {
    enum class Kind { kEvent, kSignal, kDriverReturns };
    size_t index = 0;
    Kind kind = Kind::kEvent;
    core::AgentEvent event;
    std::string path, value;  // kSignal
    int64_t received_ns = 0;   // when it was posted (steady clock)
  };

  explicit Fleet(FleetOptions options);
  Status init();
  void loop();
  void coalesce_tokens(std::deque<InboxItem>* items);
  void post(InboxItem item);
  // post() of an event of vehicle `index` (the engine threads' events).
  void post_event_of(size_t index, core::AgentEvent event);
  void handle(size_t index, const core::AgentEvent& event);
  void run_effects(size_t index, std::vector<core::AgentEffect> effects);
  void start_engine(size_t index, const core::AssignMessage& assign);
  void engine_main(size_t index, core::AssignMessage assign, std::shared_ptr<std::atomic<bool>> stop);
  // The rest of engine_main for a kind "embed" attempt, once the model and
  // the vehicle's context are ready.
  void embed_attempt(size_t index, const core::AssignMessage& assign, const std::atomic<bool>& stop);
  void on_vss(size_t index, std::string_view data);
  void on_sim(size_t index, std::string_view data);
  // Counts and logs (at a bounded rate) input from the fabric that we refuse.
  void refuse(const char* what, const std::string& text);
  void advance_sources(core::TimeMs sim_now);
  // Records how long the engine took to stop since stop_origin_ns.
  void record_stop_latency(const Vehicle& v);
  // engine_main for FleetOptions::fake_engine.
  void fake_attempt(size_t index, const core::AssignMessage& assign, const std::atomic<bool>& stop);
  Result<CatalogEntry> catalog_entry(const std::string& model_id);
  std::vector<std::string> cached_model_ids();
  core::TimeMs to_wall(core::TimeMs sim) const;

  FleetOptions options_;
  core::TimeMs sim_start_ = 0;
  core::TimeMs wall_start_ = 0;
  int64_t steady_start_ns_ = 0;
  core::DeparturePrior prior_;
  ModelCache cache_;
  ModelPool models_;
  std::mutex catalog_mu_;
  std::vector<CatalogEntry> catalog_;

  std::vector<std::unique_ptr<Vehicle>> vehicles_;
  // The NATS connections: one per vehicle, or FleetOptions::nats_connections
  // shared (vehicle i rides connection i mod their number).
  std::vector<std::unique_ptr<transport::NatsClient>> connections_;
  mutable std::mutex mu_;  // inbox, status snapshots, latencies
  std::condition_variable cv_;
  std::deque<InboxItem> inbox_;
  std::vector<double> latencies_ms_;
  int64_t origin_ns_ = 0;
  LogLimiter log_limiter_;       // loop thread
  LogLimiter nats_log_limiter_;  // NATS threads, under mu_
  std::atomic<uint64_t> refused_messages_{0};  // loop thread: when the input being handled arrived
  std::atomic<bool> stopping_{false};
  std::thread loop_thread_;
};

}  // namespace idlefleet::agent
