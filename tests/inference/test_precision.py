"""``precision: bfloat16``: the prior networks run under autocast, the rest of the sampler in float32."""

from __future__ import annotations

import pytest
import torch

from galsep.data.operators import PixelOperator
from galsep.inference.denoiser import Autocast, set_precision
from galsep.inference.mmps import sample_joint_posterior
from galsep.inference.priors import Prior, build_denoiser
from galsep.inference.schedule import VESchedule

NETWORK = {"channels": [8, 16], "blocks": 1, "attention_levels": [1], "heads": 1, "emb_features": 16,
           "dropout": 0.0}
SHAPE = (16, 16)
SCHEDULE = VESchedule(1e-3, 2.0)


def entry(seed: int) -> dict:
    torch.manual_seed(seed)
    den = build_denoiser(NETWORK, SHAPE)
    # a fresh network's zero-initialised output layers would make D the identity skip: give them weights
    with torch.no_grad():
        for p in den.parameters():
            if p.abs().max() == 0:
                p.normal_(0, 0.05)
    return Prior.network_of(NETWORK, den, den, SCHEDULE, bound=2.0).entry


def test_bfloat16_prior_stays_float32_outside_the_network_and_close_to_float32():
    e = entry(0)
    full = Prior.from_entry(e, SHAPE, bound=2.0)
    half = Prior.from_entry(e, SHAPE, bound=2.0, precision="bfloat16")
    assert isinstance(half.denoiser.net, Autocast) and not isinstance(full.denoiser.net, Autocast)
    # the weights are the checkpoint's float32 ones, unchanged
    assert all(p.dtype == torch.float32 for p in half.parameters())
    x, sigma = 0.3 * torch.randn(8, *SHAPE), torch.logspace(-2, 0.3, 8)
    a, b = full(x, sigma), half(x, sigma)
    assert b.dtype == torch.float32
    err = ((a - b).norm() / a.norm()).item()
    assert 0 < err < 0.02, err  # bf16 keeps 8 bits of mantissa: ~0.4 % per operation
    assert not isinstance(set_precision(half.denoiser, "float32").net, Autocast)


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision must be one of"):
        set_precision(build_denoiser(NETWORK, SHAPE), "float16")


def test_joint_posterior_samples_through_bfloat16_priors():
    """The MMPS VJPs differentiate through autocast; the draws stay float32 and near the float32 draws."""
    priors = {p: [Prior.from_entry(entry(s), SHAPE, bound=2.0, precision=p) for s in (1, 2)]
              for p in ("float32", "bfloat16")}
    B = 6
    y = 0.2 * torch.randn(B, *SHAPE)
    noise = torch.full_like(y, 1e-2)
    ops = [PixelOperator(torch.ones(B, *SHAPE), torch.ones(B), torch.ones(B)) for _ in range(2)]
    draws = {}
    for p, pr in priors.items():
        draws[p] = sample_joint_posterior(pr, ops, y, noise, shape=SHAPE, schedule=SCHEDULE, steps=8, tau=0.5,
                                          cg_iters=2, precondition=True, warm_start=True,
                                          generator=torch.Generator().manual_seed(0))
    a, b = draws["float32"], draws["bfloat16"]
    assert b.dtype == torch.float32 and torch.isfinite(b).all()
    # same seed, same path up to bf16 rounding: far closer than two independent draws
    independent = sample_joint_posterior(priors["float32"], ops, y, noise, shape=SHAPE, schedule=SCHEDULE, steps=8,
                                         tau=0.5, cg_iters=2, precondition=True, warm_start=True,
                                         generator=torch.Generator().manual_seed(1))
    assert (a - b).norm() < 0.2 * (a - independent).norm()
