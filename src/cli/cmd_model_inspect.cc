// `idlefleet model inspect FILE [--json]`: describes a GGUF file (engine/gguf.h):
// header, every metadata entry with its type and value, every tensor, and
// totals. It reads any file the reader accepts, including tensor types the
// engine cannot compute with, so it is the first tool to reach for when a
// model will not load.
//
// Arrays show their element type, count and first kArrayValuesShownMax values
// in both outputs (a vocabulary has tens of thousands of entries); in the text
// output long strings are cut at kStringBytesShownMax bytes, while JSON keeps
// every scalar string whole for programs that read it.
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "engine/gguf.h"

namespace idlefleet::cli {
namespace {

using engine::GgufFile;
using engine::GgufKv;
using engine::GgufTensorInfo;
using engine::GgufValueType;
// Keys in the order written, so that the JSON reads like the text output.
using Json = nlohmann::ordered_json;

constexpr uint64_t kArrayValuesShownMax = 8;
constexpr size_t kStringBytesShownMax = 200;

std::string shortest(double v, bool f32) {
  char buf[64];
  auto r = f32 ? std::to_chars(buf, buf + sizeof buf, static_cast<float>(v))
               : std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}

// Length of the UTF-8 sequence starting at s[i] when it is well formed (lead
// byte and continuation bytes; overlong forms are not looked for), else 0.
size_t utf8_length(std::string_view s, size_t i) {
  const auto lead = static_cast<unsigned char>(s[i]);
  const size_t n = lead >= 0xc2 && lead <= 0xdf ? 2
                   : lead >= 0xe0 && lead <= 0xef ? 3
                   : lead >= 0xf0 && lead <= 0xf4 ? 4
                                                  : 0;
  if (n == 0 || i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k) {
    if ((static_cast<unsigned char>(s[i + k]) & 0xc0) != 0x80) return 0;
  }
  return n;
}

// Escapes control bytes, quotes, backslashes and bytes that are not UTF-8,
// so that a token such as "\n" or a hostile name cannot break the layout or
// the terminal. Well-formed UTF-8 (tokens such as "\u2581the") passes as is.
std::string escape(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    const auto u = static_cast<unsigned char>(c);
    if (u >= 0x80) {
      if (const size_t n = utf8_length(s, i); n > 0) {
        out += s.substr(i, n);
        i += n - 1;
        continue;
      }
    }
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (u < 0x20 || u >= 0x7f) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\x%02x", u);
          out += buf;
        } else {
          out += c;
        }
    }
  }
  return out;
}

// A quoted string value, cut at `bytes_max` bytes with its full size noted.
std::string quote(std::string_view s, size_t bytes_max) {
  std::string out = "\"" + escape(s.substr(0, bytes_max)) + "\"";
  if (s.size() > bytes_max) out += "... (" + std::to_string(s.size()) + " bytes)";
  return out;
}

std::string scalar_text(GgufValueType type, const engine::GgufScalar& v) {
  if (const auto* u = std::get_if<uint64_t>(&v)) return std::to_string(*u);
  if (const auto* i = std::get_if<int64_t>(&v)) return std::to_string(*i);
  if (const auto* d = std::get_if<double>(&v)) return shortest(*d, type == GgufValueType::kFloat32);
  return std::get<bool>(v) ? "true" : "false";
}

Json scalar_json(GgufValueType type, const engine::GgufScalar& v) {
  if (const auto* u = std::get_if<uint64_t>(&v)) return *u;
  if (const auto* i = std::get_if<int64_t>(&v)) return *i;
  if (const auto* d = std::get_if<double>(&v)) {
    // An f32 goes out as its shortest decimal (1e-05), not as the double
    // nearest to the float (9.999999747378752e-06). NaN and inf become null.
    if (type == GgufValueType::kFloat32 && std::isfinite(*d)) {
      return std::strtod(shortest(*d, true).c_str(), nullptr);
    }
    return *d;
  }
  return std::get<bool>(v);
}

// Element `i` of a scalar array, decoded from its little-endian bytes.
engine::GgufScalar array_element(const engine::GgufArray& a, uint64_t i) {
  const uint8_t* p = a.raw.data();
  auto load = [&](auto sample) {
    decltype(sample) v;
    std::memcpy(&v, p + i * sizeof v, sizeof v);
    return v;
  };
  switch (a.element_type) {
    case GgufValueType::kUint8: return uint64_t{load(uint8_t{})};
    case GgufValueType::kUint16: return uint64_t{load(uint16_t{})};
    case GgufValueType::kUint32: return uint64_t{load(uint32_t{})};
    case GgufValueType::kUint64: return uint64_t{load(uint64_t{})};
    case GgufValueType::kInt8: return int64_t{load(int8_t{})};
    case GgufValueType::kInt16: return int64_t{load(int16_t{})};
    case GgufValueType::kInt32: return int64_t{load(int32_t{})};
    case GgufValueType::kInt64: return int64_t{load(int64_t{})};
    case GgufValueType::kFloat32: return double{load(float{})};
    case GgufValueType::kFloat64: return double{load(double{})};
    case GgufValueType::kBool: return load(uint8_t{}) != 0;
    case GgufValueType::kString:
    case GgufValueType::kArray: break;
  }
  return uint64_t{0};
}

std::string type_text(const GgufKv& kv) {
  if (kv.type != GgufValueType::kArray) return engine::gguf_value_type_name(kv.type);
  return std::string(engine::gguf_value_type_name(kv.array.element_type)) + "[" +
         std::to_string(kv.array.count) + "]";
}

std::string value_text(const GgufKv& kv) {
  if (kv.type == GgufValueType::kString) return quote(kv.string, kStringBytesShownMax);
  if (kv.type != GgufValueType::kArray) return scalar_text(kv.type, kv.scalar);
  const engine::GgufArray& a = kv.array;
  const uint64_t shown = std::min(a.count, kArrayValuesShownMax);
  std::string out = "[";
  for (uint64_t i = 0; i < shown; ++i) {
    if (i) out += ", ";
    out += a.element_type == GgufValueType::kString
               ? quote(a.strings[i], kStringBytesShownMax)
               : scalar_text(a.element_type, array_element(a, i));
  }
  if (a.count > shown) out += shown ? ", ..." : "...";
  return out + "]";
}

Json kv_json(const GgufKv& kv) {
  Json j;
  j["key"] = kv.key;
  j["type"] = engine::gguf_value_type_name(kv.type);
  if (kv.type == GgufValueType::kString) {
    j["value"] = std::string(kv.string);
  } else if (kv.type != GgufValueType::kArray) {
    j["value"] = scalar_json(kv.type, kv.scalar);
  } else {
    const engine::GgufArray& a = kv.array;
    j["element_type"] = engine::gguf_value_type_name(a.element_type);
    j["count"] = a.count;
    const uint64_t shown = std::min(a.count, kArrayValuesShownMax);
    Json values = Json::array();
    for (uint64_t i = 0; i < shown; ++i) {
      if (a.element_type == GgufValueType::kString) {
        values.push_back(std::string(a.strings[i]));
      } else {
        values.push_back(scalar_json(a.element_type, array_element(a, i)));
      }
    }
    j["values"] = std::move(values);
    j["truncated"] = a.count > shown;
  }
  return j;
}

// "1 tensor", "2 tensors".
std::string count_of(uint64_t n, const char* one, const char* many) {
  return std::to_string(n) + " " + (n == 1 ? one : many);
}

std::string dims_text(const std::vector<uint64_t>& dims) {
  std::string s = "[";
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + "]";
}

std::string human_bytes(uint64_t bytes) {
  static constexpr const char* kUnits[] = {"bytes", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  size_t unit = 0;
  while (v >= 1024 && unit + 1 < std::size(kUnits)) {
    v /= 1024;
    ++unit;
  }
  char buf[64];
  if (unit == 0) {
    std::snprintf(buf, sizeof buf, "%" PRIu64 " bytes", bytes);
  } else {
    std::snprintf(buf, sizeof buf, "%" PRIu64 " bytes (%.2f %s)", bytes, v, kUnits[unit]);
  }
  return buf;
}

struct TypeTotal {
  uint64_t tensors = 0;
  uint64_t elements = 0;
  uint64_t bytes = 0;
};

struct Totals {
  uint64_t parameters = 0;
  uint64_t bytes = 0;
  std::map<std::string, TypeTotal> by_type;  // sorted by type name for stable output
};

Totals totals_of(const GgufFile& file) {
  Totals t;
  for (const GgufTensorInfo& info : file.tensors()) {
    TypeTotal& tt = t.by_type[engine::tensor_type_info(info.type)->name];
    ++tt.tensors;
    tt.elements += info.elements;
    tt.bytes += info.bytes;
    t.parameters += info.elements;
    t.bytes += info.bytes;
  }
  return t;
}

bool supported(const std::string& type_name) {
  for (engine::TensorType t : {engine::TensorType::kF32, engine::TensorType::kF16,
                               engine::TensorType::kQ4_0, engine::TensorType::kQ8_0}) {
    if (type_name == engine::tensor_type_info(t)->name) return engine::tensor_type_supported(t);
  }
  return false;
}

void print_text(const std::string& path, const GgufFile& file) {
  std::string out;
  out += "file: " + path + "\n";
  out += "file size: " + human_bytes(file.file_bytes()) + "\n";
  out += "version: " + std::to_string(file.version()) + "\n";
  out += "alignment: " + std::to_string(file.alignment()) + "\n";
  out += "data offset: " + std::to_string(file.data_offset()) + "\n";

  out += "\nmetadata (" + count_of(file.metadata().size(), "entry", "entries") + "):\n";
  for (const GgufKv& kv : file.metadata()) {
    out += "  " + escape(kv.key) + ": " + type_text(kv) + " = " + value_text(kv) + "\n";
  }

  out += "\ntensors (" + std::to_string(file.tensors().size()) + "):\n";
  struct Row {
    std::string cells[6];
  };
  std::vector<Row> rows;
  rows.push_back({{"name", "type", "dims", "elements", "bytes", "offset"}});
  for (const GgufTensorInfo& t : file.tensors()) {
    rows.push_back({{escape(t.name), engine::tensor_type_info(t.type)->name, dims_text(t.dims),
                     std::to_string(t.elements), std::to_string(t.bytes),
                     std::to_string(t.offset)}});
  }
  size_t width[6] = {};
  for (const Row& r : rows) {
    for (int c = 0; c < 6; ++c) width[c] = std::max(width[c], r.cells[c].size());
  }
  for (const Row& r : rows) {
    std::string line = " ";
    for (int c = 0; c < 6; ++c) {
      // Text columns align left, numbers right.
      const std::string& cell = r.cells[c];
      const std::string pad(width[c] - cell.size(), ' ');
      line += ' ';
      line += c < 3 ? cell + pad : pad + cell;
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line + "\n";
  }

  const Totals totals = totals_of(file);
  out += "\ntotals:\n";
  out += "  tensors: " + std::to_string(file.tensors().size()) + "\n";
  out += "  parameters: " + std::to_string(totals.parameters) + "\n";
  out += "  tensor bytes: " + human_bytes(totals.bytes) + "\n";
  for (const auto& [name, tt] : totals.by_type) {
    out += "  " + name + ": " + count_of(tt.tensors, "tensor", "tensors") + ", " +
           count_of(tt.elements, "element", "elements") + ", " + human_bytes(tt.bytes) +
           (supported(name) ? "" : " (the engine cannot compute with " + name + ")") + "\n";
  }
  std::fwrite(out.data(), 1, out.size(), stdout);
}

void print_json(const std::string& path, const GgufFile& file) {
  Json j;
  j["file"] = path;
  j["file_bytes"] = file.file_bytes();
  j["version"] = file.version();
  j["alignment"] = file.alignment();
  j["data_offset"] = file.data_offset();
  Json metadata = Json::array();
  for (const GgufKv& kv : file.metadata()) metadata.push_back(kv_json(kv));
  j["metadata"] = std::move(metadata);
  Json tensors = Json::array();
  for (const GgufTensorInfo& t : file.tensors()) {
    tensors.push_back({{"name", t.name},
                       {"type", engine::tensor_type_info(t.type)->name},
                       {"dims", t.dims},
                       {"elements", t.elements},
                       {"bytes", t.bytes},
                       {"offset", t.offset}});
  }
  j["tensors"] = std::move(tensors);
  const Totals totals = totals_of(file);
  Json by_type = Json::object();
  for (const auto& [name, tt] : totals.by_type) {
    by_type[name] = {{"tensors", tt.tensors},
                     {"elements", tt.elements},
                     {"bytes", tt.bytes},
                     {"supported", supported(name)}};
  }
  j["totals"] = {{"tensors", file.tensors().size()},
                 {"parameters", totals.parameters},
                 {"bytes", totals.bytes},
                 {"by_type", std::move(by_type)}};
  // GGUF strings should be UTF-8 but nothing enforces it: replace bad bytes
  // rather than let dump() throw on a file the reader accepted.
  const std::string text = j.dump(2, ' ', false, Json::error_handler_t::replace) + "\n";
  std::fwrite(text.data(), 1, text.size(), stdout);
}

}  // namespace

void add_model_inspect(CLI::App& model) {
  struct Args {
    std::string path;
    bool json = false;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = model.add_subcommand(
      "inspect", "Describe a GGUF file: header, metadata, tensors and totals");
  cmd->add_option("FILE", args->path, "GGUF file to describe")->required();
  cmd->add_flag("--json", args->json, "print JSON instead of text");
  cmd->callback([args] {
    auto file = GgufFile::open(args->path);
    if (!file) throw CommandError{file.error().to_string()};
    if (args->json) {
      print_json(args->path, **file);
    } else {
      print_text(args->path, **file);
    }
  });
}

}  // namespace idlefleet::cli
