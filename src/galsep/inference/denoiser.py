"""EDM-preconditioned denoiser D(x_t, sigma) ~ E[x | x_t] and its denoising loss.

The preconditioning and the loss weight are EDM's: Karras et al. 2022, "Elucidating the Design Space
of Diffusion-Based Generative Models", arXiv 2206.00364.

:class:`Autocast` runs a network in bfloat16 (``precision: bfloat16``): AMX tiles on CPUs that have
them, tensor cores on GPUs. It wraps the network inside the EDM denoiser, so the preconditioning, the
skip connection and everything the sampler does with D (CG, Tweedie covariances) stay float32.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["PRECISIONS", "Autocast", "preconditioning", "loss_weight", "EDMDenoiser", "set_precision"]

# the network precisions a config may name (``precision``)
PRECISIONS = ("float32", "bfloat16")


def preconditioning(sigma: Tensor, sigma_data: float = 1.0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """EDM coefficients (c_skip, c_out, c_in, c_noise), each of the shape of ``sigma``.

    c_skip = sd^2 / (s^2 + sd^2), c_out = s sd / sqrt(s^2 + sd^2), c_in = 1 / sqrt(s^2 + sd^2),
    c_noise = log s. They make the network's input and its training target unit-variance at every s.
    """
    var = sigma**2 + sigma_data**2
    c_skip = sigma_data**2 / var
    c_out = sigma * sigma_data * torch.rsqrt(var)
    c_in = torch.rsqrt(var)
    return c_skip, c_out, c_in, torch.log(sigma)


def loss_weight(sigma: Tensor, sigma_data: float = 1.0) -> Tensor:
    """EDM weight (s^2 + sd^2) / (s sd)^2 = 1 / c_out^2; equals 1 + 1/s^2 for sigma_data = 1."""
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


def _pad(s: Tensor, x: Tensor) -> Tensor:
    return s.reshape(s.shape + (1,) * (x.ndim - s.ndim))


class EDMDenoiser(nn.Module):
    """D(x_t, sigma) = c_skip x_t + c_out net(c_in x_t, log sigma).

    Args:
        net: network ``net(x, log_sigma) -> x``-shaped output, x (B, *S), log_sigma (B,).
        sigma_data: data scale (DDPRISM: 1 on normalised images).
    """

    def __init__(self, net: nn.Module, sigma_data: float = 1.0) -> None:
        super().__init__()
        self.net = net
        self.sigma_data = float(sigma_data)

    def forward(self, x_t: Tensor, sigma: Tensor) -> Tensor:
        """x_t (B, *S), sigma (B,) -> E[x | x_t] (B, *S)."""
        sigma = sigma.to(x_t.dtype)
        c_skip, c_out, c_in, c_noise = preconditioning(sigma, self.sigma_data)
        out = self.net(_pad(c_in, x_t) * x_t, c_noise)
        return _pad(c_skip, x_t) * x_t + _pad(c_out, x_t) * out

    def loss(self, x: Tensor, sigma: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """Weighted denoising loss mean[(1 + 1/s^2) (D(x + s eps, s) - x)^2] (sigma_data = 1), scalar.

        Args:
            x: clean samples, shape (B, *S).
            sigma: noise level per sample, shape (B,).
            generator: seeds eps; drawn on the generator's device then moved to x's.
        """
        device = generator.device if generator is not None else x.device
        eps = torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)
        s = _pad(sigma.to(x.dtype), x)
        d = self(x + s * eps, sigma)
        return (loss_weight(s, self.sigma_data) * (d - x) ** 2).mean()


class Autocast(nn.Module):
    """``net(x, log_sigma)`` under ``torch.autocast(x's device type, bfloat16)``, the output cast back to x's dtype.

    Args:
        net: the network ``net(x (B, *S), log_sigma (B,)) -> (B, *S)``; its weights stay float32
            (autocast casts them per operation), so a checkpoint loads and saves unchanged.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor, log_sigma: Tensor) -> Tensor:
        """x (B, *S), log_sigma (B,) -> (B, *S) in x's dtype."""
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            out = self.net(x, log_sigma)
        return out.to(x.dtype)


def set_precision(denoiser: EDMDenoiser, precision: str) -> EDMDenoiser:
    """``denoiser`` with its network run in ``precision`` (one of :data:`PRECISIONS`); returns it."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    bare = denoiser.net.net if isinstance(denoiser.net, Autocast) else denoiser.net
    denoiser.net = Autocast(bare) if precision == "bfloat16" else bare
    return denoiser
