"""From tiles to what the inference reads: cutouts, the ACS noise model, normalisation, observation
operators and the views (stacked observations with their operators)."""

__all__: list[str] = []  # import from the submodules; nothing is re-exported here
