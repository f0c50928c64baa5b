// Reading the image store's OCI layout, and its file locks. See image_layout.h for the contract.
#include "agent/oci/image_layout.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "common/json.h"

namespace gantry::agent::oci {
namespace {

namespace fs = std::filesystem;

// How often a lock is tried again.
constexpr int kPollMs = 50;
// Manifests and configs larger than this are refused (real ones are a few KiB).
constexpr std::uintmax_t kMaxMetadataBytes = 4 * 1024 * 1024;
constexpr const char* kRefNameAnnotation = "org.opencontainers.image.ref.name";

Result<std::string> ReadSmallFile(const std::string& path) {
  std::error_code ec;
  const std::uintmax_t size = fs::file_size(path, ec);
  if (ec) {
    return ec == std::errc::no_such_file_or_directory ? NotFound(path + " does not exist")
                                                      : Internal(path + ": " + ec.message());
  }
  if (size > kMaxMetadataBytes) return FailedPrecondition(path + " is too large");
  std::ifstream in(path, std::ios::binary);
  if (!in) return Internal("cannot read " + path);
  std::string data(static_cast<size_t>(size), '\0');
  in.read(data.data(), static_cast<std::streamsize>(size));
  return data;
}

std::string BlobPath(const std::string& layout, const std::string& digest) {
  const size_t colon = digest.find(':');
  return layout + "/blobs/" + digest.substr(0, colon) + "/" + digest.substr(colon + 1);
}

Result<json::object> ReadJsonBlob(const std::string& layout, const std::string& digest,
                                  const char* what) {
  if (!IsDigest(digest)) return Internal(std::string(what) + " digest is malformed: " + digest);
  Result<std::string> text = ReadSmallFile(BlobPath(layout, digest));
  if (!text.ok()) {
    return Internal(std::string(what) + " " + digest +
                    " is missing from the layout: " + text.status().message());
  }
  Result<json::value> v = ParseJson(*text);
  if (!v.ok() || !v->is_object()) {
    return Internal(std::string(what) + " " + digest + " is not a JSON object");
  }
  return std::move(v->get_object());
}

std::vector<std::string> StringArray(const json::object& obj, std::string_view key) {
  std::vector<std::string> out;
  const json::value* v = Find(obj, key);
  if (!v || !v->is_array()) return out;
  for (const json::value& e : v->get_array()) {
    if (e.is_string()) out.emplace_back(e.get_string());
  }
  return out;
}

std::string StringField(const json::object& obj, std::string_view key) {
  const json::value* v = Find(obj, key);
  return v && v->is_string() ? std::string(v->get_string()) : std::string();
}

}  // namespace

Result<FileLock> FileLock::Acquire(const std::string& path, bool exclusive,
                                   const std::atomic<bool>* cancel) {
  Fd fd(open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (fd.get() < 0) return ErrnoStatus("open " + path, errno);
  const int op = (exclusive ? LOCK_EX : LOCK_SH) | LOCK_NB;
  for (;;) {
    if (flock(fd.get(), op) == 0) return FileLock(std::move(fd));
    if (errno == EINTR) continue;
    if (errno != EWOULDBLOCK) return ErrnoStatus("flock " + path, errno);
    if (cancel && cancel->load()) return Unavailable("cancelled while waiting for " + path);
    std::this_thread::sleep_for(std::chrono::milliseconds(kPollMs));
  }
}

Result<std::map<std::string, std::string>> ReadIndex(const std::string& layout) {
  Result<std::string> text = ReadSmallFile(layout + "/index.json");
  if (!text.ok()) return text.status();
  Result<json::value> v = ParseJson(*text);
  if (!v.ok()) return Internal(layout + "/index.json: " + v.status().message());
  std::map<std::string, std::string> tags;
  const json::object* obj = v->if_object();
  const json::value* manifests = obj ? Find(*obj, "manifests") : nullptr;
  if (!manifests || !manifests->is_array()) return tags;
  for (const json::value& m : manifests->get_array()) {
    const json::object* mo = m.if_object();
    if (!mo) continue;
    const json::value* digest = Find(*mo, "digest");
    const json::value* ann = Find(*mo, "annotations");
    if (!digest || !digest->is_string() || !ann || !ann->is_object()) continue;
    const json::value* name = Find(ann->get_object(), kRefNameAnnotation);
    if (name && name->is_string()) {
      tags[std::string(name->get_string())] = std::string(digest->get_string());
    }
  }
  return tags;
}

Status ReadImage(const std::string& layout, const std::string& digest, Image* image) {
  image->digest = digest;
  Result<json::object> manifest = ReadJsonBlob(layout, digest, "manifest");
  if (!manifest.ok()) return manifest.status();
  const json::value* config = Find(*manifest, "config");
  if (!config || !config->is_object()) {
    const std::string media = StringField(*manifest, "mediaType");
    return FailedPrecondition("manifest " + digest + " has no config (media type \"" + media +
                              "\"); only single-platform image manifests are supported");
  }
  Result<json::object> blob =
      ReadJsonBlob(layout, StringField(config->get_object(), "digest"), "image config");
  if (!blob.ok()) return blob.status();
  image->os = StringField(*blob, "os");
  image->architecture = StringField(*blob, "architecture");
  const json::value* c = Find(*blob, "config");
  if (c && c->is_object()) {
    const json::object& co = c->get_object();
    image->entrypoint = StringArray(co, "Entrypoint");
    image->cmd = StringArray(co, "Cmd");
    image->env = StringArray(co, "Env");
    image->working_dir = StringField(co, "WorkingDir");
    image->user = StringField(co, "User");
  }
  return Status::Ok();
}

}  // namespace gantry::agent::oci
