// Text to token ids and back, for SentencePiece BPE vocabularies ("llama").
//
// Tokenizer holds a vocabulary (pieces, scores, token types, special ids) and
// encodes text the way llama2.c's run.c encode() and llama.cpp's SPM tokenizer
// do: spaces become U+2581 '▁', a '▁' is prepended to non-empty text when
// add_space_prefix is set, the text is split into UTF-8 code points, and the
// adjacent pair whose concatenation is a piece with the highest score is merged
// until no pair merges (ties: the leftmost pair). A symbol left that is not a
// piece falls back to its bytes' <0xXX> tokens (or <unk> when the vocabulary
// has no byte tokens). Encoding is O(n log n) in the text's length.
//
// Only normal and user-defined pieces match text: a prompt containing "<s>" or
// "<0x41>" is encoded as those characters, never as the control or byte token
// (SentencePiece's rule), so that user text cannot inject control tokens.
//
// Detokenizer turns a stream of ids back into text, one token at a time,
// releasing only whole, valid UTF-8: a character split across byte tokens is
// held back until complete, and ill-formed bytes become U+FFFD.
//
// Ownership: a Tokenizer owns its vocabulary and is a plain value (copyable,
// movable). A Detokenizer refers to a Tokenizer that must outlive it.
// Thread-safety: a Tokenizer is immutable after construction; concurrent
// encode() and token_bytes() calls are fine. A Detokenizer holds per-
// generation state: one per stream, not shared between threads.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace idlefleet::engine {

class GgufFile;

// Limits on a vocabulary; larger ones are refused before anything is built.
inline constexpr size_t kVocabTokensMax = size_t{1} << 20;
inline constexpr size_t kPieceBytesMax = 1024;

class Tokenizer {
 public:
  // Reads the tokenizer.ggml.* metadata (model_format.h). tokenizer.ggml.model
  // must be "llama" (else kUnsupported); tokens are required; scores (default
  // 0), token_type (default: inferred as from_vocab does), the bos/eos/unk ids
  // (defaults 1/2/0), add_bos_token (default true) and add_space_prefix
  // (default true) are optional. Inconsistent metadata is kCorrupt; a
  // vocabulary over the limits above is kOutOfRange.
  static Result<Tokenizer> from_gguf(const GgufFile& file);

  // Builds a tokenizer from parallel arrays. `scores` may be empty (all 0);
  // `types` (model_format.h's kTokenType*) may be empty, in which case pieces
  // spelled "<0xXX>" are byte tokens, bos/eos are control tokens, unk is the
  // unknown token and the rest are normal. Errors (kInvalidArgument unless
  // noted): array lengths that differ, an empty vocabulary, one over
  // kVocabTokensMax (kOutOfRange), a piece over kPieceBytesMax (kOutOfRange),
  // a NaN score, an unknown type, a special id out of range, a byte token not
  // spelled "<0xXX>" or given twice, or some but not all 256 byte tokens.
  static Result<Tokenizer> from_vocab(std::vector<std::string> pieces, std::vector<float> scores,
                                      std::vector<int32_t> types, int32_t bos, int32_t eos,
                                      int32_t unk, bool add_bos, bool add_space_prefix);

  // The ids for `text`, preceded by bos when `add_bos`. Any bytes are
  // accepted: ill-formed UTF-8 is encoded byte by byte through the fallback.
  std::vector<int32_t> encode(std::string_view text, bool add_bos) const;
  // Like encode(), except that the exact text of a control token (its piece,
  // e.g. "<s>" or "<|im_start|>"; the longest wins where several start at
  // one place) becomes that token, and the text between them is encoded as
  // encode() does (each run with its own space prefix, as SentencePiece's
  // "legacy" mode does after a special token). For text from a trusted chat
  // template only: user text must not reach it (see find_control_text()).
  // A leading bos is not doubled when the text itself starts with it.
  std::vector<int32_t> encode_with_controls(std::string_view text, bool add_bos) const;
  // The first control token whose text occurs in `text`, or -1.
  int32_t find_control_text(std::string_view text) const;

  // The bytes token `id` stands for: a normal piece with '▁' as ' ', a byte
  // token's one byte, and nothing for control, unknown and unused tokens or an
  // id outside the vocabulary. Valid as long as the tokenizer.
  std::string_view token_bytes(int32_t id) const;

  int32_t vocab_size() const { return static_cast<int32_t>(pieces_.size()); }
  int32_t bos() const { return bos_; }
  int32_t eos() const { return eos_; }
  int32_t unk() const { return unk_; }
  // Whether prompts should start with bos (the caller passes it to encode()).
  bool add_bos() const { return add_bos_; }
  // Whether encode() prepends '▁' (and the detokenizer strips it after bos).
  bool add_space_prefix() const { return add_space_prefix_; }
  // True when the vocabulary has all 256 byte tokens.
  bool has_byte_fallback() const { return byte_ids_[0] >= 0; }

  // The piece as stored (with '▁'), its score and its type.
  // REQUIRES: 0 <= id < vocab_size().
  const std::string& piece(int32_t id) const;
  float score(int32_t id) const;
  int32_t type(int32_t id) const;

 private:
  Tokenizer() = default;

  // The normal or user-defined token spelled exactly `text`, or -1.
  int32_t find_piece(std::string_view text) const;
  // The control token whose text starts `text` (the longest), or -1.
  int32_t control_at(std::string_view text) const;
  // Appends the ids for one leftover symbol: its byte tokens, else one unk.
  void append_fallback(std::string_view symbol, std::vector<int32_t>* out) const;

  std::vector<std::string> pieces_;
  std::vector<float> scores_;
  std::vector<int32_t> types_;
  // Open-addressing table of the ids of matchable pieces, hashed by piece
  // text; -1 is empty. Size a power of two, at most half full. Holding ids
  // (not views) keeps the tokenizer safe to copy and move.
  std::vector<int32_t> lookup_;
  // Control tokens with non-empty text, longest first.
  std::vector<int32_t> controls_;
  // byte_ids_[b]: the token for byte b; all -1 when there are no byte tokens.
  int32_t byte_ids_[256];
  // token_bytes(id) is decoded_[decoded_offsets_[id], decoded_offsets_[id+1]).
  std::string decoded_;
  std::vector<uint32_t> decoded_offsets_;
  int32_t bos_ = 1;
  int32_t eos_ = 2;
  int32_t unk_ = 0;
  bool add_bos_ = true;
  bool add_space_prefix_ = true;
};

// Streams the text of a generation token by token (one per generation).
class Detokenizer {
 public:
  // REQUIRES: `tokenizer` outlives this object.
  explicit Detokenizer(const Tokenizer& tokenizer);

  // Appends token `id` and returns the text now complete: whole, valid UTF-8
  // only. Bytes of a sequence not yet complete are held back; an ill-formed
  // sequence becomes U+FFFD. When the tokenizer adds a space prefix, a normal
  // token right after bos loses its leading space (as run.c and SentencePiece
  // do), so that decoding a prompt gives back the prompt.
  std::string push(int32_t id);

  // Returns whatever is held back (an incomplete sequence, as U+FFFD) and
  // clears it. Call at the end of a generation.
  std::string flush();

 private:
  const Tokenizer* tokenizer_;
  std::string pending_;  // at most 3 bytes: the start of an incomplete sequence
  bool after_bos_ = false;
};

}  // namespace idlefleet::engine
