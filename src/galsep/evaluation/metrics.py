"""Every metric of the project, with its convention named, for the evaluation, the comparison and the
manifold table alike.

- PSNR [dB], argument order (estimate, truth): 10 log10(data_range^2 / MSE) per object; images over the
  pixels where ``mask`` (the galaxy field: data_range = 2 * clip = 4 in the normalised space, the
  DDPRISM convention), vectors over all elements (the manifolds: data_range = their spread, 4). The MSE
  is floored at 1e-12 (images) or the RMS offset by 1e-6 (vectors, as the DDPRISM metrics code does).
- Sinkhorn divergence S_eps(a, b) = OT_eps(a, b) - (OT_eps(a, a) + OT_eps(b, b)) / 2 on the squared
  Euclidean cost |x - y|^2 with entropic regularisation eps (DDPRISM: 1e-3), computed by geomloss (whose
  p = 2 cost is |x - y|^2 / 2: blur = sqrt(eps / 2), value doubled), debiased, in float64.
- PQMass p-value (``pqm``, arXiv 2402.04355): the *mean* over re-tessellations; pqm draws its reference
  points from numpy's global generator, so it is seeded here and restored after, and its per-call bar
  is silenced.
- Flux residual [%], argument order (estimate, truth): 100 (F_est - F_true) / |F_true| over the mask.
"""

from __future__ import annotations

import math
import warnings
from unittest import mock

import numpy as np
import torch
from torch import Tensor

__all__ = ["flux_residual", "pqmass", "psnr_images", "psnr_vectors", "sinkhorn", "SINKHORN_CONVENTION",
           "PQMASS_CONVENTION", "PSNR_CONVENTION"]

PSNR_CONVENTION = "PSNR = 10 log10(range^2 / MSE) per object, then averaged"
SINKHORN_CONVENTION = (
    "debiased Sinkhorn divergence on the squared Euclidean cost |x - y|^2, entropic regularisation eps"
)
PQMASS_CONVENTION = "PQMass p-value, mean over re-tessellations"


def psnr_images(estimate: np.ndarray, truth: np.ndarray, mask: np.ndarray, data_range: float) -> np.ndarray:
    """Per-object PSNR [dB] over pixels where ``mask``; arrays (N, H, W) -> (N,)."""
    err = np.where(mask, (estimate - truth) ** 2, 0.0).sum((-2, -1)) / np.maximum(mask.sum((-2, -1)), 1)
    return 10 * np.log10(data_range**2 / np.maximum(err, 1e-12))


def psnr_vectors(estimate: Tensor, truth: Tensor, data_range: float = 4.0) -> float:
    """Mean over rows of 20 log10(data_range / (rms(estimate - truth) + 1e-6)); (N, D) each."""
    rms = (truth.double() - estimate.double()).pow(2).mean(-1).sqrt()
    return float((20 * (math.log10(data_range) - torch.log10(rms + 1e-6))).mean())


def flux_residual(estimate: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per-object relative flux error [%] over observed pixels; (N, H, W) -> (N,)."""
    f_est = np.where(mask, estimate, 0.0).sum((-2, -1))
    f_true = np.where(mask, truth, 0.0).sum((-2, -1))
    return 100 * (f_est - f_true) / np.maximum(np.abs(f_true), 1e-12)


def sinkhorn(a: Tensor | np.ndarray, b: Tensor | np.ndarray, *, eps: float, scaling: float = 0.9) -> float:
    """Debiased Sinkhorn divergence on |x - y|^2 between point clouds a (N, D) and b (M, D)."""
    from geomloss import SamplesLoss

    a, b = torch.as_tensor(a), torch.as_tensor(b)
    # geomloss's cost is |x - y|^2 / 2: halve the regularisation, double the value
    loss = SamplesLoss("sinkhorn", p=2, blur=math.sqrt(eps / 2), scaling=scaling, debias=True, backend="tensorized")
    return 2.0 * float(loss(a.double().contiguous(), b.double().contiguous().to(a.device)))


def pqmass(a: Tensor | np.ndarray, b: Tensor | np.ndarray, *, seed: int, tessellations: int,
           num_refs: int = 100) -> float:
    """Mean PQMass p-value over ``tessellations`` re-tessellations; a (N, D), b (M, D)."""
    import pqm.pqm

    a = a.double().cpu().numpy() if isinstance(a, Tensor) else np.asarray(a)
    b = b.double().cpu().numpy() if isinstance(b, Tensor) else np.asarray(b)
    state = np.random.get_state()
    try:
        np.random.seed(seed % 2**32)
        with warnings.catch_warnings(), mock.patch.object(pqm.pqm, "tqdm", lambda iterable, **kw: iterable):
            warnings.filterwarnings("ignore", message="Number of samples is small", category=UserWarning)
            values = pqm.pqm.pqm_pvalue(a, b, num_refs=num_refs, re_tessellation=tessellations)
    finally:
        np.random.set_state(state)
    return float(np.mean(values))
