// The agent's state machine: the car decides, at once, on every event.
#include "core/agent_machine.h"

#include <gtest/gtest.h>

#include <limits>

namespace idlefleet::core::agent_machine_test {
namespace {

constexpr TimeMs kT0 = 1'700'000'000'000;  // a Tuesday

VehicleSignals parked_signals(TimeMs now) {
  VehicleSignals s;
  s.speed_kmh = 0.0;
  s.gear = kGearPark;
  s.soc_pct = 70.0;
  s.is_charging = true;
  s.charger_connected = true;
  s.charger_power_kw = 7.0;
  s.driver_seat_occupied = false;
  s.driver_door_open = false;
  s.ambient_temperature_c = 15.0;
  s.accelerator_temperature_c = 40.0;
  s.heard_at = now;
  return s;
}

AgentConfig config() {
  AgentConfig c;
  c.vehicle_id = "car-1";
  c.instance = "i1";
  c.policy.opted_in = true;
  c.models_cached = {"stories260K"};
  return c;
}

AssignMessage assign(const std::string& job, uint32_t attempt) {
  AssignMessage a;
  a.job_id = job;
  a.attempt = attempt;
  a.model_id = "stories260K";
  a.prompt_ids = {1, 2, 3};
  a.produced_ids = {7};
  a.max_tokens = 10;
  return a;
}

template <class T>
std::vector<T> effects_of(const std::vector<AgentEffect>& effects) {
  std::vector<T> out;
  for (const auto& e : effects) {
    if (const auto* x = std::get_if<T>(&e)) out.push_back(*x);
  }
  return out;
}

template <class M>
std::vector<M> sent(const std::vector<AgentEffect>& effects) {
  std::vector<M> out;
  for (const auto& s : effects_of<SendEffect>(effects)) {
    if (const auto* m = std::get_if<M>(&s.message)) out.push_back(*m);
  }
  return out;
}

TEST(AgentMachine, IntroducesItselfAndReportsEligibility) {
  AgentMachine a(config());
  auto fx = a.handle(SignalsEvent{parked_signals(kT0)}, kT0);
  EXPECT_EQ(a.state(), VehicleState::kEligible);
  fx = a.handle(ConnectedEvent{}, kT0);
  ASSERT_EQ(sent<HelloMessage>(fx).size(), 1u);
  EXPECT_EQ(sent<HelloMessage>(fx)[0].instance, "i1");
  ASSERT_EQ(sent<StateMessage>(fx).size(), 1u);
  EXPECT_TRUE(sent<StateMessage>(fx)[0].eligible);
  EXPECT_EQ(sent<StateMessage>(fx)[0].state, "eligible");
}

// The wear budget is the owner's for each local calendar month: used up, the
// car stops serving until the month turns, and then starts from zero.
TEST(AgentMachine, TheWearBudgetStartsAgainEachCalendarMonth) {
  AgentConfig c = config();
  c.policy.wear_budget_hours_per_month = 2.0;
  c.utc_offset_minutes = 60;
  const TimeMs jan31 = days_from_civil(2027, 1, 31) * kDayMs + 12 * kHourMs;  // local 13:00
  AgentMachine a(c);
  a.handle(SignalsEvent{parked_signals(jan31)}, jan31);
  EXPECT_TRUE(a.decision().eligible);
  a.handle(WearEvent{2.5}, jan31 + 1);
  EXPECT_FALSE(a.decision().eligible);
  ASSERT_FALSE(a.decision().reasons.empty());
  // 23:59 local, still January.
  const TimeMs late = days_from_civil(2027, 1, 31) * kDayMs + 22 * kHourMs + 59 * kMinuteMs;
  a.handle(SignalsEvent{parked_signals(late)}, late);
  EXPECT_FALSE(a.decision().eligible);
  // 00:00 local on 1 February (23:00 UTC on 31 January): a new month.
  const TimeMs feb1 = days_from_civil(2027, 1, 31) * kDayMs + 23 * kHourMs;
  EXPECT_EQ(local_month_index(feb1, 60), 2027 * 12 + 1);
  a.handle(SignalsEvent{parked_signals(feb1)}, feb1);
  EXPECT_TRUE(a.decision().eligible);
  a.handle(WearEvent{1.0}, feb1 + 1);
  EXPECT_TRUE(a.decision().eligible) << "1 h of a 2 h budget";
  a.handle(WearEvent{1.0}, feb1 + 2);
  EXPECT_FALSE(a.decision().eligible);
}

TEST(AgentMachine, SaysHelloAgainWhenAskedAtMostOncePerGap) {
  AgentMachine a(config());
  a.handle(SignalsEvent{parked_signals(kT0)}, kT0);
  a.handle(ConnectedEvent{}, kT0);
  // Asked within the gap of the last hello: nothing.
  auto fx = a.handle(CoordinatorMessageEvent{HelloPleaseMessage{}}, kT0 + kHelloPleaseGapMs - 1);
  EXPECT_TRUE(sent<HelloMessage>(fx).empty());
  fx = a.handle(CoordinatorMessageEvent{HelloPleaseMessage{}}, kT0 + kHelloPleaseGapMs);
  ASSERT_EQ(sent<HelloMessage>(fx).size(), 1u);
  ASSERT_EQ(sent<StateMessage>(fx).size(), 1u);
  EXPECT_EQ(sent<StateMessage>(fx)[0].state, "eligible");
  for (int i = 1; i <= 100; ++i) {
    fx = a.handle(CoordinatorMessageEvent{HelloPleaseMessage{}}, kT0 + kHelloPleaseGapMs + i);
    EXPECT_TRUE(sent<HelloMessage>(fx).empty());
  }
}

TEST(AgentMachine, AcceptsAnAssignmentWhenEligibleAndReportsTokensAndDone) {
  AgentMachine a(config());
  a.handle(SignalsEvent{parked_signals(kT0)}, kT0);
  auto fx = a.handle(CoordinatorMessageEvent{assign("j1", 1)}, kT0 + 10);
  ASSERT_EQ(effects_of<StartEngineEffect>(fx).size(), 1u);
  EXPECT_EQ(effects_of<StartEngineEffect>(fx)[0].assign.produced_ids, std::vector<int32_t>({7}));
  ASSERT_EQ(sent<StartedMessage>(fx).size(), 1u);
  EXPECT_EQ(a.state(), VehicleState::kServing);
  ASSERT_EQ(sent<StateMessage>(fx).size(), 1u);
  EXPECT_EQ(sent<StateMessage>(fx)[0].job_id, "j1");

  fx = a.handle(EngineTokensEvent{"j1", 1, 1, {8, 9}}, kT0 + 20);
  ASSERT_EQ(sent<ChunkMessage>(fx).size(), 1u);
  EXPECT_EQ(sent<ChunkMessage>(fx)[0].first_index, 1u);
  fx = a.handle(EngineFinishedEvent{"j1", 1, 3, "stop"}, kT0 + 30);
  ASSERT_EQ(sent<DoneMessage>(fx).size(), 1u);
  EXPECT_EQ(sent<DoneMessage>(fx)[0].total_tokens, 3u);
  EXPECT_FALSE(a.serving());
  EXPECT_EQ(a.counters().attempts_finished, 1u);
}

TEST(AgentMachine, EveryAttemptEndsWithAMeteredReceipt) {
  AgentConfig cfg = config();
  cfg.inference_power_kw = 0.36;  // 0.1 Wh per second
  AgentMachine a(cfg);
  VehicleSignals sig = parked_signals(kT0);
  sig.accelerator_temperature_c = cfg.wear.reference_temp_c;  // one weighted hour per hour
  a.handle(SignalsEvent{sig}, kT0);
  a.handle(CoordinatorMessageEvent{assign("j1", 1)}, kT0 + 1000);
  a.handle(EngineTokensEvent{"j1", 1, 1, {8, 9}}, kT0 + 1000 + 2 * kSecondMs);
  // The car now reports its measured draw: 0.72 kW for the last two seconds.
  sig.accelerator_power_kw = 0.72;
  sig.heard_at = kT0 + 1000 + 2 * kSecondMs;
  a.handle(SignalsEvent{sig}, kT0 + 1000 + 2 * kSecondMs);
  auto fx = a.handle(EngineFinishedEvent{"j1", 1, 3, "stop"}, kT0 + 1000 + 4 * kSecondMs);
  ASSERT_EQ(sent<ReceiptMessage>(fx).size(), 1u);
  const ReceiptMessage r = sent<ReceiptMessage>(fx)[0];
  EXPECT_EQ(r.vehicle_id, "car-1");
  EXPECT_EQ(r.job_id, "j1");
  EXPECT_EQ(r.attempt, 1u);
  EXPECT_EQ(r.outcome, "done");
  EXPECT_EQ(r.model_id, "stories260K");
  EXPECT_EQ(r.input_tokens, 4u);   // prompt 3 + 1 resumed
  EXPECT_EQ(r.output_tokens, 2u);
  Sha256Hasher h;
  hash_output_ids(&h, std::vector<int32_t>{7, 8, 9});
  EXPECT_EQ(r.output_sha256, to_hex(h.finish()));
  EXPECT_EQ(r.accelerator_ms, 4000u);
  EXPECT_EQ(r.energy_mwh, 200u + 400u);  // 2 s at 0.36 kW, then 2 s at 0.72 kW
  EXPECT_EQ(r.wear_micro_hours, 1112u);  // 4 s at the reference temperature (1111.1), rounded up
  EXPECT_EQ(r.started_at, kT0 + 1000);
  EXPECT_EQ(r.ended_at, kT0 + 1000 + 4 * kSecondMs);
  EXPECT_TRUE(r.signature.empty());  // the shell signs

  // A preempted attempt and a cancelled one get receipts too.
  a.handle(CoordinatorMessageEvent{assign("j2", 1)}, kT0 + 10 * kSecondMs);
  sig.driver_door_open = true;
  sig.heard_at = kT0 + 11 * kSecondMs;
  fx = a.handle(SignalsEvent{sig}, kT0 + 11 * kSecondMs);
  ASSERT_EQ(effects_of<StopEngineEffect>(fx).size(), 1u);
  fx = a.handle(EngineStoppedEvent{"j2", 1, 1}, kT0 + 11 * kSecondMs + 5);
  ASSERT_EQ(sent<ReceiptMessage>(fx).size(), 1u);
  EXPECT_EQ(sent<ReceiptMessage>(fx)[0].outcome, "preempted");
  EXPECT_EQ(sent<ReceiptMessage>(fx)[0].output_tokens, 0u);
}

TEST(AgentMachine, TokensCarryTheirLogprobsInTheChunk) {
  AgentMachine a(config());
  a.handle(SignalsEvent{parked_signals(kT0)}, kT0);
  AssignMessage m = assign("j1", 1);
  m.logprobs = 1;
  auto fx = a.handle(CoordinatorMessageEvent{m}, kT0 + 10);
  ASSERT_EQ(effects_of<StartEngineEffect>(fx).size(), 1u);
  EXPECT_EQ(effects_of<StartEngineEffect>(fx)[0].assign.logprobs, 1);
  const std::vector<TokenLogprobs> lps = {{-0.5f, {{8, -0.5f}}}, {-2.25f, {{3, -0.25f}}}};
  fx = a.handle(EngineTokensEvent{"j1", 1, 1, {8, 9}, lps}, kT0 + 20);
  ASSERT_EQ(sent<ChunkMessage>(fx).size(), 1u);
  EXPECT_EQ(sent<ChunkMessage>(fx)[0].logprobs, lps);
  // A shell that got the count wrong: the tokens still go, without logprobs
  // (the coordinator then gives the attempt to another vehicle).
  fx = a.handle(EngineTokensEvent{"j1", 1, 3, {4, 5}, {lps[0]}}, kT0 + 30);
  ASSERT_EQ(sent<ChunkMessage>(fx).size(), 1u);
  EXPECT_EQ(sent<ChunkMessage>(fx)[0].ids, std::vector<int32_t>({4, 5}));
  EXPECT_TRUE(sent<ChunkMessage>(fx)[0].logprobs.empty());
  ASSERT_FALSE(effects_of<AgentLogEffect>(fx).empty());
  EXPECT_EQ(effects_of<AgentLogEffect>(fx)[0].what, "bad_logprobs");
}

TEST(AgentMachine, DriverReturningStopsTheEngineInTheSameEvent) {
  AgentMachine a(config());
  a.handle(SignalsEvent{parked_signals(kT0)}, kT0);
  a.handle(CoordinatorMessageEvent{assign("j1", 1)}, kT0);
  VehicleSignals s = parked_signals(kT0 + 100);
  s.driver_door_open = true;
  auto fx = a.handle(SignalsEvent{s}, kT0 + 100);
  ASSERT_EQ(effects_of<StopEngineEffect>(fx).size(), 1u);
  EXPECT_NE(effects_of<StopEngineEffect>(fx)[0].reason.find("door"), std::string::npos);
  EXPECT_EQ(a.state(), VehicleState::kPreempting);
  // Tokens produced before the stop took effect are still reported.
  fx = a.handle(EngineTokensEvent{"j1", 1, 1, {5}}, kT0 + 101);
  EXPECT_EQ(sent<ChunkMessage>(fx).size(), 1u);
  fx = a.handle(EngineStoppedEvent{"j1", 1, 2}, kT0 + 102);
  ASSERT_EQ(sent<PreemptedMessage>(fx).size(), 1u);
  EXPECT_EQ(sent<PreemptedMessage>(fx)[0].total_tokens, 2u);
  EXPECT_FALSE(a.serving());
  EXPECT_EQ(a.state(), VehicleState::kCharging);
  EXPECT_EQ(a.counters().attempts_preempted, 1u);
}

TEST(AgentMachine, RefusesWorkWhenNotEligibleOrBusy) {
  AgentMachine a(config());
  VehicleSignals s = parked_signals(kT0);
  s.soc_pct = 20.0;
  s.charger_connected = false;
  s.is_charging = false;
  a.handle(SignalsEvent{s}, kT0);
  auto fx = a.handle(CoordinatorMessageEvent{assign("j1", 1)}, kT0);
  EXPECT_TRUE(effects_of<StartEngineEffect>(fx).empty());
  ASSERT_EQ(sent<PreemptedMessage>(fx).size(), 1u);
  EXPECT_NE(sent<PreemptedMessage>(fx)[0].reason.find("not eligible"), std::string::npos);

  a.handle(SignalsEvent{parked_signals(kT0)}, kT0);
  a.handle(CoordinatorMessageEvent{assign("j1", 2)}, kT0);
  fx = a.handle(CoordinatorMessageEvent{assign("j1", 2)}, kT0);  // duplicate: ignored
  EXPECT_TRUE(effects_of<StartEngineEffect>(fx).empty());
  EXPECT_TRUE(sent<FailedMessage>(fx).empty());
  fx = a.handle(CoordinatorMessageEvent{assign("j2", 1)}, kT0);
  ASSERT_EQ(sent<FailedMessage>(fx).size(), 1u);
  EXPECT_EQ(sent<FailedMessage>(fx)[0].job_id, "j2");
  EXPECT_EQ(a.counters().attempts_refused, 2u);
}

TEST(AgentMachine, CancelStopsSilently) {
  AgentMachine a(config());
  a.handle(SignalsEvent{parked_signals(kT0)}, kT0);
  a.handle(CoordinatorMessageEvent{assign("j1", 1)}, kT0);
  auto fx = a.handle(CoordinatorMessageEvent{CancelMessage{"j1", 1}}, kT0 + 5);
  ASSERT_EQ(effects_of<StopEngineEffect>(fx).size(), 1u);
  fx = a.handle(EngineStoppedEvent{"j1", 1, 1}, kT0 + 6);
  EXPECT_TRUE(sent<PreemptedMessage>(fx).empty());
  EXPECT_FALSE(a.serving());
  // A cancel for something not running here is refused and counted.
  fx = a.handle(CoordinatorMessageEvent{CancelMessage{"j9", 1}}, kT0 + 7);
  EXPECT_EQ(effects_of<AgentLogEffect>(fx).size(), 1u);
  EXPECT_EQ(a.counters().messages_rejected, 1u);
}

TEST(AgentMachine, RefusesMessagesOnlyVehiclesSend) {
  AgentMachine a(config());
  a.handle(SignalsEvent{parked_signals(kT0)}, kT0);
  auto fx = a.handle(CoordinatorMessageEvent{DoneMessage{"j1", 1, 3, "stop"}}, kT0);
  EXPECT_EQ(a.counters().messages_rejected, 1u);
  EXPECT_TRUE(effects_of<StartEngineEffect>(fx).empty());
}

TEST(AgentMachine, HeartbeatsAndStaleSignalsPreempt) {
  AgentConfig c = config();
  c.heartbeat_ms = 1000;
  c.signal_age_ms_max = 5000;
  AgentMachine a(c);
  a.handle(SignalsEvent{parked_signals(kT0)}, kT0);
  a.handle(ConnectedEvent{}, kT0);
  auto fx = a.handle(AgentTick{}, kT0 + 500);
  EXPECT_TRUE(sent<StateMessage>(fx).empty());
  fx = a.handle(AgentTick{}, kT0 + 1000);
  EXPECT_EQ(sent<StateMessage>(fx).size(), 1u);
  a.handle(CoordinatorMessageEvent{assign("j1", 1)}, kT0 + 1000);
  // The feed goes silent: serving on stale knowledge of the car is not allowed.
  fx = a.handle(AgentTick{}, kT0 + 7000);
  ASSERT_EQ(effects_of<StopEngineEffect>(fx).size(), 1u);
  EXPECT_FALSE(a.decision().eligible);
  EXPECT_TRUE(a.decision().has(ReasonCode::kSignalsStale));
}

TEST(AgentMachine, PolicyChangeAppliesMidJob) {
  AgentMachine a(config());
  a.handle(SignalsEvent{parked_signals(kT0)}, kT0);
  a.handle(CoordinatorMessageEvent{assign("j1", 1)}, kT0);
  OwnerPolicy p = config().policy;
  p.opted_in = false;
  auto fx = a.handle(PolicyEvent{p}, kT0 + 1);
  EXPECT_EQ(effects_of<StopEngineEffect>(fx).size(), 1u);
  EXPECT_TRUE(a.decision().has(ReasonCode::kOptedOut));
  // An invalid policy is refused and the old one stays.
  OwnerPolicy bad = p;
  bad.soc_floor_pct = 150.0;
  fx = a.handle(PolicyEvent{bad}, kT0 + 2);
  ASSERT_EQ(effects_of<AgentLogEffect>(fx).size(), 1u);
  EXPECT_FALSE(a.config().policy.opted_in);
}

// The owner's policy from the coordinator: in force at once (a running
// attempt stops in the same call, the coordinator hears the new state), and
// setting it back makes the car work again.
TEST(AgentMachine, CoordinatorPolicyIsEnforcedAtOnce) {
  AgentMachine a(config());
  a.handle(SignalsEvent{parked_signals(kT0)}, kT0);  // SoC 70%
  a.handle(CoordinatorMessageEvent{assign("j1", 1)}, kT0);
  ASSERT_TRUE(a.serving());
  OwnerPolicy p = config().policy;
  p.soc_floor_pct = 75.0;
  auto fx = a.handle(CoordinatorMessageEvent{PolicyMessage{"car-1", p}}, kT0 + 1);
  ASSERT_EQ(effects_of<StopEngineEffect>(fx).size(), 1u);
  EXPECT_NE(effects_of<StopEngineEffect>(fx)[0].reason.find("floor"), std::string::npos);
  EXPECT_TRUE(a.decision().has(ReasonCode::kSocAtOrBelowFloor));
  EXPECT_EQ(a.config().policy.soc_floor_pct, 75.0);
  ASSERT_EQ(sent<StateMessage>(fx).size(), 1u);
  EXPECT_FALSE(sent<StateMessage>(fx)[0].eligible);
  // The attempt ends; a new assignment is refused while the floor is above the SoC.
  a.handle(EngineStoppedEvent{"j1", 1, 1}, kT0 + 2);
  fx = a.handle(CoordinatorMessageEvent{assign("j2", 1)}, kT0 + 3);
  EXPECT_FALSE(a.serving());
  ASSERT_EQ(sent<PreemptedMessage>(fx).size(), 1u);
  EXPECT_NE(sent<PreemptedMessage>(fx)[0].reason.find("floor"), std::string::npos);
  // Back to a floor below the SoC: eligible, and it takes work again.
  p.soc_floor_pct = 30.0;
  fx = a.handle(CoordinatorMessageEvent{PolicyMessage{"car-1", p}}, kT0 + 4);
  EXPECT_TRUE(a.decision().eligible);
  ASSERT_EQ(sent<StateMessage>(fx).size(), 1u);
  EXPECT_TRUE(sent<StateMessage>(fx)[0].eligible);
  a.handle(CoordinatorMessageEvent{assign("j3", 1)}, kT0 + 5);
  EXPECT_TRUE(a.serving());
}

TEST(AgentMachine, PolicyForAnotherVehicleIsRejected) {
  AgentMachine a(config());
  a.handle(SignalsEvent{parked_signals(kT0)}, kT0);
  OwnerPolicy p = config().policy;
  p.opted_in = false;
  auto fx = a.handle(CoordinatorMessageEvent{PolicyMessage{"car-2", p}}, kT0 + 1);
  EXPECT_EQ(a.counters().messages_rejected, 1u);
  ASSERT_EQ(effects_of<AgentLogEffect>(fx).size(), 1u);
  EXPECT_EQ(effects_of<AgentLogEffect>(fx)[0].what, "rejected_message");
  EXPECT_TRUE(a.config().policy.opted_in);
  EXPECT_TRUE(a.decision().eligible);
  // An invalid one (a shell's bug: decoding validates) is refused too.
  OwnerPolicy bad = config().policy;
  bad.target_soc_pct = 10.0;  // below the floor
  fx = a.handle(CoordinatorMessageEvent{PolicyMessage{"car-1", bad}}, kT0 + 2);
  ASSERT_EQ(effects_of<AgentLogEffect>(fx).size(), 1u);
  EXPECT_EQ(effects_of<AgentLogEffect>(fx)[0].what, "rejected_policy");
  EXPECT_EQ(a.config().policy.target_soc_pct, 80.0);
}

// The trip reserve kept on battery covers at least a day of the car's own
// driving: the most its drives used together within any 24 hours. Here the
// car charges after every drive, so each stretch between charges is one
// drive and the 24 hour rule is what binds.
TEST(AgentMachine, TripReserveIsAtLeastTheMostADayOfDrivesUsed) {
  AgentMachine a(config());
  TimeMs t = kT0;
  double soc = 90.0;
  auto drive = [&](double used_pct, DurationMs parked_before) {
    t += parked_before;
    VehicleSignals s = parked_signals(t);
    s.soc_pct = soc;
    a.handle(SignalsEvent{s}, t);
    soc += 1.0;  // it charged while parked: the stretch since the last charge ends
    s.soc_pct = soc;
    a.handle(SignalsEvent{s}, t);
    s.gear = kGearDrive;
    s.speed_kmh = 40.0;
    s.driver_seat_occupied = true;
    s.is_charging = false;
    s.charger_connected = false;
    a.handle(SignalsEvent{s}, t + 1);
    soc -= used_pct;
    t += 30 * kMinuteMs;
    VehicleSignals back = parked_signals(t);
    back.soc_pct = soc;
    a.handle(SignalsEvent{back}, t);
  };
  EXPECT_DOUBLE_EQ(a.trip_reserve_pct(), kSocPctMax);  // never seen charging
  drive(4.0, kHourMs);
  EXPECT_DOUBLE_EQ(a.trip_reserve_pct(), AgentConfig{}.trip_reserve_pct_default);  // charged, one drive
  drive(3.0, 10 * kHourMs);
  EXPECT_DOUBLE_EQ(a.trip_reserve_pct(), AgentConfig{}.trip_reserve_pct_default);  // two drives: too few
  drive(5.0, 3 * kHourMs);  // the three within 24 hours: 12 points
  EXPECT_NEAR(a.trip_reserve_pct(), 12.0, 1e-9);
  drive(2.0, 3 * kDayMs);  // alone in its day: the old day stays the most
  EXPECT_NEAR(a.trip_reserve_pct(), 12.0, 1e-9);
  drive(6.0, 2 * kHourMs);
  drive(6.0, 2 * kHourMs);  // 2 + 6 + 6 in one day
  EXPECT_NEAR(a.trip_reserve_pct(), 14.0, 1e-9);
  // A drive that gained charge (a detour via a charger) reserves nothing.
  drive(-20.0, 30 * kDayMs);
  EXPECT_NEAR(a.trip_reserve_pct(), 14.0, 1e-9);
  // Each stretch between charges was one drive (the first began before the
  // agent did, and the last, open one has the gain: nothing).
  EXPECT_EQ(a.stretches_driven_pct(), (std::vector<double>{4.0, 3.0, 5.0, 2.0, 6.0, 6.0}));
  EXPECT_DOUBLE_EQ(a.stretch_open_driven_pct(), 0.0);
}

// A car's days as its agent sees them: parked (at home, at work, at a fast
// charger), plugged in or not, charging, driving. Every signal change is a
// SignalsEvent at its time.
class CarDays {
 public:
  explicit CarDays(double soc) : soc_(soc) {}
  AgentMachine& agent() { return agent_; }
  double reserve() const { return agent_.trip_reserve_pct(); }
  TimeMs now() const { return t_; }
  void set_policy(const OwnerPolicy& p) { agent_.handle(PolicyEvent{p}, t_); }

  // Parked for `ms`, plugged in or not, the SoC unchanged (standby).
  void park(DurationMs ms, bool plugged) {
    signal(false, plugged, false);
    t_ += ms;
    signal(false, plugged, false);
  }
  // Plugged in, charging to `to_pct` one point every six minutes.
  void charge_to(double to_pct) {
    while (soc_ < to_pct) {
      signal(false, true, true);
      t_ += 6 * kMinuteMs;
      soc_ = std::min(to_pct, soc_ + 1.0);
    }
    signal(false, true, false);
  }
  // Unplugged, a drive of `ms` that uses `used_pct`.
  void drive(double used_pct, DurationMs ms = 40 * kMinuteMs) {
    signal(false, false, false);
    t_ += kSecondMs;
    signal(true, false, false);
    t_ += ms;
    soc_ -= used_pct;
    signal(false, false, false);
  }
  // A workday without charging: the morning drive, the day at work, the
  // drive home, then the evening at home (plugged in without charging: at
  // the car's charge limit, or the charger off).
  void workday(double morning_pct, double evening_pct, bool plugged_at_home) {
    drive(morning_pct);
    park(9 * kHourMs, false);
    drive(evening_pct);
    park(15 * kHourMs - 80 * kMinuteMs - 2 * kSecondMs, plugged_at_home);  // 24 hours in all
  }

 private:
  void signal(bool driving, bool plugged, bool charging) {
    VehicleSignals s = parked_signals(t_);
    s.soc_pct = soc_;
    s.charger_connected = plugged;
    s.is_charging = charging;
    if (driving) {
      s.gear = kGearDrive;
      s.speed_kmh = 50.0;
      s.driver_seat_occupied = true;
    }
    agent_.handle(SignalsEvent{s}, t_);
  }

  AgentMachine agent_{config()};
  TimeMs t_ = kT0;
  double soc_;
};

// Nightly charging: a stretch between charges is one day's driving, so the
// reserve is the most a day used, not the week's sum, and no longer the
// default once a whole stretch was seen.
TEST(AgentMachine, TripReserveOfACarThatChargesNightlyIsADaysDriving) {
  CarDays car(80.0);
  car.charge_to(90.0);  // plugged in at the start: the first stretch begins at a charge
  const std::vector<std::pair<double, double>> days = {{3.0, 2.0}, {4.0, 3.5}, {2.0, 2.0}, {3.0, 3.0}};
  for (const auto& [morning, evening] : days) {
    car.workday(morning, evening, /*plugged_at_home=*/false);
    car.charge_to(90.0);
  }
  EXPECT_EQ(car.agent().stretches_driven_pct(), (std::vector<double>{5.0, 7.5, 4.0, 6.0}));
  // Below the default: the car has shown how far it goes between charges.
  EXPECT_NEAR(car.reserve(), 7.5, 1e-9);
  EXPECT_LT(car.reserve(), AgentConfig{}.trip_reserve_pct_default);
  // At work the next day, the open stretch (the morning's 3) does not raise it.
  car.drive(3.0);
  car.park(4 * kHourMs, false);
  EXPECT_DOUBLE_EQ(car.agent().stretch_open_driven_pct(), 3.0);
  EXPECT_NEAR(car.reserve(), 7.5, 1e-9);
  // Older stretches fall out after kStretchesRemembered newer ones.
  car.drive(3.0);
  car.charge_to(90.0);
  for (size_t i = 0; i < kStretchesRemembered; ++i) {
    car.workday(1.0, 1.0, false);
    car.charge_to(90.0);
  }
  EXPECT_EQ(car.agent().stretches_driven_pct(), std::vector<double>(kStretchesRemembered, 2.0));
  // The 24 hour rule remembers more drives (kTripsRemembered): an evening's
  // 3, the next day's 3 + 3 and the morning's 1 after them, within 24 hours,
  // still set the reserve.
  EXPECT_NEAR(car.reserve(), 10.0, 1e-9);
}

// Charging every third night: serving on battery on the first day would
// take charge that the next three days' departures need, so the reserve is
// three days' driving, not one.
TEST(AgentMachine, TripReserveOfACarThatChargesEveryThirdDayIsThreeDays) {
  CarDays car(60.0);
  car.charge_to(95.0);
  for (int stretch = 0; stretch < 2; ++stretch) {
    for (int day = 0; day < 3; ++day) car.workday(5.0, 5.0, /*plugged_at_home=*/true);  // plugged, at the limit
    car.charge_to(95.0);
  }
  EXPECT_EQ(car.agent().stretches_driven_pct(), (std::vector<double>{30.0, 30.0}));
  // At work on the first day of the next stretch: the old rule (a day's
  // drives) would keep 10 points; the car will drive 30 before it charges.
  car.drive(5.0);
  car.park(2 * kHourMs, false);
  EXPECT_NEAR(car.reserve(), 30.0, 1e-9);
  // The reserve reaches the policy: 95 - 5 = 90% now; a 60% target and a
  // departure in 20 hours, which serving on battery (0.4 kW of 60 kWh) would
  // reach at 76.7%: above the target plus a day's 10 points, below the
  // target plus 30. So no serving on battery.
  OwnerPolicy p = config().policy;
  p.target_soc_pct = 60.0;
  p.departures_minute_of_week = {to_local(car.now() + 20 * kHourMs, 0).minute_of_week()};
  car.set_policy(p);
  EXPECT_FALSE(car.agent().decision().eligible);
  EXPECT_TRUE(car.agent().decision().has(ReasonCode::kTargetUnreachable));
  EXPECT_NE(format_reasons(car.agent().decision()).find("plus 30% kept for driving"), std::string::npos)
      << format_reasons(car.agent().decision());
  // A target that leaves room for the 30 points (40 + 30 <= 76.7): it serves.
  p.target_soc_pct = 60.0 - 20.0;
  car.set_policy(p);
  EXPECT_TRUE(car.agent().decision().eligible) << format_reasons(car.agent().decision());
}

// A car never seen charging: when charge spent on battery would be replaced
// is unknown, so it keeps all of it. Once seen charging, how far it drives
// between charges is still unknown until a whole stretch has been seen: the
// default stays a floor, and the driving since the last charge (the open
// stretch) raises it as the days go by.
TEST(AgentMachine, TripReserveOfACarNeverSeenChargingKeepsTheBattery) {
  CarDays car(85.0);
  car.park(kHourMs, false);
  EXPECT_DOUBLE_EQ(car.reserve(), kSocPctMax);
  car.workday(2.0, 2.0, false);
  // Plugged in at home without the SoC rising (at its limit, or the
  // charger off) is no charge.
  car.workday(3.0, 3.0, /*plugged_at_home=*/true);
  EXPECT_DOUBLE_EQ(car.reserve(), kSocPctMax);
  EXPECT_TRUE(car.agent().stretches_driven_pct().empty());
  EXPECT_NEAR(car.agent().stretch_open_driven_pct(), 10.0, 1e-9);
  // A first charge ends a stretch whose start the agent did not see: it
  // counts toward the most (10), with the default as a floor (10).
  car.charge_to(80.0);
  EXPECT_NEAR(car.reserve(), AgentConfig{}.trip_reserve_pct_default, 1e-9);
  // Small drives: the 24 hour rule says 4 and then 5; the open stretch
  // grows past the default: 2 + 2 + 3 + 3 + 3 + 3.
  car.workday(2.0, 2.0, false);
  EXPECT_NEAR(car.reserve(), AgentConfig{}.trip_reserve_pct_default, 1e-9);
  car.workday(3.0, 3.0, false);
  car.workday(3.0, 3.0, false);
  EXPECT_NEAR(car.agent().stretch_open_driven_pct(), 16.0, 1e-9);
  EXPECT_NEAR(car.reserve(), 16.0, 1e-9);
  // That stretch, completed, is the most until newer ones push it out.
  car.charge_to(90.0);
  car.drive(1.0);
  car.charge_to(90.0);
  EXPECT_EQ(car.agent().stretches_driven_pct(), (std::vector<double>{10.0, 16.0, 1.0}));
  EXPECT_NEAR(car.reserve(), 16.0, 1e-9);
}

// A detour via a fast charger ends a stretch like a charge at home does: the
// reserve is the driving between the charges, not the whole trip's.
TEST(AgentMachine, TripReserveEndsAStretchAtAFastCharger) {
  CarDays car(70.0);
  car.charge_to(90.0);
  // Three long days, one drive each, 25 hours apart: 30 points in all.
  for (int day = 0; day < 3; ++day) {
    car.drive(10.0, 2 * kHourMs);
    car.park(23 * kHourMs, false);
  }
  EXPECT_NEAR(car.reserve(), 30.0, 1e-9);
  // On the way: under three hours at a (slow) fast charger, 52% -> 80%.
  car.drive(8.0, kHourMs);
  car.park(kMinuteMs, true);
  car.charge_to(80.0);
  car.drive(6.0, kHourMs);
  car.park(kHourMs, false);
  EXPECT_EQ(car.agent().stretches_driven_pct(), (std::vector<double>{38.0}));
  EXPECT_DOUBLE_EQ(car.agent().stretch_open_driven_pct(), 6.0);
  EXPECT_NEAR(car.reserve(), 38.0, 1e-9);
  // Later stretches between fast charges are shorter; the most stays until
  // kStretchesRemembered newer ones pushed it out.
  for (size_t i = 0; i < kStretchesRemembered; ++i) {
    car.drive(6.0, kHourMs);
    car.park(kMinuteMs, true);
    car.charge_to(80.0);
    car.park(25 * kHourMs, false);
  }
  std::vector<double> expected(kStretchesRemembered, 6.0);
  expected.front() = 12.0;  // the drive home from the first fast charge, and the next
  EXPECT_EQ(car.agent().stretches_driven_pct(), expected);
  // The detour day's drives (8 + 6 + 6 within a day) still bind the 24 hour rule.
  EXPECT_NEAR(car.reserve(), 20.0, 1e-9);
}

AssignMessage embed_assign(const std::string& job, uint32_t attempt) {
  AssignMessage a;
  a.job_id = job;
  a.attempt = attempt;
  a.model_id = "stories260K";
  a.prompt_ids = {1, 2, 3};
  a.kind = WorkKind::kEmbed;
  return a;
}

TEST(AgentMachine, OffersEmbeddingsOnlyWhenItsShellRunsThem) {
  AgentMachine plain(config());
  auto fx = plain.handle(ConnectedEvent{}, kT0);
  ASSERT_EQ(sent<HelloMessage>(fx).size(), 1u);
  EXPECT_FALSE(sent<HelloMessage>(fx)[0].embeddings);
  AgentConfig c = config();
  c.embeddings = true;
  AgentMachine able(c);
  fx = able.handle(ConnectedEvent{}, kT0);
  ASSERT_EQ(sent<HelloMessage>(fx).size(), 1u);
  EXPECT_TRUE(sent<HelloMessage>(fx)[0].embeddings);
}

TEST(AgentMachine, RunsAnEmbedAssignmentAndReportsItsVector) {
  AgentConfig c = config();
  c.embeddings = true;
  AgentMachine a(c);
  a.handle(SignalsEvent{parked_signals(kT0)}, kT0);
  auto fx = a.handle(CoordinatorMessageEvent{embed_assign("e1", 1)}, kT0 + 10);
  ASSERT_EQ(effects_of<StartEngineEffect>(fx).size(), 1u);
  EXPECT_EQ(effects_of<StartEngineEffect>(fx)[0].assign.kind, WorkKind::kEmbed);
  ASSERT_EQ(sent<StartedMessage>(fx).size(), 1u);
  EXPECT_EQ(a.state(), VehicleState::kServing);

  // Another attempt's vector, or one for a job not running here: refused.
  fx = a.handle(EngineEmbeddingEvent{"e1", 2, 3, {0.6f, 0.8f}}, kT0 + 15);
  EXPECT_TRUE(sent<EmbeddingMessage>(fx).empty());
  fx = a.handle(EngineEmbeddingEvent{"e1", 1, 3, {0.6f, 0.8f}}, kT0 + 20);
  ASSERT_EQ(sent<EmbeddingMessage>(fx).size(), 1u);
  const EmbeddingMessage m = sent<EmbeddingMessage>(fx)[0];
  EXPECT_EQ(m.job_id, "e1");
  EXPECT_EQ(m.attempt, 1u);
  EXPECT_EQ(m.tokens, 3u);
  EXPECT_EQ(m.values, std::vector<float>({0.6f, 0.8f}));
  EXPECT_FALSE(a.serving());
  EXPECT_EQ(a.counters().attempts_finished, 1u);
  ASSERT_FALSE(sent<StateMessage>(fx).empty());
  EXPECT_EQ(sent<StateMessage>(fx).back().job_id, "");
}

TEST(AgentMachine, AnEmbeddingTheProtocolCannotCarryIsAFailedAttempt) {
  AgentConfig c = config();
  c.embeddings = true;
  for (const std::vector<float>& values :
       {std::vector<float>{}, std::vector<float>{0.5f, std::numeric_limits<float>::quiet_NaN()},
        std::vector<float>(kEmbeddingValuesMax + 1, 0.0f)}) {
    AgentMachine a(c);
    a.handle(SignalsEvent{parked_signals(kT0)}, kT0);
    a.handle(CoordinatorMessageEvent{embed_assign("e1", 1)}, kT0 + 10);
    auto fx = a.handle(EngineEmbeddingEvent{"e1", 1, 3, values}, kT0 + 20);
    EXPECT_TRUE(sent<EmbeddingMessage>(fx).empty());
    ASSERT_EQ(sent<FailedMessage>(fx).size(), 1u) << values.size();
    EXPECT_FALSE(a.serving());
  }
}

TEST(AgentMachine, ADriverReturningDuringAnEmbeddingPreemptsIt) {
  AgentConfig c = config();
  c.embeddings = true;
  AgentMachine a(c);
  a.handle(SignalsEvent{parked_signals(kT0)}, kT0);
  a.handle(CoordinatorMessageEvent{embed_assign("e1", 1)}, kT0 + 10);
  VehicleSignals s = parked_signals(kT0 + 100);
  s.driver_door_open = true;
  auto fx = a.handle(SignalsEvent{s}, kT0 + 100);
  ASSERT_EQ(effects_of<StopEngineEffect>(fx).size(), 1u);
  // The engine stopped before it had a vector: preempted, with nothing kept.
  fx = a.handle(EngineStoppedEvent{"e1", 1, 0}, kT0 + 120);
  ASSERT_EQ(sent<PreemptedMessage>(fx).size(), 1u);
  EXPECT_EQ(sent<PreemptedMessage>(fx)[0].total_tokens, 0u);
  EXPECT_FALSE(a.serving());

  // An embedding that finished before the stop took effect is still sent:
  // the work is complete, and the coordinator decides.
  AgentMachine b(c);
  b.handle(SignalsEvent{parked_signals(kT0)}, kT0);
  b.handle(CoordinatorMessageEvent{embed_assign("e2", 1)}, kT0 + 10);
  b.handle(SignalsEvent{s}, kT0 + 100);
  fx = b.handle(EngineEmbeddingEvent{"e2", 1, 3, {1.0f}}, kT0 + 110);
  EXPECT_EQ(sent<EmbeddingMessage>(fx).size(), 1u);
  EXPECT_FALSE(b.serving());
}

}  // namespace
}  // namespace idlefleet::core::agent_machine_test
