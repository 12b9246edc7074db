"""A user's drizzled image, written as a tile of the workflow's contract (SCI in e-/s, WHT, WCS).

Every later stage reads tiles with :func:`galsep.data.tiles.read_tile`, which takes SCI [e-/s] and
the celestial WCS from the ``SCI`` extension and derives the inverse variance from the ``WHT``
extension through the ACS noise model of :mod:`galsep.data.noise`:

    var [(e-/s)^2] = (sky_rate t + reads read_noise^2) / t^2,   t = WHT [s],

with ``sky_rate``, ``read_noise`` and the read count from the header (EXPTIME, NCOMBINE, MDRIZSKY,
READNSEA..D). :func:`write_tile` converts one user image to that contract.

**Units of SCI** (``BUNIT``, or ``files.bunit`` when set): SCI [e-/s] = SCI / c with

- c = 1 for a rate in electrons (``ELECTRONS/S``, ``e-/s``, ...: :data:`galsep.data.noise.RATE_UNITS`);
- c = EXPTIME [s] for electrons (``ELECTRONS``: drizzlepac's ``final_units = counts`` scales by EXPTIME);
- c = PHOTFLAM [erg/s/cm^2/A per e-/s] for a flux density in erg/s/cm^2/A (``FLAM`` or any order of
  ``erg/s/cm2/A``, Angstrom spelt out or not).

Any other unit (``COUNTS/S`` is DN on some instruments, Jy, MJy/sr, ...) is refused, naming it.

**Weight map** (``files.weight_type``):

- ``EXP``: an exposure-time map in seconds (drizzlepac ``final_wht_type = EXP``, what the ACS and WFC3
  pipelines write). It is copied as WHT, and the noise comes from the header's keywords through the
  noise model above, exactly as for the MAST tiles; a header without them is refused, naming them.
- ``IVM``: an inverse-variance map in SCI's units^-2 (``final_wht_type = IVM``, what most mosaics and
  high-level science products carry). Converted to e-/s it is ivar = IVM c^2, and written as WHT = ivar
  with the noise keywords EXPTIME = NCOMBINE = MDRIZSKY = 1, READNSE* = 0: the noise model then gives
  var = t / t^2 = 1 / WHT, i.e. the tile describes a sky-limited exposure (1 e-/s/pixel, no read noise)
  whose inverse variance is the map's, so read_tile returns ivar exactly (float32).

Neither weight carries the sources' own Poisson noise or drizzle's pixel correlation (as for MAST).
The tile's primary header keeps the image's keywords and records where it came from (GS* keywords).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from galsep.data.noise import RATE_UNITS, READNOISE_KEYS, NoiseHeaderError, noise_parameters
from galsep.errors import InputError
from galsep.io import atomic_path

__all__ = ["COUNT_UNITS", "WEIGHT_TYPES", "ImageSettings", "is_flam", "rate_divisor", "write_tile"]

WEIGHT_TYPES = ("EXP", "IVM")
COUNT_UNITS = {"electrons", "electron", "e-", "e"}
_NOISE_KEYS = ("EXPTIME", "NCOMBINE", "MDRIZSKY", *READNOISE_KEYS)
# cards astropy writes itself for each HDU (copying them from another HDU's header breaks the file)
_STRUCTURAL = ("SIMPLE", "BITPIX", "NAXIS", "EXTEND", "XTENSION", "PCOUNT", "GCOUNT", "EXTNAME", "EXTVER",
               "BSCALE", "BZERO", "BLANK", "CHECKSUM", "DATASUM")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageSettings:
    """How to read a user's images: see :meth:`from_config`."""

    sci_extension: str
    weight_extension: str
    weight_type: str  # one of WEIGHT_TYPES
    bunit: str | None  # overrides the header's BUNIT

    @classmethod
    def from_config(cls, files: Mapping[str, Any]) -> ImageSettings:
        """The settings of a ``files:`` config section (defaults filled from the schema)."""
        weight_type = str(files["weight_type"]).upper()
        if weight_type not in WEIGHT_TYPES:
            raise InputError(f"files.weight_type = {files['weight_type']!r}; expected one of {', '.join(WEIGHT_TYPES)}")
        bunit = files.get("bunit")
        return cls(
            sci_extension=str(files["sci_extension"]),
            weight_extension=str(files["weight_extension"]),
            weight_type=weight_type,
            bunit=None if bunit is None else str(bunit),
        )


def is_flam(unit: str) -> bool:
    """Whether ``unit`` spells erg/s/cm^2/A (in any order of s, cm2, A; 'FLAM' too)."""
    u = unit.strip().lower().replace(" ", "").replace("**", "").replace("^", "")
    for long, short in (("angstroms", "a"), ("angstrom", "a"), ("ang", "a"), ("ergs", "erg"), ("sec", "s")):
        u = u.replace(long, short)
    if u == "flam":
        return True
    parts = u.replace("(", "").replace(")", "").replace("*", "/").replace(".", "/").split("/")
    return parts[0] == "erg" and sorted(parts[1:]) == ["a", "cm2", "s"]


def rate_divisor(unit: str, header: Mapping[str, Any], path: Path) -> float:
    """c such that SCI [e-/s] = SCI / c for a SCI image in ``unit`` (see the module docstring)."""
    flat = unit.strip().lower().replace(" ", "")
    if flat in RATE_UNITS:
        return 1.0
    if flat in COUNT_UNITS:
        key, what = "EXPTIME", "the exposure time that turns electrons into e-/s"
    elif is_flam(unit):
        key, what = "PHOTFLAM", "the inverse sensitivity [erg/s/cm^2/A per e-/s] that turns the flux density into e-/s"
    else:
        raise InputError(
            f"{path}: SCI is in unknown units BUNIT = {unit!r}; galsep needs e-/s and converts ELECTRONS (with"
            " EXPTIME) and erg/s/cm^2/A (with PHOTFLAM). Convert the image to one of those, or set files.bunit if"
            " the header's BUNIT is wrong"
        )
    try:
        value = float(header[key])
    except (KeyError, TypeError, ValueError):
        value = float("nan")
    if not np.isfinite(value) or value <= 0:
        raise InputError(
            f"{path}: SCI is in {unit!r} but the header has no positive {key}, {what}; add {key} to the header"
            " or convert the image to e-/s"
        )
    return value


def _hdu(hdul: fits.HDUList, name: str, path: Path, key: str, what: str) -> fits.ImageHDU | fits.PrimaryHDU:
    names = [h.name for h in hdul]
    if name.upper() not in names:
        hint = (" or give separate weight files (files.weight_replace)" if key == "files.weight_extension"
                else "")
        raise InputError(
            f"{path}: no extension {name!r} with {what} (it has {names}); set {key} to the extension that holds"
            f" {what}{hint}"
        )
    hdu = hdul[name]
    if hdu.data is None:
        raise InputError(f"{path}: extension {name!r} holds no image ({what}); set {key}")
    return hdu


def _image(hdu: fits.ImageHDU | fits.PrimaryHDU, path: Path, what: str) -> np.ndarray:
    """(H, W) float64 of an image HDU (an IVM map in erg/s/cm2/A units^-2 overflows float32); leading axes
    of length 1 are dropped."""
    data = np.asarray(hdu.data, dtype=np.float64)
    while data.ndim > 2 and data.shape[0] == 1:
        data = data[0]
    if data.ndim != 2:
        raise InputError(f"{path}: the {what} image has shape {data.shape}; a single-band 2-D image is needed")
    return data


def _cards(header: fits.Header, drop: tuple[str, ...] = ()) -> fits.Header:
    out = fits.Header()
    for card in header.cards:
        key = card.keyword
        if key.startswith(_STRUCTURAL) or key in drop:
            continue
        out.append(card)
    return out


def write_tile(image: str | Path, weight: str | Path | None, out: str | Path, settings: ImageSettings) -> None:
    """Write the tile ``out`` (PRIMARY, SCI [e-/s] with the image's WCS, WHT) from one user image.

    Args:
        image: FITS file with the science image in extension ``settings.sci_extension``.
        weight: separate FITS file of the weight map, or None when it is an extension of ``image``;
            either way the extension is ``settings.weight_extension``.
        out: the tile, written atomically.
    Raises :class:`~galsep.errors.InputError` naming the file: an unreadable file, a missing extension or
    weight map, unknown units, no celestial WCS, weight and image of different shapes, no positive weight,
    or (EXP) a header without the noise model's keywords.
    """
    image, out = Path(image), Path(out)
    weight_file = Path(weight) if weight is not None else image
    try:
        with fits.open(image, memmap=False) as hdul:
            sci_hdu = _hdu(hdul, settings.sci_extension, image, "files.sci_extension", "the science image")
            sci = _image(sci_hdu, image, "science")
            primary = hdul[0].header.copy()
            sci_header = sci_hdu.header.copy()
            if weight is None:
                wht = _image(_hdu(hdul, settings.weight_extension, image, "files.weight_extension",
                                  "the weight map"), image, "weight")
        if weight is not None:
            with fits.open(weight_file, memmap=False) as hdul:
                wht = _image(_hdu(hdul, settings.weight_extension, weight_file, "files.weight_extension",
                                  "the weight map"), weight_file, "weight")
    except InputError:
        raise
    except (OSError, ValueError, TypeError) as err:
        raise InputError(f"{weight_file if weight is not None else image}: cannot read the FITS file"
                         f" ({type(err).__name__}: {err}); is it a FITS image?") from err
    if wht.shape != sci.shape:
        raise InputError(f"{weight_file}: the weight map {wht.shape} and the science image {sci.shape} of {image}"
                         " differ in shape; they must be the same pixels")
    wcs = WCS(sci_header, naxis=2)
    if not wcs.has_celestial:
        raise InputError(f"{image}: the science extension's header has no celestial WCS (CTYPE RA---/DEC--);"
                         " galsep needs the sky position of every pixel")
    wht = np.where(np.isfinite(wht), wht, 0.0)
    if not np.any(wht > 0):
        raise InputError(f"{weight_file}: the weight map ({settings.weight_extension}) has no positive value, so no"
                         " pixel is observed; is it the right extension (files.weight_extension)?")

    merged = primary.copy()  # as read_tile reads them: primary first, then SCI
    merged.extend(sci_header, unique=True)
    unit = settings.bunit if settings.bunit is not None else merged.get("BUNIT")
    if unit is None:
        raise InputError(f"{image}: the header has no BUNIT, so the units of SCI are unknown; set files.bunit"
                         " (e.g. ELECTRONS/S)")
    c = rate_divisor(str(unit), merged, image)
    sci = (sci / c).astype(np.float32)

    primary = _cards(primary, drop=("BUNIT",))
    sci_header = _cards(sci_header, drop=("BUNIT",))
    if settings.weight_type == "IVM":
        # the noise model with these keywords gives ivar = WHT exactly (module docstring)
        wht = wht * c**2
        for key in _NOISE_KEYS:
            sci_header.remove(key, ignore_missing=True, remove_all=True)
        primary.update(EXPTIME=1.0, NCOMBINE=1, MDRIZSKY=1.0, **{k: 0.0 for k in READNOISE_KEYS})
        primary.add_history("galsep source files: WHT holds the inverse variance [(e-/s)^-2] of the IVM map;")
        primary.add_history("EXPTIME, NCOMBINE, MDRIZSKY, READNSE* are set so the noise model gives 1/WHT")
    else:
        check = primary.copy()
        check.extend(sci_header, unique=True)
        check["BUNIT"] = "ELECTRONS/S"
        try:
            noise_parameters(check)
        except NoiseHeaderError as err:
            raise InputError(
                f"{image}: {err}: with files.weight_type EXP (an exposure-time map) the noise comes from the header's"
                f" {', '.join(_NOISE_KEYS[:3])} and {'/'.join(READNOISE_KEYS)} (galsep.data.noise). Add them, or give"
                " an inverse-variance map and set files.weight_type: IVM"
            ) from err
    primary["GSSOURCE"] = ("files", "galsep source: a user's image")
    primary["GSIMAGE"] = (image.name[-68:], "the user's image file")
    primary["GSWEIGHT"] = ((weight_file.name if weight is not None else "")[-68:], "separate weight file, if any")
    primary["GSWEXT"] = (settings.weight_extension, "extension of the weight map")
    primary["GSWTYPE"] = (settings.weight_type, "EXP: exposure time [s]; IVM: inverse variance")
    primary["GSBUNIT"] = (str(unit)[:68], "the image's units, converted to e-/s")
    primary["GSRATEDV"] = (c, "SCI [e-/s] = image / GSRATEDV")
    sci_header["BUNIT"] = ("ELECTRONS/S", "brightness units")
    wht_header = wcs.to_header()
    wht_header["BUNIT"] = ("UNITLESS", "EXP: exposure time [s]; IVM: see HISTORY")
    hdul = fits.HDUList([fits.PrimaryHDU(header=primary), fits.ImageHDU(sci, header=sci_header, name="SCI"),
                         fits.ImageHDU(wht.astype(np.float32), header=wht_header, name="WHT")])
    with atomic_path(out) as tmp:
        hdul.writeto(tmp, output_verify="fix")
    log.info("%s -> %s: %d x %d pixels, SCI / %g to e-/s, %s weights", image, out, sci.shape[1], sci.shape[0], c,
             settings.weight_type)
