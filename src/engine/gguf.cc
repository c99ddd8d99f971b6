// GGUF reader and writer; the format is described byte by byte in gguf.h.
//
// The reader's rule: no byte is read, and nothing is allocated from a count,
// until the count or length has been checked against its named limit and
// against the bytes that remain. Each distinct failure has its own message
// naming the item (key or tensor, with its index) and the numbers involved,
// because "corrupt file" alone helps nobody who holds a 4 GB download.
#include "engine/gguf.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <numeric>
#include <type_traits>

#include "common/check.h"

namespace idlefleet::engine {

namespace {

constexpr uint32_t kGgufMagic = 0x46554747;  // "GGUF" read as a little-endian u32
constexpr uint32_t kGgufVersion = 3;
constexpr uint64_t kHeaderBytes = 4 + 4 + 8 + 8;
// The smallest encodings of a metadata entry (empty key, type, a one-byte
// value) and of a tensor directory entry (empty name, n_dims, one dim, type,
// offset). A declared count is refused when even this many bytes are not left,
// which bounds every allocation by the file's size.
constexpr uint64_t kKvBytesMin = 8 + 4 + 1;
constexpr uint64_t kTensorInfoBytesMin = 8 + 4 + 8 + 4 + 8;
constexpr const char* kAlignmentKey = "general.alignment";

std::string num(uint64_t v) { return std::to_string(v); }

std::string quoted(std::string_view s) {
  // Names come from untrusted files: keep messages to one printable line.
  std::string out = "'";
  for (char c : s.substr(0, 200)) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", u);
      out += buf;
    } else {
      out += c;
    }
  }
  if (s.size() > 200) out += "...";
  return out + "'";
}

bool is_power_of_two(uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }

// Rounds `v` up to a multiple of `alignment` (a power of two); false on overflow.
bool align_up(uint64_t v, uint64_t alignment, uint64_t* out) {
  uint64_t sum;
  if (__builtin_add_overflow(v, alignment - 1, &sum)) return false;
  *out = sum & ~(alignment - 1);
  return true;
}

bool known_value_type(uint32_t t) { return t <= static_cast<uint32_t>(GgufValueType::kFloat64); }

// Bytes of one scalar of type `t`; 0 for string and array.
uint64_t scalar_bytes(GgufValueType t) {
  switch (t) {
    case GgufValueType::kUint8:
    case GgufValueType::kInt8:
    case GgufValueType::kBool: return 1;
    case GgufValueType::kUint16:
    case GgufValueType::kInt16: return 2;
    case GgufValueType::kUint32:
    case GgufValueType::kInt32:
    case GgufValueType::kFloat32: return 4;
    case GgufValueType::kUint64:
    case GgufValueType::kInt64:
    case GgufValueType::kFloat64: return 8;
    case GgufValueType::kString:
    case GgufValueType::kArray: return 0;
  }
  return 0;
}

bool is_unsigned(GgufValueType t) {
  return t == GgufValueType::kUint8 || t == GgufValueType::kUint16 ||
         t == GgufValueType::kUint32 || t == GgufValueType::kUint64;
}
bool is_signed(GgufValueType t) {
  return t == GgufValueType::kInt8 || t == GgufValueType::kInt16 ||
         t == GgufValueType::kInt32 || t == GgufValueType::kInt64;
}
bool is_float(GgufValueType t) {
  return t == GgufValueType::kFloat32 || t == GgufValueType::kFloat64;
}

template <class T>
T load(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof v);  // unaligned in the file
  return v;
}

// Decodes one scalar of type `t` at `p` (which holds scalar_bytes(t) bytes).
GgufScalar decode_scalar(GgufValueType t, const uint8_t* p) {
  switch (t) {
    case GgufValueType::kUint8: return uint64_t{load<uint8_t>(p)};
    case GgufValueType::kUint16: return uint64_t{load<uint16_t>(p)};
    case GgufValueType::kUint32: return uint64_t{load<uint32_t>(p)};
    case GgufValueType::kUint64: return uint64_t{load<uint64_t>(p)};
    case GgufValueType::kInt8: return int64_t{load<int8_t>(p)};
    case GgufValueType::kInt16: return int64_t{load<int16_t>(p)};
    case GgufValueType::kInt32: return int64_t{load<int32_t>(p)};
    case GgufValueType::kInt64: return int64_t{load<int64_t>(p)};
    case GgufValueType::kFloat32: return double{load<float>(p)};
    case GgufValueType::kFloat64: return double{load<double>(p)};
    case GgufValueType::kBool: return load<uint8_t>(p) != 0;
    case GgufValueType::kString:
    case GgufValueType::kArray: break;
  }
  return uint64_t{0};
}

// A bounds-checked cursor over the file's bytes. Every read either succeeds
// entirely or consumes nothing and returns false.
class Cursor {
 public:
  explicit Cursor(std::span<const uint8_t> bytes) : bytes_(bytes) {}

  uint64_t pos() const { return pos_; }
  uint64_t remaining() const { return bytes_.size() - pos_; }
  uint64_t size() const { return bytes_.size(); }

  template <class T>
  bool read(T* out) {
    static_assert(std::is_trivially_copyable_v<T>);
    if (remaining() < sizeof(T)) return false;
    std::memcpy(out, bytes_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return true;
  }
  bool take(uint64_t n, std::span<const uint8_t>* out) {
    if (remaining() < n) return false;
    *out = bytes_.subspan(pos_, n);
    pos_ += n;
    return true;
  }

 private:
  std::span<const uint8_t> bytes_;
  uint64_t pos_ = 0;
};

Unexpected truncated(const Cursor& c, const std::string& what) {
  return Unexpected(ErrorCode::kCorrupt, "file ends inside " + what + " at byte " + num(c.pos()) +
                                             " (file is " + num(c.size()) + " bytes)");
}

// Reads `string = u64 length | bytes`. `name()` names it in errors; it is
// called only on failure, as a vocabulary has tens of thousands of strings.
template <class NameFn>
Status read_string(Cursor& c, NameFn&& name, std::string_view* out) {
  uint64_t length;
  if (!c.read(&length)) return truncated(c, "the length of " + name());
  if (length > kGgufStringBytesMax) {
    return Unexpected(ErrorCode::kOutOfRange, name() + " is " + num(length) +
                                                  " bytes long, over the limit of " +
                                                  num(kGgufStringBytesMax) + " bytes");
  }
  std::span<const uint8_t> bytes;
  if (!c.take(length, &bytes)) {
    return Unexpected(ErrorCode::kCorrupt, name() + " of " + num(length) +
                                               " bytes runs past the end of the file (" +
                                               num(c.remaining()) + " bytes left at byte " +
                                               num(c.pos()) + ")");
  }
  *out = std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  return {};
}

// Reads the value of metadata entry `kv` (whose key and type are already set).
Status read_value(Cursor& c, const std::string& what, GgufKv* kv) {
  if (kv->type == GgufValueType::kString) {
    return read_string(c, [&] { return what + " value"; }, &kv->string);
  }
  if (kv->type != GgufValueType::kArray) {
    const uint64_t n = scalar_bytes(kv->type);
    std::span<const uint8_t> bytes;
    if (!c.take(n, &bytes)) return truncated(c, "the value of " + what);
    if (kv->type == GgufValueType::kBool && bytes[0] > 1) {
      return Unexpected(ErrorCode::kCorrupt,
                        what + " is a bool of value " + num(bytes[0]) + " (expected 0 or 1)");
    }
    kv->scalar = decode_scalar(kv->type, bytes.data());
    return {};
  }

  uint32_t element_type;
  if (!c.read(&element_type)) return truncated(c, "the element type of " + what);
  if (!known_value_type(element_type)) {
    return Unexpected(ErrorCode::kCorrupt,
                      what + " is an array of unknown value type " + num(element_type));
  }
  GgufArray& array = kv->array;
  array.element_type = static_cast<GgufValueType>(element_type);
  if (array.element_type == GgufValueType::kArray) {
    return Unexpected(ErrorCode::kUnsupported,
                      what + " is an array of arrays, which this reader does not support");
  }
  if (!c.read(&array.count)) return truncated(c, "the element count of " + what);
  if (array.count > kGgufArrayElementsMax) {
    return Unexpected(ErrorCode::kOutOfRange, what + " declares " + num(array.count) +
                                                  " elements, over the limit of " +
                                                  num(kGgufArrayElementsMax));
  }
  // A string element is at least its 8-byte length.
  const bool strings = array.element_type == GgufValueType::kString;
  const uint64_t element_bytes_min = strings ? 8 : scalar_bytes(array.element_type);
  const uint64_t bytes_min = array.count * element_bytes_min;  // < 2^27: no overflow
  if (bytes_min > c.remaining()) {
    return Unexpected(ErrorCode::kCorrupt,
                      what + " declares " + num(array.count) + " " +
                          gguf_value_type_name(array.element_type) + " elements, which need " +
                          (strings ? "at least " : "") + num(bytes_min) + " bytes, but only " +
                          num(c.remaining()) + " bytes are left at byte " + num(c.pos()));
  }
  if (!strings) {
    const bool ok = c.take(bytes_min, &array.raw);
    if (!ok) return truncated(c, what);  // unreachable: checked above
    if (array.element_type == GgufValueType::kBool) {
      for (uint64_t i = 0; i < array.count; ++i) {
        if (array.raw[i] > 1) {
          return Unexpected(ErrorCode::kCorrupt, what + " element " + num(i) +
                                                     " is a bool of value " +
                                                     num(array.raw[i]) + " (expected 0 or 1)");
        }
      }
    }
    return {};
  }
  array.strings.reserve(array.count);  // bounded by the check above
  for (uint64_t i = 0; i < array.count; ++i) {
    std::string_view s;
    IF_RETURN_IF_ERROR(read_string(c, [&] { return what + " element " + num(i); }, &s));
    array.strings.push_back(s);
  }
  return {};
}

std::string dims_string(const std::vector<uint64_t>& dims) {
  std::string s = "[";
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + num(dims[i]);
  return s + "]";
}

std::string describe(const GgufKv& kv) { return "metadata " + quoted(kv.key); }

std::string type_name_of(const GgufKv& kv) {
  if (kv.type != GgufValueType::kArray) return gguf_value_type_name(kv.type);
  return std::string(gguf_value_type_name(kv.array.element_type)) + "[]";
}

Unexpected wrong_type(const GgufKv& kv, const char* wanted) {
  return Unexpected(ErrorCode::kCorrupt,
                    describe(kv) + " is of type " + type_name_of(kv) + ", not " + wanted);
}

}  // namespace

const char* gguf_value_type_name(GgufValueType t) {
  switch (t) {
    case GgufValueType::kUint8: return "u8";
    case GgufValueType::kInt8: return "i8";
    case GgufValueType::kUint16: return "u16";
    case GgufValueType::kInt16: return "i16";
    case GgufValueType::kUint32: return "u32";
    case GgufValueType::kInt32: return "i32";
    case GgufValueType::kFloat32: return "f32";
    case GgufValueType::kBool: return "bool";
    case GgufValueType::kString: return "string";
    case GgufValueType::kArray: return "array";
    case GgufValueType::kUint64: return "u64";
    case GgufValueType::kInt64: return "i64";
    case GgufValueType::kFloat64: return "f64";
  }
  return "unknown";
}

const TensorTypeInfo* tensor_type_info(uint32_t type_id) {
  // ggml's block layouts (ggml-common.h); ids are ggml_type values.
  static constexpr TensorTypeInfo kF32{"f32", 1, 4};
  static constexpr TensorTypeInfo kF16{"f16", 1, 2};
  static constexpr TensorTypeInfo kQ4_0{"q4_0", 32, 18};
  static constexpr TensorTypeInfo kQ4_1{"q4_1", 32, 20};
  static constexpr TensorTypeInfo kQ5_0{"q5_0", 32, 22};
  static constexpr TensorTypeInfo kQ5_1{"q5_1", 32, 24};
  static constexpr TensorTypeInfo kQ8_0{"q8_0", 32, 34};
  static constexpr TensorTypeInfo kQ8_1{"q8_1", 32, 36};
  static constexpr TensorTypeInfo kQ2_K{"q2_K", 256, 84};
  static constexpr TensorTypeInfo kQ3_K{"q3_K", 256, 110};
  static constexpr TensorTypeInfo kQ4_K{"q4_K", 256, 144};
  static constexpr TensorTypeInfo kQ5_K{"q5_K", 256, 176};
  static constexpr TensorTypeInfo kQ6_K{"q6_K", 256, 210};
  static constexpr TensorTypeInfo kQ8_K{"q8_K", 256, 292};
  static constexpr TensorTypeInfo kI8{"i8", 1, 1};
  static constexpr TensorTypeInfo kI16{"i16", 1, 2};
  static constexpr TensorTypeInfo kI32{"i32", 1, 4};
  static constexpr TensorTypeInfo kI64{"i64", 1, 8};
  static constexpr TensorTypeInfo kF64{"f64", 1, 8};
  static constexpr TensorTypeInfo kBF16{"bf16", 1, 2};
  switch (static_cast<TensorType>(type_id)) {
    case TensorType::kF32: return &kF32;
    case TensorType::kF16: return &kF16;
    case TensorType::kQ4_0: return &kQ4_0;
    case TensorType::kQ4_1: return &kQ4_1;
    case TensorType::kQ5_0: return &kQ5_0;
    case TensorType::kQ5_1: return &kQ5_1;
    case TensorType::kQ8_0: return &kQ8_0;
    case TensorType::kQ8_1: return &kQ8_1;
    case TensorType::kQ2_K: return &kQ2_K;
    case TensorType::kQ3_K: return &kQ3_K;
    case TensorType::kQ4_K: return &kQ4_K;
    case TensorType::kQ5_K: return &kQ5_K;
    case TensorType::kQ6_K: return &kQ6_K;
    case TensorType::kQ8_K: return &kQ8_K;
    case TensorType::kI8: return &kI8;
    case TensorType::kI16: return &kI16;
    case TensorType::kI32: return &kI32;
    case TensorType::kI64: return &kI64;
    case TensorType::kF64: return &kF64;
    case TensorType::kBF16: return &kBF16;
  }
  return nullptr;
}

bool tensor_type_supported(TensorType t) {
  return t == TensorType::kF32 || t == TensorType::kF16 || t == TensorType::kQ4_0 ||
         t == TensorType::kQ8_0;
}

uint64_t tensor_bytes(TensorType type, uint64_t elements) {
  const TensorTypeInfo* info = tensor_type_info(type);
  if (info == nullptr || elements % info->block_elements != 0) return 0;
  uint64_t bytes;
  if (__builtin_mul_overflow(elements / info->block_elements, uint64_t{info->block_bytes}, &bytes)) {
    return 0;
  }
  return bytes;
}

// ---------------------------------------------------------------------------
// GgufFile

Result<std::unique_ptr<GgufFile>> GgufFile::open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int e = errno;
    return Unexpected(e == ENOENT ? ErrorCode::kNotFound : ErrorCode::kIo,
                      "cannot open " + quoted(path) + ": " + std::strerror(e));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int e = errno;
    ::close(fd);
    return Unexpected(ErrorCode::kIo, "cannot stat " + quoted(path) + ": " + std::strerror(e));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return Unexpected(ErrorCode::kInvalidArgument, quoted(path) + " is not a regular file");
  }
  std::unique_ptr<GgufFile> file(new GgufFile());
  const auto size = static_cast<uint64_t>(st.st_size);
  if (size > 0) {
    // mmap refuses a length of 0; an empty file is reported by parse().
    void* map = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
      const int e = errno;
      ::close(fd);
      return Unexpected(ErrorCode::kIo, "cannot map " + quoted(path) + ": " + std::strerror(e));
    }
    file->map_ = map;
    file->map_bytes_ = size;
    file->bytes_ = std::span<const uint8_t>(static_cast<const uint8_t*>(map), size);
  }
  ::close(fd);  // the mapping keeps the file open
  Status status = file->parse();
  if (!status) {
    return Unexpected(status.error().code, path + ": " + status.error().message);
  }
  return file;
}

Result<std::unique_ptr<GgufFile>> GgufFile::from_memory(std::span<const uint8_t> bytes) {
  std::unique_ptr<GgufFile> file(new GgufFile());
  file->bytes_ = bytes;
  IF_RETURN_IF_ERROR(file->parse());
  return file;
}

GgufFile::~GgufFile() {
  if (map_ != nullptr) ::munmap(map_, map_bytes_);
}

Status GgufFile::parse() {
  Cursor c(bytes_);

  // Header.
  uint32_t magic;
  if (c.read(&magic) && magic != kGgufMagic) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%02x %02x %02x %02x", bytes_[0], bytes_[1], bytes_[2],
                  bytes_[3]);
    return Unexpected(ErrorCode::kCorrupt, std::string("bad magic: the file starts with bytes ") +
                                               buf + ", not \"GGUF\" (47 47 55 46)");
  }
  if (bytes_.size() < kHeaderBytes) {
    return Unexpected(ErrorCode::kCorrupt, "file is " + num(bytes_.size()) +
                                               " bytes, shorter than the " + num(kHeaderBytes) +
                                               "-byte GGUF header");
  }
  uint32_t version;
  uint64_t tensor_count;
  uint64_t kv_count;
  const bool header_ok = c.read(&version) && c.read(&tensor_count) && c.read(&kv_count);
  if (!header_ok) return truncated(c, "the header");  // unreachable: size checked above
  if (version != 2 && version != 3) {
    std::string hint;
    if (version == 1) hint = " (version 1 used 32-bit counts; convert it with a current llama.cpp)";
    if (__builtin_bswap32(version) == 2 || __builtin_bswap32(version) == 3) {
      hint = " (a big-endian file? only little-endian files are read)";
    }
    return Unexpected(ErrorCode::kUnsupported, "GGUF version " + num(version) +
                                                   " is not supported (this reader reads "
                                                   "versions 2 and 3)" + hint);
  }
  version_ = version;  // 2 and 3 share a layout; 3 added big-endian files
  if (tensor_count > kGgufTensorCountMax) {
    return Unexpected(ErrorCode::kOutOfRange, "header declares " + num(tensor_count) +
                                                  " tensors, over the limit of " +
                                                  num(kGgufTensorCountMax));
  }
  if (kv_count > kGgufMetadataCountMax) {
    return Unexpected(ErrorCode::kOutOfRange, "header declares " + num(kv_count) +
                                                  " metadata entries, over the limit of " +
                                                  num(kGgufMetadataCountMax));
  }
  // Both counts are < 2^17, so these products cannot overflow.
  if (kv_count * kKvBytesMin > c.remaining()) {
    return Unexpected(ErrorCode::kCorrupt,
                      "header declares " + num(kv_count) + " metadata entries, which need at least " +
                          num(kv_count * kKvBytesMin) + " bytes, but the file has only " +
                          num(c.remaining()) + " bytes after the header");
  }

  // Metadata.
  kvs_.reserve(kv_count);
  std::unordered_set<std::string_view> keys;  // views into bytes_
  keys.reserve(kv_count);
  for (uint64_t i = 0; i < kv_count; ++i) {
    std::string_view key;
    IF_RETURN_IF_ERROR(read_string(c, [&] { return "metadata key " + num(i); }, &key));
    const std::string what = "metadata " + quoted(key) + " (entry " + num(i) + ")";
    if (!keys.insert(key).second) {
      return Unexpected(ErrorCode::kCorrupt, "duplicate metadata key " + quoted(key) +
                                                 " (entry " + num(i) + ")");
    }
    uint32_t type;
    if (!c.read(&type)) return truncated(c, "the value type of " + what);
    if (!known_value_type(type)) {
      return Unexpected(ErrorCode::kCorrupt, what + " has unknown value type " + num(type));
    }
    GgufKv kv;
    kv.key = std::string(key);
    kv.type = static_cast<GgufValueType>(type);
    IF_RETURN_IF_ERROR(read_value(c, what, &kv));
    kvs_.push_back(std::move(kv));
  }
  for (size_t i = 0; i < kvs_.size(); ++i) kv_index_.emplace(kvs_[i].key, i);

  if (const GgufKv* kv = find(kAlignmentKey)) {
    if (kv->type != GgufValueType::kUint32) {
      return Unexpected(ErrorCode::kCorrupt, std::string(kAlignmentKey) + " is of type " +
                                                 type_name_of(*kv) + ", not u32");
    }
    const uint64_t alignment = std::get<uint64_t>(kv->scalar);
    if (!is_power_of_two(alignment)) {
      return Unexpected(ErrorCode::kCorrupt, std::string(kAlignmentKey) + " is " +
                                                 num(alignment) + ", not a power of two");
    }
    if (alignment > kGgufAlignmentMax) {
      return Unexpected(ErrorCode::kOutOfRange, std::string(kAlignmentKey) + " is " +
                                                    num(alignment) + ", over the limit of " +
                                                    num(kGgufAlignmentMax));
    }
    alignment_ = static_cast<uint32_t>(alignment);
  }

  // Tensor directory.
  if (tensor_count * kTensorInfoBytesMin > c.remaining()) {
    return Unexpected(ErrorCode::kCorrupt,
                      "header declares " + num(tensor_count) + " tensors, whose directory needs "
                      "at least " + num(tensor_count * kTensorInfoBytesMin) +
                          " bytes, but only " + num(c.remaining()) + " bytes are left at byte " +
                          num(c.pos()));
  }
  tensors_.reserve(tensor_count);
  std::unordered_set<std::string_view> names;  // views into bytes_
  names.reserve(tensor_count);
  for (uint64_t i = 0; i < tensor_count; ++i) {
    std::string_view name;
    IF_RETURN_IF_ERROR(read_string(c, [&] { return "the name of tensor " + num(i); }, &name));
    const std::string what = "tensor " + quoted(name) + " (index " + num(i) + ")";
    if (!names.insert(name).second) {
      return Unexpected(ErrorCode::kCorrupt, "duplicate tensor name " + quoted(name) +
                                                 " (index " + num(i) + ")");
    }
    uint32_t n_dims;
    if (!c.read(&n_dims)) return truncated(c, "the dimension count of " + what);
    if (n_dims < 1 || n_dims > kGgufDimsMax) {
      return Unexpected(ErrorCode::kCorrupt, what + " has " + num(n_dims) +
                                                 " dimensions (expected 1 to " +
                                                 num(kGgufDimsMax) + ")");
    }
    GgufTensorInfo t;
    t.name = std::string(name);
    t.dims.resize(n_dims);
    uint64_t elements = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      if (!c.read(&t.dims[d])) return truncated(c, "ne[" + num(d) + "] of " + what);
      if (t.dims[d] == 0) {
        return Unexpected(ErrorCode::kCorrupt, what + " has ne[" + num(d) + "] = 0");
      }
    }
    for (uint32_t d = 0; d < n_dims; ++d) {
      if (__builtin_mul_overflow(elements, t.dims[d], &elements)) {
        return Unexpected(ErrorCode::kCorrupt, what + " has dimensions " + dims_string(t.dims) +
                                                   " whose element count overflows 64 bits");
      }
    }
    t.elements = elements;
    uint32_t type_id;
    if (!c.read(&type_id)) return truncated(c, "the type of " + what);
    const TensorTypeInfo* info = tensor_type_info(type_id);
    if (info == nullptr) {
      return Unexpected(ErrorCode::kUnsupported, what + " has unknown tensor type id " +
                                                     num(type_id));
    }
    t.type = static_cast<TensorType>(type_id);
    if (t.dims[0] % info->block_elements != 0) {
      return Unexpected(ErrorCode::kCorrupt,
                        what + " has ne[0] = " + num(t.dims[0]) + ", not a multiple of " +
                            info->name + "'s block of " + num(info->block_elements) +
                            " elements");
    }
    if (__builtin_mul_overflow(elements / info->block_elements, uint64_t{info->block_bytes},
                               &t.bytes)) {
      return Unexpected(ErrorCode::kCorrupt, what + " of " + num(elements) + " " + info->name +
                                                 " elements has a byte size that overflows "
                                                 "64 bits");
    }
    if (!c.read(&t.offset)) return truncated(c, "the data offset of " + what);
    if (t.offset % alignment_ != 0) {
      return Unexpected(ErrorCode::kCorrupt, what + " has data offset " + num(t.offset) +
                                                 ", not a multiple of the alignment " +
                                                 num(alignment_));
    }
    tensors_.push_back(std::move(t));
  }
  for (size_t i = 0; i < tensors_.size(); ++i) tensor_index_.emplace(tensors_[i].name, i);

  // Data section. A file without tensors may omit the final padding.
  if (!align_up(c.pos(), alignment_, &data_offset_)) {
    return Unexpected(ErrorCode::kInternal, "data offset overflows");  // pos < 2^63
  }
  const uint64_t data_bytes = bytes_.size() > data_offset_ ? bytes_.size() - data_offset_ : 0;
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const GgufTensorInfo& t = tensors_[i];
    if (t.offset > data_bytes || t.bytes > data_bytes - t.offset) {
      return Unexpected(ErrorCode::kCorrupt,
                        "tensor " + quoted(t.name) + " (index " + num(i) +
                            ") extends past the end of the file: offset " + num(t.offset) +
                            " + " + num(t.bytes) + " bytes > data section of " +
                            num(data_bytes) + " bytes");
    }
  }
  // Every extent is now inside the file, so offset + bytes cannot overflow.
  std::vector<size_t> order(tensors_.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::sort(order.begin(), order.end(), [this](size_t a, size_t b) {
    return tensors_[a].offset != tensors_[b].offset ? tensors_[a].offset < tensors_[b].offset
                                                    : a < b;
  });
  for (size_t k = 1; k < order.size(); ++k) {
    const GgufTensorInfo& a = tensors_[order[k - 1]];
    const GgufTensorInfo& b = tensors_[order[k]];
    if (a.offset + a.bytes > b.offset) {
      return Unexpected(ErrorCode::kCorrupt,
                        "tensors " + quoted(a.name) + " (index " + num(order[k - 1]) +
                            ", bytes " + num(a.offset) + ".." + num(a.offset + a.bytes) +
                            ") and " + quoted(b.name) + " (index " + num(order[k]) +
                            ", bytes " + num(b.offset) + ".." + num(b.offset + b.bytes) +
                            ") overlap");
    }
  }
  return {};
}

const GgufKv* GgufFile::find(std::string_view key) const {
  auto it = kv_index_.find(key);
  return it == kv_index_.end() ? nullptr : &kvs_[it->second];
}

const GgufTensorInfo* GgufFile::find_tensor(std::string_view name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

namespace {

Result<const GgufKv*> lookup(const GgufFile& f, std::string_view key) {
  const GgufKv* kv = f.find(key);
  if (kv == nullptr) {
    return Unexpected(ErrorCode::kNotFound, "metadata key " + quoted(key) + " not found");
  }
  return kv;
}

}  // namespace

Result<std::string_view> GgufFile::get_string(std::string_view key) const {
  auto kv = lookup(*this, key);
  if (!kv) return Unexpected(kv.error());
  if ((*kv)->type != GgufValueType::kString) return wrong_type(**kv, "string");
  return (*kv)->string;
}

Result<uint64_t> GgufFile::get_uint(std::string_view key) const {
  auto kv = lookup(*this, key);
  if (!kv) return Unexpected(kv.error());
  const GgufKv& v = **kv;
  if (is_unsigned(v.type)) return std::get<uint64_t>(v.scalar);
  if (is_signed(v.type)) {
    const int64_t i = std::get<int64_t>(v.scalar);
    if (i < 0) {
      return Unexpected(ErrorCode::kCorrupt, describe(v) + " is " + std::to_string(i) +
                                                 ", out of range for an unsigned integer");
    }
    return static_cast<uint64_t>(i);
  }
  return wrong_type(v, "an integer");
}

Result<int64_t> GgufFile::get_int(std::string_view key) const {
  auto kv = lookup(*this, key);
  if (!kv) return Unexpected(kv.error());
  const GgufKv& v = **kv;
  if (is_signed(v.type)) return std::get<int64_t>(v.scalar);
  if (is_unsigned(v.type)) {
    const uint64_t u = std::get<uint64_t>(v.scalar);
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return Unexpected(ErrorCode::kCorrupt, describe(v) + " is " + num(u) +
                                                 ", out of range for a signed 64-bit integer");
    }
    return static_cast<int64_t>(u);
  }
  return wrong_type(v, "an integer");
}

Result<double> GgufFile::get_float(std::string_view key) const {
  auto kv = lookup(*this, key);
  if (!kv) return Unexpected(kv.error());
  if (!is_float((*kv)->type)) return wrong_type(**kv, "a float");
  return std::get<double>((*kv)->scalar);
}

Result<bool> GgufFile::get_bool(std::string_view key) const {
  auto kv = lookup(*this, key);
  if (!kv) return Unexpected(kv.error());
  if ((*kv)->type != GgufValueType::kBool) return wrong_type(**kv, "bool");
  return std::get<bool>((*kv)->scalar);
}

Result<std::vector<std::string_view>> GgufFile::get_string_array(std::string_view key) const {
  auto kv = lookup(*this, key);
  if (!kv) return Unexpected(kv.error());
  const GgufKv& v = **kv;
  if (v.type != GgufValueType::kArray || v.array.element_type != GgufValueType::kString) {
    return wrong_type(v, "string[]");
  }
  return v.array.strings;
}

Result<std::vector<float>> GgufFile::get_f32_array(std::string_view key) const {
  auto kv = lookup(*this, key);
  if (!kv) return Unexpected(kv.error());
  const GgufKv& v = **kv;
  if (v.type != GgufValueType::kArray || v.array.element_type != GgufValueType::kFloat32) {
    return wrong_type(v, "f32[]");
  }
  std::vector<float> out(v.array.count);
  if (!out.empty()) std::memcpy(out.data(), v.array.raw.data(), out.size() * sizeof(float));
  return out;
}

Result<std::vector<int32_t>> GgufFile::get_i32_array(std::string_view key) const {
  auto kv = lookup(*this, key);
  if (!kv) return Unexpected(kv.error());
  const GgufKv& v = **kv;
  const GgufValueType et = v.array.element_type;
  if (v.type != GgufValueType::kArray || !(is_signed(et) || is_unsigned(et))) {
    return wrong_type(v, "an integer array");
  }
  // Integer arrays of any width convert, element by element, when they fit.
  const uint64_t size = scalar_bytes(et);
  std::vector<int32_t> out;
  out.reserve(v.array.count);
  for (uint64_t i = 0; i < v.array.count; ++i) {
    const GgufScalar s = decode_scalar(et, v.array.raw.data() + i * size);
    bool fits;
    int64_t x;
    if (const auto* u = std::get_if<uint64_t>(&s)) {
      fits = *u <= static_cast<uint64_t>(std::numeric_limits<int32_t>::max());
      x = static_cast<int64_t>(fits ? *u : 0);
    } else {
      x = std::get<int64_t>(s);
      fits = x >= std::numeric_limits<int32_t>::min() && x <= std::numeric_limits<int32_t>::max();
    }
    if (!fits) {
      return Unexpected(ErrorCode::kCorrupt, describe(v) + " element " + num(i) +
                                                 " is out of range for i32");
    }
    out.push_back(static_cast<int32_t>(x));
  }
  return out;
}

// ---------------------------------------------------------------------------
// GgufWriter

namespace {

template <class T>
void put(std::vector<uint8_t>& out, T v) {
  static_assert(std::is_trivially_copyable_v<T>);
  const size_t n = out.size();
  out.resize(n + sizeof v);
  std::memcpy(out.data() + n, &v, sizeof v);
}

void put_string(std::vector<uint8_t>& out, std::string_view s) {
  put<uint64_t>(out, s.size());
  out.insert(out.end(), s.begin(), s.end());
}

// Writes all of `bytes` to `fd`, retrying short writes and EINTR.
bool write_all(int fd, const uint8_t* bytes, size_t n) {
  while (n > 0) {
    const ssize_t w = ::write(fd, bytes, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    bytes += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

}  // namespace

GgufWriter::GgufWriter(uint32_t alignment) : alignment_(alignment) {
  // A programmer's argument, never file input: the reader would refuse it.
  CHECK(is_power_of_two(alignment) && alignment <= kGgufAlignmentMax);
}

void GgufWriter::fail(ErrorCode code, std::string message) {
  if (status_) status_ = Unexpected(code, std::move(message));
}

bool GgufWriter::begin_kv(const std::string& key, GgufValueType type) {
  if (key == kAlignmentKey) return false;  // the constructor's alignment is written instead
  if (key.size() > kGgufStringBytesMax) {
    fail(ErrorCode::kOutOfRange, "metadata key of " + num(key.size()) + " bytes is too long");
    return false;
  }
  const uint64_t count_max = kGgufMetadataCountMax - (alignment_ != kGgufDefaultAlignment ? 1 : 0);
  if (kv_count_ >= count_max) {  // general.alignment, when written, counts too
    fail(ErrorCode::kOutOfRange, "more than " + num(count_max) + " metadata entries");
    return false;
  }
  if (!keys_.insert(key).second) {
    fail(ErrorCode::kInvalidArgument, "duplicate metadata key " + quoted(key));
    return false;
  }
  put_string(kv_bytes_, key);
  put<uint32_t>(kv_bytes_, static_cast<uint32_t>(type));
  ++kv_count_;
  return true;
}

void GgufWriter::add_string(std::string key, std::string value) {
  if (value.size() > kGgufStringBytesMax) {
    fail(ErrorCode::kOutOfRange, "metadata " + quoted(key) + ": string of " +
                                     num(value.size()) + " bytes is over the limit of " +
                                     num(kGgufStringBytesMax));
    return;
  }
  if (!begin_kv(key, GgufValueType::kString)) return;
  put_string(kv_bytes_, value);
}

void GgufWriter::add_uint32(std::string key, uint32_t value) {
  if (begin_kv(key, GgufValueType::kUint32)) put<uint32_t>(kv_bytes_, value);
}

void GgufWriter::add_int32(std::string key, int32_t value) {
  if (begin_kv(key, GgufValueType::kInt32)) put<int32_t>(kv_bytes_, value);
}

void GgufWriter::add_uint64(std::string key, uint64_t value) {
  if (begin_kv(key, GgufValueType::kUint64)) put<uint64_t>(kv_bytes_, value);
}

void GgufWriter::add_float32(std::string key, float value) {
  if (begin_kv(key, GgufValueType::kFloat32)) put<float>(kv_bytes_, value);
}

void GgufWriter::add_bool(std::string key, bool value) {
  if (begin_kv(key, GgufValueType::kBool)) put<uint8_t>(kv_bytes_, value ? 1 : 0);
}

void GgufWriter::add_string_array(std::string key, std::vector<std::string> values) {
  if (values.size() > kGgufArrayElementsMax) {
    fail(ErrorCode::kOutOfRange, "metadata " + quoted(key) + ": array of " +
                                     num(values.size()) + " elements is over the limit");
    return;
  }
  for (const std::string& v : values) {
    if (v.size() > kGgufStringBytesMax) {
      fail(ErrorCode::kOutOfRange, "metadata " + quoted(key) + ": a string of " +
                                       num(v.size()) + " bytes is over the limit");
      return;
    }
  }
  if (!begin_kv(key, GgufValueType::kArray)) return;
  put<uint32_t>(kv_bytes_, static_cast<uint32_t>(GgufValueType::kString));
  put<uint64_t>(kv_bytes_, values.size());
  for (const std::string& v : values) put_string(kv_bytes_, v);
}

void GgufWriter::add_float32_array(std::string key, std::vector<float> values) {
  if (values.size() > kGgufArrayElementsMax) {
    fail(ErrorCode::kOutOfRange, "metadata " + quoted(key) + ": array of " +
                                     num(values.size()) + " elements is over the limit");
    return;
  }
  if (!begin_kv(key, GgufValueType::kArray)) return;
  put<uint32_t>(kv_bytes_, static_cast<uint32_t>(GgufValueType::kFloat32));
  put<uint64_t>(kv_bytes_, values.size());
  for (float v : values) put<float>(kv_bytes_, v);
}

void GgufWriter::add_int32_array(std::string key, std::vector<int32_t> values) {
  if (values.size() > kGgufArrayElementsMax) {
    fail(ErrorCode::kOutOfRange, "metadata " + quoted(key) + ": array of " +
                                     num(values.size()) + " elements is over the limit");
    return;
  }
  if (!begin_kv(key, GgufValueType::kArray)) return;
  put<uint32_t>(kv_bytes_, static_cast<uint32_t>(GgufValueType::kInt32));
  put<uint64_t>(kv_bytes_, values.size());
  for (int32_t v : values) put<int32_t>(kv_bytes_, v);
}

void GgufWriter::add_kv(const GgufKv& kv) {
  const std::string what = "metadata " + quoted(kv.key);
  // The entry may have been built by hand: check that its parts agree before
  // writing anything, so a bad entry leaves no half-written bytes behind.
  if (kv.type == GgufValueType::kString) {
    if (kv.string.size() > kGgufStringBytesMax) {
      fail(ErrorCode::kOutOfRange, what + ": string over the limit");
      return;
    }
    if (begin_kv(kv.key, kv.type)) put_string(kv_bytes_, kv.string);
    return;
  }
  if (kv.type == GgufValueType::kArray) {
    const GgufArray& a = kv.array;
    const GgufValueType et = a.element_type;
    if (!known_value_type(static_cast<uint32_t>(et)) || et == GgufValueType::kArray) {
      fail(ErrorCode::kUnsupported, what + ": arrays of " + gguf_value_type_name(et) +
                                        " cannot be written");
      return;
    }
    if (a.count > kGgufArrayElementsMax) {
      fail(ErrorCode::kOutOfRange, what + ": array of " + num(a.count) +
                                       " elements is over the limit");
      return;
    }
    if (et == GgufValueType::kString) {
      bool ok = a.strings.size() == a.count;
      for (std::string_view s : a.strings) ok = ok && s.size() <= kGgufStringBytesMax;
      if (!ok) {
        fail(ErrorCode::kInvalidArgument, what + ": string array does not match its count "
                                                 "or holds an over-long string");
        return;
      }
    } else if (a.raw.size() != a.count * scalar_bytes(et)) {
      fail(ErrorCode::kInvalidArgument, what + ": array of " + num(a.count) + " " +
                                            gguf_value_type_name(et) + " holds " +
                                            num(a.raw.size()) + " bytes");
      return;
    }
    if (!begin_kv(kv.key, kv.type)) return;
    put<uint32_t>(kv_bytes_, static_cast<uint32_t>(et));
    put<uint64_t>(kv_bytes_, a.count);
    if (et == GgufValueType::kString) {
      for (std::string_view s : a.strings) put_string(kv_bytes_, s);
    } else {
      kv_bytes_.insert(kv_bytes_.end(), a.raw.begin(), a.raw.end());
    }
    return;
  }
  if (!known_value_type(static_cast<uint32_t>(kv.type))) {
    fail(ErrorCode::kInvalidArgument, what + ": unknown value type " +
                                          num(static_cast<uint32_t>(kv.type)));
    return;
  }
  // Scalars: the variant holds uint64_t, int64_t, double or bool by kind.
  const auto* u = std::get_if<uint64_t>(&kv.scalar);
  const auto* i = std::get_if<int64_t>(&kv.scalar);
  const auto* d = std::get_if<double>(&kv.scalar);
  const auto* b = std::get_if<bool>(&kv.scalar);
  const bool matches = (is_unsigned(kv.type) && u) || (is_signed(kv.type) && i) ||
                       (is_float(kv.type) && d) || (kv.type == GgufValueType::kBool && b);
  if (!matches) {
    fail(ErrorCode::kInvalidArgument, what + ": value does not match its type " +
                                          gguf_value_type_name(kv.type));
    return;
  }
  if (!begin_kv(kv.key, kv.type)) return;
  switch (kv.type) {
    case GgufValueType::kUint8: put<uint8_t>(kv_bytes_, static_cast<uint8_t>(*u)); break;
    case GgufValueType::kUint16: put<uint16_t>(kv_bytes_, static_cast<uint16_t>(*u)); break;
    case GgufValueType::kUint32: put<uint32_t>(kv_bytes_, static_cast<uint32_t>(*u)); break;
    case GgufValueType::kUint64: put<uint64_t>(kv_bytes_, *u); break;
    case GgufValueType::kInt8: put<int8_t>(kv_bytes_, static_cast<int8_t>(*i)); break;
    case GgufValueType::kInt16: put<int16_t>(kv_bytes_, static_cast<int16_t>(*i)); break;
    case GgufValueType::kInt32: put<int32_t>(kv_bytes_, static_cast<int32_t>(*i)); break;
    case GgufValueType::kInt64: put<int64_t>(kv_bytes_, *i); break;
    case GgufValueType::kFloat32: put<float>(kv_bytes_, static_cast<float>(*d)); break;
    case GgufValueType::kFloat64: put<double>(kv_bytes_, *d); break;
    case GgufValueType::kBool: put<uint8_t>(kv_bytes_, *b ? 1 : 0); break;
    case GgufValueType::kString:
    case GgufValueType::kArray: break;  // handled above
  }
}

Status GgufWriter::add_tensor(std::string name, TensorType type, std::vector<uint64_t> dims,
                              std::vector<uint8_t> data) {
  const std::string what = "tensor " + quoted(name);
  if (name.size() > kGgufStringBytesMax) {
    return Unexpected(ErrorCode::kInvalidArgument, what + ": name is too long");
  }
  if (tensors_.size() >= kGgufTensorCountMax) {
    return Unexpected(ErrorCode::kOutOfRange, what + ": more than " + num(kGgufTensorCountMax) +
                                                  " tensors");
  }
  const TensorTypeInfo* info = tensor_type_info(type);
  if (info == nullptr) {
    return Unexpected(ErrorCode::kInvalidArgument,
                      what + ": unknown tensor type id " + num(static_cast<uint32_t>(type)));
  }
  if (dims.empty() || dims.size() > kGgufDimsMax) {
    return Unexpected(ErrorCode::kInvalidArgument, what + " has " + num(dims.size()) +
                                                       " dimensions (expected 1 to 4)");
  }
  uint64_t elements = 1;
  for (uint64_t d : dims) {
    if (d == 0 || __builtin_mul_overflow(elements, d, &elements)) {
      return Unexpected(ErrorCode::kInvalidArgument,
                        what + " has invalid dimensions " + dims_string(dims));
    }
  }
  if (dims[0] % info->block_elements != 0) {
    return Unexpected(ErrorCode::kInvalidArgument,
                      what + ": ne[0] = " + num(dims[0]) + " is not a multiple of " +
                          info->name + "'s block of " + num(info->block_elements));
  }
  const uint64_t bytes = tensor_bytes(type, elements);
  if (bytes == 0 || data.size() != bytes) {
    return Unexpected(ErrorCode::kInvalidArgument,
                      what + " " + info->name + dims_string(dims) + " needs " + num(bytes) +
                          " bytes of data, got " + num(data.size()));
  }
  if (tensor_names_.count(name) != 0) {
    return Unexpected(ErrorCode::kInvalidArgument, "duplicate tensor name " + quoted(name));
  }
  tensor_names_.insert(name);
  tensors_.push_back(PendingTensor{std::move(name), type, std::move(dims), std::move(data)});
  return {};
}

std::vector<uint8_t> GgufWriter::serialize_directory() const {
  const bool write_alignment = alignment_ != kGgufDefaultAlignment;
  std::vector<uint8_t> out;
  put<uint32_t>(out, kGgufMagic);
  put<uint32_t>(out, kGgufVersion);
  put<uint64_t>(out, tensors_.size());
  put<uint64_t>(out, kv_count_ + (write_alignment ? 1 : 0));
  if (write_alignment) {
    put_string(out, kAlignmentKey);
    put<uint32_t>(out, static_cast<uint32_t>(GgufValueType::kUint32));
    put<uint32_t>(out, alignment_);
  }
  out.insert(out.end(), kv_bytes_.begin(), kv_bytes_.end());
  uint64_t offset = 0;
  for (const PendingTensor& t : tensors_) {
    put_string(out, t.name);
    put<uint32_t>(out, static_cast<uint32_t>(t.dims.size()));
    for (uint64_t d : t.dims) put<uint64_t>(out, d);
    put<uint32_t>(out, static_cast<uint32_t>(t.type));
    put<uint64_t>(out, offset);
    CHECK(align_up(offset + t.data.size(), alignment_, &offset));
  }
  uint64_t data_start;
  CHECK(align_up(out.size(), alignment_, &data_start));
  out.resize(data_start, 0);
  return out;
}

std::vector<uint8_t> GgufWriter::serialize() const {
  std::vector<uint8_t> out = serialize_directory();
  for (const PendingTensor& t : tensors_) {
    out.insert(out.end(), t.data.begin(), t.data.end());
    uint64_t end;
    CHECK(align_up(out.size(), alignment_, &end));
    out.resize(end, 0);  // the data section starts aligned, so this aligns the offset too
  }
  return out;
}

Status GgufWriter::write(const std::string& path) const {
  if (!status_) return status_;
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    return Unexpected(ErrorCode::kIo, "cannot create " + quoted(tmp) + ": " + std::strerror(errno));
  }
  auto abandon = [&](const std::string& doing) -> Status {
    const int e = errno;
    ::close(fd);
    ::unlink(tmp.c_str());
    return Unexpected(ErrorCode::kIo, "cannot " + doing + " " + quoted(tmp) + ": " +
                                          std::strerror(e));
  };
  // Tensor data is written from where it lies rather than copied into one
  // buffer, so that writing a model does not need twice its size in memory.
  static constexpr uint8_t kZeros[kGgufAlignmentMax] = {};
  const std::vector<uint8_t> directory = serialize_directory();
  if (!write_all(fd, directory.data(), directory.size())) return abandon("write");
  for (const PendingTensor& t : tensors_) {
    if (!write_all(fd, t.data.data(), t.data.size())) return abandon("write");
    const uint64_t pad = (alignment_ - t.data.size() % alignment_) % alignment_;
    if (!write_all(fd, kZeros, pad)) return abandon("write");
  }
  // Durable before it becomes visible under its name.
  if (::fsync(fd) != 0) return abandon("sync");
  if (::close(fd) != 0) {
    const int e = errno;
    ::unlink(tmp.c_str());
    return Unexpected(ErrorCode::kIo, "cannot close " + quoted(tmp) + ": " + std::strerror(e));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int e = errno;
    ::unlink(tmp.c_str());
    return Unexpected(ErrorCode::kIo, "cannot rename " + quoted(tmp) + " to " + quoted(path) +
                                          ": " + std::strerror(e));
  }
  return {};
}

void GgufFile::release_pages(const uint8_t* data, size_t bytes) const {
  if (map_ == nullptr || bytes == 0) return;
  const auto base = reinterpret_cast<uintptr_t>(map_);
  const auto begin = reinterpret_cast<uintptr_t>(data);
  if (begin < base || begin + bytes > base + map_bytes_) return;
  const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t first = (begin + page - 1) / page * page;
  const uintptr_t last = (begin + bytes) / page * page;
  if (first < last) madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);
}

}  // namespace idlefleet::engine
