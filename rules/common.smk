# Helpers shared by the rules: stage settings as JSON, tile lists of each source, the views.
import json


def as_json(**values):
    """Stage settings as one JSON string: params compare it, so a changed value reruns the stage."""
    return json.dumps(values, sort_keys=True)


SYNTHETIC = config["source"] == "synthetic"
VIEWS = ["randoms", "galaxies"] + (
    ["mixed_galaxy", "mixed_random"] if SYNTHETIC else []
)


def tile_names():
    """Names of the synthetic tiles (the mast source defines its own from the MAST query)."""
    return [f"tile{i:03d}" for i in range(config["synthetic"]["tiles"])]


def tile_files(wildcards):
    return expand("resources/tiles/{tile}.fits", tile=tile_names())


def truth_files(wildcards):
    return expand("resources/truth/{tile}.h5", tile=tile_names()) if SYNTHETIC else []
