"""Batched computations that survive CUDA out-of-memory by halving the batch (issue 18 item 5).

:func:`run_chunked` runs a computation over consecutive chunks of rows. When a chunk raises torch's
out-of-memory error it frees the allocator's cache and retries the same rows in half as many, down to
one row; later chunks keep the smaller size. With no out-of-memory the chunks (and so the random draws
of a computation that draws per chunk) are exactly those of a plain ``range(0, n, batch)`` loop. A
retried chunk draws again from the same generator: the result stays seeded, but differs from a run
that never ran out of memory. If a single row still does not fit, :class:`~galsep.errors.OutOfMemoryError`
names the batch that failed and the config key to lower.

A stage names that key, and learns the batch it ended up using, through :func:`batch_setting`::

    with batch_setting("posterior.sampler.batch_size") as batch:
        draws = ...  # any number of run_chunked calls, however deep
    log(f"posterior: {batch.describe()}")  # "batch 256" or "batch 256 -> 128 after CUDA out of memory"
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TypeVar

import torch

from galsep.errors import OutOfMemoryError

__all__ = ["OOM_ERRORS", "BatchRecord", "batch_setting", "free_memory", "oom_message", "run_chunked"]

T = TypeVar("T")

# torch.cuda.OutOfMemoryError is the same class as torch.OutOfMemoryError (torch >= 2.5)
OOM_ERRORS: tuple[type[BaseException], ...] = (torch.OutOfMemoryError,)


@dataclass
class BatchRecord:
    """The batch a stage asked for and the one it ended up using (None until a chunked call ran)."""

    key: str
    requested: int | None = None
    used: int | None = None
    retries: int = 0

    def describe(self) -> str:
        if self.requested is None:
            return "batch not used"
        if self.used is None or self.used == self.requested:
            return f"batch {self.requested}"
        return f"batch {self.requested} -> {self.used} after CUDA out of memory"


_current: ContextVar[BatchRecord | None] = ContextVar("galsep_batch_record", default=None)


@contextmanager
def batch_setting(key: str) -> Iterator[BatchRecord]:
    """Within the block, chunked calls name ``key`` (a config key, e.g. ``em.sampler.batch_size``) when
    they run out of memory, record the batch they used, and start from the smallest batch that fit."""
    record = BatchRecord(key)
    token = _current.set(record)
    try:
        yield record
    finally:
        _current.reset(token)


def current_key(default: str = "batch_size") -> str:
    """The config key of the enclosing :func:`batch_setting`, else ``default``."""
    record = _current.get()
    return default if record is None else record.key


def free_memory() -> None:
    """Release what the failed attempt held: collect its tensors and empty CUDA's cache."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def oom_message(what: str, batch: int, key: str) -> str:
    return (f"CUDA out of memory {what} with batch {batch}: set {key} lower (below {batch}), or use a device"
            " with more memory")


def run_chunked(n: int, batch: int, fn: Callable[[slice], T], *, what: str = "sampling",
                key: str | None = None) -> list[T]:
    """``[fn(rows) for rows in chunks of range(n)]``, halving a chunk that runs out of memory.

    Args:
        n: rows in all.
        batch: rows per chunk (>= 1).
        fn: the computation of one chunk of rows.
        what: what is computed, for the error message ("sampling").
        key: the config key to lower; defaults to that of the enclosing :func:`batch_setting`.
    Raises:
        OutOfMemoryError: a chunk of a single row ran out of memory.
    """
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    record = _current.get()
    key = key or current_key("the sampler's batch_size")
    size = batch
    if record is not None:
        if record.requested is None:
            record.requested = batch
        if record.used is not None:
            size = min(size, record.used)  # a smaller batch already had to be taken in this stage
    out: list[T] = []
    start = 0
    while start < n:
        stop = min(start + size, n)
        try:
            out.append(fn(slice(start, stop)))
        except OOM_ERRORS as exc:
            if stop - start <= 1:
                raise OutOfMemoryError(oom_message(what, stop - start, key)) from exc
            failed = True
        else:
            failed = False
        if failed:  # outside the except block, so that the traceback's tensors can be freed
            free_memory()
            size = max(1, (stop - start) // 2)
            if record is not None:
                record.retries += 1
            continue
        if record is not None:
            record.used = size if record.used is None else min(record.used, size)
        start = stop
    return out
