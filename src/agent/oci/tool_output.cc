// How the image store reads what skopeo and umoci print. See tool_output.h for the contract.
#include "agent/oci/tool_output.h"

#include <sstream>
#include <utility>
#include <vector>

#include "agent/oci/image_text.h"

namespace gantry::agent::oci {
namespace {

// How much of a tool's message an error quotes.
constexpr size_t kMaxQuoteBytes = 2000;

// The text of msg="..." in a logrus line, unescaped; nullopt if there is none.
std::optional<std::string> LogrusMessage(std::string_view line) {
  const size_t at = line.find("msg=\"");
  if (at == std::string_view::npos) return std::nullopt;
  std::string out;
  for (size_t i = at + 5; i < line.size(); ++i) {
    const char c = line[i];
    if (c == '"') return out;
    if (c == '\\' && i + 1 < line.size()) {
      const char n = line[++i];
      out += n == 'n' ? '\n' : n == 't' ? '\t' : n;
    } else {
      out += c;
    }
  }
  return out;
}

}  // namespace

std::string FailureText(const std::string& output) {
  std::vector<std::string> lines;
  std::stringstream ss(output);
  std::string line;
  while (std::getline(ss, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (!line.empty()) lines.push_back(line);
  }
  for (auto it = lines.rbegin(); it != lines.rend(); ++it) {
    if (it->find("level=fatal") != std::string::npos ||
        it->find("level=error") != std::string::npos) {
      if (std::optional<std::string> m = LogrusMessage(*it)) return Truncate(*m, kMaxQuoteBytes);
    }
  }
  std::string out;
  const size_t from = lines.size() > 5 ? lines.size() - 5 : 0;
  for (size_t i = from; i < lines.size(); ++i) {
    // umoci marks its errors with "⨯"; its other lines are progress.
    out += (out.empty() ? "" : " | ") + lines[i];
  }
  return out.empty() ? "(no output)" : Truncate(out, kMaxQuoteBytes);
}

Status SkopeoFailure(const ImageRef& ref, const ImageTools::Run& run, int64_t timeout_ms,
                     const std::function<std::string(std::string)>& redact) {
  const std::string name = ref.ToString();
  if (run.cancelled) return Unavailable("pull of " + name + " cancelled");
  const std::string said = redact(FailureText(run.output));
  if (run.timed_out) {
    return DeadlineExceeded("pull of " + name + ": skopeo ran past its time limit of " +
                            std::to_string(timeout_ms / 1000) +
                            " s and was killed; its output: " + said);
  }
  // Words of the reference itself (a repository named "timeout") must not decide the class.
  std::string lc = said;
  // Only whole references are blanked: a bare tag ("unknown") could be part of the message.
  for (const std::string& part :
       {name, ref.TransportRef(), ref.registry + "/" + ref.repository,
        "manifest " + (ref.digest.empty() ? ref.tag : ref.digest) + " in ", ref.registry}) {
    ReplaceAll(&lc, part, " <ref> ");
  }
  lc = Lower(lc);
  const std::string quoted = ": " + said;
  if (ContainsAny(lc, {"server gave http response to https client"})) {
    return FailedPrecondition("registry " + ref.registry +
                              " speaks plain HTTP, not HTTPS; pull with insecure to allow it" +
                              quoted);
  }
  if (ContainsAny(lc, {"x509:", "certificate", "tls: "})) {
    return FailedPrecondition("TLS with registry " + ref.registry +
                              " failed (insecure skips verification)" + quoted);
  }
  if (ContainsAny(lc, {"connection refused", "no such host", "i/o timeout", "timeout", "timed out",
                       "network is unreachable", "no route to host", "connection reset",
                       "temporary failure in name resolution", "server misbehaving",
                       "too many requests", "toomanyrequests", "service unavailable", "bad gateway",
                       "gateway timeout", "internal server error", "unexpected eof"})) {
    return Unavailable("registry " + ref.registry + " cannot be reached" + quoted);
  }
  if (ContainsAny(lc, {"unauthorized", "authentication required", "denied", "forbidden",
                       "invalid username/password", "status 401", "status 403"})) {
    return PermissionDenied("registry " + ref.registry + " refused access to " + ref.repository +
                            " (check the credentials; some registries say this for a "
                            "repository that does not exist)" +
                            quoted);
  }
  if (ContainsAny(
          lc, {"manifest unknown", "name unknown", "not found", "status 404", "does not exist"})) {
    return NotFound("image " + name + " not found in registry " + ref.registry + quoted);
  }
  if (ContainsAny(lc,
                  {"no image found in manifest list", "choosing image instance", "unsupported"})) {
    return FailedPrecondition("image " + name + " cannot be used on this node" + quoted);
  }
  return Internal("skopeo copy of " + name + " failed (exit code " + std::to_string(run.exit_code) +
                  ")" + quoted);
}

Status UnpackFailure(const Image& image, const ImageTools::Run& run, int64_t timeout_ms) {
  if (run.cancelled) return Unavailable("unpack of " + image.ref.ToString() + " cancelled");
  if (run.timed_out) {
    return DeadlineExceeded("unpack of " + image.ref.ToString() + " ran past its time limit of " +
                            std::to_string(timeout_ms / 1000) + " s");
  }
  const std::string said = FailureText(run.output);
  const std::string lc = Lower(said);
  return Status(ContainsAny(lc, {"unsupported", "unknown media type", "compression"})
                    ? Code::kFailedPrecondition
                    : Code::kInternal,
                "umoci raw unpack of " + image.ref.ToString() + " (" + image.digest +
                    ") failed (exit code " + std::to_string(run.exit_code) + "): " + said);
}

std::optional<PullEvent> SkopeoLineEvent(std::string_view line, int* blobs) {
  auto starts = [&](std::string_view p) { return line.rfind(p, 0) == 0; };
  auto word_after = [&](size_t at) {
    std::string_view rest = line.substr(at);
    const size_t end = rest.find(' ');
    return std::pair(std::string(rest.substr(0, end)),
                     end == std::string_view::npos ? std::string() : std::string(rest.substr(end)));
  };
  auto short_digest = [](const std::string& d) { return d.size() > 19 ? d.substr(0, 19) : d; };
  PullEvent e;
  if (starts("Copying blob ")) {
    auto [digest, rest] = word_after(13);
    e.kind = PullEvent::Kind::kBlob;
    e.digest = digest;
    e.text = "copying blob " + short_digest(digest) + " (" + std::to_string(++*blobs) + ")" + rest;
    return e;
  }
  if (starts("Copying config ")) {
    auto [digest, rest] = word_after(15);
    e.kind = PullEvent::Kind::kConfig;
    e.digest = digest;
    e.text = "copying config " + short_digest(digest) + rest;
    return e;
  }
  if (starts("Writing manifest")) {
    e.kind = PullEvent::Kind::kManifest;
    e.text = "writing manifest";
    return e;
  }
  if (starts("Getting image source signatures") || starts("Storing signatures") ||
      line.find("level=fatal") != std::string_view::npos ||
      line.find_first_not_of(" \t") == std::string_view::npos) {
    return std::nullopt;
  }
  e.kind = PullEvent::Kind::kMessage;
  std::optional<std::string> m = LogrusMessage(line);
  e.text = m ? *m : std::string(line);
  return e;
}

}  // namespace gantry::agent::oci
