// ChatTemplate: real chat templates of eleven model families (Llama 2, Llama 3,
// Llama 3.1, ChatML/Qwen, Qwen-style with a namespace, Mistral, Mixtral with a
// system message, Zephyr/TinyLlama, Gemma, Phi-3, Vicuna) rendered for
// conversations with and without a system message, with and without the
// generation prompt, and for conversations the templates refuse; every
// construct of the subset; Jinja's whitespace rules with transformers'
// settings and with Jinja's defaults; and garbage, adversarial and oversized
// templates, each of which must give a clear error and never crash.
//
// The expected strings of the generated tables below were produced by Jinja2
// 3.1.6 configured as transformers configures it (trim_blocks, lstrip_blocks,
// loopcontrols, tojson as json.dumps with ensure_ascii=False); the template
// sources are written from the published ones.
#include "engine/chat_template.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace idlefleet::engine::chat_template_test {
namespace {

enum class Conversation { kNosys, kSys, kOne, kBad };

ChatTemplateInputs inputs_for(Conversation c, bool add_generation_prompt) {
  const ChatTurn sys{"system", "You are terse."};
  const ChatTurn u1{"user", "Hello there"};
  const ChatTurn a1{"assistant", " Hi! How can I help? "};
  const ChatTurn u2{"user", "What is 2+2?"};
  ChatTemplateInputs in;
  switch (c) {
    case Conversation::kNosys: in.messages = {u1, a1, u2}; break;
    case Conversation::kSys: in.messages = {sys, u1, a1, u2}; break;
    case Conversation::kOne: in.messages = {u1}; break;
    case Conversation::kBad: in.messages = {u1, u2}; break;  // roles do not alternate
  }
  in.add_generation_prompt = add_generation_prompt;
  in.bos_token = "<s>";
  in.eos_token = "</s>";
  return in;
}

struct FamilyCase {
  const char* family;
  const char* source;
  Conversation conversation;
  bool add_generation_prompt;
  const char* expected;        // the rendered prompt, or
  const char* expected_error;  // the message of the template's raise_exception
};

struct ConstructCase {
  const char* source;
  const char* expected;  // rendered with the kSys conversation
};

struct WhitespaceCase {
  const char* source;
  const char* expected_hf;     // trim_blocks and lstrip_blocks on
  const char* expected_jinja;  // both off, Jinja's defaults
};

// clang-format off
// Generated expectations: each checked against Jinja2 3.1.6 configured as
// transformers configures it (trim_blocks, lstrip_blocks, loopcontrols).

constexpr const char* kLlama2Template = R"jinja({% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\n' + system_message + '\n<</SYS>>\n\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %})jinja";
constexpr const char* kLlama3Template = R"jinja({% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %})jinja";
constexpr const char* kChatmlTemplate = R"jinja({% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %})jinja";
constexpr const char* kMistralTemplate = R"jinja({{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %})jinja";
constexpr const char* kMixtralSysTemplate = R"jinja({%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content'] %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set loop_messages = messages %}
{%- endif %}

{{- bos_token }}
{%- for message in loop_messages %}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}
        {{- raise_exception('After the optional system message, conversation roles must alternate user/assistant/user/assistant/...') }}
    {%- endif %}
    {%- if message['role'] == 'user' %}
        {%- if loop.first and system_message is defined %}
            {{- ' [INST] ' + system_message + '\n\n' + message['content'] + ' [/INST]' }}
        {%- else %}
            {{- ' [INST] ' + message['content'] + ' [/INST]' }}
        {%- endif %}
    {%- elif message['role'] == 'assistant' %}
        {{- ' ' + message['content'] + eos_token}}
    {%- else %}
        {{- raise_exception('Only user and assistant roles are supported, with the exception of an initial optional system message!') }}
    {%- endif %}
{%- endfor %}
)jinja";
constexpr const char* kZephyrTemplate = R"jinja({% for message in messages %}
{% if message['role'] == 'user' %}
{{ '<|user|>\n' + message['content'] + eos_token }}
{% elif message['role'] == 'system' %}
{{ '<|system|>\n' + message['content'] + eos_token }}
{% elif message['role'] == 'assistant' %}
{{ '<|assistant|>\n'  + message['content'] + eos_token }}
{% endif %}
{% if loop.last and add_generation_prompt %}
{{ '<|assistant|>' }}
{% endif %}
{% endfor %})jinja";
constexpr const char* kGemmaTemplate = R"jinja({{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %})jinja";
constexpr const char* kPhi3Template = R"jinja({% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'user' %}{{'<|user|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'assistant' %}{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %})jinja";
constexpr const char* kVicunaTemplate = R"jinja({% if messages[0]['role'] == 'system' %}{% set system_message = messages[0]['content'] %}{% set loop_messages = messages[1:] %}{% else %}{% set system_message = 'A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the user\'s questions.' %}{% set loop_messages = messages %}{% endif %}{{ system_message }}{% for message in loop_messages %}{% if message['role'] == 'user' %}{{ ' USER: ' + message['content'].strip() }}{% elif message['role'] == 'assistant' %}{{ ' ASSISTANT: ' + message['content'].strip() + eos_token }}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ ' ASSISTANT:' }}{% endif %})jinja";
constexpr const char* kLlama31Template = R"jinja({{- bos_token }}
{%- if custom_tools is defined %}
    {%- set tools = custom_tools %}
{%- endif %}
{%- if not tools_in_user_message is defined %}
    {%- set tools_in_user_message = true %}
{%- endif %}
{%- if not date_string is defined %}
    {%- set date_string = "26 Jul 2024" %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}

{#- This block extracts the system message, so we can slot it into the right place. #}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}

{#- System message + builtin tools #}
{{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
{%- if builtin_tools is defined or tools is not none %}
    {{- "Environment: ipython\n" }}
{%- endif %}
{{- "Cutting Knowledge Date: December 2023\n" }}
{{- "Today Date: " + date_string + "\n\n" }}
{{- system_message }}
{{- "<|eot_id|>" }}

{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}
)jinja";
constexpr const char* kQwenNsTemplate = R"jinja({%- set ns = namespace(found_system=false, last_user=-1) %}
{%- for m in messages %}
    {%- if m.role == 'system' %}{%- set ns.found_system = true %}{%- endif %}
    {%- if m.role == 'user' %}{%- set ns.last_user = loop.index0 %}{%- endif %}
{%- endfor %}
{%- if not ns.found_system %}
<|im_start|>system
You are Qwen, a helpful assistant.<|im_end|>
{% endif %}
{%- for m in messages %}
<|im_start|>{{ m.role }}
{{ m.content }}{% if loop.index0 == ns.last_user %} (last user turn){% endif %}<|im_end|>
{% endfor %}
{%- if add_generation_prompt %}
<|im_start|>assistant
{% endif %})jinja";

const std::vector<FamilyCase>& family_cases() {
  static const std::vector<FamilyCase> cases = {
      {"llama2", kLlama2Template, Conversation::kNosys, true, "<s>[INST] Hello there [/INST] Hi! How can I help? </s><s>[INST] What is 2+2? [/INST]", nullptr},
      {"llama2", kLlama2Template, Conversation::kNosys, false, "<s>[INST] Hello there [/INST] Hi! How can I help? </s><s>[INST] What is 2+2? [/INST]", nullptr},
      {"llama2", kLlama2Template, Conversation::kSys, true, "<s>[INST] <<SYS>>\nYou are terse.\n<</SYS>>\n\nHello there [/INST] Hi! How can I help? </s><s>[INST] What is 2+2? [/INST]", nullptr},
      {"llama2", kLlama2Template, Conversation::kSys, false, "<s>[INST] <<SYS>>\nYou are terse.\n<</SYS>>\n\nHello there [/INST] Hi! How can I help? </s><s>[INST] What is 2+2? [/INST]", nullptr},
      {"llama2", kLlama2Template, Conversation::kOne, true, "<s>[INST] Hello there [/INST]", nullptr},
      {"llama2", kLlama2Template, Conversation::kBad, true, nullptr, "Conversation roles must alternate user/assistant/user/assistant/..."},
      {"llama3", kLlama3Template, Conversation::kNosys, true, "<s><|start_header_id|>user<|end_header_id|>\n\nHello there<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHi! How can I help?<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n", nullptr},
      {"llama3", kLlama3Template, Conversation::kNosys, false, "<s><|start_header_id|>user<|end_header_id|>\n\nHello there<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHi! How can I help?<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>", nullptr},
      {"llama3", kLlama3Template, Conversation::kSys, true, "<s><|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHello there<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHi! How can I help?<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n", nullptr},
      {"llama3", kLlama3Template, Conversation::kSys, false, "<s><|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHello there<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHi! How can I help?<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>", nullptr},
      {"llama3", kLlama3Template, Conversation::kOne, true, "<s><|start_header_id|>user<|end_header_id|>\n\nHello there<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n", nullptr},
      {"llama3", kLlama3Template, Conversation::kBad, true, "<s><|start_header_id|>user<|end_header_id|>\n\nHello there<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n", nullptr},
      {"chatml", kChatmlTemplate, Conversation::kNosys, true, "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHello there<|im_end|>\n<|im_start|>assistant\n Hi! How can I help? <|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n", nullptr},
      {"chatml", kChatmlTemplate, Conversation::kNosys, false, "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHello there<|im_end|>\n<|im_start|>assistant\n Hi! How can I help? <|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n", nullptr},
      {"chatml", kChatmlTemplate, Conversation::kSys, true, "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHello there<|im_end|>\n<|im_start|>assistant\n Hi! How can I help? <|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n", nullptr},
      {"chatml", kChatmlTemplate, Conversation::kSys, false, "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHello there<|im_end|>\n<|im_start|>assistant\n Hi! How can I help? <|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n", nullptr},
      {"chatml", kChatmlTemplate, Conversation::kOne, true, "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHello there<|im_end|>\n<|im_start|>assistant\n", nullptr},
      {"chatml", kChatmlTemplate, Conversation::kBad, true, "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHello there<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n", nullptr},
      {"mistral", kMistralTemplate, Conversation::kNosys, true, "<s>[INST] Hello there [/INST] Hi! How can I help? </s>[INST] What is 2+2? [/INST]", nullptr},
      {"mistral", kMistralTemplate, Conversation::kNosys, false, "<s>[INST] Hello there [/INST] Hi! How can I help? </s>[INST] What is 2+2? [/INST]", nullptr},
      {"mistral", kMistralTemplate, Conversation::kSys, true, nullptr, "Conversation roles must alternate user/assistant/user/assistant/..."},
      {"mistral", kMistralTemplate, Conversation::kSys, false, nullptr, "Conversation roles must alternate user/assistant/user/assistant/..."},
      {"mistral", kMistralTemplate, Conversation::kOne, true, "<s>[INST] Hello there [/INST]", nullptr},
      {"mistral", kMistralTemplate, Conversation::kBad, true, nullptr, "Conversation roles must alternate user/assistant/user/assistant/..."},
      {"mixtral_sys", kMixtralSysTemplate, Conversation::kNosys, true, "<s> [INST] Hello there [/INST]  Hi! How can I help? </s> [INST] What is 2+2? [/INST]", nullptr},
      {"mixtral_sys", kMixtralSysTemplate, Conversation::kNosys, false, "<s> [INST] Hello there [/INST]  Hi! How can I help? </s> [INST] What is 2+2? [/INST]", nullptr},
      {"mixtral_sys", kMixtralSysTemplate, Conversation::kSys, true, "<s> [INST] You are terse.\n\nHello there [/INST]  Hi! How can I help? </s> [INST] What is 2+2? [/INST]", nullptr},
      {"mixtral_sys", kMixtralSysTemplate, Conversation::kSys, false, "<s> [INST] You are terse.\n\nHello there [/INST]  Hi! How can I help? </s> [INST] What is 2+2? [/INST]", nullptr},
      {"mixtral_sys", kMixtralSysTemplate, Conversation::kOne, true, "<s> [INST] Hello there [/INST]", nullptr},
      {"mixtral_sys", kMixtralSysTemplate, Conversation::kBad, true, nullptr, "After the optional system message, conversation roles must alternate user/assistant/user/assistant/..."},
      {"zephyr", kZephyrTemplate, Conversation::kNosys, true, "<|user|>\nHello there</s>\n<|assistant|>\n Hi! How can I help? </s>\n<|user|>\nWhat is 2+2?</s>\n<|assistant|>\n", nullptr},
      {"zephyr", kZephyrTemplate, Conversation::kNosys, false, "<|user|>\nHello there</s>\n<|assistant|>\n Hi! How can I help? </s>\n<|user|>\nWhat is 2+2?</s>\n", nullptr},
      {"zephyr", kZephyrTemplate, Conversation::kSys, true, "<|system|>\nYou are terse.</s>\n<|user|>\nHello there</s>\n<|assistant|>\n Hi! How can I help? </s>\n<|user|>\nWhat is 2+2?</s>\n<|assistant|>\n", nullptr},
      {"zephyr", kZephyrTemplate, Conversation::kSys, false, "<|system|>\nYou are terse.</s>\n<|user|>\nHello there</s>\n<|assistant|>\n Hi! How can I help? </s>\n<|user|>\nWhat is 2+2?</s>\n", nullptr},
      {"zephyr", kZephyrTemplate, Conversation::kOne, true, "<|user|>\nHello there</s>\n<|assistant|>\n", nullptr},
      {"zephyr", kZephyrTemplate, Conversation::kBad, true, "<|user|>\nHello there</s>\n<|user|>\nWhat is 2+2?</s>\n<|assistant|>\n", nullptr},
      {"gemma", kGemmaTemplate, Conversation::kNosys, true, "<s><start_of_turn>user\nHello there<end_of_turn>\n<start_of_turn>model\nHi! How can I help?<end_of_turn>\n<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n", nullptr},
      {"gemma", kGemmaTemplate, Conversation::kNosys, false, "<s><start_of_turn>user\nHello there<end_of_turn>\n<start_of_turn>model\nHi! How can I help?<end_of_turn>\n<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n", nullptr},
      {"gemma", kGemmaTemplate, Conversation::kSys, true, nullptr, "System role not supported"},
      {"gemma", kGemmaTemplate, Conversation::kSys, false, nullptr, "System role not supported"},
      {"gemma", kGemmaTemplate, Conversation::kOne, true, "<s><start_of_turn>user\nHello there<end_of_turn>\n<start_of_turn>model\n", nullptr},
      {"gemma", kGemmaTemplate, Conversation::kBad, true, nullptr, "Conversation roles must alternate user/assistant/user/assistant/..."},
      {"phi3", kPhi3Template, Conversation::kNosys, true, "<|user|>\nHello there<|end|>\n<|assistant|>\n Hi! How can I help? <|end|>\n<|user|>\nWhat is 2+2?<|end|>\n<|assistant|>\n", nullptr},
      {"phi3", kPhi3Template, Conversation::kNosys, false, "<|user|>\nHello there<|end|>\n<|assistant|>\n Hi! How can I help? <|end|>\n<|user|>\nWhat is 2+2?<|end|>\n</s>", nullptr},
      {"phi3", kPhi3Template, Conversation::kSys, true, "<|system|>\nYou are terse.<|end|>\n<|user|>\nHello there<|end|>\n<|assistant|>\n Hi! How can I help? <|end|>\n<|user|>\nWhat is 2+2?<|end|>\n<|assistant|>\n", nullptr},
      {"phi3", kPhi3Template, Conversation::kSys, false, "<|system|>\nYou are terse.<|end|>\n<|user|>\nHello there<|end|>\n<|assistant|>\n Hi! How can I help? <|end|>\n<|user|>\nWhat is 2+2?<|end|>\n</s>", nullptr},
      {"phi3", kPhi3Template, Conversation::kOne, true, "<|user|>\nHello there<|end|>\n<|assistant|>\n", nullptr},
      {"phi3", kPhi3Template, Conversation::kBad, true, "<|user|>\nHello there<|end|>\n<|user|>\nWhat is 2+2?<|end|>\n<|assistant|>\n", nullptr},
      {"vicuna", kVicunaTemplate, Conversation::kNosys, true, "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the user's questions. USER: Hello there ASSISTANT: Hi! How can I help?</s> USER: What is 2+2? ASSISTANT:", nullptr},
      {"vicuna", kVicunaTemplate, Conversation::kNosys, false, "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the user's questions. USER: Hello there ASSISTANT: Hi! How can I help?</s> USER: What is 2+2?", nullptr},
      {"vicuna", kVicunaTemplate, Conversation::kSys, true, "You are terse. USER: Hello there ASSISTANT: Hi! How can I help?</s> USER: What is 2+2? ASSISTANT:", nullptr},
      {"vicuna", kVicunaTemplate, Conversation::kSys, false, "You are terse. USER: Hello there ASSISTANT: Hi! How can I help?</s> USER: What is 2+2?", nullptr},
      {"vicuna", kVicunaTemplate, Conversation::kOne, true, "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the user's questions. USER: Hello there ASSISTANT:", nullptr},
      {"vicuna", kVicunaTemplate, Conversation::kBad, true, "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the user's questions. USER: Hello there USER: What is 2+2? ASSISTANT:", nullptr},
      {"llama31", kLlama31Template, Conversation::kNosys, true, "<s><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHello there<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHi! How can I help?<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n", nullptr},
      {"llama31", kLlama31Template, Conversation::kNosys, false, "<s><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHello there<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHi! How can I help?<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>", nullptr},
      {"llama31", kLlama31Template, Conversation::kSys, true, "<s><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\nYou are terse.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHello there<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHi! How can I help?<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n", nullptr},
      {"llama31", kLlama31Template, Conversation::kSys, false, "<s><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\nYou are terse.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHello there<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHi! How can I help?<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>", nullptr},
      {"llama31", kLlama31Template, Conversation::kOne, true, "<s><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHello there<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n", nullptr},
      {"llama31", kLlama31Template, Conversation::kBad, true, "<s><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHello there<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n", nullptr},
      {"qwen_ns", kQwenNsTemplate, Conversation::kNosys, true, "<|im_start|>system\nYou are Qwen, a helpful assistant.<|im_end|>\n<|im_start|>user\nHello there<|im_end|>\n<|im_start|>assistant\n Hi! How can I help? <|im_end|>\n<|im_start|>user\nWhat is 2+2? (last user turn)<|im_end|>\n<|im_start|>assistant\n", nullptr},
      {"qwen_ns", kQwenNsTemplate, Conversation::kNosys, false, "<|im_start|>system\nYou are Qwen, a helpful assistant.<|im_end|>\n<|im_start|>user\nHello there<|im_end|>\n<|im_start|>assistant\n Hi! How can I help? <|im_end|>\n<|im_start|>user\nWhat is 2+2? (last user turn)<|im_end|>\n", nullptr},
      {"qwen_ns", kQwenNsTemplate, Conversation::kSys, true, "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHello there<|im_end|>\n<|im_start|>assistant\n Hi! How can I help? <|im_end|>\n<|im_start|>user\nWhat is 2+2? (last user turn)<|im_end|>\n<|im_start|>assistant\n", nullptr},
      {"qwen_ns", kQwenNsTemplate, Conversation::kSys, false, "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHello there<|im_end|>\n<|im_start|>assistant\n Hi! How can I help? <|im_end|>\n<|im_start|>user\nWhat is 2+2? (last user turn)<|im_end|>\n", nullptr},
      {"qwen_ns", kQwenNsTemplate, Conversation::kOne, true, "<|im_start|>system\nYou are Qwen, a helpful assistant.<|im_end|>\n<|im_start|>user\nHello there (last user turn)<|im_end|>\n<|im_start|>assistant\n", nullptr},
      {"qwen_ns", kQwenNsTemplate, Conversation::kBad, true, "<|im_start|>system\nYou are Qwen, a helpful assistant.<|im_end|>\n<|im_start|>user\nHello there<|im_end|>\n<|im_start|>user\nWhat is 2+2? (last user turn)<|im_end|>\n<|im_start|>assistant\n", nullptr},
  };
  return cases;
}

const std::vector<ConstructCase>& construct_cases() {
  static const std::vector<ConstructCase> cases = {
      {R"jinja({{ 1 + 2 * 3 }}|{{ (1 + 2) * 3 }}|{{ 7 // 2 }}|{{ -7 // 2 }}|{{ -7 % 3 }}|{{ 7 % -3 }}|{{ 7 / 2 }}|{{ 4 / 2 }}|{{ 2 ** 10 }}|{{ 2 ** -1 }})jinja",
       "7|9|3|-4|2|-2|3.5|2.0|1024|0.5"},
      {R"jinja({{ 'a' ~ 1 ~ none ~ true }}|{{ 'ab' * 3 }}|{{ 3 * 'x' }}|{{ [1,2] + [3] }}|{{ 1.5 + 1 }}|{{ 0.1 + 0.2 }}|{{ 1e20 }}|{{ 1e-5 }}|{{ 100.0 }}|{{ -0.0 }})jinja",
       "a1NoneTrue|ababab|xxx|[1, 2, 3]|2.5|0.30000000000000004|1e+20|1e-05|100.0|-0.0"},
      {R"jinja({{ 'abc'[0] }}|{{ 'abc'[-1] }}|{{ 'abc'[5] }}|{{ 'hello'[1:3] }}|{{ 'hello'[::-1] }}|{{ 'hello'[::2] }}|{{ [1,2,3,4][1:] }}|{{ [1,2,3,4][:-1] }}|{{ [1,2,3,4][-2:] }}|{{ [1,2,3][10:] }}|{{ 'héllo'[1] }}|{{ 'héllo'|length }}|{{ 'héllo'[::-1] }})jinja",
       "a|c||el|olleh|hlo|[2, 3, 4]|[1, 2, 3]|[3, 4]|[]|é|5|olléh"},
      {R"jinja({{ 1 == 1.0 }}|{{ 'a' == 'a' }}|{{ 'a' != 'b' }}|{{ 1 < 2 }}|{{ 'a' < 'b' }}|{{ 2 >= 2 }}|{{ [1,2] == [1,2] }}|{{ {'a':1} == {'a':1} }}|{{ none == none }}|{{ true == 1 }})jinja",
       "True|True|True|True|True|True|True|True|True|True"},
      {R"jinja({{ 'a' in 'cat' }}|{{ 'z' not in 'cat' }}|{{ 2 in [1,2] }}|{{ 'k' in {'k': 1} }}|{{ 'x' in undefined_thing }})jinja",
       "True|True|True|True|False"},
      {R"jinja({{ 1 and 2 }}|{{ 0 and 2 }}|{{ 0 or 'x' }}|{{ '' or [] }}|{{ not 0 }}|{{ not not 'a' }}|{{ 'y' if 1 else 'n' }}|{{ 'y' if 0 else 'n' }}|{{ 'y' if 0 }}|{{ 1 if 0 else 2 if 0 else 3 }})jinja",
       "2|0|x|[]|True|True|y|n||3"},
      {R"jinja({{ x is defined }}|{{ x is not defined }}|{{ none is none }}|{{ 'a' is string }}|{{ 1 is number }}|{{ 1 is integer }}|{{ 1.0 is float }}|{{ true is boolean }}|{{ {} is mapping }}|{{ [] is iterable }}|{{ 4 is even }}|{{ 3 is odd }}|{{ 9 is divisibleby 3 }}|{{ 9 is divisibleby(4) }}|{{ 1 is eq 1 }}|{{ 'a' is in 'abc' }}|{{ true is true }}|{{ x is undefined }})jinja",
       "False|True|True|True|True|True|True|True|True|True|True|True|True|False|True|True|True|True"},
      {R"jinja({{ '  hi  '|trim }}|{{ 'xxhixx'|trim('x') }}|{{ [1,2,3]|length }}|{{ 'abc'|upper }}|{{ 'ABC'|lower }}|{{ 'hello world'|capitalize }}|{{ 'hello wORLD'|title }}|{{ x|default('d') }}|{{ ''|default('d') }}|{{ ''|default('d', true) }}|{{ [1,2,3]|join(', ') }}|{{ [1,2,3]|join }}|{{ 1|string }}|{{ [1,2,3]|first }}|{{ [1,2,3]|last }}|{{ 'abc'|first }}|{{ 'abc'|list }}|{{ [1,2,3]|reverse|list }}|{{ 'abc'|reverse }}|{{ 'aXbX'|replace('X', '-') }}|{{ '42'|int + 1 }}|{{ 'x'|int }}|{{ '3.7'|int }}|{{ 3.7|int }}|{{ '2.5'|float }}|{{ -3|abs }}|{{ {'a':1,'b':2}|items|list }}|{{ [1,1,2,1,3]|unique|list }})jinja",
       "hi|hi|3|ABC|abc|Hello world|Hello World|d||d|1, 2, 3|123|1|1|3|a|['a', 'b', 'c']|[3, 2, 1]|cba|a-b-|43|0|3|3|2.5|3|[('a', 1), ('b', 2)]|[1, 2, 3]"},
      {R"jinja({{ {'a': [1, 'x', none, true, 1.5], 'b': {'c': "q\"\n"}}|tojson }}|{{ [1,2]|tojson(indent=2) }}|{{ {'a': {'b': []}, 'c': {}}|tojson(indent=2) }}|{{ 'é<>&\''|tojson }})jinja",
       "{\"a\": [1, \"x\", null, true, 1.5], \"b\": {\"c\": \"q\\\"\\n\"}}|[\n  1,\n  2\n]|{\n  \"a\": {\n    \"b\": []\n  },\n  \"c\": {}\n}|\"é<>&'\""},
      {R"jinja({{ messages|map(attribute='role')|join(',') }}|{{ messages|selectattr('role', 'equalto', 'user')|list|length }}|{{ messages|rejectattr('role', 'eq', 'user')|map(attribute='content')|list }}|{{ [0,1,2,'',3]|select|list }}|{{ [1,2,3,4]|select('odd')|list }}|{{ [1,2,3,4]|reject('even')|list }}|{{ ['a','b']|map('upper')|list }}|{{ messages|selectattr('role')|list|length }})jinja",
       "system,user,assistant,user|2|['You are terse.', ' Hi! How can I help? ']|[1, 2, 3]|[1, 3]|[1, 3]|['A', 'B']|4"},
      {R"jinja({{ '  x  '.strip() }}|{{ '  x  '.lstrip() }}|{{ '  x  '.rstrip() }}|{{ 'xxaxx'.strip('x') }}|{{ 'hello'.startswith('he') }}|{{ 'hello'.endswith(('x','lo')) }}|{{ 'a b  c'.split() }}|{{ 'a,b,,c'.split(',') }}|{{ 'a,b,c'.split(',', 1) }}|{{ 'ab'.upper() }}|{{ 'AB'.lower() }}|{{ 'hello world'.title() }}|{{ 'aaa'.replace('a','b',2) }}|{{ 'hello'.find('l') }}|{{ 'hello'.count('l') }}|{{ '-'.join(['a','b']) }}|{{ 'abc'.replace('', '-') }}|{{ '  a b '.split(none, 1) }})jinja",
       "x|x  |  x|a|True|True|['a', 'b', 'c']|['a', 'b', '', 'c']|['a', 'b,c']|AB|ab|Hello World|bba|2|2|a-b|-a-b-c-|['a', 'b ']"},
      {R"jinja({{ {'a':1}.get('a') }}|{{ {'a':1}.get('b') }}|{{ {'a':1}.get('b', 5) }}|{{ {'a':1,'b':2}.keys()|list }}|{{ {'a':1,'b':2}.values()|list }}|{% for k, v in {'a':1,'b':2}.items() %}{{k}}={{v}};{% endfor %})jinja",
       "1|None|5|['a', 'b']|[1, 2]|a=1;b=2;"},
      {R"jinja({% for i in range(3) %}{{ loop.index }}/{{ loop.index0 }}/{{ loop.revindex }}/{{ loop.revindex0 }}/{{ loop.first }}/{{ loop.last }}/{{ loop.length }}/{{ loop.previtem }}/{{ loop.nextitem }} {% endfor %})jinja",
       "1/0/3/2/True/False/3//1 2/1/2/1/False/False/3/0/2 3/2/1/0/False/True/3/1/ "},
      {R"jinja({% for i in range(10) %}{% if i == 2 %}{% continue %}{% endif %}{% if i == 5 %}{% break %}{% endif %}{{ i }}{% endfor %}|{% for i in [] %}x{% else %}empty{% endfor %}|{% for i in range(5) if i is odd %}{{ i }}:{{ loop.length }},{% endfor %}|{% for a, b in [[1,2],[3,4]] %}{{ a + b }}{% endfor %}|{% for c in 'ab' %}{{ c }}.{% endfor %}|{% for k in {'x':1,'y':2} %}{{ k }}{% endfor %}|{% for i in range(2, 10, 3) %}{{ i }}{% endfor %}|{% for i in range(5, 0, -2) %}{{ i }}{% endfor %})jinja",
       "0134|empty|1:2,3:2,|37|a.b.|xy|258|531"},
      {R"jinja({% set a = 1 %}{% for i in range(3) %}{% set a = a + i %}{{ a }}{% endfor %}:{{ a }}|{% set ns = namespace(n=0) %}{% for i in range(4) %}{% set ns.n = ns.n + i %}{% endfor %}{{ ns.n }}|{% set x, y = 1, 2 %}{{ x }}{{ y }}|{% set blk %}inner {{ 1 + 1 }}{% endset %}[{{ blk }}]|{% set d = dict(a=1, b='x') %}{{ d.a }}{{ d['b'] }})jinja",
       "123:1|6|12|[inner 2]|1x"},
      {R"jinja({% if 0 %}a{% elif '' %}b{% elif 1 %}c{% else %}d{% endif %}|{% if none %}a{% else %}b{% endif %}|{% if messages %}has{% endif %})jinja",
       "c|b|has"},
      {R"jinja({{ 'a\tb\\c\'d' }}|{{ "x\"y" }}|{{ 'caf\xe9 \u00e9 \U0001F600' }}|{{ 'a' 'b' }}|{{ '\q' }})jinja",
       "a\tb\\c'd|x\"y|café é 😀|ab|\\q"},
      {R"jinja({{ ["it's", 'say "hi"', 'nl\n', '\x01'] }}|{{ (1,) }}|{{ () }}|{{ {'a': 1}.items()|list }})jinja",
       "[\"it's\", 'say \"hi\"', 'nl\\n', '\\x01']|(1,)|()|[('a', 1)]"},
      {R"jinja({{ 1/3 }}|{{ 2.0**60 }}|{{ 1e16 }}|{{ 0.0001 }}|{{ 0.00001234 }}|{{ 10 / 4 }}|{{ 7.5 // 2 }}|{{ -7.5 % 2 }})jinja",
       "0.3333333333333333|1.152921504606847e+18|1e+16|0.0001|1.234e-05|2.5|3.0|0.5"},
      {R"jinja({{ none }}|{{ true }}|{{ False }}|{{ [1, 'a', none, true, 1.5, [2]] }}|{{ {'a': 1, 'b': "it's"} }}|{{ ('x', 2) }})jinja",
       "None|True|False|[1, 'a', None, True, 1.5, [2]]|{'a': 1, 'b': \"it's\"}|('x', 2)"},
      {R"jinja({% set ns = namespace(a=1) %}{{ ns.a }}{{ ns.b }}{% set ns.b = [ns.a, 2] %}{{ ns.b }})jinja",
       "1[1, 2]"},
      {R"jinja({% for m in messages %}{{ m.role[0]|upper }}{% if not loop.last %}-{% endif %}{% endfor %})jinja",
       "S-U-A-U"},
      {R"jinja({% for m in messages %}{% for c in m.role %}{% if loop.index > 2 %}{% break %}{% endif %}{{ c }}{% endfor %}{{ loop.index }}{% endfor %})jinja",
       "sy1us2as3us4"},
      {R"jinja({{ 'x' if messages|length > 3 else 'y' }}|{{ messages[-1]['content'] }}|{{ messages[1:]|length }}|{{ (messages|last).role }})jinja",
       "x|What is 2+2?|3|user"},
  };
  return cases;
}

const std::vector<WhitespaceCase>& whitespace_cases() {
  static const std::vector<WhitespaceCase> cases = {
      {"{% for m in messages %}\n  {{ m.role }}\n{% endfor %}\n",
       "  system\n  user\n  assistant\n  user\n",
       "\n  system\n\n  user\n\n  assistant\n\n  user\n"},
      {"  {% if true %}\n    indented\n  {% endif %}\nend",
       "    indented\nend",
       "  \n    indented\n  \nend"},
      {"x {%- if true %} y {% endif -%} z",
       "x y z",
       "x y z"},
      {"a\n  {%+ if true %}b{% endif +%}\nc",
       "a\n  b\nc",
       "a\n  b\nc"},
      {"a  {% if true %}b{% endif %}  c",
       "a  b  c",
       "a  b  c"},
      {"{{ 'a' }}  {% if true %}b{% endif %}",
       "a  b",
       "a  b"},
      {"{% if true %}\n  {% if true %}x{% endif %}\n{% endif %}",
       "x",
       "\n  x\n"},
      {"{# comment #}\nafter\n    {#- stripped -#}    after2\n",
       "afterafter2",
       "\nafterafter2"},
      {"a\x0d""\n{% if true %}\x0d""\nb\x0d""\n{% endif %}\x0d""\nc\x0d""\n",
       "a\nb\nc",
       "a\n\nb\n\nc"},
      {"{{- ' spaced ' -}}\n   {{ 'a' }}  {{- 'b' }}\n\n",
       " spaced ab\n",
       " spaced ab\n"},
  };
  return cases;
}
// clang-format on

std::string render_or_die(std::string_view source, const ChatTemplateInputs& in,
                          ChatTemplateOptions options = {}) {
  auto t = ChatTemplate::parse(source, options);
  if (!t) {
    ADD_FAILURE() << "parse failed: " << t.error().to_string() << "\nsource: " << source;
    return {};
  }
  auto r = t->render(in);
  if (!r) {
    ADD_FAILURE() << "render failed: " << r.error().to_string() << "\nsource: " << source;
    return {};
  }
  return *r;
}

std::string render_or_die(std::string_view source) {
  return render_or_die(source, inputs_for(Conversation::kSys, true));
}

// The error of parsing `source`, or of rendering it when it parses.
Error error_of(std::string_view source,
               const ChatTemplateInputs& in = inputs_for(Conversation::kSys, true)) {
  auto t = ChatTemplate::parse(source);
  if (!t) return t.error();
  auto r = t->render(in);
  if (r) {
    ADD_FAILURE() << "expected an error, rendered: " << r->substr(0, 200)
                  << "\nsource: " << source.substr(0, 200);
    return {};
  }
  return r.error();
}

Error parse_error_of(std::string_view source) {
  auto t = ChatTemplate::parse(source);
  if (t) {
    ADD_FAILURE() << "expected a parse error\nsource: " << source.substr(0, 200);
    return {};
  }
  return t.error();
}

TEST(ChatTemplateFamilies, RenderLikeTransformers) {
  for (const FamilyCase& c : family_cases()) {
    SCOPED_TRACE(std::string(c.family) + " conversation " +
                 std::to_string(static_cast<int>(c.conversation)) + " add_generation_prompt " +
                 (c.add_generation_prompt ? "true" : "false"));
    auto t = ChatTemplate::parse(c.source);
    ASSERT_TRUE(t) << t.error().to_string();
    auto r = t->render(inputs_for(c.conversation, c.add_generation_prompt));
    if (c.expected != nullptr) {
      ASSERT_TRUE(r) << r.error().to_string();
      EXPECT_EQ(*r, c.expected);
    } else {
      ASSERT_FALSE(r);
      EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument);
      EXPECT_NE(r.error().message.find(std::string("raise_exception: ") + c.expected_error),
                std::string::npos)
          << r.error().message;
    }
  }
}

TEST(ChatTemplateFamilies, EveryFamilyIsCovered) {
  std::vector<std::string> families;
  for (const FamilyCase& c : family_cases()) {
    if (families.empty() || families.back() != c.family) families.push_back(c.family);
  }
  EXPECT_EQ(families, (std::vector<std::string>{"llama2", "llama3", "chatml", "mistral",
                                                "mixtral_sys", "zephyr", "gemma", "phi3",
                                                "vicuna", "llama31", "qwen_ns"}));
}

TEST(ChatTemplateConstructs, MatchJinja) {
  for (const ConstructCase& c : construct_cases()) {
    EXPECT_EQ(render_or_die(c.source), c.expected) << "source: " << c.source;
  }
}

TEST(ChatTemplateWhitespace, TransformersSettingsAndJinjaDefaults) {
  const ChatTemplateOptions jinja_defaults{.trim_blocks = false, .lstrip_blocks = false};
  for (const WhitespaceCase& c : whitespace_cases()) {
    const ChatTemplateInputs in = inputs_for(Conversation::kSys, true);
    EXPECT_EQ(render_or_die(c.source, in), c.expected_hf) << "source: " << c.source;
    EXPECT_EQ(render_or_die(c.source, in, jinja_defaults), c.expected_jinja)
        << "source: " << c.source;
  }
}

TEST(ChatTemplateConstructs, GenerationBlockRendersItsBody) {
  EXPECT_EQ(render_or_die("{% generation %}gen {{ 1 }}{% endgeneration %}!"), "gen 1!");
}

TEST(ChatTemplateConstructs, TokensAndFlagsReachTheTemplate) {
  ChatTemplateInputs in;
  in.bos_token = "<BOS>";
  in.eos_token = "<EOS>";
  in.add_generation_prompt = false;
  EXPECT_EQ(render_or_die("{{ bos_token }}|{{ eos_token }}|{{ add_generation_prompt }}|"
                          "{{ messages|length }}",
                          in),
            "<BOS>|<EOS>|False|0");
}

// Undefined names render as nothing and are false; unlike Jinja's default
// Undefined, attributes and items of undefined values are undefined too.
TEST(ChatTemplateConstructs, UndefinedIsLenient) {
  EXPECT_EQ(render_or_die("[{{ nothing }}]"), "[]");
  EXPECT_EQ(render_or_die("[{{ nothing.attr }}][{{ nothing['k'].more }}][{{ messages[10].role }}]"),
            "[][][]");
  EXPECT_EQ(render_or_die("{% if nothing %}t{% else %}f{% endif %}"), "f");
  EXPECT_EQ(render_or_die("{% if nothing.attr is defined %}t{% else %}f{% endif %}"), "f");
  EXPECT_EQ(render_or_die("{{ nothing|length }}{% for x in nothing %}x{% endfor %}"), "0");
  EXPECT_EQ(render_or_die("{{ nothing|default('dflt') }}"), "dflt");
  EXPECT_EQ(render_or_die("{{ 'a' ~ nothing ~ 'b' }}"), "ab");
  EXPECT_EQ(render_or_die("{{ raise_exception is defined }}{{ strftime_now is defined }}"),
            "TrueFalse");
}

TEST(ChatTemplateConstructs, SetInsideLoopsStaysInTheIteration) {
  EXPECT_EQ(render_or_die("{% set a = 1 %}{% for i in range(3) %}{% set a = a + i %}{{ a }}"
                          "{% endfor %}:{{ a }}"),
            "123:1");
  EXPECT_EQ(render_or_die("{% set ns = namespace(a=1) %}{% for i in range(3) %}"
                          "{% set ns.a = ns.a + i %}{{ ns.a }}{% endfor %}:{{ ns.a }}"),
            "124:4");
  // A top-level set may shadow an input.
  EXPECT_EQ(render_or_die("{% set messages = messages[2:] %}{{ messages|length }}"), "2");
}

TEST(ChatTemplateConstructs, CopiesShareTheParsedTemplate) {
  auto t = ChatTemplate::parse("{{ messages[0].content }}");
  ASSERT_TRUE(t);
  const ChatTemplate copy = *t;
  auto a = t->render(inputs_for(Conversation::kSys, true));
  auto b = copy.render(inputs_for(Conversation::kNosys, true));
  ASSERT_TRUE(a && b);
  EXPECT_EQ(*a, "You are terse.");
  EXPECT_EQ(*b, "Hello there");
}

TEST(ChatTemplateFallback, IsChatMl) {
  const std::string out =
      render_or_die(fallback_chat_template(), inputs_for(Conversation::kSys, true));
  EXPECT_EQ(out,
            "<|im_start|>system\nYou are terse.<|im_end|>\n"
            "<|im_start|>user\nHello there<|im_end|>\n"
            "<|im_start|>assistant\n Hi! How can I help? <|im_end|>\n"
            "<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
            "<|im_start|>assistant\n");
  EXPECT_EQ(render_or_die(fallback_chat_template(), inputs_for(Conversation::kOne, false)),
            "<|im_start|>user\nHello there<|im_end|>\n");
}

// ---- errors

TEST(ChatTemplateErrors, RaiseExceptionCarriesTheMessage) {
  const Error e = error_of("line one\n{{ raise_exception('Roles must alternate, got ' ~ "
                           "messages[0].role) }}");
  EXPECT_EQ(e.code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(e.message,
            "chat template line 2, column 4: raise_exception: Roles must alternate, got system");
}

TEST(ChatTemplateErrors, SyntaxErrorsNameLineAndColumn) {
  struct Case {
    const char* source;
    ErrorCode code;
    const char* message;
  };
  const Case cases[] = {
      {"ab{{ x", ErrorCode::kCorrupt,
       "chat template line 1, column 3: unterminated expression: '{{' without '}}'"},
      {"a\n {% if x", ErrorCode::kCorrupt,
       "chat template line 2, column 2: unterminated tag: '{%' without '%}'"},
      {"{# never closed", ErrorCode::kCorrupt,
       "chat template line 1, column 1: unterminated comment: '{#' without '#}'"},
      {"{{ 'abc }}", ErrorCode::kCorrupt,
       "chat template line 1, column 4: unterminated string literal"},
      {"{% if x %}yes", ErrorCode::kCorrupt,
       "chat template line 1, column 14: unexpected end of template: expected '{% elif %}' "
       "or '{% else %}' or '{% endif %}'"},
      {"{% for x in y %}{% endif %}", ErrorCode::kCorrupt,
       "chat template line 1, column 20: unknown or misplaced tag 'endif'"},
      {"{% endfor %}", ErrorCode::kCorrupt,
       "chat template line 1, column 4: unknown or misplaced tag 'endfor'"},
      {"{{ x|frobnicate }}", ErrorCode::kUnsupported,
       "chat template line 1, column 6: unknown filter 'frobnicate'"},
      {"{{ x is frobnicated }}", ErrorCode::kUnsupported,
       "chat template line 1, column 9: unknown test 'frobnicated'"},
      {"\n\n  {% macro m() %}{% endmacro %}", ErrorCode::kUnsupported,
       "chat template line 3, column 6: the '{% macro %}' tag is not supported"},
      {"{% break %}", ErrorCode::kCorrupt,
       "chat template line 1, column 4: 'break' outside a for loop"},
      {"{{ }}", ErrorCode::kCorrupt,
       "chat template line 1, column 4: expected an expression, found '}}'"},
      {"{{ 1 + }}", ErrorCode::kCorrupt,
       "chat template line 1, column 8: expected an expression, found '}}'"},
      {"{{ a b }}", ErrorCode::kCorrupt,
       "chat template line 1, column 6: expected '}}', found name 'b'"},
      {"{{ x $ y }}", ErrorCode::kCorrupt,
       "chat template line 1, column 6: unexpected character '$'"},
      {"{{ 99999999999999999999 }}", ErrorCode::kOutOfRange,
       "chat template line 1, column 4: integer literal out of the 64-bit range"},
      {"{{ 'bad \\u12 escape' }}", ErrorCode::kCorrupt,
       "chat template line 1, column 9: truncated \\x, \\u or \\U escape"},
      {"{% set %}", ErrorCode::kCorrupt,
       "chat template line 1, column 8: expected a name, found '%}'"},
      {"{% for x %}{% endfor %}", ErrorCode::kCorrupt,
       "chat template line 1, column 10: expected 'in', found '%}'"},
      {"{{ f(a=1, 2) }}", ErrorCode::kCorrupt,
       "chat template line 1, column 11: a positional argument after a keyword argument"},
  };
  for (const Case& c : cases) {
    const Error e = parse_error_of(c.source);
    EXPECT_EQ(e.code, c.code) << c.source << ": " << e.message;
    EXPECT_EQ(e.message, c.message) << c.source;
  }
}

TEST(ChatTemplateErrors, RuntimeErrorsNameLineAndColumn) {
  struct Case {
    const char* source;
    ErrorCode code;
    const char* message;
  };
  const Case cases[] = {
      {"{{ 1 + 'a' }}", ErrorCode::kCorrupt,
       "chat template line 1, column 6: unsupported operand types for +: int and str"},
      {"{{ 1 // 0 }}", ErrorCode::kCorrupt,
       "chat template line 1, column 6: integer division or modulo by zero"},
      {"{{ 9223372036854775807 + 1 }}", ErrorCode::kOutOfRange,
       "chat template line 1, column 24: integer overflow"},
      {"{{ 2 ** 64 }}", ErrorCode::kOutOfRange,
       "chat template line 1, column 6: integer overflow"},
      {"{{ strftime_now('%Y') }}", ErrorCode::kUnsupported,
       "chat template line 1, column 4: cannot call 'strftime_now', a undefined"},
      {"{{ messages.append(1) }}", ErrorCode::kUnsupported,
       "chat template line 1, column 13: list has no method 'append'"},
      {"{{ nothing.strip() }}", ErrorCode::kCorrupt,
       "chat template line 1, column 12: cannot call 'strip' on an undefined value"},
      {"{% for x in 5 %}{% endfor %}", ErrorCode::kCorrupt,
       "chat template line 1, column 1: cannot iterate over a int"},
      {"{% set a, b = [1] %}", ErrorCode::kCorrupt,
       "chat template line 1, column 1: cannot unpack a list into 2 names"},
      {"{% set x = 1 %}{% set x.y = 2 %}", ErrorCode::kCorrupt,
       "chat template line 1, column 16: cannot set an attribute of 'x', which is not a "
       "namespace"},
      {"{% set ns = namespace() %}{% set ns.self = [ns] %}", ErrorCode::kCorrupt,
       "chat template line 1, column 27: a namespace cannot hold a namespace"},
      {"{{ 'a' < 1 }}", ErrorCode::kCorrupt,
       "chat template line 1, column 8: cannot order a str and a int"},
      {"{{ nothing|tojson }}", ErrorCode::kCorrupt,
       "chat template line 1, column 12: tojson cannot serialise a undefined"},
      {"{{ 'abc'[::0] }}", ErrorCode::kCorrupt,
       "chat template line 1, column 9: slice step cannot be zero"},
  };
  for (const Case& c : cases) {
    const Error e = error_of(c.source);
    EXPECT_EQ(e.code, c.code) << c.source << ": " << e.message;
    EXPECT_EQ(e.message, c.message) << c.source;
  }
}

// ---- limits

TEST(ChatTemplateLimits, SourceSize) {
  const std::string big(kChatTemplateSourceBytesMax + 1, 'x');
  const Error e = parse_error_of(big);
  EXPECT_EQ(e.code, ErrorCode::kOutOfRange);
  EXPECT_NE(e.message.find("over the limit"), std::string::npos) << e.message;
  EXPECT_TRUE(ChatTemplate::parse(std::string(kChatTemplateSourceBytesMax, 'x')));
}

TEST(ChatTemplateLimits, BlockNesting) {
  auto nested = [](size_t depth) {
    std::string s;
    for (size_t k = 0; k < depth; ++k) s.append("{% if true %}");
    s.append("x");
    for (size_t k = 0; k < depth; ++k) s.append("{% endif %}");
    return s;
  };
  EXPECT_EQ(render_or_die(nested(kChatTemplateBlockDepthMax)), "x");
  const Error e = parse_error_of(nested(kChatTemplateBlockDepthMax + 1));
  EXPECT_EQ(e.code, ErrorCode::kOutOfRange);
  EXPECT_NE(e.message.find("blocks nested deeper than 32"), std::string::npos) << e.message;
  // Far deeper, and unterminated: still an error, not a stack overflow.
  EXPECT_EQ(parse_error_of(std::string(20000 * 13, ' ').replace(0, 0, nested(20000))).code,
            ErrorCode::kOutOfRange);
}

TEST(ChatTemplateLimits, ExpressionNesting) {
  const size_t deep = 2000;
  for (const auto& [open, close] : std::vector<std::pair<std::string, std::string>>{
           {"(", ")"}, {"[", "]"}, {"not ", ""}, {"-", ""}, {"{'k': ", "}"}, {"f(", ")"},
           {"x[", "]"}, {"0 if 0 else ", ""}}) {
    std::string s("{{ ");
    for (size_t k = 0; k < deep; ++k) s.append(open);
    s.append("1");
    for (size_t k = 0; k < deep; ++k) s.append(close);
    s.append(" }}");
    const Error e = parse_error_of(s);
    EXPECT_EQ(e.code, ErrorCode::kOutOfRange) << open << ": " << e.message;
    EXPECT_NE(e.message.find("expression nested deeper than 64"), std::string::npos)
        << e.message;
  }
  EXPECT_EQ(render_or_die("{{ ((((((((((1)))))))))) + [[[[[2]]]]][0][0][0][0][0] }}"), "3");
}

TEST(ChatTemplateLimits, Loops) {
  Error e = error_of("{% for x in range(100000000) %}{% endfor %}");
  EXPECT_EQ(e.code, ErrorCode::kOutOfRange);
  EXPECT_EQ(e.message, "chat template line 1, column 13: range() of more than 100000 numbers");

  e = error_of("{% for a in range(1000) %}{% for b in range(1000) %}{% endfor %}{% endfor %}");
  EXPECT_EQ(e.code, ErrorCode::kOutOfRange);
  EXPECT_NE(e.message.find("loops ran more than 100000 iterations"), std::string::npos)
      << e.message;

  e = error_of("{% for a in range(9223372036854775807) %}{% endfor %}");
  EXPECT_EQ(e.code, ErrorCode::kOutOfRange);
  e = error_of("{% for a in range(-9223372036854775807 - 1, 9223372036854775807, 1) %}{% endfor %}");
  EXPECT_EQ(e.code, ErrorCode::kOutOfRange);
}

TEST(ChatTemplateLimits, Steps) {
  // 500 evaluations of a flat 5000-element list: under the iteration limit,
  // over the step limit.
  std::string s("{% for i in range(500) %}{% set x = [0");
  for (int k = 0; k < 5000; ++k) s.append(",1");
  s.append("] %}{% endfor %}");
  const Error e = error_of(s);
  EXPECT_EQ(e.code, ErrorCode::kOutOfRange);
  EXPECT_NE(e.message.find("rendering took more than 2000000 steps"), std::string::npos)
      << e.message;
}

TEST(ChatTemplateLimits, ExpressionTreeDepth) {
  // Chains parse without recursion but build deep trees; the renderer would
  // recurse once per link.
  auto chain = [](std::string_view first, std::string_view link, size_t n) {
    std::string s("{{ ");
    s.append(first);
    for (size_t k = 0; k < n; ++k) s.append(link);
    return s.append(" }}");
  };
  EXPECT_EQ(render_or_die(chain("0", "+1", kChatTemplateExpressionTreeDepthMax - 1)), "255");
  for (const auto& [first, link] : std::vector<std::pair<std::string, std::string>>{
           {"0", "+1"}, {"'a'", "~'b'"}, {"x", " or x"}, {"'a'", "|trim"}, {"x", ".y"},
           {"x", "[0]"}, {"x", " is defined"}, {"1", " == 1"}}) {
    const Error e = parse_error_of(chain(first, link, 5000));
    EXPECT_EQ(e.code, ErrorCode::kOutOfRange) << link << ": " << e.message;
    EXPECT_NE(e.message.find("expression tree deeper than 256"), std::string::npos)
        << e.message;
  }
}

TEST(ChatTemplateLimits, OutputAndStrings) {
  Error e = error_of("{% for i in range(100000) %}{{ 'x' * 100 }}{% endfor %}");
  EXPECT_EQ(e.code, ErrorCode::kOutOfRange);
  EXPECT_NE(e.message.find("output longer than 4194304 bytes"), std::string::npos)
      << e.message;

  e = error_of("{{ 'x' * 1000000000 }}");
  EXPECT_EQ(e.code, ErrorCode::kOutOfRange);
  EXPECT_NE(e.message.find("string repetition longer than the output limit"), std::string::npos)
      << e.message;

  // Doubling a string that is never printed.
  e = error_of("{% set ns = namespace(s='x') %}{% for i in range(40) %}"
               "{% set ns.s = ns.s ~ ns.s %}{% endfor %}");
  EXPECT_EQ(e.code, ErrorCode::kOutOfRange);
  EXPECT_NE(e.message.find("a string longer than 4194304 bytes"), std::string::npos)
      << e.message;

  // Many 1 MiB strings built and dropped.
  e = error_of("{% set big = 'y' * 1000000 %}{% for i in range(1000) %}"
               "{% set t = big ~ i %}{% endfor %}");
  EXPECT_EQ(e.code, ErrorCode::kOutOfRange);
  EXPECT_NE(e.message.find("bytes of values"), std::string::npos) << e.message;
}

TEST(ChatTemplateLimits, QuadraticWorkIsChargedAsSteps) {
  // A 4 MB haystack searched for a 2000-byte needle: billions of byte
  // comparisons for a naive search, refused by the step limit up front.
  Error e = error_of("{% set hay = 'a' * 4000000 %}{% set needle = 'a' * 1999 ~ 'b' %}"
                     "{{ needle in hay }}");
  EXPECT_EQ(e.code, ErrorCode::kOutOfRange);
  EXPECT_NE(e.message.find("steps"), std::string::npos) << e.message;
  // A dict literal with thousands of keys, compared in a loop.
  std::string dict("{% set d = {");
  for (int k = 0; k < 4000; ++k) dict.append("'k").append(std::to_string(k)).append("':1,");
  dict.append("} %}{% for i in range(100000) %}{{ d == d }}{% endfor %}");
  e = error_of(dict);
  EXPECT_EQ(e.code, ErrorCode::kOutOfRange);
  EXPECT_NE(e.message.find("steps"), std::string::npos) << e.message;
  // Small searches are cheap.
  EXPECT_EQ(render_or_die("{{ '<tool_call>' in messages[1].content }}"), "False");
}

TEST(ChatTemplateLimits, WorkOnLongStringsIsChargedAsSteps) {
  // Each of these reads a 4 MB string in a loop of 100000 iterations.
  for (const char* op : {"{{ big == big2 }}", "{{ big < big2 }}", "{{ big|length }}",
                         "{{ big[-1] }}", "{{ big[1:2] }}", "{{ big|int }}"}) {
    const Error e = error_of(std::string("{% set big = ' ' * 4000000 %}{% set big2 = big ~ '' %}"
                                         "{% for i in range(100000) %}")
                                 .append(op)
                                 .append("{% endfor %}"));
    EXPECT_EQ(e.code, ErrorCode::kOutOfRange) << op << ": " << e.message;
    EXPECT_NE(e.message.find("steps"), std::string::npos) << op << ": " << e.message;
  }
  EXPECT_EQ(render_or_die("{{ 'héllo'[1] }}{{ 'héllo'[-4] }}{{ 'héllo'[-5] }}|{{ 'héllo'[-6] }}"
                          "{{ 'héllo'[5] }}{{ ''[0] }}{{ ''[-1] }}|{{ 'é'[0] }}{{ 'é'[-1] }}"),
            "ééh||éé");
}

TEST(ChatTemplateLimits, ValueNesting) {
  const Error e = error_of("{% set ns = namespace(v=[]) %}{% for i in range(1000) %}"
                           "{% set ns.v = [ns.v] %}{% endfor %}{{ ns.v }}");
  EXPECT_EQ(e.code, ErrorCode::kOutOfRange);
  EXPECT_NE(e.message.find("values nested deeper than 32"), std::string::npos) << e.message;
}

TEST(ChatTemplateLimits, ListOfSharedStringsCannotBlowUpWhenPrinted) {
  // 300 references to one 1 MB string: cheap to build (the string is
  // shared), 300 MB if printed. Printing stops at the string limit.
  const Error e = error_of("{% set s = 'z' * 1000000 %}{% set ns = namespace(l=[]) %}"
                           "{% for i in range(300) %}{% set ns.l = ns.l + [s] %}{% endfor %}"
                           "{{ ns.l|length }}{{ ns.l }}");
  EXPECT_EQ(e.code, ErrorCode::kOutOfRange) << e.message;
  EXPECT_NE(e.message.find("a string longer than 4194304 bytes"), std::string::npos)
      << e.message;
}

TEST(ChatTemplateLimits, GarbageNeverCrashes) {
  const char* garbage[] = {
      "{{",     "{%",     "{#",       "}}",         "%}",          "{{}}",     "{%%}",
      "{{-}}",  "{%-%}",  "{#-#}",    "{{ ( }}",    "{{ ) }}",     "{{ [ }}",  "{{ { }}",
      "{{ '\\", "{{ \"",  "{{ a. }}", "{{ a[ }}",   "{{ a[1:2:3:4] }}", "{{ a | }}",
      "{{ a is }}", "{% if %}", "{% for in %}", "{% set = 1 %}", "{% elif x %}", "{% else %}",
      "{% endset %}", "{{ 1e999 }}", "{{ 0x10 }}", "{{ a.0.1 }}", "\xff\xfe{{ '\xff' }}",
      "{% set x %}{% set y %}", "{% for x in y %}{% break %}", "{{ ,, }}", "{{ (1,) }}",
      "{{ a if }}", "{{ a if b else }}", "{{ not }}", "{{ - }}", "{{ 1 ** ** 2 }}",
  };
  for (const char* g : garbage) {
    auto t = ChatTemplate::parse(g);
    if (!t) {
      EXPECT_FALSE(t.error().message.empty()) << g;
      EXPECT_EQ(t.error().message.rfind("chat template", 0), 0u) << t.error().message;
      continue;
    }
    auto r = t->render(inputs_for(Conversation::kSys, true));
    if (!r) {
      EXPECT_FALSE(r.error().message.empty()) << g;
    }
  }
}

}  // namespace
}  // namespace idlefleet::engine::chat_template_test
