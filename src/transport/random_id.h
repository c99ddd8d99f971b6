// Random identifiers from the operating system's entropy (libsodium): job
// ids, agent instance ids, seeds a client did not give. Never used where a
// result must be reproducible: those take a seed.
//
// Thread-safety: free functions, safe from any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace idlefleet::transport {

// `bytes` random bytes as lower-case hex (2 x bytes characters).
std::string random_hex(size_t bytes);

uint64_t random_u64();

}  // namespace idlefleet::transport
