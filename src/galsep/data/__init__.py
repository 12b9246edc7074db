"""From tiles to what the inference reads: cutouts, the ACS noise model, normalisation, observation
operators and the views (stacked observations with their operators).

The submodules hold the code (import from them); this package module defines only the image pipeline's
sources, which the views write and the Snakefile reads (so it must stay free of heavy imports).
"""

__all__ = ["SOURCES"]

# the image pipeline's sources, in the order of K in every view, draw and catalogue
SOURCES = ("galaxy", "random")
