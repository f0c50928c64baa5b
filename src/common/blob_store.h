#pragma once
// Content-addressed blobs on the local filesystem: code bundles and their files, named by the
// SHA-256 of their bytes. Writes go to a temporary file first and are renamed into place, so a
// blob is either whole or absent. Thread-safe (the filesystem is the only state).

#include <string>

#include "common/status.h"

namespace gantry {

class BlobStore {
 public:
  explicit BlobStore(std::string root) : root_(std::move(root)) {}
  Status Init();  // creates the directory
  bool Has(const std::string& digest) const;
  // InvalidArgument when `data` does not hash to `digest`.
  Status Put(const std::string& digest, const std::string& data);
  Result<std::string> Get(const std::string& digest) const;
  std::string PathOf(const std::string& digest) const { return root_ + "/" + digest; }

 private:
  std::string root_;
};

// A digest is 64 lowercase hex characters.
bool ValidDigest(const std::string& digest);

}  // namespace gantry
