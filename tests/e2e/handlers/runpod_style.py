# Written for RunPod; runs on Gantry unchanged.
import runpod


def handler(job):
    runpod.serverless.progress_update(job, "half way")
    return {"upper": str(job["input"].get("text", "")).upper()}


runpod.serverless.start({"handler": handler})
