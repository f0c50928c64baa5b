"""One handler whose behaviour the job input picks, for the end-to-end tests."""
import asyncio
import time

import gantry.serverless as serverless


async def handler(job):
    inp = job["input"]
    mode = inp.get("mode", "echo")
    if mode == "echo":
        return {"echo": inp}
    if mode == "sleep":
        await asyncio.sleep(float(inp.get("seconds", 1)))
        return {"slept": inp.get("seconds", 1)}
    if mode == "fail":
        raise ValueError("bad thing: " + str(inp.get("why", "")))
    if mode == "progress":
        serverless.progress_update(job, {"step": 1})
        await asyncio.sleep(float(inp.get("seconds", 1)))
        return {"done": True}
    if mode == "error_dict":
        return {"error": "handler said no"}
    return {"unknown": mode}


serverless.start({"handler": handler, "concurrency_modifier": lambda current: 2})
