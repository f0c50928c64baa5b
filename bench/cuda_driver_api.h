#pragma once
// The CUDA driver API as gpu_upload uses it, declared here (cuda.h of CUDA 12.x; no CUDA header
// or library at build time) and loaded at run time with dlopen/dlsym: LoadCuda(). Bench-only;
// header-only.

#include <dlfcn.h>

#include <string>
#include <type_traits>

namespace cuda_driver {

// Types: cuda.h `typedef enum cudaError_enum {...} CUresult` (int-sized), `typedef int
// CUdevice`, `typedef unsigned long long CUdeviceptr` (64-bit platforms), opaque struct
// pointers for contexts, streams and events.
using CUresult = int;
using CUdevice = int;
using CUdeviceptr = unsigned long long;
using CUcontext = struct CUctx_st*;
using CUstream = struct CUstream_st*;
using CUevent = struct CUevent_st*;
constexpr CUresult CUDA_SUCCESS = 0;
// cuda.h: "#define CU_MEMHOSTREGISTER_READ_ONLY 0x08" (since CUDA 11.1): the device only reads
// the range, so a read-only or private file mapping can be registered without copying it.
constexpr unsigned CU_MEMHOSTREGISTER_READ_ONLY = 0x08;
// cuda.h: CU_STREAM_NON_BLOCKING = 0x1 (CUstream_flags), CU_EVENT_DISABLE_TIMING = 0x2.
constexpr unsigned CU_STREAM_NON_BLOCKING = 0x1;
constexpr unsigned CU_EVENT_DISABLE_TIMING = 0x2;

// The entry points, by their exported names. cuda.h maps several API names onto versioned
// symbols (`#define cuMemAlloc cuMemAlloc_v2` and so on); dlsym needs those names, since the
// unversioned ones are the old ABI (32-bit sizes). Signatures as in the CUDA 12.x driver API
// reference (docs.nvidia.com/cuda/cuda-driver-api).
struct Cuda {
  CUresult (*cuInit)(unsigned int flags);
  CUresult (*cuDriverGetVersion)(int* version);
  CUresult (*cuGetErrorString)(CUresult error, const char** str);
  CUresult (*cuDeviceGetCount)(int* count);
  CUresult (*cuDeviceGet)(CUdevice* device, int ordinal);
  CUresult (*cuDeviceGetName)(char* name, int len, CUdevice dev);
  CUresult (*cuDevicePrimaryCtxRetain)(CUcontext* ctx, CUdevice dev);
  CUresult (*cuDevicePrimaryCtxRelease_v2)(CUdevice dev);
  CUresult (*cuCtxSetCurrent)(CUcontext ctx);
  CUresult (*cuCtxSynchronize)();
  CUresult (*cuMemAlloc_v2)(CUdeviceptr* dptr, size_t bytes);
  CUresult (*cuMemFree_v2)(CUdeviceptr dptr);
  CUresult (*cuMemHostAlloc)(void** pp, size_t bytes, unsigned int flags);
  CUresult (*cuMemFreeHost)(void* p);
  CUresult (*cuMemHostRegister_v2)(void* p, size_t bytes, unsigned int flags);
  CUresult (*cuMemHostUnregister)(void* p);
  CUresult (*cuMemcpyHtoD_v2)(CUdeviceptr dst, const void* src, size_t bytes);
  CUresult (*cuMemcpyHtoDAsync_v2)(CUdeviceptr dst, const void* src, size_t bytes, CUstream s);
  CUresult (*cuStreamCreate)(CUstream* stream, unsigned int flags);
  CUresult (*cuStreamDestroy_v2)(CUstream stream);
  CUresult (*cuStreamSynchronize)(CUstream stream);
  CUresult (*cuEventCreate)(CUevent* event, unsigned int flags);
  CUresult (*cuEventRecord)(CUevent event, CUstream stream);
  CUresult (*cuEventSynchronize)(CUevent event);
  CUresult (*cuEventDestroy_v2)(CUevent event);
};

// Loads libcuda.so.1 into *cu; false (with *why) if the library or a symbol is missing.
inline bool LoadCuda(Cuda* cu, std::string* why) {
  void* lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) {
    const char* e = dlerror();
    *why = std::string("cannot load libcuda.so.1 (") + (e ? e : "?") + ")";
    return false;
  }
  bool ok = true;
  auto sym = [&](auto& fn, const char* name) {
    fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(lib, name));
    if (fn == nullptr) {
      *why += std::string(why->empty() ? "libcuda.so.1 lacks " : ", ") + name;
      ok = false;
    }
  };
  sym(cu->cuInit, "cuInit");
  sym(cu->cuDriverGetVersion, "cuDriverGetVersion");
  sym(cu->cuGetErrorString, "cuGetErrorString");
  sym(cu->cuDeviceGetCount, "cuDeviceGetCount");
  sym(cu->cuDeviceGet, "cuDeviceGet");
  sym(cu->cuDeviceGetName, "cuDeviceGetName");
  sym(cu->cuDevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain");
  sym(cu->cuDevicePrimaryCtxRelease_v2, "cuDevicePrimaryCtxRelease_v2");
  sym(cu->cuCtxSetCurrent, "cuCtxSetCurrent");
  sym(cu->cuCtxSynchronize, "cuCtxSynchronize");
  sym(cu->cuMemAlloc_v2, "cuMemAlloc_v2");
  sym(cu->cuMemFree_v2, "cuMemFree_v2");
  sym(cu->cuMemHostAlloc, "cuMemHostAlloc");
  sym(cu->cuMemFreeHost, "cuMemFreeHost");
  sym(cu->cuMemHostRegister_v2, "cuMemHostRegister_v2");
  sym(cu->cuMemHostUnregister, "cuMemHostUnregister");
  sym(cu->cuMemcpyHtoD_v2, "cuMemcpyHtoD_v2");
  sym(cu->cuMemcpyHtoDAsync_v2, "cuMemcpyHtoDAsync_v2");
  sym(cu->cuStreamCreate, "cuStreamCreate");
  sym(cu->cuStreamDestroy_v2, "cuStreamDestroy_v2");
  sym(cu->cuStreamSynchronize, "cuStreamSynchronize");
  sym(cu->cuEventCreate, "cuEventCreate");
  sym(cu->cuEventRecord, "cuEventRecord");
  sym(cu->cuEventSynchronize, "cuEventSynchronize");
  sym(cu->cuEventDestroy_v2, "cuEventDestroy_v2");
  return ok;
}

}  // namespace cuda_driver
