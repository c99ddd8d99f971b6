// Bad input against the live fleet: nats-server, `idlefleet coordinator
// --verbose`, `idlefleet agent --vehicles 2` (simulated cars) and
// `idlefleet agent --vss-nats` (one car fed by a VSS gateway) as real processes.
//
// While streamed requests run, the test publishes garbage on every subject
// the processes listen to: text that is not a message (not JSON, not an
// object, another version, an unknown type, over kMessageBytesMax, fields out
// of range), messages on subjects that name no valid vehicle, messages from
// vehicles that never said hello or that name another vehicle, and, posing
// as a real vehicle on its own subject, messages about attempts it does not
// hold, chunks that leave a gap, contradict tokens already produced or
// repeat them, and completions with the wrong count. The agents' subjects
// (down, vss, sim) get garbage too.
//
// Then: every request still completes with status 200 and exactly the text
// of `idlefleet run` with the same settings (nothing lost, nothing
// duplicated), every process is alive, /metrics counts each refusal under
// its reason, and the logs hold a line for each kind (a flood of one kind is
// logged at a bounded rate, LogLimiter, so only the first few are checked).
//
// A second test sends HTTP garbage to the same coordinator: each gets
// OpenAI's error object with the right status, never a 500. A third checks
// that, with auth off, Authorization headers are ignored and Idempotency-Key
// replays are scoped by the client's address.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "core/protocol.h"
#include "support/http_client.h"
#include "support/process_util.h"
#include "transport/nats_client.h"
#include "transport/nats_server.h"
#include "transport/process.h"

namespace idlefleet::bad_input_test {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const fs::path kShared = fs::path(IDLEFLEET_SOURCE_DIR) / ".." / "shared" / "models";

using testing::eventually;
using testing::run_capture;
using testing::shell_quote;
int64_t now_ms() { return testing::steady_now_ms(); }

std::string read_file(const fs::path& path) {
  std::ifstream in(path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A chunk a real vehicle sent, as seen by the test's own subscription.
struct SeenChunk {
  std::string vehicle_id;
  core::ChunkMessage chunk;
};

// The processes, started once for the suite.
class BadInput : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!fs::exists(kShared / "stories260K.bin")) return;
    dir_ = fs::path(::testing::TempDir()) / ("bad_input_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    model_ = (dir_ / "stories260K.gguf").string();
    run_capture(std::string(IDLEFLEET_BINARY) + " model convert-llama2c " +
                shell_quote((kShared / "stories260K.bin").string()) + " --tokenizer " +
                shell_quote((kShared / "tok512.bin").string()) + " -o " + shell_quote(model_) + " 2>&1");
    if (!fs::exists(model_)) return setup_failed("model conversion failed");

    transport::NatsServerOptions n;
    n.log_path = (dir_ / "nats.log").string();
    n.max_payload_bytes = 8u << 20;  // above core::kMessageBytesMax, so oversized messages reach the coordinator
    auto nats = transport::NatsServer::start(n);
    if (!nats) return setup_failed(nats.error().to_string());
    nats_ = nats->release();

    auto port = transport::free_loopback_port();
    if (!port) return setup_failed("no free port");
    http_port_ = *port;
    base_url_ = "http://127.0.0.1:" + std::to_string(http_port_);
    transport::ProcessOptions co;
    co.program = IDLEFLEET_BINARY;
    co.args = {"coordinator", "--nats", nats_->url(), "--http-port", std::to_string(http_port_), "--data-dir",
               (dir_ / "data").string(), "--model", "stories260K=" + model_, "--lease-ms", "3000", "--verbose"};
    co.stdout_path = co.stderr_path = (dir_ / "coordinator.log").string();
    auto coordinator = transport::Process::spawn(co);
    if (!coordinator) return setup_failed(coordinator.error().to_string());
    coordinator_ = new transport::Process(std::move(*coordinator));
    if (!transport::wait_for_tcp("127.0.0.1", http_port_, 20000)) return setup_failed("the coordinator did not start");

    transport::ProcessOptions a;
    a.program = IDLEFLEET_BINARY;
    // 20:00 on the simulated clock: the cars are home.
    a.args = {"agent", "--vehicles", "2", "--nats", nats_->url(), "--coordinator", base_url_, "--start", "20:00",
              "--cache-dir", (dir_ / "cache").string(), "--target-soc", "50", "--verbose"};
    a.stdout_path = a.stderr_path = (dir_ / "agent.log").string();
    auto agent = transport::Process::spawn(a);
    if (!agent) return setup_failed(agent.error().to_string());
    agent_ = new transport::Process(std::move(*agent));

    // A car fed by a vehicle gateway over NATS: it listens on its VSS subject.
    transport::ProcessOptions g;
    g.program = IDLEFLEET_BINARY;
    g.args = {"agent", "--vehicles", "1", "--vss-nats", "--id-prefix", "gw", "--nats", nats_->url(), "--coordinator",
              base_url_, "--cache-dir", (dir_ / "gw-cache").string()};
    g.stdout_path = g.stderr_path = (dir_ / "gateway.log").string();
    auto gateway = transport::Process::spawn(g);
    if (!gateway) return setup_failed(gateway.error().to_string());
    gateway_ = new transport::Process(std::move(*gateway));
  }

  static void TearDownTestSuite() {
    if (gateway_ != nullptr) gateway_->stop();
    if (agent_ != nullptr) agent_->stop();
    if (coordinator_ != nullptr) coordinator_->stop();
    if (nats_ != nullptr) nats_->stop();
    delete gateway_;
    delete agent_;
    delete coordinator_;
    delete nats_;
    gateway_ = nullptr;
    agent_ = nullptr;
    coordinator_ = nullptr;
    nats_ = nullptr;
    if (!failed_ && !dir_.empty()) fs::remove_all(dir_);
  }

  static void setup_failed(std::string why) { setup_error_ = std::move(why); }

  void SetUp() override {
    if (!fs::exists(kShared / "stories260K.bin")) {
      if (std::getenv("CI") != nullptr) FAIL() << "../shared/models is missing in CI";
      GTEST_SKIP() << "*** ../shared/models/stories260K.bin is absent: the bad-input test needs a model ***";
    }
    ASSERT_TRUE(setup_error_.empty()) << setup_error_ << "\n" << log("coordinator.log");
  }

  void TearDown() override {
    if (HasFailure()) failed_ = true;
  }

  static json get_json(const std::string& path) {
    auto r = testing::http_get(base_url_ + path);
    if (r.status != 200) return json::object();
    json j = json::parse(r.body, nullptr, false);
    return j.is_discarded() ? json::object() : j;
  }
  static json status() { return get_json("/v1/status"); }

  // idlefleet_messages_rejected_total{reason="..."} from /metrics, by reason.
  static std::map<std::string, uint64_t> rejected() { return counters("idlefleet_messages_rejected_total", "reason"); }

  // A labelled counter family from /metrics, by label value.
  static std::map<std::string, uint64_t> counters(const std::string& name, const std::string& label) {
    std::map<std::string, uint64_t> out;
    auto r = testing::http_get(base_url_ + "/metrics");
    const std::regex kLine("^" + name + "\\{" + label + "=\"([a-z_]+)\"\\} ([0-9]+)$");
    std::istringstream in(r.body);
    std::string line;
    while (std::getline(in, line)) {
      std::smatch m;
      if (std::regex_match(line, m, kLine)) out[m[1]] = std::stoull(m[2]);
    }
    return out;
  }

  static std::string log(const std::string& name) {
    const std::string s = read_file(dir_ / name);
    return s.size() > 6000 ? s.substr(s.size() - 6000) : s;
  }

  static fs::path dir_;
  static std::string model_;
  static transport::NatsServer* nats_;
  static transport::Process* coordinator_;
  static transport::Process* agent_;
  static transport::Process* gateway_;
  static uint16_t http_port_;
  static std::string base_url_;
  static std::string setup_error_;
  static bool failed_;
};

fs::path BadInput::dir_;
std::string BadInput::model_;
transport::NatsServer* BadInput::nats_ = nullptr;
transport::Process* BadInput::coordinator_ = nullptr;
transport::Process* BadInput::agent_ = nullptr;
transport::Process* BadInput::gateway_ = nullptr;
uint16_t BadInput::http_port_ = 0;
std::string BadInput::base_url_;
std::string BadInput::setup_error_;
bool BadInput::failed_ = false;

struct Request {
  bool chat = false;
  std::string prompt;
  uint64_t seed = 0;
  int max_tokens = 0;
  double temperature = 0.8;
};

struct Outcome {
  long status = 0;
  std::string text;
  std::string finish_reason;
  int done_markers = 0;
  std::string error;
};

// Streams one request to the end.
Outcome stream(const std::string& base_url, const Request& q, std::atomic<int>* events) {
  json body = {{"model", "stories260K"}, {"max_tokens", q.max_tokens}, {"temperature", q.temperature},
               {"seed", q.seed},         {"stream", true}};
  if (q.chat) {
    body["messages"] = json::array({{{"role", "user"}, {"content", q.prompt}}});
  } else {
    body["prompt"] = q.prompt;
  }
  testing::SseParser sse;
  Outcome out;
  auto r = testing::http_post_stream(
      base_url + (q.chat ? "/v1/chat/completions" : "/v1/completions"), body.dump(),
      [&](std::string_view piece) {
        sse.feed(piece);
        for (const std::string& e : sse.take_events()) {
          if (e == "[DONE]") {
            ++out.done_markers;
            continue;
          }
          const json j = json::parse(e, nullptr, false);
          if (j.is_discarded() || !j.contains("choices")) {
            out.error += e;
            continue;
          }
          for (const auto& c : j["choices"]) {
            if (q.chat) {
              if (c.contains("delta") && c["delta"].contains("content")) out.text += c["delta"]["content"].get<std::string>();
            } else {
              out.text += c.value("text", "");
            }
            if (c.contains("finish_reason") && c["finish_reason"].is_string()) {
              out.finish_reason = c["finish_reason"].get<std::string>();
            }
          }
          (*events)++;
        }
      },
      {"Content-Type: application/json"});
  out.status = r.status;
  if (!r.error.empty()) out.error += r.error;
  return out;
}

// stories260K runs thousands of tokens per second, so a fixed batch of
// requests may be over before the test forges messages about running jobs:
// a feeder keeps kInFlightMin requests open until the forging is done.
constexpr int kRequestsMax = 150;
constexpr int kRequestsFirst = 12;
constexpr int kInFlightMin = 6;

TEST_F(BadInput, GarbageOnEverySubjectIsRefusedAndNoJobIsLostOrChanged) {
  ASSERT_TRUE(eventually([&] { return status().value("/vehicles/online"_json_pointer, 0) == 3; }, 20000))
      << status().dump() << log("agent.log") << log("gateway.log");
  ASSERT_TRUE(eventually([&] { return status().value("/vehicles/available"_json_pointer, 0) >= 1; }, 20000))
      << status().dump() << log("agent.log");
  const std::string car1 = "car-01", car2 = "car-02", gateway_car = "gw-01";

  // The test's own connection: it watches what the vehicles send, and it
  // publishes the garbage.
  auto client = transport::NatsClient::connect({.url = nats_->url(), .name = "bad-input-test"});
  ASSERT_TRUE(client.has_value()) << client.error().to_string();
  transport::NatsClient& nats = **client;
  std::mutex seen_mu;
  std::vector<SeenChunk> chunks;
  std::vector<std::pair<std::string, core::DoneMessage>> dones;
  std::set<std::string> sent;  // subject + " " + data of what the test published: not the vehicles' own
  ASSERT_TRUE(nats.subscribe(core::kUpSubjectWildcard, [&](std::string_view subject, std::string_view data) {
                    auto m = core::decode_message(data);
                    if (!m) return;
                    const std::string vid(core::vehicle_of_up_subject(subject));
                    std::lock_guard<std::mutex> lock(seen_mu);
                    if (sent.count(std::string(subject) + " " + std::string(data)) != 0) return;
                    if (auto* c = std::get_if<core::ChunkMessage>(&*m)) chunks.push_back({vid, *c});
                    if (auto* d = std::get_if<core::DoneMessage>(&*m)) dones.emplace_back(vid, *d);
                  }).has_value());
  ASSERT_TRUE(nats.flush().has_value());
  auto publish = [&](const std::string& subject, const std::string& data) {
    {
      std::lock_guard<std::mutex> lock(seen_mu);
      sent.insert(subject + " " + data);
    }
    auto st = nats.publish(subject, data);
    ASSERT_TRUE(st.has_value()) << subject << ": " << st.error().to_string();
  };
  auto send = [&](const std::string& vid, const core::Message& m) { publish(core::up_subject(vid), core::encode_message(m)); };

  // The work: streamed completions and chats, more than two cars can run at once.
  const char* prompts[] = {"Once upon a time", "The little dog", "Lily and Ben", "One day, a bird",
                           "The sun was", "Tom had a red ball"};
  std::vector<Request> requests;
  for (int i = 0; i < kRequestsMax; ++i) {
    requests.push_back({i % 3 == 2, prompts[i % 6], static_cast<uint64_t>(7000 + i), 380 + (i % 4) * 30,
                        i % 4 == 0 ? 0.0 : 0.8});
  }
  std::vector<Outcome> outcomes(requests.size());
  std::atomic<int> events{0};
  std::atomic<int> launched{0};
  std::atomic<int> finished{0};
  std::atomic<bool> feeding{true};
  std::vector<std::thread> clients;  // the feeder's, until it is joined
  clients.reserve(requests.size());
  std::thread feeder([&] {
    auto launch = [&] {
      const int i = launched.load();
      clients.emplace_back([&, i] {
        outcomes[i] = stream(base_url_, requests[i], &events);
        finished++;
      });
      launched++;
    };
    for (int i = 0; i < kRequestsFirst; ++i) launch();
    while (feeding.load() && launched.load() < kRequestsMax) {
      if (launched.load() - finished.load() < kInFlightMin) {
        launch();
      } else {
        eventually([&] { return !feeding.load() || launched.load() - finished.load() < kInFlightMin; }, 1000);
      }
    }
  });
  // Stops the feeder and waits for every request, on any way out of the test.
  struct JoinAll {
    std::atomic<bool>* feeding;
    std::thread* feeder;
    std::vector<std::thread>* clients;
    void operator()() {
      feeding->store(false);
      if (feeder->joinable()) feeder->join();
      for (auto& t : *clients) {
        if (t.joinable()) t.join();
      }
    }
    ~JoinAll() { (*this)(); }
  } join_all{&feeding, &feeder, &clients};

  ASSERT_TRUE(eventually(
      [&] {
        std::lock_guard<std::mutex> lock(seen_mu);
        return !chunks.empty();
      },
      20000))
      << status().dump() << log("coordinator.log");
  const std::map<std::string, uint64_t> before = rejected();

  // ---- Not a message at all (malformed_message) ----------------------------------
  const std::string oversized = R"({"v":1,"type":"state","pad":")" + std::string(core::kMessageBytesMax, 'x') + "\"}";
  for (const std::string& garbage :
       // The first five of a kind are logged (LogLimiter): one of each sort.
       {std::string("this is not json"), std::string("[1,2,3]"),
        std::string(R"({"v":2,"type":"hello","vehicle_id":"x","memory_bytes":1})"),
        std::string(R"({"v":1,"type":"teleport","vehicle_id":"x"})"), oversized, std::string("{\"v\":1,"),
        std::string("\"hello\""), std::string(R"({"type":"hello","vehicle_id":"x","memory_bytes":1})"),
        std::string(R"({"v":1})"),
        // Fields out of range or of the wrong type.
        std::string(R"({"v":1,"type":"state","vehicle_id":")" + car1 +
                    R"(","state":"parked","eligible":true,"soc_pct":150,"sent_at":1})"),
        std::string(R"({"v":1,"type":"chunk","job_id":"j","attempt":1,"first_index":0,"ids":[-1]})"),
        std::string(R"({"v":1,"type":"chunk","job_id":"j","attempt":1,"first_index":0,"ids":[16777216]})"),
        std::string(R"({"v":1,"type":"chunk","job_id":"j","attempt":99999999,"first_index":0,"ids":[1]})"),
        std::string(R"({"v":1,"type":"done","job_id":"j","attempt":1,"total_tokens":3,"finish_reason":"bored"})"),
        std::string(R"({"v":1,"type":"hello","vehicle_id":")" + std::string(200, 'v') + R"(","memory_bytes":1})"),
        std::string(""), std::string("\xff\xfe\x00\x01", 4)}) {
    publish(core::up_subject(car1), garbage);
  }
  {
    core::ChunkMessage big{"j", 1, 0, std::vector<int32_t>(core::kChunkTokensMax + 1, 5)};
    send(car1, big);
  }

  // ---- Subjects that name no vehicle (bad_subject) --------------------------------
  const std::string hello_text =
      core::encode_message(core::HelloMessage{"ghost", {"stories260K"}, 8ull << 30, 10.0, "ghost-instance"});
  publish("idlefleet.v1.up." + std::string(core::kIdBytesMax + 1, 'g'), hello_text);
  publish("idlefleet.v1.up.car$01", hello_text);
  publish("idlefleet.v1.up.car%01", "not json either");

  // ---- Vehicles that are not who they say, or that never said hello ----------------
  send(car1, core::HelloMessage{car2, {"stories260K"}, 8ull << 30, 10.0, "impostor"});  // vehicle_mismatch
  core::StateMessage fake_state;
  fake_state.vehicle_id = car2;
  fake_state.state = "eligible";
  fake_state.eligible = true;
  fake_state.soc_pct = 90;
  fake_state.sent_at = 1;
  send(car1, fake_state);  // vehicle_mismatch
  fake_state.vehicle_id = "ghost-7";
  send("ghost-7", fake_state);  // unknown_vehicle
  send("ghost-7", core::ChunkMessage{"j", 1, 0, {1}});  // unknown_vehicle
  send("ghost-8", core::DoneMessage{"j", 1, 1, "stop"});  // unknown_vehicle
  // A vehicle does not send assignments.
  send(car1, core::AssignMessage{"j", 1, "stories260K", {1, 2}, {}, 8, {}, {}, 1});  // unexpected_message
  send(car1, core::CancelMessage{"j", 1});                                          // unexpected_message

  // ---- Attempts the vehicle does not hold ------------------------------------------
  send(car1, core::ChunkMessage{"cmpl-no-such-job", 1, 0, {1}});  // unknown_job
  send(car2, core::StartedMessage{"cmpl-no-such-job", 1});        // unknown_job
  SeenChunk latest;
  auto latest_chunk = [&] {
    std::lock_guard<std::mutex> lock(seen_mu);
    latest = chunks.back();
  };
  latest_chunk();
  const std::string other = latest.vehicle_id == car1 ? car2 : car1;
  send(latest.vehicle_id, core::ChunkMessage{latest.chunk.job_id, 999, latest.chunk.first_index, latest.chunk.ids});
  send(latest.vehicle_id, core::DoneMessage{latest.chunk.job_id, 999, latest.chunk.first_index + 1, "stop"});
  send(latest.vehicle_id, core::StartedMessage{latest.chunk.job_id, 999});
  send(latest.vehicle_id, core::PreemptedMessage{latest.chunk.job_id, 999, 0, "driver back"});
  send(latest.vehicle_id, core::FailedMessage{latest.chunk.job_id, 999, "no"});
  // The right attempt, from the other car.
  send(other, core::ChunkMessage{latest.chunk.job_id, latest.chunk.attempt, latest.chunk.first_index, {1}});
  send(other, core::DoneMessage{latest.chunk.job_id, latest.chunk.attempt, 1, "stop"});
  send(other, core::PreemptedMessage{latest.chunk.job_id, latest.chunk.attempt, 0, "not mine"});
  ASSERT_TRUE(nats.flush().has_value());

  // ---- Posing as the vehicle that runs a job: each forgery is retried on a
  // newer chunk until its refusal is counted, since a job may end meanwhile.
  auto forge_until_counted = [&](const std::string& reason, const std::function<core::Message(const SeenChunk&)>& make) {
    const int64_t deadline = now_ms() + 15000;
    while (now_ms() < deadline) {
      const uint64_t was = rejected()[reason];
      latest_chunk();
      send(latest.vehicle_id, make(latest));
      if (eventually([&] { return rejected()[reason] > was; }, 1000)) return true;
    }
    return false;
  };
  // Duplicates that agree are accepted and change nothing.
  for (int i = 0; i < 3; ++i) {
    std::vector<SeenChunk> copy;
    {
      std::lock_guard<std::mutex> lock(seen_mu);
      copy = chunks;
    }
    for (size_t k = copy.size() > 20 ? copy.size() - 20 : 0; k < copy.size(); ++k) send(copy[k].vehicle_id, copy[k].chunk);
  }
  // A chunk from the future (a gap: reordered or lost in between).
  EXPECT_TRUE(forge_until_counted("bad_chunk", [](const SeenChunk& s) -> core::Message {
    return core::ChunkMessage{s.chunk.job_id, s.chunk.attempt, s.chunk.first_index + 1000, s.chunk.ids};
  })) << log("coordinator.log");
  // A completion whose token count does not match what arrived.
  EXPECT_TRUE(forge_until_counted("bad_done", [](const SeenChunk& s) -> core::Message {
    return core::DoneMessage{s.chunk.job_id, s.chunk.attempt, core::kTokenIdsMax, "stop"};
  })) << log("coordinator.log");
  // started again for a running attempt.
  const uint64_t stale_before = rejected()["stale_message"];
  EXPECT_TRUE(forge_until_counted("stale_message", [](const SeenChunk& s) -> core::Message {
    return core::StartedMessage{s.chunk.job_id, s.chunk.attempt};
  })) << log("coordinator.log");
  EXPECT_GT(rejected()["stale_message"], stale_before);
  // Tokens that contradict those already produced: the attempt ends and the
  // job is placed again, keeping its tokens.
  EXPECT_TRUE(forge_until_counted("chunk_conflict", [](const SeenChunk& s) -> core::Message {
    std::vector<int32_t> ids = s.chunk.ids;
    for (int32_t& id : ids) id = (id + 1) % 512;
    return core::ChunkMessage{s.chunk.job_id, s.chunk.attempt, s.chunk.first_index, ids};
  })) << log("coordinator.log");
  feeding = false;  // the requests open now finish on their own

  // ---- The agent's subjects --------------------------------------------------------
  for (const std::string& car : {car1, car2}) {
    for (const std::string& garbage :
         {std::string("not json"), std::string("[]"), std::string(R"({"v":7,"type":"assign"})"),
          std::string(R"({"v":1,"type":"assign","job_id":"j","attempt":1,"model_id":"m","prompt_ids":[],"max_tokens":1,"lease_expires_at":1})"),
          core::encode_message(core::HelloMessage{car, {}, 1, 0, "x"}),
          core::encode_message(core::CancelMessage{"cmpl-no-such-job", 3}), oversized}) {
      publish(core::down_subject(car), garbage);
    }
    for (const std::string& garbage : {std::string("not json"), std::string(R"({"path":7})"),
                                       std::string(R"({"updates":"x"})"), std::string(70000, '{')}) {
      publish(core::vss_subject(car), garbage);  // nobody listens: simulated cars have no gateway
    }
    for (const std::string& garbage : {std::string("not json"), std::string(R"({"action":"explode"})"),
                                       std::string(R"({"action":["driver_returns"]})"), std::string(5000, ' ')}) {
      publish(core::sim_subject(car), garbage);
    }
  }
  // The gateway car's own subjects: garbage on the VSS feed, an unknown
  // signal, a value that does not parse, and the down subject.
  for (const std::string& garbage :
       {std::string("not json"), std::string(70000, '{'), std::string(R"({"path":7,"value":1})"),
        std::string(R"({"updates":[{"path":"Vehicle.Speed"},{"path":"Vehicle.Speed","value":[1]}]})"),
        std::string(R"({"path":"Vehicle.Teleporter.IsEngaged","value":true})"),
        std::string(R"({"path":"Vehicle.Speed","value":"fast"})")}) {
    publish(core::vss_subject(gateway_car), garbage);
  }
  publish(core::down_subject(gateway_car), "not json");
  publish(core::sim_subject(gateway_car), R"({"action":"driver_returns"})");  // no simulated car: nobody listens
  ASSERT_TRUE(nats.flush().has_value());

  // ---- Every request completes, exactly as a local run ---------------------------
  join_all();
  const size_t n = static_cast<size_t>(launched.load());
  ASSERT_GE(n, static_cast<size_t>(kRequestsFirst));
  ASSERT_LT(n, requests.size()) << "the feeder ran out of requests before the forging was done";
  // Late duplicates of finished work: a done already accepted is stale now.
  std::vector<std::pair<std::string, core::DoneMessage>> copy_dones;
  {
    std::lock_guard<std::mutex> lock(seen_mu);
    ASSERT_FALSE(dones.empty());
    copy_dones = dones;
  }
  for (const auto& [vid, d] : copy_dones) send(vid, d);
  ASSERT_TRUE(nats.flush().has_value());
  ASSERT_TRUE(eventually([&] { return rejected()["stale_message"] >= stale_before + 2; }, 5000));

  // The status document is published every tick: wait for the last one.
  json final_status;
  EXPECT_TRUE(eventually(
      [&] {
        final_status = status();
        return final_status.value("/jobs/live"_json_pointer, -1) == 0;
      },
      5000))
      << final_status.dump();
  for (size_t i = 0; i < n; ++i) {
    const Outcome& o = outcomes[i];
    ASSERT_EQ(o.status, 200) << "request " << i << ": " << o.error << "\n" << log("coordinator.log");
    EXPECT_EQ(o.done_markers, 1) << "request " << i << ": " << o.error;
    EXPECT_TRUE(o.error.empty()) << "request " << i << ": " << o.error;
    EXPECT_TRUE(o.finish_reason == "stop" || o.finish_reason == "length") << "request " << i << ": " << o.finish_reason;
  }
  for (size_t i = 0; i < n; ++i) {
    const Request& q = requests[i];
    char temp[32];
    std::snprintf(temp, sizeof temp, "%g", q.temperature);
    const std::string expected =
        run_capture(std::string(IDLEFLEET_BINARY) + " run -q --no-echo -t 1 -m " + shell_quote(model_) + " -p " +
                    shell_quote(q.prompt) + " -n " + std::to_string(q.max_tokens) + " --temp " + temp + " --seed " +
                    std::to_string(q.seed) + " 2>/dev/null");
    EXPECT_EQ(outcomes[i].text + "\n", expected) << "request " << i << " (prompt '" << q.prompt << "', seed " << q.seed
                                                 << ")";
  }
  EXPECT_EQ(final_status.value("/jobs/submitted"_json_pointer, 0), static_cast<int>(n))
      << final_status.dump();
  EXPECT_EQ(final_status.value("/jobs/done"_json_pointer, 0), static_cast<int>(n))
      << final_status.dump();
  EXPECT_EQ(final_status.value("/jobs/failed"_json_pointer, 0), 0) << final_status.dump();
  EXPECT_EQ(final_status.value("/vehicles/known"_json_pointer, 0), 3) << final_status.dump();  // no ghost tracked

  // The conflicted attempt was the only one to fail: its vehicle was not
  // handed the job again while still stopping (which it would refuse, busy).
  EXPECT_EQ(counters("idlefleet_events_total", "event")["attempt_failed"], 0u) << log("coordinator.log");

  // ---- Every process lived through it --------------------------------------------
  EXPECT_TRUE(coordinator_->running()) << log("coordinator.log");
  EXPECT_TRUE(agent_->running()) << log("agent.log");
  EXPECT_TRUE(gateway_->running()) << log("gateway.log");
  EXPECT_EQ(testing::http_get(base_url_ + "/healthz").status, 200);

  // ---- Each refusal counted under its reason, and logged ---------------------------
  const std::map<std::string, uint64_t> after = rejected();
  const std::map<std::string, uint64_t> want_at_least = {
      {"malformed_message", 18}, {"bad_subject", 3},  {"vehicle_mismatch", 2}, {"unknown_vehicle", 3},
      {"unexpected_message", 2}, {"unknown_job", 2},  {"stale_message", 9},    {"bad_chunk", 1},
      {"bad_done", 1},           {"chunk_conflict", 1}};
  for (const auto& [reason, least] : want_at_least) {
    const uint64_t was = before.count(reason) != 0 ? before.at(reason) : 0;
    EXPECT_GE(after.count(reason) != 0 ? after.at(reason) - was : 0, least) << reason;
  }
  const std::string coordinator_log = read_file(dir_ / "coordinator.log");
  for (const auto& [reason, least] : want_at_least) {
    EXPECT_NE(coordinator_log.find("refused (" + reason + "): "), std::string::npos) << reason;
  }
  for (const char* text : {"message is not valid JSON", "message is not a JSON object", "version 2 is not supported",
                           "type 'teleport' is unknown", "bytes exceeds", "which has not said hello",
                           "hello for car-02 arrived on vehicle car-01's subject", "assign sent by vehicle",
                           "for unknown job", "which it does not hold", "differs from the one already produced",
                           "a gap", "idlefleet.v1.up.car$01"}) {
    EXPECT_NE(coordinator_log.find(text), std::string::npos) << text;
  }
  const std::string agent_log = read_file(dir_ / "agent.log");
  for (const char* text : {"agent: refused (malformed_message): ", "message is not valid JSON",
                           "version 7 is not supported", "field 'prompt_ids' is empty",
                           "rejected_message: cancel for job cmpl-no-such-job attempt 3, which is not running here",
                           "rejected_message: unexpected message 'hello' from the coordinator",
                           "agent: refused (bad_sim_command): "}) {
    EXPECT_NE(agent_log.find(text), std::string::npos) << text << "\n" << log("agent.log");
  }
  const std::string gateway_log = read_file(dir_ / "gateway.log");
  for (const char* text : {"agent: refused (bad_vss): ", "not a JSON object", "over 65536 bytes",
                           "without a string 'path'", "agent: refused (bad_signal): ", "Vehicle.Teleporter",
                           "agent: refused (malformed_message): "}) {
    EXPECT_NE(gateway_log.find(text), std::string::npos) << text << "\n" << log("gateway.log");
  }
  std::fprintf(stderr, "bad input: %s\n", final_status.dump().c_str());
}

TEST_F(BadInput, HttpGarbageGetsOpenAiErrorsNeverA500) {
  struct Case {
    std::string what;
    std::string method;
    std::string path;
    std::string body;
    long status;
    std::string param;  // "" = null
    std::string code;   // "" = null
  };
  const std::string c = "/v1/completions", chat = "/v1/chat/completions";
  const std::string ok_prompt = R"("model":"stories260K","prompt":"Once")";
  const std::string ok_chat = R"("model":"stories260K","messages":[{"role":"user","content":"Hi"}])";
  std::vector<Case> cases = {
      {"not JSON", "POST", c, "{model: stories260K", 400, "", ""},
      {"not an object", "POST", chat, "[1,2]", 400, "", ""},
      {"empty body", "POST", c, "", 400, "", ""},
      {"no model", "POST", c, R"({"prompt":"x"})", 400, "model", ""},
      {"model a number", "POST", c, R"({"model":5,"prompt":"x"})", 400, "model", ""},
      {"prompt an object", "POST", c, R"({"model":"stories260K","prompt":{}})", 400, "prompt", ""},
      {"messages a string", "POST", chat, R"({"model":"stories260K","messages":"hi"})", 400, "messages", ""},
      {"role unknown", "POST", chat, R"({"model":"stories260K","messages":[{"role":"tool","content":"x"}]})", 400,
       "messages[0].role", ""},
      // A 32-byte excerpt of this role ends inside 'é': still a 400, not a 500.
      {"role cut inside a character", "POST", chat,
       R"({"model":"stories260K","messages":[{"role":"rrrrrrrrrrrrrrrrrrrrrrrrrrrrrrré","content":"x"}]})", 400,
       "messages[0].role", ""},
      {"max_tokens a string", "POST", c, "{" + ok_prompt + R"(,"max_tokens":"5"})", 400, "max_tokens", ""},
      {"max_tokens zero", "POST", c, "{" + ok_prompt + R"(,"max_tokens":0})", 400, "max_tokens", ""},
      {"max_tokens over the limit", "POST", c, "{" + ok_prompt + R"(,"max_tokens":100000})", 400, "max_tokens", ""},
      {"max_completion_tokens a float", "POST", chat, "{" + ok_chat + R"(,"max_completion_tokens":2.5})", 400,
       "max_completion_tokens", ""},
      {"temperature a string", "POST", c, "{" + ok_prompt + R"(,"temperature":"warm"})", 400, "temperature", ""},
      {"temperature too high", "POST", chat, "{" + ok_chat + R"(,"temperature":2.5})", 400, "temperature", ""},
      {"top_p zero", "POST", c, "{" + ok_prompt + R"(,"top_p":0})", 400, "top_p", ""},
      {"top_p a bool", "POST", c, "{" + ok_prompt + R"(,"top_p":true})", 400, "top_p", ""},
      {"seed a string", "POST", c, "{" + ok_prompt + R"(,"seed":"42"})", 400, "seed", ""},
      {"stream a string", "POST", chat, "{" + ok_chat + R"(,"stream":"yes"})", 400, "stream", ""},
      {"stream_options without stream", "POST", c, "{" + ok_prompt + R"(,"stream_options":{"include_usage":true}})",
       400, "stream_options", ""},
      {"n=2", "POST", c, "{" + ok_prompt + R"(,"n":2})", 400, "n", ""},
      {"logprobs a number in a chat", "POST", chat, "{" + ok_chat + R"(,"logprobs":3})", 400, "logprobs", ""},
      {"top_logprobs without logprobs", "POST", chat, "{" + ok_chat + R"(,"top_logprobs":3})", 400, "top_logprobs",
       ""},
      {"top_logprobs over 20", "POST", chat, "{" + ok_chat + R"(,"logprobs":true,"top_logprobs":21})", 400,
       "top_logprobs", ""},
      {"logprobs count over 5", "POST", c, "{" + ok_prompt + R"(,"logprobs":6})", 400, "logprobs", ""},
      {"stop not a string", "POST", c, "{" + ok_prompt + R"(,"stop":[1]})", 400, "stop", ""},
      {"stop empty", "POST", chat, "{" + ok_chat + R"(,"stop":""})", 400, "stop", ""},
      {"stop too many", "POST", chat, "{" + ok_chat + R"(,"stop":["a","b","c","d","e"]})", 400, "stop", ""},
      {"tools", "POST", chat, "{" + ok_chat + R"(,"tools":[{"type":"function"}]})", 400, "tools", ""},
      {"echo", "POST", c, "{" + ok_prompt + R"(,"echo":true})", 400, "echo", ""},
      {"unknown model", "POST", c, R"({"model":"gpt-4","prompt":"x"})", 404, "model", "model_not_found"},
      {"unknown chat model", "POST", chat, R"({"model":"gpt-4","messages":[{"role":"user","content":"x"}]})", 404,
       "model", "model_not_found"},
      {"prompt and max_tokens beyond the context", "POST", c, "{" + ok_prompt + R"(,"max_tokens":4000})", 400,
       "prompt", "context_length_exceeded"},
      {"a prompt alone beyond the context", "POST", chat,
       json{{"model", "stories260K"},
            {"max_tokens", 1},
            {"messages", {{{"role", "user"}, {"content", [] {
                             std::string s;
                             for (int i = 0; i < 800; ++i) s += "Once upon a time ";
                             return s;
                           }()}}}}}
           .dump(),
       400, "messages", "context_length_exceeded"},
      {"oversized body", "POST", c, "{" + ok_prompt + R"(,"pad":")" + std::string(2u << 20, 'p') + "\"}", 413, "", ""},
      {"unknown route", "GET", "/v1/engines", "", 404, "", ""},
      {"unknown POST route", "POST", "/v1/moderations", "{}", 404, "", ""},
      {"unknown model card", "GET", "/v1/models/gpt-4", "", 404, "", "model_not_found"},
      {"unknown catalog file", "GET", "/v1/catalog/gpt-4/file", "", 404, "", "model_not_found"},
      {"GET a completion", "GET", c, "", 405, "", ""},
      {"PUT a chat", "PUT", chat, "{}", 405, "", ""},
      {"DELETE the models", "DELETE", "/v1/models", "", 405, "", ""},
      {"POST the catalog", "POST", "/v1/catalog", "{}", 405, "", ""},
  };
  for (const Case& k : cases) {
    testing::HttpResult r;
    if (k.method == "GET") {
      r = testing::http_get(base_url_ + k.path);
    } else if (k.method == "POST") {
      r = testing::http_post(base_url_ + k.path, k.body, {"Content-Type: application/json"});
    } else {
      // curl without a dedicated helper: a raw request.
      const std::string raw = k.method + " " + k.path + " HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                              "Content-Length: " + std::to_string(k.body.size()) + "\r\nConnection: close\r\n\r\n" +
                              k.body;
      const std::string reply = testing::raw_exchange(http_port_, raw);
      const size_t sp = reply.find(' ');
      r.status = sp == std::string::npos ? 0 : std::atol(reply.c_str() + sp + 1);
      const size_t end = reply.find("\r\n\r\n");
      r.body = end == std::string::npos ? "" : reply.substr(end + 4);
    }
    ASSERT_EQ(r.status, k.status) << k.what << ": " << r.body.substr(0, 500) << r.error;
    const json j = json::parse(r.body, nullptr, false);
    ASSERT_FALSE(j.is_discarded()) << k.what << ": " << r.body.substr(0, 500);
    ASSERT_TRUE(j.contains("error")) << k.what << ": " << r.body.substr(0, 500);
    const json& e = j["error"];
    for (const char* key : {"message", "type", "param", "code"}) EXPECT_TRUE(e.contains(key)) << k.what << ": " << key;
    EXPECT_TRUE(e["message"].is_string() && !e["message"].get<std::string>().empty()) << k.what;
    EXPECT_EQ(e["type"], "invalid_request_error") << k.what;
    if (k.param.empty()) {
      EXPECT_TRUE(e["param"].is_null()) << k.what << ": " << e.dump();
    } else {
      EXPECT_EQ(e["param"], k.param) << k.what << ": " << e.dump();
    }
    if (k.code.empty()) {
      EXPECT_TRUE(e["code"].is_null()) << k.what << ": " << e.dump();
    } else {
      EXPECT_EQ(e["code"], k.code) << k.what << ": " << e.dump();
    }
  }

  // Bytes that no client library would send in a path: a 404 in JSON.
  const std::string reply =
      testing::raw_exchange(http_port_, "GET /v1/\xff\xfe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(reply.rfind("HTTP/1.1 4", 0), 0u) << reply;
  const size_t end = reply.find("\r\n\r\n");
  ASSERT_NE(end, std::string::npos) << reply;
  EXPECT_FALSE(json::parse(reply.substr(end + 4), nullptr, false).is_discarded()) << reply;

  // None of it reached the queue, and the coordinator still serves.
  EXPECT_TRUE(coordinator_->running()) << log("coordinator.log");
  const json models = get_json("/v1/models");
  ASSERT_EQ(models.value("/data/0/id"_json_pointer, std::string()), "stories260K") << models.dump();
}

// Without [auth] required (this coordinator's default), any Authorization
// header is ignored (clients send placeholder keys), and an Idempotency-Key is
// scoped by the client's address.
TEST_F(BadInput, WithoutAuthKeysAreIgnoredAndIdempotencyIsPerClient) {
  ASSERT_TRUE(eventually([&] { return status().value("/vehicles/available"_json_pointer, 0) >= 1; }, 20000))
      << status().dump();
  const std::string url = base_url_ + "/v1/completions";
  const std::string body = R"({"model":"stories260K","prompt":"Lily and Ben","max_tokens":10,"temperature":0.7})";
  const std::vector<std::string> headers = {"Content-Type: application/json", "Authorization: Bearer sk-no-key",
                                            "Idempotency-Key: bad-input-1"};
  auto first = testing::http_post(url, body, headers);
  ASSERT_EQ(first.status, 200) << first.body;
  // /v1/status is published every tick: read it once it shows the first job done.
  ASSERT_TRUE(eventually(
      [&] {
        const json st = status();
        return st.value("/jobs/submitted"_json_pointer, uint64_t{0}) >= 1 &&
               st.value("/jobs/live"_json_pointer, uint64_t{1}) == 0;
      },
      10000))
      << status().dump();
  const uint64_t submitted = status().value("/jobs/submitted"_json_pointer, uint64_t{0});
  auto again = testing::http_post(url, body, headers);
  ASSERT_EQ(again.status, 200) << again.body;
  EXPECT_EQ(again.body, first.body);
  EXPECT_NE(again.header("idempotent-replayed"), nullptr);
  EXPECT_EQ(status().value("/jobs/submitted"_json_pointer, uint64_t{0}), submitted) << "a replay ran a job";
  auto other = testing::http_post(url, R"({"model":"stories260K","prompt":"Tom"})", headers);
  EXPECT_EQ(other.status, 409) << other.body;
  EXPECT_NE(other.body.find("idempotency_key_conflict"), std::string::npos) << other.body;
  // Keys with control characters are refused before anything runs.
  auto bad = testing::http_post(url, body, {"Content-Type: application/json", "Idempotency-Key: a\tb"});
  EXPECT_EQ(bad.status, 400) << bad.body;
}

}  // namespace
}  // namespace idlefleet::bad_input_test
