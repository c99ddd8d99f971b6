// HTTP clients for tests that talk to a real server on loopback: libcurl for
// well-formed requests (one-shot, keep-alive sessions, streams), raw TCP for
// bytes that no well-behaved client would send, and a parser for
// text/event-stream bodies.
//
// Every call has a deadline (kHttpClientTimeoutMs unless given), so that a
// server bug fails a test instead of hanging it. Proxies from the environment
// are ignored.
//
// Thread-safety: the free functions may be called from any number of threads
// at once. HttpSession, SseParser and RawConnection are for one thread at a time.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace idlefleet::testing {

// How long a curl request may take in all: long enough for a streamed
// completion that survives preemptions in the integration tests.
inline constexpr long kHttpClientTimeoutMs = 120000;
inline constexpr long kHttpStreamTimeoutMs = 600000;  // http_post_stream

struct HttpResult {
  long status = 0;   // 0 when no response arrived (see error)
  std::string body;  // for streams, what on_data was not given (empty)
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased, of the final response
  std::string error;  // curl's description of a failure, or ""

  // The first header of that name, or nullptr. REQUIRES: lower_name is lower-case.
  const std::string* header(std::string_view lower_name) const;
};

// headers: lines like "Content-Type: application/json".
HttpResult http_get(const std::string& url, const std::vector<std::string>& headers = {});
HttpResult http_post(const std::string& url, const std::string& body, const std::vector<std::string>& headers = {});
// Any other method with a body ("PUT", "PATCH", "DELETE").
HttpResult http_request(const std::string& method, const std::string& url, const std::string& body,
                        const std::vector<std::string>& headers = {});

// Streams: calls on_data with each received piece of the body, on the calling
// thread; returns when the response ends (or fails: see error).
HttpResult http_post_stream(const std::string& url, const std::string& body,
                            const std::function<void(std::string_view)>& on_data,
                            const std::vector<std::string>& headers = {});

// One curl handle used for several requests, so that they share a keep-alive
// connection when the server allows it.
class HttpSession {
 public:
  HttpSession();
  ~HttpSession();
  HttpSession(const HttpSession&) = delete;
  HttpSession& operator=(const HttpSession&) = delete;

  HttpResult get(const std::string& url, const std::vector<std::string>& headers = {});
  HttpResult post(const std::string& url, const std::string& body, const std::vector<std::string>& headers = {});

  // Whether the last request went over a connection opened before it.
  bool last_reused_connection() const { return last_reused_; }

 private:
  void* curl_;  // CURL*; kept out of this header so that tests need no curl.h
  bool last_reused_ = false;
};

// Splits a text/event-stream into the data of each event, in order: the
// "data:" lines of an event joined with '\n'. Events and lines may be split
// anywhere across pieces; CRLF and LF line ends are both accepted; comments
// (":") and other fields are skipped; an event without data yields nothing.
class SseParser {
 public:
  void feed(std::string_view piece);
  // The events completed since the last call.
  std::vector<std::string> take_events();

 private:
  std::string pending_;  // an incomplete line
  std::string data_;     // the current event's data so far
  bool has_data_ = false;
  std::vector<std::string> events_;
};

// Connects to 127.0.0.1:port, sends bytes, and returns everything that came
// back until the server closed the connection or timeout_ms passed. The
// sending side is never shut down, so that a truncated request stays truncated.
std::string raw_exchange(uint16_t port, const std::string& bytes, int timeout_ms = 2000);

// A TCP connection driven by hand, for tests that hold a connection open,
// read part of a reply, or leave abruptly.
class RawConnection {
 public:
  RawConnection() = default;
  ~RawConnection();  // close()
  RawConnection(const RawConnection&) = delete;
  RawConnection& operator=(const RawConnection&) = delete;

  // Connects to 127.0.0.1:port. receive_buffer_bytes > 0 shrinks the socket's
  // receive buffer (for tests of a client that does not read).
  bool connect(uint16_t port, int receive_buffer_bytes = 0);
  bool send(std::string_view bytes);
  // Reads until what has arrived contains marker, the server closes, or
  // timeout_ms passes; returns everything received so far on this connection.
  const std::string& read_until(std::string_view marker, int timeout_ms = 5000);
  // Reads until the server closes; false if timeout_ms passes first.
  bool wait_closed(int timeout_ms = 5000);
  const std::string& received() const { return received_; }
  void close();

 private:
  int fd_ = -1;
  bool peer_closed_ = false;
  std::string received_;
};

}  // namespace idlefleet::testing
