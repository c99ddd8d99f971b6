// `idlefleet sim dst --seeds A-B`: the deterministic simulation tests
// (sim/dst.h) over a range of seeds. Prints a progress line, a summary
// (seeds, steps, faults injected by kind, violations) and, for each seed that
// broke an invariant, the first violation, its trace tail and the one command
// line that reproduces it alone. Exits 1 on any violation, 2 on bad flags.
#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "sim/dst.h"

namespace idlefleet::cli {

namespace {

// Seeds in one invocation, at most (about 50 a second with the defaults).
constexpr uint64_t kDstSeedsMax = 10'000'000;
constexpr uint64_t kDstProgressEvery = 100;
// Failing seeds reported in full (each with its trace tail); the rest are counted.
constexpr size_t kDstFailuresShownMax = 20;

struct SimDstFlags {
  std::string seeds;
  uint64_t vehicles = 3;
  uint64_t jobs = 12;
  uint64_t minutes = 4;
  uint64_t quiet_minutes = 4;
  bool quiet = false;
  bool test_plant_double_settlement = false;  // TEST ONLY (DstOptions), hidden from --help
};

// "A-B" with A <= B and at most kDstSeedsMax seeds; the error for CLI11 ("" when valid).
std::string parse_seeds(const std::string& text, uint64_t* first, uint64_t* last) {
  const size_t dash = text.find('-');
  if (dash == std::string::npos || dash == 0 || dash + 1 == text.size()) return "expected A-B, e.g. 1-2000";
  auto number = [](const std::string& s, uint64_t* out) {
    if (s.empty() || s.size() > 19 || s.find_first_not_of("0123456789") != std::string::npos) return false;
    *out = std::stoull(s);
    return true;
  };
  uint64_t a = 0, b = 0;
  if (!number(text.substr(0, dash), &a) || !number(text.substr(dash + 1), &b)) {
    return "A and B must be whole numbers below 10^19";
  }
  if (a > b) return "A must not be above B";
  if (b - a >= kDstSeedsMax) return "at most " + std::to_string(kDstSeedsMax) + " seeds at once";
  if (first != nullptr) *first = a;
  if (last != nullptr) *last = b;
  return "";
}

void run_sim_dst(const SimDstFlags& f) {
  uint64_t first = 0, last = 0;
  if (std::string e = parse_seeds(f.seeds, &first, &last); !e.empty()) throw CommandError{"sim dst: --seeds: " + e};
  sim::DstOptions o;
  o.vehicles = f.vehicles;
  o.jobs = f.jobs;
  o.duration_ms = static_cast<core::DurationMs>(f.minutes) * core::kMinuteMs;
  o.quiet_ms = static_cast<core::DurationMs>(f.quiet_minutes) * core::kMinuteMs;
  o.test_plant_double_settlement = f.test_plant_double_settlement;
  if (auto st = o.validate(); !st) throw CommandError{"sim dst: " + st.error().message};
  const std::string flags = " --vehicles " + std::to_string(f.vehicles) + " --jobs " + std::to_string(f.jobs) +
                            " --minutes " + std::to_string(f.minutes) + " --quiet-minutes " +
                            std::to_string(f.quiet_minutes) +
                            (f.test_plant_double_settlement ? " --test-plant-double-settlement" : "");

  const auto t0 = std::chrono::steady_clock::now();
  uint64_t runs = 0, steps = 0, accepted = 0, done = 0, failed = 0, cancelled = 0, settlements = 0;
  std::map<std::string, uint64_t> faults, refusals;
  uint64_t without_receipts = 0;
  std::vector<std::pair<uint64_t, sim::DstResult>> failures;
  uint64_t failing = 0;
  for (uint64_t seed = first;; ++seed) {
    o.seed = seed;
    sim::DstResult r = sim::run_dst(o);
    ++runs;
    steps += r.steps;
    accepted += r.jobs_accepted;
    done += r.jobs_done;
    failed += r.jobs_failed;
    cancelled += r.jobs_cancelled;
    settlements += r.settlements;
    for (const auto& [kind, n] : r.faults) faults[kind] += n;
    for (const auto& [kind, n] : r.refusals) refusals[kind] += n;
    without_receipts += r.settlements_without_receipts;
    if (!r.ok()) {
      ++failing;
      if (failures.size() < kDstFailuresShownMax) failures.emplace_back(seed, std::move(r));
    }
    if (!f.quiet && (runs % kDstProgressEvery == 0 || seed == last)) {
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::fprintf(stderr, "\rsim dst: %llu/%llu seeds, %llu violations, %.0f seeds/s",
                   static_cast<unsigned long long>(runs), static_cast<unsigned long long>(last - first + 1),
                   static_cast<unsigned long long>(failing), s > 0 ? static_cast<double>(runs) / s : 0.0);
      if (seed == last) std::fputc('\n', stderr);
    }
    if (seed == last) break;
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("seeds %llu-%llu: %llu runs, %llu steps, %.1f s\n", static_cast<unsigned long long>(first),
              static_cast<unsigned long long>(last), static_cast<unsigned long long>(runs),
              static_cast<unsigned long long>(steps), s);
  std::printf("jobs: %llu accepted, %llu done, %llu failed, %llu cancelled; %llu settlements (%llu without a receipt)\n",
              static_cast<unsigned long long>(accepted), static_cast<unsigned long long>(done),
              static_cast<unsigned long long>(failed), static_cast<unsigned long long>(cancelled),
              static_cast<unsigned long long>(settlements), static_cast<unsigned long long>(without_receipts));
  std::printf("messages refused by the coordinator:");
  if (refusals.empty()) std::printf(" none");
  for (const auto& [kind, n] : refusals) std::printf(" %s %llu", kind.c_str(), static_cast<unsigned long long>(n));
  std::printf("\n");
  std::printf("faults injected:");
  if (faults.empty()) std::printf(" none");
  for (const auto& [kind, n] : faults) std::printf(" %s %llu", kind.c_str(), static_cast<unsigned long long>(n));
  std::printf("\nviolations: %llu\n", static_cast<unsigned long long>(failing));
  for (const auto& [seed, r] : failures) {
    const sim::DstViolation& v = *r.violation;
    std::printf("\nseed %llu: %s at step %llu, t=%.3f s: %s\n", static_cast<unsigned long long>(seed),
                v.invariant.c_str(), static_cast<unsigned long long>(v.step), static_cast<double>(v.at_ms) / 1000.0,
                v.detail.c_str());
    for (const std::string& line : r.trace_tail) std::printf("  %s\n", line.c_str());
    std::printf("reproduce: idlefleet sim dst --seeds %llu-%llu%s\n", static_cast<unsigned long long>(seed),
                static_cast<unsigned long long>(seed), flags.c_str());
  }
  if (failing > failures.size()) {
    std::printf("(%llu more failing seeds not shown)\n", static_cast<unsigned long long>(failing - failures.size()));
  }
  std::fflush(stdout);
  if (failing > 0) {
    throw CommandError{"sim dst: " + std::to_string(failing) + " of " + std::to_string(runs) +
                       " seeds violated an invariant"};
  }
}

}  // namespace

void add_sim_dst(CLI::App* sim) {
  auto f = std::make_shared<SimDstFlags>();
  CLI::App* dst = sim->add_subcommand(
      "dst", "Deterministic simulation tests: the coordinator's and agents' state machines on a simulated network "
             "with faults from each seed, every invariant checked after every step (docs/dst.md)");
  dst->add_option("--seeds", f->seeds, "Seeds to run, A-B (inclusive)")
      ->required()
      ->check(CLI::Validator([](std::string& s) { return parse_seeds(s, nullptr, nullptr); }, "A-B"));
  dst->add_option("--vehicles", f->vehicles, "Vehicles per run")
      ->capture_default_str()
      ->check(CLI::Range(uint64_t{1}, static_cast<uint64_t>(sim::kDstVehiclesMax)));
  dst->add_option("--jobs", f->jobs, "Jobs the clients submit per run")
      ->capture_default_str()
      ->check(CLI::Range(uint64_t{0}, static_cast<uint64_t>(sim::kDstJobsMax)));
  dst->add_option("--minutes", f->minutes, "Simulated minutes with faults")
      ->capture_default_str()
      ->check(CLI::Range(uint64_t{1}, static_cast<uint64_t>(sim::kDstDurationMsMax / core::kMinuteMs)));
  dst->add_option("--quiet-minutes", f->quiet_minutes,
                  "Simulated minutes without faults after them, by whose end every job must have ended")
      ->capture_default_str()
      ->check(CLI::Range(uint64_t{0}, static_cast<uint64_t>(sim::kDstDurationMsMax / core::kMinuteMs)));
  dst->add_flag("--quiet", f->quiet, "No progress line");
  // TEST ONLY: the planted bug of DstOptions::test_plant_double_settlement,
  // so that the tests can see a violation reported end to end.
  dst->add_flag("--test-plant-double-settlement", f->test_plant_double_settlement)->group("");
  dst->callback([f] { run_sim_dst(*f); });
}

}  // namespace idlefleet::cli
