// The owner's policy as the coordinator last sent it, kept on the vehicle
// (<key_dir>/<vehicle id>.policy.json), so that an agent restarted while the
// coordinator is away still enforces what the owner set, not its flags.
//
// File format: one JSON object, core::encode_policy's form (protocol.h),
// at most core::kPolicyBytesMax bytes; written to a temporary file, synced
// and renamed over the old one, so a crash leaves the old policy or the new,
// never half of one. Read back through core::decode_policy: an unknown field,
// a wrong type or an invalid policy is an error naming the file, and the
// agent refuses to start rather than drop the owner's limits silently.
//
// Thread-safety: the functions touch only their file; one caller per file.
#pragma once

#include <optional>
#include <string>

#include "common/result.h"
#include "core/policy.h"

namespace idlefleet::agent {

// The policy file of a vehicle in `key_dir`.
std::string policy_file_path(const std::string& key_dir, const std::string& vehicle_id);

// The stored policy, or nullopt when there is no file. Errors: kIo (cannot
// read), kOutOfRange (too large), kCorrupt / kInvalidArgument (not a valid
// policy), each naming the path.
Result<std::optional<core::OwnerPolicy>> load_policy_file(const std::string& path);

// Replaces the file with `policy`. REQUIRES: policy.validate() succeeded.
Status save_policy_file(const std::string& path, const core::OwnerPolicy& policy);

}  // namespace idlefleet::agent
