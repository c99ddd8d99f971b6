// The coordinator's configuration: a TOML file read once at start.
//
//   nats_url = "nats://127.0.0.1:4222"
//   data_dir = "idlefleet-data"          # the SQLite files live here (and the coordinator's key)
//   database = ""                        # "postgresql://user@host/db": the stores live there instead
//   [http]
//   host = "127.0.0.1"
//   port = 8080                          # 0: the OS picks a free port (tests)
//   threads = 2
//   [jobs]
//   lease_ms = 10000                     # a vehicle's lease on an attempt
//   tick_ms = 50                         # how often the coordinator checks leases
//   vehicle_timeout_ms = 15000           # silence after which a vehicle is gone
//   attempts_max = 8
//   max_tokens_default = 256             # when a request names none
//   max_tokens_limit = 4096              # the most a request may ask for
//   queue_jobs_max = 10000               # unfinished jobs held at once
//   request_bytes_max = 1048576          # one HTTP request body
//   [batches]
//   file_bytes_max = 104857600           # one uploaded file (POST /v1/files)
//   jobs_in_flight = 32                  # batch requests placed at once, all batches together
//   [auth]
//   required = false                     # true: client API routes need a key
//   [pricing]                            # what clients are charged, for spend limits
//   prompt_micros_per_mtok = 0           # micro-units of money per million prompt tokens
//   completion_micros_per_mtok = 0       # and per million completion tokens
//   [pricing.models."stories260K"]       # a model's own prices (up to 256 models), both keys
//   prompt_micros_per_mtok = 0
//   completion_micros_per_mtok = 0
//   [vehicles]
//   enrolment = "open"                   # "required": only vehicles enrolled with an owner's code
//   [ledger]                             # what owners are paid (core/ledger.h)
//   owner_share_ppm = 600000             # owners' share of the price, parts per million
//   energy_tariff_micros_per_kwh = 250000  # energy refunded per kWh metered
//   wear_micros_per_accelerator_hour = 50000  # per weighted accelerator-hour
//   prepaid = false                      # true: refuse priced work to a client whose money is spent
//   [nats]                               # per-vehicle NATS credentials (coordinator/nats_auth.h)
//   authorization_file = ""              # rewritten at start and after each enrolment
//   server_pid_file = ""                 # nats-server's pid_file: SIGHUP it after each rewrite
//   [verification]                       # re-running jobs on other vehicles (core/verification.h)
//   enabled = false                      # true: sample finished jobs and check them
//   seed = 0                             # mixed with each job id for the draw
//   sample_floor_ppm = 50000             # the least share of a trusted vehicle's jobs checked
//   warmup_checks = 5                    # agreements in a row before sampling falls below all
//   standing_initial = 500               # a new vehicle's standing (0..1000)
//   standing_agree = 10                  # gained per agreement
//   standing_fault = 200                 # lost per fault
//   quarantine_below = 300               # standing below this: no more work
//   check_wait_ms = 1800000              # a check not done by then: the job stands unverified
//   [[models]]                           # one entry per GGUF file served
//   id = "stories15M"
//   path = "models/stories15M.gguf"
//
// auth.required: when true, /v1/models, /v1/models/{id}, /v1/completions and
// /v1/chat/completions need `Authorization: Bearer <key>` with a key made by
// `idlefleet admin keys create` (see coordinator/api_keys.h for the errors and
// limits). It defaults to false so that `idlefleet demo` and a first local
// coordinator work with no setup: keys live in the data directory, which a
// fresh install does not have yet, and a default that locked every client out
// would make the first thing a newcomer sees a 401. Anyone serving beyond
// loopback should set it to true. /healthz, /metrics, /v1/status,
// /v1/vehicles and /v1/catalog stay open either way: they are the operator's
// and the vehicles' routes, not the client API.
//
// pricing: until the ledger prices by model, one price for every model, used
// to add up each key's spend and enforce its spend limit. 0 (the default)
// makes requests free, so spend limits never trigger.
//
// ledger.prepaid: when true and the price of the work is not zero, a
// completion, chat completion, embedding or new batch from a client whose
// ledger balance plus credit limit is zero or less is refused with 429
// insufficient_quota before any work is queued. A batch already running
// goes on to its end (its lines were accepted when the client had money).
// It defaults to false so that existing setups, which made no deposits, keep
// serving.
//
// Every key is optional (the defaults below) except id and path inside each
// [[models]] entry. The parser trusts nothing: a key it does not know, a value
// of the wrong type, or one outside the ranges below is an error that names
// the key and its line, so that a typo fails loudly instead of running with a
// default. toml++ throws; its exceptions stop at this boundary.
//
// Thread-safety: pure functions over values.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "core/verification.h"

namespace idlefleet::coordinator {

// An inclusive range for one integer key; the parser and validate() share them.
struct IntRange {
  int64_t min;
  int64_t max;
  bool contains(int64_t v) const { return v >= min && v <= max; }
};

inline constexpr size_t kConfigBytesMax = 1u << 20;
inline constexpr size_t kUrlBytesMax = 1024;
inline constexpr size_t kHostBytesMax = 255;
inline constexpr size_t kPathBytesMax = 4096;
inline constexpr size_t kModelIdBytesMax = 128;
inline constexpr size_t kModelsMax = 256;
inline constexpr size_t kModelPricesMax = 256;  // [pricing.models] entries
inline constexpr IntRange kHttpPortRange{0, 65535};
inline constexpr IntRange kHttpThreadsRange{1, 64};
inline constexpr IntRange kLeaseMsRange{100, 3'600'000};
inline constexpr IntRange kTickMsRange{1, 60'000};
inline constexpr IntRange kVehicleTimeoutMsRange{100, 3'600'000};
inline constexpr IntRange kAttemptsMaxRange{1, 100};
inline constexpr IntRange kMaxTokensRange{1, 1 << 20};  // max_tokens_default and max_tokens_limit
inline constexpr IntRange kQueueJobsMaxRange{1, 100'000};
inline constexpr IntRange kRequestBytesMaxRange{1024, 4 << 20};
inline constexpr IntRange kFileBytesMaxRange{1024, int64_t{512} << 20};
inline constexpr IntRange kBatchJobsInFlightRange{1, 10'000};
inline constexpr IntRange kPriceMicrosPerMtokRange{0, 10'000'000'000};  // up to 10,000 units of money per Mtok
inline constexpr IntRange kOwnerSharePpmRange{0, 1'000'000};
inline constexpr IntRange kTariffMicrosPerKwhRange{0, 100'000'000};  // up to 100 units of money per kWh
inline constexpr IntRange kWearMicrosPerHourRange{0, 1'000'000'000};
inline constexpr IntRange kVerificationSeedRange{0, INT64_MAX};
inline constexpr IntRange kSampleFloorPpmRange{0, 1'000'000};
inline constexpr IntRange kWarmupChecksRange{0, 1000};
inline constexpr IntRange kStandingRange{0, 1000};
inline constexpr IntRange kStandingFaultRange{1, 1000};
inline constexpr IntRange kCheckWaitMsRange{1000, 7 * 86'400'000LL};

// A GGUF file served by the catalog, under the id clients name it by.
struct ModelEntry {
  std::string id;    // printable ASCII without spaces, 1..kModelIdBytesMax bytes, unique
  std::string path;  // relative paths are relative to the working directory; existence is the catalog's check

  bool operator==(const ModelEntry&) const = default;
};

// Everything the coordinator reads at start; the defaults are a working local setup.
struct CoordinatorConfig {
  std::string nats_url = "nats://127.0.0.1:4222";
  std::string http_host = "127.0.0.1";
  uint16_t http_port = 8080;
  int http_threads = 2;
  std::string data_dir = "idlefleet-data";  // SQLite lives here
  // "" keeps every store in a SQLite file in data_dir (one machine); a
  // postgresql:// URL puts them all in that database, which coordinator
  // replicas share (store/pg_db.h). Validated as such a URL when set.
  std::string database;
  std::vector<ModelEntry> models;
  int64_t lease_ms = 10000;
  int64_t tick_ms = 50;
  int64_t vehicle_timeout_ms = 15000;
  uint32_t attempts_max = 8;
  uint64_t max_tokens_default = 256;
  uint64_t max_tokens_limit = 4096;
  size_t queue_jobs_max = 10000;
  size_t request_bytes_max = 1 << 20;
  size_t file_bytes_max = size_t{100} << 20;  // [batches]
  size_t batch_jobs_in_flight = 32;           // [batches]
  bool auth_required = false;  // [auth] required
  uint64_t prompt_micros_per_mtok = 0;      // [pricing]
  uint64_t completion_micros_per_mtok = 0;  // [pricing]
  // [pricing.models."<id>"]: a model's own prices, in place of the two
  // above (which price every model without an entry).
  struct ModelPrices {
    uint64_t prompt_micros_per_mtok = 0;
    uint64_t completion_micros_per_mtok = 0;
    bool operator==(const ModelPrices&) const = default;
  };
  std::map<std::string, ModelPrices> model_prices;
  // The prices of `model_id`: its entry, else [pricing]'s.
  ModelPrices prices_of(const std::string& model_id) const {
    auto it = model_prices.find(model_id);
    return it != model_prices.end() ? it->second : ModelPrices{prompt_micros_per_mtok, completion_micros_per_mtok};
  }
  // [vehicles] enrolment: "open" pins a vehicle's key at its first hello
  // (trust on first use; the vehicle is its own owner until enrolled);
  // "required" refuses vehicles not enrolled with an owner's one-time code.
  bool enrolment_required = false;
  uint64_t owner_share_ppm = 600'000;              // [ledger]
  uint64_t energy_tariff_micros_per_kwh = 250'000;  // [ledger]: one flat tariff until owners set theirs
  uint64_t wear_micros_per_accelerator_hour = 50'000;  // [ledger]
  bool prepaid = false;  // [ledger] prepaid: refuse priced work once balance + credit limit <= 0
  // [nats] authorization_file: "" (the default) leaves nats-server's
  // authorisation to the operator; a path makes the coordinator write the
  // fleet's users there (coordinator/nats_auth.h) at start and after every
  // enrolment. server_pid_file: nats-server's pid file, signalled (SIGHUP)
  // after each write so that a vehicle just enrolled can connect at once;
  // only with authorization_file.
  std::string nats_authorization_file;
  std::string nats_server_pid_file;
  // [verification]: off by default, as a fleet of one cannot check itself
  // (a check waits for a second vehicle of the same engine build).
  core::VerificationConfig verification;

  // Every field in its range and the fields consistent with each other
  // (tick_ms < lease_ms, max_tokens_default <= max_tokens_limit, model ids
  // unique). The message names the field as its TOML key ("http.port").
  Status validate() const;

  bool operator==(const CoordinatorConfig&) const = default;
};

// Reads and parses the file at `path`. A missing file is kNotFound; one
// larger than kConfigBytesMax kOutOfRange; otherwise as parse_coordinator_config().
Result<CoordinatorConfig> load_coordinator_config(const std::string& path);

// Parses TOML text; `source_name` (usually the path) starts every message.
// Errors: not TOML -> kCorrupt; an unknown key, a wrong type, a duplicate or
// missing model field -> kInvalidArgument; a value out of range ->
// kOutOfRange. Each names the key and its line: "unknown key 'foo' at line 3".
Result<CoordinatorConfig> parse_coordinator_config(std::string_view toml_text, std::string_view source_name);

// Where a store lives: the database when one is set, else the SQLite file
// `sqlite_file` in data_dir.
std::string store_location(const CoordinatorConfig& config, std::string_view sqlite_file);

}  // namespace idlefleet::coordinator
