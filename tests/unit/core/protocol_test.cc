#include "core/protocol.h"

#include <nlohmann/json.hpp>

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>

#include "common/random.h"

namespace idlefleet::core::protocol_test {
namespace {

ReceiptMessage sample_receipt() {
  ReceiptMessage r;
  r.vehicle_id = "car-1";
  r.job_id = "job-1";
  r.attempt = 2;
  r.model_id = "stories260K";
  r.model_sha256 = std::string(64, 'a');
  r.outcome = "preempted";
  r.input_tokens = 12;
  r.output_tokens = 40;
  r.output_sha256 = std::string(64, '0');
  r.energy_mwh = 311;
  r.accelerator_ms = 2800;
  r.wear_micro_hours = 1555;
  r.started_at = 1795773600000;
  r.ended_at = 1795773602800;
  r.signature = std::string(128, 'f');
  return r;
}

// Every field away from its default, a time-of-use tariff and a price cap.
OwnerPolicy sample_policy() {
  OwnerPolicy p;
  p.opted_in = true;
  p.soc_floor_pct = 42.5;
  p.target_soc_pct = 77.25;
  p.departures_minute_of_week = {450, 1890, 10079};
  p.departure_margin_ms = 45 * kMinuteMs;
  p.accelerator_temp_limit_c = 70.125;
  p.allowed_windows = {{0, 360}, {1320, 1800}, {9000, 10080}};
  p.price_cap_micros_per_kwh = 350'000;
  p.tariff = Tariff::time_of_use({{0, 120'000}, {420, -5'000}, {1380, 90'000}}, {{0, 150'000}});
  p.wear_budget_hours_per_month = 123.5;
  return p;
}

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
  a.logprobs = 3;
  ChunkMessage c{"job-1", 2, 2, {432, 383, 286}};
  c.logprobs = {{-0.125f, {{432, -0.125f}, {17, -2.5f}, {9, -3.0625f}}},
                {-1.0e-7f, {{383, -1.0e-7f}, {4, -17.75f}, {0, kLogprobMin}}},
                {kLogprobMin, {{5, -0.3f}, {6, -1.7f}, {7, -2.9f}}}};
  return {HelloMessage{"car-1", {"stories260K"}, 8ull << 30, 120.5, "instance-7", true, "", "idlefleet-0.1.0+avx2"},
          StateMessage{"car-1", "parked", false, {"battery 28% is below your floor of 30%"}, 28.0, 41.5, 1795780000000,
                       1795773600000, "job-1", 2, 60.0},
          a,
          CancelMessage{"job-1", 2},
          StartedMessage{"job-1", 2},
          c,
          DoneMessage{"job-1", 2, 5, "stop"},
          PreemptedMessage{"job-1", 2, 4, "driver door opened"},
          FailedMessage{"job-1", 2, "model not cached and download failed"},
          EmbeddingMessage{"emb-1-0", 1, 3, {0.6f, -0.8f, 0.0f, 1e-7f}},
          HelloPleaseMessage{},
          sample_receipt(),
          PolicyMessage{"car-1", sample_policy()}};
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

TEST(Protocol, EmbedAssignmentsAndVectorsRoundTripExactly) {
  AssignMessage a;
  a.job_id = "emb-1-0";
  a.attempt = 1;
  a.model_id = "stories260K";
  a.prompt_ids = {1, 403, 407};
  a.lease_expires_at = 1795773600000;
  a.kind = WorkKind::kEmbed;
  auto back = decode_message(encode_message(a));
  ASSERT_TRUE(back) << back.error().to_string();
  EXPECT_EQ(std::get<AssignMessage>(*back).kind, WorkKind::kEmbed);
  // An assign without "kind" (an older coordinator's) is a generation.
  auto old = decode_message(
      R"({"v":1,"type":"assign","job_id":"j","attempt":1,"model_id":"m","prompt_ids":[1],"max_tokens":4,"lease_expires_at":1})");
  ASSERT_TRUE(old) << old.error().to_string();
  EXPECT_EQ(std::get<AssignMessage>(*old).kind, WorkKind::kGenerate);
  // ...and a hello without "embeddings" offers none.
  auto hello = decode_message(R"({"v":1,"type":"hello","vehicle_id":"a","memory_bytes":1})");
  ASSERT_TRUE(hello);
  EXPECT_FALSE(std::get<HelloMessage>(*hello).embeddings);
  EXPECT_EQ(std::get<HelloMessage>(*hello).utc_offset_minutes, 0);  // UTC when not said
  EXPECT_EQ(std::get<HelloMessage>(*hello).power_w, 0.0);             // no draw declared
  HelloMessage h;
  h.vehicle_id = "car-7";
  h.utc_offset_minutes = -300;
  h.power_w = 437.5;
  auto h_back = decode_message(encode_message(h));
  ASSERT_TRUE(h_back) << h_back.error().to_string();
  EXPECT_EQ(std::get<HelloMessage>(*h_back).utc_offset_minutes, -300);
  EXPECT_EQ(std::get<HelloMessage>(*h_back).power_w, 437.5);

  // Every float comes back bitwise, whatever digits it needs.
  EmbeddingMessage e{"emb-1-0", 1, 3, {}};
  Rng rng(5);
  for (int i = 0; i < 4096; ++i) {
    uint32_t bits = static_cast<uint32_t>(rng.next());
    if (((bits >> 23) & 0xff) == 0xff) bits &= ~(1u << 30);  // not inf or NaN
    e.values.push_back(std::bit_cast<float>(bits));
  }
  e.values.push_back(std::numeric_limits<float>::denorm_min());
  e.values.push_back(-std::numeric_limits<float>::max());
  e.values.push_back(-0.0f);
  auto ev = decode_message(encode_message(e));
  ASSERT_TRUE(ev) << ev.error().to_string();
  const auto& got = std::get<EmbeddingMessage>(*ev);
  ASSERT_EQ(got.values.size(), e.values.size());
  for (size_t i = 0; i < e.values.size(); ++i) {
    ASSERT_EQ(std::bit_cast<uint32_t>(got.values[i]), std::bit_cast<uint32_t>(e.values[i])) << i;
  }
  EXPECT_EQ(got.tokens, 3u);
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
  const std::string assign =
      R"({"v":1,"type":"assign","job_id":"j","attempt":1,"model_id":"m","prompt_ids":[1],"max_tokens":0,"lease_expires_at":1,)";
  expect_refused(assign + R"("kind":"teleport"})", "kind");
  expect_refused(assign + R"("kind":7})", "kind");
  expect_refused(assign + R"("kind":"embed","produced_ids":[5]})", "produced_ids");
  expect_refused(R"({"v":1,"type":"hello","vehicle_id":"a","memory_bytes":1,"embeddings":"yes"})", "embeddings");
  // engine_build: bounded, and only [A-Za-z0-9._+-].
  expect_refused(R"({"v":1,"type":"hello","vehicle_id":"a","memory_bytes":1,"engine_build":7})", "engine_build");
  expect_refused(R"({"v":1,"type":"hello","vehicle_id":"a","memory_bytes":1,"engine_build":"a b"})", "engine_build");
  expect_refused(R"({"v":1,"type":"hello","vehicle_id":"a","memory_bytes":1,"engine_build":")" +
                     std::string(kEngineBuildBytesMax + 1, 'x') + R"("})",
                 "engine_build");
  // utc_offset_minutes: an integer within the world's time zones.
  expect_refused(R"({"v":1,"type":"hello","vehicle_id":"a","memory_bytes":1,"utc_offset_minutes":841})",
                 "utc_offset_minutes");
  expect_refused(R"({"v":1,"type":"hello","vehicle_id":"a","memory_bytes":1,"utc_offset_minutes":-721})",
                 "utc_offset_minutes");
  expect_refused(R"({"v":1,"type":"hello","vehicle_id":"a","memory_bytes":1,"utc_offset_minutes":"+01:00"})",
                 "utc_offset_minutes");
  // power_w: a draw in W, 0 to 1 MW.
  expect_refused(R"({"v":1,"type":"hello","vehicle_id":"a","memory_bytes":1,"power_w":-1})", "power_w");
  expect_refused(R"({"v":1,"type":"hello","vehicle_id":"a","memory_bytes":1,"power_w":1e7})", "power_w");
  expect_refused(R"({"v":1,"type":"hello","vehicle_id":"a","memory_bytes":1,"power_w":"400"})", "power_w");
  const std::string embedding = R"({"v":1,"type":"embedding","job_id":"j","attempt":1,)";
  expect_refused(embedding + R"("tokens":3})", "values");
  expect_refused(embedding + R"("tokens":3,"values":[]})", "values");
  expect_refused(embedding + R"("tokens":3,"values":[0.5,"0.5"]})", "values");
  expect_refused(embedding + R"("tokens":3,"values":[0.5,null]})", "values");
  expect_refused(embedding + R"("tokens":3,"values":[1e39]})", "values");
  expect_refused(embedding + R"("tokens":3,"values":[1e400]})", "JSON");  // no double holds it
  expect_refused(embedding + R"("tokens":3,"values":{"0":1}})", "values");
  expect_refused(embedding + R"("values":[0.5]})", "tokens");
  expect_refused(embedding + R"("tokens":-1,"values":[0.5]})", "tokens");
  std::string wide = embedding + R"("tokens":3,"values":[)";
  for (size_t i = 0; i <= kEmbeddingValuesMax; ++i) wide += (i ? ",0" : "0");
  expect_refused(wide + "]}", "more than");
  // Too many ids in one chunk.
  std::string big = R"({"v":1,"type":"chunk","job_id":"j","attempt":1,"first_index":0,"ids":[)";
  for (size_t i = 0; i <= kChunkTokensMax; ++i) big += (i ? ",1" : "1");
  expect_refused(big + "]}", "more than");
  // A message over the size limit is refused before parsing.
  auto huge = decode_message(std::string(kMessageBytesMax + 1, ' '));
  ASSERT_FALSE(huge);
  EXPECT_EQ(huge.error().code, ErrorCode::kOutOfRange);
}

TEST(Protocol, PolicyRoundTripsExactly) {
  const OwnerPolicy p = sample_policy();
  auto m = decode_message(encode_message(PolicyMessage{"car-1", p}));
  ASSERT_TRUE(m) << m.error().to_string();
  const auto& back = std::get<PolicyMessage>(*m);
  EXPECT_EQ(back.vehicle_id, "car-1");
  const OwnerPolicy& q = back.policy;
  EXPECT_EQ(q.opted_in, p.opted_in);
  EXPECT_EQ(q.soc_floor_pct, p.soc_floor_pct);
  EXPECT_EQ(q.target_soc_pct, p.target_soc_pct);
  EXPECT_EQ(q.departures_minute_of_week, p.departures_minute_of_week);
  EXPECT_EQ(q.departure_margin_ms, p.departure_margin_ms);
  EXPECT_EQ(q.accelerator_temp_limit_c, p.accelerator_temp_limit_c);
  ASSERT_EQ(q.allowed_windows.size(), 3u);
  EXPECT_EQ(q.allowed_windows[1].start_minute_of_week, 1320);
  EXPECT_EQ(q.allowed_windows[1].end_minute_of_week, 1800);
  EXPECT_EQ(q.price_cap_micros_per_kwh, p.price_cap_micros_per_kwh);
  EXPECT_EQ(q.tariff.kind, Tariff::Kind::kTimeOfUse);
  ASSERT_EQ(q.tariff.weekday.size(), 3u);
  EXPECT_EQ(q.tariff.weekday[1].price_micros_per_kwh, -5'000);
  EXPECT_EQ(q.tariff.weekend[0].price_micros_per_kwh, 150'000);
  EXPECT_EQ(q.wear_budget_hours_per_month, p.wear_budget_hours_per_month);
  EXPECT_EQ(encode_policy(q), encode_policy(p));

  // Absent fields take the defaults; an empty object is the default policy.
  auto d = decode_policy("{}");
  ASSERT_TRUE(d) << d.error().to_string();
  EXPECT_EQ(encode_policy(*d), encode_policy(OwnerPolicy{}));
  auto flat = decode_policy(R"({"opted_in":true,"price_cap_micros_per_kwh":null,"tariff":{"kind":"flat","flat_micros_per_kwh":-7}})");
  ASSERT_TRUE(flat) << flat.error().to_string();
  EXPECT_TRUE(flat->opted_in);
  EXPECT_FALSE(flat->price_cap_micros_per_kwh.has_value());
  EXPECT_EQ(flat->tariff.flat_micros_per_kwh, -7);
}

void expect_policy_refused(const std::string& policy, const std::string& needle) {
  auto r = decode_policy(policy);
  ASSERT_FALSE(r) << policy;
  EXPECT_NE(r.error().message.find(needle), std::string::npos) << policy << " -> " << r.error().message;
  // The same object inside a policy message is refused the same way.
  expect_refused(R"({"v":1,"type":"policy","vehicle_id":"car-1","policy":)" + policy + "}", needle);
}

TEST(Protocol, BadPoliciesAreRefusedWithTheFieldNamed) {
  expect_policy_refused("[]", "object");
  expect_policy_refused("7", "object");
  expect_policy_refused(R"({"soc_floor":40})", "'soc_floor' is unknown");
  expect_policy_refused(R"({"opted_in":"yes"})", "opted_in");
  expect_policy_refused(R"({"opted_in":null})", "opted_in");
  expect_policy_refused(R"({"soc_floor_pct":"40"})", "soc_floor_pct");
  expect_policy_refused(R"({"soc_floor_pct":150})", "soc_floor_pct");
  expect_policy_refused(R"({"soc_floor_pct":-1})", "soc_floor_pct");
  expect_policy_refused(R"({"soc_floor_pct":90,"target_soc_pct":80})", "above target_soc_pct");
  expect_policy_refused(R"({"target_soc_pct":true})", "target_soc_pct");
  expect_policy_refused(R"({"accelerator_temp_limit_c":500})", "accelerator_temp_limit_c");
  expect_policy_refused(R"({"wear_budget_hours_per_month":-3})", "wear_budget_hours_per_month");
  expect_policy_refused(R"({"departures_minute_of_week":450})", "departures_minute_of_week");
  expect_policy_refused(R"({"departures_minute_of_week":[10080]})", "departures_minute_of_week[0]");
  expect_policy_refused(R"({"departures_minute_of_week":[5,1.5]})", "departures_minute_of_week[1]");
  expect_policy_refused(R"({"departures_minute_of_week":[500,400]})", "departures_minute_of_week[1]");
  std::string many = R"({"departures_minute_of_week":[)";
  for (size_t i = 0; i <= kDeparturesMax; ++i) {
    if (i > 0) many += ',';
    many += std::to_string(i);
  }
  expect_policy_refused(many + "]}", "more than");
  expect_policy_refused(R"({"departure_margin_ms":-1})", "departure_margin_ms");
  expect_policy_refused(R"({"departure_margin_ms":18446744073709551615})", "departure_margin_ms");
  expect_policy_refused(R"({"allowed_windows":[{"start_minute_of_week":0}]})", "allowed_windows[0]");
  expect_policy_refused(R"({"allowed_windows":[{"start_minute_of_week":0,"end_minute_of_week":60,"x":1}]})",
                        "allowed_windows[0].x");
  expect_policy_refused(R"({"allowed_windows":[{"start_minute_of_week":60,"end_minute_of_week":0}]})",
                        "allowed_windows[0]");
  expect_policy_refused(R"({"allowed_windows":[[0,60]]})", "allowed_windows[0]");
  expect_policy_refused(R"({"price_cap_micros_per_kwh":0.5})", "price_cap_micros_per_kwh");
  expect_policy_refused(R"({"price_cap_micros_per_kwh":1000000000000})", "price_cap_micros_per_kwh");
  expect_policy_refused(R"({"tariff":"cheap"})", "tariff");
  expect_policy_refused(R"({"tariff":{"kind":"spot"}})", "tariff.kind");
  expect_policy_refused(R"({"tariff":{"kind":"flat","weekday":[]}})", "tariff");
  expect_policy_refused(R"({"tariff":{"kind":"time_of_use","weekday":[{"start_minute_of_day":0,"price_micros_per_kwh":1}]}})",
                        "weekend");
  expect_policy_refused(
      R"({"tariff":{"kind":"time_of_use","weekday":[{"start_minute_of_day":60,"price_micros_per_kwh":1}],"weekend":[{"start_minute_of_day":0,"price_micros_per_kwh":1}]}})",
      "tariff.weekday");
  expect_policy_refused(
      R"({"tariff":{"kind":"time_of_use","weekday":[{"start_minute_of_day":1440,"price_micros_per_kwh":1}],"weekend":[]}})",
      "tariff.weekday[0].start_minute_of_day");
  expect_policy_refused(R"({"tariff":{"kind":"flat","flat_micros_per_kwh":"1"}})", "tariff.flat_micros_per_kwh");
  // Not JSON, or too large, before any field is read.
  ASSERT_FALSE(decode_policy("{"));
  auto huge = decode_policy(std::string(kPolicyBytesMax + 1, ' '));
  ASSERT_FALSE(huge);
  EXPECT_EQ(huge.error().code, ErrorCode::kOutOfRange);
  // The message itself: a vehicle and a policy object are required.
  expect_refused(R"({"v":1,"type":"policy","policy":{}})", "vehicle_id");
  expect_refused(R"({"v":1,"type":"policy","vehicle_id":"car-1"})", "'policy' is missing");
  expect_refused(R"({"v":1,"type":"policy","vehicle_id":"car-1","policy":"{}"})", "policy");
}

TEST(Protocol, LogprobsAreOptionalAndAbsentWhenOff) {
  AssignMessage a;
  a.job_id = "j";
  a.attempt = 1;
  a.model_id = "m";
  a.prompt_ids = {1};
  a.max_tokens = 4;
  a.lease_expires_at = 1;
  // Off: nothing on the wire, so that peers without logprobs see the same messages.
  EXPECT_EQ(encode_message(a).find("logprobs"), std::string::npos);
  EXPECT_EQ(encode_message(ChunkMessage{"j", 1, 0, {5}}).find("logprobs"), std::string::npos);
  auto back = decode_message(encode_message(a));
  ASSERT_TRUE(back);
  EXPECT_EQ(std::get<AssignMessage>(*back).logprobs, -1);
  for (int32_t n : {0, 1, kTopLogprobsMax}) {
    a.logprobs = n;
    back = decode_message(encode_message(a));
    ASSERT_TRUE(back) << n;
    EXPECT_EQ(std::get<AssignMessage>(*back).logprobs, n);
  }
  auto chunk = decode_message(R"({"v":1,"type":"chunk","job_id":"j","attempt":1,"first_index":0,"ids":[5],"logprobs":null})");
  ASSERT_TRUE(chunk);
  EXPECT_TRUE(std::get<ChunkMessage>(*chunk).logprobs.empty());
  // An entry without alternatives (top_logprobs 0).
  chunk = decode_message(R"({"v":1,"type":"chunk","job_id":"j","attempt":1,"first_index":0,"ids":[5],"logprobs":[{"logprob":-0.5}]})");
  ASSERT_TRUE(chunk);
  ASSERT_EQ(std::get<ChunkMessage>(*chunk).logprobs.size(), 1u);
  EXPECT_EQ(std::get<ChunkMessage>(*chunk).logprobs[0].logprob, -0.5f);
  EXPECT_TRUE(std::get<ChunkMessage>(*chunk).logprobs[0].top.empty());
}

TEST(Protocol, LogprobsArriveBitwiseAsSent) {
  // Any float in [kLogprobMin, 0] (denormals and -0 included) reads back
  // with the same bits: vehicles' logprobs must be comparable exactly.
  Rng rng(5);
  ChunkMessage m{"j", 1, 0, {}};
  std::vector<float> values = {0.0f, -0.0f, kLogprobMin, -1e-45f, -1.17549435e-38f, -0.1f, -9998.999f};
  while (values.size() < 4096) {
    uint32_t bits = static_cast<uint32_t>(rng.next()) | 0x80000000u;  // negative
    float f;
    std::memcpy(&f, &bits, sizeof f);
    if (std::isfinite(f) && f >= kLogprobMin) values.push_back(f);
  }
  for (size_t i = 0; i < values.size(); i += kTopLogprobsMax + 1) {
    TokenLogprobs t;
    t.logprob = values[i];
    for (size_t k = i + 1; k < std::min(values.size(), i + kTopLogprobsMax + 1); ++k) {
      t.top.push_back({static_cast<int32_t>(k), values[k]});
    }
    m.ids.push_back(static_cast<int32_t>(i));
    m.logprobs.push_back(std::move(t));
  }
  ASSERT_LE(m.ids.size(), kChunkLogprobTokensMax);
  const std::string text = encode_message(m);
  auto back = decode_message(text);
  ASSERT_TRUE(back) << back.error().to_string();
  const ChunkMessage& got = std::get<ChunkMessage>(*back);
  ASSERT_EQ(got.logprobs.size(), m.logprobs.size());
  for (size_t i = 0; i < m.logprobs.size(); ++i) {
    EXPECT_EQ(std::bit_cast<uint32_t>(got.logprobs[i].logprob), std::bit_cast<uint32_t>(m.logprobs[i].logprob)) << i;
    ASSERT_EQ(got.logprobs[i].top.size(), m.logprobs[i].top.size());
    for (size_t k = 0; k < m.logprobs[i].top.size(); ++k) {
      EXPECT_EQ(got.logprobs[i].top[k].id, m.logprobs[i].top[k].id);
      EXPECT_EQ(std::bit_cast<uint32_t>(got.logprobs[i].top[k].logprob),
                std::bit_cast<uint32_t>(m.logprobs[i].top[k].logprob));
    }
  }
  // The largest chunk with logprobs at the widest stays well within a NATS payload.
  ChunkMessage widest{"j", 1, 0, {}};
  TokenLogprobs t{-1.23456789e-5f, {}};
  for (int32_t k = 0; k < kTopLogprobsMax; ++k) t.top.push_back({kTokenIdMax - k, -1.23456789e-5f});
  for (size_t i = 0; i < kChunkLogprobTokensMax; ++i) {
    widest.ids.push_back(kTokenIdMax);
    widest.logprobs.push_back(t);
  }
  EXPECT_LT(encode_message(widest).size(), size_t{1} << 20);
  EXPECT_TRUE(decode_message(encode_message(widest)));
}

TEST(Protocol, BadLogprobsAreRefused) {
  const std::string head = R"({"v":1,"type":"chunk","job_id":"j","attempt":1,"first_index":0,"ids":[1,2],"logprobs":)";
  const char* bad[] = {
      R"([{"logprob":-1}])",                                    // fewer entries than ids
      R"([{"logprob":-1},{"logprob":-1},{"logprob":-1}])",      // more
      R"({"logprob":-1})",                                      // not an array
      R"([{"logprob":-1},{"lp":-1}])",                          // no logprob
      R"([{"logprob":-1},{"logprob":0.5}])",                    // a probability above 1
      R"([{"logprob":-1},{"logprob":-10000}])",                 // below -9999
      R"([{"logprob":-1},{"logprob":"-1"}])",                   // not a number
      R"([{"logprob":-1},-1])",                                 // not an object
      R"([{"logprob":-1},{"logprob":-1,"top":[[1,-1,2]]}])",    // not a pair
      R"([{"logprob":-1},{"logprob":-1,"top":[[-1,-1]]}])",     // a negative id
      R"([{"logprob":-1},{"logprob":-1,"top":[[16777216,-1]]}])",  // an id out of range
      R"([{"logprob":-1},{"logprob":-1,"top":[[1.5,-1]]}])",    // a fractional id
      R"([{"logprob":-1},{"logprob":-1,"top":[[1,1]]}])",       // a top logprob above 0
      R"([{"logprob":-1},{"logprob":-1,"top":{"1":-1}}])",      // top not an array
  };
  for (const char* b : bad) expect_refused(head + b + "}", "logprobs");
  // -inf, as far as JSON can spell it, is no number to the parser.
  expect_refused(head + R"([{"logprob":-1},{"logprob":-1e400}])" + "}", "JSON");
  // More than kTopLogprobsMax alternatives.
  std::string top = "[";
  for (int32_t k = 0; k <= kTopLogprobsMax; ++k) top += (k ? ",[" : "[") + std::to_string(k) + ",-1]";
  expect_refused(head + R"([{"logprob":-1},{"logprob":-1,"top":)" + top + "]}]}", "logprobs");
  // More ids than a chunk with logprobs may hold.
  std::string ids = "[", lps = "[";
  for (size_t i = 0; i <= kChunkLogprobTokensMax; ++i) {
    ids += i ? ",1" : "1";
    lps += i ? R"(,{"logprob":-1})" : R"({"logprob":-1})";
  }
  expect_refused(R"({"v":1,"type":"chunk","job_id":"j","attempt":1,"first_index":0,"ids":)" + ids +
                     R"(],"logprobs":)" + lps + "]}",
                 "with logprobs");
  // An assign's top-N: -1..kTopLogprobsMax, an integer.
  const std::string assign = R"({"v":1,"type":"assign","job_id":"j","attempt":1,"model_id":"m","prompt_ids":[1],"max_tokens":4,"lease_expires_at":1,"logprobs":)";
  for (const char* n : {"21", "-2", "\"3\"", "true", "2.5"}) expect_refused(assign + n + "}", "logprobs");
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

TEST(Protocol, ReceiptsAreCheckedAndTheirSignedBytesAreFixed) {
  const ReceiptMessage r = sample_receipt();
  // The signed bytes leave out the signature, and do not depend on it.
  ReceiptMessage unsigned_copy = r;
  unsigned_copy.signature.clear();
  EXPECT_EQ(receipt_signing_bytes(r), receipt_signing_bytes(unsigned_copy));
  EXPECT_EQ(receipt_signing_bytes(r).rfind("idlefleet-receipt-v1\n{\"accelerator_ms\":2800,", 0), 0u)
      << receipt_signing_bytes(r);
  EXPECT_EQ(receipt_signing_bytes(r).find("signature"), std::string::npos);
  ReceiptMessage other = r;
  other.energy_mwh += 1;
  EXPECT_NE(receipt_signing_bytes(r), receipt_signing_bytes(other));
  // Bad fields are refused with a message naming them.
  auto with = [&](const std::string& key, const nlohmann::json& value) {
    nlohmann::json j = nlohmann::json::parse(encode_message(r));
    j[key] = value;
    return j.dump();
  };
  expect_refused(with("output_sha256", "xyz"), "output_sha256");
  expect_refused(with("model_sha256", std::string(64, 'G')), "model_sha256");
  expect_refused(with("signature", "00"), "signature");
  expect_refused(with("outcome", "stolen"), "outcome");
  expect_refused(with("ended_at", 5), "ended_at");
  expect_refused(with("energy_mwh", -1), "energy_mwh");
  // Output digests: ids as little-endian int32.
  Sha256Hasher h;
  const int32_t ids[] = {1, 258};
  hash_output_ids(&h, ids);
  const uint8_t bytes[] = {1, 0, 0, 0, 2, 1, 0, 0};
  EXPECT_EQ(h.finish(), sha256_of(std::string_view(reinterpret_cast<const char*>(bytes), 8)));
  const float one = 1.0f;
  const uint8_t one_bytes[] = {0, 0, 0x80, 0x3f};
  EXPECT_EQ(embedding_output_sha256(std::span<const float>(&one, 1)),
            sha256_of(std::string_view(reinterpret_cast<const char*>(one_bytes), 4)));
}

}  // namespace
}  // namespace idlefleet::core::protocol_test
