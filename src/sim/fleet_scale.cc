#include "sim/fleet_scale.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cmath>
#include <cstdio>
#include <limits>
#include <memory>
#include <mutex>
#include <thread>

#include "common/check.h"
#include "common/random.h"
#include "core/energy.h"
#include "sim/jobs.h"

namespace idlefleet::sim {

namespace {

using core::DurationMs;
using core::TimeMs;

// ---- Fixed behaviour (the assumptions, documented in docs/simulator.md) -------

// Grid to battery through a home AC charger, and the charge limit owners set
// (as core::BatteryParams and agent::SimVehicleParams); no taper modelled.
constexpr double kChargeEfficiency = 0.9;
constexpr double kChargeLimitPct = 90.0;
// A driver arriving home below this SoC always plugs in (as SimVehicle).
constexpr double kAlwaysPlugInBelowSocPct = 30.0;
// ... and a car without one has charged elsewhere to this on the way home.
constexpr double kPublicChargeToPct = 80.0;
// Each car's battery is the fleet's mean +-20%; its SoC at the start 50-90%.
constexpr double kBatteryShareMin = 0.8;
constexpr double kBatteryShareSpan = 0.4;
constexpr double kInitialSocPctMin = 50.0;
constexpr double kInitialSocPctSpan = 40.0;
// The habitual weekday departure is drawn from the Trondheim plug-out hours
// between these hours (the 2% of plug-outs at night are not commutes), the
// habitual return from the plug-in hours at least kReturnAfterDepartureMin
// later; each day moves both by up to kJitterMinutes (as SimVehicle).
constexpr int kDepartureHourMin = 5;
constexpr int kDepartureHourEnd = 20;
constexpr int kReturnAfterDepartureMin = 120;
constexpr int kJitterMinutes = 30;
// Drives: a commute 15-45 min each way (mean 60 min a weekday: AAA's 51-59 min
// and 2.2-2.5 trips a day); a weekend outing with probability 0.6 leaving
// 09:00-14:00, 10-60 min each way, 1-4 h away. Parked away at least 10 min.
constexpr int kCommuteDriveMin = 15;
constexpr int kCommuteDriveMax = 45;
constexpr double kWeekendTripProbability = 0.6;
constexpr int kWeekendStartMin = 9 * 60;
constexpr int kWeekendStartMax = 14 * 60;
constexpr int kWeekendDriveMin = 10;
constexpr int kWeekendDriveMax = 60;
constexpr int kWeekendStayMin = 60;
constexpr int kWeekendStayMax = 4 * 60;
constexpr int kAwayMin = 10;
// A trip draws 70-130% of the fleet's mean trip energy.
constexpr double kTripEnergyShareMin = 0.7;
constexpr double kTripEnergyShareSpan = 0.6;
// A serving chip settles this far above ambient (core/energy.h's presets at
// full load: +32 to +39 C); the reported wear is weighted at that temperature.
constexpr double kServingTempRiseC = 35.0;
// A car with no declared departure is, for the scheduler, staying this long.
constexpr core::DurationMs kNoDepartureHorizonMs = 30 * core::kDayMs;
// How often a run reports progress while its shards are computed.
constexpr std::chrono::milliseconds kProgressInterval{250};
// Shards computed between two merges, per thread.
constexpr uint64_t kShardsPerThreadPerBatch = 4;
// Earnings histogram: 1-cent buckets up to this many currency units a month.
constexpr int kEarningsCentsMax = 100'000;
constexpr double kMonthDays = 30.0;

// Draw streams: a vehicle's key, then its fixed draws (slots below) and its
// days' draws (kStaticSlots + local_day * kDaySlots + slot).
constexpr uint64_t kVehicleSalt = 0x464c454554ULL;  // "FLEET"
enum StaticSlot : uint64_t {
  kSlotComputer = 0,
  kSlotCharger,
  kSlotChargerClass,
  kSlotBattery,
  kSlotTariff,
  kSlotPolicy,
  kSlotDepartHour,
  kSlotDepartMinute,
  kSlotReturnHour,
  kSlotReturnMinute,
  kSlotInitialSoc,
  kSlotInitialPlug,
  kStaticSlots = 16,
};
enum DaySlot : uint64_t {
  kDaySlotDepartJitter = 0,
  kDaySlotReturnJitter,
  kDaySlotDriveOut,
  kDaySlotDriveBack,
  kDaySlotEnergyOut,
  kDaySlotEnergyBack,
  kDaySlotWeekendTrip,
  kDaySlotWeekendStart,
  kDaySlotWeekendStay,
  kDaySlotPlugIn,
  kDaySlots = 16,
};

uint64_t vehicle_key(uint64_t seed, uint64_t index) { return counter_random(seed ^ kVehicleSalt, index); }
double unit(uint64_t key, uint64_t counter) { return to_unit_double(counter_random(key, counter)); }

int uniform_int(double u, int lo, int hi) {
  const int span = hi - lo + 1;
  return lo + std::min(static_cast<int>(u * span), span - 1);
}

template <class T, class Share>
uint32_t pick(const std::vector<T>& classes, Share share, double u) {
  double total = 0.0;
  for (const T& c : classes) total += share(c);
  double acc = 0.0;
  for (size_t i = 0; i < classes.size(); ++i) {
    acc += share(classes[i]);
    if (u * total < acc) return static_cast<uint32_t>(i);
  }
  return static_cast<uint32_t>(classes.size() - 1);
}

// An hour in [lo, end) drawn with the given shares (renormalised), then a minute in it.
int minute_from_hour_shares(const std::array<double, 24>& shares, int lo, int end, double u_hour, double u_minute) {
  double total = 0.0;
  for (int h = lo; h < end; ++h) total += shares[h];
  int hour = end - 1;
  double acc = 0.0;
  for (int h = lo; h < end; ++h) {
    acc += shares[h];
    if (u_hour * total < acc) {
      hour = h;
      break;
    }
  }
  return hour * 60 + uniform_int(u_minute, 0, 59);
}

int64_t floor_div(int64_t a, int64_t b) { return a / b - ((a % b != 0) && ((a < 0) != (b < 0))); }

std::string fmt(double v) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

Status check_range(const std::string& name, double v, double lo, double hi) {
  if (!std::isfinite(v)) return Unexpected(ErrorCode::kInvalidArgument, name + " is not a finite number");
  if (v < lo || v > hi) {
    return Unexpected(ErrorCode::kOutOfRange, name + " " + fmt(v) + " is outside [" + fmt(lo) + ", " + fmt(hi) + "]");
  }
  return {};
}

template <class T, class Share>
Status check_shares(const std::string& name, const std::vector<T>& classes, Share share) {
  if (classes.empty()) return Unexpected(ErrorCode::kInvalidArgument, name + " is empty: the fleet needs at least one");
  if (classes.size() > kScenarioClassesMax) {
    return Unexpected(ErrorCode::kOutOfRange, name + " has " + std::to_string(classes.size()) + " entries, over " +
                                                  std::to_string(kScenarioClassesMax));
  }
  double total = 0.0;
  for (size_t i = 0; i < classes.size(); ++i) {
    IF_RETURN_IF_ERROR(check_range(name + "[" + std::to_string(i) + "].share", share(classes[i]), 0.0, 1.0));
    total += share(classes[i]);
  }
  if (std::abs(total - 1.0) > 1e-6) {
    return Unexpected(ErrorCode::kInvalidArgument, name + " shares sum to " + fmt(total) + ", not 1");
  }
  return {};
}

// Seconds of a computer's time per output token of a model, the prompt's
// prefill included; infinite when the computer does not serve it (not
// listed, or larger than its memory).
double seconds_per_token(const ScenarioComputer& c, const ScenarioModel& m) {
  if (m.memory_gib > c.memory_gib) return std::numeric_limits<double>::infinity();
  for (const auto& [name, tps] : c.tokens_per_second) {
    if (name != m.name || !(tps > 0.0)) continue;
    const double job_s = static_cast<double>(m.prompt_tokens) / (tps * c.prefill_speedup) +
                         static_cast<double>(m.completion_tokens) / tps;
    return job_s / static_cast<double>(m.completion_tokens);
  }
  return std::numeric_limits<double>::infinity();
}

Status check_scenario(const Scenario& s) {
  IF_RETURN_IF_ERROR(check_shares("computers", s.computers, [](const ScenarioComputer& c) { return c.share; }));
  IF_RETURN_IF_ERROR(check_shares("tariffs", s.tariffs, [](const ScenarioTariff& t) { return t.share; }));
  IF_RETURN_IF_ERROR(check_shares("policies", s.policies, [](const ScenarioPolicy& p) { return p.share; }));
  IF_RETURN_IF_ERROR(check_range("fleet.home_charging_share", s.fleet.home_charging_share, 0.0, 1.0));
  if (s.fleet.home_charging_share > 0.0) {
    IF_RETURN_IF_ERROR(check_shares("chargers", s.chargers, [](const ScenarioCharger& c) { return c.share; }));
    for (size_t i = 0; i < s.chargers.size(); ++i) {
      IF_RETURN_IF_ERROR(check_range("chargers[" + std::to_string(i) + "].power_kw", s.chargers[i].power_kw, 1e-6,
                                     core::kChargePowerKwMax));
    }
  }
  for (size_t i = 0; i < s.computers.size(); ++i) {
    const std::string field = "computers[" + std::to_string(i) + "]";
    IF_RETURN_IF_ERROR(check_range(field + ".power_kw", s.computers[i].power_kw, 1e-6, core::kInferencePowerKwMax));
    IF_RETURN_IF_ERROR(check_range(field + ".prefill_speedup", s.computers[i].prefill_speedup, 1.0, 1e4));
    for (const auto& [name, tps] : s.computers[i].tokens_per_second) {
      IF_RETURN_IF_ERROR(check_range(field + ".tokens_per_second." + name, tps, 1e-9, 1e6));
    }
  }
  if (s.models.size() > kScenarioModelsMax) {
    return Unexpected(ErrorCode::kOutOfRange, "models has " + std::to_string(s.models.size()) + " entries, over " +
                                                  std::to_string(kScenarioModelsMax));
  }
  for (size_t i = 0; i < s.models.size(); ++i) {
    const std::string field = "models[" + std::to_string(i) + "]";
    IF_RETURN_IF_ERROR(check_range(field + ".demand_share", s.models[i].demand_share, 0.0, 1.0));
    IF_RETURN_IF_ERROR(check_range(field + ".prompt_tokens", static_cast<double>(s.models[i].prompt_tokens), 1, 1e6));
    IF_RETURN_IF_ERROR(
        check_range(field + ".completion_tokens", static_cast<double>(s.models[i].completion_tokens), 1, 1e6));
  }
  for (size_t i = 0; i < s.tariffs.size(); ++i) {
    if (Status st = s.tariffs[i].tariff.validate(); !st) {
      return Unexpected(st.error().code, "tariffs[" + std::to_string(i) + "]: " + st.error().message);
    }
  }
  for (size_t i = 0; i < s.policies.size(); ++i) {
    if (Status st = s.policies[i].policy.validate(); !st) {
      return Unexpected(st.error().code, "policies[" + std::to_string(i) + "].policy: " + st.error().message);
    }
  }
  IF_RETURN_IF_ERROR(check_range("fleet.battery_kwh", s.fleet.battery_kwh, 1e-3, 500.0));
  IF_RETURN_IF_ERROR(check_range("fleet.plug_in_probability", s.fleet.plug_in_probability, 0.0, 1.0));
  IF_RETURN_IF_ERROR(check_range("fleet.trip_energy_kwh", s.fleet.trip_energy_kwh, 1e-6, 100.0));
  IF_RETURN_IF_ERROR(check_range("fleet.ambient_c", s.fleet.ambient_c, -50.0, 60.0));
  IF_RETURN_IF_ERROR(check_range("fleet.utc_offset_minutes", s.fleet.utc_offset_minutes, core::kUtcOffsetMinutesMin,
                                 core::kUtcOffsetMinutesMax));
  IF_RETURN_IF_ERROR(
      check_range("demand.interactive_peak_tokens_per_second", s.demand.interactive_peak_tokens_per_second, 0.0, 1e15));
  if (s.demand.interactive_hourly.size() != 24) {
    return Unexpected(ErrorCode::kInvalidArgument, "demand.interactive_hourly has " +
                                                       std::to_string(s.demand.interactive_hourly.size()) +
                                                       " entries, not 24");
  }
  for (size_t h = 0; h < 24; ++h) {
    IF_RETURN_IF_ERROR(
        check_range("demand.interactive_hourly[" + std::to_string(h) + "]", s.demand.interactive_hourly[h], 0.0, 1.0));
  }
  IF_RETURN_IF_ERROR(check_range("demand.batch_tokens_per_day", s.demand.batch_tokens_per_day, 0.0, 1e18));
  IF_RETURN_IF_ERROR(check_range("start_ms", static_cast<double>(s.start_ms), 0.0,
                                 static_cast<double>(core::kPlausibleTimeMsMax) / 2));
  return {};
}

// ---- A vehicle's day ----------------------------------------------------------

using DayPlan = FleetDayPlan;

DayPlan day_plan(const Scenario& s, const FleetVehicle& v, uint64_t key, int64_t day, bool weekend) {
  const uint64_t base = kStaticSlots + static_cast<uint64_t>(day) * kDaySlots;
  auto u = [&](uint64_t slot) { return unit(key, base + slot); };
  DayPlan p;
  p.plug_u = u(kDaySlotPlugIn);
  p.energy_out_kwh = s.fleet.trip_energy_kwh * (kTripEnergyShareMin + kTripEnergyShareSpan * u(kDaySlotEnergyOut));
  p.energy_back_kwh = s.fleet.trip_energy_kwh * (kTripEnergyShareMin + kTripEnergyShareSpan * u(kDaySlotEnergyBack));
  if (!weekend) {
    const int out = uniform_int(u(kDaySlotDriveOut), kCommuteDriveMin, kCommuteDriveMax);
    const int back = uniform_int(u(kDaySlotDriveBack), kCommuteDriveMin, kCommuteDriveMax);
    p.leave_home = v.departure_minute + uniform_int(u(kDaySlotDepartJitter), -kJitterMinutes, kJitterMinutes);
    int ret = v.return_minute + uniform_int(u(kDaySlotReturnJitter), -kJitterMinutes, kJitterMinutes);
    ret = std::min(std::max(ret, p.leave_home + out + back + kAwayMin), core::kMinutesPerDay - 1);
    p.arrive_away = p.leave_home + out;
    p.leave_away = ret - back;
    p.arrive_home = ret;
    return p;
  }
  if (u(kDaySlotWeekendTrip) >= kWeekendTripProbability) return p;
  const int out = uniform_int(u(kDaySlotDriveOut), kWeekendDriveMin, kWeekendDriveMax);
  const int back = uniform_int(u(kDaySlotDriveBack), kWeekendDriveMin, kWeekendDriveMax);
  p.leave_home = uniform_int(u(kDaySlotWeekendStart), kWeekendStartMin, kWeekendStartMax);
  p.arrive_away = p.leave_home + out;
  p.leave_away = p.arrive_away + uniform_int(u(kDaySlotWeekendStay), kWeekendStayMin, kWeekendStayMax);
  p.arrive_home = p.leave_away + back;
  return p;
}

enum class Where : uint8_t { kHome = 0, kDriving, kAway };

// ---- A shard ------------------------------------------------------------------

// What every shard shares: the scenario's derived numbers.
struct Context {
  const Scenario* scenario = nullptr;
  const FleetPolicyTables* tables = nullptr;
  uint64_t vehicles = 0;
  uint64_t seed = 0;
  int days = 0;
  int bin_minutes = 0;
  size_t bins = 0;
  size_t models = 0;
  // Seconds of a computer's time per output token of a model, its prompt's
  // prefill included: [computer * models + model], infinite where the
  // computer does not serve the model.
  std::vector<double> seconds_per_token;
  std::vector<double> model_share;      // demand shares, normalised
  // Models in the order flows are given capacity: those the fewest vehicles
  // can serve first (the scheduler's queue has them waiting longest for the
  // few vehicles that can take them).
  std::vector<uint32_t> model_order;
  Fidelity fidelity = Fidelity::kFleetScale;
  double job_redone_tokens = 0.0;       // demand-weighted prompt + half the completion
  double owner_micros_per_output_token = 0.0;  // revenue share, prompt tokens included
  double wear_per_hour = 1.0;           // core::wear_hours for an hour at ambient
};

struct Car {
  FleetVehicle v;
  uint64_t key = 0;
  double soc_pct = 0.0;
  double wear_hours = 0.0;
  double earnings = 0.0;     // currency units over the run
  TimeMs cursor = 0;         // advanced to here
  int64_t plan_day = std::numeric_limits<int64_t>::min();
  DayPlan plan;
  int next_event = 0;        // of the plan's four
  bool plugged = false;
  std::optional<TimeMs> next_departure;
  // This bin: the share of it the car offers, and whether a driver ends it.
  double offered = 0.0;
  bool cut = false;
  double busy_h = 0.0;   // serving, this bin
  double tokens = 0.0;   // output tokens produced, this bin
};

struct ShardOut {
  std::vector<FleetBin> bins;
  std::vector<uint32_t> wait_histograms;  // detailed: kWaitBuckets per bin
  uint64_t jobs_placed = 0;
  std::vector<uint32_t> earnings_cents;  // histogram
  double earnings_sum = 0.0;
};

class Shard {
 public:
  Shard(const Context& ctx, uint64_t first, uint64_t count) : ctx_(ctx), s_(*ctx.scenario), cars_(count) {
    off_ = s_.fleet.utc_offset_minutes;
    for (uint64_t i = 0; i < count; ++i) {
      Car& c = cars_[i];
      c.v = fleet_vehicle(s_, ctx.seed, first + i);
      c.key = vehicle_key(ctx.seed, first + i);
      c.soc_pct = c.v.initial_soc_pct;
      c.cursor = s_.start_ms;
      c.plugged = fleet_initially_plugged(s_, c.v, ctx.seed, first + i);
      ensure_plan(c, s_.start_ms);
      // Events before the start are past: the car is where its plan puts it.
      const TimeMs midnight = local_midnight(c.plan_day);
      while (c.next_event < 4 && event_at(c, midnight, c.next_event) < s_.start_ms) ++c.next_event;
      if (where(c, s_.start_ms) != Where::kHome) c.plugged = false;
    }
    shard_share_ = static_cast<double>(count) / static_cast<double>(ctx.vehicles);
    if (ctx.fidelity == Fidelity::kDetailed) {
      jobs_ = std::make_unique<ShardJobs>(s_, ctx.seed, first, count, shard_share_);
      job_cars_.resize(count);
      work_.resize(count);
    }
  }

  // `bins_done` (may be null) counts the bins simulated, for progress.
  ShardOut run(std::atomic<uint64_t>* bins_done) {
    ShardOut out;
    out.bins.resize(ctx_.bins);
    out.earnings_cents.assign(kEarningsCentsMax + 1, 0);
    if (jobs_) out.wait_histograms.assign(ctx_.bins * kWaitBuckets, 0);
    const DurationMs bin_ms = static_cast<DurationMs>(ctx_.bin_minutes) * core::kMinuteMs;
    const double bin_s = static_cast<double>(bin_ms) / 1000.0;
    const double bin_h = bin_s / 3600.0;
    const ScenarioPricing& pricing = s_.pricing;
    std::vector<double> price_now(s_.tariffs.size());
    std::vector<double> backlog(ctx_.models, 0.0);  // batch output tokens, by model
    std::vector<double> class_seconds(s_.computers.size());  // offered computer time, by class
    std::vector<double> class_left(s_.computers.size());
    std::vector<double> class_tokens(s_.computers.size());
    int64_t month = core::local_month_index(s_.start_ms, off_);
    int64_t batch_day = std::numeric_limits<int64_t>::min();
    for (size_t b = 0; b < ctx_.bins; ++b) {
      if (bins_done != nullptr) bins_done->fetch_add(1, std::memory_order_relaxed);
      const TimeMs t = s_.start_ms + static_cast<TimeMs>(b) * bin_ms;
      const TimeMs t_end = t + bin_ms;
      const core::LocalTime local = core::to_local(t, off_);
      FleetBin& bin = out.bins[b];
      bin.start_ms = t;
      if (const int64_t m = core::local_month_index(t, off_); m != month) {
        month = m;
        for (Car& c : cars_) c.wear_hours = 0.0;
      }
      if (const int64_t d = floor_div(t + off_ * core::kMinuteMs, core::kDayMs); d != batch_day) {
        batch_day = d;
        for (size_t m = 0; m < ctx_.models; ++m) {
          backlog[m] += s_.demand.batch_tokens_per_day * shard_share_ * ctx_.model_share[m];
        }
        if (jobs_) jobs_->add_batch_day();
      }
      for (size_t i = 0; i < s_.tariffs.size(); ++i) {
        price_now[i] = static_cast<double>(core::price_at(s_.tariffs[i].tariff, local)) / 1e6;
      }

      // Where every car is, and what the eligible ones offer.
      double available_kw = 0.0;
      std::fill(class_seconds.begin(), class_seconds.end(), 0.0);
      for (size_t i = 0; i < cars_.size(); ++i) {
        Car& c = cars_[i];
        advance(c, t);
        c.offered = 0.0;
        c.cut = false;
        if (jobs_) job_cars_[i].available = false;
        const Where w = where(c, t);
        if (w == Where::kDriving) {
          ++bin.vehicles_driving;
          continue;
        }
        if (c.plugged) {
          ++bin.vehicles_plugged;
        } else {
          ++bin.vehicles_parked;
        }
        if (!c.next_departure || *c.next_departure < t) c.next_departure = fleet_next_departure(s_, c.v, t);
        const FleetVehicleState state{true, c.plugged, c.soc_pct, c.wear_hours};
        if (!fleet_eligible(s_, *ctx_.tables, c.v, state, c.next_departure, t)) continue;
        ++bin.vehicles_eligible;
        TimeMs stop = t_end;
        if (c.next_departure) stop = std::min(stop, *c.next_departure - s_.policies[c.v.policy].policy.departure_margin_ms);
        if (c.plan.leave_home >= 0) {
          const TimeMs midnight = local_midnight(c.plan_day);
          const TimeMs leave = w == Where::kHome ? midnight + c.plan.leave_home * core::kMinuteMs
                                                 : midnight + c.plan.leave_away * core::kMinuteMs;
          if (leave > t && leave < stop) {
            stop = leave;
            c.cut = true;
          }
        }
        c.offered = static_cast<double>(stop - t) / static_cast<double>(bin_ms);
        class_seconds[c.v.computer] += c.offered * bin_s;
        available_kw += c.offered * s_.computers[c.v.computer].power_kw;
        if (jobs_) {
          const core::OwnerPolicy& policy = s_.policies[c.v.policy].policy;
          JobCar& jc = job_cars_[i];
          jc.computer = c.v.computer;
          jc.available = true;
          jc.stop = stop;
          jc.driver_leaves = c.cut;
          jc.departure_earliest = c.next_departure ? *c.next_departure : t + kNoDepartureHorizonMs;
          jc.price_micros_per_kwh = static_cast<int64_t>(std::llround(price_now[c.v.tariff] * 1e6));
          jc.accelerator_temp_limit_c = policy.accelerator_temp_limit_c;
          jc.wear_budget_left_fraction =
              policy.wear_budget_hours_per_month > 0.0
                  ? std::max(0.0, 1.0 - c.wear_hours / policy.wear_budget_hours_per_month)
                  : 0.0;
        }
      }

      const double demand_tps =
          s_.demand.interactive_peak_tokens_per_second * s_.demand.interactive_hourly[local.minute_of_day / 60] *
          shard_share_;
      bin.interactive_demand_tps = demand_tps;
      bin.compute_available_gw = available_kw / 1e6;
      if (jobs_) {
        // Single jobs, placed by the real scheduler (sim/jobs.h).
        const JobBinStats st = jobs_->serve_bin(t, t_end, demand_tps, job_cars_, work_);
        bin.interactive_tps = st.interactive_tokens / bin_s;
        bin.batch_tps = st.batch_tokens / bin_s;
        bin.interactive_unmet_tps = st.interactive_dropped_tokens / bin_s;
        bin.batch_backlog_tokens = st.batch_backlog_tokens;
        bin.preemptions = st.preemptions;
        bin.work_redone_tokens = st.work_redone_tokens;
        bin.interactive_jobs_started = st.interactive_started;
        bin.interactive_wait_ms_mean = st.interactive_wait_ms_sum;  // a sum until the shards are merged
        std::copy(st.wait_histogram.begin(), st.wait_histogram.end(),
                  out.wait_histograms.begin() + static_cast<std::ptrdiff_t>(b * kWaitBuckets));
      } else {
        // Flows: interactive first, then the batch backlog with what is left;
        // each model, the most restricted first, takes its tokens from the
        // classes that can serve it, in proportion to their time left.
        class_left = class_seconds;
        std::fill(class_tokens.begin(), class_tokens.end(), 0.0);
        auto serve = [&](uint32_t m, double tokens_asked) {
          double capacity = 0.0;
          for (size_t k = 0; k < class_left.size(); ++k) {
            const double spt = ctx_.seconds_per_token[k * ctx_.models + m];
            if (std::isfinite(spt)) capacity += class_left[k] / spt;
          }
          if (!(capacity > 0.0) || !(tokens_asked > 0.0)) return 0.0;
          const double served = std::min(tokens_asked, capacity);
          const double f = served / capacity;
          for (size_t k = 0; k < class_left.size(); ++k) {
            const double spt = ctx_.seconds_per_token[k * ctx_.models + m];
            if (!std::isfinite(spt)) continue;
            class_tokens[k] += f * class_left[k] / spt;
            class_left[k] -= f * class_left[k];
          }
          return served;
        };
        double interactive_tokens = 0.0, batch_tokens = 0.0, batch_left = 0.0;
        for (uint32_t m : ctx_.model_order) interactive_tokens += serve(m, demand_tps * bin_s * ctx_.model_share[m]);
        for (uint32_t m : ctx_.model_order) {
          const double served = serve(m, backlog[m]);
          backlog[m] -= served;
          batch_tokens += served;
          batch_left += backlog[m];
        }
        bin.interactive_tps = interactive_tokens / bin_s;
        bin.batch_tps = batch_tokens / bin_s;
        bin.interactive_unmet_tps = demand_tps - bin.interactive_tps;
        bin.batch_backlog_tokens = batch_left;
        // Each class's used time is spread evenly over its eligible cars; a
        // car whose driver leaves while it serves is a preemption.
        for (size_t i = 0; i < cars_.size(); ++i) {
          Car& c = cars_[i];
          const size_t k = c.v.computer;
          const double used = class_seconds[k] > 0.0 ? 1.0 - class_left[k] / class_seconds[k] : 0.0;
          c.busy_h = used * c.offered * bin_h;
          c.tokens = class_seconds[k] > 0.0 ? class_tokens[k] * c.offered * bin_s / class_seconds[k] : 0.0;
          if (c.busy_h > 0.0 && c.cut) {
            bin.preemptions += used;
            bin.work_redone_tokens += used * ctx_.job_redone_tokens;
          }
        }
      }

      // The serving cars draw their computer's power and earn their part.
      for (size_t i = 0; i < cars_.size(); ++i) {
        Car& c = cars_[i];
        if (jobs_) {
          c.busy_h = static_cast<double>(work_[i].busy_ms) / static_cast<double>(core::kHourMs);
          c.tokens = work_[i].interactive_tokens + work_[i].batch_tokens;
        }
        if (c.busy_h <= 0.0 && c.tokens <= 0.0) continue;
        const double power_kw = s_.computers[c.v.computer].power_kw;
        const double kwh = power_kw * c.busy_h;
        c.soc_pct = std::max(0.0, c.soc_pct - 100.0 * kwh / c.v.battery_kwh);
        c.wear_hours += c.busy_h;
        // Paid: revenue share, the energy refunded at the tariff, the wear
        // allowance; the refund cancels the owner's bill for that energy.
        c.earnings += c.tokens * ctx_.owner_micros_per_output_token / 1e6 +
                      static_cast<double>(pricing.wear_micros_per_accelerator_hour) * c.busy_h / 1e6;
        bin.vehicles_serving += c.busy_h / bin_h;
        bin.compute_used_gw += power_kw * c.busy_h / bin_h / 1e6;
        bin.energy_kwh += kwh;
        bin.energy_cost += kwh * price_now[c.v.tariff];
        bin.battery_kwh += c.plugged ? std::max(0.0, kwh - c.v.charger_kw * kChargeEfficiency * c.busy_h) : kwh;
        bin.wear_hours += c.busy_h * ctx_.wear_per_hour;
      }
    }
    if (jobs_) out.jobs_placed = jobs_->jobs_placed();
    const double month_scale = kMonthDays / static_cast<double>(ctx_.days);
    for (const Car& c : cars_) {
      const double month_earnings = c.earnings * month_scale;
      out.earnings_sum += month_earnings;
      const double cents = std::clamp(std::floor(month_earnings * 100.0), 0.0, static_cast<double>(kEarningsCentsMax));
      ++out.earnings_cents[static_cast<size_t>(cents)];
    }
    return out;
  }

 private:
  TimeMs local_midnight(int64_t day) const { return day * core::kDayMs - off_ * core::kMinuteMs; }

  void ensure_plan(Car& c, TimeMs t) {
    const int64_t day = floor_div(t + off_ * core::kMinuteMs, core::kDayMs);
    if (day == c.plan_day) return;
    c.plan_day = day;
    const bool weekend = core::to_local(local_midnight(day), off_).weekend();
    c.plan = day_plan(s_, c.v, c.key, day, weekend);
    c.next_event = c.plan.leave_home < 0 ? 4 : 0;
  }

  static TimeMs event_at(const Car& c, TimeMs midnight, int event) {
    const int minute = event == 0 ? c.plan.leave_home
                       : event == 1 ? c.plan.arrive_away
                       : event == 2 ? c.plan.leave_away
                                    : c.plan.arrive_home;
    return midnight + static_cast<TimeMs>(minute) * core::kMinuteMs;
  }

  // REQUIRES: the car's plan is for t's local day.
  Where where(const Car& c, TimeMs t) const {
    if (c.plan.leave_home < 0) return Where::kHome;
    const TimeMs midnight = local_midnight(c.plan_day);
    if (t < event_at(c, midnight, 0) || t >= event_at(c, midnight, 3)) return Where::kHome;
    if (t < event_at(c, midnight, 1) || t >= event_at(c, midnight, 2)) return Where::kDriving;
    return Where::kAway;
  }

  // Charges while plugged in over [from, to): linear up to the charge limit.
  void charge(Car& c, TimeMs from, TimeMs to) const {
    if (!c.plugged || c.soc_pct >= kChargeLimitPct) return;
    const double hours = static_cast<double>(to - from) / static_cast<double>(core::kHourMs);
    c.soc_pct = std::min(kChargeLimitPct, c.soc_pct + 100.0 * c.v.charger_kw * kChargeEfficiency * hours /
                                                          c.v.battery_kwh);
  }

  // Moves the car to `to` through its plan's events, in closed form between them.
  void advance(Car& c, TimeMs to) {
    while (c.cursor < to) {
      ensure_plan(c, c.cursor);
      const TimeMs midnight = local_midnight(c.plan_day);
      const TimeMs event = c.next_event < 4 ? event_at(c, midnight, c.next_event) : std::numeric_limits<TimeMs>::max();
      if (event <= c.cursor) {
        apply_event(c);
        continue;
      }
      const TimeMs end = std::min({to, event, midnight + core::kDayMs});
      charge(c, c.cursor, end);
      c.cursor = end;
    }
    ensure_plan(c, to);
    // Events exactly at `to` belong to it (a departure at t: the car is driving at t).
    const TimeMs midnight = local_midnight(c.plan_day);
    while (c.next_event < 4 && event_at(c, midnight, c.next_event) <= to) {
      apply_event(c);
    }
  }

  // The plan's next event: leaving home unplugs the car and spends the trip
  // out, leaving the place away spends the trip back, arriving home plugs in.
  void apply_event(Car& c) const {
    switch (c.next_event) {
      case 0:
        c.plugged = false;
        c.soc_pct = std::max(0.0, c.soc_pct - 100.0 * c.plan.energy_out_kwh / c.v.battery_kwh);
        break;
      case 2:
        c.soc_pct = std::max(0.0, c.soc_pct - 100.0 * c.plan.energy_back_kwh / c.v.battery_kwh);
        break;
      case 3:
        c.plugged = c.v.home_charger &&
                    (c.plan.plug_u < s_.fleet.plug_in_probability || c.soc_pct < kAlwaysPlugInBelowSocPct);
        // A car without a home charger charges elsewhere (a fast charger on
        // the way, not modelled in time) when it runs low.
        if (!c.v.home_charger && c.soc_pct < kAlwaysPlugInBelowSocPct) c.soc_pct = kPublicChargeToPct;
        break;
      default:
        break;
    }
    ++c.next_event;
  }

  const Context& ctx_;
  const Scenario& s_;
  std::vector<Car> cars_;
  int off_ = 0;
  double shard_share_ = 0.0;
  std::unique_ptr<ShardJobs> jobs_;  // the detailed fidelity only
  std::vector<JobCar> job_cars_;
  std::vector<CarWork> work_;
};

}  // namespace

// ---- One vehicle --------------------------------------------------------------

FleetVehicle fleet_vehicle(const Scenario& s, uint64_t seed, uint64_t index) {
  const uint64_t key = vehicle_key(seed, index);
  auto u = [&](uint64_t slot) { return unit(key, slot); };
  FleetVehicle v;
  v.computer = pick(s.computers, [](const ScenarioComputer& c) { return c.share; }, u(kSlotComputer));
  v.tariff = pick(s.tariffs, [](const ScenarioTariff& t) { return t.share; }, u(kSlotTariff));
  v.policy = pick(s.policies, [](const ScenarioPolicy& p) { return p.share; }, u(kSlotPolicy));
  v.home_charger = !s.chargers.empty() && u(kSlotCharger) < s.fleet.home_charging_share;
  if (v.home_charger) {
    v.charger_kw = s.chargers[pick(s.chargers, [](const ScenarioCharger& c) { return c.share; }, u(kSlotChargerClass))]
                       .power_kw;
  }
  v.battery_kwh = std::min(core::kBatteryCapacityKwhMax,
                           s.fleet.battery_kwh * (kBatteryShareMin + kBatteryShareSpan * u(kSlotBattery)));
  v.departure_minute = minute_from_hour_shares(kTrondheimPlugoutShareByHour, kDepartureHourMin, kDepartureHourEnd,
                                               u(kSlotDepartHour), u(kSlotDepartMinute));
  const int return_hour_min = (v.departure_minute + kReturnAfterDepartureMin + 59) / 60;
  v.return_minute = std::max(v.departure_minute + kReturnAfterDepartureMin,
                             minute_from_hour_shares(kTrondheimPluginShareByHour, return_hour_min, 24,
                                                     u(kSlotReturnHour), u(kSlotReturnMinute)));
  v.initial_soc_pct = kInitialSocPctMin + kInitialSocPctSpan * u(kSlotInitialSoc);
  return v;
}

FleetDayPlan fleet_day_plan(const Scenario& s, const FleetVehicle& v, uint64_t seed, uint64_t index,
                            int64_t local_day) {
  const TimeMs midnight = local_day * core::kDayMs - s.fleet.utc_offset_minutes * core::kMinuteMs;
  const bool weekend = core::to_local(midnight, s.fleet.utc_offset_minutes).weekend();
  return day_plan(s, v, vehicle_key(seed, index), local_day, weekend);
}

bool fleet_initially_plugged(const Scenario& s, const FleetVehicle& v, uint64_t seed, uint64_t index) {
  return v.home_charger && unit(vehicle_key(seed, index), kSlotInitialPlug) < s.fleet.plug_in_probability;
}

std::optional<TimeMs> fleet_next_departure(const Scenario& s, const FleetVehicle& v, TimeMs now) {
  const ScenarioPolicy& p = s.policies[v.policy];
  if (!p.declares_departures) return core::next_declared_departure(p.policy, now, s.fleet.utc_offset_minutes);
  std::optional<TimeMs> best;
  for (int d = 0; d < 5; ++d) {
    const TimeMs t =
        core::next_local_minute_of_week(now, s.fleet.utc_offset_minutes, d * core::kMinutesPerDay + v.departure_minute);
    if (!best || t < *best) best = t;
  }
  return best;
}

core::EligibilityInputs fleet_eligibility_inputs(const Scenario& s, const FleetVehicle& v,
                                                 const FleetVehicleState& state, TimeMs now) {
  core::EligibilityInputs in;
  const ScenarioPolicy& p = s.policies[v.policy];
  in.policy = p.policy;
  in.policy.tariff = s.tariffs[v.tariff].tariff;
  if (p.declares_departures) {
    in.policy.departures_minute_of_week.clear();
    for (int d = 0; d < 5; ++d) in.policy.departures_minute_of_week.push_back(d * core::kMinutesPerDay + v.departure_minute);
  }
  core::VehicleSignals& sig = in.signals;
  sig.speed_kmh = state.parked ? 0.0 : 50.0;
  sig.gear = state.parked ? core::kGearPark : 1;
  sig.soc_pct = state.soc_pct;
  sig.is_charging = state.plugged;
  sig.charger_connected = state.plugged;
  sig.charger_power_kw = state.plugged ? v.charger_kw : 0.0;
  sig.driver_seat_occupied = !state.parked;
  sig.driver_door_open = false;
  sig.ambient_temperature_c = s.fleet.ambient_c;
  sig.accelerator_temperature_c = s.fleet.ambient_c;
  sig.heard_at = now;
  in.utc_offset_minutes = s.fleet.utc_offset_minutes;
  in.battery_capacity_kwh = v.battery_kwh;
  in.charge_power_kw = v.charger_kw * kChargeEfficiency;
  in.inference_power_kw = s.computers[v.computer].power_kw;
  in.wear_used_hours = std::min(state.wear_used_hours, core::kWearUsedHoursMax);
  return in;
}

FleetPolicyTables::FleetPolicyTables(const Scenario& s) : tariffs_(s.tariffs.size()) {
  const size_t bits = s.policies.size() * tariffs_ * core::kMinutesPerWeek;
  bits_.assign((bits + 63) / 64, 0);
  for (size_t p = 0; p < s.policies.size(); ++p) {
    const core::OwnerPolicy& policy = s.policies[p].policy;
    for (size_t t = 0; t < tariffs_; ++t) {
      for (int w = 0; w < core::kMinutesPerWeek; ++w) {
        bool ok = false;
        for (const core::WeeklyWindow& win : policy.allowed_windows) {
          ok = ok || (w >= win.start_minute_of_week && w < win.end_minute_of_week);
        }
        if (ok && policy.price_cap_micros_per_kwh) {
          const core::LocalTime local{static_cast<core::Weekday>(w / core::kMinutesPerDay), w % core::kMinutesPerDay};
          ok = core::price_at(s.tariffs[t].tariff, local) <= *policy.price_cap_micros_per_kwh;
        }
        if (!ok) continue;
        const size_t bit = (p * tariffs_ + t) * core::kMinutesPerWeek + static_cast<size_t>(w);
        bits_[bit >> 6] |= uint64_t{1} << (bit & 63);
      }
    }
  }
}

bool fleet_eligible(const Scenario& s, const FleetPolicyTables& tables, const FleetVehicle& v,
                    const FleetVehicleState& state, std::optional<TimeMs> next_departure, TimeMs now) {
  const core::OwnerPolicy& p = s.policies[v.policy].policy;
  if (!p.opted_in || !state.parked || state.soc_pct <= p.soc_floor_pct) return false;
  if (next_departure) {
    const TimeMs deadline = *next_departure - p.departure_margin_ms;
    if (now >= deadline) return false;
    const double net_kw = (state.plugged ? v.charger_kw * kChargeEfficiency : 0.0) - s.computers[v.computer].power_kw;
    const TimeMs horizon = net_kw < 0.0 ? *next_departure : deadline;
    const double hours = static_cast<double>(horizon - now) / static_cast<double>(core::kHourMs);
    if (state.soc_pct + 100.0 * net_kw * hours / v.battery_kwh < p.target_soc_pct) return false;
  }
  if (s.fleet.ambient_c >= p.accelerator_temp_limit_c) return false;
  if (!tables.allowed(v.policy, v.tariff, core::to_local(now, s.fleet.utc_offset_minutes).minute_of_week())) {
    return false;
  }
  return std::min(state.wear_used_hours, core::kWearUsedHoursMax) < p.wear_budget_hours_per_month;
}

// ---- The run --------------------------------------------------------------------

Result<FleetScaleResult> run_fleet_scale(const Scenario& scenario, const FleetScaleOptions& options) {
  const uint64_t vehicles = options.vehicles.value_or(scenario.fleet.vehicles);
  const int days = options.days.value_or(scenario.days);
  if (vehicles < 1 || vehicles > kScenarioVehiclesMax) {
    return Unexpected(ErrorCode::kOutOfRange, "vehicles " + std::to_string(vehicles) + " is outside [1, " +
                                                  std::to_string(kScenarioVehiclesMax) + "]");
  }
  if (days < 1 || days > kScenarioDaysMax) {
    return Unexpected(ErrorCode::kOutOfRange,
                      "days " + std::to_string(days) + " is outside [1, " + std::to_string(kScenarioDaysMax) + "]");
  }
  if (options.threads < 1 || options.threads > kFleetThreadsMax) {
    return Unexpected(ErrorCode::kOutOfRange, "threads " + std::to_string(options.threads) + " is outside [1, " +
                                                  std::to_string(kFleetThreadsMax) + "]");
  }
  if (options.bin_minutes < kFleetBinMinutesMin || options.bin_minutes > kFleetBinMinutesMax ||
      core::kMinutesPerDay % options.bin_minutes != 0) {
    return Unexpected(ErrorCode::kOutOfRange, "bin_minutes " + std::to_string(options.bin_minutes) +
                                                  " must be in [1, 60] and divide a day (1440 minutes)");
  }
  if (options.shard_vehicles < 1 || options.shard_vehicles > kFleetShardVehiclesMax) {
    return Unexpected(ErrorCode::kOutOfRange, "shard_vehicles " + std::to_string(options.shard_vehicles) +
                                                  " is outside [1, " + std::to_string(kFleetShardVehiclesMax) + "]");
  }
  if (options.fidelity == Fidelity::kDetailed && vehicles > kDetailedVehiclesMax) {
    return Unexpected(ErrorCode::kOutOfRange, "vehicles " + std::to_string(vehicles) +
                                                  " is over the detailed fidelity's " +
                                                  std::to_string(kDetailedVehiclesMax) +
                                                  " (the fleet-scale fidelity runs up to a billion)");
  }
  IF_RETURN_IF_ERROR(check_scenario(scenario));

  const FleetPolicyTables tables(scenario);
  Context ctx;
  ctx.scenario = &scenario;
  ctx.tables = &tables;
  ctx.vehicles = vehicles;
  ctx.seed = options.seed.value_or(scenario.seed);
  ctx.days = days;
  ctx.bin_minutes = options.bin_minutes;
  ctx.bins = static_cast<size_t>(days) * static_cast<size_t>(core::kMinutesPerDay / options.bin_minutes);
  ctx.models = scenario.models.size();
  ctx.seconds_per_token.assign(scenario.computers.size() * ctx.models, std::numeric_limits<double>::infinity());
  std::vector<double> servable_share(ctx.models, 0.0);  // the fleet share of the classes serving each model
  for (size_t k = 0; k < scenario.computers.size(); ++k) {
    for (size_t m = 0; m < ctx.models; ++m) {
      const double spt = seconds_per_token(scenario.computers[k], scenario.models[m]);
      ctx.seconds_per_token[k * ctx.models + m] = spt;
      if (std::isfinite(spt)) servable_share[m] += scenario.computers[k].share;
    }
  }
  for (uint32_t m = 0; m < ctx.models; ++m) ctx.model_order.push_back(m);
  std::stable_sort(ctx.model_order.begin(), ctx.model_order.end(),
                   [&](uint32_t a, uint32_t b) { return servable_share[a] < servable_share[b]; });
  double share_sum = 0.0;
  double completion = 0.0;
  double prompt = 0.0;
  for (const ScenarioModel& m : scenario.models) {
    share_sum += m.demand_share;
    completion += m.demand_share * static_cast<double>(m.completion_tokens);
    prompt += m.demand_share * static_cast<double>(m.prompt_tokens);
  }
  ctx.wear_per_hour =
      core::wear_hours(core::WearParams{}, scenario.fleet.ambient_c + kServingTempRiseC, core::kHourMs);
  for (const ScenarioModel& m : scenario.models) ctx.model_share.push_back(share_sum > 0.0 ? m.demand_share / share_sum : 0.0);
  ctx.job_redone_tokens = share_sum > 0.0 ? (prompt + completion / 2.0) / share_sum : 0.0;
  ctx.fidelity = options.fidelity;
  const double prompt_per_output = completion > 0.0 ? prompt / completion : 0.0;
  ctx.owner_micros_per_output_token =
      (static_cast<double>(scenario.pricing.output_micros_per_mtok) +
       static_cast<double>(scenario.pricing.input_micros_per_mtok) * prompt_per_output) /
      1e6 * static_cast<double>(scenario.pricing.owner_share_ppm) / 1e6;

  FleetScaleResult result;
  result.fidelity = options.fidelity == Fidelity::kDetailed ? "detailed" : "fleet-scale";
  result.vehicles = vehicles;
  result.days = days;
  result.seed = ctx.seed;
  result.bin_minutes = options.bin_minutes;
  result.bins.resize(ctx.bins);
  std::vector<uint64_t> histogram(kEarningsCentsMax + 1, 0);
  std::vector<uint64_t> waits(options.fidelity == Fidelity::kDetailed ? ctx.bins * kWaitBuckets : 0, 0);
  double earnings_sum = 0.0;

  const uint64_t shard_vehicles = options.shard_vehicles;
  const uint64_t shards = (vehicles + shard_vehicles - 1) / shard_vehicles;
  const uint64_t threads = static_cast<uint64_t>(options.threads);
  const uint64_t batch = threads * kShardsPerThreadPerBatch;
  std::atomic<uint64_t> bins_done{0};
  for (uint64_t first = 0; first < shards; first += batch) {
    const uint64_t count = std::min(batch, shards - first);
    std::vector<ShardOut> outs(count);
    std::atomic<uint64_t> next{0};
    auto work = [&]() {
      for (uint64_t i = next.fetch_add(1); i < count; i = next.fetch_add(1)) {
        const uint64_t shard = first + i;
        const uint64_t begin = shard * shard_vehicles;
        Shard sh(ctx, begin, std::min(shard_vehicles, vehicles - begin));
        outs[i] = sh.run(&bins_done);
      }
    };
    // The workers run the shards; this thread reports progress by bins
    // (a detailed shard can take minutes) until they are done.
    std::mutex mu;
    std::condition_variable cv;
    uint64_t workers_done = 0;
    const uint64_t workers = std::min(threads, count);
    std::vector<std::thread> pool;
    for (uint64_t k = 0; k < workers; ++k) {
      pool.emplace_back([&] {
        work();
        std::lock_guard<std::mutex> lock(mu);
        ++workers_done;
        cv.notify_one();
      });
    }
    {
      std::unique_lock<std::mutex> lock(mu);
      while (!cv.wait_for(lock, kProgressInterval, [&] { return workers_done == workers; })) {
        if (options.progress) {
          options.progress(static_cast<double>(bins_done.load(std::memory_order_relaxed)) /
                           static_cast<double>(shards * ctx.bins));
        }
      }
    }
    for (std::thread& th : pool) th.join();
    // In shard order: the sums are the same whatever thread computed what.
    for (const ShardOut& o : outs) {
      for (size_t b = 0; b < ctx.bins; ++b) {
        FleetBin& r = result.bins[b];
        const FleetBin& x = o.bins[b];
        r.start_ms = x.start_ms;
        r.vehicles_driving += x.vehicles_driving;
        r.vehicles_parked += x.vehicles_parked;
        r.vehicles_plugged += x.vehicles_plugged;
        r.vehicles_eligible += x.vehicles_eligible;
        r.vehicles_serving += x.vehicles_serving;
        r.compute_available_gw += x.compute_available_gw;
        r.compute_used_gw += x.compute_used_gw;
        r.interactive_demand_tps += x.interactive_demand_tps;
        r.interactive_tps += x.interactive_tps;
        r.batch_tps += x.batch_tps;
        r.interactive_unmet_tps += x.interactive_unmet_tps;
        r.batch_backlog_tokens += x.batch_backlog_tokens;
        r.preemptions += x.preemptions;
        r.work_redone_tokens += x.work_redone_tokens;
        r.energy_kwh += x.energy_kwh;
        r.energy_cost += x.energy_cost;
        r.battery_kwh += x.battery_kwh;
        r.wear_hours += x.wear_hours;
        r.interactive_jobs_started += x.interactive_jobs_started;
        r.interactive_wait_ms_mean += x.interactive_wait_ms_mean;  // sums, divided below
      }
      for (size_t k = 0; k < o.wait_histograms.size(); ++k) waits[k] += o.wait_histograms[k];
      result.jobs_placed += o.jobs_placed;
      for (size_t k = 0; k < histogram.size(); ++k) histogram[k] += o.earnings_cents[k];
      earnings_sum += o.earnings_sum;
    }
    if (options.progress) options.progress(static_cast<double>(first + count) / static_cast<double>(shards));
  }

  if (!waits.empty()) {
    for (size_t b = 0; b < ctx.bins; ++b) {
      FleetBin& r = result.bins[b];
      if (r.interactive_jobs_started == 0) continue;
      r.interactive_wait_ms_mean /= static_cast<double>(r.interactive_jobs_started);
      // The 95th percentile: the upper edge of the bucket it falls in.
      const double rank = 0.95 * static_cast<double>(r.interactive_jobs_started);
      uint64_t seen = 0;
      for (size_t k = 0; k < kWaitBuckets; ++k) {
        seen += waits[b * kWaitBuckets + k];
        if (static_cast<double>(seen) >= rank) {
          r.interactive_wait_ms_p95 = k + 1 < kWaitBuckets ? wait_bucket_start_ms(k + 1) : wait_bucket_start_ms(k);
          break;
        }
      }
    }
  }

  auto percentile = [&](double q) {
    const double rank = q * static_cast<double>(vehicles);
    uint64_t seen = 0;
    for (size_t k = 0; k < histogram.size(); ++k) {
      seen += histogram[k];
      if (static_cast<double>(seen) >= rank) return static_cast<double>(k) / 100.0;
    }
    return static_cast<double>(kEarningsCentsMax) / 100.0;
  };
  result.earnings_month_p10 = percentile(0.10);
  result.earnings_month_p50 = percentile(0.50);
  result.earnings_month_p90 = percentile(0.90);
  result.earnings_month_mean = earnings_sum / static_cast<double>(vehicles);
  result.earnings_month_histogram.assign(kEarningsHistogramUnits + 1, 0);
  for (size_t k = 0; k < histogram.size(); ++k) {
    result.earnings_month_histogram[std::min(k / 100, kEarningsHistogramUnits)] += histogram[k];
  }
  return result;
}

Status write_timeseries_csv(const FleetScaleResult& result, std::ostream& out) {
  out << "bin_start_ms,vehicles_driving,vehicles_parked,vehicles_plugged,vehicles_eligible,vehicles_serving,"
         "compute_available_gw,compute_used_gw,interactive_demand_tps,interactive_tps,batch_tps,"
         "interactive_unmet_tps,batch_backlog_tokens,preemptions,work_redone_tokens,energy_kwh,energy_cost,"
         "battery_kwh,wear_hours,interactive_jobs_started,interactive_wait_ms_mean,interactive_wait_ms_p95\n";
  char line[768];
  for (const FleetBin& b : result.bins) {
    std::snprintf(line, sizeof line,
                  "%lld,%llu,%llu,%llu,%llu,%.3f,%.6f,%.6f,%.3f,%.3f,%.3f,%.3f,%.1f,%.3f,%.1f,%.3f,%.4f,%.3f,%.3f,%llu,%.1f,%.1f\n",
                  static_cast<long long>(b.start_ms), static_cast<unsigned long long>(b.vehicles_driving),
                  static_cast<unsigned long long>(b.vehicles_parked), static_cast<unsigned long long>(b.vehicles_plugged),
                  static_cast<unsigned long long>(b.vehicles_eligible), b.vehicles_serving, b.compute_available_gw,
                  b.compute_used_gw, b.interactive_demand_tps, b.interactive_tps, b.batch_tps, b.interactive_unmet_tps,
                  b.batch_backlog_tokens, b.preemptions, b.work_redone_tokens, b.energy_kwh, b.energy_cost, b.battery_kwh,
                  b.wear_hours, static_cast<unsigned long long>(b.interactive_jobs_started), b.interactive_wait_ms_mean,
                  b.interactive_wait_ms_p95);
    out << line;
  }
  if (!out) return Unexpected(ErrorCode::kIo, "writing the time series failed");
  return {};
}

}  // namespace idlefleet::sim
