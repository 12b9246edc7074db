"""Command line of the manifold experiment: ``python -m galsep.manifold STAGE --params JSON ...``.

Stages (rules/manifold.smk runs one job per stage and file):
    data     make a dataset's views                   results/manifold/data/{dataset}.pt
    fit      one EM stage of a method's chain         results/manifold/{dataset}/{method}/stage{k}.pt
    evaluate posterior and prior draws of a method,   results/manifold/{setting}/{method}/draws.pt
             and their metrics                        results/manifold/{setting}/{method}/metrics.json
    table    every method's metrics beside the paper  results/manifold/table.json, table.md
Every stage takes its settings as one JSON object (``--params``) that the rule builds from the config.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

import torch

from galsep.cli import Stage, add_stage, run

__all__ = ["main", "parser"]


def _device(p: dict[str, Any]) -> torch.device:
    from galsep.seeding import pick_device

    return pick_device(p.get("device", "cpu"))


def _data(a: argparse.Namespace, p: dict[str, Any], log: logging.Logger) -> None:
    from galsep.manifold.data import make_dataset, save_dataset
    from galsep.manifold.settings import dataset

    data = make_dataset(dataset(a.dataset), p["data"], p["seed"])
    save_dataset(data, a.out)
    log.info("dataset %s: %d views x %d observations of %d sources", a.dataset, *data["y"].shape[:2],
             data["x"].shape[2])


def _load(path: str) -> dict[str, Any]:
    from galsep.io import load_torch

    return load_torch(path)


def _fit(a: argparse.Namespace, p: dict[str, Any], log: logging.Logger) -> None:
    from galsep.io import atomic_path
    from galsep.manifold.data import load_dataset
    from galsep.manifold.em import run_stage
    from galsep.manifold.settings import dataset

    previous = _load(a.previous) if a.previous else None
    record = run_stage(load_dataset(a.data), dataset(a.dataset), a.method, a.stage, previous, p, _device(p), log.info)
    with atomic_path(a.out) as tmp:
        torch.save(record, tmp)


def _evaluate(a: argparse.Namespace, p: dict[str, Any], log: logging.Logger) -> None:
    from galsep.io import atomic_path
    from galsep.manifold.data import load_dataset
    from galsep.manifold.draws import make_draws
    from galsep.manifold.metrics import evaluate
    from galsep.manifold.settings import setting
    from galsep.seeding import derive_seed

    s = setting(a.setting, p["smoothness"])
    data = load_dataset(a.data)
    draws = make_draws(s, data, [_load(path) for path in a.stages], p | {"method": a.method}, _device(p), log.info)
    with atomic_path(a.draws) as tmp:
        torch.save(draws, tmp)
    record = evaluate(s, data, draws, p["metrics"],
                      derive_seed(p["seed"], "manifold", "metrics", a.setting, a.method) % 2**31)
    with atomic_path(a.out) as tmp:
        tmp.write_text(json.dumps(record, indent=1))
    log.info("%s/%s: %s", a.setting, a.method, json.dumps(record["headline"]))


def _table(a: argparse.Namespace, p: dict[str, Any], log: logging.Logger) -> None:
    from galsep.manifold.table import write_table

    write_table(a.inputs, p, a.json, a.md, log.info)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m galsep.manifold", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="stage", required=True)

    def stage(name: str, fn: Stage, help: str) -> argparse.ArgumentParser:
        return add_stage(sub, name, fn, help, threads=1)

    s = stage("data", _data, "make a dataset's views")
    s.add_argument("--dataset", required=True)
    s.add_argument("--out", required=True)
    s = stage("fit", _fit, "run one EM stage of a method's chain")
    for arg in ("--dataset", "--method", "--data", "--out"):
        s.add_argument(arg, required=True)
    s.add_argument("--stage", type=int, required=True)
    s.add_argument("--previous", help="the chain's previous stage (contrastive stages after the first)")
    s = stage("evaluate", _evaluate, "draws of a method on a setting, and their metrics")
    for arg in ("--setting", "--method", "--data", "--draws", "--out"):
        s.add_argument(arg, required=True)
    s.add_argument("--stages", nargs="*", default=[], help="the EM chain's stage records, in order")
    s = stage("table", _table, "the table of every method's metrics")
    s.add_argument("--json", required=True)
    s.add_argument("--md", required=True)
    s.add_argument("inputs", nargs="+")
    return ap


def main(argv: list[str] | None = None) -> int:
    return run(parser().parse_args(argv), prog="python -m galsep.manifold")


if __name__ == "__main__":
    sys.exit(main())
