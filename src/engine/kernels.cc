// Scalar reference kernels (the canonical definitions, see kernels.h) and the
// run-time choice among kernel sets.
#include "engine/kernels.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string_view>

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

// Weight values of one 32-block as int8, for either block format.
inline void block_weights(const BlockQ8_0& b, int8_t w[32]) { std::memcpy(w, b.qs, 32); }
inline void block_weights(const BlockQ4_0& b, int8_t w[32]) {
  for (int i = 0; i < 16; ++i) {
    w[i] = static_cast<int8_t>((b.qs[i] & 15) - 8);
    w[i + 16] = static_cast<int8_t>((b.qs[i] >> 4) - 8);
  }
}

template <class Block>
void matmul_quant_scalar(const WeightView& w, int64_t r0, int64_t r1, const QuantizedRows& a,
                         int64_t cols, float* y, int64_t ldy) {
  const int64_t nb = w.cols / 32;
  int8_t wq[32];
  for (int64_t r = r0; r < r1; ++r) {
    const Block* wr = reinterpret_cast<const Block*>(w.data + r * w.row_bytes);
    for (int64_t c = 0; c < cols; ++c) {
      const int8_t* aq = a.row_qs(c);
      const float* ad = a.row_d(c);
      float acc[8] = {};
      for (int64_t j = 0; j < nb; ++j) {
        block_weights(wr[j], wq);
        const float s = fp16_to_fp32(wr[j].d) * ad[j];
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

const KernelSet kScalar = {
    "scalar",
    quantize_rows_scalar,
    matmul_quant_scalar<BlockQ8_0>,
    matmul_quant_scalar<BlockQ4_0>,
    matmul_float_scalar<float>,
    matmul_float_scalar<uint16_t>,
};

}  // namespace

// Defined in kernels_avx2.cc / kernels_avx512.cc, compiled for those ISAs.
const KernelSet& avx2_kernel_set();
const KernelSet& avx512_kernel_set();

const KernelSet& scalar_kernels() { return kScalar; }

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
