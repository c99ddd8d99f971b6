// Runs the built `idlefleet` command (IDLEFLEET_BINARY, defined for every test
// executable) through /bin/sh and collects what it printed.
//
// Thread-safety: safe from any thread (popen).
#pragma once

#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <string>

namespace idlefleet::testing {

struct Ran {
  int exit_code;       // -1 when the command could not run or did not exit
  std::string output;  // stdout and stderr
};

// `idlefleet ARGS` (ARGS already quoted for the shell), in `cwd` when given.
inline Ran run_idlefleet(const std::string& args, const std::string& cwd = "") {
  const std::string cmd = (cwd.empty() ? "" : "cd '" + cwd + "' && ") + "'" + IDLEFLEET_BINARY + "' " + args + " 2>&1";
  Ran r{-1, {}};
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return r;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.output.append(buf.data(), n);
  const int status = pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

}  // namespace idlefleet::testing
