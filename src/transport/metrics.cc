#include "transport/metrics.h"

#include <algorithm>
#include <charconv>
#include <cmath>

#include "common/check.h"

namespace idlefleet::transport {
namespace {

bool valid_name(std::string_view s, bool allow_colon) {
  if (s.empty()) return false;
  auto letter = [](char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; };
  auto ok = [&](char c, bool first) {
    return letter(c) || (allow_colon && c == ':') || (!first && c >= '0' && c <= '9');
  };
  for (size_t i = 0; i < s.size(); ++i) {
    if (!ok(s[i], i == 0)) return false;
  }
  return true;
}

// Sorts labels by name and checks them: a bad label name is our bug, not input.
MetricLabels canonical(MetricLabels labels) {
  std::sort(labels.begin(), labels.end());
  for (size_t i = 0; i < labels.size(); ++i) {
    CHECK(valid_name(labels[i].first, /*allow_colon=*/false));
    CHECK(labels[i].first.rfind("__", 0) != 0);  // reserved for Prometheus itself
    CHECK(i == 0 || labels[i].first != labels[i - 1].first);
  }
  return labels;
}

// Go's float formatting as Prometheus parses it: shortest round-trip digits,
// and its own spellings of the infinities and NaN.
void append_double(std::string& out, double v) {
  if (std::isnan(v)) {
    out += "NaN";
  } else if (std::isinf(v)) {
    out += v > 0 ? "+Inf" : "-Inf";
  } else {
    char buf[32];
    const auto r = std::to_chars(buf, buf + sizeof buf, v);
    out.append(buf, r.ptr);
  }
}

void append_escaped(std::string& out, std::string_view s, bool escape_quotes) {
  for (char c : s) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '"' && escape_quotes) {
      out += "\\\"";
    } else {
      out += c;
    }
  }
}

// `{a="x",b="y"}`, with `le` (already formatted) last when given; nothing when empty.
void append_labels(std::string& out, const MetricLabels& labels, const std::string* le = nullptr) {
  if (labels.empty() && le == nullptr) return;
  out += '{';
  bool first = true;
  auto one = [&](std::string_view name, std::string_view value) {
    if (!first) out += ',';
    first = false;
    out += name;
    out += "=\"";
    append_escaped(out, value, /*escape_quotes=*/true);
    out += '"';
  };
  for (const auto& [name, value] : labels) one(name, value);
  if (le != nullptr) one("le", *le);
  out += '}';
}

}  // namespace

Histogram::Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)) {
  if (!bounds_.empty() && std::isinf(bounds_.back()) && bounds_.back() > 0) bounds_.pop_back();
  CHECK(bounds_.size() <= kHistogramBucketsMax);
  for (size_t i = 0; i < bounds_.size(); ++i) {
    CHECK(std::isfinite(bounds_[i]));
    CHECK(i == 0 || bounds_[i - 1] < bounds_[i]);
  }
  counts_ = std::make_unique<std::atomic<uint64_t>[]>(bounds_.size() + 1);
}

void Histogram::observe(double v) {
  // The first bound >= v: buckets are "less than or equal".
  const size_t i = std::isnan(v) ? bounds_.size()
                                 : static_cast<size_t>(std::lower_bound(bounds_.begin(), bounds_.end(), v) -
                                                       bounds_.begin());
  counts_[i].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(v, std::memory_order_relaxed);
}

uint64_t Histogram::count() const {
  uint64_t n = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) n += bucket_count(i);
  return n;
}

struct MetricsRegistry::Family {
  Type type;
  std::string help;
  std::vector<double> bounds;  // histograms: every series shares them
  std::map<MetricLabels, std::unique_ptr<Counter>> counters;
  std::map<MetricLabels, std::unique_ptr<Gauge>> gauges;
  std::map<MetricLabels, std::unique_ptr<Histogram>> histograms;
};

MetricsRegistry::MetricsRegistry() = default;
MetricsRegistry::~MetricsRegistry() = default;

MetricsRegistry::Family& MetricsRegistry::family(std::string_view name, std::string_view help, Type type) {
  CHECK(valid_name(name, /*allow_colon=*/true));
  auto it = families_.find(name);
  if (it == families_.end()) {
    auto f = std::make_unique<Family>();
    f->type = type;
    f->help = std::string(help);
    it = families_.emplace(std::string(name), std::move(f)).first;
  }
  Family& f = *it->second;
  CHECK(f.type == type);
  DCHECK(f.help == help);
  return f;
}

Counter& MetricsRegistry::counter(std::string_view name, std::string_view help, MetricLabels labels) {
  labels = canonical(std::move(labels));
  std::lock_guard lock(mu_);
  Family& f = family(name, help, Type::kCounter);
  auto& slot = f.counters[std::move(labels)];
  if (slot == nullptr) {
    CHECK(++series_ <= kMetricSeriesMax);
    slot = std::make_unique<Counter>();
  }
  return *slot;
}

Gauge& MetricsRegistry::gauge(std::string_view name, std::string_view help, MetricLabels labels) {
  labels = canonical(std::move(labels));
  std::lock_guard lock(mu_);
  Family& f = family(name, help, Type::kGauge);
  auto& slot = f.gauges[std::move(labels)];
  if (slot == nullptr) {
    CHECK(++series_ <= kMetricSeriesMax);
    slot = std::make_unique<Gauge>();
  }
  return *slot;
}

Histogram& MetricsRegistry::histogram(std::string_view name, std::string_view help, std::vector<double> bounds,
                                      MetricLabels labels) {
  labels = canonical(std::move(labels));
  for (const auto& [label, value] : labels) CHECK(label != "le");
  // Normalised the way the Histogram stores them, so "with +Inf" and "without" compare equal.
  Histogram probe(std::move(bounds));
  std::lock_guard lock(mu_);
  Family& f = family(name, help, Type::kHistogram);
  if (f.histograms.empty()) f.bounds = probe.bounds();
  CHECK(f.bounds == probe.bounds());
  auto& slot = f.histograms[std::move(labels)];
  if (slot == nullptr) {
    CHECK(++series_ <= kMetricSeriesMax);
    slot = std::make_unique<Histogram>(f.bounds);
  }
  return *slot;
}

std::string MetricsRegistry::render() const {
  std::string out;
  std::lock_guard lock(mu_);
  for (const auto& [name, fp] : families_) {
    const Family& f = *fp;
    out += "# HELP ";
    out += name;
    out += ' ';
    append_escaped(out, f.help, /*escape_quotes=*/false);
    out += "\n# TYPE ";
    out += name;
    out += f.type == Type::kCounter ? " counter\n" : f.type == Type::kGauge ? " gauge\n" : " histogram\n";
    for (const auto& [labels, c] : f.counters) {
      out += name;
      append_labels(out, labels);
      out += ' ';
      out += std::to_string(c->value());
      out += '\n';
    }
    for (const auto& [labels, g] : f.gauges) {
      out += name;
      append_labels(out, labels);
      out += ' ';
      append_double(out, g->value());
      out += '\n';
    }
    for (const auto& [labels, h] : f.histograms) {
      // _count is the +Inf bucket as read here, so the two always agree within one scrape.
      uint64_t cumulative = 0;
      std::string le;
      for (size_t i = 0; i <= h->bounds().size(); ++i) {
        cumulative += h->bucket_count(i);
        le.clear();
        if (i < h->bounds().size()) {
          append_double(le, h->bounds()[i]);
        } else {
          le = "+Inf";
        }
        out += name;
        out += "_bucket";
        append_labels(out, labels, &le);
        out += ' ';
        out += std::to_string(cumulative);
        out += '\n';
      }
      out += name;
      out += "_sum";
      append_labels(out, labels);
      out += ' ';
      append_double(out, h->sum());
      out += '\n';
      out += name;
      out += "_count";
      append_labels(out, labels);
      out += ' ';
      out += std::to_string(cumulative);
      out += '\n';
    }
  }
  return out;
}

}  // namespace idlefleet::transport
