// gpu_inventory_probe: prints the GPUs the node agent would report, found the way it finds them
// (DiscoverNvmlGpus: libnvidia-ml.so.1 loaded at run time). Starts nothing long-running.
//
//   build/bench/gpu_inventory_probe
//
// Output: the discovery note, then one line per GPU: "gpu <index>: <name> (<uuid>)". Exit code 0
// (also when there are no GPUs: that is not an error for the agent either).
#include <cstdio>
#include <string>
#include <vector>

#include "agent/gpu_inventory.h"

int main() {
  std::string note;
  const std::vector<gantry::protocol::GpuDevice> gpus = gantry::agent::DiscoverNvmlGpus(&note);
  std::printf("NVML inventory: %s\n", note.c_str());
  for (const gantry::protocol::GpuDevice& g : gpus) {
    std::printf("gpu %d: %s (%s)\n", g.index, g.type.c_str(), g.uuid.c_str());
  }
  return 0;
}
