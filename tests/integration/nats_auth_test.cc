// Per-vehicle NATS credentials against a real nats-server: the file that
// `idlefleet admin nats-config` writes from a real vehicle store, loaded by
// nats-server, and clients that present their Ed25519 keys as NKeys. A
// vehicle may publish on its own up subject and hear its own down subject;
// it can neither publish on another vehicle's subject nor subscribe to it
// (the server refuses, and the other side never sees a thing); an unknown
// key, a key pinned without enrolment and no key at all cannot connect; the
// coordinator's user does its job; a vehicle enrolled later gets in after a
// reload. Then the whole chain with the real processes: a coordinator with
// enrolment required and the authorisation file, `idlefleet agent enroll`,
// nats-server reloaded by the coordinator, and the agent serving a request.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/identity.h"
#include "common/nkey.h"
#include "coordinator/nats_auth.h"
#include "store/vehicle_store.h"
#include "support/http_client.h"
#include "support/process_util.h"
#include "support/shared_model.h"
#include "transport/nats_client.h"
#include "transport/nats_server.h"
#include "transport/process.h"

namespace idlefleet::nats_auth_test {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using testing::eventually;
using testing::run_capture;
using testing::shell_quote;

constexpr int64_t kWaitMs = 10000;

// The messages one subscription received, by subject.
struct Inbox {
  std::mutex mu;
  std::vector<std::string> subjects;
  void add(std::string_view s) {
    std::lock_guard lock(mu);
    subjects.emplace_back(s);
  }
  size_t count(const std::string& subject) {
    std::lock_guard lock(mu);
    return static_cast<size_t>(std::count(subjects.begin(), subjects.end(), subject));
  }
  size_t size() {
    std::lock_guard lock(mu);
    return subjects.size();
  }
};

transport::NatsHandler into(Inbox& inbox) {
  return [&inbox](std::string_view subject, std::string_view) { inbox.add(subject); };
}

std::string cli(const std::string& args) {
  return run_capture(std::string(IDLEFLEET_BINARY) + " " + args + " 2>&1; echo rc=$?");
}

std::string read_file(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

class NatsAuth : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(::testing::TempDir()) / ("nats_auth_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "data");
    auto vs = store::VehicleStore::open((dir_ / "data" / "vehicles.sqlite3").string());
    ASSERT_TRUE(vs) << vs.error().to_string();
    vehicles_ = std::move(*vs);
    auto owner = vehicles_->create_owner("Kari", 1000);
    ASSERT_TRUE(owner);
    owner_id_ = owner->first.id;
    a_ = Ed25519Keypair::generate();
    b_ = Ed25519Keypair::generate();
    enrol("car-a", a_);
    enrol("car-b", b_);
    // Pinned at a hello in "open" mode, never enrolled: no NATS user.
    pinned_only_ = Ed25519Keypair::generate();
    ASSERT_TRUE(vehicles_->put_vehicle({"car-p", to_hex(pinned_only_.public_key), "", 1000}));

    const std::string out = write_config();
    ASSERT_NE(out.find("rc=0"), std::string::npos) << out;
    ASSERT_NE(out.find("2 enrolled vehicles"), std::string::npos) << out;
    auto key = load_or_create_key(coordinator::coordinator_key_path((dir_ / "data").string()));
    ASSERT_TRUE(key) << key.error().to_string();
    coordinator_key_ = *key;

    std::ofstream(dir_ / "nats.conf") << "max_payload: 8388608\npid_file: \"" << (dir_ / "nats.pid").string()
                                      << "\"\ninclude \"auth.conf\"\n";
    transport::NatsServerOptions n;
    n.config_path = (dir_ / "nats.conf").string();
    n.log_path = (dir_ / "nats.log").string();
    auto nats = transport::NatsServer::start(n);
    ASSERT_TRUE(nats) << nats.error().to_string();
    nats_ = std::move(*nats);
  }

  void TearDown() override {
    nats_.reset();
    if (!HasFailure()) fs::remove_all(dir_);
  }

  void enrol(const std::string& id, const Ed25519Keypair& key) {
    auto code = vehicles_->create_code(owner_id_, 2000);
    ASSERT_TRUE(code);
    auto v = vehicles_->enrol(*code, id, to_hex(key.public_key), 3000);
    ASSERT_TRUE(v) << v.error().to_string();
  }

  std::string write_config() {
    return cli("admin nats-config --data-dir " + shell_quote((dir_ / "data").string()) + " -o " +
               shell_quote((dir_ / "auth.conf").string()));
  }

  Result<std::unique_ptr<transport::NatsClient>> connect(std::optional<Ed25519Keypair> key) {
    transport::NatsOptions o;
    o.url = nats_->url();
    o.retry_on_failed_connect = false;
    o.nkey_identity = key;
    return transport::NatsClient::connect(o);
  }

  std::unique_ptr<transport::NatsClient> must_connect(const Ed25519Keypair& key) {
    auto c = connect(key);
    EXPECT_TRUE(c) << c.error().to_string() << "\n" << read_file(dir_ / "nats.log");
    return c ? std::move(*c) : nullptr;
  }

  fs::path dir_;
  std::unique_ptr<store::VehicleStore> vehicles_;
  std::string owner_id_;
  Ed25519Keypair a_, b_, pinned_only_, coordinator_key_;
  std::unique_ptr<transport::NatsServer> nats_;
};

TEST_F(NatsAuth, TheGeneratedFileIsPrivateAndNamesEachEnrolledVehicle) {
  struct stat st {};
  ASSERT_EQ(::stat((dir_ / "auth.conf").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  const std::string text = read_file(dir_ / "auth.conf");
  EXPECT_NE(text.find(nkey_user_public(coordinator_key_.public_key)), std::string::npos) << text;
  EXPECT_NE(text.find(nkey_user_public(a_.public_key)), std::string::npos) << text;
  EXPECT_NE(text.find(nkey_user_public(b_.public_key)), std::string::npos) << text;
  EXPECT_EQ(text.find(nkey_user_public(pinned_only_.public_key)), std::string::npos) << text;
  EXPECT_EQ(text.find("_INBOX"), std::string::npos) << text;
  // The coordinator's key was made 0600 by the command.
  ASSERT_EQ(::stat(coordinator::coordinator_key_path((dir_ / "data").string()).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST_F(NatsAuth, AVehicleUsesItsOwnSubjectsAndTheCoordinatorDoesItsJob) {
  auto coordinator = must_connect(coordinator_key_);
  auto a = must_connect(a_);
  ASSERT_TRUE(coordinator && a);
  Inbox up, down_a;
  ASSERT_TRUE(coordinator->subscribe("idlefleet.v1.up.*", into(up)));
  ASSERT_TRUE(a->subscribe("idlefleet.v1.down.car-a", into(down_a)));
  ASSERT_TRUE(coordinator->flush());
  ASSERT_TRUE(a->flush());
  ASSERT_TRUE(a->publish("idlefleet.v1.up.car-a", "{}"));
  ASSERT_TRUE(coordinator->publish("idlefleet.v1.down.car-a", "{}"));
  EXPECT_TRUE(eventually([&] { return up.count("idlefleet.v1.up.car-a") == 1; }, kWaitMs));
  EXPECT_TRUE(eventually([&] { return down_a.count("idlefleet.v1.down.car-a") == 1; }, kWaitMs));
  ASSERT_TRUE(a->flush());
  ASSERT_TRUE(coordinator->flush());
  EXPECT_EQ(a->async_errors(), 0u) << a->last_async_error();
  EXPECT_EQ(coordinator->async_errors(), 0u) << coordinator->last_async_error();
}

TEST_F(NatsAuth, AVehicleCannotPublishOnAnotherVehiclesSubject) {
  auto coordinator = must_connect(coordinator_key_);
  auto a = must_connect(a_);
  ASSERT_TRUE(coordinator && a);
  Inbox up;
  ASSERT_TRUE(coordinator->subscribe("idlefleet.v1.up.*", into(up)));
  ASSERT_TRUE(coordinator->flush());
  // Forged: car-a speaks as car-b, then as itself. The server keeps one
  // connection's messages in order, so once the second is in, the first
  // would have been too.
  ASSERT_TRUE(a->publish("idlefleet.v1.up.car-b", "{\"type\":\"hello\"}"));
  ASSERT_TRUE(a->publish("idlefleet.v1.up.car-a", "{}"));
  ASSERT_TRUE(eventually([&] { return up.count("idlefleet.v1.up.car-a") == 1; }, kWaitMs));
  EXPECT_EQ(up.count("idlefleet.v1.up.car-b"), 0u);
  EXPECT_EQ(up.size(), 1u);
  ASSERT_TRUE(eventually([&] { return a->async_errors() >= 1; }, kWaitMs));
  EXPECT_NE(a->last_async_error().find("Permissions Violation for Publish"), std::string::npos)
      << a->last_async_error();
  // Nor on another's down subject: only the coordinator speaks there.
  Inbox down_b;
  auto b = must_connect(b_);
  ASSERT_TRUE(b);
  ASSERT_TRUE(b->subscribe("idlefleet.v1.down.car-b", into(down_b)));
  ASSERT_TRUE(b->flush());
  ASSERT_TRUE(a->publish("idlefleet.v1.down.car-b", "{}"));
  ASSERT_TRUE(coordinator->publish("idlefleet.v1.down.car-b", "{}"));
  ASSERT_TRUE(eventually([&] { return down_b.size() == 1; }, kWaitMs));
  ASSERT_TRUE(b->flush());
  EXPECT_EQ(down_b.size(), 1u);
  // The connection stays up for what it may do.
  EXPECT_TRUE(a->connected());
}

TEST_F(NatsAuth, AVehicleCannotSubscribeToAnotherVehiclesSubjects) {
  auto coordinator = must_connect(coordinator_key_);
  auto a = must_connect(a_);
  auto b = must_connect(b_);
  ASSERT_TRUE(coordinator && a && b);
  Inbox a_snoops, a_own, b_own, a_up;
  ASSERT_TRUE(a->subscribe("idlefleet.v1.down.car-b", into(a_snoops)));  // libnats cannot know; the server refuses
  ASSERT_TRUE(a->subscribe("idlefleet.v1.down.>", into(a_snoops)));
  ASSERT_TRUE(a->subscribe("idlefleet.v1.up.*", into(a_up)));  // other vehicles' reports
  ASSERT_TRUE(a->subscribe("idlefleet.v1.down.car-a", into(a_own)));
  ASSERT_TRUE(b->subscribe("idlefleet.v1.down.car-b", into(b_own)));
  ASSERT_TRUE(a->flush());
  ASSERT_TRUE(b->flush());
  ASSERT_TRUE(eventually([&] { return a->async_errors() >= 3; }, kWaitMs)) << a->last_async_error();
  EXPECT_NE(a->last_async_error().find("Permissions Violation for Subscription"), std::string::npos)
      << a->last_async_error();
  ASSERT_TRUE(b->publish("idlefleet.v1.up.car-b", "{}"));
  ASSERT_TRUE(b->flush());
  // The coordinator writes to B, then to A: A hears its own message and, in
  // order before it, would have heard B's.
  ASSERT_TRUE(coordinator->publish("idlefleet.v1.down.car-b", "secret for b"));
  ASSERT_TRUE(coordinator->publish("idlefleet.v1.down.car-a", "for a"));
  ASSERT_TRUE(eventually([&] { return a_own.size() == 1 && b_own.size() == 1; }, kWaitMs));
  EXPECT_EQ(a_snoops.size(), 0u);
  EXPECT_EQ(a_up.size(), 0u);
}

TEST_F(NatsAuth, UnknownKeysAndAnonymousClientsCannotConnect) {
  auto stranger = connect(Ed25519Keypair::generate());
  ASSERT_FALSE(stranger);
  const std::string& why = stranger.error().message;
  EXPECT_TRUE(why.find("uthoriz") != std::string::npos || why.find("uthentic") != std::string::npos) << why;
  EXPECT_FALSE(connect(pinned_only_));
  EXPECT_FALSE(connect(std::nullopt));
  // A vehicle's user is not the coordinator's: it cannot listen to the fleet.
  auto a = must_connect(a_);
  ASSERT_TRUE(a);
  EXPECT_TRUE(a->connected());
}

// An agent whose key the server does not know stops at start, naming its key.
TEST_F(NatsAuth, AnAgentThatIsNotEnrolledIsToldWhy) {
  const std::string out = run_capture("timeout 30 " + std::string(IDLEFLEET_BINARY) + " agent --vehicles 1 --nats " +
                                      nats_->url() + " --cache-dir " + shell_quote((dir_ / "cache").string()) +
                                      " --status-every 0 2>&1; echo rc=$?");
  EXPECT_NE(out.find("rc=1"), std::string::npos) << out;
  // libnats reports the closed connection, not the server's reason; the
  // agent names the key and the likely cause.
  EXPECT_NE(out.find("NATS user U"), std::string::npos) << out;
  EXPECT_NE(out.find("agent enroll"), std::string::npos) << out;
}

TEST_F(NatsAuth, AVehicleEnrolledLaterGetsInAfterAReload) {
  const Ed25519Keypair c = Ed25519Keypair::generate();
  enrol("car-c", c);
  EXPECT_FALSE(connect(c));
  const std::string out = write_config();
  ASSERT_NE(out.find("3 enrolled vehicles"), std::string::npos) << out;
  ASSERT_TRUE(coordinator::signal_nats_reload((dir_ / "nats.pid").string()));
  ASSERT_TRUE(eventually([&] { return connect(c).has_value(); }, kWaitMs, 50)) << read_file(dir_ / "nats.log");
  // Those already connected stay; one whose user a reload removes is cut off.
  auto a = must_connect(a_);
  auto b = must_connect(b_);
  ASSERT_TRUE(a && b);
  auto all = vehicles_->vehicles();
  ASSERT_TRUE(all);
  std::vector<store::VehicleRecord> without_a;
  for (const auto& v : *all) {
    if (v.vehicle_id != "car-a") without_a.push_back(v);
  }
  auto users = coordinator::fleet_nats_users(coordinator_key_.public_key, without_a);
  ASSERT_TRUE(users);
  ASSERT_TRUE(coordinator::write_private_file((dir_ / "auth.conf").string(), coordinator::nats_authorization_text(*users)));
  ASSERT_TRUE(coordinator::signal_nats_reload((dir_ / "nats.pid").string()));
  EXPECT_TRUE(eventually([&] { return !a->connected(); }, kWaitMs, 20)) << read_file(dir_ / "nats.log");
  EXPECT_TRUE(b->connected());
  EXPECT_FALSE(connect(a_));
}

TEST_F(NatsAuth, GarbageFlagsAndPidFilesAreRefused) {
  const std::string data = " --data-dir " + shell_quote((dir_ / "data").string());
  for (const std::string& args : std::vector<std::string>{
           "admin nats-config" + data, "admin nats-config -o ''" + data,
        "admin nats-config -o " + shell_quote(dir_.string()) + data,
        "admin nats-config -o " + shell_quote(std::string(5000, 'x')) + data,
        "admin nats-config -o " + shell_quote("a\nb") + data,
        std::string("admin nats-config -o x.conf --data-dir d --config c.toml")}) {
    const std::string out = cli(args);
    EXPECT_NE(out.find("rc=2"), std::string::npos) << args << ": " << out;
  }
  // A directory that does not exist, a config that is not one: runtime errors.
  std::string out = cli("admin nats-config -o " + shell_quote((dir_ / "no" / "such" / "auth.conf").string()) + data);
  EXPECT_NE(out.find("rc=1"), std::string::npos) << out;
  EXPECT_NE(out.find("No such file"), std::string::npos) << out;
  std::ofstream(dir_ / "bad.toml") << "[nats]\nauthorization_file = 5\n";
  out = cli("admin nats-config -o " + shell_quote((dir_ / "x.conf").string()) + " --config " +
            shell_quote((dir_ / "bad.toml").string()));
  EXPECT_NE(out.find("rc=1"), std::string::npos) << out;
  EXPECT_NE(out.find("nats.authorization_file"), std::string::npos) << out;
  EXPECT_FALSE(fs::exists(dir_ / "x.conf"));

  // Pid files: missing, empty, not a number, too long, pid 1, a pid nobody has.
  EXPECT_EQ(coordinator::signal_nats_reload((dir_ / "none.pid").string()).error().code, ErrorCode::kNotFound);
  for (const std::string& text : {std::string(""), std::string("nats\n"), std::string("12 13\n"),
                                  std::string(100, '7'), std::string("1\n"), std::string("-5\n"),
                                  std::string("99999999999999999999\n")}) {
    std::ofstream(dir_ / "bad.pid") << text;
    auto st = coordinator::signal_nats_reload((dir_ / "bad.pid").string());
    ASSERT_FALSE(st) << "'" << text << "'";
    EXPECT_EQ(st.error().code, ErrorCode::kCorrupt) << text << ": " << st.error().message;
  }
  std::ofstream(dir_ / "gone.pid") << "4194000\n";
  EXPECT_FALSE(coordinator::signal_nats_reload((dir_ / "gone.pid").string()));
}

// A server without authorisation (the demo's, the other tests') lets a
// client with a key in: the agent and the coordinator always present one.
TEST(NatsAuthOpenServer, AKeyIsAcceptedWhereNoneIsAsked) {
  auto nats = transport::NatsServer::start({});
  ASSERT_TRUE(nats) << nats.error().to_string();
  transport::NatsOptions o;
  o.url = (*nats)->url();
  o.retry_on_failed_connect = false;
  o.nkey_identity = Ed25519Keypair::generate();
  auto c = transport::NatsClient::connect(o);
  ASSERT_TRUE(c) << c.error().to_string();
  Inbox inbox;
  ASSERT_TRUE((*c)->subscribe("x.y", into(inbox)));
  ASSERT_TRUE((*c)->flush());
  ASSERT_TRUE((*c)->publish("x.y", "1"));
  EXPECT_TRUE(eventually([&] { return inbox.size() == 1; }, kWaitMs));
}


size_t occurrences(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

// The local setup of docs/operations.md, end to end with the real processes.
TEST(NatsAuthFleet, AnEnrolledCarConnectsWithItsKeyAndServes) {
  IDLEFLEET_REQUIRE_SHARED_MODEL("this test");
  const fs::path dir = fs::path(::testing::TempDir()) / ("nats_auth_fleet_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir / "data");
  const std::string model = (dir / "stories260K.gguf").string();
  ASSERT_TRUE(testing::convert_shared_model(model));
  const fs::path config = dir / "coordinator.toml";
  std::ofstream(config) << "data_dir = \"" << (dir / "data").string() << "\"\n"
                        << "[vehicles]\nenrolment = \"required\"\n"
                        << "[nats]\nauthorization_file = \"" << (dir / "auth.conf").string() << "\"\n"
                        << "server_pid_file = \"" << (dir / "nats.pid").string() << "\"\n";
  // 1. The first file, before nats-server starts: the coordinator alone.
  std::string out = cli("admin nats-config --config " + shell_quote(config.string()) + " -o " +
                        shell_quote((dir / "auth.conf").string()));
  ASSERT_NE(out.find("0 enrolled vehicles"), std::string::npos) << out;
  std::ofstream(dir / "nats.conf") << "pid_file: \"" << (dir / "nats.pid").string()
                                   << "\"\ninclude \"auth.conf\"\n";
  transport::NatsServerOptions n;
  n.config_path = (dir / "nats.conf").string();
  n.log_path = (dir / "nats.log").string();
  auto nats = transport::NatsServer::start(n);
  ASSERT_TRUE(nats) << nats.error().to_string();
  auto port = transport::free_loopback_port();
  ASSERT_TRUE(port);
  const std::string base_url = "http://127.0.0.1:" + std::to_string(*port);
  transport::ProcessOptions co;
  co.program = IDLEFLEET_BINARY;
  co.args = {"coordinator", "--config", config.string(), "--nats", (*nats)->url(),
             "--http-port", std::to_string(*port), "--model", "stories260K=" + model};
  co.stdout_path = co.stderr_path = (dir / "coordinator.log").string();
  auto coordinator = transport::Process::spawn(co);
  ASSERT_TRUE(coordinator) << coordinator.error().to_string();
  ASSERT_TRUE(transport::wait_for_tcp("127.0.0.1", *port, 20000)) << read_file(dir / "coordinator.log");
  // The coordinator rewrote the file at start and had nats-server reload it.
  ASSERT_TRUE(eventually([&] { return occurrences(read_file(dir / "nats.log"), "Reloaded") >= 1; }, kWaitMs))
      << read_file(dir / "nats.log") << read_file(dir / "coordinator.log");

  // 2. An owner's code enrols the car; the answer names its NATS user.
  out = cli("admin owners create --name kari --data-dir " + shell_quote((dir / "data").string()));
  const size_t at = out.find("token: ");
  ASSERT_NE(at, std::string::npos) << out;
  const std::string token = out.substr(at + 7, out.find('\n', at) - at - 7);
  auto r = testing::http_post(base_url + "/v1/owner/enrolment_codes", "", {"Authorization: Bearer " + token});
  ASSERT_EQ(r.status, 200) << r.body;
  const std::string code = json::parse(r.body, nullptr, false).value("code", "");
  const size_t reloads = occurrences(read_file(dir / "nats.log"), "Reloaded");
  out = cli("agent enroll --coordinator " + base_url + " --code " + shell_quote(code) +
            " --vehicle-id car-01 --cache-dir " + shell_quote((dir / "cache").string()));
  ASSERT_NE(out.find("rc=0"), std::string::npos) << out;
  auto key = load_or_create_key((dir / "cache" / "keys" / "car-01.key").string());
  ASSERT_TRUE(key);
  const std::string user = nkey_user_public(key->public_key);
  EXPECT_NE(out.find("NATS user " + user), std::string::npos) << out;
  // 3. The coordinator put the car in the file and nats-server reloaded it.
  EXPECT_NE(read_file(dir / "auth.conf").find(user), std::string::npos);
  ASSERT_TRUE(eventually([&] { return occurrences(read_file(dir / "nats.log"), "Reloaded") > reloads; }, kWaitMs))
      << read_file(dir / "nats.log");

  // 4. The car connects with its key and serves.
  transport::ProcessOptions a;
  a.program = IDLEFLEET_BINARY;
  a.args = {"agent", "--vehicles", "1", "--nats", (*nats)->url(), "--coordinator", base_url, "--start", "20:00",
            "--cache-dir", (dir / "cache").string(), "--target-soc", "50"};
  a.stdout_path = a.stderr_path = (dir / "agent.log").string();
  auto agent = transport::Process::spawn(a);
  ASSERT_TRUE(agent) << agent.error().to_string();
  auto status = [&] { return json::parse(testing::http_get(base_url + "/v1/status").body, nullptr, false); };
  ASSERT_TRUE(eventually([&] { return status().value("/vehicles/available"_json_pointer, 0) == 1; }, 30000))
      << status().dump() << read_file(dir / "agent.log") << read_file(dir / "nats.log");
  r = testing::http_post(base_url + "/v1/completions",
                         R"({"model":"stories260K","prompt":"Once upon a time","max_tokens":16,"seed":1})",
                         {"Content-Type: application/json"});
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_NE(r.body.find("\"completion_tokens\":16"), std::string::npos) << r.body;
  const std::string metrics = testing::http_get(base_url + "/metrics").body;
  EXPECT_EQ(metrics.find("idlefleet_nats_authorization_failures_total"), std::string::npos) << metrics;
  // Nobody got in without a key, and nothing was refused on the way.
  EXPECT_EQ(read_file(dir / "nats.log").find("Violation"), std::string::npos) << read_file(dir / "nats.log");
  EXPECT_EQ(read_file(dir / "agent.log").find("Violation"), std::string::npos) << read_file(dir / "agent.log");
  agent->stop(5000);
  coordinator->stop(5000);
  (*nats)->stop();
  if (!::testing::Test::HasFailure()) fs::remove_all(dir);
}

}  // namespace
}  // namespace idlefleet::nats_auth_test
