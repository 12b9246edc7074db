"""DDPRISM's Gibbs alternative (arXiv 2510.05205, appendix B) with the EM-learned priors: rounds of
one-source posterior draws against the residual, started from unconditional prior draws."""

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

__all__ = ["Gibbs"]


class Gibbs(Method["Sequence[Prior]"]):
    name = "gibbs"
    title = "DDPRISM's Gibbs sampler"
    summary = (f"{EM_PRIORS}; every galaxy's posterior was sampled by Gibbs sampling, one source at a time against "
               f"the residual (DDPRISM appendix B, after Heurtel-Depeiges et al. 2024).")
    uses_priors = True

    def draw(self, model: Sequence[Prior], obs: Observations, samples: int, settings: Mapping[str, Any], *,
             generator: torch.Generator, progress: bool = False) -> Tensor:
        from galsep.inference.em import sampler_kwargs, schedule_of_priors
        from galsep.inference.gibbs import gibbs_sample

        rep = repeated(obs, samples)
        kw = sampler_kwargs(settings["sampler"], schedule_of_priors(model))
        draws = gibbs_sample(model, rep.operators(), rep.y, rep.variance, shape=rep.shape, rounds=settings["rounds"],
                             generator=generator, **kw)
        return unflatten(draws, len(obs), samples)
