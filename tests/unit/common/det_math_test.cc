// The deterministic elementary functions against the C library's double
// precision ones (which are accurate to well under a float ulp).
#include "common/det_math.h"

#include <gtest/gtest.h>

#include <cfloat>
#include <cstdlib>
#include <cstring>
#include <cmath>

#include "common/random.h"

namespace idlefleet::det_math_test {
namespace {

// Distance in float ulps between a and b.
int64_t ulps(float a, float b) {
  if (a == b) return 0;
  int32_t ia, ib;
  std::memcpy(&ia, &a, 4);
  std::memcpy(&ib, &b, 4);
  if (ia < 0) ia = INT32_MIN - ia;
  if (ib < 0) ib = INT32_MIN - ib;
  return std::llabs(static_cast<int64_t>(ia) - ib);
}

TEST(DetMath, ExpfWithinOneUlpAcrossItsRange) {
  Rng rng(1);
  for (int i = 0; i < 200000; ++i) {
    const float x = static_cast<float>((rng.uniform() - 0.5) * 2.0 * 100.0);
    const float want = static_cast<float>(std::exp(static_cast<double>(x)));
    ASSERT_LE(ulps(det_expf(x), want), 1) << x;
  }
  EXPECT_EQ(det_expf(0.0f), 1.0f);
  EXPECT_EQ(det_expf(-200.0f), 0.0f);
  EXPECT_EQ(det_expf(100.0f), INFINITY);
  EXPECT_EQ(det_expf(-INFINITY), 0.0f);
  EXPECT_TRUE(std::isnan(det_expf(NAN)));
}

TEST(DetMath, LogMatchesTheLibraryInDouble) {
  Rng rng(2);
  for (int i = 0; i < 100000; ++i) {
    const double x = std::ldexp(0.5 + rng.uniform(), static_cast<int>(rng.below(200)) - 100);
    EXPECT_NEAR(det_log(x), std::log(x), 1e-14 * (1.0 + std::fabs(std::log(x)))) << x;
  }
  EXPECT_NEAR(det_log(10000.0), 9.210340371976184, 1e-14);
  EXPECT_EQ(det_log(0.0), -INFINITY);
  EXPECT_TRUE(std::isnan(det_log(-1.0)));
}

TEST(DetMath, SinCosMatchTheLibraryForRopeAngles) {
  Rng rng(3);
  for (int i = 0; i < 200000; ++i) {
    // Angles as RoPE makes them: position (< 1M) times a frequency in (0, 1].
    const double x = static_cast<double>(static_cast<float>(rng.below(1 << 20)) * rng.uniform_float());
    double s, c;
    det_sincos(x, &s, &c);
    ASSERT_LE(ulps(static_cast<float>(s), static_cast<float>(std::sin(x))), 1) << x;
    ASSERT_LE(ulps(static_cast<float>(c), static_cast<float>(std::cos(x))), 1) << x;
  }
  double s, c;
  det_sincos(0.0, &s, &c);
  EXPECT_EQ(s, 0.0);
  EXPECT_EQ(c, 1.0);
}

}  // namespace
}  // namespace idlefleet::det_math_test
