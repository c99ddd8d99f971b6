// Vehicle signals: VSS path parsing, validation of garbage, physical state.
#include "core/signals.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>

namespace idlefleet::core::signals_test {
namespace {

constexpr std::string_view kSpeed = "Vehicle.Speed";
constexpr std::string_view kGear = "Vehicle.Powertrain.Transmission.CurrentGear";
constexpr std::string_view kSoc = "Vehicle.Powertrain.TractionBattery.StateOfCharge.Current";
constexpr std::string_view kIsCharging = "Vehicle.Powertrain.TractionBattery.Charging.IsCharging";
constexpr std::string_view kCable = "Vehicle.Powertrain.TractionBattery.Charging.IsChargingCableConnected";
constexpr std::string_view kChargerPower = "Vehicle.Powertrain.TractionBattery.Charging.Power";
constexpr std::string_view kSeat = "Vehicle.Cabin.Seat.Row1.DriverSide.IsOccupied";
constexpr std::string_view kDoor = "Vehicle.Cabin.Door.Row1.DriverSide.IsOpen";
constexpr std::string_view kAmbient = "Vehicle.Exterior.AirTemperature";
constexpr std::string_view kAccelerator = "Vehicle.Idlefleet.Accelerator.Temperature";

TEST(CoreSignals, SpecsCoverEverySignalInOrder) {
  ASSERT_EQ(signal_specs().size(), static_cast<size_t>(kSignalCount));
  for (int i = 0; i < kSignalCount; ++i) {
    EXPECT_EQ(static_cast<int>(signal_specs()[i].id), i);
    EXPECT_FALSE(signal_specs()[i].vss_path.empty());
    EXPECT_LE(signal_specs()[i].vss_path.size(), kSignalPathBytesMax);
  }
  EXPECT_EQ(signal_spec(SignalId::kSoc).vss_path, kSoc);
  EXPECT_TRUE(signal_spec(SignalId::kChargerPower).overlay);
  EXPECT_TRUE(signal_spec(SignalId::kAcceleratorTemperature).overlay);
  EXPECT_FALSE(signal_spec(SignalId::kSpeed).overlay);
}

TEST(CoreSignals, AppliesEverySignal) {
  VehicleSignals s;
  for (int i = 0; i < kSignalCount; ++i) EXPECT_FALSE(signal_known(s, static_cast<SignalId>(i)));
  ASSERT_TRUE(apply_signal(&s, kSpeed, "-3.5"));
  ASSERT_TRUE(apply_signal(&s, kGear, "126"));
  ASSERT_TRUE(apply_signal(&s, kSoc, "57.25"));
  ASSERT_TRUE(apply_signal(&s, kIsCharging, "true"));
  ASSERT_TRUE(apply_signal(&s, kCable, "1"));
  ASSERT_TRUE(apply_signal(&s, kChargerPower, "11"));
  ASSERT_TRUE(apply_signal(&s, kSeat, "false"));
  ASSERT_TRUE(apply_signal(&s, kDoor, "0"));
  ASSERT_TRUE(apply_signal(&s, kAmbient, "-12.5"));
  ASSERT_TRUE(apply_signal(&s, kAccelerator, "61e0"));
  ASSERT_TRUE(apply_signal(&s, "Vehicle.Idlefleet.Accelerator.Power", "0.45"));
  EXPECT_FALSE(apply_signal(&s, "Vehicle.Idlefleet.Accelerator.Power", "-1"));
  EXPECT_FALSE(apply_signal(&s, "Vehicle.Idlefleet.Accelerator.Power", "51"));
  for (int i = 0; i < kSignalCount; ++i) EXPECT_TRUE(signal_known(s, static_cast<SignalId>(i)));
  EXPECT_EQ(*s.speed_kmh, -3.5);
  EXPECT_EQ(*s.gear, kGearPark);
  EXPECT_EQ(*s.soc_pct, 57.25);
  EXPECT_TRUE(*s.is_charging);
  EXPECT_TRUE(*s.charger_connected);
  EXPECT_EQ(*s.charger_power_kw, 11.0);
  EXPECT_FALSE(*s.driver_seat_occupied);
  EXPECT_FALSE(*s.driver_door_open);
  EXPECT_EQ(*s.ambient_temperature_c, -12.5);
  EXPECT_EQ(*s.accelerator_temperature_c, 61.0);
  EXPECT_EQ(*s.accelerator_power_kw, 0.45);
  EXPECT_FALSE(s.heard_at.has_value());
  EXPECT_TRUE(validate_signals(s));
}

TEST(CoreSignals, TimedUpdateRecordsHeardAt) {
  VehicleSignals s;
  ASSERT_TRUE(apply_signal(&s, kSpeed, "0", 1'000));
  EXPECT_EQ(s.heard_at, TimeMs{1'000});
  // A rejected update is not proof the feed is healthy: heard_at stays.
  EXPECT_FALSE(apply_signal(&s, kSpeed, "fast", 2'000));
  EXPECT_EQ(s.heard_at, TimeMs{1'000});
  EXPECT_EQ(apply_signal(&s, kSpeed, "0", -1).error().code, ErrorCode::kOutOfRange);
  EXPECT_EQ(apply_signal(&s, kSpeed, "0", kPlausibleTimeMsMax + 1).error().code, ErrorCode::kOutOfRange);
}

TEST(CoreSignals, RejectsUnknownPaths) {
  VehicleSignals s;
  for (std::string_view path : {"Vehicle.Speedx", "vehicle.speed", "", "Vehicle.Speed ", "Vehicle",
                                "Vehicle.Powertrain.TractionBattery.Charging.ChargeRate"}) {
    const Status st = apply_signal(&s, path, "1");
    ASSERT_FALSE(st) << path;
    EXPECT_EQ(st.error().code, ErrorCode::kNotFound) << path;
    EXPECT_NE(st.error().message.find("unknown signal path"), std::string::npos);
  }
}

TEST(CoreSignals, RejectsGarbageNumbers) {
  for (std::string_view text : {"12abc", "abc", " 12", "12 ", "+12", "0x10", "1,5", "--1", ".", "e5", "1e"}) {
    VehicleSignals s;
    const Status st = apply_signal(&s, kSoc, text);
    ASSERT_FALSE(st) << text;
    EXPECT_EQ(st.error().code, ErrorCode::kInvalidArgument) << text;
    EXPECT_NE(st.error().message.find(std::string(kSoc)), std::string::npos) << st.error().message;
    EXPECT_FALSE(s.soc_pct.has_value());
  }
  for (std::string_view text : {"nan", "NaN", "-nan", "inf", "-inf", "infinity"}) {
    VehicleSignals s;
    const Status st = apply_signal(&s, kAccelerator, text);
    ASSERT_FALSE(st) << text;
    EXPECT_EQ(st.error().code, ErrorCode::kInvalidArgument) << text;
    EXPECT_FALSE(s.accelerator_temperature_c.has_value());
  }
  VehicleSignals s;
  EXPECT_EQ(apply_signal(&s, kSoc, "").error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(apply_signal(&s, kSoc, "1e999").error().code, ErrorCode::kOutOfRange);
}

TEST(CoreSignals, RejectsOutOfRangeValues) {
  struct Case {
    std::string_view path;
    std::string_view text;
  };
  for (const Case& c : {Case{kSoc, "100.01"}, Case{kSoc, "-0.1"}, Case{kSpeed, "500.5"}, Case{kSpeed, "-501"},
                        Case{kChargerPower, "-1"}, Case{kChargerPower, "1000.1"}, Case{kAmbient, "81"},
                        Case{kAccelerator, "151"}, Case{kAccelerator, "-61"}, Case{kGear, "17"},
                        Case{kGear, "-17"}, Case{kGear, "125"}, Case{kGear, "128"}, Case{kGear, "99999999999"}}) {
    VehicleSignals s;
    const Status st = apply_signal(&s, c.path, c.text);
    ASSERT_FALSE(st) << c.path << " " << c.text;
    EXPECT_EQ(st.error().code, ErrorCode::kOutOfRange) << c.path << " " << c.text;
    EXPECT_NE(st.error().message.find(std::string(c.path)), std::string::npos);
  }
  // Edges are inside.
  VehicleSignals s;
  EXPECT_TRUE(apply_signal(&s, kSoc, "0"));
  EXPECT_TRUE(apply_signal(&s, kSoc, "100"));
  EXPECT_TRUE(apply_signal(&s, kGear, "-16"));
  EXPECT_TRUE(apply_signal(&s, kGear, "16"));
  EXPECT_TRUE(apply_signal(&s, kGear, "127"));
  EXPECT_TRUE(apply_signal(&s, kGear, "0"));
}

TEST(CoreSignals, GearIsAnInteger) {
  VehicleSignals s;
  EXPECT_EQ(apply_signal(&s, kGear, "1.0").error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(apply_signal(&s, kGear, "P").error().code, ErrorCode::kInvalidArgument);
  EXPECT_FALSE(s.gear.has_value());
}

TEST(CoreSignals, BooleansAreStrict) {
  for (std::string_view text : {"True", "FALSE", "yes", "2", "-1", "t", "truee", "1.0"}) {
    VehicleSignals s;
    const Status st = apply_signal(&s, kDoor, text);
    ASSERT_FALSE(st) << text;
    EXPECT_EQ(st.error().code, ErrorCode::kInvalidArgument) << text;
    EXPECT_FALSE(s.driver_door_open.has_value());
  }
}

TEST(CoreSignals, RejectsOverlongStringsAndQuotesThemBounded) {
  VehicleSignals s;
  const std::string long_path = "Vehicle." + std::string(kSignalPathBytesMax, 'x');
  Status st = apply_signal(&s, long_path, "1");
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, ErrorCode::kOutOfRange);
  EXPECT_LT(st.error().message.size(), 200u);

  const std::string long_value = "1" + std::string(kSignalValueBytesMax, '0');
  st = apply_signal(&s, kSoc, long_value);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, ErrorCode::kOutOfRange);
  // Exactly at the limit is fine when it parses: "0.000...".
  const std::string at_limit = "0." + std::string(kSignalValueBytesMax - 2, '0');
  EXPECT_TRUE(apply_signal(&s, kSoc, at_limit));

  // Unprintable bytes never reach a log line.
  std::string binary_path = "Vehicle.\x01\xff\n";
  st = apply_signal(&s, binary_path, "1");
  ASSERT_FALSE(st);
  for (char c : st.error().message) EXPECT_TRUE(c >= 0x20 && c < 0x7f);
}

TEST(CoreSignals, ValidateCatchesValuesSetInCode) {
  VehicleSignals s;
  EXPECT_TRUE(validate_signals(s));
  s.soc_pct = std::numeric_limits<double>::quiet_NaN();
  EXPECT_EQ(validate_signals(s).error().code, ErrorCode::kInvalidArgument);
  s.soc_pct = 101;
  EXPECT_EQ(validate_signals(s).error().code, ErrorCode::kOutOfRange);
  s.soc_pct = 50;
  s.gear = 42;
  EXPECT_EQ(validate_signals(s).error().code, ErrorCode::kOutOfRange);
  s.gear = kGearPark;
  s.speed_kmh = std::numeric_limits<double>::infinity();
  EXPECT_FALSE(validate_signals(s));
  s.speed_kmh = 0;
  s.heard_at = -5;
  EXPECT_FALSE(validate_signals(s));
  s.heard_at = 5;
  EXPECT_TRUE(validate_signals(s));
}

TEST(CoreSignals, PhysicalState) {
  VehicleSignals s;
  EXPECT_EQ(physical_state(s), VehicleState::kDriving);  // unknown: not provably parked
  s.gear = kGearPark;
  EXPECT_EQ(physical_state(s), VehicleState::kDriving);  // speed still unknown
  s.speed_kmh = 0;
  EXPECT_EQ(physical_state(s), VehicleState::kParked);
  s.is_charging = true;
  EXPECT_EQ(physical_state(s), VehicleState::kCharging);
  s.speed_kmh = 0.1;
  EXPECT_EQ(physical_state(s), VehicleState::kDriving);
  s.speed_kmh = 0;
  s.gear = kGearDrive;
  EXPECT_EQ(physical_state(s), VehicleState::kDriving);
  s.gear = kGearNeutral;
  EXPECT_EQ(physical_state(s), VehicleState::kDriving);
  s.gear = kGearPark;
  s.is_charging = false;
  EXPECT_EQ(physical_state(s), VehicleState::kParked);
}

TEST(CoreSignals, Names) {
  EXPECT_STREQ(vehicle_state_name(VehicleState::kDriving), "driving");
  EXPECT_STREQ(vehicle_state_name(VehicleState::kParked), "parked");
  EXPECT_STREQ(vehicle_state_name(VehicleState::kCharging), "charging");
  EXPECT_STREQ(vehicle_state_name(VehicleState::kEligible), "eligible");
  EXPECT_STREQ(vehicle_state_name(VehicleState::kServing), "serving");
  EXPECT_STREQ(vehicle_state_name(VehicleState::kPreempting), "preempting");
  EXPECT_EQ(gear_name(kGearPark), "P");
  EXPECT_EQ(gear_name(kGearDrive), "D");
  EXPECT_EQ(gear_name(0), "N");
  EXPECT_EQ(gear_name(-1), "R");
  EXPECT_EQ(gear_name(-2), "R2");
  EXPECT_EQ(gear_name(3), "3");
  EXPECT_EQ(gear_name(99), "?");
}

}  // namespace
}  // namespace idlefleet::core::signals_test
