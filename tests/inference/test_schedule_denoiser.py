"""VE schedule, Beta(3, 3) times, EDM preconditioning and loss, networks, EMA."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from galsep.inference.denoiser import EDMDenoiser, loss_weight, preconditioning
from galsep.inference.nets import MLP, AttentionBlock, UNet, sinusoidal_embedding
from galsep.inference.schedule import VESchedule, sample_t
from galsep.inference.training import EMA

pytestmark = pytest.mark.usefixtures("single_thread")

# --- schedule ---------------------------------------------------------------------------------------


def test_schedule_endpoints_monotone_and_inverse() -> None:
    s = VESchedule(1e-3, 1e1)
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    sig = s.sigma(t)
    assert sig[0].item() == pytest.approx(1e-3, rel=1e-12)
    assert sig[-1].item() == pytest.approx(1e1, rel=1e-12)
    assert (sig.diff() > 0).all()
    # geometric: log sigma is linear in t, so the midpoint is the geometric mean
    assert s.sigma(torch.tensor(0.5, dtype=torch.float64)).item() == pytest.approx(math.sqrt(1e-3 * 1e1), rel=1e-12)
    torch.testing.assert_close(s.t(sig), t)
    with pytest.raises(ValueError):
        VESchedule(1.0, 0.5)


def test_beta33_times() -> None:
    """Beta(3, 3): mean 1/2, variance ab / ((a+b)^2 (a+b+1)) = 1/28, support (0, 1)."""
    n = 200_000
    t = sample_t(n, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert ((t > 0) & (t < 1)).all()
    # 5 standard errors: the mean's SE is sqrt(var / n); Beta(3, 3) has excess kurtosis -2/3, so the
    # sample variance's SE is var sqrt((m4/var^2 - 1) / n) = var sqrt(4 / (3 n))
    var = 1 / 28
    assert t.mean().item() == pytest.approx(0.5, abs=5 * math.sqrt(var / n))
    assert t.var().item() == pytest.approx(var, abs=5 * var * math.sqrt(4 / (3 * n)))
    # the CDF of Beta(3, 3) is 10 u^3 - 15 u^4 + 6 u^5: check quantiles (binomial SE sqrt(p (1 - p) / n))
    for u in (0.1, 0.3, 0.5, 0.8):
        p = 10 * u**3 - 15 * u**4 + 6 * u**5
        assert (t < u).double().mean().item() == pytest.approx(p, abs=5 * math.sqrt(p * (1 - p) / n))
    torch.testing.assert_close(sample_t(10, generator=torch.Generator().manual_seed(1)),
                               sample_t(10, generator=torch.Generator().manual_seed(1)))


# --- preconditioning --------------------------------------------------------------------------------


@pytest.mark.parametrize("sigma_data", [1.0, 0.5])
def test_edm_identities(sigma_data: float) -> None:
    sig = torch.logspace(-4, 3, 50, dtype=torch.float64)
    c_skip, c_out, c_in, c_noise = preconditioning(sig, sigma_data)
    sd2 = sigma_data**2
    # Karras et al. (2022) eq. 114-117 are derived from: unit-variance network input
    torch.testing.assert_close(c_in**2 * (sd2 + sig**2), torch.ones_like(sig))
    # unit-variance training target: (sd^2 (1 - c_skip)^2 + c_skip^2 s^2) / c_out^2 = 1
    torch.testing.assert_close((sd2 * (1 - c_skip) ** 2 + c_skip**2 * sig**2) / c_out**2, torch.ones_like(sig))
    # c_skip minimises that target variance: d/dc_skip [sd^2 (1-c)^2 + c^2 s^2] = 0
    torch.testing.assert_close(-sd2 * (1 - c_skip) + c_skip * sig**2, torch.zeros_like(sig), atol=1e-12, rtol=0)
    # and the two relations c_skip + c_out^2/sd^2 = 1 ... and c_skip = sd^2 c_in^2
    torch.testing.assert_close(c_skip + c_out**2 / sd2, torch.ones_like(sig))
    torch.testing.assert_close(c_skip, sd2 * c_in**2)
    torch.testing.assert_close(c_noise, sig.log())
    # loss weight is 1 / c_out^2, which is 1 + 1/s^2 when sigma_data = 1
    torch.testing.assert_close(loss_weight(sig, sigma_data) * c_out**2, torch.ones_like(sig))
    if sigma_data == 1.0:
        torch.testing.assert_close(loss_weight(sig), 1 + 1 / sig**2)


class Zero(nn.Module):
    def forward(self, x: Tensor, log_sigma: Tensor) -> Tensor:
        return torch.zeros_like(x)


class Const(nn.Module):
    """Returns a fixed output and records the inputs it saw."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def forward(self, x: Tensor, log_sigma: Tensor) -> Tensor:
        self.seen = (x, log_sigma)
        return torch.full_like(x, self.value)


def test_zero_net_gives_c_skip_and_net_inputs() -> None:
    x = torch.randn(4, 3, 5, dtype=torch.float64)
    sig = torch.tensor([1e-3, 0.1, 1.0, 30.0], dtype=torch.float64)
    c_skip, c_out, c_in, _ = preconditioning(sig)
    torch.testing.assert_close(EDMDenoiser(Zero())(x, sig), c_skip[:, None, None] * x)
    net = Const(2.0)
    out = EDMDenoiser(net)(x, sig)
    torch.testing.assert_close(out, c_skip[:, None, None] * x + 2.0 * c_out[:, None, None])
    torch.testing.assert_close(net.seen[0], c_in[:, None, None] * x)
    torch.testing.assert_close(net.seen[1], sig.log())


def test_loss_weighting() -> None:
    """With D = c_skip x_t (zero net) and x = 1 the per-element loss is w (a + b eps)^2 with
    a = 1 - c_skip, b = c_skip s, w = 1 + 1/s^2: mean w (a^2 + b^2), variance w^2 (4 a^2 b^2 + 2 b^4)."""
    den = EDMDenoiser(Zero())
    n, d, s = 20_000, 4, 0.5
    x = torch.ones(n, d, dtype=torch.float64)
    sig = torch.full((n,), s, dtype=torch.float64)
    c = preconditioning(sig[:1])[0].item()
    a, b, w = 1 - c, c * s, 1 + 1 / s**2
    se = w * math.sqrt(4 * a**2 * b**2 + 2 * b**4) / math.sqrt(n * d)
    loss = den.loss(x, sig, generator=torch.Generator().manual_seed(0)).item()
    assert loss == pytest.approx(w * (a**2 + b**2), abs=5 * se)
    # a perfect denoiser on this point mass (D = x at every sigma) has zero loss
    exact = EDMDenoiser(Zero())
    exact.forward = lambda x_t, sigma: torch.ones_like(x_t)  # type: ignore[method-assign]
    assert exact.loss(x, sig).item() == 0.0


# --- networks ---------------------------------------------------------------------------------------


def test_sinusoidal_embedding() -> None:
    e = sinusoidal_embedding(torch.tensor([0.0, 1.0, -2.0]), 8)
    assert e.shape == (3, 8)
    torch.testing.assert_close(e[0], torch.tensor([0.0] * 4 + [1.0] * 4))  # sin 0, cos 0
    torch.testing.assert_close(e[:, :4] ** 2 + e[:, 4:] ** 2, torch.ones(3, 4))
    assert e[1, 0].item() == pytest.approx(math.sin(1.0))  # highest frequency is 1


@pytest.mark.parametrize("shape", [(2, 16, 16), (3, 8, 24)])
def test_unet_shapes_and_attention(shape: tuple[int, ...]) -> None:
    net = UNet(channels=(8, 16, 16), blocks=(1, 2, 1), attention_levels=(2,), heads=2, emb_features=16)
    x = torch.randn(shape)
    assert net(x, torch.zeros(shape[0])).shape == shape
    # attention sits exactly at the configured level, after each residual block
    for i, (down, up) in enumerate(zip(net.down, net.up)):
        n_att = sum(isinstance(m, AttentionBlock) for m in (*down.layers, *up.layers))
        assert n_att == (2 * (1, 2, 1)[i] if i == 2 else 0)
    # the attention runs, at the coarse resolution H/4 x W/4
    seen = []
    handle = net.down[2].layers[1].register_forward_hook(lambda m, i, o: seen.append(o.shape))
    net(x, torch.zeros(shape[0]))
    handle.remove()
    assert seen == [(shape[0], 16, shape[1] // 4, shape[2] // 4)]
    with pytest.raises(ValueError):
        net(torch.randn(1, 10, 10), torch.zeros(1))


def test_unet_default_and_noise_conditioning() -> None:
    net = UNet()
    x = torch.randn(2, 16, 16)
    out_a = net(x, torch.full((2,), -2.0))
    out_b = net(x, torch.full((2,), 2.0))
    assert out_a.shape == x.shape
    assert not torch.allclose(out_a, out_b)  # the noise level reaches the output
    assert sum(isinstance(m, AttentionBlock) for m in net.modules()) == 2 * 2  # level 1: 2 blocks down, 2 up


def test_mlp_shapes_and_conditioning() -> None:
    net = MLP(3, hidden=(32, 32), emb_features=8)
    x = torch.randn(5, 3)
    out = net(x, torch.zeros(5))
    assert out.shape == (5, 3)
    assert not torch.allclose(out, net(x, torch.ones(5)))


@pytest.mark.parametrize("make", [lambda: UNet(channels=(8, 16), blocks=1, emb_features=16),
                                  lambda: MLP(4, hidden=(16, 16), emb_features=8)])
def test_gradients_flow_and_func_vjp(make) -> None:
    torch.manual_seed(0)
    net = make()
    shape = (2, 8, 8) if isinstance(net, UNet) else (2, 4)
    den = EDMDenoiser(net)
    x, sig = torch.randn(shape), torch.tensor([0.3, 3.0])
    # a few optimiser steps move the adaLN gates off their small init; then every weight gets gradient
    opt = torch.optim.Adam(den.parameters(), lr=1e-2)
    for _ in range(3):
        opt.zero_grad()
        den.loss(x, sig).backward()
        opt.step()
    opt.zero_grad()
    den.loss(x, sig).backward()
    for name, p in den.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    # vjp through the denoiser (what MMPS needs) agrees between torch.func and autograd, and the
    # input is untouched (no in-place ops)
    x0 = x.clone()
    v = torch.randn(shape)
    out, vjp_fn = torch.func.vjp(lambda z: den(z, sig), x)
    (g_func,) = vjp_fn(v)
    xr = x.clone().requires_grad_(True)
    (g_auto,) = torch.autograd.grad(den(xr, sig), xr, v)
    torch.testing.assert_close(g_func, g_auto)
    assert torch.equal(x, x0)
    # and the vjp is the transpose of the Jacobian: <v, J u> = <J^T v, u> via a finite difference
    u = torch.randn(shape, dtype=torch.float64)
    den64 = den.double()
    x64, sig64 = x.double(), sig.double()
    eps = 1e-6
    ju = (den64(x64 + eps * u, sig64) - den64(x64 - eps * u, sig64)) / (2 * eps)
    _, vjp64 = torch.func.vjp(lambda z: den64(z, sig64), x64)
    (jtv,) = vjp64(v.double())
    assert (v.double() * ju).sum().item() == pytest.approx((jtv * u).sum().item(), rel=1e-6)


# --- EMA --------------------------------------------------------------------------------------------


def test_ema_math() -> None:
    model = nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.fill_(0.0)
        model.bias.fill_(0.0)
    ema = EMA(model, decay=0.9)
    assert not any(p.requires_grad for p in ema.shadow.parameters())
    for k in range(1, 6):
        with torch.no_grad():
            model.weight.fill_(float(k))
            model.bias.fill_(1.0)
        ema.update(model)
    # shadow = sum_k (1 - d) d^(n-k) w_k starting from 0
    d, n = 0.9, 5
    expected_w = sum((1 - d) * d ** (n - k) * k for k in range(1, n + 1))
    expected_b = 1 - d**n
    assert ema.shadow.weight[0, 0].item() == pytest.approx(expected_w, rel=1e-6)
    assert ema.shadow.bias.item() == pytest.approx(expected_b, rel=1e-6)
    assert ema.state_dict()["bias"].item() == pytest.approx(expected_b, rel=1e-6)
    assert model.weight[0, 0].item() == 5.0  # the model itself is untouched
    with pytest.raises(ValueError):
        EMA(model, decay=1.0)
