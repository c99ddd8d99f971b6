// Whether this test binary runs under AddressSanitizer (the debug preset:
// IDLEFLEET_SANITIZE=ON builds everything with -fsanitize=address,undefined).
//
// Such a build is several times slower per step, so the slowest tests run a
// smaller *workload* there (fewer requests, kills, weeks, days...) while
// asserting exactly the same things; the release build runs the full sizes.
// Each site says why its size differs. Use it as an ordinary constant
// (`kSanitized ? small : full`), not in #if, so both sizes always compile.
//
// The compiler says so itself: gcc defines __SANITIZE_ADDRESS__ with
// -fsanitize=address, clang answers __has_feature(address_sanitizer). That
// needs no extra definition on every compile line (which would also make
// every object of the sanitizer build miss the shared compiler cache).
#pragma once

namespace idlefleet::testing {

#if defined(__SANITIZE_ADDRESS__)
inline constexpr bool kSanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
inline constexpr bool kSanitized = true;
#else
inline constexpr bool kSanitized = false;
#endif
#else
inline constexpr bool kSanitized = false;
#endif

}  // namespace idlefleet::testing
