"""A sync handler that blocks (no cooperation), to test stops and kills."""
import time

import gantry.serverless as serverless


def handler(job):
    time.sleep(float(job["input"].get("seconds", 60)))
    return {"slept": True}


serverless.start({"handler": handler})
