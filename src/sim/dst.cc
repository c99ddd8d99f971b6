#include "sim/dst.h"

#include <algorithm>
#include <cstdio>
#include <deque>
#include <memory>
#include <queue>
#include <set>
#include <utility>
#include <variant>

#include "agent/sim_vehicle.h"
#include "common/check.h"
#include "common/random.h"
#include "core/agent_machine.h"
#include "core/coordinator_machine.h"
#include "core/ledger.h"
#include "core/protocol.h"

namespace idlefleet::sim {

namespace {

using core::DurationMs;
using core::TimeMs;

// Wednesday 2026-01-07 19:00 UTC: an evening, the cars parked at home (their
// routine's next departure is the morning after).
constexpr TimeMs kDstStartMs = (20460LL * 24 + 19) * core::kHourMs;
constexpr DurationMs kVehicleTickMs = core::kSecondMs;     // the agent shell's tick
constexpr DurationMs kCoordinatorTickMs = core::kSecondMs;
constexpr DurationMs kTokenMs = 50;                        // the engine: 20 tokens/s
constexpr DurationMs kChunkMs = 500;                       // the engine reports its tokens this often
constexpr DurationMs kNetDelayMsMin = 2;
constexpr DurationMs kFaultSlotMs = 10 * core::kSecondMs;  // fault arrivals: one draw per slot
constexpr DurationMs kPartitionMsMax = 60 * core::kSecondMs;
constexpr DurationMs kCoordinatorDownMsMax = 30 * core::kSecondMs;
constexpr DurationMs kSubmitRetryMs = 5 * core::kSecondMs;
constexpr DurationMs kCancelAfterMsMax = 20 * core::kSecondMs;
constexpr DurationMs kSettleGraceMs = 10 * core::kSecondMs;  // as the coordinator's (server.h)
constexpr uint64_t kPromptTokensMax = 12;
constexpr uint64_t kMaxTokensMax = 200;
constexpr double kCancelProbability = 0.2;
constexpr int32_t kTokenIdBase = 4;  // ids below are special tokens
constexpr uint64_t kTokenIdSpan = 5000;
constexpr char kModelId[] = "dst-model";
constexpr char kClientId[] = "dst";

// Salts that keep the seed's streams apart.
constexpr uint64_t kFaultRatesSalt = 0x6661756c74ULL;
constexpr uint64_t kWorldSalt = 0x776f726c64ULL;

// The single-vehicle result: the token at `index` of a job's output.
int32_t token_at(const core::JobSpec& spec, uint64_t index) {
  uint64_t key = mix64(spec.sampling.seed ^ 0x70726f6d7074ULL);
  for (int32_t id : spec.prompt_ids) key = mix64(key ^ static_cast<uint32_t>(id));
  return kTokenIdBase + static_cast<int32_t>(counter_random(key, index) % kTokenIdSpan);
}

enum class Kind : int {
  kVehicleTick,
  kCoordinatorTick,
  kDeliverUp,    // vehicle -> coordinator
  kDeliverDown,  // coordinator -> vehicle
  kEngineStep,
  kSubmit,
  kCancel,
  kCrash,
  kRestart,
  kPartition,
  kDriverReturns,
  kAgentRestart,
  kChipHeats,
  kEnd,
};

struct Event {
  TimeMs at = 0;
  uint64_t seq = 0;
  Kind kind = Kind::kEnd;
  size_t index = 0;  // vehicle or job
  uint64_t gen = 0;  // engine generation, or a fault's parameter
  std::string bytes;
};
struct Later {
  bool operator()(const Event& a, const Event& b) const {
    return a.at != b.at ? a.at > b.at : a.seq > b.seq;
  }
};

struct Engine {
  bool active = false;
  bool stopping = false;
  uint64_t gen = 0;
  core::AssignMessage assign;
  TimeMs started_at = 0;
  uint64_t next_index = 0;  // the next token's index in the job
};

struct Vehicle {
  std::string id;
  std::unique_ptr<agent::SimVehicle> car;
  core::AgentConfig config;  // instance replaced at each restart
  std::unique_ptr<core::AgentMachine> agent;
  core::VehicleSignals signals;
  uint64_t instances = 0;
  Engine engine;
  TimeMs partitioned_until = -1;
  std::optional<TimeMs> ineligible_since;
  TimeMs up_last_at = 0;    // the last in-order delivery on each link
  TimeMs down_last_at = 0;
};

struct ClientJob {
  std::string id;
  core::JobSpec spec;
  TimeMs submit_at = 0;
  std::optional<TimeMs> cancel_at;
  bool submitted = false;  // reached the machine
  bool accepted = false;
  uint32_t ends = 0;
  core::JobState end_state = core::JobState::kQueued;
  std::vector<int32_t> relayed;
};

struct Stored {
  core::Job job;
  core::JobSpec spec;
};

struct Pending {
  size_t receipts_expected = 0;
  size_t receipts_got = 0;
  TimeMs ended_at = 0;
  uint64_t prompt_tokens = 0;
  uint64_t completion_tokens = 0;
};

// A violation ends the run: thrown through the world's calls to run_dst.
struct Violated {
  std::string invariant;
  std::string detail;
};

class World {
 public:
  explicit World(const DstOptions& o)
      : o_(o), faults_(o.faults.value_or(dst_faults_for_seed(o.seed))), rng_(mix64(o.seed ^ kWorldSalt)) {}

  DstResult run() {
    setup();
    try {
      while (!queue_.empty()) {
        Event e = queue_.top();
        queue_.pop();
        now_ = e.at;
        ++result_.steps;
        if (e.kind == Kind::kEnd) {
          finish();
          break;
        }
        step(e);
        check_vehicles();
      }
    } catch (const Violated& v) {
      result_.violation = DstViolation{v.invariant, v.detail, result_.steps, now_ - kDstStartMs};
      trace("VIOLATION " + v.invariant + ": " + v.detail);
    }
    result_.trace_tail.assign(tail_.begin(), tail_.end());
    result_.trace_hash = hash_;
    return std::move(result_);
  }

 private:
  // ---- Setup -------------------------------------------------------------------

  void setup() {
    hash_ = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < o_.vehicles; ++i) vehicles_.push_back(make_vehicle(i));
    for (size_t i = 0; i < vehicles_.size(); ++i) {
      index_of_[vehicles_[i].id] = i;
      start_agent(i);
      schedule(kDstStartMs + static_cast<DurationMs>(rng_.below(kVehicleTickMs)), Kind::kVehicleTick, i);
    }
    start_coordinator();
    schedule(kDstStartMs, Kind::kCoordinatorTick, 0);
    const DurationMs submit_window = std::max<DurationMs>(1, o_.duration_ms * 4 / 5);
    for (size_t k = 0; k < o_.jobs; ++k) {
      ClientJob j;
      j.id = "job-" + std::to_string(k);
      j.spec.model_id = kModelId;
      const uint64_t prompt = 1 + rng_.below(kPromptTokensMax);
      for (uint64_t p = 0; p < prompt; ++p) j.spec.prompt_ids.push_back(kTokenIdBase + static_cast<int32_t>(rng_.below(kTokenIdSpan)));
      j.spec.max_tokens = 1 + rng_.below(kMaxTokensMax);
      j.spec.sampling.seed = rng_.next();
      j.spec.sampling.temperature = 0.8;
      j.submit_at = kDstStartMs + static_cast<DurationMs>(rng_.below(static_cast<uint64_t>(submit_window)));
      if (rng_.uniform() < kCancelProbability) {
        j.cancel_at = j.submit_at + static_cast<DurationMs>(rng_.below(kCancelAfterMsMax));
      }
      schedule(j.submit_at, Kind::kSubmit, k);
      if (j.cancel_at) schedule(*j.cancel_at, Kind::kCancel, k);
      jobs_.push_back(std::move(j));
    }
    // Faults: one draw per slot of the fault window for each kind.
    const double slot_hours = static_cast<double>(kFaultSlotMs) / static_cast<double>(core::kHourMs);
    for (TimeMs t = kDstStartMs; t < kDstStartMs + o_.duration_ms; t += kFaultSlotMs) {
      auto at = [&] { return t + static_cast<DurationMs>(rng_.below(kFaultSlotMs)); };
      if (rng_.uniform() < faults_.coordinator_crashes_per_hour * slot_hours) schedule(at(), Kind::kCrash, 0);
      if (rng_.uniform() < faults_.partitions_per_hour * slot_hours) {
        schedule(at(), Kind::kPartition, rng_.below(vehicles_.size()), 1 + rng_.below(kPartitionMsMax));
      }
      for (size_t i = 0; i < vehicles_.size(); ++i) {
        if (rng_.uniform() < faults_.driver_returns_per_hour * slot_hours) schedule(at(), Kind::kDriverReturns, i);
        if (rng_.uniform() < faults_.agent_restarts_per_hour * slot_hours) schedule(at(), Kind::kAgentRestart, i);
        if (rng_.uniform() < faults_.chip_heats_per_hour * slot_hours) {
          schedule(at(), Kind::kChipHeats, i, 10 + rng_.below(60));  // the new ambient, C
        }
      }
    }
    schedule(kDstStartMs + o_.duration_ms + o_.quiet_ms, Kind::kEnd, 0);
  }

  Vehicle make_vehicle(size_t i) {
    Vehicle v;
    v.id = "car-" + std::to_string(i);
    agent::SimVehicleParams p;
    p.seed = mix64(o_.seed * 1000003u + i);
    p.initially_plugged = rng_.uniform() < 0.85;
    p.initial_soc_pct = 35.0 + 50.0 * rng_.uniform();
    p.charger_power_kw = 3.7 + 7.4 * rng_.uniform();
    p.battery.capacity_kwh = 40.0 + 60.0 * rng_.uniform();
    p.ambient_c = 5.0 + 25.0 * rng_.uniform();
    CHECK(p.validate().has_value());
    v.car = std::make_unique<agent::SimVehicle>(p, kDstStartMs);
    core::AgentConfig& c = v.config;
    c.vehicle_id = v.id;
    c.policy.opted_in = true;
    c.policy.soc_floor_pct = 20.0 + 20.0 * rng_.uniform();
    c.policy.target_soc_pct = std::max(c.policy.soc_floor_pct, 50.0 + 30.0 * rng_.uniform());
    c.policy.departures_minute_of_week = v.car->declared_departures_minute_of_week();
    c.utc_offset_minutes = p.utc_offset_minutes;
    c.battery_capacity_kwh = p.battery.capacity_kwh;
    c.charge_power_kw = p.charger_power_kw * p.battery.charge_efficiency;
    c.inference_power_kw = p.accelerator.max_w / 1000.0;
    c.tokens_per_second = 1000.0 / static_cast<double>(kTokenMs);
    c.models_cached = {kModelId};
    c.public_key = std::string(64, 'a');
    c.engine_build = "dst+scalar";
    CHECK(c.policy.validate().has_value());
    return v;
  }

  core::CoordinatorCoreConfig coordinator_config() const {
    core::CoordinatorCoreConfig c;
    c.models.push_back({kModelId, 1ull << 30, 0});
    c.queued_ms_max = 2 * core::kMinuteMs;
    c.expected_ms_per_token = kTokenMs;
    c.test_reemit_done_on_duplicate = o_.test_plant_double_settlement;
    return c;
  }

  // ---- The queue and the trace -------------------------------------------------

  void schedule(TimeMs at, Kind kind, size_t index, uint64_t gen = 0, std::string bytes = {}) {
    queue_.push(Event{at, next_seq_++, kind, index, gen, std::move(bytes)});
  }

  void trace(const std::string& line) {
    char head[32];
    std::snprintf(head, sizeof head, "%9.3f ", static_cast<double>(now_ - kDstStartMs) / 1000.0);
    std::string full = head + line;
    for (unsigned char c : full) hash_ = (hash_ ^ c) * 0x100000001b3ULL;
    hash_ = (hash_ ^ '\n') * 0x100000001b3ULL;
    tail_.push_back(std::move(full));
    if (tail_.size() > kDstTraceTailLines) tail_.pop_front();
  }

  void fault(const char* kind, const std::string& what) {
    ++result_.faults[kind];
    trace(std::string("fault ") + kind + " " + what);
  }

  [[noreturn]] void violated(const char* invariant, std::string detail) { throw Violated{invariant, std::move(detail)}; }

  bool faulty() const { return now_ < kDstStartMs + o_.duration_ms; }

  // ---- The network ---------------------------------------------------------------

  void send(Kind kind, size_t vehicle, const core::Message& m) {
    const std::string bytes = core::encode_message(m);
    const bool f = faulty();
    if (vehicles_[vehicle].partitioned_until > now_) return;
    if (f && rng_.uniform() < faults_.message_loss) {
      ++result_.faults["message_lost"];
      return;
    }
    const int copies = f && rng_.uniform() < faults_.message_duplicate ? 2 : 1;
    if (copies == 2) ++result_.faults["message_duplicated"];
    // A link keeps its messages in order (as one NATS connection does),
    // unless a reordering fault lets one overtake those before it.
    TimeMs& last = kind == Kind::kDeliverUp ? vehicles_[vehicle].up_last_at : vehicles_[vehicle].down_last_at;
    for (int c = 0; c < copies; ++c) {
      DurationMs delay = kNetDelayMsMin;
      if (f && faults_.delay_ms_max > 0) delay += static_cast<DurationMs>(rng_.below(static_cast<uint64_t>(faults_.delay_ms_max) + 1));
      TimeMs at = now_ + delay;
      if (f && rng_.uniform() < faults_.message_reorder) {
        ++result_.faults["message_reordered"];
      } else {
        at = std::max(at, last);
        last = at;
      }
      schedule(at, kind, vehicle, 0, bytes);
    }
  }

  core::Message decode(const std::string& bytes) {
    auto m = core::decode_message(bytes);
    if (!m) violated("protocol", "a message its sender encoded does not decode: " + m.error().to_string());
    return std::move(*m);
  }

  // ---- The coordinator -------------------------------------------------------------

  void start_coordinator() {
    coordinator_ = std::make_unique<core::CoordinatorMachine>(coordinator_config());
    for (const auto& [id, s] : standings_) apply(coordinator_->handle(core::RestoreStandingEvent{id, s}, now_));
    for (auto& [id, s] : store_) {
      const core::Job& j = s.job;
      if (j.state() == core::JobState::kDone || j.state() == core::JobState::kFailed ||
          j.state() == core::JobState::kCancelled) {
        continue;
      }
      auto job = core::Job::restore(j.id(), j.created_at(), j.max_tokens(), coordinator_->config().limits, j.state(),
                                    j.produced(), j.attempts(), j.finish_reason(), now_);
      if (!job) violated("recovery", "job " + id + " cannot be restored from its own snapshot: " + job.error().to_string());
      apply(coordinator_->handle(core::RestoreJobEvent{std::move(*job), s.spec}, now_));
    }
    // The settlement sweep: done jobs in the store that the ledger lacks.
    for (const auto& [id, s] : store_) {
      if (s.job.state() == core::JobState::kDone && settled_.count(id) == 0) {
        Pending p;
        p.prompt_tokens = s.spec.prompt_ids.size();
        p.completion_tokens = s.job.produced().size();
        p.ended_at = now_;
        settle(id, p);
      }
    }
  }

  void coordinator_handle(const core::CoordinatorEvent& e) {
    if (!coordinator_) return;
    apply(coordinator_->handle(e, now_));
  }

  void apply(std::vector<core::CoordinatorEffect> effects) {
    for (auto& effect : effects) {
      if (auto* send_effect = std::get_if<core::SendToVehicleEffect>(&effect)) {
        auto it = index_of_.find(send_effect->vehicle_id);
        if (it != index_of_.end()) send(Kind::kDeliverDown, it->second, send_effect->message);
      } else if (auto* acc = std::get_if<core::JobAcceptedEffect>(&effect)) {
        ClientJob& j = job_named(acc->job_id);
        trace("accepted " + acc->job_id + (acc->status ? "" : " refused: " + acc->status.error().to_string()));
        if (acc->status) {
          if (!j.accepted) ++result_.jobs_accepted;
          j.accepted = true;
        }
      } else if (auto* tokens = std::get_if<core::JobTokensEffect>(&effect)) {
        on_tokens(*tokens);
      } else if (auto* ended = std::get_if<core::JobEndedEffect>(&effect)) {
        on_ended(*ended);
      } else if (auto* persist = std::get_if<core::PersistJobEffect>(&effect)) {
        const core::JobEntry* e = coordinator_->job(persist->job_id);
        if (e == nullptr) violated("recovery", "persist asked for job " + persist->job_id + ", which the machine lacks");
        store_.insert_or_assign(persist->job_id, Stored{e->job, e->spec});
      } else if (auto* standing = std::get_if<core::VehicleStandingEffect>(&effect)) {
        standings_.insert_or_assign(standing->vehicle_id, standing->standing);
      } else if (auto* log = std::get_if<core::CoordinatorLogEffect>(&effect)) {
        if (log->refusal) {
          if (++result_.refusals[log->what] == 1) result_.refusal_first[log->what] = log->text;
          trace("refused " + log->what + ": " + log->text);
        }
      } else if (auto* receipt = std::get_if<core::ReceiptAcceptedEffect>(&effect)) {
        const core::ReceiptMessage& r = receipt->receipt;
        if (receipts_[r.job_id].emplace(r.attempt, r).second) {
          if (auto p = to_settle_.find(r.job_id); p != to_settle_.end()) ++p->second.receipts_got;
        }
      }
    }
  }

  ClientJob& job_named(const std::string& id) {
    for (ClientJob& j : jobs_) {
      if (j.id == id) return j;
    }
    violated("protocol", "the coordinator named job " + id + ", which no client submitted");
  }

  void on_tokens(const core::JobTokensEffect& t) {
    ClientJob& j = job_named(t.job_id);
    if (t.first_index != j.relayed.size()) {
      violated("tokens", "job " + j.id + ": tokens relayed from index " + std::to_string(t.first_index) + " after " +
                             std::to_string(j.relayed.size()) + (t.first_index < j.relayed.size() ? " (a repeat)" : " (a gap)"));
    }
    for (int32_t id : t.ids) {
      const uint64_t index = j.relayed.size();
      if (index >= j.spec.max_tokens) violated("tokens", "job " + j.id + ": more tokens than max_tokens");
      if (id != token_at(j.spec, index)) {
        violated("tokens", "job " + j.id + " token " + std::to_string(index) + " is " + std::to_string(id) +
                               ", the single-vehicle result " + std::to_string(token_at(j.spec, index)));
      }
      j.relayed.push_back(id);
    }
  }

  void on_ended(const core::JobEndedEffect& e) {
    ClientJob& j = job_named(e.job_id);
    trace("ended " + e.job_id + " " + core::job_state_name(e.state) + " " + e.finish_reason);
    if (e.state == core::JobState::kDone) await_settlement(e.job_id);
    if (!j.accepted) violated("job_ends_once", "job " + j.id + " ended but was never accepted");
    if (++j.ends > 1) violated("job_ends_once", "job " + j.id + " ended a second time (" + core::job_state_name(e.state) + ")");
    j.end_state = e.state;
    switch (e.state) {
      case core::JobState::kDone:
        ++result_.jobs_done;
        if (j.relayed.size() != j.spec.max_tokens) {
          violated("tokens", "job " + j.id + " done with " + std::to_string(j.relayed.size()) + " of " +
                                 std::to_string(j.spec.max_tokens) + " tokens relayed");
        }
        break;
      case core::JobState::kFailed:
        ++result_.jobs_failed;
        if (e.finish_reason.empty()) violated("job_ends_once", "job " + j.id + " failed without a reason");
        break;
      case core::JobState::kCancelled:
        ++result_.jobs_cancelled;
        break;
      default:
        violated("job_ends_once", "job " + j.id + " ended in a live state");
    }
  }

  // ---- The ledger (as src/coordinator/server.cc settles) ---------------------------

  void await_settlement(const std::string& job_id) {
    if (to_settle_.count(job_id) != 0 || settled_.count(job_id) != 0) {
      violated("ledger", "job " + job_id + " would be settled twice (a second done)");
    }
    const core::JobEntry* e = coordinator_->job(job_id);
    CHECK(e != nullptr);
    Pending p;
    p.prompt_tokens = e->spec.prompt_ids.size();
    p.completion_tokens = e->job.produced().size();
    p.ended_at = now_;
    for (const core::Attempt& a : e->job.attempts()) p.receipts_expected += a.end != core::AttemptEnd::kLost;
    if (auto r = receipts_.find(job_id); r != receipts_.end()) p.receipts_got = r->second.size();
    to_settle_[job_id] = p;
  }

  void settle_due() {
    std::vector<std::string> ready;
    for (const auto& [job, p] : to_settle_) {
      if (p.receipts_got >= p.receipts_expected || now_ - p.ended_at >= kSettleGraceMs) ready.push_back(job);
    }
    for (const std::string& job : ready) {
      settle(job, to_settle_[job]);
      to_settle_.erase(job);
    }
  }

  void settle(const std::string& job_id, const Pending& p) {
    if (settled_.count(job_id) != 0) violated("ledger", "job " + job_id + " settled twice");
    settled_.insert(job_id);
    ++result_.settlements;
    core::SettlementInput in;
    in.job_id = job_id;
    in.client_account = *core::client_account(kClientId);
    in.model_id = kModelId;
    in.prompt_tokens = p.prompt_tokens;
    in.completion_tokens = p.completion_tokens;
    in.input_price_micros_per_million_tokens = 1'000'000;
    in.output_price_micros_per_million_tokens = 3'000'000;
    in.owner_share_ppm = 700'000;
    in.wear_micros_per_accelerator_hour = 20'000;
    in.settled_at_ms = p.ended_at;
    if (auto r = receipts_.find(job_id); r != receipts_.end()) {
      for (const auto& [attempt, receipt] : r->second) {
        core::SettlementAttempt a;
        a.receipt_id = core::receipt_id(job_id, attempt);
        a.owner_id = receipt.vehicle_id;
        a.vehicle_id = receipt.vehicle_id;
        a.output_tokens = receipt.output_tokens;
        a.energy_mwh = receipt.energy_mwh;
        a.accelerator_ms = receipt.wear_micro_hours * 36 / 10;
        a.tariff_micros_per_kwh = 250'000;
        in.attempts.push_back(std::move(a));
      }
    }
    trace("settle " + job_id + " receipts " + std::to_string(in.attempts.size()));
    if (in.attempts.empty()) {
      ++result_.settlements_without_receipts;
      return;  // the shell charges only the client; nothing for owners to check here
    }
    auto tx = core::settle_job(in);
    if (!tx) violated("ledger", "settlement of " + job_id + ": " + tx.error().to_string());
    if (auto st = core::validate(*tx); !st) violated("ledger", "settlement of " + job_id + ": " + st.error().to_string());
    if (!ledger_ids_.insert(tx->id).second) violated("ledger", "transaction " + tx->id + " posted twice");
  }

  // ---- Vehicles ----------------------------------------------------------------------

  void start_agent(size_t i) {
    Vehicle& v = vehicles_[i];
    v.config.instance = v.id + "-" + std::to_string(v.instances++);
    v.car->advance(now_, v.engine.active ? 1.0 : 0.0);
    v.agent = std::make_unique<core::AgentMachine>(v.config);
    v.engine.active = false;  // the engine died with the process
    ++v.engine.gen;
    (void)v.car->take_updates();
    v.signals = v.car->signals();  // a new process reads every signal afresh
    v.signals.heard_at = now_;
    agent_handle(i, core::ConnectedEvent{});
    agent_handle(i, core::SignalsEvent{v.signals});
  }

  void agent_handle(size_t i, const core::AgentEvent& e) {
    Vehicle& v = vehicles_[i];
    for (auto& effect : v.agent->handle(e, now_)) {
      if (auto* s = std::get_if<core::SendEffect>(&effect)) {
        send(Kind::kDeliverUp, i, s->message);
      } else if (auto* start = std::get_if<core::StartEngineEffect>(&effect)) {
        v.engine.active = true;
        v.engine.stopping = false;
        ++v.engine.gen;
        v.engine.assign = start->assign;
        v.engine.started_at = now_;
        v.engine.next_index = start->assign.produced_ids.size();
        trace(v.id + " engine start " + start->assign.job_id + "#" + std::to_string(start->assign.attempt) + " at " +
              std::to_string(v.engine.next_index));
        // A resumed job's tokens so far must be the single-vehicle result too.
        const ClientJob& j = job_named(start->assign.job_id);
        for (size_t k = 0; k < start->assign.produced_ids.size(); ++k) {
          if (start->assign.produced_ids[k] != token_at(j.spec, k)) {
            violated("tokens", "job " + j.id + " resumed on " + v.id + " from a wrong token " + std::to_string(k));
          }
        }
        schedule(now_ + kChunkMs, Kind::kEngineStep, i, v.engine.gen);
      } else if (auto* stop = std::get_if<core::StopEngineEffect>(&effect)) {
        if (v.engine.active && v.engine.assign.job_id == stop->job_id && v.engine.assign.attempt == stop->attempt) {
          v.engine.stopping = true;
          schedule(now_ + kTokenMs, Kind::kEngineStep, i, v.engine.gen);  // the next token boundary
        }
      }
    }
  }

  void engine_step(size_t i, uint64_t gen) {
    Vehicle& v = vehicles_[i];
    Engine& en = v.engine;
    if (!en.active || en.gen != gen) return;
    const core::AssignMessage& a = en.assign;
    const uint64_t due = std::min<uint64_t>(
        a.max_tokens, a.produced_ids.size() + static_cast<uint64_t>((now_ - en.started_at) / kTokenMs));
    const ClientJob& j = job_named(a.job_id);
    if (due > en.next_index) {
      core::EngineTokensEvent t{a.job_id, a.attempt, en.next_index, {}};
      for (uint64_t k = en.next_index; k < due; ++k) t.ids.push_back(token_at(j.spec, k));
      en.next_index = due;
      agent_handle(i, t);
    }
    if (!en.active || en.gen != gen) return;  // the agent restarted meanwhile (it cannot: no I/O), or ended it
    if (en.stopping) {
      en.active = false;
      agent_handle(i, core::EngineStoppedEvent{a.job_id, a.attempt, en.next_index});
    } else if (en.next_index >= a.max_tokens) {
      en.active = false;
      const core::AssignMessage done = a;
      agent_handle(i, core::EngineFinishedEvent{done.job_id, done.attempt, en.next_index, "length"});
    } else {
      schedule(now_ + kChunkMs, Kind::kEngineStep, i, gen);
    }
  }

  void vehicle_signals(size_t i) {
    Vehicle& v = vehicles_[i];
    v.car->advance(now_, v.engine.active ? 1.0 : 0.0);
    bool changed = false;
    for (const auto& [path, value] : v.car->take_updates()) {
      changed |= core::apply_signal(&v.signals, path, value, now_).has_value();
    }
    v.signals.heard_at = now_;
    if (changed) agent_handle(i, core::SignalsEvent{v.signals});
  }

  // After every step: the stop bound and the SoC floor.
  void check_vehicles() {
    for (Vehicle& v : vehicles_) {
      if (v.engine.active && !v.agent->decision().eligible) {
        if (!v.ineligible_since) v.ineligible_since = now_;
        if (now_ - *v.ineligible_since > kDstStopBoundMs) {
          violated("stop_bound", v.id + " ran its engine " + std::to_string(now_ - *v.ineligible_since) +
                                     " ms while ineligible (" + core::format_reasons(v.agent->decision()) + ")");
        }
      } else {
        v.ineligible_since.reset();
      }
      if (v.engine.active && v.car->soc_pct() < v.config.policy.soc_floor_pct - kDstSocTolerancePct) {
        char text[160];
        std::snprintf(text, sizeof text, "%s serves at SoC %.2f%%, below its floor %.2f%%", v.id.c_str(),
                      v.car->soc_pct(), v.config.policy.soc_floor_pct);
        violated("soc_floor", text);
      }
    }
  }

  // ---- Steps ---------------------------------------------------------------------------

  void step(const Event& e) {
    switch (e.kind) {
      case Kind::kVehicleTick:
        vehicle_signals(e.index);
        agent_handle(e.index, core::AgentTick{});
        schedule(now_ + kVehicleTickMs, Kind::kVehicleTick, e.index);
        break;
      case Kind::kCoordinatorTick:
        coordinator_handle(core::CoordinatorTick{});
        if (coordinator_) settle_due();
        schedule(now_ + kCoordinatorTickMs, Kind::kCoordinatorTick, 0);
        break;
      case Kind::kDeliverUp: {
        Vehicle& v = vehicles_[e.index];
        if (v.partitioned_until > now_ || !coordinator_) return;
        core::Message m = decode(e.bytes);
        trace("up " + v.id + " " + core::message_type(m));
        coordinator_handle(core::VehicleMessageEvent{v.id, std::move(m)});
        break;
      }
      case Kind::kDeliverDown: {
        Vehicle& v = vehicles_[e.index];
        if (v.partitioned_until > now_) return;
        core::Message m = decode(e.bytes);
        trace("down " + v.id + " " + core::message_type(m));
        agent_handle(e.index, core::CoordinatorMessageEvent{std::move(m)});
        break;
      }
      case Kind::kEngineStep:
        engine_step(e.index, e.gen);
        break;
      case Kind::kSubmit: {
        ClientJob& j = jobs_[e.index];
        if (!coordinator_) {
          // The client's request fails to connect; it tries again.
          schedule(now_ + kSubmitRetryMs, Kind::kSubmit, e.index);
          return;
        }
        trace("submit " + j.id + " max_tokens " + std::to_string(j.spec.max_tokens));
        j.submitted = true;
        coordinator_handle(core::SubmitJobEvent{j.id, j.spec});
        break;
      }
      case Kind::kCancel: {
        ClientJob& j = jobs_[e.index];
        if (!coordinator_ || !j.submitted) return;
        trace("cancel " + j.id);
        coordinator_handle(core::CancelJobEvent{j.id});
        break;
      }
      case Kind::kCrash:
        if (!coordinator_) return;
        fault("coordinator_crash", "");
        coordinator_.reset();
        to_settle_.clear();  // pending settlements were in memory; the sweep finds them
        schedule(now_ + 1 + static_cast<DurationMs>(rng_.below(kCoordinatorDownMsMax)), Kind::kRestart, 0);
        break;
      case Kind::kRestart:
        trace("coordinator restart");
        start_coordinator();
        break;
      case Kind::kPartition:
        fault("partition", vehicles_[e.index].id + " for " + std::to_string(e.gen) + " ms");
        vehicles_[e.index].partitioned_until = std::max(vehicles_[e.index].partitioned_until, now_ + static_cast<DurationMs>(e.gen));
        break;
      case Kind::kDriverReturns:
        fault("driver_returns", vehicles_[e.index].id);
        vehicles_[e.index].car->driver_returns(now_);
        vehicle_signals(e.index);
        break;
      case Kind::kAgentRestart:
        fault("agent_restart", vehicles_[e.index].id);
        start_agent(e.index);
        break;
      case Kind::kChipHeats:
        fault("chip_heats", vehicles_[e.index].id + " ambient " + std::to_string(e.gen) + " C");
        vehicles_[e.index].car->set_ambient_c(now_, static_cast<double>(e.gen));
        vehicle_signals(e.index);
        break;
      case Kind::kEnd:
        break;
    }
  }

  // The end of the quiet period: every accepted job has ended, and every done one settled.
  void finish() {
    if (!coordinator_) violated("all_jobs_end", "the coordinator is down at the end of the quiet period");
    for (const ClientJob& j : jobs_) {
      if (j.accepted && j.ends == 0) {
        const core::JobEntry* e = coordinator_->job(j.id);
        violated("all_jobs_end", "job " + j.id + " has not ended after the quiet period (" +
                                     (e ? core::job_state_name(e->job.state()) : "unknown") + ", " +
                                     std::to_string(j.relayed.size()) + " of " + std::to_string(j.spec.max_tokens) +
                                     " tokens)");
      }
    }
    // Nothing is left running: every attempt's engine stopped or finished.
    for (const Vehicle& v : vehicles_) {
      if (v.engine.active || v.agent->serving()) {
        violated("all_jobs_end", v.id + " still runs " + v.engine.assign.job_id + " after the quiet period");
      }
    }
    for (const auto& [job, p] : std::map<std::string, Pending>(to_settle_)) settle(job, p);
    to_settle_.clear();
    for (const ClientJob& j : jobs_) {
      if (j.ends == 1 && j.end_state == core::JobState::kDone && settled_.count(j.id) == 0) {
        violated("ledger", "job " + j.id + " is done but never settled");
      }
    }
  }

  const DstOptions& o_;
  DstFaults faults_;
  Rng rng_;
  TimeMs now_ = kDstStartMs;
  uint64_t next_seq_ = 0;
  std::priority_queue<Event, std::vector<Event>, Later> queue_;
  std::vector<Vehicle> vehicles_;
  std::map<std::string, size_t> index_of_;
  std::vector<ClientJob> jobs_;
  std::unique_ptr<core::CoordinatorMachine> coordinator_;
  // The coordinator's store: what survives its crashes.
  std::map<std::string, Stored> store_;
  std::map<std::string, core::VehicleStanding> standings_;
  std::map<std::string, std::map<uint32_t, core::ReceiptMessage>> receipts_;
  std::set<std::string> settled_;
  std::set<std::string> ledger_ids_;
  // In the coordinator's memory: lost with it.
  std::map<std::string, Pending> to_settle_;
  DstResult result_;
  std::deque<std::string> tail_;
  uint64_t hash_ = 0;
};

}  // namespace

Status DstOptions::validate() const {
  auto bad = [](const std::string& what) { return Status(Unexpected(ErrorCode::kInvalidArgument, what)); };
  if (vehicles == 0 || vehicles > kDstVehiclesMax) return bad("vehicles: 1.." + std::to_string(kDstVehiclesMax));
  if (jobs > kDstJobsMax) return bad("jobs: at most " + std::to_string(kDstJobsMax));
  if (duration_ms <= 0 || duration_ms > kDstDurationMsMax) return bad("duration_ms: 1.." + std::to_string(kDstDurationMsMax));
  if (quiet_ms < 0 || quiet_ms > kDstDurationMsMax) return bad("quiet_ms: 0.." + std::to_string(kDstDurationMsMax));
  if (faults) {
    const DstFaults& f = *faults;
    auto prob = [](double p) { return p >= 0.0 && p <= 1.0; };
    auto rate = [](double r) { return r >= 0.0 && r <= 3600.0; };
    if (!prob(f.message_loss)) return bad("faults.message_loss: 0..1");
    if (!prob(f.message_duplicate)) return bad("faults.message_duplicate: 0..1");
    if (!prob(f.message_reorder)) return bad("faults.message_reorder: 0..1");
    if (f.delay_ms_max < 0 || f.delay_ms_max > core::kMinuteMs) return bad("faults.delay_ms_max: 0..60000");
    if (!rate(f.partitions_per_hour) || !rate(f.coordinator_crashes_per_hour) || !rate(f.driver_returns_per_hour) ||
        !rate(f.agent_restarts_per_hour) || !rate(f.chip_heats_per_hour)) {
      return bad("faults: rates per hour in 0..3600");
    }
  }
  return {};
}

DstFaults dst_faults_for_seed(uint64_t seed) {
  Rng r(mix64(seed ^ kFaultRatesSalt));
  DstFaults f;
  const double storm = r.uniform();
  f.delay_ms_max = static_cast<DurationMs>(r.below(50));
  if (storm < 0.2) return f;  // calm: the network is only a little slow
  f.message_loss = 0.2 * storm * r.uniform();
  f.message_duplicate = 0.2 * storm * r.uniform();
  f.message_reorder = 0.2 * storm * r.uniform();
  f.delay_ms_max += static_cast<DurationMs>(2000.0 * storm * r.uniform());
  f.partitions_per_hour = 40.0 * storm * r.uniform();
  f.coordinator_crashes_per_hour = 30.0 * storm * r.uniform();
  f.driver_returns_per_hour = 12.0 * storm * r.uniform();
  f.agent_restarts_per_hour = 12.0 * storm * r.uniform();
  f.chip_heats_per_hour = 12.0 * storm * r.uniform();
  return f;
}

DstResult run_dst(const DstOptions& options) {
  CHECK(options.validate().has_value());
  World world(options);
  return world.run();
}

}  // namespace idlefleet::sim
