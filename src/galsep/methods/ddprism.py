"""DDPRISM's separation: joint posterior draws of every source under the EM-learned diffusion priors,
by moment matching (MMPS) with conjugate gradients in a predictor-corrector sampler (Wagner-Carena,
Akhmetzhanova & Erickson, arXiv 2510.05205, section 3). Settings: the ``posterior`` section."""

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

__all__ = ["DDPRISM"]


class DDPRISM(Method["Sequence[Prior]"]):
    name = "ddprism"
    title = "DDPRISM"
    summary = (f"{EM_PRIORS}, and every galaxy's joint posterior was sampled with moment-matching posterior sampling.")
    uses_priors = True
    section = "posterior"

    def draw(self, model: Sequence[Prior], obs: Observations, samples: int, settings: Mapping[str, Any], *,
             generator: torch.Generator, progress: bool = False) -> Tensor:
        from galsep.inference.em import e_step

        rep = repeated(obs, samples)
        return unflatten(e_step("ddprism", model, rep, settings["sampler"], generator=generator, progress=progress),
                         len(obs), samples)
