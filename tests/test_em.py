"""EM stage helpers: reproducible laps, shards that tile the rows, chains of each schedule."""

from __future__ import annotations

import pytest
import torch

from galsep.inference.gaussian import LowRankGaussian
from galsep.inference.observations import shard_rows
from galsep.inference.priors import Prior, load_checkpoint
from galsep.inference.schedule import VESchedule
from galsep.inference.stages import gather_samples, lap_stage
from galsep.workflow import Chain, chains

PARAMS = {
    "seed": 3, "device": "cpu", "clip": 2.0, "diffusion": {"sigma_min": 1e-3, "sigma_max": 2.0},
    "network": {"channels": [4, 8], "blocks": 1, "attention_levels": [1], "heads": 1, "emb_features": 8,
                "dropout": 0.1},
    "em": {"train": {"steps": 3, "batch_size": 4, "lr": 1e-3, "lr_schedule": "cosine", "grad_clip": 1.0,
                     "ema_decay": 0.9, "weight_decay": 0.0, "augment": "dihedral"}},
}


def test_a_lap_is_reproducible_from_the_seed(tmp_path):
    chain = Chain("random", ("randoms",), ("random",))
    gaussian = Prior.gaussian_of(LowRankGaussian.standard(64, 2), VESchedule(1e-3, 2.0))
    torch.save({"chain": "random", "lap": 0, "sources": {"random": gaussian.entry}}, tmp_path / "gaussian.pt")
    torch.save({"samples": torch.randn(10, 1, 8, 8)}, tmp_path / "samples0.pt")
    weights = []
    for i, seed in enumerate((3, 3, 4)):
        torch.manual_seed(100 + i)  # the global generator must not matter
        out = tmp_path / f"lap{i}.pt"
        lap_stage(chain, 1, str(tmp_path / "gaussian.pt"), str(tmp_path / "samples0.pt"), str(out),
                  PARAMS | {"seed": seed}, log=lambda s: None)
        ema = load_checkpoint(out)["sources"]["random"]["ema"]
        weights.append(torch.cat([v.flatten().double() for v in ema.values()]))
    assert torch.equal(weights[0], weights[1])
    assert not torch.equal(weights[0], weights[2])


def test_shards_tile_the_rows_and_gather_checks_it(tmp_path):
    for n, k in ((10, 3), (5, 5), (64, 7)):
        rows = [shard_rows(n, i, k) for i in range(k)]
        assert rows[0].start == 0 and rows[-1].stop == n
        assert all(a.stop == b.start for a, b in zip(rows, rows[1:]))
    chain = Chain("random", ("randoms",), ("random",))
    for i, rows in enumerate([(0, 4), (6, 10)]):  # rows 4 and 5 missing
        torch.save({"rows": rows, "samples": torch.zeros(rows[1] - rows[0], 1, 2, 2)}, tmp_path / f"s{i}.pt")
    with pytest.raises(ValueError, match="do not tile the rows"):
        gather_samples(chain, 1, [str(tmp_path / "s0.pt"), str(tmp_path / "s1.pt")], str(tmp_path / "out.pt"))
    assert not (tmp_path / "out.pt").exists()


def test_schedules():
    random, galaxy = chains("contrastive", ["randoms", "galaxies"])
    assert (random.views, random.trained, random.frozen) == (("randoms",), ("random",), ())
    assert (galaxy.views, galaxy.trained, galaxy.frozen) == (("galaxies",), ("galaxy",), ("random",))
    (joint,) = chains("joint", ["randoms", "galaxies", "mixed_galaxy", "mixed_random"])
    assert joint.views == ("mixed_galaxy", "mixed_random") and joint.trained == ("galaxy", "random")
    with pytest.raises(ValueError, match="unknown em.schedule"):
        chains("alternating", [])
