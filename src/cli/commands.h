// The `idlefleet` subcommands. Each file in src/cli/ adds one command (or one
// group) to the CLI11 application; main.cc wires them together and turns
// exceptions and errors into exit codes at the process boundary.
//
// Exit codes: 0 success, 1 a runtime error (printed as "error: ..."), 2 a
// usage error (CLI11 prints the help line).
#pragma once

#include <CLI/CLI.hpp>

namespace idlefleet::cli {

// `idlefleet model inspect FILE`
void add_model_inspect(CLI::App& model);
// `idlefleet model convert-llama2c CHECKPOINT --tokenizer TOK -o OUT.gguf`
void add_model_convert_llama2c(CLI::App& model);
// `idlefleet model quantize IN OUT --type q8_0|q4_0|f16`
void add_model_quantize(CLI::App& model);
// `idlefleet model synth --shape tiny110m|tinyllama1b --type ... -o OUT`
void add_model_synth(CLI::App& model);
// `idlefleet model pull URL [-o FILE]`
void add_model_pull(CLI::App& model);
// `idlefleet run -m MODEL -p PROMPT ...`
void add_run(CLI::App& app);
// `idlefleet embed -m MODEL -p TEXT [-t THREADS]`
void add_embed(CLI::App& app);

// `idlefleet coordinator [--config FILE] ...`
void add_coordinator(CLI::App& app);
// `idlefleet agent [--vehicles N] ...`
void add_agent(CLI::App& app);
// `idlefleet demo`: nats-server, a coordinator, simulated vehicles and requests
void add_demo(CLI::App& app);

// `idlefleet admin keys create|list|revoke`: client API keys
void add_admin(CLI::App& app);
// `idlefleet ledger verify|balances|statement|payouts|deposit|credit-limit`
void add_ledger(CLI::App& app);

// `idlefleet sim month`: one simulated vehicle's month, hours to earnings
void add_sim(CLI::App& app);
// `idlefleet sim --scenario FILE --out DIR`: a fleet from a scenario file (cmd_sim_scenario.cc).
void add_sim_scenario(CLI::App* sim);
// `idlefleet sim live --scenario FILE --out DIR`: the simulator against the live fleet (cmd_sim_live.cc).
void add_sim_live(CLI::App* sim);
// `idlefleet sim dst --seeds A-B`: deterministic simulation tests (cmd_sim_dst.cc).
void add_sim_dst(CLI::App* sim);

// `idlefleet chaos --out DIR`: jobs on real processes under random kills (cmd_chaos.cc).
void add_chaos(CLI::App& app);

// Thrown by command callbacks for a runtime failure; main prints it as
// "error: <message>" and exits 1.
struct CommandError {
  std::string message;
};

}  // namespace idlefleet::cli
