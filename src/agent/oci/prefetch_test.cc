// ImagePrefetcher with a fake pull: states, events, failures, and cancellation of an image no
// longer wanted; and ImageGc's bookkeeping (both run for real in tests/e2e/test_images.py).
#include "agent/oci/prefetch.h"

#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "agent/oci/image_gc.h"

namespace gantry::agent::oci {
namespace {

// A pull per image that the test drives: it reports `event`, then waits until released (or
// cancelled), then returns `result`.
struct FakePulls {
  std::mutex mu;
  std::condition_variable cv;
  std::map<std::string, bool> released;
  std::map<std::string, Status> results;
  std::map<std::string, int> calls;
  std::map<std::string, bool> had_credentials;

  PrefetchPullFn Fn() {
    return [this](const std::string& image, const PullOptions& options,
                  const ProgressFn& progress) -> Status {
      {
        std::lock_guard<std::mutex> lock(mu);
        ++calls[image];
        had_credentials[image] = options.credentials.has_value();
      }
      progress(PullEvent{PullEvent::Kind::kBlob, "sha256:aa", "copying blob sha256:aa"});
      std::unique_lock<std::mutex> lock(mu);
      while (!released[image]) {
        if (options.cancel && *options.cancel)
          return Unavailable("pull of " + image + " cancelled");
        cv.wait_for(lock, std::chrono::milliseconds(5));
      }
      return results.count(image) ? results[image] : Status::Ok();
    };
  }
  void Release(const std::string& image, Status result = Status::Ok()) {
    std::lock_guard<std::mutex> lock(mu);
    results[image] = result;
    released[image] = true;
    cv.notify_all();
  }
};

// Waits until the prefetcher reports `image` in `state`; the report, or nullopt after 10 s.
std::optional<PrefetchReport> WaitFor(const ImagePrefetcher& p, const std::string& image,
                                      PrefetchState state) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() < deadline) {
    for (const auto& r : p.Reports()) {
      if (r.image == image && r.state == state) return r;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return std::nullopt;
}

TEST(ImagePrefetcherTest, PullsEachWantedImageOnceAndReportsHowItWent) {
  FakePulls pulls;
  SystemClock clock;
  ImagePrefetcher p(pulls.Fn(), &clock);
  PrefetchWant a{"reg/a:1", {}}, b{"reg/b:1", {}};
  b.pull.credentials = RegistryCredentials{"u", "p"};
  p.Want({b, a});
  ASSERT_TRUE(WaitFor(p, "reg/a:1", PrefetchState::kPulling));
  // The pull's events show while it runs.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (p.Reports()[0].detail != "copying blob sha256:aa" &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  EXPECT_EQ(p.Reports()[0].detail, "copying blob sha256:aa");
  pulls.Release("reg/a:1");
  pulls.Release("reg/b:1", NotFound("manifest unknown: reg/b:1 not found"));
  EXPECT_TRUE(WaitFor(p, "reg/a:1", PrefetchState::kReady));
  auto failed = WaitFor(p, "reg/b:1", PrefetchState::kFailed);
  ASSERT_TRUE(failed);
  EXPECT_EQ(failed->detail, "manifest unknown: reg/b:1 not found");
  // Sorted by image; wanting the same images again pulls nothing again.
  p.Want({a, b});
  auto reports = p.Reports();
  ASSERT_EQ(reports.size(), 2u);
  EXPECT_EQ(reports[0].image, "reg/a:1");
  EXPECT_EQ(reports[1].image, "reg/b:1");
  EXPECT_EQ(pulls.calls["reg/a:1"], 1);
  EXPECT_EQ(pulls.calls["reg/b:1"], 1);
  EXPECT_EQ(reports[0].fetches, 1);
  EXPECT_EQ(reports[1].fetches, 1);
  // A redeploy (another generation) fetches the image again and reports that pull.
  PrefetchWant again{"reg/a:1", "e:2", {}};
  {
    std::lock_guard<std::mutex> lock(pulls.mu);
    pulls.released["reg/a:1"] = false;
  }
  p.Want({again, b});
  auto redone = WaitFor(p, "reg/a:1", PrefetchState::kPulling);
  ASSERT_TRUE(redone);
  EXPECT_EQ(redone->generation, "e:2");
  EXPECT_EQ(redone->fetches, 2);  // the node's second fetch of it
  pulls.Release("reg/a:1");
  EXPECT_TRUE(WaitFor(p, "reg/a:1", PrefetchState::kReady));
  p.Stop();
  EXPECT_EQ(pulls.calls["reg/a:1"], 2);
  EXPECT_EQ(pulls.calls["reg/b:1"], 1);
  EXPECT_TRUE(pulls.had_credentials["reg/b:1"]);
  EXPECT_FALSE(pulls.had_credentials["reg/a:1"]);
}

TEST(ImagePrefetcherTest, AnImageNoLongerWantedIsCancelledAndForgotten) {
  FakePulls pulls;
  SystemClock clock;
  auto p = std::make_unique<ImagePrefetcher>(pulls.Fn(), &clock);
  p->Want({{"reg/gone:1", {}}, {"reg/kept:1", {}}});
  ASSERT_TRUE(WaitFor(*p, "reg/gone:1", PrefetchState::kPulling));
  p->Want({{"reg/kept:1", {}}});  // its endpoint was deleted: the pull is cancelled
  auto reports = p->Reports();
  ASSERT_EQ(reports.size(), 1u);
  EXPECT_EQ(reports[0].image, "reg/kept:1");
  // Stop() cancels the pull still running and returns once its thread is done.
  p->Stop();
  EXPECT_TRUE(p->Reports().empty());
  p.reset();
  EXPECT_EQ(pulls.calls["reg/gone:1"], 1);
}

}  // namespace
}  // namespace gantry::agent::oci

namespace gantry::agent::oci {
namespace {

TEST(ImageGcTest, RemovesWhatNothingKeptForTheGracePeriod) {
  ImageGc gc(600'000);
  const std::vector<std::string> stored = {"sha256:a", "sha256:b", "sha256:c"};
  // b is wanted, c is in use: only a starts its grace.
  EXPECT_TRUE(gc.Sweep(stored, {"sha256:b", "sha256:c"}, 1'000).empty());
  EXPECT_TRUE(gc.Sweep(stored, {"sha256:b", "sha256:c"}, 600'999).empty());
  // At 601 s a's grace has run out; c's worker has ended, so c's starts.
  EXPECT_EQ(gc.Sweep(stored, {"sha256:b"}, 601'000), (std::vector<std::string>{"sha256:a"}));
  const std::vector<std::string> left = {"sha256:b", "sha256:c"};
  EXPECT_TRUE(gc.Sweep(left, {"sha256:b"}, 1'200'999).empty());
  EXPECT_EQ(gc.Sweep(left, {"sha256:b"}, 1'201'000), (std::vector<std::string>{"sha256:c"}));
  EXPECT_TRUE(gc.Sweep({"sha256:b"}, {"sha256:b"}, 9'000'000).empty());  // wanted: kept
}

TEST(ImageGcTest, AnImageKeptAgainStartsItsGraceOver) {
  ImageGc gc(10);
  EXPECT_TRUE(gc.Sweep({"sha256:a"}, {}, 0).empty());
  EXPECT_TRUE(gc.Sweep({"sha256:a"}, {"sha256:a"}, 5).empty());  // redeployed
  EXPECT_TRUE(gc.Sweep({"sha256:a"}, {}, 6).empty());            // dropped again at 6
  EXPECT_TRUE(gc.Sweep({"sha256:a"}, {}, 15).empty());
  EXPECT_EQ(gc.Sweep({"sha256:a"}, {}, 16), (std::vector<std::string>{"sha256:a"}));
  // Removed: forgotten; found again later, it gets a new grace.
  EXPECT_TRUE(gc.Sweep({"sha256:a"}, {}, 100).empty());
}

}  // namespace
}  // namespace gantry::agent::oci
