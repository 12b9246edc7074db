"""Observations of K sources, y = sum_k A_k x_k + n with n ~ N(0, diag(variance)): what every sampler,
EM step and separation method reads, for images (pixel operators) and vectors (dense matrices) alike.

Rows are observations; ``coef`` says which sources each row holds (0: absent), so a contrastive split
(rows holding the target source against rows without it) is a property of the data, not of a method.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, cast

import numpy as np
import torch
from torch import Tensor

from galsep.inference.mmps import Operator

__all__ = ["Observations", "shard_rows", "stack"]


class _Movable(Protocol):
    """The operators of :mod:`galsep.data.operators` move to a device."""

    def to(self, device: torch.device | str) -> Operator: ...


@dataclass(frozen=True)
class Observations:
    """N observations of the sources ``sources``.

    Attributes:
        sources: source names, in the order of K.
        y: observations, (N, *Sy).
        variance: per-element noise variance of y, (N, *Sy).
        ops: one batched operator per source, mapping (N, *S) -> (N, *Sy).
        coef: scale of each source in each row, (N, K); 0 where the source is absent.
        shape: S, the shape of one source sample.
        mask: observed pixels, (N, *Sy), for pixel data (1 observed, 0 missing).
        factor: block-downsampling factor of each row, (N,), for pixel data.
        truth: the true sources, (N, K, *S), where known (synthetic data).
        ids: an identifier per row (object ids), where known.
        normalisation: the constants of the normalisation y is in (galsep.data.normalise.Stretch's
            fields), for images read from a view file.
    """

    sources: tuple[str, ...]
    y: Tensor
    variance: Tensor
    ops: tuple[Operator, ...]
    coef: Tensor
    shape: tuple[int, ...]
    mask: Tensor | None = None
    factor: Tensor | None = None
    truth: Tensor | None = None
    ids: np.ndarray | None = field(default=None, compare=False)
    normalisation: dict[str, float] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if len(self.ops) != len(self.sources) or self.coef.shape[1:] != (len(self.sources),):
            raise ValueError(f"{len(self.sources)} sources need as many operators and coefficient columns,"
                             f" got {len(self.ops)} and {tuple(self.coef.shape)}")

    def operators(self) -> list[Operator]:
        """The K batched operators (list, as the samplers take them)."""
        return list(self.ops)

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def rows(self, idx: slice | Tensor) -> Observations:
        """The observations ``idx`` (a slice or an index tensor; repeats allowed)."""
        opt = lambda t: None if t is None else t[idx]  # noqa: E731
        ids = None if self.ids is None else self.ids[idx.cpu().numpy() if isinstance(idx, Tensor) else idx]
        return replace(self, y=self.y[idx], variance=self.variance[idx], ops=tuple(op[idx] for op in self.ops),
                       coef=self.coef[idx], mask=opt(self.mask), factor=opt(self.factor), truth=opt(self.truth),
                       ids=ids)

    def to(self, device: torch.device | str) -> Observations:
        opt = lambda t: None if t is None else t.to(device)  # noqa: E731
        return replace(self, y=self.y.to(device), variance=self.variance.to(device),
                       ops=tuple(cast(_Movable, op).to(device) for op in self.ops), coef=self.coef.to(device),
                       mask=opt(self.mask), factor=opt(self.factor), truth=opt(self.truth))

    def holding(self, source: int) -> Tensor:
        """Indices of the rows in which source ``source`` is present, (n,)."""
        return torch.nonzero(self.coef[:, source] != 0, as_tuple=True)[0].cpu()

    def lacking(self, source: int) -> Tensor:
        """Indices of the rows in which source ``source`` is absent, (n,)."""
        return torch.nonzero(self.coef[:, source] == 0, as_tuple=True)[0].cpu()

    def select(self, sources: Sequence[str]) -> Observations:
        """The same rows with only ``sources`` (in that order)."""
        cols = [self.sources.index(s) for s in sources]
        truth = None if self.truth is None else self.truth[:, cols]
        return replace(self, sources=tuple(sources), ops=tuple(self.ops[c] for c in cols), coef=self.coef[:, cols],
                       truth=truth)


def stack(parts: Sequence[Observations], sources: Sequence[str] | None = None) -> Observations:
    """Concatenate observation sets row-wise, keeping ``sources`` (default: the first set's) in that order.

    Every part must have the same kind of operator for a source; the operator class stacks its rows
    (its ``cat`` classmethod, see :mod:`galsep.data.operators`).
    """
    if not parts:
        raise ValueError("nothing to stack")
    names = tuple(sources) if sources is not None else parts[0].sources
    parts = [p.select(names) for p in parts]
    cat = lambda ts: None if any(t is None for t in ts) else torch.cat(list(ts))  # noqa: E731
    ops = tuple(_cat_ops([p.ops[k] for p in parts]) for k in range(len(names)))
    ids: Any = None if any(p.ids is None for p in parts) else np.concatenate([p.ids for p in parts])
    return Observations(
        names, torch.cat([p.y for p in parts]), torch.cat([p.variance for p in parts]), ops,
        torch.cat([p.coef for p in parts]), parts[0].shape, mask=cat([p.mask for p in parts]),
        factor=cat([p.factor for p in parts]), truth=cat([p.truth for p in parts]), ids=ids,
        normalisation=parts[0].normalisation,
    )


def _cat_ops(ops: Sequence[Operator]) -> Operator:
    kinds = {type(op) for op in ops}
    cat = getattr(ops[0], "cat", None)
    if len(kinds) > 1 or cat is None:
        raise TypeError(f"cannot stack operators of types {sorted(k.__name__ for k in kinds)}: one kind, with a"
                        " cat classmethod, is needed")
    return cat(ops)


def shard_rows(n: int, shard: int, shards: int) -> slice:
    """Contiguous block ``shard`` of ``shards`` over n rows (the rows of one sharded job)."""
    bounds = np.linspace(0, n, shards + 1).round().astype(int)
    return slice(int(bounds[shard]), int(bounds[shard + 1]))
