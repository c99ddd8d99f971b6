#include "sim/vehicle_month.h"

#include <algorithm>
#include <cmath>
#include <optional>
#include <string>
#include <variant>

#include "core/agent_machine.h"
#include "core/departure.h"
#include "core/ledger.h"
#include "core/protocol.h"
#include "core/signals.h"

namespace idlefleet::sim {

namespace {

constexpr std::string_view kOwner = "sim-owner";
constexpr std::string_view kModel = "model";

Status out_of_range(const std::string& what) { return Unexpected(ErrorCode::kOutOfRange, what); }

// The engine's stand-in: prefill, then tokens at a steady rate.
struct Engine {
  std::string job_id;
  uint32_t attempt = 0;
  uint64_t produced = 0;
  double prefill_left_s = 0.0;
  double carry = 0.0;  // a token's fraction made in the last span
};

class MonthRun {
 public:
  explicit MonthRun(const VehicleMonthParams& p)
      : p_(p), car_(p.vehicle, p.start_ms), prior_(core::DeparturePrior::builtin()), machine_(config()) {
    result_.days.resize(static_cast<size_t>(p.days));
    result_.wear_budget_hours = p.policy.wear_budget_hours_per_month;
  }

  Result<VehicleMonthResult> run() {
    const core::TimeMs end = p_.start_ms + static_cast<core::TimeMs>(p_.days) * core::kDayMs;
    core::TimeMs t = p_.start_ms;
    IF_RETURN_IF_ERROR(apply(machine_.handle(core::ConnectedEvent{}, t), t));
    bool was_driving = false;
    while (t < end) {
      car_.advance(t, machine_.serving() ? 1.0 : 0.0);
      for (const auto& [path, value] : car_.take_updates()) (void)core::apply_signal(&signals_, path, value, t);
      signals_.heard_at = t;  // a live feed
      IF_RETURN_IF_ERROR(apply(machine_.handle(core::SignalsEvent{signals_}, t), t));
      IF_RETURN_IF_ERROR(apply(machine_.handle(core::AgentTick{}, t), t));
      // There is always work: the car is given a job the moment it may take one.
      if (!machine_.serving() && machine_.decision().eligible) {
        core::AssignMessage a;
        a.job_id = "job-" + std::to_string(++jobs_assigned_);
        a.attempt = 1;
        a.model_id = std::string(kModel);
        a.prompt_ids.assign(p_.prompt_tokens, 1);
        a.max_tokens = p_.completion_tokens;
        IF_RETURN_IF_ERROR(apply(machine_.handle(core::CoordinatorMessageEvent{a}, t), t));
      }

      // The span to the next step, cut short where the job would end.
      core::TimeMs next = std::min(t + p_.step_ms, end);
      if (engine_) {
        const double left_s = engine_->prefill_left_s +
                              (static_cast<double>(p_.completion_tokens - engine_->produced) - engine_->carry) /
                                  p_.tokens_per_second;
        const auto finish = t + std::max<core::DurationMs>(1, static_cast<core::DurationMs>(std::ceil(left_s * 1000.0)));
        next = std::min(next, finish);
      }

      const core::VehicleState state = machine_.state();
      const bool driving = state == core::VehicleState::kDriving;
      if (driving && !was_driving) ++result_.trips;
      was_driving = driving;
      if (signals_.soc_pct) result_.soc_min_pct = std::min(result_.soc_min_pct, *signals_.soc_pct);
      const double hours = static_cast<double>(next - t) / static_cast<double>(core::kHourMs);
      for (MonthTotals* m : {&result_.total, &day(t)}) {
        if (driving) m->hours_driving += hours;
        else m->hours_parked += hours;
        if (car_.plugged_in()) m->hours_plugged += hours;
        if (state == core::VehicleState::kEligible || state == core::VehicleState::kServing) m->hours_eligible += hours;
        if (state == core::VehicleState::kServing) m->hours_serving += hours;
      }

      if (engine_) IF_RETURN_IF_ERROR(run_engine(t, next));
      t = next;
    }
    // The month is over: an attempt still running is paid for what it did.
    if (engine_) {
      const Engine e = *engine_;
      engine_.reset();
      IF_RETURN_IF_ERROR(apply(machine_.handle(core::EngineStoppedEvent{e.job_id, e.attempt, e.produced}, end - 1),
                               end - 1));
    }
    return std::move(result_);
  }

 private:
  core::AgentConfig config() {
    core::AgentConfig c;
    c.vehicle_id = "sim-car";
    c.instance = "sim-month";
    c.policy = p_.policy;
    if (c.policy.departures_minute_of_week.empty()) {
      c.policy.departures_minute_of_week = car_.declared_departures_minute_of_week();
    }
    c.utc_offset_minutes = p_.vehicle.utc_offset_minutes;
    c.battery_capacity_kwh = p_.vehicle.battery.capacity_kwh;
    c.charge_power_kw = p_.vehicle.charger_power_kw * p_.vehicle.battery.charge_efficiency;
    c.inference_power_kw = p_.vehicle.accelerator.max_w / 1000.0;
    c.tokens_per_second = p_.tokens_per_second;
    c.models_cached = {std::string(kModel)};
    c.prior = &prior_;
    return c;
  }

  MonthTotals& day(core::TimeMs t) {
    const auto i = static_cast<size_t>(std::max<core::TimeMs>(0, t - p_.start_ms) / core::kDayMs);
    return result_.days[std::min(i, result_.days.size() - 1)];
  }

  // The engine over [t, next): prefill, then tokens; the job ends at `next`
  // when its last token is made.
  Status run_engine(core::TimeMs t, core::TimeMs next) {
    Engine& e = *engine_;
    double s = static_cast<double>(next - t) / 1000.0;
    const double pre = std::min(s, e.prefill_left_s);
    e.prefill_left_s -= pre;
    s -= pre;
    const double made = e.carry + s * p_.tokens_per_second;
    uint64_t n = static_cast<uint64_t>(std::floor(made + 1e-9));
    n = std::min(n, p_.completion_tokens - e.produced);
    e.carry = std::max(0.0, made - static_cast<double>(n));
    if (e.produced + n == p_.completion_tokens) e.carry = 0.0;
    if (n > 0) {
      core::EngineTokensEvent tokens{e.job_id, e.attempt, e.produced, std::vector<int32_t>(n, 1)};
      e.produced += n;
      IF_RETURN_IF_ERROR(apply(machine_.handle(tokens, next), next));
    }
    if (engine_ && engine_->produced >= p_.completion_tokens) {
      const Engine done = *engine_;
      engine_.reset();
      IF_RETURN_IF_ERROR(
          apply(machine_.handle(core::EngineFinishedEvent{done.job_id, done.attempt, done.produced, "length"}, next),
                next));
    }
    return {};
  }

  Status apply(const std::vector<core::AgentEffect>& effects, core::TimeMs now) {
    for (const core::AgentEffect& fx : effects) {
      if (const auto* start = std::get_if<core::StartEngineEffect>(&fx)) {
        Engine e;
        e.job_id = start->assign.job_id;
        e.attempt = start->assign.attempt;
        e.produced = start->assign.produced_ids.size();
        e.prefill_left_s = static_cast<double>(start->assign.prompt_ids.size()) / p_.prefill_tokens_per_second;
        engine_ = e;
      } else if (const auto* stop = std::get_if<core::StopEngineEffect>(&fx)) {
        // The engine stops at the next token boundary: at once, here.
        if (engine_ && engine_->job_id == stop->job_id) {
          const Engine e = *engine_;
          engine_.reset();
          IF_RETURN_IF_ERROR(
              apply(machine_.handle(core::EngineStoppedEvent{e.job_id, e.attempt, e.produced}, now), now));
        }
      } else if (const auto* send = std::get_if<core::SendEffect>(&fx)) {
        if (const auto* r = std::get_if<core::ReceiptMessage>(&send->message)) IF_RETURN_IF_ERROR(settle(*r));
      }
    }
    return {};
  }

  // The job's settlement as the coordinator posts it, this car's attempt
  // first; a job it did not finish was finished by another car.
  Status settle(const core::ReceiptMessage& r) {
    MonthTotals* totals[] = {&result_.total, &day(r.ended_at)};
    const auto tariff = core::tariff_for_span(p_.policy.tariff, r.started_at, r.ended_at,
                                              p_.vehicle.utc_offset_minutes, r.energy_mwh);
    if (!tariff) return Unexpected(tariff.error());
    for (MonthTotals* m : totals) {
      if (r.outcome == "done") ++m->jobs_done;
      else ++m->attempts_preempted;
      m->tokens_in += r.input_tokens;
      m->tokens_out += r.output_tokens;
      m->energy_kwh += static_cast<double>(r.energy_mwh) / 1e6;
      m->energy_cost_micros += tariff->cost_micros;
      m->wear_hours += static_cast<double>(r.wear_micro_hours) / 1e6;
    }
    if (r.output_tokens == 0 && r.energy_mwh == 0 && r.wear_micro_hours == 0) return {};  // nothing to pay

    core::SettlementInput in;
    in.job_id = r.job_id;
    auto client = core::client_account("sim-client");
    if (!client) return Unexpected(client.error());
    in.client_account = *client;
    in.model_id = r.model_id;
    in.prompt_tokens = p_.prompt_tokens;
    in.completion_tokens = p_.completion_tokens;
    in.input_price_micros_per_million_tokens = p_.input_price_micros_per_mtok;
    in.output_price_micros_per_million_tokens = p_.output_price_micros_per_mtok;
    in.owner_share_ppm = p_.owner_share_ppm;
    in.wear_micros_per_accelerator_hour = p_.wear_micros_per_accelerator_hour;
    in.split_by = core::ShareSplit::kOutputTokens;
    in.settled_at_ms = r.ended_at;
    core::SettlementAttempt mine;
    mine.receipt_id = core::receipt_id(r.job_id, r.attempt);
    mine.owner_id = std::string(kOwner);
    mine.vehicle_id = r.vehicle_id;
    mine.output_tokens = r.output_tokens;
    mine.energy_mwh = r.energy_mwh;
    mine.accelerator_ms = r.wear_micro_hours * 36 / 10;  // as the coordinator: weighted time
    mine.tariff_micros_per_kwh = tariff->micros_per_kwh;
    in.attempts.push_back(mine);
    if (r.output_tokens < p_.completion_tokens) {
      core::SettlementAttempt other;
      other.receipt_id = core::receipt_id(r.job_id, r.attempt + 1);
      other.owner_id = "other-owner";
      other.vehicle_id = "other-car";
      other.output_tokens = p_.completion_tokens - r.output_tokens;
      in.attempts.push_back(other);
    }
    auto tx = core::settle_job(in);
    if (!tx) return Unexpected(tx.error().code, "settling " + r.job_id + ": " + tx.error().message);
    auto mine_account = core::owner_account(kOwner);
    if (!mine_account) return Unexpected(mine_account.error());
    auto price = core::job_price_micros(p_.prompt_tokens, p_.completion_tokens, p_.input_price_micros_per_mtok,
                                        p_.output_price_micros_per_mtok);
    if (!price) return Unexpected(price.error());
    const int64_t part = static_cast<int64_t>(
        std::llround(static_cast<double>(*price) * static_cast<double>(r.output_tokens) /
                     static_cast<double>(p_.completion_tokens)));
    for (MonthTotals* m : totals) {
      m->client_paid_micros += part;
      for (const core::Posting& posting : tx->postings) {
        if (posting.account != *mine_account) continue;
        if (posting.kind == core::kPostingRevenueShare) m->revenue_share_micros += posting.amount_micros;
        else if (posting.kind == core::kPostingEnergy) m->energy_refund_micros += posting.amount_micros;
        else if (posting.kind == core::kPostingWear) m->wear_allowance_micros += posting.amount_micros;
      }
    }
    return {};
  }

  const VehicleMonthParams& p_;
  agent::SimVehicle car_;
  core::DeparturePrior prior_;
  core::AgentMachine machine_;
  core::VehicleSignals signals_;
  std::optional<Engine> engine_;
  uint64_t jobs_assigned_ = 0;
  VehicleMonthResult result_;
};

}  // namespace

Status VehicleMonthParams::validate() const {
  if (days < 1 || days > kMonthDaysMax) return out_of_range("days must be 1 to " + std::to_string(kMonthDaysMax));
  if (start_ms < 0) return out_of_range("the start must be after 1970");
  IF_RETURN_IF_ERROR(vehicle.validate());
  IF_RETURN_IF_ERROR(policy.validate());
  if (!(tokens_per_second > 0.0 && tokens_per_second <= kMonthTokensPerSecondMax)) {
    return out_of_range("tokens per second must be above 0 and at most " +
                        std::to_string(static_cast<int>(kMonthTokensPerSecondMax)));
  }
  if (!(prefill_tokens_per_second > 0.0 && prefill_tokens_per_second <= kMonthTokensPerSecondMax)) {
    return out_of_range("prefill tokens per second must be above 0 and at most " +
                        std::to_string(static_cast<int>(kMonthTokensPerSecondMax)));
  }
  if (prompt_tokens < 1 || prompt_tokens > kMonthJobTokensMax || completion_tokens < 1 ||
      completion_tokens > kMonthJobTokensMax) {
    return out_of_range("a job's prompt and completion tokens must be 1 to " + std::to_string(kMonthJobTokensMax));
  }
  if (input_price_micros_per_mtok > kMonthPriceMicrosPerMtokMax ||
      output_price_micros_per_mtok > kMonthPriceMicrosPerMtokMax) {
    return out_of_range("prices must be at most 1000 per million tokens");
  }
  if (owner_share_ppm > core::kSharePpmMax) return out_of_range("the owner's share must be at most 100%");
  if (wear_micros_per_accelerator_hour > static_cast<uint64_t>(core::kAmountMicrosMax)) {
    return out_of_range("the wear allowance is too large");
  }
  if (step_ms < kMonthStepMsMin || step_ms > kMonthStepMsMax) return out_of_range("the step must be 1 s to 10 min");
  return {};
}

Result<VehicleMonthResult> simulate_vehicle_month(const VehicleMonthParams& params) {
  IF_RETURN_IF_ERROR(params.validate());
  MonthRun run(params);
  return run.run();
}

}  // namespace idlefleet::sim
