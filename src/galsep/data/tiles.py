"""Reading tiles and target catalogues with clear errors for bad input."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from galsep.data.noise import inverse_variance, noise_parameters
from galsep.errors import InputError

# InputError lives in galsep.errors and is re-exported here, where the readers raise it.
__all__ = ["REQUIRED_TARGET_COLUMNS", "Tile", "read_tile", "read_targets", "InputError"]

REQUIRED_TARGET_COLUMNS = ("object_id", "ra", "dec", "tile")


@dataclass
class Tile:
    """One drizzled tile: science image [e-/s], inverse variance [(e-/s)^-2] and celestial WCS."""

    name: str
    sci: np.ndarray
    ivar: np.ndarray
    wcs: WCS
    header: fits.Header


def read_tile(path: str | Path) -> Tile:
    """Read SCI, WHT and the WCS of a tile, and derive the inverse variance from the noise model."""
    path = Path(path)
    try:
        with warnings.catch_warnings():
            # astropy only warns on a truncated file and hands back what it could read
            warnings.filterwarnings("error", message=".*truncated.*")
            hdul = fits.open(path, memmap=False)
            hdul.readall()
        with hdul:
            names = [h.name for h in hdul]
            missing = [e for e in ("SCI", "WHT") if e not in names]
            if missing:
                raise InputError(f"{path}: no {missing} extension (found {names}); not a drizzled tile")
            sci = np.asarray(hdul["SCI"].data, dtype=np.float32)
            wht = np.asarray(hdul["WHT"].data, dtype=np.float32)
            header = hdul[0].header.copy()
            header.extend(hdul["SCI"].header, unique=True)
            wcs = WCS(hdul["SCI"].header, naxis=2)
    except InputError:
        raise
    except (OSError, ValueError, TypeError, KeyError, UserWarning) as err:
        raise InputError(
            f"{path}: cannot read the tile ({type(err).__name__}: {err}). The file is corrupt or"
            " truncated: delete it and rerun so that the data stage makes or fetches it again."
        ) from err
    if sci.ndim != 2 or sci.shape != wht.shape:
        raise InputError(f"{path}: SCI {sci.shape} and WHT {wht.shape} must be 2-D and the same shape")
    if not wcs.has_celestial:
        raise InputError(f"{path}: the SCI header has no celestial WCS")
    if not np.any(wht > 0):
        raise InputError(
            f"{path}: tile {path.stem} has no observed pixel (its WHT extension is zero everywhere), so it"
            " cannot give any cutout. The file is empty or corrupt: delete it and rerun so that the data stage"
            " makes or fetches it again, or leave the tile out of the run (mast.exclude_tiles)"
        )
    if not np.any(np.isfinite(sci) & (wht > 0)):
        raise InputError(f"{path}: tile {path.stem} has no finite SCI value where WHT > 0; the file is corrupt:"
                         " delete it and rerun so that the data stage makes or fetches it again")
    ivar = inverse_variance(wht, **noise_parameters(header))
    return Tile(name=path.stem, sci=sci, ivar=ivar, wcs=wcs, header=header)


def read_targets(path: str | Path) -> Table:
    """Read the target catalogue and check the columns every stage relies on."""
    path = Path(path)
    try:
        table = Table.read(path, format="ascii.ecsv")
    except Exception as err:  # astropy raises many types for a bad table
        raise InputError(f"{path}: cannot read the target catalogue ({err})") from err
    missing = [c for c in REQUIRED_TARGET_COLUMNS if c not in table.colnames]
    if missing:
        raise InputError(
            f"{path}: the target catalogue lacks column(s) {missing}; it needs"
            f" {list(REQUIRED_TARGET_COLUMNS)} (found {table.colnames})"
        )
    for col in ("ra", "dec"):
        if not np.all(np.isfinite(np.asarray(table[col], dtype=float))):
            raise InputError(f"{path}: column {col!r} has non-finite values")
    return table
