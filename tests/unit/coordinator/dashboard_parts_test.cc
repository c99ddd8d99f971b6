// The dashboard's pieces that need no server: its pages and assets as compiled
// in (content types, security headers, 404s, methods, garbage paths, no
// inline script anywhere), the stream bound, the time-dependent figures
// (percentiles, the hour's ring, preemptions in the window), and the
// snapshot's JSON from a real coordinator machine. (The server's routes and
// the browser are tests/integration/dashboard_test.cc.)
#include "coordinator/dashboard.h"

#include <gtest/gtest.h>

#include <regex>
#include <set>
#include <thread>

#include <nlohmann/json.hpp>

#include "coordinator/web_assets.h"

namespace idlefleet::coordinator::dashboard_parts_test {
namespace {

using nlohmann::json;
using namespace std::string_literals;
using transport::HttpRequest;
using transport::HttpResponse;

constexpr core::TimeMs kT0 = 1'700'000'000'000;

HttpResponse get(const std::string& path, const std::string& method = "GET") {
  HttpRequest r;
  r.method = method;
  r.path = path;
  r.target = path;
  return dashboard_response(r);
}

std::string header(const HttpResponse& r, const std::string& name) {
  for (const auto& h : r.headers) {
    if (h.name == name) return h.value;
  }
  return "";
}

TEST(DashboardPages, PagesAndAssetsAreServedWithTheirTypesAndSecurityHeaders) {
  const std::map<std::string, std::string> want = {{"/", "text/html; charset=utf-8"},
                                                   {"/owner", "text/html; charset=utf-8"},
                                                   {"/reports", "text/html; charset=utf-8"},
                                                   {"/assets/app.css", "text/css; charset=utf-8"},
                                                   {"/assets/common.js", "text/javascript; charset=utf-8"},
                                                   {"/assets/operator.js", "text/javascript; charset=utf-8"},
                                                   {"/assets/owner.js", "text/javascript; charset=utf-8"},
                                                   {"/assets/reports.js", "text/javascript; charset=utf-8"}};
  for (const auto& [path, type] : want) {
    ASSERT_TRUE(is_dashboard_path(path)) << path;
    for (const char* method : {"GET", "HEAD"}) {
      const HttpResponse r = get(path, method);
      EXPECT_EQ(r.status, 200) << method << " " << path;
      EXPECT_EQ(r.content_type, type) << path;
      EXPECT_FALSE(r.body.empty()) << path;  // the server drops the body of a HEAD reply
      EXPECT_EQ(header(r, "X-Content-Type-Options"), "nosniff") << path;
      const std::string csp = header(r, "Content-Security-Policy");
      EXPECT_EQ(csp.rfind("default-src 'self'", 0), 0u) << csp;
      EXPECT_EQ(csp.find("unsafe"), std::string::npos) << csp;
    }
  }
  EXPECT_NE(get("/").body.find("/assets/operator.js"), std::string::npos);
  EXPECT_NE(get("/owner").body.find("/assets/owner.js"), std::string::npos);
}

TEST(DashboardPages, UnknownAssetsAreNotFoundAndOtherMethodsAreRefused) {
  for (const std::string& path : std::vector<std::string>{"/assets/", "/assets/nope.js", "/assets/../index.html", "/assets/%2e%2e/index.html", "/assets/app.css/",
        "/assets/APP.CSS", "/assets/app.css\0x"s, "/assets/" + std::string(100000, 'a'), "/assets/\xff\xfe"}) {
    ASSERT_TRUE(is_dashboard_path(path));
    const HttpResponse r = get(path);
    EXPECT_EQ(r.status, 404) << path.substr(0, 40);
    EXPECT_EQ(header(r, "X-Content-Type-Options"), "nosniff");
    EXPECT_LT(r.body.size(), 200u);  // never echoes the path
  }
  // The files are reachable only by their pages' names and under /assets/.
  for (const char* other : {"/index.html", "/owner.html", "/owner/", "/reports/x", "/ownerx", "//", "", "/v1/status"}) {
    EXPECT_FALSE(is_dashboard_path(other)) << other;
  }
  for (const char* method : {"POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "get", "BREW"}) {
    const HttpResponse r = get("/", method);
    EXPECT_EQ(r.status, 405) << method;
    EXPECT_EQ(header(r, "Allow"), "GET, HEAD");
  }
  EXPECT_EQ(get("/assets/nope.js", "POST").status, 405);
}

// The pages must work under default-src 'self': no inline script or style,
// no event-handler attributes, nothing from another origin; and every asset
// a page names is one that is served.
TEST(DashboardPages, NoInlineScriptAndEveryReferenceResolves) {
  size_t html = 0;
  const std::regex src(R"re((?:src|href)="([^"]*)")re");
  const std::regex import_from(R"re(from '([^']*)')re");
  for (const WebAsset& a : web_assets()) {
    std::string body(a.bytes);
    // The SVG namespace is a name, not a place anything is fetched from.
    for (size_t at; (at = body.find("http://www.w3.org/2000/svg")) != std::string::npos;) body.erase(at, 26);
    EXPECT_EQ(body.find("http://"), std::string::npos) << a.path;
    EXPECT_EQ(body.find("https://"), std::string::npos) << a.path;
    EXPECT_EQ(body.find("innerHTML"), std::string::npos) << a.path << ": text goes in with textContent";
    EXPECT_EQ(body.find("outerHTML"), std::string::npos) << a.path;
    EXPECT_EQ(body.find("insertAdjacentHTML"), std::string::npos) << a.path;
    EXPECT_EQ(body.find("document.write"), std::string::npos) << a.path;
    EXPECT_EQ(body.find("eval("), std::string::npos) << a.path;
    if (a.content_type.starts_with("text/html")) {
      ++html;
      EXPECT_FALSE(std::regex_search(body, std::regex(R"(<script(?![^>]*\ssrc=)[^>]*>)"))) << a.path << ": inline script";
      EXPECT_FALSE(std::regex_search(body, std::regex(R"(\son[a-z]+\s*=)", std::regex::icase))) << a.path;
      EXPECT_FALSE(std::regex_search(body, std::regex(R"(\sstyle\s*=)"))) << a.path;
      EXPECT_EQ(body.find("<style"), std::string::npos) << a.path;
    }
    for (const std::regex& re : {src, import_from}) {
      for (auto it = std::sregex_iterator(body.begin(), body.end(), re); it != std::sregex_iterator(); ++it) {
        const std::string ref = (*it)[1];
        if (ref.empty() || ref[0] != '/') continue;
        EXPECT_EQ(get(ref).status, 200) << a.path << " names " << ref;
      }
    }
  }
  EXPECT_EQ(html, 3u);
}

TEST(DashboardStreams, SlotsAreBoundedAcrossThreads) {
  StreamSlots slots(kDashboardStreamsMax);
  std::atomic<size_t> taken{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 100; ++i) taken += slots.try_acquire() ? 1 : 0;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(taken.load(), kDashboardStreamsMax);
  EXPECT_EQ(slots.in_use(), kDashboardStreamsMax);
  EXPECT_FALSE(slots.try_acquire());
  slots.release();
  EXPECT_TRUE(slots.try_acquire());
  EXPECT_FALSE(slots.try_acquire());
}

TEST(DashboardStreams, EventsAreFramed) {
  EXPECT_EQ(sse_event("snapshot", "{\"a\":1}"), "event: snapshot\ndata: {\"a\":1}\n\n");
}

TEST(DashboardStats, PercentilesAreNearestRankOverTheRecentJobs) {
  DashboardStats s;
  EXPECT_EQ(s.latency_percentile_ms(50), 0);
  for (int i = 1; i <= 100; ++i) s.job_done(i * 10);
  EXPECT_EQ(s.latency_percentile_ms(50), 500);
  EXPECT_EQ(s.latency_percentile_ms(99), 990);
  EXPECT_EQ(s.latency_percentile_ms(100), 1000);
  EXPECT_EQ(s.latency_percentile_ms(0), 0);
  s.job_done(-5);  // a clock step back is 0, not a negative latency
  EXPECT_EQ(s.latency_percentile_ms(0.5), 0);
  for (size_t i = 0; i < 3 * kDashboardLatenciesMax; ++i) s.job_done(7);
  EXPECT_EQ(s.latencies(), kDashboardLatenciesMax);
  EXPECT_EQ(s.latency_percentile_ms(99), 7);  // only the recent ones count
}

TEST(DashboardStats, TheHistoryHoldsAnHourOfTenSecondSamples) {
  DashboardStats s;
  FleetNow f;
  core::TimeMs now = kT0;
  // Two hours at one call a second: a sample every 10 s, an hour kept.
  for (int i = 0; i < 7200; ++i, now += 1000) {
    f.preemptions_total = static_cast<uint64_t>(i / 60);  // one a minute
    s.sample(f, now);
  }
  EXPECT_EQ(s.samples(), kDashboardSamplesMax);
  const uint64_t in_hour = s.preemptions_in_window(f.preemptions_total, now);
  EXPECT_GE(in_hour, 59u);
  EXPECT_LE(in_hour, 60u);
  // The counter never runs backwards, but a restart's would not underflow.
  EXPECT_EQ(s.preemptions_in_window(0, now), 0u);
  const json doc = json::parse(s.snapshot_json(f, now));
  EXPECT_EQ(doc["history"]["rows"].size(), kDashboardSamplesMax);
  EXPECT_EQ(doc["history"]["sample_s"], 10);
  const json& rows = doc["history"]["rows"];
  EXPECT_LE(now - rows[0][0].get<int64_t>(), kDashboardWindowMs);
  EXPECT_EQ(rows[1][0].get<int64_t>() - rows[0][0].get<int64_t>(), kDashboardSampleMs);
  EXPECT_EQ(doc["history"]["columns"].size(), rows[0].size());
}

core::HelloMessage hello(const std::string& id, std::vector<std::string> models) {
  core::HelloMessage h;
  h.vehicle_id = id;
  h.models_cached = std::move(models);
  h.memory_bytes = 8ull << 30;
  h.instance = "i-" + id;
  return h;
}

core::StateMessage state(const std::string& id, const std::string& name, bool eligible, core::TimeMs now) {
  core::StateMessage s;
  s.vehicle_id = id;
  s.state = name;
  s.eligible = eligible;
  s.soc_pct = 61;
  s.sent_at = now;
  if (!eligible) s.reasons = {"SoC 61% is at or below the floor 70%"};
  return s;
}

TEST(DashboardSnapshot, TheDocumentDescribesTheFleetTheMachineKnows) {
  core::CoordinatorCoreConfig config;
  config.models = {{"m", 1u << 20}};
  core::CoordinatorMachine machine(config);
  const std::string evil = "<img src=x onerror=alert(1)>";
  machine.handle(core::VehicleMessageEvent{"car-1", hello("car-1", {"m"})}, kT0);
  machine.handle(core::VehicleMessageEvent{"car-1", state("car-1", "eligible", true, kT0)}, kT0);
  machine.handle(core::VehicleMessageEvent{"car-2", hello("car-2", {"m", evil})}, kT0);
  machine.handle(core::VehicleMessageEvent{"car-2", state("car-2", "parked", false, kT0)}, kT0);
  machine.handle(core::VehicleMessageEvent{"car-3", hello("car-3", {})}, kT0);
  machine.handle(core::VehicleMessageEvent{"car-3", state("car-3", "driving", false, kT0)}, kT0);
  core::JobSpec spec;
  spec.model_id = "m";
  spec.prompt_ids = {1, 2, 3};
  spec.max_tokens = 4;
  machine.handle(core::SubmitJobEvent{"job-1", spec}, kT0 + 1);  // placed on car-1, the only eligible one

  std::map<std::string, double> full_load;
  FleetNow f = gather_fleet(machine, {"m", "unused"}, 12.5, &full_load);
  EXPECT_EQ(f.vehicles_known, 3u);
  EXPECT_EQ(f.vehicles_online, 3u);
  EXPECT_EQ(f.by_state["eligible"], 1u);
  EXPECT_EQ(f.by_state["parked"], 1u);
  EXPECT_EQ(f.by_state["driving"], 1u);
  EXPECT_EQ(f.by_state["offline"], 0u);
  ASSERT_EQ(f.jobs.size(), 1u);
  ASSERT_EQ(f.jobs[0].attempts.size(), 1u);
  EXPECT_EQ(f.jobs[0].attempts[0].vehicle_id, "car-1");
  EXPECT_EQ(f.jobs_running, 1u);
  EXPECT_DOUBLE_EQ(f.compute_online_kw, 0.0);  // no vehicle has said what it draws

  // A vehicle that declares its draw in its hello counts at it before serving
  // (car-1 is assigned, so workable; car-2 and car-3 cannot work now).
  core::HelloMessage with_power = hello("car-1", {"m"});
  with_power.power_w = 350;
  machine.handle(core::VehicleMessageEvent{"car-1", with_power}, kT0 + 1);
  f = gather_fleet(machine, {"m", "unused"}, 12.5, &full_load);
  EXPECT_DOUBLE_EQ(f.compute_online_kw, 0.35);
  EXPECT_DOUBLE_EQ(f.compute_in_use_kw, 0.0);  // nothing reported while serving yet

  // The vehicle reports its draw while serving: in use, and online at full load.
  core::StateMessage serving = state("car-1", "serving", true, kT0 + 2);
  serving.job_id = "job-1";
  serving.attempt = 1;
  serving.power_w = 400;
  machine.handle(core::VehicleMessageEvent{"car-1", serving}, kT0 + 2);
  f = gather_fleet(machine, {"m", "unused"}, 12.5, &full_load);
  EXPECT_DOUBLE_EQ(f.compute_in_use_kw, 0.4);
  EXPECT_DOUBLE_EQ(f.compute_online_kw, 0.4);
  EXPECT_EQ(full_load.at("car-1"), 400.0);

  DashboardStats stats;
  stats.job_done(250);
  stats.sample(f, kT0 + 2);
  const json doc = json::parse(stats.snapshot_json(f, kT0 + 2));
  for (const char* key : {"at_ms", "vehicles", "compute_kw", "tokens_per_second", "queue_depth", "jobs_running",
                          "latency_ms", "preemptions", "history", "jobs", "models"}) {
    EXPECT_TRUE(doc.contains(key)) << key;
  }
  for (std::string_view st : kDashboardStates) EXPECT_TRUE(doc["vehicles"]["by_state"].contains(std::string(st))) << st;
  EXPECT_EQ(doc["vehicles"]["by_state"]["serving"], 1);
  EXPECT_EQ(doc["tokens_per_second"], 12.5);
  EXPECT_EQ(doc["latency_ms"]["p50"], 250);
  EXPECT_EQ(doc["latency_ms"]["p99"], 250);
  EXPECT_EQ(doc["jobs"][0]["id"], "job-1");
  EXPECT_EQ(doc["jobs"][0]["attempts"][0]["vehicle_id"], "car-1");
  EXPECT_EQ(doc["jobs"][0]["attempts"][0]["end"], "live");
  // Served models first (even where no vehicle has them), then those only vehicles report.
  ASSERT_EQ(doc["models"].size(), 3u);
  EXPECT_EQ(doc["models"][0]["id"], "m");
  EXPECT_EQ(doc["models"][0]["cached_on"], json({"car-1", "car-2"}));
  EXPECT_EQ(doc["models"][1]["id"], "unused");
  EXPECT_EQ(doc["models"][1]["cached_on_total"], 0);
  EXPECT_EQ(doc["models"][2]["id"], evil);  // data, as sent: the page shows it as text
  EXPECT_EQ(doc["models"][2]["served"], false);
  const json& car2 = doc["vehicles"]["list"][1];
  EXPECT_EQ(car2["id"], "car-2");
  EXPECT_EQ(car2["reason"], "SoC 61% is at or below the floor 70%");
}

TEST(DashboardSnapshot, ListsAreBoundedAndBadBytesAreReplaced) {
  core::CoordinatorCoreConfig config;
  config.models = {{"m", 1u << 20}};
  core::CoordinatorMachine machine(config);
  std::vector<std::string> many;
  for (size_t i = 0; i < core::kModelsMax; ++i) many.push_back("model-" + std::to_string(i));
  many.front() = "bad-\xff\xfe-bytes";
  const size_t vehicles = kDashboardVehiclesMax + 5;
  for (size_t i = 0; i < vehicles; ++i) {
    const std::string id = "car-" + std::to_string(1000 + i);
    machine.handle(core::VehicleMessageEvent{id, hello(id, many)}, kT0);
    machine.handle(core::VehicleMessageEvent{id, state(id, "parked", false, kT0)}, kT0);
  }
  core::JobSpec spec;
  spec.model_id = "m";
  spec.prompt_ids = {1};
  spec.max_tokens = 4;
  for (size_t i = 0; i < 3 * kDashboardJobsMax; ++i) {
    machine.handle(core::SubmitJobEvent{"job-" + std::to_string(100 + i), spec}, kT0 + 1);
  }
  std::map<std::string, double> full_load;
  const FleetNow f = gather_fleet(machine, {"m"}, 0, &full_load);
  EXPECT_EQ(f.vehicles.size(), kDashboardVehiclesMax);
  EXPECT_EQ(f.models.size(), kDashboardModelsMax);
  for (const auto& m : f.models) {
    EXPECT_LE(m.cached_on.size(), kDashboardModelVehiclesMax);
    if (m.id != "m") {
      EXPECT_EQ(m.cached_on_total, vehicles) << m.id;
    }
  }
  ASSERT_EQ(f.jobs.size(), kDashboardJobsMax);
  EXPECT_EQ(f.jobs.front().id, "job-" + std::to_string(100 + 3 * kDashboardJobsMax - 1));  // newest first
  DashboardStats stats;
  const std::string text = stats.snapshot_json(f, kT0 + 2);
  EXPECT_FALSE(json::parse(text, nullptr, false).is_discarded());
}

}  // namespace
}  // namespace idlefleet::coordinator::dashboard_parts_test
