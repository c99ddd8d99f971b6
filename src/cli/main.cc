// idlefleet: one binary, subcommands (see docs/architecture.md).
#include <cstdio>
#include <exception>

#include "cli/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"idlefleet: a distributed inference cloud on idle, parked vehicles"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "idlefleet 0.1.0");

  CLI::App* model = app.add_subcommand("model", "Model tools: inspect, convert, quantize, synthesise, pull");
  model->require_subcommand(1);
  idlefleet::cli::add_model_inspect(*model);
  idlefleet::cli::add_model_convert_llama2c(*model);
  idlefleet::cli::add_model_quantize(*model);
  idlefleet::cli::add_model_synth(*model);
  idlefleet::cli::add_model_pull(*model);
  idlefleet::cli::add_run(app);
  idlefleet::cli::add_embed(app);
  idlefleet::cli::add_coordinator(app);
  idlefleet::cli::add_agent(app);
  idlefleet::cli::add_demo(app);
  idlefleet::cli::add_admin(app);
  idlefleet::cli::add_ledger(app);
  idlefleet::cli::add_sim(app);
  idlefleet::cli::add_chaos(app);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // CLI11 prints the message (or the help); usage errors exit 2 as
    // documented in commands.h, whatever CLI11's own code for them.
    const int code = app.exit(e);
    return code == 0 ? 0 : 2;
  } catch (const idlefleet::cli::CommandError& e) {
    std::fprintf(stderr, "error: %s\n", e.message.c_str());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
