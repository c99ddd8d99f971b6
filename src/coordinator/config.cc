#include "coordinator/config.h"

#include <toml++/toml.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <memory>
#include <optional>
#include <type_traits>
#include <utility>

#include "common/toml_names.h"
#include "store/job_store.h"
#include "store/location.h"

namespace idlefleet::coordinator {

// What the config allows, the layers below must accept: the whole queue fits
// in one store batch, and an accepted request and its max_tokens fit a stored job.
static_assert(static_cast<uint64_t>(kQueueJobsMaxRange.max) <= store::kPutJobsMax);
static_assert(static_cast<uint64_t>(kRequestBytesMaxRange.max) <= store::kRequestJsonBytesMax);
static_assert(static_cast<uint64_t>(kMaxTokensRange.max) <= store::kMaxTokensMax);
static_assert(kHttpPortRange.min >= 0 && kHttpPortRange.max <= 65535);

namespace {

template <class T>
bool in_range(T v, IntRange r) {
  if constexpr (std::is_unsigned_v<T>) {
    return static_cast<uint64_t>(v) <= static_cast<uint64_t>(r.max) &&
           (r.min <= 0 || static_cast<uint64_t>(v) >= static_cast<uint64_t>(r.min));
  } else {
    return r.contains(static_cast<int64_t>(v));
  }
}

// Appends rather than `"[" + ...`, which trips g++ 12's false -Wrestrict (GCC PR 105329).
std::string range_text(IntRange r) {
  std::string out = "[";
  out += std::to_string(r.min);
  out += ", ";
  out += std::to_string(r.max);
  out += "]";
  return out;
}

// `at` is "" (a struct being validated) or " at line N" (a file being parsed).
template <class T>
Status check_int(std::string_view key, std::string_view at, T v, IntRange r) {
  if (in_range(v, r)) return {};
  return Unexpected(ErrorCode::kOutOfRange, std::string(key) + std::string(at) + " is " + std::to_string(v) +
                                                ", must be in " + range_text(r));
}

// Text that ends up in URLs, file names and log lines: present, bounded, and
// free of control characters (TOML's \u0000 escape would otherwise cut a path short).
// `id_like` also refuses spaces and non-ASCII, for identifiers.
Status check_text(std::string_view key, std::string_view at, std::string_view v, size_t bytes_max,
                  bool id_like = false) {
  const std::string name = std::string(key) + std::string(at);
  if (v.empty()) return Unexpected(ErrorCode::kInvalidArgument, name + " is empty");
  if (v.size() > bytes_max) {
    return Unexpected(ErrorCode::kOutOfRange, name + " is " + std::to_string(v.size()) + " bytes, more than " +
                                                  std::to_string(bytes_max));
  }
  for (char c : v) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) return Unexpected(ErrorCode::kInvalidArgument, name + " contains a control character");
    if (id_like && (u == ' ' || u > 0x7e)) {
      return Unexpected(ErrorCode::kInvalidArgument,
                        name + " '" + std::string(v) + "' must be printable ASCII without spaces");
    }
  }
  return {};
}

Status check_fields(const CoordinatorConfig& c, std::string_view at) {
  IF_RETURN_IF_ERROR(check_text("nats_url", at, c.nats_url, kUrlBytesMax));
  IF_RETURN_IF_ERROR(check_text("data_dir", at, c.data_dir, kPathBytesMax));
  if (!c.database.empty()) IF_RETURN_IF_ERROR(check_text("database", at, c.database, kUrlBytesMax));
  if (!c.database.empty() && !store::is_postgres_url(c.database)) {
    return Unexpected(ErrorCode::kInvalidArgument,
                      "database" + std::string(at) + " must be a postgresql:// (or postgres://) URL, or empty for SQLite in data_dir");
  }
  IF_RETURN_IF_ERROR(check_text("http.host", at, c.http_host, kHostBytesMax));
  IF_RETURN_IF_ERROR(check_int("http.port", at, c.http_port, kHttpPortRange));
  IF_RETURN_IF_ERROR(check_int("http.threads", at, c.http_threads, kHttpThreadsRange));
  IF_RETURN_IF_ERROR(check_int("jobs.lease_ms", at, c.lease_ms, kLeaseMsRange));
  IF_RETURN_IF_ERROR(check_int("jobs.tick_ms", at, c.tick_ms, kTickMsRange));
  IF_RETURN_IF_ERROR(check_int("jobs.vehicle_timeout_ms", at, c.vehicle_timeout_ms, kVehicleTimeoutMsRange));
  IF_RETURN_IF_ERROR(check_int("jobs.attempts_max", at, c.attempts_max, kAttemptsMaxRange));
  IF_RETURN_IF_ERROR(check_int("jobs.max_tokens_default", at, c.max_tokens_default, kMaxTokensRange));
  IF_RETURN_IF_ERROR(check_int("jobs.max_tokens_limit", at, c.max_tokens_limit, kMaxTokensRange));
  IF_RETURN_IF_ERROR(check_int("jobs.queue_jobs_max", at, c.queue_jobs_max, kQueueJobsMaxRange));
  IF_RETURN_IF_ERROR(check_int("jobs.request_bytes_max", at, c.request_bytes_max, kRequestBytesMaxRange));
  IF_RETURN_IF_ERROR(check_int("batches.file_bytes_max", at, c.file_bytes_max, kFileBytesMaxRange));
  IF_RETURN_IF_ERROR(check_int("batches.jobs_in_flight", at, c.batch_jobs_in_flight, kBatchJobsInFlightRange));
  IF_RETURN_IF_ERROR(check_int("pricing.prompt_micros_per_mtok", at, c.prompt_micros_per_mtok, kPriceMicrosPerMtokRange));
  IF_RETURN_IF_ERROR(
      check_int("pricing.completion_micros_per_mtok", at, c.completion_micros_per_mtok, kPriceMicrosPerMtokRange));
  if (c.model_prices.size() > kModelPricesMax) {
    return Unexpected(ErrorCode::kOutOfRange, "pricing.models has more than " + std::to_string(kModelPricesMax) +
                                                  " entries");
  }
  for (const auto& [id, p] : c.model_prices) {
    IF_RETURN_IF_ERROR(check_text("pricing.models key", at, id, kModelIdBytesMax, true));
    IF_RETURN_IF_ERROR(check_int("pricing.models." + id + ".prompt_micros_per_mtok", at, p.prompt_micros_per_mtok,
                                 kPriceMicrosPerMtokRange));
    IF_RETURN_IF_ERROR(check_int("pricing.models." + id + ".completion_micros_per_mtok", at,
                                 p.completion_micros_per_mtok, kPriceMicrosPerMtokRange));
  }
  IF_RETURN_IF_ERROR(check_int("ledger.owner_share_ppm", at, c.owner_share_ppm, kOwnerSharePpmRange));
  IF_RETURN_IF_ERROR(check_int("ledger.energy_tariff_micros_per_kwh", at, c.energy_tariff_micros_per_kwh,
                               kTariffMicrosPerKwhRange));
  IF_RETURN_IF_ERROR(check_int("ledger.wear_micros_per_accelerator_hour", at, c.wear_micros_per_accelerator_hour,
                               kWearMicrosPerHourRange));
  if (Status st = core::validate_verification(c.verification); !st) {
    return Unexpected(ErrorCode::kInvalidArgument, "verification." + st.error().message + std::string(at));
  }
  return {};
}

std::string at_line(const toml::source_region& r) { return " at line " + std::to_string(r.begin.line); }

std::string join(std::string_view prefix, std::string_view key) {
  return prefix.empty() ? std::string(key) : std::string(prefix) + "." + std::string(key);
}

// Reads one parsed document into a config. Each read checks the node's type
// and range where the node's line is still known; validate() then checks the
// fields against each other.
class Reader {
 public:
  explicit Reader(std::string_view source) : source_(source) {}

  Status read(const toml::table& root, CoordinatorConfig& c) {
    IF_RETURN_IF_ERROR(only_keys(root, "", {"nats_url", "data_dir", "database", "http", "jobs", "batches", "auth", "pricing",
                                            "vehicles", "ledger", "nats", "verification", "models"}));
    IF_RETURN_IF_ERROR(text(root, "", "nats_url", kUrlBytesMax, c.nats_url));
    IF_RETURN_IF_ERROR(text(root, "", "data_dir", kPathBytesMax, c.data_dir));
    // "" is the default (SQLite in data_dir), written out or not.
    const toml::node* database = root.get("database");
    if (database == nullptr || database->as_string() == nullptr || !database->as_string()->get().empty()) {
      IF_RETURN_IF_ERROR(text(root, "", "database", kUrlBytesMax, c.database));
    }
    const toml::table* http = nullptr;
    IF_RETURN_IF_ERROR(table(root, "http", http));
    if (http != nullptr) {
      IF_RETURN_IF_ERROR(only_keys(*http, "http", {"host", "port", "threads"}));
      IF_RETURN_IF_ERROR(text(*http, "http", "host", kHostBytesMax, c.http_host));
      IF_RETURN_IF_ERROR(integer(*http, "http", "port", kHttpPortRange, c.http_port));
      IF_RETURN_IF_ERROR(integer(*http, "http", "threads", kHttpThreadsRange, c.http_threads));
    }
    const toml::table* jobs = nullptr;
    IF_RETURN_IF_ERROR(table(root, "jobs", jobs));
    if (jobs != nullptr) {
      IF_RETURN_IF_ERROR(only_keys(*jobs, "jobs",
                                   {"lease_ms", "tick_ms", "vehicle_timeout_ms", "attempts_max", "max_tokens_default",
                                    "max_tokens_limit", "queue_jobs_max", "request_bytes_max"}));
      IF_RETURN_IF_ERROR(integer(*jobs, "jobs", "lease_ms", kLeaseMsRange, c.lease_ms));
      IF_RETURN_IF_ERROR(integer(*jobs, "jobs", "tick_ms", kTickMsRange, c.tick_ms));
      IF_RETURN_IF_ERROR(integer(*jobs, "jobs", "vehicle_timeout_ms", kVehicleTimeoutMsRange, c.vehicle_timeout_ms));
      IF_RETURN_IF_ERROR(integer(*jobs, "jobs", "attempts_max", kAttemptsMaxRange, c.attempts_max));
      IF_RETURN_IF_ERROR(integer(*jobs, "jobs", "max_tokens_default", kMaxTokensRange, c.max_tokens_default));
      IF_RETURN_IF_ERROR(integer(*jobs, "jobs", "max_tokens_limit", kMaxTokensRange, c.max_tokens_limit));
      IF_RETURN_IF_ERROR(integer(*jobs, "jobs", "queue_jobs_max", kQueueJobsMaxRange, c.queue_jobs_max));
      IF_RETURN_IF_ERROR(integer(*jobs, "jobs", "request_bytes_max", kRequestBytesMaxRange, c.request_bytes_max));
    }
    const toml::table* batches = nullptr;
    IF_RETURN_IF_ERROR(table(root, "batches", batches));
    if (batches != nullptr) {
      IF_RETURN_IF_ERROR(only_keys(*batches, "batches", {"file_bytes_max", "jobs_in_flight"}));
      IF_RETURN_IF_ERROR(integer(*batches, "batches", "file_bytes_max", kFileBytesMaxRange, c.file_bytes_max));
      IF_RETURN_IF_ERROR(
          integer(*batches, "batches", "jobs_in_flight", kBatchJobsInFlightRange, c.batch_jobs_in_flight));
    }
    const toml::table* auth = nullptr;
    IF_RETURN_IF_ERROR(table(root, "auth", auth));
    if (auth != nullptr) {
      IF_RETURN_IF_ERROR(only_keys(*auth, "auth", {"required"}));
      IF_RETURN_IF_ERROR(boolean(*auth, "auth", "required", c.auth_required));
    }
    const toml::table* pricing = nullptr;
    IF_RETURN_IF_ERROR(table(root, "pricing", pricing));
    if (pricing != nullptr) {
      IF_RETURN_IF_ERROR(
          only_keys(*pricing, "pricing", {"prompt_micros_per_mtok", "completion_micros_per_mtok", "models"}));
      IF_RETURN_IF_ERROR(
          integer(*pricing, "pricing", "prompt_micros_per_mtok", kPriceMicrosPerMtokRange, c.prompt_micros_per_mtok));
      IF_RETURN_IF_ERROR(integer(*pricing, "pricing", "completion_micros_per_mtok", kPriceMicrosPerMtokRange,
                                 c.completion_micros_per_mtok));
      if (const toml::node* n = pricing->get("models")) {
        const toml::table* per_model = n->as_table();
        if (per_model == nullptr) return wrong_type("pricing.models", *n, "a table");
        IF_RETURN_IF_ERROR(model_prices(*per_model, c.model_prices));
      }
    }
    const toml::table* vehicles = nullptr;
    IF_RETURN_IF_ERROR(table(root, "vehicles", vehicles));
    if (vehicles != nullptr) {
      IF_RETURN_IF_ERROR(only_keys(*vehicles, "vehicles", {"enrolment"}));
      if (const toml::node* n = vehicles->get("enrolment")) {
        const auto v = n->value<std::string>();
        if (!v || (*v != "open" && *v != "required")) {
          return error(ErrorCode::kInvalidArgument, "vehicles.enrolment must be \"open\" or \"required\"");
        }
        c.enrolment_required = *v == "required";
      }
    }
    const toml::table* ledger = nullptr;
    IF_RETURN_IF_ERROR(table(root, "ledger", ledger));
    if (ledger != nullptr) {
      IF_RETURN_IF_ERROR(only_keys(
          *ledger, "ledger",
          {"owner_share_ppm", "energy_tariff_micros_per_kwh", "wear_micros_per_accelerator_hour", "prepaid"}));
      IF_RETURN_IF_ERROR(boolean(*ledger, "ledger", "prepaid", c.prepaid));
      IF_RETURN_IF_ERROR(integer(*ledger, "ledger", "owner_share_ppm", kOwnerSharePpmRange, c.owner_share_ppm));
      IF_RETURN_IF_ERROR(integer(*ledger, "ledger", "energy_tariff_micros_per_kwh", kTariffMicrosPerKwhRange,
                                 c.energy_tariff_micros_per_kwh));
      IF_RETURN_IF_ERROR(integer(*ledger, "ledger", "wear_micros_per_accelerator_hour", kWearMicrosPerHourRange,
                                 c.wear_micros_per_accelerator_hour));
    }
    const toml::table* nats = nullptr;
    IF_RETURN_IF_ERROR(table(root, "nats", nats));
    if (nats != nullptr) {
      IF_RETURN_IF_ERROR(only_keys(*nats, "nats", {"authorization_file", "server_pid_file"}));
      IF_RETURN_IF_ERROR(text(*nats, "nats", "authorization_file", kPathBytesMax, c.nats_authorization_file));
      IF_RETURN_IF_ERROR(text(*nats, "nats", "server_pid_file", kPathBytesMax, c.nats_server_pid_file));
      if (!c.nats_server_pid_file.empty() && c.nats_authorization_file.empty()) {
        return error(ErrorCode::kInvalidArgument,
                     "nats.server_pid_file is set without nats.authorization_file: there is nothing to reload");
      }
    }
    const toml::table* verification = nullptr;
    IF_RETURN_IF_ERROR(table(root, "verification", verification));
    if (verification != nullptr) {
      core::VerificationConfig& v = c.verification;
      IF_RETURN_IF_ERROR(only_keys(*verification, "verification",
                                   {"enabled", "seed", "sample_floor_ppm", "warmup_checks", "standing_initial",
                                    "standing_agree", "standing_fault", "quarantine_below", "check_wait_ms"}));
      IF_RETURN_IF_ERROR(boolean(*verification, "verification", "enabled", v.enabled));
      IF_RETURN_IF_ERROR(integer(*verification, "verification", "seed", kVerificationSeedRange, v.seed));
      int64_t floor_ppm = static_cast<int64_t>(v.sample_floor * 1e6 + 0.5);
      IF_RETURN_IF_ERROR(integer(*verification, "verification", "sample_floor_ppm", kSampleFloorPpmRange, floor_ppm));
      v.sample_floor = static_cast<double>(floor_ppm) / 1e6;
      IF_RETURN_IF_ERROR(integer(*verification, "verification", "warmup_checks", kWarmupChecksRange, v.warmup_checks));
      IF_RETURN_IF_ERROR(
          integer(*verification, "verification", "standing_initial", kStandingRange, v.standing_initial));
      IF_RETURN_IF_ERROR(integer(*verification, "verification", "standing_agree", kStandingRange, v.standing_agree));
      IF_RETURN_IF_ERROR(
          integer(*verification, "verification", "standing_fault", kStandingFaultRange, v.standing_fault));
      IF_RETURN_IF_ERROR(
          integer(*verification, "verification", "quarantine_below", kStandingRange, v.quarantine_below));
      IF_RETURN_IF_ERROR(
          integer(*verification, "verification", "check_wait_ms", kCheckWaitMsRange, v.check_wait_ms_max));
    }
    return models(root, c.models);
  }

  Unexpected error(ErrorCode code, const std::string& message) const {
    return Unexpected(code, std::string(source_) + ": " + message);
  }

 private:
  // Unknown keys are errors, reported in file order (toml++ iterates a table sorted by name).
  Status only_keys(const toml::table& t, std::string_view prefix, std::initializer_list<std::string_view> allowed) {
    const toml::key* first = nullptr;
    for (const auto& [k, v] : t) {
      bool known = false;
      for (std::string_view a : allowed) known = known || k.str() == a;
      if (!known && (first == nullptr || k.source().begin < first->source().begin)) first = &k;
    }
    if (first == nullptr) return {};
    return error(ErrorCode::kInvalidArgument,
                 "unknown key '" + join(prefix, first->str()) + "'" + at_line(first->source()));
  }

  Status wrong_type(std::string_view name, const toml::node& n, const char* wanted) {
    return error(ErrorCode::kInvalidArgument, "key '" + std::string(name) + "'" + at_line(n.source()) + " must be " +
                                                  wanted + ", not " + toml_type_name(n.type()));
  }

  Status table(const toml::table& parent, std::string_view key, const toml::table*& out) {
    const toml::node* n = parent.get(key);
    if (n == nullptr) return {};
    out = n->as_table();
    if (out == nullptr) return wrong_type(key, *n, "a table");
    return {};
  }

  Status text(const toml::table& t, std::string_view prefix, std::string_view key, size_t bytes_max, std::string& out,
              bool id_like = false) {
    const toml::node* n = t.get(key);
    if (n == nullptr) return {};
    const std::string name = join(prefix, key);
    const auto* s = n->as_string();
    if (s == nullptr) return wrong_type(name, *n, "a string");
    if (Status st = check_text(name, at_line(n->source()), s->get(), bytes_max, id_like); !st) {
      return error(st.error().code, st.error().message);
    }
    out = s->get();
    return {};
  }

  Status boolean(const toml::table& t, std::string_view prefix, std::string_view key, bool& out) {
    const toml::node* n = t.get(key);
    if (n == nullptr) return {};
    const auto* b = n->as_boolean();
    if (b == nullptr) return wrong_type(join(prefix, key), *n, "a boolean");
    out = b->get();
    return {};
  }

  template <class T>
  Status integer(const toml::table& t, std::string_view prefix, std::string_view key, IntRange range, T& out) {
    const toml::node* n = t.get(key);
    if (n == nullptr) return {};
    const std::string name = join(prefix, key);
    const auto* i = n->as_integer();
    if (i == nullptr) return wrong_type(name, *n, "an integer");
    if (Status st = check_int(name, at_line(n->source()), i->get(), range); !st) {
      return error(st.error().code, st.error().message);
    }
    out = static_cast<T>(i->get());  // in range, so it fits T
    return {};
  }

  // [pricing.models."<id>"] tables: both prices each, ids as model ids.
  Status model_prices(const toml::table& t, std::map<std::string, CoordinatorConfig::ModelPrices>& out) {
    if (t.size() > kModelPricesMax) {
      return error(ErrorCode::kOutOfRange, "pricing.models" + at_line(t.source()) + " has " +
                                               std::to_string(t.size()) + " entries, more than " +
                                               std::to_string(kModelPricesMax));
    }
    for (const auto& [k, v] : t) {
      const std::string id(k.str());
      const std::string prefix = "pricing.models." + id;
      if (Status st = check_text("pricing.models key", at_line(k.source()), id, kModelIdBytesMax, true); !st) {
        return error(st.error().code, st.error().message);
      }
      const toml::table* entry = v.as_table();
      if (entry == nullptr) return wrong_type(prefix, v, "a table");
      IF_RETURN_IF_ERROR(only_keys(*entry, prefix, {"prompt_micros_per_mtok", "completion_micros_per_mtok"}));
      for (const char* required : {"prompt_micros_per_mtok", "completion_micros_per_mtok"}) {
        if (entry->get(required) == nullptr) {
          return error(ErrorCode::kInvalidArgument,
                       "missing key '" + join(prefix, required) + "'" + at_line(entry->source()));
        }
      }
      CoordinatorConfig::ModelPrices p;
      IF_RETURN_IF_ERROR(
          integer(*entry, prefix, "prompt_micros_per_mtok", kPriceMicrosPerMtokRange, p.prompt_micros_per_mtok));
      IF_RETURN_IF_ERROR(integer(*entry, prefix, "completion_micros_per_mtok", kPriceMicrosPerMtokRange,
                                 p.completion_micros_per_mtok));
      out[id] = p;
    }
    return {};
  }

  Status models(const toml::table& root, std::vector<ModelEntry>& out) {
    const toml::node* n = root.get("models");
    if (n == nullptr) return {};
    const toml::array* arr = n->as_array();
    if (arr == nullptr) return wrong_type("models", *n, "an array of tables ([[models]])");
    if (arr->size() > kModelsMax) {
      return error(ErrorCode::kOutOfRange, "models" + at_line(n->source()) + " has " + std::to_string(arr->size()) +
                                               " entries, more than " + std::to_string(kModelsMax));
    }
    std::vector<const toml::node*> id_nodes;
    for (size_t i = 0; i < arr->size(); ++i) {
      const toml::node& el = *arr->get(i);
      const std::string prefix = "models[" + std::to_string(i) + "]";
      const toml::table* t = el.as_table();
      if (t == nullptr) return wrong_type(prefix, el, "a table");
      IF_RETURN_IF_ERROR(only_keys(*t, prefix, {"id", "path"}));
      for (const char* required : {"id", "path"}) {
        if (t->get(required) == nullptr) {
          return error(ErrorCode::kInvalidArgument, "missing key '" + join(prefix, required) + "' in the entry" +
                                                        at_line(t->source()));
        }
      }
      ModelEntry m;
      IF_RETURN_IF_ERROR(text(*t, prefix, "id", kModelIdBytesMax, m.id, /*id_like=*/true));
      IF_RETURN_IF_ERROR(text(*t, prefix, "path", kPathBytesMax, m.path));
      for (size_t j = 0; j < out.size(); ++j) {
        if (out[j].id == m.id) {
          return error(ErrorCode::kInvalidArgument, "duplicate model id '" + m.id + "': key '" + prefix + ".id'" +
                                                        at_line(t->get("id")->source()) + " repeats models[" +
                                                        std::to_string(j) + "].id" + at_line(id_nodes[j]->source()));
        }
      }
      id_nodes.push_back(t->get("id"));
      out.push_back(std::move(m));
    }
    return {};
  }

  std::string_view source_;
};

}  // namespace

Status CoordinatorConfig::validate() const {
  IF_RETURN_IF_ERROR(check_fields(*this, ""));
  if (!nats_authorization_file.empty()) {
    IF_RETURN_IF_ERROR(check_text("nats.authorization_file", "", nats_authorization_file, kPathBytesMax));
  }
  if (!nats_server_pid_file.empty()) {
    if (nats_authorization_file.empty()) {
      return Unexpected(ErrorCode::kInvalidArgument,
                        "nats.server_pid_file is set without nats.authorization_file: there is nothing to reload");
    }
    IF_RETURN_IF_ERROR(check_text("nats.server_pid_file", "", nats_server_pid_file, kPathBytesMax));
  }
  // A lease must span ticks, or leases would expire between two looks at them.
  if (tick_ms >= lease_ms) {
    return Unexpected(ErrorCode::kInvalidArgument, "jobs.tick_ms (" + std::to_string(tick_ms) +
                                                       ") must be less than jobs.lease_ms (" +
                                                       std::to_string(lease_ms) + ")");
  }
  if (max_tokens_default > max_tokens_limit) {
    return Unexpected(ErrorCode::kInvalidArgument, "jobs.max_tokens_default (" + std::to_string(max_tokens_default) +
                                                       ") must not exceed jobs.max_tokens_limit (" +
                                                       std::to_string(max_tokens_limit) + ")");
  }
  if (models.size() > kModelsMax) {
    return Unexpected(ErrorCode::kOutOfRange, "models has " + std::to_string(models.size()) +
                                                  " entries, more than " + std::to_string(kModelsMax));
  }
  for (size_t i = 0; i < models.size(); ++i) {
    const std::string prefix = "models[" + std::to_string(i) + "]";
    IF_RETURN_IF_ERROR(check_text(prefix + ".id", "", models[i].id, kModelIdBytesMax, /*id_like=*/true));
    IF_RETURN_IF_ERROR(check_text(prefix + ".path", "", models[i].path, kPathBytesMax));
    for (size_t j = 0; j < i; ++j) {
      if (models[j].id == models[i].id) {
        return Unexpected(ErrorCode::kInvalidArgument, "duplicate model id '" + models[i].id + "': " + prefix +
                                                           ".id repeats models[" + std::to_string(j) + "].id");
      }
    }
  }
  return {};
}

Result<CoordinatorConfig> parse_coordinator_config(std::string_view toml_text, std::string_view source_name) {
  Reader reader(source_name);
  if (toml_text.size() > kConfigBytesMax) {
    return reader.error(ErrorCode::kOutOfRange, "config is " + std::to_string(toml_text.size()) +
                                                    " bytes, more than " + std::to_string(kConfigBytesMax));
  }
  // toml++ reports through exceptions; none leaves this function.
  try {
    const toml::table root = toml::parse(toml_text, source_name);
    CoordinatorConfig config;
    IF_RETURN_IF_ERROR(reader.read(root, config));
    if (Status s = config.validate(); !s) return reader.error(s.error().code, s.error().message);
    return config;
  } catch (const toml::parse_error& e) {
    const auto& at = e.source().begin;
    return reader.error(ErrorCode::kCorrupt, "not valid TOML at line " + std::to_string(at.line) + ", column " +
                                                 std::to_string(at.column) + ": " + std::string(e.description()));
  } catch (const std::exception& e) {
    return reader.error(ErrorCode::kInternal, std::string("reading the config: ") + e.what());
  }
}

Result<CoordinatorConfig> load_coordinator_config(const std::string& path) {
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (f == nullptr) {
    const int err = errno;
    return Unexpected(err == ENOENT ? ErrorCode::kNotFound : ErrorCode::kIo,
                      "config file '" + path + "': " + std::strerror(err));
  }
  // Read one byte past the limit rather than trusting the size stat reports
  // (a pipe or a file that grows has none worth trusting).
  std::string text(kConfigBytesMax + 1, '\0');
  size_t n = 0;
  while (n < text.size()) {
    const size_t got = std::fread(text.data() + n, 1, text.size() - n, f.get());
    if (got == 0) break;
    n += got;
  }
  if (std::ferror(f.get())) {
    return Unexpected(ErrorCode::kIo, "config file '" + path + "': read failed: " + std::strerror(errno));
  }
  if (n > kConfigBytesMax) {
    return Unexpected(ErrorCode::kOutOfRange,
                      "config file '" + path + "' is more than " + std::to_string(kConfigBytesMax) + " bytes");
  }
  text.resize(n);
  return parse_coordinator_config(text, path);
}

std::string store_location(const CoordinatorConfig& config, std::string_view sqlite_file) {
  if (!config.database.empty()) return config.database;
  return (std::filesystem::path(config.data_dir) / std::string(sqlite_file)).string();
}

}  // namespace idlefleet::coordinator
