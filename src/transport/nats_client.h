// NatsClient: one connection to a NATS server, over the libnats C client.
//
// What it adds to libnats: Status results instead of natsStatus codes,
// subject and payload checks before anything is sent, std::function
// handlers, and handler lifetimes that are safe to reason about. libnats
// may run a subscription's handler once more after natsSubscription_Unsubscribe
// returns; here, unsubscribe() and the destructor wait until a running handler
// has returned, and no handler starts after they return. Connection events
// (disconnected, reconnected) are delivered the same way.
//
// A connection reconnects by itself (forever, by default), re-subscribing
// and replaying what was published while it was down, up to
// reconnect_buffer_bytes. Many NatsClients may live in one process (an agent
// runs one per simulated vehicle); the libnats library state is shared and
// never torn down here.
//
// Threads: libnats runs each subscription's handler on that subscription's
// own thread, one message at a time in arrival order, and connection
// callbacks on a thread shared by all connections of the process. A handler
// that blocks delays only its own subscription (until pending_messages_max or
// pending_bytes_max are reached; then the newest messages are dropped and
// counted in dropped_messages()); a connection callback that blocks delays
// every connection's callbacks.
//
// Thread-safety: all methods may be called from any thread at the same time,
// including from handlers, except the destructor (see there).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "common/crypto.h"
#include "common/result.h"

struct __natsConnection;  // libnats' natsConnection, kept out of our headers

namespace idlefleet::transport {

namespace detail {
// Defined in nats_client.cc, where libnats' C callbacks use them.
struct NatsSubscriptionState;
struct NatsConnectionEvents;
}  // namespace detail

// The longest subject we publish or subscribe to. NATS itself has no hard
// limit; ours keeps subjects readable and bounded in logs.
inline constexpr size_t kSubjectBytesMax = 256;
// How long unsubscribe() and the destructor wait for a running handler to
// return, and the destructor for libnats to finish the connection's
// callbacks. Past this the state the handler uses is leaked, not freed, and a
// warning printed: a stuck handler is a bug, but not one to crash on.
inline constexpr int64_t kHandlerReturnWaitMsMax = 30'000;

struct NatsOptions {
  std::string url{};   // nats://host:port; a comma-separated list is allowed
  std::string name{};  // connection name shown by the server (monitoring, logs)
  int64_t connect_timeout_ms = 2000;
  // When no server answers at connect(), keep trying in the background
  // (connect() then succeeds with connected() false) instead of failing.
  bool retry_on_failed_connect = true;
  // Write each publish at once. libnats otherwise holds publishes up to 1 ms
  // to batch them, which costs every hop of a request that much latency;
  // callers that send many small messages batch them themselves (the agent
  // coalesces tokens into chunks).
  bool send_asap = true;
  int64_t reconnect_wait_ms = 100;
  int max_reconnect = -1;  // attempts per outage; -1 = forever
  int64_t reconnect_buffer_bytes = 8 << 20;  // publishes kept while disconnected
  // Per subscription: messages waiting for the handler before new ones drop.
  int pending_messages_max = 65536;
  int64_t pending_bytes_max = 64 << 20;
  // Who connects: with a key, the connection presents it as a NATS NKey
  // user (common/nkey.h) and signs the nonce the server sends with it, on
  // every connect and reconnect; the secret never leaves the process. A
  // server without authorisation sends no nonce and lets the client in all
  // the same. Empty: connect anonymously.
  std::optional<Ed25519Keypair> nkey_identity{};
  // Deliver every subscription's messages from libnats's shared delivery
  // threads instead of a thread per subscription (its default): for a
  // connection with thousands of subscriptions (the load generator's shared
  // connections), which would otherwise need as many threads.
  bool global_message_delivery = false;
};

// Receives a message. subject and data are valid only during the call.
using NatsHandler = std::function<void(std::string_view subject, std::string_view data)>;

// Checks a subject: 1..kSubjectBytesMax bytes of dot-separated, non-empty
// tokens without spaces or control characters. With wildcards, a token may
// be "*", and the last token may be ">"; without, '*' and '>' are refused.
Status validate_subject(std::string_view subject, bool wildcards_allowed);

class NatsClient {
 public:
  // Connects to options.url. With retry_on_failed_connect, an unreachable
  // server is not an error: the client connects when the server appears.
  static Result<std::unique_ptr<NatsClient>> connect(NatsOptions options);

  NatsClient(const NatsClient&) = delete;
  NatsClient& operator=(const NatsClient&) = delete;
  // Closes the connection without draining: messages not yet handled are
  // dropped, and unsent publishes may be lost (flush() first to keep them).
  // Waits for running handlers to return; none runs afterwards.
  // REQUIRES: not called from one of this client's connection callbacks, nor
  // concurrently with another method of this client.
  ~NatsClient();

  // Publishes data on subject. Refuses invalid subjects (kInvalidArgument)
  // and payloads above the server's max_payload (kOutOfRange) before sending.
  // While disconnected, the message is buffered for the reconnect (kIo once
  // the buffer is full).
  Status publish(std::string_view subject, std::string_view data);

  // Calls handler for each message on subject (wildcards allowed). With a
  // queue group, each message goes to one member of the group. Returns an id
  // for unsubscribe(). Messages published before the server has seen the
  // subscription are missed; flush() after subscribing waits for that.
  Result<uint64_t> subscribe(std::string_view subject, NatsHandler handler, std::string_view queue_group = "");

  // Stops delivery. Waits for a running call of this subscription's handler
  // to return, unless called from that handler itself; either way the handler
  // is not called again once unsubscribe returns. Unknown ids are ignored.
  // REQUIRES: two handlers do not unsubscribe each other at the same time.
  void unsubscribe(uint64_t id);

  // Waits until the server has processed everything sent so far (a PING/PONG
  // round trip), or timeout_ms passes (kIo).
  Status flush(int64_t timeout_ms = 2000);

  // Whether the connection is up now (not connecting, reconnecting or closed).
  bool connected() const;

  // Messages dropped because a handler fell behind (slow consumer), summed
  // over this client's subscriptions, including ones since unsubscribed.
  uint64_t dropped_messages() const;

  // Errors the server reported on this connection without closing it (a
  // publish or subscription that the user's permissions refuse, a slow
  // consumer), how many there were, and the text of the latest.
  uint64_t async_errors() const;
  std::string last_async_error() const;

  // Sets the functions called when the connection goes down and when it comes
  // back (on_reconnected also runs when a client created before its server
  // was up first connects). They run on libnats' shared callback thread:
  // keep them short. Either may be empty. Call before traffic: events that
  // happened earlier are not replayed.
  void set_connection_callbacks(std::function<void()> on_disconnected, std::function<void()> on_reconnected);

 private:
  NatsClient();

  __natsConnection* connection_ = nullptr;
  std::unique_ptr<detail::NatsConnectionEvents> events_;  // ours, read by libnats' callback thread
  NatsOptions options_;

  mutable std::mutex mutex_;  // guards the members below
  std::unordered_map<uint64_t, std::shared_ptr<detail::NatsSubscriptionState>> subscriptions_;
  uint64_t next_subscription_id_ = 1;
  uint64_t dropped_by_closed_subscriptions_ = 0;
};

}  // namespace idlefleet::transport
