// Scalar reference kernels (the canonical definitions, see kernels.h) and the
// run-time choice among kernel sets.
#include "engine/kernels.h"

#include <cfloat>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <type_traits>

#include "common/check.h"
#include "common/det_math.h"
#include "engine/quant.h"

namespace idlefleet::engine {

void QuantizedRows::resize(int64_t rows_new, int64_t n_new) {
  DCHECK(n_new % 32 == 0);
  rows = rows_new;
  n = n_new;
  qs.resize(static_cast<size_t>(rows * n));
  d.resize(static_cast<size_t>(rows * (n / 32)));
  bias_q8.resize(static_cast<size_t>(rows * (n / 32)));
  bias_q4.resize(static_cast<size_t>(rows * (n / 32)));
}

namespace {

void quantize_rows_scalar(const float* x, int64_t ldx, int64_t r0, int64_t r1, QuantizedRows* out) {
  const int64_t n = out->n;
  for (int64_t r = r0; r < r1; ++r) {
    const float* xr = x + r * ldx;
    for (int64_t b = 0; b < n / 32; ++b) {
      int8_t* q = out->block_qs(b, r);
      float amax = 0.0f;
      for (int i = 0; i < 32; ++i) {
        const float v = std::fabs(xr[b * 32 + i]);
        amax = v > amax ? v : amax;
      }
      float db = amax / 127.0f;
      float id = db != 0.0f ? 1.0f / db : 0.0f;
      if (!(id <= FLT_MAX)) {  // a block so tiny that 1/d overflows: all zeros
        db = 0.0f;
        id = 0.0f;
      }
      int32_t sum = 0;
      for (int i = 0; i < 32; ++i) {
        // Round half to even, as the hardware's float->int conversion does;
        // non-finite inputs (a diverged model) saturate instead of being UB.
        const float v = std::nearbyint(xr[b * 32 + i] * id);
        const int32_t iv = v >= -127.0f ? (v <= 127.0f ? static_cast<int32_t>(v) : 127) : -127;
        q[i] = static_cast<int8_t>(iv);
        sum += iv;
      }
      const size_t k = out->block_index(b, r);
      out->d[k] = db;
      out->bias_q8[k] = -128 * sum;
      out->bias_q4[k] = -8 * sum;
    }
  }
}

// Where row r's block j lives in the interleaved layout (see kernels.h).
template <class Block>
struct Interleaved {
  static constexpr int64_t kChunks = std::is_same_v<Block, BlockQ8_0> ? 8 : 4;
  static constexpr int64_t kGroupBlockBytes = 2 * kInterleaveRows + kChunks * 4 * kInterleaveRows;

  const uint8_t* data;
  int64_t blocks;  // per row

  uint8_t* block(int64_t r, int64_t j) const {
    return const_cast<uint8_t*>(data) + (r / kInterleaveRows) * blocks * kGroupBlockBytes + j * kGroupBlockBytes;
  }
  uint8_t* scale(int64_t r, int64_t j) const { return block(r, j) + 2 * (r % kInterleaveRows); }
  uint8_t* chunk(int64_t r, int64_t j, int64_t c) const {
    return block(r, j) + 2 * kInterleaveRows + (c * kInterleaveRows + r % kInterleaveRows) * 4;
  }
};

// The 32 weights of row r's block j as signed values.
template <class Block>
void block_weights(const Interleaved<Block>& layout, int64_t r, int64_t j, int8_t w[32]) {
  for (int64_t c = 0; c < Interleaved<Block>::kChunks; ++c) {
    const uint8_t* p = layout.chunk(r, j, c);
    for (int i = 0; i < 4; ++i) {
      if constexpr (std::is_same_v<Block, BlockQ8_0>) {
        w[4 * c + i] = static_cast<int8_t>(p[i] ^ 0x80);
      } else {
        w[4 * c + i] = static_cast<int8_t>((p[i] & 15) - 8);
        w[16 + 4 * c + i] = static_cast<int8_t>((p[i] >> 4) - 8);
      }
    }
  }
}

uint16_t load_u16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

template <class Block>
void matmul_quant_scalar(const WeightView& w, int64_t r0, int64_t r1, const QuantizedRows& a,
                         int64_t cols, float* y, int64_t ldy) {
  const int64_t nb = w.cols / 32;
  const Interleaved<Block> layout{w.data, nb};
  int8_t wq[32];
  for (int64_t r = r0; r < r1; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      float acc = 0.0f;
      for (int64_t j = 0; j < nb; ++j) {
        block_weights(layout, r, j, wq);
        const int8_t* aq = a.block_qs(j, c);
        int32_t isum = 0;
        for (int i = 0; i < 32; ++i) isum += wq[i] * aq[i];
        const float s = fp16_to_fp32(load_u16(layout.scale(r, j))) * a.d[a.block_index(j, c)];
        acc = std::fma(static_cast<float>(isum), s, acc);
      }
      y[c * ldy + r] = acc;
    }
  }
}

template <class Block>
void interleave(const uint8_t* src, int64_t rows, int64_t cols, uint8_t* dst) {
  const int64_t nb = cols / 32;
  const Interleaved<Block> layout{dst, nb};
  for (int64_t r = 0; r < rows; ++r) {
    const Block* row = reinterpret_cast<const Block*>(src + static_cast<size_t>(r) * nb * sizeof(Block));
    for (int64_t j = 0; j < nb; ++j) {
      std::memcpy(layout.scale(r, j), &row[j].d, 2);
      for (int64_t c = 0; c < Interleaved<Block>::kChunks; ++c) {
        uint8_t* out = layout.chunk(r, j, c);
        for (int i = 0; i < 4; ++i) {
          if constexpr (std::is_same_v<Block, BlockQ8_0>) {
            out[i] = static_cast<uint8_t>(row[j].qs[4 * c + i]) ^ 0x80;
          } else {
            out[i] = row[j].qs[4 * c + i];
          }
        }
      }
    }
  }
}

template <class Block>
void dequantize_interleaved(const uint8_t* data, int64_t cols, int64_t r, float* out) {
  const Interleaved<Block> layout{data, cols / 32};
  int8_t w[32];
  for (int64_t j = 0; j < cols / 32; ++j) {
    block_weights(layout, r, j, w);
    const float d = fp16_to_fp32(load_u16(layout.scale(r, j)));
    for (int i = 0; i < 32; ++i) out[32 * j + i] = d * static_cast<float>(w[i]);
  }
}

inline float weight_value(const float* w, int64_t i) { return w[i]; }
inline float weight_value(const uint16_t* w, int64_t i) { return fp16_to_fp32(w[i]); }

template <class W>
void matmul_float_scalar(const WeightView& w, int64_t r0, int64_t r1, const float* x, int64_t ldx,
                         int64_t cols, float* y, int64_t ldy) {
  const int64_t k = w.cols;
  const int64_t k8 = k - k % 8;
  for (int64_t r = r0; r < r1; ++r) {
    const W* wr = reinterpret_cast<const W*>(w.data + r * w.row_bytes);
    for (int64_t c = 0; c < cols; ++c) {
      const float* xc = x + c * ldx;
      float acc[8] = {};
      for (int64_t i = 0; i < k8; i += 8) {
        for (int l = 0; l < 8; ++l) acc[l] = std::fma(weight_value(wr, i + l), xc[i + l], acc[l]);
      }
      float result = reduce_lanes8(acc);
      for (int64_t i = k8; i < k; ++i) result = std::fma(weight_value(wr, i), xc[i], result);
      y[c * ldy + r] = result;
    }
  }
}

void attn_scores_scalar(const float* q, const float* k, int64_t stride, int64_t n, int64_t hd, float divisor,
                        float* out) {
  const int64_t h8 = hd - hd % 8;
  for (int64_t p = 0; p < n; ++p) {
    const float* kp = k + p * stride;
    float acc[8] = {};
    for (int64_t i = 0; i < h8; i += 8) {
      for (int l = 0; l < 8; ++l) acc[l] = acc[l] + q[i + l] * kp[i + l];
    }
    float r = reduce_lanes8(acc);
    for (int64_t i = h8; i < hd; ++i) r = r + q[i] * kp[i];
    out[p] = r / divisor;
  }
}

void attn_values_scalar(const float* a, const float* v, int64_t stride, int64_t n, int64_t hd, float* out) {
  for (int64_t i = 0; i < hd; ++i) out[i] = 0.0f;
  for (int64_t p = 0; p < n; ++p) {
    for (int64_t i = 0; i < hd; ++i) out[i] = out[i] + a[p] * v[p * stride + i];
  }
}

void exp_f32_scalar(const float* x, float bias, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = det_expf(x[i] - bias);
}

void silu_mul_f32_scalar(float* h1, const float* h3, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    float val = h1[i];
    val *= 1.0f / (1.0f + det_expf(-val));
    val *= h3[i];
    h1[i] = val;
  }
}

const KernelSet kScalar = {
    "scalar",
    quantize_rows_scalar,
    matmul_quant_scalar<BlockQ8_0>,
    matmul_quant_scalar<BlockQ4_0>,
    matmul_float_scalar<float>,
    matmul_float_scalar<uint16_t>,
    attn_scores_scalar,
    attn_values_scalar,
    exp_f32_scalar,
    silu_mul_f32_scalar,
};

}  // namespace

// Defined in kernels_avx2.cc / kernels_avx512.cc, compiled for those ISAs.
const KernelSet& avx2_kernel_set();
const KernelSet& avx512_kernel_set();

const KernelSet& scalar_kernels() { return kScalar; }

size_t interleaved_bytes(TensorType type, int64_t rows, int64_t cols) {
  const int64_t groups = (rows + kInterleaveRows - 1) / kInterleaveRows;
  return static_cast<size_t>(groups * kInterleaveRows) * tensor_bytes(type, static_cast<uint64_t>(cols));
}

void interleave_rows(TensorType type, const uint8_t* src, int64_t rows, int64_t cols, uint8_t* dst) {
  if (type == TensorType::kQ8_0) {
    interleave<BlockQ8_0>(src, rows, cols, dst);
  } else {
    CHECK(type == TensorType::kQ4_0);
    interleave<BlockQ4_0>(src, rows, cols, dst);
  }
}

void dequantize_weight_row(const WeightView& w, int64_t row, float* out) {
  const uint8_t* p = w.data + static_cast<size_t>(row) * w.row_bytes;
  switch (w.type) {
    case TensorType::kF32: std::memcpy(out, p, static_cast<size_t>(w.cols) * sizeof(float)); break;
    case TensorType::kF16: dequantize_row_f16(reinterpret_cast<const uint16_t*>(p), out, w.cols); break;
    case TensorType::kQ8_0: dequantize_interleaved<BlockQ8_0>(w.data, w.cols, row, out); break;
    case TensorType::kQ4_0: dequantize_interleaved<BlockQ4_0>(w.data, w.cols, row, out); break;
    default: CHECK(false);
  }
}

const KernelSet* avx2_kernels() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return &avx2_kernel_set();
  return nullptr;
}

const KernelSet* avx512_kernels() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni") &&
      __builtin_cpu_supports("fma") && __builtin_cpu_supports("avx512dq")) {
    return &avx512_kernel_set();
  }
  return nullptr;
}

std::vector<const KernelSet*> available_kernels() {
  std::vector<const KernelSet*> sets{&kScalar};
  if (const KernelSet* k = avx2_kernels()) sets.push_back(k);
  if (const KernelSet* k = avx512_kernels()) sets.push_back(k);
  return sets;
}

const KernelSet& best_kernels() {
  static const KernelSet* chosen = [] {
    const std::vector<const KernelSet*> sets = available_kernels();
    if (const char* want = std::getenv("IDLEFLEET_KERNELS"); want != nullptr && *want != '\0') {
      for (const KernelSet* k : sets) {
        if (std::string_view(k->name) == want) return k;
      }
      std::fprintf(stderr, "warning: IDLEFLEET_KERNELS=%s is not available here; using %s\n", want,
                   sets.back()->name);
    }
    return sets.back();
  }();
  return *chosen;
}

}  // namespace idlefleet::engine
