// The dashboard the coordinator serves (issue 7): its pages and assets, and
// the operator's live snapshot.
//
// Pages: "/" (the operator's view), "/owner" (an owner's vehicles, policy and
// statements), "/reports" (a simulator run's summary.json and timeseries.csv,
// read in the browser) and "/assets/..." (their scripts and styles), all from
// the files compiled in (coordinator/web_assets.h). Only GET and HEAD; an
// unknown asset is a 404. Every reply carries a Content-Security-Policy that
// allows only the coordinator's own scripts and styles (no inline script), and
// `X-Content-Type-Options: nosniff`.
//
// The snapshot (GET /v1/dashboard/events, server-sent events): the loop thread
// gathers what the coordinator machine knows of the fleet (FleetNow, by
// gather_fleet()) about once a second, and DashboardStats adds what only time
// tells: latency percentiles of recently finished jobs, a ring of 10-second
// samples covering the last hour, and preemptions in that hour. The JSON's
// shape is documented in docs/dashboard.md and checked by
// tests/unit/coordinator/dashboard_parts_test.cc (the server side:
// tests/integration/dashboard_test.cc).
//
// Thread-safety: the free functions are pure; DashboardStats belongs to one
// thread (the loop's); StreamSlots may be used from any thread.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "core/coordinator_machine.h"
#include "core/time.h"
#include "transport/http_server.h"

namespace idlefleet::coordinator {

// Operators watching at once (each stream costs a snapshot a second); beyond
// this, GET /v1/dashboard/events is answered 503.
inline constexpr size_t kDashboardStreamsMax = 16;
inline constexpr int64_t kDashboardSnapshotMs = 1000;  // a snapshot this often
inline constexpr int64_t kDashboardSampleMs = 10'000;  // one history sample this often
inline constexpr int64_t kDashboardWindowMs = 3600'000;  // the history and preemption window
inline constexpr size_t kDashboardSamplesMax = kDashboardWindowMs / kDashboardSampleMs;
inline constexpr size_t kDashboardJobsMax = 20;          // recent jobs in a snapshot
inline constexpr size_t kDashboardAttemptsMax = 16;      // attempts shown per job (the last ones)
inline constexpr size_t kDashboardLatenciesMax = 1000;   // finished jobs the percentiles are over
inline constexpr size_t kDashboardVehiclesMax = 200;     // vehicles listed in a snapshot
inline constexpr size_t kDashboardModelsMax = 64;        // models listed
inline constexpr size_t kDashboardModelVehiclesMax = 32;  // vehicles named per model (all are counted)
inline constexpr size_t kDashboardNameBytesMax = 128;    // longer names from vehicles are cut

// The vehicle states the operator sees, in display order ("offline": not heard from lately).
inline constexpr std::string_view kDashboardStates[] = {"driving", "parked",     "charging", "eligible",
                                                        "serving", "preempting", "offline"};

// True for the paths the dashboard's pages and assets are served at.
bool is_dashboard_path(std::string_view path);

// The reply to a request for one of those paths: the page or asset, 404 for
// an asset that does not exist, 405 for a method other than GET and HEAD.
// REQUIRES: is_dashboard_path(r.path).
transport::HttpResponse dashboard_response(const transport::HttpRequest& r);

// The headers every dashboard reply carries (pages, assets, the event stream).
std::vector<transport::HttpHeader> dashboard_security_headers();

// What the coordinator knows of the fleet at one instant (loop thread).
struct FleetNow {
  std::map<std::string, size_t> by_state;  // every name of kDashboardStates, present even when 0
  size_t vehicles_known = 0;
  size_t vehicles_online = 0;
  // kW at full load of the vehicles that can work now (eligible or serving),
  // and the draw of those serving (docs/dashboard.md says how each is found).
  double compute_online_kw = 0.0;
  double compute_in_use_kw = 0.0;
  double tokens_per_second = 0.0;
  size_t queue_depth = 0;
  size_t jobs_running = 0;
  uint64_t preemptions_total = 0;
  uint64_t jobs_done_total = 0;
  uint64_t tokens_total = 0;

  struct Vehicle {
    std::string id;
    std::string state;
    bool eligible = false;
    double soc_pct = 0.0;
    std::string job_id;
    std::string reason;  // the first reason it is not eligible, or ""
  };
  std::vector<Vehicle> vehicles;  // at most kDashboardVehiclesMax, by id

  struct Job {
    std::string id;
    std::string model;
    std::string kind;   // generate, embed
    std::string state;  // core::job_state_name
    std::string finish_reason;
    core::TimeMs created_at = 0;
    uint64_t tokens = 0;
    bool check = false;  // a verification run of another job
    std::vector<core::Attempt> attempts;  // the last kDashboardAttemptsMax
    uint32_t attempts_total = 0;
  };
  std::vector<Job> jobs;  // the kDashboardJobsMax most recently submitted, newest first

  struct Model {
    std::string id;
    bool served = false;  // in the coordinator's catalog
    std::vector<std::string> cached_on;  // at most kDashboardModelVehiclesMax vehicle ids
    size_t cached_on_total = 0;
  };
  std::vector<Model> models;  // served ones first, then those only vehicles report; at most kDashboardModelsMax
};

// Gathers FleetNow from the machine. `served_models`: the catalog's ids.
// `full_load_w`: each vehicle's draw as last reported while serving, or as
// declared in its hello until then, kept by the caller across calls (updated
// here); a workable vehicle with neither (an agent that predates the hello's
// power_w) counts at the mean of the others (0 when there are none).
FleetNow gather_fleet(const core::CoordinatorMachine& machine, const std::vector<std::string>& served_models,
                      double tokens_per_second, std::map<std::string, double>* full_load_w);

// Time-dependent figures for the snapshot. One thread.
class DashboardStats {
 public:
  // A job finished done, latency_ms after it was submitted.
  void job_done(int64_t latency_ms);

  // Takes a history sample when kDashboardSampleMs has passed since the last
  // (or at the first call); drops samples older than kDashboardWindowMs.
  void sample(const FleetNow& fleet, core::TimeMs now);

  // Nearest-rank percentile (0 < p <= 100) of the recent latencies; 0 with none.
  int64_t latency_percentile_ms(double p) const;

  // Preemptions in the last hour (or since the first sample, if younger),
  // from the counter's value now and the oldest sample in the window.
  uint64_t preemptions_in_window(uint64_t preemptions_total, core::TimeMs now) const;

  // The snapshot document (docs/dashboard.md, "The snapshot").
  std::string snapshot_json(const FleetNow& fleet, core::TimeMs now) const;

  size_t samples() const { return samples_.size(); }
  size_t latencies() const { return latencies_.size(); }

 private:
  struct Sample {
    core::TimeMs at = 0;
    double tokens_per_second = 0.0;
    double compute_online_kw = 0.0;
    double compute_in_use_kw = 0.0;
    size_t queue_depth = 0;
    size_t serving = 0;
    size_t eligible = 0;
    size_t online = 0;
    uint64_t preemptions_total = 0;
  };
  std::deque<int64_t> latencies_;  // most recent last
  std::deque<Sample> samples_;     // oldest first
};

// Admission of event-stream clients: at most `max` at once. Any thread.
class StreamSlots {
 public:
  explicit StreamSlots(size_t max) : max_(max) {}
  // Takes a slot; false (and nothing taken) when all are in use.
  bool try_acquire();
  // Gives back a slot taken by try_acquire(). REQUIRES: one was taken.
  void release();
  size_t in_use() const { return in_use_.load(); }

 private:
  const size_t max_;
  std::atomic<size_t> in_use_{0};
};

// One server-sent event carrying `data` (which must not contain a newline:
// JSON from dump() never does) as the event `name`.
std::string sse_event(std::string_view name, std::string_view data);

}  // namespace idlefleet::coordinator
