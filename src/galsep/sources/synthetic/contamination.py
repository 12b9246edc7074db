"""How hard a synthetic field is: the contaminating share of the light in each target's cutout."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import h5py
import numpy as np
from astropy.io import fits

from galsep.sources.synthetic.tile import centroid

__all__ = ["contamination_fractions", "contamination_from_files"]


def contamination_fractions(
    noiseless: np.ndarray,
    stamps: Iterable[tuple[np.ndarray, int, int]],
    size: int,
    covered: np.ndarray | None = None,
) -> np.ndarray:
    """Contaminating flux over the target's own flux in a ``size`` x ``size`` box on each target.

    Args:
        noiseless: (H, W) all light [e-/s]; stamps: each target's (stamp, x0, y0) as in the truth file;
        covered: (H, W) bool, pixels with data (others are missing in a cutout and not counted).

    Returns:
        (N,) float64: sum(noiseless - own) / sum(own) over the box, the box centred on the pixel
        nearest to the target's light centroid and clipped to the tile.
    """
    h, w = noiseless.shape
    keep = np.ones((h, w), dtype=bool) if covered is None else covered
    out = []
    for stamp, x0, y0 in stamps:
        cx, cy = centroid(stamp, x0, y0)
        xa, ya = int(np.rint(cx)) - size // 2, int(np.rint(cy)) - size // 2
        ys, xs = slice(max(ya, 0), min(ya + size, h)), slice(max(xa, 0), min(xa + size, w))
        own = np.zeros((h, w), dtype=np.float64)[ys, xs]
        sy = slice(max(ys.start - y0, 0), max(min(ys.stop - y0, stamp.shape[0]), 0))
        sx = slice(max(xs.start - x0, 0), max(min(xs.stop - x0, stamp.shape[1]), 0))
        oy, ox = y0 + sy.start - ys.start, x0 + sx.start - xs.start
        own[oy : oy + sy.stop - sy.start, ox : ox + sx.stop - sx.start] = stamp[sy, sx]
        k = keep[ys, xs]
        total, mine = noiseless[ys, xs][k].sum(dtype=np.float64), own[k].sum()
        out.append((total - mine) / mine if mine > 0 else np.nan)
    return np.asarray(out, dtype=np.float64)


def contamination_from_files(truth_path: str | Path, tile_path: str | Path, size: int) -> np.ndarray:
    """``contamination_fractions`` of every target of a written tile, over its covered pixels."""
    with fits.open(tile_path) as hdul:
        covered = np.asarray(hdul["WHT"].data) > 0
    with h5py.File(truth_path, "r") as f:
        noiseless = f["noiseless"][...]
        stamps = [(d[...], int(d.attrs["x0"]), int(d.attrs["y0"])) for d in f["targets"].values()]
    return contamination_fractions(noiseless, stamps, size, covered)
