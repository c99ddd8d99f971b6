// The simulator's report: one self-contained HTML5 page (inline CSS and SVG
// charts drawn here; no script, no external URL, font or image) describing a
// run: the scenario, the headline totals, the time series as charts in the
// fleet's local time, the owners' earnings, battery and chip wear, and a
// written answer to "100 million cars x 1 kW = 100 GW?" generated from this
// run's numbers and the sensitivity table (sim/sensitivity.h). What each
// chart shows and how the answer is worded: docs/simulator.md, "The report".
//
// Every scenario string is escaped. The page is a pure function of its
// arguments (no clock, no wall time), so the same run gives the same bytes.
//
// Thread-safety: pure functions.
#pragma once

#include <string>
#include <vector>

#include "sim/fleet_scale.h"
#include "sim/scenario.h"
#include "sim/sensitivity.h"
#include "sim/summary.h"

namespace idlefleet::sim {

// Bounds on what the report draws: a time series longer than this is shown
// as means over groups of bins; an earnings histogram as at most this many bars.
inline constexpr size_t kReportChartPointsMax = 1200;
inline constexpr size_t kReportHistogramBarsMax = 50;

// `sensitivity` may be empty (the runs were skipped: the page says so and how
// to get them). REQUIRES: `summary` is summarize(scenario, result).
std::string render_report(const Scenario& scenario, const FleetScaleResult& result, const SimSummary& summary,
                          const std::vector<SensitivityRow>& sensitivity);

// A fraction as the report prints it: "12.3%" ("0.04%" below 1%, "0%" at 0).
std::string format_percent(double fraction);

// Text safe in HTML content and attribute values (& < > " ' escaped).
std::string html_escape(std::string_view text);

}  // namespace idlefleet::sim
