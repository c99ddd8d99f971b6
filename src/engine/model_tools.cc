// Model tools (see model_tools.h). The llama2.c formats are documented byte by
// byte beside their readers below; GGUF is in gguf.h.
#include "engine/model_tools.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "common/check.h"
#include "common/random.h"
#include "engine/model_format.h"
#include "engine/quant.h"

namespace idlefleet::engine {
namespace {

namespace keys = gguf_keys;

// Both llama2.c's files and GGUF are little-endian; we read and write them
// with plain copies.
static_assert(std::endian::native == std::endian::little);

// Bytes copied per read when a tensor is copied unchanged.
constexpr uint64_t kCopyChunkBytes = 1u << 20;
// Progress reports per run, at most (plus the final one).
constexpr uint64_t kProgressReportsMax = 512;

std::string in_quotes(const std::string& s) { return "'" + s + "'"; }

std::string errno_text() { return std::strerror(errno); }

Unexpected with_context(const std::string& context, const Error& e) {
  return Unexpected(e.code, context + ": " + e.message);
}

// ---------------------------------------------------------------------------
// Reading.

// A read-only file read at explicit offsets. Every read is checked against
// the file's size first, so that no header value, however corrupt, can send a
// read past the end.
class FileReader {
 public:
  static Result<std::unique_ptr<FileReader>> open(const std::string& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      const ErrorCode code = errno == ENOENT ? ErrorCode::kNotFound : ErrorCode::kIo;
      return Unexpected(code, "cannot open " + in_quotes(path) + ": " + errno_text());
    }
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
      ::close(fd);
      return Unexpected(ErrorCode::kIo, in_quotes(path) + " is not a regular file");
    }
    return std::unique_ptr<FileReader>(new FileReader(fd, static_cast<uint64_t>(st.st_size)));
  }

  ~FileReader() { ::close(fd_); }
  FileReader(const FileReader&) = delete;
  FileReader& operator=(const FileReader&) = delete;

  uint64_t size() const { return size_; }

  // Reads bytes [offset, offset + bytes); kCorrupt when they are not all in
  // the file.
  Status read_at(uint64_t offset, void* dst, uint64_t bytes) const {
    if (offset > size_ || bytes > size_ - offset) {
      return Unexpected(ErrorCode::kCorrupt,
                        "truncated: needs bytes up to " + std::to_string(offset + bytes) +
                            " but the file has " + std::to_string(size_));
    }
    auto* out = static_cast<uint8_t*>(dst);
    while (bytes > 0) {
      const ssize_t n = ::pread(fd_, out, bytes, static_cast<off_t>(offset));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        return Unexpected(ErrorCode::kIo, "read failed at offset " + std::to_string(offset) +
                                              ": " + (n < 0 ? errno_text() : "file shrank"));
      }
      out += n;
      offset += static_cast<uint64_t>(n);
      bytes -= static_cast<uint64_t>(n);
    }
    return {};
  }

 private:
  FileReader(int fd, uint64_t size) : fd_(fd), size_(size) {}
  int fd_;
  uint64_t size_;
};

// Sequential reads through a FileReader, for the tokenizer's variable-length
// records.
class Cursor {
 public:
  explicit Cursor(const FileReader& file) : file_(file) {}
  template <class T>
  Status read(T* value) {
    IF_RETURN_IF_ERROR(file_.read_at(pos_, value, sizeof(T)));
    pos_ += sizeof(T);
    return {};
  }
  Status read_bytes(std::string* out, uint64_t bytes) {
    out->resize(bytes);
    IF_RETURN_IF_ERROR(file_.read_at(pos_, out->data(), bytes));
    pos_ += bytes;
    return {};
  }
  uint64_t pos() const { return pos_; }

 private:
  const FileReader& file_;
  uint64_t pos_ = 0;
};

// ---------------------------------------------------------------------------
// Writing.

struct TensorSpec {
  std::string name;
  TensorType type = TensorType::kF32;
  std::vector<uint64_t> dims;  // ne[0] innermost

  uint64_t elements() const {
    uint64_t n = 1;
    for (uint64_t d : dims) n *= d;
    return n;
  }
  uint64_t row_elements() const { return dims.empty() ? 0 : dims[0]; }
  uint64_t rows() const { return row_elements() == 0 ? 0 : elements() / row_elements(); }
  uint64_t bytes() const { return tensor_bytes(type, elements()); }
};

uint64_t align_up(uint64_t x, uint64_t alignment) {
  return (x + alignment - 1) / alignment * alignment;
}

size_t scalar_bytes(GgufValueType t) {
  switch (t) {
    case GgufValueType::kUint8: case GgufValueType::kInt8: case GgufValueType::kBool:
      return 1;
    case GgufValueType::kUint16: case GgufValueType::kInt16:
      return 2;
    case GgufValueType::kUint32: case GgufValueType::kInt32: case GgufValueType::kFloat32:
      return 4;
    case GgufValueType::kUint64: case GgufValueType::kInt64: case GgufValueType::kFloat64:
      return 8;
    case GgufValueType::kString: case GgufValueType::kArray:
      return 0;
  }
  return 0;
}

// The serialised size of one metadata entry, from its parsed form:
// string key | u32 type | value.
Result<uint64_t> kv_serialized_bytes(const GgufKv& kv) {
  uint64_t n = 8 + kv.key.size() + 4;
  switch (kv.type) {
    case GgufValueType::kString:
      return n + 8 + kv.string.size();
    case GgufValueType::kArray: {
      n += 4 + 8;
      if (kv.array.element_type == GgufValueType::kString) {
        for (std::string_view s : kv.array.strings) n += 8 + s.size();
        return n;
      }
      if (kv.array.element_type == GgufValueType::kArray) {
        return Unexpected(ErrorCode::kUnsupported, "nested array in metadata " + in_quotes(kv.key));
      }
      return n + kv.array.raw.size();
    }
    default:
      return n + scalar_bytes(kv.type);
  }
}

void put_u32(std::vector<uint8_t>& out, uint32_t v) {
  const auto* p = reinterpret_cast<const uint8_t*>(&v);
  out.insert(out.end(), p, p + sizeof v);
}
void put_u64(std::vector<uint8_t>& out, uint64_t v) {
  const auto* p = reinterpret_cast<const uint8_t*>(&v);
  out.insert(out.end(), p, p + sizeof v);
}

// Writes a GGUF file whose tensor data is produced piece by piece, so that no
// more than a few rows of it are ever in memory. GgufWriter does the metadata
// (one serialisation of the key-value section for the whole project); this
// class writes the tensor directory it cannot know in advance and then the
// data, in GgufWriter's layout: each tensor at an aligned offset, padded with
// zeros. The file is written under a temporary name and renamed into place by
// finish(); destroying an unfinished writer removes it.
class StreamingGgufWriter {
 public:
  // REQUIRES: `metadata` holds no tensors; each spec's bytes() > 0.
  static Result<std::unique_ptr<StreamingGgufWriter>> create(const std::string& path,
                                                            const GgufWriter& metadata,
                                                            std::vector<TensorSpec> tensors) {
    IF_RETURN_IF_ERROR(metadata.status());
    // The metadata section, as GgufWriter lays it out: parse its output back
    // and measure the entries, so that the bytes are exactly the writer's.
    const std::vector<uint8_t> head = metadata.serialize();
    auto parsed = GgufFile::from_memory(head);
    if (!parsed) return with_context("metadata", parsed.error());
    if (!(*parsed)->tensors().empty()) {
      return Unexpected(ErrorCode::kInternal, "metadata writer holds tensors");
    }
    uint64_t kv_end = 24;  // magic, version, tensor count, metadata count
    for (const GgufKv& kv : (*parsed)->metadata()) {
      auto n = kv_serialized_bytes(kv);
      if (!n) return Unexpected(n.error());
      kv_end += *n;
    }
    if (kv_end > head.size()) {
      return Unexpected(ErrorCode::kInternal, "metadata measures past the serialised bytes");
    }
    const uint64_t alignment = (*parsed)->alignment();

    std::vector<uint8_t> out(head.begin(), head.begin() + 8);  // magic, version
    put_u64(out, tensors.size());
    out.insert(out.end(), head.begin() + 16, head.begin() + static_cast<ptrdiff_t>(kv_end));
    uint64_t offset = 0;
    std::vector<uint64_t> tensor_bytes;
    for (const TensorSpec& t : tensors) {
      const uint64_t bytes = t.bytes();
      if (bytes == 0) {
        return Unexpected(ErrorCode::kInternal, "tensor " + in_quotes(t.name) + " has no bytes");
      }
      put_u64(out, t.name.size());
      out.insert(out.end(), t.name.begin(), t.name.end());
      put_u32(out, static_cast<uint32_t>(t.dims.size()));
      for (uint64_t d : t.dims) put_u64(out, d);
      put_u32(out, static_cast<uint32_t>(t.type));
      put_u64(out, offset);
      offset = align_up(offset + bytes, alignment);
      tensor_bytes.push_back(bytes);
    }
    out.resize(align_up(out.size(), alignment), 0);

    std::unique_ptr<StreamingGgufWriter> w(new StreamingGgufWriter(path, alignment));
    w->tensor_bytes_ = std::move(tensor_bytes);
    w->file_ = std::fopen(w->temp_path_.c_str(), "wb");
    if (w->file_ == nullptr) {
      return Unexpected(ErrorCode::kIo, "cannot create " + in_quotes(w->temp_path_) + ": " +
                                            errno_text());
    }
    std::setvbuf(w->file_, nullptr, _IOFBF, 1u << 20);
    IF_RETURN_IF_ERROR(w->write_raw(out.data(), out.size()));
    return w;
  }

  ~StreamingGgufWriter() {
    if (file_ != nullptr) std::fclose(file_);
    if (!finished_) std::remove(temp_path_.c_str());
  }
  StreamingGgufWriter(const StreamingGgufWriter&) = delete;
  StreamingGgufWriter& operator=(const StreamingGgufWriter&) = delete;

  // Appends the next bytes of the current tensor (tensors in directory
  // order); the padding after each tensor is written when it is complete.
  Status append(const void* data, uint64_t bytes) {
    if (current_ >= tensor_bytes_.size() || bytes > tensor_bytes_[current_] - written_) {
      return Unexpected(ErrorCode::kInternal, "tensor data overruns the directory");
    }
    IF_RETURN_IF_ERROR(write_raw(data, bytes));
    written_ += bytes;
    if (written_ == tensor_bytes_[current_]) {
      static constexpr uint8_t kZeros[kGgufAlignmentMax] = {};
      const uint64_t pad = align_up(written_, alignment_) - written_;
      IF_RETURN_IF_ERROR(write_raw(kZeros, pad));
      ++current_;
      written_ = 0;
    }
    return {};
  }

  // Checks that every tensor was written, then puts the file in place.
  Status finish() {
    if (current_ != tensor_bytes_.size()) {
      return Unexpected(ErrorCode::kInternal, "finished with tensors unwritten");
    }
    const bool flushed = std::fflush(file_) == 0 && ::fsync(::fileno(file_)) == 0;
    const bool closed = std::fclose(file_) == 0;
    file_ = nullptr;
    if (!flushed || !closed) {
      return Unexpected(ErrorCode::kIo, "cannot write " + in_quotes(temp_path_) + ": " +
                                            errno_text());
    }
    if (std::rename(temp_path_.c_str(), path_.c_str()) != 0) {
      return Unexpected(ErrorCode::kIo, "cannot rename " + in_quotes(temp_path_) + " to " +
                                            in_quotes(path_) + ": " + errno_text());
    }
    finished_ = true;
    return {};
  }

 private:
  StreamingGgufWriter(std::string path, uint64_t alignment)
      : path_(std::move(path)), temp_path_(path_ + ".partial." + std::to_string(::getpid())), alignment_(alignment) {}

  Status write_raw(const void* data, uint64_t bytes) {
    if (bytes > 0 && std::fwrite(data, 1, bytes, file_) != bytes) {
      return Unexpected(ErrorCode::kIo, "cannot write " + in_quotes(temp_path_) + ": " +
                                            errno_text());
    }
    return {};
  }

  std::string path_;
  std::string temp_path_;
  uint64_t alignment_;
  std::FILE* file_ = nullptr;
  bool finished_ = false;
  std::vector<uint64_t> tensor_bytes_;
  size_t current_ = 0;     // the tensor being written
  uint64_t written_ = 0;   // its bytes written so far
};

// Calls the caller's ProgressFn at most kProgressReportsMax times, and always
// at the end.
class ProgressTracker {
 public:
  ProgressTracker(const ProgressFn& fn, uint64_t total)
      : fn_(fn), total_(total), step_(std::max<uint64_t>(total / kProgressReportsMax, 1)) {}
  void add(uint64_t elements) {
    done_ += elements;
    if (fn_ && (done_ - reported_ >= step_ || done_ == total_)) {
      reported_ = done_;
      fn_(done_, total_);
    }
  }

 private:
  const ProgressFn& fn_;
  uint64_t total_;
  uint64_t step_;
  uint64_t done_ = 0;
  uint64_t reported_ = 0;
};

// ---------------------------------------------------------------------------
// Rows in the weight formats.

bool is_weight_type(TensorType t) {
  return t == TensorType::kF32 || t == TensorType::kF16 || t == TensorType::kQ8_0 ||
         t == TensorType::kQ4_0;
}

// REQUIRES: is_weight_type(type); n a whole number of blocks of it.
void encode_row(TensorType type, const float* x, uint8_t* out, int64_t n) {
  switch (type) {
    case TensorType::kF32:
      std::memcpy(out, x, static_cast<size_t>(n) * sizeof(float));
      return;
    case TensorType::kF16:
      quantize_row_f16(x, reinterpret_cast<uint16_t*>(out), n);
      return;
    case TensorType::kQ8_0:
      quantize_row_q8_0(x, reinterpret_cast<BlockQ8_0*>(out), n);
      return;
    case TensorType::kQ4_0:
      quantize_row_q4_0(x, reinterpret_cast<BlockQ4_0*>(out), n);
      return;
    default:
      CHECK(false && "encode_row: not a weight type");
  }
}

// REQUIRES: as encode_row.
void decode_row(TensorType type, const uint8_t* in, float* y, int64_t n) {
  switch (type) {
    case TensorType::kF32:
      std::memcpy(y, in, static_cast<size_t>(n) * sizeof(float));
      return;
    case TensorType::kF16:
      dequantize_row_f16(reinterpret_cast<const uint16_t*>(in), y, n);
      return;
    case TensorType::kQ8_0:
      dequantize_row_q8_0(reinterpret_cast<const BlockQ8_0*>(in), y, n);
      return;
    case TensorType::kQ4_0:
      dequantize_row_q4_0(reinterpret_cast<const BlockQ4_0*>(in), y, n);
      return;
    default:
      CHECK(false && "decode_row: not a weight type");
  }
}

struct WeightTypeName {
  const char* name;
  TensorType type;
  unsigned file_type;  // llama_ftype for general.file_type
};
constexpr std::array<WeightTypeName, 4> kWeightTypes = {{
    {"f32", TensorType::kF32, keys::kFileTypeF32},
    {"f16", TensorType::kF16, keys::kFileTypeF16},
    {"q8_0", TensorType::kQ8_0, keys::kFileTypeQ8_0},
    {"q4_0", TensorType::kQ4_0, keys::kFileTypeQ4_0},
}};

const WeightTypeName& weight_type(TensorType t) {
  for (const auto& w : kWeightTypes) {
    if (w.type == t) return w;
  }
  CHECK(false && "weight_type: not a weight type");
  return kWeightTypes[0];
}

// ---------------------------------------------------------------------------
// The llama architecture: metadata and tensor list, shared by convert and synth.

struct LlamaShape {
  int64_t dim = 0;
  int64_t hidden_dim = 0;
  int64_t layers = 0;
  int64_t heads = 0;
  int64_t kv_heads = 0;
  int64_t vocab = 0;
  int64_t context = 0;
  bool tied = true;  // the output classifier is token_embd

  int64_t head_dim() const { return dim / heads; }
  int64_t kv_dim() const { return head_dim() * kv_heads; }
};

struct Vocab {
  std::vector<std::string> pieces;
  std::vector<float> scores;
  std::vector<int32_t> types;
};

void add_llama_metadata(GgufWriter& w, const LlamaShape& s, const std::string& name,
                        TensorType type) {
  w.add_string(keys::kArchitecture, "llama");
  w.add_string(keys::kName, name);
  w.add_uint32(keys::kFileType, weight_type(type).file_type);
  w.add_uint32(keys::kContextLength, static_cast<uint32_t>(s.context));
  w.add_uint32(keys::kEmbeddingLength, static_cast<uint32_t>(s.dim));
  w.add_uint32(keys::kBlockCount, static_cast<uint32_t>(s.layers));
  w.add_uint32(keys::kFeedForwardLength, static_cast<uint32_t>(s.hidden_dim));
  w.add_uint32(keys::kHeadCount, static_cast<uint32_t>(s.heads));
  w.add_uint32(keys::kHeadCountKv, static_cast<uint32_t>(s.kv_heads));
  // llama2.c's and TinyLlama's value.
  w.add_float32(keys::kRmsEpsilon, 1e-5f);
  w.add_uint32(keys::kRopeDimensionCount, static_cast<uint32_t>(s.head_dim()));
  w.add_float32(keys::kRopeFreqBase, 10000.0f);
  w.add_uint32(keys::kVocabSize, static_cast<uint32_t>(s.vocab));
}

void add_tokenizer(GgufWriter& w, Vocab vocab) {
  w.add_string(keys::kTokenizerModel, "llama");
  w.add_string_array(keys::kTokens, std::move(vocab.pieces));
  w.add_float32_array(keys::kScores, std::move(vocab.scores));
  w.add_int32_array(keys::kTokenType, std::move(vocab.types));
  w.add_uint32(keys::kBosId, 1);
  w.add_uint32(keys::kEosId, 2);
  w.add_uint32(keys::kUnknownId, 0);
  w.add_bool(keys::kAddBos, true);
  w.add_bool(keys::kAddSpacePrefix, true);
}

enum class Role {
  kTokenEmbedding, kAttnNorm, kAttnQ, kAttnK, kAttnV, kAttnOutput, kFfnNorm,
  kFfnGate, kFfnDown, kFfnUp, kOutputNorm, kOutput,
};

bool is_norm(Role r) {
  return r == Role::kAttnNorm || r == Role::kFfnNorm || r == Role::kOutputNorm;
}

struct PlannedTensor {
  Role role;
  int64_t layer;  // -1 for the tensors outside the blocks
  TensorSpec spec;
};

std::string layer_name(const char* format, int64_t layer) {
  char buf[96];
  std::snprintf(buf, sizeof buf, format, static_cast<int>(layer));
  return buf;
}

// Every tensor of a llama model in file order; norms F32, the rest `type`.
std::vector<PlannedTensor> llama_tensors(const LlamaShape& s, TensorType type) {
  const auto d = [](int64_t v) { return static_cast<uint64_t>(v); };
  std::vector<PlannedTensor> out;
  auto add = [&](Role role, int64_t layer, std::string name, std::vector<uint64_t> dims) {
    out.push_back({role, layer, {std::move(name), is_norm(role) ? TensorType::kF32 : type,
                                 std::move(dims)}});
  };
  add(Role::kTokenEmbedding, -1, keys::kTokenEmbedding, {d(s.dim), d(s.vocab)});
  for (int64_t l = 0; l < s.layers; ++l) {
    add(Role::kAttnNorm, l, layer_name(keys::kAttnNorm, l), {d(s.dim)});
    add(Role::kAttnQ, l, layer_name(keys::kAttnQ, l), {d(s.dim), d(s.dim)});
    add(Role::kAttnK, l, layer_name(keys::kAttnK, l), {d(s.dim), d(s.kv_dim())});
    add(Role::kAttnV, l, layer_name(keys::kAttnV, l), {d(s.dim), d(s.kv_dim())});
    add(Role::kAttnOutput, l, layer_name(keys::kAttnOutput, l), {d(s.dim), d(s.dim)});
    add(Role::kFfnNorm, l, layer_name(keys::kFfnNorm, l), {d(s.dim)});
    add(Role::kFfnGate, l, layer_name(keys::kFfnGate, l), {d(s.dim), d(s.hidden_dim)});
    add(Role::kFfnDown, l, layer_name(keys::kFfnDown, l), {d(s.hidden_dim), d(s.dim)});
    add(Role::kFfnUp, l, layer_name(keys::kFfnUp, l), {d(s.dim), d(s.hidden_dim)});
  }
  add(Role::kOutputNorm, -1, keys::kOutputNorm, {d(s.dim)});
  if (!s.tied) add(Role::kOutput, -1, keys::kOutput, {d(s.dim), d(s.vocab)});
  return out;
}

std::vector<TensorSpec> specs_of(const std::vector<PlannedTensor>& plan) {
  std::vector<TensorSpec> specs;
  for (const auto& p : plan) specs.push_back(p.spec);
  return specs;
}

uint64_t total_elements(const std::vector<TensorSpec>& specs) {
  uint64_t n = 0;
  for (const auto& s : specs) n += s.elements();
  return n;
}

// RFC 3629 UTF-8: no overlong forms, no surrogates, nothing above U+10FFFF.
bool is_valid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<uint8_t>(s[i]);
    size_t len;
    uint32_t cp;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xe0) == 0xc0) {
      len = 2, cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      len = 3, cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      len = 4, cp = c & 0x07;
    } else {
      return false;
    }
    if (s.size() - i < len) return false;
    for (size_t k = 1; k < len; ++k) {
      const auto cc = static_cast<uint8_t>(s[i + k]);
      if ((cc & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3f);
    }
    static constexpr uint32_t kMinForLength[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMinForLength[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    i += len;
  }
  return true;
}

// "<0xAB>": SentencePiece's byte-fallback pieces.
bool is_byte_piece(std::string_view s) {
  const auto hex = [](char c) { return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F'); };
  return s.size() == 6 && s.substr(0, 3) == "<0x" && hex(s[3]) && hex(s[4]) && s[5] == '>';
}

constexpr std::string_view kSpaceMark = "\xe2\x96\x81";  // U+2581, SentencePiece's space

// ---------------------------------------------------------------------------
// llama2.c checkpoint.
//
// The file, byte by byte (little-endian, as run.c reads it):
//   int32 dim | int32 hidden_dim | int32 n_layers | int32 n_heads |
//   int32 n_kv_heads | int32 vocab_size (< 0: the classifier is not shared) |
//   int32 seq_len |
//   f32 token_embedding[vocab][dim] | f32 rms_att[layers][dim] |
//   f32 wq[layers][dim][dim] | f32 wk[layers][kv_dim][dim] |
//   f32 wv[layers][kv_dim][dim] | f32 wo[layers][dim][dim] |
//   f32 rms_ffn[layers][dim] | f32 w1[layers][hidden][dim] |
//   f32 w2[layers][dim][hidden] | f32 w3[layers][hidden][dim] |
//   f32 rms_final[dim] | f32 freq_cis_real[seq_len][head_dim/2] |
//   f32 freq_cis_imag[seq_len][head_dim/2] | f32 wcls[vocab][dim] (unshared only)
// with kv_dim = dim / n_heads * n_kv_heads. Matrices are [out][in], row-major:
// the bytes of a GGUF tensor with ne = [in, out].

constexpr uint64_t kLlama2cHeaderBytes = 7 * sizeof(int32_t);

// Float offsets of each section of the checkpoint after the header.
struct Llama2cLayout {
  uint64_t token_embedding, rms_att, wq, wk, wv, wo, rms_ffn, w1, w2, w3, rms_final,
      rope_tables, wcls, end_shared, end_unshared;

  explicit Llama2cLayout(const LlamaShape& s) {
    const auto u = [](int64_t v) { return static_cast<uint64_t>(v); };
    const uint64_t dim = u(s.dim), hidden = u(s.hidden_dim), layers = u(s.layers);
    const uint64_t kv_dim = u(s.kv_dim()), vocab = u(s.vocab);
    uint64_t at = 0;
    const auto take = [&at](uint64_t floats) { const uint64_t here = at; at += floats; return here; };
    token_embedding = take(vocab * dim);
    rms_att = take(layers * dim);
    wq = take(layers * dim * dim);
    wk = take(layers * kv_dim * dim);
    wv = take(layers * kv_dim * dim);
    wo = take(layers * dim * dim);
    rms_ffn = take(layers * dim);
    w1 = take(layers * hidden * dim);
    w2 = take(layers * dim * hidden);
    w3 = take(layers * hidden * dim);
    rms_final = take(dim);
    rope_tables = take(u(s.context) * u(s.head_dim()));  // two tables of head_dim/2
    end_shared = at;
    wcls = take(vocab * dim);
    end_unshared = at;
  }

  // The float offset of a tensor of the plan.
  uint64_t offset_of(const PlannedTensor& t) const {
    const uint64_t per_layer = t.spec.elements();
    const uint64_t layer = t.layer < 0 ? 0 : static_cast<uint64_t>(t.layer);
    switch (t.role) {
      case Role::kTokenEmbedding: return token_embedding;
      case Role::kAttnNorm: return rms_att + layer * per_layer;
      case Role::kAttnQ: return wq + layer * per_layer;
      case Role::kAttnK: return wk + layer * per_layer;
      case Role::kAttnV: return wv + layer * per_layer;
      case Role::kAttnOutput: return wo + layer * per_layer;
      case Role::kFfnNorm: return rms_ffn + layer * per_layer;
      case Role::kFfnGate: return w1 + layer * per_layer;
      case Role::kFfnDown: return w2 + layer * per_layer;
      case Role::kFfnUp: return w3 + layer * per_layer;
      case Role::kOutputNorm: return rms_final;
      case Role::kOutput: return wcls;
    }
    return 0;
  }
};

std::string describe_header(const int32_t h[7]) {
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "dim %d, hidden_dim %d, n_layers %d, n_heads %d, n_kv_heads %d, vocab_size %d, "
                "seq_len %d",
                h[0], h[1], h[2], h[3], h[4], h[5], h[6]);
  return buf;
}

// Reads and validates the header, including that the file is exactly as long
// as the header implies.
Result<LlamaShape> read_llama2c_header(const FileReader& file, const std::string& path) {
  const std::string where = "checkpoint " + in_quotes(path);
  if (file.size() < kLlama2cHeaderBytes) {
    return Unexpected(ErrorCode::kCorrupt, where + " is truncated: " +
                                               std::to_string(file.size()) +
                                               " bytes, shorter than its 28-byte header");
  }
  int32_t h[7];
  IF_RETURN_IF_ERROR(file.read_at(0, h, sizeof h));
  const std::string header = " (header: " + describe_header(h) + ")";

  struct Field {
    const char* name;
    int64_t value;
    int64_t max;
  };
  const Field fields[] = {
      {"dim", h[0], kLlama2cDimMax},
      {"hidden_dim", h[1], kLlama2cHiddenDimMax},
      {"n_layers", h[2], kLlama2cLayersMax},
      {"n_heads", h[3], kLlama2cDimMax},
      {"n_kv_heads", h[4], kLlama2cDimMax},
      // The sign of vocab_size is a flag; its magnitude is the vocabulary.
      {"vocab_size", std::abs(static_cast<int64_t>(h[5])), kLlama2cVocabMax},
      {"seq_len", h[6], kLlama2cSeqLenMax},
  };
  for (const Field& f : fields) {
    if (f.value <= 0) {
      return Unexpected(ErrorCode::kCorrupt, where + ": " + f.name + " must be positive, is " +
                                                 std::to_string(f.value) + header);
    }
    if (f.value > f.max) {
      return Unexpected(ErrorCode::kCorrupt, where + ": " + f.name + " " +
                                                 std::to_string(f.value) + " exceeds the limit " +
                                                 std::to_string(f.max) + header);
    }
  }
  LlamaShape s;
  s.dim = h[0];
  s.hidden_dim = h[1];
  s.layers = h[2];
  s.heads = h[3];
  s.kv_heads = h[4];
  s.vocab = std::abs(static_cast<int64_t>(h[5]));
  s.tied = h[5] > 0;
  s.context = h[6];
  if (s.dim % s.heads != 0) {
    return Unexpected(ErrorCode::kCorrupt,
                      where + ": dim " + std::to_string(s.dim) + " is not divisible by n_heads " +
                          std::to_string(s.heads) + header);
  }
  if (s.heads % s.kv_heads != 0) {
    return Unexpected(ErrorCode::kCorrupt,
                      where + ": n_heads " + std::to_string(s.heads) +
                          " is not divisible by n_kv_heads " + std::to_string(s.kv_heads) + header);
  }
  if (s.head_dim() % 2 != 0) {
    // RoPE rotates pairs of a head's dimensions.
    return Unexpected(ErrorCode::kUnsupported,
                      where + ": head dimension " + std::to_string(s.head_dim()) +
                          " is odd; RoPE needs pairs" + header);
  }
  if (s.vocab < 3) {
    return Unexpected(ErrorCode::kCorrupt,
                      where + ": vocab_size " + std::to_string(s.vocab) +
                          " leaves no room for <unk>, <s> and </s>" + header);
  }

  const Llama2cLayout layout(s);
  const uint64_t shared_bytes = kLlama2cHeaderBytes + layout.end_shared * sizeof(float);
  const uint64_t unshared_bytes = kLlama2cHeaderBytes + layout.end_unshared * sizeof(float);
  const uint64_t expected = s.tied ? shared_bytes : unshared_bytes;
  if (file.size() != expected) {
    std::string hint;
    if (s.tied && file.size() == unshared_bytes) {
      hint = "; that size fits an unshared classifier, but a positive vocab_size says shared";
    } else if (!s.tied && file.size() == shared_bytes) {
      hint = "; that size fits a shared classifier, but a negative vocab_size says unshared";
    }
    return Unexpected(ErrorCode::kCorrupt,
                      where + " is " + std::to_string(file.size()) + " bytes but its header implies " +
                          std::to_string(expected) + (s.tied ? " (shared" : " (unshared") +
                          " classifier)" + hint + header);
  }
  return s;
}

// The llama2.c tokenizer file, byte by byte (little-endian):
//   int32 max_token_length |
//   vocab_size x { f32 score | int32 length | length bytes of the piece }
// The vocabulary size comes from the checkpoint; the file must end after the
// last piece, which catches a tokenizer that belongs to another model.
Result<Vocab> read_llama2c_tokenizer(const FileReader& file, const std::string& path,
                                     int64_t vocab_size) {
  const std::string where = "tokenizer " + in_quotes(path);
  Cursor cur(file);
  int32_t max_token_length = 0;
  if (auto st = cur.read(&max_token_length); !st) return with_context(where, st.error());
  if (max_token_length <= 0 || max_token_length > kLlama2cPieceBytesMax) {
    return Unexpected(ErrorCode::kCorrupt,
                      where + ": max_token_length " + std::to_string(max_token_length) +
                          " is not in 1.." + std::to_string(kLlama2cPieceBytesMax));
  }
  Vocab v;
  v.pieces.reserve(static_cast<size_t>(vocab_size));
  v.scores.reserve(static_cast<size_t>(vocab_size));
  v.types.reserve(static_cast<size_t>(vocab_size));
  std::string piece;
  for (int64_t id = 0; id < vocab_size; ++id) {
    const std::string at = where + ": piece " + std::to_string(id);
    float score = 0;
    int32_t len = 0;
    if (auto st = cur.read(&score); !st) return with_context(at, st.error());
    if (auto st = cur.read(&len); !st) return with_context(at, st.error());
    if (!std::isfinite(score)) {
      return Unexpected(ErrorCode::kCorrupt, at + ": score is not finite");
    }
    if (len <= 0 || len > max_token_length) {
      return Unexpected(ErrorCode::kCorrupt, at + ": length " + std::to_string(len) +
                                                 " is not in 1..max_token_length (" +
                                                 std::to_string(max_token_length) + ")");
    }
    if (auto st = cur.read_bytes(&piece, static_cast<uint64_t>(len)); !st) {
      return with_context(at, st.error());
    }
    if (!is_valid_utf8(piece)) {
      return Unexpected(ErrorCode::kCorrupt, at + " is not valid UTF-8");
    }
    int32_t type = keys::kTokenTypeNormal;
    // llama2.c stores BOS and EOS as "\n<s>\n" and "\n</s>\n"; llama.cpp's
    // convert-llama2c renames the three specials, and so do we, so that the
    // file matches one made by llama.cpp.
    if (id == 0) {
      piece = "<unk>";
      type = keys::kTokenTypeUnknown;
    } else if (id == 1 || id == 2) {
      piece = id == 1 ? "<s>" : "</s>";
      type = keys::kTokenTypeControl;
    } else if (is_byte_piece(piece)) {
      type = keys::kTokenTypeByte;
    }
    std::string text;
    for (char c : piece) {
      if (c == ' ') {
        text += kSpaceMark;
      } else {
        text += c;
      }
    }
    v.pieces.push_back(std::move(text));
    v.scores.push_back(score);
    v.types.push_back(type);
  }
  if (cur.pos() != file.size()) {
    return Unexpected(ErrorCode::kCorrupt,
                      where + " has " + std::to_string(file.size() - cur.pos()) +
                          " bytes after its " + std::to_string(vocab_size) +
                          " pieces: it does not belong to a vocabulary of that size");
  }
  return v;
}

// ---------------------------------------------------------------------------
// Synthetic models.

struct SynthShape {
  const char* name;
  LlamaShape shape;
};
constexpr std::array<SynthShape, 2> kSynthShapes = {{
    // TinyStories-110M (llama2.c's stories110M).
    {"tiny110m", {.dim = 768, .hidden_dim = 2048, .layers = 12, .heads = 12, .kv_heads = 12,
                  .vocab = 32000, .context = 1024, .tied = true}},
    // TinyLlama-1.1B.
    {"tinyllama1b", {.dim = 2048, .hidden_dim = 5632, .layers = 22, .heads = 32, .kv_heads = 4,
                     .vocab = 32000, .context = 2048, .tied = false}},
}};

constexpr float kSynthWeightStd = 0.02f;
constexpr float kSynthNormStd = 0.01f;

// Approximately standard normal: the sum of four uniforms (Irwin-Hall), each
// 16 bits of one 64-bit draw, centred and scaled to unit variance. One draw
// per value keeps a billion-parameter model quick to make.
float approx_normal(Rng& rng) {
  const uint64_t r = rng.next();
  const uint64_t sum = (r & 0xffff) + ((r >> 16) & 0xffff) + ((r >> 32) & 0xffff) + (r >> 48);
  // Each uniform is (k + 0.5) / 65536, mean 1/2, variance 1/12.
  const float u = (static_cast<float>(sum) + 2.0f) * (1.0f / 65536.0f);
  return (u - 2.0f) * 1.7320508f;  // sqrt(12 / 4)
}

// A SentencePiece-style vocabulary of exactly `count` unique, valid UTF-8
// pieces that tokenizes any text with llama.cpp's SPM tokenizer: the three
// specials, the 256 byte-fallback pieces (every byte is reachable), U+2581
// and the printable ASCII characters, then letter n-grams in an order that
// puts likely English first. Each multi-character piece's prefix one
// character shorter comes earlier, with a higher score, so SPM's pairwise
// merges can reach it.
Vocab synth_vocab(size_t count) {
  Vocab v;
  const auto add = [&v](std::string piece, int32_t type) {
    // Specials and bytes score 0; normal pieces descend from 0 with rank.
    v.scores.push_back(type == keys::kTokenTypeNormal ? -static_cast<float>(v.pieces.size()) : 0.0f);
    v.pieces.push_back(std::move(piece));
    v.types.push_back(type);
  };
  add("<unk>", keys::kTokenTypeUnknown);
  add("<s>", keys::kTokenTypeControl);
  add("</s>", keys::kTokenTypeControl);
  for (int b = 0; b < 256; ++b) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "<0x%02X>", b);
    add(buf, keys::kTokenTypeByte);
  }
  const std::string space(kSpaceMark);
  add(space, keys::kTokenTypeNormal);
  for (char c = '!'; c <= '~'; ++c) add(std::string(1, c), keys::kTokenTypeNormal);

  // Letters by their frequency in English text.
  constexpr std::string_view kLetters = "etaoinshrdlcumwfgypbvkjxqz";
  for (char c : kLetters) add(space + c, keys::kTokenTypeNormal);
  for (char c : kLetters) add(space + static_cast<char>(c - 'a' + 'A'), keys::kTokenTypeNormal);
  for (char c = '0'; c <= '9'; ++c) add(space + c, keys::kTokenTypeNormal);

  // All n-grams of the letters, most frequent letters first: ordered by the
  // sum of the letters' frequency ranks, ties by the ranks in order.
  const auto ngrams = [&](size_t n) {
    std::vector<std::vector<uint8_t>> all;
    std::vector<uint8_t> ranks(n, 0);
    for (;;) {
      all.push_back(ranks);
      size_t k = n;
      while (k > 0 && ranks[k - 1] == kLetters.size() - 1) ranks[--k] = 0;
      if (k == 0) break;
      ++ranks[k - 1];
    }
    std::sort(all.begin(), all.end(), [](const auto& a, const auto& b) {
      int sa = 0, sb = 0;
      for (uint8_t r : a) sa += r;
      for (uint8_t r : b) sb += r;
      return sa != sb ? sa < sb : a < b;
    });
    std::vector<std::string> out;
    for (const auto& ranks_of : all) {
      std::string s;
      for (uint8_t r : ranks_of) s += kLetters[r];
      out.push_back(std::move(s));
    }
    return out;
  };
  const std::vector<std::string> bigrams = ngrams(2);
  const std::vector<std::string> trigrams = ngrams(3);
  for (const auto& g : bigrams) add(g, keys::kTokenTypeNormal);
  for (const auto& g : bigrams) add(space + g, keys::kTokenTypeNormal);
  for (const auto& g : trigrams) {
    if (v.pieces.size() == count) break;
    add(g, keys::kTokenTypeNormal);
  }
  for (const auto& g : trigrams) {
    if (v.pieces.size() == count) break;
    add(space + g, keys::kTokenTypeNormal);
  }
  CHECK(v.pieces.size() == count);
  return v;
}

}  // namespace

// ---------------------------------------------------------------------------

Status convert_llama2c(const std::string& checkpoint, const std::string& tokenizer,
                       const std::string& out_path, const ProgressFn& progress) {
  auto ckpt = FileReader::open(checkpoint);
  if (!ckpt) return Unexpected(ckpt.error());
  auto shape = read_llama2c_header(**ckpt, checkpoint);
  if (!shape) return Unexpected(shape.error());
  auto tok = FileReader::open(tokenizer);
  if (!tok) return Unexpected(tok.error());
  auto vocab = read_llama2c_tokenizer(**tok, tokenizer, shape->vocab);
  if (!vocab) return Unexpected(vocab.error());

  GgufWriter meta;
  add_llama_metadata(meta, *shape, std::filesystem::path(checkpoint).stem().string(),
                     TensorType::kF32);
  add_tokenizer(meta, std::move(*vocab));
  const std::vector<PlannedTensor> plan = llama_tensors(*shape, TensorType::kF32);
  const std::vector<TensorSpec> specs = specs_of(plan);
  auto writer = StreamingGgufWriter::create(out_path, meta, specs);
  if (!writer) return Unexpected(writer.error());

  const Llama2cLayout layout(*shape);
  ProgressTracker tracker(progress, total_elements(specs));
  std::vector<uint8_t> buf(kCopyChunkBytes);
  for (const PlannedTensor& t : plan) {
    uint64_t offset = kLlama2cHeaderBytes + layout.offset_of(t) * sizeof(float);
    uint64_t left = t.spec.bytes();
    while (left > 0) {
      const uint64_t n = std::min<uint64_t>(left, buf.size());
      if (auto st = (*ckpt)->read_at(offset, buf.data(), n); !st) {
        return with_context("checkpoint " + in_quotes(checkpoint), st.error());
      }
      IF_RETURN_IF_ERROR((*writer)->append(buf.data(), n));
      tracker.add(n / sizeof(float));
      offset += n;
      left -= n;
    }
  }
  return (*writer)->finish();
}

Status quantize_model(const std::string& in, const std::string& out, TensorType type,
                      const ProgressFn& progress, const NoteFn& note) {
  if (type != TensorType::kF16 && type != TensorType::kQ8_0 && type != TensorType::kQ4_0) {
    return Unexpected(ErrorCode::kInvalidArgument,
                      "quantize writes f16, q8_0 or q4_0, not type " +
                          std::to_string(static_cast<uint32_t>(type)));
  }
  std::error_code ec;
  if (in == out || std::filesystem::equivalent(in, out, ec)) {
    return Unexpected(ErrorCode::kInvalidArgument,
                      "input and output are the same file: " + in_quotes(in));
  }
  auto file = GgufFile::open(in);
  if (!file) return with_context(in_quotes(in), file.error());
  const GgufFile& src = **file;

  GgufWriter meta;
  bool file_type_written = false;
  for (const GgufKv& kv : src.metadata()) {
    if (kv.key == keys::kFileType) {
      meta.add_uint32(keys::kFileType, weight_type(type).file_type);
      file_type_written = true;
    } else if (kv.key != keys::kAlignment) {  // the writer states its own
      meta.add_kv(kv);
    }
  }
  if (!file_type_written) meta.add_uint32(keys::kFileType, weight_type(type).file_type);

  const char* target_name = weight_type(type).name;
  std::vector<TensorSpec> specs;
  for (const GgufTensorInfo& t : src.tensors()) {
    TensorSpec spec{t.name, t.type, t.dims};
    if (t.dims.size() == 1) {
      spec.type = TensorType::kF32;  // norms: small, and precision matters
    } else if (t.dims.size() == 2) {
      const uint64_t block = tensor_type_info(type)->block_elements;
      if (t.dims[0] % block == 0) {
        spec.type = type;
      } else if (note) {
        const TensorTypeInfo* info = tensor_type_info(t.type);
        note("tensor " + in_quotes(t.name) + " stays " + (info ? info->name : "?") + ": its rows of " +
             std::to_string(t.dims[0]) + " elements are not a whole number of " +
             std::to_string(block) + "-element " + target_name + " blocks");
      }
    }
    if (spec.type != t.type && !is_weight_type(t.type)) {
      const TensorTypeInfo* info = tensor_type_info(t.type);
      return Unexpected(ErrorCode::kUnsupported,
                        "tensor " + in_quotes(t.name) + " is " + (info ? info->name : "?") +
                            "; quantize reads f32, f16, q8_0 and q4_0");
    }
    specs.push_back(std::move(spec));
  }
  auto writer = StreamingGgufWriter::create(out, meta, specs);
  if (!writer) return Unexpected(writer.error());

  ProgressTracker tracker(progress, total_elements(specs));
  std::vector<float> row;
  std::vector<uint8_t> encoded;
  for (size_t i = 0; i < specs.size(); ++i) {
    const GgufTensorInfo& t = src.tensors()[i];
    const TensorSpec& spec = specs[i];
    const uint8_t* data = src.tensor_data(t);
    if (spec.type == t.type) {  // unchanged: copy the bytes
      for (uint64_t at = 0; at < t.bytes; at += kCopyChunkBytes) {
        IF_RETURN_IF_ERROR((*writer)->append(data + at, std::min(kCopyChunkBytes, t.bytes - at)));
      }
      tracker.add(t.elements);
      continue;
    }
    const uint64_t n = spec.row_elements();
    const uint64_t in_row_bytes = tensor_bytes(t.type, n);
    const uint64_t out_row_bytes = tensor_bytes(spec.type, n);
    if (in_row_bytes * spec.rows() != t.bytes || out_row_bytes == 0) {
      return Unexpected(ErrorCode::kCorrupt,
                        "tensor " + in_quotes(t.name) + ": rows do not match its size");
    }
    row.resize(n);
    encoded.resize(out_row_bytes);
    for (uint64_t r = 0; r < spec.rows(); ++r) {
      decode_row(t.type, data + r * in_row_bytes, row.data(), static_cast<int64_t>(n));
      encode_row(spec.type, row.data(), encoded.data(), static_cast<int64_t>(n));
      IF_RETURN_IF_ERROR((*writer)->append(encoded.data(), out_row_bytes));
      tracker.add(n);
    }
  }
  return (*writer)->finish();
}

Status synth_model(const SynthOptions& o, const std::string& out_path,
                   const ProgressFn& progress) {
  const SynthShape* synth = nullptr;
  for (const auto& s : kSynthShapes) {
    if (o.shape == s.name) synth = &s;
  }
  if (synth == nullptr) {
    return Unexpected(ErrorCode::kInvalidArgument,
                      "unknown shape " + in_quotes(o.shape) + " (tiny110m or tinyllama1b)");
  }
  if (!is_weight_type(o.type)) {
    return Unexpected(ErrorCode::kInvalidArgument, "synth writes f32, f16, q8_0 or q4_0");
  }
  const LlamaShape& shape = synth->shape;
  GgufWriter meta;
  add_llama_metadata(meta, shape,
                     std::string("synth-") + synth->name + "-" + weight_type(o.type).name, o.type);
  add_tokenizer(meta, synth_vocab(static_cast<size_t>(shape.vocab)));
  const std::vector<PlannedTensor> plan = llama_tensors(shape, o.type);
  const std::vector<TensorSpec> specs = specs_of(plan);
  auto writer = StreamingGgufWriter::create(out_path, meta, specs);
  if (!writer) return Unexpected(writer.error());

  ProgressTracker tracker(progress, total_elements(specs));
  std::vector<float> row;
  std::vector<uint8_t> encoded;
  for (size_t i = 0; i < plan.size(); ++i) {
    const TensorSpec& spec = plan[i].spec;
    const bool norm = is_norm(plan[i].role);
    const uint64_t n = spec.row_elements();
    const uint64_t row_bytes = tensor_bytes(spec.type, n);
    row.resize(n);
    encoded.resize(row_bytes);
    // A generator per row, keyed by (seed, tensor, row): any row can be made
    // on its own, in any order, with the same values.
    const uint64_t tensor_seed = counter_random(o.seed, i);
    for (uint64_t r = 0; r < spec.rows(); ++r) {
      Rng rng(counter_random(tensor_seed, r));
      for (uint64_t k = 0; k < n; ++k) {
        row[k] = norm ? 1.0f + kSynthNormStd * approx_normal(rng)
                      : kSynthWeightStd * approx_normal(rng);
      }
      encode_row(spec.type, row.data(), encoded.data(), static_cast<int64_t>(n));
      IF_RETURN_IF_ERROR((*writer)->append(encoded.data(), row_bytes));
      tracker.add(n);
    }
  }
  return (*writer)->finish();
}

Result<TensorType> weight_type_from_name(std::string_view name) {
  for (const auto& w : kWeightTypes) {
    if (name == w.name) return w.type;
  }
  return Unexpected(ErrorCode::kInvalidArgument,
                    "unknown weight type '" + std::string(name) + "' (f32, f16, q8_0, q4_0)");
}

Result<ModelSummary> summarize_model(const std::string& path) {
  auto file = GgufFile::open(path);
  if (!file) return with_context(in_quotes(path), file.error());
  ModelSummary s;
  s.tensor_count = (*file)->tensors().size();
  for (const auto& t : (*file)->tensors()) s.parameter_count += t.elements;
  s.file_bytes = (*file)->file_bytes();
  return s;
}

std::string format_model_summary(const ModelSummary& s) {
  // Decimal units, one decimal: "1.1B", "117.4 MB".
  const auto scaled = [](uint64_t v, const char* const units[4]) {
    double x = static_cast<double>(v);
    int u = 0;
    while (x >= 1000.0 && u < 3) {
      x /= 1000.0;
      ++u;
    }
    char buf[32];
    if (u == 0) {
      std::snprintf(buf, sizeof buf, "%llu%s", static_cast<unsigned long long>(v), units[0]);
    } else {
      std::snprintf(buf, sizeof buf, "%.1f%s", x, units[u]);
    }
    return std::string(buf);
  };
  static const char* const kCount[4] = {"", "K", "M", "B"};
  static const char* const kBytes[4] = {" B", " kB", " MB", " GB"};
  return std::to_string(s.tensor_count) + " tensors, " + scaled(s.parameter_count, kCount) +
         " parameters, " + scaled(s.file_bytes, kBytes);
}

ProgressFn progress_printer(std::string label, bool interactive,
                            std::function<void(std::string_view text)> emit, uint64_t quiet_ms) {
  using Clock = std::chrono::steady_clock;
  struct State {
    int shown = -1;  // the last percentage shown
    std::optional<Clock::time_point> first_call;
  };
  return [label = std::move(label), interactive, emit = std::move(emit), quiet_ms,
          state = State{}](uint64_t done, uint64_t total) mutable {
    const Clock::time_point now = Clock::now();
    if (!state.first_call) state.first_call = now;
    if (state.shown < 0 && now - *state.first_call < std::chrono::milliseconds(quiet_ms)) return;
    const int percent = total == 0 ? 100 : static_cast<int>(done * 100 / total);
    const bool show =
        interactive ? percent != state.shown : (state.shown < 0 || percent / 10 > state.shown / 10);
    if (!show) return;
    state.shown = percent;
    std::string text = (interactive ? "\r" : "") + label + " " + std::to_string(percent) + "%";
    if (!interactive || percent == 100) text += "\n";
    emit(text);
  };
}

}  // namespace idlefleet::engine
