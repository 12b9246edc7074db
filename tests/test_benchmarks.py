"""The speed benchmarks run: posterior.py and gpu.py in their smallest modes on the CPU print every
figure positive and finite, and the named cases have the sizes benchmarks/README.md gives them."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from typing import Any

import pytest

from workflow import ROOT

BENCH = ROOT / "benchmarks"
SAMPLING = ("seconds_per_batch", "draws_per_second", "seconds_per_draw", "flops_per_draw", "achieved_gflops",
            "fraction_of_fp32_peak", "peak_memory_mb")
TRAINING = ("steps_per_second", "seconds_per_step", "samples_per_second", "flops_per_step", "achieved_gflops",
            "fraction_of_fp32_peak", "peak_memory_mb")


def run(script: str, *args: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def positive(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def check_case(row: dict[str, Any]) -> None:
    bad = [f"sampling.{k}" for k in SAMPLING if not positive(row["sampling"][k])]
    bad += [f"training.{k}" for k in TRAINING if not positive(row["training"][k])]
    bad += [k for k in ("fp32_peak_gflops", "parameters_per_source") if not positive(row[k])]
    passes = row["sampling"]["network_passes_per_draw"]
    # every posterior call runs each source's network forward and a VJP through it
    bad += [f"passes.{k}" for k in ("forward", "vjp") if not passes[k] >= 2 * row["sampler"]["steps"]]
    call = row["posterior_call"]
    bad += [f"posterior_call.{k}" for k in ("flops", "flops_per_forward", "flops_per_vjp") if not positive(call[k])]
    assert not bad, f"{row['case']} ({row['precision']}): {bad}"


def test_posterior_smoke_fp32_and_bf16() -> None:
    out = run("posterior.py", "--case", "pipeline", "--smoke", "--bf16")
    assert [(r["case"], r["precision"]) for r in out["cases"]] == [("pipeline", "fp32"), ("pipeline", "bf16")]
    for row in out["cases"]:
        check_case(row)
        assert row["shape"] == [32, 32] and row["batch"] == 2 and row["sampler"]["steps"] == 2
    assert positive(out["cases"][1]["bf16_peak_gflops"])
    assert all(positive(v) for v in out["bf16_speedup"]["pipeline"].values())


def test_gpu_smoke_on_cpu() -> None:
    out = run("gpu.py", "--device", "cpu", "--small", "--threads", "1")
    check_case(out["paper_case"])
    assert positive(out["paper_reference"]["speedup"])
    lap = out["pipeline_lap"]
    for chain, sources in (("random", 1), ("galaxy", 2)):
        assert lap[chain]["sources"] == sources
        for k in ("train_seconds", "train_steps_per_second", "estep_seconds", "estep_draws_per_second"):
            assert positive(lap[chain][k]), (chain, k)
    assert lap["lap_seconds"] == pytest.approx(sum(lap[c]["train_seconds"] + lap[c]["estep_seconds"]
                                                   for c in ("random", "galaxy")), abs=0.01)


def test_named_cases_have_their_documented_sizes() -> None:
    sys.path.insert(0, str(BENCH))
    try:
        import cases
        import posterior
    finally:
        sys.path.remove(str(BENCH))
    import torch

    assert posterior.CASE_NAMES == list(cases.CASES)
    got = {name: make() for name, make in cases.CASES.items() if name != "paper"}
    params = {}
    for name, case in got.items():
        den, _ = cases.denoiser(case, torch.device("cpu"), bf16=False)
        params[name] = sum(p.numel() for p in den.parameters())
        x = torch.zeros(1, *case.shape)
        assert den(x, torch.ones(1)).shape == x.shape
    assert 3.3e6 <= params["unet28"] <= 3.5e6 and got["unet28"].shape == (28, 28) and got["unet28"].batch == 16
    assert got["unet28"].sampler["steps"] == 64 and got["unet28"].sampler["cg_iters"] == 1
    assert got["mlp5"].shape == (5,) and list(got["mlp5"].network["hidden"]) == [256, 256, 256]
    assert got["mlp5"].batch == 1024 and got["mlp5"].sampler["steps"] == 256
    assert got["pipeline"].shape == (32, 32) and got["pipeline"].sampler["steps"] == 16
    paper = cases.paper()
    den, _ = cases.denoiser(paper, torch.device("cpu"), bf16=False)
    assert 60e6 <= sum(p.numel() for p in den.parameters()) <= 65e6 and paper.shape == (128, 128)
    assert paper.sampler["steps"] == 64 and paper.sources == 2
