// Verification of untrusted vehicles: the sampling rule, the draw, fault
// attribution, standing and quarantine (core/verification.h), and the
// coordinator machine running checks in a simulated fleet where one vehicle
// alters its outputs.
#include "core/verification.h"

#include <gtest/gtest.h>

#include <cmath>
#include <deque>
#include <map>
#include <set>

#include "core/coordinator_machine.h"

namespace idlefleet::core::verification_test {
namespace {

constexpr TimeMs kT0 = 1'700'000'000'000;

VerificationConfig enabled() {
  VerificationConfig c;
  c.enabled = true;
  c.seed = 42;
  return c;
}

TEST(Verification, NewAndRecentlyWrongVehiclesAreAlwaysCheckedThenLessToAFloor) {
  const VerificationConfig c = enabled();
  VehicleStanding s = initial_standing(c);
  EXPECT_EQ(s.standing, 500);
  for (uint32_t i = 0; i < c.warmup_checks; ++i) {
    EXPECT_EQ(check_probability(s, c), 1.0) << i;
    record_agreement(&s, c);
  }
  EXPECT_EQ(check_probability(s, c), 1.0);  // 5 / 5
  record_agreement(&s, c);
  EXPECT_NEAR(check_probability(s, c), 5.0 / 6.0, 1e-12);
  for (int i = 0; i < 200; ++i) record_agreement(&s, c);
  EXPECT_EQ(check_probability(s, c), c.sample_floor);
  EXPECT_EQ(s.standing, kStandingMax);
  // One fault: back to checking everything.
  EXPECT_FALSE(record_fault(&s, c, "wrong", kT0));
  EXPECT_EQ(s.standing, kStandingMax - c.standing_fault);
  EXPECT_EQ(check_probability(s, c), 1.0);
  EXPECT_EQ(s.checks_faulted, 1u);
}

TEST(Verification, StandingBelowTheThresholdQuarantinesOnceWithTheReason) {
  const VerificationConfig c = enabled();
  VehicleStanding s = initial_standing(c);
  EXPECT_FALSE(record_fault(&s, c, "first", kT0));  // 300: not below 300
  EXPECT_FALSE(s.quarantined);
  EXPECT_TRUE(record_fault(&s, c, std::string(2000, 'r'), kT0 + 5));
  EXPECT_TRUE(s.quarantined);
  EXPECT_EQ(s.quarantine_reason.size(), kQuarantineReasonBytesMax);
  EXPECT_EQ(s.quarantined_at, kT0 + 5);
  EXPECT_FALSE(record_fault(&s, c, "again", kT0 + 9));  // already quarantined
  EXPECT_EQ(s.standing, 0);
  EXPECT_EQ(s.quarantined_at, kT0 + 5);
}

TEST(Verification, TheDrawDependsOnlyOnSeedAndJobAndMatchesItsProbability) {
  EXPECT_TRUE(draw_check(1, "j", 1.0));
  EXPECT_FALSE(draw_check(1, "j", 0.0));
  int hits = 0;
  int differ = 0;
  for (int i = 0; i < 10000; ++i) {
    const std::string id = "job-" + std::to_string(i);
    const bool a = draw_check(7, id, 0.2);
    EXPECT_EQ(a, draw_check(7, id, 0.2));
    hits += a;
    differ += a != draw_check(8, id, 0.2);
  }
  EXPECT_NEAR(hits / 10000.0, 0.2, 0.02);
  EXPECT_GT(differ, 1000);  // another seed, other jobs
  EXPECT_NE(check_job_id(7, "j", 1), check_job_id(7, "j", 2));
  EXPECT_NE(check_job_id(7, "j", 1), check_job_id(8, "j", 1));
  EXPECT_TRUE(check_job_id(7, std::string(kIdBytesMax, 'x'), 2).starts_with(kCheckJobIdPrefix));
  EXPECT_LE(check_job_id(7, std::string(kIdBytesMax, 'x'), 2).size(), kIdBytesMax);
}

TEST(Verification, TheFaultIsTheAttemptThatMadeTheFirstWrongToken) {
  const std::vector<int32_t> agreed = {1, 2, 3, 4, 5, 6};
  EXPECT_FALSE(first_difference(agreed, agreed));
  EXPECT_EQ(first_difference(agreed, std::vector<int32_t>{1, 2, 9, 4, 5, 6}), 2u);
  EXPECT_EQ(first_difference(agreed, std::vector<int32_t>{1, 2, 3}), 3u);
  EXPECT_EQ(first_difference(std::vector<int32_t>{}, agreed), 0u);

  // a (tokens 0-1, preempted), b (2-3, the wrong token 2), c resumed from b's
  // wrong prefix (4-5) and completed.
  std::vector<Attempt> attempts(3);
  attempts[0] = {1, "a", 0, 0, 0, 1, AttemptEnd::kPreempted, 0, 2};
  attempts[1] = {2, "b", 0, 0, 0, 1, AttemptEnd::kPreempted, 2, 2};
  attempts[2] = {3, "c", 0, 0, 0, 1, AttemptEnd::kCompleted, 4, 2};
  EXPECT_EQ(attempt_at(attempts, 2)->vehicle_id, "b");
  EXPECT_EQ(attempt_at(attempts, 1)->vehicle_id, "a");
  EXPECT_EQ(attempt_at(attempts, 5)->vehicle_id, "c");
  // The output ended too early (index = its length): who completed it.
  EXPECT_EQ(attempt_at(attempts, 6)->vehicle_id, "c");
  EXPECT_EQ(producers(attempts), (std::vector<std::string>{"a", "b", "c"}));
  // A lost attempt that made nothing is nobody's output.
  attempts.insert(attempts.begin(), Attempt{9, "z", 0, 0, 0, 1, AttemptEnd::kLost, 0, 0});
  EXPECT_EQ(producers(attempts), (std::vector<std::string>{"a", "b", "c"}));
}

TEST(Verification, ConfigOutOfRangeIsRefusedWithTheKey) {
  EXPECT_TRUE(validate_verification(enabled()));
  auto refused = [](auto change, const char* key) {
    VerificationConfig c = enabled();
    change(&c);
    Status st = validate_verification(c);
    ASSERT_FALSE(st) << key;
    EXPECT_NE(st.error().message.find(key), std::string::npos) << st.error().message;
  };
  refused([](VerificationConfig* c) { c->sample_floor = 1.5; }, "sample_floor");
  refused([](VerificationConfig* c) { c->sample_floor = -0.1; }, "sample_floor");
  refused([](VerificationConfig* c) { c->sample_floor = std::nan(""); }, "sample_floor");
  refused([](VerificationConfig* c) { c->standing_initial = 1001; }, "standing_initial");
  refused([](VerificationConfig* c) { c->standing_fault = 0; }, "standing_fault");
  refused([](VerificationConfig* c) { c->quarantine_below = 600; }, "quarantine_below");
  refused([](VerificationConfig* c) { c->check_wait_ms_max = 5; }, "check_wait_ms_max");
  refused([](VerificationConfig* c) { c->checks_live_max = 0; }, "checks_live_max");
  refused([](VerificationConfig* c) { c->warmup_checks = 5000; }, "warmup_checks");
}

// ---- The machine in a simulated fleet ----------------------------------------

// The deterministic engine: the token at position i of a job's output.
int32_t honest_token(const AssignMessage& a, uint64_t i) {
  int64_t h = static_cast<int64_t>(a.sampling.seed % 1000);
  for (int32_t p : a.prompt_ids) h = h * 31 + p;
  return static_cast<int32_t>((h + static_cast<int64_t>(i) * 7919) % 30000 + 1);
}

struct Fleet {
  explicit Fleet(VerificationConfig vc, int honest, std::set<std::string> tamper, std::string build = "0.1+avx2") {
    CoordinatorCoreConfig config;
    config.models = {{"m", 1u << 20}};
    config.verification = vc;
    machine = std::make_unique<CoordinatorMachine>(config);
    std::vector<std::string> ids;
    for (int i = 0; i < honest; ++i) ids.push_back("honest-" + std::to_string(i));
    for (const auto& t : tamper) ids.push_back(t);
    tamperers = std::move(tamper);
    for (const auto& id : ids) join(id, build);
  }

  void join(const std::string& id, const std::string& build) {
    HelloMessage h;
    h.vehicle_id = id;
    h.models_cached = {"m"};
    h.memory_bytes = 8ull << 30;
    h.instance = "i";
    h.engine_build = build;
    step(VehicleMessageEvent{id, h});
    step(VehicleMessageEvent{id, idle_state(id)});
  }

  StateMessage idle_state(const std::string& id) const {
    StateMessage s;
    s.vehicle_id = id;
    s.state = "eligible";
    s.eligible = true;
    s.soc_pct = 60;
    s.sent_at = now;
    return s;
  }

  void submit(const std::string& id, int32_t prompt, bool batch = true, uint64_t max_tokens = 6) {
    JobSpec s;
    s.model_id = std::string(1, 'm');
    s.prompt_ids = {prompt, prompt + 1, 3};
    s.max_tokens = max_tokens;
    s.sampling.seed = 17;
    s.sampling.temperature = 0.8;
    s.batch = batch;
    step(SubmitJobEvent{id, s});
  }

  // Vehicles answer at once: started, one chunk, done, an idle state report.
  void on_assign(const std::string& vid, const AssignMessage& a) {
    ++assigned[vid];
    if (a.job_id.starts_with(kCheckJobIdPrefix)) ++check_runs[vid];
    if (hold_assigns) {
      held.emplace_back(vid, a);
      return;
    }
    answer(vid, a);
  }

  void answer(const std::string& vid, const AssignMessage& a) {
    std::vector<int32_t> ids;
    for (uint64_t i = a.produced_ids.size(); i < a.max_tokens; ++i) ids.push_back(honest_token(a, i));
    if (tamperers.count(vid) != 0 && !ids.empty()) ids.back() += 1;  // a plausible, wrong last token
    inbox.emplace_back(vid, StartedMessage{a.job_id, a.attempt});
    inbox.emplace_back(vid, ChunkMessage{a.job_id, a.attempt, a.produced_ids.size(), ids});
    inbox.emplace_back(vid, DoneMessage{a.job_id, a.attempt, a.max_tokens, "length"});
    inbox.emplace_back(vid, idle_state(vid));
  }

  void step(const CoordinatorEvent& e) {
    now += 1;
    for (auto& fx : machine->handle(e, now)) {
      if (auto* send = std::get_if<SendToVehicleEffect>(&fx)) {
        if (auto* a = std::get_if<AssignMessage>(&send->message)) on_assign(send->vehicle_id, *a);
      } else if (auto* v = std::get_if<JobVerifiedEffect>(&fx)) {
        EXPECT_EQ(verified.count(v->job_id), 0u) << v->job_id;
        verified[v->job_id] = *v;
      } else if (auto* ended = std::get_if<JobEndedEffect>(&fx)) {
        EXPECT_FALSE(ended->job_id.starts_with(kCheckJobIdPrefix));
        EXPECT_EQ(this->ended.count(ended->job_id), 0u);
        this->ended[ended->job_id] = *ended;
      } else if (auto* t = std::get_if<JobTokensEffect>(&fx)) {
        EXPECT_FALSE(t->job_id.starts_with(kCheckJobIdPrefix));
      } else if (auto* p = std::get_if<PersistJobEffect>(&fx)) {
        EXPECT_FALSE(p->job_id.starts_with(kCheckJobIdPrefix));
      } else if (auto* s = std::get_if<VehicleStandingEffect>(&fx)) {
        standings[s->vehicle_id] = s->standing;
        if (s->standing.quarantined && !quarantined_after.count(s->vehicle_id)) {
          quarantined_after[s->vehicle_id] = assigned[s->vehicle_id];
        }
      }
    }
  }

  void drain() {
    for (int guard = 0; !inbox.empty(); ++guard) {
      ASSERT_LT(guard, 1'000'000);
      auto [vid, msg] = std::move(inbox.front());
      inbox.pop_front();
      step(VehicleMessageEvent{vid, std::move(msg)});
    }
  }

  std::unique_ptr<CoordinatorMachine> machine;
  std::set<std::string> tamperers;
  TimeMs now = kT0;
  std::deque<std::pair<std::string, Message>> inbox;
  bool hold_assigns = false;
  std::vector<std::pair<std::string, AssignMessage>> held;
  std::map<std::string, int> assigned;
  std::map<std::string, int> check_runs;
  std::map<std::string, int> quarantined_after;  // the vehicle's assignments when it was quarantined
  std::map<std::string, JobVerifiedEffect> verified;
  std::map<std::string, JobEndedEffect> ended;
  std::map<std::string, VehicleStanding> standings;
};

std::vector<int32_t> honest_output(int32_t prompt, uint64_t max_tokens = 6) {
  AssignMessage a;
  a.prompt_ids = {prompt, prompt + 1, 3};
  a.sampling.seed = 17;
  std::vector<int32_t> out;
  for (uint64_t i = 0; i < max_tokens; ++i) out.push_back(honest_token(a, i));
  return out;
}

TEST(VerificationMachine, AnHonestFleetIsCheckedLessOverTimeAndNeverQuarantined) {
  Fleet f(enabled(), 5, {});
  for (int i = 0; i < 400; ++i) {
    f.submit("j" + std::to_string(i), i);
    f.drain();
  }
  EXPECT_EQ(f.machine->counters().jobs_done, 400u);
  EXPECT_EQ(f.machine->jobs_verifying(), 0u);
  EXPECT_EQ(f.machine->counters().checks_disputed, 0u);
  EXPECT_EQ(f.machine->counters().quarantines, 0u);
  const uint64_t checked = f.verified.size();
  // Every vehicle's first jobs are all checked, then fewer: far from all, far from none.
  EXPECT_GT(checked, 25u);
  EXPECT_LT(checked, 300u);
  for (const auto& [id, v] : f.verified) {
    EXPECT_EQ(v.outcome, VerificationOutcome::kAgreed) << id;
    EXPECT_TRUE(v.vehicles_at_fault.empty());
    EXPECT_TRUE(f.ended.at(id).verifying);
    EXPECT_EQ(v.agreed_ids, honest_output(std::stoi(id.substr(1))));
  }
  for (const auto& [id, s] : f.machine->standings()) {
    EXPECT_FALSE(s.quarantined) << id;
    EXPECT_GE(s.standing, enabled().standing_initial) << id;
    EXPECT_EQ(s.checks_faulted, 0u);
  }
  // A job not drawn ended without `verifying`.
  size_t unchecked = 0;
  for (const auto& [id, e] : f.ended) unchecked += !e.verifying;
  EXPECT_EQ(unchecked, 400u - checked);
}

TEST(VerificationMachine, ATamperingVehicleIsQuarantinedWithin50JobsAndItsJobsCorrected) {
  Fleet f(enabled(), 5, {"cheat"});
  // In waves as large as the fleet, so that every vehicle has work, the
  // tamperer too once its standing has fallen below the others'.
  for (int i = 0; i < 300; ++i) {
    f.submit("j" + std::to_string(i), i);
    if (i % 6 == 5) f.drain();
  }
  ASSERT_EQ(f.quarantined_after.count("cheat"), 1u);
  EXPECT_LE(f.quarantined_after["cheat"], 50);
  EXPECT_EQ(f.quarantined_after.size(), 1u);  // nobody else
  const VehicleStanding* s = f.machine->standing("cheat");
  ASSERT_NE(s, nullptr);
  EXPECT_TRUE(s->quarantined);
  EXPECT_NE(s->quarantine_reason.find("differed at token 5"), std::string::npos) << s->quarantine_reason;
  // Placement skips it from then on.
  EXPECT_EQ(f.assigned["cheat"], f.quarantined_after["cheat"]);
  for (const auto& [id, st] : f.machine->standings()) {
    if (id == "cheat") continue;
    EXPECT_FALSE(st.quarantined) << id;
    EXPECT_EQ(st.checks_faulted, 0u) << id;
    EXPECT_GE(st.standing, enabled().standing_initial) << id;
  }
  // Each job the cheat made and that was checked is corrected to the honest
  // output, with the cheat's attempt at fault; every verdict's output is the honest one.
  int corrected = 0;
  for (const auto& [id, v] : f.verified) {
    EXPECT_EQ(v.agreed_ids, honest_output(std::stoi(id.substr(1)))) << id;
    const JobEntry* e = f.machine->job(id);
    ASSERT_NE(e, nullptr);
    const bool by_cheat = e->job.attempts().back().vehicle_id == "cheat";
    if (by_cheat) {
      ++corrected;
      EXPECT_EQ(v.outcome, VerificationOutcome::kCorrected) << id;
      EXPECT_EQ(v.attempts_at_fault, std::vector<uint32_t>{1});
      EXPECT_EQ(v.vehicles_at_fault, std::vector<std::string>{"cheat"});
    } else {
      EXPECT_EQ(v.outcome, VerificationOutcome::kAgreed) << id;
      // The cheat may have been the (wrong) first re-run of an honest job.
      for (const auto& vid : v.vehicles_at_fault) EXPECT_EQ(vid, "cheat");
    }
  }
  // Every job the cheat finished before its quarantine was checked (its
  // sampling probability stays 1 after a fault and before warm-up).
  for (const auto& [id, e] : f.ended) {
    const JobEntry* entry = f.machine->job(id);
    if (entry->job.attempts().back().vehicle_id == "cheat") {
      EXPECT_TRUE(e.verifying) << id;
    }
  }
  EXPECT_GE(corrected, 1);
  EXPECT_EQ(f.machine->counters().jobs_done, 300u);
}

TEST(VerificationMachine, ChecksRunOnlyOnTheSameEngineBuildAndEndUnverifiedWhenNoneComes) {
  VerificationConfig vc = enabled();
  vc.check_wait_ms_max = 10 * kSecondMs;
  Fleet f(vc, 1, {});
  f.join("other-build", "0.1+avx512");
  f.submit("j0", 0);
  f.drain();
  ASSERT_TRUE(f.ended.at("j0").verifying);
  // The only other vehicle has another build: the check waits.
  EXPECT_EQ(f.check_runs["other-build"], 0);
  EXPECT_EQ(f.check_runs["honest-0"], 0);  // it made the original
  EXPECT_EQ(f.verified.count("j0"), 0u);
  EXPECT_EQ(f.machine->jobs_verifying(), 1u);
  f.now += 11 * kSecondMs;
  f.step(CoordinatorTick{});
  ASSERT_EQ(f.verified.count("j0"), 1u);
  EXPECT_EQ(f.verified["j0"].outcome, VerificationOutcome::kUnverified);
  EXPECT_EQ(f.verified["j0"].agreed_ids, honest_output(0));
  EXPECT_EQ(f.machine->counters().checks_unverified, 1u);
  EXPECT_FALSE(f.machine->standing("honest-0")->quarantined);
  EXPECT_EQ(f.machine->standing("honest-0")->checks_agreed, 0u);
}

TEST(VerificationMachine, ADisagreementWaitsForAThirdVehicle) {
  Fleet f(enabled(), 1, {"cheat"});
  f.submit("j0", 0);  // the machine places it on one; the other re-runs it
  f.drain();
  // Two vehicles disagree, and there is no third: nothing decided yet.
  EXPECT_EQ(f.verified.count("j0"), 0u);
  EXPECT_EQ(f.machine->jobs_verifying(), 1u);
  f.join("honest-9", "0.1+avx2");
  f.drain();
  ASSERT_EQ(f.verified.count("j0"), 1u);
  EXPECT_EQ(f.verified["j0"].agreed_ids, honest_output(0));
  EXPECT_EQ(f.verified["j0"].vehicles_at_fault, std::vector<std::string>{"cheat"});
  EXPECT_EQ(f.machine->standing("cheat")->checks_faulted, 1u);
  EXPECT_EQ(f.machine->standing("honest-0")->checks_faulted, 0u);
  EXPECT_EQ(f.machine->standing("honest-9")->checks_agreed, 1u);
}

TEST(VerificationMachine, AnAttemptResumedFromAWrongPrefixIsNotAtFault) {
  Fleet f(enabled(), 3, {"cheat"});
  f.hold_assigns = true;
  f.submit("j0", 0, false);
  ASSERT_EQ(f.held.size(), 1u);
  const auto [first_vid, first] = f.held.back();
  f.held.clear();
  ASSERT_EQ(first_vid, "cheat");  // equal standings: the smallest id
  // The cheat makes three tokens, the first one wrong, then its driver comes back.
  f.step(VehicleMessageEvent{"cheat", StartedMessage{"j0", first.attempt}});
  f.step(VehicleMessageEvent{
      "cheat", ChunkMessage{"j0", first.attempt, 0,
                            {honest_token(first, 0) + 1, honest_token(first, 1), honest_token(first, 2)}}});
  StateMessage driving = f.idle_state("cheat");
  driving.state = "driving";
  driving.eligible = false;
  f.step(VehicleMessageEvent{"cheat", driving});
  f.step(VehicleMessageEvent{"cheat", PreemptedMessage{"j0", first.attempt, 3, "driver back"}});
  // An honest vehicle resumes from the wrong prefix and finishes the job.
  ASSERT_EQ(f.held.size(), 1u);
  const auto [second_vid, second] = f.held.back();
  f.held.clear();
  EXPECT_NE(second_vid, "cheat");
  EXPECT_EQ(second.produced_ids.size(), 3u);
  f.hold_assigns = false;
  f.answer(second_vid, second);
  f.drain();
  // The two other honest vehicles re-run it from scratch and agree with each other.
  ASSERT_EQ(f.verified.count("j0"), 1u);
  const JobVerifiedEffect& v = f.verified["j0"];
  EXPECT_EQ(v.outcome, VerificationOutcome::kCorrected);
  EXPECT_EQ(v.agreed_ids, honest_output(0));
  EXPECT_EQ(v.attempts_at_fault, std::vector<uint32_t>{1});
  EXPECT_EQ(v.vehicles_at_fault, std::vector<std::string>{"cheat"});
  EXPECT_EQ(f.machine->standing("cheat")->checks_faulted, 1u);
  EXPECT_EQ(f.machine->standing(second_vid)->checks_faulted, 0u);
  EXPECT_EQ(f.machine->standing(second_vid)->standing, enabled().standing_initial);  // neither gains nor loses
  for (const auto& [id, n] : f.check_runs) EXPECT_NE(id, second_vid);
}

TEST(VerificationMachine, AQuarantineSurvivesARestartAndAnOperatorCanLiftIt) {
  Fleet f(enabled(), 0, {});
  VehicleStanding q = initial_standing(enabled());
  q.quarantined = true;
  q.standing = 100;
  q.quarantine_reason = "wrong outputs";
  f.step(RestoreStandingEvent{"honest-0", q});
  f.join("honest-0", "b");
  f.submit("j0", 0, false);
  f.drain();
  EXPECT_EQ(f.assigned["honest-0"], 0);
  EXPECT_EQ(f.machine->vehicles_available(), 0u);
  f.step(LiftQuarantineEvent{"honest-0"});
  f.drain();
  EXPECT_EQ(f.assigned["honest-0"], 1);
  EXPECT_FALSE(f.machine->standing("honest-0")->quarantined);
  EXPECT_EQ(f.machine->standing("honest-0")->standing, enabled().standing_initial);
  EXPECT_EQ(f.standings.at("honest-0").quarantined, false);
}

TEST(VerificationMachine, ClientsMayNotUseCheckJobIdsAndDisabledMeansNoChecks) {
  Fleet f(VerificationConfig{}, 3, {"cheat"});
  JobSpec s;
  s.model_id = "m";
  s.prompt_ids = {1};
  s.max_tokens = 2;
  const auto fx = f.machine->handle(SubmitJobEvent{std::string(kCheckJobIdPrefix) + "x", s}, kT0);
  ASSERT_EQ(fx.size(), 1u);
  const auto& acc = std::get<JobAcceptedEffect>(fx[0]);
  ASSERT_FALSE(acc.status);
  EXPECT_NE(acc.status.error().message.find("coordinator's own"), std::string::npos);
  for (int i = 0; i < 50; ++i) {
    f.submit("j" + std::to_string(i), i);
    f.drain();
  }
  EXPECT_TRUE(f.verified.empty());
  EXPECT_EQ(f.machine->counters().checks_started, 0u);
  for (const auto& [id, e] : f.ended) EXPECT_FALSE(e.verifying);
}

TEST(VerificationMachine, AJobStoppedByTheCoordinatorIsNotChecked) {
  Fleet f(enabled(), 3, {});
  f.hold_assigns = true;
  f.submit("j0", 0, false);
  ASSERT_EQ(f.held.size(), 1u);
  f.step(StopJobEvent{"j0", "stop"});
  ASSERT_EQ(f.ended.count("j0"), 1u);
  EXPECT_FALSE(f.ended["j0"].verifying);
  EXPECT_EQ(f.machine->counters().checks_started, 0u);
}

}  // namespace
}  // namespace idlefleet::core::verification_test
