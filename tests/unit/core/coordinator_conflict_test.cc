// A chunk that contradicts tokens already produced ends its attempt, and the
// coordinator cancels it on the vehicle. That vehicle is still running the
// attempt until its engine stops (one token's time, seconds on a big model),
// so it must not count as idle before it says it has let go: otherwise the
// job is placed straight back on it, the vehicle answers "busy", the attempt
// fails, the job is placed again at once, and within milliseconds the job
// has used up its attempts and fails. Found by tests/integration/bad_input_test.
#include <gtest/gtest.h>

#include "core/coordinator_machine.h"

namespace idlefleet::core::coordinator_conflict_test {
namespace {

constexpr TimeMs kT0 = 1'700'000'000'000;

std::vector<AssignMessage> assigns_to(const std::vector<CoordinatorEffect>& fx, const std::string& vid) {
  std::vector<AssignMessage> out;
  for (const auto& e : fx) {
    const auto* s = std::get_if<SendToVehicleEffect>(&e);
    if (s == nullptr || s->vehicle_id != vid) continue;
    if (const auto* a = std::get_if<AssignMessage>(&s->message)) out.push_back(*a);
  }
  return out;
}

StateMessage state(const std::string& id, TimeMs now, std::string job = "", uint32_t attempt = 0) {
  StateMessage s;
  s.vehicle_id = id;
  s.state = job.empty() ? "eligible" : "serving";
  s.eligible = true;
  s.soc_pct = 60;
  s.sent_at = now;
  s.job_id = std::move(job);
  s.attempt = attempt;
  return s;
}

TEST(CoordinatorConflict, TheVehicleStaysBusyUntilItHasLetGoOfTheConflictedAttempt) {
  CoordinatorCoreConfig config;
  config.models = {{"m", 1u << 20}};
  config.limits.attempts_max = 3;
  CoordinatorMachine c(config);
  c.handle(VehicleMessageEvent{"v1", HelloMessage{"v1", {"m"}, 8ull << 30, 10.0, "i1"}}, kT0);
  c.handle(VehicleMessageEvent{"v1", state("v1", kT0)}, kT0);
  JobSpec spec;
  spec.model_id = "m";
  spec.prompt_ids = {1, 5, 6};
  spec.max_tokens = 8;
  auto fx = c.handle(SubmitJobEvent{"j1", spec}, kT0);
  ASSERT_EQ(assigns_to(fx, "v1").size(), 1u);
  c.handle(VehicleMessageEvent{"v1", StartedMessage{"j1", 1}}, kT0);
  c.handle(VehicleMessageEvent{"v1", ChunkMessage{"j1", 1, 0, {3, 4}}}, kT0);

  // A forged or broken chunk contradicts token 1: the attempt ends and v1 is
  // told to cancel it, but v1 is not given the job again while it still runs it.
  fx = c.handle(VehicleMessageEvent{"v1", ChunkMessage{"j1", 1, 1, {9}}}, kT0 + 1);
  EXPECT_TRUE(assigns_to(fx, "v1").empty());
  EXPECT_EQ(c.vehicles_available(), 0u);
  // Its heartbeat still names the attempt (the engine is stopping): still busy.
  fx = c.handle(VehicleMessageEvent{"v1", state("v1", kT0 + 2, "j1", 1)}, kT0 + 2);
  EXPECT_TRUE(assigns_to(fx, "v1").empty());
  fx = c.handle(CoordinatorTick{}, kT0 + 3);
  EXPECT_TRUE(assigns_to(fx, "v1").empty());

  // An agent that is still busy answers any assignment with "failed"; played
  // out here, so that the test fails (the job fails) if v1 were idle.
  for (const auto& a : assigns_to(fx, "v1")) {
    c.handle(VehicleMessageEvent{"v1", FailedMessage{"j1", a.attempt, "vehicle v1 is busy with job j1"}}, kT0 + 4);
  }

  // The engine has stopped and v1 says so: now the job resumes there, from
  // the tokens it had.
  fx = c.handle(VehicleMessageEvent{"v1", state("v1", kT0 + 5)}, kT0 + 5);
  const auto again = assigns_to(fx, "v1");
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].attempt, 2u);
  EXPECT_EQ(again[0].produced_ids, std::vector<int32_t>({3, 4}));
  c.handle(VehicleMessageEvent{"v1", StartedMessage{"j1", 2}}, kT0 + 6);
  c.handle(VehicleMessageEvent{"v1", ChunkMessage{"j1", 2, 2, {7}}}, kT0 + 7);
  c.handle(VehicleMessageEvent{"v1", DoneMessage{"j1", 2, 3, "stop"}}, kT0 + 8);
  EXPECT_EQ(c.job("j1")->job.state(), JobState::kDone);
  EXPECT_EQ(c.job("j1")->job.produced(), std::vector<int32_t>({3, 4, 7}));
  EXPECT_EQ(c.counters().jobs_failed, 0u);
  EXPECT_EQ(c.vehicles_available(), 1u);
}

// Before the fix, what the test above guards against: with v1 idle at once,
// the assign/busy/fail loop runs until the attempts are used up.
TEST(CoordinatorConflict, AVehicleThatStaysBusyNeverBurnsTheJobsAttempts) {
  CoordinatorCoreConfig config;
  config.models = {{"m", 1u << 20}};
  config.limits.attempts_max = 3;
  CoordinatorMachine c(config);
  c.handle(VehicleMessageEvent{"v1", HelloMessage{"v1", {"m"}, 8ull << 30, 10.0, "i1"}}, kT0);
  c.handle(VehicleMessageEvent{"v1", state("v1", kT0)}, kT0);
  JobSpec spec;
  spec.model_id = "m";
  spec.prompt_ids = {1};
  spec.max_tokens = 8;
  c.handle(SubmitJobEvent{"j1", spec}, kT0);
  c.handle(VehicleMessageEvent{"v1", StartedMessage{"j1", 1}}, kT0);
  c.handle(VehicleMessageEvent{"v1", ChunkMessage{"j1", 1, 0, {3}}}, kT0);
  c.handle(VehicleMessageEvent{"v1", ChunkMessage{"j1", 1, 0, {4}}}, kT0 + 1);
  // The engine is still stopping: the agent's heartbeat names the attempt,
  // and it answers every assignment with "busy", as fast as NATS carries it.
  std::vector<CoordinatorEffect> fx = c.handle(VehicleMessageEvent{"v1", state("v1", kT0 + 2, "j1", 1)}, kT0 + 2);
  for (int round = 0; round < 10; ++round) {
    const auto a = assigns_to(fx, "v1");
    if (a.empty()) break;
    fx = c.handle(VehicleMessageEvent{"v1", FailedMessage{"j1", a[0].attempt, "vehicle v1 is busy with job j1"}},
                  kT0 + 3 + round);
  }
  EXPECT_EQ(c.counters().jobs_failed, 0u);
  EXPECT_FALSE(job_state_final(c.job("j1")->job.state()));
}

}  // namespace
}  // namespace idlefleet::core::coordinator_conflict_test
