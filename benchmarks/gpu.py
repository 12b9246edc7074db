"""GPU figures: DDPRISM's paper-size galaxy case and one lap of the default pipeline, on one device.

Prints one JSON object:
- ``paper_case``: 128x128 images, 2 sources, the galaxy U-Net at DDPRISM's size (paper table 3:
  channels 64-128-256-256-512, attention at the three coarsest levels; 61.4M parameters per source
  with galsep's U-Net, benchmarks/cases.py ``paper``), 64 PC steps with 1 corrector, CG 1, batch 16:
  seconds per draw and per training step (batch 64) with every field of benchmarks/cases.py's
  ``measure``, beside the paper's 1.5 s per draw on an H100 (table 5).
- ``pipeline_lap``: one EM lap of the default pipeline at config.yaml's settings, both chains as
  the contrastive schedule runs them: the random chain (M-step on the randoms' samples, one-source
  E-step over the randoms view) then the galaxy chain (M-step, two-source E-step over the galaxies
  view with the random prior frozen), through galsep.inference.em's m_step and e_step on synthetic
  observations of the default field's shapes and row counts (tiles x targets or randoms per tile).
  The pipeline splits each E-step into ``em.shards`` jobs; here one device runs all rows, in chunks
  of ``em.sampler.batch_size``.

On an H100/H200 the default run should take 1-3 minutes in float32 (estimated from its FLOPs: ~33 TFLOP
per paper-case draw; not yet timed on a GPU); ``--bf16`` adds a bf16 run of the paper case. Without
CUDA, ``--device cpu --small`` runs everything at toy sizes in seconds.

    python benchmarks/gpu.py                        # one GPU
    python benchmarks/gpu.py --bf16                 # and the paper case under bf16 autocast
    python benchmarks/gpu.py --device cpu --small   # smoke run on a CPU
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from typing import Any

import cases
import torch

from galsep.inference.em import e_step, m_step
from galsep.inference.observations import Observations
from galsep.inference.priors import Prior, schedule_of
from galsep.seeding import derive_seed, generator

PAPER_SECONDS_PER_DRAW = 1.5  # DDPRISM (arXiv 2510.05205) table 5: galaxy images, inference time per sample, H100


def small_paper(case: cases.Case) -> cases.Case:
    """The paper case's structure (5 levels, attention at the 3 coarsest) at toy sizes, for a CPU smoke run."""
    net = {**case.network, "channels": [8, 8, 16, 16, 16], "blocks": 1, "heads": 2, "emb_features": 16}
    return replace(cases.smoke(case), shape=(32, 32), network=net)


def _observations(sources: tuple[str, ...], rows: int, shape: tuple[int, int], downsample: bool,
                  variance: float, seed: int, key: str, device: torch.device) -> Observations:
    """Rows of a view holding every source with coefficient 1, shaped like the pipeline's cutouts."""
    gen = generator(seed, "benchmark", "lap", key)
    op = cases.pixel_operator(rows, shape, downsample, gen)
    y = 0.1 * torch.randn(rows, *shape, generator=gen)
    return Observations(sources=sources, y=y, variance=torch.full_like(y, variance), ops=(op,) * len(sources),
                        coef=torch.ones(rows, len(sources)), shape=shape, mask=op.mask, factor=op.factor).to(device)


def pipeline_lap(device: torch.device, small: bool, seed: int) -> dict[str, Any]:
    """One EM lap of both chains at config.yaml's settings (``small``: 4 rows, 2 steps of each)."""
    cfg = cases.validated_config()
    size = int(cfg["cutouts"]["size"])
    shape = (size, size)
    em, schedule = cfg["em"], schedule_of(cfg["diffusion"])
    train, sampler = dict(em["train"]), dict(em["sampler"])
    syn = cfg["synthetic"]
    rows = {"random": syn["tiles"] * cfg["cutouts"]["randoms_per_tile"],
            "galaxy": syn["tiles"] * syn["targets_per_tile"]}
    if small:
        train["steps"], sampler["steps"] = 2, 2
        rows = dict.fromkeys(rows, 4)
    downsample = cfg["views"]["downsample_2x"] > 0
    out: dict[str, Any] = {"image": list(shape), "network": dict(cfg["network"]), "train": train, "sampler": sampler}
    priors: dict[str, Prior] = {}
    total = 0.0
    for chain, sources in (("random", ("random",)), ("galaxy", ("galaxy", "random"))):
        obs = _observations(sources, rows[chain], shape, downsample, 1e-2, seed, chain, device)
        # the M-step trains on the previous E-step's draws of the chain's source: stand-ins of the data's scale
        gen = generator(seed, "benchmark", "lap", chain, "samples", device=device)
        samples = (0.1 * torch.randn(rows[chain], *shape, generator=gen, device=device)).clamp(-2, 2)
        cases.synchronize(device)
        start = time.perf_counter()
        step = m_step(samples, network=cfg["network"], train=train, schedule=schedule, bound=cfg["views"]["clip"],
                      init_seed=derive_seed(seed, "benchmark", "lap", chain, "init"),
                      generator=generator(seed, "benchmark", "lap", chain, "train", device=device))
        cases.synchronize(device)
        train_s = time.perf_counter() - start
        priors[chain] = step.prior
        start = time.perf_counter()
        draws = e_step("ddprism", [priors[s] for s in sources], obs, sampler,
                       generator=generator(seed, "benchmark", "lap", chain, "estep", device=device))
        cases.synchronize(device)
        estep_s = time.perf_counter() - start
        if not torch.isfinite(draws).all():
            raise RuntimeError(f"the {chain} chain's E-step returned non-finite draws")
        total += train_s + estep_s
        out[chain] = {"sources": len(sources), "train_steps": train["steps"], "train_seconds": round(train_s, 3),
                      "train_steps_per_second": round(train["steps"] / train_s, 3), "estep_rows": rows[chain],
                      "estep_seconds": round(estep_s, 3), "estep_draws_per_second": round(rows[chain] / estep_s, 3),
                      "estep_seconds_per_draw": round(estep_s / rows[chain], 6)}
    out["lap_seconds"] = round(total, 3)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    p.add_argument("--small", action="store_true", help="toy sizes: a smoke run, e.g. on a CPU")
    p.add_argument("--bf16", action="store_true", help="also run the paper case with the networks under bf16 autocast")
    p.add_argument("--repeats", type=int, default=2, help="timed runs of the paper case's sampler and training")
    p.add_argument("--threads", type=int, default=0, help="CPU: torch intra-op threads (0: torch's default)")
    p.add_argument("--matmul-size", type=int, help="side of the timed fp32 matmul (CUDA 8192, CPU 2048, small 256)")
    args = p.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu.py: no CUDA device here; `--device cpu --small` runs a smoke version on the CPU")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # CPU runs: denormals at small sigma cost ~20x (see posterior.py)
    seed = cases.config_seed()
    start = time.perf_counter()
    case = small_paper(cases.paper()) if args.small else cases.paper()
    size = args.matmul_size or (256 if args.small else 8192 if device.type == "cuda" else 2048)
    repeats = 1 if args.small else args.repeats
    runs = [cases.measure(case, device, bf16=bf16, repeats=repeats, matmul_size=size, seed=seed)
            for bf16 in ([False, True] if args.bf16 else [False])]
    paper_s = time.perf_counter() - start
    lap = pipeline_lap(device, args.small, seed)
    print(json.dumps({
        "benchmark": "GPU: DDPRISM paper-size joint posterior and M-step, one lap of the default pipeline",
        "device": str(device), "device_name": runs[0]["device_name"], "small": args.small,
        "paper_case": runs[0], "paper_case_bf16": runs[1] if args.bf16 else None,
        "paper_reference": {"seconds_per_draw": PAPER_SECONDS_PER_DRAW, "device": "H100",
                            "source": "DDPRISM (arXiv 2510.05205) table 5, galaxy images, inference time per sample",
                            "speedup": round(PAPER_SECONDS_PER_DRAW / runs[0]["sampling"]["seconds_per_draw"], 4)},
        "paper_case_seconds": round(paper_s, 1),
        "pipeline_lap": lap,
        "command": " ".join(["python", "benchmarks/gpu.py", *sys.argv[1:]]),
        "total_seconds": round(time.perf_counter() - start, 1),
    }, indent=2))


if __name__ == "__main__":
    main()
