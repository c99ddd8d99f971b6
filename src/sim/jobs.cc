#include "sim/jobs.h"

#include <algorithm>
#include <cmath>
#include <deque>
#include <limits>
#include <queue>
#include <set>
#include <string>

#include "common/check.h"
#include "common/random.h"
#include "core/coordinator_machine.h"
#include "core/scheduler.h"

namespace idlefleet::sim {

namespace {

using core::TimeMs;

constexpr uint64_t kJobsSalt = 0x4a4f4253ULL;  // "JOBS"
constexpr uint64_t kCachedSalt = 0x434143484544ULL;  // "CACHED"
constexpr double kGibBits = 8.0 * 1024.0 * 1024.0 * 1024.0;
// The coordinator's default departure margin for placement (PlacementRequest).
constexpr core::DurationMs kPlacementMarginMs = 5 * core::kMinuteMs;
constexpr uint32_t kNoCar = std::numeric_limits<uint32_t>::max();

struct Job {
  uint64_t seq = 0;      // submission order: the queue's order
  uint32_t model = 0;
  bool batch = false;
  bool started = false;  // placed at least once (its wait is counted once)
  double arrival_ms = 0.0;
  uint32_t produced = 0;  // output tokens kept from earlier attempts
};

struct OlderFirst {
  bool operator()(const Job& a, const Job& b) const { return a.seq > b.seq; }
};
using Requeued = std::priority_queue<Job, std::vector<Job>, OlderFirst>;

struct Running {
  bool active = false;
  Job job;
  double compute_from_ms = 0.0;   // after the download
  double decode_from_ms = 0.0;    // after the prefill
  double ms_per_token = 0.0;
  double finish_ms = 0.0;
  uint32_t remaining = 0;         // tokens this attempt is to produce
  double credited_tokens = 0.0;   // of those, counted so far
  double credited_until_ms = 0.0; // busy time counted up to here
  uint32_t generation = 0;        // invalidates a finished or cut attempt's events
};

struct Event {
  double at_ms = 0.0;
  uint32_t car = 0;
  uint32_t generation = 0;
  bool stop = false;  // the car stops being available (else its job finishes)
  bool operator>(const Event& o) const {
    if (at_ms != o.at_ms) return at_ms > o.at_ms;
    if (car != o.car) return car > o.car;
    return stop > o.stop;
  }
};

}  // namespace

size_t wait_bucket(double wait_ms) {
  if (!(wait_ms >= 1.0)) return 0;
  const double b = 1.0 + 4.0 * std::log2(wait_ms);
  return std::min(kWaitBuckets - 1, static_cast<size_t>(b));
}

double wait_bucket_start_ms(size_t bucket) {
  if (bucket == 0) return 0.0;
  return std::exp2(static_cast<double>(bucket - 1) / 4.0);
}

struct ShardJobs::Impl {
  const Scenario& s;
  uint64_t first_index = 0;
  double shard_share = 0.0;
  uint64_t key = 0;
  uint64_t draws = 0;
  uint64_t next_seq = 1;
  uint64_t placed = 0;

  // Per model.
  std::vector<uint64_t> model_bytes;
  std::vector<uint64_t> memory_bytes;          // per computer
  std::vector<double> download_bits;
  double vehicle_bps = 0.0;                    // one car's own link
  double shard_bps = 0.0;                      // the shard's part of the CDN's egress
  std::multiset<double> downloads_until;       // the shard's downloads in progress, by end
  std::vector<std::vector<uint32_t>> capable;  // computers that serve it
  std::vector<double> tps;                     // [computer * models + model], 0 when not served
  std::vector<core::DurationMs> expected_ms;   // a whole job on the slowest capable computer
  std::vector<core::PlacementRequest> requests;  // built once (the model's name is not copied per job)
  std::vector<std::deque<Job>> interactive;
  std::vector<Requeued> interactive_requeued;
  std::vector<Requeued> batch_requeued;
  std::vector<uint64_t> batch_pending;         // fresh batch jobs not yet materialised
  std::vector<double> batch_carry;             // fractions of a job

  // Per car.
  std::vector<std::string> ids;
  std::vector<uint16_t> cached;  // bit per model
  std::vector<uint32_t> completed, lost;
  std::vector<Running> running;
  std::vector<uint8_t> available;
  std::vector<uint32_t> idle_pos;  // position in its class's idle list, or kNoCar
  // Idle, available vehicles by computer class, each with its rotating cursor.
  std::vector<std::vector<uint32_t>> idle;
  std::vector<size_t> cursor;
  size_t idle_total = 0;

  std::priority_queue<Event, std::vector<Event>, std::greater<Event>> events;

  // The bin being run.
  std::span<const JobCar> cars;
  std::span<CarWork> work;
  JobBinStats* stats = nullptr;

  Impl(const Scenario& scenario, uint64_t seed, uint64_t first, size_t n, double share)
      : s(scenario), first_index(first), shard_share(share) {
    key = counter_random(seed ^ kJobsSalt, first);
    vehicle_bps = s.network.per_vehicle_mbps * 1e6;
    shard_bps = s.network.total_gbps * 1e9 * share;
    const size_t models = s.models.size();
    const size_t computers = s.computers.size();
    CHECK(models <= 16);
    tps.assign(computers * models, 0.0);
    for (const ScenarioComputer& comp : s.computers) {
      memory_bytes.push_back(static_cast<uint64_t>(comp.memory_gib * 1024.0 * 1024.0 * 1024.0));
    }
    capable.resize(models);
    for (size_t m = 0; m < models; ++m) {
      const ScenarioModel& model = s.models[m];
      model_bytes.push_back(static_cast<uint64_t>(model.memory_gib * 1024.0 * 1024.0 * 1024.0));
      download_bits.push_back(model.download_gib * kGibBits);
      double slowest = std::numeric_limits<double>::infinity();
      double slowest_speedup = 1.0;
      for (size_t c = 0; c < computers; ++c) {
        const ScenarioComputer& comp = s.computers[c];
        if (model.memory_gib > comp.memory_gib) continue;
        for (const auto& [name, v] : comp.tokens_per_second) {
          if (name != model.name || !(v > 0.0)) continue;
          tps[c * models + m] = v;
          capable[m].push_back(static_cast<uint32_t>(c));
          if (v < slowest) {
            slowest = v;
            slowest_speedup = comp.prefill_speedup;
          }
        }
      }
      expected_ms.push_back(
          std::isfinite(slowest)
              ? static_cast<core::DurationMs>(1000.0 * (static_cast<double>(model.prompt_tokens) /
                                                            (slowest * slowest_speedup) +
                                                        static_cast<double>(model.completion_tokens) / slowest))
              : 0);
    }
    for (size_t m = 0; m < models; ++m) {
      core::PlacementRequest r;
      r.model_id = s.models[m].name;
      r.model_bytes = model_bytes[m];
      r.departure_margin_ms = kPlacementMarginMs;
      requests.push_back(std::move(r));
    }
    interactive.resize(models);
    interactive_requeued.resize(models);
    batch_requeued.resize(models);
    batch_pending.assign(models, 0);
    batch_carry.assign(models, 0.0);

    ids.resize(n);
    cached.assign(n, 0);
    for (size_t i = 0; i < n; ++i) {
      ids[i] = std::to_string(first + i);
      const uint64_t car_key = counter_random(seed ^ kCachedSalt, first + i);
      for (size_t m = 0; m < models; ++m) {
        if (to_unit_double(counter_random(car_key, m)) < s.network.cached_share_at_start) {
          cached[i] |= static_cast<uint16_t>(1u << m);
        }
      }
    }
    completed.assign(n, 0);
    lost.assign(n, 0);
    running.resize(n);
    available.assign(n, 0);
    idle_pos.assign(n, kNoCar);
    idle.resize(computers);
    cursor.assign(computers, 0);
  }

  double draw() { return to_unit_double(counter_random(key, draws++)); }

  // A download starting now: at the car's own speed, or an equal share of
  // the shard's part of the CDN with the downloads in progress, whichever is
  // slower, fixed for its whole length. Returns its duration.
  double download_ms(uint32_t model, double now) {
    downloads_until.erase(downloads_until.begin(), downloads_until.upper_bound(now));
    const double bps =
        std::min(vehicle_bps, shard_bps / static_cast<double>(downloads_until.size() + 1));
    const double ms = 1000.0 * download_bits[model] / bps;
    downloads_until.insert(now + ms);
    return ms;
  }

  void idle_add(uint32_t car) {
    if (idle_pos[car] != kNoCar) return;
    std::vector<uint32_t>& list = idle[cars[car].computer];
    idle_pos[car] = static_cast<uint32_t>(list.size());
    list.push_back(car);
    ++idle_total;
  }
  void idle_remove(uint32_t car) {
    const uint32_t pos = idle_pos[car];
    if (pos == kNoCar) return;
    std::vector<uint32_t>& list = idle[cars[car].computer];
    const uint32_t last = list.back();
    list[pos] = last;
    idle_pos[last] = pos;
    list.pop_back();
    idle_pos[car] = kNoCar;
    --idle_total;
  }

  // Counts what the car's attempt did up to `until` (tokens and busy time).
  void credit(uint32_t car, double until) {
    Running& r = running[car];
    const double produced =
        std::clamp((until - r.decode_from_ms) / r.ms_per_token, 0.0, static_cast<double>(r.remaining));
    const double tokens = produced - r.credited_tokens;
    if (tokens > 0.0) {
      r.credited_tokens = produced;
      if (r.job.batch) {
        work[car].batch_tokens += tokens;
        stats->batch_tokens += tokens;
      } else {
        work[car].interactive_tokens += tokens;
        stats->interactive_tokens += tokens;
      }
    }
    const double from = std::max(r.credited_until_ms, r.compute_from_ms);
    if (until > from) work[car].busy_ms += static_cast<core::DurationMs>(std::llround(until - from));
    r.credited_until_ms = std::max(r.credited_until_ms, until);
  }

  void requeue(Job job) {
    if (job.batch) {
      batch_requeued[job.model].push(job);
    } else {
      interactive_requeued[job.model].push(job);
    }
  }

  // The vehicle stops the attempt: the job goes back with what it produced.
  void cut(uint32_t car, double now) {
    Running& r = running[car];
    credit(car, now);
    if (now >= r.compute_from_ms) {
      cached[car] |= static_cast<uint16_t>(1u << r.job.model);
    } else if (auto it = downloads_until.find(r.compute_from_ms); it != downloads_until.end()) {
      downloads_until.erase(it);  // the download stops with the attempt
    }
    Job job = r.job;
    job.produced += static_cast<uint32_t>(std::floor(r.credited_tokens));
    stats->preemptions += 1.0;
    stats->work_redone_tokens += static_cast<double>(s.models[job.model].prompt_tokens + job.produced);
    ++lost[car];
    r.active = false;
    ++r.generation;
    requeue(job);
  }

  void finish(uint32_t car, double now) {
    Running& r = running[car];
    credit(car, now);
    cached[car] |= static_cast<uint16_t>(1u << r.job.model);
    ++completed[car];
    ++stats->jobs_completed;
    r.active = false;
    ++r.generation;
    if (available[car]) idle_add(car);
  }

  void start(uint32_t car, Job job, double now) {
    const JobCar& jc = cars[car];
    const ScenarioModel& model = s.models[job.model];
    const ScenarioComputer& comp = s.computers[jc.computer];
    const double v = tps[jc.computer * s.models.size() + job.model];
    Running& r = running[car];
    if (!job.started) {
      job.started = true;
      if (!job.batch) {
        const double wait = std::max(0.0, now - job.arrival_ms);
        ++stats->interactive_started;
        stats->interactive_wait_ms_sum += wait;
        ++stats->wait_histogram[wait_bucket(wait)];
      }
    }
    r.active = true;
    r.job = job;
    r.compute_from_ms = now + ((cached[car] >> job.model) & 1 ? 0.0 : download_ms(job.model, now));
    r.ms_per_token = 1000.0 / v;
    r.decode_from_ms =
        r.compute_from_ms +
        1000.0 * static_cast<double>(model.prompt_tokens + job.produced) / (v * comp.prefill_speedup);
    r.remaining = static_cast<uint32_t>(model.completion_tokens) - job.produced;
    r.finish_ms = r.decode_from_ms + r.ms_per_token * static_cast<double>(r.remaining);
    r.credited_tokens = 0.0;
    r.credited_until_ms = now;
    idle_remove(car);
    events.push(Event{r.finish_ms, car, r.generation, false});
    ++placed;
  }

  // Places `job` on the best of a bounded sample of idle vehicles that can
  // hold its model, by core::place; false when none can take it. The sample
  // comes from the capable classes in proportion to their idle vehicles,
  // each from its rotating cursor: the coordinator's sample of its idle set,
  // less the vehicles that could not take the job.
  bool place(const Job& job, double now) {
    size_t capable_idle = 0;
    for (uint32_t c : capable[job.model]) capable_idle += idle[c].size();
    if (capable_idle == 0) return false;
    std::vector<core::VehicleCandidate>& cands = scratch_candidates;
    std::vector<uint32_t>& cars_of = scratch_cars;
    cands.clear();
    cars_of.clear();
    const size_t want = std::min(core::kPlacementCandidatesMax, capable_idle);
    for (uint32_t cls : capable[job.model]) {
      std::vector<uint32_t>& list = idle[cls];
      if (list.empty()) continue;
      const size_t n = list.size();
      const size_t quota = std::min(n, (want * n + capable_idle - 1) / capable_idle);
      size_t& at = cursor[cls];
      for (size_t k = 0; k < quota && cands.size() < core::kPlacementCandidatesMax; ++k) {
        if (at >= n) at = 0;
        const uint32_t car = list[at++];
        const JobCar& jc = cars[car];
        core::VehicleCandidate c;
        c.vehicle_id = ids[car];
        c.eligible = true;
        c.memory_free_bytes = memory_bytes[cls];
        c.model_cached = (cached[car] >> job.model) & 1;
        c.departure_earliest = jc.departure_earliest;
        c.energy_price_micros_per_kwh = jc.price_micros_per_kwh;
        c.accelerator_temp_c = s.fleet.ambient_c;
        c.accelerator_temp_limit_c = jc.accelerator_temp_limit_c;
        c.wear_budget_left_fraction = jc.wear_budget_left_fraction;
        c.attempts_completed = completed[car];
        c.attempts_lost = lost[car];
        cands.push_back(std::move(c));
        cars_of.push_back(car);
      }
    }
    core::PlacementRequest& req = requests[job.model];
    const double left = static_cast<double>(s.models[job.model].completion_tokens - job.produced) /
                        static_cast<double>(s.models[job.model].completion_tokens);
    req.expected_duration_ms = static_cast<core::DurationMs>(static_cast<double>(expected_ms[job.model]) * left);
    req.batch = job.batch;
    const auto p = core::place(req, cands, static_cast<TimeMs>(now));
    if (!p) return false;
    for (size_t i = 0; i < cands.size(); ++i) {
      if (cands[i].vehicle_id == p->vehicle_id) {
        start(cars_of[i], job, now);
        return true;
      }
    }
    CHECK(false);
    return false;
  }

  // Drops the interactive requests still waiting for their first placement
  // after the timeout (a client gives up). A job cut after it started waits
  // for its next vehicle however long that takes, as in the coordinator.
  void drop_timed_out(double now) {
    const double timeout = static_cast<double>(s.demand.interactive_timeout_ms);
    for (size_t m = 0; m < s.models.size(); ++m) {
      auto drop = [&](const Job& j) {
        stats->interactive_dropped_tokens += static_cast<double>(s.models[m].completion_tokens - j.produced);
      };
      while (!interactive[m].empty() && interactive[m].front().arrival_ms + timeout <= now) {
        drop(interactive[m].front());
        interactive[m].pop_front();
      }
    }
  }

  // Starts queued jobs on idle vehicles while both remain: interactive
  // before batch, then submission order, as the coordinator's queue.
  void dispatch(double now) {
    if (idle_total == 0) return;
    drop_timed_out(now);
    const size_t models = s.models.size();
    uint32_t blocked = 0;  // models no idle vehicle in the sample could take
    // Interactive: the oldest head among the models not blocked.
    while (idle_total > 0) {
      int best = -1;
      bool best_requeued = false;
      uint64_t best_seq = std::numeric_limits<uint64_t>::max();
      for (size_t m = 0; m < models; ++m) {
        if ((blocked >> m) & 1) continue;
        if (!interactive_requeued[m].empty() && interactive_requeued[m].top().seq < best_seq) {
          best = static_cast<int>(m);
          best_seq = interactive_requeued[m].top().seq;
          best_requeued = true;
        }
        if (!interactive[m].empty() && interactive[m].front().seq < best_seq) {
          best = static_cast<int>(m);
          best_seq = interactive[m].front().seq;
          best_requeued = false;
        }
      }
      if (best < 0) break;
      const Job job = best_requeued ? interactive_requeued[best].top() : interactive[best].front();
      if (!place(job, now)) {
        blocked |= 1u << best;
        continue;
      }
      if (best_requeued) {
        interactive_requeued[best].pop();
      } else {
        interactive[best].pop_front();
      }
    }
    blocked = 0;
    // Batch: requeued (older) first, then the model with the most waiting.
    while (idle_total > 0) {
      int best = -1;
      bool best_requeued = false;
      uint64_t best_seq = std::numeric_limits<uint64_t>::max();
      uint64_t most = 0;
      for (size_t m = 0; m < models; ++m) {
        if ((blocked >> m) & 1) continue;
        if (!batch_requeued[m].empty() && batch_requeued[m].top().seq < best_seq) {
          best = static_cast<int>(m);
          best_seq = batch_requeued[m].top().seq;
          best_requeued = true;
        }
      }
      if (best < 0) {
        for (size_t m = 0; m < models; ++m) {
          if (((blocked >> m) & 1) == 0 && batch_pending[m] > most) {
            most = batch_pending[m];
            best = static_cast<int>(m);
          }
        }
      }
      if (best < 0) break;
      Job job;
      if (best_requeued) {
        job = batch_requeued[best].top();
      } else {
        job.seq = next_seq;
        job.model = static_cast<uint32_t>(best);
        job.batch = true;
        job.arrival_ms = now;
      }
      if (!place(job, now)) {
        blocked |= 1u << best;
        continue;
      }
      if (best_requeued) {
        batch_requeued[best].pop();
      } else {
        ++next_seq;
        --batch_pending[best];
      }
    }
  }

  std::vector<core::VehicleCandidate> scratch_candidates;
  std::vector<uint32_t> scratch_cars;
};

ShardJobs::ShardJobs(const Scenario& scenario, uint64_t seed, uint64_t first_index, size_t cars, double shard_share)
    : impl_(std::make_unique<Impl>(scenario, seed, first_index, cars, shard_share)) {}

ShardJobs::~ShardJobs() = default;

uint64_t ShardJobs::jobs_placed() const { return impl_->placed; }

void ShardJobs::add_batch_day() {
  Impl& im = *impl_;
  double shares = 0.0;
  for (const ScenarioModel& m : im.s.models) shares += m.demand_share;
  if (!(shares > 0.0)) return;
  for (size_t m = 0; m < im.s.models.size(); ++m) {
    const ScenarioModel& model = im.s.models[m];
    const double jobs = im.s.demand.batch_tokens_per_day * im.shard_share * model.demand_share / shares /
                            static_cast<double>(model.completion_tokens) +
                        im.batch_carry[m];
    const double whole = std::floor(jobs);
    im.batch_carry[m] = jobs - whole;
    im.batch_pending[m] += static_cast<uint64_t>(whole);
  }
}

JobBinStats ShardJobs::serve_bin(TimeMs t, TimeMs t_end, double interactive_tps, std::span<const JobCar> cars,
                                 std::span<CarWork> work) {
  Impl& im = *impl_;
  CHECK(cars.size() == im.ids.size() && work.size() == cars.size());
  JobBinStats stats;
  stats.wait_histogram.assign(kWaitBuckets, 0);
  im.cars = cars;
  im.work = work;
  im.stats = &stats;
  const double t0 = static_cast<double>(t);
  const double t1 = static_cast<double>(t_end);
  for (CarWork& w : work) w = CarWork{};

  // Who may work in this bin. A running job on a car that may not goes back
  // to the queue (its owner's policy, or the car has left).
  im.cars = cars;
  for (std::vector<uint32_t>& list : im.idle) list.clear();
  im.idle_total = 0;
  std::fill(im.idle_pos.begin(), im.idle_pos.end(), kNoCar);
  for (uint32_t i = 0; i < cars.size(); ++i) {
    const JobCar& c = cars[i];
    im.available[i] = c.available && c.stop > t;
    if (!im.available[i]) {
      if (im.running[i].active) {
        // A job that ended exactly at the last bin's end is done, not cut.
        if (im.running[i].finish_ms <= t0) {
          im.finish(i, t0);
        } else {
          im.cut(i, t0);
        }
      }
      continue;
    }
    if (!im.running[i].active) im.idle_add(i);
    if (c.stop < t_end) im.events.push(Event{static_cast<double>(c.stop), i, 0, true});
  }

  // Interactive arrivals, a Poisson process at this bin's rate, by model.
  double shares = 0.0;
  for (const ScenarioModel& m : im.s.models) shares += m.demand_share;
  double jobs_per_ms = 0.0;
  std::vector<double> model_rate(im.s.models.size(), 0.0);
  if (shares > 0.0 && interactive_tps > 0.0) {
    for (size_t m = 0; m < im.s.models.size(); ++m) {
      model_rate[m] = interactive_tps * im.s.models[m].demand_share / shares /
                      static_cast<double>(im.s.models[m].completion_tokens) / 1000.0;
      jobs_per_ms += model_rate[m];
    }
  }
  auto next_arrival = [&](double from) {
    if (!(jobs_per_ms > 0.0)) return std::numeric_limits<double>::infinity();
    return from - std::log1p(-im.draw()) / jobs_per_ms;
  };
  double arrival = next_arrival(t0);

  im.dispatch(t0);
  for (;;) {
    const double next_event = im.events.empty() ? std::numeric_limits<double>::infinity() : im.events.top().at_ms;
    const double now = std::min(arrival, next_event);
    if (!(now < t1)) break;
    if (arrival <= next_event) {
      double u = im.draw() * jobs_per_ms;
      uint32_t model = 0;
      while (model + 1 < model_rate.size() && u >= model_rate[model]) u -= model_rate[model++];
      Job job;
      job.seq = im.next_seq++;
      job.model = model;
      job.arrival_ms = arrival;
      im.interactive[model].push_back(job);
      arrival = next_arrival(arrival);
    } else {
      const Event e = im.events.top();
      im.events.pop();
      if (e.stop) {
        im.available[e.car] = 0;
        im.idle_remove(e.car);
        if (im.running[e.car].active) im.cut(e.car, now);
      } else if (im.running[e.car].active && im.running[e.car].generation == e.generation) {
        im.finish(e.car, now);
      } else {
        continue;
      }
    }
    im.dispatch(now);
  }
  // The bin's end: count the running attempts' work so far.
  for (uint32_t i = 0; i < cars.size(); ++i) {
    if (im.running[i].active) im.credit(i, t1);
  }
  im.drop_timed_out(t1);
  // Stop events past the bin's end do not exist (a stop is at most t_end);
  // finish events stay for the next bin.
  for (size_t m = 0; m < im.s.models.size(); ++m) {
    const double per_job = static_cast<double>(im.s.models[m].completion_tokens);
    stats.batch_backlog_tokens += static_cast<double>(im.batch_pending[m]) * per_job;
    stats.batch_backlog_tokens += static_cast<double>(im.batch_requeued[m].size()) * per_job;
  }
  im.stats = nullptr;
  return stats;
}

}  // namespace idlefleet::sim
