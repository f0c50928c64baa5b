"""Echo: returns the job's input. A RunPod handler file, unchanged."""
import runpod


def handler(job):
    return {"echo": job["input"]}


runpod.serverless.start({"handler": handler})
