// sampler_bench: cost of one Sampler::sample call at a llama vocabulary
// (32000 logits), per configuration, and of compute_logprobs, as CPU time of this thread (best of
// several batches: wall time on a shared machine measures the neighbours).
//
//   build/release/bin/sampler_bench
#include <time.h>

#include <algorithm>
#include <cstdio>
#include <vector>

#include "common/random.h"
#include "engine/sampler.h"

int main() {
  using namespace idlefleet;
  using namespace idlefleet::engine;
  constexpr int kVocab = 32000;
  std::vector<float> logits(kVocab);
  Rng rng(23);
  // Roughly the shape of real logits: most small, a few large.
  for (float& l : logits) l = (rng.uniform_float() - 0.5f) * 8 + (rng.below(500) == 0 ? 10 : 0);
  // 512 tokens of history: a 256-token prompt, then 256 produced.
  std::vector<int32_t> history(512);
  for (int32_t& id : history) id = static_cast<int32_t>(rng.below(kVocab));
  constexpr size_t kPromptTokens = 256;

  auto sampling = [](float t) {
    SamplerParams p;
    p.temperature = t;
    p.seed = 7;
    return p;
  };
  SamplerParams typical = sampling(0.8f);
  typical.top_k = 40;
  typical.top_p = 0.95f;
  typical.repeat_penalty = 1.1f;
  SamplerParams openai = sampling(0.8f);
  openai.top_p = 0.95f;
  openai.presence_penalty = 0.5f;
  openai.frequency_penalty = 0.5f;
  SamplerParams nucleus_only = sampling(0.8f);
  nucleus_only.top_p = 0.9f;
  const std::pair<const char*, SamplerParams> configs[] = {{"greedy", SamplerParams{}},
                                                           {"top_k 40, top_p 0.95, penalty", typical},
                                                           {"top_p 0.95, presence+frequency", openai},
                                                           {"top_p 0.9", nucleus_only},
                                                           {"temperature 1", sampling(1.0f)},
                                                           {"temperature 100", sampling(kTemperatureMax)}};
  const auto cpu_ms = [] {
    timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return static_cast<double>(t.tv_sec) * 1e3 + static_cast<double>(t.tv_nsec) * 1e-6;
  };
  std::printf("sampler_bench: vocabulary %d, best of 5 batches of 40 calls\n", kVocab);
  for (const auto& [name, params] : configs) {
    const Sampler s(params);
    int64_t checksum = 0;
    double best_ms = 1e9;
    for (int batch = 0; batch < 5; ++batch) {
      const double start = cpu_ms();
      for (int i = 0; i < 40; ++i) checksum += s.sample(logits, history, kPromptTokens, static_cast<uint64_t>(batch * 40 + i));
      best_ms = std::min(best_ms, (cpu_ms() - start) / 40);
    }
    std::printf("%-32s %.3f ms per call (checksum %lld)\n", name, best_ms, static_cast<long long>(checksum));
  }
  // Logprobs, which a generation pays for only when it asks.
  for (int32_t top_n : {0, kTopLogprobsMax}) {
    TokenLogprobs out;
    double sum = 0;
    double best_ms = 1e9;
    for (int batch = 0; batch < 5; ++batch) {
      const double start = cpu_ms();
      for (int i = 0; i < 40; ++i) {
        compute_logprobs(logits, i, top_n, &out);
        sum += out.chosen.logprob;
      }
      best_ms = std::min(best_ms, (cpu_ms() - start) / 40);
    }
    std::printf("logprobs, top %-18d %.3f ms per call (checksum %.3f)\n", top_n, best_ms, sum);
  }
  return 0;
}
