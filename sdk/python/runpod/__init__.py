"""RunPod-compatible entry points over Gantry's worker library, so that an unmodified RunPod
handler (`import runpod; runpod.serverless.start({...})`) runs on Gantry. Nothing is
implemented here: every name is Gantry's."""

from gantry.version import RUNPOD_VERSION as __version__

from . import serverless

__all__ = ["serverless", "__version__"]
