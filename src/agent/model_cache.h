// The vehicle's model cache: GGUF files named by their SHA-256, downloaded
// from the coordinator's catalog (or any URL), verified, size-capped, and
// evicted least recently used first.
//
// The catalog is JSON from the coordinator (GET /v1/catalog):
//   {"models":[{"id":"stories260K","sha256":"<64 hex>","bytes":N,"url":"/v1/catalog/stories260K/file"}]}
// A relative url is resolved against the coordinator's base URL.
//
// Loaded weights are shared: every simulated vehicle in one agent process
// that runs the same model uses one immutable engine::Model.
//
// Thread-safety: ModelCache and ModelPool are safe to use from any thread.
// ensure() holds the cache's lock through a download and ModelPool::get()
// through a load, so one of each happens at a time per process.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "engine/model.h"

namespace idlefleet::agent {

inline constexpr size_t kCatalogBytesMax = 1u << 20;
inline constexpr size_t kCatalogModelsMax = 1024;
// A model in use is marked used on disk (its mtime, for LRU across runs) at
// most this often, so starting an attempt costs no disk access.
inline constexpr int64_t kCacheTouchIntervalMs = 60'000;

struct CatalogEntry {
  std::string id;
  std::string sha256;  // lower-case hex, 64 characters
  uint64_t bytes = 0;
  std::string url;     // absolute
};

// Parses and validates a catalog; relative urls are joined to base_url.
Result<std::vector<CatalogEntry>> parse_catalog(std::string_view json_text, std::string_view base_url);
// GET base_url + "/v1/catalog".
Result<std::vector<CatalogEntry>> fetch_catalog(const std::string& base_url);

class ModelCache {
 public:
  // REQUIRES: bytes_max > 0.
  ModelCache(std::string dir, uint64_t bytes_max);

  // The local path of the entry's file, downloaded and verified if it is not
  // here yet. Marks it most recently used and evicts the least recently used
  // others while the cache exceeds its cap. Errors: a model larger than the
  // whole cache, a failed download, a digest mismatch.
  Result<std::string> ensure(const CatalogEntry& entry);

  // Digests of the models on disk now.
  std::vector<std::string> cached() const;
  // Whether the model is here and verified by this process (no disk access).
  bool has(const std::string& sha256) const;
  const std::string& dir() const { return dir_; }

 private:
  void evict_locked(const std::string& keep);

  std::string dir_;
  uint64_t bytes_max_;
  mutable std::mutex mu_;
  std::set<std::string> verified_;  // digests checked by this process
  std::map<std::string, int64_t> touched_ms_;  // when each was last marked used on disk (steady clock)
  std::map<std::string, int64_t> used_seq_;    // order of last use by this process
  int64_t next_use_ = 1;
};

// Loaded models by path, shared by every vehicle in the process.
class ModelPool {
 public:
  Result<std::shared_ptr<const engine::Model>> get(const std::string& path);

 private:
  std::mutex mu_;
  std::map<std::string, std::shared_ptr<const engine::Model>> loaded_;
};

}  // namespace idlefleet::agent
