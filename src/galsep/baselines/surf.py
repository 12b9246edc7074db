"""SURF, Separation via Unsupervised Remixing Flow (Li, Scheibler, Tzinis, Shannon, Doucet & Hershey,
ICML 2026, arXiv 2606.04921), adapted to galsep's contrastive galaxy views.

SURF trains a mixture-consistent flow-matching separator (FLOSS, arXiv 2505.16119) from mixtures only:
an EMA teacher flow draws source samples on real mixtures, the samples are remixed into new mixtures,
and the student learns (by flow matching) to separate them back. Here, with two typed sources
(slot 0 the galaxy G, slot 1 everything else R = random light + pixel noise), every real galaxies-view
cutout is y = G + R on observed pixels, and the randoms view gives exact samples of R:

    state        x: the galaxy slot; the random slot is y - x, so G + R = y exactly (FLOSS, K = 2)
    path         x_0 = y/2 + mu_d + s_d z (z ~ N(0, I)),  x_1 = G,  x_t = (1 - t) x_0 + t x_1
    velocity     v(x_t, t | y, sigma, mask), trained on x_1 - x_0 (no PIT: the slots are typed)
    remix        y~ = G^_b + y^r_j with G^_b a teacher sample for galaxy cutout b and y^r_j a real
                 random cutout (a share can use the typed native remix G^_b + (y_pi(b) - G^_pi(b)))
    teacher      hybrid: the straight line from x_0 to the regression teacher's G^0 up to t = beta,
                 then the EMA flow (beta: 1 -> 0 over the first part of training), Euler steps
    initial G^0  a Noisier2Noise regression: f(y + y^r_j) ~ E[y | y + y^r_j], so E[G | z] = 2 f(z) - z

mu_d and s_d are the per-pixel mean and spread of d = (G - R)/2 implied by the views: E[G] = E[y] - E[y^r]
and Var[d] = Var[y]/4 for independent G and R. The network sees (x_t, y, sigma, mask, t). Masked
pixels (mask 0) carry no mixture: both slots are zero there (the project's convention for unobserved
pixels) and are left out of every loss. Downsampled observations are not supported.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from galsep.baselines.nes import check_full_resolution, conv_block
from galsep.errors import ConfigError
from galsep.inference.memory import fails_at_batch, run_chunked
from galsep.inference.training import EMA

__all__ = ["SURF", "SURFNet", "fit_surf", "hybrid_teacher"]

Log = Callable[[str], None]


class SURFNet(nn.Module):
    """A small U-Net (NES's block style) from ``inputs`` image channels plus t to one output channel.

    Each level has two 3x3 convolutions with GroupNorm and SiLU; levels are joined by 2x2 average pooling
    and nearest upsampling with skips. Time enters as a constant input channel and as a per-level bias
    (a linear map of sin/cos features). The output layer starts at zero.

    Args:
        channels: feature channels per level; H and W must be divisible by 2^(levels - 1).
        inputs: image channels of the input (the flow's (x_t, y, sigma, mask) or the regression's 3).
    """

    def __init__(self, channels: Sequence[int] = (16, 32), inputs: int = 4) -> None:
        super().__init__()
        if not channels or min(channels) < 1:
            raise ValueError(f"channels must be a non-empty list of positive ints, got {list(channels)}")
        self.channels, self.inputs = [int(c) for c in channels], int(inputs)
        c = self.channels
        self.down = nn.ModuleList(conv_block(cin, cout) for cin, cout in zip([inputs + 1] + c[:-1], c, strict=True))
        self.up = nn.ModuleList(conv_block(c[i] + c[i + 1], c[i]) for i in range(len(c) - 1))
        self.time = nn.ModuleList(nn.Linear(8, ch) for ch in c)
        self.out = nn.Conv2d(c[0], 1, 1)
        nn.init.zeros_(self.out.weight)
        assert self.out.bias is not None
        nn.init.zeros_(self.out.bias)

    def forward(self, h: Tensor, t: Tensor) -> Tensor:
        """h (B, inputs, H, W), t (B,) in [0, 1] -> (B, H, W)."""
        levels = len(self.channels)
        if h.shape[-1] % 2 ** (levels - 1) or h.shape[-2] % 2 ** (levels - 1):
            raise ConfigError(f"image size {tuple(h.shape[-2:])} not divisible by 2^{levels - 1} "
                              f"({levels} levels in the surf method's channels {self.channels})")
        freq = torch.arange(1, 5, device=h.device, dtype=h.dtype) * math.pi
        feat = torch.cat([torch.sin(t[:, None] * freq), torch.cos(t[:, None] * freq)], 1)  # (B, 8)
        h = torch.cat([h, t[:, None, None, None].expand(-1, 1, *h.shape[-2:])], 1)
        skips = []
        for i, block in enumerate(self.down):
            h = block(h if i == 0 else F.avg_pool2d(h, 2)) + self.time[i](feat)[:, :, None, None]
            skips.append(h)
        for i in reversed(range(levels - 1)):
            h = self.up[i](torch.cat((F.interpolate(h, scale_factor=2.0, mode="nearest"), skips[i]), 1))
        return self.out(h)[:, 0]


def _sigma(variance: Tensor, mask: Tensor) -> Tensor:
    return mask * variance.clamp_min(0).sqrt()


class SURF:
    """A trained SURF separator: the EMA flow and the path's per-pixel centre ``mu`` and spread ``spread``.

    Args:
        net: the velocity network v(x_t, t | y, sigma, mask) (the EMA teacher's weights).
        mu, spread: (H, W), the mean and standard deviation of d = (G - R)/2 (x_0 = y/2 + mu + spread z).
    """

    def __init__(self, net: SURFNet, mu: Tensor, spread: Tensor) -> None:
        self.net = net.eval().requires_grad_(False)
        self.mu, self.spread = mu, spread
        self.trace: list[dict[str, float]] = []

    def start(self, y: Tensor, mask: Tensor, z: Tensor) -> Tensor:
        """x_0 (B, H, W) of the mixtures y, mask (B, H, W) and the standard normal draw z (B, H, W)."""
        return mask * (0.5 * y + self.mu + self.spread * z)

    def velocity(self, net: SURFNet, x: Tensor, t: Tensor, y: Tensor, sigma: Tensor, mask: Tensor) -> Tensor:
        """The galaxy slot's velocity (B, H, W), zero on masked pixels; the random slot's is its negative."""
        return mask * net(torch.stack((x, mask * y, sigma, mask), 1), t)

    @torch.no_grad()
    def integrate(self, net: SURFNet, x: Tensor, t0: float, steps: int, y: Tensor, sigma: Tensor,
                  mask: Tensor) -> Tensor:
        """Euler from x at time t0 to t = 1 in ``steps`` equal steps; (B, H, W)."""
        dt = (1.0 - t0) / steps
        for i in range(steps):
            t = torch.full((x.shape[0],), t0 + i * dt, device=x.device, dtype=x.dtype)
            x = x + dt * self.velocity(net, x, t, y, sigma, mask)
        return x

    @torch.no_grad()
    def separate(self, y: Tensor, variance: Tensor, mask: Tensor, samples: int, *, steps: int,
                 generator: torch.Generator, batch_size: int = 256, factor: Tensor | None = None) -> Tensor:
        """(N, samples, 2, H, W) draws (galaxy, random = y - galaxy, both zero where masked) of y (N, H, W)."""
        check_full_resolution(factor, "SURF")
        n = y.shape[0]
        ym = (mask * y).repeat_interleave(samples, 0)
        sm, mm = _sigma(variance, mask).repeat_interleave(samples, 0), mask.repeat_interleave(samples, 0)

        def run(rows: slice) -> Tensor:
            yb, sb, mb = ym[rows], sm[rows], mm[rows]
            z = torch.randn(yb.shape, generator=generator, device=generator.device).to(yb)
            g = self.integrate(self.net, self.start(yb, mb, z), 0.0, steps, yb, sb, mb)
            return torch.stack((g, mb * (yb - g)), 1)

        # draws (rows x samples) in chunks of batch_size; a chunk that runs out of CUDA memory is retried
        # in halves (galsep.inference.memory), drawing its starting noise again from the same generator
        out = run_chunked(ym.shape[0], batch_size, run, what="drawing with SURF")
        return torch.cat(out).unflatten(0, (n, samples))

    def state(self) -> dict[str, Any]:
        return {"channels": list(self.net.channels), "model": self.net.state_dict(), "mu": self.mu.cpu(),
                "spread": self.spread.cpu(), "trace": [dict(h) for h in self.trace]}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> SURF:
        net = SURFNet(state["channels"], inputs=4)
        net.load_state_dict(state["model"])
        model = cls(net, state["mu"], state["spread"])
        model.trace = list(state.get("trace", []))
        return model


@torch.no_grad()
def hybrid_teacher(model: SURF, teacher: SURFNet, x0: Tensor, g0: Tensor, beta: float, steps: int,
                   y: Tensor, sigma: Tensor, mask: Tensor) -> Tensor:
    """Galaxy samples (B, H, W) of the hybrid teacher (brief section 4.4): the straight line from x_0
    (B, H, W) to the regression estimate g0 (B, H, W) up to t = beta, then the EMA flow ``teacher`` to
    t = 1 in ceil(steps (1 - beta)) Euler steps. beta = 1 is the regression teacher itself."""
    x = (1 - beta) * x0 + beta * mask * g0
    if beta >= 1:
        return x
    return model.integrate(teacher, x, beta, max(1, math.ceil(steps * (1 - beta))), y, sigma, mask)


def _check_images(name: str, x: Tensor, *others: Tensor) -> None:
    if x.ndim != 3:
        raise ValueError(f"{name} must be images (N, H, W), got shape {tuple(x.shape)}")
    for o in others:
        if o.shape != x.shape:
            raise ValueError(f"{name} {tuple(x.shape)} and its variance/mask {tuple(o.shape)} differ in shape")


def _masked_mse(a: Tensor, b: Tensor, mask: Tensor) -> Tensor:
    return ((a - b) ** 2 * mask).sum() / mask.sum().clamp_min(1)


def fit_surf(y: Tensor, variance: Tensor, mask: Tensor, yr: Tensor, variance_r: Tensor, mask_r: Tensor, *,
             steps: int, regression_steps: int, batch_size: int, lr: float, channels: Sequence[int],
             ema: float, beta_fraction: float, teacher_steps: int, native_fraction: float = 0.0,
             blocks: int = 10, generator: torch.Generator, log: Log | None = None, truth: Tensor | None = None,
             monitor: int = 64, mixture_factor: Tensor | None = None, source_factor: Tensor | None = None,
             ) -> SURF:
    """Train SURF from the galaxies view y = G + R and the randoms view y^r = R' (mixtures only).

    1. Regression teacher (``regression_steps`` Adam steps): f(z | sigma_z, mask_z) regresses y_b from
       z = y_b + y^r_j (masked MSE); its galaxy estimate is G^0 = 2 f(z) - z (Noisier2Noise).
    2. SURF (``steps`` Adam steps): per step, the hybrid teacher (EMA flow, beta decaying linearly from
       1 to 0 over the first ``beta_fraction`` of the steps) samples G^_b for a batch of real galaxy
       cutouts; the student is trained by flow matching on y~ = G^_b + y^r_j with target x_1 = G^_b
       (ReMixIT-FM loss, masked to pixels observed in both); the EMA teacher follows the student
       (theta_T <- ema theta_T + (1 - ema) theta).

    Args:
        y, variance, mask: the galaxies view, (N, H, W) each (mask 1 observed, 0 missing).
        yr, variance_r, mask_r: the randoms view, (M, H, W) each.
        steps: SURF student steps; regression_steps: steps of the initial regression teacher.
        batch_size: cutouts per step; lr: Adam learning rate; channels: SURFNet channels per level.
        ema: the teacher's EMA rate per step; beta_fraction: share of ``steps`` over which beta goes 1 -> 0.
        teacher_steps: Euler steps of the teacher's samples (over [0, 1]).
        native_fraction: share of each batch remixed natively (G^_b + R^_pi(b), R^ = y - G^) instead of
            with real random cutouts.
        blocks: log and trace lines over the SURF steps (plus one before them).
        generator: seeds every draw (network initialisation included).
        log: called with one line per block: loss, teacher/student gap, beta (and galaxy MSE with truth).
        truth: the true galaxies (N, H, W), to trace the galaxy MSE of the teacher and the student.
        monitor: galaxies (the first ones) on which the gap and the MSE are measured.
        mixture_factor, source_factor: downsampling factors (N,), (M,); must be all 1 when given.
    Returns:
        the separator (EMA weights), its ``trace`` one dict per block with "step", "loss", "gap", "beta",
        "seconds" and, with ``truth``, "mse_teacher" (the hybrid teacher's galaxy samples), "mse_student"
        (the student's samples) and "mse_regression" (G^0).
    """
    check_full_resolution(mixture_factor, "SURF")
    check_full_resolution(source_factor, "SURF")
    _check_images("y", y, variance, mask)
    _check_images("yr", yr, variance_r, mask_r)
    if y.shape[1:] != yr.shape[1:]:
        raise ValueError(f"galaxies {tuple(y.shape)} and randoms {tuple(yr.shape)} differ in image size")
    if truth is not None and truth.shape != y.shape:
        raise ValueError(f"truth {tuple(truth.shape)} and y {tuple(y.shape)} differ in shape")
    if min(steps, regression_steps, batch_size, teacher_steps, blocks) < 1 or lr <= 0:
        raise ValueError("steps, regression_steps, batch_size, teacher_steps and blocks must be >= 1, lr > 0")
    if not 0 <= ema < 1 or not 0 <= beta_fraction <= 1 or not 0 <= native_fraction <= 1:
        raise ValueError("ema must be in [0, 1), beta_fraction and native_fraction in [0, 1]")
    device, gd = y.device, generator.device
    y, yr = mask * y, mask_r * yr
    sig, sig_r = _sigma(variance, mask), _sigma(variance_r, mask_r)
    N, M = y.shape[0], yr.shape[0]

    def pick(n: int, size: int) -> Tensor:
        return torch.randint(n, (size,), generator=generator, device=gd).to(device)

    def normal(shape: torch.Size) -> Tensor:
        return torch.randn(shape, generator=generator, device=gd).to(y)

    def fresh(inputs: int) -> SURFNet:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(2**62, (1,), generator=generator, device=gd)))
            return SURFNet(channels, inputs=inputs).to(device)

    # the path's per-pixel statistics of d = (G - R)/2 from the two views (observed pixels only)
    def moments(x: Tensor, m: Tensor) -> tuple[Tensor, Tensor]:
        n = m.sum(0).clamp_min(1)
        mean = (x * m).sum(0) / n
        return mean, (((x - mean) ** 2 * m).sum(0) / n)

    mean_y, var_y = moments(y, mask)
    mean_r, _ = moments(yr, mask_r)
    mu = 0.5 * (mean_y - 2 * mean_r)
    spread = (0.5 * var_y.sqrt()).clamp_min(1e-3 * float(var_y.mean().sqrt().clamp_min(1e-12)))
    model = SURF(SURFNet(channels, inputs=4).to(device), mu, spread)

    # 1. the Noisier2Noise regression teacher
    reg = fresh(3)
    opt = torch.optim.Adam(reg.parameters(), lr=lr)

    def noisier(b: Tensor, j: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        mz = mask[b] * mask_r[j]
        z = mz * (y[b] + yr[j])
        sz = mz * (sig[b] ** 2 + sig_r[j] ** 2).sqrt()
        return z, sz, mz, reg(torch.stack((z, sz, mz), 1), torch.zeros(len(b), device=device))

    reg_losses = []
    for step in range(regression_steps):
        b, j = pick(N, batch_size), pick(M, batch_size)
        with fails_at_batch(f"training SURF's regression teacher (step {step + 1}/{regression_steps})", batch_size,
                            "the batch_size of fit_surf"):
            z, sz, mz, f = noisier(b, j)
            loss = _masked_mse(f, y[b], mz)
            opt.zero_grad(set_to_none=True)
            loss.backward()
        opt.step()
        reg_losses.append(loss.item())
    reg.eval().requires_grad_(False)
    if log is not None:
        tail = reg_losses[-max(1, regression_steps // 4):]
        log(f"regression teacher: {regression_steps} steps, loss {sum(tail) / len(tail):.4g}")

    @torch.no_grad()
    def regression(b: Tensor) -> Tensor:
        """G^0 (B, H, W) of galaxies b against fresh random cutouts; y/2 where only the random is masked."""
        z, _, mz, f = noisier(b, pick(M, len(b)))
        return mz * (2 * f - z) + (1 - mz) * mask[b] * 0.5 * y[b]

    # 2. SURF: student, EMA teacher (a copy of the fresh student; beta = 1 makes it the regression at first)
    student = fresh(4)
    averaged = EMA(student, ema)  # the teacher: theta_T <- ema theta_T + (1 - ema) theta, every step
    teacher = cast(SURFNet, averaged.shadow)
    opt = torch.optim.Adam(student.parameters(), lr=lr)
    mon = torch.arange(min(monitor, N), device=device)
    z_mon = normal(y[mon].shape)
    x0_mon = model.start(y[mon], mask[mon], z_mon)
    start, losses = time.perf_counter(), list[float]()
    beta_steps = beta_fraction * steps

    def beta_at(step: int) -> float:
        return max(0.0, 1.0 - step / beta_steps) if beta_steps > 0 else 0.0

    def record(step: int) -> None:
        beta = beta_at(step)
        args = (y[mon], sig[mon], mask[mon])
        g0 = regression(mon)
        g_teacher = hybrid_teacher(model, teacher, x0_mon, g0, beta, teacher_steps, *args)
        g_student = model.integrate(student, x0_mon, 0.0, teacher_steps, *args)
        tail = losses[-max(1, steps // blocks):]
        entry = {"step": float(step), "loss": sum(tail) / len(tail) if tail else float("nan"), "beta": beta,
                 "gap": float(_masked_mse(g_teacher, g_student, mask[mon])), "seconds": time.perf_counter() - start}
        if truth is not None:
            t_mon = mask[mon] * truth[mon]
            entry |= {"mse_regression": float(_masked_mse(g0, t_mon, mask[mon])),
                      "mse_teacher": float(_masked_mse(g_teacher, t_mon, mask[mon])),
                      "mse_student": float(_masked_mse(g_student, t_mon, mask[mon]))}
        model.trace.append(entry)
        if log is not None:
            log(f"SURF step {step}/{steps}: loss {entry['loss']:.4g} teacher/student gap {entry['gap']:.4g} "
                f"beta {beta:.2f}" + (f" galaxy mse teacher {entry['mse_teacher']:.4g} student "
                                      f"{entry['mse_student']:.4g}" if truth is not None else "")
                + f" ({entry['seconds']:.0f}s)")

    def student_step(step: int) -> Tensor:
        """One student step's loss, its gradients taken (the optimiser step is the caller's)."""
        b = pick(N, batch_size)
        with torch.no_grad():
            # the hybrid teacher's galaxy samples on real mixtures
            x0 = model.start(y[b], mask[b], normal(y[b].shape))
            g = mask[b] * hybrid_teacher(model, teacher, x0, regression(b), beta_at(step), teacher_steps,
                                         y[b], sig[b], mask[b])
            # typed remix: real random cutouts in the random slot (a share natively remixed)
            j = pick(M, batch_size)
            r, sr, mr = yr[j], sig_r[j], mask_r[j]
            native = torch.rand(batch_size, generator=generator, device=gd).to(device) < native_fraction
            if bool(native.any()):
                perm = torch.randperm(batch_size, generator=generator, device=gd).to(device)
                p = b[perm]
                keep = native[:, None, None]
                r = torch.where(keep, mask[p] * (y[p] - g[perm]), r)
                sr = torch.where(keep, sig[p], sr)
                mr = torch.where(keep, mask[p], mr)
            mt = mask[b] * mr
            ym = mt * (g + r)
            x0 = model.start(ym, mt, normal(ym.shape))
            x1 = mt * g
        t = torch.rand(batch_size, generator=generator, device=gd).to(device)
        xt = (1 - t[:, None, None]) * x0 + t[:, None, None] * x1
        v = model.velocity(student, xt, t, ym, mt * sr, mt)
        loss = _masked_mse(v, x1 - x0, mt)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        return loss

    record(0)
    for step in range(steps):
        with fails_at_batch(f"training SURF (step {step + 1}/{steps})", batch_size, "the batch_size of fit_surf"):
            loss = student_step(step)
        opt.step()
        averaged.update(student)
        losses.append(loss.item())
        if (step + 1) % max(1, steps // blocks) == 0 or step + 1 == steps:
            record(step + 1)
    model.net.load_state_dict(teacher.state_dict())
    model.net.eval().requires_grad_(False)
    return model
