#include <gtest/gtest.h>
#include <sched.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>

#include "common/blob_store.h"
#include "common/env.h"
#include "common/json.h"
#include "common/procfs.h"
#include "common/status.h"

namespace gantry {

TEST(StatusTest, ResultHoldsValueOrError) {
  Result<int> ok = 5;
  EXPECT_TRUE(ok.ok());
  EXPECT_EQ(*ok, 5);
  Result<int> bad = NotFound("x");
  EXPECT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), Code::kNotFound);
  EXPECT_EQ(bad.status().ToString(), "not_found: x");
}

TEST(EnvTest, IdsAreUniqueAndShaped) {
  std::string a = NewId("j"), b = NewId("j");
  EXPECT_NE(a, b);
  EXPECT_EQ(a.size(), 22u);
  EXPECT_EQ(a.substr(0, 2), "j-");
  EXPECT_EQ(NewSecret("gk_").size(), 43u);
}

TEST(EnvTest, Sha256KnownVector) {
  EXPECT_EQ(Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_TRUE(ConstantTimeEquals("abc", "abc"));
  EXPECT_FALSE(ConstantTimeEquals("abc", "abd"));
  EXPECT_FALSE(ConstantTimeEquals("abc", "ab"));
}

TEST(EnvTest, FakeClockMovesOnlyWhenTold) {
  FakeClock c(1000);
  EXPECT_EQ(c.NowMs(), 1000);
  c.Advance(60'000);
  EXPECT_EQ(c.NowMs(), 61'000);
}

TEST(JsonTest, ParseErrorsAreValues) {
  EXPECT_FALSE(ParseJson("{bad").ok());
  auto v = ParseJson(R"({"a": 3.0, "b": "x\"y"})");
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(*AsInt(*Find(v->as_object(), "a")), 3);
  EXPECT_EQ(Find(v->as_object(), "zz"), nullptr);
  EXPECT_EQ(JsonQuote("x\"y"), R"("x\"y")");
  EXPECT_FALSE(AsInt(json::value(2.5)).has_value());
}

TEST(ProcfsTest, ReadsItsOwnStatAndNothingForAMissingProcess) {
  auto self = ReadProcStat(getpid());
  ASSERT_TRUE(self.has_value());
  EXPECT_EQ(self->state, 'R');
  EXPECT_EQ(self->ppid, getppid());
  EXPECT_EQ(self->pgrp, getpgrp());
  EXPECT_EQ(ProcState(getpid()), 'R');
  EXPECT_FALSE(ReadProcStat(0x3fffffff).has_value());
  EXPECT_EQ(ProcState(0x3fffffff), 0);
}

TEST(ProcfsTest, FindsAChildByItsPidInItsOwnNamespace) {
  // A child in this namespace: the same number in both.
  const pid_t child = fork();
  if (child == 0) {
    pause();
    _exit(0);
  }
  EXPECT_EQ(ChildByNsPid(getpid(), child), child);
  EXPECT_FALSE(ChildByNsPid(getpid(), 0x3fffffff).has_value());
  kill(child, SIGKILL);
  waitpid(child, nullptr, 0);
  // A child of a namespace's init (pid 1 there), as a worker forked in a container: its pid in
  // there is 2. Making a PID namespace needs root; the helper makes it, this process does not.
  int report[2];
  ASSERT_EQ(pipe(report), 0);
  const pid_t helper = fork();
  if (helper == 0) {
    if (unshare(CLONE_NEWPID) != 0) _exit(2);
    const pid_t init = fork();  // pid 1 of the new namespace
    if (init == 0) {
      if (fork() == 0) {  // pid 2 there
        pause();
        _exit(0);
      }
      pause();
      _exit(0);
    }
    if (write(report[1], &init, sizeof init) != sizeof init) _exit(3);
    waitpid(init, nullptr, 0);
    _exit(0);
  }
  close(report[1]);
  pid_t init = 0;
  const bool made = read(report[0], &init, sizeof init) == sizeof init;
  close(report[0]);
  if (made) {
    std::optional<int> worker;
    for (int i = 0; i < 200 && !worker; ++i) {
      worker = ChildByNsPid(init, 2);
      if (!worker) usleep(5000);
    }
    ASSERT_TRUE(worker.has_value());
    EXPECT_EQ(ReadProcStat(*worker)->ppid, init);
    EXPECT_FALSE(
        ChildByNsPid(init, *worker).has_value());  // the host's number is not its pid there
    kill(init, SIGKILL);                           // the namespace ends with its init
  }
  int status = 0;
  waitpid(helper, &status, 0);
  if (!made) GTEST_SKIP() << "cannot make a PID namespace here (needs root)";
}

TEST(BlobStoreTest, BlobsAreContentAddressed) {
  char tmpl[] = "/tmp/gantry-blobs-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  BlobStore blobs(std::string(tmpl) + "/blobs");
  ASSERT_TRUE(blobs.Init().ok());
  std::string data = "print('hi')\n";
  std::string digest = Sha256Hex(data);
  EXPECT_FALSE(blobs.Has(digest));
  EXPECT_EQ(blobs.Put(digest, "other").code(), Code::kInvalidArgument);
  EXPECT_EQ(blobs.Put("../etc/passwd", data).code(), Code::kInvalidArgument);
  ASSERT_TRUE(blobs.Put(digest, data).ok());
  ASSERT_TRUE(blobs.Put(digest, data).ok());  // idempotent
  EXPECT_TRUE(blobs.Has(digest));
  EXPECT_EQ(*blobs.Get(digest), data);
  EXPECT_EQ(blobs.Get(std::string(64, 'a')).status().code(), Code::kNotFound);
  EXPECT_TRUE(ValidDigest(digest));
  EXPECT_FALSE(ValidDigest(std::string(64, 'A')));
  EXPECT_FALSE(ValidDigest(digest.substr(1)));
  std::filesystem::remove_all(tmpl);
}

// A write that fails part-way (here: the file size limit) stores nothing under the digest and
// leaves no temporary file behind.
TEST(BlobStoreTest, AFailedWriteLeavesNothingBehind) {
  char tmpl[] = "/tmp/gantry-blobs-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::string dir = std::string(tmpl) + "/blobs";
  BlobStore blobs(dir);
  ASSERT_TRUE(blobs.Init().ok());
  const std::string data(100'000, 'x');
  const std::string digest = Sha256Hex(data);
  rlimit old{};
  ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &old), 0);
  auto* old_handler = signal(SIGXFSZ, SIG_IGN);
  rlimit small = old;
  small.rlim_cur = 4096;
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &small), 0);
  Status st = blobs.Put(digest, data);
  setrlimit(RLIMIT_FSIZE, &old);
  signal(SIGXFSZ, old_handler);
  EXPECT_EQ(st.code(), Code::kUnavailable) << st.ToString();
  EXPECT_FALSE(blobs.Has(digest));
  EXPECT_TRUE(std::filesystem::is_empty(dir));
  ASSERT_TRUE(blobs.Put(digest, data).ok());  // with room, it is stored
  EXPECT_EQ(*blobs.Get(digest), data);
  std::filesystem::remove_all(tmpl);
}

}  // namespace gantry
