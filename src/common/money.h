// Money as text: exact decimal amounts to integer micro-units and back.
//
// Every amount of money in idlefleet is an integer count of micro-units (one
// unit of the currency is 1,000,000 micros), so sums are exact and the same on
// every machine. People type and read decimals ("12.50"); these functions are
// the only place where one becomes the other, with no floating point between.
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace idlefleet {

inline constexpr int64_t kMicrosPerUnit = 1'000'000;
// The largest amount a person may type: 2^53 micros (about 9e9 units), the
// same bound as a key's spend limit and one ledger posting.
inline constexpr uint64_t kMoneyMicrosMax = uint64_t{1} << 53;

// "12.5" -> 12'500'000; digits, an optional '.' and 1..6 decimals; no sign,
// no exponent, no spaces. nullopt if malformed or above `max_micros`.
std::optional<uint64_t> parse_money_micros(std::string_view text, uint64_t max_micros = kMoneyMicrosMax);

// 12'500'000 -> "12.5": trailing zeros dropped, no '.' for a whole amount.
std::string format_money(uint64_t micros);

// -1'500'000 -> "-1.500000": always six decimals, a '-' when negative; the
// form statements and payout files use, so columns line up and parse back.
std::string format_money_fixed(int64_t micros);

}  // namespace idlefleet
