// libFuzzer target for scenario files (sim/scenario.h): whatever a file
// holds must parse or be refused with an error that starts with the file's
// name (and its line, where there is one), never crash. A scenario that
// parses must validate, and parsing the same text again must give the same
// result (the reader keeps no state between files).
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "sim/scenario.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace idlefleet::sim;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto scenario = parse_scenario(text, "f.toml");
  auto again = parse_scenario(text, "f.toml");
  if (scenario.has_value() != again.has_value()) std::abort();
  if (!scenario) {
    const std::string& m = scenario.error().message;
    if (m.rfind("f.toml: ", 0) != 0 && m.rfind("f.toml:", 0) != 0) std::abort();
    if (m != again.error().message) std::abort();
    return 0;
  }
  if (!scenario->validate()) std::abort();
  if (scenario->models.empty() || scenario->computers.empty() || scenario->policies.empty()) std::abort();
  if (scenario->fleet.vehicles == 0 || scenario->fleet.vehicles > kScenarioVehiclesMax) std::abort();
  return 0;
}
