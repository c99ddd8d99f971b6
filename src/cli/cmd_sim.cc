// `idlefleet sim month`: one typical vehicle over a calendar month, simulated
// with the project's own car model, agent policy and ledger settlement
// (sim/vehicle_month.h): the hours it works, the energy it uses and what that
// costs, the wear on its chip, and what its owner earns. docs/earnings.md
// shows a run and the assumptions. Offline: no server, no model file.
//
// Exit codes as every command: 2 for a usage error (a bad flag or value), 1
// for a runtime one.
#include <cmath>
#include <cstdio>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "common/money.h"
#include "core/energy.h"
#include "core/ledger.h"
#include "core/policy.h"
#include "sim/vehicle_month.h"

namespace idlefleet::cli {

namespace {

using nlohmann::json;

constexpr uint64_t kPriceMicrosMax = sim::kMonthPriceMicrosPerMtokMax;
constexpr uint64_t kTariffMicrosMax = 100'000'000;  // 100 a kWh

std::optional<uint64_t> money(const std::string& text, uint64_t max) { return parse_money_micros(text, max); }

CLI::Validator money_validator(uint64_t max, const char* what) {
  return CLI::Validator(
      [max, what](std::string& v) -> std::string {
        return money(v, max) ? "" : "'" + v.substr(0, 32) + "' is not " + what;
      },
      "AMOUNT");
}

// "0.25" (flat) or "00:00=0.12,07:00=0.30,23:00=0.12" (time of use, every day).
std::optional<core::Tariff> parse_tariff(const std::string& text, std::string* why) {
  if (text.find('=') == std::string::npos) {
    auto flat = money(text, kTariffMicrosMax);
    if (!flat) {
      *why = "'" + text.substr(0, 32) + "' is not a price per kWh like 0.25, nor a time-of-use list like "
             "00:00=0.12,07:00=0.30";
      return std::nullopt;
    }
    return core::Tariff::flat(static_cast<int64_t>(*flat));
  }
  std::vector<core::TariffEntry> entries;
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, ',');) {
    int h = -1, m = -1;
    char price[40] = {0};
    if (item.size() > 30 || std::sscanf(item.c_str(), "%2d:%2d=%39s", &h, &m, price) != 3 || h < 0 || h > 23 ||
        m < 0 || m > 59 || item[2] != ':') {
      *why = "'" + item.substr(0, 32) + "' is not HH:MM=PRICE";
      return std::nullopt;
    }
    auto p = money(price, kTariffMicrosMax);
    if (!p) {
      *why = "'" + std::string(price) + "' is not a price per kWh like 0.25";
      return std::nullopt;
    }
    entries.push_back({h * 60 + m, static_cast<int64_t>(*p)});
  }
  core::Tariff t = core::Tariff::time_of_use(entries, entries);
  if (auto st = t.validate(); !st) {
    *why = st.error().message;
    return std::nullopt;
  }
  return t;
}

struct SimMonthFlags {
  std::string month = "2026-11";
  int days = 0;  // 0: the whole month
  uint64_t seed = 1;
  int utc_offset_minutes = 0;
  std::string accelerator = "orin";
  double tokens_per_second = 30.0;
  uint64_t prompt_tokens = 500;
  uint64_t completion_tokens = 500;
  std::string price_in = "0.20";
  std::string price_out = "0.60";
  double owner_share_pct = 60.0;
  std::string tariff = "0.25";
  std::string wear_allowance = "0.05";
  double soc_floor_pct = 30.0;
  double target_soc_pct = 80.0;
  double temp_limit_c = 85.0;
  double wear_budget_hours = 300.0;
  double plug_in_probability = 0.8;
  bool no_home_charger = false;
  std::string format = "text";
};

std::string units(int64_t micros) { return format_money_fixed(micros); }

// For people: 2 decimals.
std::string cents(int64_t micros) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%10.2f", static_cast<double>(micros) / 1e6);
  return buf;
}

json totals_json(const sim::MonthTotals& t) {
  return {{"hours_driving", t.hours_driving},
          {"hours_parked", t.hours_parked},
          {"hours_plugged_in", t.hours_plugged},
          {"hours_eligible", t.hours_eligible},
          {"hours_serving", t.hours_serving},
          {"jobs_done", t.jobs_done},
          {"attempts_preempted", t.attempts_preempted},
          {"tokens_in", t.tokens_in},
          {"tokens_out", t.tokens_out},
          {"energy_kwh", t.energy_kwh},
          {"energy_cost", units(t.energy_cost_micros)},
          {"wear_weighted_hours", t.wear_hours},
          {"clients_paid", units(t.client_paid_micros)},
          {"revenue_share", units(t.revenue_share_micros)},
          {"energy_refund", units(t.energy_refund_micros)},
          {"wear_allowance", units(t.wear_allowance_micros)},
          {"paid_to_owner", units(t.paid_micros())},
          {"net_after_electricity", units(t.net_micros())}};
}

std::string fixed(double v, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

std::string text_report(const SimMonthFlags& f, const sim::VehicleMonthParams& p, const sim::VehicleMonthResult& r) {
  const sim::MonthTotals& t = r.total;
  const double total_h = static_cast<double>(p.days) * 24.0;
  auto row = [&](const char* name, double h) {
    char buf[128];
    std::snprintf(buf, sizeof buf, "  %-22s %8.1f h  %5.1f%%\n", name, h, 100.0 * h / total_h);
    return std::string(buf);
  };
  std::string s;
  s += "One simulated vehicle, " + f.month + " (" + std::to_string(p.days) + " days), seed " +
       std::to_string(f.seed) + "\n";
  s += "  car: " + fixed(p.vehicle.battery.capacity_kwh, 0) + " kWh battery, " +
       (p.vehicle.home_charger ? fixed(p.vehicle.charger_power_kw, 1) + " kW home charger, plugged in on " +
                                     fixed(100.0 * p.vehicle.plug_in_probability, 0) + "% of arrivals"
                               : std::string("no home charger")) +
       ", " + f.accelerator + "-class computer (" + fixed(p.vehicle.accelerator.max_w, 0) + " W at full load)\n";
  s += "  owner: SoC floor " + fixed(p.policy.soc_floor_pct, 0) + "%, " + fixed(p.policy.target_soc_pct, 0) +
       "% by each departure, chip below " + fixed(p.policy.accelerator_temp_limit_c, 0) + " C, wear budget " +
       fixed(p.policy.wear_budget_hours_per_month, 0) + " h a month, tariff " + f.tariff + " a kWh\n";
  s += "  work: always some waiting (a batch backlog); " + std::to_string(p.prompt_tokens) + "+" +
       std::to_string(p.completion_tokens) + "-token jobs at " + fixed(p.tokens_per_second, 0) +
       " tokens/s; clients pay " + f.price_in + " / " + f.price_out + " a million tokens in / out; owners' share " +
       fixed(f.owner_share_pct, 0) + "%\n\n";
  s += "Time\n";
  s += row("driving", t.hours_driving);
  s += row("parked", t.hours_parked);
  s += row("  plugged in", t.hours_plugged);
  s += row("  eligible to work", t.hours_eligible);
  s += row("  working", t.hours_serving);
  s += "  " + std::to_string(r.trips) + " drives; lowest state of charge " + fixed(r.soc_min_pct, 0) + "%\n\n";
  s += "Work\n";
  s += "  " + std::to_string(t.jobs_done) + " jobs done, " + std::to_string(t.attempts_preempted) +
       " stopped by the driver or the policy (finished elsewhere, paid for their part)\n";
  s += "  " + fixed(static_cast<double>(t.tokens_out) / 1e6, 2) + " million tokens out, " +
       fixed(static_cast<double>(t.tokens_in) / 1e6, 2) + " million in\n\n";
  s += "Energy and wear\n";
  s += "  " + fixed(t.energy_kwh, 1) + " kWh used by the computer, costing " + cents(t.energy_cost_micros) +
       " at the tariff\n";
  s += "  " + fixed(t.wear_hours, 1) + " temperature-weighted accelerator-hours of wear (budget " +
       fixed(r.wear_budget_hours, 0) + ")\n\n";
  s += "Money (as the ledger settles each job)\n";
  s += "  clients paid for this car's work   " + cents(t.client_paid_micros) + "\n";
  s += "  owner's revenue share              " + cents(t.revenue_share_micros) + "\n";
  s += "  energy refunded at the tariff      " + cents(t.energy_refund_micros) + "\n";
  s += "  wear allowance                     " + cents(t.wear_allowance_micros) + "\n";
  s += "  paid to the owner                  " + cents(t.paid_micros()) + "\n";
  s += "  less the electricity it used       " + cents(-t.energy_cost_micros) + "\n";
  s += "  net for the owner                  " + cents(t.net_micros()) + "\n";
  return s;
}

std::string csv_report(const sim::VehicleMonthResult& r) {
  std::string s =
      "day,hours_driving,hours_parked,hours_plugged_in,hours_eligible,hours_serving,jobs_done,attempts_preempted,"
      "tokens_out,energy_kwh,energy_cost,wear_weighted_hours,revenue_share,energy_refund,wear_allowance,"
      "paid_to_owner,net_after_electricity\n";
  auto line = [&](const std::string& day, const sim::MonthTotals& t) {
    s += day + "," + fixed(t.hours_driving, 3) + "," + fixed(t.hours_parked, 3) + "," + fixed(t.hours_plugged, 3) +
         "," + fixed(t.hours_eligible, 3) + "," + fixed(t.hours_serving, 3) + "," + std::to_string(t.jobs_done) + "," +
         std::to_string(t.attempts_preempted) + "," + std::to_string(t.tokens_out) + "," + fixed(t.energy_kwh, 4) +
         "," + units(t.energy_cost_micros) + "," + fixed(t.wear_hours, 3) + "," + units(t.revenue_share_micros) + "," +
         units(t.energy_refund_micros) + "," + units(t.wear_allowance_micros) + "," + units(t.paid_micros()) + "," +
         units(t.net_micros()) + "\n";
  };
  for (size_t i = 0; i < r.days.size(); ++i) line(std::to_string(i + 1), r.days[i]);
  line("total", r.total);
  return s;
}

void run_month(const SimMonthFlags& f) {
  auto month = core::parse_month(f.month);
  if (!month) throw CommandError{month.error().message};
  sim::VehicleMonthParams p;
  p.start_ms = core::month_start_ms(*month);
  const auto month_days =
      static_cast<int>((core::month_start_ms(core::next_month(*month)) - p.start_ms) / core::kDayMs);
  p.days = f.days > 0 ? f.days : month_days;
  p.vehicle.seed = f.seed;
  p.vehicle.utc_offset_minutes = f.utc_offset_minutes;
  p.vehicle.accelerator = f.accelerator == "thor" ? core::thor_like() : core::orin_like();
  p.vehicle.home_charger = !f.no_home_charger;
  p.vehicle.plug_in_probability = f.plug_in_probability;
  p.policy.opted_in = true;
  p.policy.soc_floor_pct = f.soc_floor_pct;
  p.policy.target_soc_pct = f.target_soc_pct;
  p.policy.accelerator_temp_limit_c = f.temp_limit_c;
  p.policy.wear_budget_hours_per_month = f.wear_budget_hours;
  std::string why;
  auto tariff = parse_tariff(f.tariff, &why);
  if (!tariff) throw CommandError{"--tariff: " + why};
  p.policy.tariff = *tariff;
  p.tokens_per_second = f.tokens_per_second;
  p.prompt_tokens = f.prompt_tokens;
  p.completion_tokens = f.completion_tokens;
  p.input_price_micros_per_mtok = *money(f.price_in, kPriceMicrosMax);
  p.output_price_micros_per_mtok = *money(f.price_out, kPriceMicrosMax);
  p.owner_share_ppm = static_cast<uint64_t>(std::llround(f.owner_share_pct * 10'000.0));
  p.wear_micros_per_accelerator_hour = *money(f.wear_allowance, static_cast<uint64_t>(core::kAmountMicrosMax));
  auto r = sim::simulate_vehicle_month(p);
  if (!r) throw CommandError{r.error().message};
  std::string out;
  if (f.format == "json") {
    json days = json::array();
    for (const sim::MonthTotals& d : r->days) days.push_back(totals_json(d));
    out = json{{"month", f.month},
               {"days", p.days},
               {"seed", f.seed},
               {"trips", r->trips},
               {"soc_min_pct", r->soc_min_pct},
               {"wear_budget_hours", r->wear_budget_hours},
               {"total", totals_json(r->total)},
               {"by_day", days}}
              .dump(2) +
          "\n";
  } else if (f.format == "csv") {
    out = csv_report(*r);
  } else {
    out = text_report(f, p, *r);
  }
  std::fwrite(out.data(), 1, out.size(), stdout);
}

}  // namespace

void add_sim(CLI::App& app) {
  CLI::App* sim = app.add_subcommand(
      "sim", "Simulations with the project's own policy and money code: a fleet (--scenario) or one car's month");
  sim->require_subcommand(0, 1);
  add_sim_scenario(sim);
  add_sim_live(sim);
  add_sim_dst(sim);
  auto f = std::make_shared<SimMonthFlags>();
  CLI::App* month = sim->add_subcommand(
      "month", "One typical vehicle over a month: hours worked, energy and its cost, wear, the owner's earnings");
  month->add_option("--month", f->month, "The calendar month, UTC (YYYY-MM)")
      ->capture_default_str()
      ->check(CLI::Validator(
          [](std::string& v) -> std::string {
            auto m = core::parse_month(v);
            return m ? "" : m.error().message;
          },
          "YYYY-MM"));
  month->add_option("--days", f->days, "Days to simulate from the month's start (default: the whole month)")
      ->check(CLI::Range(1, sim::kMonthDaysMax));
  month->add_option("--seed", f->seed, "The car's seed (its schedule and habits)")->capture_default_str();
  month->add_option("--utc-offset", f->utc_offset_minutes, "The owner's time zone, minutes from UTC")
      ->capture_default_str()
      ->check(CLI::Range(core::kUtcOffsetMinutesMin, core::kUtcOffsetMinutesMax));
  month->add_option("--accelerator", f->accelerator, "The car's AI computer class")
      ->capture_default_str()
      ->check(CLI::IsMember({"orin", "thor"}));
  month->add_option("--tokens-per-second", f->tokens_per_second, "Output tokens per second while generating")
      ->capture_default_str()
      ->check(CLI::Range(0.001, sim::kMonthTokensPerSecondMax));
  month->add_option("--prompt-tokens", f->prompt_tokens, "Prompt tokens of a typical job")
      ->capture_default_str()
      ->check(CLI::Range(uint64_t{1}, sim::kMonthJobTokensMax));
  month->add_option("--completion-tokens", f->completion_tokens, "Completion tokens of a typical job")
      ->capture_default_str()
      ->check(CLI::Range(uint64_t{1}, sim::kMonthJobTokensMax));
  month->add_option("--price-in", f->price_in, "What clients pay per million prompt tokens")
      ->capture_default_str()
      ->check(money_validator(kPriceMicrosMax, "a price like 0.20 (at most 1000)"));
  month->add_option("--price-out", f->price_out, "What clients pay per million completion tokens")
      ->capture_default_str()
      ->check(money_validator(kPriceMicrosMax, "a price like 0.60 (at most 1000)"));
  month->add_option("--owner-share", f->owner_share_pct, "Owners' share of the price (%)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 100.0));
  month->add_option("--tariff", f->tariff,
                    "The owner's electricity price a kWh: flat (0.25) or time of use (00:00=0.12,07:00=0.30,...)")
      ->capture_default_str()
      ->check(CLI::Validator(
          [](std::string& v) -> std::string {
            std::string why;
            return parse_tariff(v, &why) ? "" : why;
          },
          "TARIFF"));
  month->add_option("--wear-allowance", f->wear_allowance, "Paid per temperature-weighted accelerator-hour")
      ->capture_default_str()
      ->check(money_validator(static_cast<uint64_t>(core::kAmountMicrosMax), "an amount like 0.05"));
  month->add_option("--soc-floor", f->soc_floor_pct, "Never serve at or below this SoC (%)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 100.0));
  month->add_option("--target-soc", f->target_soc_pct, "SoC wanted at every departure (%)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 100.0));
  month->add_option("--temp-limit", f->temp_limit_c, "Stop at this accelerator temperature (C)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 150.0));
  month->add_option("--wear-budget", f->wear_budget_hours, "Weighted accelerator-hours allowed a month")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 744.0));
  month->add_option("--plug-in-probability", f->plug_in_probability, "How often the driver plugs in at home")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  month->add_flag("--no-home-charger", f->no_home_charger, "The car has no charger at home");
  month->add_option("--format", f->format, "text, json or csv (one row a day, then the total)")
      ->capture_default_str()
      ->check(CLI::IsMember({"text", "json", "csv"}));
  month->callback([f] { run_month(*f); });
}

}  // namespace idlefleet::cli
