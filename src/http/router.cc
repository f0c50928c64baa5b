#include "http/router.h"

#include "http/http.h"

namespace gantry::http {

// One position in the patterns: the literal segments and the parameter that may follow it, and
// the routes that end here.
struct Router::Node {
  std::vector<std::pair<std::string, std::unique_ptr<Node>>> literals;
  std::unique_ptr<Node> param;
  struct End {
    std::string method;
    int id;
    std::vector<std::string> names;  // the route's parameter names, in path order
  };
  std::vector<End> ends;

  Node* Literal(std::string_view s) const {
    for (const auto& [text, child] : literals) {
      if (text == s) return child.get();
    }
    return nullptr;
  }
};

namespace {

std::vector<std::string_view> Segments(std::string_view path) {
  std::vector<std::string_view> out;
  while (!path.empty()) {
    size_t slash = path.find('/');
    std::string_view seg = path.substr(0, slash);
    if (!seg.empty()) out.push_back(seg);
    if (slash == std::string_view::npos) break;
    path.remove_prefix(slash + 1);
  }
  return out;
}

bool IsParam(std::string_view seg) { return seg.size() >= 2 && seg.front() == '{'; }

}  // namespace

Router::Router() : root_(std::make_unique<Node>()) {}
Router::~Router() = default;
Router::Router(Router&&) noexcept = default;
Router& Router::operator=(Router&&) noexcept = default;

Result<int> Router::Add(std::string_view method, std::string_view pattern) {
  if (pattern.empty() || pattern.front() != '/') {
    return InvalidArgument("route pattern must start with '/': " + std::string(pattern));
  }
  Node* n = root_.get();
  std::vector<std::string> names;
  for (std::string_view seg : Segments(pattern)) {
    if (seg.find_first_of("{}") != std::string_view::npos) {
      if (!IsParam(seg) || seg.back() != '}' || seg.size() == 2 ||
          seg.substr(1, seg.size() - 2).find_first_of("{}") != std::string_view::npos) {
        return InvalidArgument("bad parameter '" + std::string(seg) + "' in " +
                               std::string(pattern));
      }
      std::string name(seg.substr(1, seg.size() - 2));
      for (const auto& other : names) {
        if (other == name)
          return InvalidArgument("parameter {" + name + "} twice in " + std::string(pattern));
      }
      names.push_back(std::move(name));
      if (!n->param) n->param = std::make_unique<Node>();
      n = n->param.get();
      continue;
    }
    Node* next = n->Literal(seg);
    if (!next) {
      n->literals.emplace_back(std::string(seg), std::make_unique<Node>());
      next = n->literals.back().second.get();
    }
    n = next;
  }
  for (const auto& e : n->ends) {
    if (e.method == method) {
      return AlreadyExists(std::string(method) + " " + std::string(pattern) + " is routed twice");
    }
  }
  n->ends.push_back({std::string(method), next_id_, std::move(names)});
  return next_id_++;
}

bool Router::Walk(const Node* n, const std::vector<std::string_view>& segs, size_t i,
                  std::string_view method, std::vector<std::string_view>* values, Match* m) {
  if (i == segs.size()) {
    if (n->ends.empty()) return false;
    m->path_matched = true;
    for (const auto& e : n->ends) {
      if (e.method != method) continue;
      m->id = e.id;
      for (size_t k = 0; k < e.names.size(); ++k) {
        m->params.emplace_back(e.names[k], PercentDecode((*values)[k]));
      }
      return true;
    }
    return false;  // another branch may still take this method
  }
  std::string_view seg = segs[i];
  std::string decoded;
  if (seg.find('%') != std::string_view::npos) {  // "r%75n" is the literal "run"
    decoded = PercentDecode(seg);
    seg = decoded;
  }
  if (const Node* lit = n->Literal(seg); lit && Walk(lit, segs, i + 1, method, values, m)) {
    return true;
  }
  if (n->param) {
    values->push_back(segs[i]);
    if (Walk(n->param.get(), segs, i + 1, method, values, m)) return true;
    values->pop_back();
  }
  return false;
}

Router::Match Router::Find(std::string_view method, std::string_view path) const {
  Match m;
  std::vector<std::string_view> values;
  Walk(root_.get(), Segments(path), 0, method, &values, &m);
  return m;
}

const std::string& Router::Match::param(std::string_view name) const {
  static const std::string kNone;
  for (const auto& [k, v] : params) {
    if (k == name) return v;
  }
  return kNone;
}

}  // namespace gantry::http
