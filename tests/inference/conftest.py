"""Shared helpers for the diffusion tests: an exact Gaussian denoiser."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor


class GaussianDenoiser:
    """Exact E[x | x_t] for x ~ N(m, C) on the flattened state: m + C (C + s^2 I)^-1 (x_t - m).

    Works in C's eigenbasis so each call is two matmuls; states of any shape (B, *S) with prod(S) = D.
    """

    def __init__(self, mean: Tensor, cov: Tensor) -> None:
        self.mean, self.cov = mean, cov
        self.lam, self.V = torch.linalg.eigh(cov)

    def __call__(self, x_t: Tensor, sigma: Tensor) -> Tensor:
        shape = x_t.shape
        r = (x_t.reshape(shape[0], -1) - self.mean) @ self.V
        gain = self.lam / (self.lam + sigma[:, None] ** 2)
        return (self.mean + (gain * r) @ self.V.T).reshape(shape)


def random_gaussian(dim: int, eigenvalues: list[float], seed: int) -> tuple[Tensor, Tensor]:
    """A mean and a covariance with the given spectrum in a random orthonormal basis, float64."""
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
    cov = Q @ torch.diag(torch.tensor(eigenvalues, dtype=torch.float64)) @ Q.T
    mean = torch.randn(dim, generator=g, dtype=torch.float64)
    return mean, cov


@pytest.fixture
def gaussian3() -> tuple[Tensor, Tensor]:
    return random_gaussian(3, [2.0, 0.5, 0.05], seed=0)

