#pragma once
// ImagePrefetcher: pulls the images the server lists for this node (Assignment::images: those of
// every endpoint with an image that could run here) as soon as they are deployed, before any
// worker of them starts, and keeps each pull's state for the node status ("images"), which is
// what `gantry deploy --image` follows to show the pull. A worker that starts while its
// image is still being prefetched pulls it too; the image store's locks make the second pull
// wait for the first and reuse what it fetched.
//
// Threading: Want(), Reports() and Stop() are called from one thread (the agent's loop); each
// pull runs on its own thread. A pull of an image no longer listed is cancelled
// (its tool is killed) and forgotten. A failed pull is not retried by the prefetcher: the
// image's first worker pulls it again, and its errors reach the endpoint's health.

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "agent/oci/image_store.h"
#include "common/env.h"

namespace gantry::agent::oci {

struct PrefetchWant {
  std::string image;       // a reference, as the endpoint spec gives it
  std::string generation;  // changes with each deploy of an endpoint that uses the image
  PullOptions pull;        // credentials and insecure; `cancel` is the prefetcher's own
};

enum class PrefetchState { kPulling, kReady, kFailed };

struct PrefetchReport {
  std::string image;
  std::string generation;  // of the want this pull is for
  PrefetchState state = PrefetchState::kPulling;
  std::string detail;  // the pull's last event, or why it failed
  int64_t updated_ms = 0;
  int64_t fetches = 0;  // pulls of this image started since the prefetcher was made
};

// Fetches `image` (e.g. ImageStore::Ensure after ImageRef::Parse), calling `progress` with its
// events; its error on failure. Runs on a prefetch thread.
using PrefetchPullFn = std::function<Status(const std::string& image, const PullOptions& options,
                                            const ProgressFn& progress)>;

class ImagePrefetcher {
 public:
  ImagePrefetcher(PrefetchPullFn pull, const Clock* clock);
  ~ImagePrefetcher();  // Stop()
  ImagePrefetcher(const ImagePrefetcher&) = delete;
  ImagePrefetcher& operator=(const ImagePrefetcher&) = delete;

  // The images to hold now: starts a pull of each one not seen before, or seen with another
  // generation (the earlier pull, if still running, is cancelled: a redeploy fetches the image
  // again, since a "latest" tag may have moved); cancels the pulls of those no longer listed
  // and forgets them.
  void Want(const std::vector<PrefetchWant>& wants);
  // One report per wanted image, sorted by image.
  std::vector<PrefetchReport> Reports() const;
  // A pull is running (a wanted one, or a cancelled one not ended yet).
  bool Busy() const;
  // Goes up whenever Reports() would change (a pull's progress, an image wanted or dropped):
  // callable from any thread, so that the caller builds reports only when there is news.
  uint64_t Changes() const { return changes_; }
  // Cancels the pulls still running and waits for their threads. Idempotent.
  void Stop();

 private:
  struct Pull;  // shared with its thread
  struct Entry {
    std::shared_ptr<Pull> pull;
    std::thread thread;
  };
  void Retire(Entry entry);

  PrefetchPullFn pull_fn_;
  const Clock* clock_;
  std::map<std::string, Entry> entries_;    // by image
  std::map<std::string, int64_t> fetches_;  // by image: pulls started
  std::vector<Entry> retired_;              // cancelled, joined once their thread is done
  std::atomic<uint64_t> changes_{0};
};

}  // namespace gantry::agent::oci
