#pragma once
// What skopeo and umoci print, read for the image store: their failures as Status values (the
// codes of ImageStore::Pull() in image_store.h) and skopeo copy's progress lines as PullEvents.
// Internal to src/agent/oci; pure functions, thread-safe.

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "agent/oci/image_store.h"
#include "common/status.h"

namespace gantry::agent::oci {

// What a tool said when it failed: the message of its last fatal or error line (logrus'
// msg="..."), else its last 5 lines joined with " | "; cut at 2000 bytes.
std::string FailureText(const std::string& output);

// Classifies a failed skopeo copy of `ref` by what it said (cancelled, timed out past
// `timeout_ms`, TLS, unreachable, refused, not found, unusable, else Internal). `redact` is
// applied to the quoted output, so that no credential reaches the message.
Status SkopeoFailure(const ImageRef& ref, const ImageTools::Run& run, int64_t timeout_ms,
                     const std::function<std::string(std::string)>& redact);

// Classifies a failed `umoci raw unpack` of `image`: Unavailable when cancelled,
// DeadlineExceeded past `timeout_ms`, FailedPrecondition for a layer umoci cannot read, else
// Internal; each quotes umoci.
Status UnpackFailure(const Image& image, const ImageTools::Run& run, int64_t timeout_ms);

// One line of skopeo copy's output as an event; nullopt for lines that say nothing useful.
// `blobs` counts the blobs seen so far (the event's text numbers them).
std::optional<PullEvent> SkopeoLineEvent(std::string_view line, int* blobs);

}  // namespace gantry::agent::oci
