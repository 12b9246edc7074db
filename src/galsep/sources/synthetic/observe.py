"""What makes a synthetic tile look like a drizzled HST ACS/WFC F814W tile: WCS, headers, WHT map."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from galsep import __version__

__all__ = ["PHOTFLAM", "PHOTPLAM", "PHOTZPT", "PHOTBW", "CHIP_GAP", "MAX_ROTATION", "TILE_PITCH", "ab_zeropoint",
           "spiral_cell", "tile_wcs", "wcs_header", "noise_keywords", "primary_header", "exposure_map"]

# ACS/WFC F814W photometry (STScI zeropoint tables): inverse sensitivity [erg/s/cm^2/A per e-/s],
# pivot wavelength [A], ST zeropoint, rms bandwidth [A].
PHOTFLAM = 7.0723e-20
PHOTPLAM = 8045.0
PHOTZPT = -21.10
PHOTBW = 653.0
CHIP_GAP = 2.5  # [arcsec] between the two WFC chips, covered by dithering
MAX_ROTATION = 3.0  # [deg] of the tiles' y axis from north
TILE_PITCH = 1.12  # tile centres this many tile sides apart: no overlap up to MAX_ROTATION


def ab_zeropoint(photflam: float = PHOTFLAM, photplam: float = PHOTPLAM) -> float:
    """AB magnitude of a source giving 1 e-/s: -2.5 log10(PHOTFLAM) - 5 log10(PHOTPLAM) - 2.408."""
    return float(-2.5 * np.log10(photflam) - 5 * np.log10(photplam) - 2.408)


def spiral_cell(index: int) -> tuple[int, int]:
    """Grid cell (column, row) of tile ``index`` on a square spiral around the field centre.

    Tile k's place depends on k alone, so adding tiles leaves the sky of existing ones as it was.
    """
    col = row = 0
    dcol, drow, run, k = 1, 0, 1, 0
    while k < index:
        for _ in range(2):
            for _ in range(run):
                if k == index:
                    return col, row
                col, row, k = col + dcol, row + drow, k + 1
            dcol, drow = -drow, dcol
        run += 1
    return col, row


def tile_wcs(
    index: int, shape: tuple[int, int], ra: float, dec: float, scale: float, rng: np.random.Generator
) -> WCS:
    """TAN WCS of tile ``index``: on a spiral of cells around (ra, dec), jittered and slightly rotated.

    Args:
        shape: (H, W) pixels; scale: arcsec per pixel; ra, dec: field centre [deg].
    """
    side = max(shape) * scale / 3600
    col, row = spiral_cell(index)
    jitter = rng.uniform(-0.01, 0.01, size=2) * side
    dec_c = dec + row * TILE_PITCH * side + jitter[1]
    ra_c = (ra + (col * TILE_PITCH * side + jitter[0]) / np.cos(np.deg2rad(dec_c))) % 360
    theta = np.deg2rad(rng.uniform(-MAX_ROTATION, MAX_ROTATION))
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.cunit = ["deg", "deg"]
    w.wcs.crval = [ra_c, dec_c]
    w.wcs.crpix = [(shape[1] + 1) / 2, (shape[0] + 1) / 2]
    # east to the left (RA falls with x), rotated by theta
    w.wcs.cd = scale / 3600 * np.array([[-np.cos(theta), np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    w.wcs.radesys = "ICRS"
    w.wcs.set()
    return w


def wcs_header(wcs: WCS) -> fits.Header:
    """FITS header of ``wcs`` with CD keywords, as drizzled ACS tiles carry (astropy writes PC + CDELT)."""
    header = wcs.to_header()
    for key in [k for k in header if k.startswith(("PC", "CDELT"))]:
        del header[key]
    for (i, j), v in np.ndenumerate(wcs.wcs.cd):
        header[f"CD{i + 1}_{j + 1}"] = float(v)
    return header


def noise_keywords(params: Mapping[str, Any]) -> dict[str, float]:
    """Header keywords of the noise model (``galsep.data.noise``), with ``noise_scale`` folded in.

    The model's variance (sky t + n rn^2) / t^2 scales by s^2 when the sky rate scales by s^2 and the
    read noise by s, so the header describes the scaled noise exactly.
    """
    s = float(params.get("noise_scale", 1.0))
    per_exposure = float(params["exposure_time"]) / int(params["ncombine"])
    keys = {"EXPTIME": float(params["exposure_time"]), "NCOMBINE": int(params["ncombine"])}
    keys["MDRIZSKY"] = float(params["sky_rate"]) * s**2 * per_exposure
    keys.update({f"READNSE{amp}": float(params["read_noise"]) * s for amp in "ABCD"})
    return keys


def primary_header(tile: str, index: int, seed: int, params: Mapping[str, Any]) -> fits.Header:
    """Primary header of a drizzled ACS/WFC F814W tile, marked as synthetic."""
    h = fits.Header()
    h["ORIGIN"] = (f"galsep {__version__}", "software that made this file")
    h["SYNTHETI"] = (True, "GalSim tile made by galsep, not HST data")
    h["TELESCOP"] = ("HST", "telescope used to acquire data")
    h["INSTRUME"] = ("ACS", "identifier for instrument used to acquire data")
    h["DETECTOR"] = ("WFC", "detector in use: WFC, HRC, or SBC")
    h["FILTER1"] = ("CLEAR1L", "element selected from filter wheel 1")
    h["FILTER2"] = ("F814W", "element selected from filter wheel 2")
    h["APERTURE"] = ("WFC", "aperture name")
    h["OBSTYPE"] = ("IMAGING", "observation type")
    h["TARGNAME"] = ("COSMOS", "proposer's target name")
    h["ROOTNAME"] = (tile, "rootname of the observation set")
    h["TILEIDX"] = (index, "galsep tile index")
    h["SIMSEED"] = (seed, "seed of the simulation")
    comments = {
        "EXPTIME": "exposure duration (seconds)--calculated",
        "NCOMBINE": "number of image sets combined",
        "MDRIZSKY": "sky value subtracted per exposure [e-]",
    }
    for key, value in noise_keywords(params).items():
        h[key] = (value, comments.get(key, "readout noise of amplifier [e-]"))
    h["PHOTMODE"] = ("ACS WFC1 F814W", "observation configuration for photometry")
    h["PHOTFLAM"] = (PHOTFLAM, "inverse sensitivity, ergs/cm2/Ang/electron")
    h["PHOTZPT"] = (PHOTZPT, "ST magnitude zero point")
    h["PHOTPLAM"] = (PHOTPLAM, "pivot wavelength (Angstroms)")
    h["PHOTBW"] = (PHOTBW, "RMS bandwidth of filter plus detector")
    return h


def exposure_map(
    shape: tuple[int, int],
    exposure_time: float,
    ncombine: int,
    edge_width: int,
    scale: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """(H, W) float32 WHT map: effective exposure time per pixel [s] of ``ncombine`` dithered exposures.

    Each exposure covers the tile inside a border of ``edge_width`` pixels shifted by its dither (a
    few pixels, so the union is the whole inner area and the outer few pixels get fewer exposures),
    misses a slightly tilted chip-gap strip (2.5") at its own dither position, a few bad columns and
    the pixels its cosmic-ray rejection flagged. Pixel-area changes of drizzling modulate all by ~1%.
    """
    h, w = shape
    per = exposure_time / ncombine
    yy, xx = np.mgrid[:h, :w]
    dither = min(8, max(edge_width // 4, 1)) if ncombine > 1 else 0
    gap = int(max(2, min(round(CHIP_GAP / scale), h // 16)))
    gap_step = int(round(1.2 * gap))
    gap_first = h / 2 - (ncombine - 1) * gap_step / 2 - gap / 2
    slope = rng.uniform(-0.01, 0.01)
    total = np.zeros(shape, dtype=np.float64)
    for k in range(ncombine):
        # the first and last exposures take the extreme dithers, so their union spans the inner area
        if k == 0 or k == ncombine - 1:
            dx = dy = 0 if k == 0 else dither
        else:
            dx, dy = rng.integers(0, dither + 1, size=2)
        cover = (xx >= edge_width + dx) & (xx < w - edge_width - (dither - dx))
        cover &= (yy >= edge_width + dy) & (yy < h - edge_width - (dither - dy))
        if ncombine > 1 or h >= 512:  # a single small exposure is taken to sit on one chip
            g0 = gap_first + k * gap_step + slope * (xx - w / 2)
            cover &= ~((yy >= g0) & (yy < g0 + gap))
        for _ in range(2):  # bad columns over part of the chip
            col, width = rng.integers(0, w), rng.integers(1, 3)
            start, stop = np.sort(rng.integers(0, h, size=2))
            cover[start:stop, col : col + width] = False
        flagged = rng.uniform(size=shape) < 2e-3  # cosmic rays rejected in this exposure
        cover &= ~flagged
        total += per * cover
    phase = rng.uniform(0, 2 * np.pi, size=2)
    area = 1 + 0.01 * np.sin(2 * np.pi * xx / w + phase[0]) * np.cos(2 * np.pi * yy / h + phase[1])
    out = total * area
    border = np.zeros(shape, dtype=bool)
    if edge_width > 0:
        border[:edge_width] = border[-edge_width:] = True
        border[:, :edge_width] = border[:, -edge_width:] = True
    out[border] = 0.0
    return out.astype(np.float32)
