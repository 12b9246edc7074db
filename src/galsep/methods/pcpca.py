"""Probabilistic contrastive PCA on incomplete data (PCPCA; implementation in
:mod:`galsep.baselines.pcpca`): a low-rank Gaussian of the target source, fitted on target against
background observations. It models the target source only; the other sources are NaN in its draws."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from galsep.methods.base import CONTRASTIVE_FIT, Contrast, Log, Method, every_tenth

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from galsep.baselines.pcpca import PCPCA as Model
    from galsep.inference.observations import Observations

__all__ = ["PCPCA"]


class PCPCA(Method["Model"]):
    name = "pcpca"
    title = "PCPCA"
    summary = (f"Probabilistic contrastive PCA (PCPCA, Li, Jones & Engelhardt 2020) was {CONTRASTIVE_FIT}. It models "
               f"the galaxy alone: the contaminating light of a draw is the observation minus the galaxy draw on "
               f"observed pixels.")
    fitted = True

    def fit(self, data: Contrast, settings: Mapping[str, Any], *, generator: torch.Generator, log: Log) -> Model:
        from galsep.baselines.pcpca import fit_pcpca
        from galsep.inference.memory import batch_setting

        t, b = data.target, data.background
        with batch_setting(f"methods.{self.name}.batch_size"):  # names it on CUDA out of memory
            model, trace = fit_pcpca(
                t.y, t.operators()[data.target_source], t.variance, b.y, b.operators()[data.background_source],
                b.variance, shape=t.shape, latent=settings["latent"], gamma=settings["gamma"],
                steps=settings["steps"], lr=settings["lr"], batch_size=settings["batch_size"], generator=generator,
                log=every_tenth(settings["steps"], self.name, log),
            )
        model.target_source = data.target_source
        model.trace = trace
        return model

    def state(self, model: Model) -> dict[str, Any]:
        return {"model": model.state(), "target_source": model.target_source}

    def load(self, state: Mapping[str, Any], device: torch.device) -> Model:
        from galsep.baselines.pcpca import PCPCA as Model

        model = Model.from_state(state["model"]).to(device)
        model.target_source = state["target_source"]
        return model

    def draw(self, model: Model, obs: Observations, samples: int, settings: Mapping[str, Any], *,
             generator: torch.Generator, progress: bool = False) -> Tensor:
        import torch

        from galsep.inference.memory import batch_setting

        t = model.target_source
        with batch_setting(None):  # a fixed batch, halved on CUDA out of memory: no setting to name
            target = model.sample_posterior(obs.y, obs.operators()[t], obs.variance, samples=samples,
                                            generator=generator)
        out = torch.full((len(obs), samples, len(obs.sources), *obs.shape), float("nan"), device=target.device,
                         dtype=target.dtype)
        out[:, :, t] = target
        return out

    def sample_prior(self, model: Model, n: int, sources: int, *, generator: torch.Generator) -> Tensor:
        import torch

        x = model.sample_prior(n, generator=generator)
        out = torch.full((n, sources, *x.shape[1:]), float("nan"), device=x.device, dtype=x.dtype)
        out[:, model.target_source] = x
        return out
