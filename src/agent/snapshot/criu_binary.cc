// Running the CRIU binary, and FindCriu(). See criu_binary.h and criu.h for the contracts.
#include "agent/snapshot/criu_binary.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <vector>

#include "agent/snapshot/criu.h"
#include "common/fd.h"

namespace gantry::agent {
namespace {

// criu's own stdout and stderr are kept up to this size (its log file holds the details).
constexpr size_t kMaxOutputBytes = 16 * 1024;
// The most of a log file read to quote its end.
constexpr std::streamoff kMaxLogTailBytes = 64 * 1024;

constexpr const char* kInstallHint =
    "run scripts/setup.sh (it builds CRIU >= 4.1 into /usr/local/lib/gantry/criu)";

// Parses "Version: 4.1.1" out of `criu --version` output.
bool ParseVersion(const std::string& text, int* major, int* minor, std::string* full) {
  const size_t at = text.find("Version:");
  if (at == std::string::npos) return false;
  size_t start = text.find_first_not_of(" \t", at + 8);
  if (start == std::string::npos) return false;
  const size_t end = text.find_first_of(" \t\r\n", start);
  *full = text.substr(start, end == std::string::npos ? std::string::npos : end - start);
  return std::sscanf(full->c_str(), "%d.%d", major, minor) == 2;
}

}  // namespace

// CRIU_FAULT=130 (FI_NO_BREAKPOINTS) makes compel trace syscalls instead of relying on hardware
// breakpoints, which do not fire in some VMs (dump then hangs at "Waiting for PID to trap"); it
// costs nothing where they do fire.
SubprocessOptions CriuProcessOptions(int64_t timeout_ms) {
  SubprocessOptions o;
  o.env = {
      "CRIU_FAULT=130",
      std::string("PATH=") + kSystemPath,
      "LC_ALL=C",
  };
  o.timeout_ms = timeout_ms;
  o.max_output = kMaxOutputBytes;
  return o;
}

std::string LogTail(const std::string& path, int lines) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "(no log at " + path + ")";
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  const std::streamoff from = std::max<std::streamoff>(0, size - kMaxLogTailBytes);
  in.seekg(from);
  std::vector<std::string> all;
  std::string line;
  bool first = from > 0;  // a partial first line
  while (std::getline(in, line)) {
    if (first) {
      first = false;
      continue;
    }
    all.push_back(line);
  }
  const size_t tail_start = all.size() > static_cast<size_t>(lines) ? all.size() - lines : 0;
  std::vector<std::string> errors;
  for (size_t i = 0; i < tail_start; ++i) {
    if (all[i].find("Error (") != std::string::npos &&
        all[i].find("RLIMIT_NOFILE") == std::string::npos) {
      errors.push_back(all[i]);
    }
  }
  if (errors.size() > 5) errors.erase(errors.begin(), errors.end() - 5);
  std::string out = path + ":";
  for (const std::string& e : errors) out += "\n  " + e;
  if (!errors.empty()) out += "\n  ...";
  for (size_t i = tail_start; i < all.size(); ++i) out += "\n  " + all[i];
  return out;
}

std::string Describe(const SubprocessResult& r, const std::string& log_path, int lines) {
  std::string out = r.timed_out ? "ran past its time limit and was killed"
                                : "failed (" + DescribeWaitStatus(r.wait_status) + ")";
  std::string output = r.output;
  while (!output.empty() && (output.back() == '\n' || output.back() == ' ')) output.pop_back();
  if (!output.empty()) out += "; its output: " + output;
  out += "; end of " + LogTail(log_path, lines);
  return out;
}

Status CheckCriuBinary(const std::string& path, int64_t timeout_ms) {
  if (path.empty()) return FailedPrecondition("no CRIU binary given; " + std::string(kInstallHint));
  if (access(path.c_str(), X_OK) != 0) {
    return FailedPrecondition("CRIU at " + path + " cannot be run (" + ErrnoText(errno) + "); " +
                              kInstallHint);
  }
  Result<SubprocessResult> r = RunProcess({path, "--version"}, CriuProcessOptions(timeout_ms));
  if (!r.ok()) {
    return FailedPrecondition("CRIU at " + path + ": " + r.status().message() + "; " +
                              kInstallHint);
  }
  int major = 0, minor = 0;
  std::string version;
  if (!r->succeeded() || !ParseVersion(r->output, &major, &minor, &version)) {
    std::string first_line = r->output.substr(0, r->output.find('\n'));
    if (first_line.size() > 200) first_line.resize(200);
    return FailedPrecondition("`" + path + " --version` " +
                              (r->succeeded() ? "printed no version" : "failed") + " (" +
                              first_line + "); " + kInstallHint);
  }
  if (major < 4 || (major == 4 && minor < 1)) {
    return FailedPrecondition("CRIU at " + path + " is version " + version +
                              "; Gantry needs >= 4.1 (older versions fail on Linux >= 6.13 with "
                              "'Unexpected rt vDSO area bounds'); " +
                              kInstallHint);
  }
  return Status::Ok();
}

Result<std::string> FindCriu() {
  std::vector<std::string> candidates;
  if (const char* env = std::getenv("GANTRY_CRIU"); env != nullptr && *env != '\0') {
    candidates.push_back(env);
  }
  candidates.push_back(kGantryCriuPath);
  const std::string on_path = FindExecutable("criu");
  if (!on_path.empty()) candidates.push_back(on_path);
  std::string why;
  for (const std::string& c : candidates) {
    Status s = CheckCriuBinary(c, kVersionTimeoutMs);
    if (s.ok()) return c;
    // Each message ends with the install hint; quote it once at the end.
    std::string m = s.message();
    const std::string hint = std::string("; ") + kInstallHint;
    if (m.size() >= hint.size() && m.compare(m.size() - hint.size(), hint.size(), hint) == 0) {
      m.resize(m.size() - hint.size());
    }
    why += (why.empty() ? "" : "; ") + m;
  }
  if (on_path.empty()) why += "; no criu in PATH";
  return FailedPrecondition("no usable CRIU >= 4.1 ($GANTRY_CRIU, " + std::string(kGantryCriuPath) +
                            ", PATH): " + why + "; " + kInstallHint);
}

}  // namespace gantry::agent
