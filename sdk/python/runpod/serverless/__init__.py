"""`runpod.serverless`: Gantry's `start` and `progress_update` under RunPod's names."""

from gantry.serverless import progress_update, start

__all__ = ["start", "progress_update"]
