// The simulator's totals, sensitivity runs and HTML report (sim/summary.h,
// sim/sensitivity.h, sim/report.h): the totals follow their definitions on a
// result written by hand; the page is one self-contained HTML5 document with
// one SVG per chart, nothing external, every scenario string escaped, queue
// latency drawn only when the fidelity models it, and an answer whose figures
// and verbs follow the numbers; the sensitivity moves the way physics says on
// a small fleet; the same seed gives the same bytes for 1 and 2 threads; bad
// options and scenario copies are refused by name.
#include "sim/report.h"
#include "unit/sim/small_scenario.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "sim/fleet_scale.h"
#include "sim/sensitivity.h"
#include "sim/summary.h"

namespace idlefleet::sim::report_test {
namespace {

// A small valid scenario with a hostile description: two computer classes,
// one charger, a flat tariff, two policies (one opted out).
Scenario scenario() {
  Scenario s = small_scenario();
  s.name = "t.1_x-y";
  s.description = "Fleet <script>alert(\"x\")</script> & 'quotes' \"too\"";
  s.fleet.utc_offset_minutes = -300;
  s.start_ms += 300 * core::kMinuteMs;  // local midnight, as parse_scenario sets it
  s.computers[0].share = 0.5;
  ScenarioComputer small = s.computers[0];
  small.name = "small";
  small.power_kw = 0.2;
  small.tokens_per_second = {{"llama-8b", 10.0}};
  s.computers.push_back(small);
  s.policies[0].name = "in";
  s.policies[0].share = 0.8;
  ScenarioPolicy out = s.policies[0];
  out.name = "out";
  out.share = 0.2;
  out.policy.opted_in = false;
  s.policies.push_back(out);
  // Demand above what the fleet serves at its peak, so batteries drain.
  s.demand.interactive_peak_tokens_per_second = 2e5;
  s.demand.batch_tokens_per_day = 2e9;
  return s;
}

FleetScaleOptions options(uint64_t vehicles, int days, int threads) {
  FleetScaleOptions o;
  o.vehicles = vehicles;
  o.days = days;
  o.threads = threads;
  o.shard_vehicles = 1000;
  return o;
}

size_t occurrences(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

std::string section(const std::string& page, const std::string& id) {
  const size_t start = page.find("<section id=\"" + id + "\"");
  if (start == std::string::npos) return {};
  return page.substr(start, page.find("</section>", start) - start);
}

// The charts of a fleet-scale report: vehicles, compute, tokens, backlog,
// preemptions, redone, energy, cost, earnings, battery, chip.
constexpr size_t kChartsFleetScale = 11;

TEST(Summary, FollowsItsDefinitionsOnAResultWrittenByHand) {
  const Scenario s = scenario();  // computers 50% x 1 kW + 50% x 0.2 kW: 0.6 kW a vehicle
  FleetScaleResult r;
  r.fidelity = "detailed";
  r.vehicles = 1000;
  r.days = 1;
  r.bin_minutes = 720;
  r.bins.resize(2);
  r.bins[0].compute_available_gw = 0.0003;
  r.bins[1].compute_available_gw = 0.0001;
  r.bins[0].compute_used_gw = 0.0001;
  r.bins[0].interactive_tps = 10.0;
  r.bins[1].batch_tps = 5.0;
  r.bins[0].battery_kwh = 10.0;
  r.bins[1].battery_kwh = 20.0;
  r.bins[0].wear_hours = 4.0;
  r.bins[1].wear_hours = 6.0;
  r.bins[0].interactive_jobs_started = 10;
  r.bins[0].interactive_wait_ms_mean = 100.0;
  r.bins[0].interactive_wait_ms_p95 = 400.0;
  r.bins[1].interactive_jobs_started = 30;
  r.bins[1].interactive_wait_ms_mean = 200.0;
  r.bins[1].interactive_wait_ms_p95 = 300.0;
  const SimSummary sum = summarize(s, r);
  EXPECT_DOUBLE_EQ(sum.nameplate_kw_per_vehicle, 0.6);
  EXPECT_DOUBLE_EQ(sum.nameplate_gw, 0.0006);
  EXPECT_DOUBLE_EQ(sum.compute_available_gw_mean, 0.0002);
  EXPECT_DOUBLE_EQ(sum.compute_available_gw_peak, 0.0003);
  EXPECT_DOUBLE_EQ(sum.capacity_factor, 1.0 / 3.0);
  EXPECT_DOUBLE_EQ(sum.used_factor, 0.00005 / 0.0006);
  EXPECT_DOUBLE_EQ(sum.tokens_interactive, 10.0 * 720 * 60);
  EXPECT_DOUBLE_EQ(sum.tokens_per_vehicle_day, 15.0 * 720 * 60 / 1000);
  // 30 kWh over 1000 batteries of 75 kWh in one day, times 30 days.
  EXPECT_DOUBLE_EQ(sum.battery_cycles_per_vehicle_month, 30.0 / (1000 * 75.0) * 30.0);
  EXPECT_DOUBLE_EQ(sum.chip_hours_per_vehicle_month, 10.0 / 1000 * 30.0);
  EXPECT_TRUE(sum.interactive_wait_modelled);
  EXPECT_EQ(sum.interactive_jobs_started, 40u);
  EXPECT_DOUBLE_EQ(sum.interactive_wait_ms_mean, (10 * 100.0 + 30 * 200.0) / 40);
  EXPECT_DOUBLE_EQ(sum.interactive_wait_ms_p95_max, 400.0);
  r.fidelity = "fleet-scale";
  EXPECT_FALSE(summarize(s, r).interactive_wait_modelled);
}

TEST(Report, IsOneSelfContainedPageWithEveryChartAndEveryStringEscaped) {
  const Scenario s = scenario();
  auto r = run_fleet_scale(s, options(3000, 2, 2));
  ASSERT_TRUE(r.has_value()) << r.error().to_string();
  const SimSummary sum = summarize(s, *r);
  ASSERT_GT(sum.capacity_factor, 0.0);
  const std::string page = render_report(s, *r, sum, {});

  EXPECT_EQ(page.rfind("<!doctype html>\n", 0), 0u);
  EXPECT_NE(page.find("</html>\n"), std::string::npos);
  EXPECT_EQ(occurrences(page, "<svg"), kChartsFleetScale);
  EXPECT_EQ(occurrences(page, "</svg>"), kChartsFleetScale);
  // Nothing external and nothing executable.
  for (const char* banned : {"http://", "https://", "src=", "href=", "url(", "@import", "<script", "<img", "<link"}) {
    EXPECT_EQ(page.find(banned), std::string::npos) << banned;
  }
  // The description, escaped (and the name as given).
  EXPECT_NE(page.find("Fleet &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;quotes&#39; &quot;too&quot;"),
            std::string::npos);
  EXPECT_NE(page.find("<title>idlefleet sim: t.1_x-y</title>"), std::string::npos);
  // Local time on the axes: the run starts Sunday 1 Nov 2026 in UTC-05:00.
  EXPECT_NE(page.find(">Sun 1 Nov<"), std::string::npos);
  EXPECT_NE(page.find(">Mon 2 Nov<"), std::string::npos);
  EXPECT_NE(page.find("local time (UTC-05:00)"), std::string::npos);
  // Fleet scale has no queue: said, not drawn as zeros.
  EXPECT_NE(section(page, "latency").find("not modelled at this fidelity"), std::string::npos);
  // The opted-out spike is named with the policies' share.
  EXPECT_NE(section(page, "earnings").find("the 20.0% of the fleet whose owners opted out"), std::string::npos);
  // The answer: present, with this run's capacity factor, and the skipped sensitivity explained.
  const std::string answer = section(page, "answer");
  ASSERT_FALSE(answer.empty());
  EXPECT_NE(answer.find("100 million cars &#215; 1 kW = 100 GW?"), std::string::npos);
  EXPECT_NE(answer.find("This run's 3,000 vehicles"), std::string::npos) << answer;
  EXPECT_NE(answer.find("capacity factor " + format_percent(sum.capacity_factor)), std::string::npos)
      << format_percent(sum.capacity_factor) << "\n" << answer;
  EXPECT_NE(answer.find("--no-sensitivity"), std::string::npos);
  EXPECT_NE(answer.find("were skipped"), std::string::npos);
  // The scaled figure is the capacity factor times 100 GW.
  char scaled[64];
  std::snprintf(scaled, sizeof scaled, "%.3g GW available on average", 100.0 * sum.capacity_factor);
  EXPECT_NE(answer.find(scaled), std::string::npos) << answer;
}

TEST(Report, DrawsQueueLatencyWhenTheFidelityModelsIt) {
  const Scenario s = scenario();
  auto r = run_fleet_scale(s, options(1000, 1, 1));
  ASSERT_TRUE(r.has_value()) << r.error().to_string();
  FleetScaleResult detailed = *r;
  detailed.fidelity = "detailed";
  for (FleetBin& b : detailed.bins) {
    b.interactive_jobs_started = 4;
    b.interactive_wait_ms_mean = 120.0;
    b.interactive_wait_ms_p95 = 480.0;
  }
  const std::string page = render_report(s, detailed, summarize(s, detailed), {});
  EXPECT_EQ(occurrences(page, "<svg"), kChartsFleetScale + 1);
  const std::string latency = section(page, "latency");
  EXPECT_NE(latency.find("<svg"), std::string::npos);
  EXPECT_EQ(latency.find("not modelled"), std::string::npos);
  EXPECT_NE(latency.find("mean 120 ms"), std::string::npos) << latency;
  EXPECT_NE(latency.find("p95 480 ms"), std::string::npos) << latency;
}

TEST(Report, TheAnswersVerbsFollowTheSensitivityNumbers) {
  const Scenario s = scenario();
  auto r = run_fleet_scale(s, options(1000, 1, 1));
  ASSERT_TRUE(r.has_value()) << r.error().to_string();
  auto row = [](const char* knob, const char* value, bool base, double cf, double used, double tokens) {
    SensitivityRow x;
    x.knob = knob;
    x.value = value;
    x.base = base;
    x.vehicles = 1000;
    x.days = 1;
    x.capacity_factor = cf;
    x.used_factor = used;
    x.tokens_per_vehicle_day = tokens;
    return x;
  };
  const std::vector<SensitivityRow> rows = {
      row("fleet.home_charging_share", "0.3", false, 0.10, 0.05, 1000),
      row("fleet.home_charging_share", "scenario (0.6)", true, 0.15, 0.05, 1000),
      row("fleet.home_charging_share", "0.9", false, 0.20, 0.05, 1005),
      row("policies.soc_floor_pct", "10", false, 0.30, 0.08, 3000),
      row("policies.soc_floor_pct", "scenario (30)", true, 0.15, 0.05, 1000),
      row("policies.soc_floor_pct", "50", false, 0.10, 0.04, 900),
  };
  const std::string answer = section(render_report(s, *r, summarize(s, *r), rows), "answer");
  EXPECT_NE(answer.find("home-charging share from 0.3 to 0.9, the capacity factor rises (10.0% to 20.0%; the "
                        "scenario's own setting gives 15.0%), the used share of nameplate barely changes (5.0% to "
                        "5.0%) and tokens delivered per vehicle-day barely changes"),
            std::string::npos)
      << answer;
  EXPECT_NE(answer.find("SoC floor (every policy, %) from 10 to 50, the capacity factor falls (30.0% to 10.0%"),
            std::string::npos)
      << answer;
  EXPECT_NE(answer.find("tokens delivered per vehicle-day falls"), std::string::npos) << answer;
  EXPECT_EQ(answer.find("were skipped"), std::string::npos);
  EXPECT_EQ(occurrences(answer, "<tr>"), 1 + rows.size());
}

TEST(Sensitivity, MovesTheWayPhysicsSaysAndIsTheSameForAnyThreadCount) {
  Scenario s = scenario();
  s.policies[1].policy.soc_floor_pct = 45.0;  // opted out: not the scenario's floor in the table
  SensitivityOptions o;
  o.vehicles_max = 4000;
  o.days = 2;
  o.threads = 1;
  std::vector<double> fractions;
  o.progress = [&fractions](double f) { fractions.push_back(f); };
  auto one = run_sensitivity(s, o);
  ASSERT_TRUE(one.has_value()) << one.error().to_string();
  ASSERT_EQ(one->size(), 12u);
  EXPECT_EQ(fractions.size(), 9u);
  EXPECT_DOUBLE_EQ(fractions.back(), 1.0);
  EXPECT_TRUE(std::is_sorted(fractions.begin(), fractions.end()));
  o.threads = 2;
  o.progress = nullptr;
  auto two = run_sensitivity(s, o);
  ASSERT_TRUE(two.has_value()) << two.error().to_string();
  ASSERT_EQ(two->size(), one->size());
  for (size_t k = 0; k < one->size(); ++k) {
    EXPECT_EQ((*one)[k].knob, (*two)[k].knob);
    EXPECT_EQ((*one)[k].value, (*two)[k].value);
    EXPECT_EQ((*one)[k].capacity_factor, (*two)[k].capacity_factor);  // bitwise
    EXPECT_EQ((*one)[k].tokens_per_vehicle_day, (*two)[k].tokens_per_vehicle_day);
    EXPECT_EQ((*one)[k].vehicles, 4000u);
    EXPECT_EQ((*one)[k].days, 2);
  }
  const auto& rows = *one;
  // Rows: knob by knob, low, base, high.
  EXPECT_EQ(rows[0].knob, "fleet.home_charging_share");
  EXPECT_EQ(rows[0].value, "0.3");
  EXPECT_EQ(rows[1].value, "scenario (0.6)");
  EXPECT_TRUE(rows[1].base);
  EXPECT_EQ(rows[2].value, "0.9");
  EXPECT_EQ(rows[4].value, "scenario (30)");
  EXPECT_EQ(rows[7].value, "scenario (30)");
  EXPECT_EQ(rows[9].value, "x0.5");
  EXPECT_EQ(rows[11].value, "x2");
  // The base run is the same in every knob's rows.
  for (const size_t k : {4u, 7u, 10u}) EXPECT_EQ(rows[k].capacity_factor, rows[1].capacity_factor);
  // More home charging: at least as much available.
  EXPECT_LE(rows[0].capacity_factor, rows[1].capacity_factor);
  EXPECT_LE(rows[1].capacity_factor, rows[2].capacity_factor);
  EXPECT_LT(rows[0].capacity_factor, rows[2].capacity_factor);
  // A higher SoC floor: not more.
  EXPECT_GE(rows[3].capacity_factor, rows[4].capacity_factor);
  EXPECT_GE(rows[4].capacity_factor, rows[5].capacity_factor);
  EXPECT_GT(rows[3].capacity_factor, rows[5].capacity_factor);
  // A longer departure margin: not more.
  EXPECT_GE(rows[6].capacity_factor, rows[7].capacity_factor);
  EXPECT_GE(rows[7].capacity_factor, rows[8].capacity_factor);
  EXPECT_GT(rows[6].capacity_factor, rows[8].capacity_factor);
  // More demand: at least as much work.
  EXPECT_LE(rows[9].used_factor, rows[10].used_factor);
  EXPECT_LE(rows[10].used_factor, rows[11].used_factor);
  EXPECT_LE(rows[9].tokens_per_vehicle_day, rows[11].tokens_per_vehicle_day);
}

TEST(Sensitivity, GivesTheSmallerFleetTheMainRunsDemandPerVehicle) {
  Scenario s = scenario();
  s.fleet.vehicles = 40'000;
  SensitivityOptions o;
  o.vehicles_max = 2000;
  o.days = 1;
  auto as_written = run_sensitivity(s, o);  // the demand is for 40,000 vehicles: a twentieth of it
  ASSERT_TRUE(as_written.has_value()) << as_written.error().to_string();
  o.demand_vehicles = 2000;  // the main run had 2000 vehicles: all of it
  auto all = run_sensitivity(s, o);
  ASSERT_TRUE(all.has_value()) << all.error().to_string();
  EXPECT_EQ((*as_written)[1].vehicles, 2000u);
  EXPECT_LT((*as_written)[1].used_factor, (*all)[1].used_factor);
  EXPECT_LT((*as_written)[1].tokens_per_vehicle_day, (*all)[1].tokens_per_vehicle_day);
  // The scenario itself: the same demand over 2000 vehicles as a main run of 2000.
  FleetScaleOptions run = options(2000, 1, 1);
  run.shard_vehicles = kFleetShardVehicles;
  auto r = run_fleet_scale(s, run);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(summarize(s, *r).tokens_per_vehicle_day, (*all)[1].tokens_per_vehicle_day);
}

TEST(Report, TheSameSeedGivesTheSameBytesForOneAndTwoThreads) {
  const Scenario s = scenario();
  std::string pages[2];
  for (int threads = 1; threads <= 2; ++threads) {
    auto r = run_fleet_scale(s, options(3000, 2, threads));
    ASSERT_TRUE(r.has_value()) << r.error().to_string();
    SensitivityOptions o;
    o.vehicles_max = 2000;
    o.days = 1;
    o.threads = threads;
    auto rows = run_sensitivity(s, o);
    ASSERT_TRUE(rows.has_value()) << rows.error().to_string();
    pages[threads - 1] = render_report(s, *r, summarize(s, *r), *rows);
  }
  EXPECT_EQ(pages[0], pages[1]);
  EXPECT_EQ(occurrences(pages[0], "<svg"), kChartsFleetScale);
  // And another seed gives another page.
  FleetScaleOptions other = options(3000, 2, 2);
  other.seed = 5;
  auto r = run_fleet_scale(s, other);
  ASSERT_TRUE(r.has_value());
  EXPECT_NE(render_report(s, *r, summarize(s, *r), {}), pages[0]);
}

TEST(Sensitivity, RefusesBadOptionsAndInvalidCopiesByName) {
  Scenario s = scenario();
  SensitivityOptions o;
  o.vehicles_max = 0;
  auto e = run_sensitivity(s, o);
  ASSERT_FALSE(e.has_value());
  EXPECT_NE(e.error().message.find("sensitivity vehicles 0"), std::string::npos) << e.error().message;
  o.vehicles_max = 1000;
  o.days = 0;
  e = run_sensitivity(s, o);
  ASSERT_FALSE(e.has_value());
  EXPECT_NE(e.error().message.find("sensitivity days 0"), std::string::npos) << e.error().message;
  o.days = 1;
  o.threads = 0;
  e = run_sensitivity(s, o);
  ASSERT_FALSE(e.has_value());
  EXPECT_NE(e.error().message.find("sensitivity threads 0"), std::string::npos) << e.error().message;
  o.threads = 1;
  o.demand_vehicles = 0;
  e = run_sensitivity(s, o);
  ASSERT_FALSE(e.has_value());
  EXPECT_NE(e.error().message.find("sensitivity demand_vehicles 0"), std::string::npos) << e.error().message;
  o.demand_vehicles.reset();
  o.bin_minutes = 7;  // does not divide a day
  e = run_sensitivity(s, o);
  ASSERT_FALSE(e.has_value());
  EXPECT_NE(e.error().message.find("bin_minutes"), std::string::npos) << e.error().message;
  o.bin_minutes = 15;
  // A scenario at the demand bound: doubling it is out of range, and said so.
  s.demand.interactive_peak_tokens_per_second = 1e13;
  s.fleet.vehicles = 1000;  // the runs' own size: demand not scaled down
  e = run_sensitivity(s, o);
  ASSERT_FALSE(e.has_value());
  EXPECT_NE(e.error().message.find("sensitivity demand = x2: demand.interactive_peak_tokens_per_second"),
            std::string::npos)
      << e.error().message;
  // An invalid scenario is refused before any run.
  s = scenario();
  s.fleet.home_charging_share = 1.5;
  e = run_sensitivity(s, o);
  ASSERT_FALSE(e.has_value());
  EXPECT_NE(e.error().message.find("home_charging_share"), std::string::npos) << e.error().message;
}

TEST(Report, AFleetThatNeverWorksIsAnsweredAsSuch) {
  Scenario s = scenario();
  s.policies[0].policy.opted_in = false;
  auto r = run_fleet_scale(s, options(1000, 1, 1));
  ASSERT_TRUE(r.has_value()) << r.error().to_string();
  const SimSummary sum = summarize(s, *r);
  EXPECT_EQ(sum.capacity_factor, 0.0);
  const std::string page = render_report(s, *r, sum, {});
  const std::string answer = section(page, "answer");
  EXPECT_NE(answer.find("capacity factor 0%"), std::string::npos) << answer;
  EXPECT_NE(answer.find("No vehicle was ever available"), std::string::npos) << answer;
  EXPECT_EQ(answer.find("times what such a fleet offers"), std::string::npos) << answer;
  // Every owner at 0: the earnings section says all of them are in the first bar.
  EXPECT_NE(section(page, "earnings").find("holds 100.0% of owners, among them the 100.0% of the fleet whose owners opted out"),
            std::string::npos)
      << section(page, "earnings");
  EXPECT_EQ(occurrences(page, "<svg"), kChartsFleetScale);
}

TEST(Report, FormatsPercentAndEscapes) {
  EXPECT_EQ(format_percent(0.0), "0%");
  EXPECT_EQ(format_percent(0.1234), "12.3%");
  EXPECT_EQ(format_percent(0.00042), "0.04%");
  EXPECT_EQ(html_escape("a<b>&\"c'"), "a&lt;b&gt;&amp;&quot;c&#39;");
}

}  // namespace
}  // namespace idlefleet::sim::report_test
