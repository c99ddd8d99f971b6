// The coordinator's state machine: placement, leases, trust in messages, and
// a seeded chaos run in which no job is lost or duplicated.
#include "core/coordinator_machine.h"

#include <gtest/gtest.h>

#include <deque>
#include <map>

#include "common/random.h"

namespace idlefleet::core::coordinator_machine_test {
namespace {

constexpr TimeMs kT0 = 1'700'000'000'000;

CoordinatorCoreConfig config() {
  CoordinatorCoreConfig c;
  c.models = {{"m", 1u << 20}};
  c.limits.lease_ms = 1000;
  c.vehicle_timeout_ms = 3000;
  return c;
}

JobSpec spec(uint64_t max_tokens = 8) {
  JobSpec s;
  s.model_id = std::string(1, 'm');  // not = "m": g++ 12 warns falsely (-Wrestrict) on that here
  s.prompt_ids = {1, 5, 6};
  s.max_tokens = max_tokens;
  return s;
}

HelloMessage hello(const std::string& id, const std::string& instance = "a") {
  HelloMessage h;
  h.vehicle_id = id;
  h.models_cached = {"m"};
  h.memory_bytes = 8ull << 30;
  h.instance = instance;
  return h;
}

StateMessage state(const std::string& id, bool eligible, TimeMs now, std::string job = "", uint32_t attempt = 0) {
  StateMessage s;
  s.vehicle_id = id;
  s.state = eligible ? "eligible" : "parked";
  s.eligible = eligible;
  s.soc_pct = 60;
  s.sent_at = now;
  s.job_id = std::move(job);
  s.attempt = attempt;
  return s;
}

template <class T>
std::vector<T> effects_of(const std::vector<CoordinatorEffect>& fx) {
  std::vector<T> out;
  for (const auto& e : fx) {
    if (const auto* x = std::get_if<T>(&e)) out.push_back(*x);
  }
  return out;
}

std::vector<AssignMessage> assigns(const std::vector<CoordinatorEffect>& fx, std::vector<std::string>* to = nullptr) {
  std::vector<AssignMessage> out;
  for (const auto& s : effects_of<SendToVehicleEffect>(fx)) {
    if (const auto* a = std::get_if<AssignMessage>(&s.message)) {
      out.push_back(*a);
      if (to) to->push_back(s.vehicle_id);
    }
  }
  return out;
}

void join(CoordinatorMachine* c, const std::string& vid, TimeMs now, bool eligible = true) {
  c->handle(VehicleMessageEvent{vid, hello(vid)}, now);
  c->handle(VehicleMessageEvent{vid, state(vid, eligible, now)}, now);
}

TEST(CoordinatorMachine, PlacesRunsAndFinishesAJob) {
  CoordinatorMachine c(config());
  join(&c, "v1", kT0);
  auto fx = c.handle(SubmitJobEvent{"j1", spec(3)}, kT0);
  ASSERT_EQ(effects_of<JobAcceptedEffect>(fx).size(), 1u);
  EXPECT_TRUE(effects_of<JobAcceptedEffect>(fx)[0].status.has_value());
  std::vector<std::string> to;
  auto a = assigns(fx, &to);
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(to[0], "v1");
  EXPECT_EQ(a[0].prompt_ids, spec().prompt_ids);
  EXPECT_EQ(c.vehicles_available(), 0u);

  c.handle(VehicleMessageEvent{"v1", StartedMessage{"j1", 1}}, kT0 + 1);
  fx = c.handle(VehicleMessageEvent{"v1", ChunkMessage{"j1", 1, 0, {10, 11}}}, kT0 + 2);
  ASSERT_EQ(effects_of<JobTokensEffect>(fx).size(), 1u);
  EXPECT_EQ(effects_of<JobTokensEffect>(fx)[0].ids, std::vector<int32_t>({10, 11}));
  // A duplicate that agrees is harmless and relays nothing new.
  fx = c.handle(VehicleMessageEvent{"v1", ChunkMessage{"j1", 1, 0, {10, 11}}}, kT0 + 3);
  EXPECT_TRUE(effects_of<JobTokensEffect>(fx).empty());
  // A gap is refused.
  fx = c.handle(VehicleMessageEvent{"v1", ChunkMessage{"j1", 1, 5, {1}}}, kT0 + 3);
  ASSERT_EQ(effects_of<CoordinatorLogEffect>(fx).size(), 1u);
  EXPECT_EQ(effects_of<CoordinatorLogEffect>(fx)[0].what, "bad_chunk");
  fx = c.handle(VehicleMessageEvent{"v1", ChunkMessage{"j1", 1, 2, {12}}}, kT0 + 4);
  EXPECT_EQ(effects_of<JobTokensEffect>(fx)[0].first_index, 2u);
  fx = c.handle(VehicleMessageEvent{"v1", DoneMessage{"j1", 1, 3, "length"}}, kT0 + 5);
  ASSERT_EQ(effects_of<JobEndedEffect>(fx).size(), 1u);
  EXPECT_EQ(effects_of<JobEndedEffect>(fx)[0].state, JobState::kDone);
  EXPECT_EQ(c.job("j1")->job.produced(), std::vector<int32_t>({10, 11, 12}));
  EXPECT_EQ(c.vehicles_available(), 1u);
  EXPECT_EQ(c.counters().jobs_done, 1u);
  // Done twice: stale.
  fx = c.handle(VehicleMessageEvent{"v1", DoneMessage{"j1", 1, 3, "length"}}, kT0 + 6);
  EXPECT_EQ(effects_of<CoordinatorLogEffect>(fx)[0].what, "stale_message");
  EXPECT_EQ(c.counters().jobs_done, 1u);
}

ReceiptMessage receipt_for(const std::string& vid, const std::string& job, uint32_t attempt, uint64_t input,
                           std::vector<int32_t> output_so_far, uint64_t output_tokens) {
  ReceiptMessage r;
  r.vehicle_id = vid;
  r.job_id = job;
  r.attempt = attempt;
  r.model_id = "m";
  r.outcome = "done";
  r.input_tokens = input;
  r.output_tokens = output_tokens;
  Sha256Hasher h;
  hash_output_ids(&h, output_so_far);
  r.output_sha256 = to_hex(h.finish());
  r.energy_mwh = 5;
  r.accelerator_ms = 100;
  return r;
}

TEST(CoordinatorMachine, AcceptsAReceiptOnlyWhenItMatchesTheAttempt) {
  CoordinatorMachine c(config());
  join(&c, "v1", kT0);
  join(&c, "v2", kT0);
  c.handle(SubmitJobEvent{"j1", spec(3)}, kT0);
  const std::string vid = c.job("j1")->job.attempts()[0].vehicle_id;
  const std::string other = vid == "v1" ? "v2" : "v1";
  c.handle(VehicleMessageEvent{vid, StartedMessage{"j1", 1}}, kT0 + 1);
  c.handle(VehicleMessageEvent{vid, ChunkMessage{"j1", 1, 0, {10, 11, 12}}}, kT0 + 2);
  const ReceiptMessage good = receipt_for(vid, "j1", 1, 3, {10, 11, 12}, 3);
  // Before the attempt has ended: refused.
  auto fx = c.handle(VehicleMessageEvent{vid, good}, kT0 + 3);
  ASSERT_FALSE(effects_of<CoordinatorLogEffect>(fx).empty());
  EXPECT_EQ(effects_of<CoordinatorLogEffect>(fx)[0].what, "bad_receipt");
  c.handle(VehicleMessageEvent{vid, DoneMessage{"j1", 1, 3, "length"}}, kT0 + 4);
  struct Case {
    std::string what, from;
    ReceiptMessage r;
  };
  ReceiptMessage wrong_tokens = good, wrong_input = good, wrong_hash = good, wrong_model = good, wrong_attempt = good,
                 named_other = good;
  wrong_tokens.output_tokens = 4;
  wrong_input.input_tokens = 2;
  wrong_hash = receipt_for(vid, "j1", 1, 3, {10, 11, 13}, 3);
  wrong_model.model_id = "m2";
  wrong_attempt.attempt = 2;
  named_other.vehicle_id = other;
  for (const Case& k : std::vector<Case>{{"more tokens than arrived", vid, wrong_tokens},
                                         {"another prefill", vid, wrong_input},
                                         {"another output", vid, wrong_hash},
                                         {"another model", vid, wrong_model},
                                         {"no such attempt", vid, wrong_attempt},
                                         {"another vehicle's attempt", other, named_other},
                                         {"another vehicle's name", vid, named_other}}) {
    fx = c.handle(VehicleMessageEvent{k.from, k.r}, kT0 + 5);
    EXPECT_TRUE(effects_of<ReceiptAcceptedEffect>(fx).empty()) << k.what;
    ASSERT_FALSE(effects_of<CoordinatorLogEffect>(fx).empty()) << k.what;
  }
  fx = c.handle(VehicleMessageEvent{vid, good}, kT0 + 6);
  ASSERT_EQ(effects_of<ReceiptAcceptedEffect>(fx).size(), 1u);
  EXPECT_EQ(effects_of<ReceiptAcceptedEffect>(fx)[0].receipt, good);
}

TEST(CoordinatorMachine, StopJobEndsItAsDoneAndStopsTheVehicle) {
  CoordinatorMachine c(config());
  join(&c, "v1", kT0);
  c.handle(SubmitJobEvent{"j1", spec(8)}, kT0);
  c.handle(VehicleMessageEvent{"v1", StartedMessage{"j1", 1}}, kT0 + 1);
  c.handle(VehicleMessageEvent{"v1", ChunkMessage{"j1", 1, 0, {10, 11}}}, kT0 + 2);
  auto fx = c.handle(StopJobEvent{"j1", "stop"}, kT0 + 3);
  ASSERT_EQ(effects_of<SendToVehicleEffect>(fx).size(), 1u);
  EXPECT_TRUE(std::holds_alternative<CancelMessage>(effects_of<SendToVehicleEffect>(fx)[0].message));
  ASSERT_EQ(effects_of<JobEndedEffect>(fx).size(), 1u);
  EXPECT_EQ(effects_of<JobEndedEffect>(fx)[0].state, JobState::kDone);
  EXPECT_EQ(effects_of<JobEndedEffect>(fx)[0].finish_reason, "stop");
  EXPECT_EQ(c.job("j1")->job.produced(), std::vector<int32_t>({10, 11}));
  EXPECT_EQ(c.counters().jobs_done, 1u);
  // The vehicle's late chunk and its own ending are stale, not errors.
  fx = c.handle(VehicleMessageEvent{"v1", ChunkMessage{"j1", 1, 2, {12}}}, kT0 + 4);
  EXPECT_TRUE(effects_of<JobTokensEffect>(fx).empty());
  // Stopping a finished job does nothing.
  EXPECT_TRUE(c.handle(StopJobEvent{"j1", "stop"}, kT0 + 5).empty());
  EXPECT_EQ(c.counters().jobs_done, 1u);
}

TEST(CoordinatorMachine, PreemptedJobContinuesOnAnotherVehicleFromItsTokens) {
  CoordinatorMachine c(config());
  join(&c, "v1", kT0);
  c.handle(SubmitJobEvent{"j1", spec(4)}, kT0);
  join(&c, "v2", kT0);
  c.handle(VehicleMessageEvent{"v1", StartedMessage{"j1", 1}}, kT0);
  c.handle(VehicleMessageEvent{"v1", ChunkMessage{"j1", 1, 0, {10, 11}}}, kT0);
  // v1's driver returns: it reports ineligible and preempted.
  c.handle(VehicleMessageEvent{"v1", state("v1", false, kT0 + 1, "j1", 1)}, kT0 + 1);
  std::vector<std::string> to;
  auto fx = c.handle(VehicleMessageEvent{"v1", PreemptedMessage{"j1", 1, 2, "driver's door open"}}, kT0 + 2);
  auto a = assigns(fx, &to);
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(to[0], "v2");
  EXPECT_EQ(a[0].attempt, 2u);
  EXPECT_EQ(a[0].produced_ids, std::vector<int32_t>({10, 11}));
  EXPECT_EQ(c.counters().preemptions, 1u);
  // v1's late chunk for the old attempt is stale.
  fx = c.handle(VehicleMessageEvent{"v1", ChunkMessage{"j1", 1, 2, {12}}}, kT0 + 3);
  EXPECT_EQ(effects_of<CoordinatorLogEffect>(fx)[0].what, "stale_message");
  EXPECT_EQ(c.job("j1")->job.produced().size(), 2u);
}

TEST(CoordinatorMachine, ExpiredLeaseReplacesTheJobAndCancelsTheSilentVehicle) {
  CoordinatorMachine c(config());
  join(&c, "v1", kT0);
  c.handle(SubmitJobEvent{"j1", spec()}, kT0);
  join(&c, "v2", kT0);
  c.handle(VehicleMessageEvent{"v1", StartedMessage{"j1", 1}}, kT0);
  c.handle(VehicleMessageEvent{"v2", state("v2", true, kT0 + 900)}, kT0 + 900);
  auto fx = c.handle(CoordinatorTick{}, kT0 + 999);
  EXPECT_TRUE(assigns(fx).empty());
  fx = c.handle(CoordinatorTick{}, kT0 + 1000);
  std::vector<std::string> to;
  ASSERT_EQ(assigns(fx, &to).size(), 1u);
  EXPECT_EQ(to[0], "v2");
  bool cancelled = false;
  for (const auto& s : effects_of<SendToVehicleEffect>(fx)) {
    cancelled |= s.vehicle_id == "v1" && std::holds_alternative<CancelMessage>(s.message);
  }
  EXPECT_TRUE(cancelled);
  EXPECT_EQ(c.counters().attempts_lost, 1u);
}

TEST(CoordinatorMachine, HeartbeatRenewsTheLease) {
  CoordinatorMachine c(config());
  join(&c, "v1", kT0);
  c.handle(SubmitJobEvent{"j1", spec()}, kT0);
  c.handle(VehicleMessageEvent{"v1", StartedMessage{"j1", 1}}, kT0);
  c.handle(VehicleMessageEvent{"v1", state("v1", true, kT0 + 800, "j1", 1)}, kT0 + 800);
  c.handle(CoordinatorTick{}, kT0 + 1500);
  EXPECT_EQ(c.counters().attempts_lost, 0u);
  EXPECT_EQ(c.job("j1")->job.state(), JobState::kRunning);
}

TEST(CoordinatorMachine, RestartedAgentLosesItsAttemptAtOnce) {
  CoordinatorMachine c(config());
  join(&c, "v1", kT0);
  c.handle(SubmitJobEvent{"j1", spec()}, kT0);
  c.handle(VehicleMessageEvent{"v1", StartedMessage{"j1", 1}}, kT0);
  c.handle(VehicleMessageEvent{"v1", ChunkMessage{"j1", 1, 0, {3}}}, kT0);
  auto fx = c.handle(VehicleMessageEvent{"v1", hello("v1", "b")}, kT0 + 10);
  EXPECT_EQ(effects_of<CoordinatorLogEffect>(fx)[0].what, "vehicle_restarted");
  // The old instance's report says nothing of the new one: nothing is placed
  // on it until it reports its own state, and then at once.
  EXPECT_TRUE(assigns(fx).empty());
  fx = c.handle(VehicleMessageEvent{"v1", state("v1", true, kT0 + 11)}, kT0 + 11);
  auto a = assigns(fx);
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a[0].attempt, 2u);
  EXPECT_EQ(a[0].produced_ids, std::vector<int32_t>({3}));
}

// A restarted agent may already run something this coordinator counted as
// lost (an assignment that reached the new instance before its hello). It
// answers "busy"; the coordinator waits for its report to stop naming that
// job instead of asking again at once, which would use up the next job's
// attempts in a few round trips.
TEST(CoordinatorMachine, AVehicleThatSaysBusyIsNotAskedAgainUntilItIsFree) {
  CoordinatorMachine c(config());
  join(&c, "v1", kT0);
  c.handle(SubmitJobEvent{"j1", spec()}, kT0);
  c.handle(SubmitJobEvent{"j2", spec()}, kT0);
  c.handle(VehicleMessageEvent{"v1", StartedMessage{"j1", 1}}, kT0);
  // A new instance: j1's attempt is lost, though the new agent runs it.
  auto fx = c.handle(VehicleMessageEvent{"v1", hello("v1", "b")}, kT0 + 1);
  EXPECT_TRUE(assigns(fx).empty());
  fx = c.handle(VehicleMessageEvent{"v1", state("v1", true, kT0 + 2, "j1", 1)}, kT0 + 2);
  EXPECT_TRUE(assigns(fx).empty()) << "it reports j1 running";
  // Its report says idle, but a stale one: the car is given j1 again and says busy.
  fx = c.handle(VehicleMessageEvent{"v1", state("v1", true, kT0 + 3)}, kT0 + 3);
  auto a = assigns(fx);
  ASSERT_EQ(a.size(), 1u);
  fx = c.handle(VehicleMessageEvent{"v1", FailedMessage{a[0].job_id, a[0].attempt, "vehicle v1 is busy with job j1"}},
                kT0 + 4);
  EXPECT_TRUE(assigns(fx).empty()) << "asked again at once";
  // The report the agent sends with its refusal names what it runs.
  fx = c.handle(VehicleMessageEvent{"v1", state("v1", true, kT0 + 4, "j1", 1)}, kT0 + 4);
  EXPECT_TRUE(assigns(fx).empty());
  fx = c.handle(VehicleMessageEvent{"v1", state("v1", true, kT0 + 50, "j1", 1)}, kT0 + 50);
  EXPECT_TRUE(assigns(fx).empty());
  // Free: asked again, and the refusal cost the job one attempt of eight.
  fx = c.handle(VehicleMessageEvent{"v1", state("v1", true, kT0 + 60)}, kT0 + 60);
  a = assigns(fx);
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a[0].job_id, "j1");
  EXPECT_EQ(c.job("j1")->job.state(), JobState::kAssigned);
  EXPECT_EQ(c.job("j1")->job.attempts().size(), 3u);
  EXPECT_EQ(c.job("j2")->job.state(), JobState::kQueued);
}

TEST(CoordinatorMachine, AsksAnUnknownVehicleForAHelloAtMostOncePerGap) {
  CoordinatorMachine c(config());
  auto asked = [](const auto& fx) {
    size_t n = 0;
    for (const auto& s : effects_of<SendToVehicleEffect>(fx)) {
      n += s.vehicle_id == "v1" && std::holds_alternative<HelloPleaseMessage>(s.message);
    }
    return n;
  };
  auto fx = c.handle(VehicleMessageEvent{"v1", state("v1", true, kT0)}, kT0);
  EXPECT_EQ(asked(fx), 1u);
  EXPECT_EQ(effects_of<CoordinatorLogEffect>(fx)[0].what, "unknown_vehicle");
  fx = c.handle(VehicleMessageEvent{"v1", state("v1", true, kT0)}, kT0 + kHelloPleaseGapMs - 1);
  EXPECT_EQ(asked(fx), 0u);
  fx = c.handle(VehicleMessageEvent{"v1", state("v1", true, kT0)}, kT0 + kHelloPleaseGapMs);
  EXPECT_EQ(asked(fx), 1u);
  // Once it has said hello it is known: no more asking.
  join(&c, "v1", kT0 + kHelloPleaseGapMs);
  fx = c.handle(VehicleMessageEvent{"v1", state("v1", true, kT0)}, kT0 + 5 * kHelloPleaseGapMs);
  EXPECT_EQ(asked(fx), 0u);
  // A vehicle does not send hello_please.
  fx = c.handle(VehicleMessageEvent{"v1", HelloPleaseMessage{}}, kT0 + 5 * kHelloPleaseGapMs);
  EXPECT_EQ(effects_of<CoordinatorLogEffect>(fx)[0].what, "unexpected_message");
}

TEST(CoordinatorMachine, RefusesWhatItCannotTrust) {
  CoordinatorMachine c(config());
  auto fx = c.handle(VehicleMessageEvent{"ghost", state("ghost", true, kT0)}, kT0);
  EXPECT_EQ(effects_of<CoordinatorLogEffect>(fx)[0].what, "unknown_vehicle");
  fx = c.handle(VehicleMessageEvent{"v1", hello("v2")}, kT0);
  EXPECT_EQ(effects_of<CoordinatorLogEffect>(fx)[0].what, "vehicle_mismatch");
  join(&c, "v1", kT0);
  join(&c, "v2", kT0, false);
  c.handle(SubmitJobEvent{"j1", spec()}, kT0);
  // v2 does not hold j1's attempt.
  fx = c.handle(VehicleMessageEvent{"v2", ChunkMessage{"j1", 1, 0, {1}}}, kT0);
  EXPECT_EQ(effects_of<CoordinatorLogEffect>(fx)[0].what, "stale_message");
  fx = c.handle(VehicleMessageEvent{"v1", ChunkMessage{"nope", 1, 0, {1}}}, kT0);
  EXPECT_EQ(effects_of<CoordinatorLogEffect>(fx)[0].what, "unknown_job");
  fx = c.handle(VehicleMessageEvent{"v1", CancelMessage{"j1", 1}}, kT0);
  EXPECT_EQ(effects_of<CoordinatorLogEffect>(fx)[0].what, "unexpected_message");
  EXPECT_EQ(c.counters().messages_rejected, 5u);
  EXPECT_EQ(c.job("j1")->job.produced().size(), 0u);
}

TEST(CoordinatorMachine, ConflictingTokensEndTheAttempt) {
  CoordinatorMachine c(config());
  join(&c, "v1", kT0);
  c.handle(SubmitJobEvent{"j1", spec()}, kT0);
  c.handle(VehicleMessageEvent{"v1", StartedMessage{"j1", 1}}, kT0);
  c.handle(VehicleMessageEvent{"v1", ChunkMessage{"j1", 1, 0, {3, 4}}}, kT0);
  auto fx = c.handle(VehicleMessageEvent{"v1", ChunkMessage{"j1", 1, 1, {9}}}, kT0);
  EXPECT_EQ(effects_of<CoordinatorLogEffect>(fx)[0].what, "chunk_conflict");
  EXPECT_EQ(c.job("j1")->job.produced(), std::vector<int32_t>({3, 4}));
  EXPECT_EQ(c.vehicles().at("v1").attempts_lost, 1u);
}

// The logprobs a vehicle would compute for token `id` at `index`: distinct
// per token, so that any mix-up shows.
TokenLogprobs logprobs_of(int32_t id, uint64_t index) {
  const float x = -0.125f * static_cast<float>(index + 1) - 1e-3f * static_cast<float>(id);
  return {x, {{id, x}, {id + 1, x - 1.0f}}};
}

ChunkMessage chunk_with_logprobs(uint32_t attempt, uint64_t first, std::vector<int32_t> ids) {
  ChunkMessage m{"j1", attempt, first, std::move(ids)};
  for (size_t i = 0; i < m.ids.size(); ++i) m.logprobs.push_back(logprobs_of(m.ids[i], first + i));
  return m;
}

TEST(CoordinatorMachine, LogprobsReachTheClientOnceEachThroughAPreemption) {
  CoordinatorMachine c(config());
  join(&c, "v1", kT0);
  JobSpec s = spec(6);
  s.logprobs = 2;
  auto fx = c.handle(SubmitJobEvent{"j1", s}, kT0);
  ASSERT_EQ(assigns(fx).size(), 1u);
  EXPECT_EQ(assigns(fx)[0].logprobs, 2);
  join(&c, "v2", kT0);

  std::vector<int32_t> ids;
  std::vector<TokenLogprobs> relayed;
  auto collect = [&](const std::vector<CoordinatorEffect>& effects) {
    for (const JobTokensEffect& t : effects_of<JobTokensEffect>(effects)) {
      EXPECT_EQ(t.first_index, ids.size());
      ASSERT_EQ(t.logprobs.size(), t.ids.size());
      ids.insert(ids.end(), t.ids.begin(), t.ids.end());
      relayed.insert(relayed.end(), t.logprobs.begin(), t.logprobs.end());
    }
  };
  c.handle(VehicleMessageEvent{"v1", StartedMessage{"j1", 1}}, kT0 + 1);
  collect(c.handle(VehicleMessageEvent{"v1", chunk_with_logprobs(1, 0, {10, 11})}, kT0 + 2));
  c.handle(VehicleMessageEvent{"v1", state("v1", false, kT0 + 3, "j1", 1)}, kT0 + 3);
  fx = c.handle(VehicleMessageEvent{"v1", PreemptedMessage{"j1", 1, 2, "driver back"}}, kT0 + 3);
  // The next vehicle resumes from the tokens and is asked for logprobs too.
  ASSERT_EQ(assigns(fx).size(), 1u);
  EXPECT_EQ(assigns(fx)[0].produced_ids, std::vector<int32_t>({10, 11}));
  EXPECT_EQ(assigns(fx)[0].logprobs, 2);
  c.handle(VehicleMessageEvent{"v2", StartedMessage{"j1", 2}}, kT0 + 4);
  // Its first token after the resume has its logprobs; a chunk that repeats
  // a known token relays only the new ones', once.
  collect(c.handle(VehicleMessageEvent{"v2", chunk_with_logprobs(2, 2, {12})}, kT0 + 5));
  collect(c.handle(VehicleMessageEvent{"v2", chunk_with_logprobs(2, 1, {11, 12, 13, 14})}, kT0 + 6));
  collect(c.handle(VehicleMessageEvent{"v2", chunk_with_logprobs(2, 3, {13, 14})}, kT0 + 7));
  collect(c.handle(VehicleMessageEvent{"v2", chunk_with_logprobs(2, 5, {15})}, kT0 + 8));
  fx = c.handle(VehicleMessageEvent{"v2", DoneMessage{"j1", 2, 6, "length"}}, kT0 + 9);
  ASSERT_EQ(effects_of<JobEndedEffect>(fx).size(), 1u);

  EXPECT_EQ(ids, std::vector<int32_t>({10, 11, 12, 13, 14, 15}));
  ASSERT_EQ(relayed.size(), ids.size());
  for (size_t i = 0; i < ids.size(); ++i) EXPECT_EQ(relayed[i], logprobs_of(ids[i], i)) << i;
}

TEST(CoordinatorMachine, AChunkWithoutTheLogprobsAskedForEndsTheAttempt) {
  for (int variant = 0; variant < 2; ++variant) {
    CoordinatorMachine c(config());
    join(&c, "v1", kT0);
    JobSpec s = spec(6);
    s.logprobs = 1;
    c.handle(SubmitJobEvent{"j1", s}, kT0);
    c.handle(VehicleMessageEvent{"v1", StartedMessage{"j1", 1}}, kT0 + 1);
    ChunkMessage bad = chunk_with_logprobs(1, 0, {10, 11});  // two alternatives where one was asked
    if (variant == 0) bad.logprobs.clear();
    auto fx = c.handle(VehicleMessageEvent{"v1", bad}, kT0 + 2);
    EXPECT_TRUE(effects_of<JobTokensEffect>(fx).empty());
    ASSERT_FALSE(effects_of<CoordinatorLogEffect>(fx).empty());
    EXPECT_EQ(effects_of<CoordinatorLogEffect>(fx)[0].what, "chunk_logprobs");
    ASSERT_EQ(effects_of<SendToVehicleEffect>(fx).size(), 1u);
    EXPECT_TRUE(std::holds_alternative<CancelMessage>(effects_of<SendToVehicleEffect>(fx)[0].message));
    EXPECT_TRUE(c.job("j1")->job.produced().empty());
    EXPECT_EQ(c.vehicles().at("v1").attempts_lost, 1u);
    EXPECT_EQ(c.queue_depth(), 1u);
  }
  // A job that did not ask ignores logprobs a vehicle sends anyway.
  CoordinatorMachine c(config());
  join(&c, "v1", kT0);
  c.handle(SubmitJobEvent{"j1", spec(6)}, kT0);
  c.handle(VehicleMessageEvent{"v1", StartedMessage{"j1", 1}}, kT0 + 1);
  auto fx = c.handle(VehicleMessageEvent{"v1", chunk_with_logprobs(1, 0, {10, 11})}, kT0 + 2);
  ASSERT_EQ(effects_of<JobTokensEffect>(fx).size(), 1u);
  EXPECT_TRUE(effects_of<JobTokensEffect>(fx)[0].logprobs.empty());
}

// ---- Embedding jobs ------------------------------------------------------------

CoordinatorCoreConfig embed_config() {
  CoordinatorCoreConfig c = config();
  c.models = {{"m", 1u << 20, 2}};  // 2-wide embeddings
  return c;
}

JobSpec embed_spec() {
  JobSpec s = spec(0);  // model "m", prompt {1, 5, 6}, no new tokens
  s.kind = WorkKind::kEmbed;
  return s;
}

// A vehicle whose agent runs embeddings (`embeddings` in its hello).
void join_embedder(CoordinatorMachine* c, const std::string& vid, TimeMs now) {
  HelloMessage h = hello(vid);
  h.embeddings = true;
  c->handle(VehicleMessageEvent{vid, h}, now);
  c->handle(VehicleMessageEvent{vid, state(vid, true, now)}, now);
}

TEST(CoordinatorMachine, EmbedJobsGoOnlyToVehiclesThatOfferEmbeddings) {
  CoordinatorMachine c(embed_config());
  join(&c, "v1", kT0);  // an older agent: it would generate instead
  auto fx = c.handle(SubmitJobEvent{"e1", embed_spec()}, kT0);
  ASSERT_TRUE(effects_of<JobAcceptedEffect>(fx).at(0).status.has_value());
  EXPECT_TRUE(assigns(fx).empty());
  EXPECT_EQ(c.queue_depth(), 1u);
  // A generation still goes to v1 while the embedding waits.
  fx = c.handle(SubmitJobEvent{"j1", spec()}, kT0 + 1);
  ASSERT_EQ(assigns(fx).size(), 1u);
  EXPECT_EQ(assigns(fx)[0].kind, WorkKind::kGenerate);

  std::vector<std::string> to;
  HelloMessage h = hello("v2");
  h.embeddings = true;
  c.handle(VehicleMessageEvent{"v2", h}, kT0 + 2);
  fx = c.handle(VehicleMessageEvent{"v2", state("v2", true, kT0 + 2)}, kT0 + 2);
  auto a = assigns(fx, &to);
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(to[0], "v2");
  EXPECT_EQ(a[0].job_id, "e1");
  EXPECT_EQ(a[0].kind, WorkKind::kEmbed);
  EXPECT_EQ(a[0].prompt_ids, embed_spec().prompt_ids);
  EXPECT_TRUE(a[0].produced_ids.empty());
  EXPECT_EQ(a[0].max_tokens, 0u);
}

TEST(CoordinatorMachine, VehiclesTooSmallForTheModelDoNotCrowdOutOneThatCanHoldIt) {
  CoordinatorMachine c(config());
  // More small vehicles than one placement looks at, all before the big one.
  for (size_t i = 0; i < 2 * kPlacementCandidatesMax; ++i) {
    const std::string id = "a" + std::to_string(100 + i);
    HelloMessage h = hello(id);
    h.memory_bytes = 1u << 10;  // under the model's 1 MiB
    c.handle(VehicleMessageEvent{id, h}, kT0);
    c.handle(VehicleMessageEvent{id, state(id, true, kT0)}, kT0);
  }
  join(&c, "z", kT0);
  std::vector<std::string> to;
  auto fx = c.handle(SubmitJobEvent{"j1", spec()}, kT0 + 1);
  ASSERT_EQ(assigns(fx, &to).size(), 1u);
  EXPECT_EQ(to[0], "z");
}

TEST(CoordinatorMachine, AnEmbeddingCompletesItsJobAndGoesToTheClient) {
  CoordinatorMachine c(embed_config());
  join_embedder(&c, "v1", kT0);
  c.handle(SubmitJobEvent{"e1", embed_spec()}, kT0);
  // Before it started, a vector is refused (messages from one vehicle keep
  // their order, so this is not a vehicle we can follow).
  auto fx = c.handle(VehicleMessageEvent{"v1", EmbeddingMessage{"e1", 1, 3, {0.6f, 0.8f}}}, kT0 + 1);
  EXPECT_EQ(effects_of<CoordinatorLogEffect>(fx).at(0).what, "bad_embedding");
  c.handle(VehicleMessageEvent{"v1", StartedMessage{"e1", 1}}, kT0 + 1);
  // A "done" does not complete an embedding: only its vector does.
  fx = c.handle(VehicleMessageEvent{"v1", DoneMessage{"e1", 1, 0, "stop"}}, kT0 + 2);
  EXPECT_EQ(effects_of<CoordinatorLogEffect>(fx).at(0).what, "bad_done");
  EXPECT_EQ(c.job("e1")->job.state(), JobState::kRunning);

  fx = c.handle(VehicleMessageEvent{"v1", EmbeddingMessage{"e1", 1, 3, {0.6f, 0.8f}}}, kT0 + 3);
  ASSERT_EQ(effects_of<JobEmbeddingEffect>(fx).size(), 1u);
  EXPECT_EQ(effects_of<JobEmbeddingEffect>(fx)[0].job_id, "e1");
  EXPECT_EQ(effects_of<JobEmbeddingEffect>(fx)[0].tokens, 3u);
  EXPECT_EQ(effects_of<JobEmbeddingEffect>(fx)[0].values, std::vector<float>({0.6f, 0.8f}));
  // The vector comes before the end, which a client's response waits for.
  size_t vector_at = 0, ended_at = 0;
  for (size_t i = 0; i < fx.size(); ++i) {
    if (std::holds_alternative<JobEmbeddingEffect>(fx[i])) vector_at = i;
    if (std::holds_alternative<JobEndedEffect>(fx[i])) ended_at = i;
  }
  EXPECT_LT(vector_at, ended_at);
  ASSERT_EQ(effects_of<JobEndedEffect>(fx).size(), 1u);
  EXPECT_EQ(effects_of<JobEndedEffect>(fx)[0].state, JobState::kDone);
  EXPECT_EQ(c.counters().jobs_done, 1u);
  EXPECT_EQ(c.vehicles_available(), 1u);
  EXPECT_EQ(c.vehicles().at("v1").attempts_completed, 1u);
  // Twice: stale.
  const CoordinatorCounters before = c.counters();
  fx = c.handle(VehicleMessageEvent{"v1", EmbeddingMessage{"e1", 1, 3, {0.6f, 0.8f}}}, kT0 + 4);
  EXPECT_EQ(effects_of<CoordinatorLogEffect>(fx).at(0).what, "stale_message");
  EXPECT_TRUE(effects_of<JobEmbeddingEffect>(fx).empty());
  EXPECT_EQ(c.counters().messages_rejected, before.messages_rejected + 1);
  EXPECT_EQ(c.counters().messages_accepted, before.messages_accepted);
}

TEST(CoordinatorMachine, EmbeddingKindsAreNotMixedUp) {
  CoordinatorMachine c(embed_config());
  join_embedder(&c, "v1", kT0);
  c.handle(SubmitJobEvent{"j1", spec()}, kT0);
  c.handle(VehicleMessageEvent{"v1", StartedMessage{"j1", 1}}, kT0);
  auto fx = c.handle(VehicleMessageEvent{"v1", EmbeddingMessage{"j1", 1, 3, {0.6f, 0.8f}}}, kT0 + 1);
  EXPECT_EQ(effects_of<CoordinatorLogEffect>(fx).at(0).what, "bad_embedding");
  EXPECT_EQ(c.job("j1")->job.state(), JobState::kRunning);
  // Tokens for an embedding job exceed its budget of none.
  c.handle(SubmitJobEvent{"e1", embed_spec()}, kT0 + 2);
  join_embedder(&c, "v2", kT0 + 2);
  c.handle(VehicleMessageEvent{"v2", StartedMessage{"e1", 1}}, kT0 + 3);
  fx = c.handle(VehicleMessageEvent{"v2", ChunkMessage{"e1", 1, 0, {4}}}, kT0 + 4);
  EXPECT_EQ(effects_of<CoordinatorLogEffect>(fx).at(0).what, "bad_chunk");
  EXPECT_TRUE(c.job("e1")->job.produced().empty());
}

TEST(CoordinatorMachine, AMalformedEmbeddingFailsTheAttemptAndAnotherVehicleRedoesIt) {
  struct Case {
    const char* what;
    EmbeddingMessage m;
  };
  const Case cases[] = {{"wrong width", {"e1", 1, 3, {0.6f, 0.8f, 0.0f}}},
                        {"wrong token count", {"e1", 1, 2, {0.6f, 0.8f}}},
                        {"not unit length", {"e1", 1, 3, {0.6f, 0.9f}}}};
  for (const Case& k : cases) {
    CoordinatorMachine c(embed_config());
    join_embedder(&c, "v1", kT0);
    c.handle(SubmitJobEvent{"e1", embed_spec()}, kT0);
    join_embedder(&c, "v2", kT0);
    c.handle(VehicleMessageEvent{"v1", StartedMessage{"e1", 1}}, kT0);
    std::vector<std::string> to;
    auto fx = c.handle(VehicleMessageEvent{"v1", k.m}, kT0 + 1);
    EXPECT_EQ(effects_of<CoordinatorLogEffect>(fx).at(0).what, "bad_embedding") << k.what;
    EXPECT_TRUE(effects_of<JobEmbeddingEffect>(fx).empty()) << k.what;
    EXPECT_TRUE(effects_of<JobEndedEffect>(fx).empty()) << k.what;
    auto a = assigns(fx, &to);
    ASSERT_EQ(a.size(), 1u) << k.what;
    EXPECT_EQ(to[0], "v2") << k.what;
    EXPECT_EQ(a[0].attempt, 2u);
    EXPECT_EQ(c.vehicles().at("v1").attempts_lost, 1u);
    EXPECT_EQ(c.job("e1")->job.attempts()[0].end, AttemptEnd::kFailed);
  }
  // A zero vector (the mean of nothing but zeros) is what the engine makes
  // then: accepted.
  CoordinatorMachine c(embed_config());
  join_embedder(&c, "v1", kT0);
  c.handle(SubmitJobEvent{"e1", embed_spec()}, kT0);
  c.handle(VehicleMessageEvent{"v1", StartedMessage{"e1", 1}}, kT0);
  auto fx = c.handle(VehicleMessageEvent{"v1", EmbeddingMessage{"e1", 1, 3, {0.0f, 0.0f}}}, kT0 + 1);
  EXPECT_EQ(effects_of<JobEmbeddingEffect>(fx).size(), 1u);
}

TEST(CoordinatorMachine, APreemptedEmbeddingIsPlacedAgainAndStartsOver) {
  CoordinatorMachine c(embed_config());
  join_embedder(&c, "v1", kT0);
  c.handle(SubmitJobEvent{"e1", embed_spec()}, kT0);
  join_embedder(&c, "v2", kT0);
  c.handle(VehicleMessageEvent{"v1", StartedMessage{"e1", 1}}, kT0);
  c.handle(VehicleMessageEvent{"v1", state("v1", false, kT0 + 1, "e1", 1)}, kT0 + 1);
  std::vector<std::string> to;
  auto fx = c.handle(VehicleMessageEvent{"v1", PreemptedMessage{"e1", 1, 0, "driver's door open"}}, kT0 + 2);
  auto a = assigns(fx, &to);
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(to[0], "v2");
  EXPECT_EQ(a[0].attempt, 2u);
  EXPECT_EQ(a[0].kind, WorkKind::kEmbed);
  EXPECT_TRUE(a[0].produced_ids.empty());
  EXPECT_EQ(c.counters().preemptions, 1u);
  // v1's vector, finished as it stopped, is for an attempt that is over.
  fx = c.handle(VehicleMessageEvent{"v1", EmbeddingMessage{"e1", 1, 3, {0.6f, 0.8f}}}, kT0 + 3);
  EXPECT_EQ(effects_of<CoordinatorLogEffect>(fx).at(0).what, "stale_message");
  EXPECT_TRUE(effects_of<JobEmbeddingEffect>(fx).empty());
  c.handle(VehicleMessageEvent{"v2", StartedMessage{"e1", 2}}, kT0 + 4);
  fx = c.handle(VehicleMessageEvent{"v2", EmbeddingMessage{"e1", 2, 3, {0.8f, 0.6f}}}, kT0 + 5);
  ASSERT_EQ(effects_of<JobEmbeddingEffect>(fx).size(), 1u);
  EXPECT_EQ(effects_of<JobEmbeddingEffect>(fx)[0].values, std::vector<float>({0.8f, 0.6f}));
  EXPECT_EQ(effects_of<JobEndedEffect>(fx).at(0).state, JobState::kDone);
}

TEST(CoordinatorMachine, ALostEmbeddingIsPlacedAgain) {
  CoordinatorMachine c(embed_config());
  join_embedder(&c, "v1", kT0);
  c.handle(SubmitJobEvent{"e1", embed_spec()}, kT0);
  join_embedder(&c, "v2", kT0);
  c.handle(VehicleMessageEvent{"v1", StartedMessage{"e1", 1}}, kT0);
  c.handle(VehicleMessageEvent{"v2", state("v2", true, kT0 + 900)}, kT0 + 900);
  std::vector<std::string> to;
  auto fx = c.handle(CoordinatorTick{}, kT0 + 1000);
  auto a = assigns(fx, &to);
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(to[0], "v2");
  EXPECT_EQ(a[0].kind, WorkKind::kEmbed);
  EXPECT_EQ(c.counters().attempts_lost, 1u);
}

TEST(CoordinatorMachine, RefusesEmbeddingsThatAskForTokens) {
  CoordinatorMachine c(embed_config());
  JobSpec s = embed_spec();
  s.max_tokens = 4;
  auto fx = c.handle(SubmitJobEvent{"e1", s}, kT0);
  ASSERT_FALSE(effects_of<JobAcceptedEffect>(fx).at(0).status.has_value());
  EXPECT_EQ(effects_of<JobAcceptedEffect>(fx).at(0).status.error().code, ErrorCode::kOutOfRange);
  s = embed_spec();
  s.prompt_ids.clear();
  fx = c.handle(SubmitJobEvent{"e2", s}, kT0);
  EXPECT_FALSE(effects_of<JobAcceptedEffect>(fx).at(0).status.has_value());
  EXPECT_EQ(c.counters().jobs_refused, 2u);
}

TEST(CoordinatorMachine, RefusesBadSubmissions) {
  CoordinatorCoreConfig cfg = config();
  cfg.queue_jobs_max = 1;
  CoordinatorMachine c(cfg);
  auto status_of = [&](const std::string& id, JobSpec s) {
    auto fx = c.handle(SubmitJobEvent{id, std::move(s)}, kT0);
    return effects_of<JobAcceptedEffect>(fx).at(0).status;
  };
  JobSpec unknown = spec();
  unknown.model_id = "nope";
  EXPECT_EQ(status_of("a", unknown).error().code, ErrorCode::kNotFound);
  JobSpec empty = spec();
  empty.prompt_ids.clear();
  EXPECT_EQ(status_of("a", empty).error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(status_of("", spec()).error().code, ErrorCode::kInvalidArgument);
  EXPECT_TRUE(status_of("a", spec()).has_value());
  EXPECT_EQ(status_of("a", spec()).error().code, ErrorCode::kInvalidArgument);  // duplicate id
  EXPECT_EQ(status_of("b", spec()).error().code, ErrorCode::kOutOfRange);       // queue full
}

TEST(CoordinatorMachine, QueuedJobFailsWhenNoVehicleTakesIt) {
  CoordinatorMachine c(config());
  c.handle(SubmitJobEvent{"j1", spec()}, kT0);
  auto fx = c.handle(CoordinatorTick{}, kT0 + config().queued_ms_max + 1);
  ASSERT_EQ(effects_of<JobEndedEffect>(fx).size(), 1u);
  EXPECT_EQ(effects_of<JobEndedEffect>(fx)[0].state, JobState::kFailed);
}

TEST(CoordinatorMachine, RestoredJobsResumeFromTheirTokens) {
  CoordinatorMachine c(config());
  Job j("j1", kT0, 8);
  ASSERT_TRUE(j.assign("v9", kT0).has_value());
  ASSERT_TRUE(j.start(1, kT0).has_value());
  const int32_t ids[] = {4, 4};
  ASSERT_TRUE(j.append(1, 0, ids, kT0).has_value());
  auto restored = Job::restore("j1", kT0, 8, {}, j.state(), j.produced(), j.attempts(), "", kT0 + 5);
  ASSERT_TRUE(restored.has_value()) << restored.error().to_string();
  EXPECT_EQ(restored->state(), JobState::kPreempted);
  c.handle(RestoreJobEvent{*restored, spec()}, kT0 + 5);
  join(&c, "v1", kT0 + 6);
  auto fx = c.handle(CoordinatorTick{}, kT0 + 6);
  EXPECT_EQ(c.job("j1")->job.current()->vehicle_id, "v1");
  EXPECT_EQ(c.job("j1")->job.attempts().size(), 2u);
}

// ---- Chaos -----------------------------------------------------------------
//
// Vehicles whose "engine" produces token k of a job as a pure function of the
// job and k (as the real, deterministic engine does), on a network that drops,
// duplicates and delays messages, with drivers returning and agents restarting.
// Whatever happens, every job must end done with exactly the expected tokens,
// and the tokens relayed to clients must be those, each once, in order.

int32_t expected_token(const std::string& job, uint64_t k) {
  return static_cast<int32_t>((std::hash<std::string>{}(job) + k * 7919) % 500);
}

struct FakeVehicle {
  std::string id;
  std::string instance = "0";
  bool eligible = true;
  std::optional<AssignMessage> job;
  uint64_t produced = 0;  // tokens of the current job known (including resumed ones)
};

TEST(CoordinatorMachine, ChaosLosesAndDuplicatesNothing) {
  for (uint64_t seed = 1; seed <= 200; ++seed) {
    Rng rng(seed);
    CoordinatorMachine c(config());
    std::vector<FakeVehicle> fleet(6);
    for (size_t i = 0; i < fleet.size(); ++i) fleet[i].id = std::string("v").append(std::to_string(i));  // not "v" + ...: g++ 12 -Wrestrict false positive
    struct InFlight {
      TimeMs at;
      bool to_vehicle;
      size_t vehicle;
      Message m;
    };
    std::vector<InFlight> net;
    auto send_up = [&](TimeMs now, size_t v, Message m) {
      if (rng.uniform() < 0.03) return;  // lost
      const int copies = rng.uniform() < 0.05 ? 2 : 1;
      for (int k = 0; k < copies; ++k) net.push_back({now + 1 + static_cast<TimeMs>(rng.uniform() * 5), false, v, m});
    };
    std::map<std::string, std::vector<int32_t>> relayed;
    std::map<std::string, JobState> ended;
    TimeMs now = kT0;
    auto apply = [&](const std::vector<CoordinatorEffect>& fx) {
      for (const auto& e : fx) {
        if (const auto* s = std::get_if<SendToVehicleEffect>(&e)) {
          const size_t v = std::stoul(s->vehicle_id.substr(1));
          if (rng.uniform() < 0.03) continue;
          net.push_back({now + 1 + static_cast<TimeMs>(rng.uniform() * 5), true, v, s->message});
        } else if (const auto* t = std::get_if<JobTokensEffect>(&e)) {
          auto& r = relayed[t->job_id];
          ASSERT_EQ(t->first_index, r.size()) << "seed " << seed;
          r.insert(r.end(), t->ids.begin(), t->ids.end());
        } else if (const auto* d = std::get_if<JobEndedEffect>(&e)) {
          ASSERT_EQ(ended.count(d->job_id), 0u) << "job ended twice, seed " << seed;
          ended[d->job_id] = d->state;
        }
      }
    };
    for (size_t v = 0; v < fleet.size(); ++v) {
      apply(c.handle(VehicleMessageEvent{fleet[v].id, hello(fleet[v].id, fleet[v].instance)}, now));
    }
    const int jobs = 20;
    for (int j = 0; j < jobs; ++j) apply(c.handle(SubmitJobEvent{std::string("j").append(std::to_string(j)), spec(12)}, now));

    for (int step = 0; step < 200000 && static_cast<int>(ended.size()) < jobs; ++step) {
      now += 5;
      // Deliver due messages (in arrival order; duplicates may interleave).
      std::vector<InFlight> due;
      for (size_t i = 0; i < net.size();) {
        if (net[i].at <= now) {
          due.push_back(std::move(net[i]));
          net.erase(net.begin() + static_cast<std::ptrdiff_t>(i));
        } else {
          ++i;
        }
      }
      for (auto& d : due) {
        FakeVehicle& fv = fleet[d.vehicle];
        if (!d.to_vehicle) {
          apply(c.handle(VehicleMessageEvent{fv.id, d.m}, now));
          continue;
        }
        if (const auto* a = std::get_if<AssignMessage>(&d.m)) {
          if (fv.job && fv.job->job_id == a->job_id && fv.job->attempt == a->attempt) continue;
          if (fv.job || !fv.eligible) {
            send_up(now, d.vehicle, PreemptedMessage{a->job_id, a->attempt, a->produced_ids.size(), "busy"});
            continue;
          }
          for (size_t k = 0; k < a->produced_ids.size(); ++k) {
            ASSERT_EQ(a->produced_ids[k], expected_token(a->job_id, k)) << "resumed from wrong tokens";
          }
          fv.job = *a;
          fv.produced = a->produced_ids.size();
          send_up(now, d.vehicle, StartedMessage{a->job_id, a->attempt});
        } else if (const auto* x = std::get_if<CancelMessage>(&d.m)) {
          if (fv.job && fv.job->job_id == x->job_id && fv.job->attempt == x->attempt) fv.job.reset();
        }
      }
      for (size_t v = 0; v < fleet.size(); ++v) {
        FakeVehicle& fv = fleet[v];
        const double r = rng.uniform();
        if (r < 0.002) {  // the agent process dies and restarts
          fv.job.reset();
          fv.instance = std::to_string(std::stoi(fv.instance) + 1);
          send_up(now, v, hello(fv.id, fv.instance));
        } else if (r < 0.006) {  // the driver returns (or leaves again)
          fv.eligible = !fv.eligible;
          if (fv.job && !fv.eligible) {
            send_up(now, v, PreemptedMessage{fv.job->job_id, fv.job->attempt, fv.produced, "driver back"});
            fv.job.reset();
          }
        }
        if (fv.job && rng.uniform() < 0.5) {
          const AssignMessage& a = *fv.job;
          const uint64_t n = std::min<uint64_t>(1 + static_cast<uint64_t>(rng.uniform() * 3), a.max_tokens - fv.produced);
          ChunkMessage ch{a.job_id, a.attempt, fv.produced, {}};
          for (uint64_t k = 0; k < n; ++k) ch.ids.push_back(expected_token(a.job_id, fv.produced + k));
          fv.produced += n;
          if (!ch.ids.empty()) send_up(now, v, ch);
          if (fv.produced == a.max_tokens) {
            send_up(now, v, DoneMessage{a.job_id, a.attempt, fv.produced, "length"});
            fv.job.reset();
          }
        }
        if (step % 20 == static_cast<int>(v)) {
          send_up(now, v, hello(fv.id, fv.instance));
          send_up(now, v, state(fv.id, fv.eligible, now, fv.job ? fv.job->job_id : "", fv.job ? fv.job->attempt : 0));
        }
      }
      if (step % 10 == 0) apply(c.handle(CoordinatorTick{}, now));
    }
    ASSERT_EQ(static_cast<int>(ended.size()), jobs) << "seed " << seed;
    for (const auto& [id, st] : ended) {
      EXPECT_EQ(st, JobState::kDone) << id << " seed " << seed << ": " << c.job(id)->job.finish_reason();
      const auto& produced = c.job(id)->job.produced();
      ASSERT_EQ(produced.size(), 12u);
      for (uint64_t k = 0; k < produced.size(); ++k) ASSERT_EQ(produced[k], expected_token(id, k));
      EXPECT_EQ(relayed[id], produced) << "client saw other tokens, seed " << seed;
    }
    EXPECT_EQ(c.jobs_live(), 0u);
  }
}

}  // namespace
}  // namespace idlefleet::core::coordinator_machine_test
