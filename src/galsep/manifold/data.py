"""Random smooth 1-D manifolds in R^D and their noisy low-dimensional views (DDPRISM appendix C).

Manifold of smoothness alpha (Zenke & Vogels' randman, as in Rozet et al. and the DDPRISM code): with
a cutoff F = ceil(eps^(-1/alpha)) frequencies and a, b, c ~ U(0, 1) of shape (D, F),

    x_d(z) = sum_{f=1..F} a_df / f^alpha sin(2 pi (f b_df z + c_df)),   z ~ U(0, 1),

rescaled per feature to [-spread/2, spread/2] (the range of x over z in [0, 1], taken on a fine grid).
A source's manifold depends only on the seed and the source's index, so source k is the same curve in
every dataset. Observations: y = sum_k c_vk A_k x_k + n with A_k of shape (M, D), rows drawn uniformly
on the unit sphere, c_vk the view's coefficients (settings.Dataset.coefficients) and n ~ N(0, noise^2 I).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from galsep.data.operators import DenseOperator
from galsep.inference.observations import Observations
from galsep.io import atomic_path, load_torch
from galsep.manifold.settings import Dataset
from galsep.seeding import generator

__all__ = [
    "GRID", "Manifold", "load_dataset", "make_dataset", "make_manifold", "observations", "random_projections",
    "save_dataset"
]

GRID = 100_001  # points of z on which a manifold's range is measured


@dataclass(frozen=True)
class Manifold:
    """One random 1-D manifold: coefficients (D, F) and the per-feature range of the raw curve."""

    a: Tensor
    b: Tensor
    c: Tensor
    alpha: float
    lo: Tensor  # (D,)
    hi: Tensor  # (D,)
    spread: float

    def raw(self, z: Tensor) -> Tensor:
        """z (N,) in [0, 1] -> (N, D), before rescaling."""
        f = torch.arange(1, self.a.shape[1] + 1, dtype=torch.float64)
        phase = 2 * math.pi * (f * self.b * z[:, None, None] + self.c)  # (N, D, F)
        return (self.a / f**self.alpha * torch.sin(phase)).sum(-1)

    def __call__(self, z: Tensor) -> Tensor:
        """z (N,) -> points (N, D) in [-spread/2, spread/2] (float64)."""
        return self.spread * (self.raw(z.double()) - self.lo) / (self.hi - self.lo) - self.spread / 2

    def state_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("a", "b", "c", "alpha", "lo", "hi", "spread")}


def make_manifold(seed: int, source: int, *, features: int, alpha: float, epsilon: float,
                  spread: float) -> Manifold:
    """The manifold of source ``source`` (0-based) under ``seed``."""
    cutoff = math.ceil(epsilon ** (-1.0 / alpha))
    gen = generator(seed, "manifold", "curve", source)
    a, b, c = torch.rand(3, features, cutoff, generator=gen, dtype=torch.float64)
    m = Manifold(a, b, c, float(alpha), torch.zeros(features), torch.ones(features), float(spread))
    raw = m.raw(torch.linspace(0, 1, GRID, dtype=torch.float64))
    return Manifold(a, b, c, float(alpha), raw.min(0).values, raw.max(0).values, float(spread))


def random_projections(n: int, observed: int, features: int, gen: torch.Generator) -> Tensor:
    """n matrices (n, M, D) whose rows are uniform on the unit sphere S^(D-1)."""
    A = torch.randn(n, observed, features, generator=gen, dtype=torch.float64)
    return A / A.norm(dim=-1, keepdim=True)


def make_dataset(ds: Dataset, p: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """All views of a dataset.

    Args:
        ds: the dataset (settings.dataset).
        p: the ``data`` section: samples (observations per view), features, observed, noise,
            smoothness (one alpha per source), epsilon, spread.
        seed: the config seed.
    Returns:
        {"x": (V, N, K, D) true sources of every observation (absent ones included),
         "A": (V, N, K, M, D) projections with the view's coefficients folded in (zero where absent),
         "y": (V, N, M), "variance": (V, N, M), "coefficients": (V, K), "z": (V, N, K) manifold positions,
         "dataset", "manifolds" (state dicts), "data" (p)}; float32 tensors except the manifolds.
    """
    K = ds.sources(p["smoothness"])
    coef = torch.tensor(ds.coefficients(p["smoothness"]), dtype=torch.float64)  # (V, K)
    V, N, M, D = coef.shape[0], p["samples"], p["observed"], p["features"]
    manifolds = [make_manifold(seed, k, features=D, alpha=p["smoothness"][k], epsilon=p["epsilon"],
                               spread=p["spread"]) for k in range(K)]
    gen = generator(seed, "manifold", "views", ds.name)
    z = torch.rand(V, N, K, generator=gen, dtype=torch.float64)
    x = torch.stack([torch.stack([manifolds[k](z[v, :, k]) for k in range(K)], 1) for v in range(V)])
    if ds.separate:
        A = random_projections(V * N * K, M, D, gen).reshape(V, N, K, M, D)
    else:
        A = random_projections(V * N, M, D, gen).reshape(V, N, 1, M, D).expand(V, N, K, M, D)
    A = coef[:, None, :, None, None] * A
    y = torch.einsum("vnkmd,vnkd->vnm", A, x)
    y = y + p["noise"] * torch.randn(y.shape, generator=gen, dtype=torch.float64)
    return {
        "dataset": ds.name, "data": dict(p), "coefficients": coef.float(), "z": z.float(),
        "x": x.float(), "A": A.float().contiguous(), "y": y.float(),
        "variance": torch.full(y.shape, p["noise"] ** 2, dtype=torch.float32),
        "manifolds": [m.state_dict() for m in manifolds],
    }


def save_dataset(data: Mapping[str, Any], path: str | Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(dict(data), tmp)


def load_dataset(path: str | Path) -> dict[str, Any]:
    return load_torch(path)


def observations(data: Mapping[str, Any], views: Sequence[int], sources: Sequence[int]) -> Observations:
    """Stack views (0-based indices) keeping the given sources (in that order), named source1, source2, ..."""
    v, s = list(views), list(sources)
    matrices = data["A"][v][:, :, s].flatten(0, 1)  # (N, K, M, D)
    n = data["y"].shape[1]
    coef = data["coefficients"][v][:, s].repeat_interleave(n, 0)  # (N, K)
    return Observations(
        sources=tuple(f"source{k + 1}" for k in s),
        y=data["y"][v].flatten(0, 1),
        variance=data["variance"][v].flatten(0, 1),
        ops=tuple(DenseOperator(matrices[:, k].contiguous()) for k in range(len(s))),
        coef=coef,
        shape=(int(matrices.shape[-1]),),
        truth=data["x"][v][:, :, s].flatten(0, 1),
    )
