#pragma once
// WorkerSandbox: whom a process worker runs as and which files it gets (docs/security.md).
//
// When the agent is root (and the node was not started with --insecure-same-user), each
// endpoint's workers run as a user of their own: a uid (and a group of the same number) taken
// from the node's range on the endpoint's first start and kept across restarts in
// <state_dir>/worker-uids (0600). Such a worker sees, of Gantry's files, only its own area:
//
//   <dir>/                      root 0711  (traverse only: no listing)
//   <dir>/sdk/                  root 0755  the Python SDK (gantry, runpod), read-only
//   <dir>/<uid>/                root:<uid> 0750
//   <dir>/<uid>/bundles/<d>/    root:<uid> 0750, files 0640 (0750 if executable): read-only
//   <dir>/<uid>/scratch/<name>/ <uid> 0700: a process's private writable directory (HOME,
//                                TMPDIR), made empty at its start and removed at its end
//   <dir>/<uid>/cache/          <uid> 0700: the endpoint's cache, shared by its workers and kept
//                                (GANTRY_CACHE_DIR: model weights; python/: byte code,
//                                PYTHONPYCACHEPREFIX)
//
// The agent's data directory (the server's under `gantry up`) stays 0700: a worker cannot read
// the database, admin.key, the bundle cache, templates or another endpoint's area; another
// endpoint's worker runs as another uid, so its /proc/PID/environ is closed too.
//
// When the agent is not root (and was not started with --insecure-same-user), workers keep its
// user but each runs in user, mount, PID and IPC namespaces of its own with a mount view
// (agent/process/mount_view.h) that holds, of Gantry's files, only its bundle (read-only), its
// endpoint's scratch and cache directories, the SDK and the CA file: not the data directory, not
// other endpoints' files, not other workers' processes. Each endpoint has an area <dir>/<n> of
// its own (n from the same table as the uids, which it stands in for), made by the agent 0700.
//
// Otherwise (--insecure-same-user) workers run as the agent's user, with the same layout under
// the agent's data directory but without owners: the bundle cache is used in place and the SDK
// where it is. describe() says which.
//
// Threading: not thread-safe; the reconciler's thread. Files are the only OS seam, and tests use
// real temporary directories (the uid mode needs root: its tests skip otherwise).

#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>

#include "agent/process/mount_view.h"
#include "common/status.h"

namespace gantry::agent {

struct SandboxOptions {
  // Run workers as the agent's own user even when it is root: a single-user machine that wants
  // today's behaviour. Default: false.
  bool same_user = false;
  // The workers' area (see above). Must not be inside a directory others cannot traverse when
  // workers run as their own users. Required.
  std::string dir;
  // Where the endpoint → uid table is kept (the agent's data directory). Required.
  std::string state_dir;
  // The SDK's directory (holding gantry/ and runpod/): copied into <dir>/sdk when workers run
  // as their own users. "" for none.
  std::string sdk_path;
  // The CA certificates workers trust for https:// ($GANTRY_CA_FILE): copied into <dir>/ca.pem
  // (readable by all) when workers run as users of their own. "" for none.
  std::string ca_file;
  // The range uids are taken from: [uid_first, uid_first + uid_count).
  int uid_first = 200'000;
  int uid_count = 100'000;
  // Whether the agent runs as root (injected for tests). Default: geteuid() == 0.
  bool root = false;
};

class WorkerSandbox {
 public:
  // Who runs a worker: uid/gid -1 for the agent's own user.
  struct Identity {
    int uid = -1;
    int gid = -1;
    std::string area;   // <dir>/<uid> or <dir>/<n>; <dir> with --insecure-same-user
    bool view = false;  // in namespaces of its own, with a mount view (View())
  };

  // Makes the area, removes scratch directories left by a previous agent (its workers died
  // with it; those named "template-..." stay, for templates restored from snapshots), copies
  // the SDK and loads the uid table. Errors name the directory at fault.
  static Result<std::unique_ptr<WorkerSandbox>> Open(SandboxOptions options);

  // Whether workers run as users of their own; in namespaces with a mount view.
  bool separate_users() const { return mode_ == Mode::kSeparateUsers; }
  bool namespaces() const { return mode_ == Mode::kNamespaces; }
  // For `gantry nodes` and the log: "uid per endpoint (200000-299999)", "namespaces per
  // worker (agent not root)" or "agent's user: --insecure-same-user".
  std::string describe() const;
  // The SDK's directory as workers see it ("" for none).
  const std::string& sdk_path() const { return sdk_; }

  // The user `endpoint_id`'s workers run as; a new uid on its first call (ResourceExhausted
  // when the range is used up).
  Result<Identity> UserFor(const std::string& endpoint_id);
  // The bundle `digest` as `who` sees it: a read-only copy of `cached` (the agent's unpacked
  // bundle) in its area, made once; `cached` itself without users of their own.
  Result<std::string> Bundle(const Identity& who, const std::string& digest,
                             const std::string& cached);
  // The mount view of a process of `who` whose bundle is `bundle` ("" for none); nullopt unless
  // `who` runs in one.
  std::optional<MountView> View(const Identity& who, const std::string& bundle) const;
  // A new, empty, private writable directory for process `name` of `who`.
  Result<std::string> Scratch(const Identity& who, const std::string& name);
  // Scratch directories named so survive an agent's restart (a template restored from its
  // snapshot comes back in its own); the others are removed by the next agent.
  static constexpr std::string_view kKeptScratchPrefix = "template-";
  // Removes the scratch directory of `name` (nothing if it has none).
  void RemoveScratch(const std::string& name);
  // Sets in `env` what a worker of `who` with scratch directory `scratch` needs, unless `own`
  // (the endpoint's variables) sets it: HOME and TMPDIR (the scratch directory),
  // GANTRY_CACHE_DIR (its area's cache), PYTHONPYCACHEPREFIX (in that cache, when it runs as a
  // user of its own); GANTRY_SCRATCH; and GANTRY_CA_FILE (the CA file, or its copy) when there
  // is one.
  void Environment(const Identity& who, const std::string& scratch,
                   const std::map<std::string, std::string>& own,
                   std::map<std::string, std::string>* env) const;

 private:
  enum class Mode { kSeparateUsers, kNamespaces, kSameUser };

  explicit WorkerSandbox(SandboxOptions options) : options_(std::move(options)) {}
  Status Init();
  Status SaveUsers() const;
  // Removes the scratch directories a previous agent's workers left (they died with it), but
  // those of templates (kKeptScratchPrefix).
  void RemoveLeftoverScratch() const;
  // Makes `path` a directory with `mode`, owned by uid:gid (-1: unchanged).
  Status MakeDir(const std::string& path, int mode, int uid, int gid) const;

  SandboxOptions options_;
  Mode mode_ = Mode::kSameUser;
  std::string sdk_;
  std::string ca_;                              // the CA file workers are given ("" for none)
  std::map<std::string, int> users_;            // endpoint id → uid
  std::set<int> prepared_;                      // uids whose area this agent has made
  std::map<std::string, std::string> scratch_;  // process name → its scratch directory
};

}  // namespace gantry::agent
