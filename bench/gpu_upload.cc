// gpu_upload: how fast a forked "template child" uploads model weights from the shared page
// cache to the GPU, compared with the pinned-copy bandwidth of the same GPU (the bar for
// Gantry's GPU cold starts: the weight upload reaches at least 80% of pinned; docs/cold-starts.md,
// "GPUs").
//
//   build/bench/gpu_upload [--mib 488] [--runs 5] [--file PATH] [--threads 8]
//
// What it does, in the order Gantry's templates do it (no CUDA before the fork):
//  1. A probe child loads libcuda.so.1 and counts GPUs; without either, one line says so and
//     the program exits with code 2. The parent itself never calls CUDA.
//  2. The parent writes a raw weights file of --mib MiB (or reuses it: --file PATH, default
//     $TMPDIR/gantry-gpu-upload/weights-<N>mib.bin; an existing --file is used at its own size),
//     maps it the way gantry.weights does (mmap MAP_PRIVATE, PROT_READ|PROT_WRITE, i.e. Python's
//     ACCESS_COPY, never written) and reads every page once, so that it is in the page cache.
//  3. It forks the "template child", which does cuInit, retains GPU 0's primary context,
//     allocates --mib MiB of device memory and measures host->GPU uploads of the whole buffer
//     (median of --runs copies, each followed by cuCtxSynchronize; GB/s = 1e9 bytes/s):
//       - pinned: from a cuMemHostAlloc buffer (the reference: 100%);
//       - pageable: from a malloc'ed, touched buffer;
//       - mapped file: cuMemcpyHtoD straight from the file mapping;
//       - mapped file, registered: cuMemHostRegister(mapping, CU_MEMHOSTREGISTER_READ_ONLY),
//         then the copy; shown with and without the registration's own time;
//       - mapped file, staged: --threads threads each memcpy 8 MiB chunks of the mapping into
//         two pinned staging buffers of their own and cuMemcpyHtoDAsync them on their own stream.
//     Before every mapped-file run the child drops its page-table entries for the mapping
//     (madvise MADV_DONTNEED; the page cache is untouched), so each run is the first upload of a
//     freshly forked child, page faults included.
//  4. It prints the GPU, the driver version (cuDriverGetVersion) and one markdown table with
//     each figure's ratio to pinned, then whether the best mapped-file path reaches 80%.
// Exit code: 0 it does, 1 it does not (or a CUDA call failed: the message says which), 2 no
// libcuda.so.1 or no GPU.
//
// Linked with libdl and pthread only: the CUDA driver API is declared in cuda_driver_api.h and
// loaded with dlopen/dlsym at run time, so this builds on machines without CUDA.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "cuda_driver_api.h"

namespace {

using cuda_driver::CU_EVENT_DISABLE_TIMING;
using cuda_driver::CU_MEMHOSTREGISTER_READ_ONLY;
using cuda_driver::CU_STREAM_NON_BLOCKING;
using cuda_driver::CUcontext;
using cuda_driver::Cuda;
using cuda_driver::CUDA_SUCCESS;
using cuda_driver::CUdevice;
using cuda_driver::CUdeviceptr;
using cuda_driver::CUevent;
using cuda_driver::CUresult;
using cuda_driver::CUstream;
using cuda_driver::LoadCuda;

Cuda g_cu;  // filled in the children only
volatile unsigned char g_sink;

std::string CuError(CUresult r) {
  const char* s = nullptr;
  if (g_cu.cuGetErrorString == nullptr || g_cu.cuGetErrorString(r, &s) != CUDA_SUCCESS) s = "?";
  return "CUresult " + std::to_string(r) + " (" + s + ")";
}

// Evaluates a CUDA call; on failure prints it and returns `ret` from the enclosing function.
#define CU_OR_RETURN(call, ret)                                               \
  do {                                                                        \
    const CUresult r_ = (call);                                               \
    if (r_ != CUDA_SUCCESS) {                                                 \
      std::printf("gpu_upload: %s failed: %s\n", #call, CuError(r_).c_str()); \
      return ret;                                                             \
    }                                                                         \
  } while (0)

constexpr int kExitPass = 0;
constexpr int kExitFail = 1;
constexpr int kExitNoGpu = 2;
constexpr double kBar = 0.80;
constexpr size_t kMiB = size_t{1} << 20;
constexpr size_t kStageChunk = 8 * kMiB;

struct Options {
  size_t mib = 488;
  int runs = 5;
  std::string file;
  int threads = 8;
};

using Clock = std::chrono::steady_clock;
double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}
double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

// --- Children ----------------------------------------------------------------------------------

// The probe child: is there a driver and a GPU? Prints the one line and exits 2 if not.
[[noreturn]] void ProbeChild() {
  std::string why;
  if (!LoadCuda(&g_cu, &why)) {
    std::printf("gpu_upload: no GPU to measure: %s\n", why.c_str());
    std::fflush(stdout);
    _exit(kExitNoGpu);
  }
  int count = 0;
  CUresult r = g_cu.cuInit(0);
  if (r == CUDA_SUCCESS) r = g_cu.cuDeviceGetCount(&count);
  if (r != CUDA_SUCCESS || count < 1) {
    std::printf("gpu_upload: no GPU to measure: %s\n",
                r != CUDA_SUCCESS ? ("cuInit/cuDeviceGetCount: " + CuError(r)).c_str()
                                  : "the driver sees no GPU");
    std::fflush(stdout);
    _exit(kExitNoGpu);
  }
  _exit(kExitPass);
}

// Times `runs` whole-buffer uploads done by `upload` (which returns false on a CUDA error, having
// printed it), each after `before` (untimed). Returns the seconds of each run, or {} on error.
template <typename Before, typename Upload>
std::vector<double> TimeRuns(int runs, Before before, Upload upload) {
  std::vector<double> out;
  for (int i = 0; i < runs; ++i) {
    before();
    const auto t0 = Clock::now();
    if (!upload()) return {};
    if (const CUresult r = g_cu.cuCtxSynchronize(); r != CUDA_SUCCESS) {
      std::printf("gpu_upload: cuCtxSynchronize failed: %s\n", CuError(r).c_str());
      return {};
    }
    out.push_back(Seconds(t0, Clock::now()));
  }
  return out;
}

bool Copy(CUdeviceptr dst, const void* src, size_t bytes) {
  const CUresult r = g_cu.cuMemcpyHtoD_v2(dst, src, bytes);
  if (r != CUDA_SUCCESS) std::printf("gpu_upload: cuMemcpyHtoD failed: %s\n", CuError(r).c_str());
  return r == CUDA_SUCCESS;
}

// The staged upload: `threads` threads; thread t copies chunks t, t+threads, ... of `src` through
// its two pinned staging buffers on its own stream. Returns false on a CUDA error.
struct Stager {
  struct Lane {
    CUstream stream = nullptr;
    void* buf[2] = {nullptr, nullptr};
    CUevent done[2] = {nullptr, nullptr};
  };
  std::vector<Lane> lanes;
  CUcontext ctx = nullptr;

  bool Init(CUcontext c, int threads) {
    ctx = c;
    lanes.resize(threads);
    for (Lane& l : lanes) {
      CU_OR_RETURN(g_cu.cuStreamCreate(&l.stream, CU_STREAM_NON_BLOCKING), false);
      for (int i = 0; i < 2; ++i) {
        CU_OR_RETURN(g_cu.cuMemHostAlloc(&l.buf[i], kStageChunk, 0), false);
        std::memset(l.buf[i], 0, kStageChunk);
        CU_OR_RETURN(g_cu.cuEventCreate(&l.done[i], CU_EVENT_DISABLE_TIMING), false);
      }
    }
    return true;
  }
  void Destroy() {
    for (Lane& l : lanes) {
      for (int i = 0; i < 2; ++i) {
        if (l.done[i]) g_cu.cuEventDestroy_v2(l.done[i]);
        if (l.buf[i]) g_cu.cuMemFreeHost(l.buf[i]);
      }
      if (l.stream) g_cu.cuStreamDestroy_v2(l.stream);
    }
  }
  bool Upload(CUdeviceptr dst, const char* src, size_t bytes) {
    const size_t chunks = (bytes + kStageChunk - 1) / kStageChunk;
    std::atomic<bool> ok{true};
    std::vector<std::thread> workers;
    for (size_t t = 0; t < lanes.size(); ++t) {
      workers.emplace_back([&, t] {
        Lane& l = lanes[t];
        if (g_cu.cuCtxSetCurrent(ctx) != CUDA_SUCCESS) {
          ok = false;
          return;
        }
        int slot = 0;
        bool used[2] = {false, false};
        for (size_t c = t; c < chunks && ok; c += lanes.size(), slot ^= 1) {
          const size_t off = c * kStageChunk;
          const size_t len = std::min(kStageChunk, bytes - off);
          if (used[slot] && g_cu.cuEventSynchronize(l.done[slot]) != CUDA_SUCCESS) ok = false;
          std::memcpy(l.buf[slot], src + off, len);
          if (g_cu.cuMemcpyHtoDAsync_v2(dst + off, l.buf[slot], len, l.stream) != CUDA_SUCCESS ||
              g_cu.cuEventRecord(l.done[slot], l.stream) != CUDA_SUCCESS) {
            ok = false;
          }
          used[slot] = true;
        }
        if (g_cu.cuStreamSynchronize(l.stream) != CUDA_SUCCESS) ok = false;
      });
    }
    for (std::thread& w : workers) w.join();
    if (!ok) std::printf("gpu_upload: a staged copy failed\n");
    return ok;
  }
};

struct Row {
  std::string path;
  double seconds = 0;  // median; 0 = not measured
  std::string note;
};

// The GPU the template child measures: GPU 0, its primary context current, and a device buffer
// of the whole upload's size.
struct Gpu {
  CUdevice dev = 0;
  CUcontext ctx = nullptr;
  CUdeviceptr dst = 0;
};

// No preparation before a run.
void Nothing() {}

// The upload paths' figures, appended to `rows` in the order they are measured (rows[0]: pinned,
// the reference). Each Measure*() returns false on a CUDA error (having printed it).
bool MeasurePinned(const Options& o, const Gpu& g, size_t bytes, std::vector<Row>* rows) {
  void* pinned = nullptr;
  CU_OR_RETURN(g_cu.cuMemHostAlloc(&pinned, bytes, 0), false);
  std::memset(pinned, 1, bytes);
  if (!Copy(g.dst, pinned, bytes)) return false;  // warm-up
  std::vector<double> t = TimeRuns(o.runs, Nothing, [&] { return Copy(g.dst, pinned, bytes); });
  if (t.empty()) return false;
  rows->push_back({"pinned buffer (cuMemHostAlloc)", Median(t), "reference"});
  g_cu.cuMemFreeHost(pinned);
  return true;
}

bool MeasurePageable(const Options& o, const Gpu& g, size_t bytes, std::vector<Row>* rows) {
  char* pageable = static_cast<char*>(std::malloc(bytes));
  if (pageable == nullptr) {
    std::printf("gpu_upload: malloc(%zu) failed\n", bytes);
    return false;
  }
  std::memset(pageable, 1, bytes);
  if (!Copy(g.dst, pageable, bytes)) return false;
  std::vector<double> t = TimeRuns(o.runs, Nothing, [&] { return Copy(g.dst, pageable, bytes); });
  if (t.empty()) return false;
  rows->push_back({"pageable buffer (malloc, touched)", Median(t), ""});
  std::free(pageable);
  return true;
}

// Before each mapped-file run: forget this child's page-table entries for the mapping, as in a
// freshly forked child (the page cache keeps the data; nothing was written to the mapping).
void FreshPtes(char* mapped, size_t bytes) { madvise(mapped, bytes, MADV_DONTNEED); }

bool MeasureMapped(const Options& o, const Gpu& g, char* mapped, size_t bytes,
                   std::vector<Row>* rows) {
  auto fresh_ptes = [&] { FreshPtes(mapped, bytes); };
  std::vector<double> t = TimeRuns(o.runs, fresh_ptes, [&] { return Copy(g.dst, mapped, bytes); });
  if (t.empty()) return false;
  rows->push_back({"mapped file: cuMemcpyHtoD from the mapping", Median(t), ""});
  return true;
}

// Registered read-only, the registration timed separately. A failed registration is a row that
// says so, not an error.
bool MeasureRegistered(const Options& o, const Gpu& g, char* mapped, size_t bytes,
                       std::vector<Row>* rows) {
  std::vector<double> reg_s, copy_s;
  std::string reg_error;
  for (int i = 0; i < o.runs && reg_error.empty(); ++i) {
    FreshPtes(mapped, bytes);
    const auto t0 = Clock::now();
    const CUresult r = g_cu.cuMemHostRegister_v2(mapped, bytes, CU_MEMHOSTREGISTER_READ_ONLY);
    const auto t1 = Clock::now();
    if (r != CUDA_SUCCESS) {
      reg_error = CuError(r);
      break;
    }
    const bool copied = Copy(g.dst, mapped, bytes) && g_cu.cuCtxSynchronize() == CUDA_SUCCESS;
    const auto t2 = Clock::now();
    g_cu.cuMemHostUnregister(mapped);
    if (!copied) return false;
    reg_s.push_back(Seconds(t0, t1));
    copy_s.push_back(Seconds(t1, t2));
  }
  if (!reg_error.empty()) {
    rows->push_back({"mapped file: cuMemHostRegister(READ_ONLY) + copy", 0,
                     "cuMemHostRegister failed: " + reg_error});
    return true;
  }
  std::vector<double> both;
  for (size_t i = 0; i < reg_s.size(); ++i) both.push_back(reg_s[i] + copy_s[i]);
  char note[96];
  std::snprintf(note, sizeof note, "cuMemHostRegister alone: %.1f ms", Median(reg_s) * 1e3);
  rows->push_back({"mapped file: cuMemHostRegister(READ_ONLY) + copy", Median(both), note});
  rows->push_back({"mapped file: copy once registered", Median(copy_s), "registration excluded"});
  return true;
}

// Staged through pinned buffers by several threads.
bool MeasureStaged(const Options& o, const Gpu& g, char* mapped, size_t bytes,
                   std::vector<Row>* rows) {
  Stager stager;
  if (!stager.Init(g.ctx, o.threads)) return false;
  if (!stager.Upload(g.dst, mapped, bytes)) return false;  // warm-up
  auto fresh_ptes = [&] { FreshPtes(mapped, bytes); };
  std::vector<double> t =
      TimeRuns(o.runs, fresh_ptes, [&] { return stager.Upload(g.dst, mapped, bytes); });
  stager.Destroy();
  if (t.empty()) return false;
  char staged[128];
  std::snprintf(staged, sizeof staged, "mapped file: staged, %d threads x 2 x %zu MiB pinned",
                o.threads, kStageChunk / kMiB);
  rows->push_back({staged, Median(t), ""});
  return true;
}

// Prints the table of `rows` (rows[0]: pinned) and the verdict; returns the exit code.
int Report(const std::vector<Row>& rows, size_t bytes) {
  const double gb = static_cast<double>(bytes) / 1e9;
  const double pinned_gbps = gb / rows[0].seconds;
  std::printf("| upload path (%zu MiB) | GB/s | vs pinned | note |\n", bytes / kMiB);
  std::printf("|---|---:|---:|---|\n");
  std::string best;
  double best_ratio = 0;
  for (const Row& row : rows) {
    if (row.seconds <= 0) {
      std::printf("| %s | - | - | %s |\n", row.path.c_str(), row.note.c_str());
      continue;
    }
    const double gbps = gb / row.seconds;
    const double ratio = gbps / pinned_gbps;
    std::printf("| %s | %.1f | %.0f%% | %s |\n", row.path.c_str(), gbps, ratio * 100,
                row.note.c_str());
    // A mapped-file path counts with everything it costs (not "copy once registered").
    if (row.path.rfind("mapped file", 0) == 0 && row.note != "registration excluded" &&
        ratio > best_ratio) {
      best_ratio = ratio;
      best = row.path;
    }
  }
  const bool pass = best_ratio >= kBar;
  std::printf(
      "\nmapped-file upload in a forked child: best path \"%s\" reaches %.0f%% of pinned "
      "(%.1f of %.1f GB/s): %s (bar: >= %.0f%%)\n",
      best.c_str(), best_ratio * 100, best_ratio * pinned_gbps, pinned_gbps, pass ? "PASS" : "FAIL",
      kBar * 100);
  return pass ? kExitPass : kExitFail;
}

// Initialises CUDA on GPU 0 into *g and prints what it runs on. Returns false on a CUDA error.
bool OpenGpu(const Options& o, size_t bytes, const std::string& file, Gpu* g) {
  CU_OR_RETURN(g_cu.cuInit(0), false);
  int version = 0;
  CU_OR_RETURN(g_cu.cuDriverGetVersion(&version), false);
  CUdevice dev = 0;
  CU_OR_RETURN(g_cu.cuDeviceGet(&dev, 0), false);
  char name[256] = {0};
  CU_OR_RETURN(g_cu.cuDeviceGetName(name, sizeof name - 1, dev), false);
  CUcontext ctx = nullptr;
  CU_OR_RETURN(g_cu.cuDevicePrimaryCtxRetain(&ctx, dev), false);
  CU_OR_RETURN(g_cu.cuCtxSetCurrent(ctx), false);
  CUdeviceptr dst = 0;
  CU_OR_RETURN(g_cu.cuMemAlloc_v2(&dst, bytes), false);
  *g = Gpu{dev, ctx, dst};

  std::printf("GPU 0: %s; CUDA driver API %d.%d (cuDriverGetVersion %d); forked child pid %d\n",
              name, version / 1000, version % 1000 / 10, version, static_cast<int>(getpid()));
  std::printf(
      "weights: %s, %zu MiB, in the page cache; median of %d uploads of the whole "
      "buffer; GB/s = 1e9 bytes/s\n\n",
      file.c_str(), bytes / kMiB, o.runs);
  std::fflush(stdout);
  return true;
}

// The template child: everything CUDA happens here.
int TemplateChild(const Options& o, char* mapped, size_t bytes, const std::string& file) {
  std::string why;
  if (!LoadCuda(&g_cu, &why)) {
    std::printf("gpu_upload: no GPU to measure: %s\n", why.c_str());
    return kExitNoGpu;
  }
  Gpu g;
  if (!OpenGpu(o, bytes, file, &g)) return kExitFail;
  std::vector<Row> rows;
  if (!MeasurePinned(o, g, bytes, &rows) || !MeasurePageable(o, g, bytes, &rows) ||
      !MeasureMapped(o, g, mapped, bytes, &rows) ||
      !MeasureRegistered(o, g, mapped, bytes, &rows) ||
      !MeasureStaged(o, g, mapped, bytes, &rows)) {
    return kExitFail;
  }
  g_cu.cuMemFree_v2(g.dst);
  g_cu.cuDevicePrimaryCtxRelease_v2(g.dev);
  return Report(rows, bytes);
}

// --- Parent ------------------------------------------------------------------------------------

// Runs `child` in a forked process; returns its exit code (1 if it died of a signal).
template <typename Child>
int RunChild(Child child) {
  std::fflush(stdout);
  std::fflush(stderr);
  const pid_t pid = fork();
  if (pid < 0) {
    std::printf("gpu_upload: fork: %s\n", std::strerror(errno));
    return kExitFail;
  }
  if (pid == 0) {
    const int code = child();
    std::fflush(stdout);
    _exit(code);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  std::printf("gpu_upload: child %d died of signal %d\n", static_cast<int>(pid),
              WIFSIGNALED(status) ? WTERMSIG(status) : 0);
  return kExitFail;
}

// Creates `path` with `bytes` of non-zero data unless it exists with that size.
bool PrepareFile(const std::string& path, size_t bytes) {
  struct stat st;
  if (stat(path.c_str(), &st) == 0 && static_cast<size_t>(st.st_size) == bytes) return true;
  const std::string tmp = path + ".tmp";
  const int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    std::printf("gpu_upload: cannot create %s: %s\n", tmp.c_str(), std::strerror(errno));
    return false;
  }
  std::vector<char> chunk(kMiB);
  for (size_t i = 0; i < chunk.size(); ++i) chunk[i] = static_cast<char>(i * 7 + 1);
  for (size_t done = 0; done < bytes;) {
    const size_t n = std::min(chunk.size(), bytes - done);
    const ssize_t w = write(fd, chunk.data(), n);
    if (w <= 0) {
      std::printf("gpu_upload: writing %s: %s\n", tmp.c_str(), std::strerror(errno));
      close(fd);
      unlink(tmp.c_str());
      return false;
    }
    done += static_cast<size_t>(w);
  }
  close(fd);
  return rename(tmp.c_str(), path.c_str()) == 0;
}

bool ParseArgs(int argc, char** argv, Options* o) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const bool has_value = i + 1 < argc;
    if (a == "--mib" && has_value) {
      o->mib = std::strtoull(argv[++i], nullptr, 10);
    } else if (a == "--runs" && has_value) {
      o->runs = std::atoi(argv[++i]);
    } else if (a == "--file" && has_value) {
      o->file = argv[++i];
    } else if (a == "--threads" && has_value) {
      o->threads = std::atoi(argv[++i]);
    } else {
      return false;
    }
  }
  return o->mib >= 1 && o->mib <= 1 << 20 && o->runs >= 1 && o->runs <= 100 && o->threads >= 1 &&
         o->threads <= 64;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  if (!ParseArgs(argc, argv, &o)) {
    std::fprintf(stderr,
                 "usage: %s [--mib 488] [--runs 5] [--file PATH] [--threads 8]\n"
                 "  (--mib 1..1048576, --runs 1..100, --threads 1..64)\n",
                 argv[0]);
    return kExitFail;
  }
  // 1. Driver and GPU, asked by a child: this process stays free of CUDA.
  if (const int probe = RunChild([] {
        ProbeChild();
        return 0;
      });
      probe != kExitPass) {
    return probe == kExitNoGpu ? kExitNoGpu : kExitFail;
  }

  // 2. The weights file, mapped like gantry.weights and read once.
  if (o.file.empty()) {
    const char* tmpdir = std::getenv("TMPDIR");
    const std::string dir = std::string(tmpdir && *tmpdir ? tmpdir : "/tmp") + "/gantry-gpu-upload";
    mkdir(dir.c_str(), 0755);
    o.file = dir + "/weights-" + std::to_string(o.mib) + "mib.bin";
  }
  struct stat st;
  const bool given_exists = stat(o.file.c_str(), &st) == 0 && st.st_size > 0;
  const size_t bytes = given_exists ? static_cast<size_t>(st.st_size) : o.mib * kMiB;
  if (!given_exists && !PrepareFile(o.file, bytes)) return kExitFail;
  const int fd = open(o.file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    std::printf("gpu_upload: cannot open %s: %s\n", o.file.c_str(), std::strerror(errno));
    return kExitFail;
  }
  // Python's mmap ACCESS_COPY: MAP_PRIVATE with PROT_READ | PROT_WRITE; nothing writes to it.
  void* map = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  close(fd);
  if (map == MAP_FAILED) {
    std::printf("gpu_upload: mmap %s: %s\n", o.file.c_str(), std::strerror(errno));
    return kExitFail;
  }
  char* mapped = static_cast<char*>(map);
  const long page = sysconf(_SC_PAGESIZE);
  unsigned char sum = 0;
  for (size_t off = 0; off < bytes; off += static_cast<size_t>(page)) sum += mapped[off];
  g_sink = sum;  // keeps the reads

  // 3. The template child: fork first, CUDA afterwards.
  return RunChild([&] { return TemplateChild(o, mapped, bytes, o.file); });
}
