// `idlefleet model pull URL [-o FILE]`: download a GGUF model.
//
// Any URL libcurl understands (https, http, file). The download goes to
// FILE.part and is renamed into place only when complete and when it parses
// as GGUF, so an interrupted or wrong download never looks like a model.
#include <curl/curl.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>

#include "cli/commands.h"
#include "engine/gguf.h"

namespace idlefleet::cli {

namespace {

struct Download {
  std::FILE* out = nullptr;
  bool tty = false;
  curl_off_t last_percent = -1;
};

size_t on_data(char* ptr, size_t size, size_t n, void* user) {
  auto* d = static_cast<Download*>(user);
  return std::fwrite(ptr, size, n, d->out) * size;
}

int on_progress(void* user, curl_off_t total, curl_off_t now, curl_off_t, curl_off_t) {
  auto* d = static_cast<Download*>(user);
  if (total <= 0) return 0;
  const curl_off_t percent = now * 100 / total;
  if (percent != d->last_percent && (d->tty || percent % 10 == 0)) {
    std::fprintf(stderr, d->tty ? "\rdownloading: %3d%% of %.1f MB" : "downloading: %3d%% of %.1f MB\n",
                 static_cast<int>(percent), static_cast<double>(total) / 1e6);
    d->last_percent = percent;
  }
  return 0;
}

std::string default_output(const std::string& url) {
  std::string name = url.substr(url.find_last_of('/') + 1);
  if (const size_t q = name.find_first_of("?#"); q != std::string::npos) name.resize(q);
  if (name.empty()) name = "model.gguf";
  return (std::filesystem::path("models") / name).string();
}

void pull(const std::string& url, std::string out_path) {
  if (out_path.empty()) out_path = default_output(url);
  std::error_code ec;
  const auto parent = std::filesystem::path(out_path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent, ec);
  const std::string part = out_path + ".part";
  Download d;
  d.out = std::fopen(part.c_str(), "wb");
  if (d.out == nullptr) throw CommandError{"cannot write " + part};
  d.tty = isatty(2) != 0;
  CURL* curl = curl_easy_init();
  if (curl == nullptr) {
    std::fclose(d.out);
    std::filesystem::remove(part, ec);
    throw CommandError{"libcurl failed to initialise"};
  }
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 1L);
  curl_easy_setopt(curl, CURLOPT_MAXREDIRS, 10L);
  curl_easy_setopt(curl, CURLOPT_FAILONERROR, 1L);
  curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, 30L);
  curl_easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, 1024L);  // abort below 1 KB/s ...
  curl_easy_setopt(curl, CURLOPT_LOW_SPEED_TIME, 60L);     // ... sustained for a minute
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_data);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &d);
  curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
  curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, on_progress);
  curl_easy_setopt(curl, CURLOPT_XFERINFODATA, &d);
  const CURLcode rc = curl_easy_perform(curl);
  curl_easy_cleanup(curl);
  const bool closed = std::fclose(d.out) == 0;
  if (d.tty) std::fputc('\n', stderr);
  if (rc != CURLE_OK || !closed) {
    std::filesystem::remove(part, ec);
    throw CommandError{"download of " + url + " failed: " + (rc != CURLE_OK ? curl_easy_strerror(rc) : "write error")};
  }
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
