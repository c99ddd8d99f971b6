// Child processes and loopback TCP helpers, for the tools that start servers:
// `idlefleet demo` (nats-server, coordinator, agents) and the tests that run
// against real processes.
//
// Process owns one child started with fork+exec. The child is killed and
// reaped when its owner goes away, and, by default, also when the spawning
// thread dies (PR_SET_PDEATHSIG), so that a crashed or killed test leaves no
// orphan servers behind. Exit statuses follow the shell's convention:
// WEXITSTATUS for a normal exit, 128 + signal number for a killed child.
//
// Thread-safety: a Process is owned by one thread at a time (it may move
// between threads). The free functions are thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"

namespace idlefleet::transport {

// How long stop() and the destructor wait for a SIGKILLed child to be reaped
// before giving up on it (it is then left as a zombie, and a warning printed).
inline constexpr int64_t kProcessKillReapMsMax = 10'000;

struct ProcessOptions {
  std::string program{};             // a path, or a name searched on PATH
  std::vector<std::string> args{};   // argv[1..]; argv[0] is `program`
  // Where the child's stdout and stderr go: "" inherits ours; otherwise the
  // file is created or appended to (so a restarted server keeps one log). The
  // same path may be given for both; they then share one file description.
  std::string stdout_path{};
  std::string stderr_path{};
  std::vector<std::string> env_extra{};  // "K=V", added to (or replacing in) our environment
  // SIGKILL the child when the spawning thread exits (Linux ties the parent
  // death signal to the thread, not the process).
  // REQUIRES (when true): spawn from a thread that outlives the child, such
  // as the main thread.
  bool kill_with_parent = true;
};

class Process {
 public:
  // Starts `options.program`. Fails with kNotFound when the program is not
  // on PATH (or not an executable file), kInvalidArgument for a malformed
  // option, and kIo when exec itself fails in the child (its errno is sent
  // back through a close-on-exec pipe and named in the message).
  static Result<Process> spawn(const ProcessOptions& options);

  Process(Process&& other) noexcept;
  Process& operator=(Process&& other) noexcept;
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;
  // Kills (SIGKILL) and reaps the child if it is still running.
  ~Process();

  // The child's pid, or -1 for a moved-from Process.
  int pid() const { return pid_; }

  // Whether the child has not exited yet; reaps it without blocking if it has.
  bool running();

  // Sends `sig` to the child; does nothing once it has been reaped (so a
  // recycled pid is never signalled).
  void signal(int sig);

  // Waits up to timeout_ms (0 = just look) for the child to exit. Returns its
  // status (WEXITSTATUS, or 128 + signal), or nullopt on timeout.
  std::optional<int> wait(int64_t timeout_ms);

  // SIGTERM, up to grace_ms for the child to exit, then SIGKILL. Returns the
  // exit status; a child that already exited just reports its status (-1 for
  // a moved-from Process, or a child that someone else reaped).
  int stop(int64_t grace_ms = 2000);

 private:
  Process(int pid, int pidfd) : pid_(pid), pidfd_(pidfd) {}
  void record_status(int wait_status);
  void release();

  int pid_ = -1;
  int pidfd_ = -1;  // from pidfd_open, for waiting with a timeout; -1 if unavailable
  std::optional<int> exit_status_;
};

// Resolves a program as spawn() does: a name with a slash must be an
// executable file; a bare name is searched on PATH. Returns the path.
Result<std::string> find_program(const std::string& program);

// A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then
// released). Another process may take it before the caller binds it, so
// callers that can retry with a fresh port should. Linux (4.6+) hands out
// odd ports to bind(0) and tries even ones first for connect(), so a client
// retrying against this port while its server is down does not end up
// connected to itself on it.
Result<uint16_t> free_loopback_port();

// Waits until a TCP connection to host:port succeeds (the connection is then
// closed) or timeout_ms passes. host is a name or a numeric address.
bool wait_for_tcp(const std::string& host, uint16_t port, int64_t timeout_ms);

}  // namespace idlefleet::transport
