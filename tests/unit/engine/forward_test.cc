// The optimised forward pass against a plain reference written here, and the
// engine's determinism: thread counts, batching, export and resume (with the
// penalties and logprobs on), and sequence embeddings.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <set>

#include "engine/model.h"
#include "engine/session.h"
#include "test_models.h"

namespace idlefleet::engine::forward_test {
namespace {

using testing::load_model;
using testing::make_tiny_model;

// A plain llama forward pass in double precision over dequantised weights:
// no batching, no threads, no activation quantisation. Written from the
// architecture's definition, independently of model.cc.
class ReferenceForward {
 public:
  explicit ReferenceForward(const Model& m) : m_(m), c_(m.config()) {
    k_.assign(static_cast<size_t>(c_.n_layers), {});
    v_.assign(static_cast<size_t>(c_.n_layers), {});
  }

  std::vector<double> step(int32_t token) {
    const int64_t dim = c_.dim, hd = c_.head_dim, kv = c_.kv_dim();
    std::vector<float> e(static_cast<size_t>(dim));
    m_.embed(token, e.data());
    std::vector<double> x(e.begin(), e.end());
    for (int64_t l = 0; l < c_.n_layers; ++l) {
      const Model::Layer& L = m_.layers()[static_cast<size_t>(l)];
      std::vector<double> xb = norm(x, L.attn_norm);
      std::vector<double> q = mul(L.wq, xb), k = mul(L.wk, xb), v = mul(L.wv, xb);
      for (auto* vec : {&q, &k}) {
        for (size_t i = 0; i < vec->size(); i += 2) {
          const double freq = std::pow(c_.rope_freq_base, -static_cast<double>(i % hd) / static_cast<double>(hd));
          const double a = static_cast<double>(pos_) * freq;
          const double v0 = (*vec)[i], v1 = (*vec)[i + 1];
          (*vec)[i] = v0 * std::cos(a) - v1 * std::sin(a);
          (*vec)[i + 1] = v0 * std::sin(a) + v1 * std::cos(a);
        }
      }
      k_[l].push_back(k);
      v_[l].push_back(v);
      std::vector<double> att(static_cast<size_t>(c_.n_heads * hd), 0.0);
      for (int64_t h = 0; h < c_.n_heads; ++h) {
        const int64_t off = (h / (c_.n_heads / c_.n_kv_heads)) * hd;
        std::vector<double> s(static_cast<size_t>(pos_ + 1));
        double mx = -1e300, sum = 0;
        for (int64_t p = 0; p <= pos_; ++p) {
          double d = 0;
          for (int64_t i = 0; i < hd; ++i) d += q[h * hd + i] * k_[l][p][off + i];
          s[p] = d / std::sqrt(static_cast<double>(hd));
          mx = std::max(mx, s[p]);
        }
        for (auto& z : s) sum += (z = std::exp(z - mx));
        for (int64_t p = 0; p <= pos_; ++p)
          for (int64_t i = 0; i < hd; ++i) att[h * hd + i] += s[p] / sum * v_[l][p][off + i];
      }
      (void)kv;
      std::vector<double> o = mul(L.wo, att);
      for (int64_t i = 0; i < dim; ++i) x[i] += o[i];
      xb = norm(x, L.ffn_norm);
      std::vector<double> g = mul(L.w1, xb), u = mul(L.w3, xb);
      for (size_t i = 0; i < g.size(); ++i) g[i] = g[i] / (1.0 + std::exp(-g[i])) * u[i];
      o = mul(L.w2, g);
      for (int64_t i = 0; i < dim; ++i) x[i] += o[i];
    }
    ++pos_;
    hidden_ = norm(x, m_.output_norm());
    return mul(m_.output(), hidden_);
  }

  // The final hidden state after the output RMSNorm, of the last step().
  const std::vector<double>& hidden() const { return hidden_; }

 private:
  std::vector<double> norm(const std::vector<double>& x, const std::vector<float>& w) const {
    double ss = 0;
    for (double v : x) ss += v * v;
    const double r = 1.0 / std::sqrt(ss / static_cast<double>(x.size()) + c_.rms_epsilon);
    std::vector<double> out(x.size());
    for (size_t i = 0; i < x.size(); ++i) out[i] = x[i] * r * w[i];
    return out;
  }
  std::vector<double> mul(const WeightView& w, const std::vector<double>& x) const {
    std::vector<float> row(static_cast<size_t>(w.cols));
    std::vector<double> y(static_cast<size_t>(w.rows));
    for (int64_t r = 0; r < w.rows; ++r) {
      dequant(w, r, row.data());
      double acc = 0;
      for (int64_t i = 0; i < w.cols; ++i) acc += static_cast<double>(row[i]) * x[i];
      y[r] = acc;
    }
    return y;
  }
  static void dequant(const WeightView& w, int64_t r, float* out) { dequantize_weight_row(w, r, out); }

  const Model& m_;
  const LlamaConfig& c_;
  int64_t pos_ = 0;
  std::vector<std::vector<std::vector<double>>> k_, v_;
  std::vector<double> hidden_;
};

class ForwardTest : public ::testing::TestWithParam<TensorType> {};

// Maximum relative logit error (max |engine - reference| / max |reference|)
// allowed per weight type. F32 and F16 weights differ from the reference only
// by float versus double arithmetic; Q8_0 and Q4_0 also quantise activations
// to 8 bits per 32-element block before each matrix product.
double tolerance(TensorType t) {
  switch (t) {
    case TensorType::kF32: return 1e-4;
    case TensorType::kF16: return 1e-4;
    default: return 3e-2;
  }
}

TEST_P(ForwardTest, AgreesWithReferenceForwardPass) {
  for (bool tied : {false, true}) {
    const auto bytes = make_tiny_model(GetParam(), 7, tied);
    auto model = load_model(bytes);
    ASSERT_TRUE(model);
    ThreadPool pool(2);
    Context ctx(*model, 0, &pool);
    ReferenceForward ref(*model);
    const std::vector<int32_t> tokens = {1, 80, 260, 5, 99, 268, 140, 31, 200, 3, 77, 150, 264, 42, 11, 250};
    double worst = 0;
    // Half the tokens as one batch, then one at a time.
    auto batch = ctx.eval(std::span(tokens).subspan(0, 8));
    ASSERT_TRUE(batch);
    std::vector<double> want;
    for (int i = 0; i < 8; ++i) want = ref.step(tokens[i]);
    auto compare = [&](std::span<const float> got, const std::vector<double>& expected) {
      double mx = 0, err = 0;
      for (size_t i = 0; i < expected.size(); ++i) {
        mx = std::max(mx, std::fabs(expected[i]));
        err = std::max(err, std::fabs(got[i] - expected[i]));
      }
      worst = std::max(worst, err / mx);
    };
    compare(*batch, want);
    for (size_t i = 8; i < tokens.size(); ++i) {
      auto got = ctx.eval(std::span(tokens).subspan(i, 1));
      ASSERT_TRUE(got);
      compare(*got, ref.step(tokens[i]));
    }
    std::printf("%s%s: max relative logit error %.3g (allowed %.3g)\n", tensor_type_info(GetParam())->name,
                tied ? " tied" : "", worst, tolerance(GetParam()));
    EXPECT_LT(worst, tolerance(GetParam()));
  }
}

// Logits after evaluating `tokens` with the given threads and batch size.
std::vector<uint32_t> logits_bits(const Model& m, const std::vector<int32_t>& tokens, int threads, size_t batch,
                                  const KernelSet* ks = nullptr) {
  ThreadPool pool(threads);
  Context ctx(m, 0, &pool, ks);
  std::vector<uint32_t> all;
  for (size_t i = 0; i < tokens.size(); i += batch) {
    auto got = ctx.eval(std::span(tokens).subspan(i, std::min(batch, tokens.size() - i)));
    EXPECT_TRUE(got);
    for (float f : *got) all.push_back(std::bit_cast<uint32_t>(f));
  }
  return all;
}

TEST_P(ForwardTest, BitwiseIdenticalForThreadCountsBatchingAndKernelSets) {
  const auto bytes = make_tiny_model(GetParam(), 11);
  auto model = load_model(bytes);
  ASSERT_TRUE(model);
  std::vector<int32_t> tokens;
  for (int i = 0; i < 40; ++i) tokens.push_back((i * 37 + 5) % 269);
  // Compare final logits of a full-batch run against other configurations;
  // with batch 1 we compare the logits after every token.
  const auto one_by_one = logits_bits(*model, tokens, 1, 1);
  for (int threads : {2, 3, 4}) EXPECT_EQ(logits_bits(*model, tokens, threads, 1), one_by_one) << threads;
  const auto full = logits_bits(*model, tokens, 1, tokens.size());
  const std::vector<uint32_t> last(one_by_one.end() - static_cast<int64_t>(full.size()), one_by_one.end());
  EXPECT_EQ(full, last);
  for (int threads : {2, 4}) EXPECT_EQ(logits_bits(*model, tokens, threads, 7).back(), one_by_one.back());
  for (const KernelSet* ks : available_kernels()) {
    EXPECT_EQ(logits_bits(*model, tokens, 2, 5, ks).back(), one_by_one.back()) << ks->name;
  }
}

// Each token's logprobs as bits: chosen id and value, then the top list.
using LogprobBits = std::vector<std::vector<uint64_t>>;
void append_bits(const TokenLogprobs* lp, LogprobBits* out) {
  ASSERT_NE(lp, nullptr);
  std::vector<uint64_t> row = {static_cast<uint64_t>(lp->chosen.id), std::bit_cast<uint32_t>(lp->chosen.logprob)};
  for (const TokenLogprob& t : lp->top) {
    row.push_back(static_cast<uint64_t>(t.id));
    row.push_back(std::bit_cast<uint32_t>(t.logprob));
  }
  out->push_back(std::move(row));
}

// Runs a generator to its end, collecting logprobs when they are on.
void finish(Generator& gen, LogprobBits* logprobs) {
  while (true) {
    auto t = gen.next();
    ASSERT_TRUE(t);
    if (*t < 0) {
      EXPECT_EQ(gen.last_logprobs(), nullptr);
      break;
    }
    if (logprobs != nullptr) append_bits(gen.last_logprobs(), logprobs);
  }
}

TEST_P(ForwardTest, ExportThenResumeAtEveryPositionContinuesIdentically) {
  const auto bytes = make_tiny_model(GetParam(), 13);
  auto model = load_model(bytes);
  ASSERT_TRUE(model);
  SamplerParams plain;
  plain.temperature = 0.9f;
  plain.top_p = 0.95f;
  plain.seed = 1234;
  // With every penalty on, so that the split between prompt and produced
  // tokens has to survive the export.
  SamplerParams penalised = plain;
  penalised.repeat_penalty = 1.1f;
  penalised.presence_penalty = 0.8f;
  penalised.frequency_penalty = 0.6f;
  const std::vector<int32_t> prompt = {1, 72, 105, 33, 72, 72};
  const int64_t n = 24;
  for (const SamplerParams& sp : {plain, penalised}) {
    ThreadPool pool(2);
    Context ctx(*model, 0, &pool);
    Generator gen(*model, ctx);
    ASSERT_TRUE(gen.enable_logprobs(5));
    ASSERT_TRUE(gen.start(prompt, sp, n, {}));
    LogprobBits full_logprobs;
    finish(gen, &full_logprobs);
    const std::vector<int32_t> full = gen.state().produced_ids;
    ASSERT_EQ(static_cast<int64_t>(full.size()), n);
    ASSERT_EQ(static_cast<int64_t>(full_logprobs.size()), n);

    for (int64_t cut = 0; cut < n; ++cut) {
      // Stop after `cut` tokens and export ...
      Context c1(*model, 0, &pool);
      Generator g1(*model, c1);
      ASSERT_TRUE(g1.start(prompt, sp, n, {}));
      for (int64_t i = 0; i < cut; ++i) ASSERT_TRUE(g1.next());
      const std::string json = g1.state().to_json();
      // ... and resume in a fresh context with another thread count.
      auto state = SessionState::from_json(json);
      ASSERT_TRUE(state) << state.error().to_string();
      EXPECT_EQ(state->sampler.presence_penalty, sp.presence_penalty);
      EXPECT_EQ(state->sampler.frequency_penalty, sp.frequency_penalty);
      ThreadPool other(1 + cut % 3);
      Context c2(*model, 0, &other);
      Generator g2(*model, c2);
      ASSERT_TRUE(g2.resume(*state));
      ASSERT_TRUE(g2.enable_logprobs(5));
      LogprobBits logprobs;
      finish(g2, &logprobs);
      EXPECT_EQ(g2.state().produced_ids, full) << "resumed after " << cut << " tokens";
      EXPECT_EQ(logprobs, LogprobBits(full_logprobs.begin() + cut, full_logprobs.end()))
          << "resumed after " << cut << " tokens";
    }
  }
}

TEST_P(ForwardTest, PenaltiesChangeTheGenerationAndLogprobsDoNot) {
  // Greedy, so that only the penalties can change the tokens; logprobs
  // describe the raw logits whatever the sampler does.
  const auto bytes = make_tiny_model(GetParam(), 17);
  auto model = load_model(bytes);
  ASSERT_TRUE(model);
  ThreadPool pool(1);
  const auto generate = [&](const SamplerParams& sp, std::vector<float>* chosen_logprobs) {
    Context ctx(*model, 0, &pool);
    Generator gen(*model, ctx);
    EXPECT_TRUE(gen.enable_logprobs(0));
    EXPECT_TRUE(gen.start({1, 80, 99}, sp, 30, {}));
    while (true) {
      auto t = gen.next();
      EXPECT_TRUE(t);
      if (!t || *t < 0) break;
      chosen_logprobs->push_back(gen.last_logprobs()->chosen.logprob);
      EXPECT_TRUE(gen.last_logprobs()->top.empty());
    }
    return gen.state().produced_ids;
  };
  std::vector<float> plain_logprobs, penalised_logprobs;
  const std::vector<int32_t> plain = generate(SamplerParams{}, &plain_logprobs);
  SamplerParams sp;
  sp.frequency_penalty = 2.0f;
  sp.presence_penalty = 2.0f;
  const std::vector<int32_t> penalised = generate(sp, &penalised_logprobs);
  // A random tiny model repeats itself greedily; the penalties make it
  // produce more distinct tokens.
  EXPECT_GT(std::set<int32_t>(penalised.begin(), penalised.end()).size(),
            std::set<int32_t>(plain.begin(), plain.end()).size());
  // Up to the first difference the logits, hence the logprobs, are the same.
  size_t same = 0;
  while (same < plain.size() && plain[same] == penalised[same]) ++same;
  ASSERT_LT(same, plain.size());
  for (size_t i = 0; i < same; ++i) EXPECT_EQ(plain_logprobs[i], penalised_logprobs[i]) << i;
  // At the first difference the logits are the same too, but the penalised
  // generation took a less likely token.
  EXPECT_LT(penalised_logprobs[same], plain_logprobs[same]);
}

TEST_P(ForwardTest, LogprobsBitwiseIdenticalForOneTwoAndFourThreads) {
  const auto bytes = make_tiny_model(GetParam(), 19);
  auto model = load_model(bytes);
  ASSERT_TRUE(model);
  SamplerParams sp;
  sp.temperature = 1.0f;
  sp.seed = 99;
  const auto run = [&](int threads) {
    ThreadPool pool(threads);
    Context ctx(*model, 0, &pool);
    Generator gen(*model, ctx);
    EXPECT_TRUE(gen.enable_logprobs(kTopLogprobsMax));
    EXPECT_TRUE(gen.start({1, 5, 200, 31, 77}, sp, 40, {}));
    LogprobBits bits;
    finish(gen, &bits);
    EXPECT_EQ(bits.size(), 40u);
    return bits;
  };
  const LogprobBits one = run(1);
  EXPECT_EQ(run(2), one);
  EXPECT_EQ(run(4), one);
  // Off again: nothing computed.
  ThreadPool pool(1);
  Context ctx(*model, 0, &pool);
  Generator gen(*model, ctx);
  EXPECT_FALSE(gen.enable_logprobs(-1));
  EXPECT_FALSE(gen.enable_logprobs(kTopLogprobsMax + 1));
  ASSERT_TRUE(gen.enable_logprobs(3));
  gen.disable_logprobs();
  ASSERT_TRUE(gen.start({1, 5}, sp, 3, {}));
  ASSERT_TRUE(gen.next());
  EXPECT_EQ(gen.last_logprobs(), nullptr);
}

// The reference's embedding: mean of the normalised hidden states, L2-normalised.
std::vector<double> reference_embedding(const Model& m, const std::vector<int32_t>& tokens) {
  ReferenceForward ref(m);
  std::vector<double> mean(static_cast<size_t>(m.config().dim), 0.0);
  for (int32_t t : tokens) {
    ref.step(t);
    for (size_t j = 0; j < mean.size(); ++j) mean[j] += ref.hidden()[j] / static_cast<double>(tokens.size());
  }
  double norm = 0;
  for (double v : mean) norm += v * v;
  for (double& v : mean) v /= std::sqrt(norm);
  return mean;
}

// Largest |engine - reference| over the components of the unit vector, per
// weight type. Measured: 4e-8 (f32), 6e-8 (f16), 1.8e-3 (q8_0, q4_0, which
// also quantise activations); the bounds leave a margin of 100 and 5.
double embedding_tolerance(TensorType t) {
  switch (t) {
    case TensorType::kF32: return 1e-5;
    case TensorType::kF16: return 1e-5;
    default: return 1e-2;
  }
}

TEST_P(ForwardTest, EmbeddingAgreesWithReference) {
  for (bool tied : {false, true}) {
    const auto bytes = make_tiny_model(GetParam(), 23, tied);
    auto model = load_model(bytes);
    ASSERT_TRUE(model);
    ThreadPool pool(2);
    Context ctx(*model, 0, &pool);
    const std::vector<int32_t> tokens = {1, 80, 260, 5, 99, 268, 140, 31, 200, 3, 77, 150, 264, 42, 11, 250};
    auto got = ctx.embed_sequence(tokens);
    ASSERT_TRUE(got) << got.error().to_string();
    const std::vector<double> want = reference_embedding(*model, tokens);
    ASSERT_EQ(got->size(), want.size());
    double err = 0, norm = 0;
    for (size_t j = 0; j < want.size(); ++j) {
      err = std::max(err, std::fabs((*got)[j] - want[j]));
      norm += static_cast<double>((*got)[j]) * (*got)[j];
    }
    std::printf("%s%s: max embedding error %.3g (allowed %.3g)\n", tensor_type_info(GetParam())->name,
                tied ? " tied" : "", err, embedding_tolerance(GetParam()));
    EXPECT_LT(err, embedding_tolerance(GetParam()));
    EXPECT_NEAR(norm, 1.0, 1e-6);
    // One token: its own normalised hidden state, normalised.
    auto single = ctx.embed_sequence(std::span(tokens).first(1));
    ASSERT_TRUE(single);
    const std::vector<double> want_single = reference_embedding(*model, {tokens[0]});
    for (size_t j = 0; j < want_single.size(); ++j) {
      EXPECT_NEAR((*single)[j], want_single[j], embedding_tolerance(GetParam()));
    }
  }
}

TEST_P(ForwardTest, EmbeddingBitwiseIdenticalForThreadCountsAndLeavesTheContextFresh) {
  // A context longer than one batch, so that pooling spans batches.
  testing::TinyShape shape;
  shape.context = 2 * kBatchTokensMax + 16;
  const auto bytes = make_tiny_model(GetParam(), 29, false, shape);
  auto model = load_model(bytes);
  ASSERT_TRUE(model);
  std::vector<int32_t> tokens;
  for (int i = 0; i < kBatchTokensMax + 60; ++i) tokens.push_back((i * 53 + 7) % 269);
  const auto embed = [&](int threads) {
    ThreadPool pool(threads);
    Context ctx(*model, 0, &pool);
    auto e = ctx.embed_sequence(tokens);
    EXPECT_TRUE(e);
    EXPECT_EQ(ctx.position(), 0);
    std::vector<uint32_t> bits;
    for (float f : *e) bits.push_back(std::bit_cast<uint32_t>(f));
    return bits;
  };
  const auto one = embed(1);
  EXPECT_EQ(embed(2), one);
  EXPECT_EQ(embed(4), one);

  // A generation after an embedding (and an embedding in the middle of a
  // context that held tokens) goes as in a fresh context.
  SamplerParams sp;
  sp.temperature = 0.8f;
  sp.seed = 5;
  const std::vector<int32_t> prompt = {1, 44, 45};
  ThreadPool pool(2);
  const auto generate = [&](Context& ctx) {
    Generator gen(*model, ctx);
    EXPECT_TRUE(gen.start(prompt, sp, 12, {}));
    finish(gen, nullptr);
    return gen.state().produced_ids;
  };
  Context fresh(*model, 0, &pool);
  const std::vector<int32_t> want = generate(fresh);
  Context used(*model, 0, &pool);
  ASSERT_TRUE(used.eval(std::span(tokens).first(10)));
  auto e = used.embed_sequence(tokens);
  ASSERT_TRUE(e);
  std::vector<uint32_t> bits;
  for (float f : *e) bits.push_back(std::bit_cast<uint32_t>(f));
  EXPECT_EQ(bits, one);
  // Logits right after an embedding are those of a fresh context ...
  auto after = used.eval(prompt);
  ASSERT_TRUE(after);
  const std::vector<float> after_logits(after->begin(), after->end());
  Context fresh2(*model, 0, &pool);
  auto expected = fresh2.eval(prompt);
  ASSERT_TRUE(expected);
  EXPECT_EQ(after_logits, std::vector<float>(expected->begin(), expected->end()));
  // ... and so is a generation.
  ASSERT_TRUE(used.embed_sequence(tokens));
  EXPECT_EQ(generate(used), want);
}

TEST(Model, EmbeddingRefusesBadInputAndKeepsTheContext) {
  const auto bytes = make_tiny_model(TensorType::kF32, 3);
  auto model = load_model(bytes);
  ASSERT_TRUE(model);
  ThreadPool pool(1);
  Context ctx(*model, 8, &pool);
  ASSERT_TRUE(ctx.eval(std::vector<int32_t>{1, 2, 3}));
  EXPECT_FALSE(ctx.embed_sequence({}));
  EXPECT_FALSE(ctx.embed_sequence(std::vector<int32_t>{1, 100000}));
  auto r = ctx.embed_sequence(std::vector<int32_t>(9, 5));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kOutOfRange);
  EXPECT_EQ(ctx.position(), 3);
  // The whole capacity is allowed, whatever the position.
  EXPECT_TRUE(ctx.embed_sequence(std::vector<int32_t>(8, 5)));
}

INSTANTIATE_TEST_SUITE_P(AllTypes, ForwardTest,
                         ::testing::Values(TensorType::kF32, TensorType::kF16, TensorType::kQ8_0, TensorType::kQ4_0),
                         [](const auto& info) { return std::string(tensor_type_info(info.param)->name); });

TEST(Model, RefusesBrokenModelsWithClearErrors) {
  // A model whose FFN matrix has the wrong shape.
  auto bytes = make_tiny_model(TensorType::kF32, 1);
  auto file = GgufFile::from_memory(bytes);
  ASSERT_TRUE(file);
  GgufWriter w;
  for (const GgufKv& kv : (*file)->metadata()) w.add_kv(kv);
  for (const GgufTensorInfo& t : (*file)->tensors()) {
    if (t.name == "blk.1.ffn_up.weight") continue;  // missing tensor
    const uint8_t* p = (*file)->tensor_data(t);
    ASSERT_TRUE(w.add_tensor(t.name, t.type, t.dims, std::vector<uint8_t>(p, p + t.bytes)));
  }
  auto broken = w.serialize();
  auto f2 = GgufFile::from_memory(broken);
  ASSERT_TRUE(f2);
  auto m = Model::from_file(std::move(*f2));
  ASSERT_FALSE(m);
  EXPECT_NE(m.error().message.find("blk.1.ffn_up.weight"), std::string::npos) << m.error().message;
}

TEST(Model, ContextRefusesBadTokensAndOverflow) {
  const auto bytes = make_tiny_model(TensorType::kQ8_0, 3);
  auto model = load_model(bytes);
  ASSERT_TRUE(model);
  ThreadPool pool(1);
  Context ctx(*model, 8, &pool);
  const std::vector<int32_t> bad = {1, 100000};
  EXPECT_FALSE(ctx.eval(bad));
  EXPECT_FALSE(ctx.eval({}));
  const std::vector<int32_t> nine(9, 5);
  auto r = ctx.eval(nine);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kOutOfRange);
  EXPECT_EQ(ctx.position(), 0);
}

TEST(Session, GarbageJsonIsRefused) {
  for (const char* text : {"", "{", "[]", "{\"version\":2}", "{\"version\":1}",
                           "{\"version\":1,\"prompt_ids\":[1,-2]}", "{\"version\":1,\"prompt_ids\":\"x\"}",
                           "{\"version\":1,\"prompt_ids\":[1],\"sampler\":{\"temperature\":-1}}",
                           "{\"version\":1,\"prompt_ids\":[1],\"sampler\":{\"seed\":-1}}",
                           "{\"version\":1,\"prompt_ids\":[1],\"max_tokens\":-5}",
                           "{\"version\":1,\"prompt_ids\":[1.5]}"}) {
    EXPECT_FALSE(SessionState::from_json(text)) << text;
  }
  auto ok = SessionState::from_json("{\"version\":1,\"prompt_ids\":[1,2],\"sampler\":{\"seed\":7}}");
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->sampler.seed, 7u);
  // Sessions written before the presence and frequency penalties load with
  // them off; bad values are refused.
  EXPECT_EQ(ok->sampler.presence_penalty, 0.0f);
  EXPECT_EQ(ok->sampler.frequency_penalty, 0.0f);
  for (const char* text : {"{\"version\":1,\"prompt_ids\":[1],\"sampler\":{\"presence_penalty\":2.5}}",
                           "{\"version\":1,\"prompt_ids\":[1],\"sampler\":{\"frequency_penalty\":-3}}",
                           "{\"version\":1,\"prompt_ids\":[1],\"sampler\":{\"frequency_penalty\":1e300}}",
                           "{\"version\":1,\"prompt_ids\":[1],\"sampler\":{\"presence_penalty\":\"nan\"}}",
                           "{\"version\":1,\"prompt_ids\":[1],\"sampler\":{\"presence_penalty\":NaN}}",
                           "{\"version\":1,\"prompt_ids\":[1],\"sampler\":{\"presence_penalty\":null}}"}) {
    EXPECT_FALSE(SessionState::from_json(text)) << text;
  }
  auto penalised = SessionState::from_json(
      "{\"version\":1,\"prompt_ids\":[1],\"sampler\":{\"presence_penalty\":-2,\"frequency_penalty\":0.5}}");
  ASSERT_TRUE(penalised);
  EXPECT_EQ(penalised->sampler.presence_penalty, -2.0f);
  EXPECT_EQ(penalised->sampler.frequency_penalty, 0.5f);
  auto again = SessionState::from_json(penalised->to_json());
  ASSERT_TRUE(again);
  EXPECT_EQ(again->sampler.frequency_penalty, 0.5f);
}

}  // namespace
}  // namespace idlefleet::engine::forward_test
