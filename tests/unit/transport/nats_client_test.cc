// NatsClient and NatsServer against a real nats-server on a free port: round
// trips, wildcards, queue groups, limits, reconnection after a restart, and
// handler lifetimes (unsubscribe and destruction while messages flow).
#include "transport/nats_client.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "transport/nats_server.h"
#include "transport/process.h"

namespace idlefleet::transport::nats_client_test {
namespace {

constexpr int64_t kWaitMs = 10'000;  // generous: a loaded CI machine, ASan

struct Message {
  std::string subject;
  std::string data;
};

// Collects delivered messages; tests wait on a count with a deadline.
class Inbox {
 public:
  NatsHandler handler() {
    return [this](std::string_view subject, std::string_view data) {
      std::lock_guard lock(mutex_);
      messages_.push_back({std::string(subject), std::string(data)});
      changed_.notify_all();
    };
  }
  bool wait_for(size_t count, int64_t timeout_ms = kWaitMs) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, std::chrono::milliseconds(timeout_ms), [&] { return messages_.size() >= count; });
  }
  std::vector<Message> messages() const {
    std::lock_guard lock(mutex_);
    return messages_;
  }
  size_t size() const {
    std::lock_guard lock(mutex_);
    return messages_.size();
  }

 private:
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<Message> messages_;
};

// Counts connection events.
class ConnectionEvents {
 public:
  void attach(NatsClient& client) {
    client.set_connection_callbacks([this] { bump(disconnects_); }, [this] { bump(reconnects_); });
  }
  bool wait_disconnects(int n) { return wait(disconnects_, n); }
  bool wait_reconnects(int n) { return wait(reconnects_, n); }

 private:
  void bump(int& counter) {
    std::lock_guard lock(mutex_);
    ++counter;
    changed_.notify_all();
  }
  bool wait(const int& counter, int n) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, std::chrono::milliseconds(kWaitMs), [&] { return counter >= n; });
  }
  std::mutex mutex_;
  std::condition_variable changed_;
  int disconnects_ = 0;
  int reconnects_ = 0;
};

// Polls `done` until it holds or timeout_ms passes, for states that no
// callback announces (a drop counter).
bool wait_until(const std::function<bool()>& done, int64_t timeout_ms = kWaitMs) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (!done()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

std::unique_ptr<NatsServer> start_server(NatsServerOptions options = {}) {
  auto server = NatsServer::start(std::move(options));
  EXPECT_TRUE(server) << server.error().to_string();
  return server ? std::move(*server) : nullptr;
}

class NatsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = start_server();
    ASSERT_NE(server_, nullptr);
  }

  std::unique_ptr<NatsClient> connect(const std::string& name, NatsOptions options = {}) {
    options.url = server_->url();
    options.name = name;
    auto client = NatsClient::connect(std::move(options));
    EXPECT_TRUE(client) << client.error().to_string();
    return client ? std::move(*client) : nullptr;
  }

  std::unique_ptr<NatsServer> server_;
};

TEST_F(NatsTest, ServerStartsOnAFreePortAndAcceptsClients) {
  EXPECT_NE(server_->port(), 0);
  EXPECT_EQ(server_->url(), "nats://127.0.0.1:" + std::to_string(server_->port()));
  EXPECT_GT(server_->pid(), 0);
  EXPECT_TRUE(wait_for_tcp("127.0.0.1", server_->port(), 1000));
  auto client = connect("first");
  ASSERT_NE(client, nullptr);
  EXPECT_TRUE(client->connected());
  EXPECT_TRUE(client->flush());
}

TEST(NatsServer, MissingBinaryIsNamedInTheError) {
  auto server = NatsServer::start({.binary = "/nonexistent/nats-server"});
  ASSERT_FALSE(server);
  EXPECT_EQ(server.error().code, ErrorCode::kNotFound);
  EXPECT_NE(server.error().message.find("/nonexistent/nats-server"), std::string::npos) << server.error().message;
}

TEST(NatsServer, BadConfigurationQuotesTheLog) {
  auto server = NatsServer::start({.config_path = "/nonexistent/idlefleet.conf"});
  ASSERT_FALSE(server);
  EXPECT_EQ(server.error().code, ErrorCode::kIo);
  EXPECT_NE(server.error().message.find("exited"), std::string::npos) << server.error().message;
  EXPECT_NE(server.error().message.find("idlefleet.conf"), std::string::npos) << server.error().message;
}

TEST_F(NatsTest, RoundTripDeliversInOrder) {
  Inbox inbox;  // declared first: it outlives the client and its handlers
  auto client = connect("order");
  ASSERT_TRUE(client->subscribe("test.order", inbox.handler()));
  ASSERT_TRUE(client->flush());  // the server has the subscription
  constexpr int kCount = 1000;
  for (int i = 0; i < kCount; ++i) ASSERT_TRUE(client->publish("test.order", std::to_string(i)));
  ASSERT_TRUE(client->flush());
  ASSERT_TRUE(inbox.wait_for(kCount));
  auto got = inbox.messages();
  ASSERT_EQ(got.size(), size_t{kCount});
  for (int i = 0; i < kCount; ++i) {
    ASSERT_EQ(got[i].data, std::to_string(i));
    ASSERT_EQ(got[i].subject, "test.order");
  }
  EXPECT_EQ(client->dropped_messages(), 0u);
}

TEST_F(NatsTest, WildcardSubscriptions) {
  Inbox one_token, tail;
  auto client = connect("wildcards");
  ASSERT_TRUE(client->subscribe("fleet.*.status", one_token.handler()));
  ASSERT_TRUE(client->subscribe("fleet.>", tail.handler()));
  ASSERT_TRUE(client->flush());
  for (const char* subject : {"fleet.v1.status", "fleet.v2.status", "fleet.v1.status.extra", "fleet.v1.other", "depot.x"}) {
    ASSERT_TRUE(client->publish(subject, subject));
  }
  ASSERT_TRUE(client->flush());
  ASSERT_TRUE(tail.wait_for(4));
  ASSERT_TRUE(one_token.wait_for(2));
  // A marker after the rest: once it arrives, nothing else is on its way.
  ASSERT_TRUE(client->publish("fleet.marker.status", ""));
  ASSERT_TRUE(one_token.wait_for(3));
  auto got = one_token.messages();
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[0].subject, "fleet.v1.status");
  EXPECT_EQ(got[1].subject, "fleet.v2.status");
  EXPECT_EQ(got[2].subject, "fleet.marker.status");
  ASSERT_TRUE(tail.wait_for(5));
  EXPECT_EQ(tail.size(), 5u);
}

TEST_F(NatsTest, QueueGroupDeliversEachMessageToOneMember) {
  Inbox a, b, all;
  auto worker_a = connect("worker-a");
  auto worker_b = connect("worker-b");
  auto observer = connect("observer");
  ASSERT_TRUE(worker_a->subscribe("jobs.offer", a.handler(), "workers"));
  ASSERT_TRUE(worker_b->subscribe("jobs.offer", b.handler(), "workers"));
  ASSERT_TRUE(observer->subscribe("jobs.offer", all.handler()));
  ASSERT_TRUE(worker_a->flush());
  ASSERT_TRUE(worker_b->flush());
  ASSERT_TRUE(observer->flush());
  constexpr size_t kCount = 200;
  for (size_t i = 0; i < kCount; ++i) ASSERT_TRUE(observer->publish("jobs.offer", std::to_string(i)));
  ASSERT_TRUE(observer->flush());
  ASSERT_TRUE(all.wait_for(kCount));
  ASSERT_TRUE(wait_until([&] { return a.size() + b.size() >= kCount; }));
  // Everything the group received has arrived; a marker shows no extra copies.
  ASSERT_TRUE(observer->publish("jobs.offer", "marker"));
  ASSERT_TRUE(all.wait_for(kCount + 1));
  ASSERT_TRUE(wait_until([&] { return a.size() + b.size() == kCount + 1; }));
  std::vector<int> seen(kCount + 1, 0);
  for (const Inbox* inbox : {&a, &b}) {
    for (const Message& m : inbox->messages()) ++seen[m.data == "marker" ? kCount : std::stoul(m.data)];
  }
  for (size_t i = 0; i <= kCount; ++i) EXPECT_EQ(seen[i], 1) << "message " << i;
}

TEST(NatsLimits, OversizePublishIsRefusedWithAClearError) {
  Inbox inbox;
  auto server = start_server({.max_payload_bytes = 1024});
  ASSERT_NE(server, nullptr);
  auto client = NatsClient::connect({.url = server->url(), .name = "limits"});
  ASSERT_TRUE(client) << client.error().to_string();
  ASSERT_TRUE((*client)->subscribe("big", inbox.handler()));
  ASSERT_TRUE((*client)->flush());

  auto refused = (*client)->publish("big", std::string(1025, 'x'));
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, ErrorCode::kOutOfRange);
  EXPECT_NE(refused.error().message.find("1025 bytes"), std::string::npos) << refused.error().message;
  EXPECT_NE(refused.error().message.find("max payload of 1024"), std::string::npos) << refused.error().message;

  ASSERT_TRUE((*client)->publish("big", std::string(1024, 'y')));
  ASSERT_TRUE(inbox.wait_for(1));
  EXPECT_EQ(inbox.messages()[0].data.size(), 1024u);
  EXPECT_TRUE((*client)->connected());  // the refusal never reached the server
}

TEST_F(NatsTest, InvalidSubjectsAreRefused) {
  Inbox inbox;
  auto client = connect("subjects");
  for (const std::string& bad : {std::string(""), std::string("a..b"), std::string(".a"), std::string("a."),
                                 std::string("a b"), std::string("a\tb"), std::string("a.*"), std::string("a.>"),
                                 std::string("a*"), std::string(kSubjectBytesMax + 1, 'a')}) {
    auto status = client->publish(bad, "x");
    ASSERT_FALSE(status) << "'" << bad << "'";
    EXPECT_EQ(status.error().code, ErrorCode::kInvalidArgument);
  }
  for (const char* bad : {"", "a..b", "a.>.b", "a.b*", "a b", "*>"}) {
    auto id = client->subscribe(bad, inbox.handler());
    ASSERT_FALSE(id) << "'" << bad << "'";
    EXPECT_EQ(id.error().code, ErrorCode::kInvalidArgument);
  }
  EXPECT_FALSE(client->subscribe("ok", inbox.handler(), "bad group"));
  EXPECT_FALSE(client->subscribe("ok", nullptr));
  for (const char* good : {"a", "a.*", ">", "a.*.c.>", "fleet.v-1_x.status"}) {
    EXPECT_TRUE(client->subscribe(good, inbox.handler())) << good;
  }
  EXPECT_TRUE(client->publish(std::string(kSubjectBytesMax, 'a'), "x"));
  EXPECT_TRUE(client->connected());
}

TEST_F(NatsTest, ReconnectsAfterServerRestartAndKeepsSubscriptions) {
  ConnectionEvents events;
  Inbox inbox;
  auto client = connect("survivor");
  events.attach(*client);
  ASSERT_TRUE(client->subscribe("chaos.ping", inbox.handler()));
  ASSERT_TRUE(client->flush());
  ASSERT_TRUE(client->publish("chaos.ping", "before"));
  ASSERT_TRUE(inbox.wait_for(1));

  uint16_t port = server_->port();
  int old_pid = server_->pid();
  ASSERT_TRUE(server_->restart());
  EXPECT_EQ(server_->port(), port);
  EXPECT_NE(server_->pid(), old_pid);
  ASSERT_TRUE(events.wait_disconnects(1));
  ASSERT_TRUE(events.wait_reconnects(1));
  EXPECT_TRUE(client->connected());

  // libnats re-sent the subscription: messages after the restart arrive,
  // from this connection and from a new one.
  ASSERT_TRUE(client->publish("chaos.ping", "after-self"));
  ASSERT_TRUE(client->flush());
  ASSERT_TRUE(inbox.wait_for(2));
  auto other = connect("newcomer");
  ASSERT_TRUE(other->publish("chaos.ping", "after-other"));
  ASSERT_TRUE(other->flush());
  ASSERT_TRUE(inbox.wait_for(3));
  auto got = inbox.messages();
  EXPECT_EQ(got[1].data, "after-self");
  EXPECT_EQ(got[2].data, "after-other");
}

TEST_F(NatsTest, KilledServerIsSeenAndRestartedOneIsRejoined) {
  ConnectionEvents events;
  Inbox inbox;
  auto client = connect("witness");
  events.attach(*client);
  server_->kill();
  EXPECT_EQ(server_->pid(), -1);
  ASSERT_TRUE(events.wait_disconnects(1));
  EXPECT_FALSE(client->connected());
  // Publishing while down is buffered, not an error.
  ASSERT_TRUE(client->subscribe("buffered", inbox.handler()));
  EXPECT_TRUE(client->publish("buffered", "while-down"));
  ASSERT_TRUE(server_->restart());
  ASSERT_TRUE(events.wait_reconnects(1));
  EXPECT_TRUE(client->connected());
  ASSERT_TRUE(inbox.wait_for(1));
  EXPECT_EQ(inbox.messages()[0].data, "while-down");
}

TEST(NatsConnect, ClientStartedBeforeItsServerConnectsWhenItAppears) {
  auto port = free_loopback_port();
  ASSERT_TRUE(port);
  ConnectionEvents events;
  auto client = NatsClient::connect({.url = "nats://127.0.0.1:" + std::to_string(*port), .name = "early"});
  ASSERT_TRUE(client) << client.error().to_string();
  EXPECT_FALSE((*client)->connected());
  events.attach(**client);
  auto server = start_server({.port = *port});
  ASSERT_NE(server, nullptr);
  ASSERT_TRUE(events.wait_reconnects(1));
  EXPECT_TRUE((*client)->connected());
}

TEST(NatsConnect, WithoutRetryAnAbsentServerIsAnError) {
  auto port = free_loopback_port();
  ASSERT_TRUE(port);
  auto client = NatsClient::connect(
      {.url = "nats://127.0.0.1:" + std::to_string(*port), .name = "impatient", .retry_on_failed_connect = false});
  ASSERT_FALSE(client);
  EXPECT_EQ(client.error().code, ErrorCode::kIo);
  EXPECT_NE(client.error().message.find(std::to_string(*port)), std::string::npos) << client.error().message;
}

TEST(NatsConnect, NeverConnectedClientClosesPromptly) {
  auto port = free_loopback_port();
  ASSERT_TRUE(port);
  auto client = NatsClient::connect({.url = "nats://127.0.0.1:" + std::to_string(*port), .name = "orphan"});
  ASSERT_TRUE(client);
  auto started = std::chrono::steady_clock::now();
  client->reset();
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(2));
}

TEST_F(NatsTest, TwoClientsInOneProcessAreIndependent) {
  Inbox at_a, at_b;
  auto a = connect("vehicle-a");
  auto b = connect("vehicle-b");
  ASSERT_TRUE(a->subscribe("vehicle.a", at_a.handler()));
  ASSERT_TRUE(b->subscribe("vehicle.b", at_b.handler()));
  ASSERT_TRUE(a->flush());
  ASSERT_TRUE(b->flush());
  ASSERT_TRUE(a->publish("vehicle.b", "from-a"));
  ASSERT_TRUE(b->publish("vehicle.a", "from-b"));
  ASSERT_TRUE(at_a.wait_for(1));
  ASSERT_TRUE(at_b.wait_for(1));
  EXPECT_EQ(at_a.messages()[0].data, "from-b");
  EXPECT_EQ(at_b.messages()[0].data, "from-a");

  a.reset();  // one vehicle leaves; the other keeps working
  EXPECT_TRUE(b->connected());
  ASSERT_TRUE(b->publish("vehicle.b", "to-self"));
  ASSERT_TRUE(at_b.wait_for(2));
  auto c = connect("vehicle-c");
  ASSERT_TRUE(c->publish("vehicle.b", "from-c"));
  ASSERT_TRUE(at_b.wait_for(3));
}

TEST_F(NatsTest, UnsubscribeStopsDelivery) {
  std::atomic<bool> unsubscribed{false};
  std::atomic<int> late_calls{0};
  Inbox first, sentinel;
  auto client = connect("unsubscriber");
  auto first_handler = first.handler();
  auto id = client->subscribe("topic", [&](std::string_view s, std::string_view d) {
    if (unsubscribed.load()) ++late_calls;
    first_handler(s, d);
  });
  ASSERT_TRUE(id);
  ASSERT_TRUE(client->subscribe("topic", sentinel.handler()));
  ASSERT_TRUE(client->flush());
  ASSERT_TRUE(client->publish("topic", "1"));
  ASSERT_TRUE(first.wait_for(1));

  client->unsubscribe(*id);
  unsubscribed = true;
  client->unsubscribe(*id);  // twice: ignored
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(client->publish("topic", "later"));
  ASSERT_TRUE(client->flush());
  ASSERT_TRUE(sentinel.wait_for(101));  // the later messages were delivered, to the sentinel only
  EXPECT_EQ(first.size(), 1u);
  EXPECT_EQ(late_calls.load(), 0);
}

TEST_F(NatsTest, HandlerMayUnsubscribeItself) {
  std::atomic<uint64_t> id{0};
  std::atomic<int> calls{0};
  Inbox sentinel;
  std::mutex ready;  // held until `id` is stored
  auto client = connect("self-unsubscriber");
  std::unique_lock hold(ready);
  auto subscribed = client->subscribe("once", [&](std::string_view, std::string_view) {
    std::lock_guard wait_for_id(ready);
    ++calls;
    client->unsubscribe(id.load());
  });
  ASSERT_TRUE(subscribed);
  id = *subscribed;
  hold.unlock();
  ASSERT_TRUE(client->subscribe("once", sentinel.handler()));
  ASSERT_TRUE(client->flush());
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(client->publish("once", "x"));
  ASSERT_TRUE(client->flush());
  ASSERT_TRUE(wait_until([&] { return calls.load() >= 1; }));
  // More traffic, seen by the sentinel, finds the subscription gone.
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(client->publish("once", "y"));
  ASSERT_TRUE(client->flush());
  ASSERT_TRUE(sentinel.wait_for(40));
  EXPECT_EQ(calls.load(), 1);
}

// State a handler touches; under ASan a call after its owner freed it fails.
struct Sink {
  std::mutex mutex;
  std::vector<std::string> received;
  std::atomic<bool> owner_gone{false};
  std::atomic<int> calls_after_owner_gone{0};
};

TEST_F(NatsTest, DestructionWhileMessagesAreInFlightIsSafe) {
  auto publisher = connect("flood");
  for (int round = 0; round < 5; ++round) {
    auto sink = std::make_unique<Sink>();
    auto subscriber = connect("victim");
    Sink* s = sink.get();
    auto handler = [s](std::string_view, std::string_view data) {
      if (s->owner_gone.load()) ++s->calls_after_owner_gone;
      std::lock_guard lock(s->mutex);
      s->received.emplace_back(data);
    };
    ASSERT_TRUE(subscriber->subscribe("flood.data", handler));
    ASSERT_TRUE(subscriber->subscribe("flood.*", handler));
    ASSERT_TRUE(subscriber->subscribe("flood.>", handler, "q"));
    ASSERT_TRUE(subscriber->flush());
    // The flood goes on until the subscriber is gone, so its destructor runs
    // with messages arriving, queued and being handled.
    std::atomic<bool> stop{false};
    std::thread flood([&] {
      while (!stop.load()) {
        for (int i = 0; i < 100; ++i) (void)publisher->publish("flood.data", std::string(64, 'x'));
        (void)publisher->flush();
      }
    });
    bool flowing = wait_until([&] {
      std::lock_guard lock(s->mutex);
      return s->received.size() >= 1000;
    });
    subscriber.reset();
    s->owner_gone = true;
    stop = true;
    flood.join();
    ASSERT_TRUE(flowing);
    EXPECT_EQ(s->calls_after_owner_gone.load(), 0);
    sink.reset();  // a late handler call would now be a use after free
  }
}

// Lets a blocked handler go when a test ends early.
struct ReleaseOnExit {
  std::atomic<bool>& release;
  ~ReleaseOnExit() { release = true; }
};

TEST_F(NatsTest, DestructorWaitsForARunningHandler) {
  ConnectionEvents events;
  std::atomic<bool> entered{false}, release{false}, returned{false};
  auto publisher = connect("publisher");
  auto subscriber = connect("subscriber");
  ReleaseOnExit unblock{release};
  events.attach(*subscriber);
  ASSERT_TRUE(subscriber->subscribe("slow", [&](std::string_view, std::string_view) {
    if (entered.exchange(true)) return;
    while (!release.load()) std::this_thread::yield();
    returned = true;
  }));
  ASSERT_TRUE(subscriber->flush());
  ASSERT_TRUE(publisher->publish("slow", "x"));
  ASSERT_TRUE(wait_until([&] { return entered.load(); }));

  bool returned_before_destructor_did = false;
  std::thread destroyer([&] {
    subscriber.reset();
    returned_before_destructor_did = returned.load();
  });
  // The destructor closes the connection first (announced by the
  // disconnected callback), then waits for the handler.
  EXPECT_TRUE(events.wait_disconnects(1));
  release = true;
  destroyer.join();
  EXPECT_TRUE(returned_before_destructor_did);
}

TEST_F(NatsTest, SlowConsumerDropsAreCounted) {
  std::atomic<bool> release{false};
  std::atomic<int> handled{0};
  auto publisher = connect("fast");
  auto subscriber = connect("slow", {.pending_messages_max = 10});
  ReleaseOnExit unblock{release};  // a failed assertion must not leave the handler spinning
  ASSERT_TRUE(subscriber->subscribe("burst", [&](std::string_view, std::string_view) {
    while (!release.load()) std::this_thread::yield();
    ++handled;
  }));
  ASSERT_TRUE(subscriber->flush());
  constexpr int kCount = 100;
  for (int i = 0; i < kCount; ++i) ASSERT_TRUE(publisher->publish("burst", "x"));
  ASSERT_TRUE(publisher->flush());
  ASSERT_TRUE(subscriber->flush());  // the subscriber has read everything before the PONG
  EXPECT_GT(subscriber->dropped_messages(), 0u);
  release = true;
  ASSERT_TRUE(wait_until([&] { return handled.load() + subscriber->dropped_messages() == uint64_t{kCount}; }));
  EXPECT_LE(handled.load(), 11);  // one in the handler, ten waiting
}

}  // namespace
}  // namespace idlefleet::transport::nats_client_test
