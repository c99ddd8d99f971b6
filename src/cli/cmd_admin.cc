// `idlefleet admin keys create|list|revoke`: client API keys in
// <data_dir>/keys.db (store/key_store.h), the file a running coordinator
// rereads within a second (coordinator/api_keys.h), so a key made or revoked
// here takes effect without a restart. `idlefleet admin owners` makes owner
// accounts; `idlefleet admin nats-config` writes nats-server's per-vehicle
// authorisation (coordinator/nats_auth.h).
//
// The data directory is --data-dir, or the data_dir of --config FILE, or the
// coordinator's default (idlefleet-data). A secret is printed once, by
// create; list shows everything else about a key and never its secret or hash.
//
// Exit codes as every command: 2 for a usage error (a bad flag, a malformed
// key id or spend limit), 1 for a runtime one (no such key, no key store, a
// damaged file).
#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/data_location.h"
#include "common/identity.h"
#include "common/money.h"
#include "common/wall_clock.h"
#include "coordinator/config.h"
#include "coordinator/nats_auth.h"
#include "store/key_store.h"
#include "store/location.h"
#include "store/vehicle_store.h"

namespace idlefleet::cli {

namespace {

namespace fs = std::filesystem;

std::string keys_path(const DataLocation& where) { return store_location(where, "keys.db"); }

// Opens the store; `create` false refuses to make a new SQLite file (list,
// revoke). A PostgreSQL store is opened (and its tables made) either way.
std::unique_ptr<store::KeyStore> open_store(const std::string& path, bool create) {
  const bool postgres = store::is_postgres_url(path);
  if (!postgres && !create && !fs::exists(path)) {
    throw CommandError{"no key store at " + path + " (no key was ever created there)"};
  }
  if (!postgres && create) {
    std::error_code ec;
    fs::create_directories(fs::path(path).parent_path(), ec);
  }
  auto store = store::KeyStore::open(path);
  if (!store) throw CommandError{store.error().message};
  return std::move(*store);
}

std::string iso_time(core::TimeMs ms) {
  if (ms == 0) return "-";
  const std::time_t t = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string limit_text(uint64_t v) { return v == 0 ? "-" : std::to_string(v); }

struct CreateFlags {
  DataLocation where;
  std::string name;
  uint64_t rpm = 0;
  uint64_t tpm = 0;
  std::string spend_limit;
  std::string scopes = "*";
};

void create_key(const CreateFlags& f) {
  auto store = open_store(keys_path(f.where), true);
  store::NewKey k;
  k.name = f.name;
  k.limits = {f.rpm, f.tpm};
  k.scopes = *store::normalize_scopes(f.scopes);  // checked by the validator
  if (!f.spend_limit.empty()) {
    k.spend_limit_micros = *parse_money_micros(f.spend_limit, store::kSpendLimitMicrosMax);  // checked by the validator
  }
  auto created = store->create(k, wall_clock_ms());
  if (!created) throw CommandError{created.error().message};
  std::printf("id: %s\nsecret: %s\nscopes: %s\n", created->key.id.c_str(), created->secret.c_str(),
              created->key.scopes.c_str());
  std::fflush(stdout);
  std::fprintf(stderr, "Store the secret now: only its hash is kept, so it cannot be shown again.\n");
}

void list_keys(const DataLocation& where, bool as_json) {
  const std::string path = keys_path(where);
  std::vector<store::ApiKey> keys;
  if (store::is_postgres_url(path) || fs::exists(path)) {
    auto store = open_store(path, false);
    auto listed = store->list();
    if (!listed) throw CommandError{listed.error().message};
    keys = std::move(*listed);
  }
  if (as_json) {
    nlohmann::json out = nlohmann::json::array();
    for (const store::ApiKey& k : keys) {
      out.push_back({{"id", k.id},
                     {"name", k.name},
                     {"created_at", k.created_at},
                     {"revoked_at", k.revoked_at == 0 ? nlohmann::json(nullptr) : nlohmann::json(k.revoked_at)},
                     {"requests_per_minute", k.limits.requests_per_minute},
                     {"tokens_per_minute", k.limits.tokens_per_minute},
                     {"spend_limit_micros", k.spend_limit_micros},
                     {"scopes", k.scopes},
                     {"usage",
                      {{"requests", k.usage.requests},
                       {"prompt_tokens", k.usage.prompt_tokens},
                       {"completion_tokens", k.usage.completion_tokens},
                       {"spend_micros", k.usage.spend_micros}}}});
    }
    std::printf("%s\n", out.dump(2, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    return;
  }
  std::printf("%-28s %-20s %-20s %-20s %8s %10s %10s %10s %12s %12s %12s  %s\n", "ID", "NAME", "CREATED", "REVOKED",
              "RPM", "TPM", "SPEND_MAX", "REQUESTS", "PROMPT_TOK", "COMPL_TOK", "SPENT", "SCOPES");
  for (const store::ApiKey& k : keys) {
    std::printf("%-28s %-20s %-20s %-20s %8s %10s %10s %10llu %12llu %12llu %12s  %s\n", k.id.c_str(), k.name.c_str(),
                iso_time(k.created_at).c_str(), iso_time(k.revoked_at).c_str(),
                limit_text(k.limits.requests_per_minute).c_str(), limit_text(k.limits.tokens_per_minute).c_str(),
                k.spend_limit_micros == 0 ? "-" : format_money(k.spend_limit_micros).c_str(),
                static_cast<unsigned long long>(k.usage.requests),
                static_cast<unsigned long long>(k.usage.prompt_tokens),
                static_cast<unsigned long long>(k.usage.completion_tokens), format_money(k.usage.spend_micros).c_str(),
                k.scopes.c_str());
  }
}

void revoke_key(const DataLocation& where, const std::string& id) {
  auto store = open_store(keys_path(where), false);
  auto before = store->get(id);
  if (!before) throw CommandError{before.error().message};
  if (!before->has_value()) throw CommandError{"no key '" + id + "' in " + store->location()};
  auto revoked = store->revoke(id, wall_clock_ms());
  if (!revoked) throw CommandError{revoked.error().message};
  if ((*before)->revoked()) {
    std::printf("%s was already revoked at %s\n", id.c_str(), iso_time(revoked->revoked_at).c_str());
  } else {
    std::printf("revoked %s at %s\n", id.c_str(), iso_time(revoked->revoked_at).c_str());
  }
}

std::unique_ptr<store::VehicleStore> open_vehicle_store(const DataLocation& where) {
  const std::string path = store_location(where, "vehicles.sqlite3");
  if (!store::is_postgres_url(path)) {
    std::error_code ec;
    fs::create_directories(fs::path(path).parent_path(), ec);
  }
  auto store = store::VehicleStore::open(path);
  if (!store) throw CommandError{store.error().message};
  return std::move(*store);
}

void create_owner(const DataLocation& where, const std::string& name) {
  auto store = open_vehicle_store(where);
  auto made = store->create_owner(name, wall_clock_ms());
  if (!made) throw CommandError{made.error().message};
  std::printf("id: %s\ntoken: %s\n", made->first.id.c_str(), made->second.c_str());
  std::fflush(stdout);
  std::fprintf(stderr,
               "Store the token now: only its hash is kept. The owner asks for enrolment codes with it:\n"
               "  curl -X POST URL/v1/owner/enrolment_codes -H 'Authorization: Bearer %s'\n",
               made->second.c_str());
}

void list_owners(const DataLocation& where) {
  auto store = open_vehicle_store(where);
  auto owners = store->owners();
  if (!owners) throw CommandError{owners.error().message};
  std::printf("%-22s %-24s %-20s %s\n", "ID", "NAME", "CREATED", "VEHICLES");
  for (const store::Owner& o : *owners) {
    auto vehicles = store->vehicles_of(o.id);
    if (!vehicles) throw CommandError{vehicles.error().message};
    std::printf("%-22s %-24s %-20s %zu\n", o.id.c_str(), o.name.c_str(), iso_time(o.created_at).c_str(),
                vehicles->size());
  }
}

struct NatsConfigFlags {
  DataLocation where;
  std::string output;
};

// `idlefleet admin nats-config -o FILE`: the nats-server authorisation for
// the coordinator and every enrolled vehicle (coordinator/nats_auth.h). Makes
// the coordinator's key in its data directory if the coordinator has not run
// yet, so that nats-server can know it before the coordinator first connects.
void write_nats_config(const NatsConfigFlags& f) {
  auto store = open_vehicle_store(f.where);
  const std::string data_dir = fs::path(data_file(f.where, "vehicles.sqlite3")).parent_path().string();
  auto key = load_or_create_key(coordinator::coordinator_key_path(data_dir));
  if (!key) throw CommandError{key.error().message};
  auto written = coordinator::write_nats_authorization(f.output, key->public_key, *store);
  if (!written) throw CommandError{written.error().message};
  std::printf("wrote %s: the coordinator and %zu enrolled vehicle%s\n", f.output.c_str(), *written,
              *written == 1 ? "" : "s");
}

}  // namespace

void add_admin(CLI::App& app) {
  CLI::App* admin = app.add_subcommand("admin", "Administration: client API keys, owners, NATS authorisation");
  admin->require_subcommand(1);
  CLI::App* owners = admin->add_subcommand("owners", "Owner accounts: create, list");
  owners->require_subcommand(1);
  auto ow = std::make_shared<DataLocation>();
  auto owner_name = std::make_shared<std::string>();
  CLI::App* owner_create = owners->add_subcommand("create", "Make an owner account and print its token (once)");
  add_data_location(*owner_create, *ow);
  owner_create->add_option("--name", *owner_name, "The owner's name (1-128 bytes)")->required();
  owner_create->callback([ow, owner_name] { create_owner(*ow, *owner_name); });
  auto ol = std::make_shared<DataLocation>();
  CLI::App* owner_list = owners->add_subcommand("list", "Every owner with the number of vehicles enrolled");
  add_data_location(*owner_list, *ol);
  owner_list->callback([ol] { list_owners(*ol); });

  auto nc = std::make_shared<NatsConfigFlags>();
  CLI::App* nats_config = admin->add_subcommand(
      "nats-config", "Write nats-server's authorisation: the coordinator and each enrolled vehicle as NKey users");
  add_data_location(*nats_config, nc->where);
  nats_config->add_option("-o,--output", nc->output, "The file to write (mode 0600, replaced atomically)")
      ->required()
      ->check(CLI::Validator(
          [](std::string& v) -> std::string {
            if (v.empty() || v.size() > coordinator::kPathBytesMax) return "the file name must be 1 to 4096 bytes";
            for (char ch : v) {
              const auto u = static_cast<unsigned char>(ch);
              if (u < 0x20 || u == 0x7f) return "the file name must not contain control characters";
            }
            if (fs::is_directory(v)) return "'" + v + "' is a directory";
            return "";
          },
          "FILE"));
  nats_config->callback([nc] { write_nats_config(*nc); });

  CLI::App* keys = admin->add_subcommand("keys", "Client API keys: create, list, revoke");
  keys->require_subcommand(1);

  auto c = std::make_shared<CreateFlags>();
  CLI::App* create = keys->add_subcommand("create", "Make a key and print its secret (once)");
  add_data_location(*create, c->where);
  create->add_option("--name", c->name, "What the key is for (1-128 bytes)")
      ->required()
      ->check(CLI::Validator(
          [](std::string& v) -> std::string {
            if (v.empty() || v.size() > store::kKeyNameBytesMax) return "the name must be 1 to 128 bytes";
            for (char ch : v) {
              const auto u = static_cast<unsigned char>(ch);
              if (u < 0x20 || u == 0x7f) return "the name must not contain control characters";
            }
            return "";
          },
          "NAME"));
  create->add_option("--rpm", c->rpm, "Requests per minute (default: no limit)")
      ->check(CLI::Range(uint64_t{1}, core::kRateLimitPerMinuteMax));
  create->add_option("--tpm", c->tpm, "Tokens per minute (default: no limit)")
      ->check(CLI::Range(uint64_t{1}, core::kRateLimitPerMinuteMax));
  create->add_option("--spend-limit", c->spend_limit, "Most the key may spend, in units of money (e.g. 12.50)")
      ->check(CLI::Validator(
          [](std::string& v) -> std::string {
            return parse_money_micros(v, store::kSpendLimitMicrosMax)
                       ? ""
                       : "the spend limit must be an amount like 12 or 12.50 (at most 6 decimals, at most 9007199254)";
          },
          "AMOUNT"));
  create->add_option("--scopes", c->scopes,
                     "What the key may call: * (the whole client API, the default) or a comma-separated list of "
                     "models, completions, embeddings, files, batches, admin (the operator's dashboard, never "
                     "part of *); anything else gets 403")
      ->check(CLI::Validator(
          [](std::string& v) -> std::string {
            auto n = store::normalize_scopes(v);
            return n ? "" : n.error().message;
          },
          "SCOPES"));
  create->callback([c] { create_key(*c); });

  auto l = std::make_shared<DataLocation>();
  auto as_json = std::make_shared<bool>(false);
  CLI::App* list = keys->add_subcommand("list", "Every key with its limits and usage (never its secret)");
  add_data_location(*list, *l);
  list->add_flag("--json", *as_json, "Print JSON instead of a table");
  list->callback([l, as_json] { list_keys(*l, *as_json); });

  auto r = std::make_shared<DataLocation>();
  auto id = std::make_shared<std::string>();
  CLI::App* revoke = keys->add_subcommand("revoke", "Revoke a key: requests with it get 401 within a second");
  add_data_location(*revoke, *r);
  revoke->add_option("ID", *id, "The key's id (key_...)")
      ->required()
      ->check(CLI::Validator(
          [](std::string& v) -> std::string {
            return store::key_id_well_formed(v) ? "" : "'" + v.substr(0, 64) + "' is not a key id (key_ and 24 hex digits)";
          },
          "ID"));
  revoke->callback([r, id] { revoke_key(*r, *id); });
}

}  // namespace idlefleet::cli
