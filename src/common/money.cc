#include "common/money.h"

namespace idlefleet {

std::optional<uint64_t> parse_money_micros(std::string_view text, uint64_t max_micros) {
  const size_t dot = text.find('.');
  const std::string_view whole = text.substr(0, dot);
  const std::string_view frac = dot == std::string_view::npos ? std::string_view() : text.substr(dot + 1);
  // 10 whole digits stay far below 2^64 once multiplied by 10^6.
  if (whole.empty() || whole.size() > 10 || frac.size() > 6 || (dot != std::string_view::npos && frac.empty())) {
    return std::nullopt;
  }
  uint64_t units = 0;
  for (char c : whole) {
    if (c < '0' || c > '9') return std::nullopt;
    units = units * 10 + static_cast<uint64_t>(c - '0');
  }
  uint64_t fraction = 0;
  for (size_t i = 0; i < 6; ++i) {
    const char c = i < frac.size() ? frac[i] : '0';
    if (c < '0' || c > '9') return std::nullopt;
    fraction = fraction * 10 + static_cast<uint64_t>(c - '0');
  }
  const uint64_t micros = units * static_cast<uint64_t>(kMicrosPerUnit) + fraction;
  if (micros > max_micros) return std::nullopt;
  return micros;
}

std::string format_money(uint64_t micros) {
  std::string frac = std::to_string(micros % kMicrosPerUnit);
  frac = std::string(6 - frac.size(), '0').append(frac);
  while (!frac.empty() && frac.back() == '0') frac.pop_back();
  std::string out = std::to_string(micros / kMicrosPerUnit);
  if (!frac.empty()) out.append(".").append(frac);
  return out;
}

std::string format_money_fixed(int64_t micros) {
  // The magnitude as unsigned, so that INT64_MIN has one too.
  const uint64_t magnitude = micros < 0 ? uint64_t{0} - static_cast<uint64_t>(micros) : static_cast<uint64_t>(micros);
  std::string frac = std::to_string(magnitude % kMicrosPerUnit);
  frac = std::string(6 - frac.size(), '0').append(frac);
  return (micros < 0 ? "-" : "") + std::to_string(magnitude / kMicrosPerUnit) + "." + frac;
}

}  // namespace idlefleet
