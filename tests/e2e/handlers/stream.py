import time

import gantry.serverless as serverless


def handler(job):
    n = int(job["input"].get("n", 3))
    for i in range(n):
        yield {"chunk": i}
        time.sleep(float(job["input"].get("gap", 0.05)))


serverless.start({"handler": handler, "return_aggregate_stream": True})
