// ImageStore with the real skopeo and umoci against a real registry (Debian's docker-registry on
// 127.0.0.1, tests/images/registry.sh) holding the test image (tests/images/build_test_image.sh;
// the first build takes about a minute, then it is cached). Needs root and scripts/setup.sh;
// these tests fail, never skip, without them.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "agent/oci/image_store.h"
#include "agent/oci/image_test_util.h"
#include "common/env.h"

namespace gantry::agent::oci {
namespace {

namespace fs = std::filesystem;
using image_test::Contains;
using image_test::MakeTempDir;
using image_test::ReadFile;

// ---- The real tools and a real registry ---------------------------------------------------------

#ifndef GANTRY_SOURCE_DIR
#error "GANTRY_SOURCE_DIR must name the source tree (tests/images lives there)"
#endif

const std::string kImagesDir = std::string(GANTRY_SOURCE_DIR) + "/tests/images";

// Runs a shell command; returns its stdout, or the failure with its output.
Result<std::string> Shell(const std::string& command) {
  std::string out;
  FILE* p = popen((command + " 2>&1").c_str(), "r");
  if (!p) return Internal("popen failed");
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  const int status = pclose(p);
  if (status != 0)
    return Internal("`" + command + "` failed (" + std::to_string(status) + "):\n" + out);
  return out;
}

// A port below 32768 that nothing listens on right now.
int FreePort() {
  std::mt19937 rng(static_cast<unsigned>(getpid()) ^ static_cast<unsigned>(time(nullptr)));
  for (int attempt = 0; attempt < 100; ++attempt) {
    const int port = 20000 + static_cast<int>(rng() % 12000);
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    const bool ok = bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
    close(s);
    if (ok) return port;
  }
  return 0;
}

size_t CountBlobs(const std::string& layout) {
  size_t n = 0;
  for (const fs::directory_entry& e : fs::directory_iterator(layout + "/blobs/sha256")) {
    n += e.is_regular_file();
  }
  return n;
}

// Counts the real tools' calls (the EnvWrapper pattern).
class CountingTools : public ImageTools {
 public:
  explicit CountingTools(ImageTools* real) : real_(real) {}
  Result<Run> RunTool(Tool tool, const std::vector<std::string>& args, int64_t timeout_ms,
                      const std::atomic<bool>* cancel,
                      const std::function<void(std::string_view)>& on_line) override {
    if (tool == Tool::kUmoci && args[0] == "raw") ++unpacks;
    return real_->RunTool(tool, args, timeout_ms, cancel, on_line);
  }
  std::atomic<int> unpacks{0};

 private:
  ImageTools* real_;
};

// One registry for all the real tests: started once (the test image is built first if it is
// not cached), holding gantry/test:latest, gantry/test:v2 (the same image) and gantry/base:1
// (its first layer only), and a second one that wants a password.
class RealRegistryTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ASSERT_EQ(geteuid(), 0u) << "the real image tests need root (debootstrap, umoci unpack)";
    dir_ = new std::string(MakeTempDir());
    const auto start = std::chrono::steady_clock::now();
    Result<std::string> layout = Shell("bash " + kImagesDir + "/build_test_image.sh");
    ASSERT_TRUE(layout.ok()) << layout.status().message();
    while (!layout->empty() && layout->back() == '\n') layout->pop_back();
    // Its output: the layout's path, after the build's log when it was not cached.
    std::printf("[ test image ] %.1f s: %s\n",
                std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(),
                layout->c_str());
    for (int* port : {&port_, &auth_port_}) {
      const std::string which = port == &port_ ? "/registry" : "/auth-registry";
      const std::string creds = port == &port_ ? "" : " alice:s3cret-pw";
      Result<std::string> started = Internal("no free port");
      for (int attempt = 0; attempt < 5 && !started.ok(); ++attempt) {
        *port = FreePort();
        started = Shell("bash " + kImagesDir + "/registry.sh start " + std::to_string(*port) + " " +
                        *dir_ + which + creds);
      }
      ASSERT_TRUE(started.ok()) << started.status().message();
    }
    const std::string push = "bash " + kImagesDir + "/registry.sh push " + std::to_string(port_);
    for (const char* args : {" gantry/test:latest", " gantry/test:v2", " gantry/base:1 base"}) {
      Result<std::string> pushed = Shell(push + args);
      ASSERT_TRUE(pushed.ok()) << pushed.status().message();
    }
    Result<std::string> pushed =
        Shell("bash " + kImagesDir + "/registry.sh push " + std::to_string(auth_port_) +
              " gantry/private:1 latest alice:s3cret-pw");
    ASSERT_TRUE(pushed.ok()) << pushed.status().message();
  }

  static void TearDownTestSuite() {
    if (!dir_) return;
    for (const char* which : {"/registry", "/auth-registry"}) {
      (void)Shell("bash " + kImagesDir + "/registry.sh stop 0 " + *dir_ + which);
    }
    fs::remove_all(*dir_);
    delete dir_;
    dir_ = nullptr;
  }

  void SetUp() override {
    ASSERT_NE(dir_, nullptr);
    root_ = MakeTempDir() + "/images";
    Result<std::unique_ptr<ImageStore>> store = ImageStore::Open(root_, &tools_);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    store_ = std::move(*store);
  }
  void TearDown() override { fs::remove_all(fs::path(root_).parent_path()); }

  ImageRef Ref(const std::string& name, int port = 0) {
    return *ImageRef::Parse("127.0.0.1:" + std::to_string(port ? port : port_) + "/" + name);
  }

  static inline std::string* dir_ = nullptr;
  static inline int port_ = 0;
  static inline int auth_port_ = 0;
  std::unique_ptr<ImageTools> real_ = NewSystemImageTools();
  CountingTools tools_{real_.get()};
  std::string root_;
  std::unique_ptr<ImageStore> store_;
};

TEST_F(RealRegistryTest, PullsUnpacksAndReadsTheConfig) {
  std::vector<PullEvent> events;
  Result<Image> image =
      store_->Pull(Ref("gantry/test:latest"), {}, [&](const PullEvent& e) { events.push_back(e); });
  ASSERT_TRUE(image.ok()) << image.status().ToString();
  EXPECT_EQ(image->entrypoint, (std::vector<std::string>{"/usr/bin/python3", "/app/handler.py"}));
  EXPECT_TRUE(image->cmd.empty());
  EXPECT_TRUE(Contains(image->env, "GANTRY_TEST_IMAGE=1"));
  EXPECT_TRUE(
      Contains(image->env, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"));
  EXPECT_EQ(image->working_dir, "/app");
  EXPECT_EQ(image->os, "linux");
  EXPECT_TRUE(image->unpacked);
  EXPECT_EQ(ReadFile(image->rootfs + "/app/handler.py"), "print(\"hello from the image\")\n");
  bool python = false;
  for (const fs::directory_entry& e : fs::directory_iterator(image->rootfs + "/usr/bin")) {
    python |= e.path().filename().string().rfind("python3", 0) == 0;
  }
  EXPECT_TRUE(python) << "no /usr/bin/python3* in " << image->rootfs;
  EXPECT_TRUE(fs::is_regular_file(image->rootfs + "/usr/bin/python3.11"));

  // Progress: two layers, the config, the manifest, the unpack.
  int blobs = 0;
  for (const PullEvent& e : events) blobs += e.kind == PullEvent::Kind::kBlob;
  EXPECT_EQ(blobs, 2);
  EXPECT_EQ(events.front().kind, PullEvent::Kind::kStart);
  EXPECT_EQ(events.back().kind, PullEvent::Kind::kDone);
  for (const PullEvent& e : events) std::printf("  event: %s\n", e.text.c_str());

  // No temporary directory or auth file is left.
  for (const fs::directory_entry& e : fs::directory_iterator(root_ + "/rootfs")) {
    EXPECT_EQ(e.path().filename().string().rfind(".tmp-", 0), std::string::npos) << e.path();
  }
  EXPECT_TRUE(fs::is_empty(root_ + "/tmp") ||
              std::none_of(fs::directory_iterator(root_ + "/tmp"), fs::directory_iterator(),
                           [](const fs::directory_entry& e) {
                             return e.path().filename().string().rfind("auth-", 0) == 0;
                           }));
}

TEST_F(RealRegistryTest, SecondPullReusesTheRootfsAndTagsShareBlobs) {
  Result<Image> first = store_->Pull(Ref("gantry/test:latest"), {}, nullptr);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  const size_t blobs = CountBlobs(root_ + "/oci");
  EXPECT_EQ(blobs, 4u);  // manifest, config, two layers
  const fs::file_time_type unpacked_at = fs::last_write_time(first->rootfs);

  Result<Image> again = store_->Pull(Ref("gantry/test:latest"), {}, nullptr);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_FALSE(again->unpacked);
  EXPECT_EQ(again->rootfs, first->rootfs);
  EXPECT_EQ(fs::last_write_time(again->rootfs), unpacked_at);

  // Another tag of the same image: no new blob, the same rootfs, no unpack.
  Result<Image> v2 = store_->Pull(Ref("gantry/test:v2"), {}, nullptr);
  ASSERT_TRUE(v2.ok()) << v2.status().ToString();
  EXPECT_EQ(v2->digest, first->digest);
  EXPECT_EQ(v2->rootfs, first->rootfs);
  EXPECT_EQ(CountBlobs(root_ + "/oci"), blobs);
  EXPECT_EQ(tools_.unpacks.load(), 1);

  // Another image sharing the first layer: only its manifest and config are added.
  Result<Image> base = store_->Pull(Ref("gantry/base:1"), {}, nullptr);
  ASSERT_TRUE(base.ok()) << base.status().ToString();
  EXPECT_NE(base->digest, first->digest);
  EXPECT_EQ(CountBlobs(root_ + "/oci"), blobs + 2);
  EXPECT_TRUE(base->unpacked);
  EXPECT_FALSE(fs::exists(base->rootfs + "/app"));

  // Lookup needs no registry.
  Result<Image> looked = store_->Lookup(Ref("gantry/test:v2"));
  ASSERT_TRUE(looked.ok()) << looked.status().ToString();
  EXPECT_EQ(looked->rootfs, first->rootfs);

  // Remove drops the rootfs and the blobs only that image used; the shared layer stays.
  ASSERT_TRUE(store_->Remove(first->digest).ok());
  EXPECT_FALSE(fs::exists(first->rootfs));
  EXPECT_EQ(CountBlobs(root_ + "/oci"), 3u);  // base's manifest, config, layer
  EXPECT_EQ(store_->Lookup(Ref("gantry/test:latest")).status().code(), Code::kNotFound);
  EXPECT_TRUE(store_->Lookup(Ref("gantry/base:1")).ok());
}

TEST_F(RealRegistryTest, ConcurrentPullsOfOneImageUnpackOnce) {
  std::vector<std::thread> threads;
  std::vector<Result<Image>> results(3, Result<Image>(Internal("not run")));
  for (int i = 0; i < 3; ++i) {
    threads.emplace_back([&, i] {
      results[i] = store_->Pull(Ref(i == 2 ? "gantry/test:v2" : "gantry/test:latest"), {}, nullptr);
    });
  }
  for (std::thread& t : threads) t.join();
  for (const Result<Image>& r : results) {
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->rootfs, results[0]->rootfs);
  }
  EXPECT_EQ(tools_.unpacks.load(), 1);
}

TEST_F(RealRegistryTest, UnknownTagIsNotFound) {
  Result<Image> image = store_->Pull(Ref("gantry/test:nope"), {}, nullptr);
  ASSERT_FALSE(image.ok());
  EXPECT_EQ(image.status().code(), Code::kNotFound) << image.status().ToString();
  EXPECT_NE(image.status().message().find("gantry/test:nope not found"), std::string::npos)
      << image.status().message();
  EXPECT_NE(image.status().message().find("manifest unknown"), std::string::npos);
  image = store_->Pull(Ref("gantry/absent:1"), {}, nullptr);
  EXPECT_EQ(image.status().code(), Code::kNotFound) << image.status().ToString();
}

TEST_F(RealRegistryTest, RegistryThatIsDownIsUnavailable) {
  const int port = FreePort();  // nothing listens there
  Result<Image> image = store_->Pull(Ref("gantry/test:latest", port), {}, nullptr);
  ASSERT_FALSE(image.ok());
  EXPECT_EQ(image.status().code(), Code::kUnavailable) << image.status().ToString();
  EXPECT_NE(image.status().message().find("connection refused"), std::string::npos)
      << image.status().message();
}

TEST_F(RealRegistryTest, CredentialsAreUsedAndWrongOnesArePermissionDenied) {
  Result<Image> image = store_->Pull(Ref("gantry/private:1", auth_port_), {}, nullptr);
  ASSERT_FALSE(image.ok());
  EXPECT_EQ(image.status().code(), Code::kPermissionDenied) << image.status().ToString();

  PullOptions wrong;
  wrong.credentials = RegistryCredentials{"alice", "not-the-password"};
  image = store_->Pull(Ref("gantry/private:1", auth_port_), wrong, nullptr);
  ASSERT_FALSE(image.ok());
  EXPECT_EQ(image.status().code(), Code::kPermissionDenied) << image.status().ToString();
  EXPECT_EQ(image.status().message().find("not-the-password"), std::string::npos);

  PullOptions right;
  right.credentials = RegistryCredentials{"alice", "s3cret-pw"};
  image = store_->Pull(Ref("gantry/private:1", auth_port_), right, nullptr);
  ASSERT_TRUE(image.ok()) << image.status().ToString();
  EXPECT_TRUE(fs::exists(image->rootfs + "/app/handler.py"));
}

TEST_F(RealRegistryTest, CancelStopsSkopeo) {
  std::atomic<bool> cancel{false};
  PullOptions options;
  options.cancel = &cancel;
  std::thread canceller([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    cancel = true;
  });
  Result<Image> image = store_->Pull(Ref("gantry/test:latest"), options, nullptr);
  canceller.join();
  // The pull may win the race on a fast machine; when it did not, it says it was cancelled.
  if (!image.ok()) {
    EXPECT_EQ(image.status().code(), Code::kUnavailable) << image.status().ToString();
    EXPECT_NE(image.status().message().find("cancelled"), std::string::npos);
  }
  for (const fs::directory_entry& e : fs::directory_iterator(root_ + "/rootfs")) {
    const std::string name = e.path().filename().string();
    EXPECT_EQ(name.rfind(".tmp-", 0), std::string::npos) << name;
  }
}

// The figures of bench/RESULTS.md, three rounds in fresh stores, medians printed: a cold pull
// (empty store: copy and unpack), a pull whose blobs are all present but whose rootfs is not
// (copy and unpack), and a pull with everything present (copy only). About 45 s, so not in
// every run: image_store_test --gtest_also_run_disabled_tests --gtest_filter='*Timings'.
TEST_F(RealRegistryTest, DISABLED_Timings) {
  struct Round {
    int64_t cold_copy, cold_unpack, cold_total, blobs_copy, blobs_unpack, cached_total;
  };
  std::vector<Round> rounds;
  auto timed_pull = [&](ImageStore* store, int64_t* total_ms) {
    const auto start = std::chrono::steady_clock::now();
    Result<Image> image = store->Pull(Ref("gantry/test:latest"), {}, nullptr);
    *total_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                    std::chrono::steady_clock::now() - start)
                    .count();
    return image;
  };
  for (int i = 0; i < 3; ++i) {
    const std::string root = MakeTempDir() + "/images";
    Result<std::unique_ptr<ImageStore>> store = ImageStore::Open(root, &tools_);
    ASSERT_TRUE(store.ok());
    Round r{};
    int64_t unused = 0;
    Result<Image> cold = timed_pull(store->get(), &r.cold_total);
    ASSERT_TRUE(cold.ok()) << cold.status().ToString();
    fs::remove_all(cold->rootfs);
    Result<Image> blobs = timed_pull(store->get(), &unused);
    ASSERT_TRUE(blobs.ok()) << blobs.status().ToString();
    ASSERT_TRUE(blobs->unpacked);
    Result<Image> cached = timed_pull(store->get(), &r.cached_total);
    ASSERT_TRUE(cached.ok()) << cached.status().ToString();
    ASSERT_FALSE(cached->unpacked);
    r.cold_copy = cold->copy_ms;
    r.cold_unpack = cold->unpack_ms;
    r.blobs_copy = blobs->copy_ms;
    r.blobs_unpack = blobs->unpack_ms;
    rounds.push_back(r);
    fs::remove_all(fs::path(root).parent_path());
  }
  auto median = [&](int64_t Round::*field) {
    std::vector<int64_t> v;
    for (const Round& r : rounds) v.push_back(r.*field);
    std::sort(v.begin(), v.end());
    return static_cast<long long>(v[v.size() / 2]);
  };
  auto all = [&](int64_t Round::*field) {
    std::string out;
    for (const Round& r : rounds) out += (out.empty() ? "" : "/") + std::to_string(r.*field);
    return out;
  };
  std::printf(
      "[ timings ] medians of %zu rounds, ms (each round's in brackets)\n"
      "[ timings ] cold pull, empty store:   total %lld [%s] = copy %lld [%s] + unpack %lld [%s]\n"
      "[ timings ] blobs present, no rootfs: copy %lld [%s], unpack %lld [%s]\n"
      "[ timings ] everything present:       total %lld [%s] (copy only)\n",
      rounds.size(), median(&Round::cold_total), all(&Round::cold_total).c_str(),
      median(&Round::cold_copy), all(&Round::cold_copy).c_str(), median(&Round::cold_unpack),
      all(&Round::cold_unpack).c_str(), median(&Round::blobs_copy), all(&Round::blobs_copy).c_str(),
      median(&Round::blobs_unpack), all(&Round::blobs_unpack).c_str(), median(&Round::cached_total),
      all(&Round::cached_total).c_str());
}

}  // namespace
}  // namespace gantry::agent::oci
