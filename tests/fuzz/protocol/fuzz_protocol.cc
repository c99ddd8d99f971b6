// libFuzzer target for the coordinator-vehicle protocol decoder: whatever
// arrives on a NATS subject must decode or be refused, never crash; what
// decodes must re-encode to something that decodes to the same message. The
// same input is also tried as an owner's policy (the owner API's PUT body and
// the agent's policy file), with the same round trip.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "core/protocol.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace idlefleet::core;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  if (auto p = decode_policy(text)) {
    const std::string policy = encode_policy(*p);
    auto policy_back = decode_policy(policy);
    if (!policy_back || encode_policy(*policy_back) != policy) std::abort();
  }
  auto m = decode_message(text);
  if (!m) return 0;
  const std::string again = encode_message(*m);
  auto back = decode_message(again);
  if (!back || encode_message(*back) != again) std::abort();
  return 0;
}
