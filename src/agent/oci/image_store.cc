// ImageStore and the real ImageTools. See image_store.h for the contract. The layout's reads and
// locks are in image_layout.cc, the reading of the tools' output in tool_output.cc.
#include "agent/oci/image_store.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <system_error>
#include <utility>

#include "agent/oci/image_layout.h"
#include "agent/oci/image_text.h"
#include "agent/oci/tool_output.h"
#include "common/env.h"
#include "common/fd.h"
#include "common/json.h"
#include "common/log.h"
#include "common/subprocess.h"

namespace gantry::agent::oci {
namespace {

namespace fs = std::filesystem;
using SteadyClock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// A tool's output is kept up to this size (its end).
constexpr size_t kMaxOutputBytes = 64 * 1024;
constexpr const char* kPinPrefix = "sha256_";
constexpr const char* kInstallHint = "run scripts/setup.sh (Debian packages skopeo and umoci)";

int64_t MsSince(SteadyClock::time_point start) {
  return std::chrono::duration_cast<milliseconds>(SteadyClock::now() - start).count();
}

std::string Base64(std::string_view in) {
  static constexpr char kChars[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    const uint32_t n = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8) | uint8_t(in[i + 2]);
    out += {kChars[n >> 18], kChars[(n >> 12) & 63], kChars[(n >> 6) & 63], kChars[n & 63]};
  }
  if (i + 1 == in.size()) {
    const uint32_t n = uint8_t(in[i]) << 16;
    out += {kChars[n >> 18], kChars[(n >> 12) & 63], '=', '='};
  } else if (i + 2 == in.size()) {
    const uint32_t n = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8);
    out += {kChars[n >> 18], kChars[(n >> 12) & 63], kChars[(n >> 6) & 63], '='};
  }
  return out;
}

// ---- Running the tools -----------------------------------------------------------------------

class SystemImageTools final : public ImageTools {
 public:
  explicit SystemImageTools(const SystemImageToolsOptions& options)
      : skopeo_(FindExecutable(options.skopeo)),
        umoci_(FindExecutable(options.umoci)),
        skopeo_name_(options.skopeo),
        umoci_name_(options.umoci) {
    env_.push_back(std::string("PATH=") + kSystemPath);
    env_.push_back("LC_ALL=C");
    const char* home = std::getenv("HOME");
    env_.push_back(std::string("HOME=") + (home && *home ? home : "/"));
    for (const char* name :
         {"HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy"}) {
      if (const char* v = std::getenv(name)) env_.push_back(std::string(name) + "=" + v);
    }
  }

  Result<Run> RunTool(Tool tool, const std::vector<std::string>& args, int64_t timeout_ms,
                      const std::atomic<bool>* cancel,
                      const std::function<void(std::string_view)>& on_line) override {
    const std::string& binary = tool == Tool::kSkopeo ? skopeo_ : umoci_;
    if (binary.empty()) {
      return FailedPrecondition((tool == Tool::kSkopeo ? skopeo_name_ : umoci_name_) +
                                " is not installed (not in PATH); " + kInstallHint);
    }
    std::vector<std::string> argv;
    argv.push_back(binary);
    argv.insert(argv.end(), args.begin(), args.end());
    SubprocessOptions options;
    options.env = env_;
    options.timeout_ms = timeout_ms;
    options.cancel = cancel;
    options.on_line = on_line;
    options.max_output = kMaxOutputBytes;
    Result<SubprocessResult> r = RunProcess(argv, options);
    if (!r.ok()) {
      // FailedPrecondition: the binary is gone.
      if (r.status().code() != Code::kFailedPrecondition) return r.status();
      return FailedPrecondition(r.status().message() + "; " + kInstallHint);
    }
    Run run;
    run.exit_code = r->exit_code();
    run.timed_out = r->timed_out;
    run.cancelled = r->cancelled;
    run.output = std::move(r->output);
    return run;
  }

 private:
  const std::string skopeo_, umoci_, skopeo_name_, umoci_name_;
  std::vector<std::string> env_;
};

// ---- Credentials -----------------------------------------------------------------------------

// The texts that would give a pull's credentials away (the password, and "user:password" plain
// and in base64), longest first, so that "user:pass" is hidden whole rather than leaving "user:".
std::vector<std::string> CredentialSecrets(const PullOptions& options) {
  std::vector<std::string> secrets;
  if (!options.credentials) return secrets;
  const RegistryCredentials& c = *options.credentials;
  for (const std::string& s :
       {c.password, Base64(c.username + ":" + c.password), c.username + ":" + c.password}) {
    if (s.size() >= 3) secrets.push_back(s);
  }
  std::sort(secrets.begin(), secrets.end(),
            [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
  return secrets;
}

// skopeo's auth file for one copy, deleted when this goes.
struct AuthFile {
  std::string path;
  ~AuthFile() {
    if (!path.empty()) unlink(path.c_str());
  }
};

// Writes the auth file of `ref`'s registry with `c`, created 0600 in `dir` (the store's tmp/,
// 0700), into *auth.
Status WriteAuthFile(const std::string& dir, const ImageRef& ref, const RegistryCredentials& c,
                     AuthFile* auth) {
  auth->path = dir + "/auth-" + NewId("p", 16) + ".json";
  json::object entry{{"auth", Base64(c.username + ":" + c.password)}};
  json::object auths;
  auths[ref.registry] = std::move(entry);
  const std::string text = ToJson(json::object{{"auths", std::move(auths)}});
  Fd fd(open(auth->path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (fd.get() < 0) {
    const int err = errno;
    auth->path.clear();
    return ErrnoStatus("creating an auth file in " + dir, err);
  }
  if (write(fd.get(), text.data(), text.size()) != static_cast<ssize_t>(text.size())) {
    return ErrnoStatus("writing an auth file in " + dir, errno);
  }
  return Status::Ok();
}

// skopeo copy's arguments for a pull of `ref` into the layout of the store at `root`; with
// credentials, writes them to *auth, which the caller keeps until the copy is done.
Result<std::vector<std::string>> CopyArgs(const std::string& root, const ImageRef& ref,
                                          const PullOptions& options, AuthFile* auth) {
  std::vector<std::string> args = {"--insecure-policy", "--tmpdir", root + "/tmp", "copy"};
  args.push_back(ref.IsLoopback() || options.insecure ? "--src-tls-verify=false"
                                                      : "--src-tls-verify=true");
  if (options.credentials) {
    GANTRY_RETURN_IF_ERROR(WriteAuthFile(root + "/tmp", ref, *options.credentials, auth));
    args.push_back("--src-authfile");
    args.push_back(auth->path);
  } else {
    args.push_back("--src-no-creds");
  }
  args.push_back(ref.TransportRef());
  args.push_back("oci:" + root + "/oci" + ":" + ref.LayoutTag());
  return args;
}

}  // namespace

// ---- ImageStore ------------------------------------------------------------------------------

std::unique_ptr<ImageTools> NewSystemImageTools(SystemImageToolsOptions options) {
  return std::make_unique<SystemImageTools>(options);
}

ImageStore::ImageStore(std::string root, ImageTools* tools, ImageStoreOptions options)
    : root_(std::move(root)), tools_(tools), options_(options) {}

Result<std::unique_ptr<ImageStore>> ImageStore::Open(const std::string& root, ImageTools* tools,
                                                     ImageStoreOptions options) {
  if (root.empty() || root.front() != '/') {
    return InvalidArgument("image store root \"" + root + "\" is not an absolute path");
  }
  // skopeo and umoci take "<layout>:<tag>": a ':' in the path would be read as the tag's start.
  if (root.find(':') != std::string::npos) {
    return InvalidArgument("image store root \"" + root + "\" holds a ':'");
  }
  std::string clean = fs::path(root).lexically_normal().string();
  while (clean.size() > 1 && clean.back() == '/') clean.pop_back();
  std::error_code ec;
  for (const std::string& dir : {clean, clean + "/tmp", clean + "/refs"}) {
    fs::create_directories(dir, ec);
    if (ec) return Internal("cannot create " + dir + ": " + ec.message());
  }
  fs::permissions(clean + "/tmp", fs::perms::owner_all, fs::perm_options::replace, ec);
  if (ec) return Internal("cannot chmod " + clean + "/tmp: " + ec.message());
  std::unique_ptr<ImageStore> store(new ImageStore(std::move(clean), tools, options));
  fs::create_directories(store->RootfsParent(), ec);
  if (ec) return Internal("cannot create " + store->RootfsParent() + ": " + ec.message());
  return store;
}

ImageStore::Counters ImageStore::counters() const {
  return {pulls_.load(), pull_failures_.load(), unpacks_.load(), rootfs_reused_.load()};
}

Result<Image> ImageStore::Pull(const ImageRef& ref, const PullOptions& options,
                               const ProgressFn& progress) {
  std::shared_lock<std::shared_mutex> no_removal(pulls_mu_);
  return PullCounted(ref, options, progress);
}

Result<Image> ImageStore::PullCounted(const ImageRef& ref, const PullOptions& options,
                                      const ProgressFn& progress) {
  Result<Image> image = PullImpl(ref, options, progress);
  (image.ok() ? pulls_ : pull_failures_)++;
  if (image.ok()) {
    if (progress) {
      progress({PullEvent::Kind::kDone, image->digest,
                "pulled " + ref.ToString() + " (" + image->digest.substr(0, 19) + ")"});
    }
  } else {
    GLOG_WARN("image store: pull of %s failed: %s", ref.ToString().c_str(),
              image.status().ToString().c_str());
  }
  return image;
}

Result<Image> ImageStore::PullImpl(const ImageRef& ref, const PullOptions& options,
                                   const ProgressFn& progress) {
  if (ref.registry.empty() || ref.repository.empty() || (ref.tag.empty() && ref.digest.empty())) {
    return InvalidArgument("image reference \"" + ref.ToString() + "\" is incomplete");
  }
  Image image;
  image.ref = ref;
  // Secrets never leave this pull in any text.
  const std::vector<std::string> secrets = CredentialSecrets(options);
  auto redact = [&secrets](std::string s) {
    for (const std::string& secret : secrets) ReplaceAll(&s, secret, "<redacted>");
    return s;
  };
  AuthFile auth;  // deleted when this function returns
  Result<std::vector<std::string>> args = CopyArgs(root_, ref, options, &auth);
  if (!args.ok()) return args.status();
  if (progress) progress({PullEvent::Kind::kStart, "", "pulling " + ref.ToString()});
  const auto copy_start = SteadyClock::now();
  GANTRY_RETURN_IF_ERROR(CopyIntoLayout(ref, *args, options.cancel, redact, progress, &image));
  image.copy_ms = MsSince(copy_start);
  GANTRY_RETURN_IF_ERROR(Unpack(&image, options.cancel, progress));
  return image;
}

Status ImageStore::CopyIntoLayout(const ImageRef& ref, const std::vector<std::string>& args,
                                  const std::atomic<bool>* cancel,
                                  const std::function<std::string(std::string)>& redact,
                                  const ProgressFn& progress, Image* image) {
  const std::string layout = LayoutDir();
  const std::string tag = ref.LayoutTag();
  // Copies into the layout take turns (see the header).
  Result<FileLock> lock = FileLock::Acquire(root_ + "/oci.lock", /*exclusive=*/true, cancel);
  if (!lock.ok()) return lock.status();
  int blobs = 0;
  auto on_line = [&](std::string_view line) {
    if (!progress) return;
    std::optional<PullEvent> e = SkopeoLineEvent(line, &blobs);
    if (!e) return;
    e->text = redact(std::move(e->text));
    progress(*e);
  };
  Result<ImageTools::Run> run =
      tools_->RunTool(ImageTools::Tool::kSkopeo, args, options_.copy_timeout_ms, cancel, on_line);
  if (!run.ok()) return Status(run.status().code(), redact(run.status().message()));
  if (!run->succeeded()) return SkopeoFailure(ref, *run, options_.copy_timeout_ms, redact);

  Result<std::map<std::string, std::string>> tags = ReadIndex(layout);
  if (!tags.ok()) return tags.status();
  auto it = tags->find(tag);
  if (it == tags->end()) {
    return Internal("skopeo copied " + ref.ToString() + " but the layout has no tag " + tag);
  }
  const std::string manifest_digest = it->second;
  if (!IsSha256Digest(manifest_digest)) {
    return FailedPrecondition("manifest digest " + manifest_digest + " of " + ref.ToString() +
                              " is not sha256; the store keys rootfs by sha256");
  }
  GANTRY_RETURN_IF_ERROR(ReadImage(layout, manifest_digest, image));
  // For Lookup(), which must not wait for this lock (a long download of another image).
  GANTRY_RETURN_IF_ERROR(WriteRef(tag, manifest_digest));
  // Pin the manifest by its digest, for Unpack(): the ref's tag may move meanwhile.
  const std::string pin = kPinPrefix + manifest_digest.substr(7);
  if (tags->count(pin)) return Status::Ok();
  Result<ImageTools::Run> tagged =
      tools_->RunTool(ImageTools::Tool::kUmoci, {"tag", "--image", layout + ":" + tag, pin},
                      options_.umoci_timeout_ms, nullptr, nullptr);
  if (!tagged.ok()) return tagged.status();
  if (!tagged->succeeded()) {
    return Internal("umoci tag " + pin + " failed: " + FailureText(tagged->output));
  }
  return Status::Ok();
}

Status ImageStore::Unpack(Image* image, const std::atomic<bool>* cancel,
                          const ProgressFn& progress) {
  const std::string hex = image->digest.substr(7);
  const std::string dest = RootfsDir(hex);
  image->rootfs = dest;
  std::error_code ec;
  if (fs::is_directory(dest, ec)) {  // the common case: no lock needed to reuse it
    rootfs_reused_++;
    if (progress) progress({PullEvent::Kind::kCached, image->digest, "rootfs already unpacked"});
    return Status::Ok();
  }
  Result<FileLock> lock = FileLock::Acquire(dest + ".lock", /*exclusive=*/true, cancel);
  if (!lock.ok()) return lock.status();
  if (fs::is_directory(dest, ec)) {  // unpacked by whoever held the lock
    rootfs_reused_++;
    if (progress) progress({PullEvent::Kind::kCached, image->digest, "rootfs already unpacked"});
    return Status::Ok();
  }
  // Leftovers of an unpack that died (its owner held this lock, so it is gone).
  const std::string tmp_prefix = ".tmp-" + hex + "-";
  for (const fs::directory_entry& e : fs::directory_iterator(RootfsParent(), ec)) {
    if (e.path().filename().string().rfind(tmp_prefix, 0) == 0) fs::remove_all(e.path(), ec);
  }
  const std::string tmp = RootfsParent() + "/" + tmp_prefix + NewId("u", 8);
  if (progress) {
    progress({PullEvent::Kind::kUnpack, image->digest,
              "unpacking " + image->digest.substr(0, 19) + " into " + dest});
  }
  const auto start = SteadyClock::now();
  {
    Result<FileLock> layout_lock =
        FileLock::Acquire(root_ + "/oci.lock", /*exclusive=*/false, cancel);
    if (!layout_lock.ok()) return layout_lock.status();
    std::vector<std::string> args = {"raw", "unpack"};
    if (geteuid() != 0) args.push_back("--rootless");
    if (options_.id_map_host) {  // the ids a container in its user namespace sees as the image's
      const std::string map =
          "0:" + std::to_string(options_.id_map_host) + ":" + std::to_string(options_.id_map_size);
      args.insert(args.end(), {"--uid-map", map, "--gid-map", map});
    }
    args.insert(args.end(), {"--image", LayoutDir() + ":" + kPinPrefix + hex, tmp});
    Result<ImageTools::Run> run = tools_->RunTool(ImageTools::Tool::kUmoci, args,
                                                  options_.unpack_timeout_ms, cancel, nullptr);
    if (!run.ok() || !run->succeeded()) fs::remove_all(tmp, ec);
    if (!run.ok()) return run.status();
    if (!run->succeeded()) return UnpackFailure(*image, *run, options_.unpack_timeout_ms);
  }
  fs::rename(tmp, dest, ec);
  if (ec) {
    const std::string message = ec.message();
    fs::remove_all(tmp, ec);
    return Internal("renaming the unpacked rootfs to " + dest + ": " + message);
  }
  image->unpack_ms = MsSince(start);
  image->unpacked = true;
  unpacks_++;
  if (progress) {
    progress({PullEvent::Kind::kUnpacked, image->digest,
              "unpacked in " + std::to_string(image->unpack_ms) + " ms"});
  }
  return Status::Ok();
}

Result<Image> ImageStore::Ensure(const ImageRef& ref, const PullOptions& options,
                                 const ProgressFn& progress) {
  std::shared_lock<std::shared_mutex> no_removal(pulls_mu_);
  if (!ref.digest.empty() || ref.tag != "latest") {
    Result<Image> image = Lookup(ref);
    if (image.ok()) {
      if (progress) {
        progress(PullEvent{PullEvent::Kind::kCached, image->digest,
                           "using " + ref.ToString() + " as the node has it"});
      }
      return image;
    }
  }
  return PullCounted(ref, options, progress);
}

Status ImageStore::WriteRef(const std::string& tag, const std::string& digest) {
  const std::string path = root_ + "/refs/" + tag;
  const std::string tmp = path + ".tmp-" + NewId("w", 8);
  {
    std::ofstream out(tmp);
    out << digest << "\n";
    out.close();
    if (!out) return Internal("cannot write " + tmp);
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) {
    fs::remove(tmp, ec);
    return Internal("cannot write " + path + ": " + ec.message());
  }
  return Status::Ok();
}

Result<Image> ImageStore::Lookup(const ImageRef& ref) {
  Image image;
  image.ref = ref;
  // Where this store pulled it, the ref's record names its manifest: read without the layout's
  // lock, which a copy holds for the whole download of another image. Manifests and configs
  // are blobs, which nothing changes once written (a concurrent Remove() may delete them: the
  // caller then pulls).
  std::ifstream record(root_ + "/refs/" + ref.LayoutTag());
  std::string recorded;
  if (record >> recorded && IsSha256Digest(recorded)) {
    GANTRY_RETURN_IF_ERROR(ReadImage(LayoutDir(), recorded, &image));
  } else {
    // Pulled by an older agent, or never.
    Result<FileLock> lock = FileLock::Acquire(root_ + "/oci.lock", /*exclusive=*/false, nullptr);
    if (!lock.ok()) return lock.status();
    Result<std::map<std::string, std::string>> tags = ReadIndex(LayoutDir());
    if (!tags.ok()) {
      if (tags.status().code() == Code::kNotFound) {
        return NotFound("image " + ref.ToString() + " was never pulled");
      }
      return tags.status();
    }
    auto it = tags->find(ref.LayoutTag());
    if (it == tags->end()) return NotFound("image " + ref.ToString() + " was never pulled");
    if (!IsSha256Digest(it->second)) return NotFound("image " + ref.ToString() + " has no rootfs");
    GANTRY_RETURN_IF_ERROR(ReadImage(LayoutDir(), it->second, &image));
  }
  image.rootfs = RootfsDir(image.digest.substr(7));
  std::error_code ec;
  if (!fs::is_directory(image.rootfs, ec)) {
    return NotFound("image " + ref.ToString() + " (" + image.digest + ") is not unpacked");
  }
  return image;
}

std::vector<std::string> ImageStore::List() const {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(RootfsParent(), ec)) {
    const std::string name = e.path().filename().string();
    if (e.is_directory(ec) && IsSha256Digest("sha256:" + name)) out.push_back("sha256:" + name);
  }
  std::sort(out.begin(), out.end());
  return out;
}

Status ImageStore::Remove(const std::string& digest, const std::function<bool()>& keep) {
  if (!IsSha256Digest(digest)) {
    return InvalidArgument("\"" + digest + "\" is not a sha256:<64 hex> manifest digest");
  }
  std::unique_lock<std::shared_mutex> no_pulls(pulls_mu_);
  if (keep && keep()) return FailedPrecondition("image " + digest + " is wanted again");
  return RemoveLocked(digest);
}

Status ImageStore::RemoveLocked(const std::string& digest) {
  const std::string hex = digest.substr(7);
  const std::string dest = RootfsDir(hex);
  bool found = false;
  {
    Result<FileLock> lock = FileLock::Acquire(dest + ".lock", /*exclusive=*/true, nullptr);
    if (!lock.ok()) return lock.status();
    std::error_code ec;
    if (fs::is_directory(dest, ec)) {
      // Out of the way first, so that nobody finds a half-removed rootfs.
      const std::string trash = RootfsParent() + "/.tmp-" + hex + "-" + NewId("r", 8);
      fs::rename(dest, trash, ec);
      if (ec) return Internal("moving " + dest + " away: " + ec.message());
      fs::remove_all(trash, ec);
      if (ec) return Internal("removing " + trash + ": " + ec.message());
      found = true;
    }
  }
  Result<FileLock> lock = FileLock::Acquire(root_ + "/oci.lock", /*exclusive=*/true, nullptr);
  if (!lock.ok()) return lock.status();
  std::error_code ec;
  for (const fs::directory_entry& e : fs::directory_iterator(root_ + "/refs", ec)) {
    std::ifstream record(e.path());
    std::string recorded;
    if (record >> recorded && recorded == digest) fs::remove(e.path(), ec);
  }
  Result<std::map<std::string, std::string>> tags = ReadIndex(LayoutDir());
  if (!tags.ok()) {
    if (tags.status().code() == Code::kNotFound) {
      return found ? Status::Ok() : NotFound("the store holds no image " + digest);
    }
    return tags.status();
  }
  bool untagged = false;
  for (const auto& [tag, d] : *tags) {
    if (d != digest) continue;
    Result<ImageTools::Run> run =
        tools_->RunTool(ImageTools::Tool::kUmoci, {"remove", "--image", LayoutDir() + ":" + tag},
                        options_.umoci_timeout_ms, nullptr, nullptr);
    if (!run.ok()) return run.status();
    if (!run->succeeded()) {
      return Internal("umoci remove of tag " + tag + " failed: " + FailureText(run->output));
    }
    untagged = true;
  }
  if (!found && !untagged) return NotFound("the store holds no image " + digest);
  if (untagged) {
    Result<ImageTools::Run> run =
        tools_->RunTool(ImageTools::Tool::kUmoci, {"gc", "--layout", LayoutDir()},
                        options_.umoci_timeout_ms, nullptr, nullptr);
    if (!run.ok()) return run.status();
    if (!run->succeeded()) return Internal("umoci gc failed: " + FailureText(run->output));
  }
  return Status::Ok();
}

}  // namespace gantry::agent::oci
