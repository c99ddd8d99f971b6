// `idlefleet model pull URL [-o FILE]`: download a GGUF model.
//
// Any URL libcurl understands (https, http, file). The download goes to
// FILE.download and is renamed into place only when complete and when it
// parses as GGUF, so an interrupted or wrong download never looks like a model.
#include <unistd.h>

#include <cstdio>
#include <filesystem>

#include "cli/commands.h"
#include "engine/gguf.h"
#include "transport/download.h"

namespace idlefleet::cli {

namespace {

std::string default_output(const std::string& url) {
  std::string name = url.substr(url.find_last_of('/') + 1);
  if (const size_t q = name.find_first_of("?#"); q != std::string::npos) name.resize(q);
  if (name.empty()) name = "model.gguf";
  return (std::filesystem::path("models") / name).string();
}

void pull(const std::string& url, std::string out_path) {
  if (out_path.empty()) out_path = default_output(url);
  const bool tty = isatty(2) != 0;
  uint64_t last_percent = 101;
  transport::DownloadOptions options;
  options.progress = [&](uint64_t now, uint64_t total) {
    if (total == 0) return;
    const uint64_t percent = now * 100 / total;
    if (percent != last_percent && (tty || percent % 10 == 0)) {
      std::fprintf(stderr, tty ? "\rdownloading: %3d%% of %.1f MB" : "downloading: %3d%% of %.1f MB\n",
                   static_cast<int>(percent), static_cast<double>(total) / 1e6);
      last_percent = percent;
    }
  };
  // Downloaded beside the target, checked as GGUF, then renamed into place.
  const std::string part = out_path + ".download";
  Status st = transport::download_file(url, part, options);
  if (tty) std::fputc('\n', stderr);
  if (!st) throw CommandError{st.error().message};
  std::error_code ec;
  auto file = engine::GgufFile::open(part);
  if (!file) {
    std::filesystem::remove(part, ec);
    throw CommandError{url + " is not a usable GGUF model: " + file.error().to_string()};
  }
  std::filesystem::rename(part, out_path, ec);
  if (ec) throw CommandError{"cannot move " + part + " to " + out_path + ": " + ec.message()};
  std::printf("pulled %s -> %s (%llu bytes, %zu tensors)\n", url.c_str(), out_path.c_str(),
              static_cast<unsigned long long>((*file)->file_bytes()), (*file)->tensors().size());
}

}  // namespace

void add_model_pull(CLI::App& model) {
  auto url = std::make_shared<std::string>();
  auto out = std::make_shared<std::string>();
  CLI::App* cmd = model.add_subcommand("pull", "Download a GGUF model (https, http or file URL)");
  cmd->add_option("URL", *url, "Where the model is")->required();
  cmd->add_option("-o,--output", *out, "Where to save it (default: models/<name from the URL>)");
  cmd->callback([url, out] { pull(*url, *out); });
}

}  // namespace idlefleet::cli
