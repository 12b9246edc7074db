"""What the Snakefile reads when it is parsed: the EM chain layout and the separation methods' names
and kinds. This module imports neither torch nor astropy (parsing runs on every dry run, lint and
cluster job); tests/test_architecture.py checks ``sys.modules`` after importing it.

A *chain* learns the priors of some sources from some views, with other sources' priors frozen:
    contrastive: chain "random" (randoms view, learns random), then chain "galaxy" (galaxies view,
                 learns galaxy, random frozen at its last lap) - DDPRISM's simplified algorithm;
    joint:       chain "joint" (all views at once, learns every source) - DDPRISM's algorithm 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from galsep.data import SOURCES
from galsep.errors import ConfigError
from galsep.methods import registry

__all__ = ["SOURCES", "Chain", "chains", "method_kinds"]


@dataclass(frozen=True)
class Chain:
    """Which views a chain learns from, which sources it trains and which it takes frozen."""

    name: str
    views: tuple[str, ...]
    trained: tuple[str, ...]
    frozen: tuple[str, ...] = ()

    @property
    def sources(self) -> tuple[str, ...]:
        """Sources in the chain's posterior: trained then frozen (a source absent from every view of the
        chain, like the galaxy in the randoms view, is left out: its posterior is its prior)."""
        return self.trained + self.frozen


def chains(schedule: str, views: Sequence[str]) -> list[Chain]:
    """The chains of a schedule, in the order they run."""
    if schedule == "contrastive":
        return [Chain("random", ("randoms",), ("random",)), Chain("galaxy", ("galaxies",), ("galaxy",), ("random",))]
    if schedule == "joint":
        mixed = tuple(v for v in views if v.startswith("mixed_")) or ("randoms", "galaxies")
        return [Chain("joint", mixed, ("galaxy", "random"))]
    raise ConfigError(f"unknown em.schedule {schedule!r}: contrastive or joint")


def method_kinds() -> dict[str, dict[str, Any]]:
    """Every registered method's name -> {fitted, uses_priors, deterministic, section} (what the rules
    plan by: which jobs it needs and where its settings live)."""
    return {name: {"fitted": m.fitted, "uses_priors": m.uses_priors, "deterministic": m.deterministic,
                   "section": m.section} for name, m in registry().items()}
