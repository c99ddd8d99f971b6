// KeyGate: every authentication outcome and its error object, admission
// against spend and rate limits, usage written by sync(), and keys reloaded
// when another connection (the CLI) changes the file.
#include "coordinator/api_keys.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

namespace idlefleet::coordinator::key_gate_test {
namespace {

namespace fs = std::filesystem;

constexpr core::TimeMs kT0 = 1'700'000'000'000;

class KeyGateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() / ("idlefleet-key-gate-" + std::to_string(::getpid()) + "-" + info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    auto s = store::KeyStore::open((dir_ / "keys.db").string());
    ASSERT_TRUE(s) << s.error().to_string();
    store_ = std::move(*s);
  }
  void TearDown() override {
    store_.reset();
    fs::remove_all(dir_);
  }

  store::CreatedKey make(uint64_t rpm = 0, uint64_t tpm = 0, uint64_t spend = 0) {
    store::NewKey k;
    k.name = "test";
    k.limits = {rpm, tpm};
    k.spend_limit_micros = spend;
    auto c = store_->create(k, kT0);
    EXPECT_TRUE(c) << c.error().to_string();
    return *c;
  }

  static std::string header(const store::CreatedKey& k) { return "Bearer " + k.secret; }

  fs::path dir_;
  std::unique_ptr<store::KeyStore> store_;
};

Refusal refusal(const std::variant<std::string, Refusal>& v) {
  EXPECT_TRUE(std::holds_alternative<Refusal>(v));
  return std::holds_alternative<Refusal>(v) ? std::get<Refusal>(v) : Refusal{};
}

TEST_F(KeyGateTest, AuthenticationOutcomes) {
  const auto good = make();
  const auto gone = make();
  ASSERT_TRUE(store_->revoke(gone.key.id, kT0 + 1));
  KeyGate gate({});
  ASSERT_TRUE(gate.sync(*store_));
  EXPECT_EQ(gate.size(), 2u);

  Refusal r = refusal(gate.authenticate(nullptr));
  EXPECT_EQ(r.error.status, 401);
  EXPECT_EQ(r.error.type, "invalid_request_error");
  EXPECT_EQ(r.error.code, "");
  for (const std::string& h : {std::string(""), std::string("Bearer"), std::string("Bearer "), std::string("Basic x"),
                              "Token " + good.secret, "Bearer " + good.secret + "0", "Bearer sk-idf-" + std::string(64, 'g'),
                              "Bearer " + good.secret.substr(0, 20)}) {
    r = refusal(gate.authenticate(&h));
    EXPECT_EQ(r.error.status, 401) << h;
    EXPECT_EQ(r.error.code, "invalid_api_key") << h;
    EXPECT_EQ(r.error.message.find(good.secret.substr(7)), std::string::npos) << "the secret was echoed";
  }
  const std::string unknown = "Bearer sk-idf-" + std::string(64, 'e');
  r = refusal(gate.authenticate(&unknown));
  EXPECT_EQ(r.error.code, "invalid_api_key");
  const std::string revoked = header(gone);
  r = refusal(gate.authenticate(&revoked));
  EXPECT_EQ(r.error.code, "invalid_api_key");
  EXPECT_NE(r.error.message.find("revoked"), std::string::npos) << r.error.message;

  for (const std::string& h : {header(good), "bearer  " + good.secret + " ", "BEARER " + good.secret}) {
    auto ok = gate.authenticate(&h);
    ASSERT_TRUE(std::holds_alternative<std::string>(ok)) << h;
    EXPECT_EQ(std::get<std::string>(ok), good.key.id);
  }
}

TEST_F(KeyGateTest, ScopesGive403OutsideThem) {
  const auto all = make();
  store::NewKey n;
  n.name = "narrow";
  n.scopes = "models,embeddings";
  auto narrow = store_->create(n, kT0);
  ASSERT_TRUE(narrow);
  KeyGate gate({});
  ASSERT_TRUE(gate.sync(*store_));
  // "*" is the whole client API; the operator's admin scope must be named.
  for (std::string_view scope : store::kScopes) {
    EXPECT_EQ(gate.authorize(all.key.id, scope).has_value(), scope == store::kScopeAdmin) << scope;
  }
  EXPECT_FALSE(gate.authorize(narrow->key.id, "models"));
  EXPECT_FALSE(gate.authorize(narrow->key.id, "embeddings"));
  for (std::string_view scope : {"completions", "files", "batches"}) {
    auto r = gate.authorize(narrow->key.id, scope);
    ASSERT_TRUE(r) << scope;
    EXPECT_EQ(r->error.status, 403);
    EXPECT_EQ(r->error.code, "insufficient_permissions");
    EXPECT_NE(r->error.message.find(std::string(scope)), std::string::npos) << r->error.message;
    EXPECT_EQ(r->retry_after_s, 0);
  }
}

TEST_F(KeyGateTest, LimitsAndUsage) {
  const auto rpm = make(/*rpm=*/2);
  const auto spend = make(0, 0, /*spend=*/10);
  KeyGate gate({.prompt_micros_per_mtok = 1'000'000, .completion_micros_per_mtok = 2'000'000});
  ASSERT_TRUE(gate.sync(*store_));

  EXPECT_FALSE(gate.admit(rpm.key.id, 5, kT0));
  EXPECT_FALSE(gate.admit(rpm.key.id, 5, kT0));
  auto r = gate.admit(rpm.key.id, 5, kT0);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->error.status, 429);
  EXPECT_EQ(r->error.type, "requests");
  EXPECT_EQ(r->error.code, "rate_limit_exceeded");
  EXPECT_EQ(r->retry_after_s, 30);

  EXPECT_FALSE(gate.admit(spend.key.id, 4, kT0));
  gate.record_usage(spend.key.id, 4, 3, kT0);  // 4 + 2 x 3 = 10 micro-units: the limit
  r = gate.admit(spend.key.id, 1, kT0);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->error.status, 429);
  EXPECT_EQ(r->error.type, "insufficient_quota");
  EXPECT_EQ(r->error.code, "insufficient_quota");
  EXPECT_EQ(r->retry_after_s, 0);

  ASSERT_TRUE(gate.sync(*store_));
  auto stored = store_->get(spend.key.id);
  ASSERT_TRUE(stored && stored->has_value());
  EXPECT_EQ((*stored)->usage, (store::KeyUsage{1, 4, 3, 10}));
  stored = store_->get(rpm.key.id);
  EXPECT_EQ((*stored)->usage.requests, 2u);
  // A second sync writes nothing twice.
  ASSERT_TRUE(gate.sync(*store_));
  stored = store_->get(rpm.key.id);
  EXPECT_EQ((*stored)->usage.requests, 2u);

  // A revoke by another connection reaches the gate at its next sync, and
  // in-flight usage is not lost over the reload.
  gate.record_usage(rpm.key.id, 1, 1, kT0);
  {
    auto cli = store::KeyStore::open((dir_ / "keys.db").string());
    ASSERT_TRUE(cli);
    ASSERT_TRUE((*cli)->revoke(rpm.key.id, kT0 + 5));
  }
  const std::string h = header(rpm);
  EXPECT_TRUE(std::holds_alternative<std::string>(gate.authenticate(&h)));
  ASSERT_TRUE(gate.sync(*store_));
  EXPECT_NE(refusal(gate.authenticate(&h)).error.message.find("revoked"), std::string::npos);
  stored = store_->get(rpm.key.id);
  EXPECT_EQ((*stored)->usage.prompt_tokens, 1u);
  EXPECT_EQ((*stored)->revoked_at, kT0 + 5);
}

TEST(KeyGate, SpendIsRoundedUpAndNeverOverflows) {
  EXPECT_EQ(job_spend_micros({}, 1000, 1000), 0u);
  EXPECT_EQ(job_spend_micros({150'000, 600'000}, 1, 0), 1u);          // 0.15 rounds up
  EXPECT_EQ(job_spend_micros({150'000, 600'000}, 1'000'000, 1'000'000), 750'000u);
  EXPECT_EQ(job_spend_micros({10'000'000'000, 10'000'000'000}, UINT64_MAX, UINT64_MAX), UINT64_MAX);
}

}  // namespace
}  // namespace idlefleet::coordinator::key_gate_test
