#include "cli/http_post.h"

#include <curl/curl.h>

#include <memory>

namespace idlefleet::cli {

namespace {

size_t keep(char* data, size_t size, size_t n, void* user) {
  auto* out = static_cast<std::string*>(user);
  const size_t bytes = size * n;
  if (out->size() < kHttpPostResponseBytesMax) {
    out->append(data, std::min(bytes, kHttpPostResponseBytesMax - out->size()));
  }
  return bytes;
}

struct CurlFree {
  void operator()(CURL* c) const { curl_easy_cleanup(c); }
};

HttpPostResult perform(CURL* curl, const std::string& url, long timeout_s) {
  HttpPostResult r;
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, keep);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &r.body);
  curl_easy_setopt(curl, CURLOPT_TIMEOUT, timeout_s);
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  const CURLcode rc = curl_easy_perform(curl);
  if (rc == CURLE_OK) curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &r.status);
  r.refused = rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST;
  return r;
}

}  // namespace

HttpPostResult post_json(const std::string& url, const std::string& body, long timeout_s) {
  std::unique_ptr<CURL, CurlFree> curl(curl_easy_init());
  if (!curl) return {};
  curl_slist* headers = curl_slist_append(nullptr, "Content-Type: application/json");
  curl_easy_setopt(curl.get(), CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(curl.get(), CURLOPT_POSTFIELDS, body.c_str());
  curl_easy_setopt(curl.get(), CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
  HttpPostResult r = perform(curl.get(), url, timeout_s);
  curl_slist_free_all(headers);
  return r;
}

HttpPostResult http_get(const std::string& url, long timeout_s) {
  std::unique_ptr<CURL, CurlFree> curl(curl_easy_init());
  if (!curl) return {};
  return perform(curl.get(), url, timeout_s);
}

HttpPostResult post_file(const std::string& url, const std::string& purpose, const std::string& file_name,
                         const std::string& content, long timeout_s) {
  std::unique_ptr<CURL, CurlFree> curl(curl_easy_init());
  if (!curl) return {};
  curl_mime* mime = curl_mime_init(curl.get());
  curl_mimepart* part = curl_mime_addpart(mime);
  curl_mime_name(part, "purpose");
  curl_mime_data(part, purpose.data(), purpose.size());
  part = curl_mime_addpart(mime);
  curl_mime_name(part, "file");
  curl_mime_filename(part, file_name.c_str());
  curl_mime_type(part, "application/jsonl");
  curl_mime_data(part, content.data(), content.size());
  curl_easy_setopt(curl.get(), CURLOPT_MIMEPOST, mime);
  HttpPostResult r = perform(curl.get(), url, timeout_s);
  curl_mime_free(mime);
  return r;
}

}  // namespace idlefleet::cli
