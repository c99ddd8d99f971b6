#include "transport/nats_client.h"

#include <nats/nats.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <utility>
#include <vector>

#include "common/nkey.h"

namespace idlefleet::transport {
namespace detail {

// One subscription's state, shared by the client (which looks it up by id)
// and libnats (which holds its address as the handler's closure). libnats'
// share is `self`, dropped by on_subscription_complete, so the state outlives
// the last handler call however the subscription ends.
struct NatsSubscriptionState {
  NatsHandler handler;
  natsSubscription* nats = nullptr;
  // Cleared before the subscription is closed: a message that libnats already
  // dequeued then reaches no handler.
  std::atomic<bool> active{true};
  std::mutex mutex;
  std::condition_variable completed_changed;
  bool completed = false;  // libnats has called its last handler; guarded by mutex
  std::shared_ptr<NatsSubscriptionState> self;
};

// What libnats' connection callbacks reach through their closure.
struct NatsConnectionEvents {
  std::mutex mutex;
  std::condition_variable closed_changed;
  std::function<void()> on_disconnected;
  std::function<void()> on_reconnected;
  bool closed = false;  // the closed callback ran: libnats will not touch us again
  uint64_t async_errors = 0;
  std::string last_async_error;
  // Set before connecting and never changed: the signature callback reads it
  // without the lock.
  std::optional<Ed25519Keypair> nkey_identity;
};

}  // namespace detail

namespace {

using Subscription = detail::NatsSubscriptionState;
using Events = detail::NatsConnectionEvents;

// Before the first connection the server's max_payload is unknown; a message
// above the NATS default would make the server drop the connection when it is
// finally sent, so refuse it.
constexpr int64_t kPayloadBytesMaxUnknownServer = 1 << 20;

// The subscription whose handler this thread is running, so that a handler
// that unsubscribes itself does not wait for itself to return.
thread_local const Subscription* tls_delivering = nullptr;

Unexpected nats_error(ErrorCode code, const std::string& what, natsStatus status) {
  std::string message = what + ": " + natsStatus_GetText(status);
  // libnats keeps a more specific text per thread.
  const char* detail = nats_GetLastError(nullptr);
  if (detail != nullptr && *detail != '\0' && message.find(detail) == std::string::npos) {
    message += " (" + std::string(detail) + ")";
  }
  return Unexpected(code, std::move(message));
}

Status check_nats(natsStatus status, const std::string& what) {
  if (status == NATS_OK) return {};
  return nats_error(ErrorCode::kInvalidArgument, what, status);
}

bool is_space_or_control(char c) {
  auto u = static_cast<unsigned char>(c);
  return u <= 0x20 || u == 0x7f;
}

void on_message(natsConnection*, natsSubscription*, natsMsg* msg, void* closure) {
  const auto* sub = static_cast<const Subscription*>(closure);
  if (msg == nullptr) return;  // only timeout subscriptions get these; we make none
  if (sub->active.load(std::memory_order_acquire)) {
    std::string_view subject = natsMsg_GetSubject(msg);
    std::string_view data(natsMsg_GetData(msg), static_cast<size_t>(natsMsg_GetDataLength(msg)));
    tls_delivering = sub;
    // An exception must not unwind into libnats' C frames.
    try {
      sub->handler(subject, data);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "idlefleet: NATS handler for '%.*s' threw: %s\n", static_cast<int>(subject.size()),
                   subject.data(), e.what());
    } catch (...) {
      std::fprintf(stderr, "idlefleet: NATS handler for '%.*s' threw\n", static_cast<int>(subject.size()),
                   subject.data());
    }
    tls_delivering = nullptr;
  }
  natsMsg_Destroy(msg);
}

// Runs on the subscription's delivery thread after its last handler call.
void on_subscription_complete(void* closure) {
  auto* sub = static_cast<Subscription*>(closure);
  std::shared_ptr<Subscription> keep;  // outlives the notify below
  {
    std::lock_guard lock(sub->mutex);
    sub->completed = true;
    keep = std::move(sub->self);
  }
  sub->completed_changed.notify_all();
}

// Marks the subscription inactive, closes it in libnats (if the connection
// has not already) and waits for its handler to return.
void close_subscription(Subscription& sub) {
  sub.active.store(false, std::memory_order_release);
  natsSubscription_Destroy(sub.nats);  // unsubscribes if still open, then drops our libnats reference
  sub.nats = nullptr;
  if (tls_delivering == &sub) return;  // our caller is the handler: it returns after us
  std::unique_lock lock(sub.mutex);
  if (!sub.completed_changed.wait_for(lock, std::chrono::milliseconds(kHandlerReturnWaitMsMax),
                                      [&] { return sub.completed; })) {
    // `self` keeps the state alive for the stuck handler.
    std::fprintf(stderr, "idlefleet: a NATS handler has not returned after %lld ms; leaving it running\n",
                 static_cast<long long>(kHandlerReturnWaitMsMax));
  }
}

void run_event(Events* events, std::function<void()> Events::*which) {
  std::function<void()> fn;
  {
    std::lock_guard lock(events->mutex);
    fn = events->*which;
  }
  if (fn) fn();  // outside the lock, so it may call set_connection_callbacks
}

void on_disconnected(natsConnection*, void* closure) {
  run_event(static_cast<Events*>(closure), &Events::on_disconnected);
}

// Also the callback for a first connection made in the background.
void on_reconnected(natsConnection*, void* closure) {
  run_event(static_cast<Events*>(closure), &Events::on_reconnected);
}

// The server reported an error and kept the connection (libnats' shared
// callback thread).
void on_async_error(natsConnection* connection, natsSubscription*, natsStatus status, void* closure) {
  auto* events = static_cast<Events*>(closure);
  // libnats hands this error's own text to the callback's thread; the
  // connection's last error may already be a later one.
  const char* text = nats_GetLastError(nullptr);
  if (text == nullptr || *text == '\0') (void)natsConnection_GetLastError(connection, &text);
  std::string what = text != nullptr && *text != '\0' ? text : natsStatus_GetText(status);
  // A refused publish or subscription is a misconfiguration (or a vehicle
  // trying what it may not): say so, as libnats' own handler would have.
  if (status == NATS_NOT_PERMITTED) std::fprintf(stderr, "idlefleet: NATS: %s\n", what.c_str());
  std::lock_guard lock(events->mutex);
  ++events->async_errors;
  events->last_async_error = std::move(what);
}

// Signs the server's nonce with the connection's key, on the connection's own
// thread. libnats frees the signature.
natsStatus sign_nonce(char** /*custom_error*/, unsigned char** signature, int* signature_length, const char* nonce,
                      void* closure) {
  const auto* events = static_cast<const Events*>(closure);
  if (!events->nkey_identity) return NATS_ERR;
  // libnats asks even when the server sent no nonce (a server without
  // authorisation); it then ignores what we send, so sign nothing.
  const Ed25519Signature sig =
      ed25519_sign(events->nkey_identity->secret_key, nonce != nullptr ? std::string_view(nonce) : std::string_view());
  auto* out = static_cast<unsigned char*>(std::malloc(sig.size()));
  if (out == nullptr) return NATS_NO_MEMORY;
  std::memcpy(out, sig.data(), sig.size());
  *signature = out;
  *signature_length = static_cast<int>(sig.size());
  return NATS_OK;
}

void on_closed(natsConnection*, void* closure) {
  auto* events = static_cast<Events*>(closure);
  // Notify under the lock: the destructor frees `events` as soon as it can
  // take the lock after seeing `closed`.
  std::lock_guard lock(events->mutex);
  events->closed = true;
  events->closed_changed.notify_all();
}

// natsOptions, destroyed on scope exit.
struct OptionsDeleter {
  void operator()(natsOptions* options) const { natsOptions_Destroy(options); }
};

}  // namespace

Status validate_subject(std::string_view subject, bool wildcards_allowed) {
  auto invalid = [&](const std::string& why) {
    return Unexpected(ErrorCode::kInvalidArgument, "invalid NATS subject '" + std::string(subject) + "': " + why);
  };
  if (subject.empty()) return invalid("empty");
  if (subject.size() > kSubjectBytesMax) {
    return invalid(std::to_string(subject.size()) + " bytes, more than " + std::to_string(kSubjectBytesMax));
  }
  size_t begin = 0;
  while (true) {
    size_t end = subject.find('.', begin);
    bool last = end == std::string_view::npos;
    std::string_view token = subject.substr(begin, last ? std::string_view::npos : end - begin);
    if (token.empty()) return invalid("empty token");
    for (char c : token) {
      if (is_space_or_control(c)) return invalid("space or control character");
      if (c == '*' || c == '>') {
        if (!wildcards_allowed) return invalid("wildcards are not allowed here");
        if (token.size() != 1) return invalid("a wildcard must be a whole token");
        if (c == '>' && !last) return invalid("'>' must be the last token");
      }
    }
    if (last) return {};
    begin = end + 1;
  }
}

NatsClient::NatsClient() : events_(std::make_unique<Events>()) {}

Result<std::unique_ptr<NatsClient>> NatsClient::connect(NatsOptions options) {
  if (options.url.empty()) return Unexpected(ErrorCode::kInvalidArgument, "NATS: empty url");
  if (options.connect_timeout_ms <= 0 || options.reconnect_wait_ms < 0 || options.pending_messages_max <= 0 ||
      options.pending_bytes_max <= 0 || options.pending_bytes_max > INT_MAX || options.reconnect_buffer_bytes < 0 ||
      options.reconnect_buffer_bytes > INT_MAX) {
    return Unexpected(ErrorCode::kInvalidArgument,
                      "NATS: a timeout, wait, buffer or pending limit is negative, zero or above 2 GiB");
  }

  natsOptions* raw_options = nullptr;
  natsStatus status = natsOptions_Create(&raw_options);
  if (status != NATS_OK) return nats_error(ErrorCode::kInternal, "NATS: cannot create options", status);
  std::unique_ptr<natsOptions, OptionsDeleter> nats_options(raw_options);

  std::unique_ptr<NatsClient> client(new NatsClient());
  client->options_ = options;
  Events* events = client->events_.get();
  natsOptions* o = nats_options.get();
  IF_RETURN_IF_ERROR(check_nats(natsOptions_SetURL(o, options.url.c_str()), "NATS: url '" + options.url + "'"));
  if (!options.name.empty()) IF_RETURN_IF_ERROR(check_nats(natsOptions_SetName(o, options.name.c_str()), "NATS: name"));
  IF_RETURN_IF_ERROR(check_nats(natsOptions_SetTimeout(o, options.connect_timeout_ms), "NATS: connect timeout"));
  IF_RETURN_IF_ERROR(check_nats(natsOptions_SetAllowReconnect(o, true), "NATS: reconnect"));
  IF_RETURN_IF_ERROR(check_nats(natsOptions_SetSendAsap(o, options.send_asap), "NATS: send asap"));
  IF_RETURN_IF_ERROR(check_nats(natsOptions_SetReconnectWait(o, options.reconnect_wait_ms), "NATS: reconnect wait"));
  IF_RETURN_IF_ERROR(check_nats(natsOptions_SetMaxReconnect(o, options.max_reconnect), "NATS: max reconnect"));
  IF_RETURN_IF_ERROR(check_nats(natsOptions_SetReconnectBufSize(o, static_cast<int>(options.reconnect_buffer_bytes)),
                                "NATS: reconnect buffer"));
  IF_RETURN_IF_ERROR(
      check_nats(natsOptions_SetMaxPendingMsgs(o, options.pending_messages_max), "NATS: pending messages"));
  if (options.global_message_delivery) {
    IF_RETURN_IF_ERROR(check_nats(natsOptions_UseGlobalMessageDelivery(o, true), "NATS: global message delivery"));
  }
  IF_RETURN_IF_ERROR(check_nats(natsOptions_SetDisconnectedCB(o, on_disconnected, events), "NATS: callbacks"));
  IF_RETURN_IF_ERROR(check_nats(natsOptions_SetReconnectedCB(o, on_reconnected, events), "NATS: callbacks"));
  IF_RETURN_IF_ERROR(check_nats(natsOptions_SetClosedCB(o, on_closed, events), "NATS: callbacks"));
  IF_RETURN_IF_ERROR(check_nats(natsOptions_SetErrorHandler(o, on_async_error, events), "NATS: callbacks"));
  if (options.nkey_identity) {
    events->nkey_identity = options.nkey_identity;
    const std::string user = nkey_user_public(options.nkey_identity->public_key);
    IF_RETURN_IF_ERROR(check_nats(natsOptions_SetNKey(o, user.c_str(), sign_nonce, events), "NATS: nkey"));
  }
  // With a connected callback, a failed first connect is retried in the
  // background instead of blocking here for max_reconnect attempts.
  IF_RETURN_IF_ERROR(check_nats(
      natsOptions_SetRetryOnFailedConnect(o, options.retry_on_failed_connect,
                                          options.retry_on_failed_connect ? on_reconnected : nullptr, events),
      "NATS: retry on failed connect"));

  natsConnection* connection = nullptr;
  status = natsConnection_Connect(&connection, o);
  if (status != NATS_OK && status != NATS_NOT_YET_CONNECTED) {
    // No connection object was made, so no callback will reach `events`.
    return nats_error(ErrorCode::kIo, "NATS: cannot connect to " + options.url, status);
  }
  client->connection_ = connection;
  return client;
}

NatsClient::~NatsClient() {
  if (connection_ == nullptr) return;
  // Closing the connection closes every subscription: their delivery threads
  // finish the handler call in progress, if any, and stop.
  natsConnection_Close(connection_);
  // A handler may have subscribed meanwhile (that fails once the connection
  // is closed), so take the map until it stays empty.
  while (true) {
    std::unordered_map<uint64_t, std::shared_ptr<Subscription>> subscriptions;
    {
      std::lock_guard lock(mutex_);
      subscriptions.swap(subscriptions_);
    }
    if (subscriptions.empty()) break;
    for (auto& [id, sub] : subscriptions) close_subscription(*sub);
  }
  // libnats posts connection callbacks to one thread in order, and the closed
  // callback last; once it has run, nothing will reach events_ again.
  bool closed;
  {
    std::unique_lock lock(events_->mutex);
    closed = events_->closed_changed.wait_for(lock, std::chrono::milliseconds(kHandlerReturnWaitMsMax),
                                              [&] { return events_->closed; });
  }
  if (!closed) {
    std::fprintf(stderr, "idlefleet: NATS closed callback did not run within %lld ms; leaking its state\n",
                 static_cast<long long>(kHandlerReturnWaitMsMax));
    (void)events_.release();
  }
  natsConnection_Destroy(connection_);
}

Status NatsClient::publish(std::string_view subject, std::string_view data) {
  IF_RETURN_IF_ERROR(validate_subject(subject, /*wildcards_allowed=*/false));
  int64_t max_payload = natsConnection_GetMaxPayload(connection_);  // 0 until the first connection
  if (max_payload <= 0) max_payload = kPayloadBytesMaxUnknownServer;
  if (static_cast<int64_t>(data.size()) > max_payload || data.size() > INT_MAX) {
    return Unexpected(ErrorCode::kOutOfRange, "NATS message of " + std::to_string(data.size()) + " bytes on '" +
                                                  std::string(subject) + "' exceeds the server's max payload of " +
                                                  std::to_string(max_payload) + " bytes");
  }
  std::string subject_z(subject);
  natsStatus status =
      natsConnection_Publish(connection_, subject_z.c_str(), data.data(), static_cast<int>(data.size()));
  if (status == NATS_OK) return {};
  ErrorCode code = status == NATS_MAX_PAYLOAD ? ErrorCode::kOutOfRange : ErrorCode::kIo;
  return nats_error(code, "NATS publish on '" + subject_z + "'", status);
}

Result<uint64_t> NatsClient::subscribe(std::string_view subject, NatsHandler handler, std::string_view queue_group) {
  IF_RETURN_IF_ERROR(validate_subject(subject, /*wildcards_allowed=*/true));
  if (!handler) return Unexpected(ErrorCode::kInvalidArgument, "NATS subscribe: empty handler");
  if (queue_group.size() > kSubjectBytesMax ||
      std::any_of(queue_group.begin(), queue_group.end(), is_space_or_control)) {
    return Unexpected(ErrorCode::kInvalidArgument, "invalid NATS queue group '" + std::string(queue_group) + "'");
  }
  auto sub = std::make_shared<Subscription>();
  sub->handler = std::move(handler);
  std::string subject_z(subject), queue_z(queue_group);
  natsSubscription* nats_sub = nullptr;
  natsStatus status =
      queue_z.empty()
          ? natsConnection_Subscribe(&nats_sub, connection_, subject_z.c_str(), on_message, sub.get())
          : natsConnection_QueueSubscribe(&nats_sub, connection_, subject_z.c_str(), queue_z.c_str(), on_message,
                                          sub.get());
  if (status != NATS_OK) {
    // libnats routed no message to it (it registers and unregisters the
    // subscription under the connection lock), so `sub` may go.
    return nats_error(ErrorCode::kIo, "NATS subscribe to '" + subject_z + "'", status);
  }
  sub->nats = nats_sub;
  sub->self = sub;
  status = natsSubscription_SetOnCompleteCB(nats_sub, on_subscription_complete, sub.get());
  if (status != NATS_OK) {
    // Closed already (the connection closed for good): a handler may be
    // running and nothing will tell us when it returns, so leave `self` in
    // place, leaking the state rather than freeing it under the handler.
    sub->active.store(false, std::memory_order_release);
    natsSubscription_Destroy(nats_sub);
    return nats_error(ErrorCode::kIo, "NATS subscribe to '" + subject_z + "'", status);
  }
  // Best effort: on failure the libnats defaults (65536 messages, 64 MiB) stay.
  (void)natsSubscription_SetPendingLimits(nats_sub, options_.pending_messages_max,
                                          static_cast<int>(options_.pending_bytes_max));
  std::lock_guard lock(mutex_);
  uint64_t id = next_subscription_id_++;
  subscriptions_.emplace(id, std::move(sub));
  return id;
}

void NatsClient::unsubscribe(uint64_t id) {
  std::shared_ptr<Subscription> sub;
  {
    std::lock_guard lock(mutex_);
    auto it = subscriptions_.find(id);
    if (it == subscriptions_.end()) return;
    sub = std::move(it->second);
    subscriptions_.erase(it);
    int64_t dropped = 0;
    if (natsSubscription_GetDropped(sub->nats, &dropped) == NATS_OK && dropped > 0) {
      dropped_by_closed_subscriptions_ += static_cast<uint64_t>(dropped);
    }
  }
  close_subscription(*sub);
}

Status NatsClient::flush(int64_t timeout_ms) {
  natsStatus status = natsConnection_FlushTimeout(connection_, timeout_ms);
  if (status == NATS_OK) return {};
  Unexpected error = nats_error(ErrorCode::kIo, "NATS flush", status);
  // A connection the server closed says why only here: "Authorization
  // Violation" for a key it does not know.
  const char* why = nullptr;
  if (natsConnection_GetLastError(connection_, &why) != NATS_OK && why != nullptr && *why != '\0' &&
      error.error.message.find(why) == std::string::npos) {
    error.error.message += "; the server said: " + std::string(why);
  }
  if (const std::string last = last_async_error(); !last.empty() && error.error.message.find(last) == std::string::npos) {
    error.error.message += "; before that: " + last;
  }
  return error;
}

bool NatsClient::connected() const { return natsConnection_Status(connection_) == NATS_CONN_STATUS_CONNECTED; }

uint64_t NatsClient::dropped_messages() const {
  std::lock_guard lock(mutex_);
  uint64_t total = dropped_by_closed_subscriptions_;
  for (const auto& [id, sub] : subscriptions_) {
    int64_t dropped = 0;
    if (natsSubscription_GetDropped(sub->nats, &dropped) == NATS_OK && dropped > 0) {
      total += static_cast<uint64_t>(dropped);
    }
  }
  return total;
}

uint64_t NatsClient::async_errors() const {
  std::lock_guard lock(events_->mutex);
  return events_->async_errors;
}

std::string NatsClient::last_async_error() const {
  std::lock_guard lock(events_->mutex);
  return events_->last_async_error;
}

void NatsClient::set_connection_callbacks(std::function<void()> on_disconnected,
                                          std::function<void()> on_reconnected) {
  std::lock_guard lock(events_->mutex);
  events_->on_disconnected = std::move(on_disconnected);
  events_->on_reconnected = std::move(on_reconnected);
}

}  // namespace idlefleet::transport
