// The nats-server authorisation for a fleet, generated from the vehicles the
// coordinator has enrolled: who may connect to NATS, and on which subjects
// each user may publish and subscribe.
//
// Every user is an NKey (common/nkey.h): the coordinator's own Ed25519 key
// (<data_dir>/keys/coordinator.key, made 0600 on first use) and each
// enrolled vehicle's pinned key. nats-server holds only public keys, so the
// file holds no secret; it is still written 0600, since it lists the fleet.
//
//   coordinator:  publish idlefleet.v1.down.>   subscribe idlefleet.v1.up.>
//   vehicle <id>: publish idlefleet.v1.up.<id>, idlefleet.v1.vss.<id>
//                 subscribe idlefleet.v1.down.<id>, idlefleet.v1.sim.<id>,
//                 idlefleet.v1.vss.<id>
// A KUKSA gateway feeds one vehicle's agent on that vehicle: it connects
// with the vehicle's own key, so the vehicle's user may publish its own VSS
// subject (and nobody else's). Nothing in the fleet uses request/reply, so no
// user gets _INBOX.>. Vehicles whose key was pinned at a first hello
// without enrolment (enrolment = "open") get no user: the credential is what
// enrolment with an owner's code gives.
//
// The text is a fragment for nats-server's config: `include` it from the
// main file. Its format (nats-server's configuration language):
//   authorization {
//     users = [
//       # coordinator
//       {nkey: "U...", permissions: {publish: {allow: ["..."]}, subscribe: {allow: ["..."]}}}
//       # vehicle car-1, owner own_...
//       {nkey: "U...", permissions: {...}}
//     ]
//   }
//
// Thread-safety: free functions; the store's own rules apply (one thread).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/crypto.h"
#include "common/result.h"
#include "store/vehicle_store.h"

namespace idlefleet::coordinator {

// Where the coordinator keeps its identity key in its data directory.
inline constexpr std::string_view kCoordinatorKeyFile = "keys/coordinator.key";
// The most a pid file may hold ("4194304\n" and then some).
inline constexpr size_t kPidFileBytesMax = 64;

std::string coordinator_key_path(const std::string& data_dir);

struct NatsUser {
  std::string comment;  // one line, shown above the user
  std::string nkey;     // "U..."
  std::vector<std::string> publish;
  std::vector<std::string> subscribe;
};

// The coordinator's user and one per enrolled vehicle (owner_id not empty),
// in the order given. kCorrupt for a record whose key is not 64 hex digits.
Result<std::vector<NatsUser>> fleet_nats_users(const Ed25519PublicKey& coordinator,
                                               const std::vector<store::VehicleRecord>& vehicles);

// The `authorization { users = [...] }` block for `users`.
std::string nats_authorization_text(const std::vector<NatsUser>& users);

// Writes `text` to `path` atomically: a 0600 temporary file in the same
// directory, fsync, rename over `path`. A reader (nats-server reloading)
// sees the old file or the new one, never a part.
Status write_private_file(const std::string& path, std::string_view text);

// The users for everything enrolled in `vehicles`, written to `path`.
// Returns how many vehicles it names.
Result<size_t> write_nats_authorization(const std::string& path, const Ed25519PublicKey& coordinator,
                                        store::VehicleStore& vehicles);

// Sends SIGHUP to the process whose pid is in `pid_file` (nats-server's
// `pid_file`), which makes nats-server reload its configuration. Errors:
// kNotFound (no file), kCorrupt (not a pid), kIo (no such process, or not
// ours to signal).
Status signal_nats_reload(const std::string& pid_file);

}  // namespace idlefleet::coordinator
