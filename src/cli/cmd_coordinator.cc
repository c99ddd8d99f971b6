// `idlefleet coordinator`: the HTTP API, the scheduler and the job store.
//
// Settings come from a TOML file (--config) with flags overriding it; with
// neither, the defaults serve a local setup (NATS on 127.0.0.1:4222, HTTP on
// 127.0.0.1:8080) and the bundled test model when it can be found.
#include <cstdio>

#include "cli/commands.h"
#include "cli/model_locator.h"
#include "cli/shutdown.h"
#include "coordinator/server.h"
#include "store/location.h"

namespace idlefleet::cli {

namespace {

struct CoordinatorFlags {
  std::string config_path;
  std::string nats_url;
  std::string http_host;
  int http_port = -1;
  std::string data_dir;
  std::string database;
  std::vector<std::string> models;  // ID=PATH
  int64_t lease_ms = 0;
  bool verbose = false;
};

// The config file (or defaults), with every flag given applied over it.
coordinator::CoordinatorConfig resolve(const CoordinatorFlags& f) {
  coordinator::CoordinatorConfig c;
  if (!f.config_path.empty()) {
    auto loaded = coordinator::load_coordinator_config(f.config_path);
    if (!loaded) throw CommandError{loaded.error().message};
    c = *loaded;
  }
  if (!f.nats_url.empty()) c.nats_url = f.nats_url;
  if (!f.http_host.empty()) c.http_host = f.http_host;
  if (f.http_port >= 0) c.http_port = static_cast<uint16_t>(f.http_port);
  if (!f.data_dir.empty()) c.data_dir = f.data_dir;
  if (!f.database.empty()) c.database = f.database;
  if (f.lease_ms > 0) c.lease_ms = f.lease_ms;
  for (const std::string& m : f.models) {
    const size_t eq = m.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == m.size()) {
      throw CommandError{"--model takes ID=PATH, got '" + m + "'"};
    }
    c.models.push_back({m.substr(0, eq), m.substr(eq + 1)});
  }
  if (c.models.empty()) {
    // The bundled test model, converted on the spot when needed.
    c.models.push_back({"stories260K", locate_model("", true)});
  }
  if (auto st = c.validate(); !st) throw CommandError{st.error().message};
  return c;
}

void run_coordinator(const CoordinatorFlags& f) {
  coordinator::ServerOptions options;
  options.config = resolve(f);
  options.verbose = f.verbose;
  block_shutdown_signals();
  auto server = coordinator::CoordinatorServer::start(options);
  if (!server) throw CommandError{server.error().message};
  const std::string stores = options.config.database.empty()
                                 ? "SQLite in " + options.config.data_dir
                                 : "PostgreSQL " + store::redact_postgres_url(options.config.database);
  std::fprintf(stderr, "coordinator: serving http://%s:%u (NATS %s, stores: %s)\n", options.config.http_host.c_str(),
               (*server)->http_port(), options.config.nats_url.c_str(), stores.c_str());
  for (const auto& m : options.config.models) {
    std::fprintf(stderr, "coordinator: model %s from %s\n", m.id.c_str(), m.path.c_str());
  }
  const int sig = wait_for_shutdown(1000, nullptr);
  std::fprintf(stderr, "coordinator: signal %d, stopping\n", sig);
  (*server)->stop();
}

}  // namespace

void add_coordinator(CLI::App& app) {
  auto f = std::make_shared<CoordinatorFlags>();
  CLI::App* cmd = app.add_subcommand("coordinator", "Run the coordinator: HTTP API, scheduler, job store");
  cmd->add_option("-c,--config", f->config_path, "TOML config file (flags override it)");
  cmd->add_option("--nats", f->nats_url, "NATS server URL (default nats://127.0.0.1:4222)");
  cmd->add_option("--http-host", f->http_host, "Address to serve HTTP on (default 127.0.0.1)");
  cmd->add_option("--http-port", f->http_port, "Port to serve HTTP on (default 8080; 0 picks one)")
      ->check(CLI::Range(0, 65535));
  cmd->add_option("--data-dir", f->data_dir, "Where the SQLite stores and the coordinator's key live (default idlefleet-data)");
  cmd->add_option("--database", f->database,
                  "A postgresql:// URL: keep the stores in that database (shared by replicas) instead of SQLite");
  cmd->add_option("--model", f->models, "A model to serve, as ID=PATH (repeatable)");
  cmd->add_option("--lease-ms", f->lease_ms, "Lease of an attempt, renewed by every chunk and heartbeat")
      ->check(CLI::Range(int64_t{100}, int64_t{3'600'000}));
  cmd->add_flag("-v,--verbose", f->verbose, "Log every placement and refused message");
  cmd->callback([f] { run_coordinator(*f); });
}

}  // namespace idlefleet::cli
