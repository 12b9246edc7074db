"""What the pipeline publishes: the Zarr catalogue of separated galaxies and its data release."""
