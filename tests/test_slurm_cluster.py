"""The tiny pipeline through a real local SLURM cluster: `snakemake --cores all --profile slurm`.

tests/slurm/cluster.sh starts munged, slurmctld and slurmd (Debian's packages, as root, no
systemd) in a scratch directory with two fake GPUs; .ci/slurm-setup.sh installs them in CI.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pytest
import xarray as xr

from workflow import ROOT, copy_workflow, snakemake

pytestmark = pytest.mark.slurm

CLUSTER = ROOT / "tests" / "slurm" / "cluster.sh"
GPU_RULES = ("prior_gaussian", "prior_lap", "estep_shard", "posterior_shard", "fit_baseline")
DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "srun")


def why_no_cluster() -> str | None:
    missing = [name for name in DAEMONS if shutil.which(name) is None]
    if missing:
        return f"SLURM not installed (missing {', '.join(missing)}; .ci/slurm-setup.sh installs it with apt)"
    if os.geteuid() != 0:
        return "the local SLURM cluster needs root (slurmd and munged)"
    return None


def free_port_pair() -> int:
    """A port p with p and p+1 free on loopback (slurmctld and slurmd), so parallel runs don't clash."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port < 65535:
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port pair")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Path]:
    """A running single-node cluster; yields its directory, stops every daemon afterwards."""
    reason = why_no_cluster()
    if reason:
        pytest.skip(reason)
    # not under pytest's 0700 tmp tree: munged runs as user munge and must reach its directory
    directory = Path(tempfile.mkdtemp(prefix="galsep-slurm-", dir="/tmp"))
    env = dict(os.environ, GALSEP_SLURM_PORT=str(free_port_pair()))
    try:
        start = subprocess.run(["bash", str(CLUSTER), "start", str(directory)], env=env, capture_output=True,
                               text=True, timeout=120)
        assert start.returncode == 0, f"cluster failed to start:\n{start.stdout}\n{start.stderr}"
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("SLURM_CONF", str(directory / "slurm.conf"))
            mp.setenv("PATH", f"{directory / 'bin'}{os.pathsep}{os.environ['PATH']}")
            for key in ("GALSEP_SLURM_PARTITION", "GALSEP_SLURM_GPU_PARTITION", "GALSEP_SLURM_ACCOUNT",
                        "GALSEP_SLURM_GPU_MODEL", "GALSEP_SLURM_GPU_CPUS"):
                mp.delenv(key, raising=False)
            yield directory
    finally:
        subprocess.run(["bash", str(CLUSTER), "stop", str(directory)], env=env, capture_output=True, timeout=120)
        shutil.rmtree(directory, ignore_errors=True)


def slurm_jobs() -> list[dict[str, str]]:
    """Every job the controller remembers (MinJobAge keeps finished ones), as scontrol fields."""
    out = subprocess.run(["scontrol", "show", "job", "--oneliner"], capture_output=True, text=True,
                         check=True).stdout
    jobs = []
    for line in out.splitlines():
        if line.strip() and not line.startswith("No jobs"):
            jobs.append(dict(re.findall(r"(\w+)=(\S*)", line)))
    return jobs


def batch_script(job_id: str) -> str:
    return subprocess.run(["scontrol", "write", "batch_script", job_id, "-"], capture_output=True, text=True,
                          check=True).stdout


def slurm_logs(workdir: Path) -> str:
    logs = sorted((workdir / ".snakemake" / "slurm_logs").rglob("*.log"))
    return "\n".join(f"--- {p}\n{p.read_text()[-1500:]}" for p in logs[-5:])


def test_tiny_pipeline_through_local_slurm(cluster, tmp_path):
    workdir = copy_workflow(tmp_path / "wf")
    # The catalogue, not the evaluation figures: it keeps the run inside the CI budget.
    # Status polls start at 2 s instead of 40 s since the tiny jobs take seconds; the plugin
    # uses squeue only while MinJobAge >= 3 x this (the test cluster keeps jobs for 1 h).
    target = "results/catalogue.zarr"
    proc = snakemake(
        workdir, target, "--cores", "all", "--profile", "slurm", "--configfile", "tests/configs/tiny.yaml",
        "--seconds-between-status-checks", "2", "--slurm-init-seconds-before-status-checks", "2",
        "--latency-wait", "5", check=False, timeout=900,
    )
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}\n{slurm_logs(workdir)}"

    jobs = slurm_jobs()
    assert jobs, "no job reached SLURM"
    assert all(job["JobState"] == "COMPLETED" for job in jobs), [(j["JobId"], j["JobState"]) for j in jobs]
    rules = set()
    for job in jobs:
        rule = re.match(r"rule_(\w+?)(?:_wildcards_.*)?$", job["Comment"]).group(1)
        rules.add(rule)
        wants_gpu = rule in GPU_RULES
        assert ("gpu" in job.get("TresPerJob", "")) == wants_gpu, (rule, job.get("TresPerJob"))
        # each job runs Snakemake with the interpreter that submitted it (the project's venv)
        assert f"{sys.executable} -m snakemake" in batch_script(job["JobId"]), rule
    assert rules & set(GPU_RULES) and rules - set(GPU_RULES), rules

    # the outputs are complete and up to date: a second run has nothing to do
    again = snakemake(workdir, target, "-n", "--cores", "all", "--configfile", "tests/configs/tiny.yaml")
    assert "Nothing to be done" in again.stdout + again.stderr

    # one row per galaxy cutout, with finite posterior draws of both components
    ds = xr.open_zarr(workdir / target, consolidated=False)
    with h5py.File(workdir / "results" / "cutouts" / "galaxies.h5") as f:
        cutout_ids = f["object_id"][:]
    assert sorted(ds["object_id"].values.tolist()) == sorted(cutout_ids.tolist())
    for name in ("galaxy", "random"):
        draws = ds[name]
        assert draws.dims == ("object", "sample", "y", "x")
        assert draws.shape[0] == len(cutout_ids) and draws.shape[1] >= 1
        assert np.isfinite(draws.values).all(), name
