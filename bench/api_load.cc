// api_load: the load figure of issue #4, acceptance D: N concurrent streaming
// clients against a running coordinator for S seconds, every stream checked
// strictly against OpenAI's streaming format, and the server's memory watched.
//
//   build/release/bin/api_load [--url URL] [--clients N] [--seconds S] [--seed S]
//                              [--drain-seconds S] [--timeout-seconds S] [--pid P]
//                              [--start-demo [--vehicles N] [--idlefleet PATH] [--demo-model PATH]]
//
// One thread drives every client through libcurl's multi interface. Each
// client loops: POST /v1/completions or /v1/chat/completions (alternating,
// starting with a different one for odd and even clients) with stream: true,
// stream_options.include_usage, a prompt drawn from a fixed list, max_tokens
// drawn from [16, 128] and a seed, all from one seeded PRNG. After --seconds no
// request starts; the ones in flight may finish for --drain-seconds more, and
// are checked like the rest (rates count only what finished inside the window).
//
// What counts as what (every request ends in exactly one of these):
//   ok        200, a well-formed stream ending in `data: [DONE]`.
//   shed      429 or 503 with a Retry-After header and an OpenAI error body,
//             before the stream began: the server declining work, as
//             documented (src/coordinator/server.h: inbox full; queue full).
//             The client waits Retry-After seconds, then sends its next request.
//   failed    the stream carried an OpenAI error event (a job the server
//             could not finish), or the transfer broke (curl error, timeout),
//             or it was still running at the end of the drain.
//   protocol  anything else: another status, or a 429/503 without Retry-After
//             or without an error body; a 200 that is not text/event-stream; an
//             SSE line that is neither `data:` nor a comment; an event that is
//             not JSON or lacks the chunk fields (id, object, created, model,
//             choices with index 0 and text or delta); an id or model that
//             changes within the stream; finish_reason set other than exactly
//             once (or to something other than stop/length), or content after
//             it; a usage event missing, repeated, before the finish, or
//             inconsistent (total != prompt + completion, completion > max_tokens,
//             "length" with completion != max_tokens); no `data: [DONE]`, or
//             anything after it; a stream cut inside an event.
// A request may have several protocol faults; each is counted by kind, and the
// first few of each kind are printed with the request and what came back.
// Exit status: 0 when there were no protocol errors and no failures, 1
// otherwise, 2 for a usage error.
//
// Memory: the server's processes are sampled every second (VmRSS and thread
// count from /proc/<pid>/status): --pid P, else the demo this tool started,
// else the process listening on the URL's loopback port (found through
// /proc/net/tcp and /proc/*/fd), with its nats-server child if it has one.
// Start (before the first request), the highest, the value at the end of the
// load window and after the drain are printed, with a sample every 5 s, so a
// plateau can be told from growth.
//
// --start-demo runs `idlefleet demo` (next to this binary unless --idlefleet)
// on a free port with --vehicles simulated cars and its own trickle of
// requests turned down to the minimum, waits until half the cars are available,
// and stops it (SIGTERM) at the end.
//
// Everything runs on this machine's cores beside the server it measures, so
// the load average is printed at the start and the end.
#include <curl/curl.h>
#include <dirent.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "transport/process.h"

namespace {

namespace fs = std::filesystem;
namespace transport = idlefleet::transport;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

// Limits.
constexpr int kClientsMax = 10'000;
constexpr int kSecondsMax = 24 * 3600;
constexpr size_t kErrorBodyBytesMax = 64 << 10;   // a non-200 body kept for classification
constexpr size_t kPendingLineBytesMax = 1 << 20;  // one SSE line; longer is a protocol error
constexpr size_t kExamplesPerFaultMax = 3;        // requests printed per protocol-fault kind
constexpr int64_t kRetryAfterSecondsMax = 60;     // a longer Retry-After is honoured only this long
constexpr int64_t kFailureBackoffMs = 1000;       // a client whose request failed waits this long
constexpr int64_t kSampleEveryMs = 1000;
constexpr int64_t kProgressEveryMs = 10'000;
constexpr int64_t kPollMsMax = 100;
constexpr int64_t kDemoReadyMsMax = 120'000;
constexpr int64_t kDemoStopGraceMs = 30'000;

const char* const kPrompts[] = {
    "Once upon a time",   "The little dog",    "Lily and Ben",       "One day, a bird",
    "The sun was",        "Tom had a red ball", "In the park",        "A big cat",
    "There was a girl",   "The boy saw a frog", "Mom said",           "It was a rainy day",
};

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
}
double ms_of(int64_t ns) { return static_cast<double>(ns) / 1e6; }

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "api_load: %s\n", what.c_str());
  std::exit(1);
}

std::string load_average() {
  std::ifstream in("/proc/loadavg");
  std::string a, b, c;
  in >> a >> b >> c;
  return a + " " + b + " " + c;
}

std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      const size_t colon = line.find(':');
      if (colon != std::string::npos) return line.substr(colon + 2);
    }
  }
  return "unknown CPU";
}

std::string utc_date() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", &tm);
  return buf;
}

// Nearest rank: the smallest sample with at least q of the samples at or below it.
double percentile(std::vector<double> v, double q) {
  if (v.empty()) return NAN;
  std::sort(v.begin(), v.end());
  const size_t rank = static_cast<size_t>(std::ceil(q * static_cast<double>(v.size())));
  return v[std::clamp<size_t>(rank, 1, v.size()) - 1];
}

// SplitMix64: the draws depend only on the seed (no std::*_distribution).
class Prng {
 public:
  explicit Prng(uint64_t seed) : state_(seed) {}
  uint64_t next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  // Uniform in [lo, hi]; the modulo bias is negligible for these small ranges.
  int64_t in(int64_t lo, int64_t hi) { return lo + static_cast<int64_t>(next() % static_cast<uint64_t>(hi - lo + 1)); }

 private:
  uint64_t state_;
};

// ---- Protocol faults -----------------------------------------------------------------

enum class Fault {
  kStatus,          // a status other than 200, or 429/503 shed
  kShedMalformed,   // 429/503 without Retry-After or without an OpenAI error body
  kContentType,     // a 200 that is not text/event-stream
  kSseLine,         // a line that is neither `data:`, a comment nor empty; or an overlong one
  kNotJson,         // an event that is not a JSON object
  kChunkFields,     // a chunk without the OpenAI fields, or with wrong ones
  kIdChanged,       // id (or model) differs from the stream's first chunk
  kFinishReason,    // finish_reason set other than exactly once, or to an unknown value
  kAfterFinish,     // content after the finish_reason chunk
  kUsage,           // usage missing, repeated, early or inconsistent
  kNoDone,          // the stream ended without data: [DONE]
  kAfterDone,       // an event after data: [DONE]
  kTruncated,       // the stream ended inside an event
  kCount
};
const char* const kFaultNames[] = {
    "unexpected HTTP status",
    "429/503 without Retry-After or error body",
    "200 not text/event-stream",
    "malformed SSE line",
    "event not a JSON object",
    "chunk lacks or misstates OpenAI fields",
    "id or model changed within the stream",
    "finish_reason not set exactly once (stop/length)",
    "content after finish_reason",
    "usage missing, repeated, early or inconsistent",
    "no final data: [DONE]",
    "event after data: [DONE]",
    "stream ended inside an event",
};
static_assert(std::size(kFaultNames) == static_cast<size_t>(Fault::kCount));

// ---- One request ------------------------------------------------------------------

enum class Outcome { kOk, kShed, kFailed, kProtocol };

struct Transfer {
  // The request.
  bool chat = false;
  int64_t max_tokens = 0;
  std::string body;
  int64_t start_ns = 0;

  // What came back.
  long status = 0;           // read at the first body byte
  std::string error_body;    // a non-200 body, up to kErrorBodyBytesMax
  std::string line;          // the SSE line being received
  std::string data;          // the event being assembled from data: lines
  bool has_data = false;
  std::string id, model;
  int events = 0;
  int finish_count = 0;
  std::string finish_reason;
  bool usage_seen = false;
  int64_t completion_tokens = -1;
  bool done = false;
  std::string stream_error;  // an error event's message
  int64_t first_token_ns = 0;
  std::vector<std::pair<Fault, std::string>> faults;

  void fault(Fault f, std::string what) {
    if (faults.size() < 16) faults.emplace_back(f, std::move(what));
  }
};

std::string excerpt(std::string_view s, size_t n = 160) {
  std::string out(s.substr(0, n));
  if (s.size() > n) out += "...";
  return out;
}

bool is_count(const json& j, const char* key) {
  return j.contains(key) && j[key].is_number_integer() && j[key].get<int64_t>() >= 0;
}

// One event's data (the data: lines joined). The format is OpenAI's: every
// chunk has id, object, created, model and choices; the usage chunk (asked
// for with include_usage) has empty choices and comes after the finish_reason
// chunk and before [DONE].
void take_event(Transfer* t, const std::string& data) {
  ++t->events;
  if (t->done) return t->fault(Fault::kAfterDone, excerpt(data));
  if (data == "[DONE]") {
    t->done = true;
    if (t->finish_count != 1) t->fault(Fault::kFinishReason, "[DONE] after " + std::to_string(t->finish_count) + " finish_reasons");
    if (!t->usage_seen) t->fault(Fault::kUsage, "[DONE] without a usage chunk (include_usage was sent)");
    return;
  }
  const json j = json::parse(data, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return t->fault(Fault::kNotJson, excerpt(data));
  if (j.contains("error")) {
    const json& e = j["error"];
    t->stream_error = e.is_object() && e.contains("message") && e["message"].is_string() ? e["message"].get<std::string>()
                                                                                            : excerpt(data);
    if (!e.is_object()) t->fault(Fault::kChunkFields, "error event without an error object: " + excerpt(data));
    return;
  }
  const char* object = t->chat ? "chat.completion.chunk" : "text_completion";
  if (!j.contains("id") || !j["id"].is_string() || j["id"].get<std::string>().empty() || !j.contains("object") ||
      j["object"] != object || !is_count(j, "created") || !j.contains("model") || !j["model"].is_string() ||
      !j.contains("choices") || !j["choices"].is_array()) {
    return t->fault(Fault::kChunkFields, excerpt(data));
  }
  const std::string id = j["id"].get<std::string>(), model = j["model"].get<std::string>();
  if (t->id.empty()) {
    t->id = id;
    t->model = model;
  } else if (id != t->id || model != t->model) {
    t->fault(Fault::kIdChanged, "first " + t->id + " / " + t->model + ", then " + id + " / " + model);
  }
  const json& choices = j["choices"];
  const bool has_usage = j.contains("usage") && !j["usage"].is_null();
  if (choices.empty()) {
    if (!has_usage) return t->fault(Fault::kChunkFields, "empty choices and no usage: " + excerpt(data));
    const json& u = j["usage"];
    if (t->usage_seen) return t->fault(Fault::kUsage, "a second usage chunk");
    t->usage_seen = true;
    if (t->finish_count == 0) t->fault(Fault::kUsage, "usage before the finish_reason chunk");
    if (!u.is_object() || !is_count(u, "prompt_tokens") || !is_count(u, "completion_tokens") ||
        !is_count(u, "total_tokens")) {
      return t->fault(Fault::kUsage, "usage fields: " + excerpt(data));
    }
    const int64_t p = u["prompt_tokens"], c = u["completion_tokens"], total = u["total_tokens"];
    t->completion_tokens = c;
    if (p == 0 || total != p + c || c > t->max_tokens || (t->finish_reason == "length" && c != t->max_tokens)) {
      t->fault(Fault::kUsage, "max_tokens " + std::to_string(t->max_tokens) + ", finish_reason " + t->finish_reason +
                                  ", usage " + u.dump());
    }
    return;
  }
  if (has_usage) t->fault(Fault::kUsage, "usage on a chunk with choices: " + excerpt(data));
  if (choices.size() != 1) return t->fault(Fault::kChunkFields, "n=1 but " + std::to_string(choices.size()) + " choices");
  const json& c = choices[0];
  if (!c.is_object() || !c.contains("index") || c["index"] != 0 || !c.contains("finish_reason")) {
    return t->fault(Fault::kChunkFields, excerpt(data));
  }
  std::string text;
  if (t->chat) {
    if (!c.contains("delta") || !c["delta"].is_object()) return t->fault(Fault::kChunkFields, excerpt(data));
    const json& d = c["delta"];
    if (d.contains("role") && d["role"] != "assistant") t->fault(Fault::kChunkFields, excerpt(data));
    if (d.contains("content")) {
      if (!d["content"].is_string()) return t->fault(Fault::kChunkFields, excerpt(data));
      text = d["content"].get<std::string>();
    }
  } else {
    if (!c.contains("text") || !c["text"].is_string()) return t->fault(Fault::kChunkFields, excerpt(data));
    text = c["text"].get<std::string>();
  }
  if (t->finish_count > 0 && !text.empty()) t->fault(Fault::kAfterFinish, excerpt(data));
  if (!text.empty() && t->first_token_ns == 0) t->first_token_ns = now_ns();
  const json& fr = c["finish_reason"];
  if (fr.is_null()) {
    if (t->finish_count > 0) t->fault(Fault::kAfterFinish, "a chunk without finish_reason after it was set");
    return;
  }
  ++t->finish_count;
  if (!fr.is_string() || (fr != "stop" && fr != "length")) return t->fault(Fault::kFinishReason, fr.dump());
  if (t->finish_count > 1) return t->fault(Fault::kFinishReason, "set again: " + fr.dump());
  t->finish_reason = fr.get<std::string>();
}

// One SSE line (without its line end). Blank lines end events; ':' lines are
// comments; the only field OpenAI's streams use is data.
void take_line(Transfer* t, std::string_view line) {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  if (line.empty()) {
    if (t->has_data) take_event(t, t->data);
    t->data.clear();
    t->has_data = false;
    return;
  }
  if (line.front() == ':') return;
  if (line.rfind("data:", 0) != 0) return t->fault(Fault::kSseLine, excerpt(line));
  line.remove_prefix(5);
  if (!line.empty() && line.front() == ' ') line.remove_prefix(1);
  if (t->has_data) t->data += '\n';
  t->data.append(line);
  t->has_data = true;
}

struct Slot;  // a client

size_t on_body(char* bytes, size_t size, size_t count, void* user);

// ---- Process memory ------------------------------------------------------------------

struct ProcSample {
  int64_t rss_kb = -1;
  int64_t threads = -1;
  double cpu_s = -1;  // user + system time of every thread so far
};

// Fields 14 and 15 of /proc/<pid>/stat (utime, stime), in seconds; -1 if unreadable.
double process_cpu_s(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t close = all.rfind(')');  // comm may hold spaces and parentheses
  if (close == std::string::npos) return -1;
  std::istringstream rest(all.substr(close + 2));
  std::string field;
  unsigned long long utime = 0, stime = 0;
  for (int k = 3; k <= 13; ++k) rest >> field;  // state .. cmajflt
  if (!(rest >> utime >> stime)) return -1;
  return static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

ProcSample sample_process(int pid) {
  ProcSample s;
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) s.rss_kb = std::strtoll(line.c_str() + 6, nullptr, 10);
    if (line.rfind("Threads:", 0) == 0) s.threads = std::strtoll(line.c_str() + 8, nullptr, 10);
  }
  s.cpu_s = process_cpu_s(pid);
  return s;
}

std::string process_name(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/comm");
  std::string name;
  std::getline(in, name);
  return name;
}

int parent_of(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t close = all.rfind(')');  // comm may hold spaces and parentheses
  if (close == std::string::npos) return -1;
  std::istringstream rest(all.substr(close + 2));
  char state = 0;
  int ppid = -1;
  rest >> state >> ppid;
  return ppid;
}

std::vector<int> all_pids() {
  std::vector<int> pids;
  DIR* d = opendir("/proc");
  if (d == nullptr) return pids;
  while (dirent* e = readdir(d)) {
    char* end = nullptr;
    const long pid = std::strtol(e->d_name, &end, 10);
    if (end != e->d_name && *end == '\0') pids.push_back(static_cast<int>(pid));
  }
  closedir(d);
  return pids;
}

// The process (of ours: other users' fds are unreadable) that listens on the
// TCP port, or -1.
int listener_of_port(uint16_t port) {
  std::vector<std::string> inodes;
  for (const char* table : {"/proc/net/tcp", "/proc/net/tcp6"}) {
    std::ifstream in(table);
    std::string line;
    std::getline(in, line);  // header
    while (std::getline(in, line)) {
      std::istringstream f(line);
      std::string slot, local, remote, state, queues, timer, retr, uid, timeout, inode;
      f >> slot >> local >> remote >> state >> queues >> timer >> retr >> uid >> timeout >> inode;
      const size_t colon = local.rfind(':');
      if (state != "0A" || colon == std::string::npos) continue;  // 0A: LISTEN
      if (std::strtoul(local.c_str() + colon + 1, nullptr, 16) == port) inodes.push_back("socket:[" + inode + "]");
    }
  }
  if (inodes.empty()) return -1;
  for (int pid : all_pids()) {
    std::error_code ec;
    for (const auto& fd : fs::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec)) {
      std::error_code lec;
      const std::string target = fs::read_symlink(fd.path(), lec).string();
      if (!lec && std::find(inodes.begin(), inodes.end(), target) != inodes.end()) return pid;
    }
  }
  return -1;
}

int child_named(int parent, const std::string& name) {
  for (int pid : all_pids()) {
    if (parent_of(pid) == parent && process_name(pid) == name) return pid;
  }
  return -1;
}

// A watched process's samples.
struct Watch {
  int pid = -1;
  std::string label;
  std::vector<std::pair<double, ProcSample>> samples;  // (seconds since the load began, sample)
  ProcSample before, at_window_end, after_drain;
  int64_t rss_max_kb = -1;

  void take(double t, ProcSample s) {
    if (s.rss_kb < 0) return;
    samples.emplace_back(t, s);
    rss_max_kb = std::max(rss_max_kb, s.rss_kb);
  }
};

std::string mib(int64_t kb) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(kb) / 1024.0);
  return kb < 0 ? std::string("?") : std::string(buf);
}

// ---- HTTP helpers ----------------------------------------------------------------------

size_t to_string_sink(char* bytes, size_t size, size_t count, void* user) {
  auto* s = static_cast<std::string*>(user);
  if (s->size() < kErrorBodyBytesMax) s->append(bytes, size * count);
  return size * count;
}

// GET url; the status (0 when unreachable) and the body.
long http_get(const std::string& url, std::string* body) {
  CURL* c = curl_easy_init();
  if (c == nullptr) return 0;
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 5000L);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, to_string_sink);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, body);
  long status = 0;
  if (curl_easy_perform(c) == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
  curl_easy_cleanup(c);
  return status;
}

std::optional<json> get_status(const std::string& base_url) {
  std::string body;
  if (http_get(base_url + "/v1/status", &body) != 200) return std::nullopt;
  json j = json::parse(body, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return std::nullopt;
  return j;
}

uint16_t port_of(const std::string& url) {
  const size_t scheme = url.find("://");
  const size_t host = scheme == std::string::npos ? 0 : scheme + 3;
  const size_t slash = url.find('/', host);
  const std::string authority = url.substr(host, slash == std::string::npos ? std::string::npos : slash - host);
  const size_t colon = authority.rfind(':');
  if (colon == std::string::npos) return url.rfind("https", 0) == 0 ? 443 : 80;
  return static_cast<uint16_t>(std::strtoul(authority.c_str() + colon + 1, nullptr, 10));
}

// ---- The load ------------------------------------------------------------------------

struct Options {
  std::string url = "http://127.0.0.1:8080";
  bool url_given = false;
  int clients = 200;
  int seconds = 60;
  int drain_seconds = 30;
  int timeout_seconds = 120;
  uint64_t seed = 1;
  int pid = -1;
  bool start_demo = false;
  int vehicles = 24;
  std::string idlefleet;
  std::string demo_model;
  std::string model = "stories260K";
  int64_t max_tokens_min = 16, max_tokens_max = 128;
};

struct Slot {
  int index = 0;
  CURL* easy = nullptr;
  curl_slist* headers = nullptr;
  std::unique_ptr<Transfer> transfer;  // null while waiting
  int64_t next_start_ns = 0;
  uint64_t sent = 0;
};

size_t on_body(char* bytes, size_t size, size_t count, void* user) {
  auto* slot = static_cast<Slot*>(user);
  Transfer* t = slot->transfer.get();
  const size_t n = size * count;
  if (t->status == 0) curl_easy_getinfo(slot->easy, CURLINFO_RESPONSE_CODE, &t->status);
  if (t->status != 200) {
    if (t->error_body.size() < kErrorBodyBytesMax) t->error_body.append(bytes, n);
    return n;
  }
  std::string_view in(bytes, n);
  while (!in.empty()) {
    const size_t nl = in.find('\n');
    if (nl == std::string_view::npos) {
      if (t->line.size() + in.size() > kPendingLineBytesMax) {
        t->fault(Fault::kSseLine, "a line over " + std::to_string(kPendingLineBytesMax) + " bytes");
        t->line.clear();
      } else {
        t->line.append(in);
      }
      break;
    }
    if (t->line.empty()) {
      take_line(t, in.substr(0, nl));
    } else {
      t->line.append(in.substr(0, nl));
      take_line(t, t->line);
      t->line.clear();
    }
    in.remove_prefix(nl + 1);
  }
  return n;
}

struct Totals {
  uint64_t started = 0, ok = 0, shed = 0, shed_429 = 0, shed_503 = 0, failed = 0, failed_stream = 0,
           failed_transport = 0, cut_at_drain = 0, protocol = 0;
  uint64_t ok_in_window = 0, tokens_in_window = 0, tokens = 0, tokens_chat = 0, ok_chat = 0;
  std::array<uint64_t, static_cast<size_t>(Fault::kCount)> faults{};
  std::map<long, uint64_t> statuses;
  std::map<std::string, uint64_t> stream_errors, transport_errors;
  std::vector<std::string> examples[static_cast<size_t>(Fault::kCount)];
  std::vector<double> ttft_ms, total_ms;
  std::map<std::string, uint64_t> finish_reasons;
};

class Load {
 public:
  Load(const Options& o, std::vector<Watch>* watches) : o_(o), prng_(o.seed), watches_(watches) {}

  Totals run() {
    CURLM* multi = curl_multi_init();
    if (multi == nullptr) die("curl_multi_init failed");
    curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, static_cast<long>(o_.clients + 16));
    slots_.resize(static_cast<size_t>(o_.clients));
    for (int i = 0; i < o_.clients; ++i) {
      Slot& s = slots_[static_cast<size_t>(i)];
      s.index = i;
      s.easy = curl_easy_init();
      if (s.easy == nullptr) die("curl_easy_init failed");
      s.headers = curl_slist_append(nullptr, "Content-Type: application/json");
      s.headers = curl_slist_append(s.headers, "Accept: text/event-stream");
    }
    for (Watch& w : *watches_) w.before = sample_process(w.pid);

    start_ns_ = now_ns();
    const int64_t window_end_ns = start_ns_ + int64_t{o_.seconds} * 1'000'000'000;
    const int64_t drain_end_ns = window_end_ns + int64_t{o_.drain_seconds} * 1'000'000'000;
    int64_t next_sample_ns = start_ns_, next_progress_ns = start_ns_ + kProgressEveryMs * 1'000'000;
    bool window_over = false;
    for (;;) {
      const int64_t now = now_ns();
      if (!window_over && now >= window_end_ns) {
        window_over = true;
        for (Watch& w : *watches_) w.at_window_end = sample_process(w.pid);
      }
      if (!window_over) {
        for (Slot& s : slots_) {
          if (!s.transfer && s.next_start_ns <= now) begin(multi, &s);
        }
      }
      if (now >= next_sample_ns) {
        for (Watch& w : *watches_) w.take(ms_of(now - start_ns_) / 1000.0, sample_process(w.pid));
        next_sample_ns += kSampleEveryMs * 1'000'000;
      }
      if (now >= next_progress_ns) {
        progress(now);
        next_progress_ns += kProgressEveryMs * 1'000'000;
      }
      if (window_over && in_flight_ == 0) break;
      if (now >= drain_end_ns) {
        for (Slot& s : slots_) {
          if (!s.transfer) continue;
          curl_multi_remove_handle(multi, s.easy);
          ++totals_.cut_at_drain;
          ++totals_.failed;
          s.transfer.reset();
          --in_flight_;
        }
        break;
      }
      int running = 0;
      curl_multi_perform(multi, &running);
      int left = 0;
      while (CURLMsg* m = curl_multi_info_read(multi, &left)) {
        if (m->msg != CURLMSG_DONE) continue;
        Slot* s = nullptr;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, reinterpret_cast<char**>(&s));
        const CURLcode result = m->data.result;
        curl_multi_remove_handle(multi, s->easy);
        finish(s, result, now_ns(), window_end_ns);
      }
      int64_t wait_ms = kPollMsMax;
      if (!window_over) {
        for (const Slot& s : slots_) {
          if (!s.transfer) wait_ms = std::min(wait_ms, std::max<int64_t>(0, (s.next_start_ns - now) / 1'000'000));
        }
      }
      curl_multi_poll(multi, nullptr, 0, static_cast<int>(wait_ms), nullptr);
    }
    for (Watch& w : *watches_) w.after_drain = sample_process(w.pid);
    elapsed_s_ = ms_of(now_ns() - start_ns_) / 1000.0;
    for (Slot& s : slots_) {
      curl_easy_cleanup(s.easy);
      curl_slist_free_all(s.headers);
    }
    curl_multi_cleanup(multi);
    return totals_;
  }

  double elapsed_s() const { return elapsed_s_; }

 private:
  void begin(CURLM* multi, Slot* s) {
    auto t = std::make_unique<Transfer>();
    // Clients alternate the two endpoints; odd and even clients start on different ones.
    t->chat = ((s->sent + static_cast<uint64_t>(s->index)) & 1) != 0;
    t->max_tokens = prng_.in(o_.max_tokens_min, o_.max_tokens_max);
    const char* prompt = kPrompts[prng_.next() % std::size(kPrompts)];
    const uint64_t seed = prng_.next() >> 11;  // fits a double exactly, whatever the server parses it into
    json body = {{"model", o_.model},
                 {"max_tokens", t->max_tokens},
                 {"temperature", 0.8},
                 {"seed", seed},
                 {"stream", true},
                 {"stream_options", {{"include_usage", true}}}};
    if (t->chat) {
      body["messages"] = json::array({{{"role", "user"}, {"content", prompt}}});
    } else {
      body["prompt"] = prompt;
    }
    t->body = body.dump();
    const std::string url = o_.url + (t->chat ? "/v1/chat/completions" : "/v1/completions");
    CURL* e = s->easy;
    curl_easy_reset(e);
    curl_easy_setopt(e, CURLOPT_URL, url.c_str());
    curl_easy_setopt(e, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, static_cast<long>(o_.timeout_seconds) * 1000L);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, s->headers);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, t->body.c_str());
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, static_cast<long>(t->body.size()));
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, s);
    curl_easy_setopt(e, CURLOPT_PRIVATE, s);
    t->start_ns = now_ns();
    s->transfer = std::move(t);
    ++s->sent;
    ++totals_.started;
    ++in_flight_;
    if (curl_multi_add_handle(multi, e) != CURLM_OK) die("curl_multi_add_handle failed");
  }

  void finish(Slot* s, CURLcode result, int64_t now, int64_t window_end_ns) {
    std::unique_ptr<Transfer> t = std::move(s->transfer);
    --in_flight_;
    if (t->status == 0) curl_easy_getinfo(s->easy, CURLINFO_RESPONSE_CODE, &t->status);
    ++totals_.statuses[t->status];
    Outcome outcome = Outcome::kOk;
    int64_t wait_ms = 0;
    if (result != CURLE_OK) {
      outcome = Outcome::kFailed;
      ++totals_.failed_transport;
      ++totals_.transport_errors[curl_easy_strerror(result)];
    } else if (t->status == 200) {
      char* type = nullptr;
      curl_easy_getinfo(s->easy, CURLINFO_CONTENT_TYPE, &type);
      if (type == nullptr || std::string_view(type).rfind("text/event-stream", 0) != 0) {
        t->fault(Fault::kContentType, type == nullptr ? "none" : type);
      }
      if (!t->line.empty() || t->has_data) t->fault(Fault::kTruncated, excerpt(t->line.empty() ? t->data : t->line));
      if (!t->stream_error.empty()) {
        outcome = Outcome::kFailed;
        ++totals_.failed_stream;
        ++totals_.stream_errors[t->stream_error];
        if (t->done) t->fault(Fault::kAfterDone, "an error event and [DONE]");
      } else if (!t->done) {
        t->fault(Fault::kNoDone, std::to_string(t->events) + " events, finish_reason '" + t->finish_reason + "'");
      }
    } else if (t->status == 429 || t->status == 503) {
      curl_off_t retry_after = -1;
      if (curl_easy_getinfo(s->easy, CURLINFO_RETRY_AFTER, &retry_after) != CURLE_OK) retry_after = -1;
      const json e = json::parse(t->error_body, nullptr, false);
      const bool error_body = !e.is_discarded() && e.is_object() && e.contains("error") && e["error"].is_object();
      if (retry_after <= 0 || !error_body) {
        t->fault(Fault::kShedMalformed, std::to_string(t->status) + ", Retry-After " + std::to_string(retry_after) +
                                            ", body " + excerpt(t->error_body));
      } else {
        outcome = Outcome::kShed;
        ++totals_.shed;
        ++(t->status == 429 ? totals_.shed_429 : totals_.shed_503);
        wait_ms = std::min<int64_t>(retry_after, kRetryAfterSecondsMax) * 1000;
      }
    } else {
      t->fault(Fault::kStatus, std::to_string(t->status) + ": " + excerpt(t->error_body));
    }
    if (!t->faults.empty()) {
      outcome = Outcome::kProtocol;
      ++totals_.protocol;
      bool seen[static_cast<size_t>(Fault::kCount)] = {};
      for (const auto& [f, what] : t->faults) {
        const size_t k = static_cast<size_t>(f);
        if (!seen[k]) ++totals_.faults[k];
        seen[k] = true;
        if (totals_.examples[k].size() < kExamplesPerFaultMax) {
          totals_.examples[k].push_back("POST " + std::string(t->chat ? "/v1/chat/completions " : "/v1/completions ") +
                                        t->body + "\n        status " + std::to_string(t->status) + ", id " +
                                        (t->id.empty() ? "-" : t->id) + ": " + what);
        }
      }
    }
    if (outcome == Outcome::kOk) {
      ++totals_.ok;
      ++totals_.finish_reasons[t->finish_reason];
      const int64_t tokens = std::max<int64_t>(t->completion_tokens, 0);
      totals_.tokens += static_cast<uint64_t>(tokens);
      if (t->chat) ++totals_.ok_chat, totals_.tokens_chat += static_cast<uint64_t>(tokens);
      if (now <= window_end_ns) ++totals_.ok_in_window, totals_.tokens_in_window += static_cast<uint64_t>(tokens);
      if (t->first_token_ns != 0) totals_.ttft_ms.push_back(ms_of(t->first_token_ns - t->start_ns));
      totals_.total_ms.push_back(ms_of(now - t->start_ns));
    } else if (outcome == Outcome::kFailed || outcome == Outcome::kProtocol) {
      if (outcome == Outcome::kFailed) ++totals_.failed;
      wait_ms = kFailureBackoffMs;
    }
    s->next_start_ns = now + wait_ms * 1'000'000;
  }

  void progress(int64_t now) {
    std::string mem;
    for (const Watch& w : *watches_) {
      if (!w.samples.empty()) mem += ", " + w.label + " " + mib(w.samples.back().second.rss_kb);
    }
    std::fprintf(stderr, "api_load: %5.0f s: %d in flight, %llu ok, %llu shed, %llu failed, %llu protocol errors, "
                 "%llu tokens%s\n",
                 ms_of(now - start_ns_) / 1000.0, in_flight_, static_cast<unsigned long long>(totals_.ok),
                 static_cast<unsigned long long>(totals_.shed), static_cast<unsigned long long>(totals_.failed),
                 static_cast<unsigned long long>(totals_.protocol), static_cast<unsigned long long>(totals_.tokens),
                 mem.c_str());
  }

  const Options& o_;
  Prng prng_;
  std::vector<Watch>* watches_;
  std::vector<Slot> slots_;
  Totals totals_;
  int in_flight_ = 0;
  int64_t start_ns_ = 0;
  double elapsed_s_ = 0;
};

// ---- The demo ------------------------------------------------------------------------

struct Demo {
  transport::Process process;
  std::string dir;
  int nats_pid = -1;
};

Demo start_demo(Options* o) {
  std::string program = o->idlefleet;
  if (program.empty()) {
    std::error_code ec;
    program = (fs::read_symlink("/proc/self/exe", ec).parent_path() / "idlefleet").string();
  }
  uint16_t port = port_of(o->url);
  if (!o->url_given) {
    auto free = transport::free_loopback_port();
    if (!free) die("no free port: " + free.error().to_string());
    port = *free;
    o->url = "http://127.0.0.1:" + std::to_string(port);
  }
  const std::string dir = (fs::temp_directory_path() / ("api_load_demo_" + std::to_string(::getpid()))).string();
  fs::remove_all(dir);
  fs::create_directories(dir);
  transport::ProcessOptions p;
  p.program = program;
  p.args = {"demo", "--http-port", std::to_string(port), "--vehicles", std::to_string(o->vehicles),
            "--rate", "0.1", "--data-dir", dir};
  if (!o->demo_model.empty()) p.args.insert(p.args.end(), {"--model", o->demo_model});
  p.stdout_path = p.stderr_path = dir + "/demo.log";
  std::string command = program;
  for (const std::string& a : p.args) command += " " + a;
  std::fprintf(stderr, "api_load: starting %s (log %s)\n", command.c_str(), p.stdout_path.c_str());
  auto spawned = transport::Process::spawn(p);
  if (!spawned) die("starting the demo: " + spawned.error().to_string());
  Demo d{std::move(*spawned), dir, -1};

  // Ready when half the cars can take work (they fetch the model first).
  const int64_t deadline = now_ns() + kDemoReadyMsMax * 1'000'000;
  const int64_t wanted = (o->vehicles + 1) / 2;
  int64_t available = 0;
  while (now_ns() < deadline) {
    if (!d.process.running()) die("the demo exited; see " + p.stdout_path);
    if (auto st = get_status(o->url)) {
      available = (*st)["vehicles"].value("available", int64_t{0});
      if (available >= wanted) break;
    }
    usleep(250'000);
  }
  if (available < wanted) {
    die("the demo's cars did not become available within " + std::to_string(kDemoReadyMsMax / 1000) + " s (" +
        std::to_string(available) + " of " + std::to_string(o->vehicles) + "); see " + p.stdout_path);
  }
  d.nats_pid = child_named(d.process.pid(), "nats-server");
  std::fprintf(stderr, "api_load: demo pid %d on %s, %lld of %d cars available%s\n", d.process.pid(), o->url.c_str(),
               static_cast<long long>(available), o->vehicles,
               d.nats_pid > 0 ? (", nats-server pid " + std::to_string(d.nats_pid)).c_str() : "");
  return d;
}

void usage() {
  std::fprintf(stderr,
               "usage: api_load [--url URL] [--clients N] [--seconds S] [--seed S] [--drain-seconds S]\n"
               "                [--timeout-seconds S] [--pid P] [--model ID] [--max-tokens-min N] [--max-tokens-max N]\n"
               "                [--start-demo [--vehicles N] [--idlefleet PATH] [--demo-model PATH]]\n");
}

void print_watch(const Watch& w, double window_s) {
  std::printf("    %-28s start %s, max %s, at %.0f s %s, after the drain %s; threads %lld -> %lld\n",
              (w.label + " (pid " + std::to_string(w.pid) + ")").c_str(), mib(w.before.rss_kb).c_str(),
              mib(w.rss_max_kb).c_str(), window_s, mib(w.at_window_end.rss_kb).c_str(),
              mib(w.after_drain.rss_kb).c_str(), static_cast<long long>(w.before.threads),
              static_cast<long long>(w.at_window_end.threads));
  if (w.before.cpu_s >= 0 && w.at_window_end.cpu_s >= 0) {
    std::printf("      CPU in the window: %.1f s (%.2f cores)\n", w.at_window_end.cpu_s - w.before.cpu_s,
                (w.at_window_end.cpu_s - w.before.cpu_s) / window_s);
  }
  std::string rss, threads;
  double next_t = 0;
  for (const auto& [t, s] : w.samples) {
    if (t + 0.5 < next_t) continue;
    char buf[48];
    std::snprintf(buf, sizeof buf, "%s%.0f", rss.empty() ? "" : " ", static_cast<double>(s.rss_kb) / 1024.0);
    rss += buf;
    std::snprintf(buf, sizeof buf, "%s%lld", threads.empty() ? "" : " ", static_cast<long long>(s.threads));
    threads += buf;
    next_t += 5;
  }
  std::printf("      every 5 s: RSS (MiB) %s\n                 threads %s\n", rss.c_str(), threads.c_str());
  // Growth over the second half of the window, where a leak would show.
  int64_t mid = -1, last = -1;
  for (const auto& [t, s] : w.samples) {
    if (mid < 0 && t >= window_s / 2) mid = s.rss_kb;
    if (t <= window_s + 0.5) last = s.rss_kb;
  }
  if (mid >= 0 && last >= 0) {
    std::printf("      second half of the window: %+.1f MiB (%+.1f%%)\n", static_cast<double>(last - mid) / 1024.0,
                100.0 * static_cast<double>(last - mid) / static_cast<double>(mid));
  }
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        usage();
        std::exit(2);
      }
      return argv[++i];
    };
    auto number = [&]() -> long long {
      const std::string v = value();
      char* end = nullptr;
      const long long n = std::strtoll(v.c_str(), &end, 10);
      if (v.empty() || *end != '\0') {
        std::fprintf(stderr, "api_load: %s needs a number, not '%s'\n", a.c_str(), v.c_str());
        std::exit(2);
      }
      return n;
    };
    if (a == "--url") o.url = value(), o.url_given = true;
    else if (a == "--clients") o.clients = static_cast<int>(number());
    else if (a == "--seconds") o.seconds = static_cast<int>(number());
    else if (a == "--drain-seconds") o.drain_seconds = static_cast<int>(number());
    else if (a == "--timeout-seconds") o.timeout_seconds = static_cast<int>(number());
    else if (a == "--seed") o.seed = static_cast<uint64_t>(number());
    else if (a == "--pid") o.pid = static_cast<int>(number());
    else if (a == "--model") o.model = value();
    else if (a == "--max-tokens-min") o.max_tokens_min = number();
    else if (a == "--max-tokens-max") o.max_tokens_max = number();
    else if (a == "--start-demo") o.start_demo = true;
    else if (a == "--vehicles") o.vehicles = static_cast<int>(number());
    else if (a == "--idlefleet") o.idlefleet = value();
    else if (a == "--demo-model") o.demo_model = value();
    else {
      usage();
      return 2;
    }
  }
  while (!o.url.empty() && o.url.back() == '/') o.url.pop_back();
  if (o.clients < 1 || o.clients > kClientsMax || o.seconds < 1 || o.seconds > kSecondsMax || o.drain_seconds < 0 ||
      o.drain_seconds > kSecondsMax || o.timeout_seconds < 1 || o.timeout_seconds > kSecondsMax ||
      o.max_tokens_min < 1 || o.max_tokens_max < o.max_tokens_min || o.vehicles < 1 || o.vehicles > 100'000) {
    std::fprintf(stderr, "api_load: --clients 1..%d, --seconds and --timeout-seconds 1..%d, --drain-seconds 0..%d, "
                 "1 <= --max-tokens-min <= --max-tokens-max, --vehicles 1..100000\n",
                 kClientsMax, kSecondsMax, kSecondsMax);
    return 2;
  }
  curl_global_init(CURL_GLOBAL_DEFAULT);
  ::signal(SIGPIPE, SIG_IGN);

  std::optional<Demo> demo;
  if (o.start_demo) demo = start_demo(&o);

  std::vector<Watch> watches;
  const int server_pid = o.pid > 0 ? o.pid : demo ? demo->process.pid() : listener_of_port(port_of(o.url));
  if (server_pid > 0) {
    const std::string name = process_name(server_pid);
    watches.push_back({server_pid, name.empty() ? "server" : name, {}, {}, {}, {}, -1});
    const int nats = demo && demo->nats_pid > 0 ? demo->nats_pid : child_named(server_pid, "nats-server");
    if (nats > 0) watches.push_back({nats, "nats-server", {}, {}, {}, {}, -1});
  } else {
    std::fprintf(stderr, "api_load: no server process found for %s (give --pid): memory is not sampled\n",
                 o.url.c_str());
  }
  const std::optional<json> status_before = get_status(o.url);

  std::printf("api_load: %s, %u cores, %s, load average %s\n", cpu_model().c_str(),
              static_cast<unsigned>(sysconf(_SC_NPROCESSORS_ONLN)), utc_date().c_str(), load_average().c_str());
  std::printf("api_load: %d streaming clients for %d s against %s (model %s, max_tokens %lld..%lld, seed %llu)\n",
              o.clients, o.seconds, o.url.c_str(), o.model.c_str(), static_cast<long long>(o.max_tokens_min),
              static_cast<long long>(o.max_tokens_max), static_cast<unsigned long long>(o.seed));
  if (status_before) {
    std::printf("api_load: server before: %s vehicles known, %s available\n",
                (*status_before)["vehicles"].value("known", json(0)).dump().c_str(),
                (*status_before)["vehicles"].value("available", json(0)).dump().c_str());
  }
  std::fflush(stdout);

  Load load(o, &watches);
  const double client_cpu_before_s = process_cpu_s(::getpid());
  const Totals t = load.run();
  const double client_cpu_s = process_cpu_s(::getpid()) - client_cpu_before_s;
  const std::string load_at_end = load_average();
  const std::optional<json> status_after = get_status(o.url);

  const double window_s = o.seconds;
  std::printf("\n== Requests (%llu sent in %d s, then up to %d s to drain; %.1f s in all)\n",
              static_cast<unsigned long long>(t.started), o.seconds, o.drain_seconds, load.elapsed_s());
  std::printf("    completed       %llu (%llu chat, %llu completions); %llu within the %d s window\n",
              static_cast<unsigned long long>(t.ok), static_cast<unsigned long long>(t.ok_chat),
              static_cast<unsigned long long>(t.ok - t.ok_chat), static_cast<unsigned long long>(t.ok_in_window),
              o.seconds);
  std::string reasons;
  for (const auto& [r, n] : t.finish_reasons) reasons += (reasons.empty() ? "" : ", ") + r + " " + std::to_string(n);
  std::printf("    finish_reason   %s\n", reasons.empty() ? "-" : reasons.c_str());
  std::printf("    tokens          %llu (usage.completion_tokens); %llu within the window\n",
              static_cast<unsigned long long>(t.tokens), static_cast<unsigned long long>(t.tokens_in_window));
  std::printf("    requests/s      %.1f      tokens/s %.0f   (completed within the window / %d s)\n",
              static_cast<double>(t.ok_in_window) / window_s, static_cast<double>(t.tokens_in_window) / window_s,
              o.seconds);
  std::printf("    time to first token  p50 %8.1f ms   p99 %8.1f ms   max %8.1f ms\n", percentile(t.ttft_ms, 0.5),
              percentile(t.ttft_ms, 0.99), percentile(t.ttft_ms, 1.0));
  std::printf("    total time           p50 %8.1f ms   p99 %8.1f ms   max %8.1f ms\n", percentile(t.total_ms, 0.5),
              percentile(t.total_ms, 0.99), percentile(t.total_ms, 1.0));
  std::printf("    shed            %llu (429: %llu, 503: %llu; each client waited Retry-After before its next request)\n",
              static_cast<unsigned long long>(t.shed), static_cast<unsigned long long>(t.shed_429),
              static_cast<unsigned long long>(t.shed_503));
  std::printf("    failed          %llu (error event in the stream %llu, transfer %llu, still running at the drain's "
              "end %llu)\n",
              static_cast<unsigned long long>(t.failed), static_cast<unsigned long long>(t.failed_stream),
              static_cast<unsigned long long>(t.failed_transport), static_cast<unsigned long long>(t.cut_at_drain));
  for (const auto& [what, n] : t.stream_errors) {
    std::printf("      %llu x stream error: %s\n", static_cast<unsigned long long>(n), what.c_str());
  }
  for (const auto& [what, n] : t.transport_errors) {
    std::printf("      %llu x transfer: %s\n", static_cast<unsigned long long>(n), what.c_str());
  }
  std::printf("    protocol errors %llu\n", static_cast<unsigned long long>(t.protocol));
  for (size_t k = 0; k < static_cast<size_t>(Fault::kCount); ++k) {
    if (t.faults[k] == 0) continue;
    std::printf("      %llu x %s\n", static_cast<unsigned long long>(t.faults[k]), kFaultNames[k]);
    for (const std::string& e : t.examples[k]) std::printf("        %s\n", e.c_str());
  }
  std::string statuses;
  for (const auto& [code, n] : t.statuses) {
    statuses += (statuses.empty() ? "" : ", ") + std::to_string(code) + ": " + std::to_string(n);
  }
  std::printf("    HTTP statuses   %s\n", statuses.c_str());

  if (!watches.empty()) {
    std::printf("\n== Server memory (VmRSS, sampled every %lld ms)\n", static_cast<long long>(kSampleEveryMs));
    for (const Watch& w : watches) print_watch(w, window_s);
  }
  if (status_before && status_after) {
    auto delta = [&](const char* key) {
      return (*status_after)["jobs"].value(key, int64_t{0}) - (*status_before)["jobs"].value(key, int64_t{0});
    };
    std::printf("\n== Coordinator (/v1/status, during the run): jobs submitted %lld, done %lld, failed %lld, cancelled "
                "%lld, refused %lld; preemptions %lld; now queued %lld, running %lld\n",
                static_cast<long long>(delta("submitted")), static_cast<long long>(delta("done")),
                static_cast<long long>(delta("failed")), static_cast<long long>(delta("cancelled")),
                static_cast<long long>(delta("refused")),
                static_cast<long long>(status_after->value("preemptions", int64_t{0}) -
                                       status_before->value("preemptions", int64_t{0})),
                static_cast<long long>((*status_after)["jobs"].value("queued", int64_t{0})),
                static_cast<long long>((*status_after)["jobs"].value("running", int64_t{0})));
  }
  std::printf("\nthis client used %.1f s of CPU (%.2f cores) on the same machine; load average at the end: %s\n",
              client_cpu_s, client_cpu_s / load.elapsed_s(), load_at_end.c_str());
  std::fflush(stdout);

  if (demo) {
    demo->process.signal(SIGTERM);
    const std::optional<int> code = demo->process.wait(kDemoStopGraceMs);
    const int status = code ? *code : demo->process.stop(0);
    std::printf("api_load: the demo stopped with status %d%s\n", status, code ? "" : " (killed after the grace period)");
    if (status == 0) {
      fs::remove_all(demo->dir);
    } else {
      std::printf("api_load: its log and data are kept in %s\n", demo->dir.c_str());
    }
  }
  curl_global_cleanup();
  return t.protocol == 0 && t.failed == 0 ? 0 : 1;
}
