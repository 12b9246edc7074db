"""Command line of the workflow's stages: ``python -m galsep STAGE --params JSON ...``.

Every stage takes its settings as one JSON object (``--params``), which the Snakemake rule builds
from the config in its ``params:``, so that a changed value reruns exactly the stages that use it.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import TYPE_CHECKING, Any

from galsep.cli import Stage, add_stage, run

if TYPE_CHECKING:
    from galsep.workflow import Chain

__all__ = ["main", "parser"]


def _synthetic_tile(a: argparse.Namespace, p: dict[str, Any], log: logging.Logger) -> None:
    from galsep.sources.synthetic import make_tile

    make_tile(a.tile, p["index"], p["synthetic"], p["seed"], a.tile_out, a.truth_out, a.targets_out)
    log.info("simulated %s", a.tile)


def _merge_targets(a: argparse.Namespace, p: dict[str, Any], log: logging.Logger) -> None:
    from galsep.data.cutouts import merge_targets

    merge_targets(a.inputs, a.out)
    log.info("merged %d target tables into %s", len(a.inputs), a.out)


def _cutouts(a: argparse.Namespace, p: dict[str, Any], log: logging.Logger) -> None:
    from galsep.data.cutouts import make_cutouts

    make_cutouts(
        a.tiles, a.targets, a.galaxies, a.randoms, truth_paths=a.truth or None, seed=p["seed"], log=log.info,
        **p["cutouts"],
    )


def _views(a: argparse.Namespace, p: dict[str, Any], log: logging.Logger) -> None:
    from galsep.data.normalise import Stretch
    from galsep.data.views import make_view

    v = p["views"]
    make_view(
        a.view, {"galaxies": a.galaxies, "randoms": a.randoms}, a.out, stretch=Stretch.from_config(v),
        downsample_2x=v["downsample_2x"], downsample_4x=v["downsample_4x"], mixed_fraction=v["mixed_fraction"],
        seed=p["seed"], mask_neighbours=v["mask_neighbours"], log=log.info,
    )


def _chain(p: dict[str, Any]) -> dict[str, Chain]:
    from galsep.workflow import chains

    return {c.name: c for c in chains(p["schedule"], p["views"])}


def _prior_gaussian(a: argparse.Namespace, p: dict[str, Any], log: logging.Logger) -> None:
    from galsep.inference.stages import gaussian_stage

    gaussian_stage(_chain(p)[a.chain], a.views, a.frozen, a.out, a.samples_out, p, log.info)


def _prior_lap(a: argparse.Namespace, p: dict[str, Any], log: logging.Logger) -> None:
    from galsep.inference.stages import lap_stage

    lap_stage(_chain(p)[a.chain], a.lap, a.previous, a.samples, a.out, p, log.info)


def _estep_shard(a: argparse.Namespace, p: dict[str, Any], log: logging.Logger) -> None:
    from galsep.inference.stages import estep_shard

    estep_shard(_chain(p)[a.chain], a.lap, a.prior, a.frozen, a.views, a.shard, a.shards, a.out, p, log.info)


def _gather_estep(a: argparse.Namespace, p: dict[str, Any], log: logging.Logger) -> None:
    from galsep.inference.stages import gather_samples

    gather_samples(_chain(p)[a.chain], a.lap, a.inputs, a.out)


def _fit_baseline(a: argparse.Namespace, p: dict[str, Any], log: logging.Logger) -> None:
    from galsep.separation import fit_stage

    fit_stage(a.method, a.views, a.out, p, log.info)


def _separate(a: argparse.Namespace, p: dict[str, Any], log: logging.Logger) -> None:
    from galsep.separation import separation_shard

    separation_shard(a.method, a.view, a.shard, a.shards, a.out, p, prior_paths=a.priors,
                     model_path=a.model, log=log.info)


def _weights(method: str, paths: list[str]) -> dict[str, str]:
    """Label the weight files: the galaxy and random priors, or the method's fitted model."""
    from galsep.methods import get
    from galsep.workflow import SOURCES

    if get(method).uses_priors:
        return dict(zip(SOURCES, paths, strict=True))
    return {method: paths[0]} if paths else {}


def _catalogue(a: argparse.Namespace, p: dict[str, Any], log: logging.Logger) -> None:
    from galsep.products.catalogue import write_catalogue

    write_catalogue(a.inputs, a.cutouts, _weights(a.method, a.weights), p["config"], a.out, log.info)


def _compare_method(a: argparse.Namespace, p: dict[str, Any], log: logging.Logger) -> None:
    from galsep.evaluation.compare import write_method_metrics

    write_method_metrics(a.method, a.inputs, a.cutouts, a.randoms, p, a.out, log.info, targets=a.targets)


def _compare(a: argparse.Namespace, p: dict[str, Any], log: logging.Logger) -> None:
    from galsep.evaluation.compare import write_comparison

    write_comparison(a.inputs, p["benchmarks"], a.outdir, log.info)


def _evaluate(a: argparse.Namespace, p: dict[str, Any], log: logging.Logger) -> None:
    from galsep.evaluation.evaluate import write_metrics

    write_metrics(a.catalogue, a.randoms, p["views"], a.out, log.info, targets=a.targets)


def _figures(a: argparse.Namespace, p: dict[str, Any], log: logging.Logger) -> None:
    from galsep.evaluation.figures import make_figures

    make_figures(a.catalogue, a.metrics, a.laps, a.samples, a.outdir, log.info)


def _publish(a: argparse.Namespace, p: dict[str, Any], log: logging.Logger) -> None:
    from galsep.products.publish import publish

    publish(a.catalogue, a.metrics, a.outdir, p["config"], log.info)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="galsep", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="stage", required=True)

    def stage(name: str, fn: Stage, help: str) -> argparse.ArgumentParser:
        return add_stage(sub, name, fn, help)

    s = stage("synthetic-tile", _synthetic_tile, "simulate one tile of the synthetic COSMOS field")
    for arg in ("--tile", "--tile-out", "--truth-out", "--targets-out"):
        s.add_argument(arg, required=True)
    s = stage("merge-targets", _merge_targets, "stack per-tile target tables")
    s.add_argument("--out", required=True)
    s.add_argument("inputs", nargs="+")
    s = stage("cutouts", _cutouts, "cut galaxy-centred and random cutouts")
    s.add_argument("--tiles", nargs="+", required=True)
    s.add_argument("--truth", nargs="*", default=[])
    for arg in ("--targets", "--galaxies", "--randoms"):
        s.add_argument(arg, required=True)
    s = stage("views", _views, "normalise cutouts into a view")
    for arg in ("--view", "--galaxies", "--randoms", "--out"):
        s.add_argument(arg, required=True)
    s = stage("prior-gaussian", _prior_gaussian, "Gaussian-prior EM of a chain")
    s.add_argument("--chain", required=True)
    s.add_argument("--views", nargs="+", required=True)
    s.add_argument("--frozen", nargs="*", default=[])
    s.add_argument("--out", required=True)
    s.add_argument("--samples-out", required=True)
    s = stage("prior-lap", _prior_lap, "M-step: train the denoisers of a chain for one lap")
    s.add_argument("--chain", required=True)
    s.add_argument("--lap", type=int, required=True)
    for arg in ("--previous", "--samples", "--out"):
        s.add_argument(arg, required=True)
    s = stage("estep-shard", _estep_shard, "E-step: posterior samples for one shard of a chain's views")
    s.add_argument("--chain", required=True)
    s.add_argument("--lap", type=int, required=True)
    s.add_argument("--prior", required=True)
    s.add_argument("--frozen", nargs="*", default=[])
    s.add_argument("--views", nargs="+", required=True)
    s.add_argument("--shard", type=int, required=True)
    s.add_argument("--shards", type=int, required=True)
    s.add_argument("--out", required=True)
    s = stage("gather-estep", _gather_estep, "gather E-step shards")
    s.add_argument("--chain", required=True)
    s.add_argument("--lap", type=int, required=True)
    s.add_argument("--out", required=True)
    s.add_argument("inputs", nargs="+")
    s = stage("fit-baseline", _fit_baseline, "fit a fitted method (one that does not use the EM priors) on the views")
    for arg in ("--method", "--out"):
        s.add_argument(arg, required=True)
    s.add_argument("--views", nargs="+", required=True)
    s = stage("separate", _separate, "one method's draws for one shard of the galaxies")
    for arg in ("--method", "--view", "--out"):
        s.add_argument(arg, required=True)
    s.add_argument("--priors", nargs="*", default=[], help="galaxy and random priors (diffusion methods)")
    s.add_argument("--model", help="the fitted model (other methods)")
    s.add_argument("--shard", type=int, required=True)
    s.add_argument("--shards", type=int, required=True)
    s = stage("catalogue", _catalogue, "write the Zarr catalogue from separation shards")
    for arg in ("--method", "--cutouts", "--out"):
        s.add_argument(arg, required=True)
    s.add_argument("--weights", nargs="*", default=[],
                   help="the priors or the fitted model (none for a method that needs neither)")
    s.add_argument("inputs", nargs="+")
    s = stage("compare-method", _compare_method, "one method's metrics against the synthetic truth")
    for arg in ("--method", "--cutouts", "--randoms", "--out"):
        s.add_argument(arg, required=True)
    s.add_argument("--targets", default=None, help="targets table (neighbour_distance splits the metrics)")
    s.add_argument("inputs", nargs="+")
    s = stage("compare", _compare, "the comparison table and figure of every method")
    s.add_argument("--outdir", required=True)
    s.add_argument("inputs", nargs="+")
    s = stage("evaluate", _evaluate, "metrics against the synthetic truth")
    for arg in ("--catalogue", "--randoms", "--out"):
        s.add_argument(arg, required=True)
    s.add_argument("--targets", default=None, help="targets table (neighbour_distance splits the flux figures)")
    s = stage("figures", _figures, "report figures")
    for arg in ("--catalogue", "--metrics", "--outdir"):
        s.add_argument(arg, required=True)
    s.add_argument("--laps", nargs="*", default=[])
    s.add_argument("--samples", nargs="*", default=[])
    s = stage("publish", _publish, "zip, checksum and describe the catalogue")
    for arg in ("--catalogue", "--outdir"):
        s.add_argument(arg, required=True)
    s.add_argument("--metrics", nargs="?", const="none", default="none", help="metrics.json (synthetic runs)")
    return ap


def main(argv: list[str] | None = None) -> int:
    return run(parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
