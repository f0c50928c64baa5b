#pragma once
// Containers: how the agent turns an image worker into a process for its ProcessRuntime.
// Prepare() pulls the image (ImageStore; an image named by digest or by a tag other
// than "latest" is pulled once per node, "latest" at every start), mounts the worker's writable
// overlay on the image's shared read-only rootfs, writes config.json (runtime_spec.h) and returns
// the process spec that runs `runc run` (or `crun run`: ContainersOptions::runtime) in the
// foreground; the process runtime then starts, stops, limits, reaps and logs it like any worker.
// Cleanup() undoes Prepare() once that process has ended.
//
// On disk, under `dir`: <worker id>/{upper,work,rootfs,config.json,image-digest} (the bundle;
// rootfs is the overlay mount point, and runtime.log, the OCI runtime's own messages), state/ (the
// OCI runtime's --root), volumes/<name>/ (named volumes).
//
// Threading: it holds no state but its options (the image store is thread-safe), so calls for
// different workers may run at once: the agent runs each Prepare() on a thread of its own (it
// blocks for the pull and the mount) and the rest on its main loop. Calls for one worker must
// not overlap.

#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "agent/oci/image_store.h"
#include "agent/oci/runtime_spec.h"
#include "agent/process/process_runtime.h"

namespace gantry::agent::oci {

struct ContainerRequest {
  std::string worker_id;
  std::string image;  // a reference, e.g. "127.0.0.1:5000/team/worker:1"
  PullOptions pull;
  std::vector<std::string> command;  // replaces the image's cmd when not empty
  // The worker's environment (RunPod variables, the endpoint's env): added to the image's env,
  // winning over it.
  std::map<std::string, std::string> env;
  double cpu = 0;
  int64_t memory_mb = 0;
  std::string volume;  // a named volume, "" for none
  std::string volume_mount_path = "/runpod-volume";
  bool read_only_rootfs = false;
  std::vector<std::string> devices;  // device nodes for the assigned GPUs
};

struct ContainersOptions {
  // The OCI runtime binary, runc or crun (ChooseOciRuntime); looked up in PATH by the process
  // runtime when it holds no '/'.
  std::string runtime = "runc";
  std::string cgroup_prefix = "gantry";  // the process runtime's (ProcessRuntimeOptions)
  // Containers in a user namespace: ContainerSpec::userns_host/size, which must be the image
  // store's ImageStoreOptions::id_map_host/size. Their writable layer's root and their volumes
  // are given to the mapped root. 0: none.
  uint32_t userns_host = 0, userns_size = 0;
  // Where writable layers go when not in the bundles' directory (which a user namespace's root
  // must traverse, and whose file system may not take an overlay's upper layer): a directory
  // only root reaches, on a file system overlayfs takes as upper. "": in each bundle.
  std::string layers_dir;
};

// The mounts of this host's NVIDIA driver libraries and tools in a GPU container
// (NvidiaDriverMounts of `ldconfig -p`, read once per process; tools from /usr/bin,
// /usr/local/bin and /usr/local/nvidia/bin). Empty without a driver.
std::vector<Mount> HostNvidiaDriverMounts();

class Containers {
 public:
  // `images` (not owned) pulls and unpacks; `dir` holds bundles, the runtime's state and volumes.
  Containers(ImageStore* images, std::string dir, ContainersOptions options = {});

  // The process spec that runs the worker's container (its id is the worker id). Errors: the
  // image store's (NotFound, Unavailable, PermissionDenied, ...), InvalidArgument for an
  // unusable image config, Internal for a failed mount. Nothing is left behind on error.
  Result<ProcessSpec> Prepare(const ContainerRequest& request, const ProgressFn& progress);

  // After the worker's process ended: removes the OCI runtime's state of it, unmounts its
  // overlay and deletes its bundle (its writable layer). Returns the runtime's own error
  // messages about it (e.g. why the container could not start), for the worker's log. Unknown
  // ids are ignored.
  std::vector<std::string> Cleanup(const std::string& worker_id);

  // The manifest digests of the images whose rootfs a worker's bundle has mounted now (read
  // from the bundles on disk, so it is safe to call from any thread).
  std::set<std::string> ImagesInUse() const;

  // Removes what a previous agent left (bundles still mounted, runtime state): call at start.
  void CleanupAll();

 private:
  std::string BundleDir(const std::string& id) const { return dir_ + "/" + id; }
  // Where container `id`'s writable layer (upper/, work/) is: ContainersOptions::layers_dir,
  // else its bundle.
  std::string LayerDir(const std::string& id) const {
    return (options_.layers_dir.empty() ? dir_ : options_.layers_dir) + "/" + id;
  }
  // Makes `id`'s bundle (rootfs/, traversable but not listable by others) and writable layer
  // anew; upper/ owned by `root_id` (the container's root on the host; 0: the host's root).
  Status MakeBundle(const std::string& id, uint32_t root_id) const;

  ImageStore* images_;
  std::string dir_;
  ContainersOptions options_;
};

// The uid and gid of an image's USER ("", "1000", "1000:100", "app", "app:staff"), names looked
// up in the rootfs's /etc/passwd and /etc/group (ReadImageFile). "" is root. NotFound for an
// unknown name; InvalidArgument for an id out of range or a malformed file, naming it.
Result<std::pair<uint32_t, uint32_t>> ResolveUser(const std::string& user,
                                                  const std::string& rootfs);

// The contents of `path` (absolute, as the container sees it) in the image's `rootfs`, for the
// agent to read what an untrusted image holds: symlinks resolve inside `rootfs`, never out of it
// (openat2 RESOLVE_IN_ROOT; where the kernel has no openat2, or with TEST_no_openat2, a symlink
// is refused instead). A regular file of at most `max_bytes` only (a FIFO or device is never
// opened for reading). Errors name the file: NotFound when it is missing, InvalidArgument when
// it is not a regular file, is too large or is a symlink that cannot be resolved safely.
Result<std::string> ReadImageFile(const std::string& rootfs, const std::string& path,
                                  size_t max_bytes, bool TEST_no_openat2 = false);

}  // namespace gantry::agent::oci
