"""Contrastive latent variable models (implementation in :mod:`galsep.baselines.clvm`), fitted on every
observation jointly: ``clvm_linear`` (linear decoders, exact latent posterior) and ``clvm_vae``
(MLP decoders, amortised encoder)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, cast

from galsep.methods.base import CONTRASTIVE_FIT, Contrast, Log, Method, every_tenth

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from galsep.baselines.clvm import CLVMVAE as VAEModel
    from galsep.baselines.clvm import CLVMLinear as LinearModel
    from galsep.inference.observations import Observations

__all__ = ["CLVMLinear", "CLVMVAE"]

_M = TypeVar("_M", "LinearModel", "VAEModel")


def _latents(latents: Mapping[str, int] | Sequence[int], sources: Sequence[str]) -> list[int]:
    """Latent sizes per source: given by source name (images) or as a list in the sources' order."""
    if isinstance(latents, Mapping):
        return [int(latents[s]) for s in sources]
    return [int(n) for n in list(latents)[: len(sources)]]


class _CLVM(Method[_M]):
    """Both CLVMs: fitted on every observation jointly by galsep.baselines.clvm's ``fit_function``."""

    fitted = True
    fit_function: ClassVar[str]
    model_class: ClassVar[str]
    extra_settings: ClassVar[tuple[str, ...]] = ()

    def fit(self, data: Contrast, settings: Mapping[str, Any], *, generator: torch.Generator, log: Log) -> _M:
        from galsep.baselines import clvm
        from galsep.inference.memory import batch_setting

        e = data.everything
        with batch_setting(f"methods.{self.name}.batch_size"):  # names it on CUDA out of memory
            model, trace = getattr(clvm, self.fit_function)(
                e.y, e.operators(), e.variance, shape=e.shape, latents=_latents(settings["latents"], e.sources),
                steps=settings["steps"], lr=settings["lr"], batch_size=settings["batch_size"], generator=generator,
                log=every_tenth(settings["steps"], self.name, log), **{k: settings[k] for k in self.extra_settings})
        model.trace = trace
        return cast("_M", model)

    def load(self, state: Mapping[str, Any], device: torch.device) -> _M:
        from galsep.baselines import clvm

        return cast("_M", getattr(clvm, self.model_class).from_state(dict(state)).to(device))

    def draw(self, model: _M, obs: Observations, samples: int, settings: Mapping[str, Any], *,
             generator: torch.Generator, progress: bool = False) -> Tensor:
        import torch

        from galsep.inference.memory import batch_setting

        # a fixed batch, halved on CUDA out of memory: no setting to name
        with torch.no_grad(), batch_setting(None):
            return model.sample_posterior(obs.y, obs.operators(), obs.variance, samples=samples, generator=generator)

    def sample_prior(self, model: _M, n: int, sources: int, *, generator: torch.Generator) -> Tensor:
        import torch

        with torch.no_grad():
            return model.sample_prior(n, generator=generator)


class CLVMLinear(_CLVM["LinearModel"]):
    name = "clvm_linear"
    title = "CLVM (linear)"
    summary = (f"A linear contrastive latent variable model (CLVM, Severson, Ghosh & Ng 2019; exact likelihood) was"
               f" {CONTRASTIVE_FIT}; the draws come from its posterior.")
    fit_function = "fit_clvm_linear"
    model_class = "CLVMLinear"


class CLVMVAE(_CLVM["VAEModel"]):
    name = "clvm_vae"
    title = "CLVM (VAE)"
    summary = ("A contrastive latent variable model with MLP encoder and decoders (CLVM-VAE, after Severson, Ghosh &"
               f" Ng 2019; trained on the ELBO) was {CONTRASTIVE_FIT}; the draws come from its approximate posterior.")
    fit_function = "fit_clvm_vae"
    model_class = "CLVMVAE"
    extra_settings = ("hidden", "layers", "dropout")
