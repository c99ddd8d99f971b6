#include "cli/model_locator.h"

#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "cli/commands.h"
#include "engine/model_tools.h"

namespace idlefleet::cli {

namespace fs = std::filesystem;

namespace {
// Candidate folders for the shared test model: beside the working directory's
// repository (../shared) and beside the binary's source tree.
std::vector<fs::path> shared_model_dirs() {
  std::vector<fs::path> dirs;
  if (const char* env = std::getenv("IDLEFLEET_SHARED_MODELS")) dirs.emplace_back(env);
  fs::path cwd = fs::current_path();
  for (fs::path p = cwd; !p.empty(); p = p.parent_path()) {
    dirs.push_back(p.parent_path() / "shared" / "models");
    if (p == p.parent_path()) break;
  }
  return dirs;
}
}  // namespace

std::string locate_model(const std::string& flag_value, bool verbose) {
  if (!flag_value.empty()) return flag_value;
  if (const char* env = std::getenv("IDLEFLEET_MODEL"); env != nullptr && *env != '\0') return env;
  const fs::path cached = fs::path("models") / "stories260K.gguf";
  if (fs::exists(cached)) return cached.string();
  for (const fs::path& dir : shared_model_dirs()) {
    const fs::path ckpt = dir / "stories260K.bin", tok = dir / "tok512.bin";
    std::error_code ec;
    if (!fs::exists(ckpt, ec) || !fs::exists(tok, ec)) continue;
    fs::create_directories(cached.parent_path(), ec);
    if (verbose) {
      std::fprintf(stderr, "idlefleet: no model given; converting the test model %s to %s\n",
                   ckpt.string().c_str(), cached.string().c_str());
    }
    auto st = engine::convert_llama2c(ckpt.string(), tok.string(), cached.string());
    if (!st) throw CommandError{"converting " + ckpt.string() + ": " + st.error().to_string()};
    return cached.string();
  }
  throw CommandError{
      "no model: name one with -m FILE.gguf (or set IDLEFLEET_MODEL), fetch one with "
      "`idlefleet model pull URL`, or make a synthetic one with `idlefleet model synth "
      "--shape tiny110m --type q8_0 -o models/tiny110m.gguf`. (The bundled test model "
      "stories260K is only found beside a checkout that has ../shared/models.)"};
}

}  // namespace idlefleet::cli
