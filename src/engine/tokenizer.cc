#include "engine/tokenizer.h"

#include <algorithm>

#include <cmath>
#include <functional>
#include <queue>
#include <utility>

#include "common/check.h"
#include "engine/gguf.h"
#include "engine/model_format.h"

namespace idlefleet::engine {
namespace {

namespace keys = gguf_keys;

constexpr std::string_view kSpaceMark = "\xE2\x96\x81";    // U+2581 '▁'
constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD
constexpr int32_t kTokenTypeUndefined = 0;  // llama.cpp's "undefined": treated as normal

// Pieces of these types match text; the others (control, unknown, unused,
// byte) are reachable only by id.
bool is_text_type(int32_t type) {
  return type == kTokenTypeUndefined || type == keys::kTokenTypeNormal ||
         type == keys::kTokenTypeUserDefined;
}

// The byte a "<0xXX>" piece names (either case of hex digit), or -1.
int parse_byte_piece(std::string_view piece) {
  if (piece.size() != 6 || piece.substr(0, 3) != "<0x" || piece[5] != '>') return -1;
  int value = 0;
  for (char c : piece.substr(3, 2)) {
    int digit;
    if (c >= '0' && c <= '9') {
      digit = c - '0';
    } else if (c >= 'A' && c <= 'F') {
      digit = c - 'A' + 10;
    } else if (c >= 'a' && c <= 'f') {
      digit = c - 'a' + 10;
    } else {
      return -1;
    }
    value = value * 16 + digit;
  }
  return value;
}

// One step of UTF-8 decoding (Unicode 15, table 3-7: no overlongs, no
// surrogates, nothing above U+10FFFF).
enum class Utf8 { kValid, kInvalid, kIncomplete };
struct Utf8Step {
  Utf8 status;
  size_t bytes;  // kValid: the sequence; kInvalid: its maximal subpart (U+FFFD
                 // replaces exactly these); kIncomplete: the bytes present
};

Utf8Step utf8_step(const unsigned char* p, size_t n) {
  const unsigned char lead = p[0];
  if (lead < 0x80) return {Utf8::kValid, 1};
  size_t length;
  unsigned char second_lo = 0x80, second_hi = 0xBF;
  if (lead >= 0xC2 && lead <= 0xDF) {
    length = 2;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    length = 3;
    if (lead == 0xE0) second_lo = 0xA0;  // overlong below U+0800
    if (lead == 0xED) second_hi = 0x9F;  // surrogates U+D800..DFFF
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    length = 4;
    if (lead == 0xF0) second_lo = 0x90;  // overlong below U+10000
    if (lead == 0xF4) second_hi = 0x8F;  // above U+10FFFF
  } else {
    return {Utf8::kInvalid, 1};  // a continuation byte, C0, C1 or F5..FF
  }
  for (size_t i = 1; i < length; ++i) {
    if (i >= n) return {Utf8::kIncomplete, i};
    const unsigned char lo = i == 1 ? second_lo : 0x80;
    const unsigned char hi = i == 1 ? second_hi : 0xBF;
    if (p[i] < lo || p[i] > hi) return {Utf8::kInvalid, i};
  }
  return {Utf8::kValid, length};
}

Unexpected invalid(std::string message) {
  return Unexpected(ErrorCode::kInvalidArgument, "tokenizer: " + std::move(message));
}

// Reads an optional metadata value: `fallback` when the key is absent, the
// getter's error when it is present but unreadable.
template <class T, class Getter>
Result<T> optional_value(Getter get, T fallback) {
  auto value = get();
  if (value) return T(std::move(*value));
  if (value.error().code == ErrorCode::kNotFound) return fallback;
  return Unexpected(value.error());
}

Result<int32_t> optional_id(const GgufFile& file, const char* key, int32_t fallback) {
  auto value = file.get_uint(key);
  if (!value) {
    if (value.error().code == ErrorCode::kNotFound) return fallback;
    return Unexpected(value.error());
  }
  // Range against the vocabulary is checked by from_vocab; this keeps the
  // conversion to int32 exact.
  if (*value > kVocabTokensMax) {
    return Unexpected(ErrorCode::kCorrupt,
                      std::string(key) + " = " + std::to_string(*value) + " is out of range");
  }
  return static_cast<int32_t>(*value);
}

}  // namespace

Result<Tokenizer> Tokenizer::from_gguf(const GgufFile& file) {
  auto model = file.get_string(keys::kTokenizerModel);
  if (!model) return Unexpected(model.error());
  if (*model != "llama") {
    return Unexpected(ErrorCode::kUnsupported,
                      std::string(keys::kTokenizerModel) + " is '" + std::string(*model) +
                          "'; only 'llama' (SentencePiece BPE) is supported");
  }
  auto tokens = file.get_string_array(keys::kTokens);
  if (!tokens) return Unexpected(tokens.error());
  // Checked before the copies below so that a huge array costs nothing.
  if (tokens->size() > kVocabTokensMax) {
    return Unexpected(ErrorCode::kOutOfRange,
                      std::string(keys::kTokens) + " has " + std::to_string(tokens->size()) +
                          " entries, more than " + std::to_string(kVocabTokensMax));
  }
  auto scores =
      optional_value<std::vector<float>>([&] { return file.get_f32_array(keys::kScores); }, {});
  if (!scores) return Unexpected(scores.error());
  auto types = optional_value<std::vector<int32_t>>(
      [&] { return file.get_i32_array(keys::kTokenType); }, {});
  if (!types) return Unexpected(types.error());
  // An array that is present must match the tokens; from_vocab would read an
  // empty one as "absent", so a present-but-empty array is caught here.
  if (file.find(keys::kScores) && scores->size() != tokens->size()) {
    return Unexpected(ErrorCode::kCorrupt, std::string(keys::kScores) + " has " +
                                               std::to_string(scores->size()) + " entries for " +
                                               std::to_string(tokens->size()) + " tokens");
  }
  if (file.find(keys::kTokenType) && types->size() != tokens->size()) {
    return Unexpected(ErrorCode::kCorrupt, std::string(keys::kTokenType) + " has " +
                                               std::to_string(types->size()) + " entries for " +
                                               std::to_string(tokens->size()) + " tokens");
  }
  auto bos = optional_id(file, keys::kBosId, 1);
  if (!bos) return Unexpected(bos.error());
  auto eos = optional_id(file, keys::kEosId, 2);
  if (!eos) return Unexpected(eos.error());
  auto unk = optional_id(file, keys::kUnknownId, 0);
  if (!unk) return Unexpected(unk.error());
  auto add_bos = optional_value<bool>([&] { return file.get_bool(keys::kAddBos); }, true);
  if (!add_bos) return Unexpected(add_bos.error());
  auto add_space_prefix =
      optional_value<bool>([&] { return file.get_bool(keys::kAddSpacePrefix); }, true);
  if (!add_space_prefix) return Unexpected(add_space_prefix.error());

  std::vector<std::string> pieces;
  pieces.reserve(tokens->size());
  for (std::string_view piece : *tokens) pieces.emplace_back(piece);
  auto tokenizer = from_vocab(std::move(pieces), std::move(*scores), std::move(*types), *bos, *eos,
                              *unk, *add_bos, *add_space_prefix);
  if (!tokenizer) {
    // Within a file, a bad vocabulary is a corrupt file; limits stay limits.
    Error error = tokenizer.error();
    if (error.code == ErrorCode::kInvalidArgument) error.code = ErrorCode::kCorrupt;
    error.message = "tokenizer metadata: " + error.message;
    return Unexpected(std::move(error));
  }
  return tokenizer;
}

Result<Tokenizer> Tokenizer::from_vocab(std::vector<std::string> pieces, std::vector<float> scores,
                                        std::vector<int32_t> types, int32_t bos, int32_t eos,
                                        int32_t unk, bool add_bos, bool add_space_prefix) {
  const size_t n = pieces.size();
  if (n == 0) return invalid("the vocabulary is empty");
  if (n > kVocabTokensMax) {
    return Unexpected(ErrorCode::kOutOfRange, "tokenizer: " + std::to_string(n) +
                                                  " tokens, more than " +
                                                  std::to_string(kVocabTokensMax));
  }
  if (!scores.empty() && scores.size() != n) {
    return invalid(std::to_string(scores.size()) + " scores for " + std::to_string(n) + " tokens");
  }
  if (!types.empty() && types.size() != n) {
    return invalid(std::to_string(types.size()) + " token types for " + std::to_string(n) +
                   " tokens");
  }
  const auto in_range = [n](int32_t id) { return id >= 0 && static_cast<size_t>(id) < n; };
  if (!in_range(bos)) return invalid("bos id " + std::to_string(bos) + " is out of range");
  if (!in_range(eos)) return invalid("eos id " + std::to_string(eos) + " is out of range");
  if (!in_range(unk))
    return invalid("unknown-token id " + std::to_string(unk) + " is out of range");

  if (scores.empty()) scores.assign(n, 0.0f);
  const bool infer_types = types.empty();
  if (infer_types) types.assign(n, keys::kTokenTypeNormal);

  Tokenizer t;
  for (int32_t& id : t.byte_ids_) id = -1;
  size_t byte_tokens = 0;
  for (size_t i = 0; i < n; ++i) {
    const std::string& piece = pieces[i];
    const std::string where = "token " + std::to_string(i);
    if (piece.size() > kPieceBytesMax) {
      return Unexpected(ErrorCode::kOutOfRange,
                        "tokenizer: " + where + " has " + std::to_string(piece.size()) +
                            " bytes, more than " + std::to_string(kPieceBytesMax));
    }
    if (std::isnan(scores[i])) return invalid(where + " has a NaN score");
    if (infer_types) {
      const auto id = static_cast<int32_t>(i);
      if (id == bos || id == eos) {
        types[i] = keys::kTokenTypeControl;
      } else if (id == unk) {
        types[i] = keys::kTokenTypeUnknown;
      } else if (parse_byte_piece(piece) >= 0) {
        types[i] = keys::kTokenTypeByte;
      }
    }
    if (types[i] < kTokenTypeUndefined || types[i] > keys::kTokenTypeByte) {
      return invalid(where + " has unknown type " + std::to_string(types[i]));
    }
    if (types[i] == keys::kTokenTypeByte) {
      const int byte = parse_byte_piece(piece);
      if (byte < 0) return invalid(where + " is a byte token not spelled <0xXX>");
      if (t.byte_ids_[byte] >= 0) {
        return invalid(where + " repeats byte token " + piece + " (first at " +
                       std::to_string(t.byte_ids_[byte]) + ")");
      }
      t.byte_ids_[byte] = static_cast<int32_t>(i);
      ++byte_tokens;
    }
  }
  if (byte_tokens != 0 && byte_tokens != 256) {
    return invalid(std::to_string(byte_tokens) +
                   " byte tokens; byte fallback needs all 256 or none");
  }

  // Text each token stands for, in one buffer.
  t.decoded_offsets_.reserve(n + 1);
  t.decoded_offsets_.push_back(0);
  for (size_t i = 0; i < n; ++i) {
    if (types[i] == keys::kTokenTypeByte) {
      t.decoded_.push_back(static_cast<char>(parse_byte_piece(pieces[i])));
    } else if (is_text_type(types[i])) {
      std::string_view rest = pieces[i];
      for (size_t at; (at = rest.find(kSpaceMark)) != std::string_view::npos;) {
        t.decoded_.append(rest.substr(0, at));
        t.decoded_.push_back(' ');
        rest.remove_prefix(at + kSpaceMark.size());
      }
      t.decoded_.append(rest);
    }
    // n * kPieceBytesMax fits in 32 bits: 2^20 * 2^10.
    t.decoded_offsets_.push_back(static_cast<uint32_t>(t.decoded_.size()));
  }

  t.pieces_ = std::move(pieces);
  t.scores_ = std::move(scores);
  t.types_ = std::move(types);
  t.bos_ = bos;
  t.eos_ = eos;
  t.unk_ = unk;
  t.add_bos_ = add_bos;
  t.add_space_prefix_ = add_space_prefix;

  // The lookup table: a power of two at least twice the vocabulary, so that
  // probes stay short. A piece spelled twice keeps its first id.
  size_t slots = 16;
  while (slots < 2 * n) slots *= 2;
  t.lookup_.assign(slots, -1);
  const size_t mask = slots - 1;
  for (size_t i = 0; i < n; ++i) {
    if (!is_text_type(t.types_[i]) || t.pieces_[i].empty()) continue;
    if (t.find_piece(t.pieces_[i]) >= 0) continue;
    size_t slot = std::hash<std::string_view>{}(t.pieces_[i]) & mask;
    while (t.lookup_[slot] >= 0) slot = (slot + 1) & mask;
    t.lookup_[slot] = static_cast<int32_t>(i);
  }
  for (size_t i = 0; i < n; ++i) {
    if (t.types_[i] == gguf_keys::kTokenTypeControl && !t.pieces_[i].empty()) t.controls_.push_back(static_cast<int32_t>(i));
  }
  std::stable_sort(t.controls_.begin(), t.controls_.end(), [&](int32_t a, int32_t b) {
    return t.pieces_[static_cast<size_t>(a)].size() > t.pieces_[static_cast<size_t>(b)].size();
  });
  return t;
}

int32_t Tokenizer::control_at(std::string_view text) const {
  for (int32_t id : controls_) {
    if (text.starts_with(pieces_[static_cast<size_t>(id)])) return id;
  }
  return -1;
}

int32_t Tokenizer::find_control_text(std::string_view text) const {
  for (int32_t id : controls_) {
    if (text.find(pieces_[static_cast<size_t>(id)]) != std::string_view::npos) return id;
  }
  return -1;
}

std::vector<int32_t> Tokenizer::encode_with_controls(std::string_view text, bool add_bos) const {
  std::vector<int32_t> ids;
  if (add_bos && control_at(text) != bos_) ids.push_back(bos_);
  // Control texts start with a byte that starts one of them; skip to the next such byte.
  bool starts[256] = {};
  for (int32_t id : controls_) starts[static_cast<unsigned char>(pieces_[static_cast<size_t>(id)][0])] = true;
  size_t run = 0;  // start of the text not yet encoded
  for (size_t i = 0; i < text.size(); ++i) {
    if (!starts[static_cast<unsigned char>(text[i])]) continue;
    const int32_t id = control_at(text.substr(i));
    if (id < 0) continue;
    if (i > run) {
      const std::vector<int32_t> part = encode(text.substr(run, i - run), false);
      ids.insert(ids.end(), part.begin(), part.end());
    }
    ids.push_back(id);
    i += pieces_[static_cast<size_t>(id)].size() - 1;
    run = i + 1;
  }
  if (run < text.size()) {
    const std::vector<int32_t> part = encode(text.substr(run), false);
    ids.insert(ids.end(), part.begin(), part.end());
  }
  return ids;
}

int32_t Tokenizer::find_piece(std::string_view text) const {
  const size_t mask = lookup_.size() - 1;
  for (size_t slot = std::hash<std::string_view>{}(text)&mask; lookup_[slot] >= 0;
       slot = (slot + 1) & mask) {
    if (pieces_[lookup_[slot]] == text) return lookup_[slot];
  }
  return -1;
}

void Tokenizer::append_fallback(std::string_view symbol, std::vector<int32_t>* out) const {
  if (!has_byte_fallback()) {
    // Without byte tokens a symbol that is no piece is one unknown token, as
    // SentencePiece emits one <unk> per unknown character.
    out->push_back(unk_);
    return;
  }
  for (char c : symbol) out->push_back(byte_ids_[static_cast<unsigned char>(c)]);
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_bos) const {
  std::vector<int32_t> ids;
  if (add_bos) ids.push_back(bos_);
  if (text.empty()) return ids;

  // Normalise: SentencePiece's dummy prefix, and spaces as '▁'.
  std::string normalized;
  normalized.reserve(text.size() + kSpaceMark.size() * 8);
  if (add_space_prefix_) normalized.append(kSpaceMark);
  for (char c : text) {
    if (c == ' ') {
      normalized.append(kSpaceMark);
    } else {
      normalized.push_back(c);
    }
  }

  // One symbol per code point (per byte where the UTF-8 is ill-formed), in a
  // doubly linked list. A merge grows the left symbol and empties the right.
  struct Symbol {
    size_t start;
    size_t bytes;  // 0 once merged into its left neighbour
    ptrdiff_t prev;
    ptrdiff_t next;
  };
  std::vector<Symbol> symbols;
  symbols.reserve(normalized.size());
  const auto* data = reinterpret_cast<const unsigned char*>(normalized.data());
  for (size_t at = 0; at < normalized.size();) {
    const Utf8Step step = utf8_step(data + at, normalized.size() - at);
    const size_t bytes = step.status == Utf8::kValid ? step.bytes : 1;
    const auto index = static_cast<ptrdiff_t>(symbols.size());
    symbols.push_back({at, bytes, index - 1, index + 1});
    at += bytes;
  }
  symbols.back().next = -1;

  // Candidate merges, best first: highest score, then leftmost. Entries are
  // not removed when a merge changes their symbols; they are recognised as
  // stale when popped (lazy invalidation), which keeps every step O(log n).
  struct Bigram {
    float score;
    ptrdiff_t left;
    ptrdiff_t right;
    size_t bytes;  // the merged length when queued
  };
  const auto worse = [](const Bigram& a, const Bigram& b) {
    return a.score < b.score || (a.score == b.score && a.left > b.left);
  };
  std::priority_queue<Bigram, std::vector<Bigram>, decltype(worse)> queue(worse);
  const auto try_add = [&](ptrdiff_t left, ptrdiff_t right) {
    if (left < 0 || right < 0) return;
    const size_t bytes = symbols[left].bytes + symbols[right].bytes;
    const int32_t id = find_piece(std::string_view(normalized).substr(symbols[left].start, bytes));
    if (id >= 0) queue.push({scores_[id], left, right, bytes});
  };
  for (size_t i = 0; i + 1 < symbols.size(); ++i) {
    try_add(static_cast<ptrdiff_t>(i), static_cast<ptrdiff_t>(i + 1));
  }
  while (!queue.empty()) {
    const Bigram top = queue.top();
    queue.pop();
    Symbol& left = symbols[top.left];
    Symbol& right = symbols[top.right];
    // Symbols only grow, so an entry whose pair is still adjacent with the
    // same total length describes exactly the current pair.
    if (left.bytes == 0 || right.bytes == 0 || left.next != top.right ||
        left.bytes + right.bytes != top.bytes) {
      continue;
    }
    left.bytes = top.bytes;
    right.bytes = 0;
    left.next = right.next;
    if (left.next >= 0) symbols[left.next].prev = top.left;
    try_add(left.prev, top.left);
    try_add(top.left, left.next);
  }

  for (ptrdiff_t s = 0; s >= 0; s = symbols[s].next) {
    const std::string_view symbol =
        std::string_view(normalized).substr(symbols[s].start, symbols[s].bytes);
    const int32_t id = find_piece(symbol);
    if (id >= 0) {
      ids.push_back(id);
    } else {
      append_fallback(symbol, &ids);
    }
  }
  return ids;
}

std::string_view Tokenizer::token_bytes(int32_t id) const {
  if (id < 0 || id >= vocab_size()) return {};
  return std::string_view(decoded_).substr(decoded_offsets_[id],
                                           decoded_offsets_[id + 1] - decoded_offsets_[id]);
}

const std::string& Tokenizer::piece(int32_t id) const {
  CHECK(id >= 0 && id < vocab_size());
  return pieces_[id];
}

float Tokenizer::score(int32_t id) const {
  CHECK(id >= 0 && id < vocab_size());
  return scores_[id];
}

int32_t Tokenizer::type(int32_t id) const {
  CHECK(id >= 0 && id < vocab_size());
  return types_[id];
}

Detokenizer::Detokenizer(const Tokenizer& tokenizer) : tokenizer_(&tokenizer) {}

std::string Detokenizer::push(int32_t id) {
  std::string_view bytes = tokenizer_->token_bytes(id);
  // The space that encode() prefixed belongs to no word: drop it from the
  // first piece of the text (only from a text piece, never from a byte
  // token's real space).
  if (after_bos_ && tokenizer_->add_space_prefix() && !bytes.empty() && bytes[0] == ' ' &&
      is_text_type(tokenizer_->type(id))) {
    bytes.remove_prefix(1);
  }
  after_bos_ = id == tokenizer_->bos();
  pending_.append(bytes);

  std::string out;
  const auto* data = reinterpret_cast<const unsigned char*>(pending_.data());
  size_t at = 0;
  while (at < pending_.size()) {
    const Utf8Step step = utf8_step(data + at, pending_.size() - at);
    if (step.status == Utf8::kIncomplete) break;
    if (step.status == Utf8::kValid) {
      out.append(pending_, at, step.bytes);
    } else {
      out.append(kReplacement);
    }
    at += step.bytes;
  }
  pending_.erase(0, at);
  DCHECK(pending_.size() < 4);
  return out;
}

std::string Detokenizer::flush() {
  // What is held back is one incomplete sequence: one maximal subpart.
  std::string out = pending_.empty() ? std::string() : std::string(kReplacement);
  pending_.clear();
  return out;
}

}  // namespace idlefleet::engine
