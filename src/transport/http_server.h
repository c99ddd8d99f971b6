// HttpServer: a thin HTTP/1.1 server (Boost.Beast over Asio) that hands each
// request to one handler and gives it a reply channel, HttpExchange.
//
// Nothing here knows about the API it serves: routing, JSON and
// authentication belong to the caller. What it does own is the wire: keep-alive,
// chunked streams (server-sent events), limits on every input, and the errors
// that a malformed or oversized request earns. Those errors carry a JSON body
// in OpenAI's shape, {"error":{"message":...,"type":...,"param":null,"code":null}},
// with type "invalid_request_error" for 4xx and "server_error" for 5xx:
//   400 unparseable request (not HTTP, bad Content-Length, ...)
//   408 part of a request arrived but not all of it within read_timeout_ms
//   413 body larger than body_bytes_max
//   431 request line and headers larger than header_bytes_max
//   500 the handler threw, or dropped its exchange without replying
//   503 connections_max connections are already open
// After a 500 the connection serves the client's next request; after the
// others it is closed.
//
// Threading: `threads` server threads run one io_context. Each connection has
// a strand: its handler calls, reads and writes never overlap, while different
// connections run in parallel. The handler is called on a server thread and must
// not block (no inference, no disk, no waiting on locks held long): keep the
// exchange, return, and reply from elsewhere. HttpExchange is thread-safe and may
// outlive the handler call, the connection and the server.
//
// Connections: one request at a time per connection (pipelined requests wait
// their turn). While a reply is pending the server keeps reading the socket, so
// that a client that goes away is noticed (closed()) even if nothing is being
// written; a client that half-closes its side counts as gone. Bytes that arrive
// meanwhile (a pipelined request) are kept, up to header_bytes_max. HTTP/1.0
// connections are closed after each reply. Replies to HEAD carry no body.
//
// Ownership: start() returns the server; stop() (or the destructor) closes the
// listener and every connection and joins the threads.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "common/result.h"

namespace idlefleet::transport {

namespace detail {
struct HttpServerState;  // shared by the server and its connections (http_server.cc)
}  // namespace detail

struct HttpHeader {
  std::string name;  // lower-cased on requests; as given on responses
  std::string value;
};

// One request as parsed. Nothing is decoded or normalised beyond the header
// names, so that callers see what the client sent.
struct HttpRequest {
  std::string method;  // "GET", "POST", ...
  std::string target;  // as sent: "/v1/models?limit=2"
  std::string path;    // target up to '?', percent-decoding NOT applied
  std::string query;   // after '?', or ""
  std::vector<HttpHeader> headers;  // in arrival order, names lower-case
  std::string body;                 // at most body_bytes_max bytes
  std::string remote;               // the peer: "127.0.0.1:5555", "[::1]:5555"

  // The first header of that name, or nullptr. REQUIRES: lower_name is lower-case.
  const std::string* header(std::string_view lower_name) const;
};

// A whole reply. The server adds Content-Length and Connection; headers must
// not carry those or Transfer-Encoding (they are dropped), and names and values
// must not contain CR or LF (such headers are dropped: they would split the
// response).
struct HttpResponse {
  int status = 200;  // 200..599; anything else is sent as 500 (no 1xx: the server owns those)
  std::string content_type = "application/json";  // "" sends no Content-Type
  std::vector<HttpHeader> headers;
  std::string body;
};

// One request's reply channel. Exactly one of: respond(), or stream_begin()
// then any number of stream_write() then stream_end(). Calls out of that order
// are ignored (stream_write() returns false).
//
// Thread-safety: every method may be called from any thread, and the exchange
// may be kept after the handler returns (async replies, streams). Once the
// connection is closed (client gone, error, stream over its buffer limit,
// server stopped) every method is a no-op and closed() is true.
//
// If the last reference is dropped without a reply, the client gets a 500; if
// it is dropped in the middle of a stream, the connection is closed after the
// bytes already written, so that the client sees a truncated response.
class HttpExchange {
 public:
  virtual ~HttpExchange() = default;

  // Sends a whole reply. At most once.
  virtual void respond(HttpResponse response) = 0;

  // Starts a streamed reply: Content-Type text/event-stream (unless headers name
  // another), Cache-Control no-cache, chunked transfer encoding (for HTTP/1.0
  // clients: raw bytes, then the connection closes).
  virtual void stream_begin(int status, std::vector<HttpHeader> headers) = 0;

  // Queues bytes as one chunk; they are written in call order. Returns false,
  // and sends nothing, once the connection is closed, or if the bytes queued
  // and not yet taken by the socket would exceed stream_buffer_bytes_max (a
  // client that does not read): then the connection is closed.
  virtual bool stream_write(std::string data) = 0;

  // Ends the stream (the final, empty chunk). The connection then serves the
  // client's next request, or closes if the client asked for that.
  // REQUIRES: no stream_write() still running on another thread (its bytes
  // could land after the final chunk).
  virtual void stream_end() = 0;

  // True once the connection is closed: the client went away (or half-closed
  // its side), or the server closed it. Use it to abandon work nobody waits for.
  virtual bool closed() const = 0;
};

// Called once per request on a server thread, on the connection's strand.
// Must return quickly (see the file comment) and be safe to call from several
// threads at once (for different connections). An exception it throws is
// answered with 500.
using HttpHandler = std::function<void(const HttpRequest&, std::shared_ptr<HttpExchange>)>;

// Every limit the server applies. A request over a limit is answered with the
// error named in the file comment, not passed to the handler.
struct HttpServerOptions {
  std::string host = "127.0.0.1";  // an address or a name that resolves to one
  uint16_t port = 0;               // 0: pick a free port (see HttpServer::port())
  int threads = 2;                 // server threads, 1..kHttpThreadsMax
  size_t body_bytes_max = 8u << 20;             // request body; over it: 413
  // When set, the body limit of one request, decided from its method and
  // path once its headers have arrived (at most body_bytes_max, which then
  // bounds every route): e.g. a larger one for file uploads only.
  std::function<size_t(std::string_view method, std::string_view path)> body_bytes_max_for;
  size_t header_bytes_max = 16u << 10;          // request line + headers; over it: 431
  size_t connections_max = 1024;                // open connections; over it: 503, and beyond
                                                // twice this, closed unanswered
  size_t stream_buffer_bytes_max = 4u << 20;    // given to stream_write() and not yet taken
                                                // by the socket; over it: the stream closes
  int64_t read_timeout_ms = 30000;   // a whole request must arrive within this, counted from
                                     // the connection's start or the end of the previous
                                     // reply; an idle connection then closes silently, a
                                     // partial request gets 408
  int64_t write_timeout_ms = 30000;  // a write that makes no progress for this long
                                     // closes the connection (a client that stopped reading)
};

// Most server threads a server may have.
inline constexpr int kHttpThreadsMax = 256;

// After a reply that closes the connection, the server stops sending and
// drains what the client is still sending, for at most this long and this many
// bytes, before closing: closing with unread input would reset the connection
// and could destroy the reply before the client reads it.
inline constexpr int64_t kHttpLingerMsMax = 2000;
inline constexpr size_t kHttpLingerBytesMax = 1u << 20;

class HttpServer {
 public:
  // Binds host:port, listens, and starts the threads. Errors: kInvalidArgument
  // for options out of range or a null handler, kIo if the address does not
  // resolve or cannot be bound.
  static Result<std::unique_ptr<HttpServer>> start(HttpServerOptions options, HttpHandler handler);

  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;
  ~HttpServer();  // stop()

  // The port listened on (the one chosen, when options.port was 0).
  uint16_t port() const;

  // Closes the listener and every connection (open streams included; their
  // exchanges become closed()), waits for the handlers running now, and joins the
  // threads. Idempotent and safe to call from several threads.
  // REQUIRES: not called from a handler (a server thread cannot join itself).
  void stop();

 private:
  HttpServer(std::shared_ptr<detail::HttpServerState> state, uint16_t port);

  // Connections hold the state too, so that exchanges kept after the server
  // is gone still refer to a live io_context.
  std::shared_ptr<detail::HttpServerState> state_;
  std::vector<std::thread> threads_;
  uint16_t port_ = 0;
  std::mutex stop_mutex_;
  bool stopped_ = false;
};

}  // namespace idlefleet::transport
