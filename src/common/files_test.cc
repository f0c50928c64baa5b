#include "common/files.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

namespace gantry {
namespace {

namespace fs = std::filesystem;

class FilesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/gantry-files-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { fs::remove_all(dir_); }
  static mode_t Mode(const std::string& path) {
    struct stat st {};
    EXPECT_EQ(lstat(path.c_str(), &st), 0) << path;
    return st.st_mode & 07777;
  }
  std::string dir_;
};

TEST_F(FilesTest, PrivateDirsAreMadeClosedWithTheirParentsAndClosedAgainWhenOpen) {
  const mode_t old = umask(0);  // the modes must not depend on the umask
  auto made = MakePrivateDir(dir_ + "/a/b");
  umask(old);
  ASSERT_TRUE(made.ok()) << made.status().ToString();
  EXPECT_EQ(*made, "");
  EXPECT_EQ(Mode(dir_ + "/a"), 0700u);
  EXPECT_EQ(Mode(dir_ + "/a/b"), 0700u);
  chmod((dir_ + "/a/b").c_str(), 0755);
  made = MakePrivateDir(dir_ + "/a/b");
  ASSERT_TRUE(made.ok());
  EXPECT_NE(made->find("was 0755"), std::string::npos) << *made;
  EXPECT_EQ(Mode(dir_ + "/a/b"), 0700u);
  // Traverse-only where asked, parents too.
  ASSERT_TRUE(MakePrivateDir(dir_ + "/c/d", 0711).ok());
  EXPECT_EQ(Mode(dir_ + "/c"), 0711u);
  EXPECT_EQ(Mode(dir_ + "/c/d"), 0711u);
  // Not a directory.
  std::ofstream(dir_ + "/file") << "x";
  EXPECT_EQ(MakePrivateDir(dir_ + "/file").status().code(), Code::kFailedPrecondition);
}

TEST_F(FilesTest, ReplaceFileIsPrivateFromItsFirstByteAndNeverWritesThroughASymlink) {
  const std::string path = dir_ + "/key";
  ASSERT_TRUE(ReplaceFile(path, "one\n", 0600).ok());
  EXPECT_EQ(Mode(path), 0600u);
  // A symlink planted where the file goes is replaced, and its target left alone.
  std::ofstream(dir_ + "/target") << "precious";
  fs::remove(path);
  fs::create_symlink(dir_ + "/target", path);
  ASSERT_TRUE(ReplaceFile(path, "two\n", 0600).ok());
  EXPECT_FALSE(fs::is_symlink(path));
  std::ifstream target(dir_ + "/target");
  std::string text;
  std::getline(target, text);
  EXPECT_EQ(text, "precious");
  // WriteNewFile never takes one that exists, symlink or not.
  EXPECT_FALSE(WriteNewFile(dir_ + "/target", "x", 0600).ok());
  // No temporary file is left behind.
  int entries = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir_)) ++entries;
  EXPECT_EQ(entries, 2);
}

TEST_F(FilesTest, RemoveTreeRemovesLinksNotWhatTheyPointAt) {
  const std::string outside = dir_ + "/outside";
  fs::create_directories(outside + "/keep");
  std::ofstream(outside + "/keep/file") << "keep";
  const std::string tree = dir_ + "/tree";
  fs::create_directories(tree + "/a/b/c");
  std::ofstream(tree + "/a/b/c/f") << "x";
  fs::create_directory_symlink(outside, tree + "/a/link-to-dir");
  fs::create_symlink(outside + "/keep/file", tree + "/link-to-file");
  // Read-only for its owner: root removes it all the same.
  if (geteuid() == 0) chmod((tree + "/a/b").c_str(), 0500);
  ASSERT_TRUE(RemoveTree(tree).ok());
  EXPECT_FALSE(fs::exists(fs::symlink_status(tree)));
  EXPECT_TRUE(fs::exists(outside + "/keep/file"));
  EXPECT_TRUE(RemoveTree(tree).ok());  // absent: fine
}

}  // namespace
}  // namespace gantry
