// Owners and enrolment, end to end with real processes: an owner's one-time
// code enrols a vehicle (its key made on the vehicle); with enrolment
// required, a vehicle that was not enrolled is refused; each owner sees only
// their own vehicles; a client API key cannot call owner routes; and the
// work an enrolled car does is paid to its owner. The owner API: a policy an
// owner sets reaches the car, which enforces it (and keeps it across a
// restart without the coordinator); another owner's car is a 404; garbage
// is a 400 naming the field; statements match `idlefleet ledger statement`.
#include <gtest/gtest.h>
#include <unistd.h>

#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "core/protocol.h"
#include "store/ledger_store.h"
#include "support/http_client.h"
#include "support/process_util.h"
#include "support/shared_model.h"
#include "transport/nats_client.h"
#include "transport/nats_server.h"
#include "transport/process.h"

namespace idlefleet::owners_test {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using testing::eventually;
using testing::run_capture;
using testing::shell_quote;


class Owners : public ::testing::Test {
 protected:
  void SetUp() override {
    IDLEFLEET_REQUIRE_SHARED_MODEL("the owners test");
    dir_ = fs::path(::testing::TempDir()) / ("owners_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "data");
    model_ = (dir_ / "stories260K.gguf").string();
    ASSERT_TRUE(testing::convert_shared_model(model_));
    transport::NatsServerOptions n;
    n.log_path = (dir_ / "nats.log").string();
    auto nats = transport::NatsServer::start(n);
    ASSERT_TRUE(nats.has_value()) << nats.error().to_string();
    nats_ = std::move(*nats);
    auto port = transport::free_loopback_port();
    ASSERT_TRUE(port.has_value());
    base_url_ = "http://127.0.0.1:" + std::to_string(*port);
    std::ofstream(dir_ / "coordinator.toml") << "data_dir = \"" << (dir_ / "data").string() << "\"\n"
                                             << "[vehicles]\nenrolment = \"required\"\n"
                                             << "[pricing]\nprompt_micros_per_mtok = 1000000\n"
                                             << "completion_micros_per_mtok = 1000000\n";
    port_ = *port;
    ASSERT_NO_FATAL_FAILURE(start_coordinator());
  }

  // The coordinator on port_ over dir_/data (again, after a stop).
  void start_coordinator() {
    transport::ProcessOptions co;
    co.program = IDLEFLEET_BINARY;
    co.args = {"coordinator", "--config", (dir_ / "coordinator.toml").string(), "--nats", nats_->url(),
               "--http-port", std::to_string(port_), "--model", "stories260K=" + model_};
    co.stdout_path = co.stderr_path = (dir_ / ("coordinator" + std::to_string(++coordinator_starts_) + ".log")).string();
    auto coordinator = transport::Process::spawn(co);
    ASSERT_TRUE(coordinator.has_value()) << coordinator.error().to_string();
    coordinator_ = std::make_unique<transport::Process>(std::move(*coordinator));
    ASSERT_TRUE(transport::wait_for_tcp("127.0.0.1", port_, 20000));
  }

  // Two simulated cars, car-01 and car-02, parked at home in the evening.
  void start_agent() {
    transport::ProcessOptions a;
    a.program = IDLEFLEET_BINARY;
    a.args = {"agent", "--vehicles", "2", "--nats", nats_->url(), "--coordinator", base_url_, "--start", "20:00",
              "--cache-dir", (dir_ / "cache").string(), "--target-soc", "50"};
    a.stdout_path = a.stderr_path = (dir_ / ("agent" + std::to_string(++agent_starts_) + ".log")).string();
    auto agent = transport::Process::spawn(a);
    ASSERT_TRUE(agent.has_value()) << agent.error().to_string();
    agent_ = std::make_unique<transport::Process>(std::move(*agent));
  }

  void TearDown() override {
    if (agent_) agent_->stop();
    if (coordinator_) coordinator_->stop();
    if (nats_) nats_->stop();
    if (!HasFailure() && !dir_.empty()) fs::remove_all(dir_);
  }

  std::string cli(const std::string& args) {
    return run_capture(std::string(IDLEFLEET_BINARY) + " " + args + " 2>&1; echo rc=$?");
  }
  // id and token of a new owner.
  std::pair<std::string, std::string> make_owner(const std::string& name) {
    const std::string out = cli("admin owners create --name " + name + " --data-dir " + shell_quote((dir_ / "data").string()));
    std::string id, token;
    std::istringstream in(out);
    for (std::string line; std::getline(in, line);) {
      if (line.rfind("id: ", 0) == 0) id = line.substr(4);
      if (line.rfind("token: ", 0) == 0) token = line.substr(7);
    }
    EXPECT_FALSE(token.empty()) << out;
    return {id, token};
  }
  std::string new_code(const std::string& token) {
    auto r = testing::http_post(base_url_ + "/v1/owner/enrolment_codes", "", {"Authorization: Bearer " + token});
    EXPECT_EQ(r.status, 200) << r.body;
    return json::parse(r.body, nullptr, false).value("code", "");
  }
  std::string enrol(const std::string& vehicle, const std::string& code) {
    return cli("agent enroll --coordinator " + base_url_ + " --code " + shell_quote(code) + " --vehicle-id " + vehicle +
               " --cache-dir " + shell_quote((dir_ / "cache").string()));
  }
  json get(const std::string& path, const std::string& token) {
    auto r = testing::http_get(base_url_ + path, {"Authorization: Bearer " + token});
    last_status_ = r.status;
    return json::parse(r.body, nullptr, false);
  }
  json status() { return json::parse(testing::http_get(base_url_ + "/v1/status").body, nullptr, false); }

  fs::path dir_;
  std::string model_, base_url_;
  uint16_t port_ = 0;
  int coordinator_starts_ = 0, agent_starts_ = 0;
  long last_status_ = 0;
  std::unique_ptr<transport::NatsServer> nats_;
  std::unique_ptr<transport::Process> coordinator_, agent_;
};

TEST_F(Owners, EnrolledVehiclesWorkForTheirOwnersAndNobodyElse) {
  const auto [alice, alice_token] = make_owner("alice");
  const auto [bob, bob_token] = make_owner("bob");
  const std::string code = new_code(alice_token);
  ASSERT_EQ(code.rfind("enr-", 0), 0u) << code;

  // A code enrols one vehicle, once.
  std::string out = enrol("car-01", code);
  ASSERT_NE(out.find("rc=0"), std::string::npos) << out;
  EXPECT_NE(out.find(alice), std::string::npos) << out;
  EXPECT_TRUE(fs::exists(dir_ / "cache" / "keys" / "car-01.key"));
  out = enrol("car-02", code);
  EXPECT_NE(out.find("already used"), std::string::npos) << out;
  EXPECT_EQ(out.find("rc=0"), std::string::npos) << out;
  out = enrol("car-02", "enr-00000000000000000000000000000000");
  EXPECT_NE(out.find("no such enrolment code"), std::string::npos) << out;
  // Bob cannot take Alice's car.
  out = enrol("car-01", new_code(bob_token));
  EXPECT_NE(out.find("another owner"), std::string::npos) << out;

  // Garbage at the enrolment route is a 400, never a crash.
  for (const std::string& body : {std::string(""), std::string("[]"), std::string("{\"code\":5}"),
                                  std::string("{\"code\":\"x\",\"vehicle_id\":\"car 9\",\"public_key\":\"ab\"}"),
                                  std::string(R"({"code":")") + std::string(300, 'c') + R"(","vehicle_id":"a","public_key":"b"})",
                                  std::string("\xff\xfe{")}) {
    auto r = testing::http_post(base_url_ + "/v1/vehicles/enroll", body, {"Content-Type: application/json"});
    EXPECT_TRUE(r.status == 400 || r.status == 404) << r.status << " for " << body.substr(0, 40) << ": " << r.body;
  }
  EXPECT_EQ(testing::http_get(base_url_ + "/v1/vehicles/enroll").status, 405);

  // Two cars start; only the enrolled one is let in.
  transport::ProcessOptions a;
  a.program = IDLEFLEET_BINARY;
  a.args = {"agent", "--vehicles", "2", "--nats", nats_->url(), "--coordinator", base_url_, "--start", "20:00",
            "--cache-dir", (dir_ / "cache").string(), "--target-soc", "50"};
  a.stdout_path = a.stderr_path = (dir_ / "agent.log").string();
  auto agent = transport::Process::spawn(a);
  ASSERT_TRUE(agent.has_value());
  agent_ = std::make_unique<transport::Process>(std::move(*agent));
  ASSERT_TRUE(eventually([&] { return status().value("/vehicles/available"_json_pointer, 0) == 1; }, 30000))
      << status().dump();
  EXPECT_EQ(status().value("/vehicles/known"_json_pointer, 0), 1) << status().dump();
  const std::string metrics = testing::http_get(base_url_ + "/metrics").body;
  EXPECT_NE(metrics.find("reason=\"not_enrolled\""), std::string::npos);

  // Each owner sees their own vehicles only.
  json mine = get("/v1/owner/vehicles", alice_token);
  ASSERT_EQ(last_status_, 200) << mine.dump();
  ASSERT_EQ(mine["data"].size(), 1u) << mine.dump();
  EXPECT_EQ(mine["data"][0]["id"], "car-01");
  EXPECT_TRUE(mine["data"][0]["online"].get<bool>());
  // And its verification standing (never checked here: the initial one, not quarantined).
  EXPECT_EQ(mine["data"][0]["verification"].value("standing", -1), 500) << mine.dump();
  EXPECT_FALSE(mine["data"][0]["verification"].value("quarantined", true)) << mine.dump();
  EXPECT_EQ(get("/v1/owner/vehicles", bob_token)["data"].size(), 0u);
  get("/v1/owner/vehicles", "ow-idf-" + std::string(64, '0'));
  EXPECT_EQ(last_status_, 401);
  EXPECT_EQ(testing::http_get(base_url_ + "/v1/owner/vehicles").status, 401);
  // A client API key cannot call owner routes.
  get("/v1/owner/vehicles", "sk-idf-" + std::string(64, 'a'));
  EXPECT_EQ(last_status_, 403);

  // Work done by Alice's car is paid to Alice.
  auto r = testing::http_post(base_url_ + "/v1/completions",
                              R"({"model":"stories260K","prompt":"Once upon a time","max_tokens":64,"seed":1})",
                              {"Content-Type: application/json"});
  ASSERT_EQ(r.status, 200) << r.body;
  const std::string job = json::parse(r.body).value("id", "");
  // The car's receipt follows its last message; the job settles once it is in.
  ASSERT_TRUE(eventually(
      [&] {
        return testing::http_get(base_url_ + "/metrics").body.find("idlefleet_events_total{event=\"settled\"} 1") !=
               std::string::npos;
      },
      20000))
      << testing::http_get(base_url_ + "/metrics").body;
  coordinator_->stop();
  auto ledger = store::LedgerStore::open((dir_ / "data" / store::kLedgerFileName).string());
  ASSERT_TRUE(ledger.has_value());
  auto txs = (*ledger)->transactions_for_job(job);
  ASSERT_TRUE(txs.has_value());
  ASSERT_EQ(txs->size(), 1u);
  bool alice_paid = false;
  for (const auto& p : txs->front().postings) alice_paid |= p.account == "owner:" + alice && p.amount_micros > 0;
  std::string postings;
  for (const auto& p : txs->front().postings) postings += p.account + " " + std::to_string(p.amount_micros) + " " + p.kind + "; ";
  EXPECT_TRUE(alice_paid) << "no posting to owner:" << alice << ": " << postings;
}

// What the coordinator's settlement metric has counted since it started.
int settled_count(const std::string& base_url) {
  const std::string metrics = testing::http_get(base_url + "/metrics").body;
  const std::string key = "idlefleet_events_total{event=\"settled\"} ";
  const size_t at = metrics.find(key);
  return at == std::string::npos ? 0 : std::atoi(metrics.c_str() + at + key.size());
}

std::string this_month_utc() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[16];
  std::strftime(buf, sizeof buf, "%Y-%m", &tm);
  return buf;
}

TEST_F(Owners, PoliciesReachTheCarAndStatementsMatchTheLedger) {
  const auto [alice, alice_token] = make_owner("alice");
  const auto [bob, bob_token] = make_owner("bob");
  ASSERT_NE(enrol("car-01", new_code(alice_token)).find("rc=0"), std::string::npos);
  ASSERT_NE(enrol("car-02", new_code(bob_token)).find("rc=0"), std::string::npos);
  // A real client API key (the coordinator reads keys.db as it runs).
  const std::string key_out = cli("admin keys create --name client --data-dir " + shell_quote((dir_ / "data").string()));
  std::string client_key;
  {
    std::istringstream in(key_out);
    for (std::string line; std::getline(in, line);) {
      if (line.rfind("secret: ", 0) == 0) client_key = line.substr(8);
    }
  }
  ASSERT_EQ(client_key.rfind("sk-idf-", 0), 0u) << key_out;

  ASSERT_NO_FATAL_FAILURE(start_agent());
  ASSERT_TRUE(eventually([&] { return status().value("/vehicles/available"_json_pointer, 0) == 2; }, 30000))
      << status().dump();

  const std::string car1 = "/v1/owner/vehicles/car-01", car2 = "/v1/owner/vehicles/car-02";
  auto auth = [](const std::string& token) { return std::vector<std::string>{"Authorization: Bearer " + token}; };
  auto put_policy = [&](const std::string& path, const std::string& body, const std::string& token) {
    auto r = testing::http_request("PUT", base_url_ + path + "/policy", body,
                                   {"Authorization: Bearer " + token, "Content-Type: application/json"});
    last_status_ = r.status;
    return json::parse(r.body, nullptr, false);
  };

  // Live state, reasons and (none yet) policy of one's own car.
  json v = get(car1, alice_token);
  ASSERT_EQ(last_status_, 200) << v.dump();
  EXPECT_EQ(v["id"], "car-01");
  EXPECT_TRUE(v["online"].get<bool>()) << v.dump();
  EXPECT_TRUE(v["eligible"].get<bool>()) << v.dump();
  EXPECT_TRUE(v["reasons"].is_array());
  EXPECT_TRUE(v["policy"].is_null()) << v.dump();
  json p = get(car1 + "/policy", alice_token);
  ASSERT_EQ(last_status_, 200) << p.dump();
  EXPECT_TRUE(p["policy"].is_null());

  // Another owner's car, or none at all, is a 404 for reading and changing
  // alike, and nothing changes.
  const std::string floor_100 = R"({"opted_in":true,"soc_floor_pct":100,"target_soc_pct":100})";
  for (const std::string& path : {car1, car1 + "/policy"}) {
    json e = get(path, bob_token);
    EXPECT_EQ(last_status_, 404) << path << ": " << e.dump();
    EXPECT_EQ(e.dump().find("eligible"), std::string::npos) << e.dump();
  }
  put_policy(car1, floor_100, bob_token);
  EXPECT_EQ(last_status_, 404);
  put_policy(car1, "garbage", bob_token);  // ownership is decided before the body is read
  EXPECT_EQ(last_status_, 404);
  get(car2, alice_token);
  EXPECT_EQ(last_status_, 404);
  for (const std::string& path : {std::string("/v1/owner/vehicles/car-99"), std::string("/v1/owner/vehicles/car%2001"),
                                  std::string("/v1/owner/vehicles/") + std::string(300, 'x'),
                                  std::string("/v1/owner/vehicles/car-01/policy/x")}) {
    get(path, alice_token);
    EXPECT_EQ(last_status_, 404) << path;
  }
  EXPECT_TRUE(get(car1, alice_token)["policy"].is_null());

  // A client API key, or no token, gets no owner route.
  const std::vector<std::pair<std::string, std::string>> routes = {
      {"GET", "/v1/owner/vehicles"},       {"GET", car1},
      {"GET", car1 + "/policy"},           {"PUT", car1 + "/policy"},
      {"POST", "/v1/owner/enrolment_codes"}, {"GET", "/v1/owner/statements?month=" + this_month_utc()}};
  for (const auto& [method, path] : routes) {
    auto r = testing::http_request(method, base_url_ + path, method == "GET" ? "" : floor_100, auth(client_key));
    EXPECT_EQ(r.status, 403) << method << " " << path << ": " << r.body;
    r = testing::http_request(method, base_url_ + path, method == "GET" ? "" : floor_100);
    EXPECT_EQ(r.status, 401) << method << " " << path << ": " << r.body;
  }
  EXPECT_TRUE(get(car1, alice_token)["policy"].is_null());

  // Garbage bodies: a 400 naming the parameter, and nothing changes.
  const std::vector<std::pair<std::string, std::string>> garbage = {
      {"", ""},
      {"not json", ""},
      {"[]", ""},
      {std::string("\xff\xfe{"), ""},
      {R"({"soc_floor":40})", "soc_floor"},
      {R"({"soc_floor_pct":"40"})", "soc_floor_pct"},
      {R"({"soc_floor_pct":150})", "soc_floor_pct"},
      {R"({"soc_floor_pct":90,"target_soc_pct":50})", "soc_floor_pct"},
      {R"({"opted_in":1})", "opted_in"},
      {R"({"departures_minute_of_week":[10080]})", "departures_minute_of_week[0]"},
      {R"({"allowed_windows":[{"start_minute_of_week":60}]})", "allowed_windows[0]"},
      {R"({"price_cap_micros_per_kwh":1e30})", "price_cap_micros_per_kwh"},
      {R"({"tariff":{"kind":"spot"}})", "tariff.kind"},
      {"{\"departures_minute_of_week\":[" + std::string(70000, '1') + "]}", ""},
  };
  for (const auto& [body, param] : garbage) {
    json e = put_policy(car1, body, alice_token);
    EXPECT_EQ(last_status_, 400) << body.substr(0, 60) << ": " << e.dump();
    if (!param.empty()) {
      EXPECT_EQ(e["error"]["param"], param) << body << ": " << e.dump();
    }
  }
  auto r = testing::http_request("PATCH", base_url_ + car1 + "/policy", floor_100, auth(alice_token));
  EXPECT_EQ(r.status, 405) << r.body;
  r = testing::http_request("DELETE", base_url_ + car1, "", auth(alice_token));
  EXPECT_EQ(r.status, 405) << r.body;
  EXPECT_TRUE(get(car1, alice_token)["policy"].is_null());
  EXPECT_TRUE(get(car1, alice_token)["eligible"].get<bool>());

  // Alice raises car-01's SoC floor above any charge: the car says it is not
  // eligible, and why, and takes no more work (car-02 does it).
  json set = put_policy(car1, floor_100, alice_token);
  ASSERT_EQ(last_status_, 200) << set.dump();
  EXPECT_EQ(set["policy"]["soc_floor_pct"], 100.0);
  EXPECT_TRUE(set["updated_at"].is_number_integer());
  ASSERT_TRUE(eventually(
      [&] {
        v = get(car1, alice_token);
        return v.value("eligible", true) == false && v["reasons"].dump().find("floor") != std::string::npos;
      },
      15000))
      << v.dump();
  EXPECT_EQ(v["policy"]["soc_floor_pct"], 100.0);
  const int car1_done = get(car1, alice_token).value("attempts_completed", -1);
  const int car2_done = get(car2, bob_token).value("attempts_completed", -1);
  r = testing::http_post(base_url_ + "/v1/completions",
                         R"({"model":"stories260K","prompt":"Once upon a time","max_tokens":16,"seed":1})",
                         {"Content-Type: application/json"});
  ASSERT_EQ(r.status, 200) << r.body;
  ASSERT_TRUE(eventually([&] { return get(car2, bob_token).value("attempts_completed", -1) == car2_done + 1; }, 15000));
  EXPECT_EQ(get(car1, alice_token).value("attempts_completed", -1), car1_done);
  ASSERT_TRUE(eventually([&] { return settled_count(base_url_) >= 1; }, 20000));
  // The car keeps the owner's policy.
  const fs::path policy_file = dir_ / "cache" / "keys" / "car-01.policy.json";
  ASSERT_TRUE(fs::exists(policy_file));
  EXPECT_FALSE(fs::exists(dir_ / "cache" / "keys" / "car-02.policy.json"));

  // The agent restarts while the coordinator is down: the car still enforces
  // Alice's policy (what it says on its subject shows it), not its flags.
  coordinator_->stop();
  agent_->stop();
  std::mutex mu;  // before the watcher, so that they outlive its handler
  std::map<std::string, core::StateMessage> states;
  auto watcher = transport::NatsClient::connect({nats_->url(), "owners-test"});
  ASSERT_TRUE(watcher.has_value()) << watcher.error().to_string();
  ASSERT_TRUE((*watcher)->subscribe(core::kUpSubjectWildcard, [&](std::string_view, std::string_view data) {
    auto m = core::decode_message(data);
    if (!m || !std::holds_alternative<core::StateMessage>(*m)) return;
    const auto& st = std::get<core::StateMessage>(*m);
    std::lock_guard<std::mutex> lock(mu);
    states[st.vehicle_id] = st;
  }));
  ASSERT_NO_FATAL_FAILURE(start_agent());
  ASSERT_TRUE(eventually(
      [&] {
        std::lock_guard<std::mutex> lock(mu);
        return states.count("car-01") == 1 && states.count("car-02") == 1 && states["car-02"].eligible;
      },
      20000));
  {
    std::lock_guard<std::mutex> lock(mu);
    EXPECT_FALSE(states["car-01"].eligible);
    std::string reasons;
    for (const std::string& reason : states["car-01"].reasons) reasons += reason + "; ";
    EXPECT_NE(reasons.find("floor of 100%"), std::string::npos) << reasons;
  }

  // The coordinator comes back with the policy; Bob opts car-02 out and
  // Alice sets car-01's floor back: car-01 works again, and is paid.
  ASSERT_NO_FATAL_FAILURE(start_coordinator());
  EXPECT_EQ(get(car1 + "/policy", alice_token)["policy"]["soc_floor_pct"], 100.0);
  put_policy(car2, R"({"opted_in":false})", bob_token);
  ASSERT_EQ(last_status_, 200);
  set = put_policy(car1, R"({"opted_in":true,"soc_floor_pct":30,"target_soc_pct":50})", alice_token);
  ASSERT_EQ(last_status_, 200) << set.dump();
  EXPECT_EQ(set["policy"]["soc_floor_pct"], 30.0);
  ASSERT_TRUE(eventually(
      [&] {
        v = get(car2, bob_token);
        return v.value("online", false) && !v.value("eligible", true) &&
               v["reasons"].dump().find("opted") != std::string::npos;
      },
      20000))
      << v.dump();
  ASSERT_TRUE(eventually([&] { return get(car1, alice_token).value("eligible", false); }, 20000))
      << get(car1, alice_token).dump();
  // The fleet's summary (what admits a request) follows on the next tick.
  ASSERT_TRUE(eventually([&] { return status().value("/vehicles/available"_json_pointer, 0) == 1; }, 10000))
      << status().dump();
  r = testing::http_post(base_url_ + "/v1/completions",
                         R"({"model":"stories260K","prompt":"Once upon a time","max_tokens":16,"seed":2})",
                         {"Content-Type: application/json"});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_TRUE(eventually([&] { return get(car1, alice_token).value("attempts_completed", -1) == 1; }, 10000))
      << get(car1, alice_token).dump();
  ASSERT_TRUE(eventually([&] { return settled_count(base_url_) >= 1; }, 20000));

  // Statements over HTTP are `idlefleet ledger statement`'s, byte for byte.
  const std::string month = this_month_utc();
  for (const auto& [owner, token] : {std::pair{alice, alice_token}, std::pair{bob, bob_token}}) {
    for (const std::string format : {"json", "csv"}) {
      auto http = testing::http_get(base_url_ + "/v1/owner/statements?month=" + month + "&format=" + format,
                                    auth(token));
      ASSERT_EQ(http.status, 200) << http.body;
      const std::string from_cli = run_capture(std::string(IDLEFLEET_BINARY) + " ledger statement --data-dir " +
                                               shell_quote((dir_ / "data").string()) + " --owner " + owner +
                                               " --month " + month + " --format " + format);
      EXPECT_EQ(http.body, from_cli) << owner << " " << format;
      if (format == "json") {
        const json st = json::parse(http.body, nullptr, false);
        EXPECT_EQ(st.value("owner", ""), owner);
        EXPECT_FALSE(st["entries"].empty()) << http.body;  // each car did one job this month
      } else {
        ASSERT_NE(http.header("content-type"), nullptr);
        EXPECT_NE(http.header("content-type")->find("text/csv"), std::string::npos);
      }
    }
  }
  // Default format JSON; bad or missing parameters are 400s naming them.
  auto http = testing::http_get(base_url_ + "/v1/owner/statements?month=" + month, auth(alice_token));
  EXPECT_EQ(http.status, 200);
  EXPECT_EQ(json::parse(http.body, nullptr, false).value("month", ""), month);
  // Percent-escapes are decoded ("-" as %2D); a bad one is a 400.
  std::string escaped = month;
  escaped.replace(escaped.find('-'), 1, "%2D");
  http = testing::http_get(base_url_ + "/v1/owner/statements?month=" + escaped + "&format=j%73on", auth(alice_token));
  EXPECT_EQ(http.status, 200) << http.body;
  EXPECT_EQ(json::parse(http.body, nullptr, false).value("month", ""), month);
  http = testing::http_get(base_url_ + "/v1/owner/statements?month=%zz", auth(alice_token));
  EXPECT_EQ(http.status, 400);
  EXPECT_NE(http.body.find("malformed query string"), std::string::npos) << http.body;
  for (const auto& [query, param] : std::vector<std::pair<std::string, std::string>>{
           {"", "month"}, {"?month=2026-13", "month"}, {"?month=soon", "month"},
           {"?month=" + month + "&format=pdf", "format"}, {"?month=" + month + "&owner=" + bob, "owner"}}) {
    http = testing::http_get(base_url_ + "/v1/owner/statements" + query, auth(alice_token));
    EXPECT_EQ(http.status, 400) << query << ": " << http.body;
    EXPECT_EQ(json::parse(http.body, nullptr, false)["error"]["param"], param) << query << ": " << http.body;
  }
  http = testing::http_request("POST", base_url_ + "/v1/owner/statements?month=" + month, "", auth(alice_token));
  EXPECT_EQ(http.status, 405);
}

}  // namespace
}  // namespace idlefleet::owners_test
