#include "transport/nats_server.h"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <csignal>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>
#include <vector>

#include "transport/deadline.h"

namespace idlefleet::transport {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr const char* kDefaultBinaryName = "nats-server";
constexpr const char* kDefaultBinaryPath = "/usr/sbin/nats-server";
// A port chosen by free_loopback_port can be taken before the server binds
// it; so many fresh ports are tried before giving up.
constexpr int kFreePortAttemptsMax = 3;
// While the server starts: how often to look for its ports file, and the
// longest single connection probe.
constexpr int64_t kStartPollMs = 5;
constexpr int64_t kStartProbeMs = 50;
// How much of the log an error message quotes.
constexpr size_t kLogTailBytes = 2000;

Result<std::string> resolve_binary(const std::string& binary) {
  if (!binary.empty()) {
    auto path = find_program(binary);
    if (!path) return Unexpected(ErrorCode::kNotFound, "nats-server binary: " + path.error().message);
    return path;
  }
  if (auto path = find_program(kDefaultBinaryName)) return path;
  if (auto path = find_program(kDefaultBinaryPath)) return path;
  return Unexpected(ErrorCode::kNotFound,
                    std::string("nats-server is not installed: '") + kDefaultBinaryName +
                        "' is not on PATH and " + kDefaultBinaryPath +
                        " does not exist (Debian: apt-get install nats-server)");
}

Result<std::string> make_private_dir() {
  const char* tmp = std::getenv("TMPDIR");
  std::string pattern = std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/idlefleet-nats-XXXXXX";
  std::vector<char> buffer(pattern.begin(), pattern.end());
  buffer.push_back('\0');
  if (::mkdtemp(buffer.data()) == nullptr) {
    return Unexpected(ErrorCode::kIo, "cannot create a directory like '" + pattern + "': " + std::strerror(errno));
  }
  return std::string(buffer.data());
}

// nats-server writes <program>_<pid>.ports into --ports_file_dir once its
// listeners are up. Finding our pid's file tells us that the process
// listening on the port is ours, not one that took the port first.
bool ports_file_exists(const std::string& dir, int pid) {
  std::string suffix = std::to_string(pid);  // built up in steps: GCC 12 -Wrestrict misfires on "_" + string
  suffix.insert(suffix.begin(), '_');
  suffix += ".ports";
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    std::string name = entry.path().filename().string();
    if (name.size() > suffix.size() && name.ends_with(suffix)) return true;
  }
  return false;
}

}  // namespace

Result<std::unique_ptr<NatsServer>> NatsServer::start(NatsServerOptions options) {
  if (options.host.empty()) return Unexpected(ErrorCode::kInvalidArgument, "nats-server: empty host");
  if (options.start_timeout_ms <= 0) {
    return Unexpected(ErrorCode::kInvalidArgument, "nats-server: start_timeout_ms must be positive");
  }
  if (options.max_payload_bytes == 0 || options.max_payload_bytes > kNatsPayloadBytesMax) {
    return Unexpected(ErrorCode::kOutOfRange, "nats-server: max_payload_bytes " +
                                                  std::to_string(options.max_payload_bytes) + " is not in 1.." +
                                                  std::to_string(kNatsPayloadBytesMax));
  }
  if (options.cluster_port != 0) {
    const std::string& name = options.cluster_name;
    const bool plain = !name.empty() && name.size() <= 64 &&
                       std::all_of(name.begin(), name.end(), [](char c) {
                         return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '-' || c == '_';
                       });
    if (!plain) {
      return Unexpected(ErrorCode::kInvalidArgument,
                        "nats-server: cluster name '" + name.substr(0, 64) + "' must be 1 to 64 of [A-Za-z0-9_-]");
    }
  }
  auto binary = resolve_binary(options.binary);
  if (!binary) return Unexpected(binary.error());
  auto dir = make_private_dir();
  if (!dir) return Unexpected(dir.error());

  // From here on the destructor removes the directory on any early return.
  std::unique_ptr<NatsServer> server(new NatsServer());
  server->options_ = std::move(options);
  server->binary_ = std::move(*binary);
  server->work_dir_ = std::move(*dir);
  const NatsServerOptions& o = server->options_;
  server->log_path_ = o.log_path.empty() ? server->work_dir_ + "/nats-server.log" : o.log_path;
  if (!o.config_path.empty()) {
    server->config_path_ = o.config_path;
  } else {
    // There is no command-line flag for max_payload, so write a config file.
    server->config_path_ = server->work_dir_ + "/nats-server.conf";
    std::ofstream config(server->config_path_);
    config << "max_payload: " << o.max_payload_bytes << "\n";
    if (o.cluster_port != 0) {
      config << "cluster {\n  name: " << o.cluster_name << "\n  listen: " << o.host << ":" << o.cluster_port
             << "\n  routes: [";
      for (size_t i = 0; i < o.cluster_routes.size(); ++i) {
        config << (i == 0 ? "" : ", ") << "nats-route://" << o.host << ":" << o.cluster_routes[i];
      }
      config << "]\n}\n";
    }
    if (!config.flush()) {
      return Unexpected(ErrorCode::kIo, "cannot write '" + server->config_path_ + "'");
    }
  }

  if (o.port != 0) {
    server->port_ = o.port;
    IF_RETURN_IF_ERROR(server->launch());
    return server;
  }
  Status launched;
  for (int attempt = 0; attempt < kFreePortAttemptsMax; ++attempt) {
    auto port = free_loopback_port();
    if (!port) return Unexpected(port.error());
    server->port_ = *port;
    launched = server->launch();
    if (launched) return server;
  }
  return Unexpected(launched.error());
}

NatsServer::~NatsServer() {
  stop();
  if (!work_dir_.empty()) {
    std::error_code ec;
    fs::remove_all(work_dir_, ec);
  }
}

std::string NatsServer::url() const {
  // A numeric IPv6 host needs brackets in a URL.
  bool ipv6 = options_.host.find(':') != std::string::npos;
  std::string host = ipv6 ? "[" + options_.host + "]" : options_.host;
  return "nats://" + host + ":" + std::to_string(port_);
}

int NatsServer::pid() const { return process_ ? process_->pid() : -1; }

Status NatsServer::launch() {
  ProcessOptions spawn_options;
  spawn_options.program = binary_;
  spawn_options.args = {"-a", options_.host, "-p", std::to_string(port_), "-c", config_path_,
                        "--ports_file_dir", work_dir_};
  spawn_options.stdout_path = log_path_;
  spawn_options.stderr_path = log_path_;
  auto process = Process::spawn(spawn_options);
  if (!process) return Unexpected(process.error());
  process_.emplace(std::move(*process));

  std::string where = options_.host + ":" + std::to_string(port_);
  auto deadline = Clock::now() + std::chrono::milliseconds(options_.start_timeout_ms);
  while (true) {
    if (auto status = process_->wait(0)) {
      process_.reset();
      return Unexpected(ErrorCode::kIo, binary_ + " exited with status " + std::to_string(*status) +
                                            " before accepting connections on " + where + "; log (" +
                                            log_path_ + ") ends:\n" + log_tail());
    }
    int64_t left_ms = ms_until(deadline);
    if (ports_file_exists(work_dir_, process_->pid()) &&
        wait_for_tcp(options_.host, port_, std::min(left_ms, kStartProbeMs))) {
      return {};
    }
    if (ms_until(deadline) == 0) {
      stop();
      return Unexpected(ErrorCode::kIo, binary_ + " did not accept connections on " + where + " within " +
                                            std::to_string(options_.start_timeout_ms) + " ms; log (" +
                                            log_path_ + ") ends:\n" + log_tail());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(std::min(ms_until(deadline), kStartPollMs)));
  }
}

std::string NatsServer::log_tail() const {
  std::ifstream log(log_path_, std::ios::binary);
  if (!log) return "(no log)";
  std::ostringstream all;
  all << log.rdbuf();
  std::string text = all.str();
  if (text.size() > kLogTailBytes) text = "..." + text.substr(text.size() - kLogTailBytes);
  return text;
}

Status NatsServer::restart() {
  stop();
  return launch();
}

void NatsServer::kill() {
  if (!process_) return;
  process_->signal(SIGKILL);
  process_->wait(kProcessKillReapMsMax);
  process_.reset();
}

void NatsServer::stop() {
  if (!process_) return;
  process_->stop(kNatsServerStopGraceMs);
  process_.reset();
}

}  // namespace idlefleet::transport
