#include "common/crypto.h"

#include <sodium.h>

#include <cstdlib>
#include <cstring>
#include <mutex>

namespace idlefleet {

namespace {

static_assert(sizeof(crypto_hash_sha256_state) <= 512, "Sha256Hasher::state_ is too small");
static_assert(crypto_sign_PUBLICKEYBYTES == kEd25519PublicKeyBytes);
static_assert(crypto_sign_SECRETKEYBYTES == kEd25519SecretKeyBytes);
static_assert(crypto_sign_BYTES == kEd25519SignatureBytes);

void sodium_ready() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (sodium_init() < 0) std::abort();  // no entropy source: nothing can be signed or keyed
  });
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

crypto_hash_sha256_state* as_state(unsigned char* p) { return reinterpret_cast<crypto_hash_sha256_state*>(p); }

}  // namespace

Sha256Hasher::Sha256Hasher() {
  sodium_ready();
  crypto_hash_sha256_init(as_state(state_));
}

void Sha256Hasher::update(std::string_view bytes) {
  crypto_hash_sha256_update(as_state(state_), reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size());
}

void Sha256Hasher::update(std::span<const uint8_t> bytes) {
  crypto_hash_sha256_update(as_state(state_), bytes.data(), bytes.size());
}

Sha256Digest Sha256Hasher::finish() {
  Sha256Digest out{};
  crypto_hash_sha256_final(as_state(state_), out.data());
  return out;
}

Sha256Digest sha256_of(std::string_view bytes) {
  Sha256Hasher h;
  h.update(bytes);
  return h.finish();
}

std::string to_hex(std::span<const uint8_t> bytes) {
  static const char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(2 * bytes.size());
  for (uint8_t b : bytes) {
    out.push_back(kDigits[b >> 4]);
    out.push_back(kDigits[b & 15]);
  }
  return out;
}

template <size_t N>
std::optional<std::array<uint8_t, N>> from_hex(std::string_view hex) {
  if (hex.size() != 2 * N) return std::nullopt;
  std::array<uint8_t, N> out{};
  for (size_t i = 0; i < N; ++i) {
    const int hi = hex_digit(hex[2 * i]), lo = hex_digit(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return out;
}

template std::optional<std::array<uint8_t, 32>> from_hex<32>(std::string_view);
template std::optional<std::array<uint8_t, 64>> from_hex<64>(std::string_view);

Ed25519Keypair Ed25519Keypair::generate() {
  sodium_ready();
  Ed25519Keypair k;
  crypto_sign_keypair(k.public_key.data(), k.secret_key.data());
  return k;
}

Ed25519Keypair Ed25519Keypair::from_secret(const Ed25519SecretKey& secret) {
  sodium_ready();
  // The public key is derived from the seed (the first half), not copied
  // from the second half, so that a damaged key shows as halves that differ.
  Ed25519Keypair k;
  unsigned char seed[crypto_sign_SEEDBYTES];
  crypto_sign_ed25519_sk_to_seed(seed, secret.data());
  crypto_sign_seed_keypair(k.public_key.data(), k.secret_key.data(), seed);
  sodium_memzero(seed, sizeof seed);
  return k;
}

std::string random_hex(size_t bytes) {
  sodium_ready();
  std::string raw(bytes, '\0');
  randombytes_buf(raw.data(), raw.size());
  std::string out = to_hex(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(raw.data()), raw.size()));
  sodium_memzero(raw.data(), raw.size());
  return out;
}

Ed25519Signature ed25519_sign(const Ed25519SecretKey& secret, std::string_view message) {
  sodium_ready();
  Ed25519Signature sig{};
  crypto_sign_detached(sig.data(), nullptr, reinterpret_cast<const unsigned char*>(message.data()), message.size(),
                       secret.data());
  return sig;
}

bool ed25519_verify(const Ed25519PublicKey& public_key, std::string_view message, const Ed25519Signature& signature) {
  sodium_ready();
  return crypto_sign_verify_detached(signature.data(), reinterpret_cast<const unsigned char*>(message.data()),
                                     message.size(), public_key.data()) == 0;
}

}  // namespace idlefleet
