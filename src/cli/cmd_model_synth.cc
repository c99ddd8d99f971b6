// `idlefleet model synth --shape tiny110m|tinyllama1b --type ... [--seed S] -o OUT`:
// a model of a real shape with seeded random weights (engine/model_tools.h),
// for benchmarks that need a model's size but not its knowledge.
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>

#include "cli/commands.h"
#include "engine/model_tools.h"

namespace idlefleet::cli {

void add_model_synth(CLI::App& model) {
  struct Args {
    std::string shape;
    std::string type;
    uint64_t seed = 1;
    std::string out;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = model.add_subcommand(
      "synth", "Write a model of a real shape with seeded random weights and a full tokenizer");
  cmd->add_option("--shape", args->shape, "model shape")
      ->required()
      ->check(CLI::IsMember({"tiny110m", "tinyllama1b"}));
  cmd->add_option("--type", args->type, "weight type (norms stay f32)")
      ->required()
      ->check(CLI::IsMember({"f32", "f16", "q8_0", "q4_0"}));
  cmd->add_option("--seed", args->seed, "seed for the weights (same seed, same bytes)")
      ->capture_default_str();
  cmd->add_option("-o,--output", args->out, "GGUF file to write")->required();
  cmd->callback([args] {
    auto type = engine::weight_type_from_name(args->type);
    if (!type) throw CommandError{type.error().to_string()};
    const auto start = std::chrono::steady_clock::now();
    const engine::ProgressFn progress = engine::progress_printer(
        "synthesising", ::isatty(::fileno(stderr)) != 0,
        [](std::string_view text) { std::fwrite(text.data(), 1, text.size(), stderr); });
    const engine::SynthOptions options{args->shape, *type, args->seed};
    if (auto st = engine::synth_model(options, args->out, progress); !st) {
      throw CommandError{st.error().to_string()};
    }
    auto summary = engine::summarize_model(args->out);
    if (!summary) throw CommandError{summary.error().to_string()};
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("wrote %s (%s %s, seed %llu): %s, %.2f s\n", args->out.c_str(),
                args->shape.c_str(), args->type.c_str(),
                static_cast<unsigned long long>(args->seed),
                engine::format_model_summary(*summary).c_str(), seconds);
  });
}

}  // namespace idlefleet::cli
