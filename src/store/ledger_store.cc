#include "store/ledger_store.h"

#include <algorithm>
#include <array>
#include <functional>
#include <limits>
#include <map>
#include <set>
#include <utility>

#include <nlohmann/json.hpp>

#include "common/check.h"
#include "common/money.h"
#include "store/pg_db.h"

namespace idlefleet::store {
namespace {

using core::LedgerEntry;
using core::Posting;
using core::Transaction;
using i128 = __int128;

// Migration N (1-based) is kMigrations[N - 1]; shipped entries never change.
constexpr const char* kSqliteMigrations[] = {
    R"sql(
CREATE TABLE transactions (
  id TEXT PRIMARY KEY NOT NULL,
  kind TEXT NOT NULL,
  job_id TEXT NOT NULL,
  created_at INTEGER NOT NULL
) STRICT;
CREATE UNIQUE INDEX one_settlement_per_job ON transactions(job_id) WHERE kind = 'settlement';
CREATE UNIQUE INDEX one_refund_per_job ON transactions(job_id) WHERE kind = 'refund';
CREATE INDEX transactions_by_job ON transactions(job_id, created_at);
CREATE TABLE postings (
  txn_id TEXT NOT NULL REFERENCES transactions(id),
  seq INTEGER NOT NULL,
  account TEXT NOT NULL,
  amount INTEGER NOT NULL,
  kind TEXT NOT NULL,
  receipt_id TEXT NOT NULL,
  PRIMARY KEY (txn_id, seq)
) STRICT;
CREATE INDEX postings_by_account ON postings(account);
CREATE TABLE accounts (
  id TEXT PRIMARY KEY NOT NULL,
  credit_limit_micros INTEGER NOT NULL
) STRICT;
CREATE TABLE payout_batches (
  period TEXT PRIMARY KEY NOT NULL,
  min_amount_micros INTEGER NOT NULL,
  created_at INTEGER NOT NULL,
  payouts INTEGER NOT NULL
) STRICT;
)sql",
};
static_assert(std::size(kSqliteMigrations) == kLedgerSchemaVersion, "one migration per schema version");

// The same schema in PostgreSQL (recorded as store "ledger").
constexpr const char* kPostgresMigrations[] = {
    R"sql(
CREATE TABLE transactions (
  id TEXT COLLATE "C" PRIMARY KEY NOT NULL,
  kind TEXT COLLATE "C" NOT NULL,
  job_id TEXT COLLATE "C" NOT NULL,
  created_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX one_settlement_per_job ON transactions(job_id) WHERE kind = 'settlement';
CREATE UNIQUE INDEX one_refund_per_job ON transactions(job_id) WHERE kind = 'refund';
CREATE INDEX transactions_by_job ON transactions(job_id, created_at);
CREATE TABLE postings (
  txn_id TEXT COLLATE "C" NOT NULL REFERENCES transactions(id),
  seq BIGINT NOT NULL,
  account TEXT COLLATE "C" NOT NULL,
  amount BIGINT NOT NULL,
  kind TEXT COLLATE "C" NOT NULL,
  receipt_id TEXT COLLATE "C" NOT NULL,
  PRIMARY KEY (txn_id, seq)
);
CREATE INDEX postings_by_account ON postings(account);
CREATE TABLE accounts (
  id TEXT COLLATE "C" PRIMARY KEY NOT NULL,
  credit_limit_micros BIGINT NOT NULL
);
CREATE TABLE payout_batches (
  period TEXT COLLATE "C" PRIMARY KEY NOT NULL,
  min_amount_micros BIGINT NOT NULL,
  created_at BIGINT NOT NULL,
  payouts BIGINT NOT NULL
);
)sql",
};
static_assert(std::size(kPostgresMigrations) == kLedgerSchemaVersion, "one migration per schema version");

// A transaction with its postings, one row per posting (a transaction with
// none has one row of NULLs after its own columns): t.* then p.*.
constexpr const char* kEntryColumns =
    "t.id, t.kind, t.job_id, t.created_at, p.seq, p.account, p.amount, p.kind, p.receipt_id";
constexpr const char* kEntryJoin = " FROM transactions t LEFT JOIN postings p ON p.txn_id = t.id ";

// Aggregates of amounts, in both dialects: COUNT, SUM, MIN, MAX, count of zeros.
constexpr const char* kSumColumns =
    "COUNT(*), CAST(COALESCE(SUM(p.amount), 0) AS BIGINT), COALESCE(MIN(p.amount), 0), "
    "COALESCE(MAX(p.amount), 0), COALESCE(SUM(CASE WHEN p.amount = 0 THEN 1 ELSE 0 END), 0)";

// For messages: a stored value cut short, anything odd replaced.
std::string shown(std::string_view text) {
  std::string out;
  for (char c : text.substr(0, 64)) {
    const auto u = static_cast<unsigned char>(c);
    out.push_back(u >= 0x20 && u < 0x7f ? c : '?');
  }
  if (text.size() > 64) out += "...";
  return "'" + out + "'";
}

// Reads a text column of at most `max` bytes; false if it is not one.
bool column_text(const SqlRow& r, size_t col, size_t max, std::string& out) {
  if (col >= r.size() || r[col].type != SqlValue::Type::kText || r[col].bytes.size() > max) return false;
  out = r[col].bytes;
  return true;
}

bool column_int(const SqlRow& r, size_t col, int64_t& out) {
  if (col >= r.size() || r[col].type != SqlValue::Type::kInt) return false;
  out = r[col].integer;
  return true;
}

// Columns id, kind, job_id, created_at from `first` on. A transaction's own
// row; what spans rows (its postings) is checked by core::validate later.
Status read_transaction_row(const SqlRow& r, size_t first, Transaction& t) {
  if (!column_text(r, first, core::kTransactionIdBytesMax, t.id) || t.id.empty()) {
    return Unexpected(ErrorCode::kCorrupt, "a transaction row's id is not an id");
  }
  auto bad = [&](const char* column, const std::string& why) {
    return Unexpected(ErrorCode::kCorrupt, "transaction " + shown(t.id) + ": column " + column + " " + why);
  };
  if (!column_text(r, first + 1, 32, t.kind) || !core::valid_transaction_kind(t.kind)) {
    return bad("kind", "is not a transaction kind");
  }
  if (!column_text(r, first + 2, core::kLedgerIdBytesMax, t.job_id) ||
      (!t.job_id.empty() && !core::valid_ledger_id(t.job_id))) {
    return bad("job_id", "is not a job id");
  }
  if (!column_int(r, first + 3, t.created_at_ms) || t.created_at_ms < 0) return bad("created_at", "is not a time");
  return {};
}

// Columns seq, account, amount, kind, receipt_id from `first` on.
Status read_posting_row(const SqlRow& r, size_t first, const std::string& txn_id, int64_t& seq, Posting& p) {
  const std::string name = "posting of " + shown(txn_id);
  if (!column_int(r, first, seq) || seq < 0 || seq >= static_cast<int64_t>(core::kPostingsPerTransactionMax)) {
    return Unexpected(ErrorCode::kCorrupt, name + ": column seq is not a place in a transaction");
  }
  auto bad = [&](const char* column, const std::string& why) {
    return Unexpected(ErrorCode::kCorrupt, name + " seq " + std::to_string(seq) + ": column " + column + " " + why);
  };
  if (!column_text(r, first + 1, core::kAccountBytesMax, p.account) || !core::valid_account(p.account)) {
    return bad("account", "is not an account");
  }
  if (!column_int(r, first + 2, p.amount_micros) || p.amount_micros == 0 ||
      p.amount_micros > core::kAmountMicrosMax || p.amount_micros < -core::kAmountMicrosMax) {
    return bad("amount", "is not a non-zero amount within +-2^53 micros");
  }
  if (!column_text(r, first + 3, 32, p.kind) || !core::valid_posting_kind(p.kind)) {
    return bad("kind", "is not a posting kind");
  }
  if (!column_text(r, first + 4, core::kLedgerIdBytesMax, p.receipt_id) ||
      (!p.receipt_id.empty() && !core::valid_ledger_id(p.receipt_id))) {
    return bad("receipt_id", "is not a receipt id");
  }
  return {};
}

// One kEntryColumns row with its posting.
Status read_entry_row(const SqlRow& r, LedgerEntry& e) {
  Transaction t;
  IF_RETURN_IF_ERROR(read_transaction_row(r, 0, t));
  int64_t seq = 0;
  IF_RETURN_IF_ERROR(read_posting_row(r, 4, t.id, seq, e.posting));
  e.transaction_id = std::move(t.id);
  e.transaction_kind = std::move(t.kind);
  e.job_id = std::move(t.job_id);
  e.created_at_ms = t.created_at_ms;
  e.seq = static_cast<uint32_t>(seq);
  return {};
}

// Puts kEntryColumns rows (ordered by transaction, then seq) back together
// into transactions, checks each (its postings' places, core::validate) and
// hands it on. Errors are kCorrupt messages without the store's label.
class Assembler {
 public:
  explicit Assembler(std::function<Status(Transaction&&)> done) : done_(std::move(done)) {}

  Status add(const SqlRow& r) {
    std::string id;
    if (!have_ || !column_text(r, 0, core::kTransactionIdBytesMax, id) || id != current_.id) {
      IF_RETURN_IF_ERROR(finish());
      current_ = Transaction();
      IF_RETURN_IF_ERROR(read_transaction_row(r, 0, current_));
      have_ = true;
    }
    if (r.size() > 4 && r[4].type == SqlValue::Type::kNull) return {};  // no postings at all
    if (current_.postings.size() >= core::kPostingsPerTransactionMax) {
      return Unexpected(ErrorCode::kCorrupt, "transaction " + shown(current_.id) + " has more than " +
                                                 std::to_string(core::kPostingsPerTransactionMax) + " postings");
    }
    int64_t seq = 0;
    Posting p;
    IF_RETURN_IF_ERROR(read_posting_row(r, 4, current_.id, seq, p));
    if (seq != static_cast<int64_t>(current_.postings.size())) {
      return Unexpected(ErrorCode::kCorrupt, "transaction " + shown(current_.id) + ": posting seq " +
                                                 std::to_string(seq) + " where " +
                                                 std::to_string(current_.postings.size()) +
                                                 " belongs (a posting is missing)");
    }
    current_.postings.push_back(std::move(p));
    return {};
  }

  // Hands on the last transaction; call once after the last row.
  Status finish() {
    if (!have_) return {};
    have_ = false;
    if (Status v = core::validate(current_); !v) return Unexpected(ErrorCode::kCorrupt, v.error().message);
    return done_(std::move(current_));
  }

 private:
  std::function<Status(Transaction&&)> done_;
  Transaction current_;
  bool have_ = false;
};

// Aggregates of an account's amounts, from kSumColumns.
// Valid rows hold non-zero amounts within +-2^53; anything else is damage.
struct Sums {
  int64_t count = 0;
  int64_t sum = 0;
  int64_t min = 0;
  int64_t max = 0;
  int64_t zeros = 0;
};

bool read_sums(const SqlRow& r, size_t first, Sums& s) {
  int64_t v[5];
  for (size_t i = 0; i < 5; ++i) {
    if (!column_int(r, first + i, v[i])) return false;
  }
  s = {v[0], v[1], v[2], v[3], v[4]};
  if (s.count < 0 || s.zeros != 0) return false;
  return s.count == 0 || (s.min >= -core::kAmountMicrosMax && s.max <= core::kAmountMicrosMax);
}

std::string csv_field(std::string_view v) {
  if (v.find_first_of(",\"\r\n") == std::string_view::npos) return std::string(v);
  std::string out = "\"";
  for (char c : v) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

// Parameters of a statement, built inline.
std::vector<SqlValue> args(std::initializer_list<SqlValue> values) { return std::vector<SqlValue>(values); }

}  // namespace

LedgerStore::LedgerStore(std::string location, std::unique_ptr<SqlDb> db)
    : location_(std::move(location)), db_(std::move(db)) {}

LedgerStore::~LedgerStore() = default;

Unexpected LedgerStore::corrupt(const std::string& what) const {
  return Unexpected(ErrorCode::kCorrupt, db_->label() + ": " + what);
}

Result<std::unique_ptr<LedgerStore>> LedgerStore::open(const std::string& location) {
  SqlDbOptions o;
  o.store = "ledger";
  o.sqlite_migrations = kSqliteMigrations;
  o.postgres_migrations = kPostgresMigrations;
  // Money: a committed posting survives a power loss too.
  o.sqlite_synchronous_full = true;
  o.sqlite_busy_timeout_ms = kLedgerBusyTimeoutMs;
  auto db = open_sql_db(location, o);
  if (!db) return Unexpected(db.error());
  const std::string shown_location = is_postgres_url(location) ? redact_postgres_url(location) : location;
  return std::unique_ptr<LedgerStore>(new LedgerStore(shown_location, std::move(*db)));
}

Result<std::vector<Transaction>> LedgerStore::read_transactions(const std::string& where, const std::string& order,
                                                                std::span<const SqlValue> params) {
  std::vector<Transaction> out;
  Assembler assembler([&](Transaction&& t) -> Status {
    if (out.size() >= kLedgerRowsReadMax) {
      return Unexpected(ErrorCode::kOutOfRange, db_->label() + ": more than " + std::to_string(kLedgerRowsReadMax) +
                                                    " transactions to read");
    }
    out.push_back(std::move(t));
    return {};
  });
  const std::string sql = std::string("SELECT ") + kEntryColumns + kEntryJoin + where + " ORDER BY " + order + ", p.seq";
  Status s = db_->query(sql, params, "reading transactions", [&](const SqlRow& r) { return assembler.add(r); });
  if (s) s = assembler.finish();
  if (!s) return s.error().code == ErrorCode::kCorrupt ? corrupt(s.error().message) : Unexpected(s.error());
  return out;
}

Result<std::optional<Transaction>> LedgerStore::read_transaction(std::string_view id) {
  const auto params = args({SqlValue::text(id)});
  auto rows = read_transactions("WHERE t.id = $1", "t.id", params);
  if (!rows) return Unexpected(rows.error());
  if (rows->empty()) return std::optional<Transaction>();
  return std::optional<Transaction>(std::move(rows->front()));
}

Result<std::optional<Transaction>> LedgerStore::transaction(std::string_view id) { return read_transaction(id); }

Result<std::vector<Transaction>> LedgerStore::transactions_for_job(std::string_view job_id) {
  if (!core::valid_ledger_id(job_id)) {
    return Unexpected(ErrorCode::kInvalidArgument, "job id " + shown(job_id) + " is not a valid id");
  }
  const auto params = args({SqlValue::text(job_id)});
  return read_transactions("WHERE t.job_id = $1", "t.created_at, t.id", params);
}

Status LedgerStore::insert(const Transaction& txn) {
  auto wrote = db_->exec("INSERT INTO transactions (id, kind, job_id, created_at) VALUES ($1, $2, $3, $4)",
                         args({SqlValue::text(txn.id), SqlValue::text(txn.kind), SqlValue::text(txn.job_id),
                               SqlValue::of(txn.created_at_ms)}),
                         "writing transaction " + shown(txn.id));
  if (!wrote && wrote.error().code == ErrorCode::kAlreadyExists) {
    return Unexpected(ErrorCode::kAlreadyExists, db_->label() + ": job " + shown(txn.job_id) + " already has a " +
                                                     txn.kind + " under another id");
  }
  if (!wrote) return Unexpected(wrote.error());
  for (size_t i = 0; i < txn.postings.size(); ++i) {
    const Posting& posting = txn.postings[i];
    auto p = db_->exec(
        "INSERT INTO postings (txn_id, seq, account, amount, kind, receipt_id) VALUES ($1, $2, $3, $4, $5, $6)",
        args({SqlValue::text(txn.id), SqlValue::of(static_cast<int64_t>(i)), SqlValue::text(posting.account),
              SqlValue::of(posting.amount_micros), SqlValue::text(posting.kind), SqlValue::text(posting.receipt_id)}),
        "writing a posting of " + shown(txn.id));
    if (!p) return Unexpected(p.error());
  }
  return {};
}

Result<bool> LedgerStore::post(const Transaction& txn) {
  IF_RETURN_IF_ERROR(core::validate(txn));
  IF_RETURN_IF_ERROR(db_->begin_write("starting a post"));
  auto write = [&]() -> Result<bool> {
    auto existing = read_transaction(txn.id);
    if (!existing) return Unexpected(existing.error());
    if (existing->has_value()) {
      const Transaction& old = **existing;
      // A retry: the same money under the same id. The first write's time
      // stands (a retry built later may carry a later one).
      if (old.kind == txn.kind && old.job_id == txn.job_id && old.postings == txn.postings) return false;
      return Unexpected(ErrorCode::kAlreadyExists, db_->label() + ": transaction " + shown(txn.id) +
                                                       " already exists with other content");
    }
    IF_RETURN_IF_ERROR(insert(txn));
    return true;
  };
  auto wrote = write();
  if (!wrote || !*wrote) {
    db_->rollback();
    return wrote;
  }
  if (Status s = db_->commit("committing a post"); !s) {
    db_->rollback();
    return Unexpected(s.error());
  }
  return wrote;
}

Result<int64_t> LedgerStore::balance_before(std::string_view account, core::TimeMs before_ms) {
  Sums s;
  bool read = false, valid = false;
  Status q = db_->query(std::string("SELECT ") + kSumColumns +
                            " FROM postings p JOIN transactions t ON t.id = p.txn_id "
                            "WHERE p.account = $1 AND t.created_at < $2",
                        args({SqlValue::text(account), SqlValue::of(before_ms)}), "reading a balance",
                        [&](const SqlRow& r) -> Status {
                          read = true;
                          valid = read_sums(r, 0, s);
                          return {};
                        });
  // An integer SUM that overflows stops with kOutOfRange: only damaged rows
  // can make one, since each amount is at most 2^53.
  if (!q && q.error().code == ErrorCode::kOutOfRange) {
    return corrupt("the postings of " + shown(account) + " do not sum: " + q.error().message);
  }
  if (!q) return Unexpected(q.error());
  if (!read || !valid) return corrupt("account " + shown(account) + " has a posting that is not an amount");
  return s.sum;
}

Result<int64_t> LedgerStore::balance(std::string_view account) {
  if (!core::valid_account(account)) return Unexpected(core::parse_account(account).error());
  return balance_before(account, std::numeric_limits<core::TimeMs>::max());
}

Result<std::vector<AccountBalance>> LedgerStore::read_credit_limits(std::map<std::string, AccountBalance>& by_name) {
  Status s = db_->query("SELECT id, credit_limit_micros FROM accounts ORDER BY id", {}, "reading credit limits",
                        [&](const SqlRow& r) -> Status {
                          std::string id;
                          int64_t limit = 0;
                          const bool text = column_text(r, 0, core::kAccountBytesMax, id);
                          auto account = text ? core::parse_account(id) : core::parse_account("");
                          if (!account || account->type != core::AccountType::kClient) {
                            return corrupt("accounts row " + shown(id) + " is not a client account");
                          }
                          if (!column_int(r, 1, limit) || limit < 0 || limit > kCreditLimitMicrosMax) {
                            return corrupt("accounts row " + shown(id) +
                                           ": column credit_limit_micros is out of range");
                          }
                          if (by_name.size() >= kLedgerRowsReadMax) {
                            return corrupt("more accounts than " + std::to_string(kLedgerRowsReadMax));
                          }
                          AccountBalance& b = by_name[id];
                          b.account = id;
                          b.credit_limit_micros = limit;
                          return {};
                        });
  if (!s) return Unexpected(s.error());
  std::vector<AccountBalance> out;
  out.reserve(by_name.size());
  for (auto& [name, b] : by_name) out.push_back(std::move(b));
  return out;
}

Result<std::vector<AccountBalance>> LedgerStore::balances() {
  std::map<std::string, AccountBalance> by_name;
  Status s = db_->query(std::string("SELECT p.account, ") + kSumColumns +
                            " FROM postings p JOIN transactions t ON t.id = p.txn_id "
                            "GROUP BY p.account ORDER BY p.account",
                        {}, "reading balances", [&](const SqlRow& r) -> Status {
                          if (by_name.size() >= kLedgerRowsReadMax) {
                            return corrupt("more accounts than " + std::to_string(kLedgerRowsReadMax));
                          }
                          AccountBalance b;
                          if (!column_text(r, 0, core::kAccountBytesMax, b.account) ||
                              !core::valid_account(b.account)) {
                            return corrupt("a posting's account " + shown(b.account) + " is not an account");
                          }
                          Sums sums;
                          if (!read_sums(r, 1, sums)) {
                            return corrupt("account " + shown(b.account) + " has a posting that is not an amount");
                          }
                          b.balance_micros = sums.sum;
                          by_name[b.account] = b;
                          return {};
                        });
  if (!s && s.error().code == ErrorCode::kOutOfRange) return corrupt("postings do not sum: " + s.error().message);
  if (!s) return Unexpected(s.error());
  return read_credit_limits(by_name);
}

Result<std::vector<LedgerEntry>> LedgerStore::postings_for_account(std::string_view account, core::TimeMs from_ms,
                                                                   core::TimeMs to_ms) {
  if (!core::valid_account(account)) return Unexpected(core::parse_account(account).error());
  if (to_ms < from_ms) {
    return Unexpected(ErrorCode::kInvalidArgument,
                      "[" + std::to_string(from_ms) + ", " + std::to_string(to_ms) + ") is not a span of time");
  }
  std::vector<LedgerEntry> out;
  Status s = db_->query(std::string("SELECT ") + kEntryColumns +
                            " FROM postings p JOIN transactions t ON t.id = p.txn_id "
                            "WHERE p.account = $1 AND t.created_at >= $2 AND t.created_at < $3 "
                            "ORDER BY t.created_at, t.id, p.seq",
                        args({SqlValue::text(account), SqlValue::of(from_ms), SqlValue::of(to_ms)}),
                        "reading an account's postings", [&](const SqlRow& r) -> Status {
                          if (out.size() >= kLedgerRowsReadMax) {
                            return Unexpected(ErrorCode::kOutOfRange,
                                              db_->label() + ": " + shown(account) + " has more than " +
                                                  std::to_string(kLedgerRowsReadMax) + " postings in the span");
                          }
                          LedgerEntry e;
                          if (Status bad = read_entry_row(r, e); !bad) return corrupt(bad.error().message);
                          out.push_back(std::move(e));
                          return {};
                        });
  if (!s) return Unexpected(s.error());
  return out;
}

Status LedgerStore::set_credit_limit(std::string_view client_account, int64_t credit_limit_micros) {
  auto account = core::parse_account(client_account);
  if (!account || account->type != core::AccountType::kClient) {
    return Unexpected(ErrorCode::kInvalidArgument, shown(client_account) + " is not a client account (client:<id>)");
  }
  if (credit_limit_micros < 0 || credit_limit_micros > kCreditLimitMicrosMax) {
    return Unexpected(ErrorCode::kOutOfRange, "a credit limit is 0 to " + std::to_string(kCreditLimitMicrosMax) +
                                                  " micros, not " + std::to_string(credit_limit_micros));
  }
  auto wrote = db_->exec("INSERT INTO accounts (id, credit_limit_micros) VALUES ($1, $2) "
                         "ON CONFLICT (id) DO UPDATE SET credit_limit_micros = excluded.credit_limit_micros",
                         args({SqlValue::text(client_account), SqlValue::of(credit_limit_micros)}),
                         "writing a credit limit");
  if (!wrote) return Unexpected(wrote.error());
  return {};
}

Result<int64_t> LedgerStore::credit_limit(std::string_view client_account) {
  auto account = core::parse_account(client_account);
  if (!account || account->type != core::AccountType::kClient) {
    return Unexpected(ErrorCode::kInvalidArgument, shown(client_account) + " is not a client account (client:<id>)");
  }
  auto rows = db_->rows("SELECT credit_limit_micros FROM accounts WHERE id = $1",
                        args({SqlValue::text(client_account)}), "reading a credit limit", 1);
  if (!rows) return Unexpected(rows.error());
  if (rows->empty()) return int64_t{0};
  int64_t limit = 0;
  if (!column_int(rows->front(), 0, limit) || limit < 0 || limit > kCreditLimitMicrosMax) {
    return corrupt("accounts row " + shown(client_account) + ": column credit_limit_micros is out of range");
  }
  return limit;
}

Result<bool> LedgerStore::can_spend(std::string_view client_account, int64_t micros) {
  if (micros < 0 || micros > core::kAmountMicrosMax) {
    return Unexpected(ErrorCode::kOutOfRange, "an amount to spend is 0 to " + std::to_string(core::kAmountMicrosMax) +
                                                  " micros, not " + std::to_string(micros));
  }
  auto limit = credit_limit(client_account);
  if (!limit) return Unexpected(limit.error());
  auto balance_now = balance(client_account);
  if (!balance_now) return Unexpected(balance_now.error());
  return static_cast<i128>(*balance_now) - micros >= -static_cast<i128>(*limit);
}

Result<core::Statement> LedgerStore::statement(std::string_view owner_id, int year, int month) {
  auto account = core::owner_account(owner_id);
  if (!account) return Unexpected(account.error());
  const core::Month m{year, month};
  IF_RETURN_IF_ERROR(core::validate_month(m));
  const core::TimeMs from = core::month_start_ms(m);
  const core::TimeMs to = core::month_start_ms(core::next_month(m));
  // One read transaction, so the opening balance and the entries agree.
  IF_RETURN_IF_ERROR(db_->begin_read("starting a statement"));
  auto opening = balance_before(*account, from);
  auto entries = opening ? postings_for_account(*account, from, to) : Unexpected(opening.error());
  db_->rollback();  // read only: nothing to keep
  if (!opening) return Unexpected(opening.error());
  if (!entries) return Unexpected(entries.error());
  return core::build_statement(owner_id, m, *opening, std::move(*entries));
}

Result<std::optional<PayoutBatch>> LedgerStore::read_batch(core::Month month) {
  const std::string period = core::month_text(month);
  auto rows = db_->rows("SELECT min_amount_micros, created_at, payouts FROM payout_batches WHERE period = $1",
                        args({SqlValue::text(period)}), "reading a payout batch", 1);
  if (!rows) return Unexpected(rows.error());
  if (rows->empty()) return std::optional<PayoutBatch>();
  const SqlRow& row = rows->front();
  PayoutBatch batch;
  batch.month = month;
  batch.batch_id = "payout:" + period;
  int64_t count = 0;
  const core::TimeMs end = core::month_start_ms(core::next_month(month));
  if (!column_int(row, 0, batch.min_amount_micros) || batch.min_amount_micros < 0 ||
      batch.min_amount_micros > core::kAmountMicrosMax || !column_int(row, 1, batch.created_at_ms) ||
      batch.created_at_ms != end || !column_int(row, 2, count) || count < 0 ||
      count > static_cast<int64_t>(kPayoutBatchOwnersMax)) {
    return corrupt("payout batch " + period + ": a column is out of range");
  }
  // Ids "payout:P:<owner>" sort between "payout:P:" and "payout:P;" (':' + 1).
  const auto params = args({SqlValue::text(batch.batch_id + ":"), SqlValue::text(batch.batch_id + ";")});
  auto txns = read_transactions("WHERE t.id >= $1 AND t.id < $2", "t.id", params);
  if (!txns) return Unexpected(txns.error());
  if (static_cast<int64_t>(txns->size()) != count) {
    return corrupt("payout batch " + period + " records " + std::to_string(count) + " payouts, the ledger holds " +
                   std::to_string(txns->size()));
  }
  for (const Transaction& t : *txns) {
    // validate() made sure of the id's form and of one owner's money moving.
    const Posting* owner = nullptr;
    for (const Posting& p : t.postings) {
      if (p.account.rfind(core::kOwnerAccountPrefix, 0) == 0) owner = &p;
    }
    if (t.kind != core::kTransactionPayout || owner == nullptr || owner->amount_micros >= 0) {
      return corrupt("payout batch " + period + ": transaction " + shown(t.id) + " pays nobody");
    }
    batch.payouts.push_back(
        {owner->account.substr(core::kOwnerAccountPrefix.size()), -owner->amount_micros, t.id});
  }
  return std::optional<PayoutBatch>(std::move(batch));
}

Status LedgerStore::pay_owner(const SqlRow& r, core::Month month, int64_t min_amount_micros, core::TimeMs end,
                              PayoutBatch& batch, std::vector<Transaction>& txns) const {
  std::string account;
  if (!column_text(r, 0, core::kAccountBytesMax, account)) return corrupt("an owner account is not text");
  auto parsed = core::parse_account(account);
  if (!parsed || parsed->type != core::AccountType::kOwner) {
    return corrupt("posting account " + shown(account) + " is not an account");
  }
  Sums sums;
  if (!read_sums(r, 1, sums)) return corrupt("account " + shown(account) + " has a posting that is not an amount");
  if (sums.sum <= 0 || sums.sum < min_amount_micros) return {};
  if (txns.size() >= kPayoutBatchOwnersMax) {
    return Unexpected(ErrorCode::kOutOfRange,
                      "more than " + std::to_string(kPayoutBatchOwnersMax) + " owners to pay in one batch");
  }
  auto txn = core::build_payout(core::month_text(month), parsed->id, sums.sum, end);
  if (!txn) return Unexpected(txn.error());  // a balance above 2^53 micros: kOutOfRange
  batch.payouts.push_back({parsed->id, sums.sum, txn->id});
  txns.push_back(std::move(*txn));
  return {};
}

Result<PayoutBatch> LedgerStore::payout_batch(std::string_view period, int64_t min_amount_micros, core::TimeMs now) {
  auto month = core::parse_month(period);
  if (!month) return Unexpected(month.error());
  if (min_amount_micros < 0 || min_amount_micros > core::kAmountMicrosMax) {
    return Unexpected(ErrorCode::kInvalidArgument, "the least payout is 0 to " +
                                                       std::to_string(core::kAmountMicrosMax) + " micros, not " +
                                                       std::to_string(min_amount_micros));
  }
  const core::TimeMs end = core::month_start_ms(core::next_month(*month));
  if (now < end) {
    return Unexpected(ErrorCode::kInvalidArgument, "month " + core::month_text(*month) + " is not over until " +
                                                       core::iso8601_utc(end) + ": its balances may still change");
  }
  IF_RETURN_IF_ERROR(db_->begin_write("starting a payout batch"));
  auto run = [&]() -> Result<PayoutBatch> {
    auto earlier = read_batch(*month);
    if (!earlier) return Unexpected(earlier.error());
    if (earlier->has_value()) return std::move(**earlier);

    PayoutBatch batch;
    batch.month = *month;
    batch.batch_id = "payout:" + core::month_text(*month);
    batch.min_amount_micros = min_amount_micros;
    batch.created_at_ms = end;
    batch.posted_now = true;
    std::vector<Transaction> txns;
    // What went wrong inside the visits, told apart from the query's own
    // kOutOfRange (a SUM past int64: damage).
    Status inner;
    // Owner accounts are the names between "owner:" and "owner;" (':' + 1).
    Status s = db_->query(
        std::string("SELECT p.account, ") + kSumColumns +
            " FROM postings p JOIN transactions t ON t.id = p.txn_id "
            "WHERE p.account >= 'owner:' AND p.account < 'owner;' AND t.created_at < $1 "
            "GROUP BY p.account ORDER BY p.account",
        args({SqlValue::of(end)}), "reading owners' balances", [&](const SqlRow& r) -> Status {
          inner = pay_owner(r, *month, min_amount_micros, end, batch, txns);
          if (!inner) return Unexpected(ErrorCode::kInternal, "stopped");
          return {};
        });
    if (!inner) return Unexpected(inner.error());
    if (!s && s.error().code == ErrorCode::kOutOfRange) return corrupt("postings do not sum: " + s.error().message);
    if (!s) return Unexpected(s.error());
    for (const Transaction& t : txns) {
      auto existing = read_transaction(t.id);
      if (!existing) return Unexpected(existing.error());
      if (existing->has_value()) {
        return corrupt("payout " + shown(t.id) + " exists without its batch " + batch.batch_id);
      }
      IF_RETURN_IF_ERROR(insert(t));
    }
    auto wrote = db_->exec("INSERT INTO payout_batches (period, min_amount_micros, created_at, payouts) "
                           "VALUES ($1, $2, $3, $4)",
                           args({SqlValue::text(core::month_text(*month)), SqlValue::of(min_amount_micros),
                                 SqlValue::of(end), SqlValue::of(static_cast<int64_t>(txns.size()))}),
                           "writing a payout batch");
    if (!wrote) return Unexpected(wrote.error());
    return batch;
  };
  auto batch = run();
  if (!batch || !batch->posted_now) {
    db_->rollback();
    return batch;
  }
  if (Status s = db_->commit("committing a payout batch"); !s) {
    db_->rollback();
    return Unexpected(s.error());
  }
  return batch;
}

Result<VerifySummary> LedgerStore::verify(const VerifyOptions& options) {
  // One read transaction: a consistent snapshot while writers carry on.
  IF_RETURN_IF_ERROR(db_->begin_read("starting a verify"));
  auto run = [&]() -> Result<VerifySummary> {
    VerifySummary summary;
    i128 total = 0;
    std::set<std::string> accounts;
    // job -> (client account, amount charged) of settlements and refunds.
    std::map<std::string, std::pair<std::string, int64_t>> settled;
    std::map<std::string, std::pair<std::string, int64_t>> refunded;
    std::map<std::string, int64_t> payouts_by_period;

    // Every transaction with its postings, by id, one at a time.
    Assembler assembler([&](Transaction&& t) -> Status {
      for (const Posting& p : t.postings) {
        total += p.amount_micros;
        accounts.insert(p.account);
        if (options.verified_receipt_ids && p.account.rfind(core::kOwnerAccountPrefix, 0) == 0 &&
            !p.receipt_id.empty() && options.verified_receipt_ids->count(p.receipt_id) == 0) {
          return Unexpected(ErrorCode::kCorrupt, "transaction " + shown(t.id) + " pays " + shown(p.account) +
                                                     " on receipt " + shown(p.receipt_id) +
                                                     ", which is not a verified receipt");
        }
      }
      if (t.kind == core::kTransactionSettlement || t.kind == core::kTransactionRefund) {
        std::string client;
        int64_t amount = 0;
        for (const Posting& p : t.postings) {
          if (p.account.rfind(core::kClientAccountPrefix, 0) == 0) {
            if (!client.empty() && client != p.account) {
              return Unexpected(ErrorCode::kCorrupt, "transaction " + shown(t.id) + " moves money of two clients");
            }
            client = p.account;
            amount += p.amount_micros;
          }
        }
        auto& into = t.kind == core::kTransactionSettlement ? settled : refunded;
        into[t.job_id] = {client, t.kind == core::kTransactionSettlement ? -amount : amount};
      }
      if (t.kind == core::kTransactionPayout) ++payouts_by_period[t.id.substr(7, 7)];
      summary.transactions += 1;
      summary.postings += t.postings.size();
      return {};
    });
    Status s = db_->query(std::string("SELECT ") + kEntryColumns + kEntryJoin + "ORDER BY t.id, p.seq", {},
                          "reading transactions", [&](const SqlRow& r) { return assembler.add(r); });
    if (s) s = assembler.finish();
    if (!s) return s.error().code == ErrorCode::kCorrupt ? corrupt(s.error().message) : Unexpected(s.error());

    auto orphans = db_->rows(
        "SELECT p.txn_id FROM postings p LEFT JOIN transactions t ON t.id = p.txn_id WHERE t.id IS NULL "
        "ORDER BY p.txn_id LIMIT 1",
        {}, "looking for postings without a transaction", 1);
    if (!orphans) return Unexpected(orphans.error());
    if (!orphans->empty()) {
      std::string txn;
      column_text(orphans->front(), 0, core::kTransactionIdBytesMax, txn);
      return corrupt("posting of " + shown(txn) + " belongs to no transaction");
    }
    // Each transaction sums to zero, so this holds; it is the invariant
    // people ask about, so it is checked on its own all the same.
    if (total != 0) return corrupt("all postings sum to " + std::to_string(static_cast<int64_t>(total)) + ", not zero");

    for (const auto& [job, refund] : refunded) {
      const auto it = settled.find(job);
      if (it == settled.end()) return corrupt("job " + shown(job) + " has a refund but no settlement");
      if (it->second != refund) {
        return corrupt("the refund of job " + shown(job) + " returns " + format_money_fixed(refund.second) + " to " +
                       shown(refund.first) + ", its settlement charged " + format_money_fixed(it->second.second) +
                       " to " + shown(it->second.first));
      }
    }
    if (options.finished_job_ids) {
      std::set<std::string> finished;
      for (const std::string& job : *options.finished_job_ids) {
        if (settled.count(job) == 0) return corrupt("finished job " + shown(job) + " has no settlement");
        finished.insert(job);
      }
      for (const auto& [job, charge] : settled) {
        if (finished.count(job) == 0) return corrupt("job " + shown(job) + " is settled but did not finish");
      }
    }

    std::map<std::string, AccountBalance> limits;
    auto read_limits = read_credit_limits(limits);
    if (!read_limits) return Unexpected(read_limits.error());

    auto periods = db_->rows("SELECT period FROM payout_batches ORDER BY period", {}, "reading payout batches",
                             kLedgerRowsReadMax);
    if (!periods) return Unexpected(periods.error());
    for (const SqlRow& row : *periods) {
      std::string period;
      if (!column_text(row, 0, 7, period) || !core::parse_month(period)) {
        return corrupt("payout batch " + shown(period) + " is not a month");
      }
      auto batch = read_batch(*core::parse_month(period));  // checks its row and its count
      if (!batch) return Unexpected(batch.error());
      payouts_by_period.erase(period);
    }
    if (!payouts_by_period.empty()) {
      return corrupt("payouts for " + payouts_by_period.begin()->first + " exist without their batch");
    }
    summary.accounts = accounts.size();
    summary.total_micros = static_cast<int64_t>(total);
    return summary;
  };
  auto summary = run();
  db_->rollback();  // read only
  return summary;
}

// --- Renderers ----------------------------------------------------------------------

std::string statement_json(const core::Statement& s) {
  using nlohmann::json;
  auto money = [](int64_t micros) { return format_money_fixed(micros); };
  json totals = json::object();
  for (const auto& [kind, micros] : s.totals_micros_by_kind) {
    totals[kind] = {{"amount", money(micros)}, {"amount_micros", micros}};
  }
  json entries = json::array();
  for (const LedgerEntry& e : s.entries) {
    entries.push_back({{"date", core::iso8601_utc(e.created_at_ms)},
                       {"created_at_ms", e.created_at_ms},
                       {"transaction", e.transaction_id},
                       {"job", e.job_id.empty() ? json(nullptr) : json(e.job_id)},
                       {"receipt", e.posting.receipt_id.empty() ? json(nullptr) : json(e.posting.receipt_id)},
                       {"kind", e.posting.kind},
                       {"amount", money(e.posting.amount_micros)},
                       {"amount_micros", e.posting.amount_micros}});
  }
  const json out = {{"owner", s.owner_id},
                    {"account", std::string(core::kOwnerAccountPrefix) + s.owner_id},
                    {"month", core::month_text(s.month)},
                    {"opening_balance", money(s.opening_balance_micros)},
                    {"opening_balance_micros", s.opening_balance_micros},
                    {"totals", totals},
                    {"net", money(s.net_micros)},
                    {"net_micros", s.net_micros},
                    {"closing_balance", money(s.closing_balance_micros)},
                    {"closing_balance_micros", s.closing_balance_micros},
                    {"receipts", s.receipts},
                    {"jobs", s.jobs},
                    {"entries", entries}};
  return out.dump(2, ' ', false, json::error_handler_t::replace) + "\n";
}

std::string statement_csv(const core::Statement& s) {
  std::string out = "date,transaction,job,receipt,kind,amount\n";
  for (const LedgerEntry& e : s.entries) {
    out += core::iso8601_utc(e.created_at_ms) + "," + csv_field(e.transaction_id) + "," + csv_field(e.job_id) + "," +
           csv_field(e.posting.receipt_id) + "," + csv_field(e.posting.kind) + "," +
           format_money_fixed(e.posting.amount_micros) + "\n";
  }
  for (const auto& [kind, micros] : s.totals_micros_by_kind) {
    out += "total,,,," + csv_field(kind) + "," + format_money_fixed(micros) + "\n";
  }
  out += "total,,,,net," + format_money_fixed(s.net_micros) + "\n";
  return out;
}

std::string payout_csv(const PayoutBatch& batch) {
  std::string out = "owner,amount,batch_id,transaction_id\n";
  for (const Payout& p : batch.payouts) {
    out += csv_field(p.owner_id) + "," + format_money_fixed(p.amount_micros) + "," + csv_field(batch.batch_id) + "," +
           csv_field(p.transaction_id) + "\n";
  }
  return out;
}

}  // namespace idlefleet::store
