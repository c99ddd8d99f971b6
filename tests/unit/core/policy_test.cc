// Owner policy and eligibility: each reason alone, combinations, validation
// of garbage policies, tariffs, and a seeded property test over random
// (signals, policy, now) triples.
#include "core/policy.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>

#include "common/random.h"

namespace idlefleet::core::policy_test {
namespace {

// 2026-11-27T10:00:00Z, a Friday; local time is UTC+1, so 11:00.
constexpr TimeMs kNow = 1795773600000;
constexpr int kOffset = 60;
constexpr int kFridayMinuteOfWeek = 4 * kMinutesPerDay;
constexpr int kMondayMinuteOfWeek = 0;
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// A car that may work: parked, plugged, empty, cool, half full, opted in,
// next departure Monday 07:30 local (days away, easily reachable on the plug).
EligibilityInputs good_inputs() {
  EligibilityInputs in;
  VehicleSignals& s = in.signals;
  s.speed_kmh = 0;
  s.gear = kGearPark;
  s.soc_pct = 60;
  s.is_charging = true;
  s.charger_connected = true;
  s.charger_power_kw = 7.4;
  s.driver_seat_occupied = false;
  s.driver_door_open = false;
  s.ambient_temperature_c = 18;
  s.accelerator_temperature_c = 55;
  s.heard_at = kNow - 10 * kSecondMs;
  in.policy.opted_in = true;
  in.policy.departures_minute_of_week = {kMondayMinuteOfWeek + 7 * 60 + 30};
  in.policy.tariff = Tariff::flat(250'000);
  in.policy.price_cap_micros_per_kwh = 300'000;
  in.utc_offset_minutes = kOffset;
  in.battery_capacity_kwh = 60;
  in.charge_power_kw = 7.0;
  in.inference_power_kw = 0.4;
  in.wear_used_hours = 12;
  return in;
}

// Asserts the decision is "not eligible" for exactly one reason, and returns its text.
std::string only_reason(const EligibilityDecision& d, ReasonCode code) {
  EXPECT_FALSE(d.eligible);
  EXPECT_EQ(d.reasons.size(), 1u) << format_reasons(d);
  if (d.reasons.size() != 1) return "";
  EXPECT_EQ(d.reasons[0].code, code) << reason_code_name(d.reasons[0].code) << ": " << d.reasons[0].text;
  EXPECT_FALSE(d.reasons[0].text.empty());
  return d.reasons[0].text;
}

TEST(CorePolicy, GoodInputsAreEligible) {
  const EligibilityInputs in = good_inputs();
  ASSERT_TRUE(in.validate()) << in.validate().error().to_string();
  const EligibilityDecision d = decide_eligibility(in, kNow);
  EXPECT_TRUE(d.eligible) << format_reasons(d);
  EXPECT_TRUE(d.reasons.empty());
  EXPECT_EQ(format_reasons(d), "eligible");
}

TEST(CorePolicy, DefaultsAreDocumentedValues) {
  const OwnerPolicy p;
  EXPECT_TRUE(p.validate());
  EXPECT_FALSE(p.opted_in);
  EXPECT_EQ(p.soc_floor_pct, 30.0);
  EXPECT_EQ(p.target_soc_pct, 80.0);
  EXPECT_EQ(p.accelerator_temp_limit_c, 85.0);
  EXPECT_EQ(p.departure_margin_ms, 30 * kMinuteMs);
  ASSERT_EQ(p.allowed_windows.size(), 1u);
  EXPECT_EQ(p.allowed_windows[0].start_minute_of_week, 0);
  EXPECT_EQ(p.allowed_windows[0].end_minute_of_week, kMinutesPerWeek);
  EXPECT_FALSE(p.price_cap_micros_per_kwh.has_value());
  EXPECT_TRUE(p.departures_minute_of_week.empty());
  // A default policy is not eligible only because the owner has not opted in.
  EligibilityInputs in = good_inputs();
  in.policy = OwnerPolicy{};
  only_reason(decide_eligibility(in, kNow), ReasonCode::kOptedOut);
}

TEST(CorePolicy, OptedOut) {
  EligibilityInputs in = good_inputs();
  in.policy.opted_in = false;
  only_reason(decide_eligibility(in, kNow), ReasonCode::kOptedOut);
}

TEST(CorePolicy, EachRequiredSignalMissing) {
  struct Case {
    const char* owner_name;
    void (*clear)(VehicleSignals*);
  };
  const Case cases[] = {
      {"speed", [](VehicleSignals* s) { s->speed_kmh.reset(); }},
      {"gear", [](VehicleSignals* s) { s->gear.reset(); }},
      {"battery charge", [](VehicleSignals* s) { s->soc_pct.reset(); }},
      {"charging cable", [](VehicleSignals* s) { s->charger_connected.reset(); }},
      {"driver's seat", [](VehicleSignals* s) { s->driver_seat_occupied.reset(); }},
      {"driver's door", [](VehicleSignals* s) { s->driver_door_open.reset(); }},
      {"AI computer temperature", [](VehicleSignals* s) { s->accelerator_temperature_c.reset(); }},
  };
  for (const Case& c : cases) {
    EligibilityInputs in = good_inputs();
    c.clear(&in.signals);
    const std::string text = only_reason(decide_eligibility(in, kNow), ReasonCode::kSignalsMissing);
    EXPECT_NE(text.find(c.owner_name), std::string::npos) << text;
  }
  // All missing at once: one reason naming them all.
  EligibilityInputs in = good_inputs();
  in.signals = VehicleSignals{};
  in.signals.heard_at = kNow;
  const std::string text = only_reason(decide_eligibility(in, kNow), ReasonCode::kSignalsMissing);
  EXPECT_NE(text.find("speed, gear"), std::string::npos) << text;
}

TEST(CorePolicy, InformationalSignalsMayBeMissing) {
  EligibilityInputs in = good_inputs();
  in.signals.is_charging.reset();
  in.signals.charger_power_kw.reset();
  in.signals.ambient_temperature_c.reset();
  EXPECT_TRUE(decide_eligibility(in, kNow).eligible);
}

TEST(CorePolicy, StaleSignals) {
  EligibilityInputs in = good_inputs();
  in.signals.heard_at.reset();
  EXPECT_EQ(only_reason(decide_eligibility(in, kNow), ReasonCode::kSignalsStale), "the car has not reported yet");

  in.signals.heard_at = kNow - in.signal_age_ms_max - kMinuteMs;
  EXPECT_EQ(only_reason(decide_eligibility(in, kNow), ReasonCode::kSignalsStale),
            "the car has not reported for 3 min (limit 2 min)");
  in.signals.heard_at = kNow - in.signal_age_ms_max - 1;
  only_reason(decide_eligibility(in, kNow), ReasonCode::kSignalsStale);
  in.signals.heard_at = kNow + in.signal_age_ms_max + 1;  // a feed clock far ahead
  EXPECT_EQ(only_reason(decide_eligibility(in, kNow), ReasonCode::kSignalsStale),
            "the car's last report is dated 2 min in the future");
  in.signals.heard_at = kNow - in.signal_age_ms_max;  // exactly at the limit: fresh
  EXPECT_TRUE(decide_eligibility(in, kNow).eligible);

  // A stale feed's values are not judged: no "occupied" from an old seat reading.
  in.signals.heard_at = kNow - kHourMs;
  in.signals.driver_seat_occupied = true;
  in.signals.speed_kmh = 40;
  only_reason(decide_eligibility(in, kNow), ReasonCode::kSignalsStale);
}

TEST(CorePolicy, NotParked) {
  EligibilityInputs in = good_inputs();
  in.signals.speed_kmh = 5;
  EXPECT_EQ(only_reason(decide_eligibility(in, kNow), ReasonCode::kNotParked), "the car is moving (5 km/h)");
  for (int gear : {kGearDrive, kGearNeutral, -1, 3}) {
    in = good_inputs();
    in.signals.gear = gear;
    const std::string text = only_reason(decide_eligibility(in, kNow), ReasonCode::kNotParked);
    EXPECT_NE(text.find("not in park"), std::string::npos) << text;
  }
  in = good_inputs();
  in.signals.gear = kGearDrive;
  in.signals.speed_kmh = 30;
  EXPECT_EQ(only_reason(decide_eligibility(in, kNow), ReasonCode::kNotParked),
            "the car is moving (30 km/h) in gear D");
}

TEST(CorePolicy, OccupiedAndDoorOpenAreSeparateReasons) {
  EligibilityInputs in = good_inputs();
  in.signals.driver_seat_occupied = true;
  only_reason(decide_eligibility(in, kNow), ReasonCode::kOccupied);
  in = good_inputs();
  in.signals.driver_door_open = true;
  only_reason(decide_eligibility(in, kNow), ReasonCode::kDoorOpen);
}

TEST(CorePolicy, SocFloorIsHardPluggedInOrNot) {
  EligibilityInputs in = good_inputs();
  in.signals.soc_pct = 28;
  EXPECT_EQ(only_reason(decide_eligibility(in, kNow), ReasonCode::kSocAtOrBelowFloor),
            "battery 28% is at or below your floor of 30%");
  in.signals.soc_pct = 30;
  only_reason(decide_eligibility(in, kNow), ReasonCode::kSocAtOrBelowFloor);
  in.signals.soc_pct = 30.1;
  EXPECT_TRUE(decide_eligibility(in, kNow).eligible);

  // On battery, above the floor and above the target with room to spare: eligible.
  in = good_inputs();
  in.signals.charger_connected = false;
  in.signals.is_charging = false;
  in.signals.soc_pct = 95;
  in.policy.departures_minute_of_week.clear();
  in.next_departure = kNow + 10 * kHourMs;
  EXPECT_TRUE(decide_eligibility(in, kNow).eligible) << format_reasons(decide_eligibility(in, kNow));
  // On battery with no departure known, only the floor guards the battery.
  in.next_departure.reset();
  in.signals.soc_pct = 31;
  EXPECT_TRUE(decide_eligibility(in, kNow).eligible);
  in.signals.soc_pct = 30;
  only_reason(decide_eligibility(in, kNow), ReasonCode::kSocAtOrBelowFloor);
}

TEST(CorePolicy, TargetUnreachablePluggedIn) {
  EligibilityInputs in = good_inputs();
  in.next_departure = kNow + kHourMs;  // deadline after the 30 min margin: 0.5 h
  // 60% + 100 * (7.0 - 0.4) kW * 0.5 h / 60 kWh = 65.5% < 80%.
  EXPECT_EQ(only_reason(decide_eligibility(in, kNow), ReasonCode::kTargetUnreachable),
            "working now would leave 65.5% by your departure (Fri 12:00), below your target of 80%");
  // A slow charger weaker than the accelerator: net drain, also unreachable.
  in = good_inputs();
  in.signals.soc_pct = 79;
  in.charge_power_kw = 0.3;
  only_reason(decide_eligibility(in, kNow), ReasonCode::kTargetUnreachable);
}

TEST(CorePolicy, TargetFormulaOnBatteryAtTheEdge) {
  EligibilityInputs in = good_inputs();
  in.policy.departures_minute_of_week.clear();
  in.signals.charger_connected = false;
  in.signals.is_charging = false;
  in.signals.soc_pct = 90;
  in.inference_power_kw = 0.6;
  in.policy.departure_margin_ms = 0;
  // 10 h at 0.6 kW from 60 kWh is 10%: exactly the target at the deadline.
  in.next_departure = kNow + 10 * kHourMs;
  EXPECT_TRUE(decide_eligibility(in, kNow).eligible) << format_reasons(decide_eligibility(in, kNow));
  in.next_departure = kNow + 10 * kHourMs + kMinuteMs;
  only_reason(decide_eligibility(in, kNow), ReasonCode::kTargetUnreachable);
}

// On battery the car keeps drawing power while it waits out the margin, and
// the owner wants the target when it leaves: the drain counts up to the
// departure. Charging, plugged in, counts only up to the deadline.
TEST(CorePolicy, TargetOnBatteryHoldsAtTheDepartureNotTheDeadline) {
  EligibilityInputs in = good_inputs();
  in.policy.departures_minute_of_week.clear();
  in.signals.charger_connected = false;
  in.signals.is_charging = false;
  in.signals.soc_pct = 90;
  in.inference_power_kw = 0.6;
  in.policy.departure_margin_ms = kHourMs;
  // 10 h at 0.6 kW from 60 kWh is 10%: exactly the target as the car leaves.
  in.next_departure = kNow + 10 * kHourMs;
  EXPECT_TRUE(decide_eligibility(in, kNow).eligible) << format_reasons(decide_eligibility(in, kNow));
  // At the deadline (9 h) 81% would be left, but less than 80% at the departure.
  in.next_departure = kNow + 10 * kHourMs + kMinuteMs;
  only_reason(decide_eligibility(in, kNow), ReasonCode::kTargetUnreachable);

  in = good_inputs();
  in.policy.departures_minute_of_week.clear();
  in.policy.departure_margin_ms = kHourMs;
  // 60% + 100 * (7.0 - 0.4) kW * 2 h / 60 kWh = 82% at a deadline 2 h away.
  in.next_departure = kNow + 3 * kHourMs;
  EXPECT_TRUE(decide_eligibility(in, kNow).eligible) << format_reasons(decide_eligibility(in, kNow));
  // 79.25% at a deadline 1.75 h away, though the car charges on through the margin.
  in.next_departure = kNow + kHourMs + 105 * kMinuteMs;
  only_reason(decide_eligibility(in, kNow), ReasonCode::kTargetUnreachable);
}

TEST(CorePolicy, DepartureSoon) {
  EligibilityInputs in = good_inputs();
  in.next_departure = kNow + 20 * kMinuteMs;
  EXPECT_EQ(only_reason(decide_eligibility(in, kNow), ReasonCode::kDepartureSoon),
            "your next departure (Fri 11:20) is within the 30 min margin");
  // A declared departure 10 minutes from now (local Friday 11:10).
  in = good_inputs();
  in.policy.departures_minute_of_week = {kFridayMinuteOfWeek + 11 * 60 + 10};
  only_reason(decide_eligibility(in, kNow), ReasonCode::kDepartureSoon);
  // A predicted departure that has passed says nothing about the future.
  in = good_inputs();
  in.next_departure = kNow - kMinuteMs;
  EXPECT_TRUE(decide_eligibility(in, kNow).eligible);
  // The earlier of predicted and declared counts.
  in.next_departure = kNow + 5 * kDayMs;
  in.policy.departures_minute_of_week = {kFridayMinuteOfWeek + 11 * 60 + 10};
  only_reason(decide_eligibility(in, kNow), ReasonCode::kDepartureSoon);
}

TEST(CorePolicy, AcceleratorTooHot) {
  EligibilityInputs in = good_inputs();
  in.signals.accelerator_temperature_c = 85;
  EXPECT_EQ(only_reason(decide_eligibility(in, kNow), ReasonCode::kAcceleratorTooHot),
            "the AI computer is at 85 °C, at or above your limit of 85 °C");
  in.signals.accelerator_temperature_c = 84.9;
  EXPECT_TRUE(decide_eligibility(in, kNow).eligible);
}

TEST(CorePolicy, OutsideAllowedHours) {
  EligibilityInputs in = good_inputs();
  // Weekends only; now is Friday 11:00 local.
  in.policy.allowed_windows = {{5 * kMinutesPerDay, kMinutesPerWeek}};
  EXPECT_EQ(only_reason(decide_eligibility(in, kNow), ReasonCode::kOutsideAllowedHours),
            "it is outside your allowed hours (now Fri 11:00)");
  // Friday 11:00 local is inside [Fri 11:00, Fri 11:01) but not [Fri 10:00, Fri 11:00).
  in.policy.allowed_windows = {{kFridayMinuteOfWeek + 660, kFridayMinuteOfWeek + 661}};
  EXPECT_TRUE(decide_eligibility(in, kNow).eligible);
  in.policy.allowed_windows = {{kFridayMinuteOfWeek + 600, kFridayMinuteOfWeek + 660}};
  only_reason(decide_eligibility(in, kNow), ReasonCode::kOutsideAllowedHours);
  in.policy.allowed_windows.clear();  // never
  only_reason(decide_eligibility(in, kNow), ReasonCode::kOutsideAllowedHours);
}

TEST(CorePolicy, PriceAboveCap) {
  EligibilityInputs in = good_inputs();
  in.policy.tariff = Tariff::flat(350'000);
  EXPECT_EQ(only_reason(decide_eligibility(in, kNow), ReasonCode::kPriceAboveCap),
            "electricity costs 0.35 per kWh now, above your cap of 0.30");
  in.policy.tariff = Tariff::flat(300'000);  // at the cap: allowed
  EXPECT_TRUE(decide_eligibility(in, kNow).eligible);
  in.policy.price_cap_micros_per_kwh.reset();  // no cap
  in.policy.tariff = Tariff::flat(9'000'000);
  EXPECT_TRUE(decide_eligibility(in, kNow).eligible);
  // Time of use: peak 07:00-22:00 on weekdays; now Friday 11:00 local.
  in.policy.price_cap_micros_per_kwh = 200'000;
  in.policy.tariff = Tariff::time_of_use({{0, 100'000}, {7 * 60, 400'000}, {22 * 60, 100'000}}, {{0, 150'000}});
  only_reason(decide_eligibility(in, kNow), ReasonCode::kPriceAboveCap);
  // The same instant seen from UTC-12 is Thursday 22:00: off-peak.
  in.utc_offset_minutes = -12 * 60;
  in.policy.departures_minute_of_week.clear();
  EXPECT_TRUE(decide_eligibility(in, kNow).eligible) << format_reasons(decide_eligibility(in, kNow));
}

TEST(CorePolicy, WearBudgetUsed) {
  EligibilityInputs in = good_inputs();
  in.wear_used_hours = 300;
  EXPECT_EQ(only_reason(decide_eligibility(in, kNow), ReasonCode::kWearBudgetUsed),
            "this month's wear budget of 300 accelerator-hours is used up (300 h)");
  in.wear_used_hours = 299.9;
  EXPECT_TRUE(decide_eligibility(in, kNow).eligible);
}

TEST(CorePolicy, InvalidInputsAreTheOnlyReason) {
  EligibilityInputs in = good_inputs();
  in.policy.opted_in = false;  // would be a reason, but nothing is judged on invalid inputs
  in.battery_capacity_kwh = kNaN;
  std::string text = only_reason(decide_eligibility(in, kNow), ReasonCode::kInvalidInputs);
  EXPECT_NE(text.find("battery_capacity_kwh"), std::string::npos) << text;

  in = good_inputs();
  in.policy.soc_floor_pct = 90;
  text = only_reason(decide_eligibility(in, kNow), ReasonCode::kInvalidInputs);
  EXPECT_NE(text.find("soc_floor_pct"), std::string::npos) << text;

  in = good_inputs();
  in.signals.soc_pct = kNaN;
  only_reason(decide_eligibility(in, kNow), ReasonCode::kInvalidInputs);

  in = good_inputs();
  only_reason(decide_eligibility(in, -1), ReasonCode::kInvalidInputs);
  only_reason(decide_eligibility(in, kPlausibleTimeMsMax + 1), ReasonCode::kInvalidInputs);
}

TEST(CorePolicy, InputValidationNamesTheField) {
  struct Case {
    const char* field;
    void (*breakit)(EligibilityInputs*);
  };
  const Case cases[] = {
      {"utc_offset_minutes", [](EligibilityInputs* in) { in->utc_offset_minutes = 15 * 60; }},
      {"battery_capacity_kwh", [](EligibilityInputs* in) { in->battery_capacity_kwh = 0; }},
      {"battery_capacity_kwh", [](EligibilityInputs* in) { in->battery_capacity_kwh = 501; }},
      {"charge_power_kw", [](EligibilityInputs* in) { in->charge_power_kw = -1; }},
      {"charge_power_kw", [](EligibilityInputs* in) { in->charge_power_kw = kNaN; }},
      {"inference_power_kw", [](EligibilityInputs* in) { in->inference_power_kw = 11; }},
      {"inference_power_kw", [](EligibilityInputs* in) { in->inference_power_kw = INFINITY; }},
      {"wear_used_hours", [](EligibilityInputs* in) { in->wear_used_hours = -0.5; }},
      {"next_departure", [](EligibilityInputs* in) { in->next_departure = -1; }},
      {"signal_age_ms_max", [](EligibilityInputs* in) { in->signal_age_ms_max = -1; }},
      {"signal_age_ms_max", [](EligibilityInputs* in) { in->signal_age_ms_max = 2 * kHourMs; }},
  };
  for (const Case& c : cases) {
    EligibilityInputs in = good_inputs();
    c.breakit(&in);
    const Status st = in.validate();
    ASSERT_FALSE(st) << c.field;
    EXPECT_NE(st.error().message.find(c.field), std::string::npos) << st.error().message;
  }
}

TEST(CorePolicy, Combinations) {
  EligibilityInputs in = good_inputs();
  in.policy.opted_in = false;
  in.signals.speed_kmh = 12;
  in.signals.gear = kGearDrive;
  in.signals.driver_seat_occupied = true;
  in.signals.driver_door_open = true;
  in.signals.soc_pct = 20;
  in.signals.accelerator_temperature_c = 90;
  in.policy.allowed_windows = {{0, 60}};
  in.policy.tariff = Tariff::flat(1'000'000);
  in.wear_used_hours = 500;
  in.next_departure = kNow + kHourMs;
  const EligibilityDecision d = decide_eligibility(in, kNow);
  EXPECT_FALSE(d.eligible);
  const ReasonCode expected[] = {ReasonCode::kOptedOut,          ReasonCode::kNotParked,
                                 ReasonCode::kOccupied,          ReasonCode::kDoorOpen,
                                 ReasonCode::kSocAtOrBelowFloor, ReasonCode::kTargetUnreachable,
                                 ReasonCode::kAcceleratorTooHot, ReasonCode::kOutsideAllowedHours,
                                 ReasonCode::kPriceAboveCap,     ReasonCode::kWearBudgetUsed};
  ASSERT_EQ(d.reasons.size(), std::size(expected)) << format_reasons(d);
  for (size_t i = 0; i < std::size(expected); ++i) EXPECT_EQ(d.reasons[i].code, expected[i]) << i;
  const std::string line = format_reasons(d);
  EXPECT_NE(line.find("you have not opted in to earning with this car; the car is moving (12 km/h) in gear D; "),
            std::string::npos)
      << line;

  // Stale signals skip what they would feed, but not what they do not.
  in.signals.heard_at.reset();
  const EligibilityDecision stale = decide_eligibility(in, kNow);
  const ReasonCode expected_stale[] = {ReasonCode::kOptedOut, ReasonCode::kSignalsStale,
                                       ReasonCode::kOutsideAllowedHours, ReasonCode::kPriceAboveCap,
                                       ReasonCode::kWearBudgetUsed};
  ASSERT_EQ(stale.reasons.size(), std::size(expected_stale)) << format_reasons(stale);
  for (size_t i = 0; i < std::size(expected_stale); ++i) EXPECT_EQ(stale.reasons[i].code, expected_stale[i]) << i;

  // Missing signals skip only the checks that need them.
  in = good_inputs();
  in.signals.accelerator_temperature_c.reset();
  in.signals.driver_seat_occupied = true;
  const EligibilityDecision missing = decide_eligibility(in, kNow);
  ASSERT_EQ(missing.reasons.size(), 2u) << format_reasons(missing);
  EXPECT_TRUE(missing.has(ReasonCode::kSignalsMissing));
  EXPECT_TRUE(missing.has(ReasonCode::kOccupied));
  EXPECT_FALSE(missing.has(ReasonCode::kAcceleratorTooHot));
}

TEST(CorePolicy, PolicyValidationRejectsGarbage) {
  struct Case {
    const char* field;
    void (*breakit)(OwnerPolicy*);
  };
  const Case cases[] = {
      {"soc_floor_pct", [](OwnerPolicy* p) { p->soc_floor_pct = kNaN; }},
      {"soc_floor_pct", [](OwnerPolicy* p) { p->soc_floor_pct = -1; }},
      {"soc_floor_pct", [](OwnerPolicy* p) { p->soc_floor_pct = 85; }},  // above target
      {"target_soc_pct", [](OwnerPolicy* p) { p->target_soc_pct = 100.5; }},
      {"target_soc_pct", [](OwnerPolicy* p) { p->target_soc_pct = -INFINITY; }},
      {"departures_minute_of_week", [](OwnerPolicy* p) { p->departures_minute_of_week = {600, 500}; }},
      {"departures_minute_of_week", [](OwnerPolicy* p) { p->departures_minute_of_week = {600, 600}; }},
      {"departures_minute_of_week", [](OwnerPolicy* p) { p->departures_minute_of_week = {kMinutesPerWeek}; }},
      {"departures_minute_of_week", [](OwnerPolicy* p) { p->departures_minute_of_week = {-1}; }},
      {"departures_minute_of_week",
       [](OwnerPolicy* p) {
         p->departures_minute_of_week.clear();
         for (int i = 0; i <= static_cast<int>(kDeparturesMax); ++i) p->departures_minute_of_week.push_back(i);
       }},
      {"departure_margin_ms", [](OwnerPolicy* p) { p->departure_margin_ms = -1; }},
      {"departure_margin_ms", [](OwnerPolicy* p) { p->departure_margin_ms = 2 * kDayMs; }},
      {"accelerator_temp_limit_c", [](OwnerPolicy* p) { p->accelerator_temp_limit_c = kNaN; }},
      {"accelerator_temp_limit_c", [](OwnerPolicy* p) { p->accelerator_temp_limit_c = 200; }},
      {"allowed_windows", [](OwnerPolicy* p) { p->allowed_windows = {{100, 200}, {150, 300}}; }},  // overlap
      {"allowed_windows", [](OwnerPolicy* p) { p->allowed_windows = {{300, 400}, {100, 200}}; }},  // unsorted
      {"allowed_windows", [](OwnerPolicy* p) { p->allowed_windows = {{200, 200}}; }},              // empty
      {"allowed_windows", [](OwnerPolicy* p) { p->allowed_windows = {{-5, 200}}; }},
      {"allowed_windows", [](OwnerPolicy* p) { p->allowed_windows = {{0, kMinutesPerWeek + 1}}; }},
      {"allowed_windows",
       [](OwnerPolicy* p) {
         p->allowed_windows.clear();
         for (int i = 0; i <= static_cast<int>(kAllowedWindowsMax); ++i) p->allowed_windows.push_back({2 * i, 2 * i + 1});
       }},
      {"price_cap_micros_per_kwh", [](OwnerPolicy* p) { p->price_cap_micros_per_kwh = INT64_MAX; }},
      {"tariff.flat_micros_per_kwh", [](OwnerPolicy* p) { p->tariff = Tariff::flat(INT64_MIN); }},
      {"tariff.weekday", [](OwnerPolicy* p) { p->tariff = Tariff::time_of_use({{0, 1}, {600, 2}, {300, 3}}, {{0, 1}}); }},
      {"tariff.weekday", [](OwnerPolicy* p) { p->tariff = Tariff::time_of_use({{0, 1}, {600, 2}, {600, 3}}, {{0, 1}}); }},
      {"tariff.weekend", [](OwnerPolicy* p) { p->tariff = Tariff::time_of_use({{0, 1}}, {{60, 1}}); }},
      {"tariff.weekend", [](OwnerPolicy* p) { p->tariff = Tariff::time_of_use({{0, 1}}, {}); }},
      {"tariff.weekday", [](OwnerPolicy* p) { p->tariff = Tariff::time_of_use({{0, 1}, {kMinutesPerDay, 2}}, {{0, 1}}); }},
      {"tariff.weekday",
       [](OwnerPolicy* p) { p->tariff = Tariff::time_of_use({{0, 1}, {60, kPriceMicrosPerKwhAbsMax + 1}}, {{0, 1}}); }},
      {"tariff.weekday",
       [](OwnerPolicy* p) {
         std::vector<TariffEntry> many;
         for (int i = 0; i <= static_cast<int>(kTariffEntriesPerDayMax); ++i) many.push_back({i * 20, 1});
         p->tariff = Tariff::time_of_use(many, {{0, 1}});
       }},
      {"tariff.kind", [](OwnerPolicy* p) { p->tariff.kind = static_cast<Tariff::Kind>(7); }},
      {"wear_budget_hours_per_month", [](OwnerPolicy* p) { p->wear_budget_hours_per_month = -1; }},
      {"wear_budget_hours_per_month", [](OwnerPolicy* p) { p->wear_budget_hours_per_month = kNaN; }},
  };
  for (const Case& c : cases) {
    OwnerPolicy p;
    c.breakit(&p);
    const Status st = p.validate();
    ASSERT_FALSE(st) << c.field;
    EXPECT_NE(st.error().message.find(c.field), std::string::npos) << c.field << ": " << st.error().message;
  }
  // Limits themselves are fine.
  OwnerPolicy p;
  p.soc_floor_pct = 0;
  p.target_soc_pct = 100;
  p.departures_minute_of_week.clear();
  for (int i = 0; i < static_cast<int>(kDeparturesMax); ++i) p.departures_minute_of_week.push_back(i * 100);
  p.allowed_windows = {{0, 10}, {10, 20}, {kMinutesPerWeek - 1, kMinutesPerWeek}};  // touching is not overlapping
  p.soc_floor_pct = p.target_soc_pct;
  EXPECT_TRUE(p.validate()) << p.validate().error().to_string();
}

TEST(CorePolicy, PriceAt) {
  EXPECT_EQ(price_at(Tariff::flat(123), LocalTime{Weekday::kSunday, 5}), 123);
  const Tariff t = Tariff::time_of_use({{0, 100}, {7 * 60, 400}, {22 * 60, 100}}, {{0, 50}, {12 * 60, 60}});
  ASSERT_TRUE(t.validate());
  EXPECT_EQ(price_at(t, LocalTime{Weekday::kMonday, 0}), 100);
  EXPECT_EQ(price_at(t, LocalTime{Weekday::kMonday, 7 * 60 - 1}), 100);
  EXPECT_EQ(price_at(t, LocalTime{Weekday::kMonday, 7 * 60}), 400);
  EXPECT_EQ(price_at(t, LocalTime{Weekday::kFriday, 22 * 60 - 1}), 400);
  EXPECT_EQ(price_at(t, LocalTime{Weekday::kFriday, 22 * 60}), 100);
  EXPECT_EQ(price_at(t, LocalTime{Weekday::kFriday, 1439}), 100);
  EXPECT_EQ(price_at(t, LocalTime{Weekday::kSaturday, 0}), 50);
  EXPECT_EQ(price_at(t, LocalTime{Weekday::kSunday, 12 * 60}), 60);
  EXPECT_EQ(price_at(t, LocalTime{Weekday::kSunday, 1439}), 60);
}

TEST(CorePolicy, NextDeclaredDeparture) {
  OwnerPolicy p;
  EXPECT_FALSE(next_declared_departure(p, kNow, kOffset).has_value());
  // Monday 07:30 and Friday 18:00 local; now is Friday 11:00 local.
  p.departures_minute_of_week = {7 * 60 + 30, kFridayMinuteOfWeek + 18 * 60};
  const std::optional<TimeMs> next = next_declared_departure(p, kNow, kOffset);
  ASSERT_TRUE(next.has_value());
  EXPECT_EQ(*next, kNow + 7 * kHourMs);
}

TEST(CorePolicy, ReasonCodeNames) {
  EXPECT_STREQ(reason_code_name(ReasonCode::kOptedOut), "opted_out");
  EXPECT_STREQ(reason_code_name(ReasonCode::kWearBudgetUsed), "wear_budget_used");
  for (int c = 1; c <= 14; ++c) EXPECT_STRNE(reason_code_name(static_cast<ReasonCode>(c)), "unknown") << c;
}

// ---- Seeded property test ------------------------------------------------

double uniform(Rng& rng, double lo, double hi) { return lo + (hi - lo) * rng.uniform(); }
bool chance(Rng& rng, double p) { return rng.uniform() < p; }

// Random but valid inputs, biased so that each check passes most of the time
// and a good share of the decisions come out eligible.
EligibilityInputs random_inputs(Rng& rng, TimeMs now) {
  EligibilityInputs in;
  VehicleSignals& s = in.signals;
  if (chance(rng, 0.97)) s.speed_kmh = chance(rng, 0.9) ? 0.0 : uniform(rng, -20, 130);
  if (chance(rng, 0.97)) {
    s.gear = chance(rng, 0.9) ? kGearPark
                              : static_cast<int>(rng.below(kGearForwardMax - kGearReverseMin + 1)) + kGearReverseMin;
  }
  if (chance(rng, 0.97)) s.soc_pct = uniform(rng, 0, 100);
  if (chance(rng, 0.97)) s.is_charging = chance(rng, 0.5);
  if (chance(rng, 0.97)) s.charger_connected = chance(rng, 0.8);
  if (chance(rng, 0.97)) s.charger_power_kw = uniform(rng, 0, 22);
  if (chance(rng, 0.97)) s.driver_seat_occupied = chance(rng, 0.1);
  if (chance(rng, 0.97)) s.driver_door_open = chance(rng, 0.1);
  if (chance(rng, 0.97)) s.ambient_temperature_c = uniform(rng, -30, 45);
  if (chance(rng, 0.97)) s.accelerator_temperature_c = uniform(rng, 10, 95);
  if (chance(rng, 0.97)) {
    s.heard_at = now - static_cast<TimeMs>(rng.below(3 * kMinuteMs)) + (chance(rng, 0.1) ? 2 * kMinuteMs : 0);
  }

  OwnerPolicy& p = in.policy;
  p.opted_in = chance(rng, 0.9);
  p.soc_floor_pct = uniform(rng, 0, 50);
  p.target_soc_pct = uniform(rng, p.soc_floor_pct, 100);
  const int departures = static_cast<int>(rng.below(6));
  int minute = 0;
  for (int i = 0; i < departures; ++i) {
    minute += 1 + static_cast<int>(rng.below(kMinutesPerWeek / 6));
    if (minute >= kMinutesPerWeek) break;
    p.departures_minute_of_week.push_back(minute);
  }
  p.departure_margin_ms = static_cast<DurationMs>(rng.below(61)) * kMinuteMs;
  p.accelerator_temp_limit_c = uniform(rng, 60, 100);
  if (chance(rng, 0.3)) {
    p.allowed_windows.clear();
    int start = static_cast<int>(rng.below(kMinutesPerWeek / 2));
    for (int i = 0; i < 4 && start < kMinutesPerWeek - 1; ++i) {
      const int end = start + 1 + static_cast<int>(rng.below(static_cast<uint64_t>(kMinutesPerWeek - start - 1)));
      p.allowed_windows.push_back({start, end});
      start = end + static_cast<int>(rng.below(600));
    }
  }
  if (chance(rng, 0.5)) p.price_cap_micros_per_kwh = static_cast<int64_t>(rng.below(600'000));
  if (chance(rng, 0.5)) {
    p.tariff = Tariff::flat(static_cast<int64_t>(rng.below(500'000)));
  } else {
    auto schedule = [&rng] {
      std::vector<TariffEntry> e;
      int start = 0;
      while (start < kMinutesPerDay && e.size() < 6) {
        e.push_back({start, static_cast<int64_t>(rng.below(700'000)) - 50'000});
        start += 1 + static_cast<int>(rng.below(600));
      }
      return e;
    };
    p.tariff = Tariff::time_of_use(schedule(), schedule());
  }
  p.wear_budget_hours_per_month = uniform(rng, 0, 400);

  in.utc_offset_minutes = static_cast<int>(rng.below(kUtcOffsetMinutesMax - kUtcOffsetMinutesMin + 1)) +
                          kUtcOffsetMinutesMin;
  in.battery_capacity_kwh = uniform(rng, 20, 120);
  in.charge_power_kw = uniform(rng, 0, 22);
  in.inference_power_kw = uniform(rng, 0.05, 1.5);
  in.wear_used_hours = uniform(rng, 0, 300);
  if (chance(rng, 0.5)) in.next_departure = now + static_cast<TimeMs>(rng.below(3 * kDayMs)) - kHourMs;
  return in;
}

TEST(CorePolicy, PropertyEligibleImpliesEveryLimitHolds) {
  constexpr uint64_t kSeed = 0x1d1ef1ee7;
  constexpr int kTrials = 20'000;
  Rng rng(kSeed);
  int eligible = 0;
  for (int trial = 0; trial < kTrials; ++trial) {
    // Any instant in 2025-2027.
    const TimeMs now = 1'735'689'600'000 + static_cast<TimeMs>(rng.below(3 * 365 * kDayMs));
    const EligibilityInputs in = random_inputs(rng, now);
    ASSERT_TRUE(in.validate()) << "trial " << trial << ": " << in.validate().error().to_string();
    const EligibilityDecision d = decide_eligibility(in, now);
    SCOPED_TRACE("seed " + std::to_string(kSeed) + " trial " + std::to_string(trial) + ": " + format_reasons(d));

    // Reasons: present exactly when not eligible, in code order, each once.
    ASSERT_EQ(d.eligible, d.reasons.empty());
    for (size_t i = 1; i < d.reasons.size(); ++i) ASSERT_LT(d.reasons[i - 1].code, d.reasons[i].code);
    if (!d.eligible) continue;
    ++eligible;

    const VehicleSignals& s = in.signals;
    const OwnerPolicy& p = in.policy;
    const LocalTime local = to_local(now, in.utc_offset_minutes);
    ASSERT_TRUE(p.opted_in);
    ASSERT_TRUE(s.heard_at && std::llabs(now - *s.heard_at) <= in.signal_age_ms_max);
    ASSERT_NE(physical_state(s), VehicleState::kDriving);
    ASSERT_EQ(*s.gear, kGearPark);
    ASSERT_EQ(*s.speed_kmh, 0.0);
    ASSERT_FALSE(*s.driver_seat_occupied);
    ASSERT_FALSE(*s.driver_door_open);
    ASSERT_GT(*s.soc_pct, p.soc_floor_pct);
    ASSERT_LT(*s.accelerator_temperature_c, p.accelerator_temp_limit_c);
    bool within = false;
    for (const WeeklyWindow& w : p.allowed_windows) {
      within = within || (local.minute_of_week() >= w.start_minute_of_week && local.minute_of_week() < w.end_minute_of_week);
    }
    ASSERT_TRUE(within);
    if (p.price_cap_micros_per_kwh) {
      ASSERT_LE(price_at(p.tariff, local), *p.price_cap_micros_per_kwh);
    }
    ASSERT_LT(in.wear_used_hours, p.wear_budget_hours_per_month);

    // The target holds at the next departure, declared or predicted (the car
    // leaves then; later departures start from whatever it charges meanwhile).
    std::optional<TimeMs> next;
    for (int m : p.departures_minute_of_week) {
      const TimeMs t = next_local_minute_of_week(now, in.utc_offset_minutes, m);
      if (!next || t < *next) next = t;
    }
    if (in.next_departure && *in.next_departure >= now && (!next || *in.next_departure < *next)) {
      next = in.next_departure;
    }
    if (next) {
      const TimeMs deadline = *next - p.departure_margin_ms;
      ASSERT_LT(now, deadline);
      const double hours = static_cast<double>(deadline - now) / static_cast<double>(kHourMs);
      const double net_kw = (*s.charger_connected ? in.charge_power_kw : 0.0) - in.inference_power_kw;
      ASSERT_GE(*s.soc_pct + 100.0 * net_kw * hours / in.battery_capacity_kwh, p.target_soc_pct);
    }
  }
  // The property must not hold vacuously.
  RecordProperty("eligible_decisions", eligible);
  EXPECT_GT(eligible, kTrials / 50) << eligible;
}

// Garbage in: every decision is either judged or refused as invalid, never a crash.
TEST(CorePolicy, PropertyGarbageNeverCrashes) {
  Rng rng(42);
  const double specials[] = {kNaN, INFINITY, -INFINITY, -1e300, 1e300, -0.0, 0.0, 1e-300};
  auto garbage = [&](double normal) { return chance(rng, 0.05) ? specials[rng.below(std::size(specials))] : normal; };
  int invalid = 0;
  for (int trial = 0; trial < 5'000; ++trial) {
    const TimeMs now = chance(rng, 0.02) ? static_cast<TimeMs>(rng.next()) : kNow;
    EligibilityInputs in = random_inputs(rng, kNow);
    in.battery_capacity_kwh = garbage(in.battery_capacity_kwh);
    in.charge_power_kw = garbage(in.charge_power_kw);
    in.inference_power_kw = garbage(in.inference_power_kw);
    in.wear_used_hours = garbage(in.wear_used_hours);
    in.policy.soc_floor_pct = garbage(in.policy.soc_floor_pct);
    in.policy.target_soc_pct = garbage(in.policy.target_soc_pct);
    in.policy.accelerator_temp_limit_c = garbage(in.policy.accelerator_temp_limit_c);
    in.policy.wear_budget_hours_per_month = garbage(in.policy.wear_budget_hours_per_month);
    if (in.signals.soc_pct) in.signals.soc_pct = garbage(*in.signals.soc_pct);
    if (in.signals.speed_kmh) in.signals.speed_kmh = garbage(*in.signals.speed_kmh);
    if (chance(rng, 0.02)) in.signals.heard_at = static_cast<TimeMs>(rng.next());
    if (chance(rng, 0.02)) in.next_departure = static_cast<TimeMs>(rng.next());
    if (chance(rng, 0.02)) in.utc_offset_minutes = static_cast<int>(rng.next());
    if (chance(rng, 0.02)) in.policy.departure_margin_ms = static_cast<DurationMs>(rng.next());
    if (chance(rng, 0.02)) in.signals.gear = static_cast<int>(rng.next());
    const EligibilityDecision d = decide_eligibility(in, now);
    if (d.has(ReasonCode::kInvalidInputs)) {
      ++invalid;
      ASSERT_EQ(d.reasons.size(), 1u);
      ASSERT_FALSE(d.eligible);
    }
  }
  EXPECT_GT(invalid, 100);
}

}  // namespace
}  // namespace idlefleet::core::policy_test
