"""The separation-method protocol: what every method (DDPRISM, its Gibbs variant, BASIS, PCPCA, CLVM,
NES, ...) implements so that the workflow, the comparison and the manifold experiment treat them alike.

A method is a subclass of :class:`Method` in a module of :mod:`galsep.methods`; defining the subclass
registers it (:func:`galsep.methods.registry` finds every subclass with a ``name``). Module top levels
import nothing heavy (torch is imported inside the methods): the registry is read when the Snakefile is
parsed. Draws are (n, S, K, *shape): S draws of each of the K sources for each of n observations, in
the space of the sources; a source the method does not model is NaN.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar, cast

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from galsep.inference.observations import Observations

__all__ = ["Contrast", "Method", "ModelT", "every_tenth"]

Log = Callable[[str], None]

# shared phrases of the methods' data-card summaries
EM_PRIORS = ("A diffusion-model prior for galaxies and one for the contaminating light were learned from the "
             "cutouts by expectation-maximisation (DDPRISM, Wagner-Carena, Akhmetzhanova & Erickson 2025)")
CONTRASTIVE_FIT = ("fitted on the random cutouts (contaminating light alone) and the galaxy cutouts (galaxy + "
                   "contaminating light) with the same masks and observation operators")

ModelT = TypeVar("ModelT")
"""A method's model: what :meth:`Method.fit` returns and :meth:`Method.draw` takes (the priors of a
method that ``uses_priors``)."""


class _Stateful(Protocol):
    def state(self) -> Mapping[str, Any]: ...


@dataclass(frozen=True)
class Contrast:
    """What a fitted method learns from (contrastive data, DDPRISM section 2).

    Attributes:
        target: observations holding the target source (the galaxies view), every source.
        background: observations without it (the randoms view), every source.
        everything: both, stacked (for methods that model every source jointly).
        target_source: index (in ``sources``) of the target source.
        background_source: index of the source the background observations are made of.
    """

    target: Observations
    background: Observations
    everything: Observations
    target_source: int
    background_source: int


class Method(ABC, Generic[ModelT]):
    """A separation method.

    Class attributes:
        name: the method's config name (``method:``, ``compare:`` and ``methods.{name}``).
        fitted: it needs a fit job on the views (its model is saved to results/baselines/{name}.pt).
        uses_priors: it draws with the EM-learned priors (one :class:`~galsep.inference.priors.Prior`
            per source) instead of a fitted model.
        deterministic: it returns one draw per observation whatever ``samples`` asks.
        section: the config section holding its settings: ``methods`` (settings in methods.{name}) or the
            name of a top-level section (DDPRISM's are ``posterior``).
        full_resolution: it needs full-resolution pixel data (masks, no downsampled views), not any
            linear operator.
        title: the method's name for people (the data card, tables).
        summary: one paragraph on how its draws are made, for the published data card.
    """

    name: ClassVar[str]
    fitted: ClassVar[bool] = False
    uses_priors: ClassVar[bool] = False
    deterministic: ClassVar[bool] = False
    section: ClassVar[str] = "methods"
    full_resolution: ClassVar[bool] = False
    title: ClassVar[str] = ""
    summary: ClassVar[str] = ""

    def fit(self, data: Contrast, settings: Mapping[str, Any], *, generator: torch.Generator, log: Log) -> ModelT:
        """Fit the method's model on contrastive data; returns the model (for :meth:`state`, :meth:`draw`)."""
        raise NotImplementedError(f"{self.name} is not a fitted method")

    def state(self, model: ModelT) -> dict[str, Any]:
        """The model as plain tensors, lists and numbers (saved with torch.save, loaded weights_only)."""
        return dict(cast(_Stateful, model).state())

    def load(self, state: Mapping[str, Any], device: torch.device) -> ModelT:
        """The model of a saved state, on ``device``."""
        raise NotImplementedError(f"{self.name} is not a fitted method")

    @abstractmethod
    def draw(self, model: ModelT, obs: Observations, samples: int, settings: Mapping[str, Any], *,
             generator: torch.Generator, progress: bool = False) -> Tensor:
        """(n, S, K, *shape) draws for the observations ``obs`` (on the model's device).

        ``model`` is the fitted model, or the list of priors (one per source of ``obs``) for a method that
        ``uses_priors``. S = ``samples`` (1 for a deterministic method).
        """

    def separate(self, model: ModelT, obs: Observations, samples: int, settings: Mapping[str, Any], *,
                 generator: torch.Generator, progress: bool = False) -> tuple[Tensor, Tensor | None]:
        """:meth:`draw`'s draws and, for a method that has one, a lower-variance estimate of each draw's
        posterior mean (same shape, (n, S, K, *shape); averaged over S it estimates E[x | y]); else None.
        The separation stage calls this; the catalogue's mean averages the estimates where there are some."""
        return self.draw(model, obs, samples, settings, generator=generator, progress=progress), None

    def sample_prior(self, model: ModelT, n: int, sources: int, *, generator: torch.Generator) -> Tensor:
        """n draws (n, K, *shape) from the fitted model's prior (NaN for sources it does not model)."""
        raise NotImplementedError(f"{self.name} has no prior to draw from")


def every_tenth(steps: int, name: str, log: Log) -> Callable[[int, float], None]:
    """A fit callback (step, objective) that logs a line at every tenth of ``steps`` and at the end."""
    import time

    start = time.perf_counter()

    def callback(step: int, value: float) -> None:
        if (step + 1) % max(1, steps // 10) == 0 or step + 1 == steps:
            log(f"[{name}] step {step + 1}/{steps}: objective {value:.5g} ({time.perf_counter() - start:.0f}s)")

    return callback
