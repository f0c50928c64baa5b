# A handler with a syntax error (kept apart in broken/, so that linters of the handlers skip it).
import gantry.serverless as serverless


def handler(job)
    return job["input"]


serverless.start({"handler": handler})
