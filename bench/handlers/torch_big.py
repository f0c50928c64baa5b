"""The cold-start benchmark's handler: imports torch and loads a 488 MiB model
(8 x Linear(4000, 4000), float32), then serves one forward pass per job, which reads every
weight. BENCH_LOAD picks how the model is loaded:
  mmap  (default) gantry.weights: mapped from a raw file in BENCH_MODEL_DIR, built once;
  torch torch.load() of a pickled module, as most handlers do today.
Input: {"hold": seconds} keeps the job (and so the worker) busy that long after the pass.
Output: {"pid", "y", "initMs"}."""
import os
import time

T0 = time.time()
import torch  # noqa: E402

import gantry.weights as weights  # noqa: E402
import runpod  # noqa: E402

LAYERS, WIDTH = 8, 4000
MODEL_DIR = os.environ.get("BENCH_MODEL_DIR", "/tmp/gantry-bench-models")


def build(device=None):
    return torch.nn.Sequential(*[torch.nn.Linear(WIDTH, WIDTH, device=device)
                                 for _ in range(LAYERS)])


def make_weights():
    torch.manual_seed(1234)
    return build().state_dict()


def load_model():
    if os.environ.get("BENCH_LOAD", "mmap") == "torch":
        path = os.path.join(MODEL_DIR, "bench-mlp-8x4000.pt")
        if not os.path.exists(path):
            os.makedirs(MODEL_DIR, exist_ok=True)
            torch.manual_seed(1234)
            torch.save(build(), path + ".tmp")
            os.replace(path + ".tmp", path)
        return torch.load(path)
    tensors = weights.cached("bench-mlp-8x4000", make_weights, directory=MODEL_DIR)
    return weights.bind(build(device="meta"), tensors)


MODEL = load_model().eval()
INIT_MS = (time.time() - T0) * 1000


def handler(job):
    with torch.no_grad():
        y = MODEL(torch.ones(1, WIDTH))
    hold = float((job.get("input") or {}).get("hold", 0))
    if hold:
        time.sleep(hold)
    return {"pid": os.getpid(), "y": round(float(y.sum()), 3), "initMs": round(INIT_MS)}


runpod.serverless.start({"handler": handler})
