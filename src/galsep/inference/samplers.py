"""Reverse-diffusion samplers for VE denoisers: predictor-corrector (DDPRISM), DDIM and Heun.

Predictor-corrector as in DDPRISM (Wagner-Carena et al., arXiv 2510.05205); Heun's second-order step
as in EDM (Karras et al., arXiv 2206.00364).

A denoiser is any callable ``D(x_t, sigma) -> E[x | x_t]`` with x_t of shape (B, *S) and sigma of shape
(B,). All samplers walk the grid t_i = 1 - i / steps from t = 1 down to t = 0 (sigma_max to
sigma_min) and end with one final denoiser call D(x, sigma_min), as the DDPRISM reference does.

Gradients: the samplers are not differentiable. They neither enable nor disable autograd (the MMPS
posterior denoiser needs it inside its call), but detach the state after every step so that a
denoiser whose output carries a graph (e.g. trainable weights with grad enabled) never chains
graphs across steps. Wrap calls in ``torch.no_grad()`` yourself for plain network priors.

Per-source noise levels: ``schedule.sigma`` is called on t of shape (B,) and its result is broadcast
against x from the left, so a schedule returning (B, K) for a joint (B, K, *S) state also works,
provided the denoiser accepts that sigma.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

import torch
from torch import Tensor

from galsep.inference.schedule import VESchedule

Denoiser = Callable[[Tensor, Tensor], Tensor]
_T = TypeVar("_T")

__all__ = ["Denoiser", "ddim_step", "langevin_step", "heun_step", "pc_sample", "ddim_sample", "heun_sample"]


def _pad(s: Tensor, x: Tensor) -> Tensor:
    """Right-pad ``s`` with singleton dims so that it broadcasts against ``x``."""
    return s.reshape(s.shape + (1,) * (x.ndim - s.ndim))


def _sigmas(schedule: VESchedule, x: Tensor, steps: int) -> Iterator[tuple[Tensor, Tensor]]:
    """Pairs (sigma(t_i), sigma(t_{i+1})), each of shape (B,) (or what the schedule returns)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    B = x.shape[0]
    # times in float64 so that 1 - i/steps hits 0 and 1 exactly before casting to x's dtype
    ts = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64).tolist()
    for t, s in zip(ts[:-1], ts[1:], strict=True):
        yield (schedule.sigma(torch.full((B,), t, device=x.device, dtype=x.dtype)),
               schedule.sigma(torch.full((B,), s, device=x.device, dtype=x.dtype)))


def _final(denoiser: Denoiser, x: Tensor, schedule: VESchedule) -> Tensor:
    """The closing D(x, sigma_min)."""
    sigma0 = schedule.sigma(torch.zeros(x.shape[0], device=x.device, dtype=x.dtype))
    return denoiser(x, sigma0).detach()


def _progress(it: Iterable[_T], progress: bool, total: int) -> Iterable[_T]:
    if not progress:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, total=total, leave=False)


def ddim_step(denoiser: Denoiser, x: Tensor, sigma_t: Tensor, sigma_s: Tensor) -> Tensor:
    """Deterministic DDIM step from noise sigma_t to sigma_s < sigma_t.

    x_s = D + (sigma_s / sigma_t) (x_t - D): keeps the predicted noise direction, rescaled.
    Shapes: x (B, *S), sigmas (B,) -> (B, *S).
    """
    d = denoiser(x, sigma_t)
    return d + _pad(sigma_s / sigma_t, x) * (x - d)


def langevin_step(denoiser: Denoiser, x: Tensor, sigma: Tensor, tau: float,
                  generator: torch.Generator | None = None) -> Tensor:
    """One unadjusted Langevin step targeting p(x_sigma), with step size delta = tau sigma^2.

    With the Tweedie score (D - x) / sigma^2 this is x + tau (D - x) + sqrt(2 tau) sigma z, as in the
    DDPRISM reference; tau is the step relative to the noise variance, so one tau serves all levels.
    Shapes: x (B, *S), sigma (B,) -> (B, *S).
    """
    d = denoiser(x, sigma)
    z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return x + tau * (d - x) + math.sqrt(2 * tau) * _pad(sigma, x) * z


def heun_step(denoiser: Denoiser, x: Tensor, sigma_t: Tensor, sigma_s: Tensor) -> Tensor:
    """Second-order (Heun) step of the probability-flow ODE dx/dsigma = (x - D) / sigma (Karras et al.)."""
    dt = _pad(sigma_s - sigma_t, x)
    k1 = (x - denoiser(x, sigma_t)) / _pad(sigma_t, x)
    x_s = x + dt * k1
    k2 = (x_s - denoiser(x_s, sigma_s)) / _pad(sigma_s, x)
    return x + dt * (k1 + k2) / 2


def pc_sample(denoiser: Denoiser, x1: Tensor, schedule: VESchedule, *, steps: int, corrections: int = 1,
              tau: float = 1e-2, generator: torch.Generator | None = None, progress: bool = False) -> Tensor:
    """Predictor-corrector sampling (DDPRISM): DDIM predictor, then Langevin corrections at the new time.

    Args:
        denoiser: D(x_t, sigma) -> E[x | x_t].
        x1: initial state at t = 1, shape (B, *S); the caller draws sigma_max * N(0, I).
        schedule: the noise schedule.
        steps: predictor steps from t = 1 to t = 0.
        corrections: Langevin steps after each predictor step (0 gives plain DDIM).
        tau: corrector step relative to the noise variance (reference: 1e-2 to 1e-1).
        generator: seeds the corrector noise; must live on x1's device.
        progress: show a tqdm bar.
    Returns:
        D(x_0, sigma_min), shape (B, *S), detached.
    """
    x = x1.detach()
    for sigma_t, sigma_s in _progress(_sigmas(schedule, x, steps), progress, steps):
        x = ddim_step(denoiser, x, sigma_t, sigma_s).detach()
        for _ in range(corrections):
            x = langevin_step(denoiser, x, sigma_s, tau, generator).detach()
    return _final(denoiser, x, schedule)


def ddim_sample(denoiser: Denoiser, x1: Tensor, schedule: VESchedule, *, steps: int,
                progress: bool = False) -> Tensor:
    """Deterministic DDIM sampling from x1 (B, *S) at t = 1, ending with D(x_0, sigma_min)."""
    return pc_sample(denoiser, x1, schedule, steps=steps, corrections=0, progress=progress)


def heun_sample(denoiser: Denoiser, x1: Tensor, schedule: VESchedule, *, steps: int,
                progress: bool = False) -> Tensor:
    """Deterministic Heun sampling (2 denoiser calls per step) from x1 (B, *S), ending with D(x_0, sigma_min)."""
    x = x1.detach()
    for sigma_t, sigma_s in _progress(_sigmas(schedule, x, steps), progress, steps):
        x = heun_step(denoiser, x, sigma_t, sigma_s).detach()
    return _final(denoiser, x, schedule)
