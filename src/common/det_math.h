// Deterministic elementary functions: exp, log, sin and cos whose results
// depend only on their arguments, on every IEEE-754 machine and build.
//
// The C library's expf, sinf and cosf are not correctly rounded, and glibc
// picks different code paths by CPU (FMA or not) and by version, so two
// vehicles could compute different logits from the same tokens, and a
// generation resumed on another car could drift. These functions use only
// IEEE double additions, multiplications and divisions in a fixed order
// (the build forbids contraction into FMA), rounding to nearest even
// (det_round), and exact scaling by powers of two; each result is then
// rounded once to float. Accuracy: within about 1 ulp of float (the double intermediate
// carries ~1e-11 relative error at most), checked against the C library in
// tests.
//
// Thread-safety: pure functions.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace idlefleet {

// x rounded to the nearest integer, ties to even (the default rounding mode),
// for |x| < 2^51: adding and removing 1.5 * 2^52 leaves no fraction bits.
// Inline IEEE additions, where std::nearbyint is a library call on baseline
// x86-64 (no SSE4.1 roundsd).
inline double det_round(double x) {
  constexpr double kShift = 6755399441055744.0;  // 1.5 * 2^52
  return (x + kShift) - kShift;
}

// e^x in double, for |x| up to ~700 (inputs outside give 0 or inf).
inline double det_exp(double x) {
  if (x != x) return x;
  if (x > 709.0) return INFINITY;
  if (x < -745.0) return 0.0;
  // x = n ln2 + r, |r| <= ln2 / 2, with ln2 split so that n * kLn2Hi is exact.
  constexpr double kLog2e = 1.4426950408889634074;
  constexpr double kLn2Hi = 6.93147180369123816490e-01;
  constexpr double kLn2Lo = 1.90821492927058770002e-10;
  const double n = det_round(x * kLog2e);
  const double r = (x - n * kLn2Hi) - n * kLn2Lo;
  // Taylor series to r^10: the remainder is below 1e-11 relative for
  // |r| <= 0.35, far below a float ulp.
  double p = 1.0 / 3628800.0;
  p = p * r + 1.0 / 362880.0;
  p = p * r + 1.0 / 40320.0;
  p = p * r + 1.0 / 5040.0;
  p = p * r + 1.0 / 720.0;
  p = p * r + 1.0 / 120.0;
  p = p * r + 1.0 / 24.0;
  p = p * r + 1.0 / 6.0;
  p = p * r + 0.5;
  p = p * r + 1.0;
  p = p * r + 1.0;
  const int64_t ni = static_cast<int64_t>(n);
  if (ni >= -1022 && ni <= 1023) {  // 2^n is a normal double: build it, multiply exactly
    const uint64_t bits = static_cast<uint64_t>(ni + 1023) << 52;
    double scale;
    std::memcpy(&scale, &bits, sizeof scale);
    return p * scale;
  }
  return std::ldexp(p, static_cast<int>(ni));
}

namespace detail {
// 2^(j/64) for j < 64, computed once with det_exp (itself deterministic).
struct Exp2Table {
  double value[64];
  Exp2Table() {
    for (int j = 0; j < 64; ++j) value[j] = det_exp(static_cast<double>(j) * 6.93147180559945309417e-01 / 64.0);
  }
};
inline const Exp2Table& exp2_table() {
  static const Exp2Table table;
  return table;
}
}  // namespace detail

// e^x rounded to float: the hot path of softmax and SiLU. x = (64n + j)
// ln2/64 + r with |r| <= ln2/128, so e^x = 2^n 2^(j/64) e^r, and e^r needs
// only a degree-5 polynomial (remainder < 1e-15) in double.
inline float det_expf(float xf) {
  if (xf != xf) return xf;
  if (xf > 89.0f) return INFINITY;
  if (xf < -104.0f) return 0.0f;
  const double x = xf;
  constexpr double k64OverLn2 = 92.332482616893656877;  // 64 / ln 2
  // ln2/64 in two parts (fdlibm's split of ln2, divided exactly by 64), so
  // that m * hi is exact for |m| < 2^21.
  constexpr double kLn2Over64Hi = 6.93147180369123816490e-01 / 64.0;
  constexpr double kLn2Over64Lo = 1.90821492927058770002e-10 / 64.0;
  const double m = det_round(x * k64OverLn2);
  const double r = (x - m * kLn2Over64Hi) - m * kLn2Over64Lo;
  double p = 1.0 / 120.0;
  p = p * r + 1.0 / 24.0;
  p = p * r + 1.0 / 6.0;
  p = p * r + 0.5;
  p = p * r + 1.0;
  p = p * r + 1.0;
  const int64_t mi = static_cast<int64_t>(m);
  const int64_t n = mi >> 6;  // floor division by 64 (arithmetic shift)
  const double y = p * detail::exp2_table().value[mi & 63];
  // |n| <= 151 here, so 2^n is a normal double: build it and multiply exactly.
  const uint64_t bits = static_cast<uint64_t>(n + 1023) << 52;
  double scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return static_cast<float>(y * scale);
}

// Natural logarithm in double, for x > 0 (NaN for x <= 0 or NaN, inf for inf).
inline double det_log(double x) {
  if (!(x > 0.0)) return x == 0.0 ? -INFINITY : NAN;
  if (x == INFINITY) return x;
  int e = 0;
  double m = std::frexp(x, &e);  // x = m 2^e, m in [0.5, 1)
  if (m < 0.70710678118654752440) {
    m *= 2.0;
    e -= 1;
  }
  // ln m = 2 atanh(s), s = (m - 1) / (m + 1), |s| <= 0.172.
  const double s = (m - 1.0) / (m + 1.0);
  const double s2 = s * s;
  double p = 1.0 / 23.0;
  for (int k = 21; k >= 1; k -= 2) p = p * s2 + 1.0 / k;
  constexpr double kLn2Hi = 6.93147180369123816490e-01;
  constexpr double kLn2Lo = 1.90821492927058770002e-10;
  const double de = static_cast<double>(e);
  return (de * kLn2Hi + 2.0 * s * p) + de * kLn2Lo;
}

// sin x and cos x in double, for |x| up to ~1e9 (RoPE angles are position x
// frequency, at most ~1e6).
inline void det_sincos(double x, double* sin_out, double* cos_out) {
  // x = k pi/2 + r, |r| <= pi/4, pi/2 split in three so that k * each is exact.
  constexpr double k2OverPi = 6.36619772367581382433e-01;
  constexpr double kPio2_1 = 1.57079632673412561417e+00;
  constexpr double kPio2_2 = 6.07710050630396597660e-11;
  constexpr double kPio2_3 = 2.02226624879595063154e-21;
  const double k = det_round(x * k2OverPi);
  const double r = ((x - k * kPio2_1) - k * kPio2_2) - k * kPio2_3;
  const double r2 = r * r;
  // Taylor series to r^17 / r^16: remainder below 1e-16 for |r| <= pi/4.
  double s = -1.0 / 355687428096000.0;
  s = s * r2 + 1.0 / 1307674368000.0;
  s = s * r2 - 1.0 / 6227020800.0;
  s = s * r2 + 1.0 / 39916800.0;
  s = s * r2 - 1.0 / 362880.0;
  s = s * r2 + 1.0 / 5040.0;
  s = s * r2 - 1.0 / 120.0;
  s = s * r2 + 1.0 / 6.0;
  const double sin_r = r - r * r2 * s;
  double c = 1.0 / 20922789888000.0;
  c = c * r2 - 1.0 / 87178291200.0;
  c = c * r2 + 1.0 / 479001600.0;
  c = c * r2 - 1.0 / 3628800.0;
  c = c * r2 + 1.0 / 40320.0;
  c = c * r2 - 1.0 / 720.0;
  c = c * r2 + 1.0 / 24.0;
  c = c * r2 - 0.5;
  const double cos_r = 1.0 + r2 * c;
  const int64_t quadrant = static_cast<int64_t>(k) & 3;
  switch (quadrant) {
    case 0: *sin_out = sin_r; *cos_out = cos_r; break;
    case 1: *sin_out = cos_r; *cos_out = -sin_r; break;
    case 2: *sin_out = -sin_r; *cos_out = -cos_r; break;
    default: *sin_out = -cos_r; *cos_out = sin_r; break;
  }
}

}  // namespace idlefleet
