// libFuzzer target for the chat template renderer (engine/chat_template.h).
//
// Input layout: the template, then NUL-separated messages. A message's first
// byte picks its role (system, user, assistant, tool) and the rest is its
// content; with no NUL the whole input is the template and a fixed
// conversation is used. The template is parsed with transformers' whitespace
// settings and with Jinja's defaults; whatever parses is rendered twice with
// and without the generation prompt. Checked: errors carry a message that
// names the template, the output stays under its limit, and rendering is
// deterministic.
//
// Build and run (cmake/fuzz.cmake):
//   cmake --preset fuzz && cmake --build build/fuzz --target fuzz_chat_template
//   mkdir -p /tmp/ct_work && build/fuzz/fuzz_chat_template /tmp/ct_work tests/fuzz/chat_template/corpus
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "engine/chat_template.h"

namespace {

using idlefleet::Error;
using idlefleet::engine::ChatTemplate;
using idlefleet::engine::ChatTemplateInputs;
using idlefleet::engine::ChatTemplateOptions;
using idlefleet::engine::kChatTemplateOutputBytesMax;

[[noreturn]] void fail(const char* what, std::string_view detail = {}) {
  std::fprintf(stderr, "fuzz_chat_template: %s %.*s\n", what, static_cast<int>(detail.size()),
               detail.data());
  std::abort();  // libFuzzer saves the input that got here
}

void check_error(const Error& e) {
  if (e.message.rfind("chat template", 0) != 0) fail("an error that does not name the template:", e.message);
}

void render_checked(const ChatTemplate& t, const ChatTemplateInputs& in) {
  auto first = t.render(in);
  auto second = t.render(in);
  if (first.has_value() != second.has_value()) fail("rendering is not deterministic");
  if (!first) {
    check_error(first.error());
    if (first.error().message != second.error().message) fail("errors differ between renders");
    return;
  }
  if (first->size() > kChatTemplateOutputBytesMax) fail("output over the limit");
  if (*first != *second) fail("outputs differ between renders");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const size_t split = input.find('\0');
  const std::string_view source = input.substr(0, split);

  ChatTemplateInputs in;
  in.bos_token = "<s>";
  in.eos_token = "</s>";
  if (split == std::string_view::npos) {
    in.messages = {{"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello."},
                   {"user", "Bye"}};
  } else {
    static constexpr const char* kRoles[] = {"system", "user", "assistant", "tool"};
    std::string_view rest = input.substr(split + 1);
    while (!rest.empty() && in.messages.size() < 64) {
      const size_t end = rest.find('\0');
      const std::string_view part = rest.substr(0, end);
      if (!part.empty()) {
        in.messages.push_back({kRoles[static_cast<uint8_t>(part[0]) % 4], std::string(part.substr(1))});
      }
      if (end == std::string_view::npos) break;
      rest = rest.substr(end + 1);
    }
  }

  for (const bool hf : {true, false}) {
    const ChatTemplateOptions options{.trim_blocks = hf, .lstrip_blocks = hf};
    auto t = ChatTemplate::parse(source, options);
    if (!t) {
      check_error(t.error());
      if (t.error().message.find("over the limit") == std::string::npos &&
          t.error().message.find(" line ") == std::string::npos) {
        fail("a parse error without a line:", t.error().message);
      }
      continue;
    }
    for (const bool prompt : {true, false}) {
      in.add_generation_prompt = prompt;
      render_checked(*t, in);
    }
  }
  return 0;
}
