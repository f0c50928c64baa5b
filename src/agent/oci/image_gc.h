#pragma once
// Image garbage collection: which unpacked images a node removes. An image is kept
// while the server lists it for the node (the assignment's images: an endpoint that could run
// here uses it) or a worker's bundle has it mounted; once neither has held for `grace_ms`, it is
// removed (ImageStore::Remove: its rootfs, its tags and the blobs nothing else uses). The grace
// keeps an image across a quick redeploy or an endpoint deleted and made again.
//
// Pure bookkeeping: the agent gathers the digests and does the removal (off its loop), and only
// sweeps while no pull and no worker's preparation runs. An image removed is one no endpoint
// listed for grace_ms; if one is deployed again while its removal runs, that pull may fail
// (ImageStore::Remove) and the worker's start is retried like any failed start.

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace gantry::agent::oci {

class ImageGc {
 public:
  explicit ImageGc(int64_t grace_ms) : grace_ms_(grace_ms) {}

  // `stored`: the store's manifest digests (ImageStore::List); `keep`: those wanted or in use
  // now. Returns the stored digests that nothing has kept for grace_ms by `now_ms`, and forgets
  // them (a later sweep starts their grace again if they are still there).
  std::vector<std::string> Sweep(const std::vector<std::string>& stored,
                                 const std::set<std::string>& keep, int64_t now_ms);

 private:
  int64_t grace_ms_;
  std::map<std::string, int64_t> unused_since_;
};

}  // namespace gantry::agent::oci
