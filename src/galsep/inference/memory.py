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

The block can also report progress: ``batch_setting(key, progress=chunk_progress(log, "posterior"))``
calls the callback after every chunk with the rows done and the rows in all, so a job that samples for
twenty minutes says how far it is (:func:`chunk_progress` logs at most one line every 30 seconds).

A method whose loops are set by another key (BASIS's ``methods.basis.batch_size``) or by none (the
fixed draw batch of PCPCA, key ``None``) opens its own :func:`batch_setting` inside the stage's; what
its calls used is passed up to the stage's record when the block ends, so the stage's log line shows it.

Training is not retried (a smaller batch is a different run: other gradients, another sequence of
batches drawn from the generator): :func:`fails_at_batch` turns out-of-memory in a training step into
:class:`~galsep.errors.OutOfMemoryError` naming the batch and the key to lower.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TypeVar

import torch

from galsep.errors import OutOfMemoryError

__all__ = ["OOM_ERRORS", "BatchRecord", "Progress", "batch_setting", "chunk_progress", "current_key", "fails_at_batch",
           "free_memory", "oom_message", "run_chunked"]

T = TypeVar("T")
Progress = Callable[[int, int], None]

# torch.cuda.OutOfMemoryError is the same class as torch.OutOfMemoryError (torch >= 2.5)
OOM_ERRORS: tuple[type[BaseException], ...] = (torch.OutOfMemoryError,)


@dataclass
class BatchRecord:
    """The batch a stage asked for and the one it ended up using (None until a chunked call ran).

    ``key`` is the config key that sets the batch, None where the batch is fixed in the code;
    ``progress`` is called with (rows done, rows in all) after each chunk of a chunked call.
    """

    key: str | None
    requested: int | None = None
    used: int | None = None
    retries: int = 0
    progress: Progress | None = None

    def describe(self) -> str:
        if self.requested is None:
            return "batch not used"
        if self.used is None or self.used == self.requested:
            return f"batch {self.requested}"
        return f"batch {self.requested} -> {self.used} after CUDA out of memory"

    def absorb(self, inner: BatchRecord) -> None:
        """Take in what the chunked calls of a nested :func:`batch_setting` asked for and used (its batch
        becomes this record's if this one ran no chunked call itself; its retries are always counted)."""
        if self.requested is None:
            self.requested, self.used = inner.requested, inner.used
        self.retries += inner.retries


_current: ContextVar[BatchRecord | None] = ContextVar("galsep_batch_record", default=None)


@contextmanager
def batch_setting(key: str | None, progress: Progress | None = None) -> Iterator[BatchRecord]:
    """Within the block, chunked calls name ``key`` (a config key, e.g. ``em.sampler.batch_size``; None
    where no key sets the batch) when they run out of memory, record the batch they used, start from
    the smallest batch that fit and report each chunk to ``progress`` (a nested block without its own
    reports to the outer one's). Nested in another, its record is added to the outer one at the end."""
    outer = _current.get()
    record = BatchRecord(key, progress=progress if progress is not None or outer is None else outer.progress)
    token = _current.set(record)
    try:
        yield record
    finally:
        _current.reset(token)
        if outer is not None:
            outer.absorb(record)


def chunk_progress(log: Callable[[str], None], what: str, every: float = 30.0) -> Progress:
    """A :func:`batch_setting` progress callback that logs ``what``'s rows done, the seconds since the
    callback was made and an estimate of the seconds left, at most once every ``every`` seconds and
    always at the last row.

    A block may make several chunked calls one after another (a Gibbs sampler's conditional draws):
    each counts its rows from zero, so after the first the line names the pass and the time left is
    that pass's, estimated from the time since it began.
    """
    start = time.perf_counter()
    last = pass_start = start
    passes = 1
    ended: float | None = None  # when the previous call reported its last row

    def report(done: int, total: int) -> None:
        nonlocal last, pass_start, passes, ended
        now = time.perf_counter()
        if ended is not None:  # the first chunk of the next call
            passes, pass_start, ended = passes + 1, ended, None
        if done >= total:
            ended = now
        elif now - last < every:
            return
        last = now
        left = (now - pass_start) * (total - done) / max(done, 1)
        name = what if passes == 1 else f"{what}, pass {passes}"
        log(f"{name}: {done}/{total} rows after {now - start:.0f}s" + (f", ~{left:.0f}s left" if done < total else ""))

    return report


def current_key(default: str | None = "batch_size") -> str | None:
    """The config key of the enclosing :func:`batch_setting` (None: no key sets the batch), else ``default``."""
    record = _current.get()
    return default if record is None else record.key


def free_memory() -> None:
    """Release what the failed attempt held: collect its tensors and empty CUDA's cache."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def oom_message(what: str, batch: int, key: str | None) -> str:
    """The one line of an out-of-memory failure: what ran, its batch, and the key to lower (if one sets it)."""
    if key is None:  # even one row does not fit, and no setting makes the work smaller
        return (f"CUDA out of memory {what} with batch {batch}: the device is full (other processes on it?); use"
                " a device with more free memory, or set `device: cpu`")
    return (f"CUDA out of memory {what} with batch {batch}: set {key} lower (below {batch}), or use a device"
            " with more memory")


@contextmanager
def fails_at_batch(what: str, batch: int, default_key: str | None) -> Iterator[None]:
    """Out-of-memory inside the block (a training step) raises :class:`~galsep.errors.OutOfMemoryError`
    naming ``what``, ``batch`` and the key of the enclosing :func:`batch_setting` (else ``default_key``).

    Not retried: a smaller batch is a different training run (its gradients, the batches drawn from the
    generator and the steps per epoch all change).
    """
    try:
        yield
    except OOM_ERRORS as exc:
        raise OutOfMemoryError(oom_message(what, batch, current_key(default_key))) from exc


def run_chunked(n: int, batch: int, fn: Callable[[slice], T], *, what: str = "sampling",
                key: str | None = None) -> list[T]:
    """``[fn(rows) for rows in chunks of range(n)]``, halving a chunk that runs out of memory.

    Args:
        n: rows in all.
        batch: rows per chunk (>= 1).
        fn: the computation of one chunk of rows.
        what: what is computed, for the error message ("sampling").
        key: the config key to lower; defaults to that of the enclosing :func:`batch_setting` (whose key
            may be None: no setting).
    Raises:
        OutOfMemoryError: a chunk of a single row ran out of memory.
    """
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    record = _current.get()
    setting = key or current_key("the sampler's batch_size")
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
                raise OutOfMemoryError(oom_message(what, stop - start, setting)) from exc
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
            if record.progress is not None:
                record.progress(stop, n)
        start = stop
    return out
