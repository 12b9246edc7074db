"""Benchmark cases of the joint posterior sampler and the M-step, and how one case is measured.

Shared by ``posterior.py`` (one subprocess per case and precision) and ``gpu.py`` (the paper-size case
and a lap of the default pipeline). Everything runs through galsep's public API -- priors from
:func:`galsep.inference.priors.build_denoiser` wrapped in :class:`~galsep.inference.priors.Prior`,
draws from :func:`galsep.inference.mmps.sample_joint_posterior`, one posterior call through
:class:`~galsep.inference.mmps.JointPosterior`, training by :func:`galsep.inference.training.train_denoiser`
-- so the figures follow whatever the sampler does inside.

What :func:`measure` reports for a case with B observations, K sources of shape S:

- sampling: ``repeats`` runs of ``sample_joint_posterior`` over the whole batch (one joint draw per
  observation) after a 2-step warm-up; median wall time T. draws/s = B / T, seconds per draw = T / B.
- network passes per draw: forward hooks on each source's network count its calls, and a gradient hook
  on each recorded output counts the vector-Jacobian products (VJPs) that flow back through it. Every
  pass is batched over the B observations, so each observation's draw takes that many passes; summed
  over the K sources.
- FLOPs (``torch.utils.flop_counter.FlopCounterMode``): F_fwd of one network forward on the batch, and
  F_call of one ``JointPosterior`` call at sigma = sqrt(sigma_min sigma_max) in which n_f forwards and
  n_v VJPs were counted, so F_vjp = (F_call - n_f F_fwd) / n_v (it carries the CG arithmetic, <1%).
  A draw's FLOPs are N_fwd F_fwd + N_vjp F_vjp over its counted passes; achieved GFLOP/s = that / T.
- fp32 peak: the best of 5 timed n x n float32 matmuls (2 n^3 FLOPs each) in the same process and
  thread setting; bf16 runs also time a bfloat16 matmul. On CUDA the float32 matmul follows
  ``torch.backends.cuda.matmul.allow_tf32`` (off by default: true fp32) while cuDNN convolutions use
  TF32 unless ``torch.backends.cudnn.allow_tf32`` is off (on by default); both are reported.
- training: ``train_denoiser`` on the case's network (a fresh one, train mode) for ``train_steps`` steps
  after a 1-step warm-up, median over ``repeats``; each call builds its optimiser and EMA copy as an
  EM lap does. FLOPs of one step = one loss and its backward (the optimiser's elementwise work is not
  counted).
- peak memory: CUDA ``max_memory_allocated`` over the timed runs, else the process's max RSS so far
  (CPU; so run each case in its own process, as posterior.py does).
- bf16: each network runs under ``torch.autocast(device_type, dtype=torch.bfloat16)`` and its output is
  cast back to float32 (galsep's ``precision: bfloat16``, :class:`galsep.inference.denoiser.Autocast`),
  so the EDM preconditioning, the CG and the sampler's arithmetic stay float32.
"""

from __future__ import annotations

import math
import platform
import resource
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from galsep.data.operators import DenseOperator, PixelOperator
from galsep.inference.denoiser import EDMDenoiser, set_precision
from galsep.inference.em import sampler_kwargs
from galsep.inference.mmps import JointPosterior, Operator, PosteriorSettings, sample_joint_posterior
from galsep.inference.priors import Prior, build_denoiser
from galsep.inference.schedule import VESchedule
from galsep.inference.training import train_denoiser
from galsep.manifold.data import random_projections
from galsep.seeding import derive_seed, generator

__all__ = ["CASES", "Case", "PassCounter", "Problem", "config_seed", "denoiser", "device_name",
           "matmul_gflops", "measure", "pixel_operator", "problem", "smoke", "synchronize", "validated_config",
           "with_overrides"]

ROOT = Path(__file__).resolve().parents[1]
TRAIN_KEYS = ("batch_size", "lr", "lr_schedule", "grad_clip", "ema_decay", "weight_decay")


@dataclass(frozen=True)
class Case:
    """One benchmark problem: K sources of shape S under one network architecture, B observations.

    Attributes:
        name, title: key and one-line description.
        shape: S, one source sample (H, W) for images, (D,) for vectors.
        network: build_denoiser settings (U-Net: channels...; MLP: hidden...).
        batch: B, observations drawn together (one sample_joint_posterior call).
        schedule: (sigma_min, sigma_max) of the VE schedule.
        sampler: keywords of sample_joint_posterior besides the observations, shape, schedule and
            generator (steps, corrections, tau, cg_iters, ... and any extra setting).
        train: keywords of train_denoiser (batch_size, lr, lr_schedule, grad_clip, ema_decay, weight_decay).
        train_steps: optimiser steps per timed training run.
        clip: the priors' clip (Prior bound), None for none.
        noise_var: observation noise variance per element.
        sources: K.
        observed: vectors: rows of the random projection of each observation (None: images).
        downsample: images: every other observation at 2x lower resolution.
    """

    name: str
    title: str
    shape: tuple[int, ...]
    network: Mapping[str, Any]
    batch: int
    schedule: tuple[float, float]
    sampler: Mapping[str, Any]
    train: Mapping[str, Any]
    train_steps: int
    clip: float | None
    noise_var: float
    sources: int = 2
    observed: int | None = None
    downsample: bool = False


def validated_config(path: Path = ROOT / "config.yaml", schema: Path = ROOT / "workflow/schemas/config.schema.yaml",
                     section: str | None = None) -> dict[str, Any]:
    """A config file (or one section of it) with the schema's defaults filled in, as the Snakefile's validate."""
    from snakemake.utils import validate

    config = yaml.safe_load(path.read_text())
    part = config if section is None else config[section]
    validate(part, str(schema))
    return part


def config_seed() -> int:
    """config.yaml's seed: every benchmark draw derives from it (galsep.seeding)."""
    return int(yaml.safe_load((ROOT / "config.yaml").read_text())["seed"])


def _sampler(section: Mapping[str, Any], schedule: tuple[float, float]) -> dict[str, Any]:
    """sample_joint_posterior keywords of a validated config ``sampler`` section, all observations at once."""
    kw = sampler_kwargs(section, VESchedule(*schedule))
    del kw["schedule"]
    kw["batch_size"] = None  # the case's batch is one chunk
    return kw


def unet28() -> Case:
    """Grassy MNIST size (DDPRISM paper table 3) at issue 15's sampler: 64 PC steps, 1 corrector, CG 1."""
    # the paper's U-Net has 2 residual blocks per level plus middle blocks and a two-layer modulation;
    # galsep's U-Net has neither, and 3 blocks per level give the same size (3.34M parameters per source)
    network = {"channels": [32, 64, 128], "blocks": 3, "attention_levels": [2], "heads": 4, "emb_features": 64,
               "dropout": 0.1}
    sampler = {"steps": 64, "corrections": 1, "tau": 1e-2, "cg_iters": 1, "precondition": False, "warm_start": False,
               "cg_tol": 1e-6, "denom_floor": 1e-2, "regularisation": 1e-6, "reg_threshold": 5e-2, "batch_size": None}
    # training batch: the paper's 1920 takes ~30 s a step on a 2-core CPU; --train-batch 1920 for it
    train = {"batch_size": 128, "lr": 1e-3, "lr_schedule": "cosine", "grad_clip": 1.0, "ema_decay": 0.999,
             "weight_decay": 0.0}
    return Case("unet28", "28x28 U-Net (Grassy MNIST size), 2 sources", (28, 28), network, 16, (1e-4, 1e2),
                sampler, train, 10, None, 1e-4)


MLP5_SAMPLER = {"steps": 256, "tau": 0.1, "cg_iters": 1, "precondition": False, "warm_start": False}


def mlp5() -> Case:
    """The manifold experiment's MLP prior in R^5 (workflow/configs/manifold.yaml, contrastive block).

    The sampler is issue 15's, measured against the reference code (256 PC steps, tau 0.1, one plain CG
    step), not the manifold config's current one, so that the case keeps reproducing that comparison.
    """
    m = validated_config(ROOT / "workflow/configs/manifold.yaml", ROOT / "workflow/schemas/manifold.schema.yaml",
                         section="manifold")
    c = m["contrastive"]
    schedule = (float(c["diffusion"]["sigma_min"]), float(c["diffusion"]["sigma_max"]))
    return Case("mlp5", f"R^{m['data']['features']} MLP {c['network']['hidden']}, 2 sources, observed in"
                f" R^{m['data']['observed']}", (int(m["data"]["features"]),), dict(c["network"]), 1024, schedule,
                _sampler({**c["sampler"], **MLP5_SAMPLER}, schedule), {k: c["train"][k] for k in TRAIN_KEYS}, 50,
                float(c["clip"]), float(m["data"]["noise"]) ** 2, observed=int(m["data"]["observed"]))


def pipeline() -> Case:
    """The default pipeline's final posterior (config.yaml): cutouts.size, network, posterior.sampler, em.train."""
    cfg = validated_config()
    size = int(cfg["cutouts"]["size"])
    schedule = (float(cfg["diffusion"]["sigma_min"]), float(cfg["diffusion"]["sigma_max"]))
    post = cfg["posterior"]["sampler"]
    return Case("pipeline", f"default pipeline: {size}x{size} config.yaml network, posterior sampler, 2 sources",
                (size, size), dict(cfg["network"]), int(post["batch_size"]), schedule, _sampler(post, schedule),
                {k: cfg["em"]["train"][k] for k in TRAIN_KEYS}, 20, float(cfg["views"]["clip"]), 1e-2,
                downsample=cfg["views"]["downsample_2x"] > 0)


def unet64() -> Case:
    """The earlier posterior.py default: 64x64, galsep.inference.nets.UNet()'s defaults, half the batch downsampled."""
    network = {"channels": [16, 32], "blocks": 2, "attention_levels": [1], "heads": 1, "emb_features": 64,
               "dropout": 0.0}
    sampler = {"steps": 64, "corrections": 1, "tau": 0.1, "cg_iters": 1, "precondition": False, "warm_start": False,
               "cg_tol": 1e-6, "denom_floor": 1e-3, "regularisation": 1e-2, "reg_threshold": 10.0, "batch_size": None}
    train = {"batch_size": 32, "lr": 1e-3, "lr_schedule": "cosine", "grad_clip": 1.0, "ema_decay": 0.99,
             "weight_decay": 0.0}
    return Case("unet64", "64x64 U-Net() defaults, 2 sources", (64, 64), network, 2, (1e-3, 10.0), sampler, train,
                10, None, 1e-2, downsample=True)


def paper() -> Case:
    """DDPRISM's galaxy experiment (paper table 3; reference config hubble_galaxies/config_randoms.py):
    128x128, channels (64, 128, 256, 256, 512), attention at levels 2-4, 64 PC steps, batch 16."""
    # as for unet28: 3 galsep blocks per level match the reference's 2 plus its middle blocks in size
    # (61.4M parameters per source against the paper's ~63M); galsep's U-Net takes one head count
    # for every attention level (the reference uses 4, 8, 16), which changes no parameter
    network = {"channels": [64, 128, 256, 256, 512], "blocks": 3, "attention_levels": [2, 3, 4], "heads": 4,
               "emb_features": 64, "dropout": 0.1}
    sampler = {"steps": 64, "corrections": 1, "tau": 0.1, "cg_iters": 1, "precondition": False, "warm_start": False,
               "cg_tol": 1e-6, "denom_floor": 1e-3, "regularisation": 1e-2, "reg_threshold": 10.0, "batch_size": None}
    train = {"batch_size": 64, "lr": 1e-5, "lr_schedule": "cosine", "grad_clip": 1.0, "ema_decay": 0.995,
             "weight_decay": 0.0}
    return Case("paper", "DDPRISM galaxy size: 128x128 U-Net, 2 sources", (128, 128), network, 16, (1e-2, 1e1),
                sampler, train, 10, 2.0, 1e-2)


CASES: dict[str, Callable[[], Case]] = {
    "unet28": unet28, "mlp5": mlp5, "pipeline": pipeline, "unet64": unet64, "paper": paper,
}


def smoke(case: Case) -> Case:
    """The same networks at the smallest sizes (2 observations, 2 PC steps, 2 training steps of 4): seconds on a CPU."""
    return replace(case, batch=2, sampler={**case.sampler, "steps": 2}, train={**case.train, "batch_size": 4},
                   train_steps=2)


def with_overrides(case: Case, *, sampler: Mapping[str, Any] | None = None,
                   schedule: Sequence[float | None] = (None, None), batch: int | None = None,
                   train_batch: int | None = None, train_steps: int | None = None) -> Case:
    """The case with command-line settings laid over it (None: the case's own); ``sampler`` keys are added
    to or replace the case's sample_joint_posterior keywords."""
    lo, hi = schedule
    return replace(
        case, sampler={**case.sampler, **(sampler or {})},
        schedule=(case.schedule[0] if lo is None else float(lo), case.schedule[1] if hi is None else float(hi)),
        batch=case.batch if batch is None else batch,
        train=case.train if train_batch is None else {**case.train, "batch_size": train_batch},
        train_steps=case.train_steps if train_steps is None else train_steps)


def denoiser(case: Case, device: torch.device, bf16: bool) -> tuple[EDMDenoiser, nn.Module]:
    """A fresh EDM denoiser of the case's network on ``device`` (bf16: under galsep's
    :class:`~galsep.inference.denoiser.Autocast`, as ``precision: bfloat16`` runs it) and the bare network."""
    den = build_denoiser(case.network, case.shape)
    net = den.net
    set_precision(den, "bfloat16" if bf16 else "float32")
    return den.to(device), net


class PassCounter:
    """Counts calls of some networks: ``forward`` (forward hooks) and ``vjp`` (backward passes through an output).

    Args:
        nets: the modules to watch; hooks stay until :meth:`remove`.
    """

    def __init__(self, nets: Sequence[nn.Module]) -> None:
        self.forward = 0
        self.vjp = 0
        self._handles = [n.register_forward_hook(self._on_forward) for n in nets]

    def _on_forward(self, module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:  # noqa: ANN401
        self.forward += 1
        if isinstance(output, Tensor) and output.requires_grad:
            # fires once per autograd.grad / backward that reaches this output: one VJP through the network
            output.register_hook(self._on_backward)

    def _on_backward(self, grad: Tensor) -> None:
        self.vjp += 1

    def reset(self) -> None:
        self.forward = self.vjp = 0

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


@dataclass
class Problem:
    """A case's priors and observations on a device: y = sum_k A_k x_k + n."""

    priors: list[Prior]
    operators: list[Operator]
    y: Tensor
    noise_var: Tensor
    nets: list[nn.Module] = field(default_factory=list)


def pixel_operator(batch: int, shape: Sequence[int], downsample: bool, gen: torch.Generator) -> PixelOperator:
    """A cutout-like operator: ~5% of pixels masked, every other observation at half resolution when ``downsample``."""
    H, W = shape
    mask = (torch.rand(batch, H, W, generator=gen) > 0.05).float()
    factor = torch.ones(batch, dtype=torch.long)
    if downsample:
        factor[1::2] = 2
    return PixelOperator(mask, factor, torch.ones(batch))


def problem(case: Case, device: torch.device, bf16: bool, seed: int) -> Problem:
    """The case's K priors (untrained networks, frozen and in eval mode as EM priors are) and B observations."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(derive_seed(seed, "benchmark", case.name, "init"))
        built = [denoiser(case, device, bf16) for _ in range(case.sources)]
    schedule = VESchedule(*case.schedule)
    priors = [Prior(d.eval().requires_grad_(False), schedule, bound=case.clip) for d, _ in built]
    gen = generator(seed, "benchmark", case.name, "observations")
    op: Operator
    if case.observed is None:
        op = pixel_operator(case.batch, case.shape, case.downsample, gen).to(device)
        y = 0.1 * torch.randn(case.batch, *case.shape, generator=gen)
    else:
        op = DenseOperator(random_projections(case.batch, case.observed, case.shape[0], gen).float()).to(device)
        y = torch.randn(case.batch, case.observed, generator=gen)
    y = y.to(device)
    return Problem(priors, [op] * case.sources, y, torch.full_like(y, case.noise_var), [n for _, n in built])


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on CPU), so wall times cover it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _flops(fn: Callable[[], object]) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def matmul_gflops(device: torch.device, dtype: torch.dtype, n: int, repeats: int = 5) -> float:
    """Best rate of ``repeats`` timed n x n matmuls in ``dtype`` (2 n^3 FLOPs each), GFLOP/s."""
    gen = torch.Generator(device).manual_seed(0)
    a = torch.randn(n, n, generator=gen, device=device).to(dtype)
    b = torch.randn(n, n, generator=gen, device=device).to(dtype)
    a @ b  # warm-up: kernel selection, thread pool
    best = math.inf
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        a @ b
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def _posterior_flops(case: Case, prob: Problem, counter: PassCounter, device: torch.device,
                     seed: int) -> dict[str, float]:
    """FLOPs of one network forward and of one JointPosterior call, and the passes that call made."""
    gen = generator(seed, "benchmark", case.name, "flops", device=device)
    sigma = math.sqrt(case.schedule[0] * case.schedule[1])
    x = sigma * torch.randn(case.batch, case.sources, *case.shape, generator=gen, device=device)
    s = torch.full((case.batch,), sigma, device=device)
    with torch.no_grad():
        forward = statistics.fmean(_flops(lambda p=p, xk=xk: p(xk, s)) for p, xk in zip(prob.priors, x.unbind(1),
                                                                                           strict=True))
    # FlopCounterMode's module tracker cannot follow autograd.grad to a module input that is a leaf
    # ("A leaf node was passed to _will_engine_execute_node"); a view of the input is no leaf and
    # changes no FLOP
    views = [lambda x_, s_, p=p: p(x_.view_as(x_), s_) for p in prob.priors]
    keys = PosteriorSettings.__required_keys__ | PosteriorSettings.__optional_keys__
    post = JointPosterior(views, prob.operators, prob.y, prob.noise_var,
                          **{k: v for k, v in case.sampler.items() if k in keys})
    counter.reset()
    with torch.no_grad():
        call = _flops(lambda: post(x, s))
    n_f, n_v = counter.forward, counter.vjp
    return {"flops": call, "forward_passes": n_f, "vjp_passes": n_v, "flops_per_forward": forward,
            "flops_per_vjp": (call - n_f * forward) / n_v if n_v else 0.0}


def _time_sampling(case: Case, prob: Problem, counter: PassCounter, device: torch.device, repeats: int,
                   seed: int) -> dict[str, Any]:
    schedule = VESchedule(*case.schedule)
    gen = generator(seed, "benchmark", case.name, "sampler", device=device)
    kw = {"batch_size": None, **case.sampler}
    steps = int(kw.pop("steps"))

    def run(n_steps: int) -> Tensor:
        return sample_joint_posterior(prob.priors, prob.operators, prob.y, prob.noise_var, shape=case.shape,
                                      schedule=schedule, steps=n_steps, generator=gen, **kw)

    # warm-up: the first autograd.grad imports torch.fx/sympy (seconds), CUDA selects its kernels
    start = time.perf_counter()
    run(min(2, steps))
    synchronize(device)
    warmup = time.perf_counter() - start
    _reset_peak(device)
    times, forwards, vjps = [], [], []
    for _ in range(repeats):
        counter.reset()
        synchronize(device)
        start = time.perf_counter()
        out = run(steps)
        synchronize(device)
        times.append(time.perf_counter() - start)
        if not torch.isfinite(out).all():
            raise RuntimeError(f"case {case.name}: the sampler returned non-finite draws")
        forwards.append(counter.forward)
        vjps.append(counter.vjp)
    wall = statistics.median(times)
    return {"seconds_per_batch": round(wall, 4), "seconds_runs": [round(t, 4) for t in times],
            "warmup_seconds": round(warmup, 3), "draws_per_second": round(case.batch / wall, 4),
            "seconds_per_draw": round(wall / case.batch, 6),
            "passes": (statistics.fmean(forwards), statistics.fmean(vjps)), "peak_memory_mb": _peak_mb(device)}


def _time_training(case: Case, device: torch.device, bf16: bool, repeats: int, seed: int) -> dict[str, Any]:
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(derive_seed(seed, "benchmark", case.name, "train init"))
        den, _ = denoiser(case, device, bf16)
    schedule = VESchedule(*case.schedule)
    batch = int(case.train["batch_size"])
    gen = generator(seed, "benchmark", case.name, "train", device=device)
    data = 0.5 * torch.randn(max(4 * batch, 64), *case.shape, generator=gen, device=device)
    if case.clip is not None:
        data = data.clamp(-case.clip, case.clip)
    # FLOPs of one step: a loss and its backward at a middle noise level
    sigma = torch.full((batch,), math.sqrt(case.schedule[0] * case.schedule[1]), device=device)
    den.train()
    step_flops = _flops(lambda: den.loss(data[:batch], sigma, generator=gen).backward())
    den.zero_grad(set_to_none=True)
    kw = {k: case.train[k] for k in TRAIN_KEYS}

    def run(steps: int) -> None:
        train_denoiser(den, data, schedule=schedule, steps=steps, generator=gen, **kw)

    run(1)  # warm-up
    _reset_peak(device)
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        run(case.train_steps)
        synchronize(device)
        times.append(time.perf_counter() - start)
    wall = statistics.median(times) / case.train_steps
    return {"batch_size": batch, "steps_timed": case.train_steps, "seconds_runs": [round(t, 4) for t in times],
            "steps_per_second": round(1 / wall, 4), "seconds_per_step": round(wall, 6),
            "samples_per_second": round(batch / wall, 2), "flops_per_step": step_flops,
            "achieved_gflops": round(step_flops / wall / 1e9, 3), "peak_memory_mb": _peak_mb(device)}


def device_name(device: torch.device) -> str:
    """The accelerator's name, or the CPU's."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():  # Linux: platform.processor() is often empty there
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or platform.machine()


def measure(case: Case, device: torch.device, *, bf16: bool, repeats: int, matmul_size: int,
            seed: int) -> dict[str, Any]:
    """Every figure of the module docstring for one case and precision, in this process."""
    prob = problem(case, device, bf16, seed)
    counter = PassCounter(prob.nets)
    sampling = _time_sampling(case, prob, counter, device, repeats, seed)
    call = _posterior_flops(case, prob, counter, device, seed)
    counter.remove()
    n_f, n_v = sampling.pop("passes")
    draw_flops = n_f * call["flops_per_forward"] + n_v * call["flops_per_vjp"]
    training = _time_training(case, device, bf16, repeats, seed)
    peak32 = matmul_gflops(device, torch.float32, matmul_size)  # after the memory readings: its buffers stay out
    achieved = draw_flops / sampling["seconds_per_batch"] / 1e9
    res: dict[str, Any] = {
        "case": case.name, "title": case.title, "precision": "bf16" if bf16 else "fp32",
        "device": str(device), "device_name": device_name(device),
        "shape": list(case.shape), "sources": case.sources, "batch": case.batch,
        "parameters_per_source": sum(p.numel() for p in prob.priors[0].parameters()),
        "network": dict(case.network), "schedule": {"sigma_min": case.schedule[0], "sigma_max": case.schedule[1]},
        "sampler": dict(case.sampler), "clip": case.clip, "noise_var": case.noise_var,
        "sampling": {**sampling,
                     "network_passes_per_draw": {"forward": n_f, "vjp": n_v, "total": n_f + n_v},
                     "flops_per_draw": draw_flops, "achieved_gflops": round(achieved, 3),
                     "fraction_of_fp32_peak": round(achieved / peak32, 4)},
        "posterior_call": call,
        "training": {**training, "fraction_of_fp32_peak": round(training["achieved_gflops"] / peak32, 4)},
        "fp32_peak_gflops": round(peak32, 2), "matmul_size": matmul_size,
        "threads": torch.get_num_threads(), "torch": torch.__version__,
    }
    if device.type == "cuda":
        # the fp32 peak is a matmul under matmul.allow_tf32 (off by default: true fp32), while cuDNN
        # convolutions take TF32 by default (cudnn.allow_tf32), so a U-Net can pass that "peak"
        res["allow_tf32"] = {"matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn": torch.backends.cudnn.allow_tf32}
    if bf16:
        res["bf16_peak_gflops"] = round(matmul_gflops(device, torch.bfloat16, matmul_size), 2)
    return res
