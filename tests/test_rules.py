"""The rules' DAG: every file has one producing rule (dry runs of a scratch copy of the workflow)."""

from __future__ import annotations

import pytest
import yaml

from galsep.methods import registry
from workflow import ROOT, copy_workflow, snakemake


@pytest.fixture(scope="module")
def wf(tmp_path_factory):
    return copy_workflow(tmp_path_factory.mktemp("wf"))


def test_first_samples_come_from_the_gaussian_rule_only(wf):
    # with lap-0 E-step shards on disk, gather_estep (lap=0) could also make samples0.pt
    shards = yaml.safe_load((ROOT / "config.yaml").read_text())["em"]["shards"]
    (wf / "results/prior/random/estep0").mkdir(parents=True)
    for i in range(shards):
        (wf / f"results/prior/random/estep0/shard{i}.pt").touch()
    proc = snakemake(wf, "-n", "results/prior/random/samples0.pt", "results/prior/random/samples1.pt", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "AmbiguousRuleException" not in out, out[-3000:]
    assert "output: results/prior/random/gaussian.pt, results/prior/random/samples0.pt" in out
    # later laps are still gathered from their E-step shards
    assert "rule gather_estep:" in out and "output: results/prior/random/samples1.pt" in out


def test_compare_takes_every_method_s_benchmark_files_as_inputs(wf):
    out = snakemake(wf, "-n", "results/compare/table.json").stdout
    block = out[out.index("rule compare:"):]
    inputs = block[block.index("input: ") + 7:].split("\n")[0].split(", ")
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    laps, shards = config["em"]["laps"], config["em"]["shards"]
    expected = [f"results/compare/{m}.json" for m in config["compare"]]
    expected += [f"logs/benchmark/prior/{c}/gaussian.tsv" for c in ("random", "galaxy")]
    expected += [f"logs/benchmark/prior/{c}/lap{laps}.tsv" for c in ("random", "galaxy")]
    expected += [f"logs/benchmark/prior/galaxy/estep{laps - 1}/shard{shards - 1}.tsv"]
    for m in config["compare"]:
        expected.append(f"logs/benchmark/posterior/{m}/shard0.tsv")
        if registry()[m].fitted:  # fitted methods are fitted first
            expected.append(f"logs/benchmark/baselines/{m}.tsv")
    assert not set(expected) - set(inputs), sorted(set(expected) - set(inputs))
    assert len(inputs) == len(set(inputs))  # the diffusion methods share their EM's files once
