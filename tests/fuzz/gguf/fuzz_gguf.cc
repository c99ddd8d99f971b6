// libFuzzer target for the GGUF reader (engine/gguf.h).
//
// Parses arbitrary bytes and, when they parse, touches everything the reader
// hands out (every key, string, array element and the first and last byte of
// every tensor), so AddressSanitizer sees any view that points outside the
// input. A parsed file is also copied through GgufWriter and must parse again
// with the same directory: the writer may never produce a file the reader
// refuses.
//
// Build and run (cmake/fuzz.cmake):
//   cmake --preset fuzz && cmake --build --preset fuzz
//   mkdir -p /tmp/gguf_work && build/fuzz/fuzz_gguf /tmp/gguf_work tests/fuzz/gguf/corpus
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "engine/gguf.h"

namespace {

using idlefleet::engine::GgufFile;
using idlefleet::engine::GgufKv;
using idlefleet::engine::GgufTensorInfo;
using idlefleet::engine::GgufValueType;
using idlefleet::engine::GgufWriter;

// Keeps the reads below from being optimised away.
volatile uint64_t g_sink;

uint64_t touch(const void* p, size_t n) {
  if (n == 0) return 0;
  const auto* b = static_cast<const uint8_t*>(p);
  return b[0] + b[n - 1];
}

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "fuzz_gguf: %s\n", what);
  std::abort();  // libFuzzer saves the input that got here
}

// Scalars compare by value; a NaN equals any NaN, because float -> double ->
// float may quieten a signalling NaN's payload.
bool same_scalar(const GgufKv& a, const GgufKv& b) {
  const auto* x = std::get_if<double>(&a.scalar);
  const auto* y = std::get_if<double>(&b.scalar);
  if (x != nullptr && y != nullptr && std::isnan(*x) && std::isnan(*y)) return true;
  return a.scalar == b.scalar;
}

// The metadata without general.alignment, which the writer owns (it writes
// the alignment it was given, and only when not the default).
std::vector<const GgufKv*> entries(const GgufFile& f) {
  std::vector<const GgufKv*> out;
  for (const GgufKv& kv : f.metadata()) {
    if (kv.key != "general.alignment") out.push_back(&kv);
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto parsed = GgufFile::from_memory(std::span<const uint8_t>(data, size));
  if (!parsed) {
    if (parsed.error().message.empty()) fail("an error without a message");
    return 0;
  }
  const GgufFile& file = **parsed;
  uint64_t sum = file.version() + file.alignment() + file.data_offset() + file.file_bytes();

  for (const GgufKv& kv : file.metadata()) {
    sum += touch(kv.key.data(), kv.key.size());
    if (file.find(kv.key) != &kv) fail("find() does not return the entry");
    sum += touch(kv.string.data(), kv.string.size());
    if (kv.type == GgufValueType::kArray) {
      sum += touch(kv.array.raw.data(), kv.array.raw.size());
      for (std::string_view s : kv.array.strings) sum += touch(s.data(), s.size());
    }
    // The getters must answer (a value or an error) for every type.
    sum += file.get_string(kv.key).has_value();
    sum += file.get_uint(kv.key).has_value();
    sum += file.get_int(kv.key).has_value();
    sum += file.get_float(kv.key).has_value();
    sum += file.get_bool(kv.key).has_value();
    if (auto a = file.get_string_array(kv.key)) sum += a->size();
    if (auto a = file.get_f32_array(kv.key)) sum += a->size();
    if (auto a = file.get_i32_array(kv.key)) sum += a->size();
  }

  for (const GgufTensorInfo& t : file.tensors()) {
    if (file.find_tensor(t.name) != &t) fail("find_tensor() does not return the tensor");
    if (t.bytes == 0 || file.data_offset() + t.offset + t.bytes > size) fail("tensor outside");
    sum += touch(file.tensor_data(t), t.bytes);
  }
  g_sink = sum;

  // Copy through the writer; the result must parse to the same directory.
  GgufWriter writer(file.alignment());
  for (const GgufKv& kv : file.metadata()) writer.add_kv(kv);
  for (const GgufTensorInfo& t : file.tensors()) {
    const uint8_t* p = file.tensor_data(t);
    if (!writer.add_tensor(t.name, t.type, t.dims, std::vector<uint8_t>(p, p + t.bytes))) {
      fail("the writer refuses a tensor the reader accepted");
    }
  }
  if (!writer.status()) fail("the writer refuses metadata the reader accepted");
  const std::vector<uint8_t> copy = writer.serialize();
  auto reparsed = GgufFile::from_memory(copy);
  if (!reparsed) fail("the writer's copy does not parse");
  const GgufFile& again = **reparsed;
  if (again.alignment() != file.alignment()) fail("the copy's alignment differs");
  const std::vector<const GgufKv*> before = entries(file);
  const std::vector<const GgufKv*> after = entries(again);
  if (before.size() != after.size()) fail("the copy's metadata count differs");
  for (size_t i = 0; i < before.size(); ++i) {
    const GgufKv& a = *before[i];
    const GgufKv& b = *after[i];
    if (a.key != b.key || a.type != b.type || !same_scalar(a, b) || a.string != b.string ||
        a.array.element_type != b.array.element_type || a.array.count != b.array.count ||
        a.array.strings != b.array.strings || a.array.raw.size() != b.array.raw.size() ||
        (!a.array.raw.empty() &&
         std::memcmp(a.array.raw.data(), b.array.raw.data(), a.array.raw.size()) != 0)) {
      fail("a metadata entry differs in the copy");
    }
  }
  if (again.tensors().size() != file.tensors().size()) fail("the copy's tensor count differs");
  for (size_t i = 0; i < file.tensors().size(); ++i) {
    const GgufTensorInfo& a = file.tensors()[i];
    const GgufTensorInfo& b = again.tensors()[i];
    if (a.name != b.name || a.dims != b.dims || a.type != b.type ||
        std::memcmp(file.tensor_data(a), again.tensor_data(b), a.bytes) != 0) {
      fail("a tensor differs in the copy");
    }
  }
  return 0;
}
