"""Version strings.

`RUNPOD_VERSION` is what a Gantry worker reports where RunPod's SDK reports its own version (the
`runpod_version` ping parameter, the `runpod_version` field of error reports, `runpod.__version__`):
the RunPod SDK release whose worker protocol this library speaks, with Gantry's version as a
PEP 440 local label, so it still compares as that release.
"""

__version__ = "0.1.0"

RUNPOD_PROTOCOL_RELEASE = "1.12.0"

RUNPOD_VERSION = f"{RUNPOD_PROTOCOL_RELEASE}+gantry.{__version__}"
