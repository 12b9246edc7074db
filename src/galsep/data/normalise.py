"""The reference's normalisation: an arcsinh stretch that keeps bright cores and faint wings in range.

    y' = clip(stretch * arcsinh(y / scale), -clip, clip)
    variance' = (stretch / scale)^2 / max(ivar, ivar_floor)

``(stretch/scale)^2`` is the squared slope of the stretch at y = 0, so the variance is exact for faint
pixels and an overestimate for bright ones (where the stretch compresses); the floor on ivar keeps
nearly uncovered pixels from dominating. Sources are modelled as adding in this normalised space.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Stretch", "split_flux"]


@dataclass(frozen=True)
class Stretch:
    """Normalisation constants (config section ``views``)."""

    arcsinh_scale: float = 0.1
    stretch: float = 0.2
    clip: float = 2.0
    ivar_floor: float = 2.5

    @classmethod
    def from_config(cls, views: Mapping[str, Any]) -> Stretch:
        """The constants of the config section ``views`` (which holds other keys too)."""
        return cls(**{k: views[k] for k in ("arcsinh_scale", "stretch", "clip", "ivar_floor")})

    def forward(self, flux: np.ndarray) -> np.ndarray:
        """e-/s -> normalised units; NaN stays NaN."""
        return np.clip(self.stretch * np.arcsinh(flux / self.arcsinh_scale), -self.clip, self.clip)

    def inverse(self, y: np.ndarray) -> np.ndarray:
        """Normalised units -> e-/s (exact inside (-clip, clip); clipped values map to the clip edge)."""
        return self.arcsinh_scale * np.sinh(np.clip(y, -self.clip, self.clip) / self.stretch)

    def variance(self, ivar: np.ndarray) -> np.ndarray:
        """Per-pixel noise variance in normalised units from the inverse variance [(e-/s)^-2]."""
        gain = (self.stretch / self.arcsinh_scale) ** 2
        return (gain / np.maximum(ivar, self.ivar_floor)).astype(np.float32)


def split_flux(stretch: Stretch, galaxy: np.ndarray, random: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Normalised galaxy and random components -> their fluxes [e-/s] that add up to the model's total.

    The model adds the sources in normalised space, where the stretch is not linear. The random
    light is taken as ``inverse(random)`` and the galaxy as what it adds on top:
    ``inverse(galaxy + random) - inverse(random)``. Both agree with ``inverse(galaxy)`` where the
    light is faint (|flux| << arcsinh_scale, the linear part of the stretch) and the two fluxes sum
    to ``inverse(galaxy + random)``, the model's noiseless observation, so photometry is additive.
    """
    rand = stretch.inverse(random)
    return stretch.inverse(galaxy + random) - rand, rand
