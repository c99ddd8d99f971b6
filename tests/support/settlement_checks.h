// What the integration tests check of the money after a run (issue [money]):
// every job settled exactly once, from the receipts of its attempts, each
// metered receipt's owner paid against it, and `idlefleet ledger verify`
// passing. Header-only: it needs the store, which only the integration
// tests link.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include "core/ledger.h"
#include "store/ledger_store.h"
#include "store/vehicle_store.h"
#include "support/process_util.h"

namespace idlefleet::testing {

struct SettlementSummary {
  size_t jobs_with_several_receipts = 0;  // resumed on another vehicle, each attempt signed for
  std::set<std::string> owners_paid;
};

// REQUIRES: the coordinator that wrote data_dir has stopped.
inline SettlementSummary expect_settled_once(const std::filesystem::path& data_dir,
                                             const std::vector<std::string>& job_ids) {
  SettlementSummary out;
  auto vehicles = store::VehicleStore::open((data_dir / "vehicles.sqlite3").string());
  EXPECT_TRUE(vehicles.has_value()) << vehicles.error().to_string();
  auto ledger = store::LedgerStore::open((data_dir / store::kLedgerFileName).string());
  EXPECT_TRUE(ledger.has_value()) << ledger.error().to_string();
  if (!vehicles || !ledger) return out;
  for (const std::string& job : job_ids) {
    EXPECT_FALSE(job.empty());
    auto receipts = (*vehicles)->receipts_for_job(job);
    EXPECT_TRUE(receipts.has_value()) << receipts.error().to_string();
    auto txs = (*ledger)->transactions_for_job(job);
    EXPECT_TRUE(txs.has_value()) << txs.error().to_string();
    if (!receipts || !txs) continue;
    EXPECT_FALSE(receipts->empty()) << "no receipt for " << job;
    out.jobs_with_several_receipts += receipts->size() >= 2;
    size_t metered = 0;  // an attempt stopped before any time passed has nothing to be paid for
    for (const store::StoredReceipt& r : *receipts) metered += r.receipt.energy_mwh > 0 || r.receipt.wear_micro_hours > 0;
    if (metered == 0) {
      EXPECT_TRUE(txs->empty()) << job << ": a free job with nothing metered owes nothing";
      continue;
    }
    EXPECT_EQ(txs->size(), 1u) << job << " settled " << txs->size() << " times";
    if (txs->size() != 1) continue;
    std::set<std::string> paid_receipts;
    for (const core::Posting& p : txs->front().postings) {
      if (p.account.rfind("owner:", 0) != 0) continue;
      EXPECT_GT(p.amount_micros, 0) << job;
      EXPECT_FALSE(p.receipt_id.empty()) << job;
      paid_receipts.insert(p.receipt_id);
      out.owners_paid.insert(p.account);
    }
    EXPECT_EQ(paid_receipts.size(), metered) << job;
  }
  const std::string verify = run_capture(std::string(IDLEFLEET_BINARY) + " ledger verify --data-dir " +
                                         shell_quote(data_dir.string()) + " 2>&1; echo rc=$?");
  EXPECT_NE(verify.find("rc=0"), std::string::npos) << verify;
  EXPECT_NE(verify.find("finished jobs and"), std::string::npos) << verify;  // the job store was checked too
  return out;
}

}  // namespace idlefleet::testing
