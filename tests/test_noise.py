"""The ACS background noise model: header parsing and the inverse variance's closed forms."""

from __future__ import annotations

import numpy as np
import pytest

from galsep.data.noise import NoiseHeaderError, inverse_variance, noise_parameters

HEADER = {
    "EXPTIME": 2028.0, "NCOMBINE": 4, "MDRIZSKY": 50.7, "BUNIT": "ELECTRONS/S",
    "READNSEA": 5.08, "READNSEB": 4.73, "READNSEC": 4.72, "READNSED": 5.11,
}


def test_parameters_in_rate_units():
    p = noise_parameters(HEADER)
    # MDRIZSKY is e- per pixel per exposure: 50.7 e- in 507 s is 0.1 e-/s
    assert p["sky_rate"] == pytest.approx(0.1)
    assert p["read_noise"] == pytest.approx(np.mean([5.08, 4.73, 4.72, 5.11]))
    assert p["ncombine"] == 4 and p["exposure_time"] == pytest.approx(507.0)


def test_ncombine_fallback_from_drizzle_input_exposure_time():
    header = {k: v for k, v in HEADER.items() if k != "NCOMBINE"} | {"D001DEXP": 507.0}
    assert noise_parameters(header)["ncombine"] == 4


@pytest.mark.parametrize("drop", ["EXPTIME", "MDRIZSKY"])
def test_missing_keyword_is_named(drop):
    with pytest.raises(NoiseHeaderError, match=drop):
        noise_parameters({k: v for k, v in HEADER.items() if k != drop})


def test_counts_images_are_refused():
    with pytest.raises(NoiseHeaderError, match="BUNIT"):
        noise_parameters(HEADER | {"BUNIT": "COUNTS/S"})


def test_inverse_variance_closed_form_and_empty_pixels():
    wht = np.array([[2028.0, 0.0, -3.0, np.nan]])
    ivar = inverse_variance(wht, sky_rate=0.1, read_noise=5.0, ncombine=4)
    expected = 2028.0**2 / (0.1 * 2028.0 + 4 * 25.0)
    assert ivar[0, 0] == pytest.approx(expected, rel=1e-6)
    assert np.all(ivar[0, 1:] == 0)


def test_per_pixel_reads_make_ivar_proportional_to_coverage():
    # with n = t / t_exp reads, var = (sky + RN^2 / t_exp) / t: ivar is linear in WHT
    wht = np.array([507.0, 1014.0, 2028.0])
    ivar = inverse_variance(wht, sky_rate=0.1, read_noise=5.0, ncombine=4, exposure_time=507.0)
    assert ivar / wht == pytest.approx(np.full(3, 1 / (0.1 + 25.0 / 507.0)), rel=1e-6)
    # at full coverage it agrees with the constant-ncombine model
    assert ivar[2] == pytest.approx(inverse_variance(wht, 0.1, 5.0, 4)[2], rel=1e-6)


def test_noise_model_matches_simulated_drizzle_statistics():
    """Monte Carlo: average of n exposures with Poisson sky and Gaussian read noise, in e-/s."""
    rng = np.random.default_rng(1)
    sky, rn, t_exp, n = 0.1, 5.0, 507.0, 4
    counts = rng.poisson(sky * t_exp, (200_000, n)) + rng.normal(0, rn, (200_000, n))
    rate = counts.sum(1) / (n * t_exp)
    ivar = inverse_variance(np.array([n * t_exp]), sky, rn, n, exposure_time=t_exp)[0]
    # 200k samples: the variance estimate has a relative standard error of sqrt(2/2e5) = 0.3%
    assert 1 / rate.var() == pytest.approx(ivar, rel=0.015)


def test_dark_current_adds_poisson_variance():
    wht = np.array([2028.0])
    a = inverse_variance(wht, 0.1, 5.0, 4, dark_rate=0.0)[0]
    b = inverse_variance(wht, 0.1, 5.0, 4, dark_rate=0.01)[0]
    assert 1 / b - 1 / a == pytest.approx(0.01 / 2028.0, rel=1e-4)
