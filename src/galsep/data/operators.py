"""Linear observation operators A and their adjoints A^T, batched with one operator per sample.

Downsampled observations are kept at full resolution: ``P_f`` averages f x f blocks and repeats each
mean over its block. ``P_f`` is an orthogonal projector, so observing the block means with variance
``s^2`` is the same likelihood as observing ``P_f x`` with per-pixel variance ``f^2 s^2`` (the block
mean of the per-pixel variances). Every sample of a batch then has the same shape whatever its factor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeAlias

import torch
from torch import Tensor

__all__ = ["Index", "block_project", "PixelOperator", "DenseOperator", "IdentityOperator"]

Index: TypeAlias = slice | Tensor
"""Rows of a batched operator to keep: a slice, or an index or boolean tensor over the batch."""


def block_project(x: Tensor, factor: Tensor | int) -> Tensor:
    """Replace each f x f block of ``x`` by its mean.

    Args:
        x: images, shape (B, H, W); H and W divisible by every factor.
        factor: per-sample block size, shape (B,) of ints, or one int for all.
    Returns:
        projected images, shape (B, H, W).
    """
    B, H, W = x.shape
    if isinstance(factor, int):
        factor = torch.full((B,), factor, dtype=torch.long, device=x.device)
    out = x.clone()
    for f in torch.unique(factor).tolist():
        if f == 1:
            continue
        if H % f or W % f:
            raise ValueError(f"image size {H}x{W} is not divisible by downsampling factor {f}")
        idx = (factor == f).nonzero(as_tuple=True)[0]
        blocks = x[idx].reshape(-1, H // f, f, W // f, f).mean(dim=(2, 4), keepdim=True)
        out[idx] = blocks.expand(-1, -1, f, -1, f).reshape(-1, H, W)
    return out


@dataclass
class PixelOperator:
    """``A x = c * M P_f x`` per sample: scale, pixel mask and block downsampling.

    Attributes:
        mask: observed pixels, shape (B, H, W), 1 observed and 0 missing.
        factor: downsampling factor per sample, shape (B,), 1 for full resolution.
        coef: source scale per sample, shape (B,) (0 where the source is absent from the view).
    """

    mask: Tensor
    factor: Tensor
    coef: Tensor

    def __call__(self, x: Tensor) -> Tensor:
        """(B, H, W) -> (B, H, W)."""
        return self.coef[:, None, None] * self.mask * block_project(x, self.factor)

    def T(self, y: Tensor) -> Tensor:
        """Adjoint, (B, H, W) -> (B, H, W)."""
        return self.coef[:, None, None] * block_project(self.mask * y, self.factor)

    def gram_diagonal(self) -> Tensor:
        """c^2 M, (B, H, W): A A^T = c^2 M P_f M is this on block-constant residuals (P_f is I on its range)."""
        return self.coef[:, None, None] ** 2 * self.mask

    def to(self, device: torch.device | str) -> PixelOperator:
        return PixelOperator(self.mask.to(device), self.factor.to(device), self.coef.to(device))

    def __getitem__(self, idx: Index) -> PixelOperator:
        return PixelOperator(self.mask[idx], self.factor[idx], self.coef[idx])

    @classmethod
    def cat(cls, ops: Sequence[PixelOperator]) -> PixelOperator:
        """Stack the rows of several operators (for stacking observations)."""
        return cls(*(torch.cat([getattr(op, k) for op in ops]) for k in ("mask", "factor", "coef")))


@dataclass
class DenseOperator:
    """``A x = M x`` with one matrix per sample, for vector data.

    Attributes:
        matrix: shape (B, M, N).
    """

    matrix: Tensor

    def __call__(self, x: Tensor) -> Tensor:
        """(B, N) -> (B, M)."""
        return torch.einsum("bmn,bn->bm", self.matrix, x)

    def T(self, y: Tensor) -> Tensor:
        """Adjoint, (B, M) -> (B, N)."""
        return torch.einsum("bmn,bm->bn", self.matrix, y)

    def gram_diagonal(self) -> Tensor:
        """diag(A A^T), (B, M): the squared norms of the rows."""
        return self.matrix.square().sum(-1)

    def to(self, device: torch.device | str) -> DenseOperator:
        return DenseOperator(self.matrix.to(device))

    def __getitem__(self, idx: Index) -> DenseOperator:
        return DenseOperator(self.matrix[idx])

    @classmethod
    def cat(cls, ops: Sequence[DenseOperator]) -> DenseOperator:
        """Stack the rows of several operators (for stacking observations)."""
        return cls(torch.cat([op.matrix for op in ops]))


@dataclass
class IdentityOperator:
    """``A x = x``."""

    def __call__(self, x: Tensor) -> Tensor:
        return x

    def T(self, y: Tensor) -> Tensor:
        return y

    def gram_diagonal(self) -> float:
        """A A^T = I."""
        return 1.0

    def to(self, device: torch.device | str) -> IdentityOperator:
        return self

    def __getitem__(self, idx: Index) -> IdentityOperator:
        return self
