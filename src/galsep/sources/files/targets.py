"""A user's target table, assigned to the tiles made from their images (``resources/targets.ecsv``).

The table (ECSV, CSV or FITS; :func:`read_table`) gives an id, a right ascension and a declination
per target in the columns named by ``files.id_column``, ``files.ra_column`` and ``files.dec_column``
(matched case-insensitively; degrees, or any angle unit the column states). Ids become int64
``object_id`` values as for MAST (:func:`galsep.sources.mast.targets.numeric_ids`; the id itself is kept
as ``catalogue_id``). Each target goes to the tile whose observed pixels (WHT > 0) cover it, the one
where it lies farthest from the coverage edge where images overlap
(:func:`galsep.sources.mast.targets.assign_tiles`, the MAST source's rule).

Targets on no image's observed pixels are listed in an "outside" table (columns of
``results/cutouts/dropped.ecsv``: object_id, tile (empty), reason ``outside_images``, detail) and
logged; with ``cutouts.on_drop: error`` they are an error, as every other drop. All targets outside
every image is always an error: it means the coordinates or the images are not what the user thinks.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import astropy.units as u
import numpy as np
from astropy.table import Table

from galsep.errors import InputError
from galsep.io import atomic_path
from galsep.sources.mast.targets import assign_tiles, find_column, numeric_ids

__all__ = ["OUTSIDE_REASON", "TargetColumns", "read_table", "read_targets_table", "write_targets"]

OUTSIDE_REASON = "outside_images"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TargetColumns:
    """Names of the target table's id, ra and dec columns (matched case-insensitively)."""

    id: str
    ra: str
    dec: str

    @classmethod
    def from_config(cls, files: Mapping[str, Any]) -> TargetColumns:
        """The columns of a ``files:`` config section."""
        return cls(id=str(files["id_column"]), ra=str(files["ra_column"]), dec=str(files["dec_column"]))


def read_table(path: str | PathLike[str]) -> Table:
    """Read an ECSV, CSV or FITS table (the format from the file name), with a clear error."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"files.targets {path}: no such file; set files.targets to your target table (ECSV, CSV or"
                         " FITS with id, ra, dec columns)")
    name = path.name.lower()
    fmt = ("ascii.ecsv" if name.endswith(".ecsv") else "ascii.csv" if name.endswith((".csv", ".csv.gz"))
           else "fits" if name.endswith((".fits", ".fit", ".fits.gz")) else None)
    try:
        return Table.read(path, format=fmt) if fmt else Table.read(path)
    except Exception as err:  # astropy raises many types for unreadable tables
        raise InputError(f"{path}: cannot read the target table ({type(err).__name__}: {err}); give an ECSV, CSV"
                         " or FITS table (files.targets)") from err


def _degrees(table: Table, col: str, path: Path) -> np.ndarray:
    column = table[col]
    values: np.ndarray = np.ma.filled(np.ma.asarray(column, dtype=float), np.nan)
    if column.unit is not None:
        try:
            values = (values * column.unit).to_value(u.deg)
        except u.UnitConversionError as err:
            raise InputError(f"{path}: column {col!r} is in {column.unit}, not an angle; give degrees") from err
    bad = np.flatnonzero(~np.isfinite(values))
    if len(bad):
        raise InputError(f"{path}: column {col!r} has {len(bad)} missing or non-numeric value(s) (rows"
                         f" {', '.join(str(int(i)) for i in bad[:5])}{', ...' if len(bad) > 5 else ''}); give degrees")
    return np.asarray(values, dtype=np.float64)


def read_targets_table(path: str | PathLike[str], cols: TargetColumns) -> Table:
    """The user's table as object_id (int64), ra, dec [deg] and catalogue_id (the id as text)."""
    path = Path(path)
    table = read_table(path)
    if len(table) == 0:
        raise InputError(f"{path}: the target table has no rows; list the galaxies to separate")
    key = find_column(table, cols.id, str(path), section="files.id_column")
    ra = find_column(table, cols.ra, str(path), section="files.ra_column")
    dec = find_column(table, cols.dec, str(path), section="files.dec_column")
    ids = np.asarray(table[key]).astype(str)
    out = Table()
    out["object_id"] = numeric_ids(ids)
    out["ra"] = _degrees(table, ra, path)
    out["dec"] = _degrees(table, dec, path)
    out["ra"].unit = out["dec"].unit = "deg"
    out["catalogue_id"] = ids
    values, counts = np.unique(out["object_id"], return_counts=True)
    if (counts > 1).any():
        raise InputError(f"{path}: ids repeat in column {key!r} ({', '.join(map(str, values[counts > 1][:5]))});"
                         " every target needs its own id")
    return out


def write_targets(
    tiles: Sequence[str | PathLike[str]],
    table_path: str | PathLike[str],
    out: str | PathLike[str],
    outside_path: str | PathLike[str],
    cols: TargetColumns,
    *,
    on_drop: str = "list",
    edge_cap: int = 64,
) -> Table:
    """Write ``out`` (targets with their tile) and ``outside_path`` (targets on no image); see the module docstring.

    Args:
        tiles: the tiles made from the user's images (their stems are the tile names).
        on_drop: ``cutouts.on_drop``: ``list`` or ``error`` for targets outside every image.
        edge_cap: pixels from the coverage edge beyond which overlapping images count as equally good.
    """
    targets = read_targets_table(table_path, cols)
    placed = assign_tiles(targets, tiles, edge_cap)
    missing = ~np.isin(np.asarray(targets["object_id"]), np.asarray(placed["object_id"]))
    outside = targets[missing]
    n = len(tiles)
    details = [f"(ra {float(r['ra']):.6f}, dec {float(r['dec']):.6f}) is on no observed pixel of the {n} image(s)"
               for r in outside]
    if len(placed) == 0:
        raise InputError(
            f"{table_path}: none of its {len(targets)} targets falls on an observed pixel (weight > 0) of the {n}"
            f" image(s) ({', '.join(Path(t).stem for t in tiles[:5])}{', ...' if n > 5 else ''}); check that"
            " files.ra_column and files.dec_column hold degrees (ICRS) and that the table belongs to these images"
        )
    if len(outside) and on_drop == "error":
        listed = "; ".join(f"{int(i)} {d}" for i, d in zip(outside["object_id"][:5], details[:5], strict=True))
        raise InputError(
            f"{table_path}: {len(outside)} of {len(targets)} targets are outside every image and cutouts.on_drop is"
            f" 'error': {listed}{'; ...' if len(outside) > 5 else ''}. Remove them from the table, or set"
            " cutouts.on_drop: list to drop and list them"
        )
    dropped = Table({
        "object_id": np.asarray(outside["object_id"], dtype=np.int64),
        "tile": np.array([""] * len(outside), dtype=str),
        "reason": np.array([OUTSIDE_REASON] * len(outside), dtype=str),
        "detail": np.array(details, dtype=str),
    })
    dropped.meta["comments"] = [f"Targets of {table_path} on no observed pixel of any image (galsep.sources.files);",
                                "the cutouts stage's own drops are in results/cutouts/dropped.ecsv"]
    for oid, detail in zip(dropped["object_id"], details, strict=True):
        log.info("dropped target %d: %s", int(oid), detail)
    placed.meta.update(source=str(table_path), table_rows=len(targets), outside=len(outside))
    with atomic_path(out) as tmp:
        placed.write(tmp, format="ascii.ecsv")
    with atomic_path(outside_path) as tmp:
        dropped.write(tmp, format="ascii.ecsv")
    log.info("%d targets, %d on %d image(s), %d outside every image%s", len(targets), len(placed), n, len(outside),
             f" (listed in {outside_path})" if len(outside) else "")
    return placed
