#include "api/bundles.h"

#include <map>

#include "common/env.h"

namespace gantry::api {

Result<std::string> CanonicalManifest(const json::value& body) {
  if (!body.is_object()) return InvalidArgument("a bundle is {\"files\": [...]}");
  const json::value* files = Find(body.as_object(), "files");
  if (!files || !files->is_array()) return InvalidArgument("a bundle is {\"files\": [...]}");
  std::map<std::string, json::object> sorted;
  for (const auto& f : files->as_array()) {
    if (!f.is_object()) return InvalidArgument("each file is {\"path\", \"digest\", \"mode\"}");
    const auto& o = f.as_object();
    const json::value* path = Find(o, "path");
    const json::value* digest = Find(o, "digest");
    if (!path || !path->is_string() || !digest || !digest->is_string()) {
      return InvalidArgument("each file needs a path and a digest");
    }
    std::string p(path->as_string());
    if (p.empty() || p[0] == '/' || p.find("..") != std::string::npos ||
        p.find('\\') != std::string::npos) {
      return InvalidArgument("bad path in bundle: " + p);
    }
    if (!ValidDigest(std::string(digest->as_string()))) {
      return InvalidArgument("bad digest for " + p);
    }
    int64_t mode = 0644;
    if (const json::value* m = Find(o, "mode")) mode = AsInt(*m).value_or(0644) & 0777;
    sorted[p] = json::object{{"path", p}, {"digest", digest->as_string()}, {"mode", mode}};
  }
  json::array out;
  for (auto& [p, o] : sorted) out.push_back(std::move(o));
  return ToJson(json::object{{"files", std::move(out)}});
}

Status CheckBundle(const BlobStore& blobs, const json::value& spec) {
  if (!spec.is_object()) return Status::Ok();  // ApplySpecPatch reports that
  const json::value* b = Find(spec.as_object(), "bundle");
  if (!b || !b->is_string() || b->as_string().empty()) return Status::Ok();
  std::string digest(b->as_string());
  if (!ValidDigest(digest)) return InvalidArgument("bundle is not a SHA-256 digest");
  if (!blobs.Has(digest)) return NotFound("bundle not uploaded: " + digest);
  return Status::Ok();
}

}  // namespace gantry::api
