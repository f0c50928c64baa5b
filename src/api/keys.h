#pragma once
// API keys. Only SHA-256 hashes are stored; a key is shown once, when it is created. Each key
// has one scope, which says which routes it may call (api.h: Permits). Loop thread only.

#include <map>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/env.h"
#include "common/json.h"
#include "common/status.h"
#include "store/store.h"

namespace gantry::api {

// A user-chosen admin key (GANTRY_ADMIN_KEY) shorter than this is refused.
constexpr size_t kMinAdminKeyLength = 24;

// What a key may do (docs/security.md has the table of routes):
//   admin  everything, keys included;
//   deploy endpoints, bundles, hand-started workers, and everything read and invoke allow;
//   invoke the /v2 client routes, of the listed endpoints only when the key lists some;
//   read   GETs of state: endpoints, workers, nodes, logs, usage;
//   node   the node protocol of one node (the agent of that node), bound to its id.
enum class Scope { kAdmin, kDeploy, kInvoke, kRead, kNode };
const char* ScopeName(Scope s);                          // "admin", "deploy", ...
std::optional<Scope> ParseScope(std::string_view name);  // nullopt for an unknown name

// A key's scope and what it is limited to.
struct Grant {
  Scope scope = Scope::kInvoke;
  std::vector<std::string> endpoints;  // kInvoke: these endpoints only; empty: every endpoint
  std::string node_id;                 // kNode: the node it acts for (required)
};
// OK when `g` is whole: a node key names its node, only an invoke key lists endpoints.
Status CheckGrant(const Grant& g);

struct ApiKey {
  std::string id;
  std::string name;
  std::string hash;
  std::string prefix;  // the first characters of the key, to tell keys apart in listings
  int64_t created_ms = 0;
  // Keys stored before keys had scopes load as admin keys: that is what they were.
  Grant grant{Scope::kAdmin, {}, {}};
};

class KeyRing {
 public:
  KeyRing(const Clock* clock, store::Store* store) : clock_(clock), store_(store) {}
  Status Load();
  bool empty() const { return keys_.size() == ephemeral_.size(); }
  // Adds `secret` as a key (used for the admin key at first start). `grant` must be whole.
  ApiKey Add(const std::string& name, const std::string& secret, const Grant& grant,
             std::function<void(Status)> durable);
  // A key that lives only as long as this process (the in-process agent of `gantry up`).
  std::string AddEphemeral(const std::string& name, const Grant& grant);
  // Creates a new random key; returns it and its secret. InvalidArgument for a grant that is
  // not whole (CheckGrant).
  Result<std::pair<ApiKey, std::string>> Create(const std::string& name, const Grant& grant,
                                                std::function<void(Status)> durable);
  // FailedPrecondition for the last admin key that is stored (a server must keep one).
  Status Revoke(const std::string& id, std::function<void(Status)> durable);
  // The key for an Authorization header value ("Bearer KEY" or "KEY"); nullptr if none.
  const ApiKey* Check(std::string_view authorization) const;
  std::vector<const ApiKey*> List() const;

 private:
  // Makes a key for `secret` and indexes it; not stored.
  const ApiKey& Insert(const std::string& name, const std::string& secret, const Grant& grant);

  const Clock* clock_;
  store::Store* store_;
  std::map<std::string, ApiKey> keys_;                    // by id
  std::unordered_map<std::string, std::string> by_hash_;  // hash -> id
  std::set<std::string> ephemeral_;                       // ids of keys that are never stored
  // Authorization values already checked -> key id, so that a busy client does not pay a
  // SHA-256 per request. Bounded; cleared when a key is revoked.
  mutable std::unordered_map<std::string, std::string> checked_;
};

// A key as GET /v1/keys lists it: id, name, prefix, createdAt, scope, endpoints, node.
json::object KeyJson(const ApiKey& k);

// The key in an Authorization header value: strips a "Bearer " prefix if present.
std::string_view BearerToken(std::string_view authorization);

}  // namespace gantry::api
