# A throwaway feasibility script for docs/scarlet2.md; needs a separate venv with scarlet2 (not a galsep dependency).
"""Throwaway: can scarlet2 fit a 32x32 single-band galsep-like cutout on CPU, and how fast?

Truth: elliptical exponential (Sersic n=1) central galaxy + smaller neighbour, convolved with a
Gaussian PSF of FWHM 2 px, Gaussian noise drawn from a known (non-uniform) inverse-variance map.
Fits: (a) 'pixel'  = scarlet-style free-form pixel morphologies (positivity), init from moments;
      (b) 'sersic' = parametric SersicMorphology (n, size, ellipticity, centre free).
Timing: first fit (includes JIT), then the median over further galaxies (fresh scene each).
"""
import os
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=1")
import jax

jax.config.update("jax_enable_x64", False)
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from numpyro.distributions import constraints

import scarlet2 as sc

H = W = 32
FWHM = 2.0
SIG_PSF = FWHM / 2.3548
SIGMA_NOISE = 0.002


def sersic1(shape, cy, cx, flux, re, q, phi, sup=5):
    """Elliptical exponential (n=1), pixel-integrated by supersampling, total flux `flux`."""
    ys = (np.arange(shape[0] * sup) + 0.5) / sup - 0.5
    xs = (np.arange(shape[1] * sup) + 0.5) / sup - 0.5
    y, x = np.meshgrid(ys - cy, xs - cx, indexing="ij")
    c, s = np.cos(phi), np.sin(phi)
    u, v = c * x + s * y, -s * x + c * y
    r = np.sqrt(u**2 * q + v**2 / q)
    img = np.exp(-1.678 * r / re)
    img = img.reshape(shape[0], sup, shape[1], sup).mean((1, 3))
    # renormalise on a big grid would be exact; the cutout loses a little flux at the edge: keep truth
    # as the flux inside the cutout after convolution (what the fit can see)
    return img


def gauss_psf(n=11, sigma=SIG_PSF):
    y, x = np.mgrid[:n, :n] - n // 2
    p = np.exp(-(x**2 + y**2) / (2 * sigma**2))
    return p / p.sum()


def convolve(img, psf):
    pad = np.zeros_like(img)
    k = psf.shape[0]
    pad[:k, :k] = psf
    pad = np.roll(pad, (-(k // 2), -(k // 2)), (0, 1))
    return np.real(np.fft.ifft2(np.fft.fft2(img) * np.fft.fft2(pad)))


def make_toy(rng):
    psf = gauss_psf()
    # pad to avoid wrap-around, draw on 64x64 then cut centre 32x32
    big = (64, 64)
    off = 16
    c = sersic1(big, off + 15.5 + rng.uniform(-0.5, 0.5), off + 15.5 + rng.uniform(-0.5, 0.5), 1,
                re=rng.uniform(2.5, 4.0), q=rng.uniform(0.5, 0.9), phi=rng.uniform(0, np.pi))
    c /= c.sum()
    ny, nx = off + 15.5 + rng.choice([-1, 1]) * rng.uniform(6, 9), off + 15.5 + rng.choice([-1, 1]) * rng.uniform(5, 9)
    n = sersic1(big, ny, nx, 1, re=rng.uniform(1.2, 2.0), q=rng.uniform(0.7, 1.0), phi=rng.uniform(0, np.pi))
    n *= 0.4 / n.sum()
    cc = convolve(c, psf)[off:off + H, off:off + W]
    nn = convolve(n, psf)[off:off + H, off:off + W]
    weights = (1 / SIGMA_NOISE**2) * rng.uniform(0.7, 1.3, (H, W))
    noise = rng.normal(size=(H, W)) / np.sqrt(weights)
    data = cc + nn + noise
    return dict(data=data, weights=weights, psf=psf, central=cc, neighbour=nn,
                centers=[(15.5, 15.5), (ny - off, nx - off)])


def build_pixel(toy):
    """scarlet-style: free pixel morphology (fixed 25x25 box so shapes don't change -> no re-JIT)."""
    model_frame = sc.Frame(sc.Box((1, H, W)), psf=sc.GaussianPSF(0.5))
    obs = sc.Observation(toy["data"], toy["weights"], psf=sc.ArrayPSF(jnp.asarray(toy["psf"])[None]))
    with sc.Scene(model_frame) as scene:
        for i, ctr in enumerate(toy["centers"]):
            ctr = jnp.array(np.round(ctr, 0))
            box = 25 if i == 0 else 15
            spec, morph = sc.init.from_gaussian_moments(obs, ctr, box_sizes=[box], min_corr=0.0)
            sc.Source(ctr, spec, morph)
    with sc.Parameters(scene):
        for i, src in enumerate(scene.sources):
            sc.Parameter(src.spectrum, name=f"spectrum:{i}", constraint=constraints.positive,
                         stepsize=sc.relative_step)
            sc.Parameter(src.morphology, name=f"morph:{i}", constraint=constraints.unit_interval,
                         stepsize=0.1)
    return scene, obs


def build_sersic(toy):
    model_frame = sc.Frame(sc.Box((1, H, W)), psf=sc.GaussianPSF(0.5))
    obs = sc.Observation(toy["data"], toy["weights"], psf=sc.ArrayPSF(jnp.asarray(toy["psf"])[None]))
    with sc.Scene(model_frame) as scene:
        for i, ctr in enumerate(toy["centers"]):
            ctr = jnp.array(np.round(ctr, 0))
            size = 2.5 if i == 0 else 1.5
            morph = sc.SersicMorphology(jnp.array(1.0 if os.environ.get("FIX_N") else 1.5), jnp.array(size), ellipticity=jnp.zeros(2),
                                        shape=(31, 31) if i == 0 else (21, 21))
            # spectrum: flux guess / sum of unit-amplitude profile
            flux0 = float(toy["data"].sum()) * (0.7 if i == 0 else 0.3)
            sc.Source(ctr, jnp.array([flux0 / float(morph().sum())]), morph)
    with sc.Parameters(scene):
        for i, src in enumerate(scene.sources):
            sc.Parameter(src.spectrum, name=f"spectrum:{i}", constraint=constraints.positive,
                         stepsize=sc.relative_step)
            sc.Parameter(src.center, name=f"center:{i}", stepsize=0.05)
            sc.Parameter(src.morphology.size, name=f"size:{i}", constraint=constraints.interval(0.3, 10.),
                         stepsize=0.05)
            if not os.environ.get("FIX_N"): sc.Parameter(src.morphology.n, name=f"n:{i}", constraint=constraints.interval(0.5, 4.),
                         stepsize=0.02)
            sc.Parameter(src.morphology.ellipticity, name=f"ell:{i}",
                         constraint=constraints.interval(-0.9, 0.9), stepsize=0.02)
    return scene, obs


def run(kind, n_gal=6, max_iter=200):
    build = build_pixel if kind == "pixel" else build_sersic
    rng = np.random.default_rng(1)
    times, errs, builds = [], [], []
    for g in range(n_gal):
        toy = make_toy(rng)
        t0 = time.perf_counter()
        scene, obs = build(toy)
        t1 = time.perf_counter()
        scene_ = scene.fit(obs, max_iter=max_iter, e_rel=1e-4, progress_bar=False)
        central = np.asarray(scene_.evaluate_source(scene_.sources[0]))[0]
        jax.block_until_ready(central)
        t2 = time.perf_counter()
        truth = toy["central"].sum()
        err = central.sum() / truth - 1
        # pixel-level residual of the central source (relative L2)
        pix = np.linalg.norm(central - toy["central"]) / np.linalg.norm(toy["central"])
        builds.append(t1 - t0)
        times.append(t2 - t1)
        errs.append(err)
        print(f"{kind} gal {g}: build {t1 - t0:.2f}s fit {t2 - t1:.2f}s  flux err {err:+.3%}  "
              f"pix relL2 {pix:.3f}", flush=True)
    print(f"{kind}: first fit (JIT) {times[0]:.2f}s, median later fit {np.median(times[1:]):.2f}s, "
          f"median build {np.median(builds[1:]):.2f}s, |flux err| median {np.median(np.abs(errs)):.2%}",
          flush=True)


if __name__ == "__main__":
    print("scarlet2", sc.__version__, "jax", jax.__version__, jax.devices(), flush=True)
    sc.set_validation(False)
    for kind in sys.argv[1:] or ["pixel", "sersic"]:
        run(kind)
