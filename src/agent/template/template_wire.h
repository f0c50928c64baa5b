#pragma once
// The agent's end of a template's Unix socket (protocol in
// sdk/python/gantry/serverless/template.py): one JSON message per line, a fork request's output
// descriptors passed along with it (SCM_RIGHTS). Internal to src/agent/template.
//
// Both calls block the calling thread (ReadLine() at most `timeout_ms`); they keep no state
// besides the caller's `buffer`, so they are safe on different sockets from different threads.

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace gantry::agent {

// Sends `text` with `fds` attached (SCM_RIGHTS). Unavailable when the socket fails (the
// template is gone).
Status SendWithFds(int sock, const std::string& text, const std::vector<int>& fds);

// Reads one line (without its newline) from `sock` within timeout_ms (0: from what has come
// already); `buffer` keeps what came after it. Unavailable at EOF, DeadlineExceeded on timeout,
// Internal for a line over 1 MiB.
Result<std::string> ReadLine(int sock, std::string* buffer, int64_t timeout_ms);

}  // namespace gantry::agent
