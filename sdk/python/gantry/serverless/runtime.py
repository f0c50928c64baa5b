"""`start()`: where a worker process reads its arguments and environment and begins."""

import argparse
import logging
import os
import sys
from typing import Any, Dict, List, Optional

from ..version import RUNPOD_VERSION
from .config import HandlerConfig, WorkerEnv, is_local
from . import template
from .local import load_test_job, run_local
from .worker import Worker

log = logging.getLogger("gantry")

_LEVELS = {"DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARN": logging.WARNING,
           "WARNING": logging.WARNING, "ERROR": logging.ERROR}


def start(config: Dict[str, Any]) -> None:
    """Starts a serverless worker with RunPod's config keys: "handler" (required),
    "concurrency_modifier", "return_aggregate_stream", "refresh_worker".

    With RUNPOD_WEBHOOK_GET_JOB set, takes and runs jobs until SIGTERM/SIGINT (or a
    refresh_worker job), then returns. Without it, or with `--test_input JSON` on the command
    line, runs one local test job, prints its result and exits (status 1 if it failed).
    Recognized arguments (`--test_input`, `--rp_log_level`) are removed from sys.argv.
    With GANTRY_TEMPLATE_SOCKET set (the agent started this process as a template), parks
    until the agent forks a worker from it; the worker then goes on as above (template.py).
    Raises ValueError for an invalid config or environment.
    """
    args = _take_args(sys.argv)
    _configure_logging(args.rp_log_level or os.environ.get("RUNPOD_DEBUG_LEVEL"))
    handler_config = HandlerConfig.from_dict(config)
    template_socket = template.socket_path()
    if template_socket and args.test_input is None:
        # Initialisation is done: park here; a forked worker comes back with its identity.
        log.info("Gantry template ready (pid %d); workers are forked from here", os.getpid())
        template.serve(template_socket)
    log.info("Gantry serverless worker, RunPod protocol %s", RUNPOD_VERSION)
    if args.test_input is not None or is_local(os.environ):
        try:
            job = load_test_job(args.test_input)
        except ValueError as err:
            log.error("%s", err)
            sys.exit(1)
        sys.exit(run_local(handler_config, job))
    Worker(WorkerEnv.from_environ(os.environ), handler_config).run()


def _take_args(argv: List[str]) -> argparse.Namespace:
    """Parses the arguments this library knows and leaves the others in `argv` (as RunPod)."""
    parser = argparse.ArgumentParser(prog=os.path.basename(argv[0]) if argv else "worker",
                                     add_help=False)
    parser.add_argument("--test_input", default=None)
    parser.add_argument("--rp_log_level", default=None)
    args, unknown = parser.parse_known_args(argv[1:])
    argv[1:] = unknown
    return args


def _configure_logging(level_name: Optional[str]) -> None:
    """Logs to stderr (stdout is left to the handler and the local result), INFO by default."""
    level = _LEVELS.get((level_name or "INFO").upper(), logging.INFO)
    log.setLevel(level)
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        log.addHandler(handler)
        log.propagate = False
