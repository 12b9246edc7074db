"""Command line of the workflow's stages: ``python -m galsep STAGE --params JSON ...``.

Every stage takes its settings as one JSON object (``--params``), which the Snakemake rule builds
from the config in its ``params:``, so that a changed value reruns exactly the stages that use it.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from galsep.tiles import InputError


def _logger(path: str | None) -> logging.Logger:
    log = logging.getLogger("galsep")
    log.setLevel(logging.INFO)
    fmt = logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S")
    for handler in [logging.StreamHandler(sys.stderr)] + ([logging.FileHandler(path)] if path else []):
        handler.setFormatter(fmt)
        log.addHandler(handler)
    return log


def _synthetic_tile(a, p, log) -> None:
    from galsep.synthetic import make_tile

    make_tile(a.tile, p["index"], p["synthetic"], p["seed"], a.tile_out, a.truth_out, a.targets_out)
    log.info("simulated %s", a.tile)


def _merge_targets(a, p, log) -> None:
    from galsep.cutouts import merge_targets

    merge_targets(a.inputs, a.out)
    log.info("merged %d target tables into %s", len(a.inputs), a.out)


def _cutouts(a, p, log) -> None:
    from galsep.cutouts import make_cutouts

    make_cutouts(
        a.tiles, a.targets, a.galaxies, a.randoms, truth_paths=a.truth or None, seed=p["seed"], log=log.info,
        **p["cutouts"],
    )


def _views(a, p, log) -> None:
    from galsep.normalise import Stretch
    from galsep.views import make_view

    v = dict(p["views"])
    stretch = Stretch(**{k: v.pop(k) for k in ("arcsinh_scale", "stretch", "clip", "ivar_floor")})
    make_view(
        a.view, {"galaxies": a.galaxies, "randoms": a.randoms}, a.out, stretch=stretch, seed=p["seed"],
        log=log.info, **v,
    )


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="galsep", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="stage", required=True)

    def stage(name, fn, help):
        s = sub.add_parser(name, help=help)
        s.add_argument("--params", default="{}", help="settings as one JSON object")
        s.add_argument("--log", help="also write the log here")
        s.set_defaults(fn=fn)
        return s

    s = stage("synthetic-tile", _synthetic_tile, "simulate one tile of the synthetic COSMOS field")
    for arg in ("--tile", "--tile-out", "--truth-out", "--targets-out"):
        s.add_argument(arg, required=True)
    s = stage("merge-targets", _merge_targets, "stack per-tile target tables")
    s.add_argument("--out", required=True)
    s.add_argument("inputs", nargs="+")
    s = stage("cutouts", _cutouts, "cut galaxy-centred and random cutouts")
    s.add_argument("--tiles", nargs="+", required=True)
    s.add_argument("--truth", nargs="*", default=[])
    for arg in ("--targets", "--galaxies", "--randoms"):
        s.add_argument(arg, required=True)
    s = stage("views", _views, "normalise cutouts into a view")
    for arg in ("--view", "--galaxies", "--randoms", "--out"):
        s.add_argument(arg, required=True)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    log = _logger(args.log)
    try:
        args.fn(args, json.loads(args.params), log)
    except (InputError, ValueError, FileNotFoundError) as err:
        # bad input is the user's to fix: say what, without a traceback
        log.error("galsep %s: %s", args.stage, err)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
