# Helpers shared by the rules: stage settings as JSON, tile lists of each source, the views.
import functools
import json
import os


def as_json(**values):
    """Stage settings as one JSON string: params compare it, so a changed value reruns the stage."""
    return json.dumps(values, sort_keys=True)


MANIFOLD = config["experiment"] == "manifold"
SYNTHETIC = config["source"] == "synthetic"
FILES = config["source"] == "files"
VIEWS = ["randoms", "galaxies"] + (
    ["mixed_galaxy", "mixed_random"] if SYNTHETIC else []
)


def tile_names():
    """Names of the tiles: the synthetic ones, the user's images, or those the MAST query chose (after
    its checkpoint)."""
    if SYNTHETIC:
        return [f"tile{i:03d}" for i in range(config["synthetic"]["tiles"])]
    if FILES:
        return list(FILES_IMAGES)
    return list(_products(checkpoints.mast_products.get().output[0])["tile"])


def tile_files(wildcards):
    return expand("resources/tiles/{tile}.fits", tile=tile_names())


def truth_files(wildcards):
    return expand("resources/truth/{tile}.h5", tile=tile_names()) if SYNTHETIC else []


# EM chains (see galsep.workflow): which views each learns from, which sources it trains or takes frozen.
from galsep.workflow import chains, method_kinds

CHAINS = {c.name: c for c in chains(config["em"]["schedule"], VIEWS)}
LAPS = config["em"]["laps"]


def prior_file(chain, lap):
    return f"results/prior/{chain}/" + (
        "gaussian.pt" if int(lap) == 0 else f"lap{lap}.pt"
    )


def final_prior(source):
    """The last prior of a source: its own chain in the contrastive schedule, the joint chain else."""
    return prior_file(source if source in CHAINS else "joint", LAPS)


def chain_views(wildcards):
    return expand("results/views/{view}.h5", view=CHAINS[wildcards.chain].views)


def frozen_priors(wildcards):
    return [final_prior(s) for s in CHAINS[wildcards.chain].frozen]


def chain_params(**sections):
    """Settings of an EM stage: the chain layout plus the given config sections."""
    return as_json(
        seed=config["seed"],
        device=config["device"],
        precision=config["precision"],
        schedule=config["em"]["schedule"],
        views=VIEWS,
        diffusion=config["diffusion"],
        clip=config["views"]["clip"],
        **sections,
    )


# Separation methods (the registry of galsep.methods): the catalogue's, and the peers compared beside it.
KINDS = method_kinds()
METHOD = config["method"]
COMPARE = config["compare"] if SYNTHETIC else []


def uses_priors(method):
    return KINDS[method]["uses_priors"]


def method_settings(method):
    """A method's settings: methods.{method}, or its own top-level section (DDPRISM's: posterior)."""
    section = KINDS[method]["section"]
    if section == "methods":
        return config["methods"][method]
    return {k: v for k, v in config[section].items() if k != "shards"}


def method_params(method):
    return as_json(
        seed=config["seed"],
        device=config["device"],
        precision=config["precision"],
        diffusion=config["diffusion"],
        clip=config["views"]["clip"],
        settings=method_settings(method),
    )


def method_shards(method):
    """The diffusion methods sample in parallel shards; the others are quick in one job."""
    return config["posterior"]["shards"] if uses_priors(method) else 1


def method_priors(method):
    return [final_prior("galaxy"), final_prior("random")] if uses_priors(method) else []


def method_model(method):
    return f"results/baselines/{method}.pt" if KINDS[method]["fitted"] else []


def method_weights(method):
    """The files a method's draws depend on: its priors or its fitted model."""
    return method_priors(method) or (
        [method_model(method)] if KINDS[method]["fitted"] else []
    )


def separation_shards(method):
    return expand(
        "results/posterior/{method}/shard{shard}.pt",
        method=method,
        shard=range(method_shards(method)),
    )


def method_benchmarks(method):
    """Benchmark files of a method's jobs: its fit (the shared EM for diffusion methods) and shards."""
    if uses_priors(method):
        # the last lap's prior is the final one: E-steps run after laps 1 .. LAPS - 1 only
        fit = expand("logs/benchmark/prior/{c}/gaussian.tsv", c=CHAINS)
        fit += expand(
            "logs/benchmark/prior/{c}/lap{k}.tsv", c=CHAINS, k=range(1, LAPS + 1)
        )
        fit += expand(
            "logs/benchmark/prior/{c}/estep{k}/shard{i}.tsv",
            c=CHAINS,
            k=range(1, LAPS),
            i=range(config["em"]["shards"]),
        )
    elif KINDS[method]["fitted"]:
        fit = [f"logs/benchmark/baselines/{method}.tsv"]
    else:
        fit = []
    separate = [
        f"logs/benchmark/posterior/{method}/shard{i}.tsv"
        for i in range(method_shards(method))
    ]
    return {"fit": fit, "separate": separate}


def catalogue_config():
    """The config the catalogue records: everything but the settings of methods it was not made by
    (so that tuning a peer of the comparison does not remake the catalogue)."""
    recorded = {k: v for k, v in config.items() if k not in ("compare", "methods")}
    if METHOD in config["methods"]:
        recorded["methods"] = {METHOD: config["methods"][METHOD]}
    return recorded


def final_outputs():
    outputs = ["results/catalogue.zarr"]
    if SYNTHETIC:
        outputs += ["results/metrics.json", "results/figures/posterior.png"]
    if COMPARE:
        outputs += ["results/compare/table.json"]
    return outputs


# The MAST source (rules/mast.smk): its settings, and the products table its checkpoint writes. The
# mast section's defaults come from workflow/schemas/config.schema.yaml (filled in by the Snakefile's
# validate); the products module imports no astropy or torch, so parsing stays light.
from galsep.sources.mast.products import read_products

MAST = config["mast"]
MAST_PRODUCTS = "resources/mast/products.ecsv"


@functools.lru_cache(maxsize=4)
def _products_cached(path, mtime_ns):
    table = read_products(path)
    return table, {str(t): row for t, row in zip(table["tile"], table)}


def _products(path):
    return _products_cached(path, os.stat(path).st_mtime_ns)[0]


def mast_download_params(wildcards):
    """Settings of one tile's download: its product (the tile's row of the products table, read after
    the checkpoint) and the mast.download section."""
    path = checkpoints.mast_products.get().output[0]
    row = _products_cached(path, os.stat(path).st_mtime_ns)[1][wildcards.tile]
    return as_json(uri=str(row["dataURI"]), size=int(row["size"]), **MAST["download"])


# Your own images (source: files, rules/files.smk): found when the workflow is parsed, so a missing
# directory or weight file fails before any job (galsep.sources.files.layout imports no astropy).
from galsep.sources.files.layout import find_images, target_table

FILES_IMAGES = find_images(config["files"]) if FILES and not MANIFOLD else {}
FILES_TARGETS = target_table(config["files"]) if FILES and not MANIFOLD else None


def files_image(wildcards):
    """The user's image of a tile, and its separate weight file when it has one."""
    image = FILES_IMAGES[wildcards.tile]
    return {
        "image": str(image.image),
        "weight": [str(image.weight)] if image.weight else [],
    }
