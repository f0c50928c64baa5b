#pragma once
// API keys. Only SHA-256 hashes are stored; a key is shown once, when it is created.
// Loop thread only.

#include <map>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/env.h"
#include "common/status.h"
#include "store/store.h"

namespace gantry::api {

struct ApiKey {
  std::string id;
  std::string name;
  std::string hash;
  std::string prefix;  // the first characters of the key, to tell keys apart in listings
  int64_t created_ms = 0;
};

class KeyRing {
 public:
  KeyRing(const Clock* clock, store::Store* store) : clock_(clock), store_(store) {}
  Status Load();
  bool empty() const { return keys_.size() == ephemeral_.size(); }
  // Adds `secret` as a key (used for the admin key at first start).
  ApiKey Add(const std::string& name, const std::string& secret,
             std::function<void(Status)> durable);
  // A key that lives only as long as this process (the in-process agent of `gantry up`).
  std::string AddEphemeral(const std::string& name);
  // Creates a new random key; returns it and its secret.
  std::pair<ApiKey, std::string> Create(const std::string& name,
                                        std::function<void(Status)> durable);
  Status Revoke(const std::string& id, std::function<void(Status)> durable);
  // The key for an Authorization header value ("Bearer KEY" or "KEY"); nullptr if none.
  const ApiKey* Check(std::string_view authorization) const;
  std::vector<const ApiKey*> List() const;

 private:
  const Clock* clock_;
  store::Store* store_;
  std::map<std::string, ApiKey> keys_;                    // by id
  std::unordered_map<std::string, std::string> by_hash_;  // hash -> id
  std::set<std::string> ephemeral_;                       // ids of keys that are never stored
  // Authorization values already checked -> key id, so that a busy client does not pay a
  // SHA-256 per request. Bounded; cleared when a key is revoked.
  mutable std::unordered_map<std::string, std::string> checked_;
};

// The key in an Authorization header value: strips a "Bearer " prefix if present.
std::string_view BearerToken(std::string_view authorization);

}  // namespace gantry::api
