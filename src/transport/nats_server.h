// A nats-server child process, for `idlefleet demo` and for the tests that
// run against a real broker.
//
// start() returns once the server accepts connections. Each server gets a
// private temporary directory for its generated configuration, its ports
// file (how we tell that this pid, and not some other process, owns the
// port) and, unless log_path is given, its log; the directory is removed
// with the server. restart() and kill() exist for chaos tests: clients see
// a broker that goes away and comes back on the same URL.
//
// Thread-safety: a NatsServer is owned by one thread; the server is started
// with kill_with_parent, so that thread must outlive it (see ProcessOptions).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"
#include "transport/process.h"

namespace idlefleet::transport {

// nats-server refuses payloads above 64 MiB.
inline constexpr size_t kNatsPayloadBytesMax = 64u << 20;
// How long stop() and restart() let the server shut down before SIGKILL.
inline constexpr int64_t kNatsServerStopGraceMs = 2000;

struct NatsServerOptions {
  // "" = "nats-server" from PATH, else /usr/sbin/nats-server (outside a
  // normal user's PATH on Debian). Otherwise a path or a name on PATH.
  std::string binary = "";
  std::string host = "127.0.0.1";
  uint16_t port = 0;  // 0 = a free port (retried with another if it is taken meanwhile)
  std::string log_path{};     // "" = a log in the private directory, quoted in start errors
  std::string config_path{};  // optional -c file; when given, it decides max_payload
  int64_t start_timeout_ms = 10000;
  size_t max_payload_bytes = 8u << 20;  // REQUIRES: 1 .. kNatsPayloadBytesMax
  // A member of a cluster (ignored with config_path): the port this server
  // takes routes from (0: not clustered) and the other members' route ports,
  // all on `host`. Clients learn the other members from the server, so a
  // client given one member's URL fails over to the rest.
  uint16_t cluster_port = 0;
  std::vector<uint16_t> cluster_routes{};
  std::string cluster_name = "idlefleet";
};

class NatsServer {
 public:
  // Starts the server and waits until it accepts connections. Errors name the
  // binary when it is not installed, and quote the end of the log when the
  // server exits or does not come up in time.
  static Result<std::unique_ptr<NatsServer>> start(NatsServerOptions options);

  NatsServer(const NatsServer&) = delete;
  NatsServer& operator=(const NatsServer&) = delete;
  // Stops the server and removes its private directory.
  ~NatsServer();

  // nats://HOST:PORT, for NatsOptions::url.
  std::string url() const;
  uint16_t port() const { return port_; }
  // The server's pid, or -1 after stop(), kill() or a failed restart().
  int pid() const;

  // Stops the server (gracefully, then SIGKILL) and starts it again on the
  // same port. Fails if the port was taken meanwhile or the server does not
  // come back. Also starts a server that kill() or stop() ended.
  Status restart();
  // SIGKILL, as a crash would: no lame-duck, no goodbye to clients.
  void kill();
  // SIGTERM, then SIGKILL after kNatsServerStopGraceMs. Idempotent.
  void stop();

 private:
  NatsServer() = default;
  // Spawns the server on port_ and waits for it to accept connections.
  Status launch();
  std::string log_tail() const;

  NatsServerOptions options_;
  std::string binary_;     // resolved path
  std::string work_dir_;   // private temporary directory
  std::string config_path_;
  std::string log_path_;
  uint16_t port_ = 0;
  std::optional<Process> process_;
};

}  // namespace idlefleet::transport
