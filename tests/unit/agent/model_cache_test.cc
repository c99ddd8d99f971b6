// The vehicle's model cache against a real HTTP server in this process
// (transport::HttpServer serving a catalog and files): a download is
// verified and kept under its digest; a wrong digest, a file larger than
// announced or than the whole cache is refused and leaves nothing behind;
// the cap evicts the least recently used file and keeps the one just used; a
// file left by an earlier run is hashed once before it is trusted. The
// catalog parser refuses every kind of garbage and joins relative URLs.
#include "agent/model_cache.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "transport/download.h"
#include "transport/http_server.h"

namespace idlefleet::agent::model_cache_test {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// Serves GET /v1/catalog and GET /files/<name>, and counts file requests.
class FileServer {
 public:
  FileServer() {
    auto server = transport::HttpServer::start({}, [this](const transport::HttpRequest& r,
                                                          std::shared_ptr<transport::HttpExchange> x) {
      transport::HttpResponse resp;
      std::lock_guard<std::mutex> lock(mu_);
      if (r.method == "GET" && r.path == "/v1/catalog") {
        resp.body = catalog_;
      } else if (r.method == "GET" && r.path.rfind("/files/", 0) == 0 && files_.count(r.path.substr(7)) != 0) {
        ++file_requests_[r.path.substr(7)];
        resp.content_type = "application/octet-stream";
        resp.body = files_[r.path.substr(7)];
      } else {
        resp.status = 404;
        resp.body = "{}";
      }
      x->respond(std::move(resp));
    });
    EXPECT_TRUE(server.has_value()) << server.error().to_string();
    if (server) server_ = std::move(*server);
  }

  std::string base_url() const { return std::string("http://127.0.0.1:").append(std::to_string(server_ ? server_->port() : 0)); }

  void put(const std::string& name, std::string bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    files_[name] = std::move(bytes);
  }
  void set_catalog(std::string text) {
    std::lock_guard<std::mutex> lock(mu_);
    catalog_ = std::move(text);
  }
  int requests(const std::string& name) {
    std::lock_guard<std::mutex> lock(mu_);
    return file_requests_[name];
  }

  // An entry for a file served here, with the digest and size of `bytes`.
  CatalogEntry entry(const std::string& name, const std::string& bytes) {
    put(name, bytes);
    return {name, transport::sha256_hex(bytes), bytes.size(), base_url() + "/files/" + name};
  }

 private:
  std::mutex mu_;
  std::map<std::string, std::string> files_;
  std::map<std::string, int> file_requests_;
  std::string catalog_ = "{\"models\":[]}";
  std::unique_ptr<transport::HttpServer> server_;
};

class ModelCacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(::testing::TempDir()) /
           std::string("model_cache_test_")
               .append(std::to_string(::getpid()))
               .append("_")
               .append(::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
  }
  void TearDown() override {
    if (!HasFailure()) fs::remove_all(dir_);
  }

  // Every file in the cache directory, by name.
  std::vector<std::string> files() const {
    std::vector<std::string> out;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(dir_, ec)) out.push_back(e.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
  }

  static std::string read(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }

  static std::string blob(char c, size_t n) { return std::string(n, c); }

  fs::path dir_;
  FileServer server_;
};

TEST_F(ModelCacheTest, DownloadsVerifiesAndKeepsAFileUnderItsDigest) {
  const std::string bytes = "GGUF" + blob('a', 5000);
  const CatalogEntry e = server_.entry("a", bytes);
  ModelCache cache(dir_.string(), 1u << 20);
  EXPECT_TRUE(cache.cached().empty());

  auto path = cache.ensure(e);
  ASSERT_TRUE(path.has_value()) << path.error().to_string();
  EXPECT_EQ(*path, (dir_ / (e.sha256 + ".gguf")).string());
  EXPECT_EQ(read(*path), bytes);
  EXPECT_EQ(cache.cached(), std::vector<std::string>{e.sha256});
  EXPECT_EQ(files(), std::vector<std::string>{e.sha256 + ".gguf"});  // no .part left
  EXPECT_EQ(server_.requests("a"), 1);

  // Asked again: served from disk, not downloaded again.
  auto again = cache.ensure(e);
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(*again, *path);
  EXPECT_EQ(server_.requests("a"), 1);
}

TEST_F(ModelCacheTest, ADigestMismatchIsRefusedAndLeavesNothing) {
  CatalogEntry e = server_.entry("a", blob('a', 3000));
  e.sha256 = transport::sha256_hex("something else");
  ModelCache cache(dir_.string(), 1u << 20);
  auto path = cache.ensure(e);
  ASSERT_FALSE(path.has_value());
  EXPECT_EQ(path.error().code, ErrorCode::kCorrupt) << path.error().to_string();
  EXPECT_NE(path.error().message.find("SHA-256"), std::string::npos) << path.error().message;
  EXPECT_TRUE(files().empty());
  EXPECT_TRUE(cache.cached().empty());
}

TEST_F(ModelCacheTest, FilesTooLargeAreRefusedAndLeaveNothing) {
  ModelCache cache(dir_.string(), 4096);
  // Larger than the whole cache: refused before any request.
  const CatalogEntry big = server_.entry("big", blob('b', 5000));
  auto r = cache.ensure(big);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, ErrorCode::kOutOfRange) << r.error().to_string();
  EXPECT_EQ(server_.requests("big"), 0);

  // Announced small, served larger: the download stops at the announced size.
  CatalogEntry liar = server_.entry("liar", blob('l', 3000));
  liar.bytes = 1000;
  r = cache.ensure(liar);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, ErrorCode::kOutOfRange) << r.error().to_string();
  EXPECT_TRUE(files().empty());

  // A malformed digest and a missing file are refused too.
  CatalogEntry bad_digest = server_.entry("c", "c");
  bad_digest.sha256 = "ABC";
  r = cache.ensure(bad_digest);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument);
  CatalogEntry missing = server_.entry("d", blob('d', 100));
  missing.url = server_.base_url() + "/files/nothing-here";
  r = cache.ensure(missing);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, ErrorCode::kNotFound) << r.error().to_string();
  EXPECT_TRUE(files().empty());
}

TEST_F(ModelCacheTest, TheCapEvictsTheLeastRecentlyUsedAndKeepsTheMostRecent) {
  const size_t n = 1000;
  const CatalogEntry a = server_.entry("a", blob('a', n));
  const CatalogEntry b = server_.entry("b", blob('b', n));
  const CatalogEntry c = server_.entry("c", blob('c', n));
  ModelCache cache(dir_.string(), 2 * n + n / 2);  // room for two
  ASSERT_TRUE(cache.ensure(a).has_value());
  ASSERT_TRUE(cache.ensure(b).has_value());
  std::vector<std::string> both = {a.sha256, b.sha256};
  std::sort(both.begin(), both.end());
  EXPECT_EQ(cache.cached(), both);

  // a is used again, so b is now the least recently used: c evicts it.
  ASSERT_TRUE(cache.ensure(a).has_value());
  ASSERT_TRUE(cache.ensure(c).has_value());
  std::vector<std::string> kept = {a.sha256, c.sha256};
  std::sort(kept.begin(), kept.end());
  EXPECT_EQ(cache.cached(), kept);
  EXPECT_EQ(server_.requests("a"), 1);

  // b comes back (downloaded again) and evicts a, now the oldest.
  ASSERT_TRUE(cache.ensure(b).has_value());
  kept = {b.sha256, c.sha256};
  std::sort(kept.begin(), kept.end());
  EXPECT_EQ(cache.cached(), kept);
  EXPECT_EQ(server_.requests("b"), 2);

  // Files that are not the cache's own are neither counted nor removed.
  std::ofstream(dir_ / "notes.txt") << blob('x', 10 * n);
  ASSERT_TRUE(cache.ensure(c).has_value());
  EXPECT_TRUE(fs::exists(dir_ / "notes.txt"));
  EXPECT_EQ(cache.cached(), kept);
}

TEST_F(ModelCacheTest, AFileFromAnEarlierRunIsHashedOnceBeforeItIsTrusted) {
  const std::string bytes = blob('p', 2000);
  const CatalogEntry e = server_.entry("p", bytes);
  fs::create_directories(dir_);
  const fs::path path = dir_ / (e.sha256 + ".gguf");
  std::ofstream(path, std::ios::binary) << bytes;

  ModelCache cache(dir_.string(), 1u << 20);
  auto r = cache.ensure(e);
  ASSERT_TRUE(r.has_value()) << r.error().to_string();
  EXPECT_EQ(server_.requests("p"), 0);  // verified on disk, not downloaded

  // Once verified, this process trusts it: it is not hashed again.
  std::ofstream(path, std::ios::binary | std::ios::app) << "tampered";
  r = cache.ensure(e);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(server_.requests("p"), 0);

  // A new process (a new cache) hashes it again, finds it wrong, and fetches
  // a good copy in its place.
  ModelCache fresh(dir_.string(), 1u << 20);
  r = fresh.ensure(e);
  ASSERT_TRUE(r.has_value()) << r.error().to_string();
  EXPECT_EQ(server_.requests("p"), 1);
  EXPECT_EQ(read(path.string()), bytes);
  EXPECT_EQ(files(), std::vector<std::string>{e.sha256 + ".gguf"});
}

TEST_F(ModelCacheTest, TheCatalogIsFetchedOverHttpWithAbsoluteUrls) {
  const std::string hash = transport::sha256_hex("m");
  server_.set_catalog(json{{"models", {{{"id", "m"}, {"sha256", hash}, {"bytes", 1}, {"url", "/files/m"}}}}}.dump());
  auto catalog = fetch_catalog(server_.base_url() + "/");
  ASSERT_TRUE(catalog.has_value()) << catalog.error().to_string();
  ASSERT_EQ(catalog->size(), 1u);
  EXPECT_EQ((*catalog)[0].url, server_.base_url() + "/files/m");

  server_.set_catalog("<html>not a catalog</html>");
  catalog = fetch_catalog(server_.base_url());
  ASSERT_FALSE(catalog.has_value());
  EXPECT_EQ(catalog.error().code, ErrorCode::kCorrupt);

  // Nobody listening.
  EXPECT_FALSE(fetch_catalog("http://127.0.0.1:1").has_value());
}

// ---- parse_catalog ---------------------------------------------------------------

json model(json extra = json::object()) {
  json m = {{"id", "stories260K"}, {"sha256", std::string(64, 'a')}, {"bytes", 1234}, {"url", "/v1/catalog/x/file"}};
  for (auto& [k, v] : extra.items()) m[k] = v;
  return m;
}

TEST(ParseCatalog, AGoodCatalogIsRead) {
  const json doc = {{"models", {model(), model({{"id", "other"}, {"url", "https://cdn.example/o.gguf"}})}}};
  auto c = parse_catalog(doc.dump(), "http://coordinator:8080");
  ASSERT_TRUE(c.has_value()) << c.error().to_string();
  ASSERT_EQ(c->size(), 2u);
  EXPECT_EQ((*c)[0].id, "stories260K");
  EXPECT_EQ((*c)[0].sha256, std::string(64, 'a'));
  EXPECT_EQ((*c)[0].bytes, 1234u);
  EXPECT_EQ((*c)[0].url, "http://coordinator:8080/v1/catalog/x/file");
  EXPECT_EQ((*c)[1].url, "https://cdn.example/o.gguf");  // absolute: as given
  EXPECT_TRUE(parse_catalog(R"({"models":[]})", "http://h").value().empty());
  // Unknown fields are ignored.
  EXPECT_TRUE(parse_catalog(json{{"models", json::array()}, {"next", 1}}.dump(), "http://h").has_value());
}

TEST(ParseCatalog, RelativeUrlsAreJoinedToTheBase) {
  struct Case {
    const char* base;
    const char* url;
    const char* want;
  };
  for (const Case& c : std::vector<Case>{{"http://h:1", "/a/b", "http://h:1/a/b"},
                                         {"http://h:1/", "/a/b", "http://h:1/a/b"},
                                         {"http://h:1///", "a/b", "http://h:1/a/b"},
                                         {"http://h:1", "a", "http://h:1/a"},
                                         {"http://h:1", "file:///srv/m.gguf", "file:///srv/m.gguf"}}) {
    auto r = parse_catalog(json{{"models", {model({{"url", c.url}})}}}.dump(), c.base);
    ASSERT_TRUE(r.has_value()) << c.url;
    EXPECT_EQ((*r)[0].url, c.want) << c.base << " + " << c.url;
  }
}

TEST(ParseCatalog, GarbageIsRefused) {
  std::vector<std::string> bad = {"", "not json", "[]", "null", "42", "{}", R"({"models":{}})", R"({"models":"x"})",
                                  R"({"models":[1]})", R"({"models":[null]})", R"({"model":[]})"};
  for (const char* key : {"id", "sha256", "bytes", "url"}) {
    json m = model();
    m.erase(key);
    bad.push_back(json{{"models", {m}}}.dump());
    bad.push_back(json{{"models", {model({{key, nullptr}})}}}.dump());
  }
  for (const json& wrong : {model({{"id", 5}}), model({{"id", ""}}), model({{"id", std::string(129, 'i')}}),
                            model({{"sha256", std::string(64, 'A')}}), model({{"sha256", std::string(63, 'a')}}),
                            model({{"sha256", std::string(65, 'a')}}), model({{"sha256", std::string(63, 'a') + "g"}}),
                            model({{"sha256", 7}}), model({{"bytes", -1}}), model({{"bytes", "12"}}),
                            model({{"bytes", 1.5}}), model({{"url", 3}}), model({{"url", json::array()}})}) {
    bad.push_back(json{{"models", {model(), wrong}}}.dump());
  }
  for (const std::string& text : bad) {
    auto r = parse_catalog(text, "http://h");
    EXPECT_FALSE(r.has_value()) << "accepted: " << text;
    if (!r) {
      EXPECT_EQ(r.error().code, ErrorCode::kCorrupt) << text;
    }
  }
}

TEST(ParseCatalog, LimitsAreEnforced) {
  json many = json::array();
  for (size_t i = 0; i <= kCatalogModelsMax; ++i) many.push_back(model({{"id", std::string("m").append(std::to_string(i))}}));
  auto r = parse_catalog(json{{"models", many}}.dump(), "http://h");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, ErrorCode::kOutOfRange);
  many.erase(many.size() - 1);
  EXPECT_TRUE(parse_catalog(json{{"models", many}}.dump(), "http://h").has_value());

  const std::string huge = R"({"models":[], "pad":")" + std::string(kCatalogBytesMax, 'x') + "\"}";
  r = parse_catalog(huge, "http://h");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, ErrorCode::kOutOfRange);
}

}  // namespace
}  // namespace idlefleet::agent::model_cache_test
