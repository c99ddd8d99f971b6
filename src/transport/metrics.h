// Metrics in the Prometheus text exposition format, version 0.0.4.
//
// A MetricsRegistry owns counters, gauges and histograms, each identified by
// a name and a set of labels, and renders them all for a /metrics scrape:
//
//   # HELP jobs_total Jobs accepted.
//   # TYPE jobs_total counter
//   jobs_total{kind="chat"} 3
//   jobs_total{kind="completion"} 12
//   # HELP job_ms Time from accept to done.
//   # TYPE job_ms histogram
//   job_ms_bucket{le="100"} 1
//   job_ms_bucket{le="+Inf"} 2
//   job_ms_sum 140.5
//   job_ms_count 2
//
// Families are rendered sorted by name and series by labels, so the output is
// deterministic. Names are [a-zA-Z_:][a-zA-Z0-9_:]*, label names
// [a-zA-Z_][a-zA-Z0-9_]* (not starting "__"); breaking those, or registering
// one name as two types, is a programming error and a CHECK failure. Label
// values are free text, escaped on output.
//
// Thread-safety: everything. Registration takes the registry's mutex and
// returns a reference that stays valid for the registry's life, so hot paths
// register once and then only touch atomics: Counter::inc and Gauge::set/add
// are single atomic operations; Histogram::observe is two (a bucket, the sum),
// so a concurrent render may see a sum that lags its count by one observation.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace idlefleet::transport {

// Series (one name + one label set) one registry may hold. Label values must
// come from bounded sets (states, models, kinds; never request ids), so this
// is never reached; a CHECK stops a cardinality leak from eating memory.
inline constexpr size_t kMetricSeriesMax = 1u << 16;
// Buckets in one histogram, +Inf not counted.
inline constexpr size_t kHistogramBucketsMax = 64;

// {name, value} pairs; any order (the registry sorts them by name).
using MetricLabels = std::vector<std::pair<std::string, std::string>>;

// A monotonically increasing count.
class Counter {
 public:
  void inc(uint64_t n = 1) { value_.fetch_add(n, std::memory_order_relaxed); }
  uint64_t value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> value_{0};
};

// A value that goes up and down.
class Gauge {
 public:
  void set(double v) { value_.store(v, std::memory_order_relaxed); }
  void add(double d) { value_.fetch_add(d, std::memory_order_relaxed); }
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

// Observations counted into fixed buckets (upper bounds, inclusive), plus
// their sum. Rendered cumulatively as Prometheus expects.
class Histogram {
 public:
  // REQUIRES: `bounds` finite, strictly increasing, at most
  // kHistogramBucketsMax of them; a trailing +Inf is allowed and dropped
  // (the +Inf bucket is always there).
  explicit Histogram(std::vector<double> bounds);

  // NaN counts in the +Inf bucket (and makes the sum NaN), as in the Go client.
  void observe(double v);

  const std::vector<double>& bounds() const { return bounds_; }
  // Non-cumulative count of bucket `i`; i == bounds().size() is the +Inf bucket.
  uint64_t bucket_count(size_t i) const { return counts_[i].load(std::memory_order_relaxed); }
  uint64_t count() const;
  double sum() const { return sum_.load(std::memory_order_relaxed); }

 private:
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> counts_;  // bounds_.size() + 1
  std::atomic<double> sum_{0.0};
};

// Owns every series and renders them; see the top of this file.
class MetricsRegistry {
 public:
  MetricsRegistry();
  ~MetricsRegistry();
  MetricsRegistry(const MetricsRegistry&) = delete;
  MetricsRegistry& operator=(const MetricsRegistry&) = delete;

  // The series `name`{labels}, created on first use. Labels are sorted by
  // name here, so their order does not matter. The same name and labels give
  // the same object; `help` is taken from the first registration of a name.
  // REQUIRES: valid name and label names, no duplicate label names, `name`
  // not registered as another type (else CHECK failure).
  Counter& counter(std::string_view name, std::string_view help, MetricLabels labels = {});
  Gauge& gauge(std::string_view name, std::string_view help, MetricLabels labels = {});
  // REQUIRES: as above, plus the Histogram bounds rules, the same bounds for
  // every series of a name, and no label named "le" (the bucket label).
  Histogram& histogram(std::string_view name, std::string_view help, std::vector<double> bounds,
                       MetricLabels labels = {});

  // Every series, in the text format: # HELP and # TYPE once per name, then
  // its samples.
  std::string render() const;

 private:
  enum class Type { kCounter, kGauge, kHistogram };
  struct Family;
  // The family `name`, created on first use. REQUIRES: mu_ held.
  Family& family(std::string_view name, std::string_view help, Type type);

  mutable std::mutex mu_;
  std::map<std::string, std::unique_ptr<Family>, std::less<>> families_;  // guarded by mu_
  size_t series_ = 0;                                                     // guarded by mu_
};

}  // namespace idlefleet::transport
