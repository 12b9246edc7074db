"""Shared fixtures: small FITS tiles made with astropy, so data-stage tests need no simulator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from galsep.sources.synthetic.observe import wcs_header


def make_wcs(shape: tuple[int, int], ra: float = 150.1, dec: float = 2.2, rot_deg: float = 17.0) -> WCS:
    """A TAN WCS with CD keywords, 0.05"/pixel, rotated like a real ACS tile."""
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra, dec]
    w.wcs.crpix = [shape[1] / 2 + 0.5, shape[0] / 2 + 0.5]
    scale = 0.05 / 3600
    th = np.deg2rad(rot_deg)
    w.wcs.cd = scale * np.array([[-np.cos(th), np.sin(th)], [np.sin(th), np.cos(th)]])
    return w


def write_tile(path: Path, sci: np.ndarray, wht: np.ndarray, wcs: WCS) -> Path:
    """Write a drizzled-tile-like FITS file with the noise keywords galsep.data.noise needs."""
    primary = fits.PrimaryHDU()
    primary.header.update(
        TELESCOP="HST", INSTRUME="ACS", EXPTIME=2028.0, NCOMBINE=4, MDRIZSKY=50.7,
        READNSEA=5.0, READNSEB=5.0, READNSEC=5.0, READNSED=5.0,
    )
    header = wcs_header(wcs)
    sci_hdu = fits.ImageHDU(sci.astype(np.float32), header=header, name="SCI")
    sci_hdu.header["BUNIT"] = "ELECTRONS/S"
    wht_hdu = fits.ImageHDU(wht.astype(np.float32), header=header, name="WHT")
    fits.HDUList([primary, sci_hdu, wht_hdu]).writeto(path, overwrite=True)
    return path


def gaussian_blob(shape, x, y, sigma=2.0, flux=100.0) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return flux / (2 * np.pi * sigma**2) * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))


@pytest.fixture
def small_tile(tmp_path: Path):
    """A 200x200 tile named 'tileA' with three Gaussian targets and a 10-pixel uncovered border."""
    shape = (200, 200)
    wcs = make_wcs(shape)
    rng = np.random.default_rng(0)
    xy = np.array([[60.3, 70.8], [140.55, 120.27], [100.0, 12.0]])  # the last overhangs the edge
    sci = sum(gaussian_blob(shape, x, y) for x, y in xy) + rng.normal(0, 0.01, shape)
    wht = np.full(shape, 2028.0)
    wht[:10, :] = wht[-10:, :] = wht[:, :10] = wht[:, -10:] = 0.0
    sci[wht == 0] = 0.0
    tiles = tmp_path / "tiles"
    tiles.mkdir()
    path = write_tile(tiles / "tileA.fits", sci, wht, wcs)
    radec = wcs.pixel_to_world_values(xy[:, 0], xy[:, 1])
    targets = Table(
        {"object_id": np.arange(1, 4), "ra": radec[0], "dec": radec[1], "tile": ["tileA"] * 3, "mag": [21.0] * 3}
    )
    targets["ra"].unit = targets["dec"].unit = "deg"
    tpath = tmp_path / "targets.ecsv"
    targets.write(tpath, format="ascii.ecsv")
    return {"tile": path, "targets": tpath, "xy": xy, "wcs": wcs, "shape": shape}


@pytest.fixture
def single_thread():
    """Run a test on one intra-op thread: these tensors are tiny, and on a shared 2-core machine
    torch's thread pool costs more in synchronisation than it gains (measured 2-20x slower)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
