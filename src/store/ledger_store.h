// LedgerStore: the double-entry ledger (core/ledger.h): transactions, their
// postings, clients' credit limits, payout batches; balances, statements and
// verification. In SQLite (`<data_dir>/ledger.sqlite3`) by default, or in
// PostgreSQL when opened on a postgresql:// URL: the logic is written once,
// over SqlDb (store/sql_db.h), in SQL both accept.
//
// Exactly once: post() writes a transaction and its postings in one database
// transaction, keyed by the transaction's id. Ids are deterministic
// (settle:<job_id>, refund:<job_id>, payout:<YYYY-MM>:<owner>), so a retry of
// the same settlement finds its own earlier write and returns false; the same
// id with other content is refused (kAlreadyExists) and nothing changes. Two
// partial UNIQUE indexes also allow one settlement and one refund per job.
// Writers are serialised (SqlDb::begin_write), so coordinators sharing one
// PostgreSQL ledger get the same answers as one coordinator would.
//
// Balances are sums of postings; nothing is stored twice, so they cannot
// disagree with the postings. A client spends its prepaid balance and then
// down to minus its credit limit (0 unless set): can_spend().
//
// Payouts: payout_batch("2026-01", min) pays every owner whose balance at the
// end of January (postings created before Feb 1 00:00 UTC) is at least `min`
// and positive: one transaction payout:2026-01:<owner> each, created at that
// instant (so it shows in February's statement), and a payout_batches row, all
// in one database transaction. A second call for the same month reads the
// batch back and posts nothing, whatever changed since.
//
// Durability: SQLite in WAL with synchronous=FULL: this is money. PostgreSQL:
// as durable as the server is configured (synchronous_commit on, the default).
//
// Schema (migrations as job_store.h: SQLite's `schema_version`, PostgreSQL's
// `idlefleet_schema` under store "ledger"; open() migrates and refuses a newer
// database, kUnsupported). PostgreSQL types where they differ after a slash;
// its text columns are COLLATE "C", so that ids and accounts sort as in SQLite:
//   transactions: id TEXT PRIMARY KEY | kind TEXT | job_id TEXT ('' for
//     deposits and payouts) | created_at INTEGER/BIGINT (TimeMs)
//     UNIQUE (job_id) WHERE kind = 'settlement'; likewise for 'refund'
//   postings: txn_id TEXT REFERENCES transactions | seq INTEGER/BIGINT (0, 1,
//     ...) | account TEXT | amount INTEGER/BIGINT (micros, non-zero) | kind TEXT |
//     receipt_id TEXT ('' for none); PRIMARY KEY (txn_id, seq); index by account
//   accounts: id TEXT PRIMARY KEY (client:<id>) | credit_limit_micros INTEGER/BIGINT
//   payout_batches: period TEXT PRIMARY KEY (YYYY-MM) | min_amount_micros
//     INTEGER/BIGINT | created_at INTEGER/BIGINT | payouts INTEGER/BIGINT (how
//     many transactions)
// Every text written is an id, account or kind that core::validate accepted
// (ASCII). Every row read is validated: a hand-edited or damaged database
// gives kCorrupt naming the row, never a crash. verify() checks all of it.
//
// Thread-safety: none, as KeyStore: one thread at a time. Separate processes
// may open the same ledger (the CLI while the coordinator runs): SQLite
// writers wait up to kLedgerBusyTimeoutMs for each other.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "common/result.h"
#include "core/ledger.h"
#include "core/time.h"
#include "store/sql_db.h"

namespace idlefleet::store {

inline constexpr std::string_view kLedgerFileName = "ledger.sqlite3";
inline constexpr int kLedgerSchemaVersion = 1;
inline constexpr int kLedgerBusyTimeoutMs = 5000;
// The most rows one call reads (a statement's postings, a job's transactions);
// beyond it kOutOfRange rather than unbounded memory.
inline constexpr size_t kLedgerRowsReadMax = 10'000'000;
inline constexpr int64_t kCreditLimitMicrosMax = core::kAmountMicrosMax;
inline constexpr size_t kPayoutBatchOwnersMax = 1'000'000;

struct AccountBalance {
  std::string account;
  int64_t balance_micros = 0;
  int64_t credit_limit_micros = 0;  // clients only; 0 otherwise
  bool operator==(const AccountBalance&) const = default;
};

struct Payout {
  std::string owner_id;
  int64_t amount_micros = 0;
  std::string transaction_id;  // payout:<period>:<owner_id>
  bool operator==(const Payout&) const = default;
};

struct PayoutBatch {
  core::Month month;
  std::string batch_id;  // payout:<YYYY-MM>
  int64_t min_amount_micros = 0;  // as given when the batch was made
  core::TimeMs created_at_ms = 0;  // the first instant after the month
  bool posted_now = false;  // false: this call read back an earlier batch
  std::vector<Payout> payouts;  // by owner id
};

// What verify() also checks when the caller knows it.
struct VerifyOptions {
  // Jobs the job store says finished: each must have exactly one settlement,
  // and no other job may have one.
  std::optional<std::vector<std::string>> finished_job_ids;
  // Receipts whose signatures were verified: every owner posting's receipt
  // must be one of them.
  std::optional<std::unordered_set<std::string>> verified_receipt_ids;
};

struct VerifySummary {
  uint64_t transactions = 0;
  uint64_t postings = 0;
  uint64_t accounts = 0;  // distinct accounts in postings
  int64_t total_micros = 0;  // the sum of every posting: zero
};

class LedgerStore {
 public:
  // Opens (creating if absent) the ledger at `location`: a SQLite path
  // (":memory:" for tests) or a postgresql:// URL. kCorrupt for a file that
  // is not SQLite, kIo (also for a server that cannot be reached),
  // kUnsupported for a newer schema.
  static Result<std::unique_ptr<LedgerStore>> open(const std::string& location);

  ~LedgerStore();
  LedgerStore(const LedgerStore&) = delete;
  LedgerStore& operator=(const LedgerStore&) = delete;

  // Writes `txn` (core::validate first: kInvalidArgument / kOutOfRange) with
  // all its postings or nothing. True if written; false if a transaction with
  // this id already holds the same kind, job and postings (a retry; the first
  // write's created_at stands, so a retry built later is still a retry);
  // kAlreadyExists if the id, or the job's one settlement or refund, holds
  // something else.
  Result<bool> post(const core::Transaction& txn);

  // The transaction with this id, or nullopt.
  Result<std::optional<core::Transaction>> transaction(std::string_view id);
  // A job's transactions (its settlement, a refund), by time then id.
  Result<std::vector<core::Transaction>> transactions_for_job(std::string_view job_id);

  // An account's balance: the sum of its postings (0 for an unknown one).
  // kInvalidArgument for a name that is no account.
  Result<int64_t> balance(std::string_view account);
  // Every account with a posting or a credit limit, by name.
  Result<std::vector<AccountBalance>> balances();
  // The account's postings created in [from_ms, to_ms), by time, id, seq.
  Result<std::vector<core::LedgerEntry>> postings_for_account(std::string_view account, core::TimeMs from_ms,
                                                              core::TimeMs to_ms);

  // A client's credit limit: how far below zero its balance may go.
  // kInvalidArgument for a non-client account, kOutOfRange beyond kCreditLimitMicrosMax.
  Status set_credit_limit(std::string_view client_account, int64_t credit_limit_micros);
  Result<int64_t> credit_limit(std::string_view client_account);
  // True if balance - micros >= -credit_limit.
  Result<bool> can_spend(std::string_view client_account, int64_t micros);

  // One owner's month (core::build_statement over the stored postings).
  Result<core::Statement> statement(std::string_view owner_id, int year, int month);

  // Pays owners for `period` ("YYYY-MM"), as above. kInvalidArgument for a
  // bad period or min, or while the month is not over at `now`.
  Result<PayoutBatch> payout_batch(std::string_view period, int64_t min_amount_micros, core::TimeMs now);

  // Checks every invariant over the whole file and returns the first one
  // broken (kCorrupt, the message names the row or transaction), in this
  // order: each transaction, by id (its row, its postings' rows and seqs,
  // core::validate, receipts against options); postings without a
  // transaction; the sum of everything; refunds against their settlements;
  // finished jobs against settlements; credit limit rows; payout batches.
  Result<VerifySummary> verify(const VerifyOptions& options = {});

  // What the ledger was opened on: the path, or the URL without its password.
  const std::string& location() const { return location_; }

 private:
  LedgerStore(std::string location, std::unique_ptr<SqlDb> db);
  Unexpected corrupt(const std::string& what) const;
  // Sum of an account's postings created before `before_ms`.
  Result<int64_t> balance_before(std::string_view account, core::TimeMs before_ms);
  Result<std::optional<core::Transaction>> read_transaction(std::string_view id);
  // The transactions `where` selects (SQL after FROM transactions t ... WHERE),
  // in `order` (t.* columns), with their postings.
  Result<std::vector<core::Transaction>> read_transactions(const std::string& where, const std::string& order,
                                                           std::span<const SqlValue> params);
  Status insert(const core::Transaction& txn);
  Result<std::optional<PayoutBatch>> read_batch(core::Month month);
  // Adds the credit limits to `by_name` and returns it all, by name.
  Result<std::vector<AccountBalance>> read_credit_limits(std::map<std::string, AccountBalance>& by_name);
  // One row of owners' sums (account, then the sums) into a payout, if owed.
  Status pay_owner(const SqlRow& r, core::Month month, int64_t min_amount_micros, core::TimeMs end,
                   PayoutBatch& batch, std::vector<core::Transaction>& txns) const;

  std::string location_;
  std::unique_ptr<SqlDb> db_;
};

// A statement as JSON: owner, month, opening/closing balances, totals by
// kind, counts and entries; amounts in micros and as decimal strings.
std::string statement_json(const core::Statement& statement);
// A statement as CSV: a header, one row per posting (date ISO-8601 UTC,
// transaction, job, receipt, kind, amount as units with 6 decimals), then a
// "total" row per kind and one for the net.
std::string statement_csv(const core::Statement& statement);
// A payout batch as CSV: owner,amount,batch_id,transaction_id; one row per owner.
std::string payout_csv(const PayoutBatch& batch);

}  // namespace idlefleet::store
