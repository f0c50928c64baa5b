#pragma once
// The image store's reads of its OCI image layout (index.json, manifests, configs), and the file
// locks that order its users (image_store.h: "On disk"). Internal to src/agent/oci; the
// functions are thread-safe, FileLock::Acquire() blocks.

#include <atomic>
#include <map>
#include <string>

#include "agent/oci/image_store.h"
#include "common/fd.h"
#include "common/status.h"

namespace gantry::agent::oci {

// An flock() on a lock file (created if missing), released on destruction.
class FileLock {
 public:
  // Waits for the lock (exclusive or shared), trying every 50 ms while `cancel` (may be null)
  // stays false: Unavailable once it is true.
  static Result<FileLock> Acquire(const std::string& path, bool exclusive,
                                  const std::atomic<bool>* cancel);

 private:
  explicit FileLock(Fd fd) : fd_(std::move(fd)) {}
  Fd fd_;  // closing it releases the lock
};

// The tags of the layout at `layout`: ref.name annotation -> manifest digest. NotFound when it
// has no index.json (nothing was ever copied into it).
Result<std::map<std::string, std::string>> ReadIndex(const std::string& layout);

// Fills image->digest and the config fields from the manifest `digest` in the layout.
// FailedPrecondition for a manifest without config (an index: not single-platform), Internal
// for blobs that are missing or not JSON objects.
Status ReadImage(const std::string& layout, const std::string& digest, Image* image);

}  // namespace gantry::agent::oci
