// The ledger's domain: account names, settlement arithmetic worked by hand,
// the largest-remainder split (exact, ties to the earlier attempt), attempts
// without tokens, time-of-use tariffs across their boundaries, rounding,
// overflow refused rather than wrapped, and every validate() refusal.
#include "core/ledger.h"

#include <gtest/gtest.h>

#include <numeric>

#include "common/random.h"

namespace idlefleet::core::ledger_test {
namespace {

constexpr TimeMs kJan1 = 1'767'225'600'000;  // 2026-01-01T00:00:00Z, a Thursday
constexpr TimeMs kJan2 = 1'767'312'000'000;  // a Friday
constexpr TimeMs kFeb1 = 1'769'904'000'000;

SettlementAttempt attempt(std::string receipt, std::string owner, uint64_t tokens, uint64_t energy_mwh = 0,
                          uint64_t accelerator_ms = 0, int64_t tariff = 0) {
  return {std::move(receipt), std::move(owner), "car-1", tokens, energy_mwh, accelerator_ms, tariff};
}

SettlementInput input() {
  SettlementInput in;
  in.job_id = "chatcmpl-abc";
  in.client_account = "client:key_0123";
  in.model_id = "stories260K";
  in.settled_at_ms = kJan2;
  return in;
}

int64_t sum(const Transaction& t) {
  int64_t s = 0;
  for (const Posting& p : t.postings) s += p.amount_micros;
  return s;
}

// The amount of `kind` postings into `account`.
int64_t paid(const Transaction& t, const std::string& account, std::string_view kind) {
  int64_t s = 0;
  for (const Posting& p : t.postings) {
    if (p.account == account && p.kind == kind) s += p.amount_micros;
  }
  return s;
}

TEST(LedgerAccounts, NamesAreBuiltAndParsed) {
  EXPECT_EQ(*client_account("key_0123abcd"), "client:key_0123abcd");
  EXPECT_EQ(*client_account(kAnonymousClientId), "client:anonymous");
  EXPECT_EQ(*owner_account("alice.smith-2"), "owner:alice.smith-2");
  EXPECT_EQ(parse_account("client:key_1")->type, AccountType::kClient);
  EXPECT_EQ(parse_account("client:key_1")->id, "key_1");
  EXPECT_EQ(parse_account("owner:o1")->type, AccountType::kOwner);
  EXPECT_EQ(parse_account("platform:revenue")->type, AccountType::kPlatformRevenue);
  EXPECT_EQ(parse_account("platform:energy")->type, AccountType::kPlatformEnergy);
  EXPECT_EQ(parse_account("platform:wear")->type, AccountType::kPlatformWear);
  EXPECT_EQ(parse_account("external:deposits")->type, AccountType::kExternalDeposits);
  EXPECT_EQ(parse_account("external:payouts")->type, AccountType::kExternalPayouts);
  for (const char* bad : {"", "client:", "owner:", "client:a b", "owner:-x", "owner:x,y", "platform:other",
                          "external:", "revenue", "client:key\n", "owner:o1 "}) {
    EXPECT_FALSE(valid_account(bad)) << bad;
  }
  EXPECT_FALSE(client_account(std::string(kLedgerIdBytesMax + 1, 'a')));
  EXPECT_TRUE(client_account(std::string(kLedgerIdBytesMax, 'a')));
  EXPECT_EQ(owner_account("").error().code, ErrorCode::kInvalidArgument);
}

TEST(LedgerSettlement, OneAttemptWorkedByHand) {
  SettlementInput in = input();
  in.prompt_tokens = 1000;
  in.completion_tokens = 500;
  in.input_price_micros_per_million_tokens = 2'000'000;   // 2 units per million
  in.output_price_micros_per_million_tokens = 6'000'000;  // 6 units per million
  in.owner_share_ppm = 300'000;                           // 30 %
  in.wear_micros_per_accelerator_hour = 100'000;          // 0.1 unit per hour
  // 12.345 Wh at 0.25 per kWh; 90 s of accelerator.
  in.attempts = {attempt("rcpt-1", "alice", 500, 12'345, 90'000, 250'000)};
  auto txn = settle_job(in);
  ASSERT_TRUE(txn) << txn.error().to_string();
  // price = (1000 * 2e6 + 500 * 6e6) / 1e6 = 5000; pool = 1500;
  // energy = ceil(12345 * 250000 / 1e6) = ceil(3086.25) = 3087;
  // wear = 90000 * 100000 / 3.6e6 = 2500.
  const std::vector<Posting> want = {
      {"client:key_0123", -5000, "charge", ""},
      {"platform:revenue", 5000, "charge", ""},
      {"platform:revenue", -1500, "revenue_share", "rcpt-1"},
      {"owner:alice", 1500, "revenue_share", "rcpt-1"},
      {"platform:energy", -3087, "energy", "rcpt-1"},
      {"owner:alice", 3087, "energy", "rcpt-1"},
      {"platform:wear", -2500, "wear", "rcpt-1"},
      {"owner:alice", 2500, "wear", "rcpt-1"},
  };
  EXPECT_EQ(txn->postings, want);
  EXPECT_EQ(txn->id, "settle:chatcmpl-abc");
  EXPECT_EQ(txn->kind, "settlement");
  EXPECT_EQ(txn->job_id, "chatcmpl-abc");
  EXPECT_EQ(txn->created_at_ms, kJan2);
  EXPECT_TRUE(validate(*txn));
  // Deterministic: the same input, the same transaction.
  EXPECT_EQ(*settle_job(in), *txn);
}

TEST(LedgerSettlement, PriceRoundsUpToTheNextMicro) {
  EXPECT_EQ(*job_price_micros(3, 0, 1, 0), 1);           // 3e-6 micros -> 1
  EXPECT_EQ(*job_price_micros(1'000'000, 0, 7, 0), 7);   // exact
  EXPECT_EQ(*job_price_micros(1'000'001, 0, 7, 0), 8);   // 7.000007 -> 8
  EXPECT_EQ(*job_price_micros(0, 0, 7, 9), 0);
  EXPECT_EQ(*job_price_micros(999'999, 1, 1, 1), 1);     // (999999 + 1) / 1e6 = 1 exactly
}

TEST(LedgerSettlement, ThreeVehiclesSplitThePoolExactly) {
  SettlementInput in = input();
  in.completion_tokens = 100;
  in.output_price_micros_per_million_tokens = 1'000'000'000;  // price = 100000
  in.owner_share_ppm = 333'333;                                // pool = floor(33333.3) = 33333
  in.attempts = {attempt("r1", "alice", 1), attempt("r2", "bob", 1), attempt("r3", "carol", 1)};
  auto txn = settle_job(in);
  ASSERT_TRUE(txn) << txn.error().to_string();
  // 33333 / 3 = 11111 each, nothing left over.
  EXPECT_EQ(paid(*txn, "owner:alice", "revenue_share"), 11111);
  EXPECT_EQ(paid(*txn, "owner:bob", "revenue_share"), 11111);
  EXPECT_EQ(paid(*txn, "owner:carol", "revenue_share"), 11111);

  in.owner_share_ppm = 1'000'000;  // pool 100000: 33333.33 each, one micro left: the first attempt's
  txn = settle_job(in);
  ASSERT_TRUE(txn);
  EXPECT_EQ(paid(*txn, "owner:alice", "revenue_share"), 33334);
  EXPECT_EQ(paid(*txn, "owner:bob", "revenue_share"), 33333);
  EXPECT_EQ(paid(*txn, "owner:carol", "revenue_share"), 33333);
  EXPECT_EQ(paid(*txn, "platform:revenue", "revenue_share"), -100000);
  EXPECT_EQ(sum(*txn), 0);
}

TEST(LedgerSettlement, LargestRemainderByHand) {
  // 7 by 2:3:5 = 1.4, 2.1, 3.5: floors 1, 2, 3; the one left goes to the largest remainder (0.5).
  const uint64_t w1[] = {2, 3, 5};
  EXPECT_EQ(split_largest_remainder(7, w1), (std::vector<int64_t>{1, 2, 4}));
  // 5 by 1:1:1:1 = 1.25 each: one left, the first of the tie.
  const uint64_t w2[] = {1, 1, 1, 1};
  EXPECT_EQ(split_largest_remainder(5, w2), (std::vector<int64_t>{2, 1, 1, 1}));
  // 3 by 1:1:1:1 = 0.75 each: three left, to the first three.
  EXPECT_EQ(split_largest_remainder(3, w2), (std::vector<int64_t>{1, 1, 1, 0}));
  // Zero weights get nothing, whatever is left over.
  const uint64_t w3[] = {0, 1, 0, 2};
  EXPECT_EQ(split_largest_remainder(10, w3), (std::vector<int64_t>{0, 3, 0, 7}));
  const uint64_t w4[] = {0, 0};
  EXPECT_EQ(split_largest_remainder(10, w4), (std::vector<int64_t>{0, 0}));
  EXPECT_TRUE(split_largest_remainder(10, std::span<const uint64_t>()).empty());
}

TEST(LedgerSettlement, LargestRemainderIsExactForRandomSplits) {
  Rng rng(20260101);
  for (int round = 0; round < 2000; ++round) {
    const auto pool = static_cast<int64_t>(rng.below(uint64_t{1} << (1 + rng.below(53))));
    std::vector<uint64_t> weights(1 + rng.below(kSettlementAttemptsMax));
    for (uint64_t& w : weights) w = rng.below(4) == 0 ? 0 : rng.below(kSettlementTokensMax);
    const std::vector<int64_t> parts = split_largest_remainder(pool, weights);
    const unsigned __int128 total = std::accumulate(weights.begin(), weights.end(), (unsigned __int128)0);
    int64_t s = 0;
    for (size_t i = 0; i < parts.size(); ++i) {
      s += parts[i];
      if (total == 0) {
        EXPECT_EQ(parts[i], 0);
        continue;
      }
      // Each part is the floor or the ceiling of its exact share.
      const unsigned __int128 exact_floor = (unsigned __int128)pool * weights[i] / total;
      EXPECT_GE((unsigned __int128)parts[i], exact_floor);
      EXPECT_LE((unsigned __int128)parts[i], exact_floor + 1);
      if (weights[i] == 0) {
        EXPECT_EQ(parts[i], 0);
      }
    }
    EXPECT_EQ(s, total == 0 ? 0 : pool) << "round " << round;
  }
}

TEST(LedgerSettlement, AttemptsWithoutTokensAreStillPaidEnergyAndWear) {
  SettlementInput in = input();
  in.prompt_tokens = 2000;
  in.completion_tokens = 10;
  in.input_price_micros_per_million_tokens = 1'000'000;
  in.output_price_micros_per_million_tokens = 1'000'000;  // 1 micro a token: price 2010, pool 1005
  in.owner_share_ppm = 500'000;
  in.wear_micros_per_accelerator_hour = 360'000;  // 0.1 micro per ms
  // The first car was preempted during prefill; the second did everything else.
  in.attempts = {attempt("r1", "alice", 0, 2'000, 10'000, 200'000), attempt("r2", "bob", 10, 1'000, 20'000, 200'000)};
  auto txn = settle_job(in);
  ASSERT_TRUE(txn) << txn.error().to_string();
  EXPECT_EQ(paid(*txn, "client:key_0123", "charge"), -2010);
  EXPECT_EQ(paid(*txn, "owner:alice", "revenue_share"), 0);
  EXPECT_EQ(paid(*txn, "owner:alice", "energy"), 400);  // 2000 mWh * 0.2 / kWh = 400 micros
  EXPECT_EQ(paid(*txn, "owner:alice", "wear"), 1000);   // 10 s * 0.36 per hour
  EXPECT_EQ(paid(*txn, "owner:bob", "energy"), 200);
  EXPECT_EQ(paid(*txn, "owner:bob", "wear"), 2000);
  EXPECT_EQ(paid(*txn, "owner:bob", "revenue_share"), 1005);  // the whole pool
  // No zero posting for alice's share.
  for (const Posting& p : txn->postings) EXPECT_NE(p.amount_micros, 0);
  EXPECT_EQ(sum(*txn), 0);
}

TEST(LedgerSettlement, EmbeddingsSplitByAcceleratorTime) {
  SettlementInput in = input();
  in.prompt_tokens = 1'000'000;
  in.input_price_micros_per_million_tokens = 900;  // price 900, pool 900
  in.owner_share_ppm = 1'000'000;
  in.attempts = {attempt("r1", "alice", 0, 0, 100), attempt("r2", "bob", 0, 0, 200)};
  // No output tokens at all: the split falls back to accelerator-ms.
  auto txn = settle_job(in);
  ASSERT_TRUE(txn) << txn.error().to_string();
  EXPECT_EQ(paid(*txn, "owner:alice", "revenue_share"), 300);
  EXPECT_EQ(paid(*txn, "owner:bob", "revenue_share"), 600);
  // Asked for explicitly, even when tokens exist.
  in.split_by = ShareSplit::kAcceleratorMs;
  in.attempts[0].output_tokens = 50;
  txn = settle_job(in);
  ASSERT_TRUE(txn);
  EXPECT_EQ(paid(*txn, "owner:alice", "revenue_share"), 300);
  // No measurable work anywhere: the pool stays with the platform.
  in.attempts = {attempt("r1", "alice", 0, 5, 0, 1'000'000)};
  txn = settle_job(in);
  ASSERT_TRUE(txn) << txn.error().to_string();
  EXPECT_EQ(paid(*txn, "owner:alice", "revenue_share"), 0);
  EXPECT_EQ(paid(*txn, "platform:revenue", "charge"), 900);
  EXPECT_EQ(paid(*txn, "owner:alice", "energy"), 5);
}

TEST(LedgerSettlement, ZeroAmountsAreLeftOutAndNegativeTariffsPayNothing) {
  SettlementInput in = input();
  in.attempts = {attempt("r1", "alice", 3, 1000, 1000, -50'000)};
  in.wear_micros_per_accelerator_hour = 3'600'000;  // 1 micro per ms
  auto txn = settle_job(in);  // a free model, energy at a negative price
  ASSERT_TRUE(txn) << txn.error().to_string();
  const std::vector<Posting> want = {{"platform:wear", -1000, "wear", "r1"}, {"owner:alice", 1000, "wear", "r1"}};
  EXPECT_EQ(txn->postings, want);
  // Nothing at all to pay: refused rather than an empty transaction.
  in.wear_micros_per_accelerator_hour = 0;
  EXPECT_EQ(settle_job(in).error().code, ErrorCode::kInvalidArgument);
}

TEST(LedgerSettlement, HugeNumbersAreRefusedNotWrapped) {
  SettlementInput in = input();
  in.attempts = {attempt("r1", "alice", 1)};
  in.prompt_tokens = UINT64_MAX;
  in.input_price_micros_per_million_tokens = UINT64_MAX;
  EXPECT_EQ(settle_job(in).error().code, ErrorCode::kOutOfRange);
  in.prompt_tokens = kSettlementTokensMax + 1;
  in.input_price_micros_per_million_tokens = 1;
  EXPECT_EQ(settle_job(in).error().code, ErrorCode::kOutOfRange);
  // Both at their limits: exact in 128 bits, but 1e18 micros is over one posting's bound.
  in.prompt_tokens = kSettlementTokensMax;
  in.input_price_micros_per_million_tokens = kTokenPriceMicrosPerMillionMax;
  EXPECT_EQ(settle_job(in).error().code, ErrorCode::kOutOfRange);
  // A price just within one posting's bound (2^53 = 9'007'199'254'740'992) is accepted; just above it, not.
  in.prompt_tokens = 9'007'199'254;
  in.input_price_micros_per_million_tokens = kTokenPriceMicrosPerMillionMax;
  EXPECT_TRUE(settle_job(in));
  in.prompt_tokens = 9'007'199'255;
  EXPECT_EQ(settle_job(in).error().code, ErrorCode::kOutOfRange);
  in.input_price_micros_per_million_tokens = 1;
  in.attempts[0].output_tokens = UINT64_MAX;
  EXPECT_EQ(settle_job(in).error().code, ErrorCode::kOutOfRange);
  in.attempts[0] = attempt("r1", "alice", 1, UINT64_MAX);
  EXPECT_EQ(settle_job(in).error().code, ErrorCode::kOutOfRange);
  in.attempts[0] = attempt("r1", "alice", 1, 0, UINT64_MAX);
  EXPECT_EQ(settle_job(in).error().code, ErrorCode::kOutOfRange);
  in.attempts[0] = attempt("r1", "alice", 1, 0, 0, INT64_MIN);
  EXPECT_EQ(settle_job(in).error().code, ErrorCode::kOutOfRange);
  in.attempts[0] = attempt("r1", "alice", 1);
  in.owner_share_ppm = kSharePpmMax + 1;
  EXPECT_EQ(settle_job(in).error().code, ErrorCode::kOutOfRange);
  in.owner_share_ppm = 0;
  in.wear_micros_per_accelerator_hour = UINT64_MAX;
  EXPECT_EQ(settle_job(in).error().code, ErrorCode::kOutOfRange);
  // Everything at its limit at once still settles, and balances.
  in = input();
  in.prompt_tokens = 9'007'199'254;
  in.input_price_micros_per_million_tokens = kTokenPriceMicrosPerMillionMax;
  in.owner_share_ppm = kSharePpmMax;
  in.wear_micros_per_accelerator_hour = kWearMicrosPerHourMax;
  for (size_t i = 0; i < kSettlementAttemptsMax; ++i) {
    in.attempts.push_back(attempt("r" + std::to_string(i), "o" + std::to_string(i), kSettlementTokensMax,
                                  kAttemptEnergyMilliwattHoursMax, kAttemptAcceleratorMsMax, kPriceMicrosPerKwhAbsMax));
  }
  auto txn = settle_job(in);
  ASSERT_TRUE(txn) << txn.error().to_string();
  EXPECT_EQ(sum(*txn), 0);
  EXPECT_LE(txn->postings.size(), kPostingsPerTransactionMax);
  in.attempts.push_back(attempt("one-too-many", "o", 1));
  EXPECT_EQ(settle_job(in).error().code, ErrorCode::kOutOfRange);
}

TEST(LedgerSettlement, MalformedInputsAreRefused) {
  auto refused = [](auto edit) {
    SettlementInput in = input();
    in.prompt_tokens = 10;
    in.input_price_micros_per_million_tokens = 1'000'000;
    in.attempts = {attempt("r1", "alice", 1)};
    edit(in);
    auto txn = settle_job(in);
    return !txn.has_value() && txn.error().code == ErrorCode::kInvalidArgument;
  };
  EXPECT_TRUE(refused([](SettlementInput& in) { in.job_id = ""; }));
  EXPECT_TRUE(refused([](SettlementInput& in) { in.job_id = "job with spaces"; }));
  EXPECT_TRUE(refused([](SettlementInput& in) { in.client_account = "owner:alice"; }));
  EXPECT_TRUE(refused([](SettlementInput& in) { in.client_account = "key_0123"; }));
  EXPECT_TRUE(refused([](SettlementInput& in) { in.model_id = ""; }));
  EXPECT_TRUE(refused([](SettlementInput& in) { in.attempts.clear(); }));
  EXPECT_TRUE(refused([](SettlementInput& in) { in.attempts[0].receipt_id = ""; }));
  EXPECT_TRUE(refused([](SettlementInput& in) { in.attempts[0].owner_id = "a:b"; }));
  EXPECT_TRUE(refused([](SettlementInput& in) { in.attempts[0].vehicle_id = ""; }));
  EXPECT_TRUE(refused([](SettlementInput& in) { in.attempts.push_back(in.attempts[0]); }));  // one receipt twice
  EXPECT_TRUE(refused([](SettlementInput& in) { in.split_by = static_cast<ShareSplit>(7); }));
  EXPECT_TRUE(refused([](SettlementInput& in) { in.settled_at_ms = -1; }));
  EXPECT_FALSE(refused([](SettlementInput&) {}));
}

// --- Tariffs -----------------------------------------------------------------------

TEST(LedgerTariff, HalfHourlyPricesAreSplitAtTheirBoundaries) {
  std::vector<int64_t> prices(48);
  for (size_t i = 0; i < prices.size(); ++i) prices[i] = 100'000 + 10'000 * static_cast<int64_t>(i);
  const Tariff t = half_hourly_tariff(prices);
  ASSERT_TRUE(t.validate());
  EXPECT_EQ(price_at(t, kJan2, 0), 100'000);
  EXPECT_EQ(price_at(t, kJan2 + 30 * kMinuteMs - 1, 0), 100'000);
  EXPECT_EQ(price_at(t, kJan2 + 30 * kMinuteMs, 0), 110'000);
  EXPECT_EQ(price_at(t, kJan2 + 23 * kHourMs + 45 * kMinuteMs, 0), 570'000);
  // 00:15 to 01:15: 15 min at 0.10, 30 at 0.11, 15 at 0.12: mean 0.11 exactly.
  auto span = tariff_for_span(t, kJan2 + 15 * kMinuteMs, kJan2 + 75 * kMinuteMs, 0, 1'000);
  ASSERT_TRUE(span) << span.error().to_string();
  EXPECT_EQ(span->micros_per_kwh, 110'000);
  EXPECT_EQ(span->cost_micros, 110);  // 1 Wh at 0.11 per kWh
  // The same instants for an owner at UTC+1 are 01:15 to 02:15 local: 15 at 0.12, 30 at 0.13, 15 at 0.14.
  span = tariff_for_span(t, kJan2 + 15 * kMinuteMs, kJan2 + 75 * kMinuteMs, 60, 1'000);
  ASSERT_TRUE(span);
  EXPECT_EQ(span->micros_per_kwh, 130'000);
  // Across local midnight at UTC-5: 23:50 to 00:10 local, 10 min at 0.57, 10 at 0.10.
  span = tariff_for_span(t, kJan2 + 4 * kHourMs + 50 * kMinuteMs, kJan2 + 5 * kHourMs + 10 * kMinuteMs, -300, 0);
  ASSERT_TRUE(span);
  EXPECT_EQ(span->micros_per_kwh, 335'000);
  EXPECT_EQ(span->cost_micros, 0);
  // A whole day: the mean of the 48 prices.
  span = tariff_for_span(t, kJan2, kJan2 + kDayMs, 0, 0);
  ASSERT_TRUE(span);
  EXPECT_EQ(span->micros_per_kwh, 335'000);
}

TEST(LedgerTariff, WeekendsAndRounding) {
  const Tariff t = Tariff::time_of_use({{0, 100}}, {{0, 200}});
  const TimeMs friday_midnight = kJan2 + kDayMs;  // Saturday 00:00 UTC
  // 1 ms on Friday at 100 and 2 ms on Saturday at 200: (100 + 400) / 3 = 166.67, rounded up.
  auto span = tariff_for_span(t, friday_midnight - 1, friday_midnight + 2, 0, 3);
  ASSERT_TRUE(span) << span.error().to_string();
  EXPECT_EQ(span->micros_per_kwh, 167);
  // 3 mWh * 166.67 micros/kWh = 0.0005 micros: one rounding, up to 1.
  EXPECT_EQ(span->cost_micros, 1);
  // A zero-length span is priced at its instant.
  span = tariff_for_span(t, friday_midnight, friday_midnight, 0, 1'000'000);
  ASSERT_TRUE(span);
  EXPECT_EQ(span->micros_per_kwh, 200);
  EXPECT_EQ(span->cost_micros, 200);
  // Flat: the flat price, whatever the span.
  span = tariff_for_span(Tariff::flat(250'000), kJan1, kJan1 + 7 * kDayMs, 0, 4'000);
  ASSERT_TRUE(span);
  EXPECT_EQ(span->micros_per_kwh, 250'000);
  EXPECT_EQ(span->cost_micros, 1'000);
  // Negative prices: the mean may be negative; the cost is never below zero.
  span = tariff_for_span(Tariff::flat(-3), kJan1, kJan1 + 10, 0, 1'000'000);
  ASSERT_TRUE(span);
  EXPECT_EQ(span->micros_per_kwh, -3);
  EXPECT_EQ(span->cost_micros, 0);
}

TEST(LedgerTariff, BadSpansAreRefused) {
  const Tariff t = Tariff::flat(1);
  EXPECT_EQ(tariff_for_span(t, 10, 5, 0, 0).error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(tariff_for_span(t, -1, 5, 0, 0).error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(tariff_for_span(t, 0, 5, 15 * 60, 0).error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(tariff_for_span(t, 0, kTariffSpanMsMax + 1, 0, 0).error().code, ErrorCode::kOutOfRange);
  EXPECT_EQ(tariff_for_span(t, 0, 1, 0, kAttemptEnergyMilliwattHoursMax + 1).error().code, ErrorCode::kOutOfRange);
  EXPECT_FALSE(tariff_for_span(Tariff::time_of_use({}, {{0, 1}}), 0, 1, 0, 0));
  // The longest span at the highest price and energy does not overflow.
  const Tariff dear = Tariff::time_of_use({{0, -kPriceMicrosPerKwhAbsMax}, {1, kPriceMicrosPerKwhAbsMax}},
                                          {{0, kPriceMicrosPerKwhAbsMax}});
  auto span = tariff_for_span(dear, kJan1, kJan1 + kTariffSpanMsMax, 0, kAttemptEnergyMilliwattHoursMax);
  ASSERT_TRUE(span) << span.error().to_string();
  EXPECT_GT(span->cost_micros, 0);
}

// --- Transactions ---------------------------------------------------------------------

Transaction settlement() {
  SettlementInput in = input();
  in.prompt_tokens = 100;
  in.input_price_micros_per_million_tokens = 10'000'000;
  in.owner_share_ppm = 500'000;
  in.attempts = {attempt("r1", "alice", 1, 100, 100, 1'000'000)};
  return *settle_job(in);
}

TEST(LedgerValidate, RefusesEveryBrokenRule) {
  const Transaction good = settlement();
  ASSERT_TRUE(validate(good));
  auto refused = [&](auto edit, ErrorCode code = ErrorCode::kInvalidArgument) {
    Transaction t = good;
    edit(t);
    const Status s = validate(t);
    return !s.has_value() && s.error().code == code;
  };
  EXPECT_TRUE(refused([](Transaction& t) { t.postings.clear(); }));
  EXPECT_TRUE(refused([](Transaction& t) { t.postings[0].amount_micros -= 1; }));  // no longer sums to zero
  EXPECT_TRUE(refused([](Transaction& t) { t.postings[0].account = "client:"; }));
  EXPECT_TRUE(refused([](Transaction& t) { t.postings[0].account = "bank"; }));
  EXPECT_TRUE(refused([](Transaction& t) { t.postings.push_back({"owner:x", 0, "wear", "r1"}); }));
  EXPECT_TRUE(refused([](Transaction& t) { t.postings[0].kind = "tip"; }));
  EXPECT_TRUE(refused([](Transaction& t) { t.postings[0].kind = "deposit"; }));  // not in a settlement
  EXPECT_TRUE(refused([](Transaction& t) { t.postings[3].receipt_id = ""; }));   // owner paid without a receipt
  EXPECT_TRUE(refused([](Transaction& t) { t.postings[3].receipt_id = "bad receipt"; }));
  EXPECT_TRUE(refused([](Transaction& t) { t.id = "settle:other-job"; }));
  EXPECT_TRUE(refused([](Transaction& t) { t.id = ""; }));
  EXPECT_TRUE(refused([](Transaction& t) { t.id = std::string(kTransactionIdBytesMax + 1, 'a'); }));
  EXPECT_TRUE(refused([](Transaction& t) { t.kind = "gift"; }));
  EXPECT_TRUE(refused([](Transaction& t) { t.job_id = ""; }));
  EXPECT_TRUE(refused([](Transaction& t) { t.created_at_ms = -1; }));
  EXPECT_TRUE(refused(
      [](Transaction& t) {
        t.postings = {{"client:a", kAmountMicrosMax + 1, "charge", ""}, {"platform:revenue", -kAmountMicrosMax - 1, "charge", ""}};
      },
      ErrorCode::kOutOfRange));
  EXPECT_TRUE(refused(
      [](Transaction& t) {
        t.postings.clear();
        for (size_t i = 0; i < kPostingsPerTransactionMax / 2 + 1; ++i) {
          t.postings.push_back({"client:a", -1, "charge", ""});
          t.postings.push_back({"platform:revenue", 1, "charge", ""});
        }
      },
      ErrorCode::kOutOfRange));
  // An unreceipted owner posting is fine outside settlements (a payout).
  auto payout = build_payout("2026-01", "alice", 5, kFeb1);
  ASSERT_TRUE(payout);
  EXPECT_TRUE(validate(*payout));
  Transaction p = *payout;
  p.id = "payout:2026-13:alice";
  EXPECT_FALSE(validate(p));
  p.id = "payout:2026-01:bob";  // the id names another owner than the one paid
  EXPECT_FALSE(validate(p));
  p.id = "payout:2026-01";
  EXPECT_FALSE(validate(p));
  p = *payout;
  p.job_id = "job";
  EXPECT_FALSE(validate(p));
}

TEST(LedgerBuilders, DepositsRefundsAndPayouts) {
  auto d = build_deposit("bank-2026-01-05:77", "client:key_1", 12'500'000, kJan2);
  ASSERT_TRUE(d) << d.error().to_string();
  EXPECT_EQ(d->id, "deposit:bank-2026-01-05:77");
  const std::vector<Posting> deposit_postings = {{"external:deposits", -12'500'000, "deposit", ""},
                                                 {"client:key_1", 12'500'000, "deposit", ""}};
  EXPECT_EQ(d->postings, deposit_postings);
  EXPECT_TRUE(validate(*d));
  EXPECT_EQ(build_deposit("r", "client:key_1", 0, kJan2).error().code, ErrorCode::kOutOfRange);
  EXPECT_EQ(build_deposit("r", "client:key_1", kAmountMicrosMax + 1, kJan2).error().code, ErrorCode::kOutOfRange);
  EXPECT_EQ(build_deposit("r", "owner:alice", 1, kJan2).error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(build_deposit("", "client:key_1", 1, kJan2).error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(build_deposit(":r", "client:key_1", 1, kJan2).error().code, ErrorCode::kInvalidArgument);

  const Transaction s = settlement();  // charged 1000 micros
  auto r = build_refund(s, kJan2 + 1);
  ASSERT_TRUE(r) << r.error().to_string();
  EXPECT_EQ(r->id, "refund:chatcmpl-abc");
  EXPECT_EQ(r->job_id, "chatcmpl-abc");
  const std::vector<Posting> refund_postings = {{"client:key_0123", 1000, "refund", ""},
                                                {"platform:revenue", -1000, "refund", ""}};
  EXPECT_EQ(r->postings, refund_postings);
  EXPECT_TRUE(validate(*r));
  EXPECT_FALSE(build_refund(*d, kJan2));  // not a settlement
  SettlementInput free_job = input();
  free_job.attempts = {attempt("r1", "alice", 1, 100, 0, 1'000'000)};
  EXPECT_FALSE(build_refund(*settle_job(free_job), kJan2));  // nothing was charged

  auto p = build_payout("2026-01", "alice", 42, kFeb1);
  ASSERT_TRUE(p);
  EXPECT_EQ(p->id, "payout:2026-01:alice");
  const std::vector<Posting> payout_postings = {{"owner:alice", -42, "payout", ""}, {"external:payouts", 42, "payout", ""}};
  EXPECT_EQ(p->postings, payout_postings);
  EXPECT_FALSE(build_payout("2026-1", "alice", 42, kFeb1));
  EXPECT_FALSE(build_payout("2026-01", "alice", -42, kFeb1));
}

// --- Months and statements ---------------------------------------------------------------

TEST(LedgerMonths, ParseFormatAndBoundaries) {
  EXPECT_EQ(*parse_month("2026-01"), (Month{2026, 1}));
  for (const char* bad : {"2026-1", "2026-00", "2026-13", "26-01", "2026/01", "1969-12", "2026-01x", "", "abcd-ef"}) {
    EXPECT_FALSE(parse_month(bad)) << bad;
  }
  EXPECT_EQ(month_text({987, 3}), "987-03");  // formatted even if never valid
  EXPECT_EQ(month_start_ms({2026, 1}), kJan1);
  EXPECT_EQ(month_start_ms(next_month({2026, 1})), kFeb1);
  EXPECT_EQ(next_month({2025, 12}), (Month{2026, 1}));
  EXPECT_EQ(month_start_ms({2024, 3}), 1'709'251'200'000);  // after a leap day
  EXPECT_EQ(month_start_ms({1970, 1}), 0);
  EXPECT_EQ(iso8601_utc(kJan1), "2026-01-01T00:00:00Z");
  EXPECT_EQ(iso8601_utc(kJan2 + 10 * kHourMs + 4 * kMinuteMs + 5 * kSecondMs + 999), "2026-01-02T10:04:05Z");
  EXPECT_EQ(iso8601_utc(kFeb1 - 1), "2026-01-31T23:59:59Z");
}

LedgerEntry entry(std::string txn, std::string job, TimeMs at, uint32_t seq, int64_t amount, std::string kind,
                  std::string receipt) {
  return {std::move(txn), "settlement", std::move(job), at, seq, {"owner:alice", amount, std::move(kind), std::move(receipt)}};
}

TEST(LedgerStatement, TotalsCountsAndOrder) {
  std::vector<LedgerEntry> entries = {
      entry("settle:j2", "j2", kJan2 + 5, 3, 30, "energy", "r2"),
      entry("settle:j1", "j1", kJan2, 5, 7, "wear", "r1"),
      entry("settle:j1", "j1", kJan2, 3, 20, "energy", "r1"),
      entry("settle:j1", "j1", kJan2, 1, 100, "revenue_share", "r1"),
      entry("settle:j2", "j2", kJan2 + 5, 1, 50, "revenue_share", "r3"),
  };
  LedgerEntry payout{"payout:2025-12:alice", "payout", "", kJan1, 0, {"owner:alice", -500, "payout", ""}};
  entries.push_back(payout);
  auto s = build_statement("alice", {2026, 1}, 600, entries);
  ASSERT_TRUE(s) << s.error().to_string();
  ASSERT_EQ(s->entries.size(), 6u);
  EXPECT_EQ(s->entries[0].transaction_id, "payout:2025-12:alice");
  EXPECT_EQ(s->entries[1].seq, 1u);
  EXPECT_EQ(s->entries[2].seq, 3u);
  EXPECT_EQ(s->entries[3].seq, 5u);
  EXPECT_EQ(s->entries[4].transaction_id, "settle:j2");
  const std::map<std::string, int64_t> totals = {{"energy", 50}, {"payout", -500}, {"revenue_share", 150}, {"wear", 7}};
  EXPECT_EQ(s->totals_micros_by_kind, totals);
  EXPECT_EQ(s->receipts, 3u);
  EXPECT_EQ(s->jobs, 2u);
  EXPECT_EQ(s->net_micros, -293);
  EXPECT_EQ(s->opening_balance_micros, 600);
  EXPECT_EQ(s->closing_balance_micros, 307);

  EXPECT_FALSE(build_statement("bob", {2026, 1}, 0, entries));                 // not bob's entries
  EXPECT_FALSE(build_statement("alice", {2026, 2}, 0, entries));               // not February's
  EXPECT_EQ(build_statement("alice", {2026, 1}, INT64_MAX, {entry("settle:j1", "j1", kJan2, 0, 1, "wear", "r1")})
                .error()
                .code,
            ErrorCode::kOutOfRange);  // the closing balance overflows
  EXPECT_TRUE(build_statement("alice", {2026, 1}, 0, {}));
}

}  // namespace
}  // namespace idlefleet::core::ledger_test
