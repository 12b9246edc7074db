"""Prior checkpoints: building networks from the config, saving and loading per-source weights.

A checkpoint (``results/prior/{chain}/gaussian.pt`` or ``lap{k}.pt``) is a dict:
    kind      "gaussian" or "diffusion"
    chain     the EM chain that made it; lap: its lap number (0 for gaussian)
    sources   {source name: {"gaussian": LowRankGaussian state} or {"model": state, "ema": state}}
    network   the network settings the weights belong to
    params    every setting of the stage that made it; device, seconds, losses
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from galsep.inference.denoiser import EDMDenoiser
from galsep.inference.gaussian import LowRankGaussian
from galsep.inference.nets import UNet
from galsep.io import atomic_path


def build_denoiser(network: Mapping[str, Any]) -> EDMDenoiser:
    """The EDM-preconditioned U-Net of the config section ``network``."""
    net = UNet(
        channels=tuple(network["channels"]),
        blocks=network["blocks"],
        attention_levels=tuple(network["attention_levels"]),
        heads=network["heads"],
        emb_features=network["emb_features"],
        dropout=network["dropout"],
    )
    return EDMDenoiser(net)


def save_checkpoint(path: str | Path, checkpoint: dict[str, Any]) -> None:
    """Write atomically (a killed job leaves no checkpoint that looks complete)."""
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=False)


class Clamped(nn.Module):
    """A denoiser whose estimate is clipped to the data range [-bound, bound].

    The views are clipped to the range by construction, so E[x | x_t] lies inside it; a network
    that strays outside at large noise (seen: estimates of +-15 from an early-lap prior) would
    otherwise feed the joint posterior a galaxy and a random component that cancel each other.
    """

    def __init__(self, denoiser: nn.Module | LowRankGaussian, bound: float) -> None:
        super().__init__()
        self.denoiser, self.bound = denoiser, bound

    def forward(self, x_t: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """x_t (B, *S), sigma (B,) -> (B, *S)."""
        return self.denoiser(x_t, sigma).clamp(-self.bound, self.bound)


def prior_of(
    checkpoint: Mapping[str, Any], source: str, *, ema: bool = True, bound: float | None = None
) -> nn.Module | LowRankGaussian:
    """The denoiser of ``source`` in a checkpoint: the analytic Gaussian or the (EMA) network,
    the network clipped to [-bound, bound] when ``bound`` is given (the Gaussian's estimate is an
    affine map of x_t and stays tame)."""
    entry = checkpoint["sources"][source]
    if checkpoint["kind"] == "gaussian":
        prior = LowRankGaussian.from_state_dict(entry["gaussian"])
    else:
        prior = build_denoiser(checkpoint["network"])
        prior.load_state_dict(entry["ema" if ema else "model"])
        prior = prior.eval().requires_grad_(False)
        if bound is not None:
            prior = Clamped(prior, bound)
    return prior
