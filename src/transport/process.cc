#include "transport/process.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/close_range.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <thread>
#include <unordered_map>
#include <utility>

extern char** environ;

#include "transport/deadline.h"

namespace idlefleet::transport {
namespace {

// Without a pidfd (kernels before 5.3), wait() polls waitpid this often.
constexpr int64_t kReapPollMs = 5;
// wait_for_tcp: the pause between connection attempts, and the longest a
// single attempt may take.
constexpr int64_t kTcpRetryMs = 10;
constexpr int64_t kTcpAttemptMsMax = 500;
// Fallback bound on descriptors to close in the child when close_range is
// missing (kernels before 5.11).
constexpr long kChildFdsMax = 65536;

using Clock = std::chrono::steady_clock;

std::string errno_text(int err) { return std::strerror(err); }

bool is_executable_file(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(path.c_str(), X_OK) == 0;
}

}  // namespace

// spawn() resolves the program in the parent, where allocation is allowed,
// so the child only has to call execve (async-signal-safe after fork in a
// threaded process, unlike execvp's PATH walk).
Result<std::string> find_program(const std::string& program) {
  if (program.find('/') != std::string::npos) {
    if (!is_executable_file(program)) {
      return Unexpected(ErrorCode::kNotFound, "program '" + program + "' is not an executable file");
    }
    return program;
  }
  const char* path_env = std::getenv("PATH");
  std::string path = path_env != nullptr ? path_env : "/usr/local/bin:/usr/bin:/bin";
  size_t begin = 0;
  while (begin <= path.size()) {
    size_t end = path.find(':', begin);
    if (end == std::string::npos) end = path.size();
    std::string dir = path.substr(begin, end - begin);
    if (dir.empty()) dir.push_back('.');  // POSIX: an empty PATH entry is the current directory
    std::string candidate = dir + "/" + program;
    if (is_executable_file(candidate)) return candidate;
    begin = end + 1;
  }
  return Unexpected(ErrorCode::kNotFound, "program '" + program + "' not found on PATH (" + path + ")");
}

namespace {

// Our environment with `extra` ("K=V") added, later entries replacing earlier.
Result<std::vector<std::string>> child_environment(const std::vector<std::string>& extra) {
  std::vector<std::string> env;
  std::unordered_map<std::string, size_t> index_of_key;
  auto put = [&](std::string entry) {
    std::string key = entry.substr(0, entry.find('='));
    auto [it, inserted] = index_of_key.emplace(key, env.size());
    if (inserted) {
      env.push_back(std::move(entry));
    } else {
      env[it->second] = std::move(entry);
    }
  };
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) put(*e);
  for (const std::string& entry : extra) {
    size_t eq = entry.find('=');
    if (eq == std::string::npos || eq == 0) {
      return Unexpected(ErrorCode::kInvalidArgument, "environment entry '" + entry + "' is not K=V");
    }
    put(entry);
  }
  return env;
}

std::vector<char*> c_strings(std::vector<std::string>& strings) {
  std::vector<char*> out;
  out.reserve(strings.size() + 1);
  for (std::string& s : strings) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

// A file descriptor closed on scope exit.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) {
      reset();
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  ~Fd() { reset(); }
  int get() const { return fd_; }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

Result<Fd> open_output(const std::string& path) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) {
    return Unexpected(ErrorCode::kIo, "cannot open '" + path + "' for the child's output: " + errno_text(errno));
  }
  return Fd(fd);
}

// Everything the child does between fork and exec. Only async-signal-safe
// calls: another thread of ours may have held the malloc lock at fork time.
[[noreturn]] void run_child(const char* path, char* const* argv, char* const* envp, int stdout_fd,
                            int stderr_fd, int error_pipe, bool kill_with_parent, pid_t parent,
                            long fds_max) {
  if (kill_with_parent) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    // The parent may have died before prctl took effect.
    if (::getppid() != parent) ::_exit(127);
  }
  // Signal masks and ignored signals survive exec; the program should start
  // with the defaults whatever our threads (libnats ignores SIGPIPE) set.
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; ++sig) ::sigaction(sig, &dfl, nullptr);  // EINVAL for KILL/STOP is fine

  bool redirected = (stdout_fd < 0 || ::dup2(stdout_fd, STDOUT_FILENO) >= 0) &&
                    (stderr_fd < 0 || ::dup2(stderr_fd, STDERR_FILENO) >= 0);
  if (redirected) {
    // Descriptors that other threads opened without O_CLOEXEC (sockets of a
    // NATS connection, say) must not leak into the child, where they would
    // keep connections open. The error pipe must stay open until exec, so
    // mark rather than close where the kernel allows it.
#if defined(SYS_close_range)
    if (::syscall(SYS_close_range, 3u, ~0u, CLOSE_RANGE_CLOEXEC) != 0)
#endif
    {
      for (long fd = 3; fd < fds_max; ++fd) {
        if (fd != error_pipe) ::close(static_cast<int>(fd));
      }
    }
    ::execve(path, argv, envp);
  }
  int err = errno;
  ssize_t ignored = ::write(error_pipe, &err, sizeof err);
  (void)ignored;
  ::_exit(127);
}

}  // namespace

Result<Process> Process::spawn(const ProcessOptions& options) {
  if (options.program.empty()) return Unexpected(ErrorCode::kInvalidArgument, "no program to spawn");
  auto path = find_program(options.program);
  if (!path) return Unexpected(path.error());
  auto env = child_environment(options.env_extra);
  if (!env) return Unexpected(env.error());

  std::vector<std::string> argv_strings;
  argv_strings.reserve(options.args.size() + 1);
  argv_strings.push_back(options.program);
  argv_strings.insert(argv_strings.end(), options.args.begin(), options.args.end());
  std::vector<char*> argv = c_strings(argv_strings);
  std::vector<char*> envp = c_strings(*env);

  Fd stdout_fd, stderr_fd;
  if (!options.stdout_path.empty()) {
    auto fd = open_output(options.stdout_path);
    if (!fd) return Unexpected(fd.error());
    stdout_fd = std::move(*fd);
  }
  if (!options.stderr_path.empty() && options.stderr_path != options.stdout_path) {
    auto fd = open_output(options.stderr_path);
    if (!fd) return Unexpected(fd.error());
    stderr_fd = std::move(*fd);
  }
  // One file description for both when the paths match, so the two streams
  // interleave in order instead of overwriting each other.
  int child_stderr = options.stderr_path.empty() ? -1
                     : options.stderr_path == options.stdout_path ? stdout_fd.get()
                                                                  : stderr_fd.get();

  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) {
    return Unexpected(ErrorCode::kIo, "pipe2 failed: " + errno_text(errno));
  }
  Fd error_read(pipe_fds[0]), error_write(pipe_fds[1]);

  struct rlimit nofile {};
  long fds_max = kChildFdsMax;
  if (::getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur != RLIM_INFINITY) {
    fds_max = std::min<long>(fds_max, static_cast<long>(nofile.rlim_cur));
  }

  pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) return Unexpected(ErrorCode::kIo, "fork failed: " + errno_text(errno));
  if (pid == 0) {
    run_child(path->c_str(), argv.data(), envp.data(), stdout_fd.get(), child_stderr, error_write.get(),
              options.kill_with_parent, parent, fds_max);
  }
  error_write.reset();  // else the read below never sees end-of-file

  int child_errno = 0;
  ssize_t n;
  do {
    n = ::read(error_read.get(), &child_errno, sizeof child_errno);
  } while (n < 0 && errno == EINTR);
  if (n == static_cast<ssize_t>(sizeof child_errno)) {
    int status;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return Unexpected(ErrorCode::kIo, "cannot exec '" + *path + "': " + errno_text(child_errno));
  }

  int pidfd = -1;
#if defined(SYS_pidfd_open)
  // Race-free: the child cannot be reaped (and its pid reused) before we do.
  pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (pidfd >= 0) ::fcntl(pidfd, F_SETFD, FD_CLOEXEC);
#endif
  return Process(pid, pidfd);
}

Process::Process(Process&& other) noexcept
    : pid_(std::exchange(other.pid_, -1)),
      pidfd_(std::exchange(other.pidfd_, -1)),
      exit_status_(std::exchange(other.exit_status_, std::nullopt)) {}

Process& Process::operator=(Process&& other) noexcept {
  if (this != &other) {
    release();
    pid_ = std::exchange(other.pid_, -1);
    pidfd_ = std::exchange(other.pidfd_, -1);
    exit_status_ = std::exchange(other.exit_status_, std::nullopt);
  }
  return *this;
}

Process::~Process() { release(); }

void Process::release() {
  if (pid_ > 0 && !exit_status_) {
    signal(SIGKILL);
    if (!wait(kProcessKillReapMsMax)) {
      std::fprintf(stderr, "idlefleet: child %d survived SIGKILL for %lld ms; leaving it\n", pid_,
                   static_cast<long long>(kProcessKillReapMsMax));
    }
  }
  if (pidfd_ >= 0) ::close(pidfd_);
  pid_ = -1;
  pidfd_ = -1;
  exit_status_.reset();
}

void Process::record_status(int wait_status) {
  if (WIFEXITED(wait_status)) {
    exit_status_ = WEXITSTATUS(wait_status);
  } else if (WIFSIGNALED(wait_status)) {
    exit_status_ = 128 + WTERMSIG(wait_status);
  } else {
    exit_status_ = -1;  // not reachable without WUNTRACED/WCONTINUED
  }
}

bool Process::running() {
  if (pid_ <= 0) return false;
  return !wait(0).has_value();
}

void Process::signal(int sig) {
  if (pid_ > 0 && !exit_status_) ::kill(pid_, sig);
}

std::optional<int> Process::wait(int64_t timeout_ms) {
  if (pid_ <= 0) return std::nullopt;
  if (exit_status_) return exit_status_;
  auto deadline = Clock::now() + std::chrono::milliseconds(std::max<int64_t>(0, timeout_ms));
  while (true) {
    int status = 0;
    pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      record_status(status);
      return exit_status_;
    }
    if (r < 0 && errno != EINTR) {
      // ECHILD: reaped elsewhere (SIGCHLD ignored, or waitpid(-1) in other
      // code); the status is lost.
      exit_status_ = -1;
      return exit_status_;
    }
    int64_t left_ms = ms_until(deadline);
    if (left_ms == 0) return std::nullopt;
    if (pidfd_ >= 0) {
      // The pidfd turns readable when the child exits.
      struct pollfd p {pidfd_, POLLIN, 0};
      ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left_ms, 60'000)));
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(std::min(left_ms, kReapPollMs)));
    }
  }
}

int Process::stop(int64_t grace_ms) {
  if (pid_ <= 0) return -1;
  if (auto status = wait(0)) return *status;
  signal(SIGTERM);
  if (auto status = wait(grace_ms)) return *status;
  signal(SIGKILL);
  if (auto status = wait(kProcessKillReapMsMax)) return *status;
  std::fprintf(stderr, "idlefleet: child %d survived SIGKILL for %lld ms\n", pid_,
               static_cast<long long>(kProcessKillReapMsMax));
  return 128 + SIGKILL;
}

Result<uint16_t> free_loopback_port() {
  Fd sock(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (sock.get() < 0) return Unexpected(ErrorCode::kIo, "socket failed: " + errno_text(errno));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  if (::bind(sock.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    return Unexpected(ErrorCode::kIo, "bind to 127.0.0.1:0 failed: " + errno_text(errno));
  }
  socklen_t len = sizeof addr;
  if (::getsockname(sock.get(), reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    return Unexpected(ErrorCode::kIo, "getsockname failed: " + errno_text(errno));
  }
  return static_cast<uint16_t>(ntohs(addr.sin_port));
}

namespace {

// Whether the socket is connected to itself. Connecting to a loopback port
// in the ephemeral range where nothing listens can pick that very port as
// the source and "succeed" (TCP simultaneous open), which is not a server.
bool connected_to_self(int sock) {
  sockaddr_storage local{}, peer{};
  socklen_t local_len = sizeof local, peer_len = sizeof peer;
  if (::getsockname(sock, reinterpret_cast<sockaddr*>(&local), &local_len) != 0) return false;
  if (::getpeername(sock, reinterpret_cast<sockaddr*>(&peer), &peer_len) != 0) return false;
  return local_len == peer_len && std::memcmp(&local, &peer, local_len) == 0;
}

// One non-blocking connect, bounded by timeout_ms.
bool try_connect(const addrinfo& ai, int64_t timeout_ms) {
  Fd sock(::socket(ai.ai_family, ai.ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai.ai_protocol));
  if (sock.get() < 0) return false;
  if (::connect(sock.get(), ai.ai_addr, ai.ai_addrlen) != 0) {
    if (errno != EINPROGRESS) return false;
    struct pollfd p {sock.get(), POLLOUT, 0};
    if (::poll(&p, 1, static_cast<int>(timeout_ms)) != 1) return false;
    int err = 0;
    socklen_t len = sizeof err;
    if (::getsockopt(sock.get(), SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) return false;
  }
  return !connected_to_self(sock.get());
}

}  // namespace

bool wait_for_tcp(const std::string& host, uint16_t port, int64_t timeout_ms) {
  auto deadline = Clock::now() + std::chrono::milliseconds(std::max<int64_t>(0, timeout_ms));
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found) != 0) return false;
  bool connected = false;
  while (!connected) {
    for (addrinfo* ai = found; ai != nullptr && !connected; ai = ai->ai_next) {
      connected = try_connect(*ai, std::clamp<int64_t>(ms_until(deadline), 1, kTcpAttemptMsMax));
    }
    int64_t left_ms = ms_until(deadline);
    if (connected || left_ms == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(std::min(left_ms, kTcpRetryMs)));
  }
  ::freeaddrinfo(found);
  return connected;
}

}  // namespace idlefleet::transport
