// GGUF v3 reader and writer.
//
// GgufFile maps a file read-only (or wraps caller-owned bytes) and parses its
// header, metadata and tensor directory. Parsing trusts nothing: every count,
// string length, array length, offset, alignment, type and tensor extent is
// checked against the bytes that exist and against the named limits below, and
// a violation returns an Error whose message names the offending item. After a
// successful open, tensor_data() pointers are valid for the life of the object.
//
// The format, byte by byte (all integers little-endian):
//   u32 magic "GGUF" (0x46554747) | u32 version (3; 2 also read) |
//   u64 tensor_count | u64 metadata_kv_count |
//   metadata_kv_count x { string key | u32 value_type | value } |
//   tensor_count x { string name | u32 n_dims (1..4) | u64 ne[n_dims] |
//                    u32 ggml_type | u64 offset } |
//   padding to `general.alignment` (u32 metadata, default 32, power of two) |
//   tensor data; each tensor at data_start + offset, offset a multiple of the
//   alignment, tensors not overlapping.
//   string = u64 length | bytes (not NUL-terminated)
//   value  = scalar of value_type | string | array = u32 elem_type | u64 count | elems
//   ne[0] is the innermost (contiguous) dimension: a weight with `rows` output
//   rows of `cols` inputs each has ne = [cols, rows].
//
// GgufWriter builds a file in memory order (metadata, tensor directory, aligned
// data) and writes it in one pass.
//
// Thread-safety: a GgufFile is immutable after open; concurrent readers are
// fine. GgufWriter is not thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <variant>
#include <vector>

#include "common/result.h"

namespace idlefleet::engine {

// Limits on what a file may declare; anything larger is refused as corrupt
// (or out of range) before any allocation is made from it.
inline constexpr uint64_t kGgufTensorCountMax = 1u << 16;
inline constexpr uint64_t kGgufMetadataCountMax = 1u << 16;
inline constexpr uint64_t kGgufStringBytesMax = 1u << 20;      // one key or value
inline constexpr uint64_t kGgufArrayElementsMax = 1u << 24;    // one array
inline constexpr uint32_t kGgufDimsMax = 4;
inline constexpr uint32_t kGgufAlignmentMax = 1u << 16;
inline constexpr uint32_t kGgufDefaultAlignment = 32;

enum class GgufValueType : uint32_t {
  kUint8 = 0, kInt8 = 1, kUint16 = 2, kInt16 = 3, kUint32 = 4, kInt32 = 5,
  kFloat32 = 6, kBool = 7, kString = 8, kArray = 9, kUint64 = 10, kInt64 = 11,
  kFloat64 = 12,
};
const char* gguf_value_type_name(GgufValueType t);

// ggml tensor types. The engine computes with F32, F16, Q4_0 and Q8_0; the
// reader also knows the sizes of the other common types so that `model
// inspect` can describe any file, and refuses ids it does not know.
enum class TensorType : uint32_t {
  kF32 = 0, kF16 = 1, kQ4_0 = 2, kQ4_1 = 3, kQ5_0 = 6, kQ5_1 = 7, kQ8_0 = 8,
  kQ8_1 = 9, kQ2_K = 10, kQ3_K = 11, kQ4_K = 12, kQ5_K = 13, kQ6_K = 14,
  kQ8_K = 15, kI8 = 24, kI16 = 25, kI32 = 26, kI64 = 27, kF64 = 28, kBF16 = 30,
};

struct TensorTypeInfo {
  const char* name;        // "q8_0"
  uint32_t block_elements; // elements per block (1 for plain types)
  uint32_t block_bytes;    // bytes per block
};
// Null for an id the reader does not know.
const TensorTypeInfo* tensor_type_info(uint32_t type_id);
inline const TensorTypeInfo* tensor_type_info(TensorType t) {
  return tensor_type_info(static_cast<uint32_t>(t));
}
// True for the types the engine computes with.
bool tensor_type_supported(TensorType t);

// A metadata value. Arrays of scalars keep their raw little-endian bytes (a
// view into the mapping); arrays of strings are materialised as views.
struct GgufArray {
  GgufValueType element_type = GgufValueType::kUint8;
  uint64_t count = 0;
  std::span<const uint8_t> raw;              // scalar elements, count * size
  std::vector<std::string_view> strings;     // when element_type == kString
};
using GgufScalar = std::variant<uint64_t, int64_t, double, bool>;

struct GgufKv {
  std::string key;
  GgufValueType type = GgufValueType::kUint8;
  GgufScalar scalar;       // integers, floats and bools
  std::string_view string; // when type == kString
  GgufArray array;         // when type == kArray
};

struct GgufTensorInfo {
  std::string name;
  std::vector<uint64_t> dims;  // ne[0] innermost
  TensorType type = TensorType::kF32;
  uint64_t offset = 0;         // relative to the data section
  uint64_t elements = 0;
  uint64_t bytes = 0;
};

class GgufFile {
 public:
  // Maps `path` read-only and parses it.
  static Result<std::unique_ptr<GgufFile>> open(const std::string& path);
  // Parses caller-owned bytes, which must outlive the result (fuzzing, tests).
  static Result<std::unique_ptr<GgufFile>> from_memory(std::span<const uint8_t> bytes);

  ~GgufFile();
  GgufFile(const GgufFile&) = delete;
  GgufFile& operator=(const GgufFile&) = delete;

  uint32_t version() const { return version_; }
  uint32_t alignment() const { return alignment_; }
  uint64_t file_bytes() const { return bytes_.size(); }
  // Where the data section starts: the end of the tensor directory, aligned.
  // It exceeds file_bytes() only in a file without tensors, whose final
  // padding is optional.
  uint64_t data_offset() const { return data_offset_; }

  const std::vector<GgufKv>& metadata() const { return kvs_; }
  const GgufKv* find(std::string_view key) const;

  // Typed getters: kNotFound when absent, kCorrupt when of the wrong type or
  // out of the target type's range. Integers of any width convert when the
  // value fits.
  Result<std::string_view> get_string(std::string_view key) const;
  Result<uint64_t> get_uint(std::string_view key) const;
  Result<int64_t> get_int(std::string_view key) const;
  Result<double> get_float(std::string_view key) const;
  Result<bool> get_bool(std::string_view key) const;
  Result<std::vector<std::string_view>> get_string_array(std::string_view key) const;
  Result<std::vector<float>> get_f32_array(std::string_view key) const;
  Result<std::vector<int32_t>> get_i32_array(std::string_view key) const;

  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo* find_tensor(std::string_view name) const;
  // Hands the mapped pages wholly inside [data, data + bytes) back to the
  // page cache (madvise DONTNEED), after the caller copied what it needs;
  // touching them again reads them back in. No-op for from_memory files.
  void release_pages(const uint8_t* data, size_t bytes) const;
  // REQUIRES: `t` is one of tensors().
  const uint8_t* tensor_data(const GgufTensorInfo& t) const {
    return bytes_.data() + data_offset_ + t.offset;
  }

 private:
  GgufFile() = default;
  Status parse();

  void* map_ = nullptr;        // mmap base when opened from a path
  size_t map_bytes_ = 0;
  std::span<const uint8_t> bytes_;
  uint32_t version_ = 0;
  uint32_t alignment_ = kGgufDefaultAlignment;
  uint64_t data_offset_ = 0;
  std::vector<GgufKv> kvs_;
  std::vector<GgufTensorInfo> tensors_;
  // Name -> index, for find() and find_tensor(). The views point into kvs_ and
  // tensors_, which never change after parse().
  std::unordered_map<std::string_view, size_t> kv_index_;
  std::unordered_map<std::string_view, size_t> tensor_index_;
};

// Builds a GGUF v3 file. Keys and tensor names must be unique; tensors are
// laid out in the order added, each aligned.
//
// The add_* calls cannot fail on the spot; a mistake in one (a duplicate key,
// a string or array over the reader's limits) is remembered and returned by
// write(), so the writer never produces a file that GgufFile refuses.
// general.alignment belongs to the writer: the constructor's alignment is
// written (when not the default) and an add_* of that key is ignored, so the
// file always states the alignment its data really has.
class GgufWriter {
 public:
  explicit GgufWriter(uint32_t alignment = kGgufDefaultAlignment);

  void add_string(std::string key, std::string value);
  void add_uint32(std::string key, uint32_t value);
  void add_int32(std::string key, int32_t value);
  void add_uint64(std::string key, uint64_t value);
  void add_float32(std::string key, float value);
  void add_bool(std::string key, bool value);
  void add_string_array(std::string key, std::vector<std::string> values);
  void add_float32_array(std::string key, std::vector<float> values);
  void add_int32_array(std::string key, std::vector<int32_t> values);
  // Copies a metadata entry from another file (any type), e.g. when quantizing.
  void add_kv(const GgufKv& kv);

  // `data` holds the tensor in `type`'s layout; its size must match dims.
  Status add_tensor(std::string name, TensorType type, std::vector<uint64_t> dims,
                    std::vector<uint8_t> data);

  // Serialises everything; writes to a temporary file and renames it into
  // place so that a failed write never leaves a half file under `path`.
  Status write(const std::string& path) const;
  // The same bytes, in memory (tests). It does not report the remembered
  // error that write() would return.
  std::vector<uint8_t> serialize() const;
  // The first error remembered from an add_* call (ok when none).
  const Status& status() const { return status_; }

 private:
  struct PendingTensor {
    std::string name;
    TensorType type;
    std::vector<uint64_t> dims;
    std::vector<uint8_t> data;
  };
  // Starts a metadata entry: checks the key and writes it with its type.
  // False when the entry is to be skipped (general.alignment, or an error).
  bool begin_kv(const std::string& key, GgufValueType type);
  void fail(ErrorCode code, std::string message);
  // Everything before the tensor data: header, metadata, tensor directory
  // and the padding up to the data section.
  std::vector<uint8_t> serialize_directory() const;

  uint32_t alignment_;
  std::vector<uint8_t> kv_bytes_;  // serialised metadata entries
  uint64_t kv_count_ = 0;
  std::unordered_set<std::string> keys_;
  std::unordered_set<std::string> tensor_names_;
  std::vector<PendingTensor> tensors_;
  Status status_;  // first error from an add_* call
};

// Bytes of a tensor of `type` with `elements` elements; 0 when the element
// count is not a whole number of blocks.
uint64_t tensor_bytes(TensorType type, uint64_t elements);

}  // namespace idlefleet::engine
