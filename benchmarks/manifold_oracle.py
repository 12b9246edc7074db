"""How good the joint posterior sampler is on the 1-D manifold benchmark when the priors are right.

DDPRISM's contrastive-2 target reaches 38.3 dB in the paper (table 1) with 16,384 predictor-corrector
steps. This script takes EM out of the question: it trains each source's MLP denoiser on true draws of
that source ("oracle" priors), then samples the joint posterior of sources 1 and 2 given view 2 of the
contrastive dataset with several PC step counts, and reports PSNR (spread 4) and Sinkhorn divergence
per source. With ``--em-laps`` it then runs that many EM laps from the oracle priors (retrain source
2 on its own draws, sample again, at ``--em-pc-steps``) to show whether EM keeps the truth as its
fixed point at that sampler budget; ``--em-on-truth`` retrains on the true sources instead (the
control: what retraining alone costs).

    .venv/bin/python benchmarks/manifold_oracle.py                       # minutes on one CPU core
    .venv/bin/python benchmarks/manifold_oracle.py --steps 128 --em-laps 3 --em-pc-steps 128
    .venv/bin/python benchmarks/manifold_oracle.py --steps 256 --em-laps 3 --em-pc-steps 256 --em-on-truth
    # the plain sampler of the DDPRISM code (galsep's manifold default before 2026-12-02):
    .venv/bin/python benchmarks/manifold_oracle.py --steps 64 256 \
        --set '{"cg_iters": 1, "precondition": false, "warm_start": false, "tau": 0.1}'

Prints JSON. Settings (data, network, schedule, sampler tau) come from workflow/configs/manifold.yaml;
every draw is seeded from config.yaml's seed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import cases
import torch
from torch import Tensor

from galsep.evaluation.metrics import psnr_vectors, sinkhorn
from galsep.inference.em import MStep, e_step, m_step
from galsep.inference.priors import schedule_of
from galsep.manifold.data import make_dataset, observations
from galsep.manifold.paper import PAPER
from galsep.manifold.settings import dataset
from galsep.seeding import derive_seed, generator

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=ROOT / "workflow" / "configs" / "manifold.yaml")
    parser.add_argument("--steps", type=int, nargs="+", default=[16, 64, 256, 1024], help="PC steps to compare")
    parser.add_argument("--train-steps", type=int, default=4000, help="oracle training steps per source")
    parser.add_argument("--em-laps", type=int, default=0, help="EM laps from the oracle priors")
    parser.add_argument("--em-pc-steps", type=int, default=64)
    parser.add_argument("--em-train-steps", type=int, default=1000)
    parser.add_argument("--em-on-truth", action="store_true",
                        help="control: retrain on the true sources instead of the draws")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--set", type=json.loads, default={},
                        help='sampler overrides (JSON), e.g. {"cg_iters": 2, "warm_start": true}')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    seed = cases.config_seed()
    # the schema fills the keys a sampler section leaves out (cg_tol, ...), as the Snakefile's validate does
    m = cases.validated_config(Path(args.config), ROOT / "workflow" / "schemas" / "manifold.schema.yaml",
                               section="manifold")
    em = m["contrastive"]
    sampler = {**em["sampler"], **args.set}
    data = make_dataset(dataset("contrastive"), m["data"], seed)
    obs = observations(data, [1], [0, 1])  # view 2: sources 1 and 2
    n = min(m["metrics"]["sinkhorn_samples"], len(obs))

    schedule = schedule_of(em["diffusion"])

    def train(model: torch.nn.Module | None, x: Tensor, steps: int, key: tuple[object, ...]) -> MStep:
        # no EMA in the benchmark (decay 0): the trained weights are the prior
        t = {**em["train"], "steps": steps, "ema_decay": 0.0, "weight_decay": em["train"].get("weight_decay", 0.0)}
        return m_step(x, network=em["network"], train=t, schedule=schedule, bound=em["clip"], model=model,
                      init_seed=derive_seed(seed, "benchmark", "oracle", "init", *key),
                      generator=generator(seed, "benchmark", "oracle", *key))

    def draw(steps_: int, key: tuple[object, ...]) -> tuple[Tensor, dict[str, Any]]:
        start = time.perf_counter()
        s = e_step("ddprism", priors, obs, {**sampler, "steps": steps_, "batch_size": None},
                   generator=generator(seed, "benchmark", *key))
        return s, {"steps": steps_, "seconds": round(time.perf_counter() - start, 1),
                   "psnr": [round(psnr_vectors(s[:, k], obs.truth[:, k]), 2) for k in range(2)],
                   "sinkhorn": [round(sinkhorn(s[:n, k], obs.truth[:n, k], eps=1e-3), 3) for k in range(2)]}

    steps_by_source = [train(None, data["x"][:, :, k].flatten(0, 1), args.train_steps, ("train", k)) for k in range(2)]
    models = [st.model for st in steps_by_source]
    priors = [st.prior for st in steps_by_source]
    losses = [st.losses for st in steps_by_source]
    rows = [draw(steps, ("steps", steps))[1] for steps in args.steps]
    laps = []
    if args.em_laps:
        samples, row = draw(args.em_pc_steps, ("em", 0))
        laps.append({"lap": 0, **row})
        for lap in range(1, args.em_laps + 1):
            x = obs.truth[:, 1] if args.em_on_truth else samples[:, 1]
            result = train(models[1], x, args.em_train_steps, ("em", lap))
            priors[1] = result.prior
            samples, row = draw(args.em_pc_steps, ("em", lap))
            laps.append({"lap": lap, "loss": round(statistics.fmean(result.losses[-100:]), 4), **row})
    print(json.dumps({
        "setting": "contrastive-2 (view 2, sources 1 and 2; source 2 is the target)",
        "observations": len(obs), "oracle_train_steps": args.train_steps,
        "oracle_final_loss": [round(statistics.fmean(x[-100:]), 4) for x in losses],
        "em_on_truth": args.em_on_truth, "paper_target_psnr": PAPER["contrastive-2"]["ddprism"]["posterior_psnr"],
        "paper_pc_steps": 16384,
        "sampler": {k: v for k, v in sampler.items() if k != "steps"},
        "by_pc_steps": rows, "em_from_oracle": laps,
    }, indent=2))


if __name__ == "__main__":
    main()
