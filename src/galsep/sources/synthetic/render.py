"""Drawing sources with GalSim into stamps and pasting them onto a tile.

A stamp of odd side ``2 h + 1`` is centred on the pixel nearest to the source, with the sub-pixel
remainder passed to GalSim as an offset, so that the light centre falls exactly at (x, y).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import galsim
import numpy as np
from scipy import optimize, special

from galsep.sources.synthetic.population import CosmicRays, Galaxies

__all__ = ["BULGE_TRUNCATION", "DISK_TRUNCATION", "PSF_MARGIN", "MAX_HALF", "composite_half_light_radius",
           "galaxy_profile", "galaxy_half_size", "star_half_size", "draw", "paste", "cosmic_ray_image"]

BULGE_TRUNCATION = 8.0  # de Vaucouleurs bulge cut at 8 of its half-light radii ...
DISK_TRUNCATION = 5.0  # ... the exponential disk at 5 of its own, so all model light is in a stamp
PSF_MARGIN = 24  # pixels of stamp beyond the truncation radius, for the PSF wings (1.5% lost beyond)
MAX_HALF = 200  # largest stamp half-size [pixels]


def _enclosed(n: float, trunc: float) -> Callable[[float], float]:
    """Enclosed-flux fraction of a Sersic of index ``n``, half-light radius 1, truncated at ``trunc``.

    GalSim fixes the half-light radius of the truncated profile; the fraction inside ``r`` is the
    regularised lower incomplete gamma function of (r / r0)^(1/n), normalised at the truncation.
    """
    r0 = galsim.Sersic(n, half_light_radius=1.0, trunc=trunc).scale_radius
    total = special.gammainc(2 * n, (trunc / r0) ** (1 / n))
    return lambda r: special.gammainc(2 * n, (min(r, trunc) / r0) ** (1 / n)) / total


def composite_half_light_radius(gals: Galaxies) -> np.ndarray:
    """Half-light radius [arcsec] of each bulge + disk profile, shape (N,).

    Both components share one shear, which conserves area, so the circularised radius that holds
    half of the summed light solves B E_b(r / r_b) + (1 - B) E_d(r / r_d) = 1/2 between r_b and r_d.
    """
    e_b, e_d = _enclosed(4.0, BULGE_TRUNCATION), _enclosed(1.0, DISK_TRUNCATION)

    def half(r: float, b: float, rb: float, rd: float) -> float:
        return b * e_b(r / rb) + (1 - b) * e_d(r / rd) - 0.5

    return np.array(
        [
            optimize.brentq(partial(half, b=b, rb=rb, rd=rd), rb, rd, xtol=1e-9 * rd)
            for b, rb, rd in zip(gals.bulge_fraction, gals.bulge_hlr, gals.disk_hlr, strict=True)
        ]
    )


def galaxy_profile(gals: Galaxies, i: int) -> galsim.GSObject:
    """GalSim profile (before the PSF) of galaxy ``i``: truncated de Vaucouleurs bulge + exponential disk."""
    b, f = float(gals.bulge_fraction[i]), float(gals.flux[i])
    rb, rd = float(gals.bulge_hlr[i]), float(gals.disk_hlr[i])
    bulge = galsim.Sersic(4.0, half_light_radius=rb, trunc=BULGE_TRUNCATION * rb, flux=b * f)
    disk = galsim.Sersic(1.0, half_light_radius=rd, trunc=DISK_TRUNCATION * rd, flux=(1 - b) * f)
    return galsim.Add(bulge, disk).shear(q=float(gals.q[i]), beta=float(gals.beta[i]) * galsim.radians)


def galaxy_half_size(gals: Galaxies, i: int, scale: float) -> int:
    """Stamp half-size [pixels] holding all of galaxy ``i``'s model light plus the PSF margin."""
    reach = max(BULGE_TRUNCATION * gals.bulge_hlr[i], DISK_TRUNCATION * gals.disk_hlr[i]) / scale
    return int(min(np.ceil(reach) + PSF_MARGIN, MAX_HALF))


def star_half_size(flux: float) -> int:
    """Stamp half-size [pixels] where a star's Airy wings (~r^-3) fall below ~1e-3 e-/s per pixel."""
    return int(np.clip(16 * (max(flux, 0.0) * 9e-3) ** (1 / 3), 16, MAX_HALF))


def draw(
    profile: galsim.GSObject, x: float, y: float, half: int, scale: float
) -> tuple[np.ndarray, int, int]:
    """Draw ``profile`` (with pixel response) centred at tile pixel (x, y).

    Returns:
        stamp: (2 half + 1, 2 half + 1) float32 [e-/s]; x0, y0: tile pixel of stamp[0, 0].
    """
    ix, iy = int(np.rint(x)), int(np.rint(y))
    n = 2 * half + 1
    image = profile.drawImage(nx=n, ny=n, scale=scale, offset=(x - ix, y - iy), method="auto")
    return image.array.astype(np.float32), ix - half, iy - half


def paste(canvas: np.ndarray, stamp: np.ndarray, x0: int, y0: int) -> tuple[np.ndarray, int, int]:
    """Add ``stamp`` into ``canvas`` (H, W) in place; return the part that landed, and its corner."""
    h, w = stamp.shape
    ya, yb = max(y0, 0), min(y0 + h, canvas.shape[0])
    xa, xb = max(x0, 0), min(x0 + w, canvas.shape[1])
    if ya >= yb or xa >= xb:
        return np.zeros((0, 0), dtype=stamp.dtype), max(x0, 0), max(y0, 0)
    part = stamp[ya - y0 : yb - y0, xa - x0 : xb - x0]
    canvas[ya:yb, xa:xb] += part
    return part, xa, ya


def cosmic_ray_image(rays: CosmicRays, shape: tuple[int, int], step: float = 0.2) -> np.ndarray:
    """(H, W) image of cosmic-ray tracks, sampled every ``step`` pixels and spread bilinearly."""
    out = np.zeros(shape, dtype=np.float64)
    for x, y, length, angle, level in zip(rays.x, rays.y, rays.length, rays.angle, rays.intensity, strict=True):
        m = max(1, int(np.ceil(length / step)))
        t = (np.arange(m) + 0.5) / m * length
        px, py = x + t * np.cos(angle), y + t * np.sin(angle)
        w = level * max(length, 1.0) / m  # a dot carries one pixel's worth
        fx, fy = np.floor(px).astype(int), np.floor(py).astype(int)
        ax, ay = px - fx, py - fy
        for dx, dy, wt in (
            (0, 0, (1 - ax) * (1 - ay)),
            (1, 0, ax * (1 - ay)),
            (0, 1, (1 - ax) * ay),
            (1, 1, ax * ay),
        ):
            cx, cy = fx + dx, fy + dy
            ok = (cx >= 0) & (cx < shape[1]) & (cy >= 0) & (cy < shape[0])
            np.add.at(out, (cy[ok], cx[ok]), w * wt[ok])
    return out
