#include "core/scheduler.h"

#include <gtest/gtest.h>

#include <algorithm>

#include "common/random.h"

namespace idlefleet::core::scheduler_test {
namespace {

constexpr TimeMs kNow = 1'000'000'000;

VehicleCandidate good(const std::string& id) {
  VehicleCandidate v;
  v.vehicle_id = id;
  v.eligible = true;
  v.memory_free_bytes = 8ull << 30;
  v.departure_earliest = kNow + 8 * kHourMs;
  v.energy_price_micros_per_kwh = 150'000;
  v.accelerator_temp_c = 40.0;
  return v;
}

PlacementRequest request() {
  PlacementRequest r;
  r.model_id = "stories260K";
  r.model_bytes = 1ull << 30;
  r.expected_duration_ms = 10 * kSecondMs;
  return r;
}

TEST(Scheduler, HardConstraintsAreNeverBroken) {
  std::vector<VehicleCandidate> vs = {good("a"), good("b"), good("c"), good("d"), good("e")};
  vs[0].eligible = false;
  vs[1].busy = true;
  vs[2].memory_free_bytes = 1 << 20;
  vs[3].accelerator_temp_c = 90.0;
  vs[4].wear_budget_left_fraction = 0.0;
  EXPECT_FALSE(place(request(), vs, kNow));
  const auto verdicts = explain_placement(request(), vs, kNow);
  ASSERT_EQ(verdicts.size(), 5u);
  for (const auto& v : verdicts) {
    EXPECT_FALSE(v.acceptable);
    EXPECT_FALSE(v.reason.empty());
  }
}

TEST(Scheduler, PrefersTheCachedModelThenCheapEnergyThenACoolChip) {
  std::vector<VehicleCandidate> vs = {good("a"), good("b"), good("c")};
  vs[1].model_cached = true;
  EXPECT_EQ(place(request(), vs, kNow)->vehicle_id, "b");
  vs[1].model_cached = false;
  vs[2].energy_price_micros_per_kwh = 50'000;
  EXPECT_EQ(place(request(), vs, kNow)->vehicle_id, "c");
  vs[2].energy_price_micros_per_kwh = 150'000;
  vs[0].accelerator_temp_c = 20.0;
  EXPECT_EQ(place(request(), vs, kNow)->vehicle_id, "a");
}

TEST(Scheduler, AVehicleLeavingBeforeTheJobEndsIsPassedOverWhileAnotherStays) {
  std::vector<VehicleCandidate> vs = {good("a"), good("b")};
  vs[0].model_cached = true;                       // better otherwise ...
  vs[0].departure_earliest = kNow + kMinuteMs;     // ... but leaving in a minute
  const auto p = place(request(), vs, kNow);
  ASSERT_TRUE(p);
  EXPECT_EQ(p->vehicle_id, "b");
  EXPECT_TRUE(p->covers_job);
}

TEST(Scheduler, WhenNoneCoversTheJobTheLongestStayingTakesIt) {
  std::vector<VehicleCandidate> vs = {good("a"), good("b"), good("c")};
  vs[0].departure_earliest = kNow + 1 * kMinuteMs;
  vs[1].departure_earliest = kNow + 3 * kMinuteMs;
  vs[2].departure_earliest = kNow + 2 * kMinuteMs;
  const auto p = place(request(), vs, kNow);
  ASSERT_TRUE(p);
  EXPECT_EQ(p->vehicle_id, "b");
  EXPECT_FALSE(p->covers_job);
}

TEST(Scheduler, BatchWorkWeighsEnergyPriceMore) {
  std::vector<VehicleCandidate> vs = {good("a"), good("b")};
  vs[0].accelerator_temp_c = 10.0;               // cool but dear
  vs[0].energy_price_micros_per_kwh = 300'000;
  vs[1].accelerator_temp_c = 60.0;               // warmer but cheap
  vs[1].energy_price_micros_per_kwh = 100'000;
  PlacementRequest r = request();
  r.batch = true;
  EXPECT_EQ(place(r, vs, kNow)->vehicle_id, "b");
}

TEST(Scheduler, HigherVerificationStandingIsPreferred) {
  std::vector<VehicleCandidate> vs = {good("a"), good("b")};
  vs[0].standing = 0.3;  // wrong once (core/verification.h)
  vs[1].standing = 0.6;
  EXPECT_EQ(place(request(), vs, kNow)->vehicle_id, "b");
  vs[1].standing = 0.3;  // equal again: the smaller id
  EXPECT_EQ(place(request(), vs, kNow)->vehicle_id, "a");
}

TEST(Scheduler, ABadRecordCosts) {
  std::vector<VehicleCandidate> vs = {good("a"), good("b")};
  vs[0].attempts_completed = 1;
  vs[0].attempts_lost = 9;
  vs[1].attempts_completed = 10;
  EXPECT_EQ(place(request(), vs, kNow)->vehicle_id, "b");
}

TEST(Scheduler, TheChoiceDoesNotDependOnInputOrder) {
  Rng rng(7);
  for (int trial = 0; trial < 500; ++trial) {
    std::vector<VehicleCandidate> vs;
    const int n = 1 + static_cast<int>(rng.below(30));
    for (int i = 0; i < n; ++i) {
      std::string id = "v";
      id += std::to_string(i);
      VehicleCandidate v = good(id);
      v.eligible = rng.below(4) != 0;
      v.busy = rng.below(5) == 0;
      v.model_cached = rng.below(2) == 0;
      v.departure_earliest = kNow + static_cast<TimeMs>(rng.below(120)) * kMinuteMs;
      v.energy_price_micros_per_kwh = static_cast<int64_t>(rng.below(4)) * 50'000;
      v.accelerator_temp_c = 20.0 + static_cast<double>(rng.below(4)) * 10.0;
      vs.push_back(v);
    }
    const auto first = place(request(), vs, kNow);
    // place() is explain_placement()'s first choice, computed without the list.
    const auto verdicts = explain_placement(request(), vs, kNow);
    ASSERT_EQ(first.has_value(), !verdicts.empty() && verdicts.front().acceptable);
    if (first) {
      EXPECT_EQ(first->vehicle_id, verdicts.front().vehicle_id);
      EXPECT_EQ(first->score, verdicts.front().score);
    }
    for (int shuffle = 0; shuffle < 3; ++shuffle) {
      for (size_t i = vs.size(); i > 1; --i) std::swap(vs[i - 1], vs[rng.below(i)]);
      const auto again = place(request(), vs, kNow);
      ASSERT_EQ(first.has_value(), again.has_value());
      if (first) {
        EXPECT_EQ(first->vehicle_id, again->vehicle_id);
      }
    }
    if (first) {  // the chosen one never breaks a hard constraint
      const auto it = std::find_if(vs.begin(), vs.end(), [&](const auto& v) { return v.vehicle_id == first->vehicle_id; });
      ASSERT_NE(it, vs.end());
      EXPECT_TRUE(it->eligible);
      EXPECT_FALSE(it->busy);
    }
  }
}

}  // namespace
}  // namespace idlefleet::core::scheduler_test
