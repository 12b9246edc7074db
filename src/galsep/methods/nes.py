"""Neural Egg Separation (Halperin, Ephrat & Hoshen, arXiv 1811.12739; implementation in
:mod:`galsep.baselines.nes`): a network trained to split synthetic mixtures of background cutouts
into the target views, iterated. Deterministic (one draw); needs full-resolution pixel data."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from galsep.methods.base import CONTRASTIVE_FIT, Contrast, Log, Method

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from galsep.baselines.nes import NES as Model
    from galsep.inference.observations import Observations

__all__ = ["NES"]


class NES(Method["Model"]):
    name = "nes"
    title = "Neural Egg Separation"
    summary = (f"A Neural Egg Separation network (Halperin, Ephrat & Hoshen 2019) was {CONTRASTIVE_FIT}. It is "
               f"deterministic: each draw is its one estimate.")
    fitted = True
    deterministic = True
    full_resolution = True

    def fit(self, data: Contrast, settings: Mapping[str, Any], *, generator: torch.Generator, log: Log) -> Model:
        from galsep.baselines.nes import fit_nes
        from galsep.inference.memory import batch_setting

        t, b = data.target, data.background
        # full-resolution views carry masks; fit_nes rejects downsampled ones (whose masks are None) first
        with batch_setting(f"methods.{self.name}.batch_size"):  # names it on CUDA out of memory
            model, trace = fit_nes(
                t.y, cast("Tensor", t.mask), b.y, cast("Tensor", b.mask), iterations=settings["iterations"],
                steps=settings["steps"], batch_size=settings["batch_size"], lr=settings["lr"],
                channels=settings["channels"], generator=generator,
                log=lambda line: log(f"[{self.name}] {line}"), mixture_factor=t.factor, source_factor=b.factor,
            )
        model.trace = trace
        return model

    def load(self, state: Mapping[str, Any], device: torch.device) -> Model:
        from galsep.baselines.nes import NES as Model

        model = Model.from_state(dict(state))
        model.net.to(device)
        return model

    def draw(self, model: Model, obs: Observations, samples: int, settings: Mapping[str, Any], *,
             generator: torch.Generator, progress: bool = False) -> Tensor:
        import torch

        from galsep.inference.memory import batch_setting

        # a fixed batch, halved on CUDA out of memory: no setting to name
        with torch.no_grad(), batch_setting(None):
            # full-resolution views carry masks; separate rejects downsampled ones (masks None) first
            galaxy, random = model.separate(obs.y, cast("Tensor", obs.mask), factor=obs.factor)
        return torch.stack([galaxy, random], 1)[:, None]
