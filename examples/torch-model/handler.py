"""A PyTorch CPU model: an MLP classifier. Its weights are made locally at first start (nothing
can be downloaded on these machines) with a fixed seed and saved once, with gantry.weights, into
MODEL_DIR if it is set, else the node's weight cache (gantry.weights.cache_dir()). Every worker
then maps that one file, so all workers serve the same model and share its pages.
Input: {"features": [16 floats]} or {"seed": N}."""
import os

import runpod
import torch
from gantry import weights

MODEL_DIR = os.environ.get("MODEL_DIR") or None   # None: the node's weight cache


def build(device=None):
    return torch.nn.Sequential(torch.nn.Linear(16, 64, device=device), torch.nn.ReLU(),
                               torch.nn.Linear(64, 4, device=device))


def make_weights():
    torch.manual_seed(1234)
    return build().state_dict()


def load_model():
    # Built on the meta device (no memory, no initialisation), then given the mapped weights.
    tensors = weights.cached("mlp-16-64-4", make_weights, directory=MODEL_DIR)
    return weights.bind(build(device="meta"), tensors).eval()


MODEL = load_model()  # everything before start() is the worker's initialisation


def handler(job):
    inp = job["input"]
    if "features" in inp:
        x = torch.tensor([inp["features"]], dtype=torch.float32)
    else:
        g = torch.Generator().manual_seed(int(inp.get("seed", 0)))
        x = torch.randn(1, 16, generator=g)
    if x.shape != (1, 16):
        return {"error": "features must be 16 numbers"}
    with torch.no_grad():
        probs = torch.softmax(MODEL(x), dim=1)[0]
    return {"class": int(probs.argmax()), "probs": [round(float(p), 4) for p in probs]}


runpod.serverless.start({"handler": handler})
