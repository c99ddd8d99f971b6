// Scenario files (sim/scenario.h): the shipped scenarios parse and validate;
// every kind of bad input is refused with "FILE:LINE: key: what is wrong";
// what a file leaves out takes the documented default.
#include "sim/scenario.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

namespace idlefleet::sim::scenario_test {
namespace {

// The smallest valid scenario; tests append to it or replace a line. Line
// numbers matter: the errors name them.
constexpr const char* kMinimal =
    "name = \"t\"\n"                     // 1
    "[[models]]\n"                       // 2
    "name = \"m\"\n"                     // 3
    "[[computers]]\n"                    // 4
    "name = \"c\"\n"                     // 5
    "[computers.tokens_per_second]\n"    // 6
    "m = 10.0\n"                         // 7
    "[[chargers]]\n"                     // 8
    "power_kw = 7.2\n"                   // 9
    "[[tariffs]]\n"                      // 10
    "name = \"flat\"\n"                  // 11
    "micros_per_kwh = 160000\n"          // 12
    "[[policies]]\n"                     // 13
    "name = \"p\"\n"                     // 14
    "opted_in = true\n";                 // 15

std::string replaced(std::string text, const std::string& from, const std::string& to) {
  const size_t at = text.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  if (at != std::string::npos) text.replace(at, from.size(), to);
  return text;
}

// The error of parsing `text` as "t.toml"; fails the test if it parsed.
std::string error_of(const std::string& text) {
  auto s = parse_scenario(text, "t.toml");
  EXPECT_FALSE(s.has_value()) << "parsed:\n" << text;
  return s.has_value() ? std::string() : s.error().message;
}

std::string shipped(const char* name) { return std::string(IDLEFLEET_SOURCE_DIR) + "/scenarios/" + name; }

TEST(Scenario, TheShippedScenariosParseAndValidate) {
  auto us = load_scenario(shipped("us-suburban.toml"));
  ASSERT_TRUE(us.has_value()) << us.error().to_string();
  EXPECT_EQ(us->name, "us-suburban");
  EXPECT_TRUE(us->validate().has_value());
  EXPECT_EQ(us->fleet.vehicles, 100'000u);
  EXPECT_EQ(us->fleet.utc_offset_minutes, -300);
  // 2026-11-02 00:00 in UTC-5 is 05:00 UTC.
  EXPECT_EQ(us->start_ms, core::days_from_civil(2026, 11, 2) * core::kDayMs + 5 * core::kHourMs);
  ASSERT_EQ(us->computers.size(), 2u);
  EXPECT_EQ(us->computers[0].tokens_per_second.size(), 1u);  // the 70B model does not fit
  EXPECT_EQ(us->computers[1].power_kw, 1.0);
  ASSERT_EQ(us->chargers.size(), 2u);
  EXPECT_EQ(us->chargers[1].power_kw, 11.0);
  ASSERT_EQ(us->tariffs.size(), 2u);
  EXPECT_EQ(us->tariffs[1].tariff.kind, core::Tariff::Kind::kTimeOfUse);
  EXPECT_EQ(us->tariffs[1].tariff.weekend.size(), us->tariffs[1].tariff.weekday.size());
  ASSERT_EQ(us->policies.size(), 4u);
  EXPECT_FALSE(us->policies[0].policy.opted_in);
  EXPECT_EQ(us->policies[0].share, 0.3);
  EXPECT_EQ(us->policies[2].policy.price_cap_micros_per_kwh, 200'000);
  EXPECT_EQ(us->policies[3].policy.departure_margin_ms, 60 * core::kMinuteMs);
  EXPECT_FALSE(us->policies[3].declares_departures);

  auto claim = load_scenario(shipped("hundred-gw.toml"));
  ASSERT_TRUE(claim.has_value()) << claim.error().to_string();
  EXPECT_TRUE(claim->validate().has_value());
  EXPECT_EQ(claim->fleet.vehicles, 100'000'000u);
  EXPECT_EQ(claim->days, 1);
  ASSERT_EQ(claim->computers.size(), 1u);
  // The claim: 100 million cars x 1 kW.
  EXPECT_EQ(static_cast<double>(claim->fleet.vehicles) * claim->computers[0].power_kw, 1e8);
}

TEST(Scenario, DailyAllowedHoursBecomeWeeklyWindowsAcrossMidnight) {
  auto us = load_scenario(shipped("us-suburban.toml"));
  ASSERT_TRUE(us.has_value()) << us.error().to_string();
  const auto& w = us->policies[2].policy.allowed_windows;  // "22:00-06:00"
  ASSERT_EQ(w.size(), 8u);
  EXPECT_EQ(w[0].start_minute_of_week, 0);  // Sunday night's window runs into Monday
  EXPECT_EQ(w[0].end_minute_of_week, 6 * 60);
  EXPECT_EQ(w[1].start_minute_of_week, 22 * 60);
  EXPECT_EQ(w[1].end_minute_of_week, core::kMinutesPerDay + 6 * 60);
  EXPECT_EQ(w[7].start_minute_of_week, 6 * core::kMinutesPerDay + 22 * 60);
  EXPECT_EQ(w[7].end_minute_of_week, core::kMinutesPerWeek);

  // Overlapping daily windows merge; "24:00" ends a day.
  auto s = parse_scenario(std::string(kMinimal) + "allowed_hours = [\"08:00-12:00\", \"11:00-24:00\"]\n", "t.toml");
  ASSERT_TRUE(s.has_value()) << s.error().to_string();
  const auto& m = s->policies[0].policy.allowed_windows;
  ASSERT_EQ(m.size(), 7u);
  EXPECT_EQ(m[0].start_minute_of_week, 8 * 60);
  EXPECT_EQ(m[0].end_minute_of_week, core::kMinutesPerDay);
  // An empty list: never.
  auto never = parse_scenario(std::string(kMinimal) + "allowed_hours = []\n", "t.toml");
  ASSERT_TRUE(never.has_value()) << never.error().to_string();
  EXPECT_TRUE(never->policies[0].policy.allowed_windows.empty());
}

// What a file leaves out is the default the header (and docs/simulator.md)
// states; a file that spells every default out reads the same.
TEST(Scenario, DefaultsRoundTrip) {
  auto minimal = parse_scenario(kMinimal, "t.toml");
  ASSERT_TRUE(minimal.has_value()) << minimal.error().to_string();
  const std::string spelled = std::string(
      "name = \"t\"\n"
      "seed = 1\n"
      "days = 7\n"
      "start = \"2026-11-01\"\n"
      "[fleet]\n"
      "vehicles = 100000\n"
      "battery_kwh = 75.0\n"
      "home_charging_share = 0.6\n"
      "plug_in_probability = 0.8\n"
      "trip_energy_kwh = 6.0\n"
      "ambient_c = 15.0\n"
      "utc_offset_minutes = 0\n"
      "[[models]]\n"
      "name = \"m\"\n"
      "memory_gib = 5.0\n"
      "download_gib = 4.5\n"
      "demand_share = 1.0\n"
      "prompt_tokens = 500\n"
      "completion_tokens = 500\n"
      "[[computers]]\n"
      "name = \"c\"\n"
      "share = 1.0\n"
      "power_kw = 1.0\n"
      "memory_gib = 64.0\n"
      "prefill_speedup = 20.0\n"
      "[computers.tokens_per_second]\n"
      "m = 10.0\n"
      "[[chargers]]\n"
      "power_kw = 7.2\n"
      "share = 1.0\n"
      "[[tariffs]]\n"
      "name = \"flat\"\n"
      "share = 1.0\n"
      "micros_per_kwh = 160000\n"
      "[[policies]]\n"
      "name = \"p\"\n"
      "share = 1.0\n"
      "opted_in = true\n"
      "soc_floor_pct = 30.0\n"
      "target_soc_pct = 80.0\n"
      "departure_margin_minutes = 30\n"
      "accelerator_temp_limit_c = 85.0\n"
      "allowed_hours = [\"00:00-24:00\"]\n"
      "wear_budget_hours_per_month = 300.0\n"
      "declares_departures = true\n"
      "[demand]\n"
      "interactive_peak_tokens_per_second = 1e6\n"
      "interactive_hourly = [1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1]\n"
      "batch_tokens_per_day = 0.0\n"
      "interactive_timeout_ms = 30000\n"
      "[network]\n"
      "per_vehicle_mbps = 50.0\n"
      "total_gbps = 1000.0\n"
      "cached_share_at_start = 0.5\n"
      "[pricing]\n"
      "input_micros_per_mtok = 200000\n"
      "output_micros_per_mtok = 600000\n"
      "owner_share_ppm = 600000\n"
      "wear_micros_per_accelerator_hour = 50000\n");
  auto full = parse_scenario(spelled, "t.toml");
  ASSERT_TRUE(full.has_value()) << full.error().to_string();

  const Scenario defaults;
  const ScenarioModel model;
  const ScenarioComputer computer;
  const ScenarioCharger charger;
  const core::OwnerPolicy policy;
  for (const Scenario* s : {&*minimal, &*full}) {
    EXPECT_EQ(s->seed, defaults.seed);
    EXPECT_EQ(s->days, defaults.days);
    EXPECT_EQ(s->start_ms, defaults.start_ms);
    EXPECT_EQ(s->description, defaults.description);
    EXPECT_EQ(s->fleet.vehicles, defaults.fleet.vehicles);
    EXPECT_EQ(s->fleet.battery_kwh, defaults.fleet.battery_kwh);
    EXPECT_EQ(s->fleet.home_charging_share, defaults.fleet.home_charging_share);
    EXPECT_EQ(s->fleet.plug_in_probability, defaults.fleet.plug_in_probability);
    EXPECT_EQ(s->fleet.trip_energy_kwh, defaults.fleet.trip_energy_kwh);
    EXPECT_EQ(s->fleet.ambient_c, defaults.fleet.ambient_c);
    EXPECT_EQ(s->fleet.utc_offset_minutes, defaults.fleet.utc_offset_minutes);
    ASSERT_EQ(s->models.size(), 1u);
    EXPECT_EQ(s->models[0].memory_gib, model.memory_gib);
    EXPECT_EQ(s->models[0].download_gib, model.download_gib);
    EXPECT_EQ(s->models[0].demand_share, model.demand_share);
    EXPECT_EQ(s->models[0].prompt_tokens, model.prompt_tokens);
    EXPECT_EQ(s->models[0].completion_tokens, model.completion_tokens);
    ASSERT_EQ(s->computers.size(), 1u);
    EXPECT_EQ(s->computers[0].share, computer.share);
    EXPECT_EQ(s->computers[0].power_kw, computer.power_kw);
    EXPECT_EQ(s->computers[0].memory_gib, computer.memory_gib);
    EXPECT_EQ(s->computers[0].prefill_speedup, computer.prefill_speedup);
    ASSERT_EQ(s->chargers.size(), 1u);
    EXPECT_EQ(s->chargers[0].share, charger.share);
    ASSERT_EQ(s->tariffs.size(), 1u);
    EXPECT_EQ(s->tariffs[0].share, 1.0);
    EXPECT_EQ(s->tariffs[0].tariff.kind, core::Tariff::Kind::kFlat);
    ASSERT_EQ(s->policies.size(), 1u);
    const core::OwnerPolicy& p = s->policies[0].policy;
    EXPECT_EQ(s->policies[0].share, 1.0);
    EXPECT_TRUE(s->policies[0].declares_departures);
    EXPECT_EQ(p.soc_floor_pct, policy.soc_floor_pct);
    EXPECT_EQ(p.target_soc_pct, policy.target_soc_pct);
    EXPECT_EQ(p.departure_margin_ms, policy.departure_margin_ms);
    EXPECT_EQ(p.accelerator_temp_limit_c, policy.accelerator_temp_limit_c);
    EXPECT_EQ(p.price_cap_micros_per_kwh, policy.price_cap_micros_per_kwh);
    EXPECT_EQ(p.wear_budget_hours_per_month, policy.wear_budget_hours_per_month);
    ASSERT_EQ(p.allowed_windows.size(), policy.allowed_windows.size());
    EXPECT_EQ(p.allowed_windows[0].start_minute_of_week, policy.allowed_windows[0].start_minute_of_week);
    EXPECT_EQ(p.allowed_windows[0].end_minute_of_week, policy.allowed_windows[0].end_minute_of_week);
    EXPECT_EQ(s->demand.interactive_peak_tokens_per_second, defaults.demand.interactive_peak_tokens_per_second);
    EXPECT_EQ(s->demand.interactive_hourly, defaults.demand.interactive_hourly);
    EXPECT_EQ(s->demand.batch_tokens_per_day, defaults.demand.batch_tokens_per_day);
    EXPECT_EQ(s->demand.interactive_timeout_ms, defaults.demand.interactive_timeout_ms);
    EXPECT_EQ(s->network.per_vehicle_mbps, defaults.network.per_vehicle_mbps);
    EXPECT_EQ(s->network.total_gbps, defaults.network.total_gbps);
    EXPECT_EQ(s->network.cached_share_at_start, defaults.network.cached_share_at_start);
    EXPECT_EQ(s->pricing.input_micros_per_mtok, defaults.pricing.input_micros_per_mtok);
    EXPECT_EQ(s->pricing.output_micros_per_mtok, defaults.pricing.output_micros_per_mtok);
    EXPECT_EQ(s->pricing.owner_share_ppm, defaults.pricing.owner_share_ppm);
    EXPECT_EQ(s->pricing.wear_micros_per_accelerator_hour, defaults.pricing.wear_micros_per_accelerator_hour);
  }
}

TEST(Scenario, AnUnknownKeyIsRefusedWithItsLine) {
  EXPECT_EQ(error_of(std::string(kMinimal) + "[fleet]\nvehicels = 10\n").rfind("t.toml:17: fleet.vehicels: unknown key", 0),
            0u);
  EXPECT_EQ(error_of(replaced(kMinimal, "opted_in = true", "opted_inn = true"))
                .rfind("t.toml:15: policies[0].opted_inn: unknown key", 0),
            0u);
  EXPECT_EQ(error_of(std::string("colour = \"red\"\n") + kMinimal).rfind("t.toml:1: colour: unknown key", 0), 0u);
}

TEST(Scenario, AWrongTypeIsRefused) {
  EXPECT_EQ(error_of(std::string(kMinimal) + "[fleet]\nvehicles = \"many\"\n"),
            "t.toml:17: fleet.vehicles: must be an integer, not a string");
  EXPECT_EQ(error_of(replaced(kMinimal, "opted_in = true", "opted_in = \"yes\"")),
            "t.toml:15: policies[0].opted_in: must be a boolean (true or false), not a string");
  EXPECT_EQ(error_of(replaced(kMinimal, "m = 10.0", "m = \"fast\"")),
            "t.toml:7: computers[0].tokens_per_second.m: must be a number, not a string");
  EXPECT_EQ(error_of(std::string(kMinimal) + "[demand]\ninteractive_hourly = 1.0\n"),
            "t.toml:17: demand.interactive_hourly: must be an array of 24 numbers, not a float");
  EXPECT_EQ(error_of("fleet = 3\n" + std::string(kMinimal)), "t.toml:1: fleet: must be a table, not an integer");
}

TEST(Scenario, NegativeCapacityIsRefused) {
  EXPECT_EQ(error_of(std::string(kMinimal) + "[fleet]\nbattery_kwh = -70.0\n"),
            "t.toml:17: fleet.battery_kwh: -70 is not in (0, 500]");
  EXPECT_EQ(error_of(std::string(kMinimal) + "[fleet]\nvehicles = -5\n"), "t.toml:17: fleet.vehicles: -5 is negative");
  EXPECT_EQ(error_of(std::string(kMinimal) + "[fleet]\nvehicles = 0\n"),
            "t.toml:17: fleet.vehicles: 0 is not in [1, 1000000000]");
  EXPECT_EQ(error_of(replaced(kMinimal, "power_kw = 7.2", "power_kw = -7.2")),
            "t.toml:9: chargers[0].power_kw: -7.2 is not in (0, 1000]");
  EXPECT_EQ(error_of(replaced(kMinimal, "m = 10.0", "m = 0")),
            "t.toml:7: computers[0].tokens_per_second.m: 0 is not in (0, 1000000]");
  EXPECT_EQ(error_of(std::string(kMinimal) + "[fleet]\nbattery_kwh = nan\n"),
            "t.toml:17: fleet.battery_kwh: nan is not a finite number");
}

TEST(Scenario, AShareAboveOneIsRefused) {
  EXPECT_EQ(error_of(std::string(kMinimal) + "[fleet]\nhome_charging_share = 1.3\n"),
            "t.toml:17: fleet.home_charging_share: 1.3 is above 1 (a share)");
  EXPECT_EQ(error_of(replaced(kMinimal, "name = \"c\"\n", "name = \"c\"\nshare = 1.5\n")),
            "t.toml:6: computers[0].share: 1.5 is above 1 (a share)");
  EXPECT_EQ(error_of(replaced(kMinimal, "name = \"p\"\n", "name = \"p\"\nshare = -0.5\n")),
            "t.toml:15: policies[0].share: -0.5 is below 0 (a share)");
}

TEST(Scenario, SharesThatDoNotSumToOneAreRefused) {
  const std::string over = replaced(kMinimal, "name = \"p\"\nopted_in = true\n",
                                    "name = \"p\"\nshare = 0.7\n[[policies]]\nname = \"q\"\nshare = 0.6\n");
  EXPECT_EQ(error_of(over), "t.toml:13: policies: the shares sum to 1.3, they must sum to 1");
  const std::string under = replaced(kMinimal, "power_kw = 7.2\n", "power_kw = 7.2\nshare = 0.5\n");
  EXPECT_EQ(error_of(under), "t.toml:8: chargers: the shares sum to 0.5, they must sum to 1");
  const std::string models =
      replaced(kMinimal, "name = \"m\"\n", "name = \"m\"\ndemand_share = 0.5\n[[models]]\nname = \"n\"\ndemand_share = 0.6\n");
  EXPECT_EQ(error_of(models), "t.toml:2: models: the demand_shares sum to 1.1, they must sum to 1");
}

TEST(Scenario, AnUnknownModelIsRefused) {
  EXPECT_EQ(error_of(replaced(kMinimal, "m = 10.0", "m = 10.0\n\"llama-8b\" = 5.0")),
            "t.toml:8: computers[0].tokens_per_second.llama-8b: no [[models]] entry is named 'llama-8b'");
}

TEST(Scenario, ADuplicateNameIsRefused) {
  const std::string twice = replaced(kMinimal, "name = \"p\"\nopted_in = true\n",
                                     "name = \"p\"\nshare = 0.5\n[[policies]]\nname = \"p\"\nshare = 0.5\n");
  EXPECT_EQ(error_of(twice), "t.toml:17: policies[1].name: 'p' repeats policies[0].name (names are unique)");
  EXPECT_EQ(error_of(replaced(kMinimal, "name = \"m\"", "name = \"m m\"")),
            "t.toml:3: models[0].name: 'm m' must be [A-Za-z0-9._-]+");
  EXPECT_EQ(error_of(std::string(kMinimal).substr(11)), "t.toml: name: missing (every scenario is named)");
}

TEST(Scenario, ABadTimeIsRefused) {
  const std::string tou = replaced(kMinimal, "micros_per_kwh = 160000",
                                   "weekday = [\n{ start = \"00:00\", micros_per_kwh = 1 },\n"
                                   "{ start = \"25:00\", micros_per_kwh = 2 },\n]");
  EXPECT_EQ(error_of(tou), "t.toml:14: tariffs[0].weekday[1].start: '25:00' is not a time \"HH:MM\" (00:00 to 23:59)");
  const std::string unsorted = replaced(kMinimal, "micros_per_kwh = 160000",
                                        "weekday = [{ start = \"00:00\", micros_per_kwh = 1 }, "
                                        "{ start = \"16:00\", micros_per_kwh = 3 }, "
                                        "{ start = \"07:00\", micros_per_kwh = 2 }]");
  EXPECT_EQ(error_of(unsorted),
            "t.toml:12: tariffs[0].weekday[2].start: 07:00 does not follow 16:00 (starts increase through the day)");
  const std::string late_first =
      replaced(kMinimal, "micros_per_kwh = 160000", "weekday = [{ start = \"06:00\", micros_per_kwh = 1 }]");
  EXPECT_EQ(error_of(late_first).rfind("t.toml:12: tariffs[0].weekday[0].start: 06:00: the first entry starts at", 0),
            0u);
  const std::string both = replaced(kMinimal, "micros_per_kwh = 160000",
                                    "micros_per_kwh = 1\nweekday = [{ start = \"00:00\", micros_per_kwh = 1 }]");
  EXPECT_NE(error_of(both).find("t.toml:10: tariffs[0]: give either micros_per_kwh"), std::string::npos);
  for (const char* window : {"22:00-22:00", "7:00-9:00", "22:00-24:30", "24:00-06:00", "22:00 06:00"}) {
    const std::string text = std::string(kMinimal) + "allowed_hours = [\"" + window + "\"]\n";
    EXPECT_EQ(error_of(text).rfind(std::string("t.toml:16: policies[0].allowed_hours[0]: '") + window +
                                       "' is not a daily window",
                                   0),
              0u)
        << window;
  }
  EXPECT_EQ(error_of(std::string(kMinimal) + "allowed_hours = [\"a\", \"b\", \"c\", \"d\", \"e\"]\n"),
            "t.toml:16: policies[0].allowed_hours: 5 windows, more than 4");
}

TEST(Scenario, ABadDateIsRefused) {
  for (const char* date : {"2026-02-30", "2026/11/01", "26-11-01", "1999-12-31", "2026-13-01", ""}) {
    const std::string text = "start = \"" + std::string(date) + "\"\n" + kMinimal;
    EXPECT_EQ(error_of(text).rfind("t.toml:1: start: '" + std::string(date) + "' is not a date", 0), 0u) << date;
  }
  EXPECT_EQ(error_of(std::string("start = 2026-11-01\n") + kMinimal), "t.toml:1: start: must be a string, not a date");
  auto leap = parse_scenario(std::string("start = \"2028-02-29\"\n") + kMinimal, "t.toml");
  ASSERT_TRUE(leap.has_value()) << leap.error().to_string();
  EXPECT_EQ(leap->start_ms, core::days_from_civil(2028, 2, 29) * core::kDayMs);
}

TEST(Scenario, OtherNonsenseIsRefusedByKey) {
  EXPECT_EQ(error_of(replaced(kMinimal, "opted_in = true", "soc_floor_pct = 90.0")),
            "t.toml:15: policies[0].soc_floor_pct: 90 is above target_soc_pct 80");
  EXPECT_EQ(error_of(std::string(kMinimal) + "departure_margin_minutes = 2000\n"),
            "t.toml:16: policies[0].departure_margin_minutes: 2000 is not in [0, 1440]");
  EXPECT_EQ(error_of(std::string(kMinimal) + "[demand]\ninteractive_hourly = [0.5, 0.5]\n"),
            "t.toml:17: demand.interactive_hourly: 2 values, one for each of the 24 hours is needed");
  EXPECT_EQ(error_of(std::string(kMinimal) + "[demand]\ninteractive_hourly = [" + std::string(23 * 4, ' ') + "]\n")
                .rfind("t.toml:17: demand.interactive_hourly: 0 values", 0),
            0u);
  std::string hourly = "[demand]\ninteractive_hourly = [";
  for (int h = 0; h < 24; ++h) hourly += "0.5,";
  hourly += "]\n";
  EXPECT_EQ(error_of(std::string(kMinimal) + hourly),
            "t.toml:17: demand.interactive_hourly: the largest multiplier is 0.5, it must be 1 (the peak hour)");
  EXPECT_EQ(error_of(std::string(kMinimal) + "[fleet]\nutc_offset_minutes = 100000000000\n"),
            "t.toml:17: fleet.utc_offset_minutes: 100000000000 is not in [-720, 840]");
  EXPECT_EQ(error_of("days = 400\n" + std::string(kMinimal)), "t.toml:1: days: 400 is not in [1, 366]");
  EXPECT_EQ(error_of(std::string(kMinimal) + "[pricing]\nowner_share_ppm = 2000000\n"),
            "t.toml:17: pricing.owner_share_ppm: 2000000 is not in [0, 1000000]");
  // A computer that serves nothing, and a list with nothing in it.
  EXPECT_EQ(error_of(replaced(kMinimal, "m = 10.0\n", "")),
            "t.toml:6: computers[0].tokens_per_second: is empty: the class would serve no model");
  EXPECT_EQ(error_of("chargers = []\n" + replaced(kMinimal, "[[chargers]]\npower_kw = 7.2\n", "")),
            "t.toml:1: chargers: is empty, at least one entry is needed");
  // Cars that charge at home need chargers; without any, none may.
  const std::string no_chargers = replaced(kMinimal, "[[chargers]]\npower_kw = 7.2\n", "");
  EXPECT_EQ(error_of(no_chargers), "t.toml: chargers: at least one [[chargers]] entry is needed");
  EXPECT_TRUE(parse_scenario(no_chargers + "[fleet]\nhome_charging_share = 0.0\n", "t.toml").has_value());
}

TEST(Scenario, TruncatedOrGarbageTomlIsRefused) {
  const std::string text(kMinimal);
  const std::string cut = text.substr(0, text.find("[computers.tokens_per") + 12);  // "[computers.t"
  EXPECT_EQ(error_of(cut).rfind("t.toml:6: not valid TOML (column ", 0), 0u) << error_of(cut);
  EXPECT_EQ(error_of(std::string("\x01\xff\xfe garbage = = [\n", 18)).rfind("t.toml:1: not valid TOML", 0), 0u);
  EXPECT_EQ(error_of(std::string(kMinimal) + "name = \"again\"\n").rfind("t.toml:16: not valid TOML", 0), 0u);
  EXPECT_EQ(error_of(""), "t.toml: name: missing (every scenario is named)");
}

TEST(Scenario, ATooBigFileIsRefused) {
  std::string big(kMinimal);
  big += "description = \"" + std::string(kScenarioFileBytesMax, 'x') + "\"\n";
  EXPECT_EQ(error_of(big).rfind("t.toml: the scenario is ", 0), 0u);
  EXPECT_EQ(error_of("description = \"" + std::string(5000, 'x') + "\"\n" + kMinimal),
            "t.toml:1: description: 5000 bytes, more than 4096");

  const std::filesystem::path dir = std::filesystem::temp_directory_path() / "idlefleet_scenario_test";
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "big.toml").string();
  {
    std::ofstream out(path, std::ios::binary);
    out << std::string(kScenarioFileBytesMax + 1, '#');
  }
  auto loaded = load_scenario(path);
  ASSERT_FALSE(loaded.has_value());
  EXPECT_EQ(loaded.error().code, ErrorCode::kOutOfRange);
  EXPECT_EQ(loaded.error().message, "scenario file '" + path + "' is more than 1048576 bytes");
  auto missing = load_scenario((dir / "absent.toml").string());
  ASSERT_FALSE(missing.has_value());
  EXPECT_EQ(missing.error().code, ErrorCode::kNotFound);
  auto directory = load_scenario(dir.string());
  ASSERT_FALSE(directory.has_value());
  EXPECT_EQ(directory.error().code, ErrorCode::kIo);
  std::filesystem::remove_all(dir);
}

TEST(Scenario, ValidateNamesTheKeyWithoutAFile) {
  auto s = parse_scenario(kMinimal, "t.toml");
  ASSERT_TRUE(s.has_value()) << s.error().to_string();
  Scenario bad = *s;
  bad.fleet.battery_kwh = -1.0;
  ASSERT_FALSE(bad.validate().has_value());
  EXPECT_EQ(bad.validate().error().message, "fleet.battery_kwh: -1 is not in (0, 500]");
  bad = *s;
  bad.computers[0].tokens_per_second.emplace_back("m", 3.0);
  ASSERT_FALSE(bad.validate().has_value());
  EXPECT_EQ(bad.validate().error().message, "computers[0].tokens_per_second.m: 'm' is listed twice");
  bad = *s;
  bad.policies[0].policy.allowed_windows = {{100, 50}};  // the core's own check
  ASSERT_FALSE(bad.validate().has_value());
  EXPECT_EQ(bad.validate().error().message.rfind("policies[0]: ", 0), 0u);
}

}  // namespace
}  // namespace idlefleet::sim::scenario_test
