"""Seconds per default synthetic tile (median of 3) and how contaminated the default field's targets are.

    .venv/bin/python benchmarks/synthetic.py [--config config.yaml] [--set key=value ...]

Prints JSON. Contamination: for each target, the light in a cutout-sized box on it that is not its
own (other targets, interlopers, stars, cosmic rays, hot pixels; no noise) over its own light there,
on pixels with data.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from galsep.sources.synthetic import make_tile
from galsep.sources.synthetic.contamination import contamination_from_files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=Path(__file__).resolve().parents[1] / "config.yaml")
    parser.add_argument("--set", nargs="*", default=[], help="synthetic overrides, key=value (YAML values)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    config = yaml.safe_load(Path(args.config).read_text())
    size = int(config["cutouts"]["size"])
    params = {**config["synthetic"], "pixel_scale": 0.05, "cutout_size": size}
    params.update({k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)})
    seconds, fractions = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for index in range(int(params["tiles"])):
            paths = [Path(tmp) / f"tile{index:03d}.{ext}" for ext in ("fits", "h5", "ecsv")]
            for _ in range(args.repeats if index == 0 else 1):
                start = time.perf_counter()
                make_tile(f"tile{index:03d}", index, params, int(config["seed"]), *paths)
                if index == 0:
                    seconds.append(time.perf_counter() - start)
            fractions.append(contamination_from_files(paths[1], paths[0], size))
    f = np.concatenate(fractions)
    f = f[np.isfinite(f)]
    q25, q50, q75 = np.percentile(f, [25, 50, 75])
    print(
        json.dumps(
            {
                "seconds_per_tile": statistics.median(seconds),
                "seconds_runs": seconds,
                "tile_size": params["tile_size"],
                "tiles": params["tiles"],
                "targets": int(f.size),
                "contamination": {
                    "median": q50,
                    "q25": q25,
                    "q75": q75,
                    "mean": float(f.mean()),
                    "share_above_5pct": float((f > 0.05).mean()),
                    "box": size,
                },
                "overrides": args.set,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
