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
  std::string id;            // revoke
};

void PrintKeyList(const Context& ctx, const json::value& b) {
  std::vector<std::vector<std::string>> rows;
  for (const auto& k : b.as_object().at("keys").as_array()) {
    const json::value* created = Find(k.as_object(), "createdAt");
    rows.push_back({Field(k, "id"), Field(k, "name"), Field(k, "prefix") + "...",
                    created ? UtcTime(*created) : "-"});
  }
  PrintTable(ctx.out, {"ID", "NAME", "PREFIX", "CREATED (UTC)"}, rows);
}

}  // namespace

void AddKeyCommands(CLI::App& app, Context& ctx) {
  auto f = std::make_shared<KeyFlags>();
  auto* keys = app.add_subcommand("keys", "Manage API keys");
  keys->require_subcommand(1);
  auto* create = keys->add_subcommand("create", "Create an API key (shown once)");
  create->add_option("--name", f->name, "A name for the key")->capture_default_str();
  create->callback([&ctx, f] {
    Invoke(ctx, "POST", "/v1/keys", ToJson(json::object{{"name", f->name}}),
           [&](const json::value& b) {
             ctx.Print("created key %s (%s); it is shown only now:\n%s\n", Field(b, "id").c_str(),
                       Field(b, "name").c_str(), Field(b, "key").c_str());
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
