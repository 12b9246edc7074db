"""End to end on the tiny config: the catalogue contract, the model's additivity, publishing, the
report, and the rerun behaviour users rely on (checked with dry runs and their job lists)."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import xarray as xr
import yaml
from astropy.table import Table

from galsep.data.normalise import Stretch
from workflow import copy_workflow, snakemake

pytestmark = pytest.mark.slow
TINY = "tests/configs/tiny.yaml"


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    wf = copy_workflow(tmp_path_factory.mktemp("pipeline"))
    snakemake(wf, "--cores", "2", "--configfile", TINY)
    return wf


def _planned(wf: Path, *overlay: dict) -> dict[str, int]:
    """Jobs a dry run would execute after merging ``overlay`` dicts over the tiny config."""
    files = [TINY]
    for i, extra in enumerate(overlay):
        path = wf / f"overlay{i}.yaml"
        path.write_text(yaml.safe_dump(extra))
        files.append(path.name)
    out = snakemake(wf, "-n", "--configfile", *files).stdout
    if "Nothing to be done" in out:
        return {}
    table = out[out.index("Job stats:") :].split("\n\n")[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m[1] != "total"}


def test_catalogue_contract(run):
    ds = xr.open_zarr(run / "results/catalogue.zarr", consolidated=False)
    n = ds.sizes["object"]
    assert n > 0 and ds.sizes["sample"] == 2
    for name, dims in {
        "object_id": ("object",), "ra": ("object",), "dec": ("object",), "tile": ("object",),
        "observation": ("object", "y", "x"), "ivar": ("object", "y", "x"), "mask": ("object", "y", "x"),
        "neighbour": ("object", "y", "x"), "galaxy": ("object", "sample", "y", "x"), "random": ("object", "sample", "y", "x"),
        "galaxy_mean": ("object", "y", "x"), "random_mean": ("object", "y", "x"), "galaxy_std": ("object", "y", "x"),
        "truth_galaxy": ("object", "y", "x"), "truth_random": ("object", "y", "x"),
        "galaxy_flux_quantiles": ("object", "quantile"),
    }.items():
        assert ds[name].dims == dims, name
    assert ds["galaxy"].attrs["units"] == "e-/s" and ds["ra"].attrs["units"] == "deg"
    assert "Rao-Blackwellised" in ds["galaxy_mean"].attrs["description"]  # posterior.mean_sigma's default
    # every row is a target of the catalogue, with its coordinates
    targets = Table.read(run / "resources/targets.ecsv")
    by_id = {int(i): k for k, i in enumerate(targets["object_id"])}
    rows = [by_id[int(i)] for i in ds["object_id"].values]
    assert np.allclose(ds["ra"].values, targets["ra"][rows]) and np.allclose(ds["dec"].values, targets["dec"][rows])
    # provenance: the config, versions and the checksums of the weights that made it
    assert json.loads(ds.attrs["config"])["seed"] == 7
    assert "torch" in json.loads(ds.attrs["versions"])
    for source, entry in json.loads(ds.attrs["prior_checkpoints"]).items():
        assert hashlib.sha256((run / entry["path"]).read_bytes()).hexdigest() == entry["sha256"], source
    assert set(np.unique(ds["neighbour"].values)) <= {0, 1}
    q = ds["galaxy_flux_quantiles"].values
    assert (q[:, 0] <= q[:, 1]).all() and (q[:, 1] <= q[:, 2]).all()


def test_draws_add_up_to_the_observation_within_the_noise(run):
    """In normalised space, where the model adds the sources, galaxy + random = y up to the noise."""
    ds = xr.open_zarr(run / "results/catalogue.zarr", consolidated=False)
    s = Stretch(**json.loads(ds.attrs["normalisation"]))
    total = s.forward(ds["galaxy"].values + ds["random"].values)  # = g + r by construction of split_flux
    with h5py.File(run / "results/views/galaxies.h5") as f:
        y, var, mask = f["y"][...], f["variance"][...], f["mask"][...] > 0
    z = (total - y[:, None]) / np.sqrt(var[:, None])
    rms = np.sqrt((z**2)[np.broadcast_to(mask[:, None], z.shape)].mean())
    # an exact posterior leaves residuals of about one noise sigma; a draw that ignored the data
    # would leave the galaxies' light (tens of sigma)
    assert 0.3 < rms < 2.0, rms


def test_em_files_and_metrics(run):
    for chain in ("random", "galaxy"):
        ckpt = torch.load(run / f"results/prior/{chain}/lap1.pt", weights_only=True)
        assert ckpt["lap"] == 1 and ckpt["sources"][chain]["kind"] == "diffusion" and "schedule" in ckpt["sources"][chain]
        assert len(ckpt["losses"][chain]) == 20 and np.isfinite(ckpt["losses"][chain]).all()
        assert ckpt["params"]["em"]["train"]["steps"] == 20
    metrics = json.loads((run / "results/metrics.json").read_text())
    assert metrics["method"] == "ddprism"
    assert set(metrics["methods"]) == {"ddprism_mean", "ddprism_draw", "ddprism_draws_mean", "observation",
                                       "minus_median_random"}
    for m in metrics["methods"].values():
        assert np.isfinite(m["galaxy_psnr"]["mean"])
    fluxes = metrics["fluxes"]
    n = xr.open_zarr(run / "results/catalogue.zarr", consolidated=False).sizes["object"]
    assert sum(b["count"] for b in fluxes["by_contamination"]) == n
    assert sum(b["count"] for b in fluxes["by_estimated_contamination"]) == n
    assert sum(fluxes["truth_rank_histogram"]) == n and len(fluxes["truth_rank_histogram"]) == fluxes["draws"] + 1
    assert 0 <= fluxes["interval_16_84_coverage"] <= 1
    # the synthetic targets table has neighbour distances: the split is there and covers every galaxy
    assert fluxes["with_neighbour"]["count"] + fluxes["without_neighbour"]["count"] == n
    for fig in ("posterior", "em_laps", "loss", "metrics"):
        assert (run / f"results/figures/{fig}.png").stat().st_size > 1000


def test_every_method_is_compared_on_the_same_galaxies(run):
    """Each method's shards follow one contract, and the table has a scored row per method."""
    from galsep.methods import get
    from galsep.products.catalogue import gather_draws

    n = xr.open_zarr(run / "results/catalogue.zarr", consolidated=False).sizes["object"]
    methods = yaml.safe_load((run / TINY).read_text())["compare"]
    for method in methods:
        draws, sources, made_by, _ = gather_draws(sorted(map(str, (run / f"results/posterior/{method}").glob("shard*.pt"))))
        assert made_by == method and sources == ["galaxy", "random"]
        assert draws.shape[0] == n and draws.shape[2:] == (2, 32, 32) and np.isfinite(draws).all(), method
    targets = Table.read(run / "resources/targets.ecsv")
    ids = set(xr.open_zarr(run / "results/catalogue.zarr", consolidated=False)["object_id"].values.tolist())
    near = sum(int(i) in ids and d < 1.0 for i, d in zip(targets["object_id"], targets["neighbour_distance"],
                                                         strict=True))
    table = json.loads((run / "results/compare/table.json").read_text())
    rows = {r["method"]: r for r in table["rows"]}
    assert list(rows) == methods + ["observation", "minus_median_random"]
    for method in methods:
        r = rows[method]
        assert np.isfinite([r["galaxy_psnr_mean_db"], r["galaxy_psnr_draw_db"], r["sinkhorn"]]).all(), method
        assert 0 <= r["pqmass_p"] <= 1 and r["sinkhorn"] >= 0
        # the times come from Snakemake's benchmark files of the method's own jobs (segmentation has no fit;
        # a job done before Snakemake's first memory sample has no peak memory: null, never made up)
        kind = get(method)
        assert (r["fit_s"] > 0) == (kind.fitted or kind.uses_priors) and r["separate_s"] > 0, r
        assert r["peak_rss_mb"] is None or r["peak_rss_mb"] > 50, r
        # the galaxies with a catalogued neighbour within 1" are counted (and scored when there are any)
        assert r["neighbour_count"] == near, r
        assert (r["neighbour_psnr_mean_db"] is None) == (near == 0), r
    # a deterministic method has one "draw": its mean and its draw are the same estimate
    assert rows["nes"]["draws"] == 1 and rows["nes"]["galaxy_psnr_mean_db"] == rows["nes"]["galaxy_psnr_draw_db"]
    md = (run / "results/compare/table.md").read_text()
    assert all(f"| {m} |" in md for m in rows)
    assert (run / "results/compare/compare.png").stat().st_size > 1000


def test_catalogue_by_another_method(run, tmp_path):
    """method: pcpca makes the catalogue from the comparison's pcpca draws, recording its model."""
    assert _planned(run, {"method": "pcpca"}) == {"catalogue": 1, "evaluate": 1, "figures": 1, "all": 1}
    wf = Path(shutil.copytree(run, tmp_path / "wf", symlinks=True))  # leave the shared run as it is
    (wf / "pcpca.yaml").write_text("method: pcpca\n")
    snakemake(wf, "results/catalogue.zarr", "--cores", "1", "--configfile", TINY, "pcpca.yaml")
    ds = xr.open_zarr(wf / "results/catalogue.zarr", consolidated=False)
    assert ds.attrs["method"] == "pcpca" and json.loads(ds.attrs["config"])["method"] == "pcpca"
    weights = json.loads(ds.attrs["prior_checkpoints"])
    assert list(weights) == ["pcpca"] and weights["pcpca"]["path"] == "results/baselines/pcpca.pt"
    draws = torch.load(wf / "results/posterior/pcpca/shard0.pt", weights_only=True)["draws"]
    assert ds.sizes["sample"] == draws.shape[1]


def test_rerun_behaviour(run):
    assert _planned(run) == {}  # changing nothing reruns nothing
    jobs = _planned(run, {"posterior": {"sampler": {"steps": 5}}})
    # the ddprism draws, and what reads them: the catalogue, its metrics and figures, its comparison row
    assert jobs == {"posterior_shard": 2, "catalogue": 1, "evaluate": 1, "figures": 1, "compare_method": 1,
                    "compare": 1, "all": 1}
    jobs = _planned(run, {"methods": {"pcpca": {"gamma": 0.5}}})
    assert jobs == {"fit_baseline": 1, "posterior_shard": 1, "compare_method": 1, "compare": 1, "all": 1}
    jobs = _planned(run, {"em": {"laps": 2}})
    # lap 2 of the random chain needs the E-step of lap 1, then the galaxy chain follows the new
    # random prior; the random chain's Gaussian start and lap 1 are kept
    assert jobs["prior_lap"] == 3 and "synthetic_tile" not in jobs and "view" not in jobs
    assert jobs["prior_gaussian"] == 1 and jobs["estep_shard"] == 4  # two shards a lap
    jobs = _planned(run, {"views": {"stretch": 0.25}})
    assert jobs["view"] == 2 and "cutouts" not in jobs and "synthetic_tile" not in jobs
    assert jobs["prior_gaussian"] == 2 and jobs["catalogue"] == 1
    # masking the neighbours remakes the two contrastive views (the cutouts already carry the mask)
    default = yaml.safe_load((run / "config.yaml").read_text())["views"]["mask_neighbours"]
    masked = yaml.safe_load((run / TINY).read_text()).get("views", {}).get("mask_neighbours", default)
    jobs = _planned(run, {"views": {"mask_neighbours": not masked}})
    assert jobs["view"] == 2 and "cutouts" not in jobs and jobs["catalogue"] == 1


def test_publish_and_report(run):
    snakemake(run, "publish", "--cores", "2", "--configfile", TINY)  # targets first: --configfile takes many values
    pub = run / "results/publish"
    for line in (pub / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split()
        assert hashlib.sha256((pub / name).read_bytes()).hexdigest() == digest
    with zipfile.ZipFile(pub / "catalogue.zarr.zip") as z:
        assert "zarr.json" in z.namelist()
    table = Table.read(pub / "summary.fits")
    assert len(table) == xr.open_zarr(run / "results/catalogue.zarr", consolidated=False).sizes["object"]
    assert str(table["ra"].unit) == "deg"
    card = (pub / "DATACARD.md").read_text()
    assert "normalised (arcsinh) space" in card and "galaxy_flux" in card
    assert "its pixels were left unobserved" in card  # views.mask_neighbours, the default
    snakemake(run, "--configfile", TINY, "--report", "report.html")
    html = (run / "report.html").read_text(errors="ignore")
    assert "posterior.png" in html and "em_laps.png" in html


def test_joint_schedule_learns_both_priors_from_mixed_views(tmp_path):
    wf = copy_workflow(tmp_path)
    (wf / "joint.yaml").write_text("em: {schedule: joint}\ncompare: []\n")
    snakemake(wf, "--cores", "2", "--configfile", TINY, "joint.yaml")
    ckpt = torch.load(wf / "results/prior/joint/lap1.pt", weights_only=True)
    assert set(ckpt["sources"]) == {"galaxy", "random"}
    with h5py.File(wf / "results/views/mixed_galaxy.h5") as f:
        assert list(f["coef"][0]) == [1.0, 0.5]
    assert not (wf / "results/prior/random").exists()
    ds = xr.open_zarr(wf / "results/catalogue.zarr", consolidated=False)
    assert np.isfinite(ds["galaxy"].values).all()
    assert json.loads(ds.attrs["prior_checkpoints"])["galaxy"]["path"] == "results/prior/joint/lap1.pt"
