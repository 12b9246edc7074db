"""Bad configs fail before any job runs, naming the key and the reason."""

from __future__ import annotations

import re

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


def test_sharding_plans_one_job_per_shard(wf, tmp_path):
    """64 shards give 64 independent E-step jobs per lap and 64 posterior jobs (dry run)."""
    (tmp_path / "s.yaml").write_text("em: {shards: 64, laps: 2}\nposterior: {shards: 64}\ncompare: []\n")
    out = snakemake(wf, "-n", "--configfile", "config.yaml", str(tmp_path / "s.yaml")).stdout
    stats = dict(re.findall(r"^(\w+)\s+(\d+)$", out[out.index("Job stats:"):], re.M))
    # laps 2 in two chains: the E-steps of lap 1 feed lap 2; the last lap's E-step is not needed
    assert stats["estep_shard"] == str(64 * 2) and stats["gather_estep"] == "2"
    assert stats["posterior_shard"] == "64"
    assert len(set(re.findall(r"results/prior/random/estep1/shard(\d+)\.pt", out))) == 64
