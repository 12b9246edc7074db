"""Checks of the config that a JSON schema cannot express (relations between keys)."""

from __future__ import annotations

from collections.abc import Mapping

from galsep.errors import ConfigError
from galsep.methods import registry

__all__ = ["check"]


def check(config: Mapping) -> None:
    """Raise :class:`ConfigError` naming the key when values contradict each other."""
    size = config["cutouts"]["size"]
    if config["source"] == "synthetic":
        syn = config["synthetic"]
        usable = syn["tile_size"] - 2 * syn["edge_width"]
        if size > usable:
            raise ConfigError(
                f"cutouts.size = {size} is larger than the covered part of a synthetic tile"
                f" (synthetic.tile_size - 2 * synthetic.edge_width = {usable})"
            )
        for key in ("target_mag_range", "interloper_mag_range", "star_mag_range"):
            if key not in syn:
                continue
            lo, hi = syn[key]
            if lo >= hi:
                raise ConfigError(f"synthetic.{key} = [{lo}, {hi}] must be increasing")
    views = config["views"]
    if views["downsample_2x"] + views["downsample_4x"] > 1:
        raise ConfigError("views.downsample_2x + views.downsample_4x must not exceed 1")
    net = config["network"]
    levels = len(net["channels"])
    if size % 2 ** (levels - 1):
        raise ConfigError(
            f"cutouts.size = {size} must divide by 2^(levels - 1) = {2 ** (levels - 1)} for network.channels"
        )
    if any(i >= levels for i in net["attention_levels"]):
        raise ConfigError(
            f"network.attention_levels {net['attention_levels']} name levels beyond the {levels} of network.channels"
        )
    if config["diffusion"]["sigma_min"] >= config["diffusion"]["sigma_max"]:
        raise ConfigError("diffusion.sigma_min must be below diffusion.sigma_max")
    for f in (2, 4):
        if views[f"downsample_{f}x"] > 0 and size % f:
            raise ConfigError(f"views.downsample_{f}x > 0 needs cutouts.size divisible by {f} (got {size})")
    methods = registry()
    for name in [config.get("method", "ddprism"), *config.get("compare", [])]:
        if name not in methods:
            key = "method" if name == config.get("method", "ddprism") else "compare"
            raise ConfigError(f"{key}: unknown method {name!r}; the registered methods are {', '.join(methods)}")
    if views["downsample_2x"] + views["downsample_4x"] > 0:
        full_res = sorted({m for m in [config.get("method", "ddprism"), *config.get("compare", [])]
                           if methods[m].full_resolution})
        if full_res:
            raise ConfigError(f"method {full_res[0]!r} needs full-resolution views: set views.downsample_2x and"
                              " views.downsample_4x to 0, or leave it out of method and compare")
