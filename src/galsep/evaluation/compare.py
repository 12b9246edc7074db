"""Every method side by side on the same views: quality against the synthetic truth, cost.

Per method (``results/compare/{method}.json``): the galaxy PSNR of its mean and of a single draw and
the flux residual (as :mod:`galsep.evaluation.evaluate` computes them for the catalogue), and two distribution
scores of its single draws against the true galaxies in the normalised space: the PQMass p-value
(``pqm``; large is good, about uniform on [0, 1] when the draws and the truths are alike) and the
Sinkhorn divergence (``geomloss``; small is good). Unobserved pixels are zero in both sets.
The table (``results/compare/table.{json,md}``, ``compare.png``) adds each method's wall time and
peak memory from Snakemake's benchmark files: "fit" is the training the method needs (for the
diffusion methods, the EM of the priors they share) and "separate" the sampling of every galaxy.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from galsep.data.normalise import Stretch
from galsep.errors import InputError
from galsep.evaluation.evaluate import evaluate_dataset, median_random, read_neighbours
from galsep.evaluation.metrics import PQMASS_CONVENTION, SINKHORN_CONVENTION, pqmass, sinkhorn
from galsep.io import atomic_path
from galsep.products.catalogue import build_dataset, gather_draws
from galsep.seeding import derive_seed

__all__ = [
    "PQMASS_TESSELLATIONS", "SINKHORN_EPS", "comparison", "markdown", "method_metrics", "read_benchmarks",
    "write_comparison", "write_method_metrics"
]

Log = Callable[[str], None]


# the table's two-sample settings: 10 tessellations of at most 100 reference points; Sinkhorn eps
# 5e-3 on |x - y|^2 (blur 0.05 in geomloss's units), its coarse-to-fine scaling 0.5
PQMASS_TESSELLATIONS = 10
SINKHORN_EPS = 5e-3


def method_metrics(method: str, shard_paths: Sequence[str], cutouts: str, randoms: str,
                   p: Mapping[str, Any], targets: str | None = None) -> dict[str, Any]:
    """Metrics of one method's separation shards (see the module docstring); with the targets table,
    also split by a catalogued neighbour within 1" (as the catalogue's metrics)."""
    draws, sources, made_by, mean = gather_draws(shard_paths)
    if made_by != method:
        raise InputError(f"the shards were made by {made_by!r}, not {method!r}")
    stretch = Stretch.from_config(p["views"])
    ds = build_dataset(draws, sources, cutouts, stretch, {}, mean)
    metrics = evaluate_dataset(ds, median_random(randoms), stretch, method, read_neighbours(targets))
    mask = ds["mask"].values.astype(bool)
    flat = lambda a: np.where(mask, stretch.forward(np.nan_to_num(a)), 0.0).reshape(len(a), -1)  # noqa: E731
    draw, truth = flat(ds["galaxy"].values[:, 0]), flat(ds["truth_galaxy"].values)
    refs = max(2, min(100, (len(draw) + len(truth)) // 4))
    metrics["pqmass_p"] = pqmass(draw, truth, seed=derive_seed(p["seed"], "pqmass", method),
                                 tessellations=PQMASS_TESSELLATIONS, num_refs=refs)
    metrics["sinkhorn"] = sinkhorn(draw, truth, eps=SINKHORN_EPS, scaling=0.5)
    return metrics


def write_method_metrics(method: str, shard_paths: Sequence[str], cutouts: str, randoms: str,
                         p: Mapping[str, Any], out: str, log: Log = print, targets: str | None = None
                         ) -> dict[str, Any]:
    metrics = method_metrics(method, shard_paths, cutouts, randoms, p, targets)
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(metrics, indent=2) + "\n")
    m = metrics["methods"]
    log(f"{method}: galaxy PSNR mean {m[method + '_mean']['galaxy_psnr']['mean']:.2f} dB, draw"
        f" {m[method + '_draw']['galaxy_psnr']['mean']:.2f} dB, PQMass p {metrics['pqmass_p']:.3g},"
        f" Sinkhorn {metrics['sinkhorn']:.4g}")
    return metrics


def read_benchmarks(paths: Sequence[str]) -> dict[str, float | None]:
    """Summed wall seconds and the peak RSS [MB] over Snakemake benchmark files.

    A missing, empty or unreadable file raises :class:`InputError` naming it. No files (a method with
    no fit job) is 0 s. A job faster than Snakemake's first memory sample has ``max_rss`` NA: the peak
    is over the jobs that were sampled, and None (not measured) when none was.
    """
    seconds, sampled = 0.0, []
    for path in paths:
        if not Path(path).is_file():
            raise InputError(f"benchmark file {path} is missing: rerun the job that makes it")
        try:
            with open(path) as f:
                rows = list(csv.DictReader(f, delimiter="\t"))
            # a benchmark file holds one row per repeat: the last one is the latest run
            s, rss = rows[-1]["s"], rows[-1]["max_rss"]
            s, rss = float(s), (None if rss in ("", "-", "NA") else float(rss))
        except (OSError, IndexError, KeyError, TypeError, ValueError) as err:
            raise InputError(f"benchmark file {path} is malformed ({type(err).__name__}: {err}): expected"
                             " Snakemake's TSV with columns s and max_rss; delete it and rerun its job") from err
        if not (math.isfinite(s) and s >= 0) or (rss is not None and not (math.isfinite(rss) and rss > 0)):
            raise InputError(f"benchmark file {path} is malformed: s = {s}, max_rss = {rss}")
        seconds += s
        if rss is not None:
            sampled.append(rss)
    return {"seconds": seconds, "peak_rss_mb": max(sampled) if sampled else None}


def comparison(metric_paths: Sequence[str], benchmarks: Mapping[str, Mapping[str, Sequence[str]]]) -> dict[str, Any]:
    """The table: one row per method, then the two trivial baselines (identical for every method)."""
    rows, trivial = [], {}
    for path in metric_paths:
        m = json.loads(Path(path).read_text())
        name = m["method"]
        mean, draw = m["methods"][f"{name}_mean"], m["methods"][f"{name}_draw"]
        near = m.get("fluxes", {}).get("with_neighbour", {})
        fit, sep = (read_benchmarks(benchmarks.get(name, {}).get(k, [])) for k in ("fit", "separate"))
        rows.append({
            "method": name,
            "galaxy_psnr_mean_db": mean["galaxy_psnr"]["mean"],
            "galaxy_psnr_draw_db": draw["galaxy_psnr"]["mean"],
            "random_psnr_mean_db": mean["random_psnr"]["mean"],
            "flux_residual_median_pct": mean["galaxy_flux_residual_pct"]["median"],
            "flux_residual_spread_pct": mean["galaxy_flux_residual_pct"]["spread"],
            "pqmass_p": m["pqmass_p"],
            "sinkhorn": m["sinkhorn"],
            # galaxies with a catalogued neighbour within 1" (None without a targets table)
            "neighbour_psnr_mean_db": near.get("galaxy_psnr_mean"),
            "neighbour_flux_median_pct": near.get("median"),
            "neighbour_count": near.get("count"),
            "draws": m["draws"],
            "fit_s": fit["seconds"],
            "separate_s": sep["seconds"],
            "peak_rss_mb": max((v for v in (fit["peak_rss_mb"], sep["peak_rss_mb"]) if v is not None), default=None),
        })
        trivial = {k: m["methods"][k] for k in ("observation", "minus_median_random")}
    for name, t in trivial.items():
        rows.append({"method": name, "galaxy_psnr_mean_db": t["galaxy_psnr"]["mean"],
                     "galaxy_psnr_draw_db": t["galaxy_psnr"]["mean"], "random_psnr_mean_db": t["random_psnr"]["mean"],
                     "flux_residual_median_pct": t["galaxy_flux_residual_pct"]["median"],
                     "flux_residual_spread_pct": t["galaxy_flux_residual_pct"]["spread"]})
    first = json.loads(Path(metric_paths[0]).read_text())
    return {"rows": rows, "psnr_range": first["psnr_range"], "conventions": {
        "psnr": first.get("psnr_convention", ""),
        "pqmass": f"{PQMASS_CONVENTION} ({PQMASS_TESSELLATIONS}); one draw per galaxy against the true galaxies",
        "sinkhorn": f"{SINKHORN_CONVENTION} = {SINKHORN_EPS:g}; one draw per galaxy against the true galaxies",
    }}


def markdown(table: Mapping[str, Any]) -> str:
    """The table in Markdown, for the note, the README and the report."""
    cols = [("method", "method", "{}"), ("galaxy PSNR, mean [dB]", "galaxy_psnr_mean_db", "{:.2f}"),
            ("galaxy PSNR, draw [dB]", "galaxy_psnr_draw_db", "{:.2f}"),
            ("flux residual [%]", "flux_residual_median_pct", "{:+.1f}"),
            ("+-", "flux_residual_spread_pct", "{:.1f}"), ("PQMass p", "pqmass_p", "{:.3g}"),
            ("Sinkhorn", "sinkhorn", "{:.4g}"), ("neighbour < 1\": PSNR [dB]", "neighbour_psnr_mean_db", "{:.2f}"),
            ("neighbour: flux [%]", "neighbour_flux_median_pct", "{:+.1f}"), ("fit [s]", "fit_s", "{:.0f}"),
            ("separate [s]", "separate_s", "{:.0f}"), ("peak RSS [MB]", "peak_rss_mb", "{:.0f}")]
    lines = ["| " + " | ".join(c[0] for c in cols) + " |", "|" + "---|" * len(cols)]
    for row in table["rows"]:
        cells = [fmt.format(row[key]) if row.get(key) is not None and row[key] == row[key] else "-"
                 for _, key, fmt in cols]
        lines.append("| " + " | ".join(cells) + " |")
    conv = table.get("conventions", {})
    lines += [""] + [f"- {k}: {v}" for k, v in conv.items() if v]
    return "\n".join(lines) + "\n"


def write_comparison(metric_paths: Sequence[str], benchmarks: Mapping[str, Mapping[str, Sequence[str]]],
                     outdir: str, log: Log = print) -> dict[str, Any]:
    """table.json, table.md and compare.png in ``outdir``."""
    from galsep.evaluation.figures import comparison_bars

    out = Path(outdir)
    table = comparison(metric_paths, benchmarks)
    with atomic_path(out / "table.json") as tmp:
        tmp.write_text(json.dumps(table, indent=2) + "\n")
    text = markdown(table)
    with atomic_path(out / "table.md") as tmp:
        tmp.write_text(text)
    comparison_bars(table, out / "compare.png")
    log("\n" + text)
    return table
