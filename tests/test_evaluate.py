"""Flux diagnostics of the evaluation: contamination bins, neighbours and the calibration of the draws."""

from __future__ import annotations

import numpy as np
import pytest

from galsep.evaluation.evaluate import flux_diagnostics


def test_calibrated_draws_cover_the_truth_as_expected_for_their_number() -> None:
    """Truth and n draws from the same distribution: coverage ~0.68 (n-1)/(n+1), a flat rank histogram."""
    rng = np.random.default_rng(0)
    N, n = 20000, 8
    centre = rng.uniform(50, 150, N)
    true = centre + 10 * rng.standard_normal(N)
    draws = centre[:, None] + 10 * rng.standard_normal((N, n))
    res = 100 * (draws.mean(1) - true) / true
    contamination = rng.uniform(0, 1, N)
    out = flux_diagnostics(draws, true, res, contamination, neighbour_distance=rng.uniform(0, 5, N))
    assert abs(out["interval_16_84_coverage"] - out["interval_16_84_expected"]) < 0.015
    assert abs(out["interval_16_84_expected"] - 0.68 * 7 / 9) < 1e-12
    hist = np.array(out["truth_rank_histogram"])
    assert hist.sum() == N and np.abs(hist / N - 1 / (n + 1)).max() < 0.01
    # draws twice too narrow cover clearly less
    narrow = centre[:, None] + 5 * rng.standard_normal((N, n))
    assert flux_diagnostics(narrow, true, res, contamination)["interval_16_84_coverage"] < 0.4
    counts = [b["count"] for b in out["by_contamination"]]
    assert sum(counts) == N and counts[0] == np.sum(contamination < 0.05)
    assert out["with_neighbour"]["count"] + out["without_neighbour"]["count"] == N


def test_a_biased_bin_shows_its_bias_and_the_others_do_not() -> None:
    rng = np.random.default_rng(1)
    N = 4000
    contamination = rng.uniform(0, 1, N)
    res = rng.normal(0, 5, N) + np.where(contamination >= 0.5, 40.0, 0.0)
    true = np.full(N, 100.0)
    draws = true[:, None] * (1 + res[:, None] / 100) + rng.normal(0, 1, (N, 4))
    bins = flux_diagnostics(draws, true, res, contamination)["by_contamination"]
    assert [b["contamination"] for b in bins] == [[0.0, 0.05], [0.05, 0.2], [0.2, 0.5], [0.5, None]]
    assert all(abs(b["median"]) < 1.5 for b in bins[:3]) and abs(bins[3]["median"] - 40) < 1.5
    assert bins[3]["spread"] < 7 and bins[3]["off_by_50pct"] < 0.1


def test_exact_posterior_means_regress_in_truth_bins_and_not_in_estimate_bins() -> None:
    """Closed-form two-source posterior (Gaussian fluxes g, r seen as y1 = g + r + n1, y2 = r + n2).

    y2 (light outside the galaxy) only partly reveals r, so galaxies selected for having little true
    contamination come out low and the most contaminated high, though the estimator is exact; binned on
    the estimate's own contamination the total flux bias vanishes (E[g - E[g | y] | f(y)] = 0).
    """
    rng = np.random.default_rng(2)
    N, n = 200_000, 8
    m, C = np.array([100.0, 25.0]), np.diag([30.0**2, 15.0**2])
    A, noise = np.array([[1.0, 1.0], [0.0, 1.0]]), np.diag([5.0**2, 12.0**2])
    x = m + rng.standard_normal((N, 2)) * np.sqrt(np.diag(C))
    y = x @ A.T + rng.standard_normal((N, 2)) * np.sqrt(np.diag(noise))
    gain = C @ A.T @ np.linalg.inv(A @ C @ A.T + noise)
    x_hat = m + (y - m @ A.T) @ gain.T
    post_sd = np.sqrt((C - gain @ A @ C)[0, 0])
    draws = x_hat[:, :1] + post_sd * rng.standard_normal((N, n))
    keep = (x_hat[:, 0] > 1) & (x_hat[:, 1] > 0)  # selected on the data only, as a user can
    (g, r), (g_hat, r_hat), draws = x[keep].T, x_hat[keep].T, draws[keep]
    out = flux_diagnostics(draws, g, 100 * (g_hat - g) / g, r / g, mean_flux=g_hat,
                           estimated_contamination=r_hat / g_hat)
    truth_bins, estimate_bins = out["by_contamination"], out["by_estimated_contamination"]
    assert truth_bins[0]["total_flux_bias_pct"] < -5 and truth_bins[3]["total_flux_bias_pct"] > 5
    populated = [b for b in estimate_bins if b["count"] > 1000]
    assert len(populated) >= 3
    assert all(abs(b["total_flux_bias_pct"]) < 1.0 for b in populated)
    assert abs(out["interval_16_84_coverage"] - out["interval_16_84_expected"]) < 0.01


def test_metrics_score_the_catalogue_mean_and_the_plain_mean_of_the_draws() -> None:
    """A Rao-Blackwellised galaxy_mean closer to the truth than the draws' average: both are reported."""
    import xarray as xr

    from galsep.data.normalise import Stretch
    from galsep.evaluation.evaluate import evaluate_dataset
    from galsep.evaluation.metrics import psnr_images

    rng = np.random.default_rng(0)
    n, s, h = 5, 4, 8
    tg = rng.uniform(0, 1, (n, h, h)).astype(np.float32)
    tr = rng.uniform(0, 0.1, (n, h, h)).astype(np.float32)
    galaxy = tg[:, None] + rng.normal(0, 0.1, (n, s, h, h)).astype(np.float32)
    obs, draw = ("object", "y", "x"), ("object", "sample", "y", "x")
    ds = xr.Dataset({
        "object_id": ("object", np.arange(n)), "observation": (obs, tg + tr),
        "mask": (obs, np.ones((n, h, h), np.uint8)),
        "truth_galaxy": (obs, tg), "truth_random": (obs, tr), "galaxy": (draw, galaxy),
        "random": (draw, np.broadcast_to(tr[:, None], galaxy.shape).copy()),
        "galaxy_mean": (obs, tg + rng.normal(0, 0.01, (n, h, h)).astype(np.float32)), "random_mean": (obs, tr),
    })
    stretch = Stretch()
    m = evaluate_dataset(ds, np.zeros((h, h)), stretch, "ddprism")["methods"]
    S = stretch.forward
    want = psnr_images(S(galaxy.mean(1)), S(tg), np.ones((n, h, h), bool), 2 * stretch.clip).mean()
    assert m["ddprism_draws_mean"]["galaxy_psnr"]["mean"] == pytest.approx(want)
    assert m["ddprism_mean"]["galaxy_psnr"]["mean"] > m["ddprism_draws_mean"]["galaxy_psnr"]["mean"] + 10
