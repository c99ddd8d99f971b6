// One simulated vehicle's month (sim/vehicle_month.h): deterministic, the
// hours and the money add up, the owner's limits bind, and bad parameters
// are refused by name.
#include "sim/vehicle_month.h"

#include <gtest/gtest.h>

#include "core/energy.h"
#include "support/sanitized.h"

namespace idlefleet::sim::vehicle_month_test {
namespace {

VehicleMonthParams params(int days = 7) {
  VehicleMonthParams p;
  p.days = days;
  p.policy.opted_in = true;
  p.policy.tariff = core::Tariff::flat(250'000);
  return p;
}

void expect_same(const MonthTotals& a, const MonthTotals& b) {
  EXPECT_EQ(a.hours_serving, b.hours_serving);
  EXPECT_EQ(a.hours_eligible, b.hours_eligible);
  EXPECT_EQ(a.jobs_done, b.jobs_done);
  EXPECT_EQ(a.attempts_preempted, b.attempts_preempted);
  EXPECT_EQ(a.tokens_out, b.tokens_out);
  EXPECT_EQ(a.energy_kwh, b.energy_kwh);
  EXPECT_EQ(a.net_micros(), b.net_micros());
}

// The release build simulates a week per run below. Under the sanitizers each
// simulated minute is many times slower, so these two tests simulate two
// days (the month starts on a Sunday: a weekend day and a working day).
const int kSanitizedDays = 2;

TEST(VehicleMonth, TheSameParametersGiveTheSameMonth) {
  const int days = testing::kSanitized ? kSanitizedDays : 7;
  auto a = simulate_vehicle_month(params(days));
  auto b = simulate_vehicle_month(params(days));
  ASSERT_TRUE(a.has_value()) << a.error().to_string();
  ASSERT_TRUE(b.has_value());
  expect_same(a->total, b->total);
  EXPECT_EQ(a->trips, b->trips);
  VehicleMonthParams other = params(days);
  other.vehicle.seed = 2;
  auto c = simulate_vehicle_month(other);
  ASSERT_TRUE(c.has_value());
  EXPECT_NE(c->total.hours_driving, a->total.hours_driving) << "another car, another schedule";
}

TEST(VehicleMonth, HoursAndMoneyAddUp) {
  auto r = simulate_vehicle_month(params());
  ASSERT_TRUE(r.has_value()) << r.error().to_string();
  const MonthTotals& t = r->total;
  EXPECT_NEAR(t.hours_driving + t.hours_parked, 7 * 24.0, 1e-6);
  EXPECT_LE(t.hours_serving, t.hours_eligible + 1e-9);
  EXPECT_LE(t.hours_eligible, t.hours_parked + 1e-9);
  EXPECT_GT(t.hours_serving, 24.0) << "a commuter's car parked at home overnight works";
  EXPECT_GT(r->trips, 5u);
  // Tokens: what the stated rate gives in the hours worked, less prefill.
  EXPECT_LE(static_cast<double>(t.tokens_out), t.hours_serving * 3600 * 30.0 + 1);
  EXPECT_GT(static_cast<double>(t.tokens_out), t.hours_serving * 3600 * 30.0 * 0.9);
  // Energy: the 60 W computer for the hours it worked (the meter rounds up).
  EXPECT_NEAR(t.energy_kwh, t.hours_serving * 0.060, 0.01 * t.energy_kwh);
  // A flat tariff refunds exactly what the energy cost, give or take rounding per job.
  EXPECT_NEAR(static_cast<double>(t.energy_refund_micros), static_cast<double>(t.energy_cost_micros),
              static_cast<double>(t.jobs_done + t.attempts_preempted) + 1);
  // The owner gets 60% of what clients paid for this car's part.
  EXPECT_NEAR(static_cast<double>(t.revenue_share_micros), 0.6 * static_cast<double>(t.client_paid_micros),
              0.001 * static_cast<double>(t.client_paid_micros) + 10);
  EXPECT_EQ(t.net_micros(), t.revenue_share_micros + t.energy_refund_micros + t.wear_allowance_micros -
                                t.energy_cost_micros);
  // The days sum to the month.
  MonthTotals sum;
  for (const MonthTotals& d : r->days) {
    sum.hours_serving += d.hours_serving;
    sum.jobs_done += d.jobs_done;
    sum.revenue_share_micros += d.revenue_share_micros;
  }
  EXPECT_NEAR(sum.hours_serving, t.hours_serving, 1e-6);
  EXPECT_EQ(sum.jobs_done, t.jobs_done);
  EXPECT_EQ(sum.revenue_share_micros, t.revenue_share_micros);
}

TEST(VehicleMonth, TheOwnersLimitsBind) {
  const int days = testing::kSanitized ? kSanitizedDays : 7;
  auto base = simulate_vehicle_month(params(days));
  ASSERT_TRUE(base.has_value());
  // Not opted in: no work, no pay.
  VehicleMonthParams off = params(days);
  off.policy.opted_in = false;
  auto r = simulate_vehicle_month(off);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->total.hours_serving, 0.0);
  EXPECT_EQ(r->total.paid_micros(), 0);
  // A small wear budget stops the work once it is spent.
  VehicleMonthParams worn = params(days);
  worn.policy.wear_budget_hours_per_month = 1.0;
  r = simulate_vehicle_month(worn);
  ASSERT_TRUE(r.has_value());
  EXPECT_LT(r->total.hours_serving, base->total.hours_serving / 2);
  EXPECT_LE(r->total.wear_hours, 1.0 + 0.1);
  // Work allowed only from 01:00 to 05:00 (Monday to Sunday): at most 4 h a day.
  VehicleMonthParams night = params(days);
  night.policy.allowed_windows.clear();
  for (int d = 0; d < 7; ++d) {
    night.policy.allowed_windows.push_back({d * core::kMinutesPerDay + 60, d * core::kMinutesPerDay + 300});
  }
  r = simulate_vehicle_month(night);
  ASSERT_TRUE(r.has_value()) << r.error().to_string();
  EXPECT_GT(r->total.hours_serving, days * 1.0);
  EXPECT_LE(r->total.hours_serving, days * 4.0 + 0.1);
  // No owner share: no revenue, the energy and wear still paid.
  VehicleMonthParams unshared = params(days);
  unshared.owner_share_ppm = 0;
  r = simulate_vehicle_month(unshared);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->total.revenue_share_micros, 0);
  EXPECT_GT(r->total.energy_refund_micros, 0);
}

TEST(VehicleMonth, BadParametersAreRefusedByName) {
  auto refused = [](VehicleMonthParams p, const std::string& word) {
    auto r = simulate_vehicle_month(p);
    ASSERT_FALSE(r.has_value()) << word;
    EXPECT_NE(r.error().message.find(word), std::string::npos) << r.error().message;
  };
  VehicleMonthParams p = params();
  p.days = 0;
  refused(p, "days");
  p = params();
  p.days = kMonthDaysMax + 1;
  refused(p, "days");
  p = params();
  p.tokens_per_second = 0;
  refused(p, "tokens per second");
  p = params();
  p.tokens_per_second = -1;
  refused(p, "tokens per second");
  p = params();
  p.completion_tokens = 0;
  refused(p, "completion");
  p = params();
  p.owner_share_ppm = 1'000'001;
  refused(p, "share");
  p = params();
  p.step_ms = 0;
  refused(p, "step");
  p = params();
  p.input_price_micros_per_mtok = kMonthPriceMicrosPerMtokMax + 1;
  refused(p, "prices");
  p = params();
  p.start_ms = -1;
  refused(p, "start");
  p = params();
  p.policy.soc_floor_pct = 150;
  auto r = simulate_vehicle_month(p);
  EXPECT_FALSE(r.has_value());
}

}  // namespace
}  // namespace idlefleet::sim::vehicle_month_test
