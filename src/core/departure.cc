#include "core/departure.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <optional>

#include "common/check.h"

namespace idlefleet::core {

namespace {

// ---- Parsing helpers --------------------------------------------------------------

bool leap_year(int y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

int days_in_month(int y, int m) {
  static constexpr int kDays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return m == 2 && leap_year(y) ? 29 : kDays[m - 1];
}

// A local wall-clock instant from the file, in minutes since 1970-01-01 00:00
// of the same (unknown) zone; enough for durations, weekdays and hours.
struct LocalStamp {
  int64_t minutes = 0;
  Weekday weekday = Weekday::kMonday;
  int minute_of_day = 0;
};

bool parse_digits(std::string_view s, int& out) {
  int v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + (c - '0');
  }
  out = v;
  return !s.empty();
}

// "dd.mm.yyyy hh:mm", exactly.
std::optional<LocalStamp> parse_stamp(std::string_view s) {
  if (s.size() != 16 || s[2] != '.' || s[5] != '.' || s[10] != ' ' || s[13] != ':') return std::nullopt;
  int day, month, year, hour, minute;
  if (!parse_digits(s.substr(0, 2), day) || !parse_digits(s.substr(3, 2), month) ||
      !parse_digits(s.substr(6, 4), year) || !parse_digits(s.substr(11, 2), hour) ||
      !parse_digits(s.substr(14, 2), minute)) {
    return std::nullopt;
  }
  if (year < 1970 || year > 2200 || month < 1 || month > 12 || day < 1 ||
      day > days_in_month(year, month) || hour > 23 || minute > 59) {
    return std::nullopt;
  }
  const int64_t days = days_from_civil(year, month, day);
  LocalStamp st;
  st.minute_of_day = hour * 60 + minute;
  st.minutes = days * kMinutesPerDay + st.minute_of_day;
  st.weekday = static_cast<Weekday>(static_cast<int>((days + 3) % 7));  // 1970-01-01: Thursday
  return st;
}

enum class NumberError { kNone, kMalformed, kNegative };

// A decimal with a comma or a dot: "8,216388889", "-1,5", "12". No exponent,
// no inf or nan, at most 32 characters.
NumberError parse_decimal(std::string_view s, double& out) {
  if (s.empty() || s.size() > 32) return NumberError::kMalformed;
  bool negative = false;
  if (s[0] == '-') {
    negative = true;
    s.remove_prefix(1);
  }
  char buf[33];
  size_t n = 0;
  size_t digits = 0;
  bool separator = false;
  for (char c : s) {
    if (c >= '0' && c <= '9') {
      ++digits;
      buf[n++] = c;
    } else if ((c == ',' || c == '.') && !separator && digits > 0) {
      separator = true;
      buf[n++] = '.';
    } else {
      return NumberError::kMalformed;
    }
  }
  if (digits == 0 || buf[n - 1] == '.') return NumberError::kMalformed;
  double v = 0;
  const auto [ptr, ec] = std::from_chars(buf, buf + n, v, std::chars_format::fixed);
  if (ec != std::errc() || ptr != buf + n || !std::isfinite(v)) return NumberError::kMalformed;
  if (negative && v > 0) return NumberError::kNegative;
  out = v;
  return NumberError::kNone;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Splits on ';' into at most kCsvFieldsMax fields; false when there are more.
bool split_fields(std::string_view line, std::vector<std::string_view>& fields) {
  fields.clear();
  size_t start = 0;
  while (true) {
    if (fields.size() == kCsvFieldsMax) return false;
    const size_t semi = line.find(';', start);
    if (semi == std::string_view::npos) {
      fields.push_back(trim(line.substr(start)));
      return true;
    }
    fields.push_back(trim(line.substr(start, semi - start)));
    start = semi + 1;
  }
}

bool has_control_bytes(std::string_view s) {
  for (unsigned char c : s) {
    if (c < 0x20 && c != '\t') return true;
    if (c == 0x7f) return true;
  }
  return false;
}

// Shows a field in an error message without flooding it or printing junk.
std::string printable(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size() && i < 40; ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    out += (c >= 0x20 && c < 0x7f) ? static_cast<char>(c) : '?';
  }
  if (s.size() > 40) out += "...";
  return out;
}

// Linear interpolation between order statistics (numpy's default).
double quantile_sorted(const std::vector<double>& sorted, double q) {
  DCHECK(!sorted.empty());
  const double x = q * static_cast<double>(sorted.size() - 1);
  const size_t i = static_cast<size_t>(x);
  if (i + 1 >= sorted.size()) return sorted.back();
  return sorted[i] + (sorted[i + 1] - sorted[i]) * (x - static_cast<double>(i));
}

// One accepted session, as the prior needs it.
struct Session {
  bool weekend = false;
  int plugin_hour = 0;
  int plugout_hour = 0;
  int32_t duration_minutes = 0;
  double duration_hours = 0;
};

// Pools raw[weekend][hour] with neighbouring hours (circularly, same day
// type first) until kPooledSamplesMin, then with the other day type.
void pool_buckets(const std::array<std::vector<int32_t>, 48>& raw,
                  std::array<std::vector<int32_t>, 48>& pooled) {
  for (int w = 0; w < 2; ++w) {
    for (int h = 0; h < 24; ++h) {
      std::vector<int32_t>& out = pooled[w * 24 + h];
      out = raw[w * 24 + h];
      for (int radius = 1; radius <= 12 && out.size() < kPooledSamplesMin; ++radius) {
        const int before = (h - radius + 24) % 24;
        const int after = (h + radius) % 24;
        const auto& a = raw[w * 24 + before];
        out.insert(out.end(), a.begin(), a.end());
        if (after != before) {
          const auto& b = raw[w * 24 + after];
          out.insert(out.end(), b.begin(), b.end());
        }
      }
      if (out.size() < kPooledSamplesMin) {
        for (int other = 0; other < 24; ++other) {
          const auto& a = raw[(1 - w) * 24 + other];
          out.insert(out.end(), a.begin(), a.end());
        }
      }
      std::sort(out.begin(), out.end());
    }
  }
}

}  // namespace

// ---- DeparturePrior -----------------------------------------------------------------

Result<DeparturePrior> DeparturePrior::from_trondheim_csv(std::string_view text) {
  if (text.size() > kSessionsCsvBytesMax) {
    return Unexpected(ErrorCode::kOutOfRange,
                      "sessions csv: " + std::to_string(text.size()) + " bytes, more than the " +
                          std::to_string(kSessionsCsvBytesMax) + " allowed");
  }
  if (text.starts_with("\xEF\xBB\xBF")) text.remove_prefix(3);

  // Header.
  size_t pos = text.find('\n');
  std::string_view header = text.substr(0, pos);
  if (!header.empty() && header.back() == '\r') header.remove_suffix(1);
  if (header.size() > kCsvLineBytesMax) {
    return Unexpected(ErrorCode::kCorrupt, "sessions csv: line 1 (header) is longer than " +
                                               std::to_string(kCsvLineBytesMax) + " bytes");
  }
  if (has_control_bytes(header)) {
    return Unexpected(ErrorCode::kCorrupt, "sessions csv: line 1 (header) holds control bytes");
  }
  std::vector<std::string_view> fields;
  if (!split_fields(header, fields)) {
    return Unexpected(ErrorCode::kCorrupt, "sessions csv: line 1 (header) has more than " +
                                               std::to_string(kCsvFieldsMax) + " fields");
  }
  const size_t field_count = fields.size();
  int col_start = -1, col_end = -1, col_duration = -1;
  for (size_t i = 0; i < fields.size(); ++i) {
    int* col = fields[i] == "Start_plugin"     ? &col_start
               : fields[i] == "End_plugout"    ? &col_end
               : fields[i] == "Duration_hours" ? &col_duration
                                               : nullptr;
    if (col == nullptr) continue;
    if (*col >= 0) {
      return Unexpected(ErrorCode::kCorrupt, "sessions csv: line 1 (header): column '" +
                                                 std::string(fields[i]) + "' appears twice");
    }
    *col = static_cast<int>(i);
  }
  if (col_start < 0 || (col_end < 0 && col_duration < 0)) {
    return Unexpected(ErrorCode::kCorrupt,
                      "sessions csv: line 1 (header) needs the column Start_plugin and End_plugout "
                      "or Duration_hours, separated by ';' (got '" + printable(header) + "')");
  }

  // Data lines.
  DeparturePrior prior;
  PriorStats& st = prior.stats_;
  std::vector<Session> sessions;
  auto reject = [&](size_t line_no, std::string reason) {
    ++st.lines_rejected;
    if (st.reject_examples.size() < kRejectExamplesMax) {
      st.reject_examples.push_back("line " + std::to_string(line_no) + ": " + std::move(reason));
    }
  };
  size_t line_no = 1;
  while (pos != std::string_view::npos) {
    const size_t begin = pos + 1;
    pos = text.find('\n', begin);
    std::string_view line = text.substr(begin, pos == std::string_view::npos ? pos : pos - begin);
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (trim(line).empty()) continue;
    if (++st.data_lines > kSessionsLinesMax) {
      return Unexpected(ErrorCode::kOutOfRange, "sessions csv: more than " +
                                                    std::to_string(kSessionsLinesMax) +
                                                    " data lines");
    }
    if (line.size() > kCsvLineBytesMax) {
      reject(line_no, std::to_string(line.size()) + " bytes, more than " +
                          std::to_string(kCsvLineBytesMax));
      continue;
    }
    if (has_control_bytes(line)) {
      reject(line_no, "control bytes");
      continue;
    }
    if (!split_fields(line, fields) || fields.size() != field_count) {
      reject(line_no, std::to_string(fields.size()) + " fields, the header has " +
                          std::to_string(field_count));
      continue;
    }
    const auto start = parse_stamp(fields[col_start]);
    if (!start) {
      reject(line_no, "field Start_plugin: '" + printable(fields[col_start]) +
                          "' is not a date dd.mm.yyyy hh:mm");
      continue;
    }
    std::optional<LocalStamp> end;
    if (col_end >= 0) {
      end = parse_stamp(fields[col_end]);
      if (!end) {
        reject(line_no, "field End_plugout: '" + printable(fields[col_end]) +
                            "' is not a date dd.mm.yyyy hh:mm");
        continue;
      }
    }
    double hours = 0;
    if (col_duration >= 0) {
      switch (parse_decimal(fields[col_duration], hours)) {
        case NumberError::kNone: break;
        case NumberError::kMalformed:
          reject(line_no, "field Duration_hours: '" + printable(fields[col_duration]) +
                              "' is not a decimal number");
          continue;
        case NumberError::kNegative:
          reject(line_no, "field Duration_hours: '" + printable(fields[col_duration]) +
                              "' is negative");
          continue;
      }
    } else {
      if (end->minutes < start->minutes) {
        reject(line_no, "field End_plugout: before Start_plugin");
        continue;
      }
      hours = static_cast<double>(end->minutes - start->minutes) / 60.0;
    }
    if (hours * 60.0 > static_cast<double>(kConnectedMinutesMax)) {
      reject(line_no, "connected " + std::to_string(hours) + " h, more than the " +
                          std::to_string(kConnectedMinutesMax / 60) + " h allowed");
      continue;
    }
    Session s;
    s.weekend = LocalTime{start->weekday, start->minute_of_day}.weekend();
    s.plugin_hour = start->minute_of_day / 60;
    s.duration_hours = hours;
    s.duration_minutes = static_cast<int32_t>(std::lround(hours * 60.0));
    s.plugout_hour = end ? end->minute_of_day / 60
                         : static_cast<int>(((start->minute_of_day + s.duration_minutes) %
                                             kMinutesPerDay) / 60);
    sessions.push_back(s);
  }

  if (st.lines_rejected * 100 > st.data_lines * kRejectedPercentMax) {
    std::string first = st.reject_examples.empty() ? "" : " (first: " + st.reject_examples[0] + ")";
    return Unexpected(ErrorCode::kCorrupt,
                      "sessions csv: " + std::to_string(st.lines_rejected) + " of " +
                          std::to_string(st.data_lines) + " data lines rejected, more than " +
                          std::to_string(kRejectedPercentMax) + "%" + first);
  }
  if (sessions.size() < kPriorSessionsMin) {
    return Unexpected(ErrorCode::kCorrupt, "sessions csv: " + std::to_string(sessions.size()) +
                                               " valid sessions, fewer than the " +
                                               std::to_string(kPriorSessionsMin) + " needed");
  }

  // Statistics.
  std::vector<double> hours_sorted;
  hours_sorted.reserve(sessions.size());
  std::array<std::vector<int32_t>, 48> raw;
  double sum = 0;
  size_t longer_than_8h = 0;
  for (const Session& s : sessions) {
    hours_sorted.push_back(s.duration_hours);
    sum += s.duration_hours;
    longer_than_8h += s.duration_hours > 8.0;
    st.weekend_sessions += s.weekend;
    ++st.plugin_hour_counts[s.plugin_hour];
    ++st.plugout_hour_counts[s.plugout_hour];
    raw[bucket_index(s.weekend, s.plugin_hour)].push_back(s.duration_minutes);
  }
  std::sort(hours_sorted.begin(), hours_sorted.end());
  const double n = static_cast<double>(sessions.size());
  st.sessions_accepted = sessions.size();
  st.duration_hours_mean = sum / n;
  st.duration_hours_p10 = quantile_sorted(hours_sorted, 0.10);
  st.duration_hours_p50 = quantile_sorted(hours_sorted, 0.50);
  st.duration_hours_p90 = quantile_sorted(hours_sorted, 0.90);
  st.share_longer_than_8h = static_cast<double>(longer_than_8h) / n;
  uint32_t plugin_15_21 = 0, plugout_6_9 = 0;
  for (int h = 0; h < 24; ++h) {
    if (h >= 15 && h <= 21) plugin_15_21 += st.plugin_hour_counts[h];
    if (h >= 6 && h <= 9) plugout_6_9 += st.plugout_hour_counts[h];
    if (st.plugin_hour_counts[h] > st.plugin_hour_counts[st.plugin_peak_hour]) st.plugin_peak_hour = h;
    if (st.plugout_hour_counts[h] > st.plugout_hour_counts[st.plugout_peak_hour]) st.plugout_peak_hour = h;
  }
  st.plugin_share_15_to_21 = plugin_15_21 / n;
  st.plugout_share_6_to_9 = plugout_6_9 / n;

  pool_buckets(raw, prior.pooled_);
  return prior;
}

DeparturePrior DeparturePrior::builtin() {
  DeparturePrior prior;
  prior.builtin_ = true;
  // Minutes from the plug-in to a clock time on the same day, or the next
  // day when that clock time has passed.
  auto until_clock = [](int from_minute, int clock_minute) {
    int d = clock_minute - from_minute;
    if (d <= 0) d += kMinutesPerDay;
    return d;
  };
  for (int w = 0; w < 2; ++w) {
    for (int h = 0; h < 24; ++h) {
      const int arrival = h * 60 + 30;
      const bool evening = h >= 15 || h < 5;
      double short_share, short_lo_h, short_hi_h;
      int leave_lo = 0, leave_hi = 0;  // local clock minutes of the long stays
      if (evening) {
        short_share = 0.3, short_lo_h = 0.5, short_hi_h = 3.0;
        leave_lo = w ? 8 * 60 : 6 * 60 + 30;
        leave_hi = w ? 12 * 60 : 8 * 60 + 30;
      } else if (!w) {
        short_share = 0.5, short_lo_h = 0.5, short_hi_h = 4.0;
        leave_lo = 16 * 60;
        leave_hi = 18 * 60;
      } else {
        short_share = 1.0, short_lo_h = 0.5, short_hi_h = 6.0;
      }
      std::vector<int32_t>& out = prior.pooled_[bucket_index(w == 1, h)];
      for (size_t i = 0; i < kBuiltinSamplesPerBucket; ++i) {
        const double u = (static_cast<double>(i) + 0.5) / kBuiltinSamplesPerBucket;
        int32_t minutes;
        if (u < short_share) {
          const double v = u / short_share;
          minutes = static_cast<int32_t>(std::lround((short_lo_h + v * (short_hi_h - short_lo_h)) * 60));
        } else {
          const double v = (u - short_share) / (1.0 - short_share);
          const int leave = leave_lo + static_cast<int>(std::lround(v * (leave_hi - leave_lo)));
          minutes = until_clock(arrival, leave);
        }
        out.push_back(minutes);
      }
      std::sort(out.begin(), out.end());
      prior.stats_.sessions_accepted += out.size();
    }
  }
  return prior;
}

std::span<const int32_t> DeparturePrior::durations_minutes(bool weekend, int hour) const {
  DCHECK(hour >= 0 && hour < 24);
  return pooled_[bucket_index(weekend, hour)];
}

int32_t DeparturePrior::sample_duration_minutes(bool weekend, int hour, Rng& rng) const {
  const auto bucket = durations_minutes(weekend, hour);
  CHECK(!bucket.empty());
  return bucket[rng.below(bucket.size())];
}

// ---- DeparturePredictor -------------------------------------------------------------

DayClass day_class(Weekday weekday) {
  switch (weekday) {
    case Weekday::kFriday: return DayClass::kFriday;
    case Weekday::kSaturday: return DayClass::kSaturday;
    case Weekday::kSunday: return DayClass::kSunday;
    default: return DayClass::kMondayToThursday;
  }
}

namespace {
bool valid_offset(int utc_offset_minutes) {
  return utc_offset_minutes >= kUtcOffsetMinutesMin && utc_offset_minutes <= kUtcOffsetMinutesMax;
}
}  // namespace

Status DeparturePredictor::observe(TimeMs arrived, TimeMs departed, int utc_offset_minutes) {
  if (!valid_offset(utc_offset_minutes)) {
    return Unexpected(ErrorCode::kInvalidArgument,
                      "departure observe: utc offset " + std::to_string(utc_offset_minutes) +
                          " min outside [-720, 840]");
  }
  if (departed < arrived) {
    return Unexpected(ErrorCode::kInvalidArgument, "departure observe: departed before arrived");
  }
  const DurationMs duration_ms = departed - arrived;
  if (duration_ms > kConnectedMinutesMax * kMinuteMs) {
    return Unexpected(ErrorCode::kOutOfRange, "departure observe: a stay of " +
                                                  std::to_string(duration_ms / kHourMs) +
                                                  " h, longer than the " +
                                                  std::to_string(kConnectedMinutesMax / 60) +
                                                  " h recorded");
  }
  const LocalTime lt = to_local(arrived, utc_offset_minutes);
  Stay s;
  s.arrived = arrived;
  s.duration_minutes = static_cast<int32_t>(duration_ms / kMinuteMs);
  s.arrival_minute_of_day = static_cast<int16_t>(lt.minute_of_day);
  s.day_class = day_class(lt.weekday);
  if (stays_.size() < kHistoryEventsMax) {
    stays_.push_back(s);
  } else {
    stays_[next_] = s;
    next_ = (next_ + 1) % kHistoryEventsMax;
  }
  CHECK(stays_.size() <= kHistoryEventsMax);
  return {};
}

Result<Prediction> DeparturePredictor::predict(TimeMs arrived, TimeMs now, int utc_offset_minutes,
                                               const DeparturePrior& prior) const {
  if (!valid_offset(utc_offset_minutes)) {
    return Unexpected(ErrorCode::kInvalidArgument,
                      "departure predict: utc offset " + std::to_string(utc_offset_minutes) +
                          " min outside [-720, 840]");
  }
  if (now < arrived) now = arrived;
  const LocalTime lt = to_local(arrived, utc_offset_minutes);
  const DayClass cls = day_class(lt.weekday);
  // A candidate of c minutes after arrival is still possible iff c > elapsed.
  const int64_t elapsed_minutes = (now - arrived) / kMinuteMs;

  // Own candidates, minutes after arrival, anchored to the departure's clock.
  std::array<int32_t, kHistoryEventsMax> own;
  size_t own_n = 0;
  for (const Stay& s : stays_) {
    if (s.arrived >= arrived || s.arrived < arrived - kHistoryAgeMs || s.day_class != cls) continue;
    int diff = s.arrival_minute_of_day - lt.minute_of_day;  // circular, in [-720, 720)
    if (diff >= kMinutesPerDay / 2) diff -= kMinutesPerDay;
    if (diff < -kMinutesPerDay / 2) diff += kMinutesPerDay;
    if (diff > kOwnWindowMinutes || diff < -kOwnWindowMinutes) continue;
    const int32_t anchored = s.duration_minutes + diff;
    own[own_n++] = anchored > 0 ? anchored : s.duration_minutes;
  }
  std::sort(own.begin(), own.begin() + own_n);
  const std::span<const int32_t> prior_all = prior.durations_minutes(lt.weekend(), lt.minute_of_day / 60);
  DCHECK(!prior_all.empty());

  // Truncate both parts to D > elapsed.
  auto tail = [elapsed_minutes](std::span<const int32_t> sorted) {
    const auto it = std::upper_bound(sorted.begin(), sorted.end(), elapsed_minutes,
                                     [](int64_t e, int32_t v) { return e < v; });
    return sorted.subspan(static_cast<size_t>(it - sorted.begin()));
  };
  const std::span<const int32_t> own_tail = tail(std::span<const int32_t>(own.data(), own_n));
  const std::span<const int32_t> prior_tail = tail(prior_all);

  Prediction p;
  p.own_samples = static_cast<int>(own_n);
  p.prior_samples = static_cast<int>(prior_all.size());
  if (own_tail.empty() && prior_tail.empty()) {
    p.earliest_likely = now;
    p.median = now + kUnknownTailMedianMs;
    p.latest_likely = now + kUnknownTailLatestMs;
    p.own_weight = 0;
    return p;
  }
  const double w0 = static_cast<double>(own_n) / (static_cast<double>(own_n) + kPriorPseudoSamples);
  const double s_own = own_n ? static_cast<double>(own_tail.size()) / own_n : 0.0;
  const double s_prior = static_cast<double>(prior_tail.size()) / prior_all.size();
  const double w = w0 * s_own / (w0 * s_own + (1.0 - w0) * s_prior);
  p.own_weight = w;
  const double own_mass = own_tail.empty() ? 0.0 : w / own_tail.size();
  const double prior_mass = prior_tail.empty() ? 0.0 : (1.0 - w) / prior_tail.size();

  // Walk the merged sorted tails; the q-quantile is the first value where the
  // cumulative mass reaches q (a small slack absorbs rounding).
  constexpr double kSlack = 1e-9;
  const double qs[3] = {kEarliestQuantile, kMedianQuantile, kLatestQuantile};
  TimeMs out[3] = {0, 0, 0};
  size_t qi = 0, i = 0, j = 0;
  double cum = 0;
  int32_t last = 0;
  while (qi < 3 && (i < own_tail.size() || j < prior_tail.size())) {
    if (j >= prior_tail.size() || (i < own_tail.size() && own_tail[i] <= prior_tail[j])) {
      last = own_tail[i++];
      cum += own_mass;
    } else {
      last = prior_tail[j++];
      cum += prior_mass;
    }
    while (qi < 3 && cum >= qs[qi] - kSlack) out[qi++] = arrived + last * kMinuteMs;
  }
  while (qi < 3) out[qi++] = arrived + last * kMinuteMs;  // rounding left a sliver
  p.earliest_likely = std::max(out[0], now);
  p.median = std::max(out[1], p.earliest_likely);
  p.latest_likely = std::max(out[2], p.median);
  return p;
}

}  // namespace idlefleet::core
