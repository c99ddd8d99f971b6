// libFuzzer target for the coordinator-vehicle protocol decoder: whatever
// arrives on a NATS subject must decode or be refused, never crash; what
// decodes must re-encode to something that decodes to the same message.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "core/protocol.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace idlefleet::core;
  auto m = decode_message(std::string_view(reinterpret_cast<const char*>(data), size));
  if (!m) return 0;
  const std::string again = encode_message(*m);
  auto back = decode_message(again);
  if (!back || encode_message(*back) != again) std::abort();
  return 0;
}
