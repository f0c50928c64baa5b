#pragma once
// Code bundles (gantry deploy): a manifest of files, each named by the SHA-256 of its bytes,
// itself stored as a blob named by the SHA-256 of its canonical text.

#include <string>

#include "common/blob_store.h"
#include "common/json.h"
#include "common/status.h"

namespace gantry::api {

// A bundle manifest {"files": [{"path", "digest", "mode"}]}: paths relative and inside the
// bundle. Returns the canonical text (files sorted by path, modes masked to 0777) whose SHA-256
// names the bundle.
Result<std::string> CanonicalManifest(const json::value& body);

// NotFound unless the bundle an endpoint spec names (if any) has been uploaded.
Status CheckBundle(const BlobStore& blobs, const json::value& spec);

}  // namespace gantry::api
