"""CUDA out of memory (issue 18 item 5), simulated on the CPU: a denoiser that raises torch's
out-of-memory error for batches larger than a limit."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from galsep.data.operators import DenseOperator
from galsep.errors import GalsepError, OutOfMemoryError
from galsep.inference.denoiser import EDMDenoiser
from galsep.inference.memory import batch_setting, chunk_progress, run_chunked
from galsep.inference.mmps import JointPosterior, sample_joint_posterior
from galsep.inference.nets import MLP
from galsep.inference.samplers import pc_sample
from galsep.inference.schedule import VESchedule
from galsep.inference.training import train_denoiser

F64 = torch.float64
SCHEDULE = VESchedule(1e-2, 1e1)
KW = dict(shape=(6,), schedule=SCHEDULE, steps=6, cg_iters=2)


class Denoiser(nn.Module):
    """A small MLP denoiser that runs out of 'memory' above ``limit`` rows, recording the batches it saw."""

    def __init__(self, seed: int, limit: int | None = None) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Linear(7, 16), nn.SiLU(), nn.Linear(16, 6)).double()
        self.limit, self.seen = limit, []

    def forward(self, x: Tensor, sigma: Tensor) -> Tensor:
        self.seen.append(x.shape[0])
        if self.limit is not None and x.shape[0] > self.limit:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {x.shape[0]} rows")
        s = sigma[:, None]
        h = self.net(torch.cat([x / (1 + s**2).sqrt(), s.log()], 1))
        return x / (1 + s**2) + s / (1 + s**2).sqrt() * h


def _problem(B: int, seed: int = 10):
    g = torch.Generator().manual_seed(seed)
    ops = [DenseOperator(torch.randn(B, 4, 6, generator=g, dtype=F64)) for _ in range(2)]
    noise_var = 0.1 + torch.rand(B, 4, generator=g, dtype=F64)
    y = torch.randn(B, 4, generator=g, dtype=F64)
    return ops, y, noise_var


def _plain_loop(dens, ops, y, noise_var, *, batch_size: int, seed: int) -> Tensor:
    """The sampler's chunk loop as it was before the out-of-memory retry."""
    generator = torch.Generator().manual_seed(seed)
    B, out = y.shape[0], []
    for start in range(0, B, batch_size):
        idx = slice(start, min(start + batch_size, B))
        post = JointPosterior(dens, [A[idx] for A in ops], y[idx], noise_var[idx], cg_iters=2)
        x1 = SCHEDULE.sigma_max * torch.randn((idx.stop - idx.start, 2, 6), generator=generator, dtype=y.dtype)
        out.append(pc_sample(post, x1, SCHEDULE, steps=6, generator=generator))
    return torch.cat(out, 0)


def test_without_out_of_memory_the_draws_are_bit_identical_to_the_plain_loop() -> None:
    ops, y, noise_var = _problem(7)
    dens = [Denoiser(0), Denoiser(1)]
    for batch in (3, 7, 16):
        with batch_setting("posterior.sampler.batch_size") as record:
            got = sample_joint_posterior(dens, ops, y, noise_var, batch_size=batch,
                                         generator=torch.Generator().manual_seed(5), **KW)
        assert torch.equal(got, _plain_loop(dens, ops, y, noise_var, batch_size=batch, seed=5))
        assert record.retries == 0 and record.describe() == f"batch {batch}"


def test_out_of_memory_halves_the_chunk_and_stays_seeded() -> None:
    ops, y, noise_var = _problem(10)

    def run() -> tuple[Tensor, list[Denoiser], str]:
        dens = [Denoiser(0, limit=3), Denoiser(1, limit=3)]
        with batch_setting("posterior.sampler.batch_size") as record:
            x = sample_joint_posterior(dens, ops, y, noise_var, batch_size=8,
                                       generator=torch.Generator().manual_seed(5), **KW)
        return x, dens, record.describe()

    x, dens, described = run()
    assert x.shape == (10, 2, 6) and torch.isfinite(x).all()
    # 8 fails, 4 fails, then chunks of 2 (never back up to 8): every call that ran was <= 3 rows
    assert dens[0].seen[:2] == [8, 4]
    assert all(n <= 3 for n in dens[0].seen[2:]) and set(dens[0].seen[2:]) == {2}
    assert described == "batch 8 -> 2 after CUDA out of memory"
    x2, _, _ = run()
    assert torch.equal(x, x2)  # the retried chunks draw from the same generator: still seeded


def test_out_of_memory_at_batch_one_names_the_config_key() -> None:
    ops, y, noise_var = _problem(3)
    dens = [Denoiser(0, limit=0), Denoiser(1)]
    with batch_setting("em.sampler.batch_size"), pytest.raises(OutOfMemoryError) as err:
        sample_joint_posterior(dens, ops, y, noise_var, batch_size=4, generator=torch.Generator().manual_seed(0),
                               **KW)
    assert isinstance(err.value, GalsepError)
    assert "batch 1" in str(err.value) and "em.sampler.batch_size" in str(err.value)
    assert dens[0].seen == [3, 1]  # 3 rows (all, under batch 4), halved to 1, then the error


def test_a_later_call_in_the_same_stage_starts_from_the_batch_that_fit() -> None:
    calls: list[int] = []

    def fn(rows: slice) -> int:
        calls.append(rows.stop - rows.start)
        if rows.stop - rows.start > 2:
            raise torch.OutOfMemoryError("simulated")
        return rows.stop - rows.start

    with batch_setting("methods.gibbs.sampler.batch_size") as record:
        assert sum(run_chunked(5, 4, fn)) == 5
        assert calls == [4, 2, 2, 1]
        calls.clear()
        assert sum(run_chunked(5, 4, fn)) == 5
        assert calls == [2, 2, 1]  # no second out-of-memory
    assert record.describe() == "batch 4 -> 2 after CUDA out of memory"
    with pytest.raises(ValueError):
        run_chunked(5, 0, fn)


def test_progress_reports_every_chunk_that_ran_and_nested_blocks_report_to_the_outer() -> None:
    seen: list[tuple[int, int]] = []

    def fn(rows: slice) -> int:
        if rows.stop - rows.start > 2:
            raise torch.OutOfMemoryError("simulated")
        return rows.stop - rows.start

    with batch_setting("posterior.sampler.batch_size", progress=lambda d, n: seen.append((d, n))):
        run_chunked(5, 4, fn)  # 4 fails (not reported), then 2, 2, 1
        with batch_setting(None):
            run_chunked(3, 3, lambda rows: 0)
    assert seen == [(2, 5), (4, 5), (5, 5), (3, 3)]
    with batch_setting("em.sampler.batch_size"):  # no callback anywhere: nothing to call
        assert run_chunked(3, 1, lambda rows: 1) == [1, 1, 1]


def test_chunk_progress_logs_at_most_every_interval_and_always_the_last_row(monkeypatch) -> None:
    clock = iter([0.0, 10.0, 40.0, 50.0, 60.0])  # creation, then one reading per report
    monkeypatch.setattr("galsep.inference.memory.time.perf_counter", lambda: next(clock))
    lines: list[str] = []
    report = chunk_progress(lines.append, "ddprism shard 1/2", every=30.0)
    for done in (1, 2, 3, 4):
        report(done, 4)
    # 10 s: too soon; 40 s: logged with the time left at that rate (40 s for 2 rows: 40 s for 2 more)
    assert lines == ["ddprism shard 1/2: 2/4 rows after 40s, ~40s left", "ddprism shard 1/2: 4/4 rows after 60s"]


def test_chunk_progress_names_each_later_call_and_estimates_its_own_time_left(monkeypatch) -> None:
    clock = iter([0.0, 100.0, 110.0, 150.0])  # creation, then one reading per report
    monkeypatch.setattr("galsep.inference.memory.time.perf_counter", lambda: next(clock))
    lines: list[str] = []
    report = chunk_progress(lines.append, "gibbs shard 1/1", every=0.0)
    report(4, 4)  # a first call of 4 rows ends at 100 s
    report(1, 4)  # the second call: 1 row in 10 s, 3 left -> 30 s (not 300 s from the job's start)
    report(4, 4)
    assert lines == ["gibbs shard 1/1: 4/4 rows after 100s", "gibbs shard 1/1, pass 2: 1/4 rows after 110s, ~30s left",
                     "gibbs shard 1/1, pass 2: 4/4 rows after 150s"]


def test_the_joint_sampler_reports_its_chunks() -> None:
    ops, y, noise_var = _problem(6)
    lines: list[str] = []
    with batch_setting("posterior.sampler.batch_size", progress=chunk_progress(lines.append, "shard", every=0.0)):
        sample_joint_posterior([Denoiser(0), Denoiser(1)], ops, y, noise_var, batch_size=4,
                               generator=torch.Generator().manual_seed(0), **KW)
    assert [line.split(" after")[0] for line in lines] == ["shard: 4/6 rows", "shard: 6/6 rows"]


def test_training_out_of_memory_fails_naming_the_batch_and_key(monkeypatch) -> None:
    den = EDMDenoiser(MLP(2, hidden=(16,), emb_features=8))

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("simulated")

    monkeypatch.setattr(den, "loss", oom)
    data = torch.randn(32, 2, generator=torch.Generator().manual_seed(0))
    with batch_setting("em.train.batch_size"), pytest.raises(OutOfMemoryError) as err:
        train_denoiser(den, data, schedule=SCHEDULE, steps=3, batch_size=16, lr=1e-3, lr_schedule="constant",
                       grad_clip=1.0, ema_decay=0.9, generator=torch.Generator().manual_seed(0))
    msg = str(err.value)
    assert "batch 16" in msg and "em.train.batch_size" in msg and "step 1/3" in msg
