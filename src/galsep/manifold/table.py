"""The experiment's table: every (setting, method)'s metrics beside the paper's, as JSON and markdown."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from galsep.io import atomic_path
from galsep.manifold.paper import METRICS, paper_row

__all__ = ["HEADERS", "LABELS", "build_table", "markdown", "write_table"]

LABELS = {
    "ddprism": "DDPRISM-Joint", "gibbs": "DDPRISM-Gibbs", "pcpca": "PCPCA", "clvm_linear": "CLVM-Linear",
    "clvm_vae": "CLVM-VAE", "gaussian": "floor: Gaussian prior", "prior_mean": "floor: prior mean",
}
HEADERS = ("post. PQM ↑", "post. PSNR ↑", "post. SD ↓", "prior PQM ↑", "prior SD ↓")


def _fmt(metric: str, value: float | None) -> str:
    if value is None:
        return "–"
    if metric.endswith("psnr"):
        return f"{value:.2f}"
    if metric.endswith("pqm"):
        return "0" if value == 0 else f"{value:.2g}"
    return f"{value:.3g}"


def _cell(metric: str, ours: float | None, paper: Mapping[str, float] | None) -> str:
    return _fmt(metric, ours) + (f" ({_fmt(metric, paper[metric])})" if paper is not None else "")


def build_table(records: Sequence[Mapping[str, Any]], p: Mapping[str, Any]) -> dict[str, Any]:
    """Gather metrics records (metrics.evaluate) in the config's setting and method order."""
    by_key = {(r["setting"], r["method"]): r for r in records}
    settings: dict[str, Any] = {}
    for s in p["settings"]:
        rows = {}
        for m in p["methods"]:
            r = by_key.get((s, m))
            if r is None:
                continue
            rows[m] = {"headline": r["headline"], "headline_sources": r["headline_sources"], "sources": r["sources"],
                       "paper": paper_row(s, m), "seconds": r["seconds"], "device": r["device"]}
        settings[s] = rows
    return {"size": p["size"], "metrics": p["metrics"], "settings": settings,
            "compute_seconds": sum(r["seconds"] for r in records)}


def markdown(table: Mapping[str, Any]) -> str:
    """The table as markdown: headline rows with the paper's numbers in brackets, then every source."""
    m = table["metrics"]
    lines = [
        f"# DDPRISM 1-D manifold experiments (size: {table['size']})", "",
        "Ours (paper's table 1 in brackets). Posterior: one draw per observation against its true source;"
        " prior: draws against the true source distribution. PSNR in dB with max spread"
        f" {m['spread']:g}; SD: Sinkhorn divergence (squared-Euclidean cost, entropic regularisation"
        f" {m['sinkhorn_reg']:g}, {m['sinkhorn_samples']} samples); PQM: PQMass p-value ({m['tessellations']}"
        f" tessellations, {m['pqm_samples']} samples). Contrastive settings report the last (target) source,"
        " mixed settings the mean of both. Compute: the method's CPU/GPU seconds (EM stages or fit, and draws).",
    ]
    for setting, rows in table["settings"].items():
        if not rows:
            continue
        sources = next(iter(rows.values()))["headline_sources"]
        lines += ["", f"## {setting} (source{'s' if len(sources) > 1 else ''} {', '.join(map(str, sources))})", "",
                  "| method | " + " | ".join(HEADERS) + " | compute |", "|---" * (len(HEADERS) + 2) + "|"]
        for method, row in rows.items():
            head = row["headline"] or {}
            cells = [_cell(k, head.get(k), row["paper"]) for k in METRICS]
            lines.append(f"| {LABELS.get(method, method)} | " + " | ".join(cells) + f" | {row['seconds']:.0f} s |")
    lines += ["", "## Every source", "", "| setting | method | source | " + " | ".join(HEADERS) + " |",
              "|---" * (len(HEADERS) + 3) + "|"]
    for setting, rows in table["settings"].items():
        for method, row in rows.items():
            for source, values in row["sources"].items():
                if values is None:
                    continue
                cells = [_fmt(k, values[k]) for k in METRICS]
                lines.append(f"| {setting} | {LABELS.get(method, method)} | {source[len('source'):]} | "
                             + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_table(paths: Sequence[str], p: Mapping[str, Any], out_json: str, out_md: str,
                log: Callable[[str], None] = print) -> None:
    records = [json.loads(Path(path).read_text()) for path in paths]
    table = build_table(records, p)
    with atomic_path(out_json) as tmp:
        tmp.write_text(json.dumps(table, indent=1))
    text = markdown(table)
    with atomic_path(out_md) as tmp:
        tmp.write_text(text)
    log(text)
