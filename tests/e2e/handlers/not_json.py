# A handler whose result JSON has no form for: the job must fail at once, saying which value.
import runpod


def handler(job):
    return {"x": [1, 2, float("nan")]}


runpod.serverless.start({"handler": handler})
