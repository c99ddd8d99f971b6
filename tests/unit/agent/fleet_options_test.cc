// FleetOptions::validate for simulated cars given whole (FleetSimCar, what
// `idlefleet sim live` builds from a scenario): every car, its owner's policy
// and its pacing are checked, and the error says which car and what.
#include "agent/fleet.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>

namespace idlefleet::agent::fleet_options_test {
namespace {

FleetOptions with_cars(int n) {
  FleetOptions o;
  o.vehicles = n;
  o.utc_offset_minutes = 60;
  for (int i = 0; i < n; ++i) {
    FleetSimCar c;
    c.car.utc_offset_minutes = 60;
    c.car.seed = static_cast<uint64_t>(i);
    c.policy.opted_in = true;
    c.paced_tokens_per_second = 0.5;
    c.prefill_speedup = 20.0;
    o.sim_cars.push_back(c);
  }
  return o;
}

std::string error_of(const FleetOptions& o) {
  const Status st = o.validate();
  return st ? std::string() : st.error().message;
}

TEST(FleetOptions, SimulatedCarsGivenWholeAreEachChecked) {
  EXPECT_EQ(error_of(with_cars(3)), "");

  FleetOptions o = with_cars(3);
  o.vehicles = 4;
  EXPECT_NE(error_of(o).find("3 given for 4 vehicles"), std::string::npos) << error_of(o);

  o = with_cars(3);
  o.sim_cars[1].car.charge_limit_pct = 20.0;
  EXPECT_NE(error_of(o).find("simulated car 2: "), std::string::npos) << error_of(o);
  EXPECT_NE(error_of(o).find("charge_limit_pct"), std::string::npos) << error_of(o);

  o = with_cars(3);
  o.sim_cars[2].policy.soc_floor_pct = 90.0;
  o.sim_cars[2].policy.target_soc_pct = 50.0;
  EXPECT_NE(error_of(o).find("simulated car 3: owner policy"), std::string::npos) << error_of(o);

  for (double bad : {-1.0, std::numeric_limits<double>::quiet_NaN(), 2e6}) {
    o = with_cars(2);
    o.sim_cars[0].paced_tokens_per_second = bad;
    EXPECT_NE(error_of(o).find("paced tokens per second"), std::string::npos) << bad;
  }
  for (double bad : {0.0, 0.5, std::numeric_limits<double>::infinity()}) {
    o = with_cars(2);
    o.sim_cars[0].prefill_speedup = bad;
    EXPECT_NE(error_of(o).find("prefill speedup"), std::string::npos) << bad;
  }

  o = with_cars(2);
  o.sim_cars[1].car.utc_offset_minutes = 0;
  EXPECT_NE(error_of(o).find("time zone"), std::string::npos) << error_of(o);

  o = with_cars(1);
  o.source = SignalSourceKind::kReplay;
  o.replay_path = "x.jsonl";
  EXPECT_NE(error_of(o).find("simulated signal source"), std::string::npos) << error_of(o);
}

}  // namespace
}  // namespace idlefleet::agent::fleet_options_test
