#include "api/http_status.h"

namespace gantry::api {

int HttpStatusFor(Code code) {
  switch (code) {
    case Code::kOk:
      return 200;
    case Code::kInvalidArgument:
      return 400;
    case Code::kNotFound:
      return 404;
    case Code::kAlreadyExists:
      return 409;
    case Code::kFailedPrecondition:
      return 409;
    case Code::kResourceExhausted:
      return 429;
    case Code::kPayloadTooLarge:
      return 413;
    case Code::kUnauthenticated:
      return 401;
    case Code::kPermissionDenied:
      return 403;
    case Code::kUnavailable:
      return 503;
    case Code::kDeadlineExceeded:
      return 504;
    case Code::kInternal:
      return 500;
  }
  return 500;
}

http::Response ErrorResponse(const Status& status) {
  return http::Response{HttpStatusFor(status.code()),
                        R"({"error":{"code":")" + std::string(CodeName(status.code())) +
                            R"(","message":)" + JsonQuote(status.message()) + "}}"};
}

http::Response JsonResponse(int status, const json::value& v) {
  return http::Response{status, ToJson(v)};
}

http::Response OkResponse(std::string json_body) {
  return http::Response{200, std::move(json_body)};
}

DeferredReply Deferred(std::shared_ptr<http::Responder> resp) {
  DeferredReply d;
  d.durable = [resp, reply = d.reply](Status st) {
    if (st.ok())
      resp->Send(std::move(*reply));
    else
      resp->Send(ErrorResponse(Unavailable("could not persist: " + st.message())));
  };
  return d;
}

std::function<void(Status)> AfterDurable(std::shared_ptr<http::Responder> resp, http::Response ok) {
  DeferredReply d = Deferred(std::move(resp));
  *d.reply = std::move(ok);
  return d.durable;
}

Result<json::object> ObjectBody(const http::Request& req) {
  auto body = ParseJson(req.body);
  if (!body.ok()) return body.status();
  if (!body->is_object()) return InvalidArgument("body must be a JSON object");
  return std::move(body->as_object());
}

}  // namespace gantry::api
