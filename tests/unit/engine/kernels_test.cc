// Every SIMD kernel against the scalar reference (bit for bit, since they
// follow one canonical operation order), and the scalar reference against a
// double-precision dot product of the dequantised operands (tolerance below).
#include "engine/kernels.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <vector>

#include "common/det_math.h"
#include "common/random.h"
#include "engine/quant.h"

namespace idlefleet::engine::kernels_test {
namespace {

struct Matrix {
  TensorType type;
  int64_t rows, cols;
  std::vector<uint8_t> bytes;
  std::vector<float> dequant;  // [rows][cols] values the weights stand for

  std::vector<uint8_t> packed;  // the kernels' layout: interleaved for Q8_0 / Q4_0

  WeightView view() const {
    return {type, packed.data(), rows, cols, tensor_bytes(type, static_cast<uint64_t>(cols))};
  }
};

Matrix make_matrix(TensorType type, int64_t rows, int64_t cols, uint64_t seed) {
  Rng rng(seed);
  Matrix m{type, rows, cols, {}, std::vector<float>(static_cast<size_t>(rows * cols)), {}};
  const size_t row_bytes = tensor_bytes(type, static_cast<uint64_t>(cols));
  m.bytes.resize(row_bytes * static_cast<size_t>(rows));
  std::vector<float> row(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    for (auto& v : row) v = (rng.uniform_float() - 0.5f) * 0.2f;
    uint8_t* dst = m.bytes.data() + r * row_bytes;
    float* dq = m.dequant.data() + r * cols;
    switch (type) {
      case TensorType::kF32: std::memcpy(dst, row.data(), row_bytes); std::memcpy(dq, row.data(), row_bytes); break;
      case TensorType::kF16:
        quantize_row_f16(row.data(), reinterpret_cast<uint16_t*>(dst), cols);
        dequantize_row_f16(reinterpret_cast<uint16_t*>(dst), dq, cols);
        break;
      case TensorType::kQ8_0:
        quantize_row_q8_0(row.data(), reinterpret_cast<BlockQ8_0*>(dst), cols);
        dequantize_row_q8_0(reinterpret_cast<BlockQ8_0*>(dst), dq, cols);
        break;
      case TensorType::kQ4_0:
        quantize_row_q4_0(row.data(), reinterpret_cast<BlockQ4_0*>(dst), cols);
        dequantize_row_q4_0(reinterpret_cast<BlockQ4_0*>(dst), dq, cols);
        break;
      default: ADD_FAILURE();
    }
  }
  if (type == TensorType::kQ8_0 || type == TensorType::kQ4_0) {
    m.packed.assign(interleaved_bytes(type, rows, cols), 0);
    interleave_rows(type, m.bytes.data(), rows, cols, m.packed.data());
    // The interleaved layout dequantises to the same values.
    std::vector<float> row(static_cast<size_t>(cols));
    for (int64_t r = 0; r < rows; ++r) {
      dequantize_weight_row(m.view(), r, row.data());
      for (int64_t i = 0; i < cols; ++i) EXPECT_EQ(row[i], m.dequant[r * cols + i]);
    }
  } else {
    m.packed = m.bytes;
  }
  return m;
}

std::vector<float> make_activations(int64_t cols, int64_t k, uint64_t seed) {
  Rng rng(seed);
  std::vector<float> x(static_cast<size_t>(cols * k));
  for (auto& v : x) v = (rng.uniform_float() - 0.5f) * 4.0f;
  if (!x.empty()) x[0] = 9.0f;  // an outlier, as real activations have
  return x;
}

// y = W x with one kernel set over rows [0, rows).
std::vector<float> run(const KernelSet& ks, const Matrix& m, const std::vector<float>& x, int64_t cols) {
  std::vector<float> y(static_cast<size_t>(cols * m.rows), NAN);
  const WeightView w = m.view();
  if (m.type == TensorType::kQ8_0 || m.type == TensorType::kQ4_0) {
    QuantizedRows q;
    q.resize(cols, m.cols);
    ks.quantize_rows(x.data(), m.cols, 0, cols, &q);
    auto fn = m.type == TensorType::kQ8_0 ? ks.matmul_q8_0 : ks.matmul_q4_0;
    fn(w, 0, m.rows, q, cols, y.data(), m.rows);
  } else {
    auto fn = m.type == TensorType::kF32 ? ks.matmul_f32 : ks.matmul_f16;
    fn(w, 0, m.rows, x.data(), m.cols, cols, y.data(), m.rows);
  }
  return y;
}

struct Shape {
  int64_t rows, cols, tokens;
};

class KernelTest : public ::testing::TestWithParam<TensorType> {};

TEST_P(KernelTest, EverySetEqualsScalarReferenceBitForBit) {
  const TensorType type = GetParam();
  const bool quant = type == TensorType::kQ8_0 || type == TensorType::kQ4_0;
  // Odd row counts and token counts exercise every tile remainder.
  for (Shape s : {Shape{1, 32, 1}, Shape{37, 96, 1}, Shape{64, 256, 5}, Shape{19, 64, 7}, Shape{128, 768, 13}}) {
    if (!quant) s.cols += 3;  // float kernels also take lengths that are not a multiple of 8
    const Matrix m = make_matrix(type, s.rows, s.cols, 1);
    const std::vector<float> x = make_activations(s.tokens, s.cols, 2);
    const std::vector<float> ref = run(scalar_kernels(), m, x, s.tokens);
    for (const KernelSet* ks : available_kernels()) {
      const std::vector<float> got = run(*ks, m, x, s.tokens);
      for (size_t i = 0; i < ref.size(); ++i) {
        ASSERT_EQ(std::bit_cast<uint32_t>(got[i]), std::bit_cast<uint32_t>(ref[i]))
            << ks->name << " rows " << s.rows << " cols " << s.cols << " tokens " << s.tokens << " at " << i
            << ": " << got[i] << " vs " << ref[i];
      }
    }
  }
}

TEST_P(KernelTest, ManyColumnsEqualOneColumnAtATime) {
  // Batched prefill must give each token exactly what decoding it alone gives.
  const TensorType type = GetParam();
  const Matrix m = make_matrix(type, 45, 128, 3);
  const int64_t tokens = 11;
  const std::vector<float> x = make_activations(tokens, 128, 4);
  for (const KernelSet* ks : available_kernels()) {
    const std::vector<float> batched = run(*ks, m, x, tokens);
    for (int64_t t = 0; t < tokens; ++t) {
      const std::vector<float> one(x.begin() + t * 128, x.begin() + (t + 1) * 128);
      const std::vector<float> single = run(*ks, m, one, 1);
      for (int64_t r = 0; r < m.rows; ++r) {
        ASSERT_EQ(std::bit_cast<uint32_t>(batched[t * m.rows + r]), std::bit_cast<uint32_t>(single[r]))
            << ks->name << " token " << t << " row " << r;
      }
    }
  }
}

TEST_P(KernelTest, ScalarReferenceMatchesDoublePrecision) {
  // Tolerance: float weights accumulate in f32 (relative 1e-5 of the sum of
  // |products|); quantised kernels also quantise activations to 8 bits per
  // 32-block, an error of at most half a step (amax/254) per element, so we
  // bound |y - y_exact| by 1e-5 * sum|w x| + sum |w| * amax_block / 254.
  const TensorType type = GetParam();
  const bool quant = type == TensorType::kQ8_0 || type == TensorType::kQ4_0;
  const int64_t rows = 33, cols = 512, tokens = 3;
  const Matrix m = make_matrix(type, rows, cols, 5);
  const std::vector<float> x = make_activations(tokens, cols, 6);
  const std::vector<float> y = run(scalar_kernels(), m, x, tokens);
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t r = 0; r < rows; ++r) {
      double exact = 0.0, mag = 0.0, qerr = 0.0;
      for (int64_t b = 0; b < cols; b += 32) {
        double amax = 0.0;
        for (int64_t i = b; i < b + 32; ++i) amax = std::max(amax, std::fabs(double(x[t * cols + i])));
        for (int64_t i = b; i < b + 32; ++i) {
          const double wv = m.dequant[r * cols + i], xv = x[t * cols + i];
          exact += wv * xv;
          mag += std::fabs(wv * xv);
          qerr += std::fabs(wv) * amax / 254.0;
        }
      }
      const double tol = 1e-5 * mag + (quant ? qerr : 0.0);
      EXPECT_NEAR(y[t * rows + r], exact, tol) << "row " << r << " token " << t;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllTypes, KernelTest,
                         ::testing::Values(TensorType::kF32, TensorType::kF16, TensorType::kQ8_0,
                                           TensorType::kQ4_0),
                         [](const auto& info) { return std::string(tensor_type_info(info.param)->name); });

TEST(Kernels, ThisMachineHasItsBestSet) {
  // Not a skip: a machine without AVX2 still runs the scalar set, and this
  // prints which set the suite exercised.
  const auto sets = available_kernels();
  ASSERT_FALSE(sets.empty());
  EXPECT_STREQ(sets.front()->name, "scalar");
  std::printf("kernel sets here:");
  for (auto* k : sets) std::printf(" %s", k->name);
  std::printf("; best: %s\n", best_kernels().name);
}

TEST(Kernels, ActivationQuantisationRoundsHalfToEvenAndSaturates) {
  std::vector<float> x(32, 0.0f);
  x[0] = 127.0f;  // d = 1
  x[1] = 2.5f;
  x[2] = -3.5f;
  x[3] = 1e30f;  // dominates: everything else rounds to 0
  QuantizedRows q;
  q.resize(1, 32);
  scalar_kernels().quantize_rows(x.data(), 32, 0, 1, &q);
  EXPECT_EQ(q.qs[3], 127);
  x[3] = 0.0f;
  scalar_kernels().quantize_rows(x.data(), 32, 0, 1, &q);
  EXPECT_EQ(q.qs[0], 127);
  EXPECT_EQ(q.qs[1], 2);   // 2.5 -> 2 (half to even)
  EXPECT_EQ(q.qs[2], -4);  // -3.5 -> -4
  EXPECT_EQ(q.bias_q8[0], -128 * (127 + 2 - 4));
  EXPECT_EQ(q.bias_q4[0], -8 * (127 + 2 - 4));
  x[5] = NAN;
  scalar_kernels().quantize_rows(x.data(), 32, 0, 1, &q);  // must not crash or be UB
}

}  // namespace
}  // namespace idlefleet::engine::kernels_test

namespace idlefleet::engine::kernels_test {
namespace {

TEST(Kernels, ActivationQuantisationIsIdenticalInEverySet) {
  Rng rng(4);
  const int64_t n = 256, rows = 3;
  std::vector<float> x(static_cast<size_t>(n * rows));
  for (auto& v : x) v = (rng.uniform_float() - 0.5f) * 10.0f;
  x[5] = NAN;
  x[40] = INFINITY;
  x[70] = -0.0f;
  x[100] = 2.5f * (x[96] = 0.0f);  // a block with zeros
  for (int i = 128; i < 160; ++i) x[i] = 0.0f;  // an all-zero block
  x[200] = -1e30f;
  for (int i = 224; i < 256; ++i) x[i] = (i % 2 ? 1e-38f : 0.0f);  // 1/d overflows: all zeros
  QuantizedRows ref;
  ref.resize(rows, n);
  scalar_kernels().quantize_rows(x.data(), n, 0, rows, &ref);
  for (int i = 224; i < 256; ++i) EXPECT_EQ(ref.block_qs(7, 0)[i - 224], 0) << i;
  for (const KernelSet* ks : available_kernels()) {
    QuantizedRows q;
    q.resize(rows, n);
    ks->quantize_rows(x.data(), n, 0, rows, &q);
    EXPECT_EQ(q.qs, ref.qs) << ks->name;
    EXPECT_EQ(q.bias_q8, ref.bias_q8) << ks->name;
    EXPECT_EQ(q.bias_q4, ref.bias_q4) << ks->name;
    for (size_t i = 0; i < ref.d.size(); ++i) EXPECT_EQ(std::bit_cast<uint32_t>(q.d[i]), std::bit_cast<uint32_t>(ref.d[i]));
  }
}

TEST(Kernels, ExpAndSiluEqualTheScalarDeterministicExpBitForBit) {
  Rng rng(12);
  const int64_t n = 4099;  // not a multiple of 8: the tail too
  std::vector<float> x(static_cast<size_t>(n)), h3(static_cast<size_t>(n));
  for (auto& v : x) v = (rng.uniform_float() - 0.5f) * 240.0f;  // beyond both cut-offs
  for (auto& v : h3) v = rng.uniform_float() - 0.5f;
  x[3] = NAN;
  x[4] = INFINITY;
  x[5] = -INFINITY;
  x[6] = -0.0f;
  x[7] = 88.99f;
  x[8] = -103.99f;
  std::vector<float> ref(static_cast<size_t>(n)), silu_ref(x);
  scalar_kernels().exp_f32(x.data(), 0.25f, ref.data(), n);
  scalar_kernels().silu_mul_f32(silu_ref.data(), h3.data(), n);
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isnan(ref[i])) {
      EXPECT_EQ(ref[i], idlefleet::det_expf(x[i] - 0.25f));
    }
  }
  for (const KernelSet* ks : available_kernels()) {
    std::vector<float> got(static_cast<size_t>(n)), silu(x);
    ks->exp_f32(x.data(), 0.25f, got.data(), n);
    ks->silu_mul_f32(silu.data(), h3.data(), n);
    for (int64_t i = 0; i < n; ++i) {
      if (std::isnan(ref[i])) {
        EXPECT_TRUE(std::isnan(got[i])) << ks->name << " " << i;
      } else {
        ASSERT_EQ(std::bit_cast<uint32_t>(got[i]), std::bit_cast<uint32_t>(ref[i])) << ks->name << " x=" << x[i];
      }
      if (std::isnan(silu_ref[i])) {
        EXPECT_TRUE(std::isnan(silu[i]));
      } else {
        ASSERT_EQ(std::bit_cast<uint32_t>(silu[i]), std::bit_cast<uint32_t>(silu_ref[i])) << ks->name << " x=" << x[i];
      }
    }
  }
}

TEST(Kernels, AttentionKernelsEqualScalarReferenceBitForBit) {
  Rng rng(9);
  for (int64_t hd : {4, 8, 60, 64, 128}) {
    for (int64_t n : {1, 3, 4, 9, 33}) {
      const int64_t stride = hd + 16;
      std::vector<float> q(static_cast<size_t>(hd)), kv(static_cast<size_t>(n * stride)), a(static_cast<size_t>(n));
      for (auto& v : q) v = rng.uniform_float() - 0.5f;
      for (auto& v : kv) v = rng.uniform_float() - 0.5f;
      for (auto& v : a) v = rng.uniform_float();
      std::vector<float> s_ref(static_cast<size_t>(n)), o_ref(static_cast<size_t>(hd));
      scalar_kernels().attn_scores(q.data(), kv.data(), stride, n, hd, 8.0f, s_ref.data());
      scalar_kernels().attn_values(a.data(), kv.data(), stride, n, hd, o_ref.data());
      for (int64_t p = 0; p < n; ++p) {
        double exact = 0;
        for (int64_t i = 0; i < hd; ++i) exact += double(q[i]) * kv[p * stride + i];
        EXPECT_NEAR(s_ref[p], exact / 8.0, 1e-5);
      }
      for (const KernelSet* ks : available_kernels()) {
        std::vector<float> s(static_cast<size_t>(n)), o(static_cast<size_t>(hd));
        ks->attn_scores(q.data(), kv.data(), stride, n, hd, 8.0f, s.data());
        ks->attn_values(a.data(), kv.data(), stride, n, hd, o.data());
        for (int64_t p = 0; p < n; ++p) ASSERT_EQ(std::bit_cast<uint32_t>(s[p]), std::bit_cast<uint32_t>(s_ref[p])) << ks->name;
        for (int64_t i = 0; i < hd; ++i) ASSERT_EQ(std::bit_cast<uint32_t>(o[i]), std::bit_cast<uint32_t>(o_ref[i])) << ks->name;
      }
    }
  }
}

}  // namespace
}  // namespace idlefleet::engine::kernels_test
