// The GGUF names the engine reads and writes for llama-family models.
//
// They follow llama.cpp's conventions, so that a file made by one tool loads
// in the other. Weight matrices are stored [rows = out, cols = in], that is
// ne = [in, out]. Q and K rows are in the original (Meta) order: RoPE rotates
// adjacent pairs (2i, 2i+1) of each head, as llama2.c and llama.cpp's "llama"
// architecture do.
//
// Thread-safety: constants only.
#pragma once

namespace idlefleet::engine::gguf_keys {

inline constexpr const char* kArchitecture = "general.architecture";  // "llama"
inline constexpr const char* kName = "general.name";
inline constexpr const char* kFileType = "general.file_type";  // u32, llama_ftype
inline constexpr const char* kAlignment = "general.alignment";
inline constexpr const char* kContextLength = "llama.context_length";
inline constexpr const char* kEmbeddingLength = "llama.embedding_length";
inline constexpr const char* kBlockCount = "llama.block_count";
inline constexpr const char* kFeedForwardLength = "llama.feed_forward_length";
inline constexpr const char* kHeadCount = "llama.attention.head_count";
inline constexpr const char* kHeadCountKv = "llama.attention.head_count_kv";
inline constexpr const char* kRmsEpsilon = "llama.attention.layer_norm_rms_epsilon";
inline constexpr const char* kRopeDimensionCount = "llama.rope.dimension_count";
inline constexpr const char* kRopeFreqBase = "llama.rope.freq_base";  // default 10000
inline constexpr const char* kVocabSize = "llama.vocab_size";

inline constexpr const char* kTokenizerModel = "tokenizer.ggml.model";  // "llama"
inline constexpr const char* kTokens = "tokenizer.ggml.tokens";         // string[]
inline constexpr const char* kScores = "tokenizer.ggml.scores";         // f32[]
inline constexpr const char* kTokenType = "tokenizer.ggml.token_type";  // i32[]
inline constexpr const char* kBosId = "tokenizer.ggml.bos_token_id";
inline constexpr const char* kEosId = "tokenizer.ggml.eos_token_id";
inline constexpr const char* kUnknownId = "tokenizer.ggml.unknown_token_id";
inline constexpr const char* kAddBos = "tokenizer.ggml.add_bos_token";
inline constexpr const char* kAddSpacePrefix = "tokenizer.ggml.add_space_prefix";

// tokenizer.ggml.token_type values (llama.cpp's llama_token_type).
inline constexpr int kTokenTypeNormal = 1;
inline constexpr int kTokenTypeUnknown = 2;
inline constexpr int kTokenTypeControl = 3;
inline constexpr int kTokenTypeUserDefined = 4;
inline constexpr int kTokenTypeUnused = 5;
inline constexpr int kTokenTypeByte = 6;

// Tensor names; the per-layer ones take the layer number: "blk.%d.attn_q.weight".
inline constexpr const char* kTokenEmbedding = "token_embd.weight";   // [vocab, dim]
inline constexpr const char* kOutputNorm = "output_norm.weight";      // [dim]
inline constexpr const char* kOutput = "output.weight";               // [vocab, dim]; absent when tied
inline constexpr const char* kAttnNorm = "blk.%d.attn_norm.weight";   // [dim]
inline constexpr const char* kAttnQ = "blk.%d.attn_q.weight";         // [heads*head_dim, dim]
inline constexpr const char* kAttnK = "blk.%d.attn_k.weight";         // [kv_heads*head_dim, dim]
inline constexpr const char* kAttnV = "blk.%d.attn_v.weight";         // [kv_heads*head_dim, dim]
inline constexpr const char* kAttnOutput = "blk.%d.attn_output.weight";  // [dim, heads*head_dim]
inline constexpr const char* kFfnNorm = "blk.%d.ffn_norm.weight";     // [dim]
inline constexpr const char* kFfnGate = "blk.%d.ffn_gate.weight";     // w1 [hidden, dim]
inline constexpr const char* kFfnDown = "blk.%d.ffn_down.weight";     // w2 [dim, hidden]
inline constexpr const char* kFfnUp = "blk.%d.ffn_up.weight";         // w3 [hidden, dim]

// llama.cpp's llama_ftype values for general.file_type.
inline constexpr unsigned kFileTypeF32 = 0;
inline constexpr unsigned kFileTypeF16 = 1;
inline constexpr unsigned kFileTypeQ4_0 = 2;
inline constexpr unsigned kFileTypeQ8_0 = 7;

}  // namespace idlefleet::engine::gguf_keys
