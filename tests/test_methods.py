"""The separation-method registry: one contract test over every registered method, and a method
registered in this file alone running through the stage entry point."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import h5py
import numpy as np
import pytest
import torch
import yaml

from galsep.__main__ import main
from galsep.data.normalise import Stretch
from galsep.data.views import make_view, read_view
from galsep.inference.gaussian import fit_ppca
from galsep.inference.observations import stack
from galsep.inference.priors import Prior
from galsep.inference.schedule import VESchedule
from galsep.methods import Method, get, registry
from galsep.separation import contrast, fill_residual
from galsep.workflow import SOURCES
from workflow import ROOT

SIZE = 8


def _cutouts(path, n, rng, galaxies=True):
    yy, xx = np.mgrid[:SIZE, :SIZE] - (SIZE - 1) / 2
    with h5py.File(path, "w") as f:
        amp = rng.uniform(0.5, 2.0, (n, 1, 1)) * galaxies
        gal = amp * np.exp(-(xx**2 + yy**2) / (2 * rng.uniform(1.0, 2.0, (n, 1, 1)) ** 2))
        ran = rng.normal(0, 0.05, (n, SIZE, SIZE)) + rng.uniform(0, 0.3, (n, 1, 1)) * (xx > 1)
        flux = gal + ran
        f["flux"], f["mask"] = flux.astype(np.float32), np.ones((n, SIZE, SIZE), np.uint8)
        f["ivar"] = np.full((n, SIZE, SIZE), 400.0, np.float32)
        f["object_id"] = np.arange(n)
        f["truth_galaxy"], f["truth_random"] = gal.astype(np.float32), ran.astype(np.float32)


@pytest.fixture(scope="module")
def views(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("views")
    rng = np.random.default_rng(0)
    paths = {"galaxies": tmp / "g.h5", "randoms": tmp / "r.h5"}
    _cutouts(paths["galaxies"], 24, rng)
    _cutouts(paths["randoms"], 32, rng, galaxies=False)
    for view in ("galaxies", "randoms"):
        make_view(view, paths, tmp / f"{view}.h5", stretch=Stretch(), downsample_2x=0.0, downsample_4x=0.0,
                  mixed_fraction=0.5, seed=0, log=lambda s: None)
    return tmp


def _settings(name: str) -> dict[str, Any]:
    """The method's settings as the pipeline passes them: config.yaml with tests/configs/tiny.yaml's toy sizes."""
    from snakemake.utils import update_config, validate

    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    update_config(config, yaml.safe_load((ROOT / "tests/configs/tiny.yaml").read_text()))
    validate(config, str(ROOT / "workflow/schemas/config.schema.yaml"))  # fills the schema's defaults
    section = get(name).section
    if section == "methods":
        return config["methods"][name]
    return {k: v for k, v in config[section].items() if k != "shards"}


def _priors(obs) -> list[Prior]:
    """Gaussian priors fitted to the true sources: what the EM's Gaussian start would give."""
    assert obs.truth is not None
    schedule = VESchedule(1e-3, 2.0)
    return [Prior.gaussian_of(fit_ppca(obs.truth[:, k], 4), schedule) for k in range(len(obs.sources))]


def test_every_method_of_the_package_describes_itself_for_the_data_card():
    for name, cls in registry().items():
        if cls.__module__.startswith("galsep.methods."):
            assert cls.title and len(cls.summary) > 40, name


def test_registry_lists_every_method_of_the_pipeline():
    assert set(registry()) >= {"ddprism", "gibbs", "basis", "pcpca", "clvm_linear", "clvm_vae", "nes"}
    assert get("ddprism").uses_priors and get("nes").deterministic and get("pcpca").fitted
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        get("nope")


@pytest.mark.parametrize("name", sorted(registry()))
def test_method_contract(views, name):
    """Every method: draws (n, S, K, H, W), S = 1 if deterministic, finite, and (with the residual rule)
    adding up to the observation; fitted methods round-trip their state through a weights_only load."""
    method = get(name)
    settings = _settings(name)
    obs = stack([read_view(views / "randoms.h5"), read_view(views / "galaxies.h5")], SOURCES)
    target = obs.rows(obs.holding(0))
    gen = torch.Generator().manual_seed(0)
    if method.uses_priors:
        model: Any = _priors(target)
    elif method.fitted:
        fitted = method.fit(contrast(obs), settings, generator=gen, log=lambda s: None)
        path = views / f"{name}.pt"
        torch.save({"model": method.state(fitted)}, path)
        model = method.load(torch.load(path, weights_only=True)["model"], torch.device("cpu"))
    else:
        model = None
    samples = 1 if method.deterministic else 2
    draws = fill_residual(method.draw(model, target, samples, settings, generator=gen), target)
    assert draws.shape == (len(target), samples, 2, SIZE, SIZE)
    assert torch.isfinite(draws).all()
    # what the separation stage calls: the same draws, and mean estimates shaped like them where a method has any
    again, means = method.separate(model, target, samples, settings, generator=torch.Generator().manual_seed(0))
    if not method.fitted:  # draw's generator was fresh too (a fit advances it)
        assert torch.equal(fill_residual(again, target), draws)
    if means is not None:
        assert means.shape == draws.shape and torch.isfinite(means).all()
        assert (means - draws).abs().mean() < draws.abs().mean()
    if name not in ("basis", "gibbs"):  # these two do not hold the sum to the data exactly
        total = draws.sum(2).mean(1)
        assert (total - target.y).abs().mean() < 0.5 * target.y.abs().mean()


class Toy(Method):
    """Half the observation is the galaxy, half the random light: registered by being defined here."""

    name = "toy_half"
    deterministic = True

    def draw(self, model: Any, obs, samples: int, settings: Mapping[str, Any], *, generator: torch.Generator,
             progress: bool = False) -> torch.Tensor:
        half = settings["share"] * obs.y
        return torch.stack([half, obs.y - half], 1)[:, None]


def test_a_method_defined_in_a_test_runs_through_the_stage_entry_point(views, tmp_path):
    assert "toy_half" in registry()
    out = tmp_path / "shard0.pt"
    params = {"seed": 1, "device": "cpu", "clip": 2.0, "settings": {"share": 0.25}}
    assert main(["separate", "--method", "toy_half", "--view", str(views / "galaxies.h5"), "--shard", "0",
                 "--shards", "1", "--out", str(out), "--params", json.dumps(params)]) == 0
    shard = torch.load(out, weights_only=True)
    y = read_view(views / "galaxies.h5").y
    assert shard["method"] == "toy_half" and shard["draws"].shape == (len(y), 1, 2, SIZE, SIZE)
    assert torch.allclose(shard["draws"][:, 0, 0], 0.25 * y)


def test_unknown_method_is_a_config_error(views, tmp_path):
    params = {"seed": 1, "device": "cpu", "clip": 2.0, "settings": {}}
    assert main(["separate", "--method", "nope", "--view", str(views / "galaxies.h5"), "--shard", "0",
                 "--shards", "1", "--out", str(tmp_path / "x.pt"), "--params", json.dumps(params)]) == 2
    assert not (tmp_path / "x.pt").exists()
