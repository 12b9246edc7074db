"""Priors of one source: a denoiser D(x_t, sigma) = E[x | x_t] with the VE noise schedule it was made for.

DDPRISM (arXiv 2510.05205) starts every source from a low-rank Gaussian prior and then learns a
diffusion prior per source by EM; both are a :class:`Prior` (an ``nn.Module``), so samplers, E-steps
and separation methods never branch on the kind.

One checkpoint layout serves the image pipeline and the manifold experiment. A prior *entry* is
    {"kind": "gaussian", "schedule": {"sigma_min", "sigma_max"}, "gaussian": LowRankGaussian.state()}
    {"kind": "diffusion", "schedule": {...}, "network": settings, "model": state dict, "ema": state dict}
and a checkpoint (``results/prior/{chain}/gaussian.pt`` or ``lap{k}.pt``) is
    {"chain", "lap", "sources": {source name: entry}, "params", "device", "seconds", "losses"?};
everything is plain tensors, dicts, lists, strings and numbers, so it loads with ``weights_only=True``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from galsep.errors import ConfigError, InputError
from galsep.inference.denoiser import EDMDenoiser, set_precision
from galsep.inference.gaussian import LowRankGaussian
from galsep.inference.nets import MLP, UNet
from galsep.inference.samplers import pc_sample
from galsep.inference.schedule import VESchedule
from galsep.io import atomic_path, load_torch

__all__ = ["Prior", "build_denoiser", "load_checkpoint", "save_checkpoint", "schedule_of"]


def schedule_of(diffusion: Mapping[str, Any]) -> VESchedule:
    """The VE schedule of a config's ``diffusion`` section (sigma_min, sigma_max)."""
    return VESchedule(diffusion["sigma_min"], diffusion["sigma_max"])


def build_denoiser(network: Mapping[str, Any], shape: Sequence[int]) -> EDMDenoiser:
    """A fresh EDM-preconditioned network for samples of ``shape``: the U-Net of an image config
    (``channels``, ``blocks``, ...) or the MLP of a vector config (``hidden``, ...)."""
    if "channels" in network:
        net: nn.Module = UNet(
            channels=tuple(network["channels"]), blocks=network["blocks"],
            attention_levels=tuple(network["attention_levels"]), heads=network["heads"],
            emb_features=network["emb_features"], dropout=network["dropout"],
        )
    elif "hidden" in network:
        net = MLP(math.prod(int(n) for n in shape), hidden=tuple(network["hidden"]),
                  emb_features=network["emb_features"], dropout=network["dropout"])
    else:
        raise ConfigError(f"network settings {sorted(network)} name neither a U-Net (channels) nor an MLP (hidden)")
    return EDMDenoiser(net)


class Prior(nn.Module):
    """The prior of one source: its denoiser, the schedule it works on and an optional clip.

    Args:
        denoiser: the analytic :class:`LowRankGaussian` or an (EMA) network denoiser, (B, *S), (B,) -> (B, *S).
        schedule: the VE schedule of the diffusion (sampling starts at its sigma_max).
        bound: clip the estimate to [-bound, bound]; for networks only (None: no clip). The views are
            clipped to the data range, so E[x | x_t] lies inside it; a network that strays outside at large
            noise (seen: +-15 from an early-lap prior) would otherwise feed the joint posterior a galaxy and
            a random component that cancel. The Gaussian's estimate is affine in x_t and stays tame.
        entry: the checkpoint entry the prior was made from (kept for saving it again).
    """

    def __init__(self, denoiser: nn.Module, schedule: VESchedule, *, bound: float | None = None,
                 entry: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.denoiser, self.schedule, self.bound = denoiser, schedule, bound
        self.entry = dict(entry) if entry is not None else None

    @property
    def gaussian(self) -> LowRankGaussian | None:
        """The analytic Gaussian, when that is what the prior is."""
        return self.denoiser if isinstance(self.denoiser, LowRankGaussian) else None

    def forward(self, x_t: Tensor, sigma: Tensor) -> Tensor:
        """x_t (B, *S), sigma (B,) -> E[x | x_t] (B, *S)."""
        out = self.denoiser(x_t, sigma)
        return out if self.bound is None else out.clamp(-self.bound, self.bound)

    def sample(self, n: int, shape: Sequence[int], *, sampler: Mapping[str, Any],
               generator: torch.Generator | None = None) -> Tensor:
        """n prior draws (n, *shape): exact for a Gaussian, predictor-corrector sampling for a network
        (``sampler``: steps, corrections, tau, batch_size)."""
        g = self.gaussian
        if g is not None:
            return g.sample(n, shape=shape, generator=generator)
        device = next(self.denoiser.parameters()).device
        out = []
        chunk = sampler.get("batch_size") or n
        with torch.no_grad():
            for start in range(0, n, chunk):
                m = min(chunk, n - start)
                x1 = self.schedule.sigma_max * torch.randn(m, *shape, generator=generator, device=device)
                out.append(pc_sample(self, x1, self.schedule, steps=sampler["steps"],
                                     corrections=sampler["corrections"], tau=sampler["tau"], generator=generator))
        return torch.cat(out)

    @classmethod
    def gaussian_of(cls, gaussian: LowRankGaussian, schedule: VESchedule) -> Prior:
        """A Gaussian prior and its entry."""
        entry = {"kind": "gaussian", "schedule": _schedule_entry(schedule), "gaussian": gaussian.state()}
        return cls(gaussian, schedule, entry=entry)

    @classmethod
    def network_of(cls, network: Mapping[str, Any], model: nn.Module, ema: nn.Module, schedule: VESchedule, *,
                   bound: float | None) -> Prior:
        """A trained network's prior (its EMA weights, in eval mode) and its entry (both weights)."""
        cpu = lambda m: {k: v.detach().cpu() for k, v in m.state_dict().items()}  # noqa: E731
        entry = {"kind": "diffusion", "schedule": _schedule_entry(schedule), "network": dict(network),
                 "model": cpu(model), "ema": cpu(ema)}
        return cls(ema.eval().requires_grad_(False), schedule, bound=bound, entry=entry)

    @classmethod
    def from_entry(cls, entry: Mapping[str, Any], shape: Sequence[int], *, bound: float | None = None,
                   ema: bool = True, where: str = "checkpoint", precision: str = "float32") -> Prior:
        """The prior of a checkpoint entry (network priors clipped to ``bound``; ``ema``: the EMA weights;
        ``precision``: the network's, see :func:`galsep.inference.denoiser.set_precision`)."""
        if not isinstance(entry, Mapping) or "kind" not in entry or "schedule" not in entry:
            raise InputError(f"{where}: not a prior of this galsep version (no kind or schedule); rerun the EM"
                             " stages that made it (delete results/prior/ or run snakemake --forcerun prior_gaussian)")
        schedule = VESchedule(**entry["schedule"])
        if entry["kind"] == "gaussian":
            return cls(LowRankGaussian.from_state(entry["gaussian"]), schedule, entry=entry)
        net = build_denoiser(entry["network"], shape)
        net.load_state_dict(entry["ema" if ema else "model"])
        set_precision(net, precision)
        return cls(net.eval().requires_grad_(False), schedule, bound=bound, entry=entry)

    def extra_repr(self) -> str:
        return f"schedule={self.schedule}, bound={self.bound}"


def _schedule_entry(schedule: VESchedule) -> dict[str, float]:
    return {"sigma_min": float(schedule.sigma_min), "sigma_max": float(schedule.sigma_max)}


def save_checkpoint(path: str | Path, checkpoint: Mapping[str, Any]) -> None:
    """Write atomically (a killed job leaves no checkpoint that looks complete)."""
    with atomic_path(path) as tmp:
        torch.save(dict(checkpoint), tmp)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint of the module docstring's layout; a clear error names a file that is not one."""
    ckpt = load_torch(path)
    if not isinstance(ckpt, dict) or "sources" not in ckpt:
        raise InputError(f"{path} is not a galsep prior checkpoint (no 'sources'); rerun the stage that made it")
    return ckpt
