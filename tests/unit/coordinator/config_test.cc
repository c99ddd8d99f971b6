// Coordinator config: the defaults, a full file, and every kind of garbage,
// each refused with a message that names the key (and its line).
#include "coordinator/config.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

namespace idlefleet::coordinator::config_test {
namespace {

namespace fs = std::filesystem;

constexpr const char* kFull = R"toml(# a complete coordinator config
nats_url = "nats://10.0.0.2:4222"
data_dir = "/var/lib/idlefleet"

[http]
host = "0.0.0.0"
port = 9090
threads = 4

[jobs]
lease_ms = 20000
tick_ms = 100
vehicle_timeout_ms = 30000
attempts_max = 5
max_tokens_default = 128
max_tokens_limit = 2048
queue_jobs_max = 500
request_bytes_max = 65536

[[models]]
id = "stories15M"
path = "models/stories15M.gguf"

[[models]]
id = "stories110M-q8"
path = "/models/stories110M-q8_0.gguf"
)toml";

// Parses `text`, expects an error with `code`, and that its message contains every one of `needles`.
void expect_error(std::string_view text, ErrorCode code, std::initializer_list<std::string_view> needles) {
  auto r = parse_coordinator_config(text, "test.toml");
  ASSERT_FALSE(r) << "accepted:\n" << text;
  EXPECT_EQ(r.error().code, code) << r.error().to_string();
  EXPECT_EQ(r.error().message.rfind("test.toml: ", 0), 0u) << r.error().to_string();
  for (std::string_view n : needles) {
    EXPECT_NE(r.error().message.find(n), std::string::npos) << "'" << n << "' not in: " << r.error().to_string();
  }
}

TEST(CoordinatorConfig, DefaultsAreValidAndAnEmptyFileGivesThem) {
  const CoordinatorConfig defaults;
  EXPECT_TRUE(defaults.validate()) << defaults.validate().error().to_string();
  auto r = parse_coordinator_config("", "empty.toml");
  ASSERT_TRUE(r) << r.error().to_string();
  EXPECT_EQ(*r, defaults);
  EXPECT_EQ(r->nats_url, "nats://127.0.0.1:4222");
  EXPECT_EQ(r->http_port, 8080);
  EXPECT_EQ(r->lease_ms, 10000);
  EXPECT_TRUE(r->models.empty());
}

TEST(CoordinatorConfig, FullFile) {
  auto r = parse_coordinator_config(kFull, "full.toml");
  ASSERT_TRUE(r) << r.error().to_string();
  const CoordinatorConfig& c = *r;
  EXPECT_EQ(c.nats_url, "nats://10.0.0.2:4222");
  EXPECT_EQ(c.data_dir, "/var/lib/idlefleet");
  EXPECT_EQ(c.http_host, "0.0.0.0");
  EXPECT_EQ(c.http_port, 9090);
  EXPECT_EQ(c.http_threads, 4);
  EXPECT_EQ(c.lease_ms, 20000);
  EXPECT_EQ(c.tick_ms, 100);
  EXPECT_EQ(c.vehicle_timeout_ms, 30000);
  EXPECT_EQ(c.attempts_max, 5u);
  EXPECT_EQ(c.max_tokens_default, 128u);
  EXPECT_EQ(c.max_tokens_limit, 2048u);
  EXPECT_EQ(c.queue_jobs_max, 500u);
  EXPECT_EQ(c.request_bytes_max, 65536u);
  ASSERT_EQ(c.models.size(), 2u);
  EXPECT_EQ(c.models[0], (ModelEntry{"stories15M", "models/stories15M.gguf"}));
  EXPECT_EQ(c.models[1], (ModelEntry{"stories110M-q8", "/models/stories110M-q8_0.gguf"}));
}

TEST(CoordinatorConfig, PartialTablesKeepTheOtherDefaults) {
  auto r = parse_coordinator_config("[http]\nport = 0\n", "p.toml");  // 0: any free port
  ASSERT_TRUE(r) << r.error().to_string();
  EXPECT_EQ(r->http_port, 0);
  EXPECT_EQ(r->http_host, "127.0.0.1");
  EXPECT_EQ(r->http_threads, 2);
  // Inline tables are the same TOML.
  r = parse_coordinator_config(R"(models = [{ id = "m", path = "m.gguf" }])", "i.toml");
  ASSERT_TRUE(r) << r.error().to_string();
  EXPECT_EQ(r->models, (std::vector<ModelEntry>{{"m", "m.gguf"}}));
}

TEST(CoordinatorConfig, NotToml) {
  expect_error("this is not toml", ErrorCode::kCorrupt, {"not valid TOML", "line 1"});
  expect_error("[http\nport = 1\n", ErrorCode::kCorrupt, {"line 1"});
  expect_error("[http]\nport = 1\nport = 2\n", ErrorCode::kCorrupt, {"line 3", "port"});
  expect_error("[jobs]\nlease_ms = 99999999999999999999\n", ErrorCode::kCorrupt, {"line 2"});
  expect_error("nats_url = \"\xff\xfe\"\n", ErrorCode::kCorrupt, {"line 1"});
}

TEST(CoordinatorConfig, UnknownKeys) {
  expect_error("nats_url = \"nats://x:1\"\n\nfoo = 1\n", ErrorCode::kInvalidArgument, {"unknown key 'foo' at line 3"});
  expect_error("[http]\nhost = \"h\"\nprot = 80\n", ErrorCode::kInvalidArgument, {"unknown key 'http.prot' at line 3"});
  expect_error("[jobs]\nlease = 5\n", ErrorCode::kInvalidArgument, {"'jobs.lease' at line 2"});
  expect_error("[[models]]\nid = \"a\"\npath = \"p\"\nsha = \"x\"\n", ErrorCode::kInvalidArgument,
               {"'models[0].sha' at line 4"});
  expect_error("[server]\nport = 1\n", ErrorCode::kInvalidArgument, {"unknown key 'server' at line 1"});
  // The first in the file is named, not the first alphabetically.
  expect_error("zzz = 1\naaa = 2\n", ErrorCode::kInvalidArgument, {"'zzz' at line 1"});
}

TEST(CoordinatorConfig, WrongTypes) {
  expect_error("[http]\nport = \"8080\"\n", ErrorCode::kInvalidArgument,
               {"'http.port' at line 2", "an integer", "a string"});
  expect_error("[http]\nport = 8080.0\n", ErrorCode::kInvalidArgument, {"'http.port' at line 2", "a float"});
  expect_error("nats_url = 4222\n", ErrorCode::kInvalidArgument, {"'nats_url' at line 1", "a string"});
  expect_error("http = 1\n", ErrorCode::kInvalidArgument, {"'http' at line 1", "a table"});
  expect_error("[jobs]\nattempts_max = true\n", ErrorCode::kInvalidArgument, {"'jobs.attempts_max' at line 2"});
  expect_error("models = \"all\"\n", ErrorCode::kInvalidArgument, {"'models' at line 1"});
  expect_error("models = [1]\n", ErrorCode::kInvalidArgument, {"'models[0]' at line 1", "a table"});
}

TEST(CoordinatorConfig, OutOfRange) {
  expect_error("[http]\nport = 70000\n", ErrorCode::kOutOfRange, {"http.port at line 2", "70000", "[0, 65535]"});
  expect_error("[http]\nport = -1\n", ErrorCode::kOutOfRange, {"http.port at line 2"});
  expect_error("[http]\nthreads = 0\n", ErrorCode::kOutOfRange, {"http.threads at line 2"});
  expect_error("[jobs]\n\nlease_ms = -5\n", ErrorCode::kOutOfRange, {"jobs.lease_ms at line 3", "-5"});
  expect_error("[jobs]\ntick_ms = 0\n", ErrorCode::kOutOfRange, {"jobs.tick_ms at line 2"});
  expect_error("[jobs]\nattempts_max = 4294967297\n", ErrorCode::kOutOfRange, {"jobs.attempts_max at line 2"});
  expect_error("[jobs]\nqueue_jobs_max = 0\n", ErrorCode::kOutOfRange, {"jobs.queue_jobs_max"});
  expect_error("[jobs]\nrequest_bytes_max = 1073741824\n", ErrorCode::kOutOfRange, {"jobs.request_bytes_max"});
  expect_error("[jobs]\nmax_tokens_limit = 0\n", ErrorCode::kOutOfRange, {"jobs.max_tokens_limit"});
  expect_error("nats_url = \"\"\n", ErrorCode::kInvalidArgument, {"nats_url at line 1", "empty"});
  expect_error("data_dir = \"a\\u0000b\"\n", ErrorCode::kInvalidArgument, {"data_dir at line 1", "control"});
  expect_error("data_dir = \"" + std::string(kPathBytesMax + 1, 'd') + "\"\n", ErrorCode::kOutOfRange,
               {"data_dir at line 1"});
}

TEST(CoordinatorConfig, AuthAndPricing) {
  const CoordinatorConfig defaults;
  EXPECT_FALSE(defaults.auth_required);  // the demo runs without keys
  EXPECT_EQ(defaults.prompt_micros_per_mtok, 0u);
  auto r = parse_coordinator_config(
      "[auth]\nrequired = true\n[pricing]\nprompt_micros_per_mtok = 150000\ncompletion_micros_per_mtok = 600000\n",
      "a.toml");
  ASSERT_TRUE(r) << r.error().to_string();
  EXPECT_TRUE(r->auth_required);
  EXPECT_EQ(r->prompt_micros_per_mtok, 150000u);
  EXPECT_EQ(r->completion_micros_per_mtok, 600000u);
  expect_error("[auth]\nrequired = \"yes\"\n", ErrorCode::kInvalidArgument, {"'auth.required' at line 2", "a boolean"});
  expect_error("[auth]\nrequire = true\n", ErrorCode::kInvalidArgument, {"unknown key 'auth.require' at line 2"});
  expect_error("[pricing]\nprompt_micros_per_mtok = -1\n", ErrorCode::kOutOfRange,
               {"pricing.prompt_micros_per_mtok at line 2"});
  expect_error("[pricing]\ncompletion_micros_per_mtok = 10000000001\n", ErrorCode::kOutOfRange,
               {"pricing.completion_micros_per_mtok at line 2"});
}

TEST(CoordinatorConfig, LedgerPrepaid) {
  EXPECT_FALSE(CoordinatorConfig{}.prepaid);  // setups without deposits keep serving
  auto on = parse_coordinator_config("[ledger]\nprepaid = true\n", "a.toml");
  ASSERT_TRUE(on) << on.error().to_string();
  EXPECT_TRUE(on->prepaid);
  auto off = parse_coordinator_config("[ledger]\nprepaid = false\n", "a.toml");
  ASSERT_TRUE(off) << off.error().to_string();
  EXPECT_FALSE(off->prepaid);
  expect_error("[ledger]\nprepaid = \"true\"\n", ErrorCode::kInvalidArgument,
               {"'ledger.prepaid' at line 2", "a boolean"});
  expect_error("[ledger]\nprepaid = 1\n", ErrorCode::kInvalidArgument, {"'ledger.prepaid' at line 2", "a boolean"});
  expect_error("[ledger]\nprepaid = [true]\n", ErrorCode::kInvalidArgument, {"'ledger.prepaid' at line 2"});
  expect_error("[ledger]\npre_paid = true\n", ErrorCode::kInvalidArgument, {"unknown key 'ledger.pre_paid' at line 2"});
  expect_error("[ledger.prepaid]\nenabled = true\n", ErrorCode::kInvalidArgument, {"ledger.prepaid"});
}

TEST(CoordinatorConfig, Batches) {
  auto r = parse_coordinator_config("[batches]\nfile_bytes_max = 2048\njobs_in_flight = 4\n", "a.toml");
  ASSERT_TRUE(r) << r.error().to_string();
  EXPECT_EQ(r->file_bytes_max, 2048u);
  EXPECT_EQ(r->batch_jobs_in_flight, 4u);
  expect_error("[batches]\njobs_in_flight = 0\n", ErrorCode::kOutOfRange, {"batches.jobs_in_flight at line 2"});
  expect_error("[batches]\nfile_bytes_max = 10\n", ErrorCode::kOutOfRange, {"batches.file_bytes_max at line 2"});
  expect_error("[batches]\nwindow = \"24h\"\n", ErrorCode::kInvalidArgument, {"unknown key 'batches.window'"});
}

TEST(CoordinatorConfig, DatabaseIsSqliteByDefaultOrAPostgresUrl) {
  const CoordinatorConfig defaults;
  EXPECT_EQ(defaults.database, "");
  EXPECT_EQ(store_location(defaults, "jobs.sqlite3"), "idlefleet-data/jobs.sqlite3");
  auto r = parse_coordinator_config("database = \"postgresql://fleet@db.internal:5432/idlefleet\"\n", "a.toml");
  ASSERT_TRUE(r) << r.error().to_string();
  EXPECT_EQ(r->database, "postgresql://fleet@db.internal:5432/idlefleet");
  EXPECT_EQ(store_location(*r, "jobs.sqlite3"), r->database);
  EXPECT_EQ(store_location(*r, "ledger.sqlite3"), r->database);
  EXPECT_TRUE(parse_coordinator_config("database = \"postgres://h/db\"\n", "a.toml"));
  auto empty = parse_coordinator_config("database = \"\"\n", "a.toml");
  ASSERT_TRUE(empty) << empty.error().to_string();
  EXPECT_EQ(empty->database, "");
  expect_error("database = \"mysql://h/db\"\n", ErrorCode::kInvalidArgument, {"database", "postgresql://"});
  expect_error("database = \"/var/lib/idlefleet/jobs.db\"\n", ErrorCode::kInvalidArgument, {"database"});
  expect_error("database = 5\n", ErrorCode::kInvalidArgument, {"'database' at line 1", "string"});
  expect_error("database = \"postgresql://" + std::string(kUrlBytesMax, 'h') + "\"\n", ErrorCode::kOutOfRange,
               {"database at line 1"});
}

TEST(CoordinatorConfig, VehiclesAndLedger) {
  const CoordinatorConfig defaults;
  EXPECT_FALSE(defaults.enrolment_required);  // the demo runs without enrolment
  auto r = parse_coordinator_config(
      "[vehicles]\nenrolment = \"required\"\n[ledger]\nowner_share_ppm = 700000\n"
      "energy_tariff_micros_per_kwh = 310000\nwear_micros_per_accelerator_hour = 20000\n",
      "a.toml");
  ASSERT_TRUE(r) << r.error().to_string();
  EXPECT_TRUE(r->enrolment_required);
  EXPECT_EQ(r->owner_share_ppm, 700000u);
  EXPECT_EQ(r->energy_tariff_micros_per_kwh, 310000u);
  EXPECT_EQ(r->wear_micros_per_accelerator_hour, 20000u);
  expect_error("[vehicles]\nenrolment = \"maybe\"\n", ErrorCode::kInvalidArgument, {"vehicles.enrolment"});
  expect_error("[vehicles]\nenrolment = 1\n", ErrorCode::kInvalidArgument, {"vehicles.enrolment"});
  expect_error("[vehicles]\nenrol = \"open\"\n", ErrorCode::kInvalidArgument, {"unknown key 'vehicles.enrol'"});
  expect_error("[ledger]\nowner_share_ppm = 1000001\n", ErrorCode::kOutOfRange, {"ledger.owner_share_ppm at line 2"});
  expect_error("[ledger]\nenergy_tariff_micros_per_kwh = -5\n", ErrorCode::kOutOfRange,
               {"ledger.energy_tariff_micros_per_kwh at line 2"});
}

TEST(CoordinatorConfig, NatsAuthorization) {
  const CoordinatorConfig defaults;
  EXPECT_TRUE(defaults.nats_authorization_file.empty());  // nothing written unless asked
  auto r = parse_coordinator_config(
      "[nats]\nauthorization_file = \"/etc/nats/idlefleet-auth.conf\"\nserver_pid_file = \"/run/nats.pid\"\n", "a.toml");
  ASSERT_TRUE(r) << r.error().to_string();
  EXPECT_EQ(r->nats_authorization_file, "/etc/nats/idlefleet-auth.conf");
  EXPECT_EQ(r->nats_server_pid_file, "/run/nats.pid");
  EXPECT_TRUE(r->validate());
  r = parse_coordinator_config("[nats]\nauthorization_file = \"auth.conf\"\n", "a.toml");
  ASSERT_TRUE(r) << r.error().to_string();
  EXPECT_TRUE(r->nats_server_pid_file.empty());
  expect_error("[nats]\nauthorization_file = 5\n", ErrorCode::kInvalidArgument, {"nats.authorization_file", "line 2"});
  expect_error("[nats]\nauthorization_file = \"\"\n", ErrorCode::kInvalidArgument, {"nats.authorization_file", "empty"});
  expect_error("[nats]\nauthorization_file = \"a\\nb\"\n", ErrorCode::kInvalidArgument,
               {"nats.authorization_file", "control character"});
  expect_error("[nats]\nauthorization_file = \"" + std::string(5000, 'x') + "\"\n", ErrorCode::kOutOfRange,
               {"nats.authorization_file"});
  expect_error("[nats]\nserver_pid_file = \"/run/nats.pid\"\n", ErrorCode::kInvalidArgument,
               {"nats.server_pid_file", "nats.authorization_file"});
  expect_error("[nats]\nserver_pid_file = []\nauthorization_file = \"a\"\n", ErrorCode::kInvalidArgument,
               {"nats.server_pid_file"});
  expect_error("[nats]\nurl = \"nats://x\"\n", ErrorCode::kInvalidArgument, {"unknown key 'nats.url'"});
  expect_error("nats = 5\n", ErrorCode::kInvalidArgument, {"nats"});
  CoordinatorConfig c;
  c.nats_server_pid_file = "/run/nats.pid";
  auto st = c.validate();
  ASSERT_FALSE(st);
  EXPECT_NE(st.error().message.find("nats.server_pid_file"), std::string::npos) << st.error().message;
  c.nats_authorization_file = std::string("a\x01b");
  EXPECT_FALSE(c.validate());
}

TEST(CoordinatorConfig, Verification) {
  const CoordinatorConfig defaults;
  EXPECT_FALSE(defaults.verification.enabled);  // a fleet of one cannot check itself
  auto r = parse_coordinator_config(
      "[verification]\nenabled = true\nseed = 9\nsample_floor_ppm = 100000\nwarmup_checks = 3\n"
      "standing_initial = 600\nstanding_agree = 5\nstanding_fault = 300\nquarantine_below = 400\n"
      "check_wait_ms = 60000\n",
      "a.toml");
  ASSERT_TRUE(r) << r.error().to_string();
  EXPECT_TRUE(r->verification.enabled);
  EXPECT_EQ(r->verification.seed, 9u);
  EXPECT_DOUBLE_EQ(r->verification.sample_floor, 0.1);
  EXPECT_EQ(r->verification.warmup_checks, 3u);
  EXPECT_EQ(r->verification.standing_initial, 600);
  EXPECT_EQ(r->verification.standing_agree, 5);
  EXPECT_EQ(r->verification.standing_fault, 300);
  EXPECT_EQ(r->verification.quarantine_below, 400);
  EXPECT_EQ(r->verification.check_wait_ms_max, 60000);
  expect_error("[verification]\nenabled = \"yes\"\n", ErrorCode::kInvalidArgument, {"verification.enabled"});
  expect_error("[verification]\nsample_floor_ppm = 1000001\n", ErrorCode::kOutOfRange,
               {"verification.sample_floor_ppm at line 2"});
  expect_error("[verification]\nseed = -1\n", ErrorCode::kOutOfRange, {"verification.seed"});
  expect_error("[verification]\nstanding_fault = 0\n", ErrorCode::kOutOfRange, {"verification.standing_fault"});
  expect_error("[verification]\ncheck_wait_ms = 10\n", ErrorCode::kOutOfRange, {"verification.check_wait_ms"});
  expect_error("[verification]\nwarmup_checks = 1001\n", ErrorCode::kOutOfRange, {"verification.warmup_checks"});
  expect_error("[verification]\nquarantine_below = 700\n", ErrorCode::kInvalidArgument,
               {"verification.quarantine_below must not exceed standing_initial"});
  expect_error("[verification]\nsample = 1\n", ErrorCode::kInvalidArgument, {"unknown key 'verification.sample'"});
  expect_error("verification = 3\n", ErrorCode::kInvalidArgument, {"verification"});
}

TEST(CoordinatorConfig, FieldsAgainstEachOther) {
  expect_error("[jobs]\nlease_ms = 1000\ntick_ms = 1000\n", ErrorCode::kInvalidArgument,
               {"jobs.tick_ms", "jobs.lease_ms"});
  expect_error("[jobs]\nmax_tokens_default = 5000\n", ErrorCode::kInvalidArgument,
               {"jobs.max_tokens_default", "jobs.max_tokens_limit"});
}

TEST(CoordinatorConfig, Models) {
  expect_error("[[models]]\nid = \"a\"\npath = \"a.gguf\"\n\n[[models]]\nid = \"a\"\npath = \"b.gguf\"\n",
               ErrorCode::kInvalidArgument, {"duplicate model id 'a'", "models[1].id' at line 6", "line 2"});
  expect_error("[[models]]\nid = \"a\"\n", ErrorCode::kInvalidArgument, {"missing key 'models[0].path'", "line 1"});
  expect_error("[[models]]\npath = \"a.gguf\"\n", ErrorCode::kInvalidArgument, {"missing key 'models[0].id'"});
  expect_error("[[models]]\nid = \"my model\"\npath = \"a.gguf\"\n", ErrorCode::kInvalidArgument,
               {"models[0].id at line 2", "printable ASCII"});
  expect_error("[[models]]\nid = \"a\"\npath = \"\"\n", ErrorCode::kInvalidArgument, {"models[0].path at line 3"});
  std::string many;
  for (size_t i = 0; i <= kModelsMax; ++i) many += "[[models]]\nid = \"m" + std::to_string(i) + "\"\npath = \"p\"\n";
  expect_error(many, ErrorCode::kOutOfRange, {"models", std::to_string(kModelsMax)});
}

TEST(CoordinatorConfig, ValidateNamesTheField) {
  CoordinatorConfig c;
  c.http_threads = 0;
  auto s = c.validate();
  ASSERT_FALSE(s);
  EXPECT_NE(s.error().message.find("http.threads"), std::string::npos) << s.error().to_string();
  c = CoordinatorConfig{};
  c.lease_ms = -1;
  s = c.validate();
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code, ErrorCode::kOutOfRange);
  EXPECT_NE(s.error().message.find("jobs.lease_ms"), std::string::npos);
  c = CoordinatorConfig{};
  c.models = {{"x", "a"}, {"x", "b"}};
  s = c.validate();
  ASSERT_FALSE(s);
  EXPECT_NE(s.error().message.find("models[1].id"), std::string::npos) << s.error().to_string();
  c = CoordinatorConfig{};
  c.queue_jobs_max = static_cast<size_t>(kQueueJobsMaxRange.max) + 1;
  EXPECT_FALSE(c.validate());
}

TEST(CoordinatorConfig, TooLarge) {
  expect_error(std::string(kConfigBytesMax + 1, '#'), ErrorCode::kOutOfRange, {"bytes"});
}

class ConfigFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() / ("idlefleet-config-" + std::to_string(::getpid()) + "-" + info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string write(const std::string& name, const std::string& text) {
    const fs::path p = dir_ / name;
    std::ofstream(p, std::ios::binary) << text;
    return p.string();
  }
  fs::path dir_;
};

TEST_F(ConfigFileTest, LoadsAFile) {
  const std::string path = write("coordinator.toml", kFull);
  auto r = load_coordinator_config(path);
  ASSERT_TRUE(r) << r.error().to_string();
  EXPECT_EQ(*r, *parse_coordinator_config(kFull, "x"));
}

TEST_F(ConfigFileTest, MissingFileIsNotFound) {
  auto r = load_coordinator_config((dir_ / "nope.toml").string());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kNotFound);
  EXPECT_NE(r.error().message.find("nope.toml"), std::string::npos);
}

TEST_F(ConfigFileTest, ErrorsNameThePath) {
  const std::string path = write("bad.toml", "[http]\nport = 65536\n");
  auto r = load_coordinator_config(path);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message.rfind(path + ": http.port at line 2", 0), 0u) << r.error().to_string();
}

TEST_F(ConfigFileTest, OversizedFileIsRefusedBeforeParsing) {
  const std::string path = write("big.toml", std::string(kConfigBytesMax + 10, '#'));
  auto r = load_coordinator_config(path);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kOutOfRange);
}

TEST_F(ConfigFileTest, ADirectoryIsAnIoError) {
  auto r = load_coordinator_config(dir_.string());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kIo) << r.error().to_string();
}

}  // namespace
TEST(CoordinatorConfig, PricesPerModel) {
  auto r = parse_coordinator_config(
      "[pricing]\nprompt_micros_per_mtok = 150000\ncompletion_micros_per_mtok = 600000\n"
      "[pricing.models.\"llama-3-8b\"]\nprompt_micros_per_mtok = 200000\ncompletion_micros_per_mtok = 800000\n"
      "[pricing.models.stories260K]\nprompt_micros_per_mtok = 0\ncompletion_micros_per_mtok = 0\n",
      "a.toml");
  ASSERT_TRUE(r) << r.error().to_string();
  EXPECT_EQ(r->prices_of("llama-3-8b").prompt_micros_per_mtok, 200000u);
  EXPECT_EQ(r->prices_of("llama-3-8b").completion_micros_per_mtok, 800000u);
  EXPECT_EQ(r->prices_of("stories260K").completion_micros_per_mtok, 0u);
  EXPECT_EQ(r->prices_of("other").prompt_micros_per_mtok, 150000u);  // [pricing]'s
  EXPECT_EQ(r->prices_of("other").completion_micros_per_mtok, 600000u);
  EXPECT_TRUE(r->validate());
  expect_error("[pricing]\nmodels = 5\n", ErrorCode::kInvalidArgument, {"pricing.models"});
  expect_error("[pricing.models]\nm = 5\n", ErrorCode::kInvalidArgument, {"pricing.models.m"});
  expect_error("[pricing.models.m]\nprompt_micros_per_mtok = 1\n", ErrorCode::kInvalidArgument,
               {"missing key 'pricing.models.m.completion_micros_per_mtok'"});
  expect_error("[pricing.models.m]\nprompt_micros_per_mtok = -1\ncompletion_micros_per_mtok = 1\n",
               ErrorCode::kOutOfRange, {"pricing.models.m.prompt_micros_per_mtok"});
  expect_error("[pricing.models.m]\nprompt_micros_per_mtok = 1\ncompletion_micros_per_mtok = \"2\"\n",
               ErrorCode::kInvalidArgument, {"pricing.models.m.completion_micros_per_mtok"});
  expect_error("[pricing.models.m]\nprompt_micros_per_mtok = 1\ncompletion_micros_per_mtok = 1\nfree = true\n",
               ErrorCode::kInvalidArgument, {"unknown key 'pricing.models.m.free'"});
  expect_error("[pricing.models.\"a b\"]\nprompt_micros_per_mtok = 1\ncompletion_micros_per_mtok = 1\n",
               ErrorCode::kInvalidArgument, {"pricing.models key"});
  std::string many = "[pricing.models]\n";
  for (int i = 0; i <= 256; ++i) {
    many += "m" + std::to_string(i) + " = { prompt_micros_per_mtok = 1, completion_micros_per_mtok = 1 }\n";
  }
  expect_error(many, ErrorCode::kOutOfRange, {"pricing.models", "256"});
  CoordinatorConfig c;
  c.model_prices["bad id"] = {1, 1};
  EXPECT_FALSE(c.validate());
}

}  // namespace idlefleet::coordinator::config_test
