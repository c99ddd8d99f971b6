// A fleet scenario for `idlefleet sim --scenario FILE`: who the cars are, what
// they carry, how their owners limit them, what electricity costs, and what
// clients ask for. Read from TOML (parse_scenario); every key is checked, and
// an error names the key and the line (issue #6, acceptance D).
//
// Shares are fractions in [0, 1]; a list of classes (computers, chargers,
// tariffs, policies) has shares that sum to 1 (within 1e-6). Powers in kW,
// energies in kWh, money in micro-units of one currency, times local.
//
// The file format, with every key and its default, is in docs/simulator.md;
// scenarios/ holds the shipped ones.
//
// Thread-safety: plain values.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "core/policy.h"
#include "core/time.h"

namespace idlefleet::sim {

// Bounds, so a scenario is bounded like any other input.
inline constexpr uint64_t kScenarioVehiclesMax = 1'000'000'000;  // a billion: ten times the claim
inline constexpr int kScenarioDaysMax = 366;
inline constexpr size_t kScenarioClassesMax = 32;   // entries of any class list
inline constexpr size_t kScenarioModelsMax = 16;
inline constexpr size_t kScenarioNameBytesMax = 64;
inline constexpr size_t kScenarioTextBytesMax = 4096;
inline constexpr size_t kScenarioFileBytesMax = 1 << 20;
// Daily "HH:MM-HH:MM" windows per policy: each becomes up to two weekly
// windows a day, so 4 fit core::kAllowedWindowsMax (7 * 2 * 4 = 56 <= 64).
inline constexpr size_t kScenarioAllowedHoursMax = 4;
// The first simulated day lies in [2000-01-01, 2100-01-01).
inline constexpr int64_t kScenarioStartYearMin = 2000;
inline constexpr int64_t kScenarioStartYearMax = 2099;

// A model clients ask for. Its size decides which computers can hold it and
// how long a download takes.
struct ScenarioModel {
  std::string name;                 // [A-Za-z0-9._-]+, unique
  double memory_gib = 5.0;          // resident weights + KV cache, (0, 1024]
  double download_gib = 4.5;        // the file a car fetches once, (0, 1024]
  double demand_share = 1.0;        // of all tokens asked for; shares sum to 1
  uint64_t prompt_tokens = 500;     // a typical job, [1, 1e6]
  uint64_t completion_tokens = 500; // [1, 1e6]
};

// A class of onboard computer, with the assumptions stated.
struct ScenarioComputer {
  std::string name;                 // unique
  double share = 1.0;               // of the fleet
  double power_kw = 1.0;            // while serving, car kept awake included, (0, 10]
  double memory_gib = 64.0;         // usable for inference, (0, 1024]
  // Decode tokens per second for each model it can hold (a model not listed,
  // or larger than memory_gib, is not served by this class). Names refer to
  // [[models]]; values in (0, 1e6].
  std::vector<std::pair<std::string, double>> tokens_per_second;
  // Prefill is this many times faster than decode, [1, 1e4].
  double prefill_speedup = 20.0;
};

// A home charger class (cars without a home charger charge elsewhere: they
// are never plugged in while parked at home).
struct ScenarioCharger {
  double power_kw = 7.4;            // (0, 1000]
  double share = 1.0;               // of the cars that charge at home
};

struct ScenarioTariff {
  std::string name;
  double share = 1.0;               // of owners
  core::Tariff tariff;              // flat, or time of use (weekday/weekend entries)
};

// A kind of owner: the policy they set, and how many are like them.
struct ScenarioPolicy {
  std::string name;
  double share = 1.0;               // of the fleet; opted out owners are a policy too
  // Departures are the car's own (the simulator declares them); the tariff
  // is drawn from [[tariffs]]; allowed hours come from "HH:MM-HH:MM" daily
  // windows (allowed_hours), repeated on every day of the week.
  core::OwnerPolicy policy;
  bool declares_departures = true;
};

struct ScenarioFleet {
  uint64_t vehicles = 100'000;      // [1, kScenarioVehiclesMax]; --vehicles overrides
  double battery_kwh = 75.0;        // mean; each car draws +-20%, (0, 500]
  double home_charging_share = 0.6; // cars that can charge at home
  double plug_in_probability = 0.8; // a car with a charger, arriving home
  double trip_energy_kwh = 6.0;     // mean per one-way trip, (0, 100]
  double ambient_c = 15.0;          // [-50, 60]
  // Local time zone of the whole fleet (one region per scenario).
  int utc_offset_minutes = 0;
};

// Demand: an interactive daily curve and a batch backlog.
struct ScenarioDemand {
  // Interactive output tokens per second asked for fleet-wide at the curve's
  // peak; 24 hourly multipliers in [0, 1] (local hour 0 first; max 1).
  double interactive_peak_tokens_per_second = 1e6;
  std::vector<double> interactive_hourly = std::vector<double>(24, 1.0);
  // Batch: output tokens waiting at the start of each local day (taken by
  // whatever capacity interactive work leaves).
  double batch_tokens_per_day = 0.0;
  // An interactive request still waiting this long is dropped (counted).
  core::DurationMs interactive_timeout_ms = 30 * core::kSecondMs;
};

// Model downloads: what the network lets cars fetch.
struct ScenarioNetwork {
  double per_vehicle_mbps = 50.0;   // home Wi-Fi or cellular, (0, 1e5]
  double total_gbps = 1000.0;       // the CDN's egress for the whole fleet, (0, 1e7]
  double cached_share_at_start = 0.5;  // cars that already hold each model at the start
};

// What clients pay, and the owners' share (as the coordinator's [pricing]
// and [ledger]).
struct ScenarioPricing {
  uint64_t input_micros_per_mtok = 200'000;
  uint64_t output_micros_per_mtok = 600'000;
  uint64_t owner_share_ppm = 600'000;
  uint64_t wear_micros_per_accelerator_hour = 50'000;
};

struct Scenario {
  std::string name;                 // unique in scenarios/, shown in the report
  std::string description;          // <= kScenarioTextBytesMax
  uint64_t seed = 1;                // --seed overrides
  int days = 7;                     // [1, kScenarioDaysMax]; --days overrides
  // Local midnight of the first day in the fleet's zone: start = "YYYY-MM-DD"
  // (default 2026-11-01, a Sunday), less fleet.utc_offset_minutes.
  core::TimeMs start_ms = 1793491200000;
  ScenarioFleet fleet;
  std::vector<ScenarioModel> models;
  std::vector<ScenarioComputer> computers;
  std::vector<ScenarioCharger> chargers;
  std::vector<ScenarioTariff> tariffs;
  std::vector<ScenarioPolicy> policies;
  ScenarioDemand demand;
  ScenarioNetwork network;
  ScenarioPricing pricing;

  // Every number in range, names unique and referred to, shares summing to
  // 1; the error names the key ("computers[1].tokens_per_second.llama-8b").
  Status validate() const;
};

// Parses a scenario file's text; `source` names it in errors. Unknown keys,
// wrong types, values out of range and shares that do not sum to 1 are
// refused with the key and the line: "us-suburban.toml:12: fleet.home_charging_share:
// 1.3 is above 1 (a share)".
Result<Scenario> parse_scenario(std::string_view text, std::string_view source);

// Reads and parses a file (at most kScenarioFileBytesMax bytes).
Result<Scenario> load_scenario(const std::string& path);

}  // namespace idlefleet::sim
