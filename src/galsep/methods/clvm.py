"""Contrastive latent variable models (implementation in :mod:`galsep.baselines.clvm`), fitted on every
observation jointly: ``clvm_linear`` (linear decoders, exact latent posterior) and ``clvm_vae``
(MLP decoders, amortised encoder)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from galsep.methods.base import Contrast, Log, Method, every_tenth

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from galsep.baselines.clvm import CLVMVAE as VAEModel
    from galsep.baselines.clvm import CLVMLinear as LinearModel
    from galsep.inference.observations import Observations

__all__ = ["CLVMLinear", "CLVMVAE"]

_M = TypeVar("_M", "LinearModel", "VAEModel")
StepLog = Callable[[int, float], None]


def _latents(latents: Mapping[str, int] | Sequence[int], sources: Sequence[str]) -> list[int]:
    """Latent sizes per source: given by source name (images) or as a list in the sources' order."""
    if isinstance(latents, Mapping):
        return [int(latents[s]) for s in sources]
    return [int(n) for n in list(latents)[: len(sources)]]


class _CLVM(Method[_M]):
    fitted = True

    def _fit(self, data: Contrast, settings: Mapping[str, Any], generator: torch.Generator, log: StepLog,
             **extra: object) -> _M:
        raise NotImplementedError

    def fit(self, data: Contrast, settings: Mapping[str, Any], *, generator: torch.Generator, log: Log) -> _M:
        return self._fit(data, settings, generator, every_tenth(settings["steps"], self.name, log))

    def draw(self, model: _M, obs: Observations, samples: int, settings: Mapping[str, Any], *,
             generator: torch.Generator, progress: bool = False) -> Tensor:
        import torch

        with torch.no_grad():
            return model.sample_posterior(obs.y, obs.operators(), obs.variance, samples=samples, generator=generator)

    def sample_prior(self, model: _M, n: int, sources: int, *, generator: torch.Generator) -> Tensor:
        import torch

        with torch.no_grad():
            return model.sample_prior(n, generator=generator)


class CLVMLinear(_CLVM["LinearModel"]):
    name = "clvm_linear"

    def _fit(self, data: Contrast, settings: Mapping[str, Any], generator: torch.Generator, log: StepLog,
             **extra: object) -> LinearModel:
        from galsep.baselines.clvm import fit_clvm_linear

        e = data.everything
        model, trace = fit_clvm_linear(
            e.y, e.operators(), e.variance, shape=e.shape, latents=_latents(settings["latents"], e.sources),
            steps=settings["steps"], lr=settings["lr"], batch_size=settings["batch_size"], generator=generator, log=log)
        model.trace = trace
        return model

    def load(self, state: Mapping[str, Any], device: torch.device) -> LinearModel:
        from galsep.baselines.clvm import CLVMLinear as Model

        return Model.from_state(dict(state)).to(device)


class CLVMVAE(_CLVM["VAEModel"]):
    name = "clvm_vae"

    def _fit(self, data: Contrast, settings: Mapping[str, Any], generator: torch.Generator, log: StepLog,
             **extra: object) -> VAEModel:
        from galsep.baselines.clvm import fit_clvm_vae

        e = data.everything
        model, trace = fit_clvm_vae(
            e.y, e.operators(), e.variance, shape=e.shape, latents=_latents(settings["latents"], e.sources),
            steps=settings["steps"], lr=settings["lr"], batch_size=settings["batch_size"], generator=generator,
            log=log, hidden=settings["hidden"], layers=settings["layers"], dropout=settings["dropout"])
        model.trace = trace
        return model

    def load(self, state: Mapping[str, Any], device: torch.device) -> VAEModel:
        from galsep.baselines.clvm import CLVMVAE as Model

        return Model.from_state(dict(state)).to(device)
