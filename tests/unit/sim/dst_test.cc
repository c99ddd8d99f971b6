// The deterministic simulation tests (sim/dst.h): acceptance A of issue 8.
#include "sim/dst.h"

#include <chrono>
#include <cstdio>
#include <string>

#include <gtest/gtest.h>

#include "support/sanitized.h"

namespace idlefleet::sim::dst_test {
namespace {

std::string describe(uint64_t seed, const DstResult& r) {
  std::string s = "seed " + std::to_string(seed) + ": " + r.violation->invariant + " at step " +
                  std::to_string(r.violation->step) + ", t=" + std::to_string(r.violation->at_ms) +
                  " ms: " + r.violation->detail + "\n";
  for (const std::string& line : r.trace_tail) s += "  " + line + "\n";
  return s;
}

// Acceptance A: at least 2,000 seeds without a violation (about 45 s in the
// release build, which CI runs). The sanitizer build (testing::kSanitized)
// runs about twenty times slower (200 seeds took 197 s), so it runs only
// seeds 1-50 (acceptance A rests on the release build).
TEST(Dst, ManySeedsHoldEveryInvariant) {
  const uint64_t seeds = testing::kSanitized ? 50 : 2000;
  const auto t0 = std::chrono::steady_clock::now();
  uint64_t steps = 0, accepted = 0, done = 0, faults = 0;
  for (uint64_t seed = 1; seed <= seeds; ++seed) {
    DstOptions o;
    o.seed = seed;
    DstResult r = run_dst(o);
    ASSERT_TRUE(r.ok()) << describe(seed, r);
    steps += r.steps;
    accepted += r.jobs_accepted;
    done += r.jobs_done;
    for (const auto& [kind, n] : r.faults) faults += n;
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("%llu seeds, %llu steps, %llu jobs accepted, %llu done, %llu faults in %.1f s (%.0f seeds/s)\n",
              static_cast<unsigned long long>(seeds), static_cast<unsigned long long>(steps),
              static_cast<unsigned long long>(accepted), static_cast<unsigned long long>(done),
              static_cast<unsigned long long>(faults), s, static_cast<double>(seeds) / s);
  // The runs did work: most jobs were accepted and most of those completed.
  EXPECT_GT(accepted, seeds * 10);
  EXPECT_GT(done, accepted / 2);
  EXPECT_GT(faults, seeds);
}

TEST(Dst, SameSeedSameRun) {
  for (uint64_t seed : {7ull, 12345ull, 987654321ull}) {
    DstOptions o;
    o.seed = seed;
    o.vehicles = 5;
    o.jobs = 12;
    DstResult a = run_dst(o);
    DstResult b = run_dst(o);
    EXPECT_EQ(a.steps, b.steps);
    EXPECT_EQ(a.trace_hash, b.trace_hash);
    EXPECT_EQ(a.trace_tail, b.trace_tail);
    EXPECT_EQ(a.faults, b.faults);
    EXPECT_EQ(a.ok(), b.ok());
  }
  DstOptions x, y;
  x.seed = 1;
  y.seed = 2;
  EXPECT_NE(run_dst(x).trace_hash, run_dst(y).trace_hash);
}

// The planted bug (CoordinatorCoreConfig::test_reemit_done_on_duplicate):
// a duplicated done message settles its job twice; the ledger invariant
// catches it within 100 seeds.
TEST(Dst, PlantedDoubleSettlementIsCaught) {
  uint64_t caught_at = 0;
  for (uint64_t seed = 1; seed <= 100 && caught_at == 0; ++seed) {
    DstOptions o;
    o.seed = seed;
    o.test_plant_double_settlement = true;
    DstResult r = run_dst(o);
    if (!r.ok()) {
      EXPECT_EQ(r.violation->invariant, "ledger") << describe(seed, r);
      caught_at = seed;
    }
  }
  EXPECT_NE(caught_at, 0u) << "the planted double settlement went unseen for 100 seeds";
  std::printf("planted double settlement caught at seed %llu\n", static_cast<unsigned long long>(caught_at));
}

// Explicit fault rates far beyond any seed's draw: the invariants still hold.
TEST(Dst, HurricaneSeedsHoldEveryInvariant) {
  DstFaults f;
  f.message_loss = 0.4;
  f.message_duplicate = 0.4;
  f.message_reorder = 0.5;
  f.delay_ms_max = 5000;
  f.partitions_per_hour = 200;
  f.coordinator_crashes_per_hour = 120;
  f.driver_returns_per_hour = 60;
  f.agent_restarts_per_hour = 60;
  f.chip_heats_per_hour = 60;
  const uint64_t seeds = testing::kSanitized ? 20 : 200;
  uint64_t accepted = 0;
  for (uint64_t seed = 1; seed <= seeds; ++seed) {
    DstOptions o;
    o.seed = seed;
    o.faults = f;
    DstResult r = run_dst(o);
    ASSERT_TRUE(r.ok()) << describe(seed, r);
    accepted += r.jobs_accepted;
  }
  EXPECT_GT(accepted, seeds * 5);
}

// Without faults every done job settles with its receipts, and the only
// messages the coordinator refuses are those of an attempt its client
// cancelled while tokens were in flight: the chunks after the cancel (stale)
// and the attempt's receipt (known, docs/dst.md: the vehicle counts the
// tokens its engine made after the cancel, which the coordinator never
// accepted). The other refusals of stormy runs come from their faults.
TEST(Dst, CalmRunsRefuseOnlyReceiptsOfCancelledAttempts) {
  // The sanitizer build runs 25 seeds (100 took 88 s there).
  const uint64_t seeds = testing::kSanitized ? 25 : 100;
  uint64_t done = 0;
  for (uint64_t seed = 1; seed <= seeds; ++seed) {
    DstOptions o;
    o.seed = seed;
    o.faults = DstFaults{};
    DstResult r = run_dst(o);
    ASSERT_TRUE(r.ok()) << describe(seed, r);
    for (const auto& [kind, n] : r.refusals) {
      EXPECT_TRUE(kind == "bad_receipt" || kind == "stale_message") << "seed " << seed << ": " << r.refusal_first[kind];
    }
    EXPECT_EQ(r.settlements_without_receipts, 0u) << "seed " << seed;
    done += r.jobs_done;
  }
  EXPECT_GT(done, seeds * 8);
}

TEST(Dst, OptionsAreValidated) {
  DstOptions o;
  o.vehicles = 0;
  EXPECT_FALSE(o.validate());
  o = {};
  o.vehicles = kDstVehiclesMax + 1;
  EXPECT_FALSE(o.validate());
  o = {};
  o.duration_ms = 0;
  EXPECT_FALSE(o.validate());
  o = {};
  o.faults = DstFaults{};
  o.faults->message_loss = 1.5;
  EXPECT_FALSE(o.validate());
  o.faults->message_loss = 0.1;
  o.faults->delay_ms_max = -1;
  EXPECT_FALSE(o.validate());
  o.faults->delay_ms_max = 10;
  EXPECT_TRUE(o.validate());
}

// Calm and stormy seeds both exist.
TEST(Dst, SeedsDrawCalmAndStormyFaults) {
  int calm = 0, stormy = 0;
  for (uint64_t seed = 1; seed <= 100; ++seed) {
    const DstFaults f = dst_faults_for_seed(seed);
    (f.message_loss == 0.0 && f.coordinator_crashes_per_hour == 0.0 ? calm : stormy)++;
  }
  EXPECT_GT(calm, 5);
  EXPECT_GT(stormy, 50);
}

}  // namespace
}  // namespace idlefleet::sim::dst_test
