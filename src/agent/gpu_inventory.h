#pragma once
// The node's GPUs: from NVML (libnvidia-ml, loaded at run time) or a fake list for tests and
// demos. A machine without NVML simply has no GPUs; that is not an error.

#include <string>
#include <vector>

#include "common/status.h"
#include "protocol/node_protocol.h"

namespace gantry::agent {

// Parses "H100:8,A100-80GB:2" into devices indexed 0.. in that order.
Result<std::vector<protocol::GpuDevice>> ParseFakeGpus(const std::string& spec);

// Asks NVML. `note` says why there are none when the list is empty (no library, no device).
std::vector<protocol::GpuDevice> DiscoverNvmlGpus(std::string* note);

}  // namespace gantry::agent
