// libFuzzer target for the coordinator's config file (coordinator/config.h):
// whatever a file holds must parse or be refused with an error that starts
// with the file's name, never crash. A config that parses must validate, and
// parsing the same text again must give the same config or the same error
// (the reader keeps no state between files).
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "coordinator/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace idlefleet::coordinator;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto config = parse_coordinator_config(text, "c.toml");
  auto again = parse_coordinator_config(text, "c.toml");
  if (config.has_value() != again.has_value()) std::abort();
  if (!config) {
    if (config.error().message.rfind("c.toml", 0) != 0) std::abort();
    if (config.error().message != again.error().message) std::abort();
    return 0;
  }
  if (!config->validate()) std::abort();
  if (!(*config == *again)) std::abort();
  return 0;
}
