"""Background noise model of a drizzled ACS/WFC tile: inverse variance from the WHT map and header.

For a drizzled image in e-/s whose WHT extension holds the effective exposure time per pixel
(AstroDrizzle ``final_wht_type=EXP``, seconds), a pixel that collected ``t = WHT`` seconds of data
from ``n`` combined exposures has, away from bright sources,

    var [(e-/s)^2] = (sky_rate * t + n * read_noise^2) / t^2

with ``sky_rate`` the sky (plus dark) in e-/s/pixel and ``read_noise`` in e- per read. Poisson noise
of the sources themselves is not in the WHT map and not in this model. Pixels with ``t <= 0`` carry no
data: their inverse variance is 0.

Header keywords read (primary or SCI header):
    EXPTIME  [s]        total exposure time of the tile
    NCOMBINE [-]        number of exposures combined (default 1)
    MDRIZSKY [e-]       sky level per pixel per exposure that AstroDrizzle subtracted
    READNSEA..READNSED [e-]  read noise of the four amplifiers (their mean is used)
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

READNOISE_KEYS = ("READNSEA", "READNSEB", "READNSEC", "READNSED")


class NoiseHeaderError(ValueError):
    """A header lacks what the noise model needs."""


def noise_parameters(header: Mapping) -> dict[str, float]:
    """Read ``sky_rate`` [e-/s/pixel], ``read_noise`` [e-] and ``ncombine`` from a tile header."""
    missing = [k for k in ("EXPTIME", "MDRIZSKY") if k not in header]
    if missing:
        raise NoiseHeaderError(f"tile header lacks {missing}, needed for the noise model")
    exptime = float(header["EXPTIME"])
    ncombine = max(int(header.get("NCOMBINE", 1)), 1)
    if exptime <= 0:
        raise NoiseHeaderError(f"EXPTIME must be positive, got {exptime}")
    reads = [float(header[k]) for k in READNOISE_KEYS if k in header]
    if not reads:
        raise NoiseHeaderError(f"tile header lacks read noise keywords {READNOISE_KEYS}")
    per_exposure = exptime / ncombine
    return {
        "sky_rate": float(header["MDRIZSKY"]) / per_exposure,
        "read_noise": float(np.mean(reads)),
        "ncombine": float(ncombine),
    }


def inverse_variance(
    wht: np.ndarray, sky_rate: float, read_noise: float, ncombine: float = 1.0
) -> np.ndarray:
    """Inverse variance [(e-/s)^-2] of each pixel from its effective exposure time ``wht`` [s]."""
    t = np.where(np.isfinite(wht), np.clip(wht, 0.0, None), 0.0).astype(np.float64)
    var_num = sky_rate * t + ncombine * read_noise**2
    with np.errstate(divide="ignore", invalid="ignore"):
        ivar = np.where(t > 0, t**2 / var_num, 0.0)
    return ivar.astype(np.float32)
