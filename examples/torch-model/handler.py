"""A PyTorch CPU model: an MLP classifier. Its weights are made locally at first start (nothing
can be downloaded on these machines) with a fixed seed, saved, and loaded from disk after that,
so every worker serves the same model. Input: {"features": [16 floats]} or {"seed": N}."""
import os

import runpod
import torch

MODEL_DIR = os.environ.get("MODEL_DIR", "/tmp/gantry-models")
WEIGHTS = os.path.join(MODEL_DIR, "mlp-16-64-4.pt")


def build():
    return torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4))


def load_model():
    model = build()
    if not os.path.exists(WEIGHTS):
        os.makedirs(MODEL_DIR, exist_ok=True)
        torch.manual_seed(1234)
        fresh = build()
        tmp = WEIGHTS + ".tmp%d" % os.getpid()
        torch.save(fresh.state_dict(), tmp)
        os.replace(tmp, WEIGHTS)
    model.load_state_dict(torch.load(WEIGHTS))
    model.eval()
    return model


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
