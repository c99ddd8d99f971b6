// Vehicle signals: the latest known value of each signal the owner's policy
// reads, named by their COVESA VSS paths, and the vehicle's physical state.
//
// Every signal source (the built-in simulated vehicle, a JSONL replay file,
// a KUKSA gateway publishing on NATS) ends in apply_signal(path, text), so
// parsing and validation live here once: bounded lengths, finite numbers,
// ranges, strict booleans. A signal that has not arrived yet is std::nullopt,
// and the policy treats unknown as "not eligible", never as a default.
//
// Paths follow VSS 4.x. Two signals the policy needs have no VSS 4.x
// equivalent and are idlefleet overlays (marked `overlay` in signal_specs()):
//  - Vehicle.Powertrain.TractionBattery.Charging.Power (kW): VSS has
//    Charging.ChargeRate, but in km of range per hour; AveragePower and
//    MaxPower are per-charging-event statistics, and TractionBattery.CurrentPower
//    is in W at the battery terminals, net of every load (ours included).
//  - Vehicle.Idlefleet.Accelerator.Temperature (°C): VSS has no branch for
//    an onboard AI computer; a vendor branch keeps it from colliding with
//    future VSS names.
// Newer VSS (5.x) moves IsChargingCableConnected under Charging.ChargingPort;
// a gateway on 5.x maps it to the 4.x path below.
//
// Thread-safety: plain values and pure functions; no shared state.
#pragma once

#include <cstddef>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "common/result.h"
#include "core/time.h"

namespace idlefleet::core {

// Limits on what a feed may send. Paths longer than any VSS path we know,
// values longer than any number or boolean we parse, are garbage.
inline constexpr size_t kSignalPathBytesMax = 128;
inline constexpr size_t kSignalValueBytesMax = 32;

// Physical plausibility. Values outside are a broken sensor or a hostile feed.
inline constexpr double kSpeedKmhAbsMax = 500.0;  // VSS speed is signed: negative in reverse
inline constexpr double kSocPctMin = 0.0;
inline constexpr double kSocPctMax = 100.0;
inline constexpr double kChargerPowerKwMin = 0.0;
inline constexpr double kChargerPowerKwMax = 1000.0;  // megawatt charging for trucks
inline constexpr double kAmbientTemperatureCMin = -80.0;
inline constexpr double kAmbientTemperatureCMax = 80.0;
inline constexpr double kAcceleratorPowerKwMax = 50.0;  // far above any vehicle AI computer
inline constexpr double kAcceleratorTemperatureCMin = -60.0;
inline constexpr double kAcceleratorTemperatureCMax = 150.0;

// VSS Vehicle.Powertrain.Transmission.CurrentGear (int8): 0 neutral, positive
// forward gears, negative reverse gears, 126 park, 127 drive.
inline constexpr int kGearNeutral = 0;
inline constexpr int kGearPark = 126;
inline constexpr int kGearDrive = 127;
inline constexpr int kGearForwardMax = 16;   // no production gearbox has more
inline constexpr int kGearReverseMin = -16;

// Times from feeds and predictors must lie in [0, this] (year 2286): keeps
// every difference of two times far from int64 overflow.
inline constexpr TimeMs kPlausibleTimeMsMax = 10'000'000'000'000;

// The latest value of each signal; std::nullopt until it first arrives.
// Field names carry the unit last.
struct VehicleSignals {
  // Vehicle.Speed, km/h (signed: negative when reversing).
  std::optional<double> speed_kmh;
  // Vehicle.Powertrain.Transmission.CurrentGear (see kGear* above).
  std::optional<int> gear;
  // Vehicle.Powertrain.TractionBattery.StateOfCharge.Current, percent of net capacity.
  std::optional<double> soc_pct;
  // Vehicle.Powertrain.TractionBattery.Charging.IsCharging: energy is flowing from the charger.
  std::optional<bool> is_charging;
  // Vehicle.Powertrain.TractionBattery.Charging.IsChargingCableConnected: plugged in.
  std::optional<bool> charger_connected;
  // Vehicle.Powertrain.TractionBattery.Charging.Power, kW (idlefleet overlay):
  // power the charger delivers at the inlet.
  std::optional<double> charger_power_kw;
  // Vehicle.Cabin.Seat.Row1.DriverSide.IsOccupied.
  std::optional<bool> driver_seat_occupied;
  // Vehicle.Cabin.Door.Row1.DriverSide.IsOpen.
  std::optional<bool> driver_door_open;
  // Vehicle.Exterior.AirTemperature, °C.
  std::optional<double> ambient_temperature_c;
  // Vehicle.Idlefleet.Accelerator.Temperature, °C (idlefleet overlay).
  std::optional<double> accelerator_temperature_c;
  // Vehicle.Idlefleet.Accelerator.Power, kW (idlefleet overlay): the AI
  // computer's measured draw, for metering; without it the agent meters its
  // configured inference power.
  std::optional<double> accelerator_power_kw;
  // When the feed was last heard from (any update or a source heartbeat).
  // VSS feeds publish on change, so a parked car's gear may not be resent
  // for hours: staleness is a property of the feed, not of each value.
  std::optional<TimeMs> heard_at;
};

// One identifier per signal, in the order of VehicleSignals.
enum class SignalId : int {
  kSpeed = 0,
  kGear,
  kSoc,
  kIsCharging,
  kChargerConnected,
  kChargerPower,
  kDriverSeatOccupied,
  kDriverDoorOpen,
  kAmbientTemperature,
  kAcceleratorTemperature,
  kAcceleratorPower,
};
inline constexpr int kSignalCount = 11;

// How a signal is named and measured; the KUKSA feed subscribes to these paths.
struct SignalSpec {
  SignalId id;
  std::string_view vss_path;
  std::string_view unit;       // VSS unit name ("km/h", "percent", "kW", "celsius"), or "" for booleans and enums
  std::string_view owner_name; // how an owner reads it: "driver's door"
  bool overlay;                // true where the path is an idlefleet overlay, not VSS 4.x
};

// All signals, indexed by SignalId.
std::span<const SignalSpec> signal_specs();
const SignalSpec& signal_spec(SignalId id);

// Whether the signal's value has arrived.
bool signal_known(const VehicleSignals& signals, SignalId id);

// Parses one update and stores it. value_text is a decimal number (no
// whitespace, no '+', no hex, finite), an integer for the gear, or a boolean
// "true" / "false" / "1" / "0". On error the signals are unchanged and the
// message names the path and the problem.
//   kNotFound: a path we do not read; kOutOfRange: too long, or outside the
//   signal's range; kInvalidArgument: not a number / boolean, or not finite.
// REQUIRES: signals != nullptr.
Status apply_signal(VehicleSignals* signals, std::string_view vss_path, std::string_view value_text);

// As above, and on success records that the feed was heard from at received_at.
Status apply_signal(VehicleSignals* signals, std::string_view vss_path, std::string_view value_text,
                    TimeMs received_at);

// Checks every known value against its range (for signals set in code, not
// through apply_signal): finite, in range, heard_at plausible.
Status validate_signals(const VehicleSignals& signals);

// The vehicle's state. driving / parked / charging follow from the signals
// (physical_state); eligible, serving and preempting are set by the agent on
// top of a parked or charging car.
enum class VehicleState : int { kDriving = 0, kParked, kCharging, kEligible, kServing, kPreempting };

// "driving", "parked", "charging", "eligible", "serving", "preempting".
const char* vehicle_state_name(VehicleState state);

// Parked means gear known and in P, and speed known and exactly 0; charging
// means parked with IsCharging true. A car we cannot prove parked (gear or
// speed unknown) counts as driving: the conservative answer.
VehicleState physical_state(const VehicleSignals& signals);

// How a gear reads on a dashboard: "P", "D", "N", "R", "R2", "3"; "?" if out of range.
std::string gear_name(int gear);

}  // namespace idlefleet::core
