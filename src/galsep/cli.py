"""The stage command lines' shared parts: one way to declare a stage and to run it.

Every stage takes its settings as one JSON object (``--params``) built by its Snakemake rule, an
optional ``--log`` file and ``--threads`` for torch; bad input or config (:class:`galsep.errors.GalsepError`, a
missing file) ends in a one-line error, anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from typing import Any

from galsep.errors import GalsepError

__all__ = ["Stage", "add_stage", "logger", "run"]

Stage = Callable[[argparse.Namespace, dict[str, Any], logging.Logger], None]
"""A stage's function: ``fn(args, params, log)``."""


def logger(path: str | None = None) -> logging.Logger:
    log = logging.getLogger("galsep")
    log.setLevel(logging.INFO)
    fmt = logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S")
    for handler in [logging.StreamHandler(sys.stderr)] + ([logging.FileHandler(path)] if path else []):
        handler.setFormatter(fmt)
        log.addHandler(handler)
    return log


def add_stage(sub: argparse._SubParsersAction, name: str, fn: Stage, help: str,
              threads: int | None = None) -> argparse.ArgumentParser:
    """A stage sub-command calling ``fn(args, params, log)``; ``threads`` is the default of --threads."""
    s = sub.add_parser(name, help=help)
    s.add_argument("--params", default="{}", help="settings as one JSON object")
    s.add_argument("--log", help="also write the log here")
    s.add_argument("--threads", type=int, default=threads, help="CPU threads for torch (Snakemake's {threads})")
    s.set_defaults(fn=fn)
    return s


def run(args: argparse.Namespace, prog: str = "galsep") -> int:
    """Run the parsed stage; exit status 2 with the reason when the input or config is bad.

    Only the project's errors (:class:`GalsepError`) and missing files are the user's to fix; any
    other exception (a ``ValueError`` too) is a programming error and propagates with its traceback.
    """
    log = logger(args.log)
    if args.threads:
        import torch

        # more threads than the job's share of cores oversubscribes the machine (seen: 3x slower)
        torch.set_num_threads(args.threads)
        # denormal floats in near-zero weights made calls at small sigma 20x slower on CPU
        torch.set_flush_denormal(True)
    try:
        args.fn(args, json.loads(args.params), log)
    except (GalsepError, FileNotFoundError) as err:
        # bad input is the user's to fix: say what, without a traceback
        log.error("%s %s: %s", prog, args.stage, err)
        return 2
    return 0
