"""Separation quality against the synthetic ground truth, beside two trivial baselines.

Images are compared in the normalised (arcsinh) space of the views, where a PSNR is meaningful over
the large dynamic range of galaxies: PSNR = 10 log10(range^2 / MSE) on observed pixels, with range =
2 * clip (the convention of DDPRISM, arXiv 2510.05205: 4). Fluxes are compared in e-/s over the observed pixels.
Estimates (``methods``): ``{method}_mean`` is the catalogue's posterior mean (``galaxy_mean``, by default
Rao-Blackwellised), ``{method}_draws_mean`` the plain average of the draws beside it, ``{method}_draw``
one draw. Baselines: ``observation`` takes the whole cutout as the galaxy; ``minus_median_random``
subtracts the pixel-wise median of the random cutouts.

Fluxes (``fluxes``): the posterior mean's flux residual by contamination bin (contaminating over own
light in the cutout, from the truth), for targets with and without a catalogued neighbour within
``NEIGHBOUR_ARCSEC`` (when the targets table has ``neighbour_distance``), and the calibration of the
draws' flux intervals. The same bins on the *estimated* contamination (the posterior means' random over
galaxy flux) come beside them: a posterior mean is unbiased given anything computed from the data,
E[g - E[g | y] | f(y)] = 0, but not given the truth's contamination, which the data only partly reveal,
so bins on the truth show regression toward the population's typical contamination (galaxies known to be
isolated come out low, the most contaminated high) even for exact priors; bins on the estimate are what a
user can select on, and their total flux bias (sum of estimates over sum of truths) is 0 for exact priors
(tests/test_evaluate.py). With n exchangeable draws the truth's rank among them is uniform on 0..n, so the
[16 %, 84 %] interval of n draws (linear interpolation) covers it with probability ~0.68 (n - 1) / (n + 1),
0.53 for n = 8, not 0.68: both figures are reported, with the rank histogram.
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

__all__ = ["CONTAMINATION_BINS", "NEIGHBOUR_ARCSEC", "median_random", "evaluate_dataset", "flux_diagnostics",
           "read_neighbours", "write_metrics"]

# contaminating / own light in the cutout: the bins of issue 14's flux figures
CONTAMINATION_BINS = (0.0, 0.05, 0.2, 0.5, np.inf)
NEIGHBOUR_ARCSEC = 1.0




def _summary(values: np.ndarray) -> dict[str, float]:
    q16, q50, q84 = np.percentile(values, [16, 50, 84])
    return {"mean": float(values.mean()), "median": float(q50), "spread": float((q84 - q16) / 2)}


def _flux_summary(residual: np.ndarray) -> dict[str, float]:
    """Count, median, half 16-84 % spread and share off by > 50 % of flux residuals [%]."""
    if residual.size == 0:
        return {"count": 0}
    return {"count": int(residual.size), **{k: v for k, v in _summary(residual).items() if k != "mean"},
            "off_by_50pct": float(np.mean(np.abs(residual) > 50))}


def _bins(values: np.ndarray, residual: np.ndarray, estimate: np.ndarray | None = None,
          truth: np.ndarray | None = None) -> list[dict[str, Any]]:
    """:func:`_flux_summary` of ``residual`` per contamination bin of ``values``, with the bin's total flux
    bias 100 (sum estimate / sum truth - 1) [%] when the fluxes are given. Values below the first edge
    (an estimate's negative random flux) count in the first bin."""
    bins = []
    for a, b in zip(CONTAMINATION_BINS[:-1], CONTAMINATION_BINS[1:], strict=True):
        sel = ((values >= a) | (a == CONTAMINATION_BINS[0])) & (values < b)
        row = {"contamination": [a, None if np.isinf(b) else b], **_flux_summary(residual[sel])}
        if estimate is not None and truth is not None and sel.any():
            row["total_flux_bias_pct"] = float(100 * (estimate[sel].sum() / max(truth[sel].sum(), 1e-300) - 1))
        bins.append(row)
    return bins


def flux_diagnostics(draw_flux: np.ndarray, true_flux: np.ndarray, mean_residual: np.ndarray,
                     contamination: np.ndarray, neighbour_distance: np.ndarray | None = None,
                     mean_flux: np.ndarray | None = None,
                     estimated_contamination: np.ndarray | None = None) -> dict[str, Any]:
    """Flux residuals by contamination and neighbour, and the calibration of the draws' flux intervals.

    Args:
        draw_flux: (N, n) each draw's galaxy flux over observed pixels; true_flux: (N,) the truth's.
        mean_residual: (N,) the posterior mean's flux residual [%].
        contamination: (N,) contaminating / own light over observed pixels (truth).
        neighbour_distance: (N,) arcsec to the nearest other catalogued target, or None.
        mean_flux: (N,) the posterior mean's galaxy flux (for the bins' total flux bias), or None.
        estimated_contamination: (N,) the same ratio from the estimates (random over galaxy flux), or
            None; gives ``by_estimated_contamination`` (module docstring).
    """
    n = draw_flux.shape[1]
    lo, hi = np.quantile(draw_flux, [0.16, 0.84], axis=1)
    rank = (draw_flux < true_flux[:, None]).sum(1)
    out: dict[str, Any] = {
        "by_contamination": _bins(contamination, mean_residual, mean_flux, true_flux),
        "interval_16_84_coverage": float(np.mean((true_flux >= lo) & (true_flux <= hi))),
        "interval_16_84_expected": 0.68 * (n - 1) / (n + 1),
        "draws": n,
        "truth_rank_histogram": np.bincount(rank, minlength=n + 1).tolist(),
    }
    if estimated_contamination is not None:
        out["by_estimated_contamination"] = _bins(estimated_contamination, mean_residual, mean_flux, true_flux)
    if neighbour_distance is not None:
        near = neighbour_distance < NEIGHBOUR_ARCSEC
        out["neighbour_within_arcsec"] = NEIGHBOUR_ARCSEC
        out["with_neighbour"] = _flux_summary(mean_residual[near])
        out["without_neighbour"] = _flux_summary(mean_residual[~near])
    return out


def median_random(randoms_cutouts: str | Path) -> np.ndarray:
    """Pixel-wise median of the random cutouts over observed pixels, (H, W) e-/s."""
    with h5py.File(randoms_cutouts, "r") as f:
        return np.nan_to_num(np.nanmedian(np.where(f["mask"][...] > 0, f["flux"][...], np.nan), axis=0))


def evaluate_dataset(ds: xr.Dataset, background: np.ndarray, stretch: Stretch, method: str,
                     neighbour_distance: Mapping[int, float] | None = None) -> dict[str, Any]:
    """Metrics of a catalogue's draws (labelled ``method``) and of the baselines (module docstring).

    ``background`` is the baselines' estimate of the random light, (H, W) e-/s (:func:`median_random`);
    ``neighbour_distance``: object_id -> arcsec to its nearest catalogued neighbour (targets table).
    """
    if "truth_galaxy" not in ds:
        raise InputError("the catalogue has no truth: evaluation needs source: synthetic")
    obs = np.nan_to_num(ds["observation"].values)
    mask = ds["mask"].values.astype(bool)
    tg, tr = np.nan_to_num(ds["truth_galaxy"].values), np.nan_to_num(ds["truth_random"].values)
    galaxy, random = ds["galaxy"].values, ds["random"].values  # the draws, read from the store once
    random_draws_mean = random.mean(1)
    S = stretch.forward
    rng = 2 * stretch.clip
    estimates = {
        f"{method}_mean": (ds["galaxy_mean"].values,
                           ds["random_mean"].values if "random_mean" in ds else random_draws_mean),
        f"{method}_draw": (galaxy[:, 0], random[:, 0]),
        # the plain average of the draws beside the catalogue's mean (Rao-Blackwellised by default): what
        # the estimate gains over it, measured on every run
        f"{method}_draws_mean": (galaxy.mean(1), random_draws_mean),
        "observation": (obs, np.zeros_like(obs)),
        "minus_median_random": (obs - background, np.broadcast_to(background, obs.shape)),
    }
    methods, galaxy_psnr, residual = {}, {}, {}
    for name, (gal, ran) in estimates.items():
        galaxy_psnr[name] = psnr_images(S(gal), S(tg), mask, rng)
        residual[name] = flux_residual(gal, tg, mask)
        methods[name] = {
            "galaxy_psnr": _summary(galaxy_psnr[name]),
            "random_psnr": _summary(psnr_images(S(ran), S(tr), mask, rng)),
            "galaxy_flux_residual_pct": _summary(residual[name]),
        }

    def observed_flux(images: np.ndarray) -> np.ndarray:
        """(N, [n,] H, W) -> (N, [n]) e-/s over each object's observed pixels."""
        m = mask if images.ndim == 3 else mask[:, None]
        return np.where(m, np.nan_to_num(images), 0.0).sum((-2, -1))

    own = observed_flux(tg)
    contamination = observed_flux(tr) / np.maximum(own, 1e-12)
    near = None
    if neighbour_distance is not None:
        near = np.array([neighbour_distance.get(int(i), np.inf) for i in ds["object_id"].values])
    galaxy_mean, random_mean = estimates[f"{method}_mean"]
    mean_flux = observed_flux(galaxy_mean)
    fluxes = flux_diagnostics(observed_flux(galaxy), own, residual[f"{method}_mean"], contamination,
                              near, mean_flux=mean_flux,
                              estimated_contamination=observed_flux(random_mean) / np.maximum(mean_flux, 1e-12))
    if near is not None:
        close = near < NEIGHBOUR_ARCSEC
        psnr = galaxy_psnr[f"{method}_mean"]
        fluxes["with_neighbour"]["galaxy_psnr_mean"] = float(psnr[close].mean()) if close.any() else None
        fluxes["without_neighbour"]["galaxy_psnr_mean"] = float(psnr[~close].mean()) if (~close).any() else None
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
        "fluxes": fluxes,
    }


def read_neighbours(targets: str | Path | None) -> dict[int, float] | None:
    """object_id -> neighbour_distance [arcsec] from a targets table, None without the column."""
    if targets is None:
        return None
    from astropy.table import Table

    t = Table.read(targets, format="ascii.ecsv")
    if "neighbour_distance" not in t.colnames:
        return None
    return {int(i): float(d) for i, d in zip(t["object_id"], np.asarray(t["neighbour_distance"]), strict=True)}


def write_metrics(
    catalogue: str, randoms_cutouts: str, views: Mapping[str, Any], out: str, log: Callable[[str], None] = print,
    targets: str | None = None,
) -> dict[str, Any]:
    stretch = Stretch.from_config(views)
    ds = xr.open_zarr(catalogue, consolidated=False)
    metrics = evaluate_dataset(ds, median_random(randoms_cutouts), stretch, ds.attrs.get("method", "ddprism"),
                               read_neighbours(targets))
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(metrics, indent=2) + "\n")
    for name, m in metrics["methods"].items():
        residual = m["galaxy_flux_residual_pct"]
        log(f"{name:>22}: galaxy PSNR {m['galaxy_psnr']['mean']:.2f} dB, random PSNR {m['random_psnr']['mean']:.2f}"
            f" dB, flux residual {residual['median']:+.1f}% +- {residual['spread']:.1f}%")
    log(f"{metrics['method']} mean beats {metrics['best_baseline']} by {metrics['galaxy_psnr_gain_db']:.2f} dB")
    fl = metrics["fluxes"]
    for kind, key in (("true", "by_contamination"), ("estimated", "by_estimated_contamination")):
        for b in fl.get(key, []):
            if b["count"]:
                log(f"{kind} contamination {b['contamination']}: {b['count']} galaxies, flux {b['median']:+.1f}% "
                    f"+- {b['spread']:.1f}% (total {b['total_flux_bias_pct']:+.1f}%), "
                    f"{100 * b['off_by_50pct']:.0f}% off by > 50%")
    log(f"16-84% flux interval covers the truth for {100 * fl['interval_16_84_coverage']:.0f}% of galaxies "
        f"({100 * fl['interval_16_84_expected']:.0f}% expected of {fl['draws']} calibrated draws)")
    return metrics
