#pragma once
// The one table mapping Status codes to HTTP statuses (STYLE.md §1), and the replies built on
// it: every route answers its errors as {"error": {"code": ..., "message": ...}}.

#include <functional>
#include <memory>
#include <string>

#include "common/json.h"
#include "common/status.h"
#include "http/http.h"

namespace gantry::api {

int HttpStatusFor(Code code);
// {"error": {"code": ..., "message": ...}} with the matching HTTP status.
http::Response ErrorResponse(const Status& status);
http::Response JsonResponse(int status, const json::value& v);
http::Response OkResponse(std::string json_body);  // 200 with a body already serialized

// A reply sent once the store confirms a write: `durable` is the store's completion; `reply`
// may be filled in after the call that queued the write returned (the reply names what that
// call created). Answers 503 instead if the store failed. Requires a store whose completions
// are posted, never run inline.
struct DeferredReply {
  std::shared_ptr<http::Response> reply = std::make_shared<http::Response>();
  std::function<void(Status)> durable;
};
DeferredReply Deferred(std::shared_ptr<http::Responder> resp);
// Sends `ok` once the store confirms.
std::function<void(Status)> AfterDurable(std::shared_ptr<http::Responder> resp, http::Response ok);

// The request's body as a JSON object; InvalidArgument when it is not JSON or not an object.
Result<json::object> ObjectBody(const http::Request& req);

}  // namespace gantry::api
