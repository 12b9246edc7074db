"""Which pixels of a tile hold the light of which catalogued target: the neighbour mask.

A galaxy's catalogue entry is the light of the central galaxy only; the light of another catalogued
target inside its cutout (a neighbour) is contamination. The random cutouts keep away from every target
(``cutouts.random_min_distance``), so the random-light prior never sees a catalogued galaxy and cannot
explain a neighbour: the galaxy prior is left to absorb it. The neighbour mask removes those pixels from
the likelihood instead (``views.mask_neighbours``), so every method infers the central galaxy under the
neighbour from its prior and the rest of the cutout, as it does for missing data.

The segmentation is SExtractor's (Bertin & Arnouts 1996, through ``sep``, Barbary 2016) on the whole
tile, at its usual settings: background from a 64-pixel mesh, detection at 1.5 noise sigma over 5 pixels
after the default 3x3 smoothing, 32-level deblending at contrast 0.005. Each segment belongs to the
catalogued target whose position falls in it; a segment holding several targets (a blend the deblender
did not split) is shared among them by nearest position (a Voronoi split); a segment holding none is
uncatalogued light, left to the random-light prior. A target's neighbour mask is every pixel owned by
another target, grown by ``dilate`` pixels (the segment stops at 1.5 sigma; the wings go on) but never
onto the target's own pixels. The thresholds are the usual ones, not tuned on the truth.
"""

from __future__ import annotations

import numpy as np

__all__ = ["DETECT_SIGMA", "MIN_AREA", "DEBLEND_CONTRAST", "DEBLEND_THRESHOLDS", "BACKGROUND_MESH", "target_owner",
           "others"]

DETECT_SIGMA = 1.5
MIN_AREA = 5
DEBLEND_CONTRAST = 0.005
DEBLEND_THRESHOLDS = 32
BACKGROUND_MESH = 64


def target_owner(sci: np.ndarray, ivar: np.ndarray, target_xy: np.ndarray) -> np.ndarray:
    """The catalogued target owning each pixel of a tile.

    Args:
        sci: (H, W) flux [e-/s], NaN where missing; ivar: (H, W) inverse variance, 0 where missing.
        target_xy: (M, 2) 0-based pixel positions (x, y) of the catalogued targets (NaN or off the
            tile for targets elsewhere).
    Returns:
        (H, W) int32: the row of ``target_xy`` owning the pixel, -1 where no target does.
    """
    import sep

    H, W = sci.shape
    missing = ~(np.isfinite(sci) & (ivar > 0))
    data = np.ascontiguousarray(np.where(missing, 0.0, sci), dtype=np.float64)
    err = np.ascontiguousarray(np.where(missing, np.inf, 1.0 / np.sqrt(np.maximum(ivar, 1e-30))), dtype=np.float64)
    mesh = max(8, min(BACKGROUND_MESH, H, W))
    background = sep.Background(data, mask=missing, bw=mesh, bh=mesh)
    data = np.ascontiguousarray(np.where(missing, 0.0, data - background.back()))
    # sep allocates its pixel stack up front: room for the largest segments of a crowded tile, capped so a
    # large mosaic does not reserve gigabytes
    sep.set_extract_pixstack(int(min(max(300_000, H * W), 5_000_000)))
    sep.set_sub_object_limit(4096)
    _, seg = sep.extract(data, DETECT_SIGMA, err=err, mask=missing, minarea=MIN_AREA,
                         deblend_nthresh=DEBLEND_THRESHOLDS, deblend_cont=DEBLEND_CONTRAST, segmentation_map=True)
    xy = np.asarray(target_xy, float).reshape(-1, 2)
    ok = np.isfinite(xy).all(axis=1)
    ix = np.where(ok, np.rint(np.nan_to_num(xy[:, 0])), -1).astype(int)
    iy = np.where(ok, np.rint(np.nan_to_num(xy[:, 1])), -1).astype(int)
    inside = (ix >= 0) & (ix < W) & (iy >= 0) & (iy < H)
    label = np.zeros(len(xy), int)
    label[inside] = seg[iy[inside], ix[inside]]
    # segment -> its one target by lookup (one pass over the tile); only blends need their pixels
    labels, count = np.unique(label[label > 0], return_counts=True)
    lut = np.full(int(seg.max()) + 1, -1, np.int32)
    for lab in labels[count == 1]:
        lut[lab] = np.flatnonzero(label == lab)[0]
    owner = lut[seg]
    for lab in labels[count > 1]:
        rows = np.flatnonzero(label == lab)
        ys, xs = np.nonzero(seg == lab)
        d = (xs[:, None] - xy[rows, 0][None]) ** 2 + (ys[:, None] - xy[rows, 1][None]) ** 2
        owner[ys, xs] = rows[np.argmin(d, axis=1)]
    return owner


def others(owner: np.ndarray, row: int | None, dilate: int) -> np.ndarray:
    """(H, W) bool: pixels owned by a target other than ``row`` (any target if None), grown by
    ``dilate`` pixels (a disc) except onto the pixels ``row`` owns."""
    from scipy.ndimage import binary_dilation

    other = owner >= 0 if row is None else (owner >= 0) & (owner != row)
    if dilate > 0 and other.any():
        r = np.arange(-dilate, dilate + 1)
        disc = r[:, None] ** 2 + r[None, :] ** 2 <= dilate**2
        other = binary_dilation(other, structure=disc)
        if row is not None:
            other &= owner != row
    return other
