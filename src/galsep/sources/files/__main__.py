"""Command line of the files source: stages ``tile`` and ``targets`` (rules/files.smk) and ``demo``.

``python -m galsep.sources.files STAGE ...``, declared and run like every other stage (:mod:`galsep.cli`):
settings as one JSON object (``--params``) built by the rule from the ``files:`` config section, files
as arguments; bad input ends in one logged line and exit status 2.

``tile``     ``--image IMAGE [--weight WEIGHT] --out resources/tiles/T.fits``; params: sci_extension,
             weight_extension, weight_type, bunit (``files:``).
``targets``  ``--tiles ... --table TABLE --out resources/targets.ecsv --outside OUTSIDE.ecsv``; params:
             id_column, ra_column, dec_column (``files:``), on_drop (``cutouts.on_drop``), edge_cap [pixels].
``demo``     ``DIR [--tiles N --tile-size N --targets-per-tile N --seed S --weight-type EXP|IVM
             --units U --separate]``: write a demo directory and its config overlay DIR/files.yaml.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

from galsep.cli import add_stage, run

__all__ = ["main", "parser"]


def _tile(a: argparse.Namespace, p: dict[str, Any], log: logging.Logger) -> None:
    from galsep.sources.files.images import ImageSettings, write_tile

    write_tile(a.image, a.weight or None, a.out, ImageSettings.from_config(p))


def _targets(a: argparse.Namespace, p: dict[str, Any], log: logging.Logger) -> None:
    from galsep.sources.files.targets import TargetColumns, write_targets

    write_targets(a.tiles, a.table, a.out, a.outside, TargetColumns.from_config(p), on_drop=str(p["on_drop"]),
                  edge_cap=int(p["edge_cap"]))


def _demo(a: argparse.Namespace, p: dict[str, Any], log: logging.Logger) -> None:
    from galsep.sources.files.demo import write_demo

    overlay = write_demo(a.directory, tiles=a.tiles, tile_size=a.tile_size, targets_per_tile=a.targets_per_tile,
                         seed=a.seed, weight_type=a.weight_type, units=a.units, separate=a.separate)
    log.info("wrote the demo images of %s; run: snakemake --cores all --configfile config.yaml %s",
             a.directory, overlay)


def parser() -> argparse.ArgumentParser:
    """The ``python -m galsep.sources.files`` argument parser (tile, targets, demo)."""
    ap = argparse.ArgumentParser(prog="python -m galsep.sources.files", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="stage", required=True)
    s = add_stage(sub, "tile", _tile, "write one user image as a tile")
    s.add_argument("--image", required=True)
    s.add_argument("--weight", default="", help="separate weight file ('' or absent: an extension of the image)")
    s.add_argument("--out", required=True)
    s = add_stage(sub, "targets", _targets, "assign the user's targets to the tiles")
    s.add_argument("--tiles", nargs="+", required=True)
    s.add_argument("--table", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--outside", required=True, help="the table of targets outside every image")
    s = add_stage(sub, "demo", _demo, "write a demo directory of images, targets and config overlay")
    s.add_argument("directory")
    s.add_argument("--tiles", type=int, default=2)
    s.add_argument("--tile-size", type=int, default=256)
    s.add_argument("--targets-per-tile", type=int, default=10)
    s.add_argument("--seed", type=int, default=20261123)
    s.add_argument("--weight-type", default="EXP", choices=["EXP", "IVM"])
    s.add_argument("--units", default="ELECTRONS/S", help="ELECTRONS/S, ELECTRONS or erg/s/cm2/A")
    s.add_argument("--separate", action="store_true", help="weight maps in separate *_wht.fits files")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m galsep.sources.files``; returns the exit status."""
    return run(parser().parse_args(None if argv is None else list(argv)), prog="galsep.sources.files")


if __name__ == "__main__":
    sys.exit(main())
