"""Joint posterior (MMPS) and M-step throughput by named case: draws/s, network passes, GFLOP/s, peak memory.

Prints one JSON object. Each case, precision and CG setting runs in its own subprocess, so that its
peak memory (CPU max RSS, or CUDA max_memory_allocated) is its own; within it the sampler and the
training run ``--repeats`` times and the medians are reported. What each field means: benchmarks/README.md
and the docstring of benchmarks/cases.py.

Cases (benchmarks/cases.py):
    unet28    28x28 U-Net of 3.34M parameters per source (Grassy MNIST size), 2 sources, batch 16,
              PC with 1 corrector, CG 1 with the regularised re-solve, 64 steps
    mlp5      R^5 MLP 3x256 of the manifold experiment (workflow/configs/manifold.yaml), batch 1024, 256 steps
    pipeline  the default pipeline (config.yaml): 32x32, its network, the posterior sampler block, em.train
    unet64    the earlier default of this script: 64x64 U-Net() defaults, batch 2, 64 steps
    paper     DDPRISM's galaxy size (128x128, 61M parameters per source): for a GPU (see gpu.py)

Sampler settings are flags (``--steps``, ``--corrections``, ``--tau``, ``--cg``, ``--sigma-min``,
``--sigma-max``; unset: the case's); any other keyword of sample_joint_posterior passes through
``--set key=value`` (YAML values), so new sampler settings can be timed without editing this script.
``--bf16`` adds a run of every case with the networks under bf16 autocast beside the float32 one.

Denormal floats are flushed to zero unless ``--keep-denormals``: with untrained networks, posterior
calls at small sigma produce denormals whose CPU arithmetic is ~20x slower, and the pipeline's CLI
stages flush them too. ``--threads`` sets torch's intra-op threads (default 1, the pipeline's
``threads: 1``; 0 keeps torch's choice).

    python benchmarks/posterior.py                                  # unet28, mlp5, pipeline (minutes on a CPU)
    python benchmarks/posterior.py --case pipeline --threads 2 --bf16
    python benchmarks/posterior.py --case unet28 --cg 1 2 4 --set reg_threshold=null
    python benchmarks/posterior.py --smoke                          # every size tiny: seconds
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from typing import Any

import yaml

DEFAULT_CASES = ["unet28", "mlp5", "pipeline"]
CASE_NAMES = ["unet28", "mlp5", "pipeline", "unet64", "paper"]  # cases.CASES, named here to keep the parent light


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--case", nargs="+", default=DEFAULT_CASES, choices=CASE_NAMES, help="cases to run")
    p.add_argument("--bf16", action="store_true", help="also run every case with the networks under bf16 autocast")
    p.add_argument("--smoke", action="store_true", help="smallest sizes (2 observations, 2 steps): a check")
    p.add_argument("--repeats", type=int, default=3, help="timed runs of the sampler and of the training")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0: torch's default)")
    p.add_argument("--keep-denormals", action="store_true",
                   help="do not flush denormal floats (on CPU they slow small-sigma calls ~20x)")
    p.add_argument("--steps", type=int, help="PC steps")
    p.add_argument("--corrections", type=int, help="Langevin corrections per PC step")
    p.add_argument("--tau", type=float, help="Langevin step size")
    p.add_argument("--cg", type=int, nargs="+", help="CG iterations per posterior call; several: one run each")
    p.add_argument("--sigma-min", type=float)
    p.add_argument("--sigma-max", type=float)
    p.add_argument("--batch", type=int, help="observations drawn together")
    p.add_argument("--train-batch", type=int, help="training batch size")
    p.add_argument("--train-steps", type=int, help="training steps per timed run")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="extra sample_joint_posterior keywords (YAML values), e.g. regularisation=null")
    p.add_argument("--matmul-size", type=int, help="side of the timed matmul of the fp32 peak (CUDA 8192, CPU 2048)")
    p.add_argument("--child", nargs=3, metavar=("CASE", "PRECISION", "CG"), help=argparse.SUPPRESS)
    return p


def sampler_overrides(args: argparse.Namespace, cg: int | None) -> dict[str, Any]:
    """sample_joint_posterior keywords set on the command line."""
    out: dict[str, Any] = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set {item!r}: expected KEY=VALUE")
        out[key] = yaml.safe_load(value)
    flags = {"steps": args.steps, "corrections": args.corrections, "tau": args.tau, "cg_iters": cg}
    out.update({k: v for k, v in flags.items() if v is not None})
    return out


def child(args: argparse.Namespace) -> dict[str, Any]:
    """One case at one precision and CG setting, in this process."""
    import cases
    import torch

    from galsep.seeding import pick_device

    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.keep_denormals:
        torch.set_flush_denormal(True)
    name, precision, cg = args.child
    case = cases.CASES[name]()
    if args.smoke:
        case = cases.smoke(case)
    case = cases.with_overrides(case, sampler=sampler_overrides(args, None if cg == "-" else int(cg)),
                                schedule=(args.sigma_min, args.sigma_max), batch=args.batch,
                                train_batch=args.train_batch, train_steps=args.train_steps)
    device = pick_device(args.device)
    size = args.matmul_size or (256 if args.smoke else 8192 if device.type == "cuda" else 2048)
    return cases.measure(case, device, bf16=precision == "bf16", repeats=1 if args.smoke else args.repeats,
                         matmul_size=size, seed=cases.config_seed())


def main() -> None:
    args = parser().parse_args()
    if args.child is not None:
        print(json.dumps(child(args)))
        return
    start = time.perf_counter()
    rows = []
    for name in args.case:
        for precision in ["fp32", "bf16"] if args.bf16 else ["fp32"]:
            for cg in args.cg or ["-"]:
                cmd = [sys.executable, __file__, *sys.argv[1:], "--child", name, precision, str(cg)]
                done = subprocess.run(cmd, capture_output=True, text=True)
                if done.returncode:
                    sys.stderr.write(done.stderr)
                    raise SystemExit(f"case {name} ({precision}, cg {cg}) failed with exit code {done.returncode}")
                rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    speedups = {}
    for row in rows:
        if row["precision"] != "bf16":
            continue
        base = next(r for r in rows if r["precision"] == "fp32" and r["case"] == row["case"]
                    and r["sampler"] == row["sampler"])
        speedups[row["case"]] = {
            "sampling": round(row["sampling"]["draws_per_second"] / base["sampling"]["draws_per_second"], 3),
            "training": round(row["training"]["steps_per_second"] / base["training"]["steps_per_second"], 3)}
    print(json.dumps({
        "benchmark": "joint posterior (MMPS) draws and M-step training by case",
        "cases": rows,
        "bf16_speedup": speedups,
        "smoke": args.smoke,
        "flush_denormal": not args.keep_denormals,
        "machine": rows[0]["device_name"],
        "command": " ".join(["python", "benchmarks/posterior.py", *sys.argv[1:]]),
        "total_seconds": round(time.perf_counter() - start, 1),
    }, indent=2))


if __name__ == "__main__":
    main()
