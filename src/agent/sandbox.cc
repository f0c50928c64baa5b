#include "agent/sandbox.h"

#include <sched.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <vector>

#include "common/env.h"
#include "common/fd.h"
#include "common/files.h"
#include "common/json.h"
#include "common/log.h"

namespace gantry::agent {
namespace {

namespace fs = std::filesystem;

constexpr char kUsersFile[] = "worker-uids";

// The first directory from the root down to `path` that others may not traverse, or "".
std::string ClosedAncestor(const fs::path& path) {
  fs::path at;
  for (const auto& part : path) {
    at /= part;
    struct stat st {};
    if (stat(at.c_str(), &st) != 0) return "";  // made later, by us
    if (!(st.st_mode & S_IXOTH)) return at.string();
  }
  return "";
}

// Copies the tree `from` (trusted: the agent's own) to the new directory `to`: directories
// `dir_mode`, files `file_mode` (`exec_mode` where the original is executable by its owner), all
// owned by uid:gid (-1: unchanged). Regular files and directories only.
Status CopyTree(const fs::path& from, const fs::path& to, int uid, int gid, mode_t dir_mode,
                mode_t file_mode, mode_t exec_mode, const std::set<std::string>& skip = {}) {
  if (mkdir(to.c_str(), dir_mode) != 0 || chmod(to.c_str(), dir_mode) != 0 ||
      lchown(to.c_str(), uid, gid) != 0) {
    return ErrnoStatus("mkdir " + to.string(), errno);
  }
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(from, ec)) {
    const std::string name = e.path().filename().string();
    if (skip.count(name)) continue;
    const fs::path dest = to / name;
    if (e.is_directory(ec) && !e.is_symlink(ec)) {
      GANTRY_RETURN_IF_ERROR(
          CopyTree(e.path(), dest, uid, gid, dir_mode, file_mode, exec_mode, skip));
      continue;
    }
    if (!e.is_regular_file(ec) || e.is_symlink(ec)) continue;
    // A copy made again if lost (nothing to fsync), in a directory nobody else may write yet.
    struct stat st {};
    const bool exec = stat(e.path().c_str(), &st) == 0 && (st.st_mode & S_IXUSR);
    if (!fs::copy_file(e.path(), dest, ec)) {
      return Unavailable("cannot copy " + e.path().string() + ": " + ec.message());
    }
    if (chmod(dest.c_str(), exec ? exec_mode : file_mode) != 0 ||
        lchown(dest.c_str(), uid, gid) != 0) {
      return ErrnoStatus("chmod/chown " + dest.string(), errno);
    }
  }
  if (ec) return Unavailable("cannot read " + from.string() + ": " + ec.message());
  return Status::Ok();
}

// Whether this process may make the namespaces of a mount view.
Status CheckNamespaces() {
  const int err = TryUnshare(kViewCloneFlags);
  if (err == 0) return Status::Ok();
  return FailedPrecondition(
      std::string("workers run in user namespaces of their own when the agent is not root, and "
                  "this host refuses them (") +
      strerror(err) +
      "): allow unprivileged user namespaces (sysctl user.max_user_namespaces, "
      "kernel.apparmor_restrict_unprivileged_userns=0), run the agent as root, or "
      "--insecure-same-user on a single-user machine");
}

constexpr char kViewRoot[] = "root";  // <dir>/root: where each worker's view is mounted

// The device nodes of the host's GPUs, which a worker in a mount view sees.
std::vector<std::string> GpuDevices() {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/dev", ec)) {
    const std::string name = e.path().filename().string();
    if (name.starts_with("nvidia")) out.push_back(e.path().string());
  }
  return out;
}

}  // namespace

Result<std::unique_ptr<WorkerSandbox>> WorkerSandbox::Open(SandboxOptions options) {
  if (options.dir.empty() || options.state_dir.empty()) {
    return InvalidArgument("the worker sandbox needs a directory and a state directory");
  }
  if (options.uid_first < 1000 || options.uid_count < 1 ||
      static_cast<int64_t>(options.uid_first) + options.uid_count > (int64_t{1} << 31)) {
    return InvalidArgument("bad worker uid range " + std::to_string(options.uid_first) + "+" +
                           std::to_string(options.uid_count));
  }
  std::unique_ptr<WorkerSandbox> s(new WorkerSandbox(std::move(options)));
  GANTRY_RETURN_IF_ERROR(s->Init());
  return s;
}

Status WorkerSandbox::Init() {
  mode_ = options_.same_user ? Mode::kSameUser
          : options_.root    ? Mode::kSeparateUsers
                             : Mode::kNamespaces;
  const bool separate = mode_ == Mode::kSeparateUsers;
  const fs::path dir = fs::absolute(options_.dir);
  options_.dir = dir.string();
  if (mode_ == Mode::kNamespaces) GANTRY_RETURN_IF_ERROR(CheckNamespaces());
  if (separate) {
    if (std::string closed = ClosedAncestor(dir.parent_path()); !closed.empty()) {
      return FailedPrecondition("workers run as users of their own and cannot reach " +
                                options_.dir + ": " + closed +
                                " is closed to other users (choose another --worker-dir, or "
                                "--insecure-same-user on a single-user machine)");
    }
  }
  auto made = MakePrivateDir(options_.dir, separate ? 0711 : 0700);
  if (!made.ok()) return made.status();
  if (mode_ == Mode::kNamespaces) {
    GANTRY_RETURN_IF_ERROR(MakeDir(options_.dir + "/" + kViewRoot, 0700, -1, -1));
  }
  if (mode_ == Mode::kSameUser) {  // one area, the agent's: its directories made here, once
    GANTRY_RETURN_IF_ERROR(MakeDir(options_.dir + "/cache", 0700, -1, -1));
    GANTRY_RETURN_IF_ERROR(MakeDir(options_.dir + "/scratch", 0700, -1, -1));
  }
  RemoveLeftoverScratch();
  // The endpoint → uid table.
  std::ifstream in(options_.state_dir + "/" + kUsersFile);
  if (in) {
    std::stringstream text;
    text << in.rdbuf();
    auto v = ParseJson(text.str());
    if (!v.ok() || !v->is_object()) {
      return FailedPrecondition(options_.state_dir + "/" + kUsersFile + " is damaged");
    }
    for (const auto& [endpoint, uid] : v->as_object()) {
      if (auto n = AsInt(uid)) users_[std::string(endpoint)] = static_cast<int>(*n);
    }
  }
  // The CA file, where workers of other users can read it (a certificate is no secret).
  ca_ = options_.ca_file;
  if (separate && !ca_.empty()) {
    std::ifstream ca(ca_, std::ios::binary);
    std::stringstream pem;
    pem << ca.rdbuf();
    if (!ca) return Unavailable("cannot read the CA file " + ca_);
    GANTRY_RETURN_IF_ERROR(ReplaceFile(options_.dir + "/ca.pem", pem.str(), 0644));
    ca_ = options_.dir + "/ca.pem";
  }
  // The SDK, where workers of other users can read it.
  std::error_code ec;
  sdk_ = options_.sdk_path;
  if (separate && !sdk_.empty() && fs::is_directory(sdk_, ec)) {
    const std::string tmp = options_.dir + "/sdk.tmp-" + NewId("", 8);
    Status st = Status::Ok();
    if (Status m = MakeDir(tmp, 0755, 0, 0); !m.ok()) st = m;
    for (const char* pkg : {"gantry", "runpod"}) {
      if (!st.ok() || !fs::is_directory(fs::path(sdk_) / pkg, ec)) continue;
      st = CopyTree(fs::path(sdk_) / pkg, fs::path(tmp) / pkg, 0, 0, 0755, 0644, 0755,
                    {"__pycache__"});
    }
    if (st.ok()) {
      if (Status old = RemoveTree(options_.dir + "/sdk"); !old.ok()) st = old;
    }
    if (st.ok() && rename(tmp.c_str(), (options_.dir + "/sdk").c_str()) != 0) {
      st = ErrnoStatus("rename " + tmp, errno);
    }
    if (!st.ok()) {
      (void)RemoveTree(tmp);
      return Unavailable("cannot copy the SDK for workers: " + st.message());
    }
    sdk_ = options_.dir + "/sdk";
  }
  return Status::Ok();
}

void WorkerSandbox::RemoveLeftoverScratch() const {
  // Scratch directories of a previous agent's workers: they died with it. Templates' stay: a
  // template restored from its snapshot comes back in its own.
  std::error_code ec;
  std::vector<fs::path> areas = {options_.dir};
  for (const auto& e : fs::directory_iterator(options_.dir, ec)) {
    if (e.is_directory(ec) && !e.is_symlink(ec)) areas.push_back(e.path());
  }
  for (const fs::path& area : areas) {
    const fs::path scratch = area / "scratch";
    if (!fs::is_directory(fs::symlink_status(scratch, ec))) continue;
    for (const auto& e : fs::directory_iterator(scratch, ec)) {
      if (e.path().filename().string().starts_with(kKeptScratchPrefix)) continue;
      if (Status st = RemoveTree(e.path().string()); !st.ok()) {
        GLOG_WARN("sandbox: %s", st.ToString().c_str());
      }
    }
  }
}

std::string WorkerSandbox::describe() const {
  if (mode_ == Mode::kNamespaces) return "namespaces per worker (agent not root)";
  if (mode_ == Mode::kSeparateUsers) {
    return "uid per endpoint (" + std::to_string(options_.uid_first) + "-" +
           std::to_string(options_.uid_first + options_.uid_count - 1) + ")";
  }
  return "agent's user: --insecure-same-user";
}

Status WorkerSandbox::SaveUsers() const {
  json::object o;
  for (const auto& [endpoint, uid] : users_) o[endpoint] = uid;
  return ReplaceFile(options_.state_dir + "/" + kUsersFile, ToJson(json::value(o)) + "\n", 0600);
}

Status WorkerSandbox::MakeDir(const std::string& path, int mode, int uid, int gid) const {
  if (mkdir(path.c_str(), static_cast<mode_t>(mode)) != 0 && errno != EEXIST) {
    return ErrnoStatus("mkdir " + path, errno);
  }
  // Made by us, or by a previous agent: never a link a worker planted (areas are root's).
  struct stat st {};
  if (lstat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return FailedPrecondition(path + " is not a directory");
  }
  if (chmod(path.c_str(), static_cast<mode_t>(mode)) != 0 ||
      ((uid >= 0 || gid >= 0) && lchown(path.c_str(), uid, gid) != 0)) {
    return ErrnoStatus("chmod/chown " + path, errno);
  }
  return Status::Ok();
}

Result<WorkerSandbox::Identity> WorkerSandbox::UserFor(const std::string& endpoint_id) {
  if (mode_ == Mode::kSameUser) return Identity{-1, -1, options_.dir};
  auto it = users_.find(endpoint_id);
  if (it == users_.end()) {
    std::set<int> taken;
    for (const auto& [e, uid] : users_) taken.insert(uid);
    int uid = -1;
    for (int i = 0; i < options_.uid_count && uid < 0; ++i) {
      if (!taken.count(options_.uid_first + i)) uid = options_.uid_first + i;
    }
    if (uid < 0) return ResourceExhausted("no worker uid left in the node's range");
    users_[endpoint_id] = uid;
    if (Status st = SaveUsers(); !st.ok()) {
      users_.erase(endpoint_id);
      return Unavailable("cannot record the uid of endpoint " + endpoint_id + ": " + st.message());
    }
    GLOG_INFO("sandbox: endpoint %s %s %d", endpoint_id.c_str(),
              separate_users() ? "runs as uid" : "has area", uid);
    it = users_.find(endpoint_id);
  }
  const int n = it->second;
  if (mode_ == Mode::kNamespaces) {  // the agent's user, an area of its own
    Identity who{-1, -1, options_.dir + "/" + std::to_string(n), /*view=*/true};
    if (!prepared_.count(n)) {
      for (const char* sub : {"", "/scratch", "/cache"}) {
        GANTRY_RETURN_IF_ERROR(MakeDir(who.area + sub, 0700, -1, -1));
      }
      prepared_.insert(n);
    }
    return who;
  }
  Identity who{n, n, options_.dir + "/" + std::to_string(n)};
  if (!prepared_.count(who.uid)) {  // once per uid and agent, not at every start
    GANTRY_RETURN_IF_ERROR(MakeDir(who.area, 0750, 0, who.gid));
    GANTRY_RETURN_IF_ERROR(MakeDir(who.area + "/bundles", 0750, 0, who.gid));
    GANTRY_RETURN_IF_ERROR(MakeDir(who.area + "/scratch", 0750, 0, who.gid));
    GANTRY_RETURN_IF_ERROR(MakeDir(who.area + "/cache", 0700, who.uid, who.gid));
    prepared_.insert(who.uid);
  }
  return who;
}

Result<std::string> WorkerSandbox::Bundle(const Identity& who, const std::string& digest,
                                          const std::string& cached) {
  if (who.uid < 0) return cached;
  const std::string root = who.area + "/bundles/" + digest;
  std::error_code ec;
  if (fs::is_directory(fs::symlink_status(root, ec))) return root;
  const std::string tmp = root + ".tmp-" + NewId("", 8);
  Status st = CopyTree(cached, tmp, 0, who.gid, 0750, 0640, 0750);
  if (st.ok() && rename(tmp.c_str(), root.c_str()) != 0) st = ErrnoStatus("rename " + tmp, errno);
  if (!st.ok()) {
    (void)RemoveTree(tmp);
    return Unavailable("cannot give the bundle to uid " + std::to_string(who.uid) + ": " +
                       st.message());
  }
  return root;
}

std::optional<MountView> WorkerSandbox::View(const Identity& who, const std::string& bundle) const {
  if (!who.view) return std::nullopt;
  MountView v;
  v.root = options_.dir + "/" + kViewRoot;
  if (!bundle.empty()) v.binds.push_back({bundle, false});
  // The endpoint's scratch directories, not just the process's: a template's view serves the
  // workers forked from it, whose directories are made later.
  v.binds.push_back({who.area + "/scratch", true});
  v.binds.push_back({who.area + "/cache", true});
  std::error_code ec;
  if (!sdk_.empty() && fs::is_directory(sdk_, ec)) v.binds.push_back({sdk_, false});
  if (!ca_.empty()) v.binds.push_back({ca_, false});
  v.devices = GpuDevices();
  return v;
}

Result<std::string> WorkerSandbox::Scratch(const Identity& who, const std::string& name) {
  if (name.empty() || name.find('/') != std::string::npos || name[0] == '.') {
    return InvalidArgument("bad scratch name '" + name + "'");
  }
  const std::string path = who.area + "/scratch/" + name;
  GANTRY_RETURN_IF_ERROR(RemoveTree(path));
  GANTRY_RETURN_IF_ERROR(MakeDir(path, 0700, who.uid, who.gid));
  scratch_[name] = path;
  return path;
}

void WorkerSandbox::RemoveScratch(const std::string& name) {
  auto it = scratch_.find(name);
  if (it == scratch_.end()) return;
  if (Status st = RemoveTree(it->second); !st.ok()) {
    GLOG_WARN("sandbox: %s", st.ToString().c_str());
  }
  scratch_.erase(it);
}

void WorkerSandbox::Environment(const Identity& who, const std::string& scratch,
                                const std::map<std::string, std::string>& own,
                                std::map<std::string, std::string>* env) const {
  (*env)["GANTRY_SCRATCH"] = scratch;
  if (!ca_.empty() && !own.count("GANTRY_CA_FILE")) (*env)["GANTRY_CA_FILE"] = ca_;
  // The agent's HOME and TMPDIR (passed on by default) are not the worker's to write in.
  for (const char* name : {"HOME", "TMPDIR"}) {
    if (!own.count(name)) (*env)[name] = scratch;
  }
  // The endpoint's cache, kept across its workers: model weights (gantry.weights) and, when
  // the bundle is read-only to it, Python's byte code.
  if (!own.count("GANTRY_CACHE_DIR")) (*env)["GANTRY_CACHE_DIR"] = who.area + "/cache";
  if ((who.uid >= 0 || who.view) && !own.count("PYTHONPYCACHEPREFIX")) {
    (*env)["PYTHONPYCACHEPREFIX"] = who.area + "/cache/python";
  }
}

}  // namespace gantry::agent
