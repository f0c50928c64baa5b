# A worker that streams far past what a job may hold (tests/e2e/test_trust.py): `mb` chunks of
# about 1 MiB each, written for RunPod's SDK (a generator handler, chunks not aggregated).
import runpod

CHUNK = "x" * ((1 << 20) - 64)


def handler(job):
    for _ in range(int(job["input"].get("mb", 600))):
        yield CHUNK


runpod.serverless.start({"handler": handler})
