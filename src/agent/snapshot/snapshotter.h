#pragma once
// Snapshotter: how the node agent checkpoints a warmed-up worker (the "template") to local disk
// and restores it later, e.g. after the agent restarts. The agent talks to this interface only;
// NewCriuSnapshotter() (criu.h) is the real one and FakeSnapshotter (fake_snapshotter.h) stands
// in for it in agent tests.
//
// Threading: every method blocks until its work is done and may be called from any thread,
// concurrently with the others. Two calls must not use the same image directory at once.
//
// What a snapshot holds: the memory, registers, open files (by path) and state of a process tree.
// Regular files (model weights) are not copied into it, and neither are the unmodified pages of
// file-backed mappings; those files must still exist, unchanged, when the image is restored.

#include <string>

#include "common/status.h"

namespace gantry::agent {

enum class RestoreMode {
  // Every page is copied into the restored process before Restore() returns.
  kFull,
  // Restore() returns as soon as the process tree exists; its anonymous memory is copied in
  // afterwards, on first touch and in the background (userfaultfd), by a helper process the
  // snapshotter owns. Much faster to return; the process runs slower until its pages arrive.
  // The image directory must not be changed (no Dump() into it) until they have all arrived,
  // which takes less time than a full restore (measured), whether or not the process runs.
  kLazy,
};

class Snapshotter {
 public:
  virtual ~Snapshotter() = default;

  // Ok if snapshots can be taken here (the checkpoint tool exists and is recent enough);
  // otherwise FailedPrecondition, whose message says what is missing and how to install it.
  virtual Status Check() = 0;

  // Checkpoints the process tree rooted at `pid` into `dir`, which is created if needed and
  // emptied first. With leave_running the tree keeps running afterwards; without it, the tree
  // is SIGKILLed once the image is complete, and the caller still has to reap `pid` (it stays a
  // zombie of its parent until then).
  // Errors: InvalidArgument (pid <= 0, bad dir), NotFound (no such process), Internal (the
  // checkpoint failed; the message quotes the tool's log; the tree keeps running), and
  // DeadlineExceeded (the tool ran past its time limit and was killed, which may leave the tree
  // unusable; kill it). On error `dir` holds no usable image.
  virtual Status Dump(int pid, const std::string& dir, bool leave_running) = 0;

  // Restores the image in `dir` (written by Dump()) and returns the pid of the restored root,
  // which is the pid it had when dumped. The restored tree is detached from the snapshotter: it
  // is reparented to the nearest child subreaper, so the caller should have called
  // prctl(PR_SET_CHILD_SUBREAPER, 1) and then owns it (must waitpid() it). A process dumped
  // while stopped (SIGSTOP) comes back stopped, before running any instruction: the caller
  // SIGCONTs it after e.g. moving it into a cgroup. The process stays in the caller's session.
  // Preconditions: every pid of the dumped tree is free. The caller kills and reaps the
  // original before restoring (CRIU fails with "Can't fork for PID: File exists" if a pid is
  // still in use, even by an unreaped zombie). Hence an image can be restored once at a time.
  // Writes its logs (and the like) into `dir`.
  // Errors: InvalidArgument (empty dir), NotFound (no image in `dir`), FailedPrecondition (a
  // pid of the tree is in use), DeadlineExceeded (the tool ran past its time limit), Internal
  // (the restore failed; the message quotes the tool's log). On error nothing of the tree is
  // left running, except possibly after DeadlineExceeded.
  // `netns_fd` (>= 0): the network namespace the tree is restored into, for a tree dumped in a
  // network namespace other than the snapshotter's (which Dump() leaves out of the image);
  // -1: the snapshotter's.
  virtual Result<int> Restore(const std::string& dir, RestoreMode mode, int netns_fd = -1) = 0;
};

}  // namespace gantry::agent
