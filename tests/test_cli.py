"""The stage command line: the user's errors end in one line and exit 2, bugs keep their traceback."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import argparse, sys
    from galsep.cli import add_stage, run
    from galsep.errors import ConfigError, InputError

    def bug(a, p, log):
        int("not a number")  # a ValueError that is nobody's input: a programming error

    def bad_input(a, p, log):
        raise InputError("tile.fits: no SCI extension")

    def bad_config(a, p, log):
        raise ConfigError("views.downsample_2x must not exceed 1")

    ap = argparse.ArgumentParser(prog="galsep")
    sub = ap.add_subparsers(dest="stage", required=True)
    for name, fn in (("bug", bug), ("bad-input", bad_input), ("bad-config", bad_config)):
        add_stage(sub, name, fn, name)
    sys.exit(run(ap.parse_args()))
""")


def stage(name: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", SCRIPT, name], capture_output=True, text=True, timeout=60)


def test_programming_error_keeps_its_traceback():
    proc = stage("bug")
    assert proc.returncode not in (0, 2)
    assert "Traceback (most recent call last)" in proc.stderr
    assert "invalid literal for int()" in proc.stderr


@pytest.mark.parametrize("name, message", [("bad-input", "tile.fits: no SCI extension"),
                                           ("bad-config", "views.downsample_2x must not exceed 1")])
def test_user_error_is_one_line_and_exit_2(name, message):
    proc = stage(name)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].endswith(f"galsep {name}: {message}")
