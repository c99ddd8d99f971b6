#include "common/nkey.h"

#include <algorithm>
#include <optional>
#include <vector>

namespace idlefleet {

namespace {

constexpr uint8_t kPrefixUser = 20 << 3;  // 'U' after base32
constexpr uint8_t kPrefixSeed = 18 << 3;  // 'S'
constexpr char kBase32Alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

std::string base32(std::span<const uint8_t> bytes) {
  std::string out;
  out.reserve((bytes.size() * 8 + 4) / 5);
  uint32_t buffer = 0;
  int bits = 0;
  for (uint8_t b : bytes) {
    buffer = (buffer << 8) | b;
    bits += 8;
    while (bits >= 5) {
      out.push_back(kBase32Alphabet[(buffer >> (bits - 5)) & 31]);
      bits -= 5;
    }
  }
  if (bits > 0) out.push_back(kBase32Alphabet[(buffer << (5 - bits)) & 31]);
  return out;
}

// Strict: only the upper-case alphabet, and the bits left over after the
// last whole byte must be zero (one text per key).
std::optional<std::vector<uint8_t>> unbase32(std::string_view text) {
  std::vector<uint8_t> out;
  out.reserve(text.size() * 5 / 8);
  uint32_t buffer = 0;
  int bits = 0;
  for (char c : text) {
    uint32_t v = 0;
    if (c >= 'A' && c <= 'Z') {
      v = static_cast<uint32_t>(c - 'A');
    } else if (c >= '2' && c <= '7') {
      v = static_cast<uint32_t>(c - '2' + 26);
    } else {
      return std::nullopt;
    }
    buffer = (buffer << 5) | v;
    bits += 5;
    if (bits >= 8) {
      out.push_back(static_cast<uint8_t>(buffer >> (bits - 8)));
      bits -= 8;
    }
    buffer &= (1u << bits) - 1;
  }
  if (buffer != 0) return std::nullopt;
  return out;
}

std::string with_checksum(std::vector<uint8_t> raw) {
  const uint16_t crc = nkey_crc16(raw);
  raw.push_back(static_cast<uint8_t>(crc & 0xff));
  raw.push_back(static_cast<uint8_t>(crc >> 8));
  return base32(raw);
}

// Decodes `text` of `chars` characters into `payload_bytes` bytes after
// `prefix`, checking the alphabet, the prefix and the checksum.
Result<std::vector<uint8_t>> decode(std::string_view text, std::string_view what, size_t chars,
                                    std::span<const uint8_t> prefix, size_t payload_bytes) {
  auto bad = [&](const std::string& why) {
    const std::string shown(text.substr(0, 64));
    return Unexpected(ErrorCode::kInvalidArgument, "'" + shown + "' is not " + std::string(what) + ": " + why);
  };
  if (text.size() != chars) {
    return bad(std::to_string(text.size()) + " characters, not " + std::to_string(chars));
  }
  auto raw = unbase32(text);
  if (!raw) return bad("a character outside the base32 alphabet A-Z 2-7");
  if (raw->size() != prefix.size() + payload_bytes + 2) return bad("wrong length");
  if (!std::equal(prefix.begin(), prefix.end(), raw->begin())) return bad("another kind of key");
  const size_t body = raw->size() - 2;
  const uint16_t crc = static_cast<uint16_t>((*raw)[body] | ((*raw)[body + 1] << 8));
  if (crc != nkey_crc16(std::span<const uint8_t>(raw->data(), body))) return bad("its checksum does not match");
  return std::vector<uint8_t>(raw->begin() + static_cast<std::ptrdiff_t>(prefix.size()),
                              raw->begin() + static_cast<std::ptrdiff_t>(body));
}

}  // namespace

uint16_t nkey_crc16(std::span<const uint8_t> bytes) {
  uint16_t crc = 0;
  for (uint8_t b : bytes) {
    crc ^= static_cast<uint16_t>(b << 8);
    for (int i = 0; i < 8; ++i) {
      crc = (crc & 0x8000) != 0 ? static_cast<uint16_t>((crc << 1) ^ 0x1021) : static_cast<uint16_t>(crc << 1);
    }
  }
  return crc;
}

std::string nkey_user_public(const Ed25519PublicKey& key) {
  std::vector<uint8_t> raw{kPrefixUser};
  raw.insert(raw.end(), key.begin(), key.end());
  return with_checksum(std::move(raw));
}

Result<Ed25519PublicKey> parse_nkey_user_public(std::string_view text) {
  const uint8_t prefix[] = {kPrefixUser};
  auto payload = decode(text, "a NATS user's public NKey (U...)", kNkeyUserPublicChars, prefix, kEd25519PublicKeyBytes);
  if (!payload) return Unexpected(payload.error());
  Ed25519PublicKey key{};
  std::copy(payload->begin(), payload->end(), key.begin());
  return key;
}

std::string nkey_user_seed(const Ed25519SecretKey& secret) {
  std::vector<uint8_t> raw{static_cast<uint8_t>(kPrefixSeed | (kPrefixUser >> 5)),
                           static_cast<uint8_t>((kPrefixUser & 31) << 3)};
  raw.insert(raw.end(), secret.begin(), secret.begin() + kEd25519SeedBytes);
  return with_checksum(std::move(raw));
}

Result<Ed25519Seed> parse_nkey_user_seed(std::string_view text) {
  const uint8_t prefix[] = {static_cast<uint8_t>(kPrefixSeed | (kPrefixUser >> 5)),
                            static_cast<uint8_t>((kPrefixUser & 31) << 3)};
  auto payload = decode(text, "a NATS user's seed NKey (SU...)", kNkeyUserSeedChars, prefix, kEd25519SeedBytes);
  if (!payload) return Unexpected(payload.error());
  Ed25519Seed seed{};
  std::copy(payload->begin(), payload->end(), seed.begin());
  return seed;
}

}  // namespace idlefleet
