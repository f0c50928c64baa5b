#include "api/keys.h"

#include "common/json.h"

namespace gantry::api {

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
    by_hash_[k.hash] = k.id;
    keys_[k.id] = std::move(k);
  }
  return Status::Ok();
}

ApiKey KeyRing::Add(const std::string& name, const std::string& secret,
                    std::function<void(Status)> durable) {
  ApiKey k;
  k.id = NewId("key", 12);
  k.name = name;
  k.hash = Sha256Hex(secret);
  k.prefix = secret.substr(0, std::min<size_t>(secret.size(), 7));
  k.created_ms = clock_->NowMs();
  json::object o;
  o["name"] = k.name;
  o["hash"] = k.hash;
  o["prefix"] = k.prefix;
  o["createdAt"] = k.created_ms;
  store_->Write({store::Mutation::PutObject({"key", k.id, ToJson(o)})}, std::move(durable));
  by_hash_[k.hash] = k.id;
  keys_[k.id] = k;
  return k;
}

std::string KeyRing::AddEphemeral(const std::string& name) {
  std::string secret = NewSecret("gk_");
  ApiKey k;
  k.id = NewId("key", 12);
  k.name = name;
  k.hash = Sha256Hex(secret);
  k.prefix = secret.substr(0, 7);
  k.created_ms = clock_->NowMs();
  by_hash_[k.hash] = k.id;
  ephemeral_.insert(k.id);
  keys_[k.id] = std::move(k);
  return secret;
}

std::pair<ApiKey, std::string> KeyRing::Create(const std::string& name,
                                               std::function<void(Status)> durable) {
  std::string secret = NewSecret("gk_");
  return {Add(name, secret, std::move(durable)), secret};
}

Status KeyRing::Revoke(const std::string& id, std::function<void(Status)> durable) {
  auto it = keys_.find(id);
  if (it == keys_.end()) return NotFound("key not found: " + id);
  if (keys_.size() == 1) return FailedPrecondition("cannot revoke the last API key");
  store_->Write({store::Mutation::DeleteObject("key", id)}, std::move(durable));
  by_hash_.erase(it->second.hash);
  keys_.erase(it);
  checked_.clear();
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
