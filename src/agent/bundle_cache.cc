#include "agent/bundle_cache.h"

#include <sys/stat.h>

#include <filesystem>

#include "common/env.h"
#include "common/json.h"
#include "common/log.h"

namespace gantry::agent {
namespace {

namespace fs = std::filesystem;

class HttpBundleCache final : public BundleCache {
 public:
  HttpBundleCache(http::Url url, std::string token, std::string dir)
      : client_(url), token_(std::move(token)), dir_(std::move(dir)), blobs_(dir_ + "/blobs") {}

  std::set<std::string> Cached() const override {
    std::set<std::string> out;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(dir_ + "/bundles", ec)) {
      std::string name = e.path().filename().string();
      if (ValidDigest(name)) out.insert(name);
    }
    return out;
  }

  Result<std::string> Ensure(const std::string& digest) override {
    if (!ValidDigest(digest)) return InvalidArgument("bad bundle digest: " + digest);
    std::string root = dir_ + "/bundles/" + digest;
    std::error_code ec;
    if (fs::exists(root, ec)) return root;
    GANTRY_RETURN_IF_ERROR(blobs_.Init());
    auto manifest = Fetch("/v1/bundles/" + digest);
    if (!manifest.ok()) return manifest.status();
    if (Sha256Hex(*manifest) != digest) return Internal("bundle manifest does not match " + digest);
    auto parsed = ParseJson(*manifest);
    if (!parsed.ok() || !parsed->is_object()) return Internal("bad bundle manifest " + digest);
    std::string tmp = root + ".tmp-" + NewId("", 8);
    fs::create_directories(tmp, ec);
    if (ec) return Unavailable("cannot create " + tmp + ": " + ec.message());
    size_t fetched = 0, files = 0;
    for (const auto& f : parsed->as_object().at("files").as_array()) {
      const auto& o = f.as_object();
      std::string path(o.at("path").as_string());
      std::string blob(o.at("digest").as_string());
      if (!blobs_.Has(blob)) {
        auto data = Fetch("/v1/blobs/" + blob);
        if (!data.ok()) return data.status();
        GANTRY_RETURN_IF_ERROR(blobs_.Put(blob, *data));
        ++fetched;
      }
      fs::path dest = fs::path(tmp) / path;
      fs::create_directories(dest.parent_path(), ec);
      // Each bundle gets its own copy, so that a worker writing to its files cannot change the
      // cached blob another bundle shares.
      fs::copy_file(blobs_.PathOf(blob), dest, fs::copy_options::overwrite_existing, ec);
      if (ec) return Unavailable("cannot unpack " + path + ": " + ec.message());
      // The agent's own copy: its user only (a sandboxed worker gets a copy of its own).
      chmod(dest.c_str(), static_cast<mode_t>(AsInt(o.at("mode")).value_or(0600) & 0700));
      ++files;
    }
    fs::rename(tmp, root, ec);
    if (ec && !fs::exists(root)) return Unavailable("cannot place bundle " + digest);
    fs::remove_all(tmp, ec);
    GLOG_INFO("agent: bundle %.12s ready: %zu files, %zu fetched", digest.c_str(), files, fetched);
    return root;
  }

 private:
  Result<std::string> Fetch(const std::string& target) {
    auto r = client_.Do("GET", target, "", {{"Authorization", "Bearer " + token_}}, 120'000);
    if (!r.ok()) return r.status();
    if (r->status != 200) {
      return Unavailable("GET " + target + ": HTTP " + std::to_string(r->status));
    }
    return std::move(r->body);
  }

  http::HttpClient client_;
  std::string token_;
  std::string dir_;
  BlobStore blobs_;
};

}  // namespace

std::unique_ptr<BundleCache> NewHttpBundleCache(const std::string& server_url,
                                                const std::string& token, const std::string& dir) {
  auto url = http::ParseUrl(server_url);
  if (!url.ok()) return nullptr;
  return std::make_unique<HttpBundleCache>(*url, token, dir);
}

}  // namespace gantry::agent
