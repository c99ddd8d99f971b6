// HttpServer against real clients on loopback: curl for well-formed traffic,
// raw sockets for the rest. Waits are on conditions with deadlines; the
// server's timeouts are made short where a test needs one to fire.
#include "transport/http_server.h"
#include "transport/query.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "support/http_client.h"

namespace idlefleet::transport::http_server_test {
namespace {

using testing::HttpResult;
using testing::RawConnection;
using testing::SseParser;
using Clock = std::chrono::steady_clock;

using Pairs = std::vector<std::pair<std::string, std::string>>;

TEST(Query, DecodesEscapesAndPlusInNamesAndValues) {
  auto q = parse_query("month=2026%2D11&format=csv&q=a+b%20c&%66ormat=json&flag");
  ASSERT_TRUE(q.has_value()) << q.error().to_string();
  EXPECT_EQ(*q, (Pairs{{"month", "2026-11"}, {"format", "csv"}, {"q", "a b c"}, {"format", "json"}, {"flag", ""}}));
  EXPECT_EQ(*parse_query(""), Pairs{});
  EXPECT_EQ(*parse_query("&&a=1&"), (Pairs{{"a", "1"}}));
  EXPECT_EQ(*parse_query("a=%3D%26&b=%e2%82%ac"), (Pairs{{"a", "=&"}, {"b", "\xe2\x82\xac"}}));
  EXPECT_EQ(*percent_decode("a+b", false), "a+b");
}

TEST(Query, RefusesBadEscapesAndTooManyPairs) {
  for (const char* bad : {"a=%", "a=%4", "a=%zz", "%g0=1", "a=1&b=%%", "a=%4g"}) {
    auto q = parse_query(bad);
    ASSERT_FALSE(q.has_value()) << bad;
    EXPECT_NE(q.error().message.find("percent-escape"), std::string::npos) << q.error().message;
  }
  std::string many;
  for (int i = 0; i < 17; ++i) many += "k" + std::to_string(i) + "=v&";
  auto q = parse_query(many);
  ASSERT_FALSE(q.has_value());
  EXPECT_NE(q.error().message.find("more than 16"), std::string::npos);
  EXPECT_TRUE(parse_query(many, 17).has_value());
}

TEST(Query, GarbageNeverCrashes) {
  uint64_t x = 88172645463325252ULL;
  const std::string alphabet("%&=+aZ09\0\xff/?#", 13);
  for (int round = 0; round < 20000; ++round) {
    std::string text;
    const size_t n = (x >> 7) % 40;
    for (size_t i = 0; i < n; ++i) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      text.push_back(alphabet[x % alphabet.size()]);
    }
    auto q = parse_query(text, 8);
    if (q) {
      EXPECT_LE(q->size(), 8u);
    }
  }
}

constexpr int kWaitMs = 5000;

// A thread-safe queue that tests wait on, with a deadline.
template <class T>
class Mailbox {
 public:
  void push(T value) {
    {
      std::lock_guard lock(mutex_);
      items_.push_back(std::move(value));
    }
    ready_.notify_all();
  }

  std::optional<T> pop(int timeout_ms = kWaitMs) {
    std::unique_lock lock(mutex_);
    if (!ready_.wait_for(lock, std::chrono::milliseconds(timeout_ms), [&] { return !items_.empty(); })) {
      return std::nullopt;
    }
    T value = std::move(items_.front());
    items_.pop_front();
    return value;
  }

 private:
  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<T> items_;
};

// For conditions that nothing signals (a socket state): polls until pred
// holds or the deadline passes.
template <class Pred>
bool wait_until(const Pred& pred, int timeout_ms = kWaitMs) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  while (!pred()) {
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

int64_t elapsed_ms(Clock::time_point since) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - since).count();
}

std::unique_ptr<HttpServer> start_server(HttpHandler handler, HttpServerOptions options = {}) {
  auto server = HttpServer::start(std::move(options), std::move(handler));
  if (!server) {
    ADD_FAILURE() << server.error().to_string();
    return nullptr;
  }
  return std::move(*server);
}

std::string url(const HttpServer& server, std::string_view target) {
  return "http://127.0.0.1:" + std::to_string(server.port()) + std::string(target);
}

HttpResponse text(std::string body, int status = 200) {
  HttpResponse response;
  response.status = status;
  response.content_type = "text/plain";
  response.body = std::move(body);
  return response;
}

// Answers every request with its own description.
void echo(const HttpRequest& request, std::shared_ptr<HttpExchange> exchange) {
  const std::string* test_header = request.header("x-test");
  HttpResponse response = text(request.method + "|" + request.path + "|" + request.query + "|" +
                               (test_header != nullptr ? *test_header : "-") + "|" + request.body);
  response.headers.push_back({"X-Remote", request.remote});
  exchange->respond(std::move(response));
}

bool starts_with_status(const std::string& reply, int status) {
  return reply.starts_with("HTTP/1.1 " + std::to_string(status) + " ");
}

// The error body every refusal carries, in OpenAI's shape.
bool has_openai_error(const std::string& reply, std::string_view type) {
  return reply.find(R"({"error":{"message":")") != std::string::npos &&
         reply.find(R"(","type":")" + std::string(type) + R"(","param":null,"code":null}})") != std::string::npos;
}

TEST(HttpServer, GetAndPostRoundTrip) {
  auto server = start_server(echo);
  ASSERT_NE(server, nullptr);

  const HttpResult get = testing::http_get(url(*server, "/v1/echo?a=1&b=%20"), {"X-Test: hello"});
  ASSERT_EQ(get.error, "");
  EXPECT_EQ(get.status, 200);
  EXPECT_EQ(get.body, "GET|/v1/echo|a=1&b=%20|hello|");
  ASSERT_NE(get.header("content-type"), nullptr);
  EXPECT_EQ(*get.header("content-type"), "text/plain");
  ASSERT_NE(get.header("x-remote"), nullptr);
  EXPECT_TRUE(get.header("x-remote")->starts_with("127.0.0.1:")) << *get.header("x-remote");

  const HttpResult post =
      testing::http_post(url(*server, "/v1/chat"), R"({"k":1})", {"Content-Type: application/json"});
  ASSERT_EQ(post.error, "");
  EXPECT_EQ(post.status, 200);
  EXPECT_EQ(post.body, R"(POST|/v1/chat||-|{"k":1})");
  ASSERT_NE(post.header("content-length"), nullptr);
  EXPECT_EQ(*post.header("content-length"), std::to_string(post.body.size()));

  // Large enough that curl asks for 100-continue first.
  const std::string big(3u << 20, 'b');
  const HttpResult big_post = testing::http_post(url(*server, "/big"), big);
  ASSERT_EQ(big_post.error, "");
  EXPECT_EQ(big_post.status, 200);
  EXPECT_EQ(big_post.body.size(), std::string("POST|/big||-|").size() + big.size());
}

TEST(HttpServer, RequestHeadersAreLowerCasedInOrder) {
  Mailbox<HttpRequest> requests;
  auto server = start_server([&](const HttpRequest& request, std::shared_ptr<HttpExchange> exchange) {
    requests.push(request);
    exchange->respond(text("ok"));
  });
  ASSERT_NE(server, nullptr);
  const HttpResult result = testing::http_get(url(*server, "/h"), {"X-Mixed-Case: One", "X-Mixed-Case: Two"});
  EXPECT_EQ(result.status, 200);
  const std::optional<HttpRequest> request = requests.pop();
  ASSERT_TRUE(request.has_value());
  ASSERT_NE(request->header("x-mixed-case"), nullptr);
  EXPECT_EQ(*request->header("x-mixed-case"), "One");
  EXPECT_EQ(request->header("X-Mixed-Case"), nullptr);
  int seen = 0;
  for (const HttpHeader& h : request->headers) seen += h.name == "x-mixed-case";
  EXPECT_EQ(seen, 2);
}

TEST(HttpServer, KeepAliveServesTwoRequestsOnOneConnection) {
  auto server = start_server(echo);
  ASSERT_NE(server, nullptr);
  testing::HttpSession session;
  const HttpResult first = session.get(url(*server, "/one"));
  const HttpResult second = session.post(url(*server, "/two"), "body");
  ASSERT_EQ(first.status, 200) << first.error;
  ASSERT_EQ(second.status, 200) << second.error;
  EXPECT_TRUE(session.last_reused_connection());
  ASSERT_NE(first.header("x-remote"), nullptr);
  ASSERT_NE(second.header("x-remote"), nullptr);
  EXPECT_EQ(*first.header("x-remote"), *second.header("x-remote"));
  EXPECT_EQ(second.body, "POST|/two||-|body");

  // Pipelined: both requests in one write, answered in order.
  const std::string replies = testing::raw_exchange(
      server->port(), "GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  const size_t a = replies.find("GET|/a|");
  const size_t b = replies.find("GET|/b|");
  ASSERT_NE(a, std::string::npos) << replies;
  ASSERT_NE(b, std::string::npos) << replies;
  EXPECT_LT(a, b);
}

TEST(HttpServer, TheServerOwnsTheFraming) {
  auto server = start_server([](const HttpRequest&, std::shared_ptr<HttpExchange> exchange) {
    HttpResponse response = text("body");
    response.headers = {
        {"X-Good", "1"}, {"X-Split", "a\r\nInjected: yes"}, {"Content-Length", "99"}, {"Bad Name", "x"}};
    exchange->respond(std::move(response));
  });
  ASSERT_NE(server, nullptr);

  const std::string head =
      testing::raw_exchange(server->port(), "HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  EXPECT_TRUE(starts_with_status(head, 200)) << head;
  EXPECT_NE(head.find("Content-Length: 4\r\n"), std::string::npos) << head;
  EXPECT_NE(head.find("X-Good: 1\r\n"), std::string::npos) << head;
  EXPECT_EQ(head.find("Injected"), std::string::npos) << head;
  EXPECT_EQ(head.find("99"), std::string::npos) << head;
  EXPECT_EQ(head.find("Bad Name"), std::string::npos) << head;
  EXPECT_TRUE(head.ends_with("\r\n\r\n")) << head;  // no body

  // HTTP/1.0: the reply, then the connection closes (before raw_exchange gives up).
  const auto start = Clock::now();
  const std::string old = testing::raw_exchange(server->port(), "GET / HTTP/1.0\r\n\r\n", 3000);
  EXPECT_LT(elapsed_ms(start), 2500);
  EXPECT_TRUE(starts_with_status(old, 200)) << old;
  EXPECT_NE(old.find("Connection: close\r\n"), std::string::npos) << old;
  EXPECT_TRUE(old.ends_with("\r\n\r\nbody")) << old;
}

TEST(HttpServer, ExpectContinueIsAnswered) {
  auto server = start_server(echo);
  ASSERT_NE(server, nullptr);
  RawConnection connection;
  ASSERT_TRUE(connection.connect(server->port()));
  ASSERT_TRUE(connection.send("POST /c HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n"));
  EXPECT_NE(connection.read_until("\r\n\r\n").find("HTTP/1.1 100 Continue\r\n\r\n"), std::string::npos);
  ASSERT_TRUE(connection.send("abcd"));
  EXPECT_NE(connection.read_until("POST|/c||-|abcd").find("POST|/c||-|abcd"), std::string::npos);
}

TEST(HttpServer, AsyncReplyFromAnotherThread) {
  Mailbox<std::shared_ptr<HttpExchange>> exchanges;
  std::atomic<bool> handler_returned{false};
  auto server = start_server([&](const HttpRequest&, std::shared_ptr<HttpExchange> exchange) {
    exchanges.push(std::move(exchange));
    handler_returned = true;
  });
  ASSERT_NE(server, nullptr);

  HttpResult result;
  std::thread client([&] { result = testing::http_get(url(*server, "/slow")); });
  std::optional<std::shared_ptr<HttpExchange>> exchange = exchanges.pop();
  ASSERT_TRUE(exchange.has_value());
  ASSERT_TRUE(wait_until([&] { return handler_returned.load(); }));
  EXPECT_FALSE((*exchange)->closed());
  std::thread replier([exchange = std::move(*exchange)] { exchange->respond(text("later", 202)); });
  replier.join();
  client.join();
  EXPECT_EQ(result.status, 202) << result.error;
  EXPECT_EQ(result.body, "later");
}

TEST(HttpServer, StreamedEventsFromAnotherThreadArriveCompleteAndInOrder) {
  constexpr int kEvents = 100;
  std::mutex writers_mutex;
  std::vector<std::thread> writers;
  auto server = start_server([&](const HttpRequest&, std::shared_ptr<HttpExchange> exchange) {
    exchange->stream_begin(200, {{"X-Stream", "yes"}});
    std::lock_guard lock(writers_mutex);
    writers.emplace_back([exchange] {
      for (int i = 0; i < kEvents; ++i) {
        if (!exchange->stream_write("data: {\"i\":" + std::to_string(i) + "}\n\n")) return;
      }
      exchange->stream_write("data: [DONE]\n\n");
      exchange->stream_end();
    });
  });
  ASSERT_NE(server, nullptr);

  testing::HttpSession session;
  for (int round = 0; round < 2; ++round) {
    SseParser parser;
    std::vector<std::string> events;
    const HttpResult result = testing::http_post_stream(url(*server, "/v1/chat/completions"), "{}",
                                                        [&](std::string_view piece) {
                                                          parser.feed(piece);
                                                          for (std::string& e : parser.take_events()) {
                                                            events.push_back(std::move(e));
                                                          }
                                                        });
    ASSERT_EQ(result.error, "");
    EXPECT_EQ(result.status, 200);
    ASSERT_NE(result.header("content-type"), nullptr);
    EXPECT_EQ(*result.header("content-type"), "text/event-stream");
    ASSERT_NE(result.header("transfer-encoding"), nullptr);
    EXPECT_EQ(*result.header("transfer-encoding"), "chunked");
    ASSERT_NE(result.header("cache-control"), nullptr);
    EXPECT_EQ(*result.header("cache-control"), "no-cache");
    ASSERT_NE(result.header("x-stream"), nullptr);
    ASSERT_EQ(events.size(), static_cast<size_t>(kEvents + 1));
    for (int i = 0; i < kEvents; ++i) EXPECT_EQ(events[i], "{\"i\":" + std::to_string(i) + "}");
    EXPECT_EQ(events.back(), "[DONE]");
  }

  // After stream_end the connection serves the next request.
  const HttpResult first = session.post(url(*server, "/s"), "{}");
  const HttpResult second = session.post(url(*server, "/s"), "{}");
  EXPECT_EQ(first.status, 200);
  EXPECT_EQ(second.status, 200);
  EXPECT_TRUE(session.last_reused_connection());
  EXPECT_NE(second.body.find("data: [DONE]"), std::string::npos);

  std::lock_guard lock(writers_mutex);
  for (std::thread& writer : writers) writer.join();
}

TEST(HttpServer, ClientLeavingMidStreamClosesTheExchange) {
  Mailbox<std::shared_ptr<HttpExchange>> exchanges;
  auto server = start_server([&](const HttpRequest&, std::shared_ptr<HttpExchange> exchange) {
    exchange->stream_begin(200, {});
    exchanges.push(std::move(exchange));
  });
  ASSERT_NE(server, nullptr);

  RawConnection connection;
  ASSERT_TRUE(connection.connect(server->port()));
  ASSERT_TRUE(connection.send("POST /stream HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"));
  std::optional<std::shared_ptr<HttpExchange>> exchange = exchanges.pop();
  ASSERT_TRUE(exchange.has_value());
  EXPECT_TRUE((*exchange)->stream_write("data: first\n\n"));
  EXPECT_NE(connection.read_until("data: first").find("data: first"), std::string::npos);
  EXPECT_FALSE((*exchange)->closed());

  connection.close();
  // Noticed without writing anything: the server keeps reading while a reply
  // is pending.
  EXPECT_TRUE(wait_until([&] { return (*exchange)->closed(); }));
  EXPECT_FALSE((*exchange)->stream_write("data: late\n\n"));
  (*exchange)->stream_end();
}

TEST(HttpServer, StreamOverItsBufferLimitIsClosed) {
  Mailbox<std::shared_ptr<HttpExchange>> exchanges;
  HttpServerOptions options;
  options.stream_buffer_bytes_max = 64u << 10;
  auto server = start_server(
      [&](const HttpRequest&, std::shared_ptr<HttpExchange> exchange) {
        exchange->stream_begin(200, {});
        exchanges.push(std::move(exchange));
      },
      options);
  ASSERT_NE(server, nullptr);

  RawConnection connection;  // never reads
  ASSERT_TRUE(connection.connect(server->port(), 4096));
  ASSERT_TRUE(connection.send("GET /stream HTTP/1.1\r\nHost: x\r\n\r\n"));
  std::optional<std::shared_ptr<HttpExchange>> exchange = exchanges.pop();
  ASSERT_TRUE(exchange.has_value());
  const std::string piece(16u << 10, 'x');
  // Bounded: socket buffers take a few MiB at most before the limit bites.
  constexpr int kWritesMax = 100000;
  int writes = 0;
  while (writes < kWritesMax && (*exchange)->stream_write(piece)) ++writes;
  EXPECT_LT(writes, kWritesMax);
  EXPECT_TRUE((*exchange)->closed());
  EXPECT_FALSE((*exchange)->stream_write("more"));
}

// Options under which the limits and the read timeout are quick to reach.
HttpServerOptions small_limits() {
  HttpServerOptions options;
  options.body_bytes_max = 1024;
  options.header_bytes_max = 1024;
  options.read_timeout_ms = 300;
  return options;
}

TEST(HttpServer, GarbageGetsTheRightStatus) {
  std::atomic<int> handled{0};
  auto server = start_server(
      [&](const HttpRequest& request, std::shared_ptr<HttpExchange> exchange) {
        ++handled;
        echo(request, std::move(exchange));
      },
      small_limits());
  ASSERT_NE(server, nullptr);
  const uint16_t port = server->port();

  struct Case {
    const char* name;
    std::string bytes;
    int status;
  };
  const std::vector<Case> cases = {
      {"TLS hello", std::string("\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03 garbage\r\n\r\n"), 400},
      {"not a request line", "hello there\r\n\r\n", 400},
      {"bad version", "GET / HTTP/9\r\nHost: x\r\n\r\n", 400},
      {"bad content-length", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", 400},
      {"negative content-length", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400},
      {"two content-lengths", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400},
      {"bad chunk", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400},
      {"oversize body", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + std::string(100000, 'x'), 413},
      {"oversize chunked body",
       "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n" + std::string(0x800, 'x') +
           "\r\n0\r\n\r\n",
       413},
      {"huge header", "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(4000, 'a') + "\r\n\r\n", 431},
      {"truncated body", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc", 408},
      {"truncated header", "GET / HTTP/1.1\r\nHost: x\r\n", 408},
  };
  for (const Case& c : cases) {
    const auto start = Clock::now();
    const std::string reply = testing::raw_exchange(port, c.bytes, 3000);
    EXPECT_TRUE(starts_with_status(reply, c.status)) << c.name << ": " << reply.substr(0, 200);
    EXPECT_TRUE(has_openai_error(reply, "invalid_request_error")) << c.name << ": " << reply;
    EXPECT_NE(reply.find("Connection: close"), std::string::npos) << c.name;
    // The server closed the connection: raw_exchange did not wait out its 3 s.
    EXPECT_LT(elapsed_ms(start), 2500) << c.name;
  }
  EXPECT_EQ(handled.load(), 0);

  // A connection that says nothing is closed silently after the read timeout.
  const auto start = Clock::now();
  EXPECT_EQ(testing::raw_exchange(port, "", 3000), "");
  EXPECT_LT(elapsed_ms(start), 2500);

  // The server still serves well-formed requests.
  EXPECT_EQ(testing::http_get("http://127.0.0.1:" + std::to_string(port) + "/ok").status, 200);
}

TEST(HttpServer, BodyLimitPerRoute) {
  HttpServerOptions options;
  options.body_bytes_max = 1u << 20;
  options.body_bytes_max_for = [](std::string_view method, std::string_view path) -> size_t {
    return method == "POST" && path == "/upload" ? size_t{1} << 20 : 1000;
  };
  auto server = start_server(echo, options);
  ASSERT_NE(server, nullptr);
  const uint16_t port = server->port();
  const std::string big(5000, 'x');
  auto post = [&](const std::string& path, bool chunked) {
    std::string raw = "POST " + path + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n";
    if (chunked) {
      char size[16];
      std::snprintf(size, sizeof size, "%zx", big.size());
      raw += std::string("Transfer-Encoding: chunked\r\n\r\n").append(size).append("\r\n").append(big).append(
          "\r\n0\r\n\r\n");
    } else {
      raw += "Content-Length: " + std::to_string(big.size()) + "\r\n\r\n" + big;
    }
    return testing::raw_exchange(port, raw, 3000);
  };
  for (bool chunked : {false, true}) {
    EXPECT_TRUE(starts_with_status(post("/upload", chunked), 200)) << chunked;
    EXPECT_TRUE(starts_with_status(post("/upload?purpose=x", chunked), 200)) << chunked;
    const std::string refused = post("/other", chunked);
    EXPECT_TRUE(starts_with_status(refused, 413)) << chunked << ": " << refused.substr(0, 200);
    EXPECT_TRUE(has_openai_error(refused, "invalid_request_error"));
  }
}

TEST(HttpServer, OverConnectionsMaxGets503) {
  HttpServerOptions options;
  options.connections_max = 1;
  auto server = start_server(echo, options);
  ASSERT_NE(server, nullptr);

  // The first connection takes the only slot (accepts happen in order).
  RawConnection first;
  ASSERT_TRUE(first.connect(server->port()));
  ASSERT_TRUE(first.send("GET /first HTTP/1.1\r\nHost: x\r\n\r\n"));
  EXPECT_NE(first.read_until("GET|/first|").find("GET|/first|"), std::string::npos);

  const std::string reply = testing::raw_exchange(server->port(), "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_TRUE(starts_with_status(reply, 503)) << reply;
  EXPECT_TRUE(has_openai_error(reply, "server_error")) << reply;

  // Once the slot is free, requests are served again.
  first.close();
  EXPECT_TRUE(wait_until([&] { return testing::http_get(url(*server, "/again")).status == 200; }));
}

TEST(HttpServer, HandlerThatThrowsGets500) {
  auto server = start_server([](const HttpRequest&, std::shared_ptr<HttpExchange>) {
    throw std::runtime_error("boom");
  });
  ASSERT_NE(server, nullptr);
  testing::HttpSession session;
  const HttpResult result = session.get(url(*server, "/throw"));
  EXPECT_EQ(result.status, 500) << result.error;
  EXPECT_TRUE(has_openai_error(result.body, "server_error")) << result.body;
  // The connection survives the failure.
  EXPECT_EQ(session.get(url(*server, "/throw")).status, 500);
  EXPECT_TRUE(session.last_reused_connection());
}

TEST(HttpServer, DroppedExchangeGets500) {
  Mailbox<std::shared_ptr<HttpExchange>> exchanges;
  auto server = start_server([&](const HttpRequest& request, std::shared_ptr<HttpExchange> exchange) {
    if (request.path == "/keep") exchanges.push(std::move(exchange));
  });
  ASSERT_NE(server, nullptr);
  const HttpResult dropped = testing::http_get(url(*server, "/drop"));
  EXPECT_EQ(dropped.status, 500) << dropped.error;
  EXPECT_TRUE(has_openai_error(dropped.body, "server_error")) << dropped.body;

  // Dropped later, on another thread.
  HttpResult kept;
  std::thread client([&] { kept = testing::http_get(url(*server, "/keep")); });
  std::optional<std::shared_ptr<HttpExchange>> exchange = exchanges.pop();
  ASSERT_TRUE(exchange.has_value());
  exchange->reset();
  client.join();
  EXPECT_EQ(kept.status, 500) << kept.error;
}

TEST(HttpServer, TwoHundredConcurrentRequestsAreAllAnswered) {
  constexpr int kClients = 200;
  // Half the replies come from a thread of their own, after the handler returned.
  Mailbox<std::shared_ptr<HttpExchange>> deferred;
  auto server = start_server([&](const HttpRequest& request, std::shared_ptr<HttpExchange> exchange) {
    if (request.query == "defer") {
      deferred.push(std::move(exchange));
    } else {
      exchange->respond(text(request.path));
    }
  });
  ASSERT_NE(server, nullptr);

  std::thread replier([&] {
    for (int i = 0; i < kClients / 2; ++i) {
      std::optional<std::shared_ptr<HttpExchange>> exchange = deferred.pop(10000);
      if (!exchange) return;
      (*exchange)->respond(text("deferred"));
    }
  });
  std::vector<HttpResult> results(kClients);
  std::vector<std::thread> clients;
  clients.reserve(kClients);
  for (int i = 0; i < kClients; ++i) {
    clients.emplace_back([&, i] {
      const std::string target = "/r" + std::to_string(i) + (i % 2 == 0 ? "?defer" : "");
      results[i] = testing::http_post(url(*server, target), "x");
    });
  }
  for (std::thread& client : clients) client.join();
  replier.join();
  for (int i = 0; i < kClients; ++i) {
    EXPECT_EQ(results[i].status, 200) << i << ": " << results[i].error;
    EXPECT_EQ(results[i].body, i % 2 == 0 ? "deferred" : "/r" + std::to_string(i));
  }
}

TEST(HttpServer, StopWithOpenStreamsReturnsPromptly) {
  constexpr int kStreams = 4;
  Mailbox<std::shared_ptr<HttpExchange>> exchanges;
  auto server = start_server([&](const HttpRequest&, std::shared_ptr<HttpExchange> exchange) {
    exchange->stream_begin(200, {});
    exchange->stream_write("data: hello\n\n");
    exchanges.push(std::move(exchange));
  });
  ASSERT_NE(server, nullptr);

  std::atomic<int> streams_started{0};
  std::vector<HttpResult> results(kStreams);
  std::vector<std::thread> clients;
  for (int i = 0; i < kStreams; ++i) {
    clients.emplace_back([&, i] {
      bool counted = false;
      results[i] = testing::http_post_stream(url(*server, "/stream"), "{}", [&](std::string_view) {
        if (!std::exchange(counted, true)) ++streams_started;
      });
    });
  }
  std::vector<std::shared_ptr<HttpExchange>> open;
  for (int i = 0; i < kStreams; ++i) {
    std::optional<std::shared_ptr<HttpExchange>> exchange = exchanges.pop();
    ASSERT_TRUE(exchange.has_value());
    open.push_back(std::move(*exchange));
  }
  ASSERT_TRUE(wait_until([&] { return streams_started.load() == kStreams; }));

  const auto start = Clock::now();
  server->stop();
  EXPECT_LT(elapsed_ms(start), 2000);
  server->stop();  // idempotent
  for (std::thread& client : clients) client.join();
  for (const HttpResult& result : results) {
    EXPECT_EQ(result.status, 200);
    EXPECT_NE(result.error, "");  // cut short: no final chunk
  }
  for (const auto& exchange : open) {
    EXPECT_TRUE(exchange->closed());
    EXPECT_FALSE(exchange->stream_write("data: after stop\n\n"));
  }
  // The exchanges outlive the server; using and dropping them stays safe.
  server.reset();
  for (const auto& exchange : open) {
    EXPECT_FALSE(exchange->stream_write("data: after destruction\n\n"));
    exchange->stream_end();
  }
  open.clear();
}

TEST(HttpServer, StartRefusesBadOptionsAndBusyPorts) {
  HttpServerOptions options;
  options.threads = 0;
  auto bad = HttpServer::start(options, echo);
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().code, ErrorCode::kInvalidArgument);

  EXPECT_FALSE(HttpServer::start(HttpServerOptions{}, nullptr).has_value());

  auto server = start_server(echo);
  ASSERT_NE(server, nullptr);
  HttpServerOptions same_port;
  same_port.port = server->port();
  auto busy = HttpServer::start(same_port, echo);
  ASSERT_FALSE(busy.has_value());
  EXPECT_EQ(busy.error().code, ErrorCode::kIo);

  HttpServerOptions nowhere;
  nowhere.host = "256.1.1.1";
  auto unresolved = HttpServer::start(nowhere, echo);
  ASSERT_FALSE(unresolved.has_value());
  EXPECT_EQ(unresolved.error().code, ErrorCode::kIo);
}

TEST(SseParser, SplitsEventsAcrossPieces) {
  SseParser parser;
  parser.feed("data: a\n\nda");
  EXPECT_EQ(parser.take_events(), std::vector<std::string>{"a"});
  parser.feed("ta: b\r");
  parser.feed("\n\r\n: a comment\n\nevent: x\ndata:c\ndata: d\n");
  EXPECT_EQ(parser.take_events(), (std::vector<std::string>{"b"}));
  parser.feed("\n");
  EXPECT_EQ(parser.take_events(), (std::vector<std::string>{"c\nd"}));
  EXPECT_TRUE(parser.take_events().empty());
}

}  // namespace
}  // namespace idlefleet::transport::http_server_test
