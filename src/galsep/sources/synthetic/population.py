"""Random populations of a synthetic COSMOS tile: galaxies, stars and detector artefacts.

Every function draws from the numpy ``Generator`` it is given and returns plain arrays, so that a
tile is a deterministic function of its seed. Positions are tile pixels (0-based numpy column x,
row y); sizes are arcseconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["TARGET_COUNT_SLOPE", "INTERLOPER_COUNT_SLOPE", "STAR_COUNT_SLOPE", "DISK_HLR_AT_20", "DISK_HLR_SLOPE",
           "DISK_HLR_SCATTER", "Galaxies", "Stars", "CosmicRays", "flux_of", "power_law_magnitudes", "galaxies",
           "close_pairs", "stars", "cosmic_rays", "hot_pixels"]

# COSMOS F814W galaxy counts rise as d log N / dm ~ 0.33 at I = 20-24 and flatten fainter
# (Leauthaud et al. 2007); the star counts at b = 42 deg are much flatter.
TARGET_COUNT_SLOPE = 0.33
INTERLOPER_COUNT_SLOPE = 0.25
STAR_COUNT_SLOPE = 0.1
# Disk half-light radius against magnitude: 0.7" at I = 20, shrinking 0.1 dex per magnitude,
# 0.15 dex scatter; with the bulge this gives COSMOS-like median sizes of ~0.6" at I = 20, 0.25" at 23.5.
DISK_HLR_AT_20 = 0.7
DISK_HLR_SLOPE = -0.1
DISK_HLR_SCATTER = 0.15


@dataclass(frozen=True)
class Galaxies:
    """Bulge + disk galaxies; every field has shape (N,).

    x, y: centre [pixels]; mag: F814W AB; flux [e-/s]; disk_hlr, bulge_hlr [arcsec];
    bulge_fraction: bulge share of the flux; q: axis ratio b/a of both components;
    beta: position angle of the major axis from the +x pixel axis, counter-clockwise [rad].
    """

    x: np.ndarray
    y: np.ndarray
    mag: np.ndarray
    flux: np.ndarray
    disk_hlr: np.ndarray
    bulge_hlr: np.ndarray
    bulge_fraction: np.ndarray
    q: np.ndarray
    beta: np.ndarray

    def __len__(self) -> int:
        return len(self.x)


@dataclass(frozen=True)
class Stars:
    """Point sources; x, y [pixels], mag (F814W AB), flux [e-/s], each of shape (N,)."""

    x: np.ndarray
    y: np.ndarray
    mag: np.ndarray
    flux: np.ndarray


@dataclass(frozen=True)
class CosmicRays:
    """Cosmic-ray tracks that survived drizzling: start x, y [pixels], length [pixels], angle [rad],
    intensity along the track [e-/s per pixel of length]; each of shape (N,)."""

    x: np.ndarray
    y: np.ndarray
    length: np.ndarray
    angle: np.ndarray
    intensity: np.ndarray


def flux_of(mag: np.ndarray, zeropoint: float) -> np.ndarray:
    """Count rate [e-/s] of AB magnitude ``mag`` for a zeropoint [AB mag of 1 e-/s]."""
    return 10 ** (-0.4 * (np.asarray(mag, dtype=np.float64) - zeropoint))


def power_law_magnitudes(rng: np.random.Generator, n: int, lo: float, hi: float, slope: float) -> np.ndarray:
    """Magnitudes in [lo, hi] with counts dN/dm proportional to 10^(slope m) (inverse CDF)."""
    u = rng.uniform(size=n)
    span = 10 ** (slope * (hi - lo)) - 1
    return lo + np.log10(1 + u * span) / slope


def galaxies(
    rng: np.random.Generator,
    n: int,
    mag_range: tuple[float, float],
    slope: float,
    zeropoint: float,
    box: tuple[float, float, float, float],
    hlr_range: tuple[float, float],
) -> Galaxies:
    """Draw ``n`` bulge + disk galaxies uniformly in ``box`` = (xmin, xmax, ymin, ymax) [pixels].

    Disk sizes follow the magnitude-size relation above, clipped to ``hlr_range`` [arcsec]. Bulges
    hold a Beta(0.8, 1.6) share of the light (mean 1/3, most galaxies disk-dominated) within 0.35-0.65
    of the disk's half-light radius. Both share one shape: an oblate body of intrinsic thickness
    0.2 + 0.5 B/T (bulgier is rounder) seen at a random inclination, at a random position angle.
    """
    x = rng.uniform(box[0], box[1], size=n)
    y = rng.uniform(box[2], box[3], size=n)
    mag = power_law_magnitudes(rng, n, *mag_range, slope)
    log_hlr = (
        np.log10(DISK_HLR_AT_20) + DISK_HLR_SLOPE * (mag - 20) + DISK_HLR_SCATTER * rng.standard_normal(n)
    )
    disk_hlr = np.clip(10**log_hlr, *hlr_range)
    bulge_fraction = rng.beta(0.8, 1.6, size=n)
    bulge_hlr = disk_hlr * rng.uniform(0.35, 0.65, size=n)
    cos_i = rng.uniform(size=n)
    thickness = 0.2 + 0.5 * bulge_fraction
    q = np.sqrt(cos_i**2 + thickness**2 * (1 - cos_i**2))
    beta = rng.uniform(0, np.pi, size=n)
    return Galaxies(x, y, mag, flux_of(mag, zeropoint), disk_hlr, bulge_hlr, bulge_fraction, q, beta)


def close_pairs(
    rng: np.random.Generator,
    x: np.ndarray,
    y: np.ndarray,
    fraction: float,
    separation: tuple[float, float],
    box: tuple[float, float, float, float],
) -> tuple[np.ndarray, np.ndarray]:
    """Make a ``fraction`` of the galaxies at (x, y) (N,) members of close pairs; return new (x, y).

    round(fraction N / 2) companions, drawn at random, move to a separation ~ U(``separation``)
    [pixels] at a uniform angle from an anchor drawn among the others; where that falls outside
    ``box`` the angle turns by quarter turns until it fits (the box's corner if none does). The
    anchors stay; every galaxy keeps its magnitude and shape, so the magnitudes keep their counts.
    """
    n = len(x)
    pairs = min(int(round(fraction * n / 2)), n // 2)
    if pairs == 0:
        return x, y
    order = rng.permutation(n)
    anchors, companions = order[:pairs], order[pairs : 2 * pairs]
    sep = rng.uniform(*separation, size=pairs)
    phi = rng.uniform(0, 2 * np.pi, size=pairs)
    x, y = np.array(x, dtype=np.float64), np.array(y, dtype=np.float64)
    for a, c, s, p in zip(anchors, companions, sep, phi, strict=True):
        for turn in range(4):
            nx, ny = x[a] + s * np.cos(p + turn * np.pi / 2), y[a] + s * np.sin(p + turn * np.pi / 2)
            if box[0] <= nx <= box[1] and box[2] <= ny <= box[3]:
                break
        x[c], y[c] = np.clip(nx, box[0], box[1]), np.clip(ny, box[2], box[3])
    return x, y


def stars(
    rng: np.random.Generator,
    n: int,
    mag_range: tuple[float, float],
    zeropoint: float,
    box: tuple[float, float, float, float],
) -> Stars:
    """Draw ``n`` stars uniformly in ``box`` with the flat high-latitude star counts."""
    x = rng.uniform(box[0], box[1], size=n)
    y = rng.uniform(box[2], box[3], size=n)
    mag = power_law_magnitudes(rng, n, *mag_range, STAR_COUNT_SLOPE)
    return Stars(x, y, mag, flux_of(mag, zeropoint))


def cosmic_rays(rng: np.random.Generator, n: int, covered: np.ndarray) -> CosmicRays:
    """Draw ``n`` cosmic-ray residuals starting on covered pixels of the (H, W) bool map ``covered``.

    Most are dots or short tracks (length ~ exponential, mean 3 pixels, up to 25); their brightness
    is log-normal around 0.3 e-/s (tens of background sigma), as one exposure's unrejected hit
    diluted by drizzling.
    """
    rows, cols = np.nonzero(covered)
    pick = rng.integers(0, len(rows), size=n) if len(rows) else np.zeros(0, dtype=int)
    x = cols[pick] + rng.uniform(-0.5, 0.5, size=len(pick))
    y = rows[pick] + rng.uniform(-0.5, 0.5, size=len(pick))
    length = np.minimum(rng.exponential(3.0, size=len(pick)), 25.0)
    angle = rng.uniform(0, 2 * np.pi, size=len(pick))
    intensity = 0.3 * np.exp(rng.normal(0.0, 1.0, size=len(pick)))
    return CosmicRays(x, y, length, angle, intensity)


def hot_pixels(rng: np.random.Generator, rate: float, covered: np.ndarray) -> np.ndarray:
    """(H, W) float image of hot pixels: a ``rate`` share of covered pixels, log-normal around 0.1 e-/s."""
    hot = (rng.uniform(size=covered.shape) < rate) & covered
    out = np.zeros(covered.shape, dtype=np.float64)
    out[hot] = 0.1 * np.exp(rng.normal(0.0, 1.0, size=int(hot.sum())))
    return out
