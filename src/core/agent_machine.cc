#include "core/agent_machine.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <span>
#include <utility>

#include "common/check.h"

namespace idlefleet::core {

AgentMachine::AgentMachine(AgentConfig config) : config_(std::move(config)) {
  CHECK(!config_.vehicle_id.empty());
  CHECK(config_.policy.validate().has_value());
  decision_.eligible = false;
  decision_.reasons.push_back({ReasonCode::kSignalsMissing, "no vehicle signals yet"});
}

VehicleState AgentMachine::state() const {
  if (attempt_) return attempt_->stopping ? VehicleState::kPreempting : VehicleState::kServing;
  const VehicleState physical = physical_state(signals_);
  if (physical == VehicleState::kDriving) return physical;
  return decision_.eligible ? VehicleState::kEligible : physical;
}

bool AgentMachine::is_current(const std::string& job_id, uint32_t attempt) const {
  return attempt_ && attempt_->job_id == job_id && attempt_->attempt == attempt;
}

void AgentMachine::reject(const std::string& text, std::vector<AgentEffect>* out) {
  ++counters_.messages_rejected;
  out->push_back(AgentLogEffect{"rejected_message", text});
}

// Stays feed the vehicle's own departure history: parked (or charging)
// from the first event that shows it until the first that shows driving.
double AgentMachine::trip_reserve_pct() const {
  if (!stretch_open_.complete && stretches_.empty()) return kSocPctMax;  // never seen charging
  double reserve = drives_.size() < kTripsForReserve ? config_.trip_reserve_pct_default : trip_reserve_pct_;
  bool completed = false;
  for (const Stretch& s : stretches_) {
    reserve = std::max(reserve, s.driven_pct);
    completed = completed || s.complete;
  }
  if (!completed) reserve = std::max(reserve, config_.trip_reserve_pct_default);
  reserve = std::max(reserve, stretch_open_.driven_pct);
  return std::min(reserve, kSocPctMax);
}

std::vector<double> AgentMachine::stretches_driven_pct() const {
  std::vector<double> out;
  out.reserve(stretches_.size());
  for (const Stretch& s : stretches_) out.push_back(s.driven_pct);
  return out;
}

void AgentMachine::charge_seen() {
  if (stretch_open_drives_ > 0) {
    if (stretches_.size() == kStretchesRemembered) stretches_.pop_front();
    stretches_.push_back(stretch_open_);
  }
  stretch_open_ = Stretch{0.0, true};
  stretch_open_drives_ = 0;
}

void AgentMachine::track_stay(TimeMs now) {
  const bool parked = physical_state(signals_) != VehicleState::kDriving;
  if (parked && !parked_since_) {
    parked_since_ = now;
    // A drive ended: remember the charge it used (a detour via a charger
    // shows as a gain, which is no drive to reserve for), and the most that
    // the drives in any window of kTripReserveWindowMs used together.
    if (soc_at_leaving_ && signals_.soc_pct) {
      const double used = std::clamp(*soc_at_leaving_ - *signals_.soc_pct, 0.0, kSocPctMax);
      if (drives_.size() == kTripsRemembered) drives_.pop_front();
      drives_.push_back({now, used});
      trip_reserve_pct_ = 0.0;
      for (size_t end = 0, begin = 0; end < drives_.size(); ++end) {
        while (drives_[begin].ended <= drives_[end].ended - kTripReserveWindowMs) ++begin;
        double sum = 0.0;
        for (size_t k = begin; k <= end; ++k) sum += drives_[k].used_pct;
        trip_reserve_pct_ = std::max(trip_reserve_pct_, std::min(sum, kSocPctMax));
      }
      stretch_open_.driven_pct = std::min(stretch_open_.driven_pct + used, kSocPctMax);
      ++stretch_open_drives_;
    }
    soc_at_leaving_.reset();
  }
  // Charging, parked: SoC rising above the lowest seen since the charger was
  // connected ends the unplugged stretch.
  const bool on_charger = signals_.charger_connected.value_or(false) || signals_.is_charging.value_or(false);
  if (parked && on_charger && signals_.soc_pct) {
    const double soc = *signals_.soc_pct;
    if (!plugged_soc_low_ || soc < *plugged_soc_low_) plugged_soc_low_ = soc;
    if (soc >= *plugged_soc_low_ + kChargeSeenSocPct) {
      charge_seen();
      plugged_soc_low_ = soc;
    }
  } else {
    plugged_soc_low_.reset();
  }
  if (!parked && !soc_at_leaving_ && signals_.soc_pct) soc_at_leaving_ = *signals_.soc_pct;
  if (!parked && parked_since_) {
    (void)predictor_.observe(*parked_since_, now, config_.utc_offset_minutes);  // a holiday-long stay is refused: fine
    parked_since_.reset();
  }
  departure_earliest_.reset();
  if (parked_since_ && config_.prior != nullptr) {
    auto p = predictor_.predict(*parked_since_, now, config_.utc_offset_minutes, *config_.prior);
    if (p) departure_earliest_ = p->earliest_likely;
  }
}

void AgentMachine::evaluate(TimeMs now, std::vector<AgentEffect>* out) {
  track_stay(now);
  roll_wear_month(now);
  EligibilityInputs in;
  in.signals = signals_;
  in.policy = config_.policy;
  in.utc_offset_minutes = config_.utc_offset_minutes;
  in.battery_capacity_kwh = config_.battery_capacity_kwh;
  in.charge_power_kw = config_.charge_power_kw;
  in.inference_power_kw = config_.inference_power_kw;
  in.wear_used_hours = wear_used_hours_;
  in.trip_reserve_pct = trip_reserve_pct();
  // The owner's declared departures gate the car; the prediction only
  // guides placement (docs/architecture.md, "Departures: declared and
  // predicted"): a wrong guess costs a preemption, never the owner's charge.
  in.next_departure = std::nullopt;
  in.signal_age_ms_max = config_.signal_age_ms_max;
  decision_ = decide_eligibility(in, now);

  if (attempt_ && !attempt_->stopping && !decision_.eligible) {
    attempt_->stopping = true;
    attempt_->stop_reason = format_reasons(decision_);
    ++counters_.attempts_preempted;
    out->push_back(StopEngineEffect{attempt_->job_id, attempt_->attempt, attempt_->stop_reason});
    out->push_back(AgentLogEffect{"preempted", "job " + attempt_->job_id + " attempt " +
                                                   std::to_string(attempt_->attempt) + ": " + attempt_->stop_reason});
  }
}

void AgentMachine::send_hello(TimeMs now, std::vector<AgentEffect>* out) {
  HelloMessage h;
  h.vehicle_id = config_.vehicle_id;
  h.models_cached = config_.models_cached;
  if (h.models_cached.size() > kModelsMax) h.models_cached.resize(kModelsMax);
  h.memory_bytes = config_.memory_bytes;
  h.tokens_per_second = config_.tokens_per_second;
  h.instance = config_.instance;
  h.embeddings = config_.embeddings;
  h.public_key = config_.public_key;
  h.engine_build = config_.engine_build;
  h.utc_offset_minutes = config_.utc_offset_minutes;
  const double power_w = config_.inference_power_kw * 1000.0;
  h.power_w = power_w > 0.0 && power_w <= 1e6 ? power_w : 0.0;  // never NaN on the wire
  out->push_back(SendEffect{std::move(h)});
  last_hello_sent_ = now;
}

void AgentMachine::send_state(TimeMs now, std::vector<AgentEffect>* out) {
  StateMessage s;
  s.vehicle_id = config_.vehicle_id;
  const VehicleState st = state();
  s.state = vehicle_state_name(st);
  s.eligible = decision_.eligible;
  for (const EligibilityReason& r : decision_.reasons) {
    if (s.reasons.size() == kReasonsMax) break;
    s.reasons.push_back(r.text.size() <= kTextBytesMax ? r.text : r.text.substr(0, kTextBytesMax));
  }
  s.soc_pct = std::clamp(signals_.soc_pct.value_or(0.0), 0.0, 100.0);
  s.accelerator_temp_c = std::clamp(signals_.accelerator_temperature_c.value_or(0.0), -100.0, 300.0);
  s.departure_earliest = departure_earliest_.value_or(0);
  s.sent_at = now;
  if (attempt_) {
    s.job_id = attempt_->job_id;
    s.attempt = attempt_->attempt;
    s.power_w = config_.inference_power_kw * 1000.0;
  }
  out->push_back(SendEffect{std::move(s)});
  last_state_sent_ = now;
  last_state_reported_ = st;
  last_eligible_reported_ = decision_.eligible;
}

double AgentMachine::chip_temp_c() const {
  const double t = signals_.accelerator_temperature_c.value_or(config_.wear.reference_temp_c);
  return std::clamp(t, kTemperatureCMin, kTemperatureCMax);
}

void AgentMachine::meter_to(TimeMs now) {
  if (!attempt_ || now <= attempt_->metered_at) return;
  const DurationMs dt = now - attempt_->metered_at;
  // A power reading counts once the vehicle has reported since the attempt
  // began: one from before describes the chip at rest, and would meter the
  // first moments of every attempt (all of a short one) as free.
  const bool fresh_reading = signals_.accelerator_power_kw.has_value() && signals_.heard_at.has_value() &&
                             *signals_.heard_at > attempt_->started_at;
  const double power_kw = fresh_reading ? *signals_.accelerator_power_kw : config_.inference_power_kw;
  const double temp = chip_temp_c();
  meter_add(&attempt_->meter, config_.wear, std::max(0.0, power_kw) * static_cast<double>(dt) / kHourMs, dt,
            attempt_->temp_c_at, temp);
  attempt_->metered_at = now;
  attempt_->temp_c_at = temp;
}

void AgentMachine::send_receipt(const std::string& outcome, TimeMs now, std::vector<AgentEffect>* out,
                                const std::optional<Sha256Digest>& output_sha256) {
  CHECK(attempt_.has_value());
  meter_to(now);
  Current& a = *attempt_;
  ReceiptMessage r;
  r.vehicle_id = config_.vehicle_id;
  r.job_id = a.job_id;
  r.attempt = a.attempt;
  r.model_id = a.model_id;
  r.outcome = outcome;
  r.input_tokens = a.input_tokens;
  r.output_tokens = a.output_tokens;
  const Sha256Digest digest = output_sha256 ? *output_sha256 : a.output.finish();
  r.output_sha256 = to_hex(digest);
  // Rounded up, as meters bill: work that took any time costs at least one
  // unit of each (a 20 ms attempt on a 60 W chip is a third of a mWh).
  r.energy_mwh = static_cast<uint64_t>(std::ceil(std::min(a.meter.energy_kwh * 1e6, 1e15) - 1e-9));
  r.accelerator_ms = static_cast<uint64_t>(std::max<DurationMs>(0, a.meter.busy_ms));
  r.wear_micro_hours = static_cast<uint64_t>(std::ceil(std::min(a.meter.wear_hours * 1e6, 1e15) - 1e-9));
  r.started_at = a.started_at;
  r.ended_at = std::max(now, a.started_at);
  roll_wear_month(now);
  if (a.meter.wear_hours > 0.0) wear_used_hours_ = std::min(wear_used_hours_ + a.meter.wear_hours, kWearUsedHoursMax);
  out->push_back(SendEffect{std::move(r)});
}

void AgentMachine::roll_wear_month(TimeMs now) {
  const int64_t month = local_month_index(now, config_.utc_offset_minutes);
  if (wear_month_ && *wear_month_ != month) wear_used_hours_ = 0.0;
  wear_month_ = month;
}

void AgentMachine::on_message(const Message& m, TimeMs now, std::vector<AgentEffect>* out) {
  if (std::holds_alternative<HelloPleaseMessage>(m)) {
    // At most one answer per kHelloPleaseGapMs, however often it is asked.
    if (last_hello_sent_ >= 0 && now - last_hello_sent_ < kHelloPleaseGapMs) return;
    send_hello(now, out);
    send_state(now, out);
    return;
  }
  if (const auto* a = std::get_if<AssignMessage>(&m)) {
    if (attempt_) {
      if (is_current(a->job_id, a->attempt)) return;  // a duplicate: already running it
      ++counters_.attempts_refused;
      out->push_back(SendEffect{FailedMessage{a->job_id, a->attempt, "vehicle " + config_.vehicle_id +
                                                                          " is busy with job " + attempt_->job_id}});
      return;
    }
    if (!decision_.eligible) {
      // Not a failure of the job: the car said no, as it may at any moment.
      ++counters_.attempts_refused;
      out->push_back(SendEffect{PreemptedMessage{a->job_id, a->attempt, a->produced_ids.size(),
                                                 "not eligible: " + format_reasons(decision_)}});
      return;
    }
    Current c;
    c.job_id = a->job_id;
    c.attempt = a->attempt;
    c.tokens_at_start = a->produced_ids.size();
    c.model_id = a->model_id;
    c.started_at = now;
    c.metered_at = now;
    c.temp_c_at = chip_temp_c();
    c.input_tokens = a->prompt_ids.size() + a->produced_ids.size();
    hash_output_ids(&c.output, a->produced_ids);
    attempt_ = std::move(c);
    ++counters_.attempts_started;
    // 'started' goes out before the engine starts: a new engine thread may
    // take the core of the thread that would send it.
    out->push_back(SendEffect{StartedMessage{a->job_id, a->attempt}});
    out->push_back(StartEngineEffect{*a});
    return;
  }
  if (const auto* c = std::get_if<CancelMessage>(&m)) {
    if (!is_current(c->job_id, c->attempt)) {
      reject("cancel for job " + c->job_id + " attempt " + std::to_string(c->attempt) + ", which is not running here",
             out);
      return;
    }
    attempt_->cancelled = true;
    if (!attempt_->stopping) {
      attempt_->stopping = true;
      attempt_->stop_reason = "cancelled by the coordinator";
      out->push_back(StopEngineEffect{c->job_id, c->attempt, attempt_->stop_reason});
    }
    return;
  }
  if (const auto* p = std::get_if<PolicyMessage>(&m)) {
    if (p->vehicle_id != config_.vehicle_id) {
      reject("policy for vehicle " + p->vehicle_id + ", not this one", out);
      return;
    }
    apply_policy(p->policy, now, out);
    return;
  }
  reject(std::string("unexpected message '") + message_type(m) + "' from the coordinator", out);
}

void AgentMachine::apply_policy(const OwnerPolicy& policy, TimeMs now, std::vector<AgentEffect>* out) {
  if (auto st = policy.validate(); !st) {
    out->push_back(AgentLogEffect{"rejected_policy", st.error().message});
    return;
  }
  config_.policy = policy;
  // Enforced at once: an attempt the new policy forbids stops in this call.
  evaluate(now, out);
}

std::vector<AgentEffect> AgentMachine::handle(const AgentEvent& event, TimeMs now) {
  std::vector<AgentEffect> out;
  bool force_state = false;
  // The time since the last event was spent on the attempt at the
  // temperature and power the signals showed then.
  meter_to(now);
  if (const auto* e = std::get_if<SignalsEvent>(&event)) {
    signals_ = e->signals;
  } else if (std::holds_alternative<ConnectedEvent>(event)) {
    evaluate(now, &out);
    send_hello(now, &out);
    send_state(now, &out);
    return out;
  } else if (const auto* e = std::get_if<CoordinatorMessageEvent>(&event)) {
    evaluate(now, &out);  // decide on the freshest view of the car
    on_message(e->message, now, &out);
    // A new policy may change the decision: the coordinator hears of it at once.
    force_state = std::holds_alternative<AssignMessage>(e->message) || std::holds_alternative<PolicyMessage>(e->message);
  } else if (const auto* e = std::get_if<EngineTokensEvent>(&event)) {
    if (!is_current(e->job_id, e->attempt)) {
      reject("engine tokens for job " + e->job_id + " attempt " + std::to_string(e->attempt) + ", not current", &out);
    } else if (!e->ids.empty()) {
      ChunkMessage chunk{e->job_id, e->attempt, e->first_index, e->ids, e->logprobs};
      if (!chunk.logprobs.empty() &&
          (chunk.logprobs.size() != chunk.ids.size() || chunk.ids.size() > kChunkLogprobTokensMax)) {
        // A bug in the shell. The tokens still go, without logprobs: the
        // coordinator then ends the attempt and another vehicle redoes it.
        out.push_back(AgentLogEffect{"bad_logprobs", std::to_string(chunk.logprobs.size()) + " logprobs for " +
                                                         std::to_string(chunk.ids.size()) + " tokens of job " +
                                                         e->job_id});
        chunk.logprobs.clear();
      }
      hash_output_ids(&attempt_->output, chunk.ids);
      attempt_->output_tokens += chunk.ids.size();
      out.push_back(SendEffect{std::move(chunk)});
    }
  } else if (const auto* e = std::get_if<EngineFinishedEvent>(&event)) {
    if (is_current(e->job_id, e->attempt)) {
      // Finished before the stop took effect: the work is complete, report it.
      out.push_back(SendEffect{DoneMessage{e->job_id, e->attempt, e->total_tokens, e->finish_reason}});
      send_receipt("done", now, &out);
      ++counters_.attempts_finished;
      attempt_.reset();
      force_state = true;
    }
  } else if (const auto* e = std::get_if<EngineEmbeddingEvent>(&event)) {
    if (is_current(e->job_id, e->attempt)) {
      // As a finished generation: done before a stop took effect is done.
      // A vector the protocol could not carry is the engine's failure.
      const bool finite =
          std::all_of(e->values.begin(), e->values.end(), [](float x) { return std::isfinite(x); });
      if (e->values.empty() || e->values.size() > kEmbeddingValuesMax || !finite) {
        out.push_back(SendEffect{FailedMessage{e->job_id, e->attempt,
                                               "the engine made an embedding of " + std::to_string(e->values.size()) +
                                                   (finite ? " values" : " values, not all finite")}});
        send_receipt("failed", now, &out);
      } else {
        out.push_back(SendEffect{EmbeddingMessage{e->job_id, e->attempt, e->tokens, e->values}});
        send_receipt("embedding", now, &out, embedding_output_sha256(e->values));
        ++counters_.attempts_finished;
      }
      attempt_.reset();
      force_state = true;
    }
  } else if (const auto* e = std::get_if<EngineStoppedEvent>(&event)) {
    if (is_current(e->job_id, e->attempt)) {
      if (!attempt_->cancelled) {
        out.push_back(SendEffect{PreemptedMessage{e->job_id, e->attempt, e->total_tokens, attempt_->stop_reason}});
      }
      send_receipt(attempt_->cancelled ? "cancelled" : "preempted", now, &out);
      attempt_.reset();
      force_state = true;
    }
  } else if (const auto* e = std::get_if<EngineFailedEvent>(&event)) {
    if (is_current(e->job_id, e->attempt)) {
      out.push_back(SendEffect{FailedMessage{e->job_id, e->attempt,
                                             e->error.size() <= kTextBytesMax ? e->error : e->error.substr(0, kTextBytesMax)}});
      send_receipt("failed", now, &out);
      attempt_.reset();
      force_state = true;
    }
  } else if (const auto* e = std::get_if<PolicyEvent>(&event)) {
    apply_policy(e->policy, now, &out);
    force_state = true;
  } else if (const auto* e = std::get_if<CachedModelsEvent>(&event)) {
    config_.models_cached = e->models;
    last_hello_sent_ = -1;  // tell the coordinator now
  } else if (const auto* e = std::get_if<WearEvent>(&event)) {
    roll_wear_month(now);
    if (e->wear_hours > 0.0 && e->wear_hours < kWearUsedHoursMax) {
      wear_used_hours_ = std::min(wear_used_hours_ + e->wear_hours, kWearUsedHoursMax);
    }
  }

  // Engine progress changes nothing the policy reads, and a coordinator's
  // message was decided on a view evaluated just before; every other event
  // may change the decision.
  if (!std::holds_alternative<EngineTokensEvent>(event) && !std::holds_alternative<CoordinatorMessageEvent>(event)) {
    evaluate(now, &out);
  }
  if (last_hello_sent_ < 0 || now - last_hello_sent_ >= config_.hello_ms) send_hello(now, &out);
  if (force_state || last_state_sent_ < 0 || state() != last_state_reported_ ||
      decision_.eligible != last_eligible_reported_ || now - last_state_sent_ >= config_.heartbeat_ms) {
    send_state(now, &out);
  }
  return out;
}

}  // namespace idlefleet::core
