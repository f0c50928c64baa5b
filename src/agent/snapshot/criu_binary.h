#pragma once
// Running the CRIU binary for the snapshotter (criu.h: "How criu is run"): the options of every
// criu process, the version check, and what criu's log says when a command fails. Internal to
// src/agent/snapshot; thread-safe.

#include <cstdint>
#include <string>

#include "common/status.h"
#include "common/subprocess.h"

namespace gantry::agent {

// `criu --version` is fast; do not let a stuck binary hold Check() for the whole timeout.
inline constexpr int64_t kVersionTimeoutMs = 10'000;

// The options of every criu process, with its time limit: its whole environment, and how much
// of its output to keep.
SubprocessOptions CriuProcessOptions(int64_t timeout_ms);

// The end of criu's log at `path`: earlier "Error" lines that are not part of the last `lines`
// lines (up to 5), then the last `lines` lines. Skips the harmless RLIMIT_NOFILE error that
// CRIU logs where root lacks CAP_SYS_RESOURCE.
std::string LogTail(const std::string& path, int lines);

// What went wrong with a criu command, for an error message: its exit, its own output if any,
// and the end of its log.
std::string Describe(const SubprocessResult& r, const std::string& log_path, int lines);

// Ok when the CRIU at `path` runs and reports version >= 4.1 (within timeout_ms); else
// FailedPrecondition saying what it lacks, ending with the install hint.
Status CheckCriuBinary(const std::string& path, int64_t timeout_ms);

}  // namespace gantry::agent
