#include "http/address_policy.h"

#include <gtest/gtest.h>

namespace gantry::http {
namespace {

TEST(AddressPolicyTest, RefusesEveryAddressOffThePublicInternet) {
  AddressPolicy p;
  for (const char* ip :
       {"127.0.0.1", "127.255.0.9", "10.0.0.1", "172.16.0.1", "172.31.255.255", "192.168.1.1",
        "169.254.169.254", "100.64.0.1", "0.0.0.0", "224.0.0.1", "255.255.255.255", "::1",
        "::", "fe80::1", "fd00::1", "ff02::1", "::ffff:127.0.0.1", "64:ff9b::7f00:1"}) {
    EXPECT_EQ(p.Check(ip).code(), Code::kPermissionDenied) << ip;
  }
  for (const char* ip : {"93.184.215.14", "8.8.8.8", "172.32.0.1", "100.128.0.1", "2606:4700::1111",
                         "64:ff9b::808:808"}) {
    EXPECT_TRUE(p.Check(ip).ok()) << ip;
  }
  EXPECT_EQ(p.Check("169.254.169.254").message(),
            "169.254.169.254 is a link-local address (cloud metadata lives here)");
  EXPECT_FALSE(p.Check("localhost").ok());  // names are resolved first, never judged by text
}

TEST(AddressPolicyTest, AnAllowListOpensExactlyItsPrefixes) {
  AddressPolicy p({*ParseCidr("127.0.0.1"), *ParseCidr("10.20.0.0/16"), *ParseCidr("fd00::/8")});
  EXPECT_TRUE(p.Check("127.0.0.1").ok());
  EXPECT_FALSE(p.Check("127.0.0.2").ok());
  EXPECT_TRUE(p.Check("10.20.3.4").ok());
  EXPECT_FALSE(p.Check("10.21.0.1").ok());
  EXPECT_TRUE(p.Check("fd12::1").ok());
  EXPECT_FALSE(p.Check("169.254.169.254").ok());
}

TEST(AddressPolicyTest, ParseCidrRefusesWhatIsNotAPrefix) {
  for (const char* bad : {"", "10.0.0.0/33", "::/129", "10.0.0.0/", "10.0.0.0/x", "example.com",
                          "10.0.0/8", "1.2.3.4/-1"}) {
    EXPECT_FALSE(ParseCidr(bad).ok()) << bad;
  }
  EXPECT_EQ(ParseCidr("10.0.0.0/8")->prefix_len, 96 + 8);
  EXPECT_EQ(ParseCidr("::1")->prefix_len, 128);
}

}  // namespace
}  // namespace gantry::http
