"""Which files a ``source: files`` run reads: the images in ``files.directory`` and their weight maps.

The Snakefile calls :func:`find_images` when it is parsed (the tile list of ``source: files`` is known
before any job runs, unlike MAST's), so this module imports no astropy, torch or h5py.

An image is a file in ``files.directory`` whose name matches ``files.pattern`` (a shell glob, not
recursive). Its tile name, the ``{tile}`` of ``resources/tiles/{tile}.fits``, is the file name without
its FITS suffix (``.fits``, ``.fit``, ``.fts``, each optionally ``.gz``). Its weight map is extension
``files.weight_extension`` of the image itself, or, with ``files.weight_replace = [a, b]``, of the file
in the same directory named like the image with the last ``a`` replaced by ``b`` (``x_sci.fits`` ->
``x_wht.fits`` for ``[_sci, _wht]``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from galsep.errors import InputError

__all__ = ["FITS_SUFFIXES", "TILE_NAME", "Image", "find_images", "target_table", "tile_name", "weight_path"]

FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fts.gz")
TILE_NAME = re.compile(r"[A-Za-z0-9_.\-]+")  # the Snakefile's {tile} wildcard constraint


@dataclass(frozen=True)
class Image:
    """One user image: its tile name, the image file and the separate weight file (None: in the image)."""

    tile: str
    image: Path
    weight: Path | None


def tile_name(path: Path) -> str:
    """The tile name of an image file: its name without the FITS suffix."""
    name = path.name
    for suffix in sorted(FITS_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def weight_path(image: Path, replace: tuple[str, str]) -> Path:
    """The separate weight file of ``image``: its name with the last ``replace[0]`` replaced by ``replace[1]``."""
    old, new = replace
    name = image.name
    at = name.rfind(old)
    if not old or at < 0:
        raise InputError(
            f"{image}: its name has no {old!r} to replace by {new!r} (files.weight_replace), so its weight file"
            " cannot be named; set files.weight_replace to the parts that differ between an image's name and its"
            " weight file's name, or null when the weight map is an extension of the image (files.weight_extension)"
        )
    return image.with_name(name[:at] + new + name[at + len(old) :])


def find_images(files: Mapping[str, Any]) -> dict[str, Image]:
    """The images of a ``files:`` config section, by tile name (sorted), with their weight files.

    Raises :class:`~galsep.errors.InputError` naming the directory or file and the key to change: no such
    directory, no file matching the pattern, two images with one tile name or a name the workflow's tile
    wildcard refuses, a separate weight file that does not exist, or a pattern that matches weight files too.
    """
    directory = Path(str(files["directory"]))
    pattern = str(files["pattern"])
    if not directory.is_dir():
        raise InputError(
            f"files.directory {directory}: no such directory; set files.directory to the directory of your drizzled"
            " FITS images (or make a demo one: python -m galsep.sources.files demo DIR)"
        )
    paths = sorted(p for p in directory.glob(pattern) if p.is_file())
    if not paths:
        present = sorted(p.name for p in directory.iterdir())[:8]
        raise InputError(
            f"files.directory {directory}: no file matches files.pattern {pattern!r} (the directory holds"
            f" {', '.join(present) if present else 'nothing'}{', ...' if len(present) == 8 else ''}); set"
            " files.pattern to a glob of your images' names, e.g. '*_drz.fits'"
        )
    replace = files.get("weight_replace")
    if replace is not None:
        old, new = str(replace[0]), str(replace[1])
        weights = {weight_path(p, (old, new)) for p in paths if old and old in p.name}
        both = [str(p) for p in paths if p in weights]
        if both:
            raise InputError(
                f"files.pattern {pattern!r} matches weight files too ({', '.join(both[:3])}); narrow it to the"
                f" science images, e.g. '*{old}.fits'"
            )
    images: dict[str, Image] = {}
    for path in paths:
        name = tile_name(path)
        if not TILE_NAME.fullmatch(name):
            raise InputError(
                f"{path}: the tile name {name!r} (the file name without .fits) may hold only letters, digits and"
                " _ . -; rename the file"
            )
        if name in images:
            raise InputError(f"{path} and {images[name].image} have the same tile name {name!r}; rename one")
        weight = None
        if replace is not None:
            weight = weight_path(path, (str(replace[0]), str(replace[1])))
            if not weight.is_file():
                raise InputError(
                    f"{path}: its weight map {weight} does not exist (files.weight_replace = {list(replace)});"
                    " add the weight file, or fix files.weight_replace, or set it to null when the weight map is"
                    " an extension of the image"
                )
        images[name] = Image(tile=name, image=path, weight=weight)
    return images


def target_table(files: Mapping[str, Any]) -> str:
    """The target table of a ``files:`` config section, checked to exist when the workflow is parsed (else
    Snakemake would only say that an input of rule files_targets is missing)."""
    path = Path(str(files["targets"]))
    if not path.is_file():
        raise InputError(f"files.targets {path}: no such file; set files.targets to your target table (ECSV, CSV or"
                         " FITS with id, ra, dec columns)")
    return str(path)
