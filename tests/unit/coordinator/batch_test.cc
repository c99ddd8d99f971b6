// The Batches API's shapes: creation bodies, input validation, output lines.
#include "coordinator/batch.h"

#include <gtest/gtest.h>

namespace idlefleet::coordinator::batch_test {
namespace {

using nlohmann::json;

std::string line(const std::string& id, const json& body, const std::string& url = "/v1/chat/completions") {
  return json{{"custom_id", id}, {"method", "POST"}, {"url", url}, {"body", body}}.dump();
}

const json kChat = {{"model", "stories260K"}, {"messages", json::array({{{"role", "user"}, {"content", "Hi"}}})}};

TEST(Batch, CreateBodies) {
  auto ok = parse_batch_create(
      R"({"input_file_id":"file-1","endpoint":"/v1/chat/completions","completion_window":"24h","metadata":{"k":"v"}})");
  ASSERT_TRUE(std::holds_alternative<BatchCreate>(ok));
  EXPECT_EQ(std::get<BatchCreate>(ok).metadata["k"], "v");
  struct Case {
    std::string body, param;
  };
  for (const Case& c : std::vector<Case>{
           {"[]", ""},
           {R"({"endpoint":"/v1/completions","completion_window":"24h"})", "input_file_id"},
           {R"({"input_file_id":"f","endpoint":"/v1/edits","completion_window":"24h"})", "endpoint"},
           {R"({"input_file_id":"f","endpoint":"/v1/completions","completion_window":"1h"})", "completion_window"},
           {R"({"input_file_id":"f","endpoint":"/v1/completions","completion_window":"24h","metadata":[1]})", "metadata"},
       }) {
    auto r = parse_batch_create(c.body);
    ASSERT_TRUE(std::holds_alternative<ApiError>(r)) << c.body;
    EXPECT_EQ(std::get<ApiError>(r).param, c.param) << c.body;
    EXPECT_EQ(std::get<ApiError>(r).status, 400);
  }
}

TEST(Batch, ABadLineFailsThatLineOnly) {
  const std::string input = line("a", kChat) + "\n" +                                   // 1 ok
                            "not json\n" +                                              // 2
                            line("a", kChat) + "\n" +                                   // 3 duplicate id
                            "\n" +                                                      // 4 blank: skipped
                            line("c", kChat, "/v1/completions") + "\n" +                // 5 wrong url
                            line("d", {{"model", "m"}, {"messages", "x"}}) + "\n" +     // 6 bad body
                            line("e", json{{"model", "m"}, {"messages", kChat["messages"]}, {"stream", true}}) +
                            "\n" +                                                      // 7 stream
                            json{{"method", "POST"}}.dump() + "\r\n" +                  // 8 no custom_id
                            line("g", kChat);                                           // 9 ok, no final newline
  auto r = parse_batch_input(input, "/v1/chat/completions", ApiLimits{});
  ASSERT_TRUE(std::holds_alternative<std::vector<BatchLine>>(r));
  const auto& lines = std::get<std::vector<BatchLine>>(r);
  ASSERT_EQ(lines.size(), 8u);
  std::vector<uint64_t> numbers;
  for (const auto& l : lines) numbers.push_back(l.line);
  EXPECT_EQ(numbers, (std::vector<uint64_t>{1, 2, 3, 5, 6, 7, 8, 9}));
  EXPECT_FALSE(lines[0].error);
  EXPECT_EQ(json::parse(lines[0].body), kChat);
  for (size_t i = 1; i < 7; ++i) {
    ASSERT_TRUE(lines[i].error) << i;
    EXPECT_NE(lines[i].error->message.find("line " + std::to_string(numbers[i])), std::string::npos)
        << lines[i].error->message;
    EXPECT_TRUE(lines[i].body.empty());
  }
  EXPECT_NE(lines[2].error->message.find("used by an earlier line"), std::string::npos);
  EXPECT_EQ(lines[6].custom_id, "");
  EXPECT_FALSE(lines[7].error);
}

TEST(Batch, EmbeddingBatchesTakeEmbeddingBodies) {
  auto ok = parse_batch_create(R"({"input_file_id":"file-1","endpoint":"/v1/embeddings","completion_window":"24h"})");
  ASSERT_TRUE(std::holds_alternative<BatchCreate>(ok));
  const std::string url = "/v1/embeddings";
  const std::string input = line("a", {{"model", "m"}, {"input", "Once upon a time"}}, url) + "\n" +
                            line("b", {{"model", "m"}, {"input", json::array({"x", "y"})}}, url) + "\n" +
                            line("c", {{"model", "m"}, {"input", 7}}, url) + "\n" +        // bad input
                            line("d", {{"model", "m"}, {"input", "x"}}, "/v1/completions");  // wrong url
  auto r = parse_batch_input(input, url, ApiLimits{});
  ASSERT_TRUE(std::holds_alternative<std::vector<BatchLine>>(r));
  const auto& lines = std::get<std::vector<BatchLine>>(r);
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_FALSE(lines[0].error);
  EXPECT_FALSE(lines[1].error);
  ASSERT_TRUE(lines[2].error);
  EXPECT_EQ(lines[2].error->param, "input");
  EXPECT_NE(lines[2].error->message.find("line 3"), std::string::npos) << lines[2].error->message;
  ASSERT_TRUE(lines[3].error);
}

TEST(Batch, LogprobsAreRefusedInBatches) {
  json with = kChat;
  with["logprobs"] = true;
  auto r = parse_batch_input(line("a", with) + "\n" + line("b", kChat), "/v1/chat/completions", ApiLimits{});
  ASSERT_TRUE(std::holds_alternative<std::vector<BatchLine>>(r));
  const auto& lines = std::get<std::vector<BatchLine>>(r);
  ASSERT_EQ(lines.size(), 2u);
  ASSERT_TRUE(lines[0].error);
  EXPECT_EQ(lines[0].error->param, "logprobs");
  EXPECT_FALSE(lines[1].error);
}

TEST(Batch, UnusableFilesFailTheBatch) {
  for (const std::string& input : {std::string(""), std::string("\n\n  \n")}) {
    auto r = parse_batch_input(input, "/v1/completions", ApiLimits{});
    ASSERT_TRUE(std::holds_alternative<ApiError>(r));
    EXPECT_EQ(std::get<ApiError>(r).code, "invalid_file");
  }
  std::string many;
  for (size_t i = 0; i <= kBatchLinesMax; ++i) many += "x\n";
  auto r = parse_batch_input(many, "/v1/completions", ApiLimits{});
  ASSERT_TRUE(std::holds_alternative<ApiError>(r));
  EXPECT_NE(std::get<ApiError>(r).message.find("more than"), std::string::npos);
}

TEST(Batch, ObjectsRoundTripAndLinesAreJsonl) {
  BatchObject b;
  b.id = "batch_1";
  b.endpoint = "/v1/completions";
  b.input_file_id = "file-1";
  b.status = "completed";
  b.created_at = 100;
  b.completed_at = 200;
  b.total = 3;
  b.completed = 2;
  b.failed = 1;
  b.output_file_id = "file-2";
  b.metadata = {{"k", "v"}};
  const json j = batch_json(b);
  EXPECT_EQ(j["object"], "batch");
  EXPECT_TRUE(j["error_file_id"].is_null());
  EXPECT_TRUE(j["in_progress_at"].is_null());
  EXPECT_EQ(j["request_counts"]["completed"], 2);
  auto back = batch_from_json(j);
  ASSERT_TRUE(back) << back.error().to_string();
  EXPECT_EQ(batch_json(*back), j);
  EXPECT_FALSE(batch_from_json(json{{"id", 1}}));

  const std::string out = batch_output_line("batch_req_1", "r1", "cmpl-1", R"({"id":"cmpl-1"})");
  ASSERT_EQ(out.back(), '\n');
  const json o = json::parse(out);
  EXPECT_EQ(o["custom_id"], "r1");
  EXPECT_EQ(o["response"]["status_code"], 200);
  EXPECT_EQ(o["response"]["body"]["id"], "cmpl-1");
  EXPECT_TRUE(o["error"].is_null());
  ApiError e;
  e.message = "bad";
  e.code = "invalid_request";
  const json err = json::parse(batch_error_line("batch_req_2", "", e));
  EXPECT_TRUE(err["custom_id"].is_null());
  EXPECT_TRUE(err["response"].is_null());
  EXPECT_EQ(err["error"]["code"], "invalid_request");
}

}  // namespace
}  // namespace idlefleet::coordinator::batch_test
