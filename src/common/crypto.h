// Hashes and signatures the fleet's money depends on: SHA-256 (of outputs,
// request bodies, secrets) and Ed25519 (vehicle receipts), both libsodium's.
//
// Everything here is deterministic except Ed25519Keypair::generate(), which
// draws from the operating system's entropy (libsodium's randombytes): only
// a shell (the agent enrolling a vehicle) calls it, never the core.
//
// Thread-safety: every function may be called from any thread.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace idlefleet {

using Sha256Digest = std::array<uint8_t, 32>;
inline constexpr size_t kEd25519PublicKeyBytes = 32;
inline constexpr size_t kEd25519SecretKeyBytes = 64;  // libsodium's: the seed, then the public key
inline constexpr size_t kEd25519SignatureBytes = 64;
using Ed25519PublicKey = std::array<uint8_t, kEd25519PublicKeyBytes>;
using Ed25519SecretKey = std::array<uint8_t, kEd25519SecretKeyBytes>;
using Ed25519Signature = std::array<uint8_t, kEd25519SignatureBytes>;

// SHA-256 of bytes fed in pieces; finish() once.
class Sha256Hasher {
 public:
  Sha256Hasher();
  void update(std::string_view bytes);
  void update(std::span<const uint8_t> bytes);
  Sha256Digest finish();

 private:
  alignas(64) unsigned char state_[512];  // crypto_hash_sha256_state, opaque (static_assert in crypto.cc)
};

// SHA-256 of `bytes` in one call.
Sha256Digest sha256_of(std::string_view bytes);

// Lower-case hex of bytes, and back (nullopt unless exactly 2 x N hex digits,
// either case).
std::string to_hex(std::span<const uint8_t> bytes);
template <size_t N>
std::optional<std::array<uint8_t, N>> from_hex(std::string_view hex);

struct Ed25519Keypair {
  Ed25519PublicKey public_key{};
  Ed25519SecretKey secret_key{};

  // A new key from the system's entropy.
  static Ed25519Keypair generate();
  // The keypair whose seed is the first half of a 64-byte secret key; its
  // public key is derived from the seed (for a sound key file, equal to the
  // file's second half).
  static Ed25519Keypair from_secret(const Ed25519SecretKey& secret);
};

// `bytes` random bytes from the system's entropy, as hex (secrets, codes).
std::string random_hex(size_t bytes);

// Signs `message` (detached signature).
Ed25519Signature ed25519_sign(const Ed25519SecretKey& secret, std::string_view message);
// True if `signature` is `public_key`'s signature of `message`. Never throws
// or crashes on arbitrary bytes.
bool ed25519_verify(const Ed25519PublicKey& public_key, std::string_view message, const Ed25519Signature& signature);

}  // namespace idlefleet
