"""DDPRISM's table 1 (1-D manifold rows), as printed in the paper: the numbers our table stands beside.

Per setting and method: posterior PQMass p-value, PSNR [dB] and Sinkhorn divergence, then prior
PQMass p-value and Sinkhorn divergence (the table's FID columns are empty for these rows). The paper
reports one number per setting: for contrastive settings the metrics of the last (target) source as
the DDPRISM code logs them per source, for the mixed setting (f_mix = 0.1) the two sources together.
The paper has no row for the other mixing fractions (only its figure 2) nor for the floors.
"""

from __future__ import annotations

__all__ = ["METRICS", "PAPER", "paper_row"]

METRICS = ("posterior_pqm", "posterior_psnr", "posterior_sinkhorn", "prior_pqm", "prior_sinkhorn")


def _row(pqm: float, psnr: float, sd: float, prior_pqm: float, prior_sd: float) -> dict[str, float]:
    return dict(zip(METRICS, (pqm, psnr, sd, prior_pqm, prior_sd), strict=True))


PAPER: dict[str, dict[str, dict[str, float]]] = {
    "contrastive-2": {
        "pcpca": _row(0.0, 9.35, 7.69, 0.0, 7.91),
        "clvm_linear": _row(0.0, 9.58, 5.80, 0.0, 5.86),
        "clvm_vae": _row(0.0, 17.15, 1.81, 0.0, 2.91),
        "gibbs": _row(0.0, 12.66, 3.96, 0.0, 3.92),
        "ddprism": _row(0.26, 38.27, 0.35, 0.01, 0.37),
    },
    "contrastive-3": {
        "pcpca": _row(0.0, 6.89, 12.57, 0.0, 10.22),
        "clvm_linear": _row(0.0, 11.64, 2.03, 0.0, 2.16),
        "clvm_vae": _row(0.0, 13.09, 2.22, 0.0, 1.82),
        "gibbs": _row(0.0, 9.50, 4.50, 0.0, 4.53),
        "ddprism": _row(0.0, 19.78, 0.75, 0.0, 0.78),
    },
    "mixed-0.1": {
        "gibbs": _row(0.0, 17.69, 1.84, 0.0, 1.81),
        "ddprism": _row(0.001, 24.15, 0.05, 0.0, 0.04),
    },
}


def paper_row(setting: str, method: str) -> dict[str, float] | None:
    """The paper's numbers for a (setting, method), or None where the paper has none."""
    return PAPER.get(setting, {}).get(method)
