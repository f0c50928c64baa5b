import gantry.serverless as serverless


def handler(job):
    return {"echo": job["input"]}


serverless.start({"handler": handler})
