// multipart/form-data as clients upload files.
#include "coordinator/multipart.h"

#include <gtest/gtest.h>

namespace idlefleet::coordinator::multipart_test {
namespace {

const std::string kType = "multipart/form-data; boundary=----b0undary";

std::string body(const std::string& file) {
  return "------b0undary\r\n"
         "Content-Disposition: form-data; name=\"purpose\"\r\n\r\n"
         "batch\r\n"
         "------b0undary\r\n"
         "Content-Disposition: form-data; name=\"file\"; filename=\"in.jsonl\"\r\n"
         "Content-Type: application/jsonl\r\n\r\n" +
         file +
         "\r\n------b0undary--\r\n";
}

TEST(Multipart, ReadsFieldsAndFiles) {
  const std::string file = "{\"a\":1}\n{\"b\":\"\\r\\n------b0undar\"}\n";
  const std::string b = body(file);
  auto parts = parse_multipart(kType, b);
  ASSERT_TRUE(parts) << parts.error().to_string();
  ASSERT_EQ(parts->size(), 2u);
  EXPECT_EQ((*parts)[0].name, "purpose");
  EXPECT_EQ((*parts)[0].data, "batch");
  EXPECT_EQ((*parts)[0].filename, "");
  EXPECT_EQ((*parts)[1].name, "file");
  EXPECT_EQ((*parts)[1].filename, "in.jsonl");
  EXPECT_EQ((*parts)[1].content_type, "application/jsonl");
  EXPECT_EQ((*parts)[1].data, file);
}

TEST(Multipart, QuotedBoundaryPreambleAndEscapes) {
  const std::string b =
      "preamble to ignore\r\n--x y\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a \\\"q\\\".txt\"\r\n\r\n"
      "data\r\n--x y--";
  auto parts = parse_multipart("Multipart/Form-Data; charset=utf-8; boundary=\"x y\"", b);
  ASSERT_TRUE(parts) << parts.error().to_string();
  ASSERT_EQ(parts->size(), 1u);
  EXPECT_EQ((*parts)[0].filename, "a \"q\".txt");
  EXPECT_EQ((*parts)[0].data, "data");
  // An empty file.
  auto empty = parse_multipart(kType, body(""));
  ASSERT_TRUE(empty);
  EXPECT_EQ((*empty)[1].data, "");
}

TEST(Multipart, RefusesGarbage) {
  struct Case {
    std::string type, body, wanted;
  };
  const std::string ok = body("x");
  const std::vector<Case> cases = {
      {"application/json", ok, "multipart/form-data"},
      {"multipart/form-data", ok, "boundary"},
      {"multipart/form-data; boundary=" + std::string(71, 'b'), ok, "boundary"},
      {kType, "", "no part"},
      {kType, "------b0undary\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\nno end", "closing boundary"},
      {kType, "------b0undary\r\nX: y\r\n\r\nz\r\n------b0undary--", "Content-Disposition"},
      {kType, "------b0undary\r\nContent-Disposition: attachment; name=\"f\"\r\n\r\nz\r\n------b0undary--", "form-data"},
      {kType, "------b0undary\r\nContent-Disposition: form-data\r\n\r\nz\r\n------b0undary--", "no name"},
      {kType, "------b0undary\r\nno colon here\r\n\r\nz\r\n------b0undary--", "':'"},
      {kType, "------b0undary\r\nContent-Disposition: form-data; name=\"f", "headers do not end"},
      {kType, "------b0undaryX\r\n", "CRLF"},
      {kType, "------b0undary\r\nContent-Disposition: form-data; name=\"f\"\r\nX: " + std::string(9000, 'h') +
                  "\r\n\r\nz\r\n------b0undary--",
       "headers are over"},
  };
  for (const Case& c : cases) {
    auto r = parse_multipart(c.type, c.body);
    ASSERT_FALSE(r) << c.wanted;
    EXPECT_NE(r.error().message.find(c.wanted), std::string::npos) << r.error().message;
  }
  std::string many;
  for (int i = 0; i < 17; ++i) many += "------b0undary\r\nContent-Disposition: form-data; name=\"p\"\r\n\r\nv\r\n";
  many += "------b0undary--";
  auto r = parse_multipart(kType, many);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("more than 16 parts"), std::string::npos);
}

}  // namespace
}  // namespace idlefleet::coordinator::multipart_test
