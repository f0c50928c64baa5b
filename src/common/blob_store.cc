#include "common/blob_store.h"

#include <fcntl.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/env.h"
#include "common/fd.h"
#include "common/files.h"

namespace gantry {

namespace fs = std::filesystem;

bool ValidDigest(const std::string& d) {
  if (d.size() != 64) return false;
  for (char c : d) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

Status BlobStore::Init() {
  auto made = MakePrivateDir(root_);
  if (!made.ok()) return Unavailable("cannot create " + root_ + ": " + made.status().message());
  return Status::Ok();
}

bool BlobStore::Has(const std::string& digest) const {
  std::error_code ec;
  return ValidDigest(digest) && fs::exists(PathOf(digest), ec);
}

Status BlobStore::Put(const std::string& digest, const std::string& data) {
  if (!ValidDigest(digest)) return InvalidArgument("not a SHA-256 digest: " + digest);
  if (Sha256Hex(data) != digest) {
    return InvalidArgument("the data does not match its digest " + digest);
  }
  if (Has(digest)) return Status::Ok();
  // Whole and durable before it is renamed into place: a crash leaves the blob whole or absent,
  // never a short file under its digest.
  if (Status st = ReplaceFile(PathOf(digest), data, 0600); !st.ok()) {
    return Unavailable("cannot write blob " + digest + ": " + st.message());
  }
  return Status::Ok();
}

Result<std::string> BlobStore::Get(const std::string& digest) const {
  if (!ValidDigest(digest)) return InvalidArgument("not a SHA-256 digest: " + digest);
  std::ifstream f(PathOf(digest), std::ios::binary);
  if (!f) return NotFound("no blob " + digest);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

}  // namespace gantry
