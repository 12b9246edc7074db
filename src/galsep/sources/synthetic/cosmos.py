"""Real HST COSMOS galaxy morphologies from a GalSim RealGalaxyCatalog (``synthetic.galaxies: cosmos``).

A catalogue galaxy is its HST F814W image at 0.03"/pixel with its own PSF. GalSim's ``RealGalaxy``
deconvolves the image by that PSF; convolving with the tile's PSF and drawing at 0.05"/pixel gives the
galaxy as the tile's camera would see it (Mandelbaum et al. 2012, Rowe et al. 2015 sect. 6):
I_tile = P_tile * (P_hst^-1 * I_hst), band-limited by the HST PSF's maxk.

Choices, each for a reason:

- **Noise.** The stamps carry COSMOS noise at about 0.4 of the tile's sky sigma (the same 2028 s
  depth, drizzled finer). Rescaling a galaxy to a brighter magnitude scales that noise with it, and
  interlopers' noise would add to the tile's (so the WHT noise model would no longer be exact). So
  (a) each galaxy of magnitude m is drawn from the catalogue galaxies within ``MATCH_WINDOW`` mag
  of m (the nearest one when there are none): the flux factor stays near 1 and the catalogue's
  size-magnitude relation is kept; (b) the stamp is cleaned: pixels outside the galaxy's footprint
  (the connected region of the stamp smoothed by a ``SMOOTH_SIGMA``-pixel Gaussian above ``DETECT``
  times its own robust noise, grown by ``GROW`` pixels) are set to zero. Inside the footprint the real
  noise stays (it is part of the galaxy's truth); no noise padding (``noise_pad_size=0``), no
  whitening.
- **Flux.** The drawn stamp is scaled so that its sum is exactly the requested flux (the magnitude
  the population drew); without it a stamp would miss the PSF wings beyond ``render.PSF_MARGIN``
  (~1.5%) and the light below the footprint threshold.
- **Centre and orientation.** The profile is shifted so that the cleaned image's light centroid is at
  the drawn position, and rotated by a uniform angle.
- **Size and shape** for the target table are measured on the cleaned HST image (before the tile's PSF,
  with HST's own ~0.1" PSF in it): second moments give b/a and the major axis, and the half-light
  radius is the circularised radius sqrt(q x'^2 + y'^2 / q) holding half of the light, as for the
  parametric galaxies.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import galsim
import numpy as np
from astropy.io import fits
from scipy import ndimage

from galsep.errors import InputError
from galsep.sources.synthetic import render

__all__ = ["CATALOGUE_PATTERN", "MATCH_WINDOW", "SMOOTH_SIGMA", "DETECT", "GROW", "Cleaned", "RealGalaxies",
           "find_catalogue", "open_catalogue", "pick", "clean", "CosmosSample"]

CATALOGUE_PATTERN = "real_galaxy_catalog_*.fits"  # GalSim's downloads and the BTK extension sample
MATCH_WINDOW = 0.5  # mag: catalogue galaxies this close to the requested magnitude are candidates
SMOOTH_SIGMA = 1.5  # HST pixels (0.045"): about the HST PSF's sigma, so detection follows the light
DETECT = 2.0  # threshold of the footprint, in robust sigma of the smoothed stamp
GROW = 2  # HST pixels by which the footprint is grown, so its edge sits below the noise


def find_catalogue(directory: str | Path, file_name: str | None = None) -> Path:
    """The RealGalaxyCatalog FITS file in ``directory`` (``synthetic.cosmos_dir``).

    With ``file_name`` (``synthetic.cosmos_catalog``) that file; otherwise the one file matching
    ``real_galaxy_catalog_*.fits`` that is not a companion table (``*_fits.fits``, ``*_selection.fits``),
    preferring a main catalogue to an ``*_example*`` one.
    """
    d = Path(directory)
    if not d.is_dir():
        raise InputError(
            f"synthetic.cosmos_dir = {str(directory)!r}: no such directory (relative paths are from the directory"
            " Snakemake runs in); download a sample with `galsim_download_cosmos -s 23.5 -d DIR` and point"
            " synthetic.cosmos_dir at the folder holding real_galaxy_catalog_23.5.fits"
        )
    if file_name is not None:
        path = d / file_name
        if not path.is_file():
            raise InputError(f"synthetic.cosmos_catalog = {file_name!r}: no such file in {d}")
        return path
    found = sorted(p for p in d.glob(CATALOGUE_PATTERN) if not p.name.endswith(("_fits.fits", "_selection.fits")))
    main = [p for p in found if "_example" not in p.name]
    candidates = main or found
    if not candidates:
        raise InputError(
            f"synthetic.cosmos_dir = {str(directory)!r}: no GalSim RealGalaxyCatalog ({CATALOGUE_PATTERN}) in"
            " it; it should hold the files of `galsim_download_cosmos` (catalogue, galaxy and PSF images)"
        )
    if len(candidates) > 1:
        names = ", ".join(p.name for p in candidates)
        raise InputError(f"{d}: several RealGalaxyCatalogs ({names}); name one in synthetic.cosmos_catalog")
    return candidates[0]


def open_catalogue(directory: str | Path, file_name: str | None = None) -> galsim.RealGalaxyCatalog:
    """Open and check the GalSim RealGalaxyCatalog of ``directory``; InputError when it is not one."""
    path = find_catalogue(directory, file_name)
    try:
        with fits.open(path) as hdul:
            columns = set(hdul[1].columns.names)
    except Exception as err:  # astropy raises many types for a file that is not a FITS table
        raise InputError(f"{path}: not a FITS table ({err}); synthetic.cosmos_dir needs GalSim's COSMOS files") from err
    needed = {"IDENT", "MAG", "GAL_FILENAME", "PSF_FILENAME", "GAL_HDU", "PSF_HDU", "PIXEL_SCALE", "NOISE_VARIANCE"}
    if not needed <= columns:
        raise InputError(
            f"{path}: not a GalSim RealGalaxyCatalog (lacks columns {sorted(needed - columns)}); synthetic.cosmos_dir"
            " needs the files of `galsim_download_cosmos`"
        )
    catalogue = galsim.RealGalaxyCatalog(file_name=path.name, dir=str(path.parent))
    missing = sorted({str(n) for n in (*catalogue.gal_file_name, *catalogue.psf_file_name) if not Path(n).is_file()})
    if missing:
        raise InputError(f"{path}: the catalogue's image files are missing: {', '.join(missing[:3])}")
    if catalogue.nobjects == 0:
        raise InputError(f"{path}: the RealGalaxyCatalog holds no galaxies")
    return catalogue


@dataclass(frozen=True)
class RealGalaxies:
    """Which catalogue galaxy each galaxy of a population is, and how it is turned; shape (N,) each.

    index: row of the RealGalaxyCatalog; angle: rotation counter-clockwise from the catalogue image [rad].
    """

    index: np.ndarray
    angle: np.ndarray


def pick(rng: np.random.Generator, mags: np.ndarray, catalogue_mags: np.ndarray) -> RealGalaxies:
    """Draw a catalogue galaxy for every magnitude in ``mags`` (N,) and a uniform rotation.

    Candidates are the galaxies within ``MATCH_WINDOW`` mag of the requested one, drawn uniformly;
    where there are none, the nearest in magnitude.
    """
    cat = np.asarray(catalogue_mags, dtype=np.float64)
    u = rng.uniform(size=len(mags))
    angle = rng.uniform(0.0, 2 * np.pi, size=len(mags))
    index = np.empty(len(mags), dtype=np.int64)
    for k, m in enumerate(np.asarray(mags, dtype=np.float64)):
        pool = np.flatnonzero(np.abs(cat - m) <= MATCH_WINDOW)
        if not len(pool):
            pool = np.array([int(np.argmin(np.abs(cat - m)))])
        index[k] = pool[min(int(u[k] * len(pool)), len(pool) - 1)]
    return RealGalaxies(index, angle)


@dataclass(frozen=True)
class Cleaned:
    """One catalogue galaxy's cleaned HST stamp and what is measured on it.

    image: (h, w) float64 [e-/s per HST pixel], zero outside the footprint; scale [arcsec/pixel];
    offset: light centroid from the image's centre (x, y) [arcsec]; reach: farthest footprint pixel
    from the centroid [arcsec]; hlr: circularised half-light radius [arcsec]; q: axis ratio b/a;
    beta: major axis from the +x axis, counter-clockwise [rad].
    """

    image: np.ndarray
    scale: float
    offset: tuple[float, float]
    reach: float
    hlr: float
    q: float
    beta: float


def clean(image: np.ndarray, scale: float) -> Cleaned:
    """Zero the noise outside the central galaxy's footprint of an HST stamp (h, w) and measure it."""
    img = np.asarray(image, dtype=np.float64)
    smooth = ndimage.gaussian_filter(img, SMOOTH_SIGMA, mode="constant")
    sigma = 1.4826 * np.median(np.abs(smooth - np.median(smooth)))  # robust: the stamp is mostly sky
    labels, n = ndimage.label(smooth > DETECT * max(sigma, 1e-30))
    h, w = img.shape
    centre = labels[h // 2, w // 2]
    if centre == 0 and n:  # the centre pixel below threshold: the component with the most light
        centre = 1 + int(np.argmax(ndimage.sum(img, labels, index=np.arange(1, n + 1))))
    if centre == 0:
        mask = np.ones_like(img, dtype=bool)  # nothing detected: keep the stamp as it is
    else:
        mask = ndimage.binary_dilation(labels == centre, iterations=GROW)
    # a soft edge (the mask smoothed by one pixel): a hard one rings across the stamp once deconvolved
    out = img * ndimage.gaussian_filter(mask.astype(np.float64), 1.0)
    mask = out != 0
    yy, xx = np.mgrid[:h, :w].astype(np.float64)
    wgt = np.clip(out, 0.0, None)
    total = wgt.sum()
    cx, cy = (wgt * xx).sum() / total, (wgt * yy).sum() / total
    dx, dy = xx - cx, yy - cy
    qxx, qyy, qxy = ((wgt * dx * dx).sum() / total, (wgt * dy * dy).sum() / total, (wgt * dx * dy).sum() / total)
    lam = np.linalg.eigvalsh(np.array([[qxx, qxy], [qxy, qyy]]))
    q = float(np.sqrt(max(lam[0], 0.0) / lam[1])) if lam[1] > 0 else 1.0
    beta = float(0.5 * np.arctan2(2 * qxy, qxx - qyy)) % np.pi
    major, minor = np.cos(beta) * dx + np.sin(beta) * dy, -np.sin(beta) * dx + np.cos(beta) * dy
    r = np.sqrt(q * major**2 + minor**2 / max(q, 1e-6))[mask]
    order = np.argsort(r)
    cum = np.cumsum(out[mask][order])
    hlr = float(r[order][np.searchsorted(cum, 0.5 * cum[-1])]) if cum[-1] > 0 else 0.0
    reach = float(np.hypot(dx, dy)[mask].max())
    return Cleaned(out, scale, ((cx - (w - 1) / 2) * scale, (cy - (h - 1) / 2) * scale), reach * scale,
                   hlr * scale, q, beta)


class CosmosSample:
    """The galaxies of one RealGalaxyCatalog, cleaned and built into GalSim profiles once each.

    Made per tile (no module state); ``mags`` (M,) are the catalogue's F814W magnitudes.
    """

    def __init__(self, catalogue: galsim.RealGalaxyCatalog) -> None:
        self.catalogue = catalogue
        self.mags = np.asarray(catalogue.mag, dtype=np.float64)
        self.ident = np.asarray(catalogue.ident).astype(str)
        self._cleaned: dict[int, Cleaned] = {}
        self._profiles: dict[int, galsim.GSObject] = {}

    def cleaned(self, i: int) -> Cleaned:
        """The cleaned stamp of catalogue galaxy ``i`` (cached)."""
        if i not in self._cleaned:
            image = self.catalogue.getGalImage(i)
            self._cleaned[i] = clean(image.array, float(image.scale))
        return self._cleaned[i]

    def _profile(self, i: int) -> galsim.GSObject:
        """Unit-flux RealGalaxy of catalogue galaxy ``i`` (deconvolved by its PSF), light centroid at 0."""
        if i not in self._profiles:
            c = self.cleaned(i)
            noise, scale, var = self.catalogue.getNoiseProperties(i)
            parts = (galsim.Image(c.image, scale=c.scale), self.catalogue.getPSFImage(i), noise, scale, var)
            real = galsim.RealGalaxy(parts, flux=1.0, noise_pad_size=0)
            self._profiles[i] = real.shift(-c.offset[0], -c.offset[1])
        return self._profiles[i]

    def profile(self, gals: RealGalaxies, i: int, flux: float) -> galsim.GSObject:
        """Profile of population galaxy ``i`` before the tile's PSF: flux [e-/s], turned by its angle."""
        k = int(gals.index[i])
        return self._profile(k).rotate(float(gals.angle[i]) * galsim.radians).withFlux(float(flux))

    def half_size(self, gals: RealGalaxies, i: int, scale: float) -> int:
        """Stamp half-size [tile pixels] holding galaxy ``i``'s footprint plus the PSF margin."""
        reach = self.cleaned(int(gals.index[i])).reach / scale
        return int(min(np.ceil(reach) + render.PSF_MARGIN, render.MAX_HALF))

    def shapes(self, gals: RealGalaxies) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Half-light radius [arcsec], axis ratio b/a and major axis from +x [rad, in [0, pi)], each (N,)."""
        c = [self.cleaned(int(k)) for k in gals.index]
        hlr = np.array([x.hlr for x in c], dtype=np.float64)
        q = np.array([x.q for x in c], dtype=np.float64)
        beta = (np.array([x.beta for x in c], dtype=np.float64) + gals.angle) % np.pi
        return hlr, q, beta
