// The project's own pseudo-random numbers.
//
// Never std::*_distribution: their output differs between standard libraries,
// and a seed must reproduce a run anywhere. Two tools:
//  - Rng: a sequential generator (xoshiro256**, seeded through SplitMix64),
//    for synthetic weights, simulations and tests.
//  - counter_random(seed, counter): a stateless draw that depends only on its
//    two arguments, so that the sampler's draw at position p is the same in any
//    process that resumes a generation at p.
//
// Thread-safety: Rng is a value; use one per thread. counter_random is pure.
#pragma once

#include <cstdint>

namespace idlefleet {

// SplitMix64's finaliser: a bijective 64-bit mix.
constexpr uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// A 64-bit value determined by (seed, counter) alone.
constexpr uint64_t counter_random(uint64_t seed, uint64_t counter) {
  return mix64(mix64(seed ^ 0x9e3779b97f4a7c15ULL) + counter * 0x9e3779b97f4a7c15ULL);
}

// Uniform in [0, 1) with 53 bits (double) or 24 bits (float) of precision.
constexpr double to_unit_double(uint64_t r) { return static_cast<double>(r >> 11) * 0x1.0p-53; }
constexpr float to_unit_float(uint64_t r) { return static_cast<float>(r >> 40) * 0x1.0p-24f; }

class Rng {
 public:
  explicit Rng(uint64_t seed) {
    uint64_t z = seed;
    for (auto& s : s_) {
      z += 0x9e3779b97f4a7c15ULL;
      s = mix64(z);
    }
  }

  uint64_t next() {
    const uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
  }

  double uniform() { return to_unit_double(next()); }
  float uniform_float() { return to_unit_float(next()); }
  // Uniform integer in [0, n), n > 0 (Lemire's multiply-shift, slight bias
  // below 2^-32 for our n, acceptable for simulation and synthetic data).
  uint64_t below(uint64_t n) {
    return static_cast<uint64_t>((static_cast<unsigned __int128>(next()) * n) >> 64);
  }

 private:
  static constexpr uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t s_[4];
};

}  // namespace idlefleet
