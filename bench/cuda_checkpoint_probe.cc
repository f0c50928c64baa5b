// cuda_checkpoint_probe: can this machine suspend a process's GPU state (the CUDA driver's
// checkpoint API, through agent/snapshot/cuda_checkpoint.h), and how long does it take?
//
//   build/bench/cuda_checkpoint_probe [--self-test] [--mib 256] [--timeout-ms 10000]
//
// Prints CudaCheckpointer::Available(). With --self-test it first forks a child (before this
// process touches CUDA) that creates a CUDA context on GPU 0, allocates --mib MiB of device
// memory and fills it with a pattern; then it reads the child's GPU state, suspends it
// (lock + checkpoint), reads it again, resumes it (restore + unlock), reads it again, and has the
// child check that its device memory still holds the pattern. It prints each state and the
// time of each step. Exit code: 0 available (and, with --self-test, every step worked), 1 a step
// failed, 2 the checkpoint API is unavailable here (no libcuda.so.1, old driver, no GPU).
#include <dlfcn.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "agent/snapshot/cuda_checkpoint.h"

namespace {

using gantry::Result;
using gantry::Status;
using gantry::agent::CudaCheckpointer;
using gantry::agent::ProcessGpuState;
using gantry::agent::ProcessGpuStateName;

// CUDA driver API used by the child (cuda.h of CUDA 12.x; loaded with dlsym; versioned names
// as cuda.h #defines them: cuMemAlloc -> cuMemAlloc_v2, cuMemcpyHtoD -> cuMemcpyHtoD_v2, ...).
using CUresult = int;
using CUdevice = int;
using CUdeviceptr = unsigned long long;
using CUcontext = struct CUctx_st*;
struct ChildCuda {
  CUresult (*cuInit)(unsigned int);
  CUresult (*cuDeviceGet)(CUdevice*, int);
  CUresult (*cuDevicePrimaryCtxRetain)(CUcontext*, CUdevice);
  CUresult (*cuCtxSetCurrent)(CUcontext);
  CUresult (*cuCtxSynchronize)();
  CUresult (*cuMemAlloc_v2)(CUdeviceptr*, size_t);
  CUresult (*cuMemcpyHtoD_v2)(CUdeviceptr, const void*, size_t);
  CUresult (*cuMemcpyDtoH_v2)(void*, CUdeviceptr, size_t);
};

constexpr int kExitOk = 0;
constexpr int kExitFail = 1;
constexpr int kExitUnavailable = 2;

// Writes one status byte and a message to `fd`.
void Report(int fd, char code, const std::string& message) {
  std::string out(1, code);
  out += message;
  (void)!write(fd, out.data(), out.size());
}

// The child: a CUDA context with `bytes` of device memory holding a pattern. Writes 'R' to
// `to_parent` when ready ('E'+why on error), waits for a byte on `from_parent`, then checks its
// memory and writes 'O' (intact) or 'X'+why.
[[noreturn]] void Child(size_t bytes, int to_parent, int from_parent) {
  ChildCuda cu{};
  void* lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) {
    Report(to_parent, 'E', "cannot load libcuda.so.1");
    _exit(1);
  }
  auto sym = [lib](auto& fn, const char* name) {
    fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(lib, name));
    return fn != nullptr;
  };
  if (!sym(cu.cuInit, "cuInit") || !sym(cu.cuDeviceGet, "cuDeviceGet") ||
      !sym(cu.cuDevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain") ||
      !sym(cu.cuCtxSetCurrent, "cuCtxSetCurrent") ||
      !sym(cu.cuCtxSynchronize, "cuCtxSynchronize") || !sym(cu.cuMemAlloc_v2, "cuMemAlloc_v2") ||
      !sym(cu.cuMemcpyHtoD_v2, "cuMemcpyHtoD_v2") || !sym(cu.cuMemcpyDtoH_v2, "cuMemcpyDtoH_v2")) {
    Report(to_parent, 'E', "libcuda.so.1 lacks a symbol");
    _exit(1);
  }
  std::vector<unsigned char> pattern(bytes), back(bytes);
  for (size_t i = 0; i < bytes; ++i) pattern[i] = static_cast<unsigned char>(i * 131 + 7);
  CUdevice dev = 0;
  CUcontext ctx = nullptr;
  CUdeviceptr mem = 0;
  CUresult r = cu.cuInit(0);
  if (r == 0) r = cu.cuDeviceGet(&dev, 0);
  if (r == 0) r = cu.cuDevicePrimaryCtxRetain(&ctx, dev);
  if (r == 0) r = cu.cuCtxSetCurrent(ctx);
  if (r == 0) r = cu.cuMemAlloc_v2(&mem, bytes);
  if (r == 0) r = cu.cuMemcpyHtoD_v2(mem, pattern.data(), bytes);
  if (r == 0) r = cu.cuCtxSynchronize();
  if (r != 0) {
    Report(to_parent, 'E', "CUDA set-up failed: CUresult " + std::to_string(r));
    _exit(1);
  }
  Report(to_parent, 'R', "");
  char go = 0;
  if (read(from_parent, &go, 1) != 1) _exit(1);
  r = cu.cuMemcpyDtoH_v2(back.data(), mem, bytes);
  if (r != 0) {
    Report(to_parent, 'X', "cuMemcpyDtoH after resume: CUresult " + std::to_string(r));
  } else if (std::memcmp(back.data(), pattern.data(), bytes) != 0) {
    Report(to_parent, 'X', "device memory differs from what was written");
  } else {
    Report(to_parent, 'O', "");
  }
  _exit(0);
}

// Reads the child's next report (at most timeout_ms); "" on timeout or EOF.
std::string ReadReport(int fd, int timeout_ms) {
  pollfd p = {fd, POLLIN, 0};
  if (poll(&p, 1, timeout_ms) != 1) return "";
  char buf[512];
  const ssize_t n = read(fd, buf, sizeof buf);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
}

double MsSince(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

std::string StateText(CudaCheckpointer& c, int pid) {
  Result<ProcessGpuState> s = c.State(pid);
  return s.ok() ? ProcessGpuStateName(*s) : "error: " + s.status().ToString();
}

int SelfTest(size_t mib, int64_t timeout_ms) {
  int up[2], down[2];
  if (pipe(up) != 0 || pipe(down) != 0) {
    std::perror("pipe");
    return kExitFail;
  }
  std::fflush(stdout);
  const pid_t pid = fork();
  if (pid < 0) {
    std::perror("fork");
    return kExitFail;
  }
  if (pid == 0) {
    close(up[0]);
    close(down[1]);
    Child(mib << 20, up[1], down[0]);
  }
  close(up[1]);
  close(down[0]);
  int code = kExitOk;
  auto fail = [&](const std::string& why) {
    std::printf("self-test: FAILED: %s\n", why.c_str());
    code = kExitFail;
  };

  std::unique_ptr<CudaCheckpointer> c = gantry::agent::NewCudaCheckpointer();
  Status available = c->Available();
  std::printf("CudaCheckpointer::Available(): %s\n",
              available.ok() ? "OK" : available.ToString().c_str());
  if (!available.ok()) {
    code = kExitUnavailable;
  } else {
    const auto t0 = std::chrono::steady_clock::now();
    const std::string ready = ReadReport(up[0], 60'000);
    std::printf("child %d: CUDA context + %zu MiB on GPU 0: %s (%.0f ms)\n", static_cast<int>(pid),
                mib,
                ready.empty()     ? "no answer"
                : ready[0] == 'R' ? "ready"
                                  : ready.c_str() + 1,
                MsSince(t0));
    if (ready.empty() || ready[0] != 'R') {
      fail("the child did not set up CUDA");
    } else {
      std::printf("state before: %s\n", StateText(*c, pid).c_str());
      auto t = std::chrono::steady_clock::now();
      Status s = c->Suspend(pid, timeout_ms);
      std::printf("Suspend (lock + checkpoint): %s in %.0f ms; state: %s\n",
                  s.ok() ? "OK" : s.ToString().c_str(), MsSince(t), StateText(*c, pid).c_str());
      if (!s.ok()) fail("Suspend");
      t = std::chrono::steady_clock::now();
      s = c->Resume(pid);
      std::printf("Resume (restore + unlock): %s in %.0f ms; state: %s\n",
                  s.ok() ? "OK" : s.ToString().c_str(), MsSince(t), StateText(*c, pid).c_str());
      if (!s.ok()) fail("Resume");
      if (code == kExitOk) {
        (void)!write(down[1], "V", 1);
        const std::string verdict = ReadReport(up[0], 60'000);
        const bool intact = !verdict.empty() && verdict[0] == 'O';
        std::printf("device memory intact after suspend/resume: %s\n", intact ? "yes"
                                                                       : verdict.empty()
                                                                           ? "no answer"
                                                                           : verdict.c_str() + 1);
        if (!intact) fail("device memory");
      }
    }
  }
  kill(pid, SIGKILL);
  while (waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
  }
  if (code == kExitOk) std::printf("self-test: OK\n");
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  bool self_test = false;
  size_t mib = 256;
  int64_t timeout_ms = 10'000;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--self-test") {
      self_test = true;
    } else if (a == "--mib" && i + 1 < argc) {
      mib = std::strtoull(argv[++i], nullptr, 10);
    } else if (a == "--timeout-ms" && i + 1 < argc) {
      timeout_ms = std::strtoll(argv[++i], nullptr, 10);
    } else {
      std::fprintf(stderr, "usage: %s [--self-test] [--mib 256] [--timeout-ms 10000]\n", argv[0]);
      return kExitFail;
    }
  }
  if (mib < 1 || mib > (1 << 20) || timeout_ms < 1) {
    std::fprintf(stderr, "cuda_checkpoint_probe: bad --mib or --timeout-ms\n");
    return kExitFail;
  }
  if (self_test) return SelfTest(mib, timeout_ms);
  Status available = gantry::agent::NewCudaCheckpointer()->Available();
  std::printf("CudaCheckpointer::Available(): %s\n",
              available.ok() ? "OK" : available.ToString().c_str());
  return available.ok() ? kExitOk : kExitUnavailable;
}
