"""Command line of the MAST source's stages (query, download, targets), run by rules/mast.smk.

``python -m galsep.sources.mast STAGE --params JSON ...``, declared and run like every other stage
(:mod:`galsep.cli`): the settings come as one JSON object (``--params``) that the rule builds from
the ``mast:`` config section, files as arguments. A :class:`~galsep.sources.mast.errors.MastError` (offline, unknown
column, refused download) ends in one logged line and exit status 2.

``query``     ``--out products.ecsv``; params: the query keys of ``mast:`` (proposal_ids, filter,
              provenance, instrument, product, exclude_tiles, tiles_limit, match_radius) and timeout.
``download``  ``--out tile.fits``; params: uri and size (the tile's row of the products table) and
              the keys of ``mast.download`` (retries, backoff, timeout, cache_dir).
``targets``   ``--tiles ... --catalogues ... --out targets.ecsv``; params: gzh (``mast.gzh``),
              edge_margin and timeout.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

from galsep.cli import add_stage, run

__all__ = ["main", "parser"]


def _query(a: argparse.Namespace, p: dict[str, Any], log: logging.Logger) -> None:
    from galsep.sources.mast.query import QuerySpec, write_products

    write_products(QuerySpec.from_config(p), a.out, timeout=float(p["timeout"]))


def _download(a: argparse.Namespace, p: dict[str, Any], log: logging.Logger) -> None:
    from galsep.sources.mast.download import download_tile

    size = int(p["size"])
    download_tile(
        str(p["uri"]), a.out, cache_dir=p["cache_dir"], size=size if size > 0 else None,
        retries=int(p["retries"]), backoff=float(p["backoff"]), timeout=float(p["timeout"]),
    )


def _targets(a: argparse.Namespace, p: dict[str, Any], log: logging.Logger) -> None:
    from galsep.sources.mast.targets import CatalogueColumns, write_targets

    gzh = p["gzh"]
    write_targets(
        a.tiles, a.out, CatalogueColumns.from_config(gzh), catalogues=[c for c in a.catalogues if c],
        vizier=gzh["vizier_catalog"] if gzh["source"] == "vizier" else None,
        edge_cap=int(p["edge_margin"]), timeout=float(p["timeout"]),
    )


def parser() -> argparse.ArgumentParser:
    """The ``python -m galsep.sources.mast`` argument parser (stages query, download, targets)."""
    ap = argparse.ArgumentParser(prog="python -m galsep.sources.mast", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="stage", required=True)
    s = add_stage(sub, "query", _query, "query MAST and write the products table")
    s.add_argument("--out", required=True)
    s = add_stage(sub, "download", _download, "download one tile")
    s.add_argument("--out", required=True)
    s = add_stage(sub, "targets", _targets, "write the target catalogue")
    s.add_argument("--tiles", nargs="+", required=True)
    s.add_argument("--catalogues", nargs="*", default=[], help="Galaxy Zoo: Hubble files (gzh.source: files)")
    s.add_argument("--out", required=True)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m galsep.sources.mast``; returns the exit status."""
    return run(parser().parse_args(None if argv is None else list(argv)), prog="galsep.sources.mast")


if __name__ == "__main__":
    sys.exit(main())
