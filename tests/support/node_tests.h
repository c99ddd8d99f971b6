// Running Node.js test scripts (tests/node/, tests/web/) from gtest: the
// packages a directory's package-lock.json pins, installed with `npm ci` only
// when node_modules does not already hold exactly those versions (and under a
// lock, so that two test runs over one checkout do not install at once); a
// child process with a deadline and its output in a file; and the summary of
// `node --test --test-reporter=tap`, which must show tests, all passed and
// none skipped.
//
// Thread-safety: free functions, safe from any thread; npm_ci_if_needed()
// serialises installs into one directory across processes (flock).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace idlefleet::testing {

// `npm ci` fetches from the registry on a fresh machine.
inline constexpr int64_t kNpmInstallMsMax = 180'000;
inline constexpr int64_t kNpmLockWaitMsMax = 200'000;
inline constexpr size_t kLogTailBytesMax = 12'000;

// The whole file, or "" when it cannot be read.
std::string read_text_file(const std::filesystem::path& path);

// The last kLogTailBytesMax bytes of `text`.
std::string log_tail(const std::string& text);

// Runs `program args...` (found on PATH) with `env` added, its stdout and
// stderr appended to log_path, for at most timeout_ms. Returns its exit
// status, or -1 when it could not be started or did not finish in time (it
// is then killed); the log says which.
int run_bounded(const std::string& program, std::vector<std::string> args, std::vector<std::string> env,
                const std::filesystem::path& log_path, int64_t timeout_ms);

// Whether dir/node_modules holds exactly the versions dir/package-lock.json names.
bool node_modules_match_lock(const std::filesystem::path& dir);

// Makes dir/node_modules match dir/package-lock.json, running `npm ci` (its
// output in log_path) only when it does not. Returns "" or what went wrong.
std::string npm_ci_if_needed(const std::filesystem::path& dir, const std::filesystem::path& log_path);

// "" when a `node --test --test-reporter=tap` output ran some tests, all
// passed and none was skipped, cancelled or todo; else what is wrong.
std::string tap_summary_problems(const std::string& output);

// Runs `node --test --test-reporter=tap --test-concurrency=1 script` with
// `env` added, its output in log_path, for at most timeout_ms. Returns "" when
// it exited 0 with a summary that tap_summary_problems() accepts; else what
// failed, with the tail of the output.
std::string run_node_tests(const std::filesystem::path& script, std::vector<std::string> env,
                           const std::filesystem::path& log_path, int64_t timeout_ms);

}  // namespace idlefleet::testing
