"""Real data source: HST/ACS COSMOS F814W drizzled tiles from MAST and Galaxy Zoo: Hubble targets.

One module per job; the stages of ``rules/mast.smk`` are ``python -m galsep.sources.mast STAGE``
(:mod:`galsep.sources.mast.__main__`):

- :mod:`~galsep.sources.mast.query` (stage ``query``): ask MAST for the CALACS drizzled images of the
  COSMOS programmes, drop excluded tiles, keep the longest exposure of each pointing, and write the
  products table (:mod:`~galsep.sources.mast.products`, one row per tile).
- :mod:`~galsep.sources.mast.download` (stage ``download``): fetch one drizzled product, resuming,
  retrying with backoff and verifying it, through a download cache.
- :mod:`~galsep.sources.mast.targets` (stage ``targets``): select the Galaxy Zoo: Hubble galaxies with
  COSMOS imaging and assign each to the tile whose real footprint covers it best.
- :mod:`~galsep.sources.mast.errors`: :class:`MastError`, the failures a user can act on.

The settings are the ``mast:`` config section, whose defaults and descriptions live in
``workflow/schemas/config.schema.yaml``. This package's ``__init__`` and its ``products`` and
``errors`` modules import no astropy, torch or h5py: the Snakefile imports them when it is parsed.
"""

from galsep.sources.mast.errors import MastError

__all__ = ["MastError"]
