"""Publishing the catalogue: a zipped Zarr store, SHA256 checksums, a data card and a FITS summary."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import xarray as xr
from astropy.table import Table

from galsep.io import atomic_path, sha256_file
from galsep.products.catalogue import MEAN

__all__ = ["SUMMARY_COLUMNS", "summary_table", "data_card", "publish"]

SUMMARY_COLUMNS = {
    "object_id": None, "ra": "deg", "dec": "deg", "tile": None, "galaxy_flux_mean": "electron / s",
    "galaxy_mag": "mag",
}


def summary_table(ds: xr.Dataset) -> Table:
    """Per-object summaries as an astropy Table (for TOPCAT and friends)."""
    t = Table()
    for name, unit in SUMMARY_COLUMNS.items():
        t[name] = ds[name].values
        if unit:
            t[name].unit = unit
    q = ds["galaxy_flux_quantiles"].values
    for j, level in enumerate(ds["quantile"].values):
        t[f"galaxy_flux_q{int(round(100 * level)):02d}"] = q[:, j]
        t[f"galaxy_flux_q{int(round(100 * level)):02d}"].unit = "electron / s"
    t.meta["COMMENT"] = ["galsep catalogue summary; draws and images are in the Zarr store"]
    return t


def catalogue_method(ds: xr.Dataset) -> str:
    """The separation method that made the catalogue: its ``method`` attribute, else its recorded config's."""
    if "method" in ds.attrs:
        return str(ds.attrs["method"])
    return str(json.loads(ds.attrs.get("config", "{}")).get("method", "unknown"))


def describe_method(method: str) -> tuple[str, str]:
    """(name, one paragraph on how the draws were made) of a separation method, for the data card."""
    from galsep.methods import registry

    cls = registry().get(method)
    if cls is not None and cls.summary:
        return cls.title or method, cls.summary
    return method, f"The draws were made by the separation method `{method}` (see galsep.methods)."


def _flux_table(fluxes: Mapping[str, Any] | None) -> list[str]:
    """Markdown lines: the posterior mean's flux residual by contamination, on the truth and on the estimate."""
    if not fluxes:
        return []
    lines = ["", "Galaxy flux residual of the posterior mean (galaxy_flux_mean against the truth), by contaminating "
             "over own light in the cutout: median and half 16-84 % spread [%], total flux bias [%] "
             "(sum of estimates over sum of truths), count.", "",
             "| contamination | by the truth | by the estimate |", "|---|---|---|"]

    def cell(b: Mapping[str, Any]) -> str:
        if not b.get("count"):
            return "-"
        total = f", total {b['total_flux_bias_pct']:+.1f}" if "total_flux_bias_pct" in b else ""
        return f"{b['median']:+.1f} +- {b['spread']:.1f}{total} ({b['count']})"

    by_estimate = fluxes.get("by_estimated_contamination") or [{}] * len(fluxes["by_contamination"])
    for truth, est in zip(fluxes["by_contamination"], by_estimate, strict=True):
        lo, hi = truth["contamination"]
        lines.append(f"| {lo:g}-{'' if hi is None else f'{hi:g}'} | {cell(truth)} | {cell(est)} |")
    if "interval_16_84_coverage" in fluxes:
        lines += ["", f"The truth lies inside the draws' 16-84 % flux interval for "
                  f"{fluxes['interval_16_84_coverage']:.2f} of galaxies ({fluxes['interval_16_84_expected']:.2f} "
                  f"expected for {fluxes['draws']} calibrated draws)."]
    return lines


def data_card(ds: xr.Dataset, metrics: Mapping[str, Any] | None, checksums: Mapping[str, str]) -> str:
    """A short Markdown description of the catalogue: fields, units, provenance, how it was made."""
    method = catalogue_method(ds)
    name, how = describe_method(method)
    lines = [
        "# galsep catalogue of separated galaxies", "",
        f"{ds.sizes['object']} galaxies, {ds.sizes['sample']} draws each, "
        f"{ds.sizes['y']}x{ds.sizes['x']} pixels of {ds.attrs['pixel_scale_arcsec']} arcsec.",
        f"Separation method: {name} (`method: {method}`).",
        f"Source imaging: {ds.attrs['source']}. Made by galsep {ds.attrs['galsep_version']} on {ds.attrs['created']}.",
        "", "## How it was made",
        "Cutouts of HST ACS/WFC F814W imaging (COSMOS, or a GalSim simulation of it) were normalised with "
        f"an arcsinh stretch ({ds.attrs['normalisation']}). {how}",
        "", "## Photometry: in which space the sources add",
        "The model adds the galaxy and the contaminating light in the normalised (arcsinh) space, not in "
        "flux. The draws are converted to e-/s so that they add up in flux: random = inverse(r) and "
        "galaxy = inverse(g + r) - inverse(r). Where the light is faint (well below 0.1 e-/s per pixel) "
        "this equals inverse(g). Galaxy fluxes are sums over the cutout of these images: they miss light "
        "outside the cutout and inherit the model's errors where bright contaminants overlap the galaxy.",
        "", "## What a galaxy flux means",
        "`galaxy_flux_mean` is the flux of `galaxy_mean`, the posterior mean ("
        + ds["galaxy_mean"].attrs.get("description", "the mean of the draws").removeprefix(MEAN)
        + "), whose error averages to "
        "zero over galaxies whose data look alike (same estimated contamination, say), as far as the priors "
        "are right. It is not unbiased for a subset chosen by what the data cannot show: galaxies known "
        "(from elsewhere) to be isolated come out low by the light typical cutouts carry, the most "
        "contaminated ones high. `galaxy_flux_quantiles` spans the draws: use it as the flux's uncertainty.",
        *(["Where another catalogued galaxy overlaps the cutout (the `neighbour` field), its pixels were left "
           "unobserved: the galaxy there, and so that part of its flux, comes from the prior, not the data."]
          if json.loads(ds.attrs.get("config", "{}")).get("views", {}).get("mask_neighbours") else []),
        "", "## Fields", "| field | dims | units | description |", "|---|---|---|---|",
    ]
    for field, var in ds.variables.items():
        lines.append(f"| {field} | {', '.join(map(str, var.dims))} | {var.attrs.get('units', '')} | "
                     f"{var.attrs.get('description', '')} |")
    lines += ["", "## Provenance",
              "- weights that made the draws (priors or fitted model) and their SHA256: "
              f"`{ds.attrs['prior_checkpoints']}`",
              f"- software versions: `{ds.attrs['versions']}`",
              "- the config is in the store's attribute `config`: all of it except `compare` and the `methods:` "
              "settings of the methods that did not make the catalogue"]
    if metrics:
        best = metrics["best_baseline"]
        mean_psnr = metrics["methods"][metrics["method"] + "_mean"]["galaxy_psnr"]["mean"]
        lines += ["", "## Quality on synthetic truth",
                  f"Galaxy PSNR of the posterior mean {mean_psnr:.2f} dB, "
                  f"best trivial baseline ({best}) {metrics['methods'][best]['galaxy_psnr']['mean']:.2f} dB."]
        lines += _flux_table(metrics.get("fluxes"))
    lines += ["", "## Checksums (SHA256)"] + [f"- `{k}`: {v}" for k, v in checksums.items()]
    return "\n".join(lines) + "\n"


def publish(catalogue: str, metrics: str, outdir: str, config: Mapping[str, Any],
            log: Callable[[str], None] = print) -> None:
    """Write catalogue.zarr.zip, summary.fits, DATACARD.md and SHA256SUMS into ``outdir`` atomically."""
    ds = xr.open_zarr(catalogue)
    metrics_data = json.loads(Path(metrics).read_text()) if metrics != "none" and Path(metrics).exists() else None
    with atomic_path(outdir) as tmp:
        tmp.mkdir()
        shutil.make_archive(str(tmp / "catalogue.zarr"), "zip", root_dir=catalogue)
        summary_table(ds).write(tmp / "summary.fits", format="fits")
        if metrics_data:
            (tmp / "metrics.json").write_text(json.dumps(metrics_data, indent=2) + "\n")
        sums = {p.name: sha256_file(p) for p in sorted(tmp.iterdir())}
        (tmp / "DATACARD.md").write_text(data_card(ds, metrics_data, sums))
        sums["DATACARD.md"] = sha256_file(tmp / "DATACARD.md")
        (tmp / "SHA256SUMS").write_text("".join(f"{v}  {k}\n" for k, v in sums.items()))
    log(f"published {len(sums)} files to {outdir}")
