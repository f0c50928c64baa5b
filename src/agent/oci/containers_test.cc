// ResolveUser: an image's USER looked up in its own /etc/passwd and /etc/group. The image is
// untrusted: whatever those files hold, the answer is a value (an error naming the file), never
// an exception, a hang or a read of a file outside the image's root filesystem.

#include "agent/oci/containers.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

namespace gantry::agent::oci {
namespace {
namespace fs = std::filesystem;

class ResolveUserTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("gantry-resolve-user-" + std::to_string(getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    rootfs_ = dir_ + "/rootfs";
    fs::create_directories(rootfs_ + "/etc");
    // Outside the rootfs: what a hostile image would like the agent to read instead.
    Write(dir_ + "/outside-passwd", "app:x:4242:4243::/:/bin/sh\n");
  }
  void TearDown() override { fs::remove_all(dir_); }

  static void Write(const std::string& path, const std::string& text) {
    std::ofstream(path, std::ios::binary) << text;
  }
  void Passwd(const std::string& text) { Write(rootfs_ + "/etc/passwd", text); }
  void PasswdIsSymlinkTo(const std::string& target) {
    fs::create_symlink(target, rootfs_ + "/etc/passwd");
  }

  // ResolveUser(user), which must not throw, and must fail naming the file when it fails.
  Result<std::pair<uint32_t, uint32_t>> Resolve(const std::string& user) {
    std::optional<Result<std::pair<uint32_t, uint32_t>>> r;
    EXPECT_NO_THROW(r.emplace(ResolveUser(user, rootfs_))) << user;
    if (!r) return Internal("threw");
    return *r;
  }
  void ExpectErrorNaming(const std::string& user, const std::string& file) {
    auto r = Resolve(user);
    ASSERT_FALSE(r.ok()) << user << " resolved to " << r->first << ":" << r->second;
    EXPECT_NE(r.status().message().find(file), std::string::npos) << r.status().ToString();
    EXPECT_NE(r.status().code(), Code::kInternal) << r.status().ToString();
  }

  std::string dir_, rootfs_;
};

TEST_F(ResolveUserTest, NamesAndNumbers) {
  Passwd("root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n");
  Write(rootfs_ + "/etc/group", "root:x:0:\nstaff:x:50:\n");
  EXPECT_EQ(*Resolve(""), std::make_pair(0u, 0u));
  EXPECT_EQ(*Resolve("1000"), std::make_pair(1000u, 1000u));
  EXPECT_EQ(*Resolve("1000:100"), std::make_pair(1000u, 100u));
  EXPECT_EQ(*Resolve("app"), std::make_pair(1000u, 1001u));
  EXPECT_EQ(*Resolve("app:staff"), std::make_pair(1000u, 50u));
  EXPECT_EQ(*Resolve("4294967294"), std::make_pair(4294967294u, 4294967294u));
  EXPECT_EQ(Resolve("nobody").status().code(), Code::kNotFound);
  EXPECT_EQ(Resolve("app:wheel").status().code(), Code::kNotFound);
}

TEST_F(ResolveUserTest, AMalformedPasswdIsAnErrorNamingItNeverACrash) {
  // Binary garbage, lines without colons, short lines: skipped, as the C library skips them.
  Passwd(std::string("\x00\xff\xfe:\x01\n", 6) + "no colons at all\napp\napp:x\n");
  ExpectErrorNaming("app", "/etc/passwd");
  // A uid or gid field that is not a number, or out of range.
  for (const char* line :
       {"app:x:abc:1::/:/bin/sh\n", "app:x:1000:abc::/:/bin/sh\n",
        "app:x:99999999999:1::/:/bin/sh\n", "app:x:1000:99999999999::/:/bin/sh\n",
        "app:x:-1:1::/:/bin/sh\n", "app:x::1::/:/bin/sh\n", "app:x:4294967295:1::/:/bin/sh\n",
        "app:x: 1000:1::/:/bin/sh\n"}) {
    Passwd(line);
    ExpectErrorNaming("app", "/etc/passwd");
  }
  // Empty.
  Passwd("");
  ExpectErrorNaming("app", "/etc/passwd");
}

TEST_F(ResolveUserTest, AMalformedGroupIsAnErrorNamingIt) {
  Passwd("app:x:1000:1000::/:/bin/sh\n");
  Write(rootfs_ + "/etc/group", "staff:x:lots:\n");
  ExpectErrorNaming("app:staff", "/etc/group");
}

TEST_F(ResolveUserTest, ANumericUserOutOfRangeIsAnError) {
  for (const char* user :
       {"99999999999", "1000:99999999999", "4294967295", "123456789012345678901234567890"}) {
    auto r = Resolve(user);
    EXPECT_FALSE(r.ok()) << user;
  }
}

TEST_F(ResolveUserTest, AHugePasswdIsRefusedAndALongLineIsRead) {
  Passwd(std::string(8 << 20, 'a'));  // one 8 MiB line, no newline: not even read
  ExpectErrorNaming("app", "/etc/passwd");
  EXPECT_NE(Resolve("app").status().message().find("is larger than"), std::string::npos);
  Passwd("junk:" + std::string(1 << 20, 'b') + "\napp:x:1000:1000::/:/bin/sh\n");
  EXPECT_EQ(*Resolve("app"), std::make_pair(1000u, 1000u));
}

TEST_F(ResolveUserTest, ADirectoryOrAFifoIsNoPasswd) {
  fs::create_directory(rootfs_ + "/etc/passwd");
  ExpectErrorNaming("app", "/etc/passwd");
  fs::remove(rootfs_ + "/etc/passwd");
  ASSERT_EQ(mkfifo((rootfs_ + "/etc/passwd").c_str(), 0644), 0);  // opening must not block
  ExpectErrorNaming("app", "/etc/passwd");
  fs::remove(rootfs_ + "/etc/passwd");
  ExpectErrorNaming("app", "/etc/passwd");  // missing
}

TEST_F(ResolveUserTest, ASymlinkNeverLeadsOutOfTheRootfs) {
  // Absolute, at the host's /etc/shadow (the image's root has none) or at a file outside.
  PasswdIsSymlinkTo("/etc/shadow");
  ExpectErrorNaming("root", "/etc/passwd");
  fs::remove(rootfs_ + "/etc/passwd");
  PasswdIsSymlinkTo(dir_ + "/outside-passwd");
  ExpectErrorNaming("app", "/etc/passwd");
  fs::remove(rootfs_ + "/etc/passwd");
  // Relative, climbing past the root.
  PasswdIsSymlinkTo("../../../../../../../.." + dir_ + "/outside-passwd");
  ExpectErrorNaming("app", "/etc/passwd");
  // /etc itself a symlink out.
  fs::remove_all(rootfs_ + "/etc");
  fs::create_directories(dir_ + "/outside-etc");
  fs::copy_file(dir_ + "/outside-passwd", dir_ + "/outside-etc/passwd");
  fs::create_directory_symlink(dir_ + "/outside-etc", rootfs_ + "/etc");
  ExpectErrorNaming("app", "/etc/passwd");
}

TEST_F(ResolveUserTest, ASymlinkInsideTheRootfsResolvesThereAsInTheContainer) {
  // As Nix-built images have it: /etc/passwd a link into the image's store.
  fs::create_directories(rootfs_ + "/store");
  Write(rootfs_ + "/store/passwd", "app:x:1000:1001::/:/bin/sh\n");
  PasswdIsSymlinkTo("/store/passwd");  // absolute: the image's /store, not the host's
  EXPECT_EQ(*Resolve("app"), std::make_pair(1000u, 1001u));
  fs::remove(rootfs_ + "/etc/passwd");
  PasswdIsSymlinkTo("../../../store/passwd");  // ".." stops at the image's root
  EXPECT_EQ(*Resolve("app"), std::make_pair(1000u, 1001u));
}

TEST_F(ResolveUserTest, WithoutOpenat2NoSymlinkIsFollowed) {
  Passwd("app:x:1000:1001::/:/bin/sh\n");
  auto plain = ReadImageFile(rootfs_, "/etc/passwd", 1 << 20, /*TEST_no_openat2=*/true);
  ASSERT_TRUE(plain.ok()) << plain.status().ToString();
  EXPECT_EQ(*plain, "app:x:1000:1001::/:/bin/sh\n");
  fs::remove(rootfs_ + "/etc/passwd");
  PasswdIsSymlinkTo(dir_ + "/outside-passwd");
  auto link = ReadImageFile(rootfs_, "/etc/passwd", 1 << 20, true);
  ASSERT_FALSE(link.ok()) << *link;
  EXPECT_NE(link.status().message().find("/etc/passwd is a symbolic link"), std::string::npos)
      << link.status().ToString();
  fs::remove_all(rootfs_ + "/etc");
  fs::create_directories(dir_ + "/outside-etc");
  fs::copy_file(dir_ + "/outside-passwd", dir_ + "/outside-etc/passwd");
  fs::create_directory_symlink(dir_ + "/outside-etc", rootfs_ + "/etc");
  auto dir = ReadImageFile(rootfs_, "/etc/passwd", 1 << 20, true);
  EXPECT_FALSE(dir.ok()) << *dir;
}

}  // namespace
}  // namespace gantry::agent::oci
