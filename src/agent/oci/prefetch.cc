#include "agent/oci/prefetch.h"

#include <algorithm>
#include <atomic>
#include <mutex>

#include "common/log.h"

namespace gantry::agent::oci {

struct ImagePrefetcher::Pull {
  std::string generation;
  std::atomic<bool> cancel{false};
  std::atomic<bool> done{false};
  mutable std::mutex mu;
  PrefetchReport report;  // GUARDED_BY(mu)
};

ImagePrefetcher::ImagePrefetcher(PrefetchPullFn pull, const Clock* clock)
    : pull_fn_(std::move(pull)), clock_(clock) {}

ImagePrefetcher::~ImagePrefetcher() { Stop(); }

void ImagePrefetcher::Want(const std::vector<PrefetchWant>& wants) {
  std::map<std::string, const PrefetchWant*> wanted;
  for (const PrefetchWant& w : wants) wanted.emplace(w.image, &w);
  for (auto it = entries_.begin(); it != entries_.end();) {
    auto w = wanted.find(it->first);
    if (w != wanted.end() && w->second->generation == it->second.pull->generation) {
      ++it;
      continue;
    }
    Retire(std::move(it->second));
    ++changes_;
    it = entries_.erase(it);
  }
  // Threads of cancelled pulls that have ended by now are joined without waiting.
  for (auto it = retired_.begin(); it != retired_.end();) {
    if (!it->pull->done) {
      ++it;
      continue;
    }
    it->thread.join();
    it = retired_.erase(it);
  }
  for (const auto& [image, want] : wanted) {
    if (entries_.count(image)) continue;
    auto pull = std::make_shared<Pull>();
    pull->generation = want->generation;
    pull->report = PrefetchReport{image,      want->generation, PrefetchState::kPulling,
                                  "starting", clock_->NowMs(),  ++fetches_[image]};
    PullOptions options = want->pull;
    options.cancel = &pull->cancel;
    const Clock* clock = clock_;
    PrefetchPullFn fn = pull_fn_;
    GLOG_INFO("agent: prefetching image %s", image.c_str());
    std::atomic<uint64_t>* changes = &changes_;  // outlives the thread: Stop() joins it
    std::thread t([pull, options, clock, fn, changes, image = image] {
      auto set = [&](PrefetchState state, const std::string& detail) {
        std::lock_guard<std::mutex> lock(pull->mu);
        pull->report.state = state;
        pull->report.detail = detail;
        pull->report.updated_ms = clock->NowMs();
        ++*changes;
      };
      Status st =
          fn(image, options, [&](const PullEvent& e) { set(PrefetchState::kPulling, e.text); });
      if (st.ok()) {
        set(PrefetchState::kReady, "pulled");
      } else if (!pull->cancel) {
        GLOG_WARN("agent: prefetch of %s failed: %s", image.c_str(), st.ToString().c_str());
        set(PrefetchState::kFailed, st.message());
      }
      pull->done = true;
    });
    entries_.emplace(image, Entry{std::move(pull), std::move(t)});
    ++changes_;
  }
}

std::vector<PrefetchReport> ImagePrefetcher::Reports() const {
  std::vector<PrefetchReport> out;
  for (const auto& [image, e] : entries_) {
    std::lock_guard<std::mutex> lock(e.pull->mu);
    out.push_back(e.pull->report);
  }
  return out;  // entries_ is ordered by image
}

bool ImagePrefetcher::Busy() const {
  for (const auto& [image, e] : entries_) {
    if (!e.pull->done) return true;
  }
  for (const Entry& e : retired_) {
    if (!e.pull->done) return true;
  }
  return false;
}

void ImagePrefetcher::Retire(Entry entry) {
  entry.pull->cancel = true;
  retired_.push_back(std::move(entry));
}

void ImagePrefetcher::Stop() {
  for (auto& [image, e] : entries_) Retire(std::move(e));
  entries_.clear();
  for (Entry& e : retired_) {
    if (e.thread.joinable()) e.thread.join();
  }
  retired_.clear();
}

}  // namespace gantry::agent::oci
