// `idlefleet sim --scenario FILE --out DIR`: a whole fleet in virtual time
// (sim/fleet_scale.h, the fleet-scale fidelity), from a scenario file
// (sim/scenario.h; the format is in docs/simulator.md). Writes the time series
// as DIR/timeseries.csv, the totals as DIR/summary.json (sim/summary.h) and a
// self-contained HTML report as DIR/report.html (sim/report.h; with the
// sensitivity runs of sim/sensitivity.h unless --no-sensitivity), prints the
// totals, and shows a progress bar with an ETA on stderr while it runs.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "sim/fleet_scale.h"
#include "sim/report.h"
#include "sim/scenario.h"
#include "sim/sensitivity.h"
#include "sim/summary.h"

namespace idlefleet::cli {

namespace {

using nlohmann::json;
namespace fs = std::filesystem;

struct SimScenarioFlags {
  std::string scenario;
  std::optional<uint64_t> vehicles;
  std::optional<int> days;
  std::optional<uint64_t> seed;
  int threads = 0;  // 0: every core
  int bin_minutes = 15;
  std::string out;
  std::string fidelity = "fleet-scale";
  bool quiet = false;
  bool no_sensitivity = false;
};

// A bar redrawn in place on a terminal; elsewhere (a log, CI) a line every 10%.
class ProgressBar {
 public:
  explicit ProgressBar(bool enabled) : enabled_(enabled), tty_(isatty(STDERR_FILENO) == 1), start_(Clock::now()) {}

  void update(double fraction) {
    if (!enabled_) return;
    fraction = std::clamp(fraction, 0.0, 1.0);
    const auto now = Clock::now();
    const double elapsed = std::chrono::duration<double>(now - start_).count();
    if (tty_) {
      if (fraction < 1.0 && now - last_ < std::chrono::milliseconds(200)) return;
      last_ = now;
      constexpr int kWidth = 30;
      const int filled = static_cast<int>(fraction * kWidth);
      std::string bar(static_cast<size_t>(filled), '#');
      bar.append(static_cast<size_t>(kWidth - filled), '.');
      std::fprintf(stderr, "\r  [%s] %5.1f%%  %s elapsed%s", bar.c_str(), 100.0 * fraction, duration(elapsed).c_str(),
                   eta(fraction, elapsed).c_str());
      if (fraction >= 1.0) std::fputc('\n', stderr);
    } else {
      const int decile = static_cast<int>(fraction * 10.0);
      if (decile <= last_decile_) return;
      last_decile_ = decile;
      std::fprintf(stderr, "  %3d%%  %s elapsed%s\n", decile * 10, duration(elapsed).c_str(),
                   eta(fraction, elapsed).c_str());
    }
    std::fflush(stderr);
  }

 private:
  using Clock = std::chrono::steady_clock;

  static std::string duration(double seconds) {
    char buf[32];
    if (seconds < 60.0) {
      std::snprintf(buf, sizeof buf, "%.1f s", seconds);
    } else {
      const long s = std::lround(seconds);
      std::snprintf(buf, sizeof buf, "%ld:%02ld", s / 60, s % 60);
    }
    return buf;
  }
  static std::string eta(double fraction, double elapsed) {
    if (fraction <= 0.0 || fraction >= 1.0 || elapsed < 0.5) return "";
    return ", about " + duration(elapsed * (1.0 - fraction) / fraction) + " left";
  }

  bool enabled_;
  bool tty_;
  Clock::time_point start_;
  Clock::time_point last_{};
  int last_decile_ = 0;
};

// summary.json: the keys are documented in docs/simulator.md ("summary.json").
json summary_json(const sim::SimSummary& s, const std::vector<sim::SensitivityRow>& sensitivity, bool sensitivity_run,
                  double wall_seconds) {
  json j = {{"scenario", s.scenario},
            {"fidelity", s.fidelity},
            {"jobs_placed", s.jobs_placed},
            {"vehicles", s.vehicles},
            {"days", s.days},
            {"seed", s.seed},
            {"bin_minutes", s.bin_minutes},
            {"compute_available_gw_mean", s.compute_available_gw_mean},
            {"compute_available_gw_peak", s.compute_available_gw_peak},
            {"compute_used_gw_mean", s.compute_used_gw_mean},
            {"compute_used_gw_peak", s.compute_used_gw_peak},
            {"nameplate_kw_per_vehicle", s.nameplate_kw_per_vehicle},
            {"nameplate_gw", s.nameplate_gw},
            {"capacity_factor", s.capacity_factor},
            {"used_factor", s.used_factor},
            {"tokens_interactive", s.tokens_interactive},
            {"tokens_batch", s.tokens_batch},
            {"tokens_per_vehicle_day", s.tokens_per_vehicle_day},
            {"interactive_tokens_asked", s.interactive_tokens_asked},
            {"interactive_tokens_unmet", s.interactive_tokens_unmet},
            {"preemptions", s.preemptions},
            {"work_redone_tokens", s.work_redone_tokens},
            {"energy_kwh", s.energy_kwh},
            {"energy_cost", s.energy_cost},
            {"battery_kwh", s.battery_kwh},
            {"battery_cycles_per_vehicle_month", s.battery_cycles_per_vehicle_month},
            {"wear_hours", s.wear_hours},
            {"chip_hours_per_vehicle_month", s.chip_hours_per_vehicle_month},
            {"interactive_jobs_started", s.interactive_jobs_started},
            {"owner_earnings_month_p10", s.earnings_month_p10},
            {"owner_earnings_month_p50", s.earnings_month_p50},
            {"owner_earnings_month_p90", s.earnings_month_p90},
            {"owner_earnings_month_mean", s.earnings_month_mean},
            {"wall_seconds", wall_seconds}};
  // Not modelled at fleet scale: null rather than a 0 that reads as "no wait".
  j["interactive_wait_ms_mean"] = s.interactive_wait_modelled ? json(s.interactive_wait_ms_mean) : json(nullptr);
  j["interactive_wait_ms_p95_max"] = s.interactive_wait_modelled ? json(s.interactive_wait_ms_p95_max) : json(nullptr);
  if (sensitivity_run) {
    json rows = json::array();
    for (const sim::SensitivityRow& r : sensitivity) {
      rows.push_back({{"knob", r.knob},
                      {"value", r.value},
                      {"base", r.base},
                      {"vehicles", r.vehicles},
                      {"days", r.days},
                      {"capacity_factor", r.capacity_factor},
                      {"used_factor", r.used_factor},
                      {"tokens_per_vehicle_day", r.tokens_per_vehicle_day}});
    }
    j["sensitivity"] = std::move(rows);
  } else {
    j["sensitivity"] = nullptr;
  }
  return j;
}

void write_file(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) throw CommandError{"cannot write " + path.string()};
}

void run_scenario(const SimScenarioFlags& f) {
  auto scenario = sim::load_scenario(f.scenario);
  if (!scenario) throw CommandError{scenario.error().message};
  std::error_code ec;
  fs::create_directories(f.out, ec);
  if (ec || !fs::is_directory(f.out)) throw CommandError{"--out " + f.out + ": cannot create the directory"};

  sim::FleetScaleOptions o;
  o.vehicles = f.vehicles;
  o.days = f.days;
  o.seed = f.seed;
  o.threads = f.threads > 0 ? f.threads
                            : static_cast<int>(std::clamp(std::thread::hardware_concurrency(), 1u,
                                                          static_cast<unsigned>(sim::kFleetThreadsMax)));
  o.bin_minutes = f.bin_minutes;
  o.fidelity = f.fidelity == "detailed" ? sim::Fidelity::kDetailed : sim::Fidelity::kFleetScale;
  auto bar = std::make_shared<ProgressBar>(!f.quiet);
  o.progress = [bar](double fraction) { bar->update(fraction); };
  if (!f.quiet) {
    std::fprintf(stderr, "idlefleet sim: scenario '%s', %llu vehicles, %d days, seed %llu, %d threads, %s\n",
                 scenario->name.c_str(),
                 static_cast<unsigned long long>(f.vehicles.value_or(scenario->fleet.vehicles)),
                 f.days.value_or(scenario->days), static_cast<unsigned long long>(f.seed.value_or(scenario->seed)),
                 o.threads, f.fidelity.c_str());
  }
  const auto t0 = std::chrono::steady_clock::now();
  auto r = sim::run_fleet_scale(*scenario, o);
  if (!r) throw CommandError{r.error().message};
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  std::ostringstream csv;
  if (auto st = sim::write_timeseries_csv(*r, csv); !st) throw CommandError{st.error().message};
  write_file(fs::path(f.out) / "timeseries.csv", csv.str());
  const sim::SimSummary s = sim::summarize(*scenario, *r);

  std::vector<sim::SensitivityRow> sensitivity;
  double sensitivity_wall = 0.0;
  if (!f.no_sensitivity) {
    sim::SensitivityOptions so;
    // The smaller runs follow --vehicles and --days when they ask for less.
    so.vehicles_max = std::min(sim::kSensitivityVehiclesDefault, r->vehicles);
    so.days = std::min(r->days, sim::kSensitivityDaysDefault);
    so.demand_vehicles = r->vehicles;  // the main run's demand per vehicle
    so.seed = f.seed;
    so.threads = o.threads;
    so.bin_minutes = f.bin_minutes;
    auto sbar = std::make_shared<ProgressBar>(!f.quiet);
    so.progress = [sbar](double fraction) { sbar->update(fraction); };
    if (!f.quiet) {
      std::fprintf(stderr, "idlefleet sim: sensitivity, 9 runs of %llu vehicles for %d day%s (--no-sensitivity skips them)\n",
                   static_cast<unsigned long long>(so.vehicles_max), *so.days, *so.days == 1 ? "" : "s");
    }
    const auto s0 = std::chrono::steady_clock::now();
    auto rows = sim::run_sensitivity(*scenario, so);
    if (!rows) throw CommandError{rows.error().message};
    sensitivity = std::move(*rows);
    sensitivity_wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - s0).count();
  }
  const json summary = summary_json(s, sensitivity, !f.no_sensitivity, wall);
  write_file(fs::path(f.out) / "summary.json", summary.dump(2) + "\n");
  write_file(fs::path(f.out) / "report.html", sim::render_report(*scenario, *r, s, sensitivity));

  std::printf("scenario %s: %llu vehicles, %d days (%s, %.1f s)\n", scenario->name.c_str(),
              static_cast<unsigned long long>(r->vehicles), r->days, r->fidelity.c_str(), wall);
  if (r->jobs_placed > 0) {
    std::printf("  jobs placed:       %llu (%.3g per second of run)\n", static_cast<unsigned long long>(r->jobs_placed),
                static_cast<double>(r->jobs_placed) / std::max(wall, 1e-3));
  }
  std::printf("  nameplate:         %.4g GW (%.3g kW a vehicle)\n", s.nameplate_gw, s.nameplate_kw_per_vehicle);
  std::printf("  compute available: mean %.4g GW, peak %.4g GW (capacity factor %s)\n", s.compute_available_gw_mean,
              s.compute_available_gw_peak, sim::format_percent(s.capacity_factor).c_str());
  std::printf("  compute used:      mean %.4g GW, peak %.4g GW\n", s.compute_used_gw_mean, s.compute_used_gw_peak);
  std::printf("  tokens delivered:  %.4g interactive (of %.4g asked), %.4g batch\n", s.tokens_interactive,
              s.interactive_tokens_asked, s.tokens_batch);
  std::printf("  preemptions:       %.4g (%.4g tokens redone)\n", s.preemptions, s.work_redone_tokens);
  std::printf("  energy:            %.4g kWh (%.4g from batteries), cost %.4g\n", s.energy_kwh, s.battery_kwh,
              s.energy_cost);
  std::printf("  wear:              %.3g battery cycles, %.3g weighted chip-hours per vehicle-month\n",
              s.battery_cycles_per_vehicle_month, s.chip_hours_per_vehicle_month);
  std::printf("  owners' month:     p10 %.2f, median %.2f, p90 %.2f, mean %.2f\n", s.earnings_month_p10,
              s.earnings_month_p50, s.earnings_month_p90, s.earnings_month_mean);
  if (f.no_sensitivity) {
    std::printf("  sensitivity:       skipped (--no-sensitivity)\n");
  } else {
    std::printf("  sensitivity:       %zu rows (%.1f s)\n", sensitivity.size(), sensitivity_wall);
  }
  std::printf("  wrote %s and %s\n", (fs::path(f.out) / "timeseries.csv").c_str(),
              (fs::path(f.out) / "summary.json").c_str());
  std::printf("  report: %s\n", (fs::path(f.out) / "report.html").c_str());
}

}  // namespace

void add_sim_scenario(CLI::App* sim) {
  auto f = std::make_shared<SimScenarioFlags>();
  sim->add_option("--scenario", f->scenario, "A scenario file (TOML; docs/simulator.md; scenarios/ has examples)")
      ->check(CLI::ExistingFile);
  sim->add_option("--vehicles", f->vehicles, "Vehicles (overrides the scenario's fleet.vehicles)")
      ->check(CLI::Range(uint64_t{1}, sim::kScenarioVehiclesMax));
  sim->add_option("--days", f->days, "Days to simulate (overrides the scenario's days)")
      ->check(CLI::Range(1, sim::kScenarioDaysMax));
  sim->add_option("--seed", f->seed, "Seed (overrides the scenario's seed)");
  sim->add_option("--threads", f->threads, "Worker threads (default: every core; the output is the same for any)")
      ->check(CLI::Range(1, sim::kFleetThreadsMax));
  sim->add_option("--bin-minutes", f->bin_minutes, "Minutes per row of the time series (dividing a day)")
      ->capture_default_str()
      ->check(CLI::Range(sim::kFleetBinMinutesMin, sim::kFleetBinMinutesMax));
  sim->add_option("--out", f->out, "Directory for timeseries.csv, summary.json and report.html (created if missing)");
  sim->add_option("--fidelity", f->fidelity,
                  "fleet-scale (flows per shard, up to a billion vehicles) or detailed (each job placed by the "
                  "scheduler, up to a million)")
      ->capture_default_str()
      ->check(CLI::IsMember({"fleet-scale", "detailed"}));
  sim->add_flag("--quiet", f->quiet, "No progress bar");
  sim->add_flag("--no-sensitivity", f->no_sensitivity,
                "Skip the sensitivity runs (9 smaller runs; the report then says how to get them)");
  sim->callback([sim, f] {
    if (!sim->get_subcommands().empty()) return;  // `sim month` or `sim live` ran
    if (f->scenario.empty()) throw CLI::RequiredError("--scenario (or a subcommand: month, live)");
    if (f->out.empty()) throw CLI::RequiredError("--out");
    run_scenario(*f);
  });
}

}  // namespace idlefleet::cli
