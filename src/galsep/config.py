"""Checks of the config that a JSON schema cannot express (relations between keys)."""

from __future__ import annotations

from collections.abc import Mapping


class ConfigError(ValueError):
    """A config value is impossible; the message names the key."""


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
        for key in ("target_mag_range", "interloper_mag_range"):
            lo, hi = syn[key]
            if lo >= hi:
                raise ConfigError(f"synthetic.{key} = [{lo}, {hi}] must be increasing")
    views = config["views"]
    if views["downsample_2x"] + views["downsample_4x"] > 1:
        raise ConfigError("views.downsample_2x + views.downsample_4x must not exceed 1")
    for f in (2, 4):
        if views[f"downsample_{f}x"] > 0 and size % f:
            raise ConfigError(f"views.downsample_{f}x > 0 needs cutouts.size divisible by {f} (got {size})")
