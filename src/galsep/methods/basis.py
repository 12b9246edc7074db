"""BASIS separation (Jayaram & Thickstun, arXiv 2002.07942): annealed Langevin dynamics with the
EM-learned priors' scores, the mixture constraint relaxed to the observation's noise."""

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

__all__ = ["BASIS"]


class BASIS(Method["Sequence[Prior]"]):
    name = "basis"
    title = "BASIS"
    summary = (f"{EM_PRIORS}; every galaxy was separated by BASIS (Jayaram & Thickstun 2020), annealed Langevin "
               f"dynamics with the priors' scores.")
    uses_priors = True

    def draw(self, model: Sequence[Prior], obs: Observations, samples: int, settings: Mapping[str, Any], *,
             generator: torch.Generator, progress: bool = False) -> Tensor:
        from galsep.baselines.basis import basis_sample
        from galsep.inference.em import schedule_of_priors
        from galsep.inference.memory import batch_setting

        schedule = schedule_of_priors(model)
        rep = repeated(obs, samples)
        with batch_setting(f"methods.{self.name}.batch_size"):  # names it on CUDA out of memory
            draws = basis_sample(model, rep.operators(), rep.y, rep.variance, shape=rep.shape,
                                 sigma_max=schedule.sigma_max, sigma_min=schedule.sigma_min,
                                 levels=settings["levels"], steps_per_level=settings["steps_per_level"],
                                 step_size=settings["step_size"], generator=generator,
                                 batch_size=settings["batch_size"], progress=progress)
        return unflatten(draws, len(obs), samples)
