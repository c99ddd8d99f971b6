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
// The canonical sequences (k = row length; fma is fused):
//   Q8_0 / Q4_0 weights x Q8 activations: one accumulator per pair; per
//   32-element block j,
//     isum = sum_{i<32} w[32j+i] * a[32j+i]                   (exact int32)
//     s    = fp16_to_fp32(dw_j) * da_j                         (one float mul)
//     acc  = fma(float(isum), s, acc)
//   F32 / F16 weights x F32 activations, 8 lanes l = 0..7, per 8 elements i
//   (k rounded down): acc[l] = fma(w[8i+l], x[8i+l], acc[l]); then
//     h[l] = acc[l] + acc[l+4] (l<4); q[l] = h[l] + h[l+2] (l<2); r = q[0] + q[1]
//   and the k % 8 tail elements follow as r = fma(w[i], x[i], r).
// The SIMD quantised kernels put 8 rows in the 8 lanes of a register (see
// the weight layout below), so the integer sum of a whole block lands in one
// lane with no horizontal reduction, and each pair's chain is the scalar one.
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

// Activation rows quantised for the integer kernels. Row (column of the
// product) c holds n values in n / 32 blocks, stored block-major: block j of
// every row is contiguous, so a tile of columns reads one stream per block.
struct QuantizedRows {
  int64_t n = 0;     // elements per row, a multiple of 32
  int64_t rows = 0;
  std::vector<int8_t> qs;        // [n / 32][rows][32]
  std::vector<float> d;          // [n / 32][rows] block scales
  // Per block, -128 and -8 times the sum of its quants: the corrections
  // for weights stored as unsigned bytes (Q8_0 as w + 128, Q4_0 as w + 8).
  std::vector<int32_t> bias_q8;  // [n / 32][rows]
  std::vector<int32_t> bias_q4;  // [n / 32][rows]

  void resize(int64_t rows_new, int64_t n_new);
  const int8_t* block_qs(int64_t j, int64_t c) const { return qs.data() + (j * rows + c) * 32; }
  int8_t* block_qs(int64_t j, int64_t c) { return qs.data() + (j * rows + c) * 32; }
  size_t block_index(int64_t j, int64_t c) const { return static_cast<size_t>(j * rows + c); }
};

// A view of a weight matrix of `rows` rows of `cols` elements, each row
// `row_bytes` long in `type`'s block layout.
//
// F32 and F16 matrices are row-major, as in the file. Q8_0 and Q4_0 matrices
// are repacked at load (interleave_rows) into groups of 8 rows (rows past the
// end are zero). For each 32-element block j, group g stores the 8 rows' f16
// scales, then the quants transposed in 4-byte chunks, so that one 32-byte
// load holds the same chunk of all 8 rows:
//   Q8_0: u16 d[8] | for chunk c < 8: for row r < 8: 4 bytes (w + 128 as u8,
//         elements 4c..4c+3 of the block)                 = 272 bytes = 8 x 34
//   Q4_0: u16 d[8] | for chunk c < 4: for row r < 8: the block's raw bytes
//         4c..4c+3 (low nibbles: elements 4c..4c+3; high nibbles: elements
//         16+4c..16+4c+3; each is w + 8)                  = 144 bytes = 8 x 18
// Same bytes as the file's layout; the kernels need no shuffles and no sign
// tricks, and the 8 scales convert in one instruction.
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
  // Attention, without fused multiply-add so that every implementation (and
  // the compiler's own vectorisation of the scalar one) rounds alike:
  //   attn_scores: out[p] = dot(q, k + p * stride) / divisor for p < n, where
  //     dot = acc[l] = acc[l] + q[8i+l] * k[8i+l], reduced as above, then
  //     r = r + q[i] * k[i] for the hd % 8 tail
  //   attn_values: out[i] = 0, then for p = 0..n-1 in order:
  //     out[i] = out[i] + a[p] * v[p * stride + i]
  void (*attn_scores)(const float* q, const float* k, int64_t stride, int64_t n, int64_t hd, float divisor,
                      float* out);
  void (*attn_values)(const float* a, const float* v, int64_t stride, int64_t n, int64_t hd, float* out);
  // Element-wise functions with the project's deterministic exp
  // (common/det_math.h), lane for lane the same operations as det_expf:
  //   exp_f32:      out[i] = det_expf(x[i] - bias)        (float subtraction first)
  //   silu_mul_f32: h1[i] = (h1[i] * (1 / (1 + det_expf(-h1[i])))) * h3[i]
  void (*exp_f32)(const float* x, float bias, float* out, int64_t n);
  void (*silu_mul_f32)(float* h1, const float* h3, int64_t n);
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
