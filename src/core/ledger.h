// The double-entry ledger's domain: accounts, postings, transactions, the
// settlement of a finished job, deposits, refunds, payouts and owners'
// statements. Pure: no I/O, no clock, no randomness; time is an argument.
// store/ledger_store.h keeps what these functions build.
//
// Money is int64 micro-units (common/money.h: 1 unit = 1,000,000 micros). A
// posting moves an amount into (positive) or out of (negative) one account's
// balance; a transaction's postings sum to exactly zero, so the balances of
// all accounts together are always zero.
//
// Accounts (each name at most kAccountBytesMax bytes):
//   client:<id>          a client of the API: an API key id (key_...), or
//                        client:anonymous when keys are off. Deposits raise
//                        its balance, charges lower it; below zero is credit.
//   owner:<id>           a vehicle owner: what the platform owes them.
//   platform:revenue     clients' payments, less owners' revenue shares.
//   platform:energy      energy reimbursed to owners (goes negative: a cost).
//   platform:wear        wear allowances paid to owners (likewise).
//   external:deposits    money that came in from outside (goes negative).
//   external:payouts     money paid out to owners' bank accounts.
// Ids (client, owner, job, receipt, vehicle, model): 1..kLedgerIdBytesMax
// bytes of [A-Za-z0-9_.-], the first a letter or digit, so every name is one
// CSV field, one SQL literal and one shell word without quoting.
//
// Settlement of a finished job (settle_job), every division exact in 128-bit
// integers and rounded as written:
//   price    = ceil((prompt_tokens * input_price + completion_tokens * output_price) / 1e6)
//              (prices in micros per million tokens)
//   pool     = floor(price * owner_share_ppm / 1e6)
//   energy_i = ceil(energy_mWh_i * max(tariff_i, 0) / 1e6)     (tariff in micros per kWh)
//   wear_i   = ceil(accelerator_ms_i * wear_micros_per_hour / 3.6e6)
//   share_i  = the pool split in proportion to each attempt's output tokens
//              (or accelerator-ms; see ShareSplit) by the largest-remainder
//              method, ties to the earlier attempt, so the shares sum to
//              exactly the pool.
// Rounding favours the owner where the owner is paid (ceil) and the platform
// where it keeps the rest (the pool is floored); the client's price is
// rounded up to the next micro, at most one micro per job. A negative
// tariff (dynamic pricing) reimburses nothing: an owner is never charged for
// the energy they were paid to use.
//
// Thread-safety: plain values and pure functions.
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/money.h"
#include "common/result.h"
#include "core/policy.h"
#include "core/time.h"

namespace idlefleet::core {

// --- Limits -----------------------------------------------------------------

// One posting's amount: 2^53 micros (about 9e9 units), as kMoneyMicrosMax.
inline constexpr int64_t kAmountMicrosMax = static_cast<int64_t>(kMoneyMicrosMax);
inline constexpr size_t kLedgerIdBytesMax = 128;  // as protocol's kIdBytesMax
inline constexpr size_t kAccountBytesMax = 16 + kLedgerIdBytesMax;
inline constexpr size_t kTransactionIdBytesMax = 32 + 2 * kLedgerIdBytesMax;
inline constexpr size_t kPostingsPerTransactionMax = 1024;
inline constexpr size_t kSettlementAttemptsMax = 64;
// Far above any real job; what keeps every product below 2^127.
inline constexpr uint64_t kSettlementTokensMax = 1'000'000'000'000;               // 1e12 per job
inline constexpr uint64_t kTokenPriceMicrosPerMillionMax = 1'000'000'000'000;     // 1e6 units per 1M tokens
inline constexpr uint64_t kSharePpmMax = 1'000'000;                               // the whole price
inline constexpr uint64_t kWearMicrosPerHourMax = 1'000'000'000;                  // 1000 units per hour
inline constexpr uint64_t kAttemptEnergyMilliwattHoursMax = 1'000'000'000;        // 1 MWh
inline constexpr uint64_t kAttemptAcceleratorMsMax = static_cast<uint64_t>(31 * kDayMs);
// The longest span tariff_for_span() prices (a month of segments at most).
inline constexpr DurationMs kTariffSpanMsMax = 31 * kDayMs;
inline constexpr int kLedgerYearMin = 1970;
inline constexpr int kLedgerYearMax = 9999;

// --- Accounts ---------------------------------------------------------------

inline constexpr std::string_view kClientAccountPrefix = "client:";
inline constexpr std::string_view kOwnerAccountPrefix = "owner:";
inline constexpr std::string_view kPlatformRevenueAccount = "platform:revenue";
inline constexpr std::string_view kPlatformEnergyAccount = "platform:energy";
inline constexpr std::string_view kPlatformWearAccount = "platform:wear";
inline constexpr std::string_view kExternalDepositsAccount = "external:deposits";
inline constexpr std::string_view kExternalPayoutsAccount = "external:payouts";
// The client id used when API keys are off.
inline constexpr std::string_view kAnonymousClientId = "anonymous";

enum class AccountType : int {
  kClient = 0,
  kOwner,
  kPlatformRevenue,
  kPlatformEnergy,
  kPlatformWear,
  kExternalDeposits,
  kExternalPayouts,
};

// A parsed account name; `id` is the client's or owner's id, empty otherwise.
struct Account {
  AccountType type = AccountType::kClient;
  std::string id;
  bool operator==(const Account&) const = default;
};

// The ledger's id for a vehicle's receipt of one attempt of a job (what the
// coordinator puts on owner postings): "rcpt.<job>.<attempt>".
std::string receipt_id(std::string_view job_id, uint32_t attempt);

// True if `id` is 1..kLedgerIdBytesMax bytes of [A-Za-z0-9_.-], first alnum.
bool valid_ledger_id(std::string_view id);

// "client:<id>" / "owner:<id>"; kInvalidArgument naming the bad id.
Result<std::string> client_account(std::string_view client_id);
Result<std::string> owner_account(std::string_view owner_id);

// The account a name denotes; kInvalidArgument if it is none of the above.
Result<Account> parse_account(std::string_view name);
inline bool valid_account(std::string_view name) { return parse_account(name).has_value(); }

// --- Postings and transactions ------------------------------------------------

// Posting kinds.
inline constexpr std::string_view kPostingCharge = "charge";
inline constexpr std::string_view kPostingRevenueShare = "revenue_share";
inline constexpr std::string_view kPostingEnergy = "energy";
inline constexpr std::string_view kPostingWear = "wear";
inline constexpr std::string_view kPostingDeposit = "deposit";
inline constexpr std::string_view kPostingPayout = "payout";
inline constexpr std::string_view kPostingRefund = "refund";
bool valid_posting_kind(std::string_view kind);

// Transaction kinds, and the prefix of each kind's id:
//   settlement  settle:<job_id>            (one per job: exactly-once)
//   refund      refund:<job_id>            (at most one per job)
//   deposit     deposit:<reference>        (the caller's reference)
//   payout      payout:<YYYY-MM>:<owner_id> (one per owner and month)
inline constexpr std::string_view kTransactionSettlement = "settlement";
inline constexpr std::string_view kTransactionDeposit = "deposit";
inline constexpr std::string_view kTransactionPayout = "payout";
inline constexpr std::string_view kTransactionRefund = "refund";
bool valid_transaction_kind(std::string_view kind);

// One line of a transaction: `amount_micros` into `account`'s balance
// (negative: out of it). Never zero. Owner postings of a settlement carry the
// receipt of the attempt they pay for; other postings may leave it empty.
struct Posting {
  std::string account;
  int64_t amount_micros = 0;
  std::string kind;
  std::string receipt_id;
  bool operator==(const Posting&) const = default;
};

struct Transaction {
  std::string id;
  std::string kind;    // settlement, deposit, payout or refund
  std::string job_id;  // settlements and refunds; empty for deposits and payouts
  TimeMs created_at_ms = 0;
  std::vector<Posting> postings;
  bool operator==(const Transaction&) const = default;
};

// Everything a stored transaction must satisfy: a known kind with its id form
// (settle:<job_id>, ...); 1..kPostingsPerTransactionMax postings, each with
// a valid account, a non-zero amount within kAmountMicrosMax, a kind that
// belongs to the transaction's kind and a valid (or empty) receipt id; the
// amounts sum to exactly zero; every owner posting of a settlement has a
// receipt id. kInvalidArgument (kOutOfRange for a bound) naming the first fault.
Status validate(const Transaction& txn);

// --- Tariffs --------------------------------------------------------------------
// An owner's home tariff is core::Tariff (policy.h): flat, or time-of-use with
// up to kTariffEntriesPerDayMax (48) prices a day, separately for weekdays and
// weekends, in the owner's local time.

// A time-of-use tariff from half-hourly prices: prices[i] from local minute
// 30 * i until the next one (the last until midnight), every day of the week.
// REQUIRES: 1 <= prices.size() <= 48.
Tariff half_hourly_tariff(std::span<const int64_t> prices_micros_per_kwh);

// The price in force at instant `t` for an owner `utc_offset_minutes` from UTC.
// REQUIRES: tariff.validate() succeeded; the offset within kUtcOffsetMinutes*.
int64_t price_at(const Tariff& tariff, TimeMs t, int utc_offset_minutes);

// What an attempt over [start_ms, end_ms) costs at `tariff`, assuming an even
// draw over the span: the span is cut where the price may change (each entry's
// start minute and each local midnight: every half hour for a half-hourly
// tariff) and each piece weighed by its length.
//   micros_per_kwh = ceil(sum(piece_ms * price) / span_ms)   (time-weighted mean,
//                    rounded up: the owner's favour; for start == end, the price
//                    at start). This is what SettlementAttempt takes.
//   cost_micros    = max(0, ceil(energy_mWh * sum(piece_ms * price) / (span_ms * 1e6)))
//                    (one rounding; never more than the mean's rounding gives).
// kInvalidArgument for an invalid tariff or offset, end < start or start < 0;
// kOutOfRange for a span over kTariffSpanMsMax or energy over its limit.
struct SpanPrice {
  int64_t micros_per_kwh = 0;
  int64_t cost_micros = 0;
};
Result<SpanPrice> tariff_for_span(const Tariff& tariff, TimeMs start_ms, TimeMs end_ms, int utc_offset_minutes,
                                  uint64_t energy_mwh);

// --- Settlement ---------------------------------------------------------------------

// One vehicle's part in a job (a job moves between vehicles when one is
// preempted): the receipt it signed and what it metered.
struct SettlementAttempt {
  std::string receipt_id;
  std::string owner_id;
  std::string vehicle_id;
  uint64_t output_tokens = 0;        // tokens this attempt produced
  uint64_t energy_mwh = 0;           // milliwatt-hours metered
  uint64_t accelerator_ms = 0;       // accelerator busy time
  int64_t tariff_micros_per_kwh = 0; // the owner's price for this attempt (tariff_for_span)
};

// How the revenue-share pool is divided between attempts.
enum class ShareSplit : int {
  // By output tokens; if no attempt produced any, by accelerator-ms.
  kOutputTokens = 0,
  // By accelerator-ms (embedding jobs, whose work is all prefill).
  kAcceleratorMs,
};

struct SettlementInput {
  std::string job_id;
  std::string client_account;  // "client:<id>"
  std::string model_id;
  uint64_t prompt_tokens = 0;
  uint64_t completion_tokens = 0;
  uint64_t input_price_micros_per_million_tokens = 0;
  uint64_t output_price_micros_per_million_tokens = 0;
  uint64_t owner_share_ppm = 0;  // of the price, to owners; 0..kSharePpmMax
  uint64_t wear_micros_per_accelerator_hour = 0;
  ShareSplit split_by = ShareSplit::kOutputTokens;
  std::vector<SettlementAttempt> attempts;  // 1..kSettlementAttemptsMax, in the order they ran
  TimeMs settled_at_ms = 0;
};

// The settlement transaction of a finished job, id settle:<job_id>, postings
// in this order: the client's charge and platform:revenue's side of it; then
// per attempt, in order, revenue share, energy and wear, each as the platform
// account's posting then the owner's (both with the attempt's receipt id).
// Nothing is merged and zero amounts are left out. kInvalidArgument for a
// malformed input (ids, no attempts, every amount zero), kOutOfRange for a
// value over its limit or a price over kAmountMicrosMax.
Result<Transaction> settle_job(const SettlementInput& input);

// The pieces of the arithmetic, for callers that show a quote.
// price: kOutOfRange above kAmountMicrosMax or for inputs over their limits.
Result<int64_t> job_price_micros(uint64_t prompt_tokens, uint64_t completion_tokens,
                                 uint64_t input_price_micros_per_million_tokens,
                                 uint64_t output_price_micros_per_million_tokens);
// `pool` split by `weights` (largest remainder, ties to the lower index);
// the parts sum to `pool` and a zero weight gets zero. All weights zero: all
// parts zero. REQUIRES: pool >= 0, each weight <= 2^63.
std::vector<int64_t> split_largest_remainder(int64_t pool, std::span<const uint64_t> weights);

// --- Deposits, refunds, payouts ---------------------------------------------------------

// deposit:<reference>: external:deposits -amount, client +amount.
// REQUIRES nothing: kInvalidArgument for a bad reference or account, kOutOfRange
// for an amount outside 1..kAmountMicrosMax.
Result<Transaction> build_deposit(std::string_view reference, std::string_view client_account, int64_t amount_micros,
                                  TimeMs at_ms);

// refund:<job_id>: the reverse of a settlement's charge to its client (client
// +price, platform:revenue -price). Owners keep what they were paid: the
// platform bears a refund. kInvalidArgument if `settlement` is not a valid
// settlement or charged nothing.
Result<Transaction> build_refund(const Transaction& settlement, TimeMs at_ms);

// payout:<YYYY-MM>:<owner_id>: owner -amount, external:payouts +amount.
Result<Transaction> build_payout(std::string_view period, std::string_view owner_id, int64_t amount_micros,
                                 TimeMs at_ms);

// --- Months and dates -----------------------------------------------------------------------

// A calendar month, UTC: statements and payout periods.
struct Month {
  int year = kLedgerYearMin;
  int month = 1;  // 1..12
  bool operator==(const Month&) const = default;
};
// "2026-01" -> {2026, 1}; kInvalidArgument otherwise (years kLedgerYearMin..Max).
Result<Month> parse_month(std::string_view text);
Status validate_month(Month m);
std::string month_text(Month m);  // "2026-01"
Month next_month(Month m);
// The first instant of the month, UTC. REQUIRES: validate_month(m).
TimeMs month_start_ms(Month m);
// "2026-01-15T10:04:05Z" (UTC, whole seconds, floor). REQUIRES: t >= 0.
std::string iso8601_utc(TimeMs t);

// --- Statements -------------------------------------------------------------------------------

// A posting with its transaction's context, as statements list them.
struct LedgerEntry {
  std::string transaction_id;
  std::string transaction_kind;
  std::string job_id;
  TimeMs created_at_ms = 0;
  uint32_t seq = 0;  // the posting's place in its transaction
  Posting posting;
  bool operator==(const LedgerEntry&) const = default;
};

// One owner's month: every posting to owner:<id> created in it, in time
// order, with totals.
struct Statement {
  std::string owner_id;
  Month month;
  int64_t opening_balance_micros = 0;  // before the month
  std::vector<LedgerEntry> entries;
  std::map<std::string, int64_t> totals_micros_by_kind;  // kinds that occur
  uint64_t receipts = 0;  // distinct receipt ids
  uint64_t jobs = 0;      // distinct job ids
  int64_t net_micros = 0;
  int64_t closing_balance_micros = 0;  // opening + net
};

// Aggregates `entries` (any order: sorted here by time, transaction, seq).
// kInvalidArgument if an entry is not the owner's or falls outside the month;
// kOutOfRange if a total leaves the int64 range.
Result<Statement> build_statement(std::string_view owner_id, Month month, int64_t opening_balance_micros,
                                  std::vector<LedgerEntry> entries);

}  // namespace idlefleet::core
