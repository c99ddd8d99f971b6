// engine_bench: prefill and decode tokens/s for synthetic models in real
// shapes, and the share of the memory-bandwidth ceiling reached in decode.
//
//   build/release/bin/engine_bench [--threads 2] [--runs 9] [--models DIR]
//                                  [--shapes tiny110m,tinyllama1b] [--types q8_0,q4_0]
//
// Models are synthesised on first use into DIR (default build/bench-models),
// so no download is needed; the same files load in llama.cpp. Each figure is
// the median of --runs runs. Prefill evaluates a 128-token prompt as one
// batch; decode evaluates 64 tokens one at a time after a one-token prompt
// (as llama-bench's pp128 / tg tests do). The read bandwidth is measured in
// the same run with the same thread count, because this machine is shared and
// its bandwidth varies: ceiling share = weight bytes per token x decode
// tokens/s / read bandwidth, per run (probed just before and after it), then
// the median. --profile adds where decode time goes (matrix products,
// attention, the rest), a ratio that hardly moves with the bandwidth.
#include <immintrin.h>
#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "engine/model.h"
#include "engine/model_tools.h"
#include "engine/page_buffer.h"

namespace {

using namespace idlefleet::engine;
using Clock = std::chrono::steady_clock;

double seconds(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

__attribute__((target("avx2"))) uint64_t read_range(const uint8_t* p, size_t bytes) {
  __m256i acc0 = _mm256_setzero_si256(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
  for (size_t i = 0; i + 128 <= bytes; i += 128) {
    acc0 = _mm256_xor_si256(acc0, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i)));
    acc1 = _mm256_xor_si256(acc1, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 32)));
    acc2 = _mm256_xor_si256(acc2, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 64)));
    acc3 = _mm256_xor_si256(acc3, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 96)));
  }
  const __m256i x = _mm256_xor_si256(_mm256_xor_si256(acc0, acc1), _mm256_xor_si256(acc2, acc3));
  return static_cast<uint64_t>(_mm256_extract_epi64(x, 0) ^ _mm256_extract_epi64(x, 3));
}

// Read bandwidth (GB/s) of `threads` threads streaming once through a
// buffer much larger than the caches.
class BandwidthProbe {
 public:
  // The buffer lives in huge pages, like the engine's repacked weights, so
  // that both are read under the same conditions.
  explicit BandwidthProbe(size_t bytes) : pages_(bytes), bytes_(bytes) {
    buf_ = pages_.data();
    std::memset(buf_, 1, bytes);
  }

  double measure(int threads) {
    std::vector<std::thread> ts;
    std::vector<uint64_t> out(static_cast<size_t>(threads));
    const auto t0 = Clock::now();
    for (int t = 0; t < threads; ++t) {
      ts.emplace_back([&, t] {
        const size_t chunk = bytes_ / static_cast<size_t>(threads);
        out[static_cast<size_t>(t)] = read_range(buf_ + chunk * static_cast<size_t>(t), chunk);
      });
    }
    for (auto& t : ts) t.join();
    const auto t1 = Clock::now();
    for (uint64_t v : out) sink_ = sink_ ^ v;
    return static_cast<double>(bytes_) / seconds(t0, t1) / 1e9;
  }

 private:
  PageBuffer pages_;
  uint8_t* buf_;
  size_t bytes_;
  volatile uint64_t sink_ = 0;
};

struct Reference {
  const char* shape;
  const char* type;
  double prefill, decode;  // llama.cpp on this machine, 2 threads (issue #2)
};
constexpr Reference kLlamaCpp[] = {
    {"tiny110m", "q8_0", 786, 176}, {"tiny110m", "q4_0", 1060, 284},
    {"tinyllama1b", "q8_0", 83, 25.2}, {"tinyllama1b", "q4_0", 104, 42.2},
};

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= s.size()) {
    const size_t end = s.find(',', start);
    out.push_back(s.substr(start, end == std::string::npos ? std::string::npos : end - start));
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 2, runs = 9;
  int64_t prompt_tokens = 128, decode_tokens = 64;
  bool profile = false;  // also print where decode time goes
  std::string dir = "build/bench-models";
  std::string shapes = "tiny110m,tinyllama1b", types = "q8_0,q4_0";
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "error: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--threads") threads = std::stoi(value());
    else if (a == "--runs") runs = std::stoi(value());
    else if (a == "--models") dir = value();
    else if (a == "--shapes") shapes = value();
    else if (a == "--types") types = value();
    else if (a == "--decode-tokens") decode_tokens = std::stoll(value());
    else if (a == "--prompt-tokens") prompt_tokens = std::stoll(value());
    else if (a == "--profile") profile = true;
    else {
      std::fprintf(stderr, "usage: engine_bench [--threads N] [--runs N] [--models DIR] [--shapes a,b] [--types a,b] [--decode-tokens N] [--prompt-tokens N] [--profile]\n");
      return 2;
    }
  }
  if (threads < 1 || threads > kThreadsMax || runs < 1 || decode_tokens < 1 || prompt_tokens < 1) {
    std::fprintf(stderr, "error: --threads, --runs, --decode-tokens and --prompt-tokens must be positive\n");
    return 2;
  }
  std::filesystem::create_directories(dir);
  std::printf("engine_bench: %d threads, median of %d runs, prefill %lld tokens, decode %lld tokens, kernels %s\n",
              threads, runs, static_cast<long long>(prompt_tokens), static_cast<long long>(decode_tokens),
              best_kernels().name);
  // The machine is shared and its bandwidth drifts, so the probe runs right
  // before and right after every decode run, and each run's share of the
  // ceiling is computed against the mean of its own probes; the table shows
  // medians.
  BandwidthProbe probe(size_t{1} << 30);
  std::printf("%-12s %-5s %9s %9s %7s %9s %9s %7s %8s %7s %8s\n", "model", "type", "prefill", "llama.cpp", "ratio",
              "decode", "llama.cpp", "ratio", "GB/tok", "GB/s", "ceiling");

  ThreadPool pool(threads);
  for (const std::string& shape : split(shapes)) {
    for (const std::string& type : split(types)) {
      const std::string path = dir + "/" + shape + "-" + type + ".gguf";
      if (!std::filesystem::exists(path)) {
        auto t = weight_type_from_name(type);
        if (!t) {
          std::fprintf(stderr, "error: %s\n", t.error().to_string().c_str());
          return 1;
        }
        std::fprintf(stderr, "synthesising %s ...\n", path.c_str());
        auto st = synth_model(SynthOptions{shape, *t, 1}, path);
        if (!st) {
          std::fprintf(stderr, "error: %s\n", st.error().to_string().c_str());
          return 1;
        }
      }
      auto model = Model::load(path);
      if (!model) {
        std::fprintf(stderr, "error: %s\n", model.error().to_string().c_str());
        return 1;
      }
      const Model& m = **model;
      Context ctx(m, prompt_tokens + decode_tokens + 8, &pool);
      std::vector<int32_t> prompt(static_cast<size_t>(prompt_tokens));
      for (size_t i = 0; i < prompt.size(); ++i) prompt[i] = static_cast<int32_t>(3 + (i * 7919) % (m.config().vocab_size - 3));
      std::vector<double> prefill, decode, bandwidth, share, in_matmul, in_attention;
      const double gb_per_token = static_cast<double>(m.weight_bytes_per_token()) / 1e9;
      for (int r = 0; r <= runs; ++r) {  // run 0 warms up (page faults, caches)
        ctx.rewind(0);
        const auto t0 = Clock::now();
        auto logits = ctx.eval(prompt);
        const auto t1 = Clock::now();
        if (!logits) {
          std::fprintf(stderr, "error: %s\n", logits.error().to_string().c_str());
          return 1;
        }
        ctx.rewind(0);
        int32_t token = 1;
        (void)ctx.eval(std::span(&token, 1));
        const double gbs_before = probe.measure(threads);
        ctx.enable_profile(profile);
        const auto t2 = Clock::now();
        for (int64_t i = 0; i < decode_tokens; ++i) {
          auto l = ctx.eval(std::span(&token, 1));
          token = static_cast<int32_t>(std::max_element(l->begin(), l->end()) - l->begin());
        }
        const auto t3 = Clock::now();
        ctx.enable_profile(false);
        const double decode_seconds = seconds(t2, t3);
        if (profile) {
          in_matmul.push_back(ctx.profile().matmul_seconds / decode_seconds);
          in_attention.push_back(ctx.profile().attention_seconds / decode_seconds);
        }
        // The bandwidth drifts on a shared machine: take the mean of probes
        // right before and right after the decode run.
        const double gbs = 0.5 * (gbs_before + probe.measure(threads));
        if (r == 0) continue;
        prefill.push_back(static_cast<double>(prompt_tokens) / seconds(t0, t1));
        decode.push_back(static_cast<double>(decode_tokens) / seconds(t2, t3));
        bandwidth.push_back(gbs);
        share.push_back(gb_per_token * decode.back() / gbs);
      }
      const double p = median(prefill), d = median(decode);
      double ref_p = 0, ref_d = 0;
      for (const Reference& ref : kLlamaCpp) {
        if (shape == ref.shape && type == ref.type) ref_p = ref.prefill, ref_d = ref.decode;
      }
      std::printf("%-12s %-5s %9.1f %9.1f %6.2fx %9.1f %9.1f %6.2fx %8.3f %7.1f %7.1f%%\n", shape.c_str(),
                  type.c_str(), p, ref_p, ref_p > 0 ? p / ref_p : 0.0, d, ref_d, ref_d > 0 ? d / ref_d : 0.0,
                  gb_per_token, median(bandwidth), 100.0 * median(share));
      if (profile) {
        // Time outside the matrix products is what keeps decode below the
        // bandwidth ceiling; unlike the ceiling share, this ratio hardly moves
        // with the machine's bandwidth.
        std::printf("  decode time: %.1f%% in matrix products, %.1f%% in attention, %.1f%% elsewhere\n",
                    100.0 * median(in_matmul), 100.0 * median(in_attention),
                    100.0 * (1.0 - median(in_matmul) - median(in_attention)));
      }
      std::fflush(stdout);
    }
  }
  std::printf("\nGB/s: read bandwidth of %d threads over 1 GiB, mean of probes before and after each decode run\n"
              "ceiling: median over runs of weight bytes per token x decode tokens/s / that run's bandwidth\n",
              threads);
  return 0;
}
