"""Shared part of the methods that draw with the EM-learned priors: S draws per observation."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import Tensor

    from galsep.inference.observations import Observations

__all__ = ["repeated", "unflatten"]


def repeated(obs: Observations, samples: int) -> Observations:
    """Every row of ``obs`` repeated ``samples`` times in a row (row i's draws are rows i S .. i S + S - 1)."""
    import torch

    return obs.rows(torch.arange(len(obs), device=obs.y.device).repeat_interleave(samples))


def unflatten(draws: Tensor, n: int, samples: int) -> Tensor:
    """(n S, K, *shape) -> (n, S, K, *shape)."""
    return draws.reshape(n, samples, *draws.shape[1:])
