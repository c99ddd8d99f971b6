#include "transport/query.h"

namespace idlefleet::transport {

Result<std::string> percent_decode(std::string_view text, bool plus_as_space) {
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '%') {
      const int hi = i + 1 < text.size() ? hex(text[i + 1]) : -1;
      const int lo = i + 2 < text.size() ? hex(text[i + 2]) : -1;
      if (hi < 0 || lo < 0) {
        return Unexpected(ErrorCode::kInvalidArgument,
                          "bad percent-escape '" + std::string(text.substr(i, 3)) + "' (a '%' takes two hex digits)");
      }
      out.push_back(static_cast<char>(hi * 16 + lo));
      i += 2;
    } else if (c == '+' && plus_as_space) {
      out.push_back(' ');
    } else {
      out.push_back(c);
    }
  }
  return out;
}

Result<std::vector<std::pair<std::string, std::string>>> parse_query(std::string_view query, size_t pairs_max) {
  std::vector<std::pair<std::string, std::string>> out;
  size_t at = 0;
  while (at < query.size()) {
    size_t end = query.find('&', at);
    if (end == std::string_view::npos) end = query.size();
    const std::string_view pair = query.substr(at, end - at);
    at = end + 1;
    if (pair.empty()) continue;
    if (out.size() == pairs_max) {
      return Unexpected(ErrorCode::kOutOfRange,
                        "the query string has more than " + std::to_string(pairs_max) + " parameters");
    }
    const size_t eq = pair.find('=');
    auto name = percent_decode(pair.substr(0, eq), true);
    if (!name) return Unexpected(name.error());
    auto value = percent_decode(eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1), true);
    if (!value) return Unexpected(value.error());
    out.emplace_back(std::move(*name), std::move(*value));
  }
  return out;
}

}  // namespace idlefleet::transport
