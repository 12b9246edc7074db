"""The tiny pipeline through a real local SLURM cluster: `snakemake --cores all --profile slurm`.

tests/slurm/cluster.sh starts munged, slurmctld and slurmd (Debian's packages, as root, no
systemd) in a scratch directory with two fake GPUs; .ci/slurm-setup.sh installs them in CI.

Two runs of the same command (tiny config, two EM laps): an uninterrupted reference, and one whose
jobs are cancelled (`scancel`) and requeued (`scontrol requeue`) while they run, then rerun; its
catalogue must equal the reference's (issue 18 item 4).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
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
TARGET = "results/catalogue.zarr"
# The catalogue, not the evaluation figures: it keeps the run inside the CI budget. Status polls
# start at 2 s instead of 40 s since the tiny jobs take seconds; the plugin uses squeue only while
# MinJobAge >= 3 x this (the test cluster keeps jobs for 1 h). Two laps, so that E-step shard
# jobs exist. Both runs use this very command: same threads, so the seeding gives equal draws.
COMMAND = (
    TARGET, "--cores", "all", "--profile", "slurm",
    "--configfile", "tests/configs/tiny.yaml", str(ROOT / "tests" / "slurm" / "two-laps.yaml"),
    "--seconds-between-status-checks", "2", "--slurm-init-seconds-before-status-checks", "2",
    "--latency-wait", "5",
)


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


def slurm_jobs(workdir: Path | None = None) -> list[dict[str, str]]:
    """Every job the controller remembers (MinJobAge keeps finished ones), as scontrol fields;
    only those run in ``workdir`` when given."""
    out = subprocess.run(["scontrol", "show", "job", "--oneliner"], capture_output=True, text=True,
                         check=True).stdout
    jobs = []
    for line in out.splitlines():
        if line.strip() and not line.startswith("No jobs"):
            jobs.append(dict(re.findall(r"(\w+)=(\S*)", line)))
    if workdir is not None:
        jobs = [job for job in jobs if Path(job.get("WorkDir", "")).resolve() == workdir.resolve()]
    return jobs


def job_rule(job: dict[str, str]) -> str:
    return re.match(r"rule_(\w+?)(?:_wildcards_.*)?$", job["Comment"]).group(1)


def batch_script(job_id: str) -> str:
    return subprocess.run(["scontrol", "write", "batch_script", job_id, "-"], capture_output=True, text=True,
                          check=True).stdout


def slurm_logs(workdir: Path) -> str:
    logs = sorted((workdir / ".snakemake" / "slurm_logs").rglob("*.log"))
    return "\n".join(f"--- {p}\n{p.read_text()[-1500:]}" for p in logs[-5:])


@pytest.fixture(scope="module")
def reference(cluster, tmp_path_factory) -> Path:
    """The workflow run once, uninterrupted, through the cluster; its work directory."""
    workdir = copy_workflow(tmp_path_factory.mktemp("reference") / "wf")
    proc = snakemake(workdir, *COMMAND, check=False, timeout=900)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}\n{slurm_logs(workdir)}"
    return workdir


def test_tiny_pipeline_through_local_slurm(reference):
    workdir, target = reference, TARGET
    jobs = slurm_jobs(workdir)
    assert jobs, "no job reached SLURM"
    assert all(job["JobState"] == "COMPLETED" for job in jobs), [(j["JobId"], j["JobState"]) for j in jobs]
    rules = set()
    for job in jobs:
        rule = job_rule(job)
        rules.add(rule)
        wants_gpu = rule in GPU_RULES
        assert ("gpu" in job.get("TresPerJob", "")) == wants_gpu, (rule, job.get("TresPerJob"))
        # each job runs Snakemake with the interpreter that submitted it (the project's venv)
        assert f"{sys.executable} -m snakemake" in batch_script(job["JobId"]), rule
    assert rules & set(GPU_RULES) and rules - set(GPU_RULES), rules

    # the outputs are complete and up to date: a second run has nothing to do
    again = snakemake(workdir, target, "-n", "--cores", "all", "--configfile", *COMMAND[6:8])
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


def start_run(workdir: Path, log: Path) -> subprocess.Popen:
    """The same command as the reference's, in the background, its output in ``log``."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    with log.open("w") as out:
        return subprocess.Popen([sys.executable, "-m", "snakemake", *COMMAND], cwd=workdir, env=env, stdout=out,
                                stderr=subprocess.STDOUT)


def finish(proc: subprocess.Popen, log: Path, timeout: float = 900) -> tuple[int, str]:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return proc.returncode, log.read_text()


def wait_running(workdir: Path, proc: subprocess.Popen, log: Path, rule: str, chain: str,
                 timeout: float = 600) -> dict[str, str]:
    """The first job of ``rule`` on ``chain`` that SLURM runs in ``workdir``, once it has run a second."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for job in slurm_jobs(workdir):
            if (job["JobState"] == "RUNNING" and job_rule(job) == rule
                    and f"_wildcards_{chain}_" in job["Comment"] + "_"):
                time.sleep(1)  # past Snakemake's start inside the job: the stage itself runs
                return job
        if proc.poll() is not None:
            pytest.fail(f"the run ended before a {rule} job of chain {chain} ran:\n{log.read_text()[-5000:]}")
        time.sleep(0.3)
    proc.kill()
    pytest.fail(f"no {rule} job of chain {chain} ran within {timeout} s:\n{log.read_text()[-5000:]}")


def release_requeued(job_id: str, timeout: float = 60) -> None:
    """A requeued job waits 120 s (its BeginTime) before it may start again; start it now instead.
    It takes the new begin time only once it is pending again, after its old run has ended."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = next(j for j in slurm_jobs() if j["JobId"] == job_id)
        if job["JobState"] == "PENDING":
            # should this fail, the job still starts, 120 s later
            subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], capture_output=True)
            return
        if job["JobState"] not in ("RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED"):
            return  # already restarted (or ended): nothing to release
        time.sleep(0.2)


def stamps(directory: Path) -> dict[str, int]:
    """Modification times of the finished files under ``directory`` (not atomic_path's temporaries)."""
    return {str(p.relative_to(directory)): p.stat().st_mtime_ns for p in directory.rglob("*")
            if p.is_file() and ".tmp-" not in p.name}


def test_cancelled_and_requeued_jobs_resume_to_the_same_catalogue(reference, cluster, tmp_path):
    """Issue 18 item 4. Run 1: an E-step shard job of the first chain is cancelled while it runs;
    the run fails. Run 2, the same command: it resumes after the last finished lap (nothing of the
    first chain before that E-step is made again), and a lap job of the second chain is cancelled.
    Run 3, the same command: a running E-step shard job is requeued by SLURM (`scontrol requeue`,
    as preemption with requeue does), restarts from scratch and the run completes. The catalogue's
    draws equal the uninterrupted reference's, to the bit. The data stages before the priors are
    copied from the reference, not run again."""
    workdir = copy_workflow(tmp_path / "wf")
    # the data stages (tiles, targets, cutouts, views) are the reference's, to save their jobs;
    # copies keep their times, so Snakemake takes them as up to date: it starts at the priors
    shutil.copytree(reference / "resources", workdir / "resources")
    for name in ("cutouts", "views"):
        shutil.copytree(reference / "results" / name, workdir / "results" / name)
    prior = workdir / "results" / "prior"

    # run 1: cancel a running E-step shard of the random chain (lap 1, between its two laps)
    proc = start_run(workdir, tmp_path / "run1.log")
    shard = wait_running(workdir, proc, tmp_path / "run1.log", "estep_shard", "random")
    subprocess.run(["scancel", shard["JobId"]], check=True)
    code, log = finish(proc, tmp_path / "run1.log")
    assert code != 0, log[-3000:]
    assert any(j["JobId"] == shard["JobId"] and j["JobState"] == "CANCELLED" for j in slurm_jobs(workdir))
    before = stamps(prior / "random")
    assert {"gaussian.pt", "samples0.pt", "lap1.pt"} <= set(before), before
    assert "lap2.pt" not in before and "samples1.pt" not in before, before
    run1_jobs = {j["JobId"] for j in slurm_jobs(workdir)}

    # run 2: resumes at the E-step after lap 1; cancel a running lap job of the galaxy chain
    proc = start_run(workdir, tmp_path / "run2.log")
    lap = wait_running(workdir, proc, tmp_path / "run2.log", "prior_lap", "galaxy")
    subprocess.run(["scancel", lap["JobId"]], check=True)
    code, log = finish(proc, tmp_path / "run2.log")
    assert code != 0, log[-3000:]
    run2 = [j for j in slurm_jobs(workdir) if j["JobId"] not in run1_jobs]
    remade = {(job_rule(j), j["Comment"]) for j in run2 if "_wildcards_random_" in j["Comment"] + "_"}
    assert not {r for r, c in remade if r == "prior_gaussian" or (r == "prior_lap" and c.endswith("_1"))}, remade
    after = stamps(prior / "random")
    assert {k: after[k] for k in before} == before, "finished files of the first chain were made again"
    # the cancelled lap left no file that looks complete
    assert not (prior / "galaxy" / f"lap{lap['Comment'].rsplit('_', 1)[1]}.pt").exists()
    seen = {j["JobId"] for j in slurm_jobs(workdir)}

    # run 3: a running E-step shard of the galaxy chain is requeued; it restarts and the run ends
    proc = start_run(workdir, tmp_path / "run3.log")
    shard = wait_running(workdir, proc, tmp_path / "run3.log", "estep_shard", "galaxy")
    subprocess.run(["scontrol", "requeue", shard["JobId"]], check=True)
    release_requeued(shard["JobId"])
    code, log = finish(proc, tmp_path / "run3.log")
    assert code == 0, f"{log[-5000:]}\n{slurm_logs(workdir)}"
    requeued = next(j for j in slurm_jobs(workdir) if j["JobId"] == shard["JobId"])
    assert requeued["JobState"] == "COMPLETED" and int(requeued["Restarts"]) >= 1, requeued
    assert all(j["JobState"] == "COMPLETED" for j in slurm_jobs(workdir) if j["JobId"] not in seen)
    assert not {job_rule(j) for j in slurm_jobs(workdir)} & {"synthetic_tile", "targets", "cutouts", "view"}
    assert not [p for p in workdir.rglob("*") if ".tmp-" in p.name], "a temporary was left behind"

    again = snakemake(workdir, TARGET, "-n", "--cores", "all", "--configfile", *COMMAND[6:8])
    assert "Nothing to be done" in again.stdout + again.stderr

    # the same catalogue as the uninterrupted run: same objects, same draws of both components
    ds = xr.open_zarr(workdir / TARGET, consolidated=False)
    ref = xr.open_zarr(reference / TARGET, consolidated=False)
    np.testing.assert_array_equal(ds["object_id"].values, ref["object_id"].values)
    for name in ("galaxy", "random"):
        np.testing.assert_array_equal(ds[name].values, ref[name].values, err_msg=name)
