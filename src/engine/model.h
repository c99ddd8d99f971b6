// A llama-family model loaded from GGUF, and the forward pass that runs it.
//
// Model owns the mapped file, the hyperparameters, the tokenizer and views of
// the weights: F32/F16 matrices stay mapped from the file; Q8_0/Q4_0 matrices
// are repacked once, at load, into the kernels' interleaved layout in huge
// pages (the file's pages are released as each is copied, so memory stays at
// about one copy of the weights). Context
// owns what one generation needs: the KV cache and scratch buffers. One Model
// can serve many Contexts.
//
// The forward pass, per token (shapes for one token; a batch of T tokens
// stacks them as rows):
//   x[dim] = token_embd[token]
//   per layer l:
//     xb = rmsnorm(x) * attn_norm
//     q[heads*hd] = Wq xb; k[kv_heads*hd] = Wk xb; v[kv_heads*hd] = Wv xb
//     rotate adjacent pairs of q and k by pos * base^(-2i/hd)   (RoPE)
//     cache k, v at (l, pos)
//     per head h (kv head h / (heads/kv_heads)): softmax(q_h . k_h[0..pos] / sqrt(hd)) . v_h
//     x += Wo att
//     xb = rmsnorm(x) * ffn_norm
//     x += W2 (silu(W1 xb) * (W3 xb))                           (SwiGLU)
//   logits[vocab] = Wout rmsnorm(x) * output_norm   (Wout = token_embd when tied)
//
// An embedding (Context::embed_sequence) is instead the mean over positions
// of h = rmsnorm(x) * output_norm, the vector Wout would multiply,
// L2-normalised.
//
// Every per-token quantity is computed by the same operations whether the
// token is evaluated alone or inside a batch, and whatever the thread count,
// so logits are bit-for-bit reproducible (see kernels.h).
//
// Thread-safety: a Model is immutable after load and may be shared. A Context
// is used by one thread at a time (it drives the ThreadPool itself).
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/result.h"
#include "engine/gguf.h"
#include "engine/kernels.h"
#include "engine/page_buffer.h"
#include "engine/thread_pool.h"
#include "engine/tokenizer.h"

namespace idlefleet::engine {

// Limits on what a model file may declare.
inline constexpr int64_t kModelDimMax = 1 << 16;
inline constexpr int64_t kModelLayersMax = 1024;
inline constexpr int64_t kModelHeadsMax = 1024;
inline constexpr int64_t kModelContextMax = 1 << 20;
inline constexpr int64_t kModelVocabMax = 1 << 20;
// Tokens evaluated in one batch; longer inputs are split (results identical).
inline constexpr int64_t kBatchTokensMax = 128;
// Positions a Context holds when the caller does not say: a model may declare
// a context (up to kModelContextMax) whose KV cache would not fit in memory.
inline constexpr int64_t kDefaultContextLength = 4096;

struct LlamaConfig {
  int64_t dim = 0;          // embedding width
  int64_t hidden_dim = 0;   // FFN width
  int64_t n_layers = 0;
  int64_t n_heads = 0;
  int64_t n_kv_heads = 0;
  int64_t head_dim = 0;     // dim / n_heads
  int64_t vocab_size = 0;
  int64_t context_length = 0;
  float rms_epsilon = 1e-5f;
  float rope_freq_base = 10000.0f;
  bool tied_output = false;  // output matrix shared with token_embd
  int64_t kv_dim() const { return n_kv_heads * head_dim; }
};

class Model {
 public:
  struct Layer {
    std::vector<float> attn_norm, ffn_norm;  // [dim], converted to f32
    WeightView wq, wk, wv, wo;              // [heads*hd, dim], [kv, dim], [kv, dim], [dim, heads*hd]
    WeightView w1, w2, w3;                  // gate [hidden, dim], down [dim, hidden], up [hidden, dim]
  };

  static Result<std::unique_ptr<Model>> load(const std::string& path);
  // From a parsed file that the model then owns (tests).
  static Result<std::unique_ptr<Model>> from_file(std::unique_ptr<GgufFile> file);

  const LlamaConfig& config() const { return config_; }
  const Tokenizer& tokenizer() const { return *tokenizer_; }
  const GgufFile& file() const { return *file_; }
  const std::string& name() const { return name_; }

  const WeightView& token_embedding() const { return token_embd_; }
  const WeightView& output() const { return output_; }
  const std::vector<float>& output_norm() const { return output_norm_; }
  const std::vector<Layer>& layers() const { return layers_; }

  // Bytes of weights read to evaluate one token (every matrix once, plus one
  // embedding row): the numerator of the memory-bandwidth ceiling.
  uint64_t weight_bytes_per_token() const;
  // Bytes of all tensors in the file.
  uint64_t weight_bytes() const;

  // Writes embedding row `token` into out[dim].
  void embed(int32_t token, float* out) const;

 private:
  Model() = default;
  Status init();
  // Copies Q8_0 / Q4_0 matrices into the kernels' interleaved layout in huge
  // pages, handing the file's pages back to the page cache.
  Status repack_quantized();

  std::unique_ptr<GgufFile> file_;
  std::unique_ptr<Tokenizer> tokenizer_;
  LlamaConfig config_;
  std::string name_;
  WeightView token_embd_, output_;
  std::vector<float> output_norm_;
  std::vector<Layer> layers_;
  PageBuffer packed_;  // interleaved quantised matrices
};

// One generation's state: KV cache, position and scratch.
class Context {
 public:
  // n_ctx: positions this context holds, at most the model's context length;
  // 0 means min(the model's, kDefaultContextLength). kernels: null for
  // best_kernels().
  Context(const Model& model, int64_t n_ctx, ThreadPool* pool, const KernelSet* kernels = nullptr);

  // Evaluates `tokens` at positions [position(), position() + n) and returns
  // the logits that follow the last one (vocab_size floats, valid until the
  // next call). Errors: empty input, a token id out of range, or the context
  // full.
  Result<std::span<const float>> eval(std::span<const int32_t> tokens);

  // One vector for a whole sequence, for OpenAI's /v1/embeddings: `tokens`
  // are evaluated at positions [0, n) (causal attention, as in generation),
  // and the final hidden state after the output RMSNorm, h_t[dim] =
  // rmsnorm(x_t) * output_norm, is mean-pooled over every position (BOS
  // included when the caller put one there) and L2-normalised:
  //   mean = (sum_t h_t) / n,  out = mean / |mean|   (out = 0 when |mean| = 0)
  // The sum runs in double over positions in order, the norm over dimensions
  // in order, on the calling thread, and each output is rounded once to
  // float: bitwise the same for any thread count or batch split. The output
  // matrix is not applied (no logits).
  // The context is rewound to 0 before and after: it holds nothing
  // afterwards (logits from an earlier eval() are invalid, and a Generator
  // on this context must start() or resume() again), so a following
  // generation goes as in a fresh context. Errors (context untouched):
  // empty input, a token id out of range, more tokens than capacity().
  Result<std::vector<float>> embed_sequence(std::span<const int32_t> tokens);

  int64_t position() const { return position_; }
  int64_t capacity() const { return n_ctx_; }
  // Forgets everything from `pos` on (pos <= position()).
  void rewind(int64_t pos);
  const KernelSet& kernels() const { return *kernels_; }

  // Bytes held by the KV cache.
  uint64_t kv_bytes() const { return (key_cache_.size() + value_cache_.size()) * sizeof(float); }

  // Where evaluation time goes, for benchmarks: wall seconds inside the
  // matrix products and inside attention since enable_profile(true) (which
  // starts from zero). Off by default (two clock reads per loop when on).
  struct Profile {
    double matmul_seconds = 0.0;
    double attention_seconds = 0.0;
  };
  void enable_profile(bool on) {
    if (on) profile_ = {};
    profile_on_ = on;
  }
  const Profile& profile() const { return profile_; }

 private:
  // Evaluates n tokens at position_. With hidden_sum null, leaves the logits
  // of the last token in logits_; otherwise adds every token's normalised
  // hidden state to hidden_sum[dim] in position order, and computes no
  // logits.
  void forward_batch(const int32_t* tokens, int64_t n, double* hidden_sum);
  // The checks eval() and embed_sequence() share.
  Status check_tokens(std::span<const int32_t> tokens, int64_t first_position) const;
  // y[n][w.rows] = W x for each job, x the current input (all jobs share it).
  struct MatmulJob {
    const WeightView* w;
    float* y;
  };
  void matmul(std::initializer_list<MatmulJob> jobs, int64_t n);
  void prepare_input(const float* x, int64_t n);
  template <class Fn>
  void for_tokens(int64_t n, const Fn& fn);       // fn(t) for t < n, across threads
  void add_into(float* x, const float* y, int64_t count);  // x += y

  const Model& model_;
  ThreadPool* pool_;
  const KernelSet* kernels_;
  int64_t n_ctx_;
  int64_t position_ = 0;

  std::vector<float> key_cache_, value_cache_;  // [layers][n_ctx][kv_dim]
  std::vector<float> rope_freq_;                // [head_dim / 2]
  // Scratch for a batch of up to kBatchTokensMax tokens.
  std::vector<float> x_, xb_, q_, k_, v_, att_out_, h1_, h3_, proj_, logits_;
  std::vector<float> rope_cos_, rope_sin_;      // [batch][head_dim / 2]
  std::vector<float> scores_;                   // [threads][n_ctx]
  const float* input_ = nullptr;                // current matmul input rows
  int64_t input_cols_ = 0;
  QuantizedRows input_q_;
  bool input_q_valid_ = false;
  bool profile_on_ = false;
  Profile profile_;
};

}  // namespace idlefleet::engine
