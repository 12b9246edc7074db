"""DDPRISM's separation: joint posterior draws of every source under the EM-learned diffusion priors,
by moment matching (MMPS) with conjugate gradients in a predictor-corrector sampler (Wagner-Carena,
Akhmetzhanova & Erickson, arXiv 2510.05205, section 3). Settings: the ``posterior`` section.

With ``mean_sigma`` set, every draw also yields a Rao-Blackwellised estimate of E[x | y]: the posterior
denoiser's output at sigma = mean_sigma x the observation's noise (the median noise standard deviation of
its observed pixels), see :mod:`galsep.inference.mmps`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from galsep.methods._priors import repeated, unflatten
from galsep.methods.base import EM_PRIORS, Method

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from galsep.inference.observations import Observations
    from galsep.inference.priors import Prior

__all__ = ["DDPRISM", "noise_level"]


class DDPRISM(Method["Sequence[Prior]"]):
    name = "ddprism"
    title = "DDPRISM"
    summary = (f"{EM_PRIORS}, and every galaxy's joint posterior was sampled with moment-matching posterior sampling.")
    uses_priors = True
    section = "posterior"

    def draw(self, model: Sequence[Prior], obs: Observations, samples: int, settings: Mapping[str, Any], *,
             generator: torch.Generator, progress: bool = False) -> Tensor:
        return self.separate(model, obs, samples, settings, generator=generator, progress=progress)[0]

    def separate(self, model: Sequence[Prior], obs: Observations, samples: int, settings: Mapping[str, Any], *,
                 generator: torch.Generator, progress: bool = False) -> tuple[Tensor, Tensor | None]:
        from galsep.inference.em import e_step, sampler_kwargs, schedule_of_priors
        from galsep.inference.mmps import sample_joint_posterior_and_mean

        rep = repeated(obs, samples)
        if settings.get("mean_sigma") is None:
            draws = e_step("ddprism", model, rep, settings["sampler"], generator=generator, progress=progress)
            return unflatten(draws, len(obs), samples), None
        level = settings["mean_sigma"] * noise_level(obs).repeat_interleave(samples)  # rep's row order
        draws, mean = sample_joint_posterior_and_mean(
            model, rep.operators(), rep.y, rep.variance, mean_sigma=level, shape=rep.shape, generator=generator,
            progress=progress, **sampler_kwargs(settings["sampler"], schedule_of_priors(model)))
        return unflatten(draws, len(obs), samples), unflatten(mean, len(obs), samples)


def noise_level(obs: Observations) -> Tensor:
    """Each observation's median noise standard deviation over its observed pixels (all, without a mask), (N,)."""
    import torch

    std = obs.variance.sqrt().flatten(1)
    everywhere = std.median(1).values
    if obs.mask is None:
        return everywhere
    seen = obs.mask.flatten(1) > 0
    observed = torch.where(seen, std, torch.nan).nanmedian(1).values
    return torch.where(seen.any(1), observed, everywhere)
