"""Gantry's serverless worker library, wire-compatible with RunPod Serverless workers.

Public API:
- `start(config)`: run a worker with a handler (see runtime.start);
- `progress_update(job, value)`: report a running job's progress (see progress.progress_update);
- `JobStopped`: raised in a sync handler's thread when the server stops its job;
- `RUNPOD_VERSION`: the version reported to the server as `runpod_version`.
"""

from ..version import RUNPOD_VERSION
from .job import JobStopped
from .progress import progress_update
from .runtime import start

__all__ = ["start", "progress_update", "JobStopped", "RUNPOD_VERSION"]
