// ImageStore against faked tools (no process is started): the flags skopeo gets, credential
// redaction, error classification from skopeo's real messages, progress events, locking. The
// real tools against a real registry are in image_registry_test.cc; ImageRef in
// image_ref_test.cc.
#include "agent/oci/image_store.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/file.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <mutex>
#include <thread>

#include "agent/oci/image_test_util.h"
#include "common/env.h"
#include "common/fd.h"
#include "common/json.h"

namespace gantry::agent::oci {
namespace {

namespace fs = std::filesystem;
using image_test::Contains;
using image_test::MakeTempDir;
using image_test::ReadFile;
using image_test::WriteFile;

// ---- Fake tools
// ----------------------------------------------------------------------------------

// Minimal OCI layout contents, written by the fake skopeo.
struct FakeImage {
  std::string config_json = R"({"architecture":"amd64","os":"linux","config":{
      "Entrypoint":["/usr/bin/python3","/app/handler.py"],"Cmd":["--x"],
      "Env":["PATH=/usr/bin:/bin","A=1"],"WorkingDir":"/app","User":"1000:1000"}})";
  std::string layer = "layer-bytes";
};

// Writes blob `data` into `layout`; returns its digest.
std::string PutBlob(const std::string& layout, const std::string& data) {
  const std::string hex = Sha256Hex(data);
  WriteFile(layout + "/blobs/sha256/" + hex, data);
  return "sha256:" + hex;
}

// Sets tag -> digest in layout/index.json, as skopeo and umoci tag do.
void SetTag(const std::string& layout, const std::string& tag, const std::string& digest) {
  json::object index{{"schemaVersion", 2}, {"manifests", json::array()}};
  if (fs::exists(layout + "/index.json")) {
    index = ParseJson(ReadFile(layout + "/index.json"))->as_object();
  }
  json::array kept;
  for (const json::value& m : index["manifests"].as_array()) {
    if (m.as_object().at("annotations").as_object().at("org.opencontainers.image.ref.name") !=
        json::value(tag)) {
      kept.push_back(m);
    }
  }
  kept.push_back(
      json::object{{"mediaType", "application/vnd.oci.image.manifest.v1+json"},
                   {"digest", digest},
                   {"size", 1},
                   {"annotations", json::object{{"org.opencontainers.image.ref.name", tag}}}});
  index["manifests"] = std::move(kept);
  WriteFile(layout + "/index.json", ToJson(index));
}

// Records every call; skopeo copy writes `image` into the layout unless `skopeo_output` and
// `skopeo_exit` script a failure; umoci tag, raw unpack and remove do what the real ones do to
// the files the store reads.
class FakeTools : public ImageTools {
 public:
  struct Call {
    Tool tool;
    std::vector<std::string> args;
  };

  Result<Run> RunTool(Tool tool, const std::vector<std::string>& args, int64_t,
                      const std::atomic<bool>*,
                      const std::function<void(std::string_view)>& on_line) override {
    std::unique_lock<std::mutex> l(mu);
    calls.push_back({tool, args});
    Run run;
    if (tool == Tool::kSkopeo) {
      // An auth file exists only during the copy; remember what it held.
      for (size_t i = 0; i + 1 < args.size(); ++i) {
        if (args[i] == "--src-authfile") auth_file_text = ReadFile(args[i + 1]);
      }
      for (const std::string& line : skopeo_lines) {
        if (on_line) on_line(line);
        run.output += line + "\n";
      }
      run.exit_code = skopeo_exit;
      if (skopeo_exit != 0) return run;
      const std::string dest = args.back();  // oci:<layout>:<tag>
      const size_t colon = dest.rfind(':');
      const std::string layout = dest.substr(4, colon - 4);
      const std::string tag = dest.substr(colon + 1);
      const std::string config = PutBlob(layout, image.config_json);
      const std::string layer = PutBlob(layout, image.layer);
      const std::string manifest = PutBlob(
          layout, ToJson(json::object{{"schemaVersion", 2},
                                      {"config", json::object{{"digest", config}}},
                                      {"layers", json::array{json::object{{"digest", layer}}}}}));
      SetTag(layout, tag, manifest);
      return run;
    }
    if (args[0] == "tag") {  // tag --image <layout>:<tag> <new>
      const std::string image_arg = args[2];
      const std::string layout = image_arg.substr(0, image_arg.rfind(':'));
      const std::string from = image_arg.substr(image_arg.rfind(':') + 1);
      auto index = ParseJson(ReadFile(layout + "/index.json"))->as_object();
      for (const json::value& m : index["manifests"].as_array()) {
        const json::object& mo = m.as_object();
        if (mo.at("annotations").as_object().at("org.opencontainers.image.ref.name") ==
            json::value(from)) {
          SetTag(layout, args[3], std::string(mo.at("digest").as_string()));
        }
      }
      return run;
    }
    if (args[0] == "raw") {  // raw unpack [--rootless] --image X <dir>
      ++unpacks;
      l.unlock();  // let other pulls run meanwhile; only the store's locks order them
      if (unpack_delay_ms) std::this_thread::sleep_for(std::chrono::milliseconds(unpack_delay_ms));
      WriteFile(args.back() + "/app/handler.py", "print('hi')\n");
      return run;
    }
    return run;  // remove, gc: nothing the tests read
  }

  std::vector<Call> Skopeos() {
    std::lock_guard<std::mutex> l(mu);
    std::vector<Call> out;
    for (const Call& c : calls) {
      if (c.tool == Tool::kSkopeo) out.push_back(c);
    }
    return out;
  }

  std::mutex mu;
  std::vector<Call> calls;
  FakeImage image;
  std::vector<std::string> skopeo_lines;
  int skopeo_exit = 0;
  int unpacks = 0;
  int unpack_delay_ms = 0;
  std::string auth_file_text;
};

class FakeToolsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = MakeTempDir() + "/images";
    Result<std::unique_ptr<ImageStore>> store = ImageStore::Open(root_, &tools_);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    store_ = std::move(*store);
  }
  void TearDown() override { fs::remove_all(fs::path(root_).parent_path()); }

  Result<Image> Pull(const std::string& ref, PullOptions options = {},
                     std::vector<PullEvent>* events = nullptr) {
    Result<ImageRef> r = ImageRef::Parse(ref);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return store_->Pull(*r, options, [events](const PullEvent& e) {
      if (events) events->push_back(e);
    });
  }

  // Fails the next skopeo with `message` as its fatal line.
  void FailSkopeoWith(const std::string& message) {
    tools_.skopeo_exit = 1;
    tools_.skopeo_lines = {"time=\"2026-11-29T10:20:42Z\" level=fatal msg=\"" + message + "\""};
  }

  std::string root_;
  FakeTools tools_;
  std::unique_ptr<ImageStore> store_;
};

TEST_F(FakeToolsTest, OpenRejectsBadRoots) {
  EXPECT_EQ(ImageStore::Open("relative", &tools_).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(ImageStore::Open("/tmp/a:b", &tools_).status().code(), Code::kInvalidArgument);
}

TEST_F(FakeToolsTest, PullReadsTheConfigAndUnpacksOnce) {
  Result<Image> image = Pull("127.0.0.1:5000/gantry/test:latest");
  ASSERT_TRUE(image.ok()) << image.status().ToString();
  EXPECT_EQ(image->entrypoint, (std::vector<std::string>{"/usr/bin/python3", "/app/handler.py"}));
  EXPECT_EQ(image->cmd, std::vector<std::string>{"--x"});
  EXPECT_EQ(image->env, (std::vector<std::string>{"PATH=/usr/bin:/bin", "A=1"}));
  EXPECT_EQ(image->working_dir, "/app");
  EXPECT_EQ(image->user, "1000:1000");
  EXPECT_EQ(image->os, "linux");
  EXPECT_EQ(image->architecture, "amd64");
  ASSERT_EQ(image->digest.size(), 71u);
  EXPECT_EQ(image->rootfs, root_ + "/rootfs/" + image->digest.substr(7));
  EXPECT_TRUE(fs::exists(image->rootfs + "/app/handler.py"));
  EXPECT_TRUE(image->unpacked);
  // The unpack reads the manifest by its pinned tag, not by the ref's tag.
  const FakeTools::Call& unpack = tools_.calls.back();
  EXPECT_EQ(unpack.args[0], "raw");
  EXPECT_TRUE(Contains(unpack.args, root_ + "/oci:sha256_" + image->digest.substr(7)));

  Result<Image> again = Pull("127.0.0.1:5000/gantry/test:latest");
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(again->unpacked);
  EXPECT_EQ(again->digest, image->digest);
  EXPECT_EQ(tools_.unpacks, 1);
  EXPECT_EQ(store_->counters().pulls, 2);
  EXPECT_EQ(store_->counters().unpacks, 1);
  EXPECT_EQ(store_->counters().rootfs_reused, 1);

  Result<Image> looked = store_->Lookup(*ImageRef::Parse("127.0.0.1:5000/gantry/test:latest"));
  ASSERT_TRUE(looked.ok()) << looked.status().ToString();
  EXPECT_EQ(looked->rootfs, image->rootfs);
  EXPECT_EQ(store_->Lookup(*ImageRef::Parse("127.0.0.1:5000/other")).status().code(),
            Code::kNotFound);
}

TEST_F(FakeToolsTest, LoopbackRegistriesUsePlainHttpOthersNeedTls) {
  ASSERT_TRUE(Pull("127.0.0.1:5000/a").ok());
  ASSERT_TRUE(Pull("localhost:5000/a").ok());
  ASSERT_TRUE(Pull("[::1]:5000/a").ok());
  ASSERT_TRUE(Pull("registry.example.com/a").ok());
  ASSERT_TRUE(Pull("10.1.2.3:5000/a").ok());
  PullOptions insecure;
  insecure.insecure = true;
  ASSERT_TRUE(Pull("10.1.2.3:5000/b", insecure).ok());
  std::vector<FakeTools::Call> calls = tools_.Skopeos();
  ASSERT_EQ(calls.size(), 6u);
  const std::vector<bool> plain = {true, true, true, false, false, true};
  for (size_t i = 0; i < calls.size(); ++i) {
    EXPECT_TRUE(
        Contains(calls[i].args, plain[i] ? "--src-tls-verify=false" : "--src-tls-verify=true"))
        << i;
    EXPECT_TRUE(Contains(calls[i].args, "--src-no-creds")) << i;
    EXPECT_TRUE(Contains(calls[i].args, "copy"));
  }
  EXPECT_EQ(calls[0].args[calls[0].args.size() - 2], "docker://127.0.0.1:5000/a:latest");
  EXPECT_EQ(calls[0].args.back(),
            "oci:" + root_ + "/oci:" + ImageRef::Parse("127.0.0.1:5000/a")->LayoutTag());
}

TEST_F(FakeToolsTest, CredentialsGoInAnAuthFileAndNeverIntoErrors) {
  PullOptions options;
  options.credentials = RegistryCredentials{"alice", "s3cret-pw"};
  ASSERT_TRUE(Pull("registry.example.com/a", options).ok());
  std::vector<FakeTools::Call> calls = tools_.Skopeos();
  ASSERT_EQ(calls.size(), 1u);
  for (const std::string& a : calls[0].args) {
    EXPECT_EQ(a.find("s3cret"), std::string::npos) << a;  // not on the command line
  }
  EXPECT_FALSE(Contains(calls[0].args, "--src-no-creds"));
  auto auth = std::find(calls[0].args.begin(), calls[0].args.end(), "--src-authfile");
  ASSERT_NE(auth, calls[0].args.end());
  EXPECT_FALSE(fs::exists(*(auth + 1))) << "the auth file outlived the copy";
  // {"auths":{"registry.example.com":{"auth":base64("alice:s3cret-pw")}}}
  Result<json::value> auth_json = ParseJson(tools_.auth_file_text);
  ASSERT_TRUE(auth_json.ok()) << tools_.auth_file_text;
  EXPECT_EQ(auth_json->as_object()
                .at("auths")
                .as_object()
                .at("registry.example.com")
                .as_object()
                .at("auth")
                .as_string(),
            "YWxpY2U6czNjcmV0LXB3");

  // A tool that echoes the secrets: neither the error nor the events may carry them.
  FailSkopeoWith(
      "initializing source docker://registry.example.com/a:latest: unauthorized: "
      "bad login alice:s3cret-pw (YWxpY2U6czNjcmV0LXB3)");
  tools_.skopeo_lines.insert(tools_.skopeo_lines.begin(), "debug: password s3cret-pw");
  std::vector<PullEvent> events;
  Result<Image> image = Pull("registry.example.com/a", options, &events);
  ASSERT_FALSE(image.ok());
  EXPECT_EQ(image.status().code(), Code::kPermissionDenied);
  EXPECT_EQ(image.status().message().find("s3cret"), std::string::npos) << image.status().message();
  EXPECT_EQ(image.status().message().find("YWxpY2U6czNjcmV0LXB3"), std::string::npos);
  EXPECT_NE(image.status().message().find("<redacted>"), std::string::npos);
  for (const PullEvent& e : events) EXPECT_EQ(e.text.find("s3cret"), std::string::npos) << e.text;
}

// skopeo 1.9.3's real messages (copied from runs against docker-registry 2.8.2, a closed port,
// a missing host, and Docker Hub's documented answers).
TEST_F(FakeToolsTest, ClassifiesSkopeoFailures) {
  struct Case {
    std::string message;
    Code code;
    std::string says;  // a part of the message the error must quote
  };
  const std::vector<Case> cases = {
      {"initializing source docker://127.0.0.1:5000/gantry/test:nope: reading manifest nope in "
       "127.0.0.1:5000/gantry/test: manifest unknown: manifest unknown",
       Code::kNotFound, "manifest unknown"},
      {"initializing source docker://127.0.0.1:5000/gantry/test:1: reading manifest 1 in "
       "127.0.0.1:5000/gantry/test: name unknown: repository name not known to registry",
       Code::kNotFound, "name unknown"},
      {"initializing source docker://127.0.0.1:5000/gantry/test:1: pinging container registry "
       "127.0.0.1:5000: Get \\\"http://127.0.0.1:5000/v2/\\\": dial tcp 127.0.0.1:5000: "
       "connect: connection refused",
       Code::kUnavailable, "connection refused"},
      {"initializing source docker://nosuchhost.invalid/a:latest: pinging container registry "
       "nosuchhost.invalid: Get \\\"https://nosuchhost.invalid/v2/\\\": dial tcp: lookup "
       "nosuchhost.invalid on 10.0.0.53:53: no such host",
       Code::kUnavailable, "no such host"},
      {"initializing source docker://r.io/a:latest: pinging container registry r.io: Get "
       "\\\"https://r.io/v2/\\\": dial tcp 1.2.3.4:443: i/o timeout",
       Code::kUnavailable, "i/o timeout"},
      {"reading blob sha256:abc: fetching blob: received unexpected HTTP status: 503 Service "
       "Unavailable",
       Code::kUnavailable, "503"},
      {"initializing source docker://127.0.0.1:5000/gantry/test:latest: reading manifest latest "
       "in 127.0.0.1:5000/gantry/test: unauthorized: authentication required",
       Code::kPermissionDenied, "authentication required"},
      {"initializing source docker://docker.io/library/nope:latest: reading manifest latest in "
       "docker.io/library/nope: requested access to the resource is denied",
       Code::kPermissionDenied, "requested access to the resource is denied"},
      {"initializing source docker://10.0.0.1:5000/a:latest: pinging container registry "
       "10.0.0.1:5000: Get \\\"https://10.0.0.1:5000/v2/\\\": http: server gave HTTP response "
       "to HTTPS client",
       Code::kFailedPrecondition, "HTTP response to HTTPS client"},
      {"initializing source docker://10.0.0.1/a:latest: pinging container registry 10.0.0.1: "
       "Get \\\"https://10.0.0.1/v2/\\\": x509: cannot validate certificate for 10.0.0.1 "
       "because it doesn't contain any IP SANs",
       Code::kFailedPrecondition, "x509"},
      {"choosing an image from manifest list docker://r.io/a:latest: no image found in manifest "
       "list for architecture arm64, variant \\\"v8\\\", OS linux",
       Code::kFailedPrecondition, "no image found"},
      {"something nobody expected", Code::kInternal, "something nobody expected"},
  };
  for (const Case& c : cases) {
    FailSkopeoWith(c.message);
    Result<Image> image = Pull("127.0.0.1:5000/gantry/test:nope");
    ASSERT_FALSE(image.ok()) << c.message;
    EXPECT_EQ(image.status().code(), c.code) << image.status().ToString();
    EXPECT_NE(image.status().message().find(c.says), std::string::npos) << image.status().message();
  }
  // Words of the reference itself do not decide: a repository named "timeout" that is not
  // there is NotFound, not Unavailable.
  FailSkopeoWith(
      "initializing source docker://127.0.0.1:5000/timeout/denied:x: reading manifest x in "
      "127.0.0.1:5000/timeout/denied: manifest unknown: manifest unknown");
  EXPECT_EQ(Pull("127.0.0.1:5000/timeout/denied:x").status().code(), Code::kNotFound);
  // No rootfs and no temporary directory is left behind by failures.
  for (const fs::directory_entry& e : fs::directory_iterator(root_ + "/rootfs")) {
    ADD_FAILURE() << "left behind: " << e.path();
  }
  EXPECT_EQ(store_->counters().pull_failures, static_cast<int64_t>(cases.size()) + 1);
}

TEST_F(FakeToolsTest, ReportsProgressFromSkopeosOutput) {
  tools_.skopeo_lines = {
      "Getting image source signatures",
      "Copying blob sha256:608b03352fa653d9da4c55b7a6bc2d577ed8f021da3ca5db1d6e57f63066d3eb",
      "Copying blob sha256:eb4d39bc7089a011ff7e20a59ddedece4cf3109530ba0bfee06d9c9c508f2a3f",
      "Copying blob 7b1a6ab2e44d skipped: already exists",
      "Copying config sha256:5557e6cae98fc621e3317e61f691aca5aec4c45b5eb14b94b575d7e64d911e60",
      "time=\"2026-11-29T10:20:42Z\" level=warning msg=\"Compressor for blob with digest x "
      "previously recorded as uncompressed\"",
      "Writing manifest to image destination",
      "Storing signatures",
  };
  std::vector<PullEvent> events;
  ASSERT_TRUE(Pull("127.0.0.1:5000/gantry/test", {}, &events).ok());
  using K = PullEvent::Kind;
  std::vector<K> kinds;
  for (const PullEvent& e : events) kinds.push_back(e.kind);
  EXPECT_EQ(kinds, (std::vector<K>{K::kStart, K::kBlob, K::kBlob, K::kBlob, K::kConfig, K::kMessage,
                                   K::kManifest, K::kUnpack, K::kUnpacked, K::kDone}));
  EXPECT_EQ(events[1].digest,
            "sha256:608b03352fa653d9da4c55b7a6bc2d577ed8f021da3ca5db1d6e57f63066d3eb");
  EXPECT_EQ(events[1].text, "copying blob sha256:608b03352fa6 (1)");
  EXPECT_EQ(events[3].text, "copying blob 7b1a6ab2e44d (3) skipped: already exists");
  EXPECT_EQ(events[4].text, "copying config sha256:5557e6cae98f");
  EXPECT_EQ(events[5].text,
            "Compressor for blob with digest x previously recorded as uncompressed");
  EXPECT_EQ(events[0].text, "pulling 127.0.0.1:5000/gantry/test:latest");

  events.clear();
  ASSERT_TRUE(Pull("127.0.0.1:5000/gantry/test", {}, &events).ok());
  EXPECT_EQ(events[events.size() - 2].kind, K::kCached);
  EXPECT_EQ(events.back().kind, K::kDone);
}

TEST_F(FakeToolsTest, ConcurrentPullsOfOneImageUnpackItOnce) {
  tools_.unpack_delay_ms = 200;
  std::vector<std::thread> threads;
  std::vector<Result<Image>> results(4, Result<Image>(Internal("not run")));
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&, i] { results[i] = Pull("127.0.0.1:5000/gantry/test:latest"); });
  }
  for (std::thread& t : threads) t.join();
  for (const Result<Image>& r : results) {
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->rootfs, results[0]->rootfs);
  }
  EXPECT_EQ(tools_.unpacks, 1);
  EXPECT_EQ(store_->counters().rootfs_reused, 3);
}

TEST_F(FakeToolsTest, CancelledPullFailsAsUnavailable) {
  std::atomic<bool> cancel{true};
  PullOptions options;
  options.cancel = &cancel;
  // The fake ignores the flag, so block the layout lock instead: the pull waits for it and
  // sees the cancel there.
  Result<Image> first = Pull("127.0.0.1:5000/a");
  ASSERT_TRUE(first.ok());
  {
    Fd fd(open((root_ + "/oci.lock").c_str(), O_RDWR));
    ASSERT_EQ(flock(fd.get(), LOCK_EX), 0);
    Result<Image> image = Pull("127.0.0.1:5000/a", options);
    ASSERT_FALSE(image.ok());
    EXPECT_EQ(image.status().code(), Code::kUnavailable);
    EXPECT_NE(image.status().message().find("cancelled"), std::string::npos);
  }
}

TEST_F(FakeToolsTest, LookupDoesNotWaitForACopyOfAnotherImage) {
  Result<ImageRef> ref = ImageRef::Parse("127.0.0.1:5000/gantry/b:1");
  ASSERT_TRUE(ref.ok());
  Result<Image> pulled = store_->Pull(*ref, {}, nullptr);
  ASSERT_TRUE(pulled.ok()) << pulled.status().ToString();
  {
    // Another image's copy holds the layout's lock for its whole download.
    Fd fd(open((root_ + "/oci.lock").c_str(), O_RDWR));
    ASSERT_EQ(flock(fd.get(), LOCK_EX), 0);
    auto found = std::async(std::launch::async, [&] { return store_->Ensure(*ref, {}, nullptr); });
    const bool prompt = found.wait_for(std::chrono::seconds(5)) == std::future_status::ready;
    flock(fd.get(), LOCK_UN);  // (so that a failure here does not hang)
    ASSERT_TRUE(prompt) << "waited for the layout's lock";
    Result<Image> image = found.get();
    ASSERT_TRUE(image.ok()) << image.status().ToString();
    EXPECT_EQ(image->digest, pulled->digest);
    EXPECT_EQ(image->rootfs, pulled->rootfs);
    EXPECT_EQ(image->entrypoint, pulled->entrypoint);
    EXPECT_EQ(tools_.Skopeos().size(), 1u);  // no second copy
  }
  // Removed, it is no longer found.
  ASSERT_TRUE(store_->Remove(pulled->digest).ok());
  EXPECT_EQ(store_->Lookup(*ref).status().code(), Code::kNotFound);
}

// A removal that raced a pull of the same image used to untag it between the pull's copy and
// its unpack ("tag is not found"): Remove waits for running pulls, then asks whether the image
// is still unwanted.
TEST_F(FakeToolsTest, RemoveWaitsForRunningPullsThenAsksWhetherToKeepTheImage) {
  Result<Image> first = Pull("127.0.0.1:5000/gantry/test:1");
  ASSERT_TRUE(first.ok());
  ASSERT_TRUE(store_->Remove(first->digest).ok());
  tools_.unpack_delay_ms = 300;
  auto pulled =
      std::async(std::launch::async, [&] { return Pull("127.0.0.1:5000/gantry/test:1"); });
  auto unpacks = [&] {
    std::lock_guard<std::mutex> l(tools_.mu);
    return tools_.unpacks;
  };
  while (unpacks() < 2) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  bool rootfs_when_asked = false;
  Status st = store_->Remove(first->digest, [&] {
    rootfs_when_asked = fs::exists(first->rootfs);  // the pull has finished by now
    return true;                                    // ... and wants it: keep
  });
  EXPECT_EQ(st.code(), Code::kFailedPrecondition) << st.ToString();
  EXPECT_TRUE(rootfs_when_asked);
  Result<Image> second = pulled.get();
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  EXPECT_TRUE(fs::exists(second->rootfs));
  ASSERT_TRUE(store_->Remove(first->digest, [] { return false; }).ok());
  EXPECT_FALSE(fs::exists(second->rootfs));
}

TEST_F(FakeToolsTest, RemoveDeletesTheRootfsAndUntags) {
  Result<Image> image = Pull("127.0.0.1:5000/gantry/test:latest");
  ASSERT_TRUE(image.ok());
  ASSERT_TRUE(store_->Remove(image->digest).ok());
  EXPECT_FALSE(fs::exists(image->rootfs));
  std::vector<std::string> removed;
  bool gc = false;
  for (const FakeTools::Call& c : tools_.calls) {
    if (c.args[0] == "remove") removed.push_back(c.args[2]);
    if (c.args[0] == "gc") gc = true;
  }
  EXPECT_EQ(removed.size(), 2u);  // the ref's tag and the pin
  EXPECT_TRUE(gc);
  EXPECT_EQ(store_->Remove("sha256:" + std::string(64, 'b')).code(), Code::kNotFound);
  EXPECT_EQ(store_->Remove("nonsense").code(), Code::kInvalidArgument);
}

}  // namespace
}  // namespace gantry::agent::oci
