"""Variance-exploding noise schedule sigma(t) = sigma_min (sigma_max / sigma_min)^t, t in [0, 1].

Training times follow DDPRISM (arXiv 2510.05205): t ~ Beta(3, 3).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["VESchedule", "sample_t"]


class VESchedule:
    """Geometric VE schedule: x_t = x + sigma(t) eps with log sigma linear in t.

    Args:
        sigma_min: noise at t = 0 (> 0).
        sigma_max: noise at t = 1 (> sigma_min).
    """

    def __init__(self, sigma_min: float, sigma_max: float) -> None:
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        self.sigma_min = float(sigma_min)
        self.sigma_max = float(sigma_max)

    def sigma(self, t: Tensor) -> Tensor:
        """Noise level, shape of ``t``."""
        # exp of a linear map rather than a power keeps autograd and float32 well behaved at t = 0, 1
        return torch.exp(math.log(self.sigma_min) + t * math.log(self.sigma_max / self.sigma_min))

    def t(self, sigma: Tensor) -> Tensor:
        """Inverse of :meth:`sigma`, shape of ``sigma``."""
        return (torch.log(sigma) - math.log(self.sigma_min)) / math.log(self.sigma_max / self.sigma_min)

    def __repr__(self) -> str:
        return f"VESchedule(sigma_min={self.sigma_min:g}, sigma_max={self.sigma_max:g})"


def sample_t(n: int, *, generator: torch.Generator | None = None, device: torch.device | str | None = None,
             dtype: torch.dtype = torch.float32, a: int = 3, b: int = 3) -> Tensor:
    """Training times t ~ Beta(a, b) for integer a, b (DDPRISM: Beta(3, 3)), shape (n,).

    The a-th smallest of a + b - 1 uniforms is Beta(a, b) distributed; this is exact and, unlike
    ``torch.distributions.Beta``, honours a seeded generator.
    """
    if a < 1 or b < 1:
        raise ValueError("a and b must be positive integers")
    u = torch.rand(n, a + b - 1, generator=generator, device=device, dtype=dtype)
    return u.sort(dim=1).values[:, a - 1]
