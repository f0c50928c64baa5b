#pragma once
// Matches a request's method and path against route patterns such as
// "/v2/{endpoint}/status/{job}": a literal segment matches itself, "{name}" matches any one
// non-empty segment and gives it, percent-decoded, as the parameter `name`. Where a literal and
// a parameter could both match a segment, the literal wins ("/v1/blobs/missing" before
// "/v1/blobs/{digest}"). Empty segments are ignored, so "/v2/ep//run/" is "/v2/ep/run".
//
// Knows nothing of what a route does: the owner keeps its routes in a list and gets back the
// index of the one that matched. Not thread-safe to Add() while another thread calls Find();
// Find() alone is const and may be called from any thread.

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"

namespace gantry::http {

class Router {
 public:
  Router();
  ~Router();
  Router(Router&&) noexcept;
  Router& operator=(Router&&) noexcept;

  // Adds `method` (e.g. "GET") on `pattern` as the next id (0, 1, ...). InvalidArgument for a
  // pattern that does not start with '/', has an empty or unclosed "{}", or repeats a name;
  // AlreadyExists when the same method and pattern (parameter names aside) is there already.
  Result<int> Add(std::string_view method, std::string_view pattern);

  struct Match {
    int id = -1;  // the route, or -1 when none matched
    // Some route has this path, with another method (the caller may answer 405).
    bool path_matched = false;
    std::vector<std::pair<std::string, std::string>> params;  // name -> decoded value
    // The value of `name`; "" when the route has no such parameter.
    const std::string& param(std::string_view name) const;
  };
  Match Find(std::string_view method, std::string_view path) const;

 private:
  struct Node;
  // Depth-first from `n` at segment `i`, literals before the parameter; fills `m` from the first
  // route that takes `method`. `values` holds the raw parameter segments on the way down.
  static bool Walk(const Node* n, const std::vector<std::string_view>& segs, size_t i,
                   std::string_view method, std::vector<std::string_view>* values, Match* m);
  std::unique_ptr<Node> root_;
  int next_id_ = 0;
};

}  // namespace gantry::http
