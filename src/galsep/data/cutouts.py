"""Galaxy-centred and random cutouts from tiles, through astropy WCS and Cutout2D.

A cutout of side N has its centre at pixel ((N-1)/2, (N-1)/2) (0-based). Targets are brought there
to sub-pixel precision: Cutout2D cuts a slightly larger integer-aligned stamp, its WCS tells where the
target falls, and a separable cubic convolution kernel (Keys 1981, a = -1/2) shifts the stamp by the
remaining fraction of a pixel. That kernel reproduces quadratics exactly, so the light centroid moves
by exactly the shift (a Lanczos kernel is off by ~0.02 pixel).
The shift is linear, so flux, truth and noise are shifted alike (observation == truth + noise still
holds) and the variance follows as sum(w^2 var). Pixels within the kernel's reach of missing data
become missing (NaN, masked). Random cutouts sit on whole pixels and are copied exactly.

A target that cannot be cut is dropped, logged, counted and listed with its reason in a drop table
(``dropped.ecsv`` beside the galaxies file): its tile is not among the tiles of the run
(``unknown_tile``), its centre is off its tile (``off_tile``), or its cutout has more missing pixels
than ``max_nan_fraction`` (``nan_fraction``). With ``on_drop="error"`` any drop is an error instead.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from astropy.coordinates import SkyCoord
from astropy.nddata import Cutout2D
from astropy.table import Table, vstack
from astropy.wcs import WCS

from galsep.data.neighbours import others, target_owner
from galsep.data.tiles import InputError, Tile, read_targets, read_tile
from galsep.errors import ConfigError
from galsep.io import atomic_path
from galsep.seeding import numpy_generator

__all__ = [
    "PAD", "TAPS", "DROPPED_NAME", "ON_DROP", "cubic_weights", "subpixel_cutout", "random_positions", "make_cutouts",
    "merge_targets", "read_dropped",
]

PAD = 3  # pixels of margin around a stamp for the kernel's support (2) plus rounding (1)
TAPS = np.arange(-1, 3)  # pixels the cubic kernel reads around a sample point
DROPPED_NAME = "dropped.ecsv"  # the drop table, beside the galaxies file
ON_DROP = ("list", "error")


def cubic_weights(frac: float, a: float = -0.5) -> np.ndarray:
    """Keys cubic-convolution weights of pixels -1, 0, 1, 2 for a sample at offset ``frac`` in [0, 1)."""
    d = np.abs(TAPS - frac)
    near = (a + 2) * d**3 - (a + 3) * d**2 + 1
    far = a * d**3 - 5 * a * d**2 + 8 * a * d - 4 * a
    return np.where(d <= 1, near, far)


def _shift_axis(img: np.ndarray, start: int, frac: float, n: int, axis: int, squared: bool = False) -> np.ndarray:
    """Sample ``n`` points at start+frac, start+1+frac, ... along ``axis``."""
    w = cubic_weights(frac)
    if squared:
        w = w**2
    img = np.moveaxis(img, axis, -1)
    out = sum(wk * img[..., start + k : start + k + n] for k, wk in zip(TAPS, w, strict=True))
    return np.moveaxis(out, -1, axis)


def subpixel_cutout(
    images: Sequence[np.ndarray], variances: Sequence[np.ndarray], wcs: WCS, x: float, y: float, size: int
) -> tuple[list[np.ndarray], list[np.ndarray], WCS]:
    """Cut ``size`` x ``size`` stamps centred on tile pixel (x, y) to sub-pixel precision.

    Args:
        images: tile-sized arrays shifted linearly (flux, truth components), NaN where missing.
        variances: tile-sized variance arrays, propagated as sum(w^2 var) (inf where missing).
        wcs: celestial WCS of the tile.
        x, y: 0-based pixel position of the centre in the tile.
        size: side of the cutout.
    Returns:
        stamps (size, size) for each image and variance, and the WCS of the stamp.
    """
    big = size + 2 * PAD
    first = Cutout2D(images[0], (x, y), big, wcs=wcs, mode="partial", fill_value=np.nan, copy=True)
    # Where the centre falls in the padded stamp, from the shift of its WCS (Cutout2D's
    # to_cutout_position ignores the padding of partial cutouts at tile edges).
    ox, oy = wcs.wcs.crpix - first.wcs.wcs.crpix
    px, py = x - ox, y - oy
    c = (size - 1) / 2
    sx, sy = px - c, py - c
    ix, iy = int(np.floor(sx)), int(np.floor(sy))
    fx, fy = sx - ix, sy - iy

    def stamp(arr: np.ndarray, fill: float, squared: bool = False) -> np.ndarray:
        cut = Cutout2D(arr, (x, y), big, mode="partial", fill_value=fill, copy=True).data
        cut = cut.astype(np.float64)
        bad = ~np.isfinite(cut)
        cut[bad] = 0.0
        out = _shift_axis(cut, ix, fx, size, axis=1, squared=squared)
        out = _shift_axis(out, iy, fy, size, axis=0, squared=squared)
        reach = _shift_axis(bad.astype(float), ix, fx, size, 1, squared=True)
        reach = _shift_axis(reach, iy, fy, size, 0, squared=True)
        out[reach > 1e-12] = np.nan if not squared else np.inf
        return out.astype(np.float32)

    stamps = [stamp(a, np.nan) for a in images]
    vars_ = [stamp(v, np.inf, squared=True) for v in variances]
    out_wcs = first.wcs.deepcopy()
    out_wcs.wcs.crpix = out_wcs.wcs.crpix - np.array([sx, sy])
    return stamps, vars_, out_wcs


def _positions(tile: Tile, ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y = tile.wcs.world_to_pixel(SkyCoord(ra, dec, unit="deg"))
    return np.atleast_1d(x), np.atleast_1d(y)


def random_positions(
    tile: Tile, target_xy: np.ndarray, n: int, size: int, min_distance: float, rng: np.random.Generator
) -> np.ndarray:
    """Up to ``n`` whole-pixel cutout centres (x, y) on covered pixels, each at least
    ``min_distance`` pixels from every target position in ``target_xy`` (M, 2)."""
    H, W = tile.sci.shape
    c = (size - 1) / 2
    found: list[tuple[float, float]] = []
    for _ in range(50):
        if len(found) >= n:
            break
        # whole-pixel corners, so the stamp is an exact copy of tile pixels
        x0 = rng.integers(0, W - size + 1, size=4 * n)
        y0 = rng.integers(0, H - size + 1, size=4 * n)
        xy = np.stack([x0 + c, y0 + c], axis=1)
        covered = tile.ivar[(y0 + size // 2), (x0 + size // 2)] > 0
        xy = xy[covered]
        if len(target_xy):
            d = np.linalg.norm(xy[:, None, :] - target_xy[None, :, :], axis=-1).min(axis=1)
            xy = xy[d >= min_distance]
        found.extend(map(tuple, xy[: n - len(found)]))
    return np.asarray(found, dtype=float).reshape(-1, 2)


def _load_truth(path: Path) -> tuple[np.ndarray, dict[int, tuple[np.ndarray, int, int]]]:
    with h5py.File(path, "r") as f:
        noiseless = f["noiseless"][...]
        stamps = {
            int(k): (d[...], int(d.attrs["x0"]), int(d.attrs["y0"])) for k, d in f["targets"].items()
        }
    return noiseless, stamps


def _place(stamp: np.ndarray, x0: int, y0: int, shape: tuple[int, int]) -> np.ndarray:
    out = np.zeros(shape, dtype=np.float32)
    h, w = stamp.shape
    ys, xs = slice(max(y0, 0), min(y0 + h, shape[0])), slice(max(x0, 0), min(x0 + w, shape[1]))
    out[ys, xs] = stamp[ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0]
    return out


def make_cutouts(
    tile_paths: Sequence[str | Path],
    targets_path: str | Path,
    galaxies_path: str | Path,
    randoms_path: str | Path,
    *,
    size: int,
    randoms_per_tile: int,
    random_min_distance: float,
    max_nan_fraction: float,
    seed: int,
    neighbour_dilate: int = 2,
    on_drop: str = "list",
    dropped_path: str | Path | None = None,
    truth_paths: Sequence[str | Path] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, int]:
    """Cut every target and ``randoms_per_tile`` random positions per tile into two HDF5 files.

    Each cutout carries its neighbour mask (``neighbour``: 1 on the light of a catalogued target other
    than the central one, grown by ``neighbour_dilate`` pixels; any target's for random cutouts;
    galsep.data.neighbours), cut like the flux and rounded.

    Targets that cannot be cut are listed in ``dropped_path`` (default: ``dropped.ecsv`` beside
    ``galaxies_path``; columns object_id, tile, reason, detail), or with ``on_drop="error"`` make
    the stage fail naming them. Returns counts of kept, rejected and dropped cutouts.
    """
    if on_drop not in ON_DROP:
        raise ConfigError(f"cutouts.on_drop = {on_drop!r}; expected one of {', '.join(ON_DROP)}")
    dropped_path = Path(galaxies_path).with_name(DROPPED_NAME) if dropped_path is None else Path(dropped_path)
    targets = read_targets(targets_path)
    if len(targets) == 0:
        raise InputError(
            f"{targets_path}: the target table is empty (no rows), so there are no galaxies to cut; check the"
            " stage that made it (synthetic: synthetic.targets_per_tile; mast: the Galaxy Zoo match to the tiles)"
        )
    truth_by_tile = {Path(p).stem: Path(p) for p in truth_paths or []}
    rows: dict[str, list[dict[str, Any] | None]] = {"galaxies": [], "randoms": []}
    counts = {"galaxies": 0, "randoms": 0, "rejected_nan": 0, "dropped": 0}
    dropped: list[dict[str, Any]] = []
    ids = np.asarray(targets["object_id"])
    target_tiles = np.asarray(targets["tile"]).astype(str)

    def drop(i: int, reason: str, detail: str) -> None:
        dropped.append({"object_id": int(ids[i]), "tile": str(target_tiles[i]), "reason": reason, "detail": detail})
        log(f"dropped target {int(ids[i])} (tile {target_tiles[i]}): {detail}")

    names = [Path(p).stem for p in tile_paths]
    for i in np.flatnonzero(~np.isin(target_tiles, names)):
        drop(int(i), "unknown_tile", f"its tile {str(target_tiles[i])!r} is not among the {len(names)} tiles"
             " of this run"
             f" ({', '.join(names[:5])}{', ...' if len(names) > 5 else ''})")
    for t_index, tile_path in enumerate(tile_paths):
        tile = read_tile(tile_path)
        truth = _load_truth(truth_by_tile[tile.name]) if truth_paths else None
        var = np.where(tile.ivar > 0, 1.0 / np.maximum(tile.ivar, 1e-30), np.inf)
        sci = np.where(np.isfinite(tile.sci) & (tile.ivar > 0), tile.sci, np.nan)
        all_x, all_y = _positions(tile, np.asarray(targets["ra"]), np.asarray(targets["dec"]))
        H, W = sci.shape
        mine = target_tiles == tile.name
        owner = target_owner(sci, tile.ivar, np.stack([all_x, all_y], axis=1))
        reach = size // 2 + PAD + neighbour_dilate + 2
        scratch = np.zeros((H, W), np.float32)
        for i in np.flatnonzero(mine):
            x, y = float(all_x[i]), float(all_y[i])
            if not (np.isfinite(x) and np.isfinite(y) and -0.5 <= x < W - 0.5 and -0.5 <= y < H - 0.5):
                drop(int(i), "off_tile", f"its centre (ra {float(targets['ra'][i]):.6f}, dec"
                     f" {float(targets['dec'][i]):.6f}) falls at pixel ({x:.1f}, {y:.1f}), off tile {tile.name}"
                     f" ({W} x {H} pixels, {tile_path})")
                continue
            # the neighbour mask of this target only, in a window around it (dilating the whole tile per
            # target costs seconds)
            wy = slice(max(int(y) - reach, 0), min(int(y) + reach + 1, H))
            wx = slice(max(int(x) - reach, 0), min(int(x) + reach + 1, W))
            scratch[wy, wx] = others(owner[wy, wx], int(i), neighbour_dilate)
            images = [sci, scratch]
            if truth is not None:
                noiseless, stamps = truth
                if int(ids[i]) not in stamps:
                    raise InputError(
                        f"{truth_by_tile[tile.name]}: no truth stamp for target {int(ids[i])} of tile {tile.name};"
                        f" the target table {targets_path} and the synthetic truth disagree: delete both and rerun"
                        " so that the synthetic stage makes them again"
                    )
                own = _place(*stamps[int(ids[i])], sci.shape)
                images += [own, noiseless - own]
            row, nan = _row(tile, images, var, x, y, size, targets[i], max_nan_fraction)
            scratch[wy, wx] = 0.0
            if row is None:
                drop(int(i), "nan_fraction", f"{nan:.0%} of its cutout is missing (NaN or zero weight),"
                     f" over cutouts.max_nan_fraction = {max_nan_fraction}")
            rows["galaxies"].append(row)
        rng = numpy_generator(seed, "cutouts", "randoms", tile.name)
        target_xy = np.stack([all_x, all_y], axis=1)
        target_xy = target_xy[np.isfinite(target_xy).all(axis=1)]
        any_target = others(owner, None, neighbour_dilate).astype(np.float32)
        for k, (x, y) in enumerate(
            random_positions(tile, target_xy, randoms_per_tile, size, random_min_distance, rng)
        ):
            images = [sci, any_target]
            if truth is not None:
                images += [np.zeros_like(sci), truth[0]]
            ra, dec = tile.wcs.pixel_to_world_values(x, y)
            meta = {"object_id": -(t_index * 1_000_000 + k + 1), "ra": float(ra), "dec": float(dec)}
            rows["randoms"].append(_row(tile, images, var, x, y, size, meta, max_nan_fraction)[0])
        log(f"{tile.name}: {int(mine.sum())} targets, cut so far {sum(r is not None for r in rows['galaxies'])}"
            f" galaxies and {sum(r is not None for r in rows['randoms'])} randoms")
    counts["dropped"] = len(dropped)
    why = ", ".join(f"{n} {r}" for r, n in sorted(_tally(dropped).items()))
    if dropped and on_drop == "error":
        listed = "; ".join(f"{d['object_id']} (tile {d['tile']}): {d['detail']}" for d in dropped[:5])
        raise InputError(
            f"{targets_path}: {len(dropped)} of {len(targets)} targets cannot be cut ({why}) and cutouts.on_drop"
            f" is 'error': {listed}{'; ...' if len(dropped) > 5 else ''}"
        )
    for kind, path in (("galaxies", galaxies_path), ("randoms", randoms_path)):
        kept = [r for r in rows[kind] if r is not None]
        counts[kind] = len(kept)
        counts["rejected_nan"] += len(rows[kind]) - len(kept)
        if not kept:
            raise InputError(_none_survived(kind, len(targets), why, len(rows[kind]), size, randoms_per_tile,
                                            random_min_distance, max_nan_fraction, dropped_path))
        _write(path, kept, size, truth=truth_paths is not None)
    _write_dropped(dropped_path, dropped)
    log(f"kept {counts['galaxies']} galaxies, {counts['randoms']} randoms;"
        f" rejected {counts['rejected_nan']} over the NaN limit; dropped {len(dropped)} targets"
        + (f" ({why}), listed in {dropped_path}" if dropped else ""))
    return counts


def _tally(dropped: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for d in dropped:
        out[d["reason"]] = out.get(d["reason"], 0) + 1
    return out


def _none_survived(kind: str, n_targets: int, why: str, n_cut: int, size: int, randoms_per_tile: int,
                   min_distance: float, max_nan_fraction: float, dropped_path: Path) -> str:
    if kind == "galaxies":
        return (f"no galaxies cutouts survived: all {n_targets} targets were dropped ({why}); the reasons per"
                f" target are in the log (the drop table {dropped_path.name} is not written when the stage fails)")
    if randoms_per_tile == 0:
        return "no randoms cutouts: cutouts.randoms_per_tile is 0; the randoms view needs at least one"
    if n_cut == 0:
        return (f"no randoms cutouts: no observed position of any tile lies {min_distance} pixels"
                f" (cutouts.random_min_distance) from every target with room for a {size}-pixel cutout")
    return (f"no randoms cutouts survived: all {n_cut} random cutouts have more missing pixels than"
            f" cutouts.max_nan_fraction = {max_nan_fraction}")


def _write_dropped(path: Path, dropped: Sequence[Mapping[str, Any]]) -> None:
    table = Table(
        {
            "object_id": np.array([d["object_id"] for d in dropped], dtype=np.int64),
            "tile": np.array([d["tile"] for d in dropped], dtype=str),
            "reason": np.array([d["reason"] for d in dropped], dtype=str),
            "detail": np.array([d["detail"] for d in dropped], dtype=str),
        }
    )
    table.meta["comments"] = [
        "Targets of the target table that have no cutout, and why (galsep.data.cutouts).",
        "reason: unknown_tile (tile not in the run), off_tile (centre off its tile),"
        " nan_fraction (too many missing pixels)",
    ]
    with atomic_path(path) as tmp:
        table.write(tmp, format="ascii.ecsv")


def read_dropped(path: str | Path) -> Table:
    """The drop table written beside the cutouts."""
    return Table.read(path, format="ascii.ecsv")


def _row(tile: Tile, images: Sequence[np.ndarray], var: np.ndarray, x: float, y: float, size: int,
         meta: Mapping[str, float], max_nan_fraction: float) -> tuple[dict[str, Any] | None, float]:
    stamps, (v,), _ = subpixel_cutout(images, [var], tile.wcs, float(x), float(y), size)
    flux = stamps[0]
    mask = np.isfinite(flux) & np.isfinite(v) & (v > 0)
    nan = float(1.0 - mask.mean())
    if nan > max_nan_fraction:
        return None, nan
    row = {
        "flux": flux,
        "ivar": np.where(mask, 1.0 / np.where(mask, v, 1.0), 0.0).astype(np.float32),
        "mask": mask.astype(np.uint8),
        "neighbour": (np.nan_to_num(stamps[1]) > 0.5).astype(np.uint8),
        "object_id": int(meta["object_id"]),
        "ra": float(meta["ra"]),
        "dec": float(meta["dec"]),
        "tile": tile.name,
        "x": float(x),
        "y": float(y),
    }
    if len(stamps) == 4:
        row["truth_galaxy"], row["truth_random"] = stamps[2], stamps[3]
    return row, nan


def _write(path: str | Path, rows: list[dict[str, Any]], size: int, truth: bool) -> None:
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        for key, unit in (("flux", "e-/s"), ("ivar", "(e-/s)^-2"), ("mask", "1 = observed"),
                          ("neighbour", "1 = light of another catalogued target (galsep.data.neighbours)")):
            d = f.create_dataset(key, data=np.stack([r[key] for r in rows]), compression="gzip", compression_opts=1)
            d.attrs["units"] = unit
        if truth:
            for key in ("truth_galaxy", "truth_random"):
                d = f.create_dataset(key, data=np.stack([r[key] for r in rows]), compression="gzip", compression_opts=1)
                d.attrs["units"] = "e-/s"
        f["object_id"] = np.array([r["object_id"] for r in rows], dtype=np.int64)
        for key in ("ra", "dec", "x", "y"):
            f[key] = np.array([r[key] for r in rows], dtype=np.float64)
        f["ra"].attrs["units"] = f["dec"].attrs["units"] = "deg"
        f["x"].attrs["units"] = f["y"].attrs["units"] = "tile pixel of the cutout centre (0-based)"
        f["tile"] = np.array([r["tile"] for r in rows], dtype=h5py.string_dtype())
        f.attrs["size"] = size
        f.attrs["centre_pixel"] = (size - 1) / 2
        f.attrs["truth"] = truth


def merge_targets(paths: Sequence[str | Path], out: str | Path) -> None:
    """Stack per-tile target tables into one catalogue (object ids must be unique)."""
    table = vstack([read_targets(p) for p in paths], metadata_conflicts="silent")
    ids = np.asarray(table["object_id"])
    if len(np.unique(ids)) != len(ids):
        raise InputError("object_id values repeat across the per-tile target tables")
    with atomic_path(out) as tmp:
        table.write(tmp, format="ascii.ecsv")
