"""The metrics of DDPRISM's table 1 for vector sources (paper appendix C, the DDPRISM metrics code).

- PSNR: per observation 20 log10(spread / sqrt(mean_d (x - x_hat)^2)), averaged over observations,
  with spread = 4 (the range the manifolds are scaled to) - the paper's convention.
- Sinkhorn divergence S_eps(a, b) = OT_eps(a, b) - (OT_eps(a, a) + OT_eps(b, b)) / 2 on the squared
  Euclidean cost |x - y|^2 with entropic regularisation ``reg`` (DDPRISM: 1e-3 on that cost), computed
  by geomloss (cost |x - y|^2 / 2, so blur = sqrt(reg / 2) and the value is doubled). The DDPRISM code
  uses POT and debiases with the two halves of each set; geomloss debiases with the whole sets, so
  S(a, a) = 0 here and the two agree up to that finite-sample offset.
- PQMass p-value (``pqm.pqm_pvalue``, default settings, ``tessellations`` re-tessellations, mean p-value).
  All three from galsep.evaluation.metrics (the project's one metrics module).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from galsep.evaluation import metrics

if TYPE_CHECKING:
    from galsep.manifold.settings import Setting

__all__ = ["evaluate", "source_metrics"]


def source_metrics(posterior: Tensor, prior: Tensor, truth: Tensor, population: Tensor, p: Mapping[str, Any],
                   seed: int) -> dict[str, float]:
    """Metrics of one source.

    Args:
        posterior: one draw per observation (N, D); truth: the true source of each (N, D).
        prior: prior draws (M, D); population: true draws from the source's distribution (M', D).
        p: the ``metrics`` section: psnr_samples, sinkhorn_samples, pqm_samples, tessellations, sinkhorn_reg,
            spread.
    """
    n_psnr, n_sd, n_pqm = (min(p[k], len(posterior)) for k in ("psnr_samples", "sinkhorn_samples", "pqm_samples"))
    m_sd, m_pqm = min(p["sinkhorn_samples"], len(prior), len(population)), min(p["pqm_samples"], len(prior),
                                                                               len(population))
    return {
        "posterior_psnr": metrics.psnr_vectors(posterior[:n_psnr], truth[:n_psnr], p["spread"]),
        "posterior_sinkhorn": metrics.sinkhorn(posterior[:n_sd], truth[:n_sd], eps=p["sinkhorn_reg"]),
        "posterior_pqm": metrics.pqmass(posterior[:n_pqm], truth[:n_pqm], tessellations=p["tessellations"], seed=seed),
        "prior_sinkhorn": metrics.sinkhorn(prior[:m_sd], population[:m_sd], eps=p["sinkhorn_reg"]),
        "prior_pqm": metrics.pqmass(prior[:m_pqm], population[:m_pqm], tessellations=p["tessellations"],
                                    seed=seed + 1),
    }


def evaluate(setting: Setting, data: Mapping[str, Any], draws: Mapping[str, Any], p: Mapping[str, Any],
             seed: int) -> dict[str, Any]:
    """Every metric of every source a method drew, and the headline: their mean over the setting's
    headline sources (the contrastive target, or both mixed sources).

    Args:
        setting: settings.Setting; data: the dataset; draws: the draws record (galsep.manifold.draws).
        p: the ``metrics`` section; seed: seeds PQMass.
    """
    from galsep.manifold.data import observations
    from galsep.manifold.draws import population

    truth = observations(data, setting.views, range(setting.sources)).truth
    assert truth is not None  # the manifold datasets carry their true sources
    sources: dict[str, dict[str, float] | None] = {}
    for k in range(setting.sources):
        post, prior = draws["posterior"][:, k], draws["prior"][:, k]
        if torch.isnan(post).all():
            sources[f"source{k + 1}"] = None
            continue
        sources[f"source{k + 1}"] = source_metrics(post, prior, truth[:, k], population(data, k), p, seed + 2 * k)
    picked = [s for k in setting.headline() if (s := sources[f"source{k + 1}"]) is not None]
    headline = {m: float(np.mean([s[m] for s in picked])) for m in picked[0]} if picked else None
    return {"setting": setting.name, "method": draws["method"], "headline_sources": [k + 1 for k in setting.headline()],
            "headline": headline, "sources": sources, "seconds": draws["seconds"], "device": draws["device"]}
