"""Neural Egg Separation, semi-supervised, images only (Halperin et al. 2019, arXiv 1811.12739; paper 002).

We observe samples b of one source alone (the randoms view: random light + noise) and mixtures
y = x + b (the galaxies view); NES learns x (the galaxy) without ever seeing it. Algorithm 1:

    x_0 = c y                                         (constant mask, c = 0.5)
    repeat N times:
        T <- fresh network with random weights
        train T on synthetic pairs (b_j + x_i, b_j), random pairing, L1 loss
        x_i <- y_i - T(y_i)                           for every real mixture

T is the paper's masking regressor (eq. 9): T(y) = m(y) * y with m in [0, 1] per pixel, so
b_hat = m y and x_hat = (1 - m) y. Our images are normalised (arcsinh) fluxes that can be negative
where noise dominates; the mask still applies multiplicatively and simply cannot change a sign.
Masked pixels (mask 0) are zero in y, ignored by the loss and zero in both estimates. Downsampled
observations are not supported.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from galsep.errors import ConfigError
from galsep.inference.memory import batch_setting, fails_at_batch, run_chunked

__all__ = ["NESNet", "NES", "check_full_resolution", "conv_block", "fit_nes"]

INIT_MASK = 0.5  # the paper's constant c: x_0 = c y


def check_full_resolution(factor: Tensor | None, method: str = "NES") -> None:
    """Raise if any observation is downsampled (the pixel-wise networks here, NES's mask and SURF's flow,
    work on full-resolution images)."""
    if factor is not None and bool((torch.as_tensor(factor) != 1).any()):
        raise ConfigError(f"{method} supports full-resolution images only; disable views.downsample_2x and "
                          f"views.downsample_4x for this {'baseline' if method == 'NES' else 'method'}")


def _check_images(name: str, x: Tensor, mask: Tensor) -> None:
    if x.ndim != 3:
        raise ValueError(f"{name} must be images (N, H, W), got shape {tuple(x.shape)}")
    if mask.shape != x.shape:
        raise ValueError(f"{name} {tuple(x.shape)} and its mask {tuple(mask.shape)} differ in shape")


def conv_block(cin: int, cout: int) -> nn.Sequential:
    """Two 3x3 convolutions with GroupNorm and SiLU: a level of the small U-Nets of NES and SURF."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(math.gcd(8, cout), cout), nn.SiLU(),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.GroupNorm(math.gcd(8, cout), cout), nn.SiLU())


class NESNet(nn.Module):
    """Masking network (y, mask) -> m in [0, 1]: a small U-Net, one level per entry of ``channels``.

    Each level has two 3x3 convolutions, each followed by GroupNorm and SiLU; levels are joined by 2x2
    average pooling and nearest upsampling with skip connections. The output layer starts at zero,
    so a fresh network is the constant mask 0.5.

    Why the normalisation: most pixels of a cutout hold light of b only, where the L1 loss always
    pushes m towards 1 (reached only at an infinite logit). Without normalisation the features grow
    multiplicatively and the sigmoid saturates at m = 1 on every pixel within ~50 steps (measured on
    32x32 cutouts with a compact galaxy, even with the true x); x_hat = 0 is then a fixed point of NES.

    Args:
        channels: feature channels per level, e.g. (16, 32); H and W must be divisible by 2^(levels - 1).
    """

    def __init__(self, channels: Sequence[int] = (16, 32)) -> None:
        super().__init__()
        if not channels or min(channels) < 1:
            raise ValueError(f"channels must be a non-empty list of positive ints, got {list(channels)}")
        self.channels = [int(c) for c in channels]
        c = self.channels
        self.down = nn.ModuleList(conv_block(cin, cout) for cin, cout in zip([2] + c[:-1], c, strict=True))
        self.up = nn.ModuleList(conv_block(c[i] + c[i + 1], c[i]) for i in range(len(c) - 1))
        self.out = nn.Conv2d(c[0], 1, 1)
        nn.init.zeros_(self.out.weight)
        assert self.out.bias is not None  # Conv2d has a bias by default
        nn.init.zeros_(self.out.bias)

    def forward(self, y: Tensor, mask: Tensor) -> Tensor:
        """y, mask (B, H, W) -> mask m (B, H, W) in [0, 1]."""
        levels = len(self.channels)
        if y.shape[-1] % 2 ** (levels - 1) or y.shape[-2] % 2 ** (levels - 1):
            raise ConfigError(f"image size {tuple(y.shape[-2:])} not divisible by 2^{levels - 1} "
                              f"({levels} levels in the nes method's channels {self.channels})")
        h = torch.stack((y * mask, mask), 1)
        skips = []
        for i, block in enumerate(self.down):
            h = block(h if i == 0 else F.avg_pool2d(h, 2))
            skips.append(h)
        for i in reversed(range(levels - 1)):
            h = self.up[i](torch.cat((F.interpolate(h, scale_factor=2.0, mode="nearest"), skips[i]), 1))
        return torch.sigmoid(self.out(h)[:, 0])


class NES:
    """A trained NES separator: (y, mask) -> (x_hat, b_hat) = ((1 - m) y, m y)."""

    trace: list[dict[str, float]]  # the fit's history per iteration, set by galsep.methods.nes

    def __init__(self, net: NESNet) -> None:
        self.net = net.eval().requires_grad_(False)

    @torch.no_grad()
    def separate(self, y: Tensor, mask: Tensor, *, batch_size: int = 256,
                 factor: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """y, mask (N, H, W) -> (x_hat, b_hat), each (N, H, W); ``factor`` (N,) is checked to be all 1.

        ``batch_size`` rows at a time, halved where CUDA runs out of memory (the network sees each row
        alone, so the result does not depend on the chunks).
        """
        check_full_resolution(factor)
        _check_images("y", y, mask)

        def run(rows: slice) -> Tensor:
            yc, mc = y[rows] * mask[rows], mask[rows]
            m = self.net(yc, mc)
            return torch.stack(((1 - m) * yc, m * yc))

        parts = torch.cat(run_chunked(y.shape[0], batch_size, run, what="separating with NES"), 1)
        return parts[0], parts[1]

    def state(self) -> dict[str, Any]:
        return {"channels": list(self.net.channels), "model": self.net.state_dict()}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> NES:
        net = NESNet(state["channels"])
        net.load_state_dict(state["model"])
        return cls(net)


def _masked_mse(x: Tensor, truth: Tensor, mask: Tensor) -> float:
    return float(((x - truth) ** 2 * mask).sum() / mask.sum().clamp_min(1))


def fit_nes(mixtures: Tensor, mixture_mask: Tensor, sources: Tensor, source_mask: Tensor, *, iterations: int,
            steps: int, batch_size: int, lr: float, channels: Sequence[int], generator: torch.Generator,
            log: Callable[[str], None] | None = None, truth: Tensor | None = None,
            mixture_factor: Tensor | None = None, source_factor: Tensor | None = None,
            ) -> tuple[NES, list[dict[str, float]]]:
    """Train NES (paper 002, Algorithm 1) from mixtures y = x + b and observed samples of b.

    Every iteration trains a freshly initialised network (as the paper does) for ``steps`` Adam
    steps on synthetic mixtures z = b_j + x_hat_i (random pairs, masks multiplied), with the L1 loss
    |m(z) z - b_j| over observed pixels, then re-estimates x_hat_i = (1 - m(y_i)) y_i.

    Args:
        mixtures: y, shape (N, H, W), zero where masked.
        mixture_mask: shape (N, H, W), 1 observed, 0 missing.
        sources: observed samples of b, shape (M, H, W), zero where masked.
        source_mask: shape (M, H, W).
        iterations: NES iterations (paper: 10).
        steps: optimiser steps per iteration.
        batch_size: synthetic mixtures per step.
        lr: Adam learning rate (paper: 1e-3).
        channels: NESNet channels per level.
        generator: seeds network initialisation, pairing and batches (CPU or the data's device).
        log: called with a one-line summary per iteration.
        truth: the true x, shape (N, H, W), to record the MSE of x_hat per iteration.
        mixture_factor, source_factor: downsampling factors (N,), (M,); must be all 1 when given.
    Returns:
        the final separator and the history: one dict per iteration 0..iterations with "iteration",
        "loss" (mean L1 over the last quarter of its steps; nan for the constant-mask iteration 0),
        "seconds" (elapsed since the start) and, with ``truth``, "mse" (over observed pixels).
    """
    check_full_resolution(mixture_factor)
    check_full_resolution(source_factor)
    _check_images("mixtures", mixtures, mixture_mask)
    _check_images("sources", sources, source_mask)
    if mixtures.shape[1:] != sources.shape[1:]:
        raise ValueError(f"mixtures {tuple(mixtures.shape)} and sources {tuple(sources.shape)} differ in image size")
    if truth is not None and truth.shape != mixtures.shape:
        raise ValueError(f"truth {tuple(truth.shape)} and mixtures {tuple(mixtures.shape)} differ in shape")
    if min(iterations, steps, batch_size) < 1 or lr <= 0:
        raise ValueError("iterations, steps and batch_size must be >= 1 and lr > 0")
    device = mixtures.device
    y, my = mixtures * mixture_mask, mixture_mask
    b, mb = sources * source_mask, source_mask
    N, M = y.shape[0], b.shape[0]

    def draw(n: int, size: int) -> Tensor:
        return torch.randint(n, (size,), generator=generator, device=generator.device).to(device)

    def record(i: int, loss: float, start: float) -> None:
        entry = {"iteration": i, "loss": loss, "seconds": time.perf_counter() - start}
        if truth is not None:
            entry["mse"] = _masked_mse(x_hat, truth, my)
        history.append(entry)
        if log is not None:
            log(f"NES iteration {i}/{iterations}: loss {loss:.4g}" +
                (f" mse {entry['mse']:.4g}" if "mse" in entry else "") + f" ({entry['seconds']:.0f}s)")

    history: list[dict[str, float]] = []
    start = time.perf_counter()
    x_hat = (1 - INIT_MASK) * y
    record(0, float("nan"), start)
    for i in range(1, iterations + 1):
        # a fresh network per iteration (Algorithm 1), its weights seeded by ``generator``
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(2**62, (1,), generator=generator, device=generator.device)))
            net = NESNet(channels).to(device)
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        losses = []
        for step in range(steps):
            j, k = draw(M, batch_size), draw(N, batch_size)
            with fails_at_batch(f"training NES (iteration {i}/{iterations}, step {step + 1}/{steps})", batch_size,
                                "the batch_size of fit_nes"):
                mask = mb[j] * my[k]
                z, target = (b[j] + x_hat[k]) * mask, b[j] * mask
                loss = ((net(z, mask) * z - target).abs() * mask).sum() / mask.sum().clamp_min(1)
                opt.zero_grad(set_to_none=True)
                loss.backward()
            opt.step()
            losses.append(loss.item())
        nes = NES(net)
        with batch_setting(None):  # no setting sizes these chunks: batch_size is the training batch's
            x_hat, _ = nes.separate(y, my, batch_size=max(batch_size, 256))
        tail = losses[-max(1, steps // 4):]
        record(i, sum(tail) / len(tail), start)
    return nes, history
