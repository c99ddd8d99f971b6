#include "support/http_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <mutex>

#include <curl/curl.h>

namespace idlefleet::testing {
namespace {

using Clock = std::chrono::steady_clock;

char ascii_lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

// curl_global_init is not thread-safe: once, before the first handle.
void init_curl() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

struct Transfer {
  HttpResult* result;
  const std::function<void(std::string_view)>* on_data;  // nullptr: collect into result->body
};

size_t on_body(char* data, size_t size, size_t count, void* user) {
  auto* transfer = static_cast<Transfer*>(user);
  const std::string_view piece(data, size * count);
  if (transfer->on_data != nullptr) {
    (*transfer->on_data)(piece);
  } else {
    transfer->result->body += piece;
  }
  return piece.size();
}

size_t on_header_line(char* data, size_t size, size_t count, void* user) {
  auto* result = static_cast<Transfer*>(user)->result;
  std::string_view line(data, size * count);
  while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.remove_suffix(1);
  // A status line starts a response; headers of an interim one (100) go.
  if (line.starts_with("HTTP/")) {
    result->headers.clear();
  } else if (const size_t colon = line.find(':'); colon != std::string_view::npos) {
    std::string name(line.substr(0, colon));
    std::transform(name.begin(), name.end(), name.begin(), ascii_lower);
    std::string_view value = line.substr(colon + 1);
    while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
    result->headers.emplace_back(std::move(name), std::string(value));
  }
  return size * count;
}

HttpResult init_failed() {
  HttpResult result;
  result.error = "curl_easy_init failed";
  return result;
}

// One request on handle (reset first). body == nullptr: GET.
HttpResult perform(CURL* curl, const std::string& url, const std::string* body, const std::vector<std::string>& headers,
                   const std::function<void(std::string_view)>* on_data, bool* reused, const char* method = nullptr) {
  HttpResult result;
  Transfer transfer{&result, on_data};
  curl_easy_reset(curl);
  curl_slist* list = nullptr;
  for (const std::string& h : headers) list = curl_slist_append(list, h.c_str());
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_NOPROXY, "*");
  // A stream may wait in the queue behind many others in the sanitizer
  // build on a loaded machine: it gets longer than a whole request.
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, on_data != nullptr ? kHttpStreamTimeoutMs : kHttpClientTimeoutMs);
  curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, kHttpClientTimeoutMs);
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, list);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &transfer);
  curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_header_line);
  curl_easy_setopt(curl, CURLOPT_HEADERDATA, &transfer);
  if (body != nullptr) {
    curl_easy_setopt(curl, CURLOPT_POST, 1L);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body->data());
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body->size()));
  }
  if (method != nullptr) curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
  const CURLcode code = curl_easy_perform(curl);
  if (code != CURLE_OK) result.error = curl_easy_strerror(code);
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &result.status);
  if (reused != nullptr) {
    long connects = 0;
    curl_easy_getinfo(curl, CURLINFO_NUM_CONNECTS, &connects);
    *reused = code == CURLE_OK && connects == 0;
  }
  curl_slist_free_all(list);
  return result;
}

HttpResult perform_once(const std::string& url, const std::string* body, const std::vector<std::string>& headers,
                        const std::function<void(std::string_view)>* on_data, const char* method = nullptr) {
  init_curl();
  CURL* curl = curl_easy_init();
  if (curl == nullptr) return init_failed();
  HttpResult result = perform(curl, url, body, headers, on_data, nullptr, method);
  curl_easy_cleanup(curl);
  return result;
}

int connect_loopback(uint16_t port, int receive_buffer_bytes) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  if (receive_buffer_bytes > 0) {
    ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &receive_buffer_bytes, sizeof receive_buffer_bytes);
  }
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// Sends all of bytes unless the peer stops reading for timeout_ms or resets.
bool send_all(int fd, std::string_view bytes, int timeout_ms) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  while (!bytes.empty()) {
    const ssize_t n = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      bytes.remove_prefix(static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) return false;
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return false;
    pollfd p{fd, POLLOUT, 0};
    ::poll(&p, 1, static_cast<int>(left));
  }
  return true;
}

// Appends what arrives to out until stop(out) holds, EOF, an error or the
// deadline. Returns true if the peer closed (EOF or reset).
template <class Stop>
bool receive(int fd, std::string& out, Clock::time_point deadline, const Stop& stop) {
  char buffer[16384];
  while (!stop(out)) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return false;
    pollfd p{fd, POLLIN, 0};
    const int ready = ::poll(&p, 1, static_cast<int>(left));
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) return false;
    const ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return true;
    out.append(buffer, static_cast<size_t>(n));
  }
  return false;
}

}  // namespace

const std::string* HttpResult::header(std::string_view lower_name) const {
  for (const auto& [name, value] : headers) {
    if (name == lower_name) return &value;
  }
  return nullptr;
}

HttpResult http_get(const std::string& url, const std::vector<std::string>& headers) {
  return perform_once(url, nullptr, headers, nullptr);
}

HttpResult http_post(const std::string& url, const std::string& body, const std::vector<std::string>& headers) {
  return perform_once(url, &body, headers, nullptr);
}

HttpResult http_request(const std::string& method, const std::string& url, const std::string& body,
                        const std::vector<std::string>& headers) {
  return perform_once(url, &body, headers, nullptr, method.c_str());
}

HttpResult http_post_stream(const std::string& url, const std::string& body,
                            const std::function<void(std::string_view)>& on_data,
                            const std::vector<std::string>& headers) {
  return perform_once(url, &body, headers, &on_data);
}

HttpSession::HttpSession() {
  init_curl();
  curl_ = curl_easy_init();
}

HttpSession::~HttpSession() {
  if (curl_ != nullptr) curl_easy_cleanup(static_cast<CURL*>(curl_));
}

HttpResult HttpSession::get(const std::string& url, const std::vector<std::string>& headers) {
  if (curl_ == nullptr) return init_failed();
  return perform(static_cast<CURL*>(curl_), url, nullptr, headers, nullptr, &last_reused_);
}

HttpResult HttpSession::post(const std::string& url, const std::string& body, const std::vector<std::string>& headers) {
  if (curl_ == nullptr) return init_failed();
  return perform(static_cast<CURL*>(curl_), url, &body, headers, nullptr, &last_reused_);
}

void SseParser::feed(std::string_view piece) {
  pending_ += piece;
  size_t start = 0;
  for (size_t end; (end = pending_.find('\n', start)) != std::string::npos; start = end + 1) {
    std::string_view line(pending_.data() + start, end - start);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) {
      if (has_data_) events_.push_back(std::move(data_));
      data_.clear();
      has_data_ = false;
      continue;
    }
    const size_t colon = line.find(':');
    const std::string_view field = line.substr(0, colon);
    if (field != "data") continue;  // comments (empty field) and other fields
    std::string_view value = colon == std::string_view::npos ? std::string_view() : line.substr(colon + 1);
    if (value.starts_with(' ')) value.remove_prefix(1);
    if (has_data_) data_ += '\n';
    data_ += value;
    has_data_ = true;
  }
  pending_.erase(0, start);
}

std::vector<std::string> SseParser::take_events() { return std::exchange(events_, {}); }

std::string raw_exchange(uint16_t port, const std::string& bytes, int timeout_ms) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  const int fd = connect_loopback(port, 0);
  if (fd < 0) return {};
  // The server may answer and close before taking everything (a body it
  // refuses): still read what it said.
  send_all(fd, bytes, timeout_ms);
  std::string out;
  receive(fd, out, deadline, [](const std::string&) { return false; });
  ::close(fd);
  return out;
}

RawConnection::~RawConnection() { close(); }

bool RawConnection::connect(uint16_t port, int receive_buffer_bytes) {
  close();
  fd_ = connect_loopback(port, receive_buffer_bytes);
  return fd_ >= 0;
}

bool RawConnection::send(std::string_view bytes) {
  return fd_ >= 0 && send_all(fd_, bytes, static_cast<int>(kHttpClientTimeoutMs));
}

const std::string& RawConnection::read_until(std::string_view marker, int timeout_ms) {
  if (fd_ < 0 || peer_closed_) return received_;
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  peer_closed_ = receive(fd_, received_, deadline,
                         [marker](const std::string& out) { return out.find(marker) != std::string::npos; });
  return received_;
}

bool RawConnection::wait_closed(int timeout_ms) {
  if (fd_ < 0 || peer_closed_) return true;
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  peer_closed_ = receive(fd_, received_, deadline, [](const std::string&) { return false; });
  return peer_closed_;
}

void RawConnection::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  peer_closed_ = false;
}

}  // namespace idlefleet::testing
