#include "transport/random_id.h"

#include <sodium.h>

#include <cstdlib>
#include <mutex>
#include <vector>

namespace idlefleet::transport {

namespace {
void init() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (sodium_init() < 0) std::abort();  // no entropy source: nothing secure can work
  });
}
}  // namespace

std::string random_hex(size_t bytes) {
  init();
  std::vector<unsigned char> b(bytes);
  randombytes_buf(b.data(), b.size());
  static const char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(2 * bytes);
  for (unsigned char c : b) {
    out.push_back(kDigits[c >> 4]);
    out.push_back(kDigits[c & 15]);
  }
  return out;
}

uint64_t random_u64() {
  init();
  uint64_t v = 0;
  randombytes_buf(&v, sizeof v);
  return v;
}

}  // namespace idlefleet::transport
