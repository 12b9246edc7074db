"""Separation quality against the synthetic ground truth, beside two trivial baselines.

Images are compared in the normalised (arcsinh) space of the views, where a PSNR is meaningful over
the large dynamic range of galaxies: PSNR = 10 log10(range^2 / MSE) on observed pixels, with range =
2 * clip (the convention of DDPRISM, arXiv 2510.05205: 4). Fluxes are compared in e-/s over the observed pixels.
Baselines: ``observation`` takes the whole cutout as the galaxy; ``minus_median_random`` subtracts
the pixel-wise median of the random cutouts.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import xarray as xr

from galsep.data.normalise import Stretch
from galsep.errors import InputError
from galsep.evaluation.metrics import PSNR_CONVENTION, flux_residual, psnr_images
from galsep.io import atomic_path

__all__ = ["median_random", "evaluate_dataset", "write_metrics"]




def _summary(values: np.ndarray) -> dict[str, float]:
    q16, q50, q84 = np.percentile(values, [16, 50, 84])
    return {"mean": float(values.mean()), "median": float(q50), "spread": float((q84 - q16) / 2)}


def median_random(randoms_cutouts: str | Path) -> np.ndarray:
    """Pixel-wise median of the random cutouts over observed pixels, (H, W) e-/s."""
    with h5py.File(randoms_cutouts, "r") as f:
        return np.nan_to_num(np.nanmedian(np.where(f["mask"][...] > 0, f["flux"][...], np.nan), axis=0))


def evaluate_dataset(ds: xr.Dataset, background: np.ndarray, stretch: Stretch, method: str) -> dict[str, Any]:
    """Metrics of a catalogue's draws (labelled ``method``) and of the baselines (module docstring).

    ``background`` is the baselines' estimate of the random light, (H, W) e-/s (:func:`median_random`).
    """
    if "truth_galaxy" not in ds:
        raise InputError("the catalogue has no truth: evaluation needs source: synthetic")
    obs = np.nan_to_num(ds["observation"].values)
    mask = ds["mask"].values.astype(bool)
    tg, tr = np.nan_to_num(ds["truth_galaxy"].values), np.nan_to_num(ds["truth_random"].values)
    S = stretch.forward
    rng = 2 * stretch.clip
    estimates = {
        f"{method}_mean": (ds["galaxy_mean"].values, ds["random"].values.mean(1)),
        f"{method}_draw": (ds["galaxy"].values[:, 0], ds["random"].values[:, 0]),
        "observation": (obs, np.zeros_like(obs)),
        "minus_median_random": (obs - background, np.broadcast_to(background, obs.shape)),
    }
    methods = {}
    for name, (gal, ran) in estimates.items():
        methods[name] = {
            "galaxy_psnr": _summary(psnr_images(S(gal), S(tg), mask, rng)),
            "random_psnr": _summary(psnr_images(S(ran), S(tr), mask, rng)),
            "galaxy_flux_residual_pct": _summary(flux_residual(gal, tg, mask)),
        }
    best_baseline = max(("observation", "minus_median_random"), key=lambda m: methods[m]["galaxy_psnr"]["mean"])
    gain = methods[f"{method}_mean"]["galaxy_psnr"]["mean"] - methods[best_baseline]["galaxy_psnr"]["mean"]
    return {
        "method": method,
        "objects": int(ds.sizes["object"]),
        "draws": int(ds.sizes["sample"]),
        "psnr_range": rng,
        "psnr_convention": f"{PSNR_CONVENTION}; normalised (arcsinh) space over observed pixels, range {rng:g}",
        "methods": methods,
        "best_baseline": best_baseline,
        "galaxy_psnr_gain_db": float(gain),
    }


def write_metrics(
    catalogue: str, randoms_cutouts: str, views: Mapping[str, Any], out: str, log: Callable[[str], None] = print
) -> dict[str, Any]:
    stretch = Stretch.from_config(views)
    ds = xr.open_zarr(catalogue, consolidated=False)
    metrics = evaluate_dataset(ds, median_random(randoms_cutouts), stretch, ds.attrs.get("method", "ddprism"))
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(metrics, indent=2) + "\n")
    for name, m in metrics["methods"].items():
        residual = m["galaxy_flux_residual_pct"]
        log(f"{name:>22}: galaxy PSNR {m['galaxy_psnr']['mean']:.2f} dB, random PSNR {m['random_psnr']['mean']:.2f}"
            f" dB, flux residual {residual['median']:+.1f}% +- {residual['spread']:.1f}%")
    log(f"{metrics['method']} mean beats {metrics['best_baseline']} by {metrics['galaxy_psnr_gain_db']:.2f} dB")
    return metrics
