// Chat templates: turning a conversation into the prompt text a model expects.
//
// A GGUF model carries its prompt format as `tokenizer.chat_template`, a Jinja2
// template written for Hugging Face transformers. ChatTemplate parses such a
// template once and renders it for a list of messages. It implements the part
// of Jinja2 that real chat templates use (Llama 2 and 3, ChatML/Qwen, Mistral,
// Zephyr, Gemma, Phi-3, Vicuna-style and their relatives):
//
//   statements  text, {{ expr }}, {# comment #}, if/elif/else/endif,
//               for x in y [if cond] ... [else] ... endfor (loop.index, index0,
//               revindex, revindex0, first, last, length, previtem, nextitem),
//               for k, v in ..., break, continue, set x = expr, set a, b = ...,
//               set ns.attr = expr (on a namespace(...)), set x %}...{% endset,
//               generation/endgeneration (rendered as its body)
//   whitespace  {%- -%} {{- -}} {#- -#} strip all whitespace on that side; `+`
//               ({%+ +%}) turns lstrip_blocks / trim_blocks off for one tag;
//               one trailing newline at the end of the template is dropped
//               (Jinja's keep_trailing_newline = false); "\r\n" and "\r"
//               become "\n"
//   literals    'str' "str" (escapes \n \t \r \\ \' \" \xHH \uHHHH ...), 12,
//               1.5, true/True, false/False, none/None, [a, b], (a, b),
//               {'k': v}
//   operators   x if c else y, or, and, not, == != < <= > >=, in, not in,
//               + - * / // % ** (ints with Python's floor semantics, floats),
//               ~ (string concatenation), + on strings and lists, str * int,
//               a.b, a['b'], a[0], a[-1], slices a[1:], a[::-1]
//   tests       is [not] defined, undefined, none, string, number, integer,
//               float, boolean, mapping, iterable, sequence, true, false, even,
//               odd, divisibleby(n), eq/equalto/==, ne, lt, le, gt, ge, in
//   filters     trim, length/count, upper, lower, capitalize, title, default/d,
//               join, tojson (indent=), string, first, last, list, reverse,
//               replace, int, float, abs, items, map(attribute=), select,
//               reject, selectattr, rejectattr, unique, safe
//   methods     str: strip, lstrip, rstrip, startswith, endswith, split,
//               upper, lower, title, capitalize, replace, find, count, join;
//               dict: items, keys, values, get
//   functions   raise_exception(msg) (a render error carrying msg),
//               range(...), namespace(k=v, ...), dict(k=v, ...)
//
// Semantics follow Jinja2 as transformers configures it: trim_blocks and
// lstrip_blocks on (ChatTemplateOptions turns them off), no autoescaping,
// tojson as json.dumps(ensure_ascii=False). An undefined variable renders as
// "", is false, iterates as empty, has length 0, and (more lenient than
// Jinja's default Undefined) yields undefined for any attribute or item.
// Strings are UTF-8; length, indexing and slicing count code points; case
// changes and whitespace stripping are ASCII-only. Macros, call blocks,
// include/import/extends, filter blocks and raw blocks are not implemented
// and are refused at parse time (kUnsupported), as are unknown filters and
// tests.
//
// The template comes from an untrusted model file, so everything is bounded
// (the limits below) and every failure is an Error, never a crash or an
// exception: syntax errors at parse() (kCorrupt, kUnsupported, or
// kOutOfRange for a limit), run-time errors at render() (kInvalidArgument for
// raise_exception, which templates use to refuse a conversation; kOutOfRange
// for a limit; kCorrupt for a type error). Messages name the line and column.
//
// Ownership: a ChatTemplate is a cheap-to-copy handle to an immutable parsed
// template. Thread-safety: render() is const and keeps its state on the
// stack; concurrent renders of one template are fine.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace idlefleet::engine {

// Limits. The source limit is checked before anything is parsed; the others
// stop a parse or a render with kOutOfRange.
inline constexpr size_t kChatTemplateSourceBytesMax = 64 * 1024;
// Open blocks (if/for/set) inside one another.
inline constexpr size_t kChatTemplateBlockDepthMax = 32;
// Parenthesised / bracketed / unary expressions inside one another.
inline constexpr size_t kChatTemplateExpressionDepthMax = 64;
// Depth of an expression's tree, which bounds the renderer's recursion: a
// chain a + b + c ..., a|f|g|... or a.b.c... is as deep as it is long.
inline constexpr size_t kChatTemplateExpressionTreeDepthMax = 256;
inline constexpr size_t kChatTemplateOutputBytesMax = 4 * 1024 * 1024;
// Every statement executed and expression node evaluated is one step.
inline constexpr uint64_t kChatTemplateStepsMax = 2'000'000;
// Iterations of all loops of one render together (range() is bounded by it).
inline constexpr uint64_t kChatTemplateLoopIterationsMax = 100'000;
// Bytes of every string and list element a render creates (concatenations,
// filters, methods, the output itself): bounds the work of templates that
// build large values without printing them.
inline constexpr uint64_t kChatTemplateWorkBytesMax = 64ull * 1024 * 1024;
// Lists and dicts inside one another (values, not syntax): bounds the
// recursion of printing, comparing and tojson.
inline constexpr size_t kChatTemplateValueDepthMax = 32;

// One message of a conversation ("system", "user", "assistant", ...).
struct ChatTurn {
  std::string role;
  std::string content;
};

// What a template sees: `messages` (a list of {role, content} dicts),
// `add_generation_prompt`, `bos_token` and `eos_token`. Nothing else is
// defined (tools, documents, date_string, strftime_now are undefined).
struct ChatTemplateInputs {
  std::vector<ChatTurn> messages;
  // Whether to end with the header of the assistant's next turn.
  bool add_generation_prompt = true;
  std::string bos_token;
  std::string eos_token;
};

// Jinja's whitespace options; the defaults are Hugging Face's.
struct ChatTemplateOptions {
  // Drop the first newline after a block tag ({% %}) or comment.
  bool trim_blocks = true;
  // Drop spaces and tabs between the start of a line and a block tag or
  // comment that begins it.
  bool lstrip_blocks = true;
};

struct ChatTemplateProgram;  // the parsed template, chat_template.cc

class ChatTemplate {
 public:
  // Parses `source`. Errors: over kChatTemplateSourceBytesMax or a nesting
  // limit (kOutOfRange), a syntax error (kCorrupt), a construct, filter or
  // test outside the subset (kUnsupported). Messages name line and column.
  static Result<ChatTemplate> parse(std::string_view source, ChatTemplateOptions options = {});

  // Renders the template for `inputs`. Errors: raise_exception(msg)
  // (kInvalidArgument, the message carries msg), a limit (kOutOfRange), a
  // type error such as calling a non-function or adding a string to a number
  // (kCorrupt).
  Result<std::string> render(const ChatTemplateInputs& inputs) const;

 private:
  explicit ChatTemplate(std::shared_ptr<const ChatTemplateProgram> program)
      : program_(std::move(program)) {}
  std::shared_ptr<const ChatTemplateProgram> program_;
};

// The template used for a model without tokenizer.chat_template: ChatML,
//   <|im_start|>{role}\n{content}<|im_end|>\n   for every message, then
//   <|im_start|>assistant\n                      when add_generation_prompt.
// It ignores bos_token and eos_token. The markers are plain text to a
// vocabulary that lacks them; the format still separates turns clearly for
// models tuned on ChatML and is what llama.cpp falls back to as well.
std::string_view fallback_chat_template();

}  // namespace idlefleet::engine
