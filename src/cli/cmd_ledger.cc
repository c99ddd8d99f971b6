// `idlefleet ledger verify|balances|statement|payouts|deposit|credit-limit`:
// the money in <data_dir>/ledger.sqlite3 (store/ledger_store.h), the file the
// coordinator settles jobs into. Safe beside a running coordinator: SQLite's
// locks order the writers and every read is a consistent snapshot.
//
// The data directory is --data-dir, or the data_dir of --config FILE, or the
// coordinator's default (idlefleet-data), as `idlefleet admin`. Amounts are
// typed and printed as decimal units (12.50) and kept as integer micro-units.
//
//   verify          exit 0 with a summary, or exit 1 naming the first broken
//                   invariant (no ledger file at all is also exit 1).
//   balances        every account's balance (and a client's credit limit).
//   statement       one owner's month, as JSON or CSV.
//   payouts         pays every owner's balance at the end of a month that is
//                   over, once: run again, it posts nothing and prints the
//                   same CSV.
//   deposit         a client's prepayment; --ref makes a retry safe.
//   credit-limit    how far below zero a client's balance may go.
//
// Exit codes as every command: 2 for a usage error (a bad flag, a malformed
// amount, month or id), 1 for a runtime one.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <unordered_set>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/data_location.h"
#include "common/money.h"
#include "common/wall_clock.h"
#include "core/ledger.h"
#include "store/job_store.h"
#include "store/ledger_store.h"
#include "store/location.h"
#include "store/vehicle_store.h"

namespace idlefleet::cli {

namespace {

namespace fs = std::filesystem;

// Opens the ledger; `create` false refuses to make a new SQLite file (the
// readers). A PostgreSQL ledger is opened (and its tables made) either way.
std::unique_ptr<store::LedgerStore> open_ledger(const DataLocation& where, bool create) {
  const std::string path = store_location(where, store::kLedgerFileName);
  const bool postgres = store::is_postgres_url(path);
  if (!postgres && !create && !fs::exists(path)) {
    throw CommandError{"no ledger at " + path + " (nothing was ever posted there)"};
  }
  if (!postgres && create) {
    std::error_code ec;
    fs::create_directories(fs::path(path).parent_path(), ec);
  }
  auto ledger = store::LedgerStore::open(path);
  if (!ledger) throw CommandError{ledger.error().message};
  return std::move(*ledger);
}

// "key_..." or "client:key_..." -> "client:key_...".
std::string client_account_of(const std::string& text) {
  if (core::valid_account(text)) return text;
  auto account = core::client_account(text);
  return account ? *account : std::string();
}

std::string owner_id_of(const std::string& text) {
  return text.rfind(core::kOwnerAccountPrefix, 0) == 0 ? text.substr(core::kOwnerAccountPrefix.size()) : text;
}

CLI::Validator client_validator() {
  return CLI::Validator(
      [](std::string& v) -> std::string {
        auto account = core::parse_account(client_account_of(v));
        return account && account->type == core::AccountType::kClient
                   ? ""
                   : "'" + v.substr(0, 64) + "' is not a client id (an API key id like key_..., or anonymous)";
      },
      "ID");
}

CLI::Validator owner_validator() {
  return CLI::Validator(
      [](std::string& v) -> std::string {
        return core::valid_ledger_id(owner_id_of(v))
                   ? ""
                   : "'" + v.substr(0, 64) + "' is not an owner id (1-128 of letters, digits, '_', '.', '-')";
      },
      "OWNER");
}

CLI::Validator month_validator() {
  return CLI::Validator(
      [](std::string& v) -> std::string {
        auto m = core::parse_month(v);
        return m ? "" : m.error().message;
      },
      "YYYY-MM");
}

// An amount in units; `positive` refuses 0.
CLI::Validator money_validator(bool positive) {
  return CLI::Validator(
      [positive](std::string& v) -> std::string {
        auto micros = parse_money_micros(v, static_cast<uint64_t>(core::kAmountMicrosMax));
        if (!micros) return "'" + v.substr(0, 32) + "' is not an amount like 12 or 12.50 (at most 6 decimals)";
        if (positive && *micros == 0) return "the amount must be more than 0";
        return "";
      },
      "AMOUNT");
}

int64_t micros_of(const std::string& text) {
  return static_cast<int64_t>(*parse_money_micros(text, static_cast<uint64_t>(core::kAmountMicrosMax)));
}

// Writes `text` to `path` (through a temporary file and a rename, so a reader
// never sees half of it), or to stdout when `path` is empty.
void emit(const std::string& text, const std::string& path) {
  if (path.empty()) {
    std::fwrite(text.data(), 1, text.size(), stdout);
    return;
  }
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << text;
    out.flush();
    if (!out) throw CommandError{"cannot write " + tmp};
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) {
    fs::remove(tmp, ec);
    throw CommandError{"cannot write " + path};
  }
}

void verify(const DataLocation& where) {
  auto ledger = open_ledger(where, false);
  // With the coordinator's job and vehicle stores beside the ledger: every
  // job that finished done and has a metered receipt (or a settlement) is
  // settled exactly once, no other job is, and every owner posting names a
  // stored receipt (stored only once its signature verified).
  store::VerifyOptions options;
  const std::string jobs_path = store_location(where, "jobs.sqlite3");
  const std::string vehicles_path = store_location(where, "vehicles.sqlite3");
  auto present = [](const std::string& at) { return store::is_postgres_url(at) || fs::exists(at); };
  std::string checked = "";
  if (present(jobs_path) && present(vehicles_path)) {
    auto jobs = store::JobStore::open(jobs_path);
    if (!jobs) throw CommandError{jobs.error().message};
    auto vehicles = store::VehicleStore::open(vehicles_path);
    if (!vehicles) throw CommandError{vehicles.error().message};
    auto done = (*jobs)->done_job_ids();
    if (!done) throw CommandError{done.error().message};
    auto receipts = (*vehicles)->receipt_keys();
    if (!receipts) throw CommandError{receipts.error().message};
    std::unordered_set<std::string> metered_jobs, receipt_ids;
    for (const auto& k : *receipts) {
      receipt_ids.insert(core::receipt_id(k.job_id, k.attempt));
      if (k.metered) metered_jobs.insert(k.job_id);
    }
    std::vector<std::string> finished;
    for (const std::string& id : *done) {
      bool settled = false;
      if (metered_jobs.count(id) == 0) {
        auto txs = ledger->transactions_for_job(id);
        if (!txs) throw CommandError{txs.error().message};
        settled = !txs->empty();
      }
      if (metered_jobs.count(id) != 0 || settled) finished.push_back(id);
    }
    checked = ", " + std::to_string(finished.size()) + " finished jobs and " + std::to_string(receipt_ids.size()) +
              " receipts checked";
    options.finished_job_ids = std::move(finished);
    options.verified_receipt_ids = std::move(receipt_ids);
  }
  auto summary = ledger->verify(options);
  if (!summary) throw CommandError{"ledger broken: " + summary.error().message};
  std::printf("ledger ok: %llu transactions, %llu postings, %llu accounts, total %s%s (%s)\n",
              static_cast<unsigned long long>(summary->transactions),
              static_cast<unsigned long long>(summary->postings), static_cast<unsigned long long>(summary->accounts),
              format_money_fixed(summary->total_micros).c_str(), checked.c_str(), ledger->location().c_str());
}

void balances(const DataLocation& where, bool as_json) {
  auto ledger = open_ledger(where, false);
  auto all = ledger->balances();
  if (!all) throw CommandError{all.error().message};
  if (as_json) {
    nlohmann::json out = nlohmann::json::array();
    for (const store::AccountBalance& b : *all) {
      out.push_back({{"account", b.account},
                     {"balance", format_money_fixed(b.balance_micros)},
                     {"balance_micros", b.balance_micros},
                     {"credit_limit_micros", b.credit_limit_micros}});
    }
    std::printf("%s\n", out.dump(2).c_str());
    return;
  }
  std::printf("%-48s %24s %24s\n", "ACCOUNT", "BALANCE", "CREDIT_LIMIT");
  for (const store::AccountBalance& b : *all) {
    const bool client = b.account.rfind(core::kClientAccountPrefix, 0) == 0;
    std::printf("%-48s %24s %24s\n", b.account.c_str(), format_money_fixed(b.balance_micros).c_str(),
                client ? format_money_fixed(b.credit_limit_micros).c_str() : "-");
  }
}

struct StatementFlags {
  DataLocation where;
  std::string owner;
  std::string month;
  std::string format = "json";
  std::string output;
};

void statement(const StatementFlags& f) {
  auto ledger = open_ledger(f.where, false);
  const core::Month m = *core::parse_month(f.month);  // checked by the validator
  auto s = ledger->statement(owner_id_of(f.owner), m.year, m.month);
  if (!s) throw CommandError{s.error().message};
  emit(f.format == "csv" ? store::statement_csv(*s) : store::statement_json(*s), f.output);
}

struct PayoutFlags {
  DataLocation where;
  std::string month;
  std::string min = "0";
  std::string output;
};

void payouts(const PayoutFlags& f) {
  auto ledger = open_ledger(f.where, false);
  auto batch = ledger->payout_batch(f.month, micros_of(f.min), wall_clock_ms());
  if (!batch) throw CommandError{batch.error().message};
  emit(store::payout_csv(*batch), f.output);
  int64_t total = 0;
  for (const store::Payout& p : batch->payouts) total += p.amount_micros;
  if (batch->posted_now) {
    std::fprintf(stderr, "%s: posted %zu payouts, %s in all\n", batch->batch_id.c_str(), batch->payouts.size(),
                 format_money_fixed(total).c_str());
  } else {
    std::fprintf(stderr, "%s was already paid (%zu payouts, %s in all, least payout %s): nothing posted\n",
                 batch->batch_id.c_str(), batch->payouts.size(), format_money_fixed(total).c_str(),
                 format_money_fixed(batch->min_amount_micros).c_str());
  }
}

struct MoneyFlags {
  DataLocation where;
  std::string client;
  std::string amount;
  std::string reference;
};

void deposit(const MoneyFlags& f) {
  auto ledger = open_ledger(f.where, true);
  const std::string account = client_account_of(f.client);
  const core::TimeMs now = wall_clock_ms();
  // Without --ref, one deposit per client and millisecond.
  const std::string ref = !f.reference.empty() ? f.reference
                                               : account.substr(core::kClientAccountPrefix.size()) + ":" +
                                                     std::to_string(now);
  auto txn = core::build_deposit(ref, account, micros_of(f.amount), now);
  if (!txn) throw CommandError{txn.error().message};
  auto posted = ledger->post(*txn);
  if (!posted) throw CommandError{posted.error().message};
  auto balance = ledger->balance(account);
  if (!balance) throw CommandError{balance.error().message};
  std::printf("%s %s to %s (%s); balance %s\n", *posted ? "deposited" : "already deposited",
              format_money_fixed(txn->postings[1].amount_micros).c_str(), account.c_str(), txn->id.c_str(),
              format_money_fixed(*balance).c_str());
}

void credit_limit(const MoneyFlags& f) {
  auto ledger = open_ledger(f.where, true);
  const std::string account = client_account_of(f.client);
  if (Status s = ledger->set_credit_limit(account, micros_of(f.amount)); !s) throw CommandError{s.error().message};
  std::printf("credit limit of %s: %s\n", account.c_str(), format_money_fixed(micros_of(f.amount)).c_str());
}

}  // namespace

void add_ledger(CLI::App& app) {
  CLI::App* ledger = app.add_subcommand("ledger", "The money: verify, balances, statements, payouts, deposits");
  ledger->require_subcommand(1);

  auto v = std::make_shared<DataLocation>();
  CLI::App* verify_cmd = ledger->add_subcommand("verify", "Check every invariant; exit 1 naming the first broken one");
  add_data_location(*verify_cmd, *v);
  verify_cmd->callback([v] { verify(*v); });

  auto b = std::make_shared<DataLocation>();
  auto as_json = std::make_shared<bool>(false);
  CLI::App* balances_cmd = ledger->add_subcommand("balances", "Every account's balance");
  add_data_location(*balances_cmd, *b);
  balances_cmd->add_flag("--json", *as_json, "Print JSON instead of a table");
  balances_cmd->callback([b, as_json] { balances(*b, *as_json); });

  auto s = std::make_shared<StatementFlags>();
  CLI::App* statement_cmd = ledger->add_subcommand("statement", "One owner's month: every posting and the totals");
  add_data_location(*statement_cmd, s->where);
  statement_cmd->add_option("--owner", s->owner, "The owner's id")->required()->check(owner_validator());
  statement_cmd->add_option("--month", s->month, "The month, UTC (e.g. 2026-01)")->required()->check(month_validator());
  statement_cmd->add_option("--format", s->format, "json (default) or csv")->check(CLI::IsMember({"json", "csv"}));
  statement_cmd->add_option("-o,--output", s->output, "Write to this file instead of stdout");
  statement_cmd->callback([s] { statement(*s); });

  auto p = std::make_shared<PayoutFlags>();
  CLI::App* payouts_cmd = ledger->add_subcommand(
      "payouts", "Pay every owner's balance at the end of a month (once) and print the payout CSV");
  add_data_location(*payouts_cmd, p->where);
  payouts_cmd->add_option("--month", p->month, "The month, UTC, which must be over (e.g. 2026-01)")
      ->required()
      ->check(month_validator());
  payouts_cmd->add_option("--min", p->min, "Pay only balances of at least this amount (default: any above 0)")
      ->check(money_validator(false));
  payouts_cmd->add_option("-o,--output", p->output, "Write the CSV to this file instead of stdout");
  payouts_cmd->callback([p] { payouts(*p); });

  auto d = std::make_shared<MoneyFlags>();
  CLI::App* deposit_cmd = ledger->add_subcommand("deposit", "Record a client's prepayment");
  add_data_location(*deposit_cmd, d->where);
  deposit_cmd->add_option("--client", d->client, "The client: an API key id (key_...) or anonymous")
      ->required()
      ->check(client_validator());
  deposit_cmd->add_option("--amount", d->amount, "The amount in units (e.g. 12.50)")
      ->required()
      ->check(money_validator(true));
  deposit_cmd->add_option("--ref", d->reference,
                          "The payment's reference: the same reference twice records one deposit")
      ->check(CLI::Validator(
          [](std::string& r) -> std::string {
            return core::build_deposit(r, "client:anonymous", 1, 0)
                       ? ""
                       : "a reference is 1-224 of letters, digits, '_', '.', '-', ':', the first a letter or digit";
          },
          "REF"));
  deposit_cmd->callback([d] { deposit(*d); });

  auto c = std::make_shared<MoneyFlags>();
  CLI::App* credit_cmd = ledger->add_subcommand("credit-limit", "Set how far below zero a client's balance may go");
  add_data_location(*credit_cmd, c->where);
  credit_cmd->add_option("--client", c->client, "The client: an API key id (key_...) or anonymous")
      ->required()
      ->check(client_validator());
  credit_cmd->add_option("--amount", c->amount, "The limit in units (0: prepaid only)")
      ->required()
      ->check(money_validator(false));
  credit_cmd->callback([c] { credit_limit(*c); });
}

}  // namespace idlefleet::cli
