"""The symmetries of the square pixel grid (the dihedral group D4) acting on images.

Sky images are statistically isotropic, and the square grid keeps exactly the 8 symmetries of the
square: element k = 4 f + r is "mirror (flip of the last axis) if f, then r quarter turns". When a
prior p(x) is invariant (g x ~ p for x ~ p and every g), training a denoiser on g x with g uniform
targets the same prior while every sample stands for 8 images
(:func:`galsep.inference.training.train_denoiser`, ``augment="dihedral"``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["ORDER", "check_square", "random_elements", "turn"]

ORDER = 8
"""The number of elements of D4."""


def check_square(shape: Sequence[int], hint: str = "") -> None:
    """Raise ValueError unless ``shape`` is (B, ..., H, H): the square's symmetries act on square images."""
    if len(shape) < 3 or shape[-1] != shape[-2]:
        raise ValueError(f"the square's symmetries act on square images (B, ..., H, H), got shape {tuple(shape)}"
                         + hint)


def turn(x: Tensor, k: Tensor) -> Tensor:
    """Sample b turned by element k_b of D4: rot90(flip^f(x_b), r) with (f, r) = divmod(k_b, 4).

    Args:
        x: images (B, ..., H, W) with H == W; the group acts on the last two axes.
        k: elements (B,), integers in 0..7.
    Returns:
        (B, ..., H, W).
    """
    check_square(x.shape)
    if k.shape != x.shape[:1]:
        raise ValueError(f"one element per sample needed, {tuple(x.shape[:1])}, got {tuple(k.shape)}")
    k = k.to(x.device)
    out = torch.empty_like(x)
    for g in range(ORDER):
        rows = k == g
        if rows.any():
            flip, turns = divmod(g, 4)
            y = x[rows].flip(-1) if flip else x[rows]
            out[rows] = torch.rot90(y, turns, dims=(-2, -1))
    return out


def random_elements(n: int, generator: torch.Generator) -> Tensor:
    """n elements uniform on D4, (n,) integers drawn on the generator's device."""
    return torch.randint(ORDER, (n,), generator=generator, device=generator.device)
