#include "core/signals.h"

#include <array>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <system_error>

#include "common/check.h"

namespace idlefleet::core {

namespace {

constexpr std::array<SignalSpec, kSignalCount> kSpecs = {{
    {SignalId::kSpeed, "Vehicle.Speed", "km/h", "speed", false},
    {SignalId::kGear, "Vehicle.Powertrain.Transmission.CurrentGear", "", "gear", false},
    {SignalId::kSoc, "Vehicle.Powertrain.TractionBattery.StateOfCharge.Current", "percent", "battery charge", false},
    {SignalId::kIsCharging, "Vehicle.Powertrain.TractionBattery.Charging.IsCharging", "", "charging", false},
    {SignalId::kChargerConnected, "Vehicle.Powertrain.TractionBattery.Charging.IsChargingCableConnected", "",
     "charging cable", false},
    {SignalId::kChargerPower, "Vehicle.Powertrain.TractionBattery.Charging.Power", "kW", "charger power", true},
    {SignalId::kDriverSeatOccupied, "Vehicle.Cabin.Seat.Row1.DriverSide.IsOccupied", "", "driver's seat", false},
    {SignalId::kDriverDoorOpen, "Vehicle.Cabin.Door.Row1.DriverSide.IsOpen", "", "driver's door", false},
    {SignalId::kAmbientTemperature, "Vehicle.Exterior.AirTemperature", "celsius", "outside temperature", false},
    {SignalId::kAcceleratorTemperature, "Vehicle.Idlefleet.Accelerator.Temperature", "celsius",
     "AI computer temperature", true},
    {SignalId::kAcceleratorPower, "Vehicle.Idlefleet.Accelerator.Power", "kW", "AI computer power", true},
}};

// The table is indexed by SignalId; a reordering would misfile every update.
constexpr bool specs_in_order() {
  for (int i = 0; i < kSignalCount; ++i) {
    if (static_cast<int>(kSpecs[i].id) != i) return false;
  }
  return true;
}
static_assert(specs_in_order());

// Feeds are untrusted: an error message quotes at most this many bytes of
// what they sent, with anything unprintable replaced, so logs stay readable.
constexpr size_t kQuotedBytesMax = 48;

std::string quoted(std::string_view text) {
  std::string out = "'";
  const size_t n = text.size() < kQuotedBytesMax ? text.size() : kQuotedBytesMax;
  for (size_t i = 0; i < n; ++i) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    out += (c >= 0x20 && c < 0x7f) ? static_cast<char>(c) : '?';
  }
  if (n < text.size()) out += "...";
  out += "'";
  return out;
}

std::string number_text(double v) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

Result<double> parse_number(std::string_view path, std::string_view text, double min, double max) {
  double v = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v, std::chars_format::general);
  if (ec == std::errc::result_out_of_range) {
    return Unexpected(ErrorCode::kOutOfRange, std::string(path) + ": " + quoted(text) + " is out of range");
  }
  if (ec != std::errc() || end != text.data() + text.size()) {
    return Unexpected(ErrorCode::kInvalidArgument, std::string(path) + ": " + quoted(text) + " is not a number");
  }
  if (!std::isfinite(v)) {
    return Unexpected(ErrorCode::kInvalidArgument,
                      std::string(path) + ": " + quoted(text) + " is not a finite number");
  }
  if (v < min || v > max) {
    return Unexpected(ErrorCode::kOutOfRange, std::string(path) + ": " + number_text(v) + " is outside [" +
                                                  number_text(min) + ", " + number_text(max) + "]");
  }
  return v;
}

bool gear_valid(int gear) {
  return (gear >= kGearReverseMin && gear <= kGearForwardMax) || gear == kGearPark || gear == kGearDrive;
}

Result<int> parse_gear(std::string_view path, std::string_view text) {
  int v = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec == std::errc::result_out_of_range) {
    return Unexpected(ErrorCode::kOutOfRange, std::string(path) + ": " + quoted(text) + " is out of range");
  }
  if (ec != std::errc() || end != text.data() + text.size()) {
    return Unexpected(ErrorCode::kInvalidArgument,
                      std::string(path) + ": " + quoted(text) + " is not an integer gear");
  }
  if (!gear_valid(v)) {
    return Unexpected(ErrorCode::kOutOfRange,
                      std::string(path) + ": gear " + std::to_string(v) + " is not one of " +
                          std::to_string(kGearReverseMin) + ".." + std::to_string(kGearForwardMax) + ", " +
                          std::to_string(kGearPark) + " (park) or " + std::to_string(kGearDrive) + " (drive)");
  }
  return v;
}

Result<bool> parse_bool(std::string_view path, std::string_view text) {
  if (text == "true" || text == "1") return true;
  if (text == "false" || text == "0") return false;
  return Unexpected(ErrorCode::kInvalidArgument, std::string(path) + ": " + quoted(text) +
                                                     " is not a boolean (true, false, 1 or 0)");
}

template <class T>
Status store(std::optional<T>* field, Result<T> parsed) {
  if (!parsed) return Unexpected(parsed.error());
  *field = *parsed;
  return {};
}

Status check_range(SignalId id, const std::optional<double>& v, double min, double max) {
  if (!v) return {};
  const std::string_view path = signal_spec(id).vss_path;
  if (!std::isfinite(*v)) {
    return Unexpected(ErrorCode::kInvalidArgument, std::string(path) + ": value is not finite");
  }
  if (*v < min || *v > max) {
    return Unexpected(ErrorCode::kOutOfRange, std::string(path) + ": " + number_text(*v) + " is outside [" +
                                                  number_text(min) + ", " + number_text(max) + "]");
  }
  return {};
}

}  // namespace

std::span<const SignalSpec> signal_specs() { return kSpecs; }

const SignalSpec& signal_spec(SignalId id) {
  const int i = static_cast<int>(id);
  CHECK(i >= 0 && i < kSignalCount);
  return kSpecs[i];
}

bool signal_known(const VehicleSignals& s, SignalId id) {
  switch (id) {
    case SignalId::kSpeed: return s.speed_kmh.has_value();
    case SignalId::kGear: return s.gear.has_value();
    case SignalId::kSoc: return s.soc_pct.has_value();
    case SignalId::kIsCharging: return s.is_charging.has_value();
    case SignalId::kChargerConnected: return s.charger_connected.has_value();
    case SignalId::kChargerPower: return s.charger_power_kw.has_value();
    case SignalId::kDriverSeatOccupied: return s.driver_seat_occupied.has_value();
    case SignalId::kDriverDoorOpen: return s.driver_door_open.has_value();
    case SignalId::kAmbientTemperature: return s.ambient_temperature_c.has_value();
    case SignalId::kAcceleratorTemperature: return s.accelerator_temperature_c.has_value();
    case SignalId::kAcceleratorPower: return s.accelerator_power_kw.has_value();
  }
  return false;
}

Status apply_signal(VehicleSignals* s, std::string_view path, std::string_view text) {
  CHECK(s != nullptr);
  if (path.size() > kSignalPathBytesMax) {
    return Unexpected(ErrorCode::kOutOfRange, "signal path of " + std::to_string(path.size()) +
                                                  " bytes exceeds kSignalPathBytesMax (" +
                                                  std::to_string(kSignalPathBytesMax) + "): " + quoted(path));
  }
  const SignalSpec* spec = nullptr;
  for (const SignalSpec& candidate : kSpecs) {
    if (candidate.vss_path == path) spec = &candidate;
  }
  if (spec == nullptr) {
    return Unexpected(ErrorCode::kNotFound, "unknown signal path " + quoted(path));
  }
  if (text.size() > kSignalValueBytesMax) {
    return Unexpected(ErrorCode::kOutOfRange, std::string(path) + ": value of " + std::to_string(text.size()) +
                                                  " bytes exceeds kSignalValueBytesMax (" +
                                                  std::to_string(kSignalValueBytesMax) + ")");
  }
  if (text.empty()) {
    return Unexpected(ErrorCode::kInvalidArgument, std::string(path) + ": empty value");
  }
  switch (spec->id) {
    case SignalId::kSpeed:
      return store(&s->speed_kmh, parse_number(path, text, -kSpeedKmhAbsMax, kSpeedKmhAbsMax));
    case SignalId::kGear: return store(&s->gear, parse_gear(path, text));
    case SignalId::kSoc: return store(&s->soc_pct, parse_number(path, text, kSocPctMin, kSocPctMax));
    case SignalId::kIsCharging: return store(&s->is_charging, parse_bool(path, text));
    case SignalId::kChargerConnected: return store(&s->charger_connected, parse_bool(path, text));
    case SignalId::kChargerPower:
      return store(&s->charger_power_kw, parse_number(path, text, kChargerPowerKwMin, kChargerPowerKwMax));
    case SignalId::kDriverSeatOccupied: return store(&s->driver_seat_occupied, parse_bool(path, text));
    case SignalId::kDriverDoorOpen: return store(&s->driver_door_open, parse_bool(path, text));
    case SignalId::kAmbientTemperature:
      return store(&s->ambient_temperature_c,
                   parse_number(path, text, kAmbientTemperatureCMin, kAmbientTemperatureCMax));
    case SignalId::kAcceleratorTemperature:
      return store(&s->accelerator_temperature_c,
                   parse_number(path, text, kAcceleratorTemperatureCMin, kAcceleratorTemperatureCMax));
    case SignalId::kAcceleratorPower:
      return store(&s->accelerator_power_kw, parse_number(path, text, 0.0, kAcceleratorPowerKwMax));
  }
  return Unexpected(ErrorCode::kInternal, "signal table and parser disagree");
}

Status apply_signal(VehicleSignals* s, std::string_view path, std::string_view text, TimeMs received_at) {
  CHECK(s != nullptr);
  if (received_at < 0 || received_at > kPlausibleTimeMsMax) {
    return Unexpected(ErrorCode::kOutOfRange, std::string("signal received_at ") + std::to_string(received_at) +
                                                  " ms is outside [0, kPlausibleTimeMsMax]");
  }
  IF_RETURN_IF_ERROR(apply_signal(s, path, text));
  s->heard_at = received_at;
  return {};
}

Status validate_signals(const VehicleSignals& s) {
  IF_RETURN_IF_ERROR(check_range(SignalId::kSpeed, s.speed_kmh, -kSpeedKmhAbsMax, kSpeedKmhAbsMax));
  if (s.gear && !gear_valid(*s.gear)) {
    return Unexpected(ErrorCode::kOutOfRange, std::string(signal_spec(SignalId::kGear).vss_path) + ": gear " +
                                                  std::to_string(*s.gear) + " is not a VSS gear");
  }
  IF_RETURN_IF_ERROR(check_range(SignalId::kSoc, s.soc_pct, kSocPctMin, kSocPctMax));
  IF_RETURN_IF_ERROR(check_range(SignalId::kChargerPower, s.charger_power_kw, kChargerPowerKwMin, kChargerPowerKwMax));
  IF_RETURN_IF_ERROR(check_range(SignalId::kAmbientTemperature, s.ambient_temperature_c, kAmbientTemperatureCMin,
                                 kAmbientTemperatureCMax));
  IF_RETURN_IF_ERROR(check_range(SignalId::kAcceleratorTemperature, s.accelerator_temperature_c,
                                 kAcceleratorTemperatureCMin, kAcceleratorTemperatureCMax));
  IF_RETURN_IF_ERROR(check_range(SignalId::kAcceleratorPower, s.accelerator_power_kw, 0.0, kAcceleratorPowerKwMax));
  if (s.heard_at && (*s.heard_at < 0 || *s.heard_at > kPlausibleTimeMsMax)) {
    return Unexpected(ErrorCode::kOutOfRange,
                      "signals heard_at " + std::to_string(*s.heard_at) + " ms is outside [0, kPlausibleTimeMsMax]");
  }
  return {};
}

const char* vehicle_state_name(VehicleState state) {
  switch (state) {
    case VehicleState::kDriving: return "driving";
    case VehicleState::kParked: return "parked";
    case VehicleState::kCharging: return "charging";
    case VehicleState::kEligible: return "eligible";
    case VehicleState::kServing: return "serving";
    case VehicleState::kPreempting: return "preempting";
  }
  return "unknown";
}

VehicleState physical_state(const VehicleSignals& s) {
  // Exactly zero: in P the car cannot roll, so any reported motion is either
  // a lie we should not trust or a gearbox we do not understand.
  if (!s.gear || !s.speed_kmh || *s.gear != kGearPark || *s.speed_kmh != 0.0) return VehicleState::kDriving;
  if (s.is_charging.value_or(false)) return VehicleState::kCharging;
  return VehicleState::kParked;
}

std::string gear_name(int gear) {
  if (gear == kGearPark) return "P";
  if (gear == kGearDrive) return "D";
  if (gear == kGearNeutral) return "N";
  if (gear == -1) return "R";
  if (gear < 0 && gear >= kGearReverseMin) {
    std::string name = "R";  // appended, not "R" + ...: g++ 12 warns falsely (-Wrestrict) on that form
    name += std::to_string(-gear);
    return name;
  }
  if (gear > 0 && gear <= kGearForwardMax) return std::to_string(gear);
  return "?";
}

}  // namespace idlefleet::core
