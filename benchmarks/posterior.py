"""Joint posterior (MMPS) throughput and peak memory: two sources, 64x64 images, the default U-Net.

Prints one JSON object. Each CG iteration count runs in its own subprocess so that its peak memory
(CPU max RSS, or CUDA max_memory_allocated) is its own; within it the sampler runs ``--repeats`` times
and the median wall time is reported.

The sampler's cost is its denoiser calls (2 steps + 1 per sample: predictor, corrector, final), so by
default the runs use ``--measure-steps`` (8) and the samples/second of the ``--steps`` (64) sampler is
extrapolated from the measured seconds per posterior call; ``--full`` runs all ``--steps`` instead.
On this 2-core CPU a full 64-step run of the default U-Net takes minutes per repeat.

Denormal floats are flushed to zero unless ``--keep-denormals``: with the untrained default U-Net, the
posterior calls at small sigma produce denormals whose CPU arithmetic is ~20x slower (measured here:
6.9 s vs 0.3 s per call at batch 1), so pipelines running on CPU should do the same. One intra-op
thread is the default: on this shared 2-core machine torch's default of 2 threads made a posterior
call ~37x slower (5.5 s vs 0.15 s, batch 2) through thread oversubscription; ``--threads 0`` restores
torch's choice on a dedicated machine.

    python benchmarks/posterior.py                 # ~2-4 minutes on the shared CPU
    python benchmarks/posterior.py --cg 1 --batch 1 --repeats 1   # smaller
    python benchmarks/posterior.py --full --batch 16               # larger (GPU)
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:  # imported where used, so that the timings include no import
    from galsep.data.operators import PixelOperator


def _problem(batch: int, size: int, device: torch.device,
             generator: torch.Generator) -> tuple[list[PixelOperator], Tensor, Tensor]:
    """A galaxies-view-like observation: y = x_gal + x_rand + n with per-sample mask and downsampling."""
    from galsep.data.operators import PixelOperator

    mask = (torch.rand(batch, size, size, generator=generator) > 0.05).float()
    factor = torch.ones(batch, dtype=torch.long)
    factor[1::2] = 2  # every other sample at half resolution: exercises block_project
    op = PixelOperator(mask, factor, torch.ones(batch)).to(device)
    y = (0.1 * torch.randn(batch, size, size, generator=generator)).to(device)
    return [op, op], y, torch.full_like(y, 1e-2)


def run_one(args: argparse.Namespace) -> dict:
    """Time one CG setting in this process."""
    from galsep.inference.denoiser import EDMDenoiser
    from galsep.inference.mmps import JointPosterior
    from galsep.inference.samplers import pc_sample
    from galsep.inference.schedule import VESchedule

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    from galsep.inference.nets import UNet

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    dens = [EDMDenoiser(UNet()).to(device).eval() for _ in range(2)]
    ops, y, noise_var = _problem(args.batch, args.size, device, g)
    schedule = VESchedule(args.sigma_min, args.sigma_max)
    steps = args.steps if args.full else args.measure_steps
    post = JointPosterior(dens, ops, y, noise_var, cg_iters=args.cg_one)
    calls = [0]

    def counted(x: Tensor, s: Tensor) -> Tensor:
        calls[0] += 1
        return post(x, s)

    times = []
    gen = torch.Generator(device).manual_seed(1)
    # warm-up call: the first autograd.grad imports torch.fx/sympy (seconds), CUDA initialises kernels
    with torch.no_grad():
        post(schedule.sigma_max * torch.randn(args.batch, 2, args.size, args.size, device=device),
             torch.full((args.batch,), schedule.sigma_max, device=device))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(args.repeats):
        x1 = schedule.sigma_max * torch.randn(args.batch, 2, args.size, args.size, generator=gen, device=device)
        calls[0] = 0
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        with torch.no_grad():
            out = pc_sample(counted, x1, schedule, steps=steps, corrections=1, tau=args.tau, generator=gen)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t)
        assert torch.isfinite(out).all()
    wall = statistics.median(times)
    per_call = wall / calls[0]
    calls_full = 2 * args.steps + 1  # predictor + one corrector per step, final denoise
    res = {
        "cg_iters": args.cg_one,
        "device": str(device),
        "measured_steps": steps,
        "median_seconds": round(wall, 3),
        "seconds_per_posterior_call": round(per_call, 4),
        f"samples_per_second_{args.steps}_steps": round(args.batch / (per_call * calls_full), 5),
        "extrapolated": not args.full,
        "repeats": args.repeats,
        "network": "galsep.inference.nets.UNet() defaults in EDMDenoiser (untrained)",
        "parameters_per_prior": sum(p.numel() for p in dens[0].parameters()),
    }
    if device.type == "cuda":
        res["cuda_max_memory_allocated_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    res["cpu_max_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=2, help="observations sampled at once")
    p.add_argument("--size", type=int, default=64, help="image side")
    p.add_argument("--steps", type=int, default=64, help="PC steps of the sampler being reported")
    p.add_argument("--measure-steps", type=int, default=8, help="PC steps actually run (unless --full)")
    p.add_argument("--full", action="store_true", help="run all --steps instead of extrapolating")
    p.add_argument("--cg", type=int, nargs="+", default=[1, 2, 4, 8], help="CG iteration counts")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--tau", type=float, default=0.1)
    p.add_argument("--sigma-min", type=float, default=1e-3)
    p.add_argument("--sigma-max", type=float, default=10.0)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0: torch default)")
    p.add_argument("--keep-denormals", action="store_true",
                   help="do not flush denormal floats (on CPU they slow small-sigma calls ~20x)")
    p.add_argument("--cg-one", type=int, default=None, help=argparse.SUPPRESS)  # child mode
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.keep_denormals:
        torch.set_flush_denormal(True)
    if args.cg_one is not None:
        print(json.dumps(run_one(args)))
        return
    t0 = time.perf_counter()
    rows = []
    for c in args.cg:
        cmd = [sys.executable, __file__, "--cg-one", str(c)] + [a for a in sys.argv[1:]]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    head = next((r for r in rows if r["cg_iters"] == 1), rows[0])
    print(json.dumps({
        "benchmark": "joint posterior (MMPS), 2 sources",
        "image": [args.size, args.size],
        "batch": args.batch,
        "sampler": {"kind": "pc", "steps": args.steps, "corrections": 1, "tau": args.tau},
        "posterior_defaults": "JointPosterior defaults (denom_floor 1e-3, regularisation 1e-2, reg_threshold 10)",
        "samples_per_second": head[f"samples_per_second_{args.steps}_steps"],
        "peak_memory_mb": head.get("cuda_max_memory_allocated_mb", head["cpu_max_rss_mb"]),
        "by_cg_iters": rows,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "flush_denormal": not args.keep_denormals,
        "machine": platform.processor() or platform.machine(),
        "total_seconds": round(time.perf_counter() - t0, 1),
    }, indent=2))


if __name__ == "__main__":
    main()
