#pragma once
// ImageStore: the node agent's store of OCI images. It fetches images from a registry
// into one content-addressed OCI image layout on the node, and unpacks each image once into a
// cached root filesystem that every container worker of that image shares read-only (the
// runtime, runtime_spec.h, puts a per-worker writable overlay on top).
//
// The real tools do the work: skopeo (1.9) copies from the registry into the layout, umoci
// (0.4.7) unpacks. Both are run through the ImageTools seam (STYLE.md §2): tests fake it.
//
// On disk, under the root directory given to Open():
//   oci/                  one OCI image layout (index.json, blobs/sha256/<hex>) for every image
//                         pulled: blobs are stored by digest, so a layer shared by two images or
//                         two tags is stored (and downloaded) once. Each pulled reference is a
//                         tag named by ImageRef::LayoutTag(); each manifest that was unpacked
//                         also has the tag "sha256_<hex>" (pinned, so that a tag moved by a
//                         concurrent pull cannot change what is unpacked).
//   oci.lock              flock()ed exclusively while skopeo or umoci write the layout, shared
//                         while it is read or unpacked from (skopeo does not lock it itself).
//   rootfs/<hex>/         the unpacked root filesystem of the manifest sha256:<hex>. Built in
//                         rootfs/.tmp-<hex>-<random>/ and renamed into place, so it is complete
//                         whenever it exists. Never changed afterwards: mount it read-only.
//   rootfs/<hex>.lock     flock()ed while that rootfs is built or removed.
//   tmp/                  skopeo's temporary files and the short-lived registry auth files
//                         (mode 0700).
//   refs/<tag>            the manifest digest a layout tag named when this store pulled it,
//                         so that Lookup() reads no index.json and so takes no layout lock
//                         (a copy holds it for a whole download).
// The locks are file locks, so pulls from several threads, and from several processes sharing
// the root, are safe: a second Pull of an image being unpacked waits and then reuses the rootfs.
// Copies into the layout are serialised (the layout's index.json is rewritten by each copy), so
// a long pull delays the copy step of others; unpacks of different images run in parallel with
// each other, but a copy waits for the unpacks running when it starts (they read the layout).
//
// Threading: every method is thread-safe and blocks the calling thread (network, disk, child
// processes); call them off the agent's event loop.
// Errors (values, never exceptions): see each method.
// Limits: umoci 0.4.7 cannot unpack zstd-compressed layers (the pull then fails at unpack with
// umoci's message); only the host's platform of a multi-platform image is pulled (skopeo's
// choice); image signatures are not verified (skopeo runs with --insecure-policy, so the host's
// /etc/containers/policy.json is not consulted); nothing is evicted on its own: Remove() is the
// garbage collection, called by the agent (image_gc.h decides what).

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <vector>

#include "agent/oci/image_ref.h"
#include "common/status.h"

namespace gantry::agent::oci {

// An image in the store: what the agent needs to run a container of it.
struct Image {
  ImageRef ref;
  // Digest of the OCI manifest in the store's layout ("sha256:<hex>"). When the registry served
  // a Docker v2 manifest, skopeo converted it, and this differs from the registry's digest.
  std::string digest;
  // From the image's config blob ("config" of the OCI image config); empty when unset.
  std::vector<std::string> entrypoint;
  std::vector<std::string> cmd;
  std::vector<std::string> env;  // "NAME=value", in the image's order
  std::string working_dir;
  std::string user;  // as written in the image: "", "1000", "app", "1000:1000", "app:staff"
  std::string os, architecture;
  // Absolute path of the unpacked root filesystem (<root>/rootfs/<hex>); shared, never written.
  std::string rootfs;
  // How long this Pull's steps took, in milliseconds: the copy from the registry (including
  // waiting for another pull's copy, and reading the manifest and config), and the unpack (0
  // when an unpacked rootfs was reused).
  int64_t copy_ms = 0;
  int64_t unpack_ms = 0;
  bool unpacked = false;  // this call unpacked the rootfs (false: it was already there)
};

struct RegistryCredentials {
  std::string username;
  std::string password;
};

struct PullOptions {
  // Registry credentials. They reach skopeo in an auth file (mode 0600, deleted when the copy
  // ends), never on its command line, and never appear in logs, events or error messages.
  // Default: none; the registry is accessed anonymously (skopeo's --src-no-creds, so that no
  // auth file of the agent's user is used either).
  std::optional<RegistryCredentials> credentials;
  // Reach a non-loopback registry over plain HTTP or unverified TLS. Default: false (TLS with
  // certificate verification). Loopback registries never need it.
  bool insecure = false;
  // Set to true (from any thread) to stop the pull: the running tool is killed and Pull()
  // returns Unavailable "... cancelled". Not owned; must outlive the call. Default: none.
  const std::atomic<bool>* cancel = nullptr;
};

// A step of a pull, for the agent's pull events and the CLI's progress. `text` is one human-
// readable line ("copying blob sha256:608b03352fa6 (2)", "unpacking ...").
struct PullEvent {
  enum class Kind {
    kStart,     // the copy starts
    kBlob,      // skopeo copies (or, when present, skips) a layer; digest set
    kConfig,    // skopeo copies the config blob; digest set
    kManifest,  // the manifest is written
    kMessage,   // another line of skopeo's output (e.g. a warning)
    kCached,    // the unpacked rootfs is already there; digest = the manifest's
    kUnpack,    // unpacking starts; digest = the manifest's
    kUnpacked,  // unpacking is done
    kDone,      // the pull succeeded (not sent on failure)
  };
  Kind kind = Kind::kMessage;
  std::string digest;
  std::string text;
};

// Called on the thread that called Pull(), synchronously, in order. May be empty.
using ProgressFn = std::function<void(const PullEvent&)>;

// The two tools, as one OS seam. Run() must be thread-safe (the store calls it from any thread
// that calls the store).
class ImageTools {
 public:
  enum class Tool { kSkopeo, kUmoci };

  struct Run {
    int exit_code = 0;       // -1 when it was killed by a signal
    bool timed_out = false;  // killed after its time limit
    bool cancelled = false;  // killed because *cancel became true
    std::string output;      // stdout and stderr, interleaved; at most the last 64 KiB
    bool succeeded() const { return exit_code == 0 && !timed_out && !cancelled; }
  };

  virtual ~ImageTools() = default;

  // Runs `tool` with `args` (its argv after the program name) to completion, with stdin on
  // /dev/null; kills it after `timeout_ms` or once `cancel` (may be null) reads true. Calls
  // `on_line` (may be empty) with each line of its output, without the newline, as it comes.
  // A non-ok Status only when the tool cannot be run at all (FailedPrecondition: not installed)
  // or waited for (Internal); a tool that fails is an ok Result with its exit code and output.
  virtual Result<Run> RunTool(Tool tool, const std::vector<std::string>& args, int64_t timeout_ms,
                              const std::atomic<bool>* cancel,
                              const std::function<void(std::string_view)>& on_line) = 0;
};

struct SystemImageToolsOptions {
  // The binaries; a name without '/' is looked up in PATH when the tools are made.
  // Default: "skopeo" and "umoci" (Debian's packages, installed by scripts/setup.sh).
  std::string skopeo = "skopeo";
  std::string umoci = "umoci";
};

// The real tools: posix_spawn() of the binary with stdin on /dev/null, stdout and stderr on one
// pipe, no other descriptor of the agent, default signal dispositions, and an environment of
// PATH, LC_ALL=C, HOME and the agent's proxy variables (HTTP_PROXY, HTTPS_PROXY, NO_PROXY, in
// either case) only. It waits for the pid it spawned and nothing else (waitpid on that pid),
// so the agent's precondition is as for the process runtime: SIGCHLD is not ignored and nothing
// reaps with waitpid(-1).
std::unique_ptr<ImageTools> NewSystemImageTools(SystemImageToolsOptions options = {});

struct ImageStoreOptions {
  // Time limit of one skopeo copy; past it, skopeo is killed and Pull() fails with
  // DeadlineExceeded. Default: 1 h.
  int64_t copy_timeout_ms = 3'600'000;
  // Time limit of one unpack. Default: 30 min.
  int64_t unpack_timeout_ms = 1'800'000;
  // Time limit of the small umoci calls (tag, remove, gc). Default: 10 min (gc reads the
  // whole layout).
  int64_t umoci_timeout_ms = 600'000;
  // Unpack each rootfs with its ids shifted (umoci --uid-map/--gid-map 0:HOST:SIZE): the image's
  // id N is owned on the host by id_map_host + N, as a container in a user namespace of that
  // mapping sees it as N. Such rootfs are kept apart (rootfs-<host>/, not rootfs/). 0: the
  // image's own ids.
  uint32_t id_map_host = 0;
  uint32_t id_map_size = 65536;
};

class ImageStore {
 public:
  // A store rooted at `root` (created if missing; an absolute path without ':'). `tools` is
  // not owned and must outlive the store. InvalidArgument for a bad root, else the error of
  // creating its directories.
  static Result<std::unique_ptr<ImageStore>> Open(const std::string& root, ImageTools* tools,
                                                  ImageStoreOptions options = {});

  // Fetches `ref` into the layout (only blobs not already there are downloaded), reads its
  // config, and unpacks its rootfs unless it is already unpacked. Calls `progress` on the way.
  // Errors, each quoting what the registry or the tool said (never the credentials):
  //   NotFound          the repository, tag or digest does not exist ("manifest unknown", ...)
  //   Unavailable       the registry cannot be reached (connection refused, no such host,
  //                     timeouts, 5xx), or the pull was cancelled: retry later
  //   PermissionDenied  the registry refused the credentials, or wants some
  //   FailedPrecondition TLS problems (an HTTP registry without `insecure`, a bad certificate),
  //                     a tool missing, an image the store cannot use (no manifest for this
  //                     platform, a layer umoci cannot unpack)
  //   DeadlineExceeded  skopeo or umoci ran past its time limit
  //   Internal          anything else (the tool's output quoted)
  // A failed Pull leaves no partial rootfs; blobs it downloaded stay (a retry reuses them).
  Result<Image> Pull(const ImageRef& ref, const PullOptions& options, const ProgressFn& progress);

  // The image by the pull policy (Kubernetes' default, IfNotPresent except for "latest"): an
  // image named by digest or by a tag other than "latest" is used as the node has it (Lookup;
  // `progress` then gets one kCached event), otherwise, and for "latest" always, it is pulled
  // (Pull, with its errors).
  Result<Image> Ensure(const ImageRef& ref, const PullOptions& options, const ProgressFn& progress);

  // The image `ref` as the last successful Pull left it, without touching the network, and
  // without waiting for a copy of another image (refs/). NotFound when it was never pulled or
  // its rootfs is not unpacked (anymore).
  Result<Image> Lookup(const ImageRef& ref);

  // Removes the unpacked rootfs of the manifest `digest` ("sha256:<hex>"), every tag of the
  // layout that names that manifest, and then every blob no other tag reaches (umoci gc). The
  // caller makes sure no container uses the rootfs any more (the store does not track users).
  // It waits for the Pull() and Ensure() calls of this store that are running, and holds new
  // ones until it returns, so that no pull sees a half-removed image (one that starts after it
  // fetches the image again); then it asks `keep` (may be empty), and leaves the image as it is
  // when that answers true (FailedPrecondition): the caller checks there that nothing started
  // to want the image meanwhile. The rootfs's lock file stays (empty; removing it would break
  // the lock for waiters). NotFound when the store holds neither a rootfs nor a tag of it;
  // InvalidArgument for a malformed digest.
  Status Remove(const std::string& digest, const std::function<bool()>& keep = {});

  // The manifest digests ("sha256:<hex>") whose rootfs is unpacked in the store, sorted.
  std::vector<std::string> List() const;

  // Counters since Open(), for /v1/nodes and tests. Thread-safe.
  struct Counters {
    int64_t pulls = 0;  // successful Pull() calls
    int64_t pull_failures = 0;
    int64_t unpacks = 0;        // rootfs unpacked
    int64_t rootfs_reused = 0;  // Pull() calls that found the rootfs unpacked
  };
  Counters counters() const;

  const std::string& root() const { return root_; }
  std::string LayoutDir() const { return root_ + "/oci"; }
  // Records (atomically) that the layout's `tag` names manifest `digest`: refs/<tag>.
  Status WriteRef(const std::string& tag, const std::string& digest);
  // Where unpacked rootfs are: rootfs/, or rootfs-<host>/ with ImageStoreOptions::id_map_host.
  std::string RootfsParent() const {
    return root_ + (options_.id_map_host ? "/rootfs-" + std::to_string(options_.id_map_host)
                                         : std::string("/rootfs"));
  }
  std::string RootfsDir(const std::string& digest_hex) const {
    return RootfsParent() + "/" + digest_hex;
  }

 private:
  ImageStore(std::string root, ImageTools* tools, ImageStoreOptions options);

  // Pull() without taking pulls_mu_ (its caller holds it).
  Result<Image> PullCounted(const ImageRef& ref, const PullOptions& options,
                            const ProgressFn& progress);
  Result<Image> PullImpl(const ImageRef& ref, const PullOptions& options,
                         const ProgressFn& progress);
  Status RemoveLocked(const std::string& digest);
  // Runs skopeo copy (`args`) under the layout's exclusive lock, then reads the manifest and
  // config it copied into *image, records the ref (WriteRef) and pins the manifest by digest.
  // Every text that reaches progress or an error goes through `redact`.
  Status CopyIntoLayout(const ImageRef& ref, const std::vector<std::string>& args,
                        const std::atomic<bool>* cancel,
                        const std::function<std::string(std::string)>& redact,
                        const ProgressFn& progress, Image* image);
  Status Unpack(Image* image, const std::atomic<bool>* cancel, const ProgressFn& progress);

  const std::string root_;
  ImageTools* const tools_;
  const ImageStoreOptions options_;
  std::atomic<int64_t> pulls_{0}, pull_failures_{0}, unpacks_{0}, rootfs_reused_{0};
  // Held shared by each Pull() and Ensure(), exclusively by Remove().
  std::shared_mutex pulls_mu_;
};

}  // namespace gantry::agent::oci
