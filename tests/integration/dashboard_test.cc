// The dashboard (issue 7), served by a real `idlefleet coordinator`.
//
// DashboardServer (no ../shared needed: the coordinator serves a synthetic
// model): the pages and assets over HTTP with their headers, 404s and 405s,
// garbage in the query and headers; GET /v1/dashboard/events sends a snapshot
// at once and then every second, admits at most kDashboardStreamsMax streams
// (503 beyond) and frees a slot when its client goes; with [auth] required it
// needs a key with the admin scope.
//
// DashboardBrowser (the live fleet, as tests/integration/openai_node_test.cc:
// nats-server, the coordinator and `idlefleet agent --vehicles 3` on a
// compressed day, one car enrolled to an owner): tests/web/dashboard.mjs
// drives Debian's Chromium through playwright-core (pinned in
// tests/web/package-lock.json, installed with `npm ci` when node_modules does
// not match it). It checks every page loads without console errors or failed
// requests, the operator's numbers move while jobs run, an owner's policy
// change made on the owner page reaches the car and changes its eligibility on
// screen, owner calls without the token are refused and the page says so,
// model names holding HTML stay text, and the pages fit a 390 px phone. It
// writes screenshots to <build>/dashboard/ (docs/dashboard/ holds copies).
//
// Node, npm and /usr/bin/chromium come from scripts/bootstrap: without them
// the browser test fails, never skips. Without ../shared it skips as the
// other fleet tests do (and fails in CI).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "coordinator/dashboard.h"
#include "support/http_client.h"
#include "support/node_tests.h"
#include "support/process_util.h"
#include "support/shared_model.h"
#include "transport/nats_server.h"
#include "transport/process.h"

namespace idlefleet::dashboard_test {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using testing::eventually;
using testing::log_tail;
using testing::read_text_file;
using testing::run_capture;
using testing::shell_quote;

const fs::path kWebTestDir = fs::path(IDLEFLEET_SOURCE_DIR) / "tests" / "web";
const fs::path kChromium = "/usr/bin/chromium";
constexpr int64_t kNodeTestMsMax = 240'000;
constexpr int64_t kFleetReadyMsMax = 30'000;
constexpr int64_t kStartMsMax = 20'000;

// Model names a vehicle or an operator could give, which must show as text.
const std::string kImgModel = "<img/src=x/onerror=window.__pwned=1>";
const std::string kScriptModel = "<script>window.__pwned=2</script>";

std::string cli(const std::string& args) {
  return run_capture(std::string(IDLEFLEET_BINARY) + " " + args + " 2>&1; echo rc=$?");
}

// The value after "<field>: " on a line of `idlefleet admin ...` output.
std::string field_of(const std::string& out, const std::string& field) {
  std::istringstream in(out);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(field + ": ", 0) == 0) return line.substr(field.size() + 2);
  }
  return "";
}

// nats-server and one coordinator over a fresh directory.
class CoordinatorUnderTest : public ::testing::Test {
 protected:
  void start_nats(const std::string& name) {
    dir_ = fs::path(::testing::TempDir()) / (name + "_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "data");
    transport::NatsServerOptions n;
    n.log_path = (dir_ / "nats.log").string();
    auto nats = transport::NatsServer::start(n);
    ASSERT_TRUE(nats.has_value()) << nats.error().to_string();
    nats_ = std::move(*nats);
  }

  // The coordinator with `toml` as its config file (data_dir is added).
  void start_coordinator(const std::string& toml) {
    std::ofstream(dir_ / "coordinator.toml") << "data_dir = \"" << (dir_ / "data").string() << "\"\n" << toml;
    auto port = transport::free_loopback_port();
    ASSERT_TRUE(port.has_value());
    port_ = *port;
    base_url_ = "http://127.0.0.1:" + std::to_string(port_);
    transport::ProcessOptions co;
    co.program = IDLEFLEET_BINARY;
    co.args = {"coordinator", "--config", (dir_ / "coordinator.toml").string(), "--nats", nats_->url(),
               "--http-port", std::to_string(port_)};
    co.stdout_path = co.stderr_path = (dir_ / "coordinator.log").string();
    auto coordinator = transport::Process::spawn(co);
    ASSERT_TRUE(coordinator.has_value()) << coordinator.error().to_string();
    coordinator_ = std::make_unique<transport::Process>(std::move(*coordinator));
    ASSERT_TRUE(transport::wait_for_tcp("127.0.0.1", port_, kStartMsMax)) << log("coordinator.log");
    ASSERT_TRUE(eventually([&] { return testing::http_get(base_url_ + "/healthz").status == 200; }, kStartMsMax));
  }

  void TearDown() override {
    if (agent_) agent_->stop();
    if (coordinator_) coordinator_->stop();
    if (nats_) nats_->stop();
    if (!HasFailure() && !dir_.empty()) fs::remove_all(dir_);
  }

  std::string log(const std::string& name) { return log_tail(read_text_file(dir_ / name)); }

  json status() {
    const json j = json::parse(testing::http_get(base_url_ + "/v1/status").body, nullptr, false);
    return j.is_object() ? j : json::object();
  }

  fs::path dir_;
  uint16_t port_ = 0;
  std::string base_url_;
  std::unique_ptr<transport::NatsServer> nats_;
  std::unique_ptr<transport::Process> coordinator_, agent_;
};

// ---- The server's routes ------------------------------------------------------------

class DashboardServer : public CoordinatorUnderTest {
 protected:
  // One synthetic model for every test of the suite (the coordinator needs one).
  static void SetUpTestSuite() {
    model_ = fs::path(::testing::TempDir()) / ("dashboard_model_" + std::to_string(::getpid()) + ".gguf");
    if (!fs::exists(model_)) {
      const std::string out = cli("model synth --shape tiny110m --type q4_0 -o " + shell_quote(model_.string()));
      ASSERT_TRUE(fs::exists(model_)) << out;
    }
  }
  static void TearDownTestSuite() { fs::remove(model_); }

  void start(const std::string& extra_toml = "") {
    ASSERT_TRUE(fs::exists(model_));
    ASSERT_NO_FATAL_FAILURE(start_nats("dashboard_server"));
    ASSERT_NO_FATAL_FAILURE(start_coordinator(extra_toml + "[[models]]\nid = \"synth\"\npath = \"" +
                                              model_.string() + "\"\n"));
  }

  // Opens an event stream by hand; returns what arrived up to the first event's end.
  std::string open_stream(testing::RawConnection* c, const std::string& extra_headers = "") {
    EXPECT_TRUE(c->connect(port_));
    c->send("GET /v1/dashboard/events HTTP/1.1\r\nHost: 127.0.0.1\r\n" + extra_headers + "\r\n");
    const std::string& head = c->read_until("\r\n\r\n", 5000);
    if (head.rfind("HTTP/1.1 200", 0) != 0) return head;  // a refusal: its body is JSON, not events
    return c->read_until("\n\n", 5000);
  }

  static fs::path model_;
};

fs::path DashboardServer::model_;

TEST_F(DashboardServer, PagesAssetsAndTheirHeaders) {
  ASSERT_NO_FATAL_FAILURE(start());
  for (const std::string path : {"/", "/owner", "/reports", "/assets/app.css", "/assets/operator.js"}) {
    auto r = testing::http_get(base_url_ + path);
    EXPECT_EQ(r.status, 200) << path;
    ASSERT_NE(r.header("content-security-policy"), nullptr) << path;
    EXPECT_EQ(r.header("content-security-policy")->rfind("default-src 'self'", 0), 0u);
    ASSERT_NE(r.header("x-content-type-options"), nullptr);
    EXPECT_EQ(*r.header("x-content-type-options"), "nosniff");
  }
  EXPECT_EQ(*testing::http_get(base_url_ + "/").header("content-type"), "text/html; charset=utf-8");
  EXPECT_EQ(*testing::http_get(base_url_ + "/assets/app.css").header("content-type"), "text/css; charset=utf-8");
  EXPECT_EQ(*testing::http_get(base_url_ + "/assets/owner.js").header("content-type"), "text/javascript; charset=utf-8");
  // HEAD: the headers without the body.
  const std::string head = testing::raw_exchange(port_, "HEAD /owner HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(head.rfind("HTTP/1.1 200", 0), 0u) << head;
  EXPECT_EQ(head.find("<!doctype"), std::string::npos) << head;
  // Unknown assets, other methods, garbage.
  EXPECT_EQ(testing::http_get(base_url_ + "/assets/nope.js").status, 404);
  EXPECT_EQ(testing::http_get(base_url_ + "/assets/..%2f..%2fserver.cc").status, 404);
  EXPECT_EQ(testing::http_get(base_url_ + "/index.html").status, 404);
  EXPECT_EQ(testing::http_post(base_url_ + "/", "x").status, 405);
  EXPECT_EQ(testing::http_request("DELETE", base_url_ + "/assets/app.css", "").status, 405);
  EXPECT_EQ(testing::http_get(base_url_ + "/?%00%ff<script>=&&&==" + std::string(2000, 'q')).status, 200);
  EXPECT_EQ(testing::http_get(base_url_ + "/owner", {"Authorization: Bearer <script>alert(1)</script>",
                                                     "X-Junk: " + std::string(4000, 'j'), "Cookie: ;;;=;"})
                .status,
            200);
  // Control characters in a header are the HTTP server's 400, never the page.
  const std::string control =
      testing::raw_exchange(port_, "GET / HTTP/1.1\r\nHost: x\r\nX-C: a\x01\x02b\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(control.rfind("HTTP/1.1 400", 0), 0u) << control.substr(0, 200);
  const std::string raw = testing::raw_exchange(
      port_, "GET /assets/app.css?\xff\xfe HTTP/1.1\r\nHost: x\r\nX-Bad: \xff\xfe\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(raw.rfind("HTTP/1.1 200", 0), 0u) << raw.substr(0, 200);
  EXPECT_EQ(testing::http_get(base_url_ + "/healthz").status, 200);
}

TEST_F(DashboardServer, TheEventStreamSendsSnapshotsAndIsBounded) {
  ASSERT_NO_FATAL_FAILURE(start());
  EXPECT_EQ(testing::http_post(base_url_ + "/v1/dashboard/events", "{}").status, 405);
  // At once, then about every second.
  testing::RawConnection first;
  const std::string got = open_stream(&first);
  ASSERT_EQ(got.rfind("HTTP/1.1 200", 0), 0u) << got;
  EXPECT_NE(got.find("text/event-stream"), std::string::npos) << got;
  EXPECT_NE(got.find("nosniff"), std::string::npos) << got;
  const size_t data = got.find("data: ");
  ASSERT_NE(data, std::string::npos) << got;
  const size_t end = got.find('\n', data);
  const json snapshot = json::parse(got.substr(data + 6, end - data - 6), nullptr, false);
  ASSERT_TRUE(snapshot.is_object()) << got;
  EXPECT_TRUE(snapshot.contains("history"));
  EXPECT_EQ(snapshot["models"][0]["id"], "synth");
  EXPECT_GT(snapshot.value("at_ms", int64_t{0}), 0);
  // Two more within about two seconds (reading for a while: the marker never comes).
  auto events = [&] {
    size_t n = 0;
    const std::string& r = first.received();
    for (size_t p = 0; (p = r.find("event: snapshot", p)) != std::string::npos; ++p) ++n;
    return n;
  };
  ASSERT_TRUE(eventually(
      [&] {
        first.read_until("\x01never", 200);
        return events() >= 3;
      },
      5000))
      << first.received().substr(0, 400);

  // The bound: kDashboardStreamsMax at once (the first counts), then 503.
  std::vector<std::unique_ptr<testing::RawConnection>> streams;
  for (size_t i = 1; i < coordinator::kDashboardStreamsMax; ++i) {
    streams.push_back(std::make_unique<testing::RawConnection>());
    const std::string r = open_stream(streams.back().get());
    ASSERT_EQ(r.rfind("HTTP/1.1 200", 0), 0u) << i << ": " << r.substr(0, 200);
  }
  // The operator can see them counted.
  EXPECT_TRUE(eventually(
      [&] {
        return testing::http_get(base_url_ + "/metrics").body.find("idlefleet_dashboard_streams " +
                                                                   std::to_string(coordinator::kDashboardStreamsMax)) !=
               std::string::npos;
      },
      5000, 100));
  auto over = testing::http_get(base_url_ + "/v1/dashboard/events");
  EXPECT_EQ(over.status, 503) << over.body;
  EXPECT_NE(over.body.find("too_many_streams"), std::string::npos) << over.body;
  // A client that goes frees its slot within a snapshot or two.
  streams.back()->close();
  streams.pop_back();
  std::unique_ptr<testing::RawConnection> again;
  ASSERT_TRUE(eventually(
      [&] {
        again = std::make_unique<testing::RawConnection>();
        return open_stream(again.get()).rfind("HTTP/1.1 200", 0) == 0;
      },
      5000, 250));
  // The coordinator stops with streams open, promptly.
  const int64_t t0 = testing::steady_now_ms();
  coordinator_->stop();
  EXPECT_LT(testing::steady_now_ms() - t0, 10000);
  EXPECT_TRUE(first.wait_closed(5000));
}

TEST_F(DashboardServer, WithAuthRequiredTheStreamNeedsAnAdminKey) {
  ASSERT_NO_FATAL_FAILURE(start("[auth]\nrequired = true\n"));
  const std::string data = shell_quote((dir_ / "data").string());
  const std::string client = field_of(cli("admin keys create --name client --data-dir " + data), "secret");
  const std::string admin = field_of(cli("admin keys create --name ops --scopes admin --data-dir " + data), "secret");
  ASSERT_FALSE(client.empty());
  ASSERT_FALSE(admin.empty());
  const std::string url = base_url_ + "/v1/dashboard/events";
  EXPECT_EQ(testing::http_get(url).status, 401);
  EXPECT_EQ(testing::http_get(url, {"Authorization: Bearer sk-idf-" + std::string(64, '0')}).status, 401);
  EXPECT_EQ(testing::http_get(url, {"Authorization: \xff\xfe garbage"}).status, 401);
  // Keys are read within kKeysSyncMs; "*" is the client API without admin.
  long client_status = 0;
  ASSERT_TRUE(eventually(
      [&] {
        client_status = testing::http_get(url, {"Authorization: Bearer " + client}).status;
        return client_status != 401;
      },
      5000, 100));
  EXPECT_EQ(client_status, 403);
  // The admin key may be read a sync after the client's (it was made after it).
  std::unique_ptr<testing::RawConnection> ops;
  std::string got;
  EXPECT_TRUE(eventually(
      [&] {
        ops = std::make_unique<testing::RawConnection>();
        got = open_stream(ops.get(), "Authorization: Bearer " + admin + "\r\n");
        return got.rfind("HTTP/1.1 200", 0) == 0;
      },
      5000, 100))
      << got.substr(0, 300);
  EXPECT_NE(got.find("event: snapshot"), std::string::npos);
  // The pages themselves are public: the key is entered on them.
  EXPECT_EQ(testing::http_get(base_url_ + "/").status, 200);
}

// ---- The pages in Chromium, on the live fleet ----------------------------------------------

class DashboardBrowser : public CoordinatorUnderTest {
 protected:
  void SetUp() override {
    IDLEFLEET_REQUIRE_SHARED_MODEL("the dashboard browser test");
    for (const char* tool : {"node", "npm"}) {
      ASSERT_TRUE(transport::find_program(tool).has_value())
          << tool << " is not on PATH: scripts/bootstrap installs Node.js and npm";
    }
    ASSERT_TRUE(fs::exists(kChromium)) << kChromium << " is missing: scripts/bootstrap installs Debian's chromium";
    ASSERT_NO_FATAL_FAILURE(start_nats("dashboard_browser"));
    const fs::path model = dir_ / "stories260K.gguf";
    ASSERT_TRUE(testing::convert_shared_model(model));
    // Two more catalog entries (the same file) named like markup.
    std::string toml;
    for (const std::string& id : {std::string("stories260K"), kImgModel, kScriptModel}) {
      toml += "[[models]]\nid = " + json(id).dump() + "\npath = " + json(model.string()).dump() + "\n";
    }
    ASSERT_NO_FATAL_FAILURE(start_coordinator(toml));

    const std::string data = shell_quote((dir_ / "data").string());
    const std::string owner = cli("admin owners create --name alice --data-dir " + data);
    owner_token_ = field_of(owner, "token");
    ASSERT_FALSE(owner_token_.empty()) << owner;
    auto code = testing::http_post(base_url_ + "/v1/owner/enrolment_codes", "", {"Authorization: Bearer " + owner_token_});
    ASSERT_EQ(code.status, 200) << code.body;
    const std::string enrolled =
        cli("agent enroll --coordinator " + base_url_ + " --code " +
            shell_quote(json::parse(code.body).value("code", "")) + " --vehicle-id car-01 --cache-dir " +
            shell_quote((dir_ / "cache").string()));
    ASSERT_NE(enrolled.find("rc=0"), std::string::npos) << enrolled;

    transport::ProcessOptions a;
    a.program = IDLEFLEET_BINARY;
    // Evening at home on a day compressed to two hours: the cars are parked,
    // most plugged in, and stay so for the test's few simulated minutes.
    a.args = {"agent", "--vehicles", "3", "--nats", nats_->url(), "--coordinator", base_url_, "--start", "20:00",
              "--day-minutes", "120", "--cache-dir", (dir_ / "cache").string(), "--target-soc", "50"};
    a.stdout_path = a.stderr_path = (dir_ / "agent.log").string();
    auto agent = transport::Process::spawn(a);
    ASSERT_TRUE(agent.has_value()) << agent.error().to_string();
    agent_ = std::make_unique<transport::Process>(std::move(*agent));

    // A small simulator run for the report viewer.
    const std::string sim = cli("sim --scenario " + shell_quote(std::string(IDLEFLEET_SOURCE_DIR) + "/scenarios/us-suburban.toml") +
                                " --vehicles 2000 --days 1 --threads 1 --no-sensitivity --quiet --out " +
                                shell_quote((dir_ / "sim").string()));
    ASSERT_TRUE(fs::exists(dir_ / "sim" / "summary.json")) << sim;
  }

  std::string owner_token_;
};

TEST_F(DashboardBrowser, EveryViewWorksInChromium) {
  const std::string installed = testing::npm_ci_if_needed(kWebTestDir, dir_ / "npm.log");
  ASSERT_EQ(installed, "");
  ASSERT_TRUE(eventually([&] { return status().value("/vehicles/online"_json_pointer, 0) == 3; }, kFleetReadyMsMax))
      << status().dump() << log("agent.log");
  ASSERT_TRUE(eventually([&] { return status().value("/vehicles/available"_json_pointer, 0) >= 2; }, kFleetReadyMsMax))
      << status().dump() << log("agent.log");

  const fs::path shots = fs::path(IDLEFLEET_BINARY).parent_path().parent_path() / "dashboard";
  fs::create_directories(shots);
  EXPECT_EQ(testing::run_node_tests(
                kWebTestDir / "dashboard.mjs",
                {"DASHBOARD_URL=" + base_url_, "OWNER_TOKEN=" + owner_token_, "OWNER_VEHICLE=car-01",
                 "MODEL=stories260K", "IMG_MODEL=" + kImgModel, "SCRIPT_MODEL=" + kScriptModel,
                 "SIM_DIR=" + (dir_ / "sim").string(), "SCREENSHOT_DIR=" + shots.string(),
                 "CHROMIUM=" + kChromium.string(), "NO_COLOR=1"},
                dir_ / "node.log", kNodeTestMsMax),
            "")
      << "--- coordinator.log ---\n"
      << log("coordinator.log");

  // The policy set on the owner page reached the car, which keeps it.
  const json policy = json::parse(read_text_file(dir_ / "cache" / "keys" / "car-01.policy.json"), nullptr, false);
  ASSERT_TRUE(policy.is_object()) << log("agent.log");
  EXPECT_EQ(policy.value("/policy/soc_floor_pct"_json_pointer, policy.value("soc_floor_pct", 0.0)), 100.0)
      << policy.dump();
  for (const char* page : {"operator", "owner", "reports"}) {
    for (const char* size : {"desktop", "phone"}) {
      const fs::path shot = shots / (std::string(page) + "-" + size + ".png");
      EXPECT_TRUE(fs::exists(shot) && fs::file_size(shot) > 1000) << shot;
    }
  }
  std::fprintf(stderr, "%s", log("node.log").c_str());
}

}  // namespace
}  // namespace idlefleet::dashboard_test
