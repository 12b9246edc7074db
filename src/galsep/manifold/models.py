"""Priors of the manifold EM: MLP diffusion denoisers and Gaussian priors, saved as plain dicts.

A prior entry is {"kind": "gaussian", "gaussian": LowRankGaussian state} or {"kind": "diffusion",
"network": settings, "model": state dict, "ema": state dict}. :func:`denoiser` turns one into the
callable D(x_t, sigma) the samplers take (the EMA network in eval mode, clipped to +-clip), and
:func:`sample_prior` draws from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from galsep.inference.denoiser import EDMDenoiser
from galsep.inference.gaussian import LowRankGaussian
from galsep.inference.nets import MLP
from galsep.inference.samplers import pc_sample
from galsep.inference.schedule import VESchedule
from galsep.inference.priors import Clamped


def build_denoiser(network: Mapping[str, Any], features: int) -> EDMDenoiser:
    """EDM-preconditioned MLP (hidden widths, SiLU + LayerNorm, noise embedding concatenated)."""
    return EDMDenoiser(MLP(features, hidden=tuple(network["hidden"]), emb_features=network["emb_features"],
                           dropout=network["dropout"]))


def gaussian_entry(prior: LowRankGaussian) -> dict[str, Any]:
    return {"kind": "gaussian", "gaussian": {k: (v.cpu() if isinstance(v, Tensor) else v)
                                             for k, v in prior.state_dict().items()}}


def diffusion_entry(network: Mapping[str, Any], model: nn.Module, ema: nn.Module) -> dict[str, Any]:
    cpu = lambda m: {k: v.detach().cpu() for k, v in m.state_dict().items()}  # noqa: E731
    return {"kind": "diffusion", "network": dict(network), "model": cpu(model), "ema": cpu(ema)}


def denoiser(entry: Mapping[str, Any], features: int, *, clip: float | None,
             device: torch.device | str = "cpu") -> nn.Module | LowRankGaussian:
    """The denoiser of a prior entry on ``device``: analytic Gaussian, or the clipped EMA network."""
    if entry["kind"] == "gaussian":
        return LowRankGaussian.from_state_dict(entry["gaussian"]).to(device)
    net = build_denoiser(entry["network"], features)
    net.load_state_dict(entry["ema"])
    net = net.to(device).eval().requires_grad_(False)
    return Clamped(net, clip) if clip is not None else net


def sample_prior(entry: Mapping[str, Any], n: int, features: int, *, schedule: VESchedule,
                 sampler: Mapping[str, Any], clip: float | None, generator: torch.Generator,
                 device: torch.device | str = "cpu") -> Tensor:
    """n prior draws (n, D): exact for a Gaussian, predictor-corrector sampling for a network."""
    D = denoiser(entry, features, clip=clip, device=device)
    if isinstance(D, LowRankGaussian):
        return D.sample(n, generator=generator)
    out = []
    chunk = sampler.get("batch_size") or n
    with torch.no_grad():
        for start in range(0, n, chunk):
            m = min(chunk, n - start)
            x1 = schedule.sigma_max * torch.randn(m, features, generator=generator, device=device)
            out.append(pc_sample(D, x1, schedule, steps=sampler["steps"], corrections=sampler["corrections"],
                                 tau=sampler["tau"], generator=generator))
    return torch.cat(out)
