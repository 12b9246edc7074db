"""Names of the manifold settings, datasets and methods, and what each name means.

A *dataset* is one file of views (``results/manifold/data/{dataset}.pt``):
    contrastive      one view per source (as many as ``data.smoothness`` lists); view v holds sources 1..v
    mixed-F          two views; view v holds source v with coefficient 1 and the other with F (0 <= F <= 1)
    mixed-separate   two views; both sources with coefficient 1, each with its own projection
A *setting* is one block of the table: the dataset, how many sources, which views it is judged on:
    contrastive-K    the joint posterior of sources 1..K given view K (K >= 2)
    mixed-F, mixed-separate   the joint posterior of both sources given both views
An EM *stage* learns priors from a dataset: contrastive stage k learns source k from view k with
sources 1..k-1 frozen at stage k-1 (DDPRISM's simplified contrastive algorithm); mixed datasets have
one stage that learns both sources from both views (algorithm 1).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from galsep.errors import ConfigError

__all__ = [
    "DATASET_PATTERN", "EM_METHODS", "FLOORS", "SETTING_PATTERN", "Dataset", "Setting", "baselines", "dataset",
    "methods", "setting"
]

#: EM methods (a chain of stages each): DDPRISM with joint sampling, with Gibbs sampling, and the
#: Gaussian start alone (no diffusion laps, a sanity floor)
EM_METHODS = ("ddprism", "gibbs", "gaussian")
#: the other sanity floor: every draw is the mean of the true source distribution
FLOORS = ("prior_mean",)


def baselines() -> tuple[str, ...]:
    """The fitted methods of the registry (galsep.methods) that apply to vectors: every fitted method
    that does not need full-resolution pixels (PCPCA, CLVM, ...); contrastive settings only."""
    from galsep.methods import registry

    return tuple(name for name, m in registry().items() if m.fitted and not m.full_resolution)


def methods() -> tuple[str, ...]:
    """Every method of the manifold table: the EM methods, the registry's baselines and the floors."""
    return EM_METHODS + baselines() + FLOORS

_CONTRASTIVE = re.compile(r"contrastive-(\d+)")
_MIXED = re.compile(r"mixed-(separate|[01](?:\.\d+)?)")
SETTING_PATTERN = r"contrastive-\d+|mixed-(?:separate|[01](?:\.\d+)?)"
DATASET_PATTERN = r"contrastive|mixed-(?:separate|[01](?:\.\d+)?)"


@dataclass(frozen=True)
class Dataset:
    """How a dataset's views are made."""

    name: str
    schedule: str  # "contrastive" or "mixed"
    fraction: float | None = None  # mixed-F: F; None otherwise
    separate: bool = False  # one projection per source

    def sources(self, smoothness: list[float]) -> int:
        return len(smoothness) if self.schedule == "contrastive" else 2

    def coefficients(self, smoothness: list[float]) -> list[list[float]]:
        """c[v][k]: the scale of source k in view v (the projection is c A)."""
        K = self.sources(smoothness)
        if self.schedule == "contrastive":
            return [[1.0 if k <= v else 0.0 for k in range(K)] for v in range(K)]
        f = 1.0 if self.separate else self.fraction
        assert f is not None  # dataset() gives a mixed dataset a fraction unless it is separate
        return [[1.0 if k == v else f for k in range(K)] for v in range(K)]

    def stages(self, smoothness: list[float]) -> int:
        """Number of EM stages: one per source for contrastive, one for mixed."""
        return self.sources(smoothness) if self.schedule == "contrastive" else 1

    def stage_views(self, stage: int) -> tuple[list[int], list[int], list[int]]:
        """(views, trained sources, frozen sources) of an EM stage, 0-based indices; stage counts from 1."""
        if self.schedule == "contrastive":
            return [stage - 1], [stage - 1], list(range(stage - 1))
        if stage != 1:
            raise ConfigError(f"dataset {self.name!r} has one EM stage, not {stage}")
        return [0, 1], [0, 1], []


def dataset(name: str) -> Dataset:
    if name == "contrastive":
        return Dataset(name, "contrastive")
    m = _MIXED.fullmatch(name)
    if m is None:
        raise ConfigError(f"unknown manifold dataset {name!r}: contrastive, mixed-F (0 <= F <= 1) or mixed-separate")
    if m.group(1) == "separate":
        return Dataset(name, "mixed", None, True)
    f = float(m.group(1))
    if not 0.0 <= f <= 1.0:
        raise ConfigError(f"mixing fraction of {name!r} must lie in [0, 1]")
    return Dataset(name, "mixed", f)


@dataclass(frozen=True)
class Setting:
    """One block of the table."""

    name: str
    dataset: Dataset
    sources: int  # sources in the posterior
    views: tuple[int, ...]  # views (0-based) whose observations are judged
    stage: int  # the EM stage whose priors and last E-step give the posterior

    @property
    def contrastive(self) -> bool:
        return self.dataset.schedule == "contrastive"

    def headline(self) -> list[int]:
        """Sources (0-based) averaged into the table's main row: the last (the contrastive target), or all."""
        return [self.sources - 1] if self.contrastive else list(range(self.sources))

    def applies(self, method: str) -> bool:
        """Whether a method runs on this setting (the contrastive baselines need a contrastive one)."""
        if method not in methods():
            raise ConfigError(f"unknown manifold method {method!r}: one of {', '.join(methods())}")
        return self.contrastive or method not in baselines()


def setting(name: str, smoothness: list[float] | None = None) -> Setting:
    """Parse a setting name; with ``smoothness`` (data.smoothness) also check contrastive-K has K sources."""
    m = _CONTRASTIVE.fullmatch(name)
    if m is not None:
        K = int(m.group(1))
        if K < 2 or (smoothness is not None and K > len(smoothness)):
            top = len(smoothness) if smoothness is not None else "len(data.smoothness)"
            raise ConfigError(f"setting {name!r}: contrastive-K needs 2 <= K <= {top}")
        return Setting(name, dataset("contrastive"), K, (K - 1,), K)
    ds = dataset(name)
    return Setting(name, ds, 2, (0, 1), 1)
