#include "core/scheduler.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace idlefleet::core {

namespace {

// The hard constraints, apart from the departure (handled with a fallback).
const char* hard_rejection(const PlacementRequest& r, const VehicleCandidate& v) {
  if (!v.eligible) return "not eligible under its owner's policy";
  if (v.busy) return "busy with another job";
  if (v.memory_free_bytes < r.model_bytes) return "the model does not fit in its free memory";
  if (!(v.accelerator_temp_c < v.accelerator_temp_limit_c)) return "accelerator at its temperature limit";
  if (!(v.wear_budget_left_fraction > 0.0)) return "wear budget used up";
  return nullptr;
}

double clamp01(double x) { return x < 0.0 ? 0.0 : (x > 1.0 ? 1.0 : x); }

}  // namespace

namespace {

// Judges every candidate in order: fn(candidate, reason or nullptr, score).
template <class Fn>
void judge(const PlacementRequest& request, std::span<const VehicleCandidate> candidates, TimeMs now,
           const PlacementWeights& weights, Fn&& fn) {
  const TimeMs needed_until = now + request.expected_duration_ms + request.departure_margin_ms;

  // Price range over the vehicles that pass the hard constraints, to scale
  // the energy term; and whether any of them covers the job.
  int64_t price_min = std::numeric_limits<int64_t>::max(), price_max = std::numeric_limits<int64_t>::min();
  bool any_covers = false;
  for (const VehicleCandidate& v : candidates) {
    if (hard_rejection(request, v) != nullptr) continue;
    price_min = std::min(price_min, v.energy_price_micros_per_kwh);
    price_max = std::max(price_max, v.energy_price_micros_per_kwh);
    any_covers = any_covers || v.departure_earliest >= needed_until;
  }
  // Without any vehicle that covers the job, only the longest-staying ones
  // may take it: the job will be preempted and continue elsewhere.
  TimeMs latest_departure = std::numeric_limits<TimeMs>::min();
  if (!any_covers) {
    for (const VehicleCandidate& v : candidates) {
      if (hard_rejection(request, v) == nullptr) latest_departure = std::max(latest_departure, v.departure_earliest);
    }
  }

  for (const VehicleCandidate& v : candidates) {
    if (const char* why = hard_rejection(request, v)) {
      fn(v, why, 0.0);
      continue;
    }
    const bool covers = v.departure_earliest >= needed_until;
    if (!any_covers && v.departure_earliest < latest_departure) {
      fn(v, "expected to leave sooner than another candidate", 0.0);
      continue;
    }
    if (any_covers && !covers) {
      fn(v, "expected to leave before the job would finish", 0.0);
      continue;
    }
    double score = 0.0;
    if (v.model_cached) score += weights.cached;
    if (covers) score += weights.covers_job;
    const double price_span = static_cast<double>(price_max - price_min);
    const double cheapness =
        price_span > 0.0 ? static_cast<double>(price_max - v.energy_price_micros_per_kwh) / price_span : 1.0;
    score += (request.batch ? weights.energy_batch : weights.energy) * cheapness;
    const double headroom = v.accelerator_temp_limit_c - v.accelerator_temp_c;
    score += weights.cool * clamp01(headroom / 40.0);  // 40 C below the limit counts as fully cool
    score += weights.wear * clamp01(v.wear_budget_left_fraction);
    const uint32_t tried = v.attempts_completed + v.attempts_lost;
    score += weights.record * (tried == 0 ? 1.0 : static_cast<double>(v.attempts_completed) / tried);
    score += weights.standing * clamp01(v.standing);
    fn(v, nullptr, score);
  }
}

}  // namespace

std::vector<PlacementVerdict> explain_placement(const PlacementRequest& request,
                                                std::span<const VehicleCandidate> candidates, TimeMs now,
                                                const PlacementWeights& weights) {
  std::vector<PlacementVerdict> verdicts;
  verdicts.reserve(candidates.size());
  judge(request, candidates, now, weights, [&](const VehicleCandidate& v, const char* why, double score) {
    PlacementVerdict verdict;
    verdict.vehicle_id = v.vehicle_id;
    verdict.acceptable = why == nullptr;
    if (why != nullptr) verdict.reason = why;
    verdict.score = score;
    verdicts.push_back(std::move(verdict));
  });
  std::stable_sort(verdicts.begin(), verdicts.end(), [](const PlacementVerdict& a, const PlacementVerdict& b) {
    if (a.acceptable != b.acceptable) return a.acceptable;
    if (a.score != b.score) return a.score > b.score;
    return a.vehicle_id < b.vehicle_id;
  });
  return verdicts;
}

// The first of explain_placement's order, without building it: the highest
// score among the acceptable, ties to the smallest id.
std::optional<Placement> place(const PlacementRequest& request, std::span<const VehicleCandidate> candidates,
                               TimeMs now, const PlacementWeights& weights) {
  const VehicleCandidate* best = nullptr;
  double best_score = 0.0;
  judge(request, candidates, now, weights, [&](const VehicleCandidate& v, const char* why, double score) {
    if (why != nullptr) return;
    if (best == nullptr || score > best_score || (score == best_score && v.vehicle_id < best->vehicle_id)) {
      best = &v;
      best_score = score;
    }
  });
  if (best == nullptr) return std::nullopt;
  const TimeMs needed_until = now + request.expected_duration_ms + request.departure_margin_ms;
  return Placement{best->vehicle_id, best_score, best->departure_earliest >= needed_until};
}

}  // namespace idlefleet::core
