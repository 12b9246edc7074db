"""What the pipeline publishes: the Zarr catalogue of separated galaxies and its data release."""

__all__: list[str] = []  # import from the submodules; nothing is re-exported here
