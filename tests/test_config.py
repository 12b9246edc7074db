"""Bad configs fail before any job runs, naming the key and the reason."""

from __future__ import annotations

import pytest

from workflow import copy_workflow, snakemake


@pytest.fixture(scope="module")
def wf(tmp_path_factory):
    return copy_workflow(tmp_path_factory.mktemp("wf"))


@pytest.mark.parametrize(
    "override, key, reason",
    [
        ("cutouts: {size: big}", "size", "is not of type 'integer'"),  # wrong type
        ("colour: blue", "colour", "Additional properties are not allowed"),  # unknown key
        ("views: {stretch: -0.2}", "stretch", "less than or equal to the minimum"),  # impossible value
        ("cutouts: {size: -64}", "size", "less than the minimum"),  # negative size
        ("cutouts: {size: 2000}", "cutouts.size", "larger than the covered part"),  # cutout > tile
        ("source: hubble", "source", "is not one of"),
    ],
)
def test_bad_config_fails_naming_the_key(wf, tmp_path, override, key, reason):
    (tmp_path / "bad.yaml").write_text(override + "\n")
    proc = snakemake(wf, "-n", "--configfile", str(tmp_path / "bad.yaml"), check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert key in out and reason in out, out[-3000:]
    assert "jobid" not in out  # nothing was scheduled
    assert not (wf / "results").exists()


def test_default_config_is_valid_and_dry_runs(wf):
    out = snakemake(wf, "-n").stdout
    assert "synthetic_tile" in out and "cutouts" in out
