"""Gantry's Python SDK. The worker library lives in `gantry.serverless`."""

from .version import __version__

__all__ = ["__version__"]
