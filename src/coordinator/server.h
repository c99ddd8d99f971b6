// The coordinator process: the shell around core::CoordinatorMachine.
//
//   HTTP (Beast)  ──requests──>  ┐
//   NATS (up.*)   ──messages──>  ├─ inbox ─> loop thread: machine.handle(event, now)
//   timer (tick)  ──────────── > ┘                 │
//                                                  └─> effects: publish on NATS (down.<id>),
//                                                      stream tokens to clients (SSE), answer,
//                                                      persist jobs (SQLite, batched per tick),
//                                                      count refusals (/metrics)
//
// One thread owns the machine, the client streams and the store, so none of
// them needs a lock; HTTP and NATS threads only parse, validate and post.
// The inbox is bounded (kInboxEventsMax): when it is full, vehicle messages
// are dropped and counted (the protocol repairs them: heartbeats, leases) and
// clients get 503.
//
// Text: the coordinator tokenises prompts with the model's own tokenizer
// (read from the GGUF in the catalog, without loading weights) exactly as
// `idlefleet run` does, and detokenises streamed ids the same way, so a
// request's text equals a local run's with the same settings.
//
// Jobs survive a restart: unfinished ones are read back from the store and
// placed again from their produced tokens (their clients are gone; the
// result stays in the store). Embedding jobs are the exception: their
// vectors are not stored, so one restored unfinished ends as failed.
//
// Embeddings (POST /v1/embeddings): one job of kind embed per input, run on
// vehicles like any job (core/coordinator_machine.h); the loop assembles the
// response in input order once all are done (EmbeddingClient in server.cc).
//
// API keys (coordinator/api_keys.h): with [auth] required = true, the client
// API needs a bearer key from <data_dir>/keys.db. HTTP threads check keys and
// rate limits against the KeyGate's memory (its own mutex); the loop thread
// writes usage and rereads the file every kKeysSyncMs, so `idlefleet admin
// keys revoke` takes effect within that time.
//
// Prepaid balances ([ledger] prepaid = true, priced work only): the loop
// thread, which owns the ledger store, refuses new completions, embeddings
// and batches of a client whose balance plus credit limit is 0 or less (429
// insufficient_quota) before they are queued. It holds each client's funds
// for at most 1 s (deposits come from the CLI) and rereads them after each
// of the client's settlements. Running batches are not stopped.
//
// Idempotency-Key (POST /v1/completions and /v1/chat/completions, not
// streamed): the loop thread looks the key up in keys.db, scoped by API key
// (or by the client's address when auth is off). The same key and the same
// body bytes within kIdempotencyWindowMs get the stored response again, with
// `Idempotent-Replayed: true`, and no job runs; a different body, or the same
// key while its first request still runs, gets 409 (code
// "idempotency_key_conflict"). Only 200 responses are stored: a failed
// request runs again when retried. Keys are 1..255 bytes of printable ASCII
// (else 400); at most kIdempotencyEntriesMax responses of at most
// kIdempotencyResponseBytesMax bytes are kept (store/key_store.h), the oldest
// pruned first. On a stream the header is ignored: a replay would not be the
// same stream.
//
// Thread-safety: start() and stop() from one thread; the rest is internal.
#pragma once

#include <memory>
#include <string>

#include "common/result.h"
#include "coordinator/config.h"

namespace idlefleet::coordinator {

inline constexpr size_t kInboxEventsMax = 1u << 18;
inline constexpr size_t kVehiclesListedMax = 10000;  // GET /v1/vehicles
inline constexpr int64_t kVehiclesDocMs = 200;       // GET /v1/vehicles is rebuilt at most this often
inline constexpr int64_t kStatusMs = 250;            // the status, gauges and dashboard, unasked: at most this often
inline constexpr int64_t kStatusWaitMs = 2000;       // status_json() waits this long for a fresh status
inline constexpr int64_t kIdempotencyWindowMs = 24 * 3600 * 1000;  // a stored response is replayed this long
// A finished job settles when all its receipts are in, or this long after it
// finished with the receipts that came (an attempt without one earns nothing).
inline constexpr int64_t kSettleGraceMs = 10 * 1000;
// At start, jobs that finished done this recently without a settlement are
// settled (a stop between a job's end and its settlement).
inline constexpr int64_t kSettleSweepWindowMs = 48 * 3600 * 1000;
inline constexpr uint64_t kCatalogFileBytesMax = uint64_t{2} << 30;  // served whole from memory

struct ServerOptions {
  CoordinatorConfig config;
  bool verbose = false;  // log every refusal and placement to stderr
};

class CoordinatorServer {
 public:
  static Result<std::unique_ptr<CoordinatorServer>> start(ServerOptions options);
  ~CoordinatorServer();
  void stop();

  uint16_t http_port() const;
  // The /v1/status document, at most a tick old (it waits up to
  // kStatusWaitMs for the loop thread). Not from the loop thread.
  std::string status_json() const;

  struct Impl;

 private:
  explicit CoordinatorServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace idlefleet::coordinator
