// Metrics: the exact text a scrape sees, label escaping, stable references,
// and exact sums under concurrent updates.
#include "transport/metrics.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <thread>

namespace idlefleet::transport::metrics_test {
namespace {

TEST(Metrics, RendersTheTextFormatExactly) {
  MetricsRegistry r;
  // Label order given does not matter: both calls name one series.
  r.counter("requests_total", "Requests served.", {{"method", "get"}, {"code", "200"}}).inc(2);
  r.counter("requests_total", "Requests served.", {{"code", "200"}, {"method", "get"}}).inc();
  r.counter("requests_total", "Requests served.", {{"code", "500"}, {"method", "get"}}).inc();
  r.gauge("queue_depth", "Jobs waiting.").set(4.5);
  Histogram& h = r.histogram("latency_ms", "Request latency.", {10, 100}, {{"route", "/v1"}});
  h.observe(5);
  h.observe(10);  // on a bound: counted in that bucket ("le")
  h.observe(50);
  h.observe(500);
  EXPECT_EQ(r.render(),
            "# HELP latency_ms Request latency.\n"
            "# TYPE latency_ms histogram\n"
            "latency_ms_bucket{route=\"/v1\",le=\"10\"} 2\n"
            "latency_ms_bucket{route=\"/v1\",le=\"100\"} 3\n"
            "latency_ms_bucket{route=\"/v1\",le=\"+Inf\"} 4\n"
            "latency_ms_sum{route=\"/v1\"} 565\n"
            "latency_ms_count{route=\"/v1\"} 4\n"
            "# HELP queue_depth Jobs waiting.\n"
            "# TYPE queue_depth gauge\n"
            "queue_depth 4.5\n"
            "# HELP requests_total Requests served.\n"
            "# TYPE requests_total counter\n"
            "requests_total{code=\"200\",method=\"get\"} 3\n"
            "requests_total{code=\"500\",method=\"get\"} 1\n");
}

TEST(Metrics, EmptyRegistryRendersNothing) {
  MetricsRegistry r;
  EXPECT_EQ(r.render(), "");
}

TEST(Metrics, HistogramWithoutLabelsAndFractionalBounds) {
  MetricsRegistry r;
  Histogram& h = r.histogram("tokens_per_second", "Throughput.", {0.5, 2.5, std::numeric_limits<double>::infinity()});
  EXPECT_EQ(h.bounds(), (std::vector<double>{0.5, 2.5}));  // +Inf is implicit
  h.observe(0.25);
  h.observe(std::nan(""));
  EXPECT_EQ(r.render(),
            "# HELP tokens_per_second Throughput.\n"
            "# TYPE tokens_per_second histogram\n"
            "tokens_per_second_bucket{le=\"0.5\"} 1\n"
            "tokens_per_second_bucket{le=\"2.5\"} 1\n"
            "tokens_per_second_bucket{le=\"+Inf\"} 2\n"
            "tokens_per_second_sum NaN\n"
            "tokens_per_second_count 2\n");
}

TEST(Metrics, GaugeValues) {
  MetricsRegistry r;
  Gauge& g = r.gauge("temp_c", "Accelerator temperature.");
  g.set(-1.25);
  g.add(0.25);
  EXPECT_EQ(g.value(), -1.0);
  r.gauge("big", "Large.").set(1e21);
  r.gauge("inf", "Infinite.").set(-std::numeric_limits<double>::infinity());
  const std::string text = r.render();
  EXPECT_NE(text.find("\ntemp_c -1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("\nbig 1e+21\n"), std::string::npos) << text;
  EXPECT_NE(text.find("\ninf -Inf\n"), std::string::npos) << text;
}

TEST(Metrics, EscapesLabelValuesAndHelp) {
  MetricsRegistry r;
  r.counter("odd_total", "Help with a \\ backslash\nand a newline, \"quotes\" kept.",
            {{"path", "C:\\dir\\\"x\"\nnext"}})
      .inc();
  EXPECT_EQ(r.render(),
            "# HELP odd_total Help with a \\\\ backslash\\nand a newline, \"quotes\" kept.\n"
            "# TYPE odd_total counter\n"
            "odd_total{path=\"C:\\\\dir\\\\\\\"x\\\"\\nnext\"} 1\n");
}

TEST(Metrics, SameNameAndLabelsIsTheSameObject) {
  MetricsRegistry r;
  Counter& a = r.counter("a_total", "A.", {{"x", "1"}});
  Counter& b = r.counter("a_total", "A.", {{"x", "1"}});
  Counter& c = r.counter("a_total", "A.", {{"x", "2"}});
  EXPECT_EQ(&a, &b);
  EXPECT_NE(&a, &c);
  // Later registrations do not move earlier objects.
  for (int i = 0; i < 1000; ++i) r.counter("a_total", "A.", {{"x", std::to_string(i + 10)}});
  EXPECT_EQ(&a, &r.counter("a_total", "A.", {{"x", "1"}}));
  Histogram& h1 = r.histogram("h", "H.", {1, 2});
  Histogram& h2 = r.histogram("h", "H.", {1, 2, std::numeric_limits<double>::infinity()});
  EXPECT_EQ(&h1, &h2);
}

TEST(Metrics, ConcurrentIncrementsSumExactly) {
  MetricsRegistry r;
  constexpr int kThreads = 4;
  constexpr int kPerThread = 100000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&r, t] {
      // Every thread registers the shared series itself: registration is thread-safe too.
      Counter& shared = r.counter("shared_total", "Shared.");
      Counter& own = r.counter("own_total", "Per thread.", {{"thread", std::to_string(t)}});
      Histogram& h = r.histogram("obs", "Observations.", {0.5});
      Gauge& g = r.gauge("g", "Gauge.");
      for (int i = 0; i < kPerThread; ++i) {
        shared.inc();
        own.inc(2);
        h.observe(i % 2 == 0 ? 0.0 : 1.0);
        g.add(1.0);
        if (i % 1000 == 0) (void)r.render();  // scrapes race with updates
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(r.counter("shared_total", "Shared.").value(), uint64_t{kThreads} * kPerThread);
  for (int t = 0; t < kThreads; ++t) {
    EXPECT_EQ(r.counter("own_total", "Per thread.", {{"thread", std::to_string(t)}}).value(), 2u * kPerThread);
  }
  Histogram& h = r.histogram("obs", "Observations.", {0.5});
  EXPECT_EQ(h.count(), uint64_t{kThreads} * kPerThread);
  EXPECT_EQ(h.bucket_count(0), uint64_t{kThreads} * kPerThread / 2);
  EXPECT_EQ(h.sum(), kThreads * kPerThread / 2.0);  // integers: exact in any order
  EXPECT_EQ(r.gauge("g", "Gauge.").value(), kThreads * kPerThread * 1.0);
}

using MetricsDeathTest = ::testing::Test;

TEST(MetricsDeathTest, ProgrammingErrorsAreCheckFailures) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        MetricsRegistry r;
        r.counter("x", "X.");
        r.gauge("x", "X.");
      },
      "CHECK failed");
  EXPECT_DEATH({ MetricsRegistry().counter("1bad", "Bad."); }, "CHECK failed");
  EXPECT_DEATH({ MetricsRegistry().counter("ok", "Ok.", {{"bad-label", "v"}}); }, "CHECK failed");
  EXPECT_DEATH({ MetricsRegistry().counter("ok", "Ok.", {{"a", "1"}, {"a", "2"}}); }, "CHECK failed");
  EXPECT_DEATH({ MetricsRegistry().histogram("h", "H.", {2, 1}); }, "CHECK failed");
  EXPECT_DEATH({ MetricsRegistry().histogram("h", "H.", {1}, {{"le", "1"}}); }, "CHECK failed");
  EXPECT_DEATH(
      {
        MetricsRegistry r;
        r.histogram("h", "H.", {1});
        r.histogram("h", "H.", {2}, {{"a", "b"}});
      },
      "CHECK failed");
}

TEST(Metrics, NamesMayHoldColons) {
  MetricsRegistry r;
  r.counter("idlefleet:jobs_total", "Recorded rule style.").inc();
  EXPECT_NE(r.render().find("idlefleet:jobs_total 1\n"), std::string::npos);
}

}  // namespace
}  // namespace idlefleet::transport::metrics_test
