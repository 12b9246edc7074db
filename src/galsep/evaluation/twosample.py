"""Two-sample statistics of draws against truths, shared by the comparison and the manifold benchmark.

- PQMass p-values (``pqm``): pqm draws its reference points from numpy's global generator, so it is
  seeded here and restored after; pqm's per-call progress bar is silenced (one per metric in a log).
- The debiased Sinkhorn divergence (``geomloss``, p = 2, so on the cost |x - y|^2 / 2), in float64.
"""

from __future__ import annotations

from unittest import mock

import numpy as np
from torch import Tensor


def pqmass_pvalues(a: np.ndarray, b: np.ndarray, *, seed: int, tessellations: int, num_refs: int = 100) -> np.ndarray:
    """PQMass p-values of ``tessellations`` re-tessellations; a (N, D), b (M, D)."""
    import pqm.pqm

    state = np.random.get_state()
    try:
        np.random.seed(seed % 2**32)
        with mock.patch.object(pqm.pqm, "tqdm", lambda iterable, **kw: iterable):
            values = pqm.pqm.pqm_pvalue(a, b, num_refs=num_refs, re_tessellation=tessellations)
    finally:
        np.random.set_state(state)
    return np.asarray(values)


def sinkhorn(a: Tensor, b: Tensor, *, blur: float, scaling: float) -> float:
    """geomloss's debiased Sinkhorn divergence between point clouds a (N, D) and b (M, D)."""
    from geomloss import SamplesLoss

    loss = SamplesLoss("sinkhorn", p=2, blur=blur, scaling=scaling, debias=True, backend="tensorized")
    return float(loss(a.double().contiguous(), b.double().contiguous().to(a.device)))
