// The Jinja2 subset of chat_template.h: a lexer that applies Jinja's
// whitespace rules while it splits the source, a recursive-descent parser
// into two arenas (statements and expressions, children by index), and a
// tree-walking renderer whose every step, loop iteration, string byte and
// nesting level is counted against the limits in the header.
#include "engine/chat_template.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>
#include <limits>
#include <utility>

// Propagates the error of a Result<T> expression or assigns its value.
#define CT_CONCAT_INNER(a, b) a##b
#define CT_CONCAT(a, b) CT_CONCAT_INNER(a, b)
#define CT_ASSIGN_OR_RETURN(lhs, expr)                                                   \
  auto CT_CONCAT(ct_result_, __LINE__) = (expr);                                       \
  if (!CT_CONCAT(ct_result_, __LINE__)) {                                              \
    return ::idlefleet::Unexpected(CT_CONCAT(ct_result_, __LINE__).error());           \
  }                                                                                    \
  lhs = std::move(*CT_CONCAT(ct_result_, __LINE__))

namespace idlefleet::engine {
namespace {

// ------------------------------------------------------------------ values

enum class Kind : uint8_t {
  kUndefined,
  kNone,
  kBool,
  kInt,
  kFloat,
  kString,
  kList,
  kDict,
  kNamespace,
  kFunction,
};

enum class Builtin : int64_t { kRaiseException, kRange, kNamespace, kDict };

struct Dict;

// A Jinja value. Strings, lists and dicts are shared and immutable, so that
// copying a value is O(1); a namespace is the one mutable container, and may
// not hold another namespace (so no value is ever cyclic).
struct Value {
  Kind kind = Kind::kUndefined;
  uint16_t depth = 0;  // containers nested inside this one; 0 for scalars
  bool tuple = false;  // a kList written (a, b): printed with parentheses
  bool b = false;
  int64_t i = 0;  // kInt, kFunction (a Builtin)
  double f = 0;
  std::shared_ptr<const std::string> s;
  std::shared_ptr<const std::vector<Value>> items;
  std::shared_ptr<Dict> dict;  // kDict (never changed once built), kNamespace
};

// Insertion-ordered, like Python's dict; keys are strings.
struct Dict {
  std::vector<std::pair<std::string, Value>> entries;

  const Value* find(std::string_view key) const {
    for (const auto& [k, v] : entries) {
      if (k == key) return &v;
    }
    return nullptr;
  }
  void set(std::string_view key, Value value) {
    for (auto& [k, v] : entries) {
      if (k == key) {
        v = std::move(value);
        return;
      }
    }
    entries.emplace_back(std::string(key), std::move(value));
  }
};

Value make_none() {
  Value v;
  v.kind = Kind::kNone;
  return v;
}
Value make_bool(bool b) {
  Value v;
  v.kind = Kind::kBool;
  v.b = b;
  return v;
}
Value make_int(int64_t i) {
  Value v;
  v.kind = Kind::kInt;
  v.i = i;
  return v;
}
Value make_float(double f) {
  Value v;
  v.kind = Kind::kFloat;
  v.f = f;
  return v;
}
Value make_string(std::string s) {
  Value v;
  v.kind = Kind::kString;
  v.s = std::make_shared<const std::string>(std::move(s));
  return v;
}
Value make_function(Builtin fn) {
  Value v;
  v.kind = Kind::kFunction;
  v.i = static_cast<int64_t>(fn);
  return v;
}

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::kUndefined: return "undefined";
    case Kind::kNone: return "none";
    case Kind::kBool: return "bool";
    case Kind::kInt: return "int";
    case Kind::kFloat: return "float";
    case Kind::kString: return "str";
    case Kind::kList: return "list";
    case Kind::kDict: return "dict";
    case Kind::kNamespace: return "namespace";
    case Kind::kFunction: return "function";
  }
  return "?";
}

bool is_intlike(const Value& v) { return v.kind == Kind::kInt || v.kind == Kind::kBool; }
bool is_number(const Value& v) { return is_intlike(v) || v.kind == Kind::kFloat; }
int64_t int_of(const Value& v) { return v.kind == Kind::kBool ? (v.b ? 1 : 0) : v.i; }
double float_of(const Value& v) {
  return v.kind == Kind::kFloat ? v.f : static_cast<double>(int_of(v));
}

bool truthy(const Value& v) {
  switch (v.kind) {
    case Kind::kUndefined:
    case Kind::kNone: return false;
    case Kind::kBool: return v.b;
    case Kind::kInt: return v.i != 0;
    case Kind::kFloat: return v.f != 0;
    case Kind::kString: return !v.s->empty();
    case Kind::kList: return !v.items->empty();
    case Kind::kDict: return !v.dict->entries.empty();
    case Kind::kNamespace:
    case Kind::kFunction: return true;
  }
  return false;
}

bool contains_namespace(const Value& v) {
  if (v.kind == Kind::kNamespace) return true;
  if (v.kind == Kind::kList) {
    for (const Value& e : *v.items) {
      if (contains_namespace(e)) return true;
    }
  }
  if (v.kind == Kind::kDict) {
    for (const auto& [k, e] : v.dict->entries) {
      if (contains_namespace(e)) return true;
    }
  }
  return false;
}

// ------------------------------------------------------------------ text

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

std::string_view strip_view(std::string_view s, bool left, bool right) {
  size_t b = 0;
  size_t e = s.size();
  if (left) {
    while (b < e && is_space(s[b])) ++b;
  }
  if (right) {
    while (e > b && is_space(s[e - 1])) --e;
  }
  return s.substr(b, e - b);
}

std::string_view strip_chars(std::string_view s, std::string_view chars, bool left, bool right) {
  size_t b = 0;
  size_t e = s.size();
  if (left) {
    while (b < e && chars.find(s[b]) != std::string_view::npos) ++b;
  }
  if (right) {
    while (e > b && chars.find(s[e - 1]) != std::string_view::npos) --e;
  }
  return s.substr(b, e - b);
}

bool is_continuation(char c) { return (static_cast<uint8_t>(c) & 0xC0) == 0x80; }

// Byte offsets where code points start, then s.size(). Ill-formed UTF-8 is
// split at lead bytes; the first byte always starts one.
std::vector<size_t> code_point_starts(std::string_view s) {
  std::vector<size_t> starts;
  for (size_t k = 0; k < s.size(); ++k) {
    if (k == 0 || !is_continuation(s[k])) starts.push_back(k);
  }
  starts.push_back(s.size());
  return starts;
}

size_t code_point_count(std::string_view s) {
  size_t n = 0;
  for (size_t k = 0; k < s.size(); ++k) {
    if (k == 0 || !is_continuation(s[k])) ++n;
  }
  return n;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

char ascii_upper(char c) { return (c >= 'a' && c <= 'z') ? static_cast<char>(c - 32) : c; }
char ascii_lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c; }
bool ascii_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

std::string to_upper(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = ascii_upper(c);
  return out;
}
std::string to_lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = ascii_lower(c);
  return out;
}
// Python's str.capitalize(): the first character upper, the rest lower.
std::string capitalize(std::string_view s) {
  std::string out = to_lower(s);
  if (!out.empty()) out[0] = ascii_upper(out[0]);
  return out;
}
// Python's str.title(): a letter after a non-letter is upper, others lower.
std::string title_case(std::string_view s) {
  std::string out(s);
  bool prev_alpha = false;
  for (char& c : out) {
    const bool alpha = ascii_alpha(c);
    if (alpha) c = prev_alpha ? ascii_lower(c) : ascii_upper(c);
    prev_alpha = alpha;
  }
  return out;
}

// Python's repr() of a float: the shortest digits that read back exactly,
// fixed notation for exponents in [-4, 16), else d.ddde+XX.
std::string float_repr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::scientific);
  std::string s(buf, r.ptr);
  std::string out;
  if (!s.empty() && s[0] == '-') {
    out.push_back('-');
    s.erase(0, 1);
  }
  const size_t e = s.find('e');
  int exponent = 0;
  std::from_chars(s.data() + e + 1 + (s[e + 1] == '+' ? 1 : 0), s.data() + s.size(), exponent);
  std::string digits;
  for (size_t k = 0; k < e; ++k) {
    if (s[k] != '.') digits.push_back(s[k]);
  }
  if (exponent >= -4 && exponent < 16) {
    if (exponent >= 0) {
      const size_t int_digits = static_cast<size_t>(exponent) + 1;
      if (digits.size() <= int_digits) {
        out.append(digits).append(int_digits - digits.size(), '0').append(".0");
      } else {
        out.append(digits, 0, int_digits).append(".").append(digits, int_digits);
      }
    } else {
      out.append("0.").append(static_cast<size_t>(-exponent - 1), '0').append(digits);
    }
    return out;
  }
  out.push_back(digits[0]);
  if (digits.size() > 1) out.append(".").append(digits, 1);
  out.push_back('e');
  out.push_back(exponent < 0 ? '-' : '+');
  const int magnitude = exponent < 0 ? -exponent : exponent;
  if (magnitude < 10) out.push_back('0');
  out.append(std::to_string(magnitude));
  return out;
}

// "line 3, column 14" for a byte offset (columns count code points).
std::string line_column(std::string_view src, uint32_t pos) {
  size_t line = 1;
  size_t column = 1;
  for (size_t k = 0; k < pos && k < src.size(); ++k) {
    if (src[k] == '\n') {
      ++line;
      column = 1;
    } else if (!is_continuation(src[k])) {
      ++column;
    }
  }
  return std::string("line ")
      .append(std::to_string(line))
      .append(", column ")
      .append(std::to_string(column));
}

Unexpected template_error(ErrorCode code, std::string_view src, uint32_t pos,
                          std::string_view what) {
  std::string message("chat template ");
  message.append(line_column(src, pos)).append(": ").append(what);
  return Unexpected(code, std::move(message));
}

// A name or value quoted for an error message, shortened.
std::string quoted(std::string_view s) {
  constexpr size_t kShown = 40;
  std::string out("'");
  out.append(s.substr(0, kShown));
  if (s.size() > kShown) out.append("...");
  out.append("'");
  return out;
}

// ------------------------------------------------------------------ lexer

enum class Tok : uint8_t {
  kText,
  kVarBegin,
  kVarEnd,
  kBlockBegin,
  kBlockEnd,
  kName,
  kString,
  kInt,
  kFloat,
  kOp,
  kEnd,
};

struct Token {
  Tok kind = Tok::kEnd;
  uint32_t pos = 0;
  std::string text;  // kText, kName, kString (unescaped), kOp
  int64_t int_value = 0;
  double float_value = 0;
};

// Operators, longest first so that "//" is not read as "/" "/".
constexpr std::string_view kOperators[] = {"//", "**", "==", "!=", "<=", ">=", "+", "-", "*",
                                           "/",  "%",  "~",  "<",  ">",  "(",  ")", "[", "]",
                                           "{",  "}",  ".",  ",",  ":",  "|",  "="};

class Lexer {
 public:
  Lexer(std::string_view src, ChatTemplateOptions options) : src_(src), options_(options) {}

  Result<std::vector<Token>> run() {
    std::vector<Token> out;
    size_t i = 0;
    bool line_starting = true;  // the previous match ended a line (Jinja's lstrip rule)
    const size_t n = src_.size();
    while (true) {
      size_t open = std::string_view::npos;
      for (size_t j = src_.find('{', i); j != std::string_view::npos; j = src_.find('{', j + 1)) {
        if (j + 1 < n && (src_[j + 1] == '{' || src_[j + 1] == '%' || src_[j + 1] == '#')) {
          open = j;
          break;
        }
      }
      std::string text(src_.substr(i, (open == std::string_view::npos ? n : open) - i));
      const uint32_t text_pos = static_cast<uint32_t>(i);
      if (open == std::string_view::npos) {
        push_text(out, std::move(text), text_pos);
        break;
      }
      const char kind = src_[open + 1];
      size_t k = open + 2;
      const char mod = k < n ? src_[k] : '\0';
      if (mod == '-' || mod == '+') ++k;
      if (mod == '-') {
        text.resize(strip_view(text, false, true).size());
      } else if (mod != '+' && options_.lstrip_blocks && kind != '{') {
        const size_t newline = text.rfind('\n');
        const size_t line_pos = newline == std::string::npos ? 0 : newline + 1;
        if (newline != std::string::npos || line_starting) {
          bool blank = true;
          for (size_t c = line_pos; c < text.size(); ++c) {
            if (!is_space(text[c])) blank = false;
          }
          if (blank) text.resize(line_pos);
        }
      }
      push_text(out, std::move(text), text_pos);

      if (kind == '#') {
        const size_t close = src_.find("#}", k);
        if (close == std::string_view::npos) {
          return template_error(ErrorCode::kCorrupt, src_, static_cast<uint32_t>(open),
                                "unterminated comment: '{#' without '#}'");
        }
        const char close_mod = close > k ? src_[close - 1] : '\0';
        i = close + 2;
        line_starting = finish_tag(i, close_mod, /*block=*/true);
        continue;
      }

      const bool block = kind == '%';
      out.push_back(Token{block ? Tok::kBlockBegin : Tok::kVarBegin, static_cast<uint32_t>(open),
                          {}, 0, 0});
      int depth = 0;
      while (true) {
        while (k < n && is_space(src_[k])) ++k;
        if (k >= n) {
          return template_error(ErrorCode::kCorrupt, src_, static_cast<uint32_t>(open),
                                block ? "unterminated tag: '{%' without '%}'"
                                      : "unterminated expression: '{{' without '}}'");
        }
        if (depth == 0) {
          const std::string_view rest = src_.substr(k);
          const std::string_view close = block ? "%}" : "}}";
          char close_mod = '\0';
          size_t close_len = 0;
          if ((rest.size() >= 3 && (rest[0] == '-' || (block && rest[0] == '+')) &&
               rest.substr(1, 2) == close)) {
            close_mod = rest[0];
            close_len = 3;
          } else if (rest.substr(0, 2) == close) {
            close_len = 2;
          }
          if (close_len != 0) {
            out.push_back(Token{block ? Tok::kBlockEnd : Tok::kVarEnd, static_cast<uint32_t>(k),
                                {}, 0, 0});
            i = k + close_len;
            line_starting = finish_tag(i, close_mod, block);
            break;
          }
        }
        Token token;
        IF_RETURN_IF_ERROR(lex_token(k, &token));
        if (token.kind == Tok::kOp && token.text.size() == 1) {
          const char c = token.text[0];
          if (c == '(' || c == '[' || c == '{') ++depth;
          if ((c == ')' || c == ']' || c == '}') && depth > 0) --depth;
        }
        out.push_back(std::move(token));
      }
    }
    out.push_back(Token{Tok::kEnd, static_cast<uint32_t>(n), {}, 0, 0});
    return out;
  }

 private:
  void push_text(std::vector<Token>& out, std::string text, uint32_t pos) {
    if (!text.empty()) out.push_back(Token{Tok::kText, pos, std::move(text), 0, 0});
  }

  // Applies "-" (strip all following whitespace) or trim_blocks (drop one
  // newline after a block tag or comment) from i; returns whether what was
  // consumed ended a line.
  bool finish_tag(size_t& i, char close_mod, bool block) {
    if (close_mod == '-') {
      bool newline = false;
      while (i < src_.size() && is_space(src_[i])) newline = src_[i++] == '\n';
      return newline;
    }
    if (close_mod != '+' && block && options_.trim_blocks && i < src_.size() &&
        src_[i] == '\n') {
      ++i;
      return true;
    }
    return false;
  }

  Status lex_token(size_t& k, Token* token) {
    const char c = src_[k];
    token->pos = static_cast<uint32_t>(k);
    if (ascii_alpha(c) || c == '_') {
      size_t e = k;
      while (e < src_.size() && (ascii_alpha(src_[e]) || src_[e] == '_' ||
                                 (src_[e] >= '0' && src_[e] <= '9'))) {
        ++e;
      }
      token->kind = Tok::kName;
      token->text = std::string(src_.substr(k, e - k));
      k = e;
      return {};
    }
    if (c >= '0' && c <= '9') return lex_number(k, token);
    if (c == '\'' || c == '"') return lex_string(k, token);
    for (std::string_view op : kOperators) {
      if (src_.substr(k, op.size()) == op) {
        token->kind = Tok::kOp;
        token->text = std::string(op);
        k += op.size();
        return {};
      }
    }
    std::string what("unexpected character ");
    if (static_cast<uint8_t>(c) >= 0x20 && static_cast<uint8_t>(c) < 0x7F) {
      what.append(quoted(std::string_view(&c, 1)));
    } else {
      what.append("byte ").append(std::to_string(static_cast<uint8_t>(c)));
    }
    return template_error(ErrorCode::kCorrupt, src_, token->pos, what);
  }

  Status lex_number(size_t& k, Token* token) {
    std::string digits;
    bool is_float = false;
    auto take_digits = [&] {
      while (k < src_.size() && ((src_[k] >= '0' && src_[k] <= '9') ||
                                 (src_[k] == '_' && k + 1 < src_.size() && src_[k + 1] >= '0' &&
                                  src_[k + 1] <= '9'))) {
        if (src_[k] != '_') digits.push_back(src_[k]);
        ++k;
      }
    };
    take_digits();
    if (k + 1 < src_.size() && src_[k] == '.' && src_[k + 1] >= '0' && src_[k + 1] <= '9') {
      is_float = true;
      digits.push_back('.');
      ++k;
      take_digits();
    }
    if (k < src_.size() && (src_[k] == 'e' || src_[k] == 'E')) {
      size_t e = k + 1;
      if (e < src_.size() && (src_[e] == '+' || src_[e] == '-')) ++e;
      if (e < src_.size() && src_[e] >= '0' && src_[e] <= '9') {
        is_float = true;
        digits.push_back('e');
        if (src_[k + 1] == '-') digits.push_back('-');
        k = e;
        take_digits();
      }
    }
    const char* first = digits.data();
    const char* last = digits.data() + digits.size();
    if (is_float) {
      token->kind = Tok::kFloat;
      const auto r = std::from_chars(first, last, token->float_value);
      if (r.ec != std::errc() || r.ptr != last || !std::isfinite(token->float_value)) {
        return template_error(ErrorCode::kCorrupt, src_, token->pos, "invalid float literal");
      }
      return {};
    }
    token->kind = Tok::kInt;
    const auto r = std::from_chars(first, last, token->int_value);
    if (r.ec != std::errc() || r.ptr != last) {
      return template_error(ErrorCode::kOutOfRange, src_, token->pos,
                            "integer literal out of the 64-bit range");
    }
    return {};
  }

  // A quoted string with Python's escapes; newlines may appear inside.
  Status lex_string(size_t& k, Token* token) {
    const char quote = src_[k];
    const uint32_t start = static_cast<uint32_t>(k);
    ++k;
    std::string out;
    while (true) {
      if (k >= src_.size()) {
        return template_error(ErrorCode::kCorrupt, src_, start, "unterminated string literal");
      }
      const char c = src_[k];
      if (c == quote) {
        ++k;
        break;
      }
      if (c != '\\') {
        out.push_back(c);
        ++k;
        continue;
      }
      if (k + 1 >= src_.size()) {
        return template_error(ErrorCode::kCorrupt, src_, start, "unterminated string literal");
      }
      const char e = src_[k + 1];
      k += 2;
      switch (e) {
        case '\\': out.push_back('\\'); break;
        case '\'': out.push_back('\''); break;
        case '"': out.push_back('"'); break;
        case 'a': out.push_back('\a'); break;
        case 'b': out.push_back('\b'); break;
        case 'f': out.push_back('\f'); break;
        case 'n': out.push_back('\n'); break;
        case 'r': out.push_back('\r'); break;
        case 't': out.push_back('\t'); break;
        case 'v': out.push_back('\v'); break;
        case '\n': break;  // a backslash-newline continues the line
        case 'x':
        case 'u':
        case 'U': {
          const size_t len = e == 'x' ? 2 : (e == 'u' ? 4 : 8);
          uint32_t cp = 0;
          for (size_t d = 0; d < len; ++d) {
            const char h = k + d < src_.size() ? src_[k + d] : '\0';
            int v = -1;
            if (h >= '0' && h <= '9') v = h - '0';
            if (h >= 'a' && h <= 'f') v = h - 'a' + 10;
            if (h >= 'A' && h <= 'F') v = h - 'A' + 10;
            if (v < 0) {
              return template_error(ErrorCode::kCorrupt, src_, static_cast<uint32_t>(k - 2),
                                    "truncated \\x, \\u or \\U escape");
            }
            cp = cp * 16 + static_cast<uint32_t>(v);
          }
          k += len;
          if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
            return template_error(ErrorCode::kCorrupt, src_, static_cast<uint32_t>(k - len - 2),
                                  "escape names no Unicode scalar value");
          }
          append_utf8(out, cp);
          break;
        }
        default:
          if (e >= '0' && e <= '7') {
            uint32_t cp = static_cast<uint32_t>(e - '0');
            for (int d = 0; d < 2 && k < src_.size() && src_[k] >= '0' && src_[k] <= '7'; ++d) {
              cp = cp * 8 + static_cast<uint32_t>(src_[k++] - '0');
            }
            append_utf8(out, cp);
          } else {
            out.push_back('\\');  // Python keeps unknown escapes as written
            out.push_back(e);
          }
      }
    }
    token->kind = Tok::kString;
    token->text = std::move(out);
    return {};
  }

  std::string_view src_;
  ChatTemplateOptions options_;
};

// ------------------------------------------------------------------ syntax tree

enum class ExprKind : uint8_t {
  kLiteral,
  kName,
  kList,     // args: the elements (tuples too)
  kDict,     // args: key, value, key, value, ...
  kAttr,     // a.name
  kItem,     // a[b]
  kSlice,    // a[args[0]:args[1]:args[2]], -1 where absent
  kCall,     // a(args, kwargs)
  kFilter,   // a | name(args, kwargs)
  kTest,     // a is [not] name(args)
  kNeg,      // -a
  kPos,      // +a
  kNot,      // not a
  kAnd,      // a and b
  kOr,       // a or b
  kBinary,   // a <op> b
  kTernary,  // a if b else c (c = -1 without else)
};

enum class BinOp : uint8_t {
  kAdd,
  kSub,
  kMul,
  kDiv,
  kFloorDiv,
  kMod,
  kPow,
  kConcat,
  kEq,
  kNe,
  kLt,
  kLe,
  kGt,
  kGe,
  kIn,
  kNotIn,
};

struct Expr {
  ExprKind kind = ExprKind::kLiteral;
  BinOp op = BinOp::kAdd;
  bool negated = false;  // kTest: "is not"; kList: a tuple
  uint32_t pos = 0;
  uint32_t depth = 1;  // of the tree below and including this node
  std::string name;  // kName, kAttr, kFilter, kTest
  Value literal;     // kLiteral
  int32_t a = -1;
  int32_t b = -1;
  int32_t c = -1;
  std::vector<int32_t> args;
  std::vector<std::string> kwarg_names;
  std::vector<int32_t> kwargs;
};

enum class StmtKind : uint8_t {
  kText,
  kOutput,    // {{ expr }}
  kIf,        // branches, else_body
  kFor,       // targets in expr [if cond]: body [else else_body]
  kSet,       // targets = expr, or targets[0].attr = expr
  kSetBlock,  // set targets[0] %} body {% endset
  kBreak,
  kContinue,
  kBlock,     // generation: just its body
};

struct IfBranch {
  int32_t cond = -1;
  std::vector<int32_t> body;
};

struct Stmt {
  StmtKind kind = StmtKind::kText;
  uint32_t pos = 0;
  std::string text;
  int32_t expr = -1;
  int32_t cond = -1;
  std::vector<std::string> targets;
  std::string attr;
  std::vector<IfBranch> branches;
  std::vector<int32_t> body;
  std::vector<int32_t> else_body;
};

bool known_filter(std::string_view n) {
  static constexpr std::string_view kFilters[] = {
      "trim",  "length", "count",  "upper",   "lower",  "capitalize", "title",      "default",
      "d",     "join",   "tojson", "string",  "first",  "last",       "list",       "reverse",
      "replace", "int",  "float",  "abs",     "items",  "map",        "select",     "reject",
      "selectattr", "rejectattr", "unique", "safe"};
  return std::find(std::begin(kFilters), std::end(kFilters), n) != std::end(kFilters);
}

bool known_test(std::string_view n) {
  static constexpr std::string_view kTests[] = {
      "defined", "undefined", "none",  "string", "number", "integer", "float", "boolean",
      "mapping", "iterable",  "sequence", "true", "false", "even",    "odd",   "divisibleby",
      "eq",      "equalto",   "==",    "ne",     "!=",     "lt",      "<",     "le",
      "<=",      "gt",        ">",     "ge",     ">=",     "in",      "lessthan", "greaterthan"};
  return std::find(std::begin(kTests), std::end(kTests), n) != std::end(kTests);
}

}  // namespace

struct ChatTemplateProgram {
  std::string source;  // newlines normalised; positions refer to it
  std::vector<Expr> exprs;
  std::vector<Stmt> stmts;
  std::vector<int32_t> root;
};

namespace {

// ------------------------------------------------------------------ parser

class Parser {
 public:
  Parser(std::vector<Token> tokens, ChatTemplateProgram* program)
      : tokens_(std::move(tokens)), p_(program) {}

  Status run() {
    std::string ender;
    CT_ASSIGN_OR_RETURN(p_->root, parse_body({}, &ender, 0));
    if (too_deep_at_ != UINT32_MAX) {
      return template_error(ErrorCode::kOutOfRange, p_->source, too_deep_at_,
                            std::string("expression tree deeper than ")
                                .append(std::to_string(kChatTemplateExpressionTreeDepthMax)));
    }
    return {};
  }

 private:
  const Token& peek(size_t ahead = 0) const {
    const size_t k = std::min(i_ + ahead, tokens_.size() - 1);
    return tokens_[k];
  }
  const Token& next() {
    const Token& t = tokens_[i_];
    if (i_ + 1 < tokens_.size()) ++i_;
    return t;
  }
  bool at_op(std::string_view op, size_t ahead = 0) const {
    return peek(ahead).kind == Tok::kOp && peek(ahead).text == op;
  }
  bool at_name(std::string_view name, size_t ahead = 0) const {
    return peek(ahead).kind == Tok::kName && peek(ahead).text == name;
  }

  Unexpected error(const Token& t, std::string_view what, ErrorCode code = ErrorCode::kCorrupt) {
    return template_error(code, p_->source, t.pos, what);
  }

  std::string describe(const Token& t) const {
    switch (t.kind) {
      case Tok::kText: return "text";
      case Tok::kVarBegin: return "'{{'";
      case Tok::kVarEnd: return "'}}'";
      case Tok::kBlockBegin: return "'{%'";
      case Tok::kBlockEnd: return "'%}'";
      case Tok::kName: return std::string("name ").append(quoted(t.text));
      case Tok::kString: return "a string";
      case Tok::kInt:
      case Tok::kFloat: return "a number";
      case Tok::kOp: return quoted(t.text);
      case Tok::kEnd: return "the end of the template";
    }
    return "?";
  }

  Unexpected unexpected(const Token& t, std::string_view wanted) {
    std::string what("expected ");
    what.append(wanted).append(", found ").append(describe(t));
    return error(t, what);
  }

  Status expect_op(std::string_view op) {
    if (!at_op(op)) return unexpected(peek(), quoted(op));
    next();
    return {};
  }
  Status expect_block_end() {
    if (peek().kind != Tok::kBlockEnd) return unexpected(peek(), "'%}'");
    next();
    return {};
  }
  Result<std::string> expect_name() {
    if (peek().kind != Tok::kName) return unexpected(peek(), "a name");
    return next().text;
  }

  // Children are always added before their parent, so a node's depth is
  // known when it is added; the first node over the limit is reported when
  // the parse ends (nothing recurses over the tree before that).
  int32_t add_expr(Expr e) {
    uint32_t below = 0;
    auto visit = [&](int32_t child) {
      if (child >= 0) below = std::max(below, p_->exprs[static_cast<size_t>(child)].depth);
    };
    visit(e.a);
    visit(e.b);
    visit(e.c);
    for (int32_t child : e.args) visit(child);
    for (int32_t child : e.kwargs) visit(child);
    e.depth = below + 1;
    if (e.depth > kChatTemplateExpressionTreeDepthMax && too_deep_at_ == UINT32_MAX) {
      too_deep_at_ = e.pos;
    }
    p_->exprs.push_back(std::move(e));
    return static_cast<int32_t>(p_->exprs.size() - 1);
  }
  int32_t add_stmt(Stmt s) {
    p_->stmts.push_back(std::move(s));
    return static_cast<int32_t>(p_->stmts.size() - 1);
  }

  // ---- statements

  // Statements until a block tag named in `enders` (its '{%' and name are
  // consumed and the name stored in *ender) or, with no enders, the end.
  Result<std::vector<int32_t>> parse_body(std::initializer_list<std::string_view> enders,
                                          std::string* ender, size_t depth) {
    if (depth > kChatTemplateBlockDepthMax) {
      return error(peek(), std::string("blocks nested deeper than ")
                               .append(std::to_string(kChatTemplateBlockDepthMax)),
                   ErrorCode::kOutOfRange);
    }
    std::vector<int32_t> body;
    while (true) {
      const Token& t = peek();
      switch (t.kind) {
        case Tok::kEnd:
          if (enders.size() != 0) {
            std::string what("unexpected end of template: expected ");
            bool first = true;
            for (std::string_view e : enders) {
              what.append(first ? "" : " or ").append("'{% ").append(e).append(" %}'");
              first = false;
            }
            return error(t, what);
          }
          return body;
        case Tok::kText: {
          Stmt s;
          s.kind = StmtKind::kText;
          s.pos = t.pos;
          s.text = next().text;
          body.push_back(add_stmt(std::move(s)));
          break;
        }
        case Tok::kVarBegin: {
          next();
          Stmt s;
          s.kind = StmtKind::kOutput;
          s.pos = t.pos;
          CT_ASSIGN_OR_RETURN(s.expr, parse_tuple(true));
          if (peek().kind != Tok::kVarEnd) return unexpected(peek(), "'}}'");
          next();
          body.push_back(add_stmt(std::move(s)));
          break;
        }
        case Tok::kBlockBegin: {
          const uint32_t pos = t.pos;
          next();
          if (peek().kind != Tok::kName) return unexpected(peek(), "a tag name");
          const std::string name = peek().text;
          if (std::find(enders.begin(), enders.end(), name) != enders.end()) {
            next();
            *ender = name;
            return body;
          }
          CT_ASSIGN_OR_RETURN(int32_t stmt, parse_statement(pos, depth));
          body.push_back(stmt);
          break;
        }
        default: return unexpected(t, "text or a tag");
      }
    }
  }

  Result<int32_t> parse_statement(uint32_t pos, size_t depth) {
    const Token& name_token = peek();
    const std::string name = next().text;
    Stmt s;
    s.pos = pos;
    std::string ender;
    if (name == "if") {
      s.kind = StmtKind::kIf;
      IfBranch branch;
      CT_ASSIGN_OR_RETURN(branch.cond, parse_tuple(true));
      IF_RETURN_IF_ERROR(expect_block_end());
      CT_ASSIGN_OR_RETURN(branch.body, parse_body({"elif", "else", "endif"}, &ender, depth + 1));
      s.branches.push_back(std::move(branch));
      while (ender == "elif") {
        IfBranch more;
        CT_ASSIGN_OR_RETURN(more.cond, parse_tuple(true));
        IF_RETURN_IF_ERROR(expect_block_end());
        CT_ASSIGN_OR_RETURN(more.body, parse_body({"elif", "else", "endif"}, &ender, depth + 1));
        s.branches.push_back(std::move(more));
      }
      if (ender == "else") {
        IF_RETURN_IF_ERROR(expect_block_end());
        CT_ASSIGN_OR_RETURN(s.else_body, parse_body({"endif"}, &ender, depth + 1));
      }
      IF_RETURN_IF_ERROR(expect_block_end());
      return add_stmt(std::move(s));
    }
    if (name == "for") {
      s.kind = StmtKind::kFor;
      CT_ASSIGN_OR_RETURN(s.targets, parse_targets());
      if (!at_name("in")) return unexpected(peek(), "'in'");
      next();
      CT_ASSIGN_OR_RETURN(s.expr, parse_tuple(false));
      if (at_name("if")) {
        next();
        CT_ASSIGN_OR_RETURN(s.cond, parse_expression(true));
      }
      if (at_name("recursive")) {
        return error(peek(), "recursive for loops are not supported", ErrorCode::kUnsupported);
      }
      IF_RETURN_IF_ERROR(expect_block_end());
      ++loop_depth_;
      CT_ASSIGN_OR_RETURN(s.body, parse_body({"else", "endfor"}, &ender, depth + 1));
      --loop_depth_;
      if (ender == "else") {
        IF_RETURN_IF_ERROR(expect_block_end());
        CT_ASSIGN_OR_RETURN(s.else_body, parse_body({"endfor"}, &ender, depth + 1));
      }
      IF_RETURN_IF_ERROR(expect_block_end());
      return add_stmt(std::move(s));
    }
    if (name == "set") {
      CT_ASSIGN_OR_RETURN(std::string first, expect_name());
      s.targets.push_back(std::move(first));
      if (at_op(".")) {
        next();
        CT_ASSIGN_OR_RETURN(s.attr, expect_name());
      } else {
        while (at_op(",")) {
          next();
          CT_ASSIGN_OR_RETURN(std::string more, expect_name());
          s.targets.push_back(std::move(more));
        }
      }
      if (peek().kind == Tok::kBlockEnd && s.targets.size() == 1 && s.attr.empty()) {
        next();
        s.kind = StmtKind::kSetBlock;
        CT_ASSIGN_OR_RETURN(s.body, parse_body({"endset"}, &ender, depth + 1));
        IF_RETURN_IF_ERROR(expect_block_end());
        return add_stmt(std::move(s));
      }
      IF_RETURN_IF_ERROR(expect_op("="));
      s.kind = StmtKind::kSet;
      CT_ASSIGN_OR_RETURN(s.expr, parse_tuple(true));
      IF_RETURN_IF_ERROR(expect_block_end());
      return add_stmt(std::move(s));
    }
    if (name == "break" || name == "continue") {
      if (loop_depth_ == 0) {
        return error(name_token, std::string(quoted(name)).append(" outside a for loop"));
      }
      s.kind = name == "break" ? StmtKind::kBreak : StmtKind::kContinue;
      IF_RETURN_IF_ERROR(expect_block_end());
      return add_stmt(std::move(s));
    }
    if (name == "generation") {
      s.kind = StmtKind::kBlock;
      IF_RETURN_IF_ERROR(expect_block_end());
      CT_ASSIGN_OR_RETURN(s.body, parse_body({"endgeneration"}, &ender, depth + 1));
      IF_RETURN_IF_ERROR(expect_block_end());
      return add_stmt(std::move(s));
    }
    static constexpr std::string_view kUnsupportedTags[] = {
        "macro", "call", "filter", "raw", "include", "import", "from", "extends", "block",
        "with",  "autoescape", "do", "trans"};
    if (std::find(std::begin(kUnsupportedTags), std::end(kUnsupportedTags), name) !=
        std::end(kUnsupportedTags)) {
      return error(name_token, std::string("the '{% ").append(name).append(" %}' tag is not supported"),
                   ErrorCode::kUnsupported);
    }
    return error(name_token, std::string("unknown or misplaced tag ").append(quoted(name)));
  }

  Result<std::vector<std::string>> parse_targets() {
    std::vector<std::string> targets;
    CT_ASSIGN_OR_RETURN(std::string first, expect_name());
    targets.push_back(std::move(first));
    while (at_op(",")) {
      next();
      CT_ASSIGN_OR_RETURN(std::string more, expect_name());
      targets.push_back(std::move(more));
    }
    return targets;
  }

  // ---- expressions

  // Guards every recursive path through the expression grammar.
  struct DepthGuard {
    explicit DepthGuard(size_t* d) : depth(d) { ++*depth; }
    ~DepthGuard() { --*depth; }
    size_t* depth;
  };
  Status check_depth() {
    if (expr_depth_ > kChatTemplateExpressionDepthMax) {
      return error(peek(), std::string("expression nested deeper than ")
                               .append(std::to_string(kChatTemplateExpressionDepthMax)),
                   ErrorCode::kOutOfRange);
    }
    return {};
  }

  // An expression, or several separated by commas (a tuple, kept as a list).
  Result<int32_t> parse_tuple(bool with_condexpr) {
    const uint32_t pos = peek().pos;
    CT_ASSIGN_OR_RETURN(int32_t first, parse_expression(with_condexpr));
    if (!at_op(",")) return first;
    Expr list;
    list.kind = ExprKind::kList;
    list.negated = true;  // a tuple
    list.pos = pos;
    list.args.push_back(first);
    while (at_op(",")) {
      next();
      if (!starts_expression()) break;
      CT_ASSIGN_OR_RETURN(int32_t more, parse_expression(with_condexpr));
      list.args.push_back(more);
    }
    return add_expr(std::move(list));
  }

  bool starts_expression() const {
    const Token& t = peek();
    if (t.kind == Tok::kName || t.kind == Tok::kString || t.kind == Tok::kInt ||
        t.kind == Tok::kFloat) {
      return true;
    }
    return t.kind == Tok::kOp && (t.text == "(" || t.text == "[" || t.text == "{" ||
                                  t.text == "-" || t.text == "+");
  }

  Result<int32_t> parse_expression(bool with_condexpr) {
    DepthGuard guard(&expr_depth_);
    IF_RETURN_IF_ERROR(check_depth());
    if (!with_condexpr) return parse_or();
    const uint32_t pos = peek().pos;
    CT_ASSIGN_OR_RETURN(int32_t value, parse_or());
    while (at_name("if")) {
      next();
      Expr t;
      t.kind = ExprKind::kTernary;
      t.pos = pos;
      t.a = value;
      CT_ASSIGN_OR_RETURN(t.b, parse_or());
      if (at_name("else")) {
        next();
        CT_ASSIGN_OR_RETURN(t.c, parse_expression(true));
      }
      value = add_expr(std::move(t));
    }
    return value;
  }

  int32_t binary(ExprKind kind, BinOp op, uint32_t pos, int32_t a, int32_t b) {
    Expr e;
    e.kind = kind;
    e.op = op;
    e.pos = pos;
    e.a = a;
    e.b = b;
    return add_expr(std::move(e));
  }

  Result<int32_t> parse_or() {
    CT_ASSIGN_OR_RETURN(int32_t left, parse_and());
    while (at_name("or")) {
      const uint32_t pos = next().pos;
      CT_ASSIGN_OR_RETURN(int32_t right, parse_and());
      left = binary(ExprKind::kOr, BinOp::kAdd, pos, left, right);
    }
    return left;
  }

  Result<int32_t> parse_and() {
    CT_ASSIGN_OR_RETURN(int32_t left, parse_not());
    while (at_name("and")) {
      const uint32_t pos = next().pos;
      CT_ASSIGN_OR_RETURN(int32_t right, parse_not());
      left = binary(ExprKind::kAnd, BinOp::kAdd, pos, left, right);
    }
    return left;
  }

  Result<int32_t> parse_not() {
    if (at_name("not")) {
      DepthGuard guard(&expr_depth_);
      IF_RETURN_IF_ERROR(check_depth());
      const uint32_t pos = next().pos;
      CT_ASSIGN_OR_RETURN(int32_t operand, parse_not());
      return binary(ExprKind::kNot, BinOp::kAdd, pos, operand, -1);
    }
    return parse_compare();
  }

  Result<int32_t> parse_compare() {
    CT_ASSIGN_OR_RETURN(int32_t left, parse_math1());
    while (true) {
      const Token& t = peek();
      BinOp op;
      if (t.kind == Tok::kOp && t.text == "==") {
        op = BinOp::kEq;
      } else if (t.kind == Tok::kOp && t.text == "!=") {
        op = BinOp::kNe;
      } else if (t.kind == Tok::kOp && t.text == "<") {
        op = BinOp::kLt;
      } else if (t.kind == Tok::kOp && t.text == "<=") {
        op = BinOp::kLe;
      } else if (t.kind == Tok::kOp && t.text == ">") {
        op = BinOp::kGt;
      } else if (t.kind == Tok::kOp && t.text == ">=") {
        op = BinOp::kGe;
      } else if (at_name("in")) {
        op = BinOp::kIn;
      } else if (at_name("not") && at_name("in", 1)) {
        op = BinOp::kNotIn;
        next();
      } else {
        return left;
      }
      const uint32_t pos = next().pos;
      CT_ASSIGN_OR_RETURN(int32_t right, parse_math1());
      left = binary(ExprKind::kBinary, op, pos, left, right);
    }
  }

  Result<int32_t> parse_math1() {
    CT_ASSIGN_OR_RETURN(int32_t left, parse_concat());
    while (at_op("+") || at_op("-")) {
      const BinOp op = peek().text == "+" ? BinOp::kAdd : BinOp::kSub;
      const uint32_t pos = next().pos;
      CT_ASSIGN_OR_RETURN(int32_t right, parse_concat());
      left = binary(ExprKind::kBinary, op, pos, left, right);
    }
    return left;
  }

  Result<int32_t> parse_concat() {
    CT_ASSIGN_OR_RETURN(int32_t left, parse_math2());
    while (at_op("~")) {
      const uint32_t pos = next().pos;
      CT_ASSIGN_OR_RETURN(int32_t right, parse_math2());
      left = binary(ExprKind::kBinary, BinOp::kConcat, pos, left, right);
    }
    return left;
  }

  Result<int32_t> parse_math2() {
    CT_ASSIGN_OR_RETURN(int32_t left, parse_pow());
    while (at_op("*") || at_op("/") || at_op("//") || at_op("%")) {
      const std::string& t = peek().text;
      const BinOp op = t == "*" ? BinOp::kMul
                       : t == "/" ? BinOp::kDiv
                       : t == "//" ? BinOp::kFloorDiv
                                   : BinOp::kMod;
      const uint32_t pos = next().pos;
      CT_ASSIGN_OR_RETURN(int32_t right, parse_pow());
      left = binary(ExprKind::kBinary, op, pos, left, right);
    }
    return left;
  }

  Result<int32_t> parse_pow() {
    CT_ASSIGN_OR_RETURN(int32_t left, parse_unary(true));
    while (at_op("**")) {
      const uint32_t pos = next().pos;
      CT_ASSIGN_OR_RETURN(int32_t right, parse_unary(true));
      left = binary(ExprKind::kBinary, BinOp::kPow, pos, left, right);
    }
    return left;
  }

  Result<int32_t> parse_unary(bool with_filter) {
    DepthGuard guard(&expr_depth_);
    IF_RETURN_IF_ERROR(check_depth());
    int32_t node;
    if (at_op("-") || at_op("+")) {
      const bool neg = peek().text == "-";
      const uint32_t pos = next().pos;
      CT_ASSIGN_OR_RETURN(int32_t operand, parse_unary(false));
      node = binary(neg ? ExprKind::kNeg : ExprKind::kPos, BinOp::kAdd, pos, operand, -1);
    } else {
      CT_ASSIGN_OR_RETURN(node, parse_primary());
    }
    CT_ASSIGN_OR_RETURN(node, parse_postfix(node));
    if (with_filter) {
      CT_ASSIGN_OR_RETURN(node, parse_filters(node));
    }
    return node;
  }

  Result<int32_t> parse_primary() {
    const Token& t = peek();
    Expr e;
    e.pos = t.pos;
    switch (t.kind) {
      case Tok::kName: {
        const std::string& n = t.text;
        if (n == "true" || n == "True") {
          e.literal = make_bool(true);
        } else if (n == "false" || n == "False") {
          e.literal = make_bool(false);
        } else if (n == "none" || n == "None") {
          e.literal = make_none();
        } else {
          e.kind = ExprKind::kName;
          e.name = n;
        }
        next();
        return add_expr(std::move(e));
      }
      case Tok::kString: {
        std::string s = next().text;
        while (peek().kind == Tok::kString) s.append(next().text);  // 'a' 'b' is 'ab'
        e.literal = make_string(std::move(s));
        return add_expr(std::move(e));
      }
      case Tok::kInt:
        e.literal = make_int(next().int_value);
        return add_expr(std::move(e));
      case Tok::kFloat:
        e.literal = make_float(next().float_value);
        return add_expr(std::move(e));
      case Tok::kOp:
        if (t.text == "(") {
          next();
          if (at_op(")")) {
            next();
            e.kind = ExprKind::kList;
            e.negated = true;  // the empty tuple
            return add_expr(std::move(e));
          }
          CT_ASSIGN_OR_RETURN(int32_t inner, parse_tuple(true));
          IF_RETURN_IF_ERROR(expect_op(")"));
          return inner;
        }
        if (t.text == "[") {
          next();
          e.kind = ExprKind::kList;
          while (!at_op("]")) {
            CT_ASSIGN_OR_RETURN(int32_t item, parse_expression(true));
            e.args.push_back(item);
            if (!at_op(",")) break;
            next();
          }
          IF_RETURN_IF_ERROR(expect_op("]"));
          return add_expr(std::move(e));
        }
        if (t.text == "{") {
          next();
          e.kind = ExprKind::kDict;
          while (!at_op("}")) {
            CT_ASSIGN_OR_RETURN(int32_t key, parse_expression(true));
            IF_RETURN_IF_ERROR(expect_op(":"));
            CT_ASSIGN_OR_RETURN(int32_t value, parse_expression(true));
            e.args.push_back(key);
            e.args.push_back(value);
            if (!at_op(",")) break;
            next();
          }
          IF_RETURN_IF_ERROR(expect_op("}"));
          return add_expr(std::move(e));
        }
        break;
      default: break;
    }
    return unexpected(t, "an expression");
  }

  Result<int32_t> parse_postfix(int32_t node) {
    while (true) {
      if (at_op(".")) {
        next();
        Expr e;
        e.kind = ExprKind::kAttr;
        e.pos = peek().pos;
        e.a = node;
        if (peek().kind == Tok::kName) {
          e.name = next().text;
        } else if (peek().kind == Tok::kInt) {  // a.0 is a[0]
          Expr index;
          index.pos = peek().pos;
          index.literal = make_int(next().int_value);
          e.kind = ExprKind::kItem;
          e.b = add_expr(std::move(index));
        } else {
          return unexpected(peek(), "an attribute name");
        }
        node = add_expr(std::move(e));
      } else if (at_op("[")) {
        const uint32_t pos = next().pos;
        CT_ASSIGN_OR_RETURN(node, parse_subscript(node, pos));
      } else if (at_op("(")) {
        Expr call;
        call.kind = ExprKind::kCall;
        call.pos = p_->exprs[static_cast<size_t>(node)].pos;  // errors point at the callee
        call.a = node;
        IF_RETURN_IF_ERROR(parse_call_args(&call));
        node = add_expr(std::move(call));
      } else {
        return node;
      }
    }
  }

  Result<int32_t> parse_subscript(int32_t node, uint32_t pos) {
    DepthGuard guard(&expr_depth_);
    IF_RETURN_IF_ERROR(check_depth());
    int32_t parts[3] = {-1, -1, -1};
    int colons = 0;
    while (true) {
      if (at_op(":")) {
        if (colons == 2) return unexpected(peek(), "']'");
        next();
        ++colons;
        continue;
      }
      if (at_op("]")) break;
      if (parts[colons] != -1) return unexpected(peek(), colons == 2 ? "']'" : "':' or ']'");
      CT_ASSIGN_OR_RETURN(parts[colons], parse_expression(true));
    }
    next();  // ']'
    Expr e;
    e.pos = pos;
    e.a = node;
    if (colons == 0) {
      if (parts[0] == -1) return error(peek(), "empty subscript '[]'");
      e.kind = ExprKind::kItem;
      e.b = parts[0];
    } else {
      e.kind = ExprKind::kSlice;
      e.args = {parts[0], parts[1], parts[2]};
    }
    return add_expr(std::move(e));
  }

  Status parse_call_args(Expr* call) {
    DepthGuard guard(&expr_depth_);
    IF_RETURN_IF_ERROR(check_depth());
    IF_RETURN_IF_ERROR(expect_op("("));
    while (!at_op(")")) {
      if (peek().kind == Tok::kName && at_op("=", 1)) {
        call->kwarg_names.push_back(next().text);
        next();
        CT_ASSIGN_OR_RETURN(int32_t value, parse_expression(true));
        call->kwargs.push_back(value);
      } else {
        if (!call->kwargs.empty()) {
          return error(peek(), "a positional argument after a keyword argument");
        }
        CT_ASSIGN_OR_RETURN(int32_t value, parse_expression(true));
        call->args.push_back(value);
      }
      if (!at_op(",")) break;
      next();
    }
    return expect_op(")");
  }

  Result<int32_t> parse_filters(int32_t node) {
    while (true) {
      if (at_op("|")) {
        next();
        const Token& name_token = peek();
        CT_ASSIGN_OR_RETURN(std::string name, expect_name());
        if (!known_filter(name)) {
          return error(name_token, std::string("unknown filter ").append(quoted(name)),
                       ErrorCode::kUnsupported);
        }
        Expr f;
        f.kind = ExprKind::kFilter;
        f.pos = name_token.pos;
        f.name = std::move(name);
        f.a = node;
        if (at_op("(")) IF_RETURN_IF_ERROR(parse_call_args(&f));
        node = add_expr(std::move(f));
      } else if (at_name("is")) {
        next();
        Expr t;
        t.kind = ExprKind::kTest;
        t.a = node;
        if (at_name("not")) {
          next();
          t.negated = true;
        }
        const Token& name_token = peek();
        t.pos = name_token.pos;
        CT_ASSIGN_OR_RETURN(t.name, expect_name());
        if (!known_test(t.name)) {
          return error(name_token, std::string("unknown test ").append(quoted(t.name)),
                       ErrorCode::kUnsupported);
        }
        if (at_op("(")) {
          IF_RETURN_IF_ERROR(parse_call_args(&t));
        } else if ((peek().kind == Tok::kString || peek().kind == Tok::kInt ||
                    peek().kind == Tok::kFloat ||
                    (peek().kind == Tok::kName && !at_name("else") && !at_name("or") &&
                     !at_name("and") && !at_name("if") && !at_name("is") &&
                     !at_name("in") && !at_name("not"))) ) {
          // One argument without parentheses: `x is divisibleby 3`.
          DepthGuard guard(&expr_depth_);
          IF_RETURN_IF_ERROR(check_depth());
          CT_ASSIGN_OR_RETURN(int32_t arg, parse_primary());
          CT_ASSIGN_OR_RETURN(arg, parse_postfix(arg));
          t.args.push_back(arg);
        }
        node = add_expr(std::move(t));
      } else {
        return node;
      }
    }
  }

  std::vector<Token> tokens_;
  size_t i_ = 0;
  ChatTemplateProgram* p_;
  size_t expr_depth_ = 0;
  size_t loop_depth_ = 0;
  uint32_t too_deep_at_ = UINT32_MAX;  // where the tree first got too deep
};

// ------------------------------------------------------------------ renderer

enum class Flow : uint8_t { kNormal, kBreak, kContinue };

using Frame = std::vector<std::pair<std::string, Value>>;

class Renderer {
 public:
  Renderer(const ChatTemplateProgram& p, const ChatTemplateInputs& in) : p_(p), in_(in) {}

  Result<std::string> run() {
    Frame globals;
    std::vector<Value> messages;
    messages.reserve(in_.messages.size());
    for (const ChatTurn& turn : in_.messages) {
      IF_RETURN_IF_ERROR(charge(turn.role.size() + turn.content.size() + 64, 0));
      auto dict = std::make_shared<Dict>();
      dict->entries.emplace_back("role", make_string(turn.role));
      dict->entries.emplace_back("content", make_string(turn.content));
      Value m;
      m.kind = Kind::kDict;
      m.depth = 1;
      m.dict = std::move(dict);
      messages.push_back(std::move(m));
    }
    CT_ASSIGN_OR_RETURN(Value list, make_list(std::move(messages), 0));
    globals.emplace_back("messages", std::move(list));
    globals.emplace_back("add_generation_prompt", make_bool(in_.add_generation_prompt));
    globals.emplace_back("bos_token", make_string(in_.bos_token));
    globals.emplace_back("eos_token", make_string(in_.eos_token));
    frames_.push_back(std::move(globals));
    std::string out;
    CT_ASSIGN_OR_RETURN(Flow flow, exec_body(p_.root, &out));
    (void)flow;  // break and continue only parse inside loops
    return out;
  }

 private:
  // ---- bookkeeping

  Unexpected error(uint32_t pos, std::string_view what, ErrorCode code = ErrorCode::kCorrupt) {
    return template_error(code, p_.source, pos, what);
  }

  Status step(uint32_t pos, uint64_t n = 1) {
    steps_ += n;
    if (steps_ > kChatTemplateStepsMax) {
      return error(pos, std::string("rendering took more than ")
                            .append(std::to_string(kChatTemplateStepsMax))
                            .append(" steps"),
                   ErrorCode::kOutOfRange);
    }
    return {};
  }

  Status charge(uint64_t bytes, uint32_t pos) {
    work_bytes_ += bytes;
    if (work_bytes_ > kChatTemplateWorkBytesMax) {
      return error(pos, std::string("rendering built more than ")
                            .append(std::to_string(kChatTemplateWorkBytesMax))
                            .append(" bytes of values"),
                   ErrorCode::kOutOfRange);
    }
    return {};
  }

  Status check_string_size(uint64_t bytes, uint32_t pos) {
    if (bytes > kChatTemplateOutputBytesMax) {
      return error(pos, std::string("a string longer than ")
                            .append(std::to_string(kChatTemplateOutputBytesMax))
                            .append(" bytes"),
                   ErrorCode::kOutOfRange);
    }
    return {};
  }

  Result<Value> new_string(std::string s, uint32_t pos) {
    IF_RETURN_IF_ERROR(check_string_size(s.size(), pos));
    IF_RETURN_IF_ERROR(charge(s.size(), pos));
    return make_string(std::move(s));
  }

  Status check_depth(size_t depth, uint32_t pos) {
    if (depth > kChatTemplateValueDepthMax) {
      return error(pos, std::string("values nested deeper than ")
                            .append(std::to_string(kChatTemplateValueDepthMax)),
                   ErrorCode::kOutOfRange);
    }
    return {};
  }

  Result<Value> make_list(std::vector<Value> items, uint32_t pos) {
    size_t depth = 0;
    for (const Value& v : items) depth = std::max<size_t>(depth, v.depth);
    IF_RETURN_IF_ERROR(check_depth(depth + 1, pos));
    IF_RETURN_IF_ERROR(charge(16 * (items.size() + 1), pos));
    Value v;
    v.kind = Kind::kList;
    v.depth = static_cast<uint16_t>(depth + 1);
    v.items = std::make_shared<const std::vector<Value>>(std::move(items));
    return v;
  }

  Result<Value> make_dict(std::shared_ptr<Dict> dict, Kind kind, uint32_t pos) {
    size_t depth = 0;
    for (const auto& [k, v] : dict->entries) {
      depth = std::max<size_t>(depth, v.depth);
      if (kind == Kind::kNamespace && contains_namespace(v)) {
        return error(pos, "a namespace cannot hold a namespace");
      }
    }
    IF_RETURN_IF_ERROR(check_depth(depth + 1, pos));
    IF_RETURN_IF_ERROR(charge(48 * (dict->entries.size() + 1), pos));
    Value v;
    v.kind = kind;
    v.depth = static_cast<uint16_t>(depth + 1);
    v.dict = std::move(dict);
    return v;
  }

  Status emit(std::string* out, std::string_view s, uint32_t pos) {
    if (out->size() + s.size() > kChatTemplateOutputBytesMax) {
      return error(pos, std::string("output longer than ")
                            .append(std::to_string(kChatTemplateOutputBytesMax))
                            .append(" bytes"),
                   ErrorCode::kOutOfRange);
    }
    IF_RETURN_IF_ERROR(charge(s.size(), pos));
    out->append(s);
    return {};
  }

  // ---- variables

  // Lookups are linear; a template with thousands of names pays for them in
  // steps (one per 16 names compared), checked by the next step().
  const Value* lookup(std::string_view name) {
    for (auto f = frames_.rbegin(); f != frames_.rend(); ++f) {
      steps_ += f->size() / 16;
      for (const auto& [k, v] : *f) {
        if (k == name) return &v;
      }
    }
    return nullptr;
  }

  const Value* dict_find(const Dict& d, std::string_view key) {
    steps_ += d.entries.size() / 16;
    return d.find(key);
  }

  void dict_set(Dict& d, std::string_view key, Value v) {
    steps_ += d.entries.size() / 16;
    d.set(key, std::move(v));
  }

  // A substring search costs up to |haystack| * |needle| comparisons.
  Status charge_search(size_t haystack_bytes, size_t needle_bytes, uint32_t pos) {
    const uint64_t cost = (static_cast<uint64_t>(haystack_bytes) + 1) * (needle_bytes + 1) / 256;
    if (cost > kChatTemplateStepsMax) return step(pos, kChatTemplateStepsMax + 1);
    return step(pos, cost);
  }

  void assign(std::string_view name, Value value) {
    Frame& f = frames_.back();
    for (auto& [k, v] : f) {
      if (k == name) {
        v = std::move(value);
        return;
      }
    }
    f.emplace_back(std::string(name), std::move(value));
  }

  Status assign_targets(const std::vector<std::string>& targets, const Value& value,
                        uint32_t pos) {
    if (targets.size() == 1) {
      assign(targets[0], value);
      return {};
    }
    if (value.kind != Kind::kList || value.items->size() != targets.size()) {
      return error(pos, std::string("cannot unpack a ")
                            .append(kind_name(value.kind))
                            .append(" into ")
                            .append(std::to_string(targets.size()))
                            .append(" names"));
    }
    for (size_t k = 0; k < targets.size(); ++k) assign(targets[k], (*value.items)[k]);
    return {};
  }

  // ---- statements

  Result<Flow> exec_body(const std::vector<int32_t>& body, std::string* out) {
    for (int32_t s : body) {
      CT_ASSIGN_OR_RETURN(Flow flow, exec(p_.stmts[static_cast<size_t>(s)], out));
      if (flow != Flow::kNormal) return flow;
    }
    return Flow::kNormal;
  }

  Result<Flow> exec(const Stmt& s, std::string* out) {
    IF_RETURN_IF_ERROR(step(s.pos));
    switch (s.kind) {
      case StmtKind::kText:
        IF_RETURN_IF_ERROR(emit(out, s.text, s.pos));
        return Flow::kNormal;
      case StmtKind::kOutput: {
        CT_ASSIGN_OR_RETURN(Value v, eval(s.expr));
        if (v.kind == Kind::kString) {
          IF_RETURN_IF_ERROR(emit(out, *v.s, s.pos));
        } else {
          std::string text;
          IF_RETURN_IF_ERROR(append_str(v, &text, s.pos));
          IF_RETURN_IF_ERROR(emit(out, text, s.pos));
        }
        return Flow::kNormal;
      }
      case StmtKind::kIf:
        for (const IfBranch& branch : s.branches) {
          CT_ASSIGN_OR_RETURN(Value cond, eval(branch.cond));
          if (truthy(cond)) return exec_body(branch.body, out);
        }
        return exec_body(s.else_body, out);
      case StmtKind::kFor: return exec_for(s, out);
      case StmtKind::kSet: {
        CT_ASSIGN_OR_RETURN(Value v, eval(s.expr));
        if (s.attr.empty()) {
          IF_RETURN_IF_ERROR(assign_targets(s.targets, v, s.pos));
          return Flow::kNormal;
        }
        const Value* ns = lookup(s.targets[0]);
        if (ns == nullptr || ns->kind != Kind::kNamespace) {
          return error(s.pos, std::string("cannot set an attribute of ")
                                  .append(quoted(s.targets[0]))
                                  .append(", which is not a namespace"));
        }
        if (contains_namespace(v)) return error(s.pos, "a namespace cannot hold a namespace");
        IF_RETURN_IF_ERROR(check_depth(size_t{v.depth} + 1, s.pos));
        IF_RETURN_IF_ERROR(charge(48, s.pos));
        dict_set(*ns->dict, s.attr, std::move(v));
        return Flow::kNormal;
      }
      case StmtKind::kSetBlock: {
        std::string captured;
        CT_ASSIGN_OR_RETURN(Flow flow, exec_body(s.body, &captured));
        CT_ASSIGN_OR_RETURN(Value v, new_string(std::move(captured), s.pos));
        assign(s.targets[0], std::move(v));
        return flow;
      }
      case StmtKind::kBreak: return Flow::kBreak;
      case StmtKind::kContinue: return Flow::kContinue;
      case StmtKind::kBlock: return exec_body(s.body, out);
    }
    return Flow::kNormal;
  }

  Status count_iteration(uint32_t pos, uint64_t n = 1) {
    iterations_ += n;
    if (iterations_ > kChatTemplateLoopIterationsMax) {
      return error(pos, std::string("loops ran more than ")
                            .append(std::to_string(kChatTemplateLoopIterationsMax))
                            .append(" iterations"),
                   ErrorCode::kOutOfRange);
    }
    return {};
  }

  Result<std::vector<Value>> iterate(const Value& v, uint32_t pos) {
    std::vector<Value> items;
    switch (v.kind) {
      case Kind::kUndefined: return items;
      case Kind::kList:
        IF_RETURN_IF_ERROR(step(pos, v.items->size()));
        return *v.items;
      case Kind::kDict:
        IF_RETURN_IF_ERROR(step(pos, v.dict->entries.size()));
        for (const auto& [k, e] : v.dict->entries) items.push_back(make_string(k));
        return items;
      case Kind::kString: {
        const std::vector<size_t> starts = code_point_starts(*v.s);
        IF_RETURN_IF_ERROR(step(pos, starts.size()));
        IF_RETURN_IF_ERROR(charge(32 * starts.size(), pos));
        for (size_t k = 0; k + 1 < starts.size(); ++k) {
          items.push_back(make_string(v.s->substr(starts[k], starts[k + 1] - starts[k])));
        }
        return items;
      }
      default:
        return error(pos, std::string("cannot iterate over a ").append(kind_name(v.kind)));
    }
  }

  Result<Flow> exec_for(const Stmt& s, std::string* out) {
    CT_ASSIGN_OR_RETURN(Value iterable, eval(s.expr));
    CT_ASSIGN_OR_RETURN(std::vector<Value> items, iterate(iterable, s.pos));
    // Every iteration (and every test of the loop's filter) gets a fresh
    // scope: a `set` inside the body is gone in the next iteration and
    // after the loop, as in Jinja.
    if (s.cond != -1) {
      std::vector<Value> kept;
      for (const Value& item : items) {
        IF_RETURN_IF_ERROR(count_iteration(s.pos));
        frames_.emplace_back();
        IF_RETURN_IF_ERROR(assign_targets(s.targets, item, s.pos));
        CT_ASSIGN_OR_RETURN(Value keep, eval(s.cond));
        frames_.pop_back();
        if (truthy(keep)) kept.push_back(item);
      }
      items = std::move(kept);
    }
    const size_t n = items.size();
    for (size_t k = 0; k < n; ++k) {
      IF_RETURN_IF_ERROR(count_iteration(s.pos));
      frames_.emplace_back();
      IF_RETURN_IF_ERROR(assign_targets(s.targets, items[k], s.pos));
      auto loop = std::make_shared<Dict>();
      const auto index = static_cast<int64_t>(k);
      const auto length = static_cast<int64_t>(n);
      loop->entries.emplace_back("index", make_int(index + 1));
      loop->entries.emplace_back("index0", make_int(index));
      loop->entries.emplace_back("revindex", make_int(length - index));
      loop->entries.emplace_back("revindex0", make_int(length - index - 1));
      loop->entries.emplace_back("first", make_bool(k == 0));
      loop->entries.emplace_back("last", make_bool(k + 1 == n));
      loop->entries.emplace_back("length", make_int(length));
      loop->entries.emplace_back("depth", make_int(1));
      loop->entries.emplace_back("depth0", make_int(0));
      if (k > 0) loop->entries.emplace_back("previtem", items[k - 1]);
      if (k + 1 < n) loop->entries.emplace_back("nextitem", items[k + 1]);
      CT_ASSIGN_OR_RETURN(Value loop_value, make_dict(std::move(loop), Kind::kDict, s.pos));
      assign("loop", std::move(loop_value));
      CT_ASSIGN_OR_RETURN(Flow flow, exec_body(s.body, out));
      frames_.pop_back();
      if (flow == Flow::kBreak) break;
    }
    if (n == 0) return exec_body(s.else_body, out);
    return Flow::kNormal;
  }

  // ---- printing

  // Python's str(): strings as they are, containers with repr() inside.
  Status append_str(const Value& v, std::string* out, uint32_t pos) {
    switch (v.kind) {
      case Kind::kUndefined: break;
      case Kind::kString: out->append(*v.s); break;
      default: return append_repr(v, out, pos);
    }
    return check_string_size(out->size(), pos);
  }

  Status append_repr(const Value& v, std::string* out, uint32_t pos) {
    IF_RETURN_IF_ERROR(check_string_size(out->size(), pos));
    switch (v.kind) {
      case Kind::kUndefined: break;
      case Kind::kNone: out->append("None"); break;
      case Kind::kBool: out->append(v.b ? "True" : "False"); break;
      case Kind::kInt: out->append(std::to_string(v.i)); break;
      case Kind::kFloat: out->append(float_repr(v.f)); break;
      case Kind::kString: {
        const std::string& s = *v.s;
        const char q = (s.find('\'') != std::string::npos && s.find('"') == std::string::npos)
                           ? '"'
                           : '\'';
        out->push_back(q);
        for (char c : s) {
          const auto u = static_cast<uint8_t>(c);
          if (c == q || c == '\\') {
            out->push_back('\\');
            out->push_back(c);
          } else if (c == '\n') {
            out->append("\\n");
          } else if (c == '\r') {
            out->append("\\r");
          } else if (c == '\t') {
            out->append("\\t");
          } else if (u < 0x20 || u == 0x7F) {
            static constexpr char kHex[] = "0123456789abcdef";
            out->append("\\x");
            out->push_back(kHex[u >> 4]);
            out->push_back(kHex[u & 15]);
          } else {
            out->push_back(c);
          }
        }
        out->push_back(q);
        break;
      }
      case Kind::kList: {
        out->push_back(v.tuple ? '(' : '[');
        bool first = true;
        for (const Value& e : *v.items) {
          if (!first) out->append(", ");
          first = false;
          IF_RETURN_IF_ERROR(append_repr(e, out, pos));
        }
        if (v.tuple && v.items->size() == 1) out->push_back(',');
        out->push_back(v.tuple ? ')' : ']');
        break;
      }
      case Kind::kDict:
      case Kind::kNamespace: {
        if (v.kind == Kind::kNamespace) out->append("<Namespace ");
        out->push_back('{');
        bool first = true;
        for (const auto& [k, e] : v.dict->entries) {
          if (!first) out->append(", ");
          first = false;
          IF_RETURN_IF_ERROR(append_repr(make_string(k), out, pos));
          out->append(": ");
          IF_RETURN_IF_ERROR(append_repr(e, out, pos));
        }
        out->push_back('}');
        if (v.kind == Kind::kNamespace) out->push_back('>');
        break;
      }
      case Kind::kFunction: out->append("<function>"); break;
    }
    return check_string_size(out->size(), pos);
  }

  Result<std::string> to_str(const Value& v, uint32_t pos) {
    if (v.kind == Kind::kString) return *v.s;
    std::string out;
    IF_RETURN_IF_ERROR(append_str(v, &out, pos));
    return out;
  }

  static void append_json_string(std::string_view s, std::string* out) {
    out->push_back('"');
    for (char c : s) {
      const auto u = static_cast<uint8_t>(c);
      switch (c) {
        case '"': out->append("\\\""); break;
        case '\\': out->append("\\\\"); break;
        case '\n': out->append("\\n"); break;
        case '\r': out->append("\\r"); break;
        case '\t': out->append("\\t"); break;
        case '\b': out->append("\\b"); break;
        case '\f': out->append("\\f"); break;
        default:
          if (u < 0x20) {
            static constexpr char kHex[] = "0123456789abcdef";
            out->append("\\u00");
            out->push_back(kHex[u >> 4]);
            out->push_back(kHex[u & 15]);
          } else {
            out->push_back(c);
          }
      }
    }
    out->push_back('"');
  }

  // json.dumps(v, ensure_ascii=False, indent=indent), as transformers'
  // tojson: ", " and ": " without indent, "," and ": " with it.
  Status append_json(const Value& v, std::string* out, const std::string* indent, size_t level,
                     uint32_t pos) {
    IF_RETURN_IF_ERROR(check_string_size(out->size(), pos));
    auto newline = [&](size_t lvl) {
      out->push_back('\n');
      for (size_t k = 0; k < lvl; ++k) out->append(*indent);
    };
    switch (v.kind) {
      case Kind::kNone: out->append("null"); break;
      case Kind::kBool: out->append(v.b ? "true" : "false"); break;
      case Kind::kInt: out->append(std::to_string(v.i)); break;
      case Kind::kFloat:
        if (std::isnan(v.f)) {
          out->append("NaN");
        } else if (std::isinf(v.f)) {
          out->append(v.f > 0 ? "Infinity" : "-Infinity");
        } else {
          out->append(float_repr(v.f));
        }
        break;
      case Kind::kString: append_json_string(*v.s, out); break;
      case Kind::kList: {
        if (v.items->empty()) {
          out->append("[]");
          break;
        }
        out->push_back('[');
        bool first = true;
        for (const Value& e : *v.items) {
          if (!first) out->append(indent != nullptr ? "," : ", ");
          first = false;
          if (indent != nullptr) newline(level + 1);
          IF_RETURN_IF_ERROR(append_json(e, out, indent, level + 1, pos));
        }
        if (indent != nullptr) newline(level);
        out->push_back(']');
        break;
      }
      case Kind::kDict:
      case Kind::kNamespace: {
        if (v.dict->entries.empty()) {
          out->append("{}");
          break;
        }
        out->push_back('{');
        bool first = true;
        for (const auto& [k, e] : v.dict->entries) {
          if (!first) out->append(indent != nullptr ? "," : ", ");
          first = false;
          if (indent != nullptr) newline(level + 1);
          append_json_string(k, out);
          out->append(": ");
          IF_RETURN_IF_ERROR(append_json(e, out, indent, level + 1, pos));
        }
        if (indent != nullptr) newline(level);
        out->push_back('}');
        break;
      }
      case Kind::kUndefined:
      case Kind::kFunction:
        return error(pos, std::string("tojson cannot serialise a ").append(kind_name(v.kind)));
    }
    return check_string_size(out->size(), pos);
  }

  // ---- comparisons

  // Python's ==, recursive for containers; counts one step per element.
  bool equal(const Value& a, const Value& b) {
    ++steps_;
    if (is_number(a) && is_number(b)) {
      if (is_intlike(a) && is_intlike(b)) return int_of(a) == int_of(b);
      return float_of(a) == float_of(b);
    }
    if (a.kind != b.kind) return false;
    switch (a.kind) {
      case Kind::kUndefined:
      case Kind::kNone: return true;
      case Kind::kString:
        steps_ += std::min(a.s->size(), b.s->size()) / 64;
        return *a.s == *b.s;
      case Kind::kList:
        if (a.items->size() != b.items->size()) return false;
        for (size_t k = 0; k < a.items->size(); ++k) {
          if (!equal((*a.items)[k], (*b.items)[k])) return false;
        }
        return true;
      case Kind::kDict:
        if (a.dict->entries.size() != b.dict->entries.size()) return false;
        for (const auto& [k, e] : a.dict->entries) {
          const Value* other = dict_find(*b.dict, k);
          if (other == nullptr || !equal(e, *other)) return false;
        }
        return true;
      case Kind::kNamespace: return a.dict == b.dict;
      case Kind::kFunction: return a.i == b.i;
      default: return false;
    }
  }

  Result<bool> less(const Value& a, const Value& b, uint32_t pos) {
    if (is_number(a) && is_number(b)) {
      if (is_intlike(a) && is_intlike(b)) return int_of(a) < int_of(b);
      return float_of(a) < float_of(b);
    }
    if (a.kind == Kind::kString && b.kind == Kind::kString) {
      IF_RETURN_IF_ERROR(step(pos, std::min(a.s->size(), b.s->size()) / 64));
      return *a.s < *b.s;
    }
    return error(pos, std::string("cannot order a ")
                          .append(kind_name(a.kind))
                          .append(" and a ")
                          .append(kind_name(b.kind)));
  }

  Result<bool> contains(const Value& container, const Value& item, uint32_t pos) {
    switch (container.kind) {
      case Kind::kUndefined: return false;
      case Kind::kString:
        if (item.kind != Kind::kString) {
          return error(pos, std::string("'in <string>' needs a string on the left, not a ")
                                .append(kind_name(item.kind)));
        }
        IF_RETURN_IF_ERROR(charge_search(container.s->size(), item.s->size(), pos));
        return container.s->find(*item.s) != std::string::npos;
      case Kind::kList: {
        bool found = false;
        for (const Value& e : *container.items) {
          if (equal(e, item)) {
            found = true;
            break;
          }
        }
        IF_RETURN_IF_ERROR(step(pos, 0));
        return found;
      }
      case Kind::kDict:
      case Kind::kNamespace:
        return item.kind == Kind::kString && dict_find(*container.dict, *item.s) != nullptr;
      default:
        return error(pos, std::string("'in' needs a container, not a ")
                              .append(kind_name(container.kind)));
    }
  }

  // ---- expressions

  Result<Value> eval(int32_t index) {
    const Expr& e = p_.exprs[static_cast<size_t>(index)];
    IF_RETURN_IF_ERROR(step(e.pos));
    switch (e.kind) {
      case ExprKind::kLiteral: return e.literal;
      case ExprKind::kName: {
        if (const Value* v = lookup(e.name)) return *v;
        if (e.name == "raise_exception") return make_function(Builtin::kRaiseException);
        if (e.name == "range") return make_function(Builtin::kRange);
        if (e.name == "namespace") return make_function(Builtin::kNamespace);
        if (e.name == "dict") return make_function(Builtin::kDict);
        return Value{};
      }
      case ExprKind::kList: {
        std::vector<Value> items;
        items.reserve(e.args.size());
        for (int32_t a : e.args) {
          CT_ASSIGN_OR_RETURN(Value v, eval(a));
          items.push_back(std::move(v));
        }
        CT_ASSIGN_OR_RETURN(Value list, make_list(std::move(items), e.pos));
        list.tuple = e.negated;
        return list;
      }
      case ExprKind::kDict: {
        auto dict = std::make_shared<Dict>();
        for (size_t k = 0; k + 1 < e.args.size(); k += 2) {
          CT_ASSIGN_OR_RETURN(Value key, eval(e.args[k]));
          CT_ASSIGN_OR_RETURN(Value value, eval(e.args[k + 1]));
          if (key.kind != Kind::kString) {
            return error(e.pos, std::string("dict keys must be strings, not ")
                                    .append(kind_name(key.kind)));
          }
          dict_set(*dict, *key.s, std::move(value));
        }
        IF_RETURN_IF_ERROR(step(e.pos, 0));
        return make_dict(std::move(dict), Kind::kDict, e.pos);
      }
      case ExprKind::kAttr: {
        CT_ASSIGN_OR_RETURN(Value obj, eval(e.a));
        return get_attr(obj, e.name);
      }
      case ExprKind::kItem: {
        CT_ASSIGN_OR_RETURN(Value obj, eval(e.a));
        CT_ASSIGN_OR_RETURN(Value key, eval(e.b));
        return get_item(obj, key, e.pos);
      }
      case ExprKind::kSlice: return eval_slice(e);
      case ExprKind::kCall: return eval_call(e);
      case ExprKind::kFilter: return eval_filter(e);
      case ExprKind::kTest: {
        CT_ASSIGN_OR_RETURN(Value v, eval(e.a));
        std::vector<Value> args;
        for (int32_t a : e.args) {
          CT_ASSIGN_OR_RETURN(Value arg, eval(a));
          args.push_back(std::move(arg));
        }
        CT_ASSIGN_OR_RETURN(bool result, apply_test(e.name, v, args, e.pos));
        return make_bool(result != e.negated);
      }
      case ExprKind::kNeg:
      case ExprKind::kPos: {
        CT_ASSIGN_OR_RETURN(Value v, eval(e.a));
        if (e.kind == ExprKind::kPos && is_number(v)) return v;
        if (is_intlike(v)) {
          if (int_of(v) == std::numeric_limits<int64_t>::min()) {
            return error(e.pos, "integer overflow", ErrorCode::kOutOfRange);
          }
          return make_int(-int_of(v));
        }
        if (v.kind == Kind::kFloat) return make_float(-v.f);
        return error(e.pos, std::string("bad operand for unary minus: ").append(kind_name(v.kind)));
      }
      case ExprKind::kNot: {
        CT_ASSIGN_OR_RETURN(Value v, eval(e.a));
        return make_bool(!truthy(v));
      }
      case ExprKind::kAnd: {
        CT_ASSIGN_OR_RETURN(Value left, eval(e.a));
        if (!truthy(left)) return left;
        return eval(e.b);
      }
      case ExprKind::kOr: {
        CT_ASSIGN_OR_RETURN(Value left, eval(e.a));
        if (truthy(left)) return left;
        return eval(e.b);
      }
      case ExprKind::kTernary: {
        CT_ASSIGN_OR_RETURN(Value cond, eval(e.b));
        if (truthy(cond)) return eval(e.a);
        if (e.c == -1) return Value{};
        return eval(e.c);
      }
      case ExprKind::kBinary: {
        CT_ASSIGN_OR_RETURN(Value left, eval(e.a));
        CT_ASSIGN_OR_RETURN(Value right, eval(e.b));
        return binary(e.op, left, right, e.pos);
      }
    }
    return error(e.pos, "unknown expression", ErrorCode::kInternal);
  }

  Value get_attr(const Value& obj, std::string_view name) {
    if ((obj.kind == Kind::kDict || obj.kind == Kind::kNamespace)) {
      if (const Value* v = dict_find(*obj.dict, name)) return *v;
    }
    return Value{};
  }

  Result<Value> get_item(const Value& obj, const Value& key, uint32_t pos) {
    if (obj.kind == Kind::kDict || obj.kind == Kind::kNamespace) {
      if (key.kind == Kind::kString) {
        if (const Value* v = dict_find(*obj.dict, *key.s)) return *v;
      }
      return Value{};
    }
    if (!is_intlike(key)) return Value{};
    int64_t i = int_of(key);
    if (obj.kind == Kind::kList) {
      const auto n = static_cast<int64_t>(obj.items->size());
      if (i < 0) i += n;
      if (i < 0 || i >= n) return Value{};
      return (*obj.items)[static_cast<size_t>(i)];
    }
    if (obj.kind == Kind::kString) {
      // Walk to the code point from the nearer end, without a table.
      const std::string& s = *obj.s;
      IF_RETURN_IF_ERROR(step(pos, s.size() / 64));
      size_t at = 0;
      if (i >= 0) {
        int64_t seen = -1;
        for (; at < s.size(); ++at) {
          if (at == 0 || !is_continuation(s[at])) {
            if (++seen == i) break;
          }
        }
        if (at >= s.size()) return Value{};
      } else {
        int64_t seen = 0;
        at = s.size();
        while (at > 0) {
          --at;
          if (at == 0 || !is_continuation(s[at])) {
            if (--seen == i) break;
          }
        }
        if (seen != i) return Value{};
      }
      size_t end = at + 1;
      while (end < s.size() && is_continuation(s[end])) ++end;
      return make_string(s.substr(at, end - at));
    }
    return Value{};
  }

  // Python's slice semantics over n elements: the indices taken, in order.
  Result<std::vector<size_t>> slice_indices(const Expr& e, size_t n) {
    int64_t parts[3] = {0, 0, 1};
    bool given[3] = {false, false, false};
    for (int k = 0; k < 3; ++k) {
      if (e.args[static_cast<size_t>(k)] == -1) continue;
      CT_ASSIGN_OR_RETURN(Value v, eval(e.args[static_cast<size_t>(k)]));
      if (v.kind == Kind::kNone || v.kind == Kind::kUndefined) continue;
      if (!is_intlike(v)) {
        return error(e.pos, std::string("slice indices must be integers, not ")
                                .append(kind_name(v.kind)));
      }
      parts[k] = int_of(v);
      given[k] = true;
    }
    const int64_t step_by = parts[2];
    if (step_by == 0) return error(e.pos, "slice step cannot be zero");
    if (step_by == std::numeric_limits<int64_t>::min()) {
      return error(e.pos, "slice step out of range", ErrorCode::kOutOfRange);
    }
    const auto len = static_cast<int64_t>(n);
    auto adjust = [&](int64_t v, bool is_given, int64_t dflt) {
      if (!is_given) return dflt;
      if (v < 0) v = v < -len ? -1 : v + len;  // below the start
      if (step_by > 0) return std::clamp<int64_t>(v, 0, len);
      return std::clamp<int64_t>(v, -1, len - 1);
    };
    const int64_t start = adjust(parts[0], given[0], step_by > 0 ? 0 : len - 1);
    const int64_t stop = adjust(parts[1], given[1], step_by > 0 ? len : -1);
    std::vector<size_t> out;
    if (step_by > 0) {
      for (int64_t k = start; k < stop; k += step_by) {
        out.push_back(static_cast<size_t>(k));
        if (step_by > len) break;
      }
    } else {
      for (int64_t k = start; k > stop; k += step_by) {
        out.push_back(static_cast<size_t>(k));
        if (-step_by > len) break;
      }
    }
    IF_RETURN_IF_ERROR(step(e.pos, out.size()));
    return out;
  }

  Result<Value> eval_slice(const Expr& e) {
    CT_ASSIGN_OR_RETURN(Value obj, eval(e.a));
    if (obj.kind == Kind::kList) {
      CT_ASSIGN_OR_RETURN(std::vector<size_t> idx, slice_indices(e, obj.items->size()));
      std::vector<Value> items;
      items.reserve(idx.size());
      for (size_t k : idx) items.push_back((*obj.items)[k]);
      return make_list(std::move(items), e.pos);
    }
    if (obj.kind == Kind::kString) {
      IF_RETURN_IF_ERROR(step(e.pos, obj.s->size() / 64));
      const std::vector<size_t> starts = code_point_starts(*obj.s);
      CT_ASSIGN_OR_RETURN(std::vector<size_t> idx, slice_indices(e, starts.size() - 1));
      std::string out;
      for (size_t k : idx) out.append(*obj.s, starts[k], starts[k + 1] - starts[k]);
      return new_string(std::move(out), e.pos);
    }
    if (obj.kind == Kind::kUndefined) return Value{};
    return error(e.pos, std::string("cannot slice a ").append(kind_name(obj.kind)));
  }

  Result<Value> binary(BinOp op, const Value& a, const Value& b, uint32_t pos) {
    switch (op) {
      case BinOp::kEq: {
        const bool r = equal(a, b);
        IF_RETURN_IF_ERROR(step(pos, 0));
        return make_bool(r);
      }
      case BinOp::kNe: {
        const bool r = !equal(a, b);
        IF_RETURN_IF_ERROR(step(pos, 0));
        return make_bool(r);
      }
      case BinOp::kLt: {
        CT_ASSIGN_OR_RETURN(bool r, less(a, b, pos));
        return make_bool(r);
      }
      case BinOp::kGt: {
        CT_ASSIGN_OR_RETURN(bool r, less(b, a, pos));
        return make_bool(r);
      }
      case BinOp::kLe: {
        CT_ASSIGN_OR_RETURN(bool r, less(b, a, pos));
        return make_bool(!r);
      }
      case BinOp::kGe: {
        CT_ASSIGN_OR_RETURN(bool r, less(a, b, pos));
        return make_bool(!r);
      }
      case BinOp::kIn: {
        CT_ASSIGN_OR_RETURN(bool r, contains(b, a, pos));
        return make_bool(r);
      }
      case BinOp::kNotIn: {
        CT_ASSIGN_OR_RETURN(bool r, contains(b, a, pos));
        return make_bool(!r);
      }
      case BinOp::kConcat: {
        CT_ASSIGN_OR_RETURN(std::string left, to_str(a, pos));
        CT_ASSIGN_OR_RETURN(std::string right, to_str(b, pos));
        IF_RETURN_IF_ERROR(check_string_size(left.size() + right.size(), pos));
        left.append(right);
        return new_string(std::move(left), pos);
      }
      default: break;
    }
    if (op == BinOp::kAdd && a.kind == Kind::kString && b.kind == Kind::kString) {
      IF_RETURN_IF_ERROR(check_string_size(a.s->size() + b.s->size(), pos));
      std::string s(*a.s);
      s.append(*b.s);
      return new_string(std::move(s), pos);
    }
    if (op == BinOp::kAdd && a.kind == Kind::kList && b.kind == Kind::kList) {
      std::vector<Value> items(*a.items);
      items.insert(items.end(), b.items->begin(), b.items->end());
      IF_RETURN_IF_ERROR(step(pos, items.size()));
      return make_list(std::move(items), pos);
    }
    if (op == BinOp::kMul && ((a.kind == Kind::kString && is_intlike(b)) ||
                              (is_intlike(a) && b.kind == Kind::kString))) {
      const std::string& s = a.kind == Kind::kString ? *a.s : *b.s;
      const int64_t times = std::max<int64_t>(0, is_intlike(a) ? int_of(a) : int_of(b));
      if (!s.empty() && static_cast<uint64_t>(times) > kChatTemplateOutputBytesMax / s.size()) {
        return error(pos, "string repetition longer than the output limit",
                     ErrorCode::kOutOfRange);
      }
      std::string out;
      for (int64_t k = 0; k < times && !s.empty(); ++k) out.append(s);
      return new_string(std::move(out), pos);
    }
    if (!is_number(a) || !is_number(b)) {
      static constexpr const char* kNames[] = {"+", "-", "*", "/", "//", "%", "**"};
      return error(pos, std::string("unsupported operand types for ")
                            .append(kNames[static_cast<int>(op)])
                            .append(": ")
                            .append(kind_name(a.kind))
                            .append(" and ")
                            .append(kind_name(b.kind)));
    }
    if (is_intlike(a) && is_intlike(b) && op != BinOp::kDiv) {
      const int64_t x = int_of(a);
      const int64_t y = int_of(b);
      int64_t r = 0;
      bool overflow = false;
      switch (op) {
        case BinOp::kAdd: overflow = __builtin_add_overflow(x, y, &r); break;
        case BinOp::kSub: overflow = __builtin_sub_overflow(x, y, &r); break;
        case BinOp::kMul: overflow = __builtin_mul_overflow(x, y, &r); break;
        case BinOp::kFloorDiv:
        case BinOp::kMod: {
          if (y == 0) return error(pos, "integer division or modulo by zero");
          if (x == std::numeric_limits<int64_t>::min() && y == -1) {
            overflow = op == BinOp::kFloorDiv;
            r = 0;
            break;
          }
          int64_t q = x / y;
          int64_t m = x % y;
          if (m != 0 && ((m < 0) != (y < 0))) {
            --q;
            m += y;
          }
          r = op == BinOp::kFloorDiv ? q : m;
          break;
        }
        case BinOp::kPow: {
          if (y < 0) return make_float(std::pow(static_cast<double>(x), static_cast<double>(y)));
          r = 1;
          for (int64_t k = 0; k < y && !overflow; ++k) {
            overflow = __builtin_mul_overflow(r, x, &r);
            if (r == 0 || r == 1) break;
            if (r == -1) {
              r = (y % 2 == 0) ? 1 : -1;
              break;
            }
          }
          break;
        }
        default: break;
      }
      if (overflow) return error(pos, "integer overflow", ErrorCode::kOutOfRange);
      return make_int(r);
    }
    const double x = float_of(a);
    const double y = float_of(b);
    switch (op) {
      case BinOp::kAdd: return make_float(x + y);
      case BinOp::kSub: return make_float(x - y);
      case BinOp::kMul: return make_float(x * y);
      case BinOp::kDiv:
        if (y == 0) return error(pos, "division by zero");
        return make_float(x / y);
      case BinOp::kFloorDiv:
        if (y == 0) return error(pos, "division by zero");
        return make_float(std::floor(x / y));
      case BinOp::kMod: {
        if (y == 0) return error(pos, "modulo by zero");
        double m = std::fmod(x, y);
        if (m != 0 && ((m < 0) != (y < 0))) m += y;
        return make_float(m);
      }
      case BinOp::kPow: return make_float(std::pow(x, y));
      default: break;
    }
    return error(pos, "unknown operator", ErrorCode::kInternal);
  }

  // ---- calls

  struct Args {
    std::vector<Value> positional;
    std::vector<std::pair<std::string, Value>> keyword;

    const Value* get(size_t index, std::string_view name) const {
      if (index < positional.size()) return &positional[index];
      for (const auto& [k, v] : keyword) {
        if (k == name) return &v;
      }
      return nullptr;
    }
  };

  Result<Args> eval_args(const Expr& e) {
    Args args;
    for (int32_t a : e.args) {
      CT_ASSIGN_OR_RETURN(Value v, eval(a));
      args.positional.push_back(std::move(v));
    }
    for (size_t k = 0; k < e.kwargs.size(); ++k) {
      CT_ASSIGN_OR_RETURN(Value v, eval(e.kwargs[k]));
      args.keyword.emplace_back(e.kwarg_names[k], std::move(v));
    }
    return args;
  }

  Result<std::string> string_arg(const Args& args, size_t index, std::string_view name,
                                 std::string_view fallback, uint32_t pos) {
    const Value* v = args.get(index, name);
    if (v == nullptr || v->kind == Kind::kUndefined || v->kind == Kind::kNone) {
      return std::string(fallback);
    }
    if (v->kind != Kind::kString) {
      return error(pos, std::string("argument ")
                            .append(quoted(name))
                            .append(" must be a string, not ")
                            .append(kind_name(v->kind)));
    }
    return *v->s;
  }

  Result<int64_t> int_arg(const Args& args, size_t index, std::string_view name, int64_t fallback,
                          uint32_t pos) {
    const Value* v = args.get(index, name);
    if (v == nullptr || v->kind == Kind::kUndefined || v->kind == Kind::kNone) return fallback;
    if (!is_intlike(*v)) {
      return error(pos, std::string("argument ")
                            .append(quoted(name))
                            .append(" must be an integer, not ")
                            .append(kind_name(v->kind)));
    }
    return int_of(*v);
  }

  Result<Value> eval_call(const Expr& e) {
    const Expr& callee = p_.exprs[static_cast<size_t>(e.a)];
    if (callee.kind == ExprKind::kAttr) {
      CT_ASSIGN_OR_RETURN(Value obj, eval(callee.a));
      CT_ASSIGN_OR_RETURN(Args args, eval_args(e));
      return call_method(obj, callee.name, args, e.pos);
    }
    CT_ASSIGN_OR_RETURN(Value fn, eval(e.a));
    if (fn.kind != Kind::kFunction) {
      std::string what("cannot call ");
      if (callee.kind == ExprKind::kName) what.append(quoted(callee.name)).append(", a ");
      else what.append("a ");
      what.append(kind_name(fn.kind));
      return error(e.pos, what, fn.kind == Kind::kUndefined ? ErrorCode::kUnsupported
                                                            : ErrorCode::kCorrupt);
    }
    CT_ASSIGN_OR_RETURN(Args args, eval_args(e));
    switch (static_cast<Builtin>(fn.i)) {
      case Builtin::kRaiseException: {
        std::string message;
        if (!args.positional.empty()) {
          CT_ASSIGN_OR_RETURN(message, to_str(args.positional[0], e.pos));
        }
        return error(e.pos, std::string("raise_exception: ").append(message),
                     ErrorCode::kInvalidArgument);
      }
      case Builtin::kRange: {
        if (args.positional.empty() || args.positional.size() > 3 || !args.keyword.empty()) {
          return error(e.pos, "range() takes 1 to 3 integer arguments");
        }
        int64_t v[3] = {0, 0, 1};
        for (size_t k = 0; k < args.positional.size(); ++k) {
          if (!is_intlike(args.positional[k])) return error(e.pos, "range() takes integers");
        }
        if (args.positional.size() == 1) {
          v[1] = int_of(args.positional[0]);
        } else {
          v[0] = int_of(args.positional[0]);
          v[1] = int_of(args.positional[1]);
          if (args.positional.size() == 3) v[2] = int_of(args.positional[2]);
        }
        if (v[2] == 0) return error(e.pos, "range() step cannot be zero");
        // The count, in 128 bits so that no bound overflows.
        const __int128 span = static_cast<__int128>(v[1]) - v[0];
        __int128 count = 0;
        if (v[2] > 0 && span > 0) count = (span + v[2] - 1) / v[2];
        if (v[2] < 0 && span < 0) count = (-span + (-static_cast<__int128>(v[2])) - 1) /
                                          (-static_cast<__int128>(v[2]));
        if (count > static_cast<__int128>(kChatTemplateLoopIterationsMax)) {
          return error(e.pos, std::string("range() of more than ")
                                  .append(std::to_string(kChatTemplateLoopIterationsMax))
                                  .append(" numbers"),
                       ErrorCode::kOutOfRange);
        }
        IF_RETURN_IF_ERROR(step(e.pos, static_cast<uint64_t>(count)));
        std::vector<Value> items;
        items.reserve(static_cast<size_t>(count));
        for (__int128 k = 0; k < count; ++k) {
          items.push_back(make_int(static_cast<int64_t>(v[0] + k * v[2])));
        }
        return make_list(std::move(items), e.pos);
      }
      case Builtin::kNamespace:
      case Builtin::kDict: {
        auto dict = std::make_shared<Dict>();
        for (const Value& p : args.positional) {
          if (p.kind != Kind::kDict) {
            return error(e.pos, "namespace() and dict() take a dict or keyword arguments");
          }
          for (const auto& [k, v] : p.dict->entries) dict_set(*dict, k, v);
        }
        for (const auto& [k, v] : args.keyword) dict_set(*dict, k, v);
        IF_RETURN_IF_ERROR(step(e.pos, 0));
        const bool ns = static_cast<Builtin>(fn.i) == Builtin::kNamespace;
        return make_dict(std::move(dict), ns ? Kind::kNamespace : Kind::kDict, e.pos);
      }
    }
    return error(e.pos, "unknown function", ErrorCode::kInternal);
  }

  Result<Value> string_list(const std::vector<std::string>& parts, uint32_t pos) {
    std::vector<Value> items;
    items.reserve(parts.size());
    for (const std::string& p : parts) {
      CT_ASSIGN_OR_RETURN(Value v, new_string(p, pos));
      items.push_back(std::move(v));
    }
    return make_list(std::move(items), pos);
  }

  Result<Value> call_method(const Value& obj, std::string_view name, const Args& args,
                            uint32_t pos) {
    IF_RETURN_IF_ERROR(step(pos));
    if (obj.kind == Kind::kString) {
      const std::string& s = *obj.s;
      IF_RETURN_IF_ERROR(step(pos, s.size() / 64));
      if (name == "strip" || name == "lstrip" || name == "rstrip") {
        const bool left = name != "rstrip";
        const bool right = name != "lstrip";
        const Value* chars = args.get(0, "chars");
        if (chars != nullptr && chars->kind == Kind::kString) {
          IF_RETURN_IF_ERROR(charge_search(s.size(), chars->s->size(), pos));
          return new_string(std::string(strip_chars(s, *chars->s, left, right)), pos);
        }
        return new_string(std::string(strip_view(s, left, right)), pos);
      }
      if (name == "upper") return new_string(to_upper(s), pos);
      if (name == "lower") return new_string(to_lower(s), pos);
      if (name == "title") return new_string(title_case(s), pos);
      if (name == "capitalize") return new_string(capitalize(s), pos);
      if (name == "startswith" || name == "endswith") {
        const Value* arg = args.get(0, "prefix");
        if (arg == nullptr) return error(pos, std::string(name).append("() needs an argument"));
        std::vector<std::string_view> options;
        if (arg->kind == Kind::kString) {
          options.push_back(*arg->s);
        } else if (arg->kind == Kind::kList) {
          for (const Value& v : *arg->items) {
            if (v.kind != Kind::kString) break;
            options.push_back(*v.s);
          }
        }
        if (options.empty() && arg->kind != Kind::kList) {
          return error(pos, std::string(name).append("() needs a string or a tuple of strings"));
        }
        const std::string_view view(s);
        for (std::string_view o : options) {
          if (name == "startswith" ? view.starts_with(o) : view.ends_with(o)) {
            return make_bool(true);
          }
        }
        return make_bool(false);
      }
      if (name == "split") {
        CT_ASSIGN_OR_RETURN(int64_t max_split, int_arg(args, 1, "maxsplit", -1, pos));
        const Value* sep = args.get(0, "sep");
        std::vector<std::string> parts;
        if (sep == nullptr || sep->kind == Kind::kNone || sep->kind == Kind::kUndefined) {
          size_t k = 0;
          while (true) {
            while (k < s.size() && is_space(s[k])) ++k;
            if (k >= s.size()) break;
            if (max_split >= 0 && static_cast<int64_t>(parts.size()) == max_split) {
              parts.push_back(s.substr(k));
              break;
            }
            size_t e = k;
            while (e < s.size() && !is_space(s[e])) ++e;
            parts.push_back(s.substr(k, e - k));
            k = e;
          }
        } else {
          if (sep->kind != Kind::kString) return error(pos, "split() separator must be a string");
          if (sep->s->empty()) return error(pos, "split() separator is empty");
          IF_RETURN_IF_ERROR(charge_search(s.size(), sep->s->size(), pos));
          size_t k = 0;
          while (true) {
            const size_t e = s.find(*sep->s, k);
            if (e == std::string::npos ||
                (max_split >= 0 && static_cast<int64_t>(parts.size()) == max_split)) {
              parts.push_back(s.substr(k));
              break;
            }
            parts.push_back(s.substr(k, e - k));
            k = e + sep->s->size();
          }
        }
        IF_RETURN_IF_ERROR(step(pos, parts.size()));
        return string_list(parts, pos);
      }
      if (name == "replace") {
        CT_ASSIGN_OR_RETURN(std::string from, string_arg(args, 0, "old", "", pos));
        CT_ASSIGN_OR_RETURN(std::string to, string_arg(args, 1, "new", "", pos));
        CT_ASSIGN_OR_RETURN(int64_t count, int_arg(args, 2, "count", -1, pos));
        CT_ASSIGN_OR_RETURN(std::string out, replace(s, from, to, count, pos));
        return new_string(std::move(out), pos);
      }
      if (name == "find" || name == "count") {
        CT_ASSIGN_OR_RETURN(std::string sub, string_arg(args, 0, "sub", "", pos));
        IF_RETURN_IF_ERROR(charge_search(s.size(), sub.size(), pos));
        if (name == "find") {
          const size_t at = s.find(sub);
          if (at == std::string::npos) return make_int(-1);
          return make_int(static_cast<int64_t>(code_point_count(std::string_view(s).substr(0, at))));
        }
        if (sub.empty()) return make_int(static_cast<int64_t>(code_point_count(s) + 1));
        int64_t n = 0;
        for (size_t at = s.find(sub); at != std::string::npos; at = s.find(sub, at + sub.size())) {
          ++n;
        }
        return make_int(n);
      }
      if (name == "join") {
        const Value* items = args.get(0, "iterable");
        if (items == nullptr) return error(pos, "join() needs an argument");
        CT_ASSIGN_OR_RETURN(std::vector<Value> values, iterate(*items, pos));
        return join(values, s, pos);
      }
      return error(pos, std::string("str has no method ").append(quoted(name)),
                   ErrorCode::kUnsupported);
    }
    if (obj.kind == Kind::kDict) {
      const Dict& d = *obj.dict;
      IF_RETURN_IF_ERROR(step(pos, d.entries.size()));
      if (name == "items" || name == "keys" || name == "values") {
        std::vector<Value> out;
        for (const auto& [k, v] : d.entries) {
          if (name == "keys") {
            out.push_back(make_string(k));
          } else if (name == "values") {
            out.push_back(v);
          } else {
            CT_ASSIGN_OR_RETURN(Value pair, make_list({make_string(k), v}, pos));
            pair.tuple = true;
            out.push_back(std::move(pair));
          }
        }
        return make_list(std::move(out), pos);
      }
      if (name == "get") {
        const Value* key = args.get(0, "key");
        if (key != nullptr && key->kind == Kind::kString) {
          if (const Value* v = dict_find(d, *key->s)) return *v;
        }
        const Value* fallback = args.get(1, "default");
        return fallback != nullptr ? *fallback : make_none();
      }
      return error(pos, std::string("dict has no method ").append(quoted(name)),
                   ErrorCode::kUnsupported);
    }
    if (obj.kind == Kind::kUndefined) {
      return error(pos, std::string("cannot call ")
                            .append(quoted(name))
                            .append(" on an undefined value"));
    }
    return error(pos, std::string(kind_name(obj.kind)).append(" has no method ").append(quoted(name)),
                 ErrorCode::kUnsupported);
  }

  Result<std::string> replace(const std::string& s, const std::string& from, const std::string& to,
                              int64_t count, uint32_t pos) {
    IF_RETURN_IF_ERROR(charge_search(s.size(), from.size(), pos));
    std::string out;
    int64_t done = 0;
    if (from.empty()) {
      // Python inserts `to` before every code point and at the end.
      const std::vector<size_t> starts = code_point_starts(s);
      for (size_t k = 0; k + 1 < starts.size() || k == 0; ++k) {
        if (count < 0 || done < count) {
          out.append(to);
          ++done;
        }
        if (k + 1 < starts.size()) out.append(s, starts[k], starts[k + 1] - starts[k]);
        IF_RETURN_IF_ERROR(check_string_size(out.size(), pos));
        if (k + 1 >= starts.size()) break;
      }
      if (starts.size() > 1 && (count < 0 || done < count)) out.append(to);
      return out;
    }
    size_t k = 0;
    while (true) {
      const size_t at = (count >= 0 && done >= count) ? std::string::npos : s.find(from, k);
      if (at == std::string::npos) {
        out.append(s, k, std::string::npos);
        break;
      }
      out.append(s, k, at - k).append(to);
      ++done;
      k = at + from.size();
      IF_RETURN_IF_ERROR(check_string_size(out.size(), pos));
    }
    IF_RETURN_IF_ERROR(check_string_size(out.size(), pos));
    return out;
  }

  Result<Value> join(const std::vector<Value>& values, std::string_view sep, uint32_t pos) {
    IF_RETURN_IF_ERROR(step(pos, values.size()));
    std::string out;
    bool first = true;
    for (const Value& v : values) {
      if (!first) out.append(sep);
      first = false;
      IF_RETURN_IF_ERROR(append_str(v, &out, pos));
    }
    return new_string(std::move(out), pos);
  }

  // ---- filters

  Result<Value> eval_filter(const Expr& e) {
    CT_ASSIGN_OR_RETURN(Value v, eval(e.a));
    CT_ASSIGN_OR_RETURN(Args args, eval_args(e));
    return apply_filter(e.name, v, args, e.pos);
  }

  Result<Value> apply_filter(std::string_view name, const Value& v, const Args& args,
                             uint32_t pos) {
    // Every filter on a string may read all of it.
    IF_RETURN_IF_ERROR(step(pos, 1 + (v.kind == Kind::kString ? v.s->size() / 64 : 0)));
    if (name == "safe") return v;
    if (name == "default" || name == "d") {
      const Value* fallback = args.get(0, "default_value");
      const Value* boolean = args.get(1, "boolean");
      const bool use = v.kind == Kind::kUndefined ||
                       (boolean != nullptr && truthy(*boolean) && !truthy(v));
      if (!use) return v;
      return fallback != nullptr ? *fallback : make_string("");
    }
    if (name == "length" || name == "count") {
      switch (v.kind) {
        case Kind::kUndefined: return make_int(0);
        case Kind::kString: return make_int(static_cast<int64_t>(code_point_count(*v.s)));
        case Kind::kList: return make_int(static_cast<int64_t>(v.items->size()));
        case Kind::kDict:
        case Kind::kNamespace: return make_int(static_cast<int64_t>(v.dict->entries.size()));
        default:
          return error(pos, std::string("a ").append(kind_name(v.kind)).append(" has no length"));
      }
    }
    if (name == "tojson") {
      std::string indent;
      const Value* indent_arg = args.get(0, "indent");
      if (indent_arg != nullptr && is_intlike(*indent_arg)) {
        const int64_t n = int_of(*indent_arg);
        if (n > 64) return error(pos, "tojson indent over 64", ErrorCode::kOutOfRange);
        indent.assign(static_cast<size_t>(std::max<int64_t>(0, n)), ' ');
      } else if (indent_arg != nullptr && indent_arg->kind == Kind::kString) {
        if (indent_arg->s->size() > 64) {
          return error(pos, "tojson indent over 64", ErrorCode::kOutOfRange);
        }
        indent = *indent_arg->s;
      }
      const bool indented = indent_arg != nullptr && (is_intlike(*indent_arg) ||
                                                      indent_arg->kind == Kind::kString);
      std::string out;
      IF_RETURN_IF_ERROR(append_json(v, &out, indented ? &indent : nullptr, 0, pos));
      return new_string(std::move(out), pos);
    }
    if (name == "first" || name == "last") {
      if (v.kind == Kind::kList) {
        if (v.items->empty()) return Value{};
        return name == "first" ? v.items->front() : v.items->back();
      }
      if (v.kind == Kind::kString) {
        if (v.s->empty()) return Value{};
        return get_item(v, make_int(name == "first" ? 0 : -1), pos);
      }
      if (v.kind == Kind::kUndefined) return Value{};
      CT_ASSIGN_OR_RETURN(std::vector<Value> items, iterate(v, pos));
      if (items.empty()) return Value{};
      return name == "first" ? items.front() : items.back();
    }
    if (name == "list") {
      if (v.kind == Kind::kList) return v;
      CT_ASSIGN_OR_RETURN(std::vector<Value> items, iterate(v, pos));
      return make_list(std::move(items), pos);
    }
    if (name == "reverse") {
      if (v.kind == Kind::kString) {
        const std::vector<size_t> starts = code_point_starts(*v.s);
        std::string out;
        for (size_t k = starts.size() - 1; k > 0; --k) {
          out.append(*v.s, starts[k - 1], starts[k] - starts[k - 1]);
        }
        return new_string(std::move(out), pos);
      }
      CT_ASSIGN_OR_RETURN(std::vector<Value> items, iterate(v, pos));
      std::reverse(items.begin(), items.end());
      return make_list(std::move(items), pos);
    }
    if (name == "items") {
      if (v.kind == Kind::kUndefined) return make_list({}, pos);
      if (v.kind != Kind::kDict) {
        return error(pos, std::string("items needs a dict, not a ").append(kind_name(v.kind)));
      }
      return call_method(v, "items", Args{}, pos);
    }
    if (name == "join") {
      CT_ASSIGN_OR_RETURN(std::string sep, string_arg(args, 0, "d", "", pos));
      CT_ASSIGN_OR_RETURN(std::vector<Value> items, iterate(v, pos));
      const Value* attribute = args.get(1, "attribute");
      if (attribute != nullptr && attribute->kind == Kind::kString) {
        for (Value& item : items) item = get_attr(item, *attribute->s);
      }
      return join(items, sep, pos);
    }
    if (name == "map" || name == "select" || name == "reject" || name == "selectattr" ||
        name == "rejectattr" || name == "unique") {
      return apply_sequence_filter(name, v, args, pos);
    }
    if (name == "int") {
      const Value* fallback = args.get(0, "default");
      const Value dflt = fallback != nullptr ? *fallback : make_int(0);
      if (is_intlike(v)) return make_int(int_of(v));
      if (v.kind == Kind::kFloat) {
        if (!std::isfinite(v.f) || std::fabs(v.f) >= 9.2e18) return dflt;
        return make_int(static_cast<int64_t>(v.f));
      }
      if (v.kind == Kind::kString) {
        const std::string_view t = strip_view(*v.s, true, true);
        int64_t out = 0;
        const char* first = t.data();
        if (!t.empty() && t[0] == '+') ++first;
        const auto r = std::from_chars(first, t.data() + t.size(), out);
        if (r.ec == std::errc() && r.ptr == t.data() + t.size() && !t.empty()) {
          return make_int(out);
        }
        double d = 0;
        const auto rf = std::from_chars(first, t.data() + t.size(), d);
        if (rf.ec == std::errc() && rf.ptr == t.data() + t.size() && std::isfinite(d) &&
            std::fabs(d) < 9.2e18) {
          return make_int(static_cast<int64_t>(d));
        }
      }
      return dflt;
    }
    if (name == "float") {
      const Value* fallback = args.get(0, "default");
      const Value dflt = fallback != nullptr ? *fallback : make_float(0);
      if (is_number(v)) return make_float(float_of(v));
      if (v.kind == Kind::kString) {
        const std::string_view t = strip_view(*v.s, true, true);
        double d = 0;
        const char* first = t.data();
        if (!t.empty() && t[0] == '+') ++first;
        const auto r = std::from_chars(first, t.data() + t.size(), d);
        if (r.ec == std::errc() && r.ptr == t.data() + t.size() && !t.empty()) {
          return make_float(d);
        }
      }
      return dflt;
    }
    if (name == "abs") {
      if (is_intlike(v)) {
        if (int_of(v) == std::numeric_limits<int64_t>::min()) {
          return error(pos, "integer overflow", ErrorCode::kOutOfRange);
        }
        return make_int(std::abs(int_of(v)));
      }
      if (v.kind == Kind::kFloat) return make_float(std::fabs(v.f));
      return error(pos, std::string("abs needs a number, not a ").append(kind_name(v.kind)));
    }
    // The rest work on the value as a string.
    CT_ASSIGN_OR_RETURN(std::string s, to_str(v, pos));
    IF_RETURN_IF_ERROR(step(pos, s.size() / 64));
    if (name == "string") return new_string(std::move(s), pos);
    if (name == "trim") {
      const Value* chars = args.get(0, "chars");
      if (chars != nullptr && chars->kind == Kind::kString) {
        IF_RETURN_IF_ERROR(charge_search(s.size(), chars->s->size(), pos));
        return new_string(std::string(strip_chars(s, *chars->s, true, true)), pos);
      }
      return new_string(std::string(strip_view(s, true, true)), pos);
    }
    if (name == "upper") return new_string(to_upper(s), pos);
    if (name == "lower") return new_string(to_lower(s), pos);
    if (name == "capitalize") return new_string(capitalize(s), pos);
    if (name == "title") return new_string(title_case(s), pos);
    if (name == "replace") {
      CT_ASSIGN_OR_RETURN(std::string from, string_arg(args, 0, "old", "", pos));
      CT_ASSIGN_OR_RETURN(std::string to, string_arg(args, 1, "new", "", pos));
      CT_ASSIGN_OR_RETURN(int64_t count, int_arg(args, 2, "count", -1, pos));
      CT_ASSIGN_OR_RETURN(std::string out, replace(s, from, to, count, pos));
      return new_string(std::move(out), pos);
    }
    return error(pos, std::string("unknown filter ").append(quoted(name)), ErrorCode::kInternal);
  }

  Result<Value> apply_sequence_filter(std::string_view name, const Value& v, const Args& args,
                                      uint32_t pos) {
    CT_ASSIGN_OR_RETURN(std::vector<Value> items, iterate(v, pos));
    std::vector<Value> out;
    if (name == "unique") {
      IF_RETURN_IF_ERROR(step(pos, items.size() * items.size() / 8));
      for (const Value& item : items) {
        bool seen = false;
        for (const Value& kept : out) {
          if (equal(item, kept)) {
            seen = true;
            break;
          }
        }
        if (!seen) out.push_back(item);
      }
      IF_RETURN_IF_ERROR(step(pos, 0));
      return make_list(std::move(out), pos);
    }
    if (name == "map") {
      const Value* attribute = args.get(99, "attribute");
      if (attribute != nullptr) {
        if (attribute->kind != Kind::kString) return error(pos, "map attribute must be a string");
        const Value* fallback = args.get(99, "default");
        for (const Value& item : items) {
          Value got = get_attr(item, *attribute->s);
          if (got.kind == Kind::kUndefined && fallback != nullptr) got = *fallback;
          out.push_back(std::move(got));
        }
        return make_list(std::move(out), pos);
      }
      if (args.positional.empty() || args.positional[0].kind != Kind::kString) {
        return error(pos, "map needs attribute= or a filter name");
      }
      const std::string filter = *args.positional[0].s;
      if (!known_filter(filter) || filter == "map" || filter == "select" || filter == "reject" ||
          filter == "selectattr" || filter == "rejectattr") {
        return error(pos, std::string("map cannot apply the filter ").append(quoted(filter)),
                     ErrorCode::kUnsupported);
      }
      Args rest;
      rest.positional.assign(args.positional.begin() + 1, args.positional.end());
      rest.keyword = args.keyword;
      for (const Value& item : items) {
        CT_ASSIGN_OR_RETURN(Value mapped, apply_filter(filter, item, rest, pos));
        out.push_back(std::move(mapped));
      }
      return make_list(std::move(out), pos);
    }
    // select/reject(test, args...), selectattr/rejectattr(attr, test, args...).
    const bool by_attr = name == "selectattr" || name == "rejectattr";
    const bool keep_when = name == "select" || name == "selectattr";
    size_t next_arg = 0;
    std::string attribute;
    if (by_attr) {
      if (args.positional.empty() || args.positional[0].kind != Kind::kString) {
        return error(pos, std::string(name).append(" needs an attribute name"));
      }
      attribute = *args.positional[0].s;
      next_arg = 1;
    }
    std::string test;
    if (next_arg < args.positional.size()) {
      if (args.positional[next_arg].kind != Kind::kString ||
          !known_test(*args.positional[next_arg].s)) {
        return error(pos, std::string(name).append(" needs a known test name"),
                     ErrorCode::kUnsupported);
      }
      test = *args.positional[next_arg].s;
      ++next_arg;
    }
    const std::vector<Value> test_args(args.positional.begin() + static_cast<ptrdiff_t>(
                                                                     std::min(next_arg, args.positional.size())),
                                       args.positional.end());
    for (const Value& item : items) {
      IF_RETURN_IF_ERROR(step(pos));
      const Value subject = by_attr ? get_attr(item, attribute) : item;
      bool pass = false;
      if (test.empty()) {
        pass = truthy(subject);
      } else {
        CT_ASSIGN_OR_RETURN(pass, apply_test(test, subject, test_args, pos));
      }
      if (pass == keep_when) out.push_back(item);
    }
    return make_list(std::move(out), pos);
  }

  // ---- tests

  Result<bool> apply_test(std::string_view name, const Value& v, const std::vector<Value>& args,
                          uint32_t pos) {
    auto arg = [&]() -> Result<Value> {
      if (args.empty()) return error(pos, std::string("test ").append(quoted(name)).append(" needs an argument"));
      return args[0];
    };
    if (name == "defined") return v.kind != Kind::kUndefined;
    if (name == "undefined") return v.kind == Kind::kUndefined;
    if (name == "none") return v.kind == Kind::kNone;
    if (name == "string") return v.kind == Kind::kString;
    if (name == "number") return is_number(v);
    if (name == "integer") return v.kind == Kind::kInt;
    if (name == "float") return v.kind == Kind::kFloat;
    if (name == "boolean") return v.kind == Kind::kBool;
    if (name == "mapping") return v.kind == Kind::kDict;
    if (name == "iterable") {
      return v.kind == Kind::kList || v.kind == Kind::kDict || v.kind == Kind::kString ||
             v.kind == Kind::kUndefined;
    }
    if (name == "sequence") {
      return v.kind == Kind::kList || v.kind == Kind::kDict || v.kind == Kind::kString;
    }
    if (name == "true") return v.kind == Kind::kBool && v.b;
    if (name == "false") return v.kind == Kind::kBool && !v.b;
    if (name == "even" || name == "odd") {
      if (!is_intlike(v)) {
        return error(pos, std::string("test ").append(quoted(name)).append(" needs an integer"));
      }
      return (int_of(v) % 2 == 0) == (name == "even");
    }
    if (name == "divisibleby") {
      CT_ASSIGN_OR_RETURN(Value d, arg());
      if (!is_intlike(v) || !is_intlike(d)) return error(pos, "divisibleby needs integers");
      if (int_of(d) == 0) return error(pos, "divisibleby zero");
      if (int_of(d) == -1) return true;
      return int_of(v) % int_of(d) == 0;
    }
    CT_ASSIGN_OR_RETURN(Value other, arg());
    if (name == "eq" || name == "equalto" || name == "==" || name == "ne" || name == "!=") {
      const bool same = equal(v, other);
      IF_RETURN_IF_ERROR(step(pos, 0));
      return same == (name == "eq" || name == "equalto" || name == "==");
    }
    if (name == "lt" || name == "<" || name == "lessthan") return less(v, other, pos);
    if (name == "gt" || name == ">" || name == "greaterthan") return less(other, v, pos);
    if (name == "le" || name == "<=") {
      CT_ASSIGN_OR_RETURN(bool r, less(other, v, pos));
      return !r;
    }
    if (name == "ge" || name == ">=") {
      CT_ASSIGN_OR_RETURN(bool r, less(v, other, pos));
      return !r;
    }
    if (name == "in") return contains(other, v, pos);
    return error(pos, std::string("unknown test ").append(quoted(name)), ErrorCode::kInternal);
  }

  const ChatTemplateProgram& p_;
  const ChatTemplateInputs& in_;
  std::vector<Frame> frames_;
  uint64_t steps_ = 0;
  uint64_t iterations_ = 0;
  uint64_t work_bytes_ = 0;
};

constexpr std::string_view kFallbackTemplate =
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

}  // namespace

Result<ChatTemplate> ChatTemplate::parse(std::string_view source, ChatTemplateOptions options) {
  if (source.size() > kChatTemplateSourceBytesMax) {
    return Unexpected(ErrorCode::kOutOfRange,
                      std::string("chat template of ")
                          .append(std::to_string(source.size()))
                          .append(" bytes is over the limit of ")
                          .append(std::to_string(kChatTemplateSourceBytesMax)));
  }
  auto program = std::make_shared<ChatTemplateProgram>();
  // Jinja reads "\r\n" and "\r" as "\n" and drops one trailing newline.
  program->source.reserve(source.size());
  for (size_t k = 0; k < source.size(); ++k) {
    if (source[k] == '\r') {
      program->source.push_back('\n');
      if (k + 1 < source.size() && source[k + 1] == '\n') ++k;
    } else {
      program->source.push_back(source[k]);
    }
  }
  if (!program->source.empty() && program->source.back() == '\n') program->source.pop_back();
  Lexer lexer(program->source, options);
  CT_ASSIGN_OR_RETURN(std::vector<Token> tokens, lexer.run());
  Parser parser(std::move(tokens), program.get());
  IF_RETURN_IF_ERROR(parser.run());
  return ChatTemplate(std::move(program));
}

Result<std::string> ChatTemplate::render(const ChatTemplateInputs& inputs) const {
  Renderer renderer(*program_, inputs);
  return renderer.run();
}

std::string_view fallback_chat_template() { return kFallbackTemplate; }

}  // namespace idlefleet::engine
