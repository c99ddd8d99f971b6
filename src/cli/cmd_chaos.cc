// `idlefleet chaos`: the fleet's promises checked on real processes under
// random kills (issue 8, deliverable 3 and acceptance B).
//
// It starts nats-server, `idlefleet coordinator` and several `idlefleet
// agent --vehicles V` processes (children of this one, on loopback, with a
// fresh store under --out), and sends --jobs requests: most through the
// Batch API (a batch every few seconds), --interactive of them as streamed
// completions from four clients. While they run it follows a schedule drawn
// from --seed: --kills SIGKILLs, of which --coordinator-kills hit the
// coordinator and the rest a random agent process, each restarted after a
// short random pause, and --nats-restarts restarts of nats-server. Then it
// waits for everything to finish, stops the processes and checks:
//
//  - every batch completed with every line answered once and none failed;
//  - every answer (batch lines and interactive streams that completed) is
//    byte for byte `idlefleet run` with the same model, prompt, seed and
//    settings: the single-vehicle result, however many vehicles made it;
//  - an interactive stream cut by the coordinator's death still has its job
//    (named in the stream's first event) finished done in the job store;
//  - the job store holds no unfinished, failed or cancelled job, and no more
//    jobs than requests sent;
//  - `idlefleet ledger verify` passes on the data directory: the ledger
//    balances and every finished job is settled exactly once, no other.
//
// It writes DIR/chaos.json and exits 1 naming the first broken promise.
// docs/operations.md ("Chaos on real processes") has the command and figures.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/http_post.h"
#include "cli/model_locator.h"
#include "cli/shutdown.h"
#include "common/random.h"
#include "store/job_store.h"
#include "store/vehicle_store.h"
#include "transport/nats_server.h"
#include "transport/process.h"

namespace idlefleet::cli {

namespace {

using nlohmann::json;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr uint64_t kChaosJobsMax = 10'000;
constexpr int kChaosKillsMax = 1'000;
constexpr int kChaosAgentsMax = 16;
constexpr int kChaosVehiclesPerAgentMax = 32;
// stories260K's context is 512 tokens: room for the prompt.
constexpr int kChaosMaxTokensMax = 480;
constexpr int kChaosBatchSizeMax = 1'000;
constexpr int kInteractiveClients = 4;
constexpr long kRequestTimeoutS = 600;
constexpr long kControlTimeoutS = 30;
// A restarted process is given this long to listen again.
constexpr int64_t kStartTimeoutMs = 30'000;
constexpr int kWatchPeriodMs = 20;
constexpr auto kStatusPeriod = std::chrono::seconds(5);
constexpr auto kRetryPause = std::chrono::milliseconds(200);

const char* kChaosPrompts[] = {"Once upon a time", "The little dog", "One day, a girl named Lily",
                               "Tom and his mom went to the park", "The sun was shining and", "Sam had a red ball"};

struct ChaosFlags {
  uint64_t jobs = 500;
  uint64_t interactive = 100;
  int kills = 20;
  int coordinator_kills = 4;
  int nats_restarts = 1;
  int agents = 3;
  int vehicles_per_agent = 4;
  int max_tokens = 400;
  int batch_size = 25;
  double window_s = 40.0;
  double timeout_s = 1200.0;
  uint64_t seed = 1;
  std::string model;
  std::string out;
  bool quiet = false;
};

// One request, as sent and as it must come back.
struct Job {
  std::string custom_id;  // "job-<n>"
  std::string prompt;
  uint64_t seed = 0;
  bool interactive = false;
  // What came back.
  std::string job_id;  // the coordinator's id (batch line's request_id, stream's id)
  std::string text;
  bool answered = false;     // a whole answer arrived
  bool interrupted = false;  // an interactive stream cut by the coordinator's death
  std::string error;
};

json request_body(const ChaosFlags& f, const std::string& model, const Job& j, bool stream) {
  json body = {{"model", model},           {"prompt", j.prompt},  {"max_tokens", f.max_tokens},
               {"temperature", 0.8},        {"seed", j.seed},
               {"ignore_eos", true}};
  if (stream) body["stream"] = true;
  return body;
}

// The schedule, drawn from the seed before anything starts.
struct Action {
  double at_s = 0.0;
  enum Kind { kKillAgent, kKillCoordinator, kRestartNats } kind = kKillAgent;
  int agent = 0;
  double down_s = 0.0;  // how long the killed process stays down
};

std::vector<Action> draw_schedule(const ChaosFlags& f) {
  const uint64_t key = counter_random(f.seed, 0x4348414f53);  // "CHAOS"
  uint64_t n = 0;
  auto unit = [&] { return to_unit_double(counter_random(key, n++)); };
  std::vector<Action> actions;
  // Which kills hit the coordinator: a partial shuffle of the kill indices.
  std::vector<int> order(static_cast<size_t>(f.kills));
  for (int i = 0; i < f.kills; ++i) order[static_cast<size_t>(i)] = i;
  for (int i = 0; i < f.coordinator_kills; ++i) {
    const int j = i + static_cast<int>(unit() * (f.kills - i));
    std::swap(order[static_cast<size_t>(i)], order[static_cast<size_t>(std::min(j, f.kills - 1))]);
  }
  std::set<int> coordinator(order.begin(), order.begin() + f.coordinator_kills);
  for (int i = 0; i < f.kills; ++i) {
    Action a;
    a.at_s = f.window_s * (0.05 + 0.9 * unit());
    a.kind = coordinator.count(i) != 0 ? Action::kKillCoordinator : Action::kKillAgent;
    a.agent = static_cast<int>(unit() * f.agents) % f.agents;
    a.down_s = 0.3 + 2.7 * unit();
    actions.push_back(a);
  }
  for (int i = 0; i < f.nats_restarts; ++i) {
    Action a;
    a.at_s = f.window_s * (0.1 + 0.8 * unit());
    a.kind = Action::kRestartNats;
    actions.push_back(a);
  }
  std::stable_sort(actions.begin(), actions.end(), [](const Action& a, const Action& b) { return a.at_s < b.at_s; });
  return actions;
}

std::string self_path() {
  std::error_code ec;
  const fs::path p = fs::read_symlink("/proc/self/exe", ec);
  if (ec) throw CommandError{"chaos: cannot find this program's path (/proc/self/exe)"};
  return p.string();
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string tail(const std::string& s, size_t n) { return s.size() > n ? s.substr(s.size() - n) : s; }

// The children, restarted in place. Spawned from the main thread only: a
// child dies with the thread that spawned it (transport/process.h).
class Cluster {
 public:
  Cluster(const ChaosFlags& f, std::string model_path, fs::path dir) : f_(f), model_path_(std::move(model_path)), dir_(std::move(dir)) {}

  void start() {
    transport::NatsServerOptions n;
    n.log_path = (dir_ / "nats-server.log").string();
    auto nats = transport::NatsServer::start(n);
    if (!nats) throw CommandError{"chaos: " + nats.error().message + " (install the nats-server package)"};
    nats_ = std::move(*nats);
    auto port = transport::free_loopback_port();
    if (!port) throw CommandError{"chaos: no free loopback port: " + port.error().message};
    http_port_ = *port;
    start_coordinator();
    agents_.resize(static_cast<size_t>(f_.agents));
    for (int i = 0; i < f_.agents; ++i) start_agent(i);
  }

  std::string base_url() const { return "http://127.0.0.1:" + std::to_string(http_port_); }

  void start_coordinator() {
    transport::ProcessOptions o;
    o.program = self_;
    o.args = {"coordinator", "--nats", nats_->url(), "--http-port", std::to_string(http_port_), "--data-dir",
              (dir_ / "data").string(), "--model", "stories=" + model_path_, "--lease-ms", "2000"};
    o.stdout_path = o.stderr_path = (dir_ / "coordinator.log").string();
    auto p = transport::Process::spawn(o);
    if (!p) throw CommandError{"chaos: coordinator: " + p.error().message};
    coordinator_ = std::make_unique<transport::Process>(std::move(*p));
    if (!transport::wait_for_tcp("127.0.0.1", http_port_, kStartTimeoutMs)) {
      throw CommandError{"chaos: the coordinator did not listen within 30 s; its log ends:\n" +
                         tail(read_file(dir_ / "coordinator.log"), 3000)};
    }
  }

  void start_agent(int i) {
    transport::ProcessOptions o;
    o.program = self_;
    const std::string name = "agent" + std::to_string(i);
    // 20:00 on the simulated clock: the cars are home and plugged in.
    o.args = {"agent", "--vehicles", std::to_string(f_.vehicles_per_agent), "--id-prefix", "chaos" + std::to_string(i),
              "--seed", std::to_string(f_.seed * 131 + static_cast<uint64_t>(i)), "--nats", nats_->url(),
              "--coordinator", base_url(), "--start", "20:00", "--cache-dir", (dir_ / name).string(),
              "--target-soc", "50", "--plug-in-probability", "1", "--status-every", "0"};
    o.stdout_path = o.stderr_path = (dir_ / (name + ".log")).string();
    auto p = transport::Process::spawn(o);
    if (!p) throw CommandError{"chaos: " + name + ": " + p.error().message};
    agents_[static_cast<size_t>(i)] = std::make_unique<transport::Process>(std::move(*p));
  }

  void kill_coordinator() {
    coordinator_->signal(SIGKILL);
    (void)coordinator_->wait(10'000);
  }
  void kill_agent(int i) {
    agents_[static_cast<size_t>(i)]->signal(SIGKILL);
    (void)agents_[static_cast<size_t>(i)]->wait(10'000);
  }
  void restart_nats() {
    if (auto st = nats_->restart(); !st) throw CommandError{"chaos: nats-server did not come back: " + st.error().message};
  }

  // A child that died on its own (not killed by us) is a failure.
  std::string crashed() {
    if (coordinator_ && !coordinator_->running()) return "the coordinator exited by itself (see coordinator.log)";
    for (size_t i = 0; i < agents_.size(); ++i) {
      if (agents_[i] && !agents_[i]->running()) return "agent" + std::to_string(i) + " exited by itself";
    }
    return "";
  }

  // Graceful stops, agents first, so that the coordinator writes its last state.
  void stop() {
    for (auto& a : agents_) {
      if (a) a->stop(5000);
    }
    if (coordinator_) coordinator_->stop(10'000);
    if (nats_) nats_->stop();
  }

 private:
  const ChaosFlags& f_;
  std::string model_path_;
  fs::path dir_;
  std::string self_ = self_path();
  std::unique_ptr<transport::NatsServer> nats_;
  uint16_t http_port_ = 0;
  std::unique_ptr<transport::Process> coordinator_;
  std::vector<std::unique_ptr<transport::Process>> agents_;
};

// The text of a completions stream, the job id of its first event, and
// whether it ended with [DONE].
struct Stream {
  std::string id, text;
  bool done = false;
};

Stream parse_stream(const std::string& body) {
  Stream s;
  size_t pos = 0;
  while (pos < body.size()) {
    size_t end = body.find("\n\n", pos);
    if (end == std::string::npos) break;  // an event cut short
    const std::string event = body.substr(pos, end - pos);
    pos = end + 2;
    if (event.rfind("data: ", 0) != 0) continue;
    const std::string data = event.substr(6);
    if (data == "[DONE]") {
      s.done = true;
      continue;
    }
    const json j = json::parse(data, nullptr, false);
    if (!j.is_object()) continue;
    if (s.id.empty() && j.contains("id") && j["id"].is_string()) s.id = j["id"].get<std::string>();
    if (j.contains("choices") && j["choices"].is_array() && !j["choices"].empty() && j["choices"][0].is_object()) {
      const json& c = j["choices"][0];
      if (c.contains("text") && c["text"].is_string()) s.text += c["text"].get<std::string>();
    }
  }
  return s;
}

class Run {
 public:
  Run(const ChaosFlags& f, std::string model_path)
      : f_(f), model_path_(std::move(model_path)), dir_(fs::path(f.out)), cluster_(f, model_path_, dir_) {}

  json go() {
    make_jobs();
    const std::vector<Action> schedule = draw_schedule(f_);
    cluster_.start();
    url_ = cluster_.base_url();
    if (!f_.quiet) {
      std::fprintf(stderr,
                   "chaos: %llu jobs (%llu interactive), %d kills (%d of the coordinator), %d nats-server restart%s "
                   "over %.0f s; %d agents x %d vehicles on %s; seed %llu\n",
                   static_cast<unsigned long long>(f_.jobs), static_cast<unsigned long long>(f_.interactive), f_.kills,
                   f_.coordinator_kills, f_.nats_restarts, f_.nats_restarts == 1 ? "" : "s", f_.window_s, f_.agents,
                   f_.vehicles_per_agent, url_.c_str(), static_cast<unsigned long long>(f_.seed));
    }
    wait_for_vehicles();
    t0_ = Clock::now();
    std::thread batches([this] { guard([this] { submit_batches(); }); });
    std::vector<std::thread> clients;
    for (int c = 0; c < kInteractiveClients; ++c) clients.emplace_back([this] { guard([this] { interactive_client(); }); });

    // The main thread follows the schedule (children are spawned from it).
    size_t next = 0;
    int kills = 0;
    std::vector<std::pair<Clock::time_point, Action>> down;  // killed, to start again
    std::vector<Action> due;  // due, waiting for their process to be up
    auto last_status = Clock::now();
    const auto deadline = t0_ + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(f_.timeout_s));
    const int signal = wait_for_shutdown(kWatchPeriodMs, [&] {
      const double t = seconds();
      // Due actions, oldest first; a kill whose process is still down from
      // an earlier kill goes to another agent that is up, or waits.
      while (next < schedule.size() && schedule[next].at_s <= t) due.push_back(schedule[next++]);
      for (auto it = due.begin(); it != due.end();) {
        Action a = *it;
        if (a.kind == Action::kRestartNats) {
          note("restarting nats-server");
          cluster_.restart_nats();
          ++nats_restarts_;
          it = due.erase(it);
          continue;
        }
        const bool is_coordinator = a.kind == Action::kKillCoordinator;
        if (!is_coordinator) {
          for (int k = 0; k < f_.agents && agent_down(a.agent, down); ++k) a.agent = (a.agent + 1) % f_.agents;
        }
        if (is_coordinator ? coordinator_down_ : agent_down(a.agent, down)) {
          ++it;
          continue;
        }
        it = due.erase(it);
        ++kills;
        note(std::string("kill ") + std::to_string(kills) + ": SIGKILL " +
             (is_coordinator ? std::string("the coordinator") : "agent" + std::to_string(a.agent)) + ", down " +
             std::to_string(static_cast<int>(a.down_s * 1000)) + " ms");
        if (is_coordinator) {
          cluster_.kill_coordinator();
          coordinator_down_ = true;
          ++coordinator_kills_;
        } else {
          cluster_.kill_agent(a.agent);
          ++agent_kills_;
        }
        down.push_back({Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(a.down_s)), a});
      }
      for (auto it = down.begin(); it != down.end();) {
        if (Clock::now() < it->first) {
          ++it;
          continue;
        }
        if (it->second.kind == Action::kKillCoordinator) {
          cluster_.start_coordinator();
          coordinator_down_ = false;
        } else {
          cluster_.start_agent(it->second.agent);
        }
        it = down.erase(it);
      }
      if (down.empty()) {
        if (const std::string c = cluster_.crashed(); !c.empty()) return fail(c), false;
      }
      if (!f_.quiet && Clock::now() - last_status >= kStatusPeriod) {
        last_status = Clock::now();
        std::fprintf(stderr, "chaos: %4.0f s | kills %d/%d | batch lines answered %llu/%llu | interactive %llu/%llu\n",
                     t, kills, f_.kills, static_cast<unsigned long long>(batch_answered_.load()),
                     static_cast<unsigned long long>(f_.jobs - f_.interactive),
                     static_cast<unsigned long long>(interactive_finished_.load()),
                     static_cast<unsigned long long>(f_.interactive));
      }
      if (failed()) return false;
      if (Clock::now() > deadline) return fail("not finished within --timeout-s"), false;
      const bool schedule_done = next == schedule.size() && due.empty() && down.empty();
      return !(schedule_done && batches_done_.load() && interactive_finished_.load() == f_.interactive);
    });
    stop_ = true;
    batches.join();
    for (std::thread& c : clients) c.join();
    const double wall_s = seconds();
    cluster_.stop();
    if (signal != 0) throw CommandError{"chaos: interrupted"};
    note("all processes stopped after " + std::to_string(static_cast<int>(wall_s)) + " s; checking");

    json report = {{"jobs", f_.jobs},
                   {"interactive", f_.interactive},
                   {"kills", {{"agents", agent_kills_}, {"coordinator", coordinator_kills_}}},
                   {"nats_restarts", nats_restarts_},
                   {"agents", f_.agents},
                   {"vehicles_per_agent", f_.vehicles_per_agent},
                   {"max_tokens", f_.max_tokens},
                   {"seed", f_.seed},
                   {"wall_seconds", wall_s}};
    if (!failed()) check(report);
    report["ok"] = !failed();
    if (failed()) report["failure"] = failure();
    return report;
  }

 private:
  void make_jobs() {
    const uint64_t key = counter_random(f_.seed, 0x4a4f4253);  // "JOBS"
    jobs_.resize(f_.jobs);
    for (uint64_t n = 0; n < f_.jobs; ++n) {
      Job& j = jobs_[n];
      j.custom_id = "job-" + std::to_string(n);
      j.prompt = kChaosPrompts[counter_random(key, 2 * n) % (sizeof kChaosPrompts / sizeof kChaosPrompts[0])];
      j.seed = counter_random(key, 2 * n + 1) % 1'000'000;
      // Interactive requests are spread through the run: every k-th job.
      j.interactive = f_.interactive > 0 && n * f_.interactive / f_.jobs != (n + 1) * f_.interactive / f_.jobs;
    }
    for (uint64_t n = 0; n < f_.jobs; ++n) {
      (jobs_[n].interactive ? interactive_ : batch_).push_back(n);
      by_custom_id_[jobs_[n].custom_id] = n;
    }
  }

  double seconds() const { return std::chrono::duration<double>(Clock::now() - t0_).count(); }

  bool agent_down(int agent, const std::vector<std::pair<Clock::time_point, Action>>& down) const {
    for (const auto& d : down) {
      if (d.second.kind == Action::kKillAgent && d.second.agent == agent) return true;
    }
    return false;
  }

  void note(const std::string& line) {
    if (!f_.quiet) std::fprintf(stderr, "chaos: %4.0f s | %s\n", seconds(), line.c_str());
  }

  void fail(const std::string& why) {
    std::lock_guard<std::mutex> lock(mu_);
    if (failure_.empty()) failure_ = why;
  }
  bool failed() {
    std::lock_guard<std::mutex> lock(mu_);
    return !failure_.empty();
  }
  std::string failure() {
    std::lock_guard<std::mutex> lock(mu_);
    return failure_;
  }

  template <class F>
  void guard(F body) {
    try {
      body();
    } catch (const CommandError& e) {
      fail(e.message);
    } catch (const std::exception& e) {
      fail(std::string("chaos: ") + e.what());
    }
  }

  // Waits until the coordinator has seen every vehicle say hello.
  void wait_for_vehicles() {
    const int want = f_.agents * f_.vehicles_per_agent;
    const auto deadline = Clock::now() + std::chrono::seconds(60);
    while (Clock::now() < deadline) {
      const HttpPostResult r = http_get(url_ + "/v1/vehicles", kControlTimeoutS);
      const json j = json::parse(r.body, nullptr, false);
      if (r.status == 200 && j.is_object() && j.contains("data") && j["data"].is_array() &&
          static_cast<int>(j["data"].size()) >= want) {
        return;
      }
      std::this_thread::sleep_for(kRetryPause);
    }
    throw CommandError{"chaos: the vehicles did not all connect within 60 s (see agent*.log)"};
  }

  // POSTs with retries while the coordinator is down or has no vehicle yet
  // (503: a restarted coordinator waits for the cars' hellos; 429). Only
  // what created nothing is retried: a refused connection (nothing reached
  // the server) and those two answers.
  HttpPostResult post_retrying(const std::string& path, const std::string& body) {
    for (;;) {
      HttpPostResult r = post_json(url_ + path, body, kRequestTimeoutS);
      const bool retry = r.refused || r.status == 503 || r.status == 429;
      if (!retry || stop_) return r;
      std::this_thread::sleep_for(kRetryPause);
    }
  }

  HttpPostResult get_retrying(const std::string& path) {
    for (;;) {
      HttpPostResult r = http_get(url_ + path, kControlTimeoutS);
      if (r.status == 200 || stop_) return r;
      std::this_thread::sleep_for(kRetryPause);
    }
  }

  // The batches, one every window / count seconds; then waits for each to end.
  void submit_batches() {
    const size_t per = static_cast<size_t>(f_.batch_size);
    const size_t count = (batch_.size() + per - 1) / per;
    std::vector<std::string> ids;
    for (size_t b = 0; b < count && !stop_; ++b) {
      const double at = count > 1 ? f_.window_s * 0.8 * static_cast<double>(b) / static_cast<double>(count - 1) : 0.0;
      while (seconds() < at && !stop_) std::this_thread::sleep_for(std::chrono::milliseconds(20));
      std::string file;
      for (size_t k = b * per; k < std::min(batch_.size(), (b + 1) * per); ++k) {
        const Job& j = jobs_[batch_[k]];
        file += json{{"custom_id", j.custom_id}, {"method", "POST"}, {"url", "/v1/completions"},
                     {"body", request_body(f_, "stories", j, false)}}
                    .dump();
        file += '\n';
      }
      ids.push_back(submit_batch(file, b));
    }
    std::set<std::string> pending(ids.begin(), ids.end());
    while (!pending.empty() && !stop_) {
      for (auto it = pending.begin(); it != pending.end() && !stop_;) {
        const HttpPostResult r = get_retrying("/v1/batches/" + *it);
        const json j = json::parse(r.body, nullptr, false);
        const std::string status = j.is_object() ? j.value("status", "") : "";
        if (status == "completed") {
          collect_output(j);
          it = pending.erase(it);
        } else if (status == "failed" || status == "expired" || status == "cancelled") {
          throw CommandError{"chaos: batch " + *it + " ended " + status + ": " + r.body.substr(0, 500)};
        } else {
          ++it;
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(250));
    }
    batches_done_ = true;
  }

  // Uploads the file and creates the batch, surviving the coordinator's
  // death in between: a create whose answer was lost is looked for among the
  // batches before being sent again, so that no batch runs twice.
  std::string submit_batch(const std::string& file, size_t b) {
    const std::string name = "chaos-" + std::to_string(b) + ".jsonl";
    for (;;) {
      if (stop_) return "";
      const HttpPostResult up = post_file(url_ + "/v1/files", "batch", name, file, kRequestTimeoutS);
      const json uploaded = json::parse(up.body, nullptr, false);
      if (up.status != 200 || !uploaded.is_object() || !uploaded.contains("id") || !uploaded["id"].is_string()) {
        if (up.status >= 400) throw CommandError{"chaos: uploading " + name + " was refused: " + up.body.substr(0, 300)};
        std::this_thread::sleep_for(kRetryPause);
        continue;  // the coordinator died: a second upload does no harm
      }
      const std::string file_id = uploaded["id"].get<std::string>();
      const std::string create =
          json{{"input_file_id", file_id}, {"endpoint", "/v1/completions"}, {"completion_window", "24h"}}.dump();
      for (;;) {
        if (stop_) return "";
        const HttpPostResult c = post_retrying("/v1/batches", create);
        const json created = json::parse(c.body, nullptr, false);
        if (c.status == 200 && created.is_object() && created.contains("id") && created["id"].is_string()) {
          return created["id"].get<std::string>();
        }
        if (c.status >= 400) throw CommandError{"chaos: creating batch " + name + " was refused: " + c.body.substr(0, 300)};
        // The answer was lost: was it created?
        const HttpPostResult list = get_retrying("/v1/batches?limit=100");
        const json l = json::parse(list.body, nullptr, false);
        if (l.is_object() && l.contains("data") && l["data"].is_array()) {
          for (const json& b2 : l["data"]) {
            if (b2.is_object() && b2.value("input_file_id", "") == file_id && b2.contains("id")) {
              return b2["id"].get<std::string>();
            }
          }
        }
      }
    }
  }

  void collect_output(const json& batch) {
    const json counts = batch.value("request_counts", json::object());
    if (counts.value("failed", 0) != 0) {
      throw CommandError{"chaos: batch " + batch.value("id", "") + " has failed lines: " + counts.dump()};
    }
    const std::string out_id = batch.value("output_file_id", "");
    if (out_id.empty()) throw CommandError{"chaos: batch " + batch.value("id", "") + " completed without an output file"};
    const HttpPostResult r = get_retrying("/v1/files/" + out_id + "/content");
    std::istringstream lines(r.body);
    std::lock_guard<std::mutex> lock(mu_);
    for (std::string line; std::getline(lines, line);) {
      if (line.empty()) continue;
      const json l = json::parse(line, nullptr, false);
      const std::string custom_id = l.is_object() ? l.value("custom_id", "") : "";
      auto it = by_custom_id_.find(custom_id);
      if (it == by_custom_id_.end()) {
        failure_ = failure_.empty() ? "chaos: an output line names no request: " + line.substr(0, 300) : failure_;
        continue;
      }
      Job& j = jobs_[it->second];
      if (j.answered) {
        failure_ = failure_.empty() ? "chaos: " + custom_id + " was answered twice" : failure_;
        continue;
      }
      const json& resp = l.contains("response") ? l["response"] : json();
      if (!resp.is_object() || resp.value("status_code", 0) != 200 || !resp.contains("body") ||
          !resp["body"].is_object()) {
        failure_ = failure_.empty() ? "chaos: " + custom_id + " failed: " + line.substr(0, 300) : failure_;
        continue;
      }
      j.job_id = resp.value("request_id", "");
      const json& body = resp["body"];
      if (body.contains("choices") && body["choices"].is_array() && !body["choices"].empty()) {
        j.text = body["choices"][0].value("text", "");
      }
      j.answered = true;
      ++batch_answered_;
    }
  }

  void interactive_client() {
    for (;;) {
      const uint64_t k = next_interactive_++;
      if (k >= interactive_.size() || stop_) return;
      // Evenly through the window.
      const double at = f_.window_s * 0.9 * static_cast<double>(k) / static_cast<double>(interactive_.size());
      while (seconds() < at && !stop_) std::this_thread::sleep_for(std::chrono::milliseconds(20));
      Job& j = jobs_[interactive_[k]];
      const HttpPostResult r = post_retrying("/v1/completions", request_body(f_, "stories", j, true).dump());
      const Stream s = parse_stream(r.body);
      {
        std::lock_guard<std::mutex> lock(mu_);
        j.job_id = s.id;
        if (r.status == 200 && s.done) {
          j.text = s.text;
          j.answered = true;
        } else if (r.status == 0) {
          j.interrupted = true;  // the coordinator died under it
        } else {
          j.error = "HTTP " + std::to_string(r.status) + ": " + r.body.substr(0, 300);
          if (failure_.empty()) failure_ = "chaos: " + j.custom_id + " was refused: " + j.error;
        }
      }
      ++interactive_finished_;
    }
  }

  // The single-vehicle result: `idlefleet run` with the same settings.
  std::string reference(const Job& j) {
    const fs::path out = dir_ / "reference" / (j.custom_id + ".txt");
    transport::ProcessOptions o;
    o.program = self_path();
    o.args = {"run", "-q", "--no-echo", "-t", "1", "-m", model_path_, "-p", j.prompt, "-n",
              std::to_string(f_.max_tokens), "--temp", "0.8", "--seed", std::to_string(j.seed), "--ignore-eos"};
    o.stdout_path = out.string();
    o.stderr_path = (dir_ / "reference" / (j.custom_id + ".stderr")).string();
    auto p = transport::Process::spawn(o);
    if (!p) throw CommandError{"chaos: idlefleet run: " + p.error().message};
    const std::optional<int> rc = p->wait(120'000);
    if (rc != 0) throw CommandError{"chaos: idlefleet run failed for " + j.custom_id + ": " + read_file(o.stderr_path)};
    std::string text = read_file(out);
    if (!text.empty() && text.back() == '\n') text.pop_back();
    return text;
  }

  void check(json& report) {
    uint64_t answered = 0, interrupted = 0, identical = 0;
    std::set<std::string> job_ids;
    for (const Job& j : jobs_) {
      if (!j.answered && !j.interrupted) return fail("chaos: " + j.custom_id + " was never answered");
      answered += j.answered;
      interrupted += j.interrupted;
      if (!j.job_id.empty() && !job_ids.insert(j.job_id).second) {
        return fail("chaos: two requests ran as one job " + j.job_id);
      }
    }
    // Answers against the single-vehicle result, two `idlefleet run`s at a time.
    std::error_code ec;
    fs::create_directories(dir_ / "reference", ec);
    std::atomic<size_t> next{0};
    std::vector<std::thread> workers;
    for (int w = 0; w < 2; ++w) {
      workers.emplace_back([&] {
        guard([&] {
          for (size_t k = next++; k < jobs_.size() && !failed(); k = next++) {
            const Job& j = jobs_[k];
            if (!j.answered) continue;
            const std::string want = reference(j);
            if (j.text != want) {
              fail("chaos: " + j.custom_id + " (prompt '" + j.prompt + "', seed " + std::to_string(j.seed) +
                   ") differs from the single-vehicle run:\n  fleet: " + j.text.substr(0, 200) +
                   "\n  alone: " + want.substr(0, 200));
            }
          }
        });
      });
    }
    for (std::thread& w : workers) w.join();
    if (failed()) return;
    identical = answered;
    note("every answer equals the single-vehicle run (" + std::to_string(identical) + ")");

    // The job store: every job finished done, none twice, none left over.
    auto store = store::JobStore::open((dir_ / "data" / "jobs.sqlite3").string());
    if (!store) return fail("chaos: the job store: " + store.error().message);
    uint64_t interrupted_done = 0;
    for (const Job& j : jobs_) {
      if (j.job_id.empty()) continue;
      auto s = (*store)->get(j.job_id);
      if (!s || !s->has_value()) {
        return fail("chaos: job " + j.job_id + " (" + j.custom_id + ", " +
                    (j.interrupted ? "a stream cut by the coordinator's death" : "answered") + ") is not in the store");
      }
      if ((*s)->state != "done") {
        return fail("chaos: job " + j.job_id + " (" + j.custom_id + ") ended " + (*s)->state + ": " +
                    (*s)->finish_reason);
      }
      interrupted_done += j.interrupted;
    }
    auto counts = (*store)->count_by_state();
    if (!counts) return fail("chaos: the job store: " + counts.error().message);
    uint64_t stored = 0;
    for (const auto& [state, n] : *counts) {
      stored += n;
      if (state != "done" && n != 0) {
        return fail("chaos: the job store holds " + std::to_string(n) + " " + state + " job(s)");
      }
    }
    // Streams cut before their first event: their job may exist (and must
    // then be done, as checked above) but its id is unknown.
    uint64_t unnamed = 0;
    for (const Job& j : jobs_) unnamed += j.interrupted && j.job_id.empty();
    if (stored < job_ids.size() || stored > job_ids.size() + unnamed) {
      return fail("chaos: the job store holds " + std::to_string(stored) + " jobs for " +
                  std::to_string(job_ids.size()) + " named requests and " + std::to_string(unnamed) + " unnamed");
    }
    note("the job store: " + std::to_string(stored) + " jobs, every one done");

    // How much the kills moved work: jobs whose tokens came from several
    // attempts (each attempt's vehicle signs a receipt).
    auto vehicles = store::VehicleStore::open((dir_ / "data" / "vehicles.sqlite3").string());
    if (!vehicles) return fail("chaos: the vehicle store: " + vehicles.error().message);
    auto keys = (*vehicles)->receipt_keys();
    if (!keys) return fail("chaos: the vehicle store: " + keys.error().message);
    std::map<std::string, uint64_t> attempts;
    for (const auto& k : *keys) ++attempts[k.job_id];
    uint64_t resumed = 0;
    for (const auto& [id, n] : attempts) resumed += n >= 2;
    note(std::to_string(resumed) + " jobs resumed on another vehicle (" + std::to_string(keys->size()) + " receipts)");

    // The money.
    transport::ProcessOptions o;
    o.program = self_path();
    o.args = {"ledger", "verify", "--data-dir", (dir_ / "data").string()};
    o.stdout_path = o.stderr_path = (dir_ / "ledger-verify.txt").string();
    fs::remove(o.stdout_path, ec);  // the log is appended to
    auto p = transport::Process::spawn(o);
    if (!p) return fail("chaos: idlefleet ledger verify: " + p.error().message);
    const std::optional<int> rc = p->wait(300'000);
    std::string verify = read_file(dir_ / "ledger-verify.txt");
    while (!verify.empty() && verify.back() == '\n') verify.pop_back();
    if (rc != 0) return fail("chaos: idlefleet ledger verify failed: " + verify);
    note(verify);

    report["answered"] = answered;
    report["identical_to_single_vehicle"] = identical;
    report["interrupted_streams"] = interrupted;
    report["interrupted_streams_done_in_store"] = interrupted_done;
    report["stored_jobs"] = stored;
    report["jobs_resumed_on_another_vehicle"] = resumed;
    report["receipts"] = keys->size();
    report["ledger_verify"] = verify;
  }

  const ChaosFlags& f_;
  std::string model_path_;
  fs::path dir_;
  Cluster cluster_;
  std::string url_;
  Clock::time_point t0_ = Clock::now();
  std::vector<Job> jobs_;
  std::vector<uint64_t> batch_, interactive_;  // indices into jobs_
  std::map<std::string, uint64_t> by_custom_id_;
  std::atomic<bool> stop_{false}, batches_done_{false};
  std::atomic<uint64_t> next_interactive_{0}, interactive_finished_{0}, batch_answered_{0};
  bool coordinator_down_ = false;
  int agent_kills_ = 0, coordinator_kills_ = 0, nats_restarts_ = 0;
  std::mutex mu_;  // guards jobs_' answers and failure_
  std::string failure_;
};

void run_chaos(const ChaosFlags& f) {
  if (f.interactive > f.jobs) throw CommandError{"--interactive must not exceed --jobs"};
  if (f.coordinator_kills > f.kills) throw CommandError{"--coordinator-kills must not exceed --kills"};
  std::error_code ec;
  fs::remove_all(fs::path(f.out) / "data", ec);  // a fresh store: nothing left from an earlier run
  fs::remove_all(fs::path(f.out) / "reference", ec);
  fs::create_directories(f.out, ec);
  if (ec || !fs::is_directory(f.out)) throw CommandError{"--out " + f.out + ": cannot create the directory"};
  const std::string model_path = locate_model(f.model, !f.quiet);
  block_shutdown_signals();
  Run run(f, model_path);
  const json report = run.go();
  const fs::path path = fs::path(f.out) / "chaos.json";
  {
    std::ofstream file(path, std::ios::trunc);
    file << report.dump(2) << "\n";
    if (!file) throw CommandError{"cannot write " + path.string()};
  }
  if (!report.value("ok", false)) throw CommandError{report.value("failure", std::string("chaos: failed"))};
  std::printf("chaos: %llu jobs (%llu interactive) through %d agent kills, %d coordinator kills and %d nats-server "
              "restart%s in %.0f s\n",
              static_cast<unsigned long long>(f.jobs), static_cast<unsigned long long>(f.interactive),
              report["kills"].value("agents", 0), report["kills"].value("coordinator", 0),
              report.value("nats_restarts", 0), report.value("nats_restarts", 0) == 1 ? "" : "s",
              report.value("wall_seconds", 0.0));
  std::printf("  answered %llu, each identical to the single-vehicle run; %llu streams cut by the coordinator's "
              "death, their jobs done\n",
              report.value("answered", 0ull), report.value("interrupted_streams", 0ull));
  std::printf("  job store: %llu jobs, all done, none twice; %llu resumed on another vehicle\n",
              report.value("stored_jobs", 0ull), report.value("jobs_resumed_on_another_vehicle", 0ull));
  std::printf("  %s\n", report.value("ledger_verify", std::string()).c_str());
  std::printf("  wrote %s\n", path.c_str());
}

}  // namespace

void add_chaos(CLI::App& app) {
  auto f = std::make_shared<ChaosFlags>();
  CLI::App* cmd = app.add_subcommand(
      "chaos", "Run jobs on real processes (nats-server, coordinator, agents) while killing them at random; then "
               "check that no job was lost, none ran or was paid twice, and every answer is the single-vehicle one");
  cmd->add_option("--jobs", f->jobs, "Requests in all")->capture_default_str()->check(CLI::Range(uint64_t{1}, kChaosJobsMax));
  cmd->add_option("--interactive", f->interactive, "Of which streamed completions; the rest go through the Batch API")
      ->capture_default_str()
      ->check(CLI::Range(uint64_t{0}, kChaosJobsMax));
  cmd->add_option("--kills", f->kills, "SIGKILLs in all")->capture_default_str()->check(CLI::Range(0, kChaosKillsMax));
  cmd->add_option("--coordinator-kills", f->coordinator_kills, "Of which of the coordinator; the rest of agents")
      ->capture_default_str()
      ->check(CLI::Range(0, kChaosKillsMax));
  cmd->add_option("--nats-restarts", f->nats_restarts, "Restarts of nats-server")
      ->capture_default_str()
      ->check(CLI::Range(0, 100));
  cmd->add_option("--agents", f->agents, "Agent processes")->capture_default_str()->check(CLI::Range(1, kChaosAgentsMax));
  cmd->add_option("--vehicles-per-agent", f->vehicles_per_agent, "Simulated vehicles in each agent process")
      ->capture_default_str()
      ->check(CLI::Range(1, kChaosVehiclesPerAgentMax));
  cmd->add_option("--max-tokens", f->max_tokens, "max_tokens of every request")
      ->capture_default_str()
      ->check(CLI::Range(1, kChaosMaxTokensMax));
  cmd->add_option("--batch-size", f->batch_size, "Requests per batch")
      ->capture_default_str()
      ->check(CLI::Range(1, kChaosBatchSizeMax));
  cmd->add_option("--window-s", f->window_s, "Seconds over which jobs are sent and kills happen")
      ->capture_default_str()
      ->check(CLI::Range(2.0, 86400.0));
  cmd->add_option("--timeout-s", f->timeout_s, "Give up (and fail) after this many seconds")
      ->capture_default_str()
      ->check(CLI::Range(10.0, 86400.0));
  cmd->add_option("--seed", f->seed, "Seed of the requests and of the kill schedule")->capture_default_str();
  cmd->add_option("-m,--model", f->model, "GGUF model to serve (default: the bundled test model)");
  cmd->add_option("--out", f->out, "Directory for chaos.json, the store, the logs and the reference runs")->required();
  cmd->add_flag("--quiet", f->quiet, "No progress lines");
  cmd->callback([f] { run_chaos(*f); });
}

}  // namespace idlefleet::cli
