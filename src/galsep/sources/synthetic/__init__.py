"""Synthetic COSMOS source: GalSim tiles that look to the code like HST ACS/WFC F814W drizzled tiles.

``make_tile`` writes one tile, its ground truth and its targets; ``contamination_fractions``
measures how much of a cutout's light is not the target's own.
"""

from galsep.sources.synthetic.contamination import contamination_fractions
from galsep.sources.synthetic.tile import make_tile

__all__ = ["contamination_fractions", "make_tile"]
