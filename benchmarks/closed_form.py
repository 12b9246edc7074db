"""Joint posterior sampler against the closed-form posterior of two Gaussian sources, per sampler setting.

The problem is the pipeline's in miniature (normalised units): a centred 'galaxy' prior seen through a
30 % pixel mask, a 'random light' prior seen at 2x2 lower resolution, per-pixel noise variance
log-uniform in [1e-3, 1e-1], both priors galsep's analytic low-rank Gaussians, for which the Tweedie
moments are exact. N independent draws of one observation give the mean's error e and the spread;
reported per setting (median over problem seeds):

- ``z``: (N e^T C^-1 e - d) / sqrt(2 d), d the joint dimension: ~N(0, 1) for an unbiased sampler;
- ``trace``: tr(Cov_hat) / tr(C), 1 for the right spread (sampling error ~1 %);
- ``vjps_per_call``: VJPs per source and posterior call (the cost beyond the one forward pass).

Settings start from config.yaml's posterior sampler; each ``--set`` line overrides keys (JSON), e.g.

    python benchmarks/closed_form.py                       # the default grid, ~1-2 minutes
    python benchmarks/closed_form.py --side 8 --set '{"cg_iters": 4, "precondition": false}'
    python benchmarks/closed_form.py --set '{}' --precision float32 bfloat16   # config.yaml's, both precisions

``--precision bfloat16`` runs the priors' denoisers under galsep's bfloat16 autocast (what
``precision: bfloat16`` does to the networks; here it rounds the Gaussians' matrix products), the CG
and the sampler in float32: the error bf16 adds to the posterior.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from galsep.data.operators import PixelOperator
from galsep.inference.denoiser import Autocast
from galsep.inference.em import sampler_kwargs
from galsep.inference.gaussian import LowRankGaussian, posterior_moments
from galsep.inference.mmps import sample_joint_posterior
from galsep.inference.schedule import VESchedule

__all__ = ["GRID", "pipeline_samplers", "galaxy_like_problem", "evaluate"]

F64 = torch.float64
ROOT = Path(__file__).resolve().parents[1]
GRID: list[dict[str, Any]] = [
    {"cg_iters": 1, "precondition": False, "warm_start": False, "tau": 0.3},
    {"cg_iters": 1, "precondition": False, "warm_start": False},
    {"cg_iters": 2, "precondition": False, "warm_start": False},
    {"cg_iters": 4, "precondition": False, "warm_start": False},
    {"cg_iters": 1, "precondition": True, "warm_start": False},
    {"cg_iters": 2, "precondition": True, "warm_start": False},
    {"cg_iters": 4, "precondition": True, "warm_start": False},
    {"cg_iters": 1, "precondition": False, "warm_start": True},
    {"cg_iters": 1, "precondition": True, "warm_start": True},
    {"cg_iters": 2, "precondition": True, "warm_start": True},
    {"cg_iters": 2, "precondition": True, "warm_start": True, "tau": 0.3},
    {"cg_iters": 3, "precondition": True, "warm_start": True},
]


def pipeline_samplers(root: Path = ROOT) -> dict[str, dict[str, Any]]:
    """config.yaml's E-step and posterior sampler sections and its diffusion block, schema defaults filled in."""
    import yaml
    from snakemake.utils import validate

    config = yaml.safe_load((root / "config.yaml").read_text())
    validate(config, str(root / "workflow" / "schemas" / "config.schema.yaml"))
    return {"em": config["em"]["sampler"], "posterior": config["posterior"]["sampler"],
            "diffusion": config["diffusion"]}


def galaxy_like_problem(side: int, seed: int) -> tuple[list[LowRankGaussian], list[PixelOperator], Tensor, Tensor]:
    """Two priors, their operators, one observation y (1, side, side) and its noise variance, float64."""
    g = torch.Generator().manual_seed(seed)
    D = side * side
    yy, xx = torch.meshgrid(torch.arange(side, dtype=F64), torch.arange(side, dtype=F64), indexing="ij")
    c = (side - 1) / 2
    blob = torch.exp(-((xx - c) ** 2 + (yy - c) ** 2) / (2 * 1.5**2)).reshape(-1)
    priors = [LowRankGaussian(0.5 * blob, 0.15 * torch.randn(D, 4, generator=g, dtype=F64) * blob[:, None].sqrt(),
                              0.02),
              LowRankGaussian(torch.full((D,), 0.02, dtype=F64), 0.1 * torch.randn(D, 3, generator=g, dtype=F64),
                              0.03)]
    mask = (torch.rand(1, side, side, generator=g) > 0.3).to(F64)
    one = torch.ones(1, dtype=torch.long)
    ops = [PixelOperator(mask, one, torch.ones(1, dtype=F64)),
           PixelOperator(torch.ones(1, side, side, dtype=F64), 2 * one, torch.ones(1, dtype=F64))]
    noise_var = torch.exp(math.log(1e-3) + math.log(1e2) * torch.rand(1, side, side, generator=g, dtype=F64))
    x = torch.stack([p.sample(1, shape=(side, side), generator=g) for p in priors], 1)
    y = ops[0](x[:, 0]) + ops[1](x[:, 1]) + noise_var.sqrt() * torch.randn(1, side, side, generator=g, dtype=F64)
    return priors, ops, y, noise_var


def evaluate(sampler: dict[str, Any], diffusion: dict[str, Any], *, side: int = 8, seed: int = 0,
             draws: int = 2048, precision: str = "float32") -> dict[str, float]:
    """Mean z and trace ratio (see the module docstring) of ``draws`` float32 draws at these settings
    (``precision``: the denoisers', float32 or bfloat16)."""
    priors, ops, y, noise_var = galaxy_like_problem(side, seed)
    mean, cov = (m[0] for m in posterior_moments(priors, ops, y, noise_var, (side, side)))
    N = draws

    def rep(t: Tensor) -> Tensor:
        return t.float().expand(N, *t.shape[1:])

    ops_n = [PixelOperator(rep(op.mask), op.factor.expand(N), rep(op.coef)) for op in ops]
    kw = sampler_kwargs({**sampler, "batch_size": None}, VESchedule(diffusion["sigma_min"], diffusion["sigma_max"]))
    dens = [p.to(dtype=torch.float32) for p in priors]
    if precision == "bfloat16":
        dens = [Autocast(d) for d in dens]
    x = sample_joint_posterior(dens, ops_n, rep(y), rep(noise_var),
                               shape=(side, side), generator=torch.Generator().manual_seed(10 + seed), **kw)
    x = x.reshape(N, -1).double()
    e = x.mean(0) - mean
    d = e.numel()
    z = ((N * e @ torch.linalg.solve(cov, e)).item() - d) / math.sqrt(2 * d)
    return {"z": z, "trace": (torch.cov(x.T).trace() / cov.trace()).item()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--side", type=int, nargs="+", default=[8, 16], help="image side(s)")
    p.add_argument("--seeds", type=int, default=3, help="problems per side (median reported)")
    p.add_argument("--draws", type=int, default=2048)
    p.add_argument("--set", action="append", type=json.loads, help="override JSON (repeatable); default the grid")
    p.add_argument("--precision", nargs="+", choices=["float32", "bfloat16"], default=["float32"],
                   help="the denoisers' precision(s)")
    args = p.parse_args()
    torch.set_num_threads(1)
    base = pipeline_samplers()
    rows = []
    for over in args.set or GRID:
        sampler = {**base["posterior"], **over}
        for side, precision in itertools.product(args.side, args.precision):
            runs = [evaluate(sampler, base["diffusion"], side=side, seed=s, draws=args.draws, precision=precision)
                    for s in range(args.seeds)]
            rows.append({"side": side, "precision": precision, **over,
                         "vjps_per_call": sampler["cg_iters"] + int(sampler["warm_start"]),
                         "z": round(statistics.median(r["z"] for r in runs), 2),
                         "z_max": round(max(r["z"] for r in runs), 2),
                         "trace": round(statistics.median(r["trace"] for r in runs), 3),
                         "trace_range": [round(min(r["trace"] for r in runs), 3),
                                         round(max(r["trace"] for r in runs), 3)]})
            print(json.dumps(rows[-1]), flush=True)
    print(json.dumps({"base": base["posterior"], "diffusion": base["diffusion"], "rows": rows}))


if __name__ == "__main__":
    main()
