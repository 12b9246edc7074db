"""SURF (arXiv 2606.04921) on the contrastive toy with known truth: the remixing flow beats its initial
regression teacher and the observation taken as the galaxy, and its draws add up to the mixtures."""

from __future__ import annotations

import pytest
import torch

from galsep.baselines.surf import SURF, SURFNet, fit_surf, hybrid_teacher

from .conftest import contrastive_toy, masked_mse

pytestmark = pytest.mark.usefixtures("single_thread")

NB = NT = 256
SETTINGS = dict(steps=300, regression_steps=150, batch_size=32, lr=2e-3, channels=(16, 32), ema=0.98,
                beta_fraction=0.5, teacher_steps=5, blocks=6)


@pytest.fixture(scope="module")
def toy():
    return contrastive_toy(NB, NT, 8, seed=0, noise=0.05)


def views(toy):
    R, G = slice(0, NB), slice(NB, None)
    return (toy.y[G], toy.variance[G], toy.mask[G]), (toy.y[R], toy.variance[R], toy.mask[R])


@pytest.fixture(scope="module")
def fitted(toy):
    torch.set_num_threads(1)
    (y, v, m), (yr, vr, mr) = views(toy)
    lines: list[str] = []
    model = fit_surf(y, v, m, yr, vr, mr, generator=torch.Generator().manual_seed(1), log=lines.append,
                     truth=toy.truth[NB:, 0], **SETTINGS)
    return model, lines


def test_surf_beats_its_regression_teacher_and_the_observation(toy, fitted):
    model, lines = fitted
    (y, v, m), _ = views(toy)
    truth = toy.truth[NB:, 0]
    trace = model.trace
    assert [h["step"] for h in trace] == [0, 50, 100, 150, 200, 250, 300]
    assert len(lines) == 1 + len(trace) and all("teacher/student gap" in line for line in lines[1:])
    assert trace[0]["beta"] == 1 and trace[-1]["beta"] == 0
    # at beta = 1 the teacher is the regression teacher
    assert trace[0]["mse_teacher"] == pytest.approx(trace[0]["mse_regression"], rel=1e-5)
    regression = sum(h["mse_regression"] for h in trace) / len(trace)  # G^0 varies with its random cutouts

    draws = model.separate(y, v, m, 8, steps=10, generator=torch.Generator().manual_seed(2))
    assert draws.shape == (NT, 8, 2, 8, 8) and torch.isfinite(draws).all()
    galaxy = draws[:, :, 0].mean(1)
    mse = masked_mse(galaxy, truth, m)
    assert mse < 0.5 * regression, (mse, regression)
    assert masked_mse(draws[:, 0, 0], truth, m) < 0.7 * regression  # a single draw too
    assert mse < 0.1 * masked_mse(y, truth, m)  # the observation as the galaxy
    assert trace[-1]["mse_teacher"] < 0.6 * regression and trace[-1]["gap"] < 0.1 * trace[0]["gap"]
    # generative: the draws differ, more where the galaxy is uncertain than the noise alone allows
    assert draws[:, :, 0].std(1).mean() > 0.01

    # the separated sources reproduce the mixtures on observed pixels (far within the noise),
    # and are zero where the mixture is unobserved
    total = draws.sum(2)
    assert (m[:, None] * (total - y[:, None])).abs().max() < 1e-3 * v.sqrt().min()
    assert (draws * (1 - m)[:, None, None]).abs().max() == 0


def test_state_round_trips(toy, fitted):
    model, _ = fitted
    (y, v, m), _ = views(toy)
    again = SURF.from_state(model.state())
    a = model.separate(y[:20], v[:20], m[:20], 2, steps=3, generator=torch.Generator().manual_seed(3))
    b = again.separate(y[:20], v[:20], m[:20], 2, steps=3, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and again.trace == model.trace


def test_hybrid_teacher_endpoints():
    net = SURFNet((4, 8))
    model = SURF(net, torch.zeros(8, 8), torch.ones(8, 8))
    y, m = torch.randn(3, 8, 8), torch.ones(3, 8, 8)
    x0, g0 = model.start(y, m, torch.randn(3, 8, 8)), torch.randn(3, 8, 8)
    assert torch.equal(hybrid_teacher(model, net, x0, g0, 1.0, 5, y, m, m), g0)
    # a fresh net has zero velocity: the flow teacher keeps x at the point it reached at t = beta
    assert torch.allclose(hybrid_teacher(model, net, x0, g0, 0.25, 5, y, m, m), 0.75 * x0 + 0.25 * g0)


def test_reproducible_and_bad_input(toy):
    (y, v, m), (yr, vr, mr) = views(toy)
    kw = {**SETTINGS, "steps": 3, "regression_steps": 2, "channels": (4,), "blocks": 1}
    a = fit_surf(y, v, m, yr, vr, mr, generator=torch.Generator().manual_seed(5), **kw)
    b = fit_surf(y, v, m, yr, vr, mr, generator=torch.Generator().manual_seed(5), **kw)
    assert all(torch.equal(p, q) for p, q in zip(a.net.parameters(), b.net.parameters(), strict=True))
    with pytest.raises(ValueError, match="views.downsample_2x"):
        fit_surf(y, v, m, yr, vr, mr, generator=torch.Generator(), mixture_factor=torch.full((NT,), 2), **kw)
    with pytest.raises(ValueError, match="image size"):
        fit_surf(y, v, m, yr[:, :4, :4], vr[:, :4, :4], mr[:, :4, :4], generator=torch.Generator(), **kw)
    with pytest.raises(ValueError, match="ema"):
        fit_surf(y, v, m, yr, vr, mr, generator=torch.Generator(), **{**kw, "ema": 1.0})
    with pytest.raises(ValueError, match="native"):
        fit_surf(y, v, m, yr, vr, mr, generator=torch.Generator(), **{**kw, "native_fraction": 2.0})
