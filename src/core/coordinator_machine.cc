#include "core/coordinator_machine.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "common/check.h"

namespace idlefleet::core {

CoordinatorMachine::CoordinatorMachine(CoordinatorCoreConfig config) : config_(std::move(config)) {}

const JobEntry* CoordinatorMachine::job(const std::string& id) const {
  auto it = jobs_.find(id);
  return it == jobs_.end() ? nullptr : &it->second;
}

const ModelInfo* CoordinatorMachine::model(const std::string& id) const {
  for (const ModelInfo& m : config_.models) {
    if (m.id == id) return &m;
  }
  return nullptr;
}

size_t CoordinatorMachine::vehicles_eligible() const {
  size_t n = 0;
  for (const auto& [id, v] : vehicles_) n += (v.online && v.state && v.state->eligible) ? 1 : 0;
  return n;
}

void CoordinatorMachine::reject(const char* what, std::string text, Effects* out) {
  ++counters_.messages_rejected;
  out->push_back(CoordinatorLogEffect{what, std::move(text), true});
}

void CoordinatorMachine::update_idle(const VehicleView& v) {
  // Idle only when both sides agree: we hold no attempt on it, and its own
  // last report names none. A vehicle still running something (an attempt
  // we counted as lost, or one a coordinator before us gave it) answers
  // every assignment "busy"; handing it work again at once would use up a
  // job's attempts in a few round trips.
  // A quarantined vehicle gets no work at all.
  auto st = standings_.find(v.id);
  const bool quarantined = st != standings_.end() && st->second.quarantined;
  if (v.online && v.state && v.state->eligible && v.state->job_id.empty() && v.job_id.empty() && !v.state_due &&
      !quarantined) {
    idle_.insert(v.id);
  } else {
    idle_.erase(v.id);
  }
}

void CoordinatorMachine::release_vehicle(const std::string& vid, const std::string& job_id) {
  auto it = vehicles_.find(vid);
  if (it == vehicles_.end() || it->second.job_id != job_id) return;
  // The vehicle has just said it let go of the job (done, preempted,
  // failed): its last report naming the job is out of date.
  if (it->second.state && it->second.state->job_id == job_id) it->second.state->job_id.clear();
  it->second.job_id.clear();
  it->second.attempt = 0;
  update_idle(it->second);
}

void CoordinatorMachine::requeue(JobEntry* entry, TimeMs now) {
  running_.erase(entry->job.id());
  entry->queued_since = now;
  queue_[{entry->spec.batch, entry->sequence}] = entry->job.id();
}

void CoordinatorMachine::finish(JobEntry* entry, Effects* out, bool verifying) {
  CHECK(job_state_final(entry->job.state()));
  const std::string& id = entry->job.id();
  running_.erase(id);
  queue_.erase({entry->spec.batch, entry->sequence});
  CHECK(live_jobs_ > 0);
  --live_jobs_;
  finished_.push_back(id);
  // Check runs are the coordinator's own work, not clients' jobs: counted apart.
  if (!entry->check_of.empty()) {
    checks_ended_.push_back(id);
  } else if (entry->job.state() == JobState::kDone) {
    ++counters_.jobs_done;
  } else if (entry->job.state() == JobState::kFailed) {
    ++counters_.jobs_failed;
  } else {
    ++counters_.jobs_cancelled;
  }
  out->push_back(JobEndedEffect{id, entry->job.state(), entry->job.finish_reason(), verifying});
  out->push_back(PersistJobEffect{id});
}

// ---- Clients ----------------------------------------------------------------

void CoordinatorMachine::submit(const SubmitJobEvent& e, TimeMs now, Effects* out) {
  auto refuse = [&](ErrorCode code, std::string why) {
    ++counters_.jobs_refused;
    out->push_back(JobAcceptedEffect{e.job_id, Unexpected(code, std::move(why))});
  };
  const JobSpec& s = e.spec;
  if (e.job_id.empty() || e.job_id.size() > kJobIdBytesMax) {
    return refuse(ErrorCode::kInvalidArgument, "job id must be 1 to " + std::to_string(kJobIdBytesMax) + " bytes");
  }
  if (jobs_.count(e.job_id) != 0) return refuse(ErrorCode::kInvalidArgument, "job " + e.job_id + " already exists");
  if (e.job_id.starts_with(kCheckJobIdPrefix)) {
    return refuse(ErrorCode::kInvalidArgument, "job ids starting with '" + std::string(kCheckJobIdPrefix) +
                                                   "' are the coordinator's own");
  }
  if (model(s.model_id) == nullptr) return refuse(ErrorCode::kNotFound, "model '" + s.model_id + "' is not served");
  if (s.prompt_ids.empty()) return refuse(ErrorCode::kInvalidArgument, "the prompt is empty");
  if (s.kind == WorkKind::kEmbed) {
    if (s.max_tokens != 0 || s.prompt_ids.size() > kTokenIdsMax) {
      return refuse(ErrorCode::kOutOfRange, "an embedding of " + std::to_string(s.prompt_ids.size()) +
                                                " tokens with " + std::to_string(s.max_tokens) +
                                                " new tokens exceeds the limits (0 new tokens)");
    }
  } else if (s.max_tokens == 0 || s.max_tokens > config_.limits.tokens_max ||
             s.prompt_ids.size() + s.max_tokens > kTokenIdsMax) {
    return refuse(ErrorCode::kOutOfRange, "prompt of " + std::to_string(s.prompt_ids.size()) + " tokens and " +
                                              std::to_string(s.max_tokens) + " new tokens exceed the limits");
  }
  if (live_jobs_ >= config_.queue_jobs_max) {
    return refuse(ErrorCode::kOutOfRange, "the queue is full (" + std::to_string(config_.queue_jobs_max) + " jobs)");
  }
  const uint64_t seq = next_sequence_++;
  JobEntry entry{Job(e.job_id, now, s.max_tokens, config_.limits), s, seq, now};
  jobs_.emplace(e.job_id, std::move(entry));
  queue_[{s.batch, seq}] = e.job_id;
  ++live_jobs_;
  ++counters_.jobs_submitted;
  out->push_back(JobAcceptedEffect{e.job_id, {}});
  out->push_back(PersistJobEffect{e.job_id});
  place_queued(now, out);
}

void CoordinatorMachine::cancel(const std::string& job_id, TimeMs now, Effects* out, const std::string* done_reason) {
  auto it = jobs_.find(job_id);
  if (it == jobs_.end() || job_state_final(it->second.job.state())) return;
  JobEntry& entry = it->second;
  if (const Attempt* a = entry.job.current()) {
    // The vehicle stays busy until its state report no longer names the job.
    out->push_back(SendToVehicleEffect{a->vehicle_id, CancelMessage{job_id, a->number}});
  }
  CHECK((done_reason != nullptr ? entry.job.stop_early(*done_reason, now) : entry.job.cancel(now)).has_value());
  finish(&entry, out);
}

// ---- Vehicles ---------------------------------------------------------------

void CoordinatorMachine::on_hello(const std::string& vid, const HelloMessage& m, TimeMs now, Effects* out) {
  auto it = vehicles_.find(vid);
  if (it == vehicles_.end()) {
    if (vehicles_.size() >= config_.vehicles_max) {
      reject("too_many_vehicles", "vehicle " + vid + " refused: " + std::to_string(config_.vehicles_max) + " tracked",
             out);
      return;
    }
    it = vehicles_.emplace(vid, VehicleView{}).first;
    it->second.id = vid;
  }
  VehicleView& v = it->second;
  if (!v.instance.empty() && v.instance != m.instance && !v.job_id.empty()) {
    // A new agent instance holds no attempts: the old one's is lost now,
    // not when its lease runs out.
    auto jt = jobs_.find(v.job_id);
    if (jt != jobs_.end() && jt->second.job.current() != nullptr && jt->second.job.current()->number == v.attempt &&
        jt->second.job.lose(v.attempt, now)) {
      ++counters_.attempts_lost;
      ++v.attempts_lost;
      out->push_back(CoordinatorLogEffect{"vehicle_restarted", "vehicle " + vid + " restarted: job " + v.job_id +
                                                                   " attempt " + std::to_string(v.attempt) +
                                                                   " lost, placing it again"});
      requeue(&jt->second, now);
      out->push_back(PersistJobEffect{v.job_id});
    }
    v.job_id.clear();
    v.attempt = 0;
  }
  // What an earlier instance reported says nothing of this one: it is not
  // idle until it reports its own state (it does, right after its hello).
  if (v.instance != m.instance) {
    v.state.reset();
    v.state_due = false;
  }
  v.instance = m.instance;
  v.hello = m;
  (void)standing_of(vid);
  v.last_heard = now;
  v.online = true;
  update_idle(v);
}

void CoordinatorMachine::on_state(VehicleView* v, const StateMessage& m, TimeMs now, Effects* out) {
  v->state = m;
  v->state_due = false;
  if (!v->job_id.empty()) {
    auto jt = jobs_.find(v->job_id);
    const Attempt* live = jt == jobs_.end() ? nullptr : jt->second.job.current();
    const bool still_held = live != nullptr && live->number == v->attempt && live->vehicle_id == v->id;
    if (still_held && m.job_id == v->job_id && m.attempt == v->attempt) {
      (void)jt->second.job.heartbeat(v->attempt, now);
    } else if (!still_held && m.job_id != v->job_id) {
      // A cancelled or lost attempt, and the vehicle confirms it has let go.
      v->job_id.clear();
      v->attempt = 0;
    }
  }
  update_idle(*v);
}

JobEntry* CoordinatorMachine::attempt_of(const std::string& vid, const std::string& job_id, uint32_t attempt,
                                         const char* what, Effects* out) {
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) {
    reject("unknown_job", std::string(what) + " from vehicle " + vid + " for unknown job " + job_id, out);
    return nullptr;
  }
  const Attempt* live = it->second.job.current();
  if (live == nullptr || live->number != attempt || live->vehicle_id != vid) {
    reject("stale_message", std::string(what) + " from vehicle " + vid + " for job " + job_id + " attempt " +
                                std::to_string(attempt) + ", which it does not hold",
           out);
    return nullptr;
  }
  return &it->second;
}

void CoordinatorMachine::on_vehicle(const VehicleMessageEvent& e, TimeMs now, Effects* out) {
  const std::string& vid = e.vehicle_id;
  const Message& msg = e.message;
  if (const auto* h = std::get_if<HelloMessage>(&msg)) {
    if (h->vehicle_id != vid) {
      return reject("vehicle_mismatch", "hello for " + h->vehicle_id + " arrived on vehicle " + vid + "'s subject", out);
    }
    ++counters_.messages_accepted;
    on_hello(vid, *h, now, out);
    place_queued(now, out);
    return;
  }
  auto vit = vehicles_.find(vid);
  if (vit == vehicles_.end()) {
    // Most likely this coordinator restarted: ask for a hello now rather
    // than wait for the periodic one (at most once per kHelloPleaseGapMs
    // per vehicle).
    if (valid_vehicle_id(vid)) {
      if (hello_asked_.size() >= kHelloAskedMax) {
        std::erase_if(hello_asked_, [&](const auto& kv) { return now - kv.second >= kHelloPleaseGapMs; });
      }
      auto [it, fresh] = hello_asked_.try_emplace(vid, now);
      if ((fresh || now - it->second >= kHelloPleaseGapMs) && hello_asked_.size() <= kHelloAskedMax) {
        it->second = now;
        out->push_back(SendToVehicleEffect{vid, HelloPleaseMessage{}});
      }
    }
    return reject("unknown_vehicle", std::string(message_type(msg)) + " from vehicle " + vid + ", which has not said hello",
                  out);
  }
  VehicleView& v = vit->second;
  if (const auto* s = std::get_if<StateMessage>(&msg)) {
    if (s->vehicle_id != vid) {
      return reject("vehicle_mismatch", "state for " + s->vehicle_id + " arrived on vehicle " + vid + "'s subject", out);
    }
  }
  if (std::holds_alternative<AssignMessage>(msg) || std::holds_alternative<CancelMessage>(msg) ||
      std::holds_alternative<HelloPleaseMessage>(msg) || std::holds_alternative<PolicyMessage>(msg)) {
    return reject("unexpected_message", std::string(message_type(msg)) + " sent by vehicle " + vid, out);
  }
  v.last_heard = now;
  v.online = true;

  if (const auto* s = std::get_if<StateMessage>(&msg)) {
    on_state(&v, *s, now, out);
  } else if (const auto* m = std::get_if<StartedMessage>(&msg)) {
    JobEntry* entry = attempt_of(vid, m->job_id, m->attempt, "started", out);
    if (entry == nullptr) return;
    if (Status st = entry->job.start(m->attempt, now); !st) return reject("stale_message", st.error().message, out);
    out->push_back(PersistJobEffect{m->job_id});
  } else if (const auto* m = std::get_if<ChunkMessage>(&msg)) {
    JobEntry* entry = attempt_of(vid, m->job_id, m->attempt, "chunk", out);
    if (entry == nullptr) return;
    const size_t before = entry->job.produced().size();
    // A job that asked for logprobs needs them with every token (at most the
    // top-N it asked for): a vehicle that sends none cannot serve it.
    std::string logprobs_missing;
    if (const int32_t top_n = entry->spec.logprobs; top_n >= 0) {
      if (m->logprobs.size() != m->ids.size()) {
        logprobs_missing = "chunk without logprobs";
      } else if (std::any_of(m->logprobs.begin(), m->logprobs.end(), [&](const TokenLogprobs& t) {
                   return t.top.size() > static_cast<size_t>(top_n);
                 })) {
        logprobs_missing = std::string("chunk with more than ").append(std::to_string(top_n)).append(" top logprobs");
      }
    }
    Status st = logprobs_missing.empty() ? entry->job.append(m->attempt, m->first_index, m->ids, now)
                                         : Status(Unexpected(ErrorCode::kCorrupt, logprobs_missing));
    if (!st) {
      if (st.error().code != ErrorCode::kCorrupt) return reject("bad_chunk", st.error().message, out);
      // Different tokens for the same positions: the vehicle's engine is not
      // the deterministic engine we trust (or it left out the logprobs). End
      // its attempt; another redoes it.
      reject(logprobs_missing.empty() ? "chunk_conflict" : "chunk_logprobs", "vehicle " + vid + ": " + st.error().message,
             out);
      CHECK(entry->job
                .attempt_failed(m->attempt,
                                logprobs_missing.empty() ? "tokens differ from those already produced" : logprobs_missing,
                                now)
                .has_value());
      out->push_back(SendToVehicleEffect{vid, CancelMessage{m->job_id, m->attempt}});
      ++v.attempts_lost;
      // The vehicle still runs the attempt until the cancel reaches its engine:
      // as after a client's cancel, it stays busy until its state report no
      // longer names the job. Made idle now, it would be given the job again,
      // answer "busy", and the job would use up its attempts in a few round trips.
      requeue(entry, now);
      out->push_back(PersistJobEffect{m->job_id});
      return;
    }
    const auto& produced = entry->job.produced();
    if (produced.size() > before) {
      counters_.tokens_relayed += produced.size() - before;
      JobTokensEffect tokens{m->job_id, before, std::vector<int32_t>(produced.begin() + before, produced.end()), {}};
      if (entry->spec.logprobs >= 0) {
        // The chunk may repeat tokens we have (first_index < before): theirs
        // were relayed with them.
        const size_t overlap = before - m->first_index;
        CHECK(m->logprobs.size() == overlap + tokens.ids.size());
        tokens.logprobs.assign(m->logprobs.begin() + static_cast<std::ptrdiff_t>(overlap), m->logprobs.end());
      }
      out->push_back(std::move(tokens));
      out->push_back(PersistJobEffect{m->job_id});
    }
  } else if (const auto* m = std::get_if<DoneMessage>(&msg)) {
    if (config_.test_reemit_done_on_duplicate) {
      // TEST ONLY (CoordinatorCoreConfig::test_reemit_done_on_duplicate).
      auto it = jobs_.find(m->job_id);
      if (it != jobs_.end() && it->second.job.state() == JobState::kDone && m->attempt > 0 &&
          m->attempt == it->second.job.attempts().size() &&
          it->second.job.attempts().back().vehicle_id == vid) {
        out->push_back(JobEndedEffect{m->job_id, JobState::kDone, it->second.job.finish_reason()});
        return;
      }
    }
    JobEntry* entry = attempt_of(vid, m->job_id, m->attempt, "done", out);
    if (entry == nullptr) return;
    if (entry->spec.kind == WorkKind::kEmbed) {
      return reject("bad_done", "done from vehicle " + vid + " for embedding job " + m->job_id +
                                    ", which only an embedding message completes", out);
    }
    Status st = entry->job.complete(m->attempt, m->total_tokens, m->finish_reason, now);
    if (!st) return reject("bad_done", st.error().message, out);
    ++v.attempts_completed;
    release_vehicle(vid, m->job_id);
    const bool verifying = maybe_check(entry, now, out);
    finish(entry, out, verifying);
  } else if (const auto* m = std::get_if<PreemptedMessage>(&msg)) {
    JobEntry* entry = attempt_of(vid, m->job_id, m->attempt, "preempted", out);
    if (entry == nullptr) return;
    CHECK(entry->job.preempt(m->attempt, now).has_value());
    ++counters_.preemptions;
    out->push_back(CoordinatorLogEffect{"preempted", "job " + m->job_id + " attempt " + std::to_string(m->attempt) +
                                                         " on " + vid + " preempted after " +
                                                         std::to_string(entry->job.produced().size()) +
                                                         " tokens: " + m->reason});
    release_vehicle(vid, m->job_id);
    requeue(entry, now);
    out->push_back(PersistJobEffect{m->job_id});
  } else if (const auto* m = std::get_if<EmbeddingMessage>(&msg)) {
    if (!on_embedding(&v, *m, now, out)) return;
  } else if (const auto* m = std::get_if<ReceiptMessage>(&msg)) {
    return on_receipt(vid, *m, out);
  } else if (const auto* m = std::get_if<FailedMessage>(&msg)) {
    JobEntry* entry = attempt_of(vid, m->job_id, m->attempt, "failed", out);
    if (entry == nullptr) return;
    CHECK(entry->job.attempt_failed(m->attempt, m->error, now).has_value());
    ++v.attempts_lost;
    v.state_due = true;
    out->push_back(CoordinatorLogEffect{"attempt_failed", "job " + m->job_id + " attempt " +
                                                              std::to_string(m->attempt) + " on " + vid + ": " +
                                                              m->error});
    release_vehicle(vid, m->job_id);
    requeue(entry, now);
    out->push_back(PersistJobEffect{m->job_id});
  }
  ++counters_.messages_accepted;
  if (!queue_.empty() && !idle_.empty()) place_queued(now, out);
}

void CoordinatorMachine::on_receipt(const std::string& vid, const ReceiptMessage& m, Effects* out) {
  auto refuse = [&](const std::string& why) {
    reject("bad_receipt", "receipt from vehicle " + vid + " for job " + m.job_id + " attempt " +
                              std::to_string(m.attempt) + ": " + why,
           out);
  };
  if (m.vehicle_id != vid) return refuse("it names vehicle " + m.vehicle_id);
  auto it = jobs_.find(m.job_id);
  if (it == jobs_.end()) return refuse("no such job (or it finished long ago)");
  const JobEntry& entry = it->second;
  const auto& attempts = entry.job.attempts();
  if (m.attempt == 0 || m.attempt > attempts.size()) return refuse("no such attempt");
  const Attempt& a = attempts[m.attempt - 1];
  if (a.vehicle_id != vid) return refuse("the attempt ran on " + a.vehicle_id);
  if (a.end == AttemptEnd::kLive) return refuse("the attempt has not ended");
  if (m.model_id != entry.spec.model_id) return refuse("model " + m.model_id + ", not " + entry.spec.model_id);
  if (m.input_tokens != entry.spec.prompt_ids.size() + a.tokens_at_start) {
    return refuse(std::to_string(m.input_tokens) + " input tokens; the attempt resumed from " +
                  std::to_string(entry.spec.prompt_ids.size() + a.tokens_at_start));
  }
  if (m.output_tokens != a.tokens_appended) {
    return refuse(std::to_string(m.output_tokens) + " output tokens; " + std::to_string(a.tokens_appended) +
                  " arrived");
  }
  if (entry.spec.kind == WorkKind::kGenerate) {
    // The output as of the attempt's end is the job's first
    // tokens_at_start + tokens_appended tokens, whatever came after.
    const auto& produced = entry.job.produced();
    const size_t n = std::min<size_t>(produced.size(), a.tokens_at_start + a.tokens_appended);
    Sha256Hasher h;
    hash_output_ids(&h, std::span<const int32_t>(produced.data(), n));
    if (to_hex(h.finish()) != m.output_sha256) return refuse("its output hash is not that of the tokens it sent");
  }
  ++counters_.messages_accepted;
  out->push_back(ReceiptAcceptedEffect{m});
}

bool CoordinatorMachine::on_embedding(VehicleView* v, const EmbeddingMessage& m, TimeMs now, Effects* out) {
  const std::string& vid = v->id;
  JobEntry* entry = attempt_of(vid, m.job_id, m.attempt, "embedding", out);
  if (entry == nullptr) return false;
  if (entry->spec.kind != WorkKind::kEmbed) {
    reject("bad_embedding", "embedding from vehicle " + vid + " for job " + m.job_id + ", which is a generation", out);
    return false;
  }
  if (entry->job.state() != JobState::kRunning) {
    reject("bad_embedding", "embedding from vehicle " + vid + " for job " + m.job_id + " before it started", out);
    return false;
  }
  // What the engine makes: one value per model dimension, for exactly the
  // prompt, unit length (zero only for an all-zero mean). Anything else is a
  // vehicle we cannot trust with this job: its attempt fails and another
  // vehicle computes it.
  const ModelInfo* info = model(entry->spec.model_id);
  CHECK(info != nullptr);
  double norm2 = 0.0;
  for (float x : m.values) norm2 += static_cast<double>(x) * static_cast<double>(x);
  std::string wrong;
  if (info->embedding_dim != 0 && m.values.size() != info->embedding_dim) {
    wrong = std::to_string(m.values.size()) + " values, not the model's " + std::to_string(info->embedding_dim);
  } else if (m.tokens != entry->spec.prompt_ids.size()) {
    wrong = "it covers " + std::to_string(m.tokens) + " tokens, not the prompt's " +
            std::to_string(entry->spec.prompt_ids.size());
  } else if (norm2 != 0.0 && std::fabs(std::sqrt(norm2) - 1.0) > kEmbeddingNormTolerance) {
    wrong = "its length is " + std::to_string(std::sqrt(norm2)) + ", not 1";
  }
  if (!wrong.empty()) {
    reject("bad_embedding", "vehicle " + vid + ": embedding for job " + m.job_id + ": " + wrong, out);
    CHECK(entry->job.attempt_failed(m.attempt, "the vehicle's embedding was malformed: " + wrong, now).has_value());
    ++v->attempts_lost;
    release_vehicle(vid, m.job_id);
    requeue(entry, now);
    out->push_back(PersistJobEffect{m.job_id});
    place_queued(now, out);  // the vehicle has let go (its agent ended the attempt when it sent this)
    return false;
  }
  CHECK(entry->job.complete(m.attempt, 0, "stop", now).has_value());
  ++v->attempts_completed;
  release_vehicle(vid, m.job_id);
  out->push_back(JobEmbeddingEffect{m.job_id, m.tokens, m.values});
  finish(entry, out);
  return true;
}

// ---- Placement and time -----------------------------------------------------

void CoordinatorMachine::place_queued(TimeMs now, Effects* out) {
  std::vector<VehicleCandidate> candidates;
  for (auto qit = queue_.begin(); qit != queue_.end() && !idle_.empty();) {
    JobEntry& entry = jobs_.at(qit->second);
    const ModelInfo* info = model(entry.spec.model_id);
    CHECK(info != nullptr);
    PlacementRequest req;
    req.model_id = info->id;
    req.model_bytes = info->bytes;
    const uint64_t remaining = entry.spec.max_tokens - std::min<uint64_t>(entry.spec.max_tokens,
                                                                           entry.job.produced().size());
    req.expected_duration_ms = static_cast<DurationMs>(remaining) * config_.expected_ms_per_token;
    const bool embed = entry.spec.kind == WorkKind::kEmbed;
    if (embed) {
      // One batched prefill, far faster per token than decoding: an upper bound.
      req.expected_duration_ms = static_cast<DurationMs>(entry.spec.prompt_ids.size()) *
                                 config_.expected_ms_per_token / kPrefillSpeedupMin;
    }
    req.batch = entry.spec.batch;

    // A bounded sample of idle vehicles, from the rotating cursor on.
    candidates.clear();
    auto vit = idle_.upper_bound(cursor_);
    std::string last;
    // Vehicles that cannot take the job are passed over, but at most
    // kPlacementScanMax are looked at: a placement stays bounded however many
    // idle vehicles are too small for the model.
    for (size_t n = 0; n < std::min(idle_.size(), kPlacementScanMax) && candidates.size() < kPlacementCandidatesMax;
         ++n) {
      if (vit == idle_.end()) vit = idle_.begin();
      const VehicleView& v = vehicles_.at(*vit);
      // A check runs on a vehicle of the original's engine build that made
      // none of the tokens it checks.
      if (v.hello.memory_bytes < info->bytes ||  // it cannot hold the model: no use sampling it
          (embed && !v.hello.embeddings) ||       // it would generate instead
          (!entry.check_of.empty() &&
           (v.hello.engine_build != entry.engine_build || entry.excluded_vehicles.count(v.id) != 0))) {
        last = *vit;
        ++vit;
        continue;
      }
      VehicleCandidate c;
      c.vehicle_id = v.id;
      c.eligible = true;
      c.memory_free_bytes = v.hello.memory_bytes;
      c.model_cached = std::find(v.hello.models_cached.begin(), v.hello.models_cached.end(), info->id) !=
                       v.hello.models_cached.end();
      c.departure_earliest = v.state->departure_earliest;
      c.accelerator_temp_c = v.state->accelerator_temp_c;
      c.attempts_completed = v.attempts_completed;
      c.attempts_lost = v.attempts_lost;
      if (auto st = standings_.find(v.id); st != standings_.end()) {
        c.standing = static_cast<double>(st->second.standing) / kStandingMax;
      }
      candidates.push_back(std::move(c));
      last = *vit;
      ++vit;
    }
    cursor_ = last;
    const std::optional<Placement> p = place(req, candidates, now, config_.weights);
    if (!p) {
      ++qit;
      continue;
    }
    const std::string job_id = qit->second;
    qit = queue_.erase(qit);
    if (Status st = entry.job.assign(p->vehicle_id, now); !st) {
      finish(&entry, out);  // out of attempts: the job has failed
      continue;
    }
    VehicleView& v = vehicles_.at(p->vehicle_id);
    const Attempt& a = *entry.job.current();
    v.job_id = job_id;
    v.attempt = a.number;
    idle_.erase(v.id);
    running_.insert(job_id);
    ++counters_.placements;
    AssignMessage m;
    m.job_id = job_id;
    m.attempt = a.number;
    m.model_id = entry.spec.model_id;
    m.prompt_ids = entry.spec.prompt_ids;
    m.produced_ids = entry.job.produced();
    m.max_tokens = entry.job.max_tokens();
    m.stop_ids = entry.spec.stop_ids;
    m.sampling = entry.spec.sampling;
    m.lease_expires_at = a.lease_expires_at;
    m.logprobs = entry.spec.logprobs;
    m.kind = entry.spec.kind;
    out->push_back(SendToVehicleEffect{v.id, std::move(m)});
    out->push_back(PersistJobEffect{job_id});
  }
}

void CoordinatorMachine::tick(TimeMs now, Effects* out) {
  // Jobs under verification, and their check runs, stay until it ends
  // (bounded by checks_live_max and check_wait_ms_max): they go to the back.
  for (size_t visits = finished_.size(); finished_.size() > config_.finished_jobs_kept_max && visits > 0; --visits) {
    const std::string id = finished_.front();
    finished_.pop_front();
    const JobEntry& e = jobs_.at(id);
    if (verifying_.count(id) != 0 || (!e.check_of.empty() && verifying_.count(e.check_of) != 0)) {
      finished_.push_back(id);
    } else {
      jobs_.erase(id);
    }
  }
  // The offline sweep visits a slice of the vehicles per tick, sized so that
  // each is visited at least every half timeout: a silent vehicle goes
  // offline within 1.5 timeouts, and a tick costs the same in a fleet of ten
  // or of a million.
  if (!vehicles_.empty()) {
    const DurationMs period = std::max<DurationMs>(1, config_.vehicle_timeout_ms / 2);
    const DurationMs since = sweep_at_ < 0 ? period : std::clamp<DurationMs>(now - sweep_at_, 0, period);
    const size_t n = vehicles_.size();
    size_t budget = std::min<size_t>(n, (n * static_cast<size_t>(since) + static_cast<size_t>(period) - 1) /
                                            static_cast<size_t>(period));
    sweep_at_ = now;
    for (auto it = vehicles_.upper_bound(sweep_cursor_); budget > 0; --budget) {
      if (it == vehicles_.end()) it = vehicles_.begin();
      VehicleView& v = it->second;
      if (v.online && now - v.last_heard > config_.vehicle_timeout_ms) {
        v.online = false;
        update_idle(v);
        out->push_back(CoordinatorLogEffect{"vehicle_offline", "vehicle " + it->first + " silent for " +
                                                                   std::to_string(now - v.last_heard) + " ms"});
      }
      sweep_cursor_ = it->first;
      ++it;
    }
  }
  const std::vector<std::string> running(running_.begin(), running_.end());
  for (const std::string& id : running) {
    JobEntry& entry = jobs_.at(id);
    const Attempt* a = entry.job.current();
    if (a == nullptr) {
      running_.erase(id);
      continue;
    }
    const std::string vid = a->vehicle_id;
    const uint32_t number = a->number;
    if (!entry.job.expire_lease(now)) continue;
    ++counters_.attempts_lost;
    auto vit = vehicles_.find(vid);
    if (vit != vehicles_.end()) ++vit->second.attempts_lost;
    out->push_back(CoordinatorLogEffect{"lease_expired", "job " + id + " attempt " + std::to_string(number) + " on " +
                                                             vid + ": lease expired, placing it again"});
    out->push_back(SendToVehicleEffect{vid, CancelMessage{id, number}});
    // Silent for a whole lease: treat the vehicle as gone. It stays marked
    // busy with the old attempt until a state report of its own says it has
    // let go, so it is never handed work while its engine may still run.
    if (vit != vehicles_.end()) {
      vit->second.online = false;
      update_idle(vit->second);
    }
    requeue(&entry, now);
    out->push_back(PersistJobEffect{id});
  }
  for (auto qit = queue_.begin(); qit != queue_.end();) {
    JobEntry& entry = jobs_.at(qit->second);
    ++qit;  // finish() erases the entry's queue key
    const DurationMs limit = !entry.check_of.empty() ? config_.verification.check_wait_ms_max
                             : entry.spec.batch      ? config_.queued_batch_ms_max
                                                     : config_.queued_ms_max;
    if (now - entry.job.created_at() > limit) {
      CHECK(entry.job.fail("no vehicle finished it within " + std::to_string(limit / kSecondMs) + " s", now)
                .has_value());
      finish(&entry, out);
    }
  }
  place_queued(now, out);
}

std::vector<CoordinatorEffect> CoordinatorMachine::handle(const CoordinatorEvent& event, TimeMs now) {
  Effects out;
  if (const auto* e = std::get_if<SubmitJobEvent>(&event)) {
    submit(*e, now, &out);
  } else if (const auto* e = std::get_if<CancelJobEvent>(&event)) {
    cancel(e->job_id, now, &out);
  } else if (const auto* e = std::get_if<StopJobEvent>(&event)) {
    cancel(e->job_id, now, &out, &e->finish_reason);
  } else if (const auto* e = std::get_if<VehicleMessageEvent>(&event)) {
    on_vehicle(*e, now, &out);
  } else if (std::holds_alternative<CoordinatorTick>(event)) {
    tick(now, &out);
  } else if (const auto* e = std::get_if<RestoreStandingEvent>(&event)) {
    if (standings_.count(e->vehicle_id) == 0 && standings_.size() >= config_.vehicles_max) {
      reject("too_many_vehicles", "standing of vehicle " + e->vehicle_id + " not restored", &out);
    } else {
      VehicleStanding s = e->standing;
      s.standing = std::clamp(s.standing, 0, kStandingMax);
      standings_[e->vehicle_id] = std::move(s);
      if (auto vit = vehicles_.find(e->vehicle_id); vit != vehicles_.end()) update_idle(vit->second);
    }
  } else if (const auto* e = std::get_if<LiftQuarantineEvent>(&event)) {
    auto st = standings_.find(e->vehicle_id);
    if (st != standings_.end() && st->second.quarantined) {
      VehicleStanding lifted = initial_standing(config_.verification);
      lifted.checks_agreed = st->second.checks_agreed;
      lifted.checks_faulted = st->second.checks_faulted;
      st->second = std::move(lifted);
      out.push_back(VehicleStandingEffect{e->vehicle_id, st->second});
      out.push_back(CoordinatorLogEffect{"quarantine_lifted", "vehicle " + e->vehicle_id + ": quarantine lifted"});
      if (auto vit = vehicles_.find(e->vehicle_id); vit != vehicles_.end()) update_idle(vit->second);
      place_queued(now, &out);
    }
  } else if (const auto* e = std::get_if<RestoreJobEvent>(&event)) {
    const std::string id = e->job.id();
    if (jobs_.count(id) != 0) {
      reject("duplicate_restore", "job " + id + " restored twice", &out);
      return out;
    }
    const uint64_t seq = next_sequence_++;
    auto [it, inserted] = jobs_.emplace(id, JobEntry{e->job, e->spec, seq, now});
    if (job_state_final(it->second.job.state())) {
      finished_.push_back(id);
    } else {
      ++live_jobs_;
      queue_[{e->spec.batch, seq}] = id;
      out.push_back(PersistJobEffect{id});
    }
  }
  // Check runs that ended in this event: compare and decide (which may
  // queue a third run, so placement runs once more).
  bool placed_check = false;
  while (!checks_ended_.empty()) {
    const std::string id = std::move(checks_ended_.front());
    checks_ended_.pop_front();
    on_check_ended(jobs_.at(id), now, &out);
    placed_check = true;
  }
  if (placed_check && !queue_.empty() && !idle_.empty()) place_queued(now, &out);
  drop_check_effects(&out);
  return out;
}

// ---- Verification -----------------------------------------------------------

const char* verification_outcome_name(VerificationOutcome o) {
  switch (o) {
    case VerificationOutcome::kAgreed: return "agreed";
    case VerificationOutcome::kCorrected: return "corrected";
    case VerificationOutcome::kUnresolved: return "unresolved";
    case VerificationOutcome::kUnverified: return "unverified";
  }
  return "?";
}

const VehicleStanding* CoordinatorMachine::standing(const std::string& vehicle_id) const {
  auto it = standings_.find(vehicle_id);
  return it == standings_.end() ? nullptr : &it->second;
}

VehicleStanding& CoordinatorMachine::standing_of(const std::string& vehicle_id) {
  auto it = standings_.find(vehicle_id);
  if (it == standings_.end()) it = standings_.emplace(vehicle_id, initial_standing(config_.verification)).first;
  return it->second;
}

void CoordinatorMachine::agree(const std::string& vehicle_id, Effects* out) {
  VehicleStanding& s = standing_of(vehicle_id);
  record_agreement(&s, config_.verification);
  out->push_back(VehicleStandingEffect{vehicle_id, s});
}

void CoordinatorMachine::fault(const std::string& vehicle_id, const std::string& why, TimeMs now, Effects* out) {
  VehicleStanding& s = standing_of(vehicle_id);
  const bool quarantined = record_fault(&s, config_.verification, why, now);
  out->push_back(VehicleStandingEffect{vehicle_id, s});
  out->push_back(CoordinatorLogEffect{"check_fault", "vehicle " + vehicle_id + " at fault (standing " +
                                                         std::to_string(s.standing) + "): " + why});
  if (quarantined) {
    ++counters_.quarantines;
    out->push_back(CoordinatorLogEffect{"vehicle_quarantined", "vehicle " + vehicle_id + " quarantined: " + why});
    if (auto vit = vehicles_.find(vehicle_id); vit != vehicles_.end()) update_idle(vit->second);
  }
}

bool CoordinatorMachine::maybe_check(JobEntry* entry, TimeMs now, Effects* out) {
  const VerificationConfig& vc = config_.verification;
  if (!vc.enabled || entry->spec.kind != WorkKind::kGenerate || !entry->check_of.empty()) return false;
  const std::vector<std::string> made = producers(entry->job.attempts());
  if (made.empty()) return false;
  double p = 0.0;
  for (const std::string& vid : made) p = std::max(p, check_probability(standing_of(vid), vc));
  if (!draw_check(vc.seed, entry->job.id(), p)) return false;
  if (verifying_.size() >= vc.checks_live_max) {
    out->push_back(CoordinatorLogEffect{"check_skipped", "job " + entry->job.id() + " not checked: " +
                                                             std::to_string(vc.checks_live_max) +
                                                             " verifications already running"});
    return false;
  }
  verifying_[entry->job.id()] = Verification{};
  if (start_check(*entry, 1, std::set<std::string>(made.begin(), made.end()), now)) return true;
  verifying_.erase(entry->job.id());
  return false;
}

bool CoordinatorMachine::start_check(const JobEntry& original, uint32_t round, std::set<std::string> excluded,
                                     TimeMs now) {
  // `original` is the checked job itself (round 1) or its first check run (round 2).
  const std::string& root = original.check_of.empty() ? original.job.id() : original.check_of;
  const std::string id = check_job_id(config_.verification.seed, root, round);
  if (jobs_.count(id) != 0) return false;  // a 64-bit hash collision: the job goes unchecked
  JobSpec spec = original.spec;
  spec.batch = true;   // after every client's interactive job
  spec.logprobs = -1;  // only the tokens are compared
  const uint64_t seq = next_sequence_++;
  JobEntry e{Job(id, now, spec.max_tokens, config_.limits), std::move(spec), seq, now};
  e.check_of = root;
  e.check_round = round;
  e.excluded_vehicles = std::move(excluded);
  // The build of the vehicle that made the original's first token (the
  // original's own, for a first run; the same, carried on, for a third).
  if (!original.check_of.empty()) {
    e.engine_build = original.engine_build;
  } else if (const Attempt* first = attempt_at(original.job.attempts(), 0)) {
    auto vit = vehicles_.find(first->vehicle_id);
    if (vit != vehicles_.end()) e.engine_build = vit->second.hello.engine_build;
  }
  jobs_.emplace(id, std::move(e));
  queue_[{true, seq}] = id;
  ++live_jobs_;
  ++counters_.checks_started;
  verifying_[root].check_ids.push_back(id);
  return true;
}

void CoordinatorMachine::end_verification(const std::string& job_id, JobVerifiedEffect verdict, Effects* out) {
  verifying_.erase(job_id);
  switch (verdict.outcome) {
    case VerificationOutcome::kAgreed:
      (verdict.vehicles_at_fault.empty() ? counters_.checks_agreed : counters_.checks_disputed) += 1;
      break;
    case VerificationOutcome::kCorrected: ++counters_.checks_disputed; break;
    case VerificationOutcome::kUnresolved:
    case VerificationOutcome::kUnverified: ++counters_.checks_unverified; break;
  }
  out->push_back(CoordinatorLogEffect{"job_verified", "job " + job_id + ": " +
                                                          verification_outcome_name(verdict.outcome) + ": " +
                                                          verdict.detail});
  out->push_back(std::move(verdict));
}

void CoordinatorMachine::on_check_ended(const JobEntry& check, TimeMs now, Effects* out) {
  const std::string original_id = check.check_of;
  auto vit = verifying_.find(original_id);
  auto oit = jobs_.find(original_id);
  if (vit == verifying_.end() || oit == jobs_.end()) return;
  const JobEntry& original = oit->second;
  const std::vector<int32_t>& mine = original.job.produced();
  JobVerifiedEffect verdict;
  verdict.job_id = original_id;
  if (check.job.state() != JobState::kDone) {
    if (check.check_round == 1) {
      verdict.outcome = VerificationOutcome::kUnverified;
      verdict.agreed_ids = mine;
      verdict.detail = "the check run " + std::string(job_state_name(check.job.state())) + ": " +
                       check.job.finish_reason();
    } else {
      verdict.outcome = VerificationOutcome::kUnresolved;
      verdict.detail = "the first check disagreed and the deciding run " +
                       std::string(job_state_name(check.job.state())) + ": " + check.job.finish_reason();
    }
    return end_verification(original_id, std::move(verdict), out);
  }
  const std::vector<int32_t>& theirs = check.job.produced();
  std::set<std::string> honest;
  auto add_producers = [&](const JobEntry& e) {
    for (const std::string& v : producers(e.job.attempts())) honest.insert(v);
  };
  if (check.check_round == 1) {
    if (!first_difference(mine, theirs)) {
      add_producers(original);
      add_producers(check);
      for (const std::string& v : honest) agree(v, out);
      verdict.outcome = VerificationOutcome::kAgreed;
      verdict.agreed_ids = mine;
      verdict.detail = "a re-run on another vehicle agreed";
      return end_verification(original_id, std::move(verdict), out);
    }
    // Disagreement: a third run, on none of the vehicles so far, decides.
    vit->second.first_check_ids = theirs;
    std::set<std::string> excluded = check.excluded_vehicles;
    for (const std::string& v : producers(check.job.attempts())) excluded.insert(v);
    out->push_back(CoordinatorLogEffect{"check_disagreed", "job " + original_id + ": the re-run differs at token " +
                                                               std::to_string(*first_difference(mine, theirs)) +
                                                               "; a third run decides"});
    if (start_check(check, 2, std::move(excluded), now)) return;
    verdict.outcome = VerificationOutcome::kUnresolved;
    verdict.detail = "the re-run disagreed and the deciding run could not be queued";
    return end_verification(original_id, std::move(verdict), out);
  }
  // The deciding run.
  CHECK(!vit->second.check_ids.empty());
  const JobEntry& first_check = jobs_.at(vit->second.check_ids.front());
  const std::vector<int32_t>& first = vit->second.first_check_ids;
  auto blame = [&](const JobEntry& wrong, const std::vector<int32_t>& agreed, const char* role) -> const Attempt* {
    const uint64_t at = first_difference(wrong.job.produced(), agreed).value_or(0);
    const Attempt* a = attempt_at(wrong.job.attempts(), at);
    if (a == nullptr) return nullptr;
    fault(a->vehicle_id,
          std::string("its output for job ") + original_id + " (" + role + ") differed at token " +
              std::to_string(at) + " from the output two other vehicles agreed on",
          now, out);
    verdict.vehicles_at_fault.push_back(a->vehicle_id);
    // Earlier attempts of the wrong run made agreed tokens: honest too.
    for (const Attempt& b : wrong.job.attempts()) {
      if (b.tokens_appended > 0 && b.tokens_at_start + b.tokens_appended <= at && b.vehicle_id != a->vehicle_id) {
        honest.insert(b.vehicle_id);
      }
    }
    return a;
  };
  if (!first_difference(mine, theirs)) {
    add_producers(original);
    add_producers(check);
    blame(first_check, mine, "a check run");
    verdict.outcome = VerificationOutcome::kAgreed;
    verdict.agreed_ids = mine;
    verdict.detail = "the first re-run was wrong; a third run agreed with the original";
  } else if (!first_difference(first, theirs)) {
    add_producers(first_check);
    add_producers(check);
    if (const Attempt* a = blame(original, first, "the original run")) verdict.attempts_at_fault.push_back(a->number);
    verdict.outcome = VerificationOutcome::kCorrected;
    verdict.agreed_ids = first;
    verdict.detail = "two re-runs agreed on an output that differs from the original's";
  } else {
    verdict.outcome = VerificationOutcome::kUnresolved;
    verdict.detail = "three runs gave three different outputs";
  }
  for (const std::string& v : verdict.vehicles_at_fault) honest.erase(v);
  for (const std::string& v : honest) agree(v, out);
  end_verification(original_id, std::move(verdict), out);
}

void CoordinatorMachine::drop_check_effects(Effects* out) const {
  auto is_check = [](const std::string& id) { return id.starts_with(kCheckJobIdPrefix); };
  std::erase_if(*out, [&](const CoordinatorEffect& e) {
    if (const auto* x = std::get_if<JobTokensEffect>(&e)) return is_check(x->job_id);
    if (const auto* x = std::get_if<JobEndedEffect>(&e)) return is_check(x->job_id);
    if (const auto* x = std::get_if<PersistJobEffect>(&e)) return is_check(x->job_id);
    if (const auto* x = std::get_if<JobEmbeddingEffect>(&e)) return is_check(x->job_id);
    return false;
  });
}

}  // namespace idlefleet::core
