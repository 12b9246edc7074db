"""Views: normalised observations with their noise and per-sample observation operators.

A view file holds, for N observations of K sources on an H x W grid:
    y         (N, H, W)    normalised observation (0 where unobserved; block-replicated if downsampled)
    variance  (N, H, W)    per-pixel noise variance of y, in the representation galsep.data.operators uses
    mask      (N, H, W)    1 where observed
    factor    (N,)         block-downsampling factor of each observation (1, 2 or 4)
    coef      (N, K)       scale of each source in each observation (0: source absent)
    index     (N,)         row in the cutout file it came from
    object_id (N,)
    truth     (N, K, H, W) normalised truth of each source (synthetic data only)
attrs: sources (names, in the order of K), view name, normalisation constants.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import h5py
import numpy as np
import torch

from galsep.data import SOURCES
from galsep.data.normalise import Stretch
from galsep.data.operators import PixelOperator, block_project
from galsep.errors import ConfigError, InputError
from galsep.io import atomic_path
from galsep.seeding import numpy_generator

if TYPE_CHECKING:
    from galsep.inference.observations import Observations

__all__ = ["SOURCES", "CONTRASTIVE", "read_view", "observe", "draw_factors", "make_view"]

CONTRASTIVE = {"randoms": (0.0, 1.0), "galaxies": (1.0, 1.0)}


def read_view(path: str | Path) -> Observations:
    """Load a view file written by :func:`make_view` as float32 observations with pixel operators."""
    from galsep.inference.observations import Observations

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: the view file does not exist; run the views stage (rule view) to make it")
    try:
        with h5py.File(path, "r") as f:
            t = lambda k: torch.from_numpy(f[k][...].astype(np.float32))  # noqa: E731
            mask, coef = t("mask"), t("coef")
            factor = torch.from_numpy(f["factor"][...].astype(np.int64))
            sources = tuple(str(s) for s in f.attrs["sources"])
            return Observations(
                sources=sources,
                y=t("y"),
                variance=t("variance"),
                ops=tuple(PixelOperator(mask, factor, coef[:, k]) for k in range(len(sources))),
                coef=coef,
                shape=tuple(mask.shape[1:]),
                mask=mask,
                factor=factor,
                truth=t("truth") if "truth" in f else None,
                ids=f["object_id"][...],
                normalisation={k: float(f.attrs[k]) for k in ("arcsinh_scale", "stretch", "clip", "ivar_floor")
                               if k in f.attrs},
            )
    except (OSError, KeyError) as err:
        # h5py's messages ("truncated file: eof = ...", "Unable to synchronously open object") name no file
        raise InputError(
            f"{path}: cannot read the view file ({type(err).__name__}: {err}). It is truncated or corrupt (a job"
            " killed while writing it, or a full disk); Snakemake does not remake a file that exists, so delete it"
            " and rerun the workflow, which makes it again in the views stage (rule view)"
        ) from err


@contextlib.contextmanager
def _cutout_file(path: str | Path, blame: str | None = None) -> Iterator[h5py.File]:
    """Open a cutout file; a truncated or corrupt one (h5py's OSError names no file) is an InputError."""
    try:
        with h5py.File(path, "r") as f:
            yield f
    except FileNotFoundError:
        raise
    except (OSError, KeyError) as err:
        raise InputError(
            f"{blame or path}: cannot read the cutout file ({type(err).__name__}: {err}). It is truncated or corrupt:"
            " delete it and rerun the workflow, which makes it again in the cutouts stage (rule cutouts)"
        ) from err


def observe(
    clean: np.ndarray, variance: np.ndarray, mask: np.ndarray, factor: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Apply masks and downsampling to normalised images (N, H, W).

    A low-resolution pixel is observed only if all its full-resolution pixels are; its variance in
    the block-replicated representation is the block mean of the variances (see galsep.data.operators).
    Unobserved pixels get y = 0 and variance 1 (any finite value: A zeroes them).
    """
    f = torch.from_numpy(factor.astype(np.int64))
    m = torch.from_numpy(mask.astype(np.float32))
    m = (block_project(m, f) > 1 - 1e-6).float()
    y = block_project(torch.from_numpy(np.where(mask > 0, clean, 0).astype(np.float32)), f) * m
    var = block_project(torch.from_numpy(np.where(mask > 0, variance, 1).astype(np.float32)), f)
    var = torch.where(m > 0, var, torch.ones_like(var))
    return y.numpy(), var.numpy(), m.numpy().astype(np.uint8)


def draw_factors(n: int, share_2x: float, share_4x: float, size: int, rng: np.random.Generator) -> np.ndarray:
    """Downsampling factor per observation: 2 and 4 with the given shares, 1 otherwise."""
    if share_2x + share_4x > 1:
        raise ConfigError(f"views.downsample_2x + views.downsample_4x = {share_2x + share_4x} exceeds 1")
    for f, share in ((2, share_2x), (4, share_4x)):
        if share > 0 and size % f:
            raise ConfigError(f"cutouts.size = {size} is not divisible by {f}, needed by views.downsample_{f}x")
    return rng.choice([1, 2, 4], size=n, p=[1 - share_2x - share_4x, share_2x, share_4x])


def make_view(
    view: str,
    cutout_paths: dict[str, str | Path],
    out: str | Path,
    *,
    stretch: Stretch,
    downsample_2x: float,
    downsample_4x: float,
    mixed_fraction: float,
    seed: int,
    mask_neighbours: bool = False,
    log: Callable[[str], None] = print,
) -> int:
    """Build one view from the cutout files and write it atomically; returns its row count.

    ``view`` is ``randoms`` or ``galaxies`` (contrastive: the cutouts as observed), or
    ``mixed_galaxy`` / ``mixed_random`` (synthetic only: the normalised truths added in normalised
    space, ``y = x_a + f x_b`` plus noise of the cutouts' variance, galaxies paired with random
    cutouts; the two mixed views use disjoint halves of the pairs). With ``mask_neighbours`` the
    contrastive views leave the cutouts' neighbour pixels unobserved (galsep.data.neighbours).
    """
    rng = numpy_generator(seed, "views", view)
    if view in CONTRASTIVE:
        with _cutout_file(cutout_paths[view]) as f:
            flux, ivar, mask = f["flux"][...], f["ivar"][...], f["mask"][...]
            if mask_neighbours:
                if "neighbour" not in f:
                    raise InputError(f"{cutout_paths[view]}: views.mask_neighbours is true but the cutouts have no"
                                     " neighbour mask (made by an older galsep): rerun the cutouts stage")
                masked = f["neighbour"][...] > 0
                mask = mask * ~masked
                log(f"view {view}: {masked.mean():.1%} of the pixels masked as catalogued neighbours"
                    f" ({(masked.any(axis=(1, 2))).sum()} of {len(mask)} cutouts)")
            ids, index = f["object_id"][...], np.arange(len(f["object_id"]))
            truth = (
                np.stack([stretch.forward(f["truth_galaxy"][...]), stretch.forward(f["truth_random"][...])], 1)
                if "truth_galaxy" in f
                else None
            )
        clean = np.where(mask > 0, stretch.forward(np.nan_to_num(flux)), 0.0)
        coef = np.tile(np.array(CONTRASTIVE[view], np.float32), (len(ids), 1))
    elif view in ("mixed_galaxy", "mixed_random"):
        both = f"{cutout_paths['galaxies']} or {cutout_paths['randoms']}"
        with _cutout_file(cutout_paths["galaxies"], both) as g, _cutout_file(cutout_paths["randoms"], both) as r:
            if "truth_galaxy" not in g:
                raise InputError("mixed views need synthetic data with truth (source: synthetic)")
            n = min(len(g["object_id"]), len(r["object_id"]))
            half = slice(0, n // 2) if view == "mixed_galaxy" else slice(n // 2, 2 * (n // 2))
            index = np.arange(n)[half]
            xg = stretch.forward(g["truth_galaxy"][half])
            xr = stretch.forward(r["truth_random"][half])
            ivar = np.minimum(g["ivar"][half], r["ivar"][half])
            mask = g["mask"][half] * r["mask"][half]
            ids = g["object_id"][half]
        fm = mixed_fraction
        coef = np.tile(np.array([1.0, fm] if view == "mixed_galaxy" else [fm, 1.0], np.float32), (len(ids), 1))
        truth = np.stack([xg, xr], 1)
        var = stretch.variance(ivar)
        clean = coef[:, 0, None, None] * xg + coef[:, 1, None, None] * xr + rng.normal(size=xg.shape) * np.sqrt(var)
    else:
        raise InputError(f"unknown view {view!r}; expected randoms, galaxies, mixed_galaxy or mixed_random")

    variance = stretch.variance(ivar)
    factor = draw_factors(len(ids), downsample_2x, downsample_4x, clean.shape[-1], rng)
    y, variance, mask = observe(clean, variance, mask, factor)
    if not np.isfinite(y).all() or not np.isfinite(variance).all():
        raise InputError(f"view {view}: non-finite values after normalisation")
    with atomic_path(out) as tmp, h5py.File(tmp, "w") as f:
        for key, arr in (("y", y), ("variance", variance), ("mask", mask)):
            f.create_dataset(key, data=arr, compression="gzip", compression_opts=1)
        f["factor"], f["coef"], f["index"], f["object_id"] = factor, coef, index, ids
        if truth is not None:
            f.create_dataset("truth", data=truth.astype(np.float32), compression="gzip", compression_opts=1)
        f.attrs["view"] = view
        f.attrs["sources"] = list(SOURCES)
        for k, v in vars(stretch).items():
            f.attrs[k] = v
    log(f"view {view}: {len(ids)} observations, factors {np.bincount(factor, minlength=5)[[1, 2, 4]].tolist()}")
    return len(ids)
