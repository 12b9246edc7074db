"""Figures for ``snakemake --report``: posterior samples, EM-lap evolution, training loss, metrics and
the comparison of methods."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402

from galsep.data.normalise import Stretch  # noqa: E402
from galsep.io import (  # noqa: E402
    atomic_path,  # noqa: E402
    load_torch,
)

__all__ = ["posterior_grid", "em_evolution", "loss_curves", "metrics_bars", "comparison_bars", "make_figures"]


def _save(fig: plt.Figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def _stretch(ds: xr.Dataset) -> Stretch:
    return Stretch(**json.loads(ds.attrs["normalisation"]))


def posterior_grid(ds: xr.Dataset, path: Path, n: int = 6) -> None:
    """Rows: objects; columns: observation, two galaxy draws, galaxy mean, random draw, truth."""
    s = _stretch(ds)
    n = min(n, ds.sizes["object"])
    idx = np.linspace(0, ds.sizes["object"] - 1, n).astype(int)
    cols = [("observation", lambda i: ds["observation"][i]), ("galaxy draw 1", lambda i: ds["galaxy"][i, 0]),
            ("galaxy draw 2", lambda i: ds["galaxy"][i, min(1, ds.sizes["sample"] - 1)]),
            ("galaxy mean", lambda i: ds["galaxy_mean"][i]), ("random draw", lambda i: ds["random"][i, 0])]
    if "truth_galaxy" in ds:
        cols.append(("true galaxy", lambda i: ds["truth_galaxy"][i]))
    fig, axes = plt.subplots(n, len(cols), figsize=(1.8 * len(cols), 1.8 * n), squeeze=False)
    for r, i in enumerate(idx):
        for c, (title, get) in enumerate(cols):
            ax = axes[r, c]
            ax.imshow(s.forward(np.asarray(get(i))), cmap="magma", vmin=-0.1, vmax=1.0, origin="lower")
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=8)
        axes[r, 0].set_ylabel(f"id {int(ds['object_id'][i])}", fontsize=7)
    _save(fig, path)


def em_evolution(sample_paths: Sequence[str], path: Path, n: int = 5) -> None:
    """The galaxy chain's (or the last chain's) E-step samples of the same objects, lap by lap."""
    runs = [load_torch(p) for p in sample_paths]
    chain = "galaxy" if any(r["chain"] == "galaxy" for r in runs) else runs[-1]["chain"]
    runs = sorted((r for r in runs if r["chain"] == chain), key=lambda r: r["lap"])
    k = runs[0]["sources"].index("galaxy") if "galaxy" in runs[0]["sources"] else 0
    n = min(n, runs[0]["samples"].shape[0])
    fig, axes = plt.subplots(n, len(runs), figsize=(1.6 * len(runs), 1.6 * n), squeeze=False)
    for c, r in enumerate(runs):
        for i in range(n):
            ax = axes[i, c]
            ax.imshow(r["samples"][i, k].numpy(), cmap="magma", vmin=-0.1, vmax=1.0, origin="lower")
            ax.set_xticks([]), ax.set_yticks([])
        axes[0, c].set_title(f"lap {r['lap']}", fontsize=8)
    fig.suptitle(f"chain {chain}: {runs[0]['sources'][k]} posterior samples per EM lap", fontsize=9)
    _save(fig, path)


def loss_curves(lap_paths: Sequence[str], path: Path) -> None:
    """Per-lap training loss of every source, laps laid end to end."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    curves: dict[str, list[np.ndarray]] = {}
    for p in lap_paths:
        ckpt = load_torch(p)
        for source, losses in ckpt.get("losses", {}).items():
            curves.setdefault(f"{ckpt['chain']}/{source}", []).append(np.asarray(losses))
    for name, laps in curves.items():
        offset = 0
        for j, loss in enumerate(laps):
            w = max(1, len(loss) // 20)
            smooth = np.convolve(loss, np.ones(w) / w, mode="valid")
            ax.plot(offset + np.arange(len(smooth)), smooth, color=f"C{list(curves).index(name)}",
                    label=name if j == 0 else None)
            ax.axvline(offset, color="0.85", lw=0.5)
            offset += len(loss)
    ax.set_yscale("log")
    ax.set_xlabel("training step (laps end to end)")
    ax.set_ylabel("loss")
    if curves:
        ax.legend(fontsize=8)
    _save(fig, path)


def metrics_bars(metrics_path: str, path: Path) -> None:
    """Galaxy and random PSNR of every method in metrics.json."""
    m = json.loads(Path(metrics_path).read_text())["methods"]
    names = list(m)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    x = np.arange(len(names))
    values = []
    for j, key in enumerate(("galaxy_psnr", "random_psnr")):
        values += [m[n][key]["mean"] for n in names]
        ax.bar(x + 0.4 * j - 0.2, values[-len(names):], 0.4, label=key.replace("_", " "))
    # the methods differ by a few dB on top of ~45: start the axis near the lowest bar
    ax.set_ylim(min(values) - 3, max(values) + 1)
    ax.set_xticks(x, names, rotation=20, fontsize=8), ax.set_ylabel("PSNR [dB]"), ax.legend(fontsize=8)
    _save(fig, path)


def comparison_bars(table: Mapping[str, Any], path: Path) -> None:
    """Galaxy PSNR (mean and single draw) and wall time of every method in the comparison table."""
    rows = table["rows"]
    names = [r["method"] for r in rows]
    x = np.arange(len(names))
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 3.5), gridspec_kw={"width_ratios": [3, 2]})
    mean, draw = [r["galaxy_psnr_mean_db"] for r in rows], [r["galaxy_psnr_draw_db"] for r in rows]
    ax.bar(x - 0.2, mean, 0.4, label="mean of draws"), ax.bar(x + 0.2, draw, 0.4, label="single draw")
    ax.set_ylim(min(mean + draw) - 3, max(mean + draw) + 1)
    ax.set_xticks(x, names, rotation=30, fontsize=8), ax.set_ylabel("galaxy PSNR [dB]"), ax.legend(fontsize=8)
    timed = [r for r in rows if "separate_s" in r]  # the trivial baselines cost nothing
    xt = np.arange(len(timed))
    bx.bar(xt - 0.2, [r["fit_s"] for r in timed], 0.4, label="fit (diffusion: shared EM)")
    bx.bar(xt + 0.2, [r["separate_s"] for r in timed], 0.4, label="separate")
    bx.set_yscale("log"), bx.set_ylabel("wall time [s]"), bx.legend(fontsize=8)
    bx.set_xticks(xt, [r["method"] for r in timed], rotation=30, fontsize=8)
    _save(fig, path)


def make_figures(
    catalogue: str, metrics: str, lap_paths: Sequence[str], sample_paths: Sequence[str], outdir: str,
    log: Callable[[str], None] = print,
) -> None:
    out = Path(outdir)
    posterior_grid(xr.open_zarr(catalogue), out / "posterior.png")
    if sample_paths:
        em_evolution(sample_paths, out / "em_laps.png")
    else:
        _save(plt.figure(), out / "em_laps.png")
    loss_curves(lap_paths, out / "loss.png")
    metrics_bars(metrics, out / "metrics.png")
    log(f"figures written to {out}")
