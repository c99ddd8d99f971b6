#include "transport/http_server.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <deque>
#include <limits>
#include <optional>
#include <unordered_map>
#include <utility>

// GCC 12 with the sanitizers reports boost::optional inside Beast's parser as
// maybe-uninitialized: a known false positive in Boost's code, not ours.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#pragma GCC diagnostic pop

#include "common/check.h"

namespace idlefleet::transport {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using SysError = boost::system::error_code;

const std::string* HttpRequest::header(std::string_view lower_name) const {
  for (const HttpHeader& h : headers) {
    if (h.name == lower_name) return &h.value;
  }
  return nullptr;
}

namespace {

// Bytes asked of the socket per read while a reply is pending or while
// lingering; small, because it usually only ever sees EOF.
constexpr size_t kBackgroundReadBytes = 4096;
// Buffers gathered into one write_some: a stream's small events go out together.
constexpr size_t kWriteGatherMax = 64;
// Pause before accepting again after accept() failed (out of descriptors),
// so that the loop does not spin.
constexpr int64_t kAcceptRetryMs = 20;

constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";

char ascii_lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() &&
         std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) { return ascii_lower(x) == ascii_lower(y); });
}

// RFC 9110 token characters, the only ones allowed in a header name.
bool is_token(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
    if (!ok) return false;
  }
  return true;
}

bool is_field_value(std::string_view s) {
  return s.find_first_of(std::string_view("\r\n\0", 3)) == std::string_view::npos;
}

// Headers the server writes itself, or that would change the framing.
bool is_reserved(std::string_view name) {
  return iequals(name, "content-length") || iequals(name, "transfer-encoding") || iequals(name, "connection");
}

bool has_header(const std::vector<HttpHeader>& headers, std::string_view name) {
  return std::any_of(headers.begin(), headers.end(), [&](const HttpHeader& h) { return iequals(h.name, name); });
}

void append_status_line(std::string& out, int status) {
  out += "HTTP/1.1 ";
  out += std::to_string(status);
  out += ' ';
  // Beast names the registered codes; a reason phrase is optional (RFC 9112).
  if (http::int_to_status(static_cast<unsigned>(status)) != http::status::unknown) {
    out += http::obsolete_reason(static_cast<http::status>(status));
  }
  out += "\r\n";
}

void append_header(std::string& out, std::string_view name, std::string_view value) {
  out += name;
  out += ": ";
  out += value;
  out += "\r\n";
}

void append_caller_headers(std::string& out, const std::vector<HttpHeader>& headers) {
  for (const HttpHeader& h : headers) {
    if (!is_token(h.name) || !is_field_value(h.value) || is_reserved(h.name)) continue;
    append_header(out, h.name, h.value);
  }
}

std::string serialize_response(const HttpResponse& response, bool keep_alive, bool head) {
  const int status = (response.status >= 200 && response.status <= 599) ? response.status : 500;
  const bool bodyless = status == 204 || status == 304;
  std::string out;
  out.reserve(256 + (head || bodyless ? 0 : response.body.size()));
  append_status_line(out, status);
  if (!response.content_type.empty() && is_field_value(response.content_type)) {
    append_header(out, "Content-Type", response.content_type);
  }
  if (!bodyless) append_header(out, "Content-Length", std::to_string(response.body.size()));
  append_header(out, "Connection", keep_alive ? "keep-alive" : "close");
  append_caller_headers(out, response.headers);
  out += "\r\n";
  if (!head && !bodyless) out += response.body;
  return out;
}

std::string serialize_stream_head(int status, const std::vector<HttpHeader>& headers, bool keep_alive,
                                  bool chunked) {
  if (status < 200 || status > 599) status = 500;
  std::string out;
  append_status_line(out, status);
  if (!has_header(headers, "content-type")) append_header(out, "Content-Type", "text/event-stream");
  if (!has_header(headers, "cache-control")) append_header(out, "Cache-Control", "no-cache");
  if (chunked) append_header(out, "Transfer-Encoding", "chunked");
  append_header(out, "Connection", keep_alive ? "keep-alive" : "close");
  append_caller_headers(out, headers);
  out += "\r\n";
  return out;
}

std::string chunk(std::string_view data) {
  char size[24];
  const int n = std::snprintf(size, sizeof size, "%zx\r\n", data.size());
  std::string out;
  out.reserve(static_cast<size_t>(n) + data.size() + 2);
  out.append(size, static_cast<size_t>(n));
  out += data;
  out += "\r\n";
  return out;
}

constexpr std::string_view kLastChunk = "0\r\n\r\n";

// The messages are ours and hold no character that JSON would need escaped.
HttpResponse error_response(int status, std::string_view message) {
  HttpResponse response;
  response.status = status;
  response.body = R"({"error":{"message":")";
  response.body += message;
  response.body += R"(","type":")";
  response.body += status >= 500 ? "server_error" : "invalid_request_error";
  response.body += R"(","param":null,"code":null}})";
  return response;
}

std::string format_endpoint(const tcp::endpoint& endpoint) {
  const asio::ip::address address = endpoint.address();
  const std::string port = std::to_string(endpoint.port());
  if (address.is_v6()) return "[" + address.to_string() + "]:" + port;
  return address.to_string() + ":" + port;
}

const boost::system::error_category& beast_http_category() {
  static const boost::system::error_category& category =
      http::make_error_code(http::error::end_of_stream).category();
  return category;
}

}  // namespace

namespace detail {

class Connection;

// What the server's threads and its connections share. It lives as long as its
// longest holder: the server, or a connection that an exchange still refers to.
struct HttpServerState : std::enable_shared_from_this<HttpServerState> {
  HttpServerState(HttpServerOptions options_in, HttpHandler handler_in)
      : options(std::move(options_in)),
        handler(std::move(handler_in)),
        work(io.get_executor()),
        acceptor(asio::make_strand(io)),
        accept_retry_timer(acceptor.get_executor()) {}

  void accept();
  void on_accept(const SysError& ec, tcp::socket socket);
  void admit(tcp::socket socket);
  void unregister(uint64_t id, bool serving);
  void stop();

  // Posts fn to a connection's strand, unless the server is stopping: after
  // stop() nothing may be queued on an io_context that nobody will run.
  template <class Fn>
  bool post(const asio::any_io_executor& strand, Fn&& fn) {
    std::lock_guard lock(mutex);
    if (stopping) return false;
    asio::post(strand, std::forward<Fn>(fn));
    return true;
  }

  const HttpServerOptions options;
  const HttpHandler handler;
  asio::io_context io;
  asio::executor_work_guard<asio::io_context::executor_type> work;
  tcp::acceptor acceptor;                 // on its own strand
  asio::steady_timer accept_retry_timer;  // on the acceptor's strand

  std::mutex mutex;  // guards what follows
  bool stopping = false;
  uint64_t next_id = 1;
  std::unordered_map<uint64_t, std::weak_ptr<Connection>> connections;
  size_t serving = 0;    // connections that serve requests, at most connections_max
  size_t rejecting = 0;  // connections being answered 503, at most connections_max
};

// One TCP connection. Everything not marked otherwise runs on its strand.
// Ownership: the pending asynchronous operations and the exchange of the
// current request hold it; the server state holds only a weak reference.
class Connection : public std::enable_shared_from_this<Connection> {
 public:
  // How a reply ends: more to come (a stream), complete, or complete and the
  // connection then closes.
  enum class End { kMore, kComplete, kClose };

  Connection(std::shared_ptr<HttpServerState> state, tcp::socket socket, uint64_t id, bool serving,
             std::string remote)
      : state_(std::move(state)),
        options_(state_->options),
        strand_(socket.get_executor()),
        socket_(std::move(socket)),
        timer_(strand_),
        id_(id),
        serving_(serving),
        remote_(std::move(remote)) {}

  ~Connection() { state_->unregister(id_, serving_); }

  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Any thread.
  void start() {
    state_->post(strand_, [self = shared_from_this()] { self->on_start(); });
  }

  // Any thread.
  bool is_closed() const { return closed_.load(std::memory_order_acquire); }

  // Any thread. Queues bytes for the client; false if the connection is
  // closed or the server is stopping.
  bool send(std::string bytes, End end) {
    if (is_closed()) return false;
    queued_bytes_.fetch_add(bytes.size(), std::memory_order_relaxed);
    return state_->post(strand_, [self = shared_from_this(), bytes = std::move(bytes), end]() mutable {
      self->queue(std::move(bytes), end);
    });
  }

  // Any thread. send(), for a stream's bytes: refused, and the connection
  // closed, if the bytes not yet taken by the socket would exceed
  // stream_buffer_bytes_max.
  bool send_stream(std::string bytes) {
    if (is_closed()) return false;
    const size_t queued = queued_bytes_.load(std::memory_order_relaxed);
    if (queued + bytes.size() > options_.stream_buffer_bytes_max) {
      abort();
      return false;
    }
    return send(std::move(bytes), End::kMore);
  }

  // Any thread. Closes the connection at once, dropping what is queued.
  void abort() {
    closed_.store(true, std::memory_order_release);
    state_->post(strand_, [self = shared_from_this()] { self->close(); });
  }

  // Called by HttpServerState::stop(), which has stopped the gate in post().
  void abort_for_stop() {
    closed_.store(true, std::memory_order_release);
    asio::post(strand_, [self = shared_from_this()] { self->close(); });
  }

 private:
  enum class Deadline { kNone, kRead, kWrite, kLinger };

  void on_start() {
    if (!serving_) {
      queue_error(503, "the server has too many open connections; retry later");
      return;
    }
    read_request();
  }

  // --- Reading a request -------------------------------------------------

  void read_request() {
    if (socket_closed_) return;
    parser_.emplace();
    parser_->body_limit(static_cast<std::uint64_t>(options_.body_bytes_max));
    parser_->header_limit(static_cast<std::uint32_t>(
        std::min<size_t>(options_.header_bytes_max, std::numeric_limits<std::uint32_t>::max())));
    reply_complete_ = false;
    close_after_reply_ = false;
    arm(Deadline::kRead, options_.read_timeout_ms);
    http::async_read_header(socket_, buffer_, *parser_,
                            [self = shared_from_this()](const SysError& ec, size_t) { self->on_header(ec); });
  }

  void on_header(const SysError& ec) {
    if (ec || timed_out_) return on_read_error(ec);
    if (parser_->is_done()) return on_request();
    const auto& message = parser_->get();
    if (options_.body_bytes_max_for) {
      const std::string_view target(message.target().data(), message.target().size());
      const std::string_view method(message.method_string().data(), message.method_string().size());
      const size_t limit =
          std::min(options_.body_bytes_max, options_.body_bytes_max_for(method, target.substr(0, target.find('?'))));
      if (parser_->content_length() && *parser_->content_length() > limit) {
        return queue_error(413, "the request body is too large");
      }
      parser_->body_limit(static_cast<std::uint64_t>(limit));
    }
    // curl and others wait (a second, for curl) for this before sending a
    // body; the limits were already checked against the headers.
    if (message.version() >= 11 && iequals(message[http::field::expect], "100-continue")) {
      asio::async_write(socket_, asio::buffer(kContinue.data(), kContinue.size()),
                        [self = shared_from_this()](const SysError& write_ec, size_t) {
                          if (write_ec || self->timed_out_) return self->on_read_error(write_ec);
                          self->read_body();
                        });
      return;
    }
    read_body();
  }

  void read_body() {
    http::async_read(socket_, buffer_, *parser_, [self = shared_from_this()](const SysError& ec, size_t) {
      if (ec) return self->on_read_error(ec);
      self->on_request();
    });
  }

  void on_read_error(const SysError& ec) {
    disarm();
    if (socket_closed_) return;
    if (timed_out_) {
      timed_out_ = false;
      // A connection idle between requests just closes; a request cut short
      // learns why.
      if (parser_->got_some() || buffer_.size() > 0) {
        queue_error(408, "the request did not arrive in time");
      } else {
        close();
      }
      return;
    }
    if (ec == http::error::end_of_stream) return close();
    if (ec == http::error::body_limit) return queue_error(413, "the request body is too large");
    if (ec == http::error::header_limit) return queue_error(431, "the request headers are too large");
    if (ec.category() == beast_http_category()) return queue_error(400, "the request is not valid HTTP/1.1");
    close();  // the socket failed: nobody to answer
  }

  void on_request() {
    disarm();
    timed_out_ = false;
    if (socket_closed_) return;
    if (is_closed()) return close();  // the server is stopping
    http::request<http::string_body> message = parser_->release();
    HttpRequest request;
    request.method = std::string(message.method_string());
    request.target = std::string(message.target());
    const size_t question = request.target.find('?');
    request.path = request.target.substr(0, question);
    if (question != std::string::npos) request.query = request.target.substr(question + 1);
    request.headers.reserve(static_cast<size_t>(std::distance(message.begin(), message.end())));
    for (const auto& field : message) {
      HttpHeader header{std::string(field.name_string()), std::string(field.value())};
      std::transform(header.name.begin(), header.name.end(), header.name.begin(), ascii_lower);
      request.headers.push_back(std::move(header));
    }
    request.body = std::move(message.body());
    request.remote = remote_;

    keep_alive_ = message.keep_alive();
    auto exchange = make_exchange(message.version() >= 11, message.method() == http::verb::head);
    start_background_read();
    try {
      state_->handler(request, exchange);
    } catch (...) {
      fail_exchange(*exchange);
    }
  }

  std::shared_ptr<HttpExchange> make_exchange(bool chunked, bool head);
  static void fail_exchange(HttpExchange& exchange);

  // While a reply is pending, and while lingering, a read stays posted so
  // that EOF or a reset is seen at once. Bytes that arrive before the reply
  // is done are the next request's: keep them, up to header_bytes_max.
  void start_background_read() {
    if (background_reading_ || socket_closed_) return;
    if (!lingering_ && buffer_.size() >= options_.header_bytes_max) return;
    background_reading_ = true;
    socket_.async_read_some(buffer_.prepare(kBackgroundReadBytes),
                            [self = shared_from_this()](const SysError& ec, size_t n) {
                              self->on_background_read(ec, n);
                            });
  }

  void on_background_read(const SysError& ec, size_t n) {
    background_reading_ = false;
    if (socket_closed_) return;
    buffer_.commit(n);
    if (lingering_) {
      lingered_bytes_ += n;
      buffer_.consume(buffer_.size());
      if (ec || lingered_bytes_ >= kHttpLingerBytesMax) return close();
      return start_background_read();
    }
    if (read_after_background_) {
      read_after_background_ = false;
      if (ec && ec != asio::error::operation_aborted) return close();
      return read_request();
    }
    if (ec) return close();  // EOF or reset: the client went away
    start_background_read();
  }

  // --- Writing -------------------------------------------------------------

  void queue(std::string bytes, End end) {
    if (socket_closed_ || lingering_) return;
    if (!bytes.empty()) out_.push_back(std::move(bytes));
    if (end != End::kMore) reply_complete_ = true;
    if (end == End::kClose) close_after_reply_ = true;
    if (!writing_) write_next();
  }

  void queue_error(int status, std::string_view message) {
    keep_alive_ = false;
    std::string bytes = serialize_response(error_response(status, message), false, false);
    queued_bytes_.fetch_add(bytes.size(), std::memory_order_relaxed);
    queue(std::move(bytes), End::kClose);
  }

  void write_next() {
    if (out_.empty()) {
      writing_ = false;
      disarm();
      return on_drained();
    }
    writing_ = true;
    std::vector<asio::const_buffer> buffers;
    buffers.reserve(std::min(out_.size(), kWriteGatherMax));
    for (size_t i = 0; i < out_.size() && i < kWriteGatherMax; ++i) {
      const size_t skip = i == 0 ? out_offset_ : 0;
      buffers.emplace_back(out_[i].data() + skip, out_[i].size() - skip);
    }
    arm(Deadline::kWrite, options_.write_timeout_ms);
    socket_.async_write_some(buffers, [self = shared_from_this()](const SysError& ec, size_t n) {
      self->on_write(ec, n);
    });
  }

  void on_write(const SysError& ec, size_t n) {
    if (socket_closed_) return;
    if (ec) return close();
    queued_bytes_.fetch_sub(n, std::memory_order_relaxed);
    while (n > 0) {
      const size_t left = out_.front().size() - out_offset_;
      if (n < left) {
        out_offset_ += n;
        break;
      }
      n -= left;
      out_.pop_front();
      out_offset_ = 0;
    }
    write_next();
  }

  // Everything queued has been written.
  void on_drained() {
    if (!reply_complete_) return;  // a stream, waiting for more
    if (close_after_reply_ || !keep_alive_) return linger();
    if (is_closed()) return close();
    reply_complete_ = false;
    if (background_reading_) {
      // Only one read at a time: stop the background one, then read the
      // next request (on_background_read).
      read_after_background_ = true;
      SysError ignored;
      socket_.cancel(ignored);
      return;
    }
    read_request();
  }

  // Ends the connection after a reply without resetting it: see kHttpLingerMsMax.
  void linger() {
    if (socket_closed_) return;
    lingering_ = true;
    SysError ignored;
    socket_.shutdown(tcp::socket::shutdown_send, ignored);
    arm(Deadline::kLinger, kHttpLingerMsMax);
    start_background_read();
  }

  void close() {
    if (socket_closed_) return;
    socket_closed_ = true;
    closed_.store(true, std::memory_order_release);
    disarm();
    SysError ignored;
    socket_.close(ignored);
    out_.clear();
    state_->unregister(id_, serving_);
  }

  // --- Deadlines -----------------------------------------------------------

  // One timer serves every phase: a request is read, or a reply written, or
  // the connection lingers, never two at once. The background read has no
  // deadline: it waits for as long as the reply takes.
  void arm(Deadline kind, int64_t ms) {
    deadline_ = kind;
    const uint64_t generation = ++deadline_generation_;
    timer_.expires_after(std::chrono::milliseconds(ms));
    timer_.async_wait([self = shared_from_this(), generation](const SysError& ec) {
      if (!ec && generation == self->deadline_generation_) self->on_deadline();
    });
  }

  void disarm() {
    if (deadline_ == Deadline::kNone) return;
    deadline_ = Deadline::kNone;
    ++deadline_generation_;
    timer_.cancel();
  }

  void on_deadline() {
    if (socket_closed_) return;
    const Deadline kind = deadline_;
    deadline_ = Deadline::kNone;
    switch (kind) {
      case Deadline::kRead: {
        // The pending read completes with operation_aborted and on_read_error
        // sees timed_out_.
        timed_out_ = true;
        SysError ignored;
        socket_.cancel(ignored);
        break;
      }
      case Deadline::kWrite:
      case Deadline::kLinger:
        close();
        break;
      case Deadline::kNone:
        break;
    }
  }

  const std::shared_ptr<HttpServerState> state_;
  const HttpServerOptions& options_;  // state_'s
  const asio::any_io_executor strand_;
  tcp::socket socket_;
  asio::steady_timer timer_;
  const uint64_t id_;
  const bool serving_;  // false: answer 503 and close
  const std::string remote_;

  // Any thread.
  std::atomic<bool> closed_{false};
  std::atomic<size_t> queued_bytes_{0};  // given to send() and not yet written

  // Strand only.
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::deque<std::string> out_;
  size_t out_offset_ = 0;  // bytes of out_.front() already written
  bool writing_ = false;
  bool reply_complete_ = false;    // the current reply is wholly queued
  bool close_after_reply_ = false;
  bool keep_alive_ = false;
  bool background_reading_ = false;
  bool read_after_background_ = false;
  bool lingering_ = false;
  size_t lingered_bytes_ = 0;
  bool timed_out_ = false;
  bool socket_closed_ = false;
  Deadline deadline_ = Deadline::kNone;
  uint64_t deadline_generation_ = 0;
};

// The reply channel of one request. The state moves idle -> responded, or
// idle -> streaming -> ended, once, whatever thread calls.
class Exchange final : public HttpExchange {
 public:
  Exchange(std::shared_ptr<Connection> connection, bool keep_alive, bool chunked, bool head)
      : connection_(std::move(connection)), keep_alive_(keep_alive && chunked), chunked_(chunked), head_(head) {}

  ~Exchange() override {
    if (advance(kIdle, kResponded)) {
      connection_->send(serialize_response(error_response(500, "the request handler did not reply"),
                                           keep_alive_, head_),
                        Connection::End::kComplete);
    } else if (advance(kStreaming, kEnded)) {
      connection_->send({}, Connection::End::kClose);
    }
  }

  void respond(HttpResponse response) override {
    if (!advance(kIdle, kResponded)) return;
    connection_->send(serialize_response(response, keep_alive_, head_), Connection::End::kComplete);
  }

  void stream_begin(int status, std::vector<HttpHeader> headers) override {
    if (!advance(kIdle, kStreaming)) return;
    connection_->send(serialize_stream_head(status, headers, keep_alive_, chunked_), Connection::End::kMore);
  }

  bool stream_write(std::string data) override {
    if (state_.load(std::memory_order_acquire) != kStreaming || connection_->is_closed()) return false;
    // An empty chunk would end the stream; a HEAD request gets no body.
    if (data.empty() || head_) return true;
    return connection_->send_stream(chunked_ ? chunk(data) : std::move(data));
  }

  void stream_end() override {
    if (!advance(kStreaming, kEnded)) return;
    const bool framed = chunked_ && !head_;
    connection_->send(framed ? std::string(kLastChunk) : std::string(),
                      keep_alive_ ? Connection::End::kComplete : Connection::End::kClose);
  }

  bool closed() const override { return connection_->is_closed(); }

  // The handler threw: answer 500, or cut a stream short.
  void fail() {
    if (advance(kIdle, kResponded)) {
      connection_->send(serialize_response(error_response(500, "the request handler failed"), keep_alive_, head_),
                        Connection::End::kComplete);
    } else if (advance(kStreaming, kEnded)) {
      connection_->send({}, Connection::End::kClose);
    }
  }

 private:
  enum State : int { kIdle, kResponded, kStreaming, kEnded };

  bool advance(State from, State to) {
    int expected = from;
    return state_.compare_exchange_strong(expected, to, std::memory_order_acq_rel);
  }

  const std::shared_ptr<Connection> connection_;
  // HTTP/1.0 has no chunked encoding: a stream there ends by closing, so
  // such a connection is never kept alive.
  const bool keep_alive_;
  const bool chunked_;
  const bool head_;
  std::atomic<int> state_{kIdle};
};

std::shared_ptr<HttpExchange> Connection::make_exchange(bool chunked, bool head) {
  if (!chunked) keep_alive_ = false;
  return std::make_shared<Exchange>(shared_from_this(), keep_alive_, chunked, head);
}

void Connection::fail_exchange(HttpExchange& exchange) { static_cast<Exchange&>(exchange).fail(); }

// The acceptor and its timer are used only on the acceptor's strand, and
// `this` outlives every operation on them: the server holds the state until
// its threads are joined.
void HttpServerState::accept() {
  acceptor.async_accept(asio::make_strand(io), [this](const SysError& ec, tcp::socket socket) {
    on_accept(ec, std::move(socket));
  });
}

void HttpServerState::on_accept(const SysError& ec, tcp::socket socket) {
  if (ec == asio::error::operation_aborted || !acceptor.is_open()) return;
  if (ec) {
    accept_retry_timer.expires_after(std::chrono::milliseconds(kAcceptRetryMs));
    accept_retry_timer.async_wait([this](const SysError& wait_ec) {
      if (!wait_ec && acceptor.is_open()) accept();
    });
    return;
  }
  admit(std::move(socket));
  accept();
}

void HttpServerState::admit(tcp::socket socket) {
  SysError ec;
  const tcp::endpoint peer = socket.remote_endpoint(ec);
  if (ec) return;  // gone already
  // Small writes (one event of a stream) must not wait for the client's
  // delayed acknowledgement.
  socket.set_option(tcp::no_delay(true), ec);
  std::shared_ptr<Connection> connection;
  {
    std::lock_guard lock(mutex);
    if (stopping) return;
    bool serve = false;
    if (serving < options.connections_max) {
      serve = true;
      ++serving;
    } else if (rejecting < options.connections_max) {
      ++rejecting;
    } else {
      return;  // twice connections_max sockets are open: close without a word
    }
    const uint64_t id = next_id++;
    connection = std::make_shared<Connection>(shared_from_this(), std::move(socket), id, serve, format_endpoint(peer));
    connections.emplace(id, connection);
  }
  connection->start();
}

void HttpServerState::unregister(uint64_t id, bool serve) {
  std::lock_guard lock(mutex);
  if (connections.erase(id) == 0) return;
  DCHECK(serve ? serving > 0 : rejecting > 0);
  --(serve ? serving : rejecting);
}

void HttpServerState::stop() {
  std::vector<std::shared_ptr<Connection>> open;
  {
    std::lock_guard lock(mutex);
    stopping = true;
    for (const auto& [id, weak] : connections) {
      if (auto connection = weak.lock()) open.push_back(std::move(connection));
    }
  }
  asio::post(acceptor.get_executor(), [this] {
    SysError ignored;
    acceptor.close(ignored);
    accept_retry_timer.cancel();
  });
  for (const auto& connection : open) connection->abort_for_stop();
  // With the listener and every connection closed, run() returns once the
  // handlers already queued have run.
  work.reset();
}

}  // namespace detail

HttpServer::HttpServer(std::shared_ptr<detail::HttpServerState> state, uint16_t port)
    : state_(std::move(state)), port_(port) {}

Result<std::unique_ptr<HttpServer>> HttpServer::start(HttpServerOptions options, HttpHandler handler) {
  if (!handler) return Unexpected(ErrorCode::kInvalidArgument, "http server: no handler");
  if (options.threads < 1 || options.threads > kHttpThreadsMax) {
    return Unexpected(ErrorCode::kInvalidArgument, "http server: threads must be 1.." +
                                                       std::to_string(kHttpThreadsMax) + ", not " +
                                                       std::to_string(options.threads));
  }
  if (options.header_bytes_max == 0 || options.connections_max == 0 || options.stream_buffer_bytes_max == 0) {
    return Unexpected(ErrorCode::kInvalidArgument,
                      "http server: header_bytes_max, connections_max and stream_buffer_bytes_max must be positive");
  }
  if (options.read_timeout_ms <= 0 || options.write_timeout_ms <= 0) {
    return Unexpected(ErrorCode::kInvalidArgument,
                      "http server: read_timeout_ms and write_timeout_ms must be positive");
  }

  const int threads = options.threads;
  auto state = std::make_shared<detail::HttpServerState>(std::move(options), std::move(handler));
  const HttpServerOptions& o = state->options;
  const std::string where = o.host + ":" + std::to_string(o.port);

  SysError ec;
  tcp::resolver resolver(state->io);
  const auto endpoints =
      resolver.resolve(o.host, std::to_string(o.port), tcp::resolver::passive | tcp::resolver::numeric_service, ec);
  if (ec || endpoints.empty()) {
    return Unexpected(ErrorCode::kIo, "http server: cannot resolve " + where + ": " + ec.message());
  }
  const tcp::endpoint endpoint = endpoints.begin()->endpoint();
  tcp::acceptor& acceptor = state->acceptor;
  if (acceptor.open(endpoint.protocol(), ec); ec) {
    return Unexpected(ErrorCode::kIo, "http server: cannot open a socket for " + where + ": " + ec.message());
  }
  acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (acceptor.bind(endpoint, ec); ec) {
    return Unexpected(ErrorCode::kIo, "http server: cannot bind " + where + ": " + ec.message());
  }
  if (acceptor.listen(asio::socket_base::max_listen_connections, ec); ec) {
    return Unexpected(ErrorCode::kIo, "http server: cannot listen on " + where + ": " + ec.message());
  }
  const uint16_t port = acceptor.local_endpoint(ec).port();
  if (ec) return Unexpected(ErrorCode::kIo, "http server: no local address for " + where + ": " + ec.message());

  std::unique_ptr<HttpServer> server(new HttpServer(state, port));
  asio::post(acceptor.get_executor(), [raw = state.get()] { raw->accept(); });
  server->threads_.reserve(static_cast<size_t>(threads));
  for (int i = 0; i < threads; ++i) {
    server->threads_.emplace_back([raw = state.get()] { raw->io.run(); });
  }
  return server;
}

uint16_t HttpServer::port() const { return port_; }

void HttpServer::stop() {
  std::lock_guard lock(stop_mutex_);
  if (stopped_) return;
  for (const std::thread& thread : threads_) CHECK(thread.get_id() != std::this_thread::get_id());
  stopped_ = true;
  state_->stop();
  for (std::thread& thread : threads_) thread.join();
  threads_.clear();
}

HttpServer::~HttpServer() { stop(); }

}  // namespace idlefleet::transport
