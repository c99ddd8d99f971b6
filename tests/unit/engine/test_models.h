// Helpers for engine tests: small synthetic llama models of any weight type,
// and the path to the project's shared test models.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "common/random.h"
#include "engine/gguf.h"
#include "engine/model.h"
#include "engine/model_format.h"
#include "engine/quant.h"

namespace idlefleet::engine::testing {

// ../shared/models beside the checkout, or "" when absent. Absent is only
// acceptable outside CI: under CI=... the caller fails instead of skipping.
inline std::string shared_models_dir() {
  const std::filesystem::path dir = std::filesystem::path(IDLEFLEET_SOURCE_DIR) / ".." / "shared" / "models";
  return std::filesystem::exists(dir / "stories260K.bin") ? dir.string() : std::string();
}

#define REQUIRE_SHARED_MODELS(dir)                                                                    \
  do {                                                                                                \
    if ((dir).empty()) {                                                                              \
      if (std::getenv("CI") != nullptr) FAIL() << "../shared/models is missing under CI";            \
      std::fprintf(stderr, "\n*** SKIPPING: ../shared/models is absent; the reference-model test "   \
                           "did not run ***\n\n");                                                    \
      GTEST_SKIP() << "../shared/models is absent";                                                   \
    }                                                                                                 \
  } while (0)

struct TinyShape {
  int64_t dim = 64, hidden = 96, layers = 2, heads = 4, kv_heads = 2, context = 96;
};

// A byte-level vocabulary: <unk>, <s>, </s>, 256 byte tokens, then a few
// merged pieces, so any text encodes.
inline void add_tiny_tokenizer(GgufWriter& w, int64_t* vocab) {
  std::vector<std::string> pieces = {"<unk>", "<s>", "</s>"};
  std::vector<float> scores = {0, 0, 0};
  std::vector<int32_t> types = {2, 3, 3};
  char buf[8];
  for (int b = 0; b < 256; ++b) {
    std::snprintf(buf, sizeof buf, "<0x%02X>", b);
    pieces.push_back(buf);
    scores.push_back(0);
    types.push_back(6);
  }
  const char* extra[] = {"\xe2\x96\x81", "e", "t", "a", "o", "\xe2\x96\x81t", "he", "\xe2\x96\x81the", "in", "er"};
  float s = -1.0f;
  for (const char* p : extra) {
    pieces.push_back(p);
    scores.push_back(s);
    s -= 1.0f;
    types.push_back(1);
  }
  *vocab = static_cast<int64_t>(pieces.size());
  w.add_string(gguf_keys::kTokenizerModel, "llama");
  w.add_string_array(gguf_keys::kTokens, pieces);
  w.add_float32_array(gguf_keys::kScores, scores);
  w.add_int32_array(gguf_keys::kTokenType, types);
  w.add_uint32(gguf_keys::kBosId, 1);
  w.add_uint32(gguf_keys::kEosId, 2);
  w.add_uint32(gguf_keys::kUnknownId, 0);
}

inline std::vector<uint8_t> encode_rows(TensorType type, const std::vector<float>& x, int64_t cols) {
  const int64_t rows = static_cast<int64_t>(x.size()) / cols;
  const size_t row_bytes = tensor_bytes(type, static_cast<uint64_t>(cols));
  std::vector<uint8_t> out(row_bytes * static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) {
    const float* src = x.data() + r * cols;
    uint8_t* dst = out.data() + r * row_bytes;
    switch (type) {
      case TensorType::kF32: std::memcpy(dst, src, row_bytes); break;
      case TensorType::kF16: quantize_row_f16(src, reinterpret_cast<uint16_t*>(dst), cols); break;
      case TensorType::kQ8_0: quantize_row_q8_0(src, reinterpret_cast<BlockQ8_0*>(dst), cols); break;
      case TensorType::kQ4_0: quantize_row_q4_0(src, reinterpret_cast<BlockQ4_0*>(dst), cols); break;
      default: ADD_FAILURE();
    }
  }
  return out;
}

// Serialised GGUF bytes of a random tiny llama whose matrices are `type`.
inline std::vector<uint8_t> make_tiny_model(TensorType type, uint64_t seed, bool tied = false,
                                            TinyShape s = {}) {
  GgufWriter w;
  int64_t vocab = 0;
  w.add_string(gguf_keys::kArchitecture, "llama");
  w.add_string(gguf_keys::kName, "tiny-test");
  w.add_uint32(gguf_keys::kContextLength, static_cast<uint32_t>(s.context));
  w.add_uint32(gguf_keys::kEmbeddingLength, static_cast<uint32_t>(s.dim));
  w.add_uint32(gguf_keys::kBlockCount, static_cast<uint32_t>(s.layers));
  w.add_uint32(gguf_keys::kFeedForwardLength, static_cast<uint32_t>(s.hidden));
  w.add_uint32(gguf_keys::kHeadCount, static_cast<uint32_t>(s.heads));
  w.add_uint32(gguf_keys::kHeadCountKv, static_cast<uint32_t>(s.kv_heads));
  w.add_float32(gguf_keys::kRmsEpsilon, 1e-5f);
  add_tiny_tokenizer(w, &vocab);
  Rng rng(seed);
  auto matrix = [&](const std::string& name, int64_t rows, int64_t cols, float scale) {
    std::vector<float> x(static_cast<size_t>(rows * cols));
    for (auto& v : x) v = (rng.uniform_float() * 2.0f - 1.0f) * scale;
    auto st = w.add_tensor(name, type, {static_cast<uint64_t>(cols), static_cast<uint64_t>(rows)},
                           encode_rows(type, x, cols));
    ASSERT_TRUE(st) << st.error().to_string();
  };
  auto vec = [&](const std::string& name, int64_t n) {
    std::vector<float> x(static_cast<size_t>(n));
    for (auto& v : x) v = 0.8f + 0.4f * rng.uniform_float();
    std::vector<uint8_t> bytes(x.size() * 4);
    std::memcpy(bytes.data(), x.data(), bytes.size());
    auto st = w.add_tensor(name, TensorType::kF32, {static_cast<uint64_t>(n)}, std::move(bytes));
    ASSERT_TRUE(st) << st.error().to_string();
  };
  const int64_t hd = s.dim / s.heads, kv = s.kv_heads * hd;
  matrix(gguf_keys::kTokenEmbedding, vocab, s.dim, 1.0f);
  char name[128];
  for (int64_t l = 0; l < s.layers; ++l) {
    auto n = [&](const char* pattern) {
      std::snprintf(name, sizeof name, pattern, static_cast<int>(l));
      return std::string(name);
    };
    const float a = 1.0f / std::sqrt(static_cast<float>(s.dim));
    vec(n(gguf_keys::kAttnNorm), s.dim);
    matrix(n(gguf_keys::kAttnQ), s.dim, s.dim, 2.0f * a);
    matrix(n(gguf_keys::kAttnK), kv, s.dim, 2.0f * a);
    matrix(n(gguf_keys::kAttnV), kv, s.dim, a);
    matrix(n(gguf_keys::kAttnOutput), s.dim, s.dim, a);
    vec(n(gguf_keys::kFfnNorm), s.dim);
    matrix(n(gguf_keys::kFfnGate), s.hidden, s.dim, a);
    matrix(n(gguf_keys::kFfnDown), s.dim, s.hidden, 1.0f / std::sqrt(static_cast<float>(s.hidden)));
    matrix(n(gguf_keys::kFfnUp), s.hidden, s.dim, a);
  }
  vec(gguf_keys::kOutputNorm, s.dim);
  if (!tied) matrix(gguf_keys::kOutput, vocab, s.dim, 1.0f / std::sqrt(static_cast<float>(s.dim)));
  return w.serialize();
}

// Loads serialised bytes as a Model (the bytes must outlive it).
inline std::unique_ptr<Model> load_model(const std::vector<uint8_t>& bytes) {
  auto file = GgufFile::from_memory(bytes);
  EXPECT_TRUE(file) << file.error().to_string();
  if (!file) return nullptr;
  auto model = Model::from_file(std::move(*file));
  EXPECT_TRUE(model) << model.error().to_string();
  if (!model) return nullptr;
  return std::move(*model);
}

}  // namespace idlefleet::engine::testing
