// sim_bench: the fleet-scale simulation's speed and memory (issue #6,
// acceptance A: 100 million vehicles for one simulated day in at most 10
// minutes and 16 GiB on the 2-core machine). Runs a built-in US-suburban-like
// scenario (below; the shipped TOML scenarios are read by `idlefleet sim`)
// and prints vehicles x days per second, the wall and CPU time and the peak
// resident memory, with a progress line and an ETA on stderr.
//
//   build/release/bin/sim_bench --vehicles 1000000 --days 1 [--threads 2] [--seed 1] [--csv out.csv]
#include <sys/resource.h>
#include <time.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cerrno>
#include <algorithm>
#include <fstream>
#include <string>

#include "core/energy.h"
#include "sim/fleet_scale.h"

namespace {

using namespace idlefleet;
using namespace idlefleet::sim;

// Two computer classes as in the data README (an HW4/Orin-class board at
// 0.3 kW and a next-generation 1 kW class), Level 2 and Level 1 chargers, a
// flat and a time-of-use tariff (US average 16 cents/kWh; more 16:00-21:00),
// half the owners opted in with the defaults, a fifth careful, the rest out.
Scenario bench_scenario() {
  Scenario s;
  s.name = "bench-us-suburban";
  s.fleet.utc_offset_minutes = -300;
  ScenarioModel m;
  m.name = "llama-8b";
  s.models.push_back(m);
  ScenarioComputer current;
  current.name = "current";
  current.share = 0.7;
  current.power_kw = 0.3;
  current.memory_gib = 16.0;
  current.tokens_per_second = {{"llama-8b", 20.0}};
  ScenarioComputer next = current;
  next.name = "next";
  next.share = 0.3;
  next.power_kw = 1.0;
  next.memory_gib = 128.0;
  next.tokens_per_second = {{"llama-8b", 150.0}};
  s.computers = {current, next};
  s.chargers = {ScenarioCharger{7.4, 0.8}, ScenarioCharger{core::kHomeLevel1ChargerKw, 0.2}};
  ScenarioTariff flat;
  flat.name = "flat";
  flat.share = 0.6;
  flat.tariff = core::Tariff::flat(160'000);
  ScenarioTariff tou;
  tou.name = "tou";
  tou.share = 0.4;
  tou.tariff = core::Tariff::time_of_use({{0, 120'000}, {16 * 60, 450'000}, {21 * 60, 120'000}}, {{0, 150'000}});
  s.tariffs = {flat, tou};
  ScenarioPolicy defaults;
  defaults.name = "defaults";
  defaults.share = 0.5;
  defaults.policy.opted_in = true;
  ScenarioPolicy careful = defaults;
  careful.name = "careful";
  careful.share = 0.2;
  careful.policy.soc_floor_pct = 50.0;
  careful.policy.departure_margin_ms = core::kHourMs;
  careful.policy.price_cap_micros_per_kwh = 200'000;
  ScenarioPolicy out;
  out.name = "opted-out";
  out.share = 0.3;
  s.policies = {defaults, careful, out};
  s.demand.interactive_peak_tokens_per_second = 2e9;
  s.demand.interactive_hourly = {0.2, 0.15, 0.1, 0.1, 0.1, 0.15, 0.3, 0.5, 0.7, 0.85, 0.95, 1.0,
                                 1.0, 1.0, 0.95, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.6, 0.45, 0.3};
  s.demand.batch_tokens_per_day = 5e13;
  return s;
}

double cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

bool parse_u64(const char* text, uint64_t* out) {
  char* end = nullptr;
  errno = 0;
  const unsigned long long v = std::strtoull(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || text[0] == '-') return false;
  *out = v;
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  uint64_t vehicles = 1'000'000;
  uint64_t days = 1;
  uint64_t threads = 2;
  uint64_t seed = 1;
  std::string csv;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (i + 1 >= argc) {
      std::fprintf(stderr, "sim_bench: %s needs a value\n", flag.c_str());
      return 2;
    }
    const char* value = argv[++i];
    bool ok = true;
    if (flag == "--vehicles") {
      ok = parse_u64(value, &vehicles);
    } else if (flag == "--days") {
      ok = parse_u64(value, &days) && days <= static_cast<uint64_t>(kScenarioDaysMax);
    } else if (flag == "--threads") {
      ok = parse_u64(value, &threads) && threads <= static_cast<uint64_t>(kFleetThreadsMax);
    } else if (flag == "--seed") {
      ok = parse_u64(value, &seed);
    } else if (flag == "--csv") {
      csv = value;
    } else {
      std::fprintf(stderr, "sim_bench: unknown flag %s\n", flag.c_str());
      return 2;
    }
    if (!ok) {
      std::fprintf(stderr, "sim_bench: bad value for %s: %s\n", flag.c_str(), value);
      return 2;
    }
  }

  const Scenario scenario = bench_scenario();
  FleetScaleOptions options;
  options.vehicles = vehicles;
  options.days = static_cast<int>(days);
  options.threads = static_cast<int>(threads);
  options.seed = seed;
  const auto wall_start = std::chrono::steady_clock::now();
  auto elapsed = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - wall_start).count();
  };
  options.progress = [&](double fraction) {
    const double t = elapsed();
    std::fprintf(stderr, "\r%5.1f%%  %6.0f s elapsed, ETA %6.0f s ", 100.0 * fraction, t,
                 fraction > 0 ? t / fraction - t : 0.0);
  };
  const double cpu_start = cpu_seconds();
  auto result = run_fleet_scale(scenario, options);
  const double wall = elapsed();
  const double cpu = cpu_seconds() - cpu_start;
  std::fprintf(stderr, "\n");
  if (!result) {
    std::fprintf(stderr, "sim_bench: %s\n", result.error().to_string().c_str());
    return 1;
  }
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  double peak_gw = 0.0;
  double tokens = 0.0;
  double energy = 0.0;
  for (const FleetBin& b : result->bins) {
    peak_gw = std::max(peak_gw, b.compute_available_gw);
    tokens += (b.interactive_tps + b.batch_tps) * result->bin_minutes * 60.0;
    energy += b.energy_kwh;
  }
  std::printf("vehicles %llu  days %llu  threads %llu  seed %llu\n", static_cast<unsigned long long>(vehicles),
              static_cast<unsigned long long>(days), static_cast<unsigned long long>(threads),
              static_cast<unsigned long long>(seed));
  std::printf("wall %.1f s  cpu %.1f s  vehicle-days/s %.3g  peak RSS %.1f MiB\n", wall, cpu,
              static_cast<double>(vehicles * days) / wall, static_cast<double>(usage.ru_maxrss) / 1024.0);
  std::printf("peak compute available %.2f GW  tokens delivered %.4g  serving energy %.4g kWh\n", peak_gw, tokens,
              energy);
  std::printf("owner earnings a month: p10 %.2f  p50 %.2f  p90 %.2f  mean %.2f\n", result->earnings_month_p10,
              result->earnings_month_p50, result->earnings_month_p90, result->earnings_month_mean);
  if (!csv.empty()) {
    std::ofstream out(csv);
    if (const Status st = write_timeseries_csv(*result, out); !st || !out) {
      std::fprintf(stderr, "sim_bench: cannot write %s\n", csv.c_str());
      return 1;
    }
  }
  return 0;
}
