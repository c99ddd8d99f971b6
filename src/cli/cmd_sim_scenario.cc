// `idlefleet sim --scenario FILE --out DIR`: a whole fleet in virtual time
// (sim/fleet_scale.h, the fleet-scale fidelity), from a scenario file
// (sim/scenario.h; the format is in docs/simulator.md). Writes the time series
// as DIR/timeseries.csv and the totals as DIR/summary.json, prints the totals,
// and shows a progress bar with an ETA on stderr while it runs.
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

#include <unistd.h>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "sim/fleet_scale.h"
#include "sim/scenario.h"

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

json summary_json(const sim::Scenario& scenario, const sim::FleetScaleResult& r, double wall_seconds) {
  double tokens_interactive = 0, tokens_batch = 0, unmet = 0, demand = 0, energy = 0, cost = 0, preemptions = 0,
         redone = 0, peak_available = 0, peak_used = 0, sum_available = 0, sum_used = 0;
  const double bin_seconds = 60.0 * r.bin_minutes;
  for (const sim::FleetBin& b : r.bins) {
    tokens_interactive += b.interactive_tps * bin_seconds;
    tokens_batch += b.batch_tps * bin_seconds;
    demand += b.interactive_demand_tps * bin_seconds;
    unmet += b.interactive_unmet_tps * bin_seconds;
    energy += b.energy_kwh;
    cost += b.energy_cost;
    preemptions += b.preemptions;
    redone += b.work_redone_tokens;
    peak_available = std::max(peak_available, b.compute_available_gw);
    peak_used = std::max(peak_used, b.compute_used_gw);
    sum_available += b.compute_available_gw;
    sum_used += b.compute_used_gw;
  }
  const double bins = std::max<double>(1.0, static_cast<double>(r.bins.size()));
  return {{"scenario", scenario.name},
          {"fidelity", r.fidelity},
          {"jobs_placed", r.jobs_placed},
          {"vehicles", r.vehicles},
          {"days", r.days},
          {"seed", r.seed},
          {"bin_minutes", r.bin_minutes},
          {"compute_available_gw_mean", sum_available / bins},
          {"compute_available_gw_peak", peak_available},
          {"compute_used_gw_mean", sum_used / bins},
          {"compute_used_gw_peak", peak_used},
          {"tokens_interactive", tokens_interactive},
          {"tokens_batch", tokens_batch},
          {"interactive_tokens_asked", demand},
          {"interactive_tokens_unmet", unmet},
          {"preemptions", preemptions},
          {"work_redone_tokens", redone},
          {"energy_kwh", energy},
          {"energy_cost", cost},
          {"owner_earnings_month_p10", r.earnings_month_p10},
          {"owner_earnings_month_p50", r.earnings_month_p50},
          {"owner_earnings_month_p90", r.earnings_month_p90},
          {"owner_earnings_month_mean", r.earnings_month_mean},
          {"wall_seconds", wall_seconds}};
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
  const json summary = summary_json(*scenario, *r, wall);
  write_file(fs::path(f.out) / "summary.json", summary.dump(2) + "\n");

  std::printf("scenario %s: %llu vehicles, %d days (%s, %.1f s)\n", scenario->name.c_str(),
              static_cast<unsigned long long>(r->vehicles), r->days, r->fidelity.c_str(), wall);
  if (r->jobs_placed > 0) {
    std::printf("  jobs placed:       %llu (%.3g per second of run)\n", static_cast<unsigned long long>(r->jobs_placed),
                static_cast<double>(r->jobs_placed) / std::max(wall, 1e-3));
  }
  std::printf("  compute available: mean %.4g GW, peak %.4g GW\n", summary["compute_available_gw_mean"].get<double>(),
              summary["compute_available_gw_peak"].get<double>());
  std::printf("  compute used:      mean %.4g GW, peak %.4g GW\n", summary["compute_used_gw_mean"].get<double>(),
              summary["compute_used_gw_peak"].get<double>());
  std::printf("  tokens delivered:  %.4g interactive (of %.4g asked), %.4g batch\n",
              summary["tokens_interactive"].get<double>(), summary["interactive_tokens_asked"].get<double>(),
              summary["tokens_batch"].get<double>());
  std::printf("  preemptions:       %.4g (%.4g tokens redone)\n", summary["preemptions"].get<double>(),
              summary["work_redone_tokens"].get<double>());
  std::printf("  energy:            %.4g kWh, cost %.4g\n", summary["energy_kwh"].get<double>(),
              summary["energy_cost"].get<double>());
  std::printf("  owners' month:     p10 %.2f, median %.2f, p90 %.2f, mean %.2f\n", r->earnings_month_p10,
              r->earnings_month_p50, r->earnings_month_p90, r->earnings_month_mean);
  std::printf("  wrote %s and %s\n", (fs::path(f.out) / "timeseries.csv").c_str(),
              (fs::path(f.out) / "summary.json").c_str());
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
  sim->add_option("--out", f->out, "Directory for timeseries.csv and summary.json (created if missing)");
  sim->add_option("--fidelity", f->fidelity,
                  "fleet-scale (flows per shard, up to a billion vehicles) or detailed (each job placed by the "
                  "scheduler, up to a million)")
      ->capture_default_str()
      ->check(CLI::IsMember({"fleet-scale", "detailed"}));
  sim->add_flag("--quiet", f->quiet, "No progress bar");
  sim->callback([sim, f] {
    if (!sim->get_subcommands().empty()) return;  // `sim month` ran
    if (f->scenario.empty()) throw CLI::RequiredError("--scenario (or a subcommand: month)");
    if (f->out.empty()) throw CLI::RequiredError("--out");
    run_scenario(*f);
  });
}

}  // namespace idlefleet::cli
