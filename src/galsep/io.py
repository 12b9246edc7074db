"""Atomic file output (a killed job never leaves a file that looks complete) and safe torch loads.

:func:`atomic_path` writes to a temporary sibling ``.{name}.tmp-{pid}@{host}-{rand}`` and moves it into place
only on success. A job killed outright (SIGKILL, a node lost) cannot remove its temporary; the next
write of the same path sweeps such leftovers (:func:`sweep_temporaries`). A write that runs out of
space raises :class:`~galsep.errors.DiskFullError` naming the path and the space free and needed.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from galsep.errors import DiskFullError, InputError

__all__ = ["STALE_AGE", "atomic_path", "disk_full_error", "is_disk_full", "load_torch", "sha256_file",
           "sweep_temporaries"]

log = logging.getLogger(__name__)

STALE_AGE = 3600.0  # seconds; a temporary whose owner cannot be checked is stale past this age
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
_NO_SPACE_TEXT = ("no space left on device", "disk quota exceeded", "errno = 28", "errno = 122")
_LOW_SPACE = 1 << 20  # bytes; less than this free after a failed write: the disk is full


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    except OverflowError:  # not a pid at all
        return False
    return True


def _host() -> str:
    """This machine's name, safe in a file name (a pid is only meaningful on its own host)."""
    import socket

    return re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname()) or "host"


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)


def sweep_temporaries(path: str | os.PathLike, stale_age: float = STALE_AGE) -> list[Path]:
    """Remove the temporaries of ``path`` left by killed writers; return those removed.

    A temporary ``.{name}.tmp-{pid}@{host}-{rand}`` of this host is removed when no process ``pid`` is
    alive; one of another host (a shared filesystem: its pid means nothing here) or without a pid
    (``.{name}.tmp-{rand}``, older galsep) when its mtime is older than ``stale_age`` seconds. One whose
    writer is alive, this process included, is kept.
    """
    path = Path(path)
    prefix = f".{path.name}.tmp-"
    removed: list[Path] = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        if not entry.name.startswith(prefix):
            continue
        rest = entry.name[len(prefix):]
        m = re.fullmatch(r"(\d+)(?:@([^-/]+))?-[0-9a-f]{8}", rest)
        try:
            if m and m.group(2) in (None, _host()):
                stale = not _pid_alive(int(m.group(1)))
            elif m:
                stale = now - entry.stat(follow_symlinks=False).st_mtime > stale_age
            elif re.fullmatch(r"[0-9a-f]{8}", rest):
                stale = now - entry.stat(follow_symlinks=False).st_mtime > stale_age
            else:
                continue
        except OSError:  # gone meanwhile
            continue
        if stale:
            _remove(Path(entry.path))
            removed.append(Path(entry.path))
    if removed:
        log.info("%s: removed %d temporaries of killed writers: %s", path, len(removed),
                 ", ".join(p.name for p in removed))
    return removed


def _size(p: Path) -> int:
    """Bytes in a file or a directory tree (0 if absent)."""
    try:
        if p.is_dir() and not p.is_symlink():
            return sum(f.stat().st_size for f in p.rglob("*") if f.is_file() and not f.is_symlink())
        return p.stat().st_size
    except OSError:
        return 0


def _free(where: Path) -> int | None:
    for p in (where, *where.parents):
        try:
            return shutil.disk_usage(p).free
        except OSError:
            continue
    return None


def _human(n: int | None) -> str:
    if n is None:
        return "unknown"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def is_disk_full(err: BaseException, where: str | os.PathLike | None = None) -> bool:
    """Whether ``err`` is a write failing for lack of space or quota.

    ENOSPC/EDQUOT anywhere in the exception's chain, or their message (h5py and torch lose the
    errno); given ``where``, also an OSError or RuntimeError (torch.save's) while its disk has less
    than 1 MiB free.
    """
    seen: set[int] = set()
    e: BaseException | None = err
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in _NO_SPACE:
            return True
        if any(t in str(e).lower() for t in _NO_SPACE_TEXT):
            return True
        e = e.__cause__ or e.__context__
    if where is not None and isinstance(err, (OSError, RuntimeError)):
        free = _free(Path(where))
        return free is not None and free < _LOW_SPACE
    return False


def disk_full_error(path: str | os.PathLike, err: BaseException, *, written: int | None = None,
                    needed: int | None = None) -> DiskFullError:
    """The :class:`DiskFullError` of a write of ``path`` that ran out of space: free vs needed."""
    path = Path(path)
    free = _free(path.parent)
    if needed is not None:
        need = f"needed {_human(needed)}"
    elif written is not None:
        need = f"needed more than the {_human(written)} written before it failed"
    else:
        need = "needed an unknown amount"
    return DiskFullError(
        f"{path}: no space left on the device to write it ({_human(free)} free, {need}; {type(err).__name__}: {err})."
        " Nothing was left that looks complete: free some space there (or move the results to a larger disk)"
        " and rerun."
    )


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write to; move it into place only on success.

    Works for files and for directory stores (Zarr). On any exception the temporary is removed and
    ``path`` is left as it was; a write that ran out of space raises :class:`DiskFullError` (the path,
    the space free and needed). The temporary is named ``.{name}.tmp-{pid}@{host}-{rand}``, and the
    temporaries of earlier writers of ``path`` that were killed are removed first.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_temporaries(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}@{_host()}-{uuid.uuid4().hex[:8]}")
    try:
        try:
            yield tmp
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            os.replace(tmp, path)
        except (OSError, RuntimeError) as err:
            if isinstance(err, DiskFullError) or not is_disk_full(err, path.parent):
                raise
            raise disk_full_error(path, err, written=_size(tmp)) from err
    finally:
        _remove(tmp)


def load_torch(path: str | os.PathLike) -> dict[str, Any]:
    """A torch file of plain data (a dict of tensors, dicts, lists, tuples, str, numbers) on the CPU.

    Loads with ``weights_only=True``, so a file never runs pickled code; one holding other objects
    is refused with an :class:`InputError` naming it, and so is a truncated or corrupt file.
    """
    import pickle

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise InputError(f"{path}: not a plain torch file (tensors, dicts, lists, numbers, str); delete it and"
                         f" rerun to make it again ({err})") from err
    except (RuntimeError, EOFError, OSError) as err:
        if isinstance(err, (FileNotFoundError, PermissionError, IsADirectoryError)):
            raise  # not the file's content: the command line reports a missing file as it is
        size = _size(Path(path))
        first = str(err).split(". ")[0] or type(err).__name__
        raise InputError(f"{path}: truncated or corrupt torch file ({size} bytes; {first}); it was not written"
                         " completely (a copy cut short, or written outside the workflow): delete it and rerun"
                         " the workflow, which makes it again") from err
