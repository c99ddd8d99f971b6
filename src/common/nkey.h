// NATS NKeys: an Ed25519 key written the way nats-server names users.
//
// A vehicle's (and the coordinator's) Ed25519 identity key is also its NATS
// credential: nats-server knows the user by its public NKey, sends a nonce
// in its INFO, and the client proves the key by signing that nonce. No
// shared secret exists anywhere.
//
// Format (NATS' nkeys, byte by byte), for a user's public key:
//   raw  = [0xA0 ('U' << 3 as a prefix byte: 20 << 3)] [32-byte public key]
//          [CRC-16 of the 33 bytes before it, little-endian]
//   text = RFC 4648 base32 (A-Z 2-7) of the 35 raw bytes, without padding:
//          56 characters, the first of which is always 'U'.
// A user's seed (the secret, used here only to check our encoding against
// libnats and the NATS documentation's example):
//   raw  = [0x95 ('S' << 3 | 0xA0 >> 5)] [0x00 ((0xA0 & 31) << 3)]
//          [32-byte Ed25519 seed] [CRC-16, little-endian]
//   text = base32 of the 36 raw bytes without padding: 58 characters, "SU...".
// The CRC is CRC-16/XMODEM: polynomial 0x1021, initial value 0, no
// reflection, no final XOR.
//
// Thread-safety: pure functions.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "common/crypto.h"
#include "common/result.h"

namespace idlefleet {

inline constexpr size_t kNkeyUserPublicChars = 56;
inline constexpr size_t kNkeyUserSeedChars = 58;
inline constexpr size_t kEd25519SeedBytes = 32;
using Ed25519Seed = std::array<uint8_t, kEd25519SeedBytes>;

// CRC-16/XMODEM of `bytes`, as NKeys checksum them.
uint16_t nkey_crc16(std::span<const uint8_t> bytes);

// "U..." (56 characters) for an Ed25519 public key.
std::string nkey_user_public(const Ed25519PublicKey& key);

// The Ed25519 public key in a user's public NKey. kInvalidArgument, naming
// what is wrong, for anything else: wrong length, a character outside the
// base32 alphabet, another key type (an account's "A...", a seed), a
// checksum that does not match.
Result<Ed25519PublicKey> parse_nkey_user_public(std::string_view text);

// "SU..." (58 characters) for the seed of a libsodium secret key (its first
// half).
std::string nkey_user_seed(const Ed25519SecretKey& secret);

// The seed in a user's seed NKey; errors as parse_nkey_user_public.
Result<Ed25519Seed> parse_nkey_user_seed(std::string_view text);

}  // namespace idlefleet
