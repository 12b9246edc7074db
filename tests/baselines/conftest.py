"""Shared fixtures for the baseline tests: one thread, and a tiny contrastive image toy with truth."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import torch
from torch import Tensor

from galsep.data.operators import PixelOperator
from galsep.inference.observations import Observations


@dataclass(frozen=True)
class Toy(Observations):
    """Contrastive views of two sources (0: galaxy, 1: random): rows [:nb] are randoms (galaxy coef 0),
    rows [nb:] galaxies (both coef 1); the project's Observations plus the generating model."""

    nb: int = 0
    means: Tensor | None = None  # (2, H * W), the generating model: x_k = means[k] + factors[k] z_k
    factors: list[Tensor] = field(default_factory=list)  # (H * W, 3) and (H * W, 4)

    def operators(self, idx: slice | Tensor = slice(None)) -> list[PixelOperator]:  # type: ignore[override]
        """The operators of the rows ``idx``."""
        return [op[idx] for op in self.ops]


def _blob(size: int, cx: float, cy: float, sx: float, sy: float) -> Tensor:
    r = torch.arange(size, dtype=torch.float64)
    return torch.exp(-0.5 * (((r[None, :] - cx) / sx) ** 2 + ((r[:, None] - cy) / sy) ** 2))


def contrastive_toy(nb: int, nt: int, size: int = 8, *, seed: int = 0, noise: float = 0.05,
                    masked_rows: float = 0.3, contamination: float = 1.0) -> Toy:
    """Linear-Gaussian sources with low-rank structure on size x size images.

    Galaxy: a centred profile with random amplitude, width and elongation (3 patterns). Random: a sky
    gradient and blobs near the corners (4 patterns), about as bright as the galaxy times
    ``contamination``. A share of rows misses a random rectangle of pixels; the noise variance varies
    per pixel.
    """
    g = torch.Generator().manual_seed(seed)
    c = (size - 1) / 2
    r = torch.arange(size, dtype=torch.float64)
    gal = torch.stack([_blob(size, c, c, 1.2, 1.2), _blob(size, c, c, 2.5, 2.5) - _blob(size, c, c, 1.2, 1.2),
                       _blob(size, c, c, 2.5, 1.2) - _blob(size, c, c, 1.2, 2.5)])
    rnd = torch.stack([(r[None, :] - c).expand(size, size) / size, (r[:, None] - c).expand(size, size) / size,
                       _blob(size, 0.5, 0.5, 1.5, 1.5), _blob(size, size - 1.5, 1.0, 1.5, 1.5)])
    n = nb + nt
    sg = torch.tensor([0.3, 0.2, 0.2], dtype=torch.float64)
    sr = contamination * torch.tensor([0.5, 0.5, 0.4, 0.4], dtype=torch.float64)
    xg = 0.6 * gal[0] + torch.einsum("nk,khw->nhw", torch.randn(n, 3, generator=g, dtype=torch.float64) * sg, gal)
    xr = 0.1 * contamination + torch.einsum("nk,khw->nhw", torch.randn(n, 4, generator=g, dtype=torch.float64) * sr,
                                            rnd)
    coef = torch.ones(n, 2, dtype=torch.float64)
    coef[:nb, 0] = 0
    mask = torch.ones(n, size, size, dtype=torch.float64)
    for i in torch.nonzero(torch.rand(n, generator=g) < masked_rows)[:, 0].tolist():
        h, w = torch.randint(1, size // 2 + 1, (2,), generator=g).tolist()
        top, left = torch.randint(0, size - h + 1, (1,), generator=g).item(), torch.randint(0, size - w + 1, (1,),
                                                                                               generator=g).item()
        mask[i, top:top + h, left:left + w] = 0
    variance = noise**2 * (0.5 + torch.rand(n, size, size, generator=g, dtype=torch.float64))
    clean = coef[:, 0, None, None] * xg + coef[:, 1, None, None] * xr
    y = mask * (clean + variance.sqrt() * torch.randn(n, size, size, generator=g, dtype=torch.float64))
    variance = torch.where(mask > 0, variance, 1.0)  # the views' placeholder on unobserved pixels
    f = torch.float32
    means = torch.stack([0.6 * gal[0].flatten(), torch.full((size * size,), 0.1 * contamination, dtype=torch.float64)])
    factors = [(gal.flatten(1).T * sg).to(f), (rnd.flatten(1).T * sr).to(f)]
    factor = torch.ones(n, dtype=torch.long)
    mask, coef = mask.to(f), coef.to(f)
    return Toy(("galaxy", "random"), y.to(f), variance.to(f), tuple(PixelOperator(mask, factor, coef[:, k]) for k in range(2)),
               coef, (size, size), mask=mask, factor=factor, truth=torch.stack([xg, xr], 1).to(f), nb=nb,
               means=means.to(f), factors=factors)


def masked_mse(estimate: Tensor, truth: Tensor, mask: Tensor) -> float:
    return (((estimate - truth) ** 2 * mask).sum() / mask.sum()).item()
