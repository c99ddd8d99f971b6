// StopMatcher: validation of the stop strings, release of text as soon as it
// cannot start a stop string, truncation right before the match, flush, and
// the property that the total output does not depend on how the text is
// split into pieces, checked against a whole-text reference on random texts
// over a small alphabet (so that partial matches are frequent) and random
// splits, seeded.
#include "engine/stop_strings.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "common/random.h"

namespace idlefleet::engine::stop_strings_test {
namespace {

StopMatcher matcher(std::vector<std::string> stops) {
  auto m = StopMatcher::create(std::move(stops));
  EXPECT_TRUE(m) << m.error().to_string();
  return std::move(*m);
}

// Feeds `pieces` and returns everything released, including the flush.
struct Fed {
  std::string text;
  bool stopped = false;
};
Fed feed(StopMatcher& m, const std::vector<std::string>& pieces) {
  Fed out;
  for (const std::string& p : pieces) {
    StopStep step = m.push(p);
    EXPECT_FALSE(out.stopped && !step.text.empty()) << "text released after the stop";
    out.text.append(step.text);
    out.stopped = out.stopped || step.stopped;
    EXPECT_LT(m.held_bytes(), kStopStringBytesMax);
  }
  out.text.append(m.flush());
  return out;
}

// The reference: the first byte at which some stop string ends; among the
// stop strings ending there, the one starting first; the text before it.
Fed reference(std::string_view text, const std::vector<std::string>& stops) {
  for (size_t end = 1; end <= text.size(); ++end) {
    size_t start = std::string::npos;
    for (const std::string& s : stops) {
      if (s.size() <= end && text.substr(end - s.size(), s.size()) == s) {
        start = std::min(start, end - s.size());
      }
    }
    if (start != std::string::npos) return {std::string(text.substr(0, start)), true};
  }
  return {std::string(text), false};
}

TEST(StopMatcher, Validation) {
  EXPECT_TRUE(StopMatcher::create({}));
  EXPECT_TRUE(StopMatcher::create({"a", "bb", "ccc", std::string(64, 'd')}));
  struct Case {
    std::vector<std::string> stops;
    const char* message;
  };
  const Case cases[] = {
      {{"a", "b", "c", "d", "e"}, "at most 4 stop strings, not 5"},
      {{"ok", ""}, "stop string 1 has 0 bytes; each must have 1 to 64"},
      {{std::string(65, 'x')}, "stop string 0 has 65 bytes; each must have 1 to 64"},
      {{"\xff"}, "stop string 0 is not valid UTF-8"},
      {{"\xc3"}, "stop string 0 is not valid UTF-8"},
      {{"\xed\xa0\x80"}, "stop string 0 is not valid UTF-8"},  // a surrogate
  };
  for (const Case& c : cases) {
    auto m = StopMatcher::create(c.stops);
    ASSERT_FALSE(m) << c.message;
    EXPECT_EQ(m.error().code, ErrorCode::kInvalidArgument);
    EXPECT_EQ(m.error().message, c.message);
  }
}

TEST(StopMatcher, NoStopsPassesEverythingThrough) {
  StopMatcher m = matcher({});
  StopStep s = m.push("anything at all");
  EXPECT_EQ(s.text, "anything at all");
  EXPECT_FALSE(s.stopped);
  EXPECT_EQ(m.flush(), "");
}

TEST(StopMatcher, TruncatesRightBeforeTheMatch) {
  StopMatcher m = matcher({"STOP"});
  StopStep s = m.push("Hello STOP world");
  EXPECT_EQ(s.text, "Hello ");
  EXPECT_TRUE(s.stopped);
  EXPECT_TRUE(m.stopped());
  s = m.push("more");
  EXPECT_EQ(s.text, "");
  EXPECT_FALSE(s.stopped);  // the stop was reported once
  EXPECT_EQ(m.flush(), "");
}

TEST(StopMatcher, HoldsBackOnlyAPossibleStart) {
  StopMatcher m = matcher({"</s>", "User:"});
  StopStep s = m.push("Hi <");
  EXPECT_EQ(s.text, "Hi ");
  EXPECT_EQ(m.held_bytes(), 1u);
  s = m.push("/");
  EXPECT_EQ(s.text, "");
  EXPECT_EQ(m.held_bytes(), 2u);
  s = m.push("b> Us");  // "</b" cannot start "</s>"; "Us" may start "User:"
  EXPECT_EQ(s.text, "</b> ");
  EXPECT_EQ(m.held_bytes(), 2u);
  s = m.push("ually");
  EXPECT_EQ(s.text, "Usually");
  EXPECT_FALSE(s.stopped);
  s = m.push(" User");
  EXPECT_EQ(s.text, " ");
  s = m.push(":");
  EXPECT_EQ(s.text, "");
  EXPECT_TRUE(s.stopped);
}

TEST(StopMatcher, FlushReleasesHeldText) {
  StopMatcher m = matcher({"###"});
  EXPECT_EQ(m.push("end ##").text, "end ");
  EXPECT_EQ(m.flush(), "##");
  EXPECT_EQ(m.held_bytes(), 0u);
  EXPECT_FALSE(m.stopped());
}

TEST(StopMatcher, SelfOverlappingStop) {
  // After "aba" both "a" and "aba" could start "abab": the longer is held.
  StopMatcher m = matcher({"abab"});
  EXPECT_EQ(m.push("xaba").text, "x");
  StopStep s = m.push("b");
  EXPECT_EQ(s.text, "");
  EXPECT_TRUE(s.stopped);

  StopMatcher n = matcher({"abab"});
  EXPECT_EQ(n.push("xaba").text, "x");
  EXPECT_EQ(n.push("c").text, "abac");
}

TEST(StopMatcher, TheMatchEndingFirstWins) {
  // "bc" completes before "abcd" could: the generation stops there.
  EXPECT_EQ(reference("xabcd", {"abcd", "bc"}).text, "xa");
  StopMatcher m = matcher({"abcd", "bc"});
  StopStep s = m.push("xabcd");
  EXPECT_EQ(s.text, "xa");
  // Ending at the same byte, the one starting first.
  StopMatcher t = matcher({"bc", "abc"});
  EXPECT_EQ(t.push("xabc").text, "x");
}

TEST(StopMatcher, MultiByteCharacters) {
  StopMatcher m = matcher({"—end"});  // an em dash, 3 bytes
  EXPECT_EQ(m.push("naïve \xe2\x80").text, "naïve ");
  StopStep s = m.push("\x94" "end");
  EXPECT_EQ(s.text, "");
  EXPECT_TRUE(s.stopped);
}

TEST(StopMatcher, SameOutputHoweverTheTextIsSplit) {
  Rng rng(20261127);
  const std::string alphabet = "ab<>/s";
  for (int trial = 0; trial < 3000; ++trial) {
    std::vector<std::string> stops;
    const size_t stop_count = rng.below(kStopStringsMax + 1);
    for (size_t k = 0; k < stop_count; ++k) {
      std::string s;
      const size_t len = 1 + rng.below(trial % 10 == 0 ? kStopStringBytesMax : 5);
      for (size_t c = 0; c < len; ++c) s.push_back(alphabet[rng.below(alphabet.size())]);
      stops.push_back(s);
    }
    std::string text;
    const size_t text_len = rng.below(200);
    for (size_t c = 0; c < text_len; ++c) text.push_back(alphabet[rng.below(alphabet.size())]);
    const Fed expected = reference(text, stops);

    for (int split = 0; split < 8; ++split) {
      std::vector<std::string> pieces;
      size_t at = 0;
      while (at < text.size()) {
        // Mostly short pieces, sometimes empty ones, sometimes the rest.
        const size_t len = split == 0 ? text.size() : rng.below(split == 1 ? 2 : 8);
        pieces.push_back(text.substr(at, len));
        at += len;
      }
      StopMatcher m = matcher(stops);
      const Fed got = feed(m, pieces);
      ASSERT_EQ(got.text, expected.text) << "trial " << trial << " split " << split;
      ASSERT_EQ(got.stopped, expected.stopped) << "trial " << trial << " split " << split;
    }
  }
}

}  // namespace
}  // namespace idlefleet::engine::stop_strings_test
