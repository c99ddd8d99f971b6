#include "agent/model_cache.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "common/check.h"
#include "transport/download.h"

namespace idlefleet::agent {

namespace fs = std::filesystem;

namespace {

bool is_hex64(const std::string& s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

std::string join_url(std::string_view base, const std::string& url) {
  if (url.find("://") != std::string::npos) return url;
  std::string b(base);
  while (!b.empty() && b.back() == '/') b.pop_back();
  return b + (url.empty() || url[0] != '/' ? "/" : "") + url;
}

}  // namespace

Result<std::vector<CatalogEntry>> parse_catalog(std::string_view json_text, std::string_view base_url) {
  if (json_text.size() > kCatalogBytesMax) return Unexpected(ErrorCode::kOutOfRange, "catalog: too large");
  const nlohmann::json j = nlohmann::json::parse(json_text, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("models") || !j["models"].is_array()) {
    return Unexpected(ErrorCode::kCorrupt, "catalog: expected {\"models\": [...]}");
  }
  if (j["models"].size() > kCatalogModelsMax) return Unexpected(ErrorCode::kOutOfRange, "catalog: too many models");
  std::vector<CatalogEntry> out;
  for (const auto& m : j["models"]) {
    if (!m.is_object() || !m.contains("id") || !m["id"].is_string() || !m.contains("sha256") ||
        !m["sha256"].is_string() || !m.contains("bytes") || !m["bytes"].is_number_unsigned() || !m.contains("url") ||
        !m["url"].is_string()) {
      return Unexpected(ErrorCode::kCorrupt, "catalog: each model needs id, sha256, bytes and url");
    }
    CatalogEntry e;
    e.id = m["id"].get<std::string>();
    e.sha256 = m["sha256"].get<std::string>();
    e.bytes = m["bytes"].get<uint64_t>();
    if (e.id.empty() || e.id.size() > 128) return Unexpected(ErrorCode::kCorrupt, "catalog: bad model id");
    if (!is_hex64(e.sha256)) return Unexpected(ErrorCode::kCorrupt, "catalog: model " + e.id + ": bad sha256");
    e.url = join_url(base_url, m["url"].get<std::string>());
    out.push_back(std::move(e));
  }
  return out;
}

Result<std::vector<CatalogEntry>> fetch_catalog(const std::string& base_url) {
  const std::string tmp = (fs::temp_directory_path() / ("idlefleet-catalog-" + std::to_string(::getpid()) + "-" +
                                                        std::to_string(reinterpret_cast<uintptr_t>(&base_url))))
                              .string();
  transport::DownloadOptions options;
  options.bytes_max = kCatalogBytesMax;
  options.connect_timeout_ms = 5000;
  std::string url = base_url;
  while (!url.empty() && url.back() == '/') url.pop_back();
  IF_RETURN_IF_ERROR(transport::download_file(url + "/v1/catalog", tmp, options));
  std::ifstream in(tmp, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  std::error_code ec;
  fs::remove(tmp, ec);
  return parse_catalog(ss.str(), url);
}

ModelCache::ModelCache(std::string dir, uint64_t bytes_max) : dir_(std::move(dir)), bytes_max_(bytes_max) {
  CHECK(bytes_max_ > 0);
}

std::vector<std::string> ModelCache::cached() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir_, ec)) {
    if (e.path().extension() == ".gguf" && is_hex64(e.path().stem().string())) out.push_back(e.path().stem().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

void ModelCache::evict_locked(const std::string& keep) {
  // Least recently used first: files this process has not used, by their
  // mtime (from earlier runs), then the ones it has, by their last use.
  struct File {
    fs::path path;
    bool used_here;
    int64_t used;  // use order if used_here, else mtime ticks
    uint64_t bytes;
  };
  std::vector<File> files;
  uint64_t total = 0;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir_, ec)) {
    if (e.path().extension() != ".gguf" || !is_hex64(e.path().stem().string())) continue;
    const uint64_t bytes = e.file_size(ec);
    auto u = used_seq_.find(e.path().stem().string());
    const int64_t when = u != used_seq_.end() ? u->second : e.last_write_time(ec).time_since_epoch().count();
    files.push_back({e.path(), u != used_seq_.end(), when, bytes});
    total += bytes;
  }
  std::sort(files.begin(), files.end(), [](const File& a, const File& b) {
    return std::make_pair(a.used_here, a.used) < std::make_pair(b.used_here, b.used);
  });
  for (const File& f : files) {
    if (total <= bytes_max_) break;
    if (f.path.stem().string() == keep) continue;
    fs::remove(f.path, ec);
    verified_.erase(f.path.stem().string());
    touched_ms_.erase(f.path.stem().string());
    used_seq_.erase(f.path.stem().string());
    total -= f.bytes;
  }
}

bool ModelCache::has(const std::string& sha256) const {
  std::lock_guard<std::mutex> lock(mu_);
  return verified_.count(sha256) != 0;
}

Result<std::string> ModelCache::ensure(const CatalogEntry& entry) {
  if (!is_hex64(entry.sha256)) return Unexpected(ErrorCode::kInvalidArgument, "model " + entry.id + ": bad sha256");
  if (entry.bytes > bytes_max_) {
    return Unexpected(ErrorCode::kOutOfRange, "model " + entry.id + " (" + std::to_string(entry.bytes) +
                                                  " bytes) is larger than the cache (" + std::to_string(bytes_max_) +
                                                  " bytes)");
  }
  std::lock_guard<std::mutex> lock(mu_);
  const fs::path path = fs::path(dir_) / (entry.sha256 + ".gguf");
  const int64_t now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                             std::chrono::steady_clock::now().time_since_epoch())
                             .count();
  if (verified_.count(entry.sha256) != 0) {
    // The fast path of every attempt: verified, and marked used recently.
    used_seq_[entry.sha256] = next_use_++;
    auto t = touched_ms_.find(entry.sha256);
    if (t != touched_ms_.end() && now_ms - t->second < kCacheTouchIntervalMs) return path.string();
  }
  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (fs::exists(path, ec) && verified_.count(entry.sha256) == 0) {
    // Left by an earlier run: trust it only after hashing it once.
    auto digest = transport::sha256_file(path.string());
    if (digest && *digest == entry.sha256) {
      verified_.insert(entry.sha256);
    } else {
      fs::remove(path, ec);
    }
  }
  if (!fs::exists(path, ec)) {
    transport::DownloadOptions options;
    options.bytes_max = std::max<uint64_t>(entry.bytes, 1);
    options.sha256_hex = entry.sha256;
    IF_RETURN_IF_ERROR(transport::download_file(entry.url, path.string(), options));
    verified_.insert(entry.sha256);
  }
  fs::last_write_time(path, fs::file_time_type::clock::now(), ec);  // most recently used
  touched_ms_[entry.sha256] = now_ms;
  used_seq_[entry.sha256] = next_use_++;
  evict_locked(entry.sha256);
  return path.string();
}

Result<std::shared_ptr<const engine::Model>> ModelPool::get(const std::string& path) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = loaded_.find(path);
  if (it != loaded_.end()) return it->second;
  auto model = engine::Model::load(path);
  if (!model) return Unexpected(model.error());
  std::shared_ptr<const engine::Model> shared(std::move(*model));
  loaded_.emplace(path, shared);
  return shared;
}

}  // namespace idlefleet::agent
