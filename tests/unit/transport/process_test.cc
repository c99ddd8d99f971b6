// Process, free_loopback_port and wait_for_tcp against real children
// (/bin/sh, sleep) and real sockets.
#include "transport/process.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <thread>

namespace idlefleet::transport::process_test {
namespace {

namespace fs = std::filesystem;

// A fresh directory, removed at the end of the test.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (fs::temp_directory_path() / "idlefleet-process-test-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) ADD_FAILURE() << "mkdtemp: " << std::strerror(errno);
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return (fs::path(path_) / name).string(); }

 private:
  std::string path_;
};

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

// Polls `done` until it holds or timeout_ms passes; for conditions that no
// event announces (a file a child writes).
bool wait_until(const std::function<bool()>& done, int64_t timeout_ms) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (!done()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

Process spawn_or_die(ProcessOptions options) {
  auto p = Process::spawn(options);
  EXPECT_TRUE(p) << p.error().to_string();
  return std::move(*p);
}

ProcessOptions shell(const std::string& script) { return ProcessOptions{.program = "sh", .args = {"-c", script}}; }

TEST(Process, ReportsExitStatus) {
  Process p = spawn_or_die(shell("exit 3"));
  EXPECT_GT(p.pid(), 0);
  EXPECT_EQ(p.wait(10'000), 3);
  EXPECT_FALSE(p.running());
  EXPECT_EQ(p.wait(0), 3);  // remembered after reaping
  EXPECT_EQ(p.stop(), 3);
}

TEST(Process, KilledChildReports128PlusSignal) {
  Process p = spawn_or_die(shell("kill -TERM $$"));
  EXPECT_EQ(p.wait(10'000), 128 + SIGTERM);
}

TEST(Process, MissingProgramIsNotFound) {
  auto p = Process::spawn({.program = "idlefleet-no-such-program"});
  ASSERT_FALSE(p);
  EXPECT_EQ(p.error().code, ErrorCode::kNotFound);
  EXPECT_NE(p.error().message.find("idlefleet-no-such-program"), std::string::npos) << p.error().message;

  auto q = Process::spawn({.program = "/nonexistent/idlefleet"});
  ASSERT_FALSE(q);
  EXPECT_EQ(q.error().code, ErrorCode::kNotFound);
}

TEST(Process, ExecFailureInTheChildIsReportedWithItsErrno) {
  // Executable, but neither ELF nor a script: execve fails with ENOEXEC in
  // the child, after the parent's checks passed.
  TempDir dir;
  std::string path = dir.file("not-a-program");
  std::ofstream(path) << '\x01' << '\x02' << '\x03' << '\x04';
  ASSERT_EQ(::chmod(path.c_str(), 0755), 0);
  auto p = Process::spawn({.program = path});
  ASSERT_FALSE(p);
  EXPECT_EQ(p.error().code, ErrorCode::kIo);
  EXPECT_NE(p.error().message.find(std::strerror(ENOEXEC)), std::string::npos) << p.error().message;
  EXPECT_NE(p.error().message.find(path), std::string::npos) << p.error().message;
}

TEST(Process, MalformedEnvironmentEntryIsRefused) {
  auto p = Process::spawn({.program = "true", .env_extra = {"NO_EQUALS_SIGN"}});
  ASSERT_FALSE(p);
  EXPECT_EQ(p.error().code, ErrorCode::kInvalidArgument);
}

TEST(Process, RedirectsOutputAndAddsEnvironment) {
  TempDir dir;
  std::string log = dir.file("out.log");
  ProcessOptions options = shell("echo \"$IDLEFLEET_TEST_VALUE\"; echo to-stderr >&2; echo again");
  options.stdout_path = log;
  options.stderr_path = log;  // one file for both, in order
  options.env_extra = {"IDLEFLEET_TEST_VALUE=hello", "IDLEFLEET_TEST_VALUE=replaced"};
  Process p = spawn_or_die(options);
  ASSERT_EQ(p.wait(10'000), 0);
  EXPECT_EQ(read_file(log), "replaced\nto-stderr\nagain\n");
}

TEST(Process, WaitTimesOutWhileTheChildRuns) {
  Process p = spawn_or_die({.program = "sleep", .args = {"30"}});
  EXPECT_EQ(p.wait(20), std::nullopt);
  EXPECT_TRUE(p.running());
  EXPECT_EQ(p.stop(), 128 + SIGTERM);
  EXPECT_FALSE(p.running());
}

TEST(Process, StopEscalatesToSigkillWhenSigtermIsIgnored) {
  TempDir dir;
  std::string log = dir.file("out.log");
  // `exec` keeps one process; sleep inherits the ignored SIGTERM.
  ProcessOptions options = shell("trap '' TERM; echo ready; exec sleep 30");
  options.stdout_path = log;
  Process p = spawn_or_die(options);
  ASSERT_TRUE(wait_until([&] { return read_file(log) == "ready\n"; }, 10'000));
  auto started = std::chrono::steady_clock::now();
  EXPECT_EQ(p.stop(/*grace_ms=*/100), 128 + SIGKILL);
  EXPECT_GE(std::chrono::steady_clock::now() - started, std::chrono::milliseconds(100));
}

TEST(Process, DestructorKillsAndReaps) {
  int pid;
  {
    Process p = spawn_or_die({.program = "sleep", .args = {"30"}});
    pid = p.pid();
    ASSERT_EQ(::kill(pid, 0), 0);
  }
  // Reaped, not a zombie: the pid no longer exists.
  EXPECT_EQ(::kill(pid, 0), -1);
  EXPECT_EQ(errno, ESRCH);
}

TEST(Process, MovesOwnership) {
  Process a = spawn_or_die({.program = "sleep", .args = {"30"}});
  int pid = a.pid();
  Process b = std::move(a);
  EXPECT_EQ(a.pid(), -1);  // NOLINT(bugprone-use-after-move): moved-from state is specified
  EXPECT_FALSE(a.running());
  EXPECT_EQ(b.pid(), pid);
  Process c = spawn_or_die(shell("exit 0"));
  c = std::move(b);  // kills c's old child, takes b's
  EXPECT_EQ(c.pid(), pid);
  EXPECT_TRUE(c.running());
  EXPECT_EQ(c.stop(), 128 + SIGTERM);
}

TEST(Process, KillWithParentTiesTheChildToTheSpawningThread) {
  // Linux sends the parent-death signal when the spawning thread exits, which
  // lets us observe it without a second process.
  auto spawn_in_thread = [](bool kill_with_parent) {
    std::optional<Process> p;
    std::thread([&] { p = spawn_or_die({.program = "sleep", .args = {"30"}, .kill_with_parent = kill_with_parent}); })
        .join();
    return std::move(*p);
  };
  Process armed = spawn_in_thread(true);
  EXPECT_EQ(armed.wait(10'000), 128 + SIGKILL);
  Process unarmed = spawn_in_thread(false);
  EXPECT_EQ(unarmed.wait(50), std::nullopt);
  EXPECT_EQ(unarmed.stop(), 128 + SIGTERM);
}

TEST(FreeLoopbackPort, ReturnsAPort) {
  auto port = free_loopback_port();
  ASSERT_TRUE(port) << port.error().to_string();
  EXPECT_NE(*port, 0);
}

TEST(WaitForTcp, SeesAListenerAppear) {
  // A socket bound but not listening: connections are refused, and no other
  // process can take the port meanwhile.
  int sock = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(sock, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(sock, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0) << std::strerror(errno);
  socklen_t len = sizeof addr;
  ASSERT_EQ(::getsockname(sock, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  uint16_t port = ntohs(addr.sin_port);
  EXPECT_FALSE(wait_for_tcp("127.0.0.1", port, 30));
  ASSERT_EQ(::listen(sock, 4), 0);
  EXPECT_TRUE(wait_for_tcp("127.0.0.1", port, 5'000));
  EXPECT_TRUE(wait_for_tcp("localhost", port, 5'000));
  ::close(sock);
}

TEST(FindProgram, SearchesPath) {
  auto sh = find_program("sh");
  ASSERT_TRUE(sh) << sh.error().to_string();
  EXPECT_EQ(fs::path(*sh).filename(), "sh");
  EXPECT_FALSE(find_program("idlefleet-no-such-program"));
}

}  // namespace
}  // namespace idlefleet::transport::process_test
