"""The SLURM profile (slurm/config.yaml) without a cluster: what Snakemake reads from it, the
resources each rule gets in a dry run, and the sbatch flags the slurm executor plugin builds."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
from snakemake.cli import get_profile_dir
from snakemake.profiles import ProfileConfigFileParser
from snakemake_executor_plugin_slurm.submit_string import get_submit_command
from snakemake_executor_plugin_slurm.utils import set_gres_string

from workflow import ROOT, copy_workflow, snakemake

PROFILE = ROOT / "slurm" / "config.yaml"
GPU_RULES = ("prior_gaussian", "prior_lap", "estep_shard", "posterior_shard", "fit_baseline")
ENV_KEYS = ("GALSEP_SLURM_PARTITION", "GALSEP_SLURM_GPU_PARTITION", "GALSEP_SLURM_ACCOUNT", "GALSEP_SLURM_GPU_MODEL",
            "GALSEP_SLURM_GPU_CPUS")

# A workflow with the profile's GPU rule names and one CPU rule, so dry runs need no data.
TOY_SNAKEFILE = """
rule all:
    input: expand("out/{name}.txt", name=["prior_gaussian", "prior_lap", "estep_shard", "posterior_shard", "fit_baseline", "cpu"])

rule prior_gaussian:
    output: "out/prior_gaussian.txt"
    shell: "touch {output}"

rule prior_lap:
    output: "out/prior_lap.txt"
    shell: "touch {output}"

rule estep_shard:
    output: "out/estep_shard.txt"
    shell: "touch {output}"

rule posterior_shard:
    output: "out/posterior_shard.txt"
    shell: "touch {output}"

rule fit_baseline:
    output: "out/fit_baseline.txt"
    shell: "touch {output}"

rule cpu_stage:
    output: "out/cpu.txt"
    shell: "touch {output}"
"""


def read_profile(monkeypatch: pytest.MonkeyPatch, **env: str) -> dict[str, object]:
    """Parse the profile as Snakemake does, with exactly the GALSEP_SLURM_* variables given."""
    for key in ENV_KEYS:
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with open(PROFILE) as f:
        return dict(ProfileConfigFileParser().parse(f))


def resources(profile: dict[str, object], rule: str | None = None) -> dict[str, object]:
    """Resource values (Python literals) of the default block, or of one rule's set-resources."""
    if rule is None:
        items = profile["default-resources"]
    else:
        items = [item.split(":", 1)[1] for item in profile["set-resources"] if item.split(":", 1)[0] == rule]
    return {key: ast.literal_eval(value) for key, value in (item.split("=", 1) for item in items)}


def dry_run_resources(output: str) -> dict[str, dict[str, str]]:
    """Map rule name -> resources printed by `snakemake -n` (the last job of each rule), with its
    threads under "threads" (Snakemake prints them only when above 1)."""
    found: dict[str, dict[str, str]] = {}
    rule = None
    for line in output.splitlines():
        if m := re.match(r"(?:local)?rule (\w+):", line):
            rule = m.group(1)
            found[rule] = {"threads": "1"}
        elif rule and (m := re.match(r"\s+threads: (\d+)", line)):
            found[rule]["threads"] = m.group(1)
        elif rule and (m := re.match(r"\s+resources: (.*)", line)):
            found[rule].update(kv.split("=", 1) for kv in m.group(1).split(", "))
    return found


class FakeJob:
    """The parts of a Snakemake job that the plugin's sbatch builders read."""

    def __init__(self, name: str, res: dict[str, object], threads: int = 1):
        self.name = name
        self.threads = threads
        self.resources = _Resources(res)


class _Resources(dict):
    def __getattr__(self, key: str) -> object:
        return self[key]


def sbatch_call(rule: str, res: dict[str, object]) -> str:
    params = dict(run_uuid="run", slurm_logfile="log", comment_str=f"rule_{rule}", account="", partition="",
                  workdir="/work")
    job = FakeJob(rule, res)
    return get_submit_command(job, params) + set_gres_string(job)


def test_profile_is_found_from_project_root(monkeypatch):
    monkeypatch.chdir(ROOT)
    directory, config = get_profile_dir("slurm")
    assert Path(config).resolve() == PROFILE


def test_profile_selects_slurm_with_squeue_status(monkeypatch):
    profile = read_profile(monkeypatch)
    assert profile["executor"] == "slurm"
    # sacct answers nothing on clusters without slurmdbd; squeue works on both kinds
    assert profile["slurm-status-command"] == "squeue"
    # one lap's 64 E-step shards must be able to run side by side
    assert int(profile["jobs"]) >= 64


def test_gpu_rules_ask_for_one_gpu_and_cpu_rules_for_none(monkeypatch):
    profile = read_profile(monkeypatch)
    default = resources(profile)
    assert "gpu" not in default and "gpu_model" not in default
    assert default["mem_mb"] > 0 and default["runtime"] > 0
    named = {item.split(":", 1)[0] for item in profile["set-resources"]}
    assert named == set(GPU_RULES)
    # GPU jobs hold a fixed number of cores, not all of the login node's --cores
    assert profile["set-threads"] == [f"{rule}=8" for rule in GPU_RULES]
    for rule in GPU_RULES:
        res = resources(profile, rule)
        assert res["gpu"] == 1, rule
        assert res["mem_mb"] >= default["mem_mb"] and res["runtime"] > 0, rule
    # training a lap is the longest GPU stage
    assert resources(profile, "prior_lap")["runtime"] >= resources(profile, "estep_shard")["runtime"]


def test_unset_environment_leaves_partition_account_and_model_to_the_cluster(monkeypatch):
    profile = read_profile(monkeypatch)
    assert resources(profile)["slurm_partition"] == ""
    assert resources(profile)["slurm_account"] == ""
    assert resources(profile, "prior_lap")["gpu_model"] == ""
    # and an empty model still yields a plain --gpus=1 request
    assert "--gpus=1" in sbatch_call("prior_lap", resources(profile, "prior_lap"))


def test_environment_points_the_profile_at_a_cluster(monkeypatch):
    profile = read_profile(monkeypatch, GALSEP_SLURM_PARTITION="short", GALSEP_SLURM_ACCOUNT="astro42",
                           GALSEP_SLURM_GPU_MODEL="a100")
    assert resources(profile)["slurm_partition"] == "short"
    assert resources(profile)["slurm_account"] == "astro42"
    for rule in GPU_RULES:  # the GPU partition falls back to the CPU one
        assert resources(profile, rule)["slurm_partition"] == "short"
        assert resources(profile, rule)["gpu_model"] == "a100"
    profile = read_profile(monkeypatch, GALSEP_SLURM_PARTITION="short", GALSEP_SLURM_GPU_PARTITION="gpu")
    assert resources(profile)["slurm_partition"] == "short"
    assert all(resources(profile, rule)["slurm_partition"] == "gpu" for rule in GPU_RULES)


def test_plugin_turns_profile_resources_into_sbatch_flags(monkeypatch):
    profile = read_profile(monkeypatch, GALSEP_SLURM_GPU_MODEL="h100")
    lap = resources(profile, "prior_lap")
    call = sbatch_call("prior_lap", lap)
    assert "--gpus=h100:1" in call
    assert f"--mem {lap['mem_mb']}" in call and f"-t {lap['runtime']}" in call
    # --gres/--gpus in slurm_extra would be rejected; the profile must not need it
    assert "slurm_extra" not in lap
    cpu = sbatch_call("cpu_stage", resources(profile))
    assert "--gpus" not in cpu and "--gres" not in cpu
    assert "--ntasks=1" in cpu


@pytest.fixture
def toy_workdir(tmp_path: Path) -> Path:
    (tmp_path / "Snakefile").write_text(TOY_SNAKEFILE)
    return tmp_path


def test_dry_run_gives_gpus_to_gpu_rules_only(toy_workdir, monkeypatch):
    for key in ENV_KEYS:
        monkeypatch.delenv(key, raising=False)
    # as on a 64-core login node
    out = snakemake(toy_workdir, "-n", "--cores", "64", "--profile", str(PROFILE.parent)).stdout
    res = dry_run_resources(out)
    for rule in GPU_RULES:
        assert res[rule]["gpu"] == "1", rule
        assert res[rule]["mem_mb"] == "32000", rule
        assert res[rule]["threads"] == "8", rule
    assert "gpu" not in res["cpu_stage"]
    assert res["cpu_stage"]["mem_mb"] == "4000"
    assert res["cpu_stage"]["threads"] == "1"


def test_command_line_set_resources_replaces_the_profile_block(toy_workdir, monkeypatch):
    """What docs/slurm.md warns about: one --set-resources drops every GPU request of the profile."""
    for key in ENV_KEYS:
        monkeypatch.delenv(key, raising=False)
    out = snakemake(toy_workdir, "-n", "--cores", "all", "--profile", str(PROFILE.parent),
                    "--set-resources", "estep_shard:runtime=5").stdout
    res = dry_run_resources(out)
    assert res["estep_shard"]["runtime"] == "5"
    assert all("gpu" not in res[rule] for rule in GPU_RULES)


@pytest.fixture(scope="module")
def workflow_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_workflow(tmp_path_factory.mktemp("slurm-profile-workflow"))


def test_profile_names_rules_of_the_workflow(workflow_copy):
    rules = set(snakemake(workflow_copy, "--list-rules").stdout.split())
    missing = set(GPU_RULES) - rules
    assert not missing, f"profile gives GPUs to rules the workflow lacks: {sorted(missing)}"


def test_real_workflow_dry_runs_with_the_profile(workflow_copy, monkeypatch):
    for key in ENV_KEYS:
        monkeypatch.delenv(key, raising=False)
    out = snakemake(workflow_copy, "-n", "--cores", "64", "--profile", "slurm",
                    "--configfile", "tests/configs/tiny.yaml").stdout
    res = dry_run_resources(out)
    assert set(GPU_RULES) & set(res), out[-2000:]
    for rule, values in res.items():
        assert (values.get("gpu") == "1") == (rule in GPU_RULES), rule
        if rule in GPU_RULES:
            assert values["threads"] == "8", rule
