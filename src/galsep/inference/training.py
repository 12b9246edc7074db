"""Denoiser training: weighted denoising loss at t ~ Beta(3, 3), AdamW, clipping, LR schedule, EMA.

Every call builds a fresh optimiser and learning-rate schedule (DDPRISM, arXiv 2510.05205, and Rozet
et al., arXiv 2405.13712, restart both at each EM lap) while continuing from the denoiser's current
weights. The loss is EDM's (Karras et al., arXiv 2206.00364).

Augmentation by the symmetries of the prior: when p(x) is invariant under a group G acting on the
pixels (g x ~ p for x ~ p and every g in G), training on g x with g uniform on G targets the same
prior while every E-step sample stands for |G| training images. ``augment="dihedral"`` turns each
sample of a batch by a uniform element of the square's symmetries (:mod:`galsep.inference.symmetry`);
a PSF with a preferred direction breaks the invariance, which is why it is a setting.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from galsep.errors import OutOfMemoryError
from galsep.inference.denoiser import EDMDenoiser
from galsep.inference.memory import OOM_ERRORS, current_key, oom_message
from galsep.inference.schedule import VESchedule, sample_t
from galsep.inference.symmetry import check_square, random_elements, turn

__all__ = ["AUGMENTATIONS", "EMA", "TrainResult", "batches", "lr_factor", "train_denoiser"]

# names accepted by train_denoiser(augment=...) and the configs' em.train.augment
AUGMENTATIONS = ("none", "dihedral")


class EMA:
    """Exponential moving average of a module's weights: shadow <- decay shadow + (1 - decay) model.

    torch's own (``torch.optim.swa_utils.AveragedModel`` with ``get_ema_multi_avg_fn``), started from the
    model's current weights so that the first update already averages, as Karras et al. and DDPRISM do;
    buffers (e.g. norm statistics) are copied, not averaged.

    Args:
        model: module to track; the shadow is a frozen deep copy of it in eval mode.
        decay: in [0, 1); the shadow averages over about 1 / (1 - decay) updates.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self._averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(self.decay), use_buffers=False)
        self._averaged.update_parameters(model)  # the first update copies: the average starts at the model
        self.shadow = self._averaged.module.eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the shadow parameters towards ``model``'s; buffers are copied."""
        self._averaged.update_parameters(model)

    def state_dict(self) -> dict[str, Tensor]:
        """The shadow module's state dict."""
        return self.shadow.state_dict()

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.shadow.load_state_dict(state)


@dataclass
class TrainResult:
    """Output of :func:`train_denoiser`: the EMA copy (eval mode, frozen) and the loss of every step."""

    ema: nn.Module
    losses: list[float] = field(default_factory=list)


def lr_factor(kind: str, steps: int) -> Callable[[int], float]:
    """Multiplier of the base LR at step k for "cosine" (to 0), "linear" (to 0) or "constant"."""
    if kind == "cosine":
        return lambda k: 0.5 * (1.0 + math.cos(math.pi * min(k, steps) / steps))
    if kind == "linear":
        return lambda k: max(0.0, 1.0 - k / steps)
    if kind == "constant":
        return lambda k: 1.0
    raise ValueError(f"unknown lr_schedule {kind!r}")


def batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[Tensor]:
    """Endless index batches (batch_size,), reshuffled every epoch; an epoch's tail joins the next epoch."""
    device = generator.device
    buffer = torch.empty(0, dtype=torch.long, device=device)
    while True:
        while buffer.numel() < batch_size:
            buffer = torch.cat((buffer, torch.randperm(n, generator=generator, device=device)))
        yield buffer[:batch_size]
        buffer = buffer[batch_size:]


def train_denoiser(denoiser: EDMDenoiser, data: Tensor, *, schedule: VESchedule, steps: int, batch_size: int,
                   lr: float, lr_schedule: str, grad_clip: float, ema_decay: float, weight_decay: float = 0.0,
                   generator: torch.Generator, augment: str = "none", progress: bool = False,
                   log: Callable[[str], None] | None = None) -> TrainResult:
    """Train ``denoiser`` in place on ``data`` and return its EMA copy.

    Args:
        denoiser: the model; moved to data.device. Its weights continue from their current values.
        data: training samples, shape (N, *S).
        schedule: maps t ~ Beta(3, 3) to sigma.
        steps: optimiser steps.
        batch_size: samples per step (may exceed N; epochs then repeat within a batch).
        lr: peak learning rate; lr_schedule "cosine", "linear" or "constant" decays it over ``steps``.
        grad_clip: max global gradient norm (<= 0 or inf disables clipping).
        ema_decay: EMA decay per step.
        weight_decay: AdamW decoupled weight decay (0 is plain Adam).
        generator: seeds batches, times, noise and augmentations; randoms are drawn on its device and
            moved to data's.
        augment: "none", or "dihedral" (square images whose prior is isotropic: each sample turned by a
            uniform symmetry of the square, :mod:`galsep.inference.symmetry`).
        progress: show a tqdm bar.
        log: called with a one-line summary about ten times per run.
    Returns:
        TrainResult with the EMA module (a copy of ``denoiser``) and the per-step losses.
    """
    if augment not in AUGMENTATIONS:
        raise ValueError(f"unknown augment {augment!r}: one of {list(AUGMENTATIONS)}")
    if augment == "dihedral":
        check_square(data.shape, hint=": augment 'dihedral' needs square images, set augment 'none'")
    device = data.device
    denoiser.to(device).train()
    ema = EMA(denoiser, ema_decay)
    optimizer = torch.optim.AdamW(denoiser.parameters(), lr=lr, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(lr_schedule, steps))
    index = batches(data.shape[0], batch_size, generator)
    losses: list[float] = []
    every = max(1, steps // 10)
    iterator = range(steps)
    if progress:
        from tqdm.auto import trange

        iterator = trange(steps, leave=False)
    for step in iterator:
        x = data[next(index).to(device)]
        if augment == "dihedral":
            x = turn(x, random_elements(x.shape[0], generator))
        t = sample_t(batch_size, generator=generator, device=generator.device, dtype=data.dtype).to(device)
        try:
            loss = denoiser.loss(x, schedule.sigma(t), generator=generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
        except OOM_ERRORS as exc:
            # not retried: a smaller batch is a different training run (its gradients, the batch
            # sequence drawn from the generator and the step count per epoch all change)
            raise OutOfMemoryError(oom_message(f"training (step {step + 1}/{steps})", batch_size,
                                               current_key("em.train.batch_size"))) from exc
        if 0 < grad_clip < math.inf:
            nn.utils.clip_grad_norm_(denoiser.parameters(), grad_clip)
        optimizer.step()
        scheduler.step()
        ema.update(denoiser)
        losses.append(loss.item())
        if log is not None and ((step + 1) % every == 0 or step + 1 == steps):
            recent = losses[-every:]
            log(f"step {step + 1}/{steps} loss {sum(recent) / len(recent):.4g} lr {scheduler.get_last_lr()[0]:.3g}")
    denoiser.eval()
    return TrainResult(ema=ema.shadow, losses=losses)
