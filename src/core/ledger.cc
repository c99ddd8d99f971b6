#include "core/ledger.h"

#include <algorithm>
#include <cstdio>
#include <limits>
#include <numeric>
#include <set>
#include <tuple>
#include <utility>

#include "common/check.h"

namespace idlefleet::core {

namespace {

using i128 = __int128;
using u128 = unsigned __int128;

constexpr int64_t kMillionth = 1'000'000;       // ppm, micros per unit, tokens per million

// ceil(a / b) for b > 0, any sign of a.
i128 ceil_div(i128 a, i128 b) {
  DCHECK(b > 0);
  i128 q = a / b;
  if (a % b != 0 && a > 0) ++q;
  return q;
}

int64_t floor_mod(int64_t a, int64_t b) {
  const int64_t m = a % b;
  return m < 0 ? m + b : m;
}

Unexpected invalid(std::string message) { return Unexpected(ErrorCode::kInvalidArgument, std::move(message)); }
Unexpected out_of_range(std::string message) { return Unexpected(ErrorCode::kOutOfRange, std::move(message)); }

// For messages: an id as given, cut short and with anything odd replaced, so
// a hostile or damaged value cannot forge lines in a log.
std::string shown(std::string_view text) {
  std::string out;
  for (char c : text.substr(0, 64)) {
    const auto u = static_cast<unsigned char>(c);
    out.push_back(u >= 0x20 && u < 0x7f ? c : '?');
  }
  if (text.size() > 64) out += "...";
  return "'" + out + "'";
}

bool alnum(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'); }

// A deposit's reference: like an id, with ':' allowed too, at most what fits
// in a transaction id after "deposit:".
bool valid_reference(std::string_view ref) {
  if (ref.empty() || ref.size() > kTransactionIdBytesMax - 8 || !alnum(ref.front())) return false;
  for (char c : ref) {
    if (!(alnum(c) || c == '_' || c == '.' || c == '-' || c == ':')) return false;
  }
  return true;
}

bool starts_with(std::string_view s, std::string_view prefix) { return s.substr(0, prefix.size()) == prefix; }

// Which posting kinds a transaction kind may hold.
bool posting_kind_allowed(std::string_view txn_kind, std::string_view posting_kind) {
  if (txn_kind == kTransactionSettlement) {
    return posting_kind == kPostingCharge || posting_kind == kPostingRevenueShare || posting_kind == kPostingEnergy ||
           posting_kind == kPostingWear;
  }
  if (txn_kind == kTransactionDeposit) return posting_kind == kPostingDeposit;
  if (txn_kind == kTransactionPayout) return posting_kind == kPostingPayout;
  if (txn_kind == kTransactionRefund) return posting_kind == kPostingRefund;
  return false;
}

std::string two_digits(int64_t v) { return (v < 10 ? "0" : "") + std::to_string(v); }

// The instant after `t` at which the tariff's price may next change: the
// next entry start of the local day, or local midnight (weekday/weekend).
TimeMs next_price_change(const Tariff& tariff, TimeMs t, int utc_offset_minutes) {
  if (tariff.kind == Tariff::Kind::kFlat) return std::numeric_limits<TimeMs>::max();
  const int64_t local_ms_of_day = floor_mod(t + int64_t{utc_offset_minutes} * kMinuteMs, kDayMs);
  const LocalTime local = to_local(t, utc_offset_minutes);
  const std::vector<TariffEntry>& entries = local.weekend() ? tariff.weekend : tariff.weekday;
  int next_minute = kMinutesPerDay;
  for (const TariffEntry& e : entries) {
    if (e.start_minute_of_day > local.minute_of_day) {
      next_minute = e.start_minute_of_day;
      break;
    }
  }
  const TimeMs next = t - local_ms_of_day + int64_t{next_minute} * kMinuteMs;
  DCHECK(next > t);
  return next;
}

}  // namespace

// --- Accounts -------------------------------------------------------------------

std::string receipt_id(std::string_view job_id, uint32_t attempt) {
  return std::string("rcpt.").append(job_id).append(".").append(std::to_string(attempt));
}

bool valid_ledger_id(std::string_view id) {
  if (id.empty() || id.size() > kLedgerIdBytesMax || !alnum(id.front())) return false;
  for (char c : id) {
    if (!(alnum(c) || c == '_' || c == '.' || c == '-')) return false;
  }
  return true;
}

Result<std::string> client_account(std::string_view client_id) {
  if (!valid_ledger_id(client_id)) {
    return invalid("client id " + shown(client_id) + " is not 1-128 characters of letters, digits, '_', '.', '-'");
  }
  return std::string(kClientAccountPrefix) + std::string(client_id);
}

Result<std::string> owner_account(std::string_view owner_id) {
  if (!valid_ledger_id(owner_id)) {
    return invalid("owner id " + shown(owner_id) + " is not 1-128 characters of letters, digits, '_', '.', '-'");
  }
  return std::string(kOwnerAccountPrefix) + std::string(owner_id);
}

Result<Account> parse_account(std::string_view name) {
  if (starts_with(name, kClientAccountPrefix)) {
    const std::string_view id = name.substr(kClientAccountPrefix.size());
    if (valid_ledger_id(id)) return Account{AccountType::kClient, std::string(id)};
  } else if (starts_with(name, kOwnerAccountPrefix)) {
    const std::string_view id = name.substr(kOwnerAccountPrefix.size());
    if (valid_ledger_id(id)) return Account{AccountType::kOwner, std::string(id)};
  } else if (name == kPlatformRevenueAccount) {
    return Account{AccountType::kPlatformRevenue, {}};
  } else if (name == kPlatformEnergyAccount) {
    return Account{AccountType::kPlatformEnergy, {}};
  } else if (name == kPlatformWearAccount) {
    return Account{AccountType::kPlatformWear, {}};
  } else if (name == kExternalDepositsAccount) {
    return Account{AccountType::kExternalDeposits, {}};
  } else if (name == kExternalPayoutsAccount) {
    return Account{AccountType::kExternalPayouts, {}};
  }
  return invalid("account " + shown(name) +
                 " is none of client:<id>, owner:<id>, platform:revenue|energy|wear, external:deposits|payouts");
}

bool valid_posting_kind(std::string_view kind) {
  return kind == kPostingCharge || kind == kPostingRevenueShare || kind == kPostingEnergy || kind == kPostingWear ||
         kind == kPostingDeposit || kind == kPostingPayout || kind == kPostingRefund;
}

bool valid_transaction_kind(std::string_view kind) {
  return kind == kTransactionSettlement || kind == kTransactionDeposit || kind == kTransactionPayout ||
         kind == kTransactionRefund;
}

// --- Transactions -----------------------------------------------------------------

Status validate(const Transaction& txn) {
  if (txn.id.empty() || txn.id.size() > kTransactionIdBytesMax) {
    return invalid("a transaction id must be 1 to " + std::to_string(kTransactionIdBytesMax) + " bytes");
  }
  const std::string name = "transaction " + shown(txn.id);
  if (!valid_transaction_kind(txn.kind)) {
    return invalid(name + ": kind " + shown(txn.kind) + " is none of settlement, deposit, payout, refund");
  }
  if (txn.created_at_ms < 0) return invalid(name + ": created_at " + std::to_string(txn.created_at_ms) + " is negative");

  std::string payout_owner;
  if (txn.kind == kTransactionSettlement || txn.kind == kTransactionRefund) {
    if (!valid_ledger_id(txn.job_id)) return invalid(name + ": job id " + shown(txn.job_id) + " is not a valid id");
    const std::string want = (txn.kind == kTransactionSettlement ? "settle:" : "refund:") + txn.job_id;
    if (txn.id != want) return invalid(name + ": a " + txn.kind + "'s id must be " + shown(want));
  } else {
    if (!txn.job_id.empty()) return invalid(name + ": a " + txn.kind + " names no job, this one " + shown(txn.job_id));
    if (txn.kind == kTransactionDeposit) {
      if (!starts_with(txn.id, "deposit:") || !valid_reference(std::string_view(txn.id).substr(8))) {
        return invalid(name + ": a deposit's id must be deposit:<reference>");
      }
    } else {
      // payout:<YYYY-MM>:<owner_id>
      const std::string_view rest = std::string_view(txn.id).substr(std::min<size_t>(txn.id.size(), 7));
      if (!starts_with(txn.id, "payout:") || rest.size() < 9 || rest[7] != ':' || !parse_month(rest.substr(0, 7)) ||
          !valid_ledger_id(rest.substr(8))) {
        return invalid(name + ": a payout's id must be payout:<YYYY-MM>:<owner_id>");
      }
      payout_owner = std::string(kOwnerAccountPrefix) + std::string(rest.substr(8));
    }
  }

  if (txn.postings.empty()) return invalid(name + ": has no postings");
  if (txn.postings.size() > kPostingsPerTransactionMax) {
    return out_of_range(name + ": has " + std::to_string(txn.postings.size()) + " postings, over " +
                        std::to_string(kPostingsPerTransactionMax));
  }
  i128 sum = 0;
  for (size_t i = 0; i < txn.postings.size(); ++i) {
    const Posting& p = txn.postings[i];
    const std::string where = name + " posting " + std::to_string(i);
    auto account = parse_account(p.account);
    if (!account) return invalid(where + ": " + account.error().message);
    if (p.amount_micros == 0) return invalid(where + ": amount is zero");
    if (p.amount_micros > kAmountMicrosMax || p.amount_micros < -kAmountMicrosMax) {
      return out_of_range(where + ": amount " + std::to_string(p.amount_micros) + " is beyond +-" +
                          std::to_string(kAmountMicrosMax) + " micros");
    }
    if (!valid_posting_kind(p.kind)) return invalid(where + ": kind " + shown(p.kind) + " is not a posting kind");
    if (!posting_kind_allowed(txn.kind, p.kind)) {
      return invalid(where + ": a " + txn.kind + " holds no " + p.kind + " posting");
    }
    if (!p.receipt_id.empty() && !valid_ledger_id(p.receipt_id)) {
      return invalid(where + ": receipt id " + shown(p.receipt_id) + " is not a valid id");
    }
    if (txn.kind == kTransactionSettlement && account->type == AccountType::kOwner && p.receipt_id.empty()) {
      return invalid(where + ": pays owner " + shown(account->id) + " without a receipt");
    }
    if (!payout_owner.empty() && account->type == AccountType::kOwner && p.account != payout_owner) {
      return invalid(where + ": a payout to " + shown(payout_owner) + " moves money of " + shown(p.account));
    }
    sum += p.amount_micros;
  }
  if (sum != 0) {
    return invalid(name + ": postings sum to " + std::to_string(static_cast<int64_t>(sum)) + " micros, not zero");
  }
  return {};
}

// --- Tariffs ------------------------------------------------------------------------

Tariff half_hourly_tariff(std::span<const int64_t> prices_micros_per_kwh) {
  CHECK(!prices_micros_per_kwh.empty() && prices_micros_per_kwh.size() <= kTariffEntriesPerDayMax);
  std::vector<TariffEntry> day;
  day.reserve(prices_micros_per_kwh.size());
  for (size_t i = 0; i < prices_micros_per_kwh.size(); ++i) {
    day.push_back({static_cast<int>(30 * i), prices_micros_per_kwh[i]});
  }
  return Tariff::time_of_use(day, day);
}

int64_t price_at(const Tariff& tariff, TimeMs t, int utc_offset_minutes) {
  return price_at(tariff, to_local(t, utc_offset_minutes));
}

Result<SpanPrice> tariff_for_span(const Tariff& tariff, TimeMs start_ms, TimeMs end_ms, int utc_offset_minutes,
                                  uint64_t energy_mwh) {
  IF_RETURN_IF_ERROR(tariff.validate());
  if (utc_offset_minutes < kUtcOffsetMinutesMin || utc_offset_minutes > kUtcOffsetMinutesMax) {
    return invalid("UTC offset " + std::to_string(utc_offset_minutes) + " min is outside -12:00..+14:00");
  }
  if (start_ms < 0 || end_ms < start_ms) {
    return invalid("span [" + std::to_string(start_ms) + ", " + std::to_string(end_ms) + ") is not a span of time");
  }
  if (end_ms - start_ms > kTariffSpanMsMax) {
    return out_of_range("span of " + std::to_string(end_ms - start_ms) + " ms is over " +
                        std::to_string(kTariffSpanMsMax));
  }
  if (energy_mwh > kAttemptEnergyMilliwattHoursMax) {
    return out_of_range("energy " + std::to_string(energy_mwh) + " mWh is over " +
                        std::to_string(kAttemptEnergyMilliwattHoursMax));
  }
  SpanPrice out;
  if (start_ms == end_ms) {
    out.micros_per_kwh = price_at(tariff, start_ms, utc_offset_minutes);
    out.cost_micros = static_cast<int64_t>(
        std::max<i128>(0, ceil_div(static_cast<i128>(energy_mwh) * out.micros_per_kwh, kMillionth)));
    return out;
  }
  // sum(piece_ms * price): at most 31 days of ms times 1e9, far below 2^127.
  i128 weighted = 0;
  for (TimeMs t = start_ms; t < end_ms;) {
    const TimeMs piece_end = std::min(end_ms, next_price_change(tariff, t, utc_offset_minutes));
    weighted += static_cast<i128>(piece_end - t) * price_at(tariff, t, utc_offset_minutes);
    t = piece_end;
  }
  const i128 span = end_ms - start_ms;
  out.micros_per_kwh = static_cast<int64_t>(ceil_div(weighted, span));
  out.cost_micros =
      static_cast<int64_t>(std::max<i128>(0, ceil_div(static_cast<i128>(energy_mwh) * weighted, span * kMillionth)));
  return out;
}

// --- Settlement -------------------------------------------------------------------

Result<int64_t> job_price_micros(uint64_t prompt_tokens, uint64_t completion_tokens,
                                 uint64_t input_price_micros_per_million_tokens,
                                 uint64_t output_price_micros_per_million_tokens) {
  if (prompt_tokens > kSettlementTokensMax || completion_tokens > kSettlementTokensMax) {
    return out_of_range("token counts " + std::to_string(prompt_tokens) + " + " + std::to_string(completion_tokens) +
                        " exceed " + std::to_string(kSettlementTokensMax) + " per job");
  }
  if (input_price_micros_per_million_tokens > kTokenPriceMicrosPerMillionMax ||
      output_price_micros_per_million_tokens > kTokenPriceMicrosPerMillionMax) {
    return out_of_range("a token price is over " + std::to_string(kTokenPriceMicrosPerMillionMax) +
                        " micros per million tokens");
  }
  // Each product below 1e24 and their sum below 2^81: exact in 128 bits.
  const i128 numerator = static_cast<i128>(prompt_tokens) * input_price_micros_per_million_tokens +
                         static_cast<i128>(completion_tokens) * output_price_micros_per_million_tokens;
  const i128 price = ceil_div(numerator, kMillionth);
  if (price > kAmountMicrosMax) {
    return out_of_range("the job's price exceeds " + std::to_string(kAmountMicrosMax) + " micros");
  }
  return static_cast<int64_t>(price);
}

std::vector<int64_t> split_largest_remainder(int64_t pool, std::span<const uint64_t> weights) {
  CHECK(pool >= 0);
  std::vector<int64_t> parts(weights.size(), 0);
  u128 total = 0;
  for (uint64_t w : weights) total += w;
  if (total == 0) return parts;
  std::vector<u128> remainders(weights.size(), 0);
  u128 given = 0;
  for (size_t i = 0; i < weights.size(); ++i) {
    const u128 product = static_cast<u128>(pool) * weights[i];  // < 2^127
    parts[i] = static_cast<int64_t>(product / total);
    remainders[i] = product % total;
    given += static_cast<u128>(parts[i]);
  }
  // Fewer than weights.size() micros are left, and at least that many
  // remainders are non-zero (they sum to leftover * total), so no zero
  // weight is ever topped up.
  const auto leftover = static_cast<size_t>(static_cast<u128>(pool) - given);
  CHECK(leftover < weights.size() || leftover == 0);
  std::vector<size_t> order(weights.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return remainders[a] > remainders[b]; });
  for (size_t k = 0; k < leftover; ++k) {
    CHECK(weights[order[k]] != 0);
    ++parts[order[k]];
  }
  int64_t sum = 0;
  for (int64_t p : parts) sum += p;
  CHECK(sum == pool);
  return parts;
}

Result<Transaction> settle_job(const SettlementInput& in) {
  if (!valid_ledger_id(in.job_id)) return invalid("job id " + shown(in.job_id) + " is not a valid id");
  const std::string name = "settling job " + shown(in.job_id);
  auto client = parse_account(in.client_account);
  if (!client || client->type != AccountType::kClient) {
    return invalid(name + ": " + shown(in.client_account) + " is not a client account (client:<id>)");
  }
  if (!valid_ledger_id(in.model_id)) return invalid(name + ": model id " + shown(in.model_id) + " is not a valid id");
  if (in.owner_share_ppm > kSharePpmMax) {
    return out_of_range(name + ": owner share " + std::to_string(in.owner_share_ppm) + " ppm is over 1000000");
  }
  if (in.wear_micros_per_accelerator_hour > kWearMicrosPerHourMax) {
    return out_of_range(name + ": wear allowance " + std::to_string(in.wear_micros_per_accelerator_hour) +
                        " micros per hour is over " + std::to_string(kWearMicrosPerHourMax));
  }
  if (in.split_by != ShareSplit::kOutputTokens && in.split_by != ShareSplit::kAcceleratorMs) {
    return invalid(name + ": split_by " + std::to_string(static_cast<int>(in.split_by)) + " is not a split");
  }
  if (in.settled_at_ms < 0) return invalid(name + ": settled_at " + std::to_string(in.settled_at_ms) + " is negative");
  if (in.attempts.empty()) return invalid(name + ": no attempt did the work");
  if (in.attempts.size() > kSettlementAttemptsMax) {
    return out_of_range(name + ": " + std::to_string(in.attempts.size()) + " attempts, over " +
                        std::to_string(kSettlementAttemptsMax));
  }
  std::set<std::string_view> receipts;
  for (size_t i = 0; i < in.attempts.size(); ++i) {
    const SettlementAttempt& a = in.attempts[i];
    const std::string where = name + ": attempt " + std::to_string(i);
    if (!valid_ledger_id(a.receipt_id)) return invalid(where + ": receipt id " + shown(a.receipt_id) + " is not valid");
    if (!receipts.insert(a.receipt_id).second) return invalid(where + ": receipt " + shown(a.receipt_id) + " repeats");
    if (!valid_ledger_id(a.owner_id)) return invalid(where + ": owner id " + shown(a.owner_id) + " is not valid");
    if (!valid_ledger_id(a.vehicle_id)) return invalid(where + ": vehicle id " + shown(a.vehicle_id) + " is not valid");
    if (a.output_tokens > kSettlementTokensMax) {
      return out_of_range(where + ": " + std::to_string(a.output_tokens) + " output tokens, over " +
                          std::to_string(kSettlementTokensMax));
    }
    if (a.energy_mwh > kAttemptEnergyMilliwattHoursMax) {
      return out_of_range(where + ": energy " + std::to_string(a.energy_mwh) + " mWh is over " +
                          std::to_string(kAttemptEnergyMilliwattHoursMax));
    }
    if (a.accelerator_ms > kAttemptAcceleratorMsMax) {
      return out_of_range(where + ": accelerator time " + std::to_string(a.accelerator_ms) + " ms is over " +
                          std::to_string(kAttemptAcceleratorMsMax));
    }
    if (a.tariff_micros_per_kwh > kPriceMicrosPerKwhAbsMax || a.tariff_micros_per_kwh < -kPriceMicrosPerKwhAbsMax) {
      return out_of_range(where + ": tariff " + std::to_string(a.tariff_micros_per_kwh) + " micros per kWh is beyond +-" +
                          std::to_string(kPriceMicrosPerKwhAbsMax));
    }
  }
  auto price = job_price_micros(in.prompt_tokens, in.completion_tokens, in.input_price_micros_per_million_tokens,
                                in.output_price_micros_per_million_tokens);
  if (!price) return Unexpected(ErrorCode::kOutOfRange, name + ": " + price.error().message);

  // price <= 2^53 and ppm <= 1e6: below 2^73.
  const auto pool = static_cast<int64_t>(static_cast<i128>(*price) * in.owner_share_ppm / kMillionth);
  std::vector<uint64_t> weights(in.attempts.size());
  auto by_accelerator = [&] {
    for (size_t i = 0; i < in.attempts.size(); ++i) weights[i] = in.attempts[i].accelerator_ms;
  };
  if (in.split_by == ShareSplit::kAcceleratorMs) {
    by_accelerator();
  } else {
    uint64_t tokens = 0;
    for (size_t i = 0; i < in.attempts.size(); ++i) {
      weights[i] = in.attempts[i].output_tokens;
      tokens += weights[i];  // at most 64 * 1e12
    }
    if (tokens == 0) by_accelerator();
  }
  // No attempt did measurable work: the pool stays with the platform.
  const std::vector<int64_t> shares = split_largest_remainder(pool, weights);

  Transaction txn;
  txn.id = "settle:" + in.job_id;
  txn.kind = std::string(kTransactionSettlement);
  txn.job_id = in.job_id;
  txn.created_at_ms = in.settled_at_ms;
  auto pair = [&](std::string_view platform, const std::string& owner, int64_t amount, std::string_view kind,
                  const std::string& receipt) {
    if (amount == 0) return;
    txn.postings.push_back({std::string(platform), -amount, std::string(kind), receipt});
    txn.postings.push_back({owner, amount, std::string(kind), receipt});
  };
  if (*price != 0) {
    txn.postings.push_back({in.client_account, -*price, std::string(kPostingCharge), ""});
    txn.postings.push_back({std::string(kPlatformRevenueAccount), *price, std::string(kPostingCharge), ""});
  }
  for (size_t i = 0; i < in.attempts.size(); ++i) {
    const SettlementAttempt& a = in.attempts[i];
    const std::string owner = std::string(kOwnerAccountPrefix) + a.owner_id;
    // energy <= 1e9 mWh and tariff <= 1e9 micros/kWh: at most 1e12 micros.
    const int64_t energy = static_cast<int64_t>(
        ceil_div(static_cast<i128>(a.energy_mwh) * std::max<int64_t>(a.tariff_micros_per_kwh, 0), kMillionth));
    // 31 days of ms times 1e9 micros per hour: at most 7.44e11 micros.
    const int64_t wear = static_cast<int64_t>(
        ceil_div(static_cast<i128>(a.accelerator_ms) * in.wear_micros_per_accelerator_hour, kHourMs));
    pair(kPlatformRevenueAccount, owner, shares[i], kPostingRevenueShare, a.receipt_id);
    pair(kPlatformEnergyAccount, owner, energy, kPostingEnergy, a.receipt_id);
    pair(kPlatformWearAccount, owner, wear, kPostingWear, a.receipt_id);
  }
  if (txn.postings.empty()) return invalid(name + ": every amount is zero, nothing to settle");
  // What we built must be what the store accepts: a breach here is our bug
  // and would post unbalanced money, so it stops the process.
  const Status ok = validate(txn);
  if (!ok) std::fprintf(stderr, "settle_job built an invalid transaction: %s\n", ok.error().message.c_str());
  CHECK(ok.has_value());
  return txn;
}

// --- Deposits, refunds, payouts -------------------------------------------------------

Result<Transaction> build_deposit(std::string_view reference, std::string_view client_account_name,
                                  int64_t amount_micros, TimeMs at_ms) {
  if (!valid_reference(reference)) {
    return invalid("deposit reference " + shown(reference) + " is not 1-" +
                   std::to_string(kTransactionIdBytesMax - 8) + " characters of letters, digits, '_', '.', '-', ':'");
  }
  auto client = parse_account(client_account_name);
  if (!client || client->type != AccountType::kClient) {
    return invalid(shown(client_account_name) + " is not a client account (client:<id>)");
  }
  if (amount_micros <= 0 || amount_micros > kAmountMicrosMax) {
    return out_of_range("a deposit is 1 to " + std::to_string(kAmountMicrosMax) + " micros, not " +
                        std::to_string(amount_micros));
  }
  if (at_ms < 0) return invalid("a deposit's time " + std::to_string(at_ms) + " is negative");
  Transaction txn;
  txn.id = "deposit:" + std::string(reference);
  txn.kind = std::string(kTransactionDeposit);
  txn.created_at_ms = at_ms;
  txn.postings = {{std::string(kExternalDepositsAccount), -amount_micros, std::string(kPostingDeposit), ""},
                  {std::string(client_account_name), amount_micros, std::string(kPostingDeposit), ""}};
  return txn;
}

Result<Transaction> build_refund(const Transaction& settlement, TimeMs at_ms) {
  IF_RETURN_IF_ERROR(validate(settlement));
  if (settlement.kind != kTransactionSettlement) {
    return invalid("transaction " + shown(settlement.id) + " is a " + settlement.kind + ", not a settlement");
  }
  if (at_ms < 0) return invalid("a refund's time " + std::to_string(at_ms) + " is negative");
  const Posting* charge = nullptr;
  for (const Posting& p : settlement.postings) {
    if (p.kind == kPostingCharge && p.amount_micros < 0 && starts_with(p.account, kClientAccountPrefix)) {
      if (charge != nullptr) return invalid("settlement " + shown(settlement.id) + " charges more than one client");
      charge = &p;
    }
  }
  if (charge == nullptr) return invalid("settlement " + shown(settlement.id) + " charged nothing: nothing to refund");
  Transaction txn;
  txn.id = "refund:" + settlement.job_id;
  txn.kind = std::string(kTransactionRefund);
  txn.job_id = settlement.job_id;
  txn.created_at_ms = at_ms;
  txn.postings = {{charge->account, -charge->amount_micros, std::string(kPostingRefund), ""},
                  {std::string(kPlatformRevenueAccount), charge->amount_micros, std::string(kPostingRefund), ""}};
  return txn;
}

Result<Transaction> build_payout(std::string_view period, std::string_view owner_id, int64_t amount_micros,
                                 TimeMs at_ms) {
  auto month = parse_month(period);
  if (!month) return Unexpected(month.error());
  auto owner = owner_account(owner_id);
  if (!owner) return Unexpected(owner.error());
  if (amount_micros <= 0 || amount_micros > kAmountMicrosMax) {
    return out_of_range("a payout is 1 to " + std::to_string(kAmountMicrosMax) + " micros, not " +
                        std::to_string(amount_micros));
  }
  if (at_ms < 0) return invalid("a payout's time " + std::to_string(at_ms) + " is negative");
  Transaction txn;
  txn.id = "payout:" + month_text(*month) + ":" + std::string(owner_id);
  txn.kind = std::string(kTransactionPayout);
  txn.created_at_ms = at_ms;
  txn.postings = {{*owner, -amount_micros, std::string(kPostingPayout), ""},
                  {std::string(kExternalPayoutsAccount), amount_micros, std::string(kPostingPayout), ""}};
  return txn;
}

// --- Months and dates ---------------------------------------------------------------

Status validate_month(Month m) {
  if (m.year < kLedgerYearMin || m.year > kLedgerYearMax || m.month < 1 || m.month > 12) {
    return invalid("month " + std::to_string(m.year) + "-" + std::to_string(m.month) + " is not a month of years " +
                   std::to_string(kLedgerYearMin) + " to " + std::to_string(kLedgerYearMax));
  }
  return {};
}

Result<Month> parse_month(std::string_view text) {
  auto bad = [&] { return invalid("month " + shown(text) + " is not YYYY-MM"); };
  if (text.size() != 7 || text[4] != '-') return bad();
  int digits[6];
  for (size_t i = 0, k = 0; i < 7; ++i) {
    if (i == 4) continue;
    if (text[i] < '0' || text[i] > '9') return bad();
    digits[k++] = text[i] - '0';
  }
  const Month m{digits[0] * 1000 + digits[1] * 100 + digits[2] * 10 + digits[3], digits[4] * 10 + digits[5]};
  IF_RETURN_IF_ERROR(validate_month(m));
  return m;
}

std::string month_text(Month m) { return std::to_string(m.year) + "-" + two_digits(m.month); }

Month next_month(Month m) { return m.month == 12 ? Month{m.year + 1, 1} : Month{m.year, m.month + 1}; }

TimeMs month_start_ms(Month m) {
  DCHECK(validate_month(m).has_value() || (m.year == kLedgerYearMax + 1 && m.month == 1));
  return days_from_civil(m.year, m.month, 1) * kDayMs;
}

std::string iso8601_utc(TimeMs t) {
  DCHECK(t >= 0);
  const int64_t days = t / kDayMs;
  const int64_t ms_of_day = t % kDayMs;
  const CivilDate c = civil_from_days(days);
  const int64_t s = ms_of_day / 1000;
  return std::to_string(c.year) + "-" + two_digits(c.month) + "-" + two_digits(c.day) + "T" + two_digits(s / 3600) +
         ":" + two_digits(s / 60 % 60) + ":" + two_digits(s % 60) + "Z";
}

// --- Statements -------------------------------------------------------------------------

Result<Statement> build_statement(std::string_view owner_id, Month month, int64_t opening_balance_micros,
                                  std::vector<LedgerEntry> entries) {
  auto account = owner_account(owner_id);
  if (!account) return Unexpected(account.error());
  IF_RETURN_IF_ERROR(validate_month(month));
  const TimeMs from = month_start_ms(month);
  const TimeMs to = month_start_ms(next_month(month));
  Statement s;
  s.owner_id = std::string(owner_id);
  s.month = month;
  s.opening_balance_micros = opening_balance_micros;
  std::sort(entries.begin(), entries.end(), [](const LedgerEntry& a, const LedgerEntry& b) {
    return std::tie(a.created_at_ms, a.transaction_id, a.seq) < std::tie(b.created_at_ms, b.transaction_id, b.seq);
  });
  std::map<std::string, i128> totals;
  std::set<std::string> receipts;
  std::set<std::string> jobs;
  i128 net = 0;
  for (const LedgerEntry& e : entries) {
    if (e.posting.account != *account) {
      return invalid("statement of " + shown(*account) + ": an entry of " + shown(e.transaction_id) + " is for " +
                     shown(e.posting.account));
    }
    if (e.created_at_ms < from || e.created_at_ms >= to) {
      return invalid("statement for " + month_text(month) + ": entry of " + shown(e.transaction_id) + " at " +
                     std::to_string(e.created_at_ms) + " is outside the month");
    }
    totals[e.posting.kind] += e.posting.amount_micros;
    net += e.posting.amount_micros;
    if (!e.posting.receipt_id.empty()) receipts.insert(e.posting.receipt_id);
    if (!e.job_id.empty()) jobs.insert(e.job_id);
  }
  constexpr i128 kMin = std::numeric_limits<int64_t>::min();
  constexpr i128 kMax = std::numeric_limits<int64_t>::max();
  const i128 closing = net + opening_balance_micros;
  auto outside = [&](i128 v) { return v < kMin || v > kMax; };
  bool overflow = outside(net) || outside(closing);
  for (const auto& [kind, total] : totals) overflow = overflow || outside(total);
  if (overflow) {
    return out_of_range("statement of " + shown(*account) + " for " + month_text(month) + ": totals leave int64");
  }
  for (const auto& [kind, total] : totals) s.totals_micros_by_kind[kind] = static_cast<int64_t>(total);
  s.entries = std::move(entries);
  s.receipts = receipts.size();
  s.jobs = jobs.size();
  s.net_micros = static_cast<int64_t>(net);
  s.closing_balance_micros = static_cast<int64_t>(closing);
  return s;
}

}  // namespace idlefleet::core
