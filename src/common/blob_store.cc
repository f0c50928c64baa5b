#include "common/blob_store.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/env.h"

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
  std::error_code ec;
  fs::create_directories(root_, ec);
  if (ec) return Unavailable("cannot create " + root_ + ": " + ec.message());
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
  std::string tmp = PathOf(digest) + ".tmp-" + NewId("", 8);
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    f.write(data.data(), static_cast<std::streamsize>(data.size()));
    if (!f) return Unavailable("cannot write blob " + digest);
  }
  std::error_code ec;
  fs::rename(tmp, PathOf(digest), ec);
  if (ec) {
    fs::remove(tmp, ec);
    return Unavailable("cannot store blob " + digest);
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
