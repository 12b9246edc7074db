"""Where tiles come from: the synthetic COSMOS field (``synthetic``), HST/ACS tiles from MAST (``mast``)
or a directory of the user's own drizzled images (``files``).

Every source writes the same contract: tiles (SCI/WHT with WCS) and a target table (id, ra, dec, tile).
"""

__all__: list[str] = []  # import from the submodules; nothing is re-exported here
