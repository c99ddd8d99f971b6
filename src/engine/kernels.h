// Matrix kernels: a scalar reference and SIMD versions chosen at run time.
//
// Every kernel computes y[c][r] = dot(W row r, x column c) for a block of rows
// of a weight matrix and a block of activation columns (tokens). The decode
// step is the case of one column; batched prefill is many.
//
// Determinism. Each (row, column) pair is computed by one canonical sequence
// of floating-point operations, fixed by the weight type alone. The scalar
// reference spells it out; the AVX2 and AVX-512 kernels perform the very same
// operations (integer parts are exact; float parts happen lane by lane in the
// same order), so every kernel gives bit-for-bit the reference's result, for
// one column or many, whatever tile or thread computes it. That is what makes
// a generation's output independent of thread count, of batched versus
// one-token evaluation (so a session resumes elsewhere by prefill), and of the
// machine's ISA.
//
// The canonical sequences (k = row length; lanes l = 0..7; fma is fused):
//   Q8_0 / Q4_0 weights x Q8 activations, per 32-element block j:
//     isum[l] = sum_{i<4} w[32j+4l+i] * a[32j+4l+i]          (exact int32)
//     s = fp16_to_fp32(dw_j) * da_j                           (one float mul)
//     acc[l] = fma(float(isum[l]), s, acc[l])
//   F32 / F16 weights x F32 activations, per 8 elements i (k rounded down):
//     acc[l] = fma(w[8i+l], x[8i+l], acc[l])
//   then, for every type, the 8 lanes are reduced as
//     h[l] = acc[l] + acc[l+4] (l<4); q[l] = h[l] + h[l+2] (l<2); r = q[0] + q[1]
//   and (F32/F16 only) the k % 8 tail elements follow as r = fma(w[i], x[i], r).
// Activations are quantised per 32-element block: d = amax / 127, q = round
// half to even of x * (1 / d), exactly alike in every implementation.
//
// Thread-safety: kernels are pure functions of their arguments; callers split
// rows between threads.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "engine/gguf.h"

namespace idlefleet::engine {

// Activation rows quantised for the integer kernels. Row c holds n values.
struct QuantizedRows {
  int64_t n = 0;     // elements per row, a multiple of 32
  int64_t rows = 0;
  std::vector<int8_t> qs;       // [rows][n]
  std::vector<float> d;         // [rows][n / 32] block scales
  std::vector<int32_t> sum4;    // [rows][n / 4] sum of each 4-element group

  void resize(int64_t rows_new, int64_t n_new);
  const int8_t* row_qs(int64_t c) const { return qs.data() + c * n; }
  const float* row_d(int64_t c) const { return d.data() + c * (n / 32); }
  const int32_t* row_sum4(int64_t c) const { return sum4.data() + c * (n / 4); }
};

// A view of a weight matrix of `rows` rows of `cols` elements, each row
// `row_bytes` long in `type`'s block layout.
//
// F32 and F16 matrices are row-major, as in the file. Q8_0 and Q4_0 matrices
// are interleaved in groups of 8 rows (repacked at load, see
// interleave_rows): group g holds rows 8g..8g+7 (rows past the end are zero),
// and for each 32-element block j it stores the 8 rows' f16 scales, then the
// 8 rows' quants (32 bytes each for Q8_0, 16 for Q4_0):
//   group g, block j: u16 d[8] | qs[row 0] | qs[row 1] | ... | qs[row 7]
// A tile of 8 rows thus reads one contiguous stream, and the 8 scales convert
// with one instruction. The group is exactly 8 rows' bytes: no extra memory.
struct WeightView {
  TensorType type = TensorType::kF32;
  const uint8_t* data = nullptr;
  int64_t rows = 0;
  int64_t cols = 0;
  size_t row_bytes = 0;
};

inline constexpr int64_t kInterleaveRows = 8;

// Bytes of a quantised matrix in the interleaved layout (rows rounded up to 8).
size_t interleaved_bytes(TensorType type, int64_t rows, int64_t cols);
// Repacks a row-major Q8_0 or Q4_0 matrix (as in GGUF) into the interleaved
// layout. REQUIRES: dst holds interleaved_bytes(...) zeroed bytes.
void interleave_rows(TensorType type, const uint8_t* src, int64_t rows, int64_t cols, uint8_t* dst);
// Dequantises row `row` of a matrix in the layout WeightView describes.
void dequantize_weight_row(const WeightView& w, int64_t row, float* out);

// The kernel set of one instruction-set level.
struct KernelSet {
  const char* name;  // "scalar", "avx2", "avx512"
  // Quantises rows [r0, r1) of x (row stride ldx floats) into out (sized by
  // the caller with resize()).
  void (*quantize_rows)(const float* x, int64_t ldx, int64_t r0, int64_t r1, QuantizedRows* out);
  // y[c * ldy + r] for r in [r0, r1), c in [0, cols), weights Q8_0 or Q4_0
  // (interleaved). REQUIRES: r0 % 8 == 0; r1 % 8 == 0 or r1 == w.rows.
  void (*matmul_q8_0)(const WeightView& w, int64_t r0, int64_t r1, const QuantizedRows& a,
                      int64_t cols, float* y, int64_t ldy);
  void (*matmul_q4_0)(const WeightView& w, int64_t r0, int64_t r1, const QuantizedRows& a,
                      int64_t cols, float* y, int64_t ldy);
  // Weights F32 or F16; x is [cols][ldx] floats.
  void (*matmul_f32)(const WeightView& w, int64_t r0, int64_t r1, const float* x, int64_t ldx,
                     int64_t cols, float* y, int64_t ldy);
  void (*matmul_f16)(const WeightView& w, int64_t r0, int64_t r1, const float* x, int64_t ldx,
                     int64_t cols, float* y, int64_t ldy);
  // Attention's vector operations, without fused multiply-add so that every
  // implementation (and the compiler's own vectorisation of the scalar one)
  // rounds alike:
  //   dot_f32:  acc[l] = acc[l] + a[8i+l] * b[8i+l], reduced as above, then
  //             r = r + a[i] * b[i] for the n % 8 tail
  //   axpy_f32: y[i] = y[i] + alpha * x[i]
  float (*dot_f32)(const float* a, const float* b, int64_t n);
  void (*axpy_f32)(float alpha, const float* x, float* y, int64_t n);
};

const KernelSet& scalar_kernels();
// Null when not compiled in or not supported by this CPU.
const KernelSet* avx2_kernels();
const KernelSet* avx512_kernels();

// The best set this CPU supports, unless the environment variable
// IDLEFLEET_KERNELS names one ("scalar", "avx2", "avx512").
const KernelSet& best_kernels();
// Every set this CPU can run, scalar first (for tests and benchmarks).
std::vector<const KernelSet*> available_kernels();

// Canonical 8-lane reduction shared by every implementation.
inline float reduce_lanes8(const float acc[8]) {
  const float h0 = acc[0] + acc[4], h1 = acc[1] + acc[5], h2 = acc[2] + acc[6], h3 = acc[3] + acc[7];
  const float q0 = h0 + h2, q1 = h1 + h3;
  return q0 + q1;
}

}  // namespace idlefleet::engine
