// Tests of the CRIU snapshotter against the real CRIU (scripts/setup.sh installs it; without it
// these tests fail, they do not skip) and of FakeSnapshotter.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "agent/snapshot/criu.h"
#include "agent/snapshot/fake_snapshotter.h"
#include "agent/snapshot/test_processes.h"

namespace gantry::agent {
namespace {

using test_processes::ProcState;
using test_processes::ReadFile;
using test_processes::Spawn;
using test_processes::WaitFor;

namespace fs = std::filesystem;
using std::chrono::milliseconds;
using std::chrono::steady_clock;

constexpr const char* kPython = "/usr/bin/python3";

// The process to snapshot. It maps a "weights" file (touching every page), keeps a random
// secret and 4 MiB of random bytes in anonymous memory only, and counts in a loop, writing the
// count to a file. At 5 it writes what it holds to "before" and SIGSTOPs itself; at 10 it
// writes the same from memory to "after" and exits 0. If it were re-run from the start instead
// of resumed, "before" would change and the counter would restart.
constexpr const char* kChildScript = R"PY(
import hashlib, mmap, os, signal, sys
d = sys.argv[1]
def put(name, text):
    with open(os.path.join(d, name + ".tmp"), "w") as f:
        f.write(text)
    os.rename(os.path.join(d, name + ".tmp"), os.path.join(d, name))
weights = open(os.path.join(d, "weights"), "rb")
m = mmap.mmap(weights.fileno(), 0, prot=mmap.PROT_READ)
def state():
    wsum = sum(m[i] for i in range(0, len(m), 4096))
    return "%s %s %d" % (secret, hashlib.md5(blob).hexdigest(), wsum)
secret = os.urandom(8).hex()
blob = bytearray(os.urandom(4 << 20))
i = 0
while True:
    i += 1
    put("counter", str(i))
    if i == 5:
        put("before", state())
        os.kill(os.getpid(), signal.SIGSTOP)
    if i == 10:
        put("after", state())
        sys.exit(0)
)PY";

constexpr size_t kWeightsBytes = 32 << 20;

// Pids whose parent is this process.
std::vector<int> Children() {
  std::vector<int> out;
  const std::string self = std::to_string(getpid());
  for (const fs::directory_entry& e : fs::directory_iterator("/proc")) {
    const std::string name = e.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    const std::string stat = ReadFile(e.path().string() + "/stat");
    const size_t paren = stat.rfind(')');
    if (paren == std::string::npos) continue;
    std::istringstream rest(stat.substr(paren + 2));
    std::string state, ppid;
    rest >> state >> ppid;
    if (ppid == self) out.push_back(std::stoi(name));
  }
  return out;
}

class SnapshotTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Restored processes are reparented to the nearest child subreaper: this test, as in the
    // agent.
    ASSERT_EQ(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
    Result<std::string> criu = FindCriu();
    ASSERT_TRUE(criu.ok()) << "CRIU >= 4.1 is needed for these tests; run scripts/setup.sh. "
                           << criu.status().message();
    ASSERT_EQ(geteuid(), 0u) << "CRIU needs root";
    CriuOptions options;
    options.timeout_ms = 20'000;
    options.lazy_drain_timeout_ms = 10'000;
    snapshotter_ = NewCriuSnapshotter(*criu, options);
    char tmpl[] = "/tmp/gantry-snapshot-test.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    tmp_ = tmpl;
    work_ = tmp_ + "/work";
    images_ = tmp_ + "/images";
    fs::create_directories(work_);
  }

  void TearDown() override {
    // First, so that its lazy-pages daemons are reaped by it, not below (they finish copying
    // whether or not their processes run).
    snapshotter_.reset();
    // Whatever a failed test left: every child of ours was made by the test.
    for (int pid : Children()) {
      kill(pid, SIGKILL);
      WaitFor(pid, 0, 5000);
    }
    std::error_code ec;
    fs::remove_all(tmp_, ec);
  }

  // Starts the child script and waits until it has stopped itself.
  int StartStoppedChild() { return StartStoppedChild(work_); }
  int StartStoppedChild(const std::string& work) {
    fs::create_directories(work);
    {
      std::ofstream w(work + "/weights", std::ios::binary);
      std::string chunk(1 << 20, '\0');
      for (size_t i = 0; i < chunk.size(); ++i) chunk[i] = static_cast<char>(i * 7 + 1);
      for (size_t n = 0; n < kWeightsBytes; n += chunk.size()) w << chunk;
    }
    const int pid = Spawn({kPython, "-c", kChildScript, work});
    EXPECT_GT(pid, 0);
    if (pid <= 0) return pid;
    std::optional<int> status = WaitFor(pid, WUNTRACED, 10'000);
    EXPECT_TRUE(status && WIFSTOPPED(*status)) << "the child did not stop itself";
    EXPECT_EQ(ReadFile(work + "/counter"), "5");
    return pid;
  }

  // Dump, kill and reap, restore in `mode`, SIGCONT; the process must go on from 5 to 10 with
  // the same memory.
  void DumpRestoreResume(RestoreMode mode) { DumpRestoreResume(mode, work_, images_); }
  void DumpRestoreResume(RestoreMode mode, const std::string& work, const std::string& images) {
    const int pid = StartStoppedChild(work);
    ASSERT_GT(pid, 0);
    const std::string before = ReadFile(work + "/before");
    ASSERT_FALSE(before.empty());

    Status dumped = snapshotter_->Dump(pid, images, /*leave_running=*/false);
    ASSERT_TRUE(dumped.ok()) << dumped.ToString();
    // CRIU killed the original; reaping it frees its pid (Restore's precondition).
    std::optional<int> status = WaitFor(pid, 0, 5000);
    ASSERT_TRUE(status.has_value());
    EXPECT_TRUE(WIFSIGNALED(*status) && WTERMSIG(*status) == SIGKILL) << *status;

    // The mapped weights file is not copied into the image: only the anonymous memory is.
    uintmax_t image_bytes = 0;
    for (const fs::directory_entry& e : fs::directory_iterator(images)) {
      if (e.is_regular_file()) image_bytes += e.file_size();
    }
    EXPECT_GT(image_bytes, 4u << 20);
    EXPECT_LT(image_bytes, kWeightsBytes);

    Result<int> restored = snapshotter_->Restore(images, mode);
    ASSERT_TRUE(restored.ok()) << restored.status().ToString();
    EXPECT_EQ(*restored, pid);  // CRIU restores the original pid

    // Restored stopped (CRIU re-sends the stop signal before it detaches), as our child.
    const auto t0 = steady_clock::now();
    while (ProcState(pid) != 'T' && steady_clock::now() - t0 < milliseconds(2000)) {
      std::this_thread::sleep_for(milliseconds(2));
    }
    EXPECT_EQ(ProcState(pid), 'T');
    std::this_thread::sleep_for(milliseconds(50));
    EXPECT_EQ(ReadFile(work + "/counter"), "5");

    ASSERT_EQ(kill(pid, SIGCONT), 0);
    status = WaitFor(pid, 0, 10'000);
    ASSERT_TRUE(status.has_value()) << "the restored process did not end (or is not our child)";
    EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << *status;
    EXPECT_EQ(ReadFile(work + "/counter"), "10");
    EXPECT_EQ(ReadFile(work + "/before"), before);  // not re-run from the start
    EXPECT_EQ(ReadFile(work + "/after"), before);   // same secret, memory and mapped file
  }

  std::unique_ptr<Snapshotter> snapshotter_;
  std::string tmp_, work_, images_;
};

TEST_F(SnapshotTest, CheckOk) {
  Status s = snapshotter_->Check();
  EXPECT_TRUE(s.ok()) << s.ToString();
}

TEST_F(SnapshotTest, CheckSaysWhyAMissingBinaryIsUnusable) {
  Status s = NewCriuSnapshotter("/nonexistent/criu")->Check();
  EXPECT_EQ(s.code(), Code::kFailedPrecondition);
  EXPECT_NE(s.message().find("/nonexistent/criu"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("scripts/setup.sh"), std::string::npos) << s.message();
}

TEST_F(SnapshotTest, FullRestoreResumesWhereItStopped) { DumpRestoreResume(RestoreMode::kFull); }

TEST_F(SnapshotTest, LazyRestoreResumesWhereItStopped) {
  DumpRestoreResume(RestoreMode::kLazy);
  // The lazy-pages daemon exits once every page is copied; destroying the snapshotter waits
  // for it and reaps it: no child of ours is left, not even a zombie.
  snapshotter_.reset();
  EXPECT_TRUE(Children().empty());
}

TEST_F(SnapshotTest, ConcurrentCallsOnDifferentProcesses) {
  std::thread full([&] { DumpRestoreResume(RestoreMode::kFull, tmp_ + "/w1", tmp_ + "/i1"); });
  std::thread lazy([&] { DumpRestoreResume(RestoreMode::kLazy, tmp_ + "/w2", tmp_ + "/i2"); });
  full.join();
  lazy.join();
}

TEST_F(SnapshotTest, SameImageRestoresAgainOnceThePidIsFree) {
  const int pid = StartStoppedChild();
  ASSERT_GT(pid, 0);
  Status dumped = snapshotter_->Dump(pid, images_, /*leave_running=*/false);
  ASSERT_TRUE(dumped.ok()) << dumped.ToString();
  ASSERT_TRUE(WaitFor(pid, 0, 5000).has_value());
  for (RestoreMode mode : {RestoreMode::kFull, RestoreMode::kLazy, RestoreMode::kFull}) {
    Result<int> restored = snapshotter_->Restore(images_, mode);
    ASSERT_TRUE(restored.ok()) << restored.status().ToString();
    ASSERT_EQ(*restored, pid);
    ASSERT_EQ(kill(pid, SIGKILL), 0);
    std::optional<int> status = WaitFor(pid, 0, 5000);
    ASSERT_TRUE(status.has_value());
    EXPECT_TRUE(WIFSIGNALED(*status) && WTERMSIG(*status) == SIGKILL) << *status;
  }
  EXPECT_EQ(ReadFile(work_ + "/counter"), "5");  // never resumed
}

TEST_F(SnapshotTest, DumpOfMissingPidIsNotFound) {
  // A pid that just became free.
  const int pid = Spawn({"/bin/true"});
  ASSERT_GT(pid, 0);
  ASSERT_TRUE(WaitFor(pid, 0, 5000).has_value());
  Status s = snapshotter_->Dump(pid, images_, false);
  EXPECT_EQ(s.code(), Code::kNotFound) << s.ToString();
  EXPECT_NE(s.message().find(std::to_string(pid)), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("no such process"), std::string::npos) << s.message();
}

TEST_F(SnapshotTest, DumpPastTimeLimitIsDeadlineExceeded) {
  const int pid = StartStoppedChild();
  ASSERT_GT(pid, 0);
  CriuOptions options;
  options.timeout_ms = 1;
  Status s = NewCriuSnapshotter(kGantryCriuPath, options)->Dump(pid, images_, false);
  EXPECT_EQ(s.code(), Code::kDeadlineExceeded) << s.ToString();
  EXPECT_FALSE(fs::exists(images_ + "/inventory.img"));
}

TEST_F(SnapshotTest, RestoreWithoutImageIsNotFound) {
  Result<int> r = snapshotter_->Restore(images_, RestoreMode::kFull);
  EXPECT_EQ(r.status().code(), Code::kNotFound) << r.status().ToString();
}

TEST_F(SnapshotTest, FailedRestoreQuotesCriuLog) {
  fs::create_directories(images_);
  std::ofstream(images_ + "/inventory.img") << "not an image";
  Result<int> r = snapshotter_->Restore(images_, RestoreMode::kFull);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kInternal);
  EXPECT_NE(r.status().message().find(images_ + "/restore.log:"), std::string::npos)
      << r.status().message();
  EXPECT_NE(r.status().message().find("Error ("), std::string::npos) << r.status().message();
}

TEST_F(SnapshotTest, FailedLazyRestoreLeavesNoDaemon) {
  fs::create_directories(images_);
  std::ofstream(images_ + "/inventory.img") << "not an image";
  Result<int> r = snapshotter_->Restore(images_, RestoreMode::kLazy);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(Children().empty());
}

TEST_F(SnapshotTest, RestoreWhileOriginalRunsIsFailedPrecondition) {
  const int pid = StartStoppedChild();
  ASSERT_GT(pid, 0);
  Status dumped = snapshotter_->Dump(pid, images_, /*leave_running=*/true);
  ASSERT_TRUE(dumped.ok()) << dumped.ToString();
  EXPECT_EQ(ProcState(pid), 'T');  // left as it was: alive and stopped

  Result<int> r = snapshotter_->Restore(images_, RestoreMode::kFull);
  EXPECT_EQ(r.status().code(), Code::kFailedPrecondition) << r.status().ToString();
  EXPECT_NE(r.status().message().find("Can't fork for " + std::to_string(pid)), std::string::npos)
      << r.status().message();
  // The original is untouched and still resumes.
  ASSERT_EQ(kill(pid, SIGCONT), 0);
  std::optional<int> status = WaitFor(pid, 0, 10'000);
  ASSERT_TRUE(status.has_value());
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << *status;
  EXPECT_EQ(ReadFile(work_ + "/counter"), "10");
}

TEST(FakeSnapshotterTest, RecordsCallsAndFailsWhenTold) {
  FakeSnapshotter fake;
  EXPECT_TRUE(fake.Check().ok());
  EXPECT_EQ(fake.Restore("/img", RestoreMode::kFull).status().code(), Code::kNotFound);
  ASSERT_TRUE(fake.Dump(42, "/img", false).ok());
  Result<int> r = fake.Restore("/img", RestoreMode::kLazy);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, 42);

  fake.FailNextDump(Internal("disk full"));
  EXPECT_EQ(fake.Dump(43, "/img2", true).code(), Code::kInternal);
  EXPECT_TRUE(fake.Dump(43, "/img2", true).ok());
  fake.FailNextRestore(FailedPrecondition("pid in use"));
  EXPECT_EQ(fake.Restore("/img2", RestoreMode::kFull).status().code(), Code::kFailedPrecondition);
  fake.SetRestorePid(7);
  EXPECT_EQ(*fake.Restore("/img2", RestoreMode::kFull), 7);
  fake.SetCheckStatus(FailedPrecondition("no criu"));
  EXPECT_FALSE(fake.Check().ok());

  ASSERT_EQ(fake.dumps().size(), 3u);
  EXPECT_EQ(fake.dumps()[1].pid, 43);
  EXPECT_TRUE(fake.dumps()[1].leave_running);
  ASSERT_EQ(fake.restores().size(), 4u);
  EXPECT_EQ(fake.restores()[1].mode, RestoreMode::kLazy);
}

}  // namespace
}  // namespace gantry::agent
