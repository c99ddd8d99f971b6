#include "core/protocol.h"

#include <gtest/gtest.h>

#include <fstream>

#include "common/random.h"

namespace idlefleet::core {
namespace {

std::vector<Message> samples() {
  AssignMessage a;
  a.job_id = "job-1";
  a.attempt = 2;
  a.model_id = "stories260K";
  a.prompt_ids = {1, 403, 407};
  a.produced_ids = {261, 378};
  a.max_tokens = 64;
  a.stop_ids = {1, 2};
  a.sampling.temperature = 0.8;
  a.sampling.top_p = 0.95;
  a.sampling.seed = 42;
  a.sampling.presence_penalty = 0.5;
  a.sampling.frequency_penalty = -1.25;
  a.lease_expires_at = 1795773600000;
  return {HelloMessage{"car-1", {"stories260K"}, 8ull << 30, 120.5, "instance-7"},
          StateMessage{"car-1", "parked", false, {"battery 28% is below your floor of 30%"}, 28.0, 41.5, 1795780000000,
                       1795773600000, "job-1", 2, 60.0},
          a,
          CancelMessage{"job-1", 2},
          StartedMessage{"job-1", 2},
          ChunkMessage{"job-1", 2, 2, {432, 383, 286}},
          DoneMessage{"job-1", 2, 5, "stop"},
          PreemptedMessage{"job-1", 2, 4, "driver door opened"},
          FailedMessage{"job-1", 2, "model not cached and download failed"}};
}

TEST(Protocol, EveryMessageRoundTrips) {
  for (const Message& m : samples()) {
    const std::string text = encode_message(m);
    auto back = decode_message(text);
    ASSERT_TRUE(back) << text << "\n" << back.error().to_string();
    EXPECT_EQ(back->index(), m.index());
    EXPECT_EQ(encode_message(*back), text);
  }
}

TEST(Protocol, SeedCorpusDecodes) {
  // IDLEFLEET_WRITE_CORPUS=tests/fuzz/protocol/corpus build/release/tests/protocol_test
  // writes the round-trip samples as fuzz seeds; otherwise this checks that
  // each checked-in seed still decodes.
  const std::string dir = std::string(IDLEFLEET_SOURCE_DIR) + "/tests/fuzz/protocol/corpus";
  const auto all = samples();
  for (size_t i = 0; i < all.size(); ++i) {
    const std::string path = (std::getenv("IDLEFLEET_WRITE_CORPUS") ? std::string(std::getenv("IDLEFLEET_WRITE_CORPUS")) : dir) +
                             "/" + message_type(all[i]);
    if (std::getenv("IDLEFLEET_WRITE_CORPUS")) {
      std::ofstream(path) << encode_message(all[i]);
      continue;
    }
    std::ifstream in(path);
    ASSERT_TRUE(in.good()) << "missing seed " << path;
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    EXPECT_TRUE(decode_message(text)) << path;
  }
}

void expect_refused(const std::string& text, const std::string& needle) {
  auto r = decode_message(text);
  ASSERT_FALSE(r) << text;
  EXPECT_NE(r.error().message.find(needle), std::string::npos) << text << " -> " << r.error().message;
}

TEST(Protocol, GarbageIsRefusedWithTheFieldNamed) {
  expect_refused("", "not valid JSON");
  expect_refused("{", "not valid JSON");
  expect_refused("[1,2]", "not a JSON object");
  expect_refused(R"({"type":"hello"})", "version");
  expect_refused(R"({"v":2,"type":"hello"})", "not supported");
  expect_refused(R"({"v":1})", "type");
  expect_refused(R"({"v":1,"type":"launch_missiles"})", "unknown");
  expect_refused(R"({"v":1,"type":"hello","memory_bytes":1})", "vehicle_id");
  expect_refused(R"({"v":1,"type":"hello","vehicle_id":7,"memory_bytes":1})", "vehicle_id");
  expect_refused(R"({"v":1,"type":"hello","vehicle_id":")" + std::string(200, 'x') + R"(","memory_bytes":1})",
                 "longer than");
  expect_refused(R"({"v":1,"type":"hello","vehicle_id":"a","memory_bytes":-1})", "memory_bytes");
  expect_refused(R"({"v":1,"type":"state","vehicle_id":"a","state":"parked","eligible":"yes","soc_pct":50,"sent_at":1})",
                 "eligible");
  expect_refused(R"({"v":1,"type":"state","vehicle_id":"a","state":"parked","eligible":true,"soc_pct":150,"sent_at":1})",
                 "soc_pct");
  expect_refused(R"({"v":1,"type":"chunk","job_id":"j","attempt":1,"first_index":0,"ids":[1,-2]})", "ids");
  expect_refused(R"({"v":1,"type":"chunk","job_id":"j","attempt":1,"first_index":0,"ids":[1,99999999]})", "ids");
  expect_refused(R"({"v":1,"type":"chunk","job_id":"j","attempt":1,"first_index":0,"ids":"1,2"})", "ids");
  expect_refused(R"({"v":1,"type":"done","job_id":"j","attempt":1,"total_tokens":3,"finish_reason":"bored"})",
                 "finish_reason");
  expect_refused(R"({"v":1,"type":"assign","job_id":"j","attempt":1,"model_id":"m","prompt_ids":[],"max_tokens":4,"lease_expires_at":1})",
                 "prompt_ids");
  expect_refused(R"({"v":1,"type":"assign","job_id":"j","attempt":1,"model_id":"m","prompt_ids":[1],"max_tokens":4,"lease_expires_at":1,"sampling":{"temperature":"hot"}})",
                 "temperature");
  expect_refused(R"({"v":1,"type":"assign","job_id":"j","attempt":1,"model_id":"m","prompt_ids":[1],"max_tokens":4,"lease_expires_at":1,"sampling":{"top_p":1.5}})",
                 "top_p");
  // Too many ids in one chunk.
  std::string big = R"({"v":1,"type":"chunk","job_id":"j","attempt":1,"first_index":0,"ids":[)";
  for (size_t i = 0; i <= kChunkTokensMax; ++i) big += (i ? ",1" : "1");
  expect_refused(big + "]}", "more than");
  // A message over the size limit is refused before parsing.
  auto huge = decode_message(std::string(kMessageBytesMax + 1, ' '));
  ASSERT_FALSE(huge);
  EXPECT_EQ(huge.error().code, ErrorCode::kOutOfRange);
}

TEST(Protocol, UnknownExtraFieldsAreIgnored) {
  auto r = decode_message(R"({"v":1,"type":"cancel","job_id":"j","attempt":3,"comment":"newer peer"})");
  ASSERT_TRUE(r);
  EXPECT_EQ(std::get<CancelMessage>(*r).attempt, 3u);
}

TEST(Protocol, RandomMutationsNeverCrash) {
  Rng rng(11);
  const auto all = samples();
  for (int i = 0; i < 20000; ++i) {
    std::string text = encode_message(all[rng.below(all.size())]);
    const int edits = 1 + static_cast<int>(rng.below(4));
    for (int e = 0; e < edits && !text.empty(); ++e) {
      const size_t at = rng.below(text.size());
      switch (rng.below(3)) {
        case 0: text[at] = static_cast<char>(rng.below(256)); break;
        case 1: text.erase(at, 1 + rng.below(8)); break;
        default: text.insert(at, 1, "{}[]\",:0-9e"[rng.below(11)]); break;
      }
    }
    (void)decode_message(text);  // any result but a crash
  }
}

}  // namespace
}  // namespace idlefleet::core
