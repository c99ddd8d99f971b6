// The tiny trained model in ../shared/models (stories260K, llama2.c format)
// as the integration tests use it: present or not, and converted to a GGUF by
// the real `idlefleet model convert-llama2c`. Header-only: it needs
// IDLEFLEET_SOURCE_DIR and IDLEFLEET_BINARY, which every test target defines.
//
// Outside CI a machine without ../shared skips the tests that need the model
// (saying so loudly); in CI (the CI variable set) its absence is a failure.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <string>

#include "support/process_util.h"

namespace idlefleet::testing {

inline std::filesystem::path shared_models_dir() {
  return std::filesystem::path(IDLEFLEET_SOURCE_DIR) / ".." / "shared" / "models";
}

inline bool shared_model_present() { return std::filesystem::exists(shared_models_dir() / "stories260K.bin"); }

// Writes stories260K as a GGUF with its tokenizer at `out`; true if it is there.
inline bool convert_shared_model(const std::filesystem::path& out) {
  const std::filesystem::path dir = shared_models_dir();
  run_capture(std::string(IDLEFLEET_BINARY) + " model convert-llama2c " +
              shell_quote((dir / "stories260K.bin").string()) + " --tokenizer " +
              shell_quote((dir / "tok512.bin").string()) + " -o " + shell_quote(out.string()) + " 2>&1");
  return std::filesystem::exists(out);
}

}  // namespace idlefleet::testing

// In a test body or SetUp(): fails in CI, skips elsewhere, when the model is absent.
#define IDLEFLEET_REQUIRE_SHARED_MODEL(what)                                                                 \
  do {                                                                                                       \
    if (!::idlefleet::testing::shared_model_present()) {                                                     \
      if (std::getenv("CI") != nullptr) FAIL() << "../shared/models is missing in CI";                      \
      GTEST_SKIP() << "*** ../shared/models/stories260K.bin is absent: " << (what) << " needs a model ***"; \
    }                                                                                                        \
  } while (0)
