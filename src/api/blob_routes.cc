// Blobs and bundles (gantry deploy): the CLI asks which file digests the server lacks, uploads
// those, then posts the bundle's manifest; agents fetch manifests and files to run it.
#include "api/api.h"
#include "api/bundles.h"
#include "api/http_status.h"

namespace gantry::api {
namespace {

void Missing(const Services& s, Call& c) {
  auto body = ParseJson(c.req.body);
  if (!body.ok()) return c.Send(ErrorResponse(body.status()));
  const json::value* ds = body->is_object() ? Find(body->as_object(), "digests") : nullptr;
  if (!ds || !ds->is_array()) {
    return c.Send(ErrorResponse(InvalidArgument("body is {\"digests\": [...]}")));
  }
  json::array missing;
  for (const auto& d : ds->as_array()) {
    if (d.is_string() && !s.blobs->Has(std::string(d.as_string()))) missing.push_back(d);
  }
  c.Send(JsonResponse(200, json::object{{"missing", std::move(missing)}}));
}

void Get(const Services& s, Call& c, const char* content_type) {
  auto data = s.blobs->Get(c.param("digest"));
  if (!data.ok()) return c.Send(ErrorResponse(data.status()));
  c.Send(http::Response{200, std::move(*data), content_type});
}

// A manifest whose files are all uploaded becomes a bundle named by its digest.
void PostBundle(const Services& s, Call& c) {
  auto body = ParseJson(c.req.body);
  if (!body.ok()) return c.Send(ErrorResponse(body.status()));
  auto manifest = CanonicalManifest(*body);
  if (!manifest.ok()) return c.Send(ErrorResponse(manifest.status()));
  json::array missing;
  json::value parsed = *ParseJson(*manifest);
  for (const auto& f : parsed.as_object().at("files").as_array()) {
    const auto& d = f.as_object().at("digest");
    if (!s.blobs->Has(std::string(d.as_string()))) missing.push_back(d);
  }
  if (!missing.empty()) {
    return c.Send(
        ErrorResponse(FailedPrecondition("upload the bundle's files first: " + ToJson(missing))));
  }
  std::string digest = Sha256Hex(*manifest);
  Status st = s.blobs->Put(digest, *manifest);
  if (!st.ok()) return c.Send(ErrorResponse(st));
  c.Send(JsonResponse(201, json::object{{"digest", digest}}));
}

}  // namespace

void AddBlobRoutes(const Services* s, RouteTable* t) {
  t->Add("POST", "/v1/blobs/missing", Access::kDeploy, "which of {\"digests\"} the server lacks",
         [s](Call& c) { Missing(*s, c); });
  t->Add("PUT", "/v1/blobs/{digest}", Access::kDeploy,
         "upload one file, checked against its SHA-256", [s](Call& c) {
           Status st = s->blobs->Put(c.param("digest"), c.req.body);
           if (!st.ok()) return c.Send(ErrorResponse(st));
           c.Send(JsonResponse(201, json::object{{"digest", c.param("digest")}}));
         });
  t->Add("GET", "/v1/blobs/{digest}", Access::kNode, "one file",
         [s](Call& c) { Get(*s, c, "application/octet-stream"); });
  t->Add("POST", "/v1/bundles", Access::kDeploy,
         "a bundle's manifest {\"files\": [{\"path\",\"digest\",\"mode\"}]}: its digest",
         [s](Call& c) { PostBundle(*s, c); });
  t->Add("GET", "/v1/bundles/{digest}", Access::kNode, "a bundle's manifest",
         [s](Call& c) { Get(*s, c, "application/json"); });
}

}  // namespace gantry::api
