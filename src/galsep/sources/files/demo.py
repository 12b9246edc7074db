"""A demo directory for ``source: files``: synthetic tiles written as a user's drizzled images.

``python -m galsep.sources.files demo DIR`` simulates ``tiles`` synthetic COSMOS tiles
(:func:`galsep.sources.synthetic.make_tile`, the ``source: synthetic`` simulator) and writes them as a
user would have them: ``DIR/field{i:02d}_drz.fits`` (PRIMARY, SCI, WHT; or, with ``separate``, the
weight map in ``field{i:02d}_wht.fits`` beside ``field{i:02d}_sci.fits``), SCI in ``units`` and the
weight map of ``weight_type``, ``DIR/targets.csv`` (columns id, ra, dec, mag) and
``DIR/files.yaml``, the config overlay that runs the workflow on them. The ground truth is not kept:
a files run, like a MAST run, has none.

Conversions (the inverse of :mod:`galsep.sources.files.images`): ``ELECTRONS`` multiplies SCI by EXPTIME,
``erg/s/cm2/A`` by PHOTFLAM; ``IVM`` writes the inverse variance of the noise model, ivar / c^2.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.table import Table, vstack

from galsep.data.noise import inverse_variance, noise_parameters
from galsep.errors import InputError
from galsep.sources.files.images import WEIGHT_TYPES, rate_divisor

__all__ = ["DEMO_PARAMS", "DEMO_UNITS", "write_demo"]

# the synthetic field's settings (workflow/schemas/config.schema.yaml, synthetic:), at a demo's size
DEMO_PARAMS = dict(
    ra=150.1, dec=2.2, exposure_time=2028.0, ncombine=4, sky_rate=0.1, read_noise=5.0, noise_scale=1.0,
    target_mag_range=[20.0, 23.5], interloper_density=5.0, interloper_mag_range=[23.5, 27.0], star_rate=0.3,
    star_mag_range=[17.0, 25.0], cosmic_ray_rate=0.3, hot_pixel_rate=0.0005, edge_width=16, psf_fwhm=0.09,
    pixel_scale=0.05,
)
DEMO_UNITS = ("ELECTRONS/S", "ELECTRONS", "erg/s/cm2/A")


def write_demo(
    directory: str | Path,
    *,
    tiles: int = 2,
    tile_size: int = 256,
    targets_per_tile: int = 10,
    seed: int = 20261123,
    weight_type: str = "EXP",
    units: str = "ELECTRONS/S",
    separate: bool = False,
    cutout_size: int = 32,
) -> Path:
    """Write the demo directory (see the module docstring); returns the path of its ``files.yaml``.

    The overlay names ``directory`` as given, so run the workflow from the directory it is relative to.
    """
    from galsep.sources.synthetic import make_tile

    if weight_type not in WEIGHT_TYPES:
        raise InputError(f"demo: weight type {weight_type!r}; expected one of {', '.join(WEIGHT_TYPES)}")
    if units not in DEMO_UNITS:
        raise InputError(f"demo: units {units!r}; expected one of {', '.join(DEMO_UNITS)}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    params = {**DEMO_PARAMS, "tile_size": tile_size, "targets_per_tile": targets_per_tile, "cutout_size": cutout_size}
    tables = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(tiles):
            name = f"field{i:02d}"
            paths = [Path(tmp) / f"{name}.{ext}" for ext in ("fits", "h5", "ecsv")]
            make_tile(name, i, params, seed, *paths)
            with fits.open(paths[0]) as hdul:
                primary, sci_hdu, wht_hdu = (h.copy() for h in hdul)
            header = primary.header.copy()
            header.extend(sci_hdu.header, unique=True)
            c = rate_divisor(units, header, paths[0])
            weight = np.asarray(wht_hdu.data, dtype=np.float64)
            if weight_type == "IVM":
                # float64: in erg/s/cm2/A an inverse variance (~1e40) overflows float32
                weight = inverse_variance(weight, **noise_parameters(header)).astype(np.float64) / c**2
                wht_hdu.header["BUNIT"] = ("UNITLESS", "inverse variance of SCI (final_wht_type IVM)")
            wht_hdu.data = weight if weight_type == "IVM" else weight.astype(np.float32)
            sci_hdu.data = (np.asarray(sci_hdu.data, dtype=np.float64) * c).astype(np.float32)
            sci_hdu.header["BUNIT"] = units
            if separate:
                fits.HDUList([primary, sci_hdu]).writeto(directory / f"{name}_sci.fits", overwrite=True)
                fits.HDUList([fits.PrimaryHDU(header=primary.header), wht_hdu]).writeto(
                    directory / f"{name}_wht.fits", overwrite=True)
            else:
                fits.HDUList([primary, sci_hdu, wht_hdu]).writeto(directory / f"{name}_drz.fits", overwrite=True)
            tables.append(Table.read(paths[2], format="ascii.ecsv"))
    targets = vstack(tables)
    csv = Table({"id": targets["object_id"], "ra": targets["ra"].value, "dec": targets["dec"].value,
                 "mag": np.round(targets["mag"].value, 3)})
    csv.write(directory / "targets.csv", format="ascii.csv", overwrite=True)
    overlay: dict[str, Any] = {
        "source": "files",
        "files": {
            "directory": str(directory),
            "pattern": "*_sci.fits" if separate else "*_drz.fits",
            "weight_type": weight_type,
            "weight_replace": ["_sci", "_wht"] if separate else None,
            "targets": str(directory / "targets.csv"),
        },
    }
    # JSON values are YAML flow scalars: the overlay needs no YAML writer
    lines = ["# written by python -m galsep.sources.files demo: lay over config.yaml with --configfile",
             f"source: {overlay['source']}", "files:"]
    lines += [f"  {key}: {json.dumps(value)}" for key, value in overlay["files"].items()]
    out = directory / "files.yaml"
    out.write_text("\n".join(lines) + "\n")
    return out
