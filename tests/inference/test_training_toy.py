"""Training loop mechanics, and a small MLP prior learned on two moons that PQMass cannot tell from data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import Tensor

from galsep.inference.denoiser import EDMDenoiser
from galsep.inference.nets import MLP, UNet
from galsep.inference.samplers import ddim_sample, pc_sample
from galsep.inference.schedule import VESchedule
from galsep.inference.training import EMA, batches, lr_factor, train_denoiser

pytestmark = pytest.mark.usefixtures("single_thread")

SCHEDULE = VESchedule(1e-3, 1e1)


def two_moons(n: int, generator: torch.Generator) -> Tensor:
    """Two interleaved half circles with 0.05 noise, standardised to roughly zero mean, unit variance, (n, 2)."""
    upper = torch.rand(n, generator=generator) < 0.5
    th = math.pi * torch.rand(n, generator=generator)
    a = torch.stack((th.cos(), th.sin()), 1)
    b = torch.stack((1 - th.cos(), 0.5 - th.sin()), 1)
    x = torch.where(upper[:, None], a, b) + 0.05 * torch.randn(n, 2, generator=generator)
    return (x - torch.tensor([0.5, 0.25])) / torch.tensor([0.87, 0.5])


@pytest.fixture
def np_seed():
    """pqm draws its reference points from numpy's global RNG: seed it for this test, then restore."""
    state = np.random.get_state()
    np.random.seed(0)
    yield
    np.random.set_state(state)


def pqm_median_p(x: Tensor, y: Tensor) -> float:
    from pqm import pqm_pvalue

    # 20 re-tessellations with 100 reference points (about 40 points per cell); the median p-value is
    # stable against one unlucky tessellation
    p = pqm_pvalue(x.numpy(), y.numpy(), num_refs=100, re_tessellation=20)
    return float(np.median(p))


def test_two_moons_prior_passes_pqmass_and_gaussian_fails(np_seed) -> None:
    g = torch.Generator().manual_seed(0)
    train, held_out = two_moons(4000, g), two_moons(2000, g)
    den = EDMDenoiser(MLP(2, hidden=(128, 128, 128), emb_features=32))
    # about 10-20 s on two CPU cores
    res = train_denoiser(den, train, schedule=SCHEDULE, steps=2000, batch_size=256, lr=2e-3,
                         lr_schedule="cosine", grad_clip=1.0, ema_decay=0.99,
                         generator=torch.Generator().manual_seed(1))
    assert len(res.losses) == 2000
    assert np.mean(res.losses[-200:]) < np.mean(res.losses[:200])
    with torch.no_grad():
        x1 = SCHEDULE.sigma_max * torch.randn(2000, 2, generator=torch.Generator().manual_seed(2))
        pc = pc_sample(res.ema, x1, SCHEDULE, steps=128, corrections=1, tau=5e-2,
                       generator=torch.Generator().manual_seed(3))
        ddim = ddim_sample(res.ema, x1, SCHEDULE, steps=128)
    # a Gaussian with the data's mean and covariance: the same test must reject it
    chol = torch.linalg.cholesky(torch.cov(train.T))
    gauss = train.mean(0) + torch.randn(2000, 2, generator=g) @ chol.T

    # Under the null the median p-value is about 0.5 (held-out vs training data gives ~0.4 here); the
    # trained prior gives 0.1-0.35 across training seeds, so 1e-2 is a robust bar. The Gaussian fit is
    # rejected with p ~ 1e-229, so the test has ample power at this sample size.
    assert pqm_median_p(pc, held_out) > 1e-2
    assert pqm_median_p(ddim, held_out) > 1e-2
    assert pqm_median_p(gauss, held_out) < 1e-6


def test_training_is_seeded_and_restartable() -> None:
    data = torch.randn(64, 8, 8, generator=torch.Generator().manual_seed(0))

    def run(seed: int, den: EDMDenoiser | None = None) -> tuple[EDMDenoiser, list[float]]:
        torch.manual_seed(123)  # same initial weights
        if den is None:
            den = EDMDenoiser(UNet(channels=(8, 16), blocks=1, emb_features=16))
        res = train_denoiser(den, data, schedule=SCHEDULE, steps=5, batch_size=24, lr=1e-3,
                             lr_schedule="linear", grad_clip=1.0, ema_decay=0.5,
                             generator=torch.Generator().manual_seed(seed))
        return den, res.losses

    (a, la), (b, lb), (_, lc) = run(1), run(1), run(2)
    assert la == lb and la != lc
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    # a second call (next EM lap) continues from the current weights with a fresh optimiser
    before = [p.detach().clone() for p in a.parameters()]
    _, l2 = run(1, a)
    assert len(l2) == 5
    assert any(not torch.equal(p, q) for p, q in zip(before, a.parameters()))


def test_lr_factors() -> None:
    for kind in ("cosine", "linear"):
        f = lr_factor(kind, 100)
        vals = [f(k) for k in range(101)]
        assert vals[0] == 1.0 and vals[-1] == pytest.approx(0.0, abs=1e-12)
        assert all(u >= v for u, v in zip(vals, vals[1:]))
    assert lr_factor("cosine", 100)(50) == pytest.approx(0.5)
    assert lr_factor("constant", 10)(7) == 1.0
    with pytest.raises(ValueError):
        lr_factor("step", 10)


def test_batches_cover_every_epoch() -> None:
    """Each consecutive run of n indices is a permutation of range(n), however batches straddle epochs."""
    n, bs = 10, 4
    it = batches(n, bs, torch.Generator().manual_seed(0))
    stream = torch.cat([next(it) for _ in range(15)])  # 60 indices = 6 epochs
    for e in range(6):
        assert sorted(stream[e * n:(e + 1) * n].tolist()) == list(range(n))
    big = next(batches(3, 7, torch.Generator().manual_seed(0)))  # batch larger than the data
    assert big.shape == (7,) and set(big.tolist()) == {0, 1, 2}


def d4(image: Tensor) -> list[Tensor]:
    """The 8 images of ``image`` (..., H, H) under the square's symmetries, built from transposes and flips."""
    out = []
    for m in (image, image.transpose(-2, -1)):
        out += [m, m.flip(-1), m.flip(-2), m.flip(-2, -1)]
    return out


def test_training_sees_augmented_batches_only_when_asked() -> None:
    g = torch.Generator().manual_seed(0)
    data = torch.randn(6, 8, 8, generator=g)

    class Recorder(EDMDenoiser):
        seen: list[Tensor]

        def loss(self, x: Tensor, sigma: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
            self.seen.append(x.detach().clone())
            return super().loss(x, sigma, generator=generator)

    def seen(augment: str) -> Tensor:
        den = Recorder(UNet(channels=(4,), blocks=1, attention_levels=(), emb_features=8))
        den.seen = []
        train_denoiser(den, data, schedule=SCHEDULE, steps=10, batch_size=6, lr=1e-3, lr_schedule="constant",
                       grad_clip=1.0, ema_decay=0.9, augment=augment, generator=torch.Generator().manual_seed(1))
        return torch.cat(den.seen)  # (60, 8, 8)

    images = torch.stack([torch.stack(d4(x)) for x in data])  # (6, 8, 8, 8)

    def elements(batch: Tensor) -> Tensor:
        """Which (training image, symmetry) each row of ``batch`` is: (rows, 6, 8) booleans."""
        return (batch[:, None, None] == images[None]).flatten(3).all(-1)

    plain, turned = elements(seen("none")), elements(seen("dihedral"))
    assert plain[..., 0].any(-1).all() and not plain[..., 1:].any()  # the data as stored
    assert (turned.flatten(1).sum(1) == 1).all()  # still one training image each, under one symmetry
    assert turned[..., 1:].any()  # and not only the identity
    with pytest.raises(ValueError, match="square images"):
        train_denoiser(EDMDenoiser(MLP(2, hidden=(8,), emb_features=8)), torch.zeros(4, 2), schedule=SCHEDULE,
                       steps=1, batch_size=2, lr=1e-3, lr_schedule="constant", grad_clip=1.0, ema_decay=0.9,
                       augment="dihedral", generator=g)
    with pytest.raises(ValueError, match="unknown augment"):
        train_denoiser(EDMDenoiser(MLP(2, hidden=(8,), emb_features=8)), torch.zeros(4, 2), schedule=SCHEDULE,
                       steps=1, batch_size=2, lr=1e-3, lr_schedule="constant", grad_clip=1.0, ema_decay=0.9,
                       augment="rotate", generator=g)


def test_ema_starts_at_the_model_and_follows_the_recursion() -> None:
    torch.manual_seed(0)
    model = MLP(2, hidden=(8,), emb_features=4)
    start = [p.detach().clone() for p in model.parameters()]
    ema = EMA(model, 0.9)
    snapshots = []
    for _ in range(3):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        snapshots.append([p.detach().clone() for p in model.parameters()])
        ema.update(model)
    # shadow = 0.9^3 start + sum_k 0.1 * 0.9^(2 - k) theta_k, parameter by parameter
    for i, s in enumerate(ema.shadow.parameters()):
        want = 0.9**3 * start[i] + sum(0.1 * 0.9 ** (2 - k) * snapshots[k][i] for k in range(3))
        torch.testing.assert_close(s, want)
        assert not s.requires_grad
    assert not ema.shadow.training
