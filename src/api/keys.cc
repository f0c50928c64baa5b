#include "api/keys.h"

#include "common/json.h"
#include "common/log.h"

namespace gantry::api {
namespace {

constexpr std::pair<Scope, const char*> kScopeNames[] = {{Scope::kAdmin, "admin"},
                                                         {Scope::kDeploy, "deploy"},
                                                         {Scope::kInvoke, "invoke"},
                                                         {Scope::kRead, "read"},
                                                         {Scope::kNode, "node"}};

json::object GrantJson(const Grant& g) {
  json::object o;
  o["scope"] = ScopeName(g.scope);
  if (!g.endpoints.empty()) {
    json::array eps;
    for (const auto& e : g.endpoints) eps.emplace_back(e);
    o["endpoints"] = std::move(eps);
  }
  if (!g.node_id.empty()) o["node"] = g.node_id;
  return o;
}

}  // namespace

const char* ScopeName(Scope s) {
  for (const auto& [scope, name] : kScopeNames) {
    if (scope == s) return name;
  }
  return "?";
}

std::optional<Scope> ParseScope(std::string_view name) {
  for (const auto& [scope, n] : kScopeNames) {
    if (name == n) return scope;
  }
  return std::nullopt;
}

Status CheckGrant(const Grant& g) {
  if (g.scope == Scope::kNode && g.node_id.empty()) {
    return InvalidArgument("a node key needs the node it acts for (\"node\")");
  }
  if (g.scope != Scope::kNode && !g.node_id.empty()) {
    return InvalidArgument("only a node key names a node");
  }
  if (g.scope != Scope::kInvoke && !g.endpoints.empty()) {
    return InvalidArgument("only an invoke key is limited to endpoints");
  }
  return Status::Ok();
}

json::object KeyJson(const ApiKey& k) {
  json::object o = GrantJson(k.grant);
  o["id"] = k.id;
  o["name"] = k.name;
  o["prefix"] = k.prefix;
  o["createdAt"] = k.created_ms;
  return o;
}

std::string_view BearerToken(std::string_view a) {
  constexpr std::string_view kBearer = "Bearer ";
  if (a.size() > kBearer.size() && strncasecmp(a.data(), kBearer.data(), kBearer.size()) == 0) {
    a.remove_prefix(kBearer.size());
  }
  while (!a.empty() && a.front() == ' ') a.remove_prefix(1);
  while (!a.empty() && a.back() == ' ') a.remove_suffix(1);
  return a;
}

Status KeyRing::Load() {
  auto objs = store_->LoadObjects("key");
  if (!objs.ok()) return objs.status();
  for (const auto& o : *objs) {
    auto v = ParseJson(o.data);
    if (!v.ok() || !v->is_object()) continue;
    const auto& obj = v->as_object();
    ApiKey k;
    k.id = o.id;
    if (auto* n = Find(obj, "name"); n && n->is_string()) k.name = n->as_string();
    if (auto* h = Find(obj, "hash"); h && h->is_string()) k.hash = h->as_string();
    if (auto* p = Find(obj, "prefix"); p && p->is_string()) k.prefix = p->as_string();
    if (auto* c = Find(obj, "createdAt")) k.created_ms = AsInt(*c).value_or(0);
    if (auto* sc = Find(obj, "scope"); sc && sc->is_string()) {
      auto scope = ParseScope(std::string_view(sc->as_string()));
      if (!scope) {  // a newer server's scope: this one cannot honour it, so it refuses the key
        GLOG_WARN("keys: %s has an unknown scope %s; not loaded", k.id.c_str(),
                  std::string(sc->as_string()).c_str());
        continue;
      }
      k.grant.scope = *scope;
    }
    if (auto* e = Find(obj, "endpoints"); e && e->is_array()) {
      for (const auto& ep : e->as_array()) {
        if (ep.is_string()) k.grant.endpoints.emplace_back(ep.as_string());
      }
    }
    if (auto* n = Find(obj, "node"); n && n->is_string()) k.grant.node_id = n->as_string();
    by_hash_[k.hash] = k.id;
    keys_[k.id] = std::move(k);
  }
  return Status::Ok();
}

const ApiKey& KeyRing::Insert(const std::string& name, const std::string& secret,
                              const Grant& grant) {
  ApiKey k;
  k.id = NewId("key", 12);
  k.name = name;
  k.hash = Sha256Hex(secret);
  k.prefix = secret.substr(0, std::min<size_t>(secret.size(), 7));
  k.created_ms = clock_->NowMs();
  k.grant = grant;
  by_hash_[k.hash] = k.id;
  return keys_[k.id] = std::move(k);
}

ApiKey KeyRing::Add(const std::string& name, const std::string& secret, const Grant& grant,
                    std::function<void(Status)> durable) {
  const ApiKey& k = Insert(name, secret, grant);
  json::object o = GrantJson(grant);
  o["name"] = k.name;
  o["hash"] = k.hash;
  o["prefix"] = k.prefix;
  o["createdAt"] = k.created_ms;
  store_->Write({store::Mutation::PutObject({"key", k.id, ToJson(o)})},
                store::UndoOnFailure(
                    [this, id = k.id] {
                      auto it = keys_.find(id);
                      if (it == keys_.end()) return;
                      by_hash_.erase(it->second.hash);
                      keys_.erase(it);
                      checked_.clear();
                    },
                    std::move(durable)));
  return k;
}

std::string KeyRing::AddEphemeral(const std::string& name, const Grant& grant) {
  std::string secret = NewSecret("gk_");
  ephemeral_.insert(Insert(name, secret, grant).id);
  return secret;
}

Result<std::pair<ApiKey, std::string>> KeyRing::Create(const std::string& name, const Grant& grant,
                                                       std::function<void(Status)> durable) {
  GANTRY_RETURN_IF_ERROR(CheckGrant(grant));
  std::string secret = NewSecret("gk_");
  return std::pair<ApiKey, std::string>{Add(name, secret, grant, std::move(durable)), secret};
}

Status KeyRing::Revoke(const std::string& id, std::function<void(Status)> durable) {
  auto it = keys_.find(id);
  if (it == keys_.end()) return NotFound("key not found: " + id);
  if (it->second.grant.scope == Scope::kAdmin && !ephemeral_.count(id)) {
    int admins = 0;
    for (const auto& [kid, k] : keys_) {
      admins += k.grant.scope == Scope::kAdmin && !ephemeral_.count(kid);
    }
    if (admins == 1) return FailedPrecondition("cannot revoke the last admin key");
  }
  const std::string key = id;  // `id` may be the entry's own
  ApiKey removed = std::move(it->second);
  by_hash_.erase(removed.hash);
  keys_.erase(it);
  checked_.clear();
  // A revoke that fails to commit is taken back (and answered 503): the key would come back
  // at the next restart otherwise, unbeknown to whoever revoked it.
  store_->Write({store::Mutation::DeleteObject("key", key)},
                store::UndoOnFailure(
                    [this, removed = std::move(removed)] {
                      if (keys_.count(removed.id)) return;
                      by_hash_[removed.hash] = removed.id;
                      keys_[removed.id] = removed;
                    },
                    std::move(durable)));
  return Status::Ok();
}

const ApiKey* KeyRing::Check(std::string_view authorization) const {
  std::string token(BearerToken(authorization));
  if (token.empty()) return nullptr;
  if (auto c = checked_.find(token); c != checked_.end()) {
    auto k = keys_.find(c->second);
    if (k != keys_.end()) return &k->second;
  }
  auto it = by_hash_.find(Sha256Hex(token));
  if (it == by_hash_.end()) return nullptr;
  if (checked_.size() >= 1024) checked_.clear();
  checked_[token] = it->second;
  return &keys_.at(it->second);
}

std::vector<const ApiKey*> KeyRing::List() const {
  std::vector<const ApiKey*> out;
  for (const auto& [id, k] : keys_) out.push_back(&k);
  return out;
}

}  // namespace gantry::api
