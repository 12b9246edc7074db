"""HST ACS/WFC F814W-like point-spread function: an obscured Airy disc blurred by a Gaussian.

The Gaussian stands for telescope jitter, charge diffusion and drizzling; its width is solved so that
the PSF (before the 0.05" pixel response, which GalSim adds when drawing) has the requested FWHM.
"""

from __future__ import annotations

import galsim
import numpy as np
from scipy import ndimage, optimize, special

from galsep.errors import ConfigError

__all__ = ["WAVELENGTH", "DIAMETER", "OBSCURATION", "ARCSEC_PER_RAD", "lam_over_diam", "hst_psf"]

WAVELENGTH = 814e-9  # F814W pivot [m]
DIAMETER = 2.4  # HST primary [m]
OBSCURATION = 0.33  # linear central obscuration of HST
ARCSEC_PER_RAD = 180 * 3600 / np.pi


def lam_over_diam() -> float:
    """Diffraction scale lambda / D of HST at 814 nm [arcsec]."""
    return WAVELENGTH / DIAMETER * ARCSEC_PER_RAD


def _airy(r: np.ndarray, lod: float, eps: float) -> np.ndarray:
    """Intensity of an obscured Airy pattern at radii ``r`` [arcsec], 1 at the centre."""
    v = np.pi * np.maximum(r, 1e-12) / lod
    amp = 2 * special.j1(v) / v - eps**2 * 2 * special.j1(eps * v) / (eps * v)
    return (amp / (1 - eps**2)) ** 2


def _fwhm(sigma: float, lod: float, eps: float, step: float = 0.002, half: int = 128) -> float:
    """FWHM [arcsec] of the Airy pattern convolved with a Gaussian of width ``sigma`` [arcsec]."""
    c = np.arange(-half, half + 1) * step
    img = _airy(np.hypot(*np.meshgrid(c, c)), lod, eps)
    if sigma > 0:
        img = ndimage.gaussian_filter(img, sigma / step, mode="constant")
    row = img[half, half:] / img[half, half]
    i = int(np.argmax(row < 0.5))  # first sample below half maximum
    frac = (row[i - 1] - 0.5) / (row[i - 1] - row[i])
    return 2 * step * (i - 1 + frac)


def hst_psf(fwhm: float) -> galsim.GSObject:
    """Obscured Airy (2.4 m, 814 nm, obscuration 0.33) convolved with the Gaussian that gives ``fwhm``.

    Args:
        fwhm: FWHM of the optical PSF [arcsec], at least the diffraction limit (about 0.068").
    """
    lod = lam_over_diam()
    floor = _fwhm(0.0, lod, OBSCURATION)
    airy = galsim.Airy(lam_over_diam=lod, obscuration=OBSCURATION)
    if fwhm <= floor * 1.001:
        if fwhm < floor * 0.99:
            raise ConfigError(
                f'synthetic.psf_fwhm = {fwhm}" is below HST\'s diffraction limit at 814 nm ({floor:.3f}")'
            )
        return airy
    sigma = optimize.brentq(lambda s: _fwhm(s, lod, OBSCURATION) - fwhm, 1e-4, fwhm, xtol=1e-6)
    return galsim.Convolve(airy, galsim.Gaussian(sigma=sigma))
