// Tokenizer and Detokenizer: the reference model's vocabulary (tok512.bin, read
// here in llama2.c's format) against the ids and texts in
// stories260K.expected.json, an O(n^2) transcription of run.c's encode() as an
// oracle for the O(n log n) one, byte fallback, ill-formed UTF-8, streaming,
// long inputs, and the validation of vocabularies and GGUF metadata.
#include "engine/tokenizer.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/random.h"
#include "engine/gguf.h"
#include "engine/model_format.h"

namespace idlefleet::engine::tokenizer_test {
namespace {

namespace keys = gguf_keys;

const std::string kModelsDir = std::string(IDLEFLEET_SOURCE_DIR) + "/../shared/models/";
constexpr const char* kSpaceMark = "\xE2\x96\x81";
constexpr const char* kReplacement = "\xEF\xBF\xBD";

// The shared models are outside the repository. A developer without them gets
// a skip (loudly); CI must have them, so there a missing directory fails.
#define REQUIRE_SHARED_MODELS()                                                          \
  do {                                                                                   \
    if (!std::filesystem::is_directory(kModelsDir)) {                                    \
      const char* ci = std::getenv("CI");                                                \
      if (ci != nullptr && *ci != '\0') {                                                \
        FAIL() << "CI is set and the shared models are missing: " << kModelsDir;         \
      }                                                                                  \
      std::fprintf(stderr,                                                               \
                   "\n*** SKIPPING: shared models not found at %s; these tests did NOT " \
                   "run ***\n\n",                                                        \
                   kModelsDir.c_str());                                                  \
      GTEST_SKIP() << "shared models not found at " << kModelsDir;                       \
    }                                                                                    \
  } while (0)

struct Vocab {
  std::vector<std::string> pieces;
  std::vector<float> scores;
  std::vector<int32_t> types;
};

// llama2.c's tokenizer file: i32 max_token_length, then per token f32 score,
// i32 length, the piece's bytes (little-endian). Pieces use a literal ' ';
// GGUF and our tokenizer use '▁', as the converter writes them.
Vocab load_llama2c_vocab(const std::string& path, int32_t vocab_size) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in) << path;
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  size_t at = 0;
  const auto read = [&](void* out, size_t n) {
    EXPECT_LE(at + n, bytes.size());
    if (at + n > bytes.size()) return false;
    std::memcpy(out, bytes.data() + at, n);
    at += n;
    return true;
  };
  Vocab v;
  int32_t max_token_length = 0;
  if (!read(&max_token_length, 4)) return v;
  for (int32_t i = 0; i < vocab_size; ++i) {
    float score = 0;
    int32_t length = 0;
    if (!read(&score, 4) || !read(&length, 4)) return v;
    EXPECT_TRUE(length >= 0 && length <= max_token_length) << "token " << i;
    std::string piece(length, '\0');
    if (!read(piece.data(), length)) return v;
    std::string mapped;
    for (char c : piece) {
      if (c == ' ') {
        mapped += kSpaceMark;
      } else {
        mapped += c;
      }
    }
    const bool is_byte = mapped.size() == 6 && mapped.starts_with("<0x") && mapped[5] == '>';
    v.pieces.push_back(mapped);
    v.scores.push_back(score);
    v.types.push_back(i <= 2    ? keys::kTokenTypeControl
                      : is_byte ? keys::kTokenTypeByte
                                : keys::kTokenTypeNormal);
  }
  EXPECT_EQ(at, bytes.size()) << "trailing bytes in " << path;
  return v;
}

Tokenizer tok512() {
  Vocab v = load_llama2c_vocab(kModelsDir + "tok512.bin", 512);
  auto t = Tokenizer::from_vocab(v.pieces, v.scores, v.types, 1, 2, 0, true, true);
  EXPECT_TRUE(t) << t.error().to_string();
  return std::move(t).value();
}

nlohmann::json expected_cases() {
  std::ifstream in(kModelsDir + "stories260K.expected.json");
  EXPECT_TRUE(in);
  return nlohmann::json::parse(in)["cases"];
}

std::string decode(const Tokenizer& t, const std::vector<int32_t>& ids) {
  Detokenizer d(t);
  std::string text;
  for (int32_t id : ids) text += d.push(id);
  return text + d.flush();
}

// run.c's encode(), transcribed: ids first (unknown code points become byte
// tokens at once), then rescan every pair for the best merge, O(n^2). An
// oracle for the priority-queue version on text whose characters are all in
// the vocabulary or have no merges, where the two definitions agree.
std::vector<int32_t> run_c_encode(const Vocab& v, const std::string& text) {
  const auto lookup = [&](const std::string& s) {
    for (size_t i = 3; i < v.pieces.size(); ++i) {
      if (v.types[i] == keys::kTokenTypeNormal && v.pieces[i] == s) return int32_t(i);
    }
    return int32_t{-1};
  };
  std::vector<int32_t> ids;
  if (text.empty()) return ids;
  ids.push_back(lookup(kSpaceMark));
  std::string buffer;
  for (size_t i = 0; i < text.size(); ++i) {
    const unsigned char c = text[i];
    if ((c & 0xC0) != 0x80) buffer.clear();
    buffer += c == ' ' ? std::string(kSpaceMark) : std::string(1, char(c));
    const bool next_continues = i + 1 < text.size() &&
                                (static_cast<unsigned char>(text[i + 1]) & 0xC0) == 0x80 &&
                                buffer.size() < 4;
    if (next_continues) continue;
    const int32_t id = lookup(buffer);
    if (id >= 0) {
      ids.push_back(id);
    } else {
      for (unsigned char b : buffer) ids.push_back(3 + b);
    }
    buffer.clear();
  }
  while (true) {
    float best_score = -1e10f;
    int32_t best_id = -1;
    size_t best_index = 0;
    for (size_t i = 0; i + 1 < ids.size(); ++i) {
      const int32_t id = lookup(v.pieces[ids[i]] + v.pieces[ids[i + 1]]);
      if (id >= 0 && v.scores[id] > best_score) {
        best_score = v.scores[id];
        best_id = id;
        best_index = i;
      }
    }
    if (best_id < 0) break;
    ids[best_index] = best_id;
    ids.erase(ids.begin() + best_index + 1);
  }
  return ids;
}

// A small vocabulary for the rules themselves: no byte tokens unless asked.
Tokenizer small(std::vector<std::string> pieces, std::vector<float> scores,
                bool add_space_prefix = false) {
  pieces.insert(pieces.begin(), {"<unk>", "<s>", "</s>"});
  scores.insert(scores.begin(), {0.0f, 0.0f, 0.0f});
  auto t = Tokenizer::from_vocab(pieces, scores, {}, 1, 2, 0, true, add_space_prefix);
  EXPECT_TRUE(t) << t.error().to_string();
  return std::move(t).value();
}

std::vector<int32_t> with_byte_tokens(std::vector<std::string>* pieces) {
  std::vector<int32_t> types(pieces->size(), keys::kTokenTypeNormal);
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    pieces->push_back(name);
    types.push_back(keys::kTokenTypeByte);
  }
  return types;
}

TEST(TokenizerReference, EncodesExpectedPrompts) {
  REQUIRE_SHARED_MODELS();
  const Tokenizer t = tok512();
  ASSERT_EQ(t.vocab_size(), 512);
  ASSERT_TRUE(t.has_byte_fallback());
  for (const auto& c : expected_cases()) {
    const std::string prompt = c["prompt"];
    const auto expected = c["prompt_token_ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(t.encode(prompt, t.add_bos()), expected) << "prompt '" << prompt << "'";
  }
}

TEST(TokenizerReference, DecodesExpectedTexts) {
  REQUIRE_SHARED_MODELS();
  const Tokenizer t = tok512();
  int cases = 0;
  for (const auto& c : expected_cases()) {
    auto ids = c["prompt_token_ids"].get<std::vector<int32_t>>();
    const auto generated = c["generated_token_ids"].get<std::vector<int32_t>>();
    ids.insert(ids.end(), generated.begin(), generated.end());
    ASSERT_EQ(ids.front(), t.bos());
    EXPECT_EQ(decode(t, ids), c["text"].get<std::string>()) << "prompt '" << c["prompt"] << "'";
    ++cases;
  }
  EXPECT_EQ(cases, 3);
}

TEST(TokenizerReference, MatchesRunCOnRandomText) {
  REQUIRE_SHARED_MODELS();
  const Vocab v = load_llama2c_vocab(kModelsDir + "tok512.bin", 512);
  const Tokenizer t = tok512();
  // Fragments that exercise many merges, plus characters outside the
  // vocabulary (byte fallback) and newlines.
  const std::vector<std::string> fragments = {
      "Once",  " upon", " a", " time",  ",",   " there",   " was",
      " Lily", ".",     "\n", "  ",     "the", "e",        "ing",
      "!",     "\"",    "'s", " happy", "x",   "\xC3\xA9", "\xF0\x9F\x98\x80",
      "?",     "ab",    "q"};
  Rng rng(7);
  for (int round = 0; round < 300; ++round) {
    std::string text;
    const uint64_t count = rng.below(40);
    for (uint64_t i = 0; i < count; ++i) text += fragments[rng.below(fragments.size())];
    std::vector<int32_t> expected = run_c_encode(v, text);
    expected.insert(expected.begin(), 1);
    ASSERT_EQ(t.encode(text, true), expected) << "text '" << text << "'";
    // Decoding gives the text back.
    ASSERT_EQ(decode(t, expected), text);
  }
}

TEST(TokenizerReference, ByteFallbackForUnknownCharacters) {
  REQUIRE_SHARED_MODELS();
  const Tokenizer t = tok512();
  const std::string emoji = "\xF0\x9F\x98\x80";  // U+1F600, not in the vocabulary
  const std::vector<int32_t> ids = t.encode(emoji, false);
  // '▁' (the space prefix, id 410 in tok512) then one byte token per byte.
  EXPECT_EQ(ids, (std::vector<int32_t>{410, 3 + 0xF0, 3 + 0x9F, 3 + 0x98, 3 + 0x80}));
  EXPECT_EQ(decode(t, ids), " " + emoji);
  std::vector<int32_t> with_bos = t.encode(emoji, true);
  EXPECT_EQ(decode(t, with_bos), emoji);
}

TEST(TokenizerReference, EmptyText) {
  REQUIRE_SHARED_MODELS();
  const Tokenizer t = tok512();
  EXPECT_EQ(t.encode("", true), std::vector<int32_t>{1});
  EXPECT_TRUE(t.encode("", false).empty());
  EXPECT_EQ(decode(t, {}), "");
  EXPECT_EQ(decode(t, {1}), "");
}

TEST(TokenizerReference, IllFormedUtf8IsByteFallback) {
  REQUIRE_SHARED_MODELS();
  const Tokenizer t = tok512();
  // A stray continuation byte, a truncated 3-byte sequence, an overlong
  // encoding, a surrogate, bytes never valid, and a truncated end.
  const std::string text =
      "a\x80"
      "b\xE2\x82"
      "c\xC0\xAF"
      "d\xED\xA0\x80"
      "e\xFF\xFE"
      "f\xF0\x9F";
  const std::vector<int32_t> ids = t.encode(text, false);
  for (int32_t id : ids) ASSERT_TRUE(id >= 0 && id < t.vocab_size());
  std::string bytes;
  for (int32_t id : ids) bytes += t.token_bytes(id);
  EXPECT_EQ(bytes, " " + text);  // every byte is kept, via <0xXX> tokens
  // Decoding replaces each maximal ill-formed subpart with one U+FFFD.
  const std::string r = kReplacement;
  EXPECT_EQ(decode(t, t.encode(text, true)),
            "a" + r + "b" + r + "c" + r + r + "d" + r + r + r + "e" + r + r + "f" + r);
}

TEST(TokenizerReference, LongInputIsFast) {
  REQUIRE_SHARED_MODELS();
  const Tokenizer t = tok512();
  std::string text;
  Rng rng(11);
  const char* words[] = {
      "Once", "upon",  "a",  "time", "there",   "was", "little",           "girl", "named", "Lily",
      "she",  "loved", "to", "play", "outside", "\n",  "\xC3\xA9t\xC3\xA9"};
  while (text.size() < 200 * 1024) {
    text += words[rng.below(std::size(words))];
    text += rng.below(8) == 0 ? ". " : " ";
  }
  // One long run of a single character: every pair merges, the worst case
  // for a quadratic implementation.
  text += std::string(20000, 'a');
  const auto start = std::chrono::steady_clock::now();
  const std::vector<int32_t> ids = t.encode(text, true);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("encoded %zu bytes into %zu tokens in %.1f ms\n", text.size(), ids.size(),
              seconds * 1e3);
  // O(n^2) would take minutes; generous for sanitizer builds.
  EXPECT_LT(seconds, 5.0);
  EXPECT_LT(ids.size(), text.size() / 2);
  EXPECT_EQ(decode(t, ids), text);
}

TEST(TokenizerReference, TokenBytes) {
  REQUIRE_SHARED_MODELS();
  const Tokenizer t = tok512();
  EXPECT_EQ(t.token_bytes(3 + 0x0A), "\n");
  EXPECT_EQ(t.token_bytes(410), " ");
  EXPECT_EQ(t.piece(410), kSpaceMark);
  EXPECT_EQ(t.token_bytes(259), " t");
  EXPECT_EQ(t.token_bytes(0), "");
  EXPECT_EQ(t.token_bytes(1), "");
  EXPECT_EQ(t.token_bytes(2), "");
  EXPECT_EQ(t.token_bytes(-1), "");
  EXPECT_EQ(t.token_bytes(512), "");
  EXPECT_EQ(t.type(1), keys::kTokenTypeControl);
  EXPECT_EQ(t.type(3), keys::kTokenTypeByte);
  EXPECT_EQ(t.score(260), -1.0f);
}

TEST(Tokenizer, HighestScoreMergesFirst) {
  // "abc": "bc" outscores "ab", so a + bc, whatever the order of discovery.
  const Tokenizer t = small({"a", "b", "c", "ab", "bc"}, {0, 0, 0, -1, 0});
  EXPECT_EQ(t.encode("abc", false), (std::vector<int32_t>{3, 7}));
  const Tokenizer u = small({"a", "b", "c", "ab", "bc"}, {0, 0, 0, 0, -1});
  EXPECT_EQ(u.encode("abc", false), (std::vector<int32_t>{6, 5}));
}

TEST(Tokenizer, TiesMergeLeftmost) {
  const Tokenizer t = small({"a", "aa"}, {0, 0});
  EXPECT_EQ(t.encode("aaa", false), (std::vector<int32_t>{4, 3}));
  EXPECT_EQ(t.encode("aaaaa", false), (std::vector<int32_t>{4, 4, 3}));
}

TEST(Tokenizer, MergesBuildOnMerges) {
  const Tokenizer t = small({"a", "b", "ab", "abab", "ababa"}, {0, 0, -1, -2, -3});
  EXPECT_EQ(t.encode("ababa", false), (std::vector<int32_t>{7}));
  EXPECT_EQ(t.encode("abab", false), (std::vector<int32_t>{6}));
}

TEST(Tokenizer, SpacesAndPrefix) {
  const std::string m = kSpaceMark;
  const Tokenizer t = small({m, "a", m + "a"}, {0, 0, 1}, /*add_space_prefix=*/true);
  EXPECT_EQ(t.encode("a a", false), (std::vector<int32_t>{5, 5}));
  EXPECT_EQ(t.encode("a a", true), (std::vector<int32_t>{1, 5, 5}));
  EXPECT_EQ(t.encode(" ", false), (std::vector<int32_t>{3, 3}));
  const Tokenizer no_prefix = small({m, "a", m + "a"}, {0, 0, 1}, /*add_space_prefix=*/false);
  EXPECT_EQ(no_prefix.encode("a a", false), (std::vector<int32_t>{4, 5}));
  // Without a prefix there is nothing to strip after bos: the space is real.
  EXPECT_EQ(decode(no_prefix, {1, 5}), " a");
  EXPECT_EQ(decode(t, {1, 5, 5}), "a a");
  EXPECT_EQ(decode(t, {5, 5}), " a a");
}

TEST(Tokenizer, ControlPiecesDoNotMatchText) {
  std::vector<std::string> pieces = {"<unk>", "<s>", "</s>", "<", "s", ">", "<s"};
  auto t = Tokenizer::from_vocab(pieces, {}, {}, 1, 2, 0, true, false);
  ASSERT_TRUE(t) << t.error().to_string();
  EXPECT_EQ(t->encode("<s>", false), (std::vector<int32_t>{6, 5}));
}

TEST(Tokenizer, ControlTextsFromATemplateBecomeControlTokens) {
  // ids: 0 <unk>, 1 <s>, 2 </s>, 3 <, 4 s, 5 >, 6 <s, 7 <|s|> (control), 8 <|s (control), 9 |, 10 a
  std::vector<std::string> pieces = {"<unk>", "<s>", "</s>", "<", "s", ">", "<s", "<|s|>", "<|s", "|", "a"};
  std::vector<int32_t> types(pieces.size(), keys::kTokenTypeNormal);
  types[0] = keys::kTokenTypeUnknown;
  types[1] = types[2] = types[7] = types[8] = keys::kTokenTypeControl;
  auto t = Tokenizer::from_vocab(pieces, {}, types, 1, 2, 0, true, false);
  ASSERT_TRUE(t) << t.error().to_string();
  EXPECT_EQ(t->encode_with_controls("<s>a</s>", false), (std::vector<int32_t>{1, 10, 2}));
  // bos is not doubled; it is added when the text does not start with it.
  EXPECT_EQ(t->encode_with_controls("<s>a", true), (std::vector<int32_t>{1, 10}));
  EXPECT_EQ(t->encode_with_controls("a<s>", true), (std::vector<int32_t>{1, 10, 1}));
  // The longest control text wins; text that only looks like one is text.
  EXPECT_EQ(t->encode_with_controls("<|s|>a<|s", false), (std::vector<int32_t>{7, 10, 8}));
  EXPECT_EQ(t->encode_with_controls("<|a", false), (std::vector<int32_t>{3, 9, 10}));
  EXPECT_EQ(t->encode_with_controls("<s", false), (std::vector<int32_t>{6}));
  EXPECT_EQ(t->encode_with_controls("", true), (std::vector<int32_t>{1}));
  // Plain encode() never does this (user text cannot inject control tokens).
  EXPECT_EQ(t->encode("<s>", false), (std::vector<int32_t>{6, 5}));
  EXPECT_EQ(t->find_control_text("hello <|s|> there"), 7);
  EXPECT_EQ(t->find_control_text("a </s"), -1);
  EXPECT_EQ(t->find_control_text("x</s>"), 2);
}

TEST(Tokenizer, WithoutByteTokensUnknownIsUnk) {
  const Tokenizer t = small({"a"}, {0});
  EXPECT_FALSE(t.has_byte_fallback());
  // One <unk> per unknown code point; ill-formed bytes count one each.
  EXPECT_EQ(t.encode("a\xC3\xA9"
                     "a\xFF\xFE",
                     false),
            (std::vector<int32_t>{3, 0, 3, 0, 0}));
}

TEST(Tokenizer, InferredTypes) {
  std::vector<std::string> pieces = {"<unk>", "<s>", "</s>", "a"};
  with_byte_tokens(&pieces);
  auto t = Tokenizer::from_vocab(pieces, {}, {}, 1, 2, 0, true, false);
  ASSERT_TRUE(t) << t.error().to_string();
  EXPECT_EQ(t->type(0), keys::kTokenTypeUnknown);
  EXPECT_EQ(t->type(1), keys::kTokenTypeControl);
  EXPECT_EQ(t->type(2), keys::kTokenTypeControl);
  EXPECT_EQ(t->type(3), keys::kTokenTypeNormal);
  EXPECT_EQ(t->type(4), keys::kTokenTypeByte);
  EXPECT_TRUE(t->has_byte_fallback());
  EXPECT_EQ(t->encode("ab", false), (std::vector<int32_t>{3, 4 + 'b'}));
}

TEST(Tokenizer, CopiesAreIndependent) {
  Tokenizer copy = small({"a", "aa"}, {0, 0});
  {
    const Tokenizer original = small({"x", "xx"}, {0, 0});
    copy = original;
  }
  EXPECT_EQ(copy.encode("xxx", false), (std::vector<int32_t>{4, 3}));
}

TEST(Detokenizer, HoldsBackSplitCharacters) {
  std::vector<std::string> pieces = {"<unk>", "<s>", "</s>", "a"};
  std::vector<int32_t> types = with_byte_tokens(&pieces);
  types[0] = keys::kTokenTypeUnknown;
  types[1] = types[2] = keys::kTokenTypeControl;
  auto made = Tokenizer::from_vocab(pieces, {}, types, 1, 2, 0, true, true);
  ASSERT_TRUE(made) << made.error().to_string();
  const Tokenizer& t = *made;
  const auto byte = [](int b) { return 4 + b; };

  Detokenizer d(t);
  // U+00E9 'é' = C3 A9: nothing until the second byte.
  EXPECT_EQ(d.push(byte(0xC3)), "");
  EXPECT_EQ(d.push(byte(0xA9)), "\xC3\xA9");
  // U+1F600 over four tokens, with a normal token before it.
  EXPECT_EQ(d.push(3), "a");
  EXPECT_EQ(d.push(byte(0xF0)), "");
  EXPECT_EQ(d.push(byte(0x9F)), "");
  EXPECT_EQ(d.push(byte(0x98)), "");
  EXPECT_EQ(d.push(byte(0x80)), "\xF0\x9F\x98\x80");
  // A sequence cut short by an ASCII byte: U+FFFD, then the byte.
  EXPECT_EQ(d.push(byte(0xE2)), "");
  EXPECT_EQ(d.push(byte(0x82)), "");
  EXPECT_EQ(d.push(3), std::string(kReplacement) + "a");
  // Bytes never valid come out at once.
  EXPECT_EQ(d.push(byte(0xFF)), kReplacement);
  EXPECT_EQ(d.push(byte(0x80)), kReplacement);
  // Control tokens and ids outside the vocabulary add nothing and keep what
  // is held.
  EXPECT_EQ(d.push(byte(0xC3)), "");
  EXPECT_EQ(d.push(2), "");
  EXPECT_EQ(d.push(100000), "");
  EXPECT_EQ(d.push(-5), "");
  EXPECT_EQ(d.push(byte(0xA9)), "\xC3\xA9");
  // What is held at the end is flushed as U+FFFD, once.
  EXPECT_EQ(d.push(byte(0xF0)), "");
  EXPECT_EQ(d.push(byte(0x9F)), "");
  EXPECT_EQ(d.flush(), kReplacement);
  EXPECT_EQ(d.flush(), "");
}

TEST(Detokenizer, StripsOnlyTheSpacePrefixAfterBos) {
  const std::string m = kSpaceMark;
  std::vector<std::string> pieces = {"<unk>", "<s>", "</s>", m + "Once", m};
  std::vector<int32_t> types = with_byte_tokens(&pieces);
  types[0] = keys::kTokenTypeUnknown;
  types[1] = types[2] = keys::kTokenTypeControl;
  auto made = Tokenizer::from_vocab(pieces, {}, types, 1, 2, 0, true, true);
  ASSERT_TRUE(made) << made.error().to_string();
  EXPECT_EQ(decode(*made, {1, 3, 3}), "Once Once");
  EXPECT_EQ(decode(*made, {3, 3}), " Once Once");
  // After every bos, as run.c does.
  EXPECT_EQ(decode(*made, {1, 3, 1, 3}), "OnceOnce");
  // A byte token's space is text, not the prefix.
  EXPECT_EQ(decode(*made, {1, 5 + ' ', 3}), "  Once");
  EXPECT_EQ(decode(*made, {1, 4, 3}), " Once");
}

TEST(TokenizerValidation, RefusesBadVocabularies) {
  const std::vector<std::string> pieces = {"<unk>", "<s>", "</s>", "a"};
  const auto make = [&](std::vector<std::string> p, std::vector<float> s, std::vector<int32_t> ty,
                        int32_t bos = 1, int32_t eos = 2, int32_t unk = 0) {
    return Tokenizer::from_vocab(std::move(p), std::move(s), std::move(ty), bos, eos, unk, true,
                                 true);
  };
  const auto code = [](const Result<Tokenizer>& r) {
    EXPECT_FALSE(r);
    return r ? ErrorCode::kInternal : r.error().code;
  };
  EXPECT_TRUE(make(pieces, {}, {}));
  EXPECT_EQ(code(make(pieces, {0, 0, 0}, {})), ErrorCode::kInvalidArgument);
  EXPECT_EQ(code(make(pieces, {}, {3, 3, 3})), ErrorCode::kInvalidArgument);
  EXPECT_EQ(code(make(pieces, {}, {}, 4)), ErrorCode::kInvalidArgument);
  EXPECT_EQ(code(make(pieces, {}, {}, 1, -1)), ErrorCode::kInvalidArgument);
  EXPECT_EQ(code(make(pieces, {}, {}, 1, 2, 99)), ErrorCode::kInvalidArgument);
  EXPECT_EQ(code(make({}, {}, {}, 0, 0, 0)), ErrorCode::kInvalidArgument);
  EXPECT_EQ(code(make(pieces, {0, 0, 0, NAN}, {})), ErrorCode::kInvalidArgument);
  EXPECT_EQ(code(make(pieces, {}, {3, 3, 3, 7})), ErrorCode::kInvalidArgument);
  EXPECT_EQ(code(make(pieces, {}, {3, 3, 3, -1})), ErrorCode::kInvalidArgument);
  // A byte token must be spelled <0xXX>.
  EXPECT_EQ(code(make(pieces, {}, {3, 3, 3, keys::kTokenTypeByte})), ErrorCode::kInvalidArgument);
  // Some but not all byte tokens.
  EXPECT_EQ(code(make({"<unk>", "<s>", "</s>", "<0x41>"}, {}, {})), ErrorCode::kInvalidArgument);
  // A byte given twice.
  {
    std::vector<std::string> p = pieces;
    std::vector<int32_t> types = with_byte_tokens(&p);
    p.push_back("<0x41>");
    types.push_back(keys::kTokenTypeByte);
    EXPECT_EQ(code(make(p, {}, types)), ErrorCode::kInvalidArgument);
  }
  // Limits.
  EXPECT_EQ(code(make({"<unk>", "<s>", "</s>", std::string(kPieceBytesMax + 1, 'a')}, {}, {})),
            ErrorCode::kOutOfRange);
  EXPECT_TRUE(make({"<unk>", "<s>", "</s>", std::string(kPieceBytesMax, 'a')}, {}, {}));
  EXPECT_EQ(code(make(std::vector<std::string>(kVocabTokensMax + 1), {}, {})),
            ErrorCode::kOutOfRange);
}

// GGUF metadata as the converter writes it.
struct GgufVocab {
  std::vector<std::string> tokens = {"<unk>", "<s>", "</s>", "a", "b", "ab"};
  std::vector<float> scores = {0, 0, 0, -1, -2, -3};
  std::vector<int32_t> types = {2, 3, 3, 1, 1, 1};
};

Result<Tokenizer> from_gguf(const std::function<void(GgufWriter&)>& fill) {
  GgufWriter writer;
  fill(writer);
  const std::vector<uint8_t> bytes = writer.serialize();
  auto file = GgufFile::from_memory(bytes);
  if (!file) return Unexpected(file.error());
  return Tokenizer::from_gguf(**file);
}

void write_vocab(GgufWriter& w, const GgufVocab& v) {
  w.add_string(keys::kTokenizerModel, "llama");
  w.add_string_array(keys::kTokens, v.tokens);
  w.add_float32_array(keys::kScores, v.scores);
  w.add_int32_array(keys::kTokenType, v.types);
}

TEST(TokenizerGguf, ReadsMetadata) {
  auto t = from_gguf([](GgufWriter& w) {
    write_vocab(w, GgufVocab{});
    w.add_uint32(keys::kBosId, 2);
    w.add_uint32(keys::kEosId, 1);
    w.add_uint32(keys::kUnknownId, 0);
    w.add_bool(keys::kAddBos, false);
    w.add_bool(keys::kAddSpacePrefix, false);
  });
  ASSERT_TRUE(t) << t.error().to_string();
  EXPECT_EQ(t->vocab_size(), 6);
  EXPECT_EQ(t->bos(), 2);
  EXPECT_EQ(t->eos(), 1);
  EXPECT_FALSE(t->add_bos());
  EXPECT_FALSE(t->add_space_prefix());
  EXPECT_EQ(t->score(4), -2.0f);
  EXPECT_EQ(t->encode("abab", true), (std::vector<int32_t>{2, 5, 5}));
}

TEST(TokenizerGguf, Defaults) {
  auto t = from_gguf([](GgufWriter& w) {
    w.add_string(keys::kTokenizerModel, "llama");
    w.add_string_array(keys::kTokens, {"<unk>", "<s>", "</s>", "a", "<0x41>"});
  });
  // One byte token but not 256: refused even when inferred.
  ASSERT_FALSE(t);
  EXPECT_EQ(t.error().code, ErrorCode::kCorrupt);

  t = from_gguf([](GgufWriter& w) {
    w.add_string(keys::kTokenizerModel, "llama");
    w.add_string_array(keys::kTokens, {"<unk>", "<s>", "</s>", "a", "aa"});
  });
  ASSERT_TRUE(t) << t.error().to_string();
  EXPECT_EQ(t->bos(), 1);
  EXPECT_EQ(t->eos(), 2);
  EXPECT_TRUE(t->add_bos());
  EXPECT_TRUE(t->add_space_prefix());
  EXPECT_EQ(t->score(4), 0.0f);
  EXPECT_EQ(t->type(1), keys::kTokenTypeControl);
  EXPECT_EQ(t->encode("aaa", false), (std::vector<int32_t>{0, 4, 3}));  // '▁' is unknown
}

TEST(TokenizerReference, ThroughGguf) {
  REQUIRE_SHARED_MODELS();
  const Vocab v = load_llama2c_vocab(kModelsDir + "tok512.bin", 512);
  auto t = from_gguf([&](GgufWriter& w) {
    w.add_string(keys::kTokenizerModel, "llama");
    w.add_string_array(keys::kTokens, v.pieces);
    w.add_float32_array(keys::kScores, v.scores);
    w.add_int32_array(keys::kTokenType, v.types);
    w.add_uint32(keys::kBosId, 1);
    w.add_uint32(keys::kEosId, 2);
    w.add_uint32(keys::kUnknownId, 0);
  });
  ASSERT_TRUE(t) << t.error().to_string();
  for (const auto& c : expected_cases()) {
    EXPECT_EQ(t->encode(c["prompt"].get<std::string>(), true),
              c["prompt_token_ids"].get<std::vector<int32_t>>());
  }
}

TEST(TokenizerGguf, RefusesGarbage) {
  const auto code = [](const Result<Tokenizer>& r) {
    EXPECT_FALSE(r);
    return r ? ErrorCode::kInternal : r.error().code;
  };
  // Not SentencePiece.
  EXPECT_EQ(code(from_gguf([](GgufWriter& w) {
              w.add_string(keys::kTokenizerModel, "gpt2");
              w.add_string_array(keys::kTokens, {"a"});
            })),
            ErrorCode::kUnsupported);
  // No model key, no tokens.
  EXPECT_EQ(code(from_gguf([](GgufWriter& w) { w.add_string_array(keys::kTokens, {"a"}); })),
            ErrorCode::kNotFound);
  EXPECT_EQ(code(from_gguf([](GgufWriter& w) { w.add_string(keys::kTokenizerModel, "llama"); })),
            ErrorCode::kNotFound);
  // Mismatched array lengths, including present-but-empty arrays.
  GgufVocab short_scores;
  short_scores.scores.pop_back();
  EXPECT_EQ(code(from_gguf([&](GgufWriter& w) { write_vocab(w, short_scores); })),
            ErrorCode::kCorrupt);
  GgufVocab long_types;
  long_types.types.push_back(1);
  EXPECT_EQ(code(from_gguf([&](GgufWriter& w) { write_vocab(w, long_types); })),
            ErrorCode::kCorrupt);
  GgufVocab empty_scores;
  empty_scores.scores.clear();
  EXPECT_EQ(code(from_gguf([&](GgufWriter& w) { write_vocab(w, empty_scores); })),
            ErrorCode::kCorrupt);
  GgufVocab no_tokens;
  no_tokens.tokens.clear();
  no_tokens.scores.clear();
  no_tokens.types.clear();
  EXPECT_EQ(code(from_gguf([&](GgufWriter& w) { write_vocab(w, no_tokens); })),
            ErrorCode::kCorrupt);
  // Out-of-range ids and types.
  EXPECT_EQ(code(from_gguf([](GgufWriter& w) {
              write_vocab(w, GgufVocab{});
              w.add_uint32(keys::kBosId, 6);
            })),
            ErrorCode::kCorrupt);
  EXPECT_EQ(code(from_gguf([](GgufWriter& w) {
              write_vocab(w, GgufVocab{});
              w.add_uint32(keys::kEosId, 0xFFFFFFFFu);
            })),
            ErrorCode::kCorrupt);
  EXPECT_EQ(code(from_gguf([](GgufWriter& w) {
              write_vocab(w, GgufVocab{});
              w.add_int32(keys::kUnknownId, -1);
            })),
            ErrorCode::kCorrupt);
  GgufVocab bad_type;
  bad_type.types[3] = 42;
  EXPECT_EQ(code(from_gguf([&](GgufWriter& w) { write_vocab(w, bad_type); })), ErrorCode::kCorrupt);
  // Values of the wrong type.
  EXPECT_EQ(code(from_gguf([](GgufWriter& w) {
              w.add_string(keys::kTokenizerModel, "llama");
              w.add_string_array(keys::kTokens, {"a", "b", "c"});
              w.add_string_array(keys::kScores, {"0", "0", "0"});
            })),
            ErrorCode::kCorrupt);
  EXPECT_EQ(code(from_gguf([](GgufWriter& w) {
              w.add_string(keys::kTokenizerModel, "llama");
              w.add_float32_array(keys::kTokens, {1, 2, 3});
            })),
            ErrorCode::kCorrupt);
  EXPECT_EQ(code(from_gguf([](GgufWriter& w) {
              write_vocab(w, GgufVocab{});
              w.add_string(keys::kAddBos, "yes");
            })),
            ErrorCode::kCorrupt);
  // A NaN score.
  GgufVocab nan_score;
  nan_score.scores[4] = NAN;
  EXPECT_EQ(code(from_gguf([&](GgufWriter& w) { write_vocab(w, nan_score); })),
            ErrorCode::kCorrupt);
}

}  // namespace
}  // namespace idlefleet::engine::tokenizer_test
