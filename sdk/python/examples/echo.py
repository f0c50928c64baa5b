"""The smallest worker: returns its job's input.

Run locally:  python3 examples/echo.py --test_input '{"input": {"hello": "world"}}'
Under Gantry, the RUNPOD_* environment makes it take jobs instead.
"""

import runpod


def handler(job):
    return job["input"]


runpod.serverless.start({"handler": handler})
