// Weight formats in ggml's block layouts, and scalar conversions between them.
//
// A row of n elements (n a multiple of 32 for the block types) is stored as
// n/32 blocks:
//   Q8_0: { f16 d; int8 qs[32]; }      34 bytes; x[i] = d * qs[i]
//   Q4_0: { f16 d; uint8 qs[16]; }     18 bytes; x[i] = d * ((qs[i] & 15) - 8),
//         x[i + 16] = d * ((qs[i] >> 4) - 8) for i < 16
//   F16:  IEEE binary16 per element.
// These are the layouts llama.cpp reads and writes, so files made by either
// tool load in the other.
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>

namespace idlefleet::engine {

inline constexpr int kQuantBlock = 32;  // elements per Q8_0 / Q4_0 block

struct BlockQ8_0 {
  uint16_t d;       // f16 scale
  int8_t qs[32];
};
static_assert(sizeof(BlockQ8_0) == 34);

struct BlockQ4_0 {
  uint16_t d;       // f16 scale
  uint8_t qs[16];   // element i in the low nibble of qs[i], i+16 in the high
};
static_assert(sizeof(BlockQ4_0) == 18);

// IEEE binary16 <-> binary32, round to nearest even, NaN and infinity kept;
// bit-for-bit what F16C's vcvtps2ph (imm 0) and vcvtph2ps give.
float fp16_to_fp32(uint16_t h);
uint16_t fp32_to_fp16(float f);

// REQUIRES: n % 32 == 0 for the block formats.
void quantize_row_q8_0(const float* x, BlockQ8_0* y, int64_t n);
void quantize_row_q4_0(const float* x, BlockQ4_0* y, int64_t n);
void quantize_row_f16(const float* x, uint16_t* y, int64_t n);
void dequantize_row_q8_0(const BlockQ8_0* x, float* y, int64_t n);
void dequantize_row_q4_0(const BlockQ4_0* x, float* y, int64_t n);
void dequantize_row_f16(const uint16_t* x, float* y, int64_t n);

}  // namespace idlefleet::engine
