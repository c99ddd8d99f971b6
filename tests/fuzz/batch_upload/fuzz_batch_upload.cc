// libFuzzer target for what a client uploads to the Files and Batches APIs:
// multipart/form-data bodies (POST /v1/files), batch input files (JSONL, one
// request per line) and batch creation bodies. Each must parse or be refused
// with a message; never crash, throw or read outside the input. What parses
// must keep the parsers' promises: parts are views into the body, lines are
// numbered in order, a failed line has its reason, a valid one a body.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <variant>

#include "coordinator/batch.h"
#include "coordinator/multipart.h"

namespace {

using namespace idlefleet::coordinator;

void require(bool ok) {
  if (!ok) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view input(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 4) {
    case 0:
    case 1: {
      // The first line is the Content-Type, the rest the body.
      const size_t nl = input.find('\n');
      const std::string_view type = nl == std::string_view::npos ? std::string_view("multipart/form-data; boundary=b")
                                                                 : input.substr(0, nl);
      const std::string_view body = nl == std::string_view::npos ? input : input.substr(nl + 1);
      auto parts = parse_multipart(type, body);
      if (!parts) {
        require(!parts.error().message.empty());
        return 0;
      }
      require(parts->size() <= kPartsMax);
      for (const FormPart& p : *parts) {
        require(!p.name.empty());
        require(p.data.data() >= body.data() && p.data.data() + p.data.size() <= body.data() + body.size());
      }
      return 0;
    }
    case 2: {
      const char* endpoint = (size % 2 == 0) ? "/v1/completions" : "/v1/chat/completions";
      auto r = parse_batch_input(input, endpoint, ApiLimits{});
      if (auto* e = std::get_if<ApiError>(&r)) {
        require(!e->message.empty());
        return 0;
      }
      uint64_t previous = 0;
      for (const BatchLine& l : std::get<std::vector<BatchLine>>(r)) {
        require(l.line > previous);
        previous = l.line;
        require(l.custom_id.size() <= kCustomIdBytesMax);
        require(l.error.has_value() != !l.body.empty() || (l.error && l.body.empty()));
        if (l.error) require(!batch_error_line("id", l.custom_id, *l.error).empty());
      }
      return 0;
    }
    default: {
      auto r = parse_batch_create(input);
      if (auto* e = std::get_if<ApiError>(&r)) require(e->status == 400 && !e->message.empty());
      return 0;
    }
  }
}
