// WorkerSandbox on real directories. The uid mode changes owners, so its tests need root (CI
// runs as root); the agent's-user mode runs anywhere.
#include "agent/sandbox.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

namespace gantry::agent {
namespace {

namespace fs = std::filesystem;

class SandboxTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/gantry-sandbox-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    base_ = tmpl;
    chmod(base_.c_str(), 0755);  // others may traverse to the area, as under /var/lib
    fs::create_directories(base_ + "/state");
    fs::create_directories(base_ + "/sdk/gantry/__pycache__");
    std::ofstream(base_ + "/sdk/gantry/__init__.py") << "";
    std::ofstream(base_ + "/sdk/gantry/__pycache__/x.pyc") << "";
    fs::create_directories(base_ + "/cache/b1/sub");
    std::ofstream(base_ + "/cache/b1/handler.py") << "print(1)";
    std::ofstream(base_ + "/cache/b1/sub/run.sh") << "#!/bin/sh";
    chmod((base_ + "/cache/b1/sub/run.sh").c_str(), 0700);
  }
  void TearDown() override { fs::remove_all(base_); }

  SandboxOptions Options(bool root) const {
    SandboxOptions o;
    o.dir = base_ + "/workers";
    o.state_dir = base_ + "/state";
    o.sdk_path = base_ + "/sdk";
    o.uid_first = 300'000;
    o.uid_count = 2;
    o.root = root;
    return o;
  }
  static struct stat Stat(const std::string& path) {
    struct stat st {};
    EXPECT_EQ(lstat(path.c_str(), &st), 0) << path;
    return st;
  }
  std::string base_;
};

TEST_F(SandboxTest, EachEndpointRunsAsAUidOfItsOwnKeptAcrossRestarts) {
  if (geteuid() != 0) GTEST_SKIP() << "owners change only as root";
  auto s = WorkerSandbox::Open(Options(true));
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_TRUE((*s)->separate_users());
  EXPECT_EQ((*s)->describe(), "uid per endpoint (300000-300001)");
  auto a = (*s)->UserFor("a");
  auto b = (*s)->UserFor("b");
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->uid, 300'000);
  EXPECT_EQ(a->gid, 300'000);
  EXPECT_EQ(b->uid, 300'001);
  EXPECT_EQ((*s)->UserFor("c").status().code(), Code::kResourceExhausted);
  EXPECT_EQ(Stat(base_ + "/state/worker-uids").st_mode & 0777, 0600u);
  // The area: traverse-only at the top, the endpoint's own below.
  EXPECT_EQ(Stat(base_ + "/workers").st_mode & 0777, 0711u);
  EXPECT_EQ(Stat(a->area).st_mode & 0777, 0750u);
  EXPECT_EQ(Stat(a->area).st_uid, 0u);
  EXPECT_EQ(Stat(a->area).st_gid, 300'000u);
  // The SDK, without its byte code, readable by all and written by none.
  EXPECT_EQ((*s)->sdk_path(), base_ + "/workers/sdk");
  EXPECT_EQ(Stat(base_ + "/workers/sdk/gantry/__init__.py").st_mode & 0777, 0644u);
  EXPECT_FALSE(fs::exists(base_ + "/workers/sdk/gantry/__pycache__"));
  s->reset();
  // A restarted agent gives "a" the same uid.
  auto again = WorkerSandbox::Open(Options(true));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ((*again)->UserFor("a")->uid, 300'000);
  EXPECT_EQ((*again)->UserFor("b")->uid, 300'001);
}

TEST_F(SandboxTest, BundleIsARootOwnedCopyAndScratchIsTheWorkersAlone) {
  if (geteuid() != 0) GTEST_SKIP() << "owners change only as root";
  auto s = WorkerSandbox::Open(Options(true));
  ASSERT_TRUE(s.ok());
  auto who = (*s)->UserFor("a");
  ASSERT_TRUE(who.ok());
  auto bundle = (*s)->Bundle(*who, "b1", base_ + "/cache/b1");
  ASSERT_TRUE(bundle.ok()) << bundle.status().ToString();
  EXPECT_EQ(*bundle, who->area + "/bundles/b1");
  const struct stat file = Stat(*bundle + "/handler.py");
  EXPECT_EQ(file.st_uid, 0u);
  EXPECT_EQ(file.st_gid, 300'000u);
  EXPECT_EQ(file.st_mode & 0777, 0640u);
  EXPECT_EQ(Stat(*bundle + "/sub/run.sh").st_mode & 0777, 0750u);
  EXPECT_EQ(Stat(*bundle + "/sub").st_mode & 0777, 0750u);
  // Made once: a second call finds it.
  fs::remove_all(base_ + "/cache/b1");
  EXPECT_EQ(*(*s)->Bundle(*who, "b1", base_ + "/cache/b1"), *bundle);

  auto scratch = (*s)->Scratch(*who, "w-1");
  ASSERT_TRUE(scratch.ok());
  const struct stat dir = Stat(*scratch);
  EXPECT_EQ(dir.st_uid, 300'000u);
  EXPECT_EQ(dir.st_mode & 0777, 0700u);
  std::map<std::string, std::string> env{{"HOME", "/root"}};
  (*s)->Environment(*who, *scratch, {}, &env);
  EXPECT_EQ(env["HOME"], *scratch);
  EXPECT_EQ(env["TMPDIR"], *scratch);
  EXPECT_EQ(env["GANTRY_SCRATCH"], *scratch);
  EXPECT_EQ(env["GANTRY_CACHE_DIR"], who->area + "/cache");
  EXPECT_EQ(env["PYTHONPYCACHEPREFIX"], who->area + "/cache/python");
  // The endpoint's own HOME wins.
  env = {};
  (*s)->Environment(*who, *scratch, {{"HOME", "/data"}}, &env);
  EXPECT_EQ(env.count("HOME"), 0u);
  // A worker's link in its scratch directory does not make its removal reach elsewhere.
  std::ofstream(base_ + "/precious") << "x";
  fs::create_symlink(base_ + "/precious", *scratch + "/link");
  (*s)->RemoveScratch("w-1");
  EXPECT_FALSE(fs::exists(*scratch));
  EXPECT_TRUE(fs::exists(base_ + "/precious"));
  // Scratch left by a killed agent is removed by the next one; a template's stays.
  ASSERT_TRUE((*s)->Scratch(*who, "w-2").ok());
  ASSERT_TRUE((*s)->Scratch(*who, "template-a-v1").ok());
  s->reset();
  ASSERT_TRUE(WorkerSandbox::Open(Options(true)).ok());
  EXPECT_FALSE(fs::exists(who->area + "/scratch/w-2"));
  EXPECT_TRUE(fs::exists(who->area + "/scratch/template-a-v1"));
  EXPECT_TRUE(fs::exists(*bundle));
}

TEST_F(SandboxTest, AnAreaOthersCannotReachIsRefusedWithTheWayOut) {
  if (geteuid() != 0) GTEST_SKIP() << "the check applies to users of their own";
  chmod(base_.c_str(), 0700);
  auto s = WorkerSandbox::Open(Options(true));
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find(base_ + " is closed to other users"), std::string::npos)
      << s.status().ToString();
  EXPECT_NE(s.status().message().find("--insecure-same-user"), std::string::npos);
}

TEST_F(SandboxTest, WithTheInsecureFlagWorkersUseTheCacheAndTheSdkInPlace) {
  for (bool root : {false, true}) {
    SandboxOptions o = Options(root);
    o.same_user = true;  // --insecure-same-user, as root or not
    auto s = WorkerSandbox::Open(o);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    EXPECT_FALSE((*s)->separate_users());
    EXPECT_FALSE((*s)->namespaces());
    EXPECT_EQ((*s)->describe(), "agent's user: --insecure-same-user");
    EXPECT_EQ((*s)->sdk_path(), base_ + "/sdk");
    auto who = (*s)->UserFor("a");
    ASSERT_TRUE(who.ok());
    EXPECT_EQ(who->uid, -1);
    EXPECT_FALSE((*s)->View(*who, base_ + "/cache/b1"));
    EXPECT_EQ(*(*s)->Bundle(*who, "b1", base_ + "/cache/b1"), base_ + "/cache/b1");
    auto scratch = (*s)->Scratch(*who, "w-1");
    ASSERT_TRUE(scratch.ok());
    EXPECT_EQ(Stat(*scratch).st_mode & 0777, 0700u);
    std::map<std::string, std::string> env;
    (*s)->Environment(*who, *scratch, {}, &env);
    EXPECT_EQ(env["HOME"], *scratch);
    EXPECT_EQ(env.count("PYTHONPYCACHEPREFIX"), 0u);
    EXPECT_EQ(env["GANTRY_CACHE_DIR"], base_ + "/workers/cache");
    (*s)->RemoveScratch("w-1");
    EXPECT_FALSE(fs::exists(*scratch));
    EXPECT_EQ((*s)->Scratch(*who, "../x").status().code(), Code::kInvalidArgument);
  }
}

TEST_F(SandboxTest, AnAgentThatIsNotRootGivesEachEndpointAnAreaAndEachWorkerAView) {
  auto s = WorkerSandbox::Open(Options(/*root=*/false));
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_TRUE((*s)->namespaces());
  EXPECT_FALSE((*s)->separate_users());
  EXPECT_EQ((*s)->describe(), "namespaces per worker (agent not root)");
  auto a = (*s)->UserFor("a");
  auto b = (*s)->UserFor("b");
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->uid, -1);  // the agent's user
  EXPECT_TRUE(a->view);
  EXPECT_NE(a->area, b->area);
  EXPECT_EQ(Stat(a->area).st_mode & 0777, 0700u);
  EXPECT_EQ(*(*s)->Bundle(*a, "b1", base_ + "/cache/b1"), base_ + "/cache/b1");  // in place
  auto scratch = (*s)->Scratch(*a, "w-1");
  ASSERT_TRUE(scratch.ok());
  EXPECT_EQ(*scratch, a->area + "/scratch/w-1");
  std::map<std::string, std::string> env;
  (*s)->Environment(*a, *scratch, {}, &env);
  EXPECT_EQ(env["PYTHONPYCACHEPREFIX"], a->area + "/cache/python");  // its bundle is read-only
  // Its view: its bundle read-only, its endpoint's scratch and cache, the SDK; nothing else of
  // the data directory, nor of the other endpoint's area.
  auto view = (*s)->View(*a, base_ + "/cache/b1");
  ASSERT_TRUE(view);
  EXPECT_EQ(view->root, base_ + "/workers/root");
  EXPECT_TRUE(fs::is_directory(view->root));
  std::vector<std::string> binds;
  for (const auto& bind : view->binds) {
    binds.push_back(bind.path + (bind.writable ? " rw" : " ro"));
  }
  EXPECT_EQ(binds, (std::vector<std::string>{base_ + "/cache/b1 ro", a->area + "/scratch rw",
                                             a->area + "/cache rw", base_ + "/sdk ro"}));
  // The same area after a restart (the table is kept).
  s->reset();
  auto again = WorkerSandbox::Open(Options(false));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ((*again)->UserFor("a")->area, a->area);
}

}  // namespace
}  // namespace gantry::agent
