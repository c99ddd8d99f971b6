#include "engine/model.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <utility>

#include "common/check.h"
#include "common/det_math.h"
#include "engine/model_format.h"
#include "engine/quant.h"

namespace idlefleet::engine {

namespace {

std::string layer_name(const char* pattern, int64_t layer) {
  char buf[128];
  std::snprintf(buf, sizeof buf, pattern, static_cast<int>(layer));
  return buf;
}

Result<int64_t> get_dim(const GgufFile& f, const char* key, int64_t lo, int64_t hi) {
  auto v = f.get_uint(key);
  if (!v) return Unexpected(v.error());
  if (*v < static_cast<uint64_t>(lo) || *v > static_cast<uint64_t>(hi)) {
    return Unexpected(ErrorCode::kOutOfRange, std::string("metadata ") + key + " = " +
                                                  std::to_string(*v) + " is outside [" +
                                                  std::to_string(lo) + ", " + std::to_string(hi) + "]");
  }
  return static_cast<int64_t>(*v);
}

// A matrix tensor with ne = [cols, rows] of a type the kernels compute with.
Result<WeightView> get_matrix(const GgufFile& f, const std::string& name, int64_t rows, int64_t cols) {
  const GgufTensorInfo* t = f.find_tensor(name);
  if (t == nullptr) return Unexpected(ErrorCode::kNotFound, "tensor '" + name + "' is missing");
  if (!tensor_type_supported(t->type)) {
    const TensorTypeInfo* info = tensor_type_info(t->type);
    return Unexpected(ErrorCode::kUnsupported,
                      "tensor '" + name + "' has type " + (info ? info->name : "?") +
                          "; the engine computes with f32, f16, q8_0 and q4_0 (re-quantize with "
                          "`idlefleet model quantize`)");
  }
  if (t->dims.size() != 2 || t->dims[0] != static_cast<uint64_t>(cols) ||
      t->dims[1] != static_cast<uint64_t>(rows)) {
    std::string got;
    for (uint64_t d : t->dims) got += (got.empty() ? "" : ", ") + std::to_string(d);
    return Unexpected(ErrorCode::kCorrupt, "tensor '" + name + "' has shape [" + got +
                                               "], expected [" + std::to_string(cols) + ", " +
                                               std::to_string(rows) + "] (ne0 = inputs)");
  }
  WeightView w;
  w.type = t->type;
  w.data = f.tensor_data(*t);
  w.rows = rows;
  w.cols = cols;
  w.row_bytes = tensor_bytes(t->type, static_cast<uint64_t>(cols));
  return w;
}

// A vector tensor [n], converted to f32.
Result<std::vector<float>> get_vector(const GgufFile& f, const std::string& name, int64_t n) {
  const GgufTensorInfo* t = f.find_tensor(name);
  if (t == nullptr) return Unexpected(ErrorCode::kNotFound, "tensor '" + name + "' is missing");
  if (t->dims.size() != 1 || t->dims[0] != static_cast<uint64_t>(n)) {
    return Unexpected(ErrorCode::kCorrupt,
                      "tensor '" + name + "' should be a vector of " + std::to_string(n) + " elements");
  }
  std::vector<float> out(static_cast<size_t>(n));
  const uint8_t* p = f.tensor_data(*t);
  switch (t->type) {
    case TensorType::kF32: std::memcpy(out.data(), p, out.size() * sizeof(float)); break;
    case TensorType::kF16: dequantize_row_f16(reinterpret_cast<const uint16_t*>(p), out.data(), n); break;
    default:
      return Unexpected(ErrorCode::kUnsupported, "tensor '" + name + "' must be f32 or f16");
  }
  return out;
}

bool is_quantized(TensorType t) { return t == TensorType::kQ8_0 || t == TensorType::kQ4_0; }

// llama2.c's rmsnorm, operation for operation.
void rmsnorm(float* out, const float* x, const float* weight, int64_t n, float eps) {
  float ss = 0.0f;
  for (int64_t j = 0; j < n; ++j) ss += x[j] * x[j];
  ss /= static_cast<float>(n);
  ss += eps;
  ss = 1.0f / std::sqrt(ss);
  for (int64_t j = 0; j < n; ++j) out[j] = weight[j] * (ss * x[j]);
}

// Rows per unit of parallel matmul work: a multiple of every kernel tile.
constexpr int64_t kRowsPerUnit = 16;

}  // namespace

// ---- Model -----------------------------------------------------------------

Result<std::unique_ptr<Model>> Model::load(const std::string& path) {
  auto file = GgufFile::open(path);
  if (!file) return Unexpected(ErrorCode(file.error().code), path + ": " + file.error().message);
  auto model = from_file(std::move(*file));
  if (!model) return Unexpected(model.error().code, path + ": " + model.error().message);
  return model;
}

Result<std::unique_ptr<Model>> Model::from_file(std::unique_ptr<GgufFile> file) {
  std::unique_ptr<Model> m(new Model());
  m->file_ = std::move(file);
  IF_RETURN_IF_ERROR(m->init());
  return m;
}

Status Model::init() {
  const GgufFile& f = *file_;
  auto arch = f.get_string(gguf_keys::kArchitecture);
  if (!arch) return Unexpected(arch.error());
  if (*arch != "llama") {
    return Unexpected(ErrorCode::kUnsupported,
                      "architecture '" + std::string(*arch) + "' is not supported (only 'llama')");
  }
  auto name = f.get_string(gguf_keys::kName);
  name_ = name ? std::string(*name) : "unnamed";

  LlamaConfig& c = config_;
  auto dim = get_dim(f, gguf_keys::kEmbeddingLength, 1, kModelDimMax);
  if (!dim) return Unexpected(dim.error());
  auto hidden = get_dim(f, gguf_keys::kFeedForwardLength, 1, 8 * kModelDimMax);
  if (!hidden) return Unexpected(hidden.error());
  auto layers = get_dim(f, gguf_keys::kBlockCount, 1, kModelLayersMax);
  if (!layers) return Unexpected(layers.error());
  auto heads = get_dim(f, gguf_keys::kHeadCount, 1, kModelHeadsMax);
  if (!heads) return Unexpected(heads.error());
  auto kv_heads = f.find(gguf_keys::kHeadCountKv) ? get_dim(f, gguf_keys::kHeadCountKv, 1, kModelHeadsMax)
                                                  : Result<int64_t>(*heads);
  if (!kv_heads) return Unexpected(kv_heads.error());
  auto context = get_dim(f, gguf_keys::kContextLength, 1, kModelContextMax);
  if (!context) return Unexpected(context.error());
  c.dim = *dim;
  c.hidden_dim = *hidden;
  c.n_layers = *layers;
  c.n_heads = *heads;
  c.n_kv_heads = *kv_heads;
  c.context_length = *context;
  if (c.dim % c.n_heads != 0 || (c.dim / c.n_heads) % 2 != 0) {
    return Unexpected(ErrorCode::kCorrupt, "embedding length " + std::to_string(c.dim) +
                                               " is not an even multiple of the head count " +
                                               std::to_string(c.n_heads));
  }
  if (c.n_heads % c.n_kv_heads != 0) {
    return Unexpected(ErrorCode::kCorrupt, "head count " + std::to_string(c.n_heads) +
                                               " is not a multiple of the KV head count " +
                                               std::to_string(c.n_kv_heads));
  }
  c.head_dim = c.dim / c.n_heads;
  if (auto rope_dims = f.get_uint(gguf_keys::kRopeDimensionCount);
      rope_dims && *rope_dims != static_cast<uint64_t>(c.head_dim)) {
    return Unexpected(ErrorCode::kUnsupported, "partial RoPE (rope.dimension_count " +
                                                   std::to_string(*rope_dims) + " < head size " +
                                                   std::to_string(c.head_dim) + ") is not supported");
  }
  if (auto eps = f.get_float(gguf_keys::kRmsEpsilon); eps) {
    if (!(*eps > 0.0 && *eps < 1.0)) {
      return Unexpected(ErrorCode::kCorrupt, "layer_norm_rms_epsilon must be in (0, 1)");
    }
    c.rms_epsilon = static_cast<float>(*eps);
  }
  if (auto base = f.get_float(gguf_keys::kRopeFreqBase); base) {
    if (!(*base > 1.0 && *base < 1e12)) {
      return Unexpected(ErrorCode::kCorrupt, "rope.freq_base must be in (1, 1e12)");
    }
    c.rope_freq_base = static_cast<float>(*base);
  }

  const GgufTensorInfo* embd = f.find_tensor(gguf_keys::kTokenEmbedding);
  if (embd == nullptr) return Unexpected(ErrorCode::kNotFound, "tensor 'token_embd.weight' is missing");
  if (embd->dims.size() != 2 || embd->dims[1] < 1 || embd->dims[1] > kModelVocabMax) {
    return Unexpected(ErrorCode::kCorrupt, "tensor 'token_embd.weight' must be [dim, vocab]");
  }
  c.vocab_size = static_cast<int64_t>(embd->dims[1]);
  auto te = get_matrix(f, gguf_keys::kTokenEmbedding, c.vocab_size, c.dim);
  if (!te) return Unexpected(te.error());
  token_embd_ = *te;
  if (f.find_tensor(gguf_keys::kOutput) != nullptr) {
    auto out = get_matrix(f, gguf_keys::kOutput, c.vocab_size, c.dim);
    if (!out) return Unexpected(out.error());
    output_ = *out;
  } else {
    output_ = token_embd_;
    c.tied_output = true;
  }
  auto on = get_vector(f, gguf_keys::kOutputNorm, c.dim);
  if (!on) return Unexpected(on.error());
  output_norm_ = std::move(*on);

  const int64_t q_dim = c.n_heads * c.head_dim;
  layers_.resize(static_cast<size_t>(c.n_layers));
  for (int64_t l = 0; l < c.n_layers; ++l) {
    Layer& L = layers_[static_cast<size_t>(l)];
    auto an = get_vector(f, layer_name(gguf_keys::kAttnNorm, l), c.dim);
    if (!an) return Unexpected(an.error());
    L.attn_norm = std::move(*an);
    auto fn = get_vector(f, layer_name(gguf_keys::kFfnNorm, l), c.dim);
    if (!fn) return Unexpected(fn.error());
    L.ffn_norm = std::move(*fn);
    struct Want {
      WeightView* dst;
      const char* pattern;
      int64_t rows, cols;
    } wants[] = {
        {&L.wq, gguf_keys::kAttnQ, q_dim, c.dim},         {&L.wk, gguf_keys::kAttnK, c.kv_dim(), c.dim},
        {&L.wv, gguf_keys::kAttnV, c.kv_dim(), c.dim},    {&L.wo, gguf_keys::kAttnOutput, c.dim, q_dim},
        {&L.w1, gguf_keys::kFfnGate, c.hidden_dim, c.dim}, {&L.w2, gguf_keys::kFfnDown, c.dim, c.hidden_dim},
        {&L.w3, gguf_keys::kFfnUp, c.hidden_dim, c.dim},
    };
    for (const Want& w : wants) {
      auto m = get_matrix(f, layer_name(w.pattern, l), w.rows, w.cols);
      if (!m) return Unexpected(m.error());
      *w.dst = *m;
    }
  }

  IF_RETURN_IF_ERROR(repack_quantized());

  auto tok = Tokenizer::from_gguf(f);
  if (!tok) return Unexpected(tok.error().code, "tokenizer: " + tok.error().message);
  if (tok->vocab_size() != c.vocab_size) {
    return Unexpected(ErrorCode::kCorrupt, "tokenizer has " + std::to_string(tok->vocab_size()) +
                                               " tokens but the model's vocabulary is " +
                                               std::to_string(c.vocab_size));
  }
  tokenizer_ = std::make_unique<Tokenizer>(std::move(*tok));
  return {};
}

Status Model::repack_quantized() {
  // Every distinct quantised matrix (token_embd and output may be one).
  std::vector<WeightView*> views = {&token_embd_};
  if (!config_.tied_output) views.push_back(&output_);
  for (Layer& L : layers_) {
    for (WeightView* w : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w1, &L.w2, &L.w3}) views.push_back(w);
  }
  size_t total = 0;
  for (const WeightView* w : views) {
    if (is_quantized(w->type)) total += interleaved_bytes(w->type, w->rows, w->cols);
  }
  packed_ = PageBuffer(total);
  if (total != 0 && packed_.data() == nullptr) {
    return Unexpected(ErrorCode::kIo, "cannot allocate " + std::to_string(total) + " bytes for the weights");
  }
  size_t offset = 0;
  for (WeightView* w : views) {
    if (!is_quantized(w->type)) continue;
    uint8_t* dst = packed_.data() + offset;
    interleave_rows(w->type, w->data, w->rows, w->cols, dst);
    file_->release_pages(w->data, static_cast<size_t>(w->rows) * w->row_bytes);
    w->data = dst;
    offset += interleaved_bytes(w->type, w->rows, w->cols);
  }
  if (config_.tied_output) output_ = token_embd_;
  return {};
}

uint64_t Model::weight_bytes_per_token() const {
  uint64_t bytes = token_embd_.row_bytes + output_.rows * output_.row_bytes;
  for (const Layer& L : layers_) {
    for (const WeightView* w : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w1, &L.w2, &L.w3}) {
      bytes += static_cast<uint64_t>(w->rows) * w->row_bytes;
    }
  }
  return bytes;
}

uint64_t Model::weight_bytes() const {
  uint64_t bytes = 0;
  for (const GgufTensorInfo& t : file_->tensors()) bytes += t.bytes;
  return bytes;
}

void Model::embed(int32_t token, float* out) const { dequantize_weight_row(token_embd_, token, out); }

// ---- Context ---------------------------------------------------------------

Context::Context(const Model& model, int64_t n_ctx, ThreadPool* pool, const KernelSet* kernels)
    : model_(model), pool_(pool), kernels_(kernels ? kernels : &best_kernels()) {
  const LlamaConfig& c = model.config();
  n_ctx_ = n_ctx <= 0 ? std::min(c.context_length, kDefaultContextLength) : std::min(n_ctx, c.context_length);
  const size_t cache = static_cast<size_t>(c.n_layers * n_ctx_ * c.kv_dim());
  key_cache_.assign(cache, 0.0f);
  value_cache_.assign(cache, 0.0f);
  const int64_t half = c.head_dim / 2;
  rope_freq_.resize(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i) {
    // base^(-2i / head_size), as llama2.c, with our deterministic exp and log.
    rope_freq_[static_cast<size_t>(i)] = static_cast<float>(det_exp(
        -static_cast<double>(2 * i) / static_cast<double>(c.head_dim) * det_log(c.rope_freq_base)));
  }
  const size_t B = static_cast<size_t>(kBatchTokensMax);
  x_.resize(B * c.dim);
  xb_.resize(B * std::max(c.dim, c.n_heads * c.head_dim));
  q_.resize(B * c.n_heads * c.head_dim);
  k_.resize(B * c.kv_dim());
  v_.resize(B * c.kv_dim());
  att_out_.resize(B * c.n_heads * c.head_dim);
  h1_.resize(B * c.hidden_dim);
  h3_.resize(B * c.hidden_dim);
  proj_.resize(B * c.dim);
  logits_.resize(static_cast<size_t>(c.vocab_size));
  rope_cos_.resize(B * half);
  rope_sin_.resize(B * half);
  scores_.resize(static_cast<size_t>(pool_->size()) * n_ctx_);
}

void Context::rewind(int64_t pos) {
  CHECK(pos >= 0 && pos <= position_);
  position_ = pos;
}

Status Context::check_tokens(std::span<const int32_t> tokens, int64_t first_position) const {
  if (tokens.empty()) return Unexpected(ErrorCode::kInvalidArgument, "no tokens to evaluate");
  const int64_t vocab = model_.config().vocab_size;
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0 || tokens[i] >= vocab) {
      return Unexpected(ErrorCode::kInvalidArgument, "token id " + std::to_string(tokens[i]) +
                                                         " at index " + std::to_string(i) +
                                                         " is outside the vocabulary of " +
                                                         std::to_string(vocab));
    }
  }
  if (first_position + static_cast<int64_t>(tokens.size()) > n_ctx_) {
    return Unexpected(ErrorCode::kOutOfRange,
                      "context full: " + std::to_string(first_position) + " + " +
                          std::to_string(tokens.size()) + " tokens > " + std::to_string(n_ctx_));
  }
  return {};
}

Result<std::span<const float>> Context::eval(std::span<const int32_t> tokens) {
  IF_RETURN_IF_ERROR(check_tokens(tokens, position_));
  const int64_t n = static_cast<int64_t>(tokens.size());
  for (int64_t start = 0; start < n; start += kBatchTokensMax) {
    const int64_t count = std::min(kBatchTokensMax, n - start);
    forward_batch(tokens.data() + start, count, nullptr);
  }
  return std::span<const float>(logits_);
}

Result<std::vector<float>> Context::embed_sequence(std::span<const int32_t> tokens) {
  IF_RETURN_IF_ERROR(check_tokens(tokens, 0));
  const int64_t dim = model_.config().dim;
  const int64_t n = static_cast<int64_t>(tokens.size());
  rewind(0);
  std::vector<double> sum(static_cast<size_t>(dim), 0.0);
  for (int64_t start = 0; start < n; start += kBatchTokensMax) {
    const int64_t count = std::min(kBatchTokensMax, n - start);
    forward_batch(tokens.data() + start, count, sum.data());
  }
  rewind(0);
  double norm_squared = 0.0;
  for (double& v : sum) {
    v /= static_cast<double>(n);
    norm_squared += v * v;
  }
  std::vector<float> out(static_cast<size_t>(dim), 0.0f);
  if (norm_squared > 0.0) {
    const double norm = std::sqrt(norm_squared);  // IEEE: correctly rounded everywhere
    for (size_t j = 0; j < out.size(); ++j) out[j] = static_cast<float>(sum[j] / norm);
  }
  return out;
}

void Context::prepare_input(const float* x, int64_t n) {
  input_ = x;
  input_cols_ = n;
  input_q_valid_ = false;
}

namespace {
// Adds the wall time of its scope to *sink when sink is not null.
class ScopeTimer {
 public:
  explicit ScopeTimer(double* sink) : sink_(sink) {
    if (sink_ != nullptr) start_ = std::chrono::steady_clock::now();
  }
  ~ScopeTimer() {
    if (sink_ != nullptr) *sink_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }
  ScopeTimer(const ScopeTimer&) = delete;
  ScopeTimer& operator=(const ScopeTimer&) = delete;

 private:
  double* sink_;
  std::chrono::steady_clock::time_point start_;
};
}  // namespace

void Context::matmul(std::initializer_list<MatmulJob> jobs, int64_t n) {
  const ScopeTimer timer(profile_on_ ? &profile_.matmul_seconds : nullptr);
  bool any_quantized = false;
  int64_t units_total = 0;
  for (const MatmulJob& job : jobs) {
    any_quantized = any_quantized || is_quantized(job.w->type);
    units_total += (job.w->rows + kRowsPerUnit - 1) / kRowsPerUnit;
  }
  if (any_quantized && !input_q_valid_) {
    const int64_t cols = jobs.begin()->w->cols;
    input_q_.resize(n, cols);
    const float* x = input_;
    pool_->parallel_for(n, [&](int64_t b, int64_t e, int) { kernels_->quantize_rows(x, cols, b, e, &input_q_); });
    input_q_valid_ = true;
  }
  // One parallel loop over the row units of every matrix: fewer
  // synchronisations per token than a loop per matrix.
  const KernelSet& k = *kernels_;
  pool_->parallel_for(units_total, [&](int64_t b, int64_t e, int) {
    int64_t first = 0;
    for (const MatmulJob& job : jobs) {
      const WeightView& w = *job.w;
      const int64_t units = (w.rows + kRowsPerUnit - 1) / kRowsPerUnit;
      const int64_t lo = std::max(b, first) - first, hi = std::min(e, first + units) - first;
      first += units;
      if (lo >= hi) continue;
      const int64_t r0 = lo * kRowsPerUnit, r1 = std::min(w.rows, hi * kRowsPerUnit);
      switch (w.type) {
        case TensorType::kQ8_0: k.matmul_q8_0(w, r0, r1, input_q_, n, job.y, w.rows); break;
        case TensorType::kQ4_0: k.matmul_q4_0(w, r0, r1, input_q_, n, job.y, w.rows); break;
        case TensorType::kF32: k.matmul_f32(w, r0, r1, input_, w.cols, n, job.y, w.rows); break;
        case TensorType::kF16: k.matmul_f16(w, r0, r1, input_, w.cols, n, job.y, w.rows); break;
        default: CHECK(false);
      }
    }
  });
}

// Element-wise work is split in units of this many elements (tokens for
// per-token work); each element's arithmetic is the same whoever does it.
constexpr int64_t kElementsPerUnit = 16384;
// Attention with fewer multiply-adds than this runs on the calling thread:
// for one decoded token at a short context, waking the other threads costs
// more than the work.
constexpr int64_t kAttentionParallelMultiplyAddsMin = 16384;

template <class Fn>
void Context::for_tokens(int64_t n, const Fn& fn) {
  pool_->parallel_for(n, [&](int64_t b, int64_t e, int) {
    for (int64_t t = b; t < e; ++t) fn(t);
  });
}

void Context::add_into(float* x, const float* y, int64_t count) {
  if (count <= kElementsPerUnit) {
    for (int64_t i = 0; i < count; ++i) x[i] += y[i];
    return;
  }
  pool_->parallel_for((count + kElementsPerUnit - 1) / kElementsPerUnit, [&](int64_t b, int64_t e, int) {
    const int64_t end = std::min(e * kElementsPerUnit, count);
    for (int64_t i = b * kElementsPerUnit; i < end; ++i) x[i] += y[i];
  });
}

void Context::forward_batch(const int32_t* tokens, int64_t n, double* hidden_sum) {
  const LlamaConfig& c = model_.config();
  const int64_t dim = c.dim, hd = c.head_dim, half = hd / 2, kv_dim = c.kv_dim();
  const int64_t q_dim = c.n_heads * hd, group = c.n_heads / c.n_kv_heads;
  const int64_t p0 = position_;
  float* x = x_.data();
  float* xb = xb_.data();

  for (int64_t t = 0; t < n; ++t) model_.embed(tokens[t], x + t * dim);
  for (int64_t t = 0; t < n; ++t) {
    const float pos = static_cast<float>(p0 + t);
    for (int64_t i = 0; i < half; ++i) {
      const float val = pos * rope_freq_[static_cast<size_t>(i)];
      double sin_val, cos_val;
      det_sincos(val, &sin_val, &cos_val);
      rope_cos_[static_cast<size_t>(t * half + i)] = static_cast<float>(cos_val);
      rope_sin_[static_cast<size_t>(t * half + i)] = static_cast<float>(sin_val);
    }
  }
  const float sqrt_hd = std::sqrt(static_cast<float>(hd));

  for (int64_t l = 0; l < c.n_layers; ++l) {
    const Model::Layer& L = model_.layers()[static_cast<size_t>(l)];
    float* kc = key_cache_.data() + l * n_ctx_ * kv_dim;
    float* vc = value_cache_.data() + l * n_ctx_ * kv_dim;

    // Attention.
    for_tokens(n, [&](int64_t t) { rmsnorm(xb + t * dim, x + t * dim, L.attn_norm.data(), dim, c.rms_epsilon); });
    prepare_input(xb, n);
    matmul({{&L.wq, q_.data()}, {&L.wk, k_.data()}, {&L.wv, v_.data()}}, n);
    for (int64_t t = 0; t < n; ++t) {
      const float* cs = rope_cos_.data() + t * half;
      const float* sn = rope_sin_.data() + t * half;
      for (int which = 0; which < 2; ++which) {
        float* vec = which == 0 ? q_.data() + t * q_dim : k_.data() + t * kv_dim;
        const int64_t len = which == 0 ? q_dim : kv_dim;
        for (int64_t i = 0; i < len; i += 2) {
          const int64_t f = (i % hd) / 2;
          const float v0 = vec[i], v1 = vec[i + 1];
          vec[i] = v0 * cs[f] - v1 * sn[f];
          vec[i + 1] = v0 * sn[f] + v1 * cs[f];
        }
      }
      std::memcpy(kc + (p0 + t) * kv_dim, k_.data() + t * kv_dim, static_cast<size_t>(kv_dim) * sizeof(float));
      std::memcpy(vc + (p0 + t) * kv_dim, v_.data() + t * kv_dim, static_cast<size_t>(kv_dim) * sizeof(float));
    }
    const KernelSet& k = *kernels_;
    auto attention = [&](int64_t b, int64_t e, int thread) {
      float* att = scores_.data() + thread * n_ctx_;
      for (int64_t u = b; u < e; ++u) {
        const int64_t t = u / c.n_heads, h = u % c.n_heads;
        const int64_t pos = p0 + t;
        const float* q = q_.data() + t * q_dim + h * hd;
        const int64_t kv_off = (h / group) * hd;
        k.attn_scores(q, kc + kv_off, kv_dim, pos + 1, hd, sqrt_hd, att);
        float max_score = -INFINITY;
        for (int64_t p = 0; p <= pos; ++p) max_score = att[p] > max_score ? att[p] : max_score;
        k.exp_f32(att, max_score, att, pos + 1);
        float sum = 0.0f;
        for (int64_t p = 0; p <= pos; ++p) sum += att[p];
        for (int64_t p = 0; p <= pos; ++p) att[p] /= sum;
        k.attn_values(att, vc + kv_off, kv_dim, pos + 1, hd, att_out_.data() + t * q_dim + h * hd);
      }
    };
    {
      const ScopeTimer timer(profile_on_ ? &profile_.attention_seconds : nullptr);
      if (n * (p0 + n) * c.n_heads * hd < kAttentionParallelMultiplyAddsMin) {
        attention(0, n * c.n_heads, 0);
      } else {
        pool_->parallel_for(n * c.n_heads, attention);
      }
    }
    prepare_input(att_out_.data(), n);
    matmul({{&L.wo, proj_.data()}}, n);
    add_into(x, proj_.data(), n * dim);

    // Feed-forward (SwiGLU).
    for_tokens(n, [&](int64_t t) { rmsnorm(xb + t * dim, x + t * dim, L.ffn_norm.data(), dim, c.rms_epsilon); });
    prepare_input(xb, n);
    matmul({{&L.w1, h1_.data()}, {&L.w3, h3_.data()}}, n);
    pool_->parallel_for((n * c.hidden_dim + kElementsPerUnit - 1) / kElementsPerUnit, [&](int64_t b, int64_t e, int) {
      const int64_t end = std::min(e * kElementsPerUnit, n * c.hidden_dim);
      const int64_t begin = b * kElementsPerUnit;
      kernels_->silu_mul_f32(h1_.data() + begin, h3_.data() + begin, end - begin);
    });
    prepare_input(h1_.data(), n);
    matmul({{&L.w2, proj_.data()}}, n);
    add_into(x, proj_.data(), n * dim);
  }

  position_ += n;
  if (hidden_sum != nullptr) {
    // Every token's normalised hidden state, added in position order.
    for_tokens(n, [&](int64_t t) {
      rmsnorm(xb + t * dim, x + t * dim, model_.output_norm().data(), dim, c.rms_epsilon);
    });
    for (int64_t t = 0; t < n; ++t) {
      for (int64_t j = 0; j < dim; ++j) hidden_sum[j] += static_cast<double>(xb[t * dim + j]);
    }
    return;
  }
  // Logits of the last token only.
  rmsnorm(xb, x + (n - 1) * dim, model_.output_norm().data(), dim, c.rms_epsilon);
  prepare_input(xb, 1);
  matmul({{&model_.output(), logits_.data()}}, 1);
}

}  // namespace idlefleet::engine
