// keys create|ls|revoke: API keys through /v1/keys.

#include <memory>
#include <string>
#include <vector>

#include "cli/client.h"
#include "cli/commands.h"
#include "cli/format.h"
#include "http/http.h"

namespace gantry::cli {
namespace {

struct KeyFlags {
  std::string name = "key";  // create
  std::string scope = "invoke";
  std::vector<std::string> endpoints;
  std::string node;
  std::string id;  // revoke
};

// What a key is limited to: "endpoints a, b", "node n1", or "-".
std::string Limits(const json::value& k) {
  const json::value* eps = Find(k.as_object(), "endpoints");
  if (eps && eps->is_array() && !eps->as_array().empty()) {
    std::string out = "endpoints ";
    for (const auto& e : eps->as_array()) {
      if (out.size() > 10) out += ", ";
      out += Str(e);
    }
    return out;
  }
  if (!Field(k, "node").empty()) return "node " + Field(k, "node");
  return "-";
}

void PrintKeyList(const Context& ctx, const json::value& b) {
  std::vector<std::vector<std::string>> rows;
  for (const auto& k : b.as_object().at("keys").as_array()) {
    const json::value* created = Find(k.as_object(), "createdAt");
    rows.push_back({Field(k, "id"), Field(k, "name"), Field(k, "scope"), Limits(k),
                    Field(k, "prefix") + "...", created ? UtcTime(*created) : "-"});
  }
  PrintTable(ctx.out, {"ID", "NAME", "SCOPE", "LIMITED TO", "PREFIX", "CREATED (UTC)"}, rows);
}

std::string CreateBody(const KeyFlags& f) {
  json::object o{{"name", f.name}, {"scope", f.scope}};
  if (!f.endpoints.empty()) {
    json::array eps;
    for (const auto& e : f.endpoints) eps.emplace_back(e);
    o["endpoints"] = std::move(eps);
  }
  if (!f.node.empty()) o["node"] = f.node;
  return ToJson(o);
}

}  // namespace

void AddKeyCommands(CLI::App& app, Context& ctx) {
  auto f = std::make_shared<KeyFlags>();
  auto* keys = app.add_subcommand("keys", "Manage API keys");
  keys->require_subcommand(1);
  auto* create = keys->add_subcommand(
      "create",
      "Create an API key (shown once). Scopes: admin (everything), deploy (endpoints, bundles, "
      "and what read and invoke allow), invoke (the /v2 routes of endpoints), read (GETs), "
      "node (one node's agent)");
  create->add_option("--name", f->name, "A name for the key")->capture_default_str();
  create->add_option("--scope", f->scope, "admin, deploy, invoke, read or node")
      ->capture_default_str()
      ->check(CLI::IsMember({"admin", "deploy", "invoke", "read", "node"}));
  create->add_option("--endpoint", f->endpoints,
                     "An invoke key for this endpoint only (repeat for several)");
  create->add_option("--node", f->node, "A node key: the node it acts for");
  create->callback([&ctx, f] {
    Invoke(ctx, "POST", "/v1/keys", CreateBody(*f), [&](const json::value& b) {
      ctx.PrintError("created key %s (%s, scope %s%s); it is shown only now:\n",
                     Field(b, "id").c_str(), Field(b, "name").c_str(), Field(b, "scope").c_str(),
                     Limits(b) == "-" ? "" : (", " + Limits(b)).c_str());
      ctx.Print("%s\n", Field(b, "key").c_str());
    });
  });
  auto* ls = keys->add_subcommand("ls", "List API keys");
  ls->callback([&ctx] {
    Invoke(ctx, "GET", "/v1/keys", "", [&](const json::value& b) { PrintKeyList(ctx, b); });
  });
  auto* revoke = keys->add_subcommand("revoke", "Revoke an API key");
  revoke->add_option("id", f->id, "Key id")->required();
  revoke->callback([&ctx, f] {
    Invoke(ctx, "DELETE", "/v1/keys/" + http::PercentEncode(f->id), "",
           [&](const json::value&) { ctx.Print("revoked key %s\n", f->id.c_str()); });
  });
}

}  // namespace gantry::cli
