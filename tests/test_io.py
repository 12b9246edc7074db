"""galsep.io: atomic writes that survive a SIGKILL and a full disk, and torch loads of cut-short files."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from galsep import io
from galsep.errors import DiskFullError, GalsepError, InputError

SRC = Path(io.__file__).resolve().parents[1]

WRITER = """
import sys, time
from galsep.io import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    tmp.write_bytes(b"x" * 4096)
    print(tmp, flush=True)
    time.sleep(60)
"""


def killed_writer(path: Path) -> Path:
    """Run a writer of ``path`` in a subprocess, SIGKILL it mid-write; return the temporary it left."""
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        tmp = Path(proc.stdout.readline().strip())
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert tmp.name.startswith(f".{path.name}.tmp-{proc.pid}@")
    return tmp


def test_killed_writer_litter_is_swept_by_the_next_write(tmp_path):
    out = tmp_path / "results" / "catalogue.fits"
    dead = killed_writer(out)
    assert dead.exists() and not out.exists()  # SIGKILL: no cleanup ran, and nothing looks complete
    live = out.with_name(f".{out.name}.tmp-{os.getpid()}@{io._host()}-0123abcd")  # this process's write, in progress
    elsewhere = out.with_name(f".{out.name}.tmp-999999@another-node-0123abcd")  # a live job on another node?
    elsewhere.write_text("x")
    live.write_bytes(b"in use")
    old = out.with_name(f".{out.name}.tmp-89abcdef")  # old format, no pid: kept for an hour
    old.mkdir()
    (old / "chunk").write_bytes(b"old")
    os.utime(old, (time.time() - 2 * io.STALE_AGE,) * 2)
    recent = out.with_name(f".{out.name}.tmp-fedcba98")
    recent.write_bytes(b"recent")
    other = out.with_name(f".other.fits.tmp-{99999999}-0123abcd")  # another output's: not this path's
    other.write_bytes(b"other")

    with io.atomic_path(out) as tmp:
        assert tmp.name.startswith(f".{out.name}.tmp-{os.getpid()}@{io._host()}-")
        tmp.write_bytes(b"complete")
    assert out.read_bytes() == b"complete"
    assert not dead.exists() and not old.exists()
    assert live.read_bytes() == b"in use" and recent.exists() and other.exists()
    assert elsewhere.exists()  # its pid cannot be checked from here: kept until it is an hour old


def test_sweep_keeps_a_live_writers_directory_store(tmp_path):
    out = tmp_path / "catalogue.zarr"
    live = tmp_path / f".catalogue.zarr.tmp-{os.getppid()}-0123abcd"  # the parent process is alive
    live.mkdir()
    assert io.sweep_temporaries(out) == []
    assert live.is_dir()


@pytest.mark.parametrize("failure", [
    OSError(errno.ENOSPC, "No space left on device"),
    OSError(errno.EDQUOT, "Disk quota exceeded"),
    OSError("Can't write data (file write failed: errno = 28, error message = 'No space left on device')"),  # h5py
])
def test_disk_full_leaves_the_old_file_and_names_path_free_and_needed(tmp_path, failure):
    out = tmp_path / "views.h5"
    out.write_bytes(b"previous, complete")
    with pytest.raises(DiskFullError) as info, io.atomic_path(out) as tmp:
        with open(tmp, "wb") as f:
            f.write(b"y" * 3000)
        raise failure
    message = str(info.value)
    assert isinstance(info.value, GalsepError) and isinstance(info.value, OSError)
    assert str(out) in message and "no space left" in message and "free" in message
    assert "needed more than the 2.9 KiB written" in message and "rerun" in message
    assert info.value.__cause__ is failure
    assert out.read_bytes() == b"previous, complete"
    assert [p.name for p in tmp_path.iterdir()] == ["views.h5"]  # no temporary either


def test_torch_save_on_a_full_disk_is_a_disk_full_error(tmp_path, monkeypatch):
    """torch.save loses the errno (a RuntimeError); the disk's free space tells."""
    out = tmp_path / "sample.pt"
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(io.shutil, "disk_usage", lambda p: usage._replace(free=4096))
    with pytest.raises(DiskFullError, match=r"4\.0 KiB free"), io.atomic_path(out):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
    assert not out.exists()
    monkeypatch.setattr(io.shutil, "disk_usage", lambda p: usage._replace(free=1 << 40))
    with pytest.raises(RuntimeError, match="unexpected pos") as info, io.atomic_path(out):
        raise RuntimeError("unexpected pos 704 vs 598")
    assert not isinstance(info.value, DiskFullError)  # plenty of space: a bug, with its traceback


@pytest.mark.parametrize("keep", [0.5, 10, 0])
def test_truncated_torch_file_names_the_file_and_the_fix(tmp_path, keep):
    path = tmp_path / "prior.pt"
    torch.save({"x": torch.arange(10_000)}, path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep) if keep < 1 else keep])
    with pytest.raises(InputError) as info:
        io.load_torch(path)
    message = str(info.value)
    assert str(path) in message and "truncated or corrupt torch file" in message
    assert "delete it and rerun the workflow" in message and "\n" not in message
