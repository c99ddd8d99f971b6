// NKeys: the example user from the NATS documentation, round trips, and
// garbage (every way a key text can be wrong is refused with a reason).
#include "common/nkey.h"

#include <gtest/gtest.h>

#include <string>

namespace idlefleet::nkey_test {
namespace {

// The NATS documentation's example user (docs.nats.io, NKey authentication).
constexpr const char* kDocSeed = "SUACSSL3UAHUDXKFSNVUZRF5UHPMWZ6BFDTJ7M6USDXIEDNPPQYYYCU3VY";
constexpr const char* kDocPublic = "UDXU4RCSJNZOIQHZNWXHXORDPRTGNJAHAHFRGZNEEJCPQTT2M7NLCNF4";

Ed25519Keypair keypair_of_seed(const Ed25519Seed& seed) {
  Ed25519SecretKey secret{};
  std::copy(seed.begin(), seed.end(), secret.begin());
  return Ed25519Keypair::from_secret(secret);
}

TEST(NkeyTest, DocumentationExampleSeedGivesItsPublicKey) {
  auto seed = parse_nkey_user_seed(kDocSeed);
  ASSERT_TRUE(seed) << seed.error().to_string();
  const Ed25519Keypair k = keypair_of_seed(*seed);
  EXPECT_EQ(nkey_user_public(k.public_key), kDocPublic);
  EXPECT_EQ(nkey_user_seed(k.secret_key), kDocSeed);
  auto pub = parse_nkey_user_public(kDocPublic);
  ASSERT_TRUE(pub) << pub.error().to_string();
  EXPECT_EQ(*pub, k.public_key);
}

TEST(NkeyTest, Crc16IsXmodem) {
  // The standard check value of CRC-16/XMODEM.
  const std::string check = "123456789";
  EXPECT_EQ(nkey_crc16(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(check.data()), check.size())),
            0x31C3);
  EXPECT_EQ(nkey_crc16({}), 0);
}

TEST(NkeyTest, RoundTripsGeneratedKeys) {
  for (int i = 0; i < 50; ++i) {
    const Ed25519Keypair k = Ed25519Keypair::generate();
    const std::string text = nkey_user_public(k.public_key);
    ASSERT_EQ(text.size(), kNkeyUserPublicChars);
    ASSERT_EQ(text[0], 'U');
    auto back = parse_nkey_user_public(text);
    ASSERT_TRUE(back) << back.error().to_string();
    EXPECT_EQ(*back, k.public_key);
    const std::string seed = nkey_user_seed(k.secret_key);
    ASSERT_EQ(seed.size(), kNkeyUserSeedChars);
    ASSERT_EQ(seed.substr(0, 2), "SU");
    auto seed_back = parse_nkey_user_seed(seed);
    ASSERT_TRUE(seed_back);
    EXPECT_TRUE(std::equal(seed_back->begin(), seed_back->end(), k.secret_key.begin()));
  }
}

void expect_refused(std::string_view text, std::string_view why) {
  auto r = parse_nkey_user_public(text);
  ASSERT_FALSE(r) << "accepted '" << text << "'";
  EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument);
  EXPECT_NE(r.error().message.find(why), std::string::npos) << r.error().message;
}

TEST(NkeyTest, RefusesGarbage) {
  const std::string good = kDocPublic;
  expect_refused("", "0 characters");
  expect_refused(good.substr(1), "55 characters");
  expect_refused(good + "A", "57 characters");
  expect_refused(std::string(5000, 'U'), "5000 characters");
  std::string lower = good;
  lower[3] = 'x';
  expect_refused(lower, "alphabet");
  std::string digit = good;
  digit[7] = '1';  // not in base32
  expect_refused(digit, "alphabet");
  std::string nul = good;
  nul[10] = '\0';
  expect_refused(nul, "alphabet");
  // One character changed: the checksum catches it.
  std::string flipped = good;
  flipped[20] = flipped[20] == 'A' ? 'B' : 'A';
  expect_refused(flipped, "checksum");
  // A seed is not a public key, nor is an account key (prefix 'A').
  expect_refused(kDocSeed, "58 characters");
  Ed25519PublicKey zero{};
  std::string account = nkey_user_public(zero);
  account[0] = 'A';
  expect_refused(account, "another kind of key");
  // Non-zero bits after the last whole byte (a second spelling of one key).
  EXPECT_FALSE(parse_nkey_user_seed(std::string(kDocSeed).substr(0, 57) + "7"));
  EXPECT_FALSE(parse_nkey_user_seed(kDocPublic));
  EXPECT_FALSE(parse_nkey_user_seed(std::string(58, '=')));
}

}  // namespace
}  // namespace idlefleet::nkey_test
