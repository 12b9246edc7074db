"""Bring your own images (``source: files``): a directory of drizzled FITS images and a target table.

The stages of ``rules/files.smk`` are ``python -m galsep.sources.files STAGE``
(:mod:`galsep.sources.files.__main__`); they write the same files as the MAST source, so the cutouts
and every later stage run unchanged:

- :mod:`~galsep.sources.files.layout`: which images and weight files ``files.directory`` holds and their
  tile names (read when the Snakefile is parsed; imports no astropy).
- :mod:`~galsep.sources.files.images` (stage ``tile``): one image to ``resources/tiles/{tile}.fits``,
  SCI converted to e-/s, the weight map (exposure time ``EXP`` or inverse variance ``IVM``) to the WHT
  the ACS noise model of :mod:`galsep.data.noise` reads.
- :mod:`~galsep.sources.files.targets` (stage ``targets``): the target table to ``resources/targets.ecsv``,
  each target on the image that covers it; those outside every image are listed.
- :mod:`~galsep.sources.files.demo` (command ``demo DIR``): a demo directory made from synthetic tiles.

The settings are the ``files:`` config section (defaults and meanings in
``workflow/schemas/config.schema.yaml``). This ``__init__`` and ``layout`` import no astropy, torch or h5py.
"""

__all__: list[str] = []  # import from the submodules; nothing is re-exported here
