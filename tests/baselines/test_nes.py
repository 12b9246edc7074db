"""Neural Egg Separation on a tiny synthetic case: centred blobs (x) over wide off-centre blobs (b)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from galsep.baselines.nes import NES, NESNet, check_full_resolution, fit_nes


pytestmark = pytest.mark.usefixtures("single_thread")


def blobs(n: int, H: int, g: torch.Generator, *, centred: bool, count: int) -> Tensor:
    """Sums of ``count`` Gaussian blobs, (n, H, H): compact and centred, or wide anywhere."""
    ij = torch.arange(H, dtype=torch.float32)
    out = torch.zeros(n, H, H)
    for _ in range(count):
        if centred:
            c = (H - 1) / 2 + 0.5 * torch.randn(n, 2, generator=g)
            w, a = 0.8 + 1.7 * torch.rand(n, generator=g), 0.5 + 1.5 * torch.rand(n, generator=g)
        else:
            c = (H - 1) * torch.rand(n, 2, generator=g)
            w, a = 2.5 + 2.0 * torch.rand(n, generator=g), 0.2 + 0.6 * torch.rand(n, generator=g)
        r2 = (ij[:, None] - c[:, 0, None, None]) ** 2 + (ij - c[:, 1, None, None]) ** 2
        out += a[:, None, None] * torch.exp(-r2 / (2 * w[:, None, None] ** 2))
    return out


@pytest.fixture(scope="module")
def toy() -> dict[str, Tensor]:
    """y = x + b + noise with 5% of pixels missing; b observed alone in other samples."""
    H, N, M, noise = 16, 128, 128, 0.05
    g = torch.Generator().manual_seed(0)
    x = blobs(N, H, g, centred=True, count=1)
    y = x + blobs(N, H, g, centred=False, count=2) + noise * torch.randn(N, H, H, generator=g)
    b = blobs(M, H, g, centred=False, count=2) + noise * torch.randn(M, H, H, generator=g)
    my, mb = ((torch.rand(n, H, H, generator=g) > 0.05).float() for n in (N, M))
    return {"x": x * my, "y": y * my, "my": my, "b": b * mb, "mb": mb}


def mse(a: Tensor, b: Tensor, mask: Tensor) -> float:
    return float(((a - b) ** 2 * mask).sum() / mask.sum())


def test_nes_improves_over_its_initialisation(toy):
    lines: list[str] = []
    nes, history = fit_nes(toy["y"], toy["my"], toy["b"], toy["mb"], iterations=3, steps=120, batch_size=32,
                           lr=3e-3, channels=(8, 16), generator=torch.Generator().manual_seed(1),
                           truth=toy["x"], log=lines.append)
    assert [h["iteration"] for h in history] == [0, 1, 2, 3] and len(lines) == 4
    assert math.isnan(history[0]["loss"]) and all(h["loss"] > 0 for h in history[1:])
    # iteration 0 is the paper's constant mask x = 0.5 y
    assert history[0]["mse"] == pytest.approx(mse(0.5 * toy["y"], toy["x"], toy["my"]), rel=1e-5)
    assert history[-1]["mse"] < 0.6 * history[0]["mse"]

    x_hat, b_hat = nes.separate(toy["y"], toy["my"], batch_size=50)
    assert x_hat.shape == b_hat.shape == toy["y"].shape
    assert torch.allclose(x_hat + b_hat, toy["y"], atol=1e-6)  # a mask splits y, it adds nothing
    assert (x_hat[toy["my"] == 0] == 0).all()
    assert mse(x_hat, toy["x"], toy["my"]) == pytest.approx(history[-1]["mse"], rel=1e-4)
    assert mse(x_hat, toy["x"], toy["my"]) < 0.2 * mse(toy["y"], toy["x"], toy["my"])  # y as the galaxy

    # the state round-trips to the same separation
    again = NES.from_state(nes.state())
    assert torch.equal(again.separate(toy["y"], toy["my"])[0], x_hat)


def test_network_is_a_mask():
    net = NESNet((4, 8, 8))
    y, mask = 3 * torch.randn(5, 16, 16), (torch.rand(5, 16, 16) > 0.2).float()
    assert torch.allclose(net(y, mask), torch.full((5, 16, 16), 0.5))  # fresh: the constant mask
    with torch.no_grad():
        net.out.weight.normal_()
    m = net(y, mask)
    assert m.shape == (5, 16, 16) and (m >= 0).all() and (m <= 1).all() and m.std() > 0
    with pytest.raises(ValueError, match="divisible"):
        net(torch.zeros(1, 10, 10), torch.ones(1, 10, 10))


def test_network_learns_compact_sources_without_saturating():
    """Regression: on 32x32 cutouts whose galaxy covers few pixels, an unnormalised net saturated at m = 1
    everywhere within 60 steps even when trained on the true x (x_hat = 0 is a fixed point of NES)."""
    H, n = 32, 128
    g = torch.Generator().manual_seed(0)
    x = blobs(n, H, g, centred=True, count=1)
    b = blobs(n, H, g, centred=False, count=2) + 0.05 * torch.randn(n, H, H, generator=g)
    torch.manual_seed(0)
    net = NESNet((8, 16))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(60):
        j, k = torch.randint(n, (16,), generator=g), torch.randint(n, (16,), generator=g)
        z = b[j] + x[k]
        loss = (net(z, torch.ones_like(z)) * z - b[j]).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        m = net(b + x, torch.ones_like(b))
    galaxy = x > 0.5
    assert m[galaxy].mean() < 0.4 and m[~galaxy].mean() > m[galaxy].mean() + 0.2


def test_reproducible(toy):
    kw = dict(iterations=1, steps=5, batch_size=8, lr=1e-3, channels=(4,))
    a, _ = fit_nes(toy["y"], toy["my"], toy["b"], toy["mb"], generator=torch.Generator().manual_seed(2), **kw)
    b, _ = fit_nes(toy["y"], toy["my"], toy["b"], toy["mb"], generator=torch.Generator().manual_seed(2), **kw)
    assert torch.equal(a.separate(toy["y"], toy["my"])[0], b.separate(toy["y"], toy["my"])[0])


def test_bad_input(toy):
    y, my, b, mb = toy["y"], toy["my"], toy["b"], toy["mb"]
    kw = dict(iterations=1, steps=1, batch_size=4, lr=1e-3, channels=(4,), generator=torch.Generator())
    with pytest.raises(ValueError, match="views.downsample_2x"):
        fit_nes(y, my, b, mb, mixture_factor=torch.tensor([1, 2]), **kw)
    with pytest.raises(ValueError, match="views.downsample_2x"):
        NES(NESNet((4,))).separate(y, my, factor=torch.full((len(y),), 4))
    check_full_resolution(torch.ones(3, dtype=torch.long))  # full resolution passes
    with pytest.raises(ValueError, match=r"images \(N, H, W\)"):
        fit_nes(y.flatten(1), my.flatten(1), b, mb, **kw)
    with pytest.raises(ValueError, match="mask"):
        fit_nes(y, my[:, :8], b, mb, **kw)
    with pytest.raises(ValueError, match="image size"):
        fit_nes(y, my, b[:, :8, :8], mb[:, :8, :8], **kw)
    with pytest.raises(ValueError, match="truth"):
        fit_nes(y, my, b, mb, truth=y[:3], **kw)
