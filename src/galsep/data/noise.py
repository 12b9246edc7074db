"""Background noise model of a drizzled ACS/WFC tile: inverse variance from the WHT map and header.

A pipeline (CALACS + AstroDrizzle) drizzled ACS/WFC product has SCI in e-/s and a WHT extension that
holds the effective exposure time per output pixel in seconds (the ACS pipeline drizzles with
``final_wht_type = EXP``). A pixel that collected ``t = WHT`` seconds from ``n`` exposures of
``t_exp`` seconds each has, away from bright sources,

    var [(e-/s)^2] = ((sky_rate + dark_rate) * t + n * read_noise^2) / t^2

with ``sky_rate`` the sky in e-/s/pixel, ``dark_rate`` the dark current in e-/s/pixel (subtracted by
CALACS, its Poisson noise remains) and ``read_noise`` in e- per read. When ``t_exp`` is known the
number of reads is taken per pixel, ``n = max(t / t_exp, 1)``, so chip gaps and dither edges covered by
fewer exposures get fewer reads; otherwise ``n = NCOMBINE`` everywhere. Not modelled: the Poisson noise
of the sources (not in the WHT map) and the pixel-to-pixel correlation that drizzling introduces
(Casertano et al. 2000), which makes the per-pixel variance of a pixfrac=1 drizzle somewhat smaller
than this estimate. Pixels with ``t <= 0`` carry no data: their inverse variance is 0.

Header keywords read (primary header first, then SCI), with their units:
    EXPTIME  [s]   total exposure time of the combined image (sum over the exposures).
    NCOMBINE [-]   number of exposures combined. Fallback: round(EXPTIME / D001DEXP) where the
                   per-input drizzle keyword D001DEXP [s] is present, else 1.
    MDRIZSKY [e-]  sky that AstroDrizzle measured and subtracted, per input pixel and per exposure,
                   in the units of the input image (drizzlepac's skymatch reads them from BUNIT; ACS
                   FLT images are in ELECTRONS since CALACS converts DN to e-, ACS Data Handbook
                   section 3.4). The drizzled and input pixels are both ~0.05", so the rate per output
                   pixel is MDRIZSKY / t_exp. The reference multiplied MDRIZSKY by the pixel area in
                   arcsec^2 as if it were a surface brightness, shrinking the sky term 400-fold.
    READNSEA..READNSED [e-]  read noise of the four WFC amplifiers, in electrons (ACS Data Handbook
                   section 4.1: 4-6 e-); their mean is used.
    BUNIT          if present, must be electrons per second (e.g. ELECTRONS/S).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from galsep.errors import InputError

__all__ = ["RATE_UNITS", "READNOISE_KEYS", "NoiseHeaderError", "noise_parameters", "inverse_variance"]

READNOISE_KEYS = ("READNSEA", "READNSEB", "READNSEC", "READNSED")
# BUNIT spellings of e-/s, compared lowercased without spaces (also by galsep.sources.files)
RATE_UNITS = {"electrons/s", "electron/s", "e-/s", "e/s", "electrons/sec", "electrons/second"}


class NoiseHeaderError(InputError):
    """A header lacks what the noise model needs."""


def _ncombine(header: Mapping[str, Any], exptime: float) -> int:
    if "NCOMBINE" in header:
        return max(int(header["NCOMBINE"]), 1)
    dexp = float(header.get("D001DEXP", 0.0) or 0.0)
    if dexp > 0:
        return max(int(round(exptime / dexp)), 1)
    return 1


def noise_parameters(header: Mapping[str, Any]) -> dict[str, float]:
    """Read the noise model's parameters from a tile header.

    Returns ``sky_rate`` [e-/s/pixel], ``read_noise`` [e-], ``ncombine`` and ``exposure_time`` (seconds
    per single exposure), the keyword arguments of :func:`inverse_variance`.
    """
    missing = [k for k in ("EXPTIME", "MDRIZSKY") if k not in header]
    if missing:
        raise NoiseHeaderError(f"tile header lacks {missing}, needed for the noise model")
    unit = str(header.get("BUNIT", "electrons/s")).strip().lower().replace(" ", "")
    if unit not in RATE_UNITS:
        raise NoiseHeaderError(f"BUNIT is {header['BUNIT']!r}; the noise model needs SCI in electrons/s")
    exptime = float(header["EXPTIME"])
    if exptime <= 0:
        raise NoiseHeaderError(f"EXPTIME must be positive, got {exptime}")
    reads = [float(header[k]) for k in READNOISE_KEYS if k in header]
    if not reads:
        raise NoiseHeaderError(f"tile header lacks read noise keywords {READNOISE_KEYS}")
    ncombine = _ncombine(header, exptime)
    per_exposure = exptime / ncombine
    return {
        "sky_rate": float(header["MDRIZSKY"]) / per_exposure,
        "read_noise": float(np.mean(reads)),
        "ncombine": float(ncombine),
        "exposure_time": per_exposure,
    }


def inverse_variance(
    wht: np.ndarray,
    sky_rate: float,
    read_noise: float,
    ncombine: float = 1.0,
    exposure_time: float | None = None,
    dark_rate: float = 0.0,
) -> np.ndarray:
    """Inverse variance [(e-/s)^-2] of each pixel from its effective exposure time ``wht`` [s].

    ``wht``: (H, W) or any shape; the result has the same shape, float32, 0 where ``wht <= 0`` or NaN.
    ``exposure_time`` [s] (one exposure) turns on the per-pixel read count ``max(wht/exposure_time, 1)``;
    without it every covered pixel has ``ncombine`` reads.
    """
    t = np.where(np.isfinite(wht), np.clip(wht, 0.0, None), 0.0).astype(np.float64)
    reads: np.ndarray | float
    if exposure_time is not None and exposure_time > 0:
        reads = np.maximum(t / exposure_time, 1.0)
    else:
        reads = ncombine
    var_num = (sky_rate + dark_rate) * t + reads * read_noise**2
    with np.errstate(divide="ignore", invalid="ignore"):
        ivar = np.where(t > 0, t**2 / var_num, 0.0)
    return ivar.astype(np.float32)
