#include "agent/gpu_inventory.h"

#include <dlfcn.h>

namespace gantry::agent {

Result<std::vector<protocol::GpuDevice>> ParseFakeGpus(const std::string& spec) {
  std::vector<protocol::GpuDevice> out;
  size_t pos = 0;
  while (pos < spec.size()) {
    size_t comma = spec.find(',', pos);
    std::string item =
        spec.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    pos = comma == std::string::npos ? spec.size() : comma + 1;
    if (item.empty()) continue;
    size_t colon = item.rfind(':');
    std::string type = item.substr(0, colon);
    int count = 1;
    if (colon != std::string::npos) {
      char* end = nullptr;
      long n = strtol(item.c_str() + colon + 1, &end, 10);
      if (*end != '\0' || n < 1 || n > 64) {
        return InvalidArgument("--fake-gpus: bad count in '" + item + "' (want TYPE:N)");
      }
      count = static_cast<int>(n);
    }
    if (type.empty()) return InvalidArgument("--fake-gpus: empty GPU type in '" + item + "'");
    for (int i = 0; i < count; ++i) {
      int index = static_cast<int>(out.size());
      out.push_back({index, type, "GPU-fake-" + std::to_string(index)});
    }
  }
  return out;
}

std::vector<protocol::GpuDevice> DiscoverNvmlGpus(std::string* note) {
  std::vector<protocol::GpuDevice> out;
  void* lib = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    *note = "no NVML (libnvidia-ml.so.1 not found): no GPUs";
    return out;
  }
  using InitFn = int (*)();
  using CountFn = int (*)(unsigned*);
  using HandleFn = int (*)(unsigned, void**);
  using StrFn = int (*)(void*, char*, unsigned);
  auto init = reinterpret_cast<InitFn>(dlsym(lib, "nvmlInit_v2"));
  auto count = reinterpret_cast<CountFn>(dlsym(lib, "nvmlDeviceGetCount_v2"));
  auto handle = reinterpret_cast<HandleFn>(dlsym(lib, "nvmlDeviceGetHandleByIndex_v2"));
  auto name = reinterpret_cast<StrFn>(dlsym(lib, "nvmlDeviceGetName"));
  auto uuid = reinterpret_cast<StrFn>(dlsym(lib, "nvmlDeviceGetUUID"));
  auto shutdown = reinterpret_cast<InitFn>(dlsym(lib, "nvmlShutdown"));
  unsigned n = 0;
  if (!init || !count || !handle || !name || !uuid || init() != 0 || count(&n) != 0) {
    *note = "NVML present but did not answer: no GPUs";
    dlclose(lib);
    return out;
  }
  for (unsigned i = 0; i < n; ++i) {
    void* dev = nullptr;
    char nbuf[96] = {0}, ubuf[96] = {0};
    if (handle(i, &dev) != 0) continue;
    name(dev, nbuf, sizeof nbuf);
    uuid(dev, ubuf, sizeof ubuf);
    out.push_back({static_cast<int>(i), nbuf, ubuf});
  }
  if (shutdown) shutdown();
  dlclose(lib);
  *note = std::to_string(out.size()) + " GPUs from NVML";
  return out;
}

}  // namespace gantry::agent
