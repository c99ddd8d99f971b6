// `idlefleet sim live --scenario FILE`: the simulator checked against the live
// fleet (issue 6, acceptance C). The same small scenario runs twice:
//
//  1. live: nats-server, a coordinator and an agent with one simulated car
//     per scenario vehicle, in compressed time. Each car is the simulator's
//     own draw (sim::fleet_vehicle: battery, charger, computer, owner policy
//     with its tariff and declared departures) and lives the simulator's own
//     days (sim::fleet_day_plan: when it leaves, comes home and plugs in),
//     through SimVehicle's physics; its engine runs the real model, paced to
//     its computer class's tokens per second. Demand follows the scenario:
//     interactive requests as a Poisson process on the hourly curve, the
//     day's batch through the Batch API at each local midnight, every job of
//     the model's completion length (`ignore_eos`).
//  2. simulated: the detailed fidelity (sim/jobs.h) on the same scenario,
//     vehicles, days and seed.
//
// It prints both totals (output tokens served, preemptions) and their ratios,
// writes them to DIR/live-vs-sim.json, and fails when a ratio is further
// from 1 than --tolerance. docs/simulator.md ("The simulator against the live
// fleet") describes what is and is not the same in the two runs.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "agent/fleet.h"
#include "cli/agent_flags.h"
#include "cli/commands.h"
#include "cli/http_post.h"
#include "cli/model_locator.h"
#include "cli/shutdown.h"
#include "cli/story_prompts.h"
#include "common/random.h"
#include "coordinator/server.h"
#include "sim/fleet_scale.h"
#include "sim/scenario.h"
#include "sim/summary.h"
#include "transport/nats_server.h"

namespace idlefleet::cli {

namespace {

using nlohmann::json;
namespace fs = std::filesystem;

// Every car is a NATS connection, an engine thread and its share of two cores.
constexpr uint64_t kSimLiveVehiclesMax = 200;
constexpr int kSimLiveDaysMax = 7;
constexpr double kSimLiveDayMinutesMin = 1.0;
constexpr double kSimLiveDayMinutesMax = 1440.0;
// A day's batch goes in one file: the coordinator's (and OpenAI's) limit.
constexpr uint64_t kSimLiveBatchJobsMax = 50'000;
constexpr size_t kSimLiveClientsMax = 512;  // interactive requests in flight
constexpr long kSimLiveRequestTimeoutS = 3600;
constexpr long kSimLiveUploadTimeoutS = 120;
// Tokens travel in chunks of up to 100 ms: a few thousand paced tokens a
// second would otherwise be as many messages.
constexpr int64_t kSimLiveChunkUs = 100'000;
static_assert(kSimLiveChunkUs <= agent::kChunkUsMax);
// A chip at full power settles this far above ambient (the simulator's
// assumption for wear; its eligibility takes the chip at ambient).
constexpr double kSimLiveChipRiseC = 35.0;
constexpr auto kStatusPeriod = std::chrono::seconds(5);
// How often the clock is watched for the end (10 ms: under a simulated
// minute on a day of a few minutes).
constexpr int kWatchPeriodMs = 10;

struct SimLiveFlags {
  std::string scenario;
  std::optional<uint64_t> vehicles;  // default: the scenario's fleet.vehicles
  std::optional<int> days;
  std::optional<uint64_t> seed;
  double day_minutes = 6.0;
  std::string model;
  std::string out;
  double tolerance = 0.10;
  bool quiet = false;
};

// The one model the live fleet serves, and every computer class serves it:
// the live fleet has one real model, and the comparison is of the same work.
const sim::ScenarioModel& live_model(const sim::Scenario& s) {
  if (s.models.size() != 1) {
    throw CommandError{"sim live: the scenario must have exactly one [[models]] entry (the live fleet serves one "
                       "real model), it has " + std::to_string(s.models.size())};
  }
  const sim::ScenarioModel& m = s.models[0];
  for (const sim::ScenarioComputer& c : s.computers) {
    const bool listed = std::any_of(c.tokens_per_second.begin(), c.tokens_per_second.end(),
                                    [&](const auto& e) { return e.first == m.name; });
    if (!listed || c.memory_gib < m.memory_gib) {
      throw CommandError{"sim live: computer class '" + c.name + "' does not serve model '" + m.name +
                         "' (every class must, in the live fleet)"};
    }
  }
  return m;
}

double class_tokens_per_second(const sim::ScenarioComputer& c, const std::string& model) {
  for (const auto& [name, tps] : c.tokens_per_second) {
    if (name == model) return tps;
  }
  return 0.0;
}

// Vehicle `index` of a run with `seed`, as the simulator draws it, made a
// simulated car for the live fleet.
agent::FleetSimCar live_car(const std::shared_ptr<const sim::Scenario>& s, uint64_t seed, uint64_t index) {
  const sim::FleetVehicle v = sim::fleet_vehicle(*s, seed, index);
  const sim::ScenarioComputer& computer = s->computers[v.computer];
  agent::FleetSimCar out;
  agent::SimVehicleParams& p = out.car;
  p.seed = counter_random(seed, index);
  p.utc_offset_minutes = s->fleet.utc_offset_minutes;
  p.battery.capacity_kwh = v.battery_kwh;
  // The simulator charges linearly up to its 90% limit: no taper below it.
  p.battery.taper_start_soc_pct = p.charge_limit_pct;
  p.home_charger = v.home_charger;
  if (v.home_charger) p.charger_power_kw = v.charger_kw;
  p.accelerator.max_w = computer.power_kw * 1000.0;
  p.accelerator.idle_w = std::min(p.accelerator.idle_w, p.accelerator.max_w);
  p.accelerator.thermal_resistance_c_per_w = kSimLiveChipRiseC / p.accelerator.max_w;
  p.plug_in_probability = s->fleet.plug_in_probability;
  p.ambient_c = s->fleet.ambient_c;
  p.trip_energy_kwh_mean = s->fleet.trip_energy_kwh;
  p.weekday_departure_minute = v.departure_minute;
  p.weekday_return_minute = v.return_minute;
  p.initial_soc_pct = v.initial_soc_pct;
  p.initially_plugged = sim::fleet_initially_plugged(*s, v, seed, index);
  p.outings = [s, v, seed, index](int64_t day) -> std::optional<agent::SimOuting> {
    const sim::FleetDayPlan plan = sim::fleet_day_plan(*s, v, seed, index, day);
    if (plan.leave_home < 0) return std::nullopt;
    return agent::SimOuting{plan.leave_home,     plan.arrive_away,     plan.leave_away,
                            plan.arrive_home,    plan.energy_out_kwh,  plan.energy_back_kwh,
                            plan.plug_u < s->fleet.plug_in_probability};
  };
  out.policy = sim::fleet_eligibility_inputs(*s, v, sim::FleetVehicleState{}, s->start_ms).policy;
  out.paced_tokens_per_second = class_tokens_per_second(computer, s->models[0].name);
  out.prefill_speedup = computer.prefill_speedup;
  return out;
}

// The next arrival of a Poisson process whose rate (per simulated second)
// is constant within each local hour, after `t`, for an Exp(1) draw `e`.
core::TimeMs next_arrival(const sim::Scenario& s, double jobs_per_second_at_peak, core::TimeMs t, double e) {
  const int64_t off_ms = int64_t{s.fleet.utc_offset_minutes} * core::kMinuteMs;
  for (int guard = 0; guard < 24 * 400; ++guard) {
    const core::TimeMs local = t + off_ms;
    const core::TimeMs hour_end = local - local % core::kHourMs + core::kHourMs - off_ms;
    const int hour = static_cast<int>((local % core::kDayMs) / core::kHourMs);
    const double rate = jobs_per_second_at_peak * s.demand.interactive_hourly[static_cast<size_t>(hour)];
    const double seconds_left = static_cast<double>(hour_end - t) / 1000.0;
    if (rate > 0.0 && e <= rate * seconds_left) return t + static_cast<core::TimeMs>(std::ceil(e / rate * 1000.0));
    e -= rate * seconds_left;
    t = hour_end;
  }
  return std::numeric_limits<core::TimeMs>::max();  // no demand for 400 days
}

std::string completion_body(const std::string& model, uint64_t completion_tokens, uint64_t n) {
  return json{{"model", model},
              {"prompt", kStoryPrompts[n % kStoryPrompts.size()]},
              {"max_tokens", completion_tokens},
              {"ignore_eos", true},
              {"temperature", 0.8},
              {"seed", n}}
      .dump();
}

// Sends the day's batch through the Batch API: one file, one batch.
void submit_batch(const std::string& base_url, const std::string& model, uint64_t completion_tokens, uint64_t jobs,
                  int64_t day) {
  std::string file;
  for (uint64_t k = 0; k < jobs; ++k) {
    file += json{{"custom_id", "day" + std::to_string(day) + "-" + std::to_string(k)},
                 {"method", "POST"},
                 {"url", "/v1/completions"},
                 {"body", json::parse(completion_body(model, completion_tokens, (uint64_t(day) << 32) + k))}}
                .dump();
    file += '\n';
  }
  const HttpPostResult up =
      post_file(base_url + "/v1/files", "batch", "day" + std::to_string(day) + ".jsonl", file, kSimLiveUploadTimeoutS);
  const json uploaded = json::parse(up.body, nullptr, false);
  if (up.status != 200 || !uploaded.is_object() || !uploaded.contains("id") || !uploaded["id"].is_string()) {
    throw CommandError{"sim live: uploading the day's batch failed (HTTP " + std::to_string(up.status) +
                       "): " + up.body.substr(0, 300)};
  }
  const HttpPostResult created = post_json(base_url + "/v1/batches",
                                           json{{"input_file_id", uploaded["id"]},
                                                {"endpoint", "/v1/completions"},
                                                {"completion_window", "24h"}}
                                               .dump(),
                                           kSimLiveUploadTimeoutS);
  if (created.status != 200) {
    throw CommandError{"sim live: creating the day's batch failed (HTTP " + std::to_string(created.status) +
                       "): " + created.body.substr(0, 300)};
  }
}

struct LiveTotals {
  double tokens = 0.0;
  double preemptions = 0.0;
  uint64_t interactive_sent = 0;
  uint64_t interactive_ok = 0;
  uint64_t batch_jobs = 0;
  double wall_s = 0.0;
};

LiveTotals run_live(const std::shared_ptr<const sim::Scenario>& s, const SimLiveFlags& f, uint64_t vehicles,
                    uint64_t seed, int days, const fs::path& data_dir) {
  const sim::ScenarioModel& model = live_model(*s);
  const std::string model_path = locate_model(f.model, !f.quiet);
  std::error_code ec;
  fs::remove_all(data_dir, ec);  // a fresh store: nothing left from an earlier run
  fs::create_directories(data_dir, ec);
  if (ec) throw CommandError{"sim live: cannot create " + data_dir.string()};

  transport::NatsServerOptions n;
  n.log_path = (data_dir / "nats-server.log").string();
  auto nats = transport::NatsServer::start(n);
  if (!nats) throw CommandError{"sim live: " + nats.error().message + " (install the nats-server package)"};

  coordinator::ServerOptions co;
  co.config.nats_url = (*nats)->url();
  co.config.http_port = 0;
  co.config.data_dir = data_dir.string();
  co.config.models.push_back({model.name, model_path});
  co.config.lease_ms = 5000;
  co.config.vehicle_timeout_ms = 10000;
  co.config.max_tokens_limit = std::max<uint64_t>(co.config.max_tokens_limit, model.completion_tokens);
  // The simulator gives batch work to every idle car; so must the coordinator.
  co.config.batch_jobs_in_flight = std::max<size_t>(co.config.batch_jobs_in_flight, 2 * vehicles);
  co.config.queue_jobs_max = kSimLiveBatchJobsMax + kSimLiveClientsMax;
  auto coordinator = coordinator::CoordinatorServer::start(co);
  if (!coordinator) throw CommandError{"sim live: coordinator: " + coordinator.error().message};
  const std::string base_url = "http://127.0.0.1:" + std::to_string((*coordinator)->http_port());

  agent::FleetOptions fo;
  fo.nats_url = (*nats)->url();
  fo.coordinator_url = base_url;
  fo.vehicles = static_cast<int>(vehicles);
  fo.id_prefix = "sim";
  fo.time_scale = kSimLiveDayMinutesMax / f.day_minutes;
  fo.sim_start = s->start_ms;
  fo.utc_offset_minutes = s->fleet.utc_offset_minutes;
  fo.cache_dir = (data_dir / "cache").string();
  fo.chunk_us = kSimLiveChunkUs;
  fo.sim_control = false;
  for (uint64_t i = 0; i < vehicles; ++i) fo.sim_cars.push_back(live_car(s, seed, i));
  if (auto st = fo.validate(); !st) throw CommandError{"sim live: " + st.error().message};
  auto fleet = agent::Fleet::start(std::move(fo));
  if (!fleet) throw CommandError{"sim live: agent: " + fleet.error().message};
  const core::TimeMs end = s->start_ms + int64_t{days} * core::kDayMs;
  if (!f.quiet) {
    std::fprintf(stderr, "sim live: %llu cars on %s, %d day%s in %.1f minutes each, model %s (%s)\n",
                 static_cast<unsigned long long>(vehicles), base_url.c_str(), days, days == 1 ? "" : "s",
                 f.day_minutes, model.name.c_str(), model_path.c_str());
  }

  // Demand, on the fleet's simulated clock.
  const double completion = static_cast<double>(model.completion_tokens);
  const double peak_jobs_per_second = s->demand.interactive_peak_tokens_per_second / completion;
  const uint64_t demand_key = counter_random(seed, 0x4c495645);  // "LIVE"
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> sent{0}, ok{0}, batch_jobs{0};
  std::mutex error_mu;
  std::string demand_error;
  struct Client {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
  };
  std::vector<Client> clients;
  std::thread demand([&] {
    try {
      uint64_t draws = 0;
      auto exp1 = [&] { return -std::log1p(-to_unit_double(counter_random(demand_key, draws++))); };
      core::TimeMs next_interactive = next_arrival(*s, peak_jobs_per_second, s->start_ms, exp1());
      const int64_t off_ms = int64_t{s->fleet.utc_offset_minutes} * core::kMinuteMs;
      int64_t next_batch_day = (s->start_ms + off_ms) / core::kDayMs;
      double batch_carry = 0.0;
      while (!stop.load()) {
        const core::TimeMs now = (*fleet)->sim_now();
        if (now >= end) break;
        if (now + off_ms >= next_batch_day * core::kDayMs) {
          const double jobs = s->demand.batch_tokens_per_day / completion + batch_carry;
          const uint64_t whole = std::min<uint64_t>(static_cast<uint64_t>(std::floor(jobs)), kSimLiveBatchJobsMax);
          batch_carry = jobs - std::floor(jobs);
          if (whole > 0) submit_batch(base_url, model.name, model.completion_tokens, whole, next_batch_day);
          batch_jobs += whole;
          ++next_batch_day;
        }
        while (next_interactive <= now) {
          std::erase_if(clients, [](Client& c) {
            if (!c.done->load()) return false;
            c.thread.join();
            return true;
          });
          if (clients.size() >= kSimLiveClientsMax) {
            throw CommandError{"sim live: more than " + std::to_string(kSimLiveClientsMax) +
                               " interactive requests waiting at once: the fleet is far below the demand"};
          }
          const uint64_t k = sent++;
          auto done = std::make_shared<std::atomic<bool>>(false);
          clients.push_back({std::thread([&, done, url = base_url + "/v1/completions",
                                          body = completion_body(model.name, model.completion_tokens, k)] {
                               if (post_json(url, body, kSimLiveRequestTimeoutS).status == 200) ++ok;
                               done->store(true);
                             }),
                             done});
          next_interactive = next_arrival(*s, peak_jobs_per_second, next_interactive, exp1());
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
    } catch (const CommandError& e) {
      std::lock_guard<std::mutex> lock(error_mu);
      demand_error = e.message;
    }
  });

  // Watch the clock; read the coordinator's counters the moment it passes the end.
  LiveTotals totals;
  const auto t0 = std::chrono::steady_clock::now();
  auto last_status = t0;
  const int signal = wait_for_shutdown(kWatchPeriodMs, [&] {
    const core::TimeMs now = (*fleet)->sim_now();
    if (now >= end) return false;
    {
      std::lock_guard<std::mutex> lock(error_mu);
      if (!demand_error.empty()) return false;
    }
    if (!f.quiet && std::chrono::steady_clock::now() - last_status >= kStatusPeriod) {
      last_status = std::chrono::steady_clock::now();
      const json st = json::parse((*coordinator)->status_json(), nullptr, false);
      const core::LocalTime local = core::to_local(now, s->fleet.utc_offset_minutes);
      std::fprintf(stderr, "sim live: day %lld %02d:%02d | %s | tokens %llu | preemptions %llu | %llu requests, %llu batch jobs\n",
                   static_cast<long long>((now - s->start_ms) / core::kDayMs + 1), local.minute_of_day / 60,
                   local.minute_of_day % 60, fleet_summary((*fleet)->status()).c_str(),
                   st.is_object() ? st["tokens"].value("relayed", 0ull) : 0ull,
                   st.is_object() ? st.value("preemptions", 0ull) : 0ull,
                   static_cast<unsigned long long>(sent.load()), static_cast<unsigned long long>(batch_jobs.load()));
    }
    return true;
  });
  const bool interrupted = signal != 0;
  const json st = json::parse((*coordinator)->status_json(), nullptr, false);
  totals.wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (st.is_object()) {
    totals.tokens = static_cast<double>(st["tokens"].value("relayed", 0ull));
    totals.preemptions = static_cast<double>(st.value("preemptions", 0ull));
  }
  stop = true;
  demand.join();
  (*fleet)->stop();
  (*coordinator)->stop();
  for (Client& c : clients) c.thread.join();
  (*nats)->stop();
  totals.interactive_sent = sent.load();
  totals.interactive_ok = ok.load();
  totals.batch_jobs = batch_jobs.load();
  if (!demand_error.empty()) throw CommandError{demand_error};
  if (interrupted) throw CommandError{"sim live: interrupted"};
  if (!st.is_object()) throw CommandError{"sim live: the coordinator's status could not be read"};
  return totals;
}

double ratio(double live, double simulated) {
  if (simulated == 0.0) return live == 0.0 ? 1.0 : std::numeric_limits<double>::infinity();
  return live / simulated;
}

void run_sim_live(const SimLiveFlags& f) {
  auto loaded = sim::load_scenario(f.scenario);
  if (!loaded) throw CommandError{loaded.error().message};
  auto s = std::make_shared<const sim::Scenario>(std::move(*loaded));
  (void)live_model(*s);
  const uint64_t seed = f.seed.value_or(s->seed);
  const uint64_t vehicles = f.vehicles.value_or(s->fleet.vehicles);
  if (vehicles > kSimLiveVehiclesMax) {
    throw CommandError{"sim live: the scenario has " + std::to_string(vehicles) + " vehicles; a live run takes at most " +
                       std::to_string(kSimLiveVehiclesMax) + " (name fewer with --vehicles)"};
  }
  const int days = f.days.value_or(std::min(s->days, kSimLiveDaysMax));
  if (days > kSimLiveDaysMax) throw CommandError{"sim live: at most " + std::to_string(kSimLiveDaysMax) + " days"};
  std::error_code ec;
  fs::create_directories(f.out, ec);
  if (ec || !fs::is_directory(f.out)) throw CommandError{"--out " + f.out + ": cannot create the directory"};
  block_shutdown_signals();

  const LiveTotals live = run_live(s, f, vehicles, seed, days, fs::path(f.out) / "live-data");

  sim::FleetScaleOptions o;
  o.fidelity = sim::Fidelity::kDetailed;
  o.vehicles = vehicles;
  o.days = days;
  o.seed = seed;
  auto r = sim::run_fleet_scale(*s, o);
  if (!r) throw CommandError{r.error().message};
  const sim::SimSummary sum = sim::summarize(*s, *r);
  const double sim_tokens = sum.tokens_interactive + sum.tokens_batch;

  const double tokens_ratio = ratio(live.tokens, sim_tokens);
  const double preemptions_ratio = ratio(live.preemptions, sum.preemptions);
  const bool agree = std::abs(tokens_ratio - 1.0) <= f.tolerance && std::abs(preemptions_ratio - 1.0) <= f.tolerance;
  const json out = {
      {"scenario", s->name},
      {"vehicles", vehicles},
      {"days", days},
      {"seed", seed},
      {"day_minutes", f.day_minutes},
      {"tolerance", f.tolerance},
      {"live",
       {{"tokens", live.tokens},
        {"preemptions", live.preemptions},
        {"interactive_requests", live.interactive_sent},
        {"interactive_completed", live.interactive_ok},
        {"batch_jobs", live.batch_jobs},
        {"wall_seconds", live.wall_s}}},
      {"simulated",
       {{"tokens", sim_tokens},
        {"tokens_interactive", sum.tokens_interactive},
        {"tokens_batch", sum.tokens_batch},
        {"preemptions", sum.preemptions},
        {"jobs_placed", r->jobs_placed}}},
      {"ratio", {{"tokens", tokens_ratio}, {"preemptions", preemptions_ratio}}},
      {"agree", agree}};
  const fs::path path = fs::path(f.out) / "live-vs-sim.json";
  {
    std::ofstream file(path, std::ios::trunc);
    file << out.dump(2) << "\n";
    if (!file) throw CommandError{"cannot write " + path.string()};
  }
  std::printf("scenario %s: %llu vehicles, %d day%s, seed %llu (live: %.0f s)\n", s->name.c_str(),
              static_cast<unsigned long long>(vehicles), days, days == 1 ? "" : "s",
              static_cast<unsigned long long>(seed), live.wall_s);
  std::printf("                 %14s %14s %8s\n", "live", "simulated", "ratio");
  std::printf("  tokens served  %14.0f %14.0f %8.3f\n", live.tokens, sim_tokens, tokens_ratio);
  std::printf("  preemptions    %14.0f %14.0f %8.3f\n", live.preemptions, sum.preemptions, preemptions_ratio);
  std::printf("  live demand: %llu interactive requests (%llu completed), %llu batch jobs\n",
              static_cast<unsigned long long>(live.interactive_sent),
              static_cast<unsigned long long>(live.interactive_ok), static_cast<unsigned long long>(live.batch_jobs));
  std::printf("  wrote %s\n", path.c_str());
  if (!agree) {
    throw CommandError{"the live fleet and the simulator differ by more than " +
                       std::to_string(static_cast<int>(std::lround(f.tolerance * 100))) + "%"};
  }
  std::printf("  agree within %.0f%%\n", f.tolerance * 100);
}

}  // namespace

void add_sim_live(CLI::App* sim) {
  auto f = std::make_shared<SimLiveFlags>();
  CLI::App* live = sim->add_subcommand(
      "live", "Check the simulator against the live fleet: one small scenario run on a real fleet in compressed "
              "time and in the detailed simulator; compares tokens served and preemptions");
  live->add_option("--scenario", f->scenario, "A scenario with one model that every computer class serves "
                                              "(scenarios/live-check.toml)")
      ->required()
      ->check(CLI::ExistingFile);
  live->add_option("--vehicles", f->vehicles,
                   "Cars, each a simulated car with its own NATS connection (default: the scenario's)")
      ->check(CLI::Range(uint64_t{1}, kSimLiveVehiclesMax));
  live->add_option("--days", f->days, "Days (default: the scenario's, at most 7)")->check(CLI::Range(1, kSimLiveDaysMax));
  live->add_option("--seed", f->seed, "Seed (overrides the scenario's)");
  live->add_option("--day-minutes", f->day_minutes, "Wall-clock minutes per simulated day in the live run")
      ->capture_default_str()
      ->check(CLI::Range(kSimLiveDayMinutesMin, kSimLiveDayMinutesMax));
  live->add_option("-m,--model", f->model, "GGUF model the live fleet serves (default: the bundled test model)");
  live->add_option("--out", f->out, "Directory for live-vs-sim.json and the live run's store and logs")->required();
  live->add_option("--tolerance", f->tolerance, "Largest relative difference accepted")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 10.0));
  live->add_flag("--quiet", f->quiet, "No status lines");
  live->callback([f] { run_sim_live(*f); });
}

}  // namespace idlefleet::cli
