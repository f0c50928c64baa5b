#include "scheduling/worker_env.h"

namespace gantry::scheduling {

std::map<std::string, std::string> WorkerEnvFactory::Build(const EndpointSpec& spec,
                                                           const WorkerInfo& worker,
                                                           const std::string& secret) const {
  const std::string& wid = worker.id;
  std::string gpu = !worker.gpu_type.empty()    ? worker.gpu_type
                    : spec.gpu_type_ids.empty() ? "cpu"
                                                : spec.gpu_type_ids.front();
  std::string base = public_url_ + "/v2/" + spec.id;
  std::map<std::string, std::string> env;
  for (const auto& [k, v] : spec.env) env[k] = v;
  for (const auto& [k, v] : spec.worker.env) env[k] = v;
  env["RUNPOD_POD_ID"] = wid;
  env["RUNPOD_AI_API_KEY"] = secret;
  env["RUNPOD_ENDPOINT_ID"] = spec.id;
  env["RUNPOD_WEBHOOK_GET_JOB"] = base + "/job-take/" + wid + "?gpu=" + gpu;
  env["RUNPOD_WEBHOOK_POST_OUTPUT"] = base + "/job-done/" + wid + "/$ID?gpu=" + gpu;
  env["RUNPOD_WEBHOOK_POST_STREAM"] = base + "/job-stream/" + wid + "/$ID?gpu=" + gpu;
  env["RUNPOD_WEBHOOK_PING"] = base + "/ping/" + wid;
  env["RUNPOD_WEBHOOK_JOB_STOP"] = base + "/job-stop/" + wid + "?gpu=" + gpu;
  env["RUNPOD_PING_INTERVAL"] = std::to_string(ping_interval_ms_);
  env["RUNPOD_SKIP_AUTO_SYSTEM_CHECKS"] = "true";
  env["RUNPOD_CONCURRENCY"] = std::to_string(spec.concurrency);
  env["RUNPOD_GPU_COUNT"] = std::to_string(worker.gpus.size());
  return env;
}

}  // namespace gantry::scheduling
