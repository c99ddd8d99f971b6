// A small valid scenario for the simulator's tests: one model, one computer
// class (1 kW, 30 tokens/s), one home charger, a flat tariff of 16 cents a
// kWh, every owner opted in with the default limits. Each test changes what
// it is about.
#pragma once

#include "core/policy.h"
#include "sim/scenario.h"

namespace idlefleet::sim {

inline Scenario small_scenario() {
  Scenario s;
  s.name = "test";
  s.days = 2;
  ScenarioModel m;
  m.name = "llama-8b";
  s.models.push_back(m);
  ScenarioComputer c;
  c.name = "current";
  c.power_kw = 1.0;
  c.tokens_per_second = {{"llama-8b", 30.0}};
  s.computers.push_back(c);
  s.chargers.push_back(ScenarioCharger{});
  ScenarioTariff t;
  t.name = "flat";
  t.tariff = core::Tariff::flat(160'000);
  s.tariffs.push_back(t);
  ScenarioPolicy p;
  p.name = "default";
  p.policy.opted_in = true;
  s.policies.push_back(p);
  return s;
}

}  // namespace idlefleet::sim
