// ImageRef tests: parsing and normalising references by Docker's rules, and the layout tags
// made from them. Pure functions: nothing is started or written.
#include "agent/oci/image_ref.h"

#include <gtest/gtest.h>

#include <string>

namespace gantry::agent::oci {
namespace {

TEST(ImageRefTest, NormalisesDockerHubNames) {
  Result<ImageRef> r = ImageRef::Parse("python");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->registry, "docker.io");
  EXPECT_EQ(r->repository, "library/python");
  EXPECT_EQ(r->tag, "latest");
  EXPECT_EQ(r->ToString(), "docker.io/library/python:latest");
  EXPECT_EQ(r->TransportRef(), "docker://docker.io/library/python:latest");

  r = ImageRef::Parse("pytorch/pytorch:2.1.0-cuda12.1");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->ToString(), "docker.io/pytorch/pytorch:2.1.0-cuda12.1");
}

TEST(ImageRefTest, RegistryHostsPortsAndDigests) {
  Result<ImageRef> r = ImageRef::Parse("127.0.0.1:5000/gantry/test:v2");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->registry, "127.0.0.1:5000");
  EXPECT_EQ(r->repository, "gantry/test");
  EXPECT_EQ(r->tag, "v2");
  EXPECT_EQ(r->Host(), "127.0.0.1");

  const std::string d = "sha256:" + std::string(64, 'a');
  r = ImageRef::Parse("ghcr.io/org/app@" + d);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->tag, "");
  EXPECT_EQ(r->digest, d);
  EXPECT_EQ(r->TransportRef(), "docker://ghcr.io/org/app@" + d);

  // A tag and a digest: the digest decides what is fetched.
  r = ImageRef::Parse("ghcr.io/org/app:1.0@" + d);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->ToString(), "ghcr.io/org/app:1.0@" + d);
  EXPECT_EQ(r->TransportRef(), "docker://ghcr.io/org/app@" + d);

  r = ImageRef::Parse("localhost/app");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->registry, "localhost");
  EXPECT_EQ(r->repository, "app");

  r = ImageRef::Parse("[::1]:5000/app:1");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->Host(), "::1");

  r = ImageRef::Parse("docker://quay.io/a/b/c:x");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->repository, "a/b/c");
}

TEST(ImageRefTest, RejectsMalformedReferences) {
  for (const char* bad : {"", "docker.io/Library/python", "app:", "app:-x", "app@sha256:abc",
                          "app@md5:"
                          "0123456789abcdef0123456789abcdef",
                          "host:99999/app", "a//b", "app/", "-app", "app:t@g", "[::1/app"}) {
    Result<ImageRef> r = ImageRef::Parse(bad);
    EXPECT_FALSE(r.ok()) << "accepted \"" << bad << "\" as " << (r.ok() ? r->ToString() : "");
    if (!r.ok()) {
      EXPECT_EQ(r.status().code(), Code::kInvalidArgument) << bad;
    }
  }
}

TEST(ImageRefTest, LoopbackRegistries) {
  for (const char* ref :
       {"127.0.0.1:5000/a", "127.1.2.3/a", "localhost:5000/a", "[::1]:5000/a", "LocalHost:1/a"}) {
    Result<ImageRef> r = ImageRef::Parse(ref);
    ASSERT_TRUE(r.ok()) << ref << ": " << r.status().ToString();
    EXPECT_TRUE(r->IsLoopback()) << ref;
  }
  for (const char* ref : {"docker.io/a", "128.0.0.1/a", "10.0.0.1:5000/a", "localhost.evil.com/a",
                          "[::2]:5000/a", "127.0.0.1.nip.io/a"}) {
    Result<ImageRef> r = ImageRef::Parse(ref);
    ASSERT_TRUE(r.ok()) << ref << ": " << r.status().ToString();
    EXPECT_FALSE(r->IsLoopback()) << ref;
  }
}

TEST(ImageRefTest, LayoutTagsAreSafeAndDistinct) {
  const std::string a = ImageRef::Parse("127.0.0.1:5000/gantry/test:v1")->LayoutTag();
  const std::string b = ImageRef::Parse("127.0.0.1:5000/gantry_test:v1")->LayoutTag();
  EXPECT_EQ(a.rfind("127.0.0.1_5000_gantry_test_v1-", 0), 0u) << a;
  EXPECT_NE(a, b);  // the same sanitised text, told apart by the hash
  for (const std::string& t : {a, b}) {
    for (char c : t)
      EXPECT_TRUE(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-')
          << t;
  }
  const std::string long_tag = ImageRef::Parse("r.io/" + std::string(200, 'a') + ":t")->LayoutTag();
  EXPECT_EQ(long_tag.size(), 100u + 1 + 12);
}

}  // namespace
}  // namespace gantry::agent::oci
