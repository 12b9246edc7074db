"""Torch files load with weights_only=True: plain payloads load, anything else is refused unexecuted."""

from __future__ import annotations

import pytest
import torch

from galsep.errors import InputError
from galsep.evaluation.figures import em_evolution, loss_curves
from galsep.io import load_torch
from galsep.products.catalogue import gather_draws

RAN: list[str] = []


class Payload:
    """An object whose unpickling runs code: what weights_only=False would execute."""

    def __reduce__(self):
        return RAN.append, ("unpickled",)


def _shard(path, rows, **extra):
    torch.save({"rows": rows, "draws": torch.zeros(rows[1] - rows[0], 2, 2, 4, 4), "sources": ["galaxy", "random"],
                "method": "ddprism", "seconds": 1.5, "device": "cpu", **extra}, path)
    return path


def test_plain_payloads_load(tmp_path):
    draws, sources, method, _ = gather_draws([_shard(tmp_path / "b.pt", (3, 5)), _shard(tmp_path / "a.pt", (0, 3))])
    assert draws.shape == (5, 2, 2, 4, 4) and sources == ["galaxy", "random"] and method == "ddprism"
    lap = tmp_path / "lap1.pt"
    torch.save({"kind": "diffusion", "chain": "galaxy", "lap": 1, "params": {"seed": 0, "em": {"laps": 2}},
                "losses": {"galaxy": [1.0, 0.5, 0.25]}, "sources": {"galaxy": {"model": {"w": torch.ones(2)}}}}, lap)
    samples = tmp_path / "samples1.pt"
    torch.save({"chain": "galaxy", "lap": 1, "sources": ["galaxy"], "samples": torch.zeros(3, 1, 4, 4)}, samples)
    loss_curves([lap], tmp_path / "loss.png")
    em_evolution([samples], tmp_path / "laps.png")
    assert (tmp_path / "loss.png").exists() and (tmp_path / "laps.png").exists()


@pytest.mark.parametrize("reader", [
    lambda p, tmp: gather_draws([p]),
    lambda p, tmp: loss_curves([p], tmp / "loss.png"),
    lambda p, tmp: em_evolution([p], tmp / "laps.png"),
    lambda p, tmp: load_torch(p),
])
def test_other_objects_are_refused_without_running_them(tmp_path, reader):
    path = _shard(tmp_path / "shard0.pt", (0, 1), extra=Payload())
    RAN.clear()
    with pytest.raises(InputError, match="shard0.pt: not a plain torch file"):
        reader(path, tmp_path)
    assert RAN == []
