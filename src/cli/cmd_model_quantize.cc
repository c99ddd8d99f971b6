// `idlefleet model quantize IN OUT --type q8_0|q4_0|f16`: a GGUF's weight
// matrices to another format (engine/model_tools.h).
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>

#include "cli/commands.h"
#include "engine/model_tools.h"

namespace idlefleet::cli {

void add_model_quantize(CLI::App& model) {
  struct Args {
    std::string in;
    std::string out;
    std::string type;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = model.add_subcommand(
      "quantize", "Write a GGUF with its weight matrices in f16, q8_0 or q4_0 (norms stay f32)");
  cmd->add_option("IN", args->in, "GGUF file to read")->required();
  cmd->add_option("OUT", args->out, "GGUF file to write")->required();
  cmd->add_option("--type", args->type, "target weight type")
      ->required()
      ->check(CLI::IsMember({"q8_0", "q4_0", "f16"}));
  cmd->callback([args] {
    std::error_code ec;
    if (args->in == args->out || std::filesystem::equivalent(args->in, args->out, ec)) {
      throw CommandError{"IN and OUT are the same file: " + args->in};
    }
    auto type = engine::weight_type_from_name(args->type);
    if (!type) throw CommandError{type.error().to_string()};
    const auto start = std::chrono::steady_clock::now();
    const engine::ProgressFn progress = engine::progress_printer(
        "quantizing", ::isatty(::fileno(stderr)) != 0,
        [](std::string_view text) { std::fwrite(text.data(), 1, text.size(), stderr); });
    const engine::NoteFn note = [](const std::string& text) {
      std::fprintf(stderr, "note: %s\n", text.c_str());
    };
    if (auto st = engine::quantize_model(args->in, args->out, *type, progress, note); !st) {
      throw CommandError{st.error().to_string()};
    }
    auto summary = engine::summarize_model(args->out);
    if (!summary) throw CommandError{summary.error().to_string()};
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("wrote %s (%s): %s, %.2f s\n", args->out.c_str(), args->type.c_str(),
                engine::format_model_summary(*summary).c_str(), seconds);
  });
}

}  // namespace idlefleet::cli
