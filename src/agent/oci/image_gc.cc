#include "agent/oci/image_gc.h"

namespace gantry::agent::oci {

std::vector<std::string> ImageGc::Sweep(const std::vector<std::string>& stored,
                                        const std::set<std::string>& keep, int64_t now_ms) {
  std::map<std::string, int64_t> unused;
  std::vector<std::string> remove;
  for (const std::string& d : stored) {
    if (keep.count(d)) continue;
    auto it = unused_since_.find(d);
    const int64_t since = it == unused_since_.end() ? now_ms : it->second;
    if (now_ms - since >= grace_ms_) {
      remove.push_back(d);
    } else {
      unused[d] = since;
    }
  }
  unused_since_ = std::move(unused);
  return remove;
}

}  // namespace gantry::agent::oci
