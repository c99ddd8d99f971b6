#include "support/node_tests.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <fstream>
#include <regex>
#include <sstream>

#include <nlohmann/json.hpp>

#include "support/process_util.h"
#include "transport/process.h"

namespace idlefleet::testing {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// Holds an exclusive flock on a file that `npm ci` never rewrites
// (package-lock.json) while an install runs.
class LockfileGuard {
 public:
  explicit LockfileGuard(const fs::path& path) : fd_(::open(path.c_str(), O_RDONLY | O_CLOEXEC)) {}
  ~LockfileGuard() {
    if (fd_ >= 0) ::close(fd_);  // releases the lock
  }
  LockfileGuard(const LockfileGuard&) = delete;
  LockfileGuard& operator=(const LockfileGuard&) = delete;
  bool acquire(int64_t timeout_ms) {
    return fd_ >= 0 && eventually([&] { return ::flock(fd_, LOCK_EX | LOCK_NB) == 0; }, timeout_ms, 200);
  }

 private:
  int fd_;
};

}  // namespace

std::string read_text_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string log_tail(const std::string& text) {
  return text.size() > kLogTailBytesMax ? text.substr(text.size() - kLogTailBytesMax) : text;
}

int run_bounded(const std::string& program, std::vector<std::string> args, std::vector<std::string> env,
                const fs::path& log_path, int64_t timeout_ms) {
  transport::ProcessOptions p;
  p.program = program;
  p.args = std::move(args);
  p.env_extra = std::move(env);
  p.stdout_path = p.stderr_path = log_path.string();
  auto child = transport::Process::spawn(p);
  if (!child) {
    std::ofstream(log_path, std::ios::app) << "spawn failed: " << child.error().to_string() << "\n";
    return -1;
  }
  const std::optional<int> rc = child->wait(timeout_ms);
  if (!rc) {
    child->stop();
    std::ofstream(log_path, std::ios::app) << "\n*** killed after " << timeout_ms << " ms ***\n";
    return -1;
  }
  return *rc;
}

bool node_modules_match_lock(const fs::path& dir) {
  const json lock = json::parse(read_text_file(dir / "package-lock.json"), nullptr, false);
  if (lock.is_discarded() || !lock.contains("packages") || !lock["packages"].is_object()) return false;
  size_t checked = 0;
  for (const auto& [key, entry] : lock["packages"].items()) {
    if (key.rfind("node_modules/", 0) != 0) continue;
    const json installed = json::parse(read_text_file(dir / key / "package.json"), nullptr, false);
    if (installed.is_discarded() || !installed.is_object() || !entry.is_object()) return false;
    if (installed.value("version", "") != entry.value("version", "?")) return false;
    ++checked;
  }
  return checked > 0;
}

std::string npm_ci_if_needed(const fs::path& dir, const fs::path& log_path) {
  LockfileGuard guard(dir / "package-lock.json");
  if (!guard.acquire(kNpmLockWaitMsMax)) return "could not lock " + (dir / "package-lock.json").string();
  if (node_modules_match_lock(dir)) return "";
  const int rc = run_bounded("npm", {"ci", "--no-audit", "--no-fund", "--prefer-offline", "--prefix", dir.string()},
                             {}, log_path, kNpmInstallMsMax);
  if (rc != 0) return "npm ci in " + dir.string() + " failed:\n" + log_tail(read_text_file(log_path));
  if (!node_modules_match_lock(dir)) {
    return "npm ci left node_modules unlike package-lock.json in " + dir.string() + "\n" +
           log_tail(read_text_file(log_path));
  }
  return "";
}

std::string tap_summary_problems(const std::string& output) {
  // A run that found no tests would also exit 0; and nothing may be skipped.
  std::string problems;
  for (const auto& [name, want_positive] : {std::pair{"tests", true}, std::pair{"pass", true},
                                            std::pair{"fail", false}, std::pair{"cancelled", false},
                                            std::pair{"skipped", false}, std::pair{"todo", false}}) {
    std::smatch m;
    const std::regex line(std::string("\n# ") + name + " ([0-9]+)\n");
    if (!std::regex_search(output, m, line)) {
      problems += std::string("no '# ") + name + "' line\n";
    } else if ((std::stoi(m[1]) > 0) != want_positive) {
      problems += std::string("# ") + name + " " + std::string(m[1]) + "\n";
    }
  }
  return problems;
}

std::string run_node_tests(const fs::path& script, std::vector<std::string> env, const fs::path& log_path,
                           int64_t timeout_ms) {
  const int rc = run_bounded("node", {"--test", "--test-reporter=tap", "--test-concurrency=1", script.string()},
                             std::move(env), log_path, timeout_ms);
  const std::string output = read_text_file(log_path);
  std::string problems = rc == 0 ? "" : "node --test " + script.string() + " exited " + std::to_string(rc) + "\n";
  problems += tap_summary_problems(output);
  return problems.empty() ? "" : problems + log_tail(output);
}

}  // namespace idlefleet::testing
