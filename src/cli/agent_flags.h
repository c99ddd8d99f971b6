// The agent's flags, shared by `idlefleet agent` and `idlefleet demo` (which
// runs an agent in-process).
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "agent/fleet.h"

namespace idlefleet::cli {

struct AgentFlags {
  std::string nats_url = "nats://127.0.0.1:4222";
  std::string coordinator_url = "http://127.0.0.1:8080";
  int vehicles = 1;
  std::string id_prefix = "car";
  uint64_t seed = 1;
  double plug_in_probability = 0.8;
  double day_minutes = 0;   // 0: real time
  double time_scale = 0;    // 0: from day_minutes
  std::string start;        // HH:MM
  int utc_offset_minutes = 0;
  std::string replay;
  bool vss_nats = false;
  bool opt_in = false;
  double soc_floor_pct = 30.0;
  double target_soc_pct = 80.0;
  double temp_limit_c = 85.0;
  std::string cache_dir = "idlefleet-cache";
  std::string key_dir;  // "": <cache_dir>/keys
  uint64_t cache_mb = 16384;
  int64_t chunk_us = 5000;
  bool verbose = false;
  int status_every_s = 10;
  bool test_tamper_outputs = false;  // TEST ONLY (`idlefleet agent`): needs IDLEFLEET_TESTING=1
  // The load generator (`idlefleet agent`): shared NATS connections, the
  // fake engine, and a slower tick for a hundred thousand simulated cars.
  int nats_connections = 0;
  bool fake_engine = false;
  double fake_tokens_per_second = 20.0;
  int64_t tick_ms = 10;
  int64_t heartbeat_ms = 2000;
};

void add_agent_flags(CLI::App* cmd, AgentFlags* flags);
// Validated fleet options from the flags; throws CommandError.
agent::FleetOptions fleet_options(const AgentFlags& flags);
// "3 charging, 2 driving, 7 eligible"
std::string fleet_summary(const std::vector<agent::VehicleStatus>& vehicles);

}  // namespace idlefleet::cli
