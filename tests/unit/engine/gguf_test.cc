// Tests for the GGUF reader and writer (engine/gguf.h).
//
// Round trips go writer -> bytes -> reader. Corrupt files are built byte by
// byte with RawGguf, so each test states exactly which field is wrong, and
// checks both that parsing fails and that the message names the problem.
// With IDLEFLEET_WRITE_CORPUS=DIR set, one test writes the fuzz seed corpus
// (tests/fuzz/gguf/corpus) from the same builders.
#include "engine/gguf.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>
#include <string>
#include <vector>

namespace idlefleet::engine::gguf_test {
namespace {

constexpr uint32_t kMagic = 0x46554747;

uint32_t vt(GgufValueType t) { return static_cast<uint32_t>(t); }
uint32_t tt(TensorType t) { return static_cast<uint32_t>(t); }

// Builds GGUF bytes field by field, valid or not.
class RawGguf {
 public:
  template <class T>
  RawGguf& put(T v) {
    const size_t n = bytes.size();
    bytes.resize(n + sizeof v);
    std::memcpy(bytes.data() + n, &v, sizeof v);
    return *this;
  }
  RawGguf& u8(uint8_t v) { return put(v); }
  RawGguf& u32(uint32_t v) { return put(v); }
  RawGguf& u64(uint64_t v) { return put(v); }
  RawGguf& str(std::string_view s) {
    u64(s.size());
    bytes.insert(bytes.end(), s.begin(), s.end());
    return *this;
  }
  RawGguf& header(uint64_t tensors, uint64_t kvs, uint32_t version = 3) {
    return u32(kMagic).u32(version).u64(tensors).u64(kvs);
  }
  RawGguf& kv_u32(std::string_view key, uint32_t v) {
    return str(key).u32(vt(GgufValueType::kUint32)).u32(v);
  }
  RawGguf& kv_string(std::string_view key, std::string_view v) {
    return str(key).u32(vt(GgufValueType::kString)).str(v);
  }
  RawGguf& tensor(std::string_view name, std::vector<uint64_t> dims,
                  uint32_t type = tt(TensorType::kF32), uint64_t offset = 0) {
    str(name).u32(static_cast<uint32_t>(dims.size()));
    for (uint64_t d : dims) u64(d);
    return u32(type).u64(offset);
  }
  RawGguf& pad(size_t alignment = 32) {
    bytes.resize((bytes.size() + alignment - 1) / alignment * alignment, 0);
    return *this;
  }
  RawGguf& zeros(size_t n) {
    bytes.resize(bytes.size() + n, 0);
    return *this;
  }
  std::vector<uint8_t> bytes;
};

Result<std::unique_ptr<GgufFile>> parse(const std::vector<uint8_t>& bytes) {
  return GgufFile::from_memory(bytes);
}

// Expects `r` to have failed with `code` and a message containing `needle`.
template <class T>
void expect_error(const Result<T>& r, ErrorCode code, const std::string& needle) {
  ASSERT_FALSE(r.has_value()) << "expected an error containing: " << needle;
  EXPECT_EQ(r.error().code, code) << r.error().to_string();
  EXPECT_NE(r.error().message.find(needle), std::string::npos)
      << "message: " << r.error().message << "\nexpected to contain: " << needle;
}

std::vector<uint8_t> pattern(size_t n, uint8_t seed) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(i * 31 + seed);
  return v;
}

std::vector<uint8_t> as_bytes(const void* p, size_t n) {
  const auto* b = static_cast<const uint8_t*>(p);
  return std::vector<uint8_t>(b, b + n);
}

// A small valid model-like file: metadata of several kinds and two tensors.
GgufWriter small_writer() {
  GgufWriter w;
  w.add_string("general.architecture", "llama");
  w.add_uint32("llama.block_count", 2);
  w.add_float32("llama.rope.freq_base", 10000.0f);
  w.add_bool("tokenizer.ggml.add_bos_token", true);
  w.add_string_array("tokenizer.ggml.tokens", {"<unk>", "<s>", "</s>"});
  w.add_float32_array("tokenizer.ggml.scores", {0.0f, -1.5f, 2.25f});
  w.add_int32_array("tokenizer.ggml.token_type", {2, 3, 3});
  EXPECT_TRUE(w.add_tensor("output_norm.weight", TensorType::kF32, {8}, pattern(32, 1)));
  EXPECT_TRUE(w.add_tensor("token_embd.weight", TensorType::kQ8_0, {32, 2}, pattern(68, 2)));
  return w;
}

// ---------------------------------------------------------------------------
// Round trips

TEST(GgufRoundTrip, EveryValueType) {
  GgufWriter w;
  w.add_string("t.string", "héllo \"world\"");
  w.add_string("t.empty", "");
  w.add_uint32("t.u32", 4000000000u);
  w.add_int32("t.i32", -123456);
  w.add_uint64("t.u64", 0xfedcba9876543210ull);
  w.add_float32("t.f32", 1e-5f);
  w.add_bool("t.true", true);
  w.add_bool("t.false", false);
  w.add_string_array("t.strings", {"a", "", "ccc"});
  w.add_float32_array("t.f32s", {1.0f, -2.5f, 3.25f});
  w.add_int32_array("t.i32s", {-1, 0, 2147483647});
  w.add_int32_array("t.empty_i32s", {});

  // The other scalar widths and arrays only go through add_kv.
  auto scalar = [](std::string key, GgufValueType t, GgufScalar s) {
    GgufKv kv;
    kv.key = std::move(key);
    kv.type = t;
    kv.scalar = s;
    return kv;
  };
  w.add_kv(scalar("t.u8", GgufValueType::kUint8, uint64_t{200}));
  w.add_kv(scalar("t.i8", GgufValueType::kInt8, int64_t{-100}));
  w.add_kv(scalar("t.u16", GgufValueType::kUint16, uint64_t{60000}));
  w.add_kv(scalar("t.i16", GgufValueType::kInt16, int64_t{-30000}));
  w.add_kv(scalar("t.i64", GgufValueType::kInt64, int64_t{-(1ll << 60)}));
  w.add_kv(scalar("t.f64", GgufValueType::kFloat64, 3.141592653589793));
  const uint16_t u16s[] = {1, 65535};
  GgufKv arr;
  arr.key = "t.u16s";
  arr.type = GgufValueType::kArray;
  arr.array.element_type = GgufValueType::kUint16;
  arr.array.count = 2;
  const std::vector<uint8_t> u16_bytes = as_bytes(u16s, sizeof u16s);
  arr.array.raw = u16_bytes;
  w.add_kv(arr);
  const uint8_t bools[] = {1, 0, 1};
  GgufKv barr;
  barr.key = "t.bools";
  barr.type = GgufValueType::kArray;
  barr.array.element_type = GgufValueType::kBool;
  barr.array.count = 3;
  barr.array.raw = std::span<const uint8_t>(bools, 3);
  w.add_kv(barr);
  ASSERT_TRUE(w.status());

  const std::vector<uint8_t> bytes = w.serialize();
  auto f = parse(bytes);
  ASSERT_TRUE(f) << f.error().to_string();
  const GgufFile& g = **f;
  EXPECT_EQ(g.version(), 3u);
  EXPECT_EQ(g.alignment(), 32u);
  EXPECT_EQ(g.metadata().size(), 20u);
  EXPECT_EQ(g.find("general.alignment"), nullptr);  // the default is not written

  EXPECT_EQ(*g.get_string("t.string"), "héllo \"world\"");
  EXPECT_EQ(*g.get_string("t.empty"), "");
  EXPECT_EQ(*g.get_uint("t.u32"), 4000000000u);
  EXPECT_EQ(*g.get_int("t.i32"), -123456);
  EXPECT_EQ(*g.get_uint("t.u64"), 0xfedcba9876543210ull);
  EXPECT_EQ(*g.get_float("t.f32"), static_cast<double>(1e-5f));
  EXPECT_EQ(*g.get_bool("t.true"), true);
  EXPECT_EQ(*g.get_bool("t.false"), false);
  EXPECT_EQ(*g.get_string_array("t.strings"), (std::vector<std::string_view>{"a", "", "ccc"}));
  EXPECT_EQ(*g.get_f32_array("t.f32s"), (std::vector<float>{1.0f, -2.5f, 3.25f}));
  EXPECT_EQ(*g.get_i32_array("t.i32s"), (std::vector<int32_t>{-1, 0, 2147483647}));
  EXPECT_TRUE(g.get_i32_array("t.empty_i32s")->empty());
  EXPECT_EQ(*g.get_uint("t.u8"), 200u);
  EXPECT_EQ(*g.get_int("t.i8"), -100);
  EXPECT_EQ(*g.get_uint("t.u16"), 60000u);
  EXPECT_EQ(*g.get_int("t.i16"), -30000);
  EXPECT_EQ(*g.get_int("t.i64"), -(1ll << 60));
  EXPECT_EQ(*g.get_float("t.f64"), 3.141592653589793);
  EXPECT_EQ(*g.get_i32_array("t.u16s"), (std::vector<int32_t>{1, 65535}));

  // Each entry keeps its declared type.
  EXPECT_EQ(g.find("t.u8")->type, GgufValueType::kUint8);
  EXPECT_EQ(g.find("t.i16")->type, GgufValueType::kInt16);
  EXPECT_EQ(g.find("t.f64")->type, GgufValueType::kFloat64);
  const GgufKv* b = g.find("t.bools");
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->array.element_type, GgufValueType::kBool);
  EXPECT_EQ(b->array.count, 3u);
  EXPECT_EQ(std::vector<uint8_t>(b->array.raw.begin(), b->array.raw.end()),
            (std::vector<uint8_t>{1, 0, 1}));
  EXPECT_EQ(g.metadata()[0].key, "t.string");  // file order kept
  EXPECT_TRUE(g.tensors().empty());
}

TEST(GgufRoundTrip, TensorsOfEverySupportedType) {
  struct Case {
    std::string name;
    TensorType type;
    std::vector<uint64_t> dims;
  };
  const std::vector<Case> cases = {
      {"f32.1d", TensorType::kF32, {7}},
      {"f32.2d", TensorType::kF32, {3, 5}},
      {"f32.4d", TensorType::kF32, {2, 3, 1, 2}},
      {"f16.1d", TensorType::kF16, {9}},
      {"f16.3d", TensorType::kF16, {4, 3, 2}},
      {"q4_0.1d", TensorType::kQ4_0, {32}},
      {"q4_0.2d", TensorType::kQ4_0, {64, 3}},
      {"q8_0.2d", TensorType::kQ8_0, {96, 2}},
      {"q8_0.4d", TensorType::kQ8_0, {32, 1, 2, 2}},
  };
  GgufWriter w;
  w.add_string("general.name", "tensors");
  std::vector<std::vector<uint8_t>> data;
  for (size_t i = 0; i < cases.size(); ++i) {
    uint64_t elements = 1;
    for (uint64_t d : cases[i].dims) elements *= d;
    data.push_back(pattern(tensor_bytes(cases[i].type, elements), static_cast<uint8_t>(i)));
    ASSERT_TRUE(w.add_tensor(cases[i].name, cases[i].type, cases[i].dims, data.back()));
  }
  const std::vector<uint8_t> bytes = w.serialize();
  auto f = parse(bytes);
  ASSERT_TRUE(f) << f.error().to_string();
  const GgufFile& g = **f;
  EXPECT_EQ(g.data_offset() % 32, 0u);
  ASSERT_EQ(g.tensors().size(), cases.size());
  for (size_t i = 0; i < cases.size(); ++i) {
    const GgufTensorInfo& t = g.tensors()[i];
    SCOPED_TRACE(cases[i].name);
    EXPECT_EQ(t.name, cases[i].name);
    EXPECT_EQ(t.type, cases[i].type);
    EXPECT_EQ(t.dims, cases[i].dims);
    EXPECT_EQ(t.bytes, data[i].size());
    EXPECT_EQ(t.offset % 32, 0u);
    EXPECT_EQ(g.find_tensor(cases[i].name), &t);
    EXPECT_EQ(std::memcmp(g.tensor_data(t), data[i].data(), data[i].size()), 0);
    EXPECT_TRUE(tensor_type_supported(t.type));
  }
  EXPECT_EQ(g.tensors()[2].elements, 12u);
  EXPECT_EQ(g.tensors()[6].bytes, 3u * 2 * 18);
  EXPECT_EQ(g.find_tensor("absent"), nullptr);
}

TEST(GgufRoundTrip, NonDefaultAlignmentIsWrittenAndHonoured) {
  GgufWriter w(64);
  w.add_uint32("general.alignment", 8);  // ignored: the writer owns this key
  ASSERT_TRUE(w.add_tensor("a", TensorType::kF32, {3}, pattern(12, 1)));
  ASSERT_TRUE(w.add_tensor("b", TensorType::kF16, {5}, pattern(10, 2)));
  ASSERT_TRUE(w.status());
  const std::vector<uint8_t> bytes = w.serialize();
  auto f = parse(bytes);
  ASSERT_TRUE(f) << f.error().to_string();
  EXPECT_EQ((*f)->alignment(), 64u);
  EXPECT_EQ(*(*f)->get_uint("general.alignment"), 64u);
  EXPECT_EQ((*f)->metadata().size(), 1u);
  EXPECT_EQ((*f)->data_offset() % 64, 0u);
  EXPECT_EQ((*f)->tensors()[1].offset, 64u);
  EXPECT_EQ(bytes.size() % 64, 0u);
}

TEST(GgufRoundTrip, AddKvCopiesAFileExactly) {
  const std::vector<uint8_t> original = small_writer().serialize();
  auto f = parse(original);
  ASSERT_TRUE(f) << f.error().to_string();
  GgufWriter copy;
  for (const GgufKv& kv : (*f)->metadata()) copy.add_kv(kv);
  for (const GgufTensorInfo& t : (*f)->tensors()) {
    const uint8_t* p = (*f)->tensor_data(t);
    ASSERT_TRUE(copy.add_tensor(t.name, t.type, t.dims, std::vector<uint8_t>(p, p + t.bytes)));
  }
  ASSERT_TRUE(copy.status());
  EXPECT_EQ(copy.serialize(), original);
}

TEST(GgufRoundTrip, WriteAndOpen) {
  const std::string path = ::testing::TempDir() + "gguf_test_write_and_open.gguf";
  const GgufWriter w = small_writer();
  ASSERT_TRUE(w.write(path));
  EXPECT_NE(::access(path.c_str(), F_OK), -1);
  EXPECT_EQ(::access((path + ".tmp").c_str(), F_OK), -1);  // renamed into place

  auto f = GgufFile::open(path);
  ASSERT_TRUE(f) << f.error().to_string();
  const GgufFile& g = **f;
  const std::vector<uint8_t> expected = w.serialize();
  EXPECT_EQ(g.file_bytes(), expected.size());
  EXPECT_EQ(*g.get_string("general.architecture"), "llama");
  EXPECT_EQ(*g.get_string_array("tokenizer.ggml.tokens"),
            (std::vector<std::string_view>{"<unk>", "<s>", "</s>"}));
  const GgufTensorInfo* t = g.find_tensor("token_embd.weight");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(std::memcmp(g.tensor_data(*t), expected.data() + g.data_offset() + t->offset, t->bytes),
            0);
  std::remove(path.c_str());
}

TEST(GgufOpen, MissingFileIsNotFound) {
  auto f = GgufFile::open(::testing::TempDir() + "gguf_test_does_not_exist.gguf");
  expect_error(f, ErrorCode::kNotFound, "gguf_test_does_not_exist.gguf");
}

TEST(GgufOpen, DirectoryIsRefused) {
  auto f = GgufFile::open(::testing::TempDir());
  expect_error(f, ErrorCode::kInvalidArgument, "not a regular file");
}

TEST(GgufOpen, EmptyFileIsRefusedAndNamesThePath) {
  const std::string path = ::testing::TempDir() + "gguf_test_empty.gguf";
  std::ofstream(path).close();
  auto f = GgufFile::open(path);
  expect_error(f, ErrorCode::kCorrupt, "gguf_test_empty.gguf: file is 0 bytes");
  std::remove(path.c_str());
}

TEST(GgufWriterTest, WriteIntoMissingDirectoryFails) {
  const std::string path = ::testing::TempDir() + "no/such/dir/x.gguf";
  expect_error(small_writer().write(path), ErrorCode::kIo, "cannot create");
}

TEST(GgufWriterTest, DuplicateKeyIsReportedByWrite) {
  GgufWriter w;
  w.add_uint32("a.key", 1);
  w.add_string("a.key", "again");
  expect_error(w.status(), ErrorCode::kInvalidArgument, "duplicate metadata key 'a.key'");
  const std::string path = ::testing::TempDir() + "gguf_test_dup.gguf";
  expect_error(w.write(path), ErrorCode::kInvalidArgument, "duplicate metadata key 'a.key'");
  EXPECT_EQ(::access(path.c_str(), F_OK), -1);
}

TEST(GgufWriterTest, AddTensorRefusesBadInput) {
  GgufWriter w;
  ASSERT_TRUE(w.add_tensor("t", TensorType::kF32, {4}, pattern(16, 0)));
  expect_error(w.add_tensor("t", TensorType::kF32, {4}, pattern(16, 0)),
               ErrorCode::kInvalidArgument, "duplicate tensor name 't'");
  expect_error(w.add_tensor("u", TensorType::kF32, {4}, pattern(15, 0)),
               ErrorCode::kInvalidArgument, "needs 16 bytes of data, got 15");
  expect_error(w.add_tensor("v", TensorType::kQ8_0, {33}, pattern(34, 0)),
               ErrorCode::kInvalidArgument, "not a multiple of q8_0's block of 32");
  expect_error(w.add_tensor("w", TensorType::kF32, {}, {}), ErrorCode::kInvalidArgument,
               "0 dimensions");
  expect_error(w.add_tensor("x", TensorType::kF32, {1, 1, 1, 1, 1}, pattern(4, 0)),
               ErrorCode::kInvalidArgument, "5 dimensions");
  expect_error(w.add_tensor("y", TensorType::kF32, {4, 0}, {}), ErrorCode::kInvalidArgument,
               "invalid dimensions [4, 0]");
  expect_error(w.add_tensor("z", static_cast<TensorType>(99), {4}, pattern(4, 0)),
               ErrorCode::kInvalidArgument, "unknown tensor type id 99");
  EXPECT_TRUE(w.status());  // tensor errors are returned, not remembered
}

TEST(GgufWriterTest, AddKvRefusesAMismatchedEntry) {
  GgufWriter w;
  GgufKv kv;
  kv.key = "bad";
  kv.type = GgufValueType::kUint32;
  kv.scalar = 1.5;  // a double where an unsigned integer belongs
  w.add_kv(kv);
  expect_error(w.status(), ErrorCode::kInvalidArgument, "'bad': value does not match its type u32");
  const std::vector<uint8_t> bytes = w.serialize();
  auto f = parse(bytes);
  ASSERT_TRUE(f) << f.error().to_string();
  EXPECT_TRUE((*f)->metadata().empty());  // nothing half-written
}

// ---------------------------------------------------------------------------
// Type table

TEST(GgufTypes, BlockSizesMatchGgml) {
  struct Row {
    TensorType type;
    const char* name;
    uint32_t elements;
    uint32_t bytes;
  };
  const Row rows[] = {
      {TensorType::kF32, "f32", 1, 4},        {TensorType::kF16, "f16", 1, 2},
      {TensorType::kBF16, "bf16", 1, 2},      {TensorType::kQ4_0, "q4_0", 32, 18},
      {TensorType::kQ4_1, "q4_1", 32, 20},    {TensorType::kQ5_0, "q5_0", 32, 22},
      {TensorType::kQ5_1, "q5_1", 32, 24},    {TensorType::kQ8_0, "q8_0", 32, 34},
      {TensorType::kQ8_1, "q8_1", 32, 36},    {TensorType::kQ2_K, "q2_K", 256, 84},
      {TensorType::kQ3_K, "q3_K", 256, 110},  {TensorType::kQ4_K, "q4_K", 256, 144},
      {TensorType::kQ5_K, "q5_K", 256, 176},  {TensorType::kQ6_K, "q6_K", 256, 210},
      {TensorType::kQ8_K, "q8_K", 256, 292},  {TensorType::kI8, "i8", 1, 1},
      {TensorType::kI16, "i16", 1, 2},        {TensorType::kI32, "i32", 1, 4},
      {TensorType::kI64, "i64", 1, 8},        {TensorType::kF64, "f64", 1, 8},
  };
  for (const Row& r : rows) {
    const TensorTypeInfo* info = tensor_type_info(r.type);
    ASSERT_NE(info, nullptr) << r.name;
    EXPECT_STREQ(info->name, r.name);
    EXPECT_EQ(info->block_elements, r.elements) << r.name;
    EXPECT_EQ(info->block_bytes, r.bytes) << r.name;
  }
  for (uint32_t unknown : {4u, 5u, 16u, 29u, 31u, 99u, 0xffffffffu}) {
    EXPECT_EQ(tensor_type_info(unknown), nullptr) << unknown;
  }
  EXPECT_TRUE(tensor_type_supported(TensorType::kF32));
  EXPECT_TRUE(tensor_type_supported(TensorType::kF16));
  EXPECT_TRUE(tensor_type_supported(TensorType::kQ4_0));
  EXPECT_TRUE(tensor_type_supported(TensorType::kQ8_0));
  EXPECT_FALSE(tensor_type_supported(TensorType::kQ4_K));
  EXPECT_FALSE(tensor_type_supported(TensorType::kBF16));
  EXPECT_EQ(tensor_bytes(TensorType::kQ8_0, 64), 68u);
  EXPECT_EQ(tensor_bytes(TensorType::kQ8_0, 33), 0u);
  EXPECT_EQ(tensor_bytes(TensorType::kF64, 1ull << 62), 0u);  // overflows
}

// ---------------------------------------------------------------------------
// Getters

// One entry of each kind, for the getters' type checks.
std::vector<uint8_t> one_of_each_type() {
  GgufWriter w;
  w.add_string("s", "text");
  w.add_uint32("u", 7);
  w.add_int32("i", 7);
  w.add_float32("f", 0.5f);
  w.add_bool("b", true);
  w.add_string_array("sa", {"x"});
  w.add_float32_array("fa", {1.0f});
  w.add_int32_array("ia", {1});
  return w.serialize();
}

TEST(GgufGetters, EveryGetterRefusesTheWrongType) {
  const std::vector<uint8_t> bytes = one_of_each_type();
  auto f = parse(bytes);
  ASSERT_TRUE(f) << f.error().to_string();
  const GgufFile& g = **f;
  const std::vector<std::string> keys = {"s", "u", "i", "f", "b", "sa", "fa", "ia"};
  // Which keys each getter accepts; every other key must be refused.
  auto check = [&](const char* getter, const std::vector<std::string>& accepted, auto get) {
    for (const std::string& key : keys) {
      SCOPED_TRACE(std::string(getter) + "(" + key + ")");
      const bool ok = std::find(accepted.begin(), accepted.end(), key) != accepted.end();
      auto r = get(key);
      if (ok) {
        EXPECT_TRUE(r.has_value()) << r.error().to_string();
      } else {
        expect_error(r, ErrorCode::kCorrupt, "metadata '" + key + "' is of type");
      }
    }
    auto absent = get("absent");
    expect_error(absent, ErrorCode::kNotFound, "metadata key 'absent' not found");
  };
  check("get_string", {"s"}, [&](const std::string& k) { return g.get_string(k); });
  check("get_uint", {"u", "i"}, [&](const std::string& k) { return g.get_uint(k); });
  check("get_int", {"u", "i"}, [&](const std::string& k) { return g.get_int(k); });
  check("get_float", {"f"}, [&](const std::string& k) { return g.get_float(k); });
  check("get_bool", {"b"}, [&](const std::string& k) { return g.get_bool(k); });
  check("get_string_array", {"sa"}, [&](const std::string& k) { return g.get_string_array(k); });
  check("get_f32_array", {"fa"}, [&](const std::string& k) { return g.get_f32_array(k); });
  check("get_i32_array", {"ia"}, [&](const std::string& k) { return g.get_i32_array(k); });
}

TEST(GgufGetters, IntegersConvertOnlyWhenTheyFit) {
  GgufWriter w;
  w.add_uint64("big", 1ull << 63);
  w.add_uint64("small", 5);
  w.add_int32("negative", -7);
  GgufKv kv;
  kv.key = "wide";
  kv.type = GgufValueType::kArray;
  kv.array.element_type = GgufValueType::kInt64;
  kv.array.count = 2;
  const int64_t wide[] = {1, 1ll << 40};
  const std::vector<uint8_t> wide_bytes = as_bytes(wide, sizeof wide);
  kv.array.raw = wide_bytes;
  w.add_kv(kv);
  const std::vector<uint8_t> bytes = w.serialize();
  auto f = parse(bytes);
  ASSERT_TRUE(f) << f.error().to_string();
  EXPECT_EQ(*(*f)->get_uint("big"), 1ull << 63);
  expect_error((*f)->get_int("big"), ErrorCode::kCorrupt, "out of range for a signed 64-bit");
  EXPECT_EQ(*(*f)->get_int("small"), 5);
  EXPECT_EQ(*(*f)->get_int("negative"), -7);
  expect_error((*f)->get_uint("negative"), ErrorCode::kCorrupt,
               "metadata 'negative' is -7, out of range for an unsigned integer");
  expect_error((*f)->get_i32_array("wide"), ErrorCode::kCorrupt, "element 1 is out of range");
}

// ---------------------------------------------------------------------------
// Versions and whole-file damage

TEST(GgufCorrupt, BadMagic) {
  std::vector<uint8_t> bytes = small_writer().serialize();
  bytes[0] = 0x7f;
  bytes[1] = 'E';
  bytes[2] = 'L';
  bytes[3] = 'F';
  expect_error(parse(bytes), ErrorCode::kCorrupt, "bad magic: the file starts with bytes 7f 45 4c 46");
}

TEST(GgufCorrupt, EmptyInput) {
  expect_error(parse({}), ErrorCode::kCorrupt, "file is 0 bytes, shorter than the 24-byte");
}

TEST(GgufVersion, VersionTwoIsRead) {
  const std::vector<uint8_t> bytes = RawGguf().header(0, 1, 2).kv_u32("x", 1).bytes;
  auto f = parse(bytes);
  ASSERT_TRUE(f) << f.error().to_string();
  EXPECT_EQ((*f)->version(), 2u);
}

TEST(GgufVersion, VersionOneIsRefused) {
  const std::vector<uint8_t> bytes = RawGguf().header(0, 0, 1).bytes;
  expect_error(parse(bytes), ErrorCode::kUnsupported, "GGUF version 1 is not supported");
}

TEST(GgufVersion, UnknownVersionIsRefused) {
  const std::vector<uint8_t> bytes = RawGguf().header(0, 0, 4).bytes;
  expect_error(parse(bytes), ErrorCode::kUnsupported,
               "GGUF version 4 is not supported (this reader reads versions 2 and 3)");
}

TEST(GgufVersion, BigEndianFileIsNamed) {
  const std::vector<uint8_t> bytes = RawGguf().header(0, 0, 0x03000000).bytes;
  expect_error(parse(bytes), ErrorCode::kUnsupported, "a big-endian file?");
}

TEST(GgufCorrupt, EveryTruncationFailsCleanly) {
  const std::vector<uint8_t> bytes = small_writer().serialize();
  auto full = parse(bytes);
  ASSERT_TRUE(full) << full.error().to_string();
  // Bytes after the last tensor's data are padding, which may be missing.
  uint64_t end = 0;
  for (const GgufTensorInfo& t : (*full)->tensors()) {
    end = std::max(end, (*full)->data_offset() + t.offset + t.bytes);
  }
  ASSERT_LT(end, bytes.size());
  for (size_t n = 0; n < bytes.size(); ++n) {
    // An exact-size heap copy, so that AddressSanitizer sees any overread.
    const std::vector<uint8_t> prefix(bytes.begin(), bytes.begin() + n);
    auto f = parse(prefix);
    if (n < end) {
      ASSERT_FALSE(f.has_value()) << "prefix of " << n << " bytes parsed";
      EXPECT_FALSE(f.error().message.empty());
    } else {
      EXPECT_TRUE(f.has_value()) << n << ": " << f.error().to_string();
    }
  }
}

TEST(GgufCorrupt, TruncatedTensorDataNamesTheTensor) {
  std::vector<uint8_t> bytes = small_writer().serialize();
  bytes.resize(bytes.size() - 40);
  expect_error(parse(bytes), ErrorCode::kCorrupt,
               "tensor 'token_embd.weight' (index 1) extends past the end of the file: offset 32 "
               "+ 68 bytes > data section of 88 bytes");
}

TEST(GgufCorrupt, EverySingleByteDamageIsHandled) {
  // Not every damaged byte makes the file invalid (a changed tensor byte does
  // not), but none may crash or read outside the buffer.
  const std::vector<uint8_t> bytes = small_writer().serialize();
  size_t refused = 0;
  for (size_t i = 0; i < bytes.size(); ++i) {
    for (uint8_t v : {uint8_t{0x00}, uint8_t{0x01}, uint8_t{0x80}, uint8_t{0xff}}) {
      std::vector<uint8_t> damaged = bytes;
      damaged[i] = v;
      auto f = parse(damaged);
      if (!f) {
        ++refused;
        EXPECT_FALSE(f.error().message.empty());
      }
    }
  }
  EXPECT_GT(refused, 0u);
}

// ---------------------------------------------------------------------------
// Counts and lengths

TEST(GgufCorrupt, HugeTensorCount) {
  const std::vector<uint8_t> bytes = RawGguf().header(1ull << 40, 0).bytes;
  expect_error(parse(bytes), ErrorCode::kOutOfRange,
               "header declares 1099511627776 tensors, over the limit of 65536");
}

TEST(GgufCorrupt, TensorCountBeyondTheFile) {
  const std::vector<uint8_t> bytes = RawGguf().header(1000, 0).zeros(64).bytes;
  expect_error(parse(bytes), ErrorCode::kCorrupt,
               "header declares 1000 tensors, whose directory needs at least 32000 bytes, but "
               "only 64 bytes are left");
}

TEST(GgufCorrupt, HugeMetadataCount) {
  const std::vector<uint8_t> bytes = RawGguf().header(0, ~0ull).bytes;
  expect_error(parse(bytes), ErrorCode::kOutOfRange, "metadata entries, over the limit of 65536");
}

TEST(GgufCorrupt, MetadataCountBeyondTheFile) {
  const std::vector<uint8_t> bytes = RawGguf().header(0, 100).kv_u32("a", 1).bytes;
  expect_error(parse(bytes), ErrorCode::kCorrupt,
               "header declares 100 metadata entries, which need at least 1300 bytes");
}

TEST(GgufCorrupt, HugeStringLength) {
  const std::vector<uint8_t> bytes =
      RawGguf().header(0, 1).u64(1ull << 62).u32(vt(GgufValueType::kUint8)).u8(0).bytes;
  expect_error(parse(bytes), ErrorCode::kOutOfRange,
               "metadata key 0 is 4611686018427387904 bytes long, over the limit of 1048576");
}

TEST(GgufCorrupt, StringLengthBeyondTheFile) {
  const std::vector<uint8_t> bytes = RawGguf()
                                         .header(0, 1)
                                         .str("general.name")
                                         .u32(vt(GgufValueType::kString))
                                         .u64(1000)
                                         .zeros(10)
                                         .bytes;
  expect_error(parse(bytes), ErrorCode::kCorrupt,
               "metadata 'general.name' (entry 0) value of 1000 bytes runs past the end of the "
               "file (10 bytes left");
}

TEST(GgufCorrupt, HugeArrayCount) {
  const std::vector<uint8_t> bytes = RawGguf()
                                         .header(0, 1)
                                         .str("tokenizer.ggml.tokens")
                                         .u32(vt(GgufValueType::kArray))
                                         .u32(vt(GgufValueType::kString))
                                         .u64(1ull << 40)
                                         .zeros(16)
                                         .bytes;
  expect_error(parse(bytes), ErrorCode::kOutOfRange,
               "metadata 'tokenizer.ggml.tokens' (entry 0) declares 1099511627776 elements, over "
               "the limit of 16777216");
}

TEST(GgufCorrupt, StringArrayCountBeyondTheFile) {
  // A count under the limit is still refused when 8 bytes per string are not left.
  const std::vector<uint8_t> bytes = RawGguf()
                                         .header(0, 1)
                                         .str("tokenizer.ggml.tokens")
                                         .u32(vt(GgufValueType::kArray))
                                         .u32(vt(GgufValueType::kString))
                                         .u64(32000)
                                         .str("<unk>")
                                         .bytes;
  expect_error(parse(bytes), ErrorCode::kCorrupt,
               "declares 32000 string elements, which need at least 256000 bytes, but only 13 "
               "bytes are left");
}

TEST(GgufCorrupt, ScalarArrayCountBeyondTheFile) {
  const std::vector<uint8_t> bytes = RawGguf()
                                         .header(0, 1)
                                         .str("scores")
                                         .u32(vt(GgufValueType::kArray))
                                         .u32(vt(GgufValueType::kFloat32))
                                         .u64(10)
                                         .zeros(36)
                                         .bytes;
  expect_error(parse(bytes), ErrorCode::kCorrupt,
               "metadata 'scores' (entry 0) declares 10 f32 elements, which need 40 bytes, but "
               "only 36 bytes are left");
}

TEST(GgufCorrupt, NestedArrayIsUnsupported) {
  const std::vector<uint8_t> bytes = RawGguf()
                                         .header(0, 1)
                                         .str("nested")
                                         .u32(vt(GgufValueType::kArray))
                                         .u32(vt(GgufValueType::kArray))
                                         .u64(0)
                                         .bytes;
  expect_error(parse(bytes), ErrorCode::kUnsupported, "metadata 'nested' (entry 0) is an array "
                                                      "of arrays");
}

// ---------------------------------------------------------------------------
// Metadata values

TEST(GgufCorrupt, UnknownValueType) {
  const std::vector<uint8_t> bytes = RawGguf().header(0, 1).str("odd").u32(13).u32(0).bytes;
  expect_error(parse(bytes), ErrorCode::kCorrupt,
               "metadata 'odd' (entry 0) has unknown value type 13");
}

TEST(GgufCorrupt, UnknownArrayElementType) {
  const std::vector<uint8_t> bytes =
      RawGguf().header(0, 1).str("odd").u32(vt(GgufValueType::kArray)).u32(77).u64(0).bytes;
  expect_error(parse(bytes), ErrorCode::kCorrupt,
               "metadata 'odd' (entry 0) is an array of unknown value type 77");
}

TEST(GgufCorrupt, BoolOtherThanZeroOrOne) {
  const std::vector<uint8_t> bytes =
      RawGguf().header(0, 1).str("flag").u32(vt(GgufValueType::kBool)).u8(2).bytes;
  expect_error(parse(bytes), ErrorCode::kCorrupt,
               "metadata 'flag' (entry 0) is a bool of value 2 (expected 0 or 1)");
}

TEST(GgufCorrupt, DuplicateKey) {
  const std::vector<uint8_t> bytes =
      RawGguf().header(0, 3).kv_u32("a", 1).kv_string("b", "x").kv_u32("a", 2).bytes;
  expect_error(parse(bytes), ErrorCode::kCorrupt, "duplicate metadata key 'a' (entry 2)");
}

TEST(GgufCorrupt, KeyWithControlBytesIsEscapedInMessages) {
  const std::vector<uint8_t> bytes = RawGguf().header(0, 1).str("a\nb").u32(99).bytes;
  expect_error(parse(bytes), ErrorCode::kCorrupt, "metadata 'a\\x0ab' (entry 0)");
}

// ---------------------------------------------------------------------------
// Alignment

TEST(GgufCorrupt, AlignmentZero) {
  const std::vector<uint8_t> bytes = RawGguf().header(0, 1).kv_u32("general.alignment", 0).bytes;
  expect_error(parse(bytes), ErrorCode::kCorrupt, "general.alignment is 0, not a power of two");
}

TEST(GgufCorrupt, AlignmentThree) {
  const std::vector<uint8_t> bytes = RawGguf().header(0, 1).kv_u32("general.alignment", 3).bytes;
  expect_error(parse(bytes), ErrorCode::kCorrupt, "general.alignment is 3, not a power of two");
}

TEST(GgufCorrupt, AlignmentOverTheLimit) {
  const std::vector<uint8_t> bytes =
      RawGguf().header(0, 1).kv_u32("general.alignment", 1u << 20).bytes;
  expect_error(parse(bytes), ErrorCode::kOutOfRange,
               "general.alignment is 1048576, over the limit of 65536");
}

TEST(GgufCorrupt, AlignmentOfTheWrongType) {
  const std::vector<uint8_t> bytes =
      RawGguf().header(0, 1).kv_string("general.alignment", "32").bytes;
  expect_error(parse(bytes), ErrorCode::kCorrupt, "general.alignment is of type string, not u32");
}

TEST(GgufAlignment, SmallAlignmentIsHonoured) {
  const std::vector<uint8_t> bytes = RawGguf()
                                         .header(1, 1)
                                         .kv_u32("general.alignment", 8)
                                         .tensor("w", {2}, tt(TensorType::kF32), 0)
                                         .pad(8)
                                         .zeros(8)
                                         .bytes;
  auto f = parse(bytes);
  ASSERT_TRUE(f) << f.error().to_string();
  EXPECT_EQ((*f)->alignment(), 8u);
  EXPECT_EQ((*f)->data_offset() % 8, 0u);
  EXPECT_EQ((*f)->data_offset() + 8, bytes.size());
}

TEST(GgufAlignment, FileWithoutTensorsMayOmitThePadding) {
  const std::vector<uint8_t> bytes = RawGguf().header(0, 1).kv_u32("x", 1).bytes;
  ASSERT_NE(bytes.size() % 32, 0u);
  auto f = parse(bytes);
  ASSERT_TRUE(f) << f.error().to_string();
  EXPECT_TRUE((*f)->tensors().empty());
}

// ---------------------------------------------------------------------------
// Tensor directory

TEST(GgufCorrupt, ZeroDimensions) {
  const std::vector<uint8_t> bytes = RawGguf().header(1, 0).tensor("blk.0.attn_q.weight", {}).bytes;
  expect_error(parse(bytes), ErrorCode::kCorrupt,
               "tensor 'blk.0.attn_q.weight' (index 0) has 0 dimensions (expected 1 to 4)");
}

TEST(GgufCorrupt, FiveDimensions) {
  const std::vector<uint8_t> bytes =
      RawGguf().header(1, 0).tensor("w", {1, 1, 1, 1, 1}).pad().zeros(32).bytes;
  expect_error(parse(bytes), ErrorCode::kCorrupt,
               "tensor 'w' (index 0) has 5 dimensions (expected 1 to 4)");
}

TEST(GgufCorrupt, ZeroDim) {
  const std::vector<uint8_t> bytes = RawGguf().header(1, 0).tensor("w", {4, 0}).pad().bytes;
  expect_error(parse(bytes), ErrorCode::kCorrupt, "tensor 'w' (index 0) has ne[1] = 0");
}

TEST(GgufCorrupt, DimsWhoseProductOverflows) {
  const std::vector<uint8_t> bytes =
      RawGguf().header(1, 0).tensor("w", {1ull << 32, 1ull << 32}).pad().bytes;
  expect_error(parse(bytes), ErrorCode::kCorrupt,
               "tensor 'w' (index 0) has dimensions [4294967296, 4294967296] whose element count "
               "overflows 64 bits");
}

TEST(GgufCorrupt, ByteSizeOverflows) {
  const std::vector<uint8_t> bytes = RawGguf().header(1, 0).tensor("w", {1ull << 62}).pad().bytes;
  expect_error(parse(bytes), ErrorCode::kCorrupt,
               "tensor 'w' (index 0) of 4611686018427387904 f32 elements has a byte size that "
               "overflows 64 bits");
}

TEST(GgufCorrupt, UnknownTensorType) {
  const std::vector<uint8_t> bytes = RawGguf().header(1, 0).tensor("w", {32}, 99).pad().bytes;
  expect_error(parse(bytes), ErrorCode::kUnsupported,
               "tensor 'w' (index 0) has unknown tensor type id 99");
}

TEST(GgufCorrupt, RowNotAWholeNumberOfBlocks) {
  const std::vector<uint8_t> bytes =
      RawGguf().header(1, 0).tensor("w", {48, 2}, tt(TensorType::kQ8_0)).pad().zeros(128).bytes;
  expect_error(parse(bytes), ErrorCode::kCorrupt,
               "tensor 'w' (index 0) has ne[0] = 48, not a multiple of q8_0's block of 32 "
               "elements");
}

TEST(GgufCorrupt, MisalignedTensorOffset) {
  const std::vector<uint8_t> bytes = RawGguf()
                                         .header(2, 0)
                                         .tensor("a", {4}, tt(TensorType::kF32), 0)
                                         .tensor("b", {4}, tt(TensorType::kF32), 16)
                                         .pad()
                                         .zeros(64)
                                         .bytes;
  expect_error(parse(bytes), ErrorCode::kCorrupt,
               "tensor 'b' (index 1) has data offset 16, not a multiple of the alignment 32");
}

TEST(GgufCorrupt, TensorPastEndOfFile) {
  const std::vector<uint8_t> bytes = RawGguf()
                                         .header(2, 0)
                                         .tensor("a", {4}, tt(TensorType::kF32), 0)
                                         .tensor("blk.0.attn_q.weight", {8}, tt(TensorType::kF32), 32)
                                         .pad()
                                         .zeros(48)
                                         .bytes;
  expect_error(parse(bytes), ErrorCode::kCorrupt,
               "tensor 'blk.0.attn_q.weight' (index 1) extends past the end of the file: offset "
               "32 + 32 bytes > data section of 48 bytes");
}

TEST(GgufCorrupt, TensorOffsetFarPastEndOfFile) {
  // offset + bytes would overflow if added unchecked.
  const std::vector<uint8_t> bytes =
      RawGguf().header(1, 0).tensor("w", {8}, tt(TensorType::kF32), ~0ull << 5).pad().bytes;
  expect_error(parse(bytes), ErrorCode::kCorrupt,
               "tensor 'w' (index 0) extends past the end of the file: offset "
               "18446744073709551584 + 32 bytes > data section of 0 bytes");
}

TEST(GgufCorrupt, OverlappingTensors) {
  const std::vector<uint8_t> bytes = RawGguf()
                                         .header(3, 0)
                                         .tensor("a", {8}, tt(TensorType::kF32), 64)
                                         .tensor("b", {16}, tt(TensorType::kF32), 0)
                                         .tensor("c", {4}, tt(TensorType::kF32), 32)
                                         .pad()
                                         .zeros(128)
                                         .bytes;
  expect_error(parse(bytes), ErrorCode::kCorrupt,
               "tensors 'b' (index 1, bytes 0..64) and 'c' (index 2, bytes 32..48) overlap");
}

TEST(GgufCorrupt, DuplicateTensorName) {
  const std::vector<uint8_t> bytes = RawGguf()
                                         .header(2, 0)
                                         .tensor("w", {8}, tt(TensorType::kF32), 0)
                                         .tensor("w", {8}, tt(TensorType::kF32), 32)
                                         .pad()
                                         .zeros(64)
                                         .bytes;
  expect_error(parse(bytes), ErrorCode::kCorrupt, "duplicate tensor name 'w' (index 1)");
}

TEST(GgufCorrupt, TensorNameLengthBeyondTheFile) {
  std::vector<uint8_t> bytes = RawGguf().header(1, 0).u64(500).zeros(40).bytes;
  expect_error(parse(bytes), ErrorCode::kCorrupt,
               "the name of tensor 0 of 500 bytes runs past the end of the file");
}

TEST(GgufCorrupt, TruncatedInsideDims) {
  // Enough bytes for the directory's minimum, but the 4 declared dims run out.
  const std::vector<uint8_t> bytes =
      RawGguf().header(1, 0).str("w").u32(4).u64(1).u64(1).u32(0).bytes;
  expect_error(parse(bytes), ErrorCode::kCorrupt, "file ends inside ne[2] of tensor 'w' (index 0)");
}

// ---------------------------------------------------------------------------
// Fuzz seed corpus

// Writes tests/fuzz/gguf/corpus when IDLEFLEET_WRITE_CORPUS=DIR is set:
//   IDLEFLEET_WRITE_CORPUS=tests/fuzz/gguf/corpus build/.../gguf_test --gtest_filter='*Corpus*'
// The checked-in fuzz seed corpus (tests/fuzz/gguf/corpus) is what this
// generator writes: the test fails when they drift apart. To regenerate:
//   IDLEFLEET_WRITE_CORPUS=tests/fuzz/gguf/corpus build/release/tests/gguf_test --gtest_filter='*Corpus*'
TEST(GgufCorpus, SeedCorpusMatchesItsGenerator) {
  const char* write_dir = std::getenv("IDLEFLEET_WRITE_CORPUS");
  const std::string corpus = std::string(IDLEFLEET_SOURCE_DIR) + "/tests/fuzz/gguf/corpus";
  auto save = [&](const std::string& name, const std::vector<uint8_t>& bytes) {
    ASSERT_LT(bytes.size(), 4096u) << name;
    if (write_dir != nullptr) {
      std::ofstream out(std::string(write_dir) + "/" + name, std::ios::binary | std::ios::trunc);
      out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
      ASSERT_TRUE(out.good()) << name;
      return;
    }
    std::ifstream in(corpus + "/" + name, std::ios::binary);
    ASSERT_TRUE(in.good()) << "missing corpus file " << name;
    const std::vector<uint8_t> have((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    EXPECT_EQ(have, bytes) << "corpus file " << name << " differs from its generator";
  };
  save("valid_small", small_writer().serialize());
  save("valid_one_of_each_type", one_of_each_type());
  {
    GgufWriter w(64);
    w.add_string("general.architecture", "llama");
    ASSERT_TRUE(w.add_tensor("f16", TensorType::kF16, {4, 2}, pattern(16, 3)));
    ASSERT_TRUE(w.add_tensor("q4_0", TensorType::kQ4_0, {32, 2}, pattern(36, 4)));
    save("valid_align64_f16_q4_0", w.serialize());
  }
  save("valid_v2", RawGguf().header(1, 1, 2).kv_u32("x", 1).tensor("w", {2}).pad().zeros(8).bytes);
  {
    std::vector<uint8_t> bytes = small_writer().serialize();
    bytes.resize(bytes.size() / 2);
    save("truncated_small", bytes);
  }
  save("overlap", RawGguf()
                      .header(2, 0)
                      .tensor("a", {16}, tt(TensorType::kF32), 0)
                      .tensor("b", {4}, tt(TensorType::kF32), 32)
                      .pad()
                      .zeros(64)
                      .bytes);
  save("k_quants", RawGguf()
                       .header(2, 1)
                       .kv_u32("general.alignment", 16)
                       .tensor("q4k", {256}, tt(TensorType::kQ4_K), 0)
                       .tensor("bf16", {3}, tt(TensorType::kBF16), 144)
                       .pad(16)
                       .zeros(160)
                       .bytes);
  save("nested_and_bool_arrays", RawGguf()
                                     .header(0, 2)
                                     .str("bools")
                                     .u32(vt(GgufValueType::kArray))
                                     .u32(vt(GgufValueType::kBool))
                                     .u64(3)
                                     .u8(1)
                                     .u8(0)
                                     .u8(1)
                                     .str("nested")
                                     .u32(vt(GgufValueType::kArray))
                                     .u32(vt(GgufValueType::kArray))
                                     .u64(0)
                                     .bytes);
}

}  // namespace
}  // namespace idlefleet::engine::gguf_test
