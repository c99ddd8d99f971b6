// `idlefleet demo`: the whole system on one machine, the README's main job.
//
// Starts nats-server (the Debian package, on a free loopback port) unless
// --nats names one, a coordinator, and an agent with simulated vehicles on a
// compressed day; sends a steady trickle of real requests; prints a live
// status line and how to send your own request; serves until Ctrl-C (or for
// --seconds).
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <thread>

#include <nlohmann/json.hpp>

#include "agent/fleet.h"
#include "cli/agent_flags.h"
#include "cli/commands.h"
#include "cli/http_post.h"
#include "cli/model_locator.h"
#include "cli/shutdown.h"
#include "cli/story_prompts.h"
#include "coordinator/server.h"
#include "transport/nats_server.h"

namespace idlefleet::cli {

namespace {

struct DemoFlags {
  AgentFlags agent;
  std::string model;
  int http_port = 8080;
  std::string data_dir = "idlefleet-demo";
  double requests_per_minute = 30;
  int seconds = 0;  // 0: until Ctrl-C
  bool external_nats = false;
};

constexpr long kDemoRequestTimeoutS = 600;

const char* kWeekdays[] = {"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"};

std::string status_line(const agent::Fleet& fleet, const std::string& status_json, int utc_offset_minutes) {
  const core::LocalTime local = core::to_local(fleet.sim_now(), utc_offset_minutes);
  char clock[32];
  std::snprintf(clock, sizeof clock, "%s %02d:%02d", kWeekdays[static_cast<int>(local.weekday)],
                local.minute_of_day / 60, local.minute_of_day % 60);
  const nlohmann::json s = nlohmann::json::parse(status_json, nullptr, false);
  if (s.is_discarded() || !s.is_object()) return std::string("[") + clock + "] starting";
  char line[512];
  std::snprintf(line, sizeof line,
                "[%s] vehicles: %s | jobs: %d running, %d queued, %d done | %.0f tokens/s | %.2f kW | preemptions %d",
                clock, fleet_summary(fleet.status()).c_str(), s["jobs"].value("running", 0),
                s["jobs"].value("queued", 0), s["jobs"].value("done", 0), s["tokens"].value("per_second", 0.0),
                s.value("kw_in_use", 0.0), s.value("preemptions", 0));
  return line;
}

void run_demo(DemoFlags& f) {
  const std::string model_path = locate_model(f.model, true);
  block_shutdown_signals();

  std::unique_ptr<transport::NatsServer> nats;
  if (!f.external_nats) {
    transport::NatsServerOptions n;
    n.log_path = (std::filesystem::path(f.data_dir) / "nats-server.log").string();
    std::error_code ec;
    std::filesystem::create_directories(f.data_dir, ec);
    auto started = transport::NatsServer::start(n);
    if (!started) {
      throw CommandError{started.error().message +
                         " (install the nats-server package, or name a running server with --nats URL)"};
    }
    nats = std::move(*started);
    f.agent.nats_url = nats->url();
    std::fprintf(stderr, "demo: nats-server on %s (log %s)\n", nats->url().c_str(), n.log_path.c_str());
  }

  coordinator::ServerOptions co;
  co.config.nats_url = f.agent.nats_url;
  co.config.http_port = static_cast<uint16_t>(f.http_port);
  co.config.data_dir = f.data_dir;
  co.config.models.push_back({"stories260K", model_path});
  co.config.lease_ms = 5000;
  co.config.vehicle_timeout_ms = 10000;
  auto coordinator = coordinator::CoordinatorServer::start(co);
  if (!coordinator) {
    const std::string& why = coordinator.error().message;
    std::string hint;
    if (why.find("NATS") != std::string::npos || why.find("nats") != std::string::npos) {
      hint = " (is a NATS server running at " + f.agent.nats_url + "? leave --nats out to start one)";
    } else if (f.http_port != 0) {
      hint = " (is the port taken? try --http-port 0)";
    }
    throw CommandError{"coordinator: " + why + hint};
  }
  const std::string base_url = "http://127.0.0.1:" + std::to_string((*coordinator)->http_port());
  f.agent.coordinator_url = base_url;
  agent::FleetOptions fo = fleet_options(f.agent);
  fo.cache_dir = (std::filesystem::path(f.data_dir) / "cache").string();
  auto fleet = agent::Fleet::start(fo);
  if (!fleet) throw CommandError{"agent: " + fleet.error().message};

  std::fprintf(stderr,
               "demo: coordinator on %s, %d simulated vehicles, one simulated day every %.1f minutes\n"
               "demo: model %s\n"
               "demo: sending about %.0f requests a minute. Send your own:\n\n"
               "  curl -s %s/v1/completions -H 'Content-Type: application/json' \\\n"
               "    -d '{\"model\": \"stories260K\", \"prompt\": \"Once upon a time\", \"max_tokens\": 64}'\n\n"
               "demo: the dashboard at %s/ (owners: %s/owner), status at %s/v1/status, metrics at %s/metrics. "
               "Ctrl-C stops.\n",
               base_url.c_str(), fo.vehicles, 1440.0 / fo.time_scale, model_path.c_str(), f.requests_per_minute,
               base_url.c_str(), base_url.c_str(), base_url.c_str(), base_url.c_str(), base_url.c_str());

  // The trickle: one client thread per request in flight, at a steady rate;
  // finished ones are joined as it goes (a thread left unjoined keeps its
  // stack), and at most kDemoClientsMax run at once.
  constexpr size_t kDemoClientsMax = 256;
  constexpr int kDemoFirstCarWaitS = 30;
  struct Client {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
  };
  std::atomic<bool> stop{false};
  std::atomic<int> ok{0}, failed{0};
  std::vector<Client> clients;
  std::thread trickle([&] {
    // The first request waits (up to kDemoFirstCarWaitS) for a car that can
    // take it: before the cars' first reports the coordinator knows none, and
    // would answer 503.
    const auto first_car_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(kDemoFirstCarWaitS);
    while (!stop.load() && std::chrono::steady_clock::now() < first_car_deadline) {
      const nlohmann::json v = nlohmann::json::parse(http_get(base_url + "/v1/vehicles", 5).body, nullptr, false);
      bool eligible = false;
      if (v.is_object() && v.contains("data") && v["data"].is_array()) {
        for (const auto& car : v["data"]) eligible = eligible || (car.is_object() && car.value("eligible", false));
      }
      if (eligible) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    uint64_t n = 0;
    const auto period = std::chrono::milliseconds(static_cast<int64_t>(60000.0 / f.requests_per_minute));
    auto next = std::chrono::steady_clock::now();
    while (!stop.load()) {
      next += period;
      const nlohmann::json body = {{"model", "stories260K"},
                                   {"prompt", kStoryPrompts[n % kStoryPrompts.size()]},
                                   {"max_tokens", 200},
                                   {"temperature", 0.8},
                                   {"seed", n}};
      ++n;
      std::erase_if(clients, [](Client& c) {
        if (!c.done->load()) return false;
        c.thread.join();
        return true;
      });
      if (clients.size() < kDemoClientsMax) {
        auto done = std::make_shared<std::atomic<bool>>(false);
        clients.push_back({std::thread([&, done, text = body.dump()] {
                             (post_json(base_url + "/v1/completions", text, kDemoRequestTimeoutS).status == 200 ? ok : failed)++;
                             done->store(true);
                           }),
                           done});
      }
      while (!stop.load() && std::chrono::steady_clock::now() < next) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
    }
  });

  int elapsed = 0;
  const int sig = wait_for_shutdown(2000, [&] {
    std::fprintf(stderr, "%s | requests ok %d, failed %d\n",
                 status_line(**fleet, (*coordinator)->status_json(), fo.utc_offset_minutes).c_str(), ok.load(),
                 failed.load());
    elapsed += 2;
    return f.seconds == 0 || elapsed < f.seconds;
  });
  if (sig != 0) std::fprintf(stderr, "demo: signal %d, stopping\n", sig);
  stop = true;
  trickle.join();
  (*fleet)->stop();      // vehicles stop; requests in flight end as the coordinator stops
  (*coordinator)->stop();
  for (auto& c : clients) c.thread.join();
  if (nats) nats->stop();
  std::fprintf(stderr, "demo: %d requests completed, %d failed\n", ok.load(), failed.load());
  if (f.seconds > 0 && ok.load() == 0) throw CommandError{"no request completed during the demo"};
}

}  // namespace

void add_demo(CLI::App& app) {
  auto f = std::make_shared<DemoFlags>();
  f->agent.vehicles = 12;
  f->agent.day_minutes = 10;
  f->agent.start = "20:00";
  f->agent.id_prefix = "car";
  CLI::App* cmd = app.add_subcommand("demo", "Run a local demo fleet: nats-server, coordinator, simulated vehicles, requests");
  add_agent_flags(cmd, &f->agent);
  cmd->add_option("-m,--model", f->model, "GGUF model to serve (default: $IDLEFLEET_MODEL or the bundled test model)");
  cmd->add_option("--http-port", f->http_port, "Coordinator HTTP port (0 picks a free one)")
      ->check(CLI::Range(0, 65535))->capture_default_str();
  cmd->add_option("--data-dir", f->data_dir, "Job store, model cache and logs")->capture_default_str();
  cmd->add_option("--rate", f->requests_per_minute, "Requests per minute the demo sends")
      ->check(CLI::Range(0.1, 6000.0))->capture_default_str();
  cmd->add_option("--seconds", f->seconds, "Stop after this many seconds (0: at Ctrl-C)")->check(CLI::Range(0, 86400 * 365));
  cmd->callback([f, cmd] {
    f->external_nats = cmd->count("--nats") > 0;
    run_demo(*f);
  });
}

}  // namespace idlefleet::cli
