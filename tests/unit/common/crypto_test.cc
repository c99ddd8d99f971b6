// SHA-256 and Ed25519 through libsodium: known answers, pieces equal the
// whole, signatures verify only for their key and message, hex round trips.
#include "common/crypto.h"

#include <gtest/gtest.h>

namespace idlefleet::crypto_test {
namespace {

TEST(Crypto, Sha256KnownAnswersAndPieces) {
  // FIPS 180-2 appendix B.1.
  EXPECT_EQ(to_hex(sha256_of("abc")), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(to_hex(sha256_of("")), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  Sha256Hasher h;
  h.update(std::string_view("a"));
  h.update(std::string_view("bc"));
  EXPECT_EQ(h.finish(), sha256_of("abc"));
}

TEST(Crypto, HexRoundTripsAndRefusesGarbage) {
  const Sha256Digest d = sha256_of("x");
  EXPECT_EQ(from_hex<32>(to_hex(d)), d);
  std::string upper = to_hex(d);
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  EXPECT_EQ(from_hex<32>(upper), d);
  EXPECT_FALSE(from_hex<32>(to_hex(d).substr(1)));
  EXPECT_FALSE(from_hex<32>(std::string(64, 'g')));
  EXPECT_FALSE(from_hex<64>(to_hex(d)));
}

TEST(Crypto, SignaturesVerifyOnlyForTheirKeyAndMessage) {
  const Ed25519Keypair a = Ed25519Keypair::generate();
  const Ed25519Keypair b = Ed25519Keypair::generate();
  EXPECT_NE(a.public_key, b.public_key);
  EXPECT_EQ(Ed25519Keypair::from_secret(a.secret_key).public_key, a.public_key);
  const Ed25519Signature sig = ed25519_sign(a.secret_key, "receipt");
  EXPECT_TRUE(ed25519_verify(a.public_key, "receipt", sig));
  EXPECT_FALSE(ed25519_verify(b.public_key, "receipt", sig));
  EXPECT_FALSE(ed25519_verify(a.public_key, "receipt!", sig));
  Ed25519Signature bent = sig;
  bent[10] ^= 1;
  EXPECT_FALSE(ed25519_verify(a.public_key, "receipt", bent));
  // Arbitrary bytes as a key or signature are refused, not a crash.
  Ed25519PublicKey junk{};
  junk.fill(0xff);
  EXPECT_FALSE(ed25519_verify(junk, "receipt", sig));
  // Ed25519 is deterministic: the same key and message, the same signature.
  EXPECT_EQ(ed25519_sign(a.secret_key, "receipt"), sig);
}

}  // namespace
}  // namespace idlefleet::crypto_test
