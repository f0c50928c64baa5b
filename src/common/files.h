#pragma once
// Files the processes of Gantry write for themselves (the data directory, keys, blobs): created
// private from their first byte, never through a symlink, durable before they are used.
// Thread-safe (the filesystem is the only state).

#include <sys/types.h>

#include <string>

#include "common/status.h"

namespace gantry {

// Writes `data` to a new file `path` with `mode` (never one already there, never through a
// symlink) and fsyncs it. Removes what it wrote on any failure.
Status WriteNewFile(const std::string& path, const std::string& data, mode_t mode);

// Makes a rename in `dir` durable.
Status SyncDir(const std::string& dir);

// Replaces `path` with a file holding `data` (mode `mode`): written whole to a temporary file
// beside it, fsynced, renamed over it, and the rename made durable. A reader sees the old file
// or the new one, never a mix; on failure `path` is unchanged and no temporary file is left.
Status ReplaceFile(const std::string& path, const std::string& data, mode_t mode);

// A directory that only this user may enter: `path` is made (parents too) with mode 0700 when
// absent. One that exists must be a directory (a symlink to one is accepted only for
// `path` itself, as an operator may place a data directory on another disk); when it is
// ours with another mode it is given `mode`, and the returned note says so ("" otherwise).
// `mode` replaces 0700 where a caller must let others traverse it (0711).
Result<std::string> MakePrivateDir(const std::string& path, mode_t mode = 0700);

// Removes `path` and everything under it without following a symlink at any level, even one
// that another user's process swaps in while the removal runs (every step is relative to an
// open directory descriptor): safe to run as root on a tree an untrusted user can write.
// Ok when `path` does not exist.
Status RemoveTree(const std::string& path);

}  // namespace gantry
