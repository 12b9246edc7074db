"""Bad configs fail before any job runs, naming the key and the reason."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import update_config, validate

from workflow import copy_workflow, snakemake


@pytest.fixture(scope="module")
def wf(tmp_path_factory):
    return copy_workflow(tmp_path_factory.mktemp("wf"))


@pytest.mark.parametrize(
    "override, key, reason",
    [
        ("cutouts: {size: big}", "size", "is not of type 'integer'"),  # wrong type
        ("colour: blue", "colour", "Additional properties are not allowed"),  # unknown key
        ("views: {stretch: -0.2}", "stretch", "less than or equal to the minimum"),  # impossible value
        ("cutouts: {size: -64}", "size", "less than the minimum"),  # negative size
        ("cutouts: {size: 2000}", "cutouts.size", "larger than the covered part"),  # cutout > tile
        ("source: hubble", "source", "is not one of"),
        ("precision: float16", "precision", "is not one of"),
    ],
)
def test_bad_config_fails_naming_the_key(wf, tmp_path, override, key, reason):
    (tmp_path / "bad.yaml").write_text(override + "\n")
    proc = snakemake(wf, "-n", "--configfile", str(tmp_path / "bad.yaml"), check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert key in out and reason in out, out[-3000:]
    assert "jobid" not in out  # nothing was scheduled
    assert not (wf / "results").exists()


def test_default_config_is_valid_and_dry_runs(wf):
    out = snakemake(wf, "-n").stdout
    assert "synthetic_tile" in out and "cutouts" in out


def test_sharding_plans_one_job_per_shard(wf, tmp_path):
    """64 shards give 64 independent E-step jobs per lap and 64 posterior jobs (dry run)."""
    (tmp_path / "s.yaml").write_text("em: {shards: 64, laps: 2}\nposterior: {shards: 64}\ncompare: []\n")
    out = snakemake(wf, "-n", "--configfile", "config.yaml", str(tmp_path / "s.yaml")).stdout
    stats = dict(re.findall(r"^(\w+)\s+(\d+)$", out[out.index("Job stats:"):], re.M))
    # laps 2 in two chains: the E-steps of lap 1 feed lap 2; the last lap's E-step is not needed
    assert stats["estep_shard"] == str(64 * 2) and stats["gather_estep"] == "2"
    assert stats["posterior_shard"] == "64"
    assert len(set(re.findall(r"results/prior/random/estep1/shard(\d+)\.pt", out))) == 64


# ---------------------------------------------------------------------------------------------
# The schema documents every key: description, default (= config.yaml), closed objects

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"
MANIFOLD_SCHEMA = ROOT / "workflow" / "schemas" / "manifold.schema.yaml"
OPEN = {"manifold"}  # its keys, meanings and defaults are in manifold.schema.yaml; no default here


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _resolve(node: dict, root: dict) -> dict:
    """``node`` with its local ``$ref`` followed: the referenced schema, then node's own keywords over it
    (``properties`` merged key by key, as the validator applies both)."""
    if "$ref" not in node:
        return node
    target: Any = root
    for part in node["$ref"].removeprefix("#/").split("/"):
        target = target[part]
    merged = {**_resolve(target, root), **{k: v for k, v in node.items() if k not in ("$ref", "properties")}}
    if "properties" in node:
        props = dict(merged.get("properties", {}))
        for key, sub in node["properties"].items():
            props[key] = {**props.get(key, {}), **sub}
        merged["properties"] = props
    return merged


def _properties(node: dict, root: dict, prefix: str = "") -> Iterator[tuple[str, dict]]:
    """(dotted key, resolved schema) of every property at every level."""
    for key, sub in _resolve(node, root).get("properties", {}).items():
        sub = _resolve(sub, root)
        yield prefix + key, sub
        yield from _properties(sub, root, f"{prefix}{key}.")


def _lookup(config: dict, dotted: str) -> Any:
    value: Any = config
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(dotted)
        value = value[part]
    return value


def _overlay(dotted: str, value: Any) -> dict:
    out: Any = value
    for part in reversed(dotted.split(".")):
        out = {part: out}
    return out


def _validated(*overlays: dict) -> dict:
    config = _load(ROOT / "config.yaml")
    for overlay in overlays:
        update_config(config, copy.deepcopy(overlay))
    validate(config, str(SCHEMA))
    return config


SCHEMA_DOC = _load(SCHEMA)
PROPERTIES = list(_properties(SCHEMA_DOC, SCHEMA_DOC))


def test_every_key_has_a_description_and_a_default():
    assert len(PROPERTIES) > 100  # the walk reached the nested sections and the $defs
    undescribed = [k for k, sub in PROPERTIES if not str(sub.get("description", "")).strip()]
    undefaulted = [k for k, sub in PROPERTIES if "default" not in sub and k not in OPEN]
    assert undescribed == [] and undefaulted == []
    # objects with keys are closed, so a misspelt key fails validation; their default {} lets validate fill
    # the children's defaults
    closed = [("", SCHEMA_DOC)] + [(k, sub) for k, sub in PROPERTIES if "properties" in sub]
    assert [k for k, sub in closed if sub.get("additionalProperties") is not False] == []
    assert [k for k, sub in closed[1:] if sub["default"] != {}] == []
    assert [k for k, sub in PROPERTIES if k in OPEN and "properties" in sub] == [] and MANIFOLD_SCHEMA.exists()


def test_defaults_are_config_yaml():
    """Each default equals config.yaml's value of that key, and the defaults alone rebuild config.yaml."""
    config = _load(ROOT / "config.yaml")
    differ = []
    for key, sub in PROPERTIES:
        if "properties" in sub or "default" not in sub:
            continue
        try:
            value = _lookup(config, key)
        except KeyError:
            continue  # not in config.yaml (mast, the sampler's CG safeguards): the schema is the default
        if sub["default"] != value or type(sub["default"]) is not type(value):
            differ.append((key, sub["default"], value))
    assert differ == []
    empty: dict = {}
    validate(empty, str(SCHEMA))
    assert empty == _validated()


SHIPPED = ["config.yaml", "tests/configs/tiny.yaml",
           *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "workflow" / "configs").glob("*.yaml"))]


@pytest.mark.parametrize("overlay", SHIPPED)
def test_shipped_configs_validate(overlay):
    """config.yaml, and each shipped overlay laid over it as Snakemake does, pass the schema."""
    config = _validated(_load(ROOT / overlay))
    if config["experiment"] == "manifold":
        validate(config["manifold"], str(MANIFOLD_SCHEMA))


@pytest.mark.parametrize("preset, size", [("cutout64", 64), ("gpu128", 128)])
def test_cutout_size_presets_validate_and_pass_the_checks(preset, size):
    """The 64 px CPU and 128 px GPU presets (issue 17 item 3): schema, then the relations galsep.config.check
    tests (the U-Net's levels divide the cutout, attention levels exist), as the Snakefile applies both."""
    from galsep.config import check

    config = _validated(_load(ROOT / "workflow" / "configs" / f"{preset}.yaml"))
    check(config)
    assert config["cutouts"]["size"] == size and config["source"] == "synthetic"
    # the bottom of the U-Net is still an image (8 px), where its attention works on 64 tokens or more
    assert size // 2 ** (len(config["network"]["channels"]) - 1) == 8


@pytest.mark.parametrize(
    "key",
    [
        "sede",
        "synthetic.tile_sise",
        "mast.tiles_limt",
        "mast.download.retrys",
        "mast.gzh.sourse",
        "files.weight_typ",
        "cutouts.sise",
        "views.strech",
        "diffusion.sigma_mn",
        "network.chanels",
        "em.trian",
        "em.train.step",
        "em.sampler.tua",
        "methods.clvm_liner",
        "methods.gibbs.sampler.cg_iter",
        "methods.basis.level",
        "methods.pcpca.gama",
        "methods.clvm_linear.step",
        "methods.clvm_linear.hidden",  # a clvm_vae key: the linear model reads no MLP settings
        "methods.clvm_vae.latents.galaxies",
        "methods.nes.iteration",
        "posterior.sampls",
        "posterior.sampler.step",
    ],
)
def test_misspelt_key_fails_naming_it(key):
    with pytest.raises(WorkflowError) as info:
        _validated(_overlay(key, 1))
    message = str(info.value)
    assert "Additional properties are not allowed" in message and repr(key.rsplit(".", 1)[-1]) in message
