"""The 1-D manifold experiment: data generation, settings, metrics, the EM driver, wiring and a tiny run."""

from __future__ import annotations

import json
import math

import pytest
import torch
import yaml

from galsep.manifold.data import load_dataset, make_dataset, make_manifold, observations
from galsep.manifold.em import run_stage
from galsep.evaluation.metrics import pqmass, psnr_vectors, sinkhorn
from galsep.manifold.paper import METRICS, PAPER
from galsep.manifold.settings import dataset, setting
from galsep.manifold.table import build_table, markdown
from galsep.manifold.workflow import Plan
from workflow import ROOT, copy_workflow, snakemake

DATA = {"samples": 512, "features": 5, "observed": 3, "noise": 0.01, "smoothness": [3.0, 4.0, 5.0],
        "epsilon": 1e-3, "spread": 4.0}
SMALL = ROOT / "workflow" / "configs" / "manifold.yaml"
PAPER_CONFIG = ROOT / "workflow" / "configs" / "manifold-paper.yaml"


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- data ---------------------------------------------------------------------------------------------

def test_contrastive_views_add_one_source_each_with_a_shared_projection():
    d = make_dataset(dataset("contrastive"), DATA, seed=1)
    V, N, K, M, D = d["A"].shape
    assert (V, N, K, M, D) == (3, 512, 3, 3, 5)
    assert d["x"].shape == (3, 512, 3, 5) and d["y"].shape == (3, 512, 3) and d["variance"].shape == (3, 512, 3)
    assert torch.equal(d["coefficients"], torch.tensor([[1.0, 0, 0], [1, 1, 0], [1, 1, 1]]))
    for v in range(3):
        for k in range(3):
            norms = d["A"][v, :, k].norm(dim=-1)
            expected = 1.0 if k <= v else 0.0
            assert torch.allclose(norms, torch.full_like(norms, expected), atol=1e-5)
        present = d["A"][v, :, : v + 1]
        assert torch.equal(present, present[:, :1].expand_as(present))  # one projection for all sources


def test_observation_noise_and_range():
    d = make_dataset(dataset("mixed-0.5"), DATA, seed=2)
    residual = d["y"] - torch.einsum("vnkmd,vnkd->vnm", d["A"], d["x"])
    assert residual.std().item() == pytest.approx(0.01, rel=0.1)
    assert residual.mean().abs().item() < 2e-3
    assert torch.allclose(d["variance"], torch.full_like(d["variance"], 1e-4))
    assert d["x"].min() >= -2.0 - 1e-5 and d["x"].max() <= 2.0 + 1e-5
    assert d["x"].amin(dim=(0, 1)).max() < -1.5 and d["x"].amax(dim=(0, 1)).min() > 1.5  # the range is used


@pytest.mark.parametrize("name, f", [("mixed-0.0", 0.0), ("mixed-0.1", 0.1), ("mixed-0.9", 0.9)])
def test_mixing_fraction_scales_the_other_source(name, f):
    d = make_dataset(dataset(name), DATA, seed=3)
    assert torch.allclose(d["coefficients"], torch.tensor([[1.0, f], [f, 1.0]]))
    for v in range(2):
        own, other = d["A"][v, :, v], d["A"][v, :, 1 - v]
        assert torch.allclose(other, f * own, atol=1e-6)  # same projection, scaled by f


def test_separate_projections_per_source():
    d = make_dataset(dataset("mixed-separate"), DATA, seed=3)
    assert torch.equal(d["coefficients"], torch.ones(2, 2))
    assert not torch.allclose(d["A"][:, :, 0], d["A"][:, :, 1])
    assert torch.allclose(d["A"].norm(dim=-1), torch.ones(2, 512, 2, 3), atol=1e-5)


def test_generation_is_seeded_and_manifolds_are_shared_across_datasets():
    a = make_dataset(dataset("mixed-0.1"), DATA, seed=5)
    b = make_dataset(dataset("mixed-0.1"), DATA, seed=5)
    c = make_dataset(dataset("mixed-0.1"), DATA, seed=6)
    for key in ("x", "A", "y"):
        assert torch.equal(a[key], b[key])
        assert not torch.equal(a[key], c[key])
    m1 = make_manifold(5, 1, features=5, alpha=4.0, epsilon=1e-3, spread=4.0)
    z = a["z"][0, :, 1]
    assert torch.allclose(m1(z).float(), a["x"][0, :, 1], atol=1e-5)  # source 2 lies on its curve
    assert m1.a.shape == (5, math.ceil(1e-3 ** (-1 / 4.0)))


def test_observations_stack_views_and_sources():
    d = make_dataset(dataset("contrastive"), DATA, seed=1)
    obs = observations(d, [1, 2], [0, 1])
    assert obs.y.shape == (1024, 3) and obs.ops[0].matrix.shape == (1024, 3, 5) and len(obs.ops) == 2 and obs.truth.shape == (1024, 2, 5)
    noiseless = sum(op(obs.truth[:, k]) for k, op in enumerate(obs.operators()))
    view2 = noiseless[:512] - obs.y[:512]
    assert view2.std().item() == pytest.approx(0.01, rel=0.15)  # view 2 holds exactly sources 1 and 2


# --- settings -------------------------------------------------------------------------------------------

def test_settings():
    s = setting("contrastive-3", DATA["smoothness"])
    assert (s.sources, s.views, s.stage, s.headline()) == (3, (2,), 3, [2])
    assert s.applies("pcpca") and s.applies("ddprism")
    m = setting("mixed-0.5")
    assert (m.sources, m.views, m.stage, m.headline(), m.dataset.fraction) == (2, (0, 1), 1, [0, 1], 0.5)
    assert not m.applies("clvm_vae") and m.applies("gibbs")
    assert dataset("contrastive").stage_views(2) == ([1], [1], [0])
    for bad in ("contrastive-1", "contrastive-4", "mixed-1.5", "grassy"):
        with pytest.raises(ValueError):
            setting(bad, DATA["smoothness"])


# --- metrics --------------------------------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore:.*Voronoi cells:UserWarning")
def test_metric_sanity():
    d = make_dataset(dataset("mixed-0.1"), DATA, seed=4)
    x, other = d["x"][0, :, 0], d["x"][1, :, 0]  # two independent draws of source 1
    assert psnr_vectors(x, x) > 100
    assert psnr_vectors(x + 0.01 * torch.randn_like(x), x) == pytest.approx(20 * math.log10(4 / 0.01), abs=1.5)
    assert psnr_vectors(x.mean(0).expand_as(x), x) < 15
    assert sinkhorn(x[:256], x[:256], eps=1e-3) == pytest.approx(0.0, abs=1e-6)
    shift = torch.tensor([0.3, 0.0, 0.0, 0.0, 0.0])
    assert sinkhorn(x[:256] + shift, x[:256], eps=1e-3) == pytest.approx(0.09, rel=0.1)  # squared-Euclidean scale
    assert sinkhorn(other[:256], x[:256], eps=1e-3) < 0.1 < sinkhorn(x.mean(0).expand(256, 5), x[:256], eps=1e-3)
    assert pqmass(other[:256], x[:256], tessellations=20, seed=0) > 0.01
    assert pqmass(x[:256] + 1.0, x[:256], tessellations=20, seed=0) < 1e-3
    state = torch.random.get_rng_state()
    import numpy as np

    np.random.seed(7)
    before = np.random.random()
    np.random.seed(7)
    assert pqmass(other[:64], x[:64], tessellations=5, seed=1) == pqmass(other[:64], x[:64], tessellations=5, seed=1)
    assert np.random.random() == before  # numpy's global generator is left as it was
    torch.random.set_rng_state(state)


def test_paper_numbers_and_table():
    assert PAPER["contrastive-2"]["ddprism"]["posterior_psnr"] == 38.27
    assert PAPER["mixed-0.1"]["gibbs"]["prior_sinkhorn"] == 1.81
    head = dict(zip(METRICS, (0.1, 20.0, 1.0, 0.0, 2.0)))
    record = {"setting": "contrastive-2", "method": "ddprism", "headline": head, "headline_sources": [2],
              "sources": {"source1": head, "source2": head}, "seconds": 3.0, "device": "cpu"}
    table = build_table([record], {"size": "tiny", "settings": ["contrastive-2"], "methods": ["ddprism"],
                                   "metrics": {"spread": 4, "sinkhorn_reg": 1e-3, "sinkhorn_samples": 8,
                                               "tessellations": 5, "pqm_samples": 8}})
    assert table["settings"]["contrastive-2"]["ddprism"]["paper"]["posterior_psnr"] == 38.27
    assert "| DDPRISM-Joint | 0.1 (0.26) | 20.00 (38.27) |" in markdown(table)


# --- EM driver ------------------------------------------------------------------------------------------

EM = {
    "diffusion": {"sigma_min": 1e-3, "sigma_max": 10.0}, "clip": 4.0,
    "network": {"hidden": [32, 32], "emb_features": 8, "dropout": 0.0},
    "train": {"steps": 5, "batch_size": 16, "lr": 1e-3, "lr_schedule": "linear", "grad_clip": 1.0,
              "ema_decay": 0.0, "weight_decay": 0.0, "augment": "none"},
    "laps": [1, 1, 1],
    "sampler": {"steps": 3, "corrections": 1, "tau": 0.1, "cg_iters": 1, "precondition": False,
                "warm_start": False, "cg_tol": 1e-6, "denom_floor": 0.0, "regularisation": None,
                "reg_threshold": None, "batch_size": None},
    "gaussian": {"laps": 1, "rank": 2, "sampler": {"steps": 3, "corrections": 1, "tau": 0.1, "cg_iters": 1, "cg_tol": 1e-6,
                                                   "precondition": False, "warm_start": False,
                                                   "denom_floor": 0.0, "regularisation": None,
                                                   "reg_threshold": None, "batch_size": None}},
    "gibbs": {"rounds": 2, "steps": 2, "laps": 1, "gaussian_laps": 1},
}


def test_em_stages_are_reproducible_and_chain():
    d = make_dataset(dataset("contrastive"), DATA | {"samples": 64}, seed=1)
    p = {"seed": 3, "em": EM, "history_samples": 0, "sinkhorn_reg": 1e-3}
    cpu = torch.device("cpu")
    quiet = lambda line: None  # noqa: E731
    first = run_stage(d, dataset("contrastive"), "ddprism", 1, None, p, cpu, quiet)
    torch.manual_seed(123)  # the global generator must not matter
    again = run_stage(d, dataset("contrastive"), "ddprism", 1, None, p, cpu, quiet)
    assert torch.equal(first["samples"], again["samples"])
    assert first["samples"].shape == (64, 1, 5) and first["priors"][0]["kind"] == "diffusion"
    with pytest.raises(ValueError, match="previous stage"):
        run_stage(d, dataset("contrastive"), "gibbs", 2, None, p, cpu, quiet)
    second = run_stage(d, dataset("contrastive"), "gibbs", 2, first, p, cpu, quiet)
    assert second["sources"] == [0, 1] and second["samples"].shape == (64, 2, 5)
    assert second["priors"][0] is first["priors"][0]  # source 1 frozen
    floor = run_stage(d, dataset("contrastive"), "gaussian", 1, None, p, cpu, quiet)
    assert floor["priors"][0]["kind"] == "gaussian" and len(floor["history"]) == 1


# --- wiring ---------------------------------------------------------------------------------------------

def _config(path):
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config.update(yaml.safe_load(path.read_text()))
    return config


def test_plan_files():
    plan = Plan(_config(SMALL))
    assert plan.chain("contrastive-3", "gibbs") == [
        "results/manifold/contrastive/ddprism/stage1.pt", "results/manifold/contrastive/gibbs/stage2.pt",
        "results/manifold/contrastive/gibbs/stage3.pt"]
    assert plan.chain("mixed-0.5", "ddprism") == ["results/manifold/mixed-0.5/ddprism/stage1.pt"]
    assert plan.chain("contrastive-2", "pcpca") == [] and plan.previous("contrastive", "ddprism", 1) == []
    assert ("mixed-0.1", "pcpca") not in plan.pairs and ("contrastive-2", "clvm_vae") in plan.pairs
    assert "laps" not in plan.fit_params("contrastive", "gaussian")["em"]
    assert plan.evaluate_params("mixed-0.1", "ddprism")["em"]["diffusion"]["sigma_max"] == 15.0


@pytest.mark.parametrize("config, jobs", [(SMALL, 65), (PAPER_CONFIG, 65)])
def test_workflow_dry_run(tmp_path, config, jobs):
    """Both sizes validate against the schema and wire every setting and method."""
    copy_workflow(tmp_path)
    out = snakemake(tmp_path, "-n", "--quiet", "rules", "--configfile", str(config.relative_to(ROOT))).stdout
    counts = {line.split()[0]: int(line.split()[1]) for line in out.splitlines()
              if len(line.split()) == 2 and line.split()[1].isdigit()}
    assert counts["total"] == jobs
    assert counts["manifold_fit"] == 23 and counts["manifold_evaluate"] == 34 and counts["manifold_data"] == 6


@pytest.mark.slow
def test_tiny_experiment_end_to_end(tmp_path):
    copy_workflow(tmp_path)
    tiny = {"manifold": {
        "settings": ["contrastive-2"], "methods": ["ddprism", "pcpca", "gaussian", "prior_mean"],
        "data": {"samples": 256},
        "contrastive": {"train": {"steps": 300, "batch_size": 128}, "laps": [2, 1, 1], "sampler": {"steps": 16},
                        "gaussian": {"laps": 4, "sampler": {"steps": 16}}},
        "metrics": {"sinkhorn_samples": 256, "pqm_samples": 256, "prior_samples": 256, "tessellations": 10,
                    "history_samples": 0},
    }}
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(tiny))
    snakemake(tmp_path, "--cores", "2", "--configfile", "workflow/configs/manifold.yaml", "tiny.yaml")
    table = json.loads((tmp_path / "results/manifold/table.json").read_text())
    rows = table["settings"]["contrastive-2"]
    assert set(rows) == {"ddprism", "pcpca", "gaussian", "prior_mean"}
    for row in rows.values():
        assert set(row["headline"]) == set(METRICS) and row["headline_sources"] == [2]
    assert rows["ddprism"]["paper"]["posterior_psnr"] == 38.27 and rows["prior_mean"]["paper"] is None
    assert rows["pcpca"]["sources"]["source1"] is None  # PCPCA models the target source only
    floor = rows["prior_mean"]["headline"]["posterior_psnr"]
    assert rows["ddprism"]["headline"]["posterior_psnr"] > floor
    # the first EM stage (source 1 alone, from view 1) is far above the floor already
    data = load_dataset(tmp_path / "results/manifold/data/contrastive.pt")
    stage1 = torch.load(tmp_path / "results/manifold/contrastive/ddprism/stage1.pt", weights_only=True)
    assert psnr_vectors(stage1["samples"][:, 0], observations(data, [0], [0]).truth[:, 0]) > floor + 6
    assert "## contrastive-2" in (tmp_path / "results/manifold/table.md").read_text()
