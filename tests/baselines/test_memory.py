"""CUDA out of memory in the peer methods (issue 18 item 5), simulated on the CPU: the network, or the one
function of a closed-form method that holds a chunk's memory, raises torch's out-of-memory error above a
number of rows. Each method is driven through its :class:`~galsep.methods.base.Method` adapter inside the
batch setting the separation stage opens, so the record checked is the one the stage logs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor, nn

import galsep.baselines.clvm as clvm_module
import galsep.baselines.pcpca as pcpca_module
from galsep.baselines.nes import NESNet
from galsep.baselines.surf import SURFNet
from galsep.errors import OutOfMemoryError
from galsep.inference.memory import batch_setting
from galsep.inference.priors import Prior
from galsep.inference.schedule import VESchedule
from galsep.methods import get
from galsep.separation import contrast

from .conftest import contrastive_toy

pytestmark = pytest.mark.usefixtures("single_thread")


def _oom(rows: int, limit: int, seen: list[int]) -> None:
    seen.append(rows)
    if rows > limit:
        raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {rows} rows (simulated)")


class Limited(nn.Module):
    """``net`` that runs out of 'memory' above ``limit`` rows, recording the rows of every call."""

    def __init__(self, net: Callable[..., Tensor], limit: int) -> None:
        super().__init__()
        self.net, self.limit, self.seen = net, limit, list[int]()

    def forward(self, x: Tensor, *args: Tensor) -> Tensor:
        _oom(x.shape[0], self.limit, self.seen)
        return self.net(x, *args)


def limited(fn: Callable[..., Any], limit: int, seen: list[int]) -> Callable[..., Any]:
    """``fn`` running out of memory when its first argument has more than ``limit`` rows."""

    def wrapper(x: Tensor, *args: Any, **kwargs: Any) -> Any:
        _oom(x.shape[0], limit, seen)
        return fn(x, *args, **kwargs)

    return wrapper


def stage_draw(name: str, model: Any, obs: Any, samples: int, settings: dict[str, Any], seed: int = 3
               ) -> tuple[Tensor, str]:
    """The draws and the batch line of the separation stage (galsep.separation.separation_shard opens
    this batch setting around ``Method.draw`` and logs its ``describe()``)."""
    with batch_setting(f"methods.{name}.sampler.batch_size") as stage:
        draws = get(name).draw(model, obs, samples, settings, generator=torch.Generator().manual_seed(seed))
    return draws, stage.describe()


def fit(name: str, obs: Any, settings: dict[str, Any]) -> Any:
    return get(name).fit(contrast(obs), settings, generator=torch.Generator().manual_seed(0), log=lambda _: None)


@pytest.fixture(scope="module")
def toy() -> Any:
    return contrastive_toy(12, 12, 8, seed=0)


# ------------------------------------------------------------------ BASIS (sampling, methods.basis.batch_size)

class Shrink(nn.Module):
    """The denoiser of a standard normal prior, E[x | x + sigma eps] = x / (1 + sigma^2)."""

    def forward(self, x: Tensor, sigma: Tensor) -> Tensor:
        return x / (1 + sigma[:, None, None] ** 2)


def test_basis_halves_its_chunks_and_the_stage_logs_the_batch(toy) -> None:
    obs = toy.rows(torch.arange(5))
    settings = {"levels": 3, "steps_per_level": 1, "step_size": 1e-5, "batch_size": 8}

    def run(limit: int) -> tuple[Tensor, str, list[int]]:
        net = Limited(Shrink(), limit)
        priors = [Prior(net, VESchedule(1e-2, 2.0)), Prior(Shrink(), VESchedule(1e-2, 2.0))]
        draws, line = stage_draw("basis", priors, obs, 2, settings)
        return draws, line, net.seen

    draws, line, seen = run(limit=3)
    assert draws.shape == (5, 2, 2, 8, 8) and torch.isfinite(draws).all()
    # 10 rows (5 x 2 draws): 8 fails, 4 fails, then chunks of 2; never back up to 8
    assert seen[:2] == [8, 4] and set(seen[2:]) == {2}
    assert line == "batch 8 -> 2 after CUDA out of memory"
    assert torch.equal(draws, run(limit=3)[0])  # the retried chunks draw from the same generator: seeded
    assert run(limit=100)[1] == "batch 8"
    with pytest.raises(OutOfMemoryError) as err:
        run(limit=0)
    assert "with batch 1: set methods.basis.batch_size lower" in str(err.value)


# ------------------------------------------------------- PCPCA, CLVMs (fixed draw batch, fit methods.X.batch_size)

PCPCA = {"latent": 2, "gamma": 0.3, "steps": 3, "lr": 1e-3, "batch_size": 6}
CLVM = {"latents": {"galaxy": 2, "random": 2}, "steps": 3, "lr": 1e-3, "batch_size": 6}
VAE = CLVM | {"hidden": 8, "layers": 1, "dropout": 0.0}


@pytest.mark.parametrize(("name", "settings", "patch"), [
    ("pcpca", PCPCA, (pcpca_module, "latent_posterior")),
    ("clvm_linear", CLVM, (clvm_module, "latent_posterior")),
    ("clvm_vae", VAE, None),  # its encoder, patched on the model
])
def test_closed_form_draws_halve_a_fixed_batch(toy, monkeypatch, name, settings, patch) -> None:
    model = fit(name, toy, settings)
    seen: list[int] = []

    def draw(limit: int) -> tuple[Tensor, str]:
        with monkeypatch.context() as m:
            if patch is None:
                m.setattr(model, "encode", limited(model.encode, limit, seen))
            else:
                m.setattr(*patch, limited(getattr(*patch), limit, seen))
            return stage_draw(name, model, toy, 2, settings)

    draws, line = draw(limit=7)
    assert draws.shape[:3] == (24, 2, 2) and torch.isfinite(draws[:, :, 0]).all()
    # the draw batch is fixed (256, over the 24 rows: one chunk of 24): 24 fails, 12 fails, then 6 at a time
    assert seen[:2] == [24, 12] and set(seen[2:]) == {6}
    assert line == "batch 256 -> 6 after CUDA out of memory"
    with pytest.raises(OutOfMemoryError) as err:
        draw(limit=0)
    msg = str(err.value)
    # no setting sizes these chunks: the message says so instead of naming a key that does not exist
    assert "with batch 1" in msg and "device: cpu" in msg and "batch_size" not in msg


@pytest.mark.parametrize(("name", "settings", "target"), [
    ("pcpca", PCPCA, (pcpca_module.PCPCA, "log_likelihood")),
    ("clvm_linear", CLVM, (clvm_module.CLVMLinear, "log_likelihood")),
    ("clvm_vae", VAE, (clvm_module.CLVMVAE, "elbo")),
])
def test_a_fit_step_out_of_memory_names_the_methods_batch_size(toy, monkeypatch, name, settings, target) -> None:
    original = getattr(*target)
    calls: list[int] = []

    def fails_on_the_second_call(self: Any, y: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        calls.append(y.shape[0])
        if len(calls) == 2:  # not the first step's first call: the step number is the second step's
            raise torch.OutOfMemoryError("simulated")
        return original(self, y, *args, **kwargs)

    monkeypatch.setattr(*target, fails_on_the_second_call)
    with pytest.raises(OutOfMemoryError) as err:
        fit(name, toy, settings)
    msg = str(err.value)
    # PCPCA calls the likelihood twice a step (target, background): its second call is step 1's
    step = "step 1/3" if name == "pcpca" else "step 2/3"
    assert f"fitting ({step}) with batch 6: set methods.{name}.batch_size lower" in msg, msg


# ----------------------------------------------------------------------------------------- NES and SURF

NES = {"iterations": 1, "steps": 2, "batch_size": 8, "lr": 1e-3, "channels": [4, 8]}
SURF = {"steps": 2, "regression_steps": 2, "batch_size": 8, "lr": 1e-3, "channels": [4, 8], "ema": 0.9,
        "beta_fraction": 0.5, "teacher_steps": 1, "native_fraction": 0.0, "sample_steps": 2, "draw_batch_size": 8}


def test_nes_separation_halves_its_chunks(toy) -> None:
    model = fit("nes", toy, NES)
    model.net = Limited(model.net, 5)
    draws, line = stage_draw("nes", model, toy, 1, {})
    assert draws.shape == (24, 1, 2, 8, 8) and torch.isfinite(draws).all()
    assert model.net.seen[:3] == [24, 12, 6] and set(model.net.seen[3:]) == {3}
    assert line == "batch 256 -> 3 after CUDA out of memory"
    model.net.limit = 100
    again, _ = stage_draw("nes", model, toy, 1, {})
    assert torch.allclose(again, draws, atol=1e-6)  # a deterministic network: the chunks do not matter


def test_surf_draws_halve_draw_batch_size_and_stay_seeded(toy) -> None:
    model = fit("surf", toy, SURF)
    real = model.net

    def draw(limit: int) -> tuple[Tensor, str, list[int]]:
        model.net = Limited(real, limit)
        draws, line = stage_draw("surf", model, toy.rows(torch.arange(6)), 2, SURF)
        return draws, line, model.net.seen

    draws, line, seen = draw(3)
    assert draws.shape == (6, 2, 2, 8, 8) and torch.isfinite(draws).all()
    # 12 rows (6 x 2 draws) in chunks of draw_batch_size 8: 8 fails, 4 fails, then 2 at a time
    assert seen[:2] == [8, 4] and set(seen[2:]) == {2}
    assert line == "batch 8 -> 2 after CUDA out of memory"
    assert torch.equal(draws, draw(3)[0])
    with pytest.raises(OutOfMemoryError) as err:
        draw(0)
    assert "with batch 1: set methods.surf.draw_batch_size lower" in str(err.value)


@pytest.mark.parametrize(("name", "settings", "net", "what"), [
    ("nes", NES, NESNet, "training NES (iteration 1/1, step 1/2)"),
    ("surf", SURF, SURFNet, "training SURF's regression teacher (step 1/2)"),
])
def test_a_network_fit_out_of_memory_names_the_methods_batch_size(toy, monkeypatch, name, settings, net, what
                                                                  ) -> None:
    forward = net.forward

    def small_memory(self: nn.Module, x: Tensor, *args: Tensor) -> Tensor:
        _oom(x.shape[0], 4, [])
        return forward(self, x, *args)

    monkeypatch.setattr(net, "forward", small_memory)
    with pytest.raises(OutOfMemoryError) as err:
        fit(name, toy, settings)
    assert f"{what} with batch 8: set methods.{name}.batch_size lower" in str(err.value), str(err.value)
