"""The catalogue of separated galaxies: a Zarr v3 store that opens with ``xarray.open_zarr``.

One row (``object``) per galaxy: the cutout as observed, posterior draws of the galaxy and of the
random light in e-/s (see :func:`galsep.data.normalise.split_flux` for how normalised draws become
fluxes), their mean and spread, per-object flux summaries and, for synthetic data, the truth.
"""

from __future__ import annotations

import datetime as dt
import json
import platform
from collections.abc import Callable, Hashable, Mapping, Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
import xarray as xr

from galsep import __version__
from galsep.data.normalise import Stretch, split_flux
from galsep.errors import InputError
from galsep.io import atomic_path, load_torch, sha256_file

__all__ = ["QUANTILES", "ZEROPOINT_AB", "gather_draws", "build_dataset", "provenance", "chunk_encoding",
           "write_catalogue"]

QUANTILES = (0.16, 0.5, 0.84)
MEAN = "posterior mean: "  # how galaxy_mean was estimated follows (the data card reads it)
ZEROPOINT_AB = 25.937  # ACS/WFC F814W AB zeropoint for e-/s (synthetic tiles use the same)


def gather_draws(shard_paths: Sequence[str]) -> tuple[np.ndarray, list[str], str, np.ndarray | None]:
    """Concatenate separation shards in row order: (N, S, K, H, W) normalised draws, source names, the
    method that made them and its per-draw posterior-mean estimates (same shape) where every shard has
    them, else None (see :mod:`galsep.separation`)."""
    parts = sorted((load_torch(p) for p in shard_paths),
                   key=lambda d: d["rows"][0])
    stop = 0
    for d in parts:
        if d["rows"][0] != stop:
            raise InputError(f"posterior shards do not tile the rows: gap or overlap at row {stop}")
        stop = d["rows"][1]
    methods = {d.get("method", "ddprism") for d in parts}
    if len(methods) > 1:
        raise InputError(f"shards of different methods {sorted(methods)} cannot make one catalogue")
    means = [d["mean_estimates"] for d in parts if d.get("mean_estimates") is not None]
    mean = torch.cat(means).numpy() if len(means) == len(parts) else None
    return torch.cat([d["draws"] for d in parts]).numpy(), parts[0]["sources"], methods.pop(), mean


def build_dataset(
    draws: np.ndarray, sources: Sequence[str], cutouts_path: str, stretch: Stretch, attrs: Mapping[str, Any],
    mean_estimates: np.ndarray | None = None,
) -> xr.Dataset:
    """The catalogue as an xarray Dataset (see the module docstring).

    ``galaxy_mean`` and ``random_mean`` average ``mean_estimates`` (N, S, K, H, W; Rao-Blackwellised
    estimates of each draw's posterior mean, see :mod:`galsep.inference.mmps`) where given, else the draws.
    """
    with h5py.File(cutouts_path, "r") as f:
        cut = {k: f[k][...] for k in f}
    n = len(cut["object_id"])
    if draws.shape[0] != n:
        raise InputError(f"{draws.shape[0]} posterior rows for {n} galaxy cutouts")
    gal_n, ran_n = draws[:, :, sources.index("galaxy")], draws[:, :, sources.index("random")]
    galaxy, random = split_flux(stretch, gal_n, ran_n)
    if mean_estimates is None:
        galaxy_mean, random_mean = galaxy.mean(1), random.mean(1)
        how = "the mean of the draws"
    else:
        g_e, r_e = split_flux(stretch, mean_estimates[:, :, sources.index("galaxy")],
                              mean_estimates[:, :, sources.index("random")])
        galaxy_mean, random_mean = g_e.mean(1), r_e.mean(1)
        how = "the mean of each draw's Rao-Blackwellised estimate E[x | x_t, y] (less noisy than the draws' mean)"
    flux = galaxy.sum(axis=(-2, -1))  # (N, S) e-/s inside the cutout
    obs = ("object", "y", "x")
    draw = ("object", "sample", "y", "x")
    data = {
        "object_id": ("object", cut["object_id"].astype(np.int64)),
        "ra": ("object", cut["ra"], {"units": "deg"}),
        "dec": ("object", cut["dec"], {"units": "deg"}),
        "tile": ("object", cut["tile"].astype(str)),
        "observation": (obs, cut["flux"], {"units": "e-/s", "description": "the cutout as observed (NaN: no data)"}),
        "ivar": (obs, cut["ivar"], {"units": "(e-/s)^-2"}),
        "mask": (obs, cut["mask"].astype(np.uint8), {"description": "1 where observed"}),
        "galaxy": (draw, galaxy.astype(np.float32), {"units": "e-/s", "description": "posterior draws of the galaxy"}),
        "random": (draw, random.astype(np.float32),
                   {"units": "e-/s", "description": "posterior draws of the contaminating light"}),
        "galaxy_mean": (obs, galaxy_mean.astype(np.float32), {"units": "e-/s", "description": f"{MEAN}{how}"}),
        "random_mean": (obs, random_mean.astype(np.float32), {"units": "e-/s", "description": f"{MEAN}{how}"}),
        "galaxy_std": (obs, galaxy.std(1).astype(np.float32), {"units": "e-/s"}),
        "galaxy_flux": (("object", "sample"), flux.astype(np.float32),
                        {"units": "e-/s", "description": "galaxy flux inside the cutout, per draw"}),
        "galaxy_flux_mean": ("object", galaxy_mean.sum(axis=(-2, -1)),
                             {"units": "e-/s", "description": "galaxy flux of galaxy_mean inside the cutout"}),
        "galaxy_flux_quantiles": (("object", "quantile"), np.quantile(flux, QUANTILES, axis=1).T,
                                  {"units": "e-/s"}),
        "galaxy_mag": ("object", ZEROPOINT_AB - 2.5 * np.log10(np.clip(np.median(flux, 1), 1e-12, None)),
                       {"units": "mag(AB)", "description": "F814W AB magnitude of the median draw's flux"}),
    }
    if "neighbour" in cut:
        data["neighbour"] = (obs, cut["neighbour"].astype(np.uint8), {
            "description": "1 on the light of another catalogued target (SExtractor segments of the tile; left"
                           " unobserved by the separation when the config's views.mask_neighbours is true)"})
    if "truth_galaxy" in cut:
        data["truth_galaxy"] = (obs, cut["truth_galaxy"], {"units": "e-/s"})
        data["truth_random"] = (obs, cut["truth_random"], {"units": "e-/s"})
    ds = xr.Dataset(data, coords={"quantile": list(QUANTILES), "sample": np.arange(draws.shape[1])})
    ds.attrs.update(attrs)
    return ds


def provenance(config: Mapping[str, Any], method: str, weight_paths: Mapping[str, str]) -> dict[str, Any]:
    """Attributes that say how the catalogue was made: method, config, versions, weights' checksums."""
    return {
        "title": "galsep catalogue of separated galaxies",
        "method": method,
        "galsep_version": __version__,
        "versions": json.dumps({p: version(p) for p in ("torch", "numpy", "astropy", "galsim", "zarr", "xarray",
                                                          "snakemake")} | {"python": platform.python_version()}),
        "config": json.dumps(config, sort_keys=True),
        "source": config["source"],
        "units": "e-/s",
        "pixel_scale_arcsec": 0.05,
        "normalisation": json.dumps(
            {k: config["views"][k] for k in ("arcsinh_scale", "stretch", "clip", "ivar_floor")}),
        "flux_model": "sources add in normalised space; galaxy flux = inverse(g + r) - inverse(r)",
        "prior_checkpoints": json.dumps(
            {k: {"path": str(p), "sha256": sha256_file(p)} for k, p in weight_paths.items()}),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def chunk_encoding(ds: xr.Dataset, objects: int = 64) -> dict[Hashable, dict[str, tuple[int, ...]]]:
    """Chunks of ``objects`` rows, whole along every other dimension (one read per galaxy block)."""
    return {
        name: {"chunks": tuple(min(objects, n) if d == "object" else n
                               for d, n in zip(var.dims, var.shape, strict=True))}
        for name, var in ds.data_vars.items()
    }


def write_catalogue(
    shard_paths: Sequence[str], cutouts_path: str, weight_paths: Mapping[str, str], config: Mapping[str, Any],
    out: str | Path, log: Callable[[str], None] = print,
) -> None:
    """Gather separation shards into ``out`` (Zarr v3), atomically: a killed job leaves no store.

    ``weight_paths`` name the files whose checksums the catalogue records: {source: prior} for the
    diffusion methods, {method: fitted model} for the others.
    """
    draws, sources, method, mean = gather_draws(shard_paths)
    stretch = Stretch.from_config(config["views"])
    ds = build_dataset(draws, sources, cutouts_path, stretch, provenance(config, method, weight_paths), mean)
    with atomic_path(out) as tmp:
        ds.to_zarr(tmp, zarr_format=3, consolidated=False, mode="w", encoding=chunk_encoding(ds))
    log(f"catalogue ({method}): {ds.sizes['object']} galaxies x {ds.sizes['sample']} draws -> {out}")
