// Replay files: the format, every kind of garbage refused with its line
// number, loading from disk, and playback by time.
#include "agent/replay.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "agent/sim_vehicle.h"

namespace idlefleet::agent::replay_test {
namespace {

using core::TimeMs;

constexpr const char* kGood =
    "# a parked car, plugged in\n"
    "\n"
    "{\"t\": 1000, \"path\": \"Vehicle.Speed\", \"value\": \"0\"}\n"
    "{\"t\": 1000, \"path\": \"Vehicle.Powertrain.Transmission.CurrentGear\", \"value\": 126}\n"
    "   \t\n"
    "  # indented comment\n"
    "{\"path\": \"Vehicle.Powertrain.TractionBattery.StateOfCharge.Current\", \"value\": 57.25, \"t\": 2000}\r\n"
    "{\"t\": 2500, \"path\": \"Vehicle.Powertrain.TractionBattery.Charging.IsCharging\", \"value\": true}\n"
    " { \"t\" : 3000 , \"path\" : \"Vehicle.Cabin.Door.Row1.DriverSide.IsOpen\" , \"value\" : \"false\" } \n"
    "{\"t\": 4000, \"path\": \"Vehicle.Exterior.AirTemperature\", \"value\": -1.5e1}";  // no final newline

TEST(Replay, ParsesAGoodFile) {
  auto events = parse_replay(kGood);
  ASSERT_TRUE(events) << events.error().to_string();
  const std::vector<ReplayEvent> expected = {
      {1000, "Vehicle.Speed", "0"},
      {1000, "Vehicle.Powertrain.Transmission.CurrentGear", "126"},
      {2000, "Vehicle.Powertrain.TractionBattery.StateOfCharge.Current", "57.25"},
      {2500, "Vehicle.Powertrain.TractionBattery.Charging.IsCharging", "true"},
      {3000, "Vehicle.Cabin.Door.Row1.DriverSide.IsOpen", "false"},
      {4000, "Vehicle.Exterior.AirTemperature", "-1.5e1"},
  };
  EXPECT_EQ(*events, expected);
  // Every value is one apply_signal accepts.
  core::VehicleSignals s;
  for (const ReplayEvent& e : *events) EXPECT_TRUE(core::apply_signal(&s, e.path, e.value, e.t));
  EXPECT_EQ(*s.ambient_temperature_c, -15.0);
  EXPECT_EQ(*s.soc_pct, 57.25);
}

TEST(Replay, EmptyAndCommentOnlyFilesHaveNoEvents) {
  for (const char* text : {"", "\n", "# nothing\n\n", "\xEF\xBB\xBF# BOM first\n"}) {
    auto events = parse_replay(text);
    ASSERT_TRUE(events) << text;
    EXPECT_TRUE(events->empty());
  }
  auto bom = parse_replay("\xEF\xBB\xBF{\"t\":1,\"path\":\"Vehicle.Speed\",\"value\":\"0\"}\n");
  ASSERT_TRUE(bom);
  EXPECT_EQ(bom->size(), 1u);
}

// Two good lines, then `bad` as line 3: the error must name line 3.
void expect_rejected(const std::string& bad, ErrorCode code, const std::string& words) {
  const std::string text =
      "{\"t\": 10, \"path\": \"Vehicle.Speed\", \"value\": \"0\"}\n"
      "# comment\n" +
      bad + "\n{\"t\": 99, \"path\": \"Vehicle.Speed\", \"value\": \"0\"}\n";
  auto events = parse_replay(text);
  ASSERT_FALSE(events) << "accepted: " << bad;
  const std::string& message = events.error().message;
  EXPECT_EQ(message.rfind("line 3: ", 0), 0u) << message;
  EXPECT_NE(message.find(words), std::string::npos) << message;
  EXPECT_EQ(events.error().code, code) << message;
}

TEST(Replay, RejectsWhatIsNotJson) {
  expect_rejected("hello", ErrorCode::kCorrupt, "not valid JSON");
  expect_rejected("{\"t\": 20, \"path\": \"Vehicle.Speed\", \"value\": \"0\"", ErrorCode::kCorrupt, "not valid JSON");
  expect_rejected("{\"t\": 20, \"path\": \"Vehicle.Speed\", \"value\": \"0\"} {}", ErrorCode::kCorrupt,
                  "not valid JSON");
  expect_rejected("{\"t\": 20, \"path\": \"Vehicle.Speed\", \"value\": \"0\",}", ErrorCode::kCorrupt,
                  "not valid JSON");
  expect_rejected("{'t': 20}", ErrorCode::kCorrupt, "not valid JSON");
  expect_rejected("{\"t\": 20, \"path\": \"Vehicle.Speed\", \"value\": \"0\xff\"}", ErrorCode::kCorrupt,
                  "not valid JSON");
  expect_rejected("[1, 2]", ErrorCode::kCorrupt, "array");
  expect_rejected("42", ErrorCode::kCorrupt, "not a JSON object");
  expect_rejected("\"text\"", ErrorCode::kCorrupt, "not a JSON object");
  expect_rejected("null", ErrorCode::kCorrupt, "not a JSON object");
}

TEST(Replay, RejectsMissingWrongAndExtraKeys) {
  expect_rejected("{\"path\": \"Vehicle.Speed\", \"value\": \"0\"}", ErrorCode::kCorrupt, "missing key 't'");
  expect_rejected("{\"t\": 20, \"value\": \"0\"}", ErrorCode::kCorrupt, "missing key 'path'");
  expect_rejected("{\"t\": 20, \"path\": \"Vehicle.Speed\"}", ErrorCode::kCorrupt, "missing key 'value'");
  expect_rejected("{}", ErrorCode::kCorrupt, "missing key 't'");
  expect_rejected("{\"t\": 20, \"t\": 21, \"path\": \"Vehicle.Speed\", \"value\": \"0\"}", ErrorCode::kCorrupt,
                  "duplicate key 't'");
  expect_rejected("{\"t\": 20, \"path\": \"Vehicle.Speed\", \"value\": \"0\", \"unit\": \"km/h\"}",
                  ErrorCode::kCorrupt, "unknown key 'unit'");
  expect_rejected("{\"t\": \"20\", \"path\": \"Vehicle.Speed\", \"value\": \"0\"}", ErrorCode::kCorrupt,
                  "t must be an integer");
  expect_rejected("{\"t\": 20.5, \"path\": \"Vehicle.Speed\", \"value\": \"0\"}", ErrorCode::kCorrupt,
                  "t must be an integer");
  expect_rejected("{\"t\": 2e3, \"path\": \"Vehicle.Speed\", \"value\": \"0\"}", ErrorCode::kCorrupt,
                  "t must be an integer");
  expect_rejected("{\"t\": 20, \"path\": 7, \"value\": \"0\"}", ErrorCode::kCorrupt, "path must be a string");
  expect_rejected("{\"t\": 20, \"path\": \"Vehicle.Speed\", \"value\": null}", ErrorCode::kCorrupt,
                  "value must be a string, number or boolean");
  expect_rejected("{\"t\": 20, \"path\": \"Vehicle.Speed\", \"value\": {\"v\": 1}}", ErrorCode::kCorrupt,
                  "value must be a string, number or boolean, not an object");
  expect_rejected("{\"t\": 20, \"path\": \"Vehicle.Speed\", \"value\": [1]}", ErrorCode::kCorrupt,
                  "not an array");
}

TEST(Replay, RejectsTimesGoingBackOrOutOfRange) {
  expect_rejected("{\"t\": 9, \"path\": \"Vehicle.Speed\", \"value\": \"0\"}", ErrorCode::kCorrupt,
                  "t 9 is before t 10 of line 1");
  expect_rejected("{\"t\": -1, \"path\": \"Vehicle.Speed\", \"value\": \"0\"}", ErrorCode::kOutOfRange,
                  "t -1 is outside");
  expect_rejected("{\"t\": 10000000000001, \"path\": \"Vehicle.Speed\", \"value\": \"0\"}", ErrorCode::kOutOfRange,
                  "outside");
  expect_rejected("{\"t\": 18446744073709551615, \"path\": \"Vehicle.Speed\", \"value\": \"0\"}",
                  ErrorCode::kOutOfRange, "outside");
  expect_rejected("{\"t\": 123456789012345678901234567890, \"path\": \"Vehicle.Speed\", \"value\": \"0\"}",
                  ErrorCode::kOutOfRange, "out of range");
  expect_rejected("{\"t\": -123456789012345678901234567890, \"path\": \"Vehicle.Speed\", \"value\": \"0\"}",
                  ErrorCode::kOutOfRange, "out of range");
  expect_rejected("{\"t\": 1e400, \"path\": \"Vehicle.Speed\", \"value\": \"0\"}", ErrorCode::kOutOfRange,
                  "out of range");
}

TEST(Replay, RejectsUnknownPathsAndBadValues) {
  expect_rejected("{\"t\": 20, \"path\": \"Vehicle.Speedx\", \"value\": \"0\"}", ErrorCode::kNotFound,
                  "unknown signal path 'Vehicle.Speedx'");
  expect_rejected("{\"t\": 20, \"path\": \"\", \"value\": \"0\"}", ErrorCode::kNotFound, "unknown signal path");
  expect_rejected("{\"t\": 20, \"path\": \"Vehicle.Powertrain.TractionBattery.StateOfCharge.Current\", "
                  "\"value\": 101}",
                  ErrorCode::kOutOfRange, "outside [0, 100]");
  expect_rejected("{\"t\": 20, \"path\": \"Vehicle.Speed\", \"value\": \"fast\"}", ErrorCode::kInvalidArgument,
                  "not a number");
  expect_rejected("{\"t\": 20, \"path\": \"Vehicle.Speed\", \"value\": \"\"}", ErrorCode::kInvalidArgument,
                  "empty value");
  expect_rejected("{\"t\": 20, \"path\": \"Vehicle.Cabin.Door.Row1.DriverSide.IsOpen\", \"value\": \"yes\"}",
                  ErrorCode::kInvalidArgument, "not a boolean");
  expect_rejected("{\"t\": 20, \"path\": \"Vehicle.Powertrain.Transmission.CurrentGear\", \"value\": 1.5}",
                  ErrorCode::kInvalidArgument, "not an integer gear");
  expect_rejected("{\"t\": 20, \"path\": \"Vehicle.Speed\", \"value\": true}", ErrorCode::kInvalidArgument,
                  "not a number");
  // Huge numbers as values: out of the signal's range, or longer than any value.
  expect_rejected("{\"t\": 20, \"path\": \"Vehicle.Speed\", \"value\": 1e308}", ErrorCode::kOutOfRange, "outside");
  expect_rejected("{\"t\": 20, \"path\": \"Vehicle.Speed\", \"value\": 1e400}", ErrorCode::kOutOfRange,
                  "out of range");
  expect_rejected("{\"t\": 20, \"path\": \"Vehicle.Speed\", \"value\": 18446744073709551615}", ErrorCode::kOutOfRange,
                  "outside");
  expect_rejected("{\"t\": 20, \"path\": \"Vehicle.Speed\", \"value\": 123456789012345678901234567890123456}",
                  ErrorCode::kOutOfRange, "exceeds kSignalValueBytesMax");
  expect_rejected("{\"t\": 20, \"path\": \"Vehicle.Speed\", \"value\": \"nan\"}", ErrorCode::kInvalidArgument,
                  "not a finite number");
}

TEST(Replay, RejectsLongLinesAndNulBytes) {
  std::string padded = "{\"t\": 20, \"path\": \"Vehicle.Speed\", \"value\": \"0\"}";
  padded.append(kReplayLineBytesMax - padded.size(), ' ');
  auto fits = parse_replay(padded + "\n");
  ASSERT_TRUE(fits) << fits.error().to_string();  // exactly the limit: fine (the "\r\n" does not count)
  ASSERT_TRUE(parse_replay(padded + "\r\n"));
  expect_rejected(padded + " ", ErrorCode::kOutOfRange, "4097 bytes exceeds kReplayLineBytesMax (4096)");
  expect_rejected("# " + std::string(kReplayLineBytesMax, 'x'), ErrorCode::kOutOfRange, "kReplayLineBytesMax");

  expect_rejected(std::string("{\"t\": 20, \"path\": \"Vehicle.Speed\", \"value\": \"0\"}\0", 49), ErrorCode::kCorrupt,
                  "NUL byte at byte 48");
  expect_rejected(std::string("{\"t\": 20, \"path\": \"Vehicle.Sp\0eed\", \"value\": \"0\"}", 49), ErrorCode::kCorrupt,
                  "NUL byte at byte 29");
  expect_rejected(std::string("# comment\0", 10), ErrorCode::kCorrupt, "NUL byte");
  // An escaped NUL is JSON, and then simply not a path we know.
  expect_rejected("{\"t\": 20, \"path\": \"Vehicle.Speed\\u0000\", \"value\": \"0\"}", ErrorCode::kNotFound,
                  "unknown signal path 'Vehicle.Speed?'");
}

TEST(Replay, LineCountIncludesBlankAndCommentLines) {
  auto events = parse_replay("\n# c\n\n{\"t\": 1, \"path\": \"Vehicle.Speed\", \"value\": \"x\"}\n");
  ASSERT_FALSE(events);
  EXPECT_EQ(events.error().message.rfind("line 4: ", 0), 0u) << events.error().message;
}

TEST(Replay, LineCountIsLimited) {
  std::string text(kReplayLinesMax - 1, '\n');
  text += "{\"t\": 1, \"path\": \"Vehicle.Speed\", \"value\": \"0\"}\n";
  auto at_limit = parse_replay(text);
  ASSERT_TRUE(at_limit) << at_limit.error().to_string();
  EXPECT_EQ(at_limit->size(), 1u);
  text += "\n";
  auto over = parse_replay(text);
  ASSERT_FALSE(over);
  EXPECT_EQ(over.error().code, ErrorCode::kOutOfRange);
  EXPECT_EQ(over.error().message, "line 10000001: more than kReplayLinesMax (10000000) lines");
}

TEST(Replay, FormattedLinesParseBack) {
  SimVehicleParams p;
  p.seed = 2;
  constexpr TimeMs kStart = 1'717'372'800'000;
  SimVehicle car(p, kStart);
  std::vector<ReplayEvent> recorded;
  std::string file = "# recorded from SimVehicle seed 2\n";
  for (TimeMs t = kStart; t <= kStart + core::kDayMs; t += core::kMinuteMs) {
    car.advance(t, 0.5);
    for (auto& [path, value] : car.take_updates()) {
      recorded.push_back(ReplayEvent{t, path, value});
      file += format_replay_line(recorded.back()) + "\n";
    }
  }
  auto parsed = parse_replay(file);
  ASSERT_TRUE(parsed) << parsed.error().to_string();
  EXPECT_EQ(*parsed, recorded);

  const ReplayEvent odd{5, "a\"b\\c\n", "\x01"};
  EXPECT_EQ(format_replay_line(odd), "{\"t\":5,\"path\":\"a\\\"b\\\\c\\u000a\",\"value\":\"\\u0001\"}");
}

TEST(Replay, SourceDeliversByTime) {
  auto events = parse_replay(kGood);
  ASSERT_TRUE(events);
  ReplaySource source(*events);
  EXPECT_FALSE(source.finished());
  EXPECT_EQ(source.next_event_time(), TimeMs{1000});
  EXPECT_TRUE(source.take_until(999).empty());
  const std::vector<ReplayEvent> first = source.take_until(1000);
  ASSERT_EQ(first.size(), 2u);
  EXPECT_EQ(first[0].path, "Vehicle.Speed");
  EXPECT_EQ(first[1].path, "Vehicle.Powertrain.Transmission.CurrentGear");
  EXPECT_TRUE(source.take_until(1000).empty());
  EXPECT_TRUE(source.take_until(500).empty());  // time going back delivers nothing
  EXPECT_EQ(source.take_until(2999).size(), 2u);
  EXPECT_EQ(source.next_event_time(), TimeMs{3000});
  EXPECT_EQ(source.take_until(1'000'000).size(), 2u);
  EXPECT_TRUE(source.finished());
  EXPECT_EQ(source.next_event_time(), std::nullopt);
  EXPECT_TRUE(source.take_until(2'000'000).empty());

  ReplaySource empty({});
  EXPECT_TRUE(empty.finished());
}

class ReplayFile : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("idlefleet_replay_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string write(const std::string& name, const std::string& text) {
    const std::string path = (dir_ / name).string();
    std::ofstream(path, std::ios::binary) << text;
    return path;
  }
  std::filesystem::path dir_;
};

TEST_F(ReplayFile, LoadsAFile) {
  auto events = load_replay(write("good.jsonl", kGood));
  ASSERT_TRUE(events) << events.error().to_string();
  EXPECT_EQ(events->size(), 6u);
}

TEST_F(ReplayFile, ErrorsNameTheFileAndLine) {
  const std::string path = write("bad.jsonl", "{\"t\": 1, \"path\": \"Vehicle.Speed\", \"value\": \"0\"}\n{\"t\": 0}\n");
  auto events = load_replay(path);
  ASSERT_FALSE(events);
  EXPECT_EQ(events.error().message.rfind(path + ": line 2: ", 0), 0u) << events.error().message;
}

TEST_F(ReplayFile, MissingFileIsNotFound) {
  auto events = load_replay((dir_ / "absent.jsonl").string());
  ASSERT_FALSE(events);
  EXPECT_EQ(events.error().code, ErrorCode::kNotFound);
  EXPECT_NE(events.error().message.find("absent.jsonl"), std::string::npos);
}

TEST_F(ReplayFile, ADirectoryIsAnIoError) {
  auto events = load_replay(dir_.string());
  ASSERT_FALSE(events);
  EXPECT_EQ(events.error().code, ErrorCode::kIo) << events.error().to_string();
}

TEST_F(ReplayFile, TooLargeIsRefusedBeforeReading) {
  // A sparse file: 1 GiB + 1 byte of size, no disk used.
  const std::string path = (dir_ / "huge.jsonl").string();
  {
    std::FILE* f = std::fopen(path.c_str(), "wb");
    ASSERT_NE(f, nullptr);
    ASSERT_EQ(::ftruncate(::fileno(f), static_cast<off_t>(kReplayFileBytesMax) + 1), 0);
    std::fclose(f);
  }
  auto events = load_replay(path);
  ASSERT_FALSE(events);
  EXPECT_EQ(events.error().code, ErrorCode::kOutOfRange);
  EXPECT_NE(events.error().message.find("kReplayFileBytesMax"), std::string::npos);
}

}  // namespace
}  // namespace idlefleet::agent::replay_test
