#include "coordinator/dashboard.h"

#include <algorithm>
#include <cmath>
#include <queue>
#include <set>

#include <nlohmann/json.hpp>

#include "common/check.h"
#include "coordinator/web_assets.h"

namespace idlefleet::coordinator {

using nlohmann::json;
using transport::HttpHeader;
using transport::HttpRequest;
using transport::HttpResponse;

namespace {

// Only the coordinator's own files: no inline script or style, no other
// origin, no framing. connect-src 'self' covers the API calls and the stream.
constexpr std::string_view kContentSecurityPolicy =
    "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; object-src 'none'";

constexpr std::string_view kAssetsPrefix = "/assets/";
// Asset paths longer than this cannot be ours (and are not searched for).
constexpr size_t kAssetPathBytesMax = 256;

const WebAsset* find_asset(std::string_view path) {
  const std::span<const WebAsset> all = web_assets();
  const auto it = std::lower_bound(all.begin(), all.end(), path,
                                   [](const WebAsset& a, std::string_view p) { return a.path < p; });
  return it != all.end() && it->path == path ? &*it : nullptr;
}

// The file behind a page path: "/" -> "/index.html", "/owner" -> "/owner.html".
std::string_view file_of(std::string_view path) {
  if (path == "/") return "/index.html";
  if (path == "/owner") return "/owner.html";
  if (path == "/reports") return "/reports.html";
  return path;
}

HttpResponse plain(int status, std::string body) {
  HttpResponse r;
  r.status = status;
  r.content_type = "text/plain; charset=utf-8";
  r.body = std::move(body);
  r.headers = dashboard_security_headers();
  return r;
}

std::string cut(const std::string& s) {
  return s.size() <= kDashboardNameBytesMax ? s : s.substr(0, kDashboardNameBytesMax);
}

}  // namespace

bool is_dashboard_path(std::string_view path) {
  return path == "/" || path == "/owner" || path == "/reports" || path.starts_with(kAssetsPrefix);
}

std::vector<HttpHeader> dashboard_security_headers() {
  return {{"Content-Security-Policy", std::string(kContentSecurityPolicy)},
          {"X-Content-Type-Options", "nosniff"},
          {"Referrer-Policy", "no-referrer"}};
}

HttpResponse dashboard_response(const HttpRequest& r) {
  DCHECK(is_dashboard_path(r.path));
  if (r.method != "GET" && r.method != "HEAD") {
    HttpResponse resp = plain(405, "method " + r.method.substr(0, 16) + " not allowed: the dashboard is GET and HEAD only\n");
    resp.headers.push_back({"Allow", "GET, HEAD"});
    return resp;
  }
  const WebAsset* asset = nullptr;
  if (r.path.size() <= kAssetPathBytesMax) {
    const std::string_view file = file_of(r.path);
    // Only the pages by their names and files under assets/: web/index.html
    // itself is not a second address of "/".
    if (file != r.path || r.path.starts_with(kAssetsPrefix)) asset = find_asset(file);
  }
  if (asset == nullptr) return plain(404, "no such page or asset\n");
  HttpResponse resp;
  resp.content_type = std::string(asset->content_type);
  resp.body = std::string(asset->bytes);
  resp.headers = dashboard_security_headers();
  // Pages are small and change with the binary: always revalidated, so that
  // an upgraded coordinator is seen at once.
  resp.headers.push_back({"Cache-Control", "no-cache"});
  return resp;
}

FleetNow gather_fleet(const core::CoordinatorMachine& machine, const std::vector<std::string>& served_models,
                      double tokens_per_second, std::map<std::string, double>* full_load_w) {
  FleetNow f;
  for (std::string_view s : kDashboardStates) f.by_state[std::string(s)] = 0;
  f.vehicles_known = machine.vehicles().size();
  f.tokens_per_second = tokens_per_second;
  f.queue_depth = machine.queue_depth();
  const core::CoordinatorCounters& k = machine.counters();
  f.preemptions_total = k.preemptions;
  f.jobs_done_total = k.jobs_done;
  f.tokens_total = k.tokens_relayed;

  // Models: the catalog's, then those vehicles report that it does not serve.
  std::map<std::string, size_t> model_index;
  for (const std::string& id : served_models) {
    if (f.models.size() >= kDashboardModelsMax || model_index.count(id) != 0) continue;
    model_index[id] = f.models.size();
    f.models.push_back({id, true, {}, 0});
  }

  double known_w = 0.0;
  size_t known_n = 0, workable_unknown = 0;
  for (const auto& [id, v] : machine.vehicles()) {
    const bool up = v.online && v.state.has_value();
    const std::string state = up ? v.state->state : "offline";
    auto st = f.by_state.find(state);
    if (st != f.by_state.end()) ++st->second;  // a state name from the future is counted only as online
    if (up) {
      ++f.vehicles_online;
      if (v.state->power_w > 0.0) {
        (*full_load_w)[id] = v.state->power_w;
      } else if (v.hello.power_w > 0.0 && full_load_w->count(id) == 0) {
        (*full_load_w)[id] = v.hello.power_w;  // declared in its hello, not yet seen serving
      }
      const bool serving = state == "serving" || !v.job_id.empty();
      if (serving) f.compute_in_use_kw += v.state->power_w / 1000.0;
      if (v.state->eligible || serving) {
        auto w = full_load_w->find(id);
        if (w != full_load_w->end()) {
          f.compute_online_kw += w->second / 1000.0;
        } else {
          ++workable_unknown;
        }
      }
    }
    if (f.vehicles.size() < kDashboardVehiclesMax) {
      FleetNow::Vehicle out;
      out.id = id;
      out.state = state;
      out.eligible = up && v.state->eligible;
      out.soc_pct = v.state ? v.state->soc_pct : 0.0;
      out.job_id = v.job_id;
      if (up && !v.state->reasons.empty()) out.reason = cut(v.state->reasons.front());
      f.vehicles.push_back(std::move(out));
    }
    for (const std::string& m : v.hello.models_cached) {
      auto it = model_index.find(m);
      if (it == model_index.end()) {
        if (f.models.size() >= kDashboardModelsMax) continue;
        it = model_index.emplace(m, f.models.size()).first;
        f.models.push_back({cut(m), false, {}, 0});
      }
      FleetNow::Model& model = f.models[it->second];
      ++model.cached_on_total;
      if (model.cached_on.size() < kDashboardModelVehiclesMax) model.cached_on.push_back(id);
    }
  }
  // Vehicles that went away are forgotten, so the map stays as large as the fleet.
  for (auto it = full_load_w->begin(); it != full_load_w->end();) {
    it = machine.vehicles().count(it->first) == 0 ? full_load_w->erase(it) : std::next(it);
  }
  for (const auto& [id, w] : *full_load_w) {
    known_w += w;
    ++known_n;
  }
  if (known_n > 0) f.compute_online_kw += static_cast<double>(workable_unknown) * known_w / known_n / 1000.0;

  // The most recently submitted jobs: a bounded heap over the jobs in memory.
  using Pick = std::pair<uint64_t, const std::pair<const std::string, core::JobEntry>*>;
  std::priority_queue<Pick, std::vector<Pick>, std::greater<>> newest;
  for (const auto& entry : machine.jobs()) {
    if (entry.second.job.current() != nullptr) ++f.jobs_running;
    newest.push({entry.second.sequence, &entry});
    if (newest.size() > kDashboardJobsMax) newest.pop();
  }
  while (!newest.empty()) {
    const auto& [id, e] = *newest.top().second;
    newest.pop();
    FleetNow::Job j;
    j.id = id;
    j.model = cut(e.spec.model_id);
    j.kind = core::work_kind_name(e.spec.kind);
    j.state = core::job_state_name(e.job.state());
    j.finish_reason = cut(e.job.finish_reason());
    j.created_at = e.job.created_at();
    j.tokens = e.job.produced().size();
    j.check = !e.check_of.empty();
    const auto& attempts = e.job.attempts();
    j.attempts_total = static_cast<uint32_t>(attempts.size());
    const size_t first = attempts.size() > kDashboardAttemptsMax ? attempts.size() - kDashboardAttemptsMax : 0;
    j.attempts.assign(attempts.begin() + static_cast<std::ptrdiff_t>(first), attempts.end());
    f.jobs.push_back(std::move(j));
  }
  std::reverse(f.jobs.begin(), f.jobs.end());
  return f;
}

void DashboardStats::job_done(int64_t latency_ms) {
  latencies_.push_back(std::max<int64_t>(0, latency_ms));
  while (latencies_.size() > kDashboardLatenciesMax) latencies_.pop_front();
}

void DashboardStats::sample(const FleetNow& fleet, core::TimeMs now) {
  if (!samples_.empty() && now - samples_.back().at < kDashboardSampleMs) return;
  Sample s;
  s.at = now;
  s.tokens_per_second = fleet.tokens_per_second;
  s.compute_online_kw = fleet.compute_online_kw;
  s.compute_in_use_kw = fleet.compute_in_use_kw;
  s.queue_depth = fleet.queue_depth;
  auto count = [&](const char* state) {
    auto it = fleet.by_state.find(state);
    return it == fleet.by_state.end() ? size_t{0} : it->second;
  };
  s.serving = count("serving");
  s.eligible = count("eligible");
  s.online = fleet.vehicles_online;
  s.preemptions_total = fleet.preemptions_total;
  samples_.push_back(s);
  while (samples_.size() > kDashboardSamplesMax || (!samples_.empty() && now - samples_.front().at > kDashboardWindowMs)) {
    samples_.pop_front();
  }
}

int64_t DashboardStats::latency_percentile_ms(double p) const {
  if (latencies_.empty() || !(p > 0.0)) return 0;
  std::vector<int64_t> sorted(latencies_.begin(), latencies_.end());
  std::sort(sorted.begin(), sorted.end());
  const double rank = std::ceil(std::min(p, 100.0) / 100.0 * static_cast<double>(sorted.size()));
  const size_t index = static_cast<size_t>(std::max(1.0, rank)) - 1;
  return sorted[std::min(index, sorted.size() - 1)];
}

uint64_t DashboardStats::preemptions_in_window(uint64_t preemptions_total, core::TimeMs now) const {
  for (const Sample& s : samples_) {
    if (now - s.at <= kDashboardWindowMs) {
      return preemptions_total >= s.preemptions_total ? preemptions_total - s.preemptions_total : 0;
    }
  }
  return 0;
}

std::string DashboardStats::snapshot_json(const FleetNow& f, core::TimeMs now) const {
  json by_state = json::object();
  for (std::string_view s : kDashboardStates) {
    auto it = f.by_state.find(std::string(s));
    by_state[std::string(s)] = it == f.by_state.end() ? 0 : it->second;
  }
  json vehicles = json::array();
  for (const FleetNow::Vehicle& v : f.vehicles) {
    vehicles.push_back({{"id", v.id},
                        {"state", v.state},
                        {"eligible", v.eligible},
                        {"soc_pct", v.soc_pct},
                        {"job_id", v.job_id},
                        {"reason", v.reason}});
  }
  json jobs = json::array();
  for (const FleetNow::Job& j : f.jobs) {
    json attempts = json::array();
    for (const core::Attempt& a : j.attempts) {
      attempts.push_back({{"number", a.number},
                          {"vehicle_id", a.vehicle_id},
                          {"end", core::attempt_end_name(a.end)},
                          {"tokens", a.tokens_appended},
                          {"assigned_at_ms", a.assigned_at},
                          {"ended_at_ms", a.ended_at}});
    }
    jobs.push_back({{"id", j.id},
                    {"model", j.model},
                    {"kind", j.kind},
                    {"state", j.state},
                    {"finish_reason", j.finish_reason},
                    {"created_at_ms", j.created_at},
                    {"tokens", j.tokens},
                    {"check", j.check},
                    {"attempts_total", j.attempts_total},
                    {"attempts", attempts}});
  }
  json models = json::array();
  for (const FleetNow::Model& m : f.models) {
    models.push_back(
        {{"id", m.id}, {"served", m.served}, {"cached_on", m.cached_on}, {"cached_on_total", m.cached_on_total}});
  }
  // The history as columns of one row per sample, oldest first: an hour of
  // samples stays a few kilobytes a second per client.
  json rows = json::array();
  for (const Sample& s : samples_) {
    rows.push_back({s.at, s.tokens_per_second, s.compute_online_kw, s.compute_in_use_kw, s.queue_depth, s.serving,
                    s.eligible, s.online});
  }
  const core::TimeMs window_start = samples_.empty() ? now : std::max(samples_.front().at, now - kDashboardWindowMs);
  const json doc = {
      {"at_ms", now},
      {"vehicles",
       {{"known", f.vehicles_known}, {"online", f.vehicles_online}, {"by_state", by_state}, {"list", vehicles},
        {"listed_max", kDashboardVehiclesMax}}},
      {"compute_kw", {{"online", f.compute_online_kw}, {"in_use", f.compute_in_use_kw}}},
      {"tokens_per_second", f.tokens_per_second},
      {"tokens_total", f.tokens_total},
      {"queue_depth", f.queue_depth},
      {"jobs_running", f.jobs_running},
      {"jobs_done_total", f.jobs_done_total},
      {"latency_ms",
       {{"p50", latency_percentile_ms(50.0)}, {"p99", latency_percentile_ms(99.0)}, {"jobs", latencies_.size()}}},
      {"preemptions",
       {{"total", f.preemptions_total},
        {"last_hour", preemptions_in_window(f.preemptions_total, now)},
        {"window_s", (now - window_start) / 1000}}},
      {"history",
       {{"sample_s", kDashboardSampleMs / 1000},
        {"columns",
         {"at_ms", "tokens_per_second", "compute_online_kw", "compute_in_use_kw", "queue_depth", "serving", "eligible",
          "online"}},
        {"rows", rows}}},
      {"jobs", jobs},
      {"models", models}};
  // Names come from vehicles: bytes that are not UTF-8 are replaced, never a throw.
  return doc.dump(-1, ' ', false, json::error_handler_t::replace);
}

bool StreamSlots::try_acquire() {
  size_t n = in_use_.load();
  while (n < max_) {
    if (in_use_.compare_exchange_weak(n, n + 1)) return true;
  }
  return false;
}

void StreamSlots::release() {
  const size_t before = in_use_.fetch_sub(1);
  CHECK(before > 0);
}

std::string sse_event(std::string_view name, std::string_view data) {
  DCHECK(data.find('\n') == std::string_view::npos);
  std::string out;
  out.reserve(name.size() + data.size() + 16);
  out.append("event: ").append(name).append("\ndata: ").append(data).append("\n\n");
  return out;
}

}  // namespace idlefleet::coordinator
