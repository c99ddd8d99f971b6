#include "store/ledger_store.h"

#include <sqlite3.h>

#include <algorithm>
#include <limits>
#include <map>
#include <set>
#include <utility>

#include <nlohmann/json.hpp>

#include "common/check.h"
#include "common/money.h"
#include "store/sqlite_db.h"

namespace idlefleet::store {
namespace {

using core::LedgerEntry;
using core::Posting;
using core::Transaction;
using i128 = __int128;

// Migration N (1-based) is kMigrations[N - 1]; shipped entries never change.
constexpr const char* kMigrations[] = {
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
static_assert(std::size(kMigrations) == kLedgerSchemaVersion, "one migration per schema version");

// A transaction's postings joined with the transaction: LedgerEntry columns.
constexpr const char* kEntryColumns =
    "t.id, t.kind, t.job_id, t.created_at, p.seq, p.account, p.amount, p.kind, p.receipt_id";

// Finalizes a statement when the scope ends.
class Stmt {
 public:
  Stmt() = default;
  ~Stmt() { sqlite3_finalize(stmt_); }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;
  sqlite3_stmt** out() { return &stmt_; }
  sqlite3_stmt* get() const { return stmt_; }

 private:
  sqlite3_stmt* stmt_ = nullptr;
};

int bind_text(sqlite3_stmt* st, int col, std::string_view v) {
  return sqlite3_bind_text(st, col, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
}

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

// Reads a TEXT column of at most `max` bytes; false if it is not one.
bool column_text(sqlite3_stmt* st, int col, size_t max, std::string& out) {
  if (sqlite3_column_type(st, col) != SQLITE_TEXT) return false;
  const auto* p = sqlite3_column_text(st, col);
  const auto n = static_cast<size_t>(sqlite3_column_bytes(st, col));
  if (p == nullptr || n > max) return false;
  out.assign(reinterpret_cast<const char*>(p), n);
  return true;
}

bool column_int(sqlite3_stmt* st, int col, int64_t& out) {
  if (sqlite3_column_type(st, col) != SQLITE_INTEGER) return false;
  out = sqlite3_column_int64(st, col);
  return true;
}

// Columns id, kind, job_id, created_at from `first` on. A transaction's own
// row; what spans rows (its postings) is checked by core::validate later.
Status read_transaction_row(sqlite3_stmt* st, int first, Transaction& t) {
  if (!column_text(st, first, core::kTransactionIdBytesMax, t.id) || t.id.empty()) {
    return Unexpected(ErrorCode::kCorrupt, "a transaction row's id is not an id");
  }
  auto bad = [&](const char* column, const std::string& why) {
    return Unexpected(ErrorCode::kCorrupt, "transaction " + shown(t.id) + ": column " + column + " " + why);
  };
  if (!column_text(st, first + 1, 32, t.kind) || !core::valid_transaction_kind(t.kind)) {
    return bad("kind", "is not a transaction kind");
  }
  if (!column_text(st, first + 2, core::kLedgerIdBytesMax, t.job_id) ||
      (!t.job_id.empty() && !core::valid_ledger_id(t.job_id))) {
    return bad("job_id", "is not a job id");
  }
  if (!column_int(st, first + 3, t.created_at_ms) || t.created_at_ms < 0) return bad("created_at", "is not a time");
  return {};
}

// Columns seq, account, amount, kind, receipt_id from `first` on.
Status read_posting_row(sqlite3_stmt* st, int first, const std::string& txn_id, int64_t& seq, Posting& p) {
  const std::string name = "posting of " + shown(txn_id);
  if (!column_int(st, first, seq) || seq < 0 || seq >= static_cast<int64_t>(core::kPostingsPerTransactionMax)) {
    return Unexpected(ErrorCode::kCorrupt, name + ": column seq is not a place in a transaction");
  }
  auto bad = [&](const char* column, const std::string& why) {
    return Unexpected(ErrorCode::kCorrupt, name + " seq " + std::to_string(seq) + ": column " + column + " " + why);
  };
  if (!column_text(st, first + 1, core::kAccountBytesMax, p.account) || !core::valid_account(p.account)) {
    return bad("account", "is not an account");
  }
  if (!column_int(st, first + 2, p.amount_micros) || p.amount_micros == 0 ||
      p.amount_micros > core::kAmountMicrosMax || p.amount_micros < -core::kAmountMicrosMax) {
    return bad("amount", "is not a non-zero amount within +-2^53 micros");
  }
  if (!column_text(st, first + 3, 32, p.kind) || !core::valid_posting_kind(p.kind)) {
    return bad("kind", "is not a posting kind");
  }
  if (!column_text(st, first + 4, core::kLedgerIdBytesMax, p.receipt_id) ||
      (!p.receipt_id.empty() && !core::valid_ledger_id(p.receipt_id))) {
    return bad("receipt_id", "is not a receipt id");
  }
  return {};
}

// One kEntryColumns row.
Status read_entry_row(sqlite3_stmt* st, LedgerEntry& e) {
  Transaction t;
  IF_RETURN_IF_ERROR(read_transaction_row(st, 0, t));
  int64_t seq = 0;
  IF_RETURN_IF_ERROR(read_posting_row(st, 4, t.id, seq, e.posting));
  e.transaction_id = std::move(t.id);
  e.transaction_kind = std::move(t.kind);
  e.job_id = std::move(t.job_id);
  e.created_at_ms = t.created_at_ms;
  e.seq = static_cast<uint32_t>(seq);
  return {};
}

// Aggregates of an account's amounts: COUNT, SUM, MIN, MAX, count of zeros.
// Valid rows hold non-zero amounts within +-2^53; anything else is damage.
struct Sums {
  int64_t count = 0;
  int64_t sum = 0;
  int64_t min = 0;
  int64_t max = 0;
  int64_t zeros = 0;
};

bool read_sums(sqlite3_stmt* st, int first, Sums& s) {
  int64_t v[5];
  for (int i = 0; i < 5; ++i) {
    if (!column_int(st, first + i, v[i])) return false;
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

}  // namespace

LedgerStore::LedgerStore(std::string path, sqlite3* db) : path_(std::move(path)), db_(db) {}

LedgerStore::~LedgerStore() { sqlite3_close_v2(db_); }

Unexpected LedgerStore::sqlite_error(int rc, const std::string& what) const {
  return store::sqlite_error(db_, rc, "ledger '" + path_ + "'", what);
}

Unexpected LedgerStore::corrupt(const std::string& what) const {
  return Unexpected(ErrorCode::kCorrupt, "ledger '" + path_ + "': " + what);
}

Status LedgerStore::exec(const char* sql, const char* what) {
  return sqlite_exec(db_, sql, "ledger '" + path_ + "'", what);
}

Result<std::unique_ptr<LedgerStore>> LedgerStore::open(const std::string& path) {
  sqlite3* db = nullptr;
  IF_RETURN_IF_ERROR(open_database(path, kMigrations, "ledger '" + path + "'", &db));
  std::unique_ptr<LedgerStore> store(new LedgerStore(path, db));
  sqlite3_busy_timeout(db, kLedgerBusyTimeoutMs);
  // Money: a committed posting survives a power loss too.
  IF_RETURN_IF_ERROR(store->exec("PRAGMA synchronous = FULL", "setting pragmas"));
  return store;
}

Result<std::vector<Transaction>> LedgerStore::read_transactions(sqlite3_stmt* st) {
  std::vector<Transaction> out;
  for (;;) {
    const int rc = sqlite3_step(st);
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) return sqlite_error(rc, "reading transactions");
    if (out.size() >= kLedgerRowsReadMax) {
      return Unexpected(ErrorCode::kOutOfRange, "ledger '" + path_ + "': more than " +
                                                    std::to_string(kLedgerRowsReadMax) + " transactions to read");
    }
    Transaction t;
    if (Status s = read_transaction_row(st, 0, t); !s) return corrupt(s.error().message);
    out.push_back(std::move(t));
  }
  Stmt postings;
  int rc = sqlite3_prepare_v2(db_, "SELECT seq, account, amount, kind, receipt_id FROM postings WHERE txn_id = ?1 "
                                   "ORDER BY seq", -1, postings.out(), nullptr);
  if (rc != SQLITE_OK) return sqlite_error(rc, "preparing a postings read");
  for (Transaction& t : out) {
    sqlite3_reset(postings.get());
    rc = bind_text(postings.get(), 1, t.id);
    if (rc != SQLITE_OK) return sqlite_error(rc, "binding a postings read");
    for (;;) {
      rc = sqlite3_step(postings.get());
      if (rc == SQLITE_DONE) break;
      if (rc != SQLITE_ROW) return sqlite_error(rc, "reading postings");
      if (t.postings.size() >= core::kPostingsPerTransactionMax) {
        return corrupt("transaction " + shown(t.id) + " has more than " +
                       std::to_string(core::kPostingsPerTransactionMax) + " postings");
      }
      int64_t seq = 0;
      Posting p;
      if (Status s = read_posting_row(postings.get(), 0, t.id, seq, p); !s) return corrupt(s.error().message);
      if (seq != static_cast<int64_t>(t.postings.size())) {
        return corrupt("transaction " + shown(t.id) + ": posting seq " + std::to_string(seq) + " where " +
                       std::to_string(t.postings.size()) + " belongs");
      }
      t.postings.push_back(std::move(p));
    }
    if (Status s = core::validate(t); !s) return corrupt(s.error().message);
  }
  return out;
}

Result<std::optional<Transaction>> LedgerStore::read_transaction(std::string_view id) {
  Stmt st;
  int rc = sqlite3_prepare_v2(db_, "SELECT id, kind, job_id, created_at FROM transactions WHERE id = ?1", -1, st.out(),
                              nullptr);
  if (rc == SQLITE_OK) rc = bind_text(st.get(), 1, id);
  if (rc != SQLITE_OK) return sqlite_error(rc, "preparing a transaction read");
  auto rows = read_transactions(st.get());
  if (!rows) return Unexpected(rows.error());
  if (rows->empty()) return std::optional<Transaction>();
  return std::optional<Transaction>(std::move(rows->front()));
}

Result<std::optional<Transaction>> LedgerStore::transaction(std::string_view id) { return read_transaction(id); }

Result<std::vector<Transaction>> LedgerStore::transactions_for_job(std::string_view job_id) {
  if (!core::valid_ledger_id(job_id)) {
    return Unexpected(ErrorCode::kInvalidArgument, "job id " + shown(job_id) + " is not a valid id");
  }
  Stmt st;
  int rc = sqlite3_prepare_v2(db_,
                              "SELECT id, kind, job_id, created_at FROM transactions WHERE job_id = ?1 "
                              "ORDER BY created_at, id",
                              -1, st.out(), nullptr);
  if (rc == SQLITE_OK) rc = bind_text(st.get(), 1, job_id);
  if (rc != SQLITE_OK) return sqlite_error(rc, "preparing a job's transactions read");
  return read_transactions(st.get());
}

Status LedgerStore::insert(const Transaction& txn) {
  Stmt t;
  int rc = sqlite3_prepare_v2(db_, "INSERT INTO transactions (id, kind, job_id, created_at) VALUES (?1, ?2, ?3, ?4)",
                              -1, t.out(), nullptr);
  if (rc != SQLITE_OK) return sqlite_error(rc, "preparing a transaction insert");
  const int binds[] = {bind_text(t.get(), 1, txn.id), bind_text(t.get(), 2, txn.kind),
                       bind_text(t.get(), 3, txn.job_id), sqlite3_bind_int64(t.get(), 4, txn.created_at_ms)};
  for (int b : binds) {
    if (b != SQLITE_OK) return sqlite_error(b, "binding a transaction");
  }
  rc = sqlite3_step(t.get());
  if ((rc & 0xff) == SQLITE_CONSTRAINT) {
    return Unexpected(ErrorCode::kAlreadyExists, "ledger '" + path_ + "': job " + shown(txn.job_id) +
                                                     " already has a " + txn.kind + " under another id");
  }
  if (rc != SQLITE_DONE) return sqlite_error(rc, "writing transaction " + shown(txn.id));
  Stmt p;
  rc = sqlite3_prepare_v2(db_,
                          "INSERT INTO postings (txn_id, seq, account, amount, kind, receipt_id) "
                          "VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                          -1, p.out(), nullptr);
  if (rc != SQLITE_OK) return sqlite_error(rc, "preparing a posting insert");
  for (size_t i = 0; i < txn.postings.size(); ++i) {
    const Posting& posting = txn.postings[i];
    sqlite3_reset(p.get());
    const int pb[] = {bind_text(p.get(), 1, txn.id),
                      sqlite3_bind_int64(p.get(), 2, static_cast<int64_t>(i)),
                      bind_text(p.get(), 3, posting.account),
                      sqlite3_bind_int64(p.get(), 4, posting.amount_micros),
                      bind_text(p.get(), 5, posting.kind),
                      bind_text(p.get(), 6, posting.receipt_id)};
    for (int b : pb) {
      if (b != SQLITE_OK) return sqlite_error(b, "binding a posting");
    }
    rc = sqlite3_step(p.get());
    if (rc != SQLITE_DONE) return sqlite_error(rc, "writing a posting of " + shown(txn.id));
  }
  return {};
}

Result<bool> LedgerStore::post(const Transaction& txn) {
  IF_RETURN_IF_ERROR(core::validate(txn));
  IF_RETURN_IF_ERROR(exec("BEGIN IMMEDIATE", "starting a post"));
  auto write = [&]() -> Result<bool> {
    auto existing = read_transaction(txn.id);
    if (!existing) return Unexpected(existing.error());
    if (existing->has_value()) {
      const Transaction& old = **existing;
      // A retry: the same money under the same id. The first write's time
      // stands (a retry built later may carry a later one).
      if (old.kind == txn.kind && old.job_id == txn.job_id && old.postings == txn.postings) return false;
      return Unexpected(ErrorCode::kAlreadyExists, "ledger '" + path_ + "': transaction " + shown(txn.id) +
                                                       " already exists with other content");
    }
    IF_RETURN_IF_ERROR(insert(txn));
    return true;
  };
  auto wrote = write();
  if (!wrote) {
    if (sqlite3_get_autocommit(db_) == 0) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    return wrote;
  }
  if (Status s = exec(*wrote ? "COMMIT" : "ROLLBACK", "committing a post"); !s) {
    if (sqlite3_get_autocommit(db_) == 0) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    return Unexpected(s.error());
  }
  return wrote;
}

Result<int64_t> LedgerStore::balance_before(std::string_view account, core::TimeMs before_ms) {
  Stmt st;
  int rc = sqlite3_prepare_v2(db_,
                              "SELECT COUNT(*), COALESCE(SUM(p.amount), 0), COALESCE(MIN(p.amount), 0), "
                              "COALESCE(MAX(p.amount), 0), COALESCE(SUM(p.amount = 0), 0) "
                              "FROM postings p JOIN transactions t ON t.id = p.txn_id "
                              "WHERE p.account = ?1 AND t.created_at < ?2",
                              -1, st.out(), nullptr);
  if (rc == SQLITE_OK) rc = bind_text(st.get(), 1, account);
  if (rc == SQLITE_OK) rc = sqlite3_bind_int64(st.get(), 2, before_ms);
  if (rc != SQLITE_OK) return sqlite_error(rc, "preparing a balance");
  rc = sqlite3_step(st.get());
  // SQLite stops an integer SUM that overflows with an error: only damaged
  // rows can make one, since each amount is at most 2^53.
  if ((rc & 0xff) == SQLITE_ERROR) {
    return corrupt("the postings of " + shown(account) + " do not sum: " + sqlite3_errmsg(db_));
  }
  if (rc != SQLITE_ROW) return sqlite_error(rc, "reading a balance");
  Sums s;
  if (!read_sums(st.get(), 0, s)) return corrupt("account " + shown(account) + " has a posting that is not an amount");
  return s.sum;
}

Result<int64_t> LedgerStore::balance(std::string_view account) {
  if (!core::valid_account(account)) return Unexpected(core::parse_account(account).error());
  return balance_before(account, std::numeric_limits<core::TimeMs>::max());
}

Result<std::vector<AccountBalance>> LedgerStore::balances() {
  std::map<std::string, AccountBalance> by_name;
  {
    Stmt st;
    int rc = sqlite3_prepare_v2(db_,
                                "SELECT p.account, COUNT(*), SUM(p.amount), MIN(p.amount), MAX(p.amount), "
                                "SUM(p.amount = 0) FROM postings p JOIN transactions t ON t.id = p.txn_id "
                                "GROUP BY p.account ORDER BY p.account",
                                -1, st.out(), nullptr);
    if (rc != SQLITE_OK) return sqlite_error(rc, "preparing balances");
    for (;;) {
      rc = sqlite3_step(st.get());
      if (rc == SQLITE_DONE) break;
      if ((rc & 0xff) == SQLITE_ERROR) return corrupt(std::string("postings do not sum: ") + sqlite3_errmsg(db_));
      if (rc != SQLITE_ROW) return sqlite_error(rc, "reading balances");
      if (by_name.size() >= kLedgerRowsReadMax) return corrupt("more accounts than " + std::to_string(kLedgerRowsReadMax));
      AccountBalance b;
      if (!column_text(st.get(), 0, core::kAccountBytesMax, b.account) || !core::valid_account(b.account)) {
        return corrupt("a posting's account " + shown(b.account) + " is not an account");
      }
      Sums s;
      if (!read_sums(st.get(), 1, s)) return corrupt("account " + shown(b.account) + " has a posting that is not an amount");
      b.balance_micros = s.sum;
      by_name[b.account] = b;
    }
  }
  Stmt limits;
  int rc = sqlite3_prepare_v2(db_, "SELECT id, credit_limit_micros FROM accounts ORDER BY id", -1, limits.out(), nullptr);
  if (rc != SQLITE_OK) return sqlite_error(rc, "preparing credit limits");
  for (;;) {
    rc = sqlite3_step(limits.get());
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) return sqlite_error(rc, "reading credit limits");
    std::string id;
    int64_t limit = 0;
    if (!column_text(limits.get(), 0, core::kAccountBytesMax, id)) return corrupt("an accounts row's id is not text");
    auto account = core::parse_account(id);
    if (!account || account->type != core::AccountType::kClient) {
      return corrupt("accounts row " + shown(id) + " is not a client account");
    }
    if (!column_int(limits.get(), 1, limit) || limit < 0 || limit > kCreditLimitMicrosMax) {
      return corrupt("accounts row " + shown(id) + ": column credit_limit_micros is out of range");
    }
    if (by_name.size() >= kLedgerRowsReadMax) return corrupt("more accounts than " + std::to_string(kLedgerRowsReadMax));
    AccountBalance& b = by_name[id];
    b.account = id;
    b.credit_limit_micros = limit;
  }
  std::vector<AccountBalance> out;
  out.reserve(by_name.size());
  for (auto& [name, b] : by_name) out.push_back(std::move(b));
  return out;
}

Result<std::vector<LedgerEntry>> LedgerStore::postings_for_account(std::string_view account, core::TimeMs from_ms,
                                                                   core::TimeMs to_ms) {
  if (!core::valid_account(account)) return Unexpected(core::parse_account(account).error());
  if (to_ms < from_ms) {
    return Unexpected(ErrorCode::kInvalidArgument,
                      "[" + std::to_string(from_ms) + ", " + std::to_string(to_ms) + ") is not a span of time");
  }
  Stmt st;
  const std::string sql = std::string("SELECT ") + kEntryColumns +
                          " FROM postings p JOIN transactions t ON t.id = p.txn_id "
                          "WHERE p.account = ?1 AND t.created_at >= ?2 AND t.created_at < ?3 "
                          "ORDER BY t.created_at, t.id, p.seq";
  int rc = sqlite3_prepare_v2(db_, sql.c_str(), -1, st.out(), nullptr);
  if (rc == SQLITE_OK) rc = bind_text(st.get(), 1, account);
  if (rc == SQLITE_OK) rc = sqlite3_bind_int64(st.get(), 2, from_ms);
  if (rc == SQLITE_OK) rc = sqlite3_bind_int64(st.get(), 3, to_ms);
  if (rc != SQLITE_OK) return sqlite_error(rc, "preparing an account's postings read");
  std::vector<LedgerEntry> out;
  for (;;) {
    rc = sqlite3_step(st.get());
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) return sqlite_error(rc, "reading an account's postings");
    if (out.size() >= kLedgerRowsReadMax) {
      return Unexpected(ErrorCode::kOutOfRange, "ledger '" + path_ + "': " + shown(account) + " has more than " +
                                                    std::to_string(kLedgerRowsReadMax) + " postings in the span");
    }
    LedgerEntry e;
    if (Status s = read_entry_row(st.get(), e); !s) return corrupt(s.error().message);
    out.push_back(std::move(e));
  }
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
  Stmt st;
  int rc = sqlite3_prepare_v2(db_,
                              "INSERT INTO accounts (id, credit_limit_micros) VALUES (?1, ?2) "
                              "ON CONFLICT (id) DO UPDATE SET credit_limit_micros = excluded.credit_limit_micros",
                              -1, st.out(), nullptr);
  if (rc == SQLITE_OK) rc = bind_text(st.get(), 1, client_account);
  if (rc == SQLITE_OK) rc = sqlite3_bind_int64(st.get(), 2, credit_limit_micros);
  if (rc != SQLITE_OK) return sqlite_error(rc, "preparing a credit limit");
  rc = sqlite3_step(st.get());
  if (rc != SQLITE_DONE) return sqlite_error(rc, "writing a credit limit");
  return {};
}

Result<int64_t> LedgerStore::credit_limit(std::string_view client_account) {
  auto account = core::parse_account(client_account);
  if (!account || account->type != core::AccountType::kClient) {
    return Unexpected(ErrorCode::kInvalidArgument, shown(client_account) + " is not a client account (client:<id>)");
  }
  Stmt st;
  int rc = sqlite3_prepare_v2(db_, "SELECT credit_limit_micros FROM accounts WHERE id = ?1", -1, st.out(), nullptr);
  if (rc == SQLITE_OK) rc = bind_text(st.get(), 1, client_account);
  if (rc != SQLITE_OK) return sqlite_error(rc, "preparing a credit limit read");
  rc = sqlite3_step(st.get());
  if (rc == SQLITE_DONE) return int64_t{0};
  if (rc != SQLITE_ROW) return sqlite_error(rc, "reading a credit limit");
  int64_t limit = 0;
  if (!column_int(st.get(), 0, limit) || limit < 0 || limit > kCreditLimitMicrosMax) {
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
  IF_RETURN_IF_ERROR(exec("BEGIN", "starting a statement"));
  auto opening = balance_before(*account, from);
  auto entries = opening ? postings_for_account(*account, from, to) : Unexpected(opening.error());
  sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr);  // read only: nothing to lose
  if (!opening) return Unexpected(opening.error());
  if (!entries) return Unexpected(entries.error());
  return core::build_statement(owner_id, m, *opening, std::move(*entries));
}

Result<std::optional<PayoutBatch>> LedgerStore::read_batch(core::Month month) {
  const std::string period = core::month_text(month);
  Stmt st;
  int rc = sqlite3_prepare_v2(db_, "SELECT min_amount_micros, created_at, payouts FROM payout_batches WHERE period = ?1",
                              -1, st.out(), nullptr);
  if (rc == SQLITE_OK) rc = bind_text(st.get(), 1, period);
  if (rc != SQLITE_OK) return sqlite_error(rc, "preparing a payout batch read");
  rc = sqlite3_step(st.get());
  if (rc == SQLITE_DONE) return std::optional<PayoutBatch>();
  if (rc != SQLITE_ROW) return sqlite_error(rc, "reading a payout batch");
  PayoutBatch batch;
  batch.month = month;
  batch.batch_id = "payout:" + period;
  int64_t count = 0;
  const core::TimeMs end = core::month_start_ms(core::next_month(month));
  if (!column_int(st.get(), 0, batch.min_amount_micros) || batch.min_amount_micros < 0 ||
      batch.min_amount_micros > core::kAmountMicrosMax || !column_int(st.get(), 1, batch.created_at_ms) ||
      batch.created_at_ms != end || !column_int(st.get(), 2, count) || count < 0 ||
      count > static_cast<int64_t>(kPayoutBatchOwnersMax)) {
    return corrupt("payout batch " + period + ": a column is out of range");
  }
  Stmt txns;
  rc = sqlite3_prepare_v2(db_,
                          "SELECT id, kind, job_id, created_at FROM transactions WHERE id >= ?1 AND id < ?2 "
                          "ORDER BY id",
                          -1, txns.out(), nullptr);
  // Ids "payout:P:<owner>" sort between "payout:P:" and "payout:P;" (':' + 1).
  if (rc == SQLITE_OK) rc = bind_text(txns.get(), 1, batch.batch_id + ":");
  if (rc == SQLITE_OK) rc = bind_text(txns.get(), 2, batch.batch_id + ";");
  if (rc != SQLITE_OK) return sqlite_error(rc, "preparing a payout read");
  auto rows = read_transactions(txns.get());
  if (!rows) return Unexpected(rows.error());
  if (static_cast<int64_t>(rows->size()) != count) {
    return corrupt("payout batch " + period + " records " + std::to_string(count) + " payouts, the ledger holds " +
                   std::to_string(rows->size()));
  }
  for (const Transaction& t : *rows) {
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
  IF_RETURN_IF_ERROR(exec("BEGIN IMMEDIATE", "starting a payout batch"));
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
    {
      Stmt st;
      // Owner accounts are the names between "owner:" and "owner;" (':' + 1).
      int rc = sqlite3_prepare_v2(db_,
                                  "SELECT p.account, COUNT(*), SUM(p.amount), MIN(p.amount), MAX(p.amount), "
                                  "SUM(p.amount = 0) FROM postings p JOIN transactions t ON t.id = p.txn_id "
                                  "WHERE p.account >= 'owner:' AND p.account < 'owner;' AND t.created_at < ?1 "
                                  "GROUP BY p.account ORDER BY p.account",
                                  -1, st.out(), nullptr);
      if (rc == SQLITE_OK) rc = sqlite3_bind_int64(st.get(), 1, end);
      if (rc != SQLITE_OK) return sqlite_error(rc, "preparing owners' balances");
      for (;;) {
        rc = sqlite3_step(st.get());
        if (rc == SQLITE_DONE) break;
        if ((rc & 0xff) == SQLITE_ERROR) return corrupt(std::string("postings do not sum: ") + sqlite3_errmsg(db_));
        if (rc != SQLITE_ROW) return sqlite_error(rc, "reading owners' balances");
        std::string account;
        if (!column_text(st.get(), 0, core::kAccountBytesMax, account)) return corrupt("an owner account is not text");
        auto parsed = core::parse_account(account);
        if (!parsed || parsed->type != core::AccountType::kOwner) {
          return corrupt("posting account " + shown(account) + " is not an account");
        }
        Sums s;
        if (!read_sums(st.get(), 1, s)) return corrupt("account " + shown(account) + " has a posting that is not an amount");
        if (s.sum <= 0 || s.sum < min_amount_micros) continue;
        if (txns.size() >= kPayoutBatchOwnersMax) {
          return Unexpected(ErrorCode::kOutOfRange, "more than " + std::to_string(kPayoutBatchOwnersMax) +
                                                        " owners to pay in one batch");
        }
        auto txn = core::build_payout(core::month_text(*month), parsed->id, s.sum, end);
        if (!txn) return Unexpected(txn.error());  // a balance above 2^53 micros: kOutOfRange
        batch.payouts.push_back({parsed->id, s.sum, txn->id});
        txns.push_back(std::move(*txn));
      }
    }
    for (const Transaction& t : txns) {
      auto existing = read_transaction(t.id);
      if (!existing) return Unexpected(existing.error());
      if (existing->has_value()) {
        return corrupt("payout " + shown(t.id) + " exists without its batch " + batch.batch_id);
      }
      IF_RETURN_IF_ERROR(insert(t));
    }
    Stmt st;
    int rc = sqlite3_prepare_v2(db_,
                                "INSERT INTO payout_batches (period, min_amount_micros, created_at, payouts) "
                                "VALUES (?1, ?2, ?3, ?4)",
                                -1, st.out(), nullptr);
    if (rc == SQLITE_OK) rc = bind_text(st.get(), 1, core::month_text(*month));
    if (rc == SQLITE_OK) rc = sqlite3_bind_int64(st.get(), 2, min_amount_micros);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int64(st.get(), 3, end);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int64(st.get(), 4, static_cast<int64_t>(txns.size()));
    if (rc != SQLITE_OK) return sqlite_error(rc, "preparing a payout batch");
    rc = sqlite3_step(st.get());
    if (rc != SQLITE_DONE) return sqlite_error(rc, "writing a payout batch");
    return batch;
  };
  auto batch = run();
  if (!batch) {
    if (sqlite3_get_autocommit(db_) == 0) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    return batch;
  }
  if (Status s = exec(batch->posted_now ? "COMMIT" : "ROLLBACK", "committing a payout batch"); !s) {
    if (sqlite3_get_autocommit(db_) == 0) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    return Unexpected(s.error());
  }
  return batch;
}

Result<VerifySummary> LedgerStore::verify(const VerifyOptions& options) {
  // One read transaction: a consistent snapshot while writers carry on.
  IF_RETURN_IF_ERROR(exec("BEGIN", "starting a verify"));
  auto run = [&]() -> Result<VerifySummary> {
    VerifySummary summary;
    i128 total = 0;
    std::set<std::string> accounts;
    // job -> (client account, amount charged) of settlements and refunds.
    std::map<std::string, std::pair<std::string, int64_t>> settled;
    std::map<std::string, std::pair<std::string, int64_t>> refunded;
    std::map<std::string, int64_t> payouts_by_period;

    Stmt txns;
    int rc = sqlite3_prepare_v2(db_, "SELECT id, kind, job_id, created_at FROM transactions ORDER BY id", -1,
                                txns.out(), nullptr);
    if (rc != SQLITE_OK) return sqlite_error(rc, "preparing a verify");
    Stmt posts;
    rc = sqlite3_prepare_v2(db_,
                            "SELECT txn_id, seq, account, amount, kind, receipt_id FROM postings "
                            "ORDER BY txn_id, seq",
                            -1, posts.out(), nullptr);
    if (rc != SQLITE_OK) return sqlite_error(rc, "preparing a verify");

    // The postings cursor runs alongside the transactions, both by id.
    std::string post_txn;
    bool post_ready = false;
    auto advance = [&]() -> Status {
      const int prc = sqlite3_step(posts.get());
      if (prc == SQLITE_DONE) {
        post_ready = false;
        return {};
      }
      if (prc != SQLITE_ROW) return sqlite_error(prc, "reading postings");
      if (!column_text(posts.get(), 0, core::kTransactionIdBytesMax, post_txn)) {
        return corrupt("a posting's txn_id is not a transaction id");
      }
      post_ready = true;
      return {};
    };
    IF_RETURN_IF_ERROR(advance());

    for (;;) {
      rc = sqlite3_step(txns.get());
      if (rc == SQLITE_DONE) break;
      if (rc != SQLITE_ROW) return sqlite_error(rc, "reading transactions");
      Transaction t;
      if (Status s = read_transaction_row(txns.get(), 0, t); !s) return corrupt(s.error().message);
      if (post_ready && post_txn < t.id) {
        return corrupt("posting of " + shown(post_txn) + " belongs to no transaction");
      }
      while (post_ready && post_txn == t.id) {
        if (t.postings.size() >= core::kPostingsPerTransactionMax) {
          return corrupt("transaction " + shown(t.id) + " has more than " +
                         std::to_string(core::kPostingsPerTransactionMax) + " postings");
        }
        int64_t seq = 0;
        Posting p;
        if (Status s = read_posting_row(posts.get(), 1, t.id, seq, p); !s) return corrupt(s.error().message);
        if (seq != static_cast<int64_t>(t.postings.size())) {
          return corrupt("transaction " + shown(t.id) + ": posting seq " + std::to_string(seq) + " where " +
                         std::to_string(t.postings.size()) + " belongs (a posting is missing)");
        }
        t.postings.push_back(std::move(p));
        IF_RETURN_IF_ERROR(advance());
      }
      if (Status s = core::validate(t); !s) return corrupt(s.error().message);
      for (const Posting& p : t.postings) {
        total += p.amount_micros;
        accounts.insert(p.account);
        if (options.verified_receipt_ids && p.account.rfind(core::kOwnerAccountPrefix, 0) == 0 &&
            !p.receipt_id.empty() && options.verified_receipt_ids->count(p.receipt_id) == 0) {
          return corrupt("transaction " + shown(t.id) + " pays " + shown(p.account) + " on receipt " +
                         shown(p.receipt_id) + ", which is not a verified receipt");
        }
      }
      if (t.kind == core::kTransactionSettlement || t.kind == core::kTransactionRefund) {
        std::string client;
        int64_t amount = 0;
        for (const Posting& p : t.postings) {
          if (p.account.rfind(core::kClientAccountPrefix, 0) == 0) {
            if (!client.empty() && client != p.account) {
              return corrupt("transaction " + shown(t.id) + " moves money of two clients");
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
    }
    if (post_ready) return corrupt("posting of " + shown(post_txn) + " belongs to no transaction");
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

    Stmt limits;
    rc = sqlite3_prepare_v2(db_, "SELECT id, credit_limit_micros FROM accounts ORDER BY id", -1, limits.out(), nullptr);
    if (rc != SQLITE_OK) return sqlite_error(rc, "preparing credit limits");
    for (;;) {
      rc = sqlite3_step(limits.get());
      if (rc == SQLITE_DONE) break;
      if (rc != SQLITE_ROW) return sqlite_error(rc, "reading credit limits");
      std::string id;
      int64_t limit = 0;
      auto account = column_text(limits.get(), 0, core::kAccountBytesMax, id) ? core::parse_account(id)
                                                                                 : core::parse_account("");
      if (!account || account->type != core::AccountType::kClient) {
        return corrupt("accounts row " + shown(id) + " is not a client account");
      }
      if (!column_int(limits.get(), 1, limit) || limit < 0 || limit > kCreditLimitMicrosMax) {
        return corrupt("accounts row " + shown(id) + ": column credit_limit_micros is out of range");
      }
    }

    Stmt batches;
    rc = sqlite3_prepare_v2(db_, "SELECT period FROM payout_batches ORDER BY period", -1, batches.out(), nullptr);
    if (rc != SQLITE_OK) return sqlite_error(rc, "preparing payout batches");
    for (;;) {
      rc = sqlite3_step(batches.get());
      if (rc == SQLITE_DONE) break;
      if (rc != SQLITE_ROW) return sqlite_error(rc, "reading payout batches");
      std::string period;
      if (!column_text(batches.get(), 0, 7, period) || !core::parse_month(period)) {
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
  sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr);  // read only
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
