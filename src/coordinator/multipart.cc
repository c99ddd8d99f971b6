#include "coordinator/multipart.h"

#include <algorithm>
#include <cctype>
#include <optional>

namespace idlefleet::coordinator {
namespace {

Unexpected bad(std::string what) { return Unexpected(ErrorCode::kInvalidArgument, "multipart body: " + std::move(what)); }

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return std::tolower(c); });
  return out;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// The value of parameter `key` in a header value such as
// `form-data; name="file"; filename="a.jsonl"` (quoted or a bare token), or
// nullopt. Quoted values may escape a quote or backslash with a backslash.
std::optional<std::string> parameter(std::string_view value, std::string_view key) {
  size_t i = value.find(';');
  while (i != std::string_view::npos && i < value.size()) {
    ++i;
    while (i < value.size() && (value[i] == ' ' || value[i] == '\t')) ++i;
    const size_t eq = value.find('=', i);
    if (eq == std::string_view::npos) return std::nullopt;
    const std::string name = lower(trim(value.substr(i, eq - i)));
    size_t j = eq + 1;
    std::string v;
    if (j < value.size() && value[j] == '"') {
      ++j;
      bool closed = false;
      for (; j < value.size(); ++j) {
        if (value[j] == '\\' && j + 1 < value.size()) {
          v += value[++j];
        } else if (value[j] == '"') {
          closed = true;
          ++j;
          break;
        } else {
          v += value[j];
        }
      }
      if (!closed) return std::nullopt;
    } else {
      const size_t end = value.find(';', j);
      v = std::string(trim(value.substr(j, end == std::string_view::npos ? std::string_view::npos : end - j)));
      j = end == std::string_view::npos ? value.size() : end;
    }
    if (name == key) return v;
    i = value.find(';', j);
  }
  return std::nullopt;
}

}  // namespace

Result<std::vector<FormPart>> parse_multipart(std::string_view content_type, std::string_view body) {
  const std::string type = lower(trim(content_type.substr(0, content_type.find(';'))));
  if (type != "multipart/form-data") {
    return Unexpected(ErrorCode::kInvalidArgument, "the request must be multipart/form-data, not '" +
                                                       std::string(content_type.substr(0, 100)) + "'");
  }
  const auto boundary = parameter(content_type, "boundary");
  if (!boundary || boundary->empty() || boundary->size() > kBoundaryBytesMax) {
    return bad("the Content-Type names no boundary of 1 to 70 characters");
  }
  const std::string delimiter = "--" + *boundary;
  // The first delimiter may follow a preamble; every later one follows CRLF.
  size_t at;
  if (body.starts_with(delimiter)) {
    at = 0;
  } else {
    at = body.find("\r\n" + delimiter);
    if (at == std::string_view::npos) return bad("no part starts with the boundary");
    at += 2;
  }
  std::vector<FormPart> parts;
  const std::string next_delimiter = "\r\n" + delimiter;
  for (;;) {
    at += delimiter.size();
    if (body.substr(at, 2) == "--") return parts;  // the closing delimiter
    // Transport padding, then CRLF.
    while (at < body.size() && (body[at] == ' ' || body[at] == '\t')) ++at;
    if (body.substr(at, 2) != "\r\n") return bad("a boundary line does not end with CRLF");
    at += 2;
    if (parts.size() == kPartsMax) return bad("more than " + std::to_string(kPartsMax) + " parts");
    const size_t headers_end = body.find("\r\n\r\n", at);
    const size_t blank_at_once = body.substr(at, 2) == "\r\n" ? at : std::string_view::npos;
    size_t data_start;
    std::string_view headers;
    if (blank_at_once != std::string_view::npos) {
      data_start = at + 2;
    } else {
      if (headers_end == std::string_view::npos) return bad("a part's headers do not end");
      if (headers_end - at > kPartHeaderBytesMax) {
        return bad("a part's headers are over " + std::to_string(kPartHeaderBytesMax) + " bytes");
      }
      headers = body.substr(at, headers_end - at);
      data_start = headers_end + 4;
    }
    FormPart part;
    bool disposition = false;
    size_t line_start = 0;
    while (line_start < headers.size()) {
      size_t line_end = headers.find("\r\n", line_start);
      if (line_end == std::string_view::npos) line_end = headers.size();
      const std::string_view line = headers.substr(line_start, line_end - line_start);
      line_start = line_end + 2;
      const size_t colon = line.find(':');
      if (colon == std::string_view::npos) return bad("a part header without ':'");
      const std::string name = lower(trim(line.substr(0, colon)));
      const std::string_view value = trim(line.substr(colon + 1));
      if (name == "content-disposition") {
        if (lower(trim(value.substr(0, value.find(';')))) != "form-data") {
          return bad("a part's Content-Disposition is not form-data");
        }
        auto n = parameter(value, "name");
        if (!n || n->empty()) return bad("a part's Content-Disposition has no name");
        part.name = *n;
        part.filename = parameter(value, "filename").value_or("");
        disposition = true;
      } else if (name == "content-type") {
        part.content_type = std::string(value);
      }
    }
    if (!disposition) return bad("a part has no Content-Disposition");
    const size_t end = body.find(next_delimiter, data_start);
    if (end == std::string_view::npos) return bad("the body ends before its closing boundary");
    part.data = body.substr(data_start, end - data_start);
    parts.push_back(std::move(part));
    at = end + 2;
  }
}

}  // namespace idlefleet::coordinator
