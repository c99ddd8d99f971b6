#include "sim/report.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <optional>
#include <string_view>

#include "core/time.h"

namespace idlefleet::sim {

namespace {

// printf into a string; every number on the page goes through here, so the
// page is the same bytes wherever the same run is rendered.
[[gnu::format(printf, 1, 2)]] std::string fmt(const char* format, ...) {
  char buf[512];
  va_list args;
  va_start(args, format);
  const int n = std::vsnprintf(buf, sizeof buf, format, args);
  va_end(args);
  if (n < 0) return {};
  return std::string(buf, static_cast<size_t>(std::min<int>(n, sizeof buf - 1)));
}

// A quantity with an SI prefix: 1234567 -> "1.23 M".
std::string si(double v) {
  if (!std::isfinite(v)) return "n/a";
  const double a = std::fabs(v);
  if (a == 0.0) return "0";
  static constexpr std::array<std::pair<double, const char*>, 6> kPrefixes = {
      {{1e18, " E"}, {1e15, " P"}, {1e12, " T"}, {1e9, " G"}, {1e6, " M"}, {1e3, " k"}}};
  for (const auto& [scale, prefix] : kPrefixes) {
    if (a >= scale) return fmt("%.3g%s", v / scale, prefix);
  }
  if (a >= 0.01) return fmt("%.3g", v);
  return fmt("%.2e", v);
}

// An axis tick: as short as it can be while the ticks stay distinct.
std::string tick_label(double v, double step) {
  const double a = std::max(std::fabs(v), step);
  static constexpr std::array<std::pair<double, const char*>, 6> kPrefixes = {
      {{1e18, "E"}, {1e15, "P"}, {1e12, "T"}, {1e9, "G"}, {1e6, "M"}, {1e3, "k"}}};
  if (v == 0.0) return "0";
  for (const auto& [scale, prefix] : kPrefixes) {
    if (a >= scale) return fmt("%g%s", std::round(v / step) * step / scale, prefix);
  }
  const int decimals = step >= 1.0 ? 0 : static_cast<int>(std::ceil(-std::log10(step) - 1e-9));
  return fmt("%.*f", std::clamp(decimals, 0, 9), v);
}

// A whole number with thousands separators: "100,000".
std::string count(double v) {
  const std::string digits = fmt("%.0f", std::fabs(v));
  std::string out = v < 0 && digits != "0" ? "-" : "";
  for (size_t k = 0; k < digits.size(); ++k) {
    if (k > 0 && (digits.size() - k) % 3 == 0) out.push_back(',');
    out.push_back(digits[k]);
  }
  return out;
}

std::string days_text(int days) { return days == 1 ? std::string("one day") : fmt("%d days", days); }

// Power in the unit that suits it: GW from 1 GW, MW from 1 MW, else kW.
struct PowerUnit {
  double scale;  // per GW
  const char* name;
};
PowerUnit power_unit(double gw) {
  if (std::fabs(gw) >= 1.0) return {1.0, "GW"};
  if (std::fabs(gw) >= 1e-3) return {1e3, "MW"};
  return {1e6, "kW"};
}
std::string power(double gw) {
  const PowerUnit u = power_unit(gw);
  return fmt("%.3g %s", gw * u.scale, u.name);
}

// 1, 2 or 5 x 10^k, the smallest at or above `raw`.
double nice_step(double raw) {
  if (!(raw > 0.0) || !std::isfinite(raw)) return 1.0;
  const double p = std::pow(10.0, std::floor(std::log10(raw)));
  for (const double m : {1.0, 2.0, 5.0, 10.0}) {
    if (m * p >= raw * (1.0 - 1e-12)) return m * p;
  }
  return 10.0 * p;
}

const char* weekday_name(core::Weekday d) {
  static constexpr std::array<const char*, 7> kNames = {"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"};
  return kNames[static_cast<size_t>(d)];
}
const char* month_name(int month) {
  static constexpr std::array<const char*, 12> kNames = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                                         "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  return kNames[static_cast<size_t>(std::clamp(month, 1, 12) - 1)];
}

// The local calendar date of an instant: "Mon 2 Nov 2026".
std::string local_date(core::TimeMs t, int utc_offset_minutes, bool year) {
  const core::TimeMs local = t + static_cast<core::TimeMs>(utc_offset_minutes) * core::kMinuteMs;
  const int64_t day = local >= 0 ? local / core::kDayMs : (local - core::kDayMs + 1) / core::kDayMs;
  const core::CivilDate d = core::civil_from_days(day);
  const char* wd = weekday_name(core::to_local(t, utc_offset_minutes).weekday);
  if (year) return fmt("%s %d %s %lld", wd, d.day, month_name(d.month), static_cast<long long>(d.year));
  return fmt("%s %d %s", wd, d.day, month_name(d.month));
}

std::string utc_offset_text(int minutes) {
  const int a = std::abs(minutes);
  return fmt("UTC%c%02d:%02d", minutes < 0 ? '-' : '+', a / 60, a % 60);
}

// ---- Charts -----------------------------------------------------------------

constexpr double kWidth = 960;
constexpr double kLeft = 64;
constexpr double kRight = 20;
constexpr double kTop = 40;
constexpr double kBottom = 46;

struct Series {
  std::string name;
  std::string color;
  std::vector<double> values;  // one per bin
  bool dashed = false;
};

struct TimeChart {
  std::string id;
  std::string unit;                 // shown above the y axis
  std::vector<Series> areas;        // stacked, bottom first
  std::vector<Series> lines;
  std::optional<double> reference;  // a horizontal dashed line
  std::string reference_name;
  double height = 300;
};

// Where the time axis comes from.
struct TimeAxis {
  size_t bins = 0;
  int bin_minutes = 15;
  core::TimeMs start_ms = 0;
  int utc_offset_minutes = 0;
  int days = 1;
};

std::vector<double> group_means(const std::vector<double>& v, size_t group) {
  if (group <= 1) return v;
  std::vector<double> out;
  out.reserve((v.size() + group - 1) / group);
  for (size_t i = 0; i < v.size(); i += group) {
    const size_t end = std::min(v.size(), i + group);
    double sum = 0.0;
    for (size_t k = i; k < end; ++k) sum += v[k];
    out.push_back(sum / static_cast<double>(end - i));
  }
  return out;
}

std::string legend(const std::vector<std::pair<const Series*, bool>>& entries, const std::string& reference_name,
                   double x0) {
  std::string out;
  double x = x0;
  auto item = [&](const std::string& name, const std::string& color, int kind) {  // 0 area, 1 line, 2 dashed
    if (kind == 0) {
      out += fmt("<rect x=\"%.1f\" y=\"10\" width=\"14\" height=\"10\" fill=\"%s\" fill-opacity=\"0.6\"/>", x,
                 color.c_str());
    } else {
      out += fmt("<line x1=\"%.1f\" y1=\"15\" x2=\"%.1f\" y2=\"15\" stroke=\"%s\" stroke-width=\"2.5\"%s/>", x, x + 14,
                 color.c_str(), kind == 2 ? " stroke-dasharray=\"5 3\"" : "");
    }
    out += fmt("<text x=\"%.1f\" y=\"19\">", x + 19) + html_escape(name) + "</text>";
    x += 19 + 6.6 * static_cast<double>(name.size()) + 18;
  };
  for (const auto& [s, area] : entries) item(s->name, s->color, area ? 0 : (s->dashed ? 2 : 1));
  if (!reference_name.empty()) item(reference_name, "#444444", 2);
  return out;
}

std::string render_time_chart(const TimeChart& c, const TimeAxis& axis) {
  const size_t group = std::max<size_t>(1, (axis.bins + kReportChartPointsMax - 1) / kReportChartPointsMax);
  const size_t points = (axis.bins + group - 1) / group;
  const double plot_w = kWidth - kLeft - kRight;
  const double plot_h = c.height - kTop - kBottom;
  const double bottom = kTop + plot_h;

  std::vector<std::vector<double>> areas;
  for (const Series& s : c.areas) areas.push_back(group_means(s.values, group));
  std::vector<std::vector<double>> lines;
  for (const Series& s : c.lines) lines.push_back(group_means(s.values, group));
  double y_max = c.reference.value_or(0.0);
  for (size_t i = 0; i < points; ++i) {
    double stack = 0.0;
    for (const auto& a : areas) stack += i < a.size() ? std::max(0.0, a[i]) : 0.0;
    y_max = std::max(y_max, stack);
    for (const auto& l : lines) y_max = std::max(y_max, i < l.size() ? l[i] : 0.0);
  }
  if (!(y_max > 0.0) || !std::isfinite(y_max)) y_max = 1.0;
  const double step = nice_step(y_max / 5.0);
  const double top_value = std::ceil(y_max / step - 1e-9) * step;
  auto x_of = [&](double point) { return kLeft + plot_w * point / static_cast<double>(std::max<size_t>(1, points)); };
  auto y_of = [&](double v) { return bottom - plot_h * std::clamp(v / top_value, 0.0, 1.0); };

  std::string out = fmt(
      "<svg class=\"chart\" id=\"chart-%s\" viewBox=\"0 0 %.0f %.0f\" role=\"img\" aria-labelledby=\"title-%s\">",
      c.id.c_str(), kWidth, c.height, c.id.c_str());
  std::vector<std::pair<const Series*, bool>> entries;
  for (const Series& s : c.areas) entries.emplace_back(&s, true);
  for (const Series& s : c.lines) entries.emplace_back(&s, false);
  out += legend(entries, c.reference ? c.reference_name : std::string(), kLeft);

  // Y grid and ticks.
  for (double v = 0.0; v <= top_value * (1.0 + 1e-9); v += step) {
    const double y = y_of(v);
    out += fmt("<line class=\"grid\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>", kLeft, y, kLeft + plot_w, y);
    out += fmt("<text class=\"ytick\" x=\"%.1f\" y=\"%.1f\">", kLeft - 6, y + 4) + tick_label(v, step) + "</text>";
  }
  out += fmt("<text class=\"unit\" x=\"4\" y=\"%.1f\">", kTop - 8) + html_escape(c.unit) + "</text>";

  // X: local midnights, labelled by weekday and date; finer grid on short runs.
  const double bins_per_day = static_cast<double>(core::kMinutesPerDay) / axis.bin_minutes;
  const double points_per_day = bins_per_day / static_cast<double>(group);
  // A date label takes about kDayLabelWidth; past 3 days a label, label weeks.
  constexpr double kDayLabelWidth = 80;
  const double day_w = plot_w / std::max(1, axis.days);
  int label_every = std::max(1, static_cast<int>(std::ceil(kDayLabelWidth / day_w)));
  if (label_every > 3) label_every = (label_every + 6) / 7 * 7;
  const int hours_step = axis.days <= 2 ? 3 : (axis.days <= 10 ? 6 : 0);
  for (int d = 0; d <= axis.days; ++d) {
    const double x = x_of(points_per_day * d);
    const bool labelled = d % label_every == 0;
    out += fmt("<line class=\"%s\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>", labelled ? "day" : "grid", x, kTop,
               x, labelled ? bottom + 5 : bottom);
    if (d < axis.days && labelled && x + kDayLabelWidth <= kWidth) {
      const core::TimeMs t = axis.start_ms + static_cast<core::TimeMs>(d) * core::kDayMs;
      out += fmt("<text class=\"xtick\" x=\"%.1f\" y=\"%.1f\">", x + 3, bottom + 17) +
             local_date(t, axis.utc_offset_minutes, false) + "</text>";
    }
    if (hours_step > 0 && d < axis.days) {
      for (int h = hours_step; h < 24; h += hours_step) {
        const double xh = x_of(points_per_day * (d + h / 24.0));
        out += fmt("<line class=\"grid\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>", xh, kTop, xh, bottom);
        if (axis.days <= 3) {
          out += fmt("<text class=\"xhour\" x=\"%.1f\" y=\"%.1f\">%02d:00</text>", xh, bottom + 30, h);
        }
      }
    }
  }
  out += fmt("<text class=\"xcaption\" x=\"%.1f\" y=\"%.1f\">local time (%s)%s</text>", kLeft + plot_w, c.height - 4,
             utc_offset_text(axis.utc_offset_minutes).c_str(),
             group > 1 ? fmt(", each point the mean of %zu bins", group).c_str() : "");

  // Stacked areas: steps, one per point.
  std::vector<double> base(points, 0.0);
  for (size_t k = 0; k < areas.size(); ++k) {
    std::string upper;
    std::string lower;
    for (size_t i = 0; i < points; ++i) {
      const double top = base[i] + std::max(0.0, i < areas[k].size() ? areas[k][i] : 0.0);
      upper += fmt("%.1f,%.1f %.1f,%.1f ", x_of(static_cast<double>(i)), y_of(top), x_of(static_cast<double>(i + 1)),
                   y_of(top));
      base[i] = top;
    }
    // The lower edge is the previous layer's upper edge, walked backwards.
    for (size_t i = points; i-- > 0;) {
      const double below = base[i] - std::max(0.0, i < areas[k].size() ? areas[k][i] : 0.0);
      lower += fmt("%.1f,%.1f %.1f,%.1f ", x_of(static_cast<double>(i + 1)), y_of(below), x_of(static_cast<double>(i)),
                   y_of(below));
    }
    out += fmt("<polygon fill=\"%s\" fill-opacity=\"0.6\" stroke=\"none\" points=\"", c.areas[k].color.c_str()) + upper +
           lower + "\"/>";
  }
  if (c.reference) {
    const double y = y_of(*c.reference);
    out += fmt("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#444444\" stroke-width=\"1.5\" "
               "stroke-dasharray=\"6 4\"/>",
               kLeft, y, kLeft + plot_w, y);
  }
  for (size_t k = 0; k < lines.size(); ++k) {
    std::string pts;
    for (size_t i = 0; i < points && i < lines[k].size(); ++i) {
      pts += fmt("%.1f,%.1f ", x_of(static_cast<double>(i) + 0.5), y_of(lines[k][i]));
    }
    out += fmt("<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.8\"%s points=\"", c.lines[k].color.c_str(),
               c.lines[k].dashed ? " stroke-dasharray=\"5 3\"" : "") +
           pts + "\"/>";
  }
  out += fmt("<rect class=\"frame\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\"/>", kLeft, kTop, plot_w, plot_h);
  out += "</svg>\n";
  return out;
}

// ---- The earnings histogram ---------------------------------------------------

struct Marker {
  std::string name;
  double value;
  std::string color;
};

std::string render_histogram(const std::vector<uint64_t>& histogram, const std::vector<Marker>& markers) {
  uint64_t total = 0;
  size_t last = 0;
  for (size_t k = 0; k < histogram.size(); ++k) {
    total += histogram[k];
    if (histogram[k] > 0) last = k;
  }
  double hi = static_cast<double>(last + 1);
  for (const Marker& m : markers) hi = std::max(hi, std::ceil(m.value + 1e-9));
  const size_t units = static_cast<size_t>(std::max(1.0, hi));
  const size_t width_units = std::max<size_t>(1, (units + kReportHistogramBarsMax - 1) / kReportHistogramBarsMax);
  const size_t bars = (units + width_units - 1) / width_units;
  std::vector<double> shares(bars, 0.0);
  for (size_t k = 0; k < histogram.size(); ++k) {
    if (total == 0) break;
    shares[std::min(bars - 1, k / width_units)] += static_cast<double>(histogram[k]) / static_cast<double>(total);
  }
  const double height = 320;
  const double plot_w = kWidth - kLeft - kRight;
  const double plot_h = height - kTop - kBottom - 20;
  const double bottom = kTop + 20 + plot_h;
  double y_max = 0.0;
  for (const double s : shares) y_max = std::max(y_max, s);
  if (!(y_max > 0.0)) y_max = 1.0;
  const double step = nice_step(y_max * 100.0 / 5.0) / 100.0;
  const double top_value = std::ceil(y_max / step - 1e-9) * step;
  const double x_units = static_cast<double>(bars * width_units);
  auto x_of = [&](double value) { return kLeft + plot_w * std::clamp(value / x_units, 0.0, 1.0); };
  auto y_of = [&](double v) { return bottom - plot_h * std::clamp(v / top_value, 0.0, 1.0); };

  std::string out =
      fmt("<svg class=\"chart\" id=\"chart-earnings\" viewBox=\"0 0 %.0f %.0f\" role=\"img\">", kWidth, height);
  for (double v = 0.0; v <= top_value * (1.0 + 1e-9); v += step) {
    const double y = y_of(v);
    out += fmt("<line class=\"grid\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>", kLeft, y, kLeft + plot_w, y);
    out += fmt("<text class=\"ytick\" x=\"%.1f\" y=\"%.1f\">", kLeft - 6, y + 4) + tick_label(v * 100.0, step * 100.0) +
           "%</text>";
  }
  out += fmt("<text class=\"unit\" x=\"4\" y=\"%.1f\">owners</text>", kTop + 12);
  for (size_t b = 0; b < bars; ++b) {
    const double x0 = x_of(static_cast<double>(b * width_units));
    const double x1 = x_of(static_cast<double>((b + 1) * width_units));
    out += fmt("<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"#1f77b4\" fill-opacity=\"0.7\"/>",
               x0 + 0.5, y_of(shares[b]), std::max(0.5, x1 - x0 - 1.0), bottom - y_of(shares[b]));
  }
  const double x_step = nice_step(x_units / 10.0);
  for (double v = 0.0; v <= x_units + 1e-9; v += x_step) {
    const double x = x_of(v);
    out += fmt("<line class=\"day\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>", x, bottom, x, bottom + 5);
    out += fmt("<text class=\"xmid\" x=\"%.1f\" y=\"%.1f\">", x, bottom + 17) + tick_label(v, x_step) + "</text>";
  }
  out += fmt("<text class=\"xcaption\" x=\"%.1f\" y=\"%.1f\">earnings per month (30 days), currency units%s</text>",
             kLeft + plot_w, height - 4,
             width_units > 1 ? fmt("; each bar %zu units wide", width_units).c_str() : "; each bar 1 unit wide");
  // Markers, their labels on alternating rows so that close ones stay legible.
  for (size_t k = 0; k < markers.size(); ++k) {
    const double x = x_of(markers[k].value);
    const double label_y = kTop - 6 + 13.0 * static_cast<double>(k % 2);
    out += fmt("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"2\" "
               "stroke-dasharray=\"4 3\"/>",
               x, label_y + 3, x, bottom, markers[k].color.c_str());
    out += fmt("<text class=\"marker\" x=\"%.1f\" y=\"%.1f\" fill=\"%s\">", x + 3, label_y, markers[k].color.c_str()) +
           html_escape(markers[k].name) + fmt(" %.2f", markers[k].value) + "</text>";
  }
  out += fmt("<rect class=\"frame\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\"/>", kLeft, kTop + 20, plot_w,
             plot_h);
  out += "</svg>\n";
  return out;
}

// ---- Text -------------------------------------------------------------------

constexpr std::string_view kStyle = R"(<style>
body{font-family:system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;color:#1a1a1a;max-width:1000px;margin:0 auto;padding:1em 1.5em;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.25em;margin-top:1.6em;border-bottom:1px solid #ccc;padding-bottom:.15em}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}th,td{border:1px solid #ccc;padding:.2em .55em;text-align:left;vertical-align:top}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}th{background:#f2f2f2}
p.note{color:#555;font-size:.92em}p.lead{font-size:1.05em}
svg.chart{width:100%;height:auto;display:block;margin:.4em 0 1em}
svg text{font-family:system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;font-size:12px;fill:#333}
svg text.ytick{text-anchor:end}svg text.xcaption{text-anchor:end;fill:#555}svg text.xhour,svg text.xmid{text-anchor:middle;fill:#666;font-size:11px}
svg text.marker{font-size:11.5px;font-weight:600}
svg line.grid{stroke:#e4e4e4;stroke-width:1}svg line.day{stroke:#999;stroke-width:1}svg rect.frame{fill:none;stroke:#888;stroke-width:1}
section{break-inside:avoid-page}
@media print{body{max-width:none;padding:0;font-size:10.5pt}section{break-inside:avoid}h2{break-after:avoid}}
</style>
)";

std::string row(std::string_view key, const std::string& value) {
  return "<tr><th>" + std::string(key) + "</th><td>" + value + "</td></tr>\n";
}

std::string policy_cell(const ScenarioPolicy& p) {
  if (!p.policy.opted_in) return "opted out";
  std::string s = fmt("floor %g%%, target %g%%, margin %lld min", p.policy.soc_floor_pct, p.policy.target_soc_pct,
                      static_cast<long long>(p.policy.departure_margin_ms / core::kMinuteMs));
  if (p.policy.price_cap_micros_per_kwh) {
    s += fmt(", price cap %.4g/kWh", static_cast<double>(*p.policy.price_cap_micros_per_kwh) / 1e6);
  }
  const bool whole_week = p.policy.allowed_windows.size() == 1 &&
                          p.policy.allowed_windows[0].start_minute_of_week == core::WeeklyWindow{}.start_minute_of_week &&
                          p.policy.allowed_windows[0].end_minute_of_week == core::WeeklyWindow{}.end_minute_of_week;
  if (p.policy.allowed_windows.empty()) {
    s += ", never allowed";
  } else if (!whole_week) {
    s += ", limited hours";
  }
  s += fmt(", wear budget %g h/month", p.policy.wear_budget_hours_per_month);
  if (!p.declares_departures) s += ", departures not declared";
  return s;
}

std::string tariff_cell(const ScenarioTariff& t) {
  if (t.tariff.kind == core::Tariff::Kind::kFlat) {
    return fmt("flat %.4g/kWh", static_cast<double>(t.tariff.flat_micros_per_kwh) / 1e6);
  }
  std::string s = "time of use, weekdays:";
  for (const core::TariffEntry& e : t.tariff.weekday) {
    s += fmt(" %02d:%02d %.4g", e.start_minute_of_day / 60, e.start_minute_of_day % 60,
             static_cast<double>(e.price_micros_per_kwh) / 1e6);
  }
  const bool same = std::equal(t.tariff.weekday.begin(), t.tariff.weekday.end(), t.tariff.weekend.begin(),
                               t.tariff.weekend.end(), [](const core::TariffEntry& a, const core::TariffEntry& b) {
                                 return a.start_minute_of_day == b.start_minute_of_day &&
                                        a.price_micros_per_kwh == b.price_micros_per_kwh;
                               });
  if (!same && !t.tariff.weekend.empty()) {
    s += "; weekends:";
    for (const core::TariffEntry& e : t.tariff.weekend) {
      s += fmt(" %02d:%02d %.4g", e.start_minute_of_day / 60, e.start_minute_of_day % 60,
               static_cast<double>(e.price_micros_per_kwh) / 1e6);
    }
  }
  return s + " per kWh";
}

// "rises" / "falls" / "barely changes" from two values: a change below 2% of
// the larger one is no change.
std::string movement(double from, double to) {
  const double scale = std::max(std::fabs(from), std::fabs(to));
  if (scale == 0.0 || std::fabs(to - from) < 0.02 * scale) return "barely changes";
  return to > from ? "rises" : "falls";
}

const char* knob_title(const std::string& knob) {
  if (knob == "fleet.home_charging_share") return "home-charging share";
  if (knob == "policies.soc_floor_pct") return "SoC floor (every policy, %)";
  if (knob == "policies.departure_margin_minutes") return "departure margin (every policy, minutes)";
  if (knob == "demand") return "demand (interactive peak and batch)";
  return "?";
}

// One sentence per knob, from its low and high rows.
std::string knob_sentence(const SensitivityRow& low, const SensitivityRow& base, const SensitivityRow& high) {
  std::string s = "Setting the " + std::string(knob_title(low.knob)) + " from " + html_escape(low.value) + " to " +
                  html_escape(high.value) + ", the capacity factor " + movement(low.capacity_factor, high.capacity_factor) +
                  " (" + format_percent(low.capacity_factor) + " to " + format_percent(high.capacity_factor) +
                  "; the scenario's own setting gives " + format_percent(base.capacity_factor) + "), the used share of nameplate " +
                  movement(low.used_factor, high.used_factor) + " (" + format_percent(low.used_factor) + " to " +
                  format_percent(high.used_factor) + ") and tokens delivered per vehicle-day " +
                  movement(low.tokens_per_vehicle_day, high.tokens_per_vehicle_day) + " (" +
                  si(low.tokens_per_vehicle_day) + " to " + si(high.tokens_per_vehicle_day) + ").";
  return s;
}

// The mean of a per-bin quantity by local hour of day, over the run.
std::array<double, 24> by_local_hour(const FleetScaleResult& r, int utc_offset_minutes, double FleetBin::*field) {
  std::array<double, 24> sum{};
  std::array<double, 24> n{};
  for (const FleetBin& b : r.bins) {
    const int hour = core::to_local(b.start_ms, utc_offset_minutes).minute_of_day / 60;
    sum[static_cast<size_t>(hour)] += b.*field;
    n[static_cast<size_t>(hour)] += 1.0;
  }
  for (size_t h = 0; h < 24; ++h) sum[h] = n[h] > 0.0 ? sum[h] / n[h] : 0.0;
  return sum;
}

std::string answer(const Scenario& scenario, const FleetScaleResult& r, const SimSummary& s,
                   const std::vector<SensitivityRow>& sensitivity) {
  std::string out = "<section id=\"answer\"><h2>100 million cars &#215; 1 kW = 100 GW?</h2>\n";
  const double peak_factor = s.nameplate_gw > 0.0 ? s.compute_available_gw_peak / s.nameplate_gw : 0.0;
  const double used_peak_factor = s.nameplate_gw > 0.0 ? s.compute_used_gw_peak / s.nameplate_gw : 0.0;
  out += "<p class=\"lead\">" +
         fmt("This run's %s vehicles carry computers of %.3g kW on average (share-weighted), a nameplate of %s. ",
             count(static_cast<double>(s.vehicles)).c_str(), s.nameplate_kw_per_vehicle, power(s.nameplate_gw).c_str()) +
         "Averaged over " + days_text(s.days) + ", the owners' policies and the cars' days left " +
         power(s.compute_available_gw_mean) + " available (peak " + power(s.compute_available_gw_peak) +
         "): a <strong>capacity factor " + format_percent(s.capacity_factor) + "</strong> (peak " +
         format_percent(peak_factor) + "). Work used " + power(s.compute_used_gw_mean) + " on average (peak " +
         power(s.compute_used_gw_peak) + "), " + format_percent(s.used_factor) + " of the nameplate.</p>\n";

  out += "<p>";
  if (s.capacity_factor > 0.0) {
    out += "Scaled to 100 million cars with 1 kW each (100 GW of nameplate) that behave like this fleet, the same "
           "capacity factor gives <strong>" +
           fmt("%.3g GW", 100.0 * s.capacity_factor) + " available on average</strong> (" +
           fmt("%.3g GW", 100.0 * peak_factor) + " at the peak) and, with demand scaled alike, " +
           fmt("%.3g GW used", 100.0 * s.used_factor) + " (" + fmt("%.3g GW", 100.0 * used_peak_factor) +
           " at the peak). ";
    if (s.capacity_factor >= 0.9) {
      out += "On this run's numbers the claim holds within " + format_percent(1.0 - s.capacity_factor) + ".";
    } else {
      out += fmt("On this run's numbers the claim's 100 GW is %.3g times what such a fleet offers on average", 1.0 / s.capacity_factor) +
             (peak_factor > 0.0 ? fmt(" and %.3g times its best moment", 1.0 / peak_factor) : std::string()) + ".";
    }
  } else {
    out += "No vehicle was ever available in this run (every owner opted out, or every limit bound), so the fleet "
           "offers nothing at any scale.";
  }
  out += " The scaling assumes the factor carries over: it depends on when cars are parked, plugged in and allowed to "
         "work more than on their computers' power, though a bigger computer drains its battery sooner, so a fleet of "
         "1 kW computers may have a lower factor than one of smaller ones.</p>\n";

  // When in the day.
  const auto hourly = by_local_hour(r, scenario.fleet.utc_offset_minutes, &FleetBin::compute_available_gw);
  const auto max_hour = std::max_element(hourly.begin(), hourly.end()) - hourly.begin();
  const auto min_hour = std::min_element(hourly.begin(), hourly.end()) - hourly.begin();
  if (hourly[static_cast<size_t>(max_hour)] > 0.0 && s.nameplate_gw > 0.0) {
    out += "<p>" +
           fmt("By local hour, availability is highest from %02d:00 (%s of nameplate on average) and lowest from %02d:00 (%s). ",
               static_cast<int>(max_hour), format_percent(hourly[static_cast<size_t>(max_hour)] / s.nameplate_gw).c_str(),
               static_cast<int>(min_hour), format_percent(hourly[static_cast<size_t>(min_hour)] / s.nameplate_gw).c_str());
    size_t unmet_bins = 0;
    for (const FleetBin& b : r.bins) unmet_bins += b.interactive_unmet_tps > 0.0 ? 1 : 0;
    const double used_of_available = s.compute_available_gw_mean > 0.0 ? s.compute_used_gw_mean / s.compute_available_gw_mean : 0.0;
    out += "Of what was available, " + format_percent(used_of_available) + " was used; interactive demand went unmet in " +
           format_percent(r.bins.empty() ? 0.0 : static_cast<double>(unmet_bins) / static_cast<double>(r.bins.size())) +
           " of the time bins";
    if (s.interactive_tokens_asked > 0.0) {
      out += " (" + format_percent(s.interactive_tokens_unmet / s.interactive_tokens_asked) + " of the interactive tokens asked for)";
    }
    out += ".</p>\n";
  }

  // How it moves.
  if (sensitivity.empty()) {
    out += "<p class=\"note\">The sensitivity runs were skipped (<code>--no-sensitivity</code>), so this report cannot "
           "say how the answer moves with the home-charging share, the SoC floor, the departure margin and demand. "
           "Run <code>idlefleet sim --scenario FILE --out DIR</code> without <code>--no-sensitivity</code> to get them "
           "(a few seconds: nine runs of at most 20,000 vehicles for at most 7 days).</p>\n";
  } else {
    out += "<p>" +
           fmt("How it moves: the scenario rerun with one thing changed at a time, on %s vehicles for %s (same seed, "
               "the demand scaled to that fleet). ",
               count(static_cast<double>(sensitivity.front().vehicles)).c_str(), days_text(sensitivity.front().days).c_str());
    out += "</p>\n<ul>\n";
    for (size_t k = 0; k + 2 < sensitivity.size(); k += 3) {
      out += "<li>" + knob_sentence(sensitivity[k], sensitivity[k + 1], sensitivity[k + 2]) + "</li>\n";
    }
    out += "</ul>\n<table><tr><th>knob</th><th>value</th><th class=\"n\">capacity factor<br>(available GW per GW of "
           "nameplate)</th><th class=\"n\">used GW per GW of nameplate</th><th class=\"n\">tokens per vehicle-day</th></tr>\n";
    for (const SensitivityRow& row : sensitivity) {
      out += "<tr><td>" + std::string(knob_title(row.knob)) + "</td><td>" + html_escape(row.value) + "</td><td class=\"n\">" +
             format_percent(row.capacity_factor) + "</td><td class=\"n\">" + format_percent(row.used_factor) +
             "</td><td class=\"n\">" + si(row.tokens_per_vehicle_day) + "</td></tr>\n";
    }
    out += "</table>\n";
  }
  out += "</section>\n";
  return out;
}

}  // namespace

std::string format_percent(double fraction) {
  const double pct = 100.0 * fraction;
  if (!std::isfinite(pct)) return "n/a";
  if (pct == 0.0) return "0%";
  if (std::fabs(pct) < 1.0) return fmt("%.2f%%", pct);
  return fmt("%.1f%%", pct);
}

std::string html_escape(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (const char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string render_report(const Scenario& scenario, const FleetScaleResult& r, const SimSummary& s,
                          const std::vector<SensitivityRow>& sensitivity) {
  const std::string name = html_escape(scenario.name);
  std::string out = "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>idlefleet sim: " +
                    name + "</title>\n";
  out += kStyle;
  out += "</head>\n<body>\n";
  out += "<h1>Fleet simulation: " + name + "</h1>\n";
  if (!scenario.description.empty()) out += "<p class=\"lead\">" + html_escape(scenario.description) + "</p>\n";
  const core::TimeMs start = r.bins.empty() ? scenario.start_ms : r.bins.front().start_ms;
  const int offset = scenario.fleet.utc_offset_minutes;

  // The scenario.
  out += "<section id=\"scenario\"><h2>The scenario</h2>\n<table>\n";
  out += row("vehicles", count(static_cast<double>(r.vehicles)));
  out += row("days", fmt("%d, from %s local midnight (%s)", r.days, local_date(start, offset, true).c_str(),
                         utc_offset_text(offset).c_str()));
  out += row("seed", fmt("%llu", static_cast<unsigned long long>(r.seed)));
  out += row("fidelity", html_escape(r.fidelity) + fmt(", %d-minute bins", r.bin_minutes));
  out += row("batteries", fmt("%.4g kWh mean (each car +-20%%)", scenario.fleet.battery_kwh));
  out += row("home charging", format_percent(scenario.fleet.home_charging_share) + " of cars; plugged in on arrival with probability " +
                                  format_percent(scenario.fleet.plug_in_probability));
  std::string chargers;
  for (const ScenarioCharger& c : scenario.chargers) {
    chargers += (chargers.empty() ? "" : ", ") + fmt("%.4g kW", c.power_kw) + " (" + format_percent(c.share) + ")";
  }
  out += row("home chargers", chargers.empty() ? "none" : chargers);
  out += row("demand", "interactive peak " + si(scenario.demand.interactive_peak_tokens_per_second) + " tokens/s; batch " +
                           si(scenario.demand.batch_tokens_per_day) + " tokens a day");
  out += "</table>\n<table><tr><th>computer class</th><th class=\"n\">share</th><th class=\"n\">power</th><th "
         "class=\"n\">memory</th><th>decode tokens/s</th></tr>\n";
  for (const ScenarioComputer& c : scenario.computers) {
    std::string tps;
    for (const auto& [model, v] : c.tokens_per_second) tps += (tps.empty() ? "" : ", ") + html_escape(model) + fmt(" %.4g", v);
    out += "<tr><td>" + html_escape(c.name) + "</td><td class=\"n\">" + format_percent(c.share) + "</td><td class=\"n\">" +
           fmt("%.4g kW", c.power_kw) + "</td><td class=\"n\">" + fmt("%.4g GiB", c.memory_gib) + "</td><td>" + tps +
           "</td></tr>\n";
  }
  out += "</table>\n<table><tr><th>owner policy</th><th class=\"n\">share</th><th>limits</th></tr>\n";
  double opted_out_share = 0.0;
  for (const ScenarioPolicy& p : scenario.policies) {
    if (!p.policy.opted_in) opted_out_share += p.share;
    out += "<tr><td>" + html_escape(p.name) + "</td><td class=\"n\">" + format_percent(p.share) + "</td><td>" +
           policy_cell(p) + "</td></tr>\n";
  }
  out += "</table>\n<table><tr><th>tariff</th><th class=\"n\">share</th><th>price</th></tr>\n";
  for (const ScenarioTariff& t : scenario.tariffs) {
    out += "<tr><td>" + html_escape(t.name) + "</td><td class=\"n\">" + format_percent(t.share) + "</td><td>" +
           tariff_cell(t) + "</td></tr>\n";
  }
  out += "</table>\n</section>\n";

  // The totals.
  const double delivered = s.tokens_interactive + s.tokens_batch;
  out += "<section id=\"totals\"><h2>Headline totals</h2>\n<table>\n";
  out += row("nameplate", power(s.nameplate_gw) + fmt(" (%.3g kW a vehicle)", s.nameplate_kw_per_vehicle));
  out += row("compute available", "mean " + power(s.compute_available_gw_mean) + ", peak " + power(s.compute_available_gw_peak) +
                                      "; capacity factor " + format_percent(s.capacity_factor));
  out += row("compute used", "mean " + power(s.compute_used_gw_mean) + ", peak " + power(s.compute_used_gw_peak) + " (" +
                                 format_percent(s.used_factor) + " of nameplate)");
  out += row("tokens delivered", si(delivered) + " (" + si(s.tokens_interactive) + " interactive of " +
                                     si(s.interactive_tokens_asked) + " asked, " + si(s.tokens_batch) + " batch); " +
                                     si(s.tokens_per_vehicle_day) + " per vehicle-day");
  out += row("preemptions", si(s.preemptions) + " (" + si(s.work_redone_tokens) + " tokens redone)");
  out += row("energy", si(s.energy_kwh) + " kWh (" + si(s.battery_kwh) + " kWh from batteries), cost " + fmt("%.4g", s.energy_cost));
  out += row("owners' month", fmt("p10 %.2f, median %.2f, p90 %.2f, mean %.2f", s.earnings_month_p10, s.earnings_month_p50,
                                  s.earnings_month_p90, s.earnings_month_mean));
  out += row("wear per vehicle-month", fmt("%.3g battery equivalent full cycles, %.3g weighted chip-hours",
                                           s.battery_cycles_per_vehicle_month, s.chip_hours_per_vehicle_month));
  out += row("interactive queue wait",
             s.interactive_wait_modelled
                 ? fmt("mean %.4g ms over %llu jobs, worst bin p95 %.4g ms", s.interactive_wait_ms_mean,
                       static_cast<unsigned long long>(s.interactive_jobs_started), s.interactive_wait_ms_p95_max)
                 : std::string("not modelled at this fidelity"));
  out += "</table>\n</section>\n";

  // Charts.
  const TimeAxis axis{r.bins.size(), r.bin_minutes, start, offset, r.days};
  auto column = [&](auto get) {
    std::vector<double> v;
    v.reserve(r.bins.size());
    for (const FleetBin& b : r.bins) v.push_back(static_cast<double>(get(b)));
    return v;
  };
  auto section = [&](const char* id, const char* title, const std::string& text, const std::string& svg) {
    out += fmt("<section id=\"%s\"><h2 id=\"title-%s\">%s</h2>\n", id, id, title);
    if (!text.empty()) out += "<p>" + text + "</p>\n";
    out += svg + "</section>\n";
  };

  {
    TimeChart c{"vehicles", "vehicles", {}, {}, std::nullopt, "", 320};
    c.areas = {{"driving", "#d62728", column([](const FleetBin& b) { return b.vehicles_driving; })},
               {"parked, not plugged in", "#9aa5b1", column([](const FleetBin& b) { return b.vehicles_parked; })},
               {"plugged in at home", "#2ca02c", column([](const FleetBin& b) { return b.vehicles_plugged; })}};
    c.lines = {{"eligible (policy allows work)", "#1f77b4", column([](const FleetBin& b) { return b.vehicles_eligible; })},
               {"serving (vehicle-equivalents)", "#ff7f0e", column([](const FleetBin& b) { return b.vehicles_serving; })}};
    section("vehicles", "Vehicles by state",
            "The fleet split into driving, parked and plugged in at each bin's start (stacked: they add up to the fleet), "
            "with the vehicles their owners' policies allow to work and those working.",
            render_time_chart(c, axis));
  }
  {
    const PowerUnit unit = power_unit(std::max(s.nameplate_gw, s.compute_available_gw_peak));
    TimeChart c{"compute", unit.name, {}, {}, s.nameplate_gw * unit.scale, "nameplate " + power(s.nameplate_gw), 300};
    c.lines = {{"available", "#1f77b4", column([&](const FleetBin& b) { return b.compute_available_gw * unit.scale; })},
               {"used", "#ff7f0e", column([&](const FleetBin& b) { return b.compute_used_gw * unit.scale; })}};
    section("compute", "Compute available and used",
            "The eligible vehicles' computers at full power, and the part doing work, against the whole fleet's "
            "nameplate (every computer at full power). Capacity factor " + format_percent(s.capacity_factor) + ".",
            render_time_chart(c, axis));
  }
  {
    TimeChart c{"tokens", "tokens/s", {}, {}, std::nullopt, "", 300};
    c.lines = {{"interactive asked", "#7f7f7f", column([](const FleetBin& b) { return b.interactive_demand_tps; }), true},
               {"interactive delivered", "#1f77b4", column([](const FleetBin& b) { return b.interactive_tps; })},
               {"batch delivered", "#9467bd", column([](const FleetBin& b) { return b.batch_tps; })}};
    section("tokens", "Tokens per second", "Output tokens per second, means over each bin.", render_time_chart(c, axis));
    TimeChart backlog{"backlog", "tokens", {}, {}, std::nullopt, "", 240};
    backlog.lines = {{"batch backlog", "#9467bd", column([](const FleetBin& b) { return b.batch_backlog_tokens; })}};
    section("backlog", "Batch backlog",
            "Batch output tokens still waiting at each bin's end (a day's batch arrives at local midnight).",
            render_time_chart(backlog, axis));
  }
  if (s.interactive_wait_modelled) {
    TimeChart c{"latency", "ms", {}, {}, std::nullopt, "", 260};
    c.lines = {{"mean wait", "#1f77b4", column([](const FleetBin& b) { return b.interactive_wait_ms_mean; })},
               {"p95 wait", "#d62728", column([](const FleetBin& b) { return b.interactive_wait_ms_p95; })}};
    section("latency", "Queue latency",
            fmt("Interactive jobs' wait in the queue before a vehicle takes them, by bin; over the run, mean %.4g ms "
                "(%llu jobs), the worst bin's p95 %.4g ms.",
                s.interactive_wait_ms_mean, static_cast<unsigned long long>(s.interactive_jobs_started),
                s.interactive_wait_ms_p95_max),
            render_time_chart(c, axis));
  } else {
    out += "<section id=\"latency\"><h2>Queue latency</h2>\n<p class=\"note\">Queue latency is not modelled at this "
           "fidelity (" + html_escape(r.fidelity) +
           "): demand is a flow per shard, not individual jobs in a queue. The detailed fidelity places each job and "
           "measures its wait.</p>\n</section>\n";
  }
  {
    TimeChart c{"preemptions", "jobs per bin", {}, {}, std::nullopt, "", 240};
    c.lines = {{"preemptions", "#d62728", column([](const FleetBin& b) { return b.preemptions; })}};
    section("preemptions", "Preemptions",
            "Jobs cut because a driver left while the car served (expected counts per bin); " + si(s.preemptions) +
                " over the run.",
            render_time_chart(c, axis));
    TimeChart w{"redone", "tokens per bin", {}, {}, std::nullopt, "", 240};
    w.lines = {{"work redone", "#8c564b", column([](const FleetBin& b) { return b.work_redone_tokens; })}};
    section("redone", "Work redone",
            "The output tokens of those jobs, generated again elsewhere; " + si(s.work_redone_tokens) + " over the run (" +
                format_percent(delivered > 0.0 ? s.work_redone_tokens / delivered : 0.0) + " of the tokens delivered).",
            render_time_chart(w, axis));
  }
  {
    TimeChart c{"energy", "kWh per bin", {}, {}, std::nullopt, "", 280};
    c.areas = {{"from batteries", "#ff7f0e", column([](const FleetBin& b) { return b.battery_kwh; })},
               {"from chargers", "#2ca02c",
                column([](const FleetBin& b) { return std::max(0.0, b.energy_kwh - b.battery_kwh); })}};
    section("energy", "Energy",
            "Drawn by the serving computers, stacked by source; " + si(s.energy_kwh) + " kWh over the run.",
            render_time_chart(c, axis));
    TimeChart cost{"cost", "currency units per bin", {}, {}, std::nullopt, "", 240};
    cost.lines = {{"energy cost", "#8c564b", column([](const FleetBin& b) { return b.energy_cost; })}};
    section("cost", "Energy cost",
            "That energy at each owner's tariff (refunded to the owner); " + fmt("%.4g", s.energy_cost) +
                " currency units over the run.",
            render_time_chart(cost, axis));
  }
  {
    std::string text = "What each owner is paid (revenue share, energy refund, wear allowance) less the electricity for "
                       "the serving, per vehicle, scaled to a 30-day month. ";
    const uint64_t total = [&] {
      uint64_t t = 0;
      for (const uint64_t n : r.earnings_month_histogram) t += n;
      return t;
    }();
    if (total > 0) {
      const double first = static_cast<double>(r.earnings_month_histogram.front()) / static_cast<double>(total);
      text += "The bar at 0 (earnings below 1 unit) holds " + format_percent(first) + " of owners";
      text += opted_out_share > 0.0 ? ", among them the " + format_percent(opted_out_share) +
                                          " of the fleet whose owners opted out (policy shares), who earn exactly 0."
                                    : "; no owner in this scenario is opted out.";
      section("earnings", "Owners' monthly earnings", text,
              render_histogram(r.earnings_month_histogram, {{"p10", s.earnings_month_p10, "#2ca02c"},
                                                            {"p50", s.earnings_month_p50, "#d62728"},
                                                            {"mean", s.earnings_month_mean, "#000000"},
                                                            {"p90", s.earnings_month_p90, "#9467bd"}}));
    } else {
      out += "<section id=\"earnings\"><h2>Owners' monthly earnings</h2>\n<p class=\"note\">" + text +
             "This result holds no earnings histogram.</p>\n</section>\n";
    }
  }
  {
    TimeChart c{"battery", "kWh per bin", {}, {}, std::nullopt, "", 240};
    c.lines = {{"battery energy for serving", "#ff7f0e", column([](const FleetBin& b) { return b.battery_kwh; })}};
    TimeChart w{"chip", "chip-hours per bin", {}, {}, std::nullopt, "", 240};
    w.lines = {{"weighted chip-hours", "#17becf", column([](const FleetBin& b) { return b.wear_hours; })}};
    section("wear", "Battery and chip wear",
            fmt("Per vehicle and 30-day month: %.3g battery equivalent full cycles from serving (the batteries' %s kWh "
                "over the fleet's capacity), and %.3g temperature-weighted chip-hours.",
                s.battery_cycles_per_vehicle_month, si(s.battery_kwh).c_str(), s.chip_hours_per_vehicle_month),
            render_time_chart(c, axis) + render_time_chart(w, axis));
  }

  out += answer(scenario, r, s, sensitivity);
  out += "<p class=\"note\">Generated by <code>idlefleet sim</code>; the time series is in timeseries.csv and the "
         "totals in summary.json beside this page (docs/simulator.md).</p>\n</body>\n</html>\n";
  return out;
}

}  // namespace idlefleet::sim
