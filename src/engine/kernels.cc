// Scalar reference kernels (the canonical definitions, see kernels.h) and the
// run-time choice among kernel sets.
#include "engine/kernels.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <type_traits>

#include "common/check.h"
#include "engine/quant.h"

namespace idlefleet::engine {

void QuantizedRows::resize(int64_t rows_new, int64_t n_new) {
  DCHECK(n_new % 32 == 0);
  rows = rows_new;
  n = n_new;
  qs.resize(static_cast<size_t>(rows * n));
  d.resize(static_cast<size_t>(rows * (n / 32)));
  sum4.resize(static_cast<size_t>(rows * (n / 4)));
}

namespace {

void quantize_rows_scalar(const float* x, int64_t ldx, int64_t r0, int64_t r1, QuantizedRows* out) {
  const int64_t n = out->n;
  for (int64_t r = r0; r < r1; ++r) {
    const float* xr = x + r * ldx;
    int8_t* q = out->qs.data() + r * n;
    float* d = out->d.data() + r * (n / 32);
    int32_t* s4 = out->sum4.data() + r * (n / 4);
    for (int64_t b = 0; b < n / 32; ++b) {
      float amax = 0.0f;
      for (int i = 0; i < 32; ++i) {
        const float v = std::fabs(xr[b * 32 + i]);
        amax = v > amax ? v : amax;
      }
      const float db = amax / 127.0f;
      const float id = db != 0.0f ? 1.0f / db : 0.0f;
      d[b] = db;
      for (int i = 0; i < 32; ++i) {
        // Round half to even, as the hardware's float->int conversion does;
        // non-finite inputs (a diverged model) saturate instead of being UB.
        const float v = std::nearbyint(xr[b * 32 + i] * id);
        const int32_t iv = v >= -127.0f ? (v <= 127.0f ? static_cast<int32_t>(v) : 127) : -127;
        q[b * 32 + i] = static_cast<int8_t>(iv);
      }
      for (int g = 0; g < 8; ++g) {
        const int8_t* qg = q + b * 32 + g * 4;
        s4[b * 8 + g] = qg[0] + qg[1] + qg[2] + qg[3];
      }
    }
  }
}

template <class Block>
constexpr int64_t quant_bytes() { return sizeof(Block) - 2; }  // 32 (Q8_0) or 16 (Q4_0)

// Where row r's block j lives in the interleaved layout (see kernels.h).
template <class Block>
struct Interleaved {
  const uint8_t* data;
  int64_t blocks;  // per row

  static constexpr int64_t kGroupBlockBytes = 2 * kInterleaveRows + kInterleaveRows * quant_bytes<Block>();
  const uint8_t* block(int64_t r, int64_t j) const {
    return data + (r / kInterleaveRows) * blocks * kGroupBlockBytes + j * kGroupBlockBytes;
  }
  uint16_t scale(int64_t r, int64_t j) const {
    uint16_t d;
    std::memcpy(&d, block(r, j) + 2 * (r % kInterleaveRows), 2);
    return d;
  }
  const uint8_t* quants(int64_t r, int64_t j) const {
    return block(r, j) + 2 * kInterleaveRows + (r % kInterleaveRows) * quant_bytes<Block>();
  }
};

// Weight values of one 32-block as int8.
inline void block_weights(const BlockQ8_0*, const uint8_t* qs, int8_t w[32]) { std::memcpy(w, qs, 32); }
inline void block_weights(const BlockQ4_0*, const uint8_t* qs, int8_t w[32]) {
  for (int i = 0; i < 16; ++i) {
    w[i] = static_cast<int8_t>((qs[i] & 15) - 8);
    w[i + 16] = static_cast<int8_t>((qs[i] >> 4) - 8);
  }
}

template <class Block>
void matmul_quant_scalar(const WeightView& w, int64_t r0, int64_t r1, const QuantizedRows& a,
                         int64_t cols, float* y, int64_t ldy) {
  const int64_t nb = w.cols / 32;
  const Interleaved<Block> layout{w.data, nb};
  int8_t wq[32];
  for (int64_t r = r0; r < r1; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const int8_t* aq = a.row_qs(c);
      const float* ad = a.row_d(c);
      float acc[8] = {};
      for (int64_t j = 0; j < nb; ++j) {
        block_weights(static_cast<const Block*>(nullptr), layout.quants(r, j), wq);
        const float s = fp16_to_fp32(layout.scale(r, j)) * ad[j];
        for (int l = 0; l < 8; ++l) {
          int32_t isum = 0;
          for (int i = 0; i < 4; ++i) isum += wq[4 * l + i] * aq[32 * j + 4 * l + i];
          acc[l] = std::fma(static_cast<float>(isum), s, acc[l]);
        }
      }
      y[c * ldy + r] = reduce_lanes8(acc);
    }
  }
}

template <class Block>
void interleave(const uint8_t* src, int64_t rows, int64_t cols, uint8_t* dst) {
  const int64_t nb = cols / 32;
  constexpr int64_t qb = quant_bytes<Block>();
  const Interleaved<Block> layout{dst, nb};
  for (int64_t r = 0; r < rows; ++r) {
    const Block* row = reinterpret_cast<const Block*>(src + static_cast<size_t>(r) * nb * sizeof(Block));
    for (int64_t j = 0; j < nb; ++j) {
      uint8_t* blk = const_cast<uint8_t*>(layout.block(r, j));
      std::memcpy(blk + 2 * (r % kInterleaveRows), &row[j].d, 2);
      std::memcpy(const_cast<uint8_t*>(layout.quants(r, j)), row[j].qs, qb);
    }
  }
}

template <class Block>
void dequantize_interleaved(const uint8_t* data, int64_t cols, int64_t r, float* out) {
  const Interleaved<Block> layout{data, cols / 32};
  Block b;
  for (int64_t j = 0; j < cols / 32; ++j) {
    b.d = layout.scale(r, j);
    std::memcpy(b.qs, layout.quants(r, j), quant_bytes<Block>());
    if constexpr (std::is_same_v<Block, BlockQ8_0>) {
      dequantize_row_q8_0(&b, out + 32 * j, 32);
    } else {
      dequantize_row_q4_0(&b, out + 32 * j, 32);
    }
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

float dot_f32_scalar(const float* a, const float* b, int64_t n) {
  const int64_t n8 = n - n % 8;
  float acc[8] = {};
  for (int64_t i = 0; i < n8; i += 8) {
    for (int l = 0; l < 8; ++l) acc[l] = acc[l] + a[i + l] * b[i + l];
  }
  float r = reduce_lanes8(acc);
  for (int64_t i = n8; i < n; ++i) r = r + a[i] * b[i];
  return r;
}

void axpy_f32_scalar(float alpha, const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = y[i] + alpha * x[i];
}

const KernelSet kScalar = {
    "scalar",
    quantize_rows_scalar,
    matmul_quant_scalar<BlockQ8_0>,
    matmul_quant_scalar<BlockQ4_0>,
    matmul_float_scalar<float>,
    matmul_float_scalar<uint16_t>,
    dot_f32_scalar,
    axpy_f32_scalar,
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
