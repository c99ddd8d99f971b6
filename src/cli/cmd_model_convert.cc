// `idlefleet model convert-llama2c CHECKPOINT --tokenizer TOK -o OUT.gguf`:
// a llama2.c checkpoint and tokenizer to an F32 GGUF (engine/model_tools.h).
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <string>

#include "cli/commands.h"
#include "engine/model_tools.h"

namespace idlefleet::cli {

void add_model_convert_llama2c(CLI::App& model) {
  struct Args {
    std::string checkpoint;
    std::string tokenizer;
    std::string out;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = model.add_subcommand(
      "convert-llama2c", "Convert a llama2.c checkpoint and its tokenizer to an F32 GGUF");
  cmd->add_option("CHECKPOINT", args->checkpoint, "llama2.c checkpoint (.bin)")->required();
  cmd->add_option("--tokenizer", args->tokenizer, "llama2.c tokenizer (.bin)")->required();
  cmd->add_option("-o,--output", args->out, "GGUF file to write")->required();
  cmd->callback([args] {
    const auto start = std::chrono::steady_clock::now();
    const engine::ProgressFn progress = engine::progress_printer(
        "converting", ::isatty(::fileno(stderr)) != 0,
        [](std::string_view text) { std::fwrite(text.data(), 1, text.size(), stderr); });
    if (auto st = engine::convert_llama2c(args->checkpoint, args->tokenizer, args->out, progress);
        !st) {
      throw CommandError{st.error().to_string()};
    }
    auto summary = engine::summarize_model(args->out);
    if (!summary) throw CommandError{summary.error().to_string()};
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("wrote %s: %s, %.2f s\n", args->out.c_str(),
                engine::format_model_summary(*summary).c_str(), seconds);
  });
}

}  // namespace idlefleet::cli
