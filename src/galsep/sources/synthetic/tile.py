"""One synthetic COSMOS tile: the drizzled FITS image, its ground truth and its target catalogue."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import astropy.units as u
import galsim
import h5py
import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from galsep.data.noise import inverse_variance, noise_parameters
from galsep.errors import ConfigError
from galsep.io import atomic_path
from galsep.seeding import numpy_generator
from galsep.sources.synthetic import cosmos, observe, population, render
from galsep.sources.synthetic.psf import hst_psf

__all__ = ["TARGET_HLR_RANGE", "INTERLOPER_HLR_RANGE", "OUTSIDE", "Rendered", "centroid", "neighbours", "make_tile"]

TARGET_HLR_RANGE = (0.06, 1.5)  # clip of disk half-light radii [arcsec]
INTERLOPER_HLR_RANGE = (0.03, 1.0)
OUTSIDE = 16  # pixels beyond the tile edge where interlopers and stars may sit and shine in


@dataclass
class Rendered:
    """Light of a tile by component, each (H, W) float32 [e-/s], and the targets' own stamps."""

    targets: np.ndarray
    interlopers: np.ndarray
    stars: np.ndarray
    cosmic_rays: np.ndarray
    hot_pixels: np.ndarray
    stamps: list[tuple[np.ndarray, int, int]]  # (stamp, x0, y0) as added to the tile

    def noiseless(self) -> np.ndarray:
        """(H, W) float32 sum of all components, added in float64."""
        parts = (self.targets, self.interlopers, self.stars, self.cosmic_rays, self.hot_pixels)
        return np.sum([p.astype(np.float64) for p in parts], axis=0).astype(np.float32)


def _draw_galaxies(
    profiles: Iterable[tuple[galsim.GSObject, int, float | None]],
    x: np.ndarray,
    y: np.ndarray,
    psf: galsim.GSObject,
    shape: tuple[int, int],
    scale: float,
) -> tuple[np.ndarray, list[tuple[np.ndarray, int, int]]]:
    """Draw galaxies (profile before the PSF, stamp half-size, flux the stamp must hold or None) at (x, y)."""
    canvas = np.zeros(shape, dtype=np.float64)
    stamps = []
    for (profile, half, flux), xi, yi in zip(profiles, x, y, strict=True):
        stamp, x0, y0 = render.draw(galsim.Convolve(profile, psf), xi, yi, half, scale)
        if flux is not None and stamp.sum(dtype=np.float64) > 0:
            # the stamp holds exactly the population's flux (cosmos: PSF wings and sub-threshold light)
            stamp = (stamp * (flux / stamp.sum(dtype=np.float64))).astype(np.float32)
        stamps.append(render.paste(canvas, stamp, x0, y0))
    return canvas.astype(np.float32), stamps


def _parametric(gals: population.Galaxies, scale: float) -> Iterator[tuple[galsim.GSObject, int, float | None]]:
    for i in range(len(gals)):
        yield render.galaxy_profile(gals, i), render.galaxy_half_size(gals, i, scale), None


def _real(
    sample: cosmos.CosmosSample, real: cosmos.RealGalaxies, gals: population.Galaxies, scale: float
) -> Iterator[tuple[galsim.GSObject, int, float | None]]:
    for i in range(len(gals)):
        flux = float(gals.flux[i])
        yield sample.profile(real, i, flux), sample.half_size(real, i, scale), flux


def _draw_stars(
    st: population.Stars, psf: galsim.GSObject, shape: tuple[int, int], scale: float
) -> np.ndarray:
    canvas = np.zeros(shape, dtype=np.float64)
    for x, y, flux in zip(st.x, st.y, st.flux, strict=True):
        render.paste(
            canvas, *render.draw(psf.withFlux(float(flux)), x, y, render.star_half_size(flux), scale)
        )
    return canvas.astype(np.float32)


def centroid(stamp: np.ndarray, x0: int, y0: int) -> tuple[float, float]:
    """Flux-weighted centroid (x, y) [tile pixels] of a stamp whose [0, 0] sits at tile pixel (x0, y0)."""
    w = stamp.astype(np.float64)
    yy, xx = np.mgrid[: w.shape[0], : w.shape[1]]
    return x0 + float((w * xx).sum() / w.sum()), y0 + float((w * yy).sum() / w.sum())


def _sky_position_angle(wcs: WCS, beta: np.ndarray) -> np.ndarray:
    """Position angle [deg, east of north, in [0, 180)] of major axes at ``beta`` from the +x pixel axis."""
    xi, eta = wcs.wcs.cd @ np.stack([np.cos(beta), np.sin(beta)])  # xi grows to the east
    return np.degrees(np.arctan2(xi, eta)) % 180.0


def make_tile(
    tile: str,
    index: int,
    params: Mapping[str, Any],
    seed: int,
    tile_path: str | Path,
    truth_path: str | Path,
    targets_path: str | Path,
) -> None:
    """Simulate tile ``tile`` (number ``index``) of the synthetic COSMOS field and write its three files.

    Args:
        params: the ``synthetic`` config plus ``pixel_scale`` [arcsec] and ``cutout_size`` [pixels].
        seed: seed of the field; tile ``index`` draws from the stream of key ("synthetic", "tile", index)
            (:func:`galsep.seeding.numpy_generator`), so one seed for all tiles gives independent
            tiles, and the same (seed, index) gives the same files.
        tile_path: FITS tile with SCI [e-/s] and WHT [s] extensions, like an ACS/WFC F814W drz.
        truth_path: HDF5 with ``noiseless`` and ``noise`` (H, W), ``components/*`` (H, W) and
            ``targets/{object_id}`` stamps (attrs x0, y0: tile pixel of the stamp's [0, 0]).
        targets_path: ECSV catalogue of the targets.
    """
    n = int(params["tile_size"])
    shape = (n, n)
    scale = float(params.get("pixel_scale", 0.05))
    cutout = int(params.get("cutout_size", 64))
    edge = int(params["edge_width"])
    n_targets = int(params["targets_per_tile"])
    rng = numpy_generator(seed, "synthetic", "tile", index)

    wcs = observe.tile_wcs(index, shape, float(params["ra"]), float(params["dec"]), scale, rng)
    wht = observe.exposure_map(
        shape, float(params["exposure_time"]), int(params["ncombine"]), edge, scale, rng
    )
    covered = wht > 0
    header = observe.primary_header(tile, index, seed, params)
    zp = observe.ab_zeropoint()
    psf = hst_psf(float(params["psf_fwhm"]))

    margin = edge + cutout / 4
    if n - 1 - 2 * margin <= 0:
        raise ConfigError(f"synthetic.tile_size = {n} leaves no room for targets {margin} pixels from the edges")
    inside = (margin, n - 1 - margin, margin, n - 1 - margin)
    around = (-OUTSIDE, n - 1 + OUTSIDE, -OUTSIDE, n - 1 + OUTSIDE)
    kind = str(params.get("galaxies", "parametric"))
    sample = _cosmos_sample(params) if kind == "cosmos" else None
    targets = population.galaxies(
        rng,
        n_targets,
        tuple(params["target_mag_range"]),
        population.TARGET_COUNT_SLOPE,
        zp,
        inside,
        TARGET_HLR_RANGE,
    )
    pair_fraction = float(params.get("close_pair_fraction", 0.0))
    if pair_fraction > 0:
        # an own stream, so that close pairs move targets and nothing else of the field
        lo, hi = (float(v) / scale for v in params.get("close_pair_separation", (0.3, 1.0)))
        if not 0 <= lo <= hi:
            raise ConfigError(
                f"synthetic.close_pair_separation = {params.get('close_pair_separation')} must be [low, high]"
                " arcsec with 0 <= low <= high"
            )
        x, y = population.close_pairs(
            numpy_generator(seed, "synthetic", "tile", index, "pairs"),
            targets.x, targets.y, pair_fraction, (lo, hi), inside,
        )
        targets = replace(targets, x=x, y=y)
    interlopers = population.galaxies(
        rng,
        int(rng.poisson(float(params["interloper_density"]) * n_targets)),
        tuple(params["interloper_mag_range"]),
        population.INTERLOPER_COUNT_SLOPE,
        zp,
        around,
        INTERLOPER_HLR_RANGE,
    )
    stars = population.stars(
        rng,
        int(rng.poisson(float(params["star_rate"]) * n_targets)),
        tuple(params["star_mag_range"]),
        zp,
        around,
    )
    rays = population.cosmic_rays(
        rng, int(rng.poisson(float(params["cosmic_ray_rate"]) * covered.sum() / 64**2)), covered
    )
    hot = population.hot_pixels(rng, float(params["hot_pixel_rate"]), covered)

    if sample is None:
        target_profiles, interloper_profiles = _parametric(targets, scale), _parametric(interlopers, scale)
        real_targets = None
    else:
        # positions and magnitudes are the parametric field's (same stream); which real galaxy and its
        # rotation come from an own stream, so both kinds of field share everything but the morphologies
        pick_rng = numpy_generator(seed, "synthetic", "tile", index, "cosmos")
        real_targets = cosmos.pick(pick_rng, targets.mag, sample.mags)
        real_interlopers = cosmos.pick(pick_rng, interlopers.mag, sample.mags)
        target_profiles = _real(sample, real_targets, targets, scale)
        interloper_profiles = _real(sample, real_interlopers, interlopers, scale)
    target_img, stamps = _draw_galaxies(target_profiles, targets.x, targets.y, psf, shape, scale)
    light = Rendered(
        targets=target_img,
        interlopers=_draw_galaxies(interloper_profiles, interlopers.x, interlopers.y, psf, shape, scale)[0],
        stars=_draw_stars(stars, psf, shape, scale),
        cosmic_rays=render.cosmic_ray_image(rays, shape).astype(np.float32),
        hot_pixels=hot.astype(np.float32),
        stamps=stamps,
    )
    noiseless = light.noiseless()
    # the noise the header's model describes, so that cutouts' inverse variance is exact
    ivar = inverse_variance(wht, **noise_parameters(header))
    z = rng.standard_normal(shape)
    noise = np.where(covered, z / np.sqrt(np.where(covered, ivar, 1.0)), 0.0).astype(np.float32)
    sci = np.where(covered, noiseless + noise, np.float32(0.0)).astype(np.float32)

    ids = index * 1_000_000 + 1 + np.arange(n_targets, dtype=np.int64)
    centres = np.array([centroid(*s) for s in stamps]).reshape(-1, 2)
    ra, dec = wcs.wcs_pix2world(centres[:, 0], centres[:, 1], 0)

    columns: dict[str, tuple[np.ndarray, u.UnitBase | None, str | None]]
    if sample is None or real_targets is None:
        columns = {
            "half_light_radius": (
                render.composite_half_light_radius(targets), u.arcsec,
                "circularised half-light radius of bulge + disk, before the PSF",
            ),
            "ellipticity": (1 - targets.q, None, "1 - b/a"),
            "position_angle": (_sky_position_angle(wcs, targets.beta), u.deg, "major axis, east of north"),
            "bulge_fraction": (targets.bulge_fraction, None, "bulge share of the flux (B/T)"),
        }
    else:
        hlr, q, beta = sample.shapes(real_targets)
        columns = {
            "half_light_radius": (
                hlr, u.arcsec,
                "circularised half-light radius measured on the cleaned HST image (its own PSF in, the tile's not)",
            ),
            "ellipticity": (1 - q, None, "1 - b/a from the second moments of the cleaned HST image"),
            "position_angle": (_sky_position_angle(wcs, beta), u.deg, "major axis, east of north"),
            "cosmos_ident": (
                sample.ident[real_targets.index], None, "IDENT of the RealGalaxyCatalog galaxy drawn"
            ),
        }
    distance, nearest = neighbours(centres)
    columns["neighbour_distance"] = (
        distance * scale, u.arcsec, "distance to the nearest other catalogued target of the tile (inf if none)"
    )
    columns["neighbour_mag"] = (
        np.where(nearest >= 0, targets.mag[np.maximum(nearest, 0)], np.nan), u.mag,
        "F814W AB magnitude of that nearest target (NaN if none)",
    )

    _write_fits(tile_path, header, wcs, sci, wht)
    _write_truth(truth_path, noiseless, noise, light, ids, zp, scale)
    _write_targets(targets_path, tile, ids, ra, dec, targets, columns, zp)


def _cosmos_sample(params: Mapping[str, Any]) -> cosmos.CosmosSample:
    directory = params.get("cosmos_dir")
    if not directory:
        raise ConfigError(
            "synthetic.galaxies = cosmos needs synthetic.cosmos_dir: the folder of a GalSim RealGalaxyCatalog"
            " (`galsim_download_cosmos -s 23.5`, or ../shared/data/cosmos_real_galaxies for the small sample)"
        )
    return cosmos.CosmosSample(cosmos.open_catalogue(directory, params.get("cosmos_catalog")))


def neighbours(centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance [pixels] from each of the (N, 2) centres to the nearest other one and its index.

    Returns (N,) float64 distances (inf when N = 1) and (N,) int64 indices (-1 when none).
    """
    n = len(centres)
    if n < 2:
        return np.full(n, np.inf), np.full(n, -1, dtype=np.int64)
    d = np.linalg.norm(centres[:, None, :] - centres[None, :, :], axis=-1)
    np.fill_diagonal(d, np.inf)
    nearest = np.argmin(d, axis=1).astype(np.int64)
    return d[np.arange(n), nearest], nearest


def _write_fits(path: str | Path, primary: fits.Header, wcs: WCS, sci: np.ndarray, wht: np.ndarray) -> None:
    sci_header = observe.wcs_header(wcs)
    sci_header["BUNIT"] = ("ELECTRONS/S", "brightness units")
    for key in ("MDRIZSKY", "PHOTFLAM", "PHOTZPT", "PHOTPLAM"):
        sci_header[key] = (primary[key], primary.comments[key])
    wht_header = observe.wcs_header(wcs)
    wht_header["BUNIT"] = ("UNITLESS", "exposure time per pixel [s], final_wht_type=EXP")
    hdul = fits.HDUList(
        [
            fits.PrimaryHDU(header=primary),
            fits.ImageHDU(sci, header=sci_header, name="SCI"),
            fits.ImageHDU(wht, header=wht_header, name="WHT"),
        ]
    )
    with atomic_path(path) as tmp:
        hdul.writeto(tmp, output_verify="exception")


def _write_truth(
    path: str | Path,
    noiseless: np.ndarray,
    noise: np.ndarray,
    light: Rendered,
    ids: np.ndarray,
    zp: float,
    scale: float,
) -> None:
    packed = dict(compression="gzip", compression_opts=4, shuffle=True)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs.update(units="e-/s", zeropoint_ab=zp, pixel_scale=scale)
        f.create_dataset("noiseless", data=noiseless)
        f.create_dataset("noise", data=noise)
        comps = f.create_group("components")
        comps.attrs["description"] = "noiseless = targets + interlopers + stars + cosmic_rays + hot_pixels"
        for name in ("targets", "interlopers", "stars", "cosmic_rays", "hot_pixels"):
            comps.create_dataset(name, data=getattr(light, name), **packed)
        group = f.create_group("targets")
        for oid, (stamp, x0, y0) in zip(ids, light.stamps, strict=True):
            d = group.create_dataset(str(int(oid)), data=stamp, **packed)
            d.attrs.update(x0=int(x0), y0=int(y0))


def _write_targets(
    path: str | Path,
    tile: str,
    ids: np.ndarray,
    ra: np.ndarray,
    dec: np.ndarray,
    gals: population.Galaxies,
    columns: Mapping[str, tuple[np.ndarray, u.UnitBase | None, str | None]],
    zp: float,
) -> None:
    """Write the targets ECSV: ids, positions, photometry, then ``columns`` (values, unit, description)."""
    t = Table(meta={"source": "galsep synthetic COSMOS field", "zeropoint_ab": zp})
    t["object_id"] = ids.astype(np.int64)
    t["ra"] = np.asarray(ra, dtype=np.float64) * u.deg
    t["dec"] = np.asarray(dec, dtype=np.float64) * u.deg
    t["tile"] = np.array([tile] * len(ids), dtype=str)
    t["mag"] = gals.mag * u.mag
    t["mag"].description = "F814W AB magnitude"
    t["flux"] = gals.flux * (u.electron / u.s)
    for name, (values, unit, description) in columns.items():
        t[name] = values if unit is None else values * unit
        if description is not None:
            t[name].description = description
    with atomic_path(path) as tmp:
        t.write(tmp, format="ascii.ecsv")
