"""Streaming: a generator handler; each yielded chunk is readable from /stream as it comes."""
import time

import runpod


def handler(job):
    words = str(job["input"].get("text", "the quick brown fox")).split()
    for i, word in enumerate(words):
        yield {"index": i, "word": word}
        time.sleep(float(job["input"].get("delay", 0.05)))


runpod.serverless.start({"handler": handler, "return_aggregate_stream": True})
