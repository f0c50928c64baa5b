// deploy: a directory as a code bundle (content-addressed blobs), or a container image, into an
// endpoint created or updated from DIR/gantry.toml and the flags.

#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "cli/client.h"
#include "cli/commands.h"
#include "cli/format.h"
#include "cli/toml.h"
#include "http/http.h"
#include "scheduling/endpoint_spec.h"

namespace gantry::cli {
namespace {

namespace fs = std::filesystem;

struct DeployFlags {
  std::string dir, id, image;
  bool no_wait = false;
  int wait_s = 600;  // how long to follow an image's pull
};

// The endpoint spec to deploy: DIR/gantry.toml (none is fine with --image), its id from --id,
// else the file, else DIR's name, and --image over it. Sets *dir to DIR, absolute. nullopt
// (message printed) on bad input: no such directory, a gantry.toml that does not parse or
// holds a field no spec has (caught here, before anything is uploaded).
std::optional<json::object> LoadSpec(const Context& ctx, const DeployFlags& f, fs::path* dir) {
  Result<json::object> spec = json::object{};
  if (!f.dir.empty()) {
    *dir = fs::absolute(f.dir).lexically_normal();
    if (dir->filename().empty()) *dir = dir->parent_path();
    if (!fs::is_directory(*dir)) {
      ctx.PrintError(fs::exists(*dir) ? "gantry: %s is not a directory\n"
                                      : "gantry: directory %s does not exist\n",
                     f.dir.c_str());
      return std::nullopt;
    }
    std::string toml_path = (*dir / "gantry.toml").string();
    if (fs::exists(toml_path)) {
      spec = ParseToml(ReadFile(toml_path));
    } else if (f.image.empty()) {
      ctx.PrintError("gantry: %s not found\n", toml_path.c_str());
      return std::nullopt;
    }
    if (!spec.ok()) {
      ctx.PrintError("gantry: %s\n", spec.status().message().c_str());
      return std::nullopt;
    }
    if (Status st = scheduling::CheckSpecFieldNames(*spec); !st.ok()) {
      ctx.PrintError("gantry: gantry.toml: %s\n", st.message().c_str());
      return std::nullopt;
    }
  }
  std::string id = f.id;
  if (id.empty()) {
    const json::value* v = Find(*spec, "id");
    id = v && v->is_string() ? std::string(v->as_string()) : dir->filename().string();
  }
  if (id.empty()) {
    ctx.PrintError("gantry: give the endpoint an --id\n");
    return std::nullopt;
  }
  (*spec)["id"] = id;
  if (!f.image.empty()) (*spec)["image"] = f.image;
  return std::move(*spec);
}

struct File {
  std::string path, digest, data;
  int mode;
};

// Every regular file below `dir` (not .git, __pycache__, .venv, node_modules), named by content.
std::vector<File> CollectFiles(const fs::path& dir) {
  std::vector<File> files;
  for (auto it = fs::recursive_directory_iterator(dir); it != fs::recursive_directory_iterator();
       ++it) {
    std::string name = it->path().filename().string();
    if (it->is_directory() &&
        (name == ".git" || name == "__pycache__" || name == ".venv" || name == "node_modules")) {
      it.disable_recursion_pending();
      continue;
    }
    if (!it->is_regular_file() || it->is_symlink()) continue;
    File f;
    f.path = fs::relative(it->path(), dir).string();
    f.data = ReadFile(it->path().string());
    f.digest = Sha256Hex(f.data);
    f.mode = static_cast<int>(fs::status(it->path()).permissions() & fs::perms::all);
    files.push_back(std::move(f));
  }
  return files;
}

struct Upload {
  std::string digest;  // the bundle's
  size_t files = 0, uploaded = 0, uploaded_bytes = 0;
};

// Uploads the blobs the server lacks, then the bundle's manifest; nullopt (message printed) when
// a call failed.
std::optional<Upload> UploadBundle(Context& ctx, const fs::path& dir) {
  std::vector<File> files = CollectFiles(dir);
  json::array digests;
  for (const auto& f : files) digests.emplace_back(f.digest);
  auto missing =
      Call(ctx, "POST", "/v1/blobs/missing", ToJson(json::object{{"digests", std::move(digests)}}));
  if (!missing) return std::nullopt;
  std::set<std::string> need;
  for (const auto& d : missing->body.as_object().at("missing").as_array()) {
    need.insert(std::string(d.as_string()));
  }
  Upload up;
  up.files = files.size();
  for (const auto& f : files) {
    if (!need.count(f.digest)) continue;
    need.erase(f.digest);  // the same content twice uploads once
    ctx.PrintError("uploading %s (%zu bytes) [%zu]\n", f.path.c_str(), f.data.size(),
                   up.uploaded + 1);
    if (!Call(ctx, "PUT", "/v1/blobs/" + f.digest, f.data, 300'000)) return std::nullopt;
    ++up.uploaded;
    up.uploaded_bytes += f.data.size();
  }
  json::array manifest;
  for (const auto& f : files) {
    manifest.push_back(json::object{{"path", f.path}, {"digest", f.digest}, {"mode", f.mode}});
  }
  auto bundle =
      Call(ctx, "POST", "/v1/bundles", ToJson(json::object{{"files", std::move(manifest)}}));
  if (!bundle) return std::nullopt;
  up.digest = Field(bundle->body, "digest");
  return up;
}

// Follows the prefetch of endpoint `id`'s image on the nodes (its "imagePulls") for at most
// `timeout_s`, printing each node's new pull events. 0 once every node has it; 1 if a pull
// failed or the time ran out; 0 with a note when no node is to pull it; Call's code when a call
// failed.
int FollowImagePulls(Context& ctx, const std::string& id, int timeout_s) {
  const auto start = std::chrono::steady_clock::now();
  auto elapsed_s = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  std::map<std::string, std::string> shown;  // node -> the last line printed for it
  for (;;) {
    auto r = Call(ctx, "GET", "/v1/endpoints/" + id);
    if (!r) return ctx.rc;
    const json::value* pulls =
        r->body.is_object() ? Find(r->body.as_object(), "imagePulls") : nullptr;
    size_t ready = 0, failed = 0, total = 0;
    if (pulls && pulls->is_array()) {
      for (const auto& p : pulls->as_array()) {
        ++total;
        const std::string node = Field(p, "nodeId"), state = Field(p, "state");
        const std::string detail = Field(p, "detail");
        const std::string line = state + (detail.empty() ? "" : ": " + detail);
        if (shown[node] != line) {
          ctx.Print("  %s: %s\n", node.c_str(), line.c_str());
          ctx.out.flush();
          shown[node] = line;
        }
        ready += state == "ready";
        failed += state == "failed";
      }
    }
    if (total > 0 && ready + failed == total) {
      if (failed == 0) {
        ctx.Print("image ready on %zu node%s\n", total, total == 1 ? "" : "s");
        return 0;
      }
      ctx.PrintError(
          "gantry: the image could not be pulled on %zu of %zu nodes (see above); workers "
          "will try again when they start\n",
          failed, total);
      return 1;
    }
    // A node learns of a new endpoint on its next assignment (within a few seconds).
    if (total == 0 && elapsed_s() > 10) {
      ctx.Print("no node can run this endpoint now; its image is pulled when a worker starts\n");
      return 0;
    }
    if (elapsed_s() > timeout_s) {
      ctx.PrintError(
          "gantry: the image is still being pulled after %d s; follow it with: gantry "
          "endpoint get %s\n",
          timeout_s, id.c_str());
      return 1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
  }
}

// "warning: REASON" on stderr when the server says no live node can run the endpoint at `path`
// (its health's "unplaceable"): the deploy stands, but its jobs would wait in the queue.
void WarnIfUnplaceable(const Context& ctx, const std::string& path) {
  auto e = Peek(ctx, path);
  if (!e || !e->body.is_object()) return;
  const json::value* health = Find(e->body.as_object(), "health");
  const json::value* why =
      health && health->is_object() ? Find(health->as_object(), "unplaceable") : nullptr;
  if (why && why->is_string() && !why->as_string().empty()) {
    ctx.PrintError("warning: %s\n", std::string(why->as_string()).c_str());
  }
}

void Deploy(Context& ctx, const DeployFlags& f) {
  ctx.Resolve();
  if (f.dir.empty() && f.image.empty()) {
    ctx.PrintError("gantry: deploy needs a directory or --image (see gantry deploy --help)\n");
    ctx.rc = kExitUsage;
    return;
  }
  fs::path dir;
  std::optional<json::object> spec = LoadSpec(ctx, f, &dir);
  if (!spec) {
    ctx.rc = kExitUsage;
    return;
  }
  const std::string id = Field(*spec, "id");
  const json::value* image = Find(*spec, "image");
  const bool image_mode = image && image->is_string() && !image->as_string().empty();
  Upload up;
  if (image_mode) {
    (*spec)["bundle"] = "";
  } else {
    std::optional<Upload> u = UploadBundle(ctx, dir);
    if (!u) return;
    up = std::move(*u);
    (*spec)["bundle"] = up.digest;
  }
  // Create, or update if it exists (an update with nothing changed keeps the version).
  std::string path = "/v1/endpoints/" + http::PercentEncode(id);
  auto exists = Call(ctx, "GET", path, "", 30'000, /*expected_error=*/404);
  if (!exists) return;
  auto r = exists->status == 200 ? Call(ctx, "PATCH", path, ToJson(*spec))
                                 : Call(ctx, "POST", "/v1/endpoints", ToJson(*spec));
  if (!r) return;
  WarnIfUnplaceable(ctx, path);
  if (ctx.json) return PrintJson(ctx.out, r->body);
  if (image_mode) {
    ctx.Print("deployed %s: version %s, image %s\n", id.c_str(), Field(r->body, "version").c_str(),
              Field(r->body, "image").c_str());
    if (!f.no_wait) ctx.rc = FollowImagePulls(ctx, id, f.wait_s);
  } else {
    ctx.Print("deployed %s: version %s, bundle %.12s (%zu files, %zu uploaded, %zu bytes)\n",
              id.c_str(), Field(r->body, "version").c_str(), up.digest.c_str(), up.files,
              up.uploaded, up.uploaded_bytes);
  }
}

}  // namespace

void AddDeployCommand(CLI::App& app, Context& ctx) {
  auto f = std::make_shared<DeployFlags>();
  auto* deploy = app.add_subcommand(
      "deploy",
      "Upload DIR as a code bundle and create or update the endpoint in DIR/gantry.toml; or, "
      "with --image (or image = \"...\" in gantry.toml), deploy a container image instead");
  deploy->add_option("dir", f->dir, "Directory with gantry.toml and the handler");
  deploy->add_option("--id", f->id, "Endpoint id (default: id in gantry.toml, else DIR's name)");
  deploy->add_option("--image", f->image,
                     "An OCI image (registry/name:tag) to run instead of a code bundle");
  deploy->add_flag("--no-wait", f->no_wait,
                   "With an image: return at once instead of following its pull on the nodes");
  deploy->add_option("--wait-timeout", f->wait_s,
                     "With an image: seconds to follow its pull at most (default 600)");
  deploy->callback([&ctx, f] { Deploy(ctx, *f); });
}

}  // namespace gantry::cli
