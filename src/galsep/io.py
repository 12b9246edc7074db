"""Atomic file output (a killed job never leaves a file that looks complete) and safe torch loads."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from galsep.errors import InputError

__all__ = ["sha256_file", "atomic_path"]


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write to; move it into place only on success.

    Works for files and for directory stores (Zarr). On any exception the temporary is removed and
    ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def load_torch(path: str | os.PathLike) -> dict[str, Any]:
    """A torch file of plain data (a dict of tensors, dicts, lists, tuples, str, numbers) on the CPU.

    Loads with ``weights_only=True``, so a file never runs pickled code; one holding other objects
    is refused with an :class:`InputError` naming it.
    """
    import pickle

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise InputError(f"{path}: not a plain torch file (tensors, dicts, lists, numbers, str); delete it and"
                         f" rerun to make it again ({err})") from err
