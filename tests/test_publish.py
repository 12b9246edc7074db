"""The published data card describes the method that made the catalogue (a tiny catalogue, no pipeline)."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import xarray as xr
import yaml

from galsep.products.catalogue import write_catalogue
from galsep.products.publish import catalogue_method, publish
from workflow import ROOT

N, S, H, W = 3, 2, 8, 8


def made_by(tmp_path: Path, method: str, means: torch.Tensor | None = None) -> tuple[Path, dict]:
    """A catalogue of N galaxies written by ``method``'s (fake) separation shard (with ``means`` as its
    posterior-mean estimates), and its recorded config."""
    rng = np.random.default_rng(0)
    cutouts = tmp_path / "galaxies.h5"
    with h5py.File(cutouts, "w") as f:
        f["object_id"] = np.arange(1, N + 1)
        f["ra"], f["dec"] = 150.1 + 1e-3 * np.arange(N), np.full(N, 2.2)
        f["tile"] = np.array([b"tile000"] * N)
        f["flux"] = rng.normal(0, 0.1, (N, H, W)).astype(np.float32)
        f["ivar"] = np.full((N, H, W), 100.0, np.float32)
        f["mask"] = np.ones((N, H, W), np.uint8)
    shard = tmp_path / "shard0.pt"
    shard_data = {"rows": (0, N), "draws": torch.rand(N, S, 2, H, W) * 0.1, "sources": ["galaxy", "random"],
                  "method": method}
    if means is not None:
        shard_data["mean_estimates"] = means
    torch.save(shard_data, shard)
    weights = tmp_path / "weights.pt"
    weights.write_bytes(b"weights")
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config["method"] = method
    # as rules/common.smk catalogue_config records it
    recorded = {k: v for k, v in config.items() if k not in ("compare", "methods")}
    if method in config["methods"]:
        recorded["methods"] = {method: config["methods"][method]}
    out = tmp_path / "catalogue.zarr"
    write_catalogue([str(shard)], str(cutouts), {"model": str(weights)}, recorded, out, log=lambda _: None)
    return out, recorded


@pytest.mark.parametrize("method, name", [("pcpca", "PCPCA"), ("clvm_linear", "CLVM (linear)"),
                                          ("clvm_vae", "CLVM (VAE)"), ("nes", "Neural Egg Separation")])
def test_card_names_the_method_that_made_the_catalogue(tmp_path, method, name):
    catalogue, config = made_by(tmp_path, method)
    publish(str(catalogue), "none", str(tmp_path / "publish"), config, log=lambda _: None)
    card = (tmp_path / "publish" / "DATACARD.md").read_text()
    assert f"Separation method: {name} (`method: {method}`)." in card
    assert "DDPRISM" not in card and "diffusion" not in card.lower()


def test_card_of_a_ddprism_catalogue_says_ddprism(tmp_path):
    catalogue, config = made_by(tmp_path, "ddprism")
    publish(str(catalogue), "none", str(tmp_path / "publish"), config, log=lambda _: None)
    card = (tmp_path / "publish" / "DATACARD.md").read_text()
    assert "Separation method: DDPRISM (`method: ddprism`)." in card
    assert "moment-matching posterior sampling" in card


def test_method_falls_back_to_the_recorded_config():
    assert catalogue_method(xr.Dataset(attrs={"method": "basis"})) == "basis"
    assert catalogue_method(xr.Dataset(attrs={"config": json.dumps({"method": "nes"})})) == "nes"


def test_card_reports_the_flux_residuals_by_both_kinds_of_contamination_bins(tmp_path):
    from galsep.evaluation.evaluate import flux_diagnostics

    rng = np.random.default_rng(3)
    true = rng.uniform(50, 150, 400)
    draws = true[:, None] * (1 + rng.normal(0, 0.1, (400, 8)))
    fluxes = flux_diagnostics(draws, true, 100 * (draws.mean(1) / true - 1), rng.uniform(0, 1, 400),
                              mean_flux=draws.mean(1), estimated_contamination=rng.uniform(0, 1, 400))
    metrics = {"method": "ddprism", "best_baseline": "observation", "fluxes": fluxes,
               "methods": {"ddprism_mean": {"galaxy_psnr": {"mean": 50.0}},
                           "observation": {"galaxy_psnr": {"mean": 45.0}}}}
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    catalogue, config = made_by(tmp_path, "ddprism")
    publish(str(catalogue), str(tmp_path / "metrics.json"), str(tmp_path / "publish"), config, log=lambda _: None)
    card = (tmp_path / "publish" / "DATACARD.md").read_text()
    assert "## What a galaxy flux means" in card
    row = next(line for line in card.splitlines() if line.startswith("| 0.5- |"))
    truth, estimate = row.split("|")[2:4]
    assert f"({fluxes['by_contamination'][3]['count']})" in truth
    assert f"({fluxes['by_estimated_contamination'][3]['count']})" in estimate
    assert f"{fluxes['interval_16_84_coverage']:.2f} of galaxies" in card


def test_the_mean_averages_the_estimates_where_the_shards_have_them(tmp_path):
    from galsep.data.normalise import Stretch, split_flux

    means = torch.rand(N, S, 2, H, W) * 0.05
    catalogue, config = made_by(tmp_path, "ddprism", means)
    ds = xr.open_zarr(catalogue)
    galaxy, random = split_flux(Stretch.from_config(config["views"]), means[:, :, 0].numpy(), means[:, :, 1].numpy())
    np.testing.assert_allclose(ds["galaxy_mean"].values, galaxy.mean(1), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(ds["random_mean"].values, random.mean(1), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(ds["galaxy_flux_mean"].values, galaxy.mean(1).sum((-2, -1)), rtol=1e-4)
    assert not np.allclose(ds["galaxy_mean"].values, ds["galaxy"].values.mean(1))  # not the draws' mean
    assert "Rao-Blackwellised" in ds["galaxy_mean"].attrs["description"]
    publish(str(catalogue), "none", str(tmp_path / "publish"), config, log=lambda _: None)
    card = (tmp_path / "publish" / "DATACARD.md").read_text()
    assert "the posterior mean (the mean of each draw's Rao-Blackwellised" in card
    # without estimates: the draws' mean
    (tmp_path / "plain").mkdir()
    ds = xr.open_zarr(made_by(tmp_path / "plain", "ddprism")[0])
    np.testing.assert_allclose(ds["galaxy_mean"].values, ds["galaxy"].values.mean(1), rtol=1e-5, atol=1e-7)
