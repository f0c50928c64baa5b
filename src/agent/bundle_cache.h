#pragma once
// The agent's cache of code bundles, by digest: <dir>/bundles/<digest>/ holds the unpacked files,
// <dir>/blobs/<digest> the file contents they are copied from. A bundle directory appears
// whole (built aside, then renamed) or not at all. Files unchanged between versions are fetched
// once.

#include <memory>
#include <set>
#include <string>

#include "common/blob_store.h"
#include "common/status.h"
#include "http/http.h"

namespace gantry::agent {

class BundleCache {
 public:
  virtual ~BundleCache() = default;
  // The directory of the unpacked bundle, fetching it first if needed. Blocks.
  virtual Result<std::string> Ensure(const std::string& digest) = 0;
  virtual std::set<std::string> Cached() const = 0;
};

// Fetches from the server's /v1/bundles and /v1/blobs with `token`. One thread at a time.
std::unique_ptr<BundleCache> NewHttpBundleCache(const std::string& server_url,
                                                const std::string& token, const std::string& dir);

}  // namespace gantry::agent
