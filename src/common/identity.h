// An Ed25519 identity on disk: a vehicle's, made on the vehicle the first
// time it is needed and never sent anywhere (only its public half is, in
// `hello` and at enrolment), and the coordinator's, made in its data
// directory. The key signs a vehicle's receipts and, as a NATS NKey
// (common/nkey.h), proves who connects to nats-server.
//
// File format: the 64-byte libsodium secret key (seed, then public key) as
// 128 lower-case hex digits and a newline, mode 0600 in a directory of mode
// 0700. A file that others may read is refused, not used: a leaked key lets
// anyone sign receipts and connect to NATS in the key's name.
//
// Thread-safety: the functions touch only their file; call once per vehicle.
#pragma once

#include <string>

#include "common/crypto.h"
#include "common/result.h"

namespace idlefleet {

// Loads the key at `path`, or makes one there if there is no file. Errors:
// kCorrupt (not a key file), kInvalidArgument (group or others may read or
// write it), kIo (the directory or file cannot be made or read).
Result<Ed25519Keypair> load_or_create_key(const std::string& path);

}  // namespace idlefleet
