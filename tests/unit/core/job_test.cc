#include "core/job.h"

#include <gtest/gtest.h>

#include "common/random.h"

namespace idlefleet::core::job_test {
namespace {

std::vector<int32_t> ids(std::initializer_list<int32_t> l) { return l; }

TEST(Job, HappyPath) {
  Job j("j1", 0, 10);
  EXPECT_EQ(j.state(), JobState::kQueued);
  ASSERT_TRUE(j.assign("car-a", 100));
  ASSERT_TRUE(j.start(1, 110));
  ASSERT_TRUE(j.append(1, 0, ids({5, 6, 7}), 120));
  ASSERT_TRUE(j.append(1, 3, ids({8}), 130));
  ASSERT_TRUE(j.complete(1, 4, "stop", 140));
  EXPECT_EQ(j.state(), JobState::kDone);
  EXPECT_EQ(j.produced(), ids({5, 6, 7, 8}));
  EXPECT_EQ(j.attempts().size(), 1u);
  EXPECT_EQ(j.attempts()[0].end, AttemptEnd::kCompleted);
  EXPECT_EQ(j.finish_reason(), "stop");
}

TEST(Job, PreemptionKeepsTokensAndTheNextAttemptResumesFromThem) {
  Job j("j2", 0, 10);
  ASSERT_TRUE(j.assign("car-a", 0));
  ASSERT_TRUE(j.start(1, 1));
  ASSERT_TRUE(j.append(1, 0, ids({1, 2}), 2));
  ASSERT_TRUE(j.preempt(1, 3));
  EXPECT_EQ(j.state(), JobState::kPreempted);
  ASSERT_TRUE(j.assign("car-b", 4));
  EXPECT_EQ(j.current()->tokens_at_start, 2u);
  // Late messages from the first vehicle are stale.
  EXPECT_FALSE(j.append(1, 2, ids({9}), 5));
  EXPECT_FALSE(j.complete(1, 2, "stop", 5));
  ASSERT_TRUE(j.start(2, 5));
  ASSERT_TRUE(j.append(2, 2, ids({3}), 6));
  ASSERT_TRUE(j.complete(2, 3, "length", 7));
  EXPECT_EQ(j.produced(), ids({1, 2, 3}));
  EXPECT_EQ(j.attempts()[0].end, AttemptEnd::kPreempted);
  EXPECT_EQ(j.attempts()[1].tokens_appended, 1u);
}

TEST(Job, DuplicatesAreIgnoredGapsAndForksRefused) {
  Job j("j3", 0, 10);
  ASSERT_TRUE(j.assign("car", 0));
  ASSERT_TRUE(j.start(1, 0));
  ASSERT_TRUE(j.append(1, 0, ids({1, 2, 3}), 1));
  ASSERT_TRUE(j.append(1, 0, ids({1, 2, 3}), 2));     // exact duplicate
  ASSERT_TRUE(j.append(1, 2, ids({3, 4}), 3));        // overlapping duplicate + one new
  EXPECT_EQ(j.produced(), ids({1, 2, 3, 4}));
  auto gap = j.append(1, 6, ids({7}), 4);             // reordered: 4 and 5 missing
  ASSERT_FALSE(gap);
  EXPECT_NE(gap.error().message.find("gap"), std::string::npos);
  auto fork = j.append(1, 1, ids({9}), 5);            // disagrees with token 1
  ASSERT_FALSE(fork);
  EXPECT_EQ(fork.error().code, ErrorCode::kCorrupt);
  EXPECT_FALSE(j.complete(1, 7, "stop", 6));          // claims tokens that never came
  EXPECT_EQ(j.produced(), ids({1, 2, 3, 4}));
}

TEST(Job, LeaseExpiryLosesTheAttemptAndChunksRenewIt) {
  JobLimits limits;
  limits.lease_ms = 1000;
  Job j("j4", 0, 10, limits);
  ASSERT_TRUE(j.assign("car", 0));
  EXPECT_FALSE(j.expire_lease(999));
  ASSERT_TRUE(j.start(1, 500));
  ASSERT_TRUE(j.append(1, 0, ids({1}), 1400));   // renews to 2400
  EXPECT_FALSE(j.expire_lease(2399));
  ASSERT_TRUE(j.heartbeat(1, 2000));             // renews to 3000
  EXPECT_FALSE(j.expire_lease(2999));
  EXPECT_TRUE(j.expire_lease(3000));
  EXPECT_EQ(j.state(), JobState::kPreempted);
  EXPECT_EQ(j.attempts()[0].end, AttemptEnd::kLost);
  EXPECT_FALSE(j.heartbeat(1, 3001));
}

TEST(Job, AttemptsRunOutAndTheJobFails) {
  JobLimits limits;
  limits.attempts_max = 2;
  Job j("j5", 0, 10, limits);
  for (uint32_t a = 1; a <= 2; ++a) {
    ASSERT_TRUE(j.assign("car", 0));
    ASSERT_TRUE(j.attempt_failed(a, "engine error", 1));
  }
  auto r = j.assign("car", 2);
  ASSERT_FALSE(r);
  EXPECT_EQ(j.state(), JobState::kFailed);
  EXPECT_FALSE(j.cancel(3));
}

TEST(Job, PreemptionsDoNotUseUpAttempts) {
  JobLimits limits;
  limits.attempts_max = 2;
  limits.attempts_total_max = 5;
  Job j("j7", 0, 10, limits);
  for (uint32_t a = 1; a <= 5; ++a) {
    ASSERT_TRUE(j.assign("car", 0));
    ASSERT_TRUE(j.preempt(a, 1));
  }
  EXPECT_FALSE(j.assign("car", 2));  // the overall bound still holds
  EXPECT_EQ(j.state(), JobState::kFailed);
}

TEST(Job, CancelEndsTheLiveAttemptAndRefusesLaterMessages) {
  Job j("j6", 0, 10);
  ASSERT_TRUE(j.assign("car", 0));
  ASSERT_TRUE(j.start(1, 0));
  ASSERT_TRUE(j.cancel(1));
  EXPECT_EQ(j.state(), JobState::kCancelled);
  EXPECT_EQ(j.attempts()[0].end, AttemptEnd::kCancelled);
  EXPECT_FALSE(j.append(1, 0, ids({1}), 2));
  EXPECT_FALSE(j.assign("car", 3));
}

TEST(Job, BudgetAndChunkLimits) {
  JobLimits limits;
  limits.chunk_tokens_max = 4;
  Job j("j7", 0, 5, limits);
  ASSERT_TRUE(j.assign("car", 0));
  ASSERT_TRUE(j.start(1, 0));
  EXPECT_FALSE(j.append(1, 0, ids({1, 2, 3, 4, 5}), 1));  // chunk too large
  ASSERT_TRUE(j.append(1, 0, ids({1, 2, 3, 4}), 1));
  EXPECT_FALSE(j.append(1, 4, ids({5, 6}), 2));           // over the budget of 5
  ASSERT_TRUE(j.append(1, 4, ids({5}), 2));
}

// Seeded chaos: a "true" token stream, vehicles that deliver it in chunks
// that may be duplicated, reordered or stale, drivers returning and leases
// expiring. Invariants after every event: produced is a prefix of the truth;
// the job completes at most once and only with the whole stream.
TEST(Job, SeededChaosKeepsProducedAPrefixOfTheTruth) {
  for (uint64_t seed = 1; seed <= 2000; ++seed) {
    Rng rng(seed);
    const uint64_t n = 1 + rng.below(40);
    std::vector<int32_t> truth(n);
    for (auto& t : truth) t = static_cast<int32_t>(rng.below(1000));
    JobLimits limits;
    limits.lease_ms = 50;
    limits.attempts_max = 64;
    Job j("chaos", 0, n, limits);
    TimeMs now = 0;
    int completions = 0;
    for (int step = 0; step < 400 && !job_state_final(j.state()); ++step) {
      now += static_cast<TimeMs>(rng.below(20));
      const Attempt* live = j.current();
      const uint32_t attempt = live ? live->number : 0;
      // Sometimes a message from an older attempt.
      const uint32_t sender = (attempt > 1 && rng.below(5) == 0) ? attempt - 1 : attempt;
      switch (rng.below(8)) {
        case 0: (void)j.assign("car-" + std::to_string(rng.below(4)), now); break;
        case 1: (void)j.start(sender, now); break;
        case 2:
        case 3: {
          const uint64_t have = j.produced().size();
          // A chunk near the frontier: sometimes behind (duplicate), sometimes ahead (gap).
          const int64_t first = static_cast<int64_t>(have) + static_cast<int64_t>(rng.below(5)) - 2;
          if (first < 0 || static_cast<uint64_t>(first) >= n) break;
          const uint64_t len = std::min<uint64_t>(1 + rng.below(4), n - static_cast<uint64_t>(first));
          (void)j.append(sender, static_cast<uint64_t>(first),
                         std::span(truth).subspan(static_cast<size_t>(first), static_cast<size_t>(len)), now);
          break;
        }
        case 4: (void)j.preempt(sender, now); break;
        case 5: (void)j.expire_lease(now); break;
        case 6:
          if (j.complete(sender, j.produced().size(), "length", now)) ++completions;
          break;
        default: (void)j.heartbeat(sender, now); break;
      }
      const auto& p = j.produced();
      ASSERT_LE(p.size(), n) << "seed " << seed;
      ASSERT_TRUE(std::equal(p.begin(), p.end(), truth.begin())) << "seed " << seed;
      ASSERT_LE(completions, 1) << "seed " << seed;
    }
    if (j.state() == JobState::kDone) {
      ASSERT_EQ(completions, 1) << "seed " << seed;
    }
  }
}

}  // namespace
}  // namespace idlefleet::core::job_test
